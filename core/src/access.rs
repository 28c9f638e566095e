//! Inbound credentials: shared keys compared in constant time, with room for
//! two active values so a key can be rotated without downtime.

use http::StatusCode;
use sha2::{Digest, Sha256};
use std::fmt;

use crate::api::ApiError;

/// A route that callers reach with a key of their role (reading,
/// maintenance): what to answer when the role is off or the key is wrong.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    /// Header that carries the key.
    pub header: &'static str,
    /// The role's name in messages ("read", "admin").
    pub role: &'static str,
    /// Error code while no keys are configured for the role.
    pub disabled_code: &'static str,
    /// Message while no keys are configured for the role.
    pub disabled_message: &'static str,
}

impl Gate {
    /// 403 while the role has no keys, 401 without a key, 403 for a key not
    /// accepted.
    pub fn check(&self, keys: Option<&Keys>, presented: Option<&str>) -> Result<(), ApiError> {
        let Some(keys) = keys else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                self.disabled_code,
                self.disabled_message,
            ));
        };
        match presented {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthenticated",
                format!("send the {} key in {}", self.role, self.header),
            )),
            Some(k) if keys.accepts(k) => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("the {} key is not accepted", self.role),
            )),
        }
    }
}

/// Header a sender puts its ingest key in (`?code=` in the URL only with
/// `ingest_key_in_query = allow`).
pub const INGEST_KEY_HEADER: &str = "x-cmk-ingest-key";

/// Header that carries the read key (`GET /records`).
pub const READ_KEY_HEADER: &str = "x-cmk-read-key";

/// Header that carries the admin key (maintenance routes, readiness detail).
pub const ADMIN_KEY_HEADER: &str = "x-cmk-admin-key";

/// Reading records: 403 while no `read_keys` are configured.
pub const READER: Gate = Gate {
    header: READ_KEY_HEADER,
    role: "read",
    disabled_code: "ReadDisabled",
    disabled_message: "reading records is not enabled (no read_keys configured)",
};

/// Maintenance calls (rewrap, seal, erasure): 403 while no `admin_keys`
/// are configured.
pub const ADMIN: Gate = Gate {
    header: ADMIN_KEY_HEADER,
    role: "admin",
    disabled_code: "AdminDisabled",
    disabled_message: "maintenance is not enabled (no admin_keys configured)",
};

/// Authorizes a maintenance call (records erasure, rewrap, seal): the
/// caller's admin key against the configured `admin_keys` (403 while none
/// are configured, 401 without a key, 403 for a key not accepted).
pub fn authorize_admin(admin_key: Option<&str>, keys: Option<&Keys>) -> Result<(), ApiError> {
    ADMIN.check(keys, admin_key)
}

/// One to two accepted secret values. `Debug` never shows them.
#[derive(Clone)]
pub struct Keys(Vec<[u8; 32]>);

impl Keys {
    /// Parses a comma-separated list of one or two values, each at least
    /// 16 characters.
    pub fn parse(list: &str) -> Result<Self, String> {
        let values: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() || values.len() > 2 {
            return Err("give one key, or two separated by a comma while rotating".into());
        }
        if values.iter().any(|v| v.len() < 16) {
            return Err("each key needs at least 16 characters".into());
        }
        Ok(Self(
            values
                .iter()
                .map(|v| Sha256::digest(v.as_bytes()).into())
                .collect(),
        ))
    }

    /// Whether `presented` is one of the keys. Compares SHA-256 digests in
    /// constant time, so neither content nor length leaks through timing.
    pub fn accepts(&self, presented: &str) -> bool {
        let p: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut any = 0u8;
        for k in &self.0 {
            let diff = k
                .iter()
                .zip(p.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            any |= u8::from(diff == 0);
        }
        any == 1
    }
}

impl Keys {
    /// Whether the two sets have a value in common (compared as digests).
    pub fn shares_with(&self, other: &Keys) -> bool {
        self.0.iter().any(|k| other.0.contains(k))
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({} value(s), redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_calls_need_an_accepted_admin_key() {
        let keys = Keys::parse("admin-key-0123456789").unwrap();
        let status = |presented, keys| {
            authorize_admin(presented, keys).map_err(|e: ApiError| (e.status.as_u16(), e.code))
        };
        assert_eq!(status(Some("admin-key-0123456789"), Some(&keys)), Ok(()));
        assert_eq!(
            status(Some("other-key-0123456789"), Some(&keys)),
            Err((403, "Forbidden"))
        );
        assert_eq!(status(None, Some(&keys)), Err((401, "Unauthenticated")));
        assert_eq!(
            status(Some("admin-key-0123456789"), None),
            Err((403, "AdminDisabled"))
        );
    }

    #[test]
    fn accepts_either_active_key_only() {
        let k = Keys::parse("first-key-0123456789, second-key-0123456789").unwrap();
        assert!(k.accepts("first-key-0123456789"));
        assert!(k.accepts("second-key-0123456789"));
        assert!(!k.accepts("first-key-012345678"));
        assert!(!k.accepts(""));
        assert!(!format!("{k:?}").contains("first"));
    }

    #[test]
    fn shared_values_are_found() {
        let a = Keys::parse("first-key-0123456789, second-key-0123456789").unwrap();
        let b = Keys::parse("second-key-0123456789").unwrap();
        let c = Keys::parse("third-key-0123456789").unwrap();
        assert!(a.shares_with(&b) && b.shares_with(&a));
        assert!(!a.shares_with(&c));
    }

    #[test]
    fn refuses_weak_or_too_many_keys() {
        assert!(Keys::parse("").is_err());
        assert!(Keys::parse("short").is_err());
        assert!(Keys::parse("aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb,cccccccccccccccc").is_err());
    }
}
