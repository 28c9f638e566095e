//! Known-answer and behaviour tests of [`super`] (`entra`).

use super::*;
use crate::api::ApiError;

#[test]
fn a_refused_token_request_fails_closed_for_an_operator() {
    let refused = EntraError::Refused {
        status: 401,
        error: "invalid_client".into(),
        description: "d".into(),
        correlation: None,
        transient: false,
    };
    let e = ApiError::from(&refused);
    assert_eq!(
        (e.status.as_u16(), e.code, e.retry_after),
        (503, "IdentityFailed", Some(60))
    );
}

fn secret_app() -> Provider {
    Provider::ClientSecret {
        authority: "https://login.microsoftonline.com/".into(),
        tenant: "t1".into(),
        client_id: "c1".into(),
        secret: Secret::new("s3cr3t+/="),
    }
}

fn body(r: &Request<Vec<u8>>) -> String {
    String::from_utf8(r.body().clone()).unwrap()
}

#[test]
fn client_secret_grant() {
    let r = token_request(&secret_app(), MANAGED_HSM_SCOPE, None).unwrap();
    assert_eq!(r.method(), Method::POST);
    assert_eq!(
        r.uri().to_string(),
        "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
    );
    assert_eq!(
        r.headers()["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        body(&r),
        "grant_type=client_credentials&client_id=c1&scope=https%3A%2F%2Fmanagedhsm.azure.net%2F.default&client_secret=s3cr3t%2B%2F%3D"
    );
}

#[test]
fn workload_identity_grant_sends_the_assertion() {
    let p = Provider::WorkloadIdentity {
        authority: DEFAULT_AUTHORITY.into(),
        tenant: "t1".into(),
        client_id: "c1".into(),
    };
    assert!(p.needs_assertion());
    assert!(token_request(&p, MANAGED_HSM_SCOPE, None).is_err());
    assert!(token_request(&p, MANAGED_HSM_SCOPE, Some("  ")).is_err());
    let r = token_request(&p, MANAGED_HSM_SCOPE, Some("eyJ.a.b\n")).unwrap();
    assert!(body(&r).ends_with(
        "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJ.a.b"
    ));
}

#[test]
fn managed_identity_requests() {
    let imds = Provider::Imds {
        endpoint: IMDS_ENDPOINT.into(),
        client_id: Some("u1".into()),
    };
    let r = token_request(&imds, MANAGED_HSM_SCOPE, None).unwrap();
    assert_eq!(r.method(), Method::GET);
    assert_eq!(
        r.uri().to_string(),
        "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagedhsm.azure.net&client_id=u1"
    );
    assert_eq!(r.headers()["metadata"], "true");
    let app = Provider::AppService {
        endpoint: "http://127.0.0.1:41/msi/token".into(),
        header: Secret::new("hdr"),
        client_id: None,
    };
    let r = token_request(&app, "https://acct.documents.azure.com/.default", None).unwrap();
    assert_eq!(
        r.uri().query(),
        Some("api-version=2019-08-01&resource=https%3A%2F%2Facct.documents.azure.com")
    );
    assert_eq!(r.headers()["x-identity-header"], "hdr");
}

fn resp(status: u16, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .body(body.as_bytes().to_vec())
        .unwrap()
}

#[test]
fn token_answers_in_every_shape() {
    let now = UnixTime(1_000);
    let t = parse_token_response(
        &resp(
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"tok"}"#,
        ),
        now,
    )
    .unwrap();
    assert_eq!(
        t,
        AccessToken {
            token: "tok".into(),
            expires_on: 4_599
        }
    );
    let imds = r#"{"access_token":"tok","expires_in":"3599","expires_on":"5000","resource":"r","token_type":"Bearer"}"#;
    assert_eq!(
        parse_token_response(&resp(200, imds), now)
            .unwrap()
            .expires_on,
        5_000
    );
    for bad in [
        r#"{"expires_in":5}"#,
        r#"{"access_token":"t"}"#,
        "nope",
        r#"{"access_token":"t","expires_on":"999"}"#,
        // Would break the Authorization header it goes into.
        r#"{"access_token":"t\r\nx-injected: 1","expires_in":5}"#,
        r#"{"access_token":"t ok","expires_in":5}"#,
    ] {
        assert!(
            matches!(
                parse_token_response(&resp(200, bad), now),
                Err(EntraError::InvalidResponse(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn refusals_carry_entras_words_but_no_secret() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215],"correlation_id":"corr-1"}"#;
    let e = parse_token_response(&resp(401, body), UnixTime(0)).unwrap_err();
    assert!(!e.is_transient());
    let msg = e.to_string();
    assert!(
        msg.contains("invalid_client") && msg.contains("AADSTS7000215") && msg.contains("corr-1"),
        "{msg}"
    );
    assert!(parse_token_response(&resp(503, ""), UnixTime(0))
        .unwrap_err()
        .is_transient());
    assert!(parse_token_response(&resp(429, "{}"), UnixTime(0))
        .unwrap_err()
        .is_transient());
}

#[test]
fn refresh_ahead_of_expiry() {
    let t = AccessToken {
        token: "x".into(),
        expires_on: 1_000,
    };
    assert_eq!(freshness(Some(&t), UnixTime(600), 300), Freshness::Use);
    assert_eq!(freshness(Some(&t), UnixTime(700), 300), Freshness::Refresh);
    assert_eq!(freshness(None, UnixTime(0), 300), Freshness::Refresh);
}

#[test]
fn cache_entries() {
    let t = AccessToken {
        token: "x".into(),
        expires_on: 9,
    };
    assert_eq!(decode_cached(&encode_cached(&t)), Some(t));
    assert_eq!(decode_cached(b"garbage"), None);
    // A cached token that could not go into a header is not used.
    let bad = AccessToken {
        token: "a\nb".into(),
        expires_on: 5000,
    };
    assert_eq!(decode_cached(&encode_cached(&bad)), None);
    let a = cache_key(&secret_app(), MANAGED_HSM_SCOPE);
    assert_ne!(
        a,
        cache_key(&secret_app(), "https://acct.documents.azure.com/.default")
    );
    assert!(a.starts_with("entra-token/v2/") && !a.contains("c1"));
}

#[test]
fn nothing_secret_in_debug() {
    let dbg = format!(
        "{:?} {:?}",
        secret_app(),
        AccessToken {
            token: "tok-123".into(),
            expires_on: 1
        }
    );
    assert!(!dbg.contains("s3cr3t") && !dbg.contains("tok-123"), "{dbg}");
}

#[test]
fn header_safe_takes_visible_ascii_only() {
    for c in (0u32..0x80)
        .chain([0xa0, 0xe9, 0x2028])
        .filter_map(char::from_u32)
    {
        let visible = ('\u{21}'..='\u{7e}').contains(&c);
        for token in [
            c.to_string(),
            format!("eyJ{c}x.y"),
            format!("{}{c}", "a".repeat(40)),
        ] {
            assert_eq!(header_safe(&token), visible, "{token:?}");
        }
    }
    assert!(!header_safe(""));
}

#[test]
fn cache_keys_are_the_digest_of_each_part_with_its_length() {
    // Known answer: SHA-256 over each part's 8-byte big-endian length and
    // bytes (a missing part: the length 2^64 - 1), first 18 bytes, base64url.
    use base64::Engine as _;
    use sha2::Digest as _;
    let scope = MANAGED_HSM_SCOPE;
    let imds = |client_id: Option<&str>| Provider::Imds {
        endpoint: "http://169.254.169.254".into(),
        client_id: client_id.map(str::to_owned),
    };
    let digest = |parts: &[Option<&str>]| {
        let mut h = sha2::Sha256::new();
        for p in parts {
            match p {
                Some(p) => {
                    h.update((p.len() as u64).to_be_bytes());
                    h.update(p.as_bytes());
                }
                None => h.update(u64::MAX.to_be_bytes()),
            }
        }
        format!(
            "entra-token/v2/{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..18])
        )
    };
    assert_eq!(
        cache_key(&secret_app(), scope),
        digest(&[
            Some("client-secret"),
            Some("https://login.microsoftonline.com/"),
            Some("t1"),
            Some("c1"),
            Some(scope)
        ])
    );
    assert_eq!(
        cache_key(&imds(None), scope),
        digest(&[
            Some("managed-identity-imds"),
            Some("http://169.254.169.254"),
            None,
            None,
            Some(scope)
        ])
    );
    // What `v1`'s joined names confused: a system-assigned identity and a
    // client id "system"; parts that move a `|` from one to the next.
    assert_ne!(
        cache_key(&imds(None), scope),
        cache_key(&imds(Some("system")), scope)
    );
    let secret = |tenant: &str, client_id: &str| Provider::ClientSecret {
        authority: "https://login.microsoftonline.com/".into(),
        tenant: tenant.into(),
        client_id: client_id.into(),
        secret: Secret::new("s"),
    };
    assert_ne!(
        cache_key(&secret("t|x", "c"), scope),
        cache_key(&secret("t", "x|c"), scope)
    );
    assert_ne!(
        cache_key(&secret("t", "c|https://a"), "b"),
        cache_key(&secret("t", "c"), "https://a|b")
    );
}
