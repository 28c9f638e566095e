//! The Spin entry point: reads the request, routes, and answers. It holds no
//! logic of its own; each route delegates to the core.

use futures::StreamExt;
use http::{Response, StatusCode};
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method};

use crate::account::Account;
use crate::api::{json_response, ApiError};
use crate::config::Config;
use crate::envelope::{self, Dek};
use crate::hsm;
use crate::inbound;
use crate::ingest::{self, Plan};
use crate::kek;
use crate::log;
use crate::outbound;
use crate::queue;
use crate::records;
use crate::rewrap;
use crate::time::UnixTime;

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest) -> Response<Vec<u8>> {
    let method = req.method();
    let path = req.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let result = match (&method, path.as_str()) {
        (Method::Get, "/healthz") => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        (Method::Get, "/readyz") => readyz(&req, false).await,
        (Method::Post, "/readyz/roundtrip") => readyz(&req, true).await,
        (Method::Post, "/events") => post_events(req).await,
        (Method::Options, "/events") => options_events(&req).await,
        (Method::Post, "/queue") => post_queue(req).await,
        (Method::Get, p) if p.starts_with("/records/") => get_records(req).await,
        (Method::Delete, p) if p.starts_with("/records/") => delete_record(req).await,
        (Method::Post, "/admin/rewrap") => post_rewrap(req).await,
        (
            _,
            "/healthz" | "/events" | "/queue" | "/readyz" | "/readyz/roundtrip" | "/admin/rewrap",
        ) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route for {path}"),
        )),
    };
    result.unwrap_or_else(|e| {
        log::emit(
            if e.status.is_server_error() {
                "error"
            } else {
                "warn"
            },
            "request_failed",
            &[
                ("method", json!(method.to_string())),
                ("path", json!(path)),
                ("status", json!(e.status.as_u16())),
                ("code", json!(e.code)),
                ("message", json!(e.message)),
            ],
        );
        e.to_response()
    })
}

fn load_config() -> Result<Config, ApiError> {
    Config::load(|name| match spin_sdk::variables::get(name) {
        Ok(v) => Ok(Some(v)),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    })
    .map_err(ApiError::from)
}

fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok())
}

/// Reads the body, refusing more than `limit` bytes before buffering them.
async fn read_body(req: IncomingRequest, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BodyTooLarge",
            format!("request body exceeds {limit} bytes"),
        )
    };
    if let Some(len) = header(&req, "content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BodyUnreadable",
                format!("could not read the body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `GET /readyz`: whether the key-encryption key can be used, from its cached
/// state (no key material). `POST /readyz/roundtrip` (read key required):
/// wraps and unwraps a random 32-byte value through the HSM, end to end.
async fn readyz(req: &IncomingRequest, roundtrip: bool) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let Some(kek_cfg) = &config.kek else {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ready", "kek": {"configured": false, "stage": "microsoft-managed keys"}}),
        ));
    };
    if roundtrip {
        let keys = config.read.keys.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "ReadDisabled",
                "the round-trip probe needs read_keys",
            )
        })?;
        if !header(req, records::READ_KEY_HEADER).is_some_and(|k| keys.accepts(&k)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the round-trip probe needs the read key",
            ));
        }
    }
    let kek = kek::Kek::new(kek_cfg, config.cosmos.retry);
    let (key, checked) = kek.key(roundtrip).await.map_err(|e| ApiError::from(&e))?;
    let now = UnixTime::now();
    let usable = |op| hsm::check_usable(&key, op, now);
    let mut body = json!({
        "kek": {
            "configured": true,
            "kid": key.kid,
            "enabled": key.enabled,
            "keyOps": key.key_ops,
            "notBefore": key.not_before.map(|t| UnixTime(t).to_string()),
            "expires": key.expires.map(|t| UnixTime(t).to_string()),
            "keySizeBits": key.n.len() * 8,
            "checkedAt": checked.to_string(),
            "wrap": if kek_cfg.local_wrap { "local" } else { "hsm" },
        }
    });
    if let Err(e) = usable(hsm::KeyOp::Wrap).and(usable(hsm::KeyOp::Unwrap)) {
        let api = ApiError::from(&e);
        body["status"] = json!("not-ready");
        body["kek"]["reason"] = json!({"code": api.code, "message": api.message});
        let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            crate::api::KEY_RETRY_AFTER_SECS.into(),
        );
        log::emit("warn", "kek_not_ready", &[("code", json!(api.code))]);
        return Ok(r);
    }
    body["status"] = json!("ready");
    if roundtrip {
        let probe = wasi::random::random::get_random_bytes(32);
        let wrapped = kek.wrap(&probe).await.map_err(|e| ApiError::from(&e))?;
        let back = kek
            .unwrap(&wrapped.kid, &wrapped.value)
            .await
            .map_err(|e| ApiError::from(&e))?;
        if back != probe {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "KeyRoundTripMismatch",
                "unwrap did not return what wrap was given",
            ));
        }
        body["roundtrip"] = json!({"ok": true, "kid": wrapped.kid});
    }
    Ok(json_response(StatusCode::OK, &body))
}

