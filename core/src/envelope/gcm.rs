//! AES-256-GCM encryption with 96-bit nonces (NIST SP 800-38D, §7.1),
//! composed from a block cipher and the `ghash` universal hash that the
//! `aes-gcm` crate uses.
//!
//! Why not `aes-gcm`'s own `encrypt`: inside Wasm its block cipher, the
//! `aes` crate's constant-time software (`fixslice`), costs about 3,100
//! machine instructions a block as Wasmtime compiles it and always computes
//! four blocks at once, and `aes-gcm` asks for the tag's block E(J0) alone
//! and for the counter blocks that do not fill a group of four one at a
//! time. Here, built for Wasm with SIMD, the block cipher is
//! [`VectorAes256`] (byte permutes; about a third of the instructions), asked
//! for exactly the counter blocks a value needs, E(J0) among them, in
//! groups of four; elsewhere it is the `aes` crate (with the CPU's AES
//! instructions natively). The output is byte for byte `aes-gcm`'s (checked
//! against it with both ciphers for every length up to several groups and
//! for random inputs in the tests below, and independently by the
//! record-format vectors, made with Python's `cryptography`). Opening
//! ([`Gcm::open_into`]) is the same key stream and hash, the tag compared
//! in constant time before any plaintext is handed back; it opens the
//! key-value store's encrypted entries (`crate::kvseal`), which every
//! delivery reads, while records are opened with `aes-gcm`.

#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
use super::vector_aes::{Lanes, VectorAes256};
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Block;
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// A block cipher with a 256-bit key, encrypting only.
pub(crate) trait BlockEncrypt: Clone {
    fn new(key: &[u8; 32]) -> Self;
    fn encrypt_blocks(&self, blocks: &mut [[u8; 16]]);
}

impl BlockEncrypt for aes::Aes256 {
    fn new(key: &[u8; 32]) -> Self {
        <Self as KeyInit>::new(key.into())
    }
    fn encrypt_blocks(&self, blocks: &mut [[u8; 16]]) {
        BlockCipherEncrypt::encrypt_blocks(self, Block::cast_slice_from_core_mut(blocks));
    }
}

#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
impl<L: Lanes> BlockEncrypt for VectorAes256<L> {
    fn new(key: &[u8; 32]) -> Self {
        VectorAes256::new(key)
    }
    fn encrypt_blocks(&self, blocks: &mut [[u8; 16]]) {
        VectorAes256::encrypt_blocks(self, blocks);
    }
}

/// The block cipher sealing uses: the vector AES on Wasm SIMD, the `aes`
/// crate elsewhere.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) type Cipher = VectorAes256<super::vector_aes::simd::Simd>;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(crate) type Cipher = aes::Aes256;

/// Counter blocks per call to the block cipher: the `aes` crate's software
/// batch, and the vector AES's interleave.
const GROUP: usize = 4;

/// The start of an associated data that several fields share (in the
/// record format: the domain tag, the document id and the partition key),
/// hashed once: the GHASH state after its whole 16-byte blocks, and the
/// bytes after them.
#[derive(Clone)]
pub(crate) struct AadHead {
    ghash: GHash,
    tail: [u8; 16],
    tail_len: usize,
    len: usize,
}

impl Drop for AadHead {
    fn drop(&mut self) {
        self.tail.zeroize();
    }
}

/// One key's AES-256 key schedule and GHASH key, made once.
#[derive(Clone)]
pub(crate) struct Gcm<C = Cipher> {
    aes: C,
    ghash: GHash,
}

