//! `POST /admin/rewrap`, `POST /admin/seal` and `POST /admin/erase` at the
//! edge: one bounded step of moving stored data keys onto the latest key
//! version, of sealing what stored records still hold in plaintext, or of
//! counting or removing the records of a deleted key (the decisions live in
//! `rewrap`, `seal` and `erase`).

use http::Response;
use serde_json::json;
use spin_sdk::http::IncomingRequest;

use crate::host::account::Account;
use crate::host::kek;
use crate::host::log;
use crate::host::request::{header, load_config, query_of};
use crate::routes::reader::envelope_error;
use cmk_core::api::ApiError;
use cmk_core::config::Config;
use cmk_core::cosmos::Credential;
use cmk_core::envelope::{self};
use cmk_core::erase;
use cmk_core::hsm;
use cmk_core::rewrap;
use cmk_core::seal;
use cmk_core::time::UnixTime;

/// What both maintenance steps start from, once their caller is checked: the
/// key, its latest version checked usable for wrapping (so nothing is read
/// while the key is refused), the account and its credential.
async fn begin<'c>(
    config: &'c Config,
    key_name: Option<&str>,
) -> Result<(kek::Kek<'c>, hsm::KeyInfo, Account<'c>, Credential), ApiError> {
    let kek_cfg = config.kek.as_ref().expect("the route's parse checks it");
    let kek = kek::Kek::named(
        kek_cfg,
        key_name.unwrap_or(&kek_cfg.key_name),
        config.cosmos.retry,
        config.kv_key.as_ref(),
    );
    let (latest, _) = kek.key(true).await.map_err(|e| kek.api_error(&e))?;
    hsm::check_usable(&latest, hsm::KeyOp::Wrap, UnixTime::now())
        .map_err(|e| kek.api_error(&kek::KekError::Hsm(e)))?;
    let account = Account::new(&config.cosmos, config.kv_key.as_ref());
    let credential = account.credential().await?;
    Ok((kek, latest, account, credential))
}

