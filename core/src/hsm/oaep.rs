//! RSAES-OAEP encryption with SHA-256 (RFC 8017, section 7.1.1; MGF1 with
//! SHA-256, empty label), public key only; and the same exponentiation as
//! the signature verification primitive RSAVP1 (section 5.2.2), with which
//! the sender-token check verifies RS256 tokens.
//!
//! The modular exponentiation works on 32-bit limbs with 64-bit products,
//! which WebAssembly has as single instructions: Montgomery multiplication
//! (FIOS), one squaring per exponent bit and one multiplication per set bit
//! (17 for e = 65537), and R^2 mod n from a few doublings and five
//! Montgomery squarings rather than a long division. The modulus and the
//! exponent are public; the message (which carries the data key) only meets
//! branch-free code: the multiplication's final subtraction is a masked
//! select.

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

/// An RSA public key prepared for encryption and signature checks.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// Modulus, little-endian 32-bit limbs, top limb non-zero.
    n: Vec<u32>,
    /// Public exponent.
    e: u64,
    /// -n^-1 mod 2^32.
    n0inv: u32,
    /// Length of n in bytes.
    k: usize,
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
        let n = limbs(n, k.div_ceil(4));
        let n0inv = neg_inv32(n[0]);
        Ok(Self { n, e, n0inv, k })
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
    fn pow_e(&self, m: &[u32]) -> Vec<u32> {
        let len = self.n.len();
        let rr = self.r_squared();
        // Every intermediate value is secret: wiped on drop.
        let mut scratch = Zeroizing::new(vec![0u32; len + 2]);
        let mut base = Zeroizing::new(vec![0u32; len]);
        self.mont_mul(&mut base, m, &rr, &mut scratch);
        let mut acc = base.clone();
        let mut tmp = Zeroizing::new(vec![0u32; len]);
        let top = 63 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            self.mont_mul(&mut tmp, &acc, &acc, &mut scratch);
            if (self.e >> bit) & 1 == 1 {
                self.mont_mul(&mut acc, &tmp, &base, &mut scratch);
            } else {
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        // Out of Montgomery form: acc * 1 * R^-1.
        let mut one = vec![0u32; len];
        one[0] = 1;
        let mut out = vec![0u32; len];
        self.mont_mul(&mut out, &acc, &one, &mut scratch);
        out
    }

    /// R^2 mod n, R = 2^(32 len): 2^(b-1) (b = bits of n, so below n)
    /// doubled up to R * 2^len mod n, then squared five times in Montgomery
    /// form (each squaring doubles the power of two beyond R; len * 2^5 = 32 len).
    fn r_squared(&self) -> Vec<u32> {
        let len = self.n.len();
        let bits = 32 * len - self.n[len - 1].leading_zeros() as usize;
        let mut x = vec![0u32; len];
        x[(bits - 1) / 32] = 1 << ((bits - 1) % 32);
        for _ in 0..(32 * len + len - (bits - 1)) {
            // x = 2x mod n (x < n, so 2x < 2n: at most one subtraction).
            let mut carry = 0u32;
            for w in x.iter_mut() {
                let v = *w;
                *w = (v << 1) | carry;
                carry = v >> 31;
            }
            self.reduce_once(&mut x, carry);
        }
        let mut scratch = vec![0u32; len + 2];
        let mut tmp = vec![0u32; len];
        for _ in 0..5 {
            self.mont_mul(&mut tmp, &x, &x, &mut scratch);
            std::mem::swap(&mut x, &mut tmp);
        }
        x
    }

    /// x = x - n if (carry, x) >= n, without branching on x.
    fn reduce_once(&self, x: &mut [u32], carry: u32) {
        let mut d = [0u32; 128];
        let d = &mut d[..x.len()];
        let mut borrow = 0u64;
        for ((di, &xi), &ni) in d.iter_mut().zip(x.iter()).zip(self.n.iter()) {
            let t = u64::from(xi)
                .wrapping_sub(u64::from(ni))
                .wrapping_sub(borrow);
            *di = t as u32;
            borrow = t >> 63;
        }
        // Keep the difference unless it borrowed past the carry limb.
        let keep_x = ((borrow as u32) & !carry & 1).wrapping_neg();
        for (xi, &di) in x.iter_mut().zip(d.iter()) {
            *xi = (*xi & keep_x) | (di & !keep_x);
        }
    }

    /// out = a * b * R^-1 mod n (a, b < n): Montgomery multiplication,
    /// finely integrated operand scanning (one pass per limb of b that
    /// multiplies and reduces). `t` holds len + 2 limbs: the running sum
    /// from `t[1]`, shifted down by one limb per pass, and `t[0]` the limb
    /// each pass shifts out, zero by the choice of `m`.
    fn mont_mul(&self, out: &mut [u32], a: &[u32], b: &[u32], t: &mut [u32]) {
        let len = self.n.len();
        let n = &self.n[..len];
        let a = &a[..len];
        let b = &b[..len];
        let t = &mut t[..len + 2];
        t.iter_mut().for_each(|w| *w = 0);
        for &bi in b {
            let bi = u64::from(bi);
            let m = u64::from(
                (t[1].wrapping_add(a[0].wrapping_mul(bi as u32))).wrapping_mul(self.n0inv),
            );
            let (mut c1, mut c2) = (0u64, 0u64);
            // Sixteen limbs per step, on fixed-size windows: no bounds
            // check inside, and one loop back-edge (so one of the runtime's
            // epoch checks: Spin interrupts by epoch) per sixteen limbs
            // instead of per limb; a 2048-, 3072- or 4096-bit modulus is a
            // whole number of steps.
            let mut j = 0;
            while j + 16 <= len {
                let tw: &mut [u32; 17] = (&mut t[j..j + 17]).try_into().expect("17 limbs");
                let aw: &[u32; 16] = a[j..j + 16].try_into().expect("16 limbs");
                let nw: &[u32; 16] = n[j..j + 16].try_into().expect("16 limbs");
                for i in 0..16 {
                    let s = u64::from(tw[i + 1]) + u64::from(aw[i]) * bi + c1;
                    c1 = s >> 32;
                    let s = u64::from(s as u32) + m * u64::from(nw[i]) + c2;
                    c2 = s >> 32;
                    tw[i] = s as u32;
                }
                j += 16;
            }
            for j in j..len {
                let s = u64::from(t[j + 1]) + u64::from(a[j]) * bi + c1;
                c1 = s >> 32;
                let s = u64::from(s as u32) + m * u64::from(n[j]) + c2;
                c2 = s >> 32;
                t[j] = s as u32;
            }
            let s = u64::from(t[len + 1]) + c1 + c2;
            t[len] = s as u32;
            t[len + 1] = (s >> 32) as u32;
        }
        out[..len].copy_from_slice(&t[1..=len]);
        self.reduce_once(&mut out[..len], t[len + 1]);
    }
}

fn strip(b: &[u8]) -> &[u8] {
    let z = b.iter().take_while(|&&x| x == 0).count();
    &b[z..]
}

/// Big-endian bytes to `len` little-endian limbs.
fn limbs(be: &[u8], len: usize) -> Vec<u32> {
    let mut out = vec![0u32; len];
    for (i, &b) in be.iter().rev().enumerate() {
        out[i / 4] |= u32::from(b) << (8 * (i % 4));
    }
    out
}

/// Little-endian limbs to `k` big-endian bytes.
fn to_bytes(x: &[u32], k: usize) -> Vec<u8> {
    (0..k)
        .rev()
        .map(|i| (x[i / 4] >> (8 * (i % 4))) as u8)
        .collect()
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
