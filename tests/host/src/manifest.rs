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

// The manifest as far as this host understands it: every table refuses
// fields it does not list (`deny_unknown_fields`), so a manifest using a
// Spin feature the host does not implement stops the start instead of
// being run without it. The `Option<toml::Value>` fields are Spin-valid
// metadata with no effect on how the app runs (Spin's
// `crates/manifest/src/schema/v2.rs`): accepted, and named in the start
// log as ignored.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    #[serde(default)]
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplication {
    name: Option<toml::Value>,
    version: Option<toml::Value>,
    description: Option<toml::Value>,
    authors: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    route: String,
    component: String,
    id: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    description: Option<toml::Value>,
    /// `spin build`'s settings: not used when running.
    build: Option<toml::Value>,
}

/// The dotted names of the accepted fields that have no effect here.
fn ignored_fields(raw: &RawManifest) -> Vec<String> {
    let mut out = Vec::new();
    let a = &raw.application;
    for (name, v) in [
        ("name", &a.name),
        ("version", &a.version),
        ("description", &a.description),
        ("authors", &a.authors),
    ] {
        if v.is_some() {
            out.push(format!("application.{name}"));
        }
    }
    for t in &raw.trigger.http {
        if t.id.is_some() {
            out.push("trigger.http.id".to_string());
        }
    }
    for (id, c) in &raw.component {
        for (name, v) in [("description", &c.description), ("build", &c.build)] {
            if v.is_some() {
                out.push(format!("component.{id}.{name}"));
            }
        }
    }
    out
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
    /// The single `[[trigger.http]]`'s route.
    pub route: String,
    /// Spin-valid fields accepted without effect (logged at start).
    pub ignored: Vec<String>,
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
        let ignored = ignored_fields(&raw);
        let mut components = raw.component.into_iter();
        let Some((component_id, comp)) = components.next() else {
            bail!("the manifest has no component");
        };
        if components.next().is_some() {
            bail!("this host runs one component per app");
        }
        let route = match raw.trigger.http.as_slice() {
            [t] => {
                if !t.route.starts_with('/') {
                    bail!("[[trigger.http]] route {:?} must start with '/'", t.route);
                }
                // Every path is handed to the component (no router here).
                if t.route != "/..." {
                    bail!(
                        "[[trigger.http]] route {:?}: this host serves only the wildcard route \"/...\"",
                        t.route
                    );
                }
                if t.component != component_id {
                    bail!(
                        "[[trigger.http]] names component {:?}, but the manifest's component is {component_id:?}",
                        t.component
                    );
                }
                t.route.clone()
            }
            triggers => bail!(
                "this host runs exactly one [[trigger.http]], the manifest has {}",
                triggers.len()
            ),
        };
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
            route,
            ignored,
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

    fn parse_err(manifest: &str) -> String {
        let env = env_of(&[("SPIN_VARIABLE_ENDPOINT", "http://a")]);
        format!(
            "{:#}",
            App::parse(manifest, Path::new("/x"), &env).unwrap_err()
        )
    }

    #[test]
    fn refuses_fields_it_does_not_understand() {
        for (from, to, field) in [
            ("[application]", "[application]\nfoo = 1", "foo"),
            (
                "[application]",
                "[application.trigger.http]\nbase = \"/b\"\n[application]",
                "trigger",
            ),
            (
                "[variables]",
                "[variables]\nx = { default = \"\", y = 1 }",
                "y",
            ),
            (
                "component = \"c\"",
                "component = \"c\"\nexecutor = { type = \"wagi\" }",
                "executor",
            ),
            ("[component.c]", "[component.c]\nfiles = [\"a\"]", "files"),
            (
                "[component.c]",
                "[component.c]\nenvironment = { A = \"1\" }",
                "environment",
            ),
            (
                "spin_manifest_version = 2",
                "spin_manifest_version = 2\n[[trigger.redis]]\nchannel = \"c\"\ncomponent = \"c\"",
                "redis",
            ),
            (
                "spin_manifest_version = 2",
                "spin_manifest_version = 2\n[tool.x]\ny = 1",
                "tool",
            ),
        ] {
            let m = MANIFEST.replacen(from, to, 1);
            assert_ne!(m, MANIFEST, "{from}");
            let err = parse_err(&m);
            assert!(
                err.contains(&format!("unknown field `{field}`")),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn accepts_and_names_harmless_metadata() {
        let env = env_of(&[("SPIN_VARIABLE_ENDPOINT", "http://a")]);
        let m = MANIFEST
            .replace(
                "source = \"app.wasm\"",
                "source = \"app.wasm\"\ndescription = \"d\"",
            )
            .replace(
                "[component.c.variables]",
                "[component.c.build]\ncommand = \"make\"\n[component.c.variables]",
            );
        let app = App::parse(&m, Path::new("/x"), &env).unwrap();
        assert_eq!(app.route, "/...");
        assert_eq!(
            app.ignored,
            vec![
                "application.name",
                "component.c.description",
                "component.c.build"
            ]
        );
    }

    #[test]
    fn needs_exactly_one_http_trigger_for_the_component() {
        let trigger = "[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n";
        assert!(MANIFEST.contains(trigger));
        let none = MANIFEST.replace(trigger, "");
        assert!(parse_err(&none).contains("exactly one [[trigger.http]], the manifest has 0"));
        let two = MANIFEST.replace(trigger, &format!("{trigger}{trigger}"));
        assert!(parse_err(&two).contains("exactly one [[trigger.http]], the manifest has 2"));
        let relative = MANIFEST.replace("route = \"/...\"", "route = \"...\"");
        assert!(parse_err(&relative).contains("must start with '/'"));
        let narrower = MANIFEST.replace("route = \"/...\"", "route = \"/api/...\"");
        assert!(parse_err(&narrower).contains("only the wildcard route"));
        let other = MANIFEST.replace("component = \"c\"", "component = \"d\"");
        assert!(parse_err(&other).contains("names component \"d\""));
    }

    #[test]
    fn the_repositorys_manifests_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let env = |k: &str| {
            let required = [
                "SPIN_VARIABLE_COSMOS_ENDPOINT",
                "SPIN_VARIABLE_COSMOS_DATABASE",
                "SPIN_VARIABLE_COSMOS_CONTAINER",
                "SPIN_VARIABLE_COSMOSENDPOINT",
                "SPIN_VARIABLE_COSMOSDATABASE",
                "SPIN_VARIABLE_COSMOSCONTAINER",
            ];
            required
                .contains(&k)
                .then(|| "https://x.example.com".to_string())
        };
        for name in ["spin.toml", "spin-keyvault.toml"] {
            let app = App::load(&root.join(name), &env).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(app.route, "/...", "{name}");
        }
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
