//! The Spin entry point: matches the method and path and hands the request
//! to the edge module of that route (`delivery`, `reader`, `maintenance`,
//! `readiness`); it holds no logic of its own.

use http::{Response, StatusCode};
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method};

use crate::api::{json_response, ApiError};
use crate::delivery::{options_events, post_events, post_queue};
use crate::log;
use crate::maintenance::{post_rewrap, post_seal};
use crate::reader::{delete_record, get_records};
use crate::readiness::readyz;

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest) -> Response<Vec<u8>> {
    crate::outbound::start_request();
    let method = req.method();
    let path = req.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let result = match (&method, path.as_str()) {
        (Method::Get, "/healthz") => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        (Method::Get, "/readyz") => readyz(&req, false).await,
        (Method::Post, "/readyz/roundtrip") => readyz(&req, true).await,
        (Method::Post, "/events") => post_events(req).await,
        (Method::Options, "/events") => options_events(&req).await,
        (Method::Post, "/queue") => post_queue(req).await,
        (Method::Get, p) if p.starts_with("/records/") => get_records(req).await,
        (Method::Delete, p) if p.starts_with("/records/") => delete_record(req).await,
        (Method::Post, "/admin/rewrap") => post_rewrap(req).await,
        (Method::Post, "/admin/seal") => post_seal(req).await,
        (
            _,
            "/healthz" | "/events" | "/queue" | "/readyz" | "/readyz/roundtrip" | "/admin/rewrap"
            | "/admin/seal",
        ) => Err(ApiError::new(
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
