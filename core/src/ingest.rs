//! `POST /events`: from a request body to signed writes and back to an answer.
//!
//! Pure steps around the one I/O step (sending the writes): [`plan`] decodes
//! and validates everything and builds every signed request before anything is
//! sent, so a bad event or an oversized document fails the whole batch with
//! nothing written; [`summarize`] turns the write results into the answer.
//!
//! Documents that share a partition key go in transactional batches (at most
//! 100 operations and about 2 MB each), so a delivery costs one Cosmos DB
//! request per partition-key group rather than one per event; a lone document
//! is a plain upsert.
//!
//! With `cosmos_write_mode = create`, the same requests create only. A
//! document that already exists (409, or a batch answered 207 with a 409) is
//! then verified instead of overwritten: each document of the unit is
//! created on its own, and one that exists is read back and compared with
//! [`stored_matches`]; a match is "already written" (status 200, as an upsert
//! reports an existing document), anything else a conflict (409).

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::api::{json_response, ApiError};
use crate::config::{Config, WriteMode};
use crate::cosmos::{
    parse_batch, parse_read, parse_write, same_content, CosmosError, CosmosRequest, Credential,
    Metrics, MAX_BATCH_BYTES, MAX_BATCH_OPERATIONS, SYSTEM_PROPERTIES,
};
use crate::document::{into_document, Document};
use crate::events::{
    decode_cloudevent, decode_cloudevent_binary, decode_cloudevents_batch, decode_event_grid,
    Delivery,
};
use crate::time::UnixTime;

/// Header a sender puts its ingest key in (`?code=` in the URL only with
/// `ingest_key_in_query = allow`).
pub const INGEST_KEY_HEADER: &str = "x-cmk-ingest-key";

/// What the sender presented, once checked as far as the core can.
#[derive(Debug)]
pub enum SenderCredential {
    /// A configured ingest key: accepted.
    Key,
    /// An Entra ID bearer token, to verify against the tenant's signing keys
    /// (see [`crate::jwt::verify`] and [`token_error`]).
    Token(crate::jwt::Token),
}

/// Checks the sender's credential: an Entra ID bearer token in
/// `Authorization` when Entra protected delivery is configured, else an
/// ingest key (header; the `code` query parameter only where allowed).
pub fn authorize(
    config: &Config,
    authorization: Option<&str>,
    header_key: Option<&str>,
    query: &str,
) -> Result<SenderCredential, ApiError> {
    let entra = config.ingest.entra.is_some();
    if entra {
        if let Some(t) = authorization.and_then(crate::jwt::bearer) {
            return crate::jwt::Token::parse(t)
                .map(SenderCredential::Token)
                .map_err(|e| token_error(&e));
        }
    }
    let code = key_in_query(query);
    let Some(keys) = &config.ingest.keys else {
        if entra {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthenticated",
                "send an Entra ID bearer token in Authorization",
            ));
        }
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ConfigurationError",
            "neither ingest_keys nor ingest_entra_audiences is configured; deliveries are refused until one is",
        )
        .retry_after(crate::api::KEY_RETRY_AFTER_SECS));
    };
    if header_key.is_none() && code.is_some() && !config.ingest.key_in_query {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "KeyInQueryRefused",
            format!("send the ingest key in {INGEST_KEY_HEADER}, not as ?code= in the URL (ingest_key_in_query = deny)"),
        ));
    }
    let presented = header_key
        .map(str::to_owned)
        .or(code.filter(|_| config.ingest.key_in_query));
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            if entra {
                format!("send an Entra ID bearer token in Authorization, or the ingest key in {INGEST_KEY_HEADER}")
            } else {
                format!("send the ingest key in {INGEST_KEY_HEADER}")
            },
        )),
        Some(k) if keys.accepts(&k) => Ok(SenderCredential::Key),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the ingest key is not accepted",
        )),
    }
}

/// The ingest key in the URL's `code` parameter, if any. Taken only with
/// `ingest_key_in_query = allow`; the edge logs each use as deprecated.
pub fn key_in_query(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("code="))
        .and_then(crate::percent::percent_decode)
}

