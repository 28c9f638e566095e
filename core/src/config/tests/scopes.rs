//! Tests of key scopes (`key_scope_*`).

use super::*;
use crate::config::{KeyScopes, NameRule, RuleCollision, UnknownScope};

const HSM: [(&str, &str); 6] = [
    ("hsm_key_name", "app-kek"),
    ("hsm_endpoint", "https://contoso.managedhsm.azure.net"),
    ("identity", "client-secret"),
    ("azure_tenant_id", "t"),
    ("azure_client_id", "c"),
    ("azure_client_secret", "s"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
    let mut all = HSM.to_vec();
    all.extend_from_slice(extra);
    load(&all)
}

fn scopes(extra: &[(&'static str, &'static str)]) -> KeyScopes {
    with(extra).unwrap().kek.unwrap().scopes.unwrap()
}

fn refused(extra: &[(&'static str, &'static str)]) -> &'static str {
    match with(extra) {
        Err(ConfigError::Invalid { name, .. }) => name,
        other => panic!("{extra:?}: {other:?}"),
    }
}

#[test]
fn without_a_pointer_there_are_no_scopes() {
    let kek = with(&[]).unwrap().kek.unwrap();
    assert!(kek.scopes.is_none());
    assert_eq!(kek.configured_keys(), ["app-kek"]);
    assert!(kek.owns("app-kek") && !kek.owns("tenant-a"));
    // The other settings alone are a mistake, not ignored.
    for name in ["key_scope_keys", "key_scope_key_rule", "key_scope_unknown"] {
        assert_eq!(refused(&[(name, "x")]), name);
    }
    // The off-state values of a deployment template (empty pointer, `{}`,
    // `refuse`) are "unset"; a mapping or rule without a pointer is not.
    let off = with(&[
        ("key_scope_pointer", ""),
        ("key_scope_keys", " { } "),
        ("key_scope_unknown", "refuse"),
    ]);
    assert!(off.unwrap().kek.unwrap().scopes.is_none());
    assert_eq!(
        refused(&[("key_scope_keys", r#"{"a": "tenant-a"}"#)]),
        "key_scope_keys"
    );
    assert_eq!(refused(&[("key_scope_keys", "[]")]), "key_scope_keys");
    assert_eq!(
        refused(&[("key_scope_key_rule", "t-{value}")]),
        "key_scope_key_rule"
    );
    assert_eq!(
        refused(&[("key_scope_unknown", "default")]),
        "key_scope_unknown"
    );
    // Scopes need field encryption.
    assert_eq!(refused_first_stage(), "key_scope_pointer");
}

fn refused_first_stage() -> &'static str {
    match load(&[
        ("cmk_stage", "1"),
        ("key_scope_pointer", "/data/tenantId"),
        ("key_scope_keys", r#"{"a": "tenant-a"}"#),
    ]) {
        Err(ConfigError::Invalid { name, .. }) => name,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_mapping_names_each_scopes_key() {
    let s = scopes(&[
        ("key_scope_pointer", "/data/tenantId"),
        (
            "key_scope_keys",
            r#"{"contoso": "tenant-contoso", "fabrikam": "tenant-fabrikam", "fabrikam-eu": "tenant-fabrikam"}"#,
        ),
    ]);
    assert_eq!(s.pointer, "/data/tenantId");
    assert_eq!(s.unknown, UnknownScope::Refuse);
    assert_eq!(
        s.key_for("contoso").unwrap().as_deref(),
        Some("tenant-contoso")
    );
    assert_eq!(
        s.key_for("fabrikam-eu").unwrap().as_deref(),
        Some("tenant-fabrikam")
    );
    assert_eq!(s.key_for("Contoso").unwrap(), None);
    assert!(s.owns("tenant-contoso") && !s.owns("app-kek"));
    let mut v = s.values_of("tenant-fabrikam");
    v.sort();
    assert_eq!(v, ["fabrikam", "fabrikam-eu"]);
    let kek = with(&[
        ("key_scope_pointer", "/data/tenantId"),
        (
            "key_scope_keys",
            r#"{"b": "tenant-b", "a": "tenant-a", "a2": "tenant-a"}"#,
        ),
        ("key_scope_unknown", "default"),
    ])
    .unwrap()
    .kek
    .unwrap();
    let mut keys = kek.configured_keys();
    assert_eq!(keys.remove(0), "app-kek");
    keys.sort();
    assert_eq!(keys, ["tenant-a", "tenant-b"]);
    assert_eq!(kek.scopes.unwrap().unknown, UnknownScope::DefaultKey);
}

#[test]
fn a_naming_rule_allows_lowercase_letters_digits_and_hyphens() {
    let s = scopes(&[
        ("key_scope_pointer", "/source"),
        ("key_scope_key_rule", "tenant-{value}-kek"),
    ]);
    assert_eq!(
        s.key_for("contoso-1").unwrap().as_deref(),
        Some("tenant-contoso-1-kek")
    );
    for bad in ["", "Contoso", "a/b", "a.b", "ä", &"x".repeat(64)] {
        assert_eq!(s.key_for(bad).unwrap(), None, "{bad}");
    }
    assert!(s.owns("tenant-contoso-kek"));
    assert!(!s.owns("tenant--kek") && !s.owns("app-kek") && !s.owns("tenant-A-kek"));
    assert_eq!(s.values_of("tenant-x-kek"), ["x"]);
    // A mapping comes before the rule.
    let s = scopes(&[
        ("key_scope_pointer", "/source"),
        ("key_scope_keys", r#"{"Big": "big-kek"}"#),
        ("key_scope_key_rule", "t-{value}"),
    ]);
    assert_eq!(s.key_for("Big").unwrap().as_deref(), Some("big-kek"));
    assert_eq!(s.key_for("small").unwrap().as_deref(), Some("t-small"));
    for bad in [
        "tenant",
        "{value}{value}",
        "a_{value}",
        &format!("{}{{value}}", "x".repeat(65)),
    ] {
        assert!(NameRule::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_scope_settings_are_refused() {
    let p = ("key_scope_pointer", "/data/tenantId");
    for (extra, name) in [
        (vec![p], "key_scope_keys"),
        (
            vec![
                ("key_scope_pointer", "data"),
                ("key_scope_key_rule", "t-{value}"),
            ],
            "key_scope_pointer",
        ),
        (
            vec![
                ("key_scope_pointer", "/data//t"),
                ("key_scope_key_rule", "t-{value}"),
            ],
            "key_scope_pointer",
        ),
        (
            vec![
                ("key_scope_pointer", "/data/*/t"),
                ("key_scope_key_rule", "t-{value}"),
            ],
            "key_scope_pointer",
        ),
        (vec![p, ("key_scope_keys", "[]")], "key_scope_keys"),
        (vec![p, ("key_scope_keys", r#"{"a": 1}"#)], "key_scope_keys"),
        (
            vec![p, ("key_scope_keys", r#"{"a": "bad name"}"#)],
            "key_scope_keys",
        ),
        (
            vec![p, ("key_scope_keys", r#"{"": "k"}"#)],
            "key_scope_keys",
        ),
        (
            vec![
                p,
                ("key_scope_key_rule", "t-{value}"),
                ("key_scope_unknown", "maybe"),
            ],
            "key_scope_unknown",
        ),
        (
            vec![p, ("key_scope_key_rule", "t_{value}")],
            "key_scope_key_rule",
        ),
    ] {
        assert_eq!(refused(&extra), name, "{extra:?}");
    }
    // The error names no scope value.
    let e = with(&[p, ("key_scope_keys", r#"{"secret-tenant": 7}"#)]).unwrap_err();
    assert!(!e.to_string().contains("secret-tenant"), "{e}");
}

#[test]
fn no_scope_value_can_select_another_scopes_key_or_the_default() {
    let p = ("key_scope_pointer", "/data/tenantId");
    for (extra, name) in [
        // The rule makes hsm_key_name (app-kek) from the value "kek".
        (
            vec![p, ("key_scope_key_rule", "app-{value}")],
            "key_scope_key_rule",
        ),
        (
            vec![p, ("key_scope_key_rule", "APP-{value}")],
            "key_scope_key_rule",
        ),
        // The rule makes a mapped key from an unmapped value ("b").
        (
            vec![
                p,
                ("key_scope_keys", r#"{"a": "t-b"}"#),
                ("key_scope_key_rule", "t-{value}"),
            ],
            "key_scope_key_rule",
        ),
        (
            vec![
                p,
                ("key_scope_keys", r#"{"a": "T-B"}"#),
                ("key_scope_key_rule", "t-{value}"),
            ],
            "key_scope_key_rule",
        ),
        // Mapped keys differing only in case.
        (
            vec![
                p,
                ("key_scope_keys", r#"{"a": "tenant-a", "b": "Tenant-A"}"#),
            ],
            "key_scope_keys",
        ),
        // A tenant mapped to the default key.
        (
            vec![p, ("key_scope_keys", r#"{"a": "APP-kek"}"#)],
            "key_scope_keys",
        ),
        // The same value twice (serde_json alone keeps the last).
        (
            vec![
                p,
                ("key_scope_keys", r#"{"a": "tenant-a", "a": "tenant-b"}"#),
            ],
            "key_scope_keys",
        ),
    ] {
        assert_eq!(refused(&extra), name, "{extra:?}");
    }
    // A mapped value whose rule-made name is its own mapped key is fine.
    let s = scopes(&[
        p,
        ("key_scope_keys", r#"{"b": "t-b"}"#),
        ("key_scope_key_rule", "t-{value}"),
    ]);
    assert_eq!(s.key_for("b").unwrap().as_deref(), Some("t-b"));
    assert_eq!(s.key_for("c").unwrap().as_deref(), Some("t-c"));
    assert!(s.rule_made("t-c") && !s.rule_made("t-b") && !s.rule_made("app-kek"));
    // The last guard: a rule-made name that is a mapped key or the default
    // key (in any case) is refused even if the load checks were bypassed.
    let mut bad = s.clone();
    bad.mapped = vec![("a".into(), "T-X".into())];
    assert_eq!(bad.key_for("x"), Err(RuleCollision));
    bad.mapped.clear();
    bad.default_key = "t-y".into();
    assert_eq!(bad.key_for("y"), Err(RuleCollision));
    assert_eq!(bad.key_for("z").unwrap().as_deref(), Some("t-z"));
}
