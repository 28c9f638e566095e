//! Known-answer and behaviour tests of [`super`] (`hsm`).
//!
//! Length: every request, answer and refusal of the Managed HSM boundary in
//! one place, each test short; split by topic, the parts would share the
//! test key, the vault and the answer builders.

use super::*;
use crate::api::ApiError;

#[test]
fn key_failures_fail_closed_but_keep_events_for_redelivery() {
    let disabled = ApiError::from(&HsmError::KeyUnavailable {
        reason: Unavailable::Disabled,
        message: "m".into(),
    });
    assert_eq!(
        (
            disabled.status.as_u16(),
            disabled.code,
            disabled.retry_after
        ),
        (503, "KeyDisabled", Some(60))
    );
    let denied = ApiError::from(&HsmError::KeyUnavailable {
        reason: Unavailable::AccessDenied,
        message: "m".into(),
    });
    assert_eq!(denied.code, "KeyAccessDenied");
    let busy = ApiError::from(&HsmError::Transient {
        status: 429,
        message: "m".into(),
        retry_after_secs: Some(2),
    });
    assert_eq!((busy.status.as_u16(), busy.retry_after), (503, Some(2)));
}

#[test]
fn a_wrap_or_unwrap_answer_must_name_the_requested_version() {
    let v = vault();
    let requested = KeyRef {
        name: "app-kek".into(),
        version: Some("v2".into()),
    };
    let answer = |kid: &str| resp(200, &format!(r#"{{"kid":"{kid}","value":"AQID"}}"#));
    let ok = parse_crypt_for(
        &answer("https://contoso.managedhsm.azure.net/keys/app-kek/v2"),
        &requested,
        &v,
    )
    .unwrap();
    assert_eq!(ok.value, [1, 2, 3]);
    for other in [
        "https://contoso.managedhsm.azure.net/keys/app-kek/v1",
        "https://contoso.managedhsm.azure.net/keys/app-kek",
        "https://contoso.managedhsm.azure.net/keys/other/v2",
        "https://elsewhere.managedhsm.azure.net/keys/app-kek/v2",
        "k",
    ] {
        assert!(
            matches!(
                parse_crypt_for(&answer(other), &requested, &v),
                Err(HsmError::InvalidResponse(_))
            ),
            "{other}"
        );
    }
}

fn vault() -> Endpoint {
    Endpoint::parse("https://contoso.managedhsm.azure.net").unwrap()
}

fn resp(status: u16, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .body(body.as_bytes().to_vec())
        .unwrap()
}

#[test]
fn key_ids_must_name_this_vault() {
    let v = vault();
    assert_eq!(
        KeyRef::from_kid("https://contoso.managedhsm.azure.net/keys/kek/0123abcd", &v).unwrap(),
        KeyRef {
            name: "kek".into(),
            version: Some("0123abcd".into())
        }
    );
    assert_eq!(
        KeyRef::from_kid("https://contoso.managedhsm.azure.net/keys/kek", &v)
            .unwrap()
            .version,
        None
    );
    let with_port = Endpoint::parse("https://contoso.managedhsm.azure.net:443").unwrap();
    assert!(KeyRef::from_kid(
        "https://contoso.managedhsm.azure.net/keys/kek/1",
        &with_port
    )
    .is_ok());
    for bad in [
        "https://evil.example/keys/kek/1",
        "https://contoso.managedhsm.azure.net.evil.example/keys/kek/1",
        "https://contoso.managedhsm.azure.net/secrets/kek/1",
        "https://contoso.managedhsm.azure.net/keys/../x/1",
        "https://contoso.managedhsm.azure.net/keys/kek/1/wrapkey",
        "https://contoso.managedhsm.azure.net/keys/kek/1//",
        "https://contoso.managedhsm.azure.net/keys/kek//",
    ] {
        assert!(KeyRef::from_kid(bad, &v).is_err(), "{bad}");
    }
}

#[test]
fn requests_carry_the_pinned_api_version_and_token() {
    let k = KeyRef {
        name: "kek".into(),
        version: Some("v1".into()),
    };
    let r = get_key_request(
        &vault(),
        &KeyRef {
            name: "kek".into(),
            version: None,
        },
        "tok",
    );
    assert_eq!(
        r.uri().to_string(),
        "https://contoso.managedhsm.azure.net/keys/kek/?api-version=2025-07-01"
    );
    assert_eq!(r.headers()["authorization"], "Bearer tok");
    let w = wrap_request(&vault(), &k, &[0xfb, 0xff, 0x01], "tok").unwrap();
    assert_eq!(w.uri().path(), "/keys/kek/v1/wrapkey");
    let body: serde_json::Value = serde_json::from_slice(w.body()).unwrap();
    assert_eq!(body, json!({"alg": "RSA-OAEP-256", "value": "-_8B"}));
    assert_eq!(
        unwrap_request(&vault(), &k, b"x", "t")
            .unwrap()
            .uri()
            .path(),
        "/keys/kek/v1/unwrapkey"
    );
    assert!(wrap_request(
        &vault(),
        &KeyRef {
            name: "kek".into(),
            version: None
        },
        b"x",
        "t"
    )
    .is_err());
}

fn bundle(enabled: bool, ops: &str, kty: &str, nbf: Option<u64>, exp: Option<u64>) -> String {
    let n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
    let mut attrs = json!({"enabled": enabled, "created": 1, "updated": 1, "recoveryLevel": "Recoverable+Purgeable"});
    if let Some(v) = nbf {
        attrs["nbf"] = json!(v);
    }
    if let Some(v) = exp {
        attrs["exp"] = json!(v);
    }
    json!({"key": {"kid": "https://contoso.managedhsm.azure.net/keys/kek/v1", "kty": kty,
                   "key_ops": ops.split(',').collect::<Vec<_>>(), "n": n, "e": "AQAB"},
           "attributes": attrs})
    .to_string()
}

#[test]
fn key_state_decides_usability() {
    let now = UnixTime(1_000);
    let ok = parse_key(&resp(
        200,
        &bundle(true, "wrapKey,unwrapKey", "RSA-HSM", Some(10), Some(2_000)),
    ))
    .unwrap();
    assert_eq!(ok.e, vec![1, 0, 1]);
    assert_eq!(ok.recovery_level.as_deref(), Some("Recoverable+Purgeable"));
    assert!(check_usable(&ok, KeyOp::Wrap, now).is_ok());
    assert!(check_usable(&ok, KeyOp::Unwrap, now).is_ok());
    let reason = |b: &str, op| match check_usable(&parse_key(&resp(200, b)).unwrap(), op, now) {
        Err(HsmError::KeyUnavailable { reason, .. }) => Some(reason),
        _ => None,
    };
    assert_eq!(
        reason(
            &bundle(false, "wrapKey,unwrapKey", "RSA-HSM", None, None),
            KeyOp::Wrap
        ),
        Some(Unavailable::Disabled)
    );
    assert_eq!(
        reason(
            &bundle(true, "wrapKey", "RSA-HSM", None, None),
            KeyOp::Unwrap
        ),
        Some(Unavailable::OperationNotPermitted)
    );
    assert_eq!(
        reason(
            &bundle(true, "wrapKey,unwrapKey", "RSA-HSM", Some(5_000), None),
            KeyOp::Wrap
        ),
        Some(Unavailable::NotYetValid)
    );
    assert_eq!(
        reason(
            &bundle(true, "wrapKey,unwrapKey", "RSA-HSM", None, Some(1_000)),
            KeyOp::Wrap
        ),
        Some(Unavailable::Expired)
    );
    assert_eq!(
        reason(
            &bundle(true, "wrapKey,unwrapKey", "RSA", None, None),
            KeyOp::Wrap
        ),
        Some(Unavailable::WrongKeyType)
    );
    assert_eq!(
        reason(
            &bundle(true, "wrapKey,unwrapKey", "EC-HSM", None, None),
            KeyOp::Wrap
        ),
        Some(Unavailable::WrongKeyType)
    );
}

#[test]
fn service_errors_fail_closed() {
    let disabled = r#"{"error":{"code":"Forbidden","message":"Operation unwrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#;
    assert!(matches!(
        parse_crypt(&resp(403, disabled)),
        Err(HsmError::KeyUnavailable {
            reason: Unavailable::Disabled,
            ..
        })
    ));
    let denied = r#"{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.","innererror":{"code":"AccessDenied"}}}"#;
    assert!(matches!(
        parse_crypt(&resp(403, denied)),
        Err(HsmError::KeyUnavailable {
            reason: Unavailable::AccessDenied,
            ..
        })
    ));
    let ops = r#"{"error":{"code":"Forbidden","message":"Operation decrypt is not permitted on this key.","innererror":{"code":"KeyOperationForbidden"}}}"#;
    assert!(matches!(
        parse_crypt(&resp(403, ops)),
        Err(HsmError::KeyUnavailable {
            reason: Unavailable::OperationNotPermitted,
            ..
        })
    ));
    let missing = r#"{"error":{"code":"KeyNotFound","message":"A key with (name/id) kek was not found in this key vault."}}"#;
    assert!(matches!(
        parse_key(&resp(404, missing)),
        Err(HsmError::KeyUnavailable {
            reason: Unavailable::NotFound,
            ..
        })
    ));
    // A 404 that does not say KeyNotFound (a proxy's page, another pool)
    // says nothing about the key: not NotFound, which erasure acts on.
    for other in [
        "<html><body>404 Not Found</body></html>",
        r#"{"error":{"code":"ResourceNotFound","message":"The HSM pool was not found"}}"#,
        "",
    ] {
        let e = parse_key(&resp(404, other)).unwrap_err();
        assert!(
            matches!(e, HsmError::Rejected { status: 404, .. }),
            "{other}: {e:?}"
        );
    }
    assert!(matches!(
        parse_key(&resp(401, "")),
        Err(HsmError::Unauthorized(_))
    ));
    let throttled = Response::builder()
        .status(429)
        .header("retry-after", "3")
        .body(b"{}".to_vec())
        .unwrap();
    assert_eq!(
        parse_key(&throttled).unwrap_err(),
        HsmError::Transient {
            status: 429,
            message: "Too Many Requests".into(),
            retry_after_secs: Some(3)
        }
    );
    assert!(parse_crypt(&resp(503, "")).unwrap_err().is_transient());
    assert!(matches!(
        parse_crypt(&resp(
            400,
            r#"{"error":{"code":"BadParameter","message":"x"}}"#
        )),
        Err(HsmError::Rejected { .. })
    ));
}

/// A deterministic generator for tests only (SHA-256 in counter mode).
#[derive(Clone)]
struct TestRng(u64);

impl rsa::rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        rsa::rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rsa::rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            self.0 += 1;
            let block = <sha2::Sha256 as sha2::Digest>::digest(self.0.to_be_bytes());
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for TestRng {}

impl TestRng {
    /// An OAEP seed: the next 32 bytes, as the `rsa` crate draws its own.
    fn seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        rsa::rand_core::RngCore::fill_bytes(self, &mut seed);
        seed
    }
}

/// The throwaway test key in tests/data (made with Python
/// `cryptography`), as the HSM would describe its public part, and its
/// private part for checking.
fn test_key() -> (KeyInfo, rsa::RsaPrivateKey) {
    let v: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/rsa-2048-test-key.json"
    )))
    .unwrap();
    let int = |k: &str| rsa::BigUint::parse_bytes(v[k].as_str().unwrap().as_bytes(), 16).unwrap();
    let private =
        rsa::RsaPrivateKey::from_components(int("n"), int("e"), int("d"), vec![int("p"), int("q")])
            .unwrap();
    let info = KeyInfo {
        kid: "https://contoso.managedhsm.azure.net/keys/kek/0123456789abcdef".into(),
        kty: "RSA-HSM".into(),
        key_ops: vec!["wrapKey".into(), "unwrapKey".into()],
        n: int("n").to_bytes_be(),
        e: int("e").to_bytes_be(),
        enabled: true,
        not_before: None,
        expires: None,
        recovery_level: None,
    };
    (info, private)
}

