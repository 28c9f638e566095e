//! Where and how documents are written: the Cosmos DB account, container,
//! authorization, write mode, concurrency and retry budget (`cosmos_*`).

use super::identity::{self, IdentityConfig};
use super::vars::{invalid, Vars};
use super::ConfigError;
use crate::cosmos::{ContainerLink, Credential, Endpoint, MasterKey};
use crate::retry::RetryPolicy;

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

/// Default of `cosmos_max_concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

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

/// Reads the Cosmos DB settings.
pub(super) fn load(vars: &Vars) -> Result<CosmosConfig, ConfigError> {
    let endpoint = Endpoint::parse(&vars.required("cosmos_endpoint")?)
        .map_err(|e| invalid("cosmos_endpoint", &e))?;
    let database = vars.required("cosmos_database")?;
    let container = vars.required("cosmos_container")?;
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
    let auth_kind = vars
        .get("cosmos_auth")?
        .unwrap_or_else(|| "master-key".into());
    if !matches!(auth_kind.as_str(), "master-key" | "entra") {
        return Err(invalid(
            "cosmos_auth",
            &format!("`{auth_kind}` is not one of master-key, entra"),
        ));
    }
    let write_mode = match vars
        .get("cosmos_write_mode")?
        .as_deref()
        .unwrap_or("upsert")
    {
        "upsert" => WriteMode::Upsert,
        "create" => WriteMode::Create,
        other => {
            return Err(invalid(
                "cosmos_write_mode",
                &format!("`{other}` is not one of upsert, create"),
            ))
        }
    };
    let auth = if auth_kind == "entra" {
        let scope = match vars.get("cosmos_token_scope")? {
            // Never the Managed HSM's: a token that can wrap and unwrap keys
            // would be sent to the Cosmos DB endpoint with every request.
            Some(s) if same_resource(s.trim(), crate::entra::MANAGED_HSM_SCOPE) => {
                return Err(invalid(
                    "cosmos_token_scope",
                    &"is the Managed HSM's scope: its tokens must never go to the Cosmos DB endpoint",
                ))
            }
            Some(s) if s.trim().ends_with("/.default") && s.contains("://") => s.trim().to_owned(),
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
            identity: identity::load(vars)?,
        }
    } else {
        let key = vars
            .get("cosmos_key")?
            .ok_or_else(|| invalid("cosmos_key", &"is required for cosmos_auth = master-key"))?;
        CosmosAuth::MasterKey(Credential::MasterKey(
            MasterKey::from_base64(&key).map_err(|e| invalid("cosmos_key", &e))?,
        ))
    };
    Ok(CosmosConfig {
        endpoint,
        container: ContainerLink::new(database, container),
        auth,
        write_mode,
        max_concurrency: vars.number("cosmos_max_concurrency", DEFAULT_MAX_CONCURRENCY, 256)?,
        retry: retry_policy(vars.number(
            "cosmos_retry_budget_ms",
            RetryPolicy::default().budget_ms as usize,
            25_000,
        )? as u64),
    })
}

/// Whether two `…/.default` scopes name the same resource (scheme and host
/// compared without case, the default port `:443` and a trailing slash
/// before `.default` ignored).
fn same_resource(a: &str, b: &str) -> bool {
    let resource = |s: &str| {
        let r = s
            .trim_end_matches("/.default")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        r.strip_suffix(":443").map(str::to_owned).unwrap_or(r)
    };
    resource(a) == resource(b)
}
