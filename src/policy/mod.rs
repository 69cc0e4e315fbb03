//! The decision function: committed state + observations + `now` in, actions out.
//!
//! Like etcd raft's `RawNode` or openraft's `Engine`, the policy never performs anything
//! itself. The executor calls [`Policy::step`] on every tick (and after every event),
//! performs the returned [`Action`]s in order, and reports results back through
//! [`Policy::observe`]. The policy remembers what it has in flight (one proposal, one
//! hook, one leadership transfer, one fence) so it never emits a duplicate, and it keeps
//! its own record of what this node's service is doing ([`LocalRole`]), because only the
//! hooks it asked for change that.
//!
//! Everything is deterministic: the same sequence of `step`/`observe` calls with the
//! same inputs and `Instant`s gives the same actions. No clock is read; `Instant`s and
//! the wall-clock `now_unix_ms` come from the caller.
//!
//! # Where each rule lives
//!
//! Every rule has one home in [`crate::rules`]; the policy, the API, the executor, the config
//! check, the early elections and the transport call it.
//!
//! | rule | function | tests |
//! |---|---|---|
//! | acting primary (rule 1): committed epoch, current leader, fresh lease | `rules::acting_check` (policy `acting_check`, API `/primary`) | `rules::acting::tests`, `policy::tests::acting_and_lease::acting_primary_needs_state_leadership_and_lease` |
//! | a new leader decides only after its own term's entry applied | `rules::leader_is_current` (executor, API) | `rules::acting::tests::a_new_leader_counts_only_after_its_own_terms_entry_applied` |
//! | quorum-ack age, a sole voter is its own quorum | `rules::quorum_acked_age` (via `consensus::handle::quorum_acked_age`) | `rules::lease::tests` |
//! | the lease holds strictly inside its length | `rules::lease_holds` (policy `RaftView`) | `rules::lease::tests`, `policy::tests::acting_and_lease::primary_demotes_at_once_when_the_lease_lapses_and_proposes_demote_after_the_hook` |
//! | rule 3 timing: lease + drift margin < election_timeout_min; lease ≥ 2 Raft heartbeats | `rules::lease_ends_before_election`, `rules::lease_covers_heartbeats` (config check) | `rules::lease::tests`, `config::tests` (timing.lease problems) |
//! | lapse grace and lease budget (fsync a healthy primary survives) | `rules::lapse_grace`, `rules::lease_budget` (config `Timing`, status, `quorate config check`) | `rules::lease::tests`, `config::tests::lapse_grace_is_what_the_election_timeout_leaves_after_lease_and_drift`, `tests/lapse_grace.rs` |
//! | candidate eligibility and ranking (priority, lag, id) | `rules::eligibility`, `rules::rank_candidates` (failover, switchover, failback, early elections) | `rules::candidate::tests` |
//! | a planned move's target (switchover, failback) passed a monitor check and is on the primary's timeline | `rules::planned_move_eligibility` (switchover and failback requests, failback availability, scheduled start, Syncing) | `rules::candidate::tests::a_planned_move_waits_for_a_first_passing_check_and_for_the_primarys_timeline`, `tests/service_data.rs` |
//! | zero-loss failover (synchronous replication): wait, bounded, for every candidate's report taken after the primary was lost, then only the most advanced | `rules::restrict_to_final_most_advanced` (leader failover), `Policy::lost_primary_epoch` (every node refreshes its report) | `rules::candidate::tests::a_zero_loss_failover_waits_for_final_reports_then_takes_the_most_advanced`, `policy::tests::zero_loss`, `tests/postgres.rs` |
//! | early campaigns: rank by the same ranking, start when the lease runs out, staggered | `rules::election::rank`, `rules::election::campaign_at` (daemon loops) | `rules::election::tests` |
//! | a re-seeding node neither votes nor campaigns | `rules::may_vote` (transport, early elections) | `rules::election::tests`, `tests/recover.rs` |
//!
//! # The rules, and why they are ordered as they are
//!
//! * **Acting primary (safety rule 1).** This node acts as primary only while the
//!   committed state names it at epoch `e`, it is the Raft leader, and a quorum
//!   acknowledged it within `lease`. The check runs first on every step, even during
//!   maintenance: a primary cut off from its peers must stop before the other side can
//!   elect a leader and promote (rule 3), otherwise both serve writes. Maintenance does
//!   not suspend it, because the majority side may leave maintenance while this node
//!   cannot hear about it.
//! * **Promotion is commit, then hook (rule 2).** The promote hook runs only for a
//!   Promote this very process proposed and then saw committed (the state changed to
//!   name it while it ran), and only while it still leads with a fresh quorum. A
//!   restarted daemon never acts on a promotion of a former life (from the state it
//!   loaded, or from a proposal of its previous incarnation that commits late): it
//!   demotes on startup and a new epoch must be committed. A forced promotion must
//!   therefore be proposed by the target node's own policy.
//! * **Demote hook, then Demote command.** When a primary releases its role, the Demote
//!   command is proposed only after the demote hook succeeded. If it were proposed
//!   first and committed while the hook hung, a new leader would see "no primary" and
//!   promote without fencing, while the old service still ran.
//! * **Never hand leadership away while this node's service may run.** Leadership
//!   transfer bypasses the voters' lease (the target campaigns at once), so the usual
//!   timing argument of rule 3 does not cover it: the transfer is emitted only when the
//!   local role is Replica. The one exception: a leader whose demote hook keeps failing
//!   hands over when fencing is enabled, so the new leader fences it.
//! * **Fence before promote (rule 4).** A leader about to promote itself fences the
//!   recorded primary when it cannot confirm it stopped (not heard, or still claiming
//!   the role). With `fencing = required` nothing is proposed until the fence hook
//!   succeeded.
//! * **Maintenance** freezes automatic decisions: no failover, transfer, fence, local
//!   restart, hand-over, rejoin or operation step. Still done: the rule-1/3 demotion
//!   above, the startup demote, the promote hook of a promotion that was already
//!   committed (e.g. a forced one) or of a local restart already half done (in-flight
//!   work completes, as in Pacemaker; leaving the service down for the whole window
//!   would be worse), and recording a demotion that already happened.

mod action;
mod config;
mod inputs;
mod leader;
mod notify;
mod request;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

