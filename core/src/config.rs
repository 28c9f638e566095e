//! Configuration: read once from Spin variables into a typed, validated struct.
//!
//! Reading is a pure function over a lookup, so validation is unit-tested and
//! the Spin edge only supplies `spin_sdk::variables::get`. Errors name the
//! variable and the problem, never a secret's value.

use crate::access::Keys;
use crate::api::ApiError;
use crate::cosmos::{ContainerLink, Credential, Endpoint, MasterKey};
use crate::entra::{Provider, Secret, DEFAULT_AUTHORITY};
use crate::retry::RetryPolicy;

/// Every variable the component reads, with whether it is secret. `spin.toml`
/// must declare each (a test checks it).
pub const VARIABLES: &[(&str, bool)] = &[
    ("cosmos_endpoint", false),
    ("cosmos_database", false),
    ("cosmos_container", false),
    ("cosmos_auth", false),
    ("cosmos_key", true),
    ("cosmos_token_scope", false),
    ("cosmos_write_mode", false),
    ("partition_key", false),
    ("max_body_bytes", false),
    ("max_events_per_request", false),
    ("max_nesting_depth", false),
    ("body_read_timeout_secs", false),
    ("cosmos_retry_budget_ms", false),
    ("cosmos_max_concurrency", false),
    ("read_keys", true),
    ("read_accept_unsealed", false),
    ("admin_keys", true),
    ("ingest_keys", true),
    ("ingest_key_in_query", false),
    ("ingest_entra_audiences", false),
    ("ingest_entra_tenant_id", false),
    ("ingest_entra_issuers", false),
    ("ingest_entra_roles", false),
    ("ingest_entra_app_ids", false),
    ("protected_fields", false),
    ("cmk_stage", false),
    ("hsm_endpoint", false),
    ("hsm_key_name", false),
    ("hsm_key_check_secs", false),
    ("hsm_local_wrap", false),
    ("identity", false),
    ("azure_tenant_id", false),
    ("azure_client_id", false),
    ("azure_authority_host", false),
    ("azure_client_secret", true),
    ("azure_federated_token", true),
    ("managed_identity_endpoint", false),
    ("identity_header", true),
    ("token_refresh_skew_secs", false),
    ("kv_store_key", true),
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where and how documents are written.
    pub cosmos: CosmosConfig,
    /// Limits and mapping for inbound events.
    pub ingest: IngestConfig,
    /// Who may read records back.
    pub read: ReadConfig,
    /// Who may run maintenance (`POST /admin/rewrap`).
    pub admin: AdminConfig,
    /// The key-encryption key in Managed HSM; `None` in the first stage
    /// (Microsoft-managed keys only, no field encryption).
    pub kek: Option<KekConfig>,
    /// The key binding key-value store entries to this deployment, derived
    /// from the secret `kv_store_key` (at least 16 characters); `None`
    /// when it is not set (entries are then trusted as stored).
    pub kv_key: Option<crate::kvseal::EntryKey>,
}

/// Which fields of an event are sealed, by event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedFields {
    by_type: Vec<(String, Vec<String>)>,
    default: Vec<String>,
}

