//! What can go wrong with the HSM: the error type, why a key is
//! unavailable, the classification of the service's error answers, and
//! their mapping to the HTTP contract's error.

use http::{header, Response};
use serde::Deserialize;

use crate::api::{ApiError, DEFAULT_RETRY_AFTER_SECS, KEY_RETRY_AFTER_SECS};

/// Why a key cannot be used. Each is permanent until an operator acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The key version is disabled.
    Disabled,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// The key or version does not exist (deleted or never created).
    NotFound,
    /// The caller's access was refused (role removed or never granted).
    AccessDenied,
    /// The key does not permit the operation (`key_ops`).
    OperationNotPermitted,
    /// Not an RSA-HSM key.
    WrongKeyType,
}

impl Unavailable {
    /// Stable code for logs and error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Unavailable::Disabled => "KeyDisabled",
            Unavailable::Expired => "KeyExpired",
            Unavailable::NotYetValid => "KeyNotYetValid",
            Unavailable::NotFound => "KeyNotFound",
            Unavailable::AccessDenied => "KeyAccessDenied",
            Unavailable::OperationNotPermitted => "KeyOperationForbidden",
            Unavailable::WrongKeyType => "KeyTypeNotSupported",
        }
    }
}

/// Everything that can go wrong with the HSM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HsmError {
    /// The key cannot be used: nothing is written or decrypted.
    #[error("the key-encryption key is unavailable ({}): {message}", reason.code())]
    KeyUnavailable {
        /// Why.
        reason: Unavailable,
        /// The service's or this crate's explanation.
        message: String,
    },
    /// 401: the token was not accepted (expired, wrong audience); get a new one.
    #[error("the HSM did not accept the access token: {0}")]
    Unauthorized(String),
    /// 429 or 5xx: try again later.
    #[error("the HSM is temporarily unavailable ({status}): {message}")]
    Transient {
        /// HTTP status.
        status: u16,
        /// The service's message.
        message: String,
        /// `Retry-After`, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// Any other refusal (e.g. 400 BadParameter).
    #[error("the HSM rejected the request ({status} {code}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// A key id that is malformed or names another vault.
    #[error("invalid key id: {0}")]
    InvalidKeyId(String),
    /// A 2xx answer that is not what the API promises.
    #[error("unexpected answer from the HSM: {0}")]
    InvalidResponse(String),
}

impl HsmError {
    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, HsmError::Transient { .. })
    }
}

#[derive(Deserialize, Default)]
struct RawErrorBody {
    #[serde(default)]
    error: RawError,
}

#[derive(Deserialize, Default)]
struct RawError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    innererror: Option<Box<RawError>>,
}

/// Classifies a non-2xx answer.
pub fn error_from(resp: &Response<Vec<u8>>) -> HsmError {
    let status = resp.status().as_u16();
    let raw = serde_json::from_slice::<RawErrorBody>(resp.body())
        .unwrap_or_default()
        .error;
    let inner = raw
        .innererror
        .as_ref()
        .map(|i| i.code.as_str())
        .unwrap_or("");
    let message: String = if raw.message.is_empty() {
        resp.status()
            .canonical_reason()
            .unwrap_or("error")
            .to_owned()
    } else {
        raw.message.chars().take(400).collect()
    };
    let unavailable = |reason| HsmError::KeyUnavailable {
        reason,
        message: message.clone(),
    };
    match status {
        401 => HsmError::Unauthorized(message),
        403 => match inner {
            "KeyDisabled" => unavailable(Unavailable::Disabled),
            "KeyExpired" => unavailable(Unavailable::Expired),
            "KeyNotYetValid" => unavailable(Unavailable::NotYetValid),
            "KeyOperationForbidden" => unavailable(Unavailable::OperationNotPermitted),
            _ if message.contains("disabled") => unavailable(Unavailable::Disabled),
            _ if message.contains("expired") => unavailable(Unavailable::Expired),
            _ => unavailable(Unavailable::AccessDenied),
        },
        // The service names a missing key (or version) `KeyNotFound`. Any
        // other 404 (a proxy's page, another pool or path) says nothing
        // about the key, and erasure acts on `NotFound` for good.
        404 if raw.code == "KeyNotFound" || inner == "KeyNotFound" => {
            unavailable(Unavailable::NotFound)
        }
        429 | 500..=599 => HsmError::Transient {
            status,
            message,
            retry_after_secs: resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        },
        _ => HsmError::Rejected {
            status,
            code: if raw.code.is_empty() {
                format!("http_{status}")
            } else {
                raw.code
            },
            message,
        },
    }
}

impl From<&HsmError> for ApiError {
    fn from(e: &HsmError) -> Self {
        let msg = e.to_string();
        match e {
            HsmError::KeyUnavailable { reason, .. } => {
                ApiError::new(http::StatusCode::SERVICE_UNAVAILABLE, reason.code(), msg)
                    .retry_after(KEY_RETRY_AFTER_SECS)
            }
            HsmError::Transient {
                retry_after_secs, ..
            } => ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "KeyServiceUnavailable",
                msg,
            )
            .retry_after(
                retry_after_secs
                    .map(|s| s.clamp(1, 3600) as u32)
                    .unwrap_or(DEFAULT_RETRY_AFTER_SECS),
            ),
            HsmError::Unauthorized(_) => ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "KeyAccessDenied",
                msg,
            )
            .retry_after(KEY_RETRY_AFTER_SECS),
            HsmError::InvalidKeyId(_)
            | HsmError::Rejected { .. }
            | HsmError::InvalidResponse(_) => {
                ApiError::new(http::StatusCode::BAD_GATEWAY, "KeyRejected", msg)
            }
        }
    }
}
