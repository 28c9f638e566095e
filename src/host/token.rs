//! Entra ID access tokens at the edge, for every audience the component
//! calls (Managed HSM, and the Cosmos DB account with `cosmos_auth = entra`):
//! one token per (provider, scope), cached in the Spin key-value store until
//! shortly before it expires, obtained from the configured source through
//! [`crate::host::outbound`]. The decisions (request, parsing, freshness, cache
//! key) are the pure ones in [`cmk_core::entra`].

use serde_json::json;
use spin_sdk::key_value::Store;

use crate::host::log;
use crate::host::outbound;
use cmk_core::config::IdentityConfig;
use cmk_core::entra::{self, AccessToken, EntraError, Freshness};
use cmk_core::retry::RetryPolicy;
use cmk_core::tally::{self, HostCall};
use cmk_core::time::UnixTime;

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint refused or answered without a token.
    #[error(transparent)]
    Identity(#[from] EntraError),
    /// The token endpoint could not be reached.
    #[error("could not reach the token endpoint: {0}")]
    Transport(String),
}

impl TokenError {
    /// Whether a later attempt may succeed without an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            TokenError::Identity(e) => e.is_transient(),
            TokenError::Transport(_) => true,
        }
    }
}

impl From<&TokenError> for cmk_core::api::ApiError {
    fn from(e: &TokenError) -> Self {
        match e {
            TokenError::Identity(e) => e.into(),
            TokenError::Transport(_) => cmk_core::api::ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "IdentityUnavailable",
                e.to_string(),
            )
            .retry_after(cmk_core::api::DEFAULT_RETRY_AFTER_SECS),
        }
    }
}

/// Tokens from one configured source, for one request.
pub struct Tokens<'a> {
    identity: &'a IdentityConfig,
    retry: RetryPolicy,
    store: Option<KvStore>,
}

/// The `default` key-value store with each entry bound to this deployment
/// by [`cmk_core::kvseal`] when the secret `kv_store_key` is set: an entry that
/// does not verify reads as absent, and secrets (the cached tokens, through
/// [`KvStore::set_secret`]) are encrypted. Without the secret, entries are kept as
/// they are (the store is then trusted as the component itself; a warning
/// says so).
pub struct KvStore {
    store: Store,
    key: Option<cmk_core::kvseal::EntryKey>,
}

/// A nonce for an encrypted entry, from the host's secure random source.
fn fresh_nonce() -> [u8; cmk_core::kvseal::NONCE_LEN] {
    let mut nonce = [0u8; cmk_core::kvseal::NONCE_LEN];
    let random = wasi::random::random::get_random_bytes(cmk_core::kvseal::NONCE_LEN as u64);
    nonce.copy_from_slice(&random[..cmk_core::kvseal::NONCE_LEN]);
    nonce
}

