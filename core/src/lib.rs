//! The sans-IO core of cmk-ingest: every decision the component makes, as
//! pure functions over bytes and [`http`] values. Nothing here sends a
//! request, reads a clock, draws a random number or touches the Spin host;
//! the component crate (the repository root) does that and hands the
//! results in. This crate has no dependency on `spin-sdk`, so the compiler
//! keeps I/O out.
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
pub mod percent;
pub mod probe;
pub mod queue;
pub mod records;
pub mod retry;
pub mod rewrap;
pub mod seal;
pub mod tally;
pub mod time;
