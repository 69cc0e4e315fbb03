//! The monitor loop: runs the monitor hook every `monitor_interval` and turns its
//! results into the node's [`ResourceHealth`] (sent in heartbeats, used by the policy).
//!
//! The counting is pure ([`MonitorTracker`]): `failure_threshold` consecutive failures
//! make the node Unhealthy, one success makes it Healthy again, and before any verdict
//! it is Unknown. A single failed check (a slow query, a blip) therefore never moves
//! the primary; a service that is really down does, after a bounded, known delay of
//! about `failure_threshold × monitor_interval`.
//!
//! The loop ([`spawn_monitor`]) is the thin IO shell around it: one run at a time
//! (a slow monitor delays the next run instead of piling up), the current role and
//! epoch in the hook's environment, health published on change, and every result
//! broadcast so the failback verifier can count passes.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::agent::Agent;
use super::hooks::{HookContext, HookKind, HookReason};
use super::report::{parse_report, ParsedReport};
use crate::types::{Epoch, ResourceHealth, ServiceReport};

/// Largest accepted `failure_threshold`: beyond this a dead service would go unnoticed
/// for longer than any operator wants, so it is a typo rather than a choice.
pub const MAX_FAILURE_THRESHOLD: u32 = 1_000;

/// Smallest accepted `monitor_interval`: below it the loop would mostly fork processes.
pub const MIN_MONITOR_INTERVAL: Duration = Duration::from_millis(10);

/// Results kept for slow subscribers of [`MonitorHandle::results`]; a subscriber that
/// falls further behind gets `RecvError::Lagged` and must resynchronise.
pub const MONITOR_RESULTS_CAPACITY: usize = 64;

/// The role exported to the monitor hook as `QUORATE_ROLE`, so one script can check
/// "accepting writes" on the primary and "replicating" on a replica.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum MonitorRole {
    Primary,
    #[default]
    Replica,
    Witness,
    Learner,
}

impl MonitorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorRole::Primary => "primary",
            MonitorRole::Replica => "replica",
            MonitorRole::Witness => "witness",
            MonitorRole::Learner => "learner",
        }
    }
}

impl fmt::Display for MonitorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Monitor settings the loop refuses, with the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MonitorError {
    #[error("failure_threshold is {threshold}: it must be between 1 and {max}; set [resource] failure_threshold (3 is a common choice)")]
    ThresholdOutOfRange { threshold: u32, max: u32 },
    #[error("monitor_interval is {interval:?}: it must be at least {min:?}; set [resource] monitor_interval (1s is a common choice)")]
    IntervalTooShort { interval: Duration, min: Duration },
}

/// Pure consecutive-failure counter. Feed it each monitor result in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorTracker {
    threshold: u32,
    consecutive_failures: u32,
    health: ResourceHealth,
}

impl MonitorTracker {
    pub fn new(failure_threshold: u32) -> Result<Self, MonitorError> {
        if failure_threshold == 0 || failure_threshold > MAX_FAILURE_THRESHOLD {
            return Err(MonitorError::ThresholdOutOfRange {
                threshold: failure_threshold,
                max: MAX_FAILURE_THRESHOLD,
            });
        }
        Ok(MonitorTracker {
            threshold: failure_threshold,
            consecutive_failures: 0,
            health: ResourceHealth::Unknown,
        })
    }

    /// Records one monitor result and returns the health that follows. A failure below
    /// the threshold keeps the previous verdict: one blip neither condemns a healthy
    /// service nor clears a suspicion.
    pub fn record(&mut self, ok: bool) -> ResourceHealth {
        if ok {
            self.consecutive_failures = 0;
            self.health = ResourceHealth::Healthy;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures >= self.threshold {
                self.health = ResourceHealth::Unhealthy;
            }
        }
        self.health
    }

    /// Forgets everything (health back to Unknown): after a local restart the service
    /// gets a fresh `failure_threshold` before it is judged again.
    pub fn reset(&mut self) {
        self.consecutive_failures = 0;
        self.health = ResourceHealth::Unknown;
    }

    pub fn health(&self) -> ResourceHealth {
        self.health
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// A new threshold (reload); the failure count so far is kept and judged against it.
    pub fn set_threshold(&mut self, failure_threshold: u32) -> Result<(), MonitorError> {
        MonitorTracker::new(failure_threshold)?;
        self.threshold = failure_threshold;
        Ok(())
    }
}

/// The monitor loop's settings that a reload (SIGHUP) may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorTuning {
    pub interval: Duration,
    pub failure_threshold: u32,
}

