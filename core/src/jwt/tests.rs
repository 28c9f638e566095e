//! Known-answer and behaviour tests of [`super`] (`jwt`).

use super::*;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::json;
use std::sync::OnceLock;

pub(super) const TENANT: &str = "cmk-tenant";
pub(super) const NOW: UnixTime = UnixTime(1_800_000_000);

fn key() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    // The record-format vectors' test key (test material only).
    K.get_or_init(|| {
        RsaPrivateKey::from_pkcs8_pem(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/record-v1/test-kek.pem"
        )))
        .unwrap()
    })
}

pub(super) fn jwks_json(kid: &str) -> Vec<u8> {
    let k = key().to_public_key();
    serde_json::to_vec(&json!({"keys": [
        {"kty": "EC", "kid": "ec", "crv": "P-256"},
        {"kty": "RSA", "use": "sig", "kid": kid,
         "n": URL_SAFE_NO_PAD.encode(k.n().to_bytes_be()),
         "e": URL_SAFE_NO_PAD.encode(k.e().to_bytes_be())}
    ]}))
    .unwrap()
}

pub(super) fn sign(header: Value, claims: Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let input = format!("{h}.{c}");
    let sig = SigningKey::<Sha256>::new(key().clone()).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

pub(super) fn claims() -> Value {
    json!({"aud": "api://cmk-ingest", "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
           "tid": TENANT, "oid": "oid-eventgrid", "azp": "eventgrid-app", "roles": ["AzureEventGridSecureWebhookSubscriber"],
           "iat": NOW.0 - 300, "nbf": NOW.0 - 300, "exp": NOW.0 + 3600})
}

pub(super) fn policy() -> Policy {
    Policy {
        audiences: vec![
            "api://cmk-ingest".into(),
            "00000000-1111-2222-3333-444444444444".into(),
        ],
        issuers: Policy::default_issuers(TENANT),
        tenant: TENANT.into(),
        roles: vec!["AzureEventGridSecureWebhookSubscriber".into()],
        app_ids: vec![],
    }
}

fn check(header: Value, claims: Value) -> Result<Sender, JwtError> {
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    verify(&Token::parse(&sign(header, claims))?, &jwks, &policy(), NOW)
}

pub(super) fn rs256() -> Value {
    json!({"typ": "JWT", "alg": "RS256", "kid": "k1"})
}

#[test]
fn a_valid_token_names_its_sender() {
    let s = check(rs256(), claims()).unwrap();
    assert_eq!(s.app_id.as_deref(), Some("eventgrid-app"));
    assert_eq!(s.object_id.as_deref(), Some("oid-eventgrid"));
    // v1.0 tokens: another issuer, `appid`, audience in a list.
    let mut v1 = claims();
    v1["iss"] = json!(format!("https://sts.windows.net/{TENANT}/"));
    v1["aud"] = json!(["00000000-1111-2222-3333-444444444444"]);
    v1["appid"] = json!("v1-app");
    assert_eq!(
        check(rs256(), v1).unwrap().app_id.as_deref(),
        Some("v1-app")
    );
}

#[test]
fn each_check_refuses_on_its_own() {
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        check(rs256(), c).unwrap_err()
    };
    let claim = |e: JwtError| match e {
        JwtError::Claim { claim, .. } => claim,
        other => panic!("{other:?}"),
    };
    assert_eq!(claim(with("aud", json!("api://other"))), "aud");
    assert_eq!(
        claim(with("iss", json!("https://sts.windows.net/other/"))),
        "iss"
    );
    assert_eq!(claim(with("tid", json!("other"))), "tid");
    // A token without a tenant is not one of the tenant's.
    let mut no_tid = claims();
    no_tid.as_object_mut().unwrap().remove("tid");
    assert_eq!(claim(check(rs256(), no_tid).unwrap_err()), "tid");
    assert_eq!(claim(with("exp", json!(NOW.0 - LEEWAY_SECS - 1))), "exp");
    assert!(check(rs256(), {
        let mut c = claims();
        c["exp"] = json!(NOW.0 - LEEWAY_SECS + 1);
        c
    })
    .is_ok());
    assert_eq!(claim(with("nbf", json!(NOW.0 + LEEWAY_SECS + 1))), "nbf");
    assert_eq!(claim(with("roles", json!(["Other"]))), "roles");
    assert_eq!(claim(with("exp", json!("soon"))), "exp");
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(claim(check(rs256(), no_exp).unwrap_err()), "exp");
    let mut no_roles = claims();
    no_roles.as_object_mut().unwrap().remove("roles");
    assert_eq!(
        claim(check(rs256(), no_roles.clone()).unwrap_err()),
        "roles"
    );
    // Without required roles, a token without any passes.
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    let mut p = policy();
    p.roles.clear();
    assert!(verify(
        &Token::parse(&sign(rs256(), no_roles)).unwrap(),
        &jwks,
        &p,
        NOW
    )
    .is_ok());
}

