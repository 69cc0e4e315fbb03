//! The HTTP API (axum): status, health, control, KV and metrics, behind the guard of `auth`
//! (admin token for mutating requests, body size and concurrency bounds).

pub mod auth;
pub mod context;
pub mod control;
pub mod forward;
pub mod kv;
pub mod metrics;
pub mod service;
pub mod snapshot;
pub mod tls;
pub mod wire;

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::Router;
use openraft::ServerState;

use crate::api::context::ApiContext;
use crate::policy::LocalRole;
use wire::{Counters, Membership, NodeStatus, PeerStatus};

pub fn router(node: Arc<ApiContext>) -> Router {
    let guard = node.api_guard.clone();
    let body_limit = guard.body_limit_bytes();
    Router::new()
        .route("/v1/status", get(get_status))
        .route("/health", get(get_health))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/primary", get(get_primary))
        .route("/replica", get(get_replica))
        .route("/read-only", get(get_read_only))
        .route("/v1/history", get(get_history))
        .route("/v1/actions", get(get_actions))
        .route("/metrics", get(get_metrics))
        .route("/v1/snapshot", post(snapshot::trigger))
        .route("/v1/maintenance", post(control::maintenance))
        .route("/v1/nodes/{id}/drain", post(control::drain))
        .route("/v1/nodes/{id}/undrain", post(control::undrain))
        .route(
            "/v1/switchover",
            post(control::switchover).delete(control::cancel_switchover),
        )
        .route("/v1/failback", post(control::failback))
        .route("/v1/failback/commit", post(control::failback_commit))
        .route("/v1/failback/undo", post(control::failback_undo))
        .with_state(node)
        .layer(axum::middleware::from_fn_with_state(guard, auth::guard))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
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
pub fn build_status(node: &ApiContext) -> NodeStatus {
    let m = node.metrics();
    let ex = node.executor.borrow().clone();
    let fsync = crate::consensus::log_store::flush_latency_summary();
    let cluster = node.consensus.sm.cluster();
    let view = node.heartbeat_view.borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<_> = membership.voter_ids().collect();
    let learners: Vec<_> = membership.learner_ids().collect();
    let replication = m.replication.clone().unwrap_or_default();
    let services = service_view(node, &ex, &view, &cluster);
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
                applied_index: hb
                    .and_then(|s| s.last.as_ref())
                    .map(|h| h.applied_index.get()),
                health: hb
                    .and_then(|s| s.last.as_ref())
                    .map(|h| health_name(h.health).to_string()),
                incarnation: hb.and_then(|s| s.incarnation),
                service: hb
                    .and_then(|s| s.last.as_ref())
                    .map(|_| services.status_of(p.id, None)),
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
        quorum_ack_age_ms: crate::consensus::handle::quorum_acked_age(&m)
            .map(|d| d.as_millis() as u64),
        uptime_ms: node.started.elapsed().as_millis() as u64,
        peers,
        counters: counters(node),
        primary: cluster.primary_node(),
        epoch: cluster.epoch,
        acting_primary: acting_primary_now(node).is_some(),
        local_role: local_role_name(ex.local_role).to_string(),
        health: health_name(ex.health).to_string(),
        maintenance: cluster.maintenance.as_ref().map(|m| m.reason.clone()),
        drained: cluster.drained.iter().copied().collect(),
        last_failover: cluster
            .last_failover
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok()),
        failed_over: cluster
            .failed_over
            .as_ref()
            .and_then(|f| serde_json::to_value(f).ok()),
        operation: cluster
            .operation
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok()),
        notes: {
            let mut notes: Vec<String> = ex.notes.iter().map(|n| n.to_string()).collect();
            if let Some(n) = slow_disk_note(fsync, node.config.timing.lease_budget()) {
                notes.push(n);
            }
            notes
        },
        raft_failure: node.raft_failure(),
        reseeding: node.reseeding.active(),
        last_reload: node.last_reload(),
        log_bytes: node.consensus.log.on_disk_bytes(),
        lease_lapses: ex.lease_lapses,
        lease_lapses_healed: ex.lease_lapses_healed,
        lease_budget_ms: node.config.timing.lease_budget().as_millis() as u64,
        fsync_p99_ms: fsync.map(|(p99, _, _)| p99.as_secs_f64() * 1000.0),
        fsync_max_ms: fsync.map(|(_, max, _)| max.as_secs_f64() * 1000.0),
        fsync_samples: fsync.map(|(_, _, n)| n as u64).unwrap_or(0),
        service: services.status_of(node.id(), ex.service_detail.clone()),
        last_action: node.agent.stats().last_action().map(action_status),
        fault_injection_armed: crate::fault::armed(),
    }
}

