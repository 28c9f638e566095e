//! Entra ID bearer tokens presented by senders (Event Grid's Microsoft Entra
//! protected webhook delivery): parsing, RS256 signature check against the
//! tenant's signing keys (JWKS), and the claims a delivery must carry.
//!
//! Pure: the JWKS arrives as bytes, time as an argument. The component
//! fetches the JWKS from `{authority}/{tenant}/discovery/v2.0/keys` and
//! caches it (see `inbound`); [`JwksCache`] decides when to fetch again.
//!
//! What a token must satisfy ([`Policy`]): header `alg` RS256 with a `kid`
//! found in the JWKS; a valid RSASSA-PKCS1-v1_5 SHA-256 signature; `aud`
//! one of the configured audiences (the app registration's client id or
//! application ID URI); `iss` one of the tenant's issuers (v1.0
//! `https://sts.windows.net/{tenant}/` or v2.0
//! `https://login.microsoftonline.com/{tenant}/v2.0` by default); `tid` the
//! tenant (required); when an allow-list is configured, the caller's app id
//! (`appid`, v1.0, or `azp`, v2.0) on it; `exp` in the future and `nbf` in the past, with
//! [`LEEWAY_SECS`] of clock skew; and, when roles are configured, a `roles`
//! claim holding one of them (Event Grid's service principal is assigned an
//! app role, conventionally `AzureEventGridSecureWebhookSubscriber`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::hsm::oaep::PublicKey;

use http::StatusCode;

use crate::api::{ApiError, KEY_RETRY_AFTER_SECS};
use crate::time::UnixTime;

pub mod checked;
mod fetch;

pub use crate::time::CLOCK_SKEW_SECS;
pub use fetch::{
    decode_attempt, decode_cached, encode_attempt, encode_cached, jwks_cache, jwks_request,
    jwks_url, parse_jwks_response, refresh_held_back, serves_stale, JwksCache, JWKS_MAX_AGE_SECS,
    JWKS_MIN_REFETCH_SECS, JWKS_RETRY_SECS, JWKS_STALE_GRACE_SECS,
};

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 300;
/// Longest token accepted, in bytes (Entra access tokens are a few KB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Why a presented token was refused. Messages name the failed check, never
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a JWS compact token, or its parts do not decode.
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    /// Another algorithm than RS256.
    #[error("the bearer token's algorithm {0:?} is not accepted (RS256 only)")]
    Algorithm(String),
    /// The header's `kid` is not among the tenant's signing keys.
    #[error("the bearer token is signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the bearer token's signature is not valid")]
    Signature,
    /// A claim failed its check.
    #[error("the bearer token's {claim} is not accepted: {why}")]
    Claim {
        /// Which claim.
        claim: &'static str,
        /// Why, without the token.
        why: String,
    },
    /// The JWKS document is not usable.
    #[error("the signing keys document is not usable: {0}")]
    Jwks(String),
    /// The token names a key the cached set lacks (a rotated key, most
    /// likely), and the set may not be fetched again yet.
    #[error(
        "the bearer token names a signing key not among the cached ones, which cannot be fetched again for another {retry_after_secs} s"
    )]
    KeysNotRefreshed {
        /// Seconds until the set may be fetched again.
        retry_after_secs: u64,
    },
}

/// The checks a token must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// The tenant (`tid` must be present and equal it).
    pub tenant: String,
    /// App roles of which the token must hold one; empty: none required.
    pub roles: Vec<String>,
    /// Caller application ids (`appid`/`azp`) accepted; empty: any.
    pub app_ids: Vec<String>,
}

impl Policy {
    /// The default issuers of a tenant: Entra's v1.0 and v2.0 token issuers.
    pub fn default_issuers(tenant: &str) -> Vec<String> {
        vec![
            format!("https://sts.windows.net/{tenant}/"),
            format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        ]
    }
}

/// A token split into its parts; nothing is trusted yet.
#[derive(Debug, Clone)]
pub struct Token {
    alg: String,
    kid: Option<String>,
    claims: Value,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    /// [`Token::signature_digest`], made on first use: a token's first
    /// delivery asks for it twice (the kept signatures are searched, then
    /// its own is kept).
    digest: std::cell::OnceCell<[u8; 32]>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(format!("the {what} is not base64url")))
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

