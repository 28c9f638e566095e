//! One module per route family. Each reads the request through
//! [`crate::host::request`], asks the core what to do and has the host
//! adapters do it.

pub mod delivery;
pub mod maintenance;
pub mod reader;
pub mod readiness;
