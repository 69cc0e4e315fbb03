//! The HTTP API (axum): status, health, and (as they land) control, KV and metrics.

pub mod kv;
pub mod status;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;

use crate::node::Node;
use status::{Counters, Membership, NodeStatus, PeerStatus};

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/status", get(get_status))
        .route("/health", get(get_health))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .with_state(node)
}

pub fn server_state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// Builds the status document. Synchronous on purpose: every borrow is taken and released
/// here, never across an await.
pub fn build_status(node: &Node) -> NodeStatus {
    let m = node.metrics();
    let view = node.heartbeat.view.borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<_> = membership.voter_ids().collect();
    let learners: Vec<_> = membership.learner_ids().collect();
    let replication = m.replication.clone().unwrap_or_default();
    let peers = node
        .config
        .peers
        .iter()
        .filter(|p| p.id != node.id())
        .map(|p| {
            let hb = view.peer(p.id);
            PeerStatus {
                id: p.id,
                role: p.role.to_string(),
                api: p.api.to_string(),
                heartbeat: hb
                    .map(|s| s.state.as_str().to_string())
                    .unwrap_or_else(|| "unknown".into()),
                last_seen_ms: hb
                    .and_then(|s| s.last_seen_age)
                    .map(|d| d.as_millis() as u64),
                rtt_ms: hb.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1000.0),
                matched_index: replication
                    .get(&p.id)
                    .map(|l| l.map(|l| l.index).unwrap_or(0)),
                applied_index: hb.and_then(|s| s.last.as_ref()).map(|h| h.applied_index),
            }
        })
        .collect();
    NodeStatus {
        cluster: node.config.cluster.clone(),
        node_id: node.id(),
        role: node.config.node.role.to_string(),
        raft_state: server_state_name(m.state).to_string(),
        term: m.current_term,
        leader_id: m.current_leader,
        membership: Membership { voters, learners },
        committed_index: m.local_committed.map(|l| l.index).unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        quorum_ack_age_ms: m
            .last_quorum_acked
            .as_ref()
            .map(|t| openraft::Instant::elapsed(&**t).as_millis() as u64),
        uptime_ms: node.started.elapsed().as_millis() as u64,
        peers,
        counters: counters(node),
    }
}

fn counters(node: &Node) -> Counters {
    use std::sync::atomic::Ordering::Relaxed;
    let hb = node.heartbeat.stats.snapshot();
    let net = &node.net_stats;
    Counters {
        heartbeats_sent: hb.sent,
        heartbeats_received: hb.received,
        heartbeats_dropped_malformed: hb.dropped_malformed,
        heartbeats_dropped_oversized: hb.dropped_oversized,
        heartbeats_dropped_foreign: hb.dropped_foreign,
        heartbeats_dropped_unknown_peer: hb.dropped_unknown_peer,
        heartbeats_dropped_stale: hb.dropped_stale,
        raft_frames_rejected: net.frames_rejected.load(Relaxed),
        raft_handshakes_rejected: net.handshakes_rejected.load(Relaxed),
        raft_connections_rejected: net.connections_rejected.load(Relaxed),
        raft_dial_failures: net.dial_failures.load(Relaxed),
    }
}

async fn get_status(State(node): State<Arc<Node>>) -> Json<NodeStatus> {
    Json(build_status(&node))
}

async fn get_health(State(node): State<Arc<Node>>) -> Response {
    let alive = *node.loops_alive.borrow();
    let raft_ok = node.raft.metrics().borrow_watched().running_state.is_ok();
    if alive && raft_ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a control loop or raft has stopped; see the node's log\n",
        )
            .into_response()
    }
}