impl Token {
    /// Splits and decodes a compact JWS.
    pub fn parse(token: &str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [h, c, s] = parts.as_slice() else {
            return Err(JwtError::Malformed("not three dot-separated parts".into()));
        };
        let header: Header = serde_json::from_slice(&b64(h, "header")?)
            .map_err(|_| JwtError::Malformed("the header is not a JSON object".into()))?;
        let claims: Value = serde_json::from_slice(&b64(c, "payload")?)
            .map_err(|_| JwtError::Malformed("the payload is not JSON".into()))?;
        if !claims.is_object() {
            return Err(JwtError::Malformed(
                "the payload is not a JSON object".into(),
            ));
        }
        Ok(Self {
            alg: header.alg,
            kid: header.kid,
            claims,
            signing_input: format!("{h}.{c}").into_bytes(),
            signature: b64(s, "signature")?,
            digest: std::cell::OnceCell::new(),
        })
    }

    /// The header's key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// A digest of what the signature check covers, the signed bytes and
    /// the signature: two tokens with the same digest pass or fail that
    /// check alike. `SHA-256("cmk-ingest/token-signature/v1\0" ‖
    /// len(signing input) ‖ signing input ‖ signature)`, the length as
    /// 8-byte big-endian.
    pub fn signature_digest(&self) -> [u8; 32] {
        *self.digest.get_or_init(|| {
            let mut h = Sha256::new();
            h.update(b"cmk-ingest/token-signature/v1\0");
            h.update((self.signing_input.len() as u64).to_be_bytes());
            h.update(&self.signing_input);
            h.update(&self.signature);
            h.finalize().into()
        })
    }
}

/// RSA signing keys by key id.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<(String, PublicKey)>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    #[serde(default)]
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

impl Jwks {
    /// Parses a JWKS document, keeping RSA signing keys with a `kid`
    /// (others are skipped). Refuses a document with none.
    pub fn parse(body: &[u8]) -> Result<Self, JwtError> {
        let raw: RawJwks = serde_json::from_slice(body)
            .map_err(|e| JwtError::Jwks(format!("not a JWKS document: {e}")))?;
        let mut keys = Vec::new();
        for k in raw.keys {
            if k.kty != "RSA" || k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let (Some(kid), Some(n), Some(e)) = (k.kid, k.n, k.e) else {
                continue;
            };
            let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(&n), URL_SAFE_NO_PAD.decode(&e)) else {
                continue;
            };
            // 2048 to 4096 bits, an odd exponent of at most 64 bits.
            let Ok(key) = PublicKey::new(&n, &e) else {
                continue;
            };
            keys.push((kid, key));
        }
        if keys.is_empty() {
            return Err(JwtError::Jwks(
                "no RSA signing key of 2048 bits or more".into(),
            ));
        }
        Ok(Self { keys })
    }

    /// Whether the set holds `kid`.
    pub fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == kid)
    }

    fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, v)| v)
    }
}

/// What a verified token says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The caller's application (client) id (`appid` or `azp`), if present.
    pub app_id: Option<String>,
    /// The caller's object id (`oid`), if present.
    pub object_id: Option<String>,
}

fn claim_str<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

fn claim_time(claims: &Value, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(JwtError::Claim {
                claim: name,
                why: "not a number of seconds".into(),
            }),
    }
}

/// EMSA-PKCS1-v1_5 (RFC 8017, 9.2) of SHA-256(`message`) for a `k`-byte
/// modulus: 0x00 0x01, 0xFF padding, 0x00, the DigestInfo prefix of
/// SHA-256 (note 1 of 9.2), the hash.
fn pkcs1_sha256_encoding(message: &[u8], k: usize) -> Vec<u8> {
    const DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let t_len = DIGEST_INFO.len() + 32;
    let mut em = vec![0xffu8; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t_len - 1] = 0;
    em[k - t_len..k - 32].copy_from_slice(&DIGEST_INFO);
    em[k - 32..].copy_from_slice(&Sha256::digest(message));
    em
}

/// Verifies `token` against `jwks` and `policy` at `now`.
pub fn verify(
    token: &Token,
    jwks: &Jwks,
    policy: &Policy,
    now: UnixTime,
) -> Result<Sender, JwtError> {
    if token.alg != "RS256" {
        return Err(JwtError::Algorithm(token.alg.clone()));
    }
    let kid = token.kid.as_deref().ok_or(JwtError::UnknownKey)?;
    let key = jwks.get(kid).ok_or(JwtError::UnknownKey)?;
    // RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017, 8.2.2): the signature
    // opened with the public key must be exactly the encoding of the hash.
    let opened = key
        .verify_primitive(&token.signature)
        .ok_or(JwtError::Signature)?;
    if opened != pkcs1_sha256_encoding(&token.signing_input, key.modulus_len()) {
        return Err(JwtError::Signature);
    }
    check_claims(token, policy, now)
}

