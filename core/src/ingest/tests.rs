//! Known-answer and behaviour tests of [`super`] (`ingest`).

use super::*;
use crate::config::Config;
use serde_json::Value;

fn config() -> Config {
    Config::load(|name| {
        Ok(match name {
            "cosmos_endpoint" => Some("http://127.0.0.1:8081".into()),
            "cosmos_database" => Some("db".into()),
            "cosmos_container" => Some("events".into()),
            "cosmos_key" => Some("c2VjcmV0".into()),
            "max_events_per_request" => Some("300".into()),
            _ => None,
        })
    })
    .unwrap()
}

fn cred() -> Credential {
    config().cosmos.auth.static_credential().unwrap().clone()
}

fn event(id: &str) -> Value {
    json!({"id": id, "topic": "/t", "subject": "s", "eventType": "T",
           "eventTime": "2024-01-01T00:00:00Z", "data": {"a": 1}})
}

fn event_in(id: &str, topic: &str) -> Value {
    let mut e = event(id);
    e["topic"] = json!(topic);
    e
}

fn body(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn writes(events: Vec<Value>) -> Writes {
    match plan(
        Some("application/json"),
        &[],
        &body(Value::Array(events)),
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap()
    {
        Plan::Write(w) => w,
        Plan::Respond(_) => panic!("expected writes"),
    }
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
        w,
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

fn protected(json_text: &str) -> crate::config::ProtectedFields {
    crate::config::ProtectedFields::parse(json_text, "/source").unwrap()
}

fn with_data(data: Value) -> Value {
    let mut e = event("1");
    e["data"] = data;
    e
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
        let e = seal(w, &p, &key, &mut nonce, &config(), &cred(), UnixTime(0)).unwrap_err();
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
    let sealed = seal_none(w, kid, &config(), &cred(), UnixTime(0)).unwrap();
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
    let e = plan(
        Some("application/json"),
        &[],
        bad,
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("`source`"), "{}", e.message);
    // A partition key longer than the store accepts is the sender's error.
    let long = format!(
        r#"[{{"id":"1","topic":"/{}","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{{}}}}]"#,
        "t".repeat(3000)
    );
    let e = plan(
        Some("application/json"),
        &[],
        long.as_bytes(),
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("partition key"), "{}", e.message);
}

#[test]
fn senders_need_an_ingest_key() {
    let mut c = config();
    assert_eq!(authorize(&c, None, Some("x"), "").unwrap_err().status, 503);
    c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
    assert!(authorize(&c, None, Some("ingest-key-0123456789"), "").is_ok());
    assert_eq!(authorize(&c, None, None, "").unwrap_err().status, 401);
    assert_eq!(
        authorize(&c, None, Some("wrong-key-0123456789"), "")
            .unwrap_err()
            .status,
        403
    );
    // Without Entra delivery configured, an Authorization header is not a credential.
    assert_eq!(
        authorize(&c, Some("Bearer a.b.c"), None, "")
            .unwrap_err()
            .status,
        401
    );
}

#[test]
fn an_ingest_key_in_the_url_is_refused_unless_allowed() {
    let mut c = config();
    c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
    let e = authorize(&c, None, None, "a=1&code=ingest-key-0123456789").unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (401, "KeyInQueryRefused"));
    // The header is the credential; a key also left in the URL is ignored.
    assert!(authorize(&c, None, Some("ingest-key-0123456789"), "code=wrong").is_ok());
    c.ingest.key_in_query = true;
    assert!(authorize(&c, None, None, "a=1&code=ingest-key-0123456789").is_ok());
    assert_eq!(
        authorize(&c, None, None, "code=wrong").unwrap_err().status,
        403
    );
}

#[test]
fn with_entra_delivery_a_bearer_token_is_taken_for_verification() {
    let mut c = config();
    c.ingest.entra = Some(crate::config::SenderTokens {
        policy: crate::jwt::Policy {
            audiences: vec!["api://cmk".into()],
            issuers: crate::jwt::Policy::default_issuers("t"),
            tenant: "t".into(),
            roles: vec![],
            app_ids: vec![],
        },
        jwks_url: "https://login.microsoftonline.com/t/discovery/v2.0/keys".into(),
    });
    let token = "eyJhbGciOiJSUzI1NiJ9.e30.AAAA";
    assert!(matches!(
        authorize(&c, Some(&format!("Bearer {token}")), None, ""),
        Ok(SenderCredential::Token(_))
    ));
    // A malformed token is refused before any signing key is fetched.
    let e = authorize(&c, Some("Bearer not-a-jwt"), None, "").unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (401, "InvalidToken"));
    // No keys configured: only tokens are accepted, and a key is not one.
    let e = authorize(&c, None, Some("ingest-key-0123456789"), "").unwrap_err();
    assert_eq!(e.status, 401);
    assert!(e.message.contains("bearer token"));
    // Both configured: either credential.
    c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
    assert!(matches!(
        authorize(&c, None, Some("ingest-key-0123456789"), ""),
        Ok(SenderCredential::Key)
    ));
    let role = crate::jwt::JwtError::Claim {
        claim: "roles",
        why: "x".into(),
    };
    assert_eq!(token_error(&role).status, 403);
    let app = crate::jwt::JwtError::Claim {
        claim: "appid",
        why: "x".into(),
    };
    assert_eq!(token_error(&app).status, 403);
    let keys = crate::jwt::JwtError::Jwks("down".into());
    assert_eq!(token_error(&keys).status, 503);
    assert_eq!(token_error(&crate::jwt::JwtError::Signature).status, 401);
    assert_eq!(token_error(&crate::jwt::JwtError::UnknownKey).status, 401);
    // A rotated key not fetched yet: transient, retried by Event Grid.
    let rotated = token_error(&crate::jwt::JwtError::KeysNotRefreshed {
        retry_after_secs: 290,
    });
    assert_eq!(
        (rotated.status.as_u16(), rotated.code, rotated.retry_after),
        (503, "SigningKeysUnavailable", Some(290))
    );
}

#[test]
fn webhook_handshake_echoes_the_origin() {
    let r = webhook_handshake(Some("eventgrid.azure.net")).unwrap();
    assert_eq!(r.headers()["webhook-allowed-origin"], "eventgrid.azure.net");
    assert_eq!(r.headers()["webhook-allowed-rate"], "*");
    assert_eq!(webhook_handshake(None).unwrap_err().status, 400);
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
    let e = plan(
        Some("application/json"),
        &[],
        &body(json!([event("1"), bad])),
        &config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap_err();
    assert_eq!(e.status, 400);
    assert!(
        e.message.contains("event 1") && e.message.contains("eventType"),
        "{}",
        e.message
    );
}

fn ok(status: u16) -> WriteResult {
    Ok(Response::builder()
        .status(status)
        .header("x-ms-request-charge", "2.5")
        .body(b"{}".to_vec())
        .unwrap())
}

fn batch_ok(statuses: &[u16]) -> WriteResult {
    let results: Vec<Value> = statuses
        .iter()
        .map(|s| json!({"statusCode": s, "requestCharge": 1.0}))
        .collect();
    Ok(Response::builder()
        .status(200)
        .header("x-ms-request-charge", "4")
        .body(serde_json::to_vec(&results).unwrap())
        .unwrap())
}

#[test]
fn summary_reports_every_document() {
    let w = writes(vec![
        event_in("1", "/a"),
        event_in("2", "/b"),
        event_in("3", "/a"),
    ]);
    let (r, outcomes) = summarize(&w, vec![batch_ok(&[201, 200]), ok(201)]);
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["accepted"], 3);
    assert_eq!(v["requests"], 2);
    assert_eq!(v["requestCharge"], 6.5);
    assert_eq!(v["documents"][0]["id"], json!(w.documents[0].id));
    let statuses: Vec<&Value> = (0..3).map(|i| &v["documents"][i]["status"]).collect();
    assert_eq!(statuses, [&json!(201), &json!(201), &json!(200)]);
    assert!(outcomes[0].batch && outcomes[0].documents == 2);
}

fn create_config() -> Config {
    let mut c = config();
    c.cosmos.write_mode = WriteMode::Create;
    c
}

fn read_answer(status: u16, body: &Value) -> WriteResult {
    Ok(Response::builder()
        .status(status)
        .header("x-ms-request-charge", "1")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap())
}

#[test]
fn create_mode_never_upserts() {
    let Plan::Write(w) = plan(
        Some("application/json"),
        &[],
        &body(json!([
            event_in("1", "/a"),
            event_in("2", "/a"),
            event_in("3", "/b")
        ])),
        &create_config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap() else {
        panic!()
    };
    let ops: Value = serde_json::from_slice(w.units[0].request.body()).unwrap();
    assert_eq!(ops[0]["operationType"], "Create");
    assert!(w.units[1]
        .request
        .headers()
        .get("x-ms-documentdb-is-upsert")
        .is_none());
    let one = create_request(&w.documents[0], &create_config(), &cred(), UnixTime(0)).unwrap();
    assert!(one.headers().get("x-ms-documentdb-is-upsert").is_none());
    assert_eq!(
        read_request(&w.documents[0], &create_config(), &cred(), UnixTime(0))
            .uri()
            .path(),
        format!("/dbs/db/colls/events/docs/{}", w.documents[0].id)
    );
}

#[test]
fn conflicts_are_recognised_in_both_forms() {
    let w = writes(vec![
        event_in("1", "/a"),
        event_in("2", "/a"),
        event_in("3", "/b"),
    ]);
    let batch409 = Ok(Response::builder()
        .status(207)
        .body(br#"[{"statusCode":424},{"statusCode":409}]"#.to_vec())
        .unwrap());
    let single409 = Ok(Response::builder().status(409).body(Vec::new()).unwrap());
    assert!(is_conflict(
        &unit_outcome(&w.units[0], batch409).unwrap_err()
    ));
    assert!(is_conflict(
        &unit_outcome(&w.units[1], single409).unwrap_err()
    ));
    let throttled = Ok(Response::builder()
        .status(207)
        .body(br#"[{"statusCode":429},{"statusCode":424}]"#.to_vec())
        .unwrap());
    assert!(!is_conflict(
        &unit_outcome(&w.units[0], throttled).unwrap_err()
    ));
}

#[test]
fn a_stored_document_is_verified_not_overwritten() {
    let w = writes(vec![event("1")]);
    let ours = &w.documents[0];
    let mut stored = ours.body.clone();
    stored["_rid"] = json!("r");
    stored["_etag"] = json!("\"e\"");
    stored["_ts"] = json!(5);
    assert!(verify_stored(ours, read_answer(200, &stored)).is_ok());
    stored["event"]["data"]["a"] = json!(2);
    assert_eq!(
        verify_stored(ours, read_answer(200, &stored)).unwrap_err(),
        CosmosError::ExistsWithOtherContent {
            id: ours.id.clone()
        }
    );
    assert_eq!(
        ApiError::from(&CosmosError::ExistsWithOtherContent { id: "x".into() }).status,
        409
    );
    let gone = read_answer(404, &json!({"code": "NotFound", "message": "m"}));
    assert!(verify_stored(ours, gone).unwrap_err().is_transient());
}

#[test]
fn a_redelivery_sealed_under_a_fresh_key_matches_its_stored_document() {
    let protected =
        crate::config::ProtectedFields::parse(r#"{"*": ["/data"]}"#, "/source").unwrap();
    let seal_with = |key_byte: u8, events: Vec<Value>| {
        let dek = crate::envelope::Dek::from_bytes(&[key_byte; 32]).unwrap();
        let mut n = key_byte;
        let mut nonce = || {
            n = n.wrapping_add(1);
            [n; 12]
        };
        let key = DeliveryKey {
            dek: &dek,
            kid: "https://h.managedhsm.azure.net/keys/k/v1",
            wrapped_dek: &[key_byte; 8],
        };
        seal(
            writes(events),
            &protected,
            &key,
            &mut nonce,
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap()
        .documents
        .remove(0)
        .body
    };
    let first = seal_with(1, vec![event("1")]);
    let again = seal_with(9, vec![event("1")]);
    assert_ne!(first, again, "fresh key and nonces");
    assert!(stored_matches(&first, &again));
    // Unsealed members must still agree.
    let mut changed = event("1");
    changed["subject"] = json!("other");
    assert!(!stored_matches(&first, &seal_with(9, vec![changed])));
    // A sealed and an unsealed form of the event do not match.
    assert!(!stored_matches(
        &first,
        &writes(vec![event("1")]).documents[0].body
    ));
    // Nor does a different set of sealed fields.
    let mut other = again.clone();
    other["cmk"]["fields"] = json!([]);
    assert!(!stored_matches(&first, &other));
}

#[test]
fn create_mode_reports_conflicts_per_document() {
    let w = writes(vec![event_in("1", "/a"), event_in("2", "/b")]);
    let conflict = |statuses: Vec<u16>| {
        Ok(UnitWritten {
            statuses,
            metrics: Metrics::default(),
        })
    };
    // One new, one conflicting: 200, the conflict reported; a
    // redelivery (the first now already there) gets the same answer.
    for first in [201, 200] {
        let (r, _) = respond(&w, vec![conflict(vec![first]), conflict(vec![CONFLICT])]);
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            (v["accepted"].clone(), v["conflicts"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(v["documents"][1]["status"], 409);
        assert_eq!(v["documents"][1]["code"], "DocumentConflict");
        assert!(v["documents"][0].get("code").is_none());
    }
    // Nothing of the delivery could be stored: 409 as a whole.
    let (r, _) = respond(&w, vec![conflict(vec![CONFLICT]), conflict(vec![CONFLICT])]);
    assert_eq!(r.status(), 409);
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["error"]["code"], "DocumentConflict");
    // A retryable failure still outranks everything.
    let (r, _) = respond(
        &w,
        vec![
            conflict(vec![CONFLICT]),
            Err(CosmosError::Transport("reset".into())),
        ],
    );
    assert_eq!(r.status(), 503);
}

#[test]
fn any_failure_fails_the_delivery_preferring_retryable() {
    let w = writes(vec![event_in("1", "/a"), event_in("2", "/b")]);
    let unauthorized = || {
        Ok(Response::builder()
            .status(401)
            .body(br#"{"code":"Unauthorized","message":"no"}"#.to_vec())
            .unwrap())
    };
    let (r, _) = summarize(&w, vec![ok(201), unauthorized()]);
    assert_eq!(r.status(), 502);
    let (r, _) = summarize(
        &w,
        vec![unauthorized(), Err(CosmosError::Transport("reset".into()))],
    );
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let w = writes(vec![event_in("1", "/a"), event_in("2", "/a")]);
    // A batch still throttled when the retry budget ran out (the I/O
    // layer retries such answers first: cosmos::transient_failure).
    let failed = Ok(Response::builder()
        .status(207)
        .body(br#"[{"statusCode":424},{"statusCode":429}]"#.to_vec())
        .unwrap());
    let (r, _) = summarize(&w, vec![failed]);
    assert_eq!(r.status(), 503);
}
