//! Stored records as read back: the envelope header parser and the opener
//! with a fixed data key (a forged or damaged record must be refused, never
//! panic or open), the rewrap locator and the pointer listing.
#![no_main]
use cmk_core::envelope::{self, Dek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = envelope::header(&doc);
    let _ = envelope::sealed_pointers(&doc);
    let _ = cmk_core::rewrap::locate(&doc);
    // The record-format vectors' data key, so their records (the seeds) open.
    let dek_bytes: [u8; 32] = core::array::from_fn(|i| i as u8);
    let dek = Dek::from_bytes(&dek_bytes).expect("32 bytes");
    let _ = envelope::open(&doc, &dek, None);
    let only = vec!["/event/data".to_owned()];
    let _ = envelope::open(&doc, &dek, Some(&only));
    let _ = envelope::rewrapped(&doc, "https://h.managedhsm.azure.net/keys/k/v", &[1, 2, 3]);
});