#[test]
fn a_locally_wrapped_data_key_unwraps_with_the_private_key() {
    let (key, private) = test_key();
    let dek: Vec<u8> = (0u8..32).collect();
    let mut rng = TestRng(0);
    let a = wrap_locally(&key, &vault(), &dek, &rng.seed()).unwrap();
    assert_eq!(a.kid, key.kid, "the exact versioned key id");
    assert_eq!(a.value.len(), 256, "one RSA-2048 block");
    assert_eq!(
        private
            .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &a.value)
            .unwrap(),
        dek
    );
    // OAEP is randomized: a second wrap differs and still unwraps.
    let b = wrap_locally(&key, &vault(), &dek, &rng.seed()).unwrap();
    assert_ne!(a.value, b.value);
    assert_eq!(
        private
            .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &b.value)
            .unwrap(),
        dek
    );
    // The label is empty, as the HSM's: a labelled decryption fails.
    assert!(private
        .decrypt(
            rsa::Oaep::new_with_label::<sha2::Sha256, _>("cmk"),
            &a.value
        )
        .is_err());
}

#[test]
fn local_wrapping_needs_a_versioned_key_of_this_vault_and_a_real_key() {
    let (key, _) = test_key();
    let dek = [7u8; 32];
    let mut rng = TestRng(0);
    let unversioned = KeyInfo {
        kid: "https://contoso.managedhsm.azure.net/keys/kek".into(),
        ..key.clone()
    };
    assert!(matches!(
        wrap_locally(&unversioned, &vault(), &dek, &rng.seed()),
        Err(HsmError::InvalidKeyId(_))
    ));
    let elsewhere = KeyInfo {
        kid: "https://evil.example/keys/kek/1".into(),
        ..key.clone()
    };
    assert!(matches!(
        wrap_locally(&elsewhere, &vault(), &dek, &rng.seed()),
        Err(HsmError::InvalidKeyId(_))
    ));
    let broken = KeyInfo {
        e: vec![],
        ..key.clone()
    };
    assert!(matches!(
        wrap_locally(&broken, &vault(), &dek, &rng.seed()),
        Err(HsmError::InvalidResponse(_))
    ));
}

