//! Configuration: read once from Spin variables into a typed, validated struct.
//!
//! Reading is a pure function over a lookup, so validation is unit-tested and
//! the Spin edge only supplies `spin_sdk::variables::get`. Errors name the
//! variable and the problem, never a secret's value.

use crate::access::Keys;
use crate::cosmos::{ContainerLink, Credential, Endpoint, MasterKey};
use crate::retry::RetryPolicy;

/// Every variable the component reads, with whether it is secret. `spin.toml`
/// must declare each (a test checks it).
pub const VARIABLES: &[(&str, bool)] = &[
    ("cosmos_endpoint", false),
    ("cosmos_database", false),
    ("cosmos_container", false),
    ("cosmos_auth", false),
    ("cosmos_key", true),
    ("partition_key", false),
    ("max_body_bytes", false),
    ("max_events_per_request", false),
    ("cosmos_retry_budget_ms", false),
    ("read_keys", true),
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where and how documents are written.
    pub cosmos: CosmosConfig,
    /// Limits and mapping for inbound events.
    pub ingest: IngestConfig,
    /// Who may read records back.
    pub read: ReadConfig,
}

/// Read access.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    /// Accepted read keys; `None` disables `GET /records`.
    pub keys: Option<Keys>,
}

/// Cosmos DB settings.
#[derive(Debug, Clone)]
pub struct CosmosConfig {
    /// Account endpoint.
    pub endpoint: Endpoint,
    /// Database and container.
    pub container: ContainerLink,
    /// How requests are authorized.
    pub credential: Credential,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

/// Inbound event settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// JSON Pointer into the CloudEvents form of an event giving the partition key.
    pub partition_key: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most events accepted in one request.
    pub max_events: usize,
}

/// Why the configuration was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable has no value.
    #[error("variable `{0}` is required but not set")]
    Missing(&'static str),
    /// A variable's value is not acceptable.
    #[error("variable `{name}` is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong (never the secret value itself).
        reason: String,
    },
    /// The host could not provide a variable.
    #[error("variable `{name}` could not be read: {reason}")]
    Unreadable {
        /// The variable.
        name: &'static str,
        /// The host's error.
        reason: String,
    },
}

/// The retry policy for a total budget: at least two attempts fit when an
/// answer never comes.
fn retry_policy(budget_ms: u64) -> RetryPolicy {
    let d = RetryPolicy::default();
    RetryPolicy {
        budget_ms,
        attempt_timeout_ms: d.attempt_timeout_ms.min(budget_ms / 2).max(1),
        ..d
    }
}

/// Default partition key: the event's source (Event Grid topic).
pub const DEFAULT_PARTITION_KEY: &str = "/source";
/// Default body limit: Event Grid's 1 MB delivery limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default events per request.
pub const DEFAULT_MAX_EVENTS: usize = 1000;

impl Config {
    /// Reads and validates every variable through `lookup`, which returns
    /// `Ok(None)` for a variable that is unset or empty.
    pub fn load<F>(lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&'static str) -> Result<Option<String>, String>,
    {
        let get = |name: &'static str| -> Result<Option<String>, ConfigError> {
            lookup(name)
                .map(|v| v.filter(|s| !s.trim().is_empty()))
                .map_err(|reason| ConfigError::Unreadable { name, reason })
        };
        let required = |name: &'static str| get(name)?.ok_or(ConfigError::Missing(name));
        let invalid = |name: &'static str, reason: &dyn std::fmt::Display| ConfigError::Invalid {
            name,
            reason: reason.to_string(),
        };

        let endpoint = Endpoint::parse(&required("cosmos_endpoint")?)
            .map_err(|e| invalid("cosmos_endpoint", &e))?;
        let database = required("cosmos_database")?;
        let container = required("cosmos_container")?;
        for (name, id) in [
            ("cosmos_database", &database),
            ("cosmos_container", &container),
        ] {
            if let Some(c) = id.chars().find(|c| matches!(c, '/' | '\\' | '?' | '#')) {
                return Err(invalid(
                    name,
                    &format!("Cosmos DB ids cannot contain `{c}`"),
                ));
            }
        }
        let credential = match get("cosmos_auth")?.as_deref().unwrap_or("master-key") {
            "master-key" => Credential::MasterKey(
                MasterKey::from_base64(&required("cosmos_key")?)
                    .map_err(|e| invalid("cosmos_key", &e))?,
            ),
            other => {
                return Err(invalid(
                    "cosmos_auth",
                    &format!("`{other}` is not supported; use `master-key`"),
                ))
            }
        };

