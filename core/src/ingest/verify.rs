//! Create mode's verification: a document that already exists is read
//! back and compared; the same content is "already written", anything
//! else a conflict.

use super::outcome::{is_conflict, WriteResult};
use http::Request;
use serde_json::json;

use crate::config::Config;
use crate::cosmos::{
    parse_read, parse_write, same_content, CosmosError, CosmosRequest, Credential, Metrics,
    SYSTEM_PROPERTIES,
};
use crate::document::Document;
use crate::time::UnixTime;

/// The create of one document on its own (create-or-verify of a batch that
/// met a conflict).
pub fn create_request(
    doc: &Document,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, CosmosError> {
    CosmosRequest::new(&config.cosmos.endpoint, credential, now).create_document(
        &config.cosmos.container,
        &doc.partition_key,
        crate::compact_json::to_vec(&doc.body),
    )
}

/// Parses the answer to [`create_request`]: `Ok(None)` when the document
/// already exists (then [`read_request`] and [`verify_stored`]).
pub fn create_outcome(result: WriteResult) -> Result<Option<(u16, Metrics)>, CosmosError> {
    match parse_write(&result?) {
        Ok(o) => Ok(Some((o.status, o.metrics))),
        Err(e) if is_conflict(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The point read of a document that a create found already there.
pub fn read_request(
    doc: &Document,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Request<Vec<u8>> {
    CosmosRequest::new(&config.cosmos.endpoint, credential, now).read_document(
        &config.cosmos.container,
        &doc.id,
        &doc.partition_key,
    )
}

/// Decides on a document that a create found already there, from its read:
/// the same event is "already written" (its read's metrics), another one
/// [`CosmosError::ExistsWithOtherContent`]. A document deleted in between
/// is a transient failure: the sender's redelivery creates it.
pub fn verify_stored(doc: &Document, read: WriteResult) -> Result<Metrics, CosmosError> {
    let stored = match parse_read(&read?) {
        Ok(s) => s,
        Err(CosmosError::NotFound(e)) => return Err(CosmosError::Transient(e)),
        Err(e) => return Err(e),
    };
    if stored_matches(&stored.body, &doc.body) {
        Ok(stored.metrics)
    } else {
        Err(CosmosError::ExistsWithOtherContent { id: doc.id.clone() })
    }
}

/// Whether a stored document holds the event of `ours`.
///
/// Unsealed documents must be equal except for the service's system
/// properties ([`same_content`]). Sealed documents cannot be compared
/// byte for byte: a redelivery is sealed again under a fresh data key and
/// fresh nonces, so every ciphertext and the wrapped key differ. They match
/// when everything that is not sealed is equal (id, partition key, layout
/// version, encoding, and every event member outside the protected fields:
/// the event's id, source, type, time and unprotected data) and the same
/// fields are sealed. The sealed values themselves are not opened: the
/// document id is a digest of the event's source and id, which CloudEvents
/// requires to identify one event, so a sender reusing an id for other
/// protected content is not detected (documented in docs/cosmos.md).
pub fn stored_matches(stored: &serde_json::Value, ours: &serde_json::Value) -> bool {
    let sealed = |d: &serde_json::Value| d.get(crate::envelope::HEADER).is_some();
    if !sealed(stored) && !sealed(ours) {
        return same_content(stored, ours);
    }
    match (unsealed_view(stored), unsealed_view(ours)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A sealed document without what differs between two sealings of the same
/// event: system properties, the header's key material, the sealed values
/// (each replaced by `null`). `None` if the header is unreadable.
fn unsealed_view(doc: &serde_json::Value) -> Option<serde_json::Value> {
    let h = crate::envelope::header(doc).ok()??;
    let mut view = doc.clone();
    let m = view.as_object_mut()?;
    m.retain(|k, _| !SYSTEM_PROPERTIES.contains(&k.as_str()));
    m.insert(
        crate::envelope::HEADER.into(),
        json!({ "fields": h.fields }),
    );
    for pointer in &h.fields {
        *view.pointer_mut(pointer)? = serde_json::Value::Null;
    }
    Some(view)
}
