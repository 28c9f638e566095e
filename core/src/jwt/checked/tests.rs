//! Behaviour tests of [`super`] (`jwt::checked`).

use super::super::tests::{claims, jwks_json, policy, rs256, sign, NOW};
use super::*;
use crate::jwt::{verify, Jwks};
use serde_json::{json, Value};

/// The set's fetch time, and the last attempt when it was the last fetch.
const SET_AT: UnixTime = UnixTime(NOW.0 - 600);

fn token_with(claims: Value) -> Token {
    Token::parse(&sign(rs256(), claims)).unwrap()
}

fn token() -> Token {
    token_with(claims())
}

/// `token` checked in full and kept, as the component does.
fn kept(token: &Token) -> Checked {
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    verify(token, &jwks, &policy(), NOW).expect("a valid token");
    let mut c = Checked::default();
    assert!(c.keep(token, SET_AT, Some(SET_AT), NOW));
    c
}

#[test]
fn a_kept_signature_names_the_same_sender_as_the_full_check() {
    let t = token();
    let jwks = Jwks::parse(&jwks_json("k1")).unwrap();
    let full = verify(&t, &jwks, &policy(), NOW).unwrap();
    let c = kept(&t);
    assert_eq!(c.len(), 1);
    assert_eq!(
        c.verify(&t, &policy(), Some(SET_AT), NOW),
        Some(Ok(full.clone()))
    );
    // Through the stored form too.
    let stored = Checked::decode(&c.encode()).expect("reads back");
    assert_eq!(stored, c);
    assert_eq!(
        stored.verify(&t, &policy(), Some(SET_AT), NOW),
        Some(Ok(full))
    );
}

#[test]
fn another_token_is_not_taken_for_a_kept_one() {
    let t = token();
    let c = kept(&t);
    // A fresh token of the same sender: another signature.
    let mut renewed = claims();
    renewed["iat"] = json!(NOW.0);
    assert_eq!(
        c.verify(&token_with(renewed), &policy(), Some(SET_AT), NOW),
        None
    );
    // The kept token's signature on other claims (a forgery): not kept.
    let text = sign(rs256(), claims());
    let (_, sig) = text.rsplit_once('.').unwrap();
    let mut more = claims();
    more["roles"] = json!(["AzureEventGridSecureWebhookSubscriber", "Admin"]);
    let other = sign(rs256(), more);
    let (signed, _) = other.rsplit_once('.').unwrap();
    let forged = Token::parse(&format!("{signed}.{sig}")).unwrap();
    assert_eq!(c.verify(&forged, &policy(), Some(SET_AT), NOW), None);
    // The kept token's claims under another header (another algorithm
    // named): other signed bytes, so another digest; refused before the
    // digest is even made (`only_an_rs256_token_is_taken_from_the_list`).
    let mut header = rs256();
    header["alg"] = json!("none");
    let unsigned = Token::parse(&sign(header, claims())).unwrap();
    assert_eq!(c.verify(&unsigned, &policy(), Some(SET_AT), NOW), None);
}

#[test]
fn only_an_rs256_token_is_taken_from_the_list() {
    // A list naming the digest of a token that names another algorithm
    // (not one the component writes: the full check refuses such tokens)
    // does not let it through.
    let mut header = rs256();
    header["alg"] = json!("HS256");
    let other = Token::parse(&sign(header, claims())).unwrap();
    let line = format!(
        "{HEAD}\n{} {} {}",
        URL_SAFE_NO_PAD.encode(other.signature_digest()),
        SET_AT.0,
        NOW.0 + 3600
    );
    let forged = Checked::decode(line.as_bytes()).expect("the stored form");
    assert_eq!(forged.verify(&other, &policy(), Some(SET_AT), NOW), None);
    // The same list naming an RS256 token's digest is taken (the test
    // would pass vacuously otherwise).
    let t = token();
    let line = line.replace(
        &URL_SAFE_NO_PAD.encode(other.signature_digest()),
        &URL_SAFE_NO_PAD.encode(t.signature_digest()),
    );
    let genuine = Checked::decode(line.as_bytes()).unwrap();
    assert!(matches!(
        genuine.verify(&t, &policy(), Some(SET_AT), NOW),
        Some(Ok(_))
    ));
}

