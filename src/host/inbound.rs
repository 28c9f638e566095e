//! Senders' credentials at the edge: an ingest key is checked by the core
//! ([`cmk_core::ingest::authorize`]); an Entra ID bearer token is verified
//! against the tenant's signing keys, which are fetched through
//! [`crate::host::outbound`] and kept in the Spin key-value store so steady-state
//! deliveries make no outbound call for them (see [`cmk_core::jwt::jwks_cache`]).
//! A token's signature, once checked, is kept there too (a digest of it,
//! [`cmk_core::jwt::checked`]), so the sender's next deliveries with the same
//! token have only its claims checked.

use serde_json::json;

use crate::host::log;
use crate::host::outbound::{self, Verdict};
use crate::host::token::store_failed;
use cmk_core::api::ApiError;
use cmk_core::config::{Config, SenderTokens};
use cmk_core::ingest::{self, SenderCredential};
use cmk_core::jwt::checked::Checked;
use cmk_core::jwt::{self, Jwks, JwksCache, JwtError, Token};
use cmk_core::retry::RetryPolicy;
use cmk_core::time::UnixTime;

/// Total time for fetching the signing keys (they are cached for a day).
const FETCH_BUDGET_MS: u64 = 5_000;

/// Accepts the delivery's sender or says why not.
pub async fn authorize(
    config: &Config,
    authorization: Option<&str>,
    header_key: Option<&str>,
    query: &str,
) -> Result<(), ApiError> {
    match ingest::authorize(config, authorization, header_key, query)? {
        SenderCredential::Key => {
            if header_key.is_none() {
                // Only reached with ingest_key_in_query = allow.
                log::emit(
                    "warn",
                    "ingest_key_in_query_deprecated",
                    &[(
                        "message",
                        json!(
                            "the ingest key came as ?code= in the URL; send it in x-cmk-ingest-key"
                        ),
                    )],
                );
            }
            Ok(())
        }
        SenderCredential::Token(token) => {
            let cfg = config
                .ingest
                .entra
                .as_ref()
                .expect("a token is only taken when Entra delivery is configured");
            verify(cfg, config.kv_key.as_ref(), &token)
                .await
                .map_err(|e| ApiError::from(&e))
        }
    }
}

fn cache_key(cfg: &SenderTokens) -> String {
    format!("jwks/v1/{}", cfg.jwks_url)
}

fn attempt_key(cfg: &SenderTokens) -> String {
    format!("jwks-attempt/v1/{}", cfg.jwks_url)
}

fn checked_key(cfg: &SenderTokens) -> String {
    format!("jwt-checked/v1/{}", cfg.jwks_url)
}

