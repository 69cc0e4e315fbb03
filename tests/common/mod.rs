//! Test harness: real `quorate` processes on 127.0.0.1, free ports, temp data dirs.
//! Everything it starts is killed (by PID) and removed when the `Cluster` is dropped.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quorate::api::status::NodeStatus;
use quorate::client::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_quorate");

/// Generous: tests run on a loaded 2-core machine. Assert behaviour, not speed.
pub const WAIT: Duration = Duration::from_secs(30);

/// Relaxed Raft timings (append to `Options::extra`) for tests that are not about failover
/// speed: on a starved CPU the default 150-300 ms election timeouts can fire spuriously, and a
/// surprise election in the middle of, say, a CAS test turns a 409 into a 503.
pub const CALM_TIMING: &str =
    "\n[timing]\nelection_timeout_min = \"1s\"\nelection_timeout_max = \"2s\"\n";

/// Ports are taken from below the kernel's ephemeral range, so the thousands of outgoing
/// connections a test makes (whose source ports come from that range) can never grab a port a
/// node is about to listen on.
const PORT_FLOOR: u16 = 10_000;

/// Lowest ephemeral port (from /proc; Linux's default when unreadable).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// A port free for both TCP and UDP on 127.0.0.1 a moment ago, never handed out twice in this
/// process (a shared cursor walks the range from a random start, so concurrent tests and test
/// processes do not collide).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let high = ephemeral_low().max(PORT_FLOOR + 1_000);
    let span = u32::from(high - PORT_FLOOR);
    if CURSOR.load(Ordering::Relaxed) == u32::MAX {
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        let _ =
            CURSOR.compare_exchange(u32::MAX, seed % span, Ordering::Relaxed, Ordering::Relaxed);
    }
    // Bounded: one pass over the range.
    for _ in 0..span {
        let port = PORT_FLOOR + (CURSOR.fetch_add(1, Ordering::Relaxed) % span) as u16;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port between {PORT_FLOOR} and {high}");
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub role: &'static str,
    pub priority: u32,
    pub raft: SocketAddr,
    pub heartbeat: SocketAddr,
    pub api: SocketAddr,
}

