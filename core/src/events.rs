//! Inbound events: one model, one decoder per wire encoding.
//!
//! Every encoding decodes into [`Event`], shaped after CloudEvents 1.0; all
//! later steps (document id, partition key, storage) see only that model.
//! Event Grid schema maps `topic`→`source`, `eventType`→`type`,
//! `eventTime`→`time`, and keeps `dataVersion`/`metadataVersion` as the
//! extensions `dataversion`/`metadataversion`.

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
        let mut m = Map::new();
        m.insert("specversion".into(), Value::from("1.0"));
        m.insert("id".into(), Value::from(self.id.clone()));
        m.insert("source".into(), Value::from(self.source.clone()));
        m.insert("type".into(), Value::from(self.ty.clone()));
        let opt = |m: &mut Map<String, Value>, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v.clone()));
            }
        };
        opt(&mut m, "subject", &self.subject);
        opt(&mut m, "time", &self.time);
        opt(&mut m, "datacontenttype", &self.data_content_type);
        opt(&mut m, "dataschema", &self.data_schema);
        for (k, v) in &self.extensions {
            m.insert(k.clone(), v.clone());
        }
        if let Some(d) = &self.data {
            m.insert("data".into(), d.clone());
        }
        Value::Object(m)
    }

    /// [`Self::to_cloudevent_json`], moving the data instead of copying it.
    pub fn into_cloudevent_json(mut self) -> Value {
        let data = self.data.take();
        let mut v = self.to_cloudevent_json();
        if let (Some(d), Value::Object(m)) = (data, &mut v) {
            m.insert("data".into(), d);
        }
        v
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
    /// attribute, which would overwrite that attribute when stored.
    #[error(
        "event {index}: member `{field}` is a CloudEvents attribute name, not an Event Grid one"
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

/// Decodes an Event Grid schema delivery (a JSON array of events).
pub fn decode_event_grid(body: &[u8]) -> Result<Delivery, EventError> {
    event_grid_delivery(parse_json(body)?)
}

fn parse_json(body: &[u8]) -> Result<Value, EventError> {
    serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))
}

