//! What one inbound request cost: its outbound calls by service (attempts,
//! throttled answers, failures), the Cosmos DB request charge they were
//! billed, and the events it carried. The edge counts every attempt here as
//! it is made; the entry point writes the sum into the request's one summary
//! log line, which the operator's queries read (`infra/monitoring/queries`).
//!
//! Each request runs in an instance of its own, so the tally is per thread
//! and starts empty with [`reset`].

use std::cell::RefCell;

use serde_json::{json, Value};

/// The services the component calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Managed HSM: key state, wrapKey, unwrapKey.
    Hsm,
    /// Entra ID's token endpoint (or the token proxy): access tokens.
    Entra,
    /// The authority's signing keys (JWKS) that sender tokens are verified
    /// with: a failure here refuses senders, it does not stop the
    /// component's own calls.
    Jwks,
    /// Cosmos DB.
    Cosmos,
}

/// Attempts to one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// Attempts made (retries included).
    pub calls: u32,
    /// Answered 429.
    pub throttled: u32,
    /// No answer (transport failure, timeout) or answered 5xx.
    pub failed: u32,
    /// Answered 401 or 403.
    pub refused: u32,
}

impl Calls {
    fn to_json(self) -> Value {
        json!({
            "calls": self.calls,
            "throttled": self.throttled,
            "failed": self.failed,
            "refused": self.refused,
        })
    }
}

/// Calls into the runtime host that are not outbound requests: Spin
/// variables read and key-value store operations. Each crosses the
/// component boundary (and, in Spin, a variables provider may itself ask a
/// secret store), so a delivery should make few.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCalls {
    /// `variables.get`.
    pub variables: u32,
    /// `key-value.store.open`.
    pub kv_open: u32,
    /// `key-value.store.get`.
    pub kv_get: u32,
    /// `key-value.store.set` and `delete`.
    pub kv_write: u32,
}

/// One kind of host call, for [`host`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCall {
    /// A Spin variable read.
    Variable,
    /// A key-value store opened.
    KvOpen,
    /// A key-value entry read.
    KvGet,
    /// A key-value entry written or deleted.
    KvWrite,
}

impl HostCalls {
    fn to_json(self) -> Value {
        json!({
            "variables": self.variables,
            "kv_open": self.kv_open,
            "kv_get": self.kv_get,
            "kv_write": self.kv_write,
        })
    }
}

/// The tally of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Managed HSM attempts.
    pub hsm: Calls,
    /// Token endpoint attempts.
    pub entra: Calls,
    /// Signing-key (JWKS) fetches.
    pub jwks: Calls,
    /// Cosmos DB attempts.
    pub cosmos: Calls,
    /// Request units Cosmos DB billed, over every attempt.
    pub request_charge: f64,
    /// Events the delivery carried, once decoded.
    pub events: Option<usize>,
    /// Variables and key-value calls into the runtime host.
    pub host: HostCalls,
}

impl Tally {
    /// Counts one attempt: its status, or `None` when no answer came.
    pub fn attempt(&mut self, peer: Peer, status: Option<u16>) {
        let c = match peer {
            Peer::Hsm => &mut self.hsm,
            Peer::Entra => &mut self.entra,
            Peer::Jwks => &mut self.jwks,
            Peer::Cosmos => &mut self.cosmos,
        };
        c.calls += 1;
        match status {
            None => c.failed += 1,
            Some(429) => c.throttled += 1,
            Some(401 | 403) => c.refused += 1,
            Some(s) if s >= 500 => c.failed += 1,
            Some(_) => {}
        }
    }

    /// The summary fields of the request's log line.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("events", json!(self.events)),
            ("hsm", self.hsm.to_json()),
            ("entra", self.entra.to_json()),
            ("jwks", self.jwks.to_json()),
            ("cosmos", self.cosmos.to_json()),
            ("host", self.host.to_json()),
            // Rounded as Cosmos DB reports it (two decimals).
            (
                "request_charge",
                json!((self.request_charge * 100.0).round() / 100.0),
            ),
        ]
    }
}

