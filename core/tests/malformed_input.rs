//! Generated bad input: malformed bodies, content types and CloudEvents
//! headers must end in a 4xx with a reason from the ingest planner, never a
//! panic, and never in signed writes. 100,000 cases for `POST /events` and
//! 100,000 for `POST /queue` (message text raw or base64, metadata headers
//! of the bridge and of Dapr) per run.

use cmk_core::config::Config;
use cmk_core::cosmos::Credential;
use cmk_core::ingest::{plan, plan_events, Plan};
use cmk_core::queue;
use cmk_core::time::UnixTime;
use proptest::prelude::*;

fn config() -> Config {
    Config::load(|name| {
        Ok(match name {
            "cosmos_endpoint" => Some("http://127.0.0.1:8081".into()),
            "cosmos_database" => Some("db".into()),
            "cosmos_container" => Some("events".into()),
            "cosmos_key" => Some("c2VjcmV0".into()),
            _ => None,
        })
    })
    .unwrap()
}

fn cred() -> Credential {
    config().cosmos.auth.static_credential().unwrap().clone()
}

const TYPES: &[&str] = &[
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
    "application/json; charset=utf-8",
    "",
];

/// JSON-ish fragments that recombine into near-valid and invalid bodies.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"id\"",
        "\"eventType\"",
        "\"subject\"",
        "\"eventTime\"",
        "\"topic\"",
        "\"data\"",
        "\"specversion\"",
        "\"1.0\"",
        "\"source\"",
        "\"type\"",
        "\"x\"",
        "1",
        "null",
        "true",
        "\"\"",
        "\"2024-01-01T00:00:00Z\"",
        "\"Microsoft.EventGrid.SubscriptionValidationEvent\"",
        "\"validationCode\"",
        "\"data_base64\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "1e999",
        "-",
        "\u{feff}",
    ]);
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat().into_bytes())
}

