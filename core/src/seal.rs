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
//!   data key the HSM refuses) is counted as failed and left as it is.
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

pub use crate::rewrap::ADMIN_KEY_HEADER;

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
    rewrap::authorize_admin(admin_key, config)?;
    if config.kek.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "KeyNotConfigured",
            "sealing stored records needs the second stage: configure the key-encryption key (hsm_key_name) first",
        ));
    }
    rewrap::parse(query, admin_key, config)
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
    let writes = ingest::Writes {
        documents: vec![Document {
            id: at.id.clone(),
            partition_key: at.partition_key.clone(),
            body,
        }],
        units: Vec::new(),
    };
    let mut sealed = ingest::seal(writes, &kek.protected, key, nonce, config, credential, now)
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
            "{p} holds a sealed value its header does not list (the header was removed or edited)"
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
mod tests {
    use super::*;

    const KEY: &str = "admin-key-0123456789";
    const KID: &str = "https://contoso.managedhsm.azure.net/keys/app-kek/v2";

    fn config_with(kek: bool, protected: &str) -> Config {
        Config::load(|name| {
            Ok(match name {
                "cosmos_endpoint" => Some("http://127.0.0.1:8081".into()),
                "cosmos_database" => Some("db".into()),
                "cosmos_container" => Some("events".into()),
                "cosmos_key" => Some("c2VjcmV0".into()),
                "admin_keys" => Some(KEY.into()),
                "protected_fields" => Some(protected.into()),
                "hsm_key_name" if kek => Some("app-kek".into()),
                "cmk_stage" => Some(if kek { "2" } else { "1" }.into()),
                "hsm_endpoint" => Some("https://contoso.managedhsm.azure.net".into()),
                "identity" => Some("client-secret".into()),
                "azure_tenant_id" => Some("t".into()),
                "azure_client_id" => Some("c".into()),
                "azure_client_secret" => Some("s".into()),
                _ => None,
            })
        })
        .unwrap()
    }

    fn config() -> Config {
        config_with(
            true,
            r#"{"Visit": ["/data/patient", "/subject"], "*": ["/data"]}"#,
        )
    }

    fn cred(c: &Config) -> Credential {
        c.cosmos.auth.static_credential().unwrap().clone()
    }

    /// A record as stored in the first stage (system properties included).
    fn stage_one(n: u32, ty: &str) -> Value {
        json!({"id": format!("id-{n}"), "pk": format!("/topics/{}", n % 3), "v": 1, "encoding": "structured",
               "event": {"specversion": "1.0", "id": format!("e{n}"), "source": format!("/topics/{}", n % 3),
                         "type": ty, "subject": format!("subject {n}"),
                         "data": {"patient": format!("Patient {n}"), "bed": n}},
               "_rid": "r", "_self": "s", "_etag": format!("\"etag-{n}\""), "_ts": 1, "_attachments": "a/"})
    }

    fn counter() -> impl FnMut() -> [u8; 12] {
        let mut i = 0u32;
        move || {
            i += 1;
            let mut n = [0u8; 12];
            n[..4].copy_from_slice(&i.to_be_bytes());
            n
        }
    }

    fn page_dek() -> Dek {
        Dek::from_bytes(&[5u8; 32]).unwrap()
    }

    fn sealed_page(items: &[Value], c: &Config, opened: &OpenedKeys) -> Vec<Step> {
        let plans = plan_page(items, c, &cred(c), UnixTime(0));
        let dek = page_dek();
        let key = DeliveryKey {
            dek: &dek,
            kid: KID,
            wrapped_dek: b"page-wrapped",
        };
        seal_page(
            items,
            plans,
            &key,
            opened,
            &mut counter(),
            c,
            &cred(c),
            UnixTime(0),
        )
    }

    fn replaced(step: &Step) -> &Value {
        match step {
            Step::Replace { body, .. } => body,
            other => panic!("not a replace: {other:?}"),
        }
    }

