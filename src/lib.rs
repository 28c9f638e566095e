//! cmk-ingest lands events in Azure Cosmos DB through requests it signs
//! itself, as a Spin WebAssembly component.
//!
//! This crate is the component's edge; every decision it acts on is made by
//! the sans-IO core, the `cmk-core` crate in `core/` (decoding deliveries,
//! mapping events to documents, sealing fields, building and signing Cosmos
//! DB, Managed HSM and Entra ID requests, parsing their answers, the HTTP
//! contract). The edge has two kinds of module, each wasm-only:
//!
//! - `host` adapters, the only code that touches the Spin host: `outbound`
//!   (the only module that sends), `token` (Entra ID access tokens), `kek`
//!   (the key-encryption key's state and wrapping), `account` (the Cosmos
//!   DB credential), `inbound` (senders' signing keys), `request` (reads the
//!   incoming request) and `log`;
//! - `routes`, one module per route family: `delivery`, `reader`,
//!   `maintenance`, `readiness`;
//!
//! and `app`, the Spin entry point, which only routes.
#![deny(missing_docs)]

#[cfg(target_arch = "wasm32")]
mod app;
// The component's allocator (its global allocator on wasm32), and the
// canonical ABI's `cabi_realloc` defined here, in the component's own code.
cmk_heap::cabi_realloc!();
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod routes;