impl MonitorTuning {
    pub fn check(&self) -> Result<(), MonitorError> {
        if self.interval < MIN_MONITOR_INTERVAL {
            return Err(MonitorError::IntervalTooShort {
                interval: self.interval,
                min: MIN_MONITOR_INTERVAL,
            });
        }
        MonitorTracker::new(self.failure_threshold).map(|_| ())
    }
}

/// One monitor run, as broadcast by [`MonitorHandle::results`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorResult {
    pub ok: bool,
    /// When the run finished.
    pub at: Instant,
    pub role: MonitorRole,
    pub epoch: Epoch,
    pub timed_out: bool,
    pub exit_code: Option<i32>,
    /// The health after this result was recorded.
    pub health: ResourceHealth,
    /// The service report the run printed (all `None` when it printed none or an invalid one).
    pub report: ServiceReport,
}

/// Controls a running monitor loop. Dropping the handle stops the loop (and kills a
/// monitor hook still running).
#[derive(Debug)]
pub struct MonitorHandle {
    /// Current health; changes only when the verdict changes.
    pub health: watch::Receiver<ResourceHealth>,
    /// The last monitor run's service report (with its detail); empty before the first run,
    /// without a monitor hook, and after a reset. Private: read it through
    /// [`Self::service_report`], which copies it out, so no caller can hold the channel's
    /// read lock while reading it again (the monitor's write waits for readers and blocks
    /// new ones: a nested read under a waiting write hangs the reader's thread).
    service: watch::Receiver<ParsedReport>,
    results: broadcast::Sender<MonitorResult>,
    stop: watch::Sender<bool>,
    reset: watch::Sender<u64>,
    refresh: MonitorRefresher,
    tune: MonitorTuner,
    task: Option<JoinHandle<()>>,
}

/// Asks a running monitor loop for a report taken after the loss of a primary. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct MonitorRefresher {
    after_loss: Arc<watch::Sender<Option<Epoch>>>,
    now: Arc<tokio::sync::Notify>,
}

impl MonitorRefresher {
    /// This node lost the primary of `epoch`: run the monitor now (after the run in flight,
    /// if any: that one started before the loss), and tag every report from then on with
    /// `epoch` (`ParsedReport::after_primary_loss`). A zero-loss failover waits for such a
    /// report from every candidate. Asking again for the same or an older epoch changes
    /// nothing.
    pub fn refresh_after_loss(&self, epoch: Epoch) {
        self.after_loss.send_if_modified(|current| {
            if current.is_some_and(|c| c >= epoch) {
                false
            } else {
                *current = Some(epoch);
                true
            }
        });
    }

    /// The primary is heard again (or a new one serves): reports are no longer final. A
    /// later loss, even of the same epoch, asks for a new final report.
    pub fn clear(&self) {
        self.after_loss
            .send_if_modified(|current| current.take().is_some());
    }

    /// Run the monitor now (after the run in flight, if any), without waiting for the
    /// interval: a lifecycle action changed the service (a promote finished, a follow
    /// switched upstream), and the peers wait for a report that says so (a replica follows
    /// only a primary whose report says primary). Requests made while a run is in flight
    /// are kept: one more run follows it.
    pub fn run_now(&self) {
        self.now.notify_one();
    }

    /// The loss the loop's reports are final for now (None after [`Self::clear`]): a report
    /// tagged for a loss that was cleared since is not final any more.
    pub fn current(&self) -> Option<Epoch> {
        *self.after_loss.borrow()
    }
}

/// Changes a running monitor loop's interval and threshold (reload). Cheap to clone.
#[derive(Clone, Debug)]
pub struct MonitorTuner(Arc<watch::Sender<MonitorTuning>>);

impl MonitorTuner {
    /// New interval and threshold. The loop also re-reads whether a monitor hook is
    /// configured (the hook runner's settings), so a reload can add or remove one.
    pub fn retune(&self, tuning: MonitorTuning) -> Result<(), MonitorError> {
        tuning.check()?;
        // send_replace, not send_if_modified: the hook path may have changed even when the
        // numbers did not, and the loop must look again.
        self.0.send_replace(tuning);
        Ok(())
    }
}

impl MonitorHandle {
    /// Every monitor result from now on (ok, when, role, epoch, resulting health).
    pub fn results(&self) -> broadcast::Receiver<MonitorResult> {
        self.results.subscribe()
    }

    /// The health right now.
    /// A copy of the last service report; the channel is borrowed only inside this call.
    pub fn service_report(&self) -> ParsedReport {
        self.service.borrow().clone()
    }

    pub fn current_health(&self) -> ResourceHealth {
        *self.health.borrow()
    }

