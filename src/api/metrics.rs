//! `/metrics`: Prometheus text exposition, built at scrape time from the node's live state
//! (nothing is sampled in the background, so an idle node spends no CPU on metrics).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::build_status;
use crate::api::context::ApiContext;

type Labels = Vec<(String, String)>;

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The protected service's data, one series per member this node knows a report of (its
/// own from its monitor, the peers' from their heartbeats): position, timeline, lag behind
/// the most advanced data, health, role and whether automatic failover could choose it.
fn register_service(reg: &mut Registry, st: &crate::api::wire::NodeStatus) {
    let position: Family<Labels, Gauge> = Family::default();
    let timeline: Family<Labels, Gauge> = Family::default();
    let lag: Family<Labels, Gauge> = Family::default();
    let healthy: Family<Labels, Gauge> = Family::default();
    let role: Family<Labels, Gauge> = Family::default();
    let eligible: Family<Labels, Gauge> = Family::default();
    let own = std::iter::once((st.node_id, Some(&st.service)));
    let peers = st.peers.iter().map(|p| (p.id, p.service.as_ref()));
    for (id, sv) in own.chain(peers) {
        let Some(sv) = sv else { continue };
        let node: Labels = vec![("node".into(), id.to_string())];
        if let Some(v) = sv.position {
            position.get_or_create(&node).set(saturating_i64(v));
        }
        if let Some(v) = sv.timeline {
            timeline.get_or_create(&node).set(saturating_i64(v));
        }
        if let Some(v) = sv.lag_bytes {
            lag.get_or_create(&node).set(saturating_i64(v));
        }
        if let Some(v) = sv.healthy {
            healthy.get_or_create(&node).set(i64::from(v));
        }
        if let Some(r) = &sv.role {
            let mut l = node.clone();
            l.push(("role".into(), r.clone()));
            role.get_or_create(&l).set(1);
        }
        if sv.position.is_some() {
            eligible
                .get_or_create(&node)
                .set(i64::from(sv.ineligible.is_none()));
        }
    }
    reg.register(
        "service_position_bytes",
        "The service's replication position as its monitor last reported it (a WAL LSN for PostgreSQL), by node",
        position,
    );
    reg.register(
        "service_timeline",
        "The service's timeline as its monitor last reported it, by node",
        timeline,
    );
    reg.register(
        "service_lag_bytes",
        "Bytes the node's service is behind the most advanced position known on the last primary's timeline, by node",
        lag,
    );
    reg.register(
        "service_healthy",
        "1 while the node's service reports itself healthy, by node",
        healthy,
    );
    reg.register(
        "service_role",
        "1 for the role the node's service reports (primary, replica, stopped), by node",
        role,
    );
    reg.register(
        "service_eligible",
        "1 while the node's data is close enough (max_service_lag_bytes) for automatic failover to choose it, by node",
        eligible,
    );
}

