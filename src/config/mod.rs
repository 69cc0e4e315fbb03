//! Per-node configuration: the TOML schema, defaults, timing profiles, loading and
//! validation (`quorate config check FILE` and the daemon's start).
//!
//! Loading is three steps, each reporting every problem it finds rather than the first:
//! 1. `schema::parse`: TOML syntax, unknown keys (`deny_unknown_fields` everywhere), wrong
//!    types, missing required keys;
//! 2. `validate::resolve`: addresses, durations and paths parsed with messages that name the
//!    key; relative paths resolved against the config file's folder; profile + overrides;
//! 3. `validate::check`: cross-field rules (membership, addresses, the timing safety rules).
//!
//! Problem keys are dotted paths as in the file; `[[peer]]` entries are numbered from 0 in
//! file order, so `peer[1].raft` is the second `[[peer]]` table's `raft`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::types::{NodeId, NodeRole};

mod duration;
pub mod reload;
mod schema;
pub mod secret;
mod validate;

#[cfg(test)]
mod tests;

pub use duration::{format_duration, parse_duration, MAX_DURATION_TEXT_LEN};

/// Largest config file we read. Real files are a few KiB; anything near this is not a config.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;
/// Most `[[peer]]` entries. Raft clusters have a handful of voters; learners add a few more.
pub const MAX_PEERS: usize = 64;
/// Most heartbeat links per peer (a node is dead only when every link is silent).
pub const MAX_HEARTBEAT_LINKS: usize = 4;
/// Cluster names are 1..=MAX_CLUSTER_NAME_LEN characters of `[a-z0-9-_]`.
pub const MAX_CLUSTER_NAME_LEN: usize = 64;
/// Longest duration any setting accepts: every timeout in quorate is seconds to minutes, so a
/// day already means a unit typo ("300m" for "300ms").
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound for the counters `failure_threshold`, `local_restarts` and `verify_checks`.
pub const MAX_COUNT_SETTING: u32 = 1_000;
/// Upper bound for `storage.max_value_bytes`: values travel in Raft log entries and
/// snapshots, which must stay small enough to replicate within an election timeout.
pub const MAX_VALUE_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
/// Default `priority` of a node and of a `[[peer]]` entry.
pub const DEFAULT_PRIORITY: u32 = 100;

pub use crate::rules::lease::{
    clock_drift_margin, CLOCK_DRIFT_MARGIN_MIN, CLOCK_DRIFT_MARGIN_PERCENT,
};

/// One thing wrong with a config file: where, what, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Dotted key as in the file, e.g. "peer[2].raft", "timing.lease"; "line N" for syntax.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; fix: {}", self.key, self.message, self.fix)
    }
}

/// A config file that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", render_problems(file, problems))]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

/// One line per problem: `<file>: <key>: <message>; fix: <fix>`.
fn render_problems(file: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {p}", file.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Timing profile: a consistent set of detector and Raft timings; `[timing]` overrides any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Ordinary LAN: ~300 ms to declare a node dead, 150–300 ms election timeouts.
    #[default]
    Lan,
    /// Quiet, fast network: ~120 ms to declare dead, 60–120 ms election timeouts.
    Fast,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Fast => "fast",
        }
    }

    /// The profile's timings before `[timing]` overrides. Both satisfy every timing rule in
    /// `validate` (a test checks it).
    pub fn timing(self) -> Timing {
        let ms = Duration::from_millis;
        match self {
            Profile::Lan => Timing {
                heartbeat_interval: ms(50),
                suspect_after: ms(150),
                dead_after: ms(300),
                raft_heartbeat: ms(50),
                election_timeout_min: ms(150),
                election_timeout_max: ms(300),
                lease: ms(100),
            },
            Profile::Fast => Timing {
                heartbeat_interval: ms(20),
                suspect_after: ms(60),
                dead_after: ms(120),
                raft_heartbeat: ms(20),
                election_timeout_min: ms(60),
                election_timeout_max: ms(120),
                lease: ms(40),
            },
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Failure-detector and Raft timings, resolved (profile + overrides) and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// UDP heartbeat period, on every link.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is `suspect`.
    pub suspect_after: Duration,
    /// Silence (on every link) after which a peer is `dead`.
    pub dead_after: Duration,
    /// Raft leader heartbeat period.
    pub raft_heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long a primary may act without hearing a quorum.
    pub lease: Duration,
}

impl Timing {
    /// See `clock_drift_margin`: validation guarantees `lease + this < election_timeout_min`.
    pub fn clock_drift_margin(&self) -> Duration {
        clock_drift_margin(self.election_timeout_min)
    }

    /// How long a primary whose lease lapsed may wait for quorum acknowledgements to return
    /// (in the same term) before it runs its demote hook: what is left of
    /// `election_timeout_min` after `lease` and the clock-drift margin, so the demote hook
    /// still starts before any other node can be elected (see `PolicyConfig::lapse_grace`).
    pub fn lapse_grace(&self) -> Duration {
        crate::rules::lapse_grace(self.lease, self.election_timeout_min)
    }

    /// The longest follower fsync a healthy primary survives without even a write pause:
    /// a follower answers the leader's heartbeats only after its pending log flush, so the
    /// primary's quorum clock can stand still for one Raft heartbeat interval plus that
    /// flush. Beyond `lease + lapse_grace − raft_heartbeat` the lapse costs a demote.
    pub fn lease_budget(&self) -> Duration {
        crate::rules::lease_budget(self.lease, self.election_timeout_min, self.raft_heartbeat)
    }
}

/// This node (`[node]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSection {
    pub id: NodeId,
    pub role: NodeRole,
    /// Higher = better candidate for primary.
    pub priority: u32,
}

