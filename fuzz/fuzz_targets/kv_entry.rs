//! Key-value store entries (`kvseal`): MAC-bound entries, encrypted
//! secrets and entries of a public part and a secret under a fixed test key. Any stored bytes are refused or opened,
//! never a panic; what is sealed under a name opens to exactly itself under
//! that name and under no other (nor with a byte moved between name and
//! value); an edited sealed entry never opens to
//! anything but its original value.
#![no_main]
use cmk_core::kvseal::{EntryKey, NONCE_LEN};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static EntryKey {
    static K: OnceLock<EntryKey> = OnceLock::new();
    K.get_or_init(|| EntryKey::derive("kv-store-key-0123456789abcdef"))
}

const NAME: &str = "entra-token/v1/abcdefghijklmnopqrstuvwx";

fuzz_target!(|data: &[u8]| {
    let k = key();
    // Whatever a writer of the store put there.
    let _ = k.open(NAME, data);
    let _ = k.open_secret(NAME, data);
    let _ = k.open_with_secret(NAME, data);
    // The input as a name (up to the first NUL) and a value.
    let (name, value) = match data.iter().position(|b| *b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (NAME.to_owned(), data),
    };
    let other = format!("{name}x");
    let nonce: [u8; NONCE_LEN] = core::array::from_fn(|i| value.get(i).copied().unwrap_or(0));
    let sealed = k.seal(&name, value);
    assert_eq!(k.open(&name, &sealed).as_deref(), Some(value));
    assert!(k.open(&other, &sealed).is_none());
    assert!(k.open_secret(&name, &sealed).is_none());
    let secret = k.seal_secret(&name, value, nonce);
    assert_eq!(
        k.open_secret(&name, &secret).as_deref().map(|v| &v[..]),
        Some(value)
    );
    assert!(k.open_secret(&other, &secret).is_none());
    assert!(k.open(&name, &secret).is_none());
    // The value split in two: the public part and the secret.
    let at = value.len() / 2;
    let (public, hidden) = value.split_at(at);
    let split = k
        .seal_with_secret(&name, public, hidden, nonce)
        .expect("a short public part");
    let opened = k.open_with_secret(&name, &split).expect("opens");
    assert_eq!((&opened.0[..], &opened.1[..]), (public, hidden));
    assert!(k.open_with_secret(&other, &split).is_none());
    assert!(k.open_with_secret(&name, &secret).is_none());
    assert!(k.open_secret(&name, &split).is_none() && k.open(&name, &split).is_none());
    // A byte moved across the line between name and value leaves
    // `name ‖ value` as it was; the name's length in the MAC refuses it.
    let mac = &sealed[..sealed.len() - value.len()];
    if let Some((&first, rest)) = value.split_first().filter(|(b, _)| b.is_ascii()) {
        let forged = [mac, rest].concat();
        let moved = format!("{name}{}", char::from(first));
        assert!(k.open(&moved, &forged).is_none());
    }
    if let Some(last) = name.chars().last() {
        let cut = name.len() - last.len_utf8();
        let forged = [mac, name[cut..].as_bytes(), value].concat();
        assert!(k.open(&name[..cut], &forged).is_none());
    }
    // One edit, chosen by the value: a flipped bit or a cut.
    if let Some(&b) = value.first() {
        for stored in [sealed, secret, split] {
            let mut edited = stored.clone();
            let i = usize::from(b) * 7 % edited.len();
            if b & 1 == 0 {
                edited[i] ^= 1 << (b % 8);
            } else {
                edited.truncate(i);
            }
            if let Some(v) = k.open(&name, &edited) {
                assert_eq!(v, value);
            }
            if let Some(v) = k.open_secret(&name, &edited) {
                assert_eq!(&v[..], value);
            }
            if let Some((p, h)) = k.open_with_secret(&name, &edited) {
                assert_eq!((&p[..], &h[..]), (public, hidden));
            }
        }
    }
});
