//! `POST /admin/erase`: after a key scope's key is deleted in the Managed
//! HSM (crypto-shredding), counts or removes the records sealed under it,
//! which nothing can read any more.
//!
//! `?key=<name>&mode=count|delete&limit=&continuation=`. `count` pages
//! through the records whose `cmk.kid` names a version of the key (bounded
//! by `limit`, resumed with the store's continuation token) whatever the
//! key's state. `delete` first asks the HSM for the key and goes on only
//! when the HSM answers that it does not exist (`404 KeyNotFound`): a key
//! that still exists, enabled or not, may be recovered or re-enabled, and
//! its records are not garbage. Each call then removes at most `limit` such
//! records, each with `If-Match` on the etag it read; removed records no
//! longer match, so a caller repeats the call until `more` is false.
//!
//! This module is pure: it checks the caller, decides from the key's state,
//! builds the signed query and delete requests, and tallies the answers.
//! The edge (`routes::maintenance`) does the I/O.

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::api::{json_response, ApiError};
use crate::config::{valid_key_name, Config};
use crate::cosmos::{parse_delete, CosmosError, CosmosRequest, Credential, Query};
use crate::hsm::{HsmError, Unavailable};
use crate::percent::percent_decode;
use crate::time::UnixTime;

/// Records per call when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;
/// Most records per call.
pub const MAX_LIMIT: u32 = 100;
/// Most empty pages a `delete` call follows the store's continuation
/// through (a cross-partition query may answer an empty page with a
/// continuation while matching rows are further on).
pub const MAX_EMPTY_PAGES: u32 = 20;

/// Whether a `delete` call that looked at a page of `rows` rows, with or
/// without a continuation after it, leaves more to do: removed records no
/// longer match, so the next call starts over. An empty page with a
/// continuation is not the end (the edge follows such pages first, up to
/// [`MAX_EMPTY_PAGES`]).
pub fn delete_more(rows: usize, continuation: bool, limit: u32) -> bool {
    continuation || rows >= limit as usize
}

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Counts the key's records.
    Count,
    /// Removes them (only once the key is gone).
    Delete,
}

/// One call's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseRequest {
    /// The key whose records are counted or removed.
    pub key: String,
    /// Count or delete.
    pub mode: Mode,
    /// Most records to look at.
    pub limit: u32,
    /// Where the previous count stopped (`count` only).
    pub continuation: Option<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", msg)
}

/// Checks the admin key and parses the query. `key` is required (any key
/// name: a scope removed from the configuration after its key was deleted
/// can still be cleaned up); `mode` is `count` unless `delete` is asked for.
pub fn parse(
    query: &str,
    admin_key: Option<&str>,
    config: &Config,
) -> Result<EraseRequest, ApiError> {
    crate::access::ADMIN.check(config.admin.keys.as_ref(), admin_key)?;
    if config.kek.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "KeyNotConfigured",
            "erasure by key needs the key-encryption key (hsm_key_name) configured",
        ));
    }
    let (mut key, mut mode, mut limit, mut continuation) = (None, Mode::Count, DEFAULT_LIMIT, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)
            .ok_or_else(|| bad(format!("`{k}` is not valid percent-encoded UTF-8")))?;
        match k {
            "key" if valid_key_name(&v) => key = Some(v),
            "key" => return Err(bad("key must be a key name (letters, digits and hyphens)")),
            "mode" => {
                mode = match v.as_str() {
                    "count" => Mode::Count,
                    "delete" => Mode::Delete,
                    _ => return Err(bad("mode must be count or delete")),
                }
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(format!("limit must be 1 to {MAX_LIMIT}")))?
            }
            "continuation" if !v.is_empty() => continuation = Some(v),
            "continuation" => {}
            other => return Err(bad(format!("unknown query parameter `{other}`"))),
        }
    }
    let key = key.ok_or_else(|| bad("key is required: the name of the deleted key"))?;
    if mode == Mode::Delete && continuation.is_some() {
        return Err(bad(
            "delete takes no continuation: removed records no longer match, so repeat the call until `more` is false",
        ));
    }
    Ok(EraseRequest {
        key,
        mode,
        limit,
        continuation,
    })
}

