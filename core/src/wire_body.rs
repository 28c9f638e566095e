//! Reading a body off the wire, decided without I/O: how much room to
//! reserve, how much to ask the stream for next, and whether what arrived
//! is whole. The component's `wasi:http` edge runs these steps for request
//! bodies (with the configured limit) and for the answers of its peers
//! (Cosmos DB, the Managed HSM, Entra ID: [`MAX_ANSWER_BYTES`]).
//!
//! A `content-length` is only a peer's claim: it sizes the first
//! allocation up to [`MAX_PREALLOCATION`], never beyond, so a header alone
//! cannot make the instance reserve (or trap on) gigabytes. A body that
//! ends before its declared length is an error, not a shorter body.

/// Most bytes reserved up front from a declared `content-length`; a larger
/// body grows the buffer as it actually arrives.
pub const MAX_PREALLOCATION: usize = 256 * 1024;

/// Largest answer read from a peer. Cosmos DB's largest (a 2 MB document,
/// a query page of at most 4 MB), the HSM's and Entra ID's are far below;
/// past it the answer is a transport failure (retried, then 503 with
/// `Retry-After`), not an allocation the instance cannot make.
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// How much one read asks for when the length is not declared.
pub const READ_SIZE: u64 = 64 * 1024;

/// Most one read asks for when the length is declared: a whole answer of
/// usual size in one host call, a claimed huge one in several.
pub const MAX_READ: u64 = 1024 * 1024;

/// Why a body is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More than `limit` bytes were declared or arrived.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The stream ended before the declared length.
    #[error("the body ended after {received} of its {declared} declared bytes")]
    Short {
        /// Bytes that arrived.
        received: usize,
        /// The declared `content-length`.
        declared: usize,
    },
}

/// The length a body will have: none for an answer to `HEAD` and for a
/// 204 or 304 answer (whatever `content-length` says, RFC 9110 §8.6),
/// else the declared length, if any.
pub fn expected_length(declared: Option<usize>, status: Option<u16>, head: bool) -> Option<usize> {
    if head || matches!(status, Some(204 | 304)) {
        Some(0)
    } else {
        declared
    }
}

/// The buffer to start with: a body declared over `limit` is refused
/// before anything is read; otherwise room for the declared length, at
/// most [`MAX_PREALLOCATION`].
pub fn start(expected: Option<usize>, limit: usize) -> Result<usize, BodyError> {
    match expected {
        Some(n) if n > limit => Err(BodyError::TooLarge { limit }),
        n => Ok(n.unwrap_or(0).min(MAX_PREALLOCATION)),
    }
}

/// How much to ask the stream for after `received` bytes, or `None` when
/// the declared length is in hand (no read is needed to learn of the end).
pub fn next_read(received: usize, expected: Option<usize>) -> Option<u64> {
    match expected {
        Some(n) if received >= n => None,
        Some(n) => Some(((n - received) as u64).min(MAX_READ)),
        None => Some(READ_SIZE),
    }
}

/// Whether a chunk of `chunk` bytes after `received` still fits `limit`
/// (and, with a declared length, the declared length: a peer that sends
/// more than it declared is not believed either).
pub fn accept_chunk(
    received: usize,
    chunk: usize,
    expected: Option<usize>,
    limit: usize,
) -> Result<(), BodyError> {
    let total = received.saturating_add(chunk);
    if total > limit || expected.is_some_and(|n| total > n) {
        return Err(BodyError::TooLarge {
            limit: expected.map_or(limit, |n| n.min(limit)),
        });
    }
    Ok(())
}

/// Whether the body is whole when the stream reports its end after
/// `received` bytes.
pub fn at_end(received: usize, expected: Option<usize>) -> Result<(), BodyError> {
    match expected {
        Some(declared) if received < declared => Err(BodyError::Short { received, declared }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_reserves_at_most_the_cap() {
        assert_eq!(start(Some(1000), usize::MAX), Ok(1000));
        assert_eq!(start(Some(usize::MAX), usize::MAX), Ok(MAX_PREALLOCATION));
        assert_eq!(
            start(Some(MAX_ANSWER_BYTES), MAX_ANSWER_BYTES),
            Ok(MAX_PREALLOCATION)
        );
        assert_eq!(start(None, MAX_ANSWER_BYTES), Ok(0));
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_reading() {
        assert_eq!(
            start(Some(MAX_ANSWER_BYTES + 1), MAX_ANSWER_BYTES),
            Err(BodyError::TooLarge {
                limit: MAX_ANSWER_BYTES
            })
        );
        assert_eq!(start(Some(5), 5), Ok(5));
    }

    #[test]
    fn no_body_is_expected_after_head_204_or_304() {
        assert_eq!(expected_length(Some(512), Some(204), false), Some(0));
        assert_eq!(expected_length(Some(512), Some(304), false), Some(0));
        assert_eq!(expected_length(Some(512), Some(200), true), Some(0));
        assert_eq!(expected_length(None, Some(304), false), Some(0));
        assert_eq!(expected_length(Some(512), Some(200), false), Some(512));
        assert_eq!(expected_length(None, Some(200), false), None);
        assert_eq!(expected_length(Some(7), None, false), Some(7));
    }

    #[test]
    fn reads_stop_once_the_declared_length_is_in_hand() {
        assert_eq!(next_read(0, Some(10)), Some(10));
        assert_eq!(next_read(4, Some(10)), Some(6));
        assert_eq!(next_read(10, Some(10)), None);
        assert_eq!(next_read(0, Some(0)), None);
        assert_eq!(next_read(0, None), Some(READ_SIZE));
        assert_eq!(next_read(1 << 30, None), Some(READ_SIZE));
        // A huge declared length does not ask for a huge read.
        assert_eq!(next_read(0, Some(usize::MAX)), Some(MAX_READ));
    }

    #[test]
    fn more_than_the_limit_or_the_declared_length_is_refused() {
        assert_eq!(accept_chunk(0, 10, None, 10), Ok(()));
        assert_eq!(
            accept_chunk(5, 6, None, 10),
            Err(BodyError::TooLarge { limit: 10 })
        );
        assert_eq!(
            accept_chunk(5, 6, Some(8), 10),
            Err(BodyError::TooLarge { limit: 8 })
        );
        assert_eq!(accept_chunk(usize::MAX, 1, None, usize::MAX), Ok(()));
        assert!(accept_chunk(usize::MAX, 2, None, usize::MAX - 1).is_err());
        assert_eq!(
            accept_chunk(0, MAX_ANSWER_BYTES + 1, None, MAX_ANSWER_BYTES),
            Err(BodyError::TooLarge {
                limit: MAX_ANSWER_BYTES
            })
        );
    }

    #[test]
    fn a_body_shorter_than_declared_is_an_error() {
        assert_eq!(
            at_end(3, Some(10)),
            Err(BodyError::Short {
                received: 3,
                declared: 10
            })
        );
        assert_eq!(at_end(10, Some(10)), Ok(()));
        assert_eq!(at_end(0, Some(0)), Ok(()));
        assert_eq!(at_end(3, None), Ok(()));
        assert!(BodyError::Short {
            received: 3,
            declared: 10
        }
        .to_string()
        .contains("3 of its 10"));
    }
}
