//! Small vocabulary types shared by every layer (config, heartbeat, cluster, policy).

use serde::{Deserialize, Serialize};

/// A node's identity in the cluster (config `[node] id`).
pub type NodeId = u64;

/// A counter carried as a bare `u64` on every wire and disk format, typed in the code so that
/// an epoch, a Raft term and a log index cannot be swapped (`Demote { node, epoch, term }`).
macro_rules! counter_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        /// Tests and checks compare with plain numbers (`assert_eq!(s.epoch, 2)`).
        impl PartialEq<u64> for $name {
            fn eq(&self, other: &u64) -> bool {
                self.0 == *other
            }
        }

        impl PartialOrd<u64> for $name {
            fn partial_cmp(&self, other: &u64) -> Option<std::cmp::Ordering> {
                self.0.partial_cmp(other)
            }
        }
    };
}

counter_newtype!(
    /// The fencing token: +1 at every promotion, committed before the promote hook runs.
    /// Serialized as the bare number (JSON, TOML, bincode: the on-disk log and the wire keep
    /// their format). `Epoch::NONE` (0) means "nobody was ever promoted".
    Epoch
);

counter_newtype!(
    /// A Raft term (openraft's `LeaderId` term) as quorate records and compares it.
    Term
);

counter_newtype!(
    /// A Raft log index (applied, last, matched) as quorate compares it between nodes.
    LogIndex
);

impl LogIndex {
    /// How many entries `self` is ahead of `other` (0 when it is not ahead): a lag.
    pub fn saturating_sub(self, other: LogIndex) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl Epoch {
    /// Before the first promotion.
    pub const NONE: Epoch = Epoch(0);

    /// The epoch the next promotion commits; None at u64::MAX (refuse rather than wrap).
    pub fn checked_next(self) -> Option<Epoch> {
        self.0.checked_add(1).map(Epoch)
    }

    /// As `checked_next`, staying at u64::MAX (for bounds, never for a promotion).
    pub fn saturating_next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

/// What a member is allowed to do in the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Votes and may become primary.
    Voter,
    /// Votes but never campaigns and never becomes primary.
    Witness,
    /// Receives the replicated state, never votes.
    Learner,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Voter => "voter",
            NodeRole::Witness => "witness",
            NodeRole::Learner => "learner",
        }
    }

    /// Voters and witnesses vote in Raft; learners do not.
    pub fn votes(self) -> bool {
        matches!(self, NodeRole::Voter | NodeRole::Witness)
    }

    /// Only voters may hold the primary role.
    pub fn may_be_primary(self) -> bool {
        matches!(self, NodeRole::Voter)
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protected service's health as the monitor hook last saw it on a node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResourceHealth {
    /// No monitor result yet (or no monitor hook configured).
    #[default]
    Unknown,
    Healthy,
    /// The monitor failed `failure_threshold` times in a row.
    Unhealthy,
}

impl ResourceHealth {
    /// Unknown counts as healthy for candidacy: a cluster without a monitor hook still fails over.
    pub fn is_usable(self) -> bool {
        !matches!(self, ResourceHealth::Unhealthy)
    }
}

/// The role the protected service itself reports (a monitor's JSON report), which may differ
/// from the role quorate assigned while a promote, demote or follow is in progress.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ServiceRole {
    Primary,
    Replica,
    Stopped,
}

impl ServiceRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceRole::Primary => "primary",
            ServiceRole::Replica => "replica",
            ServiceRole::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for ServiceRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node's service says about its own data, from the last monitor report: every
/// field is optional (a monitor that prints no report leaves all of them `None`, and quorate
/// then decides as before, by its own log). Carried in heartbeats, so every node knows every
/// peer's report without asking the leader.
///
/// `position` is the service's replication position in bytes (a PostgreSQL WAL LSN): it only
/// grows within one `timeline`; positions on different timelines are not comparable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceReport {
    pub role: Option<ServiceRole>,
    pub position: Option<u64>,
    pub timeline: Option<u64>,
    /// The service's own health claim (the monitor's exit status still decides pass/fail).
    pub healthy: Option<bool>,
}

impl ServiceReport {
    /// The position, when it was reported on `timeline` (or no timeline is known on
    /// either side): the only positions that may be compared with each other.
    pub fn position_on(&self, timeline: Option<u64>) -> Option<u64> {
        match (self.timeline, timeline) {
            (Some(a), Some(b)) if a != b => None,
            _ => self.position,
        }
    }
}

/// The things quorate asks of the operator's scripts (the `exec` agent's actions).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    /// Make this node's service the primary (after `Promote{node, epoch}` committed).
    Promote,
    /// Stop acting as primary (lease lost, switchover, drain).
    Demote,
    /// Periodic health check of the local service.
    Monitor,
    /// Make sure the previous primary (`QUORATE_FENCE_TARGET`) can no longer act.
    Fence,
    /// Resynchronise a former primary's data before it serves as a replica.
    Rejoin,
    /// Point this replica's service at the current primary (`QUORATE_PRIMARY`,
    /// `QUORATE_PRIMARY_SERVICE`): run on every other node after every primary change.
    Follow,
    /// Tell the operator's tooling about a role change anywhere in the cluster
    /// (`QUORATE_EVENT` and friends): run on every node, never waited for.
    Notify,
    /// Start the service as a replica when the daemon starts (before anything else runs;
    /// only a promotion makes it primary).
    Start,
    /// Stop the service when the daemon stops gracefully (after its hand-over and demote).
    Stop,
    /// Failback: a protective snapshot of the current primary's data before the cut-over,
    /// so an undo can go back to it (`QUORATE_FENCE_TARGET` is unset; `QUORATE_PRIMARY` is
    /// this node). A failed snapshot aborts the failback.
    Snapshot,
    /// Failback: check the data on home once it is primary and its monitor passed
    /// `verify_checks` times (checksums, row counts). A failed verify undoes the failback.
    Verify,
}

impl HookKind {
    /// Every kind, in a fixed order (used for stats and `check`).
    pub const ALL: [HookKind; 11] = [
        HookKind::Promote,
        HookKind::Demote,
        HookKind::Monitor,
        HookKind::Fence,
        HookKind::Rejoin,
        HookKind::Follow,
        HookKind::Notify,
        HookKind::Start,
        HookKind::Stop,
        HookKind::Snapshot,
        HookKind::Verify,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Promote => "promote",
            HookKind::Demote => "demote",
            HookKind::Monitor => "monitor",
            HookKind::Fence => "fence",
            HookKind::Rejoin => "rejoin",
            HookKind::Follow => "follow",
            HookKind::Notify => "notify",
            HookKind::Start => "start",
            HookKind::Stop => "stop",
            HookKind::Snapshot => "snapshot",
            HookKind::Verify => "verify",
        }
    }
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a hook runs; passed to the script as `QUORATE_REASON` so it can, for example,
/// skip a slow check on a planned switchover.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HookReason {
    Startup,
    Failover,
    Switchover,
    Failback,
    Restart,
    Rejoin,
    Maintenance,
    /// The periodic run of the monitor hook by the monitor loop.
    Monitor,
    /// The notify action (the event itself is in `QUORATE_EVENT`).
    Notify,
}

impl HookReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HookReason::Startup => "startup",
            HookReason::Failover => "failover",
            HookReason::Switchover => "switchover",
            HookReason::Failback => "failback",
            HookReason::Restart => "restart",
            HookReason::Rejoin => "rejoin",
            HookReason::Maintenance => "maintenance",
            HookReason::Monitor => "monitor",
            HookReason::Notify => "notify",
        }
    }
}

impl std::fmt::Display for HookReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
