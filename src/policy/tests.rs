//! Unit tests, one rule each. A small harness plays the executor: it commits proposals
//! into a shared `ClusterState`, completes hooks and moves time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::cluster::{
    Applied, ClusterState, Command, Demote, DemoteReason, OperationKind, Outcome, Phase, Promote,
    PromoteReason, Rejected, Step,
};
use crate::types::{NodeId, NodeRole, ResourceHealth};

const LOG: u64 = 10;

struct H {
    t0: Instant,
    now: Instant,
    now_ms: u64,
    state: ClusterState,
    members: Vec<Member>,
    raft: RaftView,
    peers: BTreeMap<NodeId, PeerObs>,
    local_health: ResourceHealth,
    /// Refresh `last_quorum_acked` to `now` on every step (a leader with quorum).
    quorum: bool,
    p: Policy,
}

fn cfg() -> PolicyConfig {
    PolicyConfig {
        lease: Duration::from_millis(100),
        transfer_timeout: Duration::from_millis(300),
        fence_retry_backoff: Duration::from_millis(200),
        hook_retry_backoff: Duration::from_millis(200),
        proposal_timeout: Duration::from_secs(1),
        restart_window: Duration::from_secs(60),
        local_restarts: 1,
        failure_threshold: 2,
        verify_checks: 2,
        monitor_configured: true,
        verify_timeout: Duration::from_secs(5),
        ..PolicyConfig::default()
    }
}

impl H {
    /// Three voters 1..=3, `local` leads with quorum, all peers alive, healthy, in sync.
    fn new(local: NodeId, cfg: PolicyConfig) -> H {
        let t0 = Instant::now();
        let members = (1..=3)
            .map(|id| Member {
                id,
                role: NodeRole::Voter,
                priority: 1,
            })
            .collect();
        let mut h = H {
            t0,
            now: t0,
            now_ms: 1_000_000,
            state: ClusterState::default(),
            members,
            raft: RaftView::default(),
            peers: BTreeMap::new(),
            local_health: ResourceHealth::Healthy,
            quorum: true,
            p: Policy::new(local, cfg),
        };
        h.set_leader(Some(local));
        for id in 1..=3 {
            if id != local {
                h.peers.insert(
                    id,
                    PeerObs {
                        alive: true,
                        health: ResourceHealth::Healthy,
                        ..PeerObs::default()
                    },
                );
            }
        }
        h
    }

    fn me(&self) -> NodeId {
        self.p.local_id()
    }

    fn set_leader(&mut self, leader: Option<NodeId>) {
        let me = self.me();
        self.raft.term += 1;
        self.raft.leader_id = leader;
        self.raft.is_leader = leader == Some(me);
        self.raft.last_log_index = LOG;
        self.raft.matched = if self.raft.is_leader {
            (1..=3).map(|id| (id, LOG)).collect()
        } else {
            BTreeMap::new()
        };
        self.raft.last_quorum_acked = self.raft.is_leader.then_some(self.now);
    }

    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            state: &self.state,
            members: &self.members,
            raft: &self.raft,
            peers: &self.peers,
            local_health: self.local_health,
            now_unix_ms: self.now_ms,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.now_ms += ms;
    }

    fn step(&mut self) -> Vec<Action> {
        if self.quorum && self.raft.is_leader {
            self.raft.last_quorum_acked = Some(self.now);
        }
        let st = self.state.clone();
        let members = self.members.clone();
        let raft = self.raft.clone();
        let peers = self.peers.clone();
        let inp = Inputs {
            state: &st,
            members: &members,
            raft: &raft,
            peers: &peers,
            local_health: self.local_health,
            now_unix_ms: self.now_ms,
        };
        self.p.step(&inp, self.now)
    }

    /// Commits every proposal in `acts` (in order), reporting results back.
    fn commit(&mut self, acts: &[Action]) -> Vec<Result<Applied, Rejected>> {
        let mut res = Vec::new();
        for a in acts {
            if let Action::Propose { id, cmd } = a {
                let r = self.state.apply(cmd);
                self.p.observe(
                    Event::ProposalCommitted {
                        id: *id,
                        result: r.clone(),
                    },
                    self.now,
                );
                res.push(r);
            }
        }
        res
    }

    fn finish_hooks(&mut self, acts: &[Action], ok: bool) {
        for a in acts {
            if let Action::RunHook(h) = a {
                self.p
                    .observe(Event::HookFinished { id: h.id, ok }, self.now);
            }
        }
    }

    /// Steps, commits and completes hooks successfully until nothing but reports
    /// happen (bounded).
    fn settle(&mut self) -> Vec<Action> {
        let mut all = Vec::new();
        for _ in 0..50 {
            let acts = self.step();
            let busy = acts.iter().any(|a| !matches!(a, Action::Report(_)));
            self.commit(&acts);
            self.finish_hooks(&acts, true);
            all.extend(acts);
            if !busy {
                break;
            }
            self.advance(1);
        }
        all
    }

    /// Started, then primary at the next epoch through the normal path.
    fn primary(local: NodeId, cfg: PolicyConfig) -> H {
        let mut h = H::new(local, cfg);
        h.settle();
        assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: 1 }, "setup");
        h
    }

    fn monitor(&mut self, ok: bool, times: u32) {
        for _ in 0..times {
            self.p.observe(Event::MonitorResult { ok }, self.now);
        }
    }
}

fn proposals(acts: &[Action]) -> Vec<&Command> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Propose { cmd, .. } => Some(cmd),
            _ => None,
        })
        .collect()
}

fn hooks(acts: &[Action]) -> Vec<&HookRun> {
    acts.iter()
        .filter_map(|a| match a {
            Action::RunHook(h) => Some(h),
            _ => None,
        })
        .collect()
}

fn hook_of(acts: &[Action], kind: HookKind) -> Option<&HookRun> {
    hooks(acts).into_iter().find(|h| h.hook == kind)
}

fn transfer(acts: &[Action]) -> Option<NodeId> {
    acts.iter().find_map(|a| match a {
        Action::TransferLeadership { to, .. } => Some(*to),
        _ => None,
    })
}

fn demote_now(acts: &[Action]) -> Option<DemoteReason> {
    acts.iter().find_map(|a| match a {
        Action::DemoteNow { reason } => Some(*reason),
        _ => None,
    })
}

fn reports(acts: &[Action]) -> Vec<&StatusNote> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Report(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn promote_of(acts: &[Action]) -> Option<&Promote> {
    proposals(acts).into_iter().find_map(|c| match c {
        Command::Promote(p) => Some(p),
        _ => None,
    })
}

fn commit_direct(h: &mut H, cmd: Command) {
    assert!(h.state.apply(&cmd).is_ok(), "{cmd:?}");
}

// ------------------------------------------------------------------ startup

#[test]
fn startup_runs_the_demote_hook_before_anything_else() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    let hk = hook_of(&acts, HookKind::Demote).map(|h| h.reason);
    assert_eq!(hk, Some(HookReason::Startup));
    assert!(
        proposals(&acts).is_empty(),
        "no proposal before the startup demote finished"
    );
    assert_eq!(
        h.p.claims_primary(),
        Some(0),
        "claims an unknown epoch until demoted"
    );
}

#[test]
fn startup_demote_failure_is_retried_after_backoff() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, false);
    assert!(
        hook_of(&h.step(), HookKind::Demote).is_none(),
        "no retry before the backoff"
    );
    h.advance(200);
    assert!(hook_of(&h.step(), HookKind::Demote).is_some());
}