pub use crate::rules::candidate::{
    best_candidate, eligibility, planned_move_eligibility, rank_candidates, CandidateView,
    Ineligible, ServiceReference, ServiceStanding,
};
pub use action::{
    hook_reason_for_demote, hook_reason_for_promote, Action, ActionId, Event, HookKind, HookReason,
    HookRun, LocalRole, StatusNote,
};
pub use config::{
    FailbackCommit, FailbackMode, FencingMode, PolicyConfig, PolicyConfigError, MAX_LOCAL_RESTARTS,
    MAX_VERIFY_CHECKS,
};
pub use inputs::{Inputs, Member, PeerObs, RaftView};
pub use notify::{local_role_name, Notification, NotifyTracker, MAX_NOTIFICATIONS_PER_STEP};
pub use request::{OperatorRequest, Refusal, MAX_SCHEDULE_AHEAD_MS};

use crate::cluster::{ClusterState, Command, DemoteReason, Phase};
use crate::types::{Epoch, NodeId, ResourceHealth, Term};

/// After a transfer deadline passes, its target is skipped for this many
/// `transfer_timeout`s (another candidate, or this node, is tried meanwhile).
pub const TRANSFER_RETRY_AFTER_TIMEOUTS: u32 = 4;

/// The fence retry delay doubles per failed attempt up to this factor of
/// `fence_retry_backoff`.
pub const FENCE_BACKOFF_MAX_FACTOR: u32 = 8;

/// Failed demote attempts after which a leader (with fencing enabled) hands leadership
/// to another node so that node fences this one and takes over.
pub const DEMOTE_ATTEMPTS_BEFORE_FENCING_HANDOVER: u32 = 3;

/// One-off reports (refused proposals, failed hooks) kept until the next step; older ones
/// are dropped first.
pub const MAX_QUEUED_REPORTS: usize = 32;

#[derive(Clone, Debug)]
struct InFlightHook {
    id: ActionId,
    kind: HookKind,
    epoch: Epoch,
    target: Option<NodeId>,
}

/// A finished data action waiting to be recorded ([`Command::RecordOperationData`]).
#[derive(Clone, Debug)]
struct PendingRecord {
    /// The operation it ran for (None: a promote, for the move in progress if any).
    op: Option<u64>,
    action: HookKind,
    ok: bool,
    duration_ms: u64,
    detail: String,
}

#[derive(Clone, Debug)]
struct InFlightProposal {
    id: ActionId,
    name: &'static str,
    sent: Instant,
}

#[derive(Clone, Debug)]
struct Transfer {
    to: NodeId,
    deadline: Instant,
    /// Emitted to the executor (the target was in sync).
    triggered: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FenceState {
    InFlight,
    Succeeded,
    /// Not started yet (attempts == 0) or failed; may be (re)tried at `retry_at`.
    Waiting {
        retry_at: Instant,
    },
}

#[derive(Clone, Debug)]
struct Fence {
    target: NodeId,
    /// State epoch when the fence was decided: a new epoch means a new decision.
    epoch: Epoch,
    attempts: u32,
    state: FenceState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterDemote {
    /// Stay replica; propose Demote with this reason if still leader and still recorded.
    Replica { propose: Option<DemoteReason> },
    /// Local restart: promote again at the same epoch.
    Restart { epoch: Epoch },
}

#[derive(Clone, Copy, Debug)]
struct DemoteProgress {
    reason: HookReason,
    after: AfterDemote,
    attempts: u32,
    retry_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct OpSeen {
    id: u64,
    phase: Phase,
    since: Instant,
    passes_at: u64,
    fails_at: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct MonitorCount {
    /// Consecutive failures while Primary (reset by a pass and by each promotion).
    fail_streak: u32,
    passes: u64,
    fails: u64,
}

/// Collected during one step.
#[derive(Default)]
struct Out {
    actions: Vec<Action>,
    notes: Vec<StatusNote>,
}

impl Out {
    fn note(&mut self, n: StatusNote) {
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }
}

/// A suspended primary's lapse: its term, and when the grace ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Suspension {
    term: Term,
    demote_at: Instant,
}

/// The per-node decision state machine. See the module documentation.
#[derive(Clone, Debug)]
pub struct Policy {
    local: NodeId,
    cfg: PolicyConfig,
    role: LocalRole,
    next_id: ActionId,
    hook: Option<InFlightHook>,
    proposal: Option<InFlightProposal>,
    transfer: Option<Transfer>,
    /// Transfer targets that timed out, skipped until the instant.
    cooldown: BTreeMap<NodeId, Instant>,
    fence: Option<Fence>,
    /// The committed primary seen at the previous step (None before the first step).
    seen_primary: Option<Option<(NodeId, Epoch)>>,
    /// A promotion of this node seen committed while this process led: the only thing
    /// that allows the promote hook (see `track`).
    fresh: Option<(Epoch, HookReason)>,
    /// The epoch of the last Promote of this node that this process proposed.
    proposed_promote: Option<Epoch>,
    demote: DemoteProgress,
    /// Promote hook running but rule 1 failed meanwhile: demote when it returns.
    abandon: Option<DemoteReason>,
    /// While `LocalRole::Suspended`: the term the lapse happened in and when the grace
    /// ends (then the demote hook runs).
    suspension: Option<Suspension>,
    /// Lease lapses that suspended this primary, and how many of them healed (resumed at
    /// the same epoch without a demote): for status and metrics.
    lapses: u64,
    resumes: u64,
    /// A Demote to propose (the hook already ran).
    pending_demote: Option<(Epoch, DemoteReason)>,
    needs_rejoin: bool,
    rejoin_attempts: u32,
    rejoin_retry_at: Option<Instant>,
    /// The primary (and its epoch) this replica's follow hook last succeeded for: after
    /// every primary change, a replica follows the new one (see `replica_duties`).
    followed: Option<(NodeId, Epoch)>,
    follow_attempts: u32,
    follow_retry_at: Option<Instant>,
    /// Local restarts within `restart_window` (bounded by `local_restarts`).
    restarts: VecDeque<Instant>,
    monitor: MonitorCount,
    /// Local restarts were exhausted: not a candidate until then.
    failed_until: Option<Instant>,
    op_seen: Option<OpSeen>,
    home_stable_since: Option<Instant>,
    shutdown: Option<Instant>,
    exit_reported: bool,
    notes: Vec<StatusNote>,
    queued: VecDeque<StatusNote>,
    notify: NotifyTracker,
    /// Failback data actions: the operation the running snapshot or verify is for, and the
    /// outcome of the last one per kind (operation id, ok).
    data_action_for: Option<u64>,
    snapshot_result: Option<(u64, bool)>,
    verify_result: Option<(u64, bool)>,
    /// What the running data action printed ([`Event::HookOutput`]), until it finishes.
    hook_output: Option<(ActionId, String, u64)>,
    /// The verify action's account of the last failed verify (operation id, output): the
    /// undo's reason names what differed.
    verify_detail: Option<(u64, String)>,
    /// A finished data action to record in the operation's history.
    pending_record: Option<PendingRecord>,
    /// The lost primary's epoch this node last asked its monitor a final report for.
    refresh_requested: Option<Epoch>,
    /// A zero-loss failover of the primary of this epoch started waiting for final
    /// reports at this instant.
    final_report_wait: Option<(Epoch, Instant)>,
}

/// A data action's output as one history detail: at most [`crate::cluster::MAX_REASON_BYTES`],
/// cut at a character boundary, trailing whitespace gone.
fn bounded_detail(output: &str) -> String {
    let out = output.trim();
    let max = crate::cluster::MAX_REASON_BYTES;
    if out.len() <= max {
        return out.to_string();
    }
    let mut end = max - 3;
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &out[..end])
}

impl Policy {
    pub fn new(local: NodeId, cfg: PolicyConfig) -> Policy {
        Policy {
            local,
            cfg,
            role: LocalRole::Starting,
            next_id: 0,
            hook: None,
            proposal: None,
            transfer: None,
            cooldown: BTreeMap::new(),
            fence: None,
            seen_primary: None,
            fresh: None,
            proposed_promote: None,
            demote: DemoteProgress {
                reason: HookReason::Startup,
                after: AfterDemote::Replica { propose: None },
                attempts: 0,
                retry_at: None,
            },
            abandon: None,
            suspension: None,
            lapses: 0,
            resumes: 0,
            pending_demote: None,
            needs_rejoin: false,
            rejoin_attempts: 0,
            rejoin_retry_at: None,
            followed: None,
            follow_attempts: 0,
            follow_retry_at: None,
            restarts: VecDeque::new(),
            monitor: MonitorCount::default(),
            failed_until: None,
            op_seen: None,
            home_stable_since: None,
            shutdown: None,
            exit_reported: false,
            notes: Vec::new(),
            queued: VecDeque::new(),
            notify: NotifyTracker::default(),
            data_action_for: None,
            snapshot_result: None,
            verify_result: None,
            hook_output: None,
            verify_detail: None,
            pending_record: None,
            refresh_requested: None,
            final_report_wait: None,
        }
    }

