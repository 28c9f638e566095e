//! The key-encryption key at the edge: Entra ID tokens (through
//! [`crate::host::token`], cached per provider and scope), the key's state
//! (cached for `hsm_key_check_secs`), and wrap/unwrap calls to Managed HSM,
//! all through [`crate::host::outbound`]. With `hsm_local_wrap`, wrapping uses the
//! checked key version's public part here instead.
//!
//! Fail closed: a key that is disabled, expired, not yet valid, deleted, or
//! whose access was revoked stops every wrap and unwrap with
//! [`HsmError::KeyUnavailable`]; nothing falls back to unprotected data.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::host::log;
use crate::host::outbound::{self, azure_verdict as verdict};
use crate::host::token::{TokenError, Tokens};
use cmk_core::config::KekConfig;
use cmk_core::entra::{AccessToken, EntraError, MANAGED_HSM_SCOPE};
use cmk_core::hsm::{self, CryptResult, HsmError, KeyInfo, KeyOp, KeyRef};
use cmk_core::retry::RetryPolicy;
use cmk_core::time::UnixTime;

/// Why the key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// No token could be obtained.
    #[error(transparent)]
    Identity(#[from] EntraError),
    /// The HSM refused or is unavailable.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The HSM refused what one stored record brings, while the key itself
    /// is usable: its wrapped data key (`400` from unwrap: not a valid
    /// ciphertext for the key). The record is at fault, not the key.
    #[error("the record's wrapped data key was refused: {0}")]
    RecordKey(String),
    /// A key version the configured key does not have (`404 KeyNotFound`
    /// for that version while the key, asked afresh, answers and is usable;
    /// Managed HSM deletes keys, never single versions, so such a version
    /// never existed): every record naming it is at fault, not the key.
    #[error("the record's wrapped data key was refused: the configured key has no version named by `{0}`")]
    VersionMissing(String),
    /// The HSM or token endpoint could not be reached.
    #[error("could not reach {what}: {detail}")]
    Transport {
        /// Which dependency.
        what: &'static str,
        /// The failure, without secrets.
        detail: String,
    },
}

impl KekError {
    /// Whether a later attempt may succeed without an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            KekError::Identity(e) => e.is_transient(),
            KekError::Hsm(e) => e.is_transient(),
            KekError::Transport { .. } => true,
            KekError::RecordKey(_) | KekError::VersionMissing(_) => false,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CachedState {
    checked_at: u64,
    key: KeyInfo,
    /// With `hsm_local_wrap`, the constant of the latest version's modulus,
    /// made when the state was checked, so that each wrap need not make it
    /// (absent in entries written without it: the wrap then makes it). One
    /// that does not read as a constant is taken as absent, not as a
    /// reason to drop the whole state.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "constant_or_none"
    )]
    modulus_constant: Option<hsm::ModulusConstant>,
    /// The HSM token of the identity that wrote the entry, kept with the
    /// key's state so that a delivery reads one entry for both (absent in
    /// the latest version's entry with `hsm_local_wrap`, whose deliveries
    /// call the HSM only to check the state). Stored as the entry's secret
    /// part, not in its public JSON ([`Kek::cache_set`]).
    #[serde(skip)]
    hsm_token: Option<HeldToken>,
}

/// An HSM token kept in a key's state entry, with the name of the token's
/// own entry ([`cmk_core::entra::cache_key`], a digest of the provider and
/// the scope): it is used only by a configuration whose identity gets its
/// tokens under that name, so a changed identity never sends the token of
/// the one before.
#[derive(Serialize, Deserialize)]
struct HeldToken {
    identity: String,
    token: AccessToken,
}

fn constant_or_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<hsm::ModulusConstant>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

impl From<TokenError> for KekError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Identity(e) => KekError::Identity(e),
            TokenError::Transport(detail) => KekError::Transport {
                what: "the token endpoint",
                detail,
            },
        }
    }
}

