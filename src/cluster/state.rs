//! The replicated cluster state and its deterministic `apply`.
//!
//! `apply` is the last line of defence: the policy already avoids proposing anything
//! unsafe, but two leaders of different terms can briefly both believe they lead, a
//! proposal can be retried after a timeout and committed twice, and a new leader can act
//! on a state that is a few entries old. Every check below turns one of those races into
//! a refused command instead of a second primary.
//!
//! Apply validates completely before it mutates anything, so a refused command leaves the
//! state exactly as it was (tests assert this).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::command::{
    Command, Demote, DemoteReason, Direction, Promote, PromoteReason, MAX_REASON_BYTES,
};
use super::history::{History, HistoryEvent};
pub use super::operation::{OperationKind, Outcome, Phase, Step};
use crate::types::{Epoch, NodeId, Term};

/// Most nodes that can be marked drained at once (operator input is bounded).
pub const MAX_DRAINED_NODES: usize = 256;

/// The node that holds the primary role and the epoch it was promoted at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PrimaryRecord {
    pub node: NodeId,
    pub epoch: Epoch,
    pub reason: PromoteReason,
    /// Holder of the epoch before this one (for `QUORATE_PREVIOUS_PRIMARY`).
    pub previous: Option<NodeId>,
    pub term: Term,
    pub since_unix_ms: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Maintenance {
    pub reason: String,
    pub since_unix_ms: u64,
}

/// The primary is not on its home node: failback is possible.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FailedOver {
    pub home: NodeId,
    pub current: NodeId,
    pub epoch: Epoch,
    pub at_unix_ms: u64,
}

/// The last unplanned failover, for status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FailoverRecord {
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub epoch: Epoch,
    /// Why the previous primary lost the role, when it released it through a committed
    /// Demote (None: it died or was cut off and never said).
    pub cause: Option<DemoteReason>,
    pub term: Term,
    pub at_unix_ms: u64,
}

/// A switchover or failback in progress (committed, so a new leader resumes or aborts it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub id: u64,
    pub kind: OperationKind,
    /// The primary when the operation started (for a scheduled switchover: re-read when it
    /// fires).
    pub from: NodeId,
    pub to: NodeId,
    pub phase: Phase,
    pub auto_commit: bool,
    pub scheduled_at_unix_ms: Option<u64>,
    pub started_at_unix_ms: u64,
    pub phase_since_unix_ms: u64,
    /// Set while writes are paused (from entering a Pausing step to the end of the move).
    pub pause_started_unix_ms: Option<u64>,
    /// Why the last step happened, when one was given (e.g. why the failback is undoing).
    pub reason: Option<String>,
}

/// The current move of an operation (see [`Step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub src: NodeId,
    pub dst: NodeId,
    pub step: Step,
    pub direction: Direction,
}

impl Operation {
    /// The move in progress, if the operation is in a cut-over or undo phase.
    pub fn current_move(&self) -> Option<Move> {
        match self.phase {
            Phase::CuttingOver(step) => Some(Move {
                src: self.from,
                dst: self.to,
                step,
                direction: Direction::Forward,
            }),
            Phase::Undoing(step) => Some(Move {
                src: self.to,
                dst: self.from,
                step,
                direction: Direction::Back,
            }),
            _ => None,
        }
    }

    /// Writes to the protected service are paused while the primary moves.
    pub fn writes_paused(&self) -> bool {
        self.current_move().is_some()
    }

    /// The promote reason the destination uses in the current move.
    pub fn promote_reason(&self, direction: Direction) -> PromoteReason {
        match (self.kind, direction) {
            (OperationKind::Switchover, _) => PromoteReason::Switchover,
            (OperationKind::Failback, Direction::Forward) => PromoteReason::Failback,
            (OperationKind::Failback, Direction::Back) => PromoteReason::FailbackUndo,
        }
    }

    /// The demote reason the source uses in the current move.
    pub fn demote_reason(&self, direction: Direction) -> DemoteReason {
        match (self.kind, direction) {
            (OperationKind::Switchover, _) => DemoteReason::Switchover,
            (OperationKind::Failback, Direction::Forward) => DemoteReason::Failback,
            (OperationKind::Failback, Direction::Back) => DemoteReason::FailbackUndo,
        }
    }
}

