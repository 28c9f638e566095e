//! An outbound answer assembled from what the host delivered. The host hands
//! over the status and headers first and the body as a stream; a stream that
//! breaks off (the peer reset the connection or closed it before
//! `Content-Length` bytes) makes the whole answer a transport failure, which
//! the retry loop treats like a reset: retried inside the budget, then 503
//! with `Retry-After`. (spin-sdk's own conversion to `http::Response` panics
//! there, which traps the instance and leaves the sender a runtime 500.)

use http::Response;

/// The answer, or why there is none. `body` is the body as read to its end,
/// or the reason it broke off; header values that are not valid are dropped.
pub fn assemble(
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Result<Vec<u8>, String>,
) -> Result<Response<Vec<u8>>, String> {
    let body = body.map_err(|e| format!("the answer broke off after status {status}: {e}"))?;
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(&value),
        ) {
            builder = builder.header(n, v);
        }
    }
    builder.body(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_answer_keeps_status_headers_and_body() {
        let r = assemble(
            201,
            vec![("x-ms-request-charge".into(), b"5.7".to_vec())],
            Ok(b"{}".to_vec()),
        )
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-ms-request-charge"], "5.7");
        assert_eq!(r.body(), b"{}");
    }

    #[test]
    fn a_body_that_broke_off_is_a_transport_failure_not_a_panic() {
        let e = assemble(200, vec![], Err("stream closed".into())).unwrap_err();
        assert!(e.contains("broke off") && e.contains("200"), "{e}");
    }

    #[test]
    fn invalid_header_values_are_dropped_not_fatal() {
        let r = assemble(
            200,
            vec![
                ("x-ok".into(), b"1".to_vec()),
                ("x-bad".into(), b"a\nb".to_vec()),
            ],
            Ok(vec![]),
        )
        .unwrap();
        assert!(r.headers().get("x-bad").is_none() && r.headers()["x-ok"] == "1");
    }
}
