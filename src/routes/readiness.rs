//! `GET /readyz` and `POST /readyz/roundtrip`: whether the key-encryption
//! key can be used, without exposing key material.

use futures::StreamExt;
use http::{Response, StatusCode};
use serde_json::json;
use spin_sdk::http::IncomingRequest;

use crate::host::kek;
use crate::host::log;
use crate::host::request::{header, load_config, load_config_quietly, log_warnings};
use cmk_core::api::{json_response, ApiError};
use cmk_core::config::{Config, KekConfig};
use cmk_core::hsm;
use cmk_core::probe;
use cmk_core::time::UnixTime;

/// `GET /readyz`: whether the key-encryption key can be used, from its cached
/// state (no key material); anonymous callers get the status and codes only,
/// callers with the admin key the details (see [`cmk_core::probe`]). An answer
/// that is not ready is repeated to anonymous callers from a brief cache;
/// callers with the admin key always get a fresh one. `POST /readyz/roundtrip` (read key
/// required): wraps and unwraps a random 32-byte value through the HSM, end
/// to end; the read key gets the status, the codes and the round trip's
/// outcome, the admin key as well the details (and, with key scopes, each
/// scope key's state, read afresh).
pub(crate) async fn readyz(
    req: &IncomingRequest,
    roundtrip: bool,
) -> Result<Response<Vec<u8>>, ApiError> {
    if roundtrip {
        let config = load_config();
        let admin = has_admin_key(req, config.as_ref().ok());
        // A failure, too, reaches the read key only as its status and code:
        // the HSM's and Entra ID's texts can name principals and tenants.
        // (Logged in full, as every failed request is.)
        let resp = details(req, config.as_ref(), true, !admin)
            .await
            .unwrap_or_else(|e| {
                log::emit(
                    "warn",
                    "readiness_failed",
                    &[("code", json!(e.code)), ("message", json!(e.message))],
                );
                e.to_response()
            });
        return Ok(if admin {
            resp
        } else {
            probe::public_with_roundtrip(&resp)
        });
    }
    // The platform probes every few seconds: its anonymous calls do not
    // repeat the configuration's warnings in the log.
    let loaded = load_config_quietly();
    let admin = has_admin_key(req, loaded.as_ref().ok());
    if let (true, Ok(c)) = (admin, &loaded) {
        log_warnings(c);
    }
    // A configuration that does not load has no store: its answer (a
    // refused configuration, no call made) is computed each time.
    let store = loaded
        .as_ref()
        .ok()
        .and_then(|c| crate::host::token::open_store(c.kv_key.as_ref()));
    let now = UnixTime::now();
    // Callers with the admin key (operators, authenticated) get a fresh
    // answer, which also replaces the cached one; anonymous probes get the
    // cached one while it lasts.
    let cached = store
        .as_ref()
        .filter(|_| !admin)
        .and_then(|s| s.get(probe::FAILURE_CACHE_KEY).ok().flatten())
        .and_then(|b| probe::cached_failure(&b, now));
    let resp = match cached {
        Some(r) => r,
        None => {
            let r = match details(req, loaded.as_ref(), false, !admin).await {
                Ok(r) => r,
                Err(e) => {
                    log::emit(
                        "warn",
                        "readiness_failed",
                        &[("code", json!(e.code)), ("message", json!(e.message))],
                    );
                    e.to_response()
                }
            };
            // Every answer that is not ready (a failed call to the HSM or
            // the token endpoint, a refused configuration, a key found not
            // usable) is remembered briefly, so probes cannot drive calls
            // (with their retries) while it lasts; a ready answer is not
            // (the key state has its own cache).
            if let Some(s) = &store {
                let _ = match probe::encode_failure(now, &r) {
                    Some(entry) => s.set(probe::FAILURE_CACHE_KEY, &entry),
                    None if admin => s.delete(probe::FAILURE_CACHE_KEY),
                    None => Ok(()),
                };
            }
            r
        }
    };
    Ok(if admin { resp } else { probe::public(&resp) })
}

/// Whether the request carries one of the configured admin keys.
fn has_admin_key(req: &IncomingRequest, config: Option<&Config>) -> bool {
    config
        .and_then(|c| c.admin.keys.as_ref())
        .is_some_and(|keys| {
            header(req, cmk_core::access::ADMIN_KEY_HEADER).is_some_and(|k| keys.accepts(&k))
        })
}

/// Least age of the key state an anonymous `GET /readyz` fetches afresh,
/// whatever `hsm_key_check_secs` (with 0, every probe would call the HSM).
pub const ANONYMOUS_MIN_CHECK_SECS: u64 = 5;