#[test]
fn the_local_wrap_is_the_rsa_crates_oaep_byte_for_byte() {
    // The same seed (the only random input) gives the same ciphertext as
    // the `rsa` crate's RSA-OAEP with SHA-256 for every message length up
    // to the limit, and the private key opens it.
    let (key, private) = test_key();
    let public = rsa::RsaPublicKey::from(&private);
    for (i, len) in [0usize, 1, 16, 31, 32, 33, 100, 189, 190]
        .into_iter()
        .enumerate()
    {
        let msg: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let mut ours = TestRng(1000 * i as u64);
        let mut theirs = ours.clone();
        let a = wrap_locally(&key, &vault(), &msg, &ours.seed()).unwrap();
        let b = public
            .encrypt(&mut theirs, rsa::Oaep::new::<sha2::Sha256>(), &msg)
            .unwrap();
        assert_eq!(a.value, b, "message of {len} bytes");
        assert_eq!(
            private
                .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &a.value)
                .unwrap(),
            msg
        );
    }
    // k - 2 hLen - 2 = 190 bytes is the most one 2048-bit block holds.
    assert!(matches!(
        wrap_locally(&key, &vault(), &[0u8; 191], &TestRng(0).seed()),
        Err(HsmError::InvalidResponse(_))
    ));
}

