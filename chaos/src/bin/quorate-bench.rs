//! `quorate-bench`: one command for every performance claim. Each subcommand prints a table
//! and writes JSON (`--out FILE`). Real processes on 127.0.0.1; nothing here is a test.
//!
//! `QUORATE_BENCH_SECRET=1` gives every bench cluster a cluster secret (sealed heartbeats,
//! Noise-encrypted Raft), to measure the cost of encryption against the plaintext default.
//!
//! Every process a subcommand starts (quorate nodes, CPU hogs) is owned by a guard that kills
//! it by PID when the subcommand returns, on success and on error alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::json;

use quorate::api::wire::NodeStatus;
use quorate::cluster::{HistoryEntry, HistoryEvent, OperationKind, Outcome};
use quorate_chaos::launcher::{proc_usage, ClusterSpec, LocalCluster};
use quorate_chaos::stats::{summarize, Summary};

/// How long a fresh cluster may take to elect a leader / a primary.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failover trial waits for every phase after the kill.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between failover trials (the restarted node rejoins and catches up).
const BETWEEN_TRIALS: Duration = Duration::from_secs(2);
/// Request timeout of the failover probes: short, so a dead node costs little.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Pause between two probes of one node while a failover is timed.
const PROBE_INTERVAL: Duration = Duration::from_millis(2);
/// Wait after the first leader before measuring idle cost (startup work settles).
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// Status poll period of `false-positives` (every node, every period).
const WATCH_POLL: Duration = Duration::from_millis(200);
/// Request timeout of the `false-positives` status polls: generous, so a slow answer under
/// CPU load counts as slow, not as a change.
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Request timeout of KV writes and control requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent writers of the `failback` load phase.
const FAILBACK_WRITERS: usize = 64;
/// Attempts per entry of the `failback` load phase before the run fails.
const WRITE_ATTEMPTS: u32 = 20;
/// Pause between two attempts of one write.
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long the restarted home may take to be heard and in sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// Status poll period while waiting for a state (membership, sync, commit).
const WAIT_POLL: Duration = Duration::from_millis(10);
/// Attempts of the failback request while the leader still refuses it (home not yet
/// eligible in its own view), and the pause between them.
const FAILBACK_REQUEST_ATTEMPTS: u32 = 50;
const FAILBACK_REQUEST_RETRY: Duration = Duration::from_millis(100);
/// Goal of `scale`: failover median at the largest size at most this much above the smallest.
const SCALE_GROWTH_GOAL_PERCENT: f64 = 20.0;
/// Smallest voter count `scale` accepts: a failover needs a quorum after losing one voter.
const MIN_SCALE_VOTERS: usize = 3;
/// Hidden subcommand the CPU hogs run (`quorate-bench cpu-hog`).
const HOG_SUBCOMMAND: &str = "cpu-hog";
/// Environment variable naming the hog's parent PID: a hog whose parent is gone exits.
const HOG_PARENT_ENV: &str = "QUORATE_BENCH_HOG_PARENT";

#[derive(Parser)]
#[command(
    name = "quorate-bench",
    about = "Benchmarks for quorate (real processes on 127.0.0.1)"
)]
struct Cli {
    /// Write the results as JSON to this file too.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start N fresh nodes and time the first leader election (trials times).
    Election {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 10)]
        trials: usize,
        #[arg(long, default_value = "lan")]
        profile: String,
    },
    /// kill -9 the primary; time each phase until the first acknowledged write on the new one.
    Failover {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "lan")]
        profile: String,
        #[arg(long, default_value_t = 20)]
        trials: usize,
    },
    /// Acknowledged KV writes/s and latency at several client counts; read rates.
    Kv {
        /// Comma-separated client counts.
        #[arg(long, default_value = "1,16,64")]
        clients: String,
        /// Seconds per client count.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 128)]
        value_size: usize,
    },
    /// Planned switchovers with a concurrent writer: the write-unavailability window.
    Switchover {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Writer rate (writes/s) during the measurement.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
    },
    /// Idle cost per node: RSS, CPU % and heartbeat traffic over a window.
    Idle {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Measurement window in seconds.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        #[arg(long, default_value = "lan")]
        profile: String,
    },
    /// Failover time and idle cost per node at several cluster sizes.
    Scale {
        /// Comma-separated voter counts (each at least 3).
        #[arg(long, default_value = "3,5,7")]
        nodes: String,
        /// Learners (non-voting members) added to every size.
        #[arg(long, default_value_t = 0)]
        learners: usize,
        /// Failover trials per size.
        #[arg(long, default_value_t = 10)]
        trials: usize,
        /// Idle measurement window per size, in seconds.
        #[arg(long, default_value_t = 20)]
        idle_duration: u64,
        #[arg(long, default_value = "lan")]
        profile: String,
    },
    /// Watch a healthy cluster (optionally under CPU load) for elections and failovers that
    /// should not happen.
    FalsePositives {
        /// Watch window in seconds.
        #[arg(long, default_value_t = 300)]
        duration: u64,
        /// Run one busy-loop process per core during the watch.
        #[arg(long)]
        cpu_load: bool,
        /// Busy-loop processes for --cpu-load (default: one per core; 1 loads one core).
        #[arg(long)]
        hogs: Option<usize>,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "lan")]
        profile: String,
        /// Also run switchovers and supervised failbacks (after a kill -9 of the primary)
        /// back to back during the watch; role changes they do not explain are counted as
        /// unexplained (goal 0).
        #[arg(long)]
        operations: bool,
    },
    /// Failback after N writes made while home was down: time to sync, to commit, end to end.
    Failback {
        /// Comma-separated entry counts written while home is down.
        #[arg(long, default_value = "10000,100000")]
        entries: String,
        /// Trials per entry count (a fresh cluster each).
        #[arg(long, default_value_t = 1)]
        trials: usize,
        #[arg(long, default_value_t = 128)]
        value_size: usize,
    },
    /// Internal: spin on one core until killed (the load of `false-positives --cpu-load`).
    #[command(name = HOG_SUBCOMMAND, hide = true)]
    CpuHog,
}