#[test]
fn restarted_node_named_primary_in_loaded_state_needs_a_new_epoch_to_promote() {
    let mut h = H::new(1, cfg());
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    let all = h.settle();
    let promote_hooks: Vec<_> = hooks(&all)
        .into_iter()
        .filter(|h| h.hook == HookKind::Promote)
        .map(|h| h.epoch)
        .collect();
    assert_eq!(
        promote_hooks,
        vec![2],
        "the promote hook runs only for the newly committed epoch 2"
    );
    assert!(h.state.is_primary(1, 2));
}

#[test]
fn promote_proposed_by_a_previous_incarnation_that_commits_late_is_not_acted_on() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    let Some(old) = promote_of(&prop).cloned() else {
        panic!("no proposal")
    };
    // The daemon crashes before the entry commits and restarts as a new process.
    h.p = Policy::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    // The next leader inherited the entry and commits it now.
    commit_direct(&mut h, Command::Promote(old));
    let all = h.settle();
    let promote_hooks: Vec<_> = hooks(&all)
        .into_iter()
        .filter(|r| r.hook == HookKind::Promote)
        .map(|r| r.epoch)
        .collect();
    assert_eq!(
        promote_hooks,
        vec![2],
        "only an epoch this process proposed"
    );
    assert!(h.state.is_primary(1, 2));
}

#[test]
fn former_primary_runs_rejoin_after_startup_once_another_node_is_primary() {
    let mut h = H::new(1, cfg());
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 2,
            epoch: 2,
            reason: PromoteReason::Failover,
            previous: Some(1),
            home: None,
            term: 2,
            at_unix_ms: 2,
        }),
    );
    h.set_leader(Some(2));
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Demote).is_some());
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let rejoin = hook_of(&acts, HookKind::Rejoin).map(|r| r.target);
    assert_eq!(rejoin, Some(Some(2)));
    assert_eq!(h.p.local_role(), LocalRole::Rejoining);
    h.finish_hooks(&acts, true);
    assert!(
        hook_of(&h.step(), HookKind::Rejoin).is_none(),
        "rejoin runs once"
    );
}

#[test]
fn never_primary_node_does_not_rejoin() {
    let mut h = H::new(3, cfg());
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    h.set_leader(Some(1));
    let all = h.settle();
    assert!(hook_of(&all, HookKind::Rejoin).is_none());
}

// ------------------------------------------------------------------ promotion

#[test]
fn leader_without_primary_proposes_promote_of_itself_at_next_epoch() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let p = promote_of(&acts).cloned();
    assert_eq!(
        p.as_ref().map(|p| (p.node, p.epoch, p.reason, p.previous)),
        Some((1, 1, PromoteReason::Startup, None))
    );
    assert!(
        hook_of(&acts, HookKind::Promote).is_none(),
        "no promote hook in the same step as the proposal"
    );
}

#[test]
fn promote_hook_runs_only_after_the_promote_is_committed() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    assert!(promote_of(&prop).is_some());
    // Not committed yet: stepping again runs nothing.
    h.advance(5);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Promote).is_none());
    assert!(
        proposals(&acts).is_empty(),
        "no duplicate proposal while one is in flight"
    );
    h.commit(&prop);
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Promote).map(|h| (h.epoch, h.reason)),
        Some((1, HookReason::Startup))
    );
    assert_eq!(h.p.local_role(), LocalRole::Promoting { epoch: 1 });
    assert_eq!(
        h.p.acting_primary(&h.inputs(), h.now),
        None,
        "not acting before the hook succeeded"
    );
    h.finish_hooks(&acts, true);
    h.step();
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), Some(1));
}

#[test]
fn leader_does_not_promote_without_quorum_ack_within_lease() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    h.quorum = false;
    h.advance(100); // exactly lease: expired
    let acts = h.step();
    assert!(promote_of(&acts).is_none());
    assert!(reports(&acts).contains(&&StatusNote::WaitingForQuorum));
}

#[test]
fn promote_hook_waits_for_a_fresh_quorum_ack_after_the_commit() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    h.commit(&prop);
    h.quorum = false;
    h.advance(100);
    let acts = h.step();
    assert!(
        hook_of(&acts, HookKind::Promote).is_none(),
        "lease lapsed: no promote hook"
    );
    assert!(reports(&acts).contains(&&StatusNote::WaitingForQuorum));
    h.quorum = true;
    let acts = h.step();
    assert_eq!(hook_of(&acts, HookKind::Promote).map(|p| p.epoch), Some(1));
}

#[test]
fn committed_promotion_is_not_acted_on_after_losing_leadership() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    h.commit(&prop);
    h.set_leader(Some(2));
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Promote).is_none());
    // Regaining leadership later does not revive it: a new epoch is needed.
    h.set_leader(Some(1));
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Promote).is_none());
    assert_eq!(promote_of(&acts).map(|p| p.epoch), Some(2));
}

#[test]
fn follower_takes_no_leader_actions() {
    let mut h = H::new(2, cfg());
    h.set_leader(Some(1));
    let all = h.settle();
    assert!(proposals(&all).is_empty());
    assert!(transfer(&all).is_none());
}

// ------------------------------------------------------------------ candidate choice on the leader

#[test]
fn leader_transfers_leadership_to_a_better_candidate_instead_of_promoting() {
    let mut h = H::new(2, cfg());
    h.members[0].priority = 5; // node 1 is preferred
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(transfer(&acts), Some(1));
    assert!(promote_of(&acts).is_none());
}

#[test]
fn equal_candidates_lowest_id_is_chosen() {
    let mut h = H::new(3, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert_eq!(transfer(&h.step()), Some(1));
}

#[test]
fn transfer_waits_until_the_target_has_every_entry() {
    let mut h = H::new(2, cfg());
    h.members[0].priority = 5;
    let acts = h.step();
    h.finish_hooks(&acts, true);
    h.raft.matched.insert(1, LOG - 3);
    let acts = h.step();
    assert_eq!(transfer(&acts), None);
    assert!(reports(&acts).contains(&&StatusNote::WaitingForCatchUp {
        to: 1,
        lag: Some(3)
    }));
    h.raft.matched.insert(1, LOG);
    assert_eq!(transfer(&h.step()), Some(1));
}

#[test]
fn transfer_timeout_retargets_next_best_then_falls_back_to_self() {
    let mut h = H::new(3, cfg());
    h.members[0].priority = 9;
    h.members[1].priority = 5;
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert_eq!(transfer(&h.step()), Some(1));
    h.advance(300);
    assert_eq!(transfer(&h.step()), Some(2), "node 1 timed out: next best");
    h.advance(300);
    let acts = h.step();
    assert_eq!(
        promote_of(&acts).map(|p| p.node),
        Some(3),
        "both timed out: promote self"
    );
}

#[test]
fn transfer_is_emitted_once_per_target() {
    let mut h = H::new(3, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert_eq!(transfer(&h.step()), Some(1));
    h.advance(10);
    assert_eq!(transfer(&h.step()), None);
}

#[test]
fn witness_never_receives_leadership_or_the_primary_role() {
    let mut h = H::new(2, cfg());
    h.members[0].role = NodeRole::Witness;
    h.members[0].priority = 100;
    let all = h.settle();
    assert!(transfer(&all).is_none());
    assert!(h.state.is_primary(2, 1));
}

#[test]
fn leader_that_is_a_witness_hands_leadership_to_a_voter() {
    let mut h = H::new(3, cfg());
    h.members[2].role = NodeRole::Witness;
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(transfer(&acts), Some(1));
    assert!(promote_of(&acts).is_none());
}

#[test]
fn drained_and_unhealthy_and_lagging_and_dead_nodes_are_not_chosen() {
    let mut h = H::new(3, cfg());
    h.members[2].priority = 0; // self is the fallback
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 1,
            drained: true,
            at_unix_ms: 1,
        },
    );
    if let Some(o) = h.peers.get_mut(&2) {
        o.health = ResourceHealth::Unhealthy;
    }
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert_eq!(promote_of(&h.step()).map(|p| p.node), Some(3));

    let mut h = H::new(
        3,
        PolicyConfig {
            max_lag_on_failover: 5,
            ..cfg()
        },
    );
    h.members[2].priority = 0;
    h.raft.matched.insert(1, 0);
    if let Some(o) = h.peers.get_mut(&2) {
        o.alive = false;
    }
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(transfer(&acts), None);
    assert_eq!(promote_of(&acts).map(|p| p.node), Some(3));
}

