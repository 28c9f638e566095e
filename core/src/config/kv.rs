//! The key binding key-value store entries to this deployment
//! (`kv_store_key`).

use super::vars::{invalid, Vars};
use super::ConfigError;
use crate::kvseal::EntryKey;

/// The entry key derived from the secret `kv_store_key` (trimmed, at
/// least 16 characters), `None` when it is not set.
pub(super) fn load(vars: &Vars) -> Result<Option<EntryKey>, ConfigError> {
    match vars.get("kv_store_key")? {
        None => Ok(None),
        Some(v) if v.trim().len() < 16 => {
            Err(invalid("kv_store_key", &"must be at least 16 characters"))
        }
        Some(v) => Ok(Some(EntryKey::derive(v.trim()))),
    }
}
