//! Building signed requests.

use http::{header, Method, Request};

use super::auth::Credential;
use super::link::{ContainerLink, Target};
use super::response::CosmosError;
use crate::time::UnixTime;

/// REST API version sent as `x-ms-version` (the official Python SDK's).
pub const API_VERSION: &str = "2020-07-15";

/// The service's limit on one document's size.
pub const MAX_DOCUMENT_BYTES: usize = 2 * 1024 * 1024;

/// Most operations in one transactional batch.
pub const MAX_BATCH_OPERATIONS: usize = 100;

/// Largest transactional batch request body.
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// The account endpoint, e.g. `https://acct.documents.azure.com:443`.
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
        format!("{}://{}", self.scheme, self.authority)
    }

    fn uri(&self, path: &str) -> http::Uri {
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .expect("scheme, authority and an encoded path make a valid URI")
    }
}

/// The `x-ms-documentdb-partitionkey` value for a single string key: a JSON
/// array, with non-ASCII escaped so it is a valid header value.
pub fn partition_key_header(value: &str) -> String {
    let mut out = String::from("[\"");
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push_str("\"]");
    out
}

/// Builds signed requests for one account at one instant.
#[derive(Debug)]
pub struct CosmosRequest<'a> {
    endpoint: &'a Endpoint,
    credential: &'a Credential,
    date: String,
}

impl<'a> CosmosRequest<'a> {
    /// A builder whose requests carry `now` as `x-ms-date`; the same string is
    /// signed.
    pub fn new(endpoint: &'a Endpoint, credential: &'a Credential, now: UnixTime) -> Self {
        Self {
            endpoint,
            credential,
            date: now.rfc1123(),
        }
    }

    /// Create-or-replace a document (`x-ms-documentdb-is-upsert: True`).
    pub fn upsert_document(
        &self,
        container: &ContainerLink,
        partition_key: &str,
        body: Vec<u8>,
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        self.write_document(container, partition_key, body, true)
    }

    /// Create a document only if its id is new in the partition (409 otherwise).
    pub fn create_document(
        &self,
        container: &ContainerLink,
        partition_key: &str,
        body: Vec<u8>,
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        self.write_document(container, partition_key, body, false)
    }

