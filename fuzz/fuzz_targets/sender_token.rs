//! Senders' bearer tokens: the parser, and the verifier against a fixed
//! signing-key set and policy (every input must be refused or accepted,
//! never panic); also JWKS documents, cached JWKS entries and kept
//! signatures (`jwt::checked`): any stored form that reads back is written
//! again as the same bytes, and a token the verifier accepts, once kept, is
//! accepted from the list as the same sender. The key is the public part of
//! the record-format vectors' test key.
#![no_main]
use cmk_core::jwt::checked::Checked;
use cmk_core::jwt::{self, Jwks, Policy, Token};
use cmk_core::time::UnixTime;
use libfuzzer_sys::fuzz_target;

const JWKS: &str = r#"{"keys":[{"kty":"RSA","use":"sig","kid":"k1","n":"1OUGoslzru2rdEMvbe03jR78DdvAHy_Qbo7KCiKnCSIvaF0EwlhH1XKdjzxEIsOqrdGXaRiVJAN7ZSq-N72k7OwfVflPSxKMJ28Bh630olgPlZTCZsVpB9g182OxoTBMCV-maGa0T6Nn235asJXDkUcA6E8MwJHyjVhHBZjFsAwb0-fsh2EKiK3dOC593-IYtDH0Jq0_M6iqlldpyksvztkJ4m7gB0FO6Naskkq583EyRC8qX_Q1ZdH0EDR5EasgFhCili0jfXev8ULdmOjQQtheTNMXM-wflM2SXIZTt-lMCwc2ol1luZq1VS72pBlp7MO_OrYi4WCGGcKkHpRI1Q","e":"AQAB"}]}"#;

fuzz_target!(|data: &[u8]| {
    let _ = Jwks::parse(data);
    let _ = jwt::decode_cached(data);
    let _ = jwt::decode_attempt(data);
    if let Some(kept) = Checked::decode(data) {
        assert_eq!(kept.encode(), data, "a kept list reads back only from its own form");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = jwt::bearer(text);
    if let Ok(token) = Token::parse(text) {
        let jwks = Jwks::parse(JWKS.as_bytes()).expect("the fixed JWKS parses");
        let policy = Policy {
            audiences: vec!["api://cmk-ingest".into()],
            issuers: Policy::default_issuers("t"),
            tenant: "t".into(),
            roles: vec!["AzureEventGridSecureWebhookSubscriber".into()],
            app_ids: vec![],
        };
        let now = UnixTime(1_800_000_000);
        if let Ok(sender) = jwt::verify(&token, &jwks, &policy, now) {
            let set_at = UnixTime(now.0 - 60);
            let mut kept = Checked::default();
            if kept.keep(&token, set_at, Some(set_at), now) {
                assert_eq!(kept.verify(&token, &policy, Some(set_at), now), Some(Ok(sender)));
            }
        }
    }
});