/// The replicated cluster state. Changed only by [`ClusterState::apply`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ClusterState {
    /// The node holding the primary role, None after it released the role.
    pub primary: Option<PrimaryRecord>,
    /// Highest epoch ever issued (0: never any primary).
    pub epoch: Epoch,
    /// Holder of `epoch`, kept after it released the role: the `previous` of the next
    /// promotion, the node to fence, the node that must rejoin.
    pub last_holder: Option<PrimaryRecord>,
    /// Why `last_holder` released the role, when it did through a committed Demote.
    pub last_release: Option<DemoteReason>,
    pub drained: BTreeSet<NodeId>,
    pub maintenance: Option<Maintenance>,
    pub operation: Option<Operation>,
    /// Id of the last operation started (ids are never reused).
    pub last_operation_id: u64,
    pub failed_over: Option<FailedOver>,
    pub last_failover: Option<FailoverRecord>,
    pub history: History,
}

/// What a successfully applied command did (returned to the proposer).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Promoted {
        node: NodeId,
        epoch: Epoch,
    },
    Demoted {
        node: NodeId,
        epoch: Epoch,
    },
    RestartNoted,
    MaintenanceChanged {
        on: bool,
    },
    DrainedChanged {
        node: NodeId,
        drained: bool,
    },
    /// The command asked for what was already true (idempotent retry): nothing changed.
    Unchanged,
    OperationStarted {
        id: u64,
    },
    OperationAdvanced {
        id: u64,
        phase: Phase,
    },
    OperationEnded {
        id: u64,
        outcome: Outcome,
    },
    OperationDataRecorded {
        id: u64,
    },
}

/// Why apply refused a command. The state is unchanged.
#[derive(Error, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    #[error(
        "promotion to epoch {proposed} refused: the next epoch is {expected}; the proposal \
         was built from an old cluster state or is a duplicate, re-read the state and decide again"
    )]
    EpochMismatch { proposed: Epoch, expected: Epoch },
    #[error("no epoch is left after {0}; the cluster state must be re-created")]
    EpochExhausted(Epoch),
    #[error(
        "promotion refused: it names {claimed:?} as the previous primary but the holder of the \
         current epoch is {actual:?}; re-read the cluster state and decide again"
    )]
    PreviousMismatch {
        claimed: Option<NodeId>,
        actual: Option<NodeId>,
    },
    #[error(
        "node {0} is drained and cannot become primary; run `quorate node undrain {0}` first \
         (or use a forced promotion)"
    )]
    NodeDrained(NodeId),
    #[error(
        "maintenance is on, automatic role changes and operations are frozen; run \
         `quorate maintenance off` first (or use a forced promotion)"
    )]
    MaintenanceOn,
    #[error(
        "node {node} does not hold the primary role at epoch {epoch} (the primary is \
         {actual:?}); nothing to do, re-read the cluster state"
    )]
    NotPrimary {
        node: NodeId,
        epoch: Epoch,
        actual: Option<(NodeId, Epoch)>,
    },
    #[error(
        "a {reason} promotion of node {node} is not a step of the current operation: {detail}"
    )]
    NotExpectedByOperation {
        node: NodeId,
        reason: PromoteReason,
        detail: String,
    },
    #[error(
        "operation {id} ({kind}) is in progress; wait for it to end or cancel it \
         (`quorate switchover --cancel`, `quorate failback undo`)"
    )]
    OperationInProgress { id: u64, kind: OperationKind },
    #[error(
        "operation {id} is not the current operation ({current:?}); re-read the cluster state"
    )]
    NoSuchOperation { id: u64, current: Option<u64> },
    #[error("operation step refused: the operation is in phase {actual}, not {expected}")]
    PhaseMismatch { expected: Phase, actual: Phase },
    #[error("a {kind} cannot move from phase {from} to phase {to}")]
    InvalidTransition {
        kind: OperationKind,
        from: Phase,
        to: Phase,
    },
    #[error("a {kind} in phase {phase} cannot end as {outcome}: {detail}")]
    InvalidOutcome {
        kind: OperationKind,
        phase: Phase,
        outcome: Outcome,
        detail: String,
    },
    #[error("operation refused: {0}")]
    OperationPrecondition(String),
    #[error("reason is {len} bytes, longer than the limit of {max}; shorten it")]
    ReasonTooLong { len: usize, max: usize },
    #[error("{max} nodes are already drained, the limit; undrain some first")]
    TooManyDrained { max: usize },
}

