//! CPU cost of sealing and opening protected fields, per KB of plaintext.
//!
//! Built natively (`cargo run --release --example envelope-bench`) and for
//! the component's target, run inside Wasmtime (scripts/bench-envelope does
//! both and prints one table). Each size seals a document with three
//! protected fields holding that many bytes in all, then opens it, in a
//! loop of at least `--secs` seconds (default 2); the figure is CPU time
//! per operation (the loop is single-threaded and does no I/O), and per KB.
//! Nonces come from a counter rather than the host's random source, so the
//! figure is the AEAD and JSON work alone.
//!
//! Then it wraps a 32-byte data key locally (`hsm_local_wrap`: RSA-OAEP-256
//! with the public part of the 2048-bit test key, `hsm::wrap_locally`), the
//! per-delivery public-key operation, with a counter as the random source,
//! both making the modulus's constant (R^2 mod n) each time (`wrap-local`)
//! and with it kept as the component keeps it with the key's state
//! (`wrap-local-kept`, `hsm::wrap_locally_kept`), and checks a sender's RS256 Entra ID token (parse and `jwt::verify`, the
//! RSA public-key operation and the claims), once per delivery with Entra
//! authentication.
//!
//! Output: CSV lines `target,size_bytes,op,ns_per_op,ns_per_kb,iterations`.
//!
//! `--wrap-only N` does exactly N local wraps and prints one line, nothing
//! else: scripts/bench-envelope runs it under `valgrind --tool=cachegrind`
//! inside Wasmtime with N = 0 and N = 100 to count machine instructions per
//! wrap (a figure the machine's load does not move).

use std::time::{Duration, Instant};

use cmk_core::cosmos::Endpoint;
use cmk_core::envelope::{self, Dek};
use cmk_core::hsm::{self, KeyInfo};
use cmk_core::jwt::{self, Jwks, Policy, Token};
use cmk_core::time::UnixTime;
use serde_json::{json, Value};

fn document(total: usize) -> Value {
    let each = total / 3;
    let field = |c: char| c.to_string().repeat(each.max(1));
    json!({
        "id": "c0114e694b0dbc4eff002a3fa6e240759991be2505d38676b32d86010c21c31e",
        "pk": "/topics/bench",
        "v": 1,
        "event": {"specversion": "1.0", "id": "1", "source": "/topics/bench", "type": "T",
                  "data": {"name": field('a'), "ssn": field('b'), "note": field('c'), "ward": 7}},
    })
}

fn run(secs: f64, mut f: impl FnMut()) -> (u64, Duration) {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget || n < 10 {
        f();
        n += 1;
    }
    (n, start.elapsed())
}

fn test_key_part(k: &str) -> rsa::BigUint {
    let v: Value = serde_json::from_str(include_str!("../tests/data/rsa-2048-test-key.json"))
        .expect("test key");
    rsa::BigUint::parse_bytes(v[k].as_str().expect("hex").as_bytes(), 16).expect("hex")
}