#[test]
fn no_eligible_candidate_is_reported_with_reasons() {
    let mut h = H::new(3, cfg());
    h.local_health = ResourceHealth::Unhealthy;
    for o in h.peers.values_mut() {
        o.alive = false;
    }
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    let found = reports(&acts)
        .into_iter()
        .any(|n| matches!(n, StatusNote::NoEligibleCandidate { reasons } if reasons.len() == 3));
    assert!(found, "{acts:?}");
}

// ------------------------------------------------------------------ rule 1 / 3

#[test]
fn acting_primary_needs_state_leadership_and_lease() {
    let mut h = H::primary(1, cfg());
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), Some(1));
    let later = h.now + Duration::from_millis(100);
    assert_eq!(h.p.acting_primary(&h.inputs(), later), None, "lease lapsed");
    h.raft.is_leader = false;
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), None, "not leader");
    h.raft.is_leader = true;
    let mut other = h.state.clone();
    other.primary = None;
    let inp = Inputs {
        state: &other,
        ..h.inputs()
    };
    assert_eq!(
        h.p.acting_primary(&inp, h.now),
        None,
        "state does not name it"
    );
}

#[test]
fn primary_demotes_at_once_when_the_lease_lapses_and_proposes_demote_after_the_hook() {
    let mut h = H::primary(1, cfg());
    h.quorum = false;
    h.advance(100);
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    let pos_now = acts
        .iter()
        .position(|a| matches!(a, Action::DemoteNow { .. }));
    let pos_hook = acts
        .iter()
        .position(|a| matches!(a, Action::RunHook(r) if r.hook == HookKind::Demote));
    assert!(
        pos_now < pos_hook && pos_hook.is_some(),
        "DemoteNow first, then the hook"
    );
    assert!(
        proposals(&acts).is_empty(),
        "Demote is proposed only after the hook succeeded"
    );
    assert_eq!(
        h.p.claims_primary(),
        Some(1),
        "still claims while the hook runs"
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let demote = proposals(&acts).into_iter().find_map(|c| match c {
        Command::Demote(d) => Some((d.node, d.epoch, d.reason)),
        _ => None,
    });
    assert_eq!(demote, Some((1, 1, DemoteReason::LeaseLost)));
}

#[test]
fn primary_demotes_when_no_longer_leader_and_proposes_nothing() {
    let mut h = H::primary(1, cfg());
    h.set_leader(Some(2));
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeadershipLost));
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    assert_eq!(h.p.local_role(), LocalRole::Replica);
    assert_eq!(h.p.claims_primary(), None);
}

#[test]
fn primary_demotes_when_the_state_names_a_newer_primary() {
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 2,
            epoch: 2,
            reason: PromoteReason::Failover,
            previous: Some(1),
            home: None,
            term: 9,
            at_unix_ms: 5,
        }),
    );
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::Superseded));
}

#[test]
fn lease_lapse_demotes_even_in_maintenance() {
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    h.step();
    h.quorum = false;
    h.advance(150);
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    assert!(hook_of(&acts, HookKind::Demote).is_some());
}

#[test]
fn lease_lapse_while_promote_hook_runs_demotes_when_it_returns() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    h.commit(&prop);
    let acts = h.step();
    let promote = hook_of(&acts, HookKind::Promote).cloned();
    assert!(promote.is_some());
    h.quorum = false;
    h.advance(100);
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    assert!(hooks(&acts).is_empty(), "one hook at a time");
    if let Some(p) = promote {
        h.p.observe(Event::HookFinished { id: p.id, ok: true }, h.now);
    }
    assert_eq!(h.p.local_role(), LocalRole::Demoting { epoch: 1 });
    assert!(hook_of(&h.step(), HookKind::Demote).is_some());
}

#[test]
fn failed_demote_keeps_claiming_and_is_retried_after_backoff() {
    let mut h = H::primary(1, cfg());
    h.set_leader(Some(2));
    let acts = h.step();
    h.finish_hooks(&acts, false);
    assert_eq!(h.p.claims_primary(), Some(1));
    assert!(hooks(&h.step()).is_empty());
    h.advance(200);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Demote).is_some());
}

/// Primary 1 leads; its service must move (lease kept), but the demote hook keeps failing.
fn stuck_demote(fencing: FencingMode) -> H {
    let mut h = H::primary(1, PolicyConfig { fencing, ..cfg() });
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 1,
            drained: true,
            at_unix_ms: 1,
        },
    );
    for _ in 0..DEMOTE_ATTEMPTS_BEFORE_FENCING_HANDOVER {
        let acts = h.step();
        assert!(hook_of(&acts, HookKind::Demote).is_some());
        assert!(
            transfer(&acts).is_none(),
            "no hand-over while the demote may still succeed"
        );
        h.finish_hooks(&acts, false);
        h.advance(200);
    }
    h
}

#[test]
fn leader_whose_demote_keeps_failing_hands_leadership_over_when_fencing_is_on() {
    let mut h = stuck_demote(FencingMode::Required);
    let acts = h.step();
    assert_eq!(
        transfer(&acts),
        Some(2),
        "the next leader will fence this node"
    );
    assert_eq!(
        h.p.claims_primary(),
        Some(1),
        "and it keeps claiming, so it is fenced"
    );
}

#[test]
fn leader_whose_demote_keeps_failing_keeps_leadership_when_fencing_is_off() {
    let mut h = stuck_demote(FencingMode::Off);
    let acts = h.step();
    assert_eq!(transfer(&acts), None, "nobody could stop the old service");
    assert!(
        hook_of(&acts, HookKind::Demote).is_some(),
        "it keeps retrying"
    );
}

// ------------------------------------------------------------------ fencing

/// Node 2 leads, node 1 is the recorded primary; node 2 is the best candidate.
fn after_primary_loss(fencing: FencingMode, peer1: PeerObs) -> H {
    let mut h = H::new(2, PolicyConfig { fencing, ..cfg() });
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    h.members[0].priority = 0;
    h.peers.insert(1, peer1);
    let acts = h.step();
    h.finish_hooks(&acts, true);
    h
}

fn dead() -> PeerObs {
    PeerObs {
        alive: false,
        dead_on_all_links: true,
        ..PeerObs::default()
    }
}

