//! Entries of the Spin key-value store, bound to this deployment: each value
//! is stored with an HMAC-SHA256 over its key name and bytes, under a key
//! derived from the secret variable `kv_store_key`. A writer of the store
//! without that secret cannot add a signing-key set (to forge sender
//! tokens), pin a key state as enabled, or plant a token; an entry moved
//! under another name does not verify either. An entry that does not verify
//! is treated as absent (the component fetches afresh).
//!
//! Secrets (the cached access tokens) are encrypted as well
//! ([`EntryKey::seal_secret`]): AES-256-GCM under a second key derived from
//! the same secret, with the entry's name as associated data, so a reader of
//! the store learns nothing of them and an entry moved under another name
//! does not open. An entry that keeps a public part and a secret together
//! (a key's checked state and the HSM token,
//! [`EntryKey::seal_with_secret`]) is one AES-256-GCM message: the public
//! part associated data (authenticated, readable), the secret encrypted.
//! See `docs/keys-and-identity.md` for what the store is trusted with.

use crate::envelope::gcm::Gcm;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of a sealed entry.
const TAG: &[u8] = b"cmk-kv1:";
/// Length of the MAC in a sealed entry.
const MAC_LEN: usize = 32;
/// The prefix of an encrypted entry.
const SECRET_TAG: &[u8] = b"cmk-kv2:";
/// Length of an encrypted entry's nonce (AES-GCM's 96 bits).
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag.
const GCM_TAG_LEN: usize = 16;
/// The prefix of an entry with a public part and a secret.
const SPLIT_TAG: &[u8] = b"cmk-kv3:";
/// Length of the public part's length in such an entry (u32, big-endian).
const PUBLIC_LEN_LEN: usize = 4;

/// The entry keys derived from the `kv_store_key` secret: one for the MAC of
/// plain entries, one for the encryption of secret ones.
#[derive(Clone)]
pub struct EntryKey {
    mac: Zeroizing<[u8; 32]>,
    enc: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for EntryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntryKey(..)")
    }
}

impl EntryKey {
    /// Derives the entry keys from the secret (HMAC-SHA256 of a fixed label
    /// each, so the secret itself is never a key, and neither key is usable
    /// as the other).
    pub fn derive(secret: &str) -> Self {
        // Keyed once: each HMAC key set-up costs two SHA-256 compressions,
        // a quarter of the derivation, paid on every request.
        let keyed =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        let sub = |label: &[u8]| {
            let mut m = keyed.clone();
            m.update(label);
            Zeroizing::new(<[u8; 32]>::from(m.finalize().into_bytes()))
        };
        Self {
            mac: sub(b"cmk-ingest/kv-store/v1"),
            enc: sub(b"cmk-ingest/kv-store/secret/v1"),
        }
    }