/// An RS256 token signed with the test key, the JWKS that holds its public
/// part, and a policy it satisfies at `now`.
fn signed_token(now: u64) -> (String, Jwks, Policy) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use rsa::signature::{SignatureEncoding, Signer};
    let private = rsa::RsaPrivateKey::from_components(
        test_key_part("n"),
        test_key_part("e"),
        test_key_part("d"),
        vec![test_key_part("p"), test_key_part("q")],
    )
    .expect("test key");
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT", "kid": "k1"})),
        b64(
            &json!({"aud": "api://cmk-ingest", "iss": format!("https://sts.windows.net/{tenant}/"),
                    "tid": tenant, "oid": "00000000-0000-0000-0000-000000000001",
                    "roles": ["AzureEventGridSecureWebhookSubscriber"],
                    "nbf": now - 60, "exp": now + 3600})
        )
    );
    let signature = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private).sign(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    let jwks = json!({"keys": [{"kty": "RSA", "use": "sig", "kid": "k1",
        "n": URL_SAFE_NO_PAD.encode(test_key_part("n").to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(test_key_part("e").to_bytes_be())}]});
    let jwks = Jwks::parse(jwks.to_string().as_bytes()).expect("jwks");
    let policy = Policy {
        audiences: vec!["api://cmk-ingest".into()],
        issuers: Policy::default_issuers(tenant),
        tenant: tenant.into(),
        roles: vec!["AzureEventGridSecureWebhookSubscriber".into()],
        app_ids: vec![],
    };
    (token, jwks, policy)
}

/// The public part of the 2048-bit test key (e = 65537), as the HSM
/// describes it.
fn test_key() -> KeyInfo {
    let bytes = |k: &str| test_key_part(k).to_bytes_be();
    KeyInfo {
        kid: "https://contoso.managedhsm.azure.net/keys/app-kek/0123456789abcdef".into(),
        kty: "RSA-HSM".into(),
        key_ops: vec!["wrapKey".into(), "unwrapKey".into()],
        n: bytes("n"),
        e: bytes("e"),
        enabled: true,
        not_before: None,
        expires: None,
        recovery_level: None,
    }
}

fn main() {
    let mut secs = 2.0;
    // `--only OP N`: OP (wrap-local, wrap-local-kept or jwt-verify) exactly N times and
    // nothing else, for instruction counts; `--wrap-only N` is
    // `--only wrap-local N`.
    let mut only: Option<(String, u64)> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--secs" {
            secs = args.next().and_then(|v| v.parse().ok()).expect("--secs N");
        } else if a == "--wrap-only" || a == "--only" {
            let op = match a.as_str() {
                "--only" => args.next().expect("--only OP N"),
                _ => "wrap-local".into(),
            };
            let n = args.next().and_then(|v| v.parse().ok()).expect("a count");
            only = Some((op, n));
        }
    }
    let target = if cfg!(target_arch = "wasm32") {
        "wasm32-wasip2"
    } else {
        "native"
    };
    let key = test_key();
    let vault = Endpoint::parse("https://contoso.managedhsm.azure.net").expect("endpoint");
    // A counter as the OAEP seed: the figure is the RSA-OAEP work alone.
    let kept = hsm::ModulusConstant::of(&key).expect("the test key's constant");
    let counter = std::cell::Cell::new(0u8);
    let wrap_with = |kept: Option<&hsm::ModulusConstant>| {
        let dek = [7u8; 32];
        counter.set(counter.get().wrapping_add(1));
        let w =
            hsm::wrap_locally_kept(&key, &vault, &dek, &[counter.get(); 32], kept).expect("wrap");
        assert!(!w.1, "the test key's own constant is taken");
        std::hint::black_box(w);
    };
    let mut wrap = || wrap_with(None);
    let mut wrap_kept = || wrap_with(Some(&kept));
    let now = 1_800_000_000;
    let (token, jwks, policy) = signed_token(now);
    let mut verify = || {
        let parsed = Token::parse(&token).expect("token");
        std::hint::black_box(jwt::verify(&parsed, &jwks, &policy, UnixTime(now)).expect("valid"));
    };
    if let Some((op, n)) = only {
        for _ in 0..n {
            match op.as_str() {
                "wrap-local" => wrap(),
                "wrap-local-kept" => wrap_kept(),
                "jwt-verify" => verify(),
                other => panic!("no op {other}"),
            }
        }
        println!("{target},{op},{n}");
        return;
    }
    let dek = Dek::from_bytes(&[7u8; 32]).unwrap();
    let kid = "https://contoso.managedhsm.azure.net/keys/app-kek/0123456789abcdef0123456789abcdef";
    let pointers: Vec<String> = ["/event/data/name", "/event/data/ssn", "/event/data/note"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut counter = 0u64;
    let mut nonce = move || {
        counter += 1;
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&counter.to_be_bytes());
        n
    };
    for size in [256usize, 1024, 10 * 1024, 100 * 1024] {
        let doc = document(size);
        let mut sealed = doc.clone();
        envelope::seal(&mut sealed, &pointers, &dek, kid, b"wrapped", &mut nonce).unwrap();
        let (n, t) = run(secs, || {
            let mut d = doc.clone();
            envelope::seal(&mut d, &pointers, &dek, kid, b"wrapped", &mut nonce).unwrap();
            std::hint::black_box(d);
        });
        report(target, size, "seal", n, t);
        let (n, t) = run(secs, || {
            std::hint::black_box(envelope::open(&sealed, &dek, None).unwrap());
        });
        report(target, size, "open", n, t);
    }
    // One wrap per delivery; ns_per_kb is per KB of the 32-byte data key.
    let (n, t) = run(secs, &mut wrap);
    report(target, 32, "wrap-local", n, t);
    let (n, t) = run(secs, &mut wrap_kept);
    report(target, 32, "wrap-local-kept", n, t);
    // One token check per delivery; ns_per_kb is per KB of the token.
    let (n, t) = run(secs, &mut verify);
    report(target, token.len(), "jwt-verify", n, t);
}

fn report(target: &str, size: usize, op: &str, n: u64, t: Duration) {
    let ns = t.as_nanos() as f64 / n as f64;
    println!(
        "{target},{size},{op},{ns:.0},{:.0},{n}",
        ns / (size as f64 / 1024.0)
    );
}
