//! The component's fixed work per request, natively, one step at a time:
//! what every stage-two delivery computes whatever its number of events.
//! Loading the configuration (the settings of the end-to-end benchmark,
//! tests/bench/bench.py, protected fields included), deriving the
//! key-value entry keys and opening the two entries a warm delivery reads
//! (the encrypted HSM token, the MAC'd key state), building the HSM wrap
//! request, and one log line's JSON.
//!
//! Meant for instruction counts: `valgrind --tool=callgrind` on the release
//! build with `STEP=<name>` runs that step `N` times (default 1000) and
//! nothing else, so the difference from `STEP=none` is its cost:
//!
//!     cargo build --release -p cmk-core --example fixed-cost
//!     for s in none config kv hsm log log-map; do STEP=$s valgrind --tool=callgrind \
//!         --callgrind-out-file=/tmp/cg.$s target/release/examples/fixed-cost; done

use cmk_core::config::Config;
use cmk_core::endpoint::Endpoint;
use cmk_core::hsm::{self, KeyRef};
use cmk_core::kvseal::EntryKey;
use serde_json::{json, Map, Value};
use std::hint::black_box;

/// The benchmark's stage-two settings (client-secret identity, three
/// protected fields); unset ones take their defaults.
const SETTINGS: &[(&str, &str)] = &[
    ("cosmos_endpoint", "https://127.0.0.1:8081"),
    ("cosmos_database", "cmk"),
    ("cosmos_container", "events"),
    (
        "cosmos_key",
        "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
    ),
    ("ingest_keys", "bench-ingest-key-0123456789abcdef0123456789"),
    ("cmk_stage", "2"),
    ("hsm_endpoint", "https://127.0.0.1:8443"),
    ("hsm_key_name", "app-kek"),
    ("identity", "client-secret"),
    ("azure_authority_host", "https://127.0.0.1:8444"),
    ("azure_tenant_id", "00000000-0000-0000-0000-000000000001"),
    ("azure_client_id", "app-secret-client"),
    ("azure_client_secret", "app-secret-value"),
    ("kv_store_key", "bench-kv-store-key-0123456789abcdef"),
    (
        "protected_fields",
        r#"{"Contoso.Patient.Admitted": ["/data/patient", "/data/mrn", "/data/notes"]}"#,
    ),
];

fn config() -> Config {
    Config::load(|name| {
        Ok(SETTINGS
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned()))
    })
    .expect("the benchmark's settings load")
}

fn main() {
    let step = std::env::var("STEP").unwrap_or_else(|_| "all".into());
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let secret = "bench-kv-store-key-0123456789abcdef";
    let key = EntryKey::derive(secret);
    let token = vec![b'x'; 1_150];
    let state = vec![b'{'; 950];
    let sealed_token = key.seal_secret("hsm-token/v1/x", &token, [7; 12]);
    let sealed_state = key.seal("hsm-key/v1/x", &state);
    let vault = Endpoint::parse("https://127.0.0.1:8443").unwrap();
    let kref = KeyRef {
        name: "app-kek".into(),
        version: Some("2c6ebe3c72614e0a9c3a2cbd2a4f1e2b".into()),
    };
    let tok = String::from_utf8(token.clone()).unwrap();
    for _ in 0..n {
        if step == "config" || step == "all" {
            black_box(config());
        }
        if step == "kv" || step == "all" {
            let k = EntryKey::derive(black_box(secret));
            black_box(k.open_secret("hsm-token/v1/x", &sealed_token));
            black_box(k.open("hsm-key/v1/x", &sealed_state));
        }
        if step == "hsm" || step == "all" {
            black_box(hsm::wrap_request(&vault, &kref, black_box(&[9u8; 32]), &tok).unwrap());
        }
        let fields = [
            ("route", json!("push")),
            ("method", json!("POST")),
            ("status", json!(200)),
            ("code", json!(null)),
            ("duration_ms", json!(3)),
            ("events", json!(1)),
            ("hsm", json!({"calls": 1, "attempts": 1, "failures": 0})),
        ];
        if step == "log" || step == "all" {
            black_box(cmk_core::logline::format(
                "info",
                "request",
                black_box(&fields),
            ));
        }
        if step == "log-map" {
            // The line as it was built before cmk_core::logline: a map.
            let mut m = Map::new();
            m.insert("level".into(), Value::from("info"));
            m.insert("event".into(), Value::from("request"));
            for (k, v) in black_box(&fields) {
                m.insert((*k).into(), v.clone());
            }
            let mut line = serde_json::to_vec(&Value::Object(m)).unwrap();
            line.push(b'\n');
            black_box(line);
        }
    }
}
