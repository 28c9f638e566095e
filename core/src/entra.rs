//! Microsoft Entra ID access tokens, obtained by the component itself.
//!
//! Three sources, as the Azure Identity libraries name them:
//! - **workload identity** (AKS/SpinKube): a client-credentials grant whose
//!   client assertion is the federated service-account token;
//! - **managed identity**: IMDS (`169.254.169.254`, `Metadata: true`) or the
//!   App Service / Container Apps endpoint (`IDENTITY_ENDPOINT` with
//!   `X-IDENTITY-HEADER`);
//! - **client secret**: a client-credentials grant with the app's secret.
//!
//! This module builds the token requests, parses the answers, and decides
//! when a cached token must be refreshed; it performs no I/O and reads no
//! clock. Tokens and secrets never reach `Debug` output or error messages.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{header, Method, Request, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use crate::api::{ApiError, DEFAULT_RETRY_AFTER_SECS, KEY_RETRY_AFTER_SECS};
use crate::time::UnixTime;

/// Scope for Azure Key Vault Managed HSM.
pub const MANAGED_HSM_SCOPE: &str = "https://managedhsm.azure.net/.default";
/// Default authority host.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Default IMDS endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// IMDS api-version.
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// App Service / Container Apps identity api-version.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A secret string whose `Debug`/`Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(v: impl Into<String>) -> Self {
        Self(v.into())
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Client-credentials grant with a federated assertion (workload identity).
    WorkloadIdentity {
        /// Authority host, e.g. `https://login.microsoftonline.com`.
        authority: String,
        /// Tenant id.
        tenant: String,
        /// The app (or user-assigned identity) client id.
        client_id: String,
    },
    /// Managed identity through IMDS.
    Imds {
        /// Token endpoint (IMDS default, or a stand-in).
        endpoint: String,
        /// User-assigned identity's client id; `None` for system-assigned.
        client_id: Option<String>,
    },
    /// Managed identity through App Service / Container Apps.
    AppService {
        /// `IDENTITY_ENDPOINT`.
        endpoint: String,
        /// `IDENTITY_HEADER`.
        header: Secret,
        /// User-assigned identity's client id.
        client_id: Option<String>,
    },
    /// Client-credentials grant with a client secret.
    ClientSecret {
        /// Authority host.
        authority: String,
        /// Tenant id.
        tenant: String,
        /// The app's client id.
        client_id: String,
        /// The app's secret.
        secret: Secret,
    },
}

impl Provider {
    /// Short name for logs and cache keys.
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::WorkloadIdentity { .. } => "workload-identity",
            Provider::Imds { .. } => "managed-identity-imds",
            Provider::AppService { .. } => "managed-identity-app-service",
            Provider::ClientSecret { .. } => "client-secret",
        }
    }

    /// Whether the request needs a client assertion (the federated token).
    pub fn needs_assertion(&self) -> bool {
        matches!(self, Provider::WorkloadIdentity { .. })
    }

    /// What tells one identity from another of its kind, in a fixed
    /// number of parts: `None` is a system-assigned identity's missing
    /// client id, never the same as any client id.
    fn identity_parts(&self) -> [Option<&str>; 3] {
        match self {
            Provider::WorkloadIdentity {
                authority,
                tenant,
                client_id,
            }
            | Provider::ClientSecret {
                authority,
                tenant,
                client_id,
                ..
            } => [Some(authority), Some(tenant), Some(client_id)],
            Provider::Imds {
                endpoint,
                client_id,
            }
            | Provider::AppService {
                endpoint,
                client_id,
                ..
            } => [Some(endpoint), client_id.as_deref(), None],
        }
    }
}

/// An access token and when it stops being valid.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    /// The bearer token.
    pub token: String,
    /// Expiry, seconds since the epoch.
    pub expires_on: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken(<redacted>, expires_on {})", self.expires_on)
    }
}