    /// A transactional batch of upserts that share one partition key: all are
    /// written or none (`x-ms-cosmos-batch-atomic: True`). Each operation also
    /// names its partition key, as the JavaScript SDK's batch operations do.
    pub fn batch_upsert(
        &self,
        container: &ContainerLink,
        partition_key: &str,
        documents: &[&serde_json::Value],
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        if documents.is_empty() || documents.len() > MAX_BATCH_OPERATIONS {
            return Err(CosmosError::BatchTooLarge {
                operations: documents.len(),
                bytes: 0,
            });
        }
        let pk = partition_key_header(partition_key);
        let ops: Vec<serde_json::Value> = documents
            .iter()
            .map(|d| serde_json::json!({"operationType": "Upsert", "partitionKey": pk, "resourceBody": d}))
            .collect();
        let body = serde_json::to_vec(&ops).expect("JSON values serialize");
        if body.len() > MAX_BATCH_BYTES {
            return Err(CosmosError::BatchTooLarge {
                operations: documents.len(),
                bytes: body.len(),
            });
        }
        let target = container.documents();
        Ok(self
            .builder(Method::POST, &target)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-ms-documentdb-partitionkey", pk)
            .header("x-ms-cosmos-is-batch-request", "True")
            .header("x-ms-cosmos-batch-atomic", "True")
            .header("x-ms-cosmos-batch-continue-on-error", "False")
            .header(header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("headers built from valid values"))
    }

    fn write_document(
        &self,
        container: &ContainerLink,
        partition_key: &str,
        body: Vec<u8>,
        upsert: bool,
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(CosmosError::DocumentTooLarge {
                size: body.len(),
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        let target = container.documents();
        let mut builder = self
            .builder(Method::POST, &target)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                "x-ms-documentdb-partitionkey",
                partition_key_header(partition_key),
            );
        if upsert {
            builder = builder.header("x-ms-documentdb-is-upsert", "True");
        }
        Ok(builder
            .header(header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("headers built from valid values"))
    }

    fn builder(&self, method: Method, target: &Target) -> http::request::Builder {
        let auth = self.credential.header_value(&method, target, &self.date);
        Request::builder()
            .method(method)
            .uri(self.endpoint.uri(&target.path))
            .header(header::ACCEPT, "application/json")
            .header("x-ms-date", &self.date)
            .header("x-ms-version", API_VERSION)
            .header(header::AUTHORIZATION, auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosmos::{master_key_signature, MasterKey};

    fn key() -> MasterKey {
        MasterKey::from_base64(
            "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
        )
        .unwrap()
    }

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

    #[test]
    fn upsert_request_is_signed_over_what_it_sends() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let now = UnixTime(1_795_480_119);
        let c = ContainerLink::new("wiredb", "items");
        let req = CosmosRequest::new(&endpoint, &cred, now)
            .upsert_document(&c, "p1", b"{\"id\":\"a\"}".to_vec())
            .unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "http://127.0.0.1:8081/dbs/wiredb/colls/items/docs"
        );
        let h = req.headers();
        assert_eq!(h["x-ms-date"], "Tue, 24 Nov 2026 00:28:39 GMT");
        assert_eq!(h["x-ms-version"], API_VERSION);
        assert_eq!(h["x-ms-documentdb-partitionkey"], "[\"p1\"]");
        assert_eq!(h["x-ms-documentdb-is-upsert"], "True");
        assert_eq!(h["content-length"], "10");
        assert_eq!(
            h["authorization"],
            master_key_signature(
                &key(),
                "POST",
                "docs",
                "dbs/wiredb/colls/items",
                "Tue, 24 Nov 2026 00:28:39 GMT"
            )
            .as_str()
        );
        // The Python SDK's on-the-wire signature for this exact request.
        assert!(h["authorization"]
            .to_str()
            .unwrap()
            .ends_with("tHeGybDBswPVyKtqaEbkC%2BZIWtIrYZU8b1f7FzZWl58%3D"));
    }

    #[test]
    fn create_has_no_upsert_header() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let req = CosmosRequest::new(&endpoint, &cred, UnixTime(0))
            .create_document(&ContainerLink::new("d", "c"), "p", b"{}".to_vec())
            .unwrap();
        assert!(req.headers().get("x-ms-documentdb-is-upsert").is_none());
    }

    #[test]
    fn oversized_documents_are_refused_before_sending() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let err = CosmosRequest::new(&endpoint, &cred, UnixTime(0))
            .upsert_document(
                &ContainerLink::new("d", "c"),
                "p",
                vec![b' '; MAX_DOCUMENT_BYTES + 1],
            )
            .unwrap_err();
        assert!(matches!(err, CosmosError::DocumentTooLarge { .. }));
    }

    #[test]
    fn batch_is_atomic_and_names_each_partition_key() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let docs = [
            serde_json::json!({"id": "a", "pk": "p"}),
            serde_json::json!({"id": "b", "pk": "p"}),
        ];
        let refs: Vec<&serde_json::Value> = docs.iter().collect();
        let req = CosmosRequest::new(&endpoint, &cred, UnixTime(1_795_480_119))
            .batch_upsert(&ContainerLink::new("wiredb", "items"), "p", &refs)
            .unwrap();
        let h = req.headers();
        assert_eq!(h["x-ms-cosmos-is-batch-request"], "True");
        assert_eq!(h["x-ms-cosmos-batch-atomic"], "True");
        assert_eq!(h["x-ms-documentdb-partitionkey"], "[\"p\"]");
        // Signed like any document write to the container.
        assert!(h["authorization"]
            .to_str()
            .unwrap()
            .ends_with("tHeGybDBswPVyKtqaEbkC%2BZIWtIrYZU8b1f7FzZWl58%3D"));
        let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!([
                {"operationType": "Upsert", "partitionKey": "[\"p\"]", "resourceBody": {"id": "a", "pk": "p"}},
                {"operationType": "Upsert", "partitionKey": "[\"p\"]", "resourceBody": {"id": "b", "pk": "p"}}
            ])
        );
    }

    #[test]
    fn batch_limits() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let b = CosmosRequest::new(&endpoint, &cred, UnixTime(0));
        let c = ContainerLink::new("d", "c");
        let doc = serde_json::json!({"id": "x"});
        assert!(b.batch_upsert(&c, "p", &[]).is_err());
        assert!(b
            .batch_upsert(&c, "p", &vec![&doc; MAX_BATCH_OPERATIONS])
            .is_ok());
        assert!(b
            .batch_upsert(&c, "p", &vec![&doc; MAX_BATCH_OPERATIONS + 1])
            .is_err());
        let big = serde_json::json!({"id": "x", "blob": "x".repeat(30_000)});
        assert!(matches!(
            b.batch_upsert(&c, "p", &vec![&big; 80]),
            Err(CosmosError::BatchTooLarge { operations: 80, .. })
        ));
    }

    #[test]
    fn partition_key_header_escapes_for_http() {
        assert_eq!(partition_key_header("a\"b\\c"), r#"["a\"b\\c"]"#);
        assert_eq!(partition_key_header("ä😀"), r#"["\u00e4\ud83d\ude00"]"#);
        let parsed: Vec<String> = serde_json::from_str(&partition_key_header("ä😀\n")).unwrap();
        assert_eq!(parsed, vec!["ä😀\n".to_string()]);
    }
}
