use super::*;

/// `max_nesting_depth`'s default.
const DEPTH: usize = 32;
use crate::events::Encoding;
use serde_json::json;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(s)
        .into_bytes()
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// One event as Event Grid's Storage-queue handler writes it: the event
// object itself (Event Grid schema), not wrapped in an array.
fn event_grid() -> Value {
    json!({"topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
           "subject": "/blobServices/default/containers/c/blobs/b", "eventType": "Microsoft.Storage.BlobCreated",
           "eventTime": "2017-06-26T18:41:00.9584103Z", "id": "831e1650-001e-001b-66ab-eeb76e069631",
           "data": {"api": "PutBlockList"}, "dataVersion": "", "metadataVersion": "1"})
}

fn cloud_event(id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/mycontext", "type": "com.example.someevent",
           "time": "2018-04-05T17:31:00Z", "data": {"a": 1}})
}

#[test]
fn raw_and_base64_text_give_the_same_events() {
    let text = event_grid().to_string();
    let raw = decode(Some("text/plain"), text.as_bytes(), DEPTH).unwrap();
    let based = decode(None, &b64(&text), DEPTH).unwrap();
    assert_eq!(raw.text_encoding, TextEncoding::Raw);
    assert_eq!(based.text_encoding, TextEncoding::Base64);
    assert_eq!(raw.events, based.events);
    let e = &raw.events[0];
    assert_eq!(e.encoding, Encoding::EventGrid);
    assert_eq!(e.ty, "Microsoft.Storage.BlobCreated");
    assert_eq!(e.source, event_grid()["topic"]);
    // Surrounding whitespace (a trailing newline) is not part of the text.
    let padded = format!("\n{}\n", String::from_utf8(b64(&text)).unwrap());
    assert_eq!(
        decode(None, padded.as_bytes(), DEPTH).unwrap().events,
        raw.events
    );
}

#[test]
fn event_grid_single_and_array() {
    let one = decode(None, event_grid().to_string().as_bytes(), DEPTH).unwrap();
    let mut second = event_grid();
    second["id"] = json!("2");
    let many = decode(
        None,
        json!([event_grid(), second]).to_string().as_bytes(),
        DEPTH,
    )
    .unwrap();
    assert_eq!(one.events.len(), 1);
    assert_eq!(many.events.len(), 2);
    assert_eq!(many.events[0], one.events[0]);
}

#[test]
fn cloudevents_single_and_batch() {
    let one = decode(
        Some("application/cloudevents+json"),
        &b64(&cloud_event("a").to_string()),
        DEPTH,
    )
    .unwrap();
    assert_eq!(one.events[0].encoding, Encoding::CloudEventsStructured);
    assert_eq!(one.events[0].id, "a");
    let batch = json!([cloud_event("a"), cloud_event("b")]).to_string();
    assert_eq!(
        decode(None, batch.as_bytes(), DEPTH).unwrap().events.len(),
        2
    );
    // Batch rules still hold: no two events with one source and id.
    let dup = json!([cloud_event("a"), cloud_event("a")]).to_string();
    assert!(matches!(
        message_json(dup.as_bytes(), DEPTH).and_then(|(v, _)| events_of(v)),
        Err(QueueError::Event(EventError::Duplicate { .. }))
    ));
}

#[test]
fn the_same_event_is_the_same_document_via_queue_or_push() {
    let via_queue = decode(None, &b64(&event_grid().to_string()), DEPTH)
        .unwrap()
        .events;
    let crate::events::Delivery::Events(via_push) =
        crate::events::decode_event_grid(json!([event_grid()]).to_string().as_bytes()).unwrap()
    else {
        panic!()
    };
    assert_eq!(via_queue, via_push);
}

#[test]
fn bridge_metadata() {
    let m = metadata(&h(&[
        (
            "X-Cmk-Queue-Message-Id",
            "7f3a2c1e-0b4d-4e59-9c1a-2d3e4f5a6b7c",
        ),
        ("x-cmk-queue-dequeue-count", "3"),
        (
            "x-cmk-queue-insertion-time",
            "Fri, 09 Oct 2009 21:04:30 GMT",
        ),
        ("content-type", "text/plain"),
    ]))
    .unwrap();
    assert_eq!(m.forwarder, Forwarder::Bridge);
    assert_eq!(
        m.message_id.as_deref(),
        Some("7f3a2c1e-0b4d-4e59-9c1a-2d3e4f5a6b7c")
    );
    assert_eq!(m.dequeue_count, Some(3));
    assert_eq!(
        m.insertion_time.as_deref(),
        Some("Fri, 09 Oct 2009 21:04:30 GMT")
    );
}

