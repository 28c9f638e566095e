//! Tests of finding and sealing protected fields.

use super::*;

#[test]
fn sealing_rewrites_every_request_without_plaintext() {
    let w = writes(vec![
        event_in("1", "/a"),
        event_in("2", "/a"),
        event_in("3", "/b"),
    ]);
    let protected =
        crate::config::ProtectedFields::parse(r#"{"*": ["/data", "/subject"]}"#, "/source")
            .unwrap();
    let dek = crate::envelope::Dek::from_bytes(&[7u8; 32]).unwrap();
    let mut n = 0u8;
    let mut nonce = || {
        n += 1;
        [n; 12]
    };
    let kid = "https://h.managedhsm.azure.net/keys/k/v1";
    let key = DeliveryKey {
        dek: &dek,
        kid,
        wrapped_dek: b"wrapped",
    };
    let sealed = seal(
        w.documents,
        &protected,
        &key,
        &mut nonce,
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap();
    assert_eq!(sealed.units.len(), 2);
    for u in &sealed.units {
        let body = String::from_utf8(u.request.body().clone()).unwrap();
        assert!(
            !body.contains("\"a\":1") && !body.contains("\"s\""),
            "plaintext in {body}"
        );
        assert!(body.contains(kid));
    }
    let d = &sealed.documents[0].body;
    assert_eq!(d["cmk"]["fields"], json!(["/event/data", "/event/subject"]));
    let opened = crate::envelope::open(d, &dek, None).unwrap();
    assert_eq!(opened["event"]["data"], json!({"a": 1}));
    assert_eq!(n, 6, "one nonce per sealed value");
}

#[test]
fn a_protected_pointer_through_another_shape_refuses_the_event() {
    let p = protected(r#"{"*": ["/data/ssn", "/data/card/number"]}"#);
    let cases = [
        (json!("{\"ssn\": \"078-05-1120\"}"), "/event/data", "string"),
        (json!("ssn=078-05-1120"), "/event/data", "string"),
        (json!([{"ssn": "078-05-1120"}]), "/event/data", "array"),
        (json!({"card": "number 4111"}), "/event/data/card", "string"),
        (json!({"card": 4111}), "/event/data/card", "number"),
    ];
    for (data, at, found) in cases {
        let w = writes(vec![with_data(data.clone())]);
        let u = protected_pointers(&w.documents, &p).unwrap_err();
        assert_eq!(
            (u.mismatch.at.as_str(), u.mismatch.found),
            (at, found),
            "{data}"
        );
        assert_eq!(u.event_id, "1");
        let e = ApiError::from(&u);
        assert_eq!(
            (e.status.as_u16(), e.code),
            (400, "ProtectedFieldUnresolvable")
        );
        assert!(
            !e.message.contains("078-05") && !e.message.contains("4111"),
            "{}",
            e.message
        );
        // Sealing refuses it too: nothing is written in plaintext.
        let dek = crate::envelope::Dek::from_bytes(&[7u8; 32]).unwrap();
        let key = DeliveryKey {
            dek: &dek,
            kid: "k",
            wrapped_dek: b"w",
        };
        let mut nonce = || [1u8; 12];
        let e = seal(
            w.documents,
            &p,
            &key,
            &mut nonce,
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap_err();
        assert_eq!(e.code, "ProtectedFieldUnresolvable");
    }
    // Absent leaves and absent or null parents are optional fields.
    for data in [
        json!({}),
        json!({"card": {}}),
        json!({"card": null}),
        json!(null),
    ] {
        let w = writes(vec![with_data(data.clone())]);
        assert_eq!(
            protected_pointers(&w.documents, &p).unwrap(),
            vec![Vec::<String>::new()],
            "{data}"
        );
    }
    // A text CloudEvent: data is a string.
    let ce = json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "T",
                    "datacontenttype": "text/plain", "data": "ssn=1"});
    let Plan::Write(w) = plan(
        Some("application/cloudevents+json"),
        &[],
        &body(ce),
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        protected_pointers(&w.documents, &p)
            .unwrap_err()
            .mismatch
            .found,
        "string"
    );
}

#[test]
fn wildcards_seal_each_element_of_an_array() {
    let p = protected(r#"{"*": ["/data/items/*/ssn"]}"#);
    let w = writes(vec![with_data(
        json!({"items": [{"ssn": "a"}, {"x": 1}, {"ssn": "b"}]}),
    )]);
    assert_eq!(
        protected_pointers(&w.documents, &p).unwrap(),
        vec![vec![
            "/event/data/items/0/ssn".to_string(),
            "/event/data/items/2/ssn".to_string()
        ]]
    );
    let w = writes(vec![with_data(json!({"items": {"ssn": "a"}}))]);
    assert_eq!(
        protected_pointers(&w.documents, &p)
            .unwrap_err()
            .mismatch
            .found,
        "object"
    );
    let w = writes(vec![with_data(json!({"items": [{"ssn": "a"}, "ssn=b"]}))]);
    assert_eq!(
        protected_pointers(&w.documents, &p)
            .unwrap_err()
            .mismatch
            .at,
        "/event/data/items/1"
    );
}

#[test]
fn sealed_shaped_values_are_refused_in_either_stage() {
    for data in [
        json!({"x": {"cmk": 1, "iv": "AQEBAQEBAQEBAQEB", "ct": "VYKBVEjJBxCxOAZ7fUU8GbL8v12UrKpcN7Uu3eiS"}}),
        json!({"list": [{"cmk": "junk", "iv": 0, "ct": null}]}),
        json!({"Jane Roe 123-45-6789": {"cmk": 1, "iv": "", "ct": ""}}),
    ] {
        let e = plan(
            Some("application/json"),
            &[],
            &body(json!([event("0"), with_data(data)])),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "SealedShapeInEvent"));
        assert!(
            e.message.contains("event `1`") && !e.message.contains("protected"),
            "{}",
            e.message
        );
        // Only the event's member is named: names inside it may be the data.
        assert!(e.message.contains("under /event/data is"), "{}", e.message);
        assert!(!e.message.contains("/event/data/"), "{}", e.message);
    }
    // Four members, or three others, are ordinary objects.
    assert!(plan(
        Some("application/json"),
        &[],
        &body(json!([with_data(json!({"x": {"cmk": 1, "iv": "", "ct": "", "y": 2}, "z": {"cmk": 1, "iv": "", "tag": ""}}))])),
        &config(),
        &cred(),
        UnixTime(0),
    )
    .is_ok());
}

#[test]
fn every_unresolvable_event_of_a_delivery_is_listed() {
    let p = protected(r#"{"*": ["/data/ssn", "/data/card/number"]}"#);
    let in_event = |id: &str, data: Value| {
        let mut e = event(id);
        e["data"] = data;
        e
    };
    let w = writes(vec![
        in_event("1", json!("ssn=1")),
        in_event("2", json!({"ssn": "ok"})),
        in_event("3", json!({"card": "number 4111"})),
    ]);
    let all = unresolvable(&w.documents, &p);
    let got: Vec<(&str, &str)> = all
        .iter()
        .map(|u| (u.mismatch.pointer.as_str(), u.mismatch.at.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("/event/data/ssn", "/event/data"),
            ("/event/data/card/number", "/event/data"),
            ("/event/data/card/number", "/event/data/card"),
        ]
    );
    assert_eq!(all[0].document_id, w.documents[0].id);
    assert_eq!(all[2].document_id, w.documents[2].id);
    assert_eq!(
        protected_pointers(&w.documents, &p).unwrap_err(),
        all[0],
        "the answer names the first"
    );
}

#[test]
fn a_delivery_with_nothing_to_seal_gets_key_less_headers() {
    let p = protected(r#"{"*": ["/data/ssn"]}"#);
    let w = writes(vec![event_in("1", "/a"), event_in("2", "/a")]);
    assert!(protected_pointers(&w.documents, &p)
        .unwrap()
        .iter()
        .all(Vec::is_empty));
    let kid = "https://h.managedhsm.azure.net/keys/k/v1";
    let sealed = seal_none(w.documents, kid, &config(), &cred(), UnixTime(0)).unwrap();
    let d = &sealed.documents[0].body;
    assert_eq!(d["cmk"]["fields"], json!([]));
    assert_eq!(d["cmk"]["kid"], kid);
    assert!(d["cmk"].get("dek").is_none());
    assert_eq!(
        crate::envelope::open_with(d, None, None).unwrap()["event"]["data"],
        json!({"a": 1})
    );
    let (r, _) = summarize(&sealed, vec![batch_ok(&[201, 201])]);
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["documents"][0]["sealedFields"], 0);
}
