//! `spin.toml` as Spin reads it for this app: application variables, the
//! component's variable templates, outbound hosts and key-value stores.
//!
//! Resolution follows Spin's `crates/expressions/src/lib.rs` (`Resolver`,
//! `Key::validate`) and `crates/variables-env/src/lib.rs` (the environment
//! provider): a variable's value comes from `SPIN_VARIABLE_<NAME>`, else from
//! its default; a required variable no provider resolves stops the start
//! (`ensure_required_variables_resolvable`).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One `[variables]` entry (Spin's `crates/manifest/src/schema/common.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Accepted as Spin accepts it; not used.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    source: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// A `{{ name }}` template (Spin's `crates/expressions/src/template.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Expr(String),
}

pub fn parse_template(template: &str) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(expr_rest) = rest.strip_prefix("{{") {
            let Some((expr, tail)) = expr_rest.split_once("}}") else {
                bail!("invalid variable template: unmatched '{{{{' in {template:?}");
            };
            parts.push(Part::Expr(expr.trim().to_string()));
            rest = tail;
        } else if let Some(idx) = rest.find("{{") {
            parts.push(Part::Lit(rest[..idx].to_string()));
            rest = &rest[idx..];
        } else {
            parts.push(Part::Lit(rest.to_string()));
            rest = "";
        }
    }
    Ok(parts)
}

/// Spin's variable-name rule (`Key::validate`).
pub fn validate_name(key: &str) -> Result<(), String> {
    let reason = if key.is_empty() {
        "must not be empty".to_string()
    } else if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        format!("invalid character {c:?}. Variable names may contain only lower-case letters, numbers, and underscores.")
    } else if !key.as_bytes()[0].is_ascii_lowercase() {
        "must start with a lowercase ASCII letter".to_string()
    } else if !key.as_bytes()[key.len() - 1].is_ascii_alphanumeric() {
        "must end with a lowercase ASCII letter or digit".to_string()
    } else if key.contains("__") {
        "must not contain multiple consecutive underscores".to_string()
    } else {
        return Ok(());
    };
    Err(format!("{key:?}: {reason}"))
}

/// The app as the host runs it: the single HTTP component, with every
/// application variable already resolved.
#[derive(Debug)]
pub struct App {
    pub component_id: String,
    pub source: PathBuf,
    /// Names of the `secret` application variables (never logged).
    pub secret: Vec<String>,
    /// The component's `[component.x.variables]`, expanded.
    pub component_variables: HashMap<String, String>,
    /// `allowed_outbound_hosts`, templates expanded (empty expansions of
    /// templates skipped).
    pub allowed_outbound_hosts: Vec<String>,
    pub key_value_stores: Vec<String>,
}

