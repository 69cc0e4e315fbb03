//! `failover`: kill -9 the primary and time every phase until the first acknowledged write.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use quorate_chaos::http::{cluster_client, get_status, status_code};
use quorate_chaos::launcher::LocalCluster;
use quorate_chaos::stats::summarize;

use crate::common::*;

/// When each failover phase was first seen, by any survivor, after the kill.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) detect: Option<Duration>,
    pub(crate) elect: Option<Duration>,
    /// First `/primary` 200 and the node that gave it.
    pub(crate) serve: Option<(Duration, u64)>,
    pub(crate) write: Option<Duration>,
}

impl Seen {
    pub(crate) fn done(&self) -> bool {
        self.detect.is_some()
            && self.elect.is_some()
            && self.serve.is_some()
            && self.write.is_some()
    }
}

/// What one survivor's probe needs to know about the trial.
#[derive(Clone)]
pub(crate) struct Probe {
    pub(crate) http: reqwest::Client,
    pub(crate) id: u64,
    pub(crate) api: SocketAddr,
    pub(crate) killed: u64,
    pub(crate) old_term: u64,
    pub(crate) trial: usize,
    pub(crate) t0: Instant,
    pub(crate) deadline: Instant,
    pub(crate) seen: Arc<Mutex<Seen>>,
}

