//! Key scopes (`key_scope_*`): which Managed HSM key seals an event, chosen
//! per event by a value in it (a tenant, a dataset, a group of data
//! subjects), so that deleting one scope's key erases that scope's records
//! only. Without `key_scope_pointer` every event goes under `hsm_key_name`,
//! as before scopes existed. See docs/keys-and-identity.md, "Key scopes".

use super::vars::{invalid, Vars};
use super::ConfigError;

/// Longest value a naming rule accepts.
pub const MAX_RULE_VALUE: usize = 63;

/// Most keys a mapping may name (each is checked on its own at readiness).
pub const MAX_MAPPED_KEYS: usize = 200;

/// What happens to an event whose scope value is missing (or null) or not
/// configured. (A value that is not a string is refused either way.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownScope {
    /// 400 `KeyScopeUnknown`: the sender must not retry (the default).
    Refuse,
    /// Sealed under `hsm_key_name`, the deployment's default key.
    DefaultKey,
}

/// A key naming rule: `{prefix}{value}{suffix}`, e.g. `tenant-{value}`.
/// Values are 1 to [`MAX_RULE_VALUE`] lowercase letters, digits and hyphens
/// (key names are case-insensitive in Managed HSM, so `Contoso` and
/// `contoso` must not name one key through two tenants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRule {
    prefix: String,
    suffix: String,
}

impl NameRule {
    /// Parses `prefix{value}suffix`; the fixed parts use letters, digits and
    /// hyphens, and the longest name stays within 127 characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (prefix, suffix) = text
            .trim()
            .split_once("{value}")
            .ok_or("must contain `{value}` once, e.g. `tenant-{value}`")?;
        if suffix.contains("{value}") {
            return Err("must contain `{value}` once".into());
        }
        if !(prefix.bytes().chain(suffix.bytes())).all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("the text around `{value}` uses letters, digits and hyphens".into());
        }
        if prefix.len() + suffix.len() + MAX_RULE_VALUE > 127 {
            return Err(format!(
                "the text around `{{value}}` leaves no room for {MAX_RULE_VALUE} characters in a 127-character key name"
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The key name for `value`, when the value is allowed.
    pub fn apply(&self, value: &str) -> Option<String> {
        let ok = (1..=MAX_RULE_VALUE).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| format!("{}{value}{}", self.prefix, self.suffix))
    }

    /// The value a key name was made from, when the rule made it.
    pub fn value_of<'a>(&self, key_name: &'a str) -> Option<&'a str> {
        key_name
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_suffix(&self.suffix))
            .filter(|v| self.apply(v).is_some())
    }
}

/// The key scopes of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScopes {
    /// JSON Pointer into the event's CloudEvents form selecting the scope
    /// value, e.g. `/data/tenantId`.
    pub pointer: String,
    /// Scope value → key name, from `key_scope_keys`, in the order given.
    pub mapped: Vec<(String, String)>,
    /// The naming rule from `key_scope_key_rule`, for values not mapped.
    pub rule: Option<NameRule>,
    /// What an event without a configured scope gets.
    pub unknown: UnknownScope,
    /// `hsm_key_name`, which no scope value may choose.
    pub default_key: String,
}

/// A naming rule made a key name that belongs to a mapped scope or is
/// `hsm_key_name` (key names compare case-insensitively in Managed HSM).
/// The configuration refuses such rules at load; this is the last guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleCollision;

impl NameRule {
    /// The value the rule would turn into `key_name`, comparing key names
    /// the way Managed HSM does (case-insensitively).
    fn value_making(&self, key_name: &str) -> Option<String> {
        let lower = key_name.to_ascii_lowercase();
        lower
            .strip_prefix(&self.prefix.to_ascii_lowercase())
            .and_then(|r| r.strip_suffix(&self.suffix.to_ascii_lowercase()))
            .filter(|v| self.apply(v).is_some())
            .map(str::to_owned)
    }
}