fn check_reason(reason: &str) -> Result<(), Rejected> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Rejected::ReasonTooLong {
            len: reason.len(),
            max: MAX_REASON_BYTES,
        });
    }
    Ok(())
}

/// What a role change does to the operation in progress (decided before mutating).
enum OpEffect {
    None,
    Advance(Phase),
    Abort(String),
}

/// Invariant violation found by [`ClusterState::check_invariants`].
#[derive(Error, Debug, Clone, PartialEq, Eq)]
#[error("cluster state is inconsistent: {0}; the snapshot or log is corrupt, restore it from a healthy node")]
pub struct InvariantViolation(pub String);

impl ClusterState {
    /// The holder of the primary role: `(node, epoch)`.
    pub fn primary_node(&self) -> Option<NodeId> {
        self.primary.as_ref().map(|p| p.node)
    }

    pub fn is_primary(&self, node: NodeId, epoch: Epoch) -> bool {
        self.primary
            .as_ref()
            .is_some_and(|p| p.node == node && p.epoch == epoch)
    }

    pub fn in_maintenance(&self) -> bool {
        self.maintenance.is_some()
    }

    pub fn is_drained(&self, node: NodeId) -> bool {
        self.drained.contains(&node)
    }

    /// Whether `node` was primary in an epoch the history still remembers (or is the
    /// holder of the last epoch). A restarted node with this set runs `rejoin` first.
    pub fn was_ever_primary(&self, node: NodeId) -> bool {
        self.last_holder.as_ref().is_some_and(|h| h.node == node)
            || self
                .history
                .iter()
                .any(|e| matches!(e.event, HistoryEvent::Promoted { node: n, .. } if n == node))
    }

    /// Applies one committed command. Deterministic: the result depends only on the state
    /// and the command (no clock, no IO), so every node computes the same state.
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, Rejected> {
        match cmd {
            Command::Promote(p) => self.apply_promote(p),
            Command::Demote(d) => self.apply_demote(d),
            Command::NoteRestart {
                node,
                epoch,
                attempt,
                at_unix_ms,
            } => {
                if !self.is_primary(*node, *epoch) {
                    return Err(self.not_primary(*node, *epoch));
                }
                self.history.push(
                    *at_unix_ms,
                    None,
                    HistoryEvent::Restarted {
                        node: *node,
                        epoch: *epoch,
                        attempt: *attempt,
                    },
                );
                Ok(Applied::RestartNoted)
            }
            Command::SetMaintenance {
                on,
                reason,
                at_unix_ms,
            } => self.apply_maintenance(*on, reason, *at_unix_ms),
            Command::SetDrained {
                node,
                drained,
                at_unix_ms,
            } => self.apply_drained(*node, *drained, *at_unix_ms),
            Command::BeginOperation {
                kind,
                from,
                to,
                scheduled_at_unix_ms,
                auto_commit,
                at_unix_ms,
            } => self.apply_begin(
                *kind,
                *from,
                *to,
                *scheduled_at_unix_ms,
                *auto_commit,
                *at_unix_ms,
            ),
            Command::AdvanceOperation {
                id,
                from_phase,
                to_phase,
                reason,
                at_unix_ms,
            } => self.apply_advance(*id, *from_phase, *to_phase, reason.as_deref(), *at_unix_ms),
            Command::EndOperation {
                id,
                outcome,
                at_unix_ms,
            } => self.apply_end(*id, outcome, *at_unix_ms),
            Command::RecordOperationData {
                id,
                node,
                action,
                ok,
                duration_ms,
                detail,
                at_unix_ms,
            } => {
                self.current_op(*id)?;
                check_reason(detail)?;
                self.history.push(
                    *at_unix_ms,
                    None,
                    HistoryEvent::OperationData {
                        id: *id,
                        node: *node,
                        action: *action,
                        ok: *ok,
                        duration_ms: *duration_ms,
                        detail: detail.clone(),
                    },
                );
                Ok(Applied::OperationDataRecorded { id: *id })
            }
        }
    }

    fn not_primary(&self, node: NodeId, epoch: Epoch) -> Rejected {
        Rejected::NotPrimary {
            node,
            epoch,
            actual: self.primary.as_ref().map(|p| (p.node, p.epoch)),
        }
    }

