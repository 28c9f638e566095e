//! Answers of the peers: Cosmos DB (batch, read, write, query, delete,
//! errors), Managed HSM (key, wrap/unwrap, errors) and Entra ID (tokens),
//! under any status. The first two input bytes pick the status; the rest
//! is the body, also offered as the value of the headers the parsers read.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = 100 + (u16::from_be_bytes([data[0], data[1]]) % 500);
    let body = &data[2..];
    let mut b = http::Response::builder().status(status);
    if let Ok(v) = http::HeaderValue::from_bytes(&body[..body.len().min(40)]) {
        for h in [
            "x-ms-retry-after-ms",
            "x-ms-substatus",
            "x-ms-request-charge",
            "x-ms-activity-id",
            "retry-after",
            "etag",
            "x-ms-continuation",
            "x-ms-session-token",
        ] {
            b = b.header(h, v.clone());
        }
    }
    let Ok(resp) = b.body(body.to_vec()) else {
        return;
    };
    use cmk_core::cosmos;
    let _ = cosmos::parse_batch(&resp, 3);
    let _ = cosmos::parse_read(&resp);
    let _ = cosmos::parse_write(&resp);
    let _ = cosmos::parse_query(&resp);
    let _ = cosmos::parse_delete(&resp);
    let _ = cosmos::service_error(&resp);
    let _ = cosmos::transient_failure(&resp);
    let _ = cosmos::token_refused(&resp);
    use cmk_core::hsm;
    let _ = hsm::parse_key(&resp);
    let _ = hsm::parse_crypt(&resp);
    let _ = hsm::error_from(&resp);
    let _ = cmk_core::jwt::parse_jwks_response(&resp);
    let _ =
        cmk_core::entra::parse_token_response(&resp, cmk_core::time::UnixTime(1_800_000_000));
});
