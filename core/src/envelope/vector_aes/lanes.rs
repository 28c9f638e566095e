//! The sixteen bytes the vector AES works on: one Wasm SIMD `v128`, or, for
//! the native tests, an array.

/// Sixteen bytes and the operations the cipher needs on them, byte-wise.
pub(crate) trait Lanes: Copy {
    fn from_bytes(bytes: &[u8; 16]) -> Self;
    fn to_bytes(self) -> [u8; 16];
    fn splat(byte: u8) -> Self;
    fn xor(self, other: Self) -> Self;
    fn and(self, other: Self) -> Self;
    /// Wrapping byte addition.
    fn add(self, other: Self) -> Self;
    /// Wrapping byte subtraction.
    fn sub(self, other: Self) -> Self;
    /// Each byte shifted right by four.
    fn high_nibbles(self) -> Self;
    /// Saturating unsigned byte addition.
    fn add_saturating(self, other: Self) -> Self;
    /// Unsigned byte minimum.
    fn min(self, other: Self) -> Self;
    /// `table[index]` per byte, 0 where the index is 16 or more (the
    /// semantics of Wasm's `i8x16.swizzle`).
    fn lookup(table: Self, index: Self) -> Self;
    /// FIPS 197 ShiftRows.
    fn shift_rows(self) -> Self;
    /// ShiftRows, then each column's bytes rotated up by one.
    fn shift_rows_rotate1(self) -> Self;
    /// Each column's bytes rotated up by two.
    fn rotate2(self) -> Self;
}

/// Wasm SIMD lanes: one `v128`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd {
    use core::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub(crate) struct Simd(v128);

    /// `i8x16.shuffle` of one vector by a constant permutation.
    macro_rules! permute {
        ($x:expr, $p:expr) => {
            i8x16_shuffle::<
                { $p[0] },
                { $p[1] },
                { $p[2] },
                { $p[3] },
                { $p[4] },
                { $p[5] },
                { $p[6] },
                { $p[7] },
                { $p[8] },
                { $p[9] },
                { $p[10] },
                { $p[11] },
                { $p[12] },
                { $p[13] },
                { $p[14] },
                { $p[15] },
            >($x, $x)
        };
    }

    impl super::Lanes for Simd {
        #[inline(always)]
        fn from_bytes(bytes: &[u8; 16]) -> Self {
            // SAFETY: 16 readable bytes; Wasm loads need no alignment.
            Simd(unsafe { v128_load(bytes.as_ptr().cast()) })
        }
        #[inline(always)]
        fn to_bytes(self) -> [u8; 16] {
            let mut out = [0u8; 16];
            // SAFETY: 16 writable bytes; Wasm stores need no alignment.
            unsafe { v128_store(out.as_mut_ptr().cast(), self.0) };
            out
        }
        #[inline(always)]
        fn splat(byte: u8) -> Self {
            Simd(u8x16_splat(byte))
        }
        #[inline(always)]
        fn xor(self, other: Self) -> Self {
            Simd(v128_xor(self.0, other.0))
        }
        #[inline(always)]
        fn and(self, other: Self) -> Self {
            Simd(v128_and(self.0, other.0))
        }
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            Simd(u8x16_add(self.0, other.0))
        }
        #[inline(always)]
        fn sub(self, other: Self) -> Self {
            Simd(u8x16_sub(self.0, other.0))
        }
        #[inline(always)]
        fn high_nibbles(self) -> Self {
            // A 16-bit shift moves the next byte's low bits into each
            // byte's top: the caller keeps the low nibble only.
            Simd(u16x8_shr(self.0, 4))
        }
        #[inline(always)]
        fn add_saturating(self, other: Self) -> Self {
            Simd(u8x16_add_sat(self.0, other.0))
        }
        #[inline(always)]
        fn min(self, other: Self) -> Self {
            Simd(u8x16_min(self.0, other.0))
        }
        #[inline(always)]
        fn lookup(table: Self, index: Self) -> Self {
            Simd(i8x16_swizzle(table.0, index.0))
        }
        #[inline(always)]
        fn shift_rows(self) -> Self {
            Simd(permute!(self.0, super::super::SHIFT_ROWS))
        }
        #[inline(always)]
        fn shift_rows_rotate1(self) -> Self {
            Simd(permute!(self.0, super::super::SHIFT_ROWS_ROTATE1))
        }
        #[inline(always)]
        fn rotate2(self) -> Self {
            Simd(permute!(self.0, super::super::ROTATE2))
        }
    }
}

/// Portable lanes for the native tests: arrays, indexed by the data.
#[cfg(test)]
pub(crate) mod portable {
    #[derive(Clone, Copy)]
    pub(crate) struct Portable(pub(crate) [u8; 16]);

    impl Portable {
        fn map2(self, other: Self, f: impl Fn(u8, u8) -> u8) -> Self {
            Portable(std::array::from_fn(|i| f(self.0[i], other.0[i])))
        }
        fn permute(self, p: &[usize; 16]) -> Self {
            Portable(std::array::from_fn(|i| self.0[p[i]]))
        }
    }

    impl super::Lanes for Portable {
        fn from_bytes(bytes: &[u8; 16]) -> Self {
            Portable(*bytes)
        }
        fn to_bytes(self) -> [u8; 16] {
            self.0
        }
        fn splat(byte: u8) -> Self {
            Portable([byte; 16])
        }
        fn xor(self, other: Self) -> Self {
            self.map2(other, |a, b| a ^ b)
        }
        fn and(self, other: Self) -> Self {
            self.map2(other, |a, b| a & b)
        }
        fn add(self, other: Self) -> Self {
            self.map2(other, u8::wrapping_add)
        }
        fn sub(self, other: Self) -> Self {
            self.map2(other, u8::wrapping_sub)
        }
        fn high_nibbles(self) -> Self {
            // As the SIMD lanes do it: a 16-bit shift, little-endian pairs.
            let mut out = [0u8; 16];
            for i in (0..16).step_by(2) {
                let v = u16::from_le_bytes([self.0[i], self.0[i + 1]]) >> 4;
                out[i..i + 2].copy_from_slice(&v.to_le_bytes());
            }
            Portable(out)
        }
        fn add_saturating(self, other: Self) -> Self {
            self.map2(other, u8::saturating_add)
        }
        fn min(self, other: Self) -> Self {
            self.map2(other, Ord::min)
        }
        fn lookup(table: Self, index: Self) -> Self {
            Portable(
                index
                    .0
                    .map(|i| table.0.get(i as usize).copied().unwrap_or(0)),
            )
        }
        fn shift_rows(self) -> Self {
            self.permute(&super::super::SHIFT_ROWS)
        }
        fn shift_rows_rotate1(self) -> Self {
            self.permute(&super::super::SHIFT_ROWS_ROTATE1)
        }
        fn rotate2(self) -> Self {
            self.permute(&super::super::ROTATE2)
        }
    }
}
