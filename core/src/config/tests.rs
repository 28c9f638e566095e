//! Known-answer and behaviour tests of [`super`] (`config`).

use super::*;
use std::collections::HashMap;

const KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut m: HashMap<&str, &str> = HashMap::from([
        ("cosmos_endpoint", "http://127.0.0.1:8081"),
        ("cosmos_database", "db"),
        ("cosmos_container", "events"),
        ("cosmos_key", KEY),
    ]);
    for (k, v) in pairs {
        m.insert(k, v);
    }
    Config::load(|name| Ok(m.get(name).map(|v| v.to_string())))
}

#[test]
fn the_kv_store_key_is_read_once_and_must_be_long_enough() {
    assert!(load(&[]).unwrap().kv_key.is_none());
    assert!(load(&[("kv_store_key", "  ")]).unwrap().kv_key.is_none());
    let e = load(&[("kv_store_key", "short-key-01234")]).unwrap_err();
    assert!(
        matches!(
            &e,
            ConfigError::Invalid {
                name: "kv_store_key",
                ..
            }
        ),
        "{e:?}"
    );
    let c = load(&[("kv_store_key", " kv-store-key-0123 ")]).unwrap();
    // Derived from the trimmed value: the same key as without spaces.
    let k = c.kv_key.expect("a key");
    let sealed = k.seal("n", b"v");
    let same = crate::kvseal::EntryKey::derive("kv-store-key-0123");
    assert_eq!(same.open("n", &sealed), Some(b"v".to_vec()));
}

#[test]
fn work_per_request_is_bounded() {
    let c = load(&[]).unwrap();
    assert_eq!(c.cosmos.max_concurrency, DEFAULT_MAX_CONCURRENCY);
    assert_eq!(c.ingest.body_read_timeout_secs, 20);
    assert!(!c.ingest.key_in_query);
    let c = load(&[
        ("cosmos_max_concurrency", "2"),
        ("body_read_timeout_secs", "3"),
        ("ingest_key_in_query", "allow"),
    ])
    .unwrap();
    assert_eq!(
        (c.cosmos.max_concurrency, c.ingest.body_read_timeout_secs),
        (2, 3)
    );
    assert!(c.ingest.key_in_query);
    for (name, bad) in [
        ("cosmos_max_concurrency", "0"),
        ("cosmos_max_concurrency", "257"),
        ("body_read_timeout_secs", "0"),
        ("ingest_key_in_query", "maybe"),
    ] {
        assert!(
            matches!(load(&[(name, bad)]), Err(ConfigError::Invalid { name: n, .. }) if n == name),
            "{name}={bad}"
        );
    }
}

#[test]
fn defaults_apply() {
    let c = load(&[]).unwrap();
    assert_eq!(c.cosmos.endpoint.origin(), "http://127.0.0.1:8081");
    assert_eq!(c.cosmos.container.container(), "events");
    assert!(matches!(
        c.cosmos.auth.static_credential(),
        Some(Credential::MasterKey(_))
    ));
    assert_eq!(c.cosmos.write_mode, WriteMode::Upsert);
    assert_eq!(c.ingest.partition_key, "/source");
    assert_eq!(c.ingest.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(c.ingest.max_events, DEFAULT_MAX_EVENTS);
    assert_eq!(c.cosmos.retry, RetryPolicy::default());
    let short = load(&[("cosmos_retry_budget_ms", "2500")])
        .unwrap()
        .cosmos
        .retry;
    assert_eq!((short.budget_ms, short.attempt_timeout_ms), (2500, 1250));
    assert!(load(&[("cosmos_retry_budget_ms", "60000")]).is_err());
}

#[test]
fn missing_and_invalid_values_are_named() {
    assert_eq!(
        load(&[("cosmos_endpoint", "")]).unwrap_err(),
        ConfigError::Missing("cosmos_endpoint")
    );
    assert!(matches!(
        load(&[("cosmos_endpoint", "nope")]),
        Err(ConfigError::Invalid {
            name: "cosmos_endpoint",
            ..
        })
    ));
    assert!(matches!(
        load(&[("cosmos_container", "a/b")]),
        Err(ConfigError::Invalid {
            name: "cosmos_container",
            ..
        })
    ));
    assert!(matches!(
        load(&[("cosmos_auth", "magic")]),
        Err(ConfigError::Invalid {
            name: "cosmos_auth",
            ..
        })
    ));
    assert!(matches!(
        load(&[("partition_key", "source")]),
        Err(ConfigError::Invalid {
            name: "partition_key",
            ..
        })
    ));
    assert!(matches!(
        load(&[("max_body_bytes", "0")]),
        Err(ConfigError::Invalid {
            name: "max_body_bytes",
            ..
        })
    ));
    assert!(matches!(
        load(&[("max_events_per_request", "x")]),
        Err(ConfigError::Invalid {
            name: "max_events_per_request",
            ..
        })
    ));
}

#[test]
fn a_bad_key_is_reported_without_its_value() {
    let err = load(&[("cosmos_key", "sekrit!!value")]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Invalid {
            name: "cosmos_key",
            ..
        }
    ));
    assert!(!err.to_string().contains("sekrit"));
}

