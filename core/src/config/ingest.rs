//! Inbound events: who may deliver (keys, Entra ID tokens), the partition
//! key, and the limits on a delivery.

use super::vars::{invalid, Vars};
use super::ConfigError;
use crate::access::Keys;
use crate::cosmos::Endpoint;
use crate::entra::DEFAULT_AUTHORITY;

/// Inbound event settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Keys a sender must present; `None` refuses every delivery (503: the
    /// deployment is incomplete, so senders keep their events).
    pub keys: Option<Keys>,
    /// Whether an ingest key in the URL (`?code=`) is accepted
    /// (`ingest_key_in_query = allow`; deprecated, off by default): URLs end
    /// up in the runtime's, proxies' and Terraform's records.
    pub key_in_query: bool,
    /// Entra ID protected delivery: senders' bearer tokens accepted instead
    /// of a key; `None` when `ingest_entra_audiences` is empty.
    pub entra: Option<SenderTokens>,
    /// JSON Pointer into the CloudEvents form of an event giving the partition key.
    pub partition_key: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most events accepted in one request.
    pub max_events: usize,
    /// Deepest nesting of arrays and objects accepted in a body.
    pub max_depth: usize,
    /// Time allowed for reading a request's whole body, in seconds.
    pub body_read_timeout_secs: u64,
}

/// How senders' Entra ID bearer tokens are checked (see [`crate::jwt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderTokens {
    /// Audiences, issuers, tenant and roles a token must match.
    pub policy: crate::jwt::Policy,
    /// Where the tenant's signing keys are fetched from.
    pub jwks_url: String,
}

/// Default partition key: the event's source (Event Grid topic).
pub const DEFAULT_PARTITION_KEY: &str = "/source";
/// Default body limit: Event Grid's 1 MB delivery limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default events per request.
pub const DEFAULT_MAX_EVENTS: usize = 1000;
/// Default deepest nesting of a delivery body.
pub const DEFAULT_MAX_DEPTH: usize = 32;
/// Highest `max_nesting_depth`: Cosmos DB accepts documents nested 128
/// deep, and a stored event sits two levels down (`event`, `data`); a batch
/// body adds one more.
pub const MAX_DEPTH: usize = 100;

/// The app role Event Grid's documentation assigns to its service principal
/// for Microsoft Entra protected webhook delivery.
pub const DEFAULT_SENDER_ROLE: &str = "AzureEventGridSecureWebhookSubscriber";

/// Reads the inbound event settings.
pub(super) fn load(vars: &Vars) -> Result<IngestConfig, ConfigError> {
    let partition_key = vars
        .get("partition_key")?
        .unwrap_or_else(|| DEFAULT_PARTITION_KEY.into());
    if !partition_key.starts_with('/') {
        return Err(invalid(
            "partition_key",
            &"must be a JSON Pointer such as /source or /data/tenant",
        ));
    }
    Ok(IngestConfig {
        keys: vars.keys("ingest_keys")?,
        key_in_query: vars.flag("ingest_key_in_query", "allow", "deny")?,
        entra: sender_tokens(vars)?,
        partition_key,
        max_body_bytes: vars.number("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 64 * 1024 * 1024)?,
        max_events: vars.number("max_events_per_request", DEFAULT_MAX_EVENTS, 5000)?,
        max_depth: vars.number("max_nesting_depth", DEFAULT_MAX_DEPTH, MAX_DEPTH)?,
        body_read_timeout_secs: vars.number("body_read_timeout_secs", 20, 60)? as u64,
    })
}

/// The comma-separated items of a list variable, blanks dropped.
fn list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Entra ID protected delivery: on when `ingest_entra_audiences` lists at
/// least one audience. The tenant defaults to `azure_tenant_id`, the issuers
/// to the tenant's v1.0 and v2.0 issuers, the roles to Event Grid's
/// conventional `AzureEventGridSecureWebhookSubscriber` (`-` for none).
fn sender_tokens(vars: &Vars) -> Result<Option<SenderTokens>, ConfigError> {
    let audiences = list(vars.get("ingest_entra_audiences")?);
    if audiences.is_empty() {
        return Ok(None);
    }
    let (name, tenant) = match vars.get("ingest_entra_tenant_id")? {
        Some(t) => ("ingest_entra_tenant_id", t),
        None => (
            "azure_tenant_id",
            vars.get("azure_tenant_id")?.ok_or_else(|| {
                invalid(
                    "ingest_entra_tenant_id",
                    &"is required (or azure_tenant_id) when ingest_entra_audiences is set",
                )
            })?,
        ),
    };
    // Tokens name their tenant by its id, in lower case (`tid`, and in the
    // default issuers): a domain (`contoso.onmicrosoft.com`), or a name for
    // many tenants, could never match and every delivery would be refused
    // 401, which Event Grid does not retry. An id in capitals is taken in
    // lower case.
    let tenant = tenant.trim().to_ascii_lowercase();
    if tenant.contains('.')
        || matches!(tenant.as_str(), "common" | "organizations" | "consumers")
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid(
            name,
            &"must be the tenant's id (the GUID tokens carry in `tid`), not a domain, for sender tokens",
        ));
    }
    let issuers = match list(vars.get("ingest_entra_issuers")?) {
        l if l.is_empty() => crate::jwt::Policy::default_issuers(&tenant),
        l => l,
    };
    let roles = match vars.get("ingest_entra_roles")?.as_deref().map(str::trim) {
        None => vec![DEFAULT_SENDER_ROLE.to_owned()],
        Some("-") => Vec::new(),
        Some(r) => list(Some(r.to_owned())),
    };
    let authority = vars
        .get("azure_authority_host")?
        .unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    Endpoint::parse(&authority).map_err(|e| invalid("azure_authority_host", &e))?;
    Ok(Some(SenderTokens {
        jwks_url: crate::jwt::jwks_url(&authority, &tenant),
        policy: crate::jwt::Policy {
            audiences,
            issuers,
            tenant,
            roles,
            app_ids: list(vars.get("ingest_entra_app_ids")?),
        },
    }))
}
