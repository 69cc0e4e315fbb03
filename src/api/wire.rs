//! The API's wire types: what the server sends and the CLI parses (`/v1/status`, the KV
//! replies) and the admin token's file format. One definition for both sides, so the two
//! can never drift apart.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct NodeStatus {
    pub cluster: String,
    pub node_id: NodeId,
    /// Member role from config: voter | witness | learner.
    pub role: String,
    /// Raft server state: leader | follower | candidate | learner | shutdown.
    pub raft_state: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub membership: Membership,
    pub committed_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Milliseconds since a quorum last acknowledged this leader (leader only).
    pub quorum_ack_age_ms: Option<u64>,
    pub uptime_ms: u64,
    pub peers: Vec<PeerStatus>,
    /// Rejected-input and traffic counters (also exported by /metrics).
    pub counters: Counters,
    /// The committed primary (cluster-wide view) and its epoch.
    pub primary: Option<NodeId>,
    pub epoch: crate::types::Epoch,
    /// True while this node acts as primary right now (safety rule 1 holds).
    pub acting_primary: bool,
    /// What this node's service is doing: starting | replica | rejoining | promoting | primary | demoting.
    pub local_role: String,
    /// This node's resource health from its monitor hook: unknown | healthy | unhealthy.
    pub health: String,
    /// Some(reason) while cluster-wide maintenance is on.
    pub maintenance: Option<String>,
    pub drained: Vec<NodeId>,
    pub last_failover: Option<serde_json::Value>,
    /// Set after an unplanned failover: home, current, epoch (failback possible).
    pub failed_over: Option<serde_json::Value>,
    /// A switchover or failback in progress (phase, target...).
    pub operation: Option<serde_json::Value>,
    /// What the policy is waiting for or refused, in words.
    pub notes: Vec<String>,
    /// Set when Raft stopped on this node (a storage failure such as a full disk): why, and
    /// what to do. The node then no longer acts as primary, votes or replicates.
    #[serde(default)]
    pub raft_failure: Option<String>,
    /// True while the node re-seeds from its peers after `quorate recover --reseed`: it does
    /// not vote or campaign until it has caught up with the leader.
    #[serde(default)]
    pub reseeding: bool,
    /// The outcome of the last SIGHUP reload (applied keys, or why it was refused).
    #[serde(default)]
    pub last_reload: Option<String>,
    /// Bytes the Raft log occupies on disk (with `last_log_index - purged_index` entries):
    /// the CLI estimates the bytes a lagging node still needs from it.
    #[serde(default)]
    pub log_bytes: u64,
    /// Lease lapses that suspended this node as primary (not acting, service left running
    /// for the lapse grace), and how many of them healed in the same term (acting again at
    /// the same epoch, no demote).
    #[serde(default)]
    pub lease_lapses: u64,
    #[serde(default)]
    pub lease_lapses_healed: u64,
    /// The longest follower fsync a primary survives without a demote (ms): lease + lapse
    /// grace − Raft heartbeat interval.
    #[serde(default)]
    pub lease_budget_ms: u64,
    /// p99 and max of this node's recent Raft log fsyncs (ms), over `fsync_samples` appends.
    #[serde(default)]
    pub fsync_p99_ms: Option<f64>,
    #[serde(default)]
    pub fsync_max_ms: Option<f64>,
    #[serde(default)]
    pub fsync_samples: u64,
    /// This node's service as its monitor reports it, judged against the cluster's data.
    #[serde(default)]
    pub service: ServiceStatus,
    /// The last agent action this node ran (any hook but the monitor) and its outcome.
    #[serde(default)]
    pub last_action: Option<LastActionStatus>,
    /// Test-only fault switches armed on this node (`NAME=value`; see `quorate::fault`).
    /// Always empty in a production build, which has none compiled in.
    #[serde(default)]
    pub fault_injection_armed: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Counters {
    pub heartbeats_sent: u64,
    pub heartbeats_received: u64,
    /// UDP payload bytes of the heartbeats sent and received (traffic cost).
    #[serde(default)]
    pub heartbeat_bytes_sent: u64,
    #[serde(default)]
    pub heartbeat_bytes_received: u64,
    pub heartbeats_dropped_malformed: u64,
    pub heartbeats_dropped_oversized: u64,
    pub heartbeats_dropped_foreign: u64,
    pub heartbeats_dropped_unknown_peer: u64,
    pub heartbeats_dropped_stale: u64,
    /// Failed authentication (wrong secret, tampered, or plaintext while a secret is set).
    #[serde(default)]
    pub heartbeats_dropped_unauthenticated: u64,
    /// Authenticated but replayed (duplicate, too old, older incarnation).
    #[serde(default)]
    pub heartbeats_dropped_replayed: u64,
    pub raft_frames_rejected: u64,
    pub raft_handshakes_rejected: u64,
    pub raft_connections_rejected: u64,
    pub raft_dial_failures: u64,
    /// API requests refused for a missing or wrong admin token (401).
    #[serde(default)]
    pub api_unauthorized: u64,
    /// API requests refused for a body over the limit (413).
    #[serde(default)]
    pub api_body_too_large: u64,
    /// API requests refused over the concurrency limit (503).
    #[serde(default)]
    pub api_overloaded: u64,
    /// API connections whose TLS handshake failed, timed out or was refused (TLS on only).
    #[serde(default)]
    pub api_tls_handshakes_failed: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Membership {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub role: String,
    pub api: String,
    /// alive | suspect | dead | unknown (never heard).
    pub heartbeat: String,
    pub last_seen_ms: Option<u64>,
    pub rtt_ms: Option<f64>,
    /// Highest log index known replicated to this peer (only on the leader).
    pub matched_index: Option<u64>,
    /// The peer's own applied index, from its last heartbeat.
    pub applied_index: Option<u64>,
    /// The peer's resource health, from its last heartbeat.
    pub health: Option<String>,
    /// The peer's heartbeat incarnation as this node last accepted it (higher at every start
    /// of the peer); `None` if never heard.
    #[serde(default)]
    pub incarnation: Option<u64>,
    /// The peer's service, from its last heartbeat (None: never heard).
    #[serde(default)]
    pub service: Option<ServiceStatus>,
}

/// An agent action in status: which, whether it succeeded, what happened, when.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LastActionStatus {
    pub action: String,
    pub ok: bool,
    pub summary: String,
    /// The action's own account (the end of its output).
    #[serde(default)]
    pub output: String,
    pub finished_unix_ms: u64,
}