/// Every member's service report as this node knows it, judged against the cluster's data.
fn service_view(
    node: &ApiContext,
    ex: &context::ExecutorStatus,
    view: &crate::heartbeat::PeerView,
    cluster: &crate::cluster::ClusterState,
) -> service::ServiceView {
    let mut reports = std::collections::BTreeMap::new();
    reports.insert(node.id(), ex.service);
    for p in &view.peers {
        if let Some(h) = &p.last {
            reports.insert(p.id, h.service);
        }
    }
    service::ServiceView::new(
        reports,
        cluster.primary_node(),
        node.config.resource.max_service_lag_bytes,
    )
}

/// Fewer fsyncs than this say nothing about the disk (start-up, an idle cluster).
const SLOW_DISK_MIN_SAMPLES: usize = 100;

/// A status note when this node's Raft log fsyncs are slower than the lease budget: while it
/// is a follower, its late answers lapse the primary's lease (a write pause, or a demote
/// once the lapse outlasts the grace).
pub fn slow_disk_note(
    fsync: Option<(std::time::Duration, std::time::Duration, usize)>,
    budget: std::time::Duration,
) -> Option<String> {
    let (p99, _, n) = fsync?;
    if n < SLOW_DISK_MIN_SAMPLES || p99 <= budget {
        return None;
    }
    Some(format!(
        "slow disk: Raft log fsync p99 {:.1} ms over the last {n} appends exceeds the lease budget {} ms \
         (lease + lapse grace - raft_heartbeat): the primary's lease will lapse while this node flushes; \
         put data_dir on a faster disk, or raise timing.lease and timing.election_timeout_min",
        p99.as_secs_f64() * 1000.0,
        budget.as_millis()
    ))
}

pub fn health_name(h: crate::types::ResourceHealth) -> &'static str {
    match h {
        crate::types::ResourceHealth::Unknown => "unknown",
        crate::types::ResourceHealth::Healthy => "healthy",
        crate::types::ResourceHealth::Unhealthy => "unhealthy",
    }
}

pub fn local_role_name(r: LocalRole) -> &'static str {
    match r {
        LocalRole::Starting => "starting",
        LocalRole::Replica => "replica",
        LocalRole::Rejoining => "rejoining",
        LocalRole::Promoting { .. } => "promoting",
        LocalRole::Primary { .. } => "primary",
        LocalRole::Suspended { .. } => "suspended",
        LocalRole::Demoting { .. } => "demoting",
    }
}

/// Safety rule 1, evaluated at request time (not at the executor's last round): this node
/// acts as primary only while its promote hook ran for the committed epoch e, the committed
/// state still names it at e, it is the Raft leader, and a quorum acknowledged it within
/// `lease`. After a SIGSTOP/SIGCONT the quorum acknowledgement is old, so this answers None
/// before the executor has even run again.
pub fn acting_primary_now(node: &ApiContext) -> Option<crate::types::Epoch> {
    let LocalRole::Primary { epoch } = node.executor.borrow().local_role else {
        return None;
    };
    let m = node.metrics();
    crate::rules::acting_check(
        &node.consensus.sm.cluster(),
        node.id(),
        epoch,
        crate::consensus::handle::leader_is_current(&m),
        crate::consensus::handle::quorum_acked_age(&m),
        node.config.timing.lease,
    )
    .ok()
    .map(|()| epoch)
}

