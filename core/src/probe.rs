//! What `GET /readyz` tells whom: anonymous callers (the platform's probe)
//! get the status and error codes only; the dependencies' own error text,
//! which can name the app's ids and tenant, and the key's id and dates are
//! for callers with the admin key. Every answer that is not ready (a failed
//! call to the HSM or the token endpoint, a refused configuration, a key
//! found not usable) is remembered for [`FAILURE_CACHE_SECS`] so anonymous
//! probes cannot drive calls (with their retries) into either while it
//! lasts; callers with the admin key get a fresh answer, which replaces the
//! cached one (a ready answer clears it).

use http::{header, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::UnixTime;

/// How long a failed readiness check is answered from the cache.
pub const FAILURE_CACHE_SECS: u64 = 10;

/// How far in the future a cached entry's time may lie (clock skew between
/// instances sharing the store); an entry beyond it is ignored.
pub const CLOCK_SKEW_SECS: u64 = 5;

/// Key-value store key of the cached failure.
pub const FAILURE_CACHE_KEY: &str = "readyz-failure/v1";

/// The parts of a readiness body an anonymous caller sees: `status` and
/// every `code`, under `error`, `kek` and `reason`.
pub fn public_view(body: &Value) -> Value {
    fn keep(v: &Value) -> Option<Value> {
        let o = v.as_object()?;
        let mut out = Map::new();
        for (k, v) in o {
            match k.as_str() {
                "status" | "code" if v.is_string() || v.is_number() => {
                    out.insert(k.clone(), v.clone());
                }
                "error" | "kek" | "reason" => {
                    if let Some(inner) =
                        keep(v).filter(|i| !i.as_object().is_some_and(Map::is_empty))
                    {
                        out.insert(k.clone(), inner);
                    }
                }
                _ => {}
            }
        }
        Some(Value::Object(out))
    }
    keep(body).unwrap_or_else(|| Value::Object(Map::new()))
}

/// `resp` as an anonymous caller sees it: same status and `Retry-After`,
/// the body reduced by [`public_view`].
pub fn public(resp: &Response<Vec<u8>>) -> Response<Vec<u8>> {
    reduced(resp, false)
}

/// `resp` as a caller of the round trip with the read key sees it: what
/// an anonymous caller sees ([`public`]), and the round trip's outcome
/// (`roundtrip`: `ok` and the key version that wrapped). The key's details,
/// the HSM's and Entra ID's error texts and the scope keys' states are for
/// the admin key.
pub fn public_with_roundtrip(resp: &Response<Vec<u8>>) -> Response<Vec<u8>> {
    reduced(resp, true)
}

fn reduced(resp: &Response<Vec<u8>>, with_roundtrip: bool) -> Response<Vec<u8>> {
    let body = serde_json::from_slice::<Value>(resp.body()).unwrap_or(Value::Null);
    let mut view = public_view(&body);
    if let (true, Some(out), Some(rt)) =
        (with_roundtrip, view.as_object_mut(), body.get("roundtrip"))
    {
        out.insert("roundtrip".into(), rt.clone());
    }
    let mut out = crate::api::json_response(resp.status(), &view);
    if let Some(v) = resp.headers().get(header::RETRY_AFTER) {
        out.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    out
}

#[derive(Serialize, Deserialize)]
struct CachedFailure {
    at: u64,
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// The cache entry for a failed check (`None` for a success, which is not
/// cached here: the key state has its own cache).
pub fn encode_failure(at: UnixTime, resp: &Response<Vec<u8>>) -> Option<Vec<u8>> {
    if resp.status().is_success() {
        return None;
    }
    let entry = CachedFailure {
        at: at.0,
        status: resp.status().as_u16(),
        retry_after: resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(resp.body()).ok()?,
    };
    serde_json::to_vec(&entry).ok()
}

/// The cached failure while it is younger than [`FAILURE_CACHE_SECS`];
/// `None` for a stale, malformed, or future-dated entry.
pub fn cached_failure(bytes: &[u8], now: UnixTime) -> Option<Response<Vec<u8>>> {
    let c: CachedFailure = serde_json::from_slice(bytes).ok()?;
    if c.at > now.0.saturating_add(CLOCK_SKEW_SECS)
        || now.0 >= c.at.saturating_add(FAILURE_CACHE_SECS)
    {
        return None;
    }
    let status = http::StatusCode::from_u16(c.status)
        .ok()
        .filter(|s| !s.is_success())?;
    let mut r = crate::api::json_response(status, &c.body);
    if let Some(v) = c
        .retry_after
        .and_then(|v| http::HeaderValue::from_str(&v).ok())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{json_response, ApiError};
    use http::StatusCode;
    use serde_json::json;

    #[test]
    fn anonymous_callers_see_status_and_codes_only() {
        let ready = json!({"status": "ready", "kek": {"configured": true, "kid": "https://h/keys/k/v1",
            "enabled": true, "notBefore": null, "checkedAt": "2026-01-01T00:00:00Z", "wrap": "hsm"}});
        assert_eq!(public_view(&ready), json!({"status": "ready"}));
        // The shape `/readyz` answers when the key is not usable.
        let not_ready = json!({"status": "not-ready",
            "error": {"code": "KeyDisabled", "message": "Operation get is not allowed on a disabled key"},
            "kek": {"configured": true, "kid": "https://h/keys/k/v1", "enabled": false,
                "checkedAt": "2026-01-01T00:00:00Z", "wrap": "hsm"}});
        assert_eq!(
            public_view(&not_ready),
            json!({"status": "not-ready", "error": {"code": "KeyDisabled"}})
        );
        let entra = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "IdentityFailed",
            "401 invalid_client: AADSTS7000215 ... app id 11111111-2222 tenant 3333",
        )
        .retry_after(60)
        .to_response();
        let r = public(&entra);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "60");
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v, json!({"error": {"code": "IdentityFailed"}}));
    }

    #[test]
    fn the_read_key_sees_the_round_trip_but_not_the_details() {
        let body = json!({"status": "ready", "roundtrip": {"ok": true, "kid": "https://h/keys/k/v1"},
            "kek": {"configured": true, "kid": "https://h/keys/k/v1", "keySize": 2048},
            "keys": [{"name": "tenant-a", "status": "usable", "kid": "https://h/keys/tenant-a/v1"}]});
        let r = public_with_roundtrip(&json_response(StatusCode::OK, &body));
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            v,
            json!({"status": "ready", "roundtrip": {"ok": true, "kid": "https://h/keys/k/v1"}})
        );
    }

    #[test]
    fn failures_are_cached_briefly_and_successes_not_at_all() {
        let t = UnixTime(1_000_000);
        let failed = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "KeyServiceUnavailable",
            "m",
        )
        .retry_after(5)
        .to_response();
        let entry = encode_failure(t, &failed).unwrap();
        let again = cached_failure(&entry, UnixTime(t.0 + FAILURE_CACHE_SECS - 1)).unwrap();
        assert_eq!(again.status(), 503);
        assert_eq!(again.headers()["retry-after"], "5");
        assert_eq!(again.body(), failed.body());
        assert!(cached_failure(&entry, UnixTime(t.0 + FAILURE_CACHE_SECS)).is_none());
        // A future-dated entry (a writer of the store, or a clock far off)
        // does not pin the answer.
        assert!(cached_failure(&entry, UnixTime(t.0 - CLOCK_SKEW_SECS - 1)).is_none());
        assert!(cached_failure(&entry, UnixTime(t.0 - CLOCK_SKEW_SECS)).is_some());
        assert!(cached_failure(b"garbage", t).is_none());
        let ok = json_response(StatusCode::OK, &json!({"status": "ready"}));
        assert!(encode_failure(t, &ok).is_none());
    }
}
