//! Checks on `spin.toml` that the test runtime (Wasmtime) cannot make, since
//! it neither enforces `allowed_outbound_hosts` nor templates variables:
//! every variable the component reads is declared and mapped, secrets are
//! marked, outbound hosts come only from variables (never `*`), and the
//! resolved outbound origin is exactly the origin the component calls.

use cmk_core::config::{Config, VARIABLES};
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

/// Names a template refers to.
fn referenced(template: &str) -> Vec<String> {
    template
        .split("{{")
        .skip(1)
        .filter_map(|part| {
            part.split_once("}}")
                .map(|(name, _)| name.trim().to_owned())
        })
        .collect()
}

#[test]
fn every_variable_the_component_reads_is_declared_and_mapped() {
    let m = manifest();
    let app_vars = m["variables"].as_table().unwrap();
    let comp_vars = component(&m)["variables"].as_table().unwrap();
    for (name, decl) in app_vars {
        let has_default = decl.get("default").is_some();
        let required = decl
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        assert!(
            has_default ^ required,
            "`{name}` needs exactly one of default / required"
        );
    }
    for (name, secret) in VARIABLES {
        let template = comp_vars
            .get(*name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("the component does not map `{name}`"));
        let refs = referenced(template);
        assert!(!refs.is_empty(), "`{name}` is not a template");
        for r in &refs {
            let decl = app_vars
                .get(r)
                .unwrap_or_else(|| panic!("`{r}` (for `{name}`) not in [variables]"));
            let marked = decl.get("secret").and_then(Value::as_bool).unwrap_or(false);
            if refs.len() == 1 {
                assert_eq!(marked, *secret, "`{name}` secret flag");
            } else {
                assert!(!marked && !secret, "`{name}` composes a secret");
            }
        }
    }
    for name in comp_vars.keys() {
        assert!(
            VARIABLES.iter().any(|(n, _)| n == name),
            "`{name}` is mapped but never read"
        );
    }
    // Every app-level variable feeds the component or its outbound hosts.
    let hosts: Vec<String> = component(&m)["allowed_outbound_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| referenced(h.as_str().unwrap()))
        .collect();
    for name in app_vars.keys() {
        let used = comp_vars
            .values()
            .any(|t| referenced(t.as_str().unwrap()).contains(name))
            || hosts.contains(name);
        assert!(used, "`{name}` is declared but unused");
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

fn resolved(extra: &[(&str, &str)]) -> (Vec<String>, Config) {
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
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    let comp = component(&m);
    let allowed: Vec<String> = comp["allowed_outbound_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| resolve(h.as_str().unwrap(), &vars).unwrap())
        .collect();
    let config = Config::load(|name| {
        Ok(Some(
            resolve(comp["variables"][name].as_str().unwrap(), &vars).map_err(|e| e.to_string())?,
        ))
    })
    .unwrap();
    (allowed, config)
}

fn origin(url: &str) -> String {
    let uri: http::Uri = url.parse().unwrap();
    format!(
        "{}://{}",
        uri.scheme_str().unwrap(),
        uri.authority().unwrap()
    )
}

#[test]
fn resolved_outbound_hosts_are_exactly_the_origins_the_component_calls() {
    use cmk_core::entra::Provider;
    for (cosmos, extra) in [
        ("http://127.0.0.1:8081", vec![]),
        (
            "https://acct.documents.azure.com:443",
            vec![
                ("hsm_key_name", "app-kek"),
                ("cmk_stage", "2"),
                ("hsm_endpoint", "https://contoso.managedhsm.azure.net"),
                ("azure_tenant_id", "t"),
                ("azure_client_id", "c"),
                ("azure_client_secret", "s"),
            ],
        ),
        (
            "https://acct.documents.azure.com:443",
            vec![
                ("hsm_key_name", "app-kek"),
                ("cmk_stage", "2"),
                ("hsm_endpoint", "https://contoso.managedhsm.azure.net"),
                ("managed_identity_origin", "http://localhost:42356"),
                ("managed_identity_path", "/msi/token"),
                ("identity_header", "h"),
            ],
        ),
    ] {
        let mut extra = extra.clone();
        extra.push(("cosmos_endpoint", cosmos));
        let (allowed, config) = resolved(&extra);
        assert!(
            allowed.iter().all(|h| h == &origin(h)),
            "an allowed host has a path: {allowed:?}"
        );
        assert!(allowed.contains(&config.cosmos.endpoint.origin()));
        if let Some(kek) = &config.kek {
            assert!(allowed.contains(&kek.endpoint.origin()));
            let called = match &kek.identity.provider {
                Provider::WorkloadIdentity { authority, .. }
                | Provider::ClientSecret { authority, .. } => origin(authority),
                Provider::Imds { endpoint, .. } | Provider::AppService { endpoint, .. } => {
                    origin(endpoint)
                }
            };
            assert!(allowed.contains(&called), "{called} not in {allowed:?}");
        }
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
