//! Writers that insert rows into PostgreSQL through whichever node answers 200 on
//! `/primary`, each on its own connection, recording every acknowledged insert: for the
//! PostgreSQL benchmark and workloads. Every row carries the fencing epoch read in the same
//! transaction (`quorate.fencing`) and the port of the server that accepted it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The table the writers insert into (created by [`create_table`]).
pub const TABLE_DDL: &str =
    "CREATE TABLE IF NOT EXISTS rows (id bigint PRIMARY KEY, epoch bigint NOT NULL, server int NOT NULL)";
const INSERT: &str =
    "INSERT INTO rows (id, epoch, server) SELECT $1, epoch, inet_server_port() FROM quorate.fencing";
/// An insert with no answer after this long counts as failed (the writer reconnects).
pub const INSERT_TIMEOUT: Duration = Duration::from_secs(5);

/// One acknowledged insert: its id, the server port that acknowledged it, when, and where
/// it sits in the writers' common order (one counter for all writers, taken just before the
/// INSERT was sent and just after its commit was acknowledged).
#[derive(Clone, Copy, Debug)]
pub struct PgAck {
    pub id: i64,
    pub port: u16,
    pub sent: u64,
    pub acked: u64,
    pub at: Instant,
}

/// Where a node's API and PostgreSQL listen.
#[derive(Clone, Copy, Debug)]
pub struct PgNode {
    pub api: SocketAddr,
    pub pg: SocketAddr,
}

pub struct PgWriters {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<PgAck>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock(acks: &Mutex<Vec<PgAck>>) -> std::sync::MutexGuard<'_, Vec<PgAck>> {
    acks.lock().unwrap_or_else(|p| p.into_inner())
}

/// A superuser connection to the PostgreSQL at `at` (None: none within 3 s).
pub async fn connect(at: SocketAddr, password: &str) -> Option<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(at.ip().to_string())
        .port(at.port())
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(3), cfg.connect(tokio_postgres::NoTls))
            .await
            .ok()?
            .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

/// Creates the writers' table on the PostgreSQL at `at`.
pub async fn create_table(at: SocketAddr, password: &str) -> Result<(), String> {
    let c = connect(at, password)
        .await
        .ok_or_else(|| format!("cannot connect to PostgreSQL at {at}"))?;
    c.batch_execute(TABLE_DDL).await.map_err(|e| e.to_string())
}