    pub fn local_id(&self) -> NodeId {
        self.local
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    pub fn local_role(&self) -> LocalRole {
        self.role
    }

    /// The current status notes (maintenance, waiting for fence, ...).
    pub fn status_notes(&self) -> &[StatusNote] {
        &self.notes
    }

    /// Rule 1, evaluated now: Some(epoch) only when this node's promote hook succeeded for
    /// the committed epoch, it leads, and its quorum lease is fresh. `/primary` answers 200
    /// only when this is Some.
    pub fn acting_primary(&self, inp: &Inputs<'_>, now: Instant) -> Option<Epoch> {
        match self.role {
            LocalRole::Primary { epoch } if self.acting_check(inp, epoch, now).is_ok() => {
                Some(epoch)
            }
            _ => None,
        }
    }

    /// (lease lapses that suspended this primary, lapses that healed without a demote).
    pub fn lapse_counts(&self) -> (u64, u64) {
        (self.lapses, self.resumes)
    }

    /// The primary (and epoch) this replica's follow hook last succeeded for.
    pub fn followed(&self) -> Option<(NodeId, Epoch)> {
        self.followed
    }

    /// Failed rejoin attempts since the last success, while a rejoin is still due: the
    /// service's data diverged from the primary's and could not be resynchronised yet.
    pub fn rejoin_failures(&self) -> u32 {
        if self.needs_rejoin {
            self.rejoin_attempts
        } else {
            0
        }
    }

    /// What heartbeats must carry as `claims_primary_epoch`: Some while this node's service
    /// may run as primary (promoting, primary, demoting). Other leaders fence a recorded
    /// primary that still claims. A daemon that has not finished its startup demote
    /// claims epoch 0 ("unknown"), because its service may survive from before the
    /// restart.
    pub fn claims_primary(&self) -> Option<Epoch> {
        match self.role {
            LocalRole::Starting => Some(Epoch::NONE),
            LocalRole::Promoting { epoch }
            | LocalRole::Primary { epoch }
            | LocalRole::Suspended { epoch }
            | LocalRole::Demoting { epoch } => Some(epoch),
            LocalRole::Replica | LocalRole::Rejoining => None,
        }
    }

    /// One decision round. Perform the returned actions in order.
    pub fn step(&mut self, inp: &Inputs<'_>, now: Instant) -> Vec<Action> {
        let mut out = Out::default();
        self.track(inp, now, &mut out);
        self.refresh_after_loss(inp, &mut out);
        self.step_local(inp, now, &mut out);
        if inp.raft.is_leader && self.role != LocalRole::Starting {
            self.step_leader(inp, now, &mut out);
        }
        self.step_shutdown(inp, now, &mut out);
        for n in self.notify.step(self.local, inp.state, self.role) {
            out.actions.push(Action::Notify(n));
        }
        self.publish(out)
    }

    /// Feeds back a result or an observation. Stale results (unknown ids) are ignored.
    pub fn observe(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::ProposalCommitted { id, result } => {
                if let Some(p) = self.proposal.take_if(|p| p.id == id) {
                    if let Err(e) = result {
                        self.queue(StatusNote::ProposalRefused {
                            command: p.name.to_string(),
                            error: e.to_string(),
                        });
                    }
                }
            }
            Event::ProposalFailed { id, error } => {
                if self.proposal.take_if(|p| p.id == id).is_some() {
                    self.queue(StatusNote::ProposalFailed { error });
                }
            }
            Event::HookFinished { id, ok } => self.hook_finished(id, ok, now),
            Event::HookOutput {
                id,
                output,
                duration_ms,
            } => {
                if self.hook.as_ref().is_some_and(|h| h.id == id) {
                    self.hook_output = Some((id, output, duration_ms));
                }
            }
            Event::TransferFailed { to, error } => {
                if self.transfer.take_if(|t| t.to == to).is_some() {
                    self.cooldown.insert(to, now + self.transfer_cooldown());
                    self.queue(StatusNote::TransferFailed { to, error });
                }
            }
            Event::MonitorResult { ok } => {
                if ok {
                    self.monitor.passes = self.monitor.passes.saturating_add(1);
                    self.monitor.fail_streak = 0;
                } else {
                    self.monitor.fails = self.monitor.fails.saturating_add(1);
                    // Only failures of a running primary count towards a restart: a
                    // monitor failing while the service is being (re)started is expected.
                    if matches!(self.role, LocalRole::Primary { .. }) {
                        self.monitor.fail_streak = self.monitor.fail_streak.saturating_add(1);
                    }
                }
            }
            Event::ShutdownRequested => {
                if self.shutdown.is_none() {
                    self.shutdown = Some(now + self.cfg.shutdown_timeout);
                }
            }
        }
    }