#[test]
fn the_modular_exponentiation_agrees_with_num_bigint() {
    // Random odd moduli of every length class (whole 27-bit limbs and not,
    // whole eight-limb SIMD steps and a four-limb one past them, whole
    // bytes and not), exponents from 3 to 64 bits, messages from 0 to
    // n - 1; and moduli of all ones, whose limbs and sums are the largest.
    use rsa::BigUint;
    let mut rng = TestRng(7);
    let mut bytes = |len: usize| {
        let mut b = vec![0u8; len];
        rsa::rand_core::RngCore::fill_bytes(&mut rng, &mut b);
        b
    };
    let sizes = [
        2048usize, 2049, 2070, 2100, 2500, 3000, 3072, 3100, 4095, 4096,
    ];
    let all_ones = [2048usize, 2052, 4096];
    for (bits, ones) in sizes
        .iter()
        .map(|&b| (b, false))
        .chain(all_ones.iter().map(|&b| (b, true)))
    {
        let k = bits.div_ceil(8);
        let mut n = if ones { vec![0xff; k] } else { bytes(k) };
        n[0] &= 0xffu8 >> (8 * k - bits);
        n[0] |= 0x80u8 >> (8 * k - bits);
        n[k - 1] |= 1;
        let big_n = BigUint::from_bytes_be(&n);
        let n_minus_1 = (&big_n - 1u32).to_bytes_be();
        for e in [3u64, 17, 65537, (1 << 61) - 1, u64::MAX] {
            let key = oaep::PublicKey::new(&n, &e.to_be_bytes()).unwrap();
            let mut r = bytes(k);
            r[0] = 0; // below n
            for m in [vec![0u8], vec![1u8], n_minus_1.clone(), r] {
                let want = BigUint::from_bytes_be(&m).modpow(&BigUint::from(e), &big_n);
                let mut want = want.to_bytes_be();
                while want.len() < k {
                    want.insert(0, 0);
                }
                let mut padded = vec![0u8; k - m.len()];
                padded.extend_from_slice(&m);
                assert_eq!(key.raw(&padded), want, "{bits}-bit n, e = {e}");
            }
        }
    }
}

