//! The shipped deployment settings load through the component's own
//! configuration loader: the ConfigMap (infra/deploy/app/config.yaml) and
//! the key-scope values of Terraform's `spin_variables` output
//! (infra/terraform/outputs.tf), with the secrets of the local profile
//! (local/profile.env) standing in for the Secrets. A setting the component
//! refuses would leave every pod at `/readyz` 503 ConfigurationError.

use cmk_core::config::{Config, ConfigError};
use std::collections::BTreeMap;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A YAML scalar as the ConfigMap writes them: bare, '…' or "…".
fn scalar(v: &str) -> String {
    let v = v.trim();
    if let Some(s) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        s.replace("\\\"", "\"")
    } else if let Some(s) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        s.replace("''", "'")
    } else {
        v.to_owned()
    }
}

/// The `data:` entries of the ConfigMap (one-line values only).
fn configmap(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut in_data = false;
    for line in text.lines() {
        if line.starts_with("data:") {
            in_data = true;
            continue;
        }
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_data = false;
        }
        let t = line.trim_start();
        if !in_data || t.starts_with('#') || line.len() - t.len() != 2 {
            continue;
        }
        let (k, v) = t.split_once(':').unwrap();
        out.insert(k.to_owned(), scalar(v));
    }
    out
}

/// The local profile's values (the Secrets' stand-ins), then `settings`.
fn load(settings: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for line in read("local/profile.env")
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (k, v) = line.split_once('=').unwrap();
        let k = k.trim_start_matches("SPIN_VARIABLE_").to_ascii_lowercase();
        vars.insert(k, v.to_owned());
    }
    vars.extend(settings.clone());
    Config::load(|name| Ok(vars.get(name).cloned().filter(|v| !v.trim().is_empty())))
}

/// The off-state key-scope values Terraform's `spin_variables` writes: the
/// value after `:` of each `key_scope_* = … ? … : <off>` line, and for a
/// `var.` reference the variable's default (infra/terraform/variables.tf).
fn terraform_off_state(outputs: &str, variables: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in outputs.lines().map(str::trim) {
        let Some((name, expr)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with("key_scope_") {
            continue;
        }
        let off = expr.rsplit_once(" : ").map_or(expr, |(_, off)| off).trim();
        let value = match off.strip_prefix("var.") {
            Some(var) => {
                let decl = variables
                    .split(&format!("variable \"{var}\""))
                    .nth(1)
                    .unwrap_or_else(|| panic!("no variable {var}"));
                let default = decl
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("default"))
                    .unwrap_or_else(|| panic!("{var} has no default"));
                scalar(default.trim_start().trim_start_matches('=').trim())
            }
            None => scalar(off),
        };
        out.insert(name.to_owned(), value);
    }
    out
}

#[test]
fn the_shipped_configmap_loads() {
    let cm = configmap(&read("infra/deploy/app/config.yaml"));
    assert!(cm.contains_key("key_scope_keys") && cm.contains_key("hsm_key_name"));
    if let Err(e) = load(&cm) {
        panic!("infra/deploy/app/config.yaml: {e}");
    }
}

#[test]
fn terraforms_key_scope_values_load_with_the_configmap() {
    let tf = terraform_off_state(
        &read("infra/terraform/outputs.tf"),
        &read("infra/terraform/variables.tf"),
    );
    assert_eq!(tf.len(), 3, "{tf:?}");
    let mut cm = configmap(&read("infra/deploy/app/config.yaml"));
    cm.extend(tf.clone());
    if let Err(e) = load(&cm) {
        panic!("infra/terraform/outputs.tf spin_variables {tf:?}: {e}");
    }
}

#[test]
fn a_broken_copy_fails() {
    let text = read("infra/deploy/app/config.yaml");
    for (old, new) in [
        (
            r#"key_scope_keys: "{}""#,
            r#"key_scope_keys: '{"a": "tenant-a"}'"#,
        ),
        ("key_scope_unknown: refuse", "key_scope_unknown: default"),
        ("cosmos_write_mode: create", "cosmos_write_mode: sometimes"),
    ] {
        assert!(text.contains(old), "{old}");
        let broken = configmap(&text.replace(old, new));
        assert!(load(&broken).is_err(), "{new} loads");
    }
    let tf = terraform_off_state(
        &read("infra/terraform/outputs.tf").replace(": \"{}\"", ": \"{\\\"a\\\": \\\"k\\\"}\""),
        &read("infra/terraform/variables.tf"),
    );
    let mut cm = configmap(&text);
    cm.extend(tf);
    assert!(load(&cm).is_err());
}
