//! Key scopes on the write path: which key seals each document of a
//! delivery (see `config::KeyScopes`). A delivery's documents are grouped
//! by key, in the order each key first appears; each group gets its own
//! data key, wrapped once by its own key.

use http::StatusCode;

use crate::api::ApiError;
use crate::config::{KekConfig, RuleCollision, UnknownScope};
use crate::document::Document;

/// Most distinct keys made by the naming rule in one delivery: each new
/// key costs HSM calls (key check, wrap), so one sender must not spend the
/// HSM's rate limit with many scope values in one delivery. Mapped keys and
/// `hsm_key_name` do not count (at most [`crate::config::MAX_MAPPED_KEYS`]
/// of them, all checked at readiness).
pub const MAX_RULE_KEYS_PER_DELIVERY: usize = 16;

/// The documents of a delivery sealed under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroup {
    /// The key's name in the Managed HSM.
    pub key_name: String,
    /// Indexes into the delivery's documents, in delivery order.
    pub documents: Vec<usize>,
}

/// Groups `documents` by the key that seals each: `hsm_key_name` for all
/// without key scopes; else the key of the scope value at the configured
/// pointer of each event (mapped, or by the naming rule). An event whose
/// value is missing (or null) or not configured is refused (400, the
/// sender must not retry), or goes under `hsm_key_name` with
/// `key_scope_unknown = default`; one whose value is present but not a
/// string is refused either way (400 `KeyScopeNotString`). The error names the event and the
/// pointer, never the value. More than [`MAX_RULE_KEYS_PER_DELIVERY`]
/// rule-made keys refuse the delivery (400 `TooManyKeyScopes`).
pub fn key_groups(documents: &[Document], kek: &KekConfig) -> Result<Vec<KeyGroup>, ApiError> {
    let mut groups: Vec<KeyGroup> = Vec::new();
    let mut rule_made = 0;
    for (i, d) in documents.iter().enumerate() {
        let key_name = match &kek.scopes {
            None => kek.key_name.clone(),
            Some(scopes) => {
                let event = &d.body["event"];
                let id = event["id"].as_str().unwrap_or_default();
                let value = match event.pointer(&scopes.pointer) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(v)) => Some(v.as_str()),
                    // Present but not a string (`42` where `"42"` is
                    // mapped): refused whatever `key_scope_unknown` says, so
                    // that a mistyped scope never lands under the default
                    // key, outside its scope's erasure.
                    Some(other) => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "KeyScopeNotString",
                            format!(
                                "event `{id}`: the value at {} is not a string but a JSON {}; key scopes are chosen by strings only, so the event is refused (do not retry)",
                                scopes.pointer,
                                crate::envelope::json_kind(other)
                            ),
                        ))
                    }
                };
                let chosen = match value.map(|v| scopes.key_for(v)) {
                    None => None,
                    Some(Ok(k)) => k,
                    Some(Err(RuleCollision)) => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "KeyScopeConflict",
                            format!(
                                "event `{id}`: the value at {} would make the name of another scope's key or of the default key; the event is refused (do not retry)",
                                scopes.pointer
                            ),
                        ))
                    }
                };
                match (chosen, scopes.unknown) {
                    (Some(k), _) => k,
                    (None, UnknownScope::DefaultKey) => kek.key_name.clone(),
                    (None, UnknownScope::Refuse) => {
                        return Err(match value {
                            None => ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "KeyScopeMissing",
                                format!(
                                    "event `{id}` has no value at {} to choose its key by; the event is refused (do not retry)",
                                    scopes.pointer
                                ),
                            ),
                            Some(_) => ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "KeyScopeUnknown",
                                format!(
                                    "event `{id}`: the value at {} is not a configured key scope; the event is refused (do not retry)",
                                    scopes.pointer
                                ),
                            ),
                        });
                    }
                }
            }
        };
        match groups.iter_mut().find(|g| g.key_name == key_name) {
            Some(g) => g.documents.push(i),
            None => {
                if kek.scopes.as_ref().is_some_and(|s| s.rule_made(&key_name)) {
                    rule_made += 1;
                    if rule_made > MAX_RULE_KEYS_PER_DELIVERY {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "TooManyKeyScopes",
                            format!(
                                "the delivery names more than {MAX_RULE_KEYS_PER_DELIVERY} keys made by key_scope_key_rule (each costs HSM calls); send fewer scopes per delivery (the delivery is refused, do not retry it as is)"
                            ),
                        ));
                    }
                }
                groups.push(KeyGroup {
                    key_name,
                    documents: vec![i],
                })
            }
        }
    }
    Ok(groups)
}