impl KvStore {
    /// The value under `name`, if present and (with a key) genuine.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, spin_sdk::key_value::Error> {
        self.get_opened(name, |k, n, b| k.open(n, b))
    }

    /// The secret under `name` (stored by [`KvStore::set_secret`]), if
    /// present and (with a key) genuine.
    pub fn get_secret(&self, name: &str) -> Result<Option<Vec<u8>>, spin_sdk::key_value::Error> {
        self.get_opened(name, |k, n, b| k.open_secret(n, b).map(|v| v.to_vec()))
    }

    /// Stores the secret `value` under `name`: encrypted, with a key (see
    /// [`cmk_core::kvseal::EntryKey::seal_secret`]).
    pub fn set_secret(&self, name: &str, value: &[u8]) -> Result<(), spin_sdk::key_value::Error> {
        tally::host(HostCall::KvWrite);
        match &self.key {
            Some(k) => {
                let nonce = fresh_nonce();
                self.store.set(name, &k.seal_secret(name, value, nonce))
            }
            None => self.store.set(name, value),
        }
    }

    /// The public part and the secret under `name` (stored by
    /// [`KvStore::set_with_secret`]), if present and (with a key) genuine;
    /// the secret empty if none was stored. The secret is handed over as
    /// [`KvStore::get_secret`] hands its over.
    #[allow(clippy::type_complexity)]
    pub fn get_with_secret(
        &self,
        name: &str,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, spin_sdk::key_value::Error> {
        self.get_opened_as(
            name,
            |k, n, b| k.open_with_secret(n, b).map(|(p, s)| (p, s.to_vec())),
            |mut b| {
                // Without a key: the public part, then a newline and the
                // secret (compact JSON has no newline of its own).
                match memchr::memchr(b'\n', &b) {
                    Some(at) => {
                        let secret = b.split_off(at + 1);
                        b.truncate(at);
                        (b, secret)
                    }
                    None => (b, Vec::new()),
                }
            },
        )
    }

    /// Stores `public` and the secret `secret` together under `name`: with
    /// a key, `secret` encrypted and `public` authenticated with it (see
    /// [`cmk_core::kvseal::EntryKey::seal_with_secret`]).
    pub fn set_with_secret(
        &self,
        name: &str,
        public: &[u8],
        secret: &[u8],
    ) -> Result<(), spin_sdk::key_value::Error> {
        tally::host(HostCall::KvWrite);
        match &self.key {
            Some(k) => {
                let nonce = fresh_nonce();
                let sealed = k
                    .seal_with_secret(name, public, secret, nonce)
                    .ok_or_else(|| {
                        spin_sdk::key_value::Error::Other("the entry is too long".into())
                    })?;
                self.store.set(name, &sealed)
            }
            None => self.store.set(name, &[public, b"\n", secret].concat()),
        }
    }

    fn get_opened(
        &self,
        name: &str,
        open: impl Fn(&cmk_core::kvseal::EntryKey, &str, &[u8]) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, spin_sdk::key_value::Error> {
        self.get_opened_as(name, open, |b| b)
    }

    /// The entry under `name`: opened with the key (refused entries logged
    /// and read as absent), or taken `as_is` without one.
    fn get_opened_as<T>(
        &self,
        name: &str,
        open: impl Fn(&cmk_core::kvseal::EntryKey, &str, &[u8]) -> Option<T>,
        as_is: impl Fn(Vec<u8>) -> T,
    ) -> Result<Option<T>, spin_sdk::key_value::Error> {
        tally::host(HostCall::KvGet);
        let v = self.store.get(name)?;
        Ok(match (&self.key, v) {
            (Some(k), Some(b)) => {
                let opened = open(k, name, &b);
                if opened.is_none() {
                    log::emit(
                        "warn",
                        "kv_entry_refused",
                        &[
                            ("name", json!(name)),
                            (
                                "reason",
                                json!("not sealed by this deployment's kv_store_key"),
                            ),
                        ],
                    );
                }
                opened
            }
            (None, v) => v.map(as_is),
            (_, None) => None,
        })
    }

    /// Stores `value` under `name` (sealed, with a key).
    pub fn set(&self, name: &str, value: &[u8]) -> Result<(), spin_sdk::key_value::Error> {
        tally::host(HostCall::KvWrite);
        match &self.key {
            Some(k) => self.store.set(name, &k.seal(name, value)),
            None => self.store.set(name, value),
        }
    }

    /// Removes the entry under `name`.
    pub fn delete(&self, name: &str) -> Result<(), spin_sdk::key_value::Error> {
        tally::host(HostCall::KvWrite);
        self.store.delete(name)
    }
}

/// Logs a key-value store operation that failed (`kv_store_read_failed`,
/// `kv_store_write_failed`), with the entry's name: entry names hold key
/// names, URLs and digests, nothing secret.
pub(crate) fn store_failed(event: &str, entry: &str, error: &dyn std::fmt::Display) {
    log::emit(
        "warn",
        event,
        &[("entry", json!(entry)), ("error", json!(error.to_string()))],
    );
}

/// Opens the `default` key-value store that holds the component's caches
/// (tokens, key state, signing keys), its entries bound by `key` (the
/// configuration's [`cmk_core::config::Config::kv_key`]); `None` when the host
/// has none, and then every request fetches its own. Without the key,
/// `kv_store_unbound` is logged once per instance, that is once per request
/// that opens the store (Spin gives each request an instance of its own and
/// there is no other state across requests): on purpose, as the
/// configuration's warnings are, since production needs the key.
pub fn open_store(key: Option<&cmk_core::kvseal::EntryKey>) -> Option<KvStore> {
    let key = match key {
        Some(k) => Some(k.clone()),
        None => {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::emit(
                "warn",
                "kv_store_unbound",
                &[("message", json!("kv_store_key is not set: key-value store entries are trusted as they are"))],
            );
            }
            None
        }
    };
    tally::host(HostCall::KvOpen);
    match Store::open_default() {
        Ok(store) => Some(KvStore { store, key }),
        Err(e) => {
            log::emit(
                "warn",
                "kv_store_unavailable",
                &[("error", json!(e.to_string()))],
            );
            None
        }
    }
}

