//! `failback`: supervised failback trials, the time of each phase and the write pause.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use quorate::api::wire::NodeStatus;
use quorate::cluster::{HistoryEvent, OperationKind, Outcome};
use quorate_chaos::http::{cluster_client, get_history, get_status};

use crate::common::*;
use crate::false_positives::*;

/// Concurrent writers of the `failback` load phase.
pub(crate) const FAILBACK_WRITERS: usize = 64;
/// Attempts per entry of the `failback` load phase before the run fails.
pub(crate) const WRITE_ATTEMPTS: u32 = 20;
/// Pause between two attempts of one write.
pub(crate) const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Status poll period while waiting for a state (membership, sync, commit).
pub(crate) const WAIT_POLL: Duration = Duration::from_millis(10);

/// Writes keys `fb/0..n` through `api` with `writers` concurrent clients; every write must be
/// acknowledged (bounded retries). Returns the load's duration.
pub(crate) async fn write_entries(
    http: &reqwest::Client,
    api: SocketAddr,
    n: u64,
    value_size: usize,
    writers: usize,
) -> Result<Duration, String> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let value = vec![b'v'; value_size];
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (http, next, failed, value) =
            (http.clone(), next.clone(), failed.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                let mut last = String::new();
                let mut acked = false;
                for _ in 0..WRITE_ATTEMPTS {
                    match http
                        .put(format!("http://{api}/v1/kv/fb/{i}"))
                        .body(value.clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 200 => {
                            acked = true;
                            break;
                        }
                        Ok(r) => last = format!("HTTP {}", r.status()),
                        Err(e) => last = e.to_string(),
                    }
                    tokio::time::sleep(WRITE_RETRY_PAUSE).await;
                }
                if !acked {
                    failed.store(true, Ordering::Relaxed);
                    return Err(format!(
                        "write fb/{i} on {api} was not acknowledged in {WRITE_ATTEMPTS} attempts; last: {last}"
                    ));
                }
            }
        }));
    }
    let mut first_error = None;
    for t in tasks {
        let r = t
            .await
            .map_err(|e| format!("a writer task failed: {e}"))
            .and_then(|r| r);
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(t0.elapsed()),
    }
}

/// Polls `api`'s status every `WAIT_POLL` until `done` holds; the error names `what`
/// and the last status seen.
pub(crate) async fn wait_status(
    http: &reqwest::Client,
    api: SocketAddr,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&NodeStatus) -> bool,
) -> Result<NodeStatus, String> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(st) = get_status(http, api).await {
            if done(&st) {
                return Ok(st);
            }
            last = Some(st);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    let last = last
        .map(|s| {
            format!(
                "primary {:?}, epoch {}, failed_over {:?}, operation {:?}, notes {:?}",
                s.primary, s.epoch, s.failed_over, s.operation, s.notes
            )
        })
        .unwrap_or_else(|| "no answer".into());
    Err(format!(
        "{what}: not within {timeout:?} (last status on {api}: {last})"
    ))
}

/// Time spent in one operation phase (leader-stamped wall clock).
#[derive(Serialize, Debug)]
pub(crate) struct PhaseTime {
    pub(crate) phase: String,
    pub(crate) ms: u64,
}

/// One failback trial's measurements.
#[derive(Serialize, Debug)]
pub(crate) struct FailbackSample {
    pub(crate) entries: u64,
    pub(crate) trial: usize,
    pub(crate) home: u64,
    pub(crate) failed_over_to: u64,
    pub(crate) load_seconds: f64,
    pub(crate) writes_per_s: f64,
    /// Entries home was behind when it was first heard after the restart.
    pub(crate) lag_at_first_sight: Option<u64>,
    pub(crate) restart_to_available_ms: f64,
    pub(crate) request_to_committed_ms: f64,
    pub(crate) restart_to_committed_ms: f64,
    /// Times the leader refused the failback request before accepting it.
    pub(crate) refusals: u32,
    /// Time in each phase, in order, from the leader-stamped history.
    pub(crate) phases: Vec<PhaseTime>,
    pub(crate) write_pause_ms: Option<u64>,
}

/// Home's lag behind the leader, when the leader (`st`) hears it and is replicating to it.
pub(crate) fn home_lag(st: &NodeStatus, home: u64) -> Option<u64> {
    let p = st.peers.iter().find(|p| p.id == home)?;
    if p.heartbeat != "alive" || p.health.as_deref() == Some("unhealthy") {
        return None;
    }
    p.matched_index.map(|m| st.last_log_index.saturating_sub(m))
}