/// Everything that can go wrong getting a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntraError {
    /// The endpoint refused: Entra's `error` and `error_description`.
    #[error("token endpoint refused ({status} {error}): {description}{}", correlation.as_ref().map(|c| format!(" (correlation {c})")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// `error`, e.g. `invalid_client`.
        error: String,
        /// `error_description`.
        description: String,
        /// `correlation_id`, when sent.
        correlation: Option<String>,
        /// Whether trying again later may help (429, 5xx).
        transient: bool,
    },
    /// A 2xx answer without a usable token.
    #[error("token endpoint answered without a usable token: {0}")]
    InvalidResponse(String),
    /// The request could not be built.
    #[error("cannot request a token: {0}")]
    Request(String),
}

impl EntraError {
    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EntraError::Refused {
                transient: true,
                ..
            }
        )
    }
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                crate::percent::percent_encode(k),
                crate::percent::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn resource_of(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

/// The token request for `scope` (e.g. [`MANAGED_HSM_SCOPE`]). Workload
/// identity needs the federated token as `assertion`.
pub fn token_request(
    provider: &Provider,
    scope: &str,
    assertion: Option<&str>,
) -> Result<Request<Vec<u8>>, EntraError> {
    let bad = |e: http::Error| EntraError::Request(e.to_string());
    match provider {
        Provider::WorkloadIdentity {
            authority,
            tenant,
            client_id,
        }
        | Provider::ClientSecret {
            authority,
            tenant,
            client_id,
            ..
        } => {
            let mut pairs = vec![
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("scope", scope),
            ];
            match provider {
                Provider::ClientSecret { secret, .. } => {
                    pairs.push(("client_secret", secret.expose()))
                }
                _ => {
                    let a = assertion.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
                        EntraError::Request(
                            "workload identity needs the federated token (client assertion)".into(),
                        )
                    })?;
                    pairs.push(("client_assertion_type", ASSERTION_TYPE));
                    pairs.push(("client_assertion", a.trim()));
                }
            }
            let body = form(&pairs);
            Request::builder()
                .method(Method::POST)
                .uri(format!(
                    "{}/{}/oauth2/v2.0/token",
                    authority.trim_end_matches('/'),
                    tenant
                ))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::ACCEPT, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .body(body)
                .map_err(bad)
        }
        Provider::Imds {
            endpoint,
            client_id,
        } => managed_identity_request(
            endpoint,
            IMDS_API_VERSION,
            scope,
            client_id.as_deref(),
            ("Metadata", "true"),
        ),
        Provider::AppService {
            endpoint,
            header: h,
            client_id,
        } => managed_identity_request(
            endpoint,
            APP_SERVICE_API_VERSION,
            scope,
            client_id.as_deref(),
            ("X-IDENTITY-HEADER", h.expose()),
        ),
    }
}

/// A managed-identity token request: `GET endpoint?api-version&resource[&client_id]`
/// with the endpoint's proof header.
fn managed_identity_request(
    endpoint: &str,
    api_version: &str,
    scope: &str,
    client_id: Option<&str>,
    proof: (&str, &str),
) -> Result<Request<Vec<u8>>, EntraError> {
    let mut q = vec![
        ("api-version", api_version),
        ("resource", resource_of(scope)),
    ];
    if let Some(c) = client_id {
        q.push(("client_id", c));
    }
    Request::builder()
        .method(Method::GET)
        .uri(format!(
            "{endpoint}?{}",
            String::from_utf8(form(&q)).expect("ASCII")
        ))
        .header(proof.0, proof.1)
        .body(Vec::new())
        .map_err(|e| EntraError::Request(e.to_string()))
}

#[derive(Deserialize)]
struct RawToken {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct RawError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    correlation_id: Option<String>,
}