#[test]
fn entra_delivery_is_off_until_an_audience_is_given_and_defaults_to_the_tenant() {
    assert!(load(&[]).unwrap().ingest.entra.is_none());
    let c = load(&[
        ("ingest_entra_audiences", "api://a, b "),
        ("azure_tenant_id", "t1"),
    ])
    .unwrap();
    assert!(c.warnings().is_empty());
    let e = c.ingest.entra.unwrap();
    assert_eq!(e.policy.audiences, ["api://a", "b"]);
    assert!(e.policy.app_ids.is_empty());
    assert_eq!(e.policy.tenant, "t1");
    assert_eq!(e.policy.issuers, crate::jwt::Policy::default_issuers("t1"));
    assert_eq!(e.policy.roles, [DEFAULT_SENDER_ROLE]);
    assert_eq!(
        e.jwks_url,
        "https://login.microsoftonline.com/t1/discovery/v2.0/keys"
    );
    let c = load(&[
        ("ingest_entra_audiences", "api://a"),
        ("azure_tenant_id", "t1"),
        ("ingest_entra_tenant_id", "t2"),
        (
            "ingest_entra_issuers",
            "https://login.microsoftonline.us/t2/v2.0",
        ),
        ("ingest_entra_roles", "-"),
        ("ingest_entra_app_ids", "eg-app-1, eg-app-2"),
        ("azure_authority_host", "https://login.microsoftonline.us"),
    ])
    .unwrap();
    // Roles disabled: valid, but said at load.
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("ingest_entra_roles")),
        "{:?}",
        c.warnings()
    );
    let e = c.ingest.entra.unwrap();
    assert_eq!(e.policy.app_ids, ["eg-app-1", "eg-app-2"]);
    assert_eq!(e.policy.tenant, "t2");
    assert_eq!(
        e.policy.issuers,
        ["https://login.microsoftonline.us/t2/v2.0"]
    );
    assert!(e.policy.roles.is_empty());
    assert_eq!(
        e.jwks_url,
        "https://login.microsoftonline.us/t2/discovery/v2.0/keys"
    );
    for bad in [
        vec![("ingest_entra_audiences", "api://a")],
        vec![
            ("ingest_entra_audiences", "api://a"),
            ("ingest_entra_tenant_id", "t/../x"),
        ],
    ] {
        assert!(matches!(
            load(&bad).unwrap_err(),
            ConfigError::Invalid {
                name: "ingest_entra_tenant_id",
                ..
            }
        ));
    }
}

#[test]
fn each_role_needs_its_own_key() {
    let k = "shared-key-0123456789";
    for pair in [
        [("read_keys", k), ("ingest_keys", k)],
        [("admin_keys", k), ("ingest_keys", k)],
        [("admin_keys", k), ("read_keys", k)],
    ] {
        assert!(matches!(
            load(&pair).unwrap_err(),
            ConfigError::Invalid {
                name: "read_keys" | "admin_keys",
                ..
            }
        ));
    }
    assert!(load(&[("read_keys", "reader-key-0123456789"), ("ingest_keys", k)]).is_ok());
    assert!(matches!(
        load(&[("read_accept_unsealed", "yes")]).unwrap_err(),
        ConfigError::Invalid {
            name: "read_accept_unsealed",
            ..
        }
    ));
    assert!(
        load(&[("read_accept_unsealed", "true")])
            .unwrap()
            .read
            .accept_unsealed
    );
}

