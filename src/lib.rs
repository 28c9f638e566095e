//! cmk-ingest lands events in Azure Cosmos DB through requests it signs
//! itself, as a Spin WebAssembly component.
//!
//! The crate is a functional core with I/O at the edge: [`events`] decodes
//! deliveries ([`queue`] unwraps forwarded Storage queue messages into
//! them), [`document`] maps events to documents, [`cosmos`] builds signed
//! requests and parses answers, [`ingest`] plans a delivery and summarizes its
//! writes, [`envelope`] seals and opens protected fields, [`hsm`], [`entra`]
//! and [`jwt`] build and parse Managed HSM, token and sender-token messages,
//! [`rewrap`], [`seal`] and [`records`] plan maintenance and reads, [`api`] holds the
//! HTTP contract, [`config`] validates settings, [`tally`] sums what a
//! request's outbound calls cost for its log line. All of these are pure and
//! tested natively with `cargo test`. The wasm-only edge touches the host:
//! `outbound` (the only module that sends), `token`, `kek`, `account` and
//! `inbound` (tokens, key state, signing keys), one module per route family
//! (`delivery`, `reader`, `maintenance`, `readiness`; `request` reads the
//! incoming request), and `app`, the Spin entry point, which only routes.
#![deny(missing_docs)]

pub mod access;
pub mod answer;
pub mod api;
pub mod config;
pub mod cosmos;
pub mod document;
pub mod entra;
pub mod envelope;
pub mod events;
pub mod hsm;
pub mod ingest;
pub mod jwt;
pub mod kvseal;
pub mod log;
pub mod probe;
pub mod queue;
pub mod records;
pub mod retry;
pub mod rewrap;
pub mod seal;
pub mod tally;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod account;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod delivery;
#[cfg(target_arch = "wasm32")]
mod inbound;
#[cfg(target_arch = "wasm32")]
mod kek;
#[cfg(target_arch = "wasm32")]
mod maintenance;
#[cfg(target_arch = "wasm32")]
mod outbound;
#[cfg(target_arch = "wasm32")]
mod reader;
#[cfg(target_arch = "wasm32")]
mod readiness;
#[cfg(target_arch = "wasm32")]
mod request;
#[cfg(target_arch = "wasm32")]
mod token;
