//! Tests of the key-value store entry key.

use super::*;

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
