//! Byte searches eight bytes at a time: each 64-bit word of the input is
//! tested for the bytes sought with word arithmetic ("SWAR", SIMD within a
//! register), so a long run of other bytes costs a few instructions per
//! eight. Inside Wasm a byte-by-byte loop pays an epoch check on every
//! byte as well. Used where the component scans long text: a body's
//! strings before it is parsed ([`crate::events::shape`]) and strings
//! written as JSON ([`crate::compact_json`]).

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A byte's high bit set in each byte of `w` that is zero, and possibly in
/// bytes above (more significant than) such a byte, never in a byte below
/// the first zero byte: the lowest set bit always marks a zero byte.
#[inline]
pub(crate) fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// Flags the bytes of `w` equal to `b` (the lowest flag exact, as in
/// [`zero_bytes`]).
#[inline]
pub(crate) fn bytes_equal(w: u64, b: u8) -> u64 {
    zero_bytes(w ^ (ONES * u64::from(b)))
}

/// Flags the bytes of `w` below 0x20 (the lowest flag exact; bytes of 0x80
/// and above are never flagged).
#[inline]
pub(crate) fn control_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES * 0x20) & !w & HIGHS
}

/// The index of the first byte at or after `from` that `is` holds for:
/// `flags` marks such bytes in a little-endian word, its lowest flag exact.
#[inline]
pub(crate) fn find(
    bytes: &[u8],
    from: usize,
    flags: impl Fn(u64) -> u64,
    is: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let f = flags(w);
        if f != 0 {
            // Little-endian: the lowest flag is the first such byte.
            let at = i + (f.trailing_zeros() / 8) as usize;
            debug_assert!(is(bytes[at]));
            return Some(at);
        }
        i += 8;
    }
    bytes.get(i..)?.iter().position(|&b| is(b)).map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn finds_what_a_byte_by_byte_search_finds(
            bytes in prop::collection::vec(prop::sample::select(vec![0u8, 1, 0x1f, 0x20, b'"', b'\\', b'a', 0x7f, 0x80, 0xff]), 0..40),
            from in 0usize..44,
        ) {
            let quote_or_backslash = |b: u8| b == b'"' || b == b'\\';
            let escape = |b: u8| b < 0x20 || quote_or_backslash(b);
            let reference = |is: &dyn Fn(u8) -> bool| {
                bytes.get(from..).and_then(|rest| rest.iter().position(|&b| is(b)).map(|p| from + p))
            };
            prop_assert_eq!(
                find(&bytes, from, |w| bytes_equal(w, b'"') | bytes_equal(w, b'\\'), quote_or_backslash),
                reference(&quote_or_backslash)
            );
            prop_assert_eq!(
                find(&bytes, from, |w| control_bytes(w) | bytes_equal(w, b'"') | bytes_equal(w, b'\\'), escape),
                reference(&escape)
            );
        }
    }
}