impl KeyScopes {
    /// The key for a scope value: mapped first, else by the rule; `None`
    /// when neither configures the value. A rule-made name that is a mapped
    /// key or `hsm_key_name` (in any case) is refused, never used: one
    /// scope's value must not select another scope's key or the default.
    pub fn key_for(&self, value: &str) -> Result<Option<String>, RuleCollision> {
        if let Some((_, k)) = self.mapped.iter().find(|(v, _)| v == value) {
            return Ok(Some(k.clone()));
        }
        let Some(made) = self.rule.as_ref().and_then(|r| r.apply(value)) else {
            return Ok(None);
        };
        let taken = |k: &str| k.eq_ignore_ascii_case(&made);
        if taken(&self.default_key) || self.mapped.iter().any(|(_, k)| taken(k)) {
            return Err(RuleCollision);
        }
        Ok(Some(made))
    }

    /// Whether `key_name` is made by the naming rule (not mapped, not the
    /// default key).
    pub fn rule_made(&self, key_name: &str) -> bool {
        !self.mapped.iter().any(|(_, k)| k == key_name)
            && key_name != self.default_key
            && self
                .rule
                .as_ref()
                .is_some_and(|r| r.value_of(key_name).is_some())
    }

    /// Refuses a configuration in which one scope value could select
    /// another scope's key or `hsm_key_name`. Managed HSM key names are
    /// case-insensitive, so every comparison of key names ignores case.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let keys = self.mapped_keys();
        for (i, a) in keys.iter().enumerate() {
            if keys[..i].iter().any(|b| b.eq_ignore_ascii_case(a)) {
                return Err(invalid(
                    "key_scope_keys",
                    &format!("`{a}` is named twice in different cases; key names are case-insensitive, write each key one way"),
                ));
            }
            if a.eq_ignore_ascii_case(&self.default_key) {
                return Err(invalid(
                    "key_scope_keys",
                    &format!(
                        "`{a}` is hsm_key_name, the default key; a scope needs a key of its own"
                    ),
                ));
            }
        }
        let Some(rule) = &self.rule else {
            return Ok(());
        };
        if rule.value_making(&self.default_key).is_some() {
            return Err(invalid(
                "key_scope_key_rule",
                &"can make hsm_key_name (the default key) from a scope value; choose a prefix or suffix the default key does not have",
            ));
        }
        for k in keys {
            if let Some(v) = rule.value_making(k) {
                if !self.mapped.iter().any(|(m, _)| *m == v) {
                    return Err(invalid(
                        "key_scope_key_rule",
                        &format!("can make the mapped key `{k}` from an unmapped scope value; choose a prefix or suffix no mapped key has"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `key_name` is a scope's key (mapped, or made by the rule).
    pub fn owns(&self, key_name: &str) -> bool {
        self.mapped.iter().any(|(_, k)| k == key_name)
            || self
                .rule
                .as_ref()
                .is_some_and(|r| r.value_of(key_name).is_some())
    }

    /// The scope values a key serves (for answers to admin and read callers
    /// about a key that is gone; never logged).
    pub fn values_of(&self, key_name: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .mapped
            .iter()
            .filter(|(_, k)| k == key_name)
            .map(|(v, _)| v.clone())
            .collect();
        if out.is_empty() {
            if let Some(v) = self.rule.as_ref().and_then(|r| r.value_of(key_name)) {
                out.push(v.to_owned());
            }
        }
        out
    }

    /// The mapped key names, each once, in the order given.
    pub fn mapped_keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (_, k) in &self.mapped {
            if !out.contains(&k.as_str()) {
                out.push(k);
            }
        }
        out
    }
}

/// Whether `name` is a Managed HSM key name: letters, digits and hyphens,
/// 1 to 127 characters.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Reads the key scopes: `None` without `key_scope_pointer` (then none of
/// the other `key_scope_*` variables may be set).
pub(super) fn load(vars: &Vars) -> Result<Option<KeyScopes>, ConfigError> {
    let pointer = vars.get("key_scope_pointer")?;
    let mapped = vars.get("key_scope_keys")?;
    let rule = vars.get("key_scope_key_rule")?;
    let unknown = vars.get("key_scope_unknown")?;
    let Some(pointer) = pointer.map(|p| p.trim().to_owned()) else {
        // Without a pointer, the off-state values a deployment template
        // writes for every variable (an empty mapping, the default `refuse`)
        // mean "unset"; anything that would choose a key stays a mistake.
        let mapping_is_empty = mapped.as_deref().is_some_and(|m| {
            serde_json::from_str::<serde_json::Value>(m)
                .ok()
                .and_then(|v| v.as_object().map(serde_json::Map::is_empty))
                .unwrap_or(false)
        });
        let unknown_is_default = unknown.as_deref().map(str::trim) == Some("refuse");
        for (name, v, off) in [
            ("key_scope_keys", &mapped, mapping_is_empty),
            ("key_scope_key_rule", &rule, false),
            ("key_scope_unknown", &unknown, unknown_is_default),
        ] {
            if v.is_some() && !off {
                return Err(invalid(
                    name,
                    &"is set while key_scope_pointer is not; set key_scope_pointer to the event's scope value (e.g. /data/tenantId)",
                ));
            }
        }
        return Ok(None);
    };
    if !crate::envelope::valid_pointer(&pointer)
        || pointer.split('/').skip(1).any(|t| t.is_empty() || t == "*")
    {
        return Err(invalid(
            "key_scope_pointer",
            &"must be a JSON Pointer to one field of the event (RFC 6901; no empty token, no `*`)",
        ));
    }
    let mapped = match mapped {
        None => Vec::new(),
        Some(text) => parse_mapping(&text).map_err(|e| invalid("key_scope_keys", &e))?,
    };
    let rule = rule
        .map(|r| NameRule::parse(&r))
        .transpose()
        .map_err(|e| invalid("key_scope_key_rule", &e))?;
    if mapped.is_empty() && rule.is_none() {
        return Err(invalid(
            "key_scope_keys",
            &"key_scope_pointer needs key_scope_keys (a JSON object of scope value -> key name) or key_scope_key_rule",
        ));
    }
    let unknown = match unknown.as_deref().map(str::trim) {
        None | Some("refuse") => UnknownScope::Refuse,
        Some("default") => UnknownScope::DefaultKey,
        Some(_) => return Err(invalid("key_scope_unknown", &"must be refuse or default")),
    };
    Ok(Some(KeyScopes {
        pointer,
        mapped,
        rule,
        unknown,
        default_key: String::new(),
    }))
}

/// The entries of a JSON object in the order written, duplicates kept
/// (`serde_json::Map` keeps only the last of two equal names).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of scope value -> key name")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = a.next_entry::<String, serde_json::Value>()? {
                    out.push(e);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses `{"<scope value>": "<key name>", …}`.
fn parse_mapping(text: &str) -> Result<Vec<(String, String)>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("expected a JSON object of scope value -> key name".into());
    }
    let Entries(obj) = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out: Vec<(String, String)> = Vec::with_capacity(obj.len());
    for (value, key) in &obj {
        if out.iter().any(|(v, _)| v == value) {
            // Which entry, not which value: scope values stay out of the log.
            return Err(format!(
                "entry {} repeats an earlier scope value; each value is mapped once",
                out.len() + 1
            ));
        }
        let key = key.as_str().ok_or_else(|| {
            format!(
                "the key name of entry {} entries in is not a string",
                out.len() + 1
            )
        })?;
        if value.is_empty() {
            return Err("a scope value is empty".into());
        }
        // The error names the entry's position, not the value: scope
        // values stay out of the log.
        if !valid_key_name(key) {
            return Err(format!(
                "`{key}` is not a key name (letters, digits and hyphens, at most 127)"
            ));
        }
        out.push((value.clone(), key.to_owned()));
    }
    if out.len() > MAX_MAPPED_KEYS {
        return Err(format!("at most {MAX_MAPPED_KEYS} entries"));
    }
    Ok(out)
}