/// Where this node binds (`[listen]`); may use an unspecified IP (0.0.0.0) with the port
/// its `[[peer]]` entry advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// Raft RPC, TCP.
    pub raft: SocketAddr,
    /// Heartbeats, UDP.
    pub heartbeat: SocketAddr,
    /// HTTP API.
    pub api: SocketAddr,
}

/// One cluster member (`[[peer]]`), this node included. Addresses are where others reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub role: NodeRole,
    pub priority: u32,
    pub raft: SocketAddr,
    /// One address per heartbeat link, 1..=MAX_HEARTBEAT_LINKS.
    pub heartbeat: Vec<SocketAddr>,
    pub api: SocketAddr,
    /// Where the member's protected service listens (`HOST:PORT`), handed to hooks as
    /// `QUORATE_PRIMARY_SERVICE` when it is the primary. `None`: not configured.
    pub service: Option<String>,
}

/// What the new primary does when the old one cannot be confirmed stopped (rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FencingMode {
    /// Do not promote until the fence hook succeeded.
    Required,
    /// Run the fence hook; promote even if it fails (logged and counted).
    #[default]
    BestEffort,
    /// Never run the fence hook.
    Off,
}

impl FencingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FencingMode::Required => "required",
            FencingMode::BestEffort => "best-effort",
            FencingMode::Off => "off",
        }
    }
}

/// Which agent performs the actions on the protected service (`[resource] agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// Operator executables, one per action (`[resource] promote = "/path"`, ...).
    #[default]
    Exec,
    /// The built-in PostgreSQL agent (`[postgres]`); executables configured for fence,
    /// notify, snapshot and verify still run.
    Postgres,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Exec => "exec",
            AgentKind::Postgres => "postgres",
        }
    }
}

/// What a former primary whose data diverged does to rejoin (`[postgres] rejoin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresRejoin {
    /// pg_rewind from the primary; when that is impossible, a new pg_basebackup (the old
    /// data dir is kept once, renamed `<data_dir>.diverged`).
    #[default]
    RewindOrReclone,
    /// pg_rewind only; when it fails the node stays out (not ready, never eligible) until
    /// the operator resyncs it.
    RewindOnly,
}

/// How commits wait for standbys (`[postgres] synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresSynchronous {
    /// Asynchronous replication.
    Off,
    /// `synchronous_standby_names = 'ANY 1 (...)'` over the standbys streaming now; with
    /// none streaming, asynchronous (status says so).
    #[default]
    Quorum,
    /// `ANY 1 (...)` over every other voter's standby: with none connected, commits wait.
    Strict,
}