impl<C: BlockEncrypt> Gcm<C> {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        let aes = C::new(key);
        // H = E_K(0^128)
        let mut h = [[0u8; 16]];
        aes.encrypt_blocks(&mut h);
        let ghash = GHash::new(Block::cast_from_core(&h[0]));
        h.zeroize();
        Self { aes, ghash }
    }

    /// `head`, the first part of associated data to come, hashed.
    pub(crate) fn aad_head(&self, head: &[u8]) -> AadHead {
        let whole = head.len() - head.len() % 16;
        let mut ghash = self.ghash.clone();
        ghash.update_padded(&head[..whole]);
        let mut tail = [0u8; 16];
        tail[..head.len() - whole].copy_from_slice(&head[whole..]);
        AadHead {
            ghash,
            tail,
            tail_len: head.len() - whole,
            len: head.len(),
        }
    }

    /// Appends `ciphertext ‖ tag` (16-byte tag) of `plaintext` under
    /// `nonce` and the associated data `head ‖ aad_rest` to `out`. The caller
    /// never reuses a nonce with a key.
    pub(crate) fn seal_into(
        &self,
        nonce: &[u8; 12],
        head: &AadHead,
        aad_rest: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) {
        debug_assert!(
            (plaintext.len() as u64) <= (1 << 36) - 32,
            "SP 800-38D: at most 2^39 - 256 bits of plaintext"
        );
        let start = out.len();
        out.reserve(plaintext.len() + 16);
        let mut tag_mask = self.ctr_xor(nonce, plaintext, out);
        let tag = self.tag(head, aad_rest, &out[start..], &tag_mask);
        tag_mask.zeroize();
        out.extend_from_slice(&tag);
    }

    /// Appends the plaintext of `sealed` (`ciphertext ‖ tag`, as
    /// [`Self::seal_into`] writes it) under `nonce` and the associated data
    /// `head ‖ aad_rest` to `out`, and returns true; or, if the tag does not
    /// match (compared in constant time), leaves `out` as it was and returns
    /// false: no byte of a forged or altered value is ever handed back.
    #[must_use = "false means forged or altered: nothing was opened"]
    pub(crate) fn open_into(
        &self,
        nonce: &[u8; 12],
        head: &AadHead,
        aad_rest: &[u8],
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(split) = sealed.len().checked_sub(16) else {
            return false;
        };
        let (ciphertext, tag) = sealed.split_at(split);
        let start = out.len();
        out.reserve(ciphertext.len());
        let mut tag_mask = self.ctr_xor(nonce, ciphertext, out);
        let expected = self.tag(head, aad_rest, ciphertext, &tag_mask);
        tag_mask.zeroize();
        if !bool::from(expected[..].ct_eq(tag)) {
            out[start..].zeroize();
            out.truncate(start);
            return false;
        }
        true
    }

    /// Appends `input` XOR the key stream under `nonce` (counter blocks 2,
    /// 3, …) to `out`, and returns E(J0), the tag's mask.
    fn ctr_xor(&self, nonce: &[u8; 12], input: &[u8], out: &mut Vec<u8>) -> [u8; 16] {
        // Counter blocks: nonce ‖ 32-bit big-endian counter; J0 has counter
        // 1 (its encryption masks the tag), the text uses 2, 3, … (inc32
        // wraps modulo 2^32, which no text under SP 800-38D's limit of
        // 2^32 - 2 blocks reaches; the component's bodies are at most 1 MiB).
        let mut counter: u32 = 1;
        let mut stream = [[0u8; 16]; GROUP];
        let mut tag_mask = [0u8; 16];
        // J0 and one block per 16 bytes of text.
        let blocks = 1 + input.len().div_ceil(16);
        let mut rest = input;
        let mut done = 0;
        while done < blocks {
            let n = (blocks - done).min(GROUP);
            for block in &mut stream[..n] {
                block[..12].copy_from_slice(nonce);
                block[12..].copy_from_slice(&counter.to_be_bytes());
                counter = counter.wrapping_add(1);
            }
            self.aes.encrypt_blocks(&mut stream[..n]);
            let key_stream = if done == 0 {
                tag_mask = stream[0];
                &stream[1..n]
            } else {
                &stream[..n]
            };
            for block in key_stream {
                let take = rest.len().min(16);
                if take == 16 {
                    let p = u128::from_ne_bytes(rest[..16].try_into().expect("16 bytes"));
                    out.extend_from_slice(&(p ^ u128::from_ne_bytes(*block)).to_ne_bytes());
                } else {
                    out.extend(rest[..take].iter().zip(block).map(|(p, k)| p ^ k));
                }
                rest = &rest[take..];
            }
            done += n;
        }
        // The key stream is plaintext XOR ciphertext: wipe it.
        stream.zeroize();
        tag_mask
    }

    /// T = E(J0) ⊕ GHASH_H(A ‖ 0* ‖ C ‖ 0* ‖ [len(A)]64 ‖ [len(C)]64), with
    /// A = `head ‖ aad_rest` and C = `ciphertext`.
    fn tag(
        &self,
        head: &AadHead,
        aad_rest: &[u8],
        ciphertext: &[u8],
        tag_mask: &[u8; 16],
    ) -> [u8; 16] {
        let mut ghash = head.ghash.clone();
        let mut more = aad_rest;
        if head.tail_len > 0 {
            // The head's last bytes and the first of the rest make one block
            // (zero-padded if that is all there is).
            let mut block = Block::default();
            block[..head.tail_len].copy_from_slice(&head.tail[..head.tail_len]);
            let n = more.len().min(16 - head.tail_len);
            block[head.tail_len..head.tail_len + n].copy_from_slice(&more[..n]);
            ghash.update(&[block]);
            more = &more[n..];
        }
        ghash.update_padded(more);
        ghash.update_padded(ciphertext);
        let aad_len = head.len + aad_rest.len();
        let mut lengths = Block::default();
        lengths[..8].copy_from_slice(&((aad_len as u64) * 8).to_be_bytes());
        lengths[8..].copy_from_slice(&((ciphertext.len() as u64) * 8).to_be_bytes());
        ghash.update(&[lengths]);
        let s = ghash.finalize();
        std::array::from_fn(|i| s[i] ^ tag_mask[i])
    }
}