#[test]
fn entra_auth_needs_no_key_and_derives_the_account_scope() {
    let entra = [
        ("cosmos_endpoint", "https://acct.documents.azure.com:443/"),
        ("cosmos_auth", "entra"),
        ("cosmos_key", ""),
        ("identity", "client-secret"),
        ("azure_tenant_id", "t"),
        ("azure_client_id", "c"),
        ("azure_client_secret", "s"),
    ];
    let c = load(&entra).unwrap();
    match &c.cosmos.auth {
        CosmosAuth::Entra { scope, identity } => {
            assert_eq!(scope, "https://acct.documents.azure.com/.default");
            assert_eq!(identity.provider.kind(), "client-secret");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.cosmos.auth.static_credential().is_none());
    let mut over = entra.to_vec();
    over.push(("cosmos_token_scope", "https://cosmos.azure.com/.default"));
    assert!(matches!(
        load(&over).unwrap().cosmos.auth,
        CosmosAuth::Entra { ref scope, .. } if scope == "https://cosmos.azure.com/.default"
    ));
    over.push(("cosmos_token_scope", "acct"));
    assert!(matches!(
        load(&over),
        Err(ConfigError::Invalid {
            name: "cosmos_token_scope",
            ..
        })
    ));
    // The identity must be complete for entra, as for the HSM.
    assert!(load(&entra[..5]).is_err());
    // A master key stays required for master-key.
    assert!(matches!(
        load(&[("cosmos_key", "")]),
        Err(ConfigError::Invalid {
            name: "cosmos_key",
            ..
        })
    ));
    let ep = |s: &str| cosmos_scope(&Endpoint::parse(s).unwrap());
    assert_eq!(ep("http://127.0.0.1:8081"), "http://127.0.0.1/.default");
    assert_eq!(
        ep("https://a.documents.azure.com"),
        "https://a.documents.azure.com/.default"
    );
}

#[test]
fn write_modes() {
    assert_eq!(
        load(&[("cosmos_write_mode", "create")])
            .unwrap()
            .cosmos
            .write_mode,
        WriteMode::Create
    );
    assert!(matches!(
        load(&[("cosmos_write_mode", "insert")]),
        Err(ConfigError::Invalid {
            name: "cosmos_write_mode",
            ..
        })
    ));
}

#[test]
fn read_keys_are_optional_and_checked() {
    assert!(load(&[]).unwrap().read.keys.is_none());
    assert!(load(&[("read_keys", "reader-key-0123456789")])
        .unwrap()
        .read
        .keys
        .is_some());
    let err = load(&[("read_keys", "weak")]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Invalid {
            name: "read_keys",
            ..
        }
    ));
    assert!(!err.to_string().contains("weak"));
}

#[test]
fn no_hsm_key_means_the_first_stage() {
    assert!(load(&[]).unwrap().kek.is_none());
}

