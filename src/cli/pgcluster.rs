//! Three (or more) PostgreSQL 15 instances under local quorate nodes on 127.0.0.1, run by the
//! built-in postgres agent from empty data dirs: what `quorate demo --service postgres` and
//! `quorate-bench postgres` share. The guard stops everything it started, in the order that
//! leaves nothing behind: the daemons first (a live agent could start a PostgreSQL again),
//! then the postmasters (by the PID in `postmaster.pid`), then the folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::localcluster::{ClusterSpec, LocalCluster};

/// Where Debian's postgresql-15 package puts the server binaries.
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The superuser's password in these local clusters (they listen on 127.0.0.1 only).
pub const SUPERUSER_PASSWORD: &str = "local-superuser";

/// Calmer timings than the lan profile (600 ms dead timeout, 1–2 s election timeout, 800 ms
/// lease): a bootstrap (initdb, base backups) and rewinds load a small machine with fsyncs,
/// and a promotion must not lose its lease to a starved daemon. A `[timing]` section for
/// `ClusterSpec::extra`.
pub const CALM_TIMING: &str =
    "\n[timing]\nheartbeat_interval = \"100ms\"\nsuspect_after = \"300ms\"\n\
dead_after = \"600ms\"\nraft_heartbeat = \"100ms\"\nelection_timeout_min = \"1s\"\n\
election_timeout_max = \"2s\"\nlease = \"800ms\"\n";

/// Between calm and the lan profile, for a machine whose PostgreSQL does not starve the daemon
/// (a release build, cores to spare): 300 ms dead timeout, 350–600 ms election timeout, 250 ms
/// lease. A failover can finish in well under a second: voters refuse votes for
/// `election_timeout_max` after the last leader heartbeat, and that is what bounds it.
pub const BRISK_TIMING: &str =
    "\n[timing]\nheartbeat_interval = \"50ms\"\nsuspect_after = \"150ms\"\n\
dead_after = \"300ms\"\nraft_heartbeat = \"50ms\"\nelection_timeout_min = \"350ms\"\n\
election_timeout_max = \"600ms\"\nlease = \"250ms\"\n";

/// The timings a local PostgreSQL cluster can run with, by name: `calm` and `brisk` are
/// `[timing]` sections ([`CALM_TIMING`], [`BRISK_TIMING`]); `lan` and `fast` are quorate's
/// profiles. Sets `spec` accordingly, or says which names exist.
pub fn apply_timing(spec: &mut ClusterSpec, name: &str) -> Result<(), String> {
    match name {
        "calm" => spec.extra.push_str(CALM_TIMING),
        "brisk" => spec.extra.push_str(BRISK_TIMING),
        "lan" | "fast" => spec.profile = name.to_string(),
        other => {
            return Err(format!(
                "timing {other:?} is unknown: give calm (the demo's and the tests' timing), brisk (sub-second failover on a machine with cores to spare), lan or fast"
            ))
        }
    }
    Ok(())
}

/// The PostgreSQL binaries are installed, or an error naming the package.
pub fn require_postgres() -> Result<(), String> {
    if Path::new(BIN_DIR).join("initdb").is_file() {
        return Ok(());
    }
    Err(format!(
        "PostgreSQL 15 is not installed ({BIN_DIR}/initdb is missing): install the postgresql-15 package (sudo apt-get install postgresql-15; `bash .ci/test` installs it too)"
    ))
}

