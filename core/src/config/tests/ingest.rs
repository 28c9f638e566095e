//! Tests of the inbound event settings.

use super::*;

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
        // A domain, or a name for many tenants: no token's `tid` is one.
        vec![
            ("ingest_entra_audiences", "api://a"),
            ("ingest_entra_tenant_id", "contoso.onmicrosoft.com"),
        ],
        vec![
            ("ingest_entra_audiences", "api://a"),
            ("ingest_entra_tenant_id", "organizations"),
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
    // The fallback is named when it is the one at fault: a domain is a
    // fine azure_tenant_id for the component's own tokens, not for
    // checking senders'.
    let e = load(&[
        ("ingest_entra_audiences", "api://a"),
        ("azure_tenant_id", "contoso.onmicrosoft.com"),
    ])
    .unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Invalid {
                name: "azure_tenant_id",
                ..
            }
        ),
        "{e:?}"
    );
    // An id in capitals is taken as tokens write it.
    let c = load(&[
        ("ingest_entra_audiences", "api://a"),
        (
            "ingest_entra_tenant_id",
            "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
        ),
    ])
    .unwrap();
    let tenant = c.ingest.entra.unwrap().policy.tenant;
    assert_eq!(tenant, "72f988bf-86f1-41af-91ab-2d7cd011db47");
}
