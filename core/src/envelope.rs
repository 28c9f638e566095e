//! Envelope encryption of protected fields (record format v1; specified in
//! `docs/record-format.md`).
//!
//! One fresh 256-bit data key (DEK) per delivery; every protected value is
//! sealed with AES-256-GCM under its own random 96-bit nonce, with associated
//! data binding the ciphertext to the format version, the document id, the
//! partition key, the field's JSON Pointer and the exact key-encryption key
//! version. The DEK travels wrapped by the KEK (RSA-OAEP-256 in Managed HSM)
//! in the document's `cmk` header. Opening checks everything before it
//! returns anything: a record yields all requested plaintext or an error.
//!
//! Pure: the DEK, nonces and the wrapped DEK are inputs.

mod base64url;
pub(crate) mod gcm;
mod header;
mod pointer;
mod text;
// The block cipher of sealing on Wasm SIMD (and of its native tests).
#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
mod vector_aes;

pub use header::*;
pub use pointer::*;
pub use text::DocumentSealer;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

/// base64url for reading: with or without padding, as the format allows.
const B64_READ: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Record format version.
pub const FORMAT_VERSION: u64 = 1;

/// Field cipher.
pub const CIPHER: &str = "A256GCM";

/// How the DEK is wrapped.
pub const WRAP_ALGORITHM: &str = "RSA-OAEP-256";

/// Name of the document member holding the envelope header.
pub const HEADER: &str = "cmk";

/// Header member naming the KEK version bound into the fields' associated
/// data, present once a record has been rewrapped.
pub const SEALED_KID: &str = "sealedKid";

const AAD_DOMAIN: &[u8] = b"cmk-ingest/field/v1\0";

const NONCE_LEN: usize = 12;

const TAG_LEN: usize = 16;

/// A 256-bit data key, wiped from memory when dropped.
pub struct Dek(Zeroizing<[u8; 32]>);

impl Dek {
    /// Takes the key bytes (from the host's secure random source, or an unwrap).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            EnvelopeError::Malformed(format!("a data key has 32 bytes, not {}", bytes.len()))
        })?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The key bytes, for wrapping.
    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(<&Key<Aes256Gcm>>::try_from(&self.0[..]).expect("a data key is 32 bytes"))
    }
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

/// Why a record could not be sealed or opened. Messages never contain
/// plaintext or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The record does not follow the format (missing header, bad encoding…).
    #[error("malformed protected record: {0}")]
    Malformed(String),
    /// A version, cipher or wrapping algorithm this reader does not know.
    #[error("unsupported protected record: {0}")]
    Unsupported(String),
    /// Authentication failed: the ciphertext, its field, its record or the
    /// header was altered, or the wrong key was used.
    #[error("protected field {0} failed authentication (tampered, moved, or the wrong key)")]
    Tampered(String),
}

/// Adds the header of a record that the configuration protects nothing of:
/// `fields` empty and no `dek` (no data key was made or wrapped); `kid` is
/// the key version in use, so the record says which key regime wrote it.
pub fn seal_nothing(doc: &mut Value, kid: &str) -> Result<(), EnvelopeError> {
    if doc.get(HEADER).is_some() {
        return Err(EnvelopeError::Malformed(
            "the document already has a `cmk` member".into(),
        ));
    }
    str_member(doc, "id")?;
    str_member(doc, "pk")?;
    let header = json!({
        "v": FORMAT_VERSION,
        "alg": CIPHER,
        "kid": kid,
        "wrap": WRAP_ALGORITHM,
        "fields": [],
    });
    doc.as_object_mut()
        .ok_or_else(|| EnvelopeError::Malformed("a document is a JSON object".into()))?
        .insert(HEADER.into(), header);
    Ok(())
}

