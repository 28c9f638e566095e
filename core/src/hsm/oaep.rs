//! RSAES-OAEP encryption with SHA-256 (RFC 8017, section 7.1.1; MGF1 with
//! SHA-256, empty label), public key only; and the same exponentiation as
//! the signature verification primitive RSAVP1 (section 5.2.2), with which
//! the sender-token check verifies RS256 tokens.
//!
//! The modular exponentiation is Montgomery multiplication (one pass per
//! limb of one factor that multiplies and reduces), one squaring per
//! exponent bit and one multiplication per set bit (17 for e = 65537). The
//! numbers are held in 27-bit limbs, whose 54-bit products add up in
//! 64-bit sums without a carry between limbs: a pass adds `a[j] * b[i] +
//! n[j] * m` to every sum independently (on Wasm SIMD, two sums per
//! instruction with `i64x2.extmul_*_i32x4_u`, in `mac`), and carries move
//! once per pass and once at the end. With 32-bit limbs each product's
//! carry waited on the one before. R^2 mod n comes from doublings and six
//! Montgomery squarings rather than a long division. The modulus and the
//! exponent are public; the message (which carries the data key) only
//! meets branch-free code: the final subtraction is a masked select.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const H_LEN: usize = 32;

/// Why a key or message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OaepError {
    /// The modulus is even, or not 2048 to 4096 bits long (the sizes
    /// Managed HSM makes).
    #[error("the modulus is even or not 2048 to 4096 bits long")]
    Modulus,
    /// The exponent is even, below 3 or longer than 64 bits.
    #[error("the public exponent is even, below 3 or longer than 64 bits")]
    Exponent,
    /// The message does not fit one block.
    #[error("the message is too long for the key")]
    MessageTooLong,
}

/// Bits per limb: a product of two limbs and another, 2^55 at most, can
/// be added to a 64-bit sum 152 times (a 4096-bit modulus's limbs) with
/// room to spare.
const LIMB_BITS: usize = 27;
const LIMB_MASK: u32 = (1 << LIMB_BITS) - 1;
/// Limbs of the largest modulus (4096 bits: 512 bytes).
const MAX_LIMBS: usize = (8 * 512 + 1usize).div_ceil(LIMB_BITS).next_multiple_of(4);

// A sum takes at most MAX_LIMBS passes' `a[j] * b[i] + n[j] * m` and one
// carry (a sum shifted right by LIMB_BITS): it must stay below 2^64, or
// the multiplication is wrong without a trace.
const _: () = {
    let limb = LIMB_MASK as u128;
    let most = MAX_LIMBS as u128 * 2 * limb * limb + (1u128 << (64 - LIMB_BITS));
    assert!(most < 1u128 << 64);
};

/// An RSA public key prepared for encryption and signature checks.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// Modulus, little-endian 27-bit limbs: enough for 8k + 1 bits (so R =
    /// 2^(27 len) > 2n), rounded up to a multiple of four (the SIMD step).
    n: Vec<u32>,
    /// Public exponent.
    e: u64,
    /// -n^-1 mod 2^27.
    n0inv: u32,
    /// Length of n in bytes.
    k: usize,
    /// Length of n in bits.
    bits: usize,
    /// R^2 mod n when a caller supplied it ([`Self::use_r_squared`]),
    /// else made by each exponentiation.
    rr: Option<Vec<u32>>,
}

impl PublicKey {
    /// Takes the big-endian modulus and exponent (leading zeros allowed).
    pub fn new(n: &[u8], e: &[u8]) -> Result<Self, OaepError> {
        let n = strip(n);
        let e = strip(e);
        let k = n.len();
        let bits = (8 * k).saturating_sub(n.first().map_or(8, |b| b.leading_zeros() as usize));
        if !(2048..=4096).contains(&bits) || n[k - 1] & 1 == 0 {
            return Err(OaepError::Modulus);
        }
        if e.len() > 8 || e.is_empty() {
            return Err(OaepError::Exponent);
        }
        let e = e.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        if e < 3 || e & 1 == 0 {
            return Err(OaepError::Exponent);
        }
        // e < n holds: n has at least 2048 bits, e at most 64.
        // R = 2^(27 len) > 2n, and every k-byte input fits the limbs.
        let len = (8 * k + 1).div_ceil(LIMB_BITS).next_multiple_of(4);
        let n = limbs(n, len);
        let n0inv = neg_inv32(n[0]) & LIMB_MASK;
        Ok(Self {
            n,
            e,
            n0inv,
            k,
            bits,
            rr: None,
        })
    }

