//! Field encryption (the second stage): the key-encryption key in Managed
//! HSM, the fields sealed under it, and the rules that choose the stage
//! (`cmk_stage`, `hsm_*`, `protected_fields`).

use super::identity::{self, IdentityConfig};
use super::scopes::{self, KeyScopes};
use super::vars::{invalid, Vars};
use super::ConfigError;
use crate::cosmos::Endpoint;

/// The key-encryption key and how the component reaches it.
#[derive(Debug, Clone)]
pub struct KekConfig {
    /// Fields sealed under it.
    pub protected: ProtectedFields,
    /// Managed HSM endpoint, e.g. `https://contoso.managedhsm.azure.net`.
    pub endpoint: Endpoint,
    /// Key name.
    pub key_name: String,
    /// How long a checked key state is trusted before it is read again.
    pub check_secs: u64,
    /// Wrap data keys here with the key version's public part instead of
    /// calling the HSM's `wrapkey` (off by default; unwrap always goes to
    /// the HSM). See docs/keys-and-identity.md for the trade-off.
    pub local_wrap: bool,
    /// Where Entra ID tokens come from.
    pub identity: IdentityConfig,
    /// Keys per scope (tenant); `None`: every event under `key_name`.
    pub scopes: Option<KeyScopes>,
}

impl KekConfig {
    /// Whether `name` is one of this deployment's keys: `hsm_key_name`, or
    /// a scope's key.
    pub fn owns(&self, name: &str) -> bool {
        name == self.key_name || self.scopes.as_ref().is_some_and(|s| s.owns(name))
    }

