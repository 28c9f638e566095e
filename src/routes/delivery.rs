//! Deliveries at the edge: `POST /events`, `OPTIONS /events` and `POST /queue`
//! — the sender checked, events planned by `ingest`, sealed in the second
//! stage, written and summarized.

use futures::StreamExt;
use http::{Response, StatusCode};
use serde_json::json;
use spin_sdk::http::IncomingRequest;

use crate::host::account::Account;
use crate::host::inbound;
use crate::host::kek;
use crate::host::log;
use crate::host::outbound;
use crate::host::random;
use crate::host::request::{
    header, header_entries, load_config, query_of, raw_header_entries, read_body,
};
use cmk_core::api::ApiError;
use cmk_core::config::Config;
use cmk_core::envelope::Dek;
use cmk_core::events;
use cmk_core::ingest::{self, Decoded};
use cmk_core::queue;
use cmk_core::time::UnixTime;

/// Checks the sender: an ingest key, or an Entra ID bearer token.
async fn authorize_sender(req: &IncomingRequest, config: &Config) -> Result<(), ApiError> {
    inbound::authorize(
        config,
        header(req, "authorization").as_deref(),
        header(req, ingest::INGEST_KEY_HEADER).as_deref(),
        &query_of(req),
    )
    .await
}

pub(crate) async fn options_events(req: &IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    authorize_sender(req, &config).await?;
    ingest::webhook_handshake(header(req, "webhook-request-origin").as_deref())
}

pub(crate) async fn post_events(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    authorize_sender(&req, &config).await?;
    let entries = raw_header_entries(&req);
    let content_type = events::content_type(&entries)?;
    let headers = events::binary_mode_headers(&entries)?;
    let body = read_body(
        req,
        config.ingest.max_body_bytes,
        config.ingest.body_read_timeout_secs,
    )
    .await?;
    // Decode first: a malformed body gets its 400 and the handshake its
    // answer even while the store's token endpoint is down.
    ingest::check_shape(&body, &config)?;
    let events = match ingest::decode(content_type.as_deref(), &headers, &body)? {
        Decoded::Respond(r) => {
            log::emit("info", "subscription_validated", &[]);
            return Ok(r);
        }
        Decoded::Events(events) => events,
    };
    cmk_core::tally::events(events.len());
    // Every check that needs no credential and no key answers first, so a
    // bad or oversized delivery gets its 4xx while Entra or the HSM is down.
    // Attributes sent as headers (`ce-*`, and the content type in binary
    // mode) are part of the documents too.
    let input_len = body.len()
        + content_type.as_ref().map_or(0, String::len)
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    let documents = ingest::documents_of(events, &config)?;
    ingest::check_unsealed_sizes(&documents, input_len)?;
    let sealing = plan_sealing(&documents, &config, input_len)?;
    let account = Account::new(&config.cosmos, config.kv_key.as_ref());
    let credential = account.credential().await?;
    write_delivery(documents, sealing, &config, &account, &credential).await
}

