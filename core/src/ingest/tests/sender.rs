//! Tests of authorizing the sender.

use super::*;

#[test]
fn senders_need_an_ingest_key() {
    let mut c = config();
    assert_eq!(authorize(&c, None, Some("x"), "").unwrap_err().status, 503);
    c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
    assert!(authorize(&c, None, Some("ingest-key-0123456789"), "").is_ok());
    assert_eq!(authorize(&c, None, None, "").unwrap_err().status, 401);
    assert_eq!(
        authorize(&c, None, Some("wrong-key-0123456789"), "")
            .unwrap_err()
            .status,
        403
    );
    // Without Entra delivery configured, an Authorization header is not a credential.
    assert_eq!(
        authorize(&c, Some("Bearer a.b.c"), None, "")
            .unwrap_err()
            .status,
        401
    );
}

#[test]
fn an_ingest_key_in_the_url_is_refused_unless_allowed() {
    let mut c = config();
    c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
    let e = authorize(&c, None, None, "a=1&code=ingest-key-0123456789").unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (401, "KeyInQueryRefused"));
    // The header is the credential; a key also left in the URL is ignored.
    assert!(authorize(&c, None, Some("ingest-key-0123456789"), "code=wrong").is_ok());
    c.ingest.key_in_query = true;
    assert!(authorize(&c, None, None, "a=1&code=ingest-key-0123456789").is_ok());
    assert_eq!(
        authorize(&c, None, None, "code=wrong").unwrap_err().status,
        403
    );
}

#[test]
fn with_entra_delivery_a_bearer_token_is_taken_for_verification() {
    let mut c = config();
    c.ingest.entra = Some(crate::config::SenderTokens {
        policy: crate::jwt::Policy {
            audiences: vec!["api://cmk".into()],
            issuers: crate::jwt::Policy::default_issuers("t"),
            tenant: "t".into(),
            roles: vec![],
            app_ids: vec![],
        },
        jwks_url: "https://login.microsoftonline.com/t/discovery/v2.0/keys".into(),
    });
    let token = "eyJhbGciOiJSUzI1NiJ9.e30.AAAA";
    assert!(matches!(
        authorize(&c, Some(&format!("Bearer {token}")), None, ""),
        Ok(SenderCredential::Token(_))
    ));
    // A malformed token is refused before any signing key is fetched.
    let e = authorize(&c, Some("Bearer not-a-jwt"), None, "").unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (401, "InvalidToken"));
    // No keys configured: only tokens are accepted, and a key is not one.
    let e = authorize(&c, None, Some("ingest-key-0123456789"), "").unwrap_err();
    assert_eq!(e.status, 401);
    assert!(e.message.contains("bearer token"));
    // Both configured: either credential.
    c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
    assert!(matches!(
        authorize(&c, None, Some("ingest-key-0123456789"), ""),
        Ok(SenderCredential::Key)
    ));
}

#[test]
fn webhook_handshake_echoes_the_origin() {
    let r = webhook_handshake(Some("eventgrid.azure.net")).unwrap();
    assert_eq!(r.headers()["webhook-allowed-origin"], "eventgrid.azure.net");
    assert_eq!(r.headers()["webhook-allowed-rate"], "*");
    assert_eq!(webhook_handshake(None).unwrap_err().status, 400);
}
