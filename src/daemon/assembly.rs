//! One quorate node: wires the data dir, Raft (storage + transport), heartbeats and the API.
//! Decisions live in `policy/`; this file only assembles the parts and runs them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::executor::{Executor, ExecutorStatus, OpRequest, OPERATOR_QUEUE};
use super::loops;
use crate::config::Config;
use crate::consensus::handle::{Consensus, ProposeError};
use crate::consensus::log_store::LogStore;
use crate::consensus::network::{self, NetParams, NetStats, NetworkFactory};
use crate::consensus::reseed_gate::ReseedFlag;
use crate::consensus::state_machine::StateMachineStore;
use crate::consensus::Raft;
use crate::datadir::{DataDir, DataDirError};
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
    ApiTls(#[from] crate::tls::TlsFileError),
}

/// Everything the API and the control loops share.
pub struct Node {
    pub config: Arc<Config>,
    /// Raft with its log and state machine.
    pub consensus: Consensus,
    pub heartbeat: HeartbeatHandle,
    pub net_stats: Arc<NetStats>,
    pub started: Instant,
    /// Set to false when a control loop dies; /health then answers 503.
    pub loops_alive: watch::Sender<bool>,
    /// The exec agent's runner itself, for reloads of its executables.
    pub hooks: Arc<HookRunner>,
    /// The resource agent: everything the daemon runs on the protected service goes
    /// through it (today the exec agent, `hooks` above).
    pub agent: Arc<dyn crate::resource::Agent>,
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
    pub reseeding: ReseedFlag,
    /// Retunes the monitor loop on reload.
    pub monitor_tuner: MonitorTuner,
    /// The outcome of the last SIGHUP reload, for status (None: never reloaded).
    pub last_reload: Arc<std::sync::Mutex<Option<String>>>,
    _data_dir: DataDir,
}

/// A running node: its shared state and its background tasks.
pub struct RunningNode {
    pub node: Arc<Node>,
    tasks: Vec<JoinHandle<()>>,
    executor: Option<JoinHandle<()>>,
}

/// The shortest wait of a zero-loss failover for the candidates' final reports (see
/// `PolicyConfig::final_report_wait`).
pub const FINAL_REPORT_WAIT_MIN: Duration = Duration::from_secs(30);

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
        max_service_lag_bytes: r.max_service_lag_bytes,
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
        monitor_configured: r.has_monitor(),
        // The postgres agent takes the snapshot (a restore point) and verifies (checksums)
        // itself, and runs the [resource] executables for them too when configured.
        snapshot_configured: r.snapshot.is_some() || r.agent != crate::config::AgentKind::Exec,
        verify_configured: r.verify.is_some() || r.agent != crate::config::AgentKind::Exec,
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
        zero_loss_failover: r.agent == crate::config::AgentKind::Postgres
            && config
                .postgres
                .as_ref()
                .is_some_and(|p| p.synchronous != crate::config::PostgresSynchronous::Off),
        // Every replica reports at once when the primary is lost, unless its own follow or
        // rejoin runs (the report comes when that ends: a follow toward a lost primary ends
        // within seconds, its wait for streaming within 15 s). Leaving a silent candidate out
        // could lose what only it acknowledged: wait long enough for that.
        final_report_wait: (r.monitor_interval * 3).max(FINAL_REPORT_WAIT_MIN),
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
        services: config
            .peers
            .iter()
            .filter_map(|p| Some((p.id, p.service.clone()?)))
            .collect(),
    }
}