impl ProtectedFields {
    /// Parses `{"<event type>": ["/data/ssn", …], "*": ["/data"]}`: JSON
    /// Pointers into the event's CloudEvents form. `*` applies to types not
    /// listed (default: the whole `data`).
    pub fn parse(json_text: &str, partition_key: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(json_text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or("expected an object of event type -> list of JSON Pointers")?;
        let mut by_type = Vec::new();
        let mut default = with_binary_data(vec!["/data".to_owned()]);
        for (ty, list) in obj {
            let pointers: Vec<String> = list
                .as_array()
                .and_then(|a| a.iter().map(|p| p.as_str().map(str::to_owned)).collect())
                .ok_or_else(|| format!("`{ty}`: expected a list of JSON Pointers"))?;
            // `a` is `b` or inside it; `*` (every element of an array) may
            // stand for any token, so it overlaps any name or index.
            let overlaps = |a: &str, b: &str| {
                let (a, b): (Vec<&str>, Vec<&str>) =
                    (a.split('/').collect(), b.split('/').collect());
                a.len() >= b.len()
                    && a.iter()
                        .zip(&b)
                        .all(|(x, y)| x == y || *x == "*" || *y == "*")
            };
            for (i, p) in pointers.iter().enumerate() {
                if !crate::envelope::valid_pointer(p) || p.len() < 2 {
                    return Err(format!(
                        "`{p}` is not a JSON Pointer to a field (RFC 6901: a leading `/`, `~0` for `~`, `~1` for `/`)"
                    ));
                }
                let top = p[1..].split('/').next().unwrap_or("");
                if top == "*" {
                    return Err(format!(
                        "`{p}`: the event is an object; `*` stands for the elements of an array"
                    ));
                }
                if matches!(top, "id" | "source" | "specversion" | "type") {
                    return Err(format!("`{p}`: the event's id, source, specversion and type stay readable (they identify the record)"));
                }
                if overlaps(partition_key, p) || overlaps(p, partition_key) {
                    return Err(format!(
                        "`{p}` overlaps the partition key `{partition_key}`; Cosmos DB does not encrypt partition key values with the customer-managed key"
                    ));
                }
                if let Some(q) = pointers[..i]
                    .iter()
                    .find(|q| overlaps(p, q) || overlaps(q, p))
                {
                    return Err(format!(
                        "`{ty}`: `{p}` and `{q}` overlap; list each field once, and not inside another listed one"
                    ));
                }
            }
            let pointers = with_binary_data(pointers);
            if ty == "*" {
                default = pointers;
            } else {
                by_type.push((ty.clone(), pointers));
            }
        }
        Ok(Self { by_type, default })
    }

    /// The pointers (into the CloudEvents form) to seal for an event type.
    pub fn for_type(&self, ty: &str) -> &[String] {
        self.by_type
            .iter()
            .find(|(t, _)| t == ty)
            .map(|(_, p)| &p[..])
            .unwrap_or(&self.default)
    }
}

/// A CloudEvent's payload is `data`, or `data_base64` when it is binary
/// (binary-mode deliveries with a non-JSON content type, or structured ones
/// that carry `data_base64`). Binary data cannot be protected field by field,
/// so protecting `data` or anything inside it also protects `data_base64`
/// whole.
fn with_binary_data(mut pointers: Vec<String>) -> Vec<String> {
    let covers_data = pointers
        .iter()
        .any(|p| p == "/data" || p.starts_with("/data/"));
    if covers_data && !pointers.iter().any(|p| p == "/data_base64") {
        pointers.push("/data_base64".to_owned());
    }
    pointers
}

/// The key-encryption key and how the component reaches it.
#[derive(Debug, Clone)]
pub struct KekConfig {
    /// Fields sealed under it.
    pub protected: ProtectedFields,
    /// Managed HSM endpoint, e.g. `https://contoso.managedhsm.azure.net`.
    pub endpoint: Endpoint,
    /// Key name.
    pub key_name: String,
    /// How long a checked key state is trusted before it is read again.
    pub check_secs: u64,
    /// Wrap data keys here with the key version's public part instead of
    /// calling the HSM's `wrapkey` (off by default; unwrap always goes to
    /// the HSM). See docs/keys-and-identity.md for the trade-off.
    pub local_wrap: bool,
    /// Where Entra ID tokens come from.
    pub identity: IdentityConfig,
}

/// Token source and cache policy.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The token source.
    pub provider: Provider,
    /// For workload identity: the federated token, when given as a variable.
    pub federated_token: Option<Secret>,
    /// Refresh a cached token this long before it expires.
    pub refresh_skew_secs: u64,
}

/// Read access.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    /// Accepted read keys; `None` disables `GET /records`.
    pub keys: Option<Keys>,
    /// In the second stage, whether records without an envelope header
    /// (written in the first stage) may be returned.
    pub accept_unsealed: bool,
}

/// Maintenance access.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Accepted admin keys; `None` disables `/admin/*`.
    pub keys: Option<Keys>,
}

/// Cosmos DB settings.
#[derive(Debug, Clone)]
pub struct CosmosConfig {
    /// Account endpoint.
    pub endpoint: Endpoint,
    /// Database and container.
    pub container: ContainerLink,
    /// How requests are authorized.
    pub auth: CosmosAuth,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// How ingest writes documents.
    pub write_mode: WriteMode,
    /// Most Cosmos DB requests one delivery has in flight at once.
    pub max_concurrency: usize,
}

/// How Cosmos DB requests are authorized (`cosmos_auth`).
#[derive(Debug, Clone)]
pub enum CosmosAuth {
    /// `master-key`: every request signed with the account key.
    MasterKey(Credential),
    /// `entra`: an Entra ID token for `scope`, from the same token sources
    /// and cache as the Managed HSM token.
    Entra {
        /// e.g. `https://acct.documents.azure.com/.default`.
        scope: String,
        /// Where tokens come from.
        identity: IdentityConfig,
    },
}

