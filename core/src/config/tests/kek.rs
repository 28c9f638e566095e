//! Tests of field encryption: the stage and the protected fields.

use super::*;

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