    /// Promote is accepted only with `epoch == self.epoch + 1`.
    ///
    /// Why exactly +1 and not "greater than": two leaders of different terms can both
    /// propose a promotion built from the same state (the old one has not noticed it was
    /// deposed; its entry can still be committed by the new leader as part of the log it
    /// inherits). Both carry the same epoch, so whichever is applied second is refused:
    /// there is never a second promotion at an epoch a node may already be acting on. A
    /// retried proposal that commits twice is refused the same way.
    fn apply_promote(&mut self, p: &Promote) -> Result<Applied, Rejected> {
        let expected = self
            .epoch
            .checked_next()
            .ok_or(Rejected::EpochExhausted(self.epoch))?;
        if p.epoch != expected {
            return Err(Rejected::EpochMismatch {
                proposed: p.epoch,
                expected,
            });
        }
        let holder = self.last_holder.as_ref().map(|h| h.node);
        if p.previous != holder {
            return Err(Rejected::PreviousMismatch {
                claimed: p.previous,
                actual: holder,
            });
        }
        // Drained and maintenance are operator decisions that outrank automatic ones:
        // a leader that read the state just before the operator's command committed must
        // not undo it.
        if !p.reason.is_forced() {
            if self.drained.contains(&p.node) {
                return Err(Rejected::NodeDrained(p.node));
            }
            if self.maintenance.is_some() {
                return Err(Rejected::MaintenanceOn);
            }
        }
        let effect = self.promote_effect_on_operation(p)?;

        // --- validated: mutate from here on ---
        let rec = PrimaryRecord {
            node: p.node,
            epoch: p.epoch,
            reason: p.reason,
            previous: p.previous,
            term: p.term,
            since_unix_ms: p.at_unix_ms,
        };
        self.history.push(
            p.at_unix_ms,
            Some(p.term),
            HistoryEvent::Promoted {
                node: p.node,
                epoch: p.epoch,
                previous: p.previous,
                reason: p.reason,
            },
        );
        if p.reason == PromoteReason::Failover {
            self.last_failover = Some(FailoverRecord {
                from: p.previous,
                to: p.node,
                epoch: p.epoch,
                cause: self.last_release,
                term: p.term,
                at_unix_ms: p.at_unix_ms,
            });
        }
        self.update_failed_over(p);
        self.primary = Some(rec.clone());
        self.last_holder = Some(rec);
        self.last_release = None;
        self.epoch = p.epoch;
        self.apply_op_effect(effect, p.at_unix_ms);
        Ok(Applied::Promoted {
            node: p.node,
            epoch: p.epoch,
        })
    }

    /// `failed_over` says "the primary is not on its home node". Home is, in order: the
    /// home already recorded (a second failover does not forget where home is), the
    /// operator's preferred primary carried in the command, or — for an unplanned
    /// failover only — the primary before it.
    fn update_failed_over(&mut self, p: &Promote) {
        match p.reason {
            // Failback keeps `failed_over` until the failback commits: an undo must still
            // know it is failed over. The undo's promotion records the new epoch.
            PromoteReason::Failback => {}
            PromoteReason::FailbackUndo => {
                if let Some(fo) = &mut self.failed_over {
                    fo.current = p.node;
                    fo.epoch = p.epoch;
                    fo.at_unix_ms = p.at_unix_ms;
                }
            }
            _ => {
                let home = self.failed_over.as_ref().map(|f| f.home).or(p.home).or(
                    if p.reason == PromoteReason::Failover {
                        p.previous
                    } else {
                        None
                    },
                );
                self.failed_over = match home {
                    Some(home) if home != p.node => Some(FailedOver {
                        home,
                        current: p.node,
                        epoch: p.epoch,
                        at_unix_ms: p.at_unix_ms,
                    }),
                    _ => None,
                };
            }
        }
    }