fn number(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

const MAX_DESCRIPTION: usize = 400;

/// Parses a token endpoint's answer (all three shapes: `expires_in` as a
/// number or string, or `expires_on` as epoch seconds).
pub fn parse_token_response(
    resp: &Response<Vec<u8>>,
    now: UnixTime,
) -> Result<AccessToken, EntraError> {
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        let raw: RawError = serde_json::from_slice(resp.body()).unwrap_or_default();
        let description: String = if raw.error_description.is_empty() {
            String::from_utf8_lossy(resp.body())
                .chars()
                .take(MAX_DESCRIPTION)
                .collect()
        } else {
            raw.error_description
                .chars()
                .take(MAX_DESCRIPTION)
                .collect()
        };
        return Err(EntraError::Refused {
            status,
            error: if raw.error.is_empty() {
                format!("http_{status}")
            } else {
                raw.error
            },
            description,
            correlation: raw.correlation_id.or_else(|| {
                resp.headers()
                    .get("client-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            }),
            transient: status == 429 || status >= 500,
        });
    }
    let raw: RawToken = serde_json::from_slice(resp.body())
        .map_err(|e| EntraError::InvalidResponse(format!("not JSON: {e}")))?;
    let token = raw
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| EntraError::InvalidResponse("no access_token".into()))?;
    if !header_safe(&token) {
        // It goes into Authorization headers: refused here, it can never
        // make a request fail to build.
        return Err(EntraError::InvalidResponse(
            "the access_token has characters a header cannot carry".into(),
        ));
    }
    let expires_on = match (
        raw.expires_on.as_ref().and_then(number),
        raw.expires_in.as_ref().and_then(number),
    ) {
        (Some(on), _) => on,
        (None, Some(secs)) => now.0 + secs,
        (None, None) => {
            return Err(EntraError::InvalidResponse(
                "neither expires_in nor expires_on".into(),
            ))
        }
    };
    if expires_on <= now.0 {
        return Err(EntraError::InvalidResponse(
            "the token is already expired".into(),
        ));
    }
    Ok(AccessToken { token, expires_on })
}

/// Whether a cached token can be used or must be refreshed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Use it.
    Use,
    /// Get a new one (it expires within the skew, or is gone).
    Refresh,
}

/// Decides on a cached token: refresh `skew_secs` before expiry, so no request
/// carries a token that expires in flight.
pub fn freshness(cached: Option<&AccessToken>, now: UnixTime, skew_secs: u64) -> Freshness {
    match cached {
        Some(t) if t.expires_on > now.0.saturating_add(skew_secs) => Freshness::Use,
        _ => Freshness::Refresh,
    }
}

/// Key under which a (provider, scope) token is cached in the key-value
/// store: a digest, so neither ids nor scopes appear in key listings. Each
/// part goes in with its length (a missing one as a length no part has),
/// so no two (provider, scope) pairs share an entry however their parts
/// are spelled (`v1` joined them with `|`, and named a system-assigned
/// identity `system`, as a client id could be).
pub fn cache_key(provider: &Provider, scope: &str) -> String {
    let mut h = Sha256::new();
    let mut part = |p: Option<&str>| match p {
        Some(p) => {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        None => h.update(u64::MAX.to_be_bytes()),
    };
    part(Some(provider.kind()));
    for p in provider.identity_parts() {
        part(p);
    }
    part(Some(scope));
    [
        "entra-token/v2/",
        &URL_SAFE_NO_PAD.encode(&h.finalize()[..18]),
    ]
    .concat()
}

/// Serializes a token for the cache.
pub fn encode_cached(t: &AccessToken) -> Vec<u8> {
    serde_json::to_vec(t).expect("token serializes")
}

/// Reads a cached token; anything unreadable counts as absent.
pub fn decode_cached(bytes: &[u8]) -> Option<AccessToken> {
    serde_json::from_slice::<AccessToken>(bytes)
        .ok()
        .filter(|t| header_safe(&t.token))
}

/// Whether a token can be put in a header as it is: visible ASCII only
/// (JWTs are base64url and dots).
pub fn header_safe(token: &str) -> bool {
    // Every byte looked at, without an early exit, so the loop vectorizes
    // (a token of about 1.5 KB is checked on every cached read).
    !token.is_empty()
        && token
            .bytes()
            .fold(true, |ok, b| ok & (b.wrapping_sub(0x21) < 0x7f - 0x21))
}

impl From<&EntraError> for ApiError {
    fn from(e: &EntraError) -> Self {
        let (code, secs) = if e.is_transient() {
            ("IdentityUnavailable", DEFAULT_RETRY_AFTER_SECS)
        } else {
            ("IdentityFailed", KEY_RETRY_AFTER_SECS)
        };
        ApiError::new(http::StatusCode::SERVICE_UNAVAILABLE, code, e.to_string()).retry_after(secs)
    }
}

#[cfg(test)]
mod tests;
