//! Parsing responses and classifying failures.

use crate::api::{ApiError, DEFAULT_RETRY_AFTER_SECS};
use http::Response;
use serde::Deserialize;

/// What the service said about one request, for logs and callers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// `x-ms-request-charge`: request units consumed.
    pub request_charge: f64,
    /// `x-ms-activity-id`: the service's id for the request, for support.
    pub activity_id: Option<String>,
}

impl Metrics {
    /// Reads the metric headers of a response.
    pub fn from_response<B>(resp: &Response<B>) -> Self {
        let h = resp.headers();
        Self {
            request_charge: h
                .get("x-ms-request-charge")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            activity_id: h
                .get("x-ms-activity-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// A successful document write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// 201 (created) or 200 (replaced by an upsert).
    pub status: u16,
    /// The stored document's `_etag`.
    pub etag: Option<String>,
    /// Charge and activity id.
    pub metrics: Metrics,
}

/// The service's own account of a failed request. Never holds a key or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// HTTP status.
    pub status: u16,
    /// `x-ms-substatus`, when sent.
    pub sub_status: Option<u32>,
    /// The body's `code`, e.g. `Unauthorized`.
    pub code: String,
    /// The body's `message`, shortened.
    pub message: String,
    /// `x-ms-activity-id`.
    pub activity_id: Option<String>,
    /// `x-ms-retry-after-ms`, when the service asked for a pause.
    pub retry_after_ms: Option<u64>,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)?;
        if let Some(id) = &self.activity_id {
            write!(f, " (activity {id})")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to Cosmos DB.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CosmosError {
    /// Refused before sending: the service takes at most 2 MB per document.
    #[error("document is {size} bytes; Cosmos DB accepts at most {limit}")]
    DocumentTooLarge {
        /// Serialized size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Refused before sending: more than 100 operations or 2 MB in one batch.
    #[error("a transactional batch takes at most 100 operations and 2 MB; this one has {operations} operations and {bytes} bytes")]
    BatchTooLarge {
        /// Operations in the batch.
        operations: usize,
        /// Serialized size (0 when refused on the count).
        bytes: usize,
    },
    /// One operation of a transactional batch failed, so none was applied.
    #[error("batch operation {index} failed with {status}; no operation of the batch was applied")]
    BatchOperationFailed {
        /// Index of the failing operation.
        index: usize,
        /// Its status.
        status: u16,
        /// The service's activity id for the batch.
        activity_id: Option<String>,
        /// Whether the failure may pass.
        transient: bool,
        /// The service's requested pause, if any.
        retry_after_ms: Option<u64>,
    },
    /// 401/403: the key, token or role assignment was not accepted.
    #[error("Cosmos DB refused the credentials: {0}")]
    Unauthorized(ServiceError),
    /// 404: the database, container or document does not exist.
    #[error("Cosmos DB resource not found: {0}")]
    NotFound(ServiceError),
    /// 409: a document with this id already exists in the partition.
    #[error("document already exists: {0}")]
    Conflict(ServiceError),
    /// A create-only write met a stored document under the same id that
    /// holds another event (see `ingest::stored_matches`).
    #[error("document {id} already exists with other content; it was left unchanged")]
    ExistsWithOtherContent {
        /// The document id.
        id: String,
    },
    /// 412: the `If-Match` etag no longer matches.
    #[error("document changed since it was read: {0}")]
    PreconditionFailed(ServiceError),
    /// 408, 429, 449, 5xx: worth retrying later.
    #[error("Cosmos DB is temporarily unavailable: {0}")]
    Transient(ServiceError),
    /// Any other refusal: retrying the same request will not help.
    #[error("Cosmos DB rejected the request: {0}")]
    Rejected(ServiceError),
    /// The request did not reach the service or no full answer came back.
    #[error("could not reach Cosmos DB: {0}")]
    Transport(String),
    /// A 2xx answer that is not what the API promises.
    #[error("unexpected answer from Cosmos DB: {0}")]
    InvalidResponse(String),
}

impl CosmosError {
    /// Whether the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CosmosError::Transient(_)
                | CosmosError::Transport(_)
                | CosmosError::BatchOperationFailed {
                    transient: true,
                    ..
                }
        )
    }

    /// The service's pause request, if any.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            CosmosError::Transient(e) => e.retry_after_ms,
            CosmosError::BatchOperationFailed { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

const MAX_MESSAGE_CHARS: usize = 400;

/// Classifies a non-2xx answer.
pub fn service_error(resp: &Response<Vec<u8>>) -> CosmosError {
    let status = resp.status().as_u16();
    let h = resp.headers();
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let body: Option<ErrorBody> = serde_json::from_slice(resp.body()).ok();
    let (code, message) = match body {
        Some(b) => (b.code, b.message),
        None => (
            String::new(),
            String::from_utf8_lossy(resp.body()).into_owned(),
        ),
    };
    let code = if code.is_empty() {
        resp.status()
            .canonical_reason()
            .unwrap_or("Error")
            .replace(' ', "")
    } else {
        code
    };
    let message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    let e = ServiceError {
        status,
        sub_status: header("x-ms-substatus").and_then(|v| v.parse().ok()),
        code,
        message,
        activity_id: header("x-ms-activity-id").map(str::to_owned),
        retry_after_ms: header_retry_after_ms(resp),
    };
    match status {
        401 | 403 => CosmosError::Unauthorized(e),
        404 => CosmosError::NotFound(e),
        409 => CosmosError::Conflict(e),
        412 => CosmosError::PreconditionFailed(e),
        s if is_transient_status(s) => CosmosError::Transient(e),
        _ => CosmosError::Rejected(e),
    }
}

/// Whether an answer is a failure that may pass, and the pause the service
/// asked for: `Some(pause)` for 408, 429, 449 and 5xx, and for a
/// transactional batch answered 207 whose failing operation is one of those
/// (the batch was not applied, so sending it again is safe; the pause is
/// the operation's `retryAfterMilliseconds`, else the response's
/// `x-ms-retry-after-ms`). `None` for success and permanent failures.
pub fn transient_failure(resp: &Response<Vec<u8>>) -> Option<Option<u64>> {
    let status = resp.status().as_u16();
    if status == 207 {
        let raw: Vec<RawOperationResult> = serde_json::from_slice(resp.body()).ok()?;
        let failed = raw
            .iter()
            .find(|r| !(200..300).contains(&r.status_code) && r.status_code != 424)?;
        if !is_transient_status(failed.status_code) {
            return None;
        }
        return Some(
            failed
                .retry_after_ms
                .or_else(|| header_retry_after_ms(resp)),
        );
    }
    if resp.status().is_success() || !is_transient_status(status) {
        return None;
    }
    Some(header_retry_after_ms(resp))
}

fn header_retry_after_ms(resp: &Response<Vec<u8>>) -> Option<u64> {
    resp.headers()
        .get("x-ms-retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
}

/// Whether the service refused the request's credentials (401, 403): with
/// an Entra ID token, worth one more attempt with a fresh token.
pub fn token_refused(resp: &Response<Vec<u8>>) -> bool {
    matches!(resp.status().as_u16(), 401 | 403)
}

/// One operation's result inside a successful transactional batch.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationResult {
    /// 201 created, 200 replaced.
    pub status: u16,
    /// The document's new `_etag`.
    pub etag: Option<String>,
    /// Request units of this operation.
    pub request_charge: f64,
}

/// A transactional batch that was applied in full.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// One result per operation, in order.
    pub results: Vec<OperationResult>,
    /// Charge and activity id of the whole batch.
    pub metrics: Metrics,
}

#[derive(Deserialize)]
struct RawOperationResult {
    #[serde(rename = "statusCode")]
    status_code: u16,
    #[serde(rename = "requestCharge", default)]
    request_charge: f64,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
    #[serde(rename = "retryAfterMilliseconds", default)]
    retry_after_ms: Option<u64>,
}

fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 449 | 500..=599)
}

/// Parses the answer to a transactional batch of `expected` operations: 200
/// with every operation 2xx, or 207 naming the operation that failed (the
/// others answer 424 and were not applied).
pub fn parse_batch(resp: &Response<Vec<u8>>, expected: usize) -> Result<BatchOutcome, CosmosError> {
    let status = resp.status().as_u16();
    if status != 200 && status != 207 {
        return Err(if resp.status().is_success() {
            CosmosError::InvalidResponse(format!("status {status} to a batch"))
        } else {
            service_error(resp)
        });
    }
    let raw: Vec<RawOperationResult> = serde_json::from_slice(resp.body()).map_err(|e| {
        CosmosError::InvalidResponse(format!(
            "batch results are not a JSON array of results: {e}"
        ))
    })?;
    if raw.len() != expected {
        return Err(CosmosError::InvalidResponse(format!(
            "batch of {expected} operations answered with {} results",
            raw.len()
        )));
    }
    let metrics = Metrics::from_response(resp);
    if let Some((index, op)) = raw
        .iter()
        .enumerate()
        .find(|(_, r)| !(200..300).contains(&r.status_code) && r.status_code != 424)
        .or_else(|| {
            raw.iter()
                .enumerate()
                .find(|(_, r)| !(200..300).contains(&r.status_code))
        })
    {
        return Err(CosmosError::BatchOperationFailed {
            index,
            status: op.status_code,
            activity_id: metrics.activity_id,
            transient: is_transient_status(op.status_code),
            retry_after_ms: op.retry_after_ms,
        });
    }
    Ok(BatchOutcome {
        results: raw
            .into_iter()
            .map(|r| OperationResult {
                status: r.status_code,
                etag: r.etag,
                request_charge: r.request_charge,
            })
            .collect(),
        metrics,
    })
}

/// A document as stored, with its etag.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    /// The document, system properties (`_rid`, `_ts`, …) included.
    pub body: serde_json::Value,
    /// `_etag` (from the `etag` header, else the body).
    pub etag: Option<String>,
    /// Charge and activity id.
    pub metrics: Metrics,
}

