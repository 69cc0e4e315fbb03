//! A tiny deterministic cluster simulator for property tests of the policy.
//!
//! Three nodes, each with its own `Policy`, its own applied copy of the state and its own
//! (possibly stale) idea of Raft leadership. The simulated Raft respects the timing
//! assumptions of safety rule 3 (a new leader is elected only when the old one has not
//! reached a quorum for `ELECTION_MS > lease`, and only a node with every committed entry
//! can win), and nothing else: a deposed leader that is cut off keeps believing it leads,
//! entries it proposed may still be committed by its successor, hooks take time and fail,
//! fencing powers a node off (STONITH).
//!
//! Properties checked at every simulated instant:
//! - never two nodes acting as primary (`acting_primary`),
//! - with `fencing = required`, never two services running as primary,
//! - promotions commit with strictly increasing epochs, never for a witness,
//! - a promote hook starts only for a promotion that is committed,
//! - a primary whose lease lapsed demotes in that very step,
//! - in maintenance no automatic action is taken,
//! - and finally, once every fault is healed, exactly one node acts as primary.

use crate::types::{LogIndex, NodeId, NodeRole, ResourceHealth};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::cluster::{ClusterState, Command, HistoryEvent};

const LEASE_MS: u64 = 100;
/// A voter grants a vote only after not hearing the leader for this long (> lease).
const ELECTION_MS: u64 = 200;

fn sim_cfg(fencing: FencingMode) -> PolicyConfig {
    PolicyConfig {
        lease: Duration::from_millis(LEASE_MS),
        max_lag_on_failover: 1_000,
        max_service_lag_bytes: 1024 * 1024,
        cutover_max_lag: crate::policy::config::CUTOVER_MAX_LAG,
        fencing,
        local_restarts: 1,
        restart_window: Duration::from_secs(2),
        failure_threshold: 2,
        transfer_timeout: Duration::from_millis(150),
        fence_retry_backoff: Duration::from_millis(50),
        hook_retry_backoff: Duration::from_millis(50),
        proposal_timeout: Duration::from_millis(300),
        preferred_primary: None,
        verify_checks: 2,
        monitor_configured: true,
        snapshot_configured: true,
        verify_configured: true,
        verify_timeout: Duration::from_secs(1),
        failback: FailbackMode::Manual,
        failback_commit: FailbackCommit::Auto,
        // ELECTION_MS 200 − lease 100 − a 20 ms drift margin: nobody can be elected before
        // the grace ran out.
        lapse_grace: Duration::from_millis(80),
        shutdown_timeout: Duration::from_millis(500),
        // The simulation models no service positions (tests/postgres.rs covers the rule
        // with real data).
        zero_loss_failover: false,
        final_report_wait: Duration::from_millis(300),
    }
}

/// xorshift64*: deterministic randomness for durations and outcomes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct PendingHook {
    run: HookRun,
    done_ms: u64,
    ok: bool,
    /// A promote hook killed by `Action::DemoteNow` (the executor kills its process group
    /// and reports it finished, not ok).
    cancelled: bool,
}

struct Node {
    id: NodeId,
    role: NodeRole,
    up: bool,
    isolated: bool,
    /// SIGSTOP: the process does not run at all (no steps, no heartbeats, hooks stall).
    frozen: bool,
    incarnation: u32,
    policy: Policy,
    view: ClusterState,
    /// Committed log entries this node holds.
    matched: u64,
    term: u64,
    thinks_leader: bool,
    last_ack_ms: Option<u64>,
    healthy: bool,
    service_up: bool,
    hook: Option<PendingHook>,
    events: Vec<Event>,
    exit_ready: bool,
    /// Highest committed epoch when this process started: it may only ever promote for
    /// a later one (a restarted node never acts on a promotion of a former life).
    epoch_at_start: Epoch,
}

struct InFlight {
    node: NodeId,
    incarnation: u32,
    id: Option<ActionId>,
    cmd: Command,
    /// Proposed while the leader reached a quorum (may survive a leader change).
    replicated: bool,
}

#[derive(Clone, Debug)]
enum Req {
    Maintenance(bool),
    Drain(usize, bool),
    Switchover(Option<usize>, bool),
    Cancel,
    Failback(bool),
    Commit,
    Undo,
}

#[derive(Clone, Debug)]
enum Ev {
    Wait,
    Crash(usize),
    Restart(usize),
    Isolate(usize),
    Heal(usize),
    Health(usize, bool),
    Elect(usize),
    Request(Req),
    Shutdown(usize),
    /// Faults aimed at whoever leads now (failovers and election races are what matter).
    IsolateLeader,
    CrashLeader,
    FreezeLeader,
    Thaw(usize),
    /// Elect the first node that can win.
    ElectAny,
}

struct Sim {
    t0: Instant,
    now_ms: u64,
    rng: Rng,
    nodes: Vec<Node>,
    members: Vec<Member>,
    cfg: PolicyConfig,
    log_len: u64,
    state: ClusterState,
    term: u64,
    leader: Option<NodeId>,
    leader_heard_ms: u64,
    inflight: Vec<InFlight>,
    last_promoted_epoch: u64,
    max_promote_hook: Option<(Epoch, NodeId)>,
    /// Promote hooks killed by DemoteNow (the runs must exercise that path).
    cancelled_promotes: u64,
    /// When set, every promote hook takes this long (a slow `pg_ctl promote`, a cloud IP
    /// move) unless DemoteNow kills it.
    promote_hook_ms: Option<u64>,
    /// Failures are collected as text so proptest can shrink and print them.
    violations: Vec<String>,
    /// While settling, hooks always succeed and nothing new fails.
    settling: bool,
    /// How often a failback's snapshot or verify action succeeds, in percent (100 unless a
    /// test exercises their failures).
    data_action_ok_percent: u64,
    /// Set by an election: in its first round a new leader reaches its quorum but has not
    /// committed anything of its own term, so entries inherited from the old leader are
    /// not committed (nor applied) yet. It may propose from that older applied state:
    /// exactly the race apply's epoch check exists for.
    new_leader_round: bool,
}

