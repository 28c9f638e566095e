//! `GET /records/...`: reading stored documents back, for callers holding the
//! read key (`x-cmk-read-key`), separate from anything used to ingest.
//!
//! - `GET /records/{partitionKey}/{id}`: one document.
//! - `GET /records/{partitionKey}?type=T&limit=N&continuation=C`: a page of
//!   the partition's documents (optionally of one event type), newest
//!   continuation token in the answer.
//! - `DELETE /records/{partitionKey}/{id}` (admin key, `x-cmk-admin-key`):
//!   erasure of one record, e.g. for a data subject's right to erasure; 204,
//!   404 when absent, 412 when an `If-Match` etag no longer matches.
//!
//! Path segments are percent-decoded (a partition key such as `/topics/a` is
//! sent as `%2Ftopics%2Fa`). Answers omit the service's system properties
//! except `_etag` and `_ts`.

use http::{header, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::api::{json_response, ApiError};
use crate::config::Config;
use crate::cosmos::{
    parse_delete, parse_query, parse_read, CosmosError, CosmosRequest, Credential, Metrics, Query,
};
use crate::percent::percent_decode;
use crate::time::UnixTime;

/// Largest page.
pub const MAX_PAGE: u32 = 100;

/// A parsed read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    /// One document.
    One {
        /// Partition key value.
        partition_key: String,
        /// Document id.
        id: String,
    },
    /// A page of a partition.
    Page {
        /// Partition key value.
        partition_key: String,
        /// Only this event type, if given.
        event_type: Option<String>,
        /// Page size.
        limit: u32,
        /// Where the previous page ended.
        continuation: Option<String>,
    },
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", msg)
}

/// A document id as the component writes them: 64 lowercase hex digits
/// (see [`crate::document`]). Anything else cannot name a record it wrote.
fn record_id(v: String) -> Result<String, ApiError> {
    if v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(v)
    } else {
        Err(bad("id must be 64 lowercase hex digits (a document id)"))
    }
}

/// A partition key value from the path: not empty, no control characters
/// (writes refuse them too: [`unaddressable`]; here they would only serve
/// to forge log lines or headers).
fn partition_key(v: String) -> Result<String, ApiError> {
    match unaddressable(&v) {
        Some(why) => Err(bad(format!("partition key {why}"))),
        None => Ok(v),
    }
}

/// Why a partition key value cannot name a record in these routes, if it
/// cannot: the one rule the write path (which refuses such an event) and
/// the read and erase routes share.
pub fn unaddressable(pk: &str) -> Option<&'static str> {
    if pk.is_empty() {
        Some("is empty")
    } else if pk.chars().any(char::is_control) {
        Some("holds control characters")
    } else {
        None
    }
}

/// Checks the caller and parses the path and query (`path` without
/// `/records`'s prefix handled here: it is the full request path).
pub fn parse(
    path_and_query: &str,
    read_key: Option<&str>,
    config: &Config,
) -> Result<ReadRequest, ApiError> {
    crate::access::READER.check(config.read.keys.as_ref(), read_key)?;
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let rest = path
        .strip_prefix("/records/")
        .ok_or_else(|| bad("expected /records/{partitionKey}[/{id}]"))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let decode = |s: &str, what: &str| -> Result<String, ApiError> {
        let v = percent_decode(s)
            .ok_or_else(|| bad(format!("{what} is not valid percent-encoded UTF-8")))?;
        if v.is_empty() {
            return Err(bad(format!("{what} is empty")));
        }
        Ok(v)
    };
    match segments.as_slice() {
        [pk, id] => {
            if let Some(other) = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
                .find(|k| *k != "fields")
            {
                return Err(bad(format!(
                    "a single record takes only `fields`, not `{other}`"
                )));
            }
            Ok(ReadRequest::One { partition_key: partition_key(decode(pk, "partition key")?)?, id: record_id(decode(id, "id")?)? })
        }
        [pk] => {
            let mut event_type = None;
            let mut limit = 20;
            let mut continuation = None;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v).ok_or_else(|| bad(format!("`{k}` is not valid percent-encoded UTF-8")))?;
                match k {
                    "type" => event_type = Some(v),
                    "limit" => {
                        limit = v.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| bad(format!("limit must be 1 to {MAX_PAGE}")))?
                    }
                    "continuation" => continuation = Some(v),
                    "fields" => {}
                    other => return Err(bad(format!("unknown query parameter `{other}`"))),
                }
            }
            Ok(ReadRequest::Page { partition_key: partition_key(decode(pk, "partition key")?)?, event_type, limit, continuation })
        }
        _ => Err(bad("expected /records/{partitionKey}[/{id}], with a partition key containing `/` sent as %2F")),
    }
}