async fn get_records(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let path = req.path_with_query().unwrap_or_default();
    let read = records::parse(
        &path,
        header(&req, records::READ_KEY_HEADER).as_deref(),
        &config,
    )?;
    let only = records::fields(&path)?;
    let account = Account::new(&config.cosmos);
    let credential = account.credential().await?;
    let sent = account
        .send(records::request(
            &read,
            &config,
            &credential,
            UnixTime::now(),
        )?)
        .await;
    // The service's charge and activity id, from the answer itself (a
    // failed read is charged too).
    let metrics = sent
        .result
        .as_ref()
        .ok()
        .map(crate::cosmos::Metrics::from_response)
        .unwrap_or_default();
    let answer = match records::parse_answer(&read, sent.result) {
        Ok(mut a) => open_protected(&config, &mut a, only.as_deref())
            .await
            .map(|()| records::render(a)),
        Err(e) => Err(e),
    };
    log::emit(
        "info",
        "records_read",
        &[
            (
                "kind",
                json!(if matches!(read, records::ReadRequest::One { .. }) {
                    "one"
                } else {
                    "page"
                }),
            ),
            (
                "status",
                json!(answer
                    .as_ref()
                    .map(|r| r.status().as_u16())
                    .unwrap_or_else(|e| e.status.as_u16())),
            ),
            ("attempts", json!(sent.attempts)),
            ("duration_ms", json!(sent.duration_ms)),
            ("request_charge", json!(metrics.request_charge)),
            ("activity_id", json!(metrics.activity_id)),
        ],
    );
    answer
}

/// `DELETE /records/{partitionKey}/{id}` (admin key): erases one record,
/// with the caller's `If-Match` passed through.
async fn delete_record(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let del = records::parse_delete_request(
        &req.path_with_query().unwrap_or_default(),
        header(&req, rewrap::ADMIN_KEY_HEADER).as_deref(),
        header(&req, "if-match").as_deref(),
        &config,
    )?;
    let account = Account::new(&config.cosmos);
    let credential = account.credential().await?;
    let sent = account
        .send(records::delete_request(
            &del,
            &config,
            &credential,
            UnixTime::now(),
        )?)
        .await;
    let (attempts, duration_ms) = (sent.attempts, sent.duration_ms);
    let answer = records::delete_answer(sent.result);
    let mut fields = vec![
        (
            "status",
            json!(answer
                .as_ref()
                .map(|(r, _)| r.status().as_u16())
                .unwrap_or_else(|e| e.status.as_u16())),
        ),
        ("conditional", json!(del.if_match.is_some())),
        ("attempts", json!(attempts)),
        ("duration_ms", json!(duration_ms)),
    ];
    if let Ok((_, m)) = &answer {
        fields.push(("request_charge", json!(m.request_charge)));
        fields.push(("activity_id", json!(m.activity_id)));
    }
    log::emit("info", "record_deleted", &fields);
    answer.map(|(r, _)| r)
}