/// The answer to a refused bearer token: 403 for a valid token without the
/// required app role, 401 otherwise (a sender cannot fix either by retrying,
/// and Event Grid does not retry them).
pub fn token_error(e: &crate::jwt::JwtError) -> ApiError {
    use crate::jwt::JwtError;
    match e {
        JwtError::Claim {
            claim: "roles" | "appid",
            ..
        } => ApiError::new(StatusCode::FORBIDDEN, "Forbidden", e.to_string()),
        JwtError::Jwks(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SigningKeysUnavailable",
            e.to_string(),
        )
        .retry_after(crate::api::KEY_RETRY_AFTER_SECS),
        // A rotated key the cached set does not have yet: Event Grid does
        // not retry a 401, so it is answered as transient.
        JwtError::KeysNotRefreshed { retry_after_secs } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SigningKeysUnavailable",
            e.to_string(),
        )
        .retry_after(u32::try_from((*retry_after_secs).max(1)).unwrap_or(u32::MAX)),
        _ => ApiError::new(StatusCode::UNAUTHORIZED, "InvalidToken", e.to_string()),
    }
}

/// The CloudEvents webhook abuse-protection handshake (`OPTIONS` with
/// `WebHook-Request-Origin`): allow that origin, at any rate.
pub fn webhook_handshake(request_origin: Option<&str>) -> Result<Response<Vec<u8>>, ApiError> {
    let origin = request_origin
        .filter(|o| !o.trim().is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "OPTIONS needs a WebHook-Request-Origin header",
            )
        })?;
    let value = http::HeaderValue::from_str(origin.trim()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "WebHook-Request-Origin is not a valid header value",
        )
    })?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("WebHook-Allowed-Origin", value)
        .header("WebHook-Allowed-Rate", "*")
        .header(http::header::ALLOW, "POST, OPTIONS")
        .body(Vec::new())
        .expect("valid headers"))
}

/// What to do with a delivery.
#[derive(Debug)]
pub enum Plan {
    /// Answer at once (validation handshake).
    Respond(Response<Vec<u8>>),
    /// Send every unit's request, then [`summarize`].
    Write(Writes),
}

/// The documents of a delivery and the requests that write them.
#[derive(Debug)]
pub struct Writes {
    /// Every document, in event order.
    pub documents: Vec<Document>,
    /// Requests; together they cover every document once.
    pub units: Vec<WriteUnit>,
}

/// One request writing one or more documents.
#[derive(Debug)]
pub struct WriteUnit {
    /// Indexes into [`Writes::documents`], in the request's operation order.
    pub documents: Vec<usize>,
    /// A transactional batch (true) or a single upsert.
    pub batch: bool,
    /// The signed request.
    pub request: Request<Vec<u8>>,
}

/// Room left in a batch body for each operation's envelope.
const OPERATION_OVERHEAD: usize = 128;

/// Checks the content type, decodes, maps to documents and signs every write.
///
/// | content type | encoding |
/// |---|---|
/// | `application/json` | Event Grid schema (array), or CloudEvents binary mode when `ce-specversion` is present |
/// | `application/cloudevents+json` | CloudEvents structured mode (one event) |
/// | `application/cloudevents-batch+json` | CloudEvents batch mode (array) |
/// | anything else with `ce-specversion` | CloudEvents binary mode |
pub fn decode(
    content_type: Option<&str>,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Decoded, ApiError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    let binary = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("ce-specversion"));
    let events = match (media.as_deref(), binary) {
        (Some("application/cloudevents+json"), _) => decode_cloudevent(body)?,
        (Some("application/cloudevents-batch+json"), _) => decode_cloudevents_batch(body)?,
        (_, true) => decode_cloudevent_binary(headers, content_type, body)?,
        (Some("application/json"), false) => match decode_event_grid(body)? {
            Delivery::Validation { code, .. } => {
                return Ok(Decoded::Respond(json_response(StatusCode::OK, &json!({ "validationResponse": code }))));
            }
            Delivery::Events(events) => events,
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "send Event Grid events as application/json, or CloudEvents as application/cloudevents+json, \
                 application/cloudevents-batch+json or in binary mode (ce-* headers)",
            ))
        }
    };
    Ok(Decoded::Events(events))
}