/// `POST /queue`: one Storage queue message from the queue bridge or a Dapr
/// sidecar. Same key, limits and answers as `POST /events`; every answer is
/// logged with the message's id and dequeue count (never its text).
pub(crate) async fn post_queue(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let headers = header_entries(&req);
    let meta = queue::metadata(&headers);
    let mut decoded: Option<(&'static str, usize)> = None;
    let result = async {
        let config = load_config()?;
        let key = header(&req, ingest::INGEST_KEY_HEADER)
            .or_else(|| header(&req, queue::DAPR_API_TOKEN_HEADER));
        inbound::authorize(
            &config,
            header(&req, "authorization").as_deref(),
            key.as_deref(),
            &query_of(&req),
        )
        .await?;
        // Only an authenticated sender learns what is wrong with its metadata.
        meta.clone()?;
        let content_type = queue::content_type(&raw_header_entries(&req))?;
        let body = read_body(
            req,
            config.ingest.max_body_bytes,
            config.ingest.body_read_timeout_secs,
        )
        .await?;
        ingest::check_shape(&body, &config)?;
        let message = queue::decode(content_type.as_deref(), &body, config.ingest.max_depth)?;
        decoded = Some((message.text_encoding.as_str(), message.events.len()));
        cmk_core::tally::events(message.events.len());
        // As for `POST /events`: refused before any credential or key is
        // asked for. The raw message body bounds its decoded events' size.
        let documents = ingest::documents_of(message.events, &config)?;
        ingest::check_unsealed_sizes(&documents, body.len())?;
        let sealing = plan_sealing(&documents, &config, body.len())?;
        let account = Account::new(&config.cosmos, config.kv_key.as_ref());
        let credential = account.credential().await?;
        write_delivery(documents, sealing, &config, &account, &credential).await
    }
    .await;
    let (status, code) = match &result {
        Ok(r) => (r.status().as_u16(), cmk_core::api::error_code_of(r)),
        Err(e) => (e.status.as_u16(), Some(e.code.to_owned())),
    };
    log::emit(
        if status < 300 { "info" } else { "warn" },
        "queue_message",
        &[
            (
                "forwarder",
                json!(meta.as_ref().ok().map(|m| m.forwarder.as_str())),
            ),
            (
                "message_id",
                json!(meta.as_ref().ok().map(|m| &m.message_id)),
            ),
            (
                "dequeue_count",
                json!(meta.as_ref().ok().map(|m| m.dequeue_count)),
            ),
            (
                "insertion_time",
                json!(meta.as_ref().ok().map(|m| &m.insertion_time)),
            ),
            ("text_encoding", json!(decoded.map(|d| d.0))),
            ("events", json!(decoded.map(|d| d.1))),
            ("status", json!(status)),
            ("code", json!(code)),
        ],
    );
    result
}

/// Seals (stage two, as `sealing` says), plans, sends and summarizes a
/// delivery's checked documents ([`ingest::documents_of`]): the part of
/// every ingest route after its events are decoded. The writes are planned
/// (serialized and signed) once, after sealing.
async fn write_delivery(
    documents: Vec<cmk_core::document::Document>,
    sealing: Option<Sealing<'_>>,
    config: &Config,
    account: &Account<'_>,
    credential: &cmk_core::cosmos::Credential,
) -> Result<Response<Vec<u8>>, ApiError> {
    let writes = match sealing {
        None => ingest::plan_writes(documents, config, credential, UnixTime::now())?,
        Some(sealing) => seal_delivery(documents, sealing, config, credential).await?,
    };
    let requests = writes
        .units
        .iter()
        .map(|u| outbound::copy(&u.request))
        .collect();
    let sent = account
        .send_all(requests, config.cosmos.max_concurrency)
        .await;
    let stats: Vec<(u32, u64)> = sent.iter().map(|s| (s.attempts, s.duration_ms)).collect();
    let mut results: Vec<_> = writes
        .units
        .iter()
        .zip(sent)
        .map(|(u, s)| ingest::unit_outcome(u, s.result))
        .collect();
    if config.cosmos.write_mode == cmk_core::config::WriteMode::Create {
        for (unit, result) in writes.units.iter().zip(results.iter_mut()) {
            if result.as_ref().err().is_some_and(ingest::is_conflict) {
                *result = create_or_verify(account, &writes, unit, config, credential).await;
            }
        }
    }
    let (response, outcomes) = ingest::respond(&writes, results);
    for (outcome, (attempts, duration_ms)) in outcomes.iter().zip(stats) {
        let mut fields = vec![
            ("documents", json!(outcome.documents)),
            ("batch", json!(outcome.batch)),
            ("attempts", json!(attempts)),
            ("duration_ms", json!(duration_ms)),
        ];
        match &outcome.result {
            Ok(m) => {
                fields.push(("request_charge", json!(m.request_charge)));
                fields.push(("activity_id", json!(m.activity_id)));
                log::emit("info", "documents_written", &fields);
            }
            Err(e) => {
                fields.push(("error", json!(e.to_string())));
                log::emit("warn", "documents_write_failed", &fields);
            }
        }
    }
    Ok(response)
}

/// Most HSM calls one delivery has in flight while preparing its keys.
const MAX_KEYS_IN_FLIGHT: usize = 16;

/// A key group's sealing material: a data key and its wrapped form, or the
/// key version in use when the group protects nothing.
enum Prepared {
    Data(Dek, cmk_core::hsm::CryptResult),
    Nothing(String),
}

/// Stage two's plan for a delivery, made before any credential or key is
/// asked for: each document's pointers to seal, and the key groups.
struct Sealing<'c> {
    kek_cfg: &'c cmk_core::config::KekConfig,
    plans: Vec<Vec<String>>,
    groups: Vec<ingest::KeyGroup>,
}

