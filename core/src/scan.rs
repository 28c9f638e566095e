//! Byte searches over long text: where the component scans a body's strings
//! before it is parsed ([`crate::events::shape`]) and strings it writes as
//! JSON ([`crate::compact_json`]). Inside Wasm a byte-by-byte loop pays an
//! epoch check on every byte; here the bytes are tested sixteen at a time
//! with Wasm SIMD compares (built for Wasm with SIMD), and eight at a time
//! with word arithmetic ("SWAR", SIMD within a register) otherwise and for
//! text of 8 to 15 bytes. The last, partial, group is tested as the whole
//! group that ends with the text, overlapping bytes already found clean, so
//! only text under 8 bytes is looked at a byte at a time.

/// A set of bytes to look for.
pub(crate) trait ByteSet {
    /// Whether `b` is in the set.
    fn has(b: u8) -> bool;
    /// Flags the bytes of the little-endian word `w` that are in the set: a
    /// byte's high bit, set in each such byte and possibly in bytes above
    /// (more significant than) one, never in a byte below the first: the
    /// lowest flag always marks a byte of the set.
    fn word(w: u64) -> u64;
    /// 0xff in each lane whose byte is in the set, 0 in the others.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    fn lanes(v: core::arch::wasm32::v128) -> core::arch::wasm32::v128;
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags each byte of `w` that is zero (as [`ByteSet::word`] describes).
#[inline]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// Flags the bytes of `w` equal to `b`.
#[inline]
fn bytes_equal(w: u64, b: u8) -> u64 {
    zero_bytes(w ^ (ONES * u64::from(b)))
}

/// Flags the bytes of `w` below 0x20 (bytes of 0x80 and above never).
#[inline]
fn control_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES * 0x20) & !w & HIGHS
}

/// `"` and `\`: what ends or escapes inside a JSON string.
pub(crate) struct QuoteOrBackslash;

impl ByteSet for QuoteOrBackslash {
    #[inline]
    fn has(b: u8) -> bool {
        b == b'"' || b == b'\\'
    }
    #[inline]
    fn word(w: u64) -> u64 {
        bytes_equal(w, b'"') | bytes_equal(w, b'\\')
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    #[inline]
    fn lanes(v: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
        use core::arch::wasm32::*;
        v128_or(
            i8x16_eq(v, u8x16_splat(b'"')),
            i8x16_eq(v, u8x16_splat(b'\\')),
        )
    }
}

/// What a JSON string must escape: `"`, `\` and bytes below 0x20.
pub(crate) struct JsonEscape;

impl ByteSet for JsonEscape {
    #[inline]
    fn has(b: u8) -> bool {
        b < 0x20 || QuoteOrBackslash::has(b)
    }
    #[inline]
    fn word(w: u64) -> u64 {
        control_bytes(w) | QuoteOrBackslash::word(w)
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    #[inline]
    fn lanes(v: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
        use core::arch::wasm32::*;
        v128_or(u8x16_lt(v, u8x16_splat(0x20)), QuoteOrBackslash::lanes(v))
    }
}

/// The index of the first byte at or after `from` that is in `S`.
#[inline]
pub(crate) fn find<S: ByteSet>(bytes: &[u8], from: usize) -> Option<usize> {
    let text = bytes.get(from..)?;
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if text.len() >= 16 {
        return find_lanes::<S>(text).map(|i| from + i);
    }
    if text.len() >= 8 {
        return find_words::<S>(text).map(|i| from + i);
    }
    text.iter().position(|&b| S::has(b)).map(|i| from + i)
}

/// [`find`] in text of 8 bytes or more, a word at a time.
#[inline]
fn find_words<S: ByteSet>(text: &[u8]) -> Option<usize> {
    let word = |at: usize| {
        S::word(u64::from_le_bytes(
            text[at..at + 8].try_into().expect("eight bytes"),
        ))
    };
    let mut i = 0;
    while i + 8 <= text.len() {
        let f = word(i);
        if f != 0 {
            // Little-endian: the lowest flag is the first such byte.
            return Some(i + (f.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i < text.len() {
        // The last word ends with the text; its first `i - last` bytes were
        // found clean, so its lowest flag past them is exact.
        let last = text.len() - 8;
        let f = word(last) >> (8 * (i - last));
        if f != 0 {
            return Some(i + (f.trailing_zeros() / 8) as usize);
        }
    }
    None
}

/// [`find`] in text of 16 bytes or more, sixteen at a time.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline]
fn find_lanes<S: ByteSet>(text: &[u8]) -> Option<usize> {
    use core::arch::wasm32::*;
    let mask = |at: usize| {
        let chunk: &[u8; 16] = text[at..at + 16].try_into().expect("sixteen bytes");
        // SAFETY: sixteen readable bytes; Wasm loads need no alignment.
        let v = unsafe { v128_load(chunk.as_ptr().cast()) };
        u32::from(i8x16_bitmask(S::lanes(v)))
    };
    let mut i = 0;
    while i + 16 <= text.len() {
        let m = mask(i);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 16;
    }
    if i < text.len() {
        let last = text.len() - 16;
        let m = mask(last) >> (i - last);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(bytes: &[u8], from: usize, is: impl Fn(u8) -> bool) -> Option<usize> {
        bytes
            .get(from..)
            .and_then(|rest| rest.iter().position(|&b| is(b)).map(|p| from + p))
    }

    proptest! {
        #[test]
        fn finds_what_a_byte_by_byte_search_finds(
            bytes in prop::collection::vec(prop::sample::select(vec![0u8, 1, 0x1f, 0x20, b'"', b'\\', b'a', 0x7f, 0x80, 0xff]), 0..70),
            from in 0usize..74,
        ) {
            let quote_or_backslash = |b: u8| b == b'"' || b == b'\\';
            let escape = |b: u8| b < 0x20 || quote_or_backslash(b);
            prop_assert_eq!(find::<QuoteOrBackslash>(&bytes, from), reference(&bytes, from, quote_or_backslash));
            prop_assert_eq!(find::<JsonEscape>(&bytes, from), reference(&bytes, from, escape));
        }

        /// Long clean runs with one byte to find (or none), at every
        /// distance from the groups' edges and the overlapping last group.
        #[test]
        fn finds_a_lone_byte_in_clean_text(
            len in 0usize..80,
            at in 0usize..80,
            byte in prop::sample::select(vec![0u8, 0x1f, b'"', b'\\']),
            from in 0usize..80,
        ) {
            let mut bytes = vec![b'x'; len];
            if at < len {
                bytes[at] = byte;
            }
            prop_assert_eq!(find::<JsonEscape>(&bytes, from), reference(&bytes, from, |b| b < 0x20 || b == b'"' || b == b'\\'));
            prop_assert_eq!(find::<QuoteOrBackslash>(&bytes, from), reference(&bytes, from, |b| b == b'"' || b == b'\\'));
        }
    }
}