impl From<&KekError> for cmk_core::api::ApiError {
    fn from(e: &KekError) -> Self {
        match e {
            KekError::Identity(e) => e.into(),
            KekError::Hsm(e) => e.into(),
            // The stored record is at fault (docs/record-format.md, step 3).
            KekError::RecordKey(_) | KekError::VersionMissing(_) => cmk_core::api::ApiError::new(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "RecordTampered",
                e.to_string(),
            ),
            KekError::Transport { .. } => cmk_core::api::ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "KeyServiceUnavailable",
                e.to_string(),
            )
            .retry_after(cmk_core::api::DEFAULT_RETRY_AFTER_SECS),
        }
    }
}

/// Says in the log when the key state changed ([`hsm::state_changed`]). Key ids
/// and dates only; the key material is public but stays out of the log too.
fn log_state_change(name: &str, remembers: bool, previous: Option<&KeyInfo>, now: &KeyInfo) {
    if !hsm::state_changed(remembers, previous, now) {
        return;
    }
    let version = |k: &KeyInfo| k.kid.rsplit('/').next().map(str::to_owned);
    log::emit(
        if now.enabled { "info" } else { "warn" },
        "key_state",
        &[
            ("key", json!(name)),
            ("version", json!(version(now))),
            ("enabled", json!(now.enabled)),
            ("not_before", json!(now.not_before)),
            ("expires", json!(now.expires)),
            ("previous_version", json!(previous.and_then(version))),
            ("previous_enabled", json!(previous.map(|p| p.enabled))),
        ],
    );
}

/// Access to one of the configured keys (`hsm_key_name`, or a key scope's
/// key) for one request. Each key's state is checked and cached on its own.
pub struct Kek<'a> {
    cfg: &'a KekConfig,
    key_name: String,
    retry: RetryPolicy,
    /// Its key-value store (token, key state) is the key's cache too: one
    /// store opened per request.
    tokens: Tokens<'a>,
    /// The HSM token this request uses: from a state entry that kept a fresh
    /// one for this identity, else from [`Tokens`] (its own entry, or the
    /// configured source).
    held: RefCell<Option<AccessToken>>,
    /// The state entry `held` was taken from, if it was: a refusal of that
    /// token removes the entry (so the next request checks the state
    /// afresh and keeps a good token), not the token cache's own.
    held_from: RefCell<Option<String>>,
}

impl<'a> Kek<'a> {
    /// `hsm_key_name`, the deployment's default key. Opens the `default`
    /// key-value store for the caches (without it, every request fetches its
    /// own token and key state, and says so in the log).
    pub fn new(
        cfg: &'a KekConfig,
        retry: RetryPolicy,
        kv_key: Option<&cmk_core::kvseal::EntryKey>,
    ) -> Self {
        Self::named(cfg, &cfg.key_name, retry, kv_key)
    }

    /// The key `key_name` (one the configuration owns: the caller checks).
    pub fn named(
        cfg: &'a KekConfig,
        key_name: &str,
        retry: RetryPolicy,
        kv_key: Option<&cmk_core::kvseal::EntryKey>,
    ) -> Self {
        Self {
            cfg,
            key_name: key_name.to_owned(),
            retry,
            tokens: Tokens::new(&cfg.identity, retry, kv_key),
            held: RefCell::new(None),
            held_from: RefCell::new(None),
        }
    }

    /// The state entry `key`: the state its public part, the HSM token it
    /// keeps its secret part (with `kv_store_key`, encrypted, the state
    /// authenticated with it: [`cmk_core::kvseal::EntryKey::seal_with_secret`]).
    /// An entry whose token does not read is taken without it.
    fn cache_get(&self, key: &str) -> Option<CachedState> {
        let (public, secret) = self
            .tokens
            .store()
            .and_then(|s| s.get_with_secret(key).ok().flatten())?;
        let mut state = serde_json::from_slice::<CachedState>(&public).ok()?;
        if !secret.is_empty() {
            state.hsm_token = serde_json::from_slice::<HeldToken>(&secret).ok();
        }
        Some(state)
    }

    fn cache_set(&self, key: &str, state: &CachedState) {
        if let Some(s) = self.tokens.store() {
            let public = serde_json::to_vec(state).expect("state serializes");
            let secret = zeroize::Zeroizing::new(
                state
                    .hsm_token
                    .as_ref()
                    .map(|t| serde_json::to_vec(t).expect("token serializes"))
                    .unwrap_or_default(),
            );
            if let Err(e) = s.set_with_secret(key, &public, &secret) {
                crate::host::token::store_failed("kv_store_write_failed", key, &e);
            }
        }
    }