    // ------------------------------------------------------------------ tracking

    /// Bookkeeping before any decision: detect a promotion of this node committed while
    /// this process runs, expire proposals and transfers, note the operation phase.
    fn track(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        let st = inp.state;
        let cur = st.primary.as_ref().map(|p| (p.node, p.epoch));
        // Only a promotion this process proposed and then saw committed counts as fresh.
        // The state loaded from disk may name this node, and a Promote proposed by a
        // previous incarnation may even commit after the restart (it was in the log of
        // the next leader): both belong to a former life whose service was demoted at
        // startup, and acting on them would promote without this process's decision.
        // The leader then commits a new epoch instead.
        if let (Some(prev), Some(p)) = (self.seen_primary, st.primary.as_ref()) {
            if prev != cur && p.node == self.local && self.proposed_promote == Some(p.epoch) {
                self.fresh = Some((p.epoch, hook_reason_for_promote(p.reason)));
            }
        }
        self.seen_primary = Some(cur);
        if let Some((e, _)) = self.fresh {
            // Lost leadership before the hook started: the promotion is someone else's
            // problem now (the next leader sees this node not acting and decides again).
            if cur != Some((self.local, e)) || !inp.raft.is_leader {
                self.fresh = None;
            }
        }

        let op_key = st.operation.as_ref().map(|o| (o.id, o.phase));
        if op_key != self.op_seen.map(|s| (s.id, s.phase)) {
            self.op_seen = op_key.map(|(id, phase)| OpSeen {
                id,
                phase,
                since: now,
                passes_at: self.monitor.passes,
                fails_at: self.monitor.fails,
            });
        }

        if self
            .proposal
            .as_ref()
            .is_some_and(|p| now.saturating_duration_since(p.sent) >= self.cfg.proposal_timeout)
        {
            self.proposal = None;
            out.note(StatusNote::ProposalTimedOut);
        }

        if let Some(t) = self.transfer.clone() {
            if inp.raft.leader_id == Some(t.to) {
                self.transfer = None;
                self.cooldown.remove(&t.to);
            } else if now >= t.deadline {
                self.transfer = None;
                self.cooldown.insert(t.to, now + self.transfer_cooldown());
                self.queue(StatusNote::TransferTimedOut { to: t.to });
            } else if !inp.raft.is_leader {
                // Someone else won an election: the new leader decides.
                self.transfer = None;
            }
        }
        self.cooldown.retain(|_, until| *until > now);
        if let Some(t) = self.failed_until {
            if now >= t {
                self.failed_until = None;
            }
        }

        if !inp.raft.is_leader {
            // Leader-only memory: a later leadership starts from the state, not from a
            // decision taken under different inputs.
            self.fence = None;
            self.home_stable_since = None;
            self.pending_demote = None;
        }
    }

    fn transfer_cooldown(&self) -> std::time::Duration {
        self.cfg.transfer_timeout * TRANSFER_RETRY_AFTER_TIMEOUTS
    }

    // ------------------------------------------------------------------ local role

    fn step_local(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        let st = inp.state;
        match self.role {
            LocalRole::Starting => {
                out.note(StatusNote::Starting);
                // The daemon may have died while primary and left the service running.
                // This process never promoted it, so it stops it before anything else;
                // a former primary also rejoins before it serves as replica.
                let holder_epoch = st
                    .last_holder
                    .as_ref()
                    .filter(|h| h.node == self.local)
                    .map(|h| h.epoch);
                self.needs_rejoin = st.was_ever_primary(self.local);
                self.start_demote(
                    holder_epoch.unwrap_or(Epoch::NONE),
                    HookReason::Startup,
                    AfterDemote::Replica { propose: None },
                    now,
                    out,
                );
            }
            LocalRole::Demoting { .. } => {
                if self.demote.attempts > 0 {
                    out.note(StatusNote::HookFailed {
                        hook: HookKind::Demote,
                        attempts: self.demote.attempts,
                    });
                }
                self.try_emit_demote(now, out);
            }
            LocalRole::Rejoining => {}
            LocalRole::Promoting { epoch } => {
                if self.abandon.is_none() {
                    if let Err(why) = self.acting_check(inp, epoch, now) {
                        // Cannot cancel a running hook from here: stop what can be
                        // stopped now and demote as soon as the hook returns.
                        out.actions.push(Action::DemoteNow { reason: why });
                        out.note(StatusNote::DemotedSelf { reason: why });
                        self.abandon = Some(why);
                    }
                }
            }
            LocalRole::Suspended { epoch } => self.step_suspended(inp, epoch, now, out),
            LocalRole::Primary { epoch } => match self.acting_check(inp, epoch, now) {
                Err(DemoteReason::LeaseLost) if self.may_suspend(inp, now) => {
                    // Rules 1 and 3 still: stop acting at once. But a lapse that heals in
                    // the same term (a follower's slow fsync held back its heartbeat
                    // answers) should cost a write pause, not a stop and start of the
                    // service: keep it as it is until the grace ends.
                    out.actions.push(Action::DemoteNow {
                        reason: DemoteReason::LeaseLost,
                    });
                    out.note(StatusNote::Suspended {
                        reason: DemoteReason::LeaseLost,
                    });
                    let lapsed_at = inp
                        .raft
                        .last_quorum_acked
                        .map(|t| t + self.cfg.lease)
                        .unwrap_or(now);
                    self.suspension = Some(Suspension {
                        term: inp.raft.term,
                        demote_at: lapsed_at + self.cfg.lapse_grace,
                    });
                    self.role = LocalRole::Suspended { epoch };
                    self.lapses = self.lapses.saturating_add(1);
                }
                Err(why) => {
                    // Rules 1 and 3: stop at once, then run the hook; the Demote command
                    // (if this node still leads) is proposed only after the hook succeeded.
                    out.actions.push(Action::DemoteNow { reason: why });
                    self.demote_self(epoch, why, now, out);
                }
                Ok(()) => self.primary_duties(inp, epoch, now, out),
            },
            LocalRole::Replica => self.replica_duties(inp, now, out),
        }
    }

