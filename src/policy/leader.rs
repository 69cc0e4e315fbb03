//! Decisions only the Raft leader takes: choosing and installing a primary, fencing,
//! leadership transfer, driving switchover and failback operations.
//!
//! Only the leader can propose, and only the leader can act as primary (rule 1), so the
//! leader is also the only node that can be, or become, the acting primary right now.
//! That is why "is there an acting primary?" is answered from this node's own role.

use std::time::Instant;

use super::{
    AfterDemote, Fence, FenceState, HookKind, HookReason, Inputs, LocalRole, Out, Policy,
    StatusNote, Transfer, DEMOTE_ATTEMPTS_BEFORE_FENCING_HANDOVER,
};
use crate::cluster::{
    Command, Demote, Direction, Move, Operation, OperationKind, Outcome, Phase, Promote,
    PromoteReason, Step,
};
use crate::policy::config::{FailbackCommit, FailbackMode, FencingMode};
use crate::policy::hook_reason_for_demote;
use crate::rules::candidate::{eligibility, planned_move_eligibility, rank_candidates, Ineligible};
use crate::types::NodeId;

/// A reason within [`crate::cluster::MAX_REASON_BYTES`] (cut at a character boundary).
fn bounded_reason(reason: &str) -> String {
    super::bounded_detail(reason)
}

impl Policy {
    pub(super) fn step_leader(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        let st = inp.state;
        if let Some(m) = &st.maintenance {
            out.note(StatusNote::Maintenance {
                reason: m.reason.clone(),
            });
        }
        // One proposal at a time: the next decision must see the previous one's effect
        // in the committed state, or it could propose against a state that is about to
        // change (apply would refuse it, but it would cost a round trip).
        if self.proposal.is_some() {
            return;
        }
        // Record a release that already happened (the hook ran). Also in maintenance:
        // it is a fact, not a decision.
        if let Some((epoch, reason)) = self.pending_demote.take() {
            if st.is_primary(self.local, epoch) {
                let cmd = Command::Demote(Demote {
                    node: self.local,
                    epoch,
                    reason,
                    term: inp.raft.term,
                    at_unix_ms: inp.now_unix_ms,
                });
                self.propose(cmd, now, out);
                return;
            }
        }
        // Record a data action of the operation in progress (history only).
        if let Some(rec) = self.pending_record.take() {
            if let Some(cmd) = self.record_command(rec, inp) {
                self.propose(cmd, now, out);
                return;
            }
        }
        if st.in_maintenance() {
            return;
        }
        if let Some(op) = &st.operation {
            if self.step_operation(inp, op, now, out) || self.proposal.is_some() {
                return;
            }
        }
        self.step_failback_watch(inp, now, out);
        if self.proposal.is_some() {
            return;
        }
        self.step_failover(inp, now, out);
    }

    /// The history record of a finished data action, when an operation it belongs to is
    /// still in progress (a promote counts when this node is the destination of the move).
    fn record_command(&self, rec: super::PendingRecord, inp: &Inputs<'_>) -> Option<Command> {
        let op = inp.state.operation.as_ref()?;
        let belongs = match rec.op {
            Some(id) => id == op.id,
            None => op
                .current_move()
                .is_some_and(|mv| mv.dst == self.local && mv.step == Step::Promoting),
        };
        belongs.then_some(Command::RecordOperationData {
            id: op.id,
            node: self.local,
            action: rec.action,
            ok: rec.ok,
            duration_ms: rec.duration_ms,
            detail: rec.detail,
            at_unix_ms: inp.now_unix_ms,
        })
    }

