//! One quorate node: wires the data dir, Raft (storage + transport), heartbeats and the API.
//! Decisions live in `policy/`; this file only assembles the parts and runs them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ServerState};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::consensus::log_store::LogStore;
use crate::consensus::network::{self, NetParams, NetStats, NetworkFactory};
use crate::consensus::state_machine::StateMachineStore;
use crate::consensus::Raft;
use crate::datadir::{DataDir, DataDirError};
use crate::executor::{Executor, ExecutorStatus, OpRequest, OPERATOR_QUEUE};
use crate::heartbeat::{self, HeartbeatHandle, HeartbeatParams, LocalStatus};
use crate::policy::{Policy, PolicyConfig};
use crate::resource::{
    HookKind, HookRunner, HookSettings, MonitorRole, MonitorTuner, MonitorTuning,
};
use crate::types::{Epoch, NodeId, NodeRole};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("heartbeat incarnation: {0}")]
    Incarnation(#[from] crate::datadir::IncarnationError),
    #[error("cannot open the raft log: {0}")]
    Log(std::io::Error),
    #[error("{0}")]
    Snapshot(#[from] crate::consensus::snapshot::SnapshotError),
    #[error("invalid raft timing: {0}; fix the [timing] section (see `quorate config check`)")]
    RaftConfig(String),
    #[error("raft failed to start: {0}")]
    Raft(String),
    #[error("cannot listen for raft on {addr}: {source}; another process may hold the port — stop it or change listen.raft")]
    RaftListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for the API on {addr}: {source}; another process may hold the port — stop it or change listen.api")]
    ApiListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("heartbeat: {0}")]
    Heartbeat(String),
    #[error("hooks: {0}; fix the [resource] section")]
    Hooks(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error(transparent)]
    Secret(#[from] crate::config::secret::SecretError),
    #[error(transparent)]
    ApiToken(#[from] crate::api::auth::TokenError),
    #[error("API TLS: {0}; fix the [api] section (see `quorate config check`)")]
    ApiTls(#[from] crate::api::tls::TlsFileError),
}

/// Everything the API and the control loops share.
pub struct Node {
    pub config: Arc<Config>,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub log: LogStore,
    pub heartbeat: HeartbeatHandle,
    pub net_stats: Arc<NetStats>,
    pub started: Instant,
    /// Set to false when a control loop dies; /health then answers 503.
    pub loops_alive: watch::Sender<bool>,
    pub hooks: Arc<HookRunner>,
    /// What the executor last decided (role, acting primary, notes).
    pub executor: watch::Receiver<ExecutorStatus>,
    /// Operator requests (maintenance, drain, switchover, failback) for the executor.
    pub ops: tokio::sync::mpsc::Sender<OpRequest>,
    /// Set to true to ask for a graceful shutdown (hand over, demote, then exit).
    pub shutdown: watch::Sender<bool>,
    /// The API's admin token and request bounds (with their rejection counters).
    pub api_guard: Arc<crate::api::auth::ApiGuard>,
    /// How this node reaches the leader's API when it forwards a request (http or https).
    pub api_forward: crate::api::tls::Forwarder,
    /// Set while the node re-seeds from its peers after `quorate recover --reseed`.
    pub reseeding: crate::recover::ReseedFlag,
    /// Retunes the monitor loop on reload.
    pub monitor_tuner: MonitorTuner,
    /// The outcome of the last SIGHUP reload, for status (None: never reloaded).
    pub last_reload: std::sync::Mutex<Option<String>>,
    _data_dir: DataDir,
}

/// A running node: its shared state and its background tasks.
pub struct RunningNode {
    pub node: Arc<Node>,
    tasks: Vec<JoinHandle<()>>,
    executor: Option<JoinHandle<()>>,
}

/// Maps our config onto the policy's settings (with the policy's own named defaults where
/// the config has no key).
pub fn policy_config(config: &Config) -> PolicyConfig {
    use crate::config::{FailbackCommit as CC, FailbackMode as CM, FencingMode as CF};
    use crate::policy::{FailbackCommit, FailbackMode, FencingMode};
    let r = &config.resource;
    let defaults = PolicyConfig::default();
    let transfer_timeout = (config.timing.election_timeout_max * 2).max(Duration::from_millis(500));
    PolicyConfig {
        lease: config.timing.lease,
        max_lag_on_failover: r.max_lag_on_failover,
        fencing: match r.fencing {
            CF::Required => FencingMode::Required,
            CF::BestEffort => FencingMode::BestEffort,
            CF::Off => FencingMode::Off,
        },
        local_restarts: r.local_restarts,
        restart_window: r.restart_window,
        failure_threshold: r.failure_threshold,
        transfer_timeout,
        preferred_primary: config.preferred_primary,
        verify_checks: config.failback.verify_checks,
        monitor_configured: r.monitor.is_some(),
        verify_timeout: config.failback.verify_timeout,
        failback: match config.failback.mode {
            CM::Manual => FailbackMode::Manual,
            CM::Auto => FailbackMode::Auto {
                delay: config.failback.delay,
            },
        },
        failback_commit: match config.failback.commit {
            CC::Auto => FailbackCommit::Auto,
            CC::Manual => FailbackCommit::Manual,
        },
        shutdown_timeout: r.hook_timeout + transfer_timeout + Duration::from_secs(2),
        lapse_grace: config.timing.lapse_grace(),
        ..defaults
    }
}

fn hook_settings(config: &Config) -> HookSettings {
    let mut paths = HashMap::new();
    for (name, path) in config.resource.hooks() {
        if let (Some(kind), Some(path)) = (HookKind::ALL.iter().find(|k| k.as_str() == name), path)
        {
            paths.insert(*kind, path.to_path_buf());
        }
    }
    HookSettings {
        cluster: config.cluster.clone(),
        node: config.node.id,
        paths,
        timeout: config.resource.hook_timeout,
        max_output_bytes: crate::resource::DEFAULT_MAX_OUTPUT_BYTES,
    }
}

fn hook_runner(config: &Config) -> Result<HookRunner, NodeError> {
    HookRunner::new(hook_settings(config)).map_err(|e| NodeError::Hooks(e.to_string()))
}

fn monitor_tuning(config: &Config) -> MonitorTuning {
    MonitorTuning {
        interval: config.resource.monitor_interval,
        failure_threshold: config.resource.failure_threshold,
    }
}

/// Entries per append RPC, so a batch of the largest allowed values still fits in one frame
/// (half of `MAX_FRAME_BYTES`, leaving room for encoding overhead). openraft's default (300)
/// times 1 MiB values would build 300 MiB frames that the receiver must refuse: replication
/// would then retry the same batch forever.
pub fn max_payload_entries(max_value_bytes: u64) -> u64 {
    /// Per-entry allowance for the key, the command and the log id.
    const ENTRY_OVERHEAD_BYTES: u64 = 4096;
    /// openraft's default batch size, kept for small values.
    const DEFAULT_BATCH: u64 = 300;
    let budget = (crate::consensus::codec::MAX_FRAME_BYTES as u64) / 2;
    (budget / (max_value_bytes + ENTRY_OVERHEAD_BYTES)).clamp(1, DEFAULT_BATCH)
}

/// Builds openraft's config from ours. Witnesses never campaign (`enable_elect = false`);
/// pre-vote is on so a node that was cut off does not disrupt the cluster when it returns.
pub fn raft_config(config: &Config) -> Result<openraft::Config, NodeError> {
    let t = &config.timing;
    let raft = openraft::Config {
        cluster_name: config.cluster.clone(),
        heartbeat_interval: t.raft_heartbeat.as_millis() as u64,
        election_timeout_min: t.election_timeout_min.as_millis() as u64,
        election_timeout_max: t.election_timeout_max.as_millis() as u64,
        enable_elect: config.node.role == NodeRole::Voter,
        enable_pre_vote: Some(true),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.storage.snapshot_every),
        max_in_snapshot_log_to_keep: config.storage.keep_logs,
        max_payload_entries: max_payload_entries(config.storage.max_value_bytes),
        install_snapshot_timeout: 30_000,
        ..Default::default()
    };
    let mut raft = raft
        .validate()
        .map_err(|e| NodeError::RaftConfig(e.to_string()))?;
    if config.node.role == NodeRole::Witness {
        raft.removed_leader_step_down = openraft::StepDownPolicy::Never;
    }
    Ok(raft)
}

impl Node {
    pub fn id(&self) -> NodeId {
        self.config.node.id
    }

    /// A copy of the current Raft metrics. Copy first, then use: holding the watch borrow
    /// across an await blocks RaftCore from publishing and can deadlock it.
    pub fn metrics(&self) -> openraft::RaftMetrics<crate::consensus::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Applies the hook settings of a reloaded config (already planned with
    /// `config::reload::plan`): hook paths, hook timeout, monitor interval and threshold. Every
    /// configured hook must be runnable, or nothing is applied.
    pub fn reload_hooks(&self, config: &Config) -> Result<(), String> {
        let settings = hook_settings(config);
        let problems = settings.check();
        if !problems.is_empty() {
            return Err(format!(
                "reload refused, nothing applied: {}",
                problems.join("; ")
            ));
        }
        let tuning = monitor_tuning(config);
        tuning
            .check()
            .map_err(|e| format!("reload refused, nothing applied: {e}"))?;
        self.hooks
            .replace_settings(settings)
            .map_err(|e| format!("reload refused, nothing applied: {e}"))?;
        self.monitor_tuner
            .retune(tuning)
            .map_err(|e| format!("hooks reloaded, but the monitor was not retuned: {e}"))?;
        Ok(())
    }

    /// Records the outcome of a reload for `quorate status`.
    pub fn record_reload(&self, outcome: String) {
        *self
            .last_reload
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(outcome);
    }

    /// Why Raft stopped on this node, with what to do about it; None while it runs (or after a
    /// requested shutdown). Raft stops for good when storage fails (a full disk, an IO error on
    /// append or fsync): the node can no longer persist, so it cannot act as primary, vote or
    /// replicate until the daemon is restarted on a healthy disk.
    pub fn raft_failure(&self) -> Option<String> {
        let fatal = match &self.raft.metrics().borrow_watched().running_state {
            Ok(()) => return None,
            Err(openraft::errors::Fatal::Stopped) => return None,
            Err(e) => e.to_string(),
        };
        Some(describe_raft_failure(&fatal, &self.config.data_dir))
    }
}

/// How long ago a quorum last acknowledged this node as leader (None: not a leader, or never
/// acknowledged). openraft records an acknowledgement only when a follower answers, so a
/// leader that is the only voter would never be acknowledged; it is its own quorum, so its
/// acknowledgement is always fresh.
pub fn quorum_acked_age(
    m: &openraft::RaftMetrics<crate::consensus::TypeConfig>,
) -> Option<Duration> {
    if m.state != ServerState::Leader {
        return None;
    }
    let membership = m.membership_config.membership();
    let mut voters = membership.voter_ids();
    if voters.next() == Some(m.id) && voters.next().is_none() {
        return Some(Duration::ZERO);
    }
    m.last_quorum_acked
        .as_ref()
        .map(|t| openraft::Instant::elapsed(&**t))
}

/// Turns openraft's fatal error into an operator message: what happened and the next step.
pub fn describe_raft_failure(fatal: &str, data_dir: &std::path::Path) -> String {
    let dir = data_dir.display();
    let lower = fatal.to_ascii_lowercase();
    let next = if lower.contains("no space left") || lower.contains("quota") {
        format!(
            "the disk holding {dir} is full: free space there (`df -h {dir}`), then restart the \
             daemon (`systemctl restart quorate`); the node rejoins as a replica and catches up"
        )
    } else if lower.contains("corrupt") || lower.contains("decode") || lower.contains("checksum") {
        format!(
            "the Raft data in {dir} is damaged: stop the daemon and run \
             `quorate recover --config FILE` to check it and re-seed this node from its peers"
        )
    } else {
        format!(
            "check the disk holding {dir} (kernel log, `df -h {dir}`), then restart the daemon \
             (`systemctl restart quorate`); if it fails again at start, run \
             `quorate recover --config FILE`"
        )
    };
    format!(
        "raft stopped: {fatal}. This node cannot persist its log, so it no longer acts as primary, \
         votes or replicates. Next: {next}"
    )
}

impl RunningNode {
    /// Starts every part of the node. Returns once all listeners are bound.
    pub async fn start(config: Config) -> Result<RunningNode, NodeError> {
        let config = Arc::new(config);
        let keyring = crate::config::secret::Keyring::load(&config)?;
        if keyring.is_none() {
            tracing::warn!(
                "NO CLUSTER SECRET: heartbeats and Raft traffic are neither authenticated nor encrypted; \
                 anyone who can reach this node's ports can forge heartbeats and join Raft. \
                 Fine for single-node development only: run `quorate secret generate > FILE`, \
                 `chmod 600 FILE`, copy it to every node and set secret_file"
            );
        }
        let data_dir = DataDir::open_locked(&config.data_dir)?;
        // Persisted before anything is sent: see `DataDir::next_incarnation`.
        let incarnation = data_dir.next_incarnation(crate::datadir::wall_clock_ns())?;
        let (api_token, created) = crate::api::auth::ApiToken::load_or_create(&config)?;
        if created {
            tracing::info!(
                token_file = %api_token.source.display(),
                "created the API admin token (mutating API requests need it: quorate --token-file FILE ...)"
            );
        }
        let api_guard = Arc::new(crate::api::auth::ApiGuard::new(&config, api_token));
        // The TLS files are read again here (config load checked them): a file replaced by
        // an unusable one since then stops the start with the file's name.
        let api_tls = config
            .api
            .tls
            .as_ref()
            .map(crate::api::tls::server_config)
            .transpose()?;
        let api_forward = crate::api::tls::Forwarder::new(&config)?;
        let log = LogStore::open(&data_dir.raft_log_dir()).map_err(NodeError::Log)?;
        let sm = StateMachineStore::open(data_dir.snapshot_dir())?;
        let reseeding = crate::recover::ReseedFlag::from_data_dir(&data_dir.path);

        let peers: HashMap<NodeId, std::net::SocketAddr> =
            config.peers.iter().map(|p| (p.id, p.raft)).collect();
        let net_stats = Arc::new(NetStats::default());
        let params = NetParams {
            cluster_id: network::cluster_id(&config.cluster),
            local: config.node.id,
            peers: Arc::new(peers),
            stats: net_stats.clone(),
            keys: keyring.as_ref().map(|k| {
                let (current, previous) = k.raft_keys();
                Arc::new(crate::consensus::secure::RaftKeys::new(
                    *current,
                    previous.copied(),
                ))
            }),
            reseeding: reseeding.clone(),
        };

        let raft_listener = TcpListener::bind(config.listen.raft)
            .await
            .map_err(|source| NodeError::RaftListen {
                addr: config.listen.raft,
                source,
            })?;
        let api_listener = TcpListener::bind(config.listen.api)
            .await
            .map_err(|source| NodeError::ApiListen {
                addr: config.listen.api,
                source,
            })?;

        let mut openraft_config = raft_config(&config)?;
        if reseeding.active() {
            // Campaigning is switched back on once the node has caught up (recover.rs).
            openraft_config.enable_elect = false;
        }
        let raft = Raft::new(
            config.node.id,
            Arc::new(openraft_config),
            NetworkFactory::new(params.clone()),
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

        let (status_tx, status_rx) = watch::channel(LocalStatus::default());
        let hb_params = HeartbeatParams {
            cluster_name: config.cluster.clone(),
            local: config.node.id,
            member_role: config.node.role,
            bind: config.listen.heartbeat,
            peers: config
                .peers
                .iter()
                .filter(|p| p.id != config.node.id)
                .map(|p| (p.id, p.heartbeat.clone()))
                .collect(),
            detector: heartbeat::DetectorConfig {
                heartbeat_interval: config.timing.heartbeat_interval,
                suspect_after: config.timing.suspect_after,
                dead_after: config.timing.dead_after,
            },
            auth: keyring.as_ref().map(|k| {
                let (current, previous) = k.heartbeat_keys();
                heartbeat::HeartbeatAuth {
                    current: *current,
                    previous: previous.copied(),
                }
            }),
            incarnation,
        };
        let heartbeat = heartbeat::HeartbeatService::start(hb_params, status_rx)
            .await
            .map_err(|e| NodeError::Heartbeat(e.to_string()))?;

        let hooks = Arc::new(hook_runner(&config)?);
        for problem in hooks.check() {
            tracing::warn!("{problem}");
        }
        let (monitor_role_tx, monitor_role_rx) = watch::channel(match config.node.role {
            NodeRole::Voter => MonitorRole::Replica,
            NodeRole::Witness => MonitorRole::Witness,
            NodeRole::Learner => MonitorRole::Learner,
        });
        let (monitor_epoch_tx, monitor_epoch_rx) = watch::channel::<Epoch>(0);
        let monitor = crate::resource::spawn_monitor(
            hooks.clone(),
            config.resource.monitor_interval,
            config.resource.failure_threshold,
            monitor_role_rx,
            monitor_epoch_rx,
        )
        .map_err(|e| NodeError::Hooks(e.to_string()))?;
        let pcfg = policy_config(&config);
        pcfg.validate()
            .map_err(|e| NodeError::Policy(e.to_string()))?;
        let policy = Policy::new(config.node.id, pcfg);
        let (executor_tx, executor_rx) = watch::channel(ExecutorStatus::default());
        let (ops_tx, ops_rx) = tokio::sync::mpsc::channel(OPERATOR_QUEUE);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let (loops_alive, _) = watch::channel(true);
        let node = Arc::new(Node {
            config: config.clone(),
            raft: raft.clone(),
            sm,
            log,
            heartbeat,
            net_stats,
            started: Instant::now(),
            loops_alive,
            hooks,
            executor: executor_rx,
            ops: ops_tx,
            shutdown: shutdown_tx,
            api_guard,
            api_forward,
            reseeding: reseeding.clone(),
            monitor_tuner: monitor.tuner(),
            last_reload: std::sync::Mutex::new(None),
            _data_dir: data_dir,
        });
        let notifier = Arc::new(crate::systemd::Notifier::from_env());
        let executor = Executor {
            node: node.clone(),
            policy,
            monitor,
            monitor_role: monitor_role_tx,
            monitor_epoch: monitor_epoch_tx,
            status_tx: executor_tx,
            local_status: status_tx,
            ops_rx,
            notifier: notifier.clone(),
            promote_cancel: None,
        };
        let exec_node = node.clone();
        let executor_task = tokio::spawn(async move {
            // Held by the loop: /health goes red the moment it ends, panics or is cancelled.
            let _alive = crate::failstop::AliveGuard::new(&exec_node.loops_alive);
            executor.run(shutdown_rx).await;
            tracing::info!("executor stopped");
        });

        let mut tasks = vec![
            tokio::spawn(network::serve(raft_listener, raft.clone(), params)),
            tokio::spawn(bootstrap(node.clone())),
            tokio::spawn(crate::recover::watch_reseed(
                node.clone(),
                reseeding.clone(),
            )),
            tokio::spawn(propose_kv_limits(node.clone())),
        ];
        if config.node.role == NodeRole::Voter {
            tasks.push(tokio::spawn(early_elections(node.clone())));
        }
        let app = crate::api::router(node.clone());
        let api_scheme = node.api_forward.scheme();
        match api_tls {
            None => tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(api_listener, app).await {
                    tracing::error!("API server stopped: {e}");
                }
            })),
            Some(tls) => {
                let listener =
                    crate::api::tls::TlsListener::new(api_listener, tls, node.api_guard.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::error!("API server stopped: {e}");
                    }
                }));
            }
        }
        tracing::info!(
            raft = %config.listen.raft,
            heartbeat = %config.listen.heartbeat,
            api = %config.listen.api,
            api_scheme,
            "node started"
        );
        crate::fault::log_if_armed();
        notifier.ready();
        Ok(RunningNode {
            node,
            tasks,
            executor: Some(executor_task),
        })
    }

    /// Resolves when the executor's task ends: `Ok` after a shutdown request, else why it
    /// died (the daemon must then exit: nobody enforces the lease any more). Pending forever
    /// once it has resolved.
    pub async fn executor_ended(&mut self) -> Result<(), crate::failstop::ExecutorDied> {
        let Some(exec) = self.executor.as_mut() else {
            return std::future::pending().await;
        };
        let res = exec.await;
        self.executor = None;
        if *self.node.shutdown.borrow() && res.is_ok() {
            return Ok(());
        }
        Err(crate::failstop::ExecutorDied::from_join(res))
    }

    /// Graceful stop: asks the executor to hand over (a primary switches over to the best
    /// candidate, or demotes) and waits for it, bounded by the policy's shutdown timeout plus
    /// a margin; then stops Raft and every task.
    pub async fn shutdown(mut self) {
        crate::systemd::Notifier::from_env().stopping();
        self.node.shutdown.send_replace(true);
        if let Some(exec) = self.executor.take() {
            let limit = policy_config(&self.node.config).shutdown_timeout + Duration::from_secs(2);
            if tokio::time::timeout(limit, exec).await.is_err() {
                tracing::warn!(
                    "graceful hand-over did not finish within {limit:?}; stopping anyway"
                );
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        self.node.heartbeat.shutdown();
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

/// First start: the lowest-id voter initializes the cluster with every voting member; the
/// others wait to be contacted. Restarts skip this (openraft remembers it is initialized), so
/// any restart order is safe. The leader also adds configured learners.
async fn bootstrap(node: Arc<Node>) {
    let cfg = node.config.clone();
    let lowest_voter = cfg
        .peers
        .iter()
        .filter(|p| p.role == NodeRole::Voter)
        .map(|p| p.id)
        .min();
    let voting: BTreeMap<NodeId, BasicNode> = cfg
        .peers
        .iter()
        .filter(|p| p.role.votes())
        .map(|p| (p.id, BasicNode::new(p.raft.to_string())))
        .collect();
    match node.raft.is_initialized().await {
        Ok(true) => {}
        Ok(false) if node.reseeding.active() => {
            tracing::info!(
                "re-seeding: waiting for the leader to send the log (no initialization)"
            );
        }
        Ok(false) if lowest_voter == Some(cfg.node.id) => {
            match node.raft.initialize(voting).await {
                Ok(()) => tracing::info!("initialized a new cluster from config"),
                Err(e) => tracing::info!("cluster initialization skipped: {e}"),
            }
        }
        Ok(false) => tracing::info!(
            "waiting to be contacted by the cluster (node {lowest_voter:?} initializes it)"
        ),
        Err(e) => {
            tracing::error!("cannot read raft state: {e}");
            return;
        }
    }

    let learners: Vec<_> = cfg
        .peers
        .iter()
        .filter(|p| p.role == NodeRole::Learner)
        .collect();
    if learners.is_empty() {
        return;
    }
    let mut metrics = node.raft.metrics();
    loop {
        let (is_leader, known) = {
            let m = metrics.borrow_and_update();
            let known: Vec<NodeId> = m.membership_config.nodes().map(|(id, _)| *id).collect();
            (m.state == ServerState::Leader, known)
        };
        if is_leader {
            for l in &learners {
                if !known.contains(&l.id) {
                    match node
                        .raft
                        .add_learner(l.id, BasicNode::new(l.raft.to_string()), false)
                        .await
                    {
                        Ok(_) => tracing::info!(learner = l.id, "learner added"),
                        Err(e) => tracing::warn!(learner = l.id, "cannot add learner yet: {e}"),
                    }
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Makes the cluster's KV limits follow the leader's config: the leader proposes them once
/// per term when the applied limits differ, so every node applies the same limits at the
/// same log index (a node-local limit would let replicas disagree about a write).
async fn propose_kv_limits(node: Arc<Node>) {
    use crate::cluster::kv::KvLimits;
    let want = KvLimits {
        max_value_bytes: usize::try_from(node.config.storage.max_value_bytes).unwrap_or(usize::MAX),
        max_total_bytes: node.config.storage.max_kv_bytes,
        ..KvLimits::default()
    };
    let mut metrics = node.raft.metrics();
    let mut done_term = None;
    loop {
        let (is_leader, term) = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader, m.current_term)
        };
        let have = node.sm.read().map(|s| s.app.kv.limits()).ok();
        if is_leader && done_term != Some(term) && have.as_ref() != Some(&want) {
            match node
                .propose(crate::consensus::app::AppRequest::SetKvLimits(want))
                .await
            {
                Ok(_) => done_term = Some(term),
                Err(e) => tracing::debug!("KV limits not proposed yet: {e}"),
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// How long a write or linearizable read may wait for Raft before the client gets 503.
/// Bounded so a minority side answers quickly instead of hanging its clients.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("no quorum answered within {0:?}: this node may be cut off from the majority; retry, or ask another node")]
    Timeout(Duration),
    #[error("the write's outcome is unknown (the leader changed while it was in flight); read the key before retrying")]
    Unknown(String),
    #[error("raft has stopped on this node: {0}")]
    Fatal(String),
}

impl Node {
    /// Proposes `req` through Raft on this node and waits until it is committed *and applied*
    /// (only then may the client be told it succeeded: safety rule 5).
    pub async fn propose(
        &self,
        req: crate::consensus::app::AppRequest,
    ) -> Result<(crate::consensus::app::AppResponse, u64), ProposeError> {
        use openraft::errors::{ClientWriteError, RaftError};
        let fut = self
            .raft
            .client_write(crate::consensus::types::Request(req));
        match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
            Err(_) => Err(ProposeError::Timeout(WRITE_TIMEOUT)),
            Ok(Ok(resp)) => Ok((resp.data.0, resp.log_id.index)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Unknown(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// Waits until a read on this node is linearizable (ReadIndex through the leader's quorum,
    /// then local apply up to it). Only valid on the leader; followers forward.
    pub async fn linearizable_barrier(&self) -> Result<(), ProposeError> {
        use openraft::errors::{LinearizableReadError, RaftError};
        let fut = self
            .raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex);
        match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
            Err(_) => Err(ProposeError::Timeout(WRITE_TIMEOUT)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Unknown(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// The API address of a member (to forward requests to the leader).
    pub fn api_addr_of(&self, id: NodeId) -> Option<std::net::SocketAddr> {
        self.config.peers.iter().find(|p| p.id == id).map(|p| p.api)
    }
}

/// Gap between successive candidates' early campaigns (best candidate first).
pub const CAMPAIGN_STAGGER: Duration = Duration::from_millis(15);
/// Least gap between two early campaigns for the same dead leader.
pub const CAMPAIGN_RETRY: Duration = Duration::from_millis(25);
/// Added after the voters' lease runs out before campaigning (timer granularity).
pub const CAMPAIGN_MARGIN: Duration = Duration::from_millis(3);

/// Watches the heartbeat view; when the Raft leader is dead on every link, campaigns (pre-vote)
/// as soon as the voters' lease has run out, staggered by rank. See `early_election.rs`.
async fn early_elections(node: Arc<Node>) {
    use crate::consensus::early_election::{campaign_at, rank, CampaignGuard, Contender};
    let cfg = node.config.clone();
    let lease = cfg.timing.election_timeout_max;
    let mut view_rx = node.heartbeat.view.clone();
    let mut guard = CampaignGuard::new(CAMPAIGN_RETRY);
    loop {
        let plan = {
            let m = node.metrics();
            let view = view_rx.borrow_and_update().clone();
            match m.current_leader {
                Some(leader) if leader != cfg.node.id && m.state != ServerState::Leader => {
                    view.peer(leader).and_then(|ls| {
                        if !ls.state.counts_as_dead() {
                            return None;
                        }
                        let age = ls.last_seen_age?;
                        let last_heard = view.at.checked_sub(age)?;
                        let mut contenders = vec![Contender {
                            id: cfg.node.id,
                            priority: cfg.node.priority,
                            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                        }];
                        for p in cfg.peers.iter().filter(|p| {
                            p.role == NodeRole::Voter && p.id != leader && p.id != cfg.node.id
                        }) {
                            if let Some(ps) = view.peer(p.id) {
                                if !ps.state.counts_as_dead() {
                                    contenders.push(Contender {
                                        id: p.id,
                                        priority: p.priority,
                                        applied_index: ps
                                            .last
                                            .as_ref()
                                            .map(|h| h.applied_index)
                                            .unwrap_or(0),
                                    });
                                }
                            }
                        }
                        let r = rank(cfg.node.id, &contenders)?;
                        Some((
                            leader,
                            m.current_term,
                            campaign_at(last_heard, lease, r, CAMPAIGN_STAGGER, CAMPAIGN_MARGIN),
                            r,
                        ))
                    })
                }
                _ => None,
            }
        };
        if let Some((leader, term, at, r)) = plan {
            let now = Instant::now();
            if at > now {
                tokio::select! {
                    _ = tokio::time::sleep(at - now) => {}
                    r = view_rx.changed() => { if r.is_err() { return; } continue; }
                }
            }
            // Re-check: the leader may have come back, or an election already happened.
            let m = node.metrics();
            if m.current_leader == Some(leader)
                && m.current_term == term
                && !node.reseeding.active()
                && guard.should_fire(leader, term, Instant::now())
            {
                tracing::info!(
                    leader,
                    term,
                    rank = r,
                    "leader dead on every heartbeat link: starting a pre-vote campaign"
                );
                if let Err(e) = node.raft.trigger().elect(true).await {
                    tracing::warn!("cannot trigger election: {e}");
                }
            }
        }
        if view_rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_batches_of_the_largest_values_fit_in_one_frame() {
        let frame = crate::consensus::codec::MAX_FRAME_BYTES as u64;
        for max_value in [128u64, 64 * 1024, 1024 * 1024, 16 * 1024 * 1024] {
            let n = max_payload_entries(max_value);
            assert!(n >= 1);
            assert!(
                n * (max_value + 4096) <= frame || n == 1,
                "{n} x {max_value}"
            );
        }
        assert_eq!(max_payload_entries(128), 300);
    }
}
