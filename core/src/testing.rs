//! Fixtures shared by the core's unit tests: a configuration made of the
//! local stack's base settings and a test's own, and generated JSON for
//! property tests.

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

/// Generated strings of up to `max_chars` characters: mostly the ones that
/// matter to JSON writers and to JSON Pointers (controls, quote, backslash,
/// DEL, `~`, `/`, multi-byte), and any character at all.
pub(crate) fn json_text(max_chars: usize) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let ch = prop_oneof![
        4 => prop::char::range('\u{0}', '\u{7f}'),
        2 => prop::sample::select(vec![
            '"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', '~', '/', 'é', '€', '🦀'
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..max_chars).prop_map(|c| c.into_iter().collect())
}

/// Generated JSON values of every kind, strings from [`json_text`], nested
/// up to `depth` levels, about `size` nodes in all and at most `branch`
/// members or elements per array or object.
pub(crate) fn json_value(
    max_chars: usize,
    depth: u32,
    size: u32,
    branch: usize,
) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        json_text(max_chars).prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, size, branch as u32, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..branch).prop_map(Value::Array),
            prop::collection::vec((json_text(max_chars), inner), 0..branch)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