/// Opens sealed documents in place: one unwrap per distinct wrapped data key
/// (a delivery's documents share one), none when `only` asks for no sealed
/// field. Any failure fails the whole answer, so a caller never gets part of
/// a record's plaintext.
async fn open_protected(
    config: &Config,
    answer: &mut records::Answer,
    only: Option<&[String]>,
) -> Result<(), ApiError> {
    let mut keys: Vec<(String, Vec<u8>, Dek)> = Vec::new();
    for doc in answer.documents_mut() {
        let Some(h) = envelope::header(doc).map_err(envelope_error)? else {
            check_unsealed(config, doc)?;
            continue;
        };
        if !envelope::needs_key(&h, only) {
            *doc = envelope::open_with(doc, None, only).map_err(envelope_error)?;
            continue;
        }
        let kek_cfg = config.kek.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "KeyNotConfigured",
                "the record is sealed and no key-encryption key is configured",
            )
            .retry_after(crate::api::KEY_RETRY_AFTER_SECS)
        })?;
        let idx = match keys
            .iter()
            .position(|(kid, w, _)| *kid == h.kid && *w == h.wrapped_dek)
        {
            Some(i) => i,
            None => {
                let kek = kek::Kek::new(kek_cfg, config.cosmos.retry);
                let raw = zeroize::Zeroizing::new(
                    kek.unwrap(&h.kid, &h.wrapped_dek)
                        .await
                        .map_err(|e| ApiError::from(&e))?,
                );
                keys.push((
                    h.kid.clone(),
                    h.wrapped_dek.clone(),
                    Dek::from_bytes(&raw).map_err(envelope_error)?,
                ));
                keys.len() - 1
            }
        };
        *doc = envelope::open(doc, &keys[idx].2, only).map_err(envelope_error)?;
    }
    Ok(())
}

/// A stored document without an envelope header: refused if it holds
/// sealed values (its header was removed), and in the second stage unless
/// `read_accept_unsealed` allows records written before it.
fn check_unsealed(config: &Config, doc: &serde_json::Value) -> Result<(), ApiError> {
    if let Some(p) = envelope::sealed_pointers(doc).into_iter().next() {
        return Err(envelope_error(envelope::EnvelopeError::Tampered(p)));
    }
    if config.kek.is_some() && !config.read.accept_unsealed {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "RecordUnsealed",
            "the record carries no envelope header; records written before field encryption are read only with read_accept_unsealed = true",
        ));
    }
    Ok(())
}

