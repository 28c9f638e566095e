//! The writer against serde_json: every escape class at every offset of an
//! eight-byte chunk, non-ASCII text, edge cases, and generated values.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn same_str(s: &str) {
    let mut ours = Vec::new();
    write_str(&mut ours, s);
    let theirs = serde_json::to_vec(s).unwrap();
    assert_eq!(
        ours,
        theirs,
        "{s:?}: {} vs {}",
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs)
    );
}

fn same_value(v: &Value) {
    assert_eq!(to_vec(v), serde_json::to_vec(v).unwrap(), "{v}");
}

#[test]
fn every_byte_below_0x80_is_escaped_as_serde_json_escapes_it() {
    for b in 0u8..0x80 {
        let c = char::from(b);
        same_str(&c.to_string());
        same_str(&format!("ab{c}cd"));
    }
    // Lowercase hex for the controls without a short form.
    let mut out = Vec::new();
    write_str(&mut out, "\u{1}\u{1f}\u{b}\u{7f}");
    assert_eq!(out, b"\"\\u0001\\u001f\\u000b\x7f\"");
    let mut out = Vec::new();
    write_str(&mut out, "\"\\\u{8}\u{c}\n\r\t/");
    assert_eq!(out, b"\"\\\"\\\\\\b\\f\\n\\r\\t/\"");
}

#[test]
fn an_escape_at_each_offset_of_a_chunk_and_around_it() {
    // Lengths across several chunks and the tail, an escape (of each
    // class) at every position, and next to non-ASCII bytes, whose high
    // bit must never be taken for a control character.
    for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', ' ', 'é'] {
        for len in 0..26 {
            for at in 0..len {
                let mut s: String = "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                s.replace_range(at..at + 1, &special.to_string());
                same_str(&s);
                same_str(&s.replace('c', "\u{20ac}"));
                same_str(&s.replace('d', "\"\""));
            }
        }
    }
}

#[test]
fn runs_of_escapes_and_every_byte_pair_below_0x20() {
    for a in 0u8..0x24 {
        for b in 0u8..0x24 {
            let s = format!("{}{}xxxxxxx{}", char::from(a), char::from(b), char::from(a));
            same_str(&s);
        }
    }
    same_str(&"\"".repeat(33));
    same_str(&"\\\n".repeat(17));
}

#[test]
fn non_ascii_and_empty_strings() {
    for s in [
        "",
        "é",
        "日本語のテキスト、八バイトを超える",
        "emoji 🦀🦀🦀 and \u{2028}\u{2029} and \u{feff}",
        "\u{80}\u{ff}\u{100}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}",
        "ÿÿÿÿÿÿÿÿ\"ÿÿÿÿ\u{1}",
    ] {
        same_str(s);
    }
}

#[test]
fn values_of_every_kind() {
    for v in [
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(0.1),
        json!(-0.0),
        json!(1e300),
        json!(5e-324),
        json!(123456789.125),
        json!([]),
        json!({}),
        json!([[], {}, [null]]),
        json!({"": "", "b\"k": {"z": 1, "a": [1.5, "x\ty"]}, "é": false}),
        serde_json::from_str::<Value>(r#"{"n": 1e400}"#).unwrap_or(Value::Null),
    ] {
        same_value(&v);
    }
}

fn text() -> impl Strategy<Value = String> {
    crate::arbitrary_json::text(40)
}

fn value() -> impl Strategy<Value = Value> {
    crate::arbitrary_json::value(40, 4, 64, 8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_values_are_written_as_serde_json_writes_them(v in value()) {
        prop_assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn generated_strings_are_written_as_serde_json_writes_them(s in text()) {
        let mut ours = b"prefix".to_vec();
        write_str(&mut ours, &s);
        let mut theirs = b"prefix".to_vec();
        theirs.extend(serde_json::to_vec(&s).unwrap());
        prop_assert_eq!(ours, theirs);
    }
}