    /// Back to Unknown with a fresh failure count; a run in flight is discarded. For
    /// the executor after a local restart (demote + promote), so the restarted service
    /// must fail `failure_threshold` times again before it is declared Unhealthy.
    pub fn reset(&self) {
        self.reset
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// A handle to ask this loop for a final report ([`MonitorRefresher::refresh_after_loss`]).
    pub fn refresher(&self) -> MonitorRefresher {
        self.refresh.clone()
    }

    /// A handle to retune this loop (reload).
    pub fn tuner(&self) -> MonitorTuner {
        self.tune.clone()
    }

    /// Asks the loop to stop; a monitor hook still running is killed with its group.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops the loop and waits until it has ended (its hook killed and reaped).
    pub async fn join(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::error!(target: "quorate::monitor", "monitor loop ended abnormally: {e}");
            }
        }
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the monitor loop on the current tokio runtime. It runs the monitor hook at
/// once and then every `interval`, never two at once (a run that takes longer than
/// `interval` is followed directly by the next), with the role and epoch current at
/// each run. Must be called from within a tokio runtime. Without a configured
/// monitor hook nothing runs and health stays Unknown (which counts as usable).
pub fn spawn_monitor(
    runner: Arc<dyn Agent>,
    interval: Duration,
    failure_threshold: u32,
    role: watch::Receiver<MonitorRole>,
    epoch: watch::Receiver<Epoch>,
) -> Result<MonitorHandle, MonitorError> {
    let tuning = MonitorTuning {
        interval,
        failure_threshold,
    };
    tuning.check()?;
    let tracker = MonitorTracker::new(failure_threshold)?;
    let (tune_tx, tune_rx) = watch::channel(tuning);
    let (health_tx, health_rx) = watch::channel(ResourceHealth::Unknown);
    let (service_tx, service_rx) = watch::channel(ParsedReport::default());
    let (results_tx, _) = broadcast::channel(MONITOR_RESULTS_CAPACITY);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (reset_tx, reset_rx) = watch::channel(0u64);
    let (refresh_tx, refresh_rx) = watch::channel(None);
    let run_now = Arc::new(tokio::sync::Notify::new());
    let shell = MonitorLoop {
        runner,
        interval,
        tracker,
        role,
        epoch,
        health: health_tx,
        service: service_tx,
        last_report_error: None,
        results: results_tx.clone(),
        stop: stop_rx,
        reset: reset_rx,
        refresh: refresh_rx,
        run_now: run_now.clone(),
        tune: tune_rx,
    };
    let task = tokio::spawn(shell.run());
    Ok(MonitorHandle {
        health: health_rx,
        service: service_rx,
        results: results_tx,
        stop: stop_tx,
        reset: reset_tx,
        refresh: MonitorRefresher {
            after_loss: Arc::new(refresh_tx),
            now: run_now,
        },
        tune: MonitorTuner(Arc::new(tune_tx)),
        task: Some(task),
    })
}

struct MonitorLoop {
    runner: Arc<dyn Agent>,
    interval: Duration,
    tracker: MonitorTracker,
    role: watch::Receiver<MonitorRole>,
    epoch: watch::Receiver<Epoch>,
    health: watch::Sender<ResourceHealth>,
    service: watch::Sender<ParsedReport>,
    /// The last report error logged, so a monitor printing the same broken line every
    /// interval logs it once.
    last_report_error: Option<String>,
    results: broadcast::Sender<MonitorResult>,
    stop: watch::Receiver<bool>,
    reset: watch::Receiver<u64>,
    refresh: watch::Receiver<Option<Epoch>>,
    /// [`MonitorRefresher::run_now`].
    run_now: Arc<tokio::sync::Notify>,
    tune: watch::Receiver<MonitorTuning>,
}

impl MonitorLoop {
    /// Takes the latest tuning (checked by `retune`).
    fn apply_tuning(&mut self) {
        let t = *self.tune.borrow_and_update();
        self.interval = t.interval;
        if let Err(e) = self.tracker.set_threshold(t.failure_threshold) {
            tracing::error!(target: "quorate::monitor", "{e}");
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) {
        loop {
            if !self.idle_until_configured().await {
                return;
            }
            if !self.run_configured().await {
                return;
            }
        }
    }

    /// Waits while no monitor hook is configured (health stays unknown). Returns false when
    /// the loop must end, true once a reload configured a monitor hook.
    async fn idle_until_configured(&mut self) -> bool {
        if self.runner.is_configured(HookKind::Monitor) {
            return true;
        }
        tracing::info!(
            target: "quorate::monitor",
            "no monitor hook configured: resource health stays unknown"
        );
        self.tracker.reset();
        self.publish(ResourceHealth::Unknown);
        self.publish_report(ParsedReport::default());
        loop {
            if self.stopping() {
                return false;
            }
            tokio::select! {
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                changed = self.tune.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    self.apply_tuning();
                    if self.runner.is_configured(HookKind::Monitor) {
                        return true;
                    }
                }
            }
        }
    }

