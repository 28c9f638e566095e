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
        .and_then(crate::records::percent_decode)
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
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::Value;

    fn config() -> Config {
        Config::load(|name| {
            Ok(match name {
                "cosmos_endpoint" => Some("http://127.0.0.1:8081".into()),
                "cosmos_database" => Some("db".into()),
                "cosmos_container" => Some("events".into()),
                "cosmos_key" => Some("c2VjcmV0".into()),
                "max_events_per_request" => Some("300".into()),
                _ => None,
            })
        })
        .unwrap()
    }

    fn cred() -> Credential {
        config().cosmos.auth.static_credential().unwrap().clone()
    }

    fn event(id: &str) -> Value {
        json!({"id": id, "topic": "/t", "subject": "s", "eventType": "T",
               "eventTime": "2024-01-01T00:00:00Z", "data": {"a": 1}})
    }

    fn event_in(id: &str, topic: &str) -> Value {
        let mut e = event(id);
        e["topic"] = json!(topic);
        e
    }

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn writes(events: Vec<Value>) -> Writes {
        match plan(
            Some("application/json"),
            &[],
            &body(Value::Array(events)),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap()
        {
            Plan::Write(w) => w,
            Plan::Respond(_) => panic!("expected writes"),
        }
    }

    #[test]
    fn wrong_content_type_is_415() {
        let e = plan(
            Some("text/plain"),
            &[],
            b"[]",
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap_err();
        assert_eq!(e.status, 415);
        assert!(plan(None, &[], b"[]", &config(), &cred(), UnixTime(0)).is_err());
    }

    #[test]
    fn validation_is_answered_without_writes() {
        let v = json!([{"id": "1", "topic": "/t", "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2024-01-01T00:00:00Z", "data": {"validationCode": "abc"}}]);
        let Plan::Respond(r) = plan(
            Some("application/json; charset=utf-8"),
            &[],
            &body(v),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(r.status(), 200);
        assert_eq!(
            serde_json::from_slice::<Value>(r.body()).unwrap(),
            json!({"validationResponse": "abc"})
        );
    }

    #[test]
    fn sealing_rewrites_every_request_without_plaintext() {
        let w = writes(vec![
            event_in("1", "/a"),
            event_in("2", "/a"),
            event_in("3", "/b"),
        ]);
        let protected =
            crate::config::ProtectedFields::parse(r#"{"*": ["/data", "/subject"]}"#, "/source")
                .unwrap();
        let dek = crate::envelope::Dek::from_bytes(&[7u8; 32]).unwrap();
        let mut n = 0u8;
        let mut nonce = || {
            n += 1;
            [n; 12]
        };
        let kid = "https://h.managedhsm.azure.net/keys/k/v1";
        let key = DeliveryKey {
            dek: &dek,
            kid,
            wrapped_dek: b"wrapped",
        };
        let sealed = seal(
            w,
            &protected,
            &key,
            &mut nonce,
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap();
        assert_eq!(sealed.units.len(), 2);
        for u in &sealed.units {
            let body = String::from_utf8(u.request.body().clone()).unwrap();
            assert!(
                !body.contains("\"a\":1") && !body.contains("\"s\""),
                "plaintext in {body}"
            );
            assert!(body.contains(kid));
        }
        let d = &sealed.documents[0].body;
        assert_eq!(d["cmk"]["fields"], json!(["/event/data", "/event/subject"]));
        let opened = crate::envelope::open(d, &dek, None).unwrap();
        assert_eq!(opened["event"]["data"], json!({"a": 1}));
        assert_eq!(n, 6, "one nonce per sealed value");
    }

    fn protected(json_text: &str) -> crate::config::ProtectedFields {
        crate::config::ProtectedFields::parse(json_text, "/source").unwrap()
    }

    fn with_data(data: Value) -> Value {
        let mut e = event("1");
        e["data"] = data;
        e
    }

    #[test]
    fn a_protected_pointer_through_another_shape_refuses_the_event() {
        let p = protected(r#"{"*": ["/data/ssn", "/data/card/number"]}"#);
        let cases = [
            (json!("{\"ssn\": \"078-05-1120\"}"), "/event/data", "string"),
            (json!("ssn=078-05-1120"), "/event/data", "string"),
            (json!([{"ssn": "078-05-1120"}]), "/event/data", "array"),
            (json!({"card": "number 4111"}), "/event/data/card", "string"),
            (json!({"card": 4111}), "/event/data/card", "number"),
        ];
        for (data, at, found) in cases {
            let w = writes(vec![with_data(data.clone())]);
            let u = protected_pointers(&w.documents, &p).unwrap_err();
            assert_eq!(
                (u.mismatch.at.as_str(), u.mismatch.found),
                (at, found),
                "{data}"
            );
            assert_eq!(u.event_id, "1");
            let e = ApiError::from(&u);
            assert_eq!(
                (e.status.as_u16(), e.code),
                (400, "ProtectedFieldUnresolvable")
            );
            assert!(
                !e.message.contains("078-05") && !e.message.contains("4111"),
                "{}",
                e.message
            );
            // Sealing refuses it too: nothing is written in plaintext.
            let dek = crate::envelope::Dek::from_bytes(&[7u8; 32]).unwrap();
            let key = DeliveryKey {
                dek: &dek,
                kid: "k",
                wrapped_dek: b"w",
            };
            let mut nonce = || [1u8; 12];
            let e = seal(w, &p, &key, &mut nonce, &config(), &cred(), UnixTime(0)).unwrap_err();
            assert_eq!(e.code, "ProtectedFieldUnresolvable");
        }
        // Absent leaves and absent or null parents are optional fields.
        for data in [
            json!({}),
            json!({"card": {}}),
            json!({"card": null}),
            json!(null),
        ] {
            let w = writes(vec![with_data(data.clone())]);
            assert_eq!(
                protected_pointers(&w.documents, &p).unwrap(),
                vec![Vec::<String>::new()],
                "{data}"
            );
        }
        // A text CloudEvent: data is a string.
        let ce = json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "T",
                        "datacontenttype": "text/plain", "data": "ssn=1"});
        let Plan::Write(w) = plan(
            Some("application/cloudevents+json"),
            &[],
            &body(ce),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            protected_pointers(&w.documents, &p)
                .unwrap_err()
                .mismatch
                .found,
            "string"
        );
    }

    #[test]
    fn wildcards_seal_each_element_of_an_array() {
        let p = protected(r#"{"*": ["/data/items/*/ssn"]}"#);
        let w = writes(vec![with_data(
            json!({"items": [{"ssn": "a"}, {"x": 1}, {"ssn": "b"}]}),
        )]);
        assert_eq!(
            protected_pointers(&w.documents, &p).unwrap(),
            vec![vec![
                "/event/data/items/0/ssn".to_string(),
                "/event/data/items/2/ssn".to_string()
            ]]
        );
        let w = writes(vec![with_data(json!({"items": {"ssn": "a"}}))]);
        assert_eq!(
            protected_pointers(&w.documents, &p)
                .unwrap_err()
                .mismatch
                .found,
            "object"
        );
        let w = writes(vec![with_data(json!({"items": [{"ssn": "a"}, "ssn=b"]}))]);
        assert_eq!(
            protected_pointers(&w.documents, &p)
                .unwrap_err()
                .mismatch
                .at,
            "/event/data/items/1"
        );
    }

    #[test]
    fn sealed_shaped_values_are_refused_in_either_stage() {
        for data in [
            json!({"x": {"cmk": 1, "iv": "AQEBAQEBAQEBAQEB", "ct": "VYKBVEjJBxCxOAZ7fUU8GbL8v12UrKpcN7Uu3eiS"}}),
            json!({"list": [{"cmk": "junk", "iv": 0, "ct": null}]}),
        ] {
            let e = plan(
                Some("application/json"),
                &[],
                &body(json!([event("0"), with_data(data)])),
                &config(),
                &cred(),
                UnixTime(0),
            )
            .unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "SealedShapeInEvent"));
            assert!(
                e.message.contains("event `1`") && !e.message.contains("protected"),
                "{}",
                e.message
            );
        }
        // Four members, or three others, are ordinary objects.
        assert!(plan(
            Some("application/json"),
            &[],
            &body(json!([with_data(json!({"x": {"cmk": 1, "iv": "", "ct": "", "y": 2}, "z": {"cmk": 1, "iv": "", "tag": ""}}))])),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .is_ok());
    }

    #[test]
    fn every_unresolvable_event_of_a_delivery_is_listed() {
        let p = protected(r#"{"*": ["/data/ssn", "/data/card/number"]}"#);
        let in_event = |id: &str, data: Value| {
            let mut e = event(id);
            e["data"] = data;
            e
        };
        let w = writes(vec![
            in_event("1", json!("ssn=1")),
            in_event("2", json!({"ssn": "ok"})),
            in_event("3", json!({"card": "number 4111"})),
        ]);
        let all = unresolvable(&w.documents, &p);
        let got: Vec<(&str, &str)> = all
            .iter()
            .map(|u| (u.mismatch.pointer.as_str(), u.mismatch.at.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/event/data/ssn", "/event/data"),
                ("/event/data/card/number", "/event/data"),
                ("/event/data/card/number", "/event/data/card"),
            ]
        );
        assert_eq!(all[0].document_id, w.documents[0].id);
        assert_eq!(all[2].document_id, w.documents[2].id);
        assert_eq!(
            protected_pointers(&w.documents, &p).unwrap_err(),
            all[0],
            "the answer names the first"
        );
    }

    #[test]
    fn a_delivery_with_nothing_to_seal_gets_key_less_headers() {
        let p = protected(r#"{"*": ["/data/ssn"]}"#);
        let w = writes(vec![event_in("1", "/a"), event_in("2", "/a")]);
        assert!(protected_pointers(&w.documents, &p)
            .unwrap()
            .iter()
            .all(Vec::is_empty));
        let kid = "https://h.managedhsm.azure.net/keys/k/v1";
        let sealed = seal_none(w, kid, &config(), &cred(), UnixTime(0)).unwrap();
        let d = &sealed.documents[0].body;
        assert_eq!(d["cmk"]["fields"], json!([]));
        assert_eq!(d["cmk"]["kid"], kid);
        assert!(d["cmk"].get("dek").is_none());
        assert_eq!(
            crate::envelope::open_with(d, None, None).unwrap()["event"]["data"],
            json!({"a": 1})
        );
        let (r, _) = summarize(&sealed, vec![batch_ok(&[201, 201])]);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["documents"][0]["sealedFields"], 0);
    }

    #[test]
    fn limits_are_checked_on_the_raw_body_before_parsing() {
        let mut c = config();
        c.ingest.max_depth = 4;
        c.ingest.max_events = 2;
        let deep = br#"[{"id":"1","data":{"a":{"b":{"c":1}}}}]"#;
        let e = check_shape(deep, &c).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "NestingTooDeep"));
        // Three events are counted without parsing them (the third is not
        // even valid JSON).
        let e = check_shape(br#"[{}, {}, {"x": "#, &c).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "TooManyEvents"));
        assert!(check_shape(br#"[{"a": "[[[[[[", "b": {}}, {}]"#, &c).is_ok());
        // Base64 queue messages hide their nesting: each event's data is checked.
        let ev = serde_json::json!([{"id": "1", "topic": "/t", "subject": "s", "eventType": "T",
            "eventTime": "2024-01-01T00:00:00Z", "data": {"a": {"b": {"c": {"d": {"e": 1}}}}}}]);
        let events =
            match crate::events::decode_event_grid(&serde_json::to_vec(&ev).unwrap()).unwrap() {
                crate::events::Delivery::Events(e) => e,
                _ => unreachable!(),
            };
        let e = plan_events(events, &c, &cred(), UnixTime(0)).unwrap_err();
        assert_eq!(e.code, "NestingTooDeep");
        // An Event Grid event must not carry CloudEvents attribute names.
        let bad = br#"[{"id":"1","topic":"/t","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{},"source":"/other"}]"#;
        let e = plan(
            Some("application/json"),
            &[],
            bad,
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("`source`"), "{}", e.message);
        // A partition key longer than the store accepts is the sender's error.
        let long = format!(
            r#"[{{"id":"1","topic":"/{}","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{{}}}}]"#,
            "t".repeat(3000)
        );
        let e = plan(
            Some("application/json"),
            &[],
            long.as_bytes(),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("partition key"), "{}", e.message);
    }

    #[test]
    fn senders_need_an_ingest_key() {
        let mut c = config();
        assert_eq!(authorize(&c, None, Some("x"), "").unwrap_err().status, 503);
        c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
        assert!(authorize(&c, None, Some("ingest-key-0123456789"), "").is_ok());
        assert_eq!(authorize(&c, None, None, "").unwrap_err().status, 401);
        assert_eq!(
            authorize(&c, None, Some("wrong-key-0123456789"), "")
                .unwrap_err()
                .status,
            403
        );
        // Without Entra delivery configured, an Authorization header is not a credential.
        assert_eq!(
            authorize(&c, Some("Bearer a.b.c"), None, "")
                .unwrap_err()
                .status,
            401
        );
    }

    #[test]
    fn an_ingest_key_in_the_url_is_refused_unless_allowed() {
        let mut c = config();
        c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
        let e = authorize(&c, None, None, "a=1&code=ingest-key-0123456789").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (401, "KeyInQueryRefused"));
        // The header is the credential; a key also left in the URL is ignored.
        assert!(authorize(&c, None, Some("ingest-key-0123456789"), "code=wrong").is_ok());
        c.ingest.key_in_query = true;
        assert!(authorize(&c, None, None, "a=1&code=ingest-key-0123456789").is_ok());
        assert_eq!(
            authorize(&c, None, None, "code=wrong").unwrap_err().status,
            403
        );
    }

    #[test]
    fn with_entra_delivery_a_bearer_token_is_taken_for_verification() {
        let mut c = config();
        c.ingest.entra = Some(crate::config::SenderTokens {
            policy: crate::jwt::Policy {
                audiences: vec!["api://cmk".into()],
                issuers: crate::jwt::Policy::default_issuers("t"),
                tenant: "t".into(),
                roles: vec![],
                app_ids: vec![],
            },
            jwks_url: "https://login.microsoftonline.com/t/discovery/v2.0/keys".into(),
        });
        let token = "eyJhbGciOiJSUzI1NiJ9.e30.AAAA";
        assert!(matches!(
            authorize(&c, Some(&format!("Bearer {token}")), None, ""),
            Ok(SenderCredential::Token(_))
        ));
        // A malformed token is refused before any signing key is fetched.
        let e = authorize(&c, Some("Bearer not-a-jwt"), None, "").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (401, "InvalidToken"));
        // No keys configured: only tokens are accepted, and a key is not one.
        let e = authorize(&c, None, Some("ingest-key-0123456789"), "").unwrap_err();
        assert_eq!(e.status, 401);
        assert!(e.message.contains("bearer token"));
        // Both configured: either credential.
        c.ingest.keys = Some(crate::access::Keys::parse("ingest-key-0123456789").unwrap());
        assert!(matches!(
            authorize(&c, None, Some("ingest-key-0123456789"), ""),
            Ok(SenderCredential::Key)
        ));
        let role = crate::jwt::JwtError::Claim {
            claim: "roles",
            why: "x".into(),
        };
        assert_eq!(token_error(&role).status, 403);
        let app = crate::jwt::JwtError::Claim {
            claim: "appid",
            why: "x".into(),
        };
        assert_eq!(token_error(&app).status, 403);
        let keys = crate::jwt::JwtError::Jwks("down".into());
        assert_eq!(token_error(&keys).status, 503);
        assert_eq!(token_error(&crate::jwt::JwtError::Signature).status, 401);
        assert_eq!(token_error(&crate::jwt::JwtError::UnknownKey).status, 401);
        // A rotated key not fetched yet: transient, retried by Event Grid.
        let rotated = token_error(&crate::jwt::JwtError::KeysNotRefreshed {
            retry_after_secs: 290,
        });
        assert_eq!(
            (rotated.status.as_u16(), rotated.code, rotated.retry_after),
            (503, "SigningKeysUnavailable", Some(290))
        );
    }

    #[test]
    fn webhook_handshake_echoes_the_origin() {
        let r = webhook_handshake(Some("eventgrid.azure.net")).unwrap();
        assert_eq!(r.headers()["webhook-allowed-origin"], "eventgrid.azure.net");
        assert_eq!(r.headers()["webhook-allowed-rate"], "*");
        assert_eq!(webhook_handshake(None).unwrap_err().status, 400);
    }

    #[test]
    fn cloudevents_in_every_mode_become_documents() {
        let ce =
            json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "T", "data": {"x": 1}});
        let structured = plan(
            Some("application/cloudevents+json"),
            &[],
            &body(ce.clone()),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap();
        let Plan::Write(w) = structured else { panic!() };
        assert_eq!(w.documents[0].body["encoding"], "cloudevents");
        assert_eq!(w.documents[0].id, crate::document::document_id("/s", "a"));
        let batch = plan(
            Some("application/cloudevents-batch+json"),
            &[],
            &body(
                json!([ce.clone(), {"specversion": "1.0", "id": "b", "source": "/s", "type": "T"}]),
            ),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap();
        let Plan::Write(w) = batch else { panic!() };
        assert_eq!(w.documents.len(), 2);
        let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let headers = [
            h("ce-specversion", "1.0"),
            h("ce-id", "a"),
            h("ce-source", "/s"),
            h("ce-type", "T"),
        ];
        let Plan::Write(w) = plan(
            Some("application/json"),
            &headers,
            br#"{"x":1}"#,
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap() else {
            panic!()
        };
        // The same event in any mode is the same document.
        assert_eq!(w.documents[0].id, crate::document::document_id("/s", "a"));
        assert_eq!(w.documents[0].body["event"]["data"], json!({"x": 1}));
    }

    #[test]
    fn one_request_per_partition_key_group() {
        let w = writes(vec![
            event_in("1", "/a"),
            event_in("2", "/b"),
            event_in("3", "/a"),
            event_in("4", "/c"),
        ]);
        assert_eq!(w.documents.len(), 4);
        let shape: Vec<(Vec<usize>, bool)> = w
            .units
            .iter()
            .map(|u| (u.documents.clone(), u.batch))
            .collect();
        assert_eq!(
            shape,
            vec![(vec![0, 2], true), (vec![1], false), (vec![3], false)]
        );
        assert_eq!(
            w.units[0].request.headers()["x-ms-cosmos-batch-atomic"],
            "True"
        );
        assert_eq!(
            w.units[0].request.headers()["x-ms-documentdb-partitionkey"],
            "[\"/a\"]"
        );
        assert_eq!(
            w.units[1].request.headers()["x-ms-documentdb-is-upsert"],
            "True"
        );
    }

    #[test]
    fn batches_are_cut_at_100_operations_and_2_mb() {
        let w = writes((0..250).map(|i| event(&i.to_string())).collect());
        let sizes: Vec<usize> = w.units.iter().map(|u| u.documents.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let big: Vec<Value> = (0..40)
            .map(|i| {
                let mut e = event(&i.to_string());
                e["data"] = json!({"blob": "x".repeat(100_000)});
                e
            })
            .collect();
        let w = writes(big);
        assert!(w.units.len() >= 2);
        assert!(w
            .units
            .iter()
            .all(|u| u.request.body().len() <= MAX_BATCH_BYTES));
        assert_eq!(w.units.iter().map(|u| u.documents.len()).sum::<usize>(), 40);
    }

    #[test]
    fn limits_and_bad_events_fail_the_whole_delivery_before_any_write() {
        let too_many = body(Value::Array(
            (0..301).map(|i| event(&i.to_string())).collect(),
        ));
        assert_eq!(
            plan(
                Some("application/json"),
                &[],
                &too_many,
                &config(),
                &cred(),
                UnixTime(0)
            )
            .unwrap_err()
            .status,
            413
        );
        let mut bad = event("2");
        bad.as_object_mut().unwrap().remove("eventType");
        let e = plan(
            Some("application/json"),
            &[],
            &body(json!([event("1"), bad])),
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("event 1") && e.message.contains("eventType"),
            "{}",
            e.message
        );
    }

    fn ok(status: u16) -> WriteResult {
        Ok(Response::builder()
            .status(status)
            .header("x-ms-request-charge", "2.5")
            .body(b"{}".to_vec())
            .unwrap())
    }

    fn batch_ok(statuses: &[u16]) -> WriteResult {
        let results: Vec<Value> = statuses
            .iter()
            .map(|s| json!({"statusCode": s, "requestCharge": 1.0}))
            .collect();
        Ok(Response::builder()
            .status(200)
            .header("x-ms-request-charge", "4")
            .body(serde_json::to_vec(&results).unwrap())
            .unwrap())
    }

    #[test]
    fn summary_reports_every_document() {
        let w = writes(vec![
            event_in("1", "/a"),
            event_in("2", "/b"),
            event_in("3", "/a"),
        ]);
        let (r, outcomes) = summarize(&w, vec![batch_ok(&[201, 200]), ok(201)]);
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["accepted"], 3);
        assert_eq!(v["requests"], 2);
        assert_eq!(v["requestCharge"], 6.5);
        assert_eq!(v["documents"][0]["id"], json!(w.documents[0].id));
        let statuses: Vec<&Value> = (0..3).map(|i| &v["documents"][i]["status"]).collect();
        assert_eq!(statuses, [&json!(201), &json!(201), &json!(200)]);
        assert!(outcomes[0].batch && outcomes[0].documents == 2);
    }

    fn create_config() -> Config {
        let mut c = config();
        c.cosmos.write_mode = WriteMode::Create;
        c
    }

    fn read_answer(status: u16, body: &Value) -> WriteResult {
        Ok(Response::builder()
            .status(status)
            .header("x-ms-request-charge", "1")
            .body(serde_json::to_vec(body).unwrap())
            .unwrap())
    }

    #[test]
    fn create_mode_never_upserts() {
        let Plan::Write(w) = plan(
            Some("application/json"),
            &[],
            &body(json!([
                event_in("1", "/a"),
                event_in("2", "/a"),
                event_in("3", "/b")
            ])),
            &create_config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap() else {
            panic!()
        };
        let ops: Value = serde_json::from_slice(w.units[0].request.body()).unwrap();
        assert_eq!(ops[0]["operationType"], "Create");
        assert!(w.units[1]
            .request
            .headers()
            .get("x-ms-documentdb-is-upsert")
            .is_none());
        let one = create_request(&w.documents[0], &create_config(), &cred(), UnixTime(0)).unwrap();
        assert!(one.headers().get("x-ms-documentdb-is-upsert").is_none());
        assert_eq!(
            read_request(&w.documents[0], &create_config(), &cred(), UnixTime(0))
                .uri()
                .path(),
            format!("/dbs/db/colls/events/docs/{}", w.documents[0].id)
        );
    }

    #[test]
    fn conflicts_are_recognised_in_both_forms() {
        let w = writes(vec![
            event_in("1", "/a"),
            event_in("2", "/a"),
            event_in("3", "/b"),
        ]);
        let batch409 = Ok(Response::builder()
            .status(207)
            .body(br#"[{"statusCode":424},{"statusCode":409}]"#.to_vec())
            .unwrap());
        let single409 = Ok(Response::builder().status(409).body(Vec::new()).unwrap());
        assert!(is_conflict(
            &unit_outcome(&w.units[0], batch409).unwrap_err()
        ));
        assert!(is_conflict(
            &unit_outcome(&w.units[1], single409).unwrap_err()
        ));
        let throttled = Ok(Response::builder()
            .status(207)
            .body(br#"[{"statusCode":429},{"statusCode":424}]"#.to_vec())
            .unwrap());
        assert!(!is_conflict(
            &unit_outcome(&w.units[0], throttled).unwrap_err()
        ));
    }

    #[test]
    fn a_stored_document_is_verified_not_overwritten() {
        let w = writes(vec![event("1")]);
        let ours = &w.documents[0];
        let mut stored = ours.body.clone();
        stored["_rid"] = json!("r");
        stored["_etag"] = json!("\"e\"");
        stored["_ts"] = json!(5);
        assert!(verify_stored(ours, read_answer(200, &stored)).is_ok());
        stored["event"]["data"]["a"] = json!(2);
        assert_eq!(
            verify_stored(ours, read_answer(200, &stored)).unwrap_err(),
            CosmosError::ExistsWithOtherContent {
                id: ours.id.clone()
            }
        );
        assert_eq!(
            ApiError::from(&CosmosError::ExistsWithOtherContent { id: "x".into() }).status,
            409
        );
        let gone = read_answer(404, &json!({"code": "NotFound", "message": "m"}));
        assert!(verify_stored(ours, gone).unwrap_err().is_transient());
    }

    #[test]
    fn a_redelivery_sealed_under_a_fresh_key_matches_its_stored_document() {
        let protected =
            crate::config::ProtectedFields::parse(r#"{"*": ["/data"]}"#, "/source").unwrap();
        let seal_with = |key_byte: u8, events: Vec<Value>| {
            let dek = crate::envelope::Dek::from_bytes(&[key_byte; 32]).unwrap();
            let mut n = key_byte;
            let mut nonce = || {
                n = n.wrapping_add(1);
                [n; 12]
            };
            let key = DeliveryKey {
                dek: &dek,
                kid: "https://h.managedhsm.azure.net/keys/k/v1",
                wrapped_dek: &[key_byte; 8],
            };
            seal(
                writes(events),
                &protected,
                &key,
                &mut nonce,
                &config(),
                &cred(),
                UnixTime(0),
            )
            .unwrap()
            .documents
            .remove(0)
            .body
        };
        let first = seal_with(1, vec![event("1")]);
        let again = seal_with(9, vec![event("1")]);
        assert_ne!(first, again, "fresh key and nonces");
        assert!(stored_matches(&first, &again));
        // Unsealed members must still agree.
        let mut changed = event("1");
        changed["subject"] = json!("other");
        assert!(!stored_matches(&first, &seal_with(9, vec![changed])));
        // A sealed and an unsealed form of the event do not match.
        assert!(!stored_matches(
            &first,
            &writes(vec![event("1")]).documents[0].body
        ));
        // Nor does a different set of sealed fields.
        let mut other = again.clone();
        other["cmk"]["fields"] = json!([]);
        assert!(!stored_matches(&first, &other));
    }

    #[test]
    fn create_mode_reports_conflicts_per_document() {
        let w = writes(vec![event_in("1", "/a"), event_in("2", "/b")]);
        let conflict = |statuses: Vec<u16>| {
            Ok(UnitWritten {
                statuses,
                metrics: Metrics::default(),
            })
        };
        // One new, one conflicting: 200, the conflict reported; a
        // redelivery (the first now already there) gets the same answer.
        for first in [201, 200] {
            let (r, _) = respond(&w, vec![conflict(vec![first]), conflict(vec![CONFLICT])]);
            assert_eq!(r.status(), 200);
            let v: Value = serde_json::from_slice(r.body()).unwrap();
            assert_eq!(
                (v["accepted"].clone(), v["conflicts"].clone()),
                (json!(1), json!(1))
            );
            assert_eq!(v["documents"][1]["status"], 409);
            assert_eq!(v["documents"][1]["code"], "DocumentConflict");
            assert!(v["documents"][0].get("code").is_none());
        }
        // Nothing of the delivery could be stored: 409 as a whole.
        let (r, _) = respond(&w, vec![conflict(vec![CONFLICT]), conflict(vec![CONFLICT])]);
        assert_eq!(r.status(), 409);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["error"]["code"], "DocumentConflict");
        // A retryable failure still outranks everything.
        let (r, _) = respond(
            &w,
            vec![
                conflict(vec![CONFLICT]),
                Err(CosmosError::Transport("reset".into())),
            ],
        );
        assert_eq!(r.status(), 503);
    }

    #[test]
    fn any_failure_fails_the_delivery_preferring_retryable() {
        let w = writes(vec![event_in("1", "/a"), event_in("2", "/b")]);
        let unauthorized = || {
            Ok(Response::builder()
                .status(401)
                .body(br#"{"code":"Unauthorized","message":"no"}"#.to_vec())
                .unwrap())
        };
        let (r, _) = summarize(&w, vec![ok(201), unauthorized()]);
        assert_eq!(r.status(), 502);
        let (r, _) = summarize(
            &w,
            vec![unauthorized(), Err(CosmosError::Transport("reset".into()))],
        );
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let w = writes(vec![event_in("1", "/a"), event_in("2", "/a")]);
        // A batch still throttled when the retry budget ran out (the I/O
        // layer retries such answers first: cosmos::transient_failure).
        let failed = Ok(Response::builder()
            .status(207)
            .body(br#"[{"statusCode":424},{"statusCode":429}]"#.to_vec())
            .unwrap());
        let (r, _) = summarize(&w, vec![failed]);
        assert_eq!(r.status(), 503);
    }
}