/// `POST /admin/rewrap`: one bounded step of moving stored data keys onto
/// the latest key version (see `rewrap`) of one key: `hsm_key_name`, or the
/// key scope's key named by `key=` (only that key's records are walked).
/// Key trouble stops the call and fails closed, as on every other path.
pub(crate) async fn post_rewrap(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let call = rewrap::parse(
        &query_of(&req),
        header(&req, cmk_core::access::ADMIN_KEY_HEADER).as_deref(),
        &config,
    )?;
    let (kek, latest, account, credential) = begin(&config, call.key.as_deref()).await?;
    let kek_cfg = config.kek.as_ref().expect("rewrap::parse checks it");
    let origin = kek_cfg.endpoint.origin();
    let page = query_page(
        &account,
        rewrap::query_request(&call, &latest.kid, &config, &credential, UnixTime::now())?,
    )
    .await?;
    let mut report = rewrap::Report::default();
    for u in &page.unparsed {
        report.add(rewrap::Outcome::Refused {
            id: u.id.clone(),
            reason: u.reason.clone(),
        });
    }
    // (old kid, old wrapped DEK) → the DEK wrapped under the latest version.
    let mut moved: Vec<(String, Vec<u8>, hsm::CryptResult)> = Vec::new();
    for doc in &page.items {
        let id = doc.get("id").and_then(|v| v.as_str()).map(str::to_owned);
        let refuse = |reason: String| rewrap::Outcome::Refused {
            id: id.clone(),
            reason,
        };
        let (h, at) = match (envelope::header(doc), rewrap::locate(doc)) {
            (Ok(Some(h)), Some(at)) => (h, at),
            (Err(e), _) => {
                report.add(refuse(e.to_string()));
                continue;
            }
            _ => {
                report.add(refuse("not a sealed document with id, pk and _etag".into()));
                continue;
            }
        };
        // The checks a read makes before unwrapping (the key ids name the
        // configured key, the header lists every configured field): a
        // record that would not read is reported, never moved onto the
        // latest version, which would launder a forged header.
        if let Err(e) = crate::routes::reader::check_expected(kek_cfg, doc, &h) {
            report.add(refuse(e.to_string()));
            continue;
        }
        // Another key's record (the query selects this key's only) is never
        // moved under this one: that would take it out of its scope.
        if envelope::key_name_of(&h.kid, &origin) != Some(kek.name()) {
            report.add(refuse(format!(
                "the record is sealed under another key than {}",
                kek.name()
            )));
            continue;
        }
        if h.wrapped_dek.is_empty() {
            // A header that seals nothing has no data key to move.
            let doc2 = envelope::rewrapped(doc, &latest.kid, &[]).map_err(envelope_error)?;
            let req = rewrap::replace_request(&at, &doc2, &config, &credential, UnixTime::now())
                .map_err(|e| ApiError::from(&e))?;
            let sent = account.send(req).await;
            report.add(rewrap::replace_outcome(sent.result)?);
            continue;
        }
        let idx = match moved
            .iter()
            .position(|(kid, w, _)| *kid == h.kid && *w == h.wrapped_dek)
        {
            Some(i) => i,
            None => {
                let dek = match kek.unwrap(&h.kid, &h.wrapped_dek).await {
                    Ok(raw) => zeroize::Zeroizing::new(raw),
                    // A stored key id from elsewhere, or a data key the HSM
                    // rejects, concerns this record only.
                    Err(e) if !e.is_transient() && is_record_fault(&e) => {
                        report.add(refuse(ApiError::from(&e).message));
                        continue;
                    }
                    Err(e) => return Err(ApiError::from(&e)),
                };
                if dek.len() != 32 {
                    report.add(refuse("the unwrapped data key is not 32 bytes".into()));
                    continue;
                }
                let wrapped = kek.wrap(&dek).await.map_err(|e| ApiError::from(&e))?;
                moved.push((h.kid.clone(), h.wrapped_dek.clone(), wrapped));
                report.data_keys += 1;
                moved.len() - 1
            }
        };
        let new = &moved[idx].2;
        let doc2 = envelope::rewrapped(doc, &new.kid, &new.value).map_err(envelope_error)?;
        let req = rewrap::replace_request(&at, &doc2, &config, &credential, UnixTime::now())
            .map_err(|e| ApiError::from(&e))?;
        let sent = account.send(req).await;
        report.add(rewrap::replace_outcome(sent.result)?);
    }
    log::emit(
        "info",
        "rewrap_step",
        &[
            ("kid", json!(latest.kid)),
            ("key", json!(kek.name())),
            ("scanned", json!(report.scanned)),
            ("rewrapped", json!(report.rewrapped)),
            ("conflicts", json!(report.conflicts)),
            ("refused", json!(report.refused.len())),
            ("data_keys", json!(report.data_keys)),
            ("more", json!(page.continuation.is_some())),
        ],
    );
    Ok(report.render(&latest.kid, page.continuation))
}

/// Whether an unwrap failure concerns this record only — its key id or
/// wrapped value, or the old key version it names (deleted, disabled, not
/// allowed to unwrap) — rather than the service or the caller's identity.
/// Such a record is reported and passed over, so one bad record cannot stop
/// the rest from moving; the latest version was checked usable up front.
fn is_record_fault(e: &kek::KekError) -> bool {
    matches!(
        e,
        kek::KekError::RecordKey(_) | kek::KekError::VersionMissing(_)
    ) || matches!(
        e,
        kek::KekError::Hsm(
            hsm::HsmError::InvalidKeyId(_)
                | hsm::HsmError::KeyUnavailable { .. }
                | hsm::HsmError::Rejected { .. }
        )
    )
}

