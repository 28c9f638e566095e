//! The vector AES against FIPS 197 and the `aes` crate, on the portable
//! lanes everywhere and on the Wasm SIMD lanes when built for Wasm with
//! SIMD (`scripts/test` runs these inside Wasmtime).

use super::portable::Portable;
use super::{sub_bytes, Lanes, VectorAes256, ROTATE2, SHIFT_ROWS, SHIFT_ROWS_ROTATE1};
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use proptest::prelude::*;

/// The lanes under test besides the portable ones.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
type Native = super::simd::Simd;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
type Native = Portable;

/// The AES field's product (FIPS 197 §4.2), bit by bit.
fn gf256_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

/// FIPS 197 §5.1.1 from its definition: the inverse (x^254, 0 for 0), then
/// the affine map.
fn reference_sbox(x: u8) -> u8 {
    let mut inv = 1u8;
    for _ in 0..254 {
        inv = gf256_mul(inv, x);
    }
    let b = inv;
    b ^ b.rotate_left(1) ^ b.rotate_left(2) ^ b.rotate_left(3) ^ b.rotate_left(4) ^ 0x63
}

fn sbox_of<L: Lanes>(bytes: [u8; 16]) -> [u8; 16] {
    sub_bytes(L::from_bytes(&bytes)).to_bytes()
}

fn check_sbox<L: Lanes>() {
    for start in (0..256).step_by(16) {
        let input: [u8; 16] = std::array::from_fn(|i| (start + i) as u8);
        let out = sbox_of::<L>(input);
        for (x, s) in input.iter().zip(out) {
            assert_eq!(s, reference_sbox(*x), "S({x:#04x})");
        }
    }
}

#[test]
fn the_sbox_is_fips_197s_for_every_byte() {
    // Values printed in FIPS 197's Figure 7, for the reference itself.
    assert_eq!(
        [0x00, 0x01, 0x53, 0xff].map(reference_sbox),
        [0x63, 0x7c, 0xed, 0x16]
    );
    check_sbox::<Portable>();
    check_sbox::<Native>();
}

#[test]
fn the_permutations_are_shift_rows_and_column_rotations() {
    // FIPS 197 §5.1.2: s'[r, c] = s[r, (c + r) mod 4], bytes column-major.
    assert_eq!(
        SHIFT_ROWS,
        [0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, 1, 6, 11]
    );
    assert_eq!(
        ROTATE2,
        [2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13]
    );
    let rotate1 = [1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12];
    assert_eq!(SHIFT_ROWS_ROTATE1, rotate1.map(|i| SHIFT_ROWS[i]));
    let bytes: [u8; 16] = std::array::from_fn(|i| i as u8 * 3 + 1);
    let lanes = Native::from_bytes(&bytes);
    assert_eq!(lanes.shift_rows().to_bytes(), SHIFT_ROWS.map(|i| bytes[i]));
    assert_eq!(
        lanes.shift_rows_rotate1().to_bytes(),
        SHIFT_ROWS_ROTATE1.map(|i| bytes[i])
    );
    assert_eq!(lanes.rotate2().to_bytes(), ROTATE2.map(|i| bytes[i]));
}

#[test]
fn the_byte_operations_are_what_the_cipher_assumes() {
    let bytes: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(200));
    for lanes in [Native::from_bytes(&bytes).to_bytes(), Portable(bytes).0] {
        assert_eq!(lanes, bytes);
    }
    let x = Native::from_bytes(&bytes);
    let nibble = Native::splat(0x0f);
    assert_eq!(
        x.high_nibbles().and(nibble).to_bytes(),
        bytes.map(|b| b >> 4)
    );
    let y = Native::from_bytes(&bytes.map(|b| b.rotate_left(3)));
    assert_eq!(
        x.add_saturating(y).to_bytes(),
        std::array::from_fn::<u8, 16, _>(|i| bytes[i].saturating_add(bytes[i].rotate_left(3)))
    );
    assert_eq!(
        x.min(y).to_bytes(),
        std::array::from_fn::<u8, 16, _>(|i| bytes[i].min(bytes[i].rotate_left(3)))
    );
    // Lookups: 0 from an index of 16 or more, as Wasm's swizzle answers.
    let table: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let index: [u8; 16] = [
        0, 15, 16, 17, 0x30, 0x40, 0x4e, 0x70, 0x80, 0xf0, 0xff, 1, 2, 3, 4, 5,
    ];
    assert_eq!(
        Native::lookup(Native::from_bytes(&table), Native::from_bytes(&index)).to_bytes(),
        index.map(|i| if i < 16 { table[i as usize] } else { 0 })
    );
    assert_eq!(
        x.add(x).to_bytes(),
        bytes.map(|b| b.wrapping_add(b)),
        "wrapping"
    );
    assert_eq!(
        x.sub(Native::splat(16)).to_bytes(),
        bytes.map(|b| b.wrapping_sub(16))
    );
}

// Built for Wasm, these tests are only worth running with SIMD: without it
// (a `RUSTFLAGS` without `+simd128` replaces `.cargo/config.toml`'s) the
// lanes under test would be the portable ones again, and pass.
#[cfg(all(target_arch = "wasm32", not(target_feature = "simd128")))]
compile_error!("the core's tests for Wasm need `-C target-feature=+simd128`");

/// As `core/tests/hardening.rs` checks the native cipher: fails to compile
/// if the schedule is not wiped on drop (its `Drop` zeroizes it).
#[test]
fn the_key_schedule_is_wiped_on_drop() {
    fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wipes_on_drop::<VectorAes256<Native>>();
    wipes_on_drop::<VectorAes256<Portable>>();
}

fn encrypt<L: Lanes>(key: &[u8; 32], blocks: &[[u8; 16]]) -> Vec<[u8; 16]> {
    let mut out = blocks.to_vec();
    VectorAes256::<L>::new(key).encrypt_blocks(&mut out);
    out
}

fn reference(key: &[u8; 32], blocks: &[[u8; 16]]) -> Vec<[u8; 16]> {
    let cipher = aes::Aes256::new(key.into());
    blocks
        .iter()
        .map(|b| {
            let mut block = aes::Block::from(*b);
            cipher.encrypt_block(&mut block);
            block.into()
        })
        .collect()
}

/// FIPS 197 Appendix C.3 (AES-256).
#[test]
fn fips_197_appendix_c3() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let plaintext: [u8; 16] = std::array::from_fn(|i| (i as u8) * 0x11);
    let expected = [
        0x8e, 0xa2, 0xb7, 0xca, 0x51, 0x67, 0x45, 0xbf, 0xea, 0xfc, 0x49, 0x90, 0x4b, 0x49, 0x60,
        0x89,
    ];
    assert_eq!(encrypt::<Portable>(&key, &[plaintext]), [expected]);
    // Alone and in every position of an interleaved group.
    for n in 1..=9 {
        assert_eq!(
            encrypt::<Native>(&key, &vec![plaintext; n]),
            vec![expected; n]
        );
    }
}

proptest! {
    #[test]
    fn random_keys_and_blocks_match_the_aes_crate(
        key in any::<[u8; 32]>(),
        blocks in proptest::collection::vec(any::<[u8; 16]>(), 0..10),
    ) {
        let expected = reference(&key, &blocks);
        prop_assert_eq!(encrypt::<Native>(&key, &blocks), expected.clone());
        prop_assert_eq!(encrypt::<Portable>(&key, &blocks), expected);
    }
}
