//! The vocabulary of operations (switchover, failback): what kind, which step, which phase,
//! how it ended. Shared by the commands, the history and the state, so none of them imports
//! another for it.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Switchover,
    Failback,
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OperationKind::Switchover => "switchover",
            OperationKind::Failback => "failback",
        })
    }
}

/// One move of the primary from a source to a destination node. The order is what makes
/// a planned move lose no acknowledged write and never run two primaries:
/// 1. `Pausing`: writes are paused; the source waits until the destination has every log
///    entry, runs its demote hook, then commits Demote. (Demote before transfer: once the
///    destination leads it may promote at once, so the source must already be stopped.)
/// 2. `Transferring`: no primary; the leader hands Raft leadership to the destination.
/// 3. `Promoting`: the destination committed Promote and runs its promote hook.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Pausing,
    Transferring,
    Promoting,
}

/// Where an operation is.
///
/// Switchover: `Scheduled`? → `CuttingOver(Pausing → Transferring → Promoting)` → end.
/// Failback: `Syncing` → `CuttingOver(..)` → `Verifying` → `AwaitingCommit`? → end;
/// undo: `Verifying | AwaitingCommit` → `Undoing(Pausing → Transferring → Promoting)` → end.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Switchover waiting for its scheduled time (nothing paused yet).
    Scheduled,
    /// Failback waiting for home to catch up (nothing paused yet).
    Syncing,
    CuttingOver(Step),
    /// Failback: home is primary; its monitor must pass `verify_checks` times within
    /// `verify_timeout`.
    Verifying,
    /// Failback verified; waiting for `quorate failback commit` (or undo).
    AwaitingCommit,
    /// Failback undo: moving the primary back to the operation's `from` node.
    Undoing(Step),
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = |s: &Step| match s {
            Step::Pausing => "pausing",
            Step::Transferring => "transferring",
            Step::Promoting => "promoting",
        };
        match self {
            Phase::Scheduled => f.write_str("scheduled"),
            Phase::Syncing => f.write_str("syncing"),
            Phase::CuttingOver(s) => write!(f, "cutting_over/{}", step(s)),
            Phase::Verifying => f.write_str("verifying"),
            Phase::AwaitingCommit => f.write_str("awaiting_commit"),
            Phase::Undoing(s) => write!(f, "undoing/{}", step(s)),
        }
    }
}

/// How an operation ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Switchover finished: the target is primary.
    Completed,
    /// Failback committed: home is primary, `failed_over` cleared.
    Committed,
    /// Failback undone: the previous primary is primary again, still failed over.
    Undone,
    /// Stopped by the operator before anything moved.
    Cancelled,
    /// Stopped by quorate (timeout, node lost, role change outside the operation...).
    Aborted { reason: String },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Completed => f.write_str("completed"),
            Outcome::Committed => f.write_str("committed"),
            Outcome::Undone => f.write_str("undone"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::Aborted { reason } => write!(f, "aborted: {reason}"),
        }
    }
}