/// Limits checked on the raw body before it is parsed: nesting depth
/// (`max_nesting_depth`, 400) and, for a batch, the number of events
/// (`max_events_per_request`, 413), so an oversized or hostile body costs a
/// single scan, not a parse.
pub fn check_shape(body: &[u8], config: &Config) -> Result<(), ApiError> {
    let s = crate::events::shape(body);
    if s.depth > config.ingest.max_depth {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NestingTooDeep",
            format!(
                "the body nests {} levels deep; at most {} are accepted",
                s.depth, config.ingest.max_depth
            ),
        ));
    }
    match s.top_level_items {
        Some(n) if n > config.ingest.max_events => Err(too_many_events(n, config)),
        _ => Ok(()),
    }
}

fn value_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn too_many_events(n: usize, config: &Config) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "TooManyEvents",
        format!(
            "{n} events in one request; at most {} are accepted",
            config.ingest.max_events
        ),
    )
}

/// A decoded delivery, before any write is planned (and so before any
/// credential for the store is needed).
#[derive(Debug)]
pub enum Decoded {
    /// Answer at once (validation handshake).
    Respond(Response<Vec<u8>>),
    /// The delivery's events.
    Events(Vec<crate::events::Event>),
}

/// [`decode`], then [`plan_events`]: a whole delivery planned.
pub fn plan(
    content_type: Option<&str>,
    headers: &[(String, String)],
    body: &[u8],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Plan, ApiError> {
    check_shape(body, config)?;
    match decode(content_type, headers, body)? {
        Decoded::Respond(r) => Ok(Plan::Respond(r)),
        Decoded::Events(events) => plan_events(events, config, credential, now).map(Plan::Write),
    }
}

/// Checks the event count, maps events to documents and signs every write:
/// the part of [`plan`] every encoding shares once its events are decoded.
pub fn plan_events(
    events: Vec<crate::events::Event>,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    if events.len() > config.ingest.max_events {
        return Err(too_many_events(events.len(), config));
    }
    // Queue messages arrive base64-encoded, so their nesting is only known
    // once decoded: check each event's payload too.
    for e in &events {
        let depth = e.data.as_ref().map_or(0, value_depth);
        if depth > config.ingest.max_depth {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "NestingTooDeep",
                format!(
                    "event `{}` nests its data {depth} levels deep; at most {} are accepted",
                    e.id, config.ingest.max_depth
                ),
            ));
        }
    }
    let documents = events
        .into_iter()
        .map(|e| into_document(e, &config.ingest.partition_key))
        .collect::<Result<Vec<_>, _>>()?;
    for d in &documents {
        check_no_sealed_shape(d)?;
    }
    let units = write_units(&documents, config, credential, now).map_err(|e| ApiError::from(&e))?;
    Ok(Writes { documents, units })
}

/// Refuses an event holding a value shaped like a sealed value (an object
/// with exactly the members `cmk`, `iv` and `ct`): stored records reserve
/// that shape for encrypted fields, and a reader refuses a record holding
/// one its header does not list, so such an event, once stored, could never
/// be read back. Checked in both stages.
pub fn check_no_sealed_shape(d: &Document) -> Result<(), ApiError> {
    match crate::envelope::sealed_pointers(&d.body).first() {
        None => Ok(()),
        Some(at) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SealedShapeInEvent",
            format!(
                "event `{}`: the value at {at} is an object with exactly the members cmk, iv and ct, \
                 a shape stored records reserve for encrypted values; send it in another shape",
                d.body["event"]["id"].as_str().unwrap_or_default()
            ),
        )),
    }
}

