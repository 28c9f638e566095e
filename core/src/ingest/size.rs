//! A document's size before sealing: sealing only makes a document larger
//! (each protected value becomes an envelope of base64 text), so one whose
//! unsealed text is already over Cosmos DB's limit is refused before any
//! key is asked for, with the answer [`plan_writes`](super::plan_writes)
//! would give after sealing. One that only the sealing pushes over the
//! limit is refused before the wrap by
//! [`check_sealed_sizes`](super::check_sealed_sizes).

use crate::api::ApiError;
use crate::cosmos::{CosmosError, MAX_DOCUMENT_BYTES};
use crate::document::Document;

/// How many times longer a value's compact text can be than its text in the
/// request, with margin. Re-serializing a parsed string never lengthens it
/// (escapes come out as short as or shorter than they went in); a number
/// can (`1E15` is written `1000000000000000.0`, 4.5 times as long); a
/// binary-mode body that is not JSON is stored as base64 (4/3), and an
/// attribute sent as a header at most doubles (a tab becomes `\t`).
pub const MAX_GROWTH: usize = 6;

/// Room for what a document adds to its event's own text: `id`, `pk`
/// (at most 2,048 bytes), `v`, `encoding` and the event wrapper, bounded
/// generously.
pub const DOCUMENT_OVERHEAD: usize = 4096;

/// Whether a delivery of `input_len` bytes (the raw body, plus any
/// attributes sent as headers) can hold a document whose compact text
/// exceeds Cosmos DB's limit. When it cannot, [`check_unsealed_sizes`]
/// skips serializing: the common, small delivery pays nothing.
pub fn may_hold_oversized_document(input_len: usize) -> bool {
    input_len
        .saturating_mul(MAX_GROWTH)
        .saturating_add(DOCUMENT_OVERHEAD)
        >= MAX_DOCUMENT_BYTES
}

/// Refuses the delivery (413 `DocumentTooLarge`, the same answer as
/// [`plan_writes`](super::plan_writes)) if any document's unsealed compact
/// text is already over [`MAX_DOCUMENT_BYTES`]. `input_len` is an upper
/// bound of the delivery's raw size (see [`may_hold_oversized_document`]);
/// below the bound nothing is serialized. Otherwise each document is
/// written into one reused buffer, only to be measured.
pub fn check_unsealed_sizes(documents: &[Document], input_len: usize) -> Result<(), ApiError> {
    if !may_hold_oversized_document(input_len) {
        return Ok(());
    }
    let mut buf = Vec::new();
    for d in documents {
        buf.clear();
        crate::compact_json::write_value(&mut buf, &d.body);
        if buf.len() > MAX_DOCUMENT_BYTES {
            return Err(ApiError::from(&CosmosError::DocumentTooLarge {
                size: buf.len(),
                limit: MAX_DOCUMENT_BYTES,
            }));
        }
    }
    Ok(())
}