    #[test]
    fn callers_need_the_admin_key_and_the_second_stage() {
        let c = config();
        assert_eq!(parse("", None, &c).unwrap_err().status, 401);
        assert_eq!(
            parse("", Some("other-key-0123456789"), &c)
                .unwrap_err()
                .status,
            403
        );
        let off = config_with(false, r#"{"*": ["/data"]}"#);
        let e = parse("", Some(KEY), &off).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (409, "KeyNotConfigured"));
        assert!(e.message.contains("second stage"));
        assert_eq!(
            parse("limit=7&continuation=%2BRID%3Ax", Some(KEY), &c).unwrap(),
            SealRequest {
                limit: 7,
                continuation: Some("+RID:x".into())
            }
        );
        for q in ["limit=0", "limit=101", "x=1"] {
            assert_eq!(parse(q, Some(KEY), &c).unwrap_err().status, 400, "{q}");
        }
    }

    #[test]
    fn the_query_reads_every_record_across_partitions() {
        let c = config();
        let call = SealRequest {
            limit: 9,
            continuation: Some("tok".into()),
        };
        let req = query_request(&call, &c, &cred(&c), UnixTime(0)).unwrap();
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(body["query"], "SELECT * FROM c");
        let h = req.headers();
        assert_eq!(h["x-ms-documentdb-query-enablecrosspartition"], "True");
        assert_eq!(h["x-ms-max-item-count"], "9");
        assert_eq!(h["x-ms-continuation"], "tok");
    }

    #[test]
    fn stage_one_records_are_sealed_as_the_write_path_seals_them() {
        let c = config();
        let items = vec![stage_one(1, "Visit"), stage_one(2, "Other")];
        let plans = plan_page(&items, &c, &cred(&c), UnixTime(0));
        assert!(
            matches!(&plans[0], Plan::Seal(at) if at.etag == "\"etag-1\"" && at.partition_key == "/topics/1")
        );
        assert!(needs_data_key(&plans));
        assert!(data_keys_to_open(&plans).is_empty());
        let steps = sealed_page(&items, &c, &OpenedKeys::default());
        let visit = replaced(&steps[0]);
        assert_eq!(
            visit["cmk"]["fields"],
            json!(["/event/data/patient", "/event/subject"])
        );
        assert_eq!(visit["cmk"]["kid"], KID);
        assert_eq!(visit["event"]["data"]["bed"], 1, "unprotected fields stay");
        assert!(!visit.to_string().contains("subject 1"));
        let other = replaced(&steps[1]);
        assert_eq!(
            other["event"]["subject"], "subject 2",
            "not protected for this type"
        );
        assert_eq!(other["cmk"]["fields"], json!(["/event/data"]));
        for (doc, orig) in [visit, other].into_iter().zip(&items) {
            let text = doc.to_string();
            assert!(!text.contains("Patient"), "{text}");
            assert!(doc.as_object().unwrap().keys().all(|k| !k.starts_with('_')));
            // Opens to exactly what was stored before, system properties aside.
            assert_eq!(
                envelope::open(doc, &page_dek(), None).unwrap(),
                content(orig)
            );
        }
        // The same as a delivery of these documents would have stored.
        let dek = page_dek();
        let key = DeliveryKey {
            dek: &dek,
            kid: KID,
            wrapped_dek: b"page-wrapped",
        };
        let at = rewrap::locate(&items[0]).unwrap();
        let direct = seal_as_written(
            content(&items[0]),
            &at,
            &key,
            &mut counter(),
            &c,
            &cred(&c),
            UnixTime(0),
        )
        .unwrap();
        assert_eq!(&direct, visit);
    }

    #[test]
    fn a_record_with_none_of_the_fields_still_gets_a_header() {
        let c = config();
        let mut d = stage_one(3, "Visit");
        d["event"].as_object_mut().unwrap().remove("subject");
        d["event"]["data"]
            .as_object_mut()
            .unwrap()
            .remove("patient");
        let steps = sealed_page(&[d.clone()], &c, &OpenedKeys::default());
        let body = replaced(&steps[0]);
        assert_eq!(body["cmk"]["fields"], json!([]));
        assert_eq!(body["event"], d["event"]);
    }