impl PgWriters {
    /// `count` writers over `nodes`, inserting ids from `first_id` up.
    pub fn start(nodes: Vec<PgNode>, count: usize, password: &str, first_id: i64) -> PgWriters {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let order = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicI64::new(first_id));
        let tasks = (0..count)
            .map(|_| {
                let (stop, acks, order, next_id, nodes) = (
                    stop.clone(),
                    acks.clone(),
                    order.clone(),
                    next_id.clone(),
                    nodes.clone(),
                );
                let password = password.to_string();
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_millis(500))
                        .build()
                        .unwrap_or_default();
                    while !stop.load(SeqCst) {
                        let mut port = None;
                        for n in &nodes {
                            let url = format!("http://{}/primary", n.api);
                            if let Ok(r) = http.get(url).send().await {
                                if r.status().as_u16() == 200 {
                                    port = Some(n.pg);
                                    break;
                                }
                            }
                        }
                        let Some(port) = port else {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            continue;
                        };
                        let Some(client) = connect(port, &password).await else {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            continue;
                        };
                        while !stop.load(SeqCst) {
                            let id = next_id.fetch_add(1, SeqCst);
                            let sent = order.fetch_add(1, SeqCst);
                            let done = tokio::time::timeout(
                                INSERT_TIMEOUT,
                                client.execute(INSERT, &[&id]),
                            )
                            .await;
                            match done {
                                Ok(Ok(1)) => {
                                    let acked = order.fetch_add(1, SeqCst);
                                    lock(&acks).push(PgAck {
                                        id,
                                        port: port.port(),
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
        PgWriters { stop, acks, tasks }
    }

    pub fn count(&self) -> usize {
        lock(&self.acks).len()
    }

    /// The first acknowledgement after `t` by a server other than `not_port`.
    pub fn first_ack_after(&self, t: Instant, not_port: u16) -> Option<Instant> {
        lock(&self.acks)
            .iter()
            .filter(|a| a.at > t && a.port != not_port)
            .map(|a| a.at)
            .min()
    }

    /// The acknowledgement times within `[from, to]`, in order.
    pub fn ack_times(&self, from: Instant, to: Instant) -> Vec<Instant> {
        let mut v: Vec<Instant> = lock(&self.acks)
            .iter()
            .map(|a| a.at)
            .filter(|at| *at >= from && *at <= to)
            .collect();
        v.sort();
        v
    }

    /// Stops the writers and returns every acknowledged insert.
    pub async fn finish(self) -> Vec<PgAck> {
        self.stop.store(true, SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let acks = lock(&self.acks).clone();
        acks
    }
}

/// What a check of the rows found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowCheck {
    pub acknowledged: usize,
    /// Acknowledged ids missing on the checked server.
    pub lost: Vec<i64>,
    /// Epochs whose rows more than one server accepted.
    pub epochs_on_several_servers: Vec<i64>,
    /// Rows of an epoch sent after a row of a later epoch was acknowledged: (id, epoch,
    /// later epoch).
    pub out_of_order: Vec<(i64, i64, i64)>,
}

impl RowCheck {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.epochs_on_several_servers.is_empty()
            && self.out_of_order.is_empty()
    }
}

/// Checks `acks` against the rows of the writers' table on the PostgreSQL at `at` (the
/// current primary): see [`check_acknowledged`].
pub async fn check_rows(
    at: SocketAddr,
    password: &str,
    acks: &[PgAck],
) -> Result<RowCheck, String> {
    check_acknowledged(at, password, "SELECT id, epoch, server FROM rows", acks).await
}

/// Checks `acks` against the rows `query` returns (id bigint, epoch bigint, server int) on
/// the PostgreSQL at `at` (the current primary): every acknowledged row is there; each
/// epoch's rows were accepted by one server; no row of epoch e was sent after a row of a
/// later epoch was acknowledged (two primaries at once).
pub async fn check_acknowledged(
    at: SocketAddr,
    password: &str,
    query: &str,
    acks: &[PgAck],
) -> Result<RowCheck, String> {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let c = connect(at, password)
        .await
        .ok_or_else(|| format!("cannot connect to PostgreSQL at {at}"))?;
    let rows: HashMap<i64, (i64, i32)> = c
        .query(query, &[])
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut check = RowCheck {
        acknowledged: acks.len(),
        ..RowCheck::default()
    };
    check.lost = acks
        .iter()
        .map(|a| a.id)
        .filter(|id| !rows.contains_key(id))
        .collect();
    let mut servers: BTreeMap<i64, BTreeSet<i32>> = BTreeMap::new();
    for (epoch, server) in rows.values() {
        servers.entry(*epoch).or_default().insert(*server);
    }
    check.epochs_on_several_servers = servers
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(e, _)| *e)
        .collect();
    let epoch_of = |a: &PgAck| rows.get(&a.id).map(|r| r.0);
    let mut first_ack: BTreeMap<i64, u64> = BTreeMap::new();
    for a in acks {
        if let Some(e) = epoch_of(a) {
            let f = first_ack.entry(e).or_insert(a.acked);
            *f = (*f).min(a.acked);
        }
    }
    for a in acks {
        let Some(e) = epoch_of(a) else { continue };
        if let Some((later, at)) = first_ack
            .range(e + 1..)
            .map(|(k, v)| (*k, *v))
            .min_by_key(|(_, v)| *v)
        {
            if a.sent > at {
                check.out_of_order.push((a.id, e, later));
            }
        }
    }
    Ok(check)
}