#[test]
fn signatures_keys_and_algorithms() {
    assert_eq!(
        check(json!({"alg": "RS256", "kid": "k2"}), claims()).unwrap_err(),
        JwtError::UnknownKey
    );
    assert_eq!(
        check(json!({"alg": "RS256"}), claims()).unwrap_err(),
        JwtError::UnknownKey
    );
    assert_eq!(
        check(json!({"alg": "none", "kid": "k1"}), claims()).unwrap_err(),
        JwtError::Algorithm("none".into())
    );
    assert_eq!(
        check(json!({"alg": "HS256", "kid": "k1"}), claims()).unwrap_err(),
        JwtError::Algorithm("HS256".into())
    );
    // A payload changed after signing.
    let token = sign(rs256(), claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut c = claims();
    c["roles"] = json!(["Admin", "AzureEventGridSecureWebhookSubscriber"]);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    let forged = Token::parse(&parts.join(".")).unwrap();
    assert_eq!(
        verify(&forged, &jwks, &policy(), NOW).unwrap_err(),
        JwtError::Signature
    );
    parts[2] = "AAAA".into();
    let short = Token::parse(&parts.join(".")).unwrap();
    assert_eq!(
        verify(&short, &jwks, &policy(), NOW).unwrap_err(),
        JwtError::Signature
    );
}

#[test]
fn only_the_exact_pkcs1_sha256_encoding_below_the_modulus_verifies() {
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    let token = sign(rs256(), claims());
    let (input, _) = token.rsplit_once('.').unwrap();
    let with_signature = |sig: &[u8]| {
        let t = Token::parse(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))).unwrap();
        verify(&t, &jwks, &policy(), NOW)
    };
    let good = SigningKey::<Sha256>::new(key().clone()).sign(input.as_bytes());
    assert!(with_signature(&good.to_bytes()).is_ok());
    let n = key().to_public_key().n().to_bytes_be();
    let mut longer = vec![0u8];
    longer.extend_from_slice(&good.to_bytes());
    let mut flipped = good.to_vec();
    flipped[10] ^= 1;
    // Signed by the same key over the same input, with another hash.
    let sha384 = SigningKey::<sha2::Sha384>::new(key().clone())
        .sign(input.as_bytes())
        .to_vec();
    for (why, sig) in [
        ("the modulus itself", n.clone()),
        ("above the modulus", vec![0xff; n.len()]),
        ("a byte longer than the modulus", longer),
        ("one bit changed", flipped),
        ("SHA-384", sha384),
        ("zero", vec![0; n.len()]),
    ] {
        assert_eq!(
            with_signature(&sig).unwrap_err(),
            JwtError::Signature,
            "{why}"
        );
    }
}

