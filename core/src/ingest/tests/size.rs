//! Tests of the unsealed size check.

use super::*;
use crate::cosmos::MAX_DOCUMENT_BYTES;

/// The documents of an Event Grid delivery and its body's length.
fn documents(events: Vec<Value>) -> (Vec<crate::document::Document>, usize) {
    let raw = body(Value::Array(events));
    let Decoded::Events(events) = decode(Some("application/json"), &[], &raw).unwrap() else {
        panic!("events expected");
    };
    (documents_of(events, &config()).unwrap(), raw.len())
}

fn with_text(len: usize) -> Value {
    with_data(json!({ "text": "x".repeat(len) }))
}

fn with_text_id(id: &str, len: usize) -> Value {
    let mut e = with_text(len);
    e["id"] = json!(id);
    e
}

#[test]
fn the_skip_bound_is_six_times_the_input_plus_the_overhead() {
    let largest_skipped = (MAX_DOCUMENT_BYTES - DOCUMENT_OVERHEAD - 1) / MAX_GROWTH;
    assert!(!may_hold_oversized_document(0));
    assert!(!may_hold_oversized_document(64 * 1024));
    assert!(!may_hold_oversized_document(largest_skipped));
    assert!(may_hold_oversized_document(largest_skipped + 1));
    assert!(may_hold_oversized_document(MAX_DOCUMENT_BYTES));
    assert!(may_hold_oversized_document(usize::MAX));
}

#[test]
fn an_oversized_unsealed_document_gets_the_answer_plan_writes_gives() {
    let (docs, len) = documents(vec![with_text(MAX_DOCUMENT_BYTES + 10)]);
    let early = check_unsealed_sizes(&docs, len).unwrap_err();
    let late = plan_writes(docs, &config(), &cred(), UnixTime(0)).unwrap_err();
    assert_eq!(early.status, 413);
    assert_eq!(early.code, "DocumentTooLarge");
    assert_eq!(
        (early.status, early.code, early.message),
        (late.status, late.code, late.message)
    );
}

#[test]
fn one_oversized_document_among_small_ones_refuses_the_delivery() {
    let (docs, len) = documents(vec![
        with_text_id("a", 10),
        with_text_id("b", MAX_DOCUMENT_BYTES),
        with_text_id("c", 10),
    ]);
    assert_eq!(check_unsealed_sizes(&docs, len).unwrap_err().status, 413);
}

#[test]
fn a_large_document_under_the_limit_passes() {
    let (docs, len) = documents(vec![with_text(MAX_DOCUMENT_BYTES - 4096)]);
    assert!(may_hold_oversized_document(len));
    check_unsealed_sizes(&docs, len).unwrap();
    plan_writes(docs, &config(), &cred(), UnixTime(0)).unwrap();
}

#[test]
fn below_the_bound_nothing_is_serialized() {
    // The input length is what decides: a delivery claimed small is not
    // measured at all (its documents cannot have grown past the limit).
    let (docs, _) = documents(vec![with_text(MAX_DOCUMENT_BYTES + 10)]);
    check_unsealed_sizes(&docs, 1024).unwrap();
}

#[test]
fn numbers_that_grow_stay_within_the_bound() {
    // `1E15` is written `1000000000000000.0`: the largest growth of a
    // parsed JSON value's text.
    let numbers: Vec<Value> = (0..50_000)
        .map(|_| serde_json::from_str::<Value>("1E15").unwrap())
        .collect();
    let raw = format!(
        r#"[{{"id":"1","topic":"/t","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":[{}]}}]"#,
        vec!["1E15"; numbers.len()].join(",")
    );
    let Decoded::Events(events) = decode(Some("application/json"), &[], raw.as_bytes()).unwrap()
    else {
        panic!("events expected");
    };
    let docs = documents_of(events, &config()).unwrap();
    let size = crate::compact_json::to_vec(&docs[0].body).len();
    assert!(size > 3 * raw.len(), "{size} vs {}", raw.len());
    assert!(size <= raw.len() * MAX_GROWTH + DOCUMENT_OVERHEAD);
}