/// Stage two's checks that need no credential and no key: every protected
/// pointer resolves ([`ingest::protected_pointers`]; each event where one
/// does not is logged), every event has its key
/// ([`ingest::key_groups`]), and no document will be over Cosmos DB's
/// limit once sealed ([`ingest::check_sealed_sizes`]), so such a delivery
/// gets its 4xx while Entra ID or the HSM is down, and costs no wrap.
/// `None` in the first stage.
fn plan_sealing<'c>(
    documents: &[cmk_core::document::Document],
    config: &'c Config,
    input_len: usize,
) -> Result<Option<Sealing<'c>>, ApiError> {
    let Some(kek_cfg) = &config.kek else {
        return Ok(None);
    };
    let plans = match ingest::protected_pointers(documents, &kek_cfg.protected) {
        Ok(p) => p,
        Err(u) => {
            // Each such event of the delivery, with its id and the
            // pointers only: never the value.
            for u in ingest::unresolvable(documents, &kek_cfg.protected) {
                log::emit(
                    "warn",
                    "protected_field_unresolvable",
                    &[
                        ("id", json!(u.document_id)),
                        ("event_id", json!(u.event_id)),
                        ("pointer", json!(u.mismatch.pointer)),
                        ("at", json!(u.mismatch.at)),
                        ("found", json!(u.mismatch.found)),
                    ],
                );
            }
            return Err(ApiError::from(&u));
        }
    };
    let groups = ingest::key_groups(documents, kek_cfg)?;
    ingest::check_sealed_sizes(documents, &plans, &groups, &kek_cfg.endpoint, input_len)?;
    Ok(Some(Sealing {
        kek_cfg,
        plans,
        groups,
    }))
}

/// Stage two: one fresh data key per key of the delivery (one key without
/// key scopes; one per scope present with them) from the host's secure
/// random source, each wrapped once by its key after that key's state
/// check, then every document's protected fields sealed under its group's
/// data key before the writes are signed. If any key refuses or wrapping
/// fails for any reason, nothing of the delivery is written: the answer is
/// that key's error (503 with the reason), so the sender retries the whole
/// delivery.
async fn seal_delivery(
    documents: Vec<cmk_core::document::Document>,
    sealing: Sealing<'_>,
    config: &Config,
    credential: &cmk_core::cosmos::Credential,
) -> Result<ingest::Writes, ApiError> {
    let Sealing {
        kek_cfg,
        plans,
        groups,
    } = sealing;
    let keks: Vec<kek::Kek<'_>> = groups
        .iter()
        .map(|g| {
            kek::Kek::named(
                kek_cfg,
                &g.key_name,
                config.cosmos.retry,
                config.kv_key.as_ref(),
            )
        })
        .collect();
    // The keys of the delivery are checked (and their data keys wrapped)
    // up to MAX_KEYS_IN_FLIGHT at once: a delivery's latency follows its
    // slowest key rather than the number of its keys. The first refusal,
    // in group order, is the answer.
    let prepared: Vec<Result<Prepared, ApiError>> =
        futures::stream::iter(groups.iter().zip(&keks).map(|(g, kek)| {
            let nothing = g.documents.iter().all(|&i| plans[i].is_empty());
            prepare(kek, nothing)
        }))
        .buffered(MAX_KEYS_IN_FLIGHT)
        .collect()
        .await;
    let prepared = prepared.into_iter().collect::<Result<Vec<_>, _>>()?;
    // Logged only now that the delivery will be sealed and written: not for
    // one refused before (a 4xx) or answered 503 while a key is unavailable.
    for (d, p) in documents.iter().zip(&plans) {
        if p.is_empty() {
            log::emit(
                "warn",
                "nothing_sealed",
                &[
                    ("id", json!(d.id)),
                    ("event_id", json!(d.body["event"]["id"])),
                    ("type", json!(d.body["event"]["type"])),
                ],
            );
        }
    }
    if kek_cfg.scopes.is_some() {
        // Key names and counts only: scope values stay out of the log.
        log::emit(
            "info",
            "delivery_keys",
            &[
                (
                    "keys",
                    json!(groups.iter().map(|g| &g.key_name).collect::<Vec<_>>()),
                ),
                (
                    "wraps",
                    json!(prepared
                        .iter()
                        .filter(|p| matches!(p, Prepared::Data(..)))
                        .count()),
                ),
            ],
        );
    }
    let keyed: Vec<(&[usize], ingest::GroupKey<'_>)> = groups
        .iter()
        .zip(&prepared)
        .map(|(g, p)| {
            let key = match p {
                Prepared::Data(dek, wrapped) => ingest::GroupKey::Data(ingest::DeliveryKey {
                    dek,
                    kid: &wrapped.kid,
                    wrapped_dek: &wrapped.value,
                }),
                Prepared::Nothing(kid) => ingest::GroupKey::Nothing { kid },
            };
            (&g.documents[..], key)
        })
        .collect();
    // One nonce per protected value the plans resolved, drawn in one call.
    let mut nonces = random::Nonces::new(plans.iter().map(Vec::len).sum());
    let mut nonce = || nonces.next_nonce();
    ingest::seal_groups(
        documents,
        plans,
        &keyed,
        &mut nonce,
        config,
        credential,
        UnixTime::now(),
    )
}

/// One key group's sealing material: the key's state checked, and, when
/// the group protects something, a fresh data key wrapped by the key.
async fn prepare(kek: &kek::Kek<'_>, nothing: bool) -> Result<Prepared, ApiError> {
    if nothing {
        // Nothing to seal: no data key, no wrap; the key's state is still
        // checked, so a disabled or revoked key stops these writes too.
        let (key, _) = kek.key(false).await.map_err(|e| kek.api_error(&e))?;
        cmk_core::hsm::check_usable(&key, cmk_core::hsm::KeyOp::Wrap, UnixTime::now())
            .map_err(|e| kek.api_error(&kek::KekError::Hsm(e)))?;
        return Ok(Prepared::Nothing(key.kid));
    }
    let dek = Dek::from_bytes(&zeroize::Zeroizing::new(
        wasi::random::random::get_random_bytes(32),
    ))
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SealFailed",
            e.to_string(),
        )
    })?;
    let wrapped = kek.wrap(dek.bytes()).await.map_err(|e| kek.api_error(&e))?;
    Ok(Prepared::Data(dek, wrapped))
}