    /// A lease lapse may suspend (rather than demote) only with a grace configured, while
    /// this node still leads, and not while the daemon stops.
    fn may_suspend(&self, inp: &Inputs<'_>, now: Instant) -> bool {
        !self.cfg.lapse_grace.is_zero()
            && inp.raft.is_leader
            && self.shutdown.is_none()
            && inp
                .raft
                .last_quorum_acked
                .is_some_and(|t| now < t + self.cfg.lease + self.cfg.lapse_grace)
    }

    /// `LocalRole::Suspended`: resume at the same epoch once rule 1 holds again in the term
    /// of the lapse (every other leader would have a higher term, and this node would have
    /// learnt of it from the quorum that acknowledged it); demote when the grace ends, the
    /// term changes, leadership or the committed role is lost, or the daemon stops.
    fn step_suspended(&mut self, inp: &Inputs<'_>, epoch: Epoch, now: Instant, out: &mut Out) {
        let Some(s) = self.suspension else {
            // Cannot happen (set together with the role); demote, the safe way out.
            self.demote_self(epoch, DemoteReason::LeaseLost, now, out);
            return;
        };
        let same_term = inp.raft.term == s.term;
        match self.acting_check(inp, epoch, now) {
            Ok(()) if same_term && self.shutdown.is_none() => {
                self.role = LocalRole::Primary { epoch };
                self.suspension = None;
                self.resumes = self.resumes.saturating_add(1);
                out.note(StatusNote::Resumed { epoch });
            }
            Err(DemoteReason::LeaseLost)
                if same_term && now < s.demote_at && self.shutdown.is_none() =>
            {
                out.note(StatusNote::Suspended {
                    reason: DemoteReason::LeaseLost,
                });
            }
            res => {
                let why = match res {
                    Err(why) => why,
                    Ok(()) => DemoteReason::LeadershipLost,
                };
                self.demote_self(epoch, why, now, out);
            }
        }
    }

    /// Rule 3's demote of this node's own service (after `DemoteNow`, or after a lapse that
    /// did not heal): the demote hook, then the Demote command once it succeeded.
    fn demote_self(&mut self, epoch: Epoch, why: DemoteReason, now: Instant, out: &mut Out) {
        self.suspension = None;
        out.note(StatusNote::DemotedSelf { reason: why });
        self.start_demote(
            epoch,
            hook_reason_for_demote(why),
            AfterDemote::Replica { propose: Some(why) },
            now,
            out,
        );
    }

    fn replica_duties(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        let st = inp.state;
        if let Some((epoch, reason)) = self.fresh {
            if self.shutdown.is_some() || self.hook.is_some() {
                return;
            }
            // Rule 2: the Promote is committed (it is in the state) and this node still
            // leads with a quorum within lease; only now may the service start.
            if inp.raft.leader_with_quorum_acked(now, self.cfg.lease)
                && st.is_primary(self.local, epoch)
            {
                let previous = st.primary.as_ref().and_then(|p| p.previous);
                if self.emit_hook(HookKind::Promote, epoch, reason, previous, None, out) {
                    self.role = LocalRole::Promoting { epoch };
                    self.fresh = None;
                    self.abandon = None;
                }
            } else {
                out.note(StatusNote::WaitingForQuorum);
            }
            return;
        }
        let may_rejoin = self.needs_rejoin
            && self.shutdown.is_none()
            && !st.in_maintenance()
            && self.hook.is_none()
            && self.rejoin_retry_at.is_none_or(|t| now >= t);
        if may_rejoin {
            // Rejoin needs a primary to rejoin to (pg_rewind-style resync).
            if let Some(p) = st.primary.as_ref().filter(|p| p.node != self.local) {
                let primary = p.node;
                if self.emit_hook(
                    HookKind::Rejoin,
                    st.epoch,
                    HookReason::Rejoin,
                    None,
                    Some(primary),
                    out,
                ) {
                    self.role = LocalRole::Rejoining;
                    out.note(StatusNote::Rejoining { primary });
                }
            }
            return;
        }
        self.follow_primary(inp, now, out);
    }

    /// Every replica follows the primary: once per primary change (a new epoch), after a
    /// rejoin if one is due, the follow hook points this node's service at the primary the
    /// committed state names (`QUORATE_PRIMARY`, `QUORATE_PRIMARY_SERVICE`), once that
    /// primary is heard on heartbeats. A failed follow is retried after `hook_retry_backoff`. Witnesses hold no copy of the service and do
    /// not follow; maintenance freezes it like every automatic action.
    fn follow_primary(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        let st = inp.state;
        let Some(p) = st.primary.as_ref().filter(|p| p.node != self.local) else {
            return;
        };
        let target = (p.node, p.epoch);
        // Not while this node leads: a leader that is not the primary is in the middle of a
        // failover or hand-over, and its own steps (fence, promote) need the hook slot. Not
        // a primary that is silent on heartbeats: following a dead node only delays the
        // failover that is coming. Not before the primary's service says it is primary, when
        // it reports a role: the Promote commits before the promote hook runs (rule 2), and
        // a replica that followed a half-promoted service would copy the old timeline.
        let may_follow = self.followed != Some(target)
            && !inp.raft.is_leader
            && inp.peers.get(&p.node).is_some_and(|o| {
                o.alive
                    && o.service
                        .role
                        .is_none_or(|r| r == crate::types::ServiceRole::Primary)
            })
            && !self.needs_rejoin
            && self.shutdown.is_none()
            && !st.in_maintenance()
            && self.hook.is_none()
            && inp
                .member(self.local)
                .is_some_and(|m| m.role != crate::types::NodeRole::Witness)
            && self.follow_retry_at.is_none_or(|t| now >= t);
        if !may_follow {
            if self.follow_attempts > 0 && self.followed != Some(target) {
                out.note(StatusNote::HookFailed {
                    hook: HookKind::Follow,
                    attempts: self.follow_attempts,
                });
            }
            return;
        }
        self.emit_hook(
            HookKind::Follow,
            p.epoch,
            hook_reason_for_promote(p.reason),
            p.previous,
            Some(p.node),
            out,
        );
    }