/// The claims' checks of [`verify`], for a token whose signature is known
/// to be good (checked here, or kept by [`checked::Checked`]).
fn check_claims(token: &Token, policy: &Policy, now: UnixTime) -> Result<Sender, JwtError> {
    let c = &token.claims;
    let exp = claim_time(c, "exp")?.ok_or(JwtError::Claim {
        claim: "exp",
        why: "missing".into(),
    })?;
    if now.0 > exp.saturating_add(LEEWAY_SECS) {
        return Err(JwtError::Claim {
            claim: "exp",
            why: format!("expired {} s ago", now.0 - exp),
        });
    }
    if let Some(nbf) = claim_time(c, "nbf")? {
        if nbf > now.0.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::Claim {
                claim: "nbf",
                why: format!("not valid for another {} s", nbf - now.0),
            });
        }
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => policy.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| policy.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(JwtError::Claim {
            claim: "aud",
            why: "not an audience this app accepts".into(),
        });
    }
    match claim_str(c, "iss") {
        Some(iss) if policy.issuers.iter().any(|x| x == iss) => {}
        Some(_) => {
            return Err(JwtError::Claim {
                claim: "iss",
                why: "not an issuer of the configured tenant".into(),
            })
        }
        None => {
            return Err(JwtError::Claim {
                claim: "iss",
                why: "missing".into(),
            })
        }
    }
    match claim_str(c, "tid") {
        Some(tid) if tid == policy.tenant => {}
        Some(_) => {
            return Err(JwtError::Claim {
                claim: "tid",
                why: "another tenant".into(),
            })
        }
        None => {
            return Err(JwtError::Claim {
                claim: "tid",
                why: "missing".into(),
            })
        }
    }
    if !policy.roles.is_empty() {
        let held: Vec<&str> = c
            .get("roles")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !policy.roles.iter().any(|r| held.contains(&r.as_str())) {
            return Err(JwtError::Claim {
                claim: "roles",
                why: format!(
                    "none of the required app roles ({})",
                    policy.roles.join(", ")
                ),
            });
        }
    }
    // An application's own token only (Event Grid's is one): a user's
    // delegated token (`scp`, `idtyp` "user") or an ID token (no `appid` or
    // `azp`) may hold the role too, when the role admits users as Event
    // Grid's setup script makes it, and would let a person deliver.
    if c.get("scp").is_some() {
        return Err(JwtError::Claim {
            claim: "scp",
            why: "a delegated (user) token; only an application's own token is accepted".into(),
        });
    }
    if let Some(idtyp) = c.get("idtyp") {
        if idtyp.as_str() != Some("app") {
            return Err(JwtError::Claim {
                claim: "idtyp",
                why: "not an application's token".into(),
            });
        }
    }
    let app_id = claim_str(c, "appid")
        .or_else(|| claim_str(c, "azp"))
        .ok_or_else(|| JwtError::Claim {
            claim: "appid",
            why: "missing (nor `azp`): not an application's access token".into(),
        })?;
    if !policy.app_ids.is_empty() && !policy.app_ids.iter().any(|x| x == app_id) {
        return Err(JwtError::Claim {
            claim: "appid",
            why: "the calling application is not one this app accepts".into(),
        });
    }
    Ok(Sender {
        app_id: Some(app_id.to_owned()),
        object_id: claim_str(c, "oid").map(str::to_owned),
    })
}

/// A sender's token that is refused: 403 for a token of another app or
/// without the role, 503 with `Retry-After` while the signing keys cannot
/// be had (including a rotated key the cached set does not have yet: Event
/// Grid does not retry a 401), 401 for anything else.
impl From<&JwtError> for ApiError {
    fn from(e: &JwtError) -> Self {
        match e {
            JwtError::Claim {
                claim: "roles" | "appid" | "scp" | "idtyp",
                ..
            } => ApiError::new(StatusCode::FORBIDDEN, "Forbidden", e.to_string()),
            JwtError::Jwks(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SigningKeysUnavailable",
                e.to_string(),
            )
            .retry_after(KEY_RETRY_AFTER_SECS),
            JwtError::KeysNotRefreshed { retry_after_secs } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SigningKeysUnavailable",
                e.to_string(),
            )
            .retry_after(u32::try_from((*retry_after_secs).max(1)).unwrap_or(u32::MAX)),
            _ => ApiError::new(StatusCode::UNAUTHORIZED, "InvalidToken", e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
