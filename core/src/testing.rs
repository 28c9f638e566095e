//! Fixtures shared by the core's unit tests: a configuration made of the
//! local stack's base settings and a test's own.

use crate::config::Config;

/// What every fixture configuration starts from: a local Cosmos DB account
/// with a master key, and a Managed HSM reached with a client secret (used
/// only where a test also names `hsm_key_name`).
const BASE: &[(&str, &str)] = &[
    ("cosmos_endpoint", "http://127.0.0.1:8081"),
    ("cosmos_database", "db"),
    ("cosmos_container", "events"),
    ("cosmos_key", "c2VjcmV0"),
    ("hsm_endpoint", "https://contoso.managedhsm.azure.net"),
    ("identity", "client-secret"),
    ("azure_tenant_id", "t"),
    ("azure_client_id", "c"),
    ("azure_client_secret", "s"),
];

/// The base settings with `extra` added (or replacing a base value).
pub(crate) fn config(extra: &[(&str, &str)]) -> Config {
    Config::load(|name| {
        Ok(extra
            .iter()
            .chain(BASE)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned()))
    })
    .unwrap()
}

/// A maintenance route's configuration: `admin_keys` when given, and the
/// key-encryption key `app-kek` when `kek`.
pub(crate) fn maintenance(admin: Option<&str>, kek: bool) -> Config {
    let mut extra = Vec::new();
    if let Some(a) = admin {
        extra.push(("admin_keys", a));
    }
    if kek {
        extra.push(("hsm_key_name", "app-kek"));
    }
    config(&extra)
}
