//! Tests of the sealed size known before the wrap: the prediction is the
//! sealed document's length to the byte, the early check refuses exactly
//! the documents over the limit with the shortest key texts, and the skip
//! bound holds for many tiny values.

use super::*;
use crate::cosmos::MAX_DOCUMENT_BYTES;
use crate::document::Document;
use crate::endpoint::Endpoint;
use crate::envelope::{Dek, Sealer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;

const VAULT: &str = "https://h.managedhsm.azure.net";

fn vault() -> Endpoint {
    Endpoint::parse(VAULT).unwrap()
}

/// A Managed HSM key id: 32 hexadecimal characters of version.
const KID: &str = "https://h.managedhsm.azure.net/keys/k/0123456789abcdef0123456789abcdef";

/// The documents of an Event Grid delivery, their pointers to seal under
/// `protected_fields` and the body's length.
fn delivery(
    events: Vec<Value>,
    protected_fields: &str,
) -> (Vec<Document>, Vec<Vec<String>>, usize) {
    let raw = body(Value::Array(events));
    let Decoded::Events(events) = decode(Some("application/json"), &[], &raw).unwrap() else {
        panic!("events expected");
    };
    let docs = documents_of(events, &config()).unwrap();
    let plans = protected_pointers(&docs, &protected(protected_fields)).unwrap();
    (docs, plans, raw.len())
}

fn json_len(s: &str) -> usize {
    crate::compact_json::to_vec(&Value::from(s)).len()
}

/// The document's compact text once sealed with `kid` and `wrapped`.
fn sealed(doc: &Value, pointers: &[String], kid: &str, wrapped: &[u8]) -> usize {
    let dek = Dek::from_bytes(&[9u8; 32]).unwrap();
    let mut doc = doc.clone();
    Sealer::new(&dek, kid, wrapped)
        .seal(&mut doc, pointers, || [3u8; 12])
        .unwrap();
    crate::compact_json::to_vec(&doc).len()
}

fn groups(n: usize) -> Vec<KeyGroup> {
    vec![KeyGroup {
        key_name: "k".into(),
        documents: (0..n).collect(),
    }]
}

fn text() -> impl Strategy<Value = String> {
    crate::arbitrary_json::text(24)
}

fn value() -> impl Strategy<Value = Value> {
    crate::arbitrary_json::value(24, 3, 32, 6)
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random events: the elements of a list (`/data/l/*`), some members
    /// of an object (names with every escape), one absent field; random key
    /// id text and wrapped key length.
    #[test]
    fn the_prediction_is_the_sealed_length(
        list in prop::collection::vec(value(), 0..8),
        members in prop::collection::vec((text(), value(), any::<bool>()), 0..8),
        rest in value(),
        kid in text(),
        wrapped in 0usize..700,
    ) {
        let members: serde_json::Map<String, Value> = members
            .into_iter()
            .filter(|(k, _, _)| k != "*")
            .map(|(k, v, p)| (k, json!({"v": v, "p": p})))
            .collect();
        let mut pointers = vec!["/data/l/*".to_owned(), "/data/absent".to_owned()];
        pointers.extend(
            members
                .iter()
                .filter(|(_, v)| v["p"] == json!(true))
                .map(|(k, _)| format!("/data/m/{}", escape(k))),
        );
        let event = with_data(json!({"l": list, "m": members, "rest": rest}));
        let (docs, plans, raw) =
            delivery(vec![event], &json!({"*": pointers}).to_string());
        let predicted = sealed_length(&docs[0].body, &plans[0], &mut Vec::new()).unwrap();
        let wrapped_key = vec![0xa5u8; wrapped];
        prop_assert_eq!(
            predicted.with(json_len(&kid), Some(wrapped)),
            sealed(&docs[0].body, &plans[0], &kid, &wrapped_key)
        );
        prop_assert_eq!(predicted.sealed, plans[0].len());
        // The skip bound holds with the longest texts it allows for.
        let long_kid = format!("{VAULT}/keys/{}/{}", "k".repeat(127), "v".repeat(127));
        prop_assert!(
            sealed(&docs[0].body, &plans[0], &long_kid, &[1u8; 512])
                <= sealed_length_bound(raw, &plans)
        );
    }

    /// A document none of whose fields is sealed, without a data key.
    #[test]
    fn the_prediction_without_a_data_key_is_the_sealed_length(data in value(), kid in text()) {
        let (docs, _, _) = delivery(vec![with_data(data)], r#"{"*": ["/subject"]}"#);
        let predicted = sealed_length(&docs[0].body, &[], &mut Vec::new()).unwrap();
        let mut doc = docs[0].body.clone();
        crate::envelope::seal_nothing(&mut doc, &kid).unwrap();
        prop_assert_eq!(
            predicted.with(json_len(&kid), None),
            crate::compact_json::to_vec(&doc).len()
        );
    }
}

#[test]
fn base64url_lengths_are_the_engines() {
    for n in 0..200 {
        assert_eq!(base64url_len(n), URL_SAFE_NO_PAD.encode(vec![0u8; n]).len());
    }
}

#[test]
fn a_sealed_value_grows_by_at_most_the_constant_and_a_third() {
    let sealed_value = |p: usize| {
        let doc = json!({"id": "1", "pk": "p", "x": "a".repeat(p.saturating_sub(2))});
        sealed(&doc, &["/x".to_owned()], "k", b"") - sealed(&doc, &[], "k", b"") - r#""/x""#.len()
            + p.max(2)
    };
    let mut tight = false;
    for p in 2..3000 {
        let grown = sealed_value(p) - p;
        assert!(grown <= MAX_VALUE_GROWTH + p / 3, "{p}: {grown}");
        tight |= grown == MAX_VALUE_GROWTH + p / 3;
    }
    assert!(tight, "the constant is the least that holds");
    // The tiniest value, `1`, becomes 64 bytes.
    let one = json!({"id": "1", "pk": "p", "x": 1});
    assert_eq!(
        sealed(&one, &["/x".to_owned()], "k", b"") - sealed(&one, &[], "k", b""),
        64 - 1 + r#""/x""#.len()
    );
}

#[test]
fn overlapping_or_invalid_pointers_are_not_predicted() {
    let doc = json!({"id": "1", "pk": "p", "a": {"b": 1, "bc": 2}, "ab": 3});
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut scratch = Vec::new();
    for bad in [
        p(&["/a", "/a"]),
        p(&["/a", "/a/b"]),
        p(&["/a/b", "/a"]),
        p(&["a"]),
        p(&[""]),
    ] {
        assert_eq!(sealed_length(&doc, &bad, &mut scratch), None, "{bad:?}");
    }
    // Siblings that share a prefix of text are not nested.
    for good in [
        p(&["/a/b", "/a/bc", "/ab"]),
        p(&["/ab", "/a/b"]),
        p(&["/a"]),
    ] {
        let predicted = sealed_length(&doc, &good, &mut scratch).unwrap();
        assert_eq!(
            predicted.with(json_len("k"), Some(7)),
            sealed(&doc, &good, "k", &[0u8; 7])
        );
    }
    let mut with_header = doc.clone();
    with_header["cmk"] = json!({});
    assert_eq!(sealed_length(&with_header, &p(&["/a"]), &mut scratch), None);
    assert_eq!(sealed_length(&json!([1]), &[], &mut scratch), None);
}

#[test]
fn the_shortest_kid_is_one_the_hsm_answer_may_name() {
    let v = vault();
    let shortest = format!("{VAULT}/keys/k/v");
    assert_eq!(shortest_kid_text(&v, "k"), json_len(&shortest));
    let k = crate::hsm::KeyRef::from_kid(&shortest, &v).unwrap();
    assert_eq!(k.version.as_deref(), Some("v"));
    assert!(
        crate::hsm::KeyRef::from_kid(&format!("{VAULT}/keys/k/"), &v)
            .unwrap()
            .version
            .is_none()
    );
    // With `:443` configured, the service may leave it out.
    let with_port = Endpoint::parse("https://h.managedhsm.azure.net:443").unwrap();
    assert_eq!(shortest_kid_text(&with_port, "k"), json_len(&shortest));
    crate::hsm::KeyRef::from_kid(&shortest, &with_port).unwrap();
    assert_eq!(shortest_kid_text(&v, "key-2"), json_len(&shortest) + 4);
}

/// An event whose protected secret and unprotected blob have these lengths.
fn secret_and_blob(secret: usize, blob: usize) -> Value {
    with_data(json!({"secret": "s".repeat(secret), "blob": "x".repeat(blob)}))
}

const SECRET: &str = r#"{"*": ["/data/secret"]}"#;

/// The blob length that makes the document exactly `MAX_DOCUMENT_BYTES`
/// long once sealed with the shortest key texts.
fn blob_at_the_limit(secret: usize) -> usize {
    let guess = 1_000_000;
    let (docs, plans, _) = delivery(vec![secret_and_blob(secret, guess)], SECRET);
    let least = sealed_length(&docs[0].body, &plans[0], &mut Vec::new())
        .unwrap()
        .with(
            shortest_kid_text(&vault(), "k"),
            Some(MIN_WRAPPED_KEY_BYTES),
        );
    guess + MAX_DOCUMENT_BYTES - least
}

#[test]
fn under_the_limit_unsealed_over_it_sealed_is_refused_before_the_wrap() {
    let (docs, plans, raw) = delivery(vec![secret_and_blob(1_600_000, 0)], SECRET);
    assert!(crate::compact_json::to_vec(&docs[0].body).len() < MAX_DOCUMENT_BYTES);
    check_unsealed_sizes(&docs, raw).unwrap();
    let e = check_sealed_sizes(&docs, &plans, &groups(1), &vault(), raw).unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (413, "DocumentTooLarge"));
    assert!(e.message.contains("2097152"), "{}", e.message);
    assert!(
        !e.message.contains("sss"),
        "no protected value in the answer"
    );
    // Sealing indeed makes it too large.
    assert!(sealed(&docs[0].body, &plans[0], KID, &[0u8; 256]) > MAX_DOCUMENT_BYTES);
}

#[test]
fn the_boundary_is_the_limit_with_the_shortest_key_texts() {
    let blob = blob_at_the_limit(1000);
    // Exactly at the limit with the shortest texts: passes the check.
    let (docs, plans, raw) = delivery(vec![secret_and_blob(1000, blob)], SECRET);
    let least = sealed_length(&docs[0].body, &plans[0], &mut Vec::new())
        .unwrap()
        .with(
            shortest_kid_text(&vault(), "k"),
            Some(MIN_WRAPPED_KEY_BYTES),
        );
    assert_eq!(least, MAX_DOCUMENT_BYTES);
    check_sealed_sizes(&docs, &plans, &groups(1), &vault(), raw).unwrap();
    // So sealed with a one-character version and a 2048-bit key, it is
    // written...
    let dek = Dek::from_bytes(&[1u8; 32]).unwrap();
    let seal_with = |docs: Vec<Document>, plans: Vec<Vec<String>>, kid: &str, wrapped: &[u8]| {
        let all: Vec<usize> = (0..docs.len()).collect();
        let key = GroupKey::Data(DeliveryKey {
            dek: &dek,
            kid,
            wrapped_dek: wrapped,
        });
        seal_groups(
            docs,
            plans,
            &[(&all, key)],
            &mut || [2u8; 12],
            &config(),
            &cred(),
            UnixTime(0),
        )
    };
    let shortest = format!("{VAULT}/keys/k/v");
    seal_with(docs.clone(), plans.clone(), &shortest, &[0u8; 256]).unwrap();
    // ...while with a Managed HSM version, or a 3072-bit key, it is in the
    // band the after-wrap check refuses.
    for (kid, wrapped) in [(KID, 256), (shortest.as_str(), 384)] {
        let e = seal_with(docs.clone(), plans.clone(), kid, &vec![0u8; wrapped]).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "DocumentTooLarge"));
    }
    // One byte more is refused before the wrap.
    let (docs, plans, raw) = delivery(vec![secret_and_blob(1000, blob + 1)], SECRET);
    let e = check_sealed_sizes(&docs, &plans, &groups(1), &vault(), raw).unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (413, "DocumentTooLarge"));
    assert!(e.message.contains(&(MAX_DOCUMENT_BYTES + 1).to_string()));
}

