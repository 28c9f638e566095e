//! Bodies and outgoing requests on `wasi:http` with the fewest host calls:
//! every call across the component boundary costs the runtime lifting,
//! lowering and resource-table work on each request, so a body is written
//! in one `blocking-write-and-flush` when it fits (4096 bytes, the
//! interface's limit for one) and read until its `content-length` is in
//! hand, without the extra read (and wait) that only reports the end.
//!
//! spin-sdk's `send` and response conversion do the same exchanges with a
//! `check-write`/`write`/`flush` cycle per chunk and a read past the end.

use std::task::Poll;

use cmk_core::wire_body::{self, BodyError};
use spin_executor::CancelOnDropToken;
use spin_sdk::http::{
    Headers, IncomingResponse, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, FutureIncomingResponse, IncomingBody, ResponseOutparam as WitResponseOutparam,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// The most one `blocking-write-and-flush` may carry (`wasi:io/streams`).
const BLOCKING_WRITE_MAX: usize = 4096;

/// Writes all of `data` into an outgoing body (request or response) and
/// closes its stream; the caller then finishes the body.
async fn write_body(body: &OutgoingBody, data: &[u8]) -> Result<(), StreamError> {
    let stream = body.write().map_err(|()| StreamError::Closed)?;
    let written = if data.is_empty() {
        Ok(())
    } else {
        write_all(&stream, data).await
    };
    drop(stream);
    written
}

/// Writes all of `data` to a body stream and flushes it: one host call for
/// a body that fits in [`BLOCKING_WRITE_MAX`], else as much per `write` as
/// the stream accepts, waiting (without blocking other futures) when it
/// accepts nothing.
pub async fn write_all(stream: &OutputStream, data: &[u8]) -> Result<(), StreamError> {
    if data.len() <= BLOCKING_WRITE_MAX {
        return stream.blocking_write_and_flush(data);
    }
    let mut rest = data;
    let mut flushed = false;
    let mut registration: Option<CancelOnDropToken> = None;
    std::future::poll_fn(|cx| loop {
        match stream.check_write() {
            Ok(0) => {
                registration = Some(
                    spin_executor::push_waker_and_get_token(stream.subscribe(), cx.waker().clone())
                        .into(),
                );
                return Poll::Pending;
            }
            Ok(_) if rest.is_empty() && flushed => return Poll::Ready(Ok(())),
            Ok(_) if rest.is_empty() => {
                if let Err(e) = stream.flush() {
                    return Poll::Ready(Err(e));
                }
                flushed = true;
            }
            Ok(permit) => {
                let n = usize::try_from(permit)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                if let Err(e) = stream.write(&rest[..n]) {
                    return Poll::Ready(Err(e));
                }
                rest = &rest[n..];
            }
            Err(StreamError::Closed) if rest.is_empty() => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e)),
        }
    })
    .await
}

/// Reads a body to its end, or to `expected` bytes when the sender declared
/// a `content-length` (the transport has then delivered all of it). The
/// steps are [`cmk_core::wire_body`]'s: room reserved from the declared
/// length only up to a cap, more than `limit` (or than declared) refused,
/// a body that ends short of its declared length an error.
pub async fn read_all(
    stream: &InputStream,
    expected: Option<usize>,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::with_capacity(wire_body::start(expected, limit)?);
    let mut registration: Option<CancelOnDropToken> = None;
    std::future::poll_fn(|cx| loop {
        let Some(want) = wire_body::next_read(body.len(), expected) else {
            return Poll::Ready(Ok(()));
        };
        match stream.read(want) {
            Ok(chunk) if chunk.is_empty() => {
                registration = Some(
                    spin_executor::push_waker_and_get_token(stream.subscribe(), cx.waker().clone())
                        .into(),
                );
                return Poll::Pending;
            }
            Ok(chunk) => {
                wire_body::accept_chunk(body.len(), chunk.len(), expected, limit)?;
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => {
                return Poll::Ready(
                    wire_body::at_end(body.len(), expected).map_err(ReadError::from),
                )
            }
            Err(StreamError::LastOperationFailed(e)) => {
                return Poll::Ready(Err(ReadError::Broken(e.to_debug_string())))
            }
        }
    })
    .await?;
    drop(registration);
    Ok(body)
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// More than the limit (or than declared) was declared or arrived.
    TooLarge,
    /// The stream broke off (the host's description), or ended before its
    /// declared length.
    Broken(String),
}

impl From<BodyError> for ReadError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { .. } => ReadError::TooLarge,
            e @ BodyError::Short { .. } => ReadError::Broken(e.to_string()),
        }
    }
}

/// The declared `content-length`, if any and well-formed.
pub fn content_length(entries: &[(String, Vec<u8>)]) -> Option<usize> {
    entries
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// An answer as read from the wire.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Header entries in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, or why it broke off.
    pub body: Result<Vec<u8>, String>,
}

