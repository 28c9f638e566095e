//! What to do with a message, from what happened to it: pure functions over
//! the component's answer, the dequeue count and the clock.
//!
//! | component answer | action |
//! |---|---|
//! | 200 with `accepted` = the message's event count | delete the message |
//! | 200 with `accepted` + `conflicts` = the count, conflicts > 0 (create mode), or 409 `DocumentConflict` (every event conflicts) | poison at once: a conflicting event's content is stored nowhere else |
//! | other 2xx, or 200 with another count | leave it for redelivery (not confirmed) |
//! | 400, 413, 415, 422 (the message itself is bad) | poison at once |
//! | 401, 403 (the bridge's ingest key is refused) | leave it; pause polling |
//! | 503 with a key-state code (`KeyDisabled`, …) | re-queue it as a new message, hidden for the `Retry-After`; keep polling |
//! | 408, 429, 5xx, other 4xx, timeout, connection error | leave it for redelivery |
//!
//! A key-state refusal says nothing about the message: while an operator
//! has the key disabled, every message gets it. Leaving such a message
//! would spend one of its `max_dequeue_count` tries per visibility timeout
//! (the service counts every Get Messages), so a key disabled for longer
//! than a few timeouts would move the whole queue to the poison queue.
//! Re-queued, it starts again with a dequeue count of 0 and the rest of its
//! time to live (a message that never expires stays so); a message with
//! less than two visibility timeouts of its time to live left is poisoned
//! instead, as it would likely expire unseen before the key is usable.
//! Polling goes on ([`Action::pause_secs`]): the key may be one tenant's
//! (each tenant's records are sealed under its own key), and pausing the
//! queue would stall every other tenant behind it; the re-queued message
//! stays hidden for its delay, so it is not tried again sooner.
//!
//! A message left for redelivery reappears after the visibility timeout.
//! When a forward fails and the message has been dequeued
//! `max_dequeue_count` times, it is poisoned instead of being left, and a
//! message that comes back with a higher count (the bridge stopped before
//! deciding) is poisoned without being forwarded again: at most
//! `max_dequeue_count` tries, as Azure Functions' queue trigger.

use cmk_core::time::UnixTime;

/// What forwarding one message produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// The component answered.
    Answered {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, in seconds, when sent and readable.
        retry_after_secs: Option<u64>,
        /// The answer's `error.code`, if any.
        code: Option<String>,
        /// The answer's `accepted` count, if any.
        accepted: Option<u64>,
        /// The answer's `conflicts` count (create mode: events whose
        /// document id holds another event), if any.
        conflicts: Option<u64>,
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
    /// Refused for the key's state while too little of its time to live
    /// is left for another round: re-queued, it could expire unseen.
    Expiring,
    /// Create mode: an event's document id holds another event, so its
    /// content was refused (no retry changes that), and deleting the
    /// message would leave it nowhere. The events that were stored are
    /// stored again, identically, if the message is replayed.
    Conflict,
}

impl PoisonReason {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonReason::Refused(_) => "refused",
            PoisonReason::MaxDequeueCount => "max-dequeue-count",
            PoisonReason::Expiring => "expiring",
            PoisonReason::Conflict => "conflict",
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
    /// Put it back as a new message (dequeue count 0) hidden for
    /// `delay_secs`, then delete it: the refusal was not the message's.
    Requeue {
        /// Visibility delay of the new message.
        delay_secs: u64,
    },
    /// Leave it: it reappears after the visibility timeout.
    Leave {
        /// Pause polling this long (the component's `Retry-After`).
        pause_secs: Option<u64>,
        /// The bridge's own credential was refused (401/403).
        auth: bool,
    },
}