    fn cache_delete(&self, key: &str) {
        if let Some(s) = self.tokens.store() {
            let _ = s.delete(key);
        }
    }

    fn state_key(&self) -> String {
        ["kek-state/v3/", &self.key_name].concat()
    }

    /// The key's name in the HSM.
    pub fn name(&self) -> &str {
        &self.key_name
    }

    /// `e` as an answer; with key scopes configured, the message names the
    /// key, so the caller knows whose key refused.
    pub fn api_error(&self, e: &KekError) -> cmk_core::api::ApiError {
        let mut out = cmk_core::api::ApiError::from(e);
        if self.cfg.scopes.is_some() {
            out.message = format!("key `{}`: {}", self.key_name, out.message);
        }
        out
    }

    /// A token for Managed HSM: the one a state entry kept for this
    /// identity while it is fresh, else from the token cache while that one
    /// is, else from the configured source. A state entry gets a token only
    /// when it is written after a check of the key (never written back with
    /// an older state: that could undo another request's finding that the
    /// key is disabled).
    async fn token(&self) -> Result<AccessToken, KekError> {
        if let Some(t) = self.held.borrow().as_ref() {
            return Ok(t.clone());
        }
        let token = self.tokens.get(MANAGED_HSM_SCOPE).await?;
        *self.held.borrow_mut() = Some(token.clone());
        Ok(token)
    }

    /// Whether the state entry `name` keeps the HSM token: all but the
    /// latest version's with `hsm_local_wrap` (a wrap then calls the HSM
    /// only to check the state, so the token would only make the entry that
    /// every delivery reads longer).
    fn keeps_token(&self, name: &str) -> bool {
        !(self.cfg.local_wrap && name == self.state_key())
    }

    /// Takes the token `state` keeps (out of it), when it is this
    /// identity's and fresh.
    fn hold_token_of(&self, name: &str, state: &mut CachedState) {
        let Some(h) = &state.hsm_token else {
            return;
        };
        if self.held.borrow().is_some() {
            return;
        }
        let fresh = cmk_core::entra::freshness(
            Some(&h.token),
            UnixTime::now(),
            self.cfg.identity.refresh_skew_secs,
        ) == cmk_core::entra::Freshness::Use;
        if fresh
            && cmk_core::entra::header_safe(&h.token.token)
            && h.identity == self.tokens.cache_name(MANAGED_HSM_SCOPE)
        {
            *self.held.borrow_mut() = state.hsm_token.take().map(|h| h.token);
            *self.held_from.borrow_mut() = Some(name.to_owned());
        }
    }