/// A configured protected pointer that cannot be resolved in an event
/// because a value on its way has another shape (see
/// [`crate::envelope::resolve`]). The event is refused rather than stored
/// with that field in plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolvable {
    /// The document's id.
    pub document_id: String,
    /// The event's own id.
    pub event_id: String,
    /// Where, as document-level pointers (`/event/...`).
    pub mismatch: crate::envelope::ShapeMismatch,
}

impl From<&Unresolvable> for ApiError {
    fn from(u: &Unresolvable) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ProtectedFieldUnresolvable",
            format!(
                "event `{}`: protected field {} cannot be sealed: {} is a {}, not what the pointer needs; \
                 the event is refused so that no protected value is stored in plaintext",
                u.event_id, u.mismatch.pointer, u.mismatch.at, u.mismatch.found
            ),
        )
    }
}

/// The document-level pointers to seal in each document: the configured
/// pointers for its event type, resolved in its event (`*` expanded; absent
/// fields skipped). Fails on the first event where a configured pointer
/// meets a value of another shape.
pub fn protected_pointers(
    documents: &[Document],
    protected: &crate::config::ProtectedFields,
) -> Result<Vec<Vec<String>>, Unresolvable> {
    documents
        .iter()
        .map(|d| {
            let event = &d.body["event"];
            let ty = event["type"].as_str().unwrap_or_default();
            let mut out = Vec::new();
            for p in protected.for_type(ty) {
                match crate::envelope::resolve(event, p) {
                    Ok(found) => out.extend(found.into_iter().map(|f| format!("/event{f}"))),
                    Err(m) => {
                        return Err(Unresolvable {
                            document_id: d.id.clone(),
                            event_id: event["id"].as_str().unwrap_or_default().to_owned(),
                            mismatch: crate::envelope::ShapeMismatch {
                                pointer: format!("/event{}", m.pointer),
                                at: format!("/event{}", m.at.trim_end_matches('/')),
                                found: m.found,
                            },
                        })
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// Every event of `documents` in which a configured pointer meets a value of
/// another shape: one entry per event and configured pointer (its first
/// mismatch), in delivery order, so each is logged, not only the first.
pub fn unresolvable(
    documents: &[Document],
    protected: &crate::config::ProtectedFields,
) -> Vec<Unresolvable> {
    let mut out = Vec::new();
    for d in documents {
        let event = &d.body["event"];
        let ty = event["type"].as_str().unwrap_or_default();
        for p in protected.for_type(ty) {
            if let Err(m) = crate::envelope::resolve(event, p) {
                out.push(Unresolvable {
                    document_id: d.id.clone(),
                    event_id: event["id"].as_str().unwrap_or_default().to_owned(),
                    mismatch: crate::envelope::ShapeMismatch {
                        pointer: format!("/event{}", m.pointer),
                        at: format!("/event{}", m.at.trim_end_matches('/')),
                        found: m.found,
                    },
                });
            }
        }
    }
    out
}

/// Groups documents by partition key (first-seen order) and cuts each group
/// into batches that fit the service's limits.
fn write_units(
    documents: &[Document],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Vec<WriteUnit>, CosmosError> {
    let builder = CosmosRequest::new(&config.cosmos.endpoint, credential, now);
    let container = &config.cosmos.container;
    let create = config.cosmos.write_mode == WriteMode::Create;
    // Each document is serialized once: its length sizes the batches, and
    // the same bytes go into the request.
    let mut bodies: Vec<Option<Vec<u8>>> = documents
        .iter()
        .map(|d| Some(serde_json::to_vec(&d.body).expect("JSON values serialize")))
        .collect();
    let mut groups: Vec<(&str, Vec<(usize, usize)>)> = Vec::new();
    for (i, d) in documents.iter().enumerate() {
        let size = bodies[i].as_ref().map_or(0, Vec::len);
        match groups.iter_mut().find(|(pk, _)| *pk == d.partition_key) {
            Some((_, members)) => members.push((i, size)),
            None => groups.push((&d.partition_key, vec![(i, size)])),
        }
    }
    let mut units = Vec::new();
    for (pk, members) in groups {
        let mut chunk: Vec<usize> = Vec::new();
        let mut bytes = 2;
        let mut chunks = Vec::new();
        for (i, size) in members {
            let op = size + OPERATION_OVERHEAD + pk.len();
            if !chunk.is_empty()
                && (chunk.len() == MAX_BATCH_OPERATIONS || bytes + op > MAX_BATCH_BYTES)
            {
                chunks.push(std::mem::take(&mut chunk));
                bytes = 2;
            }
            chunk.push(i);
            bytes += op;
        }
        chunks.push(chunk);
        for chunk in chunks {
            let unit = if let [only] = chunk[..] {
                let d = &documents[only];
                let body = bodies[only].take().expect("each document is in one unit");
                WriteUnit {
                    request: if create {
                        builder.create_document(container, &d.partition_key, body)?
                    } else {
                        builder.upsert_document(container, &d.partition_key, body)?
                    },
                    documents: chunk,
                    batch: false,
                }
            } else {
                let serialized: Vec<&[u8]> = chunk
                    .iter()
                    .map(|&i| bodies[i].as_deref().expect("each document is in one unit"))
                    .collect();
                WriteUnit {
                    request: builder.batch(
                        container,
                        pk,
                        &serialized,
                        if create {
                            crate::cosmos::BatchOperation::Create
                        } else {
                            crate::cosmos::BatchOperation::Upsert
                        },
                    )?,
                    documents: chunk,
                    batch: true,
                }
            };
            units.push(unit);
        }
    }
    Ok(units)
}

/// A delivery's data key, and the same key wrapped by a KEK version.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryKey<'a> {
    /// The data key.
    pub dek: &'a crate::envelope::Dek,
    /// The exact KEK version that wrapped it.
    pub kid: &'a str,
    /// The wrapped data key.
    pub wrapped_dek: &'a [u8],
}

/// Stage two: seals each document's protected fields with the delivery's one
/// data key (wrapped once, as `wrapped_dek` by `kid`), then rebuilds the
/// signed writes. `nonce` yields a fresh random nonce per sealed value.
pub fn seal(
    writes: Writes,
    protected: &crate::config::ProtectedFields,
    key: &DeliveryKey<'_>,
    nonce: &mut dyn FnMut() -> [u8; 12],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    let DeliveryKey {
        dek,
        kid,
        wrapped_dek,
    } = *key;
    let mut documents = writes.documents;
    let plans = protected_pointers(&documents, protected).map_err(|u| ApiError::from(&u))?;
    for (d, pointers) in documents.iter_mut().zip(plans) {
        crate::envelope::seal(&mut d.body, &pointers, dek, kid, wrapped_dek, &mut *nonce).map_err(
            |e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "SealFailed",
                    e.to_string(),
                )
            },
        )?;
    }
    let units = write_units(&documents, config, credential, now).map_err(|e| ApiError::from(&e))?;
    Ok(Writes { documents, units })
}

/// Stage two, for a delivery in which the configuration protects nothing
/// (see [`protected_pointers`]): each document gets a header that seals no
/// field and names `kid`, the key version in use, without a data key, so
/// no key is made or wrapped.
pub fn seal_none(
    writes: Writes,
    kid: &str,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    let mut documents = writes.documents;
    for d in &mut documents {
        crate::envelope::seal_nothing(&mut d.body, kid).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SealFailed",
                e.to_string(),
            )
        })?;
    }
    let units = write_units(&documents, config, credential, now).map_err(|e| ApiError::from(&e))?;
    Ok(Writes { documents, units })
}

/// The outcome of one unit's request, as sent back by the I/O layer.
pub type WriteResult = Result<Response<Vec<u8>>, CosmosError>;

/// What one unit achieved, for logs.
#[derive(Debug)]
pub struct UnitOutcome {
    /// Documents in the unit.
    pub documents: usize,
    /// Whether it was a transactional batch.
    pub batch: bool,
    /// Charge and activity id, or the failure.
    pub result: Result<Metrics, CosmosError>,
}

/// What one unit wrote: a status per document (201 created, 200 replaced
/// or already there), in the unit's order, and the charge.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitWritten {
    /// One status per document of the unit.
    pub statuses: Vec<u16>,
    /// Charge (summed over every request of the unit) and activity id.
    pub metrics: Metrics,
}