async fn verify(
    cfg: &SenderTokens,
    kv_key: Option<&cmk_core::kvseal::EntryKey>,
    token: &Token,
) -> Result<(), JwtError> {
    let now = UnixTime::now();
    let store = crate::host::token::open_store(kv_key);
    let get = |name: &str| match store.as_ref()?.get(name) {
        Ok(v) => v,
        Err(e) => {
            store_failed("kv_store_read_failed", name, &e);
            None
        }
    };
    let last_attempt = get(&attempt_key(cfg)).and_then(|b| jwt::decode_attempt(&b));
    // A token whose signature was checked against the last set fetched:
    // its claims are checked, the signature and the set are not read again.
    let kept = get(&checked_key(cfg)).and_then(|b| Checked::decode(&b));
    if let Some(verdict) = kept
        .as_ref()
        .and_then(|k| k.verify(token, &cfg.policy, last_attempt, now))
    {
        let sender = verdict?;
        authenticated(&sender, "kept");
        return Ok(());
    }
    let cached = get(&cache_key(cfg)).and_then(|b| jwt::decode_cached(&b));
    let decision = jwt::jwks_cache(
        cached.as_ref().map(|(j, at)| (j, *at)),
        last_attempt,
        token.kid(),
        now,
    );
    // The last fetch attempt as the store holds it: kept signatures stand
    // only against the set fetched at that moment.
    let mut attempt = last_attempt;
    // Whether this request's attempt is on record: a set it fetches is
    // cached only then, so the cached set is never newer than the attempt
    // on record and no signature kept against an older set stands against
    // it.
    let mut recorded = false;
    // The store is there but did not take the record: no fetch is made
    // then. The record is what spaces fetches out, so fetching without it
    // would let every token (a forged key id will do) send a request to the
    // authority; the cached set serves instead, for at most
    // `JWKS_STALE_GRACE_SECS` past its age (as when the authority fails),
    // and otherwise the delivery is answered 503 until the store takes
    // writes again.
    let mut unrecorded = false;
    if matches!(decision, JwksCache::Refresh | JwksCache::Fetch) {
        // Recorded before the fetch, so a failing authority is tried at most
        // once per interval, however many tokens arrive.
        if let Some(s) = &store {
            match s.set(&attempt_key(cfg), &jwt::encode_attempt(now)) {
                Ok(()) => {
                    recorded = true;
                    attempt = Some(now);
                    // The kept signatures are for the set about to be
                    // replaced. (Without the record nothing is replaced, and
                    // they still stand against the set on record.)
                    if let Err(e) = s.delete(&checked_key(cfg)) {
                        store_failed("kv_store_write_failed", &checked_key(cfg), &e);
                    }
                }
                Err(e) => {
                    unrecorded = true;
                    store_failed("kv_store_write_failed", &attempt_key(cfg), &e);
                }
            }
        }
    }
    // The set's fetch time and the last attempt, when a refresh was held
    // back (the cached copy served) rather than done.
    let mut held: Option<(UnixTime, Option<UnixTime>)> = None;
    let (jwks, fetched_at): (Jwks, UnixTime) = match decision {
        JwksCache::Use => {
            let (jwks, at) = cached.expect("Use implies a cached copy");
            held = Some((at, last_attempt));
            (jwks, at)
        }
        JwksCache::Wait => {
            return Err(JwtError::Jwks(
                "the signing keys could not be fetched moments ago; not trying again yet".into(),
            ))
        }
        JwksCache::Refresh | JwksCache::Fetch if unrecorded => match cached {
            // (A key it lacks is answered below, before `held` is asked.)
            // A set `jwks_cache` asks to refresh is within its grace
            // (`jwt::serves_stale`): it serves; one past it was not
            // offered.
            Some((old, at)) if decision == JwksCache::Refresh => (old, at),
            _ => return Err(unrecorded_fetch()),
        },
        JwksCache::Refresh | JwksCache::Fetch => match fetch(cfg).await {
            Ok((jwks, body)) => {
                if let Some(s) = store.as_ref().filter(|_| recorded) {
                    if let Err(e) = s.set(&cache_key(cfg), &jwt::encode_cached(now, &body)) {
                        store_failed("kv_store_write_failed", &cache_key(cfg), &e);
                    }
                }
                (jwks, now)
            }
            Err(e) => match cached {
                Some((old, at)) if decision == JwksCache::Refresh => {
                    held = Some((at, Some(now)));
                    log::emit(
                        "warn",
                        "signing_keys_refresh_failed",
                        &[("error", json!(e.to_string()))],
                    );
                    (old, at)
                }
                _ => return Err(e),
            },
        },
    };
    let sender = match jwt::verify(token, &jwks, &cfg.policy, now) {
        // A key the cached set lacks, while no fetch can be made: transient.
        Err(JwtError::UnknownKey) if unrecorded => return Err(unrecorded_fetch()),
        Err(JwtError::UnknownKey) => {
            return Err(held
                .and_then(|(at, attempt)| {
                    jwt::refresh_held_back(&jwks, at, attempt, token.kid(), now)
                })
                .map_or(JwtError::UnknownKey, |retry_after_secs| {
                    JwtError::KeysNotRefreshed { retry_after_secs }
                }))
        }
        other => other?,
    };
    // After a fetch the list starts empty (it was deleted above).
    let mut kept = match decision {
        JwksCache::Use => kept.unwrap_or_default(),
        // No fetch was made, and the list was left as it was.
        _ if unrecorded => kept.unwrap_or_default(),
        _ => Checked::default(),
    };
    if kept.keep(token, fetched_at, attempt, now) {
        if let Some(s) = &store {
            if let Err(e) = s.set(&checked_key(cfg), &kept.encode()) {
                store_failed("kv_store_write_failed", &checked_key(cfg), &e);
            }
        }
    }
    authenticated(&sender, "checked");
    Ok(())
}

/// Why a delivery is answered 503 when the signing keys would have to be
/// fetched and the store did not take the record of the attempt.
fn unrecorded_fetch() -> JwtError {
    JwtError::Jwks(
        "the signing keys must be fetched, and the key-value store did not take the record of \
         the attempt that spaces fetches out; not fetching until it does"
            .into(),
    )
}

/// Logs who sent the delivery, and whether the token's signature was
/// checked now or kept from an earlier check ([`Checked`]).
fn authenticated(sender: &jwt::Sender, signature: &str) {
    log::emit(
        "info",
        "sender_authenticated",
        &[
            ("app_id", json!(sender.app_id)),
            ("object_id", json!(sender.object_id)),
            ("signature", json!(signature)),
        ],
    );
}

async fn fetch(cfg: &SenderTokens) -> Result<(Jwks, Vec<u8>), JwtError> {
    let policy = RetryPolicy {
        budget_ms: FETCH_BUDGET_MS,
        ..RetryPolicy::default()
    };
    let sent = outbound::send_retrying(
        cmk_core::tally::Peer::Jwks,
        jwt::jwks_request(&cfg.jwks_url)?,
        policy,
        |r| {
            if r.status().as_u16() == 429 || r.status().is_server_error() {
                Verdict::Retry(None)
            } else {
                Verdict::Done
            }
        },
    )
    .await;
    let resp = sent
        .result
        .map_err(|e| JwtError::Jwks(format!("could not reach the authority: {e}")))?;
    let jwks = jwt::parse_jwks_response(&resp)?;
    log::emit(
        "info",
        "signing_keys_fetched",
        &[
            ("attempts", json!(sent.attempts)),
            ("duration_ms", json!(sent.duration_ms)),
        ],
    );
    Ok((jwks, resp.into_body()))
}