    fn mac(&self, name: &str, value: &[u8]) -> Hmac<Sha256> {
        let mut m =
            Hmac::<Sha256>::new_from_slice(&self.mac[..]).expect("HMAC takes any key length");
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

    /// The associated data of an encrypted entry: the format prefix and the
    /// entry's name (length-prefixed), so the ciphertext opens only under
    /// the name it was stored under.
    fn secret_aad(name: &str) -> Vec<u8> {
        Self::aad_of(SECRET_TAG, name)
    }

    /// `tag` and the entry's name (length-prefixed).
    fn aad_of(tag: &[u8], name: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(tag.len() + 8 + name.len());
        aad.extend_from_slice(tag);
        aad.extend_from_slice(&(name.len() as u64).to_be_bytes());
        aad.extend_from_slice(name.as_bytes());
        aad
    }

    /// The encryption key made ready (key schedule and hash key): the
    /// component's AES-256-GCM, on vector AES inside Wasm, where the
    /// `aes-gcm` crate's software AES costs about three times the
    /// instructions a block; every remote-wrap delivery opens its cached
    /// access token this way.
    fn cipher(&self) -> Gcm {
        Gcm::new(&self.enc)
    }

    /// The stored form of the secret `value` under `name`: the prefix
    /// `cmk-kv2:`, the nonce, then AES-256-GCM ciphertext and tag. `nonce`
    /// must be fresh and random for each call (the caller draws it from the
    /// host, so this stays a pure function).
    pub fn seal_secret(&self, name: &str, value: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let cipher = self.cipher();
        let aad = cipher.aad_head(&Self::secret_aad(name));
        let mut out = Vec::with_capacity(SECRET_TAG.len() + NONCE_LEN + value.len() + GCM_TAG_LEN);
        out.extend_from_slice(SECRET_TAG);
        out.extend_from_slice(&nonce);
        cipher.seal_into(&nonce, &aad, b"", value, &mut out);
        out
    }

    /// The secret stored under `name`, if `stored` was encrypted by this key
    /// under this name; `None` otherwise (edited, moved, written without the
    /// secret, or a plain or MAC-only entry: a secret is never read from an
    /// entry that was not encrypted).
    pub fn open_secret(&self, name: &str, stored: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let rest = stored.strip_prefix(SECRET_TAG)?;
        if rest.len() < NONCE_LEN + GCM_TAG_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce's length");
        let cipher = self.cipher();
        let aad = cipher.aad_head(&Self::secret_aad(name));
        let mut out = Zeroizing::new(Vec::with_capacity(sealed.len() - GCM_TAG_LEN));
        cipher
            .open_into(nonce, &aad, b"", sealed, &mut out)
            .then_some(out)
    }

    /// The stored form of `public` and the secret `secret` together under
    /// `name`: the prefix `cmk-kv3:`, the nonce, the length of `public`
    /// (u32, big-endian) and `public` itself, then the AES-256-GCM
    /// ciphertext of `secret` and the tag, with the associated data
    /// `cmk-kv3:` ‖ u64 big-endian name length ‖ name ‖ `public`. So the
    /// public part is readable and authenticated (an edit, or another split
    /// of the same bytes, does not open: the tag covers the associated
    /// data's length), and costs a hash of its blocks, not a MAC and a
    /// cipher. `secret` may be empty. `nonce` as for
    /// [`Self::seal_secret`]. `None` if `public` is 4 GiB or longer.
    pub fn seal_with_secret(
        &self,
        name: &str,
        public: &[u8],
        secret: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Option<Vec<u8>> {
        let public_len = u32::try_from(public.len()).ok()?;
        let cipher = self.cipher();
        let aad = cipher.aad_head(&Self::aad_of(SPLIT_TAG, name));
        let mut out = Vec::with_capacity(
            SPLIT_TAG.len()
                + NONCE_LEN
                + PUBLIC_LEN_LEN
                + public.len()
                + secret.len()
                + GCM_TAG_LEN,
        );
        out.extend_from_slice(SPLIT_TAG);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&public_len.to_be_bytes());
        out.extend_from_slice(public);
        cipher.seal_into(&nonce, &aad, public, secret, &mut out);
        Some(out)
    }

    /// The public part and the secret stored under `name` by
    /// [`Self::seal_with_secret`], if `stored` was sealed by this key under
    /// this name and neither part changed; `None` otherwise (and for every
    /// other kind of entry).
    pub fn open_with_secret(
        &self,
        name: &str,
        stored: &[u8],
    ) -> Option<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        let rest = stored.strip_prefix(SPLIT_TAG)?;
        if rest.len() < NONCE_LEN + PUBLIC_LEN_LEN + GCM_TAG_LEN {
            return None;
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce's length");
        let (len, rest) = rest.split_at(PUBLIC_LEN_LEN);
        let len = u32::from_be_bytes(len.try_into().expect("split at the length's length"));
        // Checked: a length near 4 GiB must not wrap on wasm32.
        let len = usize::try_from(len).ok()?;
        if rest.len().checked_sub(GCM_TAG_LEN)? < len {
            return None;
        }
        let (public, sealed) = rest.split_at(len);
        let cipher = self.cipher();
        let aad = cipher.aad_head(&Self::aad_of(SPLIT_TAG, name));
        let mut secret = Zeroizing::new(Vec::with_capacity(sealed.len() - GCM_TAG_LEN));
        cipher
            .open_into(nonce, &aad, public, sealed, &mut secret)
            .then(|| (public.to_vec(), secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_open_only_under_their_key_and_name() {
        let k = EntryKey::derive("kv-store-key-0123456789abcdef");
        let sealed = k.seal("kek-state/v2/app-kek", b"{\"enabled\":true}");
        assert_eq!(
            k.open("kek-state/v2/app-kek", &sealed).as_deref(),
            Some(&b"{\"enabled\":true}"[..])
        );
        // Another name (an entry moved), another key, an edited value, a
        // plain value (written by someone without the secret): refused.
        assert_eq!(k.open("kek-state/v2/other", &sealed), None);
        assert_eq!(
            EntryKey::derive("another-secret-0123456789").open("kek-state/v2/app-kek", &sealed),
            None
        );
        let mut edited = sealed.clone();
        *edited.last_mut().unwrap() ^= 1;
        assert_eq!(k.open("kek-state/v2/app-kek", &edited), None);
        assert_eq!(k.open("kek-state/v2/app-kek", b"{\"enabled\":true}"), None);
        assert_eq!(k.open("kek-state/v2/app-kek", b"cmk-kv1:short"), None);
        assert!(!format!("{k:?}").contains("kv-store-key"));
    }

    #[test]
    fn a_byte_moved_from_the_value_to_the_name_does_not_verify() {
        // Without the name's length in the MAC, `name ‖ value` would read
        // the same with the value's first byte moved to the end of the name,
        // and the entry would verify under that other name.
        let k = key();
        let (name, value) = ("kek-state/v2/app-kek", &b"{\"enabled\":true}"[..]);
        let sealed = k.seal(name, value);
        let mac = &sealed[TAG.len()..TAG.len() + MAC_LEN];
        let mut forged = TAG.to_vec();
        forged.extend_from_slice(mac);
        forged.extend_from_slice(&value[1..]);
        let moved = format!("{name}{}", std::str::from_utf8(&value[..1]).unwrap());
        assert_eq!(k.open(&moved, &forged), None);
        // The same split the other way: a name byte moved into the value.
        let mut forged = TAG.to_vec();
        forged.extend_from_slice(mac);
        forged.extend_from_slice(&name.as_bytes()[name.len() - 1..]);
        forged.extend_from_slice(value);
        assert_eq!(k.open(&name[..name.len() - 1], &forged), None);
    }

    const NAME: &str = "entra-token/v1/client-secret/https://h.managedhsm.azure.net/.default";
    const TOKEN: &[u8] =
        br#"{"token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-part","expires_on":1800000000}"#;

    fn key() -> EntryKey {
        EntryKey::derive("kv-store-key-0123456789abcdef")
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn secrets_are_encrypted_and_open_under_their_key_and_name() {
        let k = key();
        let sealed = k.seal_secret(NAME, TOKEN, [7; NONCE_LEN]);
        assert!(sealed.starts_with(b"cmk-kv2:"));
        assert_eq!(sealed.len(), 8 + NONCE_LEN + TOKEN.len() + GCM_TAG_LEN);
        // Nothing of the token shows in the stored bytes.
        assert!(!contains(&sealed, b"secret-part"));
        assert!(!contains(&sealed, b"eyJ0eXAi"));
        assert_eq!(
            k.open_secret(NAME, &sealed).as_deref().map(|v| &v[..]),
            Some(TOKEN)
        );
        // Another nonce, another ciphertext; both open.
        let again = k.seal_secret(NAME, TOKEN, [8; NONCE_LEN]);
        assert_ne!(sealed, again);
        assert_eq!(
            k.open_secret(NAME, &again).as_deref().map(|v| &v[..]),
            Some(TOKEN)
        );
    }

    #[test]
    fn the_encrypted_form_matches_an_independent_implementation() {
        // Computed with Python's `hmac` and `cryptography` (AESGCM): the
        // key is HMAC-SHA256(secret, "cmk-ingest/kv-store/secret/v1"), the
        // associated data "cmk-kv2:" || u64 big-endian name length || name.
        const CT: &str = "c60ad409a1a6b5a27f610df0be55806768cf1445ad81f1112d2b649c7ea995b5\
                          2ad1f5b3d62169e91cc206727c27ef318a075ac57746f96fe4f6eeea4c5d44de\
                          8e76c7ab07d4bda3e948a92671c68b976ef809dd2c0f2977175371318673b7a5\
                          427a664b";
        let sealed = key().seal_secret(NAME, TOKEN, [7; NONCE_LEN]);
        let hex: String = sealed[8 + NONCE_LEN..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            &sealed[..8 + NONCE_LEN],
            b"cmk-kv2:\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07"
        );
        assert_eq!(hex, CT);
    }

    #[test]
    fn an_entry_of_the_independent_implementation_opens() {
        // The known answer above, as stored: entries written before
        // (by the `aes-gcm` crate) and by any other AES-GCM open.
        let hex = "c60ad409a1a6b5a27f610df0be55806768cf1445ad81f1112d2b649c7ea995b5\
                   2ad1f5b3d62169e91cc206727c27ef318a075ac57746f96fe4f6eeea4c5d44de\
                   8e76c7ab07d4bda3e948a92671c68b976ef809dd2c0f2977175371318673b7a5\
                   427a664b";
        let mut stored = b"cmk-kv2:".to_vec();
        stored.extend_from_slice(&[7; NONCE_LEN]);
        stored.extend(
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()),
        );
        assert_eq!(
            key().open_secret(NAME, &stored).as_deref().map(|v| &v[..]),
            Some(TOKEN)
        );
    }

    #[test]
    fn a_tampered_secret_does_not_open() {
        let k = key();
        let sealed = k.seal_secret(NAME, TOKEN, [7; NONCE_LEN]);
        // Every single bit flipped, anywhere (prefix, nonce, ciphertext, tag).
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut t = sealed.clone();
                t[i] ^= 1 << bit;
                assert!(k.open_secret(NAME, &t).is_none(), "byte {i} bit {bit}");
            }
        }
        // Cut short, extended, emptied.
        assert!(k.open_secret(NAME, &sealed[..sealed.len() - 1]).is_none());
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(k.open_secret(NAME, &longer).is_none());
        assert!(k.open_secret(NAME, b"cmk-kv2:").is_none());
        assert!(k
            .open_secret(NAME, &sealed[..8 + NONCE_LEN + GCM_TAG_LEN - 1])
            .is_none());
    }

    #[test]
    fn a_secret_does_not_open_under_another_key() {
        let sealed = key().seal_secret(NAME, TOKEN, [7; NONCE_LEN]);
        assert!(EntryKey::derive("another-secret-0123456789")
            .open_secret(NAME, &sealed)
            .is_none());
        // Nor is the MAC key the encryption key: the two are derived apart.
        let k = key();
        assert_ne!(&k.mac[..], &k.enc[..]);
    }

    #[test]
    fn a_secret_does_not_open_under_another_name() {
        let k = key();
        let hsm = k.seal_secret(NAME, TOKEN, [7; NONCE_LEN]);
        let cosmos_name = "entra-token/v1/client-secret/https://acct.documents.azure.com/.default";
        let cosmos = k.seal_secret(cosmos_name, b"{\"token\":\"other\"}", [9; NONCE_LEN]);
        // Swapped: each entry written under the other's name.
        assert!(k.open_secret(cosmos_name, &hsm).is_none());
        assert!(k.open_secret(NAME, &cosmos).is_none());
        // A name that is a prefix of the other (the length is bound too).
        assert!(k.open_secret(&NAME[..NAME.len() - 1], &hsm).is_none());
    }

    #[test]
    fn a_secret_is_never_read_from_a_plain_or_mac_only_entry() {
        let k = key();
        // An entry from before encryption (MAC only), or a plain one: both
        // read as absent, so the token is fetched afresh and stored encrypted.
        assert!(k.open_secret(NAME, &k.seal(NAME, TOKEN)).is_none());
        assert!(k.open_secret(NAME, TOKEN).is_none());
        // And an encrypted entry is no MAC-bound plain one.
        assert!(k
            .open(NAME, &k.seal_secret(NAME, TOKEN, [7; NONCE_LEN]))
            .is_none());
    }

    const STATE_NAME: &str = "kek-state/v3/app-kek";
    const STATE: &[u8] = br#"{"checked_at":1800000000,"key":{"enabled":true}}"#;
    const HELD: &[u8] = br#"{"identity":"entra-token/v2/x","token":{"token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-part","expires_on":1800000000}}"#;

    fn split(k: &EntryKey, secret: &[u8]) -> Vec<u8> {
        k.seal_with_secret(STATE_NAME, STATE, secret, [7; NONCE_LEN])
            .unwrap()
    }

    fn opened(k: &EntryKey, name: &str, stored: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        k.open_with_secret(name, stored)
            .map(|(p, s)| (p, s.to_vec()))
    }

    #[test]
    fn a_public_part_and_a_secret_open_together_the_public_part_readable() {
        let k = key();
        let sealed = split(&k, HELD);
        assert!(sealed.starts_with(b"cmk-kv3:"));
        assert_eq!(
            sealed.len(),
            8 + NONCE_LEN + 4 + STATE.len() + HELD.len() + GCM_TAG_LEN
        );
        // The state is readable; nothing of the token shows.
        assert!(contains(&sealed, STATE));
        assert!(!contains(&sealed, b"secret-part") && !contains(&sealed, b"eyJ0eXAi"));
        assert_eq!(
            opened(&k, STATE_NAME, &sealed),
            Some((STATE.to_vec(), HELD.to_vec()))
        );
        // An empty secret: the public part alone, authenticated.
        let alone = split(&k, b"");
        assert_eq!(
            opened(&k, STATE_NAME, &alone),
            Some((STATE.to_vec(), Vec::new()))
        );
    }

    #[test]
    fn the_split_form_matches_an_independent_implementation() {
        // Computed with Python's `hmac` and `cryptography` (AESGCM): the
        // secret entries' key, nonce 07 × 12, associated data "cmk-kv3:" ‖
        // u64 big-endian name length ‖ name ‖ the public part.
        const CT: &str = "c60ac902afadafe9313a4ab3d6008b4b5bc7765888a1c24e53341af04ce3dbd0\
                          3dd7d1bff25006e8778727705370e378cd0151ea330ed14fffcda58c256e0dff\
                          8e48e19230d994e2ba36f85c12a3c1ee6f8650ea3df6e93168f4a6856408e6e3\
                          ec33795651e3bb14daa77776df2f18c4e57eb6f394b31a76542aa9566ab390cf\
                          6ee1472d6849c949cc8c405c";
        let sealed = split(&key(), HELD);
        let head = 8 + NONCE_LEN + 4 + STATE.len();
        assert_eq!(
            &sealed[..8 + NONCE_LEN],
            b"cmk-kv3:\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07"
        );
        assert_eq!(
            &sealed[8 + NONCE_LEN..head - STATE.len()],
            &(STATE.len() as u32).to_be_bytes()
        );
        let hex: String = sealed[head..].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, CT);
    }

    #[test]
    fn a_split_entry_changed_anywhere_or_moved_does_not_open() {
        let k = key();
        let sealed = split(&k, HELD);
        // Every byte after the prefix, changed.
        for i in 8..sealed.len() {
            let mut edited = sealed.clone();
            edited[i] ^= 1;
            assert!(
                k.open_with_secret(STATE_NAME, &edited).is_none(),
                "byte {i}"
            );
        }
        // Another split of the same bytes: the public part one byte longer
        // or shorter.
        for len in [STATE.len() - 1, STATE.len() + 1] {
            let mut resplit = sealed.clone();
            resplit[8 + NONCE_LEN..8 + NONCE_LEN + 4].copy_from_slice(&(len as u32).to_be_bytes());
            assert!(k.open_with_secret(STATE_NAME, &resplit).is_none());
        }
        // Truncated, another name, another key.
        for n in 0..sealed.len() {
            assert!(k.open_with_secret(STATE_NAME, &sealed[..n]).is_none());
        }
        assert!(k.open_with_secret("kek-state/v3/other", &sealed).is_none());
        assert!(EntryKey::derive("another-secret-0123456789")
            .open_with_secret(STATE_NAME, &sealed)
            .is_none());
        // A length past the end.
        let mut long = sealed.clone();
        long[8 + NONCE_LEN..8 + NONCE_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(k.open_with_secret(STATE_NAME, &long).is_none());
    }

    #[test]
    fn a_split_entry_is_no_other_kind_of_entry_and_no_other_kind_is_one() {
        let k = key();
        let sealed = split(&k, HELD);
        assert!(k.open(STATE_NAME, &sealed).is_none());
        assert!(k.open_secret(STATE_NAME, &sealed).is_none());
        assert!(k
            .open_with_secret(STATE_NAME, &k.seal(STATE_NAME, STATE))
            .is_none());
        assert!(k
            .open_with_secret(STATE_NAME, &k.seal_secret(STATE_NAME, HELD, [7; NONCE_LEN]))
            .is_none());
        assert!(k.open_with_secret(STATE_NAME, STATE).is_none());
    }
}