impl CosmosAuth {
    /// The credential when it needs no token (master key), else `None`.
    pub fn static_credential(&self) -> Option<&Credential> {
        match self {
            CosmosAuth::MasterKey(c) => Some(c),
            CosmosAuth::Entra { .. } => None,
        }
    }
}

/// How ingest writes a document (`cosmos_write_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Create or replace (the default): a redelivery rewrites the document.
    Upsert,
    /// Create only: a redelivery finds the document already there and is
    /// answered as written when the stored event matches; a different event
    /// under the same id is a conflict (409). Nothing is ever overwritten.
    Create,
}

/// The Entra ID scope of a Cosmos DB account, derived from its endpoint as
/// the official SDKs do: `scheme://host/.default`, without the port.
pub fn cosmos_scope(endpoint: &Endpoint) -> String {
    let origin = endpoint.origin();
    let (scheme, rest) = origin.split_once("://").unwrap_or(("https", &origin));
    let host = match rest.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or(v6)),
        None => rest.split(':').next().unwrap_or(rest).to_owned(),
    };
    format!("{scheme}://{host}/.default")
}

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

/// Why the configuration was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable has no value.
    #[error("variable `{0}` is required but not set")]
    Missing(&'static str),
    /// A variable's value is not acceptable.
    #[error("variable `{name}` is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong (never the secret value itself).
        reason: String,
    },
    /// The host could not provide a variable.
    #[error("variable `{name}` could not be read: {reason}")]
    Unreadable {
        /// The variable.
        name: &'static str,
        /// The host's error.
        reason: String,
    },
}

type Getter<'a> = dyn Fn(&'static str) -> Result<Option<String>, ConfigError> + 'a;
type Invalid<'a> = dyn Fn(&'static str, &dyn std::fmt::Display) -> ConfigError + 'a;
type Number<'a> = dyn Fn(&'static str, usize, usize) -> Result<usize, ConfigError> + 'a;

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
fn sender_tokens(get: &Getter, invalid: &Invalid) -> Result<Option<SenderTokens>, ConfigError> {
    let audiences = list(get("ingest_entra_audiences")?);
    if audiences.is_empty() {
        return Ok(None);
    }
    let tenant = match get("ingest_entra_tenant_id")? {
        Some(t) => t,
        None => get("azure_tenant_id")?.ok_or_else(|| {
            invalid(
                "ingest_entra_tenant_id",
                &"is required (or azure_tenant_id) when ingest_entra_audiences is set",
            )
        })?,
    };
    if !tenant
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(invalid(
            "ingest_entra_tenant_id",
            &"is not a tenant id or domain",
        ));
    }
    let issuers = match list(get("ingest_entra_issuers")?) {
        l if l.is_empty() => crate::jwt::Policy::default_issuers(&tenant),
        l => l,
    };
    let roles = match get("ingest_entra_roles")?.as_deref().map(str::trim) {
        None => vec![DEFAULT_SENDER_ROLE.to_owned()],
        Some("-") => Vec::new(),
        Some(r) => list(Some(r.to_owned())),
    };
    let authority = get("azure_authority_host")?.unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    Endpoint::parse(&authority).map_err(|e| invalid("azure_authority_host", &e))?;
    Ok(Some(SenderTokens {
        jwks_url: crate::jwt::jwks_url(&authority, &tenant),
        policy: crate::jwt::Policy {
            audiences,
            issuers,
            tenant,
            roles,
            app_ids: list(get("ingest_entra_app_ids")?),
        },
    }))
}

impl Config {
    /// Settings that are valid but weaken a check, for the edge to log at
    /// load.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        if let Some(e) = &self.ingest.entra {
            if e.policy.roles.is_empty() {
                w.push("ingest_entra_roles is `-`: any app of the tenant that can get a token for the audience may deliver; require Event Grid's app role, or list callers in ingest_entra_app_ids");
            }
        }
        if self.ingest.key_in_query {
            w.push("ingest_key_in_query is allow: ingest keys in URLs are accepted (deprecated)");
        }
        w
    }
}

/// Default of `cosmos_max_concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

/// The app role Event Grid's documentation assigns to its service principal
/// for Microsoft Entra protected webhook delivery.
pub const DEFAULT_SENDER_ROLE: &str = "AzureEventGridSecureWebhookSubscriber";