fn idx(id: NodeId) -> usize {
    (id as usize).saturating_sub(1)
}

impl Sim {
    fn new(seed: u64, witness: bool, prios: [u32; 3], fencing: FencingMode) -> Sim {
        let cfg = sim_cfg(fencing);
        let members: Vec<Member> = (1..=3u64)
            .map(|id| Member {
                id,
                role: if witness && id == 3 {
                    NodeRole::Witness
                } else {
                    NodeRole::Voter
                },
                priority: prios[idx(id)],
            })
            .collect();
        let nodes = members
            .iter()
            .map(|m| Node {
                id: m.id,
                role: m.role,
                up: true,
                isolated: false,
                frozen: false,
                incarnation: 0,
                policy: Policy::new(m.id, cfg.clone()),
                view: ClusterState::default(),
                matched: 0,
                term: 0,
                thinks_leader: false,
                last_ack_ms: None,
                healthy: true,
                service_up: false,
                hook: None,
                events: Vec::new(),
                exit_ready: false,
                epoch_at_start: Epoch(0),
            })
            .collect();
        Sim {
            t0: Instant::now(),
            now_ms: 1_000,
            rng: Rng(seed | 1),
            nodes,
            members,
            cfg,
            log_len: 0,
            state: ClusterState::default(),
            term: 0,
            leader: None,
            leader_heard_ms: 0,
            data_action_ok_percent: 100,
            inflight: Vec::new(),
            last_promoted_epoch: 0,
            max_promote_hook: None,
            cancelled_promotes: 0,
            promote_hook_ms: None,
            violations: Vec::new(),
            settling: false,
            new_leader_round: false,
        }
    }

