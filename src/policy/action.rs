//! What the policy asks the executor to do, and what the executor reports back.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cluster::{Applied, Command, DemoteReason, Phase, PromoteReason, Rejected};
use crate::rules::candidate::Ineligible;
use crate::types::{Epoch, NodeId};

/// Identifies an action whose result comes back as an [`Event`] (proposals and hooks).
pub type ActionId = u64;

/// The hook kinds and reasons are shared with the hook runner (`crate::types`); the policy
/// never asks for `Monitor` (the monitor loop runs it) and never gives `Monitor` as a reason.
pub use crate::types::{HookKind, HookReason};

/// `QUORATE_REASON` of the promote hook, from the committed promotion's reason.
pub fn hook_reason_for_promote(r: PromoteReason) -> HookReason {
    match r {
        PromoteReason::Startup => HookReason::Startup,
        PromoteReason::Failover => HookReason::Failover,
        PromoteReason::Handover | PromoteReason::Forced => HookReason::Maintenance,
        PromoteReason::Switchover => HookReason::Switchover,
        PromoteReason::Failback | PromoteReason::FailbackUndo => HookReason::Failback,
    }
}

/// `QUORATE_REASON` of the demote hook, from the demotion's reason.
pub fn hook_reason_for_demote(r: DemoteReason) -> HookReason {
    match r {
        DemoteReason::LeaseLost
        | DemoteReason::LeadershipLost
        | DemoteReason::Superseded
        | DemoteReason::ResourceFailure => HookReason::Failover,
        DemoteReason::Drained | DemoteReason::Shutdown => HookReason::Maintenance,
        DemoteReason::Switchover => HookReason::Switchover,
        DemoteReason::Failback | DemoteReason::FailbackUndo => HookReason::Failback,
    }
}

/// One hook to run. The executor runs at most one at a time for the policy (the policy
/// never emits a second one before the first finished) and reports
/// [`Event::HookFinished`] with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    pub id: ActionId,
    pub hook: HookKind,
    /// `QUORATE_EPOCH`: for promote and demote the epoch of the role; for fence the epoch
    /// the coming promotion will use (fence everything older); for rejoin the current
    /// epoch.
    pub epoch: Epoch,
    pub reason: HookReason,
    /// `QUORATE_PREVIOUS_PRIMARY`.
    pub previous_primary: Option<NodeId>,
    /// Fence: the node to fence. Rejoin: the primary to rejoin.
    pub target: Option<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Propose through Raft (`client_write`); report [`Event::ProposalCommitted`] with the
    /// apply result or [`Event::ProposalFailed`].
    Propose {
        id: ActionId,
        cmd: Command,
    },
    RunHook(HookRun),
    /// `trigger().transfer_leader(to)`. The policy watches `leader_id` and the deadline
    /// itself; report [`Event::TransferFailed`] only if the trigger call itself failed.
    TransferLeadership {
        to: NodeId,
        deadline: Instant,
    },
    /// Safety rule 3: stop every primary-side effect at once (stop answering `/primary`,
    /// kill an in-flight promote hook), without waiting for anyone. The demote hook
    /// follows as a separate [`Action::RunHook`] (in this step, or, when a promote hook
    /// was in flight, once its [`Event::HookFinished`] arrived: report that event even for
    /// a killed hook).
    DemoteNow {
        reason: DemoteReason,
    },
    /// Something status should show or the log should record (emitted when it starts
    /// being true; [`Policy::status_notes`](super::Policy::status_notes) has the full
    /// current list).
    Report(StatusNote),
    /// Run the notify action with this event (fire and forget: queued, bounded, never
    /// waited for, no result comes back).
    Notify(super::notify::Notification),
    /// Graceful shutdown finished its hand-over (or gave up): the daemon may exit.
    ReadyToExit,
    /// This node lost the primary of `lost` (dead on every link, or released): detach the
    /// service from it (`Agent::detach_from_primary`: a replica stops receiving, so the lost
    /// primary, should it still run, gets no more acknowledgements from it), then run the
    /// monitor at once and tag its reports as taken after the loss
    /// (`MonitorRefresher::refresh_after_loss`), so a zero-loss failover learns this node's
    /// final position. Emitted once per lost epoch; the replica follows the primary again
    /// if it is heard again.
    RefreshServiceReport {
        lost: Epoch,
    },
    /// The primary lost earlier is heard again, or a new one serves: this node's reports are
    /// no longer final (`MonitorRefresher::clear`), so a later loss of the same epoch asks
    /// for a new final report.
    ServiceReportNotFinal,
}

