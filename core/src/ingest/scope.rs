//! Key scopes on the write path: which key seals each document of a
//! delivery (see `config::KeyScopes`). A delivery's documents are grouped
//! by key, in the order each key first appears; each group gets its own
//! data key, wrapped once by its own key.

use http::StatusCode;

use crate::api::ApiError;
use crate::config::{KekConfig, RuleCollision, UnknownScope};
use crate::document::Document;

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
/// value is missing, not a string, or not configured is refused (400, the
/// sender must not retry), or goes under `hsm_key_name` with
/// `key_scope_unknown = default`. The error names the event and the
/// pointer, never the value.
pub fn key_groups(documents: &[Document], kek: &KekConfig) -> Result<Vec<KeyGroup>, ApiError> {
    let mut groups: Vec<KeyGroup> = Vec::new();
    for (i, d) in documents.iter().enumerate() {
        let key_name = match &kek.scopes {
            None => kek.key_name.clone(),
            Some(scopes) => {
                let event = &d.body["event"];
                let value = event.pointer(&scopes.pointer).and_then(|v| v.as_str());
                let id = event["id"].as_str().unwrap_or_default();
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
                                    "event `{id}` has no string at {} to choose its key by; the event is refused (do not retry)",
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
            None => groups.push(KeyGroup {
                key_name,
                documents: vec![i],
            }),
        }
    }
    Ok(groups)
}
