//! The sans-IO core of cmk-ingest: every decision the component makes, as
//! pure functions over bytes and [`http`] values. Nothing here sends a
//! request, reads a clock, draws a random number or touches the Spin host;
//! the component crate (the repository root) does that and hands the
//! results in (`now`, nonces, data keys, the answers of outbound calls).
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
pub mod percent;
pub mod probe;
pub mod queue;
pub mod records;
pub mod retry;
pub mod rewrap;
pub mod seal;
pub mod tally;
pub mod time;