#[test]
fn malformed_tokens_and_documents() {
    for t in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.e30.AA",
        "e30.!!.AA",
        "e30.e30.!!",
        "bm90IGpzb24.e30.AA",
    ] {
        assert!(
            matches!(Token::parse(t), Err(JwtError::Malformed(_))),
            "{t}"
        );
    }
    assert!(Token::parse(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    assert!(Jwks::parse(b"{}").is_err());
    assert!(Jwks::parse(br#"{"keys": [{"kty": "EC", "kid": "x"}]}"#).is_err());
    assert!(
        Jwks::parse(br#"{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}"#)
            .is_err()
    );
    assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
    assert_eq!(bearer("bearer  t "), Some("t"));
    assert_eq!(bearer("Basic dXNlcg=="), None);
    assert_eq!(bearer("Bearer "), None);
}

#[test]
fn cached_documents_round_trip() {
    let body = jwks_json("k1");
    let (jwks, at) = decode_cached(&encode_cached(UnixTime(42), &body)).unwrap();
    assert!(jwks.has("k1") && at == UnixTime(42));
    assert!(decode_cached(b"x\n{}").is_none());
    assert!(decode_cached(b"42").is_none());
    let ok = http::Response::builder().status(200).body(body).unwrap();
    assert!(parse_jwks_response(&ok).unwrap().has("k1"));
    let down = http::Response::builder()
        .status(503)
        .body(Vec::new())
        .unwrap();
    assert!(matches!(parse_jwks_response(&down), Err(JwtError::Jwks(_))));
    assert_eq!(
        jwks_request("https://login.microsoftonline.com/t/discovery/v2.0/keys")
            .unwrap()
            .method(),
        "GET"
    );
}

#[test]
fn failed_fetches_count_towards_the_minimum_interval() {
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    let old = Some((&jwks, UnixTime(NOW.0 - JWKS_MAX_AGE_SECS)));
    let tried = |ago: u64| Some(UnixTime(NOW.0 - ago));
    // Unknown kids while the authority fails: one attempt per interval.
    let cached = Some((&jwks, UnixTime(NOW.0 - 3600)));
    assert_eq!(
        jwks_cache(cached, tried(10), Some("k9"), NOW),
        JwksCache::Use
    );
    assert_eq!(
        jwks_cache(cached, tried(JWKS_MIN_REFETCH_SECS), Some("k9"), NOW),
        JwksCache::Refresh
    );
    assert_eq!(jwks_cache(old, tried(10), Some("k1"), NOW), JwksCache::Use);
    // Nothing cached: a short pause between attempts.
    assert_eq!(jwks_cache(None, tried(1), Some("k1"), NOW), JwksCache::Wait);
    assert_eq!(
        jwks_cache(None, tried(JWKS_RETRY_SECS), Some("k1"), NOW),
        JwksCache::Fetch
    );
    // An attempt dated in the future does not stop fetches for long.
    let future = Some(UnixTime(NOW.0 + 86_400));
    assert_eq!(jwks_cache(None, future, Some("k1"), NOW), JwksCache::Fetch);
    assert_eq!(decode_attempt(&encode_attempt(NOW)), Some(NOW));
    assert_eq!(decode_attempt(b"x"), None);
}

#[test]
fn a_set_serves_stale_fetches_only_within_its_grace() {
    let limit = JWKS_MAX_AGE_SECS + JWKS_STALE_GRACE_SECS;
    let at = |ago: u64| UnixTime(NOW.0 - ago);
    assert!(serves_stale(at(0), NOW));
    assert!(serves_stale(at(JWKS_MAX_AGE_SECS + 1), NOW));
    assert!(serves_stale(at(limit - 1), NOW));
    assert!(!serves_stale(at(limit), NOW));
    assert!(!serves_stale(at(limit + 86_400), NOW));
    // A fetch time in the future is believed only within the clock skew.
    assert!(serves_stale(UnixTime(NOW.0 + CLOCK_SKEW_SECS), NOW));
    assert!(!serves_stale(UnixTime(NOW.0 + CLOCK_SKEW_SECS + 1), NOW));
}

#[test]
fn an_allow_list_of_caller_apps_refuses_others() {
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    let mut p = policy();
    p.app_ids = vec!["eventgrid-app".into()];
    let token = |c: Value| Token::parse(&sign(rs256(), c)).unwrap();
    assert!(verify(&token(claims()), &jwks, &p, NOW).is_ok());
    let mut other = claims();
    other["azp"] = json!("another-app");
    let e = verify(&token(other), &jwks, &p, NOW).unwrap_err();
    assert!(matches!(e, JwtError::Claim { claim: "appid", .. }), "{e:?}");
    let mut none = claims();
    none.as_object_mut().unwrap().remove("azp");
    assert!(verify(&token(none), &jwks, &p, NOW).is_err());
    // v1.0 tokens name the caller in `appid`.
    let mut v1 = claims();
    v1.as_object_mut().unwrap().remove("azp");
    v1["appid"] = json!("eventgrid-app");
    assert!(verify(&token(v1), &jwks, &p, NOW).is_ok());
}

/// With the role alone required (no allow-list of caller apps), a user
/// holding the role, or an ID token, must not pass: only an application's
/// own access token. 403, as for a missing role.
#[test]
fn only_an_applications_own_token_is_a_sender() {
    let refused = |edit: &dyn Fn(&mut serde_json::Map<String, Value>), claim: &str| {
        let mut c = claims();
        edit(c.as_object_mut().unwrap());
        let e = check(rs256(), c).unwrap_err();
        assert!(
            matches!(&e, JwtError::Claim { claim: got, .. } if *got == claim),
            "{e:?}"
        );
        assert_eq!(ApiError::from(&e).status, StatusCode::FORBIDDEN, "{e:?}");
    };
    // A user's delegated token: `scp`, with or without `idtyp`.
    refused(
        &|c| {
            c.insert("scp".into(), json!("user_impersonation"));
        },
        "scp",
    );
    refused(
        &|c| {
            c.insert("idtyp".into(), json!("user"));
        },
        "idtyp",
    );
    refused(
        &|c| {
            c.insert("idtyp".into(), json!(7));
        },
        "idtyp",
    );
    // An ID token names no calling application.
    refused(
        &|c| {
            c.remove("azp");
        },
        "appid",
    );
    // An application's token that says so is one.
    let mut app = claims();
    app["idtyp"] = json!("app");
    assert!(check(rs256(), app).is_ok());
}

#[test]
fn the_jwks_cache_refreshes_daily_and_on_unknown_keys_at_most_every_five_minutes() {
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    let at = |age: u64| Some((&jwks, UnixTime(NOW.0 - age)));
    assert_eq!(jwks_cache(None, None, Some("k1"), NOW), JwksCache::Fetch);
    assert_eq!(jwks_cache(at(10), None, Some("k1"), NOW), JwksCache::Use);
    assert_eq!(
        jwks_cache(at(JWKS_MAX_AGE_SECS), None, Some("k1"), NOW),
        JwksCache::Refresh
    );
    assert_eq!(jwks_cache(at(10), None, Some("k9"), NOW), JwksCache::Use);
    assert_eq!(
        jwks_cache(at(JWKS_MIN_REFETCH_SECS), None, Some("k9"), NOW),
        JwksCache::Refresh
    );
    // A rotated key inside the least interval: held back, so the token
    // is answered as transient, for the rest of the interval.
    let fetched = UnixTime(NOW.0 - 10);
    assert_eq!(
        refresh_held_back(&jwks, fetched, None, Some("k9"), NOW),
        Some(JWKS_MIN_REFETCH_SECS - 10)
    );
    assert_eq!(
        refresh_held_back(
            &jwks,
            UnixTime(NOW.0 - 3600),
            Some(UnixTime(NOW.0 - 100)),
            Some("k9"),
            NOW
        ),
        Some(JWKS_MIN_REFETCH_SECS - 100)
    );
    // The key is known, the token names none, or a fetch is allowed.
    assert_eq!(
        refresh_held_back(&jwks, fetched, None, Some("k1"), NOW),
        None
    );
    assert_eq!(refresh_held_back(&jwks, fetched, None, None, NOW), None);
    let old = UnixTime(NOW.0 - JWKS_MIN_REFETCH_SECS);
    assert_eq!(
        refresh_held_back(&jwks, old, Some(old), Some("k9"), NOW),
        None
    );
    // An attempt dated in the future is not believed.
    assert_eq!(
        refresh_held_back(&jwks, old, Some(UnixTime(NOW.0 + 3600)), Some("k9"), NOW),
        None
    );
    // While refreshes fail (an attempt within the interval), the stale set
    // serves for its day and the grace, and not a second past: then the
    // token waits for a fetch, or one is made, as if nothing were cached.
    let attempt = Some(UnixTime(NOW.0 - 10));
    let last_hour = JWKS_MAX_AGE_SECS + JWKS_STALE_GRACE_SECS - 1;
    assert_eq!(
        jwks_cache(at(last_hour), attempt, Some("k1"), NOW),
        JwksCache::Use
    );
    let past = JWKS_MAX_AGE_SECS + JWKS_STALE_GRACE_SECS;
    assert_eq!(
        jwks_cache(at(past), attempt, Some("k1"), NOW),
        JwksCache::Wait
    );
    assert_eq!(
        jwks_cache(at(30 * 86_400), attempt, Some("k1"), NOW),
        JwksCache::Wait
    );
    assert_eq!(
        jwks_cache(at(past), None, Some("k1"), NOW),
        JwksCache::Fetch
    );
    // A cached copy from the future (a writer of the store) is ignored.
    let future = Some((&jwks, UnixTime(NOW.0 + CLOCK_SKEW_SECS + 1)));
    assert_eq!(jwks_cache(future, None, Some("k1"), NOW), JwksCache::Fetch);
    assert_eq!(
        jwks_url("https://login.microsoftonline.com/", "t"),
        "https://login.microsoftonline.com/t/discovery/v2.0/keys"
    );
}

#[test]
fn a_refused_token_maps_to_403_503_or_401() {
    let role = JwtError::Claim {
        claim: "roles",
        why: "x".into(),
    };
    assert_eq!(ApiError::from(&role).status, 403);
    let app = JwtError::Claim {
        claim: "appid",
        why: "x".into(),
    };
    assert_eq!(ApiError::from(&app).status, 403);
    let keys = JwtError::Jwks("down".into());
    assert_eq!(ApiError::from(&keys).status, 503);
    assert_eq!(ApiError::from(&JwtError::Signature).status, 401);
    assert_eq!(ApiError::from(&JwtError::UnknownKey).status, 401);
    // A rotated key not fetched yet: transient, retried by Event Grid.
    let rotated = ApiError::from(&JwtError::KeysNotRefreshed {
        retry_after_secs: 290,
    });
    assert_eq!(
        (rotated.status.as_u16(), rotated.code, rotated.retry_after),
        (503, "SigningKeysUnavailable", Some(290))
    );
}
