//! `POST /admin/seal`: after the switch to the second stage, seals the
//! protected fields that records written before it still hold in plaintext.
//!
//! Each call reads one page of the container (every record, across
//! partitions; at most `limit`), and [`plan_page`] sorts each record:
//!
//! - no `cmk` header (written in the first stage): sealed as the write path
//!   seals a new delivery — the fields `protected_fields` assigns to its
//!   type, under the page's one fresh data key wrapped by the latest version
//!   of the configured key, with a header even when none of those fields is
//!   present (so the second stage reads it without `read_accept_unsealed`);
//! - a header that does not cover a configured field present in plaintext
//!   (sealed while `protected_fields` listed fewer fields): opened with its
//!   own data key and sealed again under the page's key, the fields it had
//!   sealed staying sealed;
//! - everything else is already sealed; a record that cannot be read as the
//!   format requires (a malformed header, sealed values without a header, a
//!   data key the HSM refuses), or nested deeper than the component parses
//!   (127 levels), is counted as failed and left as it is.
//!
//! [`seal_page`] builds the new form of each record to seal; each is
//! written back with `If-Match` on the etag it was read with, so a record
//! changed meanwhile is counted as a conflict, not overwritten (the next
//! pass sees it again). The answer carries the store's continuation; calls
//! are repeated with it until it is `null`. A pass is idempotent: sealed
//! records are not changed again, so a second pass seals nothing.
//!
//! Which fields a record's type protects, and how a pointer resolves in a
//! record, is decided by the write path's own sealing ([`ingest::seal`]),
//! never by a copy of its rules here.
//!
//! This module is pure: `maintenance` does the I/O.

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::api::{json_response, ApiError};
use crate::config::Config;
use crate::cosmos::{CosmosError, CosmosRequest, Credential, Query};
use crate::document::Document;
use crate::envelope::{self, Dek, Header};
use crate::ingest::{self, DeliveryKey};
use crate::rewrap::{self, Located};
use crate::time::UnixTime;

/// Most failed records listed in one answer (all are counted).
const MAX_LISTED: usize = 20;

/// One call's parameters (the same `limit` and `continuation` as rewrap).
pub type SealRequest = rewrap::RewrapRequest;

/// Checks the admin key, that the second stage is on, and parses
/// `?limit=&continuation=`.
pub fn parse(
    query: &str,
    admin_key: Option<&str>,
    config: &Config,
) -> Result<SealRequest, ApiError> {
    crate::access::authorize_admin(admin_key, config.admin.keys.as_ref())?;
    if config.kek.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "KeyNotConfigured",
            "sealing stored records needs the second stage: configure the key-encryption key (hsm_key_name) first",
        ));
    }
    if config.kek.as_ref().is_some_and(|k| k.scopes.is_some()) {
        // Which scope a plaintext record belongs to is not decided here:
        // sealing it under `hsm_key_name` would put it outside its
        // scope's erasure.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "KeyScopesUnsupported",
            "sealing stored records is not available with key scopes (key_scope_pointer); see docs/keys-and-identity.md",
        ));
    }
    let call = rewrap::parse(query, admin_key, config)?;
    if call.key.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "unknown query parameter `key`",
        ));
    }
    Ok(call)
}

/// The query for one page of every record, across partitions.
pub fn query_request(
    call: &SealRequest,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, ApiError> {
    CosmosRequest::new(&config.cosmos.endpoint, credential, now)
        .query_documents(
            &config.cosmos.container,
            &Query::new("SELECT * FROM c"),
            None,
            call.limit,
            call.continuation.as_deref(),
        )
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()))
}

/// What to do with one stored record.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Every configured field present is sealed: nothing to do.
    AlreadySealed,
    /// No header: seal it as a new delivery would be.
    Seal(Located),
    /// A header that misses configured fields: open with the data key
    /// `header` names, then seal again.
    Reseal(Located, Header),
    /// Cannot be sealed; left as it is.
    Failed {
        /// Document id, when it has one.
        id: Option<String>,
        /// Why, without plaintext or key material.
        reason: String,
    },
}

