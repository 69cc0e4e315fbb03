//! `quorate-chaos postgres`: a real PostgreSQL 15 cluster under three quorate nodes (the
//! built-in agent, from empty data dirs) with a bank-transfer workload routed by `/primary`,
//! under kill -9 of a node (quorate and postmaster), a hung daemon (SIGSTOP of quorate
//! alone: its PostgreSQL keeps running), graceful restarts, switchovers, and with the netns
//! backend partitions, packet loss and link loss. After healing it checks, on the final
//! primary: the total balance is conserved and every account agrees with the transfers;
//! every acknowledged transfer is there (with `synchronous` quorum or strict); each epoch's
//! transfers were accepted by one server, and none of epoch e was sent after one of a later
//! epoch was acknowledged; and every replica streams and holds the same transfers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;

use quorate::cli::localcluster::ClusterSpec;
use quorate::cli::pgcluster::{PgLocalCluster, SUPERUSER_PASSWORD};

use crate::nemesis::{FaultKind, ScheduleSpec, Step, Target};
use crate::pgwrite::{check_acknowledged, connect, PgAck, RowCheck};
use crate::run::Backend;

/// Accounts in the bank, and each one's opening balance.
pub const ACCOUNTS: i32 = 10;
pub const OPENING_BALANCE: i64 = 1_000;
/// A transfer with no answer after this long counts as failed (outcome unknown).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// The first primary, the bootstrap and every wait for streaming are bounded by this.
const SETUP_BOUND: Duration = Duration::from_secs(180);
/// A graceful stop (SIGTERM) that takes longer is finished with SIGKILL.
const GRACEFUL_STOP_BOUND: Duration = Duration::from_secs(30);
/// At most this many transfers per run (bounds the history and the checks).
const MAX_TRANSFERS: i64 = 2_000_000;

/// The faults this workload knows, per backend.
pub fn supported(backend: Backend) -> Vec<FaultKind> {
    let mut v = vec![
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Restart,
        FaultKind::Switchover,
    ];
    if backend == Backend::Netns {
        v.extend([FaultKind::Partition, FaultKind::Loss, FaultKind::Link]);
    }
    v
}

#[derive(Clone, Debug)]
pub struct PgChaosOptions {
    pub backend: Backend,
    pub duration: Duration,
    pub seed: u64,
    pub out: PathBuf,
    pub nemesis: Vec<FaultKind>,
    pub clients: usize,
    pub interval: Duration,
    pub fault_duration: Duration,
    pub profile: String,
    pub converge_bound: Duration,
    /// `[postgres] synchronous`: off, quorum or strict.
    pub synchronous: String,
}

/// What the run found (written as `report.json`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct PgChaosReport {
    pub pass: bool,
    pub backend: String,
    pub synchronous: String,
    pub seed: u64,
    pub faults: Vec<String>,
    pub transfers_acknowledged: usize,
    pub transfers_failed: u64,
    pub total_balance: i64,
    pub expected_total: i64,
    /// Accounts whose balance disagrees with the transfers that touched them.
    pub accounts_disagreeing: Vec<i32>,
    /// Acknowledged transfers missing on the final primary (a failure with quorum/strict).
    pub lost: Vec<i64>,
    pub epochs_on_several_servers: Vec<i64>,
    pub out_of_epoch_order: usize,
    pub epochs_seen: usize,
    pub converged: bool,
    pub convergence_problems: Vec<String>,
    pub problems: Vec<String>,
}

