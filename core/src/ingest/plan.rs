//! Planning a delivery: decoding the body, checking its shape and limits,
//! mapping events to documents, and grouping the documents into signed
//! write units (one transactional batch per partition-key group) before
//! anything is sent.

use super::protect::check_no_sealed_shape;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::api::{json_response, ApiError};
use crate::config::{Config, WriteMode};
use crate::cosmos::{
    CosmosError, CosmosRequest, Credential, MAX_BATCH_BYTES, MAX_BATCH_OPERATIONS,
};
use crate::document::{into_document, Document};
use crate::events::{
    decode_cloudevent, decode_cloudevent_binary, decode_cloudevents_batch, decode_event_grid,
    Delivery,
};
use crate::time::UnixTime;

/// What to do with a delivery.
#[derive(Debug)]
pub enum Plan {
    /// Answer at once (validation handshake).
    Respond(Response<Vec<u8>>),
    /// Send every unit's request, then [`summarize`](super::summarize).
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
/// Stage one's whole plan; stage two seals [`documents_of`]'s documents
/// first and then plans once, with [`plan_writes`].
pub fn plan_events(
    events: Vec<crate::events::Event>,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    plan_writes(documents_of(events, config)?, config, credential, now)
}

/// Every check of [`plan_events`] before its writes are signed: the event
/// count, each event's nesting, the mapping to documents and the refusal of
/// the sealed shape. Cheap, and free of I/O: stage two runs it before any
/// key is asked for.
pub fn documents_of(
    events: Vec<crate::events::Event>,
    config: &Config,
) -> Result<Vec<Document>, ApiError> {
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
    Ok(documents)
}

/// Serializes and signs the writes of `documents` (as they will be stored:
/// in stage two, once sealed). A document or batch over Cosmos DB's limits
/// is refused here (413 `DocumentTooLarge` / `BatchTooLarge`), before
/// anything is sent.
pub fn plan_writes(
    documents: Vec<Document>,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    let units = write_units(&documents, config, credential, now).map_err(|e| ApiError::from(&e))?;
    Ok(Writes { documents, units })
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
    // A delivery's documents are mostly alike in size: each buffer starts at
    // the previous document's size (and a little more), not at a few bytes
    // doubled again and again.
    let mut room = 1024;
    let mut bodies: Vec<Option<Vec<u8>>> = documents
        .iter()
        .map(|d| {
            let mut body = Vec::with_capacity(room);
            crate::compact_json::write_value(&mut body, &d.body);
            room = body.len() + body.len() / 8;
            Some(body)
        })
        .collect();
    let mut groups: Vec<(&str, Vec<(usize, usize)>)> = Vec::new();
    for (i, d) in documents.iter().enumerate() {
        let size = bodies[i].as_ref().map_or(0, Vec::len);
        match groups.iter_mut().find(|(pk, _)| *pk == d.partition_key) {
            Some((_, members)) => members.push((i, size)),
            None => groups.push((&d.partition_key, vec![(i, size)])),
        }
    }
    let operation = if create {
        crate::cosmos::BatchOperation::Create
    } else {
        crate::cosmos::BatchOperation::Upsert
    };
    let mut units = Vec::new();
    for (pk, members) in groups {
        let mut chunk: Vec<usize> = Vec::new();
        let mut bytes = 2;
        let mut chunks = Vec::new();
        // Exact: the partition key is escaped twice in each operation (a
        // character outside ASCII takes up to 14 bytes there).
        let overhead = crate::cosmos::batch_operation_overhead(pk, operation);
        for (i, size) in members {
            let op = size + overhead;
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
                    request: builder.batch(container, pk, &serialized, operation)?,
                    documents: chunk,
                    batch: true,
                }
            };
            units.push(unit);
        }
    }
    Ok(units)
}
