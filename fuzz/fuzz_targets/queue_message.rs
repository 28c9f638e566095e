//! Storage queue message texts (plain, base64, Event Grid's and Dapr's
//! shapes) and the forwarders' metadata headers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for ct in [
        "text/plain; charset=utf-8",
        "application/json",
        "application/octet-stream",
    ] {
        let _ = cmk_core::queue::decode(Some(ct), data, cmk_core::config::MAX_DEPTH);
    }
    let text = String::from_utf8_lossy(data);
    let headers: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let _ = cmk_core::queue::metadata(&headers);
});
