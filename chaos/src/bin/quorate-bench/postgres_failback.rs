//! `postgres-failback`: failback of a real PostgreSQL 15 cluster as a data operation. For
//! each count of rows N: kill -9 of home (quorate and postmaster), N rows written on the new
//! primary, home restarted (it rewinds and catches up), then `failback` (committed); with a
//! writer running all the time. Reports what pg_rewind copied against the data dir, the
//! catch-up time, each phase's duration, the write pause, the final sync's RPO and verify's
//! time, and checks every acknowledged row at the end.

use std::time::{Duration, Instant};

use serde_json::json;

use quorate::cli::pgcluster::{PgLocalCluster, SUPERUSER_PASSWORD};
use quorate::cluster::{HistoryEvent, Outcome};
use quorate::types::HookKind;
use quorate_chaos::http::{cluster_client, get_history, get_status};
use quorate_chaos::launcher::ClusterSpec;
use quorate_chaos::pgwrite::{check_rows, create_table, PgNode, PgWriters};

use crate::common::*;

/// A bootstrap, a rewind or a catch-up takes seconds on a loaded machine.
const PG_TIMEOUT: Duration = Duration::from_secs(300);
/// Home counts as caught up once its data is this close to the primary's.
const CAUGHT_UP_BYTES: u64 = 1 << 20;

async fn sql(pg: &PgLocalCluster, id: u64, text: &str) -> Result<(), String> {
    let c = pg.sql(id).await?;
    c.batch_execute(text)
        .await
        .map_err(|e| format!("on node {id}: {text}: {e}"))
}

