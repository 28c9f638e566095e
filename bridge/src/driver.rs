//! The I/O edge: sends the core's requests with a blocking HTTP client,
//! forwards messages on worker threads, sleeps between polls, and stops
//! cleanly when asked. Every decision is made by [`crate::decide`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmk_core::entra::{self, AccessToken, Freshness};
use cmk_core::time::UnixTime;
use http::{Request, Response};
use serde_json::json;

use crate::config::{Config, StorageAuth};
use crate::decide::{self, Action, Forwarded, StorageOutcome};
use crate::log::emit;
use crate::storage::{self, Authorization, Received, XmlError, STORAGE_SCOPE};

/// Largest answer body read from any peer.
const MAX_ANSWER_BYTES: u64 = 8 * 1024 * 1024;
/// How often the queue depths are logged.
const DEPTH_INTERVAL: Duration = Duration::from_secs(60);
/// Refresh an Entra ID token this long before it expires.
const TOKEN_REFRESH_SKEW_SECS: u64 = 300;

/// A Queue service or identity call that failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The service answered with an error.
    #[error("{op}: the queue service answered {status} {code}: {message}")]
    Service {
        /// The operation.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// `x-ms-error-code`, e.g. `AuthenticationFailed`.
        code: String,
        /// The service's message (first line).
        message: String,
    },
    /// No answer at all.
    #[error("{op}: no answer from the queue service ({reason})")]
    NoAnswer {
        /// The operation.
        op: &'static str,
        /// Transport failure.
        reason: String,
    },
    /// An answer the bridge cannot read.
    #[error("{op}: {source}")]
    Unreadable {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        source: XmlError,
    },
    /// No Entra ID token.
    #[error("cannot get an Entra ID token for Azure Storage: {0}")]
    Identity(String),
}

/// A re-queue that did not complete, by the call that failed.
enum RequeueError {
    /// The copy was not put: the original stays.
    Put(StorageError),
    /// The copy is queued (its id), the original could not be deleted.
    Delete(Option<String>, StorageError),
}

impl StorageError {
    fn status(&self) -> Option<u16> {
        match self {
            StorageError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A hint for the operator, by what failed.
    fn hint(&self, auth: &StorageAuth) -> Option<&'static str> {
        match (decide::storage_outcome(self.status()), auth) {
            (StorageOutcome::Auth, StorageAuth::SharedKey(_)) => Some(
                "the queue service refused the Shared Key signature: check BRIDGE_ACCOUNT_KEY and the account in BRIDGE_QUEUE_URL",
            ),
            (StorageOutcome::Auth, StorageAuth::Entra { .. }) => Some(
                "the queue service refused the identity: give it Storage Queue Data Message Processor on the queue and Storage Queue Data Message Sender on the queue and the poison queue",
            ),
            (StorageOutcome::NotFound, _) => Some("the queue does not exist: check BRIDGE_QUEUE_URL"),
            _ => None,
        }
    }
}

fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) => format!("I/O error: {}", io.kind()),
        other => other.to_string(),
    }
}

/// What happened to one message, for the next poll's pacing.
#[derive(Debug, Default, Clone, Copy)]
struct Pacing {
    pause_secs: Option<u64>,
}

impl Pacing {
    fn merge(&mut self, pause: Option<u64>) {
        self.pause_secs = self.pause_secs.max(pause);
    }
}

/// The running bridge.
pub struct Bridge {
    cfg: Config,
    agent: ureq::Agent,
    token: Mutex<Option<AccessToken>>,
    shutdown: Arc<AtomicBool>,
}

