//! `POST /queue`: one Azure Storage queue message, forwarded by the queue
//! bridge (`bridge/`) or by a Dapr sidecar's `bindings.azure.storagequeues`
//! input binding, decoded into the same [`Event`]s as `POST /events`.
//!
//! A queue message is one more encoding around the existing ones: its text is
//! an Event Grid event (one object, or an array) or a CloudEvent (one, or a
//! batch), as Event Grid's Storage-queue handler or a publisher wrote it (an
//! Event Grid event with its `topic`, as Event Grid writes it),
//! either as raw JSON or base64 of the JSON (what the Storage SDKs' base64
//! encode policies and Azure Functions expect). This module only unwraps that
//! text and reads the message's metadata; the events themselves are decoded
//! by [`crate::events`], and everything after decoding is shared with
//! `POST /events`.

use base64::Engine;
use http::StatusCode;
use serde_json::Value;

use crate::api::ApiError;
use crate::events::{
    cloudevent_structured, cloudevents_batch, event_grid_delivery, Delivery, Event, EventError,
};

/// The bridge's header for the queue message id.
pub const MESSAGE_ID_HEADER: &str = "x-cmk-queue-message-id";
/// The bridge's header for the message's dequeue count (1 on first delivery).
pub const DEQUEUE_COUNT_HEADER: &str = "x-cmk-queue-dequeue-count";
/// The bridge's header for the message's insertion time, as the queue
/// service reported it.
pub const INSERTION_TIME_HEADER: &str = "x-cmk-queue-insertion-time";
/// Header a Dapr sidecar sends its app API token in (`APP_API_TOKEN`); on
/// `POST /queue` it may carry the ingest key.
pub const DAPR_API_TOKEN_HEADER: &str = "dapr-api-token";

/// Dapr's input binding sends the message's metadata as headers named after
/// its keys (`messageID`, `dequeueCount`, `insertionTime`; any case).
const DAPR_MESSAGE_ID: &str = "messageid";
const DAPR_DEQUEUE_COUNT: &str = "dequeuecount";
const DAPR_INSERTION_TIME: &str = "insertiontime";

/// Longest metadata value accepted (ids are GUIDs, times are short).
const MAX_METADATA_LEN: usize = 128;

/// Who forwarded the message, by the metadata headers it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarder {
    /// The queue bridge (`x-cmk-queue-*` headers).
    Bridge,
    /// A Dapr sidecar (`messageid`, `dequeuecount`, … headers).
    Dapr,
    /// No queue metadata at all (a plain HTTP sender).
    Unknown,
}

impl Forwarder {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Forwarder::Bridge => "bridge",
            Forwarder::Dapr => "dapr",
            Forwarder::Unknown => "unknown",
        }
    }
}

/// A message's metadata, as its forwarder sent it. Safe to log: it holds no
/// payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Queue message id.
    pub message_id: Option<String>,
    /// How many times the message has been dequeued, this time included.
    pub dequeue_count: Option<u32>,
    /// When it was put in the queue, as reported (not parsed).
    pub insertion_time: Option<String>,
    /// Which header set carried it.
    pub forwarder: Forwarder,
}

/// How the message text held the event JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// The text is the JSON.
    Raw,
    /// The text is base64 of the JSON.
    Base64,
}

impl TextEncoding {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TextEncoding::Raw => "raw",
            TextEncoding::Base64 => "base64",
        }
    }
}

/// Why a queue message was refused. All are permanent: the same message
/// would be refused again, so it belongs in the poison queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// A metadata header is present but unusable.
    #[error("header `{header}` {reason}")]
    BadMetadata {
        /// Header name.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing but whitespace.
    #[error("the message text is empty")]
    Empty,
    /// Neither JSON nor base64 of JSON.
    #[error("the message text is neither a JSON object or array nor base64 of one ({0})")]
    NotJson(String),
    /// Client-side encrypted by a Storage SDK; only its sender holds the key.
    #[error("the message is client-side encrypted by a Storage SDK; send the events unencrypted (the queue and Cosmos DB encrypt at rest with the customer-managed key)")]
    ClientSideEncrypted,
    /// The base64-decoded text nests deeper than the delivery limit (a
    /// message sent as JSON is held to it before it is decoded).
    #[error("the decoded message nests {depth} levels deep; at most {max} are accepted")]
    TooDeep {
        /// Levels in the decoded text.
        depth: usize,
        /// `max_nesting_depth`.
        max: usize,
    },
    /// Event Grid's handshake has no meaning on a queue.
    #[error("a subscription validation event cannot be answered through a queue")]
    Validation,
    /// JSON, but not shaped like an event.
    #[error("the message is not an Event Grid event or a CloudEvent: {0}")]
    NotAnEvent(&'static str),
    /// An event in the message is malformed.
    #[error(transparent)]
    Event(#[from] EventError),
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let code = match e {
            QueueError::Event(_) => "InvalidEvent",
            QueueError::TooDeep { .. } => "NestingTooDeep",
            _ => "InvalidMessage",
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    }
}

/// A decoded message: its metadata and its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// How the text held the JSON.
    pub text_encoding: TextEncoding,
    /// The events, in order.
    pub events: Vec<Event>,
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads the message metadata: the bridge's `x-cmk-queue-*` headers, else
/// Dapr's. Absent values are `None`; present but malformed ones are refused.
pub fn metadata(headers: &[(String, String)]) -> Result<Metadata, QueueError> {
    let bridge = [
        MESSAGE_ID_HEADER,
        DEQUEUE_COUNT_HEADER,
        INSERTION_TIME_HEADER,
    ];
    let dapr = [DAPR_MESSAGE_ID, DAPR_DEQUEUE_COUNT, DAPR_INSERTION_TIME];
    let (names, forwarder) = if bridge.iter().any(|h| find(headers, h).is_some()) {
        (bridge, Forwarder::Bridge)
    } else if dapr.iter().any(|h| find(headers, h).is_some()) {
        (dapr, Forwarder::Dapr)
    } else {
        (bridge, Forwarder::Unknown)
    };
    let text = |header: &'static str| -> Result<Option<String>, QueueError> {
        match find(headers, header).map(str::trim) {
            None => Ok(None),
            Some("") => Err(QueueError::BadMetadata {
                header,
                reason: "is empty",
            }),
            Some(v) if v.len() > MAX_METADATA_LEN => Err(QueueError::BadMetadata {
                header,
                reason: "is longer than 128 characters",
            }),
            Some(v) if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                Err(QueueError::BadMetadata {
                    header,
                    reason: "must be printable ASCII",
                })
            }
            Some(v) => Ok(Some(v.to_owned())),
        }
    };
    let dequeue_count = match text(names[1])? {
        None => None,
        Some(v) => Some(v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or(
            QueueError::BadMetadata {
                header: names[1],
                reason: "must be a whole number of at least 1",
            },
        )?),
    };
    Ok(Metadata {
        message_id: text(names[0])?,
        dequeue_count,
        insertion_time: text(names[2])?,
        forwarder,
    })
}

