//! The executor: the only place that turns the policy's decisions into IO.
//!
//! Each round it gathers observations (committed ClusterState, Raft metrics, the heartbeat
//! view, monitor results), calls `Policy::step`, performs the returned actions (proposals
//! through Raft, hooks, leadership transfers) in spawned tasks, and feeds their results back
//! through `Policy::observe`. It wakes on any change and at least every `tick`, so a lapsed
//! lease is noticed within a tick even when nothing else happens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch};

use super::assembly::Node;
pub use crate::api::context::{ExecutorStatus, OpError, OpOutcome, OpRequest, OPERATOR_QUEUE};
use crate::cluster::{ClusterState, Command};
use crate::consensus::app::{AppRequest, AppResponse};
use crate::consensus::handle::ProposeError;
use crate::heartbeat::{LocalStatus, RaftRoleWire};
use crate::policy::{
    Action, Event, HookKind as PolicyHook, Inputs, LocalRole, Member, Notification, PeerObs,
    Policy, RaftView, Refusal,
};
use crate::resource::{HookContext, MonitorHandle, MonitorRole};
use crate::types::{Epoch, LogIndex, NodeId, NodeRole, ResourceHealth, Term};

/// Results of in-flight actions queued at most.
pub const EVENT_QUEUE: usize = 256;
/// Longest the executor sleeps between rounds.
pub const MAX_TICK: Duration = Duration::from_millis(25);