    /// Duties of an acting primary: local restarts, hand-over on exhausted restarts or
    /// drain. Frozen in maintenance; operations drive their own source and destination.
    fn primary_duties(&mut self, inp: &Inputs<'_>, epoch: Epoch, now: Instant, out: &mut Out) {
        let st = inp.state;
        if st.in_maintenance() || self.shutdown.is_some() {
            return;
        }
        if let Some(op) = &st.operation {
            if self.operation_owns_primary(op) {
                return;
            }
        }
        if self.monitor.fail_streak >= self.cfg.failure_threshold {
            self.prune_restarts(now);
            let used = u32::try_from(self.restarts.len()).unwrap_or(u32::MAX);
            if used < self.restart_budget() {
                // Restart in place first: cheaper than a failover, keeps the epoch.
                self.restarts.push_back(now);
                let attempt = used + 1;
                out.note(StatusNote::LocalRestart {
                    attempt,
                    max: self.cfg.local_restarts,
                });
                if self.proposal.is_none() && inp.raft.is_leader {
                    self.propose(
                        Command::NoteRestart {
                            node: self.local,
                            epoch,
                            attempt,
                            at_unix_ms: inp.now_unix_ms,
                        },
                        now,
                        out,
                    );
                }
                self.start_demote(
                    epoch,
                    HookReason::Restart,
                    AfterDemote::Restart { epoch },
                    now,
                    out,
                );
                return;
            }
            self.failed_until = Some(now + self.cfg.restart_window);
            self.hand_over(inp, epoch, DemoteReason::ResourceFailure, now, out);
            return;
        }
        if st.is_drained(self.local) {
            self.hand_over(inp, epoch, DemoteReason::Drained, now, out);
        }
    }

    /// Releases the role so another node can take it: demote hook, then Demote command,
    /// then (leader part) leadership transfer to the best other node, which promotes.
    /// Only when another node can take over: a primary with a sick service still beats
    /// no primary, and it keeps retrying local restarts as the window frees up.
    fn hand_over(
        &mut self,
        inp: &Inputs<'_>,
        epoch: Epoch,
        reason: DemoteReason,
        now: Instant,
        out: &mut Out,
    ) {
        if self.other_candidates(inp, now).is_empty() {
            out.note(StatusNote::NoCandidateForHandover { reason });
            return;
        }
        out.note(StatusNote::HandingOver { reason });
        self.start_demote(
            epoch,
            hook_reason_for_demote(reason),
            AfterDemote::Replica {
                propose: Some(reason),
            },
            now,
            out,
        );
    }

    fn step_shutdown(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        let Some(deadline) = self.shutdown else {
            return;
        };
        out.note(StatusNote::ShuttingDown);
        match self.role {
            // Even in maintenance: once the daemon is gone nothing enforces rule 3 on
            // this service any more.
            LocalRole::Primary { epoch } | LocalRole::Suspended { epoch } => self.start_demote(
                epoch,
                HookReason::Maintenance,
                AfterDemote::Replica {
                    propose: Some(DemoteReason::Shutdown),
                },
                now,
                out,
            ),
            LocalRole::Promoting { .. } if self.abandon.is_none() => {
                out.actions.push(Action::DemoteNow {
                    reason: DemoteReason::Shutdown,
                });
                self.abandon = Some(DemoteReason::Shutdown);
            }
            _ => {}
        }
        let idle = self.role == LocalRole::Replica && self.hook.is_none();
        // A leader waits (until the deadline) for its Demote to commit and for the
        // leadership transfer to the best other node, so the next primary is promoted
        // without an election timeout.
        let handing_over = inp.raft.is_leader
            && now < deadline
            && (self.pending_demote.is_some()
                || self.proposal.is_some()
                || !self.other_candidates(inp, now).is_empty());
        if idle && !handing_over && !self.exit_reported {
            self.exit_reported = true;
            out.actions.push(Action::ReadyToExit);
        }
    }

    // ------------------------------------------------------------------ hooks

    fn hook_finished(&mut self, id: ActionId, ok: bool, now: Instant) {
        let Some(h) = self.hook.take_if(|h| h.id == id) else {
            return;
        };
        let output = self
            .hook_output
            .take()
            .filter(|(oid, ..)| *oid == id)
            .map(|(_, o, d)| (bounded_detail(&o), d));
        // Snapshot and verify belong to the operation they ran for; a promote to the move
        // in progress, if any (its account includes the final sync).
        let belongs_to = match h.kind {
            HookKind::Snapshot | HookKind::Verify => self.data_action_for.map(Some),
            HookKind::Promote => Some(None),
            _ => None,
        };
        if let (Some((detail, duration_ms)), Some(op)) = (output, belongs_to) {
            if let (HookKind::Verify, false, Some(op)) = (h.kind, ok, op) {
                self.verify_detail = Some((op, detail.clone()));
            }
            self.pending_record = Some(PendingRecord {
                op,
                action: h.kind,
                ok,
                duration_ms,
                detail,
            });
        }
        match h.kind {
            HookKind::Demote => {
                if !matches!(self.role, LocalRole::Demoting { .. }) {
                    return;
                }
                if !ok {
                    // The service may still run: stay Demoting (claiming the role, so
                    // others fence before promoting) and retry.
                    self.demote.attempts = self.demote.attempts.saturating_add(1);
                    self.demote.retry_at = Some(now + self.cfg.hook_retry_backoff);
                    self.queue(StatusNote::HookFailed {
                        hook: HookKind::Demote,
                        attempts: self.demote.attempts,
                    });
                    return;
                }
                self.demote.attempts = 0;
                self.demote.retry_at = None;
                self.role = LocalRole::Replica;
                match self.demote.after {
                    AfterDemote::Replica { propose } => {
                        if self.demote.reason != HookReason::Startup {
                            self.needs_rejoin = true;
                        }
                        self.pending_demote = propose.map(|r| (h.epoch, r));
                    }
                    AfterDemote::Restart { epoch } => {
                        self.fresh = Some((epoch, HookReason::Restart));
                    }
                }
            }
            HookKind::Promote => {
                let LocalRole::Promoting { epoch } = self.role else {
                    return;
                };
                if let Some(why) = self.abandon.take() {
                    self.begin_demote(
                        epoch,
                        hook_reason_for_demote(why),
                        AfterDemote::Replica { propose: Some(why) },
                    );
                } else if ok {
                    self.role = LocalRole::Primary { epoch };
                    self.monitor.fail_streak = 0;
                    self.needs_rejoin = false;
                } else {
                    // A promote hook that fails is a resource failure: restart while
                    // allowed, else hand over.
                    self.queue(StatusNote::HookFailed {
                        hook: HookKind::Promote,
                        attempts: 1,
                    });
                    self.prune_restarts(now);
                    if u32::try_from(self.restarts.len()).unwrap_or(u32::MAX)
                        < self.restart_budget()
                    {
                        self.restarts.push_back(now);
                        self.begin_demote(
                            epoch,
                            HookReason::Restart,
                            AfterDemote::Restart { epoch },
                        );
                    } else {
                        self.failed_until = Some(now + self.cfg.restart_window);
                        self.begin_demote(
                            epoch,
                            HookReason::Failover,
                            AfterDemote::Replica {
                                propose: Some(DemoteReason::ResourceFailure),
                            },
                        );
                    }
                }
            }
            // The policy never asks for the monitor hook (the monitor loop runs it).
            HookKind::Monitor | HookKind::Notify | HookKind::Start | HookKind::Stop => {}
            HookKind::Snapshot => {
                if let Some(op) = self.data_action_for.take() {
                    self.snapshot_result = Some((op, ok));
                }
            }
            HookKind::Verify => {
                if let Some(op) = self.data_action_for.take() {
                    self.verify_result = Some((op, ok));
                }
            }
            HookKind::Follow => {
                if ok {
                    self.followed = h.target.map(|t| (t, h.epoch));
                    self.follow_attempts = 0;
                    self.follow_retry_at = None;
                } else {
                    self.follow_attempts = self.follow_attempts.saturating_add(1);
                    self.follow_retry_at = Some(now + self.cfg.hook_retry_backoff);
                    self.queue(StatusNote::HookFailed {
                        hook: HookKind::Follow,
                        attempts: self.follow_attempts,
                    });
                }
            }
            HookKind::Rejoin => {
                if self.role == LocalRole::Rejoining {
                    self.role = LocalRole::Replica;
                }
                if ok {
                    self.needs_rejoin = false;
                    self.rejoin_attempts = 0;
                    self.rejoin_retry_at = None;
                } else {
                    self.rejoin_attempts = self.rejoin_attempts.saturating_add(1);
                    self.rejoin_retry_at = Some(now + self.cfg.hook_retry_backoff);
                    self.queue(StatusNote::HookFailed {
                        hook: HookKind::Rejoin,
                        attempts: self.rejoin_attempts,
                    });
                }
            }
            HookKind::Fence => {
                let backoff = self.fence_backoff();
                if let Some(f) = self.fence.as_mut() {
                    if Some(f.target) == h.target && f.state == FenceState::InFlight {
                        f.state = if ok {
                            FenceState::Succeeded
                        } else {
                            FenceState::Waiting {
                                retry_at: now + backoff,
                            }
                        };
                    }
                }
            }
        }
    }