/// A parsed erasure request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// Partition key value.
    pub partition_key: String,
    /// Document id.
    pub id: String,
    /// The caller's `If-Match` etag, passed through to the store.
    pub if_match: Option<String>,
}

/// Checks the admin key and parses `DELETE /records/{partitionKey}/{id}`.
pub fn parse_delete_request(
    path_and_query: &str,
    admin_key: Option<&str>,
    if_match: Option<&str>,
    config: &Config,
) -> Result<DeleteRequest, ApiError> {
    crate::access::authorize_admin(admin_key, config.admin.keys.as_ref())?;
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    if !query.is_empty() {
        return Err(bad(
            "DELETE /records/{partitionKey}/{id} takes no query parameters",
        ));
    }
    let segments: Vec<&str> = path
        .strip_prefix("/records/")
        .map(|r| r.split('/').collect())
        .unwrap_or_default();
    let [pk, id] = segments.as_slice() else {
        return Err(bad(
            "expected DELETE /records/{partitionKey}/{id}, with a partition key containing `/` sent as %2F",
        ));
    };
    let decode = |s: &str, what: &str| -> Result<String, ApiError> {
        percent_decode(s).filter(|v| !v.is_empty()).ok_or_else(|| {
            bad(format!(
                "{what} is empty or not valid percent-encoded UTF-8"
            ))
        })
    };
    let if_match = if_match.map(str::trim).filter(|v| !v.is_empty());
    if if_match.is_some_and(|v| http::HeaderValue::from_str(v).is_err()) {
        return Err(bad("If-Match is not a valid header value"));
    }
    Ok(DeleteRequest {
        partition_key: partition_key(decode(pk, "partition key")?)?,
        id: record_id(decode(id, "id")?)?,
        if_match: if_match.map(str::to_owned),
    })
}

/// The signed Cosmos DB delete.
pub fn delete_request(
    d: &DeleteRequest,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, ApiError> {
    CosmosRequest::new(&config.cosmos.endpoint, credential, now)
        .delete_document_if_match(
            &config.cosmos.container,
            &d.id,
            &d.partition_key,
            d.if_match.as_deref(),
        )
        .map_err(|e| bad(e.to_string()))
}

/// The caller's answer to an erasure: 204, 404 `RecordNotFound`, 412
/// `RecordChanged`, else the store's failure.
pub fn delete_answer(
    resp: Result<Response<Vec<u8>>, CosmosError>,
    attempts: u32,
) -> Result<(Response<Vec<u8>>, Metrics), ApiError> {
    let resp = resp.map_err(|e| ApiError::from(&e))?;
    match parse_delete(&resp) {
        // After a retry, 404 most likely means an earlier attempt erased the
        // record and its answer was lost: either way it is gone.
        Err(CosmosError::NotFound(_)) if attempts > 1 => Ok((
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Vec::new())
                .expect("static response"),
            Metrics::default(),
        )),
        Ok(m) => Ok((
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Vec::new())
                .expect("static response"),
            m,
        )),
        Err(CosmosError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "RecordNotFound",
            "no record with that partition key and id",
        )),
        Err(CosmosError::PreconditionFailed(_)) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "RecordChanged",
            "the record changed since the etag in If-Match was read; nothing was deleted",
        )),
        Err(e) => Err(ApiError::from(&e)),
    }
}

/// The `fields` parameters of a read: document-level JSON Pointers (as in
/// the returned document, e.g. `/event/data/ssn`), comma-separated and/or
/// repeated, each percent-decoded after splitting (so `%2C` is a literal
/// comma). `None` when absent: open every protected field. An empty value
/// opens none, and then the key-encryption key is not called at all.
pub fn fields(path_and_query: &str) -> Result<Option<Vec<String>>, ApiError> {
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let mut out: Option<Vec<String>> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "fields" {
            continue;
        }
        let list = out.get_or_insert_with(Vec::new);
        for raw in v.split(',').filter(|p| !p.is_empty()) {
            let p = percent_decode(raw)
                .filter(|p| p.starts_with('/'))
                .ok_or_else(|| bad("each of `fields` is a JSON Pointer such as /event/data/ssn"))?;
            if !list.contains(&p) {
                list.push(p);
            }
        }
    }
    Ok(out)
}

