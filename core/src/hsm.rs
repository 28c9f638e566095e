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
use crate::cosmos::Endpoint;
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

mod oaep {
    //! RSAES-OAEP encryption with SHA-256 (RFC 8017, section 7.1.1; MGF1 with
    //! SHA-256, empty label), public key only.
    //!
    //! The modular exponentiation works on 32-bit limbs with 64-bit products,
    //! which WebAssembly has as single instructions: Montgomery multiplication
    //! (FIOS), one squaring per exponent bit and one multiplication per set bit
    //! (17 for e = 65537), and R^2 mod n from a few doublings and five
    //! Montgomery squarings rather than a long division. The modulus and the
    //! exponent are public; the message (which carries the data key) only meets
    //! branch-free code: the multiplication's final subtraction is a masked
    //! select.

    use sha2::{Digest, Sha256};
    use zeroize::Zeroizing;

    const H_LEN: usize = 32;

    /// Why a key or message is refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum OaepError {
        /// The modulus is even, or not 2048 to 4096 bits long (the sizes
        /// Managed HSM makes).
        #[error("the modulus is even or not 2048 to 4096 bits long")]
        Modulus,
        /// The exponent is even, below 3 or longer than 64 bits.
        #[error("the public exponent is even, below 3 or longer than 64 bits")]
        Exponent,
        /// The message does not fit one block.
        #[error("the message is too long for the key")]
        MessageTooLong,
    }

    /// An RSA public key prepared for encryption.
    pub struct PublicKey {
        /// Modulus, little-endian 32-bit limbs, top limb non-zero.
        n: Vec<u32>,
        /// Public exponent.
        e: u64,
        /// -n^-1 mod 2^32.
        n0inv: u32,
        /// Length of n in bytes.
        k: usize,
    }

    impl PublicKey {
        /// Takes the big-endian modulus and exponent (leading zeros allowed).
        pub fn new(n: &[u8], e: &[u8]) -> Result<Self, OaepError> {
            let n = strip(n);
            let e = strip(e);
            let k = n.len();
            let bits = (8 * k).saturating_sub(n.first().map_or(8, |b| b.leading_zeros() as usize));
            if !(2048..=4096).contains(&bits) || n[k - 1] & 1 == 0 {
                return Err(OaepError::Modulus);
            }
            if e.len() > 8 || e.is_empty() {
                return Err(OaepError::Exponent);
            }
            let e = e.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
            if e < 3 || e & 1 == 0 {
                return Err(OaepError::Exponent);
            }
            // e < n holds: n has at least 2048 bits, e at most 64.
            let n = limbs(n, k.div_ceil(4));
            let n0inv = neg_inv32(n[0]);
            Ok(Self { n, e, n0inv, k })
        }

        /// RSAES-OAEP-ENCRYPT with SHA-256, MGF1-SHA-256 and an empty label;
        /// `seed` is the random octet string of RFC 8017 step 2d.
        pub fn encrypt(&self, msg: &[u8], seed: &[u8; H_LEN]) -> Result<Vec<u8>, OaepError> {
            let k = self.k;
            if msg.len() > k - 2 * H_LEN - 2 {
                return Err(OaepError::MessageTooLong);
            }
            // EM = 0x00 || maskedSeed || maskedDB, DB = lHash || PS || 0x01 || M.
            let mut em = Zeroizing::new(vec![0u8; k]);
            {
                let (seed_part, db) = em[1..].split_at_mut(H_LEN);
                db[..H_LEN].copy_from_slice(&Sha256::digest(b""));
                let one = db.len() - msg.len() - 1;
                db[one] = 1;
                db[one + 1..].copy_from_slice(msg);
                mgf1_xor(db, seed);
                seed_part.copy_from_slice(seed);
                mgf1_xor(seed_part, db);
            }
            // EM < 2^(8(k-1)) <= n: no reduction needed.
            Ok(self.raw(&em))
        }

        /// RSAEP: m^e mod n as k bytes, for a big-endian m < n of at most k
        /// bytes.
        pub fn raw(&self, m: &[u8]) -> Vec<u8> {
            let m = Zeroizing::new(limbs(m, self.n.len()));
            to_bytes(&self.pow_e(&m), self.k)
        }

        /// m^e mod n, for m < n.
        fn pow_e(&self, m: &[u32]) -> Vec<u32> {
            let len = self.n.len();
            let rr = self.r_squared();
            // Every intermediate value is secret: wiped on drop.
            let mut scratch = Zeroizing::new(vec![0u32; len + 2]);
            let mut base = Zeroizing::new(vec![0u32; len]);
            self.mont_mul(&mut base, m, &rr, &mut scratch);
            let mut acc = base.clone();
            let mut tmp = Zeroizing::new(vec![0u32; len]);
            let top = 63 - self.e.leading_zeros();
            for bit in (0..top).rev() {
                self.mont_mul(&mut tmp, &acc, &acc, &mut scratch);
                if (self.e >> bit) & 1 == 1 {
                    self.mont_mul(&mut acc, &tmp, &base, &mut scratch);
                } else {
                    std::mem::swap(&mut acc, &mut tmp);
                }
            }
            // Out of Montgomery form: acc * 1 * R^-1.
            let mut one = vec![0u32; len];
            one[0] = 1;
            let mut out = vec![0u32; len];
            self.mont_mul(&mut out, &acc, &one, &mut scratch);
            out
        }

        /// R^2 mod n, R = 2^(32 len): 2^(b-1) (b = bits of n, so below n)
        /// doubled up to R * 2^len mod n, then squared five times in Montgomery
        /// form (each squaring doubles the power of two beyond R; len * 2^5 = 32 len).
        fn r_squared(&self) -> Vec<u32> {
            let len = self.n.len();
            let bits = 32 * len - self.n[len - 1].leading_zeros() as usize;
            let mut x = vec![0u32; len];
            x[(bits - 1) / 32] = 1 << ((bits - 1) % 32);
            for _ in 0..(32 * len + len - (bits - 1)) {
                // x = 2x mod n (x < n, so 2x < 2n: at most one subtraction).
                let mut carry = 0u32;
                for w in x.iter_mut() {
                    let v = *w;
                    *w = (v << 1) | carry;
                    carry = v >> 31;
                }
                self.reduce_once(&mut x, carry);
            }
            let mut scratch = vec![0u32; len + 2];
            let mut tmp = vec![0u32; len];
            for _ in 0..5 {
                self.mont_mul(&mut tmp, &x, &x, &mut scratch);
                std::mem::swap(&mut x, &mut tmp);
            }
            x
        }

        /// x = x - n if (carry, x) >= n, without branching on x.
        fn reduce_once(&self, x: &mut [u32], carry: u32) {
            let mut d = [0u32; 128];
            let d = &mut d[..x.len()];
            let mut borrow = 0u64;
            for ((di, &xi), &ni) in d.iter_mut().zip(x.iter()).zip(self.n.iter()) {
                let t = u64::from(xi)
                    .wrapping_sub(u64::from(ni))
                    .wrapping_sub(borrow);
                *di = t as u32;
                borrow = t >> 63;
            }
            // Keep the difference unless it borrowed past the carry limb.
            let keep_x = ((borrow as u32) & !carry & 1).wrapping_neg();
            for (xi, &di) in x.iter_mut().zip(d.iter()) {
                *xi = (*xi & keep_x) | (di & !keep_x);
            }
        }

        /// out = a * b * R^-1 mod n (a, b < n): Montgomery multiplication,
        /// finely integrated operand scanning (one pass per limb of b that
        /// multiplies and reduces).
        fn mont_mul(&self, out: &mut [u32], a: &[u32], b: &[u32], t: &mut [u32]) {
            let len = self.n.len();
            let n = &self.n[..len];
            let a = &a[..len];
            let b = &b[..len];
            let t = &mut t[..len + 1];
            t.iter_mut().for_each(|w| *w = 0);
            for &bi in b {
                let bi = u64::from(bi);
                let s = u64::from(t[0]) + u64::from(a[0]) * bi;
                let mut c1 = s >> 32;
                let m = (s as u32).wrapping_mul(self.n0inv);
                let m = u64::from(m);
                let mut c2 = (u64::from(s as u32) + m * u64::from(n[0])) >> 32;
                for j in 1..len {
                    let s = u64::from(t[j]) + u64::from(a[j]) * bi + c1;
                    c1 = s >> 32;
                    let s = u64::from(s as u32) + m * u64::from(n[j]) + c2;
                    c2 = s >> 32;
                    t[j - 1] = s as u32;
                }
                let s = u64::from(t[len]) + c1 + c2;
                t[len - 1] = s as u32;
                t[len] = (s >> 32) as u32;
            }
            out[..len].copy_from_slice(&t[..len]);
            self.reduce_once(&mut out[..len], t[len]);
        }
    }

    fn strip(b: &[u8]) -> &[u8] {
        let z = b.iter().take_while(|&&x| x == 0).count();
        &b[z..]
    }

    /// Big-endian bytes to `len` little-endian limbs.
    fn limbs(be: &[u8], len: usize) -> Vec<u32> {
        let mut out = vec![0u32; len];
        for (i, &b) in be.iter().rev().enumerate() {
            out[i / 4] |= u32::from(b) << (8 * (i % 4));
        }
        out
    }

    /// Little-endian limbs to `k` big-endian bytes.
    fn to_bytes(x: &[u32], k: usize) -> Vec<u8> {
        (0..k)
            .rev()
            .map(|i| (x[i / 4] >> (8 * (i % 4))) as u8)
            .collect()
    }

    /// -x^-1 mod 2^32 for odd x (Newton's iteration: 5 steps from 1 bit).
    fn neg_inv32(x: u32) -> u32 {
        let mut y = 1u32;
        for _ in 0..5 {
            y = y.wrapping_mul(2u32.wrapping_sub(x.wrapping_mul(y)));
        }
        y.wrapping_neg()
    }

    /// out ^= MGF1-SHA-256(seed, out.len()).
    fn mgf1_xor(out: &mut [u8], seed: &[u8]) {
        for (counter, chunk) in out.chunks_mut(H_LEN).enumerate() {
            let mut h = Sha256::new();
            h.update(seed);
            h.update((counter as u32).to_be_bytes());
            for (o, m) in chunk.iter_mut().zip(h.finalize()) {
                *o ^= m;
            }
        }
    }
}

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
