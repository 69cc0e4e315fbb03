//! Commands: the only way [`ClusterState`](super::ClusterState) changes.
//!
//! A command is proposed by the Raft leader (usually on behalf of the policy), committed
//! by a quorum, then applied by every node in log order. Everything apply needs is inside
//! the command: wall-clock times are stamped by the proposer, because apply must give the
//! same result on every node and on every replay of the log, and a clock read inside
//! apply would not.
//!
//! Commands carry no openraft types: they are quorate's own vocabulary and must stay
//! readable in snapshots and logs across openraft upgrades.

use serde::{Deserialize, Serialize};

use super::operation::{OperationKind, Outcome, Phase};
use crate::types::{Epoch, HookKind, NodeId, Term};

/// Longest free-text reason (maintenance reason, abort reason) a command may carry, in
/// bytes. Reasons are stored in the bounded history and in every snapshot.
pub const MAX_REASON_BYTES: usize = 512;

/// Why a node is being promoted. Besides documentation (history, hooks' `QUORATE_REASON`)
/// the reason decides which checks apply enforces and how `failed_over` changes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PromoteReason {
    /// First primary of the cluster (no node ever held an epoch).
    Startup,
    /// Unplanned: the previous primary died, lost its lease, failed its service or
    /// restarted.
    Failover,
    /// Planned hand-over without an operation: the previous primary released the role
    /// because it was drained or shut down gracefully.
    Handover,
    /// Step of a switchover operation (target promotes).
    Switchover,
    /// Step of a failback operation (home promotes).
    Failback,
    /// Step of a failback undo (the previous primary promotes again).
    FailbackUndo,
    /// Operator override: the only reason allowed to promote a drained node or to promote
    /// while maintenance is on.
    Forced,
}

impl PromoteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PromoteReason::Startup => "startup",
            PromoteReason::Failover => "failover",
            PromoteReason::Handover => "handover",
            PromoteReason::Switchover => "switchover",
            PromoteReason::Failback => "failback",
            PromoteReason::FailbackUndo => "failback_undo",
            PromoteReason::Forced => "forced",
        }
    }

    /// Forced promotions bypass the drained and maintenance checks.
    pub fn is_forced(self) -> bool {
        matches!(self, PromoteReason::Forced)
    }

    /// The operation step this promotion belongs to, if any.
    pub fn operation_step(self) -> Option<(OperationKind, Direction)> {
        match self {
            PromoteReason::Switchover => Some((OperationKind::Switchover, Direction::Forward)),
            PromoteReason::Failback => Some((OperationKind::Failback, Direction::Forward)),
            PromoteReason::FailbackUndo => Some((OperationKind::Failback, Direction::Back)),
            _ => None,
        }
    }
}

impl std::fmt::Display for PromoteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the primary released its role.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DemoteReason {
    /// No quorum acknowledged the leader within `lease` (safety rule 3).
    LeaseLost,
    /// The primary stopped being the Raft leader (safety rule 1).
    LeadershipLost,
    /// A newer promotion was committed while this node still acted (rule 1a).
    Superseded,
    /// The monitor kept failing and local restarts were exhausted, or promote failed.
    ResourceFailure,
    /// The operator drained the node.
    Drained,
    /// The daemon is stopping (`systemctl stop`).
    Shutdown,
    /// Step of a switchover operation (source demotes).
    Switchover,
    /// Step of a failback operation (current primary demotes before home promotes).
    Failback,
    /// Step of a failback undo (home demotes before the previous primary promotes).
    FailbackUndo,
}