#[cfg(test)]
mod tests {
    use super::{BlockEncrypt, Cipher, Gcm};
    use crate::envelope::vector_aes::portable::Portable;
    use crate::envelope::vector_aes::VectorAes256;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::{Aes256Gcm, Nonce};
    use proptest::prelude::*;

    fn reference(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], pt: &[u8]) -> Vec<u8> {
        Aes256Gcm::new(key.into())
            .encrypt(&Nonce::from(*nonce), Payload { msg: pt, aad })
            .unwrap()
    }

    /// A key, a nonce, associated data, where to split it, a plaintext.
    type Input<'a> = (&'a [u8; 32], &'a [u8; 12], &'a [u8], usize, &'a [u8]);

    /// Sealed with the associated data split after `split` bytes (its head
    /// hashed first), or whole when `split` is past its end, with the
    /// block cipher `C`.
    fn sealed_with<C: BlockEncrypt>((key, nonce, aad, split, pt): Input<'_>) -> Vec<u8> {
        let split = split.min(aad.len());
        let gcm = Gcm::<C>::new(key);
        let mut out = b"prefix".to_vec();
        gcm.seal_into(
            nonce,
            &gcm.aad_head(&aad[..split]),
            &aad[split..],
            pt,
            &mut out,
        );
        assert_eq!(&out[..6], b"prefix", "what was in the buffer stays");
        out.split_off(6)
    }

    /// [`sealed_with`] the block cipher of this build, which must agree with
    /// the `aes` crate's and the vector AES on portable lanes.
    fn ours_split(
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        split: usize,
        pt: &[u8],
    ) -> Vec<u8> {
        let input = (key, nonce, aad, split, pt);
        let sealed = sealed_with::<Cipher>(input);
        assert_eq!(sealed, sealed_with::<aes::Aes256>(input));
        assert_eq!(sealed, sealed_with::<VectorAes256<Portable>>(input));
        sealed
    }

    fn ours(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], pt: &[u8]) -> Vec<u8> {
        let whole = ours_split(key, nonce, aad, 0, pt);
        for split in [1, 15, 16, 17, 31, 32, 33, aad.len()] {
            assert_eq!(
                ours_split(key, nonce, aad, split, pt),
                whole,
                "head of {split} bytes"
            );
        }
        whole
    }

    #[test]
    fn every_length_up_to_several_groups_matches_aes_gcm() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 7 + 1);
        let nonce: [u8; 12] = std::array::from_fn(|i| 0xa0 + i as u8);
        let data: Vec<u8> = (0..200u32).map(|i| (i * 31 + 5) as u8).collect();
        for len in 0..=150 {
            for aad_len in [0, 1, 15, 16, 17, 40, 107] {
                let (pt, aad) = (&data[..len], &data[50..50 + aad_len]);
                assert_eq!(
                    ours(&key, &nonce, aad, pt),
                    reference(&key, &nonce, aad, pt),
                    "plaintext {len} bytes, aad {aad_len} bytes"
                );
            }
        }
    }

    /// Answers computed with Python's `cryptography` 46.0.3 (OpenSSL),
    /// an implementation that shares nothing with this one: seven blocks of
    /// plaintext, the last one partial (two groups of four counter blocks
    /// with J0), and the associated data split at every point.
    #[test]
    fn known_answers_from_an_independent_implementation() {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(1));
        let nonce: [u8; 12] = std::array::from_fn(|i| 0xa0 + i as u8);
        let pt: Vec<u8> = (0..100u32).map(|i| (i * 31 + 5) as u8).collect();
        let aad: Vec<u8> = (0..107u32).map(|i| (i * 13 + 3) as u8).collect();
        let expected = "545ba4f22624a473ebb5004da34c2fc7708d8f67e7c3b651875fb3ef2b16a200\
                        c30a082c8dff05c8e4d81a93f7b149391afbadbcdbb7d5b3e3f2421d110ae161\
                        735610f556d5dc81e2d788759aa15f9dc1a324cc748a59895dc2abb0d9f5e429\
                        68a1bfea85f6229825d688b046ded098ec8e7bb3";
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        for split in 0..=aad.len() {
            assert_eq!(
                hex(&ours_split(&key, &nonce, &aad, split, &pt)),
                expected,
                "split {split}"
            );
        }
        assert_eq!(
            hex(&ours_split(&key, &nonce, b"", 0, b"")),
            "c2476a2b25332b9dab57665ac5031871",
            "nothing to encrypt or bind: the tag alone"
        );
    }

    #[test]
    fn a_nonce_whose_counter_field_is_high_matches_aes_gcm() {
        // The counter is the nonce's 32 bits after J0: all-ones nonces
        // exercise the block layout, not a wrap (the counter starts at 1).
        let key = [0xffu8; 32];
        let nonce = [0xffu8; 12];
        let pt = [0x5au8; 100];
        assert_eq!(
            ours(&key, &nonce, b"aad", &pt),
            reference(&key, &nonce, b"aad", &pt)
        );
    }

    #[test]
    fn the_ciphertext_opens_with_aes_gcm_and_a_changed_byte_does_not() {
        let (key, nonce) = ([3u8; 32], [4u8; 12]);
        let sealed = ours(&key, &nonce, b"bound", b"{\"name\":\"Ada\"}");
        let cipher = Aes256Gcm::new((&key).into());
        let open =
            |ct: &[u8], aad: &[u8]| cipher.decrypt(&Nonce::from(nonce), Payload { msg: ct, aad });
        assert_eq!(open(&sealed, b"bound").unwrap(), b"{\"name\":\"Ada\"}");
        assert!(open(&sealed, b"other").is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&bad, b"bound").is_err(), "byte {i} changed");
        }
    }

    /// Opened with the block cipher `C` into a buffer holding "prefix":
    /// the plaintext after it, or `None` with the buffer as it was.
    fn opened_with<C: BlockEncrypt>(
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        split: usize,
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        let split = split.min(aad.len());
        let gcm = Gcm::<C>::new(key);
        let mut out = b"prefix".to_vec();
        let ok = gcm.open_into(
            nonce,
            &gcm.aad_head(&aad[..split]),
            &aad[split..],
            sealed,
            &mut out,
        );
        assert_eq!(&out[..6], b"prefix", "what was in the buffer stays");
        if !ok {
            assert_eq!(out, b"prefix", "nothing added when the tag does not match");
            return None;
        }
        Some(out.split_off(6))
    }

    fn open_all(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let whole = opened_with::<Cipher>(key, nonce, aad, 0, sealed);
        for split in [1, 16, 17, aad.len()] {
            assert_eq!(opened_with::<Cipher>(key, nonce, aad, split, sealed), whole);
        }
        assert_eq!(
            opened_with::<aes::Aes256>(key, nonce, aad, 0, sealed),
            whole
        );
        assert_eq!(
            opened_with::<VectorAes256<Portable>>(key, nonce, aad, 0, sealed),
            whole
        );
        whole
    }

    #[test]
    fn a_refused_open_leaves_no_plaintext_in_the_buffer_s_spare_room() {
        let (key, nonce) = ([9u8; 32], [1u8; 12]);
        let secret = [0x5au8; 64];
        let mut sealed = reference(&key, &nonce, b"", &secret);
        *sealed.last_mut().unwrap() ^= 1;
        let gcm = Gcm::<Cipher>::new(&key);
        let mut out = Vec::with_capacity(128);
        assert!(!gcm.open_into(&nonce, &gcm.aad_head(b""), b"", &sealed, &mut out));
        assert!(out.is_empty());
        // The key stream was applied before the tag was known to be wrong:
        // what it wrote must be wiped, not only cut off.
        // SAFETY: u8 has no invalid values, and open_into wrote (then
        // wiped) these bytes, all within the capacity asked for.
        let spare = unsafe {
            out.set_len(secret.len());
            out.clone()
        };
        assert_eq!(spare, vec![0u8; secret.len()]);
    }

    #[test]
    fn what_aes_gcm_seals_opens_for_every_length_and_nothing_altered_does() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 5 + 3);
        let nonce: [u8; 12] = std::array::from_fn(|i| 0x30 + i as u8);
        let data: Vec<u8> = (0..200u32).map(|i| (i * 29 + 7) as u8).collect();
        for len in 0..=80 {
            for aad_len in [0, 15, 16, 40] {
                let (pt, aad) = (&data[..len], &data[100..100 + aad_len]);
                let sealed = reference(&key, &nonce, aad, pt);
                assert_eq!(open_all(&key, &nonce, aad, &sealed).as_deref(), Some(pt));
                // Any bit of ciphertext or tag, the associated data, the
                // nonce or the key changed: refused.
                for i in (0..sealed.len()).step_by(3) {
                    let mut bad = sealed.clone();
                    bad[i] ^= 1 << (i % 8);
                    assert_eq!(
                        open_all(&key, &nonce, aad, &bad),
                        None,
                        "len {len} byte {i}"
                    );
                }
                assert_eq!(open_all(&key, &nonce, b"other", &sealed), None);
                let mut other_nonce = nonce;
                other_nonce[11] ^= 1;
                assert_eq!(open_all(&key, &other_nonce, aad, &sealed), None);
                let mut other_key = key;
                other_key[0] ^= 1;
                assert_eq!(open_all(&other_key, &nonce, aad, &sealed), None);
            }
        }
        // Shorter than a tag, cut short, extended.
        let sealed = reference(&key, &nonce, b"a", b"value");
        for short in 0..16 {
            assert_eq!(open_all(&key, &nonce, b"a", &sealed[..short]), None);
        }
        assert_eq!(
            open_all(&key, &nonce, b"a", &sealed[..sealed.len() - 1]),
            None
        );
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(open_all(&key, &nonce, b"a", &longer), None);
    }

    proptest! {
        #[test]
        fn random_sealed_values_open(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 12]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..100),
            pt in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let sealed = reference(&key, &nonce, &aad, &pt);
            prop_assert_eq!(open_all(&key, &nonce, &aad, &sealed), Some(pt));
        }

        #[test]
        fn random_inputs_match_aes_gcm(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 12]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..300),
            pt in proptest::collection::vec(any::<u8>(), 0..1200),
            split in 0..320usize,
        ) {
            prop_assert_eq!(
                ours_split(&key, &nonce, &aad, split, &pt),
                reference(&key, &nonce, &aad, &pt)
            );
        }
    }
}