#[test]
fn fencing_required_blocks_promotion_until_the_fence_succeeds() {
    let mut h = after_primary_loss(FencingMode::Required, dead());
    let acts = h.step();
    assert!(promote_of(&acts).is_none());
    let fence = hook_of(&acts, HookKind::Fence).map(|f| (f.target, f.epoch));
    assert_eq!(fence, Some((Some(1), 2)));
    h.finish_hooks(&acts, false);
    let acts = h.step();
    assert!(
        promote_of(&acts).is_none() && hooks(&acts).is_empty(),
        "no promote, no retry before backoff"
    );
    let waiting = reports(&acts).into_iter().any(|n| {
        matches!(
            n,
            StatusNote::WaitingForFence {
                target: 1,
                required: true,
                ..
            }
        )
    });
    assert!(waiting, "status says why: {acts:?}");
    h.advance(200);
    let acts = h.step();
    assert!(
        hook_of(&acts, HookKind::Fence).is_some(),
        "retried after backoff"
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(
        promote_of(&acts).map(|p| (p.node, p.epoch, p.previous)),
        Some((2, 2, Some(1)))
    );
}

#[test]
fn fence_retry_backoff_doubles() {
    let mut h = after_primary_loss(FencingMode::Required, dead());
    let acts = h.step();
    h.finish_hooks(&acts, false);
    h.advance(200);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_some());
    h.finish_hooks(&acts, false);
    h.advance(200);
    assert!(
        hook_of(&h.step(), HookKind::Fence).is_none(),
        "second retry waits 400 ms"
    );
    h.advance(200);
    assert!(hook_of(&h.step(), HookKind::Fence).is_some());
}

#[test]
fn fencing_best_effort_promotes_after_the_fence_fails() {
    let mut h = after_primary_loss(FencingMode::BestEffort, dead());
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_some());
    assert!(promote_of(&acts).is_none(), "fence first");
    h.finish_hooks(&acts, false);
    assert!(promote_of(&h.step()).is_some());
}

#[test]
fn fencing_off_promotes_without_fencing() {
    let mut h = after_primary_loss(FencingMode::Off, dead());
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_none());
    assert!(promote_of(&acts).is_some());
}

#[test]
fn no_fence_when_the_previous_primary_is_alive_and_not_claiming() {
    let alive = PeerObs {
        alive: true,
        ..PeerObs::default()
    };
    let mut h = after_primary_loss(FencingMode::Required, alive);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_none());
    assert!(promote_of(&acts).is_some());
}

#[test]
fn fence_when_the_previous_primary_is_alive_but_still_claiming() {
    let claiming = PeerObs {
        alive: true,
        claims_primary_epoch: Some(1),
        ..PeerObs::default()
    };
    let mut h = after_primary_loss(FencingMode::Required, claiming);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_some());
    assert!(promote_of(&acts).is_none());
}

#[test]
fn no_fence_after_a_committed_demote() {
    let mut h = H::new(
        2,
        PolicyConfig {
            fencing: FencingMode::Required,
            ..cfg()
        },
    );
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    commit_direct(
        &mut h,
        Command::Demote(Demote {
            node: 1,
            epoch: 1,
            reason: DemoteReason::Drained,
            term: 1,
            at_unix_ms: 2,
        }),
    );
    h.peers.insert(1, dead());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_none());
    assert_eq!(
        promote_of(&acts).map(|p| p.reason),
        Some(PromoteReason::Handover)
    );
}

// ------------------------------------------------------------------ resource failure

#[test]
fn resource_failure_restarts_locally_at_the_same_epoch_then_hands_over() {
    let mut h = H::primary(1, cfg());
    h.monitor(false, 2);
    let acts = h.step();
    let d = hook_of(&acts, HookKind::Demote).map(|d| d.reason);
    assert_eq!(d, Some(HookReason::Restart));
    let note = proposals(&acts)
        .into_iter()
        .any(|c| matches!(c, Command::NoteRestart { attempt: 1, .. }));
    assert!(note, "restart recorded in history");
    h.commit(&acts);
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Promote).map(|p| (p.epoch, p.reason)),
        Some((1, HookReason::Restart))
    );
    h.finish_hooks(&acts, true);
    h.step();
    assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: 1 });
    // Monitor failures while restarting did not count; new ones do.
    h.monitor(false, 2);
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Failover)
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let demote = proposals(&acts).into_iter().find_map(|c| match c {
        Command::Demote(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(demote, Some(DemoteReason::ResourceFailure));
    h.commit(&acts);
    let acts = h.step();
    assert_eq!(
        transfer(&acts),
        Some(2),
        "then leadership moves to the best other node"
    );
}

#[test]
fn resource_failure_with_no_other_candidate_stays_primary() {
    let mut h = H::primary(
        1,
        PolicyConfig {
            local_restarts: 0,
            ..cfg()
        },
    );
    for o in h.peers.values_mut() {
        o.alive = false;
    }
    h.monitor(false, 2);
    let acts = h.step();
    assert!(hooks(&acts).is_empty());
    assert!(
        reports(&acts).contains(&&StatusNote::NoCandidateForHandover {
            reason: DemoteReason::ResourceFailure
        })
    );
    assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: 1 });
}

#[test]
fn restart_budget_refills_after_the_restart_window() {
    let mut h = H::primary(
        1,
        PolicyConfig {
            local_restarts: 1,
            ..cfg()
        },
    );
    for o in h.peers.values_mut() {
        o.alive = false; // no hand-over possible
    }
    h.monitor(false, 2);
    let all = h.settle();
    assert_eq!(
        hooks(&all)
            .iter()
            .filter(|r| r.reason == HookReason::Restart)
            .count(),
        2,
        "one restart: demote + promote"
    );
    h.monitor(false, 2);
    assert!(hooks(&h.step()).is_empty(), "budget used up");
    h.advance(60_000);
    h.monitor(false, 1);
    assert_eq!(
        hook_of(&h.step(), HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Restart)
    );
}

#[test]
fn failing_promote_hook_counts_as_a_restart() {
    let mut h = H::new(
        1,
        PolicyConfig {
            local_restarts: 1,
            ..cfg()
        },
    );
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    h.commit(&prop);
    let acts = h.step();
    h.finish_hooks(&acts, false); // promote failed
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Restart)
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(hook_of(&acts, HookKind::Promote).map(|p| p.epoch), Some(1));
    h.finish_hooks(&acts, false); // fails again: budget exhausted → hand over
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let d = proposals(&acts).into_iter().find_map(|c| match c {
        Command::Demote(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(d, Some(DemoteReason::ResourceFailure));
}

// ------------------------------------------------------------------ maintenance and drain

#[test]
fn maintenance_freezes_failover_transfer_fence_and_restarts() {
    // Leader without primary: no promotion.
    let mut h = H::new(
        1,
        PolicyConfig {
            fencing: FencingMode::Required,
            ..cfg()
        },
    );
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "upgrade".into(),
            at_unix_ms: 1,
        },
    );
    let all = h.settle();
    assert!(proposals(&all).is_empty());
    assert!(reports(&all).contains(&&StatusNote::Maintenance {
        reason: "upgrade".into()
    }));
    // Acting primary with a failing service: no restart, no hand-over.
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    h.monitor(false, 5);
    let all = h.settle();
    assert!(hooks(&all).is_empty() && proposals(&all).is_empty() && transfer(&all).is_none());
    // Recorded primary dead, this leader would fence and promote: frozen.
    let mut h = after_primary_loss(FencingMode::Required, dead());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    let all = h.settle();
    assert!(hooks(&all).is_empty() && proposals(&all).is_empty());
}

#[test]
fn maintenance_off_resumes_failover() {
    let mut h = H::new(1, cfg());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    h.settle();
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: false,
            reason: String::new(),
            at_unix_ms: 2,
        },
    );
    h.settle();
    assert!(h.state.is_primary(1, 1));
}

#[test]
fn drained_primary_moves_away() {
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 1,
            drained: true,
            at_unix_ms: 1,
        },
    );
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Maintenance)
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(h.state.primary, None);
    assert_eq!(transfer(&h.step()), Some(2));
}