/// Parses one unit's answer.
pub fn unit_outcome(unit: &WriteUnit, result: WriteResult) -> Result<UnitWritten, CosmosError> {
    let resp = result?;
    if unit.batch {
        let o = parse_batch(&resp, unit.documents.len())?;
        Ok(UnitWritten {
            statuses: o.results.iter().map(|r| r.status).collect(),
            metrics: o.metrics,
        })
    } else {
        let o = parse_write(&resp)?;
        Ok(UnitWritten {
            statuses: vec![o.status],
            metrics: o.metrics,
        })
    }
}

/// Whether a create-only unit failed because a document already exists:
/// 409, or a batch whose failing operation was 409 (nothing of it applied).
pub fn is_conflict(e: &CosmosError) -> bool {
    matches!(
        e,
        CosmosError::Conflict(_) | CosmosError::BatchOperationFailed { status: 409, .. }
    )
}

/// The create of one document on its own (create-or-verify of a batch that
/// met a conflict).
pub fn create_request(
    doc: &Document,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, CosmosError> {
    CosmosRequest::new(&config.cosmos.endpoint, credential, now).create_document(
        &config.cosmos.container,
        &doc.partition_key,
        serde_json::to_vec(&doc.body).expect("JSON values serialize"),
    )
}

/// Parses the answer to [`create_request`]: `Ok(None)` when the document
/// already exists (then [`read_request`] and [`verify_stored`]).
pub fn create_outcome(result: WriteResult) -> Result<Option<(u16, Metrics)>, CosmosError> {
    match parse_write(&result?) {
        Ok(o) => Ok(Some((o.status, o.metrics))),
        Err(e) if is_conflict(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The point read of a document that a create found already there.
pub fn read_request(
    doc: &Document,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Request<Vec<u8>> {
    CosmosRequest::new(&config.cosmos.endpoint, credential, now).read_document(
        &config.cosmos.container,
        &doc.id,
        &doc.partition_key,
    )
}

/// Decides on a document that a create found already there, from its read:
/// the same event is "already written" (its read's metrics), another one
/// [`CosmosError::ExistsWithOtherContent`]. A document deleted in between
/// is a transient failure: the sender's redelivery creates it.
pub fn verify_stored(doc: &Document, read: WriteResult) -> Result<Metrics, CosmosError> {
    let stored = match parse_read(&read?) {
        Ok(s) => s,
        Err(CosmosError::NotFound(e)) => return Err(CosmosError::Transient(e)),
        Err(e) => return Err(e),
    };
    if stored_matches(&stored.body, &doc.body) {
        Ok(stored.metrics)
    } else {
        Err(CosmosError::ExistsWithOtherContent { id: doc.id.clone() })
    }
}

/// Whether a stored document holds the event of `ours`.
///
/// Unsealed documents must be equal except for the service's system
/// properties ([`same_content`]). Sealed documents cannot be compared
/// byte for byte: a redelivery is sealed again under a fresh data key and
/// fresh nonces, so every ciphertext and the wrapped key differ. They match
/// when everything that is not sealed is equal (id, partition key, layout
/// version, encoding, and every event member outside the protected fields:
/// the event's id, source, type, time and unprotected data) and the same
/// fields are sealed. The sealed values themselves are not opened: the
/// document id is a digest of the event's source and id, which CloudEvents
/// requires to identify one event, so a sender reusing an id for other
/// protected content is not detected (documented in docs/cosmos.md).
pub fn stored_matches(stored: &serde_json::Value, ours: &serde_json::Value) -> bool {
    let sealed = |d: &serde_json::Value| d.get(crate::envelope::HEADER).is_some();
    if !sealed(stored) && !sealed(ours) {
        return same_content(stored, ours);
    }
    match (unsealed_view(stored), unsealed_view(ours)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A sealed document without what differs between two sealings of the same
/// event: system properties, the header's key material, the sealed values
/// (each replaced by `null`). `None` if the header is unreadable.
fn unsealed_view(doc: &serde_json::Value) -> Option<serde_json::Value> {
    let h = crate::envelope::header(doc).ok()??;
    let mut view = doc.clone();
    let m = view.as_object_mut()?;
    m.retain(|k, _| !SYSTEM_PROPERTIES.contains(&k.as_str()));
    m.insert(
        crate::envelope::HEADER.into(),
        json!({ "fields": h.fields }),
    );
    for pointer in &h.fields {
        *view.pointer_mut(pointer)? = serde_json::Value::Null;
    }
    Some(view)
}

/// The status a document gets in the answer when its id holds another
/// event (create mode).
pub const CONFLICT: u16 = 409;

/// Parses each unit's answer and decides the response ([`respond`]).
pub fn summarize(
    writes: &Writes,
    results: Vec<WriteResult>,
) -> (Response<Vec<u8>>, Vec<UnitOutcome>) {
    let outcomes = writes
        .units
        .iter()
        .zip(results)
        .map(|(u, r)| unit_outcome(u, r))
        .collect();
    respond(writes, outcomes)
}

/// Decides the response from each unit's outcome. All written → 200 with
/// every document id and status; otherwise the most retryable failure, so
/// the sender redelivers the whole delivery (writes are idempotent).
pub fn respond(
    writes: &Writes,
    results: Vec<Result<UnitWritten, CosmosError>>,
) -> (Response<Vec<u8>>, Vec<UnitOutcome>) {
    let mut statuses: Vec<Option<u16>> = vec![None; writes.documents.len()];
    let mut outcomes = Vec::with_capacity(writes.units.len());
    for (unit, result) in writes.units.iter().zip(results) {
        let result = result.map(|w| {
            for (&i, s) in unit.documents.iter().zip(&w.statuses) {
                statuses[i] = Some(*s);
            }
            w.metrics
        });
        outcomes.push(UnitOutcome {
            documents: unit.documents.len(),
            batch: unit.batch,
            result,
        });
    }
    let failure = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .max_by_key(|e| e.is_transient());
    // Create mode: a document whose id holds another event is reported as
    // a conflict (status 409) beside the others. Only a delivery of which
    // no event could be stored fails as a whole, so a redelivery of a mixed
    // one converges on the same 200 instead of failing forever.
    let conflicts = statuses.iter().filter(|s| **s == Some(CONFLICT)).count();
    let all_conflict = failure.is_none() && conflicts > 0 && conflicts == writes.documents.len();
    let response = match failure {
        Some(e) => ApiError::from(e).to_response(),
        None if all_conflict => {
            let first = &writes.documents[0];
            let mut e = ApiError::from(&CosmosError::ExistsWithOtherContent {
                id: first.id.clone(),
            });
            if conflicts > 1 {
                e.message = format!(
                    "every event of the delivery ({conflicts}) conflicts with a stored document holding another event; nothing was changed"
                );
            }
            e.to_response()
        }
        None => {
            let charge: f64 = outcomes
                .iter()
                .flat_map(|o| o.result.as_ref().ok())
                .map(|m| m.request_charge)
                .sum();
            let documents: Vec<_> = writes
                .documents
                .iter()
                .zip(&statuses)
                .map(|(d, s)| {
                    let mut entry =
                        json!({"id": d.id, "partitionKey": d.partition_key, "status": s});
                    if *s == Some(CONFLICT) {
                        entry["code"] = json!("DocumentConflict");
                    }
                    if let Some(fields) = d.body[crate::envelope::HEADER]["fields"].as_array() {
                        entry["sealedFields"] = json!(fields.len());
                    }
                    entry
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "accepted": writes.documents.len() - conflicts,
                    "conflicts": conflicts,
                    "documents": documents,
                    "requests": writes.units.len(),
                    "requestCharge": charge,
                }),
            )
        }
    };
    (response, outcomes)
}

#[cfg(test)]
mod tests;
