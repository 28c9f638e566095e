//! The Event Grid schema: a JSON array of events (or the subscription
//! validation event), each mapped onto the CloudEvents-shaped [`Event`].
//!
//! A delivery's body is parsed straight into its events' members: the
//! members the schema names are taken as they are read, and only the
//! others (kept as extensions) and the `data` go into maps. Parsing into a
//! `serde_json::Value` first and taking the members out of its maps gave the
//! same events for twice the map work (about 1,400 instructions per event
//! inside Wasm). A message that carries the array inside another envelope
//! arrives parsed, and its members are taken out of its maps
//! ([`event_grid_delivery`]); both ways meet in the same checks, and a
//! property test holds them to the same answer for every body.

use super::cloudevents::CE_ATTRIBUTES;
use super::{
    check_unique, parse_body, Delivery, Encoding, Event, EventError, Need, VALIDATION_EVENT_TYPE,
};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Decodes an Event Grid schema delivery (a JSON array of events).
pub fn decode_event_grid(body: &[u8]) -> Result<Delivery, EventError> {
    let Body(items) = parse_body(body)?;
    delivery(items.ok_or(EventError::NotArray)?)
}

/// An Event Grid schema delivery that is already parsed JSON (a JSON array
/// of events), for encodings that carry it inside another envelope.
pub fn event_grid_delivery(value: Value) -> Result<Delivery, EventError> {
    let items = match value {
        Value::Array(items) => items,
        _ => return Err(EventError::NotArray),
    };
    delivery(items.into_iter().map(Item::from_value).collect())
}

/// One element of the array: an object's members as the schema names them,
/// or anything else (refused as not an object).
// Not boxed: each element is moved once, into the list the checks consume.
#[allow(clippy::large_enum_variant)]
enum Item {
    Event(Members),
    NotObject,
}

/// An event object's members: the schema's own (each as sent, `null`
/// included; a name sent twice keeps its last value, as a parsed map
/// does) and all others.
#[derive(Default)]
struct Members {
    id: Option<Value>,
    event_type: Option<Value>,
    subject: Option<Value>,
    event_time: Option<Value>,
    topic: Option<Value>,
    data_version: Option<Value>,
    metadata_version: Option<Value>,
    data: Option<Value>,
    others: Map<String, Value>,
}

/// The members the schema names.
#[derive(Clone, Copy)]
enum Field {
    Id,
    EventType,
    Subject,
    EventTime,
    Topic,
    DataVersion,
    MetadataVersion,
    Data,
}

impl Field {
    fn of(name: &str) -> Option<Field> {
        Some(match name {
            "id" => Field::Id,
            "eventType" => Field::EventType,
            "subject" => Field::Subject,
            "eventTime" => Field::EventTime,
            "topic" => Field::Topic,
            "dataVersion" => Field::DataVersion,
            "metadataVersion" => Field::MetadataVersion,
            "data" => Field::Data,
            _ => return None,
        })
    }
}

impl Members {
    fn slot(&mut self, field: Field) -> &mut Option<Value> {
        match field {
            Field::Id => &mut self.id,
            Field::EventType => &mut self.event_type,
            Field::Subject => &mut self.subject,
            Field::EventTime => &mut self.event_time,
            Field::Topic => &mut self.topic,
            Field::DataVersion => &mut self.data_version,
            Field::MetadataVersion => &mut self.metadata_version,
            Field::Data => &mut self.data,
        }
    }

    /// Puts a member where it goes (a name sent twice keeps its last value).
    fn put(&mut self, name: Name, value: Value) {
        match name {
            Name::Schema(field) => *self.slot(field) = Some(value),
            Name::Other(k) => {
                self.others.insert(k, value);
            }
        }
    }
}

impl Item {
    /// The members of an already parsed element.
    fn from_value(v: Value) -> Item {
        let Value::Object(map) = v else {
            return Item::NotObject;
        };
        let mut m = Members::default();
        for (k, v) in map {
            m.put(Name::of(k), v);
        }
        Item::Event(m)
    }

    fn is_validation(&self) -> bool {
        matches!(self, Item::Event(m)
            if m.event_type.as_ref().and_then(Value::as_str) == Some(VALIDATION_EVENT_TYPE))
    }
}