    fn instant(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn connected(&self, i: usize) -> bool {
        self.nodes[i].up && !self.nodes[i].isolated && !self.nodes[i].frozen
    }

    fn running(&self, i: usize) -> bool {
        self.nodes[i].up && !self.nodes[i].frozen
    }

    /// SIGCONT: the process runs one step on what it knew before it was stopped (it has
    /// not heard of any new term yet) and must demote right there if its lease lapsed.
    fn thaw(&mut self, i: usize) {
        if !self.nodes[i].frozen {
            return;
        }
        self.nodes[i].frozen = false;
        if self.nodes[i].up {
            self.step_node(i);
            self.check_instant();
        }
    }

    fn quorum(&self) -> bool {
        let votes = (0..3)
            .filter(|i| self.connected(*i) && self.nodes[*i].role.votes())
            .count();
        votes >= 2
    }

    fn leader_functional(&self) -> bool {
        self.leader.is_some_and(|l| self.connected(idx(l))) && self.quorum()
    }

    fn fail(&mut self, what: String) {
        if self.violations.len() < 8 {
            self.violations
                .push(format!("t={} ms: {what}", self.now_ms));
        }
    }

    fn raft_view(&self, i: usize) -> RaftView {
        let n = &self.nodes[i];
        let real_leader = self.leader == Some(n.id) && self.connected(i);
        let is_leader = n.thinks_leader;
        RaftView {
            is_leader,
            term: Term(n.term),
            leader_id: if is_leader {
                Some(n.id)
            } else if self.connected(i) {
                self.leader.filter(|l| self.connected(idx(*l)))
            } else {
                None
            },
            last_log_index: LogIndex(n.matched),
            matched: if real_leader {
                self.nodes
                    .iter()
                    .map(|m| (m.id, LogIndex(m.matched.min(n.matched))))
                    .collect()
            } else if is_leader {
                // A stale leader's last knowledge; good enough, it cannot commit.
                self.nodes.iter().map(|m| (m.id, LogIndex(0))).collect()
            } else {
                BTreeMap::new()
            },
            last_quorum_acked: if is_leader {
                n.last_ack_ms.map(|ms| self.instant(ms))
            } else {
                None
            },
        }
    }

    fn peers(&self, i: usize) -> BTreeMap<NodeId, PeerObs> {
        let mut m = BTreeMap::new();
        for j in 0..3 {
            if j == i {
                continue;
            }
            let alive = self.connected(i) && self.connected(j);
            let o = &self.nodes[j];
            m.insert(
                o.id,
                PeerObs {
                    alive,
                    dead_on_all_links: !alive,
                    health: if !alive {
                        ResourceHealth::Unknown
                    } else if o.healthy {
                        ResourceHealth::Healthy
                    } else {
                        ResourceHealth::Unhealthy
                    },
                    applied_index: LogIndex(o.matched),
                    service: Default::default(),
                    claims_primary_epoch: if alive {
                        o.policy.claims_primary()
                    } else {
                        None
                    },
                    report_after_loss: None,
                },
            );
        }
        m
    }

    fn health(&self, i: usize) -> ResourceHealth {
        if self.nodes[i].healthy {
            ResourceHealth::Healthy
        } else {
            ResourceHealth::Unhealthy
        }
    }

    fn acting(&self, i: usize) -> Option<Epoch> {
        if !self.nodes[i].up {
            return None;
        }
        let raft = self.raft_view(i);
        let peers = self.peers(i);
        let inp = Inputs {
            state: &self.nodes[i].view,
            members: &self.members,
            raft: &raft,
            peers: &peers,
            local_health: self.health(i),
            local_service: crate::types::ServiceReport::default(),
            local_report_after_loss: None,
            now_unix_ms: self.now_ms,
        };
        self.nodes[i]
            .policy
            .acting_primary(&inp, self.instant(self.now_ms))
    }

    // ------------------------------------------------------------ faults

    fn crash(&mut self, i: usize) {
        if self.leader == Some(self.nodes[i].id) {
            // A restarted node comes back as a follower; the others elect anew.
            self.leader = None;
        }
        let n = &mut self.nodes[i];
        n.up = false;
        n.service_up = false;
        n.thinks_leader = false;
        n.hook = None;
        n.events.clear();
    }

    fn restart(&mut self, i: usize) {
        if self.nodes[i].up {
            return;
        }
        let cfg = self.cfg.clone();
        let n = &mut self.nodes[i];
        n.up = true;
        n.incarnation += 1;
        n.policy = Policy::new(n.id, cfg);
        n.thinks_leader = false;
        n.last_ack_ms = None;
        n.exit_ready = false;
        n.epoch_at_start = self.state.epoch;
    }

    fn elect(&mut self, i: usize) {
        let allowed = !self.leader_functional()
            && self.now_ms.saturating_sub(self.leader_heard_ms) >= ELECTION_MS
            && self.connected(i)
            && self.nodes[i].role == NodeRole::Voter
            && self.nodes[i].matched == self.log_len
            && self.quorum();
        if !allowed {
            return;
        }
        self.term += 1;
        // Entries of the old leader: those a quorum had may survive, the rest are lost.
        let inflight = std::mem::take(&mut self.inflight);
        for f in inflight {
            if f.replicated && self.rng.chance(50) {
                self.inflight.push(f);
            } else if let Some(id) = f.id {
                self.notify(
                    idx(f.node),
                    f.incarnation,
                    Event::ProposalFailed {
                        id,
                        error: "lost in election".into(),
                    },
                );
            }
        }
        self.leader = Some(self.nodes[i].id);
        for j in 0..3 {
            if self.connected(j) {
                self.nodes[j].term = self.term;
                self.nodes[j].thinks_leader = j == i;
            }
        }
        self.nodes[i].last_ack_ms = None;
        self.new_leader_round = true;
    }

    fn notify(&mut self, i: usize, incarnation: u32, ev: Event) {
        let n = &mut self.nodes[i];
        if n.up && n.incarnation == incarnation {
            n.events.push(ev);
        }
    }

    // ------------------------------------------------------------ time

    fn tick(&mut self, dt_ms: u64) {
        self.now_ms += dt_ms;
        self.finish_hooks();
        self.raft_round();
        for i in 0..3 {
            if self.running(i) {
                let ok = self.nodes[i].healthy;
                let now = self.instant(self.now_ms);
                self.nodes[i]
                    .policy
                    .observe(Event::MonitorResult { ok }, now);
                let evs = std::mem::take(&mut self.nodes[i].events);
                for ev in evs {
                    self.nodes[i].policy.observe(ev, now);
                }
            }
        }
        for i in 0..3 {
            if self.running(i) {
                self.step_node(i);
            }
        }
        self.check_instant();
    }

    fn finish_hooks(&mut self) {
        for i in 0..3 {
            let due = self.nodes[i]
                .hook
                .as_ref()
                .is_some_and(|h| h.done_ms <= self.now_ms);
            if !due {
                continue;
            }
            let Some(h) = self.nodes[i].hook.take() else {
                continue;
            };
            match h.run.hook {
                HookKind::Demote if h.ok => self.nodes[i].service_up = false,
                HookKind::Fence if h.ok => {
                    if let Some(t) = h.run.target {
                        self.crash(idx(t)); // STONITH
                    }
                }
                _ => {}
            }
            let now = self.instant(self.now_ms);
            self.nodes[i].policy.observe(
                Event::HookFinished {
                    id: h.run.id,
                    ok: h.ok,
                },
                now,
            );
            if h.cancelled {
                self.cancelled_promotes += 1;
                if let LocalRole::Primary { epoch } = self.nodes[i].policy.local_role() {
                    self.fail(format!(
                        "node {} took a killed promote hook for a promotion (primary at {epoch})",
                        self.nodes[i].id
                    ));
                }
            }
        }
    }

    fn raft_round(&mut self) {
        // A stale leader that can talk to the cluster again learns the new term.
        for i in 0..3 {
            if self.connected(i)
                && self.nodes[i].thinks_leader
                && self.leader != Some(self.nodes[i].id)
            {
                self.nodes[i].thinks_leader = false;
                self.nodes[i].term = self.term;
            }
        }
        if !self.leader_functional() {
            return;
        }
        if !std::mem::take(&mut self.new_leader_round) {
            let inflight = std::mem::take(&mut self.inflight);
            for f in inflight {
                self.commit(f);
            }
        }
        self.leader_heard_ms = self.now_ms;
        if let Some(l) = self.leader {
            self.nodes[idx(l)].last_ack_ms = Some(self.now_ms);
        }
        for j in 0..3 {
            if self.connected(j) {
                self.nodes[j].view = self.state.clone();
                self.nodes[j].matched = self.log_len;
                self.nodes[j].term = self.term;
            }
        }
    }

    fn commit(&mut self, f: InFlight) {
        let result = self.state.apply(&f.cmd);
        self.log_len += 1;
        if let (Ok(_), Command::Promote(p)) = (&result, &f.cmd) {
            if p.epoch <= self.last_promoted_epoch {
                self.fail(format!(
                    "epoch did not increase: {} after {}",
                    p.epoch, self.last_promoted_epoch
                ));
            }
            self.last_promoted_epoch = p.epoch.get();
            if self.nodes[idx(p.node)].role != NodeRole::Voter {
                self.fail(format!(
                    "{:?} node {} promoted",
                    self.nodes[idx(p.node)].role,
                    p.node
                ));
            }
        }
        if let Err(e) = self.state.check_invariants() {
            self.fail(e.to_string());
        }
        if let Some(id) = f.id {
            self.notify(
                idx(f.node),
                f.incarnation,
                Event::ProposalCommitted { id, result },
            );
        }
    }

    fn step_node(&mut self, i: usize) {
        let now = self.instant(self.now_ms);
        let raft = self.raft_view(i);
        let peers = self.peers(i);
        let view = self.nodes[i].view.clone();
        let inp = Inputs {
            state: &view,
            members: &self.members,
            raft: &raft,
            peers: &peers,
            local_health: self.health(i),
            local_service: crate::types::ServiceReport::default(),
            local_report_after_loss: None,
            now_unix_ms: self.now_ms,
        };
        let role_before = self.nodes[i].policy.local_role();
        let lease_ok = raft.leader_with_quorum_acked(now, self.cfg.lease);
        let acts = self.nodes[i].policy.step(&inp, now);
        let id = self.nodes[i].id;

        // A primary whose rule-1 conditions fail demotes in this very step.
        if let LocalRole::Primary { epoch } = role_before {
            let ok = lease_ok && view.is_primary(id, epoch);
            if !ok && !acts.iter().any(|a| matches!(a, Action::DemoteNow { .. })) {
                self.fail(format!("node {id} primary at {epoch} lost lease/leadership but did not demote: {acts:?}"));
            }
        }
        if view.in_maintenance() {
            self.check_maintenance(id, role_before, &acts);
        }

        for a in acts {
            match a {
                Action::Propose { id: aid, cmd } => {
                    if let Command::Promote(p) = &cmd {
                        if self.nodes[idx(p.node)].role != NodeRole::Voter {
                            self.fail(format!("promotion of non-voter {} proposed", p.node));
                        }
                    }
                    self.propose(i, Some(aid), cmd);
                }
                Action::RunHook(run) => self.start_hook(i, run),
                Action::TransferLeadership { to, .. } => self.transfer(i, to),
                Action::ReadyToExit => self.nodes[i].exit_ready = true,
                Action::DemoteNow { .. } => self.demote_now(i),
                Action::Report(_)
                | Action::Notify(_)
                | Action::RefreshServiceReport { .. }
                | Action::ServiceReportNotFinal => {}
            }
        }
        if self.nodes[i].exit_ready {
            self.crash(i); // systemctl stop completed
        }
    }

    fn check_maintenance(&mut self, id: NodeId, role_before: LocalRole, acts: &[Action]) {
        let demote_now = acts.iter().any(|a| matches!(a, Action::DemoteNow { .. }));
        for a in acts {
            let bad = match a {
                Action::Propose { cmd, .. } => !matches!(cmd, Command::Demote(_)),
                Action::TransferLeadership { .. } => true,
                Action::RunHook(h) => match h.hook {
                    // The policy never asks for the monitor hook: doing so is a bug too.
                    HookKind::Fence
                    | HookKind::Rejoin
                    | HookKind::Follow
                    | HookKind::Monitor
                    | HookKind::Notify
                    | HookKind::Start
                    | HookKind::Stop
                    | HookKind::Snapshot
                    | HookKind::Verify => true,
                    // Allowed: startup demote, rule-3 demote, shutdown; not a restart or
                    // a hand-over of a healthy acting primary.
                    HookKind::Demote => {
                        matches!(role_before, LocalRole::Primary { .. })
                            && !demote_now
                            && h.reason != HookReason::Maintenance
                    }
                    // Allowed: finishing a promotion committed before, or the second half
                    // of a local restart whose demote ran before maintenance began (a new
                    // restart would start with a Demote from Primary: caught above).
                    HookKind::Promote => false,
                },
                _ => false,
            };
            if bad {
                self.fail(format!(
                    "node {id} took an automatic action in maintenance: {a:?}"
                ));
            }
        }
    }

    fn propose(&mut self, i: usize, id: Option<ActionId>, cmd: Command) {
        let node = self.nodes[i].id;
        let real = self.leader == Some(node) && self.nodes[i].thinks_leader && self.nodes[i].up;
        if real {
            let replicated = self.leader_functional();
            self.inflight.push(InFlight {
                node,
                incarnation: self.nodes[i].incarnation,
                id,
                cmd,
                replicated,
            });
        } else if let Some(id) = id {
            let inc = self.nodes[i].incarnation;
            self.notify(
                i,
                inc,
                Event::ProposalFailed {
                    id,
                    error: "not leader".into(),
                },
            );
        }
    }

    fn start_hook(&mut self, i: usize, run: HookRun) {
        let id = self.nodes[i].id;
        if self.nodes[i].hook.is_some() {
            self.fail(format!(
                "node {id} got a second hook while one runs: {run:?}"
            ));
            return;
        }
        if run.hook == HookKind::Promote {
            // Rule 2: only for a committed promotion of this node at this epoch.
            let committed = self.state.history.iter().any(|e| {
                matches!(e.event, HistoryEvent::Promoted { node, epoch, .. } if node == id && epoch == run.epoch)
            }) || self.state.last_holder.as_ref().is_some_and(|h| h.node == id && h.epoch == run.epoch);
            if !committed {
                self.fail(format!(
                    "node {id} runs promote at epoch {} without a committed promotion",
                    run.epoch
                ));
            }
            if run.epoch <= self.nodes[i].epoch_at_start {
                self.fail(format!(
                    "node {id} promotes at epoch {} although epoch {} was committed before it started",
                    run.epoch, self.nodes[i].epoch_at_start
                ));
            }
            if let Some((e, n)) = self.max_promote_hook {
                if run.epoch < e || (run.epoch == e && n != id) {
                    self.fail(format!(
                        "promote hook epoch went from {e} (node {n}) to {} (node {id})",
                        run.epoch
                    ));
                }
            }
            self.max_promote_hook = Some((run.epoch, id));
            self.nodes[i].service_up = true;
        }
        let ok = self.settling
            || match run.hook {
                HookKind::Promote => self.rng.chance(90),
                HookKind::Demote => self.rng.chance(85),
                HookKind::Fence => self.rng.chance(60),
                HookKind::Rejoin => self.rng.chance(80),
                HookKind::Follow => self.rng.chance(85),
                HookKind::Snapshot | HookKind::Verify => {
                    let ok = self.data_action_ok_percent;
                    self.rng.chance(ok)
                }
                HookKind::Monitor => panic!("the policy asked for the monitor hook"),
                HookKind::Notify | HookKind::Start | HookKind::Stop => {
                    panic!("the policy asked for {} as a hook run", run.hook)
                }
            };
        // Some hooks hang well past an election timeout: that is what fencing is for.
        let dur = if let Some(ms) = self
            .promote_hook_ms
            .filter(|_| run.hook == HookKind::Promote)
        {
            ms
        } else if self.settling {
            10
        } else if self.rng.chance(15) {
            200 + self.rng.below(400)
        } else {
            self.rng.below(80)
        };
        self.nodes[i].hook = Some(PendingHook {
            run,
            done_ms: self.now_ms + dur,
            ok,
            cancelled: false,
        });
    }

    /// The executor's side of `Action::DemoteNow`: an in-flight promote hook is killed at
    /// once and reported finished, not ok (its service may be half up: it counts as up until
    /// the demote hook succeeded).
    fn demote_now(&mut self, i: usize) {
        let now_ms = self.now_ms;
        if let Some(h) = self.nodes[i].hook.as_mut() {
            if h.run.hook == HookKind::Promote && !h.cancelled {
                h.cancelled = true;
                h.ok = false;
                h.done_ms = now_ms;
            }
        }
    }

    fn transfer(&mut self, i: usize, to: NodeId) {
        let from = self.nodes[i].id;
        let t = idx(to);
        if self.nodes[t].role != NodeRole::Voter {
            self.fail(format!(
                "leadership transfer to {:?} node {to}",
                self.nodes[t].role
            ));
            return;
        }
        if self.leader == Some(from)
            && self.leader_functional()
            && self.connected(t)
            && self.nodes[t].matched == self.log_len
        {
            self.term += 1;
            self.leader = Some(to);
            self.leader_heard_ms = self.now_ms;
            for j in 0..3 {
                if self.connected(j) {
                    self.nodes[j].term = self.term;
                    self.nodes[j].thinks_leader = j == t;
                }
            }
            self.nodes[t].last_ack_ms = None;
        }
    }

    fn request(&mut self, r: &Req) {
        let Some(l) = self.leader else { return };
        let i = idx(l);
        if !self.connected(i) {
            return;
        }
        let req = match r {
            Req::Maintenance(on) => OperatorRequest::Maintenance {
                on: *on,
                reason: "sim".into(),
            },
            Req::Drain(n, d) => OperatorRequest::Drain {
                node: (*n as u64) + 1,
                drained: *d,
            },
            Req::Switchover(to, sched) => OperatorRequest::Switchover {
                to: to.map(|t| t as u64 + 1),
                at_unix_ms: sched.then_some(self.now_ms + 300),
            },
            Req::Cancel => OperatorRequest::CancelSwitchover,
            Req::Failback(no_commit) => OperatorRequest::Failback {
                to: None,
                no_commit: *no_commit,
            },
            Req::Commit => OperatorRequest::FailbackCommit,
            Req::Undo => OperatorRequest::FailbackUndo,
        };
        let raft = self.raft_view(i);
        let peers = self.peers(i);
        let inp = Inputs {
            state: &self.nodes[i].view,
            members: &self.members,
            raft: &raft,
            peers: &peers,
            local_health: self.health(i),
            local_service: crate::types::ServiceReport::default(),
            local_report_after_loss: None,
            now_unix_ms: self.now_ms,
        };
        let planned = self.nodes[i]
            .policy
            .plan_request(&req, &inp, self.instant(self.now_ms));
        if let Ok(cmd) = planned {
            self.propose(i, None, cmd);
        }
    }

    fn check_instant(&mut self) {
        let acting: Vec<NodeId> = (0..3)
            .filter(|i| self.acting(*i).is_some())
            .map(|i| self.nodes[i].id)
            .collect();
        if acting.len() > 1 {
            self.fail(format!("two nodes acting as primary: {acting:?}"));
        }
        if self.cfg.fencing == FencingMode::Required {
            let up: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|n| n.service_up)
                .map(|n| n.id)
                .collect();
            if up.len() > 1 {
                self.fail(format!(
                    "two services running as primary with fencing required: {up:?}"
                ));
            }
        }
    }

