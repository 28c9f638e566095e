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

use http::{Request, Response, StatusCode};
use serde_json::json;

use crate::api::{json_response, ApiError};
use crate::config::Config;
use crate::cosmos::{
    parse_batch, parse_write, CosmosError, CosmosRequest, Metrics, MAX_BATCH_BYTES,
    MAX_BATCH_OPERATIONS,
};
use crate::document::{to_document, Document};
use crate::events::{decode_event_grid, Delivery};
use crate::time::UnixTime;

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
pub fn plan(
    content_type: Option<&str>,
    body: &[u8],
    config: &Config,
    now: UnixTime,
) -> Result<Plan, ApiError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "send Event Grid events as application/json",
        ));
    }
    let events = match decode_event_grid(body)? {
        Delivery::Validation { code, .. } => {
            return Ok(Plan::Respond(json_response(
                StatusCode::OK,
                &json!({ "validationResponse": code }),
            )));
        }
        Delivery::Events(events) => events,
    };
    if events.len() > config.ingest.max_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooManyEvents",
            format!(
                "{} events in one request; at most {} are accepted",
                events.len(),
                config.ingest.max_events
            ),
        ));
    }
    let documents = events
        .iter()
        .map(|e| to_document(e, &config.ingest.partition_key))
        .collect::<Result<Vec<_>, _>>()?;
    let units = write_units(&documents, config, now).map_err(|e| ApiError::from(&e))?;
    Ok(Plan::Write(Writes { documents, units }))
}

/// Groups documents by partition key (first-seen order) and cuts each group
/// into batches that fit the service's limits.
fn write_units(
    documents: &[Document],
    config: &Config,
    now: UnixTime,
) -> Result<Vec<WriteUnit>, CosmosError> {
    let builder = CosmosRequest::new(&config.cosmos.endpoint, &config.cosmos.credential, now);
    let container = &config.cosmos.container;
    let mut groups: Vec<(&str, Vec<(usize, usize)>)> = Vec::new();
    for (i, d) in documents.iter().enumerate() {
        let size = serde_json::to_vec(&d.body)
            .expect("JSON values serialize")
            .len();
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
                let body = serde_json::to_vec(&d.body).expect("JSON values serialize");
                WriteUnit {
                    request: builder.upsert_document(container, &d.partition_key, body)?,
                    documents: chunk,
                    batch: false,
                }
            } else {
                let bodies: Vec<&serde_json::Value> =
                    chunk.iter().map(|&i| &documents[i].body).collect();
                WriteUnit {
                    request: builder.batch_upsert(container, pk, &bodies)?,
                    documents: chunk,
                    batch: true,
                }
            };
            units.push(unit);
        }
    }
    Ok(units)
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

/// Parses each unit's answer and decides the response. All written → 200
/// with every document id; otherwise the most retryable failure, so the
/// sender redelivers the whole delivery (writes are idempotent upserts).
pub fn summarize(
    writes: &Writes,
    results: Vec<WriteResult>,
) -> (Response<Vec<u8>>, Vec<UnitOutcome>) {
    let mut statuses: Vec<Option<u16>> = vec![None; writes.documents.len()];
    let mut outcomes = Vec::with_capacity(writes.units.len());
    for (unit, result) in writes.units.iter().zip(results) {
        let result = result.and_then(|resp| {
            if unit.batch {
                let o = parse_batch(&resp, unit.documents.len())?;
                for (&i, r) in unit.documents.iter().zip(&o.results) {
                    statuses[i] = Some(r.status);
                }
                Ok(o.metrics)
            } else {
                let o = parse_write(&resp)?;
                statuses[unit.documents[0]] = Some(o.status);
                Ok(o.metrics)
            }
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
    let response = match failure {
        Some(e) => ApiError::from(e).to_response(),
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
                .map(|(d, s)| json!({"id": d.id, "partitionKey": d.partition_key, "status": s}))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "accepted": writes.documents.len(),
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
            &body(Value::Array(events)),
            &config(),
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
        let e = plan(Some("text/plain"), b"[]", &config(), UnixTime(0)).unwrap_err();
        assert_eq!(e.status, 415);
        assert!(plan(None, b"[]", &config(), UnixTime(0)).is_err());
    }

    #[test]
    fn validation_is_answered_without_writes() {
        let v = json!([{"id": "1", "topic": "/t", "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2024-01-01T00:00:00Z", "data": {"validationCode": "abc"}}]);
        let Plan::Respond(r) = plan(
            Some("application/json; charset=utf-8"),
            &body(v),
            &config(),
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
            plan(Some("application/json"), &too_many, &config(), UnixTime(0))
                .unwrap_err()
                .status,
            413
        );
        let mut bad = event("2");
        bad.as_object_mut().unwrap().remove("eventType");
        let e = plan(
            Some("application/json"),
            &body(json!([event("1"), bad])),
            &config(),
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
        let failed = Ok(Response::builder()
            .status(207)
            .body(br#"[{"statusCode":424},{"statusCode":429}]"#.to_vec())
            .unwrap());
        let (r, _) = summarize(&w, vec![failed]);
        assert_eq!(r.status(), 503);
    }
}