/// Picks the token source. `identity` names one, or `auto` (the default)
/// takes the first that is configured, in this order: workload identity
/// (tenant, client id and a federated token), client secret (tenant, client
/// id, secret), App Service / Container Apps managed identity (an
/// `identity_header`), IMDS managed identity.
fn identity(
    get: &Getter,
    invalid: &Invalid,
    number: &Number,
) -> Result<IdentityConfig, ConfigError> {
    let tenant = get("azure_tenant_id")?;
    let client_id = get("azure_client_id")?;
    let authority = get("azure_authority_host")?.unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    Endpoint::parse(&authority).map_err(|e| invalid("azure_authority_host", &e))?;
    let secret = get("azure_client_secret")?.map(Secret::new);
    let federated = get("azure_federated_token")?.map(Secret::new);
    let header = get("identity_header")?.map(Secret::new);
    let mi_endpoint = get("managed_identity_endpoint")?;
    let choice = get("identity")?.unwrap_or_else(|| "auto".into());
    let need = |v: &Option<String>, name: &'static str, why: &str| -> Result<String, ConfigError> {
        v.clone()
            .ok_or_else(|| invalid(name, &format!("is required for {why}")))
    };
    let workload = || -> Result<Provider, ConfigError> {
        Ok(Provider::WorkloadIdentity {
            authority: authority.clone(),
            tenant: need(&tenant, "azure_tenant_id", "workload identity")?,
            client_id: need(&client_id, "azure_client_id", "workload identity")?,
        })
    };
    let client_secret = || -> Result<Provider, ConfigError> {
        Ok(Provider::ClientSecret {
            authority: authority.clone(),
            tenant: need(&tenant, "azure_tenant_id", "a client secret")?,
            client_id: need(&client_id, "azure_client_id", "a client secret")?,
            secret: secret.clone().ok_or_else(|| {
                invalid(
                    "azure_client_secret",
                    &"is required for identity = client-secret",
                )
            })?,
        })
    };
    let managed = || -> Result<Provider, ConfigError> {
        let endpoint = mi_endpoint
            .clone()
            .unwrap_or_else(|| crate::entra::IMDS_ENDPOINT.into());
        let parsed: http::Uri = endpoint
            .parse()
            .map_err(|_| invalid("managed_identity_endpoint", &"is not a URL"))?;
        if parsed.scheme().is_none() || parsed.host().is_none() {
            return Err(invalid(
                "managed_identity_endpoint",
                &"must be an absolute http(s) URL",
            ));
        }
        Ok(match &header {
            Some(h) => Provider::AppService {
                endpoint,
                header: h.clone(),
                client_id: client_id.clone(),
            },
            None => Provider::Imds {
                endpoint,
                client_id: client_id.clone(),
            },
        })
    };
    let provider = match choice.as_str() {
        "workload-identity" => workload()?,
        "client-secret" => client_secret()?,
        "managed-identity" => managed()?,
        "auto" => {
            if tenant.is_some() && client_id.is_some() && federated.is_some() {
                workload()?
            } else if tenant.is_some() && client_id.is_some() && secret.is_some() {
                client_secret()?
            } else {
                managed()?
            }
        }
        other => {
            return Err(invalid(
                "identity",
                &format!(
                "`{other}` is not one of auto, workload-identity, managed-identity, client-secret"
            ),
            ))
        }
    };
    if provider.needs_assertion() && federated.is_none() {
        return Err(invalid(
            "azure_federated_token",
            &"is required for workload identity",
        ));
    }
    Ok(IdentityConfig {
        provider,
        federated_token: federated,
        refresh_skew_secs: number("token_refresh_skew_secs", 300, 3000)? as u64,
    })
}

