//! Tests of [`super`] (`config`): one file per settings group, the loader
//! they share, and what spans groups.

mod cosmos;
mod identity;
mod ingest;
mod kek;
mod kv;
mod roles;
mod scopes;
mod vars;

use super::*;
use crate::cosmos::{Credential, Endpoint};
use crate::retry::RetryPolicy;
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
fn work_per_request_is_bounded() {
    let c = load(&[]).unwrap();
    assert_eq!(c.cosmos.max_concurrency, DEFAULT_MAX_CONCURRENCY);
    assert_eq!(c.ingest.body_read_timeout_secs, 20);
    assert!(!c.ingest.key_in_query);
    let c = load(&[
        ("cosmos_max_concurrency", "2"),
        ("body_read_timeout_secs", "3"),
        ("ingest_key_in_query", "allow"),
    ])
    .unwrap();
    assert_eq!(
        (c.cosmos.max_concurrency, c.ingest.body_read_timeout_secs),
        (2, 3)
    );
    assert!(c.ingest.key_in_query);
    for (name, bad) in [
        ("cosmos_max_concurrency", "0"),
        ("cosmos_max_concurrency", "257"),
        ("body_read_timeout_secs", "0"),
        ("ingest_key_in_query", "maybe"),
    ] {
        assert!(
            matches!(load(&[(name, bad)]), Err(ConfigError::Invalid { name: n, .. }) if n == name),
            "{name}={bad}"
        );
    }
}

#[test]
fn defaults_apply() {
    let c = load(&[]).unwrap();
    assert_eq!(c.cosmos.endpoint.origin(), "http://127.0.0.1:8081");
    assert_eq!(c.cosmos.container.container(), "events");
    assert!(matches!(
        c.cosmos.auth.static_credential(),
        Some(Credential::MasterKey(_))
    ));
    assert_eq!(c.cosmos.write_mode, WriteMode::Upsert);
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
