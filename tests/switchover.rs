//! Issue 5 acceptance: planned switchover and supervised failback with real `quorate`
//! processes on 127.0.0.1.
//!
//! Every cluster here runs the shipped marker hook (through a small wrapper that gives each
//! node its own monitor-failure switch and can slow a hook down), so the hook log is the
//! authority on "never two primaries": `quorate_chaos::hooklog::check_exclusive` runs over it
//! at the end of every test. Writers retry the SAME key and value until a 200, and only a
//! 200 counts as acknowledged; every acknowledged write must be readable afterwards.
//!
//! Timeouts are generous (a loaded 2-core machine): the tests assert behaviour, not speed.
//! The write pause of each switchover is measured and printed, never asserted.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{http, Cluster, Options, WAIT};
use quorate::api::wire::NodeStatus;
use quorate_chaos::hooklog;
use serde_json::{json, Value};

/// The shipped marker hook (see its header for the switches it reads).
const MARKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/cluster-config/local/hooks/marker.sh"
);

/// At most this many clusters of this file run at once: each test starts 3-4 daemons, and
/// more at a time on a shared 2-core machine turns Raft timeouts into noise.
static CLUSTER_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Raft timings for workflow tests on a loaded, shared 2-core machine (the tests assert
/// what happens, not how fast). With the `lan` profile's 50 ms Raft heartbeat (which is also
/// openraft's RPC timeout) and 100 ms lease, a starved leader misses its lease and demotes
/// itself in the middle of a switchover or failback (seen here: "interrupted by a lease_lost
/// demotion"), which is correct behaviour but not what these tests are about.
const CALM_RAFT: &str = "election_timeout_min = \"1s\"\nelection_timeout_max = \"2s\"\n\
                         raft_heartbeat = \"200ms\"\nlease = \"700ms\"\n";

/// Failure-detector timings unless a test sets its own: a starved node is not declared
/// dead (and so ineligible) after a few hundred milliseconds of silence.
const CALM_DETECTOR: &str = "suspect_after = \"500ms\"\ndead_after = \"1s\"\n";

/// Every poll loop sleeps this long between looks.
const POLL: Duration = Duration::from_millis(50);

/// How long a test gives the cluster to start and elect its first primary.
const STARTUP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Hooks: one wrapper script around marker.sh with per-node switches.
// ---------------------------------------------------------------------------------------

/// The hook wrapper and its switch files, in a temp dir that outlives the cluster's.
struct Hooks {
    dir: tempfile::TempDir,
}

impl Hooks {
    fn new() -> Hooks {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("hooks tempdir");
        let d = dir.path().display().to_string();
        // Per-node environment without per-node configs: the daemon exports QUORATE_NODE
        // and QUORATE_HOOK to every hook, so the wrapper derives the node's own switch files.
        // A `slow-<hook>` file holds a number of seconds that hook sleeps AFTER the marker
        // line is written (the line is the hook's start, which is what the checker needs).
        let script = format!(
            "#!/bin/sh\n\
             export QUORATE_MARKER_LOG='{d}/hooks.log'\n\
             export QUORATE_MONITOR_FAIL_FILE='{d}/monitor-fail-'\"$QUORATE_NODE\"\n\
             '{MARKER}'\n\
             rc=$?\n\
             slow='{d}/slow-'\"$QUORATE_HOOK\"\n\
             if [ -e \"$slow\" ]; then sleep \"$(cat \"$slow\")\"; fi\n\
             exit $rc\n"
        );
        let path = dir.path().join("hook.sh");
        std::fs::write(&path, script).expect("write hook wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod hook wrapper");
        Hooks { dir }
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("hook.sh")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("hooks.log")
    }

    /// While on, node `id`'s monitor hook exits 1.
    fn set_monitor_failing(&self, id: u64, failing: bool) {
        let f = self.dir.path().join(format!("monitor-fail-{id}"));
        if failing {
            std::fs::write(&f, "").expect("create monitor fail file");
        } else {
            let _ = std::fs::remove_file(&f);
        }
    }

    /// While Some(secs), every `hook` run (on every node) sleeps that long after marking.
    fn set_slow(&self, hook: &str, secs: Option<u32>) {
        let f = self.dir.path().join(format!("slow-{hook}"));
        match secs {
            Some(s) => std::fs::write(&f, s.to_string()).expect("create slow file"),
            None => {
                let _ = std::fs::remove_file(&f);
            }
        }
    }

    fn events(&self) -> Vec<hooklog::HookEvent> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        hooklog::parse(&text).unwrap_or_else(|e| panic!("hook log unreadable: {e}"))
    }

    /// Never two primaries, epochs strictly increasing. Returns the events for more checks.
    fn assert_exclusive(&self, c: &Cluster) -> Vec<hooklog::HookEvent> {
        let events = self.events();
        let anomalies = hooklog::check_exclusive(&events);
        assert!(
            anomalies.is_empty(),
            "hook log shows overlapping primaries or reused epochs: {anomalies:#?}\nlog:\n{}\n{}",
            std::fs::read_to_string(self.log()).unwrap_or_default(),
            c.logs_tail()
        );
        assert!(
            events.iter().any(|e| e.event == "promote"),
            "the hook log recorded no promotion at all: the hooks did not run"
        );
        events
    }
}

/// Config text appended to every node: timing, resource hooks, failback.
#[derive(Default)]
struct Setup {
    /// Failure-detector `[timing]` keys (`CALM_DETECTOR` when empty); `CALM_RAFT` is
    /// always there.
    timing: &'static str,
    /// Extra `[resource]` keys.
    resource: &'static str,
    /// `[failback]` keys (no table when empty).
    failback: &'static str,
}

