//! CPU cost of one stage-two delivery in the component's own code, per
//! event: what `POST /events` computes between reading the body and
//! sending the writes, without any I/O. Decoding the Event Grid body,
//! mapping events to documents, sealing three protected fields per event
//! (AES-256-GCM, one data key per delivery), signing and serializing the
//! Cosmos DB requests (one transactional batch per partition key), then
//! parsing the batch answer.
//!
//! The workload is the end-to-end benchmark's (tests/bench/bench.py): events
//! of about 1 KB with three protected fields of about 500 bytes in all.
//! Inside Wasm it allocates as the component does, from the component's
//! heap (the `cmk-heap` crate, linked below); natively, from the system's.
//!
//! Built natively and for `wasm32-wasip2` and run in Wasmtime by
//! scripts/bench-envelope (`--events N` for one size only, e.g. under
//! callgrind; with `--deliveries N` exactly N deliveries, for instruction
//! counts). Output: CSV lines
//! `target,events_per_delivery,op,ns_per_delivery,ns_per_event,iterations`.

use std::time::{Duration, Instant};

use cmk_core::config::{Config, ProtectedFields};
use cmk_core::envelope::Dek;
use cmk_core::ingest::{self, Decoded, DeliveryKey};
use cmk_core::time::UnixTime;
use serde_json::json;

// The component's global allocator (wasm32 only) and `cabi_realloc`.
cmk_heap::cabi_realloc!();

#[path = "workload.rs"]
mod workload;
use workload::body;

fn batch_answer(n: usize) -> http::Response<Vec<u8>> {
    let ops: Vec<_> = (0..n)
        .map(|_| json!({"statusCode": 201, "requestCharge": 1.0, "eTag": "\"0\"", "resourceBody": {"id": "x"}}))
        .collect();
    http::Response::builder()
        .status(200)
        .header("x-ms-request-charge", "1")
        .header("x-ms-activity-id", "00000000-0000-0000-0000-000000000000")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap()
}

fn main() {
    let mut secs = 2.0;
    let mut sizes = vec![1usize, 10, 100];
    let mut deliveries: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).expect("--secs N"),
            "--events" => {
                sizes = vec![args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--events N")]
            }
            "--deliveries" => {
                deliveries = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--deliveries N"),
                )
            }
            _ => {}
        }
    }
    let target = if cfg!(target_arch = "wasm32") {
        "wasm32-wasip2"
    } else {
        "native"
    };
    let config = Config::load(|name| {
        Ok(match name {
            "cosmos_endpoint" => Some("http://127.0.0.1:8081".into()),
            "cosmos_database" => Some("cmk".into()),
            "cosmos_container" => Some("events".into()),
            "cosmos_key" => Some("C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==".into()),
            _ => None,
        })
    })
    .unwrap();
    let credential = config.cosmos.auth.static_credential().unwrap().clone();
    let protected = ProtectedFields::parse(
        r#"{"Contoso.Records.Updated": ["/data/patient", "/data/mrn", "/data/notes"]}"#,
        "/source",
    )
    .unwrap();
    let dek = Dek::from_bytes(&[7u8; 32]).unwrap();
    let kid = "https://contoso.managedhsm.azure.net/keys/app-kek/0123456789abcdef0123456789abcdef";
    let wrapped = [9u8; 256];
    let mut counter = 0u64;
    let mut nonce = move || {
        counter += 1;
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&counter.to_be_bytes());
        n
    };
    let now = UnixTime::now();
    for events in sizes {
        let body = body(events);
        let answer = batch_answer(events);
        let budget = Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut n = 0u64;
        while match deliveries {
            Some(d) => n < d,
            None => start.elapsed() < budget || n < 10,
        } {
            // The route's flow: check and decode, map to documents, seal,
            // then plan (serialize and sign) the writes once.
            ingest::check_shape(&body, &config).unwrap();
            let Ok(Decoded::Events(events)) = ingest::decode(Some("application/json"), &[], &body)
            else {
                panic!("decoded no events")
            };
            let documents = ingest::documents_of(events, &config).unwrap();
            let key = DeliveryKey {
                dek: &dek,
                kid,
                wrapped_dek: &wrapped,
            };
            let writes = ingest::seal(
                documents,
                &protected,
                &key,
                &mut nonce,
                &config,
                &credential,
                now,
            )
            .unwrap();
            let results = writes
                .units
                .iter()
                .map(|u| {
                    let resp = if u.batch {
                        answer.clone()
                    } else {
                        http::Response::builder()
                            .status(201)
                            .body(b"{\"id\":\"x\"}".to_vec())
                            .unwrap()
                    };
                    ingest::unit_outcome(u, Ok(resp))
                })
                .collect();
            std::hint::black_box(ingest::respond(&writes, results));
            n += 1;
        }
        let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
        println!(
            "{target},{events},deliver,{ns:.0},{:.0},{n}",
            ns / events as f64
        );
    }
}
