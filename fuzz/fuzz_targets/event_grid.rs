//! Event Grid schema deliveries: the decoder must answer every body with
//! events or an error, never panic, and agree with the shape pre-check.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cmk_core::events::shape(data);
    let _ = cmk_core::events::decode_event_grid(data);
});