/// An Event Grid schema delivery that is already parsed JSON (a JSON array
/// of events), for encodings that carry it inside another envelope.
pub fn event_grid_delivery(value: Value) -> Result<Delivery, EventError> {
    let items = match value {
        Value::Array(items) => items,
        _ => return Err(EventError::NotArray),
    };
    if items.is_empty() {
        return Err(EventError::Empty);
    }
    let is_validation =
        |v: &Value| v.get("eventType").and_then(Value::as_str) == Some(VALIDATION_EVENT_TYPE);
    if items.iter().any(is_validation) {
        if items.len() != 1 {
            return Err(EventError::BadValidation(
                "it must be the only event in the delivery",
            ));
        }
        let data = items[0].get("data");
        let code = data
            .and_then(|d| d.get("validationCode"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or(EventError::BadValidation("data.validationCode is missing"))?;
        let url = data
            .and_then(|d| d.get("validationUrl"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Ok(Delivery::Validation {
            code: code.to_owned(),
            url,
        });
    }
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        events.push(event_grid_event(index, item)?);
    }
    check_unique(&events)?;
    Ok(Delivery::Events(events))
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
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    let mut top_array = None;
    let (mut items, mut seen_value) = (0usize, false);
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
                if depth == 1 {
                    seen_value = true;
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

fn event_grid_event(index: usize, item: Value) -> Result<Event, EventError> {
    let Value::Object(mut obj) = item else {
        return Err(EventError::NotObject { index });
    };
    let mut take_str = |field: &'static str, need: Need| -> Result<Option<String>, EventError> {
        match (obj.remove(field), need) {
            (None | Some(Value::Null), Need::Optional) => Ok(None),
            (None | Some(Value::Null), _) => Err(EventError::Missing { index, field }),
            (Some(Value::String(s)), Need::NonEmpty) if s.is_empty() => {
                Err(EventError::Missing { index, field })
            }
            (Some(Value::String(s)), _) => Ok(Some(s)),
            (Some(_), _) => Err(EventError::WrongType {
                index,
                field: field.into(),
                expected: "string",
            }),
        }
    };
    let id = take_str("id", Need::NonEmpty)?.unwrap_or_default();
    let ty = take_str("eventType", Need::NonEmpty)?.unwrap_or_default();
    let subject = take_str("subject", Need::Present)?;
    let time = take_str("eventTime", Need::NonEmpty)?;
    let source = take_str("topic", Need::Optional)?.unwrap_or_default();
    let data_version = take_str("dataVersion", Need::Optional)?;
    let metadata_version = take_str("metadataVersion", Need::Optional)?;
    let data = obj.remove("data");
    let mut extensions = Map::new();
    if let Some(v) = data_version {
        extensions.insert("dataversion".into(), Value::from(v));
    }
    if let Some(v) = metadata_version {
        extensions.insert("metadataversion".into(), Value::from(v));
    }
    // Unknown top-level members are kept, under their own names, unless a
    // name is a CloudEvents attribute: stored in the CloudEvents form, it
    // would replace the event's own source, type or time (and so its
    // partition key) while its id is derived from `topic`.
    if let Some(name) = obj.keys().find(|k| CE_ATTRIBUTES.contains(&k.as_str())) {
        return Err(EventError::Reserved {
            index,
            field: name.clone(),
        });
    }
    extensions.extend(obj);
    Ok(Event {
        id,
        source,
        ty,
        subject,
        time,
        data_content_type: Some("application/json".into()),
        data_schema: None,
        data,
        extensions,
        encoding: Encoding::EventGrid,
    })
}

const CE_REQUIRED: [&str; 4] = ["id", "source", "specversion", "type"];
/// The CloudEvents 1.0 context attributes and data members.
const CE_ATTRIBUTES: [&str; 10] = [
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];
const CE_KNOWN: [&str; 10] = [
    "id",
    "source",
    "specversion",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

fn valid_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// RFC 3339 date-time, as CloudEvents `time` requires (syntax only).
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
    {
        return false;
    }
    if !matches!(b[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// One CloudEvents 1.0 event from its JSON form (structured mode).
fn cloud_event(index: usize, item: Value, encoding: Encoding) -> Result<Event, EventError> {
    let Value::Object(mut obj) = item else {
        return Err(EventError::NotObject { index });
    };
    for field in CE_REQUIRED {
        match obj.get(field) {
            None | Some(Value::Null) => return Err(EventError::Missing { index, field }),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(EventError::Missing { index, field })
            }
            Some(Value::String(_)) => {}
            Some(_) => {
                return Err(EventError::WrongType {
                    index,
                    field: field.into(),
                    expected: "string",
                })
            }
        }
    }
    if obj["specversion"] != "1.0" {
        return Err(EventError::WrongType {
            index,
            field: "specversion".into(),
            expected: "\"1.0\"",
        });
    }
    let mut opt = |field: &'static str| -> Result<Option<String>, EventError> {
        match obj.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(EventError::WrongType {
                index,
                field: field.into(),
                expected: "string",
            }),
        }
    };
    let subject = opt("subject")?;
    let time = opt("time")?;
    if time.as_deref().is_some_and(|t| !is_rfc3339(t)) {
        return Err(EventError::WrongType {
            index,
            field: "time".into(),
            expected: "RFC 3339 timestamp",
        });
    }
    let data_content_type = opt("datacontenttype")?;
    let data_schema = opt("dataschema")?;
    let data_base64 = opt("data_base64")?;
    let data = obj.remove("data");
    if let Some(b64) = data_base64 {
        if data.is_some() {
            return Err(EventError::WrongType {
                index,
                field: "data_base64".into(),
                expected: "absent when `data` is present",
            });
        }
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| EventError::WrongType {
                index,
                field: "data_base64".into(),
                expected: "base64 string",
            })?;
        // Kept as sent; the stored event says which member it came in.
        obj.insert("data_base64".into(), Value::String(b64));
    }
    let take = |obj: &mut Map<String, Value>, k: &str| match obj.remove(k) {
        Some(Value::String(s)) => s,
        _ => unreachable!("checked above"),
    };
    let id = take(&mut obj, "id");
    let source = take(&mut obj, "source");
    let ty = take(&mut obj, "type");
    obj.remove("specversion");
    let mut extensions = Map::new();
    for (k, v) in obj {
        if !CE_KNOWN.contains(&k.as_str()) && !valid_extension_name(&k) && k != "data_base64" {
            return Err(EventError::WrongType {
                index,
                field: k,
                expected: "extension name of 1-20 lowercase letters or digits",
            });
        }
        if matches!(v, Value::Object(_) | Value::Array(_)) && k != "data_base64" {
            return Err(EventError::WrongType {
                index,
                field: k,
                expected: "scalar extension value",
            });
        }
        extensions.insert(k, v);
    }
    Ok(Event {
        id,
        source,
        ty,
        subject,
        time,
        data_content_type,
        data_schema,
        data,
        extensions,
        encoding,
    })
}

/// Decodes a CloudEvents structured-mode body (one JSON object).
pub fn decode_cloudevent(body: &[u8]) -> Result<Vec<Event>, EventError> {
    cloudevent_structured(parse_json(body)?)
}

/// One CloudEvent in structured mode, already parsed (a JSON object).
pub fn cloudevent_structured(value: Value) -> Result<Vec<Event>, EventError> {
    if !value.is_object() {
        return Err(EventError::NotObject { index: 0 });
    }
    Ok(vec![cloud_event(
        0,
        value,
        Encoding::CloudEventsStructured,
    )?])
}

/// Decodes a CloudEvents batch-mode body (a JSON array of events).
pub fn decode_cloudevents_batch(body: &[u8]) -> Result<Vec<Event>, EventError> {
    cloudevents_batch(parse_json(body)?)
}

/// A CloudEvents batch, already parsed (a JSON array of events).
pub fn cloudevents_batch(value: Value) -> Result<Vec<Event>, EventError> {
    let Value::Array(items) = value else {
        return Err(EventError::NotArray);
    };
    if items.is_empty() {
        return Err(EventError::Empty);
    }
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| cloud_event(i, v, Encoding::CloudEventsStructured))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&events)?;
    Ok(events)
}

/// Decodes a CloudEvents binary-mode request: attributes from `ce-*` headers
/// (names lower-cased, values percent-decoded), `content-type` as
/// `datacontenttype`, the body as data (JSON when the type is JSON, else kept
/// as `data_base64`).
pub fn decode_cloudevent_binary(
    headers: &[(String, String)],
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<Event>, EventError> {
    let mut obj = Map::new();
    for (name, value) in headers {
        if let Some(attr) = name.to_ascii_lowercase().strip_prefix("ce-") {
            let decoded =
                crate::percent::percent_decode(value).ok_or_else(|| EventError::WrongType {
                    index: 0,
                    field: attr.to_owned(),
                    expected: "percent-encoded UTF-8",
                })?;
            obj.insert(attr.to_owned(), Value::String(decoded));
        }
    }
    if let Some(ct) = content_type {
        obj.insert("datacontenttype".into(), Value::String(ct.to_owned()));
    }
    if !body.is_empty() {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media == "application/json" || media.ends_with("+json") {
            let data: Value =
                serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
            obj.insert("data".into(), data);
        } else {
            use base64::Engine;
            obj.insert(
                "data_base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            );
        }
    }
    Ok(vec![cloud_event(
        0,
        Value::Object(obj),
        Encoding::CloudEventsBinary,
    )?])
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

#[cfg(test)]
mod shape_tests {
    use super::*;

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
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        ApiError::new(http::StatusCode::BAD_REQUEST, "InvalidEvent", e.to_string())
    }
}

#[cfg(test)]
mod tests;