impl Bridge {
    /// A bridge for `cfg` that stops when `shutdown` becomes true.
    pub fn new(cfg: Config, shutdown: Arc<AtomicBool>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Never follow a redirect with a signed request or a key.
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(cfg.request_timeout_secs)))
            // A pooled connection idle longer than the server keeps it open
            // can be closed by the server just as a request is sent on it:
            // the request then fails with a reset (seen against the local
            // queue service, Azurite, whose idle timeout is Node's 5 s, when
            // ureq's default reuse age is 15 s). Reusing a connection only
            // within 4 s stays under the shortest common server idle timeout.
            .max_idle_age(Duration::from_secs(4))
            .user_agent(concat!("cmk-ingest-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Self {
            cfg,
            agent,
            token: Mutex::new(None),
            shutdown,
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Sleeps up to `ms`, waking early on shutdown.
    fn sleep(&self, ms: u64) {
        let end = Instant::now() + Duration::from_millis(ms);
        while !self.stopping() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    fn send(&self, req: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, String> {
        let resp = self.agent.run(req).map_err(describe)?;
        let (parts, mut body) = resp.into_parts();
        let bytes = body
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(describe)?;
        Ok(Response::from_parts(parts, bytes))
    }

    /// A Storage token, from the cache while it is fresh.
    fn token(
        &self,
        provider: &entra::Provider,
        file: Option<&std::path::Path>,
    ) -> Result<String, StorageError> {
        let mut cache = self.token.lock().unwrap_or_else(|p| p.into_inner());
        let now = UnixTime::now();
        if let (Freshness::Use, Some(t)) = (
            entra::freshness(cache.as_ref(), now, TOKEN_REFRESH_SKEW_SECS),
            cache.as_ref(),
        ) {
            return Ok(t.token.clone());
        }
        let assertion = match file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                StorageError::Identity(format!(
                    "cannot read AZURE_FEDERATED_TOKEN_FILE {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?),
            None => None,
        };
        let req = entra::token_request(provider, STORAGE_SCOPE, assertion.as_deref())
            .map_err(|e| StorageError::Identity(e.to_string()))?;
        let resp = self.send(req).map_err(|r| {
            StorageError::Identity(format!("no answer from the token endpoint ({r})"))
        })?;
        let t = entra::parse_token_response(&resp, now)
            .map_err(|e| StorageError::Identity(e.to_string()))?;
        emit(
            "info",
            "token_acquired",
            &[
                ("source", json!(provider.kind())),
                ("expires_in_secs", json!(t.expires_on.saturating_sub(now.0))),
            ],
        );
        let token = t.token.clone();
        *cache = Some(t);
        Ok(token)
    }

    /// One Queue service call: authorize, send, check the status.
    fn storage(
        &self,
        op: &'static str,
        build: impl Fn(&Authorization<'_>, UnixTime) -> Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, StorageError> {
        let bearer;
        let auth = match &self.cfg.auth {
            StorageAuth::SharedKey(key) => Authorization::SharedKey(key),
            StorageAuth::Entra {
                provider,
                federated_token_file,
            } => {
                bearer = self.token(provider, federated_token_file.as_deref())?;
                Authorization::Bearer(&bearer)
            }
        };
        let resp = self
            .send(build(&auth, UnixTime::now()))
            .map_err(|reason| StorageError::NoAnswer { op, reason })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        if resp.status() == 401 {
            // A revoked or rotated token: get a new one next time.
            *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let (code, message) = storage::parse_error(resp.body()).unwrap_or_default();
        let code = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or(code);
        Err(StorageError::Service {
            op,
            status: resp.status().as_u16(),
            code,
            message,
        })
    }

    fn poll(&self) -> Result<Vec<Received>, StorageError> {
        let c = &self.cfg;
        let resp = self.storage("get messages", |a, now| {
            storage::get_messages(&c.queue, c.batch_size, c.visibility_timeout_secs, now, a)
        })?;
        storage::parse_messages(resp.body()).map_err(|source| StorageError::Unreadable {
            op: "get messages",
            source,
        })
    }

    fn delete(&self, m: &Received) -> Result<(), StorageError> {
        let once = || {
            self.storage("delete message", |a, now| {
                storage::delete_message(&self.cfg.queue, &m.id, &m.pop_receipt, now, a)
            })
        };
        match once() {
            // No answer (e.g. the connection was reset as the service closed
            // it): a delete is safe to send again. If the first one arrived,
            // the second finds the message gone (404 `MessageNotFound`),
            // which is what was asked; it cannot have been received again in
            // between, as it stays hidden for the visibility timeout.
            Err(StorageError::NoAnswer { .. }) => match once() {
                Err(StorageError::Service {
                    status: 404, code, ..
                }) if code == "MessageNotFound" => Ok(()),
                r => r.map(drop),
            },
            r => r.map(drop),
        }
    }

    /// Puts a copy of a message back into its queue as a new message
    /// (dequeue count 0, hidden for `delay_secs`, with the rest of the
    /// original's time to live), then deletes the original. If the put
    /// fails, the original stays; if the delete fails, both are there and
    /// the event is written twice, identically (document ids are derived
    /// from the events).
    fn requeue(
        &self,
        m: &Received,
        delay_secs: u64,
        ttl: Option<decide::MessageTtl>,
    ) -> Result<Option<String>, RequeueError> {
        let c = &self.cfg;
        let resp = self
            .storage("put message (requeue)", |a, now| {
                storage::requeue_message(&c.queue, &m.text, delay_secs, ttl, now, a)
            })
            .map_err(RequeueError::Put)?;
        let new_id = storage::parse_put(resp.body());
        self.delete(m)
            .map_err(|e| RequeueError::Delete(new_id.clone(), e))?;
        Ok(new_id)
    }

    /// Moves a message to the poison queue: Put a copy there first, then
    /// delete the original. If the Put fails, the original stays (it comes
    /// back after the visibility timeout); if the delete fails, the message
    /// is in both queues and the next try puts it again. Nothing is lost;
    /// at worst the poison queue holds a duplicate.
    fn poison(&self, m: &Received) -> Result<Option<String>, StorageError> {
        let c = &self.cfg;
        let put = || {
            self.storage("put message (poison queue)", |a, now| {
                storage::put_message(&c.poison, &m.text, now, a)
            })
        };
        let resp = match put() {
            Err(StorageError::Service { status: 404, .. }) => {
                self.storage("create queue (poison queue)", |a, now| {
                    storage::create_queue(&c.poison, now, a)
                })?;
                emit(
                    "info",
                    "poison_queue_created",
                    &[("queue", json!(c.poison.name))],
                );
                put()?
            }
            other => other?,
        };
        self.delete(m)?;
        Ok(storage::parse_put(resp.body()))
    }

    /// Forwards one message to the component.
    fn forward(&self, m: &Received) -> (Forwarded, Option<String>) {
        let mut b = Request::post(&self.cfg.target)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-cmk-ingest-key", self.cfg.ingest_key.expose())
            .header("x-cmk-queue-dequeue-count", m.dequeue_count);
        for (name, value) in [
            ("x-cmk-queue-message-id", &m.id),
            ("x-cmk-queue-insertion-time", &m.insertion_time),
        ] {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                b = b.header(name, v);
            }
        }
        let req = match b.body(m.text.clone().into_bytes()) {
            Ok(r) => r,
            Err(_) => return (Forwarded::NoAnswer, Some("InvalidRequest".into())),
        };
        match self.send(req) {
            Ok(resp) => {
                let retry_after_secs = decide::retry_after_secs(
                    resp.headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()),
                    UnixTime::now(),
                );
                let body = serde_json::from_slice::<serde_json::Value>(resp.body()).ok();
                let code = body
                    .as_ref()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                (
                    Forwarded::Answered {
                        status: resp.status().as_u16(),
                        retry_after_secs,
                        code: code.clone(),
                        accepted: body.as_ref().and_then(|v| v["accepted"].as_u64()),
                        conflicts: body.as_ref().and_then(|v| v["conflicts"].as_u64()),
                    },
                    code,
                )
            }
            Err(reason) => (Forwarded::NoAnswer, Some(reason)),
        }
    }

    /// Decides and acts on one message; returns the pause it asks for.
    fn handle(&self, m: &Received, received: Instant) -> Option<u64> {
        let c = &self.cfg;
        let started = Instant::now();
        let mut fields = vec![
            ("message_id", json!(m.id)),
            ("dequeue_count", json!(m.dequeue_count)),
            // How long the message waited in the queue: the queue's age as
            // the operator's alert reads it.
            (
                "age_secs",
                json!(UnixTime::parse_rfc1123(&m.insertion_time)
                    .map(|t| UnixTime::now().0.saturating_sub(t.0))),
            ),
        ];
        let (action, forwarded) = match decide::before_forward(m.dequeue_count, c.max_dequeue_count)
        {
            Some(a) => (a, None),
            None => {
                let waited = received.elapsed().as_millis() as u64;
                if !decide::in_time(0, waited, c.visibility_timeout_secs, c.request_timeout_secs) {
                    fields.push(("action", json!("skipped")));
                    fields.push((
                        "reason",
                        json!("the visibility timeout would end during the forward"),
                    ));
                    emit("warn", "message", &fields);
                    return None;
                }
                let (f, code) = self.forward(m);
                if let Forwarded::Answered {
                    status, conflicts, ..
                } = f
                {
                    fields.push(("status", json!(status)));
                    // Create mode: events whose document id holds another
                    // event; the message is done, an operator looks at them.
                    if let Some(n) = conflicts.filter(|n| *n > 0) {
                        fields.push(("conflicts", json!(n)));
                    }
                }
                fields.push(("code", json!(code)));
                (
                    decide::after_forward(
                        &f,
                        decide::expected_events(&m.text),
                        m.dequeue_count,
                        c.max_dequeue_count,
                    ),
                    Some(f),
                )
            }
        };
        fields.push(("forward_ms", json!(started.elapsed().as_millis() as u64)));
        // A message re-queued keeps the rest of its time to live; one with
        // too little of it left is poisoned instead of expiring unseen.
        let (action, ttl) = match action {
            Action::Requeue { .. } => {
                let ttl = decide::remaining_ttl(m.expiration_time.as_deref(), UnixTime::now());
                match decide::requeue_ttl(ttl, c.visibility_timeout_secs) {
                    Ok(ttl) => (action, ttl),
                    Err(reason) => (Action::Poison(reason), None),
                }
            }
            other => (other, None),
        };
        match action {
            Action::Delete => match self.delete(m) {
                Ok(()) => {
                    fields.push(("action", json!("deleted")));
                    let conflicted = fields.iter().any(|(k, _)| *k == "conflicts");
                    emit(if conflicted { "warn" } else { "info" }, "message", &fields);
                }
                Err(e) => {
                    // Durable in the component already; it comes back and is
                    // written again, identically.
                    fields.push(("action", json!("delete-failed")));
                    fields.push(("error", json!(e.to_string())));
                    emit("warn", "message", &fields);
                }
            },
            Action::Poison(reason) => {
                fields.push(("reason", json!(reason.as_str())));
                match self.poison(m) {
                    Ok(poison_id) => {
                        fields.push(("action", json!("poisoned")));
                        fields.push(("poison_queue", json!(c.poison.name)));
                        fields.push(("poison_message_id", json!(poison_id)));
                        emit("warn", "message", &fields);
                    }
                    Err(e) => {
                        fields.push(("action", json!("poison-failed")));
                        fields.push(("error", json!(e.to_string())));
                        emit("error", "message", &fields);
                    }
                }
            }
            // Hidden as long as a message left would be (the visibility
            // timeout), so redelivery keeps its cadence; polling goes on (the
            // key may be one tenant's: decide::Action::pause_secs).
            Action::Requeue { delay_secs } => {
                let delay = delay_secs.min(u64::from(c.visibility_timeout_secs));
                match self.requeue(m, delay, ttl) {
                    Ok(new_id) => {
                        fields.push(("action", json!("requeued")));
                        fields.push(("new_message_id", json!(new_id)));
                        fields.push(("delay_secs", json!(delay)));
                        fields.push((
                        "hint",
                        json!("the component cannot use its key-encryption key; the message keeps its tries"),
                    ));
                        emit("warn", "message", &fields);
                        return action.pause_secs();
                    }
                    Err(RequeueError::Put(e)) => {
                        // The original stays and comes back after the visibility
                        // timeout, spending a try. A put refused for the
                        // bridge's rights (no Message Sender on the queue)
                        // refuses every key-state message alike: polling
                        // pauses for the delay, so that the queue's other
                        // messages do not spend their tries at full speed.
                        // Other failures are the service's, paced as a
                        // failed poll is.
                        let pause = (decide::storage_outcome(e.status()) == StorageOutcome::Auth)
                            .then_some(delay);
                        fields.push(("action", json!("requeue-failed")));
                        fields.push(("error", json!(e.to_string())));
                        fields.push(("pause_secs", json!(pause)));
                        if let Some(hint) = e.hint(&c.auth) {
                            fields.push(("hint", json!(hint)));
                        }
                        emit("warn", "message", &fields);
                        return pause;
                    }
                    Err(RequeueError::Delete(new_id, e)) => {
                        // The copy is queued; the original comes back too and
                        // is forwarded again (written twice, identically).
                        fields.push(("action", json!("requeue-delete-failed")));
                        fields.push(("new_message_id", json!(new_id)));
                        fields.push(("error", json!(e.to_string())));
                        emit("warn", "message", &fields);
                        return None;
                    }
                }
            }
            Action::Leave { pause_secs, auth } => {
                fields.push(("action", json!("left")));
                fields.push(("pause_secs", json!(pause_secs)));
                if auth {
                    fields.push((
                        "hint",
                        json!("the component refused BRIDGE_INGEST_KEY: set it to one of its ingest_keys"),
                    ));
                }
                if forwarded == Some(Forwarded::NoAnswer) {
                    fields.push((
                        "hint",
                        json!("the component did not answer: check BRIDGE_TARGET_URL"),
                    ));
                }
                emit(if auth { "error" } else { "warn" }, "message", &fields);
                return pause_secs;
            }
        }
        None
    }

    /// Logs the depth of the queue and of the poison queue (Get Queue
    /// Metadata): what the operator's poison-queue alert reads. A poison
    /// queue not created yet holds nothing.
    fn report_depth(&self) {
        let c = &self.cfg;
        for (q, poison) in [(&c.queue, false), (&c.poison, true)] {
            let depth = match self.storage("get queue metadata", |a, now| {
                storage::get_metadata(q, now, a)
            }) {
                Ok(resp) => {
                    storage::parse_depth(&resp).ok_or_else(|| "no message count".to_string())
                }
                Err(StorageError::Service { status: 404, .. }) if poison => Ok(0),
                Err(e) => Err(e.to_string()),
            };
            match depth {
                Ok(n) => emit(
                    "info",
                    "queue_depth",
                    &[
                        ("queue", json!(q.name)),
                        ("poison", json!(poison)),
                        ("messages", json!(n)),
                    ],
                ),
                Err(e) => emit(
                    "warn",
                    "queue_depth_failed",
                    &[
                        ("queue", json!(q.name)),
                        ("poison", json!(poison)),
                        ("error", json!(e)),
                    ],
                ),
            }
        }
    }

    /// Forwards a batch with up to `concurrency` threads; a shutdown stops
    /// new forwards, in-flight ones finish.
    fn process(&self, messages: &[Received], received: Instant) -> Pacing {
        let next = AtomicUsize::new(0);
        let pacing = Mutex::new(Pacing::default());
        std::thread::scope(|s| {
            for _ in 0..self.cfg.concurrency.min(messages.len()) {
                s.spawn(|| loop {
                    if self.stopping() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(m) = messages.get(i) else { break };
                    let pause = self.handle(m, received);
                    pacing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .merge(pause);
                });
            }
        });
        let untouched = messages.len().saturating_sub(next.load(Ordering::SeqCst));
        if untouched > 0 {
            emit(
                "info",
                "messages_released",
                &[
                    ("count", json!(untouched)),
                    (
                        "reason",
                        json!("shutting down; they reappear after the visibility timeout"),
                    ),
                ],
            );
        }
        pacing.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls until shutdown (or, with `once`, until the queue is empty).
    /// Returns the process exit code.
    pub fn run(&self, once: bool) -> i32 {
        let c = &self.cfg;
        emit(
            "info",
            "bridge_started",
            &[
                ("queue", json!(c.queue.to_string())),
                ("poison_queue", json!(c.poison.name)),
                (
                    "target",
                    json!(c.target.split('?').next().unwrap_or_default()),
                ),
                ("auth", json!(c.auth.kind())),
                ("concurrency", json!(c.concurrency)),
                ("batch_size", json!(c.batch_size)),
                ("visibility_timeout_secs", json!(c.visibility_timeout_secs)),
                ("max_dequeue_count", json!(c.max_dequeue_count)),
                ("once", json!(once)),
            ],
        );
        let mut failed_polls = 0u32;
        let mut forwarded = 0usize;
        let mut exit = 0;
        let mut depth_reported: Option<Instant> = None;
        while !self.stopping() {
            if depth_reported.is_none_or(|t| t.elapsed() >= DEPTH_INTERVAL) {
                self.report_depth();
                depth_reported = Some(Instant::now());
            }
            let messages = match self.poll() {
                Ok(m) => {
                    failed_polls = 0;
                    m
                }
                Err(e) => {
                    failed_polls += 1;
                    let mut fields = vec![
                        ("error", json!(e.to_string())),
                        ("failed_polls", json!(failed_polls)),
                    ];
                    if let Some(h) = e.hint(&c.auth) {
                        fields.push(("hint", json!(h)));
                    }
                    emit("error", "poll_failed", &fields);
                    if once {
                        exit = 1;
                        break;
                    }
                    self.sleep(decide::next_poll_delay_ms(
                        0,
                        None,
                        failed_polls,
                        c.poll_interval_ms,
                    ));
                    continue;
                }
            };
            if messages.is_empty() && once {
                break;
            }
            forwarded += messages.len();
            let pacing = self.process(&messages, Instant::now());
            if once {
                // Messages left for redelivery are hidden now: the next poll
                // sees only the rest, so --once ends instead of pausing.
                continue;
            }
            self.sleep(decide::next_poll_delay_ms(
                messages.len(),
                pacing.pause_secs,
                0,
                c.poll_interval_ms,
            ));
        }
        if once && exit == 0 {
            // What a drain left behind (messages left for retry, poisoned).
            self.report_depth();
        }
        emit(
            "info",
            "bridge_stopped",
            &[
                (
                    "reason",
                    json!(if self.stopping() {
                        "signal"
                    } else if exit == 0 {
                        "drained"
                    } else {
                        "error"
                    }),
                ),
                ("messages_handled", json!(forwarded)),
            ],
        );
        exit
    }
}
