//! Sender tokens signed with the key whose public part the verifier trusts
//! (the record-format vectors' test key), so that the claims checks behind
//! the RS256 signature are reached (the `sender_token` target stops at the
//! signature). The first input byte picks the mode: fuzzed header and
//! payload bytes signed as they are, or a valid token's claims edited by a
//! fuzzed list of operations. A token the verifier accepts always satisfies
//! the policy, checked here independently.
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cmk_core::jwt::{self, Jwks, Policy, Token};
use cmk_core::time::UnixTime;
use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, NonZero, U1024, U2048};
use libfuzzer_sys::fuzz_target;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::{Digest, Sha256};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::{json, Value};
use std::sync::OnceLock;

const NOW: u64 = 1_800_000_000;
const PEM: &str = include_str!("../../tests/data/record-v1/test-kek.pem");

/// One prime of the key, for the CRT half of a signature.
struct Half {
    prime: DynResidueParams<{ U1024::LIMBS }>,
    wide: NonZero<U2048>,
    exponent: U1024,
}

struct Fixed {
    p: Half,
    q: Half,
    q_wide: U2048,
    q_inv: U1024,
    jwks: Jwks,
    policy: Policy,
}

fn u2048(n: &rsa::BigUint) -> U2048 {
    let b = n.to_bytes_be();
    let mut padded = [0u8; 256];
    padded[256 - b.len()..].copy_from_slice(&b);
    U2048::from_be_slice(&padded)
}

fn low(n: &U2048) -> U1024 {
    U1024::from_be_slice(&n.to_be_bytes()[128..])
}

fn wide(n: &U1024) -> U2048 {
    let mut b = [0u8; 256];
    b[128..].copy_from_slice(&n.to_be_bytes());
    U2048::from_be_slice(&b)
}

impl Half {
    fn new(prime: &rsa::BigUint, exponent: &rsa::BigUint) -> Self {
        let p = u2048(prime);
        Self {
            prime: DynResidueParams::new(&low(&p)),
            wide: NonZero::new(p).expect("a prime"),
            exponent: low(&u2048(exponent)),
        }
    }

    /// `c^exponent mod prime`.
    fn pow(&self, c: &U2048) -> DynResidue<{ U1024::LIMBS }> {
        DynResidue::new(&low(&c.rem(&self.wide)), self.prime).pow(&self.exponent)
    }
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017, 8.2.1), the exponentiation
/// done by crypto-bigint.
fn rs256(f: &Fixed, input: &[u8]) -> [u8; 256] {
    const DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let mut em = [0xffu8; 256];
    em[0] = 0;
    em[1] = 1;
    let t = 256 - DIGEST_INFO.len() - 32;
    em[t - 1] = 0;
    em[t..t + 19].copy_from_slice(&DIGEST_INFO);
    em[t + 19..].copy_from_slice(&Sha256::digest(input));
    // With the CRT (RFC 8017, 5.1.2): two 1024-bit exponentiations.
    let c = U2048::from_be_slice(&em);
    let m1 = f.p.pow(&c);
    let m2 = f.q.pow(&c).retrieve();
    let m2_p = DynResidue::new(&m2, f.p.prime);
    let h = ((m1 - m2_p) * DynResidue::new(&f.q_inv, f.p.prime)).retrieve();
    wide(&h)
        .wrapping_mul(&f.q_wide)
        .wrapping_add(&wide(&m2))
        .to_be_bytes()
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(PEM).expect("the test key reads");
        let public = private.to_public_key();
        let jwk = json!({"kty": "RSA", "use": "sig", "kid": "k1",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())});
        let [p, q] = private.primes() else {
            panic!("a two-prime key")
        };
        let f = Fixed {
            p: Half::new(p, private.dp().expect("precomputed")),
            q: Half::new(q, private.dq().expect("precomputed")),
            q_wide: u2048(q),
            q_inv: low(&u2048(&private.crt_coefficient().expect("precomputed"))),
            jwks: Jwks::parse(json!({"keys": [jwk]}).to_string().as_bytes())
                .expect("the JWKS parses"),
            policy: Policy {
                audiences: vec!["api://cmk-ingest".into(), "0000-app".into()],
                issuers: Policy::default_issuers("t"),
                tenant: "t".into(),
                roles: vec!["AzureEventGridSecureWebhookSubscriber".into()],
                app_ids: vec!["eventgrid-app".into()],
            },
        };
        // The signing here agrees with the RSA crate's.
        let reference = SigningKey::<Sha256>::new(private).sign(b"a.b").to_vec();
        assert_eq!(rs256(&f, b"a.b").to_vec(), reference);
        f
    })
}