/// `POST /admin/rewrap`: one bounded step of moving stored data keys onto
/// the latest key version (see `rewrap`). Key trouble stops the call and
/// fails closed, as on every other path.
async fn post_rewrap(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let call = rewrap::parse(
        &query_of(&req),
        header(&req, rewrap::ADMIN_KEY_HEADER).as_deref(),
        &config,
    )?;
    let kek_cfg = config.kek.as_ref().expect("rewrap::parse checks it");
    let kek = kek::Kek::new(kek_cfg, config.cosmos.retry);
    let (latest, _) = kek.key(true).await.map_err(|e| ApiError::from(&e))?;
    hsm::check_usable(&latest, hsm::KeyOp::Wrap, UnixTime::now())
        .map_err(|e| ApiError::from(&e))?;
    let account = Account::new(&config.cosmos);
    let credential = account.credential().await?;
    let sent = account
        .send(rewrap::query_request(
            &call,
            &latest.kid,
            &config,
            &credential,
            UnixTime::now(),
        )?)
        .await;
    let page = rewrap::parse_page(sent.result)?;
    let mut report = rewrap::Report::default();
    // (old kid, old wrapped DEK) → the DEK wrapped under the latest version.
    let mut moved: Vec<(String, Vec<u8>, hsm::CryptResult)> = Vec::new();
    for doc in &page.items {
        let id = doc.get("id").and_then(|v| v.as_str()).map(str::to_owned);
        let refuse = |reason: String| rewrap::Outcome::Refused {
            id: id.clone(),
            reason,
        };
        let (h, at) = match (envelope::header(doc), rewrap::locate(doc)) {
            (Ok(Some(h)), Some(at)) => (h, at),
            (Err(e), _) => {
                report.add(refuse(e.to_string()));
                continue;
            }
            _ => {
                report.add(refuse("not a sealed document with id, pk and _etag".into()));
                continue;
            }
        };
        let idx = match moved
            .iter()
            .position(|(kid, w, _)| *kid == h.kid && *w == h.wrapped_dek)
        {
            Some(i) => i,
            None => {
                let dek = match kek.unwrap(&h.kid, &h.wrapped_dek).await {
                    Ok(raw) => zeroize::Zeroizing::new(raw),
                    // A stored key id from elsewhere, or a data key the HSM
                    // rejects, concerns this record only.
                    Err(e) if !e.is_transient() && is_record_fault(&e) => {
                        report.add(refuse(ApiError::from(&e).message));
                        continue;
                    }
                    Err(e) => return Err(ApiError::from(&e)),
                };
                if dek.len() != 32 {
                    report.add(refuse("the unwrapped data key is not 32 bytes".into()));
                    continue;
                }
                let wrapped = kek.wrap(&dek).await.map_err(|e| ApiError::from(&e))?;
                moved.push((h.kid.clone(), h.wrapped_dek.clone(), wrapped));
                report.data_keys += 1;
                moved.len() - 1
            }
        };
        let new = &moved[idx].2;
        let doc2 = envelope::rewrapped(doc, &new.kid, &new.value).map_err(envelope_error)?;
        let req = rewrap::replace_request(&at, &doc2, &config, &credential, UnixTime::now())
            .map_err(|e| ApiError::from(&e))?;
        let sent = account.send(req).await;
        report.add(rewrap::replace_outcome(sent.result)?);
    }
    log::emit(
        "info",
        "rewrap_step",
        &[
            ("kid", json!(latest.kid)),
            ("scanned", json!(report.scanned)),
            ("rewrapped", json!(report.rewrapped)),
            ("conflicts", json!(report.conflicts)),
            ("refused", json!(report.refused.len())),
            ("data_keys", json!(report.data_keys)),
            ("more", json!(page.continuation.is_some())),
        ],
    );
    Ok(report.render(&latest.kid, page.continuation))
}

/// Whether an unwrap failure concerns this record only — its key id or
/// wrapped value, or the old key version it names (deleted, disabled, not
/// allowed to unwrap) — rather than the service or the caller's identity.
/// Such a record is reported and passed over, so one bad record cannot stop
/// the rest from moving; the latest version was checked usable up front.
fn is_record_fault(e: &kek::KekError) -> bool {
    matches!(
        e,
        kek::KekError::Hsm(
            hsm::HsmError::InvalidKeyId(_)
                | hsm::HsmError::KeyUnavailable { .. }
                | hsm::HsmError::Rejected { .. }
        )
    )
}

fn envelope_error(e: envelope::EnvelopeError) -> ApiError {
    let code = match e {
        envelope::EnvelopeError::Tampered(_) => "RecordTampered",
        envelope::EnvelopeError::Unsupported(_) => "RecordUnsupported",
        envelope::EnvelopeError::Malformed(_) => "RecordMalformed",
    };
    // The stored record is at fault, not the caller: 422 with the reason.
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
}

/// Stage two: one fresh data key for the whole delivery from the host's
/// secure random source, wrapped once (after the key-state check), then every
/// document's protected fields sealed before the writes are signed. If
/// wrapping fails for any reason, nothing is written.
async fn seal_delivery(
    writes: ingest::Writes,
    kek_cfg: &crate::config::KekConfig,
    config: &Config,
    credential: &crate::cosmos::Credential,
) -> Result<ingest::Writes, ApiError> {
    let kek = kek::Kek::new(kek_cfg, config.cosmos.retry);
    let dek = Dek::from_bytes(&zeroize::Zeroizing::new(
        wasi::random::random::get_random_bytes(32),
    ))
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SealFailed",
            e.to_string(),
        )
    })?;
    let wrapped = kek
        .wrap(dek.bytes())
        .await
        .map_err(|e| ApiError::from(&e))?;
    let mut nonce = || -> [u8; 12] {
        wasi::random::random::get_random_bytes(12)
            .try_into()
            .expect("12 bytes asked for")
    };
    let key = ingest::DeliveryKey {
        dek: &dek,
        kid: &wrapped.kid,
        wrapped_dek: &wrapped.value,
    };
    ingest::seal(
        writes,
        &kek_cfg.protected,
        &key,
        &mut nonce,
        config,
        credential,
        UnixTime::now(),
    )
}

