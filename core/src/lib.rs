//! The sans-IO core of cmk-ingest: every decision the component makes, as
//! pure functions over bytes and [`http`] values. Nothing here sends a
//! request, draws a random number or touches the Spin host, and no decision
//! reads a clock: whatever depends on time takes `now`, and the component
//! crate (the repository root) hands in `now`, nonces, data keys and the
//! answers of outbound calls.
//!
//! Two small pieces are there for the edge and called by no core function
//! (`tests/layout.rs` checks that no other core file reads a clock or keeps
//! global state):
//! - [`time::UnixTime::now`] reads the wall clock (`wasi:clocks/wall-clock`
//!   in the component), so the component and the queue bridge take `now`
//!   the same way;
//! - [`tally`]'s `reset`, `attempt`, `charge`, `events` and `current` keep
//!   the current request's call counts in a thread-local (each request runs
//!   in an instance of its own): the one sending module counts into it and
//!   the entry point logs it, without threading a counter through every
//!   call.
//!
//! This crate has no dependency on `spin-sdk`, so the compiler keeps I/O
//! out (`tests/layout.rs` at the root checks that it stays so).
//!
//! # The flow of a delivery
//!
//! ```text
//! delivery bytes ──events / queue──▶ events ──document──▶ documents
//!   ──envelope (protected fields sealed under the delivery's data key,
//!     wrapped by the key-encryption key: hsm)──▶ sealed documents
//!   ──cosmos (signed upserts / transactional batches)──▶ requests
//!   ──(the component sends them)──▶ answers ──ingest::summarize──▶ outcome
//! ```
//!
//! [`ingest`] strings these steps together for `POST /events` and
//! `POST /queue`: it authorizes the sender, plans every write before any is
//! sent, seals, and turns the answers into the response. [`records`],
//! [`rewrap`], [`seal`] and [`erase`] plan reads and maintenance the same way; [`entra`]
//! and [`jwt`] build and check tokens; [`config`] reads the settings once
//! into a typed struct; [`api`] is the HTTP contract every module's error
//! converts into.
//!
//! Smaller pieces: [`access`] checks inbound keys (ingest, read, admin);
//! [`endpoint`] validates service origins; [`percent`] is the one
//! percent-encoding; [`retry`] decides whether and when to try again;
//! [`time`] holds `now` as a plain value; [`tally`] counts one request's
//! outbound calls for its log line; [`probe`] decides what `GET /readyz`
//! tells whom; [`kvseal`] binds key-value store entries to the deployment;
//! [`answer`] assembles an outbound answer from what the host delivered.
//! The crate's own integration tests (`core/tests/`) feed it generated
//! malformed input, check the record format's test vectors, and check the
//! build's key-wiping features.
//!
//! # Example
//!
//! One Event Grid event becomes a document whose `data.card` is sealed,
//! then a signed upsert; the sealed field opens again with the data key.
//!
//! ```
//! use cmk_core::cosmos::{ContainerLink, CosmosRequest, Credential, Endpoint, MasterKey};
//! use cmk_core::document::into_document;
//! use cmk_core::envelope::{self, Dek};
//! use cmk_core::events::{decode_event_grid, Delivery};
//! use cmk_core::time::UnixTime;
//!
//! let body = br#"[{"id": "e1", "topic": "/shop", "subject": "order", "eventType": "Paid",
//!                  "eventTime": "2026-12-01T00:00:00Z", "data": {"card": "4111 1111"}}]"#;
//! let Delivery::Events(events) = decode_event_grid(body)? else { unreachable!() };
//! let mut doc = into_document(events.into_iter().next().unwrap(), "/source")?;
//!
//! // In the component the data key and the nonces come from the host's
//! // random source and the wrapped key from the Managed HSM.
//! let dek = Dek::from_bytes(&[7; 32])?;
//! let kid = "https://hsm.example/keys/events/0123";
//! let mut n = 0u8;
//! let sealed = envelope::seal(&mut doc.body, &["/event/data/card".into()], &dek, kid,
//!                             b"wrapped", || { n += 1; [n; 12] })?;
//! assert_eq!(sealed, ["/event/data/card"]);
//! assert!(!doc.body.to_string().contains("4111"));
//!
//! let credential = Credential::MasterKey(MasterKey::from_base64("c2VjcmV0")?);
//! let endpoint = Endpoint::parse("https://acct.documents.azure.com")?;
//! let request = CosmosRequest::new(&endpoint, &credential, UnixTime(1_800_000_000))
//!     .upsert_document(&ContainerLink::new("db", "events"), &doc.partition_key,
//!                      serde_json::to_vec(&doc.body)?)?;
//! assert!(request.headers()["authorization"].to_str()?.starts_with("type%3Dmaster"));
//!
//! let opened = envelope::open(&doc.body, &dek, None)?;
//! assert_eq!(opened["event"]["data"]["card"], "4111 1111");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod access;
pub mod answer;
pub mod api;
pub mod compact_json;
pub mod config;
pub mod cosmos;
pub mod document;
pub mod endpoint;
pub mod entra;
pub mod envelope;
pub mod erase;
pub mod events;
pub mod hsm;
pub mod ingest;
pub mod jwt;
pub mod kvseal;
pub mod logline;
pub mod percent;
pub mod probe;
pub mod queue;
pub mod records;
pub mod retry;
pub mod rewrap;
mod scan;
pub mod seal;
pub mod tally;
pub mod time;
pub mod wire_body;

#[cfg(test)]
mod arbitrary_json;
#[cfg(test)]
mod testing;
