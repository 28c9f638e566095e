//! The `bound` build: the floor plus the work every delivery of the
//! product must do whatever its code, done without JSON trees. Per
//! delivery it reads and checks the component's whole configuration
//! (`Config::load`, as the component does on every request, since each
//! request runs in a fresh instance), checks the ingest key, and writes one
//! log line; per event it checks the event's syntax while it finds the
//! protected values (serde_json skipping everything else, capturing the
//! three values of the bench's workload as raw text: `/data/patient`,
//! `/data/mrn`, `/data/notes`), derives the document id, seals each value
//! with the component's own AES-256-GCM (`cmk_core::envelope`'s sealing as
//! text) and copies the event into its document with the sealed values in
//! place and the `cmk` header after it. The documents are the record
//! format's: the independent decryptor of `docs/record-format.md` opens
//! them (`tests/integration/test_bench_floor.py`).
//!
//! What it leaves out, and so why it is a bound: the event schemas' mapping
//! and checks (two schemas, partition keys, sizes, depth, duplicate
//! members), configured pointers and key scopes in general, the canonical
//! form of a value (the raw text is sealed as it came), the request's
//! answer body and the key-state check of the component (the floor's one
//! key-value entry stands for it).

use cmk_core::config::Config;
use cmk_core::envelope::{Dek, Sealer};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The three protected values of the bench's events, and the id.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(borrow)]
    topic: &'a str,
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    patient: &'a RawValue,
    #[serde(borrow)]
    mrn: &'a RawValue,
    #[serde(borrow)]
    notes: &'a RawValue,
}

const POINTERS: [&str; 3] = [
    "/event/data/patient",
    "/event/data/mrn",
    "/event/data/notes",
];

/// The configuration, read and checked as the component reads it.
pub fn config() -> Result<Config, String> {
    Config::load(|name| match spin_sdk::variables::get(name) {
        Ok(v) => Ok(Some(v)),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    })
    .map_err(|e| e.to_string())
}

/// What the exchanges need, from the configuration already read (each
/// variable is read once a request, as the component reads it).
pub(crate) fn settings(config: &Config) -> Result<crate::Settings, String> {
    let kek = config.kek.as_ref().ok_or("the bound runs in stage two")?;
    Ok(crate::Settings {
        vault: kek.endpoint.clone(),
        local_wrap: kek.local_wrap,
        account: config.cosmos.endpoint.clone(),
        credential: config
            .cosmos
            .auth
            .static_credential()
            .cloned()
            .ok_or("the bound signs with the master key")?,
        container: config.cosmos.container.clone(),
    })
}

/// The ingest key check: the configured keys, compared in constant time.
pub fn check_sender(config: &Config, presented: Option<&str>) -> Result<(), String> {
    match (&config.ingest.keys, presented) {
        (Some(keys), Some(p)) if keys.accepts(p) => Ok(()),
        _ => Err("ingest key refused".into()),
    }
}

/// Each event's document: the event with its protected values sealed.
pub fn documents(
    events: &[&[u8]],
    dek: &Dek,
    kid: &str,
    wrapped: &[u8],
    pk: &str,
) -> Result<Vec<Vec<u8>>, String> {
    let sealer = Sealer::new(dek, kid, wrapped);
    // One draw of nonces for the delivery, as the component draws them.
    let nonces = wasi::random::random::get_random_bytes(12 * 3 * events.len() as u64);
    let mut nonces = nonces.chunks_exact(12);
    let mut header = Vec::new();
    sealer.header_text(&POINTERS, &mut header);
    events
        .iter()
        .map(|&text| {
            let event: Event<'_> = serde_json::from_slice(text).map_err(|e| e.to_string())?;
            let id = cmk_core::document::document_id(event.topic, event.id);
            let one = sealer.document(&id, pk);
            let mut doc = Vec::with_capacity(text.len() + 2 * header.len() + 200);
            doc.extend_from_slice(b"{\"id\":\"");
            doc.extend_from_slice(id.as_bytes());
            doc.extend_from_slice(b"\",\"pk\":");
            cmk_core::compact_json::write_str(&mut doc, pk);
            doc.extend_from_slice(b",\"event\":");
            // The values in the order they stand in the text, spliced in.
            let mut values = [
                (event.data.patient, POINTERS[0]),
                (event.data.mrn, POINTERS[1]),
                (event.data.notes, POINTERS[2]),
            ];
            values.sort_by_key(|(v, _)| v.get().as_ptr() as usize);
            let mut at = 0;
            for (value, pointer) in values {
                let start = value.get().as_ptr() as usize - text.as_ptr() as usize;
                doc.extend_from_slice(&text[at..start]);
                let nonce: [u8; 12] = nonces
                    .next()
                    .expect("three an event")
                    .try_into()
                    .expect("12");
                one.seal_text(pointer, value.get().as_bytes(), nonce, &mut doc);
                at = start + value.get().len();
            }
            doc.extend_from_slice(&text[at..]);
            doc.extend_from_slice(b",\"cmk\":");
            doc.extend_from_slice(&header);
            doc.push(b'}');
            Ok(doc)
        })
        .collect()
}

/// The request's one log line, of the size of the component's summary.
pub fn log_line(events: usize, micros: u64) {
    let line = format!(
        "{{\"level\":\"info\",\"event\":\"request\",\"method\":\"POST\",\"route\":\"ingest\",\"status\":200,\"events\":{events},\"documents\":{events},\"duration_ms\":{}.{:03}}}\n",
        micros / 1000,
        micros % 1000
    );
    let err = wasi::cli::stderr::get_stderr();
    let _ = err.blocking_write_and_flush(line.as_bytes());
}
