//! What a delivery's JSON trees cost, against the least a path without
//! them must do: how much a tree-free ingest path (documents written from
//! the body's bytes, the protected values cut out of them) could take off
//! at most. Each mode runs one step over the delivery bench's 100-event
//! body (benches/delivery.rs; the end-to-end benchmark's events), N times:
//!
//! - `tree`: parse the body into a `serde_json::Value` tree and drop it
//!   (what the decoders start from);
//! - `tree-write`: the same, and write the tree out again with the
//!   component's writer (`compact_json`), as the documents are written;
//! - `scan`: parse it into `IgnoredAny` (serde_json's syntax check with
//!   nothing built: less than a tree-free path needs, which must also find
//!   the members it maps and the protected values);
//! - `shape`: the product's one-pass scan of nesting and items
//!   (`events::shape`), which a tree-free path would keep;
//! - `copy`: the body's bytes copied once, as a tree-free writer must.
//!
//! `json-bound MODE N`; tests/bench/json_bound.py runs each mode inside
//! Wasmtime under callgrind with N and with 0 and prints instructions per
//! event. docs/benchmarks.md has a run.

use serde::de::IgnoredAny;
use serde_json::Value;

// The component's global allocator (wasm32 only) and `cabi_realloc`.
cmk_heap::cabi_realloc!();

#[path = "workload.rs"]
mod workload;
use workload::body;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().expect("MODE");
    let n: usize = args.next().and_then(|v| v.parse().ok()).expect("N");
    let body = body(100);
    let text = std::str::from_utf8(&body).unwrap();
    let mut sink = 0usize;
    for _ in 0..n {
        sink += match mode.as_str() {
            "tree" => {
                let v: Value = serde_json::from_str(std::hint::black_box(text)).unwrap();
                usize::from(v.is_array())
            }
            "tree-write" => {
                let v: Value = serde_json::from_str(std::hint::black_box(text)).unwrap();
                let mut out = Vec::with_capacity(body.len());
                cmk_core::compact_json::write_value(&mut out, &v);
                out.len()
            }
            "scan" => {
                let _: IgnoredAny = serde_json::from_str(std::hint::black_box(text)).unwrap();
                1
            }
            "shape" => cmk_core::events::shape(std::hint::black_box(&body)).depth,
            "copy" => {
                let mut out = Vec::with_capacity(body.len());
                out.extend_from_slice(std::hint::black_box(&body));
                out.len()
            }
            other => panic!("unknown mode {other}"),
        };
    }
    println!("{mode},{n},{},{sink}", body.len());
}
