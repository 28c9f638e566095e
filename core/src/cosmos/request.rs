//! Building signed requests.

use http::{header, Method, Request};

use super::auth::Credential;
use super::link::{ContainerLink, Target};
use super::response::CosmosError;
use crate::endpoint::Endpoint;
use crate::time::UnixTime;

/// REST API version sent as `x-ms-version` (the official Python SDK's).
pub const API_VERSION: &str = "2020-07-15";

/// The service's limit on one document's size.
pub const MAX_DOCUMENT_BYTES: usize = 2 * 1024 * 1024;

/// Most operations in one transactional batch.
pub const MAX_BATCH_OPERATIONS: usize = 100;

/// Largest transactional batch request body.
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// The `Prefer` value that asks the service to answer a document write with
/// its status and headers only, not the document it just stored: the
/// component reads nothing from that body (the etag and the charge come in
/// headers), and at ten sealed events a delivery the echo was as large as
/// the request. It is what the official SDKs send when content on write is
/// off (`EnableContentResponseOnWrite = false` in .NET, whose documentation
/// says it "removes the resource from the response"; the Java SDK sends
/// `Prefer: return=minimal` on point writes and
/// `"minimalReturnPreference": true` on each batch operation:
/// `RxDocumentClientImpl` and `ItemBulkOperation` in azure-sdk-for-java).
pub const MINIMAL_RETURN: &str = "return=minimal";

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
    /// the JavaScript SDK's batch operations do, and asks for its result
    /// without the document (`"minimalReturnPreference": true`, see
    /// [`MINIMAL_RETURN`]). The body is written directly from the serialized
    /// documents: the same bytes as serializing `[{"operationType",
    /// "partitionKey", "minimalReturnPreference", "resourceBody"}]` objects
    /// (members in that order, compact), without copying each document into
    /// a JSON value first.
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
        let head = batch_operation_head(&pk, operation);
        let head = &head[..];
        let total = documents
            .iter()
            .map(|d| d.len() + head.len() + OPERATION_TAIL)
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
            )
            .header("prefer", MINIMAL_RETURN);
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

/// What a batch body adds to each document after its operation's head:
/// `,"resourceBody":` before it, `}` and a separating `,` after.
const OPERATION_TAIL: usize = 18;

/// `{"operationType":…,"partitionKey":…,"minimalReturnPreference":true`,
/// the part of a batch operation before its `resourceBody`; `pk` is the
/// partition key as its header carries it.
fn batch_operation_head(pk: &str, operation: &str) -> Vec<u8> {
    let mut head =
        serde_json::to_vec(&serde_json::json!({"operationType": operation, "partitionKey": pk}))
            .expect("JSON values serialize");
    head.pop();
    head.extend_from_slice(b",\"minimalReturnPreference\":true");
    head
}

/// The bytes a batch body spends on each operation besides its document,
/// for `partition_key` (escaped twice over: as the header's JSON array,
/// then as a JSON string), so that a planner cuts batches that
/// [`CosmosRequest::batch`] accepts. The body's brackets add 1 more in all.
pub fn batch_operation_overhead(partition_key: &str, operation: BatchOperation) -> usize {
    batch_operation_head(&partition_key_header(partition_key), operation.as_str()).len()
        + OPERATION_TAIL
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
mod tests;
