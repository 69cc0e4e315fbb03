//! `quorate-chaos run` with the local backend: real `quorate` processes on 127.0.0.1, client
//! tasks recording every operation, a nemesis following the seeded schedule, then heal,
//! convergence, final reads, and the checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::checks::{Convergence, RunMeta, Workload};
use crate::history::{Event, EventType, Function, Recorder};
use crate::launcher::{ClusterSpec, LocalCluster};
use crate::nemesis::{FaultEvent, FaultKind, ScheduleSpec, Step, Target};

/// `[resource] max_service_lag_bytes` of the chaos cluster: far above what a streaming
/// replica trails by (a few monitor rounds of the marker's 64-byte writes), far below the
/// stall fault's burst.
pub const MAX_SERVICE_LAG_BYTES: u64 = 1_024;
/// The write burst the stall fault gives the primary (the stalled replica misses it).
pub const STALL_BURST_BYTES: usize = 4 * MAX_SERVICE_LAG_BYTES as usize;
/// The marker service's monitor interval in chaos runs.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(200);
/// Wait after stalling a replica (in-flight copies finish) and after the burst reached the
/// others (their reports travel in heartbeats).
const STALL_SETTLE: Duration = Duration::from_millis(600);
/// Longest the stall fault waits for the other replicas to stream the burst.
const STALL_CATCH_UP_BOUND: Duration = Duration::from_secs(5);

/// The marker hook, shared with quorate-bench: it appends each hook run to the hook log.
pub const MARKER: &str = include_str!("../../cluster-config/local/hooks/marker.sh");

/// A client gives up on a request after this long; the outcome is then unknown (`info`).
/// Shorter than the daemon's own 5 s write timeout on purpose: a client that picked a paused
/// node would otherwise sit out the whole pause, and the throughput plot would show the
/// harness stuck rather than the cluster's availability.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of one append's read + compare-and-set loop.
pub const MAX_APPEND_ATTEMPTS: u32 = 8;
/// Operations all clients together may record; past it they stop.
pub const MAX_OPS: u64 = 300_000;
/// Pause between a client's operations, at most (uniform from 0): keeps 2 shared cores
/// responsive without idling the cluster.
pub const MAX_THINK: Duration = Duration::from_millis(20);
/// How long a fresh cluster may take to elect its first primary.
pub const FIRST_PRIMARY_BOUND: Duration = Duration::from_secs(30);
/// How long a gracefully stopped node may take to exit before it is killed.
pub const GRACEFUL_STOP_BOUND: Duration = Duration::from_secs(10);
/// Final reads: attempts per key and the pause between them.
pub const FINAL_READ_ATTEMPTS: u32 = 40;
pub const FINAL_READ_PAUSE: Duration = Duration::from_millis(250);
/// The append workload moves on to fresh keys this often, so lists stay short.
pub const APPEND_KEY_ROTATION: Duration = Duration::from_secs(10);
/// Operator requests (switchover, failback) may take this long to be answered.
pub const OPERATOR_REQUEST_TIMEOUT: Duration = Duration::from_secs(12);
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Where the nodes run and which faults are possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Processes on 127.0.0.1: kill, pause, restart, switchover, failback.
    Local,
    /// One network namespace per node on a harness-made bridge (root): adds partition,
    /// loss and link faults.
    Netns,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Netns => "netns",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub backend: Backend,
    pub nodes: usize,
    pub duration: Duration,
    pub seed: u64,
    pub out: PathBuf,
    pub nemesis: Vec<FaultKind>,
    pub workload: Workload,
    pub clients: usize,
    pub keys: usize,
    pub interval: Duration,
    pub fault_duration: Duration,
    pub profile: String,
    pub node_env: Vec<(String, String)>,
    pub converge_bound: Duration,
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{what}: {detail}")]
    Setup { what: String, detail: String },
    #[error("no primary within {0:?} of starting the cluster; see the node logs in the output directory")]
    NoFirstPrimary(Duration),
    #[error("interrupted (Ctrl-C); every node was stopped, the partial run is in {0}")]
    Interrupted(PathBuf),
}

fn setup(what: impl Into<String>) -> impl FnOnce(String) -> RunError {
    let what = what.into();
    move |detail| RunError::Setup { what, detail }
}

pub fn mono_ns() -> u64 {
    quorate::resource::monotonic_ns()
}

/// The run's shared recorder: numbering and timestamps taken under one lock, so the file's
/// order is its time order.
#[derive(Clone)]
struct History {
    rec: Arc<Mutex<Recorder>>,
    ops: Arc<std::sync::atomic::AtomicU64>,
    failed: Arc<AtomicBool>,
}

struct Rec<'a> {
    process: u64,
    node: u64,
    f: Function,
    key: &'a str,
    final_read: bool,
}

