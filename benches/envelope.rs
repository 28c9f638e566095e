//! CPU cost of sealing and opening protected fields, per KB of plaintext.
//!
//! Built natively (`cargo run --release --example envelope-bench`) and for
//! the component's target, run inside Wasmtime (scripts/bench-envelope does
//! both and prints one table). Each size seals a document with three
//! protected fields holding that many bytes in all, then opens it, in a
//! loop of at least `--secs` seconds (default 2); the figure is CPU time
//! per operation (the loop is single-threaded and does no I/O), and per KB.
//! Nonces come from a counter rather than the host's random source, so the
//! figure is the AEAD and JSON work alone.
//!
//! Output: CSV lines `target,size_bytes,op,ns_per_op,ns_per_kb,iterations`.

use std::time::{Duration, Instant};

use cmk_ingest::envelope::{self, Dek};
use serde_json::{json, Value};

fn document(total: usize) -> Value {
    let each = total / 3;
    let field = |c: char| c.to_string().repeat(each.max(1));
    json!({
        "id": "c0114e694b0dbc4eff002a3fa6e240759991be2505d38676b32d86010c21c31e",
        "pk": "/topics/bench",
        "v": 1,
        "event": {"specversion": "1.0", "id": "1", "source": "/topics/bench", "type": "T",
                  "data": {"name": field('a'), "ssn": field('b'), "note": field('c'), "ward": 7}},
    })
}

fn run(secs: f64, mut f: impl FnMut()) -> (u64, Duration) {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget || n < 10 {
        f();
        n += 1;
    }
    (n, start.elapsed())
}

fn main() {
    let mut secs = 2.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--secs" {
            secs = args.next().and_then(|v| v.parse().ok()).expect("--secs N");
        }
    }
    let target = if cfg!(target_arch = "wasm32") {
        "wasm32-wasip2"
    } else {
        "native"
    };
    let dek = Dek::from_bytes(&[7u8; 32]).unwrap();
    let kid = "https://contoso.managedhsm.azure.net/keys/app-kek/0123456789abcdef0123456789abcdef";
    let pointers: Vec<String> = ["/event/data/name", "/event/data/ssn", "/event/data/note"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut counter = 0u64;
    let mut nonce = move || {
        counter += 1;
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&counter.to_be_bytes());
        n
    };
    for size in [256usize, 1024, 10 * 1024, 100 * 1024] {
        let doc = document(size);
        let mut sealed = doc.clone();
        envelope::seal(&mut sealed, &pointers, &dek, kid, b"wrapped", &mut nonce).unwrap();
        let (n, t) = run(secs, || {
            let mut d = doc.clone();
            envelope::seal(&mut d, &pointers, &dek, kid, b"wrapped", &mut nonce).unwrap();
            std::hint::black_box(d);
        });
        report(target, size, "seal", n, t);
        let (n, t) = run(secs, || {
            std::hint::black_box(envelope::open(&sealed, &dek, None).unwrap());
        });
        report(target, size, "open", n, t);
    }
}

fn report(target: &str, size: usize, op: &str, n: u64, t: Duration) {
    let ns = t.as_nanos() as f64 / n as f64;
    println!(
        "{target},{size},{op},{ns:.0},{:.0},{n}",
        ns / (size as f64 / 1024.0)
    );
}
