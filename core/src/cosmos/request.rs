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

/// A parameterized Cosmos DB SQL query: values travel as parameters, never
/// spliced into the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The SQL text, e.g. `SELECT * FROM c WHERE c.pk = @pk`.
    pub text: String,
    /// `(@name, value)` pairs.
    pub parameters: Vec<(String, serde_json::Value)>,
}

impl Query {
    /// A query without parameters.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            parameters: Vec::new(),
        }
    }

    /// Adds a parameter; `name` includes the `@`.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.parameters.push((name.into(), value.into()));
        self
    }
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

    /// A transactional batch of documents that share one partition key, each
    /// already serialized as a JSON object: all are written or none
    /// (`x-ms-cosmos-batch-atomic: True`); with [`BatchOperation::Create`],
    /// one id that already exists fails the whole batch (207: that operation
    /// 409, the others 424). Each operation also names its partition key, as
    /// the JavaScript SDK's batch operations do. The body is written
    /// directly from the serialized documents: the same bytes as serializing
    /// `[{"operationType", "partitionKey", "resourceBody"}]` objects (members
    /// in that order, compact), without copying each document into a JSON
    /// value first.
    pub fn batch(
        &self,
        container: &ContainerLink,
        partition_key: &str,
        documents: &[&[u8]],
        operation: BatchOperation,
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        let operation = operation.as_str();
        if documents.is_empty() || documents.len() > MAX_BATCH_OPERATIONS {
            return Err(CosmosError::BatchTooLarge {
                operations: documents.len(),
                bytes: 0,
            });
        }
        let pk = partition_key_header(partition_key);
        let head = serde_json::to_vec(
            &serde_json::json!({"operationType": operation, "partitionKey": pk}),
        )
        .expect("JSON values serialize");
        // `{"operationType":…,"partitionKey":…` then `,"resourceBody":<doc>}`.
        let head = &head[..head.len() - 1];
        let total = documents
            .iter()
            .map(|d| d.len() + head.len() + 18)
            .sum::<usize>()
            + 1;
        if total > MAX_BATCH_BYTES {
            return Err(CosmosError::BatchTooLarge {
                operations: documents.len(),
                bytes: total,
            });
        }
        let mut body = Vec::with_capacity(total);
        body.push(b'[');
        for (i, d) in documents.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(head);
            body.extend_from_slice(b",\"resourceBody\":");
            body.extend_from_slice(d);
            body.push(b'}');
        }
        body.push(b']');
        debug_assert_eq!(body.len(), total);
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

    /// Point read of one document by id and partition key.
    pub fn read_document(
        &self,
        container: &ContainerLink,
        id: &str,
        partition_key: &str,
    ) -> Request<Vec<u8>> {
        self.item_request(Method::GET, container, id, partition_key, Vec::new())
    }

    /// Delete one document by id and partition key.
    pub fn delete_document(
        &self,
        container: &ContainerLink,
        id: &str,
        partition_key: &str,
    ) -> Request<Vec<u8>> {
        self.item_request(Method::DELETE, container, id, partition_key, Vec::new())
    }

    /// Delete one document, only if it still has `etag` when one is given
    /// (`If-Match`; the service answers 412 when it changed).
    pub fn delete_document_if_match(
        &self,
        container: &ContainerLink,
        id: &str,
        partition_key: &str,
        etag: Option<&str>,
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        let mut req = self.delete_document(container, id, partition_key);
        if let Some(etag) = etag {
            req.headers_mut().insert(
                header::IF_MATCH,
                http::HeaderValue::from_str(etag).map_err(|_| {
                    CosmosError::InvalidResponse("etag is not a valid header value".into())
                })?,
            );
        }
        Ok(req)
    }

    /// Replace a document only if it still has `etag` (`If-Match`); the
    /// service answers 412 when it changed since it was read.
    pub fn replace_document(
        &self,
        container: &ContainerLink,
        id: &str,
        partition_key: &str,
        body: Vec<u8>,
        etag: &str,
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(CosmosError::DocumentTooLarge {
                size: body.len(),
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        let mut req = self.item_request(Method::PUT, container, id, partition_key, body);
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::IF_MATCH,
            http::HeaderValue::from_str(etag).map_err(|_| {
                CosmosError::InvalidResponse("etag is not a valid header value".into())
            })?,
        );
        Ok(req)
    }

    /// A SQL query with parameters. `partition_key` scopes it to one
    /// partition; `None` runs it across partitions. Pages are at most
    /// `max_items` long; pass the previous page's continuation to go on.
    pub fn query_documents(
        &self,
        container: &ContainerLink,
        query: &Query,
        partition_key: Option<&str>,
        max_items: u32,
        continuation: Option<&str>,
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "query": query.text,
            "parameters": query.parameters.iter().map(|(n, v)| serde_json::json!({"name": n, "value": v})).collect::<Vec<_>>(),
        }))
        .expect("JSON values serialize");
        let target = container.documents();
        let mut b = self
            .builder(Method::POST, &target)
            .header(header::CONTENT_TYPE, "application/query+json")
            .header("x-ms-documentdb-isquery", "True")
            .header("x-ms-max-item-count", max_items.to_string());
        b = match partition_key {
            Some(pk) => b.header("x-ms-documentdb-partitionkey", partition_key_header(pk)),
            None => b.header("x-ms-documentdb-query-enablecrosspartition", "True"),
        };
        if let Some(c) = continuation {
            let v = http::HeaderValue::from_str(c).map_err(|_| {
                CosmosError::InvalidResponse("continuation is not a valid header value".into())
            })?;
            b = b.header("x-ms-continuation", v);
        }
        Ok(b.header(header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("headers built from valid values"))
    }

    fn item_request(
        &self,
        method: Method,
        container: &ContainerLink,
        id: &str,
        partition_key: &str,
        body: Vec<u8>,
    ) -> Request<Vec<u8>> {
        let target = container.document(id);
        self.builder(method, &target)
            .header(
                "x-ms-documentdb-partitionkey",
                partition_key_header(partition_key),
            )
            .header(header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("headers built from valid values")
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

/// The operation of every document in a transactional batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOperation {
    /// Create or replace.
    Upsert,
    /// Create only.
    Create,
}

impl BatchOperation {
    fn as_str(self) -> &'static str {
        match self {
            BatchOperation::Upsert => "Upsert",
            BatchOperation::Create => "Create",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(
        b: &CosmosRequest,
        c: &ContainerLink,
        docs: &[&serde_json::Value],
        op: BatchOperation,
    ) -> Result<Request<Vec<u8>>, CosmosError> {
        let bodies: Vec<Vec<u8>> = docs
            .iter()
            .map(|d| serde_json::to_vec(d).unwrap())
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        b.batch(c, "p", &refs, op)
    }
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
    fn item_operations_are_signed_over_the_document_link() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let b = CosmosRequest::new(&endpoint, &cred, UnixTime(1_795_480_119));
        let c = ContainerLink::new("wiredb", "items");
        let read = b.read_document(&c, "a", "p1");
        assert_eq!(read.method(), Method::GET);
        assert_eq!(read.uri().path(), "/dbs/wiredb/colls/items/docs/a");
        assert_eq!(read.headers()["x-ms-documentdb-partitionkey"], "[\"p1\"]");
        // The Python SDK's on-the-wire signature for GET docs/a at this date.
        assert!(read.headers()["authorization"]
            .to_str()
            .unwrap()
            .ends_with("%2Bk66SR9KVHzN3PLAOT5FRhM4OJmbP%2BphzjmlFdwvoXM%3D"));
        let del = b.delete_document(&c, "a b", "p1");
        assert_eq!(del.method(), Method::DELETE);
        assert_eq!(del.uri().path(), "/dbs/wiredb/colls/items/docs/a%20b");
        assert!(del.headers().get("if-match").is_none());
        let del = b
            .delete_document_if_match(&c, "a b", "p1", Some("\"00-2\""))
            .unwrap();
        assert_eq!(del.headers()["if-match"], "\"00-2\"");
        assert_eq!(del.headers()["x-ms-documentdb-partitionkey"], "[\"p1\"]");
        assert!(b
            .delete_document_if_match(&c, "a", "p1", Some("bad\netag"))
            .is_err());
        let rep = b
            .replace_document(&c, "a", "p1", b"{}".to_vec(), "\"00-1\"")
            .unwrap();
        assert_eq!(rep.method(), Method::PUT);
        assert_eq!(rep.headers()["if-match"], "\"00-1\"");
        assert_eq!(rep.headers()["content-type"], "application/json");
        assert!(b
            .replace_document(&c, "a", "p", vec![b' '; MAX_DOCUMENT_BYTES + 1], "e")
            .is_err());
    }

    #[test]
    fn queries_carry_parameters_and_paging() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let b = CosmosRequest::new(&endpoint, &cred, UnixTime(0));
        let c = ContainerLink::new("d", "c");
        let q = Query::new("SELECT * FROM c WHERE c.pk = @pk AND c.v = @v")
            .param("@pk", "x'; DROP")
            .param("@v", 1);
        let req = b
            .query_documents(&c, &q, Some("x"), 50, Some("+RID:abc#RT:1"))
            .unwrap();
        let h = req.headers();
        assert_eq!(h["content-type"], "application/query+json");
        assert_eq!(h["x-ms-documentdb-isquery"], "True");
        assert_eq!(h["x-ms-max-item-count"], "50");
        assert_eq!(h["x-ms-continuation"], "+RID:abc#RT:1");
        assert_eq!(h["x-ms-documentdb-partitionkey"], "[\"x\"]");
        let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(
            body["query"],
            "SELECT * FROM c WHERE c.pk = @pk AND c.v = @v"
        );
        assert_eq!(
            body["parameters"][0],
            serde_json::json!({"name": "@pk", "value": "x'; DROP"})
        );
        let cross = b.query_documents(&c, &q, None, 10, None).unwrap();
        assert_eq!(
            cross.headers()["x-ms-documentdb-query-enablecrosspartition"],
            "True"
        );
        assert!(cross
            .headers()
            .get("x-ms-documentdb-partitionkey")
            .is_none());
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
        let req = batch_of(
            &CosmosRequest::new(&endpoint, &cred, UnixTime(1_795_480_119)),
            &ContainerLink::new("wiredb", "items"),
            &refs,
            BatchOperation::Upsert,
        )
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
    fn batch_of_creates() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let doc = serde_json::json!({"id": "a", "pk": "p"});
        let req = batch_of(
            &CosmosRequest::new(&endpoint, &cred, UnixTime(0)),
            &ContainerLink::new("d", "c"),
            &[&doc, &doc],
            BatchOperation::Create,
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(body[1]["operationType"], "Create");
        assert_eq!(req.headers()["x-ms-cosmos-batch-atomic"], "True");
    }

    #[test]
    fn batch_limits() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        let cred = Credential::MasterKey(key());
        let b = CosmosRequest::new(&endpoint, &cred, UnixTime(0));
        let c = ContainerLink::new("d", "c");
        let doc = serde_json::json!({"id": "x"});
        let up = BatchOperation::Upsert;
        assert!(batch_of(&b, &c, &[], up).is_err());
        assert!(batch_of(&b, &c, &vec![&doc; MAX_BATCH_OPERATIONS], up).is_ok());
        assert!(batch_of(&b, &c, &vec![&doc; MAX_BATCH_OPERATIONS + 1], up).is_err());
        let big = serde_json::json!({"id": "x", "blob": "x".repeat(30_000)});
        assert!(matches!(
            batch_of(&b, &c, &vec![&big; 80], up),
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