pub struct NodeProc {
    pub member: Member,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

pub struct Options {
    pub cluster: String,
    /// Extra TOML appended to every node's config (e.g. `[timing]`, `[resource]`, `[storage]`).
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster: "test".into(),
            extra: String::new(),
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// Writes configs for members with the given roles (ids 1..=n). Starts nothing.
    pub fn new(roles: &[&'static str], opts: Options) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = roles
            .iter()
            .enumerate()
            .map(|(i, role)| Member {
                id: i as u64 + 1,
                role,
                priority: 100,
                raft: addr(free_port()),
                heartbeat: addr(free_port()),
                api: addr(free_port()),
            })
            .collect();
        let mut nodes = Vec::new();
        for m in &members {
            let mut t = String::new();
            writeln!(t, "cluster = \"{}\"", opts.cluster).unwrap();
            writeln!(t, "data_dir = \"data{}\"", m.id).unwrap();
            writeln!(
                t,
                "[node]\nid = {}\nrole = \"{}\"\npriority = {}",
                m.id, m.role, m.priority
            )
            .unwrap();
            writeln!(
                t,
                "[listen]\nraft = \"{}\"\nheartbeat = \"{}\"\napi = \"{}\"",
                m.raft, m.heartbeat, m.api
            )
            .unwrap();
            for p in &members {
                writeln!(
                    t,
                    "[[peer]]\nid = {}\nrole = \"{}\"\npriority = {}\nraft = \"{}\"\nheartbeat = [\"{}\"]\napi = \"{}\"",
                    p.id, p.role, p.priority, p.raft, p.heartbeat, p.api
                )
                .unwrap();
            }
            t.push_str(&opts.extra);
            let config = dir.path().join(format!("node{}.toml", m.id));
            std::fs::write(&config, t).expect("write config");
            nodes.push(NodeProc {
                member: m.clone(),
                log: dir.path().join(format!("node{}.log", m.id)),
                config,
                child: None,
            });
        }
        Cluster { dir, nodes }
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes
            .iter()
            .find(|n| n.member.id == id)
            .expect("no such node")
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.member.id == id)
            .expect("no such node")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.member.id).collect()
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("data{id}"))
    }

    /// Spawns the daemon for node `id` (appending its stderr to its log file).
    pub fn start(&mut self, id: u64) {
        let n = self.node_mut(id);
        assert!(n.child.is_none(), "node {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("open log");
        let child = daemon_command()
            .args(["run", "--config"])
            .arg(&n.config)
            .env("QUORATE_LOG", "info,openraft=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn quorate");
        n.child = Some(child);
    }

    pub fn start_all(&mut self) {
        for id in self.ids() {
            self.start(id);
        }
    }

    pub fn pid(&self, id: u64) -> Option<i32> {
        self.node(id).child.as_ref().map(|c| c.id() as i32)
    }

    pub fn signal(&self, id: u64, sig: i32) {
        if let Some(pid) = self.pid(id) {
            // SAFETY: kill(2) with a PID of a child we spawned and still own.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.node_mut(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit status.
    pub fn stop(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let mut c = self.node_mut(id).child.take()?;
        // SAFETY: as above.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self, id: u64) -> Client {
        Client::new(
            &self.node(id).member.api.to_string(),
            Duration::from_secs(2),
        )
    }

    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        self.client(id).get_json("/v1/status").await.ok()
    }

    /// Statuses of every running node that answers.
    pub async fn statuses(&self) -> Vec<NodeStatus> {
        let mut out = Vec::new();
        for n in &self.nodes {
            if n.child.is_some() {
                if let Some(s) = self.status(n.member.id).await {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Waits until every running node reports the same leader and term; returns (leader, term).
    pub async fn wait_agreed_leader(&self, timeout: Duration) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            let st = self.statuses().await;
            if st.len() == running && !st.is_empty() {
                let first = (st[0].leader_id, st[0].term);
                if let (Some(l), t) = first {
                    let leaders = st.iter().filter(|s| s.raft_state == "leader").count();
                    if leaders == 1 && st.iter().all(|s| (s.leader_id, s.term) == (Some(l), t)) {
                        return (l, t);
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no agreed leader within {timeout:?}: {st:#?}\n{}",
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !f().await {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of every node's log (for failure messages).
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(25);
            let _ = writeln!(out, "--- node {} log (last 25 lines) ---", n.member.id);
            for l in &lines[start..] {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn api(&self, id: u64) -> SocketAddr {
        self.node(id).member.api
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    /// Polls node `id`'s status until `pred` holds; returns that status. Panics (with every
    /// node's log tail) after `timeout`.
    pub async fn wait_status<F>(
        &self,
        id: u64,
        what: &str,
        timeout: Duration,
        mut pred: F,
    ) -> NodeStatus
    where
        F: FnMut(&NodeStatus) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(s) = self.status(id).await {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for node {id}: {what}\nlast status: {last:#?}\n{}",
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> NodeStatus {
        self.wait_status(id, &format!("applied_index >= {index}"), timeout, |s| {
            s.applied_index >= index
        })
        .await
    }

    /// `GET /health` on node `id`: the HTTP status, or None when it does not answer.
    pub async fn health(&self, id: u64) -> Option<u16> {
        let url = format!("http://{}/health", self.api(id));
        http(Duration::from_secs(5))
            .get(url)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    fn kv_url(&self, id: u64, key: &str, query: &str) -> String {
        if query.is_empty() {
            format!("http://{}/v1/kv/{key}", self.api(id))
        } else {
            format!("http://{}/v1/kv/{key}?{query}", self.api(id))
        }
    }

    /// `PUT /v1/kv/{key}?{query}` on node `id`.
    pub async fn kv_put(
        &self,
        id: u64,
        key: &str,
        value: impl Into<Vec<u8>>,
        query: &str,
    ) -> Reply {
        let req = kv_http()
            .put(self.kv_url(id, key, query))
            .body(value.into());
        Reply::from(req.send().await).await
    }

    /// `GET /v1/kv/{key}?{query}` on node `id`.
    pub async fn kv_get(&self, id: u64, key: &str, query: &str) -> Reply {
        let req = kv_http().get(self.kv_url(id, key, query));
        Reply::from(req.send().await).await
    }

    /// `DELETE /v1/kv/{key}?{query}` on node `id`.
    pub async fn kv_delete(&self, id: u64, key: &str, query: &str) -> Reply {
        let req = kv_http().delete(self.kv_url(id, key, query));
        Reply::from(req.send().await).await
    }

    /// Unconditional PUT that must succeed; returns the revision. Retries (the same key and
    /// value, so a retry is harmless) while the node answers 503 or nothing, as a client is
    /// told to: a leader change under a loaded CPU is not what the callers test.
    pub async fn put_ok(&self, id: u64, key: &str, value: &str) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.kv_put(id, key, value.as_bytes().to_vec(), "").await;
            if r.status == 200 {
                return r.body["revision"].as_u64().expect("revision in PUT reply");
            }
            let retryable = r.status == 503 || r.status == 0;
            if !retryable || Instant::now() > deadline {
                panic!("PUT {key} on node {id}: {r:?}\n{}", self.logs_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET that retries (bounded by `WAIT`) while the node answers 503 or nothing, as a client
    /// is told to; returns the first other answer. A retried read is still a read made after
    /// everything acknowledged before the first attempt.
    pub async fn get_ok(&self, id: u64, key: &str, query: &str) -> Reply {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.kv_get(id, key, query).await;
            if (r.status != 503 && r.status != 0) || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an agreed leader that also sees every follower alive and fully replicated:
    /// a settled cluster (start-up on a loaded machine can take a while). Returns the leader.
    pub async fn wait_steady(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let (leader, term) = self.wait_agreed_leader(timeout).await;
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            if let Some(s) = self.status(leader).await {
                let live = s
                    .peers
                    .iter()
                    .filter(|p| p.heartbeat == "alive" && p.matched_index == Some(s.last_log_index))
                    .count();
                if s.term == term && s.raft_state == "leader" && live + 1 >= running {
                    return leader;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "cluster not steady within {timeout:?}\n{}",
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every key under `prefix` with its value, read from node `id` page by page (`stale`: from
    /// its local applied state; else linearizably). Values must be UTF-8.
    pub async fn list_all(
        &self,
        id: u64,
        prefix: &str,
        stale: bool,
    ) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        let mut start_after: Option<String> = None;
        // Bounded: MAX_PAGES pages of PAGE keys each.
        const PAGE: usize = 500;
        const MAX_PAGES: usize = 1000;
        for _ in 0..MAX_PAGES {
            let mut q = format!("prefix=true&limit={PAGE}&stale={stale}");
            if let Some(s) = &start_after {
                q.push_str("&start_after=");
                q.push_str(&encode_query(s));
            }
            let r = self.kv_get(id, prefix, &q).await;
            assert_eq!(r.status, 200, "list {prefix} on node {id}: {r:?}");
            for it in r.body["items"].as_array().expect("items") {
                let k = it["key"].as_str().expect("key").to_string();
                let v = it["value"].as_str().expect("value").to_string();
                out.insert(k, v);
            }
            if r.body["more"].as_bool() != Some(true) {
                return out;
            }
            start_after = r.body["next_start_after"].as_str().map(str::to_string);
            assert!(
                start_after.is_some(),
                "more=true without next_start_after: {r:?}"
            );
        }
        panic!("listing {prefix} on node {id} did not end within {MAX_PAGES} pages");
    }

    /// Runs `quorate run` for node `id`'s config as a second process (not tracked by the
    /// cluster) and waits for it to exit within `timeout`; kills it if it does not.
    pub fn run_second_daemon(&self, id: u64, timeout: Duration) -> Exited {
        let child = daemon_command()
            .args(["run", "--config"])
            .arg(&self.node(id).config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn quorate");
        wait_exit(child, timeout)
    }
}

/// A `quorate` command that dies with the test: if the test process is killed (Ctrl-C, a
/// harness timeout), its daemons get SIGKILL instead of living on as orphans holding ports.
fn daemon_command() -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    // The signal follows the spawning thread; tests spawn from the thread that also drops the
    // Cluster (which kills every child first), so it never fires early.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// An HTTP answer: status and body (JSON when it parses, else the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Reply {
    /// 0 when the request failed without an HTTP answer (connection refused, timeout).
    pub status: u16,
    pub body: serde_json::Value,
    /// The `Retry-After` header, when there was one.
    pub retry_after: Option<String>,
    pub error: Option<String>,
}

impl Reply {
    fn failed(e: impl std::fmt::Display) -> Reply {
        Reply {
            status: 0,
            body: serde_json::Value::Null,
            retry_after: None,
            error: Some(e.to_string()),
        }
    }

    async fn from(res: reqwest::Result<reqwest::Response>) -> Reply {
        let resp = match res {
            Ok(r) => r,
            Err(e) => return Reply::failed(e),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match resp.bytes().await {
            Ok(b) => Reply {
                status,
                body: serde_json::from_slice(&b).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&b).into_owned())
                }),
                retry_after,
                error: None,
            },
            Err(e) => Reply::failed(e),
        }
    }

    pub fn value(&self) -> Option<&str> {
        self.body["value"].as_str()
    }
}

/// An HTTP client for tests: no proxy (the environment may set one), bounded time.
pub fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("build reqwest client")
}

/// The KV client: long enough for a write timeout plus one forward (the daemon answers 503
/// within its own WRITE_TIMEOUT), and for test watches of a few seconds.
pub fn kv_http() -> reqwest::Client {
    http(Duration::from_secs(20))
}

/// Percent-encodes a query value (keys in tests are ASCII; this covers the reserved ones).
pub fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// How a process ended: exit status (None if it had to be killed), stdout, stderr.
#[derive(Debug)]
pub struct Exited {
    pub status: Option<std::process::ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Waits up to `timeout` for `child` to exit (SIGKILL after that), collecting its output.
/// The pipes are drained on threads so a chatty child can never block on a full pipe.
pub fn wait_exit(mut child: Child, timeout: Duration) -> Exited {
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    Exited {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs the `quorate` CLI with `args` (bounded by `WAIT`).
pub fn cli(args: &[&str]) -> Exited {
    let child = Command::new(BIN)
        .args(args)
        .env_remove("QUORATE_API")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quorate cli");
    wait_exit(child, WAIT)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                // A SIGSTOPped child ignores nothing but SIGKILL; kill() sends SIGKILL.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
