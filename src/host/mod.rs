//! Host adapters: the only code that calls the Spin host (outbound HTTP,
//! variables, the key-value store, clocks, random bytes, stderr). Each
//! feeds the core's pure functions and carries out what they decide.

pub mod account;
pub mod inbound;
pub mod kek;
pub mod log;
pub mod outbound;
pub mod random;
pub mod request;
pub mod token;
pub mod wire;