    fn apply(&mut self, ev: &Ev) {
        match ev {
            Ev::Wait => {}
            Ev::Crash(i) => self.crash(*i),
            Ev::Restart(i) => self.restart(*i),
            Ev::Isolate(i) => self.nodes[*i].isolated = true,
            Ev::Heal(i) => self.nodes[*i].isolated = false,
            Ev::Health(i, h) => self.nodes[*i].healthy = *h,
            Ev::Elect(i) => self.elect(*i),
            Ev::Request(r) => self.request(r),
            Ev::IsolateLeader => {
                if let Some(l) = self.leader {
                    self.nodes[idx(l)].isolated = true;
                }
            }
            Ev::FreezeLeader => {
                if let Some(l) = self.leader {
                    self.nodes[idx(l)].frozen = true;
                }
            }
            Ev::Thaw(i) => self.thaw(*i),
            Ev::CrashLeader => {
                if let Some(l) = self.leader {
                    self.crash(idx(l));
                }
            }
            Ev::ElectAny => {
                for i in 0..3 {
                    self.elect(i);
                }
            }
            Ev::Shutdown(i) => {
                if self.nodes[*i].up {
                    let now = self.instant(self.now_ms);
                    self.nodes[*i].policy.observe(Event::ShutdownRequested, now);
                }
            }
        }
        let dt = 5 + self.rng.below(50);
        self.tick(dt);
    }

