//! Senders' bearer tokens: the parser, and the verifier against a fixed
//! signing-key set and policy (every input must be refused or accepted,
//! never panic); also JWKS documents and cached JWKS entries. The key is
//! the public part of the record-format vectors' test key.
#![no_main]
use cmk_core::jwt::{self, Jwks, Policy, Token};
use cmk_core::time::UnixTime;
use libfuzzer_sys::fuzz_target;

const JWKS: &str = r#"{"keys":[{"kty":"RSA","use":"sig","kid":"k1","n":"1OUGoslzru2rdEMvbe03jR78DdvAHy_Qbo7KCiKnCSIvaF0EwlhH1XKdjzxEIsOqrdGXaRiVJAN7ZSq-N72k7OwfVflPSxKMJ28Bh630olgPlZTCZsVpB9g182OxoTBMCV-maGa0T6Nn235asJXDkUcA6E8MwJHyjVhHBZjFsAwb0-fsh2EKiK3dOC593-IYtDH0Jq0_M6iqlldpyksvztkJ4m7gB0FO6Naskkq583EyRC8qX_Q1ZdH0EDR5EasgFhCili0jfXev8ULdmOjQQtheTNMXM-wflM2SXIZTt-lMCwc2ol1luZq1VS72pBlp7MO_OrYi4WCGGcKkHpRI1Q","e":"AQAB"}]}"#;

fuzz_target!(|data: &[u8]| {
    let _ = Jwks::parse(data);
    let _ = jwt::decode_cached(data);
    let _ = jwt::decode_attempt(data);
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
        let _ = jwt::verify(&token, &jwks, &policy, UnixTime(1_800_000_000));
    }
});