impl Action {
    /// How long polling of the whole queue pauses after this action: only
    /// when the bridge's own credential is refused or the component asks
    /// for a pause with a message left. A key-state refusal re-queues the
    /// message without a pause: it speaks for one key, perhaps one tenant's.
    pub fn pause_secs(&self) -> Option<u64> {
        match self {
            Action::Leave { pause_secs, .. } => *pause_secs,
            Action::Delete | Action::Poison(_) | Action::Requeue { .. } => None,
        }
    }
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

/// The component's codes for a key-encryption key it may not use (503):
/// an operator's doing, not the message's.
pub const KEY_STATE_CODES: &[&str] = &[
    "KeyDisabled",
    "KeyExpired",
    "KeyNotYetValid",
    "KeyNotFound",
    "KeyAccessDenied",
    "KeyOperationForbidden",
    "KeyTypeNotSupported",
];

/// Pause after a key-state refusal without `Retry-After`.
pub const KEY_PAUSE_SECS: u64 = 60;

/// The number of events the component should accept for a message text, as
/// it decodes them (`None` if the bridge cannot tell: then no answer
/// confirms the message). The bridge does not know the component's
/// `max_nesting_depth`, so it decodes with the highest value that setting
/// may have: whatever the component accepts, the bridge can count.
pub fn expected_events(text: &str) -> Option<usize> {
    cmk_core::queue::decode(
        Some("text/plain; charset=utf-8"),
        text.as_bytes(),
        cmk_core::config::MAX_DEPTH,
    )
    .ok()
    .map(|m| m.events.len())
}

/// After forwarding a message the bridge expects `expected` events of.
pub fn after_forward(
    result: &Forwarded,
    expected: Option<usize>,
    dequeue_count: u32,
    max: u32,
) -> Action {
    let (pause, auth) = match result {
        // Every event is accounted for: stored, or (create mode) refused
        // because its id holds another event, which no retry changes. Only
        // a message whose every event was stored is deleted; one with a
        // conflict goes to the poison queue, which keeps the refused
        // event's content.
        Forwarded::Answered {
            status: 200,
            accepted: Some(n),
            conflicts,
            ..
        } if expected.is_some_and(|e| Some(e as u64) == n.checked_add(conflicts.unwrap_or(0))) => {
            return match conflicts {
                Some(c) if *c > 0 => Action::Poison(PoisonReason::Conflict),
                _ => Action::Delete,
            };
        }
        // Every event conflicts: nothing was stored, and no retry changes it.
        Forwarded::Answered {
            status: 409,
            code: Some(code),
            ..
        } if code == "DocumentConflict" => return Action::Poison(PoisonReason::Conflict),
        // Any other success is not a confirmation (a proxy, a wrong
        // target, another version): leave it, it is tried again.
        Forwarded::Answered { status, .. } if (200..300).contains(status) => (None, false),
        Forwarded::Answered { status, .. } if is_permanent(*status) => {
            return Action::Poison(PoisonReason::Refused(*status))
        }
        Forwarded::Answered {
            status: 401 | 403,
            retry_after_secs,
            ..
        } => (Some(retry_after_secs.unwrap_or(AUTH_PAUSE_SECS)), true),
        Forwarded::Answered {
            status: 503,
            code: Some(code),
            retry_after_secs,
            ..
        } if KEY_STATE_CODES.contains(&code.as_str()) => {
            return Action::Requeue {
                delay_secs: retry_after_secs
                    .unwrap_or(KEY_PAUSE_SECS)
                    .clamp(1, MAX_PAUSE_SECS),
            }
        }
        Forwarded::Answered {
            retry_after_secs, ..
        } => (*retry_after_secs, false),
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

/// A message's time to live, as a re-queued copy is given it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageTtl {
    /// It never expires (`messagettl=-1`).
    Never,
    /// Seconds left.
    Secs(u64),
}

/// The expiration time the Queue service reports for a message that never
/// expires (`messagettl=-1`): "Fri, 31 Dec 9999 23:59:59 GMT". Anything
/// from the start of that year on is read as "never".
const NEVER_EXPIRES_FROM: UnixTime = UnixTime(253_370_764_800); // 9999-01-01T00:00:00Z

/// The time to live a message expiring at `expiration` (RFC 1123, as Get
/// Messages gives it) has left at `now`; `None` when unknown. A re-queued
/// copy gets this as its time to live, so re-queuing never extends a
/// message's life, and a message that never expires stays so.
pub fn remaining_ttl(expiration: Option<&str>, now: UnixTime) -> Option<MessageTtl> {
    let t = UnixTime::parse_rfc1123(expiration?.trim())?;
    Some(if t.0 >= NEVER_EXPIRES_FROM.0 {
        MessageTtl::Never
    } else {
        MessageTtl::Secs(t.0.saturating_sub(now.0).max(1))
    })
}

/// For a message refused for the key's state: the time to live of its
/// re-queued copy, or poison when less than two visibility timeouts of it
/// are left (the copy is hidden up to one; it would likely expire, unseen
/// by anyone, before the key is usable again). With an unknown expiration
/// the copy gets the service's default time to live.
pub fn requeue_ttl(
    ttl: Option<MessageTtl>,
    visibility_secs: u32,
) -> Result<Option<MessageTtl>, PoisonReason> {
    match ttl {
        Some(MessageTtl::Secs(t)) if t < 2 * u64::from(visibility_secs) => {
            Err(PoisonReason::Expiring)
        }
        other => Ok(other),
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
            code: None,
            accepted: None,
            conflicts: None,
        }
    }

    fn accepted(n: u64) -> Forwarded {
        Forwarded::Answered {
            status: 200,
            retry_after_secs: None,
            code: None,
            accepted: Some(n),
            conflicts: None,
        }
    }

    fn with_conflicts(accepted: u64, conflicts: u64) -> Forwarded {
        Forwarded::Answered {
            status: 200,
            retry_after_secs: None,
            code: None,
            accepted: Some(accepted),
            conflicts: Some(conflicts),
        }
    }

    fn refused(status: u16, code: &str, retry_after_secs: Option<u64>) -> Forwarded {
        Forwarded::Answered {
            status,
            retry_after_secs,
            code: Some(code.into()),
            accepted: None,
            conflicts: None,
        }
    }

    fn after_forward(result: &Forwarded, dequeue_count: u32, max: u32) -> Action {
        super::after_forward(result, Some(3), dequeue_count, max)
    }

    #[test]
    fn success_deletes_and_bad_messages_are_poisoned_at_once() {
        assert_eq!(after_forward(&accepted(3), 1, 5), Action::Delete);
        for s in [400, 413, 415, 422] {
            assert_eq!(
                after_forward(&answered(s), 1, 5),
                Action::Poison(PoisonReason::Refused(s))
            );
        }
    }

    #[test]
    fn only_a_200_with_the_expected_count_deletes() {
        let leave = Action::Leave {
            pause_secs: None,
            auth: false,
        };
        for r in [answered(200), answered(201), answered(204), accepted(2)] {
            assert_eq!(after_forward(&r, 1, 5), leave, "{r:?}");
        }
        // Unconfirmed to the end: tries run out as for any failure.
        assert_eq!(
            after_forward(&answered(204), 5, 5),
            Action::Poison(PoisonReason::MaxDequeueCount)
        );
        // A message the bridge cannot count is never confirmed.
        assert_eq!(super::after_forward(&accepted(3), None, 1, 5), leave);
    }

    #[test]
    fn create_mode_conflicts_are_poisoned_not_deleted() {
        // 3 events: 2 stored, 1 whose id holds another event: the refused
        // event's content must not go with the message.
        let conflict = Action::Poison(PoisonReason::Conflict);
        assert_eq!(after_forward(&with_conflicts(2, 1), 1, 5), conflict);
        assert_eq!(after_forward(&with_conflicts(0, 3), 1, 5), conflict);
        assert_eq!(after_forward(&with_conflicts(3, 0), 1, 5), Action::Delete);
        // Every event conflicts: 409 DocumentConflict, on the first try.
        let all = Forwarded::Answered {
            status: 409,
            accepted: None,
            conflicts: None,
            code: Some("DocumentConflict".into()),
            retry_after_secs: None,
        };
        assert_eq!(super::after_forward(&all, Some(3), 1, 5), conflict);
        let leave = Action::Leave {
            pause_secs: None,
            auth: false,
        };
        // Events missing either way are not confirmed.
        assert_eq!(after_forward(&with_conflicts(1, 1), 1, 5), leave);
        assert_eq!(after_forward(&with_conflicts(2, 2), 1, 5), leave);
        assert_eq!(after_forward(&with_conflicts(u64::MAX, 1), 1, 5), leave);
    }

    #[test]
    fn key_state_refusals_requeue_without_spending_tries() {
        for code in KEY_STATE_CODES {
            // Even on the last try: the refusal is not the message's.
            assert_eq!(
                after_forward(&refused(503, code, Some(60)), 5, 5),
                Action::Requeue { delay_secs: 60 },
                "{code}"
            );
        }
        assert_eq!(
            after_forward(&refused(503, "KeyDisabled", None), 1, 5),
            Action::Requeue {
                delay_secs: KEY_PAUSE_SECS
            }
        );
        assert_eq!(
            after_forward(&refused(503, "KeyDisabled", Some(100_000)), 1, 5),
            Action::Requeue {
                delay_secs: MAX_PAUSE_SECS
            }
        );
        // Polling goes on: another tenant's messages behind this one are
        // forwarded; a busy component (a plain 503) or a refused bridge
        // credential pauses the queue.
        for code in KEY_STATE_CODES {
            assert_eq!(
                after_forward(&refused(503, code, Some(60)), 1, 5).pause_secs(),
                None,
                "{code}"
            );
        }
        assert_eq!(
            after_forward(&refused(503, "StoreUnavailable", Some(5)), 1, 5).pause_secs(),
            Some(5)
        );
        assert_eq!(
            after_forward(&refused(401, "Unauthorized", None), 1, 5).pause_secs(),
            Some(AUTH_PAUSE_SECS)
        );
        // Other 503s (the store or the HSM briefly unavailable, a body
        // that broke off) spend a try as before.
        for code in [
            "StoreUnavailable",
            "KeyServiceUnavailable",
            "BodyUnreadable",
        ] {
            assert_eq!(
                after_forward(&refused(503, code, Some(5)), 5, 5),
                Action::Poison(PoisonReason::MaxDequeueCount),
                "{code}"
            );
        }
    }

    #[test]
    fn the_component_and_the_bridge_agree_on_key_state_codes() {
        use cmk_core::hsm::Unavailable as U;
        for u in [
            U::Disabled,
            U::Expired,
            U::NotYetValid,
            U::NotFound,
            U::AccessDenied,
            U::OperationNotPermitted,
            U::WrongKeyType,
        ] {
            assert!(KEY_STATE_CODES.contains(&u.code()), "{}", u.code());
        }
    }

    #[test]
    fn the_expected_count_is_the_components_decoding() {
        let one = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        assert_eq!(expected_events(one), Some(1));
        assert_eq!(expected_events("not json"), None);
        // Base64 of a message at the deepest nesting the component may be
        // set to accept (100 levels: the array, the event, 98 in `x`) is
        // still counted; one level more is not.
        use base64::Engine as _;
        let nested = |levels: usize| {
            let text = format!(
                r#"[{{"id":"1","topic":"/t","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{{}},"dataVersion":"1","x":{}1{}}}]"#,
                r#"{"a":"#.repeat(levels),
                "}".repeat(levels)
            );
            base64::engine::general_purpose::STANDARD.encode(text)
        };
        assert_eq!(expected_events(&nested(98)), Some(1));
        assert_eq!(expected_events(&nested(99)), None);
    }

    #[test]
    fn transient_failures_are_left_until_the_last_try() {
        let busy = Forwarded::Answered {
            status: 503,
            retry_after_secs: Some(7),
            code: Some("StoreUnavailable".into()),
            accepted: None,
            conflicts: None,
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
                    retry_after_secs: Some(100_000),
                    code: None,
                    accepted: None,
                    conflicts: None,
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
    fn a_requeued_copy_keeps_the_rest_of_its_time_to_live() {
        let now = UnixTime(1_795_998_519);
        let exp = UnixTime(now.0 + 3600).rfc1123();
        assert_eq!(remaining_ttl(Some(&exp), now), Some(MessageTtl::Secs(3600)));
        assert_eq!(
            remaining_ttl(Some(&UnixTime(now.0 - 5).rfc1123()), now),
            Some(MessageTtl::Secs(1))
        );
        assert_eq!(remaining_ttl(None, now), None);
        assert_eq!(remaining_ttl(Some("soon"), now), None);
        // What the service reports for messagettl=-1: never, not a huge
        // number of seconds.
        assert_eq!(
            remaining_ttl(Some("Fri, 31 Dec 9999 23:59:59 GMT"), now),
            Some(MessageTtl::Never)
        );
        assert_eq!(
            remaining_ttl(Some("Thu, 31 Dec 9998 23:59:59 GMT"), now),
            Some(MessageTtl::Secs(253_370_764_799 - now.0))
        );
    }

    #[test]
    fn a_message_about_to_expire_is_poisoned_rather_than_requeued() {
        // Visibility timeout 30 s: a copy needs at least 60 s to live.
        assert_eq!(
            requeue_ttl(Some(MessageTtl::Secs(59)), 30),
            Err(PoisonReason::Expiring)
        );
        assert_eq!(
            requeue_ttl(Some(MessageTtl::Secs(1)), 30),
            Err(PoisonReason::Expiring)
        );
        assert_eq!(
            requeue_ttl(Some(MessageTtl::Secs(60)), 30),
            Ok(Some(MessageTtl::Secs(60)))
        );
        assert_eq!(
            requeue_ttl(Some(MessageTtl::Never), 30),
            Ok(Some(MessageTtl::Never))
        );
        assert_eq!(requeue_ttl(None, 30), Ok(None));
        assert_eq!(PoisonReason::Expiring.as_str(), "expiring");
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
