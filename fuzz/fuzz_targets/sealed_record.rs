//! Records sealed correctly with a fixed data key, so that the opener's
//! work behind the AES-GCM tag is reached (the `record_opener` target stops
//! at the first tag failure). The first input byte picks the mode:
//!
//! - round trip: the rest, as a JSON value, is sealed as an event's data
//!   (each member separately when it is an object, so fuzzed member names
//!   become JSON Pointers) and must open to exactly the document sealed,
//!   whole, field by field, and after a rewrap;
//! - plaintext: the rest, as raw bytes, is encrypted under the right key and
//!   associated data in place of a sealed value, so the strict plaintext
//!   parser behind the tag sees any bytes; what opens equals what a JSON
//!   parser reads from them;
//! - edits: a sealed record is edited by a fuzzed list of operations on its
//!   header, sealed values, id and partition key; the opener refuses it, or
//!   every field it decrypts is the value sealed at that place of that
//!   record (never another record's, another place's, or a forged one).
#![no_main]
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cmk_core::envelope::{self, Dek};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const KID: &str = "https://h.managedhsm.azure.net/keys/k/v1";
const KID2: &str = "https://h.managedhsm.azure.net/keys/k/v2";
const DEK: [u8; 32] = [7; 32];

fn dek() -> Dek {
    Dek::from_bytes(&DEK).expect("32 bytes")
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn doc_with(data: Value) -> Value {
    json!({
        "id": "4f9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
        "pk": "/subscriptions/s/resourceGroups/r",
        "event": {"subject": "s", "data": data},
    })
}

/// Seals `doc` at `pointers` with a counter as nonce source.
fn seal(doc: &Value, pointers: &[String]) -> (Value, Vec<String>) {
    let mut sealed = doc.clone();
    let mut n = 0u8;
    let done = envelope::seal(&mut sealed, pointers, &dek(), KID, &[1, 2, 3], || {
        n = n.wrapping_add(1);
        [n; 12]
    })
    .expect("a document with id and pk seals");
    (sealed, done)
}

fn round_trip(rest: &[u8]) {
    let Ok(data) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let pointers: Vec<String> = match &data {
        Value::Object(m) if !m.is_empty() => m
            .keys()
            .map(|k| format!("/event/data/{}", escape(k)))
            .chain(["/event/subject".to_owned()])
            .collect(),
        _ => vec!["/event/data".into(), "/event/subject".into()],
    };
    let doc = doc_with(data);
    let (sealed, done) = seal(&doc, &pointers);
    assert_eq!(done, pointers, "every pointer that resolves is sealed");
    let h = envelope::header(&sealed)
        .expect("a sealed header reads")
        .expect("and is present");
    assert_eq!(h.fields, pointers);
    let mut found = envelope::sealed_pointers(&sealed);
    found.sort();
    let mut want = pointers.clone();
    want.sort();
    assert_eq!(found, want, "the sealed values are where the header says");
    assert_eq!(envelope::open(&sealed, &dek(), None).expect("opens"), doc);
    // One field at a time: that one opens, the others stay sealed.
    for p in &pointers {
        let only = vec![p.clone()];
        let opened = envelope::open(&sealed, &dek(), Some(&only)).expect("opens a field");
        assert_eq!(opened.pointer(p), doc.pointer(p));
    }
    let moved = envelope::rewrapped(&sealed, KID2, &[4, 5, 6]).expect("rewraps");
    assert_eq!(
        envelope::open(&moved, &dek(), None).expect("opens rewrapped"),
        doc
    );
}

fn plaintext(rest: &[u8]) {
    let doc = doc_with(json!("placeholder"));
    let (mut sealed, _) = seal(&doc, &["/event/data".to_owned()]);
    let id = sealed["id"].as_str().unwrap().to_owned();
    let pk = sealed["pk"].as_str().unwrap().to_owned();
    let aad = envelope::associated_data(&id, &pk, "/event/data", KID);
    let iv = [9u8; 12];
    let ct = Aes256Gcm::new(&Key::<Aes256Gcm>::from(DEK))
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: rest,
                aad: &aad,
            },
        )
        .expect("encrypts");
    sealed["event"]["data"]["iv"] = json!(URL_SAFE_NO_PAD.encode(iv));
    sealed["event"]["data"]["ct"] = json!(URL_SAFE_NO_PAD.encode(ct));
    match envelope::open(&sealed, &dek(), None) {
        Ok(opened) => {
            let lenient = serde_json::from_slice::<Value>(rest).expect("what opens is JSON");
            assert_eq!(opened["event"]["data"], lenient);
        }
        Err(envelope::EnvelopeError::Tampered(p)) => assert_eq!(p, "/event/data"),
        Err(e) => panic!("a well-formed record with a bad plaintext: {e}"),
    }
}

