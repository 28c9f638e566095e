//! Managed HSM wrapkey/unwrapkey answers checked against the key version
//! asked for (`hsm::parse_crypt_for`). Half the inputs are made well-formed
//! (a JSON body with a fuzzed `kid` and a base64url `value`) so that the
//! key-id check behind the JSON parser is reached; an answer that is
//! accepted always names exactly the requested version of this vault.
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cmk_core::cosmos::Endpoint;
use cmk_core::hsm::{self, KeyRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let vault = Endpoint::parse(if mode & 2 == 0 {
        "https://contoso.managedhsm.azure.net"
    } else {
        "https://contoso.managedhsm.azure.net:443"
    })
    .expect("the fixed vault parses");
    let requested = KeyRef {
        name: "app-kek".into(),
        version: Some(
            if mode & 4 == 0 {
                "v1"
            } else {
                "0123456789abcdef"
            }
            .into(),
        ),
    };
    let body = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // `kid` up to the first NUL, the rest is the value.
        let (kid, value) = match rest.iter().position(|b| *b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        serde_json::to_vec(&serde_json::json!({
            "kid": String::from_utf8_lossy(kid),
            "value": URL_SAFE_NO_PAD.encode(value),
        }))
        .expect("JSON serializes")
    };
    let resp = http::Response::builder()
        .status(if mode & 8 == 0 {
            200
        } else {
            400 + u16::from(mode >> 4)
        })
        .body(body)
        .expect("a response");
    if let Ok(r) = hsm::parse_crypt_for(&resp, &requested, &vault) {
        assert_eq!(resp.status(), 200);
        // Written out here rather than parsed with the code under test: this
        // vault, with or without its default port, this key, this version
        // (and at most the one trailing slash a key path may end with).
        let version = requested.version.as_deref().expect("a version");
        let allowed = [
            "https://contoso.managedhsm.azure.net",
            "https://contoso.managedhsm.azure.net:443",
        ]
        .map(|origin| format!("{origin}/keys/app-kek/{version}"));
        let kid = r.kid.strip_suffix('/').unwrap_or(&r.kid);
        assert!(
            allowed.iter().any(|a| a == kid),
            "accepted an answer for {}",
            r.kid
        );
    }
});
