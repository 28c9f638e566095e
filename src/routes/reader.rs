//! Reading and erasing records at the edge: `GET /records/...` (opening
//! protected fields through the HSM, failing whole) and `DELETE /records/...`.

use http::{Response, StatusCode};
use serde_json::json;
use spin_sdk::http::IncomingRequest;

use crate::host::account::Account;
use crate::host::kek;
use crate::host::log;
use crate::host::request::{header, load_config};
use cmk_core::api::ApiError;
use cmk_core::config::Config;
use cmk_core::envelope::{self, Dek};
use cmk_core::records;
use cmk_core::time::UnixTime;

pub(crate) async fn get_records(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let path = req.path_with_query().unwrap_or_default();
    let read = records::parse(
        &path,
        header(&req, cmk_core::access::READ_KEY_HEADER).as_deref(),
        &config,
    )?;
    let only = records::fields(&path)?;
    let account = Account::new(&config.cosmos, config.kv_key.as_ref());
    let credential = account.credential().await?;
    let sent = account
        .send(records::request(
            &read,
            &config,
            &credential,
            UnixTime::now(),
        )?)
        .await;
    // The service's charge and activity id, from the answer itself (a
    // failed read is charged too).
    let metrics = sent
        .result
        .as_ref()
        .ok()
        .map(cmk_core::cosmos::Metrics::from_response)
        .unwrap_or_default();
    let answer = match records::parse_answer(&read, sent.result) {
        Ok(mut a) => open_protected(&config, &mut a, only.as_deref())
            .await
            .map(|()| {
                // Every record of a page left out: not parsed from the
                // store's answer, or not opened.
                if let records::Answer::Page(_, _, unreadable) = &a {
                    for u in unreadable {
                        log::emit(
                            "warn",
                            "record_unreadable",
                            &[("id", u.id.clone()), ("code", json!(u.code))],
                        );
                    }
                }
                records::render(a)
            }),
        Err(e) => Err(e),
    };
    log::emit(
        "info",
        "records_read",
        &[
            (
                "kind",
                json!(if matches!(read, records::ReadRequest::One { .. }) {
                    "one"
                } else {
                    "page"
                }),
            ),
            (
                "status",
                json!(answer
                    .as_ref()
                    .map(|r| r.status().as_u16())
                    .unwrap_or_else(|e| e.status.as_u16())),
            ),
            ("attempts", json!(sent.attempts)),
            ("duration_ms", json!(sent.duration_ms)),
            ("request_charge", json!(metrics.request_charge)),
            ("activity_id", json!(metrics.activity_id)),
        ],
    );
    answer
}

/// `DELETE /records/{partitionKey}/{id}` (admin key): erases one record,
/// with the caller's `If-Match` passed through.
pub(crate) async fn delete_record(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let del = records::parse_delete_request(
        &req.path_with_query().unwrap_or_default(),
        header(&req, cmk_core::access::ADMIN_KEY_HEADER).as_deref(),
        header(&req, "if-match").as_deref(),
        &config,
    )?;
    let account = Account::new(&config.cosmos, config.kv_key.as_ref());
    let credential = account.credential().await?;
    let sent = account
        .send(records::delete_request(
            &del,
            &config,
            &credential,
            UnixTime::now(),
        )?)
        .await;
    let (attempts, duration_ms) = (sent.attempts, sent.duration_ms);
    let answer = records::delete_answer(sent.result, attempts);
    let mut fields = vec![
        (
            "status",
            json!(answer
                .as_ref()
                .map(|(r, _)| r.status().as_u16())
                .unwrap_or_else(|e| e.status.as_u16())),
        ),
        ("conditional", json!(del.if_match.is_some())),
        ("attempts", json!(attempts)),
        ("duration_ms", json!(duration_ms)),
    ];
    if let Ok((_, m)) = &answer {
        fields.push(("request_charge", json!(m.request_charge)));
        fields.push(("activity_id", json!(m.activity_id)));
    }
    log::emit("info", "record_deleted", &fields);
    answer.map(|(r, _)| r)
}

/// The data keys opened for one request, and the key versions found
/// refused (with key scopes, a page may hold records of several keys).
#[derive(Default)]
struct Opened {
    keys: Vec<(String, Vec<u8>, Dek)>,
    refused: Vec<(String, ApiError)>,
}

impl Opened {
    /// Whether the key version `doc` names was found refusing: disabled,
    /// expired, deleted, access removed (the HSM's `KeyUnavailable`), as
    /// opposed to a record's fault or a passing failure.
    fn refuses(&self, doc: &serde_json::Value) -> bool {
        doc["cmk"]["kid"]
            .as_str()
            .is_some_and(|kid| self.refused.iter().any(|(k, _)| k == kid))
    }
}

