//! Tests of the Cosmos DB settings.

use super::*;

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
    // The Managed HSM's scope, however spelled, is never sent to Cosmos DB.
    for hsm in [
        "https://managedhsm.azure.net/.default",
        "HTTPS://ManagedHSM.azure.net//.default",
        "https://managedhsm.azure.net:443/.default",
    ] {
        over.push(("cosmos_token_scope", hsm));
        assert!(matches!(
            load(&over),
            Err(ConfigError::Invalid {
                name: "cosmos_token_scope",
                ..
            })
        ));
    }
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