    /// Makes sure a primary exists: the best eligible node, installed by transfer (if it
    /// is another node) or by fence + Promote (if it is this one).
    fn step_failover(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        let st = inp.state;
        if let Some(p) = &st.primary {
            if p.node == self.local {
                match self.role {
                    LocalRole::Primary { epoch } | LocalRole::Promoting { epoch }
                        if epoch == p.epoch =>
                    {
                        return
                    }
                    LocalRole::Replica if self.fresh.is_some_and(|(e, _)| e == p.epoch) => return,
                    // Otherwise the record is stale (this daemon restarted, or lost and
                    // regained leadership): a new epoch must be committed.
                    _ => {}
                }
            }
        }
        // A leader whose demote keeps failing may still run the service; with fencing
        // on it hands leadership over so the next leader fences it and takes over.
        let fencing_handover = matches!(self.role, LocalRole::Demoting { .. })
            && self.demote.attempts >= DEMOTE_ATTEMPTS_BEFORE_FENCING_HANDOVER
            && self.cfg.fencing != FencingMode::Off;
        if !fencing_handover {
            // Never move leadership or promote while this node's own service may run or
            // one of its hooks is changing it (a fence hook is the leader's own step).
            if self.role != LocalRole::Replica {
                return;
            }
            if self
                .hook
                .as_ref()
                .is_some_and(|h| h.kind != HookKind::Fence)
            {
                return;
            }
        }
        let max_lag = self.cfg.max_lag_on_failover;
        let mut views = self.candidate_views(inp, now);
        if !self.restrict_for_zero_loss(inp, now, &mut views, out) {
            return;
        }
        // Keep a transfer in flight while its target stays eligible: candidates with
        // equal priority swap places as their lag fluctuates, and re-targeting on every
        // step would trigger a new election each time.
        if let Some(to) = self.transfer.as_ref().map(|t| t.to) {
            if views
                .iter()
                .any(|c| c.id == to && eligibility(c, max_lag).is_ok())
            {
                self.transfer_to(to, inp, now, out);
                return;
            }
            self.transfer = None;
        }
        let ranked = rank_candidates(&views, max_lag);
        let best = ranked
            .iter()
            .find(|c| c.id == self.local || !self.cooldown.contains_key(&c.id))
            .map(|c| c.id);
        match best {
            None => {
                if let Some(c) = ranked.first() {
                    out.note(StatusNote::TransferTimedOut { to: c.id });
                } else {
                    let reasons = views
                        .iter()
                        .filter_map(|c| eligibility(c, max_lag).err())
                        .collect();
                    out.note(StatusNote::NoEligibleCandidate { reasons });
                }
            }
            Some(b) if b == self.local => {
                if !fencing_handover {
                    self.promote_self(inp, now, out, None);
                }
            }
            Some(b) => self.transfer_to(b, inp, now, out),
        }
    }

    /// Proposes this node's promotion: lease first (a leader that cannot reach a quorum
    /// cannot commit, and must not believe it could), then fencing, then Promote with
    /// `epoch + 1`. The promote hook runs later, when the Promote shows up committed.
    fn promote_self(
        &mut self,
        inp: &Inputs<'_>,
        now: Instant,
        out: &mut Out,
        op_reason: Option<PromoteReason>,
    ) {
        let st = inp.state;
        if !inp.raft.leader_with_quorum_acked(now, self.cfg.lease) {
            out.note(StatusNote::WaitingForQuorum);
            return;
        }
        if !self.fenced_enough(inp, now, out) {
            return;
        }
        let Some(epoch) = st.epoch.checked_next() else {
            return;
        };
        let reason = op_reason.unwrap_or(
            match (&st.last_holder, st.primary.is_none(), st.last_release) {
                (None, _, _) => PromoteReason::Startup,
                (Some(_), true, Some(r)) if r.is_planned() => PromoteReason::Handover,
                _ => PromoteReason::Failover,
            },
        );
        self.proposed_promote = Some(epoch);
        let cmd = Command::Promote(Promote {
            node: self.local,
            epoch,
            reason,
            previous: st.last_holder.as_ref().map(|h| h.node),
            home: self.cfg.preferred_primary,
            term: inp.raft.term,
            at_unix_ms: inp.now_unix_ms,
        });
        self.propose(cmd, now, out);
    }

    /// The recorded primary, when it is another node and cannot be confirmed stopped: not
    /// heard on heartbeat, or still claiming the role (its demote may be hung).
    fn fence_target(&self, inp: &Inputs<'_>) -> Option<NodeId> {
        let p = inp.state.primary.as_ref()?;
        if p.node == self.local {
            return None;
        }
        let confirmed = inp
            .peers
            .get(&p.node)
            .is_some_and(|o| o.alive && o.claims_primary_epoch.is_none());
        (!confirmed).then_some(p.node)
    }