/// The signed Cosmos DB request for a read.
pub fn request(
    read: &ReadRequest,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, ApiError> {
    let b = CosmosRequest::new(&config.cosmos.endpoint, credential, now);
    let c = &config.cosmos.container;
    match read {
        ReadRequest::One { partition_key, id } => Ok(b.read_document(c, id, partition_key)),
        ReadRequest::Page {
            partition_key,
            event_type,
            limit,
            continuation,
        } => {
            let mut q =
                Query::new("SELECT * FROM c WHERE c.pk = @pk").param("@pk", partition_key.as_str());
            if let Some(t) = event_type {
                q = Query::new(format!("{} AND c.event.type = @type", q.text))
                    .param("@pk", partition_key.as_str())
                    .param("@type", t.as_str());
            }
            b.query_documents(c, &q, Some(partition_key), *limit, continuation.as_deref())
                .map_err(|e| bad(e.to_string()))
        }
    }
}

fn public(mut doc: Value) -> Value {
    if let Some(m) = doc.as_object_mut() {
        m.retain(|k, _| !k.starts_with('_') || k == "_etag" || k == "_ts");
    }
    doc
}

/// What the store answered, before protected fields are opened.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// One document and its etag.
    One(Value, Option<String>),
    /// A page of documents, where the next page starts, and the records
    /// of the page that could not be read (taken out of the documents).
    Page(Vec<Value>, Option<String>, Vec<Unreadable>),
}

/// A record of a page that could not be read, reported instead of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// The record's `id` as stored (`null` if it has none).
    pub id: Value,
    /// The error code it would get on its own (`RecordTampered`, …).
    pub code: &'static str,
    /// Why.
    pub message: String,
}

impl Answer {
    /// The documents, for opening in place.
    pub fn documents_mut(&mut self) -> Vec<&mut Value> {
        match self {
            Answer::One(d, _) => vec![d],
            Answer::Page(ds, _, _) => ds.iter_mut().collect(),
        }
    }
}

/// Parses the service's answer.
pub fn parse_answer(
    read: &ReadRequest,
    resp: Result<Response<Vec<u8>>, CosmosError>,
) -> Result<Answer, ApiError> {
    let resp = resp.map_err(|e| ApiError::from(&e))?;
    match read {
        ReadRequest::One { .. } => match parse_read(&resp) {
            Ok(doc) => Ok(Answer::One(doc.body, doc.etag)),
            Err(CosmosError::NotFound(_)) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "RecordNotFound",
                "no record with that partition key and id",
            )),
            Err(e) => Err(ApiError::from(&e)),
        },
        ReadRequest::Page { .. } => {
            let page = parse_query(&resp).map_err(|e| match e {
                CosmosError::Rejected(ref s) if s.status == 400 => {
                    bad(format!("the continuation token was refused: {}", s.message))
                }
                e => ApiError::from(&e),
            })?;
            // A document too deep to parse is reported as its point read
            // would answer (`StoreRejected`), and the page goes on.
            let unreadable = page
                .unparsed
                .into_iter()
                .map(|u| Unreadable {
                    id: u.id.map_or(Value::Null, Value::String),
                    code: "StoreRejected",
                    message: u.reason,
                })
                .collect();
            Ok(Answer::Page(page.items, page.continuation, unreadable))
        }
    }
}

/// The caller's response.
pub fn render(answer: Answer) -> Response<Vec<u8>> {
    match answer {
        Answer::One(doc, etag) => {
            let mut r = json_response(StatusCode::OK, &public(doc));
            if let Some(etag) = etag.and_then(|e| http::HeaderValue::from_str(&e).ok()) {
                r.headers_mut().insert(header::ETAG, etag);
            }
            r
        }
        Answer::Page(docs, continuation, unreadable) => {
            let mut body = Map::new();
            body.insert(
                "records".into(),
                Value::Array(docs.into_iter().map(public).collect()),
            );
            body.insert(
                "unreadable".into(),
                Value::Array(
                    unreadable
                        .into_iter()
                        .map(|u| json!({"id": u.id, "error": {"code": u.code, "message": u.message}}))
                        .collect(),
                ),
            );
            body.insert("continuation".into(), json!(continuation));
            json_response(StatusCode::OK, &Value::Object(body))
        }
    }
}

#[cfg(test)]
mod tests;