impl History {
    fn record(&self, r: &Rec, kind: EventType, value: Value, error: Option<String>) {
        let Ok(mut rec) = self.rec.lock() else {
            self.failed.store(true, Ordering::Relaxed);
            return;
        };
        let e = Event {
            index: 0,
            kind,
            process: r.process,
            time_ns: mono_ns(),
            node: r.node,
            f: r.f,
            key: r.key.to_string(),
            value,
            error,
            final_read: r.final_read,
        };
        if rec.record(e).is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        if kind == EventType::Invoke {
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What became of one HTTP request.
enum Reply {
    Status(u16, Vec<u8>),
    /// Never sent (connection refused or not established): definitely no effect.
    Unsent(String),
    /// Sent, but no answer: any effect is possible.
    Unknown(String),
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(b) => Reply::Status(status, b.to_vec()),
                Err(e) => Reply::Unknown(e.to_string()),
            }
        }
        Err(e) if e.is_connect() => Reply::Unsent(e.to_string()),
        Err(e) => Reply::Unknown(e.to_string()),
    }
}

fn body_text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(200).collect()
}

/// A GET of one key: Ok(Some((value, mod_revision))), Ok(None) when missing, Err otherwise
/// (with whether the failure is definite).
async fn get_key(
    http: &reqwest::Client,
    api: &str,
    key: &str,
) -> Result<Option<(String, u64)>, (bool, String)> {
    match send(http.get(format!("http://{api}/v1/kv/{key}"))).await {
        Reply::Status(200, b) => {
            let v: Value = serde_json::from_slice(&b)
                .map_err(|e| (true, format!("unreadable GET answer: {e}")))?;
            let value = v["value"].as_str().unwrap_or_default().to_string();
            let rev = v["mod_revision"].as_u64().unwrap_or(0);
            if v["encoding"].as_str() != Some("utf8") && v["encoding"].as_str() != Some("utf-8") {
                return Ok(Some((format!("<{}>", v["encoding"]), rev)));
            }
            Ok(Some((value, rev)))
        }
        Reply::Status(404, _) => Ok(None),
        Reply::Status(s, b) => Err((true, format!("{s}: {}", body_text(&b)))),
        Reply::Unsent(e) => Err((true, e)),
        Reply::Unknown(e) => Err((false, e)),
    }
}

/// Outcome of a write request, in history terms.
fn write_outcome(reply: Reply) -> (EventType, Option<String>) {
    match reply {
        Reply::Status(200, _) => (EventType::Ok, None),
        Reply::Status(409, b) => (EventType::Fail, Some(format!("409: {}", body_text(&b)))),
        // Rejected before proposing (bad key, too large): nothing was written.
        Reply::Status(s, b) if (400..500).contains(&s) => {
            (EventType::Fail, Some(format!("{s}: {}", body_text(&b))))
        }
        // 503 may be a timeout after proposing, or a lost forward: unknown.
        Reply::Status(s, b) => (EventType::Info, Some(format!("{s}: {}", body_text(&b)))),
        Reply::Unsent(e) => (EventType::Fail, Some(format!("not sent: {e}"))),
        Reply::Unknown(e) => (EventType::Info, Some(e)),
    }
}

struct Client {
    id: u64,
    http: reqwest::Client,
    apis: Vec<(u64, String)>,
    hist: History,
    rng: rand::rngs::StdRng,
    seq: u64,
    keys: usize,
    start: Instant,
    append_keys: Arc<Mutex<BTreeSet<String>>>,
}

impl Client {
    fn unique(&mut self) -> i64 {
        self.seq += 1;
        (self.id as i64 + 1) * 1_000_000_000 + self.seq as i64
    }

    fn pick_node(&mut self) -> (u64, String) {
        let i = self.rng.gen_range(0..self.apis.len());
        self.apis[i].clone()
    }

    /// A recorded register read; returns (value, mod_revision) when it succeeded.
    async fn reg_read(&mut self, node: u64, api: &str, key: &str) -> Option<(Option<i64>, u64)> {
        let r = Rec {
            process: self.id,
            node,
            f: Function::Read,
            key,
            final_read: false,
        };
        self.hist.record(&r, EventType::Invoke, Value::Null, None);
        match get_key(&self.http, api, key).await {
            Ok(None) => {
                self.hist.record(&r, EventType::Ok, Value::Null, None);
                Some((None, 0))
            }
            Ok(Some((v, rev))) => match v.parse::<i64>() {
                Ok(n) => {
                    self.hist.record(&r, EventType::Ok, json!(n), None);
                    Some((Some(n), rev))
                }
                Err(_) => {
                    self.hist.record(&r, EventType::Ok, json!(v), None);
                    None
                }
            },
            Err((definite, e)) => {
                let k = if definite {
                    EventType::Fail
                } else {
                    EventType::Info
                };
                self.hist.record(&r, k, Value::Null, Some(e));
                None
            }
        }
    }

