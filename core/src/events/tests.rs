//! Known-answer and behaviour tests of [`super`] (`events`).

use super::*;
use serde_json::json;

// Microsoft's "Event Grid event schema" sample for a Blob storage event.
const STORAGE_EVENT: &str = r#"[{
  "topic": "/subscriptions/{subscription-id}/resourceGroups/Storage/providers/Microsoft.Storage/storageAccounts/xstoretestaccount",
  "subject": "/blobServices/default/containers/oc2d2817345i200097container/blobs/oc2d2817345i20002296blob",
  "eventType": "Microsoft.Storage.BlobCreated",
  "eventTime": "2017-06-26T18:41:00.9584103Z",
  "id": "831e1650-001e-001b-66ab-eeb76e069631",
  "data": {
    "api": "PutBlockList",
    "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
    "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
    "eTag": "0x8D4BCC2E4835CD0",
    "contentType": "application/octet-stream",
    "contentLength": 524288,
    "blobType": "BlockBlob",
    "url": "https://oc2d2817345i60006.blob.core.windows.net/oc2d2817345i200097container/oc2d2817345i20002296blob",
    "sequencer": "00000000000004420000000000028963",
    "storageDiagnostics": { "batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0" }
  },
  "dataVersion": "",
  "metadataVersion": "1"
}]"#;

// Microsoft's "Receive events from Event Grid to an HTTP endpoint" validation sample.
const VALIDATION: &str = r#"[{
  "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
  "topic": "/subscriptions/xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
  "subject": "",
  "data": {
    "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
    "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/myeventsub/validate?id=0000000000-0000-0000-0000-00000000000000&t=2022-10-28T04:23:35.1981776Z&apiVersion=2018-05-01-preview&token=1A1A1A1A"
  },
  "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
  "eventTime": "2022-10-28T04:23:35.1981776Z",
  "metadataVersion": "1",
  "dataVersion": "1"
}]"#;

