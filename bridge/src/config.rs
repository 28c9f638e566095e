//! Settings, read once from environment variables into a validated value.
//! Reading is a pure function over a lookup, so every rule is unit-tested;
//! errors name the variable, never a secret's value.

use cmk_core::entra::{Provider, Secret, DEFAULT_AUTHORITY, IMDS_ENDPOINT};
use std::path::PathBuf;

use crate::address::{AddressError, QueueAddress};
use crate::sharedkey::AccountKey;

/// Every variable the bridge reads.
pub const VARIABLES: &[&str] = &[
    "BRIDGE_QUEUE_URL",
    "BRIDGE_POISON_QUEUE",
    "BRIDGE_TARGET_URL",
    "BRIDGE_INGEST_KEY",
    "BRIDGE_AUTH",
    "BRIDGE_ACCOUNT_KEY",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "BRIDGE_CONCURRENCY",
    "BRIDGE_BATCH_SIZE",
    "BRIDGE_VISIBILITY_TIMEOUT_SECS",
    "BRIDGE_MAX_DEQUEUE_COUNT",
    "BRIDGE_POLL_INTERVAL_MS",
    "BRIDGE_REQUEST_TIMEOUT_SECS",
];

/// How the bridge authenticates to Azure Storage.
#[derive(Debug, Clone)]
pub enum StorageAuth {
    /// Shared Key with the account key.
    SharedKey(AccountKey),
    /// Entra ID tokens for `https://storage.azure.com/.default`.
    Entra {
        /// Where tokens come from.
        provider: Provider,
        /// Workload identity: the projected service-account token, read
        /// again at every refresh (the kubelet rotates it).
        federated_token_file: Option<PathBuf>,
    },
}

impl StorageAuth {
    /// Name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageAuth::SharedKey(_) => "shared-key",
            StorageAuth::Entra { provider, .. } => provider.kind(),
        }
    }
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The queue polled.
    pub queue: QueueAddress,
    /// Where poisoned messages go.
    pub poison: QueueAddress,
    /// The component's `POST /queue` URL.
    pub target: String,
    /// Sent as `x-cmk-ingest-key`.
    pub ingest_key: Secret,
    /// Storage credential.
    pub auth: StorageAuth,
    /// Messages forwarded at once.
    pub concurrency: usize,
    /// Messages per Get Messages (1-32).
    pub batch_size: u8,
    /// Seconds a received message stays hidden.
    pub visibility_timeout_secs: u32,
    /// Tries before a message is poisoned.
    pub max_dequeue_count: u32,
    /// Wait after an empty poll, in ms.
    pub poll_interval_ms: u64,
    /// Timeout of each HTTP request, in seconds.
    pub request_timeout_secs: u64,
}

/// A setting that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A variable's value is unusable.
    #[error("{name}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Why (never the value of a secret).
        reason: String,
    },
}

fn invalid(name: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.to_string(),
    }
}