pub(crate) fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Probes one survivor until every phase was seen (by any survivor) or the deadline: its
/// status (detection, election), `/primary`, and a KV write. Every survivor has its own
/// probe running concurrently, so the timing resolution does not degrade with cluster size.
pub(crate) async fn probe_failover(p: Probe) {
    let mut key = 0u64;
    while Instant::now() < p.deadline {
        let (need_status, need_serve, need_write) = {
            let s = lock(&p.seen);
            if s.done() {
                return;
            }
            (
                s.detect.is_none() || s.elect.is_none(),
                s.serve.is_none(),
                s.write.is_none(),
            )
        };
        if need_status {
            if let Some(st) = get_status(&p.http, p.api).await {
                let at = p.t0.elapsed();
                let mut s = lock(&p.seen);
                if s.detect.is_none()
                    && st
                        .peers
                        .iter()
                        .any(|peer| peer.id == p.killed && peer.heartbeat != "alive")
                {
                    s.detect = Some(at);
                }
                if s.elect.is_none()
                    && st.term > p.old_term
                    && st.leader_id.is_some()
                    && st.leader_id != Some(p.killed)
                {
                    s.elect = Some(at);
                }
            }
        }
        if need_serve
            && status_code(&p.http, &format!("http://{}/primary", p.api)).await == Some(200)
        {
            let at = p.t0.elapsed();
            lock(&p.seen).serve.get_or_insert((at, p.id));
        }
        if need_write {
            key += 1;
            let r = p
                .http
                .put(format!(
                    "http://{}/v1/kv/bench/failover/{}/{}/{key}",
                    p.api, p.trial, p.id
                ))
                .body("x")
                .send()
                .await;
            if r.is_ok_and(|r| r.status().as_u16() == 200) {
                let at = p.t0.elapsed();
                lock(&p.seen).write.get_or_insert(at);
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Samples (ms after kill -9) of every failover phase, one per trial (NaN: not seen).
#[derive(Default)]
pub(crate) struct FailoverRun {
    pub(crate) detect: Vec<f64>,
    pub(crate) elect: Vec<f64>,
    pub(crate) hook: Vec<f64>,
    pub(crate) serve: Vec<f64>,
    pub(crate) write: Vec<f64>,
    pub(crate) anomalies: usize,
}

impl FailoverRun {
    pub(crate) fn rows(&self) -> [(&'static str, &Vec<f64>); 5] {
        [
            ("detection (suspect)", &self.detect),
            ("election", &self.elect),
            ("promote hook start", &self.hook),
            ("/primary 200", &self.serve),
            ("first acked write", &self.write),
        ]
    }

    /// Prints one summary line per phase; returns them as JSON.
    pub(crate) fn print(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (name, v) in self.rows() {
            let s = summarize(v);
            print_summary(name, "ms", &s);
            out.insert(name.to_string(), json!(s));
        }
        out
    }
}

/// `trials` times: kill -9 the primary of a started marker cluster, time each phase until
/// the first acknowledged write, restart the killed node.
pub(crate) async fn failover_trials(
    c: &mut LocalCluster,
    log: &Path,
    trials: usize,
) -> Result<FailoverRun, String> {
    let http = cluster_client(c, PROBE_TIMEOUT)?;
    let mut primary = wait_primary(c, &http, None, START_TIMEOUT)
        .await
        .ok_or(format!("no primary within {START_TIMEOUT:?}"))?;
    let mut run = FailoverRun::default();
    for trial in 0..trials {
        tokio::time::sleep(BETWEEN_TRIALS).await;
        let survivors: Vec<u64> = c.ids().into_iter().filter(|i| *i != primary).collect();
        let first = *survivors
            .first()
            .ok_or("a failover needs at least two nodes")?;
        let old_term = get_status(&http, api_of(c, first)?)
            .await
            .map(|s| s.term)
            .unwrap_or(0);
        let kill_ns = mono_ns();
        let t0 = Instant::now();
        c.kill9(primary);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut probes = Vec::new();
        for id in &survivors {
            probes.push(tokio::spawn(probe_failover(Probe {
                http: http.clone(),
                id: *id,
                api: api_of(c, *id)?,
                killed: primary,
                old_term,
                trial,
                t0,
                deadline: t0 + FAILOVER_TIMEOUT,
                seen: seen.clone(),
            })));
        }
        for p in probes {
            p.await
                .map_err(|e| format!("a failover probe task failed: {e}"))?;
        }
        let (detect, elect, serve, write) = {
            let s = lock(&seen);
            (s.detect, s.elect, s.serve, s.write)
        };
        let at = |d: Option<Duration>| d.map(ms).unwrap_or(f64::NAN);
        // The promote hook's own start time, on the same monotonic clock as the kill.
        let hook = read_hook_log(log)?
            .iter()
            .find(|e| e.event == "promote" && e.at_ns > kill_ns)
            .map(|e| (e.at_ns - kill_ns) as f64 / 1e6)
            .unwrap_or(f64::NAN);
        run.detect.push(at(detect));
        run.elect.push(at(elect));
        run.hook.push(hook);
        run.serve.push(at(serve.map(|(d, _)| d)));
        run.write.push(at(write));
        eprintln!(
            "trial {trial}: detect {:.0} elect {:.0} promote-hook {hook:.0} /primary {:.0} write {:.0} ms",
            at(detect),
            at(elect),
            at(serve.map(|(d, _)| d)),
            at(write)
        );
        c.start(primary).map_err(|e| e.to_string())?;
        primary = serve
            .map(|(_, id)| id)
            .ok_or(format!("no new primary within {FAILOVER_TIMEOUT:?}"))?;
    }
    run.anomalies = hook_anomalies(log)?;
    Ok(run)
}

pub(crate) async fn failover(
    nodes: usize,
    profile: &str,
    trials: usize,
) -> Result<serde_json::Value, String> {
    let (mut c, log) = marker_cluster(&cluster_spec(nodes, 0, profile))?;
    c.start_all().map_err(|e| e.to_string())?;
    let run = failover_trials(&mut c, &log, trials).await?;
    println!("failover, {nodes} nodes, profile {profile}, {trials} trials (ms after kill -9):");
    let phases = run.print();
    println!(
        "hook-log anomalies (two primaries / epoch reuse): {}",
        run.anomalies
    );
    Ok(
        json!({ "bench": "failover", "nodes": nodes, "profile": profile, "trials": trials, "phases_ms": phases, "anomalies": run.anomalies }),
    )
}
