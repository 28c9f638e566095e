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

use crate::endpoint::Endpoint;
use crate::time::UnixTime;

mod error;

pub use error::*;

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
        let origin = vault.origin();
        let rest = kid
            .strip_prefix(&origin)
            .or_else(|| {
                // The service may name its default port implicitly.
                origin
                    .strip_suffix(":443")
                    .and_then(|base| kid.strip_prefix(base))
            })
            .ok_or_else(|| HsmError::InvalidKeyId(format!("`{kid}` is not a key of {origin}")))?;
        // One trailing slash (a versionless key's path); no more.
        let parts: Vec<&str> = rest.strip_suffix('/').unwrap_or(rest).split('/').collect();
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
            Some(v) => ["/keys/", &self.name, "/", v].concat(),
            None => ["/keys/", &self.name, "/"].concat(),
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
    #[serde(with = "base64url_bytes")]
    pub n: Vec<u8>,
    /// RSA public exponent (big-endian).
    #[serde(with = "base64url_bytes")]
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

/// `n` and `e` in [`KeyInfo`]'s serialized form (the component's cached
/// key state) as base64url strings, as JWK writes them: serde's default, an
/// array of numbers, took about a tenth of the component's own instructions
/// per delivery to read back (docs/benchmarks.md, "Run of 2026-12-06
/// (evening)").
mod base64url_bytes {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| serde::de::Error::custom("not unpadded base64url"))
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
        .uri([&vault.origin(), path, "?api-version=", API_VERSION].concat())
        .header(header::AUTHORIZATION, ["Bearer ", token].concat())
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
        &[&key.path(), "/", op].concat(),
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
/// (RSA-OAEP-256: SHA-256 for the hash and MGF1, empty label). `seed` is
/// OAEP's random seed (RFC 8017, 7.1.1 step 2d): 32 bytes from a secure
/// random source, fresh for every wrap; the caller draws it, so this stays
/// free of I/O. The result names `key.kid`, which must be a versioned key
/// id of `vault`, so the stored record unwraps with exactly this version.
/// The caller checks the key's state first ([`check_usable`]).
pub fn wrap_locally(
    key: &KeyInfo,
    vault: &Endpoint,
    dek: &[u8],
    seed: &[u8; 32],
) -> Result<CryptResult, HsmError> {
    wrap_locally_kept(key, vault, dek, seed, None).map(|(wrapped, _)| wrapped)
}

/// The constant a key's modulus needs for each RSA operation (R^2 mod n
/// of its Montgomery form), which depends on the modulus alone: made once
/// when the key's state is checked and kept with it in the key-value
/// store, it spares every local wrap about a quarter of its instructions
/// (docs/benchmarks.md, "Run of 2026-12-07 (later)"). Serialized as
/// unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModulusConstant(#[serde(with = "base64url_bytes")] Vec<u8>);

impl ModulusConstant {
    /// The constant of `key`'s modulus.
    pub fn of(key: &KeyInfo) -> Result<Self, HsmError> {
        let public = oaep::PublicKey::new(&key.n, &key.e).map_err(|e| {
            HsmError::InvalidResponse(format!("the key's public part is unusable: {e}"))
        })?;
        Ok(Self(public.r_squared_bytes()))
    }
}

/// [`wrap_locally`] with the key's kept [`ModulusConstant`], if any. A
/// constant that is not the modulus's own (a damaged cache entry) is
/// checked and set aside, and the wrap makes its own: the result is the
/// same either way. The flag says whether a kept constant was set aside,
/// for the caller to log (each such wrap costs about a third more).
pub fn wrap_locally_kept(
    key: &KeyInfo,
    vault: &Endpoint,
    dek: &[u8],
    seed: &[u8; 32],
    kept: Option<&ModulusConstant>,
) -> Result<(CryptResult, bool), HsmError> {
    let kref = KeyRef::from_kid(&key.kid, vault)?;
    if kref.version.is_none() {
        return Err(HsmError::InvalidKeyId(format!(
            "`{}` names no version; a wrapped key must name the one that wrapped it",
            key.kid
        )));
    }
    let mut public = oaep::PublicKey::new(&key.n, &key.e).map_err(|e| {
        HsmError::InvalidResponse(format!("the key's public part is unusable: {e}"))
    })?;
    let set_aside = kept.is_some_and(|c| !public.use_r_squared(&c.0));
    let value = public
        .encrypt(dek, seed)
        .map_err(|e| HsmError::InvalidResponse(format!("local wrap failed: {e}")))?;
    Ok((
        CryptResult {
            kid: key.kid.clone(),
            value,
        },
        set_aside,
    ))
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

/// Whether a key state cached at `checked_at` may be used at `now` without
/// asking the HSM again: checked less than `check_secs` ago, and not "in the
/// future" by more than [`crate::time::CLOCK_SKEW_SECS`] (a clock far off, or
/// a writer of the key-value store pinning a state): such a state is not
/// believed. `check_secs` 0 caches nothing.
pub fn cached_state_usable(checked_at: UnixTime, now: UnixTime, check_secs: u64) -> bool {
    now.0 < checked_at.0.saturating_add(check_secs)
        && checked_at.0 <= now.0.saturating_add(crate::time::CLOCK_SKEW_SECS)
}

#[cfg(test)]
mod tests;