/// The record without system properties (`_rid`, `_etag`, …) and without
/// the envelope header.
fn content(doc: &Value) -> Value {
    let mut body = doc.clone();
    if let Some(m) = body.as_object_mut() {
        m.retain(|k, _| !k.starts_with('_') && k != envelope::HEADER);
    }
    body
}

/// Seals `body` exactly as the write path seals a delivery's document.
fn seal_as_written(
    body: Value,
    at: &Located,
    key: &DeliveryKey<'_>,
    nonce: &mut dyn FnMut() -> [u8; 12],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Value, String> {
    let kek = config.kek.as_ref().ok_or("the second stage is off")?;
    let documents = vec![Document {
        id: at.id.clone(),
        partition_key: at.partition_key.clone(),
        body,
    }];
    let mut sealed = ingest::seal(
        documents,
        &kek.protected,
        key,
        nonce,
        config,
        credential,
        now,
    )
    .map_err(|e| e.message)?;
    Ok(sealed
        .documents
        .pop()
        .expect("one document in, one out")
        .body)
}

/// The pointers the write path would seal in `body` (a record without a
/// header), learnt by sealing a copy under a throwaway key that is never
/// stored.
fn configured_pointers(
    body: &Value,
    at: &Located,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Vec<String>, String> {
    let dek = Dek::from_bytes(&[0u8; 32]).expect("32 bytes");
    let key = DeliveryKey {
        dek: &dek,
        kid: "trial",
        wrapped_dek: b"trial",
    };
    let trial = seal_as_written(
        body.clone(),
        at,
        &key,
        &mut || [0u8; 12],
        config,
        credential,
        now,
    )?;
    Ok(envelope::header(&trial)
        .map_err(|e| e.to_string())?
        .map(|h| h.fields)
        .unwrap_or_default())
}

/// Whether `pointer` is `sealed` or lies inside it.
fn covered_by(pointer: &str, sealed: &str) -> bool {
    pointer == sealed
        || pointer
            .strip_prefix(sealed)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Decides what to do with one stored record.
pub fn plan(doc: &Value, config: &Config, credential: &Credential, now: UnixTime) -> Plan {
    let id = doc.get("id").and_then(Value::as_str).map(str::to_owned);
    let failed = |reason: String| Plan::Failed {
        id: id.clone(),
        reason,
    };
    let Some(at) = rewrap::locate(doc) else {
        return failed("not a record with id, pk and _etag".into());
    };
    let header = match envelope::header(doc) {
        Ok(h) => h,
        Err(e) => return failed(e.to_string()),
    };
    let listed: &[String] = header.as_ref().map_or(&[], |h| &h.fields);
    if let Some(p) = envelope::sealed_pointers(doc)
        .into_iter()
        .find(|p| !listed.contains(p))
    {
        return failed(format!(
            "a sealed value under {} is not listed in its header (the header was removed or edited)",
            envelope::event_member(&p)
        ));
    }
    let Some(h) = header else {
        return Plan::Seal(at);
    };
    match configured_pointers(&content(doc), &at, config, credential, now) {
        Err(reason) => failed(reason),
        Ok(wanted) => {
            if wanted
                .iter()
                .all(|p| h.fields.iter().any(|f| covered_by(p, f)))
            {
                Plan::AlreadySealed
            } else {
                Plan::Reseal(at, h)
            }
        }
    }
}

/// [`plan`] for each record of a page, in order.
pub fn plan_page(
    items: &[Value],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Vec<Plan> {
    items
        .iter()
        .map(|d| plan(d, config, credential, now))
        .collect()
}

/// Whether any record of the page needs the page's fresh data key.
pub fn needs_data_key(plans: &[Plan]) -> bool {
    plans
        .iter()
        .any(|p| matches!(p, Plan::Seal(_) | Plan::Reseal(..)))
}

/// The distinct stored data keys (key id, wrapped bytes) the page's
/// reseals need unwrapped.
pub fn data_keys_to_open(plans: &[Plan]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for p in plans {
        if let Plan::Reseal(_, h) = p {
            if !out.iter().any(|(k, w)| *k == h.kid && *w == h.wrapped_dek) {
                out.push((h.kid.clone(), h.wrapped_dek.clone()));
            }
        }
    }
    out
}

/// Stored data keys, unwrapped (or why not), for reseals.
#[derive(Debug, Default)]
pub struct OpenedKeys(Vec<(String, Vec<u8>, Result<Dek, String>)>);

impl OpenedKeys {
    /// Adds the outcome of unwrapping `wrapped` with `kid`.
    pub fn add(&mut self, kid: String, wrapped: Vec<u8>, dek: Result<Dek, String>) {
        self.0.push((kid, wrapped, dek));
    }

    fn get(&self, h: &Header) -> Result<&Dek, String> {
        match self
            .0
            .iter()
            .find(|(k, w, _)| *k == h.kid && *w == h.wrapped_dek)
        {
            Some((_, _, Ok(d))) => Ok(d),
            Some((_, _, Err(reason))) => Err(reason.clone()),
            None => Err("its data key was not unwrapped".into()),
        }
    }
}

/// What to do with one record once the page is sealed.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Replace the record (conditionally on `at.etag`) with `body`.
    Replace {
        /// Where, and the etag it was read with.
        at: Located,
        /// The sealed record.
        body: Value,
        /// Whether it had a header before (a reseal).
        resealed: bool,
    },
    /// Nothing to write.
    Settled(Outcome),
}

/// Seals every record the page's plans select, under the page's one data
/// key. `opened` holds the unwrapped data keys of the reseals (see
/// [`data_keys_to_open`]); `nonce` yields a fresh random nonce per value.
#[allow(clippy::too_many_arguments)]
pub fn seal_page(
    items: &[Value],
    plans: Vec<Plan>,
    key: &DeliveryKey<'_>,
    opened: &OpenedKeys,
    nonce: &mut dyn FnMut() -> [u8; 12],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Vec<Step> {
    items
        .iter()
        .zip(plans)
        .map(|(doc, plan)| {
            let failed = |at: &Located, reason: String| {
                Step::Settled(Outcome::Failed {
                    id: Some(at.id.clone()),
                    reason,
                })
            };
            match plan {
                Plan::AlreadySealed => Step::Settled(Outcome::AlreadySealed),
                Plan::Failed { id, reason } => Step::Settled(Outcome::Failed { id, reason }),
                Plan::Seal(at) => {
                    match seal_as_written(content(doc), &at, key, nonce, config, credential, now) {
                        Ok(body) => Step::Replace {
                            at,
                            body,
                            resealed: false,
                        },
                        Err(reason) => failed(&at, reason),
                    }
                }
                Plan::Reseal(at, h) => {
                    match reseal(doc, &at, &h, key, opened, nonce, config, credential, now) {
                        Ok(body) => Step::Replace {
                            at,
                            body,
                            resealed: true,
                        },
                        Err(reason) => failed(&at, reason),
                    }
                }
            }
        })
        .collect()
}

/// Opens a record with its own data key and seals it again under the
/// page's: the fields the write path seals now, and every field it had
/// sealed (nothing sealed ever returns to plaintext); a field inside another
/// sealed one is sealed with it.
#[allow(clippy::too_many_arguments)]
fn reseal(
    doc: &Value,
    at: &Located,
    h: &Header,
    key: &DeliveryKey<'_>,
    opened: &OpenedKeys,
    nonce: &mut dyn FnMut() -> [u8; 12],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Value, String> {
    let old = opened.get(h)?;
    let clear = envelope::open(doc, old, None).map_err(|e| e.to_string())?;
    let clear = content(&clear);
    let wanted = configured_pointers(&clear, at, config, credential, now)?;
    let mut all: Vec<String> = h.fields.clone();
    all.extend(wanted.into_iter().filter(|p| !h.fields.contains(p)));
    let outermost: Vec<String> = all
        .iter()
        .filter(|p| !all.iter().any(|q| q != *p && covered_by(p, q)))
        .cloned()
        .collect();
    let mut body = clear;
    envelope::seal(
        &mut body,
        &outermost,
        key.dek,
        key.kid,
        key.wrapped_dek,
        nonce,
    )
    .map_err(|e| e.to_string())?;
    Ok(body)
}

/// The conditional replace of a sealed record.
pub fn replace_request(
    at: &Located,
    body: &Value,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, CosmosError> {
    rewrap::replace_request(at, body, config, credential, now)
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Replaced by its sealed form.
    Sealed {
        /// Whether it had a header before (a reseal).
        resealed: bool,
    },
    /// Nothing was left in plaintext.
    AlreadySealed,
    /// Changed or deleted since it was read: left for the next pass.
    Conflict,
    /// Cannot be sealed; left as it is.
    Failed {
        /// Document id, when it has one.
        id: Option<String>,
        /// Why, without plaintext or key material.
        reason: String,
    },
}

/// Classifies the answer to a conditional replace. `Err` only for failures
/// that should stop the call (transient or authorization trouble).
pub fn replace_outcome(
    resp: Result<Response<Vec<u8>>, CosmosError>,
    resealed: bool,
    id: &str,
) -> Result<Outcome, ApiError> {
    Ok(match rewrap::replace_outcome(resp)? {
        rewrap::Outcome::Rewrapped => Outcome::Sealed { resealed },
        rewrap::Outcome::Conflict => Outcome::Conflict,
        rewrap::Outcome::Refused { reason, .. } => Outcome::Failed {
            id: Some(id.to_owned()),
            reason,
        },
    })
}

/// The tally of one call: `scanned` = `sealed` + `alreadySealed` +
/// `conflicts` + `failed`; `resealed` counts the sealed records that had a
/// header already.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Records looked at.
    pub scanned: usize,
    /// Replaced by their sealed form.
    pub sealed: usize,
    /// Of those, records that had a header missing configured fields.
    pub resealed: usize,
    /// Nothing in plaintext to seal.
    pub already_sealed: usize,
    /// Changed or gone since read (picked up by the next pass).
    pub conflicts: usize,
    /// Failed records (count, and the first few with reasons).
    pub failed: Vec<(Option<String>, String)>,
}

impl Report {
    /// Adds one record's outcome.
    pub fn add(&mut self, outcome: Outcome) {
        self.scanned += 1;
        match outcome {
            Outcome::Sealed { resealed } => {
                self.sealed += 1;
                self.resealed += usize::from(resealed);
            }
            Outcome::AlreadySealed => self.already_sealed += 1,
            Outcome::Conflict => self.conflicts += 1,
            Outcome::Failed { id, reason } => self.failed.push((id, reason)),
        }
    }

    /// The caller's answer; `kid` is the key version the page's data key
    /// was wrapped with (`None` when nothing needed sealing).
    pub fn render(&self, kid: Option<&str>, continuation: Option<String>) -> Response<Vec<u8>> {
        let listed: Vec<Value> = self
            .failed
            .iter()
            .take(MAX_LISTED)
            .map(|(id, reason)| json!({"id": id, "reason": reason}))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "kid": kid,
                "scanned": self.scanned,
                "sealed": self.sealed,
                "resealed": self.resealed,
                "alreadySealed": self.already_sealed,
                "conflicts": self.conflicts,
                "failed": self.failed.len(),
                "failedDocuments": listed,
                "continuation": continuation,
            }),
        )
    }
}

#[cfg(test)]
mod tests;