    /// A promotion that is a step of the operation advances it; a promotion that claims
    /// to be a step but does not match is refused (it was built for another operation or
    /// phase); any other promotion means the primary moved outside the plan, so the
    /// operation is aborted (a scheduled switchover survives and re-checks when it fires).
    fn promote_effect_on_operation(&self, p: &Promote) -> Result<OpEffect, Rejected> {
        let op = self.operation.as_ref();
        match (p.reason.operation_step(), op) {
            (Some((kind, dir)), Some(op)) => {
                let mv = op.current_move();
                match mv {
                    Some(mv)
                        if op.kind == kind
                            && mv.direction == dir
                            && mv.step == Step::Transferring
                            && mv.dst == p.node =>
                    {
                        Ok(OpEffect::Advance(phase_with_step(
                            op.phase,
                            Step::Promoting,
                        )))
                    }
                    _ => Err(Rejected::NotExpectedByOperation {
                        node: p.node,
                        reason: p.reason,
                        detail: format!(
                            "operation {} ({}) is in phase {} moving to {:?}",
                            op.id,
                            op.kind,
                            op.phase,
                            mv.map(|m| m.dst)
                        ),
                    }),
                }
            }
            (Some(_), None) => Err(Rejected::NotExpectedByOperation {
                node: p.node,
                reason: p.reason,
                detail: "no operation is in progress".to_string(),
            }),
            (None, Some(op)) if op.phase != Phase::Scheduled => Ok(OpEffect::Abort(format!(
                "interrupted by a {} promotion of node {}",
                p.reason, p.node
            ))),
            (None, _) => Ok(OpEffect::None),
        }
    }

    /// Demote is accepted only from the current primary at its epoch. A demotion is a
    /// fact (the demote hook already ran), so it is never refused for operation reasons:
    /// a demotion that is not the operation's own step aborts the operation instead.
    fn apply_demote(&mut self, d: &Demote) -> Result<Applied, Rejected> {
        if !self.is_primary(d.node, d.epoch) {
            return Err(self.not_primary(d.node, d.epoch));
        }
        let effect = match (&self.operation, d.reason.operation_step()) {
            (Some(op), step) if op.phase != Phase::Scheduled => match (op.current_move(), step) {
                (Some(mv), Some((kind, dir)))
                    if op.kind == kind
                        && mv.direction == dir
                        && mv.step == Step::Pausing
                        && mv.src == d.node =>
                {
                    OpEffect::Advance(phase_with_step(op.phase, Step::Transferring))
                }
                _ => OpEffect::Abort(format!(
                    "interrupted by a {} demotion of node {}",
                    d.reason, d.node
                )),
            },
            _ => OpEffect::None,
        };
        self.history.push(
            d.at_unix_ms,
            Some(d.term),
            HistoryEvent::Demoted {
                node: d.node,
                epoch: d.epoch,
                reason: d.reason,
            },
        );
        self.primary = None;
        self.last_release = Some(d.reason);
        self.apply_op_effect(effect, d.at_unix_ms);
        Ok(Applied::Demoted {
            node: d.node,
            epoch: d.epoch,
        })
    }

    /// Maintenance on cancels any operation: the operator asked for nothing to move, and
    /// an operation left half-way would otherwise resume by itself when maintenance ends.
    fn apply_maintenance(
        &mut self,
        on: bool,
        reason: &str,
        at_unix_ms: u64,
    ) -> Result<Applied, Rejected> {
        check_reason(reason)?;
        if on == self.maintenance.is_some() {
            return Ok(Applied::Unchanged);
        }
        self.history.push(
            at_unix_ms,
            None,
            HistoryEvent::Maintenance {
                on,
                reason: reason.to_string(),
            },
        );
        if on {
            self.maintenance = Some(Maintenance {
                reason: reason.to_string(),
                since_unix_ms: at_unix_ms,
            });
            if self.operation.is_some() {
                self.apply_op_effect(
                    OpEffect::Abort("maintenance was turned on".to_string()),
                    at_unix_ms,
                );
            }
        } else {
            self.maintenance = None;
        }
        Ok(Applied::MaintenanceChanged { on })
    }

    fn apply_drained(
        &mut self,
        node: NodeId,
        drained: bool,
        at_unix_ms: u64,
    ) -> Result<Applied, Rejected> {
        if drained == self.drained.contains(&node) {
            return Ok(Applied::Unchanged);
        }
        if drained && self.drained.len() >= MAX_DRAINED_NODES {
            return Err(Rejected::TooManyDrained {
                max: MAX_DRAINED_NODES,
            });
        }
        if drained {
            self.drained.insert(node);
        } else {
            self.drained.remove(&node);
        }
        self.history
            .push(at_unix_ms, None, HistoryEvent::Drained { node, drained });
        Ok(Applied::DrainedChanged { node, drained })
    }