fn print_summary(name: &str, unit: &str, s: &Summary) {
    println!(
        "{name:<28} n={:<3} min={:>8.1}{unit} median={:>8.1}{unit} p99={:>8.1}{unit} max={:>8.1}{unit}",
        s.count, s.min, s.median, s.p99, s.max
    );
}

/// A comma-separated list of numbers (`3,5,7`).
fn parse_list<T: std::str::FromStr>(text: &str, what: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .map(|x| {
            x.trim().parse().map_err(|_| {
                format!("bad {what} {x:?}: give comma-separated numbers, e.g. --{what} 3,5,7")
            })
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A cluster of `voters` voters then `learners` learners (ids in that order).
fn cluster_spec(voters: usize, learners: usize, profile: &str) -> ClusterSpec {
    let mut spec = ClusterSpec::voters(voters);
    spec.roles
        .extend(std::iter::repeat_n("learner".to_string(), learners));
    spec.profile = profile.to_string();
    spec
}

/// An HTTP client carrying the cluster's admin token.
fn http_client(c: &LocalCluster, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .default_headers(c.auth_headers())
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

fn api_of(c: &LocalCluster, id: u64) -> Result<SocketAddr, String> {
    c.node(id)
        .map(|n| n.member.api)
        .ok_or_else(|| format!("node {id} is not a member of the bench cluster"))
}

async fn get_status(http: &reqwest::Client, api: SocketAddr) -> Option<NodeStatus> {
    let r = http
        .get(format!("http://{api}/v1/status"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

#[derive(serde::Deserialize)]
struct HistoryDoc {
    entries: Vec<HistoryEntry>,
}

async fn get_history(http: &reqwest::Client, api: SocketAddr) -> Result<Vec<HistoryEntry>, String> {
    let r = http
        .get(format!("http://{api}/v1/history"))
        .send()
        .await
        .map_err(|e| format!("GET /v1/history on {api}: {e}"))?;
    let status = r.status();
    if !status.is_success() {
        return Err(format!("GET /v1/history on {api}: HTTP {status}"));
    }
    r.json::<HistoryDoc>()
        .await
        .map(|d| d.entries)
        .map_err(|e| format!("GET /v1/history on {api}: unreadable answer: {e}"))
}

/// One history event as compact JSON, for listings.
fn event_text(e: &HistoryEntry) -> String {
    serde_json::to_string(&e.event).unwrap_or_else(|_| format!("{:?}", e.event))
}

async fn election(nodes: usize, trials: usize, profile: &str) -> Result<serde_json::Value, String> {
    let mut samples = Vec::new();
    for trial in 0..trials {
        let mut c =
            LocalCluster::create(&cluster_spec(nodes, 0, profile)).map_err(|e| e.to_string())?;
        with_secret_if_asked(&c)?;
        let t0 = Instant::now();
        c.start_all().map_err(|e| e.to_string())?;
        match c.wait_agreed_leader(START_TIMEOUT).await {
            Some(_) => samples.push(ms(t0.elapsed())),
            None => eprintln!("trial {trial}: no leader within {START_TIMEOUT:?}"),
        }
    }
    let s = summarize(&samples);
    print_summary("start → agreed leader", "ms", &s);
    Ok(
        json!({ "bench": "election", "nodes": nodes, "profile": profile, "ms": s, "samples_ms": samples }),
    )
}

/// Idle cost of one node over a measurement window.
#[derive(Serialize, Clone, Debug)]
struct IdleRow {
    node: u64,
    role: String,
    rss_mib: f64,
    /// Percent of one core.
    cpu_percent: f64,
    heartbeats_sent_per_s: f64,
    heartbeats_received_per_s: f64,
    heartbeat_bytes_sent_per_s: f64,
    heartbeat_bytes_received_per_s: f64,
}

/// RSS, CPU and heartbeat traffic of every running node over `window`; returns the exact
/// window length in seconds and one row per node.
async fn measure_idle(c: &LocalCluster, window: Duration) -> Result<(f64, Vec<IdleRow>), String> {
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

fn print_idle(rows: &[IdleRow]) {
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

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

async fn idle(nodes: usize, duration: u64, profile: &str) -> Result<serde_json::Value, String> {
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

/// With `QUORATE_BENCH_SECRET=1` in the environment, give the cluster a secret.
fn with_secret_if_asked(c: &LocalCluster) -> Result<(), String> {
    if std::env::var("QUORATE_BENCH_SECRET").is_ok_and(|v| v == "1") {
        c.enable_secret().map_err(|e| e.to_string())?;
    }
    Ok(())
}

const MARKER: &str = include_str!("../../../cluster-config/local/hooks/marker.sh");

fn mono_ns() -> u64 {
    quorate::resource::monotonic_ns()
}

/// A cluster whose hooks are the marker script, logging to `<dir>/hooks.log`.
fn marker_cluster(spec: &ClusterSpec) -> Result<(LocalCluster, PathBuf), String> {
    let mut c = LocalCluster::create(spec).map_err(|e| e.to_string())?;
    with_secret_if_asked(&c)?;
    let hook = c.path().join("marker.sh");
    std::fs::write(&hook, MARKER).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    let mut extra = String::from("[resource]\n");
    for h in ["promote", "demote", "fence", "rejoin"] {
        extra.push_str(&format!("{h} = \"{}\"\n", hook.display()));
    }
    extra.push_str("fencing = \"best-effort\"\n");
    c.append_config(&extra).map_err(|e| e.to_string())?;
    let log = c.path().join("hooks.log");
    c.env
        .push(("QUORATE_MARKER_LOG".into(), log.display().to_string()));
    c.env.push(("QUORATE_LOG".into(), "warn".into()));
    Ok((c, log))
}

/// The marker hooks' log so far (empty before the first hook ran).
fn read_hook_log(log: &Path) -> Result<Vec<quorate_chaos::hooklog::HookEvent>, String> {
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read the hook log {}: {e}", log.display())),
    };
    quorate_chaos::hooklog::parse(&text).map_err(|e| e.to_string())
}

/// Hook-log anomalies (two primaries at once, an epoch reused) over the whole run.
fn hook_anomalies(log: &Path) -> Result<usize, String> {
    Ok(quorate_chaos::hooklog::check_exclusive(&read_hook_log(log)?).len())
}

async fn http_status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn wait_primary(
    c: &LocalCluster,
    http: &reqwest::Client,
    exclude: Option<u64>,
    timeout: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for id in c.ids() {
            if Some(id) == exclude || c.pid(id).is_none() {
                continue;
            }
            let api = c.node(id)?.member.api;
            if http_status(http, &format!("http://{api}/primary")).await == Some(200) {
                return Some(id);
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    None
}

/// When each failover phase was first seen, by any survivor, after the kill.
#[derive(Default)]
struct Seen {
    detect: Option<Duration>,
    elect: Option<Duration>,
    /// First `/primary` 200 and the node that gave it.
    serve: Option<(Duration, u64)>,
    write: Option<Duration>,
}

impl Seen {
    fn done(&self) -> bool {
        self.detect.is_some()
            && self.elect.is_some()
            && self.serve.is_some()
            && self.write.is_some()
    }
}

/// What one survivor's probe needs to know about the trial.
#[derive(Clone)]
struct Probe {
    http: reqwest::Client,
    id: u64,
    api: SocketAddr,
    killed: u64,
    old_term: u64,
    trial: usize,
    t0: Instant,
    deadline: Instant,
    seen: Arc<Mutex<Seen>>,
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Probes one survivor until every phase was seen (by any survivor) or the deadline: its
/// status (detection, election), `/primary`, and a KV write. Every survivor has its own
/// probe running concurrently, so the timing resolution does not degrade with cluster size.
async fn probe_failover(p: Probe) {
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
            && http_status(&p.http, &format!("http://{}/primary", p.api)).await == Some(200)
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
struct FailoverRun {
    detect: Vec<f64>,
    elect: Vec<f64>,
    hook: Vec<f64>,
    serve: Vec<f64>,
    write: Vec<f64>,
    anomalies: usize,
}

impl FailoverRun {
    fn rows(&self) -> [(&'static str, &Vec<f64>); 5] {
        [
            ("detection (suspect)", &self.detect),
            ("election", &self.elect),
            ("promote hook start", &self.hook),
            ("/primary 200", &self.serve),
            ("first acked write", &self.write),
        ]
    }

    /// Prints one summary line per phase; returns them as JSON.
    fn print(&self) -> serde_json::Map<String, serde_json::Value> {
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
async fn failover_trials(
    c: &mut LocalCluster,
    log: &Path,
    trials: usize,
) -> Result<FailoverRun, String> {
    let http = http_client(c, PROBE_TIMEOUT)?;
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

async fn failover(nodes: usize, profile: &str, trials: usize) -> Result<serde_json::Value, String> {
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

async fn kv(clients: &str, duration: u64, value_size: usize) -> Result<serde_json::Value, String> {
    let counts: Vec<usize> = parse_list(clients, "clients")?;
    let mut spec = ClusterSpec::voters(3);
    spec.env.push(("QUORATE_LOG".into(), "warn".into()));
    let mut c = LocalCluster::create(&spec).map_err(|e| e.to_string())?;
    with_secret_if_asked(&c)?;
    c.start_all().map_err(|e| e.to_string())?;
    let (leader, _) = c
        .wait_agreed_leader(START_TIMEOUT)
        .await
        .ok_or("no leader")?;
    let api = c.node(leader).ok_or("leader")?.member.api;
    let value = vec![b'v'; value_size];
    let auth = c.auth_headers();
    let mut results = Vec::new();
    println!("KV on the leader, 3 nodes, fsync on, {value_size}-byte values, {duration} s per row");
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>10}",
        "clients", "writes/s", "p50 ms", "p99 ms", "p999 ms"
    );
    for n in counts {
        let stop = Instant::now() + Duration::from_secs(duration);
        let mut tasks = Vec::new();
        for client_id in 0..n {
            let value = value.clone();
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .default_headers(auth)
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .ok()?;
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < stop {
                    i += 1;
                    let t = Instant::now();
                    let r = http
                        .put(format!("http://{api}/v1/kv/bench/{client_id}/{i}"))
                        .body(value.clone())
                        .send()
                        .await;
                    if r.map(|r| r.status().as_u16() == 200).unwrap_or(false) {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                Some(lat)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            if let Ok(Some(l)) = t.await {
                lat.extend(l);
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        let rate = lat.len() as f64 / duration as f64;
        let p = |q| quorate_chaos::stats::percentile(&lat, q);
        println!(
            "{n:>8} {rate:>12.0} {:>10.2} {:>10.2} {:>10.2}",
            p(50.0),
            p(99.0),
            p(99.9)
        );
        results.push(json!({"clients": n, "writes_per_s": rate, "p50_ms": p(50.0), "p99_ms": p(99.0), "p999_ms": p(99.9)}));
    }
    // Reads: linearizable (ReadIndex on the leader) and stale, 16 clients, 5 s each.
    let mut reads = serde_json::Map::new();
    for (name, q) in [("linearizable", ""), ("stale", "?stale=true")] {
        let stop = Instant::now() + Duration::from_secs(5);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let url = format!("http://{api}/v1/kv/bench/0/1{q}");
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::builder().no_proxy().build().ok()?;
                let mut ok = 0u64;
                while Instant::now() < stop {
                    if http
                        .get(&url)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                    {
                        ok += 1;
                    }
                }
                Some(ok)
            }));
        }
        let mut total = 0u64;
        for t in tasks {
            total += t.await.ok().flatten().unwrap_or(0);
        }
        println!("{name} reads/s (16 clients): {:.0}", total as f64 / 5.0);
        reads.insert(name.into(), json!(total as f64 / 5.0));
    }
    Ok(json!({"bench": "kv", "value_size": value_size, "writes": results, "reads_per_s": reads}))
}

async fn switchover(trials: usize, rate: u64) -> Result<serde_json::Value, String> {
    let (mut c, _log) = marker_cluster(&ClusterSpec::voters(3))?;
    let http = http_client(&c, Duration::from_secs(5))?;
    c.start_all().map_err(|e| e.to_string())?;
    let mut primary = wait_primary(&c, &http, None, START_TIMEOUT)
        .await
        .ok_or("no primary")?;
    let apis: Vec<std::net::SocketAddr> = c
        .ids()
        .iter()
        .filter_map(|i| c.node(*i).map(|n| n.member.api))
        .collect();
    let mut pauses = Vec::new();
    for trial in 0..trials {
        let target = c
            .ids()
            .into_iter()
            .find(|i| *i != primary)
            .ok_or("no target")?;
        // Writer: one write every 1/rate s to any node (followers forward), recording ack times.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let http = http.clone();
            let apis = apis.clone();
            tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut i = 0u64;
                let period = Duration::from_micros(1_000_000 / rate.max(1));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let api = apis[(i as usize) % apis.len()];
                    let t = Instant::now();
                    if http
                        .put(format!("http://{api}/v1/kv/sw/{trial}/{i}"))
                        .body("x")
                        .send()
                        .await
                        .map(|r| r.status().as_u16() == 200)
                        .unwrap_or(false)
                    {
                        acks.push(Instant::now());
                    }
                    if let Some(rest) = period.checked_sub(t.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
                acks
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A lease lapse under CPU load can leave no acting primary for a moment: the
        // request is then refused; wait for a primary again and retry (bounded).
        let mut accepted = false;
        let mut last_refusal = String::new();
        for _ in 0..20 {
            let p = wait_primary(&c, &http, None, START_TIMEOUT)
                .await
                .ok_or("no primary")?;
            if p == target {
                accepted = true;
                break;
            }
            let api = c.node(p).ok_or("node")?.member.api;
            let r = http
                .post(format!("http://{api}/v1/switchover"))
                .body(json!({"to": target}).to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().as_u16() == 200 {
                accepted = true;
                break;
            }
            last_refusal = r.text().await.unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !accepted {
            return Err(format!("switchover refused 20 times; last: {last_refusal}"));
        }
        let np = wait_primary(&c, &http, Some(primary), START_TIMEOUT)
            .await
            .ok_or("switchover did not finish")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acks = writer.await.map_err(|e| e.to_string())?;
        let gap = acks
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
            .fold(0.0, f64::max);
        eprintln!("trial {trial}: {primary} -> {np}: longest gap between acknowledged writes {gap:.1} ms ({} writes)", acks.len());
        pauses.push(gap);
        primary = np;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = summarize(&pauses);
    print_summary("switchover write pause", "ms", &s);
    Ok(
        json!({"bench": "switchover", "trials": trials, "rate": rate, "write_pause_ms": s, "samples_ms": pauses}),
    )
}

/// `scale`: for each voter count, the idle cost per node and the failover phases.
async fn scale(
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
        let http = http_client(&c, PROBE_TIMEOUT)?;
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

/// Busy-loop child processes (`quorate-bench cpu-hog`), killed by PID when dropped.
struct CpuHogs {
    children: Vec<Child>,
}

impl CpuHogs {
    fn start(count: usize) -> Result<CpuHogs, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot locate quorate-bench to start the CPU hogs: {e}"))?;
        let mut hogs = CpuHogs {
            children: Vec::new(),
        };
        for _ in 0..count {
            // On error, `hogs` drops here and kills the ones already started.
            let child = Command::new(&exe)
                .arg(HOG_SUBCOMMAND)
                .env(HOG_PARENT_ENV, std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start a CPU hog ({}): {e}", exe.display()))?;
            hogs.children.push(child);
        }
        Ok(hogs)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Child::kill sends SIGKILL to this child's PID; wait reaps it.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The hog itself: spin on one core until killed. It also dies with its parent (parent-death
/// signal), so an interrupted bench leaves no hog behind.
fn cpu_hog() -> ExitCode {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a property of this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    // The parent may have died before the signal was armed: then stop at once.
    let parent: Option<i32> = std::env::var(HOG_PARENT_ENV)
        .ok()
        .and_then(|p| p.parse().ok());
    // SAFETY: getppid has no preconditions.
    if parent.is_some_and(|p| p != unsafe { libc::getppid() }) {
        return ExitCode::SUCCESS;
    }
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// A change of leader or primary seen while watching.
#[derive(Serialize, Debug, Clone)]
struct Change {
    /// Seconds since the watch began.
    at_s: f64,
    /// The node whose status showed it.
    seen_on: u64,
    /// Term (leader changes) or epoch (primary changes).
    at: u64,
    from: Option<u64>,
    to: Option<u64>,
}

/// What the `false-positives` poller accumulates.
#[derive(Default)]
struct Watch {
    term: u64,
    leader: Option<u64>,
    epoch: u64,
    primary: Option<u64>,
    rounds: u64,
    polls: u64,
    unanswered: u64,
    leader_changes: Vec<Change>,
    primary_changes: Vec<Change>,
    /// Rounds where every node answered and none acted as primary.
    no_acting_rounds: u64,
    /// Rounds where more than one node acted as primary (safety: must be 0).
    multi_acting_rounds: u64,
}

impl Watch {
    fn observe(&mut self, at_s: f64, id: u64, st: &NodeStatus) {
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
struct OpsLog {
    switchovers: u64,
    failbacks: u64,
    /// (kill of the primary, failback committed) in unix ms: role changes in between are
    /// the failover and failback the driver caused.
    fault_windows: Vec<(u64, u64)>,
    errors: Vec<String>,
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Slack around a driver fault window (history stamps are the leader's wall clock).
const EXPLAINED_SLACK_MS: u64 = 2_000;
/// Pause between two operations of the driver.
const OPS_GAP: Duration = Duration::from_secs(2);

/// Switchovers and supervised failbacks back to back until `end` (or `stop`): switchover
/// to the next node, then kill -9 the primary, restart it once the others failed over, and
/// fail back to it (auto commit). Every step is bounded by its timeout.
async fn drive_operations(
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

async fn ops_cycle(
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
const HISTORY_EVERY_ROUNDS: u64 = 150;

/// Adds every history entry from `start_seq` on that any node answers with to `into`.
async fn collect_history(
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
struct LapseTotals {
    /// Per node: (counted in earlier lives, last seen in this life).
    nodes: std::collections::BTreeMap<u64, (LapseCount, LapseCount)>,
}

/// (lease lapses, of which healed).
type LapseCount = (u64, u64);

impl LapseTotals {
    fn observe(&mut self, id: u64, st: &NodeStatus) {
        let now = (st.lease_lapses, st.lease_lapses_healed);
        let (earlier, last) = self.nodes.entry(id).or_default();
        if now.0 < last.0 || now.1 < last.1 {
            earlier.0 += last.0;
            earlier.1 += last.1;
        }
        *last = now;
    }

    fn totals(&self) -> (u64, u64) {
        self.nodes
            .values()
            .fold((0, 0), |acc, (e, l)| (acc.0 + e.0 + l.0, acc.1 + e.1 + l.1))
    }
}

/// Waits until `api` reports the cluster failed over with `home` as its home.
async fn wait_failed_over(
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
async fn request_failback(http: &reqwest::Client, api: SocketAddr) -> Result<u32, String> {
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
fn unexplained_role_changes(events: &[HistoryEntry], windows: &[(u64, u64)]) -> Vec<String> {
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

async fn false_positives(
    duration: u64,
    cpu_load: bool,
    hogs: Option<usize>,
    nodes: usize,
    profile: &str,
    operations: bool,
) -> Result<serde_json::Value, String> {
    let (mut c, log) = marker_cluster(&cluster_spec(nodes, 0, profile))?;
    c.start_all().map_err(|e| e.to_string())?;
    let http = http_client(&c, WATCH_TIMEOUT)?;
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

/// Writes keys `fb/0..n` through `api` with `writers` concurrent clients; every write must be
/// acknowledged (bounded retries). Returns the load's duration.
async fn write_entries(
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
async fn wait_status(
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
struct PhaseTime {
    phase: String,
    ms: u64,
}

/// One failback trial's measurements.
#[derive(Serialize, Debug)]
struct FailbackSample {
    entries: u64,
    trial: usize,
    home: u64,
    failed_over_to: u64,
    load_seconds: f64,
    writes_per_s: f64,
    /// Entries home was behind when it was first heard after the restart.
    lag_at_first_sight: Option<u64>,
    restart_to_available_ms: f64,
    request_to_committed_ms: f64,
    restart_to_committed_ms: f64,
    /// Times the leader refused the failback request before accepting it.
    refusals: u32,
    /// Time in each phase, in order, from the leader-stamped history.
    phases: Vec<PhaseTime>,
    write_pause_ms: Option<u64>,
}

/// Home's lag behind the leader, when the leader (`st`) hears it and is replicating to it.
fn home_lag(st: &NodeStatus, home: u64) -> Option<u64> {
    let p = st.peers.iter().find(|p| p.id == home)?;
    if p.heartbeat != "alive" || p.health.as_deref() == Some("unhealthy") {
        return None;
    }
    p.matched_index.map(|m| st.last_log_index.saturating_sub(m))
}

async fn failback_trial(
    entries: u64,
    trial: usize,
    value_size: usize,
) -> Result<FailbackSample, String> {
    let (mut c, _log) = marker_cluster(&cluster_spec(3, 0, "lan"))?;
    c.start_all().map_err(|e| e.to_string())?;
    let http = http_client(&c, REQUEST_TIMEOUT)?;
    let probe = http_client(&c, PROBE_TIMEOUT)?;
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

async fn failback(
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

async fn run(cmd: Cmd) -> Result<serde_json::Value, String> {
    match cmd {
        Cmd::Failover {
            nodes,
            profile,
            trials,
        } => failover(nodes, &profile, trials).await,
        Cmd::Kv {
            clients,
            duration,
            value_size,
        } => kv(&clients, duration, value_size).await,
        Cmd::Switchover { trials, rate } => switchover(trials, rate).await,
        Cmd::Election {
            nodes,
            trials,
            profile,
        } => election(nodes, trials, &profile).await,
        Cmd::Idle {
            nodes,
            duration,
            profile,
        } => idle(nodes, duration, &profile).await,
        Cmd::Scale {
            nodes,
            learners,
            trials,
            idle_duration,
            profile,
        } => scale(&nodes, learners, trials, idle_duration, &profile).await,
        Cmd::FalsePositives {
            duration,
            cpu_load,
            hogs,
            nodes,
            profile,
            operations,
        } => false_positives(duration, cpu_load, hogs, nodes, &profile, operations).await,
        Cmd::Failback {
            entries,
            trials,
            value_size,
        } => failback(&entries, trials, value_size).await,
        Cmd::CpuHog => Err("cpu-hog runs outside the async runtime".into()),
    }
}

/// Runs `work` unless SIGINT or SIGTERM comes first; then `work` is dropped (its processes
/// killed by their guards) and the run ends with an error.
async fn until_interrupted(
    work: impl std::future::Future<Output = Result<serde_json::Value, String>>,
) -> Result<serde_json::Value, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch for SIGINT: {e}"))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
    tokio::select! {
        r = work => r,
        _ = int.recv() => Err("interrupted (SIGINT); every process this run started was killed".into()),
        _ = term.recv() => Err("terminated (SIGTERM); every process this run started was killed".into()),
    }
}

fn main() -> ExitCode {
    let Cli { out, cmd } = Cli::parse();
    if matches!(cmd, Cmd::CpuHog) {
        return cpu_hog();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Every subcommand owns its processes (nodes, hogs) through guards that kill them when
    // dropped: on success, on error, and on SIGINT/SIGTERM, which drop the subcommand here.
    match rt.block_on(until_interrupted(run(cmd))) {
        Ok(v) => {
            if let Some(path) = out {
                if let Err(e) =
                    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default())
                {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lapse_totals_keep_what_a_restarted_daemon_had_counted() {
        let st = |l, h| NodeStatus {
            lease_lapses: l,
            lease_lapses_healed: h,
            ..NodeStatus::default()
        };
        let mut t = LapseTotals::default();
        t.observe(1, &st(2, 1));
        t.observe(2, &st(1, 1));
        t.observe(1, &st(3, 2));
        // Node 1 restarted: its counters start again from 0.
        t.observe(1, &st(0, 0));
        t.observe(1, &st(1, 1));
        assert_eq!(t.totals(), (3 + 1 + 1, 2 + 1 + 1));
    }

    #[test]
    fn role_changes_outside_fault_windows_and_operations_are_unexplained() {
        use quorate::cluster::{DemoteReason, PromoteReason};
        let e = |seq, at_unix_ms, event| HistoryEntry {
            seq,
            at_unix_ms,
            term: None,
            event,
        };
        let promoted = |reason| HistoryEvent::Promoted {
            node: 2,
            epoch: quorate::types::Epoch(3),
            previous: Some(1),
            reason,
        };
        let demoted = |reason| HistoryEvent::Demoted {
            node: 1,
            epoch: quorate::types::Epoch(2),
            reason,
        };
        let windows = [(10_000, 20_000)];
        let events = vec![
            e(0, 5_000, promoted(PromoteReason::Switchover)),
            e(1, 5_000, demoted(DemoteReason::Switchover)),
            e(2, 12_000, demoted(DemoteReason::LeaseLost)),
            e(3, 12_500, promoted(PromoteReason::Failover)),
            e(4, 40_000, demoted(DemoteReason::LeaseLost)),
            e(5, 40_001, promoted(PromoteReason::Failover)),
        ];
        let u = unexplained_role_changes(&events, &windows);
        assert_eq!(u.len(), 2, "{u:?}");
        assert!(u[0].starts_with("#4") && u[1].starts_with("#5"), "{u:?}");
    }

    use super::*;
    use quorate::api::wire::{Counters, Membership, PeerStatus};

    fn status(term: u64, leader: Option<u64>, epoch: u64, primary: Option<u64>) -> NodeStatus {
        NodeStatus {
            cluster: "bench".into(),
            node_id: 1,
            role: "voter".into(),
            raft_state: "follower".into(),
            term,
            leader_id: leader,
            membership: Membership::default(),
            committed_index: 0,
            applied_index: 0,
            last_log_index: 0,
            snapshot_index: None,
            purged_index: None,
            quorum_ack_age_ms: None,
            uptime_ms: 0,
            peers: Vec::new(),
            counters: Counters::default(),
            primary,
            epoch: quorate::types::Epoch(epoch),
            acting_primary: false,
            local_role: "replica".into(),
            health: "unknown".into(),
            maintenance: None,
            drained: Vec::new(),
            last_failover: None,
            failed_over: None,
            operation: None,
            notes: Vec::new(),
            raft_failure: None,
            reseeding: false,
            last_reload: None,
            log_bytes: 0,
            ..NodeStatus::default()
        }
    }

    fn peer(id: u64, heartbeat: &str, matched: Option<u64>) -> PeerStatus {
        PeerStatus {
            id,
            role: "voter".into(),
            api: String::new(),
            heartbeat: heartbeat.into(),
            last_seen_ms: None,
            rtt_ms: None,
            matched_index: matched,
            applied_index: None,
            health: None,
            incarnation: None,
        }
    }

    #[test]
    fn lists_parse_with_spaces_and_reject_junk() {
        assert_eq!(parse_list::<usize>("3, 5,7", "nodes"), Ok(vec![3, 5, 7]));
        let err = parse_list::<usize>("3,x", "nodes").unwrap_err();
        assert!(err.contains("\"x\"") && err.contains("--nodes"), "{err}");
        assert!(parse_list::<u64>("", "entries").is_err());
    }

    #[test]
    fn a_steady_cluster_shows_no_change_and_a_new_leader_shows_one() {
        let mut w = Watch::default();
        for id in 1..=3 {
            w.observe(0.0, id, &status(4, Some(1), 2, Some(1)));
        }
        // The baseline itself is one "change" from nothing; the bench clears it.
        assert_eq!((w.leader_changes.len(), w.primary_changes.len()), (1, 1));
        w.leader_changes.clear();
        w.primary_changes.clear();
        for id in 1..=3 {
            w.observe(1.0, id, &status(4, Some(1), 2, Some(1)));
        }
        assert!(w.leader_changes.is_empty() && w.primary_changes.is_empty());
        // Node 2 sees a new term with leader 2 and a new epoch; node 3 still reports the old
        // term (behind): only one change each, and the old news is not a change back.
        w.observe(2.0, 2, &status(5, Some(2), 3, Some(2)));
        w.observe(2.0, 3, &status(4, Some(1), 2, Some(1)));
        w.observe(2.2, 3, &status(5, Some(2), 3, Some(2)));
        assert_eq!(w.leader_changes.len(), 1);
        assert_eq!(w.leader_changes[0].from, Some(1));
        assert_eq!(w.leader_changes[0].to, Some(2));
        assert_eq!(w.primary_changes.len(), 1);
        assert_eq!(w.primary_changes[0].at, 3);
        // A candidate's new term without a leader is not a leader change.
        w.observe(3.0, 1, &status(6, None, 3, Some(2)));
        assert_eq!(w.leader_changes.len(), 1);
    }

    #[test]
    fn home_is_in_sync_only_when_heard_and_replicated() {
        let mut st = status(3, Some(2), 2, Some(2));
        st.last_log_index = 5_000;
        st.peers = vec![peer(1, "alive", Some(4_100)), peer(3, "alive", Some(5_000))];
        assert_eq!(home_lag(&st, 1), Some(900));
        assert_eq!(home_lag(&st, 3), Some(0));
        st.peers[0] = peer(1, "suspect", Some(5_000));
        assert_eq!(home_lag(&st, 1), None);
        st.peers[0] = peer(1, "alive", None);
        assert_eq!(home_lag(&st, 1), None);
        assert_eq!(home_lag(&st, 9), None);
    }
}