/// Runs the whole test; the report says whether it passed.
pub async fn run_postgres(opts: &PgChaosOptions) -> Result<PgChaosReport, String> {
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| format!("cannot create {}: {e}", opts.out.display()))?;
    let schedule = crate::nemesis::schedule(&ScheduleSpec {
        seed: opts.seed,
        kinds: opts.nemesis.clone(),
        run: opts.duration,
        interval: opts.interval,
        fault_duration: opts.fault_duration,
        nodes: 3,
    });
    let mut spec = ClusterSpec::voters(3);
    spec.name = "chaos-pg".into();
    quorate::cli::pgcluster::apply_timing(&mut spec, &opts.profile)?;
    let mut pg =
        PgLocalCluster::create(&spec, "monitor_interval = \"500ms\"\n", &opts.synchronous)?;
    pg.cluster_mut()
        .env
        .push(("QUORATE_LOG".into(), "info".into()));
    let net = match opts.backend {
        Backend::Local => None,
        Backend::Netns => {
            let net = crate::run::into_namespaces(pg.cluster_mut()).map_err(|e| e.to_string())?;
            for id in pg.cluster().ids() {
                pg.move_postgres(id, std::net::IpAddr::V4(net.ip(id)))?;
            }
            Some(net)
        }
    };
    let mut chaos = PgChaos {
        pg,
        net,
        paused: Vec::new(),
        faults: Vec::new(),
    };
    let result = chaos.main(opts, &schedule).await;
    chaos.heal_all().await;
    // Save the logs before the guard removes the cluster's folder.
    for n in &chaos.pg.cluster().nodes {
        let id = n.member.id;
        let _ = std::fs::copy(&n.log, opts.out.join(format!("node{id}.log")));
        let mut pglog = chaos.pg.data_dir(id).into_os_string();
        pglog.push(".log");
        let _ = std::fs::copy(
            PathBuf::from(pglog),
            opts.out.join(format!("node{id}-postgres.log")),
        );
    }
    let mut report = result?;
    report.faults = std::mem::take(&mut chaos.faults);
    drop(chaos);
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(opts.out.join("report.json"), text)
        .map_err(|e| format!("cannot write report.json: {e}"))?;
    Ok(report)
}

/// The cluster, its network (netns) and what the nemesis did.
struct PgChaos {
    /// Dropped first (daemons, then postmasters, then the folder) ...
    pg: PgLocalCluster,
    /// ... then the namespaces and the bridge.
    net: Option<crate::netns::Netns>,
    paused: Vec<u64>,
    faults: Vec<String>,
}

/// The bank-transfer clients' shared state.
#[derive(Clone)]
struct Bank {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<PgAck>>>,
    failed: Arc<AtomicU64>,
    order: Arc<AtomicU64>,
    next_id: Arc<AtomicI64>,
}

/// A PostgreSQL error with the server's message (tokio-postgres shows only "db error").
fn sql_error(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

fn lock(acks: &Mutex<Vec<PgAck>>) -> std::sync::MutexGuard<'_, Vec<PgAck>> {
    acks.lock().unwrap_or_else(|p| p.into_inner())
}

impl PgChaos {
    fn note(&mut self, line: String) {
        eprintln!("[nemesis] {line}");
        self.faults.push(line);
    }

    fn nodes(&self) -> Vec<(u64, SocketAddr, SocketAddr)> {
        self.pg
            .cluster()
            .nodes
            .iter()
            .map(|n| (n.member.id, n.reach_api, self.pg.pg_addr(n.member.id)))
            .collect()
    }

    /// The node whose `/primary` answers 200 (the first found), if any.
    async fn primary(&self, http: &reqwest::Client) -> Option<u64> {
        for (id, api, _) in self.nodes() {
            if self.paused.contains(&id) || self.pg.cluster().pid(id).is_none() {
                continue;
            }
            if let Ok(r) = http.get(format!("http://{api}/primary")).send().await {
                if r.status().as_u16() == 200 {
                    return Some(id);
                }
            }
        }
        None
    }