impl App {
    /// Reads the manifest; `env` gives the environment provider's values
    /// (`SPIN_VARIABLE_*`), passed in so tests need not touch the process env.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<App> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")), env)
    }

    pub fn parse(text: &str, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<App> {
        let raw: RawManifest = toml::from_str(text).context("parsing the manifest")?;
        if raw.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported");
        }
        let mut values = HashMap::new();
        let mut unresolved = Vec::new();
        for (name, var) in &raw.variables {
            validate_name(name).map_err(|e| anyhow::anyhow!("invalid variable name: {e}"))?;
            // Spin's manifest normaliser: exactly one of `required` / `default`.
            if var.required && var.default.is_some() {
                bail!("variable {name:?}: `required` and `default` are mutually exclusive");
            }
            if !var.required && var.default.is_none() {
                bail!("variable {name:?}: needs a `default` or `required = true`");
            }
            let from_env = env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()));
            match from_env.or_else(|| var.default.clone()) {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => unresolved.push(name.clone()),
            }
        }
        if !unresolved.is_empty() {
            bail!("no provider resolved required variable(s): {unresolved:?}");
        }
        let secret = raw
            .variables
            .iter()
            .filter(|(_, v)| v.secret)
            .map(|(k, _)| k.clone())
            .collect();
        let mut components = raw.component.into_iter();
        let Some((component_id, comp)) = components.next() else {
            bail!("the manifest has no component");
        };
        if components.next().is_some() {
            bail!("this host runs one component per app");
        }
        let expand = |template: &str| -> Result<String> {
            let mut out = String::new();
            for part in parse_template(template)? {
                match part {
                    Part::Lit(l) => out.push_str(&l),
                    Part::Expr(e) => match values.get(&e) {
                        Some(v) => out.push_str(v),
                        None => bail!("invalid variable template: unknown variable {e:?}"),
                    },
                }
            }
            Ok(out)
        };
        let mut component_variables = HashMap::new();
        for (key, template) in &comp.variables {
            validate_name(key).map_err(|e| anyhow::anyhow!("invalid variable name: {e}"))?;
            component_variables.insert(key.clone(), expand(template)?);
        }
        let mut allowed_outbound_hosts = Vec::new();
        for host in &comp.allowed_outbound_hosts {
            // Spin's `AllowedHostsConfig::parse_partial` and
            // `PartialAllowedHostConfig::parse_or_skip`
            // (`crates/outbound-networking-config/src/allowed_hosts.rs`):
            // only a template's expansion that is empty (or a bare
            // `http://`/`https://`) stands for an optional endpoint and is
            // skipped; a literal entry is parsed as it is, so an empty or
            // scheme-only one stops the start.
            let templated = parse_template(host)?
                .iter()
                .any(|p| matches!(p, Part::Expr(_)));
            let resolved = expand(host)?;
            if templated && (resolved.is_empty() || resolved == "http://" || resolved == "https://")
            {
                continue;
            }
            allowed_outbound_hosts.push(resolved);
        }
        Ok(App {
            component_id,
            source: base.join(&comp.source),
            secret,
            component_variables,
            allowed_outbound_hosts,
            key_value_stores: comp.key_value_stores,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
endpoint = { required = true }
region = { default = "west" }
key = { default = "", secret = true }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "app.wasm"
allowed_outbound_hosts = ["{{ endpoint }}", "{{ key }}", "https://{{ region }}.example.com"]
key_value_stores = ["default"]
[component.c.variables]
url = "{{ endpoint }}/{{ region }}"
"#;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn resolves_env_then_default_and_expands_templates() {
        let env = env_of(&[("SPIN_VARIABLE_ENDPOINT", "http://127.0.0.1:9")]);
        let app = App::parse(MANIFEST, Path::new("/x"), &env).unwrap();
        assert_eq!(app.component_variables["url"], "http://127.0.0.1:9/west");
        assert_eq!(
            app.allowed_outbound_hosts,
            vec!["http://127.0.0.1:9", "https://west.example.com"]
        );
        assert_eq!(app.secret, vec!["key"]);
        assert_eq!(app.source, Path::new("/x/app.wasm"));
    }

    #[test]
    fn only_templated_hosts_that_expand_to_nothing_are_skipped() {
        let env = env_of(&[("SPIN_VARIABLE_ENDPOINT", "http://127.0.0.1:9")]);
        // `{{ key }}` expands to "" and `https://{{ key }}` to a bare
        // scheme: both skipped.
        let m = MANIFEST.replace("\"{{ key }}\", ", "\"{{ key }}\", \"https://{{ key }}\", ");
        let app = App::parse(&m, Path::new("/x"), &env).unwrap();
        assert_eq!(
            app.allowed_outbound_hosts,
            vec!["http://127.0.0.1:9", "https://west.example.com"]
        );
        // The same values written literally are kept, and refused when the
        // list is parsed (a start error, as in Spin).
        for literal in ["", "https://", "http://"] {
            let m = MANIFEST.replace("\"{{ key }}\", ", &format!("{literal:?}, "));
            let app = App::parse(&m, Path::new("/x"), &env).unwrap();
            assert!(
                app.allowed_outbound_hosts.contains(&literal.to_string()),
                "{literal:?}"
            );
            assert!(
                crate::allowed::AllowedHosts::parse(&app.allowed_outbound_hosts).is_err(),
                "{literal:?}"
            );
        }
    }

    #[test]
    fn refuses_a_missing_required_variable() {
        let err = App::parse(MANIFEST, Path::new("/x"), &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("endpoint"), "{err}");
    }

    #[test]
    fn refuses_unknown_template_variables() {
        let m = MANIFEST.replace("{{ endpoint }}/{{ region }}", "{{ nope }}");
        let env = env_of(&[("SPIN_VARIABLE_ENDPOINT", "http://a")]);
        assert!(App::parse(&m, Path::new("/x"), &env).is_err());
    }

    #[test]
    fn names_follow_spin() {
        for ok in ["a", "a_b", "a1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "1a", "a__b", "a_", "a-b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
