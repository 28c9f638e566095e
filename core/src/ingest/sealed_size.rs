//! A document's size once sealed, known before its data key is made or
//! wrapped, so that a document only the sealing pushes over Cosmos DB's
//! 2 MB limit is refused (413 `DocumentTooLarge`) without an HSM call.
//!
//! Sealing (`envelope::Sealer::seal`) replaces each protected value, whose
//! canonical text of `p` bytes is what it encrypts, by
//! `{"cmk":1,"ct":"<base64url of p + 16 bytes>","iv":"<16 characters>"}`
//! (members in the stored, sorted order),
//! and adds the member
//! `"cmk":{"alg":"A256GCM","dek":…,"fields":[…],"kid":…,"v":1,"wrap":"RSA-OAEP-256"}`.
//! Everything but two texts of the header is known from the unsealed
//! document and its pointers ([`sealed_length`], exact). The two come
//! from the wrap:
//!
//! - the key id `kid`: `{origin}/keys/{name}/{version}`, the origin and
//!   name known, the version (1 to 127 characters; 32 in Managed HSM) not.
//!   This assumes the key id stored is a version of the configured key in the
//!   configured HSM, as `hsm::KeyRef::from_kid` checks for a wrapped key
//!   (the wrap asks for, and accepts an answer for, only that version); a
//!   group that seals nothing stores the key id read with the key's state,
//!   which the HSM answers for the configured name;
//! - the wrapped data key, as long as the key's RSA modulus: 256, 384 or
//!   512 bytes (2048, 3072 or 4096 bits), 342, 512 or 683 characters of
//!   base64url.
//!
//! [`check_sealed_sizes`] refuses a document early when even the shortest
//! of these (a one-character version, the origin without `:443`, a
//! 2048-bit key) make it too large. A document in the band between is
//! sealed and refused after the wrap, by `plan_writes`, with nothing
//! written: its sealed length with the shortest texts is at most the limit,
//! and with the actual ones over it. The band is as wide as the actual
//! texts are longer than the shortest: the version's length less one, plus
//! 4 if the service names the default port `:443`, plus 1 for a trailing
//! slash, plus 0, 170 or 341 for a 2048-, 3072- or 4096-bit key; at most
//! 472 bytes, 31 with a Managed HSM version and a 2048-bit key.

use std::collections::HashSet;

use http::StatusCode;
use serde_json::Value;

use super::scope::KeyGroup;
use super::size::{DOCUMENT_OVERHEAD, MAX_GROWTH};
use crate::api::ApiError;
use crate::compact_json::{write_str, write_value};
use crate::cosmos::MAX_DOCUMENT_BYTES;
use crate::document::Document;
use crate::endpoint::Endpoint;

/// The shortest wrapped data key: an RSA-OAEP ciphertext is as long as the
/// key's modulus, and a key under 2048 bits is refused before any wrap
/// (`hsm::check_usable`).
pub const MIN_WRAPPED_KEY_BYTES: usize = 256;

/// Bytes the cipher adds to each plaintext (the AES-GCM tag).
const TAG_BYTES: usize = 16;

/// A sealed value's text but its ciphertext's base64url:
/// `{"cmk":1,"ct":"","iv":""}` and the 16 characters of the 12-byte nonce.
const SEALED_VALUE_TEXT: usize = r#"{"cmk":1,"ct":"","iv":""}"#.len() + 16;

/// The most a sealed value's text is longer than its plaintext of `p`
/// bytes, less `p / 3`: base64url of `p + 16` bytes is at most
/// `(4p + 66) / 3` characters, that is `p + p / 3 + 22` (rounded down).
pub const MAX_VALUE_GROWTH: usize = SEALED_VALUE_TEXT + 22;

/// The header member of a document whose fields were sealed, but the texts
/// of its key id, wrapped key and field list (one more member of the
/// document, so after a comma: a document has an `id`).
const HEADER_TEXT: usize =
    r#","cmk":{"alg":"A256GCM","dek":,"fields":[],"kid":,"v":1,"wrap":"RSA-OAEP-256"}"#.len();

/// The header member of a document that seals nothing (no data key).
const EMPTY_HEADER_TEXT: usize = HEADER_TEXT - r#","dek":"#.len();