#[test]
fn generated_keys_of_each_hsm_size_unwrap_local_wraps() {
    let mut rng = TestRng(42);
    for bits in [2048usize, 2048, 3072] {
        let private = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
        let key = KeyInfo {
            n: rsa::traits::PublicKeyParts::n(&private).to_bytes_be(),
            e: rsa::traits::PublicKeyParts::e(&private).to_bytes_be(),
            ..test_key().0
        };
        for _ in 0..3 {
            let mut dek = [0u8; 32];
            rsa::rand_core::RngCore::fill_bytes(&mut rng, &mut dek);
            let w = wrap_locally(&key, &vault(), &dek, &rng.seed()).unwrap();
            assert_eq!(w.value.len(), bits / 8);
            assert_eq!(
                private
                    .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &w.value)
                    .unwrap(),
                dek
            );
        }
    }
}

#[test]
fn local_wrapping_refuses_keys_the_hsm_would_not_make() {
    let (key, _) = test_key();
    let odd_1024 = {
        let mut n = vec![0xc5u8; 128];
        n[127] = 0x01;
        n
    };
    let odd_4104 = vec![0xffu8; 513];
    let mut even = key.n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    for (n, e) in [
        (odd_1024, key.e.clone()),
        (odd_4104, key.e.clone()),
        (even, key.e.clone()),
        (vec![], key.e.clone()),
        (key.n.clone(), vec![1]),
        (key.n.clone(), vec![0, 0, 1, 0, 0]),
        (key.n.clone(), vec![1; 9]),
    ] {
        let bad = KeyInfo {
            n,
            e,
            ..key.clone()
        };
        assert!(matches!(
            wrap_locally(&bad, &vault(), &[7u8; 32], &TestRng(0).seed()),
            Err(HsmError::InvalidResponse(_))
        ));
    }
    // Leading zero bytes are not part of the length.
    let padded = KeyInfo {
        n: [vec![0, 0], key.n.clone()].concat(),
        e: [vec![0], key.e.clone()].concat(),
        ..key.clone()
    };
    assert_eq!(
        wrap_locally(&padded, &vault(), &[7u8; 32], &TestRng(3).seed()).unwrap(),
        wrap_locally(&key, &vault(), &[7u8; 32], &TestRng(3).seed()).unwrap()
    );
}

