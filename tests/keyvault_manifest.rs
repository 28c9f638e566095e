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