    /// Rule 4. True when the promotion may go ahead.
    fn fenced_enough(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) -> bool {
        let Some(target) = self.fence_target(inp) else {
            self.fence = None;
            return true;
        };
        let required = match self.cfg.fencing {
            FencingMode::Off => return true,
            FencingMode::Required => true,
            FencingMode::BestEffort => false,
        };
        let epoch = inp.state.epoch;
        if !self
            .fence
            .as_ref()
            .is_some_and(|f| f.target == target && f.epoch == epoch)
        {
            self.fence = Some(Fence {
                target,
                epoch,
                attempts: 0,
                state: FenceState::Waiting { retry_at: now },
            });
        }
        let Some((attempts, state)) = self.fence.as_ref().map(|f| (f.attempts, f.state)) else {
            return false;
        };
        match state {
            FenceState::Succeeded => true,
            FenceState::InFlight => {
                out.note(StatusNote::WaitingForFence {
                    target,
                    attempt: attempts,
                    required,
                });
                false
            }
            FenceState::Waiting { retry_at } => {
                if attempts > 0 && !required {
                    out.note(StatusNote::FenceFailedPromotingAnyway { target });
                    return true;
                }
                if now >= retry_at
                    && self.emit_hook(
                        HookKind::Fence,
                        epoch.saturating_next(),
                        HookReason::Failover,
                        Some(target),
                        Some(target),
                        out,
                    )
                {
                    if let Some(f) = self.fence.as_mut() {
                        f.attempts = f.attempts.saturating_add(1);
                        f.state = FenceState::InFlight;
                    }
                }
                out.note(StatusNote::WaitingForFence {
                    target,
                    attempt: attempts.saturating_add(1),
                    required,
                });
                false
            }
        }
    }

    /// Leadership transfer to `to`, validated: only once `to` has every log entry. A
    /// lagging target cannot win the election it is asked to start (voters refuse a
    /// candidate with an older log) and writes stall until the deadline.
    fn transfer_to(&mut self, to: NodeId, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        if self.transfer.as_ref().map(|t| t.to) != Some(to) {
            self.transfer = Some(Transfer {
                to,
                deadline: now + self.cfg.transfer_timeout,
                triggered: false,
            });
        }
        let lag = inp.raft.lag(to);
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if !t.triggered && lag == Some(0) {
            t.triggered = true;
            out.actions.push(super::Action::TransferLeadership {
                to,
                deadline: t.deadline,
            });
        }
        if t.triggered {
            out.note(StatusNote::Transferring { to });
        } else {
            out.note(StatusNote::WaitingForCatchUp { to, lag });
        }
    }

    /// `node` as a candidate now; `exact` demands it has every entry (lag 0).
    fn target_check(
        &self,
        inp: &Inputs<'_>,
        now: Instant,
        node: NodeId,
        max_lag: u64,
    ) -> Result<(), Ineligible> {
        eligibility(&self.view_of(inp, now, node)?, max_lag)
    }

    /// `node` as a candidate, as this leader sees it now.
    fn view_of(
        &self,
        inp: &Inputs<'_>,
        now: Instant,
        node: NodeId,
    ) -> Result<crate::rules::CandidateView, Ineligible> {
        self.candidate_views(inp, now)
            .into_iter()
            .find(|c| c.id == node)
            .ok_or(Ineligible::NotMember(node))
    }

    /// [`Self::target_check`] for the target of a planned move (switchover, failback): its
    /// service must also be ready to take the data over ([`planned_move_eligibility`]).
    fn planned_target_check(
        &self,
        inp: &Inputs<'_>,
        now: Instant,
        node: NodeId,
        max_lag: u64,
    ) -> Result<(), Ineligible> {
        let view = self.view_of(inp, now, node)?;
        planned_move_eligibility(&view, max_lag, self.cfg.monitor_configured)
    }