    async fn wait_primary(&self, http: &reqwest::Client, bound: Duration) -> Result<u64, String> {
        let until = Instant::now() + bound;
        loop {
            if let Some(p) = self.primary(http).await {
                return Ok(p);
            }
            if Instant::now() > until {
                return Err(format!(
                    "no node answers 200 on /primary within {bound:?}\n{}",
                    self.pg.logs_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn main(
        &mut self,
        opts: &PgChaosOptions,
        schedule: &[Step],
    ) -> Result<PgChaosReport, String> {
        let http = crate::http::cluster_client(self.pg.cluster(), Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        self.pg
            .cluster_mut()
            .start_all()
            .map_err(|e| e.to_string())?;
        // The bank, on whichever node is primary once both standbys stream (retried: a
        // promotion may still move on a loaded machine).
        let until = Instant::now() + SETUP_BOUND;
        let first = loop {
            let first = self.wait_primary(&http, SETUP_BOUND).await?;
            let created = match self.wait_streaming(first, SETUP_BOUND).await {
                Err(e) => Err(e),
                Ok(()) => match connect(self.pg.pg_addr(first), SUPERUSER_PASSWORD).await {
                    None => Err(format!("cannot connect to node {first}'s PostgreSQL")),
                    Some(setup) => setup
                        .batch_execute(&format!(
                            "CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance bigint NOT NULL);\
                             INSERT INTO accounts SELECT g, {OPENING_BALANCE} FROM generate_series(1, {ACCOUNTS}) g ON CONFLICT DO NOTHING;\
                             CREATE TABLE IF NOT EXISTS transfers (id bigint PRIMARY KEY, src int NOT NULL, dst int NOT NULL, \
                             amount bigint NOT NULL, epoch bigint NOT NULL, server int NOT NULL)"
                        ))
                        .await
                        .map_err(|e| format!("create the bank on node {first}: {}", sql_error(e))),
                },
            };
            match created {
                Ok(()) => break first,
                Err(e) if Instant::now() > until => return Err(e),
                Err(e) => {
                    eprintln!("[chaos] setting up: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        eprintln!(
            "[chaos] PostgreSQL cluster up, node {first} primary; {} faults over {:?}",
            schedule.len(),
            opts.duration
        );
        let bank = Bank {
            stop: Arc::new(AtomicBool::new(false)),
            acks: Arc::new(Mutex::new(Vec::new())),
            failed: Arc::new(AtomicU64::new(0)),
            order: Arc::new(AtomicU64::new(0)),
            next_id: Arc::new(AtomicI64::new(1)),
        };
        let nodes = self.nodes();
        let headers = self.pg.cluster().auth_headers();
        let clients: Vec<_> = (0..opts.clients)
            .map(|k| {
                tokio::spawn(transfer_client(
                    bank.clone(),
                    nodes.clone(),
                    headers.clone(),
                    opts.seed ^ ((k as u64 + 1) * 0x9e37_79b9),
                ))
            })
            .collect();
        let start = Instant::now();
        for step in schedule {
            let at = start + Duration::from_millis(step.at_ms);
            tokio::time::sleep_until(at.into()).await;
            self.run_step(step, &http).await;
        }
        tokio::time::sleep_until((start + opts.duration).into()).await;
        bank.stop.store(true, SeqCst);
        for c in clients {
            let _ = c.await;
        }
        self.heal_all().await;
        let acks = lock(&bank.acks).clone();
        eprintln!(
            "[chaos] workload stopped: {} transfers acknowledged, {} failed or unknown; converging (bound {:?})",
            acks.len(),
            bank.failed.load(SeqCst),
            opts.converge_bound
        );
        let (primary, problems) = self.converge(&http, opts.converge_bound).await;
        let mut report = PgChaosReport {
            backend: opts.backend.name().into(),
            synchronous: opts.synchronous.clone(),
            seed: opts.seed,
            transfers_acknowledged: acks.len(),
            transfers_failed: bank.failed.load(SeqCst),
            expected_total: OPENING_BALANCE * i64::from(ACCOUNTS),
            converged: problems.is_empty(),
            convergence_problems: problems,
            ..PgChaosReport::default()
        };
        let Some(primary) = primary else {
            report.problems.push("no primary after healing".into());
            return Ok(report);
        };
        self.check_bank(primary, &acks, &mut report).await?;
        let zero_loss = opts.synchronous != "off";
        report.pass = report.converged
            && report.problems.is_empty()
            && report.total_balance == report.expected_total
            && report.accounts_disagreeing.is_empty()
            && report.epochs_on_several_servers.is_empty()
            && report.out_of_epoch_order == 0
            && (report.lost.is_empty() || !zero_loss);
        Ok(report)
    }

    async fn check_bank(
        &self,
        primary: u64,
        acks: &[PgAck],
        report: &mut PgChaosReport,
    ) -> Result<(), String> {
        let at = self.pg.pg_addr(primary);
        let c = connect(at, SUPERUSER_PASSWORD)
            .await
            .ok_or_else(|| format!("cannot connect to the final primary, node {primary}"))?;
        report.total_balance = c
            .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
            .await
            .map_err(sql_error)?
            .get(0);
        let rows = c
            .query(
                "SELECT a.id, a.balance, \
                 COALESCE((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)::bigint \
                 - COALESCE((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)::bigint \
                 FROM accounts a ORDER BY a.id",
                &[],
            )
            .await
            .map_err(sql_error)?;
        for r in rows {
            let (id, balance, net): (i32, i64, i64) = (r.get(0), r.get(1), r.get(2));
            if balance != OPENING_BALANCE + net {
                report.accounts_disagreeing.push(id);
            }
        }
        let check: RowCheck = check_acknowledged(
            at,
            SUPERUSER_PASSWORD,
            "SELECT id, epoch, server FROM transfers",
            acks,
        )
        .await?;
        report.lost = check.lost.iter().copied().take(100).collect();
        report.epochs_on_several_servers = check.epochs_on_several_servers;
        report.out_of_epoch_order = check.out_of_order.len();
        report.epochs_seen = c
            .query_one("SELECT count(DISTINCT epoch) FROM transfers", &[])
            .await
            .map(|r| r.get::<_, i64>(0) as usize)
            .unwrap_or(0);
        Ok(())
    }

    async fn wait_streaming(&self, primary: u64, bound: Duration) -> Result<(), String> {
        let others: Vec<u64> = self
            .pg
            .cluster()
            .ids()
            .into_iter()
            .filter(|i| *i != primary)
            .collect();
        let until = Instant::now() + bound;
        while !self.pg.all_stream_from(primary, &others).await {
            if Instant::now() > until {
                return Err(format!(
                    "nodes {others:?} do not stream from node {primary} within {bound:?}\n{}",
                    self.pg.logs_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Until one node serves `/primary`, every other streams from it and holds the same
    /// transfers (count and sum), or the bound passes: (the primary, what is still wrong).
    async fn converge(
        &self,
        http: &reqwest::Client,
        bound: Duration,
    ) -> (Option<u64>, Vec<String>) {
        let t0 = Instant::now();
        let mut problems = vec!["not checked".to_string()];
        let mut primary = None;
        while t0.elapsed() < bound {
            problems.clear();
            primary = self.primary(http).await;
            let Some(p) = primary else {
                problems.push("no node answers 200 on /primary".into());
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let others: Vec<u64> = self
                .pg
                .cluster()
                .ids()
                .into_iter()
                .filter(|i| *i != p)
                .collect();
            if !self.pg.all_stream_from(p, &others).await {
                problems.push(format!(
                    "not every replica streams from node {p}: {:?}",
                    self.pg.streaming_from(p).await
                ));
            }
            let mut sums = BTreeMap::new();
            for id in self.pg.cluster().ids() {
                let sum = match connect(self.pg.pg_addr(id), SUPERUSER_PASSWORD).await {
                    Some(c) => c
                        .query_one(
                            "SELECT count(*), COALESCE(sum(amount), 0)::bigint FROM transfers",
                            &[],
                        )
                        .await
                        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                        .ok(),
                    None => None,
                };
                sums.insert(id, sum);
            }
            let distinct: std::collections::BTreeSet<_> = sums.values().collect();
            if distinct.len() != 1 || sums.values().any(|s| s.is_none()) {
                problems.push(format!(
                    "the nodes hold different transfers (count, sum): {sums:?}"
                ));
            }
            if problems.is_empty() {
                eprintln!("[chaos] converged in {} ms: node {p} primary, every replica streams and holds the same transfers", t0.elapsed().as_millis());
                return (primary, problems);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("[chaos] not converged within {bound:?}: {problems:?}");
        (primary, problems)
    }

    async fn run_step(&mut self, step: &Step, http: &reqwest::Client) {
        let ids = self.pg.cluster().ids();
        let primary = self.primary(http).await;
        let pick = |n: u64| ids[(n % ids.len() as u64) as usize];
        let node = match step.target {
            Target::Primary => primary.unwrap_or_else(|| pick(step.at_ms)),
            Target::Node(n) => pick(n),
        };
        let lasting = Duration::from_millis(step.duration_ms);
        let t = format!("{:>6} ms", step.at_ms);
        match step.kind {
            FaultKind::Kill => {
                self.note(format!(
                    "{t} kill -9 of node {node} (quorate and postmaster; primary {primary:?})"
                ));
                self.pg.kill9_node(node);
                tokio::time::sleep(lasting).await;
                if let Err(e) = self.pg.cluster_mut().start(node) {
                    self.note(format!("start of node {node} failed: {e}"));
                }
            }
            FaultKind::Pause => {
                self.note(format!("{t} SIGSTOP of node {node}'s quorate for {lasting:?} (its PostgreSQL keeps running; primary {primary:?})"));
                self.pg.cluster().signal(node, libc::SIGSTOP);
                self.paused.push(node);
                tokio::time::sleep(lasting).await;
                self.pg.cluster().signal(node, libc::SIGCONT);
                self.paused.retain(|p| *p != node);
            }
            FaultKind::Restart => {
                self.note(format!(
                    "{t} graceful restart of node {node} (SIGTERM; primary {primary:?})"
                ));
                self.pg.cluster().signal(node, libc::SIGTERM);
                let t0 = Instant::now();
                while t0.elapsed() < GRACEFUL_STOP_BOUND {
                    let exited = self
                        .pg
                        .cluster_mut()
                        .nodes
                        .iter_mut()
                        .find(|n| n.member.id == node)
                        .and_then(|n| n.child.as_mut())
                        .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                        .unwrap_or(true);
                    if exited {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.pg.cluster_mut().kill9(node);
                if let Err(e) = self.pg.cluster_mut().start(node) {
                    self.note(format!("start of node {node} failed: {e}"));
                }
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
                let via = primary.unwrap_or(node);
                let api = self
                    .nodes()
                    .into_iter()
                    .find(|(i, _, _)| *i == via)
                    .map(|(_, a, _)| a);
                let answer = match api {
                    Some(api) => match http
                        .post(format!("http://{api}/v1/switchover"))
                        .header("content-type", "application/json")
                        .body(format!("{{\"to\": {target}}}"))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16().to_string(),
                        Err(e) => e.to_string(),
                    },
                    None => "no API".into(),
                };
                self.note(format!(
                    "{t} switchover to node {target} via node {via}: {answer}"
                ));
            }
            FaultKind::Partition | FaultKind::Loss | FaultKind::Link => {
                let Some(net) = self.net.as_ref() else {
                    self.note(format!(
                        "{t} {} needs --backend netns: skipped",
                        step.kind.name()
                    ));
                    return;
                };
                let (applied, what) =
                    crate::netns::apply_fault(net, step.kind, &ids, node, step.variant);
                let applied = match applied {
                    Ok(()) => String::new(),
                    Err(e) => format!(" (FAILED to apply: {e})"),
                };
                self.note(format!(
                    "{t} {what} for {lasting:?}{applied} (primary {primary:?})"
                ));
                tokio::time::sleep(lasting).await;
                if let Some(Err(e)) = self.net.as_ref().map(|n| n.heal()) {
                    self.note(format!("network heal failed: {e}"));
                }
            }
            FaultKind::Failback | FaultKind::Stall => {
                self.note(format!(
                    "{t} {} is not part of the PostgreSQL workload: skipped",
                    step.kind.name()
                ));
            }
        }
    }

    /// Resumes every paused daemon, starts every stopped node, makes the network whole.
    async fn heal_all(&mut self) {
        if let Some(net) = self.net.as_ref() {
            if let Err(e) = net.heal() {
                eprintln!("[nemesis] healing the network failed: {e}");
            }
        }
        for id in std::mem::take(&mut self.paused) {
            self.pg.cluster().signal(id, libc::SIGCONT);
        }
        for id in self.pg.cluster().ids() {
            if self.pg.cluster().pid(id).is_none() {
                if let Err(e) = self.pg.cluster_mut().start(id) {
                    eprintln!("[nemesis] final start of node {id} failed: {e}");
                }
            }
        }
    }
}

/// One client: transfers a random amount between two random accounts, in one transaction
/// that also records the transfer with the fencing epoch and the accepting server, through
/// whichever node answers 200 on `/primary`.
async fn transfer_client(
    bank: Bank,
    nodes: Vec<(u64, SocketAddr, SocketAddr)>,
    headers: reqwest::header::HeaderMap,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Ok(http) = crate::http::client_with_headers(headers, Duration::from_millis(500)) else {
        return;
    };
    while !bank.stop.load(SeqCst) {
        let mut at = None;
        for (_, api, pg) in &nodes {
            if let Ok(r) = http.get(format!("http://{api}/primary")).send().await {
                if r.status().as_u16() == 200 {
                    at = Some(*pg);
                    break;
                }
            }
        }
        let Some(at) = at else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Some(mut client) = connect(at, SUPERUSER_PASSWORD).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        while !bank.stop.load(SeqCst) {
            let id = bank.next_id.fetch_add(1, SeqCst);
            if id > MAX_TRANSFERS {
                return;
            }
            let a = rng.gen_range(1..=ACCOUNTS);
            let mut b = rng.gen_range(1..=ACCOUNTS);
            if a == b {
                b = a % ACCOUNTS + 1;
            }
            let amount: i64 = rng.gen_range(1..=50);
            let sent = bank.order.fetch_add(1, SeqCst);
            let done =
                tokio::time::timeout(TRANSFER_TIMEOUT, transfer(&mut client, id, a, b, amount))
                    .await;
            match done {
                Ok(Ok(())) => {
                    let acked = bank.order.fetch_add(1, SeqCst);
                    lock(&bank.acks).push(PgAck {
                        id,
                        port: at.port(),
                        sent,
                        acked,
                        at: Instant::now(),
                    });
                }
                Ok(Err(e)) if !e.is_closed() && e.code().is_some() => {
                    // Refused by the server (read-only standby, serialization): its
                    // outcome is known (nothing committed); a standby means: find the
                    // primary again.
                    bank.failed.fetch_add(1, SeqCst);
                    if e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
                    {
                        break;
                    }
                }
                _ => {
                    // Connection lost or no answer: the outcome is unknown.
                    bank.failed.fetch_add(1, SeqCst);
                    break;
                }
            }
        }
    }
}

/// One transfer: both accounts updated (in id order, so concurrent transfers cannot
/// deadlock) and the transfer recorded, all or nothing.
async fn transfer(
    client: &mut tokio_postgres::Client,
    id: i64,
    src: i32,
    dst: i32,
    amount: i64,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let (first, second) = if src < dst { (src, dst) } else { (dst, src) };
    for acct in [first, second] {
        let delta = if acct == src { -amount } else { amount };
        tx.execute(
            "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
            &[&delta, &acct],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO transfers SELECT $1, $2, $3, $4, epoch, inet_server_port() FROM quorate.fencing",
        &[&id, &src, &dst, &amount],
    )
    .await?;
    tx.commit().await
}