/// Sends `req` through `wasi:http/outgoing-handler` and reads the whole
/// answer. Errors are the host's `error-code` or stream error as text (what
/// `spin_sdk::http::send` reported), for [`cmk_core::retry`] to classify.
pub async fn exchange(req: &http::Request<Vec<u8>>) -> Result<Answer, String> {
    let headers: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_owned()))
        .collect();
    let out = OutgoingRequest::new(Headers::from_list(&headers).map_err(|e| format!("{e:?}"))?);
    out.set_method(&req.method().clone().into())
        .map_err(|()| format!("error setting method to {}", req.method()))?;
    out.set_path_with_query(req.uri().path_and_query().map(|p| p.as_str()))
        .map_err(|()| format!("error setting path to {:?}", req.uri().path_and_query()))?;
    let scheme = req.uri().scheme().map(|s| match s.as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        s => Scheme::Other(s.to_owned()),
    });
    out.set_scheme(scheme.as_ref())
        .map_err(|()| format!("error setting scheme to {scheme:?}"))?;
    out.set_authority(req.uri().authority().map(|a| a.as_str()))
        .map_err(|()| format!("error setting authority to {:?}", req.uri().authority()))?;
    let body = out.body().expect("a new request's body is available");
    let future = outgoing_handler::handle(out, None);
    // The body is written after `handle`, as the host starts sending: a
    // body larger than the host's buffer could not be written before.
    let written = write_body(&body, req.body()).await;
    let finished = OutgoingBody::finish(body, None);
    let future = future.map_err(|e| e.to_string())?;
    written.map_err(|e| e.to_string())?;
    finished.map_err(|e| e.to_string())?;
    let resp = response(&future).await?;
    drop(future);
    let status = resp.status();
    let headers = resp.headers().entries();
    let expected = wire_body::expected_length(
        content_length(&headers),
        Some(status),
        req.method() == http::Method::HEAD,
    );
    let body = read_answer_body(&resp, expected).await;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

async fn response(future: &FutureIncomingResponse) -> Result<IncomingResponse, String> {
    let mut registration: Option<CancelOnDropToken> = None;
    let result = std::future::poll_fn(|cx| match future.get() {
        Some(Ok(result)) => Poll::Ready(result.map_err(|e| e.to_string())),
        Some(Err(())) => Poll::Ready(Err("the answer was already taken".into())),
        None => {
            registration = Some(
                spin_executor::push_waker_and_get_token(future.subscribe(), cx.waker().clone())
                    .into(),
            );
            Poll::Pending
        }
    })
    .await;
    drop(registration);
    result
}

async fn read_answer_body(
    resp: &IncomingResponse,
    expected: Option<usize>,
) -> Result<Vec<u8>, String> {
    let broke = || "the connection ended inside the body".to_string();
    let body: IncomingBody = resp.consume().map_err(|()| broke())?;
    let stream = body.stream().map_err(|()| broke())?;
    let read = read_all(&stream, expected, wire_body::MAX_ANSWER_BYTES).await;
    drop(stream);
    IncomingBody::finish(body);
    // Either way a transport failure: retried, then 503 with Retry-After.
    read.map_err(|e| match e {
        ReadError::TooLarge => format!(
            "the answer is larger than {} bytes",
            wire_body::MAX_ANSWER_BYTES
        ),
        ReadError::Broken(e) => format!("{}: {e}", broke()),
    })
}

/// Hands the answer to the host: headers in one `fields.from-list`, the
/// body in one write when it fits. A header sent more than once keeps its
/// last value, as spin-sdk's own conversion did. If the host refuses the
/// headers or the status, the request is still answered, once: with the
/// host's internal error (a 500 to the client), and the reason is logged.
pub async fn respond(out: ResponseOutparam, resp: http::Response<Vec<u8>>) {
    let response = match outgoing(&resp) {
        Ok(r) => r,
        Err(e) => {
            crate::host::log::emit(
                "error",
                "response_not_built",
                &[
                    ("error", serde_json::json!(e)),
                    ("status", serde_json::json!(resp.status().as_u16())),
                ],
            );
            WitResponseOutparam::set(out.into_inner(), Err(ErrorCode::InternalError(Some(e))));
            return;
        }
    };
    let body = response.body().expect("a new response's body is available");
    out.set(response);
    let written = write_body(&body, resp.body()).await;
    let _ = OutgoingBody::finish(body, None);
    if let Err(e) = written {
        // The client went away; the answer's summary line is already written.
        crate::host::log::emit(
            "warn",
            "response_body_not_sent",
            &[("error", serde_json::json!(e.to_string()))],
        );
    }
}

/// The host's response for `resp`'s status and headers, or why the host
/// refused them.
fn outgoing(resp: &http::Response<Vec<u8>>) -> Result<OutgoingResponse, String> {
    let headers: Vec<(String, Vec<u8>)> = resp
        .headers()
        .keys()
        .filter_map(|k| {
            let v = resp.headers().get_all(k).iter().next_back()?;
            Some((k.as_str().to_owned(), v.as_bytes().to_owned()))
        })
        .collect();
    let fields = Headers::from_list(&headers).map_err(|e| format!("headers refused: {e:?}"))?;
    let response = OutgoingResponse::new(fields);
    response
        .set_status_code(resp.status().as_u16())
        .map_err(|()| format!("status {} refused", resp.status()))?;
    Ok(response)
}
