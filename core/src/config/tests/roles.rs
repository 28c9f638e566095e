//! Tests of read and maintenance access.

use super::*;

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
