//! The built-in `postgres` agent (`[resource] agent = "postgres"`): quorate runs a
//! PostgreSQL streaming-replication cluster itself, with the PostgreSQL binaries for the
//! server's lifecycle (initdb, pg_ctl, pg_basebackup, pg_rewind) and a PostgreSQL client for
//! SQL (status, promotion, the fencing token).
//!
//! | action | what it does |
//! |---|---|
//! | start | a data dir that exists starts **as a standby** (`standby.signal`): only promote makes a primary |
//! | promote | empty data dir and the cluster's first promotion (epoch 1): initdb, the replication role and `quorate.fencing`; otherwise `pg_promote()` and wait until out of recovery. Then the epoch goes into `quorate.fencing` |
//! | demote | a running primary restarts as a standby of the current primary (never just stops) |
//! | follow | empty data dir: pg_basebackup from the primary; else point `primary_conninfo` at it (reload, or restart a primary as a standby); a standby that does not stream within [`STREAM_WAIT`] is rewound |
//! | rejoin | crash-recover if needed (single-user mode), pg_rewind from the primary, restart as its standby; when rewind is impossible, re-clone (`rewind-or-reclone`) or stop and wait (`rewind-only`) |
//! | monitor | role, WAL position (LSN as bytes), timeline, streaming state: the service report |
//! | stop | pg_ctl stop (fast) when the daemon stops gracefully |
//! | snapshot | a failback's protective snapshot on the current primary: a named restore point (`pg_create_restore_point`), then the `[resource] snapshot` executable when configured (an LVM/ZFS snapshot) |
//! | verify | a failback's data check on home: the tables of `[postgres] verify_tables` (or every user table) held against writes, their row counts and checksums compared with the previous primary's once it replayed to the same position |
//!
//! A planned promotion (switchover, failback, undo) first waits, bounded by
//! [`FINAL_SYNC_WAIT`], until this standby replayed everything the demoted primary had (its
//! position after the demote): the RPO of the cut-over, in the promote's account.
//!
//! Fence and notify run the `[resource]` executables when configured (the exec agent inside
//! this one). PostgreSQL refuses to run as root: every binary runs as
//! `[postgres] os_user`, and every file the agent writes is owned by that user.

mod failback;
pub mod text;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;

use self::text::{SyncMode, Upstream, INCLUDE_LINE};
use super::agent::{Agent, AgentFuture};
use super::hooks::{HookContext, HookKind, HookOutcome, HookRunner, HookStats};
use crate::types::NodeId;
use crate::util::process_alive;

/// How long follow waits for the WAL receiver to stream before it rewinds.
pub const STREAM_WAIT: Duration = Duration::from_secs(15);

/// A follow's probe of its upstream's port; two failed probes in a row end the wait.
pub const UPSTREAM_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What start and demote say of a former primary that crashed.
const CRASHED_PRIMARY_LEFT_STOPPED: &str = "left stopped: it crashed while primary and may hold WAL the current primary never received; its rejoin rewinds it (pg_rewind) and starts it as a standby";

/// How a wait for the WAL receiver ended.
enum Streaming {
    Yes,
    /// Not within the wait (why).
    No(String),
    /// The upstream stopped answering (why).
    UpstreamDown(String),
}
/// Longest a planned promotion waits to have replayed everything the demoted primary had.
pub const FINAL_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Longest verify waits for a lock on the tables it compares (writers hold it off).
pub const VERIFY_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often start, stop and promote look whether PostgreSQL got there.
pub const ARRIVAL_POLL: Duration = Duration::from_millis(10);

/// Longest a status query may take (the monitor's connection and queries).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Output of a PostgreSQL binary kept in an action's outcome.
const MAX_TOOL_OUTPUT: usize = 4096;

/// What a former primary whose data diverged does (`[postgres] rejoin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejoinMode {
    RewindOrReclone,
    RewindOnly,
}

/// Everything the agent needs, resolved by the daemon from `[postgres]` (passwords read).
#[derive(Clone)]
pub struct PostgresSettings {
    pub node: NodeId,
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub port: u16,
    pub listen: String,
    /// None: run the binaries as the daemon's own user.
    pub os_user: Option<String>,
    pub superuser: String,
    pub superuser_password: String,
    pub replication_user: String,
    pub replication_password: String,
    pub rejoin: RejoinMode,
    pub log_file: PathBuf,
    pub database: String,
    /// Each voter's `[[peer]] service` address (where its PostgreSQL listens).
    pub services: HashMap<NodeId, String>,
    /// Longest one action may take (initdb, a base backup, a rewind).
    pub action_timeout: Duration,
    /// How commits wait for standbys; the primary's monitor keeps
    /// `synchronous_standby_names` to it.
    pub synchronous: SyncMode,
    /// The tables verify compares (`schema.table`; empty: every user table).
    pub verify_tables: Vec<String>,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the passwords.
        f.debug_struct("PostgresSettings")
            .field("node", &self.node)
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("os_user", &self.os_user)
            .finish_non_exhaustive()
    }
}

/// The bytes of every file under `dir` (what a full copy of a data dir would move); files
/// that vanish or cannot be read count 0.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    total = total.saturating_add(e.metadata().map(|m| m.len()).unwrap_or(0))
                }
                _ => {}
            }
        }
    }
    total
}

/// An action that failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{tool} failed ({status}): {output}")]
    Tool {
        tool: String,
        status: String,
        output: String,
    },
    #[error("cannot run {tool}: {source}; check [postgres] bin_dir (is postgresql-15 installed?)")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("SQL on {target}: {message}")]
    Sql { target: String, message: String },
    #[error("{0}")]
    Refused(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let what = what.into();
    move |source| PgError::Io { what, source }
}

/// The OS user PostgreSQL runs as.
#[derive(Clone, Debug)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// What the server is doing, from SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServerState {
    in_recovery: bool,
    position: Option<u64>,
    timeline: Option<u64>,
    /// The WAL receiver's status on a standby ("streaming", ...); None when none runs.
    receiver: Option<String>,
    upstream: Option<String>,
}

/// The built-in PostgreSQL agent.
#[derive(Debug)]
pub struct PostgresAgent {
    settings: PostgresSettings,
    user: Option<OsUser>,
    /// The exec agent for fence, notify, snapshot and verify (and the shared stats).
    exec: Arc<HookRunner>,
    /// One lifecycle action at a time (start, stop, promote, demote, follow, rejoin, and the
    /// detach from a lost primary; the monitor takes it only to change
    /// `synchronous_standby_names`, and skips that when an action runs).
    lifecycle: tokio::sync::Mutex<()>,
    /// The `synchronous_standby_names` in quorate.conf now.
    sync_names: std::sync::Mutex<String>,
    /// The highest timeline the WAL receiver reported since the data dir last changed
    /// wholesale (rewind, clone): a standby whose receiver stopped (its primary lost, or
    /// detached) still holds that timeline's WAL, and its checkpoint names an older one.
    received_tli: std::sync::Mutex<Option<u64>>,
    /// The other members quorate last saw alive and healthy (`Agent::set_healthy_replicas`):
    /// in quorum mode a primary lists them as synchronous standbys even before they stream
    /// from it, so a new primary never acknowledges a commit no standby has.
    healthy_replicas: std::sync::Mutex<Vec<NodeId>>,
}