/// The built-in PostgreSQL agent's settings (`[postgres]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// PGDATA. Created (owned by `os_user`, mode 0700) when missing: the first primary runs
    /// initdb there, every other node clones into it with pg_basebackup.
    pub data_dir: PathBuf,
    /// Where initdb, pg_ctl, pg_basebackup, pg_rewind and postgres are.
    pub bin_dir: PathBuf,
    pub port: u16,
    /// `listen_addresses`.
    pub listen: String,
    /// The OS user PostgreSQL runs as (it refuses root). None: the daemon's own user.
    pub os_user: Option<String>,
    pub superuser: String,
    pub superuser_password_file: PathBuf,
    pub replication_user: String,
    pub replication_password_file: PathBuf,
    pub rejoin: PostgresRejoin,
    /// The server log (`pg_ctl -l`).
    pub log_file: PathBuf,
    /// The database the agent connects to and keeps `quorate.fencing` in.
    pub database: String,
    /// Longest one action may take (initdb, a base backup, a rewind, a promotion).
    pub action_timeout: Duration,
    pub synchronous: PostgresSynchronous,
    /// The tables a failback's verify compares between home and the previous primary
    /// (`schema.table`; empty: every user table).
    pub verify_tables: Vec<String>,
}

/// Most tables `[postgres] verify_tables` may name.
pub const MAX_VERIFY_TABLES: usize = 256;

/// Hooks and the monitor loop (`[resource]`). Hook paths are absolute; `None` = no hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    pub promote: Option<PathBuf>,
    pub demote: Option<PathBuf>,
    pub monitor: Option<PathBuf>,
    pub fence: Option<PathBuf>,
    pub rejoin: Option<PathBuf>,
    pub follow: Option<PathBuf>,
    /// Run on every node for every role change anywhere in the cluster.
    pub notify: Option<PathBuf>,
    /// Starts the service as a replica when the daemon starts.
    pub start: Option<PathBuf>,
    /// Stops the service when the daemon stops gracefully.
    pub stop: Option<PathBuf>,
    /// Failback: protective snapshot on the current primary before the cut-over.
    pub snapshot: Option<PathBuf>,
    /// Failback: checks home's data once it is primary, before the failback can commit.
    pub verify: Option<PathBuf>,
    /// Longest any hook may run before it is killed and counted as failed.
    pub hook_timeout: Duration,
    pub monitor_interval: Duration,
    /// Consecutive monitor failures before the resource counts as failed (>= 1).
    pub failure_threshold: u32,
    /// Local restarts (demote+promote) before failing over.
    pub local_restarts: u32,
    /// Window in which `local_restarts` are counted.
    pub restart_window: Duration,
    pub fencing: FencingMode,
    /// A candidate further behind than this many log entries is not eligible for failover.
    pub max_lag_on_failover: u64,
    /// A candidate whose service position is further behind the most advanced one known
    /// (bytes, on the last primary's timeline) is not eligible for automatic failover.
    /// Applies only where monitors report positions.
    pub max_service_lag_bytes: u64,
    /// Which agent performs the actions.
    pub agent: AgentKind,
}

impl ResourceConfig {
    /// Whether something checks the service's health: a monitor executable, or a built-in
    /// agent (which always monitors).
    pub fn has_monitor(&self) -> bool {
        self.monitor.is_some() || self.agent != AgentKind::Exec
    }

    /// The configured hooks by name ("promote", ...), in a fixed order.
    pub fn hooks(&self) -> [(&'static str, Option<&Path>); 11] {
        [
            ("promote", self.promote.as_deref()),
            ("demote", self.demote.as_deref()),
            ("monitor", self.monitor.as_deref()),
            ("fence", self.fence.as_deref()),
            ("rejoin", self.rejoin.as_deref()),
            ("follow", self.follow.as_deref()),
            ("notify", self.notify.as_deref()),
            ("start", self.start.as_deref()),
            ("stop", self.stop.as_deref()),
            ("snapshot", self.snapshot.as_deref()),
            ("verify", self.verify.as_deref()),
        ]
    }
}

/// Whether the cluster returns to home by itself after a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailbackMode {
    /// Only on `quorate failback`.
    #[default]
    Manual,
    /// `delay` after home is back, healthy and in sync.
    Auto,
}

