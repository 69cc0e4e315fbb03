//! `quorate demo --service postgres`: three PostgreSQL 15 instances under three quorate
//! nodes on 127.0.0.1, run by the built-in postgres agent from empty data dirs: bootstrap and
//! streaming, writes, a kill -9 of the primary node (quorate and postmaster) with the
//! failover measured and every acknowledged row checked, the old primary's rewind, and a
//! supervised failback. Cleans up every process and file it made unless `--keep`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::demo::{
    acting_primary, failback_available, failback_to, print_table, step, wait_for,
};
use crate::cli::localcluster::{ClusterSpec, LocalCluster};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const SUPERUSER_PASSWORD: &str = "demo-superuser";

/// Stops the postmasters the demo's agents started (by the PID in postmaster.pid).
struct Postmasters(Vec<PathBuf>);

fn postmaster_pid(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn signal_and_wait(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a postmaster this demo's agent started.
    unsafe {
        libc::kill(pid, sig);
    }
    let until = Instant::now() + Duration::from_secs(10);
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The demo's cluster and its postmasters, stopped in the order that leaves nothing
/// behind: the daemons first (a live agent could start a PostgreSQL again), then the
/// postmasters, then the folder (when `c` drops).
struct PgDemo {
    c: Option<LocalCluster>,
    postmasters: Postmasters,
    keep: bool,
}

impl Drop for PgDemo {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(c) = self.c.as_mut() {
            for id in c.ids() {
                c.kill9(id);
            }
        }
        self.postmasters.stop_all();
    }
}

impl Postmasters {
    fn stop_all(&mut self) {
        for dir in std::mem::take(&mut self.0) {
            if let Some(pid) = postmaster_pid(&dir) {
                signal_and_wait(pid, libc::SIGQUIT);
            }
        }
    }
}

impl Drop for Postmasters {
    fn drop(&mut self) {
        for dir in &self.0 {
            if let Some(pid) = postmaster_pid(dir) {
                // SIGQUIT: PostgreSQL's immediate shutdown (its children end too).
                signal_and_wait(pid, libc::SIGQUIT);
            }
        }
    }
}

async fn sql(port: u16) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
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

async fn streaming_from(port: u16) -> Vec<String> {
    let Ok(c) = sql(port).await else {
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

/// Writes each node's `[postgres]` section and every peer's `service` address.
fn configure(c: &LocalCluster, ports: &[(u64, u16)], pg_root: &Path) -> Result<(), String> {
    let root = c.path();
    let super_pw = root.join("pg-superuser.pw");
    let repl_pw = root.join("pg-replication.pw");
    std::fs::write(&super_pw, format!("{SUPERUSER_PASSWORD}\n")).map_err(|e| e.to_string())?;
    std::fs::write(&repl_pw, "demo-replication\n").map_err(|e| e.to_string())?;
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
                if let Some((_, port)) = peer.and_then(|k| ports.iter().find(|(i, _)| *i == k)) {
                    out.push_str(&format!("service = \"127.0.0.1:{port}\"\n"));
                }
            }
        }
        let id = n.member.id;
        let port = ports
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, p)| *p)
            .unwrap_or(5432);
        out.push_str(&format!(
            "\n[resource]\nagent = \"postgres\"\nmonitor_interval = \"500ms\"\nfencing = \"best-effort\"\n\
             \n[postgres]\ndata_dir = \"{}\"\nport = {port}\nlisten = \"127.0.0.1\"\n\
             superuser_password_file = \"{}\"\nreplication_password_file = \"{}\"\n\
             synchronous = \"quorum\"\naction_timeout = \"120s\"\n{}",
            pg_root.join(format!("node{id}")).display(),
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

/// The last lines of every node's quorate and PostgreSQL logs, for an error message.
fn logs_tail(c: &LocalCluster, pg_root: &Path) -> String {
    let tail = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    };
    let mut out = String::new();
    for n in &c.nodes {
        let id = n.member.id;
        out.push_str(&format!("--- node {id}'s log ---\n{}\n", tail(&n.log)));
        out.push_str(&format!(
            "--- node {id}'s PostgreSQL log ---\n{}\n",
            tail(&pg_root.join(format!("node{id}.log")))
        ));
    }
    out
}

pub async fn demo(keep: bool) -> Result<(), String> {
    if !Path::new(BIN_DIR).join("initdb").is_file() {
        return Err(format!(
            "PostgreSQL 15 is not installed ({BIN_DIR}/initdb is missing): install the postgresql-15 package (sudo apt-get install postgresql-15; `bash .ci/test` installs it too)"
        ));
    }
    let bin = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    std::env::set_var("QUORATE_BIN", &bin);
    let mut spec = ClusterSpec::voters(3);
    spec.name = "demo-pg".into();
    // Calmer timings than the lan profile: a bootstrap (initdb, base backups) loads the
    // machine, and a promotion must not lose its lease to a starved process.
    spec.extra = "\n[timing]\nheartbeat_interval = \"100ms\"\nsuspect_after = \"300ms\"\n\
                  dead_after = \"600ms\"\nraft_heartbeat = \"100ms\"\nelection_timeout_min = \"1s\"\n\
                  election_timeout_max = \"2s\"\nlease = \"800ms\"\n"
        .into();
    let mut c = LocalCluster::create(&spec).map_err(|e| e.to_string())?;
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
    let port_of = |id: u64| {
        ports
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, p)| *p)
            .unwrap_or(5432)
    };
    configure(&c, &ports, &pg_root)?;
    c.env.push(("QUORATE_LOG".into(), "warn".into()));
    let postmasters = Postmasters(
        c.ids()
            .iter()
            .map(|id| pg_root.join(format!("node{id}")))
            .collect(),
    );
    let mut demo = PgDemo {
        c: Some(c),
        postmasters,
        keep: false,
    };
    let c = demo.c.as_mut().ok_or("the demo cluster is gone")?;
    println!(
        "quorate demo: 3 quorate nodes running 3 PostgreSQL 15 instances on 127.0.0.1 in {}",
        c.path().display()
    );

    step("starting three nodes from empty data dirs (initdb on the first primary, clones on the others)");
    let t0 = Instant::now();
    c.start_all().map_err(|e| e.to_string())?;
    let first = wait_for("a primary", || acting_primary(c))
        .await
        .map_err(|e| format!("{e}\n{}", logs_tail(c, &pg_root)))?;
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != first).collect();
    let want: Vec<String> = others.iter().map(|i| format!("node{i}")).collect();
    wait_for("both standbys streaming", || async {
        let got = streaming_from(port_of(first)).await;
        want.iter().all(|w| got.contains(w)).then_some(())
    })
    .await
    .map_err(|e| format!("{e}\n{}", logs_tail(c, &pg_root)))?;
    println!(
        "node {first} is primary and both standbys stream from it, {} ms after start",
        t0.elapsed().as_millis()
    );
    print_table(c).await;

    step(&format!("a writer inserts rows through node {first}; then kill -9 of node {first} (quorate and postmaster)"));
    let client = sql(port_of(first)).await?;
    client
        .batch_execute("CREATE TABLE demo (id bigint PRIMARY KEY, epoch bigint, server text)")
        .await
        .map_err(|e| e.to_string())?;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in 0..1_000_000_i64 {
                let r = tokio::time::timeout(
                    Duration::from_secs(3),
                    client.execute(
                        "INSERT INTO demo SELECT $1, epoch, 'node' || node FROM quorate.fencing",
                        &[&i],
                    ),
                )
                .await;
                match r {
                    Ok(Ok(_)) => acked.lock().unwrap_or_else(|p| p.into_inner()).push(i),
                    _ => break,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.kill9(first);
    if let Some(pid) = postmaster_pid(&pg_root.join(format!("node{first}"))) {
        signal_and_wait(pid, libc::SIGKILL);
    }
    let killed = Instant::now();
    let _ = writer.await;
    let second = wait_for("a new primary", || acting_primary(c)).await?;
    let failover_ms = killed.elapsed().as_millis();
    let acked: Vec<i64> = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let new = sql(port_of(second)).await?;
    let present: Vec<i64> = new
        .query("SELECT id FROM demo", &[])
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = acked.iter().filter(|i| !present.contains(i)).count();
    println!(
        "node {second} took over: /primary answered 200 there {failover_ms} ms after the kill; {} acknowledged rows, {lost} lost",
        acked.len()
    );
    print_table(c).await;

    step(&format!(
        "restarting node {first}: it rewinds (pg_rewind) and streams from node {second}"
    ));
    c.start(first).map_err(|e| e.to_string())?;
    let name = format!("node{first}");
    wait_for("the old primary streaming", || async {
        streaming_from(port_of(second))
            .await
            .contains(&name)
            .then_some(())
    })
    .await?;
    print_table(c).await;

    step(&format!(
        "supervised failback to home node {first} (sync, cut over, verify, commit)"
    ));
    let sc = c
        .client(second, Duration::from_secs(5))
        .ok_or("no client")?;
    failback_available(&sc).await?;
    let failback_ms = failback_to(&sc, first).await?;
    println!("failback committed in {failback_ms} ms; node {first} is primary again");
    print_table(c).await;

    step("summary");
    println!("unplanned failover (kill -9 -> /primary 200 on the new node): {failover_ms} ms");
    println!("acknowledged commits lost: {lost} of {}", acked.len());
    println!("supervised failback (request -> committed): {failback_ms} ms");
    if keep {
        println!(
            "\nthe cluster keeps running (--keep): PostgreSQL on 127.0.0.1 ports {:?} (user postgres, password {SUPERUSER_PASSWORD})",
            ports.iter().map(|(_, p)| *p).collect::<Vec<_>>()
        );
        demo.keep = true;
        demo.postmasters.0.clear();
        if let Some(c) = demo.c.take() {
            c.detach();
        }
        return Ok(());
    }
    println!("\ncleaning up (use --keep to leave the cluster running)");
    if lost > 0 {
        return Err(format!("{lost} acknowledged commits were lost"));
    }
    Ok(())
}
