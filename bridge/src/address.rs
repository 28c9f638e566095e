//! Where a queue lives: the account's origin, the account name (for Shared
//! Key) and the queue's path, from `BRIDGE_QUEUE_URL`.
//!
//! Two URL forms, as the Storage SDKs accept them:
//! - host-style, the service: `https://<account>.queue.core.windows.net/<queue>`
//!   (the account is the host's first label);
//! - path-style, emulators and custom endpoints:
//!   `http://127.0.0.1:10001/<account>/<queue>`.

use std::fmt;

/// One queue of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAddress {
    /// `scheme://host[:port]`, no trailing slash.
    pub origin: String,
    /// Storage account name.
    pub account: String,
    /// Path prefix before the queue name: `""` host-style, `/<account>` path-style.
    pub prefix: String,
    /// Queue name.
    pub name: String,
}

/// Why a queue URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `http(s)://host[:port]/…`.
    #[error("expected http(s)://<account>.queue.core.windows.net/<queue> or http(s)://host:port/<account>/<queue>")]
    Shape,
    /// A query string (a SAS token) is not supported: use a key or a token.
    #[error("the URL may not carry a query string (SAS tokens are not supported; use shared-key or an Entra ID identity)")]
    Query,
    /// A queue name outside the service's rules.
    #[error("`{0}` is not a valid queue name (3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit)")]
    QueueName(String),
}

/// Whether `name` follows the Queue service's naming rules.
pub fn valid_queue_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !name.contains("--")
}

impl QueueAddress {
    /// Parses a queue URL.
    pub fn parse(url: &str) -> Result<Self, AddressError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or(AddressError::Shape)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(AddressError::Shape);
        }
        if rest.contains('?') || rest.contains('#') {
            return Err(AddressError::Query);
        }
        let (authority, path) = rest.split_once('/').ok_or(AddressError::Shape)?;
        if authority.is_empty() || authority.contains('@') {
            return Err(AddressError::Shape);
        }
        let authority = authority.to_ascii_lowercase();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (account, prefix, name) = match segments[..] {
            [queue] => {
                let host = authority.split(':').next().unwrap_or_default();
                let account = host.split('.').next().unwrap_or_default();
                if account.is_empty() || host.parse::<std::net::Ipv4Addr>().is_ok() {
                    return Err(AddressError::Shape);
                }
                (account.to_owned(), String::new(), queue)
            }
            [account, queue] => (account.to_owned(), format!("/{account}"), queue),
            _ => return Err(AddressError::Shape),
        };
        if !valid_queue_name(name) {
            return Err(AddressError::QueueName(name.to_owned()));
        }
        Ok(Self {
            origin: format!("{scheme}://{authority}"),
            account,
            prefix,
            name: name.to_owned(),
        })
    }

    /// Another queue of the same account (the poison queue).
    pub fn sibling(&self, name: &str) -> Result<Self, AddressError> {
        if !valid_queue_name(name) {
            return Err(AddressError::QueueName(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            ..self.clone()
        })
    }

    /// The queue's path, e.g. `/devstoreaccount1/events` or `/events`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.prefix, self.name)
    }
}

impl fmt::Display for QueueAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_style_service_url() {
        let q = QueueAddress::parse("https://contoso.queue.core.windows.net/events").unwrap();
        assert_eq!(q.origin, "https://contoso.queue.core.windows.net");
        assert_eq!((q.account.as_str(), q.name.as_str()), ("contoso", "events"));
        assert_eq!(q.path(), "/events");
        assert_eq!(
            q.sibling("events-poison").unwrap().to_string(),
            "https://contoso.queue.core.windows.net/events-poison"
        );
    }

    #[test]
    fn path_style_emulator_url() {
        let q = QueueAddress::parse("http://127.0.0.1:10001/devstoreaccount1/events/").unwrap();
        assert_eq!(q.origin, "http://127.0.0.1:10001");
        assert_eq!(q.account, "devstoreaccount1");
        assert_eq!(q.path(), "/devstoreaccount1/events");
    }

    #[test]
    fn refused_urls() {
        for bad in [
            "events",
            "ftp://a.queue.core.windows.net/q1",
            "https://a.queue.core.windows.net/",
            "https://a.queue.core.windows.net/a/b/c",
            "http://127.0.0.1:10001/events",
            "https://user@a.queue.core.windows.net/events",
        ] {
            assert_eq!(QueueAddress::parse(bad), Err(AddressError::Shape), "{bad}");
        }
        assert_eq!(
            QueueAddress::parse("https://a.queue.core.windows.net/events?sv=2020&sig=x"),
            Err(AddressError::Query)
        );
        for name in [
            "Events",
            "ev",
            "-events",
            "events-",
            "ev--ents",
            &"a".repeat(64),
        ] {
            assert!(!valid_queue_name(name), "{name}");
        }
        assert!(valid_queue_name("events-poison"));
        let q = QueueAddress::parse("https://a.queue.core.windows.net/events").unwrap();
        assert!(q.sibling("Bad_Name").is_err());
    }
}