thread_local! {
    static CURRENT: RefCell<Tally> = RefCell::new(Tally::default());
}

/// Starts an empty tally for the request.
pub fn reset() {
    CURRENT.with(|t| *t.borrow_mut() = Tally::default());
}

/// Counts one attempt of the current request.
pub fn attempt(peer: Peer, status: Option<u16>) {
    CURRENT.with(|t| t.borrow_mut().attempt(peer, status));
}

/// Counts one call into the runtime host for the current request.
pub fn host(call: HostCall) {
    CURRENT.with(|t| {
        let h = &mut t.borrow_mut().host;
        let n = match call {
            HostCall::Variable => &mut h.variables,
            HostCall::KvOpen => &mut h.kv_open,
            HostCall::KvGet => &mut h.kv_get,
            HostCall::KvWrite => &mut h.kv_write,
        };
        *n = n.saturating_add(1);
    });
}

/// Adds request units billed to the current request.
pub fn charge(request_units: f64) {
    if request_units.is_finite() && request_units > 0.0 {
        CURRENT.with(|t| t.borrow_mut().request_charge += request_units);
    }
}

/// Records how many events the current request's delivery carried.
pub fn events(n: usize) {
    CURRENT.with(|t| t.borrow_mut().events = Some(n));
}

/// The current request's tally.
pub fn current() -> Tally {
    CURRENT.with(|t| t.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_classified_by_answer() {
        let mut t = Tally::default();
        for s in [
            Some(200),
            Some(429),
            Some(429),
            None,
            Some(503),
            Some(403),
            Some(404),
        ] {
            t.attempt(Peer::Hsm, s);
        }
        t.attempt(Peer::Entra, Some(401));
        t.attempt(Peer::Jwks, Some(503));
        assert_eq!(
            t.hsm,
            Calls {
                calls: 7,
                throttled: 2,
                failed: 2,
                refused: 1
            }
        );
        assert_eq!(t.entra.refused, 1);
        assert_eq!((t.entra.failed, t.jwks.calls, t.jwks.failed), (0, 1, 1));
        assert_eq!(t.cosmos, Calls::default());
    }

    #[test]
    fn fields_name_every_service_and_round_the_charge() {
        let mut t = Tally::default();
        t.attempt(Peer::Cosmos, Some(200));
        t.request_charge = 10.476_666;
        let f: serde_json::Map<String, Value> =
            t.fields().into_iter().map(|(k, v)| (k.into(), v)).collect();
        assert_eq!(f["cosmos"]["calls"], 1);
        assert_eq!(f["hsm"]["calls"], 0);
        assert_eq!(f["entra"]["failed"], 0);
        assert_eq!(f["jwks"]["calls"], 0);
        assert_eq!(f["request_charge"], 10.48);
        assert_eq!(f["events"], Value::Null);
        assert_eq!(f["host"]["variables"], 0);
    }

    #[test]
    fn host_calls_are_counted_by_kind() {
        reset();
        for c in [
            HostCall::Variable,
            HostCall::Variable,
            HostCall::KvOpen,
            HostCall::KvGet,
            HostCall::KvGet,
            HostCall::KvGet,
            HostCall::KvWrite,
        ] {
            host(c);
        }
        assert_eq!(
            current().host,
            HostCalls {
                variables: 2,
                kv_open: 1,
                kv_get: 3,
                kv_write: 1
            }
        );
        reset();
        assert_eq!(current().host, HostCalls::default());
    }

    #[test]
    fn the_thread_tally_starts_empty_after_reset() {
        attempt(Peer::Cosmos, Some(429));
        charge(5.0);
        charge(f64::NAN);
        events(3);
        let t = current();
        assert_eq!(
            (t.cosmos.throttled, t.request_charge, t.events),
            (1, 5.0, Some(3))
        );
        reset();
        assert_eq!(current(), Tally::default());
    }
}
