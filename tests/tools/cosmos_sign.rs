//! Signs Cosmos DB requests with the component's own code, for the
//! differential test against the official Python SDK
//! (tests/integration/test_cosmos_signature.py).
//!
//! Reads JSON lines `{"verb", "resource_type", "link", "date", "key"}` on
//! stdin and writes the URL-encoded `authorization` value for each, one per
//! line, in order.

use cmk_core::cosmos::{master_key_signature, MasterKey};
use std::io::{BufRead, Write};

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    for line in stdin.lock().lines() {
        let line = line.expect("stdin is readable");
        let v: serde_json::Value = serde_json::from_str(&line).expect("each line is a JSON object");
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("`{k}` must be a string"))
        };
        let key = MasterKey::from_base64(field("key")).expect("key is base64");
        let header = master_key_signature(
            &key,
            field("verb"),
            field("resource_type"),
            field("link"),
            field("date"),
        );
        writeln!(out, "{header}").expect("stdout is writable");
    }
}