    async fn reg_op(&mut self) {
        let key = format!("reg/{}", self.rng.gen_range(0..self.keys));
        let (node, api) = self.pick_node();
        let roll = self.rng.gen_range(0..100);
        if roll < 50 {
            self.reg_read(node, &api, &key).await;
            return;
        }
        let (f, input, url) = if roll < 75 {
            let v = self.unique();
            (
                Function::Write,
                json!(v),
                format!("http://{api}/v1/kv/{key}"),
            )
        } else {
            let Some((expected, rev)) = self.reg_read(node, &api, &key).await else {
                return;
            };
            let v = self.unique();
            (
                Function::Cas,
                json!([expected, v]),
                format!("http://{api}/v1/kv/{key}?if_revision={rev}"),
            )
        };
        let new = if f == Function::Cas {
            input[1].clone()
        } else {
            input.clone()
        };
        let r = Rec {
            process: self.id,
            node,
            f,
            key: &key,
            final_read: false,
        };
        self.hist.record(&r, EventType::Invoke, input, None);
        let reply = send(self.http.put(url).body(new.to_string())).await;
        let (kind, err) = write_outcome(reply);
        self.hist.record(&r, kind, Value::Null, err);
    }

    fn append_key(&mut self) -> String {
        let window = self.start.elapsed().as_secs() / APPEND_KEY_ROTATION.as_secs().max(1);
        let k = window * self.keys as u64 + self.rng.gen_range(0..self.keys as u64);
        format!("list/{k}")
    }

    async fn append_op(&mut self) {
        let key = self.append_key();
        if let Ok(mut keys) = self.append_keys.lock() {
            keys.insert(key.clone());
        }
        let (node, api) = self.pick_node();
        if self.rng.gen_range(0..100) < 30 {
            let r = Rec {
                process: self.id,
                node,
                f: Function::Read,
                key: &key,
                final_read: false,
            };
            read_list(&self.http, &self.hist, &r, &api).await;
            return;
        }
        let elem = self.unique();
        let r = Rec {
            process: self.id,
            node,
            f: Function::Append,
            key: &key,
            final_read: false,
        };
        self.hist.record(&r, EventType::Invoke, json!(elem), None);
        let mut last_error = String::new();
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            if attempt > 0 {
                let ms = self.rng.gen_range(5..50u64);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let (list, rev) = match get_key(&self.http, &api, &key).await {
                Ok(Some(x)) => x,
                Ok(None) => (String::new(), 0),
                Err((_, e)) => {
                    // A read changes nothing: this attempt simply did not happen.
                    last_error = format!("read: {e}");
                    continue;
                }
            };
            let new = if list.trim().is_empty() {
                elem.to_string()
            } else {
                format!("{} {elem}", list.trim_end())
            };
            let url = format!("http://{api}/v1/kv/{key}?if_revision={rev}");
            match write_outcome(send(self.http.put(url).body(new)).await) {
                (EventType::Ok, _) => {
                    self.hist.record(&r, EventType::Ok, Value::Null, None);
                    return;
                }
                (EventType::Fail, e) => last_error = e.unwrap_or_default(),
                (_, e) => {
                    self.hist.record(&r, EventType::Info, Value::Null, e);
                    return;
                }
            }
        }
        self.hist.record(
            &r,
            EventType::Fail,
            Value::Null,
            Some(format!(
                "gave up after {MAX_APPEND_ATTEMPTS} attempts; last: {last_error}"
            )),
        );
    }
}

/// A recorded read of an append list; returns whether it succeeded.
async fn read_list(http: &reqwest::Client, hist: &History, r: &Rec<'_>, api: &str) -> bool {
    hist.record(r, EventType::Invoke, Value::Null, None);
    match get_key(http, api, r.key).await {
        Ok(v) => {
            let text = v.map(|x| x.0).unwrap_or_default();
            let parsed: Result<Vec<i64>, _> =
                text.split_whitespace().map(|x| x.parse::<i64>()).collect();
            match parsed {
                Ok(list) => hist.record(r, EventType::Ok, json!(list), None),
                Err(_) => hist.record(r, EventType::Ok, json!(text), None),
            }
            true
        }
        Err((definite, e)) => {
            let k = if definite {
                EventType::Fail
            } else {
                EventType::Info
            };
            hist.record(r, k, Value::Null, Some(e));
            false
        }
    }
}

/// A client for the cluster's API; it sends the cluster's admin token on every request.
fn http_client(cluster: &LocalCluster) -> Result<reqwest::Client, RunError> {
    crate::http::cluster_client(cluster, OP_TIMEOUT)
        .map_err(|e| setup("build the HTTP client")(e.to_string()))
}

/// The cluster, what the nemesis did to it, and the fault log.
struct Chaos {
    /// Dropped first (every process killed) ...
    cluster: LocalCluster,
    /// ... then the namespaces and the bridge are removed.
    net: Option<crate::netns::Netns>,
    paused: BTreeSet<u64>,
    faults: std::io::BufWriter<std::fs::File>,
    http: reqwest::Client,
    apis: BTreeMap<u64, String>,
    /// The marker service's data folder (one node<ID>/ each): see `marker.sh`'s data mode.
    service: PathBuf,
}

impl Chaos {
    fn log(&mut self, e: FaultEvent) {
        use std::io::Write;
        if let Ok(line) = serde_json::to_string(&e) {
            let _ = writeln!(self.faults, "{line}");
            let _ = self.faults.flush();
        }
        eprintln!(
            "[nemesis] {} {} node {:?} (primary before: {:?}) {}",
            e.kind.name(),
            e.phase,
            e.node,
            e.primary_before,
            e.detail
        );
    }

