//! Nonces from the host's secure random source (`wasi:random`), drawn in
//! bulk. Every sealed value needs a fresh 96-bit nonce, and each draw is a
//! call across the component boundary (lifting a list, the guest's
//! allocator, the host's generator): a delivery of 100 events with three
//! protected fields each made 300 such calls. [`Nonces`] draws the bytes of
//! as many nonces as the delivery is expected to need in one call and hands
//! them out in order; should the sealing need more than expected, it draws
//! again. The bytes are the same cryptographically secure random bytes a
//! draw per nonce gives, consumed once each.

/// The length of an AES-GCM nonce in the record format.
const NONCE_LEN: usize = 12;

/// Most nonces drawn in one call (48 KiB), however many are expected.
const MAX_DRAW: usize = 4096;

/// Nonces drawn in one call once the expected ones are used up (or when
/// none were expected).
const REFILL: usize = 16;

/// Nonces for one delivery (or one page of stored records).
pub struct Nonces {
    drawn: Vec<u8>,
    next: usize,
    expected: usize,
}

impl Nonces {
    /// A source for about `expected` nonces (0 when not known); nothing is
    /// drawn until the first one is asked for.
    pub fn new(expected: usize) -> Self {
        Self {
            drawn: Vec::new(),
            next: 0,
            expected,
        }
    }

    /// The next fresh nonce.
    pub fn next_nonce(&mut self) -> [u8; NONCE_LEN] {
        if self.next + NONCE_LEN > self.drawn.len() {
            let count = match self.expected {
                0 => REFILL,
                n => n.min(MAX_DRAW),
            };
            self.expected = self.expected.saturating_sub(count);
            self.drawn = wasi::random::random::get_random_bytes((count * NONCE_LEN) as u64);
            self.next = 0;
            assert!(
                self.drawn.len() >= NONCE_LEN,
                "the host's random source returned fewer bytes than asked for"
            );
        }
        let nonce: [u8; NONCE_LEN] = self.drawn[self.next..self.next + NONCE_LEN]
            .try_into()
            .expect("a nonce's length");
        self.next += NONCE_LEN;
        nonce
    }
}