pub(crate) async fn failback_trial(
    entries: u64,
    trial: usize,
    value_size: usize,
) -> Result<FailbackSample, String> {
    let (mut c, _log) = marker_cluster(&cluster_spec(3, 0, "lan"))?;
    c.start_all().map_err(|e| e.to_string())?;
    let http = cluster_client(&c, REQUEST_TIMEOUT)?;
    let probe = cluster_client(&c, PROBE_TIMEOUT)?;
    let home = wait_primary(&c, &probe, None, START_TIMEOUT)
        .await
        .ok_or(format!("no primary within {START_TIMEOUT:?}"))?;
    tokio::time::sleep(BETWEEN_TRIALS).await;
    c.kill9(home);
    let current = wait_primary(&c, &probe, Some(home), FAILOVER_TIMEOUT)
        .await
        .ok_or(format!(
            "no failover within {FAILOVER_TIMEOUT:?} after killing node {home}"
        ))?;
    let api = api_of(&c, current)?;
    let home_api = api_of(&c, home)?;
    wait_failed_over(&http, api, home).await?;
    eprintln!(
        "entries {entries} trial {trial}: node {home} killed, node {current} primary; writing"
    );
    let load = write_entries(&http, api, entries, value_size, FAILBACK_WRITERS).await?;
    let writes_per_s = entries as f64 / load.as_secs_f64();
    eprintln!(
        "  wrote {entries} in {:.1} s ({writes_per_s:.0}/s); restarting node {home}",
        load.as_secs_f64()
    );

    c.start(home).map_err(|e| e.to_string())?;
    let t_restart = Instant::now();
    let max_lag = quorate::config::defaults::MAX_LAG_ON_FAILOVER;
    let mut first_lag = None;
    wait_status(&probe, api, SYNC_TIMEOUT, "home heard and in sync", |st| {
        let lag = home_lag(st, home);
        if first_lag.is_none() {
            first_lag = lag;
        }
        lag.is_some_and(|l| l <= max_lag)
    })
    .await?;
    let available = t_restart.elapsed();

    let t_request = Instant::now();
    let refusals = request_failback(&http, api).await?;
    wait_status(
        &probe,
        home_api,
        quorate::cli::ops::OPERATION_WAIT,
        "failback committed",
        |st| {
            st.operation.is_none()
                && st.failed_over.is_none()
                && st.primary == Some(home)
                && st.acting_primary
        },
    )
    .await?;
    let committed = t_request.elapsed();
    let end_to_end = t_restart.elapsed();

    // The operation's own record: it must have ended Committed; phase times for the table.
    let history = get_history(&http, home_api).await?;
    let op_id = history
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            HistoryEvent::OperationStarted {
                id,
                kind: OperationKind::Failback,
                ..
            } => Some(*id),
            _ => None,
        })
        .ok_or("the history has no failback operation")?;
    // Time in each phase, in order; the last phase ends with the operation.
    let mut phases: Vec<PhaseTime> = Vec::new();
    let mut phase_since: Option<(String, u64)> = None;
    let mut write_pause_ms = None;
    let mut outcome = None;
    for e in &history {
        match &e.event {
            HistoryEvent::OperationStep {
                id,
                from_phase,
                to_phase,
                duration_ms,
                write_pause_ms: pause,
                ..
            } if *id == op_id => {
                phases.push(PhaseTime {
                    phase: from_phase.to_string(),
                    ms: *duration_ms,
                });
                phase_since = Some((to_phase.to_string(), e.at_unix_ms));
                if pause.is_some() {
                    write_pause_ms = *pause;
                }
            }
            HistoryEvent::OperationEnded {
                id,
                outcome: o,
                write_pause_ms: pause,
                ..
            } if *id == op_id => {
                outcome = Some(o.clone());
                if let Some((phase, since)) = phase_since.take() {
                    phases.push(PhaseTime {
                        phase,
                        ms: e.at_unix_ms.saturating_sub(since),
                    });
                }
                if pause.is_some() {
                    write_pause_ms = *pause;
                }
            }
            _ => {}
        }
    }
    if outcome != Some(Outcome::Committed) {
        return Err(format!("failback {op_id} ended {outcome:?}, not committed"));
    }
    Ok(FailbackSample {
        entries,
        trial,
        home,
        failed_over_to: current,
        load_seconds: load.as_secs_f64(),
        writes_per_s,
        lag_at_first_sight: first_lag,
        restart_to_available_ms: ms(available),
        request_to_committed_ms: ms(committed),
        restart_to_committed_ms: ms(end_to_end),
        refusals,
        phases,
        write_pause_ms,
    })
}

pub(crate) async fn failback(
    entries: &str,
    trials: usize,
    value_size: usize,
) -> Result<serde_json::Value, String> {
    let counts: Vec<u64> = parse_list(entries, "entries")?;
    let mut samples = Vec::new();
    for &n in &counts {
        for trial in 0..trials {
            samples.push(failback_trial(n, trial, value_size).await?);
        }
    }
    println!(
        "failback after N writes on the failed-over primary (3 nodes, lan, {FAILBACK_WRITERS} writers, {value_size}-byte values, failback commit = auto):"
    );
    println!(
        "{:>8} {:>5} {:>10} {:>11} {:>18} {:>20} {:>20}",
        "entries",
        "trial",
        "writes/s",
        "lag seen",
        "restart→available",
        "request→committed",
        "restart→committed"
    );
    for s in &samples {
        println!(
            "{:>8} {:>5} {:>10.0} {:>11} {:>15.0} ms {:>17.0} ms {:>17.0} ms",
            s.entries,
            s.trial,
            s.writes_per_s,
            s.lag_at_first_sight
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            s.restart_to_available_ms,
            s.request_to_committed_ms,
            s.restart_to_committed_ms
        );
    }
    for s in &samples {
        let phases: Vec<String> = s
            .phases
            .iter()
            .map(|p| format!("{} {} ms", p.phase, p.ms))
            .collect();
        println!(
            "  {} entries, trial {}: phases {}; write pause {}; refused {} times before accepted",
            s.entries,
            s.trial,
            phases.join(", "),
            s.write_pause_ms
                .map(|p| format!("{p} ms"))
                .unwrap_or_else(|| "-".into()),
            s.refusals
        );
    }
    Ok(json!({
        "bench": "failback",
        "value_size": value_size,
        "writers": FAILBACK_WRITERS,
        "max_lag_on_failover": quorate::config::defaults::MAX_LAG_ON_FAILOVER,
        "runs": samples,
    }))
}