    fn apply_begin(
        &mut self,
        kind: OperationKind,
        from: NodeId,
        to: NodeId,
        scheduled_at_unix_ms: Option<u64>,
        auto_commit: bool,
        at_unix_ms: u64,
    ) -> Result<Applied, Rejected> {
        if self.maintenance.is_some() {
            return Err(Rejected::MaintenanceOn);
        }
        if let Some(op) = &self.operation {
            return Err(Rejected::OperationInProgress {
                id: op.id,
                kind: op.kind,
            });
        }
        if from == to {
            return Err(Rejected::OperationPrecondition(format!(
                "node {to} is already the primary"
            )));
        }
        if self.drained.contains(&to) {
            return Err(Rejected::NodeDrained(to));
        }
        if self.primary_node() != Some(from) {
            return Err(Rejected::OperationPrecondition(format!(
                "the {kind} must start from the current primary ({:?}), not node {from}",
                self.primary_node()
            )));
        }
        let phase = match kind {
            OperationKind::Switchover => {
                if scheduled_at_unix_ms.is_some() {
                    Phase::Scheduled
                } else {
                    Phase::CuttingOver(Step::Pausing)
                }
            }
            OperationKind::Failback => {
                if scheduled_at_unix_ms.is_some() {
                    return Err(Rejected::OperationPrecondition(
                        "a failback cannot be scheduled; start it when you want it".to_string(),
                    ));
                }
                // To home, or to another node (a rebuilt machine: failback to a new
                // location); always from the node the cluster failed over to.
                match &self.failed_over {
                    Some(fo) if fo.current == from => {}
                    Some(fo) => {
                        return Err(Rejected::OperationPrecondition(format!(
                            "failback goes from the current primary {}, not from {from}",
                            fo.current
                        )))
                    }
                    None => {
                        return Err(Rejected::OperationPrecondition(
                            "the cluster is not failed over (the primary is on its home node \
                             or no home is known)"
                                .to_string(),
                        ))
                    }
                }
                Phase::Syncing
            }
        };
        let id = self.last_operation_id.saturating_add(1);
        self.last_operation_id = id;
        self.history.push(
            at_unix_ms,
            None,
            HistoryEvent::OperationStarted {
                id,
                kind,
                from,
                to,
                scheduled_at_unix_ms,
            },
        );
        self.operation = Some(Operation {
            id,
            kind,
            from,
            to,
            phase,
            auto_commit,
            scheduled_at_unix_ms,
            started_at_unix_ms: at_unix_ms,
            phase_since_unix_ms: at_unix_ms,
            pause_started_unix_ms: matches!(phase, Phase::CuttingOver(Step::Pausing))
                .then_some(at_unix_ms),
            reason: None,
        });
        Ok(Applied::OperationStarted { id })
    }

    fn current_op(&self, id: u64) -> Result<&Operation, Rejected> {
        match &self.operation {
            Some(op) if op.id == id => Ok(op),
            other => Err(Rejected::NoSuchOperation {
                id,
                current: other.as_ref().map(|o| o.id),
            }),
        }
    }