    fn live(&self) -> Vec<u64> {
        self.cluster
            .ids()
            .into_iter()
            .filter(|id| self.cluster.pid(*id).is_some() && !self.paused.contains(id))
            .collect()
    }

    /// The node acting as primary, else the committed primary, by asking the live nodes.
    async fn primary(&self) -> Option<u64> {
        let mut committed = None;
        for id in self.live() {
            let Some(st) = self.cluster.status(id).await else {
                continue;
            };
            if st.acting_primary {
                return Some(id);
            }
            committed = committed.or(st.primary);
        }
        committed
    }

    fn event(
        &self,
        kind: FaultKind,
        phase: &str,
        node: Option<u64>,
        primary: Option<u64>,
        detail: String,
    ) -> FaultEvent {
        FaultEvent {
            time_ns: mono_ns(),
            kind,
            phase: phase.into(),
            node,
            primary_before: primary,
            detail,
        }
    }

    async fn operator(&self, path: &str, body: Value) -> (bool, String) {
        let Some(id) = self.live().first().copied() else {
            return (false, "no live node to ask".into());
        };
        let api = self.apis.get(&id).cloned().unwrap_or_default();
        let req = self
            .http
            .post(format!("http://{api}{path}"))
            .timeout(OPERATOR_REQUEST_TIMEOUT)
            .header("content-type", "application/json")
            .body(body.to_string());
        match send(req).await {
            Reply::Status(200, b) => (true, body_text(&b)),
            Reply::Status(s, b) => (false, format!("{s}: {}", body_text(&b))),
            Reply::Unsent(e) | Reply::Unknown(e) => (false, e),
        }
    }

