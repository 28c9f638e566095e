//! The end-to-end benchmark's workload (tests/bench/bench.py), shared by
//! the delivery bench and json-bound: events of about 1 KB with three
//! protected fields of about 500 bytes in all, as one Event Grid body.

use serde_json::json;

fn words(seed: u64, n: usize) -> String {
    const W: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut s = String::new();
    let mut x = seed;
    while s.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(W[(x >> 60) as usize & 7]);
        s.push(' ');
    }
    s.truncate(n);
    s
}

/// `events` Event Grid events as one delivery body.
pub fn body(events: usize) -> Vec<u8> {
    let list: Vec<_> = (0..events as u64)
        .map(|i| {
            json!({"id": format!("{i:08}-bench"), "topic": "/bench/delivery", "subject": "patients/records",
               "eventType": "Contoso.Records.Updated", "eventTime": "2026-11-25T10:00:00.000Z",
               "data": {"patient": format!("Patient {i:08x} {}", words(i, 24)), "mrn": format!("A{i:09}"),
                        "notes": {"text": words(i + 1, 420), "codes": ["J01", "J02", "J03", "J04"]},
                        "ward": "7B", "admitted": "2026-11-20T08:15:00Z", "context": words(i + 2, 230)},
               "dataVersion": "1.0", "metadataVersion": "1"})
        })
        .collect();
    serde_json::to_vec(&list).unwrap()
}
