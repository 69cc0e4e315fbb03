//! `false-positives`: a healthy cluster under CPU load (and optionally operations) must not fail over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use quorate::api::wire::NodeStatus;
use quorate::cluster::{HistoryEntry, HistoryEvent, Outcome};
use quorate_chaos::http::{cluster_client, get_history, get_status};
use quorate_chaos::launcher::{proc_usage, LocalCluster};

use crate::common::*;
use crate::failback::*;

/// Status poll period of `false-positives` (every node, every period).
pub(crate) const WATCH_POLL: Duration = Duration::from_millis(200);
/// Request timeout of the `false-positives` status polls: generous, so a slow answer under
/// CPU load counts as slow, not as a change.
pub(crate) const WATCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of the failback request while the leader still refuses it (home not yet
/// eligible in its own view), and the pause between them.
pub(crate) const FAILBACK_REQUEST_ATTEMPTS: u32 = 50;
pub(crate) const FAILBACK_REQUEST_RETRY: Duration = Duration::from_millis(100);

/// A change of leader or primary seen while watching.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Change {
    /// Seconds since the watch began.
    pub(crate) at_s: f64,
    /// The node whose status showed it.
    pub(crate) seen_on: u64,
    /// Term (leader changes) or epoch (primary changes).
    pub(crate) at: u64,
    pub(crate) from: Option<u64>,
    pub(crate) to: Option<u64>,
}

/// What the `false-positives` poller accumulates.
#[derive(Default)]
pub(crate) struct Watch {
    pub(crate) term: u64,
    pub(crate) leader: Option<u64>,
    pub(crate) epoch: u64,
    pub(crate) primary: Option<u64>,
    pub(crate) rounds: u64,
    pub(crate) polls: u64,
    pub(crate) unanswered: u64,
    pub(crate) leader_changes: Vec<Change>,
    pub(crate) primary_changes: Vec<Change>,
    /// Rounds where every node answered and none acted as primary.
    pub(crate) no_acting_rounds: u64,
    /// Rounds where more than one node acted as primary (safety: must be 0).
    pub(crate) multi_acting_rounds: u64,
}

impl Watch {
    pub(crate) fn observe(&mut self, at_s: f64, id: u64, st: &NodeStatus) {
        // A node behind the newest term/epoch seen reports old news: skip it.
        if st.term > self.term {
            self.term = st.term;
        }
        if st.term == self.term && st.leader_id.is_some() && st.leader_id != self.leader {
            self.leader_changes.push(Change {
                at_s,
                seen_on: id,
                at: st.term,
                from: self.leader,
                to: st.leader_id,
            });
            self.leader = st.leader_id;
        }
        if st.epoch > self.epoch {
            self.epoch = st.epoch.get();
        }
        if st.epoch == self.epoch && st.primary.is_some() && st.primary != self.primary {
            self.primary_changes.push(Change {
                at_s,
                seen_on: id,
                at: st.epoch.get(),
                from: self.primary,
                to: st.primary,
            });
            self.primary = st.primary;
        }
    }
}

/// What the `false-positives --operations` driver did, for telling explained role changes
/// from unexplained ones.
#[derive(Default, Serialize)]
pub(crate) struct OpsLog {
    pub(crate) switchovers: u64,
    pub(crate) failbacks: u64,
    /// (kill of the primary, failback committed) in unix ms: role changes in between are
    /// the failover and failback the driver caused.
    pub(crate) fault_windows: Vec<(u64, u64)>,
    pub(crate) errors: Vec<String>,
}

/// Slack around a driver fault window (history stamps are the leader's wall clock).
pub(crate) const EXPLAINED_SLACK_MS: u64 = 2_000;
/// Pause between two operations of the driver.
pub(crate) const OPS_GAP: Duration = Duration::from_secs(2);

/// Switchovers and supervised failbacks back to back until `end` (or `stop`): switchover
/// to the next node, then kill -9 the primary, restart it once the others failed over, and
/// fail back to it (auto commit). Every step is bounded by its timeout.
pub(crate) async fn drive_operations(
    c: Arc<tokio::sync::Mutex<LocalCluster>>,
    http: reqwest::Client,
    stop: Arc<AtomicBool>,
    end: Instant,
) -> OpsLog {
    let mut log = OpsLog::default();
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let mut g = c.lock().await;
        if let Err(e) = ops_cycle(&mut g, &http, &mut log).await {
            eprintln!("operations driver: {e}");
            log.errors.push(e);
            if log.errors.len() >= 20 {
                break;
            }
        }
        drop(g);
        tokio::time::sleep(OPS_GAP).await;
    }
    log
}