    fn fence_backoff(&self) -> std::time::Duration {
        let attempts = self.fence.as_ref().map(|f| f.attempts).unwrap_or(1);
        let factor = 1u32 << attempts.saturating_sub(1).min(3);
        self.cfg.fence_retry_backoff * factor.min(FENCE_BACKOFF_MAX_FACTOR)
    }

    fn begin_demote(&mut self, epoch: Epoch, reason: HookReason, after: AfterDemote) {
        self.role = LocalRole::Demoting { epoch };
        self.demote = DemoteProgress {
            reason,
            after,
            attempts: 0,
            retry_at: None,
        };
    }

    fn start_demote(
        &mut self,
        epoch: Epoch,
        reason: HookReason,
        after: AfterDemote,
        now: Instant,
        out: &mut Out,
    ) {
        self.begin_demote(epoch, reason, after);
        self.try_emit_demote(now, out);
    }

    fn try_emit_demote(&mut self, now: Instant, out: &mut Out) {
        let LocalRole::Demoting { epoch } = self.role else {
            return;
        };
        if self.demote.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let reason = self.demote.reason;
        self.emit_hook(HookKind::Demote, epoch, reason, None, None, out);
    }

    fn emit_hook(
        &mut self,
        kind: HookKind,
        epoch: Epoch,
        reason: HookReason,
        previous_primary: Option<NodeId>,
        target: Option<NodeId>,
        out: &mut Out,
    ) -> bool {
        if self.hook.is_some() {
            return false;
        }
        let id = self.next_action_id();
        self.hook = Some(InFlightHook {
            id,
            kind,
            epoch,
            target,
        });
        out.actions.push(Action::RunHook(HookRun {
            id,
            hook: kind,
            epoch,
            reason,
            previous_primary,
            target,
        }));
        true
    }

    fn propose(&mut self, cmd: Command, now: Instant, out: &mut Out) {
        let id = self.next_action_id();
        self.proposal = Some(InFlightProposal {
            id,
            name: cmd.name(),
            sent: now,
        });
        out.actions.push(Action::Propose { id, cmd });
    }

    fn next_action_id(&mut self) -> ActionId {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn queue(&mut self, n: StatusNote) {
        while self.queued.len() >= MAX_QUEUED_REPORTS {
            self.queued.pop_front();
        }
        self.queued.push_back(n);
    }

    /// Actions in emission order, then a Report for each note that became true and each
    /// queued one-off report.
    fn publish(&mut self, out: Out) -> Vec<Action> {
        let mut actions = out.actions;
        actions.extend(self.queued.drain(..).map(Action::Report));
        for n in &out.notes {
            if !self.notes.contains(n) {
                actions.push(Action::Report(n.clone()));
            }
        }
        self.notes = out.notes;
        actions
    }

    // ------------------------------------------------------------------ helpers

    /// Rule 1 for a node whose service runs at `epoch` (the rule: [`crate::rules::acting_check`]).
    fn acting_check(
        &self,
        inp: &Inputs<'_>,
        epoch: Epoch,
        now: Instant,
    ) -> Result<(), DemoteReason> {
        crate::rules::acting_check(
            inp.state,
            self.local,
            epoch,
            inp.raft.is_leader,
            inp.raft.quorum_acked_age(now),
            self.cfg.lease,
        )
    }

    /// This node's service runs as the committed primary.
    fn acting_here(&self, st: &ClusterState) -> bool {
        matches!(self.role, LocalRole::Primary { epoch } if st.is_primary(self.local, epoch))
    }

    /// `local_restarts`, never above `MAX_LOCAL_RESTARTS` (bounds the timestamp list even
    /// with an unvalidated config).
    fn restart_budget(&self) -> u32 {
        self.cfg.local_restarts.min(MAX_LOCAL_RESTARTS)
    }

    fn prune_restarts(&mut self, now: Instant) {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.cfg.restart_window)
        {
            self.restarts.pop_front();
        }
    }