fn postmaster_pid(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn signal_and_wait(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a postmaster this cluster's agent started.
    unsafe {
        libc::kill(pid, sig);
    }
    let until = Instant::now() + Duration::from_secs(10);
    while crate::util::process_alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A local quorate cluster whose nodes run PostgreSQL through the postgres agent.
pub struct PgLocalCluster {
    c: Option<LocalCluster>,
    ports: Vec<(u64, u16)>,
    /// Where each node's PostgreSQL listens (127.0.0.1 unless moved, e.g. into a network
    /// namespace).
    hosts: Vec<(u64, std::net::IpAddr)>,
    pg_root: PathBuf,
    keep: bool,
}

impl Drop for PgLocalCluster {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(c) = self.c.as_mut() {
            for id in c.ids() {
                c.kill9(id);
            }
        }
        for id in self.ports.iter().map(|(id, _)| *id) {
            if let Some(pid) = postmaster_pid(&self.data_dir(id)) {
                // SIGQUIT: PostgreSQL's immediate shutdown (its children end too).
                signal_and_wait(pid, libc::SIGQUIT);
            }
        }
    }
}

impl PgLocalCluster {
    /// Creates the cluster (not started): `spec`'s nodes, each with a PostgreSQL port and
    /// data dir under `<cluster>/pg`, and `[resource]`/`[postgres]` settings for the agent
    /// plus `resource` (more `[resource]` lines) and `synchronous` (`off`, `quorum`,
    /// `strict`).
    pub fn create(
        spec: &ClusterSpec,
        resource: &str,
        synchronous: &str,
    ) -> Result<PgLocalCluster, String> {
        require_postgres()?;
        let c = LocalCluster::create(spec).map_err(|e| e.to_string())?;
        let pg_root = c.path().join("pg");
        std::fs::create_dir_all(&pg_root).map_err(|e| e.to_string())?;
        {
            use std::os::unix::fs::PermissionsExt;
            // PostgreSQL runs as its own user: it must reach its data dir.
            for dir in [c.path().to_path_buf(), pg_root.clone()] {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("cannot open {} to PostgreSQL: {e}", dir.display()))?;
            }
        }
        let mut ports = Vec::new();
        for id in c.ids() {
            let port = crate::cli::localcluster::free_port().map_err(|e| e.to_string())?;
            ports.push((id, port));
        }
        let pg = PgLocalCluster {
            c: Some(c),
            ports,
            hosts: Vec::new(),
            pg_root,
            keep: false,
        };
        pg.configure(resource, synchronous)?;
        Ok(pg)
    }

    /// The quorate cluster.
    pub fn cluster(&self) -> &LocalCluster {
        // Only `detach` takes it, and it consumes the guard.
        self.c
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only by detach"))
    }

    pub fn cluster_mut(&mut self) -> &mut LocalCluster {
        self.c
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only by detach"))
    }

    /// Node `id`'s PostgreSQL port (5432 for an unknown id).
    pub fn port(&self, id: u64) -> u16 {
        self.ports
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, p)| *p)
            .unwrap_or(5432)
    }

    /// Where node `id`'s PostgreSQL listens.
    pub fn host(&self, id: u64) -> std::net::IpAddr {
        self.hosts
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, h)| *h)
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }

    /// Node `id`'s PostgreSQL address.
    pub fn pg_addr(&self, id: u64) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.host(id), self.port(id))
    }

    /// Moves node `id`'s PostgreSQL to listen on `ip` (before the cluster starts): its own
    /// `[postgres] listen` and every node's `service` address of it.
    pub fn move_postgres(&mut self, id: u64, ip: std::net::IpAddr) -> Result<(), String> {
        let port = self.port(id);
        let old_service = format!("service = \"127.0.0.1:{port}\"");
        let new_service = format!("service = \"{}\"", std::net::SocketAddr::new(ip, port));
        for n in &self.cluster().nodes {
            let mut text = std::fs::read_to_string(&n.config).map_err(|e| e.to_string())?;
            text = text.replace(&old_service, &new_service);
            if n.member.id == id {
                text = text.replace("listen = \"127.0.0.1\"", &format!("listen = \"{ip}\""));
            }
            std::fs::write(&n.config, text).map_err(|e| e.to_string())?;
        }
        self.hosts.retain(|(i, _)| *i != id);
        self.hosts.push((id, ip));
        Ok(())
    }

    pub fn ports(&self) -> Vec<u16> {
        self.ports.iter().map(|(_, p)| *p).collect()
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.pg_root.join(format!("node{id}"))
    }

    /// kill -9 of node `id`: its quorate and its postmaster (a crash of the node).
    pub fn kill9_node(&mut self, id: u64) {
        self.cluster_mut().kill9(id);
        if let Some(pid) = postmaster_pid(&self.data_dir(id)) {
            signal_and_wait(pid, libc::SIGKILL);
        }
    }

    /// Leaves everything running (`--keep`).
    pub fn detach(mut self) {
        self.keep = true;
        if let Some(c) = self.c.take() {
            c.detach();
        }
    }

    /// A superuser connection to node `id`'s PostgreSQL.
    pub async fn sql(&self, id: u64) -> Result<tokio_postgres::Client, String> {
        sql_on(self.host(id), self.port(id)).await
    }

    /// The application names streaming from node `primary`.
    pub async fn streaming_from(&self, primary: u64) -> Vec<String> {
        let Ok(c) = self.sql(primary).await else {
            return Vec::new();
        };
        c.query(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
        .unwrap_or_default()
    }

    /// Whether every node of `replicas` streams from `primary`.
    pub async fn all_stream_from(&self, primary: u64, replicas: &[u64]) -> bool {
        let got = self.streaming_from(primary).await;
        replicas.iter().all(|r| got.contains(&format!("node{r}")))
    }

    /// The last lines of every node's quorate and PostgreSQL logs, for an error message.
    pub fn logs_tail(&self) -> String {
        let tail = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(12)..].join("\n")
        };
        let mut out = String::new();
        for n in &self.cluster().nodes {
            let id = n.member.id;
            out.push_str(&format!("--- node {id}'s log ---\n{}\n", tail(&n.log)));
            out.push_str(&format!(
                "--- node {id}'s PostgreSQL log ---\n{}\n",
                tail(&self.pg_root.join(format!("node{id}.log")))
            ));
        }
        out
    }

    /// Writes each node's `[resource]` and `[postgres]` sections and every peer's
    /// `service` address.
    fn configure(&self, resource: &str, synchronous: &str) -> Result<(), String> {
        let c = self.cluster();
        let root = c.path();
        let super_pw = root.join("pg-superuser.pw");
        let repl_pw = root.join("pg-replication.pw");
        std::fs::write(&super_pw, format!("{SUPERUSER_PASSWORD}\n")).map_err(|e| e.to_string())?;
        std::fs::write(&repl_pw, "local-replication\n").map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        for n in &c.nodes {
            let text = std::fs::read_to_string(&n.config).map_err(|e| e.to_string())?;
            let mut out = String::new();
            let (mut peer, mut in_peer) = (None, false);
            for line in text.lines() {
                if line == "[[peer]]" {
                    in_peer = true;
                    peer = None;
                } else if line.starts_with('[') {
                    in_peer = false;
                }
                if let Some(v) = line.strip_prefix("id = ") {
                    peer = v.trim().parse::<u64>().ok();
                }
                out.push_str(line);
                out.push('\n');
                if in_peer && line.starts_with("api = ") {
                    if let Some(k) = peer {
                        out.push_str(&format!("service = \"127.0.0.1:{}\"\n", self.port(k)));
                    }
                }
            }
            let id = n.member.id;
            out.push_str(&format!(
                "\n[resource]\nagent = \"postgres\"\nfencing = \"best-effort\"\n{resource}\
                 \n[postgres]\ndata_dir = \"{}\"\nport = {}\nlisten = \"127.0.0.1\"\n\
                 superuser_password_file = \"{}\"\nreplication_password_file = \"{}\"\n\
                 synchronous = \"{synchronous}\"\naction_timeout = \"120s\"\n{}",
                self.data_dir(id).display(),
                self.port(id),
                super_pw.display(),
                repl_pw.display(),
                if root_user {
                    "os_user = \"postgres\"\n"
                } else {
                    ""
                }
            ));
            std::fs::write(&n.config, out).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A superuser connection to the PostgreSQL on `host`:`port`.
pub async fn sql_on(host: std::net::IpAddr, port: u16) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host.to_string())
        .port(port)
        .user("postgres")
        .password(SUPERUSER_PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
