//! Token signatures this deployment has checked, kept so that a sender's
//! next deliveries with the same token skip the RSA check and the signing
//! keys' document. Event Grid presents one token until it renews it (an
//! Entra ID access token lives an hour or more), so nearly every delivery
//! of an Entra-protected subscription brings a token already checked.
//!
//! What is kept of a token is a digest of its signed bytes and signature
//! ([`Token::signature_digest`]), never the token. The claims are checked on
//! every delivery, kept or not ([`Checked::verify`]): a changed audience,
//! tenant, role or caller list, or the token's expiry, applies at once.
//!
//! A kept signature stands only while the signing-key set it was checked
//! against is the last one fetched: its fetch time must equal the fetch
//! attempt on record ([`super::encode_attempt`], which the component
//! writes before every fetch, and caches a fetched set only once that
//! write succeeded), and the set must be younger than
//! [`JWKS_MAX_AGE_SECS`]. Any fetch attempt since, successful or not, sets
//! every kept signature aside (the component also clears the list), so a
//! key the tenant removed stops being accepted at the same moment as
//! without this list; so does a missing or unreadable attempt entry.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{check_claims, claim_time, JwtError, Policy, Sender, Token};
use super::{CLOCK_SKEW_SECS, JWKS_MAX_AGE_SECS, LEEWAY_SECS};
use crate::time::UnixTime;

/// Most signatures kept at once (one per token in use: a few senders each
/// renewing theirs). Keeping one more drops the kept one that expires
/// first (the one being kept stays).
pub const MAX_KEPT: usize = 8;

/// The first line of the stored form. A change to what the full check
/// accepts (the signature check, or which keys [`super::Jwks::parse`]
/// keeps) must change it too, so that nothing kept by a build that checked
/// less is taken as checked.
const HEAD: &str = "cmk-checked-signatures/v1";

/// One kept signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kept {
    /// [`Token::signature_digest`].
    digest: [u8; 32],
    /// When the signing-key set it was checked against was fetched.
    set_fetched_at: UnixTime,
    /// The token's `exp`.
    expires: u64,
}

impl Kept {
    /// Whether the signature still stands: its key set is the last one
    /// fetched (`last_attempt` is that set's fetch time) and young enough
    /// to be used without a refresh, and the token has not expired.
    fn stands(&self, last_attempt: Option<UnixTime>, now: UnixTime) -> bool {
        let at = self.set_fetched_at.0;
        last_attempt == Some(self.set_fetched_at)
            && at <= now.0.saturating_add(CLOCK_SKEW_SECS)
            && now.0 < at.saturating_add(JWKS_MAX_AGE_SECS)
            && now.0 <= self.expires.saturating_add(LEEWAY_SECS)
    }
}

/// The kept signatures of one signing-key source (one JWKS URL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    kept: Vec<Kept>,
}

impl Checked {
    /// How many signatures are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The sender of `token` if its signature is kept and stands
    /// (as the module explains), its claims checked against `policy` at `now`
    /// as [`super::verify`] checks them. `None`: not kept, so check the
    /// token in full.
    pub fn verify(
        &self,
        token: &Token,
        policy: &Policy,
        last_attempt: Option<UnixTime>,
        now: UnixTime,
    ) -> Option<Result<Sender, JwtError>> {
        if token.alg != "RS256" {
            return None;
        }
        let digest = token.signature_digest();
        self.kept
            .iter()
            .any(|k| k.digest == digest && k.stands(last_attempt, now))
            .then(|| check_claims(token, policy, now))
    }

    /// Keeps the signature of `token`, which [`super::verify`] accepted
    /// against the set fetched at `set_fetched_at`; drops the kept ones
    /// that no longer stand. `last_attempt`: the last fetch attempt, this
    /// request's included. `false` when the signature would not stand
    /// (an older set was used because a refresh failed, or the token
    /// lacks `exp`): then nothing changed and there is nothing to store.
    pub fn keep(
        &mut self,
        token: &Token,
        set_fetched_at: UnixTime,
        last_attempt: Option<UnixTime>,
        now: UnixTime,
    ) -> bool {
        let Ok(Some(expires)) = claim_time(&token.claims, "exp") else {
            return false;
        };
        let new = Kept {
            digest: token.signature_digest(),
            set_fetched_at,
            expires,
        };
        if !new.stands(last_attempt, now) {
            return false;
        }
        self.kept
            .retain(|k| k.digest != new.digest && k.stands(last_attempt, now));
        while self.kept.len() >= MAX_KEPT {
            let first = (0..self.kept.len())
                .min_by_key(|&i| self.kept[i].expires)
                .expect("not empty");
            self.kept.remove(first);
        }
        self.kept.push(new);
        true
    }

    /// The stored form: a head line, then one line a signature, `digest
    /// (base64url) set-fetched-at expires`, in seconds.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::from(HEAD);
        for k in &self.kept {
            out.push('\n');
            out.push_str(&URL_SAFE_NO_PAD.encode(k.digest));
            out.push_str(&format!(" {} {}", k.set_fetched_at.0, k.expires));
        }
        out.into_bytes()
    }

    /// Reads what [`Self::encode`] wrote; `None` if any of it is not in
    /// that form (then nothing is kept).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split('\n');
        if lines.next()? != HEAD {
            return None;
        }
        let mut kept = Vec::new();
        for line in lines {
            let mut fields = line.split(' ');
            let (Some(d), Some(at), Some(exp), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            let digest = URL_SAFE_NO_PAD.decode(d).ok()?.try_into().ok()?;
            kept.push(Kept {
                digest,
                set_fetched_at: UnixTime(seconds(at)?),
                expires: seconds(exp)?,
            });
        }
        (kept.len() <= MAX_KEPT).then_some(Self { kept })
    }
}

/// Decimal seconds as [`Checked::encode`] writes them: digits only, no
/// leading zero, so one list has one stored form.
fn seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests;
