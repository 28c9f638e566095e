//! cmk-ingest-bridge polls an Azure Storage queue over REST and forwards each
//! message to the component's `POST /queue`: delete on success, leave for
//! redelivery on a transient failure, move to the poison queue on a
//! permanent refusal or after `BRIDGE_MAX_DEQUEUE_COUNT` tries.
//!
//! A sans-IO core with a thin driver, like the component: [`address`] (queue
//! URLs), [`sharedkey`] (Shared Key signing), [`storage`] (Queue service
//! requests and XML answers), [`decide`] (what to do after each answer),
//! [`config`] (settings) are pure and unit-tested; [`driver`] is the only
//! module that sends, sleeps or reads the clock, and `main` wires signals.
//! Entra ID token requests and their answers come from the component's own
//! sans-IO `cmk_core::entra`.
#![deny(missing_docs)]

pub mod address;
pub mod config;
pub mod decide;
pub mod driver;
pub mod log;
pub mod sharedkey;
pub mod storage;