#[test]
fn drained_primary_with_no_other_candidate_stays() {
    let mut h = H::primary(1, cfg());
    for o in h.peers.values_mut() {
        o.alive = false;
    }
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 1,
            drained: true,
            at_unix_ms: 1,
        },
    );
    let acts = h.step();
    assert!(hooks(&acts).is_empty());
    assert!(
        reports(&acts).contains(&&StatusNote::NoCandidateForHandover {
            reason: DemoteReason::Drained
        })
    );
}

// ------------------------------------------------------------------ operator requests

#[test]
fn switchover_is_refused_to_witness_drained_lagging_dead_or_unknown_nodes() {
    let mut h = H::primary(1, cfg());
    h.members[1].role = NodeRole::Witness;
    h.members.push(Member {
        id: 4,
        role: NodeRole::Voter,
        priority: 1,
    });
    h.peers.insert(
        4,
        PeerObs {
            alive: true,
            ..PeerObs::default()
        },
    );
    h.raft.matched.insert(4, 0);
    h.members.push(Member {
        id: 5,
        role: NodeRole::Voter,
        priority: 1,
    });
    h.peers.insert(5, dead());
    h.raft.matched.insert(5, LOG);
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 3,
            drained: true,
            at_unix_ms: 1,
        },
    );
    let cfg_lag = PolicyConfig {
        max_lag_on_failover: 5,
        ..cfg()
    };
    let p = Policy {
        cfg: cfg_lag,
        ..h.p.clone()
    };
    let req = |to| OperatorRequest::Switchover {
        to: Some(to),
        at_unix_ms: None,
    };
    let refusal = |to| p.plan_request(&req(to), &h.inputs(), h.now).err();
    assert!(matches!(
        refusal(2),
        Some(Refusal::TargetIneligible {
            why: Ineligible::NotVoter(2, NodeRole::Witness),
            ..
        })
    ));
    assert!(matches!(
        refusal(3),
        Some(Refusal::TargetIneligible {
            why: Ineligible::Drained(3),
            ..
        })
    ));
    assert!(matches!(
        refusal(4),
        Some(Refusal::TargetIneligible {
            why: Ineligible::Lagging { .. },
            ..
        })
    ));
    assert!(matches!(
        refusal(5),
        Some(Refusal::TargetIneligible {
            why: Ineligible::NotAlive(5),
            ..
        })
    ));
    assert!(matches!(refusal(9), Some(Refusal::NotMember(9))));
    assert!(matches!(refusal(1), Some(Refusal::AlreadyPrimary(1))));
    let msg = refusal(2).map(|r| r.to_string()).unwrap_or_default();
    assert!(msg.contains("witness"), "{msg}");
}

#[test]
fn switchover_is_refused_in_maintenance_during_an_operation_and_on_followers() {
    let mut h = H::primary(1, cfg());
    let req = OperatorRequest::Switchover {
        to: Some(2),
        at_unix_ms: None,
    };
    assert!(h.p.plan_request(&req, &h.inputs(), h.now).is_ok());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    assert!(matches!(
        h.p.plan_request(&req, &h.inputs(), h.now),
        Err(Refusal::Maintenance { .. })
    ));
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: false,
            reason: String::new(),
            at_unix_ms: 1,
        },
    );
    let later = h.now_ms + 99_999;
    commit_direct(
        &mut h,
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: Some(later),
            auto_commit: true,
            at_unix_ms: 1,
        },
    );
    assert!(matches!(
        h.p.plan_request(&req, &h.inputs(), h.now),
        Err(Refusal::OperationInProgress { .. })
    ));
    h.raft.is_leader = false;
    assert!(matches!(
        h.p.plan_request(&req, &h.inputs(), h.now),
        Err(Refusal::NotLeader { .. })
    ));
}

#[test]
fn switchover_without_target_picks_the_best_other_candidate() {
    let mut h = H::primary(1, cfg());
    h.members[2].priority = 7;
    let cmd = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: None,
            at_unix_ms: None,
        },
        &h.inputs(),
        h.now,
    );
    assert!(
        matches!(cmd, Ok(Command::BeginOperation { to: 3, from: 1, .. })),
        "{cmd:?}"
    );
}

/// Runs the source side of a switchover from 1 to 2 until the transfer; returns the
/// actions of the transfer step.
#[test]
fn switchover_source_pauses_demotes_then_transfers() {
    let mut h = H::primary(1, cfg());
    let begin = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: Some(2),
            at_unix_ms: None,
        },
        &h.inputs(),
        h.now,
    );
    let Ok(begin) = begin else {
        panic!("{begin:?}")
    };
    commit_direct(&mut h, begin);
    assert!(h
        .state
        .operation
        .as_ref()
        .is_some_and(|o| o.writes_paused()));
    // Target behind: wait, writes paused.
    h.raft.matched.insert(2, LOG - 1);
    let acts = h.step();
    assert!(hooks(&acts).is_empty());
    h.raft.matched.insert(2, LOG);
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Switchover)
    );
    assert!(
        transfer(&acts).is_none(),
        "no transfer while the service may still run"
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::CuttingOver(Step::Transferring))
    );
    let acts = h.step();
    assert_eq!(transfer(&acts), Some(2));
    assert!(
        promote_of(&acts).is_none(),
        "the automatic rule must not promote the leader mid-transfer"
    );
}

#[test]
fn switchover_destination_promotes_then_completes() {
    let mut h = H::new(2, cfg());
    h.set_leader(Some(1));
    h.settle(); // startup demote
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    commit_direct(
        &mut h,
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: None,
            auto_commit: true,
            at_unix_ms: 2,
        },
    );
    commit_direct(
        &mut h,
        Command::Demote(Demote {
            node: 1,
            epoch: 1,
            reason: DemoteReason::Switchover,
            term: 1,
            at_unix_ms: 3,
        }),
    );
    h.step();
    h.set_leader(Some(2)); // the transfer landed here
    let acts = h.step();
    assert_eq!(
        promote_of(&acts).map(|p| (p.node, p.epoch, p.reason)),
        Some((2, 2, PromoteReason::Switchover))
    );
    h.commit(&acts);
    h.settle();
    assert!(h.state.is_primary(2, 2));
    assert_eq!(h.state.operation, None);
    assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: 2 });
}

#[test]
fn switchover_aborts_when_the_target_does_not_catch_up_in_time() {
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: None,
            auto_commit: true,
            at_unix_ms: 2,
        },
    );
    h.raft.matched.insert(2, LOG - 1);
    h.step();
    h.advance(300);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(h.state.operation, None);
    assert_eq!(
        h.p.local_role(),
        LocalRole::Primary { epoch: 1 },
        "the primary stays"
    );
}

#[test]
fn new_leader_aborts_a_switchover_whose_source_lost_leadership() {
    let mut h = H::new(3, cfg());
    h.set_leader(Some(1));
    h.settle();
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    commit_direct(
        &mut h,
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: None,
            auto_commit: true,
            at_unix_ms: 2,
        },
    );
    h.step();
    h.set_leader(Some(3));
    let acts = h.step();
    let end = proposals(&acts).into_iter().any(|c| {
        matches!(
            c,
            Command::EndOperation {
                outcome: Outcome::Aborted { .. },
                ..
            }
        )
    });
    assert!(end, "{acts:?}");
}