        let partition_key = get("partition_key")?.unwrap_or_else(|| DEFAULT_PARTITION_KEY.into());
        if !partition_key.starts_with('/') {
            return Err(invalid(
                "partition_key",
                &"must be a JSON Pointer such as /source or /data/tenant",
            ));
        }
        let number =
            |name: &'static str, default: usize, max: usize| -> Result<usize, ConfigError> {
                match get(name)? {
                    None => Ok(default),
                    Some(s) => match s.trim().parse::<usize>() {
                        Ok(n) if (1..=max).contains(&n) => Ok(n),
                        _ => Err(invalid(
                            name,
                            &format!("must be a whole number from 1 to {max}"),
                        )),
                    },
                }
            };
        let read_keys = match get("read_keys")? {
            None => None,
            Some(v) => Some(Keys::parse(&v).map_err(|e| invalid("read_keys", &e))?),
        };
        Ok(Config {
            read: ReadConfig { keys: read_keys },
            cosmos: CosmosConfig {
                endpoint,
                container: ContainerLink::new(database, container),
                credential,
                retry: retry_policy(number(
                    "cosmos_retry_budget_ms",
                    RetryPolicy::default().budget_ms as usize,
                    25_000,
                )? as u64),
            },
            ingest: IngestConfig {
                partition_key,
                max_body_bytes: number("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 64 * 1024 * 1024)?,
                max_events: number("max_events_per_request", DEFAULT_MAX_EVENTS, 5000)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str =
        "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut m: HashMap<&str, &str> = HashMap::from([
            ("cosmos_endpoint", "http://127.0.0.1:8081"),
            ("cosmos_database", "db"),
            ("cosmos_container", "events"),
            ("cosmos_key", KEY),
        ]);
        for (k, v) in pairs {
            m.insert(k, v);
        }
        Config::load(|name| Ok(m.get(name).map(|v| v.to_string())))
    }

    #[test]
    fn defaults_apply() {
        let c = load(&[]).unwrap();
        assert_eq!(c.cosmos.endpoint.origin(), "http://127.0.0.1:8081");
        assert_eq!(c.cosmos.container.container(), "events");
        assert!(matches!(c.cosmos.credential, Credential::MasterKey(_)));
        assert_eq!(c.ingest.partition_key, "/source");
        assert_eq!(c.ingest.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.ingest.max_events, DEFAULT_MAX_EVENTS);
        assert_eq!(c.cosmos.retry, RetryPolicy::default());
        let short = load(&[("cosmos_retry_budget_ms", "2500")])
            .unwrap()
            .cosmos
            .retry;
        assert_eq!((short.budget_ms, short.attempt_timeout_ms), (2500, 1250));
        assert!(load(&[("cosmos_retry_budget_ms", "60000")]).is_err());
    }

    #[test]
    fn missing_and_invalid_values_are_named() {
        assert_eq!(
            load(&[("cosmos_endpoint", "")]).unwrap_err(),
            ConfigError::Missing("cosmos_endpoint")
        );
        assert!(matches!(
            load(&[("cosmos_endpoint", "nope")]),
            Err(ConfigError::Invalid {
                name: "cosmos_endpoint",
                ..
            })
        ));
        assert!(matches!(
            load(&[("cosmos_container", "a/b")]),
            Err(ConfigError::Invalid {
                name: "cosmos_container",
                ..
            })
        ));
        assert!(matches!(
            load(&[("cosmos_auth", "magic")]),
            Err(ConfigError::Invalid {
                name: "cosmos_auth",
                ..
            })
        ));
        assert!(matches!(
            load(&[("partition_key", "source")]),
            Err(ConfigError::Invalid {
                name: "partition_key",
                ..
            })
        ));
        assert!(matches!(
            load(&[("max_body_bytes", "0")]),
            Err(ConfigError::Invalid {
                name: "max_body_bytes",
                ..
            })
        ));
        assert!(matches!(
            load(&[("max_events_per_request", "x")]),
            Err(ConfigError::Invalid {
                name: "max_events_per_request",
                ..
            })
        ));
    }

    #[test]
    fn a_bad_key_is_reported_without_its_value() {
        let err = load(&[("cosmos_key", "sekrit!!value")]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "cosmos_key",
                ..
            }
        ));
        assert!(!err.to_string().contains("sekrit"));
    }

    #[test]
    fn read_keys_are_optional_and_checked() {
        assert!(load(&[]).unwrap().read.keys.is_none());
        assert!(load(&[("read_keys", "reader-key-0123456789")])
            .unwrap()
            .read
            .keys
            .is_some());
        let err = load(&[("read_keys", "weak")]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "read_keys",
                ..
            }
        ));
        assert!(!err.to_string().contains("weak"));
    }

    #[test]
    fn lookup_failures_surface() {
        let err = Config::load(|_| Err("provider down".into())).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Unreadable {
                name: "cosmos_endpoint",
                ..
            }
        ));
    }
}
