//! Unit tests, one rule each. A small harness plays the executor: it commits proposals
//! into a shared `ClusterState`, completes hooks and moves time.

use crate::types::{LogIndex, NodeId, NodeRole, ResourceHealth};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::cluster::{
    Applied, ClusterState, Command, Demote, DemoteReason, OperationKind, Outcome, Phase, Promote,
    PromoteReason, Rejected, Step,
};

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
    local_service: crate::types::ServiceReport,
    local_report_after_loss: Option<Epoch>,
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
            local_service: crate::types::ServiceReport::default(),
            local_report_after_loss: None,
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
        self.raft.term = Term(self.raft.term.get() + 1);
        self.raft.leader_id = leader;
        self.raft.is_leader = leader == Some(me);
        self.raft.last_log_index = LogIndex(LOG);
        self.raft.matched = if self.raft.is_leader {
            (1..=3).map(|id| (id, LogIndex(LOG))).collect()
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
            local_service: self.local_service,
            local_report_after_loss: self.local_report_after_loss,
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
            local_service: self.local_service,
            local_report_after_loss: self.local_report_after_loss,
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
        assert_eq!(
            h.p.local_role(),
            LocalRole::Primary { epoch: Epoch(1) },
            "setup"
        );
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

/// Commits node 1's startup promotion at epoch 1 (the recorded primary).
fn record_node1_primary(h: &mut H) {
    commit_direct(
        h,
        Command::Promote(Promote {
            node: 1,
            epoch: Epoch(1),
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: Term(1),
            at_unix_ms: 1,
        }),
    );
}

// Shared by the fencing and failback families.
/// Node 2 leads, node 1 is the recorded primary; node 2 is the best candidate.
fn after_primary_loss(fencing: FencingMode, peer1: PeerObs) -> H {
    let mut h = H::new(2, PolicyConfig { fencing, ..cfg() });
    record_node1_primary(&mut h);
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

mod acting_and_lease;
mod bookkeeping;
mod candidate;
mod failback;
mod fencing;
mod follow;
mod lapse_grace;
mod maintenance;
mod promotion;
mod resource_failure;
mod shutdown;
mod startup;
mod switchover;
mod zero_loss;