/// Whether a `Content-Type` may carry a queue message's text. The type does
/// not choose the decoder (the text's own shape does); it only keeps out
/// bodies that are plainly something else.
pub fn accepts_content_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        media.as_str(),
        "" | "text/plain" | "application/json" | "application/octet-stream"
    ) || (media.starts_with("application/") && media.ends_with("+json"))
}

/// The JSON a message text holds: tried as JSON first, then as base64 of
/// JSON (standard alphabet, as the Storage SDKs' base64 policies write it).
/// The decoded text of a base64 message is held to `max_depth` levels
/// before it is parsed, as a message sent as JSON is (by the route's
/// check of the raw body): every event in it, not only its `data`, stays
/// within the delivery limit, and parsing recurses no deeper.
pub fn message_json(body: &[u8], max_depth: usize) -> Result<(Value, TextEncoding), QueueError> {
    let text = body.trim_ascii();
    if text.is_empty() {
        return Err(QueueError::Empty);
    }
    let json_error = match serde_json::from_slice::<Value>(text) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => return Ok((v, TextEncoding::Raw)),
        Ok(_) => "JSON, but not an object or array".to_owned(),
        Err(e) => format!("as JSON: {e}"),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| QueueError::NotJson(format!("{json_error}; not base64 either")))?;
    let depth = crate::events::shape(decoded.trim_ascii()).depth;
    if depth > max_depth {
        return Err(QueueError::TooDeep {
            depth,
            max: max_depth,
        });
    }
    match serde_json::from_slice::<Value>(decoded.trim_ascii()) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok((v, TextEncoding::Base64)),
        Ok(_) => Err(QueueError::NotJson(
            "base64 of JSON that is not an object or array".into(),
        )),
        Err(e) => Err(QueueError::NotJson(format!(
            "{json_error}; base64, but not of JSON: {e}"
        ))),
    }
}

fn is_cloudevent(v: &Value) -> bool {
    v.get("specversion").is_some()
}

/// The events in a message's JSON: a CloudEvent (object with `specversion`)
/// or a CloudEvents batch (array of those), else Event Grid schema (one
/// event object, or an array of them).
pub fn events_of(value: Value) -> Result<Vec<Event>, QueueError> {
    let delivery = match value {
        Value::Object(ref o)
            if o.contains_key("EncryptedMessageContents") && o.contains_key("EncryptionData") =>
        {
            return Err(QueueError::ClientSideEncrypted)
        }
        Value::Object(_) if is_cloudevent(&value) => return Ok(cloudevent_structured(value)?),
        Value::Object(ref o) if o.contains_key("eventType") => {
            event_grid_delivery(Value::Array(vec![value]))?
        }
        Value::Object(_) => {
            return Err(QueueError::NotAnEvent(
                "an object needs `specversion` (CloudEvents) or `eventType` (Event Grid)",
            ))
        }
        Value::Array(ref items) if items.first().is_some_and(is_cloudevent) => {
            return Ok(cloudevents_batch(value)?)
        }
        other => event_grid_delivery(other)?,
    };
    match delivery {
        Delivery::Events(events) => Ok(events),
        Delivery::Validation { .. } => Err(QueueError::Validation),
    }
}

/// Decodes one forwarded message body into its events.
pub fn decode(
    content_type: Option<&str>,
    body: &[u8],
    max_depth: usize,
) -> Result<Message, ApiError> {
    if !accepts_content_type(content_type) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "send the queue message text as text/plain, application/json or application/octet-stream",
        ));
    }
    let (value, text_encoding) = message_json(body, max_depth)?;
    Ok(Message {
        text_encoding,
        events: events_of(value)?,
    })
}

#[cfg(test)]
mod tests {
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
}