/// The newest output of `action` on `node` that finished at or after `since_unix_ms`.
async fn action_output(
    http: &reqwest::Client,
    pg: &PgLocalCluster,
    node: u64,
    action: &str,
    since_unix_ms: u64,
) -> Option<String> {
    let api = api_of(pg.cluster(), node).ok()?;
    let v: serde_json::Value = http
        .get(format!("http://{api}/v1/actions"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["actions"].as_array()?.iter().rev().find_map(|a| {
        (a["action"] == action && a["finished_unix_ms"].as_u64()? >= since_unix_ms)
            .then(|| a["output"].as_str().map(str::to_string))
            .flatten()
    })
}

/// A size as the agent prints it (`812 B`, `1.2 MiB`) in bytes.
fn size_bytes(t: &str) -> Option<f64> {
    let mut it = t.split_whitespace();
    let n: f64 = it.next()?.parse().ok()?;
    Some(match it.next()? {
        "B" => n,
        "KiB" => n * 1024.0,
        "MiB" => n * 1024.0 * 1024.0,
        "GiB" => n * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// The figures of a rejoin's rewind account: (copied, data dir, copied without WAL, data
/// dir without WAL, rewind ms).
fn rewind_figures(account: &str) -> Option<(f64, f64, f64, f64, f64)> {
    let after = account.split("pg_rewind copied ").nth(1)?;
    let (copied, rest) = after.split_once(" of a ")?;
    let (dir, rest) = rest.split_once(" data dir")?;
    let ms: f64 = rest
        .split(" in ")
        .nth(1)?
        .split(" ms")
        .next()?
        .trim()
        .parse()
        .ok()?;
    let without = account.split("without WAL: ").nth(1)?;
    let (c2, rest) = without.split_once(" of ")?;
    let d2 = rest.split(" (").next()?;
    Some((
        size_bytes(copied)?,
        size_bytes(dir)?,
        size_bytes(c2)?,
        size_bytes(d2)?,
        ms,
    ))
}

pub(crate) async fn postgres_failback(
    rows: &[i64],
    base_rows: i64,
    profile: &str,
) -> Result<serde_json::Value, String> {
    let mut spec = ClusterSpec::voters(3);
    spec.name = "bench-pg-failback".into();
    quorate::cli::pgcluster::apply_timing(&mut spec, profile)?;
    let mut pg = PgLocalCluster::create(&spec, "monitor_interval = \"500ms\"\n", "quorum")?;
    with_secret_if_asked(pg.cluster())?;
    pg.cluster_mut()
        .env
        .push(("QUORATE_LOG".into(), "warn".into()));
    let http = cluster_client(pg.cluster(), PROBE_TIMEOUT)?;
    let slow = cluster_client(pg.cluster(), REQUEST_TIMEOUT)?;
    pg.cluster_mut().start_all().map_err(|e| e.to_string())?;
    let home = wait_primary(pg.cluster(), &http, None, PG_TIMEOUT)
        .await
        .ok_or_else(|| format!("no primary within {PG_TIMEOUT:?}\n{}", pg.logs_tail()))?;
    let all: Vec<u64> = pg.cluster().ids();
    let others: Vec<u64> = all.iter().copied().filter(|i| *i != home).collect();
    let until = Instant::now() + PG_TIMEOUT;
    while !pg.all_stream_from(home, &others).await {
        if Instant::now() > until {
            return Err(format!("replicas do not stream\n{}", pg.logs_tail()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create_table(pg.pg_addr(home), SUPERUSER_PASSWORD).await?;
    sql(
        &pg,
        home,
        &format!(
            "CREATE TABLE bulk (id bigint PRIMARY KEY, pad text NOT NULL);
             INSERT INTO bulk SELECT g, repeat('x', 100) FROM generate_series(1, {base_rows}) g"
        ),
    )
    .await?;
    sql(&pg, home, "CHECKPOINT").await?;
    let nodes: Vec<PgNode> = all
        .iter()
        .filter_map(|id| {
            Some(PgNode {
                api: api_of(pg.cluster(), *id).ok()?,
                pg: pg.pg_addr(*id),
            })
        })
        .collect();
    let writers = PgWriters::start(nodes, 1, SUPERUSER_PASSWORD, 1);
    let mut next_id = base_rows + 1;
    let mut rounds = Vec::new();
    for &n in rows {
        while !pg.all_stream_from(home, &others).await {
            if Instant::now() > until + PG_TIMEOUT {
                return Err(format!("replicas do not stream\n{}", pg.logs_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg.kill9_node(home);
        let away = wait_primary(pg.cluster(), &http, Some(home), FAILOVER_TIMEOUT)
            .await
            .ok_or_else(|| format!("no new primary after the kill\n{}", pg.logs_tail()))?;
        sql(
            &pg,
            away,
            &format!(
                "INSERT INTO bulk SELECT g, repeat('y', 100) FROM generate_series({next_id}, {}) g",
                next_id + n - 1
            ),
        )
        .await?;
        next_id += n;
        let restart_unix_ms = unix_ms_now();
        let restarted = Instant::now();
        pg.cluster_mut().start(home).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + PG_TIMEOUT;
        let account = loop {
            let mut found = None;
            for action in ["rejoin", "follow"] {
                if let Some(out) = action_output(&slow, &pg, home, action, restart_unix_ms).await {
                    if out.contains("pg_rewind copied") || out.contains("no rewind was needed") {
                        found = Some(out);
                    }
                }
            }
            if let Some(out) = found {
                break out;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "home node {home} did not rewind\n{}",
                    pg.logs_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let rewound = restarted.elapsed();
        // Caught up: the leader sees home's data within CAUGHT_UP_BYTES of the primary's.
        let away_api = api_of(pg.cluster(), away)?;
        let caught_up = loop {
            let lag = get_status(&slow, away_api).await.and_then(|st| {
                st.peers
                    .iter()
                    .find(|p| p.id == home)
                    .and_then(|p| p.service.as_ref())
                    .and_then(|s| s.lag_bytes)
            });
            if lag.is_some_and(|l| l <= CAUGHT_UP_BYTES) {
                break restarted.elapsed();
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "home node {home} did not catch up\n{}",
                    pg.logs_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The failback, committed on its own after verify.
        let started = Instant::now();
        let mut accepted = false;
        let mut last = String::new();
        for _ in 0..100 {
            let r = slow
                .post(format!("http://{away_api}/v1/failback"))
                .body(json!({ "no_commit": false }).to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().as_u16() == 200 {
                accepted = true;
                break;
            }
            last = r.text().await.unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !accepted {
            return Err(format!("failback refused 100 times; last: {last}"));
        }
        // Find the operation and wait for its end.
        let (id, outcome, history) = loop {
            let h = get_history(&slow, away_api).await.unwrap_or_default();
            let id = h.iter().rev().find_map(|e| match &e.event {
                HistoryEvent::OperationStarted { id, to, .. } if *to == home => Some(*id),
                _ => None,
            });
            let ended = id.and_then(|id| {
                h.iter().rev().find_map(|e| match &e.event {
                    HistoryEvent::OperationEnded { id: i, outcome, .. } if *i == id => {
                        Some(outcome.clone())
                    }
                    _ => None,
                })
            });
            if let (Some(id), Some(o)) = (id, ended) {
                break (id, o, h);
            }
            if started.elapsed() > PG_TIMEOUT {
                return Err(format!("the failback did not end\n{}", pg.logs_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let total = started.elapsed();
        if outcome != Outcome::Committed {
            return Err(format!(
                "the failback ended {outcome} instead of committed\n{}",
                pg.logs_tail()
            ));
        }
        let mut phases = serde_json::Map::new();
        let mut write_pause_ms = None;
        let mut data = serde_json::Map::new();
        for e in &history {
            match &e.event {
                HistoryEvent::OperationStep {
                    id: i,
                    from_phase,
                    duration_ms,
                    write_pause_ms: w,
                    ..
                } if *i == id => {
                    phases.insert(from_phase.to_string(), json!(duration_ms));
                    if w.is_some() {
                        write_pause_ms = *w;
                    }
                }
                HistoryEvent::OperationData {
                    id: i,
                    action,
                    duration_ms,
                    detail,
                    ..
                } if *i == id => {
                    let key = match action {
                        HookKind::Snapshot => "snapshot",
                        HookKind::Verify => "verify",
                        HookKind::Promote => "promote",
                        _ => "other",
                    };
                    data.insert(
                        key.into(),
                        json!({ "duration_ms": duration_ms, "detail": detail }),
                    );
                }
                _ => {}
            }
        }
        let (copied, dir, copied_data, dir_data, rewind_ms) =
            rewind_figures(&account).unwrap_or((0.0, 0.0, 0.0, 0.0, 0.0));
        let verify_held_ms = data
            .get("verify")
            .and_then(|v| v["detail"].as_str())
            .and_then(|d| d.split("held ").nth(1))
            .and_then(|d| d.split(" ms").next())
            .and_then(|d| d.trim().parse::<f64>().ok());
        let rpo_zero = data
            .get("promote")
            .and_then(|v| v["detail"].as_str())
            .is_some_and(|d| d.contains("RPO 0 bytes"));
        eprintln!(
            "{n} rows behind: rewind copied {:.1} MiB of a {:.1} MiB data dir ({:.1} MiB of {:.1} MiB without WAL) in {rewind_ms:.0} ms; caught up {:.0} ms after the restart; failback {:.0} ms (phases {phases:?}), write pause {write_pause_ms:?} ms, RPO 0: {rpo_zero}, verify {:?} (writes held {verify_held_ms:?} ms)",
            copied / 1048576.0,
            dir / 1048576.0,
            copied_data / 1048576.0,
            dir_data / 1048576.0,
            ms(caught_up),
            ms(total),
            data.get("verify").map(|v| v["duration_ms"].clone()),
        );
        if !rpo_zero {
            return Err(format!(
                "the cut-over's final sync did not record RPO 0: {:?}",
                data.get("promote")
            ));
        }
        rounds.push(json!({
            "rows_behind": n,
            "rewind_account": account,
            "rewind_copied_bytes": copied,
            "data_dir_bytes": dir,
            "rewind_copied_without_wal_bytes": copied_data,
            "data_dir_without_wal_bytes": dir_data,
            "rewind_ms": rewind_ms,
            "restart_to_rewound_ms": ms(rewound),
            "restart_to_caught_up_ms": ms(caught_up),
            "failback_ms": ms(total),
            "phases_ms": phases,
            "write_pause_ms": write_pause_ms,
            "verify_writes_held_ms": verify_held_ms,
            "data_actions": data,
        }));
    }
    let acks = writers.finish().await;
    let check = check_rows(pg.pg_addr(home), SUPERUSER_PASSWORD, &acks).await?;
    println!(
        "acknowledged rows: {}, lost: {}",
        check.acknowledged,
        check.lost.len()
    );
    if !check.ok() {
        return Err(format!("the rows check failed: {check:?}"));
    }
    Ok(json!({
        "bench": "postgres-failback",
        "profile": profile,
        "base_rows": base_rows,
        "rounds": rounds,
        "acknowledged_rows": check.acknowledged,
        "lost_rows": check.lost.len(),
    }))
}
