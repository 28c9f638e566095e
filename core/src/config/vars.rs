//! Reading variables: the lookup every settings group reads through, and
//! the value shapes they share (numbers, on/off switches, key lists).

use super::ConfigError;
use crate::access::Keys;

/// A variable lookup as [`super::Config::load`] receives it: `Ok(None)` for
/// a variable that is unset.
pub(super) type Lookup<'a> = dyn Fn(&'static str) -> Result<Option<String>, String> + 'a;

/// The variables, read through a lookup; every error names the variable,
/// never its value. Each variable is looked up at most once per load (a
/// lookup is a call into the host): settings groups that share one, such
/// as `azure_tenant_id`, get the remembered value.
pub(super) struct Vars<'a> {
    lookup: &'a Lookup<'a>,
    seen: std::cell::RefCell<Vec<(&'static str, Option<String>)>>,
}

/// A variable's value is not acceptable, and why.
pub(super) fn invalid(name: &'static str, reason: &dyn std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.to_string(),
    }
}

impl<'a> Vars<'a> {
    pub(super) fn new(lookup: &'a Lookup<'a>) -> Self {
        Self {
            lookup,
            // Room for every variable: a load reads most of them.
            seen: std::cell::RefCell::new(Vec::with_capacity(super::VARIABLES.len())),
        }
    }

    /// The value, `None` when it is unset or blank.
    pub(super) fn get(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        if let Some((_, v)) = self.seen.borrow().iter().find(|(n, _)| *n == name) {
            return Ok(v.clone());
        }
        let v = (self.lookup)(name)
            .map(|v| v.filter(|s| !s.trim().is_empty()))
            .map_err(|reason| ConfigError::Unreadable { name, reason })?;
        self.seen.borrow_mut().push((name, v.clone()));
        Ok(v)
    }

    /// The value, which must be set.
    pub(super) fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name)?.ok_or(ConfigError::Missing(name))
    }

    /// A whole number from 1 to `max`, `default` when unset.
    pub(super) fn number(
        &self,
        name: &'static str,
        default: usize,
        max: usize,
    ) -> Result<usize, ConfigError> {
        match self.get(name)? {
            None => Ok(default),
            Some(s) => match s.trim().parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(invalid(
                    name,
                    &format!("must be a whole number from 1 to {max}"),
                )),
            },
        }
    }

    /// A switch spelled `on` or `off` (surrounding spaces ignored), off
    /// when unset.
    pub(super) fn flag(
        &self,
        name: &'static str,
        on: &str,
        off: &str,
    ) -> Result<bool, ConfigError> {
        match self.get(name)?.as_deref().map(str::trim) {
            None => Ok(false),
            Some(v) if v == off => Ok(false),
            Some(v) if v == on => Ok(true),
            Some(_) => Err(invalid(name, &format!("must be {on} or {off}"))),
        }
    }

    /// Accepted keys for a role, `None` when unset.
    pub(super) fn keys(&self, name: &'static str) -> Result<Option<Keys>, ConfigError> {
        match self.get(name)? {
            None => Ok(None),
            Some(v) => Ok(Some(Keys::parse(&v).map_err(|e| invalid(name, &e))?)),
        }
    }
}