/// Room for the header in [`sealed_length_bound`]: its
/// fixed text, a key id (an origin of at most about 270 characters, and a
/// name and a version of at most 127 each, about 540 in all) and a wrapped
/// key of at most 512 bytes (4096 bits, the largest RSA-HSM key; 685
/// characters with its quotes), with margin. A larger one could only make
/// the bound skip a document that the after-wrap check still refuses.
pub const SEALED_HEADER_ROOM: usize = 2048;

/// The length of `n` bytes in base64url without padding.
pub fn base64url_len(n: usize) -> usize {
    n / 3 * 4 + [0, 2, 3][n % 3]
}

/// A document's sealed length but the two header texts only the wrap
/// gives (see [`sealed_length`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedLength {
    /// The document's text, with each protected value replaced by its
    /// sealed text, without the header.
    pub body: usize,
    /// The header's field list: each sealed pointer's JSON text, and the
    /// commas between them.
    pub fields: usize,
    /// How many values are sealed.
    pub sealed: usize,
}

impl SealedLength {
    /// The sealed document's exact length with a key id whose JSON text
    /// (quotes included) is `kid_text` bytes, and a wrapped data key of
    /// `wrapped` bytes; `None` for the header of a document sealed without
    /// a data key (`envelope::seal_nothing`, which has no `dek` member).
    pub fn with(self, kid_text: usize, wrapped: Option<usize>) -> usize {
        let header = match wrapped {
            Some(n) => HEADER_TEXT + 2 + base64url_len(n),
            None => EMPTY_HEADER_TEXT,
        };
        self.body + self.fields + header + kid_text
    }
}

/// What sealing the values at `pointers` of `doc` makes of its length,
/// from the same canonical texts the sealing encrypts (each written into
/// `scratch`, which is reused). `None` when sealing would not seal each
/// value on its own: a pointer that is not one (no leading `/`), the same
/// pointer twice or one inside another (the configuration refuses
/// overlapping pointers, so a delivery's never do), or a document that
/// sealing refuses (not an object, or one with a `cmk` member).
pub fn sealed_length(
    doc: &Value,
    pointers: &[String],
    scratch: &mut Vec<u8>,
) -> Option<SealedLength> {
    if !doc.is_object() || doc.get(crate::envelope::HEADER).is_some() || overlapping(pointers) {
        return None;
    }
    scratch.clear();
    write_value(scratch, doc);
    let mut out = SealedLength {
        body: scratch.len(),
        fields: 0,
        sealed: 0,
    };
    for pointer in pointers {
        let Some(slot) = crate::envelope::lookup(doc, pointer) else {
            continue;
        };
        scratch.clear();
        write_value(scratch, slot);
        let plain = scratch.len();
        out.body = out.body - plain + SEALED_VALUE_TEXT + base64url_len(plain + TAG_BYTES);
        scratch.clear();
        write_str(scratch, pointer);
        out.fields += scratch.len() + usize::from(out.sealed > 0);
        out.sealed += 1;
    }
    Some(out)
}

/// Whether sealing `pointers` in turn would not seal each value once and
/// on its own (see [`sealed_length`]). Valid pointers name distinct values
/// by distinct texts (RFC 6901 has one escape for each of `~` and `/`, and
/// indexes no leading zero), so the texts tell.
fn overlapping(pointers: &[String]) -> bool {
    if pointers.iter().any(|p| !p.starts_with('/')) {
        return true;
    }
    if pointers.len() < 2 {
        return false;
    }
    let all: HashSet<&str> = pointers.iter().map(String::as_str).collect();
    all.len() != pointers.len()
        || pointers.iter().any(|p| {
            p.match_indices('/')
                .skip(1)
                .any(|(at, _)| all.contains(&p[..at]))
        })
}

/// The shortest JSON text (quotes included) of a key id of the key `name`
/// in `vault`: an id is accepted only as `{origin}/keys/{name}/{version}`
/// (`hsm::KeyRef::from_kid`, where the origin may leave out `:443`), with a
/// version of at least one character. No character of it needs an escape
/// (an escape would only lengthen it).
pub fn shortest_kid_text(vault: &Endpoint, name: &str) -> usize {
    let origin = vault.origin();
    let origin = origin.strip_suffix(":443").unwrap_or(&origin).len();
    2 + origin + "/keys/".len() + name.len() + "/".len() + 1
}

