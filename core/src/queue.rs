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

/// A forwarded message's `Content-Type`, from the request's raw header
/// entries: a value that is not UTF-8 is no type [`accepts_content_type`]
/// accepts, and answers as one (415), rather than being read as none.
pub fn content_type(entries: &[(String, Vec<u8>)]) -> Result<Option<String>, ApiError> {
    crate::events::content_type(entries).map_err(|_| unsupported_media_type())
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        "send the queue message text as text/plain, application/json or application/octet-stream",
    )
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
        return Err(unsupported_media_type());
    }
    let (value, text_encoding) = message_json(body, max_depth)?;
    Ok(Message {
        text_encoding,
        events: events_of(value)?,
    })
}

#[cfg(test)]
mod tests;
