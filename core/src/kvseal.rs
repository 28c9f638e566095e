//! Entries of the Spin key-value store, bound to this deployment: each value
//! is stored with an HMAC-SHA256 over its key name and bytes, under a key
//! derived from the secret variable `kv_store_key`. A writer of the store
//! without that secret cannot add a signing-key set (to forge sender
//! tokens), pin a key state as enabled, or plant a token; an entry moved
//! under another name does not verify either. An entry that does not verify
//! is treated as absent (the component fetches afresh). See
//! `docs/keys-and-identity.md` for what the store is trusted with.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a sealed entry.
const TAG: &[u8] = b"cmk-kv1:";
/// Length of the MAC in a sealed entry.
const MAC_LEN: usize = 32;

/// The entry key derived from the `kv_store_key` secret.
#[derive(Clone)]
pub struct EntryKey([u8; 32]);

impl std::fmt::Debug for EntryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntryKey(..)")
    }
}

impl EntryKey {
    /// Derives the entry key from the secret (HMAC-SHA256 with a fixed label,
    /// so the secret itself is never the MAC key).
    pub fn derive(secret: &str) -> Self {
        let mut m =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        m.update(b"cmk-ingest/kv-store/v1");
        Self(m.finalize().into_bytes().into())
    }

    fn mac(&self, name: &str, value: &[u8]) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(&(name.len() as u64).to_be_bytes());
        m.update(name.as_bytes());
        m.update(value);
        m
    }

    /// The stored form of `value` under `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG.len() + MAC_LEN + value.len());
        out.extend_from_slice(TAG);
        out.extend_from_slice(&self.mac(name, value).finalize().into_bytes());
        out.extend_from_slice(value);
        out
    }

    /// The value stored under `name`, if `stored` was sealed by this key
    /// under this name (compared in constant time); `None` otherwise.
    pub fn open(&self, name: &str, stored: &[u8]) -> Option<Vec<u8>> {
        let rest = stored.strip_prefix(TAG)?;
        if rest.len() < MAC_LEN {
            return None;
        }
        let (tag, value) = rest.split_at(MAC_LEN);
        self.mac(name, value).verify_slice(tag).ok()?;
        Some(value.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_open_only_under_their_key_and_name() {
        let k = EntryKey::derive("kv-store-key-0123456789abcdef");
        let sealed = k.seal("kek-state/v1/app-kek", b"{\"enabled\":true}");
        assert_eq!(
            k.open("kek-state/v1/app-kek", &sealed).as_deref(),
            Some(&b"{\"enabled\":true}"[..])
        );
        // Another name (an entry moved), another key, an edited value, a
        // plain value (written by someone without the secret): refused.
        assert_eq!(k.open("kek-state/v1/other", &sealed), None);
        assert_eq!(
            EntryKey::derive("another-secret-0123456789").open("kek-state/v1/app-kek", &sealed),
            None
        );
        let mut edited = sealed.clone();
        *edited.last_mut().unwrap() ^= 1;
        assert_eq!(k.open("kek-state/v1/app-kek", &edited), None);
        assert_eq!(k.open("kek-state/v1/app-kek", b"{\"enabled\":true}"), None);
        assert_eq!(k.open("kek-state/v1/app-kek", b"cmk-kv1:short"), None);
        assert!(!format!("{k:?}").contains("kv-store-key"));
    }
}