/// An upper bound of the sealed length of any document of a delivery of
/// `input_len` bytes (as for
/// [`may_hold_oversized_document`](super::may_hold_oversized_document))
/// whose documents seal the values at `plans`. Each document's unsealed
/// text is at most `U = input_len * MAX_GROWTH + DOCUMENT_OVERHEAD`;
/// sealing a value of `p` bytes adds at most `MAX_VALUE_GROWTH + p / 3`,
/// and its pointer at most six times its length (every byte escaped as
/// `\u00XX`), quotes and a comma to the field list. The values of one
/// document are disjoint, so their `p` add up to at most `U`, and the
/// delivery's pointers bound any one document's. So many tiny values count
/// (`1` grows to 64 bytes, and its pointer is listed), not only long ones.
/// (The six bytes for each byte of a pointer over-count its leading `/`,
/// never escaped, by five, more than its quotes and comma: those 3 are
/// kept for a plain derivation, not because a document needs them.)
pub fn sealed_length_bound(input_len: usize, plans: &[Vec<String>]) -> usize {
    let unsealed = input_len
        .saturating_mul(MAX_GROWTH)
        .saturating_add(DOCUMENT_OVERHEAD);
    plans.iter().flatten().fold(
        unsealed
            .saturating_add(unsealed / 3)
            .saturating_add(SEALED_HEADER_ROOM),
        |bound, p| {
            bound
                .saturating_add(MAX_VALUE_GROWTH + 3)
                .saturating_add(p.len().saturating_mul(6))
        },
    )
}

/// Whether a delivery can hold a document over the limit once sealed
/// ([`sealed_length_bound`]). When it cannot, [`check_sealed_sizes`]
/// serializes nothing: a delivery under about 255 KiB with few protected
/// values pays only a sum over its pointers.
pub fn may_hold_oversized_sealed_document(input_len: usize, plans: &[Vec<String>]) -> bool {
    sealed_length_bound(input_len, plans) >= MAX_DOCUMENT_BYTES
}

/// Refuses the delivery (413 `DocumentTooLarge`) if any document will be
/// over [`MAX_DOCUMENT_BYTES`] once sealed, whatever the key version and
/// key size the wrap turns out to use (see the module's documentation for
/// the band left to the after-wrap check). Called before any key is asked
/// for. `plans` holds each document's pointers to seal
/// ([`protected_pointers`](super::protected_pointers)), `groups` the key
/// groups ([`key_groups`](super::key_groups)): a group none of whose
/// documents seals a value gets no data key, and headers without one.
/// Below the bound of [`may_hold_oversized_sealed_document`] nothing is
/// serialized.
pub fn check_sealed_sizes(
    documents: &[Document],
    plans: &[Vec<String>],
    groups: &[KeyGroup],
    vault: &Endpoint,
    input_len: usize,
) -> Result<(), ApiError> {
    if !may_hold_oversized_sealed_document(input_len, plans) {
        return Ok(());
    }
    let mut scratch = Vec::new();
    for g in groups {
        let kid = shortest_kid_text(vault, &g.key_name);
        let wrapped = g
            .documents
            .iter()
            .any(|&i| plans.get(i).is_some_and(|p| !p.is_empty()))
            .then_some(MIN_WRAPPED_KEY_BYTES);
        for &i in &g.documents {
            let (Some(d), Some(pointers)) = (documents.get(i), plans.get(i)) else {
                continue;
            };
            let Some(length) = sealed_length(&d.body, pointers, &mut scratch) else {
                continue;
            };
            let least = length.with(kid, wrapped);
            if least > MAX_DOCUMENT_BYTES {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "DocumentTooLarge",
                    format!(
                        "event `{}`: its document is at least {least} bytes once its protected fields are sealed; \
                         Cosmos DB accepts at most {MAX_DOCUMENT_BYTES}",
                        d.body["event"]["id"].as_str().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}