    /// Heals every fault and runs fault-free: the cluster must end with exactly one
    /// acting primary whose service runs, and no other service running.
    fn settle(&mut self) {
        self.settling = true;
        for i in 0..3 {
            self.thaw(i);
            self.nodes[i].isolated = false;
            self.nodes[i].healthy = true;
            self.restart(i);
        }
        for round in 0..400 {
            // Nodes stopped meanwhile (fenced, or a graceful shutdown that completed)
            // come back, as systemd or an operator would bring them back.
            if round % 10 == 0 {
                for i in 0..3 {
                    self.restart(i);
                }
            }
            if !self.leader_functional() {
                let cand = (0..3).find(|i| {
                    self.connected(*i)
                        && self.nodes[*i].role == NodeRole::Voter
                        && self.nodes[*i].matched == self.log_len
                });
                if let Some(c) = cand {
                    self.elect(c);
                }
            }
            if round % 20 == 0 {
                if self.state.in_maintenance() {
                    self.request(&Req::Maintenance(false));
                }
                let drained: Vec<NodeId> = self.state.drained.iter().copied().collect();
                for d in drained {
                    self.request(&Req::Drain(idx(d), false));
                }
                if self
                    .state
                    .operation
                    .as_ref()
                    .is_some_and(|o| o.phase == crate::cluster::Phase::AwaitingCommit)
                {
                    self.request(&Req::Commit);
                }
            }
            self.tick(20);
        }
        let acting: Vec<(NodeId, Epoch)> = (0..3)
            .filter_map(|i| self.acting(i).map(|e| (self.nodes[i].id, e)))
            .collect();
        let services: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.service_up)
            .map(|n| n.id)
            .collect();
        if acting.len() != 1 {
            let roles: Vec<_> = self
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.id,
                        n.policy.local_role(),
                        n.thinks_leader,
                        n.policy.status_notes().to_vec(),
                    )
                })
                .collect();
            self.fail(format!(
                "after healing: acting {acting:?}, leader {:?}, state primary {:?}, op {:?}, roles {roles:?}, log {} nodes {:?}",
                self.leader, self.state.primary, self.state.operation, self.log_len,
                self.nodes.iter().map(|n| (n.id, n.up, n.isolated, n.frozen, n.matched)).collect::<Vec<_>>()
            ));
        } else if services != vec![acting[0].0] {
            self.fail(format!(
                "after healing: services {services:?} but acting {acting:?}"
            ));
        }
    }
}