fn counters(node: &ApiContext) -> Counters {
    use std::sync::atomic::Ordering::Relaxed;
    let hb = node.heartbeat_stats.snapshot();
    let net = &node.net_stats;
    Counters {
        heartbeats_sent: hb.sent,
        heartbeats_received: hb.received,
        heartbeat_bytes_sent: hb.sent_bytes,
        heartbeat_bytes_received: hb.received_bytes,
        heartbeats_dropped_malformed: hb.dropped_malformed,
        heartbeats_dropped_oversized: hb.dropped_oversized,
        heartbeats_dropped_foreign: hb.dropped_foreign,
        heartbeats_dropped_unknown_peer: hb.dropped_unknown_peer,
        heartbeats_dropped_stale: hb.dropped_stale,
        heartbeats_dropped_unauthenticated: hb.dropped_unauthenticated,
        heartbeats_dropped_replayed: hb.dropped_replayed,
        raft_frames_rejected: net.frames_rejected.load(Relaxed),
        raft_handshakes_rejected: net.handshakes_rejected.load(Relaxed),
        raft_connections_rejected: net.connections_rejected.load(Relaxed),
        raft_dial_failures: net.dial_failures.load(Relaxed),
        api_unauthorized: node.api_guard.stats.unauthorized.load(Relaxed),
        api_body_too_large: node.api_guard.stats.body_too_large.load(Relaxed),
        api_overloaded: node.api_guard.stats.overloaded.load(Relaxed),
        api_tls_handshakes_failed: node.api_guard.stats.tls_handshake_failed.load(Relaxed),
    }
}

async fn get_status(State(node): State<Arc<ApiContext>>) -> Json<NodeStatus> {
    Json(build_status(&node))
}

async fn get_health(State(node): State<Arc<ApiContext>>) -> Response {
    let alive = *node.loops_alive.borrow();
    if let Some(why) = node.raft_failure() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    }
    let (rejoining, rejoin_failures) = {
        let ex = node.executor.borrow();
        (
            matches!(ex.local_role, LocalRole::Rejoining),
            ex.rejoin_failures,
        )
    };
    if let Err(why) = service::data_health(rejoining, rejoin_failures) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    }
    if alive {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop has stopped; see the node's log and restart the daemon\n",
        )
            .into_response()
    }
}

async fn get_primary(State(node): State<Arc<ApiContext>>) -> Response {
    match acting_primary_now(&node) {
        Some(epoch) => (
            StatusCode::OK,
            Json(serde_json::json!({"primary": node.id(), "epoch": epoch})),
        )
            .into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is not the acting primary",
        ),
    }
}

/// `?lag=BYTES` of `/replica` and `/read-only`.
#[derive(serde::Deserialize)]
struct LagQuery {
    lag: Option<String>,
}

/// The facts `/replica` judges, read once from the node's receivers.
fn replica_facts(node: &ApiContext) -> service::ReplicaFacts {
    let ex = node.executor.borrow().clone();
    let cluster = node.consensus.sm.cluster();
    let view = node.heartbeat_view.borrow().clone();
    let primary = cluster.primary_node().map(|p| (p, cluster.epoch));
    let primary_hb = primary.and_then(|(p, _)| view.peer(p));
    service::ReplicaFacts {
        me: node.id(),
        member_role: node.config.node.role,
        serving_as_replica: matches!(ex.local_role, LocalRole::Replica)
            && acting_primary_now(node).is_none(),
        raft_failed: node.raft_failure().is_some(),
        healthy: ex.health.is_usable(),
        primary,
        primary_heard: primary_hb.is_some_and(|s| !s.state.counts_as_dead() && s.last.is_some()),
        followed: ex.followed,
        my_report: ex.service,
        primary_report: primary_hb.and_then(|s| s.last.as_ref()).map(|h| h.service),
    }
}