pub(crate) async fn ops_cycle(
    c: &mut LocalCluster,
    http: &reqwest::Client,
    log: &mut OpsLog,
) -> Result<(), String> {
    let ids = c.ids();
    let p = wait_primary(c, http, None, START_TIMEOUT)
        .await
        .ok_or("no primary")?;
    let pos = ids.iter().position(|i| *i == p).unwrap_or(0);
    let target = ids[(pos + 1) % ids.len()];
    let r = http
        .post(format!("http://{}/v1/switchover", api_of(c, p)?))
        .body(json!({"to": target}).to_string())
        .send()
        .await
        .map_err(|e| format!("switchover request: {e}"))?;
    if r.status().as_u16() != 200 {
        return Err(format!(
            "switchover to {target} refused: {}",
            r.text().await.unwrap_or_default()
        ));
    }
    let np = wait_primary(c, http, Some(p), START_TIMEOUT)
        .await
        .ok_or(format!("switchover {p} -> {target} did not finish"))?;
    wait_status(
        http,
        api_of(c, np)?,
        START_TIMEOUT,
        "switchover ended",
        |st| st.operation.is_none(),
    )
    .await?;
    log.switchovers += 1;
    tokio::time::sleep(OPS_GAP).await;

    // A failover the driver causes, then the supervised failback to the killed node.
    let home = np;
    let kill_at = unix_ms_now();
    c.kill9(home);
    let current = wait_primary(c, http, Some(home), FAILOVER_TIMEOUT)
        .await
        .ok_or(format!("no failover after killing node {home}"))?;
    let api = api_of(c, current)?;
    wait_failed_over(http, api, home).await?;
    c.start(home).map_err(|e| e.to_string())?;
    let max_lag = quorate::config::defaults::MAX_LAG_ON_FAILOVER;
    wait_status(http, api, SYNC_TIMEOUT, "home heard and in sync", |st| {
        home_lag(st, home).is_some_and(|l| l <= max_lag)
    })
    .await?;
    request_failback(http, api).await?;
    wait_status(
        http,
        api_of(c, home)?,
        quorate::cli::ops::OPERATION_WAIT,
        "failback committed",
        |st| st.primary == Some(home) && st.operation.is_none() && st.failed_over.is_none(),
    )
    .await?;
    log.failbacks += 1;
    log.fault_windows.push((kill_at, unix_ms_now()));
    Ok(())
}

/// Poll rounds between two history collections of `false-positives` (30 s at 200 ms): the
/// cluster keeps `MAX_HISTORY` entries, far more than 30 s of operations produce.
pub(crate) const HISTORY_EVERY_ROUNDS: u64 = 150;

/// Adds every history entry from `start_seq` on that any node answers with to `into`.
pub(crate) async fn collect_history(
    http: &reqwest::Client,
    apis: &[(u64, SocketAddr)],
    start_seq: u64,
    into: &mut std::collections::BTreeMap<u64, HistoryEntry>,
) {
    for (_, api) in apis {
        if let Ok(h) = get_history(http, *api).await {
            for e in h.into_iter().filter(|e| e.seq >= start_seq) {
                into.entry(e.seq).or_insert(e);
            }
            return;
        }
    }
}

/// Lease-lapse counters summed over daemon lifetimes: a counter that went down means the
/// daemon restarted, and what it had counted is kept.
#[derive(Default)]
pub(crate) struct LapseTotals {
    /// Per node: (counted in earlier lives, last seen in this life).
    pub(crate) nodes: std::collections::BTreeMap<u64, (LapseCount, LapseCount)>,
}

/// (lease lapses, of which healed).
pub(crate) type LapseCount = (u64, u64);