    /// Runs the monitor hook every `interval`. Returns false when the loop must end, true
    /// when a reload removed the monitor hook.
    async fn run_configured(&mut self) -> bool {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stopping() {
                return false;
            }
            tokio::select! {
                biased;
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    continue;
                }
                changed = self.tune.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    self.apply_tuning();
                    if !self.runner.is_configured(HookKind::Monitor) {
                        return true;
                    }
                    ticker = tokio::time::interval(self.interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    continue;
                }
                changed = self.reset.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    self.tracker.reset();
                    self.publish(ResourceHealth::Unknown);
                    self.publish_report(ParsedReport::default());
                    continue;
                }
                changed = self.refresh.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    // Run at once: the next run's report is final for the lost primary.
                }
                _ = self.run_now.notified() => {
                    // Run at once, and count the interval from here.
                    ticker.reset();
                }
                _ = ticker.tick() => {}
            }

            let role = *self.role.borrow_and_update();
            let epoch = *self.epoch.borrow_and_update();
            let generation = *self.reset.borrow();
            let after_primary_loss = *self.refresh.borrow_and_update();
            let ctx = HookContext {
                role: role.as_str(),
                epoch,
                reason: HookReason::Monitor,
                previous_primary: None,
                target: None,
                primary: None,
                event: &[],
            };
            let runner = Arc::clone(&self.runner);
            let stop = &mut self.stop;
            // A stop request (or the handle going away) kills and reaps the running hook.
            let stop_requested = async move {
                let _ = stop.changed().await;
            };
            let outcome = runner
                .perform(HookKind::Monitor, ctx, Box::pin(stop_requested))
                .await;
            if outcome.cancelled {
                return false;
            }
            if *self.reset.borrow() != generation {
                // Reset while this check ran: it judged the service before the restart.
                continue;
            }
            let health = self.tracker.record(outcome.ok);
            self.publish(health);
            let mut parsed = self.read_report(&outcome.output);
            parsed.after_primary_loss = after_primary_loss;
            let report = parsed.report;
            self.publish_report(parsed);
            // No subscriber is fine: the broadcast is for whoever listens right now.
            let _ = self.results.send(MonitorResult {
                ok: outcome.ok,
                at: Instant::now(),
                role,
                epoch,
                timed_out: outcome.timed_out,
                exit_code: outcome.exit_code,
                health,
                report,
            });
        }
    }

    /// The report in a run's output; an invalid one is logged (once until it changes) and
    /// counts as no report: a stale position must never make a replica look further ahead
    /// than it is.
    fn read_report(&mut self, output: &str) -> ParsedReport {
        match parse_report(output) {
            Ok(parsed) => {
                self.last_report_error = None;
                parsed.unwrap_or_default()
            }
            Err(e) => {
                let text = e.to_string();
                if self.last_report_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(target: "quorate::monitor", "{text}");
                    self.last_report_error = Some(text);
                }
                ParsedReport::default()
            }
        }
    }

    fn publish_report(&self, parsed: ParsedReport) {
        self.service.send_if_modified(|current| {
            if *current == parsed {
                false
            } else {
                *current = parsed;
                true
            }
        });
    }

    fn publish(&self, health: ResourceHealth) {
        let changed = self.health.send_if_modified(|current| {
            if *current == health {
                false
            } else {
                *current = health;
                true
            }
        });
        if !changed {
            return;
        }
        let failures = self.tracker.consecutive_failures();
        match health {
            ResourceHealth::Unhealthy => tracing::warn!(
                target: "quorate::monitor",
                consecutive_failures = failures,
                threshold = self.tracker.threshold(),
                "resource is unhealthy: the monitor hook failed {failures} times in a row"
            ),
            ResourceHealth::Healthy => {
                tracing::info!(target: "quorate::monitor", "resource is healthy")
            }
            ResourceHealth::Unknown => {
                tracing::info!(target: "quorate::monitor", "resource health reset to unknown")
            }
        }
    }
}

/// One receive from [`MonitorHandle::results`] as a subscriber must count it: `Some(ok)` for
/// a result, `None` once the monitor is gone. A lag (the subscriber fell more than
/// [`MONITOR_RESULTS_CAPACITY`] results behind and the oldest were overwritten) counts as a
/// failed result, never as nothing: any of the lost results may have been the one failure
/// that must stop a failback verification from passing. The caller logs how many were lost.
pub fn received_ok(r: &Result<MonitorResult, broadcast::error::RecvError>) -> Option<bool> {
    match r {
        Ok(res) => Some(res.ok),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(false),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

#[cfg(test)]
mod tests;