#[test]
fn the_claims_are_checked_on_every_delivery() {
    let t = token();
    let c = kept(&t);
    let mut narrower = policy();
    narrower.audiences = vec!["api://another-app".into()];
    assert!(matches!(
        c.verify(&t, &narrower, Some(SET_AT), NOW),
        Some(Err(JwtError::Claim { claim: "aud", .. }))
    ));
    let mut roles = policy();
    roles.roles = vec!["Admin".into()];
    assert!(matches!(
        c.verify(&t, &roles, Some(SET_AT), NOW),
        Some(Err(JwtError::Claim { claim: "roles", .. }))
    ));
    let mut apps = policy();
    apps.app_ids = vec!["another-caller".into()];
    assert!(matches!(
        c.verify(&t, &apps, Some(SET_AT), NOW),
        Some(Err(JwtError::Claim { claim: "appid", .. }))
    ));
}

#[test]
fn a_fetch_attempt_since_the_set_sets_every_kept_signature_aside() {
    let t = token();
    let c = kept(&t);
    // Another attempt (a refresh, whether or not it succeeded).
    assert_eq!(
        c.verify(&t, &policy(), Some(UnixTime(SET_AT.0 + 1)), NOW),
        None
    );
    // No attempt on record (an entry lost, or removed).
    assert_eq!(c.verify(&t, &policy(), None, NOW), None);
    // An attempt recorded before the set (not how the component writes
    // them): the set is not known to be the last.
    assert_eq!(
        c.verify(&t, &policy(), Some(UnixTime(SET_AT.0 - 1)), NOW),
        None
    );
}

#[test]
fn a_set_due_for_refresh_or_a_token_past_its_expiry_does_not_stand() {
    let t = token();
    let c = kept(&t);
    let day_on = UnixTime(SET_AT.0 + JWKS_MAX_AGE_SECS);
    let mut long = claims();
    long["exp"] = json!(day_on.0 + 3600);
    let long = token_with(long);
    let mut c_long = Checked::default();
    assert!(c_long.keep(&long, SET_AT, Some(SET_AT), NOW));
    assert!(c_long
        .verify(&long, &policy(), Some(SET_AT), UnixTime(day_on.0 - 1))
        .is_some());
    assert_eq!(c_long.verify(&long, &policy(), Some(SET_AT), day_on), None);
    // `exp` + the leeway: the last second it stands, then the full check
    // (which refuses it).
    let exp = claims()["exp"].as_u64().unwrap();
    let last = UnixTime(exp + LEEWAY_SECS);
    assert!(matches!(
        c.verify(&t, &policy(), Some(SET_AT), last),
        Some(Ok(_))
    ));
    assert_eq!(
        c.verify(&t, &policy(), Some(SET_AT), UnixTime(last.0 + 1)),
        None
    );
    // A set fetched up to the allowed skew ahead of this clock stands;
    // further in the future (a clock gone wrong), it is not believed.
    let ahead = UnixTime(NOW.0 + CLOCK_SKEW_SECS);
    let mut c_ahead = Checked::default();
    assert!(c_ahead.keep(&t, ahead, Some(ahead), NOW));
    assert!(c_ahead.verify(&t, &policy(), Some(ahead), NOW).is_some());
    let future = UnixTime(NOW.0 + CLOCK_SKEW_SECS + 1);
    let mut c_future = Checked::default();
    assert!(!c_future.keep(&t, future, Some(future), NOW));
    assert!(c_future.is_empty());
}

#[test]
fn a_signature_checked_against_a_held_set_is_not_kept() {
    // The refresh failed and the older set served: the attempt is newer
    // than the set, so the signature would not stand.
    let t = token();
    let mut c = kept(&t);
    let before = c.clone();
    let attempt = Some(NOW);
    // Another token (renewed), so that keeping it would change the list.
    let mut renewed = claims();
    renewed["iat"] = json!(NOW.0);
    assert!(!c.keep(&token_with(renewed), SET_AT, attempt, NOW));
    assert_eq!(c, before, "nothing changed, nothing to store");
    // A token without `exp` (refused by the full check anyway).
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(!c.keep(&token_with(no_exp), SET_AT, Some(SET_AT), NOW));
}

