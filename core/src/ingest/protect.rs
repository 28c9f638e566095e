//! Which fields of a document are protected: the configured pointers that
//! resolve in it, the ones that cannot be resolved (refused, never stored
//! in plaintext), and events that already hold the sealed shape.

use http::StatusCode;

use crate::api::ApiError;
use crate::document::Document;

/// Refuses an event holding a value shaped like a sealed value (an object
/// with exactly the members `cmk`, `iv` and `ct`): stored records reserve
/// that shape for encrypted fields, and a reader refuses a record holding
/// one its header does not list, so such an event, once stored, could never
/// be read back. Checked in both stages.
///
/// The answer (and so the log line) names only the event's member the value
/// is under (`/event/data`), never the pointer below it: member names inside
/// a protected value are part of what is sealed, and may be the very data
/// (a map keyed by a person's name or number).
pub fn check_no_sealed_shape(d: &Document) -> Result<(), ApiError> {
    match crate::envelope::sealed_pointers(&d.body).first() {
        None => Ok(()),
        Some(at) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SealedShapeInEvent",
            format!(
                "event `{}`: a value under {} is an object with exactly the members cmk, iv and ct, \
                 a shape stored records reserve for encrypted values; send it in another shape",
                d.body["event"]["id"].as_str().unwrap_or_default(),
                crate::envelope::event_member(at)
            ),
        )),
    }
}

/// A configured protected pointer that cannot be resolved in an event
/// because a value on its way has another shape (see
/// [`crate::envelope::resolve`]). The event is refused rather than stored
/// with that field in plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolvable {
    /// The document's id.
    pub document_id: String,
    /// The event's own id.
    pub event_id: String,
    /// Where, as document-level pointers (`/event/...`).
    pub mismatch: crate::envelope::ShapeMismatch,
}

impl From<&Unresolvable> for ApiError {
    fn from(u: &Unresolvable) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ProtectedFieldUnresolvable",
            format!(
                "event `{}`: protected field {} cannot be sealed: {} is a {}, not what the pointer needs; \
                 the event is refused so that no protected value is stored in plaintext",
                u.event_id, u.mismatch.pointer, u.mismatch.at, u.mismatch.found
            ),
        )
    }
}

/// The document-level pointers to seal in each document: the configured
/// pointers for its event type, resolved in its event (`*` expanded; absent
/// fields skipped). Fails on the first event where a configured pointer
/// meets a value of another shape.
pub fn protected_pointers(
    documents: &[Document],
    protected: &crate::config::ProtectedFields,
) -> Result<Vec<Vec<String>>, Unresolvable> {
    documents
        .iter()
        .map(|d| {
            let event = &d.body["event"];
            let ty = event["type"].as_str().unwrap_or_default();
            let mut out = Vec::new();
            for p in protected.for_type(ty) {
                match crate::envelope::resolve_under(event, p, "/event") {
                    Ok(found) => out.extend(found),
                    Err(m) => {
                        return Err(Unresolvable {
                            document_id: d.id.clone(),
                            event_id: event["id"].as_str().unwrap_or_default().to_owned(),
                            mismatch: crate::envelope::ShapeMismatch {
                                pointer: format!("/event{}", m.pointer),
                                at: format!("/event{}", m.at.trim_end_matches('/')),
                                found: m.found,
                            },
                        })
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// Every event of `documents` in which a configured pointer meets a value of
/// another shape: one entry per event and configured pointer (its first
/// mismatch), in delivery order, so each is logged, not only the first.
pub fn unresolvable(
    documents: &[Document],
    protected: &crate::config::ProtectedFields,
) -> Vec<Unresolvable> {
    let mut out = Vec::new();
    for d in documents {
        let event = &d.body["event"];
        let ty = event["type"].as_str().unwrap_or_default();
        for p in protected.for_type(ty) {
            if let Err(m) = crate::envelope::resolve(event, p) {
                out.push(Unresolvable {
                    document_id: d.id.clone(),
                    event_id: event["id"].as_str().unwrap_or_default().to_owned(),
                    mismatch: crate::envelope::ShapeMismatch {
                        pointer: format!("/event{}", m.pointer),
                        at: format!("/event{}", m.at.trim_end_matches('/')),
                        found: m.found,
                    },
                });
            }
        }
    }
    out
}