fn new_cluster(roles: &[&'static str], hooks: &Hooks, setup: Setup) -> Cluster {
    let h = hooks.script().display().to_string();
    let detector = if setup.timing.is_empty() {
        CALM_DETECTOR
    } else {
        setup.timing
    };
    let mut extra = format!("\n[timing]\n{CALM_RAFT}{detector}\n");
    extra.push_str(&format!(
        "[resource]\npromote = \"{h}\"\ndemote = \"{h}\"\nmonitor = \"{h}\"\nfence = \"{h}\"\n\
         rejoin = \"{h}\"\nmonitor_interval = \"300ms\"\n{}\n",
        setup.resource
    ));
    if !setup.failback.is_empty() {
        extra.push_str(&format!("[failback]\n{}\n", setup.failback));
    }
    Cluster::new(
        roles,
        Options {
            cluster: "switchover".into(),
            extra,
        },
    )
}

// ---------------------------------------------------------------------------------------
// Status helpers.
// ---------------------------------------------------------------------------------------

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An operation phase as text: "scheduled", "cutting_over/pausing", "verifying", ...
fn phase_of(op: &Value) -> String {
    match &op["phase"] {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .iter()
            .next()
            .map(|(k, v)| format!("{k}/{}", v.as_str().unwrap_or("?")))
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

fn phase(s: &NodeStatus) -> Option<String> {
    s.operation.as_ref().map(phase_of)
}

fn running(c: &Cluster) -> Vec<u64> {
    c.ids().into_iter().filter(|i| c.is_running(*i)).collect()
}

/// The settled primary: every running node answers, names the same primary, has no
/// operation in progress, and exactly one of them (the primary) says it is acting.
async fn settled_primary(c: &Cluster) -> Option<(u64, Vec<NodeStatus>)> {
    let st = c.statuses().await;
    if st.len() != running(c).len() || st.is_empty() {
        return None;
    }
    let p = st[0].primary?;
    let agree = st
        .iter()
        .all(|s| s.primary == Some(p) && s.operation.is_none());
    let acting: Vec<u64> = st
        .iter()
        .filter(|s| s.acting_primary)
        .map(|s| s.node_id)
        .collect();
    (agree && acting == vec![p]).then_some((p, st))
}

/// Waits for a settled primary for which `pred` holds; panics with the logs after `timeout`.
async fn wait_settled<F>(
    c: &Cluster,
    what: &str,
    timeout: Duration,
    mut pred: F,
) -> (u64, Vec<NodeStatus>)
where
    F: FnMut(u64, &[NodeStatus]) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((p, st)) = settled_primary(c).await {
            if pred(p, &st) {
                return (p, st);
            }
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\nstatuses: {:#?}\n{}",
                c.statuses().await,
                c.logs_tail()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The `failed_over` record as (home, current), when there is one.
fn failed_over(s: &NodeStatus) -> Option<(u64, u64)> {
    let f = s.failed_over.as_ref()?;
    Some((f["home"].as_u64()?, f["current"].as_u64()?))
}

/// Every node's notes, for failure messages and note checks.
fn all_notes(st: &[NodeStatus]) -> Vec<String> {
    st.iter().flat_map(|s| s.notes.iter().cloned()).collect()
}

// ---------------------------------------------------------------------------------------
// HTTP helpers for the control API.
// ---------------------------------------------------------------------------------------

/// One request; (status, JSON body). Status 0 when there was no HTTP answer.
async fn call(
    c: &Cluster,
    via: u64,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    // Longer than the daemon's operator timeout plus one forward.
    let client = http(Duration::from_secs(30));
    let mut req = client.request(method, format!("http://{}{path}", c.api(via)));
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, v)
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// A control request that must be accepted (200). Retries, bounded by `WAIT`, while the
/// node answers 503 or nothing (a leader change under load is not what the callers test).
async fn control_ok(
    c: &Cluster,
    via: u64,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = call(c, via, method.clone(), path, body.clone()).await;
        if status == 200 {
            assert_eq!(v["accepted"], json!(true), "{method} {path} via {via}: {v}");
            return v;
        }
        if !(status == 503 || status == 0) || Instant::now() > deadline {
            panic!(
                "{method} {path} {body:?} via node {via}: expected 200, got {status} {v}\n{}",
                c.logs_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A control request that must be refused with 409; returns the reason text.
async fn refused(
    c: &Cluster,
    via: u64,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = call(c, via, method.clone(), path, body.clone()).await;
        if status == 409 {
            let reason = v["error"].as_str().unwrap_or_default().to_string();
            assert!(!reason.is_empty(), "a refusal names its reason: {v}");
            return reason;
        }
        if !(status == 503 || status == 0) || Instant::now() > deadline {
            panic!(
                "{method} {path} {body:?} via node {via}: expected 409, got {status} {v}\n{}",
                c.logs_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /v1/switchover {"to": to}` that must be accepted. A target whose replication
/// progress the (possibly brand-new) leader does not know yet is refused with a reason;
/// that is retried for a bounded time. Any other refusal fails the test.
async fn switchover(c: &Cluster, via: u64, to: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = call(
            c,
            via,
            reqwest::Method::POST,
            "/v1/switchover",
            Some(json!({ "to": to })),
        )
        .await;
        let err = v["error"].as_str().unwrap_or_default();
        match status {
            200 => return,
            409 if err.contains("replication progress is unknown") => {}
            503 | 0 => {}
            _ => panic!(
                "switchover to {to} via {via}: {status} {v}\n{}",
                c.logs_tail()
            ),
        }
        if Instant::now() > deadline {
            panic!(
                "switchover to {to} via {via} never accepted: last {status} {v}\n{}",
                c.logs_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replicated history, read from node `via`.
async fn history(c: &Cluster, via: u64) -> Vec<Value> {
    let (status, v) = call(c, via, reqwest::Method::GET, "/v1/history", None).await;
    assert_eq!(status, 200, "history on node {via}: {v}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

/// History entries of one event type (the enum's tag, e.g. "operation_ended"), with the
/// entry's `at_unix_ms` next to the event's fields.
fn events_of(h: &[Value], tag: &str) -> Vec<(u64, Value)> {
    h.iter()
        .filter_map(|e| {
            let at = e["at_unix_ms"].as_u64().unwrap_or(0);
            e["event"].get(tag).map(|ev| (at, ev.clone()))
        })
        .collect()
}

/// The outcome of an ended operation as text: "completed", "undone", "aborted: ...".
fn outcome_of(ev: &Value) -> String {
    match &ev["outcome"] {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .iter()
            .next()
            .map(|(k, v)| format!("{k}: {}", v["reason"].as_str().unwrap_or("")))
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// The concurrent KV writer.
// ---------------------------------------------------------------------------------------

/// One task writing unique keys `prefix/NNNNNNN` in a loop through any node, retrying the
/// same key and value on 503 or no answer (moving to the next node), and recording the
/// instant of every 200.
struct Writer {
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicU64>,
    acked: Arc<Mutex<Vec<(String, String, Instant)>>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// A single key may take this long to be acknowledged (elections included) before the
/// writer gives up and the test fails.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);
/// Upper bound on writes per writer (the loop bound; tests stop it long before).
const MAX_WRITES: u64 = 1_000_000;

impl Writer {
    fn spawn(c: &Cluster, prefix: &'static str) -> Writer {
        let apis: Vec<SocketAddr> = c.ids().into_iter().map(|id| c.api(id)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, n, a) = (stop.clone(), acked_count.clone(), acked.clone());
        let task = tokio::spawn(async move {
            // Under a daemon's WRITE_TIMEOUT plus one forward.
            let client = http(Duration::from_secs(15));
            let mut target = 0usize;
            for i in 0..MAX_WRITES {
                if s.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let key = format!("{prefix}/{i:07}");
                let value = format!("value-{i}");
                let deadline = Instant::now() + WRITE_DEADLINE;
                loop {
                    let url = format!("http://{}/v1/kv/{key}", apis[target]);
                    match client.put(url).body(value.clone()).send().await {
                        Ok(r) if r.status().as_u16() == 200 => {
                            a.lock().expect("acked lock").push((
                                key.clone(),
                                value.clone(),
                                Instant::now(),
                            ));
                            n.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(r) if r.status().as_u16() == 503 => {}
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            return Err(format!("write {key} got {status}: {body}"));
                        }
                        Err(_) => {}
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "write {key} not acknowledged within {WRITE_DEADLINE:?}"
                        ));
                    }
                    target = (target + 1) % apis.len();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Ok(())
        });
        Writer {
            stop,
            acked_count,
            acked,
            task,
        }
    }

    fn count(&self) -> u64 {
        self.acked_count.load(Ordering::Relaxed)
    }

    /// Waits until the writer acknowledged `more` writes beyond what it had on entry.
    async fn wait_progress(&self, c: &Cluster, more: u64, what: &str) {
        let target = self.count() + more;
        c.wait_until(what, WAIT, || async { self.count() >= target })
            .await;
    }

    /// Stops the writer and returns every acknowledged write in order.
    async fn finish(self, c: &Cluster) -> Vec<(String, String, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("writer failed: {e}\n{}", c.logs_tail()),
            Err(e) => panic!("writer task: {e}"),
        }
        let v = self.acked.lock().expect("acked lock").clone();
        v
    }
}

/// Every acknowledged write is readable (linearizable listing through node `via`).
async fn assert_all_readable(
    c: &Cluster,
    via: u64,
    prefix: &str,
    acked: &[(String, String, Instant)],
) {
    let have = c.list_all(via, prefix, false).await;
    let missing: Vec<&String> = acked
        .iter()
        .filter(|(k, v, _)| have.get(k) != Some(v))
        .map(|(k, _, _)| k)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are lost (read via node {via}), e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Longest gap between consecutive acknowledged writes that overlaps [from, to].
fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> Option<Duration> {
    acks.windows(2)
        .filter(|w| w[1] >= from && w[0] <= to)
        .map(|w| w[1].duration_since(w[0]))
        .max()
}

/// Fails over from the settled primary `a` by kill -9, restarts `a`, and waits until the
/// leader says failback is available. Returns the new primary `b`.
async fn fail_over_and_bring_home_back(c: &mut Cluster, a: u64) -> u64 {
    c.kill9(a);
    let (b, _) = wait_settled(
        c,
        "a new primary after the home node was killed",
        WAIT,
        |p, st| p != a && st.iter().all(|s| failed_over(s) == Some((a, p))),
    )
    .await;
    c.start(a);
    c.wait_until(
        "\"failback available\" in the leader's notes after home caught up",
        WAIT,
        || async {
            c.status(b).await.is_some_and(|s| {
                s.notes
                    .iter()
                    .any(|n| n.contains(&format!("failback available: home node {a}")))
            })
        },
    )
    .await;
    b
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

/// Ten switchovers (to each other node and back) under a concurrent writer: every one
/// completes on its target, writes resume after each, no acknowledged write is lost and the
/// hook log never shows two primaries. Prints the measured write pause of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_switchovers_under_writes_lose_nothing() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    let hooks = Hooks::new();
    let mut c = new_cluster(&["voter", "voter", "voter"], &hooks, Setup::default());
    c.start_all();
    let (p0, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != p0).collect();
    let plan: Vec<u64> = [others[0], p0, others[1], p0]
        .into_iter()
        .cycle()
        .take(10)
        .collect();

    let writer = Writer::spawn(&c, "w");
    writer
        .wait_progress(&c, 20, "the writer's first writes")
        .await;

    let mut windows = Vec::new();
    // A switchover cut short by the environment (a starved leader missing its lease: the
    // daemon records "interrupted by a lease_lost demotion" and aborts, which is correct) is
    // retried, at most MAX_INTERRUPTIONS in all. Any other abort fails the test: in
    // particular "node N lost leadership while writes were paused" right after the planned
    // transfer, which is the new leader aborting from a state it has not finished applying.
    const MAX_INTERRUPTIONS: usize = 3;
    let mut interruptions: Vec<(usize, String)> = Vec::new();
    let mut by_failover = 0;
    let mut current = p0;
    for (k, &to) in plan.iter().enumerate() {
        loop {
            if current == to {
                // An interrupted attempt ended with `to` elected by the failover rules.
                by_failover += 1;
                break;
            }
            // Send through a different node each time: followers forward to the leader.
            let via = c.ids()[k % 3];
            let t0 = Instant::now();
            switchover(&c, via, to).await;
            let (p, _) = wait_settled(
                &c,
                &format!("switchover {k} to node {to} to end"),
                WAIT,
                |_, _| true,
            )
            .await;
            let t1 = Instant::now();
            let h = history(&c, p).await;
            let last = events_of(&h, "operation_ended")
                .pop()
                .map(|(_, e)| outcome_of(&e))
                .unwrap_or_default();
            let from = current;
            current = p;
            if last == "completed" {
                assert_eq!(p, to, "switchover {k} completed but node {p} is primary");
                windows.push((k, from, to, t0, t1));
                break;
            }
            let environmental = last.contains("lease_lost demotion");
            assert!(
                environmental && interruptions.len() < MAX_INTERRUPTIONS,
                "switchover {k} from node {from} to node {to} did not complete: {last}; node {p} \
                 is primary (earlier interruptions: {interruptions:?})\nhistory: {}\n{}",
                serde_json::to_string_pretty(&h[h.len().saturating_sub(8)..]).unwrap_or_default(),
                c.logs_tail()
            );
            interruptions.push((k, last));
        }
        // Writes resume on the new primary before the next move.
        writer
            .wait_progress(&c, 10, &format!("writes to resume after switchover {k}"))
            .await;
    }
    let acked = writer.finish(&c).await;
    let acks: Vec<Instant> = acked.iter().map(|(_, _, t)| *t).collect();

    // Every switchover is recorded as completed, with the daemon's own pause figure.
    let h = history(&c, current).await;
    let ended: Vec<Value> = events_of(&h, "operation_ended")
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["kind"] == json!("switchover"))
        .collect();
    let completed: Vec<&Value> = ended
        .iter()
        .filter(|e| outcome_of(e) == "completed")
        .collect();
    assert_eq!(
        completed.len(),
        10 - by_failover,
        "every switchover not cut short completed: {ended:#?}"
    );
    if !interruptions.is_empty() {
        eprintln!("switchovers interrupted by the environment and retried: {interruptions:?}");
    }
    let promoted_switchover = events_of(&h, "promoted")
        .into_iter()
        .filter(|(_, e)| e["reason"] == json!("switchover"))
        .count();
    assert!(
        promoted_switchover >= completed.len(),
        "a switchover promotion for every completed switchover in the history"
    );

    eprintln!(
        "switchover write pause (longest gap between acknowledged writes around each switchover):"
    );
    let mut gaps = Vec::new();
    for (i, (k, from, to, t0, t1)) in windows.iter().enumerate() {
        let gap = longest_gap(&acks, *t0, *t1).unwrap_or_default();
        gaps.push(gap);
        let daemon = completed
            .get(i)
            .and_then(|e| e["write_pause_ms"].as_u64().or(e["duration_ms"].as_u64()));
        eprintln!(
            "  #{k}: {from} -> {to}: client-side pause {:>5} ms, request-to-settled {:>5} ms, daemon-reported {:?} ms",
            gap.as_millis(),
            t1.duration_since(*t0).as_millis(),
            daemon
        );
    }
    gaps.sort();
    eprintln!(
        "  pause median {} ms, max {} ms; {} writes acknowledged",
        gaps[gaps.len() / 2].as_millis(),
        gaps[gaps.len() - 1].as_millis(),
        acked.len()
    );

    assert_all_readable(&c, others[0], "w/", &acked).await;
    let events = hooks.assert_exclusive(&c);
    // Each target ran its promote hook: 1 startup promotion + 10 switchovers.
    let promotes = events.iter().filter(|e| e.event == "promote").count();
    assert!(
        promotes >= 11,
        "expected at least 11 promote hooks, saw {promotes}"
    );
    eprintln!(
        "ten_switchovers_under_writes_lose_nothing took {:?}",
        started.elapsed()
    );
}

/// Switchover refused with the reason to: a witness, a non-member, the primary itself, a
/// drained node, a lagging node (stopped follower, more than max_lag_on_failover entries
/// behind but not yet dead), and a dead node. Nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_refusals_name_the_reason() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    let hooks = Hooks::new();
    // 3 voters + 1 witness (quorum 3: one voter may be down). A long dead_after keeps a
    // stopped follower "alive but lagging" long enough to ask about it.
    let mut c = new_cluster(
        &["voter", "voter", "voter", "witness"],
        &hooks,
        Setup {
            timing: "suspect_after = \"1s\"\ndead_after = \"6s\"",
            resource: "max_lag_on_failover = 5",
            ..Setup::default()
        },
    );
    c.start_all();
    let (p, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    let voters: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != p).collect();
    let (a, b) = (voters[0], voters[1]);
    let post = reqwest::Method::POST;

    let e = refused(
        &c,
        a,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": 4})),
    )
    .await;
    assert!(
        e.contains("node 4") && e.contains("witness"),
        "witness refusal: {e}"
    );

    let e = refused(
        &c,
        a,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": 9})),
    )
    .await;
    assert!(
        e.contains("9") && e.contains("not a configured member"),
        "non-member refusal: {e}"
    );

    let e = refused(
        &c,
        a,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": p})),
    )
    .await;
    assert!(e.contains("already the primary"), "self refusal: {e}");

    // Drained.
    control_ok(&c, b, post.clone(), &format!("/v1/nodes/{a}/drain"), None).await;
    c.wait_status(p, "drain recorded", WAIT, |s| s.drained.contains(&a))
        .await;
    let e = refused(
        &c,
        b,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": a})),
    )
    .await;
    assert!(
        e.contains(&format!("node {a} is drained")),
        "drained refusal: {e}"
    );
    control_ok(&c, b, post.clone(), &format!("/v1/nodes/{a}/undrain"), None).await;
    c.wait_status(p, "undrain recorded", WAIT, |s| s.drained.is_empty())
        .await;

    // Lagging: freeze b, commit more than max_lag entries without it, ask before it is dead.
    c.signal(b, libc::SIGSTOP);
    let frozen_at = Instant::now();
    for i in 0..20 {
        c.put_ok(p, &format!("lag/{i:02}"), "x").await;
    }
    let e = refused(
        &c,
        a,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": b})),
    )
    .await;
    let asked_after = frozen_at.elapsed();
    assert!(
        e.contains("entries behind") && e.contains("max_lag_on_failover = 5"),
        "lagging refusal (asked {asked_after:?} after freezing node {b}; dead_after is 6s): {e}"
    );

    // Dead: kill it for good and wait until the leader's detector calls it dead.
    c.kill9(b);
    c.wait_status(p, &format!("node {b} seen dead"), WAIT, |s| {
        s.peers.iter().any(|x| x.id == b && x.heartbeat == "dead")
    })
    .await;
    let e = refused(
        &c,
        a,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": b})),
    )
    .await;
    assert!(
        e.contains(&format!("node {b} is not heard on any heartbeat link")),
        "dead refusal: {e}"
    );

    // Nothing moved, no operation was ever started.
    let (still, _) = wait_settled(&c, "the primary unchanged", WAIT, |_, _| true).await;
    assert_eq!(still, p, "refused switchovers must not move the primary");
    let h = history(&c, p).await;
    assert!(
        events_of(&h, "operation_started").is_empty(),
        "a refused switchover starts no operation: {h:#?}"
    );
    hooks.assert_exclusive(&c);
    eprintln!(
        "switchover_refusals_name_the_reason took {:?}",
        started.elapsed()
    );
}

/// Issue 13: `quorate switchover --to N --at <past time>` used to start a switchover at once,
/// and `--at` read `NaN` seconds and negative hours. The CLI now refuses both before sending
/// anything (non-zero exit, the reason on stderr), and the leader refuses a past
/// `at_unix_ms` sent straight to the API (409 with the reason). Nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_at_a_past_or_malformed_time_is_refused() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let hooks = Hooks::new();
    let mut c = new_cluster(&["voter", "voter", "voter"], &hooks, Setup::default());
    c.start_all();
    let (p, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    let a = c.other_than(p);
    let api = c.api(a).to_string();
    let token = c.path().join(common::TEST_TOKEN_FILE).display().to_string();
    let to = a.to_string();
    let an_hour_ago = format!(
        "{}Z",
        quorate::cli::ops::format_unix_ms(now_unix_ms() - 3_600_000)
    );
    for (at, reason) in [
        (an_hour_ago.as_str(), "is in the past"),
        ("2000-01-01T00:00:00Z", "is in the past"),
        ("2099-01-01T00:00:NaNZ", "cannot read"),
        ("2099-01-01T-1:00:00Z", "cannot read"),
    ] {
        let out = common::cli(&[
            "--api",
            &api,
            "--token-file",
            &token,
            "switchover",
            "--to",
            &to,
            "--at",
            at,
        ]);
        let code = out.status.and_then(|s| s.code());
        assert!(
            code.is_some_and(|c| c != 0),
            "`switchover --at {at}` must fail, exited {code:?}\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains(reason) && out.stderr.contains(at),
            "`switchover --at {at}`: the reason names the time and says {reason:?}: {}",
            out.stderr
        );
    }
    // The server checks on its own clock (sent to a follower: it forwards to the leader).
    let e = refused(
        &c,
        a,
        reqwest::Method::POST,
        "/v1/switchover",
        Some(json!({"to": a, "at_unix_ms": now_unix_ms() - 60_000})),
    )
    .await;
    assert!(
        e.contains("not in the future") && e.contains("give a future time"),
        "server refusal of a past time: {e}"
    );
    let (still, _) = wait_settled(&c, "the primary unchanged", WAIT, |_, _| true).await;
    assert_eq!(still, p, "a refused switchover must not move the primary");
    let h = history(&c, p).await;
    assert!(
        events_of(&h, "operation_started").is_empty(),
        "a refused switchover starts no operation: {h:#?}"
    );
    hooks.assert_exclusive(&c);
}

/// A scheduled switchover shows in status, blocks other operations, and fires at its time;
/// another one is cancelled and never fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_switchover_fires_on_time_and_can_be_cancelled() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    let hooks = Hooks::new();
    let mut c = new_cluster(&["voter", "voter", "voter"], &hooks, Setup::default());
    c.start_all();
    let (p, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    let a = c.ids().into_iter().find(|i| *i != p).expect("another node");
    let post = reqwest::Method::POST;

    // Schedule p -> a a few seconds ahead (sent to a follower: it forwards).
    let at = now_unix_ms() + 5_000;
    control_ok(
        &c,
        a,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": a, "at_unix_ms": at})),
    )
    .await;
    let s = c
        .wait_status(a, "the scheduled operation in status", WAIT, |s| {
            s.operation.is_some()
        })
        .await;
    let op = s.operation.clone().expect("operation");
    assert_eq!(phase_of(&op), "scheduled", "{op}");
    assert_eq!(op["to"], json!(a), "{op}");
    assert_eq!(op["scheduled_at_unix_ms"], json!(at), "{op}");
    let ls = c.status(p).await.expect("leader status");
    assert!(
        ls.notes
            .iter()
            .any(|n| n.contains(&format!("switchover to node {a} scheduled at {at}"))),
        "the leader's notes say a switchover is scheduled: {:?}",
        ls.notes
    );
    // Another operation is refused while one is scheduled.
    let e = refused(
        &c,
        p,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": a})),
    )
    .await;
    assert!(
        e.contains("scheduled"),
        "refusal names the scheduled operation: {e}"
    );

    // Not before its time: still on p a little before `at`.
    let early = at.saturating_sub(1_000).saturating_sub(now_unix_ms());
    tokio::time::sleep(Duration::from_millis(early)).await;
    let s = c.status(p).await.expect("status before the scheduled time");
    if now_unix_ms() < at {
        assert_eq!(s.primary, Some(p), "fired early: {s:#?}");
        assert_eq!(phase(&s).as_deref(), Some("scheduled"), "{s:#?}");
    }
    wait_settled(&c, "the scheduled switchover to complete", WAIT, |q, _| {
        q == a
    })
    .await;
    let h = history(&c, a).await;
    let fired: Vec<(u64, Value)> = events_of(&h, "operation_step")
        .into_iter()
        .filter(|(_, e)| e["from_phase"] == json!("scheduled"))
        .collect();
    assert_eq!(fired.len(), 1, "one scheduled step: {h:#?}");
    assert!(
        fired[0].0 >= at,
        "fired at {} before its time {at}",
        fired[0].0
    );
    let ended = events_of(&h, "operation_ended");
    assert!(
        ended.iter().any(|(_, e)| outcome_of(e) == "completed"),
        "the scheduled switchover completed: {ended:#?}"
    );

    // Schedule a -> p, then cancel it: it must not fire.
    let at2 = now_unix_ms() + 4_000;
    control_ok(
        &c,
        p,
        post.clone(),
        "/v1/switchover",
        Some(json!({"to": p, "at_unix_ms": at2})),
    )
    .await;
    c.wait_status(p, "the second scheduled operation", WAIT, |s| {
        s.operation
            .as_ref()
            .is_some_and(|o| phase_of(o) == "scheduled")
    })
    .await;
    control_ok(&c, p, reqwest::Method::DELETE, "/v1/switchover", None).await;
    for id in c.ids() {
        c.wait_status(id, "the cancelled operation gone", WAIT, |s| {
            s.operation.is_none()
        })
        .await;
    }
    let e = refused(&c, p, reqwest::Method::DELETE, "/v1/switchover", None).await;
    assert!(e.contains("no scheduled switchover"), "second cancel: {e}");
    let wait = (at2 + 2_500).saturating_sub(now_unix_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let (q, _) = wait_settled(&c, "the primary after the cancelled time", WAIT, |_, _| {
        true
    })
    .await;
    assert_eq!(q, a, "a cancelled switchover must not fire");
    let h = history(&c, a).await;
    let ended = events_of(&h, "operation_ended");
    assert!(
        ended.iter().any(|(_, e)| outcome_of(e) == "cancelled"),
        "the cancellation is in the history: {ended:#?}"
    );
    assert_eq!(
        events_of(&h, "operation_step")
            .iter()
            .filter(|(_, e)| e["from_phase"] == json!("scheduled"))
            .count(),
        1,
        "only the first scheduled switchover fired"
    );
    hooks.assert_exclusive(&c);
    eprintln!(
        "scheduled_switchover_fires_on_time_and_can_be_cancelled took {:?}",
        started.elapsed()
    );
}

/// The failback path: kill A -> B (FailedOver) -> restart A -> failback available
/// -> failback --no-commit -> A primary, AwaitingCommit -> undo -> B primary, FailedOver ->
/// failback -> committed, Normal, A primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_no_commit_undo_then_commit() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    let hooks = Hooks::new();
    let mut c = new_cluster(
        &["voter", "voter", "voter"],
        &hooks,
        Setup {
            failback: "verify_checks = 3\nverify_timeout = \"20s\"",
            ..Setup::default()
        },
    );
    c.start_all();
    let (a, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    let b = fail_over_and_bring_home_back(&mut c, a).await;
    let post = reqwest::Method::POST;

    // failback --no-commit: A primary, awaiting commit.
    control_ok(
        &c,
        b,
        post.clone(),
        "/v1/failback",
        Some(json!({"no_commit": true})),
    )
    .await;
    c.wait_until(
        "A primary, failback awaiting commit, on every node",
        WAIT,
        || async {
            let st = c.statuses().await;
            st.len() == 3
                && st
                    .iter()
                    .all(|s| s.primary == Some(a) && phase(s).as_deref() == Some("awaiting_commit"))
                && st.iter().any(|s| s.node_id == a && s.acting_primary)
        },
    )
    .await;
    let st = c.statuses().await;
    assert!(
        st.iter()
            .filter(|s| s.acting_primary)
            .map(|s| s.node_id)
            .eq([a]),
        "only A acts: {st:#?}"
    );
    assert!(
        all_notes(&st).iter().any(|n| n.contains("failback commit")),
        "the notes tell the operator to commit or undo: {:?}",
        all_notes(&st)
    );
    // A second failback is refused while this one awaits its commit.
    let e = refused(&c, b, post.clone(), "/v1/failback", None).await;
    assert!(
        e.contains("awaiting_commit"),
        "failback while one is in progress: {e}"
    );

    // undo: back to B, failed over again.
    control_ok(&c, a, post.clone(), "/v1/failback/undo", None).await;
    wait_settled(&c, "B primary and FailedOver after undo", WAIT, |p, st| {
        p == b && st.iter().all(|s| failed_over(s) == Some((a, b)))
    })
    .await;

    // failback (auto commit): A primary, normal.
    let (status, v) = call(&c, b, post.clone(), "/v1/failback/commit", None).await;
    assert_eq!(
        status, 409,
        "commit with no failback in progress is refused: {v}"
    );
    control_ok(&c, b, post.clone(), "/v1/failback", None).await;
    wait_settled(
        &c,
        "A primary, failback committed, not failed over",
        WAIT,
        |p, st| p == a && st.iter().all(|s| s.failed_over.is_none()),
    )
    .await;
    let e = refused(&c, a, post.clone(), "/v1/failback", None).await;
    assert!(e.contains("not failed over"), "failback when normal: {e}");

    let h = history(&c, a).await;
    let outcomes: Vec<String> = events_of(&h, "operation_ended")
        .into_iter()
        .filter(|(_, e)| e["kind"] == json!("failback"))
        .map(|(_, e)| outcome_of(&e))
        .collect();
    assert_eq!(
        outcomes,
        vec!["undone", "committed"],
        "failback outcomes in order"
    );
    let steps: Vec<String> = events_of(&h, "operation_step")
        .into_iter()
        .map(|(_, e)| {
            format!(
                "{} -> {}",
                phase_of(&json!({"phase": e["from_phase"]})),
                phase_of(&json!({"phase": e["to_phase"]}))
            )
        })
        .collect();
    assert!(
        steps.iter().any(|s| s == "verifying -> awaiting_commit"),
        "the verified no-commit failback waited for commit: {steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s == "awaiting_commit -> undoing/pausing"),
        "undo started from awaiting_commit: {steps:?}"
    );
    hooks.assert_exclusive(&c);
    eprintln!(
        "failback_no_commit_undo_then_commit took {:?}",
        started.elapsed()
    );
}

/// A failback whose verification fails (home's monitor fails while Verifying) undoes by
/// itself: B primary and FailedOver again, and the history says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_with_failing_verify_undoes_automatically() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    let hooks = Hooks::new();
    let mut c = new_cluster(
        &["voter", "voter", "voter"],
        &hooks,
        Setup {
            // One failure is enough to fail verification; the threshold only keeps the
            // node "healthy" (eligible) for the cut-over itself.
            resource: "failure_threshold = 5",
            // 10 checks at 300 ms: a few seconds of Verifying to switch the monitor off in.
            failback: "verify_checks = 10\nverify_timeout = \"30s\"",
            ..Setup::default()
        },
    );
    c.start_all();
    let (a, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    let b = fail_over_and_bring_home_back(&mut c, a).await;

    control_ok(&c, b, reqwest::Method::POST, "/v1/failback", None).await;
    // Break A's monitor as soon as verification starts.
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let st = c.statuses().await;
        let phases: Vec<String> = st.iter().filter_map(phase).collect();
        for ph in &phases {
            if seen.last() != Some(ph) {
                seen.push(ph.clone());
            }
        }
        if phases.iter().any(|p| p == "verifying") {
            hooks.set_monitor_failing(a, true);
            break;
        }
        assert!(
            !phases.iter().any(|p| p.starts_with("undoing")),
            "undo before the monitor failed: {seen:?}"
        );
        if Instant::now() > deadline {
            panic!(
                "failback never reached verifying; phases seen {seen:?}\n{}",
                c.logs_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The reason shows in status while undoing (best effort: the undo may be quick).
    let mut status_reason = None;
    let deadline = Instant::now() + WAIT;
    loop {
        let st = c.statuses().await;
        if let Some(r) = st
            .iter()
            .filter_map(|s| s.operation.as_ref())
            .find_map(|o| o["reason"].as_str().map(str::to_string))
        {
            status_reason = Some(r);
        }
        if settled_primary(&c).await.is_some_and(|(p, _)| p == b) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, st) = wait_settled(&c, "automatic undo back to B", WAIT, |p, st| {
        p == b && st.iter().all(|s| failed_over(s) == Some((a, b)))
    })
    .await;
    hooks.set_monitor_failing(a, false);
    eprintln!(
        "verify failure: phases seen {seen:?}; reason in status while undoing: {status_reason:?}; notes now {:?}",
        all_notes(&st)
    );

    let h = history(&c, b).await;
    let undo_steps: Vec<Value> = events_of(&h, "operation_step")
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| {
            e["from_phase"] == json!("verifying")
                && phase_of(&json!({"phase": e["to_phase"]})) == "undoing/pausing"
        })
        .collect();
    assert_eq!(undo_steps.len(), 1, "one verifying -> undoing step: {h:#?}");
    let why = undo_steps[0]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "monitor failed on home node {a} during verification"
        )),
        "the history says why the failback was undone: {why:?}"
    );
    let outcomes: Vec<String> = events_of(&h, "operation_ended")
        .into_iter()
        .map(|(_, e)| outcome_of(&e))
        .collect();
    assert_eq!(
        outcomes,
        vec!["undone"],
        "the failback ended undone, never committed"
    );
    hooks.assert_exclusive(&c);
    eprintln!(
        "failback_with_failing_verify_undoes_automatically took {:?}",
        started.elapsed()
    );
}

/// Consistent end state after a crash mid-operation: exactly one acting primary that every
/// node names, no operation left, `failed_over` (if any) naming that primary.
async fn assert_recovers_consistently(c: &Cluster, what: &str) -> u64 {
    let (p, st) = wait_settled(c, what, Duration::from_secs(60), |_, _| true).await;
    for s in &st {
        if let Some((_, current)) = failed_over(s) {
            assert_eq!(
                current, p,
                "failed_over names the primary on node {}: {s:#?}",
                s.node_id
            );
        }
    }
    p
}

/// kill -9 of the leader during a switchover's CuttingOver, under a concurrent writer, twice:
/// first the source while its demote hook runs (Pausing), then the target after it took
/// leadership, while its promote hook runs (Promoting). Each time the cluster ends with one
/// primary and no operation, no acknowledged write is lost, and the hook log never shows
/// two primaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_switchover_cutover() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    let hooks = Hooks::new();
    let mut c = new_cluster(&["voter", "voter", "voter"], &hooks, Setup::default());
    c.start_all();
    let (p, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    let to = c.ids().into_iter().find(|i| *i != p).expect("another node");
    let writer = Writer::spawn(&c, "w");
    writer
        .wait_progress(&c, 20, "the writer's first writes")
        .await;

    // Round 1: a slow demote holds the source (the leader) in CuttingOver(Pausing).
    hooks.set_slow("demote", Some(3));
    switchover(&c, to, to).await;
    let s = c
        .wait_status(p, "the source demoting in the cut-over", WAIT, |s| {
            phase(s).as_deref() == Some("cutting_over/pausing") && s.local_role == "demoting"
        })
        .await;
    assert_eq!(
        s.raft_state, "leader",
        "node {p} leads during Pausing: {s:#?}"
    );
    c.kill9(p);
    hooks.set_slow("demote", None);
    let q = assert_recovers_consistently(&c, "recovery after the source died mid-switchover").await;
    writer
        .wait_progress(&c, 10, "writes to resume after the first crash")
        .await;
    let h = history(&c, q).await;
    let outcomes1: Vec<String> = events_of(&h, "operation_ended")
        .into_iter()
        .map(|(_, e)| outcome_of(&e))
        .collect();
    assert_eq!(
        outcomes1.len(),
        1,
        "the operation ended exactly once: {h:#?}"
    );
    eprintln!("round 1: killed source {p} while demoting; primary now {q}; outcome {outcomes1:?}");
    c.start(p);
    let (q, _) = wait_settled(&c, "the killed source rejoined", WAIT, |_, st| {
        st.len() == 3
    })
    .await;
    c.wait_steady(WAIT).await;

    // Round 2: a slow promote holds the target, already the leader, in CuttingOver(Promoting).
    let t2 = c
        .ids()
        .into_iter()
        .find(|i| *i != q && *i != p)
        .expect("a third node");
    hooks.set_slow("promote", Some(3));
    switchover(&c, q, t2).await;
    let s = c
        .wait_status(t2, "the target promoting in the cut-over", WAIT, |s| {
            phase(s).as_deref() == Some("cutting_over/promoting") && s.local_role == "promoting"
        })
        .await;
    assert_eq!(
        s.raft_state, "leader",
        "node {t2} leads while promoting: {s:#?}"
    );
    c.kill9(t2);
    hooks.set_slow("promote", None);
    let r = assert_recovers_consistently(&c, "recovery after the target died mid-switchover").await;
    writer
        .wait_progress(&c, 10, "writes to resume after the second crash")
        .await;
    let acked = writer.finish(&c).await;
    let h = history(&c, r).await;
    let outcomes: Vec<String> = events_of(&h, "operation_ended")
        .into_iter()
        .map(|(_, e)| outcome_of(&e))
        .collect();
    assert_eq!(
        outcomes.len(),
        2,
        "each operation ended exactly once: {h:#?}"
    );
    eprintln!(
        "round 2: killed target {t2} while promoting; primary now {r}; outcome {:?}; {} writes acknowledged",
        outcomes.last(),
        acked.len()
    );
    assert_all_readable(&c, r, "w/", &acked).await;

    // The killed node comes back as a replica; still one primary.
    c.start(t2);
    let (r2, _) = wait_settled(&c, "the killed target rejoined", WAIT, |_, st| {
        st.len() == 3
    })
    .await;
    assert_eq!(
        r2, r,
        "the rejoining node does not take the primary back by itself"
    );
    hooks.assert_exclusive(&c);
    eprintln!(
        "leader_killed_during_switchover_cutover took {:?}",
        started.elapsed()
    );
}

/// kill -9 of the leader (the failed-over primary B, while its demote hook runs in the
/// failback's CuttingOver) under a concurrent writer: one primary, no operation left, no
/// acknowledged write lost, never two primaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_failback_cutover() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    let hooks = Hooks::new();
    let mut c = new_cluster(&["voter", "voter", "voter"], &hooks, Setup::default());
    c.start_all();
    let (a, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    let b = fail_over_and_bring_home_back(&mut c, a).await;
    let writer = Writer::spawn(&c, "w");
    writer
        .wait_progress(&c, 20, "the writer's first writes")
        .await;

    hooks.set_slow("demote", Some(3));
    control_ok(&c, a, reqwest::Method::POST, "/v1/failback", None).await;
    let s = c
        .wait_status(b, "the failback cutting over on the leader", WAIT, |s| {
            phase(s).is_some_and(|ph| ph.starts_with("cutting_over"))
        })
        .await;
    assert_eq!(
        s.raft_state, "leader",
        "node {b} still leads during the cut-over: {s:#?}"
    );
    let phase_at_kill = phase(&s);
    c.kill9(b);
    hooks.set_slow("demote", None);

    let q = assert_recovers_consistently(&c, "recovery after the leader died mid-failback").await;
    writer
        .wait_progress(&c, 10, "writes to resume after the crash")
        .await;
    let acked = writer.finish(&c).await;
    let h = history(&c, q).await;
    let outcomes: Vec<String> = events_of(&h, "operation_ended")
        .into_iter()
        .map(|(_, e)| outcome_of(&e))
        .collect();
    assert_eq!(outcomes.len(), 1, "the failback ended exactly once: {h:#?}");
    let st = c.statuses().await;
    eprintln!(
        "killed leader {b} in phase {phase_at_kill:?}; primary now {q}; failback outcome {outcomes:?}; failed_over {:?}; {} writes acknowledged",
        st.first().and_then(|s| s.failed_over.clone()),
        acked.len()
    );
    assert_all_readable(&c, q, "w/", &acked).await;

    c.start(b);
    let (r, _) = wait_settled(&c, "the killed node rejoined", WAIT, |_, st| st.len() == 3).await;
    assert_eq!(
        r, q,
        "the rejoining node does not take the primary by itself"
    );
    hooks.assert_exclusive(&c);
    eprintln!(
        "leader_killed_during_failback_cutover took {:?}",
        started.elapsed()
    );
}

/// failback = "auto" with a delay: while home flaps (up about a second at a time) nothing
/// happens; once it stays up it fails back by itself, no sooner than the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_failback_waits_for_a_stable_home() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    const DELAY_MS: u64 = 4_000;
    let hooks = Hooks::new();
    let mut c = new_cluster(
        &["voter", "voter", "voter"],
        &hooks,
        Setup {
            failback: "mode = \"auto\"\ndelay = \"4s\"",
            ..Setup::default()
        },
    );
    c.start_all();
    let (a, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    c.kill9(a);
    let (b, _) = wait_settled(
        &c,
        "a new primary after the home node was killed",
        WAIT,
        |p, st| p != a && st.iter().all(|s| failed_over(s) == Some((a, p))),
    )
    .await;

    // Flap: up ~1 s, down ~2 s (longer than dead_after = 1 s), 4 times. Home counts as
    // eligible from shortly after each start until dead_after past each kill: about 2 s,
    // well under the delay.
    for _ in 0..4 {
        c.start(a);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        c.kill9(a);
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let s = c.status(b).await.expect("status of B while home flaps");
        assert_eq!(s.primary, Some(b), "no failback while home flaps: {s:#?}");
    }
    let h = history(&c, b).await;
    assert!(
        events_of(&h, "operation_started").is_empty(),
        "no failback may start while home flaps: {h:#?}"
    );

    // Stable: it fails back by itself, after at least the delay.
    c.start(a);
    let restarted_ms = now_unix_ms();
    wait_settled(
        &c,
        "automatic failback to the stable home",
        Duration::from_secs(60),
        |p, st| p == a && st.iter().all(|s| s.failed_over.is_none()),
    )
    .await;
    let h = history(&c, a).await;
    let begun = events_of(&h, "operation_started");
    assert_eq!(begun.len(), 1, "exactly one failback: {h:#?}");
    assert_eq!(begun[0].1["kind"], json!("failback"));
    let waited = begun[0].0.saturating_sub(restarted_ms);
    assert!(
        waited + 100 >= DELAY_MS,
        "failback started {waited} ms after home came back, before failback delay {DELAY_MS} ms"
    );
    let outcomes: Vec<String> = events_of(&h, "operation_ended")
        .into_iter()
        .map(|(_, e)| outcome_of(&e))
        .collect();
    assert_eq!(outcomes, vec!["committed"]);
    eprintln!("auto failback started {waited} ms after home's last restart");
    hooks.assert_exclusive(&c);
    eprintln!(
        "auto_failback_waits_for_a_stable_home took {:?}",
        started.elapsed()
    );
}

/// The switchover's cut-over pauses writes ("stop accepting writes briefly → final sync →
/// demote"): while the source's demote hook runs in CuttingOver(Pausing), a KV write must
/// not be acknowledged (a 503 to retry, or an answer held until the move is done). The
/// final sync relies on it: the source demotes only once the target has every entry,
/// which a log that keeps growing turns into a chase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_writes_are_not_acknowledged_while_a_cutover_pauses_them() {
    let _slot = CLUSTER_SLOTS.acquire().await.expect("slot");
    let started = Instant::now();
    let hooks = Hooks::new();
    let mut c = new_cluster(&["voter", "voter", "voter"], &hooks, Setup::default());
    c.start_all();
    let (p, _) = wait_settled(&c, "the first primary", STARTUP, |_, _| true).await;
    c.wait_steady(WAIT).await;
    let to = c.ids().into_iter().find(|i| *i != p).expect("another node");
    c.put_ok(p, "pause/before", "1").await;

    // A slow demote hook keeps the source inside the pause for a few seconds.
    hooks.set_slow("demote", Some(4));
    switchover(&c, p, to).await;
    c.wait_status(p, "the source demoting inside the cut-over", WAIT, |s| {
        s.local_role == "demoting" && phase(s).is_some_and(|ph| ph == "cutting_over/pausing")
    })
    .await;
    let asked = Instant::now();
    let r = c.kv_put(p, "pause/during", "2", "").await;
    let answered = asked.elapsed();
    let after = c.status(p).await.map(|s| (phase(&s), s.local_role.clone()));
    hooks.set_slow("demote", None);
    eprintln!(
        "PUT during the pause: {} after {answered:?}; source then {after:?}",
        r.status
    );
    let still_pausing = after
        .as_ref()
        .is_some_and(|(ph, _)| ph.as_deref() == Some("cutting_over/pausing"));
    assert!(
        !(r.status == 200 && still_pausing),
        "a KV write was acknowledged by node {p} after {answered:?} while its switchover was \
         still in cutting_over/pausing (writes should be paused): {r:?}"
    );

    wait_settled(&c, "the switchover to complete", WAIT, |q, _| q == to).await;
    hooks.assert_exclusive(&c);
    eprintln!(
        "kv_writes_are_not_acknowledged_while_a_cutover_pauses_them took {:?}",
        started.elapsed()
    );
}