/// The agent `[resource] agent` names: the exec agent itself, or a built-in one that runs
/// the exec agent for the actions it does not do itself.
fn build_agent(
    config: &Config,
    hooks: &Arc<HookRunner>,
) -> Result<Arc<dyn crate::resource::Agent>, NodeError> {
    use crate::config::{AgentKind, PostgresRejoin};
    use crate::resource::postgres::text::SyncMode;
    use crate::resource::postgres::{PostgresAgent, PostgresSettings, RejoinMode};
    match (config.resource.agent, &config.postgres) {
        (AgentKind::Postgres, Some(pg)) => {
            let read = |path: &std::path::Path, key: &str| {
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        NodeError::Hooks(format!(
                            "cannot read [postgres] {key} {}: {e}; create it (one line: the password, readable by this daemon)",
                            path.display()
                        ))
                    })
                    .and_then(|t| {
                        let t = t.trim_end_matches(['\n', '\r']).to_string();
                        if t.is_empty() {
                            Err(NodeError::Hooks(format!(
                                "[postgres] {key} {} is empty; write the password in it",
                                path.display()
                            )))
                        } else {
                            Ok(t)
                        }
                    })
            };
            let root = nix::unistd::geteuid().is_root();
            let settings = PostgresSettings {
                node: config.node.id,
                data_dir: pg.data_dir.clone(),
                bin_dir: pg.bin_dir.clone(),
                port: pg.port,
                listen: pg.listen.clone(),
                os_user: pg.os_user.clone().or_else(|| {
                    root.then(|| crate::config::defaults::POSTGRES_OS_USER_FOR_ROOT.to_string())
                }),
                superuser: pg.superuser.clone(),
                superuser_password: read(&pg.superuser_password_file, "superuser_password_file")?,
                replication_user: pg.replication_user.clone(),
                replication_password: read(
                    &pg.replication_password_file,
                    "replication_password_file",
                )?,
                rejoin: match pg.rejoin {
                    PostgresRejoin::RewindOrReclone => RejoinMode::RewindOrReclone,
                    PostgresRejoin::RewindOnly => RejoinMode::RewindOnly,
                },
                log_file: pg.log_file.clone(),
                database: pg.database.clone(),
                services: config
                    .peers
                    .iter()
                    .filter_map(|p| Some((p.id, p.service.clone()?)))
                    .collect(),
                action_timeout: pg.action_timeout,
                synchronous: match pg.synchronous {
                    crate::config::PostgresSynchronous::Off => SyncMode::Off,
                    crate::config::PostgresSynchronous::Quorum => SyncMode::Quorum,
                    crate::config::PostgresSynchronous::Strict => SyncMode::Strict,
                },
                verify_tables: pg.verify_tables.clone(),
            };
            let agent = PostgresAgent::new(settings, hooks.clone()).map_err(NodeError::Hooks)?;
            Ok(Arc::new(agent))
        }
        _ => Ok(hooks.clone()),
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

    /// A copy of the current Raft metrics (see [`Consensus::metrics`]).
    pub fn metrics(&self) -> openraft::RaftMetrics<crate::consensus::TypeConfig> {
        self.consensus.metrics()
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

    /// What the API gets: handles and receivers, never the node itself.
    pub fn api_context(&self) -> crate::api::context::ApiContext {
        crate::api::context::ApiContext {
            config: self.config.clone(),
            consensus: self.consensus.clone(),
            heartbeat_view: self.heartbeat.view.clone(),
            heartbeat_stats: self.heartbeat.stats.clone(),
            net_stats: self.net_stats.clone(),
            started: self.started,
            loops_alive: self.loops_alive.subscribe(),
            agent: self.agent.clone(),
            executor: self.executor.clone(),
            ops: self.ops.clone(),
            api_guard: self.api_guard.clone(),
            api_forward: self.api_forward.clone(),
            reseeding: self.reseeding.clone(),
            last_reload: self.last_reload.clone(),
        }
    }

    /// Records the outcome of a reload for `quorate status`.
    pub fn record_reload(&self, outcome: String) {
        *self
            .last_reload
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(outcome);
    }

    /// Why Raft stopped on this node (see [`Consensus::raft_failure`]).
    pub fn raft_failure(&self) -> Option<String> {
        self.consensus.raft_failure()
    }
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
            .map(crate::tls::server_config)
            .transpose()?;
        let api_forward = crate::api::tls::Forwarder::new(&config)?;
        let log = LogStore::open(&data_dir.raft_log_dir()).map_err(NodeError::Log)?;
        let sm = StateMachineStore::open(data_dir.snapshot_dir())?;
        let reseeding = ReseedFlag::from_data_dir(&data_dir.path);

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
        let agent = build_agent(&config, &hooks)?;
        for problem in agent.check() {
            tracing::warn!("{problem}");
        }
        let (monitor_role_tx, monitor_role_rx) = watch::channel(match config.node.role {
            NodeRole::Voter => MonitorRole::Replica,
            NodeRole::Witness => MonitorRole::Witness,
            NodeRole::Learner => MonitorRole::Learner,
        });
        let (monitor_epoch_tx, monitor_epoch_rx) = watch::channel::<Epoch>(Epoch::NONE);
        let monitor = crate::resource::spawn_monitor(
            agent.clone(),
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
            consensus: Consensus {
                id: config.node.id,
                raft: raft.clone(),
                sm,
                log,
                data_dir: config.data_dir.clone(),
            },
            heartbeat,
            net_stats,
            started: Instant::now(),
            loops_alive,
            hooks,
            agent,
            executor: executor_rx,
            ops: ops_tx,
            shutdown: shutdown_tx,
            api_guard,
            api_forward,
            reseeding: reseeding.clone(),
            monitor_tuner: monitor.tuner(),
            last_reload: Arc::new(std::sync::Mutex::new(None)),
            _data_dir: data_dir,
        });
        let notifier = Arc::new(super::systemd::Notifier::from_env());
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
            notifications: None,
        };
        let exec_node = node.clone();
        let executor_task = tokio::spawn(async move {
            // Held by the loop: /health goes red the moment it ends, panics or is cancelled.
            let _alive = super::failstop::AliveGuard::new(&exec_node.loops_alive);
            executor.run(shutdown_rx).await;
            tracing::info!("executor stopped");
        });

        let mut tasks = vec![
            tokio::spawn(network::serve(raft_listener, raft.clone(), params)),
            tokio::spawn(loops::bootstrap(node.clone())),
            tokio::spawn(super::reseed::watch_reseed(node.clone(), reseeding.clone())),
            tokio::spawn(loops::propose_kv_limits(node.clone())),
        ];
        if config.node.role == NodeRole::Voter {
            tasks.push(tokio::spawn(loops::early_elections(node.clone())));
        }
        let app = crate::api::router(Arc::new(node.api_context()));
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
    pub async fn executor_ended(&mut self) -> Result<(), super::failstop::ExecutorDied> {
        let Some(exec) = self.executor.as_mut() else {
            return std::future::pending().await;
        };
        let res = exec.await;
        self.executor = None;
        if *self.node.shutdown.borrow() && res.is_ok() {
            return Ok(());
        }
        Err(super::failstop::ExecutorDied::from_join(res))
    }

    /// Graceful stop: asks the executor to hand over (a primary switches over to the best
    /// candidate, or demotes) and waits for it, bounded by the policy's shutdown timeout plus
    /// a margin; then stops Raft and every task.
    pub async fn shutdown(mut self) {
        super::systemd::Notifier::from_env().stopping();
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
        if let Err(e) = self.node.consensus.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

impl Node {
    /// See [`Consensus::propose`].
    pub async fn propose(
        &self,
        req: crate::consensus::app::AppRequest,
    ) -> Result<(crate::consensus::app::AppResponse, u64), ProposeError> {
        self.consensus.propose(req).await
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
