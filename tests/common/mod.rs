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

/// A TCP and a UDP port that were free a moment ago (the OS picks them).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp :0");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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
            writeln!(t, "[node]\nid = {}\nrole = \"{}\"\npriority = {}", m.id, m.role, m.priority).unwrap();
            writeln!(t, "[listen]\nraft = \"{}\"\nheartbeat = \"{}\"\napi = \"{}\"", m.raft, m.heartbeat, m.api).unwrap();
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
        self.nodes.iter().find(|n| n.member.id == id).expect("no such node")
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.member.id == id).expect("no such node")
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
        let child = Command::new(BIN)
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
        Client::new(&self.node(id).member.api.to_string(), Duration::from_secs(2))
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
                panic!("no agreed leader within {timeout:?}: {st:#?}\n{}", self.logs_tail());
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
                panic!("timed out after {timeout:?} waiting for {what}\n{}", self.logs_tail());
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
