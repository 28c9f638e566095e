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
/// `identity_header`), IMDS managed identity.
pub(super) fn load(vars: &Vars) -> Result<IdentityConfig, ConfigError> {
    let tenant = vars.get("azure_tenant_id")?;
    let client_id = vars.get("azure_client_id")?;
    let authority = vars
        .get("azure_authority_host")?
        .unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    Endpoint::parse(&authority).map_err(|e| invalid("azure_authority_host", &e))?;
    let secret = vars.get("azure_client_secret")?.map(Secret::new);
    let federated = vars.get("azure_federated_token")?.map(Secret::new);
    let header = vars.get("identity_header")?.map(Secret::new);
    let mi_endpoint = vars.get("managed_identity_endpoint")?;
    let choice = vars.get("identity")?.unwrap_or_else(|| "auto".into());
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
        refresh_skew_secs: vars.number("token_refresh_skew_secs", 300, 3000)? as u64,
    })
}