fn sign(header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = rs256(fixed(), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

const CLAIMS: &[&str] = &[
    "aud", "iss", "tid", "azp", "appid", "oid", "roles", "exp", "nbf", "ver",
];

fn value(kind: u8, bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let n = bytes
        .iter()
        .fold(0u64, |a, b| a.wrapping_mul(257).wrapping_add(u64::from(*b)));
    match kind % 9 {
        0 => json!(text),
        1 => json!(n),
        2 => json!(NOW.wrapping_add(n % 1000).wrapping_sub(500)),
        3 => json!([text]),
        4 => json!(["api://cmk-ingest", text]),
        5 => Value::Null,
        6 => json!(-(n as i64 % 1000) as f64 / 3.0),
        7 => json!({"x": text}),
        _ => json!(["AzureEventGridSecureWebhookSubscriber"]),
    }
}

/// What the policy demands, checked apart from the verifier.
fn satisfies(c: &Value, p: &Policy) -> bool {
    let s = |k: &str| c.get(k).and_then(Value::as_str);
    let aud = match c.get("aud") {
        Some(Value::String(a)) => p.audiences.contains(a),
        Some(Value::Array(l)) => l
            .iter()
            .filter_map(Value::as_str)
            .any(|a| p.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    let roles = c.get("roles").and_then(Value::as_array).is_some_and(|r| {
        r.iter()
            .any(|x| x == "AzureEventGridSecureWebhookSubscriber")
    });
    let app = s("appid").or_else(|| s("azp"));
    // NumericDate (RFC 7519, 2): a non-negative JSON number, fractions
    // allowed; the verifier counts whole seconds.
    let time = |k: &str| c.get(k).and_then(Value::as_f64).filter(|t| *t >= 0.0);
    let leeway = jwt::LEEWAY_SECS as f64;
    let now = NOW as f64;
    let exp_ok = time("exp").is_some_and(|exp| exp + leeway >= now);
    let nbf_ok = match c.get("nbf") {
        None => true,
        Some(_) => time("nbf").is_some_and(|nbf| nbf.floor() <= now + leeway),
    };
    aud && s("iss").is_some_and(|i| p.issuers.iter().any(|x| x == i))
        && s("tid") == Some("t")
        && roles
        && app == Some("eventgrid-app")
        && exp_ok
        && nbf_ok
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixed();
    let (token, claims) = if mode & 1 == 0 {
        // Header NUL payload, both as they come.
        let (h, p) = match rest.iter().position(|b| *b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&br#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#[..], rest),
        };
        (sign(h, p), serde_json::from_slice::<Value>(p).ok())
    } else {
        let mut c = json!({"aud": "api://cmk-ingest", "iss": "https://login.microsoftonline.com/t/v2.0",
            "tid": "t", "azp": "eventgrid-app", "oid": "o",
            "roles": ["AzureEventGridSecureWebhookSubscriber"], "nbf": NOW - 300, "exp": NOW + 3600});
        let mut ops = rest;
        while let [op, kind, len, tail @ ..] = ops {
            let n = usize::from(*len % 32).min(tail.len());
            let (bytes, tail) = tail.split_at(n);
            let name = CLAIMS[usize::from(*op) % CLAIMS.len()];
            if op & 0x80 != 0 {
                c.as_object_mut().expect("an object").remove(name);
            } else {
                c[name] = value(*kind, bytes);
            }
            ops = tail;
        }
        let header = json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}).to_string();
        (sign(header.as_bytes(), c.to_string().as_bytes()), Some(c))
    };
    let Ok(parsed) = Token::parse(&token) else {
        return;
    };
    if jwt::verify(&parsed, &f.jwks, &f.policy, UnixTime(NOW)).is_ok() {
        let c = claims.expect("an accepted token has JSON claims");
        assert!(satisfies(&c, &f.policy), "accepted claims {c}");
    }
});
