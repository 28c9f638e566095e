//! Tests of picking the token source.

use super::*;

#[test]
fn identity_is_picked_in_the_documented_order() {
    let hsm = [
        ("hsm_key_name", "app-kek"),
        ("hsm_endpoint", "https://contoso.managedhsm.azure.net"),
    ];
    let kind = |extra: &[(&str, &str)]| {
        let mut all = hsm.to_vec();
        all.extend_from_slice(extra);
        load(&all).map(|c| c.kek.unwrap().identity.provider.kind())
    };
    let ids = [("azure_tenant_id", "t"), ("azure_client_id", "c")];
    assert_eq!(kind(&[]).unwrap(), "managed-identity-imds");
    assert_eq!(
        kind(&[("identity_header", "h")]).unwrap(),
        "managed-identity-app-service"
    );
    assert_eq!(
        kind(&[ids[0], ids[1], ("azure_client_secret", "s")]).unwrap(),
        "client-secret"
    );
    assert_eq!(
        kind(&[
            ids[0],
            ids[1],
            ("azure_client_secret", "s"),
            ("azure_federated_token", "eyJ")
        ])
        .unwrap(),
        "workload-identity"
    );
    assert!(kind(&[("identity", "client-secret"), ids[0], ids[1]]).is_err());
    assert!(kind(&[("identity", "workload-identity"), ids[0], ids[1]]).is_err());
    assert!(kind(&[("identity", "magic")]).is_err());
    let c = load(&hsm).unwrap().kek.unwrap();
    assert!(!c.local_wrap, "local wrapping is off by default");
    let with = |v: &str| {
        let mut all = hsm.to_vec();
        all.push(("hsm_local_wrap", v));
        load(&all).map(|c| c.kek.unwrap().local_wrap)
    };
    assert!(with("true").unwrap());
    assert!(!with("false").unwrap());
    assert!(matches!(
        with("yes"),
        Err(ConfigError::Invalid {
            name: "hsm_local_wrap",
            ..
        })
    ));
    assert_eq!(
        (
            c.key_name.as_str(),
            c.check_secs,
            c.identity.refresh_skew_secs
        ),
        ("app-kek", 30, 300)
    );
    assert!(
        load(&[("hsm_key_name", "app-kek")]).is_err(),
        "endpoint required"
    );
    assert!(load(&[("hsm_key_name", "bad/name"), hsm[1]]).is_err());
}

/// The variables one load reads, in order, with `pairs` set.
fn reads(pairs: &[(&str, &str)]) -> Vec<&'static str> {
    let m: HashMap<&str, &str> = pairs.iter().copied().collect();
    let seen = std::cell::RefCell::new(Vec::new());
    Config::load(|name| {
        seen.borrow_mut().push(name);
        Ok(m.get(name).map(|v| v.to_string()))
    })
    .unwrap();
    seen.into_inner()
}

#[test]
fn a_named_source_reads_only_its_own_variables_and_each_once() {
    let base = [
        ("cosmos_endpoint", "http://127.0.0.1:8081"),
        ("cosmos_database", "db"),
        ("cosmos_container", "events"),
        ("cosmos_key", KEY),
        ("hsm_key_name", "app-kek"),
        ("hsm_endpoint", "https://contoso.managedhsm.azure.net"),
        ("azure_tenant_id", "t"),
        ("azure_client_id", "c"),
        ("ingest_entra_audiences", "api://x"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        reads(&all)
    };
    for (named, absent) in [
        (
            [("identity", "client-secret"), ("azure_client_secret", "s")],
            &[
                "azure_federated_token",
                "identity_header",
                "managed_identity_endpoint",
            ][..],
        ),
        (
            [
                ("identity", "workload-identity"),
                ("azure_federated_token", "eyJ"),
            ],
            &[
                "azure_client_secret",
                "identity_header",
                "managed_identity_endpoint",
            ][..],
        ),
        (
            [("identity", "managed-identity"), ("identity_header", "h")],
            &["azure_client_secret", "azure_federated_token"][..],
        ),
    ] {
        let r = with(&named);
        for &a in absent {
            assert!(!r.contains(&a), "{named:?} read {a}");
        }
        let mut unique = r.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), r.len(), "a variable read twice: {r:?}");
    }
    // `auto` still reads what it needs to decide, and picks as before.
    let r = with(&[("azure_client_secret", "s")]);
    assert!(r.contains(&"azure_federated_token") && r.contains(&"azure_client_secret"));
    assert!(!r.contains(&"identity_header"), "{r:?}");
}
