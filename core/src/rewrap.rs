//! `POST /admin/rewrap`: after the key-encryption key gets a new version,
//! moves stored data keys onto it without touching any field ciphertext.
//!
//! Each call pages through the container for sealed documents whose data key
//! is wrapped by another version than the latest, unwraps each distinct data
//! key once, wraps it again with the latest version, and replaces the
//! document with `If-Match` on the etag it read (a document changed meanwhile
//! is left for the next call). Work per call is bounded by `limit`; the answer
//! carries the store's continuation token, so a caller repeats the call with
//! it until it is `null`. Calls are idempotent: documents already on the
//! latest version are not selected again.
//!
//! This module is pure: it checks the caller, builds the signed query and
//! replace requests, and tallies the answers. `app` does the I/O.

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::api::{json_response, ApiError};
use crate::config::Config;
use crate::cosmos::{
    parse_query, parse_write, CosmosError, CosmosRequest, Credential, Query, QueryPage,
};
use crate::percent::percent_decode;
use crate::time::UnixTime;

/// Documents per call when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;
/// Most documents per call.
pub const MAX_LIMIT: u32 = 100;
/// Most refused documents listed in one answer (all are counted).
const MAX_LISTED: usize = 20;

/// One call's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapRequest {
    /// Most documents to look at.
    pub limit: u32,
    /// Where the previous call stopped.
    pub continuation: Option<String>,
    /// The key whose records move (`key=`); `None`: `hsm_key_name`.
    pub key: Option<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", msg)
}

