//! The `cmk` header of a sealed record: reading and checking it, and the
//! checks of opening that come before any key is used.

use base64::Engine;
use serde_json::Value;

use super::{
    resolve_branches, sealed_pointers, str_member, valid_pointer, EnvelopeError, B64_READ, CIPHER,
    FORMAT_VERSION, HEADER, SEALED_KID, WRAP_ALGORITHM,
};

/// The envelope header of a sealed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The exact KEK version that wrapped the DEK (what unwraps it).
    pub kid: String,
    /// The KEK version bound into every field's associated data: the one
    /// that wrapped the DEK when the fields were sealed. It differs from
    /// `kid` only after a rewrap (`cmk.sealedKid`).
    pub sealed_kid: String,
    /// The wrapped DEK.
    pub wrapped_dek: Vec<u8>,
    /// Document-level JSON Pointers of the sealed fields, in sealing order.
    pub fields: Vec<String>,
}

/// The members a `cmk` header may have.
const HEADER_MEMBERS: &[&str] = &["v", "alg", "kid", "wrap", "dek", "fields", SEALED_KID];

/// What a reader expects of a record's header beyond the format itself:
/// the key it must name, and the pointers the current configuration
/// protects for the record's type.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The configured Managed HSM origin, e.g. `https://contoso.managedhsm.azure.net`.
    pub hsm: &'a str,
    /// The configured key name.
    pub key_name: &'a str,
    /// Document-level pointers (may contain `*`) the configuration protects.
    pub protected: &'a [String],
}

/// Whether `kid` names a version of the configured key:
/// `{hsm}/keys/{key_name}/{version}`, the version letters and digits.
pub fn kid_belongs(kid: &str, hsm: &str, key_name: &str) -> bool {
    let hsm = hsm.trim_end_matches('/');
    let rest = kid
        .strip_prefix(hsm)
        .or_else(|| hsm.strip_suffix(":443").and_then(|h| kid.strip_prefix(h)));
    rest.and_then(|r| r.strip_prefix("/keys/"))
        .and_then(|r| r.strip_prefix(key_name))
        .and_then(|r| r.strip_prefix('/'))
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The key name in `kid` when it names a version of a key of the HSM at
/// `hsm` (`{hsm}/keys/{name}/{version}`); which keys a deployment owns is
/// the configuration's to say.
pub fn key_name_of<'a>(kid: &'a str, hsm: &str) -> Option<&'a str> {
    let hsm = hsm.trim_end_matches('/');
    let rest = kid
        .strip_prefix(hsm)
        .or_else(|| hsm.strip_suffix(":443").and_then(|h| kid.strip_prefix(h)))?;
    let (name, _) = rest.strip_prefix("/keys/")?.split_once('/')?;
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (valid && kid_belongs(kid, hsm, name)).then_some(name)
}

/// The checks of opening that come before any key is used
/// (docs/record-format.md, the end of step 1 and step 2): `id` and `pk` are
/// strings; `kid` (and `sealedKid`) name a version of the configured key;
/// every configured pointer present in the record is sealed (listed in
/// `fields`, or inside a listed field) and meets no value of another shape
/// outside a listed field; and no sealed-shaped value is left unlisted. A
/// header that lists fewer fields than the configuration protects would
/// pass plaintext off as sealed: tampered.
pub fn check_expected(doc: &Value, h: &Header, expect: &Expect<'_>) -> Result<(), EnvelopeError> {
    str_member(doc, "id")?;
    str_member(doc, "pk")?;
    for (name, kid) in [("kid", &h.kid), (SEALED_KID, &h.sealed_kid)] {
        if !kid_belongs(kid, expect.hsm, expect.key_name) {
            return Err(EnvelopeError::Tampered(format!(
                "`cmk.{name}` does not name a version of the configured key {}/keys/{}",
                expect.hsm.trim_end_matches('/'),
                expect.key_name
            )));
        }
    }
    let covered = |p: &str| {
        h.fields
            .iter()
            .any(|f| p == f || p.starts_with(&format!("{f}/")))
    };
    for pointer in expect.protected {
        let (found, mismatches) = resolve_branches(doc, pointer);
        for p in found {
            if !covered(&p) {
                return Err(EnvelopeError::Tampered(format!(
                    "{p} is protected by the configuration but not sealed"
                )));
            }
        }
        // Another shape where the configuration protects a field: the
        // writer refuses such an event, so the record did not come from it
        // (unless the value is inside a field sealed whole).
        if let Some(m) = mismatches.iter().find(|m| !covered(&m.at)) {
            return Err(EnvelopeError::Tampered(format!(
                "{} is a {} where the configuration protects {}",
                m.at, m.found, m.pointer
            )));
        }
    }
    if let Some(p) = sealed_pointers(doc)
        .into_iter()
        .find(|p| !h.fields.contains(p))
    {
        // A sealed value the header does not list: the header was edited to
        // hide it (or another record's value was pasted in). Named by its
        // event member only (`event_member`).
        return Err(EnvelopeError::Tampered(format!(
            "under {}",
            super::event_member(&p)
        )));
    }
    Ok(())
}

