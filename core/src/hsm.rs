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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrap_or_unwrap_answer_must_name_the_requested_version() {
        let v = vault();
        let requested = KeyRef {
            name: "app-kek".into(),
            version: Some("v2".into()),
        };
        let answer = |kid: &str| resp(200, &format!(r#"{{"kid":"{kid}","value":"AQID"}}"#));
        let ok = parse_crypt_for(
            &answer("https://contoso.managedhsm.azure.net/keys/app-kek/v2"),
            &requested,
            &v,
        )
        .unwrap();
        assert_eq!(ok.value, [1, 2, 3]);
        for other in [
            "https://contoso.managedhsm.azure.net/keys/app-kek/v1",
            "https://contoso.managedhsm.azure.net/keys/app-kek",
            "https://contoso.managedhsm.azure.net/keys/other/v2",
            "https://elsewhere.managedhsm.azure.net/keys/app-kek/v2",
            "k",
        ] {
            assert!(
                matches!(
                    parse_crypt_for(&answer(other), &requested, &v),
                    Err(HsmError::InvalidResponse(_))
                ),
                "{other}"
            );
        }
    }

    fn vault() -> Endpoint {
        Endpoint::parse("https://contoso.managedhsm.azure.net").unwrap()
    }

    fn resp(status: u16, body: &str) -> Response<Vec<u8>> {
        Response::builder()
            .status(status)
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    #[test]
    fn key_ids_must_name_this_vault() {
        let v = vault();
        assert_eq!(
            KeyRef::from_kid("https://contoso.managedhsm.azure.net/keys/kek/0123abcd", &v).unwrap(),
            KeyRef {
                name: "kek".into(),
                version: Some("0123abcd".into())
            }
        );
        assert_eq!(
            KeyRef::from_kid("https://contoso.managedhsm.azure.net/keys/kek", &v)
                .unwrap()
                .version,
            None
        );
        let with_port = Endpoint::parse("https://contoso.managedhsm.azure.net:443").unwrap();
        assert!(KeyRef::from_kid(
            "https://contoso.managedhsm.azure.net/keys/kek/1",
            &with_port
        )
        .is_ok());
        for bad in [
            "https://evil.example/keys/kek/1",
            "https://contoso.managedhsm.azure.net.evil.example/keys/kek/1",
            "https://contoso.managedhsm.azure.net/secrets/kek/1",
            "https://contoso.managedhsm.azure.net/keys/../x/1",
            "https://contoso.managedhsm.azure.net/keys/kek/1/wrapkey",
        ] {
            assert!(KeyRef::from_kid(bad, &v).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_carry_the_pinned_api_version_and_token() {
        let k = KeyRef {
            name: "kek".into(),
            version: Some("v1".into()),
        };
        let r = get_key_request(
            &vault(),
            &KeyRef {
                name: "kek".into(),
                version: None,
            },
            "tok",
        );
        assert_eq!(
            r.uri().to_string(),
            "https://contoso.managedhsm.azure.net/keys/kek/?api-version=2025-07-01"
        );
        assert_eq!(r.headers()["authorization"], "Bearer tok");
        let w = wrap_request(&vault(), &k, &[0xfb, 0xff, 0x01], "tok").unwrap();
        assert_eq!(w.uri().path(), "/keys/kek/v1/wrapkey");
        let body: serde_json::Value = serde_json::from_slice(w.body()).unwrap();
        assert_eq!(body, json!({"alg": "RSA-OAEP-256", "value": "-_8B"}));
        assert_eq!(
            unwrap_request(&vault(), &k, b"x", "t")
                .unwrap()
                .uri()
                .path(),
            "/keys/kek/v1/unwrapkey"
        );
        assert!(wrap_request(
            &vault(),
            &KeyRef {
                name: "kek".into(),
                version: None
            },
            b"x",
            "t"
        )
        .is_err());
    }

    fn bundle(enabled: bool, ops: &str, kty: &str, nbf: Option<u64>, exp: Option<u64>) -> String {
        let n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        let mut attrs = json!({"enabled": enabled, "created": 1, "updated": 1, "recoveryLevel": "Recoverable+Purgeable"});
        if let Some(v) = nbf {
            attrs["nbf"] = json!(v);
        }
        if let Some(v) = exp {
            attrs["exp"] = json!(v);
        }
        json!({"key": {"kid": "https://contoso.managedhsm.azure.net/keys/kek/v1", "kty": kty,
                       "key_ops": ops.split(',').collect::<Vec<_>>(), "n": n, "e": "AQAB"},
               "attributes": attrs})
        .to_string()
    }

    #[test]
    fn key_state_decides_usability() {
        let now = UnixTime(1_000);
        let ok = parse_key(&resp(
            200,
            &bundle(true, "wrapKey,unwrapKey", "RSA-HSM", Some(10), Some(2_000)),
        ))
        .unwrap();
        assert_eq!(ok.e, vec![1, 0, 1]);
        assert_eq!(ok.recovery_level.as_deref(), Some("Recoverable+Purgeable"));
        assert!(check_usable(&ok, KeyOp::Wrap, now).is_ok());
        assert!(check_usable(&ok, KeyOp::Unwrap, now).is_ok());
        let reason = |b: &str, op| match check_usable(&parse_key(&resp(200, b)).unwrap(), op, now) {
            Err(HsmError::KeyUnavailable { reason, .. }) => Some(reason),
            _ => None,
        };
        assert_eq!(
            reason(
                &bundle(false, "wrapKey,unwrapKey", "RSA-HSM", None, None),
                KeyOp::Wrap
            ),
            Some(Unavailable::Disabled)
        );
        assert_eq!(
            reason(
                &bundle(true, "wrapKey", "RSA-HSM", None, None),
                KeyOp::Unwrap
            ),
            Some(Unavailable::OperationNotPermitted)
        );
        assert_eq!(
            reason(
                &bundle(true, "wrapKey,unwrapKey", "RSA-HSM", Some(5_000), None),
                KeyOp::Wrap
            ),
            Some(Unavailable::NotYetValid)
        );
        assert_eq!(
            reason(
                &bundle(true, "wrapKey,unwrapKey", "RSA-HSM", None, Some(1_000)),
                KeyOp::Wrap
            ),
            Some(Unavailable::Expired)
        );
        assert_eq!(
            reason(
                &bundle(true, "wrapKey,unwrapKey", "RSA", None, None),
                KeyOp::Wrap
            ),
            Some(Unavailable::WrongKeyType)
        );
        assert_eq!(
            reason(
                &bundle(true, "wrapKey,unwrapKey", "EC-HSM", None, None),
                KeyOp::Wrap
            ),
            Some(Unavailable::WrongKeyType)
        );
    }

    #[test]
    fn service_errors_fail_closed() {
        let disabled = r#"{"error":{"code":"Forbidden","message":"Operation unwrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#;
        assert!(matches!(
            parse_crypt(&resp(403, disabled)),
            Err(HsmError::KeyUnavailable {
                reason: Unavailable::Disabled,
                ..
            })
        ));
        let denied = r#"{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.","innererror":{"code":"AccessDenied"}}}"#;
        assert!(matches!(
            parse_crypt(&resp(403, denied)),
            Err(HsmError::KeyUnavailable {
                reason: Unavailable::AccessDenied,
                ..
            })
        ));
        let ops = r#"{"error":{"code":"Forbidden","message":"Operation decrypt is not permitted on this key.","innererror":{"code":"KeyOperationForbidden"}}}"#;
        assert!(matches!(
            parse_crypt(&resp(403, ops)),
            Err(HsmError::KeyUnavailable {
                reason: Unavailable::OperationNotPermitted,
                ..
            })
        ));
        let missing = r#"{"error":{"code":"KeyNotFound","message":"A key with (name/id) kek was not found in this key vault."}}"#;
        assert!(matches!(
            parse_key(&resp(404, missing)),
            Err(HsmError::KeyUnavailable {
                reason: Unavailable::NotFound,
                ..
            })
        ));
        assert!(matches!(
            parse_key(&resp(401, "")),
            Err(HsmError::Unauthorized(_))
        ));
        let throttled = Response::builder()
            .status(429)
            .header("retry-after", "3")
            .body(b"{}".to_vec())
            .unwrap();
        assert_eq!(
            parse_key(&throttled).unwrap_err(),
            HsmError::Transient {
                status: 429,
                message: "Too Many Requests".into(),
                retry_after_secs: Some(3)
            }
        );
        assert!(parse_crypt(&resp(503, "")).unwrap_err().is_transient());
        assert!(matches!(
            parse_crypt(&resp(
                400,
                r#"{"error":{"code":"BadParameter","message":"x"}}"#
            )),
            Err(HsmError::Rejected { .. })
        ));
    }

    /// A deterministic generator for tests only (SHA-256 in counter mode).
    #[derive(Clone)]
    struct TestRng(u64);

    impl rsa::rand_core::RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            rsa::rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rsa::rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(32) {
                self.0 += 1;
                let block = <sha2::Sha256 as sha2::Digest>::digest(self.0.to_be_bytes());
                chunk.copy_from_slice(&block[..chunk.len()]);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rsa::rand_core::CryptoRng for TestRng {}

    /// The throwaway test key in tests/data (made with Python
    /// `cryptography`), as the HSM would describe its public part, and its
    /// private part for checking.
    fn test_key() -> (KeyInfo, rsa::RsaPrivateKey) {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/rsa-2048-test-key.json")).unwrap();
        let int =
            |k: &str| rsa::BigUint::parse_bytes(v[k].as_str().unwrap().as_bytes(), 16).unwrap();
        let private = rsa::RsaPrivateKey::from_components(
            int("n"),
            int("e"),
            int("d"),
            vec![int("p"), int("q")],
        )
        .unwrap();
        let info = KeyInfo {
            kid: "https://contoso.managedhsm.azure.net/keys/kek/0123456789abcdef".into(),
            kty: "RSA-HSM".into(),
            key_ops: vec!["wrapKey".into(), "unwrapKey".into()],
            n: int("n").to_bytes_be(),
            e: int("e").to_bytes_be(),
            enabled: true,
            not_before: None,
            expires: None,
            recovery_level: None,
        };
        (info, private)
    }

    #[test]
    fn a_locally_wrapped_data_key_unwraps_with_the_private_key() {
        let (key, private) = test_key();
        let dek: Vec<u8> = (0u8..32).collect();
        let mut rng = TestRng(0);
        let a = wrap_locally(&key, &vault(), &dek, &mut rng).unwrap();
        assert_eq!(a.kid, key.kid, "the exact versioned key id");
        assert_eq!(a.value.len(), 256, "one RSA-2048 block");
        assert_eq!(
            private
                .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &a.value)
                .unwrap(),
            dek
        );
        // OAEP is randomized: a second wrap differs and still unwraps.
        let b = wrap_locally(&key, &vault(), &dek, &mut rng).unwrap();
        assert_ne!(a.value, b.value);
        assert_eq!(
            private
                .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &b.value)
                .unwrap(),
            dek
        );
        // The label is empty, as the HSM's: a labelled decryption fails.
        assert!(private
            .decrypt(
                rsa::Oaep::new_with_label::<sha2::Sha256, _>("cmk"),
                &a.value
            )
            .is_err());
    }

    #[test]
    fn local_wrapping_needs_a_versioned_key_of_this_vault_and_a_real_key() {
        let (key, _) = test_key();
        let dek = [7u8; 32];
        let mut rng = TestRng(0);
        let unversioned = KeyInfo {
            kid: "https://contoso.managedhsm.azure.net/keys/kek".into(),
            ..key.clone()
        };
        assert!(matches!(
            wrap_locally(&unversioned, &vault(), &dek, &mut rng),
            Err(HsmError::InvalidKeyId(_))
        ));
        let elsewhere = KeyInfo {
            kid: "https://evil.example/keys/kek/1".into(),
            ..key.clone()
        };
        assert!(matches!(
            wrap_locally(&elsewhere, &vault(), &dek, &mut rng),
            Err(HsmError::InvalidKeyId(_))
        ));
        let broken = KeyInfo {
            e: vec![],
            ..key.clone()
        };
        assert!(matches!(
            wrap_locally(&broken, &vault(), &dek, &mut rng),
            Err(HsmError::InvalidResponse(_))
        ));
    }

    #[test]
    fn the_local_wrap_is_the_rsa_crates_oaep_byte_for_byte() {
        // The same seed (the only random input) gives the same ciphertext as
        // the `rsa` crate's RSA-OAEP with SHA-256 for every message length up
        // to the limit, and the private key opens it.
        let (key, private) = test_key();
        let public = rsa::RsaPublicKey::from(&private);
        for (i, len) in [0usize, 1, 16, 31, 32, 33, 100, 189, 190]
            .into_iter()
            .enumerate()
        {
            let msg: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            let mut ours = TestRng(1000 * i as u64);
            let mut theirs = ours.clone();
            let a = wrap_locally(&key, &vault(), &msg, &mut ours).unwrap();
            let b = public
                .encrypt(&mut theirs, rsa::Oaep::new::<sha2::Sha256>(), &msg)
                .unwrap();
            assert_eq!(a.value, b, "message of {len} bytes");
            assert_eq!(
                private
                    .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &a.value)
                    .unwrap(),
                msg
            );
        }
        // k - 2 hLen - 2 = 190 bytes is the most one 2048-bit block holds.
        assert!(matches!(
            wrap_locally(&key, &vault(), &[0u8; 191], &mut TestRng(0)),
            Err(HsmError::InvalidResponse(_))
        ));
    }

    #[test]
    fn the_modular_exponentiation_agrees_with_num_bigint() {
        // Random odd moduli of every length class (whole limbs and not),
        // exponents from 3 to 64 bits, messages from 0 to n - 1.
        use rsa::BigUint;
        let mut rng = TestRng(7);
        let mut bytes = |len: usize| {
            let mut b = vec![0u8; len];
            rsa::rand_core::RngCore::fill_bytes(&mut rng, &mut b);
            b
        };
        for bits in [2048usize, 2049, 2070, 3072, 3100, 4095, 4096] {
            let k = bits.div_ceil(8);
            let mut n = bytes(k);
            n[0] &= 0xffu8 >> (8 * k - bits);
            n[0] |= 0x80u8 >> (8 * k - bits);
            n[k - 1] |= 1;
            let big_n = BigUint::from_bytes_be(&n);
            let n_minus_1 = (&big_n - 1u32).to_bytes_be();
            for e in [3u64, 17, 65537, (1 << 61) - 1, u64::MAX] {
                let key = oaep::PublicKey::new(&n, &e.to_be_bytes()).unwrap();
                let mut r = bytes(k);
                r[0] = 0; // below n
                for m in [vec![0u8], vec![1u8], n_minus_1.clone(), r] {
                    let want = BigUint::from_bytes_be(&m).modpow(&BigUint::from(e), &big_n);
                    let mut want = want.to_bytes_be();
                    while want.len() < k {
                        want.insert(0, 0);
                    }
                    let mut padded = vec![0u8; k - m.len()];
                    padded.extend_from_slice(&m);
                    assert_eq!(key.raw(&padded), want, "{bits}-bit n, e = {e}");
                }
            }
        }
    }

    #[test]
    fn generated_keys_of_each_hsm_size_unwrap_local_wraps() {
        let mut rng = TestRng(42);
        for bits in [2048usize, 2048, 3072] {
            let private = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
            let key = KeyInfo {
                n: rsa::traits::PublicKeyParts::n(&private).to_bytes_be(),
                e: rsa::traits::PublicKeyParts::e(&private).to_bytes_be(),
                ..test_key().0
            };
            for _ in 0..3 {
                let mut dek = [0u8; 32];
                rsa::rand_core::RngCore::fill_bytes(&mut rng, &mut dek);
                let w = wrap_locally(&key, &vault(), &dek, &mut rng).unwrap();
                assert_eq!(w.value.len(), bits / 8);
                assert_eq!(
                    private
                        .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &w.value)
                        .unwrap(),
                    dek
                );
            }
        }
    }

    #[test]
    fn local_wrapping_refuses_keys_the_hsm_would_not_make() {
        let (key, _) = test_key();
        let odd_1024 = {
            let mut n = vec![0xc5u8; 128];
            n[127] = 0x01;
            n
        };
        let odd_4104 = vec![0xffu8; 513];
        let mut even = key.n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        for (n, e) in [
            (odd_1024, key.e.clone()),
            (odd_4104, key.e.clone()),
            (even, key.e.clone()),
            (vec![], key.e.clone()),
            (key.n.clone(), vec![1]),
            (key.n.clone(), vec![0, 0, 1, 0, 0]),
            (key.n.clone(), vec![1; 9]),
        ] {
            let bad = KeyInfo {
                n,
                e,
                ..key.clone()
            };
            assert!(matches!(
                wrap_locally(&bad, &vault(), &[7u8; 32], &mut TestRng(0)),
                Err(HsmError::InvalidResponse(_))
            ));
        }
        // Leading zero bytes are not part of the length.
        let padded = KeyInfo {
            n: [vec![0, 0], key.n.clone()].concat(),
            e: [vec![0], key.e.clone()].concat(),
            ..key.clone()
        };
        assert_eq!(
            wrap_locally(&padded, &vault(), &[7u8; 32], &mut TestRng(3)).unwrap(),
            wrap_locally(&key, &vault(), &[7u8; 32], &mut TestRng(3)).unwrap()
        );
    }

    #[test]
    fn crypt_results_accept_every_base64_form() {
        for v in ["-_8B", "-_8B=", "+/8B"] {
            let r = parse_crypt(&resp(200, &format!(r#"{{"kid":"k","value":"{v}"}}"#))).unwrap();
            assert_eq!(r.value, vec![0xfb, 0xff, 0x01], "{v}");
        }
        assert!(matches!(
            parse_crypt(&resp(200, r#"{"kid":"k","value":"*"}"#)),
            Err(HsmError::InvalidResponse(_))
        ));
    }

    fn key_version(version: &str, enabled: bool) -> KeyInfo {
        KeyInfo {
            kid: format!("https://hsm.example/keys/app-kek/{version}"),
            kty: "RSA-HSM".into(),
            key_ops: vec![],
            n: vec![1],
            e: vec![1, 0, 1],
            enabled,
            not_before: None,
            expires: Some(2_000_000_000),
            recovery_level: None,
        }
    }

    #[test]
    fn a_state_is_news_only_when_it_changed_or_is_first_remembered() {
        let on = key_version("v1", true);
        assert!(!state_changed(true, Some(&on), &on));
        assert!(state_changed(true, Some(&on), &key_version("v1", false)));
        assert!(state_changed(true, Some(&on), &key_version("v2", true)));
        let mut later = on.clone();
        later.expires = Some(2_100_000_000);
        assert!(state_changed(true, Some(&on), &later));
        // The first read into a store is logged once; without a store every
        // read is a first read, and none is logged.
        assert!(state_changed(true, None, &on));
        assert!(!state_changed(false, None, &on));
    }
}