fn check(
    content_type: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), TestCaseError> {
    let ct = (!content_type.is_empty()).then_some(content_type);
    match plan(
        ct,
        headers,
        body,
        &config(),
        &cred(),
        UnixTime(1_800_000_000),
    ) {
        Err(e) => {
            prop_assert!(
                e.status.is_client_error(),
                "status {} for malformed input",
                e.status
            );
            prop_assert!(!e.message.is_empty());
        }
        Ok(Plan::Respond(r)) => prop_assert_eq!(r.status(), 200),
        Ok(Plan::Write(w)) => {
            // Input that happens to be valid must produce one document per
            // event and well-formed signed requests...
            prop_assert!(!w.documents.is_empty());
            prop_assert!(w
                .units
                .iter()
                .all(|u| u.request.headers().contains_key("authorization")));
            for d in &w.documents {
                let e = &d.body["event"];
                for attr in ["id", "source", "type"] {
                    prop_assert!(
                        e[attr].as_str().is_some_and(|s| !s.is_empty()) || attr == "source",
                        "written without {attr}: {e}"
                    );
                }
                prop_assert_eq!(e["specversion"].as_str(), Some("1.0"));
            }
            // ...and an Event Grid body must really be valid, judged by an
            // oracle independent of the component's decoder: a JSON array of
            // objects, each with a non-empty string id, eventType and
            // eventTime and a string subject, one document per element.
            if ct.is_some_and(|c| c.starts_with("application/json")) && headers.is_empty() {
                let v: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|e| TestCaseError::fail(format!("written from invalid JSON: {e}")))?;
                let items = v
                    .as_array()
                    .ok_or_else(|| TestCaseError::fail("written from a non-array"))?;
                prop_assert_eq!(items.len(), w.documents.len());
                for item in items {
                    let s = |k: &str| item.get(k).and_then(|x| x.as_str());
                    prop_assert!(s("id").is_some_and(|x| !x.is_empty()), "no id: {item}");
                    prop_assert!(
                        s("eventType").is_some_and(|x| !x.is_empty()),
                        "no eventType: {item}"
                    );
                    prop_assert!(
                        s("eventTime").is_some_and(|x| !x.is_empty()),
                        "no eventTime: {item}"
                    );
                    prop_assert!(s("subject").is_some(), "no subject: {item}");
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256), t in prop::sample::select(TYPES)) {
        check(t, &[], &body)?;
    }

    #[test]
    fn json_shaped_bodies(body in jsonish(), t in prop::sample::select(TYPES)) {
        check(t, &[], &body)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn binary_mode_headers(
        pairs in prop::collection::vec((prop::sample::select(vec!["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-x", "ce-"]), "[ -~]{0,12}|%[0-9A-Fa-f]{0,2}|%C3|%FF"), 0..6),
        body in jsonish(),
        t in prop::sample::select(TYPES),
    ) {
        let headers: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        check(t, &headers, &body)?;
    }
}

/// The queue route's core: metadata, then the message text, then planning.
fn check_queue(
    content_type: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), TestCaseError> {
    let ct = (!content_type.is_empty()).then_some(content_type);
    let refused = |status: http::StatusCode, message: &str| -> Result<(), TestCaseError> {
        prop_assert!(
            status.is_client_error(),
            "status {status} for malformed input"
        );
        prop_assert!(!message.is_empty());
        Ok(())
    };
    if let Err(e) = queue::metadata(headers) {
        let e = cmk_core::api::ApiError::from(e);
        return refused(e.status, &e.message);
    }
    let message = match queue::decode(ct, body, config().ingest.max_depth) {
        Ok(m) => m,
        Err(e) => return refused(e.status, &e.message),
    };
    match plan_events(message.events, &config(), &cred(), UnixTime(1_800_000_000)) {
        Err(e) => refused(e.status, &e.message),
        Ok(w) => {
            prop_assert!(!w.documents.is_empty());
            prop_assert!(w
                .units
                .iter()
                .all(|u| u.request.headers().contains_key("authorization")));
            Ok(())
        }
    }
}

const QUEUE_TYPES: &[&str] = &[
    "text/plain",
    "application/json",
    "application/octet-stream",
    "application/xml",
    "",
];

fn base64_of(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn queue_message_text_raw_or_base64(
        body in prop_oneof![jsonish(), prop::collection::vec(any::<u8>(), 0..256)],
        wrap in any::<bool>(),
        t in prop::sample::select(QUEUE_TYPES),
    ) {
        let body = if wrap { base64_of(&body) } else { body };
        check_queue(t, &[], &body)?;
    }

    #[test]
    fn queue_metadata_headers(
        pairs in prop::collection::vec((prop::sample::select(vec![
            "x-cmk-queue-message-id", "x-cmk-queue-dequeue-count", "x-cmk-queue-insertion-time",
            "messageid", "dequeuecount", "insertiontime"]), "[ -~]{0,12}|[0-9]{1,12}|-1|\\u{7f}|é"), 0..5),
        body in jsonish(),
    ) {
        let headers: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        check_queue("text/plain", &headers, &base64_of(&body))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn queue_messages_that_recombine_into_near_valid_events(
        body in jsonish(),
        t in prop::sample::select(QUEUE_TYPES),
    ) {
        check_queue(t, &[("x-cmk-queue-dequeue-count".into(), "1".into())], &body)?;
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for t in [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    ] {
        let e = plan(
            Some(t),
            &[],
            deep.as_bytes(),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap_err();
        assert_eq!(e.status, 400, "{t}");
    }
    let event = format!(
        r#"[{{"id":"1","eventType":"T","subject":"s","eventTime":"2024-01-01T00:00:00Z","data":{}1{}}}]"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(
        plan(
            Some("application/json"),
            &[],
            event.as_bytes(),
            &config(),
            &cred(),
            UnixTime(0)
        )
        .unwrap_err()
        .status,
        400
    );
}

/// The Event Grid decoder parses a body straight into its events' members;
/// a message that carries the array inside another envelope arrives as a
/// parsed `Value`, whose members are taken out of its maps. Both then go
/// through the same checks, so this holds the first parser to what
/// serde_json's own `Value` makes of the same bytes (members sent twice,
/// escaped names, every type, malformed JSON): the same answer, error or
/// events, for every body.
fn event_grid_both_ways(body: &[u8]) -> Result<(), TestCaseError> {
    use cmk_core::events::{decode_event_grid, event_grid_delivery, EventError};
    let direct = decode_event_grid(body);
    let via_value = serde_json::from_slice::<serde_json::Value>(body)
        .map_err(|e| EventError::NotJson(e.to_string()))
        .and_then(event_grid_delivery);
    prop_assert_eq!(
        direct,
        via_value,
        "body {:?}",
        String::from_utf8_lossy(body)
    );
    Ok(())
}

/// Event Grid arrays whose events mostly carry the members the schema
/// requires (so that the checks past them, the extensions and the
/// reserved names are reached), with other members of every JSON type
/// before or after them, the schema's names among them (sent twice, null,
/// of another type, escaped).
fn event_grid_arrays() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        "id",
        "eventType",
        "subject",
        "eventTime",
        "topic",
        "dataVersion",
        "metadataVersion",
        "data",
        "specversion",
        "source",
        "x",
        "dataversion",
        "i\\u0064",
        "",
    ]);
    let value = prop::sample::select(vec![
        "null",
        "1",
        "\"\"",
        "\"a\"",
        "\"b\"",
        "true",
        "[]",
        "{}",
        "[1,{\"validationCode\":\"c\"}]",
        "{\"validationCode\":\"c\",\"validationUrl\":\"u\"}",
        "{\"validationCode\":\"\"}",
        "\"Microsoft.EventGrid.SubscriptionValidationEvent\"",
        "1e999",
        "\"\\ud800\"",
    ]);
    let member = (name, value).prop_map(|(n, v)| format!("\"{n}\":{v}"));
    let core = (prop::sample::select(vec!["a", "b"]), prop::sample::select(vec!["/t1", "/t2"])).prop_map(
        |(id, topic)| {
            format!(
                "\"id\":\"{id}\",\"topic\":\"{topic}\",\"eventType\":\"T\",\"subject\":\"s\",\"eventTime\":\"2026-01-01T00:00:00Z\""
            )
        },
    );
    let object = (
        prop::option::weighted(0.8, core),
        prop::collection::vec(member, 0..5),
        any::<bool>(),
    )
        .prop_map(|(core, others, core_last)| {
            let mut m = others;
            if let Some(c) = core {
                if core_last {
                    m.push(c)
                } else {
                    m.insert(0, c)
                }
            }
            format!("{{{}}}", m.join(","))
        });
    let element = prop_oneof![8 => object, 1 => Just("1".to_owned()), 1 => Just("[{}]".to_owned()), 1 => Just("null".to_owned())];
    prop::collection::vec(element, 0..5).prop_map(|e| format!("[{}]", e.join(",")).into_bytes())
}

/// How often the generated arrays reach each outcome: a property test
/// whose cases all fail at the first check would hold little.
#[test]
fn event_grid_arrays_reach_events_and_each_kind_of_refusal() {
    use cmk_core::events::{decode_event_grid, Delivery, EventError};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut events, mut with_extensions, mut reserved, mut duplicate, mut wrong_type) =
        (0, 0, 0, 0, 0);
    for _ in 0..4000 {
        let body = event_grid_arrays().new_tree(&mut runner).unwrap().current();
        match decode_event_grid(&body) {
            Ok(Delivery::Events(e)) => {
                events += 1;
                with_extensions += usize::from(e.iter().any(|e| !e.extensions.is_empty()));
            }
            Err(EventError::Reserved { .. }) => reserved += 1,
            Err(EventError::Duplicate { .. }) => duplicate += 1,
            Err(EventError::WrongType { .. }) => wrong_type += 1,
            _ => {}
        }
    }
    for (what, n) in [
        ("events", events),
        ("extensions", with_extensions),
        ("reserved", reserved),
        ("duplicate", duplicate),
        ("wrong type", wrong_type),
    ] {
        assert!(n >= 10, "{what}: {n} of 4000 ({events} events, {reserved} reserved, {duplicate} duplicate, {wrong_type} wrong type)");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn event_grid_decodes_alike_from_bytes_and_from_a_parsed_value(
        body in prop_oneof![event_grid_arrays(), jsonish(), prop::collection::vec(any::<u8>(), 0..64)],
    ) {
        event_grid_both_ways(&body)?;
    }
}