/// `POST /admin/seal`: one bounded step of sealing the protected fields
/// that stored records still hold in plaintext (see `seal`). One fresh data
/// key per page, wrapped once by the latest key version, and only when the
/// page has something to seal; the data keys of records sealed again are
/// unwrapped once each. Key trouble stops the call and fails closed.
pub(crate) async fn post_seal(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let call = seal::parse(
        &query_of(&req),
        header(&req, cmk_core::access::ADMIN_KEY_HEADER).as_deref(),
        &config,
    )?;
    let (kek, _latest, account, credential) = begin(&config, None).await?;
    let page = query_page(
        &account,
        seal::query_request(&call, &config, &credential, UnixTime::now())?,
    )
    .await?;
    let plans = seal::plan_page(&page.items, &config, &credential, UnixTime::now());
    let mut report = seal::Report::default();
    for u in &page.unparsed {
        report.add(seal::Outcome::Failed {
            id: u.id.clone(),
            reason: u.reason.clone(),
        });
    }
    let mut kid = None;
    if seal::needs_data_key(&plans) {
        let mut opened = seal::OpenedKeys::default();
        for (old_kid, wrapped) in seal::data_keys_to_open(&plans) {
            let dek = match kek.unwrap(&old_kid, &wrapped).await {
                Ok(raw) => envelope::Dek::from_bytes(&zeroize::Zeroizing::new(raw))
                    .map_err(|e| e.to_string()),
                // A key id from elsewhere, or a data key the HSM rejects,
                // concerns the records that carry it only.
                Err(e) if !e.is_transient() && is_record_fault(&e) => {
                    Err(ApiError::from(&e).message)
                }
                Err(e) => return Err(ApiError::from(&e)),
            };
            opened.add(old_kid, wrapped, dek);
        }
        let dek = envelope::Dek::from_bytes(&zeroize::Zeroizing::new(
            wasi::random::random::get_random_bytes(32),
        ))
        .map_err(envelope_error)?;
        let wrapped = kek
            .wrap(dek.bytes())
            .await
            .map_err(|e| ApiError::from(&e))?;
        // How many values the page seals is known only while sealing:
        // nonces are drawn a few at a time.
        let mut nonces = crate::host::random::Nonces::new(0);
        let mut nonce = || nonces.next_nonce();
        let key = cmk_core::ingest::DeliveryKey {
            dek: &dek,
            kid: &wrapped.kid,
            wrapped_dek: &wrapped.value,
        };
        let steps = seal::seal_page(
            &page.items,
            plans,
            &key,
            &opened,
            &mut nonce,
            &config,
            &credential,
            UnixTime::now(),
        );
        for step in steps {
            match step {
                seal::Step::Settled(o) => report.add(o),
                seal::Step::Replace { at, body, resealed } => {
                    let req =
                        seal::replace_request(&at, &body, &config, &credential, UnixTime::now())
                            .map_err(|e| ApiError::from(&e))?;
                    let sent = account.send(req).await;
                    report.add(seal::replace_outcome(sent.result, resealed, &at.id)?);
                }
            }
        }
        kid = Some(wrapped.kid);
    } else {
        for p in plans {
            report.add(match p {
                seal::Plan::Failed { id, reason } => seal::Outcome::Failed { id, reason },
                _ => seal::Outcome::AlreadySealed,
            });
        }
    }
    log::emit(
        "info",
        "seal_step",
        &[
            ("kid", json!(kid)),
            ("scanned", json!(report.scanned)),
            ("sealed", json!(report.sealed)),
            ("resealed", json!(report.resealed)),
            ("already_sealed", json!(report.already_sealed)),
            ("conflicts", json!(report.conflicts)),
            ("failed", json!(report.failed.len())),
            ("more", json!(page.continuation.is_some())),
        ],
    );
    Ok(report.render(kid.as_deref(), page.continuation))
}