    /// The keys known from the configuration: `hsm_key_name` first, then
    /// each mapped scope key once (keys made by a naming rule are known only
    /// once an event names them).
    pub fn configured_keys(&self) -> Vec<&str> {
        let mut out = vec![self.key_name.as_str()];
        if let Some(s) = &self.scopes {
            for k in s.mapped_keys() {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        out
    }
}

/// Reads the key-encryption key settings: `None` in the first stage
/// (Microsoft-managed keys only). Protected fields must not overlap
/// `partition_key`, the ingest setting.
pub(super) fn load(vars: &Vars, partition_key: &str) -> Result<Option<KekConfig>, ConfigError> {
    let key_scopes = scopes::load(vars)?;
    let Some(key_name) = stage(vars)? else {
        if key_scopes.is_some() {
            return Err(invalid(
                "key_scope_pointer",
                &"key scopes need field encryption (cmk_stage = 2 and hsm_key_name)",
            ));
        }
        return Ok(None);
    };
    if !scopes::valid_key_name(&key_name) {
        return Err(invalid(
            "hsm_key_name",
            &"key names use letters, digits and hyphens",
        ));
    }
    let key_scopes = match key_scopes {
        None => None,
        Some(mut s) => {
            s.default_key = key_name.clone();
            s.check()?;
            Some(s)
        }
    };
    let endpoint = Endpoint::parse(&vars.required("hsm_endpoint")?)
        .map_err(|e| invalid("hsm_endpoint", &e))?;
    let protected = ProtectedFields::parse(
        &vars
            .get("protected_fields")?
            .unwrap_or_else(|| r#"{"*": ["/data"]}"#.into()),
        partition_key,
    )
    .map_err(|e| invalid("protected_fields", &e))?;
    Ok(Some(KekConfig {
        protected,
        endpoint,
        key_name,
        check_secs: match vars.get("hsm_key_check_secs")? {
            None => 30,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 3600)
                .ok_or_else(|| {
                    invalid(
                        "hsm_key_check_secs",
                        &"must be a whole number from 0 (every batch) to 3600",
                    )
                })?,
        },
        local_wrap: vars.flag("hsm_local_wrap", "true", "false")?,
        identity: identity::load(vars)?,
        scopes: key_scopes,
    }))
}

/// The key name when the second stage is configured, `None` for the first.
/// The stage is never guessed from a missing key name: a deployment that
/// lists protected fields but names no key would otherwise store them in
/// plaintext.
fn stage(vars: &Vars) -> Result<Option<String>, ConfigError> {
    let key_name = vars.get("hsm_key_name")?;
    match (vars.get("cmk_stage")?.as_deref().map(str::trim), &key_name) {
        (Some("1"), None) | (Some("2") | None, Some(_)) => {}
        (Some("1"), Some(_)) => {
            return Err(invalid(
                "cmk_stage",
                &"is 1 (no field encryption) while hsm_key_name is set; set cmk_stage = 2, or empty hsm_key_name",
            ))
        }
        (Some("2"), None) => {
            return Err(invalid("hsm_key_name", &"is required for cmk_stage = 2"))
        }
        (None, None) => {
            if vars.get("protected_fields")?.is_some() {
                return Err(invalid(
                    "hsm_key_name",
                    &"is empty while protected_fields is set, which would store those fields in plaintext; \
                      set hsm_key_name (and cmk_stage = 2) for field encryption, or cmk_stage = 1 to run the first stage on purpose",
                ));
            }
        }
        (Some(_), _) => return Err(invalid("cmk_stage", &"must be 1 or 2")),
    }
    Ok(key_name)
}

/// Which fields of an event are sealed, by event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedFields {
    by_type: Vec<(String, Vec<String>)>,
    default: Vec<String>,
}

impl ProtectedFields {
    /// Parses `{"<event type>": ["/data/ssn", …], "*": ["/data"]}`: JSON
    /// Pointers into the event's CloudEvents form. `*` applies to types not
    /// listed (default: the whole `data`).
    pub fn parse(json_text: &str, partition_key: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(json_text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or("expected an object of event type -> list of JSON Pointers")?;
        let mut by_type = Vec::new();
        let mut default = with_binary_data(vec!["/data".to_owned()]);
        for (ty, list) in obj {
            let pointers: Vec<String> = list
                .as_array()
                .and_then(|a| a.iter().map(|p| p.as_str().map(str::to_owned)).collect())
                .ok_or_else(|| format!("`{ty}`: expected a list of JSON Pointers"))?;
            // `a` is `b` or inside it: every token of `b` has its match in
            // `a` (so `a` has at least as many); `*` (every element of an
            // array) may stand for any token, so it overlaps any name or
            // index. Read each request, so without collecting the tokens
            // (and split as bytes: a pointer is ASCII-delimited).
            fn tokens(p: &str) -> impl Iterator<Item = &[u8]> {
                p.as_bytes().split(|&c| c == b'/')
            }
            let overlaps = |a: &str, b: &str| {
                let mut a = tokens(a);
                tokens(b).all(|y| a.next().is_some_and(|x| x == y || x == b"*" || y == b"*"))
            };
            for (i, p) in pointers.iter().enumerate() {
                if !crate::envelope::valid_pointer(p) || p.len() < 2 {
                    return Err(format!(
                        "`{p}` is not a JSON Pointer to a field (RFC 6901: a leading `/`, `~0` for `~`, `~1` for `/`)"
                    ));
                }
                let top = p[1..].split('/').next().unwrap_or("");
                if top == "*" {
                    return Err(format!(
                        "`{p}`: the event is an object; `*` stands for the elements of an array"
                    ));
                }
                if matches!(top, "id" | "source" | "specversion" | "type") {
                    return Err(format!("`{p}`: the event's id, source, specversion and type stay readable (they identify the record)"));
                }
                if overlaps(partition_key, p) || overlaps(p, partition_key) {
                    return Err(format!(
                        "`{p}` overlaps the partition key `{partition_key}`; Cosmos DB does not encrypt partition key values with the customer-managed key"
                    ));
                }
                if let Some(q) = pointers[..i]
                    .iter()
                    .find(|q| overlaps(p, q) || overlaps(q, p))
                {
                    return Err(format!(
                        "`{ty}`: `{p}` and `{q}` overlap; list each field once, and not inside another listed one"
                    ));
                }
            }
            let pointers = with_binary_data(pointers);
            if ty == "*" {
                default = pointers;
            } else {
                by_type.push((ty.clone(), pointers));
            }
        }
        Ok(Self { by_type, default })
    }

    /// The pointers (into the CloudEvents form) to seal for an event type.
    pub fn for_type(&self, ty: &str) -> &[String] {
        self.by_type
            .iter()
            .find(|(t, _)| t == ty)
            .map(|(_, p)| &p[..])
            .unwrap_or(&self.default)
    }
}

/// A CloudEvent's payload is `data`, or `data_base64` when it is binary
/// (binary-mode deliveries with a non-JSON content type, or structured ones
/// that carry `data_base64`). Binary data cannot be protected field by field,
/// so protecting `data` or anything inside it also protects `data_base64`
/// whole.
fn with_binary_data(mut pointers: Vec<String>) -> Vec<String> {
    let covers_data = pointers
        .iter()
        .any(|p| p == "/data" || p.starts_with("/data/"));
    if covers_data && !pointers.iter().any(|p| p == "/data_base64") {
        pointers.push("/data_base64".to_owned());
    }
    pointers
}