/// Test-only faults (see `crate::fault`; compiled in only with the `fault-injection` feature):
/// a stall N ms after start proves the systemd watchdog catches a stuck loop, a panic proves
/// the daemon is fail-stop.
fn test_stall_deadline() -> Option<Instant> {
    crate::fault::stall_executor_after().map(|d| Instant::now() + d)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything the executor owns.
pub struct Executor {
    pub node: Arc<Node>,
    pub policy: Policy,
    pub monitor: MonitorHandle,
    pub monitor_role: watch::Sender<MonitorRole>,
    pub monitor_epoch: watch::Sender<Epoch>,
    pub status_tx: watch::Sender<ExecutorStatus>,
    pub local_status: watch::Sender<LocalStatus>,
    pub ops_rx: mpsc::Receiver<OpRequest>,
    pub notifier: Arc<super::systemd::Notifier>,
    /// Kills the in-flight promote hook (its process group) when fired: see
    /// [`Action::DemoteNow`]. Set while a promote hook runs, taken when it is cancelled.
    pub promote_cancel: Option<oneshot::Sender<()>>,
    /// The notify queue's sending side (the worker starts at the first notification).
    pub notifications: Option<mpsc::Sender<Notification>>,
}

/// Notifications waiting for the notify action at most; past it a notification is dropped
/// (logged and counted), so a slow notify script never holds up the executor.
pub const NOTIFY_QUEUE: usize = 64;

/// Runs the notify action for each queued notification, one at a time, in order.
async fn run_notifications(
    agent: Arc<dyn crate::resource::Agent>,
    mut rx: mpsc::Receiver<Notification>,
) {
    while let Some(n) = rx.recv().await {
        let env = n.env();
        let ctx = HookContext {
            role: n.local_role,
            epoch: n.epoch.unwrap_or_default(),
            reason: crate::types::HookReason::Notify,
            previous_primary: None,
            target: n.node,
            primary: None,
            event: &env,
        };
        let out = agent.run(crate::resource::HookKind::Notify, ctx).await;
        if !out.ok {
            tracing::warn!(
                event = n.event,
                "notify action failed: {} (the event is not retried)",
                out.describe()
            );
        }
    }
}

/// This node's latest service report, read once (see `Executor::local_report`).
struct LocalReport {
    report: crate::types::ServiceReport,
    detail: Option<String>,
    after_loss: Option<crate::types::Epoch>,
}

/// The observation snapshot of one round.
struct Observed {
    state: Arc<ClusterState>,
    members: Vec<Member>,
    raft: RaftView,
    peers: BTreeMap<NodeId, PeerObs>,
    metrics_state: ServerState,
    leader: Option<NodeId>,
    applied: u64,
}

impl Executor {
    /// This node's last service report, its detail, and the loss it is final for unless
    /// that loss was cleared since (the primary was heard again): a stale tag must never
    /// make a report look final. One copy of the report ([`MonitorHandle::service_report`]):
    /// a chaos run once hung a node's executor on a nested read of the report channel under
    /// the monitor's waiting write (two fields of one struct literal each borrowed it).
    fn local_report(&self) -> LocalReport {
        let r = self.monitor.service_report();
        LocalReport {
            report: r.report,
            detail: r.detail,
            after_loss: r
                .after_primary_loss
                .filter(|t| self.monitor.refresher().current() == Some(*t)),
        }
    }

    fn observe_world(&self) -> Observed {
        let node = &self.node;
        let state = node.consensus.sm.cluster();
        let m = node.metrics();
        // A new leader decides only from state it has fully applied (the rule:
        // `rules::leader_is_current`).
        let is_leader = crate::consensus::handle::leader_is_current(&m);
        let mut matched = BTreeMap::new();
        if let Some(rep) = &m.replication {
            for (id, l) in rep {
                matched.insert(*id, LogIndex(l.map(|l| l.index).unwrap_or(0)));
            }
        }
        let last_log_index = LogIndex(m.last_log_index.unwrap_or(0));
        if is_leader {
            matched.insert(node.id(), last_log_index);
        }
        // openraft's instant has no conversion to std's; go through its age. The two clock
        // reads are microseconds apart, far inside the clock-drift margin of the lease.
        let now = Instant::now();
        let last_quorum_acked =
            crate::consensus::handle::quorum_acked_age(&m).and_then(|age| now.checked_sub(age));
        let raft = RaftView {
            is_leader,
            term: Term(m.current_term),
            leader_id: m.current_leader,
            last_log_index,
            matched,
            last_quorum_acked,
        };
        let view = node.heartbeat.view.borrow().clone();
        let mut peers = BTreeMap::new();
        for p in &view.peers {
            let last = p.last.as_ref();
            peers.insert(
                p.id,
                PeerObs {
                    alive: !p.state.counts_as_dead(),
                    dead_on_all_links: p.state.counts_as_dead(),
                    health: last.map(|h| h.health).unwrap_or_default(),
                    applied_index: last.map(|h| h.applied_index).unwrap_or_default(),
                    service: last.map(|h| h.service).unwrap_or_default(),
                    claims_primary_epoch: last.and_then(|h| h.primary_epoch),
                    report_after_loss: last.and_then(|h| h.report_after_loss),
                },
            );
        }
        let members = node
            .config
            .peers
            .iter()
            .map(|p| Member {
                id: p.id,
                role: p.role,
                priority: p.priority,
            })
            .collect();
        Observed {
            state,
            members,
            raft,
            peers,
            metrics_state: m.state,
            leader: m.current_leader,
            applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        }
    }

    /// The main loop. Returns when the policy says it is ready to exit (after a graceful
    /// shutdown request) or when the node stops.
    pub async fn run(mut self, mut shutdown_rx: watch::Receiver<bool>) {
        let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(EVENT_QUEUE);
        let mut applied_rx = self.node.consensus.sm.subscribe_applied();
        let mut metrics_rx = self.node.consensus.raft.metrics();
        let mut view_rx = self.node.heartbeat.view.clone();
        let mut monitor_rx = self.monitor.results();
        let tick = (self.node.config.timing.lease / 4).clamp(Duration::from_millis(5), MAX_TICK);
        let watchdog = super::systemd::watchdog_interval();
        let mut last_watchdog = Instant::now();
        let mut last_leader: Option<NodeId> = None;
        let mut leader_changes = 0u64;
        let mut rounds = 0u64;
        let mut shutdown_sent = false;
        let mut last_notify = String::new();
        let stall_at = test_stall_deadline();
        let panic_file = crate::fault::panic_executor_if_file();
        // Raft's core can stop on its own (a storage failure such as a full disk). The loop
        // goes on: the policy then sees a node that is not the leader, lets its lease lapse
        // and demotes, so a node that cannot persist never goes on acting as primary. The
        // metrics channel is closed from then on and is no longer waited on.
        let mut raft_running = true;
        let mut raft_failure_logged = false;
        self.lifecycle(PolicyHook::Start).await;
        loop {
            let now = Instant::now();
            if stall_at.is_some_and(|t| now >= t) {
                // Test-only fault (see `test_stall_deadline`): the loop stops making progress,
                // so the watchdog must stop being fed and systemd must restart the daemon.
                tracing::error!("test fault: executor loop stalled on purpose");
                std::future::pending::<()>().await;
            }
            if panic_file.as_ref().is_some_and(|f| f.exists()) {
                panic!("test fault: executor loop panicked on purpose");
            }
            if *shutdown_rx.borrow() && !shutdown_sent {
                shutdown_sent = true;
                self.policy.observe(Event::ShutdownRequested, now);
            }
            let obs = self.observe_world();
            if !raft_failure_logged {
                if let Some(why) = self.node.raft_failure() {
                    raft_failure_logged = true;
                    tracing::error!(
                        term = obs.raft.term.get(),
                        epoch = obs.state.epoch.get(),
                        "{why}"
                    );
                }
            }
            if obs.leader != last_leader {
                if last_leader.is_some() || obs.leader.is_some() {
                    leader_changes += 1;
                }
                last_leader = obs.leader;
            }
            let local_health = *self.monitor.health.borrow();
            let local = self.local_report();
            let inputs = Inputs {
                state: &obs.state,
                members: &obs.members,
                raft: &obs.raft,
                peers: &obs.peers,
                local_health,
                local_service: local.report,
                local_report_after_loss: local.after_loss,
                now_unix_ms: now_unix_ms(),
            };
            let actions = self.policy.step(&inputs, now);
            let mut exit = false;
            for a in actions {
                match a {
                    Action::ReadyToExit => exit = true,
                    other => self.perform(other, &obs, &ev_tx),
                }
            }
            rounds += 1;
            let advertised = self.policy.advertised_health(&inputs, now);
            self.publish(
                &obs,
                &inputs,
                local.detail,
                now,
                advertised,
                leader_changes,
                rounds,
                &mut last_notify,
            );
            if let Some(iv) = watchdog {
                if last_watchdog.elapsed() >= iv {
                    self.notifier.watchdog();
                    last_watchdog = Instant::now();
                }
            }
            if exit {
                self.lifecycle(PolicyHook::Stop).await;
                return;
            }

            tokio::select! {
                Some(ev) = ev_rx.recv() => {
                    self.policy.observe(ev, Instant::now());
                    while let Ok(ev) = ev_rx.try_recv() {
                        self.policy.observe(ev, Instant::now());
                    }
                }
                Some(op) = self.ops_rx.recv() => self.handle_op(op, &ev_tx),
                r = applied_rx.changed() => { if r.is_err() { return; } }
                r = metrics_rx.changed(), if raft_running => {
                    if r.is_err() {
                        raft_running = false;
                    }
                }
                r = view_rx.changed() => { if r.is_err() { return; } }
                r = monitor_rx.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Lagged(lost)) = &r {
                        tracing::warn!(lost, "the executor fell behind the monitor and lost {lost} results; counting them as one failed check");
                    }
                    if let Some(ok) = crate::resource::monitor::received_ok(&r) {
                        self.policy.observe(Event::MonitorResult { ok }, Instant::now());
                    }
                }
                _ = shutdown_rx.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        obs: &Observed,
        inputs: &Inputs<'_>,
        service_detail: Option<String>,
        now: Instant,
        health: ResourceHealth,
        leader_changes: u64,
        rounds: u64,
        last_notify: &mut String,
    ) {
        let role = self.policy.local_role();
        let acting = self.policy.acting_primary(inputs, now);
        let mut by_reason = BTreeMap::new();
        for h in obs.state.history.iter() {
            if let Some(r) = h.promote_reason() {
                *by_reason.entry(r.to_string()).or_insert(0u64) += 1;
            }
        }
        let st = ExecutorStatus {
            local_role: role,
            acting_primary: acting,
            epoch: obs.state.epoch,
            primary: obs.state.primary_node(),
            maintenance: obs.state.in_maintenance(),
            health,
            service: inputs.local_service,
            service_detail,
            followed: self.policy.followed(),
            rejoin_failures: self.policy.rejoin_failures(),
            notes: self.policy.status_notes().to_vec(),
            leader_changes,
            promotions_by_reason: by_reason,
            rounds,
            lease_lapses: self.policy.lapse_counts().0,
            lease_lapses_healed: self.policy.lapse_counts().1,
        };
        self.status_tx.send_replace(st);

        let member_role = self.node.config.node.role;
        let mrole = match (role, member_role) {
            (
                LocalRole::Primary { .. }
                | LocalRole::Suspended { .. }
                | LocalRole::Promoting { .. },
                _,
            ) => MonitorRole::Primary,
            (_, NodeRole::Witness) => MonitorRole::Witness,
            (_, NodeRole::Learner) => MonitorRole::Learner,
            _ => MonitorRole::Replica,
        };
        self.monitor_role.send_if_modified(|r| {
            let changed = *r != mrole;
            *r = mrole;
            changed
        });
        let epoch = obs.state.epoch;
        self.node.agent.set_primary(obs.state.primary_node());
        self.node.agent.set_healthy_replicas(
            obs.members
                .iter()
                .filter(|m| m.role != NodeRole::Witness && m.id != self.node.config.node.id)
                .filter(|m| {
                    obs.peers
                        .get(&m.id)
                        .is_some_and(|o| o.alive && o.health.is_usable())
                })
                .map(|m| m.id)
                .collect(),
        );
        self.monitor_epoch.send_if_modified(|e| {
            let changed = *e != epoch;
            *e = epoch;
            changed
        });
        let ls = LocalStatus {
            term: obs.raft.term,
            raft_state: RaftRoleWire::from_server_state(obs.metrics_state),
            leader_id: obs.leader,
            primary_epoch: self.policy.claims_primary(),
            applied_index: LogIndex(obs.applied),
            health,
            service: inputs.local_service,
            report_after_loss: inputs.local_report_after_loss,
        };
        self.local_status.send_if_modified(|cur| {
            let changed = *cur != ls;
            *cur = ls;
            changed
        });
        if self.notifier.enabled() {
            let text = format!(
                "role={} epoch={} leader={} primary={}",
                match acting {
                    Some(_) => "primary".to_string(),
                    None => format!("{role:?}").to_lowercase(),
                },
                epoch,
                obs.leader
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "none".into()),
                obs.state
                    .primary_node()
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "none".into()),
            );
            let text = if self.node.raft_failure().is_some() {
                format!("FAILED: raft stopped (storage), see `quorate status`; {text}")
            } else {
                text
            };
            if *last_notify != text {
                self.notifier.status(&text);
                *last_notify = text;
            }
        }
    }

    /// The agent's start (before the first round: the service comes up as a replica; only
    /// a promotion makes it primary) or stop (after a graceful shutdown's hand-over and
    /// demote). Bounded by the hook timeout; the systemd watchdog is fed meanwhile. A failure
    /// is logged and shows in status as the last action; the monitor judges the service.
    async fn lifecycle(&self, action: PolicyHook) {
        if !self.node.agent.is_configured(action) {
            return;
        }
        let reason = if action == PolicyHook::Start {
            crate::types::HookReason::Startup
        } else {
            crate::types::HookReason::Maintenance
        };
        let ctx = HookContext {
            role: "replica",
            epoch: Epoch::NONE,
            reason,
            previous_primary: None,
            target: None,
            primary: None,
            event: &[],
        };
        let feed = super::systemd::watchdog_interval()
            .map(|iv| iv / 2)
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(10));
        let run = self.node.agent.run(action, ctx);
        tokio::pin!(run);
        let out = loop {
            tokio::select! {
                out = &mut run => break out,
                _ = tokio::time::sleep(feed) => self.notifier.watchdog(),
            }
        };
        if out.ok {
            tracing::info!(hook = action.as_str(), "{}", out.describe());
        } else {
            tracing::warn!(
                hook = action.as_str(),
                "{}; the service may not be in the state quorate expects: check it (`quorate status` shows the monitor's view)",
                out.describe()
            );
        }
    }

    fn perform(&mut self, action: Action, obs: &Observed, ev_tx: &mpsc::Sender<Event>) {
        match action {
            Action::Propose { id, cmd } => {
                tracing::info!(
                    term = obs.raft.term.get(),
                    epoch = obs.state.epoch.get(),
                    command = cmd.name(),
                    "proposing"
                );
                let node = self.node.clone();
                let tx = ev_tx.clone();
                tokio::spawn(async move {
                    let ev = match node.propose(AppRequest::Cluster(cmd)).await {
                        Ok((AppResponse::Cluster(result), _)) => {
                            Event::ProposalCommitted { id, result }
                        }
                        Ok((other, _)) => Event::ProposalFailed {
                            id,
                            error: format!("unexpected apply result {other:?}"),
                        },
                        Err(e) => Event::ProposalFailed {
                            id,
                            error: e.to_string(),
                        },
                    };
                    let _ = tx.send(ev).await;
                });
            }
            Action::RunHook(run) => {
                let agent = self.node.agent.clone();
                let tx = ev_tx.clone();
                let kind = run.hook;
                let role = match run.hook {
                    PolicyHook::Promote | PolicyHook::Fence => "primary",
                    PolicyHook::Demote
                    | PolicyHook::Rejoin
                    | PolicyHook::Follow
                    | PolicyHook::Monitor => "replica",
                    PolicyHook::Notify => "notify",
                    PolicyHook::Start | PolicyHook::Stop => "replica",
                    PolicyHook::Snapshot | PolicyHook::Verify => "primary",
                };
                tracing::info!(
                    term = obs.raft.term.get(),
                    epoch = run.epoch.get(),
                    hook = kind.as_str(),
                    reason = run.reason.as_str(),
                    target = ?run.target,
                    "running hook"
                );
                // A promote hook can be killed by a later DemoteNow (rule 3): a promote that
                // finishes after this node lost its lease would bring up a second primary
                // next to the one the majority promoted meanwhile. Other hooks run to their
                // end (or their timeout).
                let cancel = if kind == PolicyHook::Promote {
                    let (tx, rx) = oneshot::channel::<()>();
                    self.promote_cancel = Some(tx);
                    Some(rx)
                } else {
                    None
                };
                // Follow and rejoin name the primary to follow; every other hook gets the
                // primary the committed state names.
                let primary = if matches!(kind, PolicyHook::Follow | PolicyHook::Rejoin) {
                    run.target
                } else {
                    obs.state.primary_node()
                };
                // A lifecycle action changed the service: report it now, not at the next
                // interval (a replica follows a new primary once its report says primary).
                let refresh = matches!(
                    kind,
                    PolicyHook::Promote
                        | PolicyHook::Demote
                        | PolicyHook::Follow
                        | PolicyHook::Rejoin
                        | PolicyHook::Start
                )
                .then(|| self.monitor.refresher());
                tokio::spawn(async move {
                    let ctx = HookContext {
                        role,
                        epoch: run.epoch,
                        reason: run.reason,
                        previous_primary: run.previous_primary,
                        target: run.target,
                        primary,
                        event: &[],
                    };
                    let out = match cancel {
                        // A dropped sender (the executor ended) is no request to cancel.
                        Some(rx) => {
                            let cancelled = async move {
                                if rx.await.is_err() {
                                    std::future::pending::<()>().await;
                                }
                            };
                            agent.perform(kind, ctx, Box::pin(cancelled)).await
                        }
                        None => agent.run(kind, ctx).await,
                    };
                    if !out.ok {
                        tracing::warn!(
                            hook = kind.as_str(),
                            epoch = run.epoch.get(),
                            "hook failed: {}",
                            out.describe()
                        );
                    }
                    if let Some(r) = refresh {
                        r.run_now();
                    }
                    // A data action's account goes into the operation's history.
                    if matches!(
                        kind,
                        PolicyHook::Snapshot | PolicyHook::Verify | PolicyHook::Promote
                    ) {
                        let _ = tx
                            .send(Event::HookOutput {
                                id: run.id,
                                output: out.output.clone(),
                                duration_ms: u64::try_from(out.duration.as_millis())
                                    .unwrap_or(u64::MAX),
                            })
                            .await;
                    }
                    let _ = tx
                        .send(Event::HookFinished {
                            id: run.id,
                            ok: out.ok,
                        })
                        .await;
                });
            }
            Action::TransferLeadership { to, .. } => {
                tracing::info!(
                    term = obs.raft.term.get(),
                    epoch = obs.state.epoch.get(),
                    to,
                    "transferring leadership"
                );
                let raft = self.node.consensus.raft.clone();
                let tx = ev_tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = raft.trigger().transfer_leader(to).await {
                        let _ = tx
                            .send(Event::TransferFailed {
                                to,
                                error: e.to_string(),
                            })
                            .await;
                    }
                });
            }
            Action::DemoteNow { reason } => {
                // Stop every primary-side effect now. `/primary` answers from rule 1 at
                // request time, so it already says no; what is left is a promote hook still
                // running: kill its process group. It reports HookFinished (not ok), and the
                // policy then runs the demote hook.
                let killed = self
                    .promote_cancel
                    .take()
                    .is_some_and(|tx| tx.send(()).is_ok());
                tracing::warn!(
                    term = obs.raft.term.get(),
                    epoch = obs.state.epoch.get(),
                    reason = reason.as_str(),
                    promote_hook_killed = killed,
                    "stopping acting as primary now"
                );
            }
            Action::RefreshServiceReport { lost } => {
                tracing::info!(
                    lost_epoch = lost.get(),
                    "primary lost: detaching from it and running the monitor now for this node's final position"
                );
                let agent = self.node.agent.clone();
                let refresher = self.monitor.refresher();
                tokio::spawn(async move {
                    match agent.detach_from_primary().await {
                        Ok(Some(what)) => tracing::info!(target: "quorate::agent", "{what}"),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(
                            target: "quorate::agent",
                            "could not detach from the lost primary: {e}; its report is taken anyway"
                        ),
                    }
                    refresher.refresh_after_loss(lost);
                });
            }
            Action::ServiceReportNotFinal => {
                tracing::info!("the lost primary is heard again (or a new one serves): reports are no longer final");
                self.monitor.refresher().clear();
            }
            Action::Report(note) => {
                tracing::info!(
                    term = obs.raft.term.get(),
                    epoch = obs.state.epoch.get(),
                    "{note}"
                );
            }
            Action::Notify(n) => {
                if !self.node.agent.is_configured(PolicyHook::Notify) {
                    return;
                }
                let tx = self.notifications.get_or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
                    tokio::spawn(run_notifications(self.node.agent.clone(), rx));
                    tx
                });
                tracing::debug!(event = n.event, node = ?n.node, "notifying");
                if let Err(e) = tx.try_send(n) {
                    self.node.agent.stats().count_notification_dropped();
                    tracing::warn!(
                        "notification dropped: {NOTIFY_QUEUE} are already waiting for the notify \
                         action ({e}); make the notify script faster or hand its work to a queue"
                    );
                }
            }
            Action::ReadyToExit => {}
        }
    }

    fn handle_op(&self, op: OpRequest, _ev_tx: &mpsc::Sender<Event>) {
        let obs = self.observe_world();
        if !obs.raft.is_leader {
            let _ = op
                .reply
                .send(Err(OpError::NotLeader { leader: obs.leader }));
            return;
        }
        let local = self.local_report();
        let inputs = Inputs {
            state: &obs.state,
            members: &obs.members,
            raft: &obs.raft,
            peers: &obs.peers,
            local_health: *self.monitor.health.borrow(),
            local_service: local.report,
            local_report_after_loss: local.after_loss,
            now_unix_ms: now_unix_ms(),
        };
        let cmd: Command = match self.policy.plan_request(&op.req, &inputs, Instant::now()) {
            Ok(c) => c,
            Err(Refusal::NotLeader { leader }) => {
                let _ = op.reply.send(Err(OpError::NotLeader { leader }));
                return;
            }
            Err(r) => {
                let _ = op.reply.send(Err(OpError::Refused(r)));
                return;
            }
        };
        let node = self.node.clone();
        tokio::spawn(async move {
            let name = cmd.name().to_string();
            let res = match node.propose(AppRequest::Cluster(cmd)).await {
                Ok((AppResponse::Cluster(Ok(_)), idx)) => Ok(OpOutcome {
                    command: name,
                    log_index: idx,
                }),
                Ok((AppResponse::Cluster(Err(rej)), _)) => Err(OpError::Rejected(rej.to_string())),
                Ok((other, _)) => Err(OpError::Propose(format!(
                    "unexpected apply result {other:?}"
                ))),
                Err(ProposeError::NotLeader { leader }) => Err(OpError::NotLeader { leader }),
                Err(e) => Err(OpError::Propose(e.to_string())),
            };
            let _ = op.reply.send(res);
        });
    }
}
