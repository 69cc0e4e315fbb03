//! Launches a quorate cluster as child processes on 127.0.0.1 (free ports, a temp dir per
//! run), or in network namespaces the caller made (`NodeNet`). Every process it starts is
//! killed by PID when the `LocalCluster` is dropped. The one launcher: the demo, the chaos
//! harness, the benchmarks and the integration tests (`tests/common`) all start clusters here.
//!
//! Every node shares one API admin token (`<dir>/api.token`, mode 0600, named by each config's
//! `[api] token_file`): `client`, `auth_headers` and `token` give it to whoever sends
//! requests. Cluster traffic is plaintext unless `enable_secret` is called before start.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::api::wire::{NodeStatus, TOKEN_FILE_NAME};
use crate::cli::client::Client;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot find the quorate binary at {0}; build it (cargo build --release) or set QUORATE_BIN")]
    NoBinary(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// `$QUORATE_BIN`, else `quorate` next to the running executable.
pub fn quorate_binary() -> Result<PathBuf, LaunchError> {
    if let Ok(p) = std::env::var("QUORATE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(io("cannot locate the running executable"))?;
    let bin = me.with_file_name("quorate");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(LaunchError::NoBinary(bin))
    }
}

/// Ports are taken from below the kernel's ephemeral range, so the thousands of outgoing
/// connections a test or benchmark makes (whose source ports come from that range) can never
/// grab a port a node is about to listen on.
const PORT_FLOOR: u16 = 10_000;

/// Lowest ephemeral port (from /proc; Linux's default when unreadable).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// A port free for both TCP and UDP on 127.0.0.1 a moment ago, never handed out twice in this
/// process (a shared cursor walks the range below the ephemeral ports from a random start, so
/// concurrent clusters in one process, and concurrent processes, do not collide).
pub fn free_port() -> Result<u16, LaunchError> {
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
            return Ok(port);
        }
    }
    Err(LaunchError::Io {
        what: format!("no free TCP+UDP port between {PORT_FLOOR} and {high} on 127.0.0.1"),
        source: std::io::Error::other("ports exhausted; stop other clusters or widen the range"),
    })
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub role: String,
    pub priority: u32,
    pub raft: SocketAddr,
    pub heartbeat: SocketAddr,
    pub api: SocketAddr,
}

/// A node's addresses when it does not use the default layout (127.0.0.1, free ports): for
/// nodes in network namespaces.
#[derive(Clone, Debug)]
pub struct NodeNet {
    /// Advertised in every `[[peer]]` entry and bound in `[listen]`.
    pub raft: SocketAddr,
    pub heartbeat: SocketAddr,
    /// Advertised API (peers forward control requests there).
    pub api: SocketAddr,
    /// `[listen] api` (e.g. 0.0.0.0 with `api`'s port, to be reachable on a second link).
    pub api_listen: SocketAddr,
    /// Where the launcher's owner reaches the API.
    pub reach_api: SocketAddr,
    /// Network namespace (a name under /var/run/netns) the daemon is started in.
    pub netns: Option<String>,
}

pub struct ClusterSpec {
    pub name: String,
    /// Member roles, ids 1..=n.
    pub roles: Vec<String>,
    /// `profile = ...` in every config; empty leaves it out (the default, lan).
    pub profile: String,
    /// TOML appended to every config (`[timing]`, `[resource]`, ...).
    pub extra: String,
    /// Environment for every node (e.g. QUORATE_MARKER_LOG).
    pub env: Vec<(String, String)>,
    /// Explicit addresses, one per role (id i+1 gets `nets[i]`); None: 127.0.0.1, free ports.
    pub nets: Option<Vec<NodeNet>>,
    /// The API admin token; None draws a random one.
    pub token: Option<String>,
    /// The daemon binary; None: `quorate_binary()`.
    pub bin: Option<PathBuf>,
    /// Daemons get SIGKILL when the thread that started them dies (PR_SET_PDEATHSIG): for
    /// tests and benchmarks, whose daemons must not outlive a killed harness. Off for the
    /// demo, whose `--keep` leaves the cluster running after it exits.
    pub die_with_parent: bool,
}