    /// Explicit phase changes. Steps inside a move (Pausing → Transferring → Promoting)
    /// happen only through the Demote and Promote commands themselves, so the phase can
    /// never claim a step the role record contradicts.
    fn apply_advance(
        &mut self,
        id: u64,
        from_phase: Phase,
        to_phase: Phase,
        reason: Option<&str>,
        at_unix_ms: u64,
    ) -> Result<Applied, Rejected> {
        if let Some(r) = reason {
            check_reason(r)?;
        }
        let op = self.current_op(id)?;
        if op.phase != from_phase {
            return Err(Rejected::PhaseMismatch {
                expected: from_phase,
                actual: op.phase,
            });
        }
        let primary = self.primary_node();
        let need_primary = |n: NodeId| -> Result<(), Rejected> {
            if primary == Some(n) {
                Ok(())
            } else {
                Err(Rejected::OperationPrecondition(format!(
                    "phase {to_phase} needs node {n} to be primary, the primary is {primary:?}"
                )))
            }
        };
        use Phase::*;
        let mut new_from = op.from;
        match (op.kind, from_phase, to_phase) {
            (OperationKind::Switchover, Scheduled, CuttingOver(Step::Pausing)) => {
                // The primary may have changed since the switchover was scheduled: it
                // starts from whoever is primary now.
                match primary {
                    Some(p) if p != op.to => new_from = p,
                    Some(_) => {
                        return Err(Rejected::OperationPrecondition(format!(
                            "node {} is already the primary",
                            op.to
                        )))
                    }
                    None => {
                        return Err(Rejected::OperationPrecondition(
                            "there is no primary to switch over from".to_string(),
                        ))
                    }
                }
                if self.drained.contains(&op.to) {
                    return Err(Rejected::NodeDrained(op.to));
                }
            }
            (OperationKind::Failback, Syncing, CuttingOver(Step::Pausing)) => {
                need_primary(op.from)?
            }
            (OperationKind::Failback, CuttingOver(Step::Promoting), Verifying) => {
                need_primary(op.to)?
            }
            (OperationKind::Failback, Verifying, AwaitingCommit) => need_primary(op.to)?,
            (OperationKind::Failback, Verifying | AwaitingCommit, Undoing(Step::Pausing)) => {
                need_primary(op.to)?
            }
            (kind, from, to) => return Err(Rejected::InvalidTransition { kind, from, to }),
        }
        if let Some(op) = &mut self.operation {
            op.from = new_from;
        }
        self.advance(to_phase, reason.map(str::to_string), at_unix_ms);
        Ok(Applied::OperationAdvanced {
            id,
            phase: to_phase,
        })
    }

    fn apply_end(
        &mut self,
        id: u64,
        outcome: &Outcome,
        at_unix_ms: u64,
    ) -> Result<Applied, Rejected> {
        let op = self.current_op(id)?;
        let primary = self.primary_node();
        let invalid = |detail: String| Rejected::InvalidOutcome {
            kind: op.kind,
            phase: op.phase,
            outcome: outcome.clone(),
            detail,
        };
        use Phase::*;
        match outcome {
            Outcome::Completed => {
                if !(op.kind == OperationKind::Switchover
                    && op.phase == CuttingOver(Step::Promoting)
                    && primary == Some(op.to))
                {
                    return Err(invalid(format!(
                        "a switchover completes only after node {} promoted",
                        op.to
                    )));
                }
            }
            Outcome::Committed => {
                if !(op.kind == OperationKind::Failback
                    && matches!(op.phase, Verifying | AwaitingCommit)
                    && primary == Some(op.to))
                {
                    return Err(invalid(format!(
                        "a failback commits only while home node {} is primary and verifying \
                         or awaiting commit",
                        op.to
                    )));
                }
            }
            Outcome::Undone => {
                if !(op.kind == OperationKind::Failback
                    && op.phase == Undoing(Step::Promoting)
                    && primary == Some(op.from))
                {
                    return Err(invalid(format!(
                        "an undo ends only after node {} promoted again",
                        op.from
                    )));
                }
            }
            Outcome::Cancelled => {
                let nothing_moved = matches!(op.phase, Scheduled | Syncing)
                    || (op.phase == CuttingOver(Step::Pausing) && primary == Some(op.from));
                if !nothing_moved {
                    return Err(invalid(
                        "the primary is already moving; wait for the step to finish, then undo"
                            .to_string(),
                    ));
                }
            }
            Outcome::Aborted { reason } => check_reason(reason)?,
        }
        self.end(outcome.clone(), at_unix_ms);
        Ok(Applied::OperationEnded {
            id,
            outcome: outcome.clone(),
        })
    }

    fn apply_op_effect(&mut self, effect: OpEffect, at_unix_ms: u64) {
        match effect {
            OpEffect::None => {}
            OpEffect::Advance(phase) => self.advance(phase, None, at_unix_ms),
            OpEffect::Abort(reason) => self.end(Outcome::Aborted { reason }, at_unix_ms),
        }
    }

