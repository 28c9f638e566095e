//! base64url without padding (RFC 4648 §5), the record format's text for a
//! sealed value's nonce and ciphertext and for the wrapped data key.
//!
//! Built for Wasm with SIMD, twelve bytes become sixteen characters in one
//! step (the method of W. Muła and D. Lemire, "Faster Base64 Encoding and
//! Decoding Using AVX2 Instructions", ACM TOMS 2018, with shifts in place
//! of the 16-bit high multiply Wasm lacks): each 32-bit lane takes three
//! bytes, shifts and masks put their four 6-bit values in its four bytes,
//! and one lookup by range adds each value's offset to its character. The
//! `base64` crate encodes the rest (fewer than sixteen bytes left), and
//! everything elsewhere: about 10 instructions a byte inside Wasm, against
//! under 2. The ciphertext is public, so a lookup by its bits leaks
//! nothing; this is for speed. The tests compare with the `base64` crate for
//! every length up to several steps and for random bytes, inside Wasmtime
//! too (`scripts/test`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// `bytes` in base64url, without padding.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity((bytes.len() * 4).div_ceil(3));
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let done = simd::encode_steps(bytes, &mut out);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let done = 0;
    // The steps took a multiple of three bytes: the rest encodes alone.
    let rest = &bytes[done..];
    let start = out.len();
    out.resize(start + (rest.len() * 4).div_ceil(3), 0);
    let written = URL_SAFE_NO_PAD
        .encode_slice(rest, &mut out[start..])
        .expect("room for the rest");
    debug_assert_eq!(start + written, out.len());
    String::from_utf8(out).expect("base64 is ASCII")
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    /// What each 6-bit value adds to become its character, by range: the
    /// lookup's index is the value less 51 (saturating), or 13 below 26.
    const OFFSETS: [u8; 16] = {
        let mut t = [0u8; 16];
        t[0] = b'a' - 26; // 26..=51: a-z
        let mut i = 1;
        while i <= 10 {
            t[i] = b'0'.wrapping_sub(52); // 52..=61: 0-9
            i += 1;
        }
        t[11] = b'-'.wrapping_sub(62);
        t[12] = b'_' - 63;
        t[13] = b'A'; // 0..=25: A-Z
        t
    };

    /// Encodes twelve bytes a step while sixteen can be read; returns how
    /// many bytes it took (a multiple of twelve).
    pub(super) fn encode_steps(bytes: &[u8], out: &mut Vec<u8>) -> usize {
        // SAFETY: a 16-byte array; Wasm loads need no alignment.
        let offsets = unsafe { v128_load(OFFSETS.as_ptr().cast()) };
        let mut i = 0;
        while let Some(chunk) = bytes.get(i..i + 16) {
            let chunk: &[u8; 16] = chunk.try_into().expect("sixteen bytes");
            // SAFETY: sixteen readable bytes.
            let v = unsafe { v128_load(chunk.as_ptr().cast()) };
            // Lane k (little-endian): s1 | s0 << 8 | s2 << 16 | s1 << 24, for
            // the bytes s0 s1 s2 at 3k.
            let x = i8x16_shuffle::<1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10>(v, v);
            // Its four 6-bit values, in its four bytes: s0 >> 2, then
            // (s0 & 3) << 4 | s1 >> 4, then (s1 & 15) << 2 | s2 >> 6, then s2 & 63.
            let values = v128_or(
                v128_or(
                    v128_and(u32x4_shr(x, 10), u32x4_splat(0x3f)),
                    v128_and(u32x4_shl(x, 4), u32x4_splat(0x3f00)),
                ),
                v128_or(
                    v128_and(u32x4_shr(x, 6), u32x4_splat(0x3f_0000)),
                    v128_and(u32x4_shl(x, 8), u32x4_splat(0x3f00_0000)),
                ),
            );
            let range = v128_or(
                u8x16_sub_sat(values, u8x16_splat(51)),
                v128_and(i8x16_lt(values, i8x16_splat(26)), u8x16_splat(13)),
            );
            let text = u8x16_add(values, i8x16_swizzle(offsets, range));
            let mut chars = [0u8; 16];
            // SAFETY: sixteen writable bytes.
            unsafe { v128_store(chars.as_mut_ptr().cast(), text) };
            out.extend_from_slice(&chars);
            i += 12;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::encode;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use proptest::prelude::*;

    #[test]
    fn every_length_and_every_character_match_the_base64_crate() {
        // Every 6-bit value in every position of a step.
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 83 + 7) as u8).collect();
        for len in 0..=bytes.len() {
            assert_eq!(
                encode(&bytes[..len]),
                URL_SAFE_NO_PAD.encode(&bytes[..len]),
                "{len} bytes"
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(encode(&all), URL_SAFE_NO_PAD.encode(&all));
        // RFC 4648 §10, in the URL-safe alphabet without padding.
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fooba"), "Zm9vYmE");
        assert_eq!(encode(&[0xfb, 0xff, 0xbf]), "-_-_");
    }

    proptest! {
        #[test]
        fn random_bytes_match_the_base64_crate(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            prop_assert_eq!(encode(&bytes), URL_SAFE_NO_PAD.encode(&bytes));
        }
    }
}