impl Sim {
    /// Runs fault-free until a node acts as primary (bounded); returns it.
    fn until_primary(&mut self, except: Option<NodeId>) -> Option<NodeId> {
        for _ in 0..100 {
            if !self.leader_functional() {
                for i in 0..3 {
                    if Some(self.nodes[i].id) != except {
                        self.elect(i);
                    }
                }
            }
            self.tick(20);
            if let Some(i) = (0..3).find(|i| self.acting(*i).is_some()) {
                return Some(self.nodes[i].id);
            }
        }
        None
    }

    /// Primary A is killed, B takes over (failed over, home A), A comes back and the
    /// leader is asked to fail back. Returns false if the setup did not happen.
    fn failback_in_progress(&mut self, no_commit: bool) -> bool {
        self.settling = true;
        let Some(a) = self.until_primary(None) else {
            return false;
        };
        self.crash(idx(a));
        if self.until_primary(Some(a)).is_none() {
            return false;
        }
        self.restart(idx(a));
        for _ in 0..30 {
            self.tick(20);
        }
        self.settling = false;
        if self.state.failed_over.as_ref().map(|f| f.home) != Some(a) {
            return false;
        }
        self.request(&Req::Failback(no_commit));
        self.tick(20);
        self.state.operation.is_some()
    }
}

fn arb_req() -> impl Strategy<Value = Req> {
    prop_oneof![
        1 => any::<bool>().prop_map(Req::Maintenance),
        1 => (0usize..3, any::<bool>()).prop_map(|(n, d)| Req::Drain(n, d)),
        3 => (proptest::option::of(0usize..3), any::<bool>()).prop_map(|(t, s)| Req::Switchover(t, s)),
        1 => Just(Req::Cancel),
        3 => any::<bool>().prop_map(Req::Failback),
        2 => Just(Req::Commit),
        1 => Just(Req::Undo),
    ]
}

fn arb_ev() -> impl Strategy<Value = Ev> {
    let n = 0usize..3;
    prop_oneof![
        8 => Just(Ev::Wait),
        2 => n.clone().prop_map(Ev::Crash),
        3 => n.clone().prop_map(Ev::Restart),
        2 => n.clone().prop_map(Ev::Isolate),
        3 => n.clone().prop_map(Ev::Heal),
        3 => (n.clone(), any::<bool>()).prop_map(|(i, h)| Ev::Health(i, h)),
        2 => n.clone().prop_map(Ev::Elect),
        6 => arb_req().prop_map(Ev::Request),
        1 => n.prop_map(Ev::Shutdown),
        2 => Just(Ev::IsolateLeader),
        1 => Just(Ev::CrashLeader),
        1 => Just(Ev::FreezeLeader),
        2 => (0usize..3).prop_map(Ev::Thaw),
        4 => Just(Ev::ElectAny),
    ]
}

fn arb_fencing() -> impl Strategy<Value = FencingMode> {
    prop_oneof![
        Just(FencingMode::Required),
        Just(FencingMode::BestEffort),
        Just(FencingMode::Off)
    ]
}