#[test]
fn a_group_without_protected_values_is_measured_without_a_data_key() {
    // No field of the event is protected: its header has no `dek`. At the
    // limit without one...
    let other = r#"{"*": ["/data/other"]}"#;
    let guess = 1_000_000;
    let (docs, plans, _) = delivery(vec![secret_and_blob(0, guess)], other);
    assert!(plans[0].is_empty());
    let length = sealed_length(&docs[0].body, &plans[0], &mut Vec::new()).unwrap();
    let blob = guess + MAX_DOCUMENT_BYTES - length.with(shortest_kid_text(&vault(), "k"), None);
    let (docs, plans, raw) = delivery(vec![secret_and_blob(0, blob)], other);
    check_sealed_sizes(&docs, &plans, &groups(1), &vault(), raw).unwrap();
    let (docs, plans, raw) = delivery(vec![secret_and_blob(0, blob + 1)], other);
    check_sealed_sizes(&docs, &plans, &groups(1), &vault(), raw).unwrap_err();
    // ...the same document in a group where another one seals a value gets
    // a data key, and is over the limit.
    let (docs, plans, raw) = delivery(
        vec![secret_and_blob(0, blob), {
            let mut e = with_data(json!({"other": 1}));
            e["id"] = json!("2");
            e
        }],
        other,
    );
    assert!(plans[0].is_empty() && !plans[1].is_empty());
    let e = check_sealed_sizes(&docs, &plans, &groups(2), &vault(), raw).unwrap_err();
    assert_eq!(e.code, "DocumentTooLarge");
    let separate = vec![
        KeyGroup {
            key_name: "k".into(),
            documents: vec![0],
        },
        KeyGroup {
            key_name: "k2".into(),
            documents: vec![1],
        },
    ];
    check_sealed_sizes(&docs, &plans, &separate, &vault(), raw).unwrap();
}

