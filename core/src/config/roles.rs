//! Who may read records back, and who may run maintenance (`read_*`,
//! `admin_keys`). That no two roles share a key is checked across groups
//! in [`super::Config::load`].

use super::vars::{invalid, Vars};
use super::ConfigError;
use crate::access::Keys;

/// Read access.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    /// Accepted read keys; `None` disables `GET /records`.
    pub keys: Option<Keys>,
    /// In the second stage, whether records without an envelope header
    /// (written in the first stage) may be returned.
    pub accept_unsealed: bool,
}

/// Maintenance access.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Accepted admin keys; `None` disables `/admin/*`.
    pub keys: Option<Keys>,
}

/// Reads the read access settings.
pub(super) fn read(vars: &Vars) -> Result<ReadConfig, ConfigError> {
    Ok(ReadConfig {
        keys: vars.keys("read_keys")?,
        accept_unsealed: match vars.get("read_accept_unsealed")?.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid("read_accept_unsealed", &"must be true or false")),
        },
    })
}

/// Reads the maintenance access settings.
pub(super) fn admin(vars: &Vars) -> Result<AdminConfig, ConfigError> {
    Ok(AdminConfig {
        keys: vars.keys("admin_keys")?,
    })
}