impl LapseTotals {
    pub(crate) fn observe(&mut self, id: u64, st: &NodeStatus) {
        let now = (st.lease_lapses, st.lease_lapses_healed);
        let (earlier, last) = self.nodes.entry(id).or_default();
        if now.0 < last.0 || now.1 < last.1 {
            earlier.0 += last.0;
            earlier.1 += last.1;
        }
        *last = now;
    }

    pub(crate) fn totals(&self) -> (u64, u64) {
        self.nodes
            .values()
            .fold((0, 0), |acc, (e, l)| (acc.0 + e.0 + l.0, acc.1 + e.1 + l.1))
    }
}

/// Waits until `api` reports the cluster failed over with `home` as its home.
pub(crate) async fn wait_failed_over(
    http: &reqwest::Client,
    api: SocketAddr,
    home: u64,
) -> Result<(), String> {
    wait_status(http, api, FAILOVER_TIMEOUT, "failed-over state", |st| {
        st.failed_over
            .as_ref()
            .and_then(|f| f.get("home"))
            .and_then(|h| h.as_u64())
            == Some(home)
    })
    .await
    .map(|_| ())
}

/// `POST /v1/failback` (auto commit) on `api`, retried while refused with 409 or 503 (home
/// not eligible yet, an election), at most `FAILBACK_REQUEST_ATTEMPTS` times: the refusals.
pub(crate) async fn request_failback(
    http: &reqwest::Client,
    api: SocketAddr,
) -> Result<u32, String> {
    let mut refusals = 0u32;
    loop {
        let r = http
            .post(format!("http://{api}/v1/failback"))
            .body(json!({"no_commit": false}).to_string())
            .send()
            .await
            .map_err(|e| format!("POST /v1/failback on {api}: {e}"))?;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        if status == 200 {
            return Ok(refusals);
        }
        refusals += 1;
        if status != 409 && status != 503 || refusals >= FAILBACK_REQUEST_ATTEMPTS {
            return Err(format!(
                "failback request refused ({refusals} times); last: HTTP {status}: {body}"
            ));
        }
        tokio::time::sleep(FAILBACK_REQUEST_RETRY).await;
    }
}

/// Role changes in `events` that neither an operation nor a driver fault explains: a
/// demotion or promotion outside every fault window whose reason is not the operation's
/// own (switchover, failback, undo, shutdown, drain).
pub(crate) fn unexplained_role_changes(
    events: &[HistoryEntry],
    windows: &[(u64, u64)],
) -> Vec<String> {
    use quorate::cluster::{DemoteReason as D, PromoteReason as P};
    let in_window = |t: u64| {
        windows
            .iter()
            .any(|(a, b)| t + EXPLAINED_SLACK_MS >= *a && t <= b.saturating_add(EXPLAINED_SLACK_MS))
    };
    events
        .iter()
        .filter(|e| match &e.event {
            HistoryEvent::Promoted { reason, .. } => {
                !matches!(reason, P::Switchover | P::Failback | P::FailbackUndo)
                    && !in_window(e.at_unix_ms)
            }
            HistoryEvent::Demoted { reason, .. } => {
                !matches!(
                    reason,
                    D::Switchover | D::Failback | D::FailbackUndo | D::Shutdown | D::Drained
                ) && !in_window(e.at_unix_ms)
            }
            HistoryEvent::OperationEnded {
                outcome: Outcome::Aborted { .. },
                ..
            } => true,
            _ => false,
        })
        .map(|e| format!("#{} {}", e.seq, event_text(e)))
        .collect()
}