/// Whether a verified failback ends by itself or waits for `quorate failback commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailbackCommit {
    #[default]
    Auto,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailbackConfig {
    pub mode: FailbackMode,
    /// For `mode = auto`: how long home must be back and healthy before failback starts.
    pub delay: Duration,
    pub commit: FailbackCommit,
    /// Monitor passes needed in the Verifying phase (>= 1).
    pub verify_checks: u32,
    /// Verifying fails (and undo is offered) if the passes do not come within this.
    pub verify_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiConfig {
    /// File holding the admin token for mutating endpoints (absolute). `None`: the daemon
    /// uses `<data_dir>/api.token`, creating it (mode 0600) on first start.
    pub token_file: Option<PathBuf>,
    /// Require the token on reads too (status, KV reads, metrics...). `/health`, `/primary`
    /// and `/replica` stay open: load balancers probe them.
    pub protect_reads: bool,
    /// HTTPS on the API port (`tls_cert_file` + `tls_key_file`); `None`: plain HTTP.
    pub tls: Option<ApiTls>,
}

pub use crate::tls::ApiTls;

/// `[log]`: reloadable with SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing filter ("info", "debug", "info,openraft=debug"). `QUORATE_LOG`, when set in
    /// the daemon's environment, takes precedence at start and at every reload.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageConfig {
    /// Log entries between snapshots (>= 1).
    pub snapshot_every: u64,
    /// Log entries kept after a snapshot, for followers that lag a little.
    pub keep_logs: u64,
    /// Largest KV value accepted (1..=MAX_VALUE_BYTES_LIMIT).
    pub max_value_bytes: u64,
    /// Total bytes the KV may hold (1..=`kv::MAX_KV_TOTAL_BYTES`, the default).
    pub max_kv_bytes: u64,
}

/// Defaults for settings the file leaves out (timing defaults come from the profile).
pub mod defaults {
    use super::{FailbackCommit, FailbackMode, FencingMode};
    use std::time::Duration;

    /// `[log] level`: our info, openraft's warnings only (its info is per-RPC chatter).
    pub const LOG_LEVEL: &str = "info,openraft=warn";

    pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
    pub const MONITOR_INTERVAL: Duration = Duration::from_secs(1);
    pub const FAILURE_THRESHOLD: u32 = 3;
    pub const LOCAL_RESTARTS: u32 = 1;
    pub const RESTART_WINDOW: Duration = Duration::from_secs(5 * 60);
    pub const FENCING: FencingMode = FencingMode::BestEffort;
    pub const MAX_LAG_ON_FAILOVER: u64 = 1_000;
    /// 1 MiB, as Patroni's `maximum_lag_on_failover`: what operators already expect.
    pub const MAX_SERVICE_LAG_BYTES: u64 = 1024 * 1024;
    pub const FAILBACK_MODE: FailbackMode = FailbackMode::Manual;
    pub const FAILBACK_DELAY: Duration = Duration::from_secs(60);
    pub const FAILBACK_COMMIT: FailbackCommit = FailbackCommit::Auto;
    pub const VERIFY_CHECKS: u32 = 3;
    pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
    pub const SNAPSHOT_EVERY: u64 = 5_000;
    pub const KEEP_LOGS: u64 = 1_000;
    pub const MAX_VALUE_BYTES: u64 = 1024 * 1024;
    pub const MAX_KV_BYTES: u64 = crate::kv::MAX_KV_TOTAL_BYTES;
    pub const POSTGRES_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
    pub const POSTGRES_PORT: u16 = 5432;
    pub const POSTGRES_LISTEN: &str = "*";
    pub const POSTGRES_SUPERUSER: &str = "postgres";
    pub const POSTGRES_REPLICATION_USER: &str = "replicator";
    pub const POSTGRES_DATABASE: &str = "postgres";
    pub const POSTGRES_ACTION_TIMEOUT: Duration = Duration::from_secs(600);
    /// `[postgres] os_user` when the daemon runs as root (PostgreSQL refuses root).
    pub const POSTGRES_OS_USER_FOR_ROOT: &str = "postgres";
}

/// A loaded, resolved and validated node configuration. Build it with `Config::load` or
/// `Config::from_str_at`; every invariant checked there holds for the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cluster: String,
    pub node: NodeSection,
    pub listen: Listen,
    /// Every member, this node included, in file order.
    pub peers: Vec<Peer>,
    pub data_dir: PathBuf,
    /// The cluster secret (see `secret`); `None` = plaintext cluster traffic (development).
    pub secret_file: Option<PathBuf>,
    /// The secret being rotated out: still accepted while the new one is rolled out.
    pub previous_secret_file: Option<PathBuf>,
    /// The "home" the operator wants as primary; always a voter in `peers`.
    pub preferred_primary: Option<NodeId>,
    pub timing: Timing,
    pub profile: Profile,
    pub resource: ResourceConfig,
    pub failback: FailbackConfig,
    /// `[postgres]`: set exactly when `[resource] agent = "postgres"`.
    pub postgres: Option<PostgresConfig>,
    pub api: ApiConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    /// The file this came from (absolute).
    pub source: PathBuf,
    /// This node's own `[[peer]]` entry, kept apart so `self_peer` cannot fail.
    self_peer: Peer,
}