/// Results and observations fed back through [`Policy::observe`](super::Policy::observe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The proposal committed; `result` is what apply returned.
    ProposalCommitted {
        id: ActionId,
        result: Result<Applied, Rejected>,
    },
    /// The proposal was not committed (not leader any more, forward-to-leader, timeout).
    ProposalFailed {
        id: ActionId,
        error: String,
    },
    HookFinished {
        id: ActionId,
        ok: bool,
    },
    /// What a data action (snapshot, verify; promote, whose account includes the final
    /// sync) printed, sent just before its [`Event::HookFinished`]: recorded in the
    /// operation's history.
    HookOutput {
        id: ActionId,
        output: String,
        duration_ms: u64,
    },
    /// The transfer trigger itself returned an error.
    TransferFailed {
        to: NodeId,
        error: String,
    },
    /// One run of the local monitor hook (every run, on every node).
    MonitorResult {
        ok: bool,
    },
    /// SIGTERM / `systemctl stop`.
    ShutdownRequested,
}

/// What this node's service is doing, as far as the policy's hooks made it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LocalRole {
    /// Just started; the startup demote has not finished. The service may still run from
    /// before the restart.
    Starting,
    Replica,
    /// Rejoin hook running.
    Rejoining,
    /// Promote hook running (not acting yet: `/primary` answers 503).
    Promoting {
        epoch: Epoch,
    },
    /// Promote hook succeeded; acting while rule 1 holds.
    Primary {
        epoch: Epoch,
    },
    /// Was `Primary`, and its lease lapsed while it still leads: not acting (`/primary`
    /// answers 503, writes are refused), the service left as it is for
    /// `PolicyConfig::lapse_grace`. Back to `Primary` at the same epoch when quorum
    /// acknowledgements return in the same term (no other leader can have existed in
    /// between); else the demote hook runs.
    Suspended {
        epoch: Epoch,
    },
    /// Demote hook running or being retried; the service may still be up.
    Demoting {
        epoch: Epoch,
    },
}

/// Things operators should see in status and logs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StatusNote {
    Maintenance {
        reason: String,
    },
    /// Startup demote in progress.
    Starting,
    /// The leader has not heard a quorum within `lease`: it does not promote.
    WaitingForQuorum,
    NoEligibleCandidate {
        reasons: Vec<Ineligible>,
    },
    /// A zero-loss failover waits (bounded) for these candidates' final service reports.
    WaitingForFinalReports {
        nodes: Vec<NodeId>,
    },
    /// A zero-loss failover stopped waiting for these candidates' final reports and goes
    /// ahead without them.
    FinalReportsMissing {
        nodes: Vec<NodeId>,
    },
    WaitingForFence {
        target: NodeId,
        attempt: u32,
        required: bool,
    },
    FenceFailedPromotingAnyway {
        target: NodeId,
    },
    WaitingForCatchUp {
        to: NodeId,
        lag: Option<u64>,
    },
    Transferring {
        to: NodeId,
    },
    TransferTimedOut {
        to: NodeId,
    },
    TransferFailed {
        to: NodeId,
        error: String,
    },
    /// Lease lapsed: not acting, waiting (within the lapse grace) for quorum
    /// acknowledgements to return before demoting.
    Suspended {
        reason: DemoteReason,
    },
    /// A lapse healed in the same term: acting again at the same epoch, no demote.
    Resumed {
        epoch: Epoch,
    },
    /// Stopped acting as primary (rule 1/3).
    DemotedSelf {
        reason: DemoteReason,
    },
    LocalRestart {
        attempt: u32,
        max: u32,
    },
    HandingOver {
        reason: DemoteReason,
    },
    /// The primary should move away but nobody can take it.
    NoCandidateForHandover {
        reason: DemoteReason,
    },
    HookFailed {
        hook: HookKind,
        attempts: u32,
    },
    ProposalRefused {
        command: String,
        error: String,
    },
    ProposalFailed {
        error: String,
    },
    ProposalTimedOut,
    Rejoining {
        primary: NodeId,
    },
    SwitchoverScheduled {
        to: NodeId,
        at_unix_ms: u64,
    },
    /// An operation step waits for something.
    OperationWaiting {
        id: u64,
        phase: Phase,
        what: String,
    },
    Verifying {
        id: u64,
        passes: u32,
        checks: u32,
    },
    AwaitingCommit {
        id: u64,
    },
    FailbackAvailable {
        home: NodeId,
    },
    FailbackBehind {
        home: NodeId,
        lag: u64,
    },
    FailbackUnavailable {
        home: NodeId,
        why: Ineligible,
    },
    ShuttingDown,
}

