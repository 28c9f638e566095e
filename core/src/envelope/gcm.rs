//! AES-256-GCM encryption with 96-bit nonces (NIST SP 800-38D, §7.1),
//! composed from the same two parts the `aes-gcm` crate uses: the `aes`
//! block cipher and the `ghash` universal hash.
//!
//! Why not `aes-gcm`'s own `encrypt`: inside Wasm both parts run in
//! constant-time software, and the software AES (`fixslice`) always
//! computes four blocks at once. `aes-gcm` asks for the tag's block E(J0)
//! alone and for the counter blocks that do not fill a group of four one
//! at a time, so a 40-byte field costs four four-block runs where one
//! suffices. Here every call to the block cipher is a full group of four
//! counter blocks, E(J0) included. The output is byte for byte
//! `aes-gcm`'s (checked against it for every length up to several groups
//! and for random inputs in the tests below, which share its primitives,
//! and independently by the record-format vectors, made with Python's
//! `cryptography`); opening stays with `aes-gcm`, which checks the tag.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes256, Block};
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use zeroize::Zeroize;

/// Blocks per call to the block cipher: the software AES's batch.
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
pub(crate) struct Gcm {
    aes: Aes256,
    ghash: GHash,
}

impl Gcm {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        let aes = Aes256::new(key.into());
        // H = E_K(0^128)
        let mut h = Block::default();
        aes.encrypt_block(&mut h);
        let ghash = GHash::new(&h);
        h.as_mut_slice().zeroize();
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
        // Counter blocks: nonce ‖ 32-bit big-endian counter; J0 has counter
        // 1 (its encryption masks the tag), the plaintext uses 2, 3, … (inc32
        // wraps modulo 2^32, which no plaintext under SP 800-38D's limit of
        // 2^32 - 2 blocks reaches; the component's bodies are at most 1 MiB).
        let mut counter: u32 = 1;
        let mut stream = [Block::default(); GROUP];
        let mut tag_mask = Block::default();
        let mut rest = plaintext;
        let mut first = true;
        loop {
            for block in &mut stream {
                block[..12].copy_from_slice(nonce);
                block[12..].copy_from_slice(&counter.to_be_bytes());
                counter = counter.wrapping_add(1);
            }
            self.aes.encrypt_blocks(&mut stream);
            let blocks = if first {
                tag_mask = stream[0];
                &stream[1..]
            } else {
                &stream[..]
            };
            first = false;
            for block in blocks {
                let n = rest.len().min(16);
                out.extend(rest[..n].iter().zip(block.iter()).map(|(p, k)| p ^ k));
                rest = &rest[n..];
                if rest.is_empty() {
                    break;
                }
            }
            if rest.is_empty() {
                break;
            }
        }
        // The key stream is plaintext XOR ciphertext: wipe it.
        for block in &mut stream {
            block.as_mut_slice().zeroize();
        }
        // S = GHASH_H(A ‖ 0* ‖ C ‖ 0* ‖ [len(A)]64 ‖ [len(C)]64), T = E(J0) ⊕ S
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
        ghash.update_padded(&out[start..]);
        let aad_len = head.len + aad_rest.len();
        let mut lengths = Block::default();
        lengths[..8].copy_from_slice(&((aad_len as u64) * 8).to_be_bytes());
        lengths[8..].copy_from_slice(&((plaintext.len() as u64) * 8).to_be_bytes());
        ghash.update(&[lengths]);
        let tag = ghash.finalize();
        out.extend(tag.iter().zip(tag_mask.iter()).map(|(s, m)| s ^ m));
        tag_mask.as_mut_slice().zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::Gcm;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::{Aes256Gcm, Nonce};
    use proptest::prelude::*;

    fn reference(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], pt: &[u8]) -> Vec<u8> {
        Aes256Gcm::new(key.into())
            .encrypt(&Nonce::from(*nonce), Payload { msg: pt, aad })
            .unwrap()
    }

    /// Sealed with the associated data split after `split` bytes (its head
    /// hashed first), or whole when `split` is past its end.
    fn ours_split(
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        split: usize,
        pt: &[u8],
    ) -> Vec<u8> {
        let split = split.min(aad.len());
        let gcm = Gcm::new(key);
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

    proptest! {
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