/// Parses a point read: 200 with the document; 404 is [`CosmosError::NotFound`].
pub fn parse_read(resp: &Response<Vec<u8>>) -> Result<StoredDocument, CosmosError> {
    if resp.status().as_u16() != 200 {
        return Err(if resp.status().is_success() {
            CosmosError::InvalidResponse(format!("status {} to a read", resp.status().as_u16()))
        } else {
            service_error(resp)
        });
    }
    let body: serde_json::Value = serde_json::from_slice(resp.body())
        .map_err(|e| CosmosError::InvalidResponse(format!("document is not JSON: {e}")))?;
    if !body.is_object() {
        return Err(CosmosError::InvalidResponse(
            "document is not a JSON object".into(),
        ));
    }
    let etag = resp
        .headers()
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            body.get("_etag")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        });
    Ok(StoredDocument {
        body,
        etag,
        metrics: Metrics::from_response(resp),
    })
}

/// Parses a delete: 204.
pub fn parse_delete(resp: &Response<Vec<u8>>) -> Result<Metrics, CosmosError> {
    match resp.status().as_u16() {
        204 | 200 => Ok(Metrics::from_response(resp)),
        s if (200..300).contains(&s) => Err(CosmosError::InvalidResponse(format!(
            "status {s} to a delete"
        ))),
        _ => Err(service_error(resp)),
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The page's documents (or values, for `SELECT VALUE`).
    pub items: Vec<serde_json::Value>,
    /// The page's documents that could not be parsed on their own (nested
    /// past `serde_json`'s 127 levels, or otherwise not acceptable to it,
    /// such as a lone surrogate escape: written by something other than the
    /// component), taken out of `items`: each caller counts them as failed
    /// and goes on with the rest, so one such document never stops a pass.
    pub unparsed: Vec<Unparsed>,
    /// `x-ms-continuation`: pass it back for the next page; `None` at the end.
    pub continuation: Option<String>,
    /// Charge and activity id.
    pub metrics: Metrics,
}

/// A document of a query page that could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Unparsed {
    /// Its `id`, when it has a string one (read without parsing the rest).
    pub id: Option<String>,
    /// Why it could not be parsed.
    pub reason: String,
}