impl PostgresAgent {
    /// Resolves the OS user; an unknown user is an error naming the fix.
    pub fn new(settings: PostgresSettings, exec: Arc<HookRunner>) -> Result<Self, String> {
        let user = match &settings.os_user {
            None => None,
            Some(name) => match nix::unistd::User::from_name(name) {
                Ok(Some(u)) => Some(OsUser {
                    name: u.name,
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                    home: u.dir,
                }),
                Ok(None) => {
                    return Err(format!(
                        "[postgres] os_user {name:?} does not exist on this machine; install PostgreSQL (its package creates the postgres user) or name an existing user"
                    ))
                }
                Err(e) => return Err(format!("cannot look up [postgres] os_user {name:?}: {e}")),
            },
        };
        if user.as_ref().is_some_and(|u| u.uid == 0) {
            return Err(
                "[postgres] os_user is root, and PostgreSQL refuses to run as root; name the user PostgreSQL runs as (usually postgres)".into(),
            );
        }
        if user.is_none() && nix::unistd::geteuid().is_root() {
            return Err(
                "the daemon runs as root and [postgres] os_user is not set; PostgreSQL refuses to run as root: set os_user = \"postgres\"".into(),
            );
        }
        Ok(PostgresAgent {
            settings,
            user,
            exec,
            lifecycle: tokio::sync::Mutex::new(()),
            sync_names: std::sync::Mutex::new(String::new()),
            received_tli: std::sync::Mutex::new(None),
            healthy_replicas: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn s(&self) -> &PostgresSettings {
        &self.settings
    }

    fn data_dir(&self) -> &Path {
        &self.settings.data_dir
    }

    fn application_name(&self) -> String {
        format!("node{}", self.settings.node)
    }

    fn initialized(&self) -> bool {
        self.data_dir().join("PG_VERSION").exists()
    }

    // ---- processes ----------------------------------------------------------------------

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.s().bin_dir.join(tool));
        cmd.current_dir("/")
            .env("LC_ALL", "C")
            .env_remove("PGPASSWORD")
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(u) = &self.user {
            cmd.uid(u.uid)
                .gid(u.gid)
                .env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
        }
        cmd
    }

    /// Runs `tool` to its end; Err (with its output) unless it exits 0.
    async fn run(
        &self,
        tool: &str,
        args: &[OsString],
        env: &[(&str, &str)],
    ) -> Result<String, PgError> {
        self.run_with_input(tool, args, env, None).await
    }

    async fn run_with_input(
        &self,
        tool: &str,
        args: &[OsString],
        env: &[(&str, &str)],
        input: Option<&str>,
    ) -> Result<String, PgError> {
        let mut cmd = self.command(tool);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if input.is_some() {
            cmd.stdin(std::process::Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|source| PgError::Spawn {
            tool: tool.to_string(),
            source,
        })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(text.as_bytes())
                .await
                .map_err(io(format!("cannot write to {tool}'s input")))?;
            drop(stdin);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(io(format!("waiting for {tool}")))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        // The end says most (the error, pg_rewind's last progress line): keep it.
        if text.len() > MAX_TOOL_OUTPUT {
            let mut cut = text.len() - MAX_TOOL_OUTPUT;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text = format!("[...] {}", &text[cut..]);
        }
        if out.status.success() {
            Ok(text)
        } else {
            Err(PgError::Tool {
                tool: tool.to_string(),
                status: out.status.to_string(),
                output: text.trim().to_string(),
            })
        }
    }

    fn data_arg(&self) -> OsString {
        self.data_dir().as_os_str().to_owned()
    }

    async fn is_running(&self) -> bool {
        if !self.initialized() {
            return false;
        }
        // pg_ctl counts a killed postmaster that is not reaped yet as running.
        if self
            .postmaster_file()
            .is_some_and(|(pid, _)| !process_alive(pid))
        {
            return false;
        }
        self.run(
            "pg_ctl",
            &["status".into(), "-D".into(), self.data_arg()],
            &[],
        )
        .await
        .is_ok()
    }

    /// `pg_ctl <verb> -D <data_dir> [extra] -w -t <action_timeout>`.
    async fn pg_ctl(&self, verb: &str, extra: &[OsString]) -> Result<(), PgError> {
        let wait = self.s().action_timeout.as_secs().max(10).to_string();
        let mut args: Vec<OsString> = vec![verb.into(), "-D".into(), self.data_arg()];
        args.extend_from_slice(extra);
        args.extend(["-w".into(), "-t".into(), wait.into()]);
        self.run("pg_ctl", &args, &[]).await.map(drop)
    }

    /// `pg_ctl` as [`Self::pg_ctl`], done as soon as `arrived` says so: pg_ctl's own wait
    /// looks ten times a second, and each look it misses is time a switchover's writes
    /// wait. pg_ctl still decides failure (its exit status, its timeout); when `arrived`
    /// ends the wait first, pg_ctl is ended too (the postmaster runs in a session of its
    /// own: that does not touch it).
    async fn pg_ctl_until(
        &self,
        verb: &str,
        extra: &[OsString],
        arrived: impl Fn() -> bool,
    ) -> Result<(), PgError> {
        let run = self.pg_ctl(verb, extra);
        tokio::pin!(run);
        loop {
            tokio::select! {
                res = &mut run => return res,
                _ = tokio::time::sleep(ARRIVAL_POLL) => {
                    if arrived() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The pid and status line of `postmaster.pid`, when the file is there and whole.
    fn postmaster_file(&self) -> Option<(i32, String)> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text::postmaster_status(&text).map(|(pid, st)| (pid, st.to_string()))
    }

    async fn pg_start(&self) -> Result<(), PgError> {
        self.prepare_log_file()?;
        let log = self.s().log_file.as_os_str().to_owned();
        // A postmaster.pid left by a crash can say "ready": only a live postmaster that
        // is not the one that file named counts.
        let stale = self.postmaster_file().map(|(pid, _)| pid);
        let arrived = || {
            self.postmaster_file().is_some_and(|(pid, status)| {
                Some(pid) != stale && process_alive(pid) && text::accepts_connections(&status)
            })
        };
        self.pg_ctl_until("start", &["-l".into(), log], arrived)
            .await
            .map_err(|e| self.with_log_hint(e))
    }

    async fn pg_stop(&self) -> Result<(), PgError> {
        if !self.is_running().await {
            return Ok(());
        }
        // The postmaster removes its pid file last, as it exits: what `pg_ctl stop -w`
        // waits for.
        let pid_file = self.data_dir().join("postmaster.pid");
        self.pg_ctl_until("stop", &["-m".into(), "fast".into()], || !pid_file.exists())
            .await
    }

    fn with_log_hint(&self, e: PgError) -> PgError {
        match e {
            PgError::Tool {
                tool,
                status,
                output,
            } => PgError::Tool {
                tool,
                status,
                output: format!(
                    "{output} (the server log is {})",
                    self.s().log_file.display()
                ),
            },
            other => other,
        }
    }

    // ---- files ------------------------------------------------------------------------------

    fn chown(&self, path: &Path) -> Result<(), PgError> {
        if let Some(u) = &self.user {
            std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).map_err(io(format!(
                "cannot give {} to {}",
                path.display(),
                u.name
            )))?;
        }
        Ok(())
    }

    /// Writes `contents` to `path` (temp file, fsync, rename), owned by the OS user, 0600.
    fn write_file(&self, path: &Path, contents: &str) -> Result<(), PgError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("quorate-tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        f.write_all(contents.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        drop(f);
        self.chown(&tmp)?;
        std::fs::rename(&tmp, path).map_err(io(format!("cannot replace {}", path.display())))
    }

    /// The data dir exists, belongs to the OS user and is private (initdb and
    /// pg_basebackup want it so).
    fn prepare_data_dir(&self) -> Result<(), PgError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.data_dir();
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("cannot make {} private", dir.display())))?;
        self.chown(dir)
    }

    fn prepare_log_file(&self) -> Result<(), PgError> {
        let log = &self.s().log_file;
        if !log.exists() {
            std::fs::File::create(log).map_err(io(format!("cannot create {}", log.display())))?;
        }
        self.chown(log)
    }

    fn upstream_of(&self, primary: NodeId) -> Result<(String, u16), PgError> {
        let address = self.s().services.get(&primary).ok_or_else(|| {
            PgError::Refused(format!(
                "node {primary}'s PostgreSQL address is unknown: set service = \"HOST:PORT\" in its [[peer]] section"
            ))
        })?;
        text::split_host_port(address).ok_or_else(|| {
            PgError::Refused(format!(
                "node {primary}'s service address {address:?} is not HOST:PORT; fix its [[peer]] service"
            ))
        })
    }

    /// Rewrites `quorate.conf`: a standby of `primary` (Some) or a primary (None); and makes
    /// the data dir a standby (`standby.signal`) or not.
    fn write_role_files(
        &self,
        standby_of: Option<(&str, u16)>,
        standby: bool,
    ) -> Result<(), PgError> {
        let s = self.s();
        let upstream = standby_of.map(|(host, port)| Upstream {
            host,
            port,
            user: &s.replication_user,
            password: &s.replication_password,
        });
        let sync = self.current_sync_names();
        let conf = text::quorate_conf(
            &s.listen,
            s.port,
            &self.application_name(),
            upstream.as_ref(),
            &sync,
        );
        self.write_file(&self.data_dir().join("quorate.conf"), &conf)?;
        let signal = self.data_dir().join("standby.signal");
        if standby {
            if !signal.exists() {
                self.write_file(&signal, "")?;
            }
        } else if signal.exists() {
            std::fs::remove_file(&signal)
                .map_err(io(format!("cannot remove {}", signal.display())))?;
        }
        Ok(())
    }

    fn current_sync_names(&self) -> String {
        self.sync_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_sync_names(&self, names: String) {
        *self.sync_names.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }

    /// Every other voter's standby, by the application name it streams with.
    /// `node<ID>` of every healthy replica quorate sees (quorum mode only).
    fn healthy_replica_names(&self) -> Vec<String> {
        if self.s().synchronous != SyncMode::Quorum {
            return Vec::new();
        }
        self.healthy_replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|id| format!("node{id}"))
            .collect()
    }

    fn other_standbys(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .s()
            .services
            .keys()
            .filter(|id| **id != self.s().node)
            .map(|id| format!("node{id}"))
            .collect();
        v.sort();
        v
    }

    async fn streaming_standbys(client: &tokio_postgres::Client) -> Result<Vec<String>, PgError> {
        Ok(Self::query(
            client,
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect())
    }

    /// The `synchronous_standby_names` `[postgres] synchronous` wants now.
    async fn desired_sync_names(&self, client: &tokio_postgres::Client) -> Result<String, PgError> {
        let mut streaming = match self.s().synchronous {
            SyncMode::Quorum => Self::streaming_standbys(client).await?,
            SyncMode::Off | SyncMode::Strict => Vec::new(),
        };
        streaming.extend(self.healthy_replica_names());
        Ok(text::synchronous_standby_names(
            self.s().synchronous,
            &streaming,
            &self.other_standbys(),
        ))
    }

    /// On a primary: brings `synchronous_standby_names` to what the mode wants (quorum: the
    /// standbys streaming now). Skipped while a lifecycle action runs (the next monitor run
    /// does it). Returns the value in force.
    async fn keep_synchronous(&self, client: &tokio_postgres::Client) -> Result<String, PgError> {
        let desired = self.desired_sync_names(client).await?;
        if desired == self.current_sync_names() {
            return Ok(desired);
        }
        let Ok(_guard) = self.lifecycle.try_lock() else {
            return Ok(self.current_sync_names());
        };
        self.set_sync_names(desired.clone());
        self.write_role_files(None, false)?;
        Self::query(client, "SELECT pg_reload_conf()", &[]).await?;
        tracing::warn!(target: "quorate::agent", "synchronous_standby_names is now {desired:?}");
        Ok(desired)
    }

    /// postgresql.conf includes quorate.conf (once).
    fn ensure_include(&self) -> Result<(), PgError> {
        let path = self.data_dir().join("postgresql.conf");
        let text = std::fs::read_to_string(&path)
            .map_err(io(format!("cannot read {}", path.display())))?;
        if text.lines().any(|l| l.trim() == INCLUDE_LINE) {
            return Ok(());
        }
        self.write_file(&path, &format!("{text}\n{INCLUDE_LINE}\n"))
    }

    // ---- SQL --------------------------------------------------------------------------------

    async fn connect_to(&self, host: &str, port: u16) -> Result<tokio_postgres::Client, PgError> {
        let s = self.s();
        let target = format!("{host}:{port}");
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port)
            .user(&s.superuser)
            .password(&s.superuser_password)
            .dbname(&s.database)
            .application_name("quorate")
            .connect_timeout(QUERY_TIMEOUT);
        let connecting = cfg.connect(tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(QUERY_TIMEOUT, connecting)
            .await
            .map_err(|_| PgError::Sql {
                target: target.clone(),
                message: format!("no connection within {QUERY_TIMEOUT:?}"),
            })?
            .map_err(|e| PgError::Sql {
                target: target.clone(),
                message: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn connect_local(&self) -> Result<tokio_postgres::Client, PgError> {
        self.connect_to(&text::connect_host(&self.s().listen), self.s().port)
            .await
    }

    async fn query(
        client: &tokio_postgres::Client,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, PgError> {
        tokio::time::timeout(QUERY_TIMEOUT * 12, client.query(sql, params))
            .await
            .map_err(|_| PgError::Sql {
                target: "local".into(),
                message: format!("{sql:?} did not finish in time"),
            })?
            .map_err(|e| PgError::Sql {
                target: "local".into(),
                message: format!("{sql:?}: {e}"),
            })
    }

    /// Whether the server is a standby (in recovery); no answer counts as one.
    async fn in_recovery(client: &tokio_postgres::Client) -> Result<bool, PgError> {
        Ok(Self::query(client, "SELECT pg_is_in_recovery()", &[])
            .await?
            .first()
            .map(|r| r.get(0))
            .unwrap_or(true))
    }

    async fn server_state(&self) -> Result<ServerState, PgError> {
        let client = self.connect_local().await?;
        let rows = Self::query(&client, "SELECT pg_is_in_recovery()", &[]).await?;
        let in_recovery: bool = rows.first().map(|r| r.get(0)).unwrap_or(true);
        if !in_recovery {
            let rows = Self::query(
                &client,
                "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())",
                &[],
            )
            .await?;
            let row = rows.first();
            let lsn: Option<String> = row.map(|r| r.get(0));
            let walfile: Option<String> = row.map(|r| r.get(1));
            return Ok(ServerState {
                in_recovery,
                position: lsn.as_deref().and_then(text::parse_lsn),
                timeline: walfile.as_deref().and_then(text::timeline_of_walfile),
                receiver: None,
                upstream: None,
            });
        }
        let rows = Self::query(
            &client,
            "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
             (SELECT received_tli::bigint FROM pg_stat_wal_receiver LIMIT 1), \
             (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
             (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver LIMIT 1), \
             (SELECT timeline_id::bigint FROM pg_control_checkpoint()), \
             (SELECT min_recovery_end_timeline::bigint FROM pg_control_recovery())",
            &[],
        )
        .await?;
        let Some(row) = rows.first() else {
            return Err(PgError::Sql {
                target: "local".into(),
                message: "the standby status query returned no row".into(),
            });
        };
        let receive: Option<String> = row.get(0);
        let replay: Option<String> = row.get(1);
        let received_tli: Option<i64> = row.get(2);
        let status: Option<String> = row.get(3);
        let upstream: Option<String> = row.get(4);
        let checkpoint_tli: Option<i64> = row.get(5);
        let min_recovery_tli: Option<i64> = row.get(6);
        let receive = receive.as_deref().and_then(text::parse_lsn);
        let replay = replay.as_deref().and_then(text::parse_lsn);
        let tli = |t: Option<i64>| t.and_then(|t| u64::try_from(t).ok()).filter(|t| *t > 0);
        let remembered = {
            let mut last = self.received_tli.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = tli(received_tli) {
                *last = Some(last.map_or(t, |l| l.max(t)));
            }
            *last
        };
        // The timeline of the WAL this standby holds: the receiver's (now or last seen), the
        // one pg_rewind or replay recorded with the minimum recovery point, or the last
        // restartpoint's; the highest of them (a checkpoint alone names an old timeline
        // until the next restartpoint).
        let timeline = [
            remembered,
            tli(received_tli),
            tli(min_recovery_tli),
            tli(checkpoint_tli),
        ]
        .into_iter()
        .flatten()
        .max();
        Ok(ServerState {
            in_recovery,
            position: receive.max(replay),
            timeline,
            receiver: status,
            upstream,
        })
    }

    // ---- actions ----------------------------------------------------------------------------

    async fn start(&self) -> Result<String, PgError> {
        if !self.initialized() {
            return Ok("no data yet: the first primary runs initdb, every other node clones it at its follow".into());
        }
        if self.is_running().await {
            return Ok("PostgreSQL is already running".into());
        }
        if self.crashed_as_primary().await? {
            return Ok(CRASHED_PRIMARY_LEFT_STOPPED.into());
        }
        // Only promote makes a primary: start as a standby (its follow names the upstream).
        self.ensure_include()?;
        self.write_role_files(None, true)?;
        self.pg_start().await?;
        Ok("started as a standby".into())
    }

    async fn stop(&self) -> Result<String, PgError> {
        self.pg_stop().await?;
        Ok("stopped".into())
    }

    async fn promote(&self, ctx: &HookContext<'_>) -> Result<String, PgError> {
        let mut what = String::new();
        if !self.initialized() {
            if ctx.epoch.get() > 1 {
                return Err(PgError::Refused(format!(
                    "this node has no PostgreSQL data and the cluster had primaries before (epoch {}): it must not start an empty database; let it clone from a node with the data (it does at its follow), or restore one",
                    ctx.epoch
                )));
            }
            self.bootstrap().await?;
            what.push_str("initialized a new cluster (initdb); ");
        } else if !self.is_running().await {
            self.ensure_include()?;
            self.pg_start().await?;
        }
        let client = self.connect_local().await?;
        let in_recovery = Self::in_recovery(&client).await?;
        if in_recovery {
            // A planned move: everything the demoted primary had first (RPO 0).
            what.push_str(&self.final_sync(ctx).await?);
            // The synchronous standbys are in force from the first commit on: the healthy
            // replicas (quorum), or every other one (strict).
            let sync = text::synchronous_standby_names(
                self.s().synchronous,
                &self.healthy_replica_names(),
                &self.other_standbys(),
            );
            self.set_sync_names(sync);
            self.write_role_files(None, true)?;
            Self::query(&client, "SELECT pg_reload_conf()", &[]).await?;
            // Without pg_promote's own wait (it looks ten times a second): the loop below
            // looks every ARRIVAL_POLL.
            let rows = Self::query(&client, "SELECT pg_promote(false)", &[]).await?;
            let signalled: bool = rows.first().map(|r| r.get(0)).unwrap_or(false);
            if !signalled {
                return Err(PgError::Refused(format!(
                    "pg_promote() could not signal the postmaster to promote; see {}",
                    self.s().log_file.display()
                )));
            }
            what.push_str("promoted (pg_promote); ");
        } else {
            what.push_str("already a primary; ");
        }
        let started = Instant::now();
        loop {
            let rows = Self::query(&client, "SELECT pg_is_in_recovery()", &[]).await?;
            if !rows.first().map(|r| r.get::<_, bool>(0)).unwrap_or(true) {
                break;
            }
            if started.elapsed() > self.s().action_timeout {
                return Err(PgError::Refused(format!(
                    "the server is still in recovery {:?} after pg_promote() ([postgres] action_timeout); see {}",
                    self.s().action_timeout,
                    self.s().log_file.display()
                )));
            }
            tokio::time::sleep(ARRIVAL_POLL).await;
        }
        // The upstream of a former standby stays in quorate.conf; a primary has none. The
        // synchronous standbys (quorum): the healthy replicas, streaming yet or not (a commit
        // waits until one of them switched to this primary), and any other streaming one.
        let sync = self.desired_sync_names(&client).await?;
        self.set_sync_names(sync);
        self.write_role_files(None, false)?;
        Self::query(&client, "SELECT pg_reload_conf()", &[]).await?;
        // The fencing token, in the database itself: an application checks it in the same
        // transaction as its write (README: "Fencing in the database").
        self.ensure_cluster_objects(&client).await?;
        let epoch = i64::try_from(ctx.epoch.get()).unwrap_or(i64::MAX);
        let node = i64::try_from(self.s().node).unwrap_or(i64::MAX);
        // Committed locally: in strict mode a commit waits for a standby, and none may be
        // streaming from this new primary yet.
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL synchronous_commit = local; \
                 INSERT INTO quorate.fencing (id, epoch, node, at) VALUES (1, {epoch}, {node}, now()) \
                 ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, node = EXCLUDED.node, at = EXCLUDED.at; \
                 COMMIT"
            ))
            .await
            .map_err(|e| PgError::Sql {
                target: "local".into(),
                message: format!("writing the fencing epoch: {e}"),
            })?;
        what.push_str(&format!("fencing epoch {} written", ctx.epoch));
        Ok(what)
    }

    /// The replication role and `quorate.fencing`, created when missing: by the bootstrap,
    /// and again by every promotion, so a bootstrap cut short (its promotion cancelled when
    /// the lease lapsed, the daemon killed) is completed by the next one instead of leaving
    /// a primary that cannot record its epoch and standbys that cannot log in. Committed
    /// locally (in strict mode no standby may be streaming yet).
    async fn ensure_cluster_objects(&self, client: &tokio_postgres::Client) -> Result<(), PgError> {
        let s = self.s();
        let sql_err = |what: String| {
            move |e: tokio_postgres::Error| PgError::Sql {
                target: "local".into(),
                message: format!("{what}: {e}"),
            }
        };
        client
            .batch_execute("SET synchronous_commit = local")
            .await
            .map_err(sql_err("SET synchronous_commit".into()))?;
        let role_exists = !client
            .query(
                "SELECT 1 FROM pg_roles WHERE rolname = $1",
                &[&s.replication_user],
            )
            .await
            .map_err(sql_err("looking up the replication role".into()))?
            .is_empty();
        if !role_exists {
            let sql = format!(
                "CREATE ROLE {} WITH REPLICATION LOGIN PASSWORD {}",
                s.replication_user,
                text::sql_literal(&s.replication_password)
            );
            client.batch_execute(&sql).await.map_err(sql_err(format!(
                "creating the replication role {}",
                s.replication_user
            )))?;
        }
        // Created once: DDL that changes nothing still writes the catalogs, and a commit
        // must not wait here for standbys that have not switched to this primary yet.
        let fencing_exists = !client
            .query(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'quorate' AND c.relname = 'fencing'",
                &[],
            )
            .await
            .map_err(sql_err("looking up quorate.fencing".into()))?
            .is_empty();
        if !fencing_exists {
            client
                .batch_execute(
                    "CREATE SCHEMA IF NOT EXISTS quorate; \
                     CREATE TABLE IF NOT EXISTS quorate.fencing (\
                       id int PRIMARY KEY CHECK (id = 1), \
                       epoch bigint NOT NULL, \
                       node bigint NOT NULL, \
                       at timestamptz NOT NULL DEFAULT now()); \
                     GRANT USAGE ON SCHEMA quorate TO PUBLIC; \
                     GRANT SELECT ON quorate.fencing TO PUBLIC;",
                )
                .await
                .map_err(sql_err("creating quorate.fencing".into()))?;
        }
        // Apart from the statements above: in one simple query they share one implicit
        // transaction, and a RESET inside it would make its commit wait for a standby.
        client
            .batch_execute("RESET synchronous_commit")
            .await
            .map_err(sql_err("RESET synchronous_commit".into()))?;
        Ok(())
    }

    async fn bootstrap(&self) -> Result<(), PgError> {
        let s = self.s();
        self.prepare_data_dir()?;
        // initdb reads the superuser's password from a file the OS user can open (a pipe
        // from a root daemon is not one): a private sibling of the data dir, removed after.
        let mut pwfile = self.data_dir().as_os_str().to_owned();
        pwfile.push(".initdb-pw");
        let pwfile = PathBuf::from(pwfile);
        self.write_file(&pwfile, &format!("{}\n", s.superuser_password))?;
        let mut pwarg = OsString::from("--pwfile=");
        pwarg.push(&pwfile);
        let initdb = self
            .run(
                "initdb",
                &[
                    "-D".into(),
                    self.data_arg(),
                    "-U".into(),
                    s.superuser.clone().into(),
                    pwarg,
                    "--auth-local=peer".into(),
                    "--auth-host=scram-sha-256".into(),
                    "-E".into(),
                    "UTF8".into(),
                    "--locale=C".into(),
                ],
                &[],
            )
            .await;
        let _ = std::fs::remove_file(&pwfile);
        initdb?;
        self.write_file(&self.data_dir().join("pg_hba.conf"), &text::hba_conf())?;
        self.ensure_include()?;
        self.write_role_files(None, false)?;
        self.pg_start().await?;
        let client = self.connect_local().await?;
        self.ensure_cluster_objects(&client).await?;
        Ok(())
    }

    fn primary_of(&self, ctx: &HookContext<'_>) -> Option<NodeId> {
        ctx.primary.filter(|p| *p != self.s().node)
    }

    /// A running standby stops its WAL receiver (no `primary_conninfo`, reload): nothing
    /// reaches it from the lost primary any more, and it acknowledges nothing to it.
    async fn detach(&self) -> Result<Option<String>, PgError> {
        let _one_at_a_time = self.lifecycle.lock().await;
        if !self.initialized() || !self.is_running().await {
            return Ok(None);
        }
        if !self.server_state().await.is_ok_and(|st| st.in_recovery) {
            return Ok(None);
        }
        self.ensure_include()?;
        self.write_role_files(None, true)?;
        let client = self.connect_local().await?;
        Self::query(&client, "SELECT pg_reload_conf()", &[]).await?;
        Ok(Some(
            "stopped receiving WAL from the lost primary (primary_conninfo cleared)".into(),
        ))
    }

    async fn demote(&self, ctx: &HookContext<'_>) -> Result<String, PgError> {
        if !self.initialized() {
            return Ok("no data: nothing to demote".into());
        }
        let upstream = match self.primary_of(ctx) {
            Some(p) => self.upstream_of(p).ok(),
            None => None,
        };
        if !self.is_running().await && self.crashed_as_primary().await? {
            return Ok(CRASHED_PRIMARY_LEFT_STOPPED.into());
        }
        self.pg_stop().await?;
        self.ensure_include()?;
        self.write_role_files(upstream.as_ref().map(|(h, p)| (h.as_str(), *p)), true)?;
        self.pg_start().await?;
        Ok(match upstream {
            Some((h, p)) => format!("restarted as a standby of {h}:{p}"),
            None => "restarted as a standby (no primary to follow yet)".into(),
        })
    }

    async fn follow(&self, ctx: &HookContext<'_>) -> Result<String, PgError> {
        let Some(primary) = self.primary_of(ctx) else {
            return Err(PgError::Refused(
                "follow without a primary to follow".into(),
            ));
        };
        let (host, port) = self.upstream_of(primary)?;
        if !self.initialized() {
            self.base_backup(&host, port).await?;
            self.write_role_files(Some((&host, port)), true)?;
            self.pg_start().await?;
            self.wait_streaming().await?;
            return Ok(format!(
                "cloned from node {primary} ({host}:{port}) and streaming"
            ));
        }
        let running = self.is_running().await;
        let primary_here = running
            && self
                .server_state()
                .await
                .map(|st| !st.in_recovery)
                .unwrap_or(false);
        self.ensure_include()?;
        self.write_role_files(Some((&host, port)), true)?;
        let started = if primary_here {
            // A primary is never just stopped while another is reachable: restart it as a
            // standby of the new one.
            self.pg_stop().await?;
            self.pg_start().await
        } else if running {
            let client = self.connect_local().await?;
            Self::query(&client, "SELECT pg_reload_conf()", &[]).await?;
            Ok(())
        } else {
            self.pg_start().await
        };
        if let Err(e) = started {
            // A standby that cannot start ("requested timeline does not contain minimum
            // recovery point"): it replayed past the point where the primary's timeline
            // forked. Rewind (the source must answer, else the data is kept as it is).
            tracing::info!(target: "quorate::agent", "PostgreSQL did not start as a standby of node {primary} ({e}): resyncing");
            let how = self.resync(primary, &host, port).await?;
            return Ok(format!(
                "{how}; streaming from node {primary} ({host}:{port})"
            ));
        }
        match self.wait_streaming_from(&host, port).await {
            Streaming::Yes => {
                return Ok(format!("streaming from node {primary} ({host}:{port})"));
            }
            // Nothing to learn about this data from a primary that is gone (a failover is
            // coming): end the follow now, the next primary gets a new one.
            Streaming::UpstreamDown(why) => {
                return Err(PgError::Refused(format!(
                    "node {primary}'s PostgreSQL at {host}:{port} does not answer ({why}); this node stays a standby and follows the next primary"
                )))
            }
            Streaming::No(why) => {
                tracing::info!(target: "quorate::agent", "not streaming from node {primary} ({why}): the timelines may have diverged; resyncing");
            }
        }
        // Not streaming: the timelines probably diverged (a former primary). Rewind.
        let how = self.resync(primary, &host, port).await?;
        Ok(format!(
            "{how}; streaming from node {primary} ({host}:{port})"
        ))
    }

    async fn rejoin(&self, ctx: &HookContext<'_>) -> Result<String, PgError> {
        let Some(primary) = self.primary_of(ctx) else {
            return Err(PgError::Refused(
                "rejoin without a primary to rejoin".into(),
            ));
        };
        let (host, port) = self.upstream_of(primary)?;
        if !self.initialized() {
            return self.follow(ctx).await;
        }
        let how = self.resync(primary, &host, port).await?;
        Ok(format!(
            "{how}; streaming from node {primary} ({host}:{port})"
        ))
    }

    /// pg_rewind from the primary (after crash recovery when needed), then restart as its
    /// standby; when the rewind fails, re-clone or stop, as `[postgres] rejoin` says.
    async fn resync(&self, primary: NodeId, host: &str, port: u16) -> Result<String, PgError> {
        self.pg_stop().await?;
        self.crash_recover_if_needed().await?;
        let s = self.s();
        let source = format!(
            "host={} port={port} user={} dbname={} connect_timeout=5",
            text::conninfo_value(host),
            text::conninfo_value(&s.superuser),
            text::conninfo_value(&s.database)
        );
        // Right after a promotion the source's control file still names the old timeline
        // until its first checkpoint; pg_rewind reads it there and would find "no rewind
        // required" for a diverged target. A checkpoint on the source first.
        if let Ok(source) = self.connect_to(host, port).await {
            if let Err(e) = Self::query(&source, "CHECKPOINT", &[]).await {
                tracing::warn!(target: "quorate::agent", "CHECKPOINT on node {primary} before pg_rewind failed: {e}");
            }
        }
        self.forget_received_timeline();
        let data_dir_bytes = dir_bytes(self.data_dir());
        let wal_before = dir_bytes(&self.data_dir().join("pg_wal"));
        let rewind_started = Instant::now();
        let rewound = self
            .run(
                "pg_rewind",
                &[
                    "--target-pgdata".into(),
                    self.data_arg(),
                    "--source-server".into(),
                    source.into(),
                    "--progress".into(),
                ],
                &[("PGPASSWORD", &s.superuser_password)],
            )
            .await;
        let how = match rewound {
            Ok(out) if out.contains("no rewind required") => "no rewind was needed".to_string(),
            Ok(out) => {
                let elapsed = rewind_started.elapsed();
                let copied = text::rewind_copied_bytes(&out).unwrap_or(0);
                // pg_rewind copies the source's WAL segments whole (what is in pg_wal now):
                // the rest is the difference in relation data and small files.
                let wal_after = dir_bytes(&self.data_dir().join("pg_wal"));
                format!(
                    "rewound from node {primary}: pg_rewind copied {} of a {} data dir ({:.1} %) in {} ms; without WAL: {} of {} (WAL segments are copied whole)",
                    text::human_bytes(copied),
                    text::human_bytes(data_dir_bytes),
                    copied as f64 * 100.0 / data_dir_bytes.max(1) as f64,
                    elapsed.as_millis(),
                    text::human_bytes(copied.saturating_sub(wal_after)),
                    text::human_bytes(data_dir_bytes.saturating_sub(wal_before)),
                )
            }
            // A rewind that failed because the primary is not reachable says nothing about
            // this data: never set it aside for that (the next attempt retries).
            Err(e) if self.connect_to(host, port).await.is_err() => {
                return Err(PgError::Refused(format!(
                    "pg_rewind from node {primary} failed and its PostgreSQL at {host}:{port} does not answer; this node's data is kept as it is and the rejoin is retried: {e}"
                )))
            }
            Err(e) => match s.rejoin {
                RejoinMode::RewindOnly => {
                    return Err(PgError::Refused(format!(
                        "pg_rewind from node {primary} failed and [postgres] rejoin = \"rewind-only\": this node stays out until its data is resynced by hand (e.g. pg_basebackup into {}): {e}",
                        self.data_dir().display()
                    )))
                }
                RejoinMode::RewindOrReclone => {
                    self.set_aside_data_dir()?;
                    self.base_backup(host, port).await?;
                    format!("pg_rewind failed ({e}); re-cloned from node {primary} (pg_basebackup)")
                }
            },
        };
        // pg_rewind copied the source's configuration files: make this one a standby again.
        self.ensure_include()?;
        self.write_role_files(Some((host, port)), true)?;
        self.pg_start().await?;
        self.wait_streaming().await?;
        Ok(how)
    }

    /// pg_rewind needs a cleanly shut down target: a crashed one is recovered in
    /// single-user mode first (it replays its WAL and shuts down).
    async fn crash_recover_if_needed(&self) -> Result<(), PgError> {
        let out = self
            .run("pg_controldata", &["-D".into(), self.data_arg()], &[])
            .await?;
        match text::cluster_state(&out) {
            Some(state) if text::cleanly_shut_down(state) => Ok(()),
            _ => {
                // Single-user mode refuses standby mode: recover as a plain server (the
                // rewind's caller writes the standby files again).
                for signal in ["standby.signal", "recovery.signal"] {
                    let path = self.data_dir().join(signal);
                    if path.exists() {
                        std::fs::remove_file(&path)
                            .map_err(io(format!("cannot remove {}", path.display())))?;
                    }
                }
                self.run(
                    "postgres",
                    &[
                        "--single".into(),
                        "-D".into(),
                        self.data_arg(),
                        self.s().database.clone().into(),
                    ],
                    &[],
                )
                .await
                .map(drop)
            }
        }
    }

    /// Keeps the diverged data once, as `<data_dir>.diverged`, so a re-clone never destroys
    /// the only copy of what the old primary had.
    fn set_aside_data_dir(&self) -> Result<(), PgError> {
        let dir = self.data_dir();
        let mut aside = dir.as_os_str().to_owned();
        aside.push(".diverged");
        let aside = PathBuf::from(aside);
        if aside.exists() {
            std::fs::remove_dir_all(&aside)
                .map_err(io(format!("cannot remove {}", aside.display())))?;
        }
        std::fs::rename(dir, &aside).map_err(io(format!(
            "cannot move {} aside to {}",
            dir.display(),
            aside.display()
        )))?;
        Ok(())
    }

    /// The data dir is replaced wholesale (rewind, clone): what the receiver reported about
    /// the old data says nothing about the new.
    fn forget_received_timeline(&self) {
        *self.received_tli.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn base_backup(&self, host: &str, port: u16) -> Result<(), PgError> {
        self.forget_received_timeline();
        let s = self.s();
        self.prepare_data_dir()?;
        let empty = std::fs::read_dir(self.data_dir())
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(PgError::Refused(format!(
                "{} is not empty and holds no PostgreSQL cluster (no PG_VERSION): move its contents away so a base backup can go there",
                self.data_dir().display()
            )));
        }
        self.run(
            "pg_basebackup",
            &[
                "-D".into(),
                self.data_arg(),
                "-h".into(),
                host.into(),
                "-p".into(),
                port.to_string().into(),
                "-U".into(),
                s.replication_user.clone().into(),
                "-X".into(),
                "stream".into(),
                "-c".into(),
                "fast".into(),
                "--no-password".into(),
            ],
            &[("PGPASSWORD", &s.replication_password)],
        )
        .await
        .map(drop)
    }

    /// [`Self::wait_streaming`], but ends early when the upstream stops answering (two
    /// probes in a row, a second after the start).
    async fn wait_streaming_from(&self, host: &str, port: u16) -> Streaming {
        let started = Instant::now();
        let mut last = String::from("no status yet");
        let mut failed_probes = 0;
        while started.elapsed() < STREAM_WAIT {
            match self.server_state().await {
                Ok(st) if st.receiver.as_deref() == Some("streaming") => return Streaming::Yes,
                Ok(st) => last = format!("WAL receiver {:?}", st.receiver),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() >= Duration::from_secs(1) {
                let probe = tokio::time::timeout(
                    UPSTREAM_PROBE_TIMEOUT,
                    tokio::net::TcpStream::connect((host, port)),
                )
                .await;
                match probe {
                    Ok(Ok(_)) => failed_probes = 0,
                    Ok(Err(e)) => {
                        failed_probes += 1;
                        last = e.to_string();
                    }
                    Err(_) => {
                        failed_probes += 1;
                        last = format!("no TCP connection within {UPSTREAM_PROBE_TIMEOUT:?}");
                    }
                }
                if failed_probes >= 2 {
                    return Streaming::UpstreamDown(last);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Streaming::No(last)
    }

    /// Whether the data dir holds a primary that crashed (control file "in production",
    /// server not running): it may have WAL the new primary never received, so it must not
    /// start as a standby before the rejoin rewinds it (started so, it replays past the
    /// point where the new primary's timeline forked, and pg_rewind can no longer tell).
    async fn crashed_as_primary(&self) -> Result<bool, PgError> {
        let out = self
            .run("pg_controldata", &["-D".into(), self.data_arg()], &[])
            .await?;
        Ok(text::cluster_state(&out) == Some("in production"))
    }

    async fn wait_streaming(&self) -> Result<(), PgError> {
        let started = Instant::now();
        let mut last = String::from("no status yet");
        while started.elapsed() < STREAM_WAIT {
            match self.server_state().await {
                Ok(st) if st.receiver.as_deref() == Some("streaming") => return Ok(()),
                Ok(st) if !st.in_recovery => {
                    return Err(PgError::Refused(
                        "the server is a primary, not a standby".into(),
                    ))
                }
                Ok(st) => last = format!("WAL receiver {:?}", st.receiver),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(PgError::Refused(format!(
            "the standby did not stream within {STREAM_WAIT:?} ({last}); see {}",
            self.s().log_file.display()
        )))
    }

    async fn monitor(&self) -> Result<String, PgError> {
        if !self.initialized() {
            return Ok(
                r#"{"role":"stopped","healthy":true,"detail":"no data yet: the first primary runs initdb, replicas clone it"}"#
                    .to_string(),
            );
        }
        let st = self.server_state().await.map_err(|e| {
            PgError::Refused(format!(
                "PostgreSQL does not answer ({e}); see {}",
                self.s().log_file.display()
            ))
        })?;
        let role = if st.in_recovery { "replica" } else { "primary" };
        let detail = if st.in_recovery {
            match (&st.receiver, &st.upstream) {
                (Some(status), Some(up)) => format!("standby, WAL receiver {status} from {up}"),
                (Some(status), None) => format!("standby, WAL receiver {status}"),
                _ => "standby, not streaming".to_string(),
            }
        } else {
            let sync = match self.connect_local().await {
                Ok(client) => self.keep_synchronous(&client).await,
                Err(e) => Err(e),
            };
            match (self.s().synchronous, sync) {
                (SyncMode::Off, _) => "primary, asynchronous replication".to_string(),
                (_, Ok(names)) if names.is_empty() => format!(
                    "primary, ASYNCHRONOUS: no standby is streaming, commits are not replicated before they are acknowledged ([postgres] synchronous = \"{}\")",
                    if self.s().synchronous == SyncMode::Strict { "strict" } else { "quorum" }
                ),
                (_, Ok(names)) => format!("primary, synchronous: {names}"),
                (_, Err(e)) => format!("primary, synchronous standbys not updated: {e}"),
            }
        };
        let report = serde_json::json!({
            "role": role,
            "position": st.position,
            "timeline": st.timeline,
            "healthy": true,
            "detail": detail,
        });
        Ok(report.to_string())
    }

    async fn native(&self, action: HookKind, ctx: HookContext<'_>) -> Result<String, PgError> {
        if action == HookKind::Monitor {
            return self.monitor().await;
        }
        let _one_at_a_time = self.lifecycle.lock().await;
        match action {
            HookKind::Start => self.start().await,
            HookKind::Stop => self.stop().await,
            HookKind::Promote => self.promote(&ctx).await,
            HookKind::Demote => self.demote(&ctx).await,
            HookKind::Follow => self.follow(&ctx).await,
            HookKind::Rejoin => self.rejoin(&ctx).await,
            HookKind::Snapshot => self.snapshot(&ctx).await,
            HookKind::Verify => self.verify(&ctx).await,
            other => Err(PgError::Refused(format!(
                "the postgres agent does not run {other}"
            ))),
        }
    }

    fn is_native(action: HookKind) -> bool {
        matches!(
            action,
            HookKind::Start
                | HookKind::Stop
                | HookKind::Promote
                | HookKind::Demote
                | HookKind::Follow
                | HookKind::Rejoin
                | HookKind::Monitor
                | HookKind::Snapshot
                | HookKind::Verify
        )
    }

    async fn perform_native(
        &self,
        action: HookKind,
        ctx: HookContext<'_>,
        cancel: AgentFuture<'_, ()>,
    ) -> HookOutcome {
        let started = Instant::now();
        let limit = if action == HookKind::Monitor {
            QUERY_TIMEOUT * 2
        } else {
            self.s().action_timeout
        };
        let work = tokio::time::timeout(limit, self.native(action, ctx));
        let (ok, timed_out, cancelled, output) = tokio::select! {
            r = work => match r {
                Ok(Ok(out)) => (true, false, false, out),
                Ok(Err(e)) => (false, false, false, e.to_string()),
                Err(_) => (false, true, false, format!("did not finish within {limit:?}")),
            },
            () = cancel => (false, false, true, "cancelled".to_string()),
        };
        let outcome = HookOutcome {
            kind: action,
            ok,
            exit_code: (!timed_out && !cancelled).then_some(if ok { 0 } else { 1 }),
            signal: None,
            timed_out,
            cancelled,
            duration: started.elapsed(),
            output,
        };
        let level_ok = outcome.ok;
        if level_ok {
            tracing::info!(target: "quorate::agent", action = action.as_str(), duration_ms = outcome.duration.as_millis() as u64, "postgres {action}: {}", outcome.output);
        } else {
            tracing::warn!(target: "quorate::agent", action = action.as_str(), duration_ms = outcome.duration.as_millis() as u64, "postgres {action} failed: {}", outcome.output);
        }
        self.exec.stats().record(&outcome);
        outcome
    }
}

impl Agent for PostgresAgent {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn is_configured(&self, action: HookKind) -> bool {
        Self::is_native(action) || self.exec.is_configured(action)
    }

    fn set_healthy_replicas(&self, mut replicas: Vec<NodeId>) {
        replicas.sort_unstable();
        *self
            .healthy_replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = replicas;
    }

    fn detach_from_primary(&self) -> AgentFuture<'_, Result<Option<String>, String>> {
        Box::pin(async move { self.detach().await.map_err(|e| e.to_string()) })
    }

    fn perform<'a>(
        &'a self,
        action: HookKind,
        ctx: HookContext<'a>,
        cancel: AgentFuture<'a, ()>,
    ) -> AgentFuture<'a, HookOutcome> {
        if Self::is_native(action) {
            Box::pin(self.perform_native(action, ctx, cancel))
        } else {
            Box::pin(self.exec.run_cancellable(action, ctx, cancel))
        }
    }

    fn set_primary(&self, primary: Option<NodeId>) {
        self.exec.set_primary(primary);
    }

    fn stats(&self) -> &HookStats {
        self.exec.stats()
    }

    fn check(&self) -> Vec<String> {
        let mut problems = self.exec.check();
        for tool in [
            "initdb",
            "pg_ctl",
            "pg_basebackup",
            "pg_rewind",
            "pg_controldata",
            "postgres",
        ] {
            let path = self.s().bin_dir.join(tool);
            if !path.is_file() {
                problems.push(format!(
                    "{} is missing: install PostgreSQL 15 (the postgresql-15 package) or point [postgres] bin_dir at its binaries",
                    path.display()
                ));
            }
        }
        if let Some(parent) = self.data_dir().parent() {
            if !parent.exists() {
                problems.push(format!(
                    "{} (the parent of [postgres] data_dir) does not exist: create it",
                    parent.display()
                ));
            }
        }
        problems
    }
}
