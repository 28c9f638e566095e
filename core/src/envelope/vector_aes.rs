//! AES-256 encryption (FIPS 197) on sixteen-byte vectors, for Wasm SIMD.
//!
//! Why: inside Wasm the `aes` crate runs its bitsliced software (`fixslice`,
//! four blocks a call, 8 × 64-bit words a state), about 3,100 machine
//! instructions a block as Wasmtime compiles it: a third of a sealed
//! delivery's instructions (docs/benchmarks.md). Wasm SIMD has a byte
//! permute with a variable index, `i8x16.swizzle` (`pshufb` on x86-64,
//! `tbl` on AArch64): a lookup in a 16-entry table held in a register, which
//! takes the same time whatever the index. The S-box is then computed from
//! 4-bit lookups in a tower field, the approach of M. Hamburg, "Accelerating
//! AES with Vector Permute Instructions" (CHES 2009), here kept in the
//! standard basis with log and exp tables so that the round keys, ShiftRows
//! and MixColumns are FIPS 197's own:
//!
//! - a byte is mapped linearly onto GF((2^4)^2) = GF(2^4)[Y]/(Y² + Y + λ),
//!   x ↦ aY + b (two lookups per nibble of the four-bit halves);
//! - (aY + b)⁻¹ = (aΔ⁻¹)Y + (a + b)Δ⁻¹ with Δ = λa² + ab + b², every product
//!   of two nibbles taken as exp(log u + log v), and 0 carried by a log
//!   (0xf0) that sends every sum it is in out of the exp table's range,
//!   where a permute answers 0;
//! - the inverse mapped back and the S-box's affine map applied, one linear
//!   map and a constant: two lookups.
//!
//! Each round's lookups are a chain of about fifteen dependent steps, so
//! blocks are encrypted four side by side (one block alone took as long
//! per event as the bitsliced code it replaces, in a third of its
//! instructions; docs/benchmarks.md).
//!
//! Every table is computed at compile time from those definitions
//! ([`Tables`]); the tests hold the S-box to FIPS 197's for every byte and
//! whole encryptions to the `aes` crate's and to FIPS 197's example, on the
//! portable lanes natively and on Wasm SIMD inside Wasmtime
//! (`scripts/test`). Nothing branches on, or indexes memory with, the key or
//! the data: on Wasm every lookup is a register permute. The portable lanes
//! index arrays and exist for the native tests only.

use zeroize::Zeroize;

/// A permutation of the state's sixteen bytes: byte `r + 4c` (row `r`,
/// column `c`) takes the byte at the index `$at` gives.
macro_rules! permutation {
    (|$r:ident, $c:ident| $at:expr) => {{
        let mut p = [0; 16];
        let mut i = 0;
        while i < 16 {
            let ($r, $c) = (i % 4, i / 4);
            p[i] = $at;
            i += 1;
        }
        p
    }};
}

/// The state is column-major (FIPS 197 §3.4): byte `r + 4c` is row `r`,
/// column `c`. ShiftRows: row `r` moves left by `r`.
pub(crate) const SHIFT_ROWS: [usize; 16] = permutation!(|r, c| r + 4 * ((c + r) % 4));

/// ShiftRows, then row `r` of a column takes row `r + 1`'s byte.
pub(crate) const SHIFT_ROWS_ROTATE1: [usize; 16] =
    permutation!(|r, c| SHIFT_ROWS[(r + 1) % 4 + 4 * c]);

/// Row `r` of a column takes row `r + 2`'s byte.
pub(crate) const ROTATE2: [usize; 16] = permutation!(|r, c| (r + 2) % 4 + 4 * c);

/// GF(2^4) with the polynomial x⁴ + x + 1, whose x (2) generates its
/// fifteen non-zero elements.
const fn gf16_mul(a: u8, b: u8) -> u8 {
    let (mut a, mut b, mut p) = (a, b, 0u8);
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & 0x10 != 0 {
            a ^= 0x13;
        }
    }
    p
}

/// 2^k in GF(2^4).
const fn gf16_exp(k: usize) -> u8 {
    let mut v = 1;
    let mut i = 0;
    while i < k % 15 {
        v = gf16_mul(v, 2);
        i += 1;
    }
    v
}

/// The log of 0: a sum with it saturates at 0xf0 or more, and stays 0xe1
/// or more after [`exp`]'s reduction, out of the exp table's range.
const LOG_ZERO: u8 = 0xf0;

