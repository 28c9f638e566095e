//! What to do with a message, from what happened to it: pure functions over
//! the component's answer, the dequeue count and the clock.
//!
//! | component answer | action |
//! |---|---|
//! | 2xx | delete the message |
//! | 400, 413, 415, 422 (the message itself is bad) | poison at once |
//! | 401, 403 (the bridge's ingest key is refused) | leave it; pause polling |
//! | 408, 429, 5xx, other 4xx, timeout, connection error | leave it for redelivery |
//!
//! A message left for redelivery reappears after the visibility timeout.
//! When a forward fails and the message has been dequeued
//! `max_dequeue_count` times, it is poisoned instead of being left, and a
//! message that comes back with a higher count (the bridge stopped before
//! deciding) is poisoned without being forwarded again: at most
//! `max_dequeue_count` tries, as Azure Functions' queue trigger.

use cmk_ingest::time::UnixTime;

/// What forwarding one message produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// The component answered.
    Answered {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, in seconds, when sent and readable.
        retry_after_secs: Option<u64>,
    },
    /// No answer: timeout, refused or reset connection, DNS failure.
    NoAnswer,
}

/// Why a message goes to the poison queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonReason {
    /// The component refused the message permanently (its status).
    Refused(u16),
    /// Tried `max_dequeue_count` times without success.
    MaxDequeueCount,
}

impl PoisonReason {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonReason::Refused(_) => "refused",
            PoisonReason::MaxDequeueCount => "max-dequeue-count",
        }
    }
}

/// The decision for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Durable in the component: delete it from the queue.
    Delete,
    /// Put it in the poison queue, then delete it.
    Poison(PoisonReason),
    /// Leave it: it reappears after the visibility timeout.
    Leave {
        /// Pause polling this long (the component's `Retry-After`).
        pause_secs: Option<u64>,
        /// The bridge's own credential was refused (401/403).
        auth: bool,
    },
}

/// Pause after 401/403 when the component gives none: an operator has to
/// fix the ingest key, so polling need not be eager.
pub const AUTH_PAUSE_SECS: u64 = 60;
/// Longest pause honoured from a `Retry-After`.
pub const MAX_PAUSE_SECS: u64 = 300;

/// Before forwarding: a message already dequeued more than `max` times is
/// poisoned without another try.
pub fn before_forward(dequeue_count: u32, max: u32) -> Option<Action> {
    (dequeue_count > max).then_some(Action::Poison(PoisonReason::MaxDequeueCount))
}

/// Whether a status means the message itself is bad.
pub fn is_permanent(status: u16) -> bool {
    matches!(status, 400 | 413 | 415 | 422)
}

/// After forwarding.
pub fn after_forward(result: &Forwarded, dequeue_count: u32, max: u32) -> Action {
    let (pause, auth) = match *result {
        Forwarded::Answered { status, .. } if (200..300).contains(&status) => {
            return Action::Delete
        }
        Forwarded::Answered { status, .. } if is_permanent(status) => {
            return Action::Poison(PoisonReason::Refused(status))
        }
        Forwarded::Answered {
            status: 401 | 403,
            retry_after_secs,
        } => (Some(retry_after_secs.unwrap_or(AUTH_PAUSE_SECS)), true),
        Forwarded::Answered {
            retry_after_secs, ..
        } => (retry_after_secs, false),
        Forwarded::NoAnswer => (None, false),
    };
    if dequeue_count >= max {
        return Action::Poison(PoisonReason::MaxDequeueCount);
    }
    Action::Leave {
        pause_secs: pause.map(|s| s.min(MAX_PAUSE_SECS)),
        auth,
    }
}

/// Reads `Retry-After`: delay-seconds, or an HTTP date (relative to `now`).
pub fn retry_after_secs(value: Option<&str>, now: UnixTime) -> Option<u64> {
    let v = value?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs);
    }
    UnixTime::parse_rfc1123(v).map(|t| t.0.saturating_sub(now.0))
}

/// Whether a message received at `received_ms` may still be forwarded at
/// `now_ms`: only if the forward can end before the message becomes
/// visible again (else another poll could hand it out twice at once).
pub fn in_time(
    received_ms: u64,
    now_ms: u64,
    visibility_secs: u32,
    request_timeout_secs: u64,
) -> bool {
    now_ms.saturating_sub(received_ms) + request_timeout_secs * 1000
        < u64::from(visibility_secs) * 1000
}

/// What a Queue service answer means for the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOutcome {
    /// It worked.
    Ok,
    /// The bridge's Storage credential or its role is refused (401/403):
    /// an operator has to act.
    Auth,
    /// The queue does not exist (404).
    NotFound,
    /// Busy or unavailable (408, 429, 5xx) or no answer: try later.
    Transient,
    /// Anything else: a request the bridge should not have sent.
    Rejected,
}

/// Classifies a Queue service status (`None`: no answer).
pub fn storage_outcome(status: Option<u16>) -> StorageOutcome {
    match status {
        Some(200..=299) => StorageOutcome::Ok,
        Some(401 | 403) => StorageOutcome::Auth,
        Some(404) => StorageOutcome::NotFound,
        None | Some(408 | 429 | 500..=599) => StorageOutcome::Transient,
        Some(_) => StorageOutcome::Rejected,
    }
}