/// Create-only mode, for a unit that met an existing document: creates each
/// of its documents on its own (a batch applied none of them), and reads
/// back and verifies each one that exists. Documents are handled
/// concurrently; a transient failure outranks a conflict, so the sender
/// redelivers.
async fn create_or_verify(
    account: &Account<'_>,
    writes: &ingest::Writes,
    unit: &ingest::WriteUnit,
    config: &Config,
    credential: &crate::cosmos::Credential,
) -> Result<ingest::UnitWritten, crate::cosmos::CosmosError> {
    let one = |i: usize| async move {
        let doc = &writes.documents[i];
        if unit.batch {
            let req = ingest::create_request(doc, config, credential, UnixTime::now())?;
            if let Some((status, m)) = ingest::create_outcome(account.send(req).await.result)? {
                return Ok((status, m, false));
            }
        }
        let read = account
            .send(ingest::read_request(
                doc,
                config,
                credential,
                UnixTime::now(),
            ))
            .await;
        ingest::verify_stored(doc, read.result).map(|m| (200, m, true))
    };
    let done = futures::future::join_all(unit.documents.iter().map(|&i| one(i))).await;
    let mut written = ingest::UnitWritten {
        statuses: Vec::with_capacity(done.len()),
        metrics: crate::cosmos::Metrics::default(),
    };
    let mut failure: Option<crate::cosmos::CosmosError> = None;
    let mut existing = 0;
    for r in done {
        match r {
            Ok((status, m, found)) => {
                written.statuses.push(status);
                written.metrics.request_charge += m.request_charge;
                existing += usize::from(found);
            }
            Err(e) => {
                if failure
                    .as_ref()
                    .is_none_or(|f| !f.is_transient() && e.is_transient())
                {
                    failure = Some(e);
                }
            }
        }
    }
    log::emit(
        "info",
        "documents_verified",
        &[
            ("documents", json!(unit.documents.len())),
            ("batch", json!(unit.batch)),
            ("already_written", json!(existing)),
            ("conflict", json!(failure.is_some())),
        ],
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

fn query_of(req: &IncomingRequest) -> String {
    req.path_with_query()
        .and_then(|p| p.split_once('?').map(|(_, q)| q.to_owned()))
        .unwrap_or_default()
}

/// Checks the sender: an ingest key, or an Entra ID bearer token.
async fn authorize_sender(req: &IncomingRequest, config: &Config) -> Result<(), ApiError> {
    inbound::authorize(
        config,
        header(req, "authorization").as_deref(),
        header(req, ingest::INGEST_KEY_HEADER).as_deref(),
        &query_of(req),
    )
    .await
}

async fn options_events(req: &IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    authorize_sender(req, &config).await?;
    ingest::webhook_handshake(header(req, "webhook-request-origin").as_deref())
}

async fn post_events(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    authorize_sender(&req, &config).await?;
    let content_type = header(&req, "content-type");
    let headers: Vec<(String, String)> = req
        .headers()
        .entries()
        .into_iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("ce-"))
        .filter_map(|(k, v)| String::from_utf8(v).ok().map(|v| (k, v)))
        .collect();
    let body = read_body(req, config.ingest.max_body_bytes).await?;
    let account = Account::new(&config.cosmos);
    let credential = account.credential().await?;
    let writes = match ingest::plan(
        content_type.as_deref(),
        &headers,
        &body,
        &config,
        &credential,
        UnixTime::now(),
    )? {
        Plan::Respond(r) => {
            log::emit("info", "subscription_validated", &[]);
            return Ok(r);
        }
        Plan::Write(w) => w,
    };
    write_delivery(writes, &config, &account, &credential).await
}

/// `POST /queue`: one Storage queue message from the queue bridge or a Dapr
/// sidecar. Same key, limits and answers as `POST /events`; every answer is
/// logged with the message's id and dequeue count (never its text).
async fn post_queue(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let headers: Vec<(String, String)> = req
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v).ok().map(|v| (k, v)))
        .collect();
    let meta = queue::metadata(&headers)?;
    let mut decoded: Option<(&'static str, usize)> = None;
    let result = async {
        let config = load_config()?;
        let key = header(&req, ingest::INGEST_KEY_HEADER)
            .or_else(|| header(&req, queue::DAPR_API_TOKEN_HEADER));
        inbound::authorize(
            &config,
            header(&req, "authorization").as_deref(),
            key.as_deref(),
            &query_of(&req),
        )
        .await?;
        let content_type = header(&req, "content-type");
        let body = read_body(req, config.ingest.max_body_bytes).await?;
        let message = queue::decode(content_type.as_deref(), &body)?;
        decoded = Some((message.text_encoding.as_str(), message.events.len()));
        let account = Account::new(&config.cosmos);
        let credential = account.credential().await?;
        let writes = ingest::plan_events(message.events, &config, &credential, UnixTime::now())?;
        write_delivery(writes, &config, &account, &credential).await
    }
    .await;
    let (status, code) = match &result {
        Ok(r) => (r.status().as_u16(), None),
        Err(e) => (e.status.as_u16(), Some(e.code)),
    };
    log::emit(
        if status < 300 { "info" } else { "warn" },
        "queue_message",
        &[
            ("forwarder", json!(meta.forwarder.as_str())),
            ("message_id", json!(meta.message_id)),
            ("dequeue_count", json!(meta.dequeue_count)),
            ("insertion_time", json!(meta.insertion_time)),
            ("text_encoding", json!(decoded.map(|d| d.0))),
            ("events", json!(decoded.map(|d| d.1))),
            ("status", json!(status)),
            ("code", json!(code)),
        ],
    );
    result
}

