//! Tests of [`super`] (`ingest`), one file per stage, and the fixtures
//! they share.

mod outcome;
mod plan;
mod scope;
mod seal;
mod sealed_size;
mod sender;
mod size;
mod verify;

use super::*;
use crate::api::ApiError;
use crate::config::Config;
use crate::config::WriteMode;
use crate::cosmos::{CosmosError, Credential, Metrics, MAX_BATCH_BYTES};
use crate::time::UnixTime;
use http::Response;
use serde_json::{json, Value};

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

fn protected(json_text: &str) -> crate::config::ProtectedFields {
    crate::config::ProtectedFields::parse(json_text, "/source").unwrap()
}

fn with_data(data: Value) -> Value {
    let mut e = event("1");
    e["data"] = data;
    e
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