/// Parses opened plaintext: strict UTF-8 JSON with no duplicate member
/// names (serde_json would keep the last one silently) and, as JSON has
/// none, no NaN or infinities.
fn parse_plaintext(bytes: &[u8]) -> Option<Value> {
    struct Strict(Value);
    impl<'de> serde::Deserialize<'de> for Strict {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Strict;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON value")
                }
                fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                    Ok(Strict(Value::Bool(v)))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                    Ok(Strict(v.into()))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                    Ok(Strict(v.into()))
                }
                fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Strict, E> {
                    serde_json::Number::from_f64(v)
                        .map(|n| Strict(Value::Number(n)))
                        .ok_or_else(|| E::custom("not a finite number"))
                }
                fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                    Ok(Strict(Value::String(v.to_owned())))
                }
                fn visit_string<E>(self, v: String) -> Result<Strict, E> {
                    Ok(Strict(Value::String(v)))
                }
                fn visit_unit<E>(self) -> Result<Strict, E> {
                    Ok(Strict(Value::Null))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Strict, A::Error> {
                    let mut out = Vec::new();
                    while let Some(Strict(v)) = a.next_element()? {
                        out.push(v);
                    }
                    Ok(Strict(Value::Array(out)))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Strict, A::Error> {
                    let mut out = Map::new();
                    while let Some((k, Strict(v))) = a.next_entry::<String, Strict>()? {
                        if out.insert(k, v).is_some() {
                            return Err(serde::de::Error::custom("duplicate member name"));
                        }
                    }
                    Ok(Strict(Value::Object(out)))
                }
            }
            d.deserialize_any(V)
        }
    }
    serde_json::from_slice::<Strict>(bytes).ok().map(|s| s.0)
}

fn put_len_prefixed(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The associated data for one field: the domain tag (which carries the
/// format version), then the document id, partition key, pointer and KEK id,
/// each as a 4-byte big-endian length and UTF-8 bytes.
pub fn associated_data(id: &str, partition_key: &str, pointer: &str, kid: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(
        AAD_DOMAIN.len() + 16 + id.len() + partition_key.len() + pointer.len() + kid.len(),
    );
    aad.extend_from_slice(AAD_DOMAIN);
    for part in [id, partition_key, pointer, kid] {
        put_len_prefixed(&mut aad, part);
    }
    aad
}

fn str_member<'a>(doc: &'a Value, name: &str) -> Result<&'a str, EnvelopeError> {
    doc.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| EnvelopeError::Malformed(format!("`{name}` is missing or not a string")))
}

/// Seals the values at `pointers` (document-level JSON Pointers, each of
/// which must name a value: the caller resolves them in this document, so
/// one that names nothing is refused as [`EnvelopeError::Malformed`] rather
/// than leave a value it meant to seal in plaintext) in place and adds the
/// `cmk` header. `nonce` yields a fresh random 96-bit nonce per call.
/// Returns the pointers sealed.
pub fn seal(
    doc: &mut Value,
    pointers: &[String],
    dek: &Dek,
    kid: &str,
    wrapped_dek: &[u8],
    nonce: impl FnMut() -> [u8; NONCE_LEN],
) -> Result<Vec<String>, EnvelopeError> {
    Sealer::new(dek, kid, wrapped_dek).seal(doc, pointers, nonce)
}

/// One data key made ready to seal many documents ([`seal`] for each):
/// its AES-GCM key schedule and the header's text of the wrapped key are
/// computed once, not per document.
pub struct Sealer<'a> {
    cipher: gcm::Gcm,
    kid: &'a str,
    wrapped_dek: String,
}

impl std::fmt::Debug for Sealer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl<'a> Sealer<'a> {
    /// `dek`, wrapped as `wrapped_dek` by the key version `kid`.
    pub fn new(dek: &Dek, kid: &'a str, wrapped_dek: &[u8]) -> Self {
        Self {
            cipher: gcm::Gcm::new(&dek.0),
            kid,
            wrapped_dek: base64url::encode(wrapped_dek),
        }
    }

