//! The incoming request at the edge: configuration read from Spin variables,
//! headers, the query string, and a body read within its limit.

use futures::future::Either;
use futures::StreamExt;
use http::StatusCode;
use spin_sdk::http::IncomingRequest;

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

pub(crate) fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok())
}

/// Reads the body, refusing more than `limit` bytes before buffering them,
/// within `timeout_secs` in all (a sender that trickles or stalls does not
/// hold the instance). A body that breaks off or does not arrive in time is
/// the transport's failure, not the event's: 503 with `Retry-After`, so
/// Event Grid and the queue bridge try again.
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
    if let Some(len) = header(&req, "content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    let deadline = crate::host::outbound::sleep(timeout_secs.saturating_mul(1000));
    futures::pin_mut!(deadline);
    loop {
        let chunk = match futures::future::select(stream.next(), deadline.as_mut()).await {
            Either::Left((Some(chunk), _)) => chunk,
            Either::Left((None, _)) => break,
            Either::Right(_) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "BodyTimeout",
                    format!("the body did not arrive within {timeout_secs} s"),
                )
                .retry_after(cmk_core::api::DEFAULT_RETRY_AFTER_SECS))
            }
        };
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "BodyUnreadable",
                format!("could not read the body: {e}"),
            )
            .retry_after(cmk_core::api::DEFAULT_RETRY_AFTER_SECS)
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(crate) fn query_of(req: &IncomingRequest) -> String {
    req.path_with_query()
        .and_then(|p| p.split_once('?').map(|(_, q)| q.to_owned()))
        .unwrap_or_default()
}