/// Create-only mode, for a unit that met an existing document: creates each
/// of its documents on its own (a batch applied none of them), and reads
/// back and verifies each one that exists. Documents are handled
/// concurrently; a transient failure outranks a conflict, so the sender
/// redelivers.
async fn create_or_verify(
    account: &Account<'_>,
    writes: &ingest::Writes,
    unit: &ingest::WriteUnit,
    config: &Config,
    credential: &cmk_core::cosmos::Credential,
) -> Result<ingest::UnitWritten, cmk_core::cosmos::CosmosError> {
    let one = |i: usize| async move {
        let doc = &writes.documents[i];
        if unit.batch {
            let req = ingest::create_request(doc, config, credential, UnixTime::now())?;
            if let Some((status, m)) = ingest::create_outcome(account.send(req).await.result)? {
                return Ok((status, m, false));
            }
        }
        let read = account
            .send(ingest::read_request(
                doc,
                config,
                credential,
                UnixTime::now(),
            ))
            .await;
        ingest::verify_stored(doc, read.result).map(|m| (200, m, true))
    };
    let done: Vec<_> = futures::stream::iter(unit.documents.iter().map(|&i| one(i)))
        .buffered(config.cosmos.max_concurrency.max(1))
        .collect()
        .await;
    let mut written = ingest::UnitWritten {
        statuses: Vec::with_capacity(done.len()),
        metrics: cmk_core::cosmos::Metrics::default(),
    };
    let mut failure: Option<cmk_core::cosmos::CosmosError> = None;
    let mut existing = 0;
    let mut conflicts = 0;
    for (r, &i) in done.into_iter().zip(&unit.documents) {
        match r {
            Ok((status, m, found)) => {
                written.statuses.push(status);
                written.metrics.request_charge += m.request_charge;
                existing += usize::from(found);
            }
            // Another event under this id: reported per document (409),
            // logged, and the rest of the delivery still counts.
            Err(cmk_core::cosmos::CosmosError::ExistsWithOtherContent { id }) => {
                let doc = &writes.documents[i];
                log::emit(
                    "warn",
                    "document_conflict",
                    &[
                        ("id", json!(id)),
                        ("partition_key", json!(doc.partition_key)),
                        ("event_id", json!(doc.body["event"]["id"])),
                    ],
                );
                written.statuses.push(ingest::CONFLICT);
                conflicts += 1;
            }
            Err(e) => {
                if failure
                    .as_ref()
                    .is_none_or(|f| !f.is_transient() && e.is_transient())
                {
                    failure = Some(e);
                }
            }
        }
    }
    log::emit(
        "info",
        "documents_verified",
        &[
            ("documents", json!(unit.documents.len())),
            ("batch", json!(unit.batch)),
            ("already_written", json!(existing)),
            ("conflicts", json!(conflicts)),
            ("failed", json!(failure.is_some())),
        ],
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(written),
    }
}