async fn details(
    req: &IncomingRequest,
    config: Result<&Config, &ApiError>,
    roundtrip: bool,
    anonymous: bool,
) -> Result<Response<Vec<u8>>, ApiError> {
    // A configuration the component refuses (e.g. protected fields without
    // a key and no explicit `cmk_stage`) is not ready either: the same 503
    // shape, with nothing known of the key.
    let config = match config {
        Ok(c) => c,
        Err(e) => return Ok(not_ready(json!({}), e)),
    };
    let Some(kek_cfg) = &config.kek else {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ready", "kek": {"configured": false, "stage": "microsoft-managed keys"}}),
        ));
    };
    if roundtrip {
        let keys = config.read.keys.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "ReadDisabled",
                "the round-trip probe needs read_keys",
            )
        })?;
        if !header(req, cmk_core::access::READ_KEY_HEADER).is_some_and(|k| keys.accepts(&k)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the round-trip probe needs the read key",
            ));
        }
    }
    let floored;
    // (The round trip, which needs the read key, reads the key afresh.)
    let kek_cfg = if anonymous && !roundtrip && kek_cfg.check_secs < ANONYMOUS_MIN_CHECK_SECS {
        floored = KekConfig {
            check_secs: ANONYMOUS_MIN_CHECK_SECS,
            ..kek_cfg.clone()
        };
        &floored
    } else {
        kek_cfg
    };
    // With key scopes, callers with the admin key also get each scope
    // key's state; one scope's key that is not usable refuses that scope's
    // writes and reads only, so it does not make the component not ready.
    let scoped = match (&kek_cfg.scopes, anonymous) {
        (Some(_), false) => Some(scope_keys(kek_cfg, config, roundtrip).await),
        _ => None,
    };
    let with_scoped = |mut r: Response<Vec<u8>>| {
        if let Some(keys) = &scoped {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(r.body()) {
                v["keys"] = keys.clone();
                *r.body_mut() = serde_json::to_vec(&v).expect("JSON serializes");
            }
        }
        r
    };
    let kek = kek::Kek::new(kek_cfg, config.cosmos.retry, config.kv_key.as_ref());
    let (key, checked) = match kek.key(roundtrip).await {
        Ok(k) => k,
        Err(e) => {
            return Ok(with_scoped(not_ready(
                json!({"configured": true}),
                &ApiError::from(&e),
            )))
        }
    };
    let now = UnixTime::now();
    let usable = |op| hsm::check_usable(&key, op, now);
    let mut body = json!({
        "kek": {
            "configured": true,
            "kid": key.kid,
            "enabled": key.enabled,
            "keyOps": key.key_ops,
            "notBefore": key.not_before.map(|t| UnixTime(t).to_string()),
            "expires": key.expires.map(|t| UnixTime(t).to_string()),
            "keySizeBits": key.n.len() * 8,
            "checkedAt": checked.to_string(),
            "wrap": if kek_cfg.local_wrap { "local" } else { "hsm" },
        }
    });
    if let Err(e) = usable(hsm::KeyOp::Wrap).and(usable(hsm::KeyOp::Unwrap)) {
        return Ok(with_scoped(not_ready(
            body["kek"].take(),
            &ApiError::from(&e),
        )));
    }
    body["status"] = json!("ready");
    if roundtrip {
        let probe = wasi::random::random::get_random_bytes(32);
        let wrapped = kek.wrap(&probe).await.map_err(|e| ApiError::from(&e))?;
        let back = kek
            .unwrap(&wrapped.kid, &wrapped.value)
            .await
            .map_err(|e| ApiError::from(&e))?;
        if back != probe {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "KeyRoundTripMismatch",
                "unwrap did not return what wrap was given",
            ));
        }
        body["roundtrip"] = json!({"ok": true, "kid": wrapped.kid});
    }
    Ok(with_scoped(json_response(StatusCode::OK, &body)))
}

/// Each key scope's key (the mapped ones; `hsm_key_name` is `kek`) with
/// its state: `usable`, or the code that refuses it, from the key-state
/// cache unless `fresh`. Key names only, no scope values.
async fn scope_keys(kek_cfg: &KekConfig, config: &Config, fresh: bool) -> serde_json::Value {
    let now = UnixTime::now();
    // Up to 16 keys checked at once (each from its cache while fresh), so
    // the answer does not wait for the sum of 200 calls, nor sends them
    // all at once.
    let one = |name: &str| {
        let kek = kek::Kek::named(kek_cfg, name, config.cosmos.retry, config.kv_key.as_ref());
        let name = name.to_owned();
        async move {
            match kek.key(fresh).await {
                Ok((key, checked)) => {
                    let usable = hsm::check_usable(&key, hsm::KeyOp::Wrap, now)
                        .and(hsm::check_usable(&key, hsm::KeyOp::Unwrap, now));
                    json!({
                        "name": name,
                        "status": match &usable {
                            Ok(()) => "usable",
                            Err(e) => ApiError::from(e).code,
                        },
                        "kid": key.kid,
                        "enabled": key.enabled,
                        "notBefore": key.not_before.map(|t| UnixTime(t).to_string()),
                        "expires": key.expires.map(|t| UnixTime(t).to_string()),
                        "checkedAt": checked.to_string(),
                    })
                }
                Err(e) => {
                    let e = ApiError::from(&e);
                    json!({"name": name, "status": e.code, "message": e.message})
                }
            }
        }
    };
    let keys = kek_cfg.configured_keys();
    serde_json::Value::Array(
        futures::stream::iter(keys.into_iter().skip(1).map(one))
            .buffered(16)
            .collect()
            .await,
    )
}

/// Every `/readyz` 503 has one shape: `{"status": "not-ready", "error":
/// {"code", "message"}, "kek": {…what is known of the key…}}`, with
/// `Retry-After`, whether the key's state could not be read (revoked,
/// deleted, identity), was read and the key is not usable (disabled,
/// expired), or the configuration itself is refused (`kek` is then `{}`).
fn not_ready(kek: serde_json::Value, e: &ApiError) -> Response<Vec<u8>> {
    let body = json!({
        "status": "not-ready",
        "error": {"code": e.code, "message": e.message},
        "kek": kek,
    });
    let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        cmk_core::api::KEY_RETRY_AFTER_SECS.into(),
    );
    log::emit("warn", "kek_not_ready", &[("code", json!(e.code))]);
    r
}
