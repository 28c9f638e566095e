//! Tests of key scopes on the write path: grouping by key, and sealing each
//! group under its own data key.

use super::*;
use crate::envelope::{self, Dek};

fn scoped(extra: &[(&'static str, &'static str)]) -> Config {
    let mut m: std::collections::HashMap<&str, &str> = std::collections::HashMap::from([
        ("cosmos_endpoint", "http://127.0.0.1:8081"),
        ("cosmos_database", "db"),
        ("cosmos_container", "events"),
        ("cosmos_key", "c2VjcmV0"),
        ("hsm_key_name", "app-kek"),
        ("hsm_endpoint", "https://contoso.managedhsm.azure.net"),
        ("identity", "client-secret"),
        ("azure_tenant_id", "t"),
        ("azure_client_id", "c"),
        ("azure_client_secret", "s"),
        ("key_scope_pointer", "/data/tenant"),
        ("key_scope_keys", r#"{"a": "tenant-a", "b": "tenant-b"}"#),
    ]);
    for (k, v) in extra {
        m.insert(k, v);
    }
    Config::load(|name| Ok(m.get(name).map(|v| v.to_string()))).unwrap()
}

fn tenant_event(id: &str, topic: &str, tenant: Value) -> Value {
    let mut e = event_in(id, topic);
    e["data"] = json!({"tenant": tenant, "secret": format!("s-{id}")});
    e
}

#[test]
fn documents_group_by_their_scopes_key_in_first_seen_order() {
    let c = scoped(&[]);
    let kek = c.kek.as_ref().unwrap();
    let w = writes(vec![
        tenant_event("1", "/t", json!("b")),
        tenant_event("2", "/t", json!("a")),
        tenant_event("3", "/u", json!("b")),
    ]);
    let groups = key_groups(&w.documents, kek).unwrap();
    assert_eq!(
        groups,
        [
            KeyGroup {
                key_name: "tenant-b".into(),
                documents: vec![0, 2]
            },
            KeyGroup {
                key_name: "tenant-a".into(),
                documents: vec![1]
            },
        ]
    );
    // Without scopes: one group under hsm_key_name.
    let mut plain = kek.clone();
    plain.scopes = None;
    let groups = key_groups(&w.documents, &plain).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].key_name.as_str(), groups[0].documents.len()),
        ("app-kek", 3)
    );
}

#[test]
fn an_unknown_or_missing_scope_is_refused_or_defaulted_as_configured() {
    let refuse = scoped(&[]);
    let default = scoped(&[("key_scope_unknown", "default")]);
    for (value, code) in [
        (json!("secret-unknown-tenant"), "KeyScopeUnknown"),
        (Value::Null, "KeyScopeMissing"),
    ] {
        let w = writes(vec![
            tenant_event("1", "/t", json!("a")),
            tenant_event("2", "/t", value.clone()),
        ]);
        let e = key_groups(&w.documents, refuse.kek.as_ref().unwrap()).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, code), "{value}");
        // The answer (and so the log) names the event and the pointer, not the value.
        assert!(e.message.contains("`2`") && e.message.contains("/data/tenant"));
        assert!(!e.message.contains("secret-unknown-tenant"));
        let g = key_groups(&w.documents, default.kek.as_ref().unwrap()).unwrap();
        assert_eq!(g[1].key_name, "app-kek");
        assert_eq!(g[1].documents, [1]);
    }
}

