//! `POST /events`: from a request body to signed writes and back to an answer.
//!
//! Pure steps around the one I/O step (sending the writes): [`plan`] decodes
//! and validates everything and builds every signed request before anything is
//! sent, so a bad event or an oversized document fails the whole batch with
//! nothing written; [`summarize`] turns the write results into the answer.
//!
//! Documents that share a partition key go in transactional batches (at most
//! 100 operations and about 2 MB each), so a delivery costs one Cosmos DB
//! request per partition-key group rather than one per event; a lone document
//! is a plain upsert.
//!
//! With `cosmos_write_mode = create`, the same requests create only. A
//! document that already exists (409, or a batch answered 207 with a 409) is
//! then verified instead of overwritten: each document of the unit is
//! created on its own, and one that exists is read back and compared with
//! [`stored_matches`]; a match is "already written" (status 200, as an upsert
//! reports an existing document), anything else a conflict (409).

mod outcome;
mod plan;
mod protect;
mod scope;
mod seal;
mod sealed_size;
mod sender;
mod size;
mod verify;

pub use outcome::*;
pub use plan::*;
pub use protect::*;
pub use scope::*;
pub use seal::*;
pub use sealed_size::*;
pub use sender::*;
pub use size::*;
pub use verify::*;

#[cfg(test)]
mod tests;