    /// Sends an HSM request built with a token. On 401: a token a state entry
    /// kept removes that entry and the token cache's is tried; the token
    /// cache's own is dropped and one got anew is tried, once.
    async fn call(
        &self,
        build: impl Fn(&str) -> Result<http::Request<Vec<u8>>, HsmError>,
    ) -> Result<http::Response<Vec<u8>>, KekError> {
        let mut forgot = false;
        loop {
            let token = self.token().await?;
            let sent = outbound::send_retrying(
                cmk_core::tally::Peer::Hsm,
                build(&token.token)?,
                self.retry,
                verdict,
            )
            .await;
            let resp = sent.result.map_err(|detail| KekError::Transport {
                what: "Managed HSM",
                detail,
            })?;
            if resp.status().as_u16() == 401 {
                *self.held.borrow_mut() = None;
                // A state entry's copy: that entry goes (the next request
                // checks the state and keeps a good token); the token
                // cache's is tried next.
                let from = self.held_from.borrow_mut().take();
                if let Some(name) = from {
                    self.cache_delete(&name);
                    continue;
                }
                // The token cache's own: dropped, and one more try with a
                // token got anew.
                if !forgot {
                    self.tokens.forget(MANAGED_HSM_SCOPE);
                    forgot = true;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// The latest key version's state; cached for `hsm_key_check_secs` unless
    /// `fresh` is asked for.
    pub async fn key(&self, fresh: bool) -> Result<(KeyInfo, UnixTime), KekError> {
        self.state(&self.latest(), &self.state_key(), fresh).await
    }

    /// The key named by the configuration, at its latest version.
    fn latest(&self) -> KeyRef {
        KeyRef {
            name: self.key_name.clone(),
            version: None,
        }
    }

    /// The state of `key` (a version, or the latest), from the cache under
    /// `cache_key` while younger than `hsm_key_check_secs`, else from the HSM.
    async fn state(
        &self,
        key: &KeyRef,
        cache_key: &str,
        fresh: bool,
    ) -> Result<(KeyInfo, UnixTime), KekError> {
        let (info, checked_at, _) = self.state_kept(key, cache_key, fresh).await?;
        Ok((info, checked_at))
    }

    /// [`Self::state`], and the modulus's constant kept with it, if any.
    async fn state_kept(
        &self,
        key: &KeyRef,
        cache_key: &str,
        fresh: bool,
    ) -> Result<(KeyInfo, UnixTime, Option<hsm::ModulusConstant>), KekError> {
        let now = UnixTime::now();
        // Read once: its token serves the check below, its key the log.
        let mut cached = self.cache_get(cache_key);
        if let Some(c) = cached.as_mut() {
            self.hold_token_of(cache_key, c);
        }
        if let Some(c) = cached.as_ref().filter(|c| {
            !fresh
                && self.cfg.check_secs > 0
                && hsm::cached_state_usable(UnixTime(c.checked_at), now, self.cfg.check_secs)
        }) {
            let kept = (
                c.key.clone(),
                UnixTime(c.checked_at),
                c.modulus_constant.clone(),
            );
            return Ok(kept);
        }
        let resp = self
            .call(|t| Ok(hsm::get_key_request(&self.cfg.endpoint, key, t)))
            .await?;
        let info = match hsm::parse_key(&resp) {
            Ok(k) => k,
            Err(e) => {
                self.cache_delete(cache_key);
                return Err(e.into());
            }
        };
        let previous = cached.map(|c| c.key);
        log_state_change(
            &self.key_name,
            self.tokens.store().is_some(),
            previous.as_ref(),
            &info,
        );
        // Only the latest version wraps, and only with local wrap.
        let modulus_constant = if self.cfg.local_wrap && key.version.is_none() {
            hsm::ModulusConstant::of(&info).ok()
        } else {
            None
        };
        let hsm_token = match self.held.borrow().as_ref() {
            Some(t) if self.keeps_token(cache_key) => Some(HeldToken {
                identity: self.tokens.cache_name(MANAGED_HSM_SCOPE),
                token: t.clone(),
            }),
            _ => None,
        };
        let state = CachedState {
            checked_at: now.0,
            key: info.clone(),
            modulus_constant,
            hsm_token,
        };
        self.cache_set(cache_key, &state);
        Ok((info, now, state.modulus_constant))
    }

    /// Wraps a data key with the latest key version, after checking that the
    /// version is usable (the service itself still wraps with a disabled key).
    /// With `hsm_local_wrap`, wraps here with that version's public part (the
    /// same RSA-OAEP-256 operation) and makes no HSM call beyond the state
    /// check.
    pub async fn wrap(&self, dek: &[u8]) -> Result<CryptResult, KekError> {
        let (key, _, kept) = self
            .state_kept(&self.latest(), &self.state_key(), false)
            .await?;
        hsm::check_usable(&key, KeyOp::Wrap, UnixTime::now())?;
        if self.cfg.local_wrap {
            // The OAEP seed, from the host's secure random source
            // (`wasi:random/random`, as for nonces).
            let seed: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
                wasi::random::random::get_random_bytes(32)
                    .try_into()
                    .expect("32 bytes asked for"),
            );
            let (wrapped, set_aside) =
                hsm::wrap_locally_kept(&key, &self.cfg.endpoint, dek, &seed, kept.as_ref())?;
            if set_aside {
                // The wrap is right (it made its own constant); the cached
                // one is not the modulus's, until the state is checked again.
                log::emit(
                    "warn",
                    "kept_constant_refused",
                    &[("key", json!(self.key_name))],
                );
            }
            return Ok(wrapped);
        }
        let kref = KeyRef::from_kid(&key.kid, &self.cfg.endpoint)?;
        if kref.version.is_none() {
            return Err(HsmError::InvalidResponse("the key id has no version".into()).into());
        }
        let resp = self
            .call(|t| hsm::wrap_request(&self.cfg.endpoint, &kref, dek, t))
            .await?;
        hsm::parse_crypt_for(&resp, &kref, &self.cfg.endpoint).map_err(|e| {
            if matches!(e, HsmError::KeyUnavailable { .. }) {
                self.cache_delete(&self.state_key());
            }
            e.into()
        })
    }

    /// Unwraps a data key with the exact key version named by `kid`, which
    /// must belong to the configured HSM, after checking that version's own
    /// state (cached for `hsm_key_check_secs`): Key Vault still performs
    /// unwrapKey outside a key's nbf/exp window (to allow recovery), so the
    /// component refuses expired and not-yet-valid versions itself, as it
    /// does disabled ones.
    pub async fn unwrap(&self, kid: &str, wrapped: &[u8]) -> Result<Vec<u8>, KekError> {
        let kref = KeyRef::from_kid(kid, &self.cfg.endpoint)?;
        if kref.name != self.key_name {
            return Err(HsmError::InvalidKeyId(format!(
                "`{kid}` names another key than {}",
                self.key_name
            ))
            .into());
        }
        let Some(version) = kref.version.as_deref() else {
            return Err(HsmError::InvalidKeyId(format!("`{kid}` names no key version")).into());
        };
        let cache_key = ["kek-state/v3/", &kref.name, "/", version].concat();
        let info = match self.state(&kref, &cache_key, false).await {
            Ok((info, _)) => info,
            Err(e) => return Err(self.version_missing(e, kid).await),
        };
        hsm::check_usable(&info, KeyOp::Unwrap, UnixTime::now())?;
        let resp = self
            .call(|t| hsm::unwrap_request(&self.cfg.endpoint, &kref, wrapped, t))
            .await?;
        match hsm::parse_crypt_for(&resp, &kref, &self.cfg.endpoint) {
            Ok(r) => Ok(r.value),
            // The key version is usable (checked above) and refused these
            // bytes as a parameter: the wrapped key is not its ciphertext.
            Err(HsmError::Rejected {
                status: 400, code, ..
            }) => Err(KekError::RecordKey(format!(
                "the HSM refused it as a parameter ({code})"
            ))),
            Err(e) => {
                if matches!(e, HsmError::KeyUnavailable { .. }) {
                    self.cache_delete(&cache_key);
                }
                Err(self.version_missing(e.into(), kid).await)
            }
        }
    }

    /// A `404 KeyNotFound` for the version a record names, while the key
    /// itself answers and is usable: the version never existed (Managed
    /// HSM deletes keys, not single versions), so the record is at fault.
    /// Any other error, or a key that is itself missing or unusable, stays
    /// the key's (and fails the whole request). The key is asked afresh:
    /// its cached state may predate its deletion, which would blame the
    /// record (`RecordTampered`) for a key that is gone (`KeyNotFound`);
    /// and when that read fails, its own error (a throttled HSM, a token)
    /// is the answer, not the version's 404. (A reader remembers the
    /// outcome per key version, so a page asks once per missing version.)
    async fn version_missing(&self, e: KekError, kid: &str) -> KekError {
        if !matches!(
            e,
            KekError::Hsm(HsmError::KeyUnavailable {
                reason: hsm::Unavailable::NotFound,
                ..
            })
        ) {
            return e;
        }
        match self.key(true).await {
            Ok((latest, _)) => match hsm::check_usable(&latest, KeyOp::Unwrap, UnixTime::now()) {
                Ok(()) => KekError::VersionMissing(kid.to_owned()),
                Err(unusable) => KekError::Hsm(unusable),
            },
            Err(fresh) => fresh,
        }
    }
}