#[test]
fn a_scope_value_that_is_not_a_string_is_refused_even_with_a_default() {
    // `"a"` is mapped; `7`, `true`, `["a"]` are not strings: sealing them
    // under the default key would put them outside any scope's erasure.
    let with_seven = scoped(&[("key_scope_keys", r#"{"a": "tenant-a", "7": "tenant-7"}"#)]);
    let default = scoped(&[
        ("key_scope_keys", r#"{"a": "tenant-a", "7": "tenant-7"}"#),
        ("key_scope_unknown", "default"),
    ]);
    for (value, kind) in [
        (json!(7), "number"),
        (json!(true), "boolean"),
        (json!(["a"]), "array"),
        (json!({"a": 1}), "object"),
    ] {
        let w = writes(vec![
            tenant_event("1", "/t", json!("a")),
            tenant_event("2", "/t", value.clone()),
        ]);
        for c in [&with_seven, &default] {
            let e = key_groups(&w.documents, c.kek.as_ref().unwrap()).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (400, "KeyScopeNotString"),
                "{value}"
            );
            assert!(e.message.contains("`2`") && e.message.contains("/data/tenant"));
            assert!(
                e.message.contains(&format!("a JSON {kind}")),
                "{}",
                e.message
            );
        }
    }
}

#[test]
fn a_mixed_delivery_seals_each_scope_under_its_own_data_key_in_one_batch() {
    let c = scoped(&[]);
    let kek = c.kek.as_ref().unwrap();
    let w = writes(vec![
        tenant_event("1", "/t", json!("a")),
        tenant_event("2", "/t", json!("b")),
        tenant_event("3", "/t", json!("a")),
    ]);
    let groups = key_groups(&w.documents, kek).unwrap();
    let (dek_a, dek_b) = (
        Dek::from_bytes(&[1; 32]).unwrap(),
        Dek::from_bytes(&[2; 32]).unwrap(),
    );
    let kid_a = "https://contoso.managedhsm.azure.net/keys/tenant-a/v1";
    let kid_b = "https://contoso.managedhsm.azure.net/keys/tenant-b/v7";
    let key = |g: &KeyGroup| {
        if g.key_name == "tenant-a" {
            GroupKey::Data(DeliveryKey {
                dek: &dek_a,
                kid: kid_a,
                wrapped_dek: b"wa",
            })
        } else {
            GroupKey::Data(DeliveryKey {
                dek: &dek_b,
                kid: kid_b,
                wrapped_dek: b"wb",
            })
        }
    };
    let keyed: Vec<(&[usize], GroupKey<'_>)> =
        groups.iter().map(|g| (&g.documents[..], key(g))).collect();
    let mut n = 0u8;
    let mut nonce = || {
        n += 1;
        [n; 12]
    };
    let sealed = seal_groups(
        w.documents.clone(),
        protected_pointers(&w.documents, &protected(r#"{"*": ["/data/secret"]}"#)).unwrap(),
        &keyed,
        &mut nonce,
        &c,
        &cred(),
        UnixTime(0),
    )
    .unwrap();
    // One partition key: still one transactional batch for the three.
    assert_eq!(sealed.units.len(), 1);
    assert!(sealed.units[0].batch);
    for (d, (kid, dek, other)) in sealed.documents.iter().zip([
        (kid_a, &dek_a, &dek_b),
        (kid_b, &dek_b, &dek_a),
        (kid_a, &dek_a, &dek_b),
    ]) {
        assert_eq!(d.body["cmk"]["kid"], kid);
        let id = d.body["event"]["id"].as_str().unwrap();
        assert_eq!(
            envelope::open(&d.body, dek, None).unwrap()["event"]["data"]["secret"],
            format!("s-{id}")
        );
        // Another scope's data key opens nothing of it.
        assert!(envelope::open(&d.body, other, None).is_err());
    }
    // A document in no group, or in two, is never written.
    let w = writes(vec![tenant_event("1", "/t", json!("a"))]);
    let none: Vec<(&[usize], GroupKey<'_>)> = vec![];
    assert_eq!(
        seal_groups(
            w.documents.clone(),
            protected_pointers(&w.documents, &protected("{}")).unwrap(),
            &none,
            &mut nonce,
            &c,
            &cred(),
            UnixTime(0)
        )
        .unwrap_err()
        .code,
        "SealFailed"
    );
    // A group that protects nothing carries its key's version, no data key.
    let w = writes(vec![tenant_event("1", "/t", json!("b"))]);
    let nothing: Vec<(&[usize], GroupKey<'_>)> = vec![(&[0], GroupKey::Nothing { kid: kid_b })];
    let s = seal_groups(
        w.documents.clone(),
        protected_pointers(&w.documents, &protected(r#"{"*": []}"#)).unwrap(),
        &nothing,
        &mut nonce,
        &c,
        &cred(),
        UnixTime(0),
    )
    .unwrap();
    assert_eq!(s.documents[0].body["cmk"]["kid"], kid_b);
    assert!(s.documents[0].body["cmk"].get("dek").is_none());
}

#[test]
fn a_delivery_may_name_a_bounded_number_of_rule_made_keys() {
    let c = scoped(&[("key_scope_key_rule", "t-{value}")]);
    let kek = c.kek.as_ref().unwrap();
    let at = |n: usize| {
        let mut events: Vec<Value> = (0..n)
            .map(|i| tenant_event(&format!("r{i}"), "/t", json!(format!("v{i}"))))
            .collect();
        // Mapped keys do not count, and repeated values add no key.
        events.push(tenant_event("m1", "/t", json!("a")));
        events.push(tenant_event("m2", "/t", json!("b")));
        events.push(tenant_event("again", "/t", json!("v0")));
        writes(events)
    };
    let ok = key_groups(&at(MAX_RULE_KEYS_PER_DELIVERY).documents, kek).unwrap();
    assert_eq!(ok.len(), MAX_RULE_KEYS_PER_DELIVERY + 2);
    let e = key_groups(&at(MAX_RULE_KEYS_PER_DELIVERY + 1).documents, kek).unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (400, "TooManyKeyScopes"));
}