pub(crate) async fn false_positives(
    duration: u64,
    cpu_load: bool,
    hogs: Option<usize>,
    nodes: usize,
    profile: &str,
    operations: bool,
) -> Result<serde_json::Value, String> {
    let (mut c, log) = marker_cluster(&cluster_spec(nodes, 0, profile))?;
    c.start_all().map_err(|e| e.to_string())?;
    let http = cluster_client(&c, WATCH_TIMEOUT)?;
    wait_primary(&c, &http, None, START_TIMEOUT)
        .await
        .ok_or(format!("no primary within {START_TIMEOUT:?}"))?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let apis: Vec<(u64, SocketAddr)> = c
        .ids()
        .into_iter()
        .map(|id| api_of(&c, id).map(|a| (id, a)))
        .collect::<Result<_, _>>()?;
    // Baseline: every node must answer, and the history so far is not counted.
    let mut w = Watch::default();
    let mut start_term = 0;
    let mut start_epoch = 0;
    for (id, api) in &apis {
        let st = get_status(&http, *api)
            .await
            .ok_or(format!("node {id} does not answer /v1/status"))?;
        w.observe(0.0, *id, &st);
        start_term = start_term.max(st.term);
        start_epoch = start_epoch.max(st.epoch.get());
    }
    w.leader_changes.clear();
    w.primary_changes.clear();
    let start_seq = get_history(&http, apis[0].1)
        .await?
        .iter()
        .map(|e| e.seq + 1)
        .max()
        .unwrap_or(0);
    let cores = hogs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let hogs = if cpu_load {
        Some(CpuHogs::start(cores)?)
    } else {
        None
    };
    let hog_cpu0: Vec<(u32, Duration)> = hogs
        .iter()
        .flat_map(|h| h.pids())
        .filter_map(|pid| proc_usage(pid).map(|(_, cpu)| (pid, cpu)))
        .collect();
    println!(
        "watching {nodes} nodes (profile {profile}) for {duration} s{}; status of every node every {} ms",
        if cpu_load {
            format!(", CPU load: {cores} busy-loop processes")
        } else {
            String::new()
        },
        WATCH_POLL.as_millis()
    );
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(duration);
    let c = Arc::new(tokio::sync::Mutex::new(c));
    let ops_stop = Arc::new(AtomicBool::new(false));
    let driver = operations.then(|| {
        tokio::spawn(drive_operations(
            c.clone(),
            http.clone(),
            ops_stop.clone(),
            end,
        ))
    });
    let mut tick = tokio::time::interval(WATCH_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The cluster keeps a bounded history: collect it as the watch goes, so a long run
    // with operations loses no entry; lapse counters restart with each daemon.
    let mut history: std::collections::BTreeMap<u64, HistoryEntry> = Default::default();
    let mut lapse_totals = LapseTotals::default();
    while Instant::now() < end {
        tick.tick().await;
        w.rounds += 1;
        if w.rounds % HISTORY_EVERY_ROUNDS == 0 {
            collect_history(&http, &apis, start_seq, &mut history).await;
        }
        let (mut answered, mut acting) = (0usize, 0usize);
        for (id, api) in &apis {
            w.polls += 1;
            match get_status(&http, *api).await {
                Some(st) => {
                    answered += 1;
                    acting += usize::from(st.acting_primary);
                    w.observe(t0.elapsed().as_secs_f64(), *id, &st);
                    lapse_totals.observe(*id, &st);
                }
                None => w.unanswered += 1,
            }
        }
        if answered == apis.len() && acting == 0 {
            w.no_acting_rounds += 1;
        }
        if acting > 1 {
            w.multi_acting_rounds += 1;
        }
    }
    ops_stop.store(true, Ordering::Relaxed);
    let ops = match driver {
        Some(d) => match tokio::time::timeout(SYNC_TIMEOUT, d).await {
            Ok(Ok(log)) => Some(log),
            Ok(Err(e)) => return Err(format!("operations driver: {e}")),
            Err(_) => return Err("operations driver did not stop in time".into()),
        },
        None => None,
    };
    let watched = t0.elapsed().as_secs_f64();
    let hog_cpu: Vec<f64> = hog_cpu0
        .iter()
        .filter_map(|(pid, cpu0)| {
            proc_usage(*pid)
                .map(|(_, cpu1)| cpu1.saturating_sub(*cpu0).as_secs_f64() / watched * 100.0)
        })
        .collect();
    drop(hogs);
    // Final view: the newest term and epoch any node reports.
    let (mut end_term, mut end_epoch) = (w.term, w.epoch);
    for (_, api) in &apis {
        if let Some(st) = get_status(&http, *api).await {
            end_term = end_term.max(st.term);
            end_epoch = end_epoch.max(st.epoch.get());
        }
    }
    collect_history(&http, &apis, start_seq, &mut history).await;
    let events: Vec<HistoryEntry> = history.into_values().collect();
    let promotions = events
        .iter()
        .filter(|e| matches!(e.event, HistoryEvent::Promoted { .. }))
        .count();
    let demotions = events
        .iter()
        .filter(|e| matches!(e.event, HistoryEvent::Demoted { .. }))
        .count();
    let anomalies = hook_anomalies(&log)?;
    for (id, api) in &apis {
        if let Some(st) = get_status(&http, *api).await {
            lapse_totals.observe(*id, &st);
        }
    }
    let (lapses, healed) = lapse_totals.totals();
    let unexplained = unexplained_role_changes(
        &events,
        ops.as_ref().map(|o| &o.fault_windows[..]).unwrap_or(&[]),
    );
    let elections = end_term - start_term;
    let epoch_changes = end_epoch - start_epoch;
    let spurious_failovers = promotions.max(usize::try_from(epoch_changes).unwrap_or(usize::MAX));

    println!(
        "watched {watched:.1} s: {} poll rounds, {} status polls, {} unanswered",
        w.rounds, w.polls, w.unanswered
    );
    if cpu_load {
        let shown: Vec<String> = hog_cpu.iter().map(|p| format!("{p:.0} %")).collect();
        println!("CPU hogs' own CPU (of one core each): {}", shown.join(", "));
    }
    println!("{:<44} {:>6}", "elections (term increments)", elections);
    println!(
        "{:<44} {:>6}",
        "leader changes seen",
        w.leader_changes.len()
    );
    println!("{:<44} {:>6}", "epoch changes (promotions)", epoch_changes);
    println!(
        "{:<44} {:>6}",
        "primary changes seen",
        w.primary_changes.len()
    );
    println!(
        "{:<44} {:>6}",
        "rounds with no acting primary", w.no_acting_rounds
    );
    println!(
        "{:<44} {:>6}",
        "rounds with two acting primaries", w.multi_acting_rounds
    );
    println!("{:<44} {:>6}", "hook-log anomalies", anomalies);
    println!(
        "{:<44} {:>6}",
        "history events during the watch",
        events.len()
    );
    for c in w.leader_changes.iter() {
        println!(
            "  leader {:?} → {:?} in term {} at {:.1} s (seen on node {})",
            c.from, c.to, c.at, c.at_s, c.seen_on
        );
    }
    for c in w.primary_changes.iter() {
        println!(
            "  primary {:?} → {:?} at epoch {} at {:.1} s (seen on node {})",
            c.from, c.to, c.at, c.at_s, c.seen_on
        );
    }
    for e in &events {
        println!("  history #{} term {:?}: {}", e.seq, e.term, event_text(e));
    }
    println!(
        "{:<44} {:>6}",
        "lease lapses (suspensions), healed",
        format!("{lapses}/{healed}")
    );
    if let Some(o) = &ops {
        println!(
            "operations: {} switchovers, {} supervised failbacks (after a kill -9), {} driver errors",
            o.switchovers,
            o.failbacks,
            o.errors.len()
        );
        println!(
            "unexplained role changes (demote/promote outside the driver's faults and operations, aborted operations): {} (goal 0)",
            unexplained.len()
        );
        for u in &unexplained {
            println!("  unexplained: {u}");
        }
    } else {
        println!(
            "spurious elections: {elections} (goal 0); spurious failovers: {spurious_failovers} (goal 0; {promotions} promotions, {demotions} demotions in history)"
        );
    }
    Ok(json!({
        "bench": "false-positives",
        "nodes": nodes,
        "profile": profile,
        "cpu_load": cpu_load,
        "cpu_hogs": if cpu_load { cores } else { 0 },
        "cpu_hog_percent": hog_cpu,
        "seconds": watched,
        "poll_rounds": w.rounds,
        "status_polls": w.polls,
        "unanswered_polls": w.unanswered,
        "elections": elections,
        "leader_changes": w.leader_changes,
        "epoch_changes": epoch_changes,
        "primary_changes": w.primary_changes,
        "no_acting_primary_rounds": w.no_acting_rounds,
        "multi_acting_primary_rounds": w.multi_acting_rounds,
        "hook_anomalies": anomalies,
        "history_events": events,
        "promotions": promotions,
        "demotions": demotions,
        "spurious_elections": elections,
        "spurious_failovers": spurious_failovers,
        "lease_lapses": lapses,
        "lease_lapses_healed": healed,
        "operations": ops,
        "unexplained_role_changes": unexplained,
    }))
}
