//! Operator requests (switchover, failback, maintenance, drain) turned into commands.
//!
//! The API handler runs on the leader (followers forward), calls
//! [`Policy::plan_request`], proposes the returned command and answers the operator when
//! it commits. Checks here give the operator a clear refusal; apply re-checks what it can
//! see, because the state may change between planning and commit.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Inputs, Policy};
use crate::cluster::{Command, OperationKind, Outcome, Phase, Step, MAX_REASON_BYTES};
use crate::policy::config::FailbackCommit;
use crate::rules::candidate::{eligibility, planned_move_eligibility, Ineligible};
use crate::types::NodeId;

/// How far ahead a switchover may be scheduled (30 days).
pub const MAX_SCHEDULE_AHEAD_MS: u64 = 30 * 24 * 60 * 60 * 1000;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OperatorRequest {
    /// `quorate switchover [--to ID] [--at TIME]`; without `to`, the best candidate.
    Switchover {
        to: Option<NodeId>,
        at_unix_ms: Option<u64>,
    },
    /// `quorate switchover --cancel` (scheduled switchovers only).
    CancelSwitchover,
    /// `quorate failback [--no-commit] [--to N]`.
    Failback {
        no_commit: bool,
        /// Return the primary to this node instead of the recorded home (a rebuilt
        /// machine with a new id: failback to a new location).
        to: Option<NodeId>,
    },
    FailbackCommit,
    FailbackUndo,
    Maintenance {
        on: bool,
        reason: String,
    },
    Drain {
        node: NodeId,
        drained: bool,
    },
}

/// Why a request was refused, with what to do next.
#[derive(Error, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    #[error("this node is not the Raft leader (the leader is {leader:?}); send the request to the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("maintenance is on ({reason}); run `quorate maintenance off` first")]
    Maintenance { reason: String },
    #[error("operation {id} ({kind}) is in phase {phase}; wait for it to end or cancel it")]
    OperationInProgress {
        id: u64,
        kind: OperationKind,
        phase: Phase,
    },
    #[error("no node is acting as primary on the leader right now; wait for the failover to finish (see `quorate status`)")]
    NoActingPrimary,
    #[error("node {0} is already the primary")]
    AlreadyPrimary(NodeId),
    #[error("switchover to node {node} refused: {why}")]
    TargetIneligible { node: NodeId, why: Ineligible },
    #[error("no other node is eligible to take over ({})", list(.0))]
    NoCandidate(Vec<Ineligible>),
    #[error("the cluster is not failed over (the primary is on its home node, or no home is known); nothing to fail back")]
    NotFailedOver,
    #[error("failback to home node {home} refused: {why}")]
    HomeIneligible { home: NodeId, why: Ineligible },
    #[error("no {0} is in progress")]
    NoOperation(&'static str),
    #[error("the {kind} is in phase {phase}: {what}")]
    WrongPhase {
        kind: OperationKind,
        phase: Phase,
        what: String,
    },
    #[error("scheduled time {at_unix_ms} is more than 30 days ahead; pick an earlier time")]
    ScheduleTooFar { at_unix_ms: u64 },
    #[error(
        "scheduled time {at_unix_ms} (Unix ms) is not in the future: the leader's clock reads \
         {now_unix_ms}, {} ms later; give a future time, or leave out the time (`--at`) to \
         switch over now",
        now_unix_ms.saturating_sub(*at_unix_ms)
    )]
    ScheduleInPast { at_unix_ms: u64, now_unix_ms: u64 },
    #[error("reason is {len} bytes, the limit is {max}; shorten it")]
    ReasonTooLong { len: usize, max: usize },
    #[error(
        "node {0} is not a configured member; check the node id (`quorate status` lists them)"
    )]
    NotMember(NodeId),
}

/// A requested switchover time must lie ahead of the leader's clock, and not too far: a time
/// in the past is a typo or a stale script (it used to start the switchover at once, which is
/// the opposite of "at that time"), so it is refused with the reason instead.
pub fn check_schedule(at_unix_ms: u64, now_unix_ms: u64) -> Result<u64, Refusal> {
    if at_unix_ms <= now_unix_ms {
        return Err(Refusal::ScheduleInPast {
            at_unix_ms,
            now_unix_ms,
        });
    }
    if at_unix_ms - now_unix_ms > MAX_SCHEDULE_AHEAD_MS {
        return Err(Refusal::ScheduleTooFar { at_unix_ms });
    }
    Ok(at_unix_ms)
}

