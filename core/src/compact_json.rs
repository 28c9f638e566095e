//! Compact JSON text of a `serde_json::Value`, byte for byte what
//! `serde_json::to_vec` writes, faster on long strings.
//!
//! Same member order (the map's own), same numbers (written by serde_json
//! itself), same escapes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, every
//! other control character below U+0020 as `\u00XX` in lowercase hex, and
//! nothing else (not U+007F, not non-ASCII). What differs is how a string's
//! bytes are scanned: serde_json looks up every byte in a table; here sixteen
//! bytes at a time (Wasm SIMD) or eight (word arithmetic) are tested for the
//! three classes that need an escape (below 0x20, `"`, `\`; the `scan` module),
//! and each clean run between two escapes is copied with one
//! `extend_from_slice`. A delivery's
//! documents are mostly long clean strings (the sealed fields' base64, the
//! events' own text), where this is several times fewer instructions.
//!
//! Used where a delivery serializes: each document (the write requests'
//! bodies) and the canonical form of each protected value before it is
//! sealed; and for every log line ([`crate::logline`]). The record format does not change by a byte: the tests compare
//! with serde_json on every escape class and chunk offset and on generated
//! values, and the `compact_json` fuzz target does so on arbitrary input.

use serde_json::Value;

/// `serde_json::to_vec(value)`, byte for byte.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, value);
    out
}

/// Appends the compact JSON text of `value` to `out`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Numbers are rare and short: serde_json writes them, so their
        // text is its own (integers, and floats in its shortest form).
        Value::Number(n) => serde_json::to_writer(&mut *out, n).expect("writing to a Vec succeeds"),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Appends `s` as a JSON string (quoted and escaped as serde_json does).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    match next_escape(bytes, 0) {
        // Most strings (every member name of a document, the base64 of
        // sealed values) need no escape: one copy between the quotes.
        None => {
            out.reserve(bytes.len() + 2);
            out.push(b'"');
            out.extend_from_slice(bytes);
            out.push(b'"');
        }
        Some(first) => write_escaped(out, bytes, first),
    }
}

/// [`write_str`] for a string whose first byte to escape is at `first`.
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8], first: usize) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut clean = 0;
    let mut at = Some(first);
    while let Some(i) = at {
        out.extend_from_slice(&bytes[clean..i]);
        write_escape(out, bytes[i]);
        clean = i + 1;
        at = next_escape(bytes, clean);
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

/// The index of the first byte at or after `from` that needs an escape,
/// found sixteen or eight bytes at a time ([`crate::scan`]).
#[inline]
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    crate::scan::find::<crate::scan::JsonEscape>(bytes, from)
}

fn write_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        c => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(c >> 4)],
            HEX[usize::from(c & 0xf)],
        ]),
    }
}

#[cfg(test)]
mod tests;
