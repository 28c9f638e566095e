//! The incoming request at the edge: configuration read from Spin variables,
//! headers, the query string, and a body read within its limit.

use std::cell::RefCell;
use std::pin::pin;

use futures::future::Either;
use http::StatusCode;
use spin_sdk::http::IncomingRequest;
use spin_sdk::wit::wasi::http0_2_0::types::IncomingBody;

use crate::host::wire::{self, ReadError};

use cmk_core::api::ApiError;
use cmk_core::config::Config;

/// The configuration, its warnings logged (each request runs in a fresh
/// instance, so they come once per request).
pub(crate) fn load_config() -> Result<Config, ApiError> {
    let config = load_config_quietly()?;
    log_warnings(&config);
    Ok(config)
}

/// The configuration without logging its warnings: for the platform's
/// anonymous probes, which would repeat them every few seconds.
pub(crate) fn load_config_quietly() -> Result<Config, ApiError> {
    Config::load(|name| {
        cmk_core::tally::host(cmk_core::tally::HostCall::Variable);
        match spin_sdk::variables::get(name) {
            Ok(v) => Ok(Some(v)),
            Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    })
    .map_err(ApiError::from)
}

/// Logs the configuration's warnings.
pub(crate) fn log_warnings(config: &Config) {
    for w in config.warnings() {
        crate::host::log::emit(
            "warn",
            "config_warning",
            &[("message", serde_json::json!(w))],
        );
    }
}

/// Header entries as the host hands them over: names and raw values.
type Entries = Vec<(String, Vec<u8>)>;

thread_local! {
    /// The incoming request's header entries, read from the host once: each
    /// `headers()` and `get` is a call across the component boundary.
    static HEADERS: RefCell<Option<Entries>> = const { RefCell::new(None) };
}

/// Forgets the header entries read for the previous request (called as a
/// request starts; each request normally runs in a fresh instance).
pub(crate) fn start_request() {
    HEADERS.with(|h| h.borrow_mut().take());
}

/// Runs `f` on the incoming request's header entries, read from the host
/// on first use.
fn with_entries<R>(req: &IncomingRequest, f: impl FnOnce(&Entries) -> R) -> R {
    HEADERS.with(|h| {
        f(h.borrow_mut()
            .get_or_insert_with(|| req.headers().entries()))
    })
}

/// The first value of header `name` (case-insensitive), as UTF-8.
pub(crate) fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    with_entries(req, |entries| {
        entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    })
}

/// Every header entry whose value is UTF-8, in the order received.
pub(crate) fn header_entries(req: &IncomingRequest) -> Vec<(String, String)> {
    with_entries(req, |entries| {
        entries
            .iter()
            .filter_map(|(n, v)| Some((n.clone(), String::from_utf8(v.clone()).ok()?)))
            .collect()
    })
}

/// Every header entry as received, values as bytes.
pub(crate) fn raw_header_entries(req: &IncomingRequest) -> Vec<(String, Vec<u8>)> {
    with_entries(req, |entries| entries.clone())
}

/// Reads the body, refusing more than `limit` bytes before buffering them,
/// within `timeout_secs` in all (a sender that trickles or stalls does not
/// hold the instance). A body that breaks off or does not arrive in time is
/// the transport's failure, not the event's: 503 with `Retry-After`, so
/// Event Grid and the queue bridge try again. A declared `content-length`
/// is read to its end without a further read for the end of the stream.
pub(crate) async fn read_body(
    req: IncomingRequest,
    limit: usize,
    timeout_secs: u64,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BodyTooLarge",
            format!("request body exceeds {limit} bytes"),
        )
    };
    let declared = header(&req, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let unreadable = |e: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BodyUnreadable",
            format!("could not read the body: {e}"),
        )
        .retry_after(cmk_core::api::DEFAULT_RETRY_AFTER_SECS)
    };
    let body = req
        .consume()
        .map_err(|()| unreadable("the body was already taken".into()))?;
    let stream = body
        .stream()
        .map_err(|()| unreadable("the body was already taken".into()))?;
    let deadline = crate::host::outbound::sleep(timeout_secs.saturating_mul(1000));
    let raced = {
        let read = pin!(wire::read_all(&stream, declared, limit));
        match futures::future::select(read, pin!(deadline)).await {
            Either::Left((r, _)) => Some(r),
            Either::Right(_) => None,
        }
    };
    let result = match raced {
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(ReadError::TooLarge)) => Err(too_large()),
        Some(Err(ReadError::Broken(e))) => Err(unreadable(e)),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BodyTimeout",
            format!("the body did not arrive within {timeout_secs} s"),
        )
        .retry_after(cmk_core::api::DEFAULT_RETRY_AFTER_SECS)),
    };
    drop(stream);
    IncomingBody::finish(body);
    result
}

pub(crate) fn query_of(req: &IncomingRequest) -> String {
    req.path_with_query()
        .and_then(|p| p.split_once('?').map(|(_, q)| q.to_owned()))
        .unwrap_or_default()
}