#[test]
fn scheduled_switchover_fires_at_its_time_and_can_be_cancelled() {
    let mut h = H::primary(1, cfg());
    let at = h.now_ms + 5_000;
    let begin = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: Some(2),
            at_unix_ms: Some(at),
        },
        &h.inputs(),
        h.now,
    );
    let Ok(begin) = begin else {
        panic!("{begin:?}")
    };
    commit_direct(&mut h, begin);
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    assert!(reports(&acts).contains(&&StatusNote::SwitchoverScheduled {
        to: 2,
        at_unix_ms: at
    }));
    let cancel =
        h.p.plan_request(&OperatorRequest::CancelSwitchover, &h.inputs(), h.now);
    assert!(matches!(
        cancel,
        Ok(Command::EndOperation {
            outcome: Outcome::Cancelled,
            ..
        })
    ));
    h.advance(5_000);
    let acts = h.step();
    let fired = proposals(&acts).into_iter().any(|c| {
        matches!(
            c,
            Command::AdvanceOperation {
                to_phase: Phase::CuttingOver(Step::Pausing),
                ..
            }
        )
    });
    assert!(fired, "{acts:?}");
    h.commit(&acts);
    assert!(matches!(
        h.p.plan_request(&OperatorRequest::CancelSwitchover, &h.inputs(), h.now),
        Err(Refusal::WrongPhase { .. })
    ));
}

#[test]
fn switchover_scheduled_too_far_ahead_is_refused() {
    let h = H::primary(1, cfg());
    let r = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: Some(2),
            at_unix_ms: Some(h.now_ms + MAX_SCHEDULE_AHEAD_MS + 1),
        },
        &h.inputs(),
        h.now,
    );
    assert!(matches!(r, Err(Refusal::ScheduleTooFar { .. })));
}

/// Issue 13: a time in the past (or exactly now) used to plan an immediate switchover; it
/// is refused on the server with a reason that says what to give instead. A time just
/// ahead is still a scheduled switchover.
#[test]
fn switchover_scheduled_in_the_past_is_refused_with_the_reason() {
    let h = H::primary(1, cfg());
    for at in [0, 1, h.now_ms / 2, h.now_ms - 1, h.now_ms] {
        let r = h.p.plan_request(
            &OperatorRequest::Switchover {
                to: Some(2),
                at_unix_ms: Some(at),
            },
            &h.inputs(),
            h.now,
        );
        match r {
            Err(e @ Refusal::ScheduleInPast { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("not in the future") && text.contains("give a future time"),
                    "{text}"
                );
            }
            other => panic!("at {at} (now {}): {other:?}", h.now_ms),
        }
    }
    let r = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: Some(2),
            at_unix_ms: Some(h.now_ms + 1),
        },
        &h.inputs(),
        h.now,
    );
    assert!(
        matches!(
            r,
            Ok(Command::BeginOperation {
                scheduled_at_unix_ms: Some(t),
                ..
            }) if t == h.now_ms + 1
        ),
        "{r:?}"
    );
    assert_eq!(
        request::check_schedule(10, 10),
        Err(Refusal::ScheduleInPast {
            at_unix_ms: 10,
            now_unix_ms: 10
        })
    );
    assert_eq!(request::check_schedule(11, 10), Ok(11));
    assert_eq!(
        request::check_schedule(10 + MAX_SCHEDULE_AHEAD_MS + 1, 10),
        Err(Refusal::ScheduleTooFar {
            at_unix_ms: 10 + MAX_SCHEDULE_AHEAD_MS + 1
        })
    );
}

// ------------------------------------------------------------------ failback

/// Node 1 (home) is leader and primary after the cut-over of a failback from node 2;
/// the operation is in Verifying.
fn home_verifying(auto_commit: bool) -> H {
    let h = home_verifying_with(cfg(), auto_commit);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::Verifying)
    );
    h
}

fn home_verifying_with(config: PolicyConfig, auto_commit: bool) -> H {
    let mut h = H::new(1, config);
    h.set_leader(Some(2));
    h.settle();
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 2,
            epoch: 2,
            reason: PromoteReason::Failover,
            previous: Some(1),
            home: None,
            term: 2,
            at_unix_ms: 2,
        }),
    );
    commit_direct(
        &mut h,
        Command::BeginOperation {
            kind: OperationKind::Failback,
            from: 2,
            to: 1,
            scheduled_at_unix_ms: None,
            auto_commit,
            at_unix_ms: 3,
        },
    );
    let id = h.state.operation.as_ref().map(|o| o.id).unwrap_or(0);
    commit_direct(
        &mut h,
        Command::AdvanceOperation {
            id,
            from_phase: Phase::Syncing,
            to_phase: Phase::CuttingOver(Step::Pausing),
            reason: None,
            at_unix_ms: 4,
        },
    );
    commit_direct(
        &mut h,
        Command::Demote(Demote {
            node: 2,
            epoch: 2,
            reason: DemoteReason::Failback,
            term: 2,
            at_unix_ms: 5,
        }),
    );
    h.settle(); // rejoin etc.
    h.set_leader(Some(1));
    h.settle();
    assert!(h.state.is_primary(1, 3), "setup: {:?}", h.state.primary);
    h
}

#[test]
fn failback_commits_after_verify_checks_monitor_passes() {
    let mut h = home_verifying(true);
    h.monitor(true, 1);
    assert!(proposals(&h.step()).is_empty());
    h.monitor(true, 1);
    let acts = h.step();
    assert!(proposals(&acts).into_iter().any(|c| matches!(
        c,
        Command::EndOperation {
            outcome: Outcome::Committed,
            ..
        }
    )));
    h.commit(&acts);
    assert_eq!(h.state.failed_over, None);
}

#[test]
fn failback_without_a_monitor_hook_commits_once_home_acts_as_primary() {
    let mut h = home_verifying_with(
        PolicyConfig {
            monitor_configured: false,
            ..cfg()
        },
        true,
    );
    // Nothing to count: the failback committed as soon as home acted as primary.
    h.settle();
    assert_eq!(h.state.operation, None);
    assert_eq!(h.state.failed_over, None);
    assert!(h.state.is_primary(1, 3));
}

#[test]
fn failback_without_auto_commit_waits_for_the_operator() {
    let mut h = home_verifying(false);
    h.monitor(true, 2);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::AwaitingCommit)
    );
    assert!(reports(&h.step())
        .iter()
        .any(|n| matches!(n, StatusNote::AwaitingCommit { .. })));
    let c =
        h.p.plan_request(&OperatorRequest::FailbackCommit, &h.inputs(), h.now);
    assert!(matches!(
        c,
        Ok(Command::EndOperation {
            outcome: Outcome::Committed,
            ..
        })
    ));
    let u =
        h.p.plan_request(&OperatorRequest::FailbackUndo, &h.inputs(), h.now);
    assert!(matches!(
        u,
        Ok(Command::AdvanceOperation {
            to_phase: Phase::Undoing(Step::Pausing),
            ..
        })
    ));
}

/// Issue 13: results the executor lost to a lagging monitor broadcast count as a failure,
/// so a verification that may have missed a failure undoes instead of committing.
#[test]
fn a_monitor_lag_during_verification_undoes_the_failback() {
    let mut h = home_verifying(true);
    h.monitor(true, 1);
    let lag = Err(tokio::sync::broadcast::error::RecvError::Lagged(5));
    if let Some(ok) = crate::resource::monitor::received_ok(&lag) {
        h.p.observe(Event::MonitorResult { ok }, h.now);
    }
    h.monitor(true, 1);
    let acts = h.step();
    let cmds = proposals(&acts);
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::AdvanceOperation {
                to_phase: Phase::Undoing(Step::Pausing),
                reason: Some(r),
                ..
            } if r.contains("monitor failed")
        )),
        "{cmds:?}"
    );
    assert!(
        !cmds.iter().any(|c| matches!(
            c,
            Command::EndOperation {
                outcome: Outcome::Committed,
                ..
            }
        )),
        "{cmds:?}"
    );
}

