//! Launches a quorate cluster as child processes on 127.0.0.1 (free ports, a temp dir per
//! run). Every process it starts is killed by PID when the `LocalCluster` is dropped.
//!
//! Every node shares one API admin token (`<dir>/api.token`, mode 0600, named by each config's
//! `[api] token_file`): `client`, `auth_headers` and `token` give it to whoever sends
//! requests. Cluster traffic is plaintext unless `enable_secret` is called before start.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::api::wire::NodeStatus;
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

/// A port free for both TCP and UDP on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16, LaunchError> {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0"))?;
        let port = tcp.local_addr().map_err(io("local addr"))?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(LaunchError::Io {
        what: "no free port pair found in 100 tries".into(),
        source: std::io::Error::other("ports exhausted"),
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

pub struct ClusterSpec {
    pub name: String,
    /// Member roles, ids 1..=n.
    pub roles: Vec<String>,
    pub profile: String,
    /// TOML appended to every config (`[timing]`, `[resource]`, ...).
    pub extra: String,
    /// Environment for every node (e.g. QUORATE_MARKER_LOG).
    pub env: Vec<(String, String)>,
}

impl ClusterSpec {
    pub fn voters(n: usize) -> ClusterSpec {
        ClusterSpec {
            name: "bench".into(),
            roles: vec!["voter".into(); n],
            profile: "lan".into(),
            extra: String::new(),
            env: Vec::new(),
        }
    }
}

pub struct NodeProc {
    pub member: Member,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
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
        let bin = quorate_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("quorate-cluster-")
            .tempdir()
            .map_err(io("create temp dir"))?;
        let mut members = Vec::new();
        for (i, role) in spec.roles.iter().enumerate() {
            members.push(Member {
                id: i as u64 + 1,
                role: role.clone(),
                priority: 100,
                raft: addr(free_port()?),
                heartbeat: addr(free_port()?),
                api: addr(free_port()?),
            });
        }
        let token = {
            use rand::RngCore;
            let mut b = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        };
        let token_file = dir.path().join(crate::api::auth::TOKEN_FILE_NAME);
        write_private(&token_file, &format!("{token}\n"))?;
        let mut nodes = Vec::new();
        for m in &members {
            let mut t = String::new();
            let _ = writeln!(
                t,
                "cluster = \"{}\"\ndata_dir = \"data{}\"\nprofile = \"{}\"",
                spec.name, m.id, spec.profile
            );
            let _ = writeln!(
                t,
                "[node]\nid = {}\nrole = \"{}\"\npriority = {}",
                m.id, m.role, m.priority
            );
            let _ = writeln!(
                t,
                "[listen]\nraft = \"{}\"\nheartbeat = \"{}\"\napi = \"{}\"",
                m.raft, m.heartbeat, m.api
            );
            for p in &members {
                let _ = writeln!(
                    t,
                    "[[peer]]\nid = {}\nrole = \"{}\"\npriority = {}\nraft = \"{}\"\nheartbeat = [\"{}\"]\napi = \"{}\"",
                    p.id, p.role, p.priority, p.raft, p.heartbeat, p.api
                );
            }
            let _ = writeln!(t, "[api]\ntoken_file = \"{}\"", token_file.display());
            t.push_str(&spec.extra);
            let config = dir.path().join(format!("node{}.toml", m.id));
            std::fs::write(&config, t).map_err(io(format!("write {}", config.display())))?;
            nodes.push(NodeProc {
                member: m.clone(),
                log: dir.path().join(format!("node{}.log", m.id)),
                config,
                child: None,
            });
        }
        Ok(LocalCluster {
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            bin,
            nodes,
            env: spec.env.clone(),
            token,
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The file holding the API token (for `quorate --token-file`).
    pub fn token_file(&self) -> PathBuf {
        self.root.join(crate::api::auth::TOKEN_FILE_NAME)
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

    pub fn start(&mut self, id: u64) -> Result<(), LaunchError> {
        let bin = self.bin.clone();
        let env = self.env.clone();
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
            .map_err(io("open node log"))?;
        let log2 = log.try_clone().map_err(io("clone node log"))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["run", "--config"])
            .arg(&n.config)
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        n.child = Some(
            cmd.spawn()
                .map_err(io(format!("spawn {}", bin.display())))?,
        );
        Ok(())
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
            Client::new(&n.member.api.to_string(), timeout).with_token(Some(self.token.clone()))
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