    /// R^2 mod n (R = 2^(27 len)), the constant that takes a number into
    /// Montgomery form, as big-endian bytes of the modulus's length. It
    /// depends on n alone and is about a quarter of an exponentiation's
    /// instructions (six Montgomery squarings and some forty doublings),
    /// so a caller that keeps it with the key gives it back through
    /// [`Self::use_r_squared`].
    pub fn r_squared_bytes(&self) -> Vec<u8> {
        let mut sums = vec![0u64; 2 * self.n.len()];
        to_bytes(&self.r_squared(&mut sums), self.k)
    }

    /// Uses a kept R^2 mod n ([`Self::r_squared_bytes`]) for this key's
    /// exponentiations if it is the right one: below n, and taken out of
    /// Montgomery form (one multiplication by 1) it must give R mod n,
    /// made by doublings (5 for a 2048-bit modulus, 61 for 3072, 9 for
    /// 4096). Taking a value out of Montgomery form is one-to-one below
    /// n, so only R^2 mod n itself passes. A wrong one is refused
    /// (`false`) and each exponentiation then makes R^2 itself: with a
    /// wrong constant every result would be wrong, a wrapped data key
    /// among them, and what it sealed could not be opened.
    pub fn use_r_squared(&mut self, be: &[u8]) -> bool {
        let len = self.n.len();
        if be.len() != self.k {
            return false;
        }
        let rr = limbs(be, len);
        // Public values: an ordinary comparison, most significant limb first.
        if rr.iter().rev().cmp(self.n.iter().rev()) != std::cmp::Ordering::Less {
            return false;
        }
        let r = self.power_of_two(LIMB_BITS * len);
        let mut one = vec![0u32; len];
        one[0] = 1;
        let mut out = vec![0u32; len];
        let mut sums = vec![0u64; 2 * len];
        self.mont_mul(&mut out, &rr, &one, &mut sums);
        if out != r {
            return false;
        }
        self.rr = Some(rr);
        true
    }

    /// RSAES-OAEP-ENCRYPT with SHA-256, MGF1-SHA-256 and an empty label;
    /// `seed` is the random octet string of RFC 8017 step 2d.
    pub fn encrypt(&self, msg: &[u8], seed: &[u8; H_LEN]) -> Result<Vec<u8>, OaepError> {
        let k = self.k;
        if msg.len() > k - 2 * H_LEN - 2 {
            return Err(OaepError::MessageTooLong);
        }
        // EM = 0x00 || maskedSeed || maskedDB, DB = lHash || PS || 0x01 || M.
        let mut em = Zeroizing::new(vec![0u8; k]);
        {
            let (seed_part, db) = em[1..].split_at_mut(H_LEN);
            db[..H_LEN].copy_from_slice(&Sha256::digest(b""));
            let one = db.len() - msg.len() - 1;
            db[one] = 1;
            db[one + 1..].copy_from_slice(msg);
            mgf1_xor(db, seed);
            seed_part.copy_from_slice(seed);
            mgf1_xor(seed_part, db);
        }
        // EM < 2^(8(k-1)) <= n: no reduction needed.
        Ok(self.raw(&em))
    }

    /// RSAEP: m^e mod n as k bytes, for a big-endian m < n of at most k
    /// bytes.
    pub fn raw(&self, m: &[u8]) -> Vec<u8> {
        let m = Zeroizing::new(limbs(m, self.n.len()));
        to_bytes(&self.pow_e(&m), self.k)
    }

    /// RSAVP1: s^e mod n as k bytes, for a signature of exactly k bytes;
    /// `None` when it is not below n ("signature representative out of
    /// range").
    pub fn verify_primitive(&self, s: &[u8]) -> Option<Vec<u8>> {
        if s.len() != self.k {
            return None;
        }
        let s = limbs(s, self.n.len());
        // Public values: an ordinary comparison, most significant limb first.
        if s.iter().rev().cmp(self.n.iter().rev()) != std::cmp::Ordering::Less {
            return None;
        }
        Some(to_bytes(&self.pow_e(&s), self.k))
    }

