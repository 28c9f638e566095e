//! The component's HTTP contract: statuses and JSON error bodies.
//!
//! Every failure becomes `{"error": {"code", "message"}}` with a status that
//! tells Event Grid or the queue bridge what to do: 2xx done; 400, 401, 403,
//! 413 permanent (Event Grid dead-letters these without retrying; the queue
//! bridge also poisons 415); 429, 502, 503 retry later (`Retry-After` where
//! a pause is known). See `docs/ingest.md`.

use http::{header, Response, StatusCode};
use serde_json::{json, Value};

/// A failure as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable reason; never holds a secret or a protected value.
    pub message: String,
    /// Seconds for `Retry-After`, on retryable failures.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A failure with no retry hint.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` hint.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The HTTP response for this failure.
    pub fn to_response(&self) -> Response<Vec<u8>> {
        let mut r = json_response(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message}}),
        );
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        r
    }
}

/// The error code of a failure answered as a response, `{"error": {"code"}}`
/// (a delivery whose writes failed is answered that way), for the log.
pub fn error_code_of(r: &Response<Vec<u8>>) -> Option<String> {
    if r.status().as_u16() < 400 {
        return None;
    }
    let body: Value = serde_json::from_slice(r.body()).ok()?;
    body["error"]["code"].as_str().map(str::to_owned)
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("JSON values serialize"))
        .expect("static headers are valid")
}

/// Default pause asked of senders when a dependency is briefly unavailable.
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 5;

/// Pause asked of senders while the key-encryption key is unusable: an
/// operator has to act, so retries need not be eager.
pub const KEY_RETRY_AFTER_SECS: u32 = 60;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_code_of_an_answered_failure_is_read_back() {
        let failed =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable", "m").to_response();
        assert_eq!(error_code_of(&failed).as_deref(), Some("StoreUnavailable"));
        let ok = json_response(StatusCode::OK, &json!({"error": {"code": "NotAnError"}}));
        assert_eq!(error_code_of(&ok), None);
        let plain = Response::builder()
            .status(502)
            .body(b"bad gateway".to_vec())
            .unwrap();
        assert_eq!(error_code_of(&plain), None);
    }

    #[test]
    fn error_body_and_retry_after() {
        let r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "X", "m")
            .retry_after(7)
            .to_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v, json!({"error": {"code": "X", "message": "m"}}));
    }
}