    /// Failback availability for status, and automatic failback (`failback = "auto"`)
    /// once home stayed eligible for the whole `failback_delay`.
    fn step_failback_watch(&mut self, inp: &Inputs<'_>, now: Instant, out: &mut Out) {
        let st = inp.state;
        let Some(fo) = &st.failed_over else {
            self.home_stable_since = None;
            return;
        };
        if st.operation.is_some() {
            return;
        }
        let home = fo.home;
        match self.planned_target_check(inp, now, home, self.cfg.max_lag_on_failover) {
            Ok(()) => {
                out.note(StatusNote::FailbackAvailable { home });
                let FailbackMode::Auto { delay } = self.cfg.failback else {
                    return;
                };
                if !self.acting_here(st) {
                    self.home_stable_since = None;
                    return;
                }
                let since = *self.home_stable_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= delay {
                    self.home_stable_since = None;
                    let cmd = Command::BeginOperation {
                        kind: OperationKind::Failback,
                        from: self.local,
                        to: home,
                        scheduled_at_unix_ms: None,
                        auto_commit: self.cfg.failback_commit == FailbackCommit::Auto,
                        at_unix_ms: inp.now_unix_ms,
                    };
                    self.propose(cmd, now, out);
                }
            }
            Err(Ineligible::Lagging { lag, .. }) => {
                out.note(StatusNote::FailbackBehind { home, lag });
                self.home_stable_since = None;
            }
            Err(why) => {
                out.note(StatusNote::FailbackUnavailable { home, why });
                self.home_stable_since = None;
            }
        }
    }

    /// Whether the operation drives this acting primary (so automatic restarts and
    /// hand-overs keep out of its way).
    pub(super) fn operation_owns_primary(&self, op: &Operation) -> bool {
        match op.current_move() {
            Some(mv) => mv.src == self.local || mv.dst == self.local,
            None => {
                matches!(op.phase, Phase::Verifying | Phase::AwaitingCommit) && op.to == self.local
            }
        }
    }

    /// Drives the committed operation one step. Returns true when the operation owns
    /// this step (automatic failover must not interfere: during a transfer there is
    /// deliberately no primary, and the automatic rule would promote the leader).
    fn step_operation(
        &mut self,
        inp: &Inputs<'_>,
        op: &Operation,
        now: Instant,
        out: &mut Out,
    ) -> bool {
        let st = inp.state;
        let at_unix_ms = inp.now_unix_ms;
        let advance = |to_phase: Phase, reason: Option<String>| Command::AdvanceOperation {
            id: op.id,
            from_phase: op.phase,
            to_phase,
            reason,
            at_unix_ms,
        };
        match op.phase {
            Phase::Scheduled => {
                let when = op.scheduled_at_unix_ms.unwrap_or(0);
                if at_unix_ms < when {
                    out.note(StatusNote::SwitchoverScheduled {
                        to: op.to,
                        at_unix_ms: when,
                    });
                    return false;
                }
                if !self.acting_here(st) {
                    out.note(StatusNote::OperationWaiting {
                        id: op.id,
                        phase: op.phase,
                        what: "an acting primary to switch over from".to_string(),
                    });
                    return false;
                }
                let cmd = match self.planned_target_check(
                    inp,
                    now,
                    op.to,
                    self.cfg.max_lag_on_failover,
                ) {
                    Ok(()) => advance(Phase::CuttingOver(Step::Pausing), None),
                    Err(why) => self.abort_cmd(
                        op,
                        at_unix_ms,
                        format!(
                            "node {} cannot take over at the scheduled time: {why}",
                            op.to
                        ),
                    ),
                };
                self.propose(cmd, now, out);
                true
            }
            Phase::Syncing => {
                if !(self.acting_here(st) && op.from == self.local) {
                    return false;
                }
                // The cut-over starts when home is within cutover_max_lag (tighter than
                // max_lag); Pausing then waits for those last entries with writes paused, so
                // the pause stays short however far behind home started.
                let lag = self.cfg.cutover_max_lag.min(self.cfg.max_lag_on_failover);
                match self.planned_target_check(inp, now, op.to, lag) {
                    Ok(()) if self.cfg.snapshot_configured => {
                        // A protective snapshot of this primary's data comes first, so an
                        // undo can go back to it.
                        match self.snapshot_result {
                            Some((id, true)) if id == op.id => {
                                self.propose(
                                    advance(Phase::CuttingOver(Step::Pausing), None),
                                    now,
                                    out,
                                );
                            }
                            Some((id, false)) if id == op.id => {
                                let cmd = self.abort_cmd(
                                    op,
                                    at_unix_ms,
                                    format!(
                                        "the protective snapshot failed on node {} (the snapshot action; its output is in that node's log): nothing was moved; fix it and run `quorate failback` again",
                                        self.local
                                    ),
                                );
                                self.propose(cmd, now, out);
                            }
                            _ => {
                                if self.data_action_for.is_none()
                                    && self.emit_hook(
                                        HookKind::Snapshot,
                                        st.epoch,
                                        HookReason::Failback,
                                        None,
                                        None,
                                        out,
                                    )
                                {
                                    self.data_action_for = Some(op.id);
                                }
                                out.note(StatusNote::OperationWaiting {
                                    id: op.id,
                                    phase: op.phase,
                                    what: format!(
                                        "the protective snapshot of node {}'s data",
                                        self.local
                                    ),
                                });
                            }
                        }
                        true
                    }
                    Ok(()) => {
                        self.propose(advance(Phase::CuttingOver(Step::Pausing), None), now, out);
                        true
                    }
                    Err(why) => {
                        out.note(StatusNote::OperationWaiting {
                            id: op.id,
                            phase: op.phase,
                            what: why.to_string(),
                        });
                        false
                    }
                }
            }
            Phase::CuttingOver(_) | Phase::Undoing(_) => {
                if let Some(mv) = op.current_move() {
                    self.step_move(inp, op, mv, now, out);
                }
                true
            }
            Phase::Verifying => {
                self.step_verify(inp, op, now, out);
                true
            }
            Phase::AwaitingCommit => {
                if op.to != self.local || self.stale_self_primary(st) {
                    let cmd = self.abort_cmd(
                        op,
                        at_unix_ms,
                        format!(
                            "home node {} lost leadership or restarted while awaiting commit",
                            op.to
                        ),
                    );
                    self.propose(cmd, now, out);
                } else if self.acting_here(st)
                    && self.monitor.fail_streak >= self.cfg.failure_threshold
                {
                    let reason = format!(
                        "the monitor failed on home node {} while awaiting commit",
                        op.to
                    );
                    self.propose(
                        advance(Phase::Undoing(Step::Pausing), Some(reason)),
                        now,
                        out,
                    );
                } else {
                    out.note(StatusNote::AwaitingCommit { id: op.id });
                }
                true
            }
        }
    }