    /// Length of the modulus in bytes.
    pub fn modulus_len(&self) -> usize {
        self.k
    }

    /// m^e mod n, for m < n.
    fn pow_e(&self, m: &[u32]) -> Zeroizing<Vec<u32>> {
        let len = self.n.len();
        // Every intermediate value is secret: wiped on drop.
        let mut sums = Zeroizing::new(vec![0u64; 2 * len]);
        let made;
        let rr = match &self.rr {
            Some(rr) => rr,
            None => {
                made = self.r_squared(&mut sums);
                &made
            }
        };
        let mut base = Zeroizing::new(vec![0u32; len]);
        self.mont_mul(&mut base, m, rr, &mut sums);
        let mut acc = base.clone();
        let mut tmp = Zeroizing::new(vec![0u32; len]);
        let top = 63 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            self.mont_mul(&mut tmp, &acc, &acc, &mut sums);
            if (self.e >> bit) & 1 == 1 {
                self.mont_mul(&mut acc, &tmp, &base, &mut sums);
            } else {
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        // Out of Montgomery form: acc * 1 * R^-1.
        let mut one = vec![0u32; len];
        one[0] = 1;
        let mut out = Zeroizing::new(vec![0u32; len]);
        self.mont_mul(&mut out, &acc, &one, &mut sums);
        out
    }

    /// R^2 mod n, R = 2^E with E = 27 len. In Montgomery form (x R for x)
    /// R^2 stands for 2^E: from 2^(bits - 1) (below n) doublings reach
    /// 2^(E + c) mod n, which stands for 2^c with c = E >> 6; six
    /// Montgomery squarings, each followed by a doubling where E's next bit
    /// is set, take 2^c to 2^E.
    fn r_squared(&self, sums: &mut [u64]) -> Vec<u32> {
        const SQUARINGS: usize = 6;
        let len = self.n.len();
        let e = LIMB_BITS * len;
        let mut x = self.power_of_two(e + (e >> SQUARINGS));
        let mut tmp = vec![0u32; len];
        for bit in (0..SQUARINGS).rev() {
            self.mont_mul(&mut tmp, &x, &x, sums);
            std::mem::swap(&mut x, &mut tmp);
            if (e >> bit) & 1 == 1 {
                self.double(&mut x);
            }
        }
        x
    }

    /// 2^p mod n for p >= bits - 1, by doublings from 2^(bits - 1), which
    /// is below n.
    fn power_of_two(&self, p: usize) -> Vec<u32> {
        let mut x = vec![0u32; self.n.len()];
        x[(self.bits - 1) / LIMB_BITS] = 1 << ((self.bits - 1) % LIMB_BITS);
        for _ in 0..(p - (self.bits - 1)) {
            self.double(&mut x);
        }
        x
    }

    /// x = 2x mod n, for x < n (so 2x < 2n: at most one subtraction).
    fn double(&self, x: &mut [u32]) {
        let mut carry = 0u32;
        for w in x.iter_mut() {
            let v = (*w << 1) | carry;
            *w = v & LIMB_MASK;
            carry = v >> LIMB_BITS;
        }
        self.reduce_once(x, carry);
    }

    /// x = x - n if carry * R + x >= n, without branching on x.
    fn reduce_once(&self, x: &mut [u32], carry: u32) {
        let mut d = Zeroizing::new([0u32; MAX_LIMBS]);
        let d = &mut d[..x.len()];
        let mut borrow = 0u32;
        for ((di, &xi), &ni) in d.iter_mut().zip(x.iter()).zip(self.n.iter()) {
            let t = xi.wrapping_sub(ni).wrapping_sub(borrow);
            *di = t & LIMB_MASK;
            borrow = t >> 31;
        }
        // Keep x only if the difference borrowed past a zero carry.
        let keep_x = (borrow & u32::from(carry == 0)).wrapping_neg();
        for (xi, &di) in x.iter_mut().zip(d.iter()) {
            *xi = (*xi & keep_x) | (di & !keep_x);
        }
    }

    /// out = a * b * R^-1 mod n (a, b < n): Montgomery multiplication, one
    /// pass per limb of b that multiplies and reduces. `sums` holds 2 len
    /// 64-bit sums; pass i adds `a * b[i] + n * m` to `sums[i..i + len]`,
    /// with m chosen so that `sums[i]` becomes a multiple of 2^27, whose
    /// carry then moves to `sums[i + 1]`. The result is `sums[len..]` with
    /// its carries moved, below 2n, and n taken off once if it is not
    /// below n.
    fn mont_mul(&self, out: &mut [u32], a: &[u32], b: &[u32], sums: &mut [u64]) {
        let len = self.n.len();
        let n = &self.n[..len];
        let a = &a[..len];
        let sums = &mut sums[..2 * len];
        sums.fill(0);
        for (i, &bi) in b[..len].iter().enumerate() {
            let low = (sums[i] as u32).wrapping_add(a[0].wrapping_mul(bi));
            let m = low.wrapping_mul(self.n0inv) & LIMB_MASK;
            mac::mac(&mut sums[i..i + len], a, n, bi, m);
            let carry = sums[i] >> LIMB_BITS;
            sums[i + 1] += carry;
        }
        let mut carry = 0u64;
        for (o, &s) in out[..len].iter_mut().zip(&sums[len..]) {
            let v = s + carry;
            *o = v as u32 & LIMB_MASK;
            carry = v >> LIMB_BITS;
        }
        // The result is below 2n < R: the carry is zero.
        self.reduce_once(&mut out[..len], carry as u32);
    }
}

/// The inner step of Montgomery multiplication.
mod mac {
    /// sums[j] += a[j] * b + n[j] * m for every j (all of one length, a
    /// multiple of four; limbs and factors below 2^27): two 64-bit sums an
    /// instruction with Wasm SIMD's widening multiplications, eight sums a
    /// step (one loop back-edge, and one of the runtime's epoch checks, per
    /// eight).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub(super) fn mac(sums: &mut [u64], a: &[u32], n: &[u32], b: u32, m: u32) {
        use core::arch::wasm32::*;
        // Whole steps of four or the last limbs would be left out.
        assert!(sums.len() == a.len() && a.len() == n.len() && a.len().is_multiple_of(4));
        let (b, m) = (u32x4_splat(b), u32x4_splat(m));
        let mut sums8 = sums.chunks_exact_mut(8);
        let (mut a8, mut n8) = (a.chunks_exact(8), n.chunks_exact(8));
        for ((s, a), n) in sums8.by_ref().zip(a8.by_ref()).zip(n8.by_ref()) {
            let s = s.as_mut_ptr().cast::<v128>();
            let (a, n) = (a.as_ptr().cast::<v128>(), n.as_ptr().cast::<v128>());
            // SAFETY: eight sums and eight limbs each, two steps of four.
            unsafe {
                step(s, a, n, b, m);
                step(s.add(2), a.add(1), n.add(1), b, m);
            }
        }
        let (s, a, n) = (sums8.into_remainder(), a8.remainder(), n8.remainder());
        if s.len() == 4 && a.len() == 4 && n.len() == 4 {
            // SAFETY: four sums and four limbs each.
            unsafe {
                step(
                    s.as_mut_ptr().cast(),
                    a.as_ptr().cast(),
                    n.as_ptr().cast(),
                    b,
                    m,
                )
            };
        }
    }