/// The modulus's constant (R^2 mod n, R = 2^(27 · 76) for a 2048-bit key),
/// checked against big-integer arithmetic; kept, it changes no wrap; one
/// that is not the modulus's own is refused, and the wrap is still right.
#[test]
fn a_kept_modulus_constant_changes_the_work_and_nothing_else() {
    let (key, private) = test_key();
    let kept = ModulusConstant::of(&key).unwrap();
    let n = rsa::BigUint::from_bytes_be(&key.n);
    let r2 = (rsa::BigUint::from(1u8) << (2 * 27 * 76)) % &n;
    let mut expected = vec![0u8; 256 - r2.to_bytes_be().len()];
    expected.extend(r2.to_bytes_be());
    assert_eq!(kept.0, expected);
    let public = || oaep::PublicKey::new(&key.n, &key.e).unwrap();
    assert!(
        public().use_r_squared(&kept.0),
        "the right constant is taken"
    );

    let dek = [7u8; 32];
    let made = wrap_locally(&key, &vault(), &dek, &TestRng(5).seed()).unwrap();
    let (with_kept, set_aside) =
        wrap_locally_kept(&key, &vault(), &dek, &TestRng(5).seed(), Some(&kept)).unwrap();
    assert!(!set_aside, "the right constant is used");
    assert_eq!(with_kept, made);
    assert_eq!(
        private
            .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &with_kept.value)
            .unwrap(),
        dek
    );

    let mut flipped = kept.0.clone();
    flipped[200] ^= 1;
    // Below 2^2048 for this key, so 256 bytes: refused for not being below n.
    let above = (&r2 + &n).to_bytes_be();
    assert_eq!(above.len(), 256);
    for bad in [
        flipped,
        kept.0[1..].to_vec(),
        key.n.clone(),
        vec![0u8; 256],
        vec![0xff; 256],
        above,
    ] {
        assert!(!public().use_r_squared(&bad), "refused");
        let bad = ModulusConstant(bad);
        assert_eq!(
            wrap_locally_kept(&key, &vault(), &dek, &TestRng(5).seed(), Some(&bad)).unwrap(),
            (made.clone(), true),
            "a wrong constant is set aside, and says so"
        );
    }

    // Kept in the key's cached state as unpadded base64url.
    let text = serde_json::to_string(&kept).unwrap();
    assert!(text.starts_with('"') && !text.contains('='), "{text}");
    assert_eq!(
        serde_json::from_str::<ModulusConstant>(&text).unwrap(),
        kept
    );
}

/// The constant and its check at every size a Managed HSM key has (and
/// the odd sizes between), against big-integer arithmetic: made right,
/// taken when right, refused when one off, and an exponentiation with it
/// the same as without. Any odd number of the size will do as the modulus.
#[test]
fn the_modulus_constant_is_right_at_every_key_size() {
    for (bits, seed) in [
        (2048u64, 1u64),
        (2049, 2),
        (2056, 3),
        (3071, 4),
        (3072, 5),
        (4095, 6),
        (4096, 7),
    ] {
        let mut rng = TestRng(seed);
        let k = bits.div_ceil(8) as usize;
        let mut n_bytes: Vec<u8> = (0..k).map(|_| rng.seed()[0]).collect();
        let top = (bits - 1) % 8;
        n_bytes[0] = (n_bytes[0] & ((1u16 << (top + 1)) - 1) as u8) | (1 << top);
        n_bytes[k - 1] |= 1;
        let n = rsa::BigUint::from_bytes_be(&n_bytes);
        assert_eq!(n.bits() as u64, bits);
        let limbs = (8 * k + 1).div_ceil(27).next_multiple_of(4);
        let r2 = (rsa::BigUint::from(1u8) << (2 * 27 * limbs)) % &n;
        let mut expected = vec![0u8; k - r2.to_bytes_be().len()];
        expected.extend(r2.to_bytes_be());
        let e = [1u8, 0, 1];
        let made = oaep::PublicKey::new(&n_bytes, &e).unwrap();
        assert_eq!(made.r_squared_bytes(), expected, "{bits} bits");
        let mut kept = oaep::PublicKey::new(&n_bytes, &e).unwrap();
        assert!(
            kept.use_r_squared(&expected),
            "{bits} bits: the right one is taken"
        );
        let mut off = expected.clone();
        off[k - 1] ^= 1;
        assert!(
            !oaep::PublicKey::new(&n_bytes, &e)
                .unwrap()
                .use_r_squared(&off),
            "{bits} bits"
        );
        let m: Vec<u8> = (0..k - 1)
            .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
            .collect();
        let want = rsa::BigUint::from_bytes_be(&m).modpow(&rsa::BigUint::from(65537u32), &n);
        let mut want_bytes = vec![0u8; k - want.to_bytes_be().len()];
        want_bytes.extend(want.to_bytes_be());
        assert_eq!(made.raw(&m), want_bytes, "{bits} bits, made");
        assert_eq!(kept.raw(&m), want_bytes, "{bits} bits, kept");
    }
}