    /// This node's health for candidacy: unusable while stopping, after exhausting local
    /// restarts, or while its demote hook fails.
    /// The health this node tells its peers (heartbeats): the same judgement its own
    /// candidacy uses. Advertising only the monitor's verdict while judging itself by more
    /// (a promote that failed past the restart budget, a shutdown, a demote that keeps
    /// failing) lets two leaders each see the other as the better candidate and hand
    /// leadership back and forth without end.
    pub fn advertised_health(&self, inp: &Inputs<'_>, now: Instant) -> ResourceHealth {
        self.self_health(inp, now)
    }

    fn self_health(&self, inp: &Inputs<'_>, now: Instant) -> ResourceHealth {
        if self.shutdown.is_some()
            || self.failed_until.is_some_and(|t| now < t)
            || self.demote.attempts > 0 && matches!(self.role, LocalRole::Demoting { .. })
        {
            ResourceHealth::Unhealthy
        } else {
            inp.local_health
        }
    }

    /// Every member as a candidate, from this node's point of view (meaningful on the
    /// leader, which alone knows replication progress).
    pub fn candidate_views(&self, inp: &Inputs<'_>, now: Instant) -> Vec<CandidateView> {
        let report_of = |id: NodeId| {
            if id == self.local {
                Some(inp.local_service)
            } else {
                inp.peers.get(&id).map(|o| o.service)
            }
        };
        let reference = ServiceReference::from_reports(
            inp.state.primary_node().and_then(report_of),
            inp.members.iter().filter_map(|m| report_of(m.id)),
        );
        let max_behind = self.cfg.max_service_lag_bytes;
        inp.members
            .iter()
            .map(|m| {
                let drained = inp.state.is_drained(m.id);
                if m.id == self.local {
                    CandidateView {
                        id: m.id,
                        role: m.role,
                        priority: m.priority,
                        alive: true,
                        health: self.self_health(inp, now),
                        drained,
                        lag: if inp.raft.is_leader {
                            Some(0)
                        } else {
                            inp.raft.lag(m.id)
                        },
                        service: reference.standing(inp.local_service, max_behind),
                        excluded: None,
                    }
                } else {
                    let obs = inp.peers.get(&m.id);
                    CandidateView {
                        id: m.id,
                        role: m.role,
                        priority: m.priority,
                        alive: obs.is_some_and(|o| o.alive),
                        health: obs.map(|o| o.health).unwrap_or_default(),
                        drained,
                        lag: inp.raft.lag(m.id),
                        service: reference
                            .standing(obs.map(|o| o.service).unwrap_or_default(), max_behind),
                        excluded: None,
                    }
                }
            })
            .collect()
    }

    /// The epoch of the primary this node has lost: the committed primary is another node
    /// that is dead on every link, or no primary is recorded since epoch `e` ended (it was
    /// released). None while a primary is heard (or this node is it) and before any.
    pub fn lost_primary_epoch(&self, inp: &Inputs<'_>) -> Option<Epoch> {
        let st = inp.state;
        match &st.primary {
            Some(p) if p.node == self.local => None,
            Some(p) => inp
                .peers
                .get(&p.node)
                .is_none_or(|o| o.dead_on_all_links)
                .then_some(p.epoch),
            None => (st.epoch > Epoch(0)).then_some(st.epoch),
        }
    }

    /// Once per lost primary, asks the monitor for a report taken after the loss (zero-loss
    /// failover only: without it no one waits for final reports).
    fn refresh_after_loss(&mut self, inp: &Inputs<'_>, out: &mut Out) {
        if !self.cfg.zero_loss_failover {
            return;
        }
        // Not while this node's own action changes its service (a follow or rejoin toward
        // the lost primary ends on its own): the report after it is the final one.
        if self.hook.as_ref().is_some_and(|h| {
            matches!(
                h.kind,
                HookKind::Follow | HookKind::Rejoin | HookKind::Demote | HookKind::Promote
            )
        }) {
            return;
        }
        let Some(lost) = self.lost_primary_epoch(inp) else {
            if self.refresh_requested.take().is_some() {
                out.actions.push(Action::ServiceReportNotFinal);
            }
            return;
        };
        {
            if self.refresh_requested.is_none_or(|r| r < lost) {
                self.refresh_requested = Some(lost);
                // The agent detaches from the lost primary: should it come back (a blip),
                // this replica follows it again.
                self.followed = None;
                self.follow_attempts = 0;
                self.follow_retry_at = None;
                out.actions.push(Action::RefreshServiceReport { lost });
            }
        }
    }

    /// The zero-loss failover rule over `views` ([`crate::rules::restrict_to_final_most_advanced`]),
    /// when it applies (zero-loss mode, a primary was lost). Returns false while the failover
    /// must wait for final reports (bounded by `final_report_wait`; noted in status).
    fn restrict_for_zero_loss(
        &mut self,
        inp: &Inputs<'_>,
        now: Instant,
        views: &mut [CandidateView],
        out: &mut Out,
    ) -> bool {
        let lost = match self.lost_primary_epoch(inp) {
            Some(e) if self.cfg.zero_loss_failover => e,
            _ => {
                self.final_report_wait = None;
                return true;
            }
        };
        let since = match self.final_report_wait {
            Some((e, t)) if e == lost => t,
            _ => {
                self.final_report_wait = Some((lost, now));
                now
            }
        };
        let is_final = |id: NodeId| {
            let tag = if id == self.local {
                inp.local_report_after_loss
            } else {
                inp.peers.get(&id).and_then(|o| o.report_after_loss)
            };
            tag.is_some_and(|t| t >= lost)
        };
        let waiting = crate::rules::restrict_to_final_most_advanced(
            views,
            self.cfg.max_lag_on_failover,
            is_final,
        );
        if waiting.is_empty() {
            return true;
        }
        if now.saturating_duration_since(since) < self.cfg.final_report_wait {
            out.note(StatusNote::WaitingForFinalReports { nodes: waiting });
            return false;
        }
        // Waited long enough: the silent ones stay excluded.
        out.note(StatusNote::FinalReportsMissing { nodes: waiting });
        true
    }

    /// Eligible nodes other than this one, best first.
    fn other_candidates(&self, inp: &Inputs<'_>, now: Instant) -> Vec<NodeId> {
        let views = self.candidate_views(inp, now);
        rank_candidates(&views, self.cfg.max_lag_on_failover)
            .into_iter()
            .map(|c| c.id)
            .filter(|id| *id != self.local)
            .collect()
    }
}
