//! Signs Queue service requests with the bridge's Shared Key code, for the
//! differential test against the official Python SDK
//! (tests/integration/test_queue_signature.py).
//!
//! Reads JSON lines `{"method", "url", "headers": [[name, value], …],
//! "account", "key"}` on stdin; writes the `Authorization` value for each,
//! one per line, in order.

use cmk_ingest_bridge::sharedkey::{authorization, AccountKey};
use std::io::{BufRead, Write};

fn main() {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    for line in std::io::stdin().lock().lines() {
        let v: serde_json::Value =
            serde_json::from_str(&line.expect("stdin is readable")).expect("each line is JSON");
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("`{k}` must be a string"))
        };
        let mut b = http::Request::builder().method(s("method")).uri(s("url"));
        for h in v["headers"].as_array().expect("headers is a list") {
            b = b.header(h[0].as_str().expect("name"), h[1].as_str().expect("value"));
        }
        let req = b.body(()).expect("a valid request");
        let key = AccountKey::from_base64(s("key")).expect("key is base64");
        writeln!(out, "{}", authorization(&req, s("account"), &key)).expect("stdout is writable");
    }
}