#[test]
fn keeping_drops_what_no_longer_stands_and_the_first_to_expire() {
    let mut c = Checked::default();
    let tokens: Vec<Token> = (0..MAX_KEPT as u64 + 3)
        .map(|i| {
            let mut cl = claims();
            // Expiring in an order unlike the order kept.
            cl["exp"] = json!(NOW.0 + 3600 + (i * 7) % 11 * 60);
            cl["iat"] = json!(NOW.0 - 300 + i);
            token_with(cl)
        })
        .collect();
    for t in &tokens {
        assert!(c.keep(t, SET_AT, Some(SET_AT), NOW));
    }
    assert_eq!(c.len(), MAX_KEPT);
    // Expiries in minutes past the hour: 0 7 3 10 6 2 9 5, then 1, 8, 4.
    // Keeping the ninth (1) drops the first (0); the tenth (8) drops the
    // ninth (1); the eleventh (4) drops the sixth (2).
    let dropped: Vec<usize> = (0..tokens.len())
        .filter(|&i| c.verify(&tokens[i], &policy(), Some(SET_AT), NOW).is_none())
        .collect();
    assert_eq!(dropped, [0, 5, 8]);
    // Keeping the same token again does not keep it twice.
    let again = tokens.last().unwrap();
    assert!(c.keep(again, SET_AT, Some(SET_AT), NOW));
    assert_eq!(c.len(), MAX_KEPT);
    // A newer set (after a refresh): what was checked against the older
    // one is dropped as the new signature is kept.
    let new_set = UnixTime(NOW.0);
    assert!(c.keep(&tokens[0], new_set, Some(new_set), NOW));
    assert_eq!(c.len(), 1);
}

#[test]
fn only_the_stored_form_is_read() {
    let t = token();
    let good = kept(&t).encode();
    let text = String::from_utf8(good.clone()).unwrap();
    assert!(text.starts_with("cmk-checked-signatures/v1\n"));
    assert_eq!(Checked::decode(HEAD.as_bytes()), Some(Checked::default()));
    let (head, line) = text.split_once('\n').unwrap();
    let fields: Vec<&str> = line.split(' ').collect();
    let refused = [
        text.replace("/v1", "/v2"),
        format!("{head}\n{line} 7"),
        format!("{head}\n{} {}", fields[0], fields[1]),
        format!("{head}\n{}A {} {}", fields[0], fields[1], fields[2]),
        format!("{head}\n{} -{} {}", fields[0], fields[1], fields[2]),
        format!("{head}\n{} {} +{}", fields[0], fields[1], fields[2]),
        format!("{head}\n{} 0{} {}", fields[0], fields[1], fields[2]),
        format!("{head}\n{} {} {}", &fields[0][..40], fields[1], fields[2]),
        format!("{head}\n{line}\n"),
        format!("{head}\n{}", [line; MAX_KEPT + 1].join("\n")),
        format!(
            "{head}\n{} {} 99999999999999999999999",
            fields[0], fields[1]
        ),
    ];
    for r in &refused {
        assert_eq!(Checked::decode(r.as_bytes()), None, "{r:?}");
    }
    assert_eq!(Checked::decode(&[0xff, 0xfe]), None);
    // MAX_KEPT lines are read.
    let full = format!("{head}\n{}", [line; MAX_KEPT].join("\n"));
    assert_eq!(
        Checked::decode(full.as_bytes()).map(|c| c.len()),
        Some(MAX_KEPT)
    );
}

#[test]
fn the_digest_covers_the_signed_bytes_and_the_signature() {
    let text = sign(rs256(), claims());
    let t = Token::parse(&text).unwrap();
    // The documented construction, computed apart.
    let (signed, sig) = text.rsplit_once('.').unwrap();
    let mut expected = sha2::Sha256::new();
    use sha2::Digest;
    expected.update(b"cmk-ingest/token-signature/v1\0");
    expected.update((signed.len() as u64).to_be_bytes());
    expected.update(signed.as_bytes());
    expected.update(URL_SAFE_NO_PAD.decode(sig).unwrap());
    assert_eq!(t.signature_digest(), <[u8; 32]>::from(expected.finalize()));
}