#[derive(Deserialize)]
struct RawQueryPage {
    #[serde(rename = "Documents")]
    documents: Vec<serde_json::Value>,
}

/// The `id` of a document, its other members skipped unparsed (skipping a
/// value does not recurse).
#[derive(Deserialize)]
struct IdOnly {
    id: Option<String>,
}

/// The documents of a page whose whole parse failed, each parsed on its
/// own; `None` if the page cannot be split into documents either.
fn documents_one_by_one(body: &[u8]) -> Option<(Vec<serde_json::Value>, Vec<Unparsed>)> {
    let mut items = Vec::new();
    let mut unparsed = Vec::new();
    for (start, end) in documents::ranges(body)? {
        let doc = &body[start..end];
        match serde_json::from_slice(doc) {
            Ok(v) => items.push(v),
            Err(e) => unparsed.push(Unparsed {
                id: serde_json::from_slice::<IdOnly>(doc)
                    .ok()
                    .and_then(|d| d.id),
                reason: format!("the stored document cannot be parsed: {e}"),
            }),
        }
    }
    Some((items, unparsed))
}

/// Parses one page of a query.
pub fn parse_query(resp: &Response<Vec<u8>>) -> Result<QueryPage, CosmosError> {
    if resp.status().as_u16() != 200 {
        return Err(if resp.status().is_success() {
            CosmosError::InvalidResponse(format!("status {} to a query", resp.status().as_u16()))
        } else {
            service_error(resp)
        });
    }
    // Parsed whole first. A document nested past the parser's limit fails
    // that parse; the page is then split and parsed document by document
    // (each counts its levels from its own root), so one such document is
    // set aside instead of making the whole page unreadable.
    let (items, unparsed) = match serde_json::from_slice::<RawQueryPage>(resp.body()) {
        Ok(raw) => (raw.documents, Vec::new()),
        Err(e) => documents_one_by_one(resp.body()).ok_or_else(|| {
            CosmosError::InvalidResponse(format!("query page without a Documents array: {e}"))
        })?,
    };
    let continuation = resp
        .headers()
        .get("x-ms-continuation")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    Ok(QueryPage {
        items,
        unparsed,
        continuation,
        metrics: Metrics::from_response(resp),
    })
}

