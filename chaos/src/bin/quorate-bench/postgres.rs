//! `postgres`: a real PostgreSQL 15 cluster under three quorate nodes (the built-in agent).
//! kill -9 of the primary node (quorate and postmaster) → first committed INSERT on the new
//! primary, over N trials, with every acknowledged row checked afterwards; then planned
//! switchovers and the write pause each one costs. Writers route by `/primary`.

use std::time::{Duration, Instant};

use serde_json::json;

use quorate::cli::pgcluster::{PgLocalCluster, SUPERUSER_PASSWORD};
use quorate_chaos::http::cluster_client;
use quorate_chaos::launcher::ClusterSpec;
use quorate_chaos::pgwrite::{check_rows, create_table, PgNode, PgWriters};
use quorate_chaos::stats::summarize;

use crate::common::*;

/// A bootstrap (initdb, two base backups) or a rewind takes seconds on a loaded machine.
const PG_TIMEOUT: Duration = Duration::from_secs(180);

async fn wait_streaming(pg: &PgLocalCluster, primary: u64) -> Result<(), String> {
    let others: Vec<u64> = pg
        .cluster()
        .ids()
        .into_iter()
        .filter(|i| *i != primary)
        .collect();
    let until = Instant::now() + PG_TIMEOUT;
    while !pg.all_stream_from(primary, &others).await {
        if Instant::now() > until {
            return Err(format!(
                "nodes {others:?} do not stream from node {primary} after {PG_TIMEOUT:?}\n{}",
                pg.logs_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub(crate) async fn postgres(
    trials: usize,
    switchovers: usize,
    synchronous: &str,
    profile: &str,
) -> Result<serde_json::Value, String> {
    if !["off", "quorum", "strict"].contains(&synchronous) {
        return Err(format!(
            "--synchronous {synchronous:?}: give off, quorum or strict"
        ));
    }
    let mut spec = ClusterSpec::voters(3);
    spec.name = "bench-pg".into();
    quorate::cli::pgcluster::apply_timing(&mut spec, profile)?;
    let mut pg = PgLocalCluster::create(&spec, "monitor_interval = \"500ms\"\n", synchronous)?;
    with_secret_if_asked(pg.cluster())?;
    pg.cluster_mut()
        .env
        .push(("QUORATE_LOG".into(), "warn".into()));
    let http = cluster_client(pg.cluster(), PROBE_TIMEOUT)?;
    pg.cluster_mut().start_all().map_err(|e| e.to_string())?;
    let mut primary = wait_primary(pg.cluster(), &http, None, PG_TIMEOUT)
        .await
        .ok_or_else(|| format!("no primary within {PG_TIMEOUT:?}\n{}", pg.logs_tail()))?;
    wait_streaming(&pg, primary).await?;
    create_table(pg.pg_addr(primary), SUPERUSER_PASSWORD).await?;
    let nodes: Vec<PgNode> = pg
        .cluster()
        .ids()
        .into_iter()
        .filter_map(|id| {
            Some(PgNode {
                api: api_of(pg.cluster(), id).ok()?,
                pg: pg.pg_addr(id),
            })
        })
        .collect();
    let writers = PgWriters::start(nodes, 1, SUPERUSER_PASSWORD, 1);
    let (mut serve_ms, mut write_ms) = (Vec::new(), Vec::new());
    for trial in 1..=trials {
        wait_streaming(&pg, primary).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed_port = pg.port(primary);
        let t0 = Instant::now();
        pg.kill9_node(primary);
        let next = wait_primary(pg.cluster(), &http, Some(primary), FAILOVER_TIMEOUT)
            .await
            .ok_or_else(|| format!("trial {trial}: no new primary\n{}", pg.logs_tail()))?;
        let serve = t0.elapsed();
        let deadline = Instant::now() + FAILOVER_TIMEOUT;
        let first = loop {
            if let Some(at) = writers.first_ack_after(t0, killed_port) {
                break at;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "trial {trial}: no write acknowledged on node {next}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let write = first.duration_since(t0);
        eprintln!(
            "trial {trial}: node {primary} killed; node {next}: /primary 200 after {:.0} ms, first committed INSERT after {:.0} ms",
            ms(serve),
            ms(write)
        );
        serve_ms.push(ms(serve));
        write_ms.push(ms(write));
        pg.cluster_mut().start(primary).map_err(|e| e.to_string())?;
        primary = next;
    }
    let mut pauses = Vec::new();
    let switchovers_from = Instant::now();
    for k in 1..=switchovers {
        wait_streaming(&pg, primary).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let target = pg
            .cluster()
            .ids()
            .into_iter()
            .find(|i| *i != primary)
            .ok_or("no switchover target")?;
        let api = api_of(pg.cluster(), primary)?;
        let from = Instant::now();
        let mut accepted = false;
        let mut last = String::new();
        for _ in 0..20 {
            let r = http
                .post(format!("http://{api}/v1/switchover"))
                .body(json!({ "to": target }).to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().as_u16() == 200 {
                accepted = true;
                break;
            }
            last = r.text().await.unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !accepted {
            return Err(format!(
                "switchover to node {target} refused 20 times; last: {last}"
            ));
        }
        let until = Instant::now() + FAILOVER_TIMEOUT;
        while wait_primary(pg.cluster(), &http, None, FAILOVER_TIMEOUT).await != Some(target) {
            if Instant::now() > until {
                return Err(format!(
                    "switchover to node {target} did not finish\n{}",
                    pg.logs_tail()
                ));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acks = writers.ack_times(from, Instant::now());
        let mut edges = vec![from];
        edges.extend(acks);
        let gap = edges
            .windows(2)
            .map(|w| ms(w[1].duration_since(w[0])))
            .fold(0.0, f64::max);
        eprintln!(
            "switchover {k}: node {primary} -> node {target}: longest write pause {gap:.0} ms"
        );
        pauses.push(gap);
        primary = target;
    }
    let acks = writers.finish().await;
    wait_streaming(&pg, primary).await?;
    let check = check_rows(pg.pg_addr(primary), SUPERUSER_PASSWORD, &acks).await?;
    let serve = summarize(&serve_ms);
    let write = summarize(&write_ms);
    let pause = summarize(&pauses);
    print_summary("kill -9 -> /primary 200", "ms", &serve);
    print_summary("kill -9 -> first INSERT", "ms", &write);
    print_summary("switchover write pause", "ms", &pause);
    // A switchover never loses a row; a kill -9 loses none unless replication is
    // asynchronous (`off`): what the old primary had not sent yet is gone with it.
    let acked_at: std::collections::HashMap<i64, Instant> =
        acks.iter().map(|a| (a.id, a.at)).collect();
    let lost_in_switchovers = check
        .lost
        .iter()
        .filter(|id| acked_at.get(id).is_some_and(|at| *at >= switchovers_from))
        .count();
    let lost_in_failovers = check.lost.len() - lost_in_switchovers;
    println!(
        "acknowledged rows: {}, lost: {} ({lost_in_failovers} in kill -9 failovers, {lost_in_switchovers} in switchovers), epochs on several servers: {}, out of epoch order: {}",
        check.acknowledged,
        check.lost.len(),
        check.epochs_on_several_servers.len(),
        check.out_of_order.len()
    );
    let result = json!({
        "bench": "postgres",
        "profile": profile,
        "synchronous": synchronous,
        "trials": trials,
        "switchovers": switchovers,
        "failover_primary_ms": serve,
        "failover_first_insert_ms": write,
        "failover_first_insert_samples_ms": write_ms,
        "switchover_write_pause_ms": pause,
        "switchover_samples_ms": pauses,
        "acknowledged_rows": check.acknowledged,
        "lost_rows": check.lost.len(),
        "lost_rows_in_failovers": lost_in_failovers,
        "lost_rows_in_switchovers": lost_in_switchovers,
        "epochs_on_several_servers": check.epochs_on_several_servers,
        "out_of_epoch_order": check.out_of_order.len(),
    });
    // Two primaries at once, or a switchover that lost a row, fail every mode; a lost row
    // in a kill -9 failover fails only the synchronous ones.
    let one_primary_at_a_time =
        check.epochs_on_several_servers.is_empty() && check.out_of_order.is_empty();
    let losses_allowed = synchronous == "off" && lost_in_switchovers == 0;
    if !one_primary_at_a_time || (!check.lost.is_empty() && !losses_allowed) {
        return Err(format!("the rows check failed: {check:?}"));
    }
    if !check.lost.is_empty() {
        eprintln!(
            "synchronous = \"off\": {lost_in_failovers} acknowledged rows were lost in kill -9 failovers (asynchronous replication: the killed primary had not sent them); use \"quorum\" for none"
        );
    }
    Ok(result)
}
