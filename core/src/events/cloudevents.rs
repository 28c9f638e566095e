//! CloudEvents 1.0 in its three HTTP modes: structured (one event as
//! JSON), batched (a JSON array) and binary (attributes in `ce-` headers,
//! data as the body).

use super::{check_unique, parse_json, Encoding, Event, EventError};
use serde_json::{Map, Value};

const CE_REQUIRED: [&str; 4] = ["id", "source", "specversion", "type"];

/// The CloudEvents 1.0 context attributes and data members.
pub(super) const CE_ATTRIBUTES: [&str; 10] = [
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

/// The CloudEvents binary-mode headers (`ce-*`) among a request's header
/// entries, in the order received. In a binary-mode request (one with
/// `ce-specversion`) a value that is not UTF-8 refuses the event (400)
/// rather than lose its attribute: the HTTP binding carries attribute
/// values as percent-encoded UTF-8. Other requests do not read these
/// headers, so such a value is left out there.
pub fn binary_mode_headers(
    entries: &[(String, Vec<u8>)],
) -> Result<Vec<(String, String)>, EventError> {
    let binary = entries
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("ce-specversion"));
    let mut out = Vec::new();
    for (n, v) in entries {
        let Some(attr) = n.get(3..).filter(|a| !a.is_empty()) else {
            continue;
        };
        if !n[..3].eq_ignore_ascii_case("ce-") {
            continue;
        }
        match std::str::from_utf8(v) {
            Ok(v) => out.push((n.clone(), v.to_owned())),
            Err(_) if binary => return Err(not_utf8(attr, "percent-encoded UTF-8")),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// The request's `content-type`, if it has one. One that is not UTF-8 is
/// refused (400) rather than read as absent: absent, a binary-mode body
/// would be kept as `data_base64` and its `datacontenttype` lost.
pub fn content_type(entries: &[(String, Vec<u8>)]) -> Result<Option<String>, EventError> {
    match entries
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        None => Ok(None),
        Some((_, v)) => match std::str::from_utf8(v) {
            Ok(v) => Ok(Some(v.to_owned())),
            Err(_) => Err(not_utf8("content-type", "media type in UTF-8")),
        },
    }
}

fn not_utf8(field: &str, expected: &'static str) -> EventError {
    EventError::WrongType {
        index: 0,
        field: field.to_ascii_lowercase(),
        expected,
    }
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
            let data: Value = super::parse_body(body)?;
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