    async fn stop_gracefully(&mut self, id: u64) -> String {
        self.cluster.signal(id, libc::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < GRACEFUL_STOP_BOUND {
            let exited = self
                .cluster
                .nodes
                .iter_mut()
                .find(|n| n.member.id == id)
                .and_then(|n| n.child.as_mut())
                .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited {
                self.cluster.kill9(id); // reaps and forgets the child
                return format!("exited {} ms after SIGTERM", t0.elapsed().as_millis());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.cluster.kill9(id);
        format!("did not exit within {GRACEFUL_STOP_BOUND:?} of SIGTERM; killed")
    }

    async fn run_step(&mut self, step: &Step) {
        let ids = self.cluster.ids();
        let primary = self.primary().await;
        let pick = |n: u64| ids[(n % ids.len() as u64) as usize];
        let node = match step.target {
            Target::Primary => primary.unwrap_or_else(|| pick(step.at_ms)),
            Target::Node(n) => pick(n),
        };
        let lasting = Duration::from_millis(step.duration_ms);
        match step.kind {
            FaultKind::Kill => {
                let e = self.event(step.kind, "start", Some(node), primary, String::new());
                self.cluster.kill9(node);
                self.log(e);
                tokio::time::sleep(lasting).await;
                let r = self.cluster.start(node).map_err(|e| e.to_string()).err();
                let e = self.event(step.kind, "heal", Some(node), None, r.unwrap_or_default());
                self.log(e);
            }
            FaultKind::Pause => {
                let e = self.event(step.kind, "start", Some(node), primary, String::new());
                self.cluster.signal(node, libc::SIGSTOP);
                self.paused.insert(node);
                self.log(e);
                tokio::time::sleep(lasting).await;
                self.cluster.signal(node, libc::SIGCONT);
                self.paused.remove(&node);
                let e = self.event(step.kind, "heal", Some(node), None, String::new());
                self.log(e);
            }
            FaultKind::Restart => {
                let e = self.event(step.kind, "start", Some(node), primary, String::new());
                self.log(e);
                let how = self.stop_gracefully(node).await;
                let r = self.cluster.start(node).map_err(|e| e.to_string()).err();
                let detail = format!(
                    "{how}{}",
                    r.map(|e| format!("; start: {e}")).unwrap_or_default()
                );
                let e = self.event(step.kind, "heal", Some(node), None, detail);
                self.log(e);
            }
            FaultKind::Switchover => {
                let target = if Some(node) == primary {
                    ids.iter()
                        .copied()
                        .find(|i| Some(*i) != primary)
                        .unwrap_or(node)
                } else {
                    node
                };
                let t = mono_ns();
                let (ok, detail) = self
                    .operator("/v1/switchover", json!({ "to": target }))
                    .await;
                let mut e = self.event(
                    step.kind,
                    if ok { "start" } else { "refused" },
                    Some(target),
                    primary,
                    detail,
                );
                e.time_ns = t;
                self.log(e);
            }
            FaultKind::Partition | FaultKind::Loss | FaultKind::Link => {
                self.network_fault(step, node, primary).await;
            }
            FaultKind::Stall => self.stall_then_kill(step, node, primary).await,
            FaultKind::Failback => {
                let t = mono_ns();
                let (ok, detail) = self.operator("/v1/failback", json!({})).await;
                let mut e = self.event(
                    step.kind,
                    if ok { "start" } else { "refused" },
                    None,
                    primary,
                    detail,
                );
                e.time_ns = t;
                self.log(e);
            }
        }
    }

    fn data_len(&self, id: u64) -> u64 {
        std::fs::metadata(self.service.join(format!("node{id}/data")))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The stall fault (see [`FaultKind::Stall`]): replica `node` (another node when it is
    /// the primary) stops streaming; the primary takes a burst of
    /// [`STALL_BURST_BYTES`] the other replicas stream and the stalled one misses; then the
    /// primary is killed. At the step's end the replica streams again and the old primary
    /// starts.
    async fn stall_then_kill(&mut self, step: &Step, node: u64, primary: Option<u64>) {
        let Some(p) = primary else {
            let e = self.event(step.kind, "refused", Some(node), None, "no primary".into());
            self.log(e);
            return;
        };
        let ids = self.cluster.ids();
        let stalled = if node == p {
            ids.iter().copied().find(|i| *i != p).unwrap_or(node)
        } else {
            node
        };
        let paused = self.service.join(format!("node{stalled}/paused"));
        if let Err(e) = std::fs::write(&paused, b"") {
            let e = self.event(
                step.kind,
                "refused",
                Some(stalled),
                primary,
                format!("cannot stall: write {}: {e}", paused.display()),
            );
            self.log(e);
            return;
        }
        let e = self.event(
            step.kind,
            "start",
            Some(stalled),
            primary,
            format!("node {stalled} stops replicating, then primary {p} is killed"),
        );
        self.log(e);
        // A monitor run that began before the stall may still copy: let it finish.
        tokio::time::sleep(STALL_SETTLE).await;
        let burst = {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(self.service.join(format!("node{p}/data")))
                .and_then(|mut f| f.write_all(&[b'b'; STALL_BURST_BYTES]))
        };
        // The others stream the burst (bounded), and their reports travel in heartbeats.
        let target = self.data_len(p);
        let t0 = Instant::now();
        while t0.elapsed() < STALL_CATCH_UP_BOUND
            && ids
                .iter()
                .filter(|i| **i != p && **i != stalled && self.cluster.pid(**i).is_some())
                .any(|i| self.data_len(*i) < target)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(STALL_SETTLE).await;
        let detail = match burst {
            Ok(()) => format!(
                "stalled node {stalled} at {} bytes, primary at {}",
                self.data_len(stalled),
                self.data_len(p)
            ),
            Err(e) => format!("the write burst failed: {e}"),
        };
        let e = self.event(FaultKind::Kill, "start", Some(p), primary, detail);
        self.cluster.kill9(p);
        self.log(e);
        tokio::time::sleep(Duration::from_millis(step.duration_ms)).await;
        let _ = std::fs::remove_file(&paused);
        let e = self.event(step.kind, "heal", Some(stalled), None, String::new());
        self.log(e);
        let r = self.cluster.start(p).map_err(|e| e.to_string()).err();
        let e = self.event(
            FaultKind::Kill,
            "heal",
            Some(p),
            None,
            r.unwrap_or_default(),
        );
        self.log(e);
    }

    async fn network_fault(&mut self, step: &Step, node: u64, primary: Option<u64>) {
        let ids = self.cluster.ids();
        let Some(net) = self.net.as_ref() else {
            let e = self.event(
                step.kind,
                "refused",
                Some(node),
                primary,
                "needs --backend netns".into(),
            );
            self.log(e);
            return;
        };
        let (applied, detail) = crate::netns::apply_fault(net, step.kind, &ids, node, step.variant);
        let detail = match applied {
            Ok(()) => detail,
            Err(e) => format!("{detail}: FAILED to apply: {e}"),
        };
        let e = self.event(step.kind, "start", Some(node), primary, detail);
        self.log(e);
        tokio::time::sleep(Duration::from_millis(step.duration_ms)).await;
        let healed = self.net.as_ref().map(|n| n.heal());
        let detail = match healed {
            Some(Err(e)) => format!("heal FAILED: {e}"),
            _ => String::new(),
        };
        let e = self.event(step.kind, "heal", Some(node), None, detail);
        self.log(e);
    }

    /// Resumes every paused node, starts every stopped one, and makes the network whole.
    fn heal_all(&mut self) {
        if let Some(net) = self.net.as_ref() {
            if let Err(e) = net.heal() {
                eprintln!("[nemesis] healing the network failed: {e}");
            }
        }
        for id in self.cluster.ids() {
            let _ = std::fs::remove_file(self.service.join(format!("node{id}/paused")));
        }
        for id in std::mem::take(&mut self.paused) {
            self.cluster.signal(id, libc::SIGCONT);
            let e = self.event(
                FaultKind::Pause,
                "heal",
                Some(id),
                None,
                "final heal".into(),
            );
            self.log(e);
        }
        for id in self.cluster.ids() {
            if self.cluster.pid(id).is_none() {
                let r = self.cluster.start(id).map_err(|e| e.to_string()).err();
                let e = self.event(
                    FaultKind::Kill,
                    "heal",
                    Some(id),
                    None,
                    format!("final heal {}", r.unwrap_or_default()),
                );
                self.log(e);
            }
        }
    }

    /// Polls every node until they agree on one acting primary, one epoch, one leader and
    /// one applied index, or the bound passes.
    async fn converge(&self, bound: Duration) -> Convergence {
        let t0 = Instant::now();
        let mut last = Convergence::default();
        while t0.elapsed() < bound {
            let mut problems = Vec::new();
            let mut statuses = BTreeMap::new();
            for id in self.cluster.ids() {
                match self.cluster.status(id).await {
                    Some(s) => {
                        statuses.insert(id, s);
                    }
                    None => problems.push(format!(
                        "node {id} did not answer /v1/status ({})",
                        self.cluster.process_state(id)
                    )),
                }
            }
            let primaries: BTreeSet<Option<u64>> = statuses.values().map(|s| s.primary).collect();
            let epochs: BTreeSet<u64> = statuses.values().map(|s| s.epoch.get()).collect();
            let leaders: BTreeSet<Option<u64>> = statuses.values().map(|s| s.leader_id).collect();
            let applied: BTreeMap<u64, u64> = statuses
                .iter()
                .map(|(id, s)| (*id, s.applied_index))
                .collect();
            let acting: Vec<u64> = statuses
                .iter()
                .filter(|(_, s)| s.acting_primary)
                .map(|(id, _)| *id)
                .collect();
            let primary = primaries.iter().next().copied().flatten();
            if primaries.len() != 1 || primary.is_none() {
                problems.push(format!(
                    "nodes name different or no primaries: {primaries:?}"
                ));
            }
            if epochs.len() != 1 {
                problems.push(format!("nodes report different epochs: {epochs:?}"));
            }
            if leaders.len() != 1 || leaders.contains(&None) {
                problems.push(format!("nodes report different or no leaders: {leaders:?}"));
            }
            if acting.len() != 1 || primary.is_none() || Some(acting[0]) != primary {
                problems.push(format!(
                    "acting primaries {acting:?}, committed primary {primary:?}"
                ));
            }
            let indexes: BTreeSet<u64> = applied.values().copied().collect();
            if indexes.len() != 1 {
                problems.push(format!("applied indexes differ: {applied:?}"));
            }
            last = Convergence {
                converged: problems.is_empty(),
                took_ms: t0.elapsed().as_millis() as u64,
                primary,
                epoch: epochs.iter().next().copied().unwrap_or(0),
                applied,
                problems,
            };
            if last.converged {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last
    }
}

/// Moves a created (not started) cluster into network namespaces: one per node, addresses
/// rewritten from 127.0.0.1 to the node's own, and every node started through a wrapper
/// that enters its namespace (`ip netns exec` execs the daemon, so the PID the launcher
/// holds is the daemon's and kill/stop/cont reach it).
pub(crate) fn into_namespaces(cluster: &mut LocalCluster) -> Result<crate::netns::Netns, RunError> {
    use std::net::SocketAddr;
    use std::os::unix::fs::PermissionsExt;
    let net = crate::netns::Netns::create(&cluster.ids())
        .map_err(|e| setup("create the network namespaces")(e.to_string()))?;
    let mut moves: Vec<(String, String)> = Vec::new();
    for n in &mut cluster.nodes {
        let ip = std::net::IpAddr::V4(net.ip(n.member.id));
        for a in [
            &mut n.member.raft,
            &mut n.member.heartbeat,
            &mut n.member.api,
        ] {
            let new = SocketAddr::new(ip, a.port());
            moves.push((a.to_string(), new.to_string()));
            *a = new;
        }
        n.reach_api = n.member.api;
    }
    for n in &cluster.nodes {
        let text = std::fs::read_to_string(&n.config)
            .map_err(|e| setup(format!("read {}", n.config.display()))(e.to_string()))?;
        let mut text = text;
        for (old, new) in &moves {
            text = text.replace(&format!("\"{old}\""), &format!("\"{new}\""));
        }
        std::fs::write(&n.config, text)
            .map_err(|e| setup(format!("write {}", n.config.display()))(e.to_string()))?;
    }
    let wrapper = cluster.path().join("in-netns.sh");
    let script = format!(
        "#!/bin/sh\n# Runs quorate in the namespace of the node whose config is $3 (nodeN.toml).\nn=${{3##*/node}}\nn=${{n%.toml}}\nexec ip netns exec {} \"{}\" \"$@\"\n",
        net.namespace_prefix() + "$n",
        cluster.bin.display()
    );
    std::fs::write(&wrapper, script)
        .map_err(|e| setup(format!("write {}", wrapper.display()))(e.to_string()))?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| setup(format!("chmod {}", wrapper.display()))(e.to_string()))?;
    cluster.bin = wrapper;
    Ok(net)
}

fn write_marker_hook(dir: &Path) -> Result<PathBuf, RunError> {
    use std::os::unix::fs::PermissionsExt;
    let hook = dir.join("marker.sh");
    std::fs::write(&hook, MARKER)
        .map_err(|e| setup(format!("write {}", hook.display()))(e.to_string()))?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| setup(format!("chmod {}", hook.display()))(e.to_string()))?;
    Ok(hook)
}

/// Runs the whole test; returns the output directory's path when the run completed (the
/// checks are done by the caller).
pub async fn run(opts: &RunOptions) -> Result<PathBuf, RunError> {
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| setup(format!("create {}", opts.out.display()))(e.to_string()))?;
    let out = opts
        .out
        .canonicalize()
        .map_err(|e| setup(format!("resolve {}", opts.out.display()))(e.to_string()))?;
    for stale in [
        "history.jsonl",
        "faults.jsonl",
        "hooks.log",
        "summary.json",
        "report.html",
        "convergence.json",
        "run.json",
    ] {
        let _ = std::fs::remove_file(out.join(stale));
    }
    let schedule = crate::nemesis::schedule(&ScheduleSpec {
        seed: opts.seed,
        kinds: opts.nemesis.clone(),
        run: opts.duration,
        interval: opts.interval,
        fault_duration: opts.fault_duration,
        nodes: opts.nodes,
    });

    let mut spec = ClusterSpec::voters(opts.nodes);
    spec.name = "chaos".into();
    spec.profile = opts.profile.clone();
    let mut cluster =
        LocalCluster::create(&spec).map_err(|e| setup("create the cluster")(e.to_string()))?;
    let hook = write_marker_hook(cluster.path())?;
    let mut extra = String::from("[resource]\n");
    for h in ["promote", "demote", "fence", "rejoin", "follow", "monitor"] {
        extra.push_str(&format!("{h} = \"{}\"\n", hook.display()));
    }
    extra.push_str("fencing = \"best-effort\"\n");
    extra.push_str(&format!(
        "monitor_interval = \"{}ms\"\nmax_service_lag_bytes = {MAX_SERVICE_LAG_BYTES}\n",
        MONITOR_INTERVAL.as_millis()
    ));
    let service = out.join("service");
    let _ = std::fs::remove_dir_all(&service);
    std::fs::create_dir_all(&service)
        .map_err(|e| setup(format!("create {}", service.display()))(e.to_string()))?;
    cluster
        .append_config(&extra)
        .map_err(|e| setup("write the node configs")(e.to_string()))?;
    cluster.env.push((
        "QUORATE_MARKER_LOG".into(),
        out.join("hooks.log").display().to_string(),
    ));
    cluster
        .env
        .push(("QUORATE_MARKER_DATA".into(), service.display().to_string()));
    cluster
        .env
        .push(("QUORATE_LOG".into(), opts.log_level.clone()));
    cluster.env.extend(opts.node_env.iter().cloned());
    let net = match opts.backend {
        Backend::Local => None,
        Backend::Netns => Some(into_namespaces(&mut cluster)?),
    };
    let apis: BTreeMap<u64, String> = cluster
        .nodes
        .iter()
        .map(|n| (n.member.id, n.member.api.to_string()))
        .collect();
    let faults_path = out.join("faults.jsonl");
    let faults = std::fs::File::create(&faults_path)
        .map_err(|e| setup(format!("create {}", faults_path.display()))(e.to_string()))?;
    let http = http_client(&cluster)?;
    let mut chaos = Chaos {
        cluster,
        net,
        paused: BTreeSet::new(),
        faults: std::io::BufWriter::new(faults),
        http,
        apis: apis.clone(),
        service,
    };
    let hist_path = out.join("history.jsonl");
    let hist = History {
        rec: Arc::new(Mutex::new(Recorder::create(&hist_path).map_err(|e| {
            setup(format!("create {}", hist_path.display()))(e.to_string())
        })?)),
        ops: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        failed: Arc::new(AtomicBool::new(false)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let append_keys = Arc::new(Mutex::new(BTreeSet::new()));

    let result = {
        let main = main_phase(
            opts,
            &mut chaos,
            &schedule,
            &hist,
            &stop,
            &append_keys,
            &apis,
        );
        tokio::select! {
            r = main => r,
            _ = tokio::signal::ctrl_c() => Err(RunError::Interrupted(out.clone())),
        }
    };
    stop.store(true, Ordering::Relaxed);
    // Whatever happened: heal, so nothing stays stopped, then stop every process by dropping
    // the cluster (kill -9 by PID, temp dir removed) after saving the node logs.
    chaos.heal_all();
    if let Ok(mut r) = hist.rec.lock() {
        let _ = r.flush();
    }
    let run_result = match result {
        Ok((start_ns, end_ns, convergence)) => {
            let meta = RunMeta {
                backend: opts.backend.name().into(),
                workload: opts.workload,
                nodes: opts.nodes,
                clients: opts.clients,
                seed: opts.seed,
                duration_ms: opts.duration.as_millis() as u64,
                nemesis: opts.nemesis.clone(),
                schedule,
                start_ns,
                end_ns,
                converge_bound_ms: opts.converge_bound.as_millis() as u64,
                node_env: opts.node_env.clone(),
                max_service_lag_bytes: Some(MAX_SERVICE_LAG_BYTES),
            };
            write_json(&out.join("run.json"), &meta)?;
            write_json(&out.join("convergence.json"), &convergence)?;
            Ok(out.clone())
        }
        Err(e) => Err(e),
    };
    // Stop every node (kill -9 by PID, reaped), save the logs, then drop the cluster, which
    // removes its temp dir.
    for id in chaos.cluster.ids() {
        chaos.cluster.kill9(id);
    }
    for n in &chaos.cluster.nodes {
        let _ = std::fs::copy(&n.log, out.join(format!("node{}.log", n.member.id)));
    }
    drop(chaos);
    if hist.failed.load(Ordering::Relaxed) {
        return Err(setup(format!("write {}", hist_path.display()))(
            "a history write failed (disk full?)".into(),
        ));
    }
    run_result
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| setup(format!("encode {}", path.display()))(e.to_string()))?;
    std::fs::write(path, text)
        .map_err(|e| setup(format!("write {}", path.display()))(e.to_string()))
}

async fn wait_first_primary(chaos: &Chaos) -> Result<u64, RunError> {
    let t0 = Instant::now();
    while t0.elapsed() < FIRST_PRIMARY_BOUND {
        for id in chaos.cluster.ids() {
            if let Some(st) = chaos.cluster.status(id).await {
                if st.acting_primary {
                    return Ok(id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(RunError::NoFirstPrimary(FIRST_PRIMARY_BOUND))
}

/// Start, workload + nemesis, heal, converge, final reads. Returns (start_ns, end_ns,
/// convergence).
async fn main_phase(
    opts: &RunOptions,
    chaos: &mut Chaos,
    schedule: &[Step],
    hist: &History,
    stop: &Arc<AtomicBool>,
    append_keys: &Arc<Mutex<BTreeSet<String>>>,
    apis: &BTreeMap<u64, String>,
) -> Result<(u64, u64, Convergence), RunError> {
    chaos
        .cluster
        .start_all()
        .map_err(|e| setup("start the nodes")(e.to_string()))?;
    let first = wait_first_primary(chaos).await?;
    eprintln!(
        "[chaos] {} nodes up, node {first} is primary; {} faults scheduled over {:?}",
        opts.nodes,
        schedule.len(),
        opts.duration
    );

    let start = Instant::now();
    let start_ns = mono_ns();
    let deadline = start + opts.duration;
    let api_list: Vec<(u64, String)> = apis.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut tasks = Vec::new();
    for id in 0..opts.clients as u64 {
        let mut c = Client {
            id,
            http: http_client(&chaos.cluster)?,
            apis: api_list.clone(),
            hist: hist.clone(),
            rng: rand::rngs::StdRng::seed_from_u64(
                opts.seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            seq: 0,
            keys: opts.keys.max(1),
            start,
            append_keys: append_keys.clone(),
        };
        let stop = stop.clone();
        let workload = opts.workload;
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && c.hist.ops.load(Ordering::Relaxed) < MAX_OPS
            {
                match workload {
                    Workload::Register => c.reg_op().await,
                    Workload::Append => c.append_op().await,
                }
                let think = c.rng.gen_range(0..=MAX_THINK.as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(think)).await;
            }
        }));
    }
    for step in schedule {
        let at = start + Duration::from_millis(step.at_ms);
        tokio::time::sleep_until(at.into()).await;
        chaos.run_step(step).await;
    }
    tokio::time::sleep_until(deadline.into()).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let end_ns = mono_ns();
    chaos.heal_all();
    eprintln!(
        "[chaos] workload stopped after {:?}; waiting for convergence (bound {:?})",
        start.elapsed(),
        opts.converge_bound
    );
    let convergence = chaos.converge(opts.converge_bound).await;
    eprintln!(
        "[chaos] converged: {} in {} ms {:?}",
        convergence.converged, convergence.took_ms, convergence.problems
    );

    // Final reads, by a process of their own, once everything is healed.
    let keys: Vec<String> = match opts.workload {
        Workload::Register => (0..opts.keys.max(1)).map(|k| format!("reg/{k}")).collect(),
        Workload::Append => append_keys
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default(),
    };
    let http = http_client(&chaos.cluster)?;
    let process = opts.clients as u64;
    for key in keys {
        for attempt in 0..FINAL_READ_ATTEMPTS {
            let (node, api) = &api_list[attempt as usize % api_list.len()];
            let r = Rec {
                process,
                node: *node,
                f: Function::Read,
                key: &key,
                final_read: true,
            };
            let ok = match opts.workload {
                Workload::Append => read_list(&http, hist, &r, api).await,
                Workload::Register => final_register_read(&http, hist, &r, api).await,
            };
            if ok {
                break;
            }
            tokio::time::sleep(FINAL_READ_PAUSE).await;
        }
    }
    Ok((start_ns, end_ns, convergence))
}

async fn final_register_read(
    http: &reqwest::Client,
    hist: &History,
    r: &Rec<'_>,
    api: &str,
) -> bool {
    hist.record(r, EventType::Invoke, Value::Null, None);
    match get_key(http, api, r.key).await {
        Ok(v) => {
            let out = match v {
                None => Value::Null,
                Some((text, _)) => text.parse::<i64>().map(|n| json!(n)).unwrap_or(json!(text)),
            };
            hist.record(r, EventType::Ok, out, None);
            true
        }
        Err((definite, e)) => {
            let k = if definite {
                EventType::Fail
            } else {
                EventType::Info
            };
            hist.record(r, k, Value::Null, Some(e));
            false
        }
    }
}