#[test]
fn protected_fields_without_a_key_need_stage_one_chosen() {
    let fields = ("protected_fields", r#"{"*": ["/data/ssn"]}"#);
    let e = load(&[fields]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Invalid { name: "hsm_key_name", reason } if reason.contains("cmk_stage = 1")),
        "{e}"
    );
    assert!(load(&[fields, ("cmk_stage", "1")]).unwrap().kek.is_none());
    let hsm = [
        ("hsm_key_name", "app-kek"),
        ("hsm_endpoint", "https://contoso.managedhsm.azure.net"),
        ("azure_tenant_id", "t"),
        ("azure_client_id", "c"),
        ("azure_client_secret", "s"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = hsm.to_vec();
        all.extend_from_slice(extra);
        load(&all)
    };
    assert!(with(&[("cmk_stage", "2")]).unwrap().kek.is_some());
    assert!(with(&[]).unwrap().kek.is_some());
    let e = with(&[("cmk_stage", "1")]).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Invalid {
                name: "cmk_stage",
                ..
            }
        ),
        "{e}"
    );
    let e = load(&[("cmk_stage", "2")]).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Invalid {
                name: "hsm_key_name",
                ..
            }
        ),
        "{e}"
    );
    let e = load(&[("cmk_stage", "two")]).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Invalid {
                name: "cmk_stage",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn wildcards_and_escapes_in_protected_fields() {
    let p =
        ProtectedFields::parse(r#"{"*": ["/data/items/*/ssn", "/data/a~1b"]}"#, "/source").unwrap();
    assert_eq!(p.for_type("T")[0], "/data/items/*/ssn");
    for bad in [
        r#"{"*": ["/data/items/*/ssn", "/data/items/0"]}"#,
        r#"{"*": ["/data/items/0/ssn", "/data/items/*"]}"#,
        r#"{"*": ["/data/a~2b"]}"#,
        r#"{"*": ["/data/a~"]}"#,
        r#"{"*": ["/*"]}"#,
    ] {
        assert!(ProtectedFields::parse(bad, "/source").is_err(), "{bad}");
    }
    assert!(ProtectedFields::parse(r#"{"*": ["/data/*"]}"#, "/data/tenant").is_err());
    assert!(ProtectedFields::parse(r#"{"*": ["/data/x/*/y", "/data/z/*/y"]}"#, "/source").is_ok());
}

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

#[test]
fn protected_fields_by_type_with_a_default() {
    let p = ProtectedFields::parse(
        r#"{"Records.Updated": ["/data/ssn", "/subject"], "*": ["/data"]}"#,
        "/source",
    )
    .unwrap();
    // Binary payloads (data_base64) are protected whole wherever data is.
    assert_eq!(
        p.for_type("Records.Updated"),
        ["/data/ssn", "/subject", "/data_base64"]
    );
    assert_eq!(p.for_type("Other"), ["/data", "/data_base64"]);
    assert_eq!(
        ProtectedFields::parse("{}", "/source")
            .unwrap()
            .for_type("x"),
        ["/data", "/data_base64"]
    );
    let only_subject = ProtectedFields::parse(r#"{"*": ["/subject"]}"#, "/source").unwrap();
    assert_eq!(only_subject.for_type("x"), ["/subject"]);
}

#[test]
fn repeated_or_nested_pointers_are_refused() {
    // Either would seal a value twice or inside another sealed value,
    // and the record could not be opened again.
    for list in [
        r#"["/data/ssn", "/data/ssn"]"#,
        r#"["/data/ssn", "/data"]"#,
        r#"["/data", "/data/ssn"]"#,
        r#"["/data/a/b", "/subject", "/data/a"]"#,
    ] {
        let e = ProtectedFields::parse(&format!(r#"{{"T": {list}}}"#), "/source").unwrap_err();
        assert!(e.contains("overlap"), "{list}: {e}");
    }
    assert!(ProtectedFields::parse(r#"{"T": ["/data/a", "/data/ab"]}"#, "/source").is_ok());
}

#[test]
fn protecting_the_partition_key_or_identity_is_refused_at_start() {
    assert!(ProtectedFields::parse(r#"{"*": ["/data"]}"#, "/data/tenant").is_err());
    assert!(ProtectedFields::parse(r#"{"*": ["/data/tenant/name"]}"#, "/data/tenant").is_err());
    assert!(ProtectedFields::parse(r#"{"*": ["/subject"]}"#, "/subject").is_err());
    assert!(ProtectedFields::parse(r#"{"*": ["/data/tenantx"]}"#, "/data/tenant").is_ok());
    assert!(ProtectedFields::parse(r#"{"*": ["/id"]}"#, "/source").is_err());
    assert!(ProtectedFields::parse(r#"{"*": ["data"]}"#, "/source").is_err());
    assert!(ProtectedFields::parse(r#"["/data"]"#, "/source").is_err());
    let hsm = [
        ("hsm_key_name", "k"),
        ("hsm_endpoint", "https://h.managedhsm.azure.net"),
        ("partition_key", "/data/tenant"),
    ];
    let err = load(&hsm).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                name: "protected_fields",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn lookup_failures_surface() {
    let err = Config::load(|_| Err("provider down".into())).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Unreadable {
            name: "cosmos_endpoint",
            ..
        }
    ));
}