fn delivery(items: Vec<Item>) -> Result<Delivery, EventError> {
    if items.is_empty() {
        return Err(EventError::Empty);
    }
    if items.iter().any(Item::is_validation) {
        if items.len() != 1 {
            return Err(EventError::BadValidation(
                "it must be the only event in the delivery",
            ));
        }
        let data = match &items[0] {
            Item::Event(m) => m.data.as_ref(),
            Item::NotObject => None,
        };
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
        match item {
            Item::Event(m) => events.push(event_grid_event(index, m)?),
            Item::NotObject => return Err(EventError::NotObject { index }),
        }
    }
    check_unique(&events)?;
    Ok(Delivery::Events(events))
}

/// The visitor methods for JSON's scalars (booleans, numbers, strings,
/// null), each answering `$answer`: the shape that is not the one sought.
macro_rules! scalars_are {
    ($answer:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($answer)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($answer)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($answer)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($answer)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($answer)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($answer)
        }
    };
}

/// The body as parsed: its elements when it is an array, `None` for any
/// other JSON (parsed in full all the same, so a malformed body is refused
/// as malformed JSON wherever it is malformed).
struct Body(Option<Vec<Item>>);

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Body;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Item>()? {
                    items.push(item);
                }
                Ok(Body(Some(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
                while map.next_entry::<String, Value>()?.is_some() {}
                Ok(Body(None))
            }
            scalars_are!(Body(None));
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Item;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
                let mut m = Members::default();
                while let Some(name) = map.next_key::<Name>()? {
                    let value = map.next_value::<Value>()?;
                    m.put(name, value);
                }
                Ok(Item::Event(m))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                while seq.next_element::<Value>()?.is_some() {}
                Ok(Item::NotObject)
            }
            scalars_are!(Item::NotObject);
        }
        d.deserialize_any(V)
    }
}

/// A member's name: one the schema names (matched without copying it), or
/// another, kept.
enum Name {
    Schema(Field),
    Other(String),
}

impl Name {
    fn of(s: String) -> Name {
        match Field::of(&s) {
            Some(f) => Name::Schema(f),
            None => Name::Other(s),
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, s: &str) -> Result<Name, E> {
                Ok(match Field::of(s) {
                    Some(f) => Name::Schema(f),
                    None => Name::Other(s.to_owned()),
                })
            }
            fn visit_string<E>(self, s: String) -> Result<Name, E> {
                Ok(Name::of(s))
            }
        }
        d.deserialize_str(V)
    }
}

fn event_grid_event(index: usize, m: Members) -> Result<Event, EventError> {
    let Members {
        id,
        event_type,
        subject,
        event_time,
        topic,
        data_version,
        metadata_version,
        data,
        others,
    } = m;
    let take_str = |value: Option<Value>,
                    field: &'static str,
                    need: Need|
     -> Result<Option<String>, EventError> {
        match (value, need) {
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
    let id = take_str(id, "id", Need::NonEmpty)?.unwrap_or_default();
    let ty = take_str(event_type, "eventType", Need::NonEmpty)?.unwrap_or_default();
    let subject = take_str(subject, "subject", Need::Present)?;
    let time = take_str(event_time, "eventTime", Need::NonEmpty)?;
    // Event Grid always sets `topic` on what it delivers ("Event Grid
    // provides this value"); it is the namespace of the event's id, so the
    // document id (source, id) needs it.
    let source = take_str(topic, "topic", Need::NonEmpty)?.unwrap_or_default();
    let data_version = take_str(data_version, "dataVersion", Need::Optional)?;
    let metadata_version = take_str(metadata_version, "metadataVersion", Need::Optional)?;
    let mut extensions = Map::new();
    if let Some(v) = data_version {
        extensions.insert("dataversion".into(), Value::from(v));
    }
    if let Some(v) = metadata_version {
        extensions.insert("metadataversion".into(), Value::from(v));
    }
    // Unknown top-level members are kept, under their own names, unless a
    // name is a CloudEvents attribute or one the stored form gives
    // `dataVersion` and `metadataVersion`, in any case: stored in the
    // CloudEvents form, it would replace the event's own source, type, time
    // or data (and so its partition key or its protected fields) while its
    // id is derived from `topic`; a case variant (`Data`) would sit beside
    // `data` outside the protected fields' pointers.
    if let Some(name) = others.keys().find(|k| {
        CE_ATTRIBUTES
            .iter()
            .chain(&["dataversion", "metadataversion"])
            .any(|a| a.eq_ignore_ascii_case(k))
    }) {
        return Err(EventError::Reserved {
            index,
            field: name.clone(),
        });
    }
    extensions.extend(others);
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
