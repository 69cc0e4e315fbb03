//! What the API needs from the running node, and nothing more: the consensus handle, the
//! receivers of the executor's and the heartbeat service's published state, the sender of
//! operator requests, and the API's own guard and forwarder. The daemon builds one at start;
//! the API never sees the daemon itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::auth::ApiGuard;
use crate::api::tls::Forwarder;
use crate::config::Config;
use crate::consensus::handle::{Consensus, ProposeError};
use crate::consensus::network::NetStats;
use crate::consensus::reseed_gate::ReseedFlag;
use crate::heartbeat::{HeartbeatStats, PeerView};
use crate::policy::{LocalRole, OperatorRequest, Refusal, StatusNote};
use crate::types::{Epoch, NodeId, ResourceHealth};

/// Everything the HTTP handlers read or send to. Shared by every request (`Arc`).
pub struct ApiContext {
    pub config: Arc<Config>,
    pub consensus: Consensus,
    /// The heartbeat service's latest peer view and its counters.
    pub heartbeat_view: watch::Receiver<PeerView>,
    pub heartbeat_stats: Arc<HeartbeatStats>,
    pub net_stats: Arc<NetStats>,
    pub started: Instant,
    /// False once a control loop died; /health then answers 503.
    pub loops_alive: watch::Receiver<bool>,
    /// The resource agent (its counters and last action, for status and /metrics).
    pub agent: Arc<dyn crate::resource::Agent>,
    /// What the executor last decided (role, acting primary, notes).
    pub executor: watch::Receiver<ExecutorStatus>,
    /// Operator requests (maintenance, drain, switchover, failback) for the executor.
    pub ops: mpsc::Sender<OpRequest>,
    /// The API's admin token and request bounds (with their rejection counters).
    pub api_guard: Arc<ApiGuard>,
    /// How this node reaches the leader's API when it forwards a request (http or https).
    pub api_forward: Forwarder,
    /// Set while the node re-seeds from its peers after `quorate recover --reseed`.
    pub reseeding: ReseedFlag,
    /// The outcome of the last SIGHUP reload, for status (None: never reloaded).
    pub last_reload: Arc<Mutex<Option<String>>>,
}

impl ApiContext {
    pub fn id(&self) -> NodeId {
        self.config.node.id
    }

    /// A copy of the current Raft metrics (see [`Consensus::metrics`]).
    pub fn metrics(&self) -> openraft::RaftMetrics<crate::consensus::TypeConfig> {
        self.consensus.metrics()
    }

    /// Why Raft stopped on this node (see [`Consensus::raft_failure`]).
    pub fn raft_failure(&self) -> Option<String> {
        self.consensus.raft_failure()
    }

    /// See [`Consensus::propose`].
    pub async fn propose(
        &self,
        req: crate::consensus::app::AppRequest,
    ) -> Result<(crate::consensus::app::AppResponse, u64), ProposeError> {
        self.consensus.propose(req).await
    }

    /// See [`Consensus::linearizable_barrier`].
    pub async fn linearizable_barrier(&self) -> Result<(), ProposeError> {
        self.consensus.linearizable_barrier().await
    }

    /// The API address of a member (to forward requests to the leader).
    pub fn api_addr_of(&self, id: NodeId) -> Option<std::net::SocketAddr> {
        self.config.peers.iter().find(|p| p.id == id).map(|p| p.api)
    }

    /// The outcome of the last reload, if any.
    pub fn last_reload(&self) -> Option<String> {
        self.last_reload
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Operator requests queued for the executor at most (the API answers 503 past it).
pub const OPERATOR_QUEUE: usize = 16;
/// What the executor publishes for the API, metrics and systemd.
#[derive(Clone, Debug, Serialize)]
pub struct ExecutorStatus {
    pub local_role: LocalRole,
    /// Some(epoch) while rule 1 held at the last round.
    pub acting_primary: Option<Epoch>,
    pub epoch: Epoch,
    pub primary: Option<NodeId>,
    pub maintenance: bool,
    pub health: ResourceHealth,
    /// The local monitor's last service report, and its free-text detail.
    pub service: crate::types::ServiceReport,
    pub service_detail: Option<String>,
    /// See `Policy::followed`.
    pub followed: Option<(NodeId, Epoch)>,
    /// See `Policy::rejoin_failures`.
    pub rejoin_failures: u32,
    pub notes: Vec<StatusNote>,
    pub leader_changes: u64,
    pub promotions_by_reason: BTreeMap<String, u64>,
    /// Round counter: the watchdog is fed only while this advances.
    pub rounds: u64,
    /// See `Policy::lapse_counts`.
    pub lease_lapses: u64,
    pub lease_lapses_healed: u64,
}

impl Default for ExecutorStatus {
    fn default() -> Self {
        ExecutorStatus {
            local_role: LocalRole::Starting,
            acting_primary: None,
            epoch: crate::types::Epoch::NONE,
            primary: None,
            maintenance: false,
            health: ResourceHealth::Unknown,
            service: crate::types::ServiceReport::default(),
            service_detail: None,
            followed: None,
            rejoin_failures: 0,
            notes: Vec::new(),
            leader_changes: 0,
            promotions_by_reason: BTreeMap::new(),
            rounds: 0,
            lease_lapses: 0,
            lease_lapses_healed: 0,
        }
    }
}

/// An operator request and where to send the answer.
pub struct OpRequest {
    pub req: OperatorRequest,
    pub reply: oneshot::Sender<Result<OpOutcome, OpError>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpOutcome {
    /// The command that was committed.
    pub command: String,
    pub log_index: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Propose(String),
    #[error("the cluster refused the command: {0}")]
    Rejected(String),
}
