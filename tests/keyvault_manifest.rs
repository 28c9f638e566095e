//! Checks on `spin-keyvault.toml`, the manifest for hosts whose Spin
//! variables come from Azure Key Vault (`[[variables_provider]] type =
//! "azure_key_vault"`). Spin's provider looks a variable up as the Key Vault
//! secret of the variable's own name, and it is asked first for every
//! variable, so every application variable there must be a name both Spin
//! (`[a-z0-9_]`, starting with a letter) and Key Vault (letters, digits and
//! `-`, 1-127 characters) accept; and the file must stay the same app as
//! `spin.toml`: the same declarations under names without underscores,
//! feeding the same component variables.

use std::collections::BTreeMap;
use toml::Value;

fn load(name: &str) -> toml::Table {
    let path = format!("{}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap()
        .parse::<toml::Table>()
        .unwrap()
}

/// A Spin variable name (lowercase letters, digits, underscores; a letter
/// first; no leading, trailing or doubled underscore).
fn is_spin_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
        && !name.contains("__")
}

/// A Key Vault secret name: 1-127 of letters, digits and '-'.
fn is_key_vault_secret_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn kv_name(spin_name: &str) -> String {
    spin_name.replace('_', "")
}

/// `template` with each `{{ name }}` renamed.
fn rename_refs(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("closed template") + start;
        out.push_str(&format!(
            "{{{{ {} }}}}",
            kv_name(rest[start + 2..end].trim())
        ));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn rename_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(rename_refs(s)),
        Value::Array(a) => Value::Array(a.iter().map(rename_value).collect()),
        Value::Table(t) => Value::Table(
            t.iter()
                .map(|(k, v)| (k.clone(), rename_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn the_name_rules_refuse_what_key_vault_or_spin_refuse() {
    assert!(is_spin_variable_name("cosmos_key") && !is_key_vault_secret_name("cosmos_key"));
    assert!(is_key_vault_secret_name("cosmos-key") && !is_spin_variable_name("cosmos-key"));
    assert!(is_spin_variable_name("cosmoskey") && is_key_vault_secret_name("cosmoskey"));
    assert!(!is_key_vault_secret_name("") && !is_key_vault_secret_name(&"a".repeat(128)));
    assert!(!is_spin_variable_name("1key") && !is_spin_variable_name("Key"));
}

#[test]
fn every_application_variable_is_a_valid_key_vault_secret_name() {
    let m = load("spin-keyvault.toml");
    let vars = m["variables"].as_table().unwrap();
    let mut secrets = 0;
    for (name, decl) in vars {
        assert!(
            is_spin_variable_name(name),
            "`{name}` is not a Spin variable name"
        );
        assert!(
            is_key_vault_secret_name(name),
            "`{name}` cannot be a Key Vault secret name (letters, digits and '-' only)"
        );
        if decl.get("secret").and_then(Value::as_bool) == Some(true) {
            secrets += 1;
        }
    }
    // The secrets are what this manifest exists for: cosmos key, ingest,
    // read and admin keys, client secret, federated token, identity header.
    assert!(secrets >= 7, "only {secrets} secret variables");
}

#[test]
fn it_declares_what_spin_toml_declares_under_key_vault_names() {
    let base = load("spin.toml");
    let kv = load("spin-keyvault.toml");
    let base_vars = base["variables"].as_table().unwrap();
    let kv_vars = kv["variables"].as_table().unwrap();
    let expected: BTreeMap<String, &Value> =
        base_vars.iter().map(|(k, v)| (kv_name(k), v)).collect();
    assert_eq!(
        expected.len(),
        base_vars.len(),
        "two spin.toml variables collide without underscores"
    );
    let got: BTreeMap<String, &Value> = kv_vars.iter().map(|(k, v)| (k.clone(), v)).collect();
    assert_eq!(
        got, expected,
        "spin-keyvault.toml [variables] drifted from spin.toml"
    );
}

#[test]
fn the_component_is_the_same_and_reads_the_same_variables() {
    let base = load("spin.toml");
    let kv = load("spin-keyvault.toml");
    for key in ["spin_manifest_version", "application", "trigger"] {
        assert_eq!(base[key], kv[key], "`{key}` differs");
    }
    let expected = rename_value(&base["component"]);
    assert_eq!(
        kv["component"], expected,
        "the component section drifted from spin.toml"
    );
    // Every component variable keeps its name (the component reads those).
    let comp = kv["component"].as_table().unwrap().values().next().unwrap();
    let base_comp = base["component"]
        .as_table()
        .unwrap()
        .values()
        .next()
        .unwrap();
    let names = |c: &Value| {
        c["variables"]
            .as_table()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(names(comp), names(base_comp));
}

// -- the SpinKube overlay (infra/deploy/keyvault) ------------------------------

const OVERLAY: &str = "infra/deploy/keyvault";

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Problems of the overlay's list of vault secrets (`name=value` lines)
/// against spin-keyvault.toml: every application variable exactly once,
/// under a valid secret name, with the manifest's default as its value, and
/// no value where the manifest has none (required settings, secrets).
fn secret_list_problems(list: &str, manifest: &toml::Table) -> Vec<String> {
    let vars = manifest["variables"].as_table().unwrap();
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    for line in list.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            out.push(format!("`{line}` is not name=value"));
            continue;
        };
        if seen.insert(name.to_string(), value.to_string()).is_some() {
            out.push(format!("`{name}` is listed twice"));
        }
        if !is_key_vault_secret_name(name) {
            out.push(format!("`{name}` is not a Key Vault secret name"));
        }
        match vars.get(name) {
            None => out.push(format!("`{name}` is not a variable of spin-keyvault.toml")),
            Some(decl) => {
                let default = decl.get("default").and_then(Value::as_str).unwrap_or("");
                if value != default {
                    out.push(format!(
                        "`{name}` = `{value}`, but the manifest's default is `{default}`"
                    ));
                }
            }
        }
    }
    for name in vars.keys() {
        if !seen.contains_key(name) {
            out.push(format!(
                "`{name}` has no line: the vault would miss it, and Spin fails on a missing secret"
            ));
        }
    }
    out
}

/// The fields Spin's `azure_key_vault` provider accepts (`#[serde(deny_unknown_fields)]`
/// on `AzureKeyVaultVariablesConfig`, crates/variables-azure/src/lib.rs at
/// v3.6.2, the Spin in the installed shim, and at main), and its
/// `authority_host` values.
const PROVIDER_FIELDS: [&str; 6] = [
    "type",
    "vault_url",
    "client_id",
    "client_secret",
    "tenant_id",
    "authority_host",
];
const AUTHORITY_HOSTS: [&str; 4] = [
    "AzurePublicCloud",
    "AzureChina",
    "AzureGermany",
    "AzureGovernment",
];

/// Problems of the overlay's runtime config: one Key Vault variables
/// provider Spin would accept (known fields only; the service principal's
/// three fields all or none, as the provider demands), and outbound
/// connection pooling written out (docs/runtime.md#outbound-connections).
fn runtime_config_problems(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let rc: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return vec![format!("not TOML: {e}")],
    };
    let providers = rc
        .get("variables_provider")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let kv: Vec<_> = providers
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("azure_key_vault"))
        .collect();
    if kv.len() != 1 {
        out.push(format!(
            "{} azure_key_vault variables providers, not one",
            kv.len()
        ));
    }
    for p in kv {
        let t = p.as_table().unwrap();
        for k in t.keys() {
            if !PROVIDER_FIELDS.contains(&k.as_str()) {
                out.push(format!(
                    "`{k}` is not a field of the provider (Spin refuses unknown fields)"
                ));
            }
        }
        let url = t.get("vault_url").and_then(Value::as_str).unwrap_or("");
        if !(url.starts_with("https://") && url.trim_end_matches('/').ends_with(".vault.azure.net"))
        {
            out.push(format!(
                "vault_url `{url}` is not https://<vault>.vault.azure.net/"
            ));
        }
        let creds = ["client_id", "client_secret", "tenant_id"]
            .iter()
            .filter(|k| t.contains_key(**k))
            .count();
        if creds != 0 && creds != 3 {
            out.push(format!(
                "{creds} of client_id, client_secret, tenant_id: the provider needs all three or none"
            ));
        }
        if let Some(host) = t.get("authority_host") {
            if !host.as_str().is_some_and(|h| AUTHORITY_HOSTS.contains(&h)) {
                out.push(format!("authority_host {host} is not one Spin knows"));
            }
        }
    }
    let pooling = rc
        .get("outbound_http")
        .and_then(|t| t.get("connection_pooling"))
        .and_then(Value::as_bool);
    if rc.contains_key("outbound_http") && pooling != Some(true) {
        out.push("[outbound_http] without connection_pooling = true turns pooling off".into());
    }
    out
}

#[test]
fn the_overlay_lists_every_variable_of_spin_keyvault_toml_as_a_vault_secret() {
    let manifest = load("spin-keyvault.toml");
    let list = read(&format!("{OVERLAY}/keyvault-secrets.env"));
    assert_eq!(secret_list_problems(&list, &manifest), Vec::<String>::new());
}

#[test]
fn a_broken_secret_list_is_refused() {
    let manifest = load("spin-keyvault.toml");
    let list = read(&format!("{OVERLAY}/keyvault-secrets.env"));
    let broken = [
        // the spin.toml name, which the vault cannot hold
        list.replacen("\ncosmoskey=", "\ncosmos_key=", 1),
        // one missing
        list.replacen("\nadminkeys=\n", "\n", 1),
        // a default that drifted
        list.replacen("\nhsmkeychecksecs=30", "\nhsmkeychecksecs=60", 1),
        // a secret filled in
        list.replacen("\ningestkeys=", "\ningestkeys=abc", 1),
        // listed twice
        format!("{list}identity=auto\n"),
    ];
    for (i, b) in broken.iter().enumerate() {
        assert_ne!(b, &list, "broken copy {i} changed nothing");
        assert!(
            !secret_list_problems(b, &manifest).is_empty(),
            "broken copy {i} passed"
        );
    }
}

#[test]
fn the_overlay_runtime_config_is_one_key_vault_provider_spin_accepts() {
    let rc = read(&format!("{OVERLAY}/runtime-config.toml"));
    assert_eq!(runtime_config_problems(&rc), Vec::<String>::new());
}

#[test]
fn a_broken_runtime_config_is_refused() {
    let rc = read(&format!("{OVERLAY}/runtime-config.toml"));
    let broken = [
        rc.replacen("type = \"azure_key_vault\"", "type = \"vault\"", 1),
        rc.replacen("client_secret = ", "# client_secret = ", 1),
        rc.replacen("authority_host = ", "authority = ", 1),
        rc.replacen(
            "connection_pooling = true",
            "max_concurrent_requests = 200",
            1,
        ),
        rc.replacen("vault.azure.net", "example.com", 1),
    ];
    for (i, b) in broken.iter().enumerate() {
        assert_ne!(b, &rc, "broken copy {i} changed nothing");
        assert!(
            !runtime_config_problems(b).is_empty(),
            "broken copy {i} passed"
        );
    }
}