    /// The state names this node primary but its service is not running and nothing is
    /// about to start it (it restarted, or lost and regained leadership).
    fn stale_self_primary(&self, st: &crate::cluster::ClusterState) -> bool {
        st.primary_node() == Some(self.local)
            && self.role == LocalRole::Replica
            && self.fresh.is_none()
            && self.hook.is_none()
    }

    /// The verify action passed for operation `id`.
    fn verified(&self, id: u64) -> bool {
        self.verify_result == Some((id, true))
    }

    fn abort_cmd(&self, op: &Operation, at_unix_ms: u64, reason: String) -> Command {
        Command::EndOperation {
            id: op.id,
            outcome: Outcome::Aborted { reason },
            at_unix_ms,
        }
    }

    /// One move of the primary (see `cluster::Step` for why the order is pause → demote
    /// → transfer → promote).
    fn step_move(
        &mut self,
        inp: &Inputs<'_>,
        op: &Operation,
        mv: Move,
        now: Instant,
        out: &mut Out,
    ) {
        let st = inp.state;
        let me = self.local;
        let at_unix_ms = inp.now_unix_ms;
        let elapsed = self
            .op_seen
            .filter(|s| s.id == op.id && s.phase == op.phase)
            .map(|s| now.saturating_duration_since(s.since))
            .unwrap_or_default();
        let waiting = |what: String| StatusNote::OperationWaiting {
            id: op.id,
            phase: op.phase,
            what,
        };
        match mv.step {
            Step::Pausing => {
                if mv.src != me {
                    // The source is not the leader, so it is not acting: the plan is
                    // broken. Abort; automatic failover takes it from here.
                    let cmd = self.abort_cmd(
                        op,
                        at_unix_ms,
                        format!("node {} lost leadership while writes were paused", mv.src),
                    );
                    self.propose(cmd, now, out);
                    return;
                }
                let epoch = match self.role {
                    LocalRole::Primary { epoch } if st.is_primary(me, epoch) => epoch,
                    _ if self.stale_self_primary(st) => {
                        // The state still names this node but its service is not running
                        // (the daemon restarted and demoted at startup, or its Demote was
                        // lost): record the release and carry on with the move.
                        if let Some(p) = &st.primary {
                            let cmd = Command::Demote(Demote {
                                node: me,
                                epoch: p.epoch,
                                reason: op.demote_reason(mv.direction),
                                term: inp.raft.term,
                                at_unix_ms,
                            });
                            self.propose(cmd, now, out);
                        }
                        return;
                    }
                    _ => {
                        out.note(waiting(format!("the demote hook on node {me}")));
                        return;
                    }
                };
                // No acknowledged write lost: demote only once the destination has every
                // entry (writes are paused, so the log stops growing).
                match self.target_check(inp, now, mv.dst, 0) {
                    Ok(()) => {
                        let reason = op.demote_reason(mv.direction);
                        self.start_demote(
                            epoch,
                            hook_reason_for_demote(reason),
                            AfterDemote::Replica {
                                propose: Some(reason),
                            },
                            now,
                            out,
                        );
                        out.note(waiting(format!("the demote hook on node {me}")));
                    }
                    // Behind in quorate's log or in the service's data: wait (bounded) for
                    // the destination to catch up rather than abort the move.
                    Err(
                        why @ (Ineligible::Lagging { .. }
                        | Ineligible::LagUnknown(_)
                        | Ineligible::ServiceLagging { .. }),
                    ) if elapsed < self.cfg.transfer_timeout => {
                        out.note(waiting(format!("node {} to catch up: {why}", mv.dst)));
                    }
                    Err(why) => {
                        let cmd = self.abort_cmd(
                            op,
                            at_unix_ms,
                            format!("node {} was not ready for the cut-over: {why}", mv.dst),
                        );
                        self.propose(cmd, now, out);
                    }
                }
            }
            Step::Transferring => {
                if mv.dst == me {
                    if self.role != LocalRole::Replica || self.hook.is_some() {
                        return;
                    }
                    if let Err(why) = self.target_check(inp, now, me, self.cfg.max_lag_on_failover)
                    {
                        let cmd = self.abort_cmd(
                            op,
                            at_unix_ms,
                            format!("node {me} cannot take over: {why}"),
                        );
                        self.propose(cmd, now, out);
                        return;
                    }
                    // The source demoted through a committed Demote, so no fencing.
                    self.promote_self(inp, now, out, Some(op.promote_reason(mv.direction)));
                    return;
                }
                // Catch-up plus transfer, each bounded by transfer_timeout.
                if elapsed >= self.cfg.transfer_timeout * 2 {
                    let cmd = self.abort_cmd(
                        op,
                        at_unix_ms,
                        format!(
                            "leadership did not move to node {} within {:?}",
                            mv.dst,
                            self.cfg.transfer_timeout * 2
                        ),
                    );
                    self.propose(cmd, now, out);
                    return;
                }
                match self.target_check(inp, now, mv.dst, self.cfg.max_lag_on_failover) {
                    Err(why) => {
                        let cmd = self.abort_cmd(
                            op,
                            at_unix_ms,
                            format!("node {} cannot take over: {why}", mv.dst),
                        );
                        self.propose(cmd, now, out);
                    }
                    Ok(()) => {
                        if self.role == LocalRole::Replica {
                            self.transfer_to(mv.dst, inp, now, out);
                        }
                    }
                }
            }
            Step::Promoting => {
                if mv.dst != me {
                    let cmd = self.abort_cmd(
                        op,
                        at_unix_ms,
                        format!(
                            "node {} lost leadership before its promotion finished",
                            mv.dst
                        ),
                    );
                    self.propose(cmd, now, out);
                    return;
                }
                match self.role {
                    LocalRole::Primary { epoch } if st.is_primary(me, epoch) => {
                        let cmd = match (op.kind, mv.direction) {
                            (OperationKind::Switchover, _) => Command::EndOperation {
                                id: op.id,
                                outcome: Outcome::Completed,
                                at_unix_ms,
                            },
                            (OperationKind::Failback, Direction::Forward) => {
                                Command::AdvanceOperation {
                                    id: op.id,
                                    from_phase: op.phase,
                                    to_phase: Phase::Verifying,
                                    reason: None,
                                    at_unix_ms,
                                }
                            }
                            (OperationKind::Failback, Direction::Back) => Command::EndOperation {
                                id: op.id,
                                outcome: Outcome::Undone,
                                at_unix_ms,
                            },
                        };
                        self.propose(cmd, now, out);
                    }
                    LocalRole::Promoting { .. } => {
                        out.note(waiting(format!("the promote hook on node {me}")))
                    }
                    LocalRole::Replica if self.fresh.is_some() => {}
                    _ => {
                        let cmd = self.abort_cmd(
                            op,
                            at_unix_ms,
                            format!("the promotion of node {me} failed"),
                        );
                        self.propose(cmd, now, out);
                    }
                }
            }
        }
    }

