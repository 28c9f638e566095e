//! From an event to the document stored in Cosmos DB.
//!
//! The document id is an opaque digest of the event's `source` and `id`, so a
//! redelivered or replayed event always maps to the same document, and no raw
//! event field is exposed in the id (Cosmos DB does not encrypt ids with the
//! customer-managed key).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::events::Event;

/// Domain separation for document ids, versioned with the document shape.
const ID_DOMAIN: &[u8] = b"cmk-ingest/document-id/v1\0";

/// Version of the stored document's layout.
pub const DOCUMENT_VERSION: u32 = 1;

/// The container's partition key path; the infra provisions containers with it.
pub const PARTITION_KEY_PATH: &str = "/pk";

/// A document ready to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Cosmos DB `id`.
    pub id: String,
    /// Partition key value (stored at [`PARTITION_KEY_PATH`]).
    pub partition_key: String,
    /// The whole document.
    pub body: Value,
}

/// Why an event cannot become a document.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// The configured partition-key field is absent in this event.
    #[error("event `{event_id}`: partition key field `{pointer}` is missing")]
    PartitionKeyMissing {
        /// The event's id.
        event_id: String,
        /// The configured JSON Pointer.
        pointer: String,
    },
    /// The partition-key value is longer than Cosmos DB accepts.
    #[error("event `{event_id}`: partition key value is {len} bytes; at most {MAX_PARTITION_KEY_BYTES} are accepted")]
    PartitionKeyTooLong {
        /// The event's id.
        event_id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The partition-key value is empty or holds control characters: the
    /// read and erase routes (`/records/{partitionKey}/…`) refuse such a
    /// value, so the record could never be read back or erased alone.
    #[error("event `{event_id}`: partition key field `{pointer}` {why}; the record could not be read or erased by it")]
    PartitionKeyUnaddressable {
        /// The event's id.
        event_id: String,
        /// The configured JSON Pointer.
        pointer: String,
        /// `is empty`, or `holds control characters`.
        why: &'static str,
    },
    /// The partition-key field is not a string, number or boolean.
    #[error(
        "event `{event_id}`: partition key field `{pointer}` must be a string, number or boolean"
    )]
    PartitionKeyNotScalar {
        /// The event's id.
        event_id: String,
        /// The configured JSON Pointer.
        pointer: String,
    },
}

/// Longest partition key value Cosmos DB accepts (with large partition keys,
/// the default for new containers), in UTF-8 bytes. Refused here as a 400,
/// because the service's refusal would reach the sender as a store failure.
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;

