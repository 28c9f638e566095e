//! Configuration: read once from Spin variables into a typed, validated struct.
//!
//! Reading is a pure function over a lookup, so validation is unit-tested and
//! the Spin edge only supplies `spin_sdk::variables::get`. Errors name the
//! variable and the problem, never a secret's value.
//!
//! One part per settings group, each with its types, defaults and loader:
//! `cosmos` (where and how documents are written), `ingest` (who may
//! deliver, and the limits on a delivery), `roles` (read and maintenance
//! access), `kek` (field encryption and the stage), `scopes` (which key
//! seals each event), `identity` (where Entra
//! ID tokens come from) and `kv` (the key-value store entry key), all
//! reading through `vars`. [`Config::load`] calls each, then checks what
//! spans groups.

use crate::access::Keys;
use crate::api::ApiError;
use vars::{invalid, Vars};

mod cosmos;
mod identity;
mod ingest;
mod kek;
mod kv;
mod roles;
mod scopes;
mod vars;

pub use cosmos::{cosmos_scope, CosmosAuth, CosmosConfig, WriteMode, DEFAULT_MAX_CONCURRENCY};
pub use identity::IdentityConfig;
pub use ingest::{
    IngestConfig, SenderTokens, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_EVENTS,
    DEFAULT_PARTITION_KEY, DEFAULT_SENDER_ROLE, MAX_DEPTH,
};
pub use kek::{KekConfig, ProtectedFields};
pub use roles::{AdminConfig, ReadConfig};
pub use scopes::{
    valid_key_name, KeyScopes, NameRule, RuleCollision, UnknownScope, MAX_MAPPED_KEYS,
    MAX_RULE_VALUE,
};

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
    ("key_scope_pointer", false),
    ("key_scope_keys", false),
    ("key_scope_key_rule", false),
    ("key_scope_unknown", false),
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

impl Config {
    /// Reads and validates every variable through `lookup`, which returns
    /// `Ok(None)` for a variable that is unset or empty.
    pub fn load<F>(lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&'static str) -> Result<Option<String>, String>,
    {
        let vars = Vars::new(&lookup);
        let cosmos = cosmos::load(&vars)?;
        let ingest = ingest::load(&vars)?;
        let read = roles::read(&vars)?;
        let admin = roles::admin(&vars)?;
        let kek = kek::load(&vars, &ingest.partition_key)?;
        // Each role has its own credential: a leaked ingest key must not
        // read records, nor a read key run maintenance.
        let distinct = |a: &Option<Keys>, b: &Option<Keys>| match (a, b) {
            (Some(a), Some(b)) => !a.shares_with(b),
            _ => true,
        };
        if !distinct(&read.keys, &ingest.keys) {
            return Err(invalid("read_keys", &"must differ from every ingest key"));
        }
        if !distinct(&admin.keys, &ingest.keys) || !distinct(&admin.keys, &read.keys) {
            return Err(invalid(
                "admin_keys",
                &"must differ from every ingest and read key",
            ));
        }
        Ok(Config {
            cosmos,
            ingest,
            read,
            admin,
            kek,
            kv_key: kv::load(&vars)?,
        })
    }

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