impl Config {
    /// Reads, parses, resolves and validates the file at `path`. The error lists every
    /// problem found (see the module doc for the order of the steps).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |key: &str, message: String, fix: &str| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem::new(key, message, fix)],
        };
        let metadata = std::fs::metadata(path).map_err(|e| {
            fail(
                "(file)",
                format!("cannot read the config file: {e}"),
                "check the path and that this user may read it",
            )
        })?;
        if !metadata.is_file() {
            return Err(fail(
                "(file)",
                "is not a regular file".into(),
                "pass the path of the node's .toml file",
            ));
        }
        if metadata.len() > MAX_CONFIG_BYTES {
            return Err(fail(
                "(file)",
                format!(
                    "is {} bytes, more than the {MAX_CONFIG_BYTES} a config file may have",
                    metadata.len()
                ),
                "pass the node's .toml config file, not another file",
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| {
            fail(
                "(file)",
                format!("cannot read the config file: {e}"),
                "check the path and that this user may read it",
            )
        })?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            // Grew between metadata and read.
            return Err(fail(
                "(file)",
                format!("is more than {MAX_CONFIG_BYTES} bytes"),
                "pass the node's .toml config file, not another file",
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            fail(
                "(file)",
                format!(
                    "is not valid UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to()
                ),
                "save the file as UTF-8 text",
            )
        })?;
        Config::from_str_at(&text, path)
    }

    /// Parses and validates `text` as if read from `path` (relative paths in it resolve
    /// against `path`'s folder; a relative `path` against the current directory).
    pub fn from_str_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let source = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let error = |problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(error(vec![Problem::new(
                "(file)",
                format!("is more than {MAX_CONFIG_BYTES} bytes"),
                "pass the node's .toml config file, not another file",
            )]));
        }
        let raw = schema::parse(text).map_err(error)?;
        validate::build(raw, source).map_err(error)
    }

    /// This node's own `[[peer]]` entry (validation guarantees there is exactly one).
    pub fn self_peer(&self) -> &Peer {
        &self.self_peer
    }

    /// Members with role `voter` (may become primary), in file order.
    pub fn voters(&self) -> impl Iterator<Item = &Peer> + '_ {
        self.peers.iter().filter(|p| p.role == NodeRole::Voter)
    }

    /// Members that vote in Raft (voters and witnesses), in file order.
    pub fn voting_members(&self) -> impl Iterator<Item = &Peer> + '_ {
        self.peers.iter().filter(|p| p.role.votes())
    }

    /// Votes needed for a majority of the voting members.
    pub fn quorum_size(&self) -> usize {
        self.voting_members().count() / 2 + 1
    }

    /// Exactly one member: a single-node development cluster (no failover possible).
    pub fn is_single_node_dev(&self) -> bool {
        self.peers.len() == 1
    }

    pub fn peer(&self, id: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Missing, non-regular or non-executable hook files. Not part of `load`: the files may
    /// be deployed after the config is checked; the daemon calls this at start.
    pub fn check_hooks(&self) -> Vec<Problem> {
        validate::check_hooks(self)
    }

    /// Secret problems (missing: a warning; unreadable, mode too open, bad format: the
    /// daemon would refuse to start). Not part of `load`, like `check_hooks`.
    pub fn check_secrets(&self) -> Vec<Problem> {
        secret::check(self)
    }

    /// One human line describing the effective settings (for `quorate config check`).
    pub fn summary(&self) -> String {
        let t = &self.timing;
        let f = |d: Duration| format_duration(d);
        let mode = if self.is_single_node_dev() {
            ", single-node dev mode: no failover"
        } else {
            ""
        };
        format!(
            "cluster {}, node {} ({}, priority {}), {} members, {} voting, quorum {}{mode}; \
             profile {}: heartbeat {}, suspect {}, dead {}, raft heartbeat {}, \
             election timeout {}..{}, lease {} (+{} clock-drift margin)",
            self.cluster,
            self.node.id,
            self.node.role,
            self.node.priority,
            self.peers.len(),
            self.voting_members().count(),
            self.quorum_size(),
            self.profile,
            f(t.heartbeat_interval),
            f(t.suspect_after),
            f(t.dead_after),
            f(t.raft_heartbeat),
            f(t.election_timeout_min),
            f(t.election_timeout_max),
            f(t.lease),
            f(t.clock_drift_margin()),
        )
    }
}