impl<'a> Tokens<'a> {
    /// Opens the `default` key-value store for the cache (without it, every
    /// request fetches its own token, and says so in the log).
    pub fn new(
        identity: &'a IdentityConfig,
        retry: RetryPolicy,
        kv_key: Option<&cmk_core::kvseal::EntryKey>,
    ) -> Self {
        let store = open_store(kv_key);
        Self {
            identity,
            retry,
            store,
        }
    }

    /// The key-value store the tokens are cached in, for the caller's
    /// other entries (one store opened per request).
    pub fn store(&self) -> Option<&KvStore> {
        self.store.as_ref()
    }

    fn key(&self, scope: &str) -> String {
        entra::cache_key(&self.identity.provider, scope)
    }

    /// The name of the entry this identity's tokens for `scope` are cached
    /// under (a digest of the provider and the scope): what a copy of such
    /// a token kept elsewhere is checked against.
    pub fn cache_name(&self, scope: &str) -> String {
        self.key(scope)
    }

    /// A token for `scope`: from the cache while it is fresh, else from the
    /// configured source (then cached).
    pub async fn get(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let key = self.key(scope);
        let cached = self
            .store
            .as_ref()
            .and_then(|s| s.get_secret(&key).ok().flatten())
            .and_then(|b| entra::decode_cached(&b));
        let fresh = entra::freshness(
            cached.as_ref(),
            UnixTime::now(),
            self.identity.refresh_skew_secs,
        );
        if let (Freshness::Use, Some(t)) = (fresh, cached) {
            return Ok(t);
        }
        let provider = &self.identity.provider;
        let assertion = self.identity.federated_token.as_ref().map(|s| s.expose());
        let req = entra::token_request(provider, scope, assertion)?;
        let imds = matches!(provider, cmk_core::entra::Provider::Imds { .. });
        let sent = outbound::send_retrying(cmk_core::tally::Peer::Entra, req, self.retry, |r| {
            // IMDS answers 404 while an identity is still being assigned and
            // 410 while it is being updated; the Azure SDKs retry both.
            if imds && matches!(r.status().as_u16(), 404 | 410) {
                outbound::Verdict::Retry(None)
            } else {
                outbound::azure_verdict(r)
            }
        })
        .await;
        let resp = sent.result.map_err(TokenError::Transport)?;
        let token = entra::parse_token_response(&resp, UnixTime::now())?;
        if let Some(s) = &self.store {
            if let Err(e) = s.set_secret(&key, &entra::encode_cached(&token)) {
                store_failed("kv_store_write_failed", &key, &e);
            }
        }
        log::emit(
            "info",
            "token_acquired",
            &[
                ("provider", json!(provider.kind())),
                ("scope", json!(scope)),
                ("expires_on", json!(token.expires_on)),
                ("attempts", json!(sent.attempts)),
                ("duration_ms", json!(sent.duration_ms)),
            ],
        );
        Ok(token)
    }

    /// Drops the cached token for `scope` (the service refused it), so the
    /// next [`Tokens::get`] asks the source again.
    pub fn forget(&self, scope: &str) {
        if let Some(s) = &self.store {
            let _ = s.delete(&self.key(scope));
        }
    }
}