#[test]
fn crypt_results_accept_every_base64_form() {
    for v in ["-_8B", "-_8B=", "+/8B"] {
        let r = parse_crypt(&resp(200, &format!(r#"{{"kid":"k","value":"{v}"}}"#))).unwrap();
        assert_eq!(r.value, vec![0xfb, 0xff, 0x01], "{v}");
    }
    assert!(matches!(
        parse_crypt(&resp(200, r#"{"kid":"k","value":"*"}"#)),
        Err(HsmError::InvalidResponse(_))
    ));
}

fn key_version(version: &str, enabled: bool) -> KeyInfo {
    KeyInfo {
        kid: format!("https://hsm.example/keys/app-kek/{version}"),
        kty: "RSA-HSM".into(),
        key_ops: vec![],
        n: vec![1],
        e: vec![1, 0, 1],
        enabled,
        not_before: None,
        expires: Some(2_000_000_000),
        recovery_level: None,
    }
}

#[test]
fn a_state_is_news_only_when_it_changed_or_is_first_remembered() {
    let on = key_version("v1", true);
    assert!(!state_changed(true, Some(&on), &on));
    assert!(state_changed(true, Some(&on), &key_version("v1", false)));
    assert!(state_changed(true, Some(&on), &key_version("v2", true)));
    let mut later = on.clone();
    later.expires = Some(2_100_000_000);
    assert!(state_changed(true, Some(&on), &later));
    // The first read into a store is logged once; without a store every
    // read is a first read, and none is logged.
    assert!(state_changed(true, None, &on));
    assert!(!state_changed(false, None, &on));
}

#[test]
fn a_cached_key_state_is_used_only_while_fresh_and_not_from_the_future() {
    let now = UnixTime(1_800_000_000);
    let skew = crate::time::CLOCK_SKEW_SECS;
    let at = |t: u64| UnixTime(t);
    // Fresh: checked just now, or a little less than the period ago.
    assert!(cached_state_usable(now, now, 300));
    assert!(cached_state_usable(at(now.0 - 299), now, 300));
    // Stale: the period is over.
    assert!(!cached_state_usable(at(now.0 - 300), now, 300));
    assert!(!cached_state_usable(at(0), now, 300));
    // Checked in the future: believed within the clock skew, not beyond.
    assert!(cached_state_usable(at(now.0 + skew), now, 300));
    assert!(!cached_state_usable(at(now.0 + skew + 1), now, 300));
    assert!(!cached_state_usable(at(u64::MAX), now, 300));
    // No caching at all.
    assert!(!cached_state_usable(now, now, 0));
}

#[test]
fn a_key_state_serializes_its_public_numbers_as_base64url_and_reads_back() {
    let (key, _) = test_key();
    let text = serde_json::to_string(&key).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["e"], "AQAB", "e = 65537, unpadded base64url");
    let n = v["n"].as_str().unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(n).unwrap(), key.n);
    assert!(!n.contains(['=', '+', '/']), "{n}");
    assert_eq!(serde_json::from_str::<KeyInfo>(&text).unwrap(), key);
    // What an older build cached (numbers) and anything not base64url does
    // not read as a state: the component fetches the key afresh.
    let mut old = v.clone();
    old["n"] = serde_json::json!(key.n);
    assert!(serde_json::from_value::<KeyInfo>(old).is_err());
    let mut padded = v;
    padded["e"] = serde_json::json!("AQAB=");
    assert!(serde_json::from_value::<KeyInfo>(padded).is_err());
}
