//! The Spin entry point: reads the request, routes, and answers. It holds no
//! logic of its own; each route delegates to the core.

use futures::StreamExt;
use http::{Response, StatusCode};
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method};

use crate::api::{json_response, ApiError};
use crate::config::Config;
use crate::ingest::{self, Plan};
use crate::log;
use crate::outbound;
use crate::records;
use crate::time::UnixTime;

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest) -> Response<Vec<u8>> {
    let method = req.method();
    let path = req.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let result = match (&method, path.as_str()) {
        (Method::Get, "/healthz") => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        (Method::Post, "/events") => post_events(req).await,
        (Method::Get, p) if p.starts_with("/records/") => get_records(req).await,
        (_, "/healthz" | "/events") => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route for {path}"),
        )),
    };
    result.unwrap_or_else(|e| {
        log::emit(
            if e.status.is_server_error() {
                "error"
            } else {
                "warn"
            },
            "request_failed",
            &[
                ("method", json!(method.to_string())),
                ("path", json!(path)),
                ("status", json!(e.status.as_u16())),
                ("code", json!(e.code)),
                ("message", json!(e.message)),
            ],
        );
        e.to_response()
    })
}

fn load_config() -> Result<Config, ApiError> {
    Config::load(|name| match spin_sdk::variables::get(name) {
        Ok(v) => Ok(Some(v)),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    })
    .map_err(ApiError::from)
}

fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok())
}

/// Reads the body, refusing more than `limit` bytes before buffering them.
async fn read_body(req: IncomingRequest, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BodyTooLarge",
            format!("request body exceeds {limit} bytes"),
        )
    };
    if let Some(len) = header(&req, "content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BodyUnreadable",
                format!("could not read the body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn get_records(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let path = req.path_with_query().unwrap_or_default();
    let read = records::parse(
        &path,
        header(&req, records::READ_KEY_HEADER).as_deref(),
        &config,
    )?;
    let sent = outbound::send_cosmos(
        records::request(&read, &config, UnixTime::now())?,
        config.cosmos.retry,
    )
    .await;
    let answer = records::respond(&read, sent.result);
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
        ],
    );
    answer
}

fn clone_request(req: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut r = http::Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.headers_mut() = req.headers().clone();
    r
}

async fn post_events(req: IncomingRequest) -> Result<Response<Vec<u8>>, ApiError> {
    let config = load_config()?;
    let content_type = header(&req, "content-type");
    let body = read_body(req, config.ingest.max_body_bytes).await?;
    let writes = match ingest::plan(content_type.as_deref(), &body, &config, UnixTime::now())? {
        Plan::Respond(r) => {
            log::emit("info", "subscription_validated", &[]);
            return Ok(r);
        }
        Plan::Write(w) => w,
    };
    let requests = writes
        .units
        .iter()
        .map(|u| clone_request(&u.request))
        .collect();
    let sent = outbound::send_all_cosmos(requests, config.cosmos.retry).await;
    let stats: Vec<(u32, u64)> = sent.iter().map(|s| (s.attempts, s.duration_ms)).collect();
    let (response, outcomes) =
        ingest::summarize(&writes, sent.into_iter().map(|s| s.result).collect());
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
