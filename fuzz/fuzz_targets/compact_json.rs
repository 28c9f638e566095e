//! The compact JSON writer against serde_json: any input that parses as
//! JSON is written back byte for byte as `serde_json::to_vec` writes it,
//! and the input read as text (invalid UTF-8 replaced) is written as a
//! JSON string exactly as serde_json writes that string.
#![no_main]
use cmk_core::compact_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        assert_eq!(compact_json::to_vec(&v), serde_json::to_vec(&v).unwrap());
    }
    let text = String::from_utf8_lossy(data);
    let mut ours = Vec::new();
    compact_json::write_str(&mut ours, &text);
    assert_eq!(ours, serde_json::to_vec(&text).unwrap());
});