    /// [`seal`] with this data key.
    pub fn seal(
        &self,
        doc: &mut Value,
        pointers: &[String],
        mut nonce: impl FnMut() -> [u8; NONCE_LEN],
    ) -> Result<Vec<String>, EnvelopeError> {
        if doc.get(HEADER).is_some() {
            return Err(EnvelopeError::Malformed(
                "the document already has a `cmk` member".into(),
            ));
        }
        let kid = self.kid;
        // Every field's associated data starts with the same domain tag, id
        // and partition key: hashed once per document.
        let head = self.aad_head(str_member(doc, "id")?, str_member(doc, "pk")?);
        let mut sealed = Vec::new();
        let mut ct = Vec::new();
        let mut aad_rest = Vec::new();
        for pointer in pointers {
            let Some(slot) = lookup_mut(doc, pointer) else {
                return Err(EnvelopeError::Malformed(format!(
                    "the pointer {pointer} to seal names no value in the document"
                )));
            };
            let plaintext = Zeroizing::new(crate::compact_json::to_vec(slot));
            let n = nonce();
            // The rest of `associated_data(id, pk, pointer, kid)`.
            self.aad_rest(pointer, &mut aad_rest);
            ct.clear();
            self.cipher
                .seal_into(&n, &head, &aad_rest, &plaintext, &mut ct);
            // The members json! would give, built without copying the texts.
            let mut value = Map::new();
            value.insert("cmk".into(), Value::from(FORMAT_VERSION));
            value.insert("iv".into(), Value::String(base64url::encode(&n)));
            value.insert("ct".into(), Value::String(base64url::encode(&ct)));
            *slot = Value::Object(value);
            sealed.push(pointer.clone());
        }
        let mut header = Map::new();
        header.insert("v".into(), Value::from(FORMAT_VERSION));
        header.insert("alg".into(), Value::from(CIPHER));
        header.insert("kid".into(), Value::from(kid));
        header.insert("wrap".into(), Value::from(WRAP_ALGORITHM));
        header.insert("dek".into(), Value::String(self.wrapped_dek.clone()));
        header.insert(
            "fields".into(),
            Value::Array(sealed.iter().cloned().map(Value::String).collect()),
        );
        doc.as_object_mut()
            .ok_or_else(|| EnvelopeError::Malformed("a document is a JSON object".into()))?
            .insert(HEADER.into(), Value::Object(header));
        Ok(sealed)
    }
}

/// Opens a sealed document with its unwrapped DEK. `only` limits which fields
/// are decrypted (the others stay sealed); every listed field is checked to
/// be a well-formed sealed value. Returns the document without the header.
pub fn open(doc: &Value, dek: &Dek, only: Option<&[String]>) -> Result<Value, EnvelopeError> {
    open_with(doc, Some(dek), only)
}

/// Whether opening `h` with `only` decrypts anything (and so needs the DEK).
pub fn needs_key(h: &Header, only: Option<&[String]>) -> bool {
    match only {
        None => !h.fields.is_empty(),
        Some(o) => h.fields.iter().any(|f| o.contains(f)),
    }
}

/// [`open`], where the DEK may be absent when no requested field needs it
/// (see [`needs_key`]): the record is still checked and the header removed.
pub fn open_with(
    doc: &Value,
    dek: Option<&Dek>,
    only: Option<&[String]>,
) -> Result<Value, EnvelopeError> {
    let h = header(doc)?
        .ok_or_else(|| EnvelopeError::Malformed("the document is not sealed".into()))?;
    let id = str_member(doc, "id")?;
    let pk = str_member(doc, "pk")?;
    let cipher = match dek {
        Some(d) => Some(d.cipher()),
        None if needs_key(&h, only) => {
            return Err(EnvelopeError::Malformed(
                "opening these fields needs the data key".into(),
            ))
        }
        None => None,
    };
    if let Some(p) = sealed_pointers(doc)
        .into_iter()
        .find(|p| !h.fields.contains(p))
    {
        // A sealed value the header does not list: the header was edited to
        // hide it (or another record's value was pasted in).
        return Err(EnvelopeError::Tampered(format!(
            "under {}",
            event_member(&p)
        )));
    }
    let mut out = doc.clone();
    for pointer in &h.fields {
        let sealed = lookup(doc, pointer).ok_or_else(|| {
            EnvelopeError::Malformed(format!("sealed field {pointer} is missing"))
        })?;
        let obj = sealed.as_object().filter(|o| {
            o.len() == 3 && o.get("cmk").and_then(Value::as_u64) == Some(FORMAT_VERSION)
        });
        let obj: &Map<String, Value> = obj.ok_or_else(|| {
            EnvelopeError::Malformed(format!("field {pointer} is not a sealed value"))
        })?;
        let decode = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .and_then(|s| B64_READ.decode(s).ok())
        };
        let iv = decode("iv")
            .filter(|v| v.len() == NONCE_LEN)
            .ok_or_else(|| EnvelopeError::Malformed(format!("field {pointer}: bad iv")))?;
        let ct = decode("ct")
            .filter(|v| v.len() >= TAG_LEN)
            .ok_or_else(|| EnvelopeError::Malformed(format!("field {pointer}: bad ct")))?;
        if only.is_some_and(|o| !o.iter().any(|p| p == pointer)) {
            continue;
        }
        let cipher = cipher.as_ref().expect("needs_key checked above");
        let aad = associated_data(id, pk, pointer, &h.sealed_kid);
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    &Nonce::try_from(&iv[..]).expect("the iv's length is checked above"),
                    Payload {
                        msg: &ct,
                        aad: &aad,
                    },
                )
                .map_err(|_| EnvelopeError::Tampered(pointer.clone()))?,
        );
        let value =
            parse_plaintext(&plaintext).ok_or_else(|| EnvelopeError::Tampered(pointer.clone()))?;
        *lookup_mut(&mut out, pointer).expect("checked above") = value;
    }
    out.as_object_mut()
        .expect("documents are objects")
        .remove(HEADER);
    Ok(out)
}