/// The lag limit of a request: `?lag=BYTES`, else `max_service_lag_bytes`; Err: the message
/// for a 400.
fn lag_limit(node: &ApiContext, q: &LagQuery) -> Result<u64, String> {
    match q.lag.as_deref() {
        None => Ok(node.config.resource.max_service_lag_bytes),
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            format!("lag={text:?} is not a number of bytes; use e.g. /replica?lag=1048576")
        }),
    }
}

async fn get_replica(
    State(node): State<Arc<ApiContext>>,
    axum::extract::Query(q): axum::extract::Query<LagQuery>,
) -> Response {
    let max = match lag_limit(&node, &q) {
        Ok(m) => m,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match service::replica_verdict(&replica_facts(&node), max) {
        Ok(lag) => (
            StatusCode::OK,
            Json(serde_json::json!({"replica": node.id(), "lag_bytes": lag})),
        )
            .into_response(),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// `/read-only`: 200 on the acting primary, or on a replica `/replica` accepts.
async fn get_read_only(
    State(node): State<Arc<ApiContext>>,
    axum::extract::Query(q): axum::extract::Query<LagQuery>,
) -> Response {
    if let Some(epoch) = acting_primary_now(&node) {
        return (
            StatusCode::OK,
            Json(serde_json::json!({"primary": node.id(), "epoch": epoch})),
        )
            .into_response();
    }
    let max = match lag_limit(&node, &q) {
        Ok(m) => m,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match service::replica_verdict(&replica_facts(&node), max) {
        Ok(lag) => (
            StatusCode::OK,
            Json(serde_json::json!({"replica": node.id(), "lag_bytes": lag})),
        )
            .into_response(),
        Err(why) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not the acting primary, and not a usable replica: {why}"),
        ),
    }
}

fn action_status(a: crate::resource::LastAction) -> wire::LastActionStatus {
    wire::LastActionStatus {
        action: a.kind.as_str().to_string(),
        ok: a.ok,
        summary: a.summary,
        output: a.output,
        finished_unix_ms: a.finished_unix_ms,
    }
}

/// This node's last agent actions (oldest first; monitor and notify runs are not kept).
async fn get_actions(State(node): State<Arc<ApiContext>>) -> Response {
    let actions: Vec<wire::LastActionStatus> = node
        .agent
        .stats()
        .recent_actions()
        .into_iter()
        .map(action_status)
        .collect();
    Json(serde_json::json!({ "node": node.id(), "agent": node.agent.name(), "actions": actions }))
        .into_response()
}

async fn get_history(State(node): State<Arc<ApiContext>>) -> Response {
    let cluster = node.consensus.sm.cluster();
    let entries: Vec<_> = cluster.history.iter().cloned().collect();
    Json(serde_json::json!({ "entries": entries })).into_response()
}

async fn get_metrics(State(node): State<Arc<ApiContext>>) -> Response {
    match metrics::render(&node) {
        Ok(text) => {
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {e}"),
        ),
    }
}

/// A JSON error body `{"error": ...}`; 503 answers carry `Retry-After: 1`.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": msg.into() });
    let mut r = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    r
}

#[cfg(test)]
mod slow_disk_tests {
    use super::slow_disk_note;
    use std::time::Duration;

    #[test]
    fn a_note_only_for_enough_samples_above_the_budget() {
        let ms = Duration::from_millis;
        let budget = ms(85);
        assert_eq!(slow_disk_note(None, budget), None);
        assert_eq!(slow_disk_note(Some((ms(200), ms(300), 10)), budget), None);
        assert_eq!(slow_disk_note(Some((ms(20), ms(300), 1000)), budget), None);
        let n = slow_disk_note(Some((ms(120), ms(300), 1000)), budget).expect("note");
        assert!(n.contains("120.0 ms") && n.contains("85 ms"), "{n}");
        assert!(n.contains("faster disk"), "{n}");
    }
}