#[test]
fn dapr_delivery_shape() {
    // What a Dapr sidecar's bindings.azure.storagequeues input binding
    // POSTs: the message text (base64-decoded when `decodeBase64` is
    // true) as application/json, and the message's metadata as headers
    // named after its keys (Go sends them canonicalized).
    let headers = h(&[
        ("Messageid", "d6a4c1f2-2b1e-4a7c-9f00-0c5d8e7b6a51"),
        ("Popreceipt", "AgAAAAMAAAAAAAAA"),
        ("Insertiontime", "2026-11-25T10:00:00Z"),
        ("Expirationtime", "2026-12-02T10:00:00Z"),
        ("Nextvisibletime", "2026-11-25T10:00:30Z"),
        ("Dequeuecount", "1"),
        (
            "Traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("Content-Type", "application/json"),
    ]);
    let m = metadata(&headers).unwrap();
    assert_eq!(m.forwarder, Forwarder::Dapr);
    assert_eq!(m.dequeue_count, Some(1));
    assert_eq!(m.insertion_time.as_deref(), Some("2026-11-25T10:00:00Z"));
    let decoded = cloud_event("a").to_string();
    assert_eq!(
        decode(Some("application/json"), decoded.as_bytes(), DEPTH)
            .unwrap()
            .events[0]
            .id,
        "a"
    );
    // decodeBase64 off: the base64 text as stored arrives and is unwrapped here.
    assert_eq!(
        decode(Some("application/json"), &b64(&decoded), DEPTH)
            .unwrap()
            .text_encoding,
        TextEncoding::Base64
    );
}

#[test]
fn no_metadata_is_accepted_bad_metadata_is_not() {
    assert_eq!(metadata(&[]).unwrap().forwarder, Forwarder::Unknown);
    for (k, v) in [
        ("x-cmk-queue-dequeue-count", "0"),
        ("x-cmk-queue-dequeue-count", "many"),
        ("x-cmk-queue-dequeue-count", "-1"),
        ("x-cmk-queue-message-id", ""),
        ("x-cmk-queue-message-id", "caf\u{e9}"),
        ("dequeuecount", "x"),
    ] {
        let e = metadata(&h(&[(k, v)])).unwrap_err();
        assert!(matches!(e, QueueError::BadMetadata { .. }), "{k}={v}");
        assert_eq!(ApiError::from(e).status, 400);
    }
    let long = "a".repeat(129);
    assert!(metadata(&h(&[("x-cmk-queue-message-id", &long)])).is_err());
}

#[test]
fn bad_input_is_a_permanent_400_with_a_reason() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"  \n".to_vec(), "empty"),
        (b"{not json".to_vec(), "not base64"),
        (b"42".to_vec(), "not base64"),
        (b64("not json at all"), "base64, but not of JSON"),
        (b64("42"), "not an object or array"),
        (b"{\"hello\": 1}".to_vec(), "specversion"),
        (b"[]".to_vec(), "no events"),
        (b"[1]".to_vec(), "not a JSON object"),
        (json!({"specversion": "1.0", "id": "x"}).to_string().into_bytes(), "source"),
        (json!({"eventType": "T", "subject": "s", "eventTime": "t"}).to_string().into_bytes(), "`id`"),
        (json!({"EncryptedMessageContents": "AAAA", "EncryptionData": {}}).to_string().into_bytes(), "client-side encrypted"),
        (json!([{"id": "1", "topic": "/t", "subject": "", "eventType": crate::events::VALIDATION_EVENT_TYPE,
                 "eventTime": "2024-01-01T00:00:00Z", "data": {"validationCode": "c"}}]).to_string().into_bytes(), "validation"),
    ];
    for (body, reason) in cases {
        let e = decode(None, &body, DEPTH).unwrap_err();
        assert_eq!(e.status, 400, "{reason}");
        assert!(e.message.contains(reason), "{reason}: got `{}`", e.message);
    }
}

#[test]
fn a_base64_message_is_held_to_the_nesting_limit_before_it_is_parsed() {
    // An Event Grid event whose unknown member nests: `data` alone is
    // shallow, so only the decoded text's own depth catches it.
    let event = |levels: usize| {
        let mut e = event_grid();
        e["x"] = json!("DEEP");
        let deep = format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        json!([e]).to_string().replace(r#""DEEP""#, &deep)
    };
    // The array and the event: two levels around the member's.
    let fits = decode(None, &b64(&event(DEPTH - 2)), DEPTH).unwrap();
    assert_eq!(fits.events.len(), 1);
    let e = decode(None, &b64(&event(DEPTH - 1)), DEPTH).unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.code),
        (400, "NestingTooDeep"),
        "{}",
        e.message
    );
    // Past serde_json's own limit, the refusal is still this one.
    let e = decode(None, &b64(&event(10_000)), DEPTH).unwrap_err();
    assert_eq!(e.code, "NestingTooDeep", "{}", e.message);
}

#[test]
fn content_types() {
    for ok in [
        None,
        Some("text/plain; charset=utf-8"),
        Some("application/json"),
        Some("application/octet-stream"),
        Some("application/cloudevents-batch+json"),
    ] {
        assert!(accepts_content_type(ok), "{ok:?}");
    }
    for bad in [
        "application/xml",
        "multipart/form-data; boundary=x",
        "image/png",
    ] {
        assert!(!accepts_content_type(Some(bad)), "{bad}");
        let e = decode(Some(bad), event_grid().to_string().as_bytes(), DEPTH).unwrap_err();
        assert_eq!(e.status, 415);
    }
}

#[test]
fn a_content_type_that_is_not_utf8_is_refused_as_unsupported() {
    let entries = |v: &[u8]| vec![("Content-Type".to_owned(), v.to_vec())];
    assert_eq!(content_type(&[]).unwrap(), None);
    assert_eq!(
        content_type(&entries(b"text/plain")).unwrap().as_deref(),
        Some("text/plain")
    );
    let refused = content_type(&entries(b"text/plain; charset=\xff")).unwrap_err();
    assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}