/// log₂ of a non-zero nibble; [`LOG_ZERO`] for 0.
const fn gf16_log(v: u8) -> u8 {
    if v == 0 {
        return LOG_ZERO;
    }
    let mut k = 0;
    while gf16_exp(k) != v {
        k += 1;
    }
    k as u8
}

/// The smallest λ for which Y² + Y + λ has no root in GF(2^4), so that
/// GF(2^4)[Y]/(Y² + Y + λ) is a field of 256 elements.
const LAMBDA: u8 = {
    let mut l = 1;
    loop {
        let mut t = 0;
        let mut root = false;
        while t < 16 {
            if gf16_mul(t, t) ^ t == l {
                root = true;
            }
            t += 1;
        }
        if !root {
            break l;
        }
        l += 1;
    }
};

/// Product in the tower field; an element aY + b is the byte `a << 4 | b`.
/// (aY + b)(cY + d) = (ac + ad + bc)Y + (λac + bd), since Y² = Y + λ.
const fn tower_mul(x: u8, y: u8) -> u8 {
    let (a, b, c, d) = (x >> 4, x & 15, y >> 4, y & 15);
    let ac = gf16_mul(a, c);
    let hi = ac ^ gf16_mul(a, d) ^ gf16_mul(b, c);
    let lo = gf16_mul(ac, LAMBDA) ^ gf16_mul(b, d);
    hi << 4 | lo
}

/// The images of the AES field's basis x⁰ … x⁷ (GF(2^8) with the polynomial
/// x⁸ + x⁴ + x³ + x + 1, FIPS 197 §4): the powers of a root β of that
/// polynomial in the tower field, so the map is a field isomorphism.
const TO_TOWER_BASIS: [u8; 8] = {
    let mut beta = 2u8;
    loop {
        let mut pow = [1u8; 9];
        let mut i = 1;
        while i < 9 {
            pow[i] = tower_mul(pow[i - 1], beta);
            i += 1;
        }
        if pow[8] ^ pow[4] ^ pow[3] ^ pow[1] ^ pow[0] == 0 {
            let mut basis = [0; 8];
            let mut j = 0;
            while j < 8 {
                basis[j] = pow[j];
                j += 1;
            }
            break basis;
        }
        beta += 1;
    }
};

const fn to_tower(x: u8) -> u8 {
    let mut t = 0;
    let mut i = 0;
    while i < 8 {
        if x >> i & 1 != 0 {
            t ^= TO_TOWER_BASIS[i];
        }
        i += 1;
    }
    t
}

/// The inverse of [`to_tower`], as a table.
const FROM_TOWER: [u8; 256] = {
    let mut inv = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        inv[to_tower(x as u8) as usize] = x as u8;
        x += 1;
    }
    inv
};

/// The linear part of the S-box's affine map (FIPS 197 §5.1.1): b ⊕ (b ⋘ 1)
/// ⊕ (b ⋘ 2) ⊕ (b ⋘ 3) ⊕ (b ⋘ 4); its constant is 0x63.
const fn affine_linear(b: u8) -> u8 {
    b ^ b.rotate_left(1) ^ b.rotate_left(2) ^ b.rotate_left(3) ^ b.rotate_left(4)
}

/// λa² + b² of a tower element aY + b: linear over GF(2), as squaring is in
/// a field of characteristic 2.
const fn lambda_a2_b2(t: u8) -> u8 {
    let (a, b) = (t >> 4, t & 15);
    gf16_mul(LAMBDA, gf16_mul(a, a)) ^ gf16_mul(b, b)
}

/// The sixteen-entry tables of the S-box, each indexed by a nibble.
struct Tables {
    /// A byte's tower element aY + b, from its low nibble and from its high
    /// nibble (the map is linear: the two are XORed).
    tower_from_low: [u8; 16],
    tower_from_high: [u8; 16],
    /// λa² + b² of that element, likewise.
    q_from_low: [u8; 16],
    q_from_high: [u8; 16],
    /// log₂ in GF(2^4), [`LOG_ZERO`] for 0.
    log: [u8; 16],
    /// log₂ of the inverse, [`LOG_ZERO`] for 0.
    log_inverse: [u8; 16],
    /// 2^k for k in 0..15 (entry 15 is never looked up).
    exp: [u8; 16],
    /// The S-box's output from the inverse's high nibble (with the affine
    /// constant) and from its low nibble.
    out_from_high: [u8; 16],
    out_from_low: [u8; 16],
    /// What xtime adds, from a byte's high nibble: 0x1b when its top bit
    /// is set.
    xtime_reduce: [u8; 16],
}