    /// Four sums from four limbs of a and n, with b and m splat.
    ///
    /// # Safety
    /// `a` and `n` point to four limbs (16 bytes), `s` to four sums (32
    /// bytes). Wasm's loads and stores need no alignment.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    #[inline(always)]
    unsafe fn step(
        s: *mut core::arch::wasm32::v128,
        a: *const core::arch::wasm32::v128,
        n: *const core::arch::wasm32::v128,
        b: core::arch::wasm32::v128,
        m: core::arch::wasm32::v128,
    ) {
        use core::arch::wasm32::*;
        // SAFETY: as the caller promises.
        let (a, n) = unsafe { (v128_load(a), v128_load(n)) };
        // The factors with each limb's bit 31 (zero, as limbs are below
        // 2^27) or'ed in: unchanged, but no longer loop-invariant. Factors
        // the optimizer sees as invariant, it widens once before the loop,
        // and the widening multiplications become full 64-bit ones
        // (several instructions each without AVX-512).
        let b = v128_or(b, u32x4_shr(a, 31));
        let m = v128_or(m, u32x4_shr(n, 31));
        let low = u64x2_add(u64x2_extmul_low_u32x4(a, b), u64x2_extmul_low_u32x4(n, m));
        let high = u64x2_add(u64x2_extmul_high_u32x4(a, b), u64x2_extmul_high_u32x4(n, m));
        // SAFETY: as the caller promises.
        unsafe {
            v128_store(s, u64x2_add(v128_load(s), low));
            v128_store(s.add(1), u64x2_add(v128_load(s.add(1)), high));
        }
    }