    /// Failback verification on home: `verify_checks` monitor passes, counted from when
    /// this node saw the Verifying phase, with no failure, within `verify_timeout`.
    fn step_verify(&mut self, inp: &Inputs<'_>, op: &Operation, now: Instant, out: &mut Out) {
        let st = inp.state;
        let at_unix_ms = inp.now_unix_ms;
        if op.to != self.local {
            let cmd = self.abort_cmd(
                op,
                at_unix_ms,
                format!("home node {} lost leadership during verification", op.to),
            );
            self.propose(cmd, now, out);
            return;
        }
        if !self.acting_here(st) {
            if self.stale_self_primary(st) {
                let cmd = self.abort_cmd(
                    op,
                    at_unix_ms,
                    format!("home node {} restarted during verification", self.local),
                );
                self.propose(cmd, now, out);
            }
            // Otherwise a rule-1 demotion is under way; its Demote aborts the operation.
            return;
        }
        let Some(seen) = self
            .op_seen
            .filter(|s| s.id == op.id && s.phase == op.phase)
        else {
            return;
        };
        let passes = if self.cfg.monitor_configured {
            u32::try_from(self.monitor.passes.saturating_sub(seen.passes_at)).unwrap_or(u32::MAX)
        } else {
            // No monitor hook: acting as primary (checked above) is all there is to verify.
            self.cfg.verify_checks
        };
        let fails = self.monitor.fails.saturating_sub(seen.fails_at);
        let checks = self.cfg.verify_checks;
        let undo = |reason: String| Command::AdvanceOperation {
            id: op.id,
            from_phase: op.phase,
            to_phase: Phase::Undoing(Step::Pausing),
            reason: Some(reason),
            at_unix_ms,
        };
        let cmd = if fails > 0 {
            undo(format!(
                "the monitor failed on home node {} during verification ({passes} of {checks} checks had passed)",
                self.local
            ))
        } else if passes >= checks && self.cfg.verify_configured && !self.verified(op.id) {
            match self.verify_result {
                Some((id, false)) if id == op.id => undo(match &self.verify_detail {
                    Some((vid, detail)) if *vid == id => bounded_reason(&format!(
                        "the verify action failed on home node {}: {detail}",
                        self.local
                    )),
                    _ => format!(
                        "the verify action failed on home node {} (its output is in that node's log)",
                        self.local
                    ),
                }),
                _ => {
                    if self.data_action_for.is_none()
                        && self.emit_hook(
                            HookKind::Verify,
                            st.epoch,
                            HookReason::Failback,
                            Some(op.from),
                            None,
                            out,
                        )
                    {
                        self.data_action_for = Some(op.id);
                    }
                    if now.saturating_duration_since(seen.since) >= self.cfg.verify_timeout {
                        undo(format!(
                            "verification timed out: the verify action did not finish within {:?}",
                            self.cfg.verify_timeout
                        ))
                    } else {
                        out.note(StatusNote::Verifying {
                            id: op.id,
                            passes,
                            checks,
                        });
                        return;
                    }
                }
            }
        } else if passes >= checks {
            if op.auto_commit {
                Command::EndOperation {
                    id: op.id,
                    outcome: Outcome::Committed,
                    at_unix_ms,
                }
            } else {
                Command::AdvanceOperation {
                    id: op.id,
                    from_phase: op.phase,
                    to_phase: Phase::AwaitingCommit,
                    reason: None,
                    at_unix_ms,
                }
            }
        } else if now.saturating_duration_since(seen.since) >= self.cfg.verify_timeout {
            undo(format!(
                "verification timed out: {passes} of {checks} monitor checks passed within {:?}",
                self.cfg.verify_timeout
            ))
        } else {
            out.note(StatusNote::Verifying {
                id: op.id,
                passes,
                checks,
            });
            return;
        };
        self.propose(cmd, now, out);
    }
}