#[test]
fn validation_handshake() {
    match decode_event_grid(VALIDATION.as_bytes()).unwrap() {
        Delivery::Validation { code, url } => {
            assert_eq!(code, "512d38b6-c7b8-40c8-89fe-f46f9e9622b6");
            assert!(url
                .unwrap()
                .starts_with("https://rp-eastus2.eventgrid.azure.net"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn storage_event_maps_to_the_cloudevents_shape() {
    let Delivery::Events(events) = decode_event_grid(STORAGE_EVENT.as_bytes()).unwrap() else {
        panic!("expected events")
    };
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.id, "831e1650-001e-001b-66ab-eeb76e069631");
    assert_eq!(e.ty, "Microsoft.Storage.BlobCreated");
    assert!(e.source.ends_with("/storageAccounts/xstoretestaccount"));
    let ce = e.to_cloudevent_json();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["type"], "Microsoft.Storage.BlobCreated");
    assert_eq!(ce["time"], "2017-06-26T18:41:00.9584103Z");
    assert_eq!(ce["dataversion"], "");
    assert_eq!(ce["metadataversion"], "1");
    assert_eq!(ce["data"]["contentLength"], 524288);
}

#[test]
fn unknown_members_are_kept() {
    let body = json!([{"id":"1","topic":"/t","eventType":"t","subject":"s","eventTime":"2024-01-01T00:00:00Z","data":{},"x-extra":{"a":1}}]);
    let Delivery::Events(e) = decode_event_grid(body.to_string().as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(e[0].extensions["x-extra"], json!({"a":1}));
    assert_eq!(e[0].source, "/t");
}

// The CloudEvents 1.0 specification's JSON example.
const CE: &str = r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "C234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/json",
    "data" : {"appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true}
}"#;

#[test]
fn cloudevents_structured_and_batch() {
    let e = &decode_cloudevent(CE.as_bytes()).unwrap()[0];
    assert_eq!(
        (e.id.as_str(), e.source.as_str(), e.ty.as_str()),
        ("C234-1234-1234", "/mycontext", "com.example.someevent")
    );
    assert_eq!(e.subject, None);
    assert_eq!(e.extensions["comexampleothervalue"], 5);
    let ce = e.to_cloudevent_json();
    assert_eq!(ce["data"]["appinfoB"], 123);
    assert_eq!(ce["comexampleextension1"], "value");
    let batch = format!("[{CE}, {}]", CE.replace("C234", "C999"));
    assert_eq!(decode_cloudevents_batch(batch.as_bytes()).unwrap().len(), 2);
    let dup = format!("[{CE}, {CE}]");
    assert!(matches!(
        decode_cloudevents_batch(dup.as_bytes()),
        Err(EventError::Duplicate { .. })
    ));
}

#[test]
fn cloudevents_validation() {
    let base: Value = serde_json::from_str(CE).unwrap();
    let with = |k: &str, v: Value| {
        let mut o = base.clone();
        o[k] = v;
        decode_cloudevent(o.to_string().as_bytes())
    };
    let without = |k: &str| {
        let mut o = base.clone();
        o.as_object_mut().unwrap().remove(k);
        decode_cloudevent(o.to_string().as_bytes())
    };
    for f in ["id", "source", "specversion", "type"] {
        assert_eq!(
            without(f),
            Err(EventError::Missing { index: 0, field: f }),
            "{f}"
        );
    }
    assert!(with("specversion", json!("0.3")).is_err());
    assert!(with("time", json!("yesterday")).is_err());
    assert!(with("time", json!("2018-04-05T17:31:00.123+02:00")).is_ok());
    assert!(with("Bad-Name", json!("x")).is_err());
    assert!(with("averyveryverylongextensionname", json!("x")).is_err());
    assert!(with("ext", json!({"nested": 1})).is_err());
    assert!(
        with("data_base64", json!("AAEC")).is_err(),
        "both data and data_base64"
    );
    assert!(decode_cloudevent(b"[]").is_err());
}

#[test]
fn cloudevents_binary_mode() {
    let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let headers = vec![
        h("ce-specversion", "1.0"),
        h("ce-type", "com.example.someevent"),
        h("ce-source", "/mycontext/subcontext"),
        h("ce-id", "1234-1234-1234"),
        h("ce-time", "2018-04-05T03:56:24Z"),
        h("ce-subject", "caf%C3%A9"),
        h(
            "ce-traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    let e =
        &decode_cloudevent_binary(&headers, Some("application/json"), br#"{"a":1}"#).unwrap()[0];
    assert_eq!(e.encoding, Encoding::CloudEventsBinary);
    assert_eq!(e.subject.as_deref(), Some("café"));
    assert_eq!(e.data, Some(json!({"a": 1})));
    assert!(e.extensions.contains_key("traceparent"));
    let text = &decode_cloudevent_binary(&headers, Some("text/plain"), b"hello").unwrap()[0];
    assert_eq!(text.extensions["data_base64"], "aGVsbG8=");
    assert!(decode_cloudevent_binary(&headers[1..], Some("application/json"), b"{}").is_err());
}

#[test]
fn each_malformation_has_its_own_error() {
    let ok = json!({"id":"1","topic":"/t","eventType":"t","subject":"s","eventTime":"2024-01-01T00:00:00Z","data":{}});
    let with = |k: &str, v: Value| {
        let mut o = ok.clone();
        o[k] = v;
        json!([o]).to_string()
    };
    let without = |k: &str| {
        let mut o = ok.clone();
        o.as_object_mut().unwrap().remove(k);
        json!([o]).to_string()
    };
    let d = |s: &str| decode_event_grid(s.as_bytes());
    assert!(matches!(d("{"), Err(EventError::NotJson(_))));
    // Bytes that are not UTF-8 are refused with serde_json's own answer,
    // which says where: in a string, and outside one.
    for (body, at) in [
        (&b"[{\"id\": \"a\xff\"}]"[..], "line 1 column 11"),
        (&b"[\xc3]"[..], "line 1 column 2"),
    ] {
        match decode_event_grid(body) {
            Err(EventError::NotJson(m)) => assert!(m.contains(at), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(d("{}"), Err(EventError::NotArray));
    assert_eq!(d("[]"), Err(EventError::Empty));
    assert_eq!(d("[1]"), Err(EventError::NotObject { index: 0 }));
    assert_eq!(
        d(&without("id")),
        Err(EventError::Missing {
            index: 0,
            field: "id"
        })
    );
    assert_eq!(
        d(&with("id", json!(""))),
        Err(EventError::Missing {
            index: 0,
            field: "id"
        })
    );
    assert_eq!(
        d(&without("eventType")),
        Err(EventError::Missing {
            index: 0,
            field: "eventType"
        })
    );
    assert_eq!(
        d(&without("topic")),
        Err(EventError::Missing {
            index: 0,
            field: "topic"
        })
    );
    assert_eq!(
        d(&without("eventTime")),
        Err(EventError::Missing {
            index: 0,
            field: "eventTime"
        })
    );
    assert_eq!(
        d(&with("id", json!(7))),
        Err(EventError::WrongType {
            index: 0,
            field: "id".into(),
            expected: "string"
        })
    );
    let dup = json!([ok.clone(), ok.clone()]).to_string();
    assert_eq!(
        d(&dup),
        Err(EventError::Duplicate {
            first: 0,
            second: 1,
            id: "1".into()
        })
    );
    let mixed = format!(
        "[{},{}]",
        VALIDATION
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']'),
        ok
    );
    assert!(matches!(d(&mixed), Err(EventError::BadValidation(_))));
}

#[test]
fn depth_and_items_are_read_without_parsing() {
    assert_eq!(
        shape(b"[]"),
        Shape {
            depth: 1,
            top_level_items: Some(0)
        }
    );
    assert_eq!(
        shape(b"[1, {\"a\": [2]}, \"x,]\"]"),
        Shape {
            depth: 3,
            top_level_items: Some(3)
        }
    );
    assert_eq!(
        shape(b"{\"a\": {\"b\": 1}}"),
        Shape {
            depth: 2,
            top_level_items: None
        }
    );
    assert_eq!(
        shape(br#"["\"[[[[", "\\"]"#),
        Shape {
            depth: 1,
            top_level_items: Some(2)
        }
    );
    assert_eq!(shape(b"  [ {} , {} ]  ").top_level_items, Some(2));
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    assert_eq!(shape(deep.as_bytes()).depth, 500);
    assert_eq!(shape(b"").depth, 0);
}

#[test]
fn strings_are_skipped_as_a_byte_by_byte_scan_would() {
    // The byte-by-byte state machine the scan replaces, as the reference.
    fn reference(body: &[u8]) -> Shape {
        let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
        let (mut top_array, mut items, mut seen_value) = (None, 0usize, false);
        for &b in body {
            if in_str {
                match (esc, b) {
                    (true, _) => esc = false,
                    (false, b'\\') => esc = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => {
                    in_str = true;
                    seen_value |= depth == 1;
                }
                b'[' | b'{' => {
                    if depth == 0 && top_array.is_none() {
                        top_array = Some(b == b'[');
                    } else if depth == 1 {
                        seen_value = true;
                    }
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b',' if depth == 1 => {
                    items += 1;
                    seen_value = false;
                }
                b' ' | b'\t' | b'\n' | b'\r' => {}
                _ if depth == 1 => seen_value = true,
                _ => {}
            }
        }
        Shape {
            depth: max,
            top_level_items: (top_array == Some(true)).then_some(items + usize::from(seen_value)),
        }
    }
    let alphabet = b"[]{},\"\\ a1";
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..400 {
        let body: Vec<u8> = (0..len % 40)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect();
        assert_eq!(
            shape(&body),
            reference(&body),
            "{:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn binary_mode_headers_are_the_ce_ones_and_must_be_utf8() {
    let entries = |v: &[u8]| {
        vec![
            ("content-type".to_string(), b"application/json".to_vec()),
            ("CE-Id".to_string(), b"1".to_vec()),
            ("x-other".to_string(), vec![0xff]),
            ("ce-subject".to_string(), v.to_vec()),
        ]
    };
    assert_eq!(
        binary_mode_headers(&entries(b"a%C3%A9")).unwrap(),
        [
            ("CE-Id".to_string(), "1".to_string()),
            ("ce-subject".to_string(), "a%C3%A9".to_string())
        ]
    );
    // Not a binary-mode request (no ce-specversion): the headers are not
    // read, and one that is not UTF-8 is left out.
    assert_eq!(
        binary_mode_headers(&entries(b"a\xe9")).unwrap(),
        [("CE-Id".to_string(), "1".to_string())]
    );
    // In one, a value that is not UTF-8 would lose its attribute: refused.
    let mut binary = entries(b"a\xe9");
    binary.push(("Ce-SpecVersion".to_string(), b"1.0".to_vec()));
    assert_eq!(
        binary_mode_headers(&binary),
        Err(EventError::WrongType {
            index: 0,
            field: "subject".into(),
            expected: "percent-encoded UTF-8"
        })
    );
    // The content type, read as absent when it is not UTF-8, would turn a
    // JSON body into data_base64: refused.
    assert_eq!(
        content_type(&binary).unwrap().as_deref(),
        Some("application/json")
    );
    assert_eq!(content_type(&binary[1..]).unwrap(), None);
    let odd = [(
        "Content-Type".to_string(),
        b"application/json; x=\xff".to_vec(),
    )];
    assert!(matches!(
        content_type(&odd),
        Err(EventError::WrongType { field, .. }) if field == "content-type"
    ));
}
