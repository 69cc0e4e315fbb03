//! `scale`: idle cost and failover phases as the voter count grows.

use std::time::Duration;

use serde_json::json;

use quorate_chaos::http::cluster_client;
use quorate_chaos::stats::summarize;

use crate::common::*;
use crate::failback::*;
use crate::failover::*;
use crate::idle::*;

/// Goal of `scale`: failover median at the largest size at most this much above the smallest.
pub(crate) const SCALE_GROWTH_GOAL_PERCENT: f64 = 20.0;
/// Smallest voter count `scale` accepts: a failover needs a quorum after losing one voter.
pub(crate) const MIN_SCALE_VOTERS: usize = 3;

/// `scale`: for each voter count, the idle cost per node and the failover phases.
pub(crate) async fn scale(
    sizes: &str,
    learners: usize,
    trials: usize,
    idle_duration: u64,
    profile: &str,
) -> Result<serde_json::Value, String> {
    let sizes: Vec<usize> = parse_list(sizes, "nodes")?;
    if let Some(n) = sizes.iter().find(|n| **n < MIN_SCALE_VOTERS) {
        return Err(format!(
            "--nodes {n}: every size needs at least {MIN_SCALE_VOTERS} voters (a failover needs a quorum after losing the primary)"
        ));
    }
    if trials == 0 {
        return Err("--trials must be at least 1".into());
    }
    let mut results = Vec::new();
    // (voters, failover median, p99, mean RSS, mean CPU %, mean hb/s out, mean hb B/s out)
    let mut summary = Vec::new();
    for &voters in &sizes {
        println!("\n== {voters} voters + {learners} learners, profile {profile} ==");
        let (mut c, log) = marker_cluster(&cluster_spec(voters, learners, profile))?;
        c.start_all().map_err(|e| e.to_string())?;
        let http = cluster_client(&c, PROBE_TIMEOUT)?;
        wait_primary(&c, &http, None, START_TIMEOUT)
            .await
            .ok_or(format!(
                "{voters} voters: no primary within {START_TIMEOUT:?}"
            ))?;
        if learners > 0 {
            // The leader adds configured learners after the election: measure with them in.
            wait_status(
                &http,
                api_of(&c, 1)?,
                START_TIMEOUT,
                "learners joined",
                |st| st.membership.learners.len() >= learners,
            )
            .await?;
        }
        tokio::time::sleep(IDLE_SETTLE).await;
        let (secs, rows) = measure_idle(&c, Duration::from_secs(idle_duration)).await?;
        println!("idle cost per node over {secs:.1} s:");
        print_idle(&rows);
        let run = failover_trials(&mut c, &log, trials).await?;
        // Every node of this size stops here, before the next size starts.
        drop(c);
        println!("failover, {trials} trials (ms after kill -9):");
        let phases = run.print();
        println!(
            "hook-log anomalies (two primaries / epoch reuse): {}",
            run.anomalies
        );
        let fo = summarize(&run.write);
        summary.push((
            voters,
            fo.median,
            fo.p99,
            mean(rows.iter().map(|r| r.rss_mib)),
            mean(rows.iter().map(|r| r.cpu_percent)),
            mean(rows.iter().map(|r| r.heartbeats_sent_per_s)),
            mean(rows.iter().map(|r| r.heartbeat_bytes_sent_per_s)),
        ));
        results.push(json!({
            "voters": voters,
            "learners": learners,
            "idle_seconds": secs,
            "idle_per_node": rows,
            "failover_phases_ms": phases,
            "failover_first_write_ms": fo,
            "failover_first_write_samples_ms": run.write,
            "anomalies": run.anomalies,
        }));
    }
    println!("\nscale summary (profile {profile}, {learners} learners, {trials} failover trials, {idle_duration} s idle; per-node columns are means):");
    println!(
        "{:>7} {:>13} {:>10} {:>9} {:>7} {:>10} {:>11}",
        "voters", "failover p50", "p99 ms", "RSS MiB", "CPU %", "hb out/s", "hb B/s out"
    );
    for (n, med, p99, rss, cpu, hb, hbb) in &summary {
        println!("{n:>7} {med:>10.1} ms {p99:>10.1} {rss:>9.1} {cpu:>7.2} {hb:>10.1} {hbb:>11.0}");
    }
    let smallest = summary.iter().min_by_key(|s| s.0);
    let largest = summary.iter().max_by_key(|s| s.0);
    let growth = match (smallest, largest) {
        (Some(a), Some(b)) if a.0 != b.0 => Some((a.0, b.0, (b.1 / a.1 - 1.0) * 100.0)),
        _ => None,
    };
    let growth_json = match growth {
        Some((a, b, g)) => {
            let verdict = if !g.is_finite() {
                "n/a (missing samples)"
            } else if g <= SCALE_GROWTH_GOAL_PERCENT {
                "met"
            } else {
                "MISSED"
            };
            println!(
                "failover median growth {a}→{b}: {g:+.1} % (goal ≤ {SCALE_GROWTH_GOAL_PERCENT} %: {verdict})"
            );
            json!({"from_voters": a, "to_voters": b, "percent": g, "goal_percent": SCALE_GROWTH_GOAL_PERCENT, "met": g.is_finite() && g <= SCALE_GROWTH_GOAL_PERCENT})
        }
        None => {
            println!("failover median growth: n/a (give at least two sizes)");
            serde_json::Value::Null
        }
    };
    Ok(json!({
        "bench": "scale",
        "profile": profile,
        "learners": learners,
        "trials": trials,
        "idle_duration_s": idle_duration,
        "sizes": results,
        "failover_median_growth": growth_json,
    }))
}