/// Reads and checks the header of a sealed document; `None` for a document
/// that carries none (written in the first stage).
pub fn header(doc: &Value) -> Result<Option<Header>, EnvelopeError> {
    let Some(h) = doc.get(HEADER) else {
        return Ok(None);
    };
    let h = h
        .as_object()
        .ok_or_else(|| EnvelopeError::Malformed("`cmk` is not an object".into()))?;
    // Version, cipher and wrapping first (absent counts as unknown): a
    // later version may define other header members, so a reader that
    // does not know it says unsupported, not malformed.
    if h.get("v").and_then(Value::as_u64) != Some(FORMAT_VERSION) {
        return Err(EnvelopeError::Unsupported(format!(
            "record format version {}",
            h.get("v").unwrap_or(&Value::Null)
        )));
    }
    if h.get("alg").and_then(Value::as_str) != Some(CIPHER) {
        return Err(EnvelopeError::Unsupported(format!(
            "cipher {}",
            h.get("alg").unwrap_or(&Value::Null)
        )));
    }
    if h.get("wrap").and_then(Value::as_str) != Some(WRAP_ALGORITHM) {
        return Err(EnvelopeError::Unsupported(format!(
            "key wrapping {}",
            h.get("wrap").unwrap_or(&Value::Null)
        )));
    }
    if let Some(extra) = h.keys().find(|k| !HEADER_MEMBERS.contains(&k.as_str())) {
        return Err(EnvelopeError::Malformed(format!(
            "`cmk` has a member `{extra}` the format does not define"
        )));
    }
    let field = |name: &str| {
        h.get(name)
            .ok_or_else(|| EnvelopeError::Malformed(format!("`cmk.{name}` is missing")))
    };
    let kid = field("kid")?
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| EnvelopeError::Malformed("`cmk.kid` is not a string".into()))?;
    let sealed_kid = match h.get(SEALED_KID) {
        None => kid,
        Some(v) => v.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
            EnvelopeError::Malformed(format!("`cmk.{SEALED_KID}` is not a string"))
        })?,
    };
    let fields = field("fields")?
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| EnvelopeError::Malformed("`cmk.fields` is not a list of pointers".into()))?;
    let mut seen = std::collections::HashSet::new();
    if fields.iter().any(|f| !valid_pointer(f) || !seen.insert(f)) {
        return Err(EnvelopeError::Malformed(
            "`cmk.fields` has an invalid or repeated pointer".into(),
        ));
    }
    // A header that seals nothing carries no data key (none was wrapped).
    let wrapped_dek = match (h.get("dek"), fields.is_empty()) {
        (None, true) => Vec::new(),
        (dek, _) => dek
            .and_then(Value::as_str)
            .and_then(|s| B64_READ.decode(s).ok())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| EnvelopeError::Malformed("`cmk.dek` is not base64url".into()))?,
    };
    Ok(Some(Header {
        kid: kid.to_owned(),
        sealed_kid: sealed_kid.to_owned(),
        wrapped_dek,
        fields,
    }))
}
