//! Record format v1 vectors (tests/data/record-v1/vectors.json, made from
//! docs/record-format.md by an independent Python implementation): the
//! component's sealing reproduces every valid record exactly from its input,
//! data key, key id, wrapped key and nonces; opening gives back the input;
//! every refused record fails with the documented kind of error. The same
//! file drives the Python decryptor's test, so both readers agree.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cmk_core::envelope::{self, Dek, EnvelopeError};
use serde_json::Value;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/record-v1/vectors.json"
    ))
    .expect("vectors.json is committed");
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn dek_of(case: &Value) -> Dek {
    Dek::from_bytes(&hex(case["dek"].as_str().unwrap())).unwrap()
}

/// Unwraps a record's data key with the test key-encryption key
/// (RSA-OAEP-256: SHA-256, MGF1 with SHA-256, empty label).
fn unwrap(v: &Value, wrapped: &[u8]) -> Result<Vec<u8>, rsa::Error> {
    use rsa::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/record-v1/").to_owned()
            + v["kek"].as_str().unwrap(),
    )
    .unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).expect("the test KEK parses");
    key.decrypt(rsa::Oaep::new::<sha2::Sha256>(), wrapped)
}

/// The whole reader, as the component reads in the second stage
/// (docs/record-format.md, "Opening"): header, the configured key and
/// fields, unwrap, open.
fn read(v: &Value, case: &Value) -> Result<Value, EnvelopeError> {
    let doc = &case["record"];
    let Some(h) = envelope::header(doc)? else {
        return Err(match envelope::sealed_pointers(doc).into_iter().next() {
            Some(p) => EnvelopeError::Tampered(p),
            None => EnvelopeError::Malformed("not sealed".into()),
        });
    };
    let protected = case.get("protected").map(str_list).unwrap_or_default();
    let expect = envelope::Expect {
        hsm: v["reader"]["hsm"].as_str().unwrap(),
        key_name: v["reader"]["key_name"].as_str().unwrap(),
        protected: &protected,
    };
    envelope::check_expected(doc, &h, &expect)?;
    if !envelope::needs_key(&h, None) {
        return envelope::open_with(doc, None, None);
    }
    let raw = unwrap(v, &h.wrapped_dek)
        .map_err(|_| EnvelopeError::Tampered("the wrapped data key does not unwrap".into()))?;
    envelope::open(doc, &Dek::from_bytes(&raw)?, None)
}

#[test]
fn valid_records_seal_exactly_and_open() {
    let v = vectors();
    let cases = v["valid"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let record = &case["record"];
        let kid = case["kid"].as_str().unwrap();
        let mut nonces = str_list(&case["nonces"]).into_iter().map(|n| {
            let b = hex(&n);
            <[u8; 12]>::try_from(b.as_slice()).expect("12-byte nonce")
        });
        // Seal the input the way the component does on write.
        let mut sealed = case["input"].clone();
        if let Some(configured) = case.get("protected") {
            // Configured pointers (`*` for array elements) expand to the
            // concrete ones sealed.
            let concrete: Vec<String> = str_list(configured)
                .iter()
                .flat_map(|p| envelope::resolve(&sealed, p).unwrap())
                .collect();
            let present: Vec<String> = str_list(&case["pointers"])
                .into_iter()
                .filter(|p| sealed.pointer(p).is_some())
                .collect();
            assert_eq!(concrete, present, "{name}: wildcard expansion");
        }
        if record["cmk"].get("dek").is_none() {
            // Nothing to seal: a header without a data key.
            envelope::seal_nothing(&mut sealed, kid).unwrap();
            assert_eq!(&sealed, record, "{name}: sealing differs from the vector");
            assert_eq!(read(&v, case).unwrap(), case["opened"], "{name}");
            continue;
        }
        let dek = dek_of(case);
        let first_dek = match case.get("rewrapped_kid") {
            // The record now carries the rewrapped key; sealing used another
            // wrapping whose bytes do not matter to the fields.
            Some(_) => b"sealing-time wrapped key".to_vec(),
            None => URL_SAFE_NO_PAD
                .decode(record["cmk"]["dek"].as_str().unwrap())
                .unwrap(),
        };
        // A pointer that names nothing is skipped when the configured
        // pointers are resolved (record-format.md, "Writing"); `seal` is
        // given only what resolved.
        let pointers: Vec<String> = str_list(&case["pointers"])
            .into_iter()
            .filter(|p| sealed.pointer(p).is_some())
            .collect();
        envelope::seal(&mut sealed, &pointers, &dek, kid, &first_dek, || {
            nonces.next().expect("enough nonces")
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(new_kid) = case.get("rewrapped_kid") {
            let wrapped = URL_SAFE_NO_PAD
                .decode(record["cmk"]["dek"].as_str().unwrap())
                .unwrap();
            sealed = envelope::rewrapped(&sealed, new_kid.as_str().unwrap(), &wrapped).unwrap();
        } else if record["cmk"].get("sealedKid") == Some(&Value::from(kid)) {
            // `sealedKid` equal to `kid`: no writer makes it, readers accept it.
            sealed["cmk"]["sealedKid"] = kid.into();
        }
        assert_eq!(&sealed, record, "{name}: sealing differs from the vector");
        // And open it.
        let opened = envelope::open(record, &dek, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(opened, case["opened"], "{name}: opening differs");
        // And through the whole reader, unwrapping with the test KEK.
        let read = read(&v, case).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(read, case["opened"], "{name}: reading differs");
    }
}

#[test]
fn refused_records_fail_with_the_documented_error() {
    let v = vectors();
    let cases = v["refused"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let got = read(&v, case);
        let kind = match &got {
            Ok(_) => panic!("{name}: opened a record that must be refused"),
            Err(EnvelopeError::Tampered(_)) => "Tampered",
            Err(EnvelopeError::Malformed(_)) => "Malformed",
            Err(EnvelopeError::Unsupported(_)) => "Unsupported",
        };
        assert_eq!(kind, case["error"].as_str().unwrap(), "{name}: {got:?}");
    }
}

#[test]
fn refused_inputs_are_refused_by_the_writer_checks() {
    let v = vectors();
    for case in v["refused_inputs"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let input = &case["input"];
        let shaped = !envelope::sealed_pointers(input).is_empty();
        let unresolvable = str_list(&case["protected"])
            .iter()
            .any(|p| envelope::resolve(input, p).is_err());
        let got = match (shaped, unresolvable) {
            (true, _) => "SealedShapeInEvent",
            (false, true) => "ProtectedFieldUnresolvable",
            (false, false) => panic!("{name}: accepted"),
        };
        assert_eq!(got, case["error"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn a_wrong_data_key_opens_nothing() {
    let v = vectors();
    let case = &v["valid"][0];
    let mut wrong = hex(case["dek"].as_str().unwrap());
    wrong[0] ^= 0x80;
    let got = envelope::open(&case["record"], &Dek::from_bytes(&wrong).unwrap(), None);
    assert!(matches!(got, Err(EnvelopeError::Tampered(_))), "{got:?}");
}
