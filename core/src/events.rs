//! Inbound events: one model, one decoder per wire encoding.
//!
//! Every encoding decodes into [`Event`], shaped after CloudEvents 1.0; all
//! later steps (document id, partition key, storage) see only that model.
//! Event Grid schema maps `topic`→`source`, `eventType`→`type`,
//! `eventTime`→`time`, and keeps `dataVersion`/`metadataVersion` as the
//! extensions `dataversion`/`metadataversion`.

mod cloudevents;
mod event_grid;

pub use cloudevents::*;
pub use event_grid::*;

use crate::api::ApiError;
use serde_json::{Map, Value};

/// Event type of Event Grid's subscription-validation handshake.
pub const VALIDATION_EVENT_TYPE: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// The wire encoding an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Event Grid's own schema (a JSON array).
    EventGrid,
    /// CloudEvents 1.0, structured or batch mode (JSON).
    CloudEventsStructured,
    /// CloudEvents 1.0, binary mode (`ce-*` headers, body is the data).
    CloudEventsBinary,
}

impl Encoding {
    /// Name stored with the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::EventGrid => "eventgrid",
            Encoding::CloudEventsStructured => "cloudevents",
            Encoding::CloudEventsBinary => "cloudevents-binary",
        }
    }
}

/// One event, in the shape of a CloudEvents 1.0 event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `id`: unique within `source`.
    pub id: String,
    /// `source` (Event Grid: `topic`; empty when a publisher sent none).
    pub source: String,
    /// `type` (Event Grid: `eventType`).
    pub ty: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `time` (Event Grid: `eventTime`), as sent.
    pub time: Option<String>,
    /// `datacontenttype`.
    pub data_content_type: Option<String>,
    /// `dataschema`.
    pub data_schema: Option<String>,
    /// `data`.
    pub data: Option<Value>,
    /// Any other attribute, kept as sent.
    pub extensions: Map<String, Value>,
    /// The encoding it arrived in.
    pub encoding: Encoding,
}

impl Event {
    /// The event as a CloudEvents 1.0 JSON object (structured mode).
    pub fn to_cloudevent_json(&self) -> Value {
        self.clone().into_cloudevent_json()
    }

    /// [`Self::to_cloudevent_json`], moving the attributes and data
    /// instead of copying them.
    pub fn into_cloudevent_json(self) -> Value {
        let mut m = Map::new();
        m.insert("specversion".into(), Value::from("1.0"));
        m.insert("id".into(), Value::from(self.id));
        m.insert("source".into(), Value::from(self.source));
        m.insert("type".into(), Value::from(self.ty));
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v));
            }
        };
        opt("subject", self.subject);
        opt("time", self.time);
        opt("datacontenttype", self.data_content_type);
        opt("dataschema", self.data_schema);
        for (k, v) in self.extensions {
            m.insert(k, v);
        }
        if let Some(d) = self.data {
            m.insert("data".into(), d);
        }
        Value::Object(m)
    }
}

/// What a delivery asks of the receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Event Grid's subscription-validation handshake: echo the code.
    Validation {
        /// `data.validationCode`.
        code: String,
        /// `data.validationUrl`, the manual alternative.
        url: Option<String>,
    },
    /// Events to store.
    Events(Vec<Event>),
}

/// Why a body was refused. Each names the event index and field at fault.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// Not JSON at all.
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// Event Grid delivers a JSON array.
    #[error("expected a JSON array of Event Grid events")]
    NotArray,
    /// An empty array carries nothing to store.
    #[error("the batch holds no events")]
    Empty,
    /// An element is not an object.
    #[error("event {index} is not a JSON object")]
    NotObject {
        /// Position in the batch.
        index: usize,
    },
    /// A required attribute is absent or empty.
    #[error("event {index}: required field `{field}` is missing or empty")]
    Missing {
        /// Position in the batch.
        index: usize,
        /// Attribute name as on the wire.
        field: &'static str,
    },
    /// An attribute has the wrong JSON type.
    #[error("event {index}: field `{field}` must be a {expected}")]
    WrongType {
        /// Position in the batch.
        index: usize,
        /// Attribute name as on the wire.
        field: String,
        /// What it should be.
        expected: &'static str,
    },
    /// An Event Grid event carries a member named like a CloudEvents
    /// attribute (in any case), which would overwrite that attribute when
    /// stored or sit beside it.
    #[error(
        "event {index}: member `{field}` is named like an attribute of the stored CloudEvents form, not an Event Grid member"
    )]
    Reserved {
        /// Position in the batch.
        index: usize,
        /// The member's name.
        field: String,
    },
    /// Two events in one batch share source and id.
    #[error("events {first} and {second} share source and id `{id}`")]
    Duplicate {
        /// Earlier position.
        first: usize,
        /// Later position.
        second: usize,
        /// The shared id.
        id: String,
    },
    /// A validation event mixed with others, or without a code.
    #[error("malformed subscription validation event: {0}")]
    BadValidation(&'static str),
}

fn parse_json(body: &[u8]) -> Result<Value, EventError> {
    parse_body(body)
}

/// `body` parsed as JSON into `T`. Bytes that are UTF-8 text (checked once,
/// word at a time) are parsed as text: from bytes, serde_json checks each
/// string on its own, a call per string (about 180 instructions each inside
/// Wasm, 38 strings an event in the delivery bench). Other bytes are parsed
/// as bytes, for serde_json's own error, which names the line and column.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EventError> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|e| EventError::NotJson(e.to_string()))
}

#[derive(Clone, Copy)]
enum Need {
    NonEmpty,
    Present,
    Optional,
}

/// The shape of a JSON body, read before it is parsed: its deepest nesting
/// and, for a top-level array, how many elements it holds. Strings are
/// skipped with their escapes; malformed JSON is left to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Deepest nesting of arrays and objects (a bare `[]` is 1).
    pub depth: usize,
    /// Elements of a top-level array; `None` for any other body.
    pub top_level_items: Option<usize>,
}

/// Scans `body` for its [`Shape`] in one pass, without allocating.
pub fn shape(body: &[u8]) -> Shape {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut top_array = None;
    let (mut items, mut seen_value) = (0usize, false);
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            b'"' => {
                if depth == 1 {
                    seen_value = true;
                }
                // Most of a body is string content: skip it in one tight
                // loop to the closing quote, stepping over escapes.
                loop {
                    match crate::scan::find::<crate::scan::QuoteOrBackslash>(body, i) {
                        None => i = body.len(),
                        Some(j) if body[j] == b'\\' => {
                            i = j + 2;
                            continue;
                        }
                        Some(j) => i = j + 1,
                    }
                    break;
                }
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

fn check_unique(events: &[Event]) -> Result<(), EventError> {
    let mut seen = std::collections::HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if let Some(first) = seen.insert((e.source.as_str(), e.id.as_str()), i) {
            return Err(EventError::Duplicate {
                first,
                second: i,
                id: e.id.clone(),
            });
        }
    }
    Ok(())
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        ApiError::new(http::StatusCode::BAD_REQUEST, "InvalidEvent", e.to_string())
    }
}

#[cfg(test)]
mod tests;