fn run(
    seed: u64,
    witness: bool,
    prios: [u32; 3],
    fencing: FencingMode,
    evs: &[Ev],
) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(seed, witness, prios, fencing);
    for ev in evs {
        sim.apply(ev);
        if !sim.violations.is_empty() {
            break;
        }
    }
    if sim.violations.is_empty() {
        sim.settle();
    }
    prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, max_shrink_iters: 4000, ..ProptestConfig::default() })]

    #[test]
    fn three_voters_never_two_primaries_and_always_recover(
        seed in any::<u64>(),
        prios in proptest::array::uniform3(0u32..3),
        fencing in arb_fencing(),
        evs in proptest::collection::vec(arb_ev(), 0..200),
    ) {
        run(seed, false, prios, fencing, &evs)?;
    }

    #[test]
    fn two_voters_and_a_witness_never_two_primaries_and_always_recover(
        seed in any::<u64>(),
        prios in proptest::array::uniform3(0u32..3),
        fencing in arb_fencing(),
        evs in proptest::collection::vec(arb_ev(), 0..200),
    ) {
        run(seed, true, prios, fencing, &evs)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 4000, ..ProptestConfig::default() })]

    /// Faults (leader crash or isolation, monitor failures, operator commit/undo) while a
    /// failback syncs, cuts over, verifies or waits for commit.
    #[test]
    fn failback_under_faults_never_two_primaries_and_always_recovers(
        seed in any::<u64>(),
        witness in any::<bool>(),
        no_commit in any::<bool>(),
        fencing in arb_fencing(),
        evs in proptest::collection::vec(arb_ev(), 0..60),
    ) {
        let mut sim = Sim::new(seed, witness, [1, 1, 1], fencing);
        prop_assume!(sim.failback_in_progress(no_commit));
        for ev in &evs {
            sim.apply(ev);
            if !sim.violations.is_empty() {
                break;
            }
        }
        if sim.violations.is_empty() {
            sim.settle();
        }
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    }
}

#[test]
fn failback_without_faults_commits_and_brings_home_back() {
    let mut sim = Sim::new(3, false, [1, 1, 1], FencingMode::Required);
    assert!(sim.failback_in_progress(false), "setup");
    let home = sim.state.operation.as_ref().map(|o| o.to);
    sim.settle();
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    assert_eq!(sim.state.operation, None);
    assert_eq!(sim.state.failed_over, None);
    assert_eq!(sim.state.primary_node(), home);
}

/// A failing protective snapshot aborts the failback before anything moves; a failing
/// verify undoes it; neither leaves two primaries, and the cluster stays failed over.
#[test]
fn failing_snapshot_or_verify_ends_the_failback_and_the_cluster_stays_safe() {
    let mut aborted = 0;
    let mut undone = 0;
    for seed in 0..40u64 {
        let mut sim = Sim::new(seed * 7 + 3, false, [1, 1, 1], FencingMode::Required);
        sim.data_action_ok_percent = 0;
        if !sim.failback_in_progress(false) {
            continue;
        }
        let before = sim.state.history.total();
        for _ in 0..300 {
            sim.tick(20);
            if sim.state.operation.is_none() {
                break;
            }
        }
        assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
        let ended: Vec<String> = sim
            .state
            .history
            .since(before)
            .map(|e| format!("{:?}", e.event))
            .collect();
        if ended
            .iter()
            .any(|e| e.contains("protective snapshot failed"))
        {
            aborted += 1;
        }
        if ended.iter().any(|e| e.contains("the verify action failed")) {
            undone += 1;
        }
        if sim.state.operation.is_none() {
            assert!(
                sim.state.failed_over.is_some(),
                "a failback whose data actions always fail never commits: {ended:#?}"
            );
        }
    }
    assert!(aborted > 0, "no failback reached its snapshot");
    let _ = undone;
}