const TABLES: Tables = {
    let mut t = Tables {
        tower_from_low: [0; 16],
        tower_from_high: [0; 16],
        q_from_low: [0; 16],
        q_from_high: [0; 16],
        log: [0; 16],
        log_inverse: [0; 16],
        exp: [0; 16],
        out_from_high: [0; 16],
        out_from_low: [0; 16],
        xtime_reduce: [0; 16],
    };
    let mut n = 0;
    while n < 16 {
        let v = n as u8;
        t.tower_from_low[n] = to_tower(v);
        t.tower_from_high[n] = to_tower(v << 4);
        t.q_from_low[n] = lambda_a2_b2(to_tower(v));
        t.q_from_high[n] = lambda_a2_b2(to_tower(v << 4));
        t.log[n] = gf16_log(v);
        t.log_inverse[n] = if v == 0 {
            LOG_ZERO
        } else {
            ((15 - gf16_log(v) as usize) % 15) as u8
        };
        t.exp[n] = if n < 15 { gf16_exp(n) } else { 0 };
        t.out_from_high[n] = affine_linear(FROM_TOWER[(v << 4) as usize]) ^ 0x63;
        t.out_from_low[n] = affine_linear(FROM_TOWER[v as usize]);
        t.xtime_reduce[n] = if n >= 8 { 0x1b } else { 0 };
        n += 1;
    }
    t
};

#[inline(always)]
fn look<L: Lanes>(table: &[u8; 16], index: L) -> L {
    L::lookup(L::from_bytes(table), index)
}

/// 2^(u + v) from log u and log v: the saturated sum s (0 to 28, or 0xf0
/// and more with a log of 0) less 15 when that is smaller (s - 15 wraps
/// above s when s is under 15), looked up.
#[inline(always)]
fn exp<L: Lanes>(log_u: L, log_v: L) -> L {
    let s = log_u.add_saturating(log_v);
    look(&TABLES.exp, s.min(s.sub(L::splat(15))))
}

/// The S-box on every byte.
#[inline(always)]
pub(crate) fn sub_bytes<L: Lanes>(x: L) -> L {
    let t = &TABLES;
    let nibble = L::splat(0x0f);
    let (low, high) = (x.and(nibble), x.high_nibbles().and(nibble));
    let tower = look(&t.tower_from_low, low).xor(look(&t.tower_from_high, high));
    let (a, b) = (tower.high_nibbles().and(nibble), tower.and(nibble));
    let log_a = look(&t.log, a);
    // Δ = λa² + ab + b², then log(Δ⁻¹).
    let q = look(&t.q_from_low, low).xor(look(&t.q_from_high, high));
    let delta = q.xor(exp(log_a, look(&t.log, b)));
    let log_delta_inverse = look(&t.log_inverse, delta);
    // (aY + b)⁻¹ = (aΔ⁻¹)Y + (a + b)Δ⁻¹
    let c = exp(log_a, log_delta_inverse);
    let d = exp(look(&t.log, a.xor(b)), log_delta_inverse);
    look(&t.out_from_high, c).xor(look(&t.out_from_low, d))
}

/// Multiplication by x in GF(2^8), per byte.
#[inline(always)]
fn xtime<L: Lanes>(x: L) -> L {
    let high = x.high_nibbles().and(L::splat(0x0f));
    x.add(x).xor(look(&TABLES.xtime_reduce, high))
}

/// One full round: SubBytes, ShiftRows, MixColumns, AddRoundKey.
#[inline(always)]
fn round<L: Lanes>(state: L, round_key: L) -> L {
    let s = sub_bytes(state);
    // MixColumns: b_r = 2a_r + 3a_{r+1} + a_{r+2} + a_{r+3}
    //                 = xtime(a_r + a_{r+1}) + a_{r+1} + (a_{r+2} + a_{r+3}).
    let rotated1 = s.shift_rows_rotate1();
    let t = s.shift_rows().xor(rotated1);
    xtime(t).xor(rotated1).xor(t.rotate2()).xor(round_key)
}

/// The last round, without MixColumns.
#[inline(always)]
fn last_round<L: Lanes>(state: L, round_key: L) -> L {
    sub_bytes(state).shift_rows().xor(round_key)
}

const ROUNDS: usize = 14;

/// An AES-256 key schedule (FIPS 197 §5.2), encryption only; wiped on drop.
#[derive(Clone)]
pub(crate) struct VectorAes256<L> {
    round_keys: [[u8; 16]; ROUNDS + 1],
    lanes: core::marker::PhantomData<L>,
}

