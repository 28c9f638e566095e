//! `POST /events`: from a request body to signed writes and back to an answer.
//!
//! Pure steps around the one I/O step (sending the writes): [`plan`] decodes
//! and validates everything and builds every signed request before anything is
//! sent, so a bad event or an oversized document fails the whole batch with
//! nothing written; [`summarize`] turns the write results into the answer.

use http::{Request, Response, StatusCode};
use serde_json::json;

use crate::api::{json_response, ApiError};
use crate::config::Config;
use crate::cosmos::{parse_write, CosmosError, CosmosRequest, WriteOutcome};
use crate::document::{to_document, Document};
use crate::events::{decode_event_grid, Delivery};
use crate::time::UnixTime;

/// What to do with a delivery.
#[derive(Debug)]
pub enum Plan {
    /// Answer at once (validation handshake).
    Respond(Response<Vec<u8>>),
    /// Send these writes, one per document, then [`summarize`].
    Write(Vec<(Document, Request<Vec<u8>>)>),
}

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
    let builder = CosmosRequest::new(&config.cosmos.endpoint, &config.cosmos.credential, now);
    let mut writes = Vec::with_capacity(events.len());
    for event in &events {
        let doc = to_document(event, &config.ingest.partition_key)?;
        let body = serde_json::to_vec(&doc.body).expect("JSON values serialize");
        let req = builder
            .upsert_document(&config.cosmos.container, &doc.partition_key, body)
            .map_err(|e| ApiError::from(&e))?;
        writes.push((doc, req));
    }
    Ok(Plan::Write(writes))
}

/// The outcome of one write, as sent back by the I/O layer.
pub type WriteResult = Result<Response<Vec<u8>>, CosmosError>;

/// Parses each write's answer and decides the response. All written → 200
/// with the document ids; otherwise the most retryable failure, so the sender
/// redelivers the whole batch (writes are idempotent upserts).
pub fn summarize(
    docs: &[Document],
    results: Vec<WriteResult>,
) -> (Response<Vec<u8>>, Vec<Result<WriteOutcome, CosmosError>>) {
    let outcomes: Vec<Result<WriteOutcome, CosmosError>> = results
        .into_iter()
        .map(|r| r.and_then(|resp| parse_write(&resp)))
        .collect();
    let failure = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .max_by_key(|e| e.is_transient());
    let response = match failure {
        Some(e) => ApiError::from(e).to_response(),
        None => {
            let charge: f64 = outcomes
                .iter()
                .flatten()
                .map(|o| o.metrics.request_charge)
                .sum();
            let documents: Vec<_> = docs
                .iter()
                .zip(outcomes.iter().flatten())
                .map(|(d, o)| json!({"id": d.id, "partitionKey": d.partition_key, "status": o.status}))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"accepted": docs.len(), "documents": documents, "requestCharge": charge}),
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
                "max_events_per_request" => Some("3".into()),
                _ => None,
            })
        })
        .unwrap()
    }

    fn event(id: &str) -> Value {
        json!({"id": id, "topic": "/t", "subject": "s", "eventType": "T", "eventTime": "2024-01-01T00:00:00Z", "data": {"a": 1}})
    }

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn wrong_content_type_is_415() {
        let e = plan(Some("text/plain"), b"[]", &config(), UnixTime(0)).unwrap_err();
        assert_eq!(e.status, 415);
        assert!(plan(None, b"[]", &config(), UnixTime(0)).is_err());
    }

    #[test]
    fn validation_is_answered_without_writes() {
        let v = json!([{"id":"1","topic":"/t","subject":"","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime":"2024-01-01T00:00:00Z","data":{"validationCode":"abc"}}]);
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
    fn a_batch_becomes_signed_upserts() {
        let Plan::Write(w) = plan(
            Some("application/json"),
            &body(json!([event("1"), event("2")])),
            &config(),
            UnixTime(0),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(w.len(), 2);
        assert_ne!(w[0].0.id, w[1].0.id);
        assert_eq!(w[0].1.headers()["x-ms-documentdb-is-upsert"], "True");
        assert_eq!(w[0].1.headers()["x-ms-documentdb-partitionkey"], "[\"/t\"]");
    }

    #[test]
    fn limits_and_bad_events_fail_the_whole_batch_before_any_write() {
        let too_many = body(json!([event("1"), event("2"), event("3"), event("4")]));
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

    #[test]
    fn summary_reports_every_document() {
        let Plan::Write(w) = plan(
            Some("application/json"),
            &body(json!([event("1"), event("2")])),
            &config(),
            UnixTime(0),
        )
        .unwrap() else {
            panic!()
        };
        let docs: Vec<_> = w.into_iter().map(|(d, _)| d).collect();
        let (r, _) = summarize(&docs, vec![ok(201), ok(200)]);
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["accepted"], 2);
        assert_eq!(v["requestCharge"], 5.0);
        assert_eq!(v["documents"][0]["id"], json!(docs[0].id));
        assert_eq!(v["documents"][1]["status"], 200);
    }

    #[test]
    fn any_failure_fails_the_batch_preferring_retryable() {
        let docs = vec![];
        let unauthorized = || {
            Ok(Response::builder()
                .status(401)
                .body(b"{\"code\":\"Unauthorized\",\"message\":\"no\"}".to_vec())
                .unwrap())
        };
        let (r, _) = summarize(&docs, vec![ok(201), unauthorized()]);
        assert_eq!(r.status(), 502);
        let (r, _) = summarize(
            &docs,
            vec![unauthorized(), Err(CosmosError::Transport("reset".into()))],
        );
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
    }
}