#[test]
fn failed_verification_undoes_automatically_and_says_why() {
    let mut h = home_verifying(true);
    h.monitor(true, 1);
    h.monitor(false, 1);
    let acts = h.step();
    let reason = proposals(&acts).into_iter().find_map(|c| match c {
        Command::AdvanceOperation {
            to_phase: Phase::Undoing(Step::Pausing),
            reason,
            ..
        } => reason.clone(),
        _ => None,
    });
    assert!(reason.is_some_and(|r| r.contains("monitor failed")));
    h.commit(&acts);
    // Undo: home demotes, then leadership goes back to node 2.
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Failback)
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(transfer(&h.step()), Some(2));
}

#[test]
fn verification_times_out_into_undo() {
    let mut h = home_verifying(true);
    h.monitor(true, 1);
    h.advance(5_000);
    let acts = h.step();
    let undo = proposals(&acts).into_iter().any(|c| matches!(c, Command::AdvanceOperation { to_phase: Phase::Undoing(_), reason: Some(r), .. } if r.contains("timed out")));
    assert!(undo, "{acts:?}");
}

#[test]
fn failback_request_needs_failed_over_and_an_eligible_home() {
    let mut h = H::primary(1, cfg());
    assert!(matches!(
        h.p.plan_request(
            &OperatorRequest::Failback { no_commit: false },
            &h.inputs(),
            h.now
        ),
        Err(Refusal::NotFailedOver)
    ));
    // Fail over from 2 (home) to 1: now failed over.
    let mut h2 = H::new(1, cfg());
    h2.settle_with_primary_history();
    if let Some(o) = h2.peers.get_mut(&2) {
        o.alive = false;
    }
    assert!(matches!(
        h2.p.plan_request(
            &OperatorRequest::Failback { no_commit: false },
            &h2.inputs(),
            h2.now
        ),
        Err(Refusal::HomeIneligible { home: 2, .. })
    ));
    if let Some(o) = h2.peers.get_mut(&2) {
        o.alive = true;
    }
    h2.raft.matched.insert(2, 0); // far behind is fine: Syncing waits
    let r = h2.p.plan_request(
        &OperatorRequest::Failback { no_commit: true },
        &h2.inputs(),
        h2.now,
    );
    assert!(
        matches!(
            r,
            Ok(Command::BeginOperation {
                kind: OperationKind::Failback,
                from: 1,
                to: 2,
                auto_commit: false,
                ..
            })
        ),
        "{r:?}"
    );
    h.quorum = true;
}

impl H {
    /// Node 2 was primary, then this node (1) took over by failover and is acting.
    fn settle_with_primary_history(&mut self) {
        commit_direct(
            self,
            Command::Promote(Promote {
                node: 2,
                epoch: 1,
                reason: PromoteReason::Startup,
                previous: None,
                home: None,
                term: 1,
                at_unix_ms: 1,
            }),
        );
        self.peers.insert(
            2,
            PeerObs {
                alive: true,
                ..PeerObs::default()
            },
        );
        // Node 2 drops out; node 1 leads.
        if let Some(o) = self.peers.get_mut(&2) {
            o.alive = false;
        }
        self.settle();
        if let Some(o) = self.peers.get_mut(&2) {
            o.alive = true;
        }
        assert!(
            self.state.is_primary(1, 2),
            "setup: {:?}",
            self.state.primary
        );
        assert_eq!(self.state.failed_over.as_ref().map(|f| f.home), Some(2));
    }
}

#[test]
fn failback_syncing_waits_for_home_to_catch_up_then_cuts_over() {
    let mut h = H::new(1, cfg());
    h.settle_with_primary_history();
    h.raft.matched.insert(2, 0);
    let begin = h.p.plan_request(
        &OperatorRequest::Failback { no_commit: false },
        &h.inputs(),
        h.now,
    );
    let Ok(begin) = begin else {
        panic!("{begin:?}")
    };
    commit_direct(&mut h, begin);
    h.p.cfg.max_lag_on_failover = 2;
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    h.raft.matched.insert(2, LOG - 2);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::CuttingOver(Step::Pausing))
    );
}

#[test]
fn failback_pauses_writes_only_once_home_is_within_the_cutover_lag() {
    let mut h = H::new(1, cfg());
    h.settle_with_primary_history();
    h.raft.matched.insert(2, 0);
    let begin = h.p.plan_request(
        &OperatorRequest::Failback { no_commit: false },
        &h.inputs(),
        h.now,
    );
    let Ok(begin) = begin else {
        panic!("{begin:?}")
    };
    commit_direct(&mut h, begin);
    h.p.cfg.max_lag_on_failover = 8;
    h.p.cfg.cutover_max_lag = 3;
    // Eligible for a failover (within max_lag) but not close enough to pause writes.
    h.raft.matched.insert(2, LOG - 6);
    assert!(proposals(&h.step()).is_empty());
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::Syncing)
    );
    h.raft.matched.insert(2, LOG - 4);
    assert!(proposals(&h.step()).is_empty());
    h.raft.matched.insert(2, LOG - 3);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::CuttingOver(Step::Pausing))
    );
}

#[test]
fn auto_failback_waits_for_a_stable_home_for_the_whole_delay() {
    let mut h = H::new(
        1,
        PolicyConfig {
            failback: FailbackMode::Auto {
                delay: Duration::from_secs(10),
            },
            ..cfg()
        },
    );
    h.settle_with_primary_history();
    assert!(proposals(&h.step()).is_empty());
    h.advance(6_000);
    h.step();
    // Home flaps: the timer restarts.
    if let Some(o) = h.peers.get_mut(&2) {
        o.health = ResourceHealth::Unhealthy;
    }
    h.step();
    if let Some(o) = h.peers.get_mut(&2) {
        o.health = ResourceHealth::Healthy;
    }
    h.step();
    h.advance(6_000);
    assert!(
        proposals(&h.step()).is_empty(),
        "only 6 s stable since the flap"
    );
    h.advance(4_000);
    let acts = h.step();
    assert!(proposals(&acts).into_iter().any(|c| matches!(
        c,
        Command::BeginOperation {
            kind: OperationKind::Failback,
            to: 2,
            ..
        }
    )));
}

#[test]
fn manual_failback_mode_never_starts_one_but_reports_availability() {
    let mut h = H::new(1, cfg());
    h.settle_with_primary_history();
    h.advance(3_600_000);
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    assert!(h
        .p
        .status_notes()
        .contains(&StatusNote::FailbackAvailable { home: 2 }));
}

// ------------------------------------------------------------------ shutdown

