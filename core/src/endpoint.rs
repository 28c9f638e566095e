//! Service endpoints (Cosmos DB accounts, Managed HSMs, identity
//! endpoints): an absolute `http(s)` origin, nothing else.

/// A service endpoint: scheme, host and port only, e.g.
/// `https://acct.documents.azure.com:443` or `https://hsm.managedhsm.azure.net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

/// Why an endpoint was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    /// Not an absolute `http(s)://host[:port]` URL.
    #[error("expected an absolute http(s) URL such as https://account.documents.azure.com:443/")]
    NotAbsolute,
    /// A path, query or credentials were given.
    #[error("expected only scheme, host and port, without path, query or user info")]
    HasExtraParts,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/]`.
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let uri: http::Uri = s.trim().parse().map_err(|_| EndpointError::NotAbsolute)?;
        let scheme = uri.scheme().cloned().ok_or(EndpointError::NotAbsolute)?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(EndpointError::NotAbsolute);
        }
        let authority = uri.authority().cloned().ok_or(EndpointError::NotAbsolute)?;
        if authority.as_str().contains('@')
            || !matches!(uri.path(), "" | "/")
            || uri.query().is_some()
        {
            return Err(EndpointError::HasExtraParts);
        }
        Ok(Self { scheme, authority })
    }

    /// `scheme://authority`, as Spin's `allowed_outbound_hosts` names it.
    pub fn origin(&self) -> String {
        [self.scheme.as_str(), "://", self.authority.as_str()].concat()
    }

    /// The URI of `path` (already percent-encoded, with any query) here.
    pub fn uri(&self, path: &str) -> http::Uri {
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .expect("scheme, authority and an encoded path make a valid URI")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse("https://acct.documents.azure.com:443/").unwrap();
        assert_eq!(e.origin(), "https://acct.documents.azure.com:443");
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8081").unwrap().origin(),
            "http://127.0.0.1:8081"
        );
        assert_eq!(
            Endpoint::parse("acct.documents.azure.com"),
            Err(EndpointError::NotAbsolute)
        );
        assert_eq!(Endpoint::parse("ftp://x"), Err(EndpointError::NotAbsolute));
        assert_eq!(
            Endpoint::parse("https://x/dbs"),
            Err(EndpointError::HasExtraParts)
        );
        assert_eq!(
            Endpoint::parse("https://u:p@x"),
            Err(EndpointError::HasExtraParts)
        );
    }
}