/// `POST /admin/erase?key=<name>&mode=count|delete`: one bounded step of
/// counting, or removing, the records sealed under a key (see `erase`).
/// The key's state is read afresh from the HSM; `delete` goes on only when
/// the HSM answers that the key does not exist.
pub(crate) async fn post_erase(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let call = erase::parse(
        &query_of(&req),
        header(&req, cmk_core::access::ADMIN_KEY_HEADER).as_deref(),
        &config,
    )?;
    let kek_cfg = config.kek.as_ref().expect("erase::parse checks it");
    let kek = kek::Kek::named(
        kek_cfg,
        &call.key,
        config.cosmos.retry,
        config.kv_key.as_ref(),
    );
    let state = kek.key(true).await;
    let key_state: &'static str = match &state {
        Ok((k, _)) => match hsm::check_usable(k, hsm::KeyOp::Unwrap, UnixTime::now()) {
            Ok(()) => "usable",
            Err(e) => ApiError::from(&e).code,
        },
        Err(e) => kek.api_error(e).code,
    };
    if call.mode == erase::Mode::Delete {
        let hsm_state = match &state {
            Ok(_) => Ok(()),
            Err(kek::KekError::Hsm(e)) => Err(e),
            Err(e) => return Err(kek.api_error(e)),
        };
        erase::check_gone(&call.key, hsm_state)?;
    }
    let account = Account::new(&config.cosmos, config.kv_key.as_ref());
    let credential = account.credential().await?;
    // `delete` follows the continuation past empty pages (a
    // cross-partition query may answer one while rows are further on).
    let mut step = call.clone();
    let mut empty_pages = 0;
    let page = loop {
        let page = query_page(
            &account,
            erase::query_request(&step, &config, &credential, UnixTime::now())?,
        )
        .await?;
        if call.mode == erase::Mode::Delete
            && page.items.is_empty()
            && page.unparsed.is_empty()
            && page.continuation.is_some()
            && empty_pages < erase::MAX_EMPTY_PAGES
        {
            empty_pages += 1;
            step.continuation = page.continuation;
            continue;
        }
        break page;
    };
    let origin = kek_cfg.endpoint.origin();
    let targets: Vec<_> = page
        .items
        .iter()
        .filter_map(|row| erase::target(row, &call, &origin))
        .collect();
    let mut report = erase::Report {
        matched: targets.len(),
        // Rows too deep to parse (none in practice: the query selects four
        // shallow members) are not the key's records as checked.
        skipped: page.items.len() - targets.len() + page.unparsed.len(),
        ..Default::default()
    };
    if call.mode == erase::Mode::Delete {
        for t in &targets {
            let req = cmk_core::records::delete_request(t, &config, &credential, UnixTime::now())?;
            let sent = account.send(req).await;
            if erase::delete_outcome(sent.result)? {
                report.deleted += 1;
            } else {
                report.conflicts += 1;
            }
        }
    }
    let (more, continuation) = match call.mode {
        erase::Mode::Count => (page.continuation.is_some(), page.continuation),
        // Removed records no longer match: the next call starts over.
        erase::Mode::Delete => (
            erase::delete_more(
                page.items.len() + page.unparsed.len(),
                page.continuation.is_some(),
                call.limit,
            ),
            None,
        ),
    };
    log::emit(
        "info",
        "erase_step",
        &[
            ("key", json!(call.key)),
            ("key_state", json!(key_state)),
            (
                "mode",
                json!(match call.mode {
                    erase::Mode::Count => "count",
                    erase::Mode::Delete => "delete",
                }),
            ),
            ("matched", json!(report.matched)),
            ("deleted", json!(report.deleted)),
            ("conflicts", json!(report.conflicts)),
            ("skipped", json!(report.skipped)),
            ("empty_pages", json!(empty_pages)),
            ("more", json!(more)),
        ],
    );
    Ok(report.render(&call, key_state, more, continuation))
}

/// Sends one page's query to the store and parses the page it answers.
async fn query_page(
    account: &Account<'_>,
    request: http::Request<Vec<u8>>,
) -> Result<cmk_core::cosmos::QueryPage, ApiError> {
    rewrap::parse_page(account.send(request).await.result)
}