/// Issue 5's sequence: failback --no-commit → home primary, AwaitingCommit → undo →
/// the other node primary again, still failed over → failback → committed, home back.
#[test]
fn failback_no_commit_then_undo_then_failback_again() {
    let mut sim = Sim::new(5, false, [1, 1, 1], FencingMode::Required);
    assert!(sim.failback_in_progress(true), "setup");
    sim.settling = true;
    let (home, other) = match sim.state.operation.as_ref() {
        Some(op) => (op.to, op.from),
        None => panic!("no operation"),
    };
    for _ in 0..60 {
        sim.tick(20);
    }
    assert_eq!(
        sim.state.operation.as_ref().map(|o| o.phase),
        Some(crate::cluster::Phase::AwaitingCommit)
    );
    assert_eq!(sim.acting(idx(home)), Some(sim.state.epoch));
    sim.request(&Req::Undo);
    for _ in 0..60 {
        sim.tick(20);
    }
    assert_eq!(sim.state.operation, None);
    assert!(
        sim.acting(idx(other)).is_some(),
        "undo brought the primary back"
    );
    assert_eq!(
        sim.state.failed_over.as_ref().map(|f| (f.home, f.current)),
        Some((home, other))
    );
    sim.request(&Req::Failback(false));
    for _ in 0..60 {
        sim.tick(20);
    }
    assert_eq!(sim.state.operation, None);
    assert_eq!(sim.state.failed_over, None);
    assert!(sim.acting(idx(home)).is_some());
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    let ends: Vec<String> = sim
        .state
        .history
        .iter()
        .filter_map(|e| match &e.event {
            HistoryEvent::OperationEnded { outcome, .. } => Some(outcome.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec!["undone".to_string(), "committed".to_string()]);
}

#[test]
fn quiet_cluster_elects_and_promotes_one_primary() {
    let mut sim = Sim::new(7, false, [1, 1, 1], FencingMode::Required);
    sim.settle();
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    assert_eq!(sim.state.epoch, 1, "one promotion, no churn");
}

#[test]
fn stopped_primary_demotes_in_its_first_step_after_resuming() {
    // Fencing off, so the stopped node is not powered off meanwhile and does resume.
    let mut sim = Sim::new(13, false, [1, 1, 1], FencingMode::Off);
    sim.settle();
    let Some(p) = sim.state.primary_node() else {
        panic!("no primary")
    };
    sim.settling = false;
    sim.nodes[idx(p)].frozen = true; // SIGSTOP for 3 x election timeout
    for _ in 0..30 {
        for i in 0..3 {
            sim.elect(i);
        }
        sim.tick(20);
    }
    let new = sim.state.primary_node();
    assert!(
        new.is_some_and(|n| n != p),
        "another node took over: {new:?}"
    );
    assert!(
        sim.nodes[idx(p)].thinks_leader,
        "it still believes it leads"
    );
    sim.thaw(idx(p)); // SIGCONT
    assert!(
        matches!(
            sim.nodes[idx(p)].policy.local_role(),
            LocalRole::Demoting { .. }
        ),
        "demoted in the very first step: {:?}",
        sim.nodes[idx(p)].policy.local_role()
    );
    for _ in 0..10 {
        sim.tick(20);
    }
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    assert!(sim.acting(idx(p)).is_none());
    assert_eq!(
        sim.state.primary_node(),
        new,
        "the new primary keeps its role"
    );
}

#[test]
fn two_voters_and_witness_losing_the_witness_keeps_the_primary() {
    let mut sim = Sim::new(17, true, [1, 1, 0], FencingMode::Required);
    sim.settle();
    let before = (0..3).find_map(|i| sim.acting(i).map(|e| (sim.nodes[i].id, e)));
    assert!(
        before.is_some_and(|(n, _)| n != 3),
        "a voter is primary: {before:?}"
    );
    sim.settling = false;
    sim.crash(2);
    for _ in 0..30 {
        sim.tick(20);
    }
    let after = (0..3).find_map(|i| sim.acting(i).map(|e| (sim.nodes[i].id, e)));
    assert_eq!(after, before, "same primary, same epoch");
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}

#[test]
fn two_voters_and_witness_losing_the_primary_promotes_the_other_voter() {
    let mut sim = Sim::new(19, true, [1, 1, 0], FencingMode::Required);
    sim.settle();
    let Some(p) = sim.state.primary_node() else {
        panic!("no primary")
    };
    sim.settling = false;
    sim.crash(idx(p));
    for _ in 0..40 {
        for i in 0..3 {
            sim.elect(i);
        }
        sim.tick(20);
    }
    let other = if p == 1 { 2 } else { 1 };
    assert!(sim.acting(idx(other)).is_some(), "the other voter promoted");
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}

#[test]
fn isolated_primary_stops_and_majority_promotes() {
    let mut sim = Sim::new(11, false, [1, 1, 1], FencingMode::Required);
    sim.settle();
    let primary = sim.state.primary_node();
    let Some(p) = primary else {
        panic!("no primary")
    };
    sim.settling = false;
    sim.nodes[idx(p)].isolated = true;
    for _ in 0..30 {
        let other = (0..3).find(|i| *i != idx(p)).unwrap_or(0);
        sim.elect(other);
        sim.tick(20);
    }
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    assert!(
        sim.acting(idx(p)).is_none(),
        "the cut-off primary stopped acting"
    );
    let new = sim.state.primary_node();
    assert!(
        new.is_some_and(|n| n != p),
        "the majority promoted another node: {new:?}"
    );
}

/// Issue 13: a promote hook still running when its node loses the lease (rule 3) is killed
/// (the executor's DemoteNow), reported finished not ok, and followed by the demote hook;
/// the node never turns primary from it, and the majority's new primary is the only one.
#[test]
fn demote_now_kills_an_in_flight_promote_hook() {
    let mut killed = 0;
    for seed in 0..20 {
        let mut sim = Sim::new(seed, false, [1, 1, 1], FencingMode::BestEffort);
        // Every promote hook hangs (an 8 s pg_ctl promote) unless it is killed.
        sim.promote_hook_ms = Some(60_000);
        let mut promoting = None;
        for _ in 0..400 {
            let ev = if sim.leader.is_none() {
                Ev::ElectAny
            } else {
                Ev::Wait
            };
            sim.apply(&ev);
            promoting = (0..3).find(|i| {
                sim.nodes[*i]
                    .hook
                    .as_ref()
                    .is_some_and(|h| h.run.hook == HookKind::Promote)
            });
            if promoting.is_some() {
                break;
            }
        }
        let i = promoting.expect("a promotion starts from a cold cluster");
        // The promoting leader is cut off from the majority.
        sim.nodes[i].isolated = true;
        let before = sim.cancelled_promotes;
        for _ in 0..200 {
            sim.apply(&Ev::Wait);
        }
        assert!(
            sim.violations.is_empty(),
            "seed {seed}: {:#?}",
            sim.violations
        );
        assert_eq!(
            sim.cancelled_promotes,
            before + 1,
            "seed {seed}: the hung promote hook of node {} was not killed",
            sim.nodes[i].id
        );
        assert!(
            !matches!(
                sim.nodes[i].policy.local_role(),
                LocalRole::Primary { .. } | LocalRole::Promoting { .. }
            ),
            "seed {seed}: the cut-off node still holds the role: {:?}",
            sim.nodes[i].policy.local_role()
        );
        killed += 1;
        sim.promote_hook_ms = None;
        sim.settle();
        assert!(
            sim.violations.is_empty(),
            "seed {seed}: {:#?}",
            sim.violations
        );
    }
    assert_eq!(killed, 20);
}
