//! Azure Cosmos DB (NoSQL API) over REST, as pure functions.
//!
//! Cosmos DB does not take a plain bearer header: every request carries an
//! `authorization` value computed from the verb, the resource type, the
//! resource link and the request date (master-key HMAC), or wraps an Entra ID
//! token as `type=aad&ver=1.0&sig=<token>`. See Microsoft's "Access control in
//! the Azure Cosmos DB SQL API" REST reference.
//!
//! This module builds signed [`http::Request`]s and parses [`http::Response`]s;
//! it performs no I/O and reads no clock (time is an argument), so every part
//! is tested natively. The component's `outbound` module sends what it builds.

mod auth;
mod link;
mod request;
mod response;

pub use crate::endpoint::{Endpoint, EndpointError};
pub use auth::{
    bearer_token, encode_header_value, master_key_signature, reauthorize, Credential, InvalidToken,
    MasterKey, MasterKeyError,
};
pub use link::{ContainerLink, ResourceType, Target};
pub use request::{
    batch_operation_overhead, partition_key_header, BatchOperation, CosmosRequest, Query,
    API_VERSION, MAX_BATCH_BYTES, MAX_BATCH_OPERATIONS, MAX_DOCUMENT_BYTES, MINIMAL_RETURN,
};
pub use response::{
    parse_batch, parse_delete, parse_query, parse_read, parse_write, same_content, service_error,
    token_refused, transient_failure, BatchOutcome, CosmosError, Metrics, OperationResult,
    QueryPage, ServiceError, StoredDocument, Unparsed, WriteOutcome, SYSTEM_PROPERTIES,
};
