//! What the executor hands the policy at every step: observations, never handles.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::ClusterState;
use crate::types::{Epoch, LogIndex, NodeId, NodeRole, ResourceHealth, ServiceReport, Term};

/// A configured cluster member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub role: NodeRole,
    /// Higher wins when choosing a new primary.
    pub priority: u32,
}

/// What openraft's metrics say about this node, sampled once per step.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RaftView {
    pub is_leader: bool,
    pub term: Term,
    pub leader_id: Option<NodeId>,
    /// Index of the leader's last log entry (this node's, when it is the leader).
    pub last_log_index: LogIndex,
    /// Leader only: highest log index known replicated on each node.
    pub matched: BTreeMap<NodeId, LogIndex>,
    /// Leader only: when a quorum last acknowledged this leader (openraft's
    /// `last_quorum_acked`, converted to `Instant`).
    pub last_quorum_acked: Option<Instant>,
}

impl RaftView {
    /// A leader whose quorum acknowledged it within `lease` (strictly less: at exactly
    /// `lease` the lease has run out).
    pub fn leader_with_quorum_acked(&self, now: Instant, lease: Duration) -> bool {
        self.is_leader && crate::rules::lease_holds(self.quorum_acked_age(now), lease)
    }

    /// How long ago a quorum last acknowledged this leader (None: never, or not leading).
    pub fn quorum_acked_age(&self, now: Instant) -> Option<Duration> {
        self.last_quorum_acked
            .filter(|_| self.is_leader)
            .map(|t| now.saturating_duration_since(t))
    }

    /// How far `node` is behind the leader's log (None: not replicating to it, or not the
    /// leader).
    pub fn lag(&self, node: NodeId) -> Option<u64> {
        self.matched
            .get(&node)
            .map(|m| self.last_log_index.saturating_sub(*m))
    }
}

/// What the heartbeat detector knows about a peer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerObs {
    /// Heard recently on at least one link.
    pub alive: bool,
    /// Silent on every link for the dead timeout (false while merely suspect).
    pub dead_on_all_links: bool,
    pub health: ResourceHealth,
    pub applied_index: LogIndex,
    /// The peer's last service report (kept after it went silent: a dead primary's last
    /// position is what candidates are judged against).
    pub service: ServiceReport,
    /// The peer's own claim (from [`Policy::claims_primary`](super::Policy::claims_primary)
    /// in its heartbeats): Some while its service may be running as primary.
    pub claims_primary_epoch: Option<Epoch>,
    /// The peer's last report was taken after it lost the primary of this epoch (or a
    /// later one): its final position for that primary ([`Action::RefreshServiceReport`](super::Action::RefreshServiceReport)).
    pub report_after_loss: Option<Epoch>,
}

/// Everything one step sees. Borrowed: the executor keeps the data.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The committed, applied cluster state on this node.
    pub state: &'a ClusterState,
    pub members: &'a [Member],
    pub raft: &'a RaftView,
    /// Every other member this node hears heartbeats from (not this node).
    pub peers: &'a BTreeMap<NodeId, PeerObs>,
    /// This node's service health as the monitor last judged it.
    pub local_health: ResourceHealth,
    /// This node's last service report (from its monitor).
    pub local_service: ServiceReport,
    /// This node's last report was taken after it lost the primary of this epoch (or a
    /// later one).
    pub local_report_after_loss: Option<Epoch>,
    /// Wall clock, only to stamp commands and to fire scheduled switchovers. Never used to
    /// measure durations (the `Instant` passed to `step` is).
    pub now_unix_ms: u64,
}

impl Inputs<'_> {
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}
