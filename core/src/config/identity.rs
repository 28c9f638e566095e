//! Where Entra ID tokens come from (`identity` and the `azure_*`
//! variables), for the Managed HSM and for Cosmos DB with `cosmos_auth =
//! entra`.

use super::vars::{invalid, Vars};
use super::ConfigError;
use crate::cosmos::Endpoint;
use crate::entra::{Provider, Secret, DEFAULT_AUTHORITY};

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

/// Picks the token source. `identity` names one, or `auto` (the default)
/// takes the first that is configured, in this order: workload identity
/// (tenant, client id and a federated token), client secret (tenant, client
/// id, secret), App Service / Container Apps managed identity (an
/// `identity_header`), IMDS managed identity. A named source reads only its
/// own variables (each read is a call into the host, on every request);
/// `auto` reads what it needs to decide.
pub(super) fn load(vars: &Vars) -> Result<IdentityConfig, ConfigError> {
    let choice = vars.get("identity")?.unwrap_or_else(|| "auto".into());
    // Checked whichever the source: a wrong authority is refused even
    // while a managed identity (which does not use it) is picked.
    let authority = vars
        .get("azure_authority_host")?
        .unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    Endpoint::parse(&authority).map_err(|e| invalid("azure_authority_host", &e))?;
    let need = |name: &'static str, why: &str| -> Result<String, ConfigError> {
        vars.get(name)?
            .ok_or_else(|| invalid(name, &format!("is required for {why}")))
    };
    let workload = || -> Result<Provider, ConfigError> {
        Ok(Provider::WorkloadIdentity {
            authority: authority.clone(),
            tenant: need("azure_tenant_id", "workload identity")?,
            client_id: need("azure_client_id", "workload identity")?,
        })
    };
    let client_secret = || -> Result<Provider, ConfigError> {
        Ok(Provider::ClientSecret {
            authority: authority.clone(),
            tenant: need("azure_tenant_id", "a client secret")?,
            client_id: need("azure_client_id", "a client secret")?,
            secret: vars
                .get("azure_client_secret")?
                .map(Secret::new)
                .ok_or_else(|| {
                    invalid(
                        "azure_client_secret",
                        &"is required for identity = client-secret",
                    )
                })?,
        })
    };
    let managed = || -> Result<Provider, ConfigError> {
        let endpoint = vars
            .get("managed_identity_endpoint")?
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
        let client_id = vars.get("azure_client_id")?;
        Ok(match vars.get("identity_header")?.map(Secret::new) {
            Some(header) => Provider::AppService {
                endpoint,
                header,
                client_id,
            },
            None => Provider::Imds {
                endpoint,
                client_id,
            },
        })
    };
    let set = |name: &'static str| -> Result<bool, ConfigError> { Ok(vars.get(name)?.is_some()) };
    let provider = match choice.as_str() {
        "workload-identity" => workload()?,
        "client-secret" => client_secret()?,
        "managed-identity" => managed()?,
        "auto" => {
            let ids = set("azure_tenant_id")? && set("azure_client_id")?;
            if ids && set("azure_federated_token")? {
                workload()?
            } else if ids && set("azure_client_secret")? {
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
    // Only workload identity uses the federated token.
    let federated = match provider.needs_assertion() {
        true => Some(Secret::new(need(
            "azure_federated_token",
            "workload identity",
        )?)),
        false => None,
    };
    Ok(IdentityConfig {
        provider,
        federated_token: federated,
        refresh_skew_secs: vars.number("token_refresh_skew_secs", 300, 3000)? as u64,
    })
}
