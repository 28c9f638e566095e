//! The one place that performs outbound HTTP: through the host
//! (`wasi:http/outgoing-handler`, which Spin governs with
//! `allowed_outbound_hosts`).

use crate::cosmos::CosmosError;

/// Sends a request and reads the whole answer. Transport failures (refused,
/// reset, timed out, denied by the host) come back as text without secrets.
pub async fn send(req: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, String> {
    spin_sdk::http::send::<_, http::Response<Vec<u8>>>(req)
        .await
        .map_err(|e| e.to_string())
}

/// Sends Cosmos DB requests concurrently, answers in request order.
pub async fn send_all_cosmos(
    reqs: Vec<http::Request<Vec<u8>>>,
) -> Vec<Result<http::Response<Vec<u8>>, CosmosError>> {
    let futures = reqs
        .into_iter()
        .map(|r| async move { send(r).await.map_err(CosmosError::Transport) });
    futures::future::join_all(futures).await
}