    /// The same, one sum at a time: the native build's and the reference
    /// of the Wasm tests.
    #[cfg_attr(
        all(target_arch = "wasm32", target_feature = "simd128"),
        allow(dead_code)
    )]
    pub(super) fn portable(sums: &mut [u64], a: &[u32], n: &[u32], b: u32, m: u32) {
        for ((s, &a), &n) in sums.iter_mut().zip(a).zip(n) {
            *s += u64::from(a) * u64::from(b) + u64::from(n) * u64::from(m);
        }
    }

    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    pub(super) use self::portable as mac;
}

fn strip(b: &[u8]) -> &[u8] {
    let z = b.iter().take_while(|&&x| x == 0).count();
    &b[z..]
}

/// Big-endian bytes to `len` little-endian 27-bit limbs.
fn limbs(be: &[u8], len: usize) -> Vec<u32> {
    let mut out = vec![0u32; len];
    let (mut acc, mut held, mut i) = (0u64, 0usize, 0usize);
    for &b in be.iter().rev() {
        acc |= u64::from(b) << held;
        held += 8;
        if held >= LIMB_BITS {
            out[i] = acc as u32 & LIMB_MASK;
            acc >>= LIMB_BITS;
            held -= LIMB_BITS;
            i += 1;
        }
    }
    if held > 0 {
        out[i] = acc as u32;
    }
    out
}

/// Little-endian 27-bit limbs to `k` big-endian bytes.
fn to_bytes(x: &[u32], k: usize) -> Vec<u8> {
    let mut out = vec![0u8; k];
    let (mut acc, mut held) = (0u64, 0usize);
    let mut limbs = x.iter();
    for o in out.iter_mut().rev() {
        if held < 8 {
            acc |= u64::from(limbs.next().copied().unwrap_or(0)) << held;
            held += LIMB_BITS;
        }
        *o = acc as u8;
        acc >>= 8;
        held -= 8;
    }
    out
}

/// -x^-1 mod 2^32 for odd x (Newton's iteration: 5 steps from 1 bit).
fn neg_inv32(x: u32) -> u32 {
    let mut y = 1u32;
    for _ in 0..5 {
        y = y.wrapping_mul(2u32.wrapping_sub(x.wrapping_mul(y)));
    }
    y.wrapping_neg()
}

/// out ^= MGF1-SHA-256(seed, out.len()).
fn mgf1_xor(out: &mut [u8], seed: &[u8]) {
    for (counter, chunk) in out.chunks_mut(H_LEN).enumerate() {
        let mut h = Sha256::new();
        h.update(seed);
        h.update((counter as u32).to_be_bytes());
        for (o, m) in chunk.iter_mut().zip(h.finalize()) {
            *o ^= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mac;
    use proptest::prelude::*;

    proptest! {
        /// The Montgomery step (SIMD on Wasm) against one sum at a time,
        /// for every length class of the eight-limb steps and limbs and
        /// factors up to the largest.
        #[test]
        fn the_montgomery_step_is_the_portable_one(
            quads in 1usize..40,
            seed in any::<u64>(),
            top in any::<bool>(),
        ) {
            let len = 4 * quads;
            let mut x = seed | 1;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if top { super::LIMB_MASK } else { x as u32 & super::LIMB_MASK }
            };
            let a: Vec<u32> = (0..len).map(|_| next()).collect();
            let n: Vec<u32> = (0..len).map(|_| next()).collect();
            let sums: Vec<u64> = (0..len).map(|_| u64::from(next()) << 20).collect();
            let (b, m) = (next(), next());
            let mut simd = sums.clone();
            let mut portable = sums;
            mac::mac(&mut simd, &a, &n, b, m);
            mac::portable(&mut portable, &a, &n, b, m);
            prop_assert_eq!(simd, portable);
        }
    }
}