/// A node's service data in status: its monitor's last report, and how it compares with
/// the most advanced data known (the last primary's timeline).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ServiceStatus {
    /// primary | replica | stopped, as the service itself says (None: not reported).
    pub role: Option<String>,
    /// Replication position in bytes (a WAL LSN for PostgreSQL).
    pub position: Option<u64>,
    pub timeline: Option<u64>,
    /// The service's own health claim.
    pub healthy: Option<bool>,
    /// The monitor's free-text detail (this node only; heartbeats do not carry it).
    #[serde(default)]
    pub detail: Option<String>,
    /// Bytes behind the most advanced position known on the last primary's timeline.
    pub lag_bytes: Option<u64>,
    /// Why automatic failover would not choose this node for its data, if it would not.
    pub ineligible: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KvItem {
    pub key: String,
    pub value: String,
    pub encoding: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KvList {
    pub items: Vec<KvItem>,
    pub more: bool,
    /// Pass as `start_after` to get the next page.
    pub next_start_after: Option<String>,
    pub revision: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WriteReply {
    pub revision: u64,
}

/// File name of the generated token inside the data dir.
pub const TOKEN_FILE_NAME: &str = "api.token";
/// Shortest token accepted from `[api] token_file`: anything shorter is guessable.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Checks a token's text: trimmed, one line, visible ASCII (it travels in an HTTP header),
/// long enough.
pub fn validate_token_text(text: &str) -> Result<&str, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the file is empty".into());
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("it contains spaces, line breaks or non-ASCII characters".into());
    }
    if t.len() < MIN_TOKEN_CHARS {
        return Err(format!(
            "it has {} characters, fewer than {MIN_TOKEN_CHARS}",
            t.len()
        ));
    }
    Ok(t)
}
