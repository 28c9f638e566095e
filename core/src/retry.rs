//! When to try a request again: a pure decision over the failure, the attempt
//! number and the time spent, so the policy is tested without clocks or sleeps.
//!
//! Transient failures (Cosmos DB 408, 429, 449, 5xx; connection failures and
//! timeouts) are retried with capped exponential back-off and jitter, or after
//! the pause the service asked for (`x-ms-retry-after-ms`), as long as the
//! wait still fits in the total time budget. After that the caller answers
//! 503 with `Retry-After`, and the sender redelivers.

/// Retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time for all attempts of one operation, in milliseconds.
    pub budget_ms: u64,
    /// First back-off, in milliseconds.
    pub base_ms: u64,
    /// Largest single back-off, in milliseconds.
    pub cap_ms: u64,
    /// Most attempts, the first included.
    pub max_attempts: u32,
    /// Longest wait for one attempt's answer, in milliseconds.
    pub attempt_timeout_ms: u64,
}

impl Default for RetryPolicy {
    /// 10 s in all: well under Event Grid's 30 s delivery timeout.
    fn default() -> Self {
        Self {
            budget_ms: 10_000,
            base_ms: 100,
            cap_ms: 2_000,
            max_attempts: 8,
            attempt_timeout_ms: 4_000,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this many milliseconds, then try again.
    RetryAfter(u64),
    /// Stop and report the failure.
    GiveUp,
}

impl RetryPolicy {
    /// Decides after attempt number `attempt` (1 for the first) failed.
    /// `transient` says whether the failure may pass; `asked_ms` is the
    /// service's requested pause; `elapsed_ms` the time spent so far;
    /// `jitter` a uniform random number in `[0, 1)`.
    pub fn decide(
        &self,
        attempt: u32,
        transient: bool,
        asked_ms: Option<u64>,
        elapsed_ms: u64,
        jitter: f64,
    ) -> Decision {
        if !transient || attempt >= self.max_attempts {
            return Decision::GiveUp;
        }
        let wait = match asked_ms {
            Some(ms) => ms,
            None => {
                let exp = self
                    .base_ms
                    .saturating_mul(1u64 << (attempt - 1).min(30))
                    .min(self.cap_ms);
                // "Equal jitter": half fixed, half random.
                exp / 2 + ((exp / 2) as f64 * jitter.clamp(0.0, 1.0)) as u64
            }
        };
        if elapsed_ms.saturating_add(wait) >= self.budget_ms {
            Decision::GiveUp
        } else {
            Decision::RetryAfter(wait)
        }
    }

    /// This policy, with its budget cut to what is left of the inbound
    /// request's own deadline (`remaining_ms`), so that all the calls one
    /// delivery makes (tokens, key state, wrap, writes) fit inside it.
    pub fn within(&self, remaining_ms: u64) -> RetryPolicy {
        RetryPolicy {
            budget_ms: self.budget_ms.min(remaining_ms),
            ..*self
        }
    }

    /// Timeout for the next attempt: the per-attempt limit, or what is left
    /// of the budget if that is less.
    pub fn attempt_timeout(&self, elapsed_ms: u64) -> u64 {
        self.attempt_timeout_ms
            .min(self.budget_ms.saturating_sub(elapsed_ms))
            .max(1)
    }
}

/// Whether a transport failure (the host's error text) is one no retry can
/// fix: the host refused the destination (`allowed_outbound_hosts`) or the
/// URL itself.
pub fn transport_is_permanent(error: &str) -> bool {
    [
        "HttpRequestDenied",
        "HttpRequestUriInvalid",
        "not allowed",
        "denied",
    ]
    .iter()
    .any(|p| error.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_deadline_caps_every_calls_budget() {
        assert_eq!(P.within(30_000).budget_ms, 10_000);
        assert_eq!(P.within(3_000).budget_ms, 3_000);
        assert_eq!(P.within(3_000).attempt_timeout(2_500), 500);
        assert_eq!(P.within(0).decide(1, true, None, 0, 0.0), Decision::GiveUp);
    }

    #[test]
    fn refused_destinations_are_not_retried() {
        assert!(transport_is_permanent("ErrorCode::HttpRequestDenied"));
        assert!(transport_is_permanent("destination not allowed: https://x"));
        assert!(!transport_is_permanent("connection refused"));
        assert!(!transport_is_permanent("no complete answer within 4000 ms"));
    }

    const P: RetryPolicy = RetryPolicy {
        budget_ms: 10_000,
        base_ms: 100,
        cap_ms: 2_000,
        max_attempts: 8,
        attempt_timeout_ms: 4_000,
    };

    #[test]
    fn attempt_timeouts_fit_in_the_budget() {
        assert_eq!(P.attempt_timeout(0), 4_000);
        assert_eq!(P.attempt_timeout(8_000), 2_000);
        assert_eq!(P.attempt_timeout(20_000), 1);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        assert_eq!(P.decide(1, false, None, 0, 0.5), Decision::GiveUp);
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        assert_eq!(P.decide(1, true, None, 0, 0.0), Decision::RetryAfter(50));
        assert_eq!(
            P.decide(1, true, None, 0, 0.999_999),
            Decision::RetryAfter(99)
        );
        assert_eq!(P.decide(2, true, None, 0, 0.0), Decision::RetryAfter(100));
        assert_eq!(P.decide(3, true, None, 0, 1.0), Decision::RetryAfter(400));
        assert_eq!(P.decide(7, true, None, 0, 1.0), Decision::RetryAfter(2_000));
        assert_eq!(P.decide(7, true, None, 0, 0.0), Decision::RetryAfter(1_000));
    }

    #[test]
    fn the_services_pause_wins() {
        assert_eq!(
            P.decide(1, true, Some(1_234), 0, 0.0),
            Decision::RetryAfter(1_234)
        );
    }

    #[test]
    fn the_budget_and_attempt_cap_bound_the_total() {
        assert_eq!(P.decide(2, true, Some(3_000), 7_500, 0.0), Decision::GiveUp);
        assert_eq!(P.decide(8, true, None, 0, 0.0), Decision::GiveUp);
        // Summed over a worst case, the waits never pass the budget.
        let (mut elapsed, mut attempt) = (0u64, 1u32);
        while let Decision::RetryAfter(w) = P.decide(attempt, true, None, elapsed, 1.0) {
            elapsed += w + 50; // 50 ms per attempt
            attempt += 1;
        }
        assert!(elapsed <= P.budget_ms, "{elapsed}");
        assert!(attempt > 3);
    }
}
