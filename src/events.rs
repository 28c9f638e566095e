//! Inbound events: one model, one decoder per wire encoding.
//!
//! Every encoding decodes into [`Event`], shaped after CloudEvents 1.0; all
//! later steps (document id, partition key, storage) see only that model.
//! Event Grid schema maps `topic`→`source`, `eventType`→`type`,
//! `eventTime`→`time`, and keeps `dataVersion`/`metadataVersion` as the
//! extensions `dataversion`/`metadataversion`.

use serde_json::{Map, Value};

/// Event type of Event Grid's subscription-validation handshake.
pub const VALIDATION_EVENT_TYPE: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// The wire encoding an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Event Grid's own schema (a JSON array).
    EventGrid,
}

impl Encoding {
    /// Name stored with the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::EventGrid => "eventgrid",
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
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
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
    // Unknown top-level members are kept, under their own names.
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
mod tests {
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
        let body = json!([{"id":"1","eventType":"t","subject":"s","eventTime":"2024-01-01T00:00:00Z","data":{},"x-extra":{"a":1}}]);
        let Delivery::Events(e) = decode_event_grid(body.to_string().as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(e[0].extensions["x-extra"], json!({"a":1}));
        assert_eq!(e[0].source, "");
    }

    #[test]
    fn each_malformation_has_its_own_error() {
        let ok = json!({"id":"1","eventType":"t","subject":"s","eventTime":"2024-01-01T00:00:00Z","data":{}});
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
}
