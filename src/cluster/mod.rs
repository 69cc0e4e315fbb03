//! The replicated cluster state (`ClusterState`), the commands that change it and its
//! bounded history. Pure and deterministic: no clock, no IO, no async.
//!
//! Only commands committed through Raft reach [`ClusterState::apply`]; the state machine
//! of the consensus layer calls it in log order and stores the result in snapshots
//! (serde). The policy reads the committed state and proposes commands; apply re-checks
//! the safety rules on its own (defence in depth), so a stale or duplicated proposal is
//! refused instead of producing two primaries.

pub mod command;
pub mod history;
pub mod operation;
pub mod state;

pub use command::{
    Command, Demote, DemoteReason, Direction, Promote, PromoteReason, MAX_REASON_BYTES,
};
pub use history::{History, HistoryEntry, HistoryEvent, HISTORY_LIMIT};
pub use state::{
    Applied, ClusterState, FailedOver, FailoverRecord, InvariantViolation, Maintenance, Move,
    Operation, OperationKind, Outcome, Phase, PrimaryRecord, Rejected, Step, MAX_DRAINED_NODES,
};

#[cfg(test)]
mod tests;