/// System properties the service adds to every stored document.
pub const SYSTEM_PROPERTIES: &[&str] = &["_rid", "_self", "_etag", "_attachments", "_ts", "_lsn"];

/// Whether a stored document holds exactly `ours`, ignoring the system
/// properties the service adds: how a create-only write that met 409 tells
/// "already written" from a real conflict.
pub fn same_content(stored: &serde_json::Value, ours: &serde_json::Value) -> bool {
    match (stored.as_object(), ours.as_object()) {
        (Some(s), Some(o)) => {
            let user = |m: &serde_json::Map<String, serde_json::Value>| -> serde_json::Map<String, serde_json::Value> {
                m.iter()
                    .filter(|(k, _)| !SYSTEM_PROPERTIES.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            user(s) == user(o)
        }
        _ => false,
    }
}

/// Parses the answer to a create or upsert.
pub fn parse_write(resp: &Response<Vec<u8>>) -> Result<WriteOutcome, CosmosError> {
    let status = resp.status().as_u16();
    if !matches!(status, 200 | 201) {
        return if resp.status().is_success() {
            Err(CosmosError::InvalidResponse(format!(
                "status {status} to a document write"
            )))
        } else {
            Err(service_error(resp))
        };
    }
    let etag = resp
        .headers()
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(WriteOutcome {
        status,
        etag,
        metrics: Metrics::from_response(resp),
    })
}

impl From<&CosmosError> for ApiError {
    fn from(e: &CosmosError) -> Self {
        let msg = e.to_string();
        match e {
            CosmosError::DocumentTooLarge { .. } => {
                ApiError::new(http::StatusCode::PAYLOAD_TOO_LARGE, "DocumentTooLarge", msg)
            }
            CosmosError::BatchTooLarge { .. } => {
                ApiError::new(http::StatusCode::PAYLOAD_TOO_LARGE, "BatchTooLarge", msg)
            }
            CosmosError::Transient(_)
            | CosmosError::Transport(_)
            | CosmosError::BatchOperationFailed {
                transient: true, ..
            } => {
                let secs = e
                    .retry_after_ms()
                    .map(|ms| ms.div_ceil(1000).max(1) as u32)
                    .unwrap_or(DEFAULT_RETRY_AFTER_SECS);
                ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "StoreUnavailable",
                    msg,
                )
                .retry_after(secs)
            }
            CosmosError::Unauthorized(_) => {
                ApiError::new(http::StatusCode::BAD_GATEWAY, "StoreAuthFailed", msg)
            }
            CosmosError::NotFound(_) => {
                ApiError::new(http::StatusCode::BAD_GATEWAY, "StoreNotFound", msg)
            }
            CosmosError::ExistsWithOtherContent { .. } => {
                ApiError::new(http::StatusCode::CONFLICT, "DocumentConflict", msg)
            }
            CosmosError::BatchOperationFailed { .. }
            | CosmosError::Conflict(_)
            | CosmosError::PreconditionFailed(_)
            | CosmosError::Rejected(_)
            | CosmosError::InvalidResponse(_) => {
                ApiError::new(http::StatusCode::BAD_GATEWAY, "StoreRejected", msg)
            }
        }
    }
}

mod documents;

#[cfg(test)]
mod tests;
