//! Raft: openraft's type configuration, TCP transport, durable log, state machine, snapshots.

pub mod app;
pub mod codec;
pub mod disk_probe;
pub mod early_election;
pub mod handle;
pub mod log_store;
pub mod network;
pub mod reseed_gate;
pub mod secure;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use types::{Raft, TypeConfig};