#[test]
fn many_tiny_values_are_measured_and_refused() {
    // A small body: the unsealed check does not even measure it, yet each
    // `1` becomes 64 bytes and its pointer is listed in the header.
    let ones = |n: usize| with_data(Value::Array(vec![json!(1); n]));
    let (docs, plans, raw) = delivery(vec![ones(25_000)], r#"{"*": ["/data/*"]}"#);
    assert!(raw < 60_000);
    assert!(!may_hold_oversized_document(raw));
    assert!(may_hold_oversized_sealed_document(raw, &plans));
    let e = check_sealed_sizes(&docs, &plans, &groups(1), &vault(), raw).unwrap_err();
    assert_eq!(e.code, "DocumentTooLarge");
    assert!(sealed(&docs[0].body, &plans[0], KID, &[0u8; 256]) > MAX_DOCUMENT_BYTES);
    // Fewer pass, and seal under the limit.
    let (docs, plans, raw) = delivery(vec![ones(20_000)], r#"{"*": ["/data/*"]}"#);
    check_sealed_sizes(&docs, &plans, &groups(1), &vault(), raw).unwrap();
    assert!(sealed(&docs[0].body, &plans[0], KID, &[0u8; 512]) <= MAX_DOCUMENT_BYTES);
}

#[test]
fn a_common_delivery_is_not_measured() {
    // 200 events of 1 KiB with their data protected: far under the bound.
    let events: Vec<Value> = (0..200)
        .map(|i| {
            let mut e = with_data(json!({"text": "x".repeat(1000)}));
            e["id"] = json!(i.to_string());
            e
        })
        .collect();
    let (_, plans, raw) = delivery(events, r#"{"*": ["/data"]}"#);
    assert!(!may_hold_oversized_sealed_document(raw, &plans));
    // The largest body with one protected value that is not measured.
    let one = vec![vec!["/event/data".to_owned()]];
    let mut skipped = 0;
    let mut step = 1 << 20;
    while step > 0 {
        if !may_hold_oversized_sealed_document(skipped + step, &one) {
            skipped += step;
        }
        step /= 2;
    }
    assert!((250 * 1024..256 * 1024).contains(&skipped), "{skipped}");
    // Below the bound nothing is serialized: a document claimed small is
    // not measured.
    let (docs, plans, _) = delivery(vec![secret_and_blob(2_000_000, 0)], SECRET);
    check_sealed_sizes(&docs, &plans, &groups(1), &vault(), 1024).unwrap();
}

/// The smallest delivery length [`sealed_length_bound`] may be called with
/// for a document of `doc_len` bytes: the bound assumes each document's
/// unsealed text is at most `input_len * MAX_GROWTH + DOCUMENT_OVERHEAD`.
fn least_input_len(doc_len: usize) -> usize {
    doc_len
        .saturating_sub(DOCUMENT_OVERHEAD)
        .div_ceil(MAX_GROWTH)
}

/// The longest key id the bound allows for: an origin of a 253-character
/// host name and a 5-digit port, a 127-character name and version.
fn longest_kid() -> String {
    let host = format!("{}.net", "h".repeat(249));
    format!(
        "https://{host}:65535/keys/{}/{}",
        "k".repeat(127),
        "v".repeat(127)
    )
}

/// `sealed_length_bound` at the smallest input length consistent with the
/// document, less the document's length sealed with the longest key id and
/// a 512-byte wrapped key: what the bound keeps in reserve.
fn bound_margin(doc: &Value, pointers: &[String]) -> isize {
    let doc_len = crate::compact_json::to_vec(doc).len();
    let bound = sealed_length_bound(least_input_len(doc_len), &[pointers.to_vec()]);
    let actual = sealed(doc, pointers, &longest_kid(), &[0xa5u8; 512]);
    bound as isize - actual as isize
}

/// The bound at the smallest input length a document allows holds for it,
/// and would not without the header's room (a long value) or the
/// per-pointer growth (many tiny values): lowering either fails here. The
/// `+ 3` of quotes and comma alone cannot be shown needed: the six bytes
/// allowed for each byte of a pointer count its leading `/`, never
/// escaped, five too many.
#[test]
fn each_term_of_the_skip_bound_is_needed() {
    assert_eq!(least_input_len(DOCUMENT_OVERHEAD + 7), 2);
    assert_eq!(least_input_len(10), 0);
    crate::hsm::KeyRef::from_kid(
        &longest_kid(),
        &Endpoint::parse(&longest_kid()[..longest_kid().find("/keys").unwrap()]).unwrap(),
    )
    .unwrap();
    // One long value: the header's room is what the bound keeps beyond
    // the value's growth, so half the room fails.
    let long = json!({"id": "1", "pk": "p", "s": "y".repeat(1_500_000)});
    let margin = bound_margin(&long, &["/s".to_owned()]);
    assert!(margin >= 0, "{margin}");
    assert!(
        margin < (SEALED_HEADER_ROOM / 2) as isize,
        "the header's room is needed: {margin}"
    );
    // Many tiny values: `1` grows to 64 bytes and lists its pointer. In
    // an array, without the per-pointer growth the bound would not hold.
    let n = 30_000;
    let tiny = json!({"id": "1", "pk": "p", "a": vec![1; n]});
    let pointers: Vec<String> = (0..n).map(|i| format!("/a/{i}")).collect();
    let margin = bound_margin(&tiny, &pointers);
    assert!(margin >= 0, "{margin}");
    assert!(
        margin < (n * (MAX_VALUE_GROWTH + 3)) as isize,
        "the per-pointer growth is needed: {margin}"
    );
    // Members whose names are all escapes (as listed in the header too):
    // even half of it would not hold.
    let control = |i: usize| char::from(u8::try_from(1 + i % 31).unwrap());
    let n = 31 * 31 * 31;
    let names: Vec<String> = (0..n)
        .map(|i| {
            [control(i), control(i / 31), control(i / 961)]
                .iter()
                .collect()
        })
        .collect();
    let mut tiny = json!({"id": "1", "pk": "p"});
    for name in &names {
        tiny[name] = json!(1);
    }
    let pointers: Vec<String> = names.iter().map(|k| format!("/{k}")).collect();
    assert_eq!(tiny.as_object().unwrap().len(), n + 2);
    let margin = bound_margin(&tiny, &pointers);
    assert!(margin >= 0, "{margin}");
    assert!(
        margin < (n * (MAX_VALUE_GROWTH + 3) / 2) as isize,
        "half the per-pointer growth does not hold: {margin}"
    );
}
