//! Azure Key Vault Managed HSM keys over REST: read a key's state, wrap and
//! unwrap data keys with RSA-OAEP-256. Pure request builders and response
//! parsers; the caller sends them with a bearer token for
//! `https://managedhsm.azure.net/.default`.
//!
//! Fail closed: a disabled, expired, not-yet-valid, deleted or forbidden key,
//! and revoked access, are permanent [`HsmError::KeyUnavailable`] errors that
//! stop writes and reads. The service still performs `wrapKey` with a
//! disabled key (a public-key operation), so writers must check the key's
//! state themselves ([`check_usable`]) rather than rely on `wrapkey` failing.
//!
//! [`wrap_locally`] performs that same public-key operation here, with the
//! key version's public part, for deployments that opt into saving the
//! `wrapkey` round trip (`hsm_local_wrap`); unwrapping always needs the HSM.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::{header, Method, Request, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, DEFAULT_RETRY_AFTER_SECS, KEY_RETRY_AFTER_SECS};
use crate::endpoint::Endpoint;
use crate::time::UnixTime;

/// Keys REST API version used for every call (the official SDK's default).
pub const API_VERSION: &str = "2025-07-01";
/// The only wrapping algorithm used.
pub const ALGORITHM: &str = "RSA-OAEP-256";

/// A key name and, once known, its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// Key name.
    pub name: String,
    /// Version; `None` means the latest.
    pub version: Option<String>,
}

impl KeyRef {
    /// Parses a key id `https://{hsm}/keys/{name}[/{version}]`, checking that it
    /// belongs to `vault`, so a stored key id can never send a token elsewhere.
    pub fn from_kid(kid: &str, vault: &Endpoint) -> Result<Self, HsmError> {
        let rest = kid
            .strip_prefix(&vault.origin())
            .or_else(|| {
                // The service may name its default port implicitly.
                let o = vault.origin();
                o.strip_suffix(":443")
                    .and_then(|base| kid.strip_prefix(base))
            })
            .ok_or_else(|| {
                HsmError::InvalidKeyId(format!("`{kid}` is not a key of {}", vault.origin()))
            })?;
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        match parts.as_slice() {
            ["", "keys", name] if valid_segment(name) => Ok(Self {
                name: (*name).into(),
                version: None,
            }),
            ["", "keys", name, version] if valid_segment(name) && valid_segment(version) => {
                Ok(Self {
                    name: (*name).into(),
                    version: Some((*version).into()),
                })
            }
            _ => Err(HsmError::InvalidKeyId(format!(
                "`{kid}` is not /keys/{{name}}[/{{version}}]"
            ))),
        }
    }

    fn path(&self) -> String {
        match &self.version {
            Some(v) => format!("/keys/{}/{}", self.name, v),
            None => format!("/keys/{}/", self.name),
        }
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 127 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A key operation this crate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    /// `wrapKey`
    Wrap,
    /// `unwrapKey`
    Unwrap,
}

impl KeyOp {
    fn as_str(self) -> &'static str {
        match self {
            KeyOp::Wrap => "wrapKey",
            KeyOp::Unwrap => "unwrapKey",
        }
    }
}