/// Seals (stage two), sends and summarizes a planned delivery: the part of
/// every ingest route after its events are decoded.
async fn write_delivery(
    writes: ingest::Writes,
    config: &Config,
    account: &Account<'_>,
    credential: &crate::cosmos::Credential,
) -> Result<Response<Vec<u8>>, ApiError> {
    let writes = match &config.kek {
        None => writes,
        Some(kek_cfg) => seal_delivery(writes, kek_cfg, config, credential).await?,
    };
    let requests = writes
        .units
        .iter()
        .map(|u| outbound::copy(&u.request))
        .collect();
    let sent = account.send_all(requests).await;
    let stats: Vec<(u32, u64)> = sent.iter().map(|s| (s.attempts, s.duration_ms)).collect();
    let mut results: Vec<_> = writes
        .units
        .iter()
        .zip(sent)
        .map(|(u, s)| ingest::unit_outcome(u, s.result))
        .collect();
    if config.cosmos.write_mode == crate::config::WriteMode::Create {
        for (unit, result) in writes.units.iter().zip(results.iter_mut()) {
            if result.as_ref().err().is_some_and(ingest::is_conflict) {
                *result = create_or_verify(&account, &writes, unit, &config, &credential).await;
            }
        }
    }
    let (response, outcomes) = ingest::respond(&writes, results);
    for (outcome, (attempts, duration_ms)) in outcomes.iter().zip(stats) {
        let mut fields = vec![
            ("documents", json!(outcome.documents)),
            ("batch", json!(outcome.batch)),
            ("attempts", json!(attempts)),
            ("duration_ms", json!(duration_ms)),
        ];
        match &outcome.result {
            Ok(m) => {
                fields.push(("request_charge", json!(m.request_charge)));
                fields.push(("activity_id", json!(m.activity_id)));
                log::emit("info", "documents_written", &fields);
            }
            Err(e) => {
                fields.push(("error", json!(e.to_string())));
                log::emit("warn", "documents_write_failed", &fields);
            }
        }
    }
    Ok(response)
}
