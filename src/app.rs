//! The Spin entry point: matches the method and path and hands the request
//! to the edge module of that route (`delivery`, `reader`, `maintenance`,
//! `readiness`); it holds no logic of its own.

use http::{Response, StatusCode};
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};

use crate::host::log;
use crate::routes::delivery::{options_events, post_events, post_queue};
use crate::routes::maintenance::{post_erase, post_rewrap, post_seal};
use crate::routes::reader::{delete_record, get_records};
use crate::routes::readiness::readyz;
use cmk_core::api::{json_response, ApiError};

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let resp = answer(req).await;
    crate::host::wire::respond(out, resp).await;
}

async fn answer(req: IncomingRequest) -> Response<Vec<u8>> {
    let started_ms = crate::host::outbound::start_request();
    crate::host::request::start_request();
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
        (Method::Post, "/admin/erase") => post_erase(req).await,
        (
            _,
            "/healthz" | "/events" | "/queue" | "/readyz" | "/readyz/roundtrip" | "/admin/rewrap"
            | "/admin/seal" | "/admin/erase",
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
    let (status, code) = match &result {
        Ok(r) => (r.status().as_u16(), cmk_core::api::error_code_of(r)),
        Err(e) => (e.status.as_u16(), Some(e.code.to_owned())),
    };
    if let Err(e) = &result {
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
    }
    // One summary line per request (probes that pass excepted): what the
    // operator's queries and alerts count (infra/monitoring).
    let passing_probe = method == Method::Get && matches!(path.as_str(), "/healthz" | "/readyz");
    if !(passing_probe && status == 200) {
        let mut fields = vec![
            ("route", json!(route(&method, &path))),
            ("method", json!(method.to_string())),
            ("status", json!(status)),
            ("code", json!(code)),
            (
                "duration_ms",
                json!(crate::host::outbound::now_ms().saturating_sub(started_ms)),
            ),
        ];
        fields.extend(cmk_core::tally::current().fields());
        log::emit(
            if status >= 500 {
                "error"
            } else if status >= 400 {
                "warn"
            } else {
                "info"
            },
            "request",
            &fields,
        );
    }
    result.unwrap_or_else(|e| e.to_response())
}

/// The route family a request belongs to, as the operator's views group
/// them: `push` (Event Grid deliveries), `queue` (forwarded queue messages),
/// `read`, `erase`, `rewrap`, `seal`, `ready`, `health`, or `other`.
fn route(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (_, "/events") => "push",
        (_, "/queue") => "queue",
        (Method::Get, p) if p.starts_with("/records/") => "read",
        (Method::Delete, p) if p.starts_with("/records/") => "erase",
        (_, "/admin/rewrap") => "rewrap",
        (_, "/admin/seal") => "seal",
        (_, "/admin/erase") => "erase",
        (_, "/readyz" | "/readyz/roundtrip") => "ready",
        (_, "/healthz") => "health",
        _ => "other",
    }
}
