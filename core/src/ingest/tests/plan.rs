//! Tests of planning a delivery.

use super::*;

/// The refusal of a JSON delivery `body` under `c`.
fn refused(body: &[u8], c: &Config) -> ApiError {
    plan(Some("application/json"), &[], body, c, &cred(), UnixTime(0)).unwrap_err()
}

#[test]
fn wrong_content_type_is_415() {
    let e = plan(
        Some("text/plain"),
        &[],
        b"[]",
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap_err();
    assert_eq!(e.status, 415);
    assert!(plan(None, &[], b"[]", &config(), &cred(), UnixTime(0)).is_err());
}

#[test]
fn validation_is_answered_without_writes() {
    let v = json!([{"id": "1", "topic": "/t", "subject": "",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2024-01-01T00:00:00Z", "data": {"validationCode": "abc"}}]);
    let Plan::Respond(r) = plan(
        Some("application/json; charset=utf-8"),
        &[],
        &body(v),
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_slice::<Value>(r.body()).unwrap(),
        json!({"validationResponse": "abc"})
    );
}

#[test]
fn limits_are_checked_on_the_raw_body_before_parsing() {
    let mut c = config();
    c.ingest.max_depth = 4;
    c.ingest.max_events = 2;
    let deep = br#"[{"id":"1","data":{"a":{"b":{"c":1}}}}]"#;
    let e = check_shape(deep, &c).unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (400, "NestingTooDeep"));
    // Three events are counted without parsing them (the third is not
    // even valid JSON).
    let e = check_shape(br#"[{}, {}, {"x": "#, &c).unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (413, "TooManyEvents"));
    assert!(check_shape(br#"[{"a": "[[[[[[", "b": {}}, {}]"#, &c).is_ok());
    // Base64 queue messages hide their nesting: each event's data is checked.
    let ev = serde_json::json!([{"id": "1", "topic": "/t", "subject": "s", "eventType": "T",
        "eventTime": "2024-01-01T00:00:00Z", "data": {"a": {"b": {"c": {"d": {"e": 1}}}}}}]);
    let events = match crate::events::decode_event_grid(&serde_json::to_vec(&ev).unwrap()).unwrap()
    {
        crate::events::Delivery::Events(e) => e,
        _ => unreachable!(),
    };
    let e = plan_events(events, &c, &cred(), UnixTime(0)).unwrap_err();
    assert_eq!(e.code, "NestingTooDeep");
    // An Event Grid event must not carry CloudEvents attribute names.
    let bad = br#"[{"id":"1","topic":"/t","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{},"source":"/other"}]"#;
    let e = refused(bad, &config());
    assert_eq!(e.status, 400);
    assert!(e.message.contains("`source`"), "{}", e.message);
    // Nor a case variant of one (it would sit beside `data`, outside the
    // protected pointers), nor the stored form's names for dataVersion and
    // metadataVersion (they would replace them).
    for (member, value) in [
        ("Data", r#"{"ssn":"1"}"#),
        ("dataversion", r#"{"ssn":"1"}"#),
        ("MetadataVersion", r#""2""#),
    ] {
        let bad = format!(
            r#"[{{"id":"1","topic":"/t","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{{}},"dataVersion":"1","{member}":{value}}}]"#
        );
        let e = refused(bad.as_bytes(), &config());
        assert_eq!((e.status.as_u16(), e.code), (400, "InvalidEvent"));
        assert!(e.message.contains(&format!("`{member}`")), "{}", e.message);
    }
    // Event Grid always sets `topic`, the namespace of the event's id.
    let bad = br#"[{"id":"1","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{}}]"#;
    let e = refused(bad, &config());
    assert_eq!((e.status.as_u16(), e.code), (400, "InvalidEvent"));
    assert!(e.message.contains("`topic`"), "{}", e.message);
    // A partition key longer than the store accepts is the sender's error.
    let long = format!(
        r#"[{{"id":"1","topic":"/{}","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{{}}}}]"#,
        "t".repeat(3000)
    );
    let e = refused(long.as_bytes(), &config());
    assert_eq!(e.status, 400);
    assert!(e.message.contains("partition key"), "{}", e.message);
    // A value the read and erase routes could not name: with control
    // characters, or (the key taken from `subject`) empty.
    let mut by_subject = config();
    by_subject.ingest.partition_key = "/subject".into();
    for (topic, subject, c, why) in [
        (r"/t\n", "s", config(), "holds control characters"),
        (
            "/t",
            r"a\u0000b",
            by_subject.clone(),
            "holds control characters",
        ),
        ("/t", "", by_subject.clone(), "is empty"),
    ] {
        let bad = format!(
            r#"[{{"id":"1","topic":"{topic}","subject":"{subject}","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{{}}}}]"#
        );
        let e = refused(bad.as_bytes(), &c);
        assert_eq!((e.status.as_u16(), e.code), (400, "InvalidEvent"));
        assert!(e.message.contains(why), "{}", e.message);
    }
    // The same subject is a good key where it is not empty.
    let fine = br#"[{"id":"1","topic":"/t","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{}}]"#;
    assert!(plan(
        Some("application/json"),
        &[],
        fine,
        &by_subject,
        &cred(),
        UnixTime(0)
    )
    .is_ok());
}

#[test]
fn cloudevents_in_every_mode_become_documents() {
    let ce =
        json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "T", "data": {"x": 1}});
    let structured = plan(
        Some("application/cloudevents+json"),
        &[],
        &body(ce.clone()),
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap();
    let Plan::Write(w) = structured else { panic!() };
    assert_eq!(w.documents[0].body["encoding"], "cloudevents");
    assert_eq!(w.documents[0].id, crate::document::document_id("/s", "a"));
    let batch = plan(
        Some("application/cloudevents-batch+json"),
        &[],
        &body(json!([ce.clone(), {"specversion": "1.0", "id": "b", "source": "/s", "type": "T"}])),
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap();
    let Plan::Write(w) = batch else { panic!() };
    assert_eq!(w.documents.len(), 2);
    let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let headers = [
        h("ce-specversion", "1.0"),
        h("ce-id", "a"),
        h("ce-source", "/s"),
        h("ce-type", "T"),
    ];
    let Plan::Write(w) = plan(
        Some("application/json"),
        &headers,
        br#"{"x":1}"#,
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap() else {
        panic!()
    };
    // The same event in any mode is the same document.
    assert_eq!(w.documents[0].id, crate::document::document_id("/s", "a"));
    assert_eq!(w.documents[0].body["event"]["data"], json!({"x": 1}));
}

#[test]
fn one_request_per_partition_key_group() {
    let w = writes(vec![
        event_in("1", "/a"),
        event_in("2", "/b"),
        event_in("3", "/a"),
        event_in("4", "/c"),
    ]);
    assert_eq!(w.documents.len(), 4);
    let shape: Vec<(Vec<usize>, bool)> = w
        .units
        .iter()
        .map(|u| (u.documents.clone(), u.batch))
        .collect();
    assert_eq!(
        shape,
        vec![(vec![0, 2], true), (vec![1], false), (vec![3], false)]
    );
    assert_eq!(
        w.units[0].request.headers()["x-ms-cosmos-batch-atomic"],
        "True"
    );
    assert_eq!(
        w.units[0].request.headers()["x-ms-documentdb-partitionkey"],
        "[\"/a\"]"
    );
    assert_eq!(
        w.units[1].request.headers()["x-ms-documentdb-is-upsert"],
        "True"
    );
}

#[test]
fn batches_of_a_partition_key_outside_ascii_fit_too() {
    // Each operation carries the partition key escaped twice (`ü` is 7
    // bytes there, an emoji 14): the batches must be cut by what the body
    // really holds, wherever the documents' sizes put the cut.
    for topic in [
        "/ü".repeat(60),
        "/\u{1F600}".repeat(40),
        "/t\"\\".repeat(50),
    ] {
        for blob in (19_000..21_500).step_by(500) {
            let events: Vec<Value> = (0..150)
                .map(|i| {
                    let mut e = event_in(&i.to_string(), &topic);
                    e["data"] = json!({"blob": "x".repeat(blob)});
                    e
                })
                .collect();
            let w = writes(events);
            assert!(w.units.len() >= 2, "{blob}");
            for u in &w.units {
                assert!(u.request.body().len() <= MAX_BATCH_BYTES, "{blob}");
            }
            assert_eq!(
                w.units.iter().map(|u| u.documents.len()).sum::<usize>(),
                150
            );
        }
    }
}

#[test]
fn batches_are_cut_at_100_operations_and_2_mb() {
    let w = writes((0..250).map(|i| event(&i.to_string())).collect());
    let sizes: Vec<usize> = w.units.iter().map(|u| u.documents.len()).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let big: Vec<Value> = (0..40)
        .map(|i| {
            let mut e = event(&i.to_string());
            e["data"] = json!({"blob": "x".repeat(100_000)});
            e
        })
        .collect();
    let w = writes(big);
    assert!(w.units.len() >= 2);
    assert!(w
        .units
        .iter()
        .all(|u| u.request.body().len() <= MAX_BATCH_BYTES));
    assert_eq!(w.units.iter().map(|u| u.documents.len()).sum::<usize>(), 40);
}

#[test]
fn limits_and_bad_events_fail_the_whole_delivery_before_any_write() {
    let too_many = body(Value::Array(
        (0..301).map(|i| event(&i.to_string())).collect(),
    ));
    assert_eq!(
        plan(
            Some("application/json"),
            &[],
            &too_many,
            &config(),
            &cred(),
            UnixTime(0)
        )
        .unwrap_err()
        .status,
        413
    );
    let mut bad = event("2");
    bad.as_object_mut().unwrap().remove("eventType");
    let e = refused(&body(json!([event("1"), bad])), &config());
    assert_eq!(e.status, 400);
    assert!(
        e.message.contains("event 1") && e.message.contains("eventType"),
        "{}",
        e.message
    );
}