fn http_url(name: &'static str, v: &str) -> Result<String, ConfigError> {
    let lower = v.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://"))
        || v.parse::<http::Uri>().is_err()
    {
        return Err(invalid(name, "must be an http:// or https:// URL"));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

impl Config {
    /// Reads every setting through `lookup` (unset and empty are the same).
    pub fn load(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let number =
            |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => v
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (min..=max).contains(n))
                        .ok_or_else(|| {
                            invalid(name, format!("must be a whole number from {min} to {max}"))
                        }),
                }
            };

        let queue = QueueAddress::parse(&required("BRIDGE_QUEUE_URL")?)
            .map_err(|e: AddressError| invalid("BRIDGE_QUEUE_URL", e))?;
        let poison_name =
            get("BRIDGE_POISON_QUEUE").unwrap_or_else(|| format!("{}-poison", queue.name));
        let poison = queue
            .sibling(poison_name.trim())
            .map_err(|e| invalid("BRIDGE_POISON_QUEUE", e))?;
        if poison.name == queue.name {
            return Err(invalid(
                "BRIDGE_POISON_QUEUE",
                "must differ from the queue polled",
            ));
        }
        let target = http_url("BRIDGE_TARGET_URL", required("BRIDGE_TARGET_URL")?.trim())?;
        let ingest_key = required("BRIDGE_INGEST_KEY")?;
        if ingest_key.trim().len() < 16 || ingest_key.contains(',') {
            return Err(invalid(
                "BRIDGE_INGEST_KEY",
                "must be one of the component's ingest_keys (at least 16 characters, no comma)",
            ));
        }

        let auth_kind = match get("BRIDGE_AUTH") {
            Some(v) => v.trim().to_owned(),
            None if get("BRIDGE_ACCOUNT_KEY").is_some() => "shared-key".into(),
            None => return Err(ConfigError::Missing("BRIDGE_AUTH")),
        };
        let authority = || {
            get("AZURE_AUTHORITY_HOST")
                .map(|a| a.trim().trim_end_matches('/').to_owned())
                .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned())
        };
        let auth = match auth_kind.as_str() {
            "shared-key" => StorageAuth::SharedKey(
                AccountKey::from_base64(&required("BRIDGE_ACCOUNT_KEY")?)
                    .map_err(|e| invalid("BRIDGE_ACCOUNT_KEY", e))?,
            ),
            "client-secret" => StorageAuth::Entra {
                provider: Provider::ClientSecret {
                    authority: authority(),
                    tenant: required("AZURE_TENANT_ID")?,
                    client_id: required("AZURE_CLIENT_ID")?,
                    secret: Secret::new(required("AZURE_CLIENT_SECRET")?),
                },
                federated_token_file: None,
            },
            "workload-identity" => StorageAuth::Entra {
                provider: Provider::WorkloadIdentity {
                    authority: authority(),
                    tenant: required("AZURE_TENANT_ID")?,
                    client_id: required("AZURE_CLIENT_ID")?,
                },
                federated_token_file: Some(PathBuf::from(required("AZURE_FEDERATED_TOKEN_FILE")?)),
            },
            "managed-identity" => {
                let client_id = get("AZURE_CLIENT_ID");
                let provider = match (get("IDENTITY_ENDPOINT"), get("IDENTITY_HEADER")) {
                    (Some(endpoint), Some(header)) => Provider::AppService {
                        endpoint: http_url("IDENTITY_ENDPOINT", endpoint.trim())?,
                        header: Secret::new(header),
                        client_id,
                    },
                    _ => Provider::Imds {
                        endpoint: match get("AZURE_POD_IDENTITY_AUTHORITY_HOST") {
                            Some(host) => format!(
                                "{}/metadata/identity/oauth2/token",
                                http_url("AZURE_POD_IDENTITY_AUTHORITY_HOST", host.trim())?
                            ),
                            None => IMDS_ENDPOINT.to_owned(),
                        },
                        client_id,
                    },
                };
                StorageAuth::Entra {
                    provider,
                    federated_token_file: None,
                }
            }
            other => {
                return Err(invalid(
                    "BRIDGE_AUTH",
                    format!("`{other}` is not one of shared-key, workload-identity, managed-identity, client-secret"),
                ))
            }
        };
        if let (StorageAuth::Entra { .. }, false) = (&auth, queue.origin.starts_with("https://")) {
            // Entra ID tokens are bearer credentials: never over plain HTTP
            // to the service. Emulators and stand-ins on loopback are fine.
            let host = queue.origin.trim_start_matches("http://");
            if !(host.starts_with("127.")
                || host.starts_with("localhost")
                || host.starts_with("[::1]"))
            {
                return Err(invalid(
                    "BRIDGE_QUEUE_URL",
                    "Entra ID tokens are only sent over https:// (or to a loopback emulator)",
                ));
            }
        }

        let visibility_timeout_secs =
            number("BRIDGE_VISIBILITY_TIMEOUT_SECS", 30, 1, 7 * 24 * 3600)? as u32;
        let request_timeout_secs = number("BRIDGE_REQUEST_TIMEOUT_SECS", 15, 1, 600)?;
        if request_timeout_secs >= u64::from(visibility_timeout_secs) {
            return Err(invalid(
                "BRIDGE_REQUEST_TIMEOUT_SECS",
                "must be shorter than BRIDGE_VISIBILITY_TIMEOUT_SECS, so a message stays hidden while it is forwarded",
            ));
        }
        Ok(Config {
            queue,
            poison,
            target,
            ingest_key: Secret::new(ingest_key.trim()),
            auth,
            concurrency: number("BRIDGE_CONCURRENCY", 4, 1, 64)? as usize,
            batch_size: number("BRIDGE_BATCH_SIZE", 16, 1, 32)? as u8,
            visibility_timeout_secs,
            max_dequeue_count: number("BRIDGE_MAX_DEQUEUE_COUNT", 5, 1, 10_000)? as u32,
            poll_interval_ms: number("BRIDGE_POLL_INTERVAL_MS", 1000, 10, 600_000)?,
            request_timeout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut m: HashMap<String, String> = [
            (
                "BRIDGE_QUEUE_URL",
                "http://127.0.0.1:10001/devstoreaccount1/events",
            ),
            ("BRIDGE_TARGET_URL", "http://127.0.0.1:3000/queue"),
            ("BRIDGE_INGEST_KEY", "local-ingest-key-0123456789"),
            ("BRIDGE_ACCOUNT_KEY", KEY),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        Config::load(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.poison.name, "events-poison");
        assert_eq!(c.poison.account, "devstoreaccount1");
        assert_eq!(c.auth.kind(), "shared-key");
        assert_eq!(
            (
                c.concurrency,
                c.batch_size,
                c.visibility_timeout_secs,
                c.max_dequeue_count
            ),
            (4, 16, 30, 5)
        );
        assert_eq!((c.poll_interval_ms, c.request_timeout_secs), (1000, 15));
        assert!(!format!("{c:?}").contains("local-ingest-key"));
        assert!(!format!("{c:?}").contains("Eby8"));
    }

    #[test]
    fn each_identity() {
        let ids = [("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")];
        let https = (
            "BRIDGE_QUEUE_URL",
            "https://acct.queue.core.windows.net/events",
        );
        let kind = |extra: &[(&str, &str)]| {
            let mut all = vec![https, ids[0], ids[1]];
            all.extend_from_slice(extra);
            load(&all).map(|c| c.auth.kind())
        };
        assert_eq!(
            kind(&[
                ("BRIDGE_AUTH", "client-secret"),
                ("AZURE_CLIENT_SECRET", "s")
            ]),
            Ok("client-secret")
        );
        assert_eq!(
            kind(&[
                ("BRIDGE_AUTH", "workload-identity"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t")
            ]),
            Ok("workload-identity")
        );
        assert_eq!(
            kind(&[("BRIDGE_AUTH", "managed-identity")]),
            Ok("managed-identity-imds")
        );
        assert_eq!(
            kind(&[
                ("BRIDGE_AUTH", "managed-identity"),
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
                ("IDENTITY_HEADER", "h")
            ]),
            Ok("managed-identity-app-service")
        );
        assert_eq!(
            kind(&[("BRIDGE_AUTH", "client-secret")]).unwrap_err(),
            ConfigError::Missing("AZURE_CLIENT_SECRET")
        );
        assert_eq!(
            kind(&[("BRIDGE_AUTH", "workload-identity")]).unwrap_err(),
            ConfigError::Missing("AZURE_FEDERATED_TOKEN_FILE")
        );
        assert!(kind(&[("BRIDGE_AUTH", "sas")]).is_err());
        let c = load(&[
            https,
            ids[0],
            ids[1],
            ("BRIDGE_AUTH", "client-secret"),
            ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/"),
        ])
        .unwrap();
        let StorageAuth::Entra {
            provider: Provider::ClientSecret { authority, .. },
            ..
        } = &c.auth
        else {
            panic!()
        };
        assert_eq!(authority, "https://login.microsoftonline.com");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn tokens_are_not_sent_over_plain_http_except_to_loopback() {
        let entra = [("BRIDGE_AUTH", "managed-identity")];
        assert!(load(&entra).is_ok(), "loopback emulator");
        let mut remote = entra.to_vec();
        remote.push(("BRIDGE_QUEUE_URL", "http://storage.example/acct/events"));
        assert!(matches!(
            load(&remote),
            Err(ConfigError::Invalid {
                name: "BRIDGE_QUEUE_URL",
                ..
            })
        ));
    }

    #[test]
    fn refused_values_are_named() {
        let name_of = |pairs: &[(&str, &str)]| match load(pairs).unwrap_err() {
            ConfigError::Missing(n) | ConfigError::Invalid { name: n, .. } => n,
        };
        assert_eq!(name_of(&[("BRIDGE_QUEUE_URL", "")]), "BRIDGE_QUEUE_URL");
        assert_eq!(name_of(&[("BRIDGE_QUEUE_URL", "nope")]), "BRIDGE_QUEUE_URL");
        assert_eq!(
            name_of(&[("BRIDGE_POISON_QUEUE", "events")]),
            "BRIDGE_POISON_QUEUE"
        );
        assert_eq!(
            name_of(&[("BRIDGE_POISON_QUEUE", "Bad")]),
            "BRIDGE_POISON_QUEUE"
        );
        assert_eq!(
            name_of(&[("BRIDGE_TARGET_URL", "localhost:3000")]),
            "BRIDGE_TARGET_URL"
        );
        assert_eq!(
            name_of(&[("BRIDGE_INGEST_KEY", "short")]),
            "BRIDGE_INGEST_KEY"
        );
        assert_eq!(
            name_of(&[("BRIDGE_ACCOUNT_KEY", "%%%")]),
            "BRIDGE_ACCOUNT_KEY"
        );
        assert_eq!(name_of(&[("BRIDGE_ACCOUNT_KEY", "")]), "BRIDGE_AUTH");
        assert_eq!(name_of(&[("BRIDGE_BATCH_SIZE", "33")]), "BRIDGE_BATCH_SIZE");
        assert_eq!(name_of(&[("BRIDGE_BATCH_SIZE", "0")]), "BRIDGE_BATCH_SIZE");
        assert_eq!(
            name_of(&[("BRIDGE_CONCURRENCY", "x")]),
            "BRIDGE_CONCURRENCY"
        );
        assert_eq!(
            name_of(&[("BRIDGE_MAX_DEQUEUE_COUNT", "0")]),
            "BRIDGE_MAX_DEQUEUE_COUNT"
        );
        assert_eq!(
            name_of(&[("BRIDGE_VISIBILITY_TIMEOUT_SECS", "10")]),
            "BRIDGE_REQUEST_TIMEOUT_SECS"
        );
        let err = load(&[("BRIDGE_ACCOUNT_KEY", "%%%secret")]).unwrap_err();
        assert!(!err.to_string().contains("secret"));
        let c = load(&[
            ("BRIDGE_POISON_QUEUE", "dead-letters"),
            ("BRIDGE_BATCH_SIZE", "32"),
        ])
        .unwrap();
        assert_eq!((c.poison.name.as_str(), c.batch_size), ("dead-letters", 32));
    }
}