/// The first two steps of a document-level pointer (`/event/data/a/b` →
/// `/event/data`): which of the event's members, and nothing of what is
/// inside it. Messages about a value found by [`sealed_pointers`] name only
/// this: member names inside a protected value are part of what is sealed,
/// and may be the very data (a map keyed by a person's name or number).
pub fn event_member(pointer: &str) -> &str {
    match pointer.match_indices('/').nth(2) {
        Some((cut, _)) => &pointer[..cut],
        None => pointer,
    }
}

/// JSON Pointers of every value in `doc` shaped like a sealed value (an
/// object whose members are exactly `cmk`, `iv` and `ct`), outside the
/// `cmk` header. A reader uses it to refuse records whose header was
/// removed or edited to unlist a field.
pub fn sealed_pointers(doc: &Value) -> Vec<String> {
    /// One step of the path walked so far.
    enum Step<'a> {
        Member(&'a str),
        Element(usize),
    }
    /// The path as a JSON Pointer, built only for a sealed value found
    /// (every event is checked, and almost none holds one).
    fn pointer(path: &[Step]) -> String {
        let mut p = String::new();
        for step in path {
            p.push('/');
            match step {
                Step::Member(k) => {
                    for c in k.chars() {
                        match c {
                            '~' => p.push_str("~0"),
                            '/' => p.push_str("~1"),
                            c => p.push(c),
                        }
                    }
                }
                Step::Element(i) => p.push_str(&i.to_string()),
            }
        }
        p
    }
    fn walk<'a>(v: &'a Value, path: &mut Vec<Step<'a>>, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if !path.is_empty()
                    && m.len() == 3
                    && ["cmk", "iv", "ct"].iter().all(|k| m.contains_key(*k))
                {
                    out.push(pointer(path));
                    return;
                }
                for (k, child) in m {
                    if path.is_empty() && k == HEADER {
                        continue;
                    }
                    path.push(Step::Member(k));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    path.push(Step::Element(i));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut Vec::new(), &mut out);
    out
}

/// The document with its data key rewrapped: `kid` and `dek` replaced by
/// the new KEK version and the DEK wrapped under it; `sealedKid` keeps the
/// version bound into the fields' associated data, so no field is
/// re-encrypted and every ciphertext stays byte for byte the same. The
/// header must already be valid (see [`header`]).
pub fn rewrapped(doc: &Value, kid: &str, wrapped_dek: &[u8]) -> Result<Value, EnvelopeError> {
    let h = header(doc)?
        .ok_or_else(|| EnvelopeError::Malformed("the document is not sealed".into()))?;
    if kid.is_empty() || (wrapped_dek.is_empty() != h.wrapped_dek.is_empty()) {
        return Err(EnvelopeError::Malformed(
            "a rewrap needs a key id and, unless the record seals nothing, a wrapped data key"
                .into(),
        ));
    }
    let mut out = doc.clone();
    let m = out[HEADER].as_object_mut().expect("checked by header()");
    if h.wrapped_dek.is_empty() {
        // Nothing sealed, no data key: only the key version moves.
        m.insert("kid".into(), json!(kid));
        return Ok(out);
    }
    m.insert("kid".into(), json!(kid));
    m.insert("dek".into(), json!(base64url::encode(wrapped_dek)));
    if h.sealed_kid == kid {
        m.remove(SEALED_KID);
    } else {
        m.insert(SEALED_KID.into(), json!(h.sealed_kid));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
