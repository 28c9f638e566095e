//! A sealed field opens to exactly the value that was sealed, numbers
//! included. Sealing serializes a value and opening parses it back, so a
//! float must survive text and back bit for bit: serde_json's default
//! parser is faster but not correctly rounded (e.g. `3e93` read, written
//! as its shortest form, and read again lands one unit in the last place
//! away), which the `float_roundtrip` feature fixes. Found by the
//! `sealed_record` fuzz target.

use cmk_core::envelope::{self, Dek};
use serde_json::{json, Value};

fn open_sealed(data: Value) -> Value {
    let doc = json!({"id": "a", "pk": "p", "event": {"data": data}});
    let dek = Dek::from_bytes(&[7; 32]).unwrap();
    let mut sealed = doc.clone();
    let mut n = 0u8;
    envelope::seal(
        &mut sealed,
        &["/event/data".to_owned()],
        &dek,
        "https://h.managedhsm.azure.net/keys/k/v1",
        &[1],
        || {
            n += 1;
            [n; 12]
        },
    )
    .unwrap();
    let opened = envelope::open(&sealed, &dek, None).unwrap();
    assert_eq!(opened, doc);
    opened["event"]["data"].clone()
}

#[test]
fn sealed_floats_open_bit_for_bit() {
    for text in [
        "3e93",
        "1.7976931348623157e308",
        "2.2250738585072014e-308",
        "5e-324",
        "0.1",
        "-0.0",
        "123456789012345678901234567890",
        "9007199254740993",
        "[1e23, 8.98846567431158e307, 4.9406564584124654e-324]",
    ] {
        let v: Value = serde_json::from_str(text).unwrap();
        let back = open_sealed(v.clone());
        let bits = |x: &Value| -> Vec<Option<u64>> {
            match x {
                Value::Array(a) => a.iter().map(|n| n.as_f64().map(f64::to_bits)).collect(),
                n => vec![n.as_f64().map(f64::to_bits)],
            }
        };
        assert_eq!(bits(&back), bits(&v), "{text}");
        // And the text the component writes for it reads back the same.
        let again: Value = serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(again, v, "{text}");
    }
}