/// Renders every metric as Prometheus text.
pub fn render(node: &ApiContext) -> Result<String, std::fmt::Error> {
    let st = build_status(node);
    let ex = node.executor.borrow().clone();
    let mut reg = Registry::with_prefix("quorate");

    let info: Family<Labels, Gauge> = Family::default();
    info.get_or_create(&vec![
        ("cluster".into(), st.cluster.clone()),
        ("node".into(), st.node_id.to_string()),
        ("member_role".into(), st.role.clone()),
        ("raft_state".into(), st.raft_state.clone()),
    ])
    .set(1);
    reg.register(
        "node_info",
        "Static and slowly changing facts about this node",
        info,
    );
    gauge(
        &mut reg,
        "is_leader",
        "1 while this node is the Raft leader",
        i64::from(st.raft_state == "leader"),
    );
    gauge(
        &mut reg,
        "is_primary",
        "1 while this node acts as primary (safety rule 1 holds)",
        i64::from(ex.acting_primary.is_some()),
    );
    gauge(
        &mut reg,
        "epoch",
        "Committed epoch (fencing token) of the current primary",
        ex.epoch.get() as i64,
    );
    gauge(&mut reg, "term", "Current Raft term", st.term as i64);
    gauge(
        &mut reg,
        "maintenance",
        "1 while cluster-wide maintenance mode is on",
        i64::from(ex.maintenance),
    );
    gauge(
        &mut reg,
        "committed_index",
        "Highest committed log index known here",
        st.committed_index as i64,
    );
    gauge(
        &mut reg,
        "applied_index",
        "Highest log index applied to the state machine",
        st.applied_index as i64,
    );
    counter(
        &mut reg,
        "leader_changes",
        "Raft leader changes observed by this node",
        ex.leader_changes,
    );
    counter(
        &mut reg,
        "lease_lapses",
        "Lease lapses that suspended this node as primary",
        ex.lease_lapses,
    );
    counter(
        &mut reg,
        "lease_lapses_healed",
        "Lease lapses that healed in the same term without a demote",
        ex.lease_lapses_healed,
    );
    let failovers: Family<Labels, Counter> = Family::default();
    for (reason, n) in &ex.promotions_by_reason {
        failovers
            .get_or_create(&vec![("reason".into(), reason.clone())])
            .inc_by(*n);
    }
    reg.register(
        "promotions",
        "Promotions recorded in the cluster history, by reason",
        failovers,
    );

    let rtt: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    let lag: Family<Labels, Gauge> = Family::default();
    let alive: Family<Labels, Gauge> = Family::default();
    for p in &st.peers {
        let l = vec![("peer".into(), p.id.to_string())];
        if let Some(r) = p.rtt_ms {
            rtt.get_or_create(&l).set(r / 1000.0);
        }
        alive
            .get_or_create(&l)
            .set(i64::from(p.heartbeat == "alive"));
        if let Some(m) = p.matched_index {
            lag.get_or_create(&l)
                .set(st.last_log_index.saturating_sub(m) as i64);
        }
    }
    reg.register(
        "peer_rtt_seconds",
        "Heartbeat round-trip time per peer (EWMA)",
        rtt,
    );
    reg.register(
        "peer_alive",
        "1 while the peer is alive on heartbeats",
        alive,
    );
    reg.register(
        "replication_lag_entries",
        "Entries the follower is behind (leader only)",
        lag,
    );

    let c = &st.counters;
    let hb: Family<Labels, Counter> = Family::default();
    for (reason, v) in [
        ("malformed", c.heartbeats_dropped_malformed),
        ("oversized", c.heartbeats_dropped_oversized),
        ("foreign", c.heartbeats_dropped_foreign),
        ("unknown_peer", c.heartbeats_dropped_unknown_peer),
        ("stale", c.heartbeats_dropped_stale),
        ("unauthenticated", c.heartbeats_dropped_unauthenticated),
        ("replayed", c.heartbeats_dropped_replayed),
    ] {
        hb.get_or_create(&vec![("reason".into(), reason.into())])
            .inc_by(v);
    }
    reg.register(
        "heartbeats_dropped",
        "Heartbeat datagrams dropped, by reason",
        hb,
    );
    counter(
        &mut reg,
        "heartbeats_sent",
        "Heartbeat datagrams sent",
        c.heartbeats_sent,
    );
    counter(
        &mut reg,
        "heartbeats_received",
        "Heartbeat datagrams received",
        c.heartbeats_received,
    );
    counter(
        &mut reg,
        "heartbeat_bytes_sent",
        "Heartbeat bytes sent (UDP payload)",
        c.heartbeat_bytes_sent,
    );
    counter(
        &mut reg,
        "heartbeat_bytes_received",
        "Heartbeat bytes received (UDP payload)",
        c.heartbeat_bytes_received,
    );
    counter(
        &mut reg,
        "raft_frames_rejected",
        "Raft connections dropped for a bad frame",
        c.raft_frames_rejected,
    );
    counter(
        &mut reg,
        "raft_handshakes_rejected",
        "Raft connections refused at the handshake",
        c.raft_handshakes_rejected,
    );
    counter(
        &mut reg,
        "raft_connections_rejected",
        "Raft connections refused over the limit",
        c.raft_connections_rejected,
    );
    counter(
        &mut reg,
        "api_tls_handshakes_failed",
        "API connections whose TLS handshake failed, timed out or was refused",
        c.api_tls_handshakes_failed,
    );
    let api: Family<Labels, Counter> = Family::default();
    for (reason, v) in [
        ("unauthorized", c.api_unauthorized),
        ("body_too_large", c.api_body_too_large),
        ("overloaded", c.api_overloaded),
    ] {
        api.get_or_create(&vec![("reason".into(), reason.into())])
            .inc_by(v);
    }
    reg.register(
        "api_requests_rejected",
        "API requests refused, by reason",
        api,
    );

    register_service(&mut reg, &st);

    let hooks_runs: Family<Labels, Counter> = Family::default();
    let hooks_fail: Family<Labels, Counter> = Family::default();
    let hooks_timeout: Family<Labels, Counter> = Family::default();
    for kind in crate::resource::HookKind::ALL {
        let counts = node.agent.stats().get(kind);
        let l = vec![("hook".into(), kind.as_str().to_string())];
        hooks_runs.get_or_create(&l).inc_by(counts.runs);
        hooks_fail.get_or_create(&l).inc_by(counts.failures);
        hooks_timeout.get_or_create(&l).inc_by(counts.timeouts);
    }
    reg.register("hook_runs", "Hook executions, by hook", hooks_runs);
    counter(
        &mut reg,
        "notifications_dropped",
        "Notifications dropped because the notify queue was full (executor::NOTIFY_QUEUE)",
        node.agent.stats().notifications_dropped(),
    );
    reg.register(
        "hook_failures",
        "Hook executions that failed, by hook",
        hooks_fail,
    );
    reg.register(
        "hook_timeouts",
        "Hook executions killed at their timeout, by hook",
        hooks_timeout,
    );

    let (kv_keys, kv_rev, kv_bytes, kv_max_bytes) = node
        .consensus
        .sm
        .read()
        .map(|s| {
            (
                s.app.kv.len() as i64,
                s.app.kv.revision() as i64,
                s.app.kv.approx_bytes() as i64,
                s.app.kv.limits().max_total_bytes as i64,
            )
        })
        .unwrap_or_default();
    gauge(
        &mut reg,
        "kv_keys",
        "Keys in the replicated KV store",
        kv_keys,
    );
    gauge(&mut reg, "kv_revision", "Current KV revision", kv_rev);
    gauge(
        &mut reg,
        "kv_bytes",
        "Approximate bytes held by the KV store",
        kv_bytes,
    );
    gauge(
        &mut reg,
        "kv_max_bytes",
        "Committed limit on kv_bytes (storage.max_kv_bytes); writes past it get 507",
        kv_max_bytes,
    );
    gauge(
        &mut reg,
        "raft_log_disk_bytes",
        "Bytes the Raft log occupies on disk",
        node.consensus.log.on_disk_bytes() as i64,
    );
    gauge(
        &mut reg,
        "snapshot_bytes",
        "Size of the current snapshot",
        node.consensus.sm.snapshot_bytes() as i64,
    );

    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}
