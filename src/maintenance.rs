//! `POST /admin/rewrap` at the edge: one bounded step of moving stored data
//! keys onto the latest key version (the decisions live in `rewrap`).

use http::Response;
use serde_json::json;
use spin_sdk::http::IncomingRequest;

use crate::account::Account;
use crate::api::ApiError;
use crate::envelope::{self};
use crate::hsm;
use crate::kek;
use crate::log;
use crate::reader::envelope_error;
use crate::request::{header, load_config, query_of};
use crate::rewrap;
use crate::time::UnixTime;

/// `POST /admin/rewrap`: one bounded step of moving stored data keys onto
/// the latest key version (see `rewrap`). Key trouble stops the call and
/// fails closed, as on every other path.
pub(crate) async fn post_rewrap(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let call = rewrap::parse(
        &query_of(&req),
        header(&req, rewrap::ADMIN_KEY_HEADER).as_deref(),
        &config,
    )?;
    let kek_cfg = config.kek.as_ref().expect("rewrap::parse checks it");
    let kek = kek::Kek::new(kek_cfg, config.cosmos.retry);
    let (latest, _) = kek.key(true).await.map_err(|e| ApiError::from(&e))?;
    hsm::check_usable(&latest, hsm::KeyOp::Wrap, UnixTime::now())
        .map_err(|e| ApiError::from(&e))?;
    let account = Account::new(&config.cosmos);
    let credential = account.credential().await?;
    let sent = account
        .send(rewrap::query_request(
            &call,
            &latest.kid,
            &config,
            &credential,
            UnixTime::now(),
        )?)
        .await;
    let page = rewrap::parse_page(sent.result)?;
    let mut report = rewrap::Report::default();
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
        if let Err(e) = crate::reader::check_expected(kek_cfg, doc, &h) {
            report.add(refuse(e.to_string()));
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
    matches!(e, kek::KekError::RecordKey(_))
        || matches!(
            e,
            kek::KekError::Hsm(
                hsm::HsmError::InvalidKeyId(_)
                    | hsm::HsmError::KeyUnavailable { .. }
                    | hsm::HsmError::Rejected { .. }
            )
        )
}