impl<L> Drop for VectorAes256<L> {
    fn drop(&mut self) {
        self.round_keys.zeroize();
    }
}

impl<L> zeroize::ZeroizeOnDrop for VectorAes256<L> {}

impl<L: Lanes> VectorAes256<L> {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        // Words w[0..60]; w[i] = w[i-8] ⊕ temp, where temp is w[i-1], after
        // RotWord, SubWord and Rcon when i is a multiple of 8, after SubWord
        // alone when i is 4 more than one.
        let mut w = [[0u8; 4]; 4 * (ROUNDS + 1)];
        for (i, word) in w.iter_mut().take(8).enumerate() {
            word.copy_from_slice(&key[4 * i..4 * i + 4]);
        }
        let mut rcon = 1u8;
        for i in 8..w.len() {
            let mut temp = w[i - 1];
            if i % 8 == 0 {
                temp.rotate_left(1);
                temp = sub_word::<L>(temp);
                temp[0] ^= rcon;
                rcon = rcon << 1 ^ if rcon & 0x80 != 0 { 0x1b } else { 0 };
            } else if i % 8 == 4 {
                temp = sub_word::<L>(temp);
            }
            for j in 0..4 {
                w[i][j] = w[i - 8][j] ^ temp[j];
            }
            temp.zeroize();
        }
        // Filled in place: a schedule built on the stack and moved in
        // would leave a copy behind.
        let mut aes = Self {
            round_keys: [[0u8; 16]; ROUNDS + 1],
            lanes: core::marker::PhantomData,
        };
        for (r, key) in aes.round_keys.iter_mut().enumerate() {
            for j in 0..4 {
                key[4 * j..4 * j + 4].copy_from_slice(&w[4 * r + j]);
            }
        }
        w.zeroize();
        aes
    }

    /// Encrypts each block in place.
    pub(crate) fn encrypt_blocks(&self, blocks: &mut [[u8; 16]]) {
        let mut fours = blocks.chunks_exact_mut(4);
        for four in &mut fours {
            let [a, b, c, d] = four else {
                unreachable!("chunks of four")
            };
            self.encrypt4(a, b, c, d);
        }
        for block in fours.into_remainder() {
            self.encrypt1(block);
        }
    }

    /// Four blocks side by side: each round's lookups form a chain of about
    /// fifteen dependent steps, and one block alone leaves the processor
    /// waiting on each; four independent chains keep it busy.
    #[inline(always)]
    fn encrypt4(&self, a: &mut [u8; 16], b: &mut [u8; 16], c: &mut [u8; 16], d: &mut [u8; 16]) {
        let k = &self.round_keys;
        let k0 = L::from_bytes(&k[0]);
        let (mut sa, mut sb, mut sc, mut sd) = (
            L::from_bytes(a).xor(k0),
            L::from_bytes(b).xor(k0),
            L::from_bytes(c).xor(k0),
            L::from_bytes(d).xor(k0),
        );
        for key in &k[1..ROUNDS] {
            let key = L::from_bytes(key);
            sa = round(sa, key);
            sb = round(sb, key);
            sc = round(sc, key);
            sd = round(sd, key);
        }
        let last = L::from_bytes(&k[ROUNDS]);
        *a = last_round(sa, last).to_bytes();
        *b = last_round(sb, last).to_bytes();
        *c = last_round(sc, last).to_bytes();
        *d = last_round(sd, last).to_bytes();
    }

    #[inline(always)]
    fn encrypt1(&self, block: &mut [u8; 16]) {
        let k = &self.round_keys;
        let mut s = L::from_bytes(block).xor(L::from_bytes(&k[0]));
        for key in &k[1..ROUNDS] {
            s = round(s, L::from_bytes(key));
        }
        *block = last_round(s, L::from_bytes(&k[ROUNDS])).to_bytes();
    }
}

/// SubWord: the S-box on four bytes.
fn sub_word<L: Lanes>(word: [u8; 4]) -> [u8; 4] {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&word);
    let mut out = sub_bytes(L::from_bytes(&bytes)).to_bytes();
    bytes.zeroize();
    let word = [out[0], out[1], out[2], out[3]];
    out.zeroize();
    word
}

mod lanes;
#[cfg(test)]
pub(crate) use lanes::portable;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use lanes::simd;
pub(crate) use lanes::Lanes;

#[cfg(test)]
mod tests;
