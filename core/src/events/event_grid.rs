//! The Event Grid schema: a JSON array of events (or the subscription
//! validation event), each mapped onto the CloudEvents-shaped [`Event`].

use super::cloudevents::CE_ATTRIBUTES;
use super::{
    check_unique, parse_json, Delivery, Encoding, Event, EventError, Need, VALIDATION_EVENT_TYPE,
};
use serde_json::{Map, Value};

/// Decodes an Event Grid schema delivery (a JSON array of events).
pub fn decode_event_grid(body: &[u8]) -> Result<Delivery, EventError> {
    event_grid_delivery(parse_json(body)?)
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
