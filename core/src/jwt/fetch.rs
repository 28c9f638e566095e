//! The tenant's signing keys (JWKS) as the component gets and keeps them:
//! the document's URL and request, the answer's parsing, when to fetch it
//! again ([`jwks_cache`]), and its form in the key-value store, with the
//! record of the last fetch attempt that spaces fetches out.

use super::{Jwks, JwtError, CLOCK_SKEW_SECS};
use crate::time::UnixTime;

/// How long a fetched JWKS is trusted before it is fetched again.
pub const JWKS_MAX_AGE_SECS: u64 = 24 * 3600;
/// A token naming a key the cached JWKS lacks triggers a new fetch only if
/// the cached copy is at least this old, so forged key ids cannot make the
/// component hammer the authority.
pub const JWKS_MIN_REFETCH_SECS: u64 = 300;
/// How long past [`JWKS_MAX_AGE_SECS`] a cached JWKS still serves while it
/// cannot be refreshed: the authority fails, or a fetch cannot be put on
/// record (the key-value store refuses the write that spaces fetches out,
/// so none is made). After that, tokens are refused as transient until a
/// fetch succeeds, so a key the tenant withdrew is not accepted for as long
/// as the authority or the store is in trouble.
pub const JWKS_STALE_GRACE_SECS: u64 = 3600;

/// Whether a cached JWKS fetched at `fetched_at` may still serve at `now`,
/// refreshed or not ([`JWKS_STALE_GRACE_SECS`]). A fetch time in the
/// future beyond [`CLOCK_SKEW_SECS`] is not believed.
pub fn serves_stale(fetched_at: UnixTime, now: UnixTime) -> bool {
    fetched_at.0 <= now.0.saturating_add(CLOCK_SKEW_SECS)
        && now.0
            < fetched_at
                .0
                .saturating_add(JWKS_MAX_AGE_SECS + JWKS_STALE_GRACE_SECS)
}

/// When to fetch the JWKS again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksCache {
    /// Use the cached copy.
    Use,
    /// Fetch; if that fails, the cached copy may still be used.
    Refresh,
    /// Nothing usable is cached: fetch, and fail if that fails.
    Fetch,
    /// Nothing usable is cached and a fetch was just tried: fail without
    /// fetching.
    Wait,
}

/// Decides whether a cached JWKS (fetched at `fetched_at`) serves a token
/// naming `kid` at `now`. `last_attempt` is when a fetch was last tried,
/// whether or not it succeeded: no fetch is tried within
/// [`JWKS_MIN_REFETCH_SECS`] of another while a copy is cached, nor within
/// [`JWKS_RETRY_SECS`] while none is, so tokens (valid or not) cannot drive
/// fetches at the authority while it fails. A time in the future beyond
/// [`CLOCK_SKEW_SECS`] is not believed.
pub fn jwks_cache(
    cached: Option<(&Jwks, UnixTime)>,
    last_attempt: Option<UnixTime>,
    kid: Option<&str>,
    now: UnixTime,
) -> JwksCache {
    let since_attempt = last_attempt
        .filter(|t| t.0 <= now.0.saturating_add(CLOCK_SKEW_SECS))
        .map(|t| now.0.saturating_sub(t.0));
    let tried_within = |secs: u64| since_attempt.is_some_and(|a| a < secs);
    // A set older than its day and the grace serves no more, whatever keeps
    // it from being refreshed (the authority failing, or the store not
    // taking the attempt's record): a key the tenant withdrew is not
    // trusted for longer than that.
    let Some((jwks, at)) = cached.filter(|(_, at)| serves_stale(*at, now)) else {
        return if tried_within(JWKS_RETRY_SECS) {
            JwksCache::Wait
        } else {
            JwksCache::Fetch
        };
    };
    let age = now.0.saturating_sub(at.0);
    let stale = age >= JWKS_MAX_AGE_SECS
        || matches!(kid, Some(k) if !jwks.has(k) && age >= JWKS_MIN_REFETCH_SECS);
    if stale && !tried_within(JWKS_MIN_REFETCH_SECS) {
        JwksCache::Refresh
    } else {
        JwksCache::Use
    }
}

/// For a token naming `kid`, when the cached set `jwks` (fetched at
/// `fetched_at`) lacks it and was not fetched again only because of the
/// least interval between fetches ([`JWKS_MIN_REFETCH_SECS`], counted from
/// the fetch and from `last_attempt`): the seconds until a fetch is
/// allowed. `None` when the set has the key, the token names none, or a
/// fetch is allowed (then the key is unknown). A key rotated by the tenant
/// is answered so as transient, not as an invalid token.
pub fn refresh_held_back(
    jwks: &Jwks,
    fetched_at: UnixTime,
    last_attempt: Option<UnixTime>,
    kid: Option<&str>,
    now: UnixTime,
) -> Option<u64> {
    let kid = kid?;
    if jwks.has(kid) {
        return None;
    }
    let believed = |t: &UnixTime| t.0 <= now.0.saturating_add(CLOCK_SKEW_SECS);
    let latest = [Some(fetched_at), last_attempt]
        .into_iter()
        .flatten()
        .filter(believed)
        .map(|t| t.0)
        .max()?;
    let allowed_at = latest.saturating_add(JWKS_MIN_REFETCH_SECS);
    (allowed_at > now.0).then(|| allowed_at - now.0)
}

/// Least time between two fetches while nothing is cached.
pub const JWKS_RETRY_SECS: u64 = 30;

/// The key-value store value recording a fetch attempt at `at`.
pub fn encode_attempt(at: UnixTime) -> Vec<u8> {
    at.0.to_string().into_bytes()
}

/// Reads what [`encode_attempt`] wrote.
pub fn decode_attempt(bytes: &[u8]) -> Option<UnixTime> {
    std::str::from_utf8(bytes).ok()?.parse().ok().map(UnixTime)
}

/// The signing keys document of a tenant.
pub fn jwks_url(authority_host: &str, tenant: &str) -> String {
    format!(
        "{}/{tenant}/discovery/v2.0/keys",
        authority_host.trim_end_matches('/')
    )
}

/// The request for a tenant's signing keys.
pub fn jwks_request(url: &str) -> Result<http::Request<Vec<u8>>, JwtError> {
    http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| JwtError::Jwks(format!("bad signing keys URL: {e}")))
}

/// Parses the answer to [`jwks_request`].
pub fn parse_jwks_response(resp: &http::Response<Vec<u8>>) -> Result<Jwks, JwtError> {
    if !resp.status().is_success() {
        return Err(JwtError::Jwks(format!(
            "the authority answered {}",
            resp.status().as_u16()
        )));
    }
    Jwks::parse(resp.body())
}

/// A JWKS document as kept in the key-value store: when it was fetched and
/// its bytes.
pub fn encode_cached(fetched_at: UnixTime, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", fetched_at.0).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads what [`encode_cached`] wrote; `None` if unusable.
pub fn decode_cached(bytes: &[u8]) -> Option<(Jwks, UnixTime)> {
    let nl = bytes.iter().position(|b| *b == b'\n')?;
    let at = std::str::from_utf8(&bytes[..nl]).ok()?.parse().ok()?;
    Some((Jwks::parse(&bytes[nl + 1..]).ok()?, UnixTime(at)))
}