/// Reads the fuzz input as a list of small operations.
struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte().unwrap_or(0) % 48).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
    fn text(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

/// Sets `v[k] = x` where `v` is an object (an edit may have put a string
/// where a sealed value was).
fn set(v: Option<&mut Value>, k: &str, x: Value) {
    if let Some(o) = v.and_then(Value::as_object_mut) {
        o.insert(k.to_owned(), x);
    }
}

const MEMBERS: &[&str] = &["v", "alg", "kid", "wrap", "dek", "fields", "sealedKid", "x"];
const POINTERS: &[&str] = &[
    "/event/data/a",
    "/event/data/b",
    "/event/subject",
    "/event/data",
    "/id",
];

fn edits(rest: &[u8]) {
    let doc = doc_with(json!({"a": {"n": 1, "s": "x"}, "b": [1, 2, 3]}));
    let pointers: Vec<String> = POINTERS[..3].iter().map(|s| s.to_string()).collect();
    let (mut sealed, _) = seal(&doc, &pointers);
    let mut ops = Ops(rest);
    while let Some(op) = ops.byte() {
        let arg = ops.byte().unwrap_or(0);
        let member = MEMBERS[usize::from(arg) % MEMBERS.len()];
        let p = POINTERS[usize::from(arg) % POINTERS.len()];
        let q = POINTERS[usize::from(arg >> 4) % POINTERS.len()];
        match op % 10 {
            0 => set(sealed.get_mut("cmk"), member, json!(ops.text())),
            1 => {
                if let Some(h) = sealed["cmk"].as_object_mut() {
                    h.remove(member);
                }
            }
            2 => set(sealed.get_mut("cmk"), member, json!(arg)),
            3 => {
                let f: Vec<Value> = POINTERS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| arg & (1 << i) != 0)
                    .map(|(_, p)| json!(p))
                    .collect();
                set(sealed.get_mut("cmk"), "fields", Value::Array(f));
            }
            4 => {
                let iv = json!(URL_SAFE_NO_PAD.encode(ops.bytes()));
                set(sealed.pointer_mut(p), "iv", iv);
            }
            5 => {
                if let Some(v) = sealed.pointer_mut(p).filter(|v| v.is_object()) {
                    let ct = v["ct"]
                        .as_str()
                        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                        .unwrap_or_default();
                    let mut ct = ct;
                    match arg >> 6 {
                        0 if !ct.is_empty() => {
                            let i = usize::from(arg) % ct.len();
                            ct[i] ^= 1;
                        }
                        1 => ct.truncate(usize::from(arg & 63)),
                        _ => ct.extend(ops.bytes()),
                    }
                    v["ct"] = json!(URL_SAFE_NO_PAD.encode(ct));
                }
            }
            6 => {
                // Swap or copy a value between two places.
                let (a, b) = (sealed.pointer(p).cloned(), sealed.pointer(q).cloned());
                if let (Some(a), Some(b)) = (a, b) {
                    if let Some(slot) = sealed.pointer_mut(q) {
                        *slot = a;
                    }
                    if arg & 1 == 0 {
                        if let Some(slot) = sealed.pointer_mut(p) {
                            *slot = b;
                        }
                    }
                }
            }
            7 => sealed[if arg & 1 == 0 { "id" } else { "pk" }] = json!(ops.text()),
            8 => {
                let t = json!(ops.text());
                set(sealed.pointer_mut(p), member, t);
            }
            _ => {
                if let Some(f) = sealed
                    .get_mut("cmk")
                    .and_then(|h| h.get_mut("fields"))
                    .and_then(Value::as_array_mut)
                {
                    f.push(json!(ops.text()));
                }
            }
        }
    }
    let _ = envelope::header(&sealed);
    let _ = envelope::sealed_pointers(&sealed);
    if let Ok(opened) = envelope::open(&sealed, &dek(), None) {
        // The parts of a record outside its sealed values are not bound
        // (an edit there shows as it is); every value the opener decrypted
        // is the one sealed at that place of that record.
        let h = envelope::header(&sealed)
            .expect("what opens has a valid header")
            .expect("and has one");
        for f in &h.fields {
            assert_eq!(
                opened.pointer(f),
                doc.pointer(f),
                "{f} opened to another value"
            );
        }
        if !h.fields.is_empty() {
            assert_eq!((&opened["id"], &opened["pk"]), (&doc["id"], &doc["pk"]));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => round_trip(rest),
        1 => plaintext(rest),
        _ => edits(rest),
    }
});
