//! Issue 16: quorate protects a real PostgreSQL 15 cluster with its built-in `postgres`
//! agent. Three real quorate processes, three real PostgreSQL instances on 127.0.0.1, from
//! empty data dirs: the first primary runs initdb, the others clone it and stream; a kill -9
//! of the primary's quorate and postmaster fails over to a replica that has every row; the
//! killed node comes back, rewinds and streams from the new primary.
//!
//! Needs the PostgreSQL 15 binaries (`/usr/lib/postgresql/15/bin`, the postgresql-15
//! package; README's test command installs it). Run as root, PostgreSQL runs as `postgres`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Cluster, Options, FAILOVER_TIMING, WAIT};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const SUPERUSER_PASSWORD: &str = "test-super-secret";
/// A bootstrap (initdb, two base backups) or a rewind takes seconds on a loaded machine.
const PG_WAIT: Duration = Duration::from_secs(180);

fn require_postgres() {
    let initdb = Path::new(BIN_DIR).join("initdb");
    assert!(
        initdb.is_file(),
        "{} is missing: these tests need PostgreSQL 15; install the postgresql-15 package (the README's test command, bash .ci/test, does)",
        initdb.display()
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Stops every PostgreSQL the test's agents started (by the PID in postmaster.pid), even when
/// the test fails.
struct Postmasters {
    data_dirs: Vec<PathBuf>,
}

impl Postmasters {
    fn pid(dir: &Path) -> Option<i32> {
        let text = std::fs::read_to_string(dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    /// SIGKILL of `dir`'s postmaster (a crash, as kill -9 of the node would be).
    fn kill9(dir: &Path) -> Option<i32> {
        let pid = Self::pid(dir)?;
        // SAFETY: kill(2) on the postmaster this test's agent started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Self::alive(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(pid)
    }
}

impl Drop for Postmasters {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Postmasters {
    fn stop_all(&mut self) {
        for dir in &self.data_dirs {
            if let Some(pid) = Self::pid(dir) {
                // SAFETY: kill(2) on the postmaster this test's agent started; SIGQUIT is
                // PostgreSQL's immediate shutdown (it ends its children too).
                unsafe {
                    libc::kill(pid, libc::SIGQUIT);
                }
                let until = Instant::now() + Duration::from_secs(10);
                while Self::alive(pid) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if Self::alive(pid) {
                    // SAFETY: as above.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

struct PgCluster {
    c: Cluster,
    ports: Vec<(u64, u16)>,
    pg_root: PathBuf,
    _postmasters: Postmasters,
}

impl Drop for PgCluster {
    /// The daemons go first (a live agent could start a PostgreSQL again), then the
    /// postmasters (`_postmasters`), then the cluster's folder (`c`, dropped after this).
    fn drop(&mut self) {
        for id in self.c.ids() {
            self.c.kill9(id);
        }
        self._postmasters.stop_all();
    }
}

impl PgCluster {
    fn data_dir(&self, id: u64) -> PathBuf {
        self.pg_root.join(format!("node{id}"))
    }

    fn port(&self, id: u64) -> u16 {
        self.ports
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, p)| *p)
            .expect("a port per node")
    }

    fn log(&self, id: u64) -> String {
        let mut path = self.data_dir(id).into_os_string();
        path.push(".log");
        let text = std::fs::read_to_string(PathBuf::from(path)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn logs(&self) -> String {
        let mut out = self.c.logs_tail();
        for id in 1..=3 {
            let text = std::fs::read_to_string(&self.c.node(id).log).unwrap_or_default();
            let agent: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("quorate::agent") && !l.contains("action=\"monitor\""))
                .collect();
            out.push_str(&format!(
                "\n--- node {id}'s agent actions (last 30) ---\n{}",
                agent[agent.len().saturating_sub(30)..].join("\n")
            ));
        }
        for id in 1..=3 {
            out.push_str(&format!(
                "\n--- PostgreSQL log of node {id} ---\n{}",
                self.log(id)
            ));
        }
        out
    }

    async fn sql(&self, id: u64) -> Result<tokio_postgres::Client, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.port(id))
            .user("postgres")
            .password(SUPERUSER_PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    async fn sql_ok(&self, id: u64) -> tokio_postgres::Client {
        match self.sql(id).await {
            Ok(c) => c,
            Err(e) => panic!("connect to node {id}'s PostgreSQL: {e}\n{}", self.logs()),
        }
    }

    /// The one node whose `/primary` answers 200 among `among`, and the epoch it serves.
    async fn wait_primary(&self, among: &[u64]) -> (u64, u64) {
        let until = Instant::now() + PG_WAIT;
        loop {
            let ok: Vec<u64> = self
                .c
                .primary_codes(among)
                .await
                .into_iter()
                .filter(|(_, code)| *code == 200)
                .map(|(id, _)| id)
                .collect();
            if let [one] = ok[..] {
                if let Some(st) = self.c.status(one).await {
                    return (one, st.epoch.get());
                }
            }
            if Instant::now() > until {
                panic!(
                    "no acting primary among {among:?} within {PG_WAIT:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The application names streaming from `primary`.
    async fn streaming_from(&self, primary: u64) -> Vec<String> {
        let Ok(client) = self.sql(primary).await else {
            return Vec::new();
        };
        client
            .query(
                "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
            .unwrap_or_default()
    }

    async fn wait_streaming(&self, primary: u64, replicas: &[u64]) {
        let want: Vec<String> = replicas.iter().map(|r| format!("node{r}")).collect();
        let until = Instant::now() + PG_WAIT;
        loop {
            let got = self.streaming_from(primary).await;
            if want.iter().all(|w| got.contains(w)) {
                return;
            }
            if Instant::now() > until {
                panic!(
                    "nodes {replicas:?} streaming from node {primary}: only {got:?} after {PG_WAIT:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every replica streaming from `primary` replayed all its WAL.
    async fn wait_replayed(&self, primary: u64) {
        let until = Instant::now() + PG_WAIT;
        let client = self.sql_ok(primary).await;
        loop {
            let rows = client
                .query(
                    "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn < pg_current_wal_lsn() OR replay_lsn IS NULL",
                    &[],
                )
                .await
                .expect("pg_stat_replication");
            if rows.first().map(|r| r.get::<_, i64>(0)) == Some(0) {
                return;
            }
            assert!(Instant::now() < until, "replicas replay\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Three voters with the postgres agent, each with its own PostgreSQL port and data dir.
fn pg_cluster() -> PgCluster {
    pg_cluster_with("monitor_interval = \"500ms\"\n", &[])
}

/// [`pg_cluster`] with these `[resource]` lines and these member priorities.
fn pg_cluster_with(resource: &str, priorities: &[(u64, u32)]) -> PgCluster {
    pg_cluster_with_sections(resource, priorities, "")
}

/// [`pg_cluster_with`] plus whole sections (`[failback]` ...) in every node's config.
fn pg_cluster_with_sections(
    resource: &str,
    priorities: &[(u64, u32)],
    sections: &str,
) -> PgCluster {
    require_postgres();
    let extra = format!(
        "{FAILOVER_TIMING}[resource]\nagent = \"postgres\"\n{resource}\
         failure_threshold = 3\nhook_timeout = \"10s\"\nfencing = \"best-effort\"\n{sections}"
    );
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            extra,
            ..Options::default()
        },
    );
    let root = c.path().to_path_buf();
    let pg_root = root.join("pg");
    std::fs::create_dir_all(&pg_root).expect("pg root");
    {
        use std::os::unix::fs::PermissionsExt;
        // PostgreSQL runs as another user: it must reach its data dir.
        for dir in [&root, &pg_root] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
    let super_pw = root.join("superuser.pw");
    let repl_pw = root.join("replication.pw");
    std::fs::write(&super_pw, format!("{SUPERUSER_PASSWORD}\n")).expect("password file");
    std::fs::write(&repl_pw, "test-replication-secret\n").expect("password file");
    let ports: Vec<(u64, u16)> = (1..=3).map(|id| (id, common::free_port())).collect();
    for &(id, port) in &ports {
        let config = c.node(id).config.clone();
        let text = std::fs::read_to_string(&config).expect("read config");
        let mut out = String::new();
        let mut peer: Option<u64> = None;
        let mut in_peer = false;
        for line in text.lines() {
            if line == "[[peer]]" {
                peer = None;
                in_peer = true;
            } else if line.starts_with('[') {
                in_peer = false;
            }
            if let Some(v) = line.strip_prefix("id = ") {
                peer = v.trim().parse().ok();
            }
            if line.starts_with("priority = ") {
                if let Some((_, p)) = priorities.iter().find(|(k, _)| Some(*k) == peer) {
                    out.push_str(&format!("priority = {p}\n"));
                    continue;
                }
            }
            out.push_str(line);
            out.push('\n');
            if in_peer && line.starts_with("api = ") {
                if let Some(p) = peer.and_then(|k| ports.iter().find(|(i, _)| *i == k)) {
                    out.push_str(&format!("service = \"127.0.0.1:{}\"\n", p.1));
                }
            }
        }
        out.push_str(&format!(
            "\n[postgres]\ndata_dir = \"{}\"\nport = {port}\nlisten = \"127.0.0.1\"\n\
             superuser_password_file = \"{}\"\nreplication_password_file = \"{}\"\n\
             action_timeout = \"120s\"\n{}",
            pg_root.join(format!("node{id}")).display(),
            super_pw.display(),
            repl_pw.display(),
            if is_root() {
                "os_user = \"postgres\"\n"
            } else {
                ""
            }
        ));
        std::fs::write(&config, out).expect("write config");
    }
    let postmasters = Postmasters {
        data_dirs: (1..=3)
            .map(|id| pg_root.join(format!("node{id}")))
            .collect(),
    };
    c.start_all();
    PgCluster {
        c,
        ports,
        pg_root,
        _postmasters: postmasters,
    }
}

async fn fencing_epoch(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT epoch FROM quorate.fencing WHERE id = 1", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bootstraps_streams_fails_over_without_losing_rows_and_the_old_primary_rewinds() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut pg = pg_cluster();
    let ids = [1, 2, 3];
    let (first, epoch) = pg.wait_primary(&ids).await;
    let replicas: Vec<u64> = ids.iter().copied().filter(|i| *i != first).collect();
    // From empty data dirs: one primary (initdb), two replicas that cloned it and stream.
    pg.wait_streaming(first, &replicas).await;
    let client = pg.sql_ok(first).await;
    assert_eq!(
        fencing_epoch(&client).await,
        i64::try_from(epoch).unwrap_or(-1),
        "the primary wrote its epoch into quorate.fencing"
    );
    client
        .batch_execute(
            "CREATE TABLE rows (id bigint PRIMARY KEY, epoch bigint NOT NULL, server text NOT NULL)",
        )
        .await
        .expect("create table");
    for i in 0..100_i64 {
        client
            .execute(
                "INSERT INTO rows SELECT $1, epoch, $2 FROM quorate.fencing",
                &[&i, &format!("node{first}")],
            )
            .await
            .expect("insert");
    }
    // Synchronous replication (quorum, the default): the primary's monitor names the
    // streaming standbys in synchronous_standby_names.
    let want_sync = format!(
        "ANY 1 ({})",
        replicas
            .iter()
            .map(|r| format!("node{r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let until = Instant::now() + PG_WAIT;
    loop {
        let names: String = client
            .query_one("SHOW synchronous_standby_names", &[])
            .await
            .expect("show")
            .get(0);
        if names == want_sync {
            break;
        }
        assert!(
            Instant::now() < until,
            "synchronous_standby_names {names:?}, want {want_sync:?}\n{}",
            pg.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let quorum: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'",
            &[],
        )
        .await
        .expect("sync_state")
        .get(0);
    assert_eq!(quorum, 2, "both standbys are quorum candidates");
    pg.wait_replayed(first).await;
    // The monitor reports the data: every node's position, on one timeline.
    let st = pg.c.status(first).await.expect("status");
    let timeline = st.service.timeline.expect("the primary reports a timeline");
    assert!(
        st.service.position.is_some_and(|p| p > 0),
        "{:?}",
        st.service
    );
    for r in &replicas {
        pg.c.wait_status(
            first,
            &format!("node {r} reports timeline {timeline}"),
            WAIT,
            |s| {
                s.peers
                    .iter()
                    .find(|p| p.id == *r)
                    .and_then(|p| p.service.as_ref())
                    .is_some_and(|sv| sv.timeline == Some(timeline) && sv.position.is_some())
            },
        )
        .await;
    }
    // A writer inserts through the primary while the primary node is killed: every row
    // whose commit was acknowledged must be on the new primary.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let writer = {
        let acked = acked.clone();
        let server = format!("node{first}");
        tokio::spawn(async move {
            for i in 1_000..1_000_000_i64 {
                let ok = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.execute(
                        "INSERT INTO rows SELECT $1, epoch, $2 FROM quorate.fencing",
                        &[&i, &server],
                    ),
                )
                .await;
                match ok {
                    Ok(Ok(_)) => acked.lock().expect("acked").push(i),
                    _ => break,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // kill -9 of the primary node: its quorate and its postmaster.
    pg.c.kill9(first);
    assert!(
        Postmasters::kill9(&pg.data_dir(first)).is_some(),
        "node {first}'s postmaster.pid"
    );
    let killed_at = Instant::now();
    let _ = writer.await;
    let acked: Vec<i64> = acked.lock().expect("acked").clone();
    assert!(
        !acked.is_empty(),
        "the writer committed rows before the kill"
    );
    let (second, epoch2) = pg.wait_primary(&replicas).await;
    eprintln!(
        "node {second} is primary {} ms after the kill of node {first}; {} acknowledged rows to check",
        killed_at.elapsed().as_millis(),
        acked.len()
    );
    assert!(epoch2 > epoch);
    let client = pg.sql_ok(second).await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM rows WHERE id < 1000", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 100, "every row written before is on the new primary");
    let present: Vec<i64> = client
        .query("SELECT id FROM rows WHERE id >= 1000", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|i| !present.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged rows lost on node {second}: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(
        fencing_epoch(&client).await,
        i64::try_from(epoch2).unwrap_or(-1)
    );
    client
        .execute(
            "INSERT INTO rows SELECT 100, epoch, $1 FROM quorate.fencing",
            &[&format!("node{second}")],
        )
        .await
        .expect("the new primary accepts writes");
    let third = replicas
        .iter()
        .copied()
        .find(|r| *r != second)
        .expect("a third node");
    pg.wait_streaming(second, &[third]).await;

    // The killed node comes back: it rewinds and streams from the new primary.
    let total: i64 = client
        .query_one("SELECT count(*) FROM rows", &[])
        .await
        .expect("count")
        .get(0);
    pg.c.start(first);
    pg.wait_streaming(second, &[first, third]).await;
    let old = pg.sql_ok(first).await;
    let until = Instant::now() + PG_WAIT;
    loop {
        let n: i64 = old
            .query_one("SELECT count(*) FROM rows", &[])
            .await
            .expect("count on the old primary")
            .get(0);
        if n == total {
            break;
        }
        assert!(
            Instant::now() < until,
            "{n} rows on node {first}\n{}",
            pg.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let in_recovery: bool = old
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("recovery")
        .get(0);
    assert!(in_recovery, "the old primary is a standby now");
    let st = pg.c.status(second).await.expect("status");
    assert_eq!(st.primary, Some(second));
}

/// One PostgreSQL cluster at a time: each bootstraps three instances, and two at once on a
/// 2-core machine only slow both down.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One acknowledged insert: its id, and where it sits in the writers' common order (one
/// counter for all writers, taken just before the INSERT was sent and just after its
/// commit was acknowledged).
#[derive(Clone, Copy, Debug)]
struct Ack {
    id: i64,
    sent: u64,
    acked: u64,
    at: Instant,
}

/// Writers that insert rows through whichever node answers 200 on `/primary`, each on its
/// own connection, until stopped. Every row carries the fencing epoch read in the same
/// transaction and the port of the server that accepted it.
struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acks: std::sync::Arc<std::sync::Mutex<Vec<Ack>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const INSERT_ROW: &str = "INSERT INTO rows (id, epoch, server) SELECT $1, epoch, inet_server_port() FROM quorate.fencing";

impl Writers {
    fn start(pg: &PgCluster, count: usize) -> Writers {
        use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let order = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicI64::new(1_000_000));
        let nodes: Vec<(std::net::SocketAddr, u16)> =
            pg.c.ids()
                .into_iter()
                .map(|id| (pg.c.api(id), pg.port(id)))
                .collect();
        let tasks = (0..count)
            .map(|_| {
                let (stop, acks, order, next_id, nodes) = (
                    stop.clone(),
                    acks.clone(),
                    order.clone(),
                    next_id.clone(),
                    nodes.clone(),
                );
                tokio::spawn(async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let http = common::http(Duration::from_millis(500));
                    while !stop.load(SeqCst) {
                        let mut port = None;
                        for (api, pg_port) in &nodes {
                            let url = format!("http://{api}/primary");
                            if let Ok(r) = http.get(url).send().await {
                                if r.status().as_u16() == 200 {
                                    port = Some(*pg_port);
                                    break;
                                }
                            }
                        }
                        let Some(port) = port else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        let mut cfg = tokio_postgres::Config::new();
                        cfg.host("127.0.0.1")
                            .port(port)
                            .user("postgres")
                            .password(SUPERUSER_PASSWORD)
                            .dbname("postgres")
                            .connect_timeout(Duration::from_secs(2));
                        let Ok(Ok((client, conn))) = tokio::time::timeout(
                            Duration::from_secs(3),
                            cfg.connect(tokio_postgres::NoTls),
                        )
                        .await
                        else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        while !stop.load(SeqCst) {
                            let id = next_id.fetch_add(1, SeqCst);
                            let sent = order.fetch_add(1, SeqCst);
                            let done = tokio::time::timeout(
                                Duration::from_secs(5),
                                client.execute(INSERT_ROW, &[&id]),
                            )
                            .await;
                            match done {
                                Ok(Ok(1)) => {
                                    let acked = order.fetch_add(1, SeqCst);
                                    acks.lock().expect("acks").push(Ack {
                                        id,
                                        sent,
                                        acked,
                                        at: Instant::now(),
                                    });
                                }
                                // A standby refuses the write (read-only), a dead server
                                // drops the connection: find the primary again.
                                _ => break,
                            }
                        }
                    }
                })
            })
            .collect();
        Writers { stop, acks, tasks }
    }

    fn count(&self) -> usize {
        self.acks.lock().expect("acks").len()
    }

    /// Every acknowledgement so far (the writers go on).
    fn so_far(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks").clone()
    }

    /// The first acknowledgement after `t`.
    fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.acks
            .lock()
            .expect("acks")
            .iter()
            .map(|a| a.at)
            .filter(|at| *at > t)
            .min()
    }

    /// Waits until `n` more rows were acknowledged (the writers got through).
    async fn wait_more(&self, n: usize, pg: &PgCluster) {
        let start = self.count();
        let until = Instant::now() + PG_WAIT;
        while self.count() < start + n {
            assert!(
                Instant::now() < until,
                "the writers acknowledged {} rows in {PG_WAIT:?}, wanted {n}\n{}",
                self.count() - start,
                pg.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let acks = self.acks.lock().expect("acks").clone();
        acks
    }
}

/// Every acknowledged row is on `primary`; no row of epoch e was sent after a row of a
/// later epoch was acknowledged; each epoch's rows were accepted by one server. Returns
/// the number of rows checked.
async fn check_rows(pg: &PgCluster, primary: u64, acks: &[Ack]) -> usize {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let client = pg.sql_ok(primary).await;
    let rows: HashMap<i64, (i64, i32)> = client
        .query(
            "SELECT id, epoch, server FROM rows WHERE id >= 1000000",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let lost: Vec<i64> = acks
        .iter()
        .map(|a| a.id)
        .filter(|id| !rows.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged rows are not on node {primary}: {:?}\n{}",
        lost.len(),
        acks.len(),
        &lost[..lost.len().min(10)],
        pg.logs()
    );
    // One server per epoch.
    let mut servers: BTreeMap<i64, BTreeSet<i32>> = BTreeMap::new();
    for (epoch, server) in rows.values() {
        servers.entry(*epoch).or_default().insert(*server);
    }
    for (epoch, s) in &servers {
        assert_eq!(
            s.len(),
            1,
            "rows of epoch {epoch} were accepted by more than one server: {s:?}"
        );
    }
    // Epoch order: the first acknowledgement of each epoch; a row of an earlier epoch
    // sent after it means two primaries accepted writes at once.
    let epoch_of = |a: &Ack| rows.get(&a.id).map(|r| r.0).unwrap_or(-1);
    let mut first_ack: BTreeMap<i64, u64> = BTreeMap::new();
    for a in acks {
        let e = epoch_of(a);
        let f = first_ack.entry(e).or_insert(a.acked);
        *f = (*f).min(a.acked);
    }
    for a in acks {
        let e = epoch_of(a);
        if let Some((later, at)) = first_ack
            .range(e + 1..)
            .map(|(k, v)| (*k, *v))
            .min_by_key(|(_, v)| *v)
        {
            assert!(
                a.sent < at,
                "row {} of epoch {e} was sent (order {}) after a row of epoch {later} was acknowledged (order {at})",
                a.id,
                a.sent
            );
        }
    }
    acks.len()
}

/// How many kill -9 failovers the loss test runs (the issue asks for 20).
const FAILOVER_TRIALS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill9_failovers_and_switchovers_both_ways_lose_no_acknowledged_commit() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut pg = pg_cluster();
    let ids = [1, 2, 3];
    let (mut primary, _) = pg.wait_primary(&ids).await;
    let others = |p: u64| ids.iter().copied().filter(|i| *i != p).collect::<Vec<_>>();
    pg.wait_streaming(primary, &others(primary)).await;
    pg.sql_ok(primary)
        .await
        .batch_execute(
            "CREATE TABLE rows (id bigint PRIMARY KEY, epoch bigint NOT NULL, server int NOT NULL)",
        )
        .await
        .expect("create table");
    let writers = Writers::start(&pg, 2);
    writers.wait_more(20, &pg).await;
    let mut failover_ms = Vec::new();
    let mut write_gap_ms = Vec::new();
    for trial in 1..=FAILOVER_TRIALS {
        // Both replicas stream (so both are quorum candidates), the writers get through.
        pg.wait_streaming(primary, &others(primary)).await;
        writers.wait_more(20, &pg).await;
        pg.c.kill9(primary);
        assert!(
            Postmasters::kill9(&pg.data_dir(primary)).is_some(),
            "node {primary}'s postmaster.pid"
        );
        let killed_at = Instant::now();
        let (next, _) = pg.wait_primary(&others(primary)).await;
        failover_ms.push(killed_at.elapsed().as_millis());
        writers.wait_more(1, &pg).await;
        if let Some(first) = writers.first_ack_after(killed_at) {
            write_gap_ms.push(first.duration_since(killed_at).as_millis());
        }
        eprintln!(
            "trial {trial}: node {primary} killed, node {next} primary after {} ms, {} rows acknowledged so far",
            failover_ms.last().copied().unwrap_or_default(),
            writers.count()
        );
        pg.c.start(primary);
        primary = next;
    }
    // Planned moves both ways with the writers running.
    pg.wait_streaming(primary, &others(primary)).await;
    let home = primary;
    let away = others(primary)[0];
    for (to, via) in [(away, home), (home, away)] {
        pg.wait_streaming(primary, &others(primary)).await;
        writers.wait_more(20, &pg).await;
        let until = Instant::now() + PG_WAIT;
        loop {
            let r =
                pg.c.post_json(via, "/v1/switchover", serde_json::json!({ "to": to }))
                    .await;
            if r.status == 200 {
                break;
            }
            assert!(
                Instant::now() < until,
                "switchover to {to}: {} {}\n{}",
                r.status,
                r.body,
                pg.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (p, _) = pg.wait_primary(&ids).await;
        let until = Instant::now() + PG_WAIT;
        let mut now_primary = p;
        while now_primary != to {
            assert!(
                Instant::now() < until,
                "switchover to {to} ended with {now_primary}\n{}",
                pg.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            now_primary = pg.wait_primary(&ids).await.0;
        }
        writers.wait_more(20, &pg).await;
        primary = to;
    }
    let acks = writers.finish().await;
    pg.wait_streaming(primary, &others(primary)).await;
    let checked = check_rows(&pg, primary, &acks).await;
    failover_ms.sort_unstable();
    write_gap_ms.sort_unstable();
    eprintln!(
        "{FAILOVER_TRIALS} kill -9 failovers: /primary 200 after {:?} ms (sorted); first acknowledged write after {:?} ms; {checked} acknowledged rows, 0 lost, epochs in order",
        failover_ms, write_gap_ms
    );
}

/// Stops (SIGSTOP) the WAL receiver of one standby: it stays up and answers queries, its
/// monitor passes, but it receives nothing. Continued (SIGCONT) when dropped.
struct FrozenReceiver {
    pid: i32,
}

impl FrozenReceiver {
    async fn freeze(pg: &PgCluster, id: u64) -> FrozenReceiver {
        let client = pg.sql_ok(id).await;
        let until = Instant::now() + PG_WAIT;
        loop {
            let pid: Option<i32> = client
                .query(
                    "SELECT pid FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                    &[],
                )
                .await
                .expect("pg_stat_wal_receiver")
                .first()
                .map(|r| r.get(0));
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the WAL receiver of a PostgreSQL this test started.
                unsafe {
                    libc::kill(pid, libc::SIGSTOP);
                }
                return FrozenReceiver { pid };
            }
            assert!(Instant::now() < until, "node {id} streams\n{}", pg.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for FrozenReceiver {
    fn drop(&mut self) {
        // SAFETY: as in freeze.
        unsafe {
            libc::kill(self.pid, libc::SIGCONT);
        }
    }
}

/// The primary's view of `node`'s reported position and its own.
async fn positions(pg: &PgCluster, primary: u64, node: u64) -> (Option<u64>, Option<u64>) {
    let Some(st) = pg.c.status(primary).await else {
        return (None, None);
    };
    let theirs = st
        .peers
        .iter()
        .find(|p| p.id == node)
        .and_then(|p| p.service.as_ref())
        .and_then(|s| s.position);
    (theirs, st.service.position)
}

/// Zero loss by data, not by priority. Twice a replica with a higher priority than the other
/// lacks acknowledged commits when the primary is killed, and the other is promoted:
/// 1. a few rows behind, within `max_service_lag_bytes`, and killed before any regular
///    monitor run could report it (monitor_interval 5 s): only the final reports taken after
///    the loss show it (without them the stale, equal reports would promote it by priority
///    and lose the rows);
/// 2. far behind, beyond `max_service_lag_bytes`, reported so for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_missing_acknowledged_commits_is_never_promoted() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut pg = pg_cluster_with(
        "monitor_interval = \"5s\"\nmax_service_lag_bytes = 1048576\n",
        &[(1, 30), (2, 20), (3, 10)],
    );
    let ids = [1, 2, 3];
    let (mut primary, _) = pg.wait_primary(&ids).await;
    let others = |p: u64| ids.iter().copied().filter(|i| *i != p).collect::<Vec<_>>();
    let priority = |id: u64| 40 - 10 * id;
    pg.wait_streaming(primary, &others(primary)).await;
    pg.sql_ok(primary)
        .await
        .batch_execute(
            "CREATE TABLE rows (id bigint PRIMARY KEY, epoch bigint NOT NULL, server int NOT NULL);\
             CREATE TABLE filler (id bigint PRIMARY KEY, pad text NOT NULL);\
             ALTER TABLE filler ALTER pad SET STORAGE EXTERNAL",
        )
        .await
        .expect("create tables");
    for phase in 1..=2 {
        pg.wait_streaming(primary, &others(primary)).await;
        pg.wait_replayed(primary).await;
        let mut rest = others(primary);
        rest.sort_by_key(|id| std::cmp::Reverse(priority(*id)));
        let (preferred, synchronous) = (rest[0], rest[1]);
        let frozen = FrozenReceiver::freeze(&pg, preferred).await;
        let client = pg.sql_ok(primary).await;
        let mut acked = Vec::new();
        for i in 0..20_i64 {
            let id = phase * 1_000_000 + i;
            client
                .execute(INSERT_ROW, &[&id])
                .await
                .expect("insert acknowledged");
            acked.push(id);
        }
        if phase == 2 {
            // Two MiB of WAL the frozen standby never gets, and its reports say so.
            client
                .execute(
                    "INSERT INTO filler SELECT g, string_agg(md5(random()::text), '') FROM generate_series(1, 1000) g, generate_series(1, 64) k GROUP BY g",
                    &[],
                )
                .await
                .expect("filler");
            let until = Instant::now() + PG_WAIT;
            loop {
                if let (Some(theirs), Some(mine)) = positions(&pg, primary, preferred).await {
                    if mine > theirs + 1_048_576 {
                        break;
                    }
                }
                assert!(
                    Instant::now() < until,
                    "node {preferred} reported behind\n{}",
                    pg.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        pg.c.kill9(primary);
        assert!(Postmasters::kill9(&pg.data_dir(primary)).is_some());
        let (next, _) = pg.wait_primary(&rest).await;
        drop(frozen);
        assert_eq!(
            next, synchronous,
            "phase {phase}: node {preferred} (priority {}) lacks acknowledged rows; node {synchronous} has them and must be promoted\n{}",
            priority(preferred),
            pg.logs()
        );
        let new = pg.sql_ok(next).await;
        for id in &acked {
            let n: i64 = new
                .query_one("SELECT count(*) FROM rows WHERE id = $1", &[id])
                .await
                .expect("count")
                .get(0);
            assert_eq!(
                n, 1,
                "phase {phase}: acknowledged row {id} is on node {next}"
            );
        }
        // The passed-over standby follows the new primary and gets the rows.
        pg.wait_streaming(next, &[preferred]).await;
        pg.c.start(primary);
        primary = next;
    }
    pg.wait_streaming(primary, &others(primary)).await;
}

// ---------------------------------------------------------------------------------------
// Issue 17: failback of the data.
// ---------------------------------------------------------------------------------------

/// Rows in the big table before the failover (so the data dir is large against the diff).
const BULK_ROWS_BEFORE: i64 = 400_000;
/// Rows the new primary writes while home is away.
const ROWS_WHILE_AWAY: i64 = 100_000;

/// An executable the test writes outside the cluster's folder (the config names it before
/// the folder exists); removed when dropped.
struct TempScript {
    path: PathBuf,
}

impl TempScript {
    fn new(name: &str, text: &str) -> TempScript {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "quorate-test-{}-{}",
            std::process::id(),
            name.replace('.', "-")
        ));
        std::fs::create_dir_all(&dir).expect("script dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TempScript { path }
    }
}

impl Drop for TempScript {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Posts a failback (retried while home is not eligible yet, e.g. still rewinding).
async fn request_failback(pg: &PgCluster, via: u64, body: serde_json::Value) {
    let until = Instant::now() + PG_WAIT;
    loop {
        let r = pg.c.post_json(via, "/v1/failback", body.clone()).await;
        if r.status == 200 {
            return;
        }
        assert!(
            Instant::now() < until,
            "failback {body}: {} {}\n{}",
            r.status,
            r.body,
            pg.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the operation is in `phase` (as any live node reports it), or has ended
/// when `phase` is None.
async fn wait_operation_phase(pg: &PgCluster, among: &[u64], phase: Option<&str>) {
    let until = Instant::now() + PG_WAIT;
    loop {
        for id in among {
            if let Some(st) = pg.c.status(*id).await {
                let now = st.operation.as_ref().map(|op| {
                    op.get("phase")
                        .map(|p| p.to_string().trim_matches('"').to_string())
                        .unwrap_or_default()
                });
                if now.as_deref() == phase {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < until,
            "the operation never reached {phase:?}\n{}",
            pg.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `operation_data` records of operation `id` (all when None) in node `via`'s history.
async fn data_records(pg: &PgCluster, via: u64) -> Vec<serde_json::Value> {
    pg.c.history(via)
        .await
        .into_iter()
        .filter_map(|e| e.get("event")?.get("operation_data").cloned())
        .collect()
}

/// The newest operation's id in node `via`'s history.
async fn last_operation_id(pg: &PgCluster, via: u64) -> u64 {
    pg.c.history(via)
        .await
        .iter()
        .rev()
        .find_map(|e| {
            e.get("event")?
                .get("operation_started")?
                .get("id")?
                .as_u64()
        })
        .expect("an operation in history")
}

/// Waits until operation `id` ended (in node `via`'s history) and returns its outcome.
async fn wait_outcome(pg: &PgCluster, via: u64, id: u64) -> String {
    let until = Instant::now() + PG_WAIT;
    loop {
        if let Some(o) = operation_outcome(pg, via, id).await {
            return o;
        }
        assert!(
            Instant::now() < until,
            "operation {id} did not end within {PG_WAIT:?}\n{}",
            pg.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The newest outcome of operation `id` in node `via`'s history ("committed", "undone", ...).
async fn operation_outcome(pg: &PgCluster, via: u64, id: u64) -> Option<String> {
    pg.c.history(via).await.iter().rev().find_map(|e| {
        let end = e.get("event")?.get("operation_ended")?;
        (end.get("id")?.as_u64()? == id).then(|| match end.get("outcome") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        })
    })
}

/// kill -9 of `node` (quorate and postmaster); returns the new primary among the others.
async fn kill_primary(pg: &mut PgCluster, node: u64, ids: &[u64]) -> u64 {
    pg.c.kill9(node);
    assert!(
        Postmasters::kill9(&pg.data_dir(node)).is_some(),
        "node {node}'s postmaster.pid"
    );
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != node).collect();
    pg.wait_primary(&others).await.0
}

/// The rejoin's account of the rewind on `node` (its output in `/v1/actions`), once it rewound.
async fn rewind_account(pg: &PgCluster, node: u64) -> String {
    let until = Instant::now() + PG_WAIT;
    loop {
        let url = format!("http://{}/v1/actions", pg.c.api(node));
        if let Ok(r) = common::http(Duration::from_secs(5)).get(url).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                let found = v["actions"].as_array().and_then(|a| {
                    a.iter().rev().find_map(|x| {
                        let s = x["output"].as_str()?;
                        s.contains("pg_rewind copied").then(|| s.to_string())
                    })
                });
                if let Some(s) = found {
                    return s;
                }
            }
        }
        assert!(
            Instant::now() < until,
            "no rewind on node {node}\n{}",
            pg.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A size as the agent prints it (`812 B`, `1.2 MiB`) in bytes.
fn size_bytes(t: &str) -> f64 {
    let mut it = t.split_whitespace();
    let n: f64 = it.next().and_then(|n| n.parse().ok()).unwrap_or(f64::NAN);
    match it.next() {
        Some("B") => n,
        Some("KiB") => n * 1024.0,
        Some("MiB") => n * 1024.0 * 1024.0,
        Some("GiB") => n * 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    }
}

/// "... without WAL: 10.5 MiB of 60.0 MiB ..." → (copied, data dir) without WAL, in bytes.
fn rewind_sizes_without_wal(account: &str) -> (f64, f64) {
    let after = account.split("without WAL: ").nth(1).unwrap_or_default();
    let mut parts = after.splitn(2, " of ");
    let copied = parts.next().unwrap_or_default();
    let dir = parts
        .next()
        .and_then(|r| r.split(" (").next())
        .unwrap_or_default();
    (size_bytes(copied), size_bytes(dir))
}

/// Changes one byte of one row of `table` in `node`'s data files while its PostgreSQL is
/// down (silent corruption no WAL knows of: pg_rewind copies nothing of it).
fn corrupt_row(pg: &PgCluster, node: u64, relation_path: &str, needle: &[u8]) {
    let path = pg.data_dir(node).join(relation_path);
    let mut bytes = std::fs::read(&path).expect("relation file");
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the row's text in the relation file");
    let last = at + needle.len() - 1;
    bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
    std::fs::write(&path, bytes).expect("write the relation file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_rewinds_snapshots_syncs_verifies_undoes_and_commits_without_losing_a_commit() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    // The operator's own snapshot command (an LVM snapshot in production): it fails while
    // `<script>.fail` exists.
    let script = TempScript::new(
        "snapshot.sh",
        "#!/bin/sh\nif [ -e \"$0.fail\" ]; then echo \"the test's snapshot refuses\" >&2; exit 1; fi\necho \"test snapshot of node $QUORATE_NODE\"\n",
    );
    let fail_marker = script.path.with_extension("sh.fail");
    let mut pg = pg_cluster_with_sections(
        &format!(
            "monitor_interval = \"500ms\"\nsnapshot = \"{}\"\n",
            script.path.display()
        ),
        &[],
        "[failback]\nverify_timeout = \"150s\"\n",
    );
    let ids = [1, 2, 3];
    let (home, _) = pg.wait_primary(&ids).await;
    let others = |p: u64| ids.iter().copied().filter(|i| *i != p).collect::<Vec<_>>();
    pg.wait_streaming(home, &others(home)).await;
    let client = pg.sql_ok(home).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE rows (id bigint PRIMARY KEY, epoch bigint NOT NULL, server int NOT NULL);
             CREATE TABLE bulk (id bigint PRIMARY KEY, pad text NOT NULL);
             INSERT INTO bulk SELECT g, repeat('x', 100) FROM generate_series(1, {BULK_ROWS_BEFORE}) g;
             CREATE TABLE precious (id int PRIMARY KEY, v text NOT NULL);
             INSERT INTO precious SELECT g, 'precious-row-' || lpad(g::text, 4, '0') || '-aaaaaaaa' FROM generate_series(1, 1000) g;
"
        ))
        .await
        .expect("tables");
    // Frozen and on disk: nothing on either side touches these pages again (pg_rewind
    // copies none of them).
    for sql in ["VACUUM FREEZE precious", "VACUUM FREEZE bulk", "CHECKPOINT"] {
        client.batch_execute(sql).await.expect(sql);
    }
    let precious_path: String = client
        .query_one("SELECT pg_relation_filepath('precious')", &[])
        .await
        .expect("relation path")
        .get(0);
    pg.wait_replayed(home).await;
    let writers = Writers::start(&pg, 2);
    writers.wait_more(20, &pg).await;

    // ---- Round 1: failover, 100 000 rows away, rewind, failback --no-commit, undo, failback.
    let away = kill_primary(&mut pg, home, &ids).await;
    writers.wait_more(20, &pg).await;
    pg.sql_ok(away)
        .await
        .batch_execute(&format!(
            "INSERT INTO bulk SELECT g, repeat('y', 100) FROM generate_series({}, {}) g",
            BULK_ROWS_BEFORE + 1,
            BULK_ROWS_BEFORE + ROWS_WHILE_AWAY
        ))
        .await
        .expect("rows while home is away");
    pg.c.start(home);
    let rewind = rewind_account(&pg, home).await;
    let (copied, data_dir) = rewind_sizes_without_wal(&rewind);
    eprintln!("home node {home} came back: {rewind}");
    // pg_rewind (15) copies the source's WAL segments whole; of the data itself it copies
    // only what changed.
    assert!(
        copied.is_finite() && data_dir.is_finite() && copied * 2.0 < data_dir,
        "the rewind copies far less of the data than the data dir holds: {rewind}"
    );
    pg.wait_streaming(away, &[home]).await;

    // A failing protective snapshot stops the failback before anything moved.
    std::fs::write(&fail_marker, "").expect("fail marker");
    request_failback(&pg, away, serde_json::json!({ "no_commit": true })).await;
    let refused = wait_outcome(&pg, away, 1).await;
    assert!(
        refused.contains("aborted") && refused.contains("protective snapshot failed"),
        "{refused}"
    );
    assert_eq!(pg.wait_primary(&ids).await.0, away, "nothing moved");
    std::fs::remove_file(&fail_marker).expect("fail marker");

    request_failback(&pg, away, serde_json::json!({ "no_commit": true })).await;
    wait_operation_phase(&pg, &ids, Some("awaiting_commit")).await;
    let op1 = last_operation_id(&pg, home).await;
    assert_eq!(
        pg.wait_primary(&ids).await.0,
        home,
        "home is primary while awaiting commit"
    );
    let records = data_records(&pg, home).await;
    let of = |action: &str| {
        records
            .iter()
            .filter(|r| r["id"].as_u64() == Some(op1) && r["action"] == action)
            .cloned()
            .collect::<Vec<_>>()
    };
    let snapshot = of("snapshot");
    assert!(
        snapshot.iter().any(|r| r["ok"] == true
            && r["node"].as_u64() == Some(away)
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("restore point quorate_failback_e")
                    && d.contains(&format!("test snapshot of node {away}")))),
        "the protective snapshot on node {away} is in history: {records:?}"
    );
    let promote = of("promote");
    assert!(
        promote.iter().any(|r| r["node"].as_u64() == Some(home)
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("RPO 0 bytes"))),
        "the cut-over's final sync is in history with RPO 0: {records:?}"
    );
    let verify = of("verify");
    assert!(
        verify.iter().any(|r| r["ok"] == true
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("equal on home node"))),
        "verify compared the tables and found them equal: {records:?}"
    );
    // Writes go on during verification and while awaiting commit, on home.
    writers.wait_more(50, &pg).await;
    let home_epoch = pg.c.status(home).await.expect("status").epoch.get();

    // Undo: the previous primary again, with every row written on home meanwhile.
    let r =
        pg.c.post_json(away, "/v1/failback/undo", serde_json::json!({}))
            .await;
    assert_eq!(r.status, 200, "undo: {r:?}\n{}", pg.logs());
    assert_eq!(wait_outcome(&pg, away, op1).await, "undone");
    let (p, _) = pg.wait_primary(&ids).await;
    assert_eq!(p, away, "undo returns the primary to node {away}");
    writers.wait_more(20, &pg).await;
    check_rows(&pg, away, &writers.so_far()).await;
    let on_home: i64 = pg
        .sql_ok(away)
        .await
        .query_one(
            "SELECT count(*) FROM rows WHERE epoch = $1",
            &[&i64::try_from(home_epoch).unwrap_or(-1)],
        )
        .await
        .expect("count")
        .get(0);
    assert!(
        on_home > 0,
        "rows written on home during the failback are on node {away} after the undo"
    );
    let promote_back = data_records(&pg, away).await.into_iter().any(|r| {
        r["id"].as_u64() == Some(op1)
            && r["action"] == "promote"
            && r["node"].as_u64() == Some(away)
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("RPO 0 bytes"))
    });
    assert!(
        promote_back,
        "the undo's final sync is in history with RPO 0"
    );

    // Fail back again, committed this time.
    pg.wait_streaming(away, &[home]).await;
    request_failback(&pg, away, serde_json::json!({ "no_commit": false })).await;
    // Operation ids count up one by one.
    let op2 = op1 + 1;
    assert_eq!(
        wait_outcome(&pg, away, op2).await,
        "committed",
        "{}",
        pg.logs()
    );
    assert_eq!(pg.wait_primary(&ids).await.0, home);
    writers.wait_more(20, &pg).await;

    // ---- Round 2: a difference on home makes verify fail and the failback undo itself.
    let away2 = kill_primary(&mut pg, home, &ids).await;
    writers.wait_more(20, &pg).await;
    corrupt_row(&pg, home, &precious_path, b"precious-row-0042-aaaaaaaa");
    pg.c.start(home);
    pg.wait_streaming(away2, &[home]).await;
    request_failback(&pg, away2, serde_json::json!({ "no_commit": false })).await;
    let op3 = op2 + 1;
    assert_eq!(
        wait_outcome(&pg, away2, op3).await,
        "undone",
        "{}",
        pg.logs()
    );
    assert_eq!(pg.wait_primary(&ids).await.0, away2);
    let undo_reason = pg.c.history(away2).await.iter().rev().find_map(|e| {
        let step = e.get("event")?.get("operation_step")?;
        (step.get("id")?.as_u64()? == op3)
            .then(|| step.get("reason")?.as_str().map(str::to_string))
            .flatten()
    });
    assert!(
        undo_reason
            .as_deref()
            .is_some_and(|r| r.contains("precious") && r.contains("differs")),
        "the undo says which table differed: {undo_reason:?}"
    );

    // ---- Round 3: fail back to a node that was never home.
    let new_home = ids
        .iter()
        .copied()
        .find(|i| *i != home && *i != away2)
        .expect("a third node");
    pg.wait_streaming(away2, &[new_home]).await;
    request_failback(
        &pg,
        away2,
        serde_json::json!({ "no_commit": false, "to": new_home }),
    )
    .await;
    let op4 = op3 + 1;
    assert_eq!(
        wait_outcome(&pg, away2, op4).await,
        "committed",
        "{}",
        pg.logs()
    );
    assert_eq!(pg.wait_primary(&ids).await.0, new_home);
    let st = pg.c.status(new_home).await.expect("status");
    assert!(
        st.failed_over.is_none(),
        "after a committed failback to node {new_home} nothing is failed over: {:?}",
        st.failed_over
    );

    writers.wait_more(20, &pg).await;
    let acks = writers.finish().await;
    let checked = check_rows(&pg, new_home, &acks).await;
    eprintln!("failback rounds done: {checked} acknowledged rows, 0 lost; rewind: {rewind}");
}