#[test]
fn shutdown_of_primary_hands_over_then_is_ready_to_exit() {
    let mut h = H::primary(1, cfg());
    h.p.observe(Event::ShutdownRequested, h.now);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Demote).is_some());
    assert!(!acts.contains(&Action::ReadyToExit));
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let d = proposals(&acts).into_iter().find_map(|c| match c {
        Command::Demote(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(d, Some(DemoteReason::Shutdown));
    h.commit(&acts);
    let acts = h.step();
    assert_eq!(transfer(&acts), Some(2));
    assert!(!acts.contains(&Action::ReadyToExit));
    h.set_leader(Some(2));
    assert!(h.step().contains(&Action::ReadyToExit));
}

#[test]
fn shutdown_gives_up_handing_over_at_the_deadline() {
    let mut h = H::primary(
        1,
        PolicyConfig {
            shutdown_timeout: Duration::from_secs(1),
            ..cfg()
        },
    );
    h.p.observe(Event::ShutdownRequested, h.now);
    let all = h.settle();
    assert!(!all.contains(&Action::ReadyToExit));
    h.advance(1_000);
    assert!(h.step().contains(&Action::ReadyToExit));
}

// ------------------------------------------------------------------ bookkeeping

#[test]
fn stale_hook_results_are_ignored() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.p.observe(Event::HookFinished { id: 999, ok: true }, h.now);
    assert_eq!(h.p.local_role(), LocalRole::Demoting { epoch: 0 });
    h.finish_hooks(&acts, true);
    assert_eq!(h.p.local_role(), LocalRole::Replica);
}

#[test]
fn refused_proposal_is_reported_and_decided_again() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    // Someone else's promotion commits first: ours is refused as stale.
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 2,
            epoch: 1,
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: 1,
            at_unix_ms: 1,
        }),
    );
    let res = h.commit(&prop);
    assert!(matches!(
        res.first(),
        Some(Err(Rejected::EpochMismatch { .. }))
    ));
    let acts = h.step();
    assert!(reports(&acts)
        .iter()
        .any(|n| matches!(n, StatusNote::ProposalRefused { .. })));
}

#[test]
fn proposal_without_answer_is_forgotten_after_proposal_timeout() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert!(promote_of(&h.step()).is_some());
    h.advance(500);
    assert!(proposals(&h.step()).is_empty());
    h.advance(500);
    assert!(
        promote_of(&h.step()).is_some(),
        "retried after proposal_timeout"
    );
}

#[test]
fn a_report_is_emitted_when_a_note_starts_not_on_every_step() {
    let mut h = H::new(1, cfg());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    let first = h.step();
    h.finish_hooks(&first, true);
    let second = h.step();
    let count = |a: &[Action]| {
        reports(a)
            .iter()
            .filter(|n| matches!(n, StatusNote::Maintenance { .. }))
            .count()
    };
    assert_eq!(count(&first), 1);
    assert_eq!(count(&second), 0);
    assert_eq!(h.p.status_notes().len(), 1);
}

#[test]
fn same_inputs_give_same_actions() {
    let run = || {
        let mut h = H::new(2, cfg());
        h.members[0].priority = 3;
        let mut all = Vec::new();
        for _ in 0..5 {
            let acts = h.step();
            h.commit(&acts);
            h.finish_hooks(&acts, true);
            h.advance(7);
            all.push(format!(
                "{:?}",
                acts.iter()
                    .map(|a| match a {
                        Action::TransferLeadership { to, deadline } =>
                            format!("T{to}@{:?}", deadline.duration_since(h.t0)),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
            ));
        }
        all
    };
    assert_eq!(run(), run());
}

#[test]
fn config_validation_rejects_zero_lease_and_zero_threshold() {
    assert!(PolicyConfig::default().validate().is_ok());
    let e = PolicyConfig {
        lease: Duration::ZERO,
        ..PolicyConfig::default()
    }
    .validate();
    assert!(e.is_err_and(|e| e.key == "lease"));
    let e = PolicyConfig {
        failure_threshold: 0,
        ..PolicyConfig::default()
    }
    .validate();
    assert!(e.is_err_and(|e| e.key == "failure_threshold"));
    let e = PolicyConfig {
        local_restarts: MAX_LOCAL_RESTARTS + 1,
        ..PolicyConfig::default()
    }
    .validate();
    assert!(e.is_err_and(|e| e.key == "local_restarts"));
}

// ------------------------------------------------------------------ lapse grace (issue 13)

fn grace_cfg() -> PolicyConfig {
    PolicyConfig {
        lapse_grace: Duration::from_millis(30),
        ..cfg()
    }
}

fn demote_hooks(acts: &[Action]) -> usize {
    acts.iter()
        .filter(|a| matches!(a, Action::RunHook(r) if r.hook == HookKind::Demote))
        .count()
}

#[test]
fn a_lapse_that_heals_in_the_same_term_is_a_pause_not_a_demote() {
    let mut h = H::primary(1, grace_cfg());
    let e = h.state.epoch;
    let term = h.raft.term;
    h.quorum = false;
    h.advance(101);
    let acts = h.step();
    // Stops acting at once (rule 1), but leaves the service alone.
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    assert_eq!(demote_hooks(&acts), 0, "{acts:?}");
    assert_eq!(h.p.local_role(), LocalRole::Suspended { epoch: e });
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), None);
    assert_eq!(h.p.claims_primary(), Some(e), "its service still runs");
    h.advance(10);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 0, "within the grace: {acts:?}");
    // The followers' answers come back (same term): acting again, same epoch.
    h.quorum = true;
    h.advance(5);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 0, "{acts:?}");
    assert!(
        proposals(&acts).is_empty(),
        "no Demote, no new Promote: {acts:?}"
    );
    assert_eq!(h.raft.term, term);
    assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: e });
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), Some(e));
    assert_eq!(h.p.lapse_counts(), (1, 1));
}

#[test]
fn a_lapse_that_outlasts_the_grace_demotes_before_anyone_can_be_elected() {
    let mut h = H::primary(1, grace_cfg());
    let e = h.state.epoch;
    let acked = h.now;
    h.quorum = false;
    h.advance(101);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 0);
    // The grace counts from the lapse (acked + lease), not from when it was noticed.
    h.advance(28);
    assert_eq!(demote_hooks(&h.step()), 0);
    h.advance(2);
    assert_eq!(h.now - acked, Duration::from_millis(131));
    let acts = h.step();
    assert_eq!(
        demote_hooks(&acts),
        1,
        "grace over: demote hook now: {acts:?}"
    );
    assert_eq!(h.p.local_role(), LocalRole::Demoting { epoch: e });
    assert_eq!(h.p.lapse_counts(), (1, 0));
}

#[test]
fn a_lapse_noticed_after_the_grace_demotes_at_once() {
    // A node frozen (SIGSTOP) past lease + grace must not suspend: demote in that step.
    let mut h = H::primary(1, grace_cfg());
    h.quorum = false;
    h.advance(400);
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    assert_eq!(demote_hooks(&acts), 1, "{acts:?}");
}

#[test]
fn a_suspended_primary_demotes_when_the_term_changes_or_leadership_is_lost() {
    for lose_leadership in [false, true] {
        let mut h = H::primary(1, grace_cfg());
        h.quorum = false;
        h.advance(101);
        h.step();
        assert!(matches!(h.p.local_role(), LocalRole::Suspended { .. }));
        if lose_leadership {
            h.set_leader(Some(2));
        } else {
            // Re-elected in a later term: other leaders may have existed in between.
            h.set_leader(Some(1));
            h.quorum = true;
        }
        h.advance(5);
        let acts = h.step();
        assert_eq!(
            demote_hooks(&acts),
            1,
            "lose_leadership={lose_leadership}: {acts:?}"
        );
    }
}

#[test]
fn a_suspended_primary_that_is_stopping_demotes() {
    let mut h = H::primary(1, grace_cfg());
    h.quorum = false;
    h.advance(101);
    h.step();
    h.p.observe(Event::ShutdownRequested, h.now);
    h.quorum = true;
    h.advance(5);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 1, "{acts:?}");
}

#[test]
fn without_a_grace_a_lapse_demotes_at_once() {
    let mut h = H::primary(1, cfg());
    h.quorum = false;
    h.advance(101);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 1, "{acts:?}");
}
