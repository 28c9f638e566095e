//! The component's HTTP contract: statuses and JSON error bodies.
//!
//! Every failure becomes `{"error": {"code", "message"}}` with a status that
//! tells Event Grid or the queue bridge what to do: 2xx done; 400, 401, 403,
//! 413 permanent (Event Grid dead-letters these without retrying; the queue
//! bridge also poisons 415); 429, 502, 503 retry later (`Retry-After` where
//! a pause is known). See `docs/ingest.md`.

use http::{header, Response, StatusCode};
use serde_json::{json, Value};

use crate::config::ConfigError;
use crate::cosmos::CosmosError;
use crate::document::DocumentError;
use crate::entra::EntraError;
use crate::events::EventError;
use crate::hsm::HsmError;

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

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidEvent", e.to_string())
    }
}

impl From<DocumentError> for ApiError {
    fn from(e: DocumentError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidEvent", e.to_string())
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        // The deployment is wrong, not the event: keep it for redelivery.
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ConfigurationError",
            e.to_string(),
        )
        .retry_after(60)
    }
}

/// Pause asked of senders while the key-encryption key is unusable: an
/// operator has to act, so retries need not be eager.
pub const KEY_RETRY_AFTER_SECS: u32 = 60;

impl From<&HsmError> for ApiError {
    fn from(e: &HsmError) -> Self {
        let msg = e.to_string();
        match e {
            HsmError::KeyUnavailable { reason, .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason.code(), msg)
                    .retry_after(KEY_RETRY_AFTER_SECS)
            }
            HsmError::Transient {
                retry_after_secs, ..
            } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "KeyServiceUnavailable",
                msg,
            )
            .retry_after(
                retry_after_secs
                    .map(|s| s.clamp(1, 3600) as u32)
                    .unwrap_or(DEFAULT_RETRY_AFTER_SECS),
            ),
            HsmError::Unauthorized(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "KeyAccessDenied", msg)
                    .retry_after(KEY_RETRY_AFTER_SECS)
            }
            HsmError::InvalidKeyId(_)
            | HsmError::Rejected { .. }
            | HsmError::InvalidResponse(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "KeyRejected", msg)
            }
        }
    }
}

impl From<&EntraError> for ApiError {
    fn from(e: &EntraError) -> Self {
        let (code, secs) = if e.is_transient() {
            ("IdentityUnavailable", DEFAULT_RETRY_AFTER_SECS)
        } else {
            ("IdentityFailed", KEY_RETRY_AFTER_SECS)
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string()).retry_after(secs)
    }
}

impl From<&CosmosError> for ApiError {
    fn from(e: &CosmosError) -> Self {
        let msg = e.to_string();
        match e {
            CosmosError::DocumentTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "DocumentTooLarge", msg)
            }
            CosmosError::BatchTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "BatchTooLarge", msg)
            }
            CosmosError::Transient(_)
            | CosmosError::Transport(_)
            | CosmosError::BatchOperationFailed {
                transient: true, ..
            } => {
                let secs = e
                    .retry_after_ms()
                    .map(|ms| ms.div_ceil(1000).max(1) as u32)
                    .unwrap_or(DEFAULT_RETRY_AFTER_SECS);
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable", msg)
                    .retry_after(secs)
            }
            CosmosError::Unauthorized(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "StoreAuthFailed", msg)
            }
            CosmosError::NotFound(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "StoreNotFound", msg)
            }
            CosmosError::ExistsWithOtherContent { .. } => {
                ApiError::new(StatusCode::CONFLICT, "DocumentConflict", msg)
            }
            CosmosError::BatchOperationFailed { .. }
            | CosmosError::Conflict(_)
            | CosmosError::PreconditionFailed(_)
            | CosmosError::Rejected(_)
            | CosmosError::InvalidResponse(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "StoreRejected", msg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosmos::ServiceError;

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

    fn svc(status: u16, retry_after_ms: Option<u64>) -> ServiceError {
        ServiceError {
            status,
            sub_status: None,
            code: "C".into(),
            message: "m".into(),
            activity_id: None,
            retry_after_ms,
        }
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

    #[test]
    fn key_failures_fail_closed_but_keep_events_for_redelivery() {
        use crate::hsm::Unavailable;
        let disabled = ApiError::from(&HsmError::KeyUnavailable {
            reason: Unavailable::Disabled,
            message: "m".into(),
        });
        assert_eq!(
            (
                disabled.status.as_u16(),
                disabled.code,
                disabled.retry_after
            ),
            (503, "KeyDisabled", Some(60))
        );
        let denied = ApiError::from(&HsmError::KeyUnavailable {
            reason: Unavailable::AccessDenied,
            message: "m".into(),
        });
        assert_eq!(denied.code, "KeyAccessDenied");
        let busy = ApiError::from(&HsmError::Transient {
            status: 429,
            message: "m".into(),
            retry_after_secs: Some(2),
        });
        assert_eq!((busy.status.as_u16(), busy.retry_after), (503, Some(2)));
        let refused = EntraError::Refused {
            status: 401,
            error: "invalid_client".into(),
            description: "d".into(),
            correlation: None,
            transient: false,
        };
        assert_eq!(ApiError::from(&refused).code, "IdentityFailed");
    }

    #[test]
    fn cosmos_failures_map_to_sender_actions() {
        let map = |e: CosmosError| ApiError::from(&e);
        let t = map(CosmosError::Transient(svc(429, Some(1500))));
        assert_eq!((t.status.as_u16(), t.retry_after), (503, Some(2)));
        assert_eq!(
            map(CosmosError::Transport("reset".into())).retry_after,
            Some(DEFAULT_RETRY_AFTER_SECS)
        );
        assert_eq!(map(CosmosError::Unauthorized(svc(401, None))).status, 502);
        assert_eq!(map(CosmosError::NotFound(svc(404, None))).status, 502);
        assert_eq!(map(CosmosError::Rejected(svc(400, None))).status, 502);
        assert_eq!(
            map(CosmosError::DocumentTooLarge { size: 3, limit: 2 }).status,
            413
        );
    }
}