    #[test]
    fn sealed_records_are_left_alone_so_a_second_pass_seals_nothing() {
        let c = config();
        let items = vec![stage_one(1, "Visit"), stage_one(2, "Other")];
        let steps = sealed_page(&items, &c, &OpenedKeys::default());
        let stored: Vec<Value> = steps
            .iter()
            .map(|s| {
                let mut d = replaced(s).clone();
                d["_etag"] = json!("\"new\"");
                d
            })
            .collect();
        let plans = plan_page(&stored, &c, &cred(&c), UnixTime(0));
        assert_eq!(plans, vec![Plan::AlreadySealed, Plan::AlreadySealed]);
        assert!(!needs_data_key(&plans));
        let again = sealed_page(&stored, &c, &OpenedKeys::default());
        assert!(again
            .iter()
            .all(|s| *s == Step::Settled(Outcome::AlreadySealed)));
    }

    #[test]
    fn a_header_missing_a_configured_field_is_opened_and_sealed_again() {
        // Sealed while only /data/patient was protected; now /subject is too.
        let narrow = config_with(true, r#"{"*": ["/data/patient"]}"#);
        let old =
            replaced(&sealed_page(&[stage_one(4, "Visit")], &narrow, &OpenedKeys::default())[0])
                .clone();
        let mut stored = old.clone();
        stored["_etag"] = json!("\"etag-4b\"");
        let c = config();
        let plans = plan_page(&[stored.clone()], &c, &cred(&c), UnixTime(0));
        let Plan::Reseal(at, h) = &plans[0] else {
            panic!("{plans:?}")
        };
        assert_eq!(at.etag, "\"etag-4b\"");
        assert_eq!(
            data_keys_to_open(&plans),
            vec![(h.kid.clone(), h.wrapped_dek.clone())]
        );
        // Without its data key the record fails and is left as it is.
        let steps = sealed_page(&[stored.clone()], &c, &OpenedKeys::default());
        assert!(
            matches!(&steps[0], Step::Settled(Outcome::Failed { id: Some(i), .. }) if i == "id-4")
        );
        let mut opened = OpenedKeys::default();
        opened.add(h.kid.clone(), h.wrapped_dek.clone(), Ok(page_dek()));
        let new_dek = Dek::from_bytes(&[6u8; 32]).unwrap();
        let key = DeliveryKey {
            dek: &new_dek,
            kid: "https://contoso.managedhsm.azure.net/keys/app-kek/v3",
            wrapped_dek: b"new-page",
        };
        let steps = seal_page(
            &[stored.clone()],
            plans,
            &key,
            &opened,
            &mut counter(),
            &c,
            &cred(&c),
            UnixTime(0),
        );
        let Step::Replace {
            body,
            resealed: true,
            ..
        } = &steps[0]
        else {
            panic!("{steps:?}")
        };
        assert_eq!(
            body["cmk"]["fields"],
            json!(["/event/data/patient", "/event/subject"])
        );
        assert!(!body.to_string().contains("subject 4"));
        assert_eq!(
            envelope::open(body, &new_dek, None).unwrap(),
            content(&stage_one(4, "Visit"))
        );
    }

    #[test]
    fn fields_sealed_before_stay_sealed_when_the_configuration_narrows_or_nests() {
        // Sealed whole under `*: /data`; now only /data/patient and /subject.
        let wide = config_with(true, r#"{"*": ["/data"]}"#);
        let mut stored =
            replaced(&sealed_page(&[stage_one(5, "Visit")], &wide, &OpenedKeys::default())[0])
                .clone();
        stored["_etag"] = json!("\"e\"");
        let c = config();
        let plans = plan_page(&[stored.clone()], &c, &cred(&c), UnixTime(0));
        let Plan::Reseal(_, h) = &plans[0] else {
            panic!("/subject is new: {plans:?}")
        };
        let mut opened = OpenedKeys::default();
        opened.add(h.kid.clone(), h.wrapped_dek.clone(), Ok(page_dek()));
        let steps = seal_page(
            &[stored],
            plans,
            &DeliveryKey {
                dek: &page_dek(),
                kid: KID,
                wrapped_dek: b"w",
            },
            &opened,
            &mut counter(),
            &c,
            &cred(&c),
            UnixTime(0),
        );
        let body = replaced(&steps[0]);
        // /event/data/patient lies inside /event/data, which stays sealed whole.
        assert_eq!(
            body["cmk"]["fields"],
            json!(["/event/data", "/event/subject"])
        );
        assert!(!body.to_string().contains("Patient"));
        // A header covering more than is configured is already sealed.
        let only_patient = config_with(true, r#"{"*": ["/data/patient"]}"#);
        let mut s = body.clone();
        s["_etag"] = json!("\"f\"");
        assert_eq!(
            plan(&s, &only_patient, &cred(&only_patient), UnixTime(0)),
            Plan::AlreadySealed
        );
    }

    #[test]
    fn damaged_records_fail_and_are_left_as_they_are() {
        let c = config();
        let sealed =
            replaced(&sealed_page(&[stage_one(6, "Visit")], &c, &OpenedKeys::default())[0]).clone();
        let mut no_header = sealed.clone();
        no_header.as_object_mut().unwrap().remove("cmk");
        no_header["_etag"] = json!("\"e\"");
        let mut unlisted = sealed.clone();
        unlisted["cmk"]["fields"] = json!(["/event/subject"]);
        unlisted["_etag"] = json!("\"e\"");
        let mut bad_version = sealed.clone();
        bad_version["cmk"]["v"] = json!(9);
        bad_version["_etag"] = json!("\"e\"");
        let mut no_etag = stage_one(7, "Visit");
        no_etag.as_object_mut().unwrap().remove("_etag");
        for (name, d) in [
            ("no header", no_header),
            ("unlisted", unlisted),
            ("version", bad_version),
            ("no etag", no_etag),
        ] {
            let steps = sealed_page(&[d], &c, &OpenedKeys::default());
            let Step::Settled(Outcome::Failed { reason, .. }) = &steps[0] else {
                panic!("{name}: {steps:?}")
            };
            assert!(!reason.contains("Patient"), "{name}: {reason}");
        }
    }

    #[test]
    fn replaces_are_conditional_and_outcomes_add_up() {
        let c = config();
        let steps = sealed_page(&[stage_one(8, "Visit")], &c, &OpenedKeys::default());
        let Step::Replace { at, body, .. } = &steps[0] else {
            panic!()
        };
        let req = replace_request(at, body, &c, &cred(&c), UnixTime(0)).unwrap();
        assert_eq!(req.method(), http::Method::PUT);
        assert_eq!(req.headers()["if-match"], "\"etag-8\"");
        assert_eq!(
            req.headers()["x-ms-documentdb-partitionkey"],
            "[\"/topics/2\"]"
        );
        let answer = |status: u16| {
            Ok(Response::builder()
                .status(status)
                .body(br#"{"code":"X","message":"m"}"#.to_vec())
                .unwrap())
        };
        let ok = Response::builder()
            .status(200)
            .header("etag", "\"e2\"")
            .body(br#"{"id":"a"}"#.to_vec())
            .unwrap();
        assert_eq!(
            replace_outcome(Ok(ok), true, "a").unwrap(),
            Outcome::Sealed { resealed: true }
        );
        assert_eq!(
            replace_outcome(answer(412), false, "a").unwrap(),
            Outcome::Conflict
        );
        assert_eq!(
            replace_outcome(answer(404), false, "a").unwrap(),
            Outcome::Conflict
        );
        assert_eq!(
            replace_outcome(answer(503), false, "a").unwrap_err().status,
            503
        );
        let mut r = Report::default();
        for o in [
            Outcome::Sealed { resealed: false },
            Outcome::Sealed { resealed: true },
            Outcome::AlreadySealed,
            Outcome::Conflict,
            Outcome::Failed {
                id: Some("b".into()),
                reason: "bad".into(),
            },
        ] {
            r.add(o);
        }
        let v: Value =
            serde_json::from_slice(r.render(Some(KID), Some("c".into())).body()).unwrap();
        assert_eq!(
            v,
            json!({"kid": KID, "scanned": 5, "sealed": 2, "resealed": 1, "alreadySealed": 1,
                   "conflicts": 1, "failed": 1, "failedDocuments": [{"id": "b", "reason": "bad"}],
                   "continuation": "c"})
        );
    }
}