/// Checks the admin key and parses `?limit=&continuation=&key=`; `key`
/// must be one of the configured keys (`hsm_key_name` or a key scope's).
pub fn parse(
    query: &str,
    admin_key: Option<&str>,
    config: &Config,
) -> Result<RewrapRequest, ApiError> {
    crate::access::authorize_admin(admin_key, config.admin.keys.as_ref())?;
    if config.kek.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "KeyNotConfigured",
            "rewrap needs the key-encryption key (hsm_key_name) configured",
        ));
    }
    let mut out = RewrapRequest {
        limit: DEFAULT_LIMIT,
        continuation: None,
        key: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)
            .ok_or_else(|| bad(format!("`{k}` is not valid percent-encoded UTF-8")))?;
        match k {
            "limit" => {
                out.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(format!("limit must be 1 to {MAX_LIMIT}")))?
            }
            "continuation" if !v.is_empty() => out.continuation = Some(v),
            "continuation" => {}
            "key" => {
                if !config.kek.as_ref().is_some_and(|k| k.owns(&v)) {
                    return Err(bad(format!("`{v}` is not one of the configured keys")));
                }
                out.key = Some(v);
            }
            other => return Err(bad(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(out)
}

/// The prefix every key id of the key `latest_kid` names starts with:
/// `{hsm}/keys/{name}/`.
pub fn kid_prefix(latest_kid: &str) -> &str {
    latest_kid
        .rfind('/')
        .map(|i| &latest_kid[..=i])
        .unwrap_or(latest_kid)
}

/// The query for sealed documents not yet on `latest_kid`, across
/// partitions; with key scopes (or a `key` asked for), only documents of
/// that key (whose `kid` starts with its `{hsm}/keys/{name}/`).
pub fn query_request(
    call: &RewrapRequest,
    latest_kid: &str,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, ApiError> {
    let scoped = call.key.is_some() || config.kek.as_ref().is_some_and(|k| k.scopes.is_some());
    let q = if scoped {
        Query::new(
            "SELECT * FROM c WHERE IS_DEFINED(c.cmk) AND c.cmk.kid != @kid AND STARTSWITH(c.cmk.kid, @prefix)",
        )
        .param("@kid", latest_kid)
        .param("@prefix", kid_prefix(latest_kid))
    } else {
        Query::new("SELECT * FROM c WHERE IS_DEFINED(c.cmk) AND c.cmk.kid != @kid")
            .param("@kid", latest_kid)
    };
    CosmosRequest::new(&config.cosmos.endpoint, credential, now)
        .query_documents(
            &config.cosmos.container,
            &q,
            None,
            call.limit,
            call.continuation.as_deref(),
        )
        .map_err(|e| bad(e.to_string()))
}

/// Parses a page of candidates; a refused continuation token is the caller's
/// mistake (400).
pub fn parse_page(resp: Result<Response<Vec<u8>>, CosmosError>) -> Result<QueryPage, ApiError> {
    let resp = resp.map_err(|e| ApiError::from(&e))?;
    parse_query(&resp).map_err(|e| match e {
        CosmosError::Rejected(ref s) if s.status == 400 => {
            bad(format!("the continuation token was refused: {}", s.message))
        }
        e => ApiError::from(&e),
    })
}

/// Where a stored document lives, and the etag it was read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Document id.
    pub id: String,
    /// Partition key value.
    pub partition_key: String,
    /// Etag for `If-Match`.
    pub etag: String,
}

/// The id, partition key and etag of a document from a query.
pub fn locate(doc: &Value) -> Option<Located> {
    let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(Located {
        id: s("id")?,
        partition_key: s("pk")?,
        etag: s("_etag")?,
    })
}

/// The conditional replace of a rewrapped document (system properties
/// removed from the body; the etag goes in `If-Match`).
pub fn replace_request(
    at: &Located,
    rewrapped: &Value,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, CosmosError> {
    let mut body = rewrapped.clone();
    if let Some(m) = body.as_object_mut() {
        m.retain(|k, _| !k.starts_with('_'));
    }
    CosmosRequest::new(&config.cosmos.endpoint, credential, now).replace_document(
        &config.cosmos.container,
        &at.id,
        &at.partition_key,
        serde_json::to_vec(&body).expect("JSON values serialize"),
        &at.etag,
    )
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Replaced with its data key wrapped by the latest version.
    Rewrapped,
    /// Changed or deleted since it was read; the next call sees it again.
    Conflict,
    /// Cannot be rewrapped (a malformed header, a key id from another HSM,
    /// a data key the HSM would not unwrap); left as it is.
    Refused {
        /// Document id, when it has one.
        id: Option<String>,
        /// Why, without key material or plaintext.
        reason: String,
    },
}

/// Classifies the answer to a conditional replace. `Err` only for failures
/// that should stop the call (transient or authorization trouble).
pub fn replace_outcome(resp: Result<Response<Vec<u8>>, CosmosError>) -> Result<Outcome, ApiError> {
    let resp = resp.map_err(|e| ApiError::from(&e))?;
    match parse_write(&resp) {
        Ok(_) => Ok(Outcome::Rewrapped),
        Err(CosmosError::PreconditionFailed(_) | CosmosError::NotFound(_)) => Ok(Outcome::Conflict),
        Err(e) => Err(ApiError::from(&e)),
    }
}

/// The tally of one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Documents looked at.
    pub scanned: usize,
    /// Replaced onto the latest version.
    pub rewrapped: usize,
    /// Changed or gone since read (picked up by the next call).
    pub conflicts: usize,
    /// Refused documents (count, and the first few with reasons).
    pub refused: Vec<(Option<String>, String)>,
    /// Distinct data keys unwrapped (and wrapped again).
    pub data_keys: usize,
}

impl Report {
    /// Adds one document's outcome.
    pub fn add(&mut self, outcome: Outcome) {
        self.scanned += 1;
        match outcome {
            Outcome::Rewrapped => self.rewrapped += 1,
            Outcome::Conflict => self.conflicts += 1,
            Outcome::Refused { id, reason } => self.refused.push((id, reason)),
        }
    }

    /// The caller's answer.
    pub fn render(&self, latest_kid: &str, continuation: Option<String>) -> Response<Vec<u8>> {
        let listed: Vec<Value> = self
            .refused
            .iter()
            .take(MAX_LISTED)
            .map(|(id, reason)| json!({"id": id, "reason": reason}))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "kid": latest_kid,
                "scanned": self.scanned,
                "rewrapped": self.rewrapped,
                "conflicts": self.conflicts,
                "refused": self.refused.len(),
                "refusedDocuments": listed,
                "dataKeys": self.data_keys,
                "continuation": continuation,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(admin: Option<&str>, kek: bool) -> Config {
        crate::testing::maintenance(admin, kek)
    }

    const KEY: &str = "admin-key-0123456789";

    #[test]
    fn callers_need_the_admin_key_and_a_kek() {
        let c = config(Some(KEY), true);
        assert_eq!(parse("", None, &c).unwrap_err().status, 401);
        assert_eq!(
            parse("", Some("other-key-0123456789"), &c)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            parse("", Some(KEY), &config(None, true)).unwrap_err().code,
            "AdminDisabled"
        );
        assert_eq!(
            parse("", Some(KEY), &config(Some(KEY), false))
                .unwrap_err()
                .code,
            "KeyNotConfigured"
        );
        assert_eq!(
            parse("", Some(KEY), &c).unwrap(),
            RewrapRequest {
                limit: DEFAULT_LIMIT,
                continuation: None,
                key: None
            }
        );
        assert_eq!(
            parse("limit=7&continuation=%2BRID%3Ax", Some(KEY), &c).unwrap(),
            RewrapRequest {
                limit: 7,
                continuation: Some("+RID:x".into()),
                key: None
            }
        );
        assert_eq!(
            parse("key=app-kek", Some(KEY), &c).unwrap().key.as_deref(),
            Some("app-kek")
        );
        for q in [
            "limit=0",
            "limit=101",
            "limit=x",
            "x=1",
            "continuation=%zz",
            "key=other-kek",
        ] {
            assert_eq!(parse(q, Some(KEY), &c).unwrap_err().status, 400, "{q}");
        }
    }

    #[test]
    fn the_query_selects_other_versions_across_partitions() {
        let c = config(Some(KEY), true);
        let mut call = RewrapRequest {
            limit: 5,
            continuation: Some("tok".into()),
            key: None,
        };
        let req = query_request(
            &call,
            "https://h/keys/k/v2",
            &c,
            c.cosmos.auth.static_credential().unwrap(),
            UnixTime(0),
        )
        .unwrap();
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(
            body["query"],
            "SELECT * FROM c WHERE IS_DEFINED(c.cmk) AND c.cmk.kid != @kid"
        );
        assert_eq!(body["parameters"][0]["value"], "https://h/keys/k/v2");
        let h = req.headers();
        assert_eq!(h["x-ms-documentdb-query-enablecrosspartition"], "True");
        assert_eq!(h["x-ms-max-item-count"], "5");
        assert_eq!(h["x-ms-continuation"], "tok");
        // One key's records only, when a key is named.
        call.key = Some("k".into());
        let req = query_request(
            &call,
            "https://h/keys/k/v2",
            &c,
            c.cosmos.auth.static_credential().unwrap(),
            UnixTime(0),
        )
        .unwrap();
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert!(body["query"]
            .as_str()
            .unwrap()
            .ends_with("AND STARTSWITH(c.cmk.kid, @prefix)"));
        assert_eq!(body["parameters"][1]["value"], "https://h/keys/k/");
    }

    #[test]
    fn replaces_are_conditional_and_carry_no_system_properties() {
        let c = config(Some(KEY), true);
        let doc =
            json!({"id": "a", "pk": "/t", "cmk": {}, "_etag": "\"e1\"", "_rid": "r", "_ts": 1});
        let at = locate(&doc).unwrap();
        assert_eq!(at.etag, "\"e1\"");
        let req = replace_request(
            &at,
            &doc,
            &c,
            c.cosmos.auth.static_credential().unwrap(),
            UnixTime(0),
        )
        .unwrap();
        assert_eq!(req.method(), http::Method::PUT);
        assert_eq!(req.headers()["if-match"], "\"e1\"");
        assert_eq!(req.headers()["x-ms-documentdb-partitionkey"], "[\"/t\"]");
        assert!(req.uri().path().ends_with("/docs/a"));
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(body, json!({"id": "a", "pk": "/t", "cmk": {}}));
        assert!(locate(&json!({"id": "a", "pk": "/t"})).is_none());
    }

    #[test]
    fn outcomes_and_report() {
        let answer = |status: u16| {
            Ok(Response::builder()
                .status(status)
                .body(br#"{"code":"X","message":"m"}"#.to_vec())
                .unwrap())
        };
        let ok = Response::builder()
            .status(200)
            .header("etag", "\"e2\"")
            .body(br#"{"id":"a"}"#.to_vec())
            .unwrap();
        assert_eq!(replace_outcome(Ok(ok)).unwrap(), Outcome::Rewrapped);
        assert_eq!(replace_outcome(answer(412)).unwrap(), Outcome::Conflict);
        assert_eq!(replace_outcome(answer(404)).unwrap(), Outcome::Conflict);
        assert_eq!(replace_outcome(answer(403)).unwrap_err().status, 502);
        assert_eq!(replace_outcome(answer(503)).unwrap_err().status, 503);
        let mut r = Report::default();
        r.add(Outcome::Rewrapped);
        r.add(Outcome::Conflict);
        r.add(Outcome::Refused {
            id: Some("b".into()),
            reason: "bad".into(),
        });
        r.data_keys = 1;
        let v: Value = serde_json::from_slice(r.render("kid2", Some("c".into())).body()).unwrap();
        assert_eq!(
            v,
            json!({"kid": "kid2", "scanned": 3, "rewrapped": 1, "conflicts": 1, "refused": 1,
                   "refusedDocuments": [{"id": "b", "reason": "bad"}], "dataKeys": 1, "continuation": "c"})
        );
    }
}
