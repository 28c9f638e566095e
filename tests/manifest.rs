//! Checks on `spin.toml` that the test runtime (Wasmtime) cannot make, since
//! it neither enforces `allowed_outbound_hosts` nor templates variables:
//! every variable the component reads is declared and mapped, secrets are
//! marked, outbound hosts come only from variables (never `*`), and the
//! resolved outbound origin is exactly the origin the component calls.

use cmk_ingest::config::{Config, VARIABLES};
use std::collections::BTreeMap;
use toml::Value;

fn manifest() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml")).unwrap();
    text.parse::<toml::Table>().map(Value::Table).unwrap()
}

fn component(m: &Value) -> &Value {
    let comps = m["component"].as_table().unwrap();
    assert_eq!(comps.len(), 1, "one component");
    comps.values().next().unwrap()
}

/// Resolves `{{ name }}` templates the way Spin does (whole-value and embedded).
fn resolve(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").ok_or("unclosed template")? + start;
        let name = rest[start + 2..end].trim();
        out.push_str(
            vars.get(name)
                .ok_or(format!("undeclared variable `{name}`"))?,
        );
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[test]
fn every_variable_the_component_reads_is_declared_and_mapped() {
    let m = manifest();
    let app_vars = m["variables"].as_table().unwrap();
    let comp_vars = component(&m)["variables"].as_table().unwrap();
    for (name, secret) in VARIABLES {
        let decl = app_vars
            .get(*name)
            .unwrap_or_else(|| panic!("`{name}` not in [variables]"));
        let marked = decl.get("secret").and_then(Value::as_bool).unwrap_or(false);
        assert_eq!(marked, *secret, "`{name}` secret flag");
        let has_default = decl.get("default").is_some();
        let required = decl
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        assert!(
            has_default ^ required,
            "`{name}` needs exactly one of default / required"
        );
        assert_eq!(
            comp_vars.get(*name).and_then(Value::as_str),
            Some(format!("{{{{ {name} }}}}").as_str()),
            "component maps `{name}`"
        );
    }
    for name in comp_vars.keys() {
        assert!(
            VARIABLES.iter().any(|(n, _)| n == name),
            "`{name}` is mapped but never read"
        );
    }
}

#[test]
fn outbound_hosts_come_only_from_variables() {
    let m = manifest();
    let hosts = component(&m)["allowed_outbound_hosts"].as_array().unwrap();
    assert!(!hosts.is_empty());
    for h in hosts {
        let h = h.as_str().unwrap();
        assert!(!h.contains('*'), "wildcard outbound host `{h}`");
        assert!(
            h.trim().starts_with("{{") && h.trim().ends_with("}}"),
            "`{h}` is not a variable"
        );
    }
}

#[test]
fn resolved_outbound_origin_is_the_one_the_component_calls() {
    let m = manifest();
    let mut vars: BTreeMap<String, String> = m["variables"]
        .as_table()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            v.get("default")
                .and_then(Value::as_str)
                .map(|d| (k.clone(), d.to_owned()))
        })
        .collect();
    let profile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/local/profile.env")).unwrap();
    for line in profile
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (k, v) = line.split_once('=').unwrap();
        vars.insert(
            k.trim_start_matches("SPIN_VARIABLE_").to_ascii_lowercase(),
            v.to_owned(),
        );
    }
    for endpoint in [
        "http://127.0.0.1:8081",
        "https://acct.documents.azure.com:443",
    ] {
        vars.insert("cosmos_endpoint".into(), endpoint.into());
        let comp = component(&m);
        let allowed: Vec<String> = comp["allowed_outbound_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| resolve(h.as_str().unwrap(), &vars).unwrap())
            .collect();
        let config = Config::load(|name| {
            let template = comp["variables"][name].as_str().unwrap();
            Ok(Some(resolve(template, &vars).map_err(|e| e.to_string())?))
        })
        .unwrap();
        assert_eq!(allowed, vec![config.cosmos.endpoint.origin()]);
    }
}

#[test]
fn key_value_store_and_build() {
    let m = manifest();
    let comp = component(&m);
    let stores: Vec<&str> = comp["key_value_stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(stores, ["default"]);
    assert_eq!(
        comp["source"].as_str(),
        Some("target/wasm32-wasip2/release/cmk_ingest.wasm")
    );
    let build = comp["build"]["command"].as_str().unwrap();
    assert!(build.contains("--target wasm32-wasip2") && build.contains("--release"));
    assert_eq!(m["spin_manifest_version"].as_integer(), Some(2));
    assert_eq!(m["trigger"]["http"][0]["route"].as_str(), Some("/..."));
}