/// A key version's public part and state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct KeyInfo {
    /// Full key id, with version.
    pub kid: String,
    /// `kty`, e.g. `RSA-HSM`.
    pub kty: String,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// RSA modulus (big-endian).
    pub n: Vec<u8>,
    /// RSA public exponent (big-endian).
    pub e: Vec<u8>,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.nbf` (epoch seconds).
    pub not_before: Option<u64>,
    /// `attributes.exp` (epoch seconds).
    pub expires: Option<u64>,
    /// `attributes.recoveryLevel`.
    pub recovery_level: Option<String>,
}

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

fn request(
    vault: &Endpoint,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Vec<u8>>,
) -> Request<Vec<u8>> {
    let body = body.unwrap_or_default();
    let mut b = Request::builder()
        .method(method)
        .uri(format!(
            "{}{path}?api-version={API_VERSION}",
            vault.origin()
        ))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    if !body.is_empty() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    b.body(body).expect("valid request parts")
}

/// `GET /keys/{name}/{version}` (or the latest version).
pub fn get_key_request(vault: &Endpoint, key: &KeyRef, token: &str) -> Request<Vec<u8>> {
    request(vault, Method::GET, &key.path(), token, None)
}

fn crypt_request(
    vault: &Endpoint,
    key: &KeyRef,
    op: &str,
    value: &[u8],
    token: &str,
) -> Result<Request<Vec<u8>>, HsmError> {
    if key.version.is_none() {
        return Err(HsmError::InvalidKeyId(format!(
            "{op} needs an exact key version"
        )));
    }
    let body =
        serde_json::to_vec(&json!({"alg": ALGORITHM, "value": URL_SAFE_NO_PAD.encode(value)}))
            .expect("JSON");
    Ok(request(
        vault,
        Method::POST,
        &format!("{}/{op}", key.path()),
        token,
        Some(body),
    ))
}

/// `POST /keys/{name}/{version}/wrapkey` with RSA-OAEP-256.
pub fn wrap_request(
    vault: &Endpoint,
    key: &KeyRef,
    dek: &[u8],
    token: &str,
) -> Result<Request<Vec<u8>>, HsmError> {
    crypt_request(vault, key, "wrapkey", dek, token)
}

/// `POST /keys/{name}/{version}/unwrapkey` with RSA-OAEP-256.
pub fn unwrap_request(
    vault: &Endpoint,
    key: &KeyRef,
    wrapped: &[u8],
    token: &str,
) -> Result<Request<Vec<u8>>, HsmError> {
    crypt_request(vault, key, "unwrapkey", wrapped, token)
}

/// Decodes base64url with or without padding; standard base64 is accepted too
/// (one REST example shows it).
pub fn decode_b64url(s: &str) -> Option<Vec<u8>> {
    let t = s.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .or_else(|| STANDARD_NO_PAD.decode(t).ok())
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
        404 => unavailable(Unavailable::NotFound),
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

#[derive(Deserialize)]
struct RawKeyBundle {
    key: RawJwk,
    #[serde(default)]
    attributes: RawAttributes,
}

#[derive(Deserialize)]
struct RawJwk {
    kid: String,
    kty: String,
    #[serde(default)]
    key_ops: Vec<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawAttributes {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default, rename = "recoveryLevel")]
    recovery_level: Option<String>,
}

/// Parses a key bundle (`GET /keys/...`).
pub fn parse_key(resp: &Response<Vec<u8>>) -> Result<KeyInfo, HsmError> {
    if resp.status().as_u16() != 200 {
        return Err(error_from(resp));
    }
    let raw: RawKeyBundle = serde_json::from_slice(resp.body())
        .map_err(|e| HsmError::InvalidResponse(format!("key bundle: {e}")))?;
    let n = raw
        .key
        .n
        .as_deref()
        .and_then(decode_b64url)
        .unwrap_or_default();
    let e = raw
        .key
        .e
        .as_deref()
        .and_then(decode_b64url)
        .unwrap_or_default();
    Ok(KeyInfo {
        kid: raw.key.kid,
        kty: raw.key.kty,
        key_ops: raw.key.key_ops,
        n,
        e,
        enabled: raw.attributes.enabled.unwrap_or(false),
        not_before: raw.attributes.nbf,
        expires: raw.attributes.exp,
        recovery_level: raw.attributes.recovery_level,
    })
}

/// Refuses a key the component must not use for `op` at `now`.
pub fn check_usable(key: &KeyInfo, op: KeyOp, now: UnixTime) -> Result<(), HsmError> {
    let refuse = |reason, message: String| Err(HsmError::KeyUnavailable { reason, message });
    if key.kty != "RSA-HSM" && key.kty != "RSA" {
        return refuse(
            Unavailable::WrongKeyType,
            format!("key type {} is not RSA-HSM", key.kty),
        );
    }
    if key.kty == "RSA" {
        return refuse(
            Unavailable::WrongKeyType,
            "software-protected RSA keys are not accepted; use RSA-HSM".into(),
        );
    }
    if key.n.len() < 256 || key.e.is_empty() {
        return refuse(
            Unavailable::WrongKeyType,
            format!(
                "RSA modulus of {} bits; at least 2048 are required",
                key.n.len() * 8
            ),
        );
    }
    if !key.enabled {
        return refuse(
            Unavailable::Disabled,
            format!("key {} is disabled", key.kid),
        );
    }
    if let Some(nbf) = key.not_before.filter(|nbf| now.0 < *nbf) {
        return refuse(
            Unavailable::NotYetValid,
            format!("key {} is not valid before {}", key.kid, UnixTime(nbf)),
        );
    }
    if let Some(exp) = key.expires.filter(|exp| now.0 >= *exp) {
        return refuse(
            Unavailable::Expired,
            format!("key {} expired at {}", key.kid, UnixTime(exp)),
        );
    }
    if !key.key_ops.iter().any(|o| o == op.as_str()) {
        return refuse(
            Unavailable::OperationNotPermitted,
            format!(
                "key {} does not permit {} (allowed: {})",
                key.kid,
                op.as_str(),
                key.key_ops.join(", ")
            ),
        );
    }
    Ok(())
}

/// Wraps `dek` as the HSM's `wrapkey` would, with the public part of `key`
/// (RSA-OAEP-256: SHA-256 for the hash and MGF1, empty label), drawing the
/// OAEP seed from `rng`. The result names `key.kid`, which must be a
/// versioned key id of `vault`, so the stored record unwraps with exactly
/// this version. The caller checks the key's state first ([`check_usable`]).
pub fn wrap_locally(
    key: &KeyInfo,
    vault: &Endpoint,
    dek: &[u8],
    rng: &mut impl rsa::rand_core::CryptoRngCore,
) -> Result<CryptResult, HsmError> {
    let kref = KeyRef::from_kid(&key.kid, vault)?;
    if kref.version.is_none() {
        return Err(HsmError::InvalidKeyId(format!(
            "`{}` names no version; a wrapped key must name the one that wrapped it",
            key.kid
        )));
    }
    let public = oaep::PublicKey::new(&key.n, &key.e).map_err(|e| {
        HsmError::InvalidResponse(format!("the key's public part is unusable: {e}"))
    })?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut seed[..]);
    let value = public
        .encrypt(dek, &seed)
        .map_err(|e| HsmError::InvalidResponse(format!("local wrap failed: {e}")))?;
    Ok(CryptResult {
        kid: key.kid.clone(),
        value,
    })
}

pub(crate) mod oaep;

/// A wrap or unwrap result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptResult {
    /// The exact key version that did the work.
    pub kid: String,
    /// Wrapped or unwrapped bytes.
    pub value: Vec<u8>,
}

/// Parses a `wrapkey`/`unwrapkey` answer.
pub fn parse_crypt(resp: &Response<Vec<u8>>) -> Result<CryptResult, HsmError> {
    if resp.status().as_u16() != 200 {
        return Err(error_from(resp));
    }
    #[derive(Deserialize)]
    struct Raw {
        kid: String,
        value: String,
    }
    let raw: Raw = serde_json::from_slice(resp.body())
        .map_err(|e| HsmError::InvalidResponse(format!("key operation result: {e}")))?;
    let value = decode_b64url(&raw.value)
        .ok_or_else(|| HsmError::InvalidResponse("value is not base64url".into()))?;
    Ok(CryptResult {
        kid: raw.kid,
        value,
    })
}

/// The answer to a wrap or unwrap of `requested` (an exact version): the
/// result must name that same key version, so a value wrapped under another
/// version (a misrouted or confused answer) is never stored or returned.
pub fn parse_crypt_for(
    resp: &Response<Vec<u8>>,
    requested: &KeyRef,
    vault: &Endpoint,
) -> Result<CryptResult, HsmError> {
    let r = parse_crypt(resp)?;
    match KeyRef::from_kid(&r.kid, vault) {
        Ok(k) if &k == requested => Ok(r),
        _ => Err(HsmError::InvalidResponse(format!(
            "the HSM answered for key `{}`, not for version `{}` of `{}`",
            r.kid,
            requested.version.as_deref().unwrap_or("-"),
            requested.name
        ))),
    }
}

/// Whether a state read from the HSM is news: it differs from the one last
/// cached (enabled, version, validity window), or none was cached yet in a
/// key-value store that keeps it. Without a store nothing is ever cached, and
/// each request (an instance of its own) would log its first read as new.
pub fn state_changed(remembers: bool, previous: Option<&KeyInfo>, now: &KeyInfo) -> bool {
    match previous {
        Some(p) => {
            p.kid != now.kid
                || p.enabled != now.enabled
                || p.not_before != now.not_before
                || p.expires != now.expires
        }
        None => remembers,
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

#[cfg(test)]
mod tests;