    /// Moves the current operation to `to_phase`, recording the step with its duration.
    fn advance(&mut self, to_phase: Phase, reason: Option<String>, at_unix_ms: u64) {
        let Some(op) = &mut self.operation else {
            return;
        };
        let from_phase = op.phase;
        let entering_pause = matches!(
            to_phase,
            Phase::CuttingOver(Step::Pausing) | Phase::Undoing(Step::Pausing)
        );
        let leaving_move = op.current_move().is_some()
            && !matches!(to_phase, Phase::CuttingOver(_) | Phase::Undoing(_));
        let write_pause_ms = if leaving_move {
            op.pause_started_unix_ms
                .take()
                .map(|t| at_unix_ms.saturating_sub(t))
        } else {
            None
        };
        if entering_pause {
            op.pause_started_unix_ms = Some(at_unix_ms);
        }
        let event = HistoryEvent::OperationStep {
            id: op.id,
            kind: op.kind,
            from_phase,
            to_phase,
            duration_ms: at_unix_ms.saturating_sub(op.phase_since_unix_ms),
            write_pause_ms,
            reason: reason.clone(),
        };
        op.phase = to_phase;
        op.phase_since_unix_ms = at_unix_ms;
        if reason.is_some() {
            op.reason = reason;
        }
        self.history.push(at_unix_ms, None, event);
    }

    /// Ends the current operation, recording its outcome and total duration.
    fn end(&mut self, outcome: Outcome, at_unix_ms: u64) {
        let Some(op) = self.operation.take() else {
            return;
        };
        // A failback that ends (for any reason) with home as primary leaves nothing to
        // fail back to.
        if op.kind == OperationKind::Failback && self.primary_node() == Some(op.to) {
            self.failed_over = None;
        }
        self.history.push(
            at_unix_ms,
            None,
            HistoryEvent::OperationEnded {
                id: op.id,
                kind: op.kind,
                outcome,
                duration_ms: at_unix_ms.saturating_sub(op.started_at_unix_ms),
                write_pause_ms: op
                    .pause_started_unix_ms
                    .map(|t| at_unix_ms.saturating_sub(t)),
            },
        );
    }

    /// Structural invariants, for tests and for a state read back from a snapshot
    /// (assert in pairs: once before writing, once after reading).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let bad = |s: String| Err(InvariantViolation(s));
        self.history.check().map_err(InvariantViolation)?;
        match (&self.last_holder, self.epoch) {
            (None, Epoch::NONE) => {}
            (Some(h), e) if h.epoch == e && e > 0 => {}
            (h, e) => {
                return bad(format!(
                    "epoch {e} does not match the last holder {:?}",
                    h.as_ref().map(|h| (h.node, h.epoch))
                ))
            }
        }
        if let Some(p) = &self.primary {
            if Some(p) != self.last_holder.as_ref() {
                return bad("the primary is not the holder of the current epoch".to_string());
            }
            if self.last_release.is_some() {
                return bad("the primary is recorded as released".to_string());
            }
        }
        if self.drained.len() > MAX_DRAINED_NODES {
            return bad(format!("{} drained nodes", self.drained.len()));
        }
        if let Some(fo) = &self.failed_over {
            if fo.home == fo.current {
                return bad(format!("failed over to its own home node {}", fo.home));
            }
            if fo.epoch > self.epoch {
                return bad(format!("failed over at future epoch {}", fo.epoch));
            }
        }
        if let Some(op) = &self.operation {
            if op.id != self.last_operation_id {
                return bad(format!("operation {} is not the last started", op.id));
            }
            if op.from == op.to {
                return bad(format!(
                    "operation {} moves node {} to itself",
                    op.id, op.to
                ));
            }
            if self.maintenance.is_some() {
                return bad("an operation runs during maintenance".to_string());
            }
            let primary = self.primary_node();
            let ok = match op.current_move() {
                Some(mv) => match mv.step {
                    Step::Pausing => primary == Some(mv.src),
                    Step::Transferring => primary.is_none(),
                    Step::Promoting => primary == Some(mv.dst),
                },
                None => match op.phase {
                    Phase::Verifying | Phase::AwaitingCommit => primary == Some(op.to),
                    Phase::Syncing => primary == Some(op.from),
                    _ => true,
                },
            };
            if !ok {
                return bad(format!(
                    "operation {} in phase {} disagrees with the primary {primary:?}",
                    op.id, op.phase
                ));
            }
        }
        Ok(())
    }
}

/// Same kind of phase (cut-over or undo) at another step.
fn phase_with_step(phase: Phase, step: Step) -> Phase {
    match phase {
        Phase::Undoing(_) => Phase::Undoing(step),
        _ => Phase::CuttingOver(step),
    }
}