/// Opens sealed documents in place: one unwrap per distinct wrapped data key
/// (a delivery's documents share one per key), none when `only` asks for no
/// sealed field. A caller never gets part of a record's plaintext: one
/// record fails whole. On a page, a record that cannot be read (422) is
/// taken out and reported with its id and reason, so one bad record does
/// not hide its neighbours; with key scopes, so is a record whose key
/// refuses (its scope's key disabled, deleted, access removed: that scope's
/// records only), and a record whose key is no longer configured (503
/// `KeyNotConfigured`, with or without key scopes). Service failures (503, 502), and a refusing key without
/// key scopes, still fail the page.
async fn open_protected(
    config: &Config,
    answer: &mut records::Answer,
    only: Option<&[String]>,
) -> Result<(), ApiError> {
    let mut opened = Opened::default();
    let scoped = config.kek.as_ref().is_some_and(|k| k.scopes.is_some());
    match answer {
        records::Answer::One(doc, _) => open_one(config, doc, only, &mut opened).await,
        records::Answer::Page(docs, _, unreadable) => {
            let mut kept = Vec::with_capacity(docs.len());
            for mut doc in std::mem::take(docs) {
                match open_one(config, &mut doc, only, &mut opened).await {
                    Ok(()) => kept.push(doc),
                    Err(e)
                        if e.status == StatusCode::UNPROCESSABLE_ENTITY
                            || ((scoped || e.code == "KeyNotConfigured")
                                && opened.refuses(&doc)) =>
                    {
                        unreadable.push(records::Unreadable {
                            id: doc.get("id").cloned().unwrap_or_default(),
                            code: e.code,
                            message: e.message,
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            *docs = kept;
            Ok(())
        }
    }
}

/// Opens one document in place (see [`open_protected`]).
async fn open_one(
    config: &Config,
    doc: &mut serde_json::Value,
    only: Option<&[String]>,
    opened: &mut Opened,
) -> Result<(), ApiError> {
    let Some(h) = envelope::header(doc).map_err(envelope_error)? else {
        return check_unsealed(config, doc);
    };
    let kek_cfg = config.kek.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "KeyNotConfigured",
            "the record is sealed and no key-encryption key is configured",
        )
        .retry_after(cmk_core::api::KEY_RETRY_AFTER_SECS)
    })?;
    // A key of this HSM that the configuration no longer names (its scope
    // was taken out, e.g. while it is being erased): not a forged record,
    // and not readable here; remembered like a refusing key.
    if let Some(e) = unconfigured_key(kek_cfg, &h.kid) {
        opened.refused.push((h.kid.clone(), e.clone()));
        return Err(e);
    }
    // Before anything is unwrapped or returned: the header names a
    // configured key, and lists every field the configuration protects.
    check_expected(kek_cfg, doc, &h).map_err(envelope_error)?;
    if !envelope::needs_key(&h, only) {
        *doc = envelope::open_with(doc, None, only).map_err(envelope_error)?;
        return Ok(());
    }
    let idx = match opened
        .keys
        .iter()
        .position(|(kid, w, _)| *kid == h.kid && *w == h.wrapped_dek)
    {
        Some(i) => i,
        None => {
            // A refusal is remembered per key version: one version may be
            // expired while the key's others are not.
            if let Some((_, e)) = opened.refused.iter().find(|(kid, _)| *kid == h.kid) {
                return Err(e.clone());
            }
            let name = key_of_record(kek_cfg, &h.kid);
            let kek = kek::Kek::named(kek_cfg, &name, config.cosmos.retry, config.kv_key.as_ref());
            let raw = match kek.unwrap(&h.kid, &h.wrapped_dek).await {
                Ok(raw) => zeroize::Zeroizing::new(raw),
                Err(e) => {
                    // Remembered for the version: the key refusing it, or
                    // the key not having it (each such record is at fault).
                    let refusal = matches!(
                        e,
                        kek::KekError::Hsm(cmk_core::hsm::HsmError::KeyUnavailable { .. })
                            | kek::KekError::VersionMissing(_)
                    );
                    let e = refused_read(kek_cfg, &kek, &e);
                    if refusal {
                        opened.refused.push((h.kid.clone(), e.clone()));
                    }
                    return Err(e);
                }
            };
            opened.keys.push((
                h.kid.clone(),
                h.wrapped_dek.clone(),
                Dek::from_bytes(&raw).map_err(envelope_error)?,
            ));
            opened.keys.len() - 1
        }
    };
    *doc = envelope::open(doc, &opened.keys[idx].2, only).map_err(envelope_error)?;
    Ok(())
}

/// 503 `KeyNotConfigured` naming the key, for a record whose `kid` names a
/// key of the configured HSM that the configuration does not (a scope taken
/// out of `key_scope_keys`); `None` for a configured key or another HSM's
/// (refused as tampered by [`check_expected`]).
fn unconfigured_key(kek_cfg: &cmk_core::config::KekConfig, kid: &str) -> Option<ApiError> {
    let origin = kek_cfg.endpoint.origin();
    let name = envelope::key_name_of(kid, &origin).filter(|n| !kek_cfg.owns(n))?;
    Some(
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "KeyNotConfigured",
            format!(
                "the record's key `{name}` is not configured in this deployment (its key scope was removed, e.g. to erase it): the record is not read; configure the key again to read it, or finish its erasure (docs/keys-and-identity.md, \"Erasing a scope\")"
            ),
        )
        .retry_after(cmk_core::api::KEY_RETRY_AFTER_SECS),
    )
}

/// The name of the configured key a record's `kid` names (`hsm_key_name`
/// for any other: [`check_expected`] has refused those already).
fn key_of_record(kek_cfg: &cmk_core::config::KekConfig, kid: &str) -> String {
    let origin = kek_cfg.endpoint.origin();
    match envelope::key_name_of(kid, &origin) {
        Some(name) if kek_cfg.owns(name) => name.to_owned(),
        _ => kek_cfg.key_name.clone(),
    }
}

/// A key's refusal on a read as answered: with key scopes, the message
/// names the key, and for a deleted key (`KeyNotFound`) the scope values it
/// served, so the reader learns whose records are gone
/// (docs/keys-and-identity.md, "Erasing a scope").
fn refused_read(
    kek_cfg: &cmk_core::config::KekConfig,
    kek: &kek::Kek<'_>,
    e: &kek::KekError,
) -> ApiError {
    let mut out = kek.api_error(e);
    if let Some(scopes) = &kek_cfg.scopes {
        if out.code == "KeyNotFound" {
            let values = scopes.values_of(kek.name());
            out.message = format!(
                "the record's key `{}` (key scope {}) is not in the HSM: its records cannot be read (erased once the key is purged). {}",
                kek.name(),
                if values.is_empty() {
                    "none configured".to_owned()
                } else {
                    values
                        .iter()
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                out.message
            );
        }
    }
    out
}

/// Step 2 of opening (docs/record-format.md) with the key the record names
/// (one of the configured keys) and the pointers protected for the
/// record's (stored) event type; reads and rewraps both run it before any
/// unwrap.
pub(crate) fn check_expected(
    kek_cfg: &cmk_core::config::KekConfig,
    doc: &serde_json::Value,
    h: &envelope::Header,
) -> Result<(), envelope::EnvelopeError> {
    let ty = doc["event"]["type"].as_str().unwrap_or_default();
    let protected: Vec<String> = kek_cfg
        .protected
        .for_type(ty)
        .iter()
        .map(|p| format!("/event{p}"))
        .collect();
    let origin = kek_cfg.endpoint.origin();
    let key_name = key_of_record(kek_cfg, &h.kid);
    envelope::check_expected(
        doc,
        h,
        &envelope::Expect {
            hsm: &origin,
            key_name: &key_name,
            protected: &protected,
        },
    )
}

/// A stored document without an envelope header: refused if it holds
/// sealed values (its header was removed), and in the second stage unless
/// `read_accept_unsealed` allows records written before it.
fn check_unsealed(config: &Config, doc: &serde_json::Value) -> Result<(), ApiError> {
    if let Some(p) = envelope::sealed_pointers(doc).into_iter().next() {
        return Err(envelope_error(envelope::EnvelopeError::Tampered(format!(
            "under {}",
            envelope::event_member(&p)
        ))));
    }
    if config.kek.is_some() && !config.read.accept_unsealed {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "RecordUnsealed",
            "the record carries no envelope header; records written before field encryption are read only with read_accept_unsealed = true",
        ));
    }
    Ok(())
}

pub(crate) fn envelope_error(e: envelope::EnvelopeError) -> ApiError {
    let code = match e {
        envelope::EnvelopeError::Tampered(_) => "RecordTampered",
        envelope::EnvelopeError::Unsupported(_) => "RecordUnsupported",
        envelope::EnvelopeError::Malformed(_) => "RecordMalformed",
    };
    // The stored record is at fault, not the caller: 422 with the reason.
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
}