/// `hex(SHA-256("cmk-ingest/document-id/v1\0" ‖ len(source) ‖ source ‖ id))`,
/// lengths as 8-byte big-endian, so no two (source, id) pairs collide by
/// concatenation.
pub fn document_id(source: &str, id: &str) -> String {
    let mut h = Sha256::new();
    h.update(ID_DOMAIN);
    h.update((source.len() as u64).to_be_bytes());
    h.update(source.as_bytes());
    h.update(id.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in h.finalize() {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// Builds the document for one event. `pk_pointer` is a JSON Pointer into the
/// event in its CloudEvents JSON form (e.g. `/source`, `/data/tenant`).
pub fn to_document(event: &Event, pk_pointer: &str) -> Result<Document, DocumentError> {
    document_of(
        &event.source,
        &event.id,
        event.encoding.as_str(),
        event.to_cloudevent_json(),
        pk_pointer,
    )
}

/// [`to_document`] of an event the caller no longer needs: its data moves
/// into the document instead of being copied.
pub fn into_document(event: Event, pk_pointer: &str) -> Result<Document, DocumentError> {
    let (source, id, encoding) = (event.source.clone(), event.id.clone(), event.encoding);
    document_of(
        &source,
        &id,
        encoding.as_str(),
        event.into_cloudevent_json(),
        pk_pointer,
    )
}

fn document_of(
    source: &str,
    event_id: &str,
    encoding: &str,
    ce: Value,
    pk_pointer: &str,
) -> Result<Document, DocumentError> {
    let pk = match ce.pointer(pk_pointer) {
        None | Some(Value::Null) => {
            return Err(DocumentError::PartitionKeyMissing {
                event_id: event_id.into(),
                pointer: pk_pointer.into(),
            })
        }
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        Some(_) => {
            return Err(DocumentError::PartitionKeyNotScalar {
                event_id: event_id.into(),
                pointer: pk_pointer.into(),
            })
        }
    };
    if let Some(why) = crate::records::unaddressable(&pk) {
        return Err(DocumentError::PartitionKeyUnaddressable {
            event_id: event_id.into(),
            pointer: pk_pointer.into(),
            why,
        });
    }
    if pk.len() > MAX_PARTITION_KEY_BYTES {
        return Err(DocumentError::PartitionKeyTooLong {
            event_id: event_id.into(),
            len: pk.len(),
        });
    }
    let id = document_id(source, event_id);
    // Built member by member: `json!` would serialize `ce` into a copy.
    let mut body = serde_json::Map::new();
    body.insert("id".into(), Value::from(id.clone()));
    body.insert("pk".into(), Value::from(pk.clone()));
    body.insert("v".into(), Value::from(DOCUMENT_VERSION));
    body.insert("encoding".into(), Value::from(encoding));
    body.insert("event".into(), ce);
    Ok(Document {
        id,
        partition_key: pk,
        body: Value::Object(body),
    })
}

impl From<DocumentError> for ApiError {
    fn from(e: DocumentError) -> Self {
        ApiError::new(http::StatusCode::BAD_REQUEST, "InvalidEvent", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Encoding;
    use serde_json::{json, Map};

    fn event(source: &str, id: &str) -> Event {
        Event {
            id: id.into(),
            source: source.into(),
            ty: "T".into(),
            subject: Some("s".into()),
            time: None,
            data_content_type: None,
            data_schema: None,
            data: Some(json!({"tenant": "t1", "n": 5, "o": {}})),
            extensions: Map::new(),
            encoding: Encoding::EventGrid,
        }
    }

    #[test]
    fn id_is_a_stable_digest() {
        let a = document_id("/topics/a", "1");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, document_id("/topics/a", "1"));
        assert_ne!(a, document_id("/topics/a", "2"));
        // Concatenation cannot make two pairs collide.
        assert_ne!(document_id("ab", "c"), document_id("a", "bc"));
        // Known answer, so another implementation can check itself.
        assert_eq!(
            document_id("/topics/a", "1"),
            "c0114e694b0dbc4eff002a3fa6e240759991be2505d38676b32d86010c21c31e"
        );
    }

    #[test]
    fn partition_key_from_pointer() {
        let e = event("/topics/a", "1");
        assert_eq!(
            to_document(&e, "/source").unwrap().partition_key,
            "/topics/a"
        );
        assert_eq!(to_document(&e, "/data/tenant").unwrap().partition_key, "t1");
        assert_eq!(to_document(&e, "/data/n").unwrap().partition_key, "5");
        assert!(matches!(
            to_document(&e, "/data/missing"),
            Err(DocumentError::PartitionKeyMissing { .. })
        ));
        assert!(matches!(
            to_document(&e, "/data/o"),
            Err(DocumentError::PartitionKeyNotScalar { .. })
        ));
    }

    #[test]
    fn document_shape() {
        let d = to_document(&event("/topics/a", "1"), "/source").unwrap();
        assert_eq!(d.body["id"], json!(d.id));
        assert_eq!(d.body["pk"], "/topics/a");
        assert_eq!(d.body["v"], 1);
        assert_eq!(d.body["encoding"], "eventgrid");
        assert_eq!(d.body["event"]["id"], "1");
        assert_eq!(d.body["event"]["data"]["tenant"], "t1");
    }
}