/// How long to wait before the next poll.
///
/// - a `Retry-After` (or the auth pause) seen in the last batch wins;
/// - after failed polls, back off doubling from the idle interval up to 30 s;
/// - an empty queue waits the idle interval;
/// - otherwise poll again at once.
pub fn next_poll_delay_ms(
    received: usize,
    pause_secs: Option<u64>,
    failed_polls: u32,
    idle_ms: u64,
) -> u64 {
    if let Some(p) = pause_secs {
        return p.min(MAX_PAUSE_SECS) * 1000;
    }
    if failed_polls > 0 {
        return idle_ms
            .saturating_mul(1 << failed_polls.min(10))
            .clamp(idle_ms, 30_000.max(idle_ms));
    }
    if received == 0 {
        idle_ms
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Forwarded {
        Forwarded::Answered {
            status,
            retry_after_secs: None,
        }
    }

    #[test]
    fn success_deletes_and_bad_messages_are_poisoned_at_once() {
        for s in [200, 201, 204] {
            assert_eq!(after_forward(&answered(s), 1, 5), Action::Delete);
        }
        for s in [400, 413, 415, 422] {
            assert_eq!(
                after_forward(&answered(s), 1, 5),
                Action::Poison(PoisonReason::Refused(s))
            );
        }
    }

    #[test]
    fn transient_failures_are_left_until_the_last_try() {
        let busy = Forwarded::Answered {
            status: 503,
            retry_after_secs: Some(7),
        };
        assert_eq!(
            after_forward(&busy, 1, 5),
            Action::Leave {
                pause_secs: Some(7),
                auth: false
            }
        );
        for r in [
            answered(429),
            answered(500),
            answered(502),
            answered(404),
            Forwarded::NoAnswer,
        ] {
            assert!(
                matches!(after_forward(&r, 4, 5), Action::Leave { .. }),
                "{r:?}"
            );
            assert_eq!(
                after_forward(&r, 5, 5),
                Action::Poison(PoisonReason::MaxDequeueCount),
                "{r:?}"
            );
        }
        assert_eq!(
            after_forward(
                &Forwarded::Answered {
                    status: 429,
                    retry_after_secs: Some(100_000)
                },
                1,
                5
            ),
            Action::Leave {
                pause_secs: Some(MAX_PAUSE_SECS),
                auth: false
            }
        );
    }

    #[test]
    fn refused_ingest_key_is_left_with_a_pause() {
        for s in [401, 403] {
            assert_eq!(
                after_forward(&answered(s), 1, 5),
                Action::Leave {
                    pause_secs: Some(AUTH_PAUSE_SECS),
                    auth: true
                }
            );
        }
    }

    #[test]
    fn at_most_max_tries() {
        assert_eq!(before_forward(5, 5), None);
        assert_eq!(
            before_forward(6, 5),
            Some(Action::Poison(PoisonReason::MaxDequeueCount))
        );
        assert_eq!(before_forward(1, 1), None);
        assert_eq!(
            after_forward(&answered(503), 1, 1),
            Action::Poison(PoisonReason::MaxDequeueCount)
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = UnixTime(1_795_998_519);
        assert_eq!(retry_after_secs(Some(" 5 "), now), Some(5));
        assert_eq!(
            retry_after_secs(Some(&UnixTime(now.0 + 90).rfc1123()), now),
            Some(90)
        );
        assert_eq!(
            retry_after_secs(Some(&UnixTime(now.0 - 9).rfc1123()), now),
            Some(0)
        );
        assert_eq!(retry_after_secs(Some("soon"), now), None);
        assert_eq!(retry_after_secs(None, now), None);
    }

    #[test]
    fn forwards_start_only_while_the_message_stays_hidden() {
        assert!(in_time(0, 0, 30, 25));
        assert!(!in_time(0, 5_000, 30, 25));
        assert!(!in_time(0, 0, 30, 30));
    }

    #[test]
    fn storage_statuses() {
        assert_eq!(storage_outcome(Some(200)), StorageOutcome::Ok);
        assert_eq!(storage_outcome(Some(204)), StorageOutcome::Ok);
        assert_eq!(storage_outcome(Some(403)), StorageOutcome::Auth);
        assert_eq!(storage_outcome(Some(404)), StorageOutcome::NotFound);
        assert_eq!(storage_outcome(Some(503)), StorageOutcome::Transient);
        assert_eq!(storage_outcome(None), StorageOutcome::Transient);
        assert_eq!(storage_outcome(Some(400)), StorageOutcome::Rejected);
    }

    #[test]
    fn poll_pacing() {
        assert_eq!(next_poll_delay_ms(16, None, 0, 1000), 0);
        assert_eq!(next_poll_delay_ms(0, None, 0, 1000), 1000);
        assert_eq!(next_poll_delay_ms(3, Some(5), 0, 1000), 5000);
        assert_eq!(next_poll_delay_ms(0, None, 1, 1000), 2000);
        assert_eq!(next_poll_delay_ms(0, None, 3, 1000), 8000);
        assert_eq!(next_poll_delay_ms(0, None, 30, 1000), 30_000);
        assert_eq!(next_poll_delay_ms(0, None, 30, 60_000), 60_000);
    }
}