impl DemoteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DemoteReason::LeaseLost => "lease_lost",
            DemoteReason::LeadershipLost => "leadership_lost",
            DemoteReason::Superseded => "superseded",
            DemoteReason::ResourceFailure => "resource_failure",
            DemoteReason::Drained => "drained",
            DemoteReason::Shutdown => "shutdown",
            DemoteReason::Switchover => "switchover",
            DemoteReason::Failback => "failback",
            DemoteReason::FailbackUndo => "failback_undo",
        }
    }

    /// Planned releases: the next promotion is a hand-over, not a failover.
    pub fn is_planned(self) -> bool {
        matches!(
            self,
            DemoteReason::Drained
                | DemoteReason::Shutdown
                | DemoteReason::Switchover
                | DemoteReason::Failback
                | DemoteReason::FailbackUndo
        )
    }

    /// The operation step this demotion belongs to, if any.
    pub fn operation_step(self) -> Option<(OperationKind, Direction)> {
        match self {
            DemoteReason::Switchover => Some((OperationKind::Switchover, Direction::Forward)),
            DemoteReason::Failback => Some((OperationKind::Failback, Direction::Forward)),
            DemoteReason::FailbackUndo => Some((OperationKind::Failback, Direction::Back)),
            _ => None,
        }
    }
}

impl std::fmt::Display for DemoteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way an operation is moving the primary: forward is `from → to`, back (failback
/// undo only) is `to → from`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Forward,
    Back,
}

/// A committed promotion: `node` holds the primary role at `epoch`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Promote {
    pub node: NodeId,
    /// Must be exactly the state's epoch + 1 (see [`ClusterState::apply`](super::ClusterState::apply)).
    pub epoch: Epoch,
    pub reason: PromoteReason,
    /// The holder of the current epoch as the proposer saw it (`ClusterState::last_holder`);
    /// apply checks it, so a proposal built from a stale state is refused.
    pub previous: Option<NodeId>,
    /// The node the operator wants as primary (config `preferred_primary`), if set. Decides
    /// `failed_over.home` when the promotion lands elsewhere.
    pub home: Option<NodeId>,
    /// Raft term of the proposing leader (history only).
    pub term: Term,
    pub at_unix_ms: u64,
}

/// The primary released its role (its demote hook already ran).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Demote {
    pub node: NodeId,
    pub epoch: Epoch,
    pub reason: DemoteReason,
    pub term: Term,
    pub at_unix_ms: u64,
}

/// Every change to the replicated cluster state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Promote(Promote),
    Demote(Demote),
    /// Records a local restart of the primary's service (history only; same epoch).
    NoteRestart {
        node: NodeId,
        epoch: Epoch,
        attempt: u32,
        at_unix_ms: u64,
    },
    SetMaintenance {
        on: bool,
        reason: String,
        at_unix_ms: u64,
    },
    SetDrained {
        node: NodeId,
        drained: bool,
        at_unix_ms: u64,
    },
    /// Starts a switchover or failback. Apply assigns the operation id.
    BeginOperation {
        kind: OperationKind,
        from: NodeId,
        to: NodeId,
        /// Switchover only: do not start the cut-over before this wall-clock time.
        scheduled_at_unix_ms: Option<u64>,
        /// Failback only: end automatically after verification (else wait in
        /// AwaitingCommit for `quorate failback commit`).
        auto_commit: bool,
        at_unix_ms: u64,
    },
    /// Moves operation `id` from `from_phase` to `to_phase` (compare-and-set: a stale or
    /// duplicated step is refused).
    AdvanceOperation {
        id: u64,
        from_phase: Phase,
        to_phase: Phase,
        reason: Option<String>,
        at_unix_ms: u64,
    },
    EndOperation {
        id: u64,
        outcome: Outcome,
        at_unix_ms: u64,
    },
    /// Records what a data action of operation `id` reported on `node` (the protective
    /// snapshot, the final sync at a cut-over, the verify): history only, so undo and
    /// post-mortems find the restore point's name, the RPO and what differed.
    RecordOperationData {
        id: u64,
        node: NodeId,
        action: HookKind,
        ok: bool,
        duration_ms: u64,
        /// The action's own account (at most [`MAX_REASON_BYTES`]).
        detail: String,
        at_unix_ms: u64,
    },
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Promote(_) => "promote",
            Command::Demote(_) => "demote",
            Command::NoteRestart { .. } => "note_restart",
            Command::SetMaintenance { .. } => "set_maintenance",
            Command::SetDrained { .. } => "set_drained",
            Command::BeginOperation { .. } => "begin_operation",
            Command::AdvanceOperation { .. } => "advance_operation",
            Command::EndOperation { .. } => "end_operation",
            Command::RecordOperationData { .. } => "record_operation_data",
        }
    }
}