/// The retry policy for a total budget: at least two attempts fit when an
/// answer never comes.
fn retry_policy(budget_ms: u64) -> RetryPolicy {
    let d = RetryPolicy::default();
    RetryPolicy {
        budget_ms,
        attempt_timeout_ms: d.attempt_timeout_ms.min(budget_ms / 2).max(1),
        ..d
    }
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

impl Config {
    /// Reads and validates every variable through `lookup`, which returns
    /// `Ok(None)` for a variable that is unset or empty.
    pub fn load<F>(lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&'static str) -> Result<Option<String>, String>,
    {
        let get = |name: &'static str| -> Result<Option<String>, ConfigError> {
            lookup(name)
                .map(|v| v.filter(|s| !s.trim().is_empty()))
                .map_err(|reason| ConfigError::Unreadable { name, reason })
        };
        let required = |name: &'static str| get(name)?.ok_or(ConfigError::Missing(name));
        let invalid = |name: &'static str, reason: &dyn std::fmt::Display| ConfigError::Invalid {
            name,
            reason: reason.to_string(),
        };

        let endpoint = Endpoint::parse(&required("cosmos_endpoint")?)
            .map_err(|e| invalid("cosmos_endpoint", &e))?;
        let database = required("cosmos_database")?;
        let container = required("cosmos_container")?;
        for (name, id) in [
            ("cosmos_database", &database),
            ("cosmos_container", &container),
        ] {
            if let Some(c) = id.chars().find(|c| matches!(c, '/' | '\\' | '?' | '#')) {
                return Err(invalid(
                    name,
                    &format!("Cosmos DB ids cannot contain `{c}`"),
                ));
            }
        }
        let auth_kind = get("cosmos_auth")?.unwrap_or_else(|| "master-key".into());
        if !matches!(auth_kind.as_str(), "master-key" | "entra") {
            return Err(invalid(
                "cosmos_auth",
                &format!("`{auth_kind}` is not one of master-key, entra"),
            ));
        }
        let write_mode = match get("cosmos_write_mode")?.as_deref().unwrap_or("upsert") {
            "upsert" => WriteMode::Upsert,
            "create" => WriteMode::Create,
            other => {
                return Err(invalid(
                    "cosmos_write_mode",
                    &format!("`{other}` is not one of upsert, create"),
                ))
            }
        };

        let partition_key = get("partition_key")?.unwrap_or_else(|| DEFAULT_PARTITION_KEY.into());
        if !partition_key.starts_with('/') {
            return Err(invalid(
                "partition_key",
                &"must be a JSON Pointer such as /source or /data/tenant",
            ));
        }
        let number =
            |name: &'static str, default: usize, max: usize| -> Result<usize, ConfigError> {
                match get(name)? {
                    None => Ok(default),
                    Some(s) => match s.trim().parse::<usize>() {
                        Ok(n) if (1..=max).contains(&n) => Ok(n),
                        _ => Err(invalid(
                            name,
                            &format!("must be a whole number from 1 to {max}"),
                        )),
                    },
                }
            };
        let read_keys = match get("read_keys")? {
            None => None,
            Some(v) => Some(Keys::parse(&v).map_err(|e| invalid("read_keys", &e))?),
        };
        let admin_keys = match get("admin_keys")? {
            None => None,
            Some(v) => Some(Keys::parse(&v).map_err(|e| invalid("admin_keys", &e))?),
        };
        let auth = if auth_kind == "entra" {
            let scope = match get("cosmos_token_scope")? {
                Some(s) if s.trim().ends_with("/.default") && s.contains("://") => {
                    s.trim().to_owned()
                }
                Some(_) => {
                    return Err(invalid(
                        "cosmos_token_scope",
                        &"must be a scope such as https://acct.documents.azure.com/.default",
                    ))
                }
                None => cosmos_scope(&endpoint),
            };
            CosmosAuth::Entra {
                scope,
                identity: identity(&get, &invalid, &number)?,
            }
        } else {
            let key = get("cosmos_key")?.ok_or_else(|| {
                invalid("cosmos_key", &"is required for cosmos_auth = master-key")
            })?;
            CosmosAuth::MasterKey(Credential::MasterKey(
                MasterKey::from_base64(&key).map_err(|e| invalid("cosmos_key", &e))?,
            ))
        };
        // The stage is never guessed from a missing key name: a deployment
        // that lists protected fields but names no key would otherwise store
        // them in plaintext.
        let key_name = get("hsm_key_name")?;
        match (get("cmk_stage")?.as_deref().map(str::trim), &key_name) {
            (Some("1"), None) | (Some("2") | None, Some(_)) => {}
            (Some("1"), Some(_)) => {
                return Err(invalid(
                    "cmk_stage",
                    &"is 1 (no field encryption) while hsm_key_name is set; set cmk_stage = 2, or empty hsm_key_name",
                ))
            }
            (Some("2"), None) => {
                return Err(invalid("hsm_key_name", &"is required for cmk_stage = 2"))
            }
            (None, None) => {
                if get("protected_fields")?.is_some() {
                    return Err(invalid(
                        "hsm_key_name",
                        &"is empty while protected_fields is set, which would store those fields in plaintext; \
                          set hsm_key_name (and cmk_stage = 2) for field encryption, or cmk_stage = 1 to run the first stage on purpose",
                    ));
                }
            }
            (Some(_), _) => return Err(invalid("cmk_stage", &"must be 1 or 2")),
        }
        let kek = match key_name {
            None => None,
            Some(key_name) => {
                if !key_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    || key_name.len() > 127
                {
                    return Err(invalid(
                        "hsm_key_name",
                        &"key names use letters, digits and hyphens",
                    ));
                }
                let endpoint = Endpoint::parse(&required("hsm_endpoint")?)
                    .map_err(|e| invalid("hsm_endpoint", &e))?;
                let partition_key =
                    get("partition_key")?.unwrap_or_else(|| DEFAULT_PARTITION_KEY.into());
                let protected = ProtectedFields::parse(
                    &get("protected_fields")?.unwrap_or_else(|| r#"{"*": ["/data"]}"#.into()),
                    &partition_key,
                )
                .map_err(|e| invalid("protected_fields", &e))?;
                Some(KekConfig {
                    protected,
                    endpoint,
                    key_name,
                    check_secs: match get("hsm_key_check_secs")? {
                        None => 30,
                        Some(v) => v
                            .trim()
                            .parse::<u64>()
                            .ok()
                            .filter(|n| *n <= 3600)
                            .ok_or_else(|| {
                                invalid(
                                    "hsm_key_check_secs",
                                    &"must be a whole number from 0 (every batch) to 3600",
                                )
                            })?,
                    },
                    local_wrap: match get("hsm_local_wrap")?.as_deref().map(str::trim) {
                        None | Some("false") => false,
                        Some("true") => true,
                        Some(_) => return Err(invalid("hsm_local_wrap", &"must be true or false")),
                    },
                    identity: identity(&get, &invalid, &number)?,
                })
            }
        };
        // Each role has its own credential: a leaked ingest key must not
        // read records, nor a read key run maintenance.
        let ingest_keys = match get("ingest_keys")? {
            None => None,
            Some(v) => Some(Keys::parse(&v).map_err(|e| invalid("ingest_keys", &e))?),
        };
        let distinct = |a: &Option<Keys>, b: &Option<Keys>| match (a, b) {
            (Some(a), Some(b)) => !a.shares_with(b),
            _ => true,
        };
        if !distinct(&read_keys, &ingest_keys) {
            return Err(invalid("read_keys", &"must differ from every ingest key"));
        }
        if !distinct(&admin_keys, &ingest_keys) || !distinct(&admin_keys, &read_keys) {
            return Err(invalid(
                "admin_keys",
                &"must differ from every ingest and read key",
            ));
        }
        let kv_key = match get("kv_store_key")? {
            None => None,
            Some(v) if v.trim().len() < 16 => {
                return Err(invalid("kv_store_key", &"must be at least 16 characters"))
            }
            Some(v) => Some(crate::kvseal::EntryKey::derive(v.trim())),
        };
        Ok(Config {
            kek,
            kv_key,
            read: ReadConfig {
                keys: read_keys,
                accept_unsealed: match get("read_accept_unsealed")?.as_deref() {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(_) => {
                        return Err(invalid("read_accept_unsealed", &"must be true or false"))
                    }
                },
            },
            admin: AdminConfig { keys: admin_keys },
            cosmos: CosmosConfig {
                endpoint,
                container: ContainerLink::new(database, container),
                auth,
                write_mode,
                max_concurrency: number("cosmos_max_concurrency", DEFAULT_MAX_CONCURRENCY, 256)?,
                retry: retry_policy(number(
                    "cosmos_retry_budget_ms",
                    RetryPolicy::default().budget_ms as usize,
                    25_000,
                )? as u64),
            },
            ingest: IngestConfig {
                keys: ingest_keys,
                key_in_query: match get("ingest_key_in_query")?.as_deref().map(str::trim) {
                    None | Some("deny") => false,
                    Some("allow") => true,
                    Some(_) => {
                        return Err(invalid("ingest_key_in_query", &"must be allow or deny"))
                    }
                },
                entra: sender_tokens(&get, &invalid)?,
                partition_key,
                max_body_bytes: number("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 64 * 1024 * 1024)?,
                max_events: number("max_events_per_request", DEFAULT_MAX_EVENTS, 5000)?,
                max_depth: number("max_nesting_depth", DEFAULT_MAX_DEPTH, MAX_DEPTH)?,
                body_read_timeout_secs: number("body_read_timeout_secs", 20, 60)? as u64,
            },
        })
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        // The deployment is wrong, not the event: keep it for redelivery.
        ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "ConfigurationError",
            e.to_string(),
        )
        .retry_after(60)
    }
}

#[cfg(test)]
mod tests;
