//! `idle`: what a quiet node costs (RSS, CPU, heartbeat traffic).

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use quorate_chaos::launcher::{proc_usage, LocalCluster};

use crate::common::*;

/// Idle cost of one node over a measurement window.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct IdleRow {
    pub(crate) node: u64,
    pub(crate) role: String,
    pub(crate) rss_mib: f64,
    /// Percent of one core.
    pub(crate) cpu_percent: f64,
    pub(crate) heartbeats_sent_per_s: f64,
    pub(crate) heartbeats_received_per_s: f64,
    pub(crate) heartbeat_bytes_sent_per_s: f64,
    pub(crate) heartbeat_bytes_received_per_s: f64,
}

/// RSS, CPU and heartbeat traffic of every running node over `window`; returns the exact
/// window length in seconds and one row per node.
pub(crate) async fn measure_idle(
    c: &LocalCluster,
    window: Duration,
) -> Result<(f64, Vec<IdleRow>), String> {
    let ids = c.ids();
    let mut before = Vec::new();
    for id in &ids {
        let pid = c.pid(*id).ok_or(format!("node {id} is not running"))?;
        let (_, cpu) = proc_usage(pid).ok_or(format!("cannot read /proc/{pid}"))?;
        let st = c
            .status(*id)
            .await
            .ok_or(format!("node {id} does not answer /v1/status"))?;
        before.push((pid, cpu, st.counters));
    }
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for (id, (pid, cpu0, c0)) in ids.iter().zip(before) {
        let (rss, cpu1) = proc_usage(pid).ok_or(format!("cannot read /proc/{pid}"))?;
        let st = c
            .status(*id)
            .await
            .ok_or(format!("node {id} does not answer /v1/status"))?;
        let k = &st.counters;
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        rows.push(IdleRow {
            node: *id,
            role: st.role.clone(),
            rss_mib: rss as f64 / (1024.0 * 1024.0),
            cpu_percent: cpu1.saturating_sub(cpu0).as_secs_f64() / secs * 100.0,
            heartbeats_sent_per_s: rate(k.heartbeats_sent, c0.heartbeats_sent),
            heartbeats_received_per_s: rate(k.heartbeats_received, c0.heartbeats_received),
            heartbeat_bytes_sent_per_s: rate(k.heartbeat_bytes_sent, c0.heartbeat_bytes_sent),
            heartbeat_bytes_received_per_s: rate(
                k.heartbeat_bytes_received,
                c0.heartbeat_bytes_received,
            ),
        });
    }
    Ok((secs, rows))
}

pub(crate) fn print_idle(rows: &[IdleRow]) {
    println!(
        "{:<6} {:<8} {:>8} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "node", "role", "RSS MiB", "CPU %", "hb out/s", "hb in/s", "hb B/s out", "hb B/s in"
    );
    for r in rows {
        println!(
            "{:<6} {:<8} {:>8.1} {:>7.2} {:>10.1} {:>10.1} {:>10.0} {:>10.0}",
            r.node,
            r.role,
            r.rss_mib,
            r.cpu_percent,
            r.heartbeats_sent_per_s,
            r.heartbeats_received_per_s,
            r.heartbeat_bytes_sent_per_s,
            r.heartbeat_bytes_received_per_s
        );
    }
}

pub(crate) async fn idle(
    nodes: usize,
    duration: u64,
    profile: &str,
) -> Result<serde_json::Value, String> {
    let mut c =
        LocalCluster::create(&cluster_spec(nodes, 0, profile)).map_err(|e| e.to_string())?;
    with_secret_if_asked(&c)?;
    c.start_all().map_err(|e| e.to_string())?;
    c.wait_agreed_leader(START_TIMEOUT)
        .await
        .ok_or(format!("no leader within {START_TIMEOUT:?}"))?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let (secs, rows) = measure_idle(&c, Duration::from_secs(duration)).await?;
    print_idle(&rows);
    Ok(
        json!({ "bench": "idle", "nodes": nodes, "profile": profile, "seconds": secs, "per_node": rows }),
    )
}
