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