/// What the HSM said of the key, as `delete` sees it: `Ok` only when the
/// key does not exist (`404 KeyNotFound` for its latest version). A key
/// that answers, enabled or not, is refused with 409 `KeyStillExists`; any
/// other failure (the service, a token, access refused) says nothing about
/// the key and is answered as itself, so nothing is removed on a guess.
/// A soft-deleted key, still recoverable, answers `404` like a purged one:
/// removal is irreversible in the container even then (the runbooks run it
/// after the purge, or say why not: docs/keys-and-identity.md).
pub fn check_gone(key: &str, state: Result<(), &HsmError>) -> Result<(), ApiError> {
    match state {
        Ok(()) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "KeyStillExists",
            format!(
                "key `{key}` still exists in the HSM (enabled or not): its records are not removed; delete (and purge) the key first, see docs/keys-and-identity.md"
            ),
        )),
        Err(HsmError::KeyUnavailable {
            reason: Unavailable::NotFound,
            ..
        }) => Ok(()),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// The prefixes a `kid` of key `key` starts with under the configured HSM:
/// `{origin}/keys/{key}/`, and the same without an explicit `:443`.
pub fn kid_prefixes(hsm_origin: &str, key: &str) -> [String; 2] {
    let origin = hsm_origin.trim_end_matches('/');
    let bare = origin.strip_suffix(":443").unwrap_or(origin);
    [
        format!("{origin}/keys/{key}/"),
        format!("{bare}/keys/{key}/"),
    ]
}

/// The query for one page of the key's records (id, partition key, etag
/// and key id only), across partitions.
pub fn query_request(
    call: &EraseRequest,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Request<Vec<u8>>, ApiError> {
    let kek = config.kek.as_ref().expect("parse checks it");
    let [p1, p2] = kid_prefixes(&kek.endpoint.origin(), &call.key);
    let q = Query::new(
        "SELECT c.id, c.pk, c._etag, c.cmk.kid AS kid FROM c WHERE IS_DEFINED(c.cmk) AND (STARTSWITH(c.cmk.kid, @p1) OR STARTSWITH(c.cmk.kid, @p2))",
    )
    .param("@p1", p1)
    .param("@p2", p2);
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

/// One selected record: where it is and the etag it was read with; `None`
/// for a row that is not one of the key's records (checked again here,
/// whatever the query matched).
pub fn target(
    row: &Value,
    call: &EraseRequest,
    hsm_origin: &str,
) -> Option<crate::records::DeleteRequest> {
    let kid = row.get("kid")?.as_str()?;
    if crate::envelope::key_name_of(kid, hsm_origin) != Some(call.key.as_str()) {
        return None;
    }
    Some(crate::records::DeleteRequest {
        id: row.get("id")?.as_str()?.to_owned(),
        partition_key: row.get("pk")?.as_str()?.to_owned(),
        if_match: Some(row.get("_etag")?.as_str()?.to_owned()),
    })
}

/// One delete's outcome: removed, or changed or gone meanwhile (412, 404:
/// left for the next call, which finds it again if it still matches).
pub fn delete_outcome(resp: Result<Response<Vec<u8>>, CosmosError>) -> Result<bool, ApiError> {
    let resp = resp.map_err(|e| ApiError::from(&e))?;
    match parse_delete(&resp) {
        Ok(_) => Ok(true),
        Err(CosmosError::NotFound(_)) | Err(CosmosError::PreconditionFailed(_)) => Ok(false),
        Err(e) => Err(ApiError::from(&e)),
    }
}

/// A call's tally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records of the key found on this page.
    pub matched: usize,
    /// Records removed.
    pub deleted: usize,
    /// Records changed or removed meanwhile (not removed by this call).
    pub conflicts: usize,
    /// Rows the query returned that are not the key's records when checked
    /// again (left alone; a final `count` pass shows what is left).
    pub skipped: usize,
}

impl Report {
    /// The caller's answer. `more`: repeat the call (with `continuation`
    /// when counting).
    pub fn render(
        &self,
        call: &EraseRequest,
        key_state: &str,
        more: bool,
        continuation: Option<String>,
    ) -> Response<Vec<u8>> {
        json_response(
            StatusCode::OK,
            &json!({
                "key": call.key,
                "keyState": key_state,
                "mode": match call.mode { Mode::Count => "count", Mode::Delete => "delete" },
                "matched": self.matched,
                "deleted": self.deleted,
                "conflicts": self.conflicts,
                "skipped": self.skipped,
                "more": more,
                "continuation": continuation,
            }),
        )
    }
}

#[cfg(test)]
mod tests;
