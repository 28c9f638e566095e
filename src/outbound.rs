//! The one place that performs outbound HTTP: through the host
//! (`wasi:http/outgoing-handler`, which Spin governs with
//! `allowed_outbound_hosts`), with a timeout per attempt and retries as
//! [`crate::retry`] decides.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use futures::future::{self, Either};
use http::{Request, Response};
use wasi::clocks::monotonic_clock;

use crate::cosmos::{service_error, CosmosError};
use crate::retry::{Decision, RetryPolicy};

/// Milliseconds on the host's monotonic clock.
pub fn now_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

/// Completes after `ms` milliseconds, without blocking other futures of the
/// request (the host wakes it through a `wasi:io` pollable).
pub fn sleep(ms: u64) -> Sleep {
    Sleep {
        deadline: monotonic_clock::now().saturating_add(ms.saturating_mul(1_000_000)),
        _registration: None,
    }
}

/// The future returned by [`sleep`].
pub struct Sleep {
    deadline: u64,
    // Dropping it (on completion, or when a race is lost) takes the waker off
    // the executor's list.
    _registration: Option<spin_executor::CancelOnDropToken>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.deadline {
            return Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(self.deadline);
        self._registration =
            Some(spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()).into());
        Poll::Pending
    }
}

/// A uniform random number in `[0, 1)` from the host's secure random source.
fn jitter() -> f64 {
    (wasi::random::random::get_random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn copy(req: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.headers_mut() = req.headers().clone();
    r
}

/// Sends once and reads the whole answer, or fails after `timeout_ms`.
/// Transport failures (refused, reset, denied by the host) come back as text
/// without secrets.
pub async fn send_once(
    req: Request<Vec<u8>>,
    timeout_ms: u64,
) -> Result<Response<Vec<u8>>, String> {
    let send = pin!(spin_sdk::http::send::<_, Response<Vec<u8>>>(req));
    let timer = pin!(sleep(timeout_ms));
    match future::select(send, timer).await {
        Either::Left((result, _)) => result.map_err(|e| e.to_string()),
        Either::Right(_) => Err(format!("no complete answer within {timeout_ms} ms")),
    }
}

/// What happened to one logical request.
#[derive(Debug)]
pub struct Sent {
    /// The final answer (2xx or a failure that was not retried further).
    pub result: Result<Response<Vec<u8>>, CosmosError>,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time spent, in milliseconds.
    pub duration_ms: u64,
}

/// Sends a Cosmos DB request, retrying transient failures inside the policy's
/// time budget.
pub async fn send_cosmos(req: Request<Vec<u8>>, policy: RetryPolicy) -> Sent {
    let start = now_ms();
    let mut attempt = 1;
    loop {
        let timeout = policy.attempt_timeout(now_ms() - start);
        let result = match send_once(copy(&req), timeout).await {
            Ok(resp) if resp.status().is_success() => Ok(resp),
            Ok(resp) => match service_error(&resp) {
                // Pass non-transient answers up unparsed-as-error so callers
                // can read 404/409/412 bodies themselves.
                e if e.is_transient() => Err(e),
                _ => Ok(resp),
            },
            Err(e) => Err(CosmosError::Transport(e)),
        };
        let err = match result {
            Ok(resp) => {
                return Sent {
                    result: Ok(resp),
                    attempts: attempt,
                    duration_ms: now_ms() - start,
                };
            }
            Err(e) => e,
        };
        match policy.decide(
            attempt,
            err.is_transient(),
            err.retry_after_ms(),
            now_ms() - start,
            jitter(),
        ) {
            Decision::RetryAfter(ms) => {
                sleep(ms).await;
                attempt += 1;
            }
            Decision::GiveUp => {
                return Sent {
                    result: Err(err),
                    attempts: attempt,
                    duration_ms: now_ms() - start,
                };
            }
        }
    }
}

/// Sends Cosmos DB requests concurrently, answers in request order.
pub async fn send_all_cosmos(reqs: Vec<Request<Vec<u8>>>, policy: RetryPolicy) -> Vec<Sent> {
    future::join_all(reqs.into_iter().map(|r| send_cosmos(r, policy))).await
}