fn list(v: &[Ineligible]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Policy {
    /// Checks an operator request against the current state and builds the command to
    /// propose. Pure: call on the leader, propose the result.
    pub fn plan_request(
        &self,
        req: &OperatorRequest,
        inp: &Inputs<'_>,
        now: Instant,
    ) -> Result<Command, Refusal> {
        let st = inp.state;
        if !inp.raft.is_leader {
            return Err(Refusal::NotLeader {
                leader: inp.raft.leader_id,
            });
        }
        let at_unix_ms = inp.now_unix_ms;
        let no_maintenance = || match &st.maintenance {
            Some(m) => Err(Refusal::Maintenance {
                reason: m.reason.clone(),
            }),
            None => Ok(()),
        };
        let no_operation = || match &st.operation {
            Some(op) => Err(Refusal::OperationInProgress {
                id: op.id,
                kind: op.kind,
                phase: op.phase,
            }),
            None => Ok(()),
        };
        match req {
            OperatorRequest::Maintenance { on, reason } => {
                if reason.len() > MAX_REASON_BYTES {
                    return Err(Refusal::ReasonTooLong {
                        len: reason.len(),
                        max: MAX_REASON_BYTES,
                    });
                }
                Ok(Command::SetMaintenance {
                    on: *on,
                    reason: reason.clone(),
                    at_unix_ms,
                })
            }
            OperatorRequest::Drain { node, drained } => {
                if inp.member(*node).is_none() {
                    return Err(Refusal::NotMember(*node));
                }
                Ok(Command::SetDrained {
                    node: *node,
                    drained: *drained,
                    at_unix_ms,
                })
            }
            OperatorRequest::Switchover { to, at_unix_ms: when } => {
                no_maintenance()?;
                no_operation()?;
                if self.acting_primary(inp, now).is_none() {
                    return Err(Refusal::NoActingPrimary);
                }
                let views = self.candidate_views(inp, now);
                let max_lag = self.cfg.max_lag_on_failover;
                let to = match to {
                    Some(t) => *t,
                    None => match self.other_candidates(inp, now).first() {
                        Some(t) => *t,
                        None => {
                            let reasons = views
                                .iter()
                                .filter(|c| c.id != self.local)
                                .filter_map(|c| eligibility(c, max_lag).err())
                                .collect();
                            return Err(Refusal::NoCandidate(reasons));
                        }
                    },
                };
                if to == self.local {
                    return Err(Refusal::AlreadyPrimary(to));
                }
                let view = views.iter().find(|c| c.id == to).ok_or(Refusal::NotMember(to))?;
                planned_move_eligibility(view, max_lag, self.cfg.monitor_configured)
                    .map_err(|why| Refusal::TargetIneligible { node: to, why })?;
                let scheduled = when.map(|t| check_schedule(t, at_unix_ms)).transpose()?;
                Ok(Command::BeginOperation {
                    kind: OperationKind::Switchover,
                    from: self.local,
                    to,
                    scheduled_at_unix_ms: scheduled,
                    auto_commit: true,
                    at_unix_ms,
                })
            }
            OperatorRequest::CancelSwitchover => match &st.operation {
                Some(op) if op.kind == OperationKind::Switchover => {
                    if op.phase == Phase::Scheduled {
                        Ok(Command::EndOperation {
                            id: op.id,
                            outcome: Outcome::Cancelled,
                            at_unix_ms,
                        })
                    } else {
                        Err(Refusal::WrongPhase {
                            kind: op.kind,
                            phase: op.phase,
                            what: "the cut-over has started and finishes (or aborts) by itself within transfer_timeout".to_string(),
                        })
                    }
                }
                _ => Err(Refusal::NoOperation("scheduled switchover")),
            },
            OperatorRequest::Failback { no_commit, to } => {
                no_maintenance()?;
                no_operation()?;
                let Some(fo) = &st.failed_over else {
                    return Err(Refusal::NotFailedOver);
                };
                if self.acting_primary(inp, now).is_none() {
                    return Err(Refusal::NoActingPrimary);
                }
                let target = to.unwrap_or(fo.home);
                if target == self.local {
                    return Err(Refusal::AlreadyPrimary(target));
                }
                let views = self.candidate_views(inp, now);
                let view = views
                    .iter()
                    .find(|c| c.id == target)
                    .ok_or(Refusal::NotMember(target))?;
                // Any lag is fine to start: the Syncing phase waits for the target to catch
                // up (in quorate's log and in the service's data).
                eligibility(view, u64::MAX).map_err(|why| Refusal::HomeIneligible { home: target, why })?;
                Ok(Command::BeginOperation {
                    kind: OperationKind::Failback,
                    from: self.local,
                    to: target,
                    scheduled_at_unix_ms: None,
                    auto_commit: !*no_commit && self.cfg.failback_commit == FailbackCommit::Auto,
                    at_unix_ms,
                })
            }
            OperatorRequest::FailbackCommit => match &st.operation {
                Some(op) if op.kind == OperationKind::Failback => match op.phase {
                    Phase::Verifying | Phase::AwaitingCommit => Ok(Command::EndOperation {
                        id: op.id,
                        outcome: Outcome::Committed,
                        at_unix_ms,
                    }),
                    phase => Err(Refusal::WrongPhase {
                        kind: op.kind,
                        phase,
                        what: "a failback can be committed once home is primary (verifying or awaiting commit)".to_string(),
                    }),
                },
                _ => Err(Refusal::NoOperation("failback")),
            },
            OperatorRequest::FailbackUndo => match &st.operation {
                Some(op) if op.kind == OperationKind::Failback => match op.phase {
                    // Nothing moved yet: just stop.
                    Phase::Syncing | Phase::CuttingOver(Step::Pausing) => Ok(Command::EndOperation {
                        id: op.id,
                        outcome: Outcome::Cancelled,
                        at_unix_ms,
                    }),
                    Phase::Verifying | Phase::AwaitingCommit => Ok(Command::AdvanceOperation {
                        id: op.id,
                        from_phase: op.phase,
                        to_phase: Phase::Undoing(Step::Pausing),
                        reason: Some("operator requested undo".to_string()),
                        at_unix_ms,
                    }),
                    phase @ Phase::CuttingOver(_) => Err(Refusal::WrongPhase {
                        kind: op.kind,
                        phase,
                        what: "the primary is moving; retry when home is verifying".to_string(),
                    }),
                    phase => Err(Refusal::WrongPhase {
                        kind: op.kind,
                        phase,
                        what: "already undoing".to_string(),
                    }),
                },
                _ => Err(Refusal::NoOperation("failback")),
            },
        }
    }
}