impl std::fmt::Display for StatusNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use StatusNote::*;
        match self {
            Maintenance { reason } => write!(f, "MAINTENANCE: automatic actions frozen ({reason})"),
            Starting => f.write_str("starting: demoting the service before joining"),
            WaitingForQuorum => {
                f.write_str("leader without a quorum acknowledgement within lease: not promoting")
            }
            WaitingForFinalReports { nodes } => write!(
                f,
                "zero-loss failover: waiting for the final service report (taken after the primary was lost) of node(s) {}",
                nodes
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            FinalReportsMissing { nodes } => write!(
                f,
                "zero-loss failover: going ahead without the final service report of node(s) {}: a commit only they acknowledged may be lost (their monitor or their own action did not finish in time)",
                nodes
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            NoEligibleCandidate { reasons } => {
                f.write_str("no eligible candidate for primary")?;
                for r in reasons {
                    write!(f, "; {r}")?;
                }
                Ok(())
            }
            WaitingForFence {
                target,
                attempt,
                required,
            } => write!(
                f,
                "fencing {}: waiting for fence of node {target} (attempt {attempt})",
                if *required { "required" } else { "best-effort" }
            ),
            FenceFailedPromotingAnyway { target } => {
                write!(
                    f,
                    "fence of node {target} failed; fencing is best-effort, promoting anyway"
                )
            }
            WaitingForCatchUp { to, lag } => match lag {
                Some(l) => write!(f, "waiting for node {to} to catch up ({l} entries behind)"),
                None => write!(f, "waiting for node {to} to catch up (progress unknown)"),
            },
            Transferring { to } => write!(f, "transferring leadership to node {to}"),
            TransferTimedOut { to } => write!(
                f,
                "leadership transfer to node {to} timed out; trying another candidate"
            ),
            TransferFailed { to, error } => {
                write!(f, "leadership transfer to node {to} failed: {error}")
            }
            Suspended { reason } => write!(
                f,
                "not acting as primary ({reason}): waiting for quorum acknowledgements to return before demoting"
            ),
            Resumed { epoch } => write!(
                f,
                "quorum acknowledgements returned: acting as primary again at epoch {epoch} (no demote)"
            ),
            DemotedSelf { reason } => write!(f, "stopped acting as primary: {reason}"),
            LocalRestart { attempt, max } => {
                write!(f, "service failed: local restart {attempt} of {max}")
            }
            HandingOver { reason } => write!(f, "handing the primary role over: {reason}"),
            NoCandidateForHandover { reason } => {
                write!(
                    f,
                    "primary should move away ({reason}) but no other node is eligible; staying"
                )
            }
            HookFailed { hook, attempts } => {
                write!(
                    f,
                    "{} hook failed ({attempts} attempts); retrying",
                    hook.as_str()
                )
            }
            ProposalRefused { command, error } => {
                write!(f, "{command} refused by the state machine: {error}")
            }
            ProposalFailed { error } => write!(f, "proposal not committed: {error}"),
            ProposalTimedOut => f.write_str("proposal not answered within proposal_timeout"),
            Rejoining { primary } => write!(f, "rejoining as replica of node {primary}"),
            SwitchoverScheduled { to, at_unix_ms } => {
                write!(
                    f,
                    "switchover to node {to} scheduled at {at_unix_ms} ms since the epoch"
                )
            }
            OperationWaiting { id, phase, what } => {
                write!(f, "operation {id} ({phase}): waiting for {what}")
            }
            Verifying { id, passes, checks } => {
                write!(
                    f,
                    "failback {id} verifying: {passes} of {checks} monitor checks passed"
                )
            }
            AwaitingCommit { id } => write!(
                f,
                "failback {id} verified: run `quorate failback commit` or `quorate failback undo`"
            ),
            FailbackAvailable { home } => write!(
                f,
                "failback available: home node {home} is eligible and in sync"
            ),
            FailbackBehind { home, lag } => write!(
                f,
                "failback not yet available: home node {home} is {lag} entries behind"
            ),
            FailbackUnavailable { home, why } => {
                write!(f, "failback not available to home node {home}: {why}")
            }
            ShuttingDown => f.write_str("shutting down: handing over before exit"),
        }
    }
}
