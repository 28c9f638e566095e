//! Authorizing the sender of a delivery: the ingest key (header, or the
//! `code` query parameter where allowed), an Entra ID bearer token, and
//! Event Grid's webhook validation handshake.

use http::{Response, StatusCode};

use crate::api::ApiError;
use crate::config::Config;

pub use crate::access::INGEST_KEY_HEADER;

/// What the sender presented, once checked as far as the core can.
#[derive(Debug)]
pub enum SenderCredential {
    /// A configured ingest key: accepted.
    Key,
    /// An Entra ID bearer token, to verify against the tenant's signing keys
    /// (see [`crate::jwt::verify`]; a refusal maps to [`ApiError`] in
    /// [`crate::jwt`]).
    Token(crate::jwt::Token),
}

/// Checks the sender's credential: an Entra ID bearer token in
/// `Authorization` when Entra protected delivery is configured, else an
/// ingest key (header; the `code` query parameter only where allowed).
pub fn authorize(
    config: &Config,
    authorization: Option<&str>,
    header_key: Option<&str>,
    query: &str,
) -> Result<SenderCredential, ApiError> {
    let entra = config.ingest.entra.is_some();
    if entra {
        if let Some(t) = authorization.and_then(crate::jwt::bearer) {
            return crate::jwt::Token::parse(t)
                .map(SenderCredential::Token)
                .map_err(|e| ApiError::from(&e));
        }
    }
    let code = key_in_query(query);
    let Some(keys) = &config.ingest.keys else {
        if entra {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthenticated",
                "send an Entra ID bearer token in Authorization",
            ));
        }
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ConfigurationError",
            "neither ingest_keys nor ingest_entra_audiences is configured; deliveries are refused until one is",
        )
        .retry_after(crate::api::KEY_RETRY_AFTER_SECS));
    };
    if header_key.is_none() && code.is_some() && !config.ingest.key_in_query {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "KeyInQueryRefused",
            format!("send the ingest key in {INGEST_KEY_HEADER}, not as ?code= in the URL (ingest_key_in_query = deny)"),
        ));
    }
    let presented = header_key
        .map(str::to_owned)
        .or(code.filter(|_| config.ingest.key_in_query));
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            if entra {
                format!("send an Entra ID bearer token in Authorization, or the ingest key in {INGEST_KEY_HEADER}")
            } else {
                format!("send the ingest key in {INGEST_KEY_HEADER}")
            },
        )),
        Some(k) if keys.accepts(&k) => Ok(SenderCredential::Key),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the ingest key is not accepted",
        )),
    }
}

/// The ingest key in the URL's `code` parameter, if any. Taken only with
/// `ingest_key_in_query = allow`; the edge logs each use as deprecated.
pub fn key_in_query(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("code="))
        .and_then(crate::percent::percent_decode)
}

/// The CloudEvents webhook abuse-protection handshake (`OPTIONS` with
/// `WebHook-Request-Origin`): allow that origin, at any rate.
pub fn webhook_handshake(request_origin: Option<&str>) -> Result<Response<Vec<u8>>, ApiError> {
    let origin = request_origin
        .filter(|o| !o.trim().is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "OPTIONS needs a WebHook-Request-Origin header",
            )
        })?;
    let value = http::HeaderValue::from_str(origin.trim()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "WebHook-Request-Origin is not a valid header value",
        )
    })?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("WebHook-Allowed-Origin", value)
        .header("WebHook-Allowed-Rate", "*")
        .header(http::header::ALLOW, "POST, OPTIONS")
        .body(Vec::new())
        .expect("valid headers"))
}
