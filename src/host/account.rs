//! The Cosmos DB account at the edge: the credential each request is signed
//! with (the account key, or an Entra ID token from the shared token cache
//! in [`crate::host::token`]) and sending through [`crate::host::outbound`].
//!
//! With `cosmos_auth = entra`, an answer of 401 or 403 may mean the cached
//! token was revoked or went stale early (the service answers an expired
//! token with 401; some reports show 403): the cached token is dropped, a
//! new one is obtained and the request is sent once more with it. The
//! requests of one delivery run side by side and were signed with the same
//! token, so they share the renewal: the first refused one renews, the
//! others wait for it and take its outcome (the new token, or the failure),
//! and a refusal of a whole delivery costs one token request, not one per
//! request. A source that gives the refused token back has not renewed it:
//! the request is not sent again with it.

use serde_json::json;

use crate::host::log;
use crate::host::outbound::{self, CosmosSent};
use crate::host::token::Tokens;
use cmk_core::api::ApiError;
use cmk_core::config::{CosmosAuth, CosmosConfig};
use cmk_core::cosmos::{bearer_token, reauthorize, token_refused, Credential};

/// One request's access to the account.
pub struct Account<'a> {
    config: &'a CosmosConfig,
    tokens: Option<(Tokens<'a>, &'a str)>,
    /// This request's last renewal, held while it is made.
    renewal: futures::lock::Mutex<Option<Renewal>>,
}

/// A renewal of a refused token, shared by the requests signed with it.
struct Renewal {
    /// The token the service refused.
    refused: String,
    /// The new token, or why there is none (a failure is shared too, so
    /// the requests of a delivery do not each try again in turn).
    outcome: Result<String, String>,
}

impl<'a> Account<'a> {
    /// Access as configured (tokens only with `cosmos_auth = entra`).
    pub fn new(config: &'a CosmosConfig, kv_key: Option<&cmk_core::kvseal::EntryKey>) -> Self {
        let tokens = match &config.auth {
            CosmosAuth::MasterKey(_) => None,
            CosmosAuth::Entra { scope, identity } => {
                Some((Tokens::new(identity, config.retry, kv_key), scope.as_str()))
            }
        };
        Self {
            config,
            tokens,
            renewal: futures::lock::Mutex::new(None),
        }
    }

    /// The credential to sign requests with now.
    pub async fn credential(&self) -> Result<Credential, ApiError> {
        match (&self.config.auth, &self.tokens) {
            (CosmosAuth::MasterKey(c), _) => Ok(c.clone()),
            (_, Some((tokens, scope))) => tokens
                .get(scope)
                .await
                .map(|t| Credential::BearerToken(t.token))
                .map_err(|e| ApiError::from(&e)),
            (CosmosAuth::Entra { .. }, None) => unreachable!("entra auth always has tokens"),
        }
    }

    /// Sends one request with retries; with a token, once more with a fresh
    /// token if the service refused the first.
    pub async fn send(&self, req: http::Request<Vec<u8>>) -> CosmosSent {
        let retry = self.config.retry;
        let first = outbound::send_cosmos(outbound::copy(&req), retry).await;
        let Some((tokens, scope)) = &self.tokens else {
            return first;
        };
        let status = match &first.result {
            Ok(r) if token_refused(r) => r.status().as_u16(),
            _ => return first,
        };
        let refused = bearer_token(&req).unwrap_or_default().to_owned();
        let token = {
            let mut renewal = self.renewal.lock().await;
            match renewal.as_ref() {
                // Another request signed with the same token renewed it.
                Some(r) if r.refused == refused => r.outcome.clone(),
                _ => {
                    tokens.forget(scope);
                    let outcome = match tokens.get(scope).await {
                        // A source that serves from its own cache (the
                        // token proxy, IMDS) may give the refused token
                        // back: sending it again would only be refused.
                        Ok(t) if t.token == refused => {
                            Err("the token source gave back the refused token".to_owned())
                        }
                        Ok(t) => Ok(t.token),
                        Err(e) => Err(e.to_string()),
                    };
                    *renewal = Some(Renewal {
                        refused: refused.clone(),
                        outcome: outcome.clone(),
                    });
                    outcome
                }
            }
        };
        let mut req = req;
        let renewed = token.and_then(|t| reauthorize(&mut req, &t).map_err(|e| e.to_string()));
        log::emit(
            "warn",
            "cosmos_token_refused",
            &[
                ("status", json!(status)),
                ("renewed", json!(renewed.is_ok())),
                ("error", json!(renewed.as_ref().err())),
            ],
        );
        if renewed.is_err() {
            return first;
        }
        let second = outbound::send_cosmos(req, retry).await;
        // The renewed token was refused too: the requests still signed with
        // the old one are not sent again with it.
        if matches!(&second.result, Ok(r) if token_refused(r)) {
            if let Some(r) = self.renewal.lock().await.as_mut() {
                if r.refused == refused && r.outcome.is_ok() {
                    r.outcome = Err("the renewed token was refused too".to_owned());
                }
            }
        }
        CosmosSent {
            result: second.result,
            attempts: first.attempts + second.attempts,
            duration_ms: first.duration_ms + second.duration_ms,
        }
    }

    /// Sends requests with at most `limit` in flight at once (a delivery of
    /// 1,000 events in as many partitions must not open 1,000 requests),
    /// answers in request order.
    pub async fn send_all(
        &self,
        reqs: Vec<http::Request<Vec<u8>>>,
        limit: usize,
    ) -> Vec<CosmosSent> {
        use futures::StreamExt;
        futures::stream::iter(reqs.into_iter().map(|r| self.send(r)))
            .buffered(limit.max(1))
            .collect()
            .await
    }
}
