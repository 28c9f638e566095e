//! The one place that performs outbound HTTP: through the host
//! (`wasi:http/outgoing-handler`, which Spin governs with
//! `allowed_outbound_hosts`), with a timeout per attempt and retries as
//! [`cmk_core::retry`] decides.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use futures::future::{self, Either};
use http::{Request, Response};
use wasi::clocks::monotonic_clock;

use crate::host::wire;

use cmk_core::answer;
use cmk_core::cosmos::{transient_failure, CosmosError};
use cmk_core::retry::{Decision, RetryPolicy};
use cmk_core::tally::{self, Peer};

/// Milliseconds on the host's monotonic clock.
pub fn now_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

/// Completes after `ms` milliseconds, without blocking other futures of the
/// request (the host wakes it through a `wasi:io` pollable).
pub fn sleep(ms: u64) -> Sleep {
    Sleep {
        deadline: monotonic_clock::now().saturating_add(ms.saturating_mul(1_000_000)),
        fresh: ms > 0,
        _registration: None,
    }
}

/// The future returned by [`sleep`].
pub struct Sleep {
    deadline: u64,
    // Not polled yet and due in the future: the first poll subscribes
    // without reading the clock again (a host call); if the deadline has
    // passed meanwhile, the pollable is ready at once.
    fresh: bool,
    // Dropping it (on completion, or when a race is lost) takes the waker off
    // the executor's list.
    _registration: Option<spin_executor::CancelOnDropToken>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if !std::mem::take(&mut self.fresh) && monotonic_clock::now() >= self.deadline {
            return Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(self.deadline);
        self._registration =
            Some(spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()).into());
        Poll::Pending
    }
}

/// A uniform random number in `[0, 1)` from the host's secure random source.
fn jitter() -> f64 {
    (wasi::random::random::get_random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A copy of a request (http::Request is not Clone), for resending.
pub fn copy(req: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.headers_mut() = req.headers().clone();
    r
}

/// Sends once and reads the whole answer, or fails after `timeout_ms`.
/// Transport failures (refused, reset, denied by the host) come back as text
/// without secrets.
pub async fn send_once(
    req: &Request<Vec<u8>>,
    timeout_ms: u64,
) -> Result<Response<Vec<u8>>, String> {
    let exchange = pin!(async {
        // Read the body ourselves: spin-sdk's conversion to `http::Response`
        // panics when the body stream breaks off (see `cmk_core::answer`).
        let a = wire::exchange(req).await?;
        answer::assemble(a.status, a.headers, a.body)
    });
    let timer = pin!(sleep(timeout_ms));
    match future::select(exchange, timer).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(format!("no complete answer within {timeout_ms} ms")),
    }
}

/// How an answer should be treated by the retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the answer to the caller (success, or a failure retrying won't fix).
    Done,
    /// Transient: try again, after the service's pause (ms) if it asked for one.
    Retry(Option<u64>),
}

/// What happened to one logical request.
#[derive(Debug)]
pub struct Sent {
    /// The last answer, or the last transport failure.
    pub result: Result<Response<Vec<u8>>, String>,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time spent, in milliseconds.
    pub duration_ms: u64,
}

/// Time one inbound request may spend on outbound calls in all, in ms:
/// under Event Grid's 30 s delivery timeout, with room to answer.
pub const REQUEST_BUDGET_MS: u64 = 25_000;

static DEADLINE_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Starts the inbound request's clock: every later call's retry budget is
/// cut to what is left of [`REQUEST_BUDGET_MS`]. (Each request runs in its
/// own instance, so one deadline per instance is one per request.) Returns
/// the start time in ms.
pub fn start_request() -> u64 {
    tally::reset();
    let now = now_ms();
    DEADLINE_MS.store(now.saturating_add(REQUEST_BUDGET_MS), Ordering::Relaxed);
    now
}

/// Sends a request, retrying transport failures and answers that `verdict`
/// calls transient, inside the policy's budget (cut to the inbound request's
/// deadline). The last answer is returned as it is, for the caller's own
/// parser to classify. A destination the host refuses is not retried. Every
/// attempt is counted in the request's [`tally`] under `peer`.
pub async fn send_retrying(
    peer: Peer,
    req: Request<Vec<u8>>,
    policy: RetryPolicy,
    verdict: impl Fn(&Response<Vec<u8>>) -> Verdict,
) -> Sent {
    let start = now_ms();
    let policy = policy.within(DEADLINE_MS.load(Ordering::Relaxed).saturating_sub(start));
    if policy.budget_ms == 0 {
        return Sent {
            result: Err("the request's time budget is spent".into()),
            attempts: 0,
            duration_ms: 0,
        };
    }
    let mut attempt = 1;
    loop {
        // The first attempt starts at `start` (one clock read fewer).
        let spent = if attempt == 1 { 0 } else { now_ms() - start };
        let result = send_once(&req, policy.attempt_timeout(spent)).await;
        count(peer, &result);
        let asked = match &result {
            Ok(resp) => match verdict(resp) {
                Verdict::Done => None,
                Verdict::Retry(ms) => Some(ms),
            },
            Err(e) if cmk_core::retry::transport_is_permanent(e) => None,
            Err(_) => Some(None),
        };
        let decision = match asked {
            None => Decision::GiveUp,
            Some(ms) => policy.decide(attempt, true, ms, now_ms() - start, jitter()),
        };
        match decision {
            Decision::RetryAfter(ms) => {
                sleep(ms).await;
                attempt += 1;
            }
            Decision::GiveUp => {
                return Sent {
                    result,
                    attempts: attempt,
                    duration_ms: now_ms() - start,
                };
            }
        }
    }
}

/// Counts one attempt, and for Cosmos DB the request units it was billed.
fn count(peer: Peer, result: &Result<Response<Vec<u8>>, String>) {
    let resp = result.as_ref().ok();
    tally::attempt(peer, resp.map(|r| r.status().as_u16()));
    if peer == Peer::Cosmos {
        if let Some(ru) = resp
            .and_then(|r| r.headers().get("x-ms-request-charge"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            tally::charge(ru);
        }
    }
}

/// The retry verdict for an Entra ID or Managed HSM answer: 429 and 5xx are
/// transient, with the pause of a `Retry-After` in seconds if sent.
pub fn azure_verdict(resp: &Response<Vec<u8>>) -> Verdict {
    let s = resp.status().as_u16();
    if s == 429 || s >= 500 {
        let secs = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Verdict::Retry(secs.map(|s| s * 1000))
    } else {
        Verdict::Done
    }
}

/// The retry verdict for a Cosmos DB answer ([`transient_failure`]: also a
/// batch answered 207 whose failing operation was throttled).
pub fn cosmos_verdict(resp: &Response<Vec<u8>>) -> Verdict {
    match transient_failure(resp) {
        Some(pause) => Verdict::Retry(pause),
        None => Verdict::Done,
    }
}

/// A Cosmos DB request with retries; transport failures become
/// [`CosmosError::Transport`].
pub async fn send_cosmos(req: Request<Vec<u8>>, policy: RetryPolicy) -> CosmosSent {
    let sent = send_retrying(Peer::Cosmos, req, policy, cosmos_verdict).await;
    CosmosSent {
        result: sent.result.map_err(CosmosError::Transport),
        attempts: sent.attempts,
        duration_ms: sent.duration_ms,
    }
}

/// [`Sent`] with Cosmos DB's error type.
#[derive(Debug)]
pub struct CosmosSent {
    /// The final answer, or why there is none.
    pub result: Result<Response<Vec<u8>>, CosmosError>,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time spent, in milliseconds.
    pub duration_ms: u64,
}