impl ClusterSpec {
    pub fn voters(n: usize) -> ClusterSpec {
        ClusterSpec {
            name: "bench".into(),
            roles: vec!["voter".into(); n],
            profile: "lan".into(),
            extra: String::new(),
            env: Vec::new(),
            nets: None,
            token: None,
            bin: None,
            die_with_parent: false,
        }
    }
}

pub struct NodeProc {
    pub member: Member,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Environment for this node only, applied after the cluster's at each `start`.
    pub env: Vec<(String, String)>,
    /// Where the launcher's owner reaches the node's API (`member.api` unless the node lives
    /// in a network namespace).
    pub reach_api: SocketAddr,
    /// Network namespace (a name under /var/run/netns) the daemon is started in.
    pub netns: Option<String>,
}

pub struct LocalCluster {
    /// Removed on drop unless `detach`ed.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    pub bin: PathBuf,
    pub nodes: Vec<NodeProc>,
    pub env: Vec<(String, String)>,
    /// The API admin token every node uses (mutating requests need it).
    pub token: String,
    die_with_parent: bool,
}

/// Writes `text` to a new file `path` with mode 0600.
fn write_private(path: &Path, text: &str) -> Result<(), LaunchError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("create {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io(format!("write {}", path.display())))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl LocalCluster {
    /// Writes the configs; starts nothing.
    pub fn create(spec: &ClusterSpec) -> Result<LocalCluster, LaunchError> {
        let bin = match &spec.bin {
            Some(b) => b.clone(),
            None => quorate_binary()?,
        };
        if let Some(nets) = &spec.nets {
            if nets.len() != spec.roles.len() {
                return Err(LaunchError::Io {
                    what: format!(
                        "{} node addresses for {} roles",
                        nets.len(),
                        spec.roles.len()
                    ),
                    source: std::io::Error::other("give one NodeNet per role"),
                });
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("quorate-cluster-")
            .tempdir()
            .map_err(io("create temp dir"))?;
        let mut members = Vec::new();
        for (i, role) in spec.roles.iter().enumerate() {
            let id = i as u64 + 1;
            let (raft, heartbeat, api) = match spec.nets.as_ref().map(|n| &n[i]) {
                Some(net) => (net.raft, net.heartbeat, net.api),
                None => (addr(free_port()?), addr(free_port()?), addr(free_port()?)),
            };
            members.push(Member {
                id,
                role: role.clone(),
                priority: 100,
                raft,
                heartbeat,
                api,
            });
        }
        let token = match &spec.token {
            Some(t) => t.clone(),
            None => {
                use rand::RngCore;
                let mut b = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut b);
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            }
        };
        let token_file = dir.path().join(TOKEN_FILE_NAME);
        write_private(&token_file, &format!("{token}\n"))?;
        let mut nodes = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let net = spec.nets.as_ref().map(|n| n[i].clone());
            let api_listen = net.as_ref().map(|n| n.api_listen).unwrap_or(m.api);
            let mut t = String::new();
            let _ = writeln!(
                t,
                "cluster = \"{}\"\ndata_dir = \"data{}\"",
                spec.name, m.id
            );
            if !spec.profile.is_empty() {
                let _ = writeln!(t, "profile = \"{}\"", spec.profile);
            }
            let _ = writeln!(
                t,
                "[node]\nid = {}\nrole = \"{}\"\npriority = {}",
                m.id, m.role, m.priority
            );
            let _ = writeln!(
                t,
                "[listen]\nraft = \"{}\"\nheartbeat = \"{}\"\napi = \"{}\"",
                m.raft, m.heartbeat, api_listen
            );
            for p in &members {
                let _ = writeln!(
                    t,
                    "[[peer]]\nid = {}\nrole = \"{}\"\npriority = {}\nraft = \"{}\"\nheartbeat = [\"{}\"]\napi = \"{}\"",
                    p.id, p.role, p.priority, p.raft, p.heartbeat, p.api
                );
            }
            // Relative to the config's folder, where the token file is.
            let _ = writeln!(t, "[api]\ntoken_file = \"{TOKEN_FILE_NAME}\"");
            t.push_str(&spec.extra);
            let config = dir.path().join(format!("node{}.toml", m.id));
            std::fs::write(&config, t).map_err(io(format!("write {}", config.display())))?;
            nodes.push(NodeProc {
                member: m.clone(),
                log: dir.path().join(format!("node{}.log", m.id)),
                config,
                child: None,
                env: Vec::new(),
                reach_api: net.as_ref().map(|n| n.reach_api).unwrap_or(m.api),
                netns: net.and_then(|n| n.netns),
            });
        }
        Ok(LocalCluster {
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            bin,
            nodes,
            env: spec.env.clone(),
            token,
            die_with_parent: spec.die_with_parent,
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The file holding the API token (for `quorate --token-file`).
    pub fn token_file(&self) -> PathBuf {
        self.root.join(TOKEN_FILE_NAME)
    }

    /// `Authorization: Bearer <token>`, for `reqwest::ClientBuilder::default_headers`.
    pub fn auth_headers(&self) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.token)) {
            h.insert(reqwest::header::AUTHORIZATION, v);
        }
        h
    }

    /// Gives every node one new cluster secret (`<dir>/cluster.secret`, mode 0600), so
    /// heartbeats and Raft traffic are authenticated and encrypted. Call before starting.
    pub fn enable_secret(&self) -> Result<PathBuf, LaunchError> {
        let path = self.root.join("cluster.secret");
        crate::config::secret::write_new(&path)
            .map_err(io(format!("create {}", path.display())))?;
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.config)
                .map_err(io(format!("read {}", n.config.display())))?;
            let text = format!("secret_file = \"{}\"\n{text}", path.display());
            std::fs::write(&n.config, text).map_err(io(format!("write {}", n.config.display())))?;
        }
        Ok(path)
    }

    /// Appends TOML to every node's config (before the nodes start).
    pub fn append_config(&self, text: &str) -> Result<(), LaunchError> {
        use std::io::Write;
        for n in &self.nodes {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&n.config)
                .map_err(io(format!("open {}", n.config.display())))?;
            f.write_all(text.as_bytes())
                .map_err(io(format!("write {}", n.config.display())))?;
        }
        Ok(())
    }

    /// Leaves the processes running and the directory in place (the demo's `--keep`).
    pub fn detach(mut self) {
        for n in &mut self.nodes {
            n.child = None;
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.member.id).collect()
    }

    fn node_mut(&mut self, id: u64) -> Option<&mut NodeProc> {
        self.nodes.iter_mut().find(|n| n.member.id == id)
    }

    pub fn node(&self, id: u64) -> Option<&NodeProc> {
        self.nodes.iter().find(|n| n.member.id == id)
    }

    /// The node's data directory (`data<ID>` beside its config).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("data{id}"))
    }

    /// Spawns node `id`'s daemon (stdout and stderr appended to its log file); nothing when it
    /// runs already or does not exist.
    pub fn start(&mut self, id: u64) -> Result<(), LaunchError> {
        let bin = self.bin.clone();
        let env = self.env.clone();
        let die_with_parent = self.die_with_parent;
        let Some(n) = self.node_mut(id) else {
            return Ok(());
        };
        if n.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(io(format!("open {}", n.log.display())))?;
        let log2 = log.try_clone().map_err(io("clone node log"))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["run", "--config"])
            .arg(&n.config)
            .envs(env.iter().chain(n.env.iter()).map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log);
        if die_with_parent {
            die_with_parent_thread(&mut cmd);
        }
        // Opened here, in the parent; the child joins the namespace between fork and exec.
        // The file stays open until after spawn (O_CLOEXEC: the daemon does not inherit it).
        let ns_file = match &n.netns {
            Some(name) => {
                let path = Path::new("/var/run/netns").join(name);
                Some(
                    std::fs::File::open(&path)
                        .map_err(io(format!("open network namespace {}", path.display())))?,
                )
            }
            None => None,
        };
        if let Some(f) = &ns_file {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = f.as_raw_fd();
            // SAFETY: setns(2) is async-signal-safe; `fd` stays open until spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(io(format!("spawn {}", bin.display())))?;
        drop(ns_file);
        n.child = Some(child);
        Ok(())
    }

    /// SIGTERM, then wait up to `grace` for the exit (SIGKILL after it); the exit status.
    pub fn stop(&mut self, id: u64, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.node_mut(id)?.child.take()?;
        // SAFETY: kill(2) on the PID of a child this launcher spawned and still owns.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
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

    /// A daemon command for node `id`'s config that is not tracked by the cluster (e.g. to
    /// show that a second daemon on the same data dir is refused).
    pub fn untracked_daemon(&self, id: u64) -> Option<Command> {
        let n = self.node(id)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--config"]).arg(&n.config);
        if self.die_with_parent {
            die_with_parent_thread(&mut cmd);
        }
        Some(cmd)
    }

    pub fn start_all(&mut self) -> Result<(), LaunchError> {
        for id in self.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).and_then(|n| n.child.as_ref().map(|c| c.id()))
    }

    /// What the OS says of node `id`'s daemon, for a report when it stops answering: not
    /// started, exited (a zombie not yet reaped), or running with each thread's state and
    /// kernel wait channel (a hung daemon shows where its threads sleep).
    pub fn process_state(&self, id: u64) -> String {
        let Some(pid) = self.pid(id) else {
            return "not running (stopped by the harness)".to_string();
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let state = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .map(str::trim)
            .unwrap_or("unknown");
        if state.starts_with('Z') || status.is_empty() {
            return format!("pid {pid} exited on its own (state {state}): see its log for why");
        }
        let mut threads = Vec::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in dir.flatten() {
                let path = t.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let wchan = std::fs::read_to_string(path.join("wchan")).unwrap_or_default();
                let st = std::fs::read_to_string(path.join("status"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("State:").map(|s| s.trim().to_string()))
                    .unwrap_or_default();
                threads.push(format!("{}:{}:{}", comm.trim(), st, wchan.trim()));
            }
        }
        threads.sort();
        format!(
            "pid {pid} alive, state {state}; threads {}",
            threads.join(", ")
        )
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self, id: u64) {
        if let Some(n) = self.node_mut(id) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub fn signal(&self, id: u64, sig: i32) {
        if let Some(pid) = self.pid(id) {
            // SAFETY: kill(2) on the PID of a child this launcher spawned and still owns.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    pub fn client(&self, id: u64, timeout: Duration) -> Option<Client> {
        self.node(id).map(|n| {
            Client::new(&n.reach_api.to_string(), timeout).with_token(Some(self.token.clone()))
        })
    }

    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        self.client(id, Duration::from_millis(500))?
            .get_json("/v1/status")
            .await
            .ok()
    }

    /// The leader every running node agrees on, if any.
    pub async fn agreed_leader(&self) -> Option<(u64, u64)> {
        let mut seen = None;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let s = self.status(n.member.id).await?;
            let l = (s.leader_id?, s.term);
            match seen {
                None => seen = Some(l),
                Some(x) if x != l => return None,
                _ => {}
            }
        }
        seen
    }

    pub async fn wait_agreed_leader(&self, timeout: Duration) -> Option<(u64, u64)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.agreed_leader().await {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }
}

/// The child gets SIGKILL if the thread that spawns it dies (a killed test or benchmark), so
/// no daemon lives on as an orphan holding ports. The signal follows the spawning thread:
/// owners spawn from the thread that also drops the `LocalCluster`, which kills every child
/// first, so it never fires early.
fn die_with_parent_thread(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Resident set size and total CPU time (user+system) of a process, from /proc.
pub fn proc_usage(pid: u32) -> Option<(u64, Duration)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((
        rss_kb * 1024,
        Duration::from_millis((utime + stime) * 1000 / hz),
    ))
}
