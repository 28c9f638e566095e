//! `allowed_outbound_hosts` as Spin checks it, after template expansion:
//! Spin's `crates/outbound-networking-config/src/allowed_hosts.rs`
//! (`AllowedHostConfig::parse`, `SchemeConfig`, `HostConfig`, `PortConfig`,
//! `OutboundUrl`). Supported here: scheme literal or `*`; host literal, `*`
//! or `*.domain`; port number, range `a..b`, `*` or the scheme's well-known
//! port when omitted. Not supported (refused at start): CIDR hosts, `self`,
//! service chaining.

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq)]
enum Scheme {
    Any,
    One(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Host {
    Any,
    AnySubdomain(String),
    Literal(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Port {
    Any,
    One(u16),
    Range(u16, u16),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    original: String,
    scheme: Scheme,
    host: Host,
    port: Port,
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    pub fn parse(original: &str) -> Result<Self> {
        let url = original.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!("{url:?} does not contain a scheme (e.g., 'http://' or '*://')");
        };
        let (host, port) = match rest.rsplit_once(':') {
            None => (rest, ""),
            Some((h, "")) => (h, ""),
            Some((h, tail)) => {
                let port = match tail.split_once('/') {
                    Some((port, path)) => {
                        if !path.is_empty() {
                            bail!("{url:?} has a path but is not allowed to");
                        }
                        port
                    }
                    None => tail,
                };
                (h, port)
            }
        };
        let scheme = if scheme == "*" {
            Scheme::Any
        } else if scheme.chars().all(|c| c.is_alphabetic()) && !scheme.is_empty() {
            Scheme::One(scheme.to_string())
        } else {
            bail!("invalid allowed host scheme {scheme:?}");
        };
        let port = if port.is_empty() {
            let Scheme::One(s) = &scheme else {
                bail!("{url:?}: no port and the scheme has no well-known port");
            };
            Port::One(well_known_port(s).with_context(|| {
                format!(
                    "{url:?}: no port was provided and the scheme {s:?} has no known default port"
                )
            })?)
        } else if port == "*" {
            Port::Any
        } else if let Some((a, b)) = port.split_once("..") {
            Port::Range(
                a.parse().context("port range contains non-number")?,
                b.parse().context("port range contains non-number")?,
            )
        } else {
            Port::One(
                port.parse()
                    .with_context(|| format!("port {port:?} is not a number"))?,
            )
        };
        let host = host.trim();
        let host = host.strip_suffix('/').unwrap_or(host);
        let host = if host == "*" {
            Host::Any
        } else if host == "self" || host == "self.alt" {
            bail!("{url:?}: self requests are not supported by this host");
        } else if host.contains('/') {
            bail!("{url:?}: host must not include a path or be a CIDR range (not supported here)");
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.contains('*') {
                bail!("wildcards are allowed only as prefixes");
            }
            Host::AnySubdomain(format!(".{}", domain.to_ascii_lowercase()))
        } else if host.contains('*') || host.is_empty() {
            bail!("{url:?}: invalid host");
        } else {
            Host::Literal(host.to_ascii_lowercase())
        };
        Ok(Self {
            original: original.to_string(),
            scheme,
            host,
            port,
        })
    }

    /// Whether a request to `scheme://host[:port]` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        let scheme_ok = match &self.scheme {
            Scheme::Any => true,
            Scheme::One(s) => s == scheme,
        };
        let host_ok = match &self.host {
            Host::Any => true,
            Host::AnySubdomain(suffix) => host.ends_with(suffix.as_str()),
            Host::Literal(l) => *l == host,
        };
        let port_ok = match &self.port {
            Port::Any => true,
            _ => match port.or_else(|| well_known_port(scheme)) {
                None => false,
                Some(p) => match self.port {
                    Port::One(q) => p == q,
                    Port::Range(a, b) => (a..b).contains(&p),
                    Port::Any => true,
                },
            },
        };
        scheme_ok && host_ok && port_ok
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.original)
    }
}

/// The component's whole list.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    pub fn parse(hosts: &[String]) -> Result<Self> {
        if hosts.len() == 1 && hosts[0] == "insecure:allow-all" {
            bail!("'insecure:allow-all' is not allowed - use '*://*:*' instead");
        }
        Ok(Self(
            hosts
                .iter()
                .map(|h| AllowedHost::parse(h))
                .collect::<Result<_>>()?,
        ))
    }

    /// `uri` is the outgoing request's absolute URI.
    pub fn allows_uri(&self, uri: &hyper::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        if host.is_empty() {
            return false;
        }
        self.0
            .iter()
            .any(|h| h.allows(scheme, host, uri.port_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &[&str], url: &str) -> bool {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        AllowedHosts::parse(&list)
            .unwrap()
            .allows_uri(&url.parse().unwrap())
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let list = ["https://127.0.0.1:8443"];
        assert!(allows(&list, "https://127.0.0.1:8443/keys/k"));
        assert!(!allows(&list, "http://127.0.0.1:8443/keys/k"));
        assert!(!allows(&list, "https://127.0.0.1:8444/keys/k"));
        assert!(!allows(&list, "https://localhost:8443/keys/k"));
    }

    #[test]
    fn default_ports_follow_the_scheme() {
        assert!(allows(
            &["https://login.microsoftonline.com"],
            "https://login.microsoftonline.com/t/oauth2"
        ));
        assert!(allows(
            &["https://login.microsoftonline.com"],
            "https://login.microsoftonline.com:443/"
        ));
        assert!(!allows(
            &["https://login.microsoftonline.com"],
            "https://login.microsoftonline.com:8443/"
        ));
        assert!(allows(
            &["http://169.254.169.254"],
            "http://169.254.169.254/metadata"
        ));
    }

    #[test]
    fn trailing_slash_and_wildcards() {
        assert!(allows(
            &["https://a.example.com/"],
            "https://a.example.com/x"
        ));
        assert!(allows(
            &["https://*.example.com"],
            "https://b.example.com/x"
        ));
        assert!(!allows(&["https://*.example.com"], "https://example.com/x"));
        assert!(allows(&["*://*:*"], "http://anything:1/"));
        assert!(allows(&["http://h:8000..9000"], "http://h:8500/"));
        assert!(!allows(&["http://h:8000..9000"], "http://h:9000/"));
    }

    #[test]
    fn refuses_what_spin_refuses() {
        for bad in [
            "*",
            "example.com",
            "https://a.example.com/path",
            "https://a*.example.com",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowedHosts::parse(&["insecure:allow-all".to_string()]).is_err());
    }
}
