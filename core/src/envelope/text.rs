//! Sealing as text: the steps of [`super::Sealer::seal`] for a writer that
//! keeps a document as JSON text rather than a tree. The caller finds each
//! protected value's bytes and splices in what these write: a sealed value
//! in place of each, and the `cmk` header. The output is the record
//! format's, byte for byte what a reader of `docs/record-format.md` opens
//! (the tests open it with [`super::open`] and compare it with the tree
//! path's).
//!
//! `tests/bench/floor` (its `bound` build) seals this way, to measure what a
//! delivery costs with no JSON trees.
//!
//! What the caller must hold to, which the tree path holds to for it:
//! - each nonce is drawn at random and never used twice with one data key
//!   (across every document of a [`Sealer`]): a repeat discloses the XOR
//!   of two plaintexts and lets GHASH tags be forged;
//! - the plaintext is the value's canonical text (`crate::compact_json`,
//!   the record format's step 1), and a value with a duplicate member
//!   name is refused before, as the component's decoder refuses it;
//! - the header names exactly the pointers sealed, in order, and the
//!   document has no `cmk` member of its own.

use super::{base64url, gcm, put_len_prefixed, Sealer, AAD_DOMAIN, NONCE_LEN};
use super::{CIPHER, FORMAT_VERSION, WRAP_ALGORITHM};
use crate::compact_json::write_str;

/// One document's values to seal: the associated data every field of the
/// document shares (domain tag, id, partition key), hashed once.
pub struct DocumentSealer<'s> {
    sealer: &'s Sealer<'s>,
    head: gcm::AadHead,
}

impl std::fmt::Debug for DocumentSealer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentSealer").finish_non_exhaustive()
    }
}

impl<'a> Sealer<'a> {
    /// Ready to seal values of the document `id` with partition key value
    /// `pk` (the document's `id` and `pk` members, as they will be stored).
    pub fn document(&'a self, id: &str, pk: &str) -> DocumentSealer<'a> {
        DocumentSealer {
            sealer: self,
            head: self.aad_head(id, pk),
        }
    }

    pub(super) fn aad_head(&self, id: &str, pk: &str) -> gcm::AadHead {
        let mut head = Vec::with_capacity(AAD_DOMAIN.len() + 8 + id.len() + pk.len());
        head.extend_from_slice(AAD_DOMAIN);
        put_len_prefixed(&mut head, id);
        put_len_prefixed(&mut head, pk);
        self.cipher.aad_head(&head)
    }

    /// The rest of a field's associated data after the document's head
    /// (`associated_data(id, pk, pointer, kid)`'s last two parts), in `out`.
    pub(super) fn aad_rest(&self, pointer: &str, out: &mut Vec<u8>) {
        out.clear();
        put_len_prefixed(out, pointer);
        put_len_prefixed(out, self.kid);
    }

    /// Appends the `cmk` header's value, a JSON object, for a document whose
    /// sealed values are at `fields` (in the order they were sealed).
    pub fn header_text(&self, fields: &[&str], out: &mut Vec<u8>) {
        // Members in serde_json's order (sorted), as the tree path writes them.
        out.extend_from_slice(b"{\"alg\":");
        write_str(out, CIPHER);
        out.extend_from_slice(b",\"dek\":");
        write_str(out, &self.wrapped_dek);
        out.extend_from_slice(b",\"fields\":[");
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, f);
        }
        out.extend_from_slice(b"],\"kid\":");
        write_str(out, self.kid);
        out.extend_from_slice(format!(",\"v\":{FORMAT_VERSION},\"wrap\":").as_bytes());
        write_str(out, WRAP_ALGORITHM);
        out.push(b'}');
    }
}

impl DocumentSealer<'_> {
    /// Appends the sealed value, a JSON object, of the value at `pointer`
    /// whose canonical JSON text (`crate::compact_json`) is `plaintext`,
    /// under `nonce`, fresh for this data key.
    pub fn seal_text(
        &self,
        pointer: &str,
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
        out: &mut Vec<u8>,
    ) {
        let mut aad_rest = Vec::with_capacity(8 + pointer.len() + self.sealer.kid.len());
        self.sealer.aad_rest(pointer, &mut aad_rest);
        let mut ct = Vec::with_capacity(plaintext.len() + 16);
        self.sealer
            .cipher
            .seal_into(&nonce, &self.head, &aad_rest, plaintext, &mut ct);
        out.extend_from_slice(format!("{{\"cmk\":{FORMAT_VERSION},\"ct\":\"").as_bytes());
        out.extend_from_slice(base64url::encode(&ct).as_bytes());
        out.extend_from_slice(b"\",\"iv\":\"");
        out.extend_from_slice(base64url::encode(&nonce).as_bytes());
        out.extend_from_slice(b"\"}");
    }
}

#[cfg(test)]
mod tests;
