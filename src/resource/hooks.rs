//! Runs the operator's hook executables (promote, demote, monitor, fence, rejoin).
//!
//! A hook is the only way quorate touches the protected service, so this runner is
//! built to be boring under failure:
//! - every run is bounded in time (`timeout`) and in captured output (`max_output_bytes`);
//! - the hook runs in its own process group, and a timeout SIGKILLs the whole group,
//!   so a hung `pg_ctl` or a forgotten `sleep &` cannot outlive its deadline;
//! - stdout and stderr are read while we wait, so a chatty hook cannot deadlock on a
//!   full pipe;
//! - the hook's main process is always reaped (no zombies), and nothing here blocks
//!   the async runtime;
//! - a missing or non-executable hook is reported with the path and the fix.
//!
//! The runner never decides whether a failure matters: it returns a [`HookOutcome`] and
//! the caller (executor, monitor loop) decides.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use crate::types::{Epoch, NodeId};
pub use crate::types::{HookKind, HookReason};

/// Default cap on the output kept from one hook run. Enough for a useful error
/// message and a stack trace, small enough to log and to keep in status.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Upper bound accepted for `max_output_bytes`: output is held in memory and logged.
pub const MAX_OUTPUT_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// Default hook timeout for callers that have no configured value.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// After the hook's main process has exited, how long we keep reading output that
/// processes it left behind (a daemon it started with inherited stdout) still write.
/// Past this we stop reading rather than wait for that daemon to exit.
const OUTPUT_DRAIN_GRACE: Duration = Duration::from_millis(200);

/// How long we wait for a SIGKILLed hook to be reaped before giving up on it (a process
/// stuck in uninterruptible IO ignores SIGKILL until the IO finishes). Tokio's orphan
/// reaper collects it later; we do not block the caller forever.
const REAP_AFTER_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Spawning a script that another thread or process still has open for writing fails
/// with ETXTBSY (an editor saving it, or a concurrent fork in this process inheriting
/// the descriptor for an instant). It clears within milliseconds, so retry a few times.
const SPAWN_BUSY_RETRIES: u32 = 5;
const SPAWN_BUSY_BACKOFF: Duration = Duration::from_millis(20);

/// Size of each read from the hook's stdout or stderr.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// `HookRunner::primary` when no primary is known.
const NO_PRIMARY: u64 = u64::MAX;

/// Position of a kind in per-kind arrays (stats).
fn kind_index(kind: HookKind) -> usize {
    match kind {
        HookKind::Promote => 0,
        HookKind::Demote => 1,
        HookKind::Monitor => 2,
        HookKind::Fence => 3,
        HookKind::Rejoin => 4,
        HookKind::Follow => 5,
        HookKind::Notify => 6,
        HookKind::Start => 7,
        HookKind::Stop => 8,
        HookKind::Snapshot => 9,
        HookKind::Verify => 10,
    }
}

/// What the runner needs to know to run hooks on this node.
#[derive(Clone, Debug)]
pub struct HookSettings {
    pub cluster: String,
    pub node: NodeId,
    /// Configured hooks. A kind missing here is "nothing to do" (success), except
    /// `Fence`, whose absence the caller must handle (see [`HookRunner::is_configured`]).
    pub paths: HashMap<HookKind, PathBuf>,
    /// Per-run deadline; past it the hook's whole process group is killed.
    pub timeout: Duration,
    /// Output kept per run (stdout and stderr together); see [`DEFAULT_MAX_OUTPUT_BYTES`].
    pub max_output_bytes: usize,
    /// Each node's service address (`[[peer]] service`), for `QUORATE_PRIMARY_SERVICE`.
    pub services: HashMap<NodeId, String>,
}

impl HookSettings {
    /// Problems with the configured hooks (missing, not a file, not executable), one message
    /// per hook naming the path and the fix. Uses blocking `stat` calls.
    pub fn check(&self) -> Vec<String> {
        HookKind::ALL
            .iter()
            .filter_map(|&kind| {
                let path = self.paths.get(&kind)?;
                problem_with(kind, path, std::fs::metadata(path))
            })
            .collect()
    }
}

/// Settings the runner refuses, with the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookSettingsError {
    #[error("the hook timeout is zero: every hook would be killed at once; set the [resource] hook timeout to a positive duration such as 30s")]
    ZeroTimeout,
    #[error("max_output_bytes is {bytes}: it must be between 1 and {limit} bytes (the default is {default}); fix the hook output limit")]
    OutputLimit {
        bytes: usize,
        limit: usize,
        default: usize,
    },
}

/// The context of one hook run, exported to the script as environment variables.
#[derive(Clone, Copy, Debug)]
pub struct HookContext<'a> {
    /// `QUORATE_ROLE`: "primary", "replica", "witness", ...
    pub role: &'a str,
    /// `QUORATE_EPOCH`: the fencing token the hook may hand to the service.
    pub epoch: Epoch,
    /// `QUORATE_REASON`.
    pub reason: HookReason,
    /// `QUORATE_PREVIOUS_PRIMARY` (empty when none).
    pub previous_primary: Option<NodeId>,
    /// `QUORATE_FENCE_TARGET`: the node to fence (fence hook only).
    pub target: Option<NodeId>,
    /// `QUORATE_PRIMARY` (and, from the settings, `QUORATE_PRIMARY_SERVICE`): the primary
    /// the committed state names (for follow and rejoin: the one to follow). `None` falls
    /// back to the runner's current primary ([`HookRunner::set_primary`]).
    pub primary: Option<NodeId>,
    /// The notify action's event (`QUORATE_EVENT`, `QUORATE_EVENT_NODE`, ...); empty for
    /// every other action.
    pub event: &'a [(&'static str, String)],
}

/// The result of one hook run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookOutcome {
    pub kind: HookKind,
    /// Exit code 0 within the timeout (or an unconfigured non-fence hook).
    pub ok: bool,
    /// The exit code, when the hook exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that ended the hook's main process, when one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Stopped through [`HookRunner::run_cancellable`] before it finished (not ok).
    pub cancelled: bool,
    pub duration: Duration,
    /// stdout and stderr as they arrived, truncated to `max_output_bytes` with a
    /// marker; or, when the hook could not run, a message naming the path and the fix.
    pub output: String,
}

impl HookOutcome {
    /// One line for status displays and error messages.
    pub fn describe(&self) -> String {
        let ms = self.duration.as_millis();
        if self.ok {
            format!("{} hook succeeded in {ms} ms", self.kind)
        } else if self.timed_out {
            format!(
                "{} hook timed out after {ms} ms and was killed with its process group",
                self.kind
            )
        } else if self.cancelled {
            format!(
                "{} hook was cancelled after {ms} ms and killed with its process group",
                self.kind
            )
        } else if let Some(code) = self.exit_code {
            format!(
                "{} hook failed with exit code {code} after {ms} ms",
                self.kind
            )
        } else if let Some(signal) = self.signal {
            format!(
                "{} hook was killed by signal {signal} after {ms} ms",
                self.kind
            )
        } else {
            let first_line = self.output.lines().next().unwrap_or("no detail");
            format!("{} hook could not run: {first_line}", self.kind)
        }
    }

    fn not_run(kind: HookKind, ok: bool, started: Instant, output: String) -> Self {
        HookOutcome {
            kind,
            ok,
            exit_code: None,
            signal: None,
            timed_out: false,
            cancelled: false,
            duration: started.elapsed(),
            output,
        }
    }
}

/// Counters for one hook kind.
#[derive(Debug, Default)]
struct KindCounters {
    runs: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
}

/// A snapshot of one kind's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCounts {
    /// Attempts, including ones that could not start (missing file, ...).
    pub runs: u64,
    /// Attempts that were not ok (timeouts included).
    pub failures: u64,
    pub timeouts: u64,
}

/// The last agent action that ran (any hook but the monitor, which runs all the time), for
/// status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastAction {
    pub kind: HookKind,
    pub ok: bool,
    /// [`HookOutcome::describe`]: what happened, in one line.
    pub summary: String,
    /// The action's own account (its output, the end of it: at most
    /// [`MAX_RECENT_ACTION_OUTPUT`] bytes).
    pub output: String,
    /// Wall-clock time it finished, in Unix milliseconds.
    pub finished_unix_ms: u64,
}

/// Bytes of an action's output kept with it for `quorate actions` (the end of it).
pub const MAX_RECENT_ACTION_OUTPUT: usize = 1024;

/// The last `max` bytes of `text` (cut at a character boundary), trimmed.
fn output_tail(text: &str, max: usize) -> String {
    let t = text.trim();
    if t.len() <= max {
        return t.to_string();
    }
    let mut cut = t.len() - max;
    while !t.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &t[cut..])
}

/// Per-kind run/failure/timeout counters for `/metrics`, and the last action for status.
/// Unconfigured non-fence hooks are not counted: nothing ran.
#[derive(Debug, Default)]
pub struct HookStats {
    per_kind: [KindCounters; HookKind::ALL.len()],
    /// The last [`RECENT_ACTIONS_LIMIT`] actions, oldest first.
    recent: std::sync::Mutex<VecDeque<LastAction>>,
    notifications_dropped: AtomicU64,
}

/// Agent actions (monitor and notify runs excepted) a node remembers for `quorate actions`.
pub const RECENT_ACTIONS_LIMIT: usize = 64;

impl HookStats {
    pub fn get(&self, kind: HookKind) -> HookCounts {
        let c = &self.per_kind[kind_index(kind)];
        HookCounts {
            runs: c.runs.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
        }
    }

    /// A notification that found the notify queue full.
    pub fn count_notification_dropped(&self) {
        self.notifications_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn notifications_dropped(&self) -> u64 {
        self.notifications_dropped.load(Ordering::Relaxed)
    }

    /// The last action other than a monitor or notify run (None: none ran since start).
    pub fn last_action(&self) -> Option<LastAction> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .back()
            .cloned()
    }

    /// The last [`RECENT_ACTIONS_LIMIT`] actions, oldest first.
    pub fn recent_actions(&self) -> Vec<LastAction> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Counts one finished action (built-in agents record theirs here too).
    pub fn record(&self, outcome: &HookOutcome) {
        if !matches!(outcome.kind, HookKind::Monitor | HookKind::Notify) {
            let finished_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0);
            let mut recent = self
                .recent
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            while recent.len() >= RECENT_ACTIONS_LIMIT {
                recent.pop_front();
            }
            recent.push_back(LastAction {
                kind: outcome.kind,
                ok: outcome.ok,
                summary: outcome.describe(),
                output: output_tail(&outcome.output, MAX_RECENT_ACTION_OUTPUT),
                finished_unix_ms,
            });
        }
        let c = &self.per_kind[kind_index(outcome.kind)];
        c.runs.fetch_add(1, Ordering::Relaxed);
        if !outcome.ok {
            c.failures.fetch_add(1, Ordering::Relaxed);
        }
        if outcome.timed_out {
            c.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock shared by every process on this machine
/// that, unlike wall time, never steps, so marker lines written by several daemons and
/// read by tests can be ordered on one timeline. Exported to hooks as
/// `QUORATE_MONOTONIC_NS`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec owned by this frame, and
    // CLOCK_MONOTONIC is a clock id every Linux kernel supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Runs hooks for one node. Cheap to share behind an `Arc`; runs may overlap (the
/// caller serialises what must not).
#[derive(Debug)]
pub struct HookRunner {
    /// Replaced as a whole on reload (SIGHUP); a run uses the settings current at its start.
    settings: std::sync::RwLock<Arc<HookSettings>>,
    stats: HookStats,
    /// The committed primary as the executor last saw it (`u64::MAX`: none), for hooks whose
    /// context names none (the monitor loop's).
    primary: AtomicU64,
}

fn check_settings(settings: &HookSettings) -> Result<(), HookSettingsError> {
    if settings.timeout.is_zero() {
        return Err(HookSettingsError::ZeroTimeout);
    }
    if settings.max_output_bytes == 0 || settings.max_output_bytes > MAX_OUTPUT_BYTES_LIMIT {
        return Err(HookSettingsError::OutputLimit {
            bytes: settings.max_output_bytes,
            limit: MAX_OUTPUT_BYTES_LIMIT,
            default: DEFAULT_MAX_OUTPUT_BYTES,
        });
    }
    Ok(())
}

impl HookRunner {
    pub fn new(settings: HookSettings) -> Result<Self, HookSettingsError> {
        check_settings(&settings)?;
        Ok(HookRunner {
            settings: std::sync::RwLock::new(Arc::new(settings)),
            stats: HookStats::default(),
            primary: AtomicU64::new(NO_PRIMARY),
        })
    }

    /// Records the committed primary (the executor, every round), exported to hooks as
    /// `QUORATE_PRIMARY` when their context names none.
    pub fn set_primary(&self, primary: Option<NodeId>) {
        self.primary
            .store(primary.unwrap_or(NO_PRIMARY), Ordering::Relaxed);
    }

    fn current_primary(&self) -> Option<NodeId> {
        Some(self.primary.load(Ordering::Relaxed)).filter(|p| *p != NO_PRIMARY)
    }

    /// The settings right now (a run in flight keeps the ones it started with).
    pub fn settings(&self) -> Arc<HookSettings> {
        self.settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the settings (reload). Runs already started finish with the old ones.
    pub fn replace_settings(&self, settings: HookSettings) -> Result<(), HookSettingsError> {
        check_settings(&settings)?;
        *self
            .settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(settings);
        Ok(())
    }

    pub fn stats(&self) -> &HookStats {
        &self.stats
    }

    /// Whether a path is configured for `kind` (the caller decides what a missing fence
    /// hook means; the monitor loop skips an unconfigured monitor).
    pub fn is_configured(&self, kind: HookKind) -> bool {
        self.settings().paths.contains_key(&kind)
    }

    pub fn path(&self, kind: HookKind) -> Option<PathBuf> {
        self.settings().paths.get(&kind).cloned()
    }

    /// Problems with configured hooks (missing, not a file, not executable), one
    /// message per hook naming the path and the fix. Empty when all are runnable.
    /// For startup and `quorate config check`; uses blocking `stat` calls.
    pub fn check(&self) -> Vec<String> {
        self.settings().check()
    }

    /// Runs the `kind` hook with `ctx` in its environment and waits for it (at most
    /// `timeout`, plus a short grace to collect output and reap). Never panics, never
    /// leaves the hook's main process unreaped. Dropping the returned future kills the
    /// hook's process group too, but then the reaping is left to tokio's background
    /// reaper; use [`HookRunner::run_cancellable`] to stop a hook and reap it at once.
    pub async fn run(&self, kind: HookKind, ctx: HookContext<'_>) -> HookOutcome {
        self.run_cancellable(kind, ctx, std::future::pending())
            .await
    }

    /// Like [`HookRunner::run`], but when `cancel` completes first the hook's process
    /// group is killed and reaped, and the outcome says `cancelled` (not ok). For
    /// shutdown and for runs that are no longer wanted (a monitor being stopped).
    pub async fn run_cancellable<F>(
        &self,
        kind: HookKind,
        ctx: HookContext<'_>,
        cancel: F,
    ) -> HookOutcome
    where
        F: Future<Output = ()>,
    {
        let started = Instant::now();
        let settings = self.settings();
        let Some(path) = settings.paths.get(&kind) else {
            return self.unconfigured(kind, ctx, started);
        };
        let outcome = match problem_with(kind, path, tokio::fs::metadata(path).await) {
            Some(message) => HookOutcome::not_run(kind, false, started, message),
            None => self.spawn_and_wait(kind, path, ctx, started, cancel).await,
        };
        self.stats.record(&outcome);
        self.log(ctx, &outcome);
        outcome
    }

    fn unconfigured(&self, kind: HookKind, ctx: HookContext<'_>, started: Instant) -> HookOutcome {
        if kind == HookKind::Fence {
            let outcome = HookOutcome::not_run(
                kind,
                false,
                started,
                "no fence hook is configured, so the previous primary cannot be fenced: \
                 configure a fence hook in [resource], or set fencing = \"off\" if the \
                 service needs no fencing"
                    .to_string(),
            );
            self.stats.record(&outcome);
            self.log(ctx, &outcome);
            return outcome;
        }
        tracing::debug!(
            target: "quorate::hook",
            hook = kind.as_str(),
            node = self.settings().node,
            epoch = ctx.epoch.get(),
            reason = ctx.reason.as_str(),
            "no {kind} hook configured; nothing to run"
        );
        HookOutcome::not_run(kind, true, started, String::new())
    }

    fn command(&self, kind: HookKind, path: &Path, ctx: HookContext<'_>) -> Command {
        let settings = self.settings();
        let primary = ctx.primary.or_else(|| self.current_primary());
        let mut cmd = Command::new(path);
        cmd.stdin(Stdio::null())
            // Own process group: on timeout we kill the group, reaching the hook's
            // children too, and a Ctrl-C aimed at the daemon's group skips the hook.
            .process_group(0)
            // If the run future is dropped mid-flight, tokio kills the main process;
            // `GroupKill` below takes care of the rest of the group.
            .kill_on_drop(true)
            .env("QUORATE_CLUSTER", &settings.cluster)
            .env("QUORATE_NODE", settings.node.to_string())
            .env("QUORATE_ROLE", ctx.role)
            .env("QUORATE_EPOCH", ctx.epoch.to_string())
            .env("QUORATE_REASON", ctx.reason.as_str())
            .env(
                "QUORATE_PREVIOUS_PRIMARY",
                ctx.previous_primary
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            )
            .env("QUORATE_HOOK", kind.as_str())
            .env(
                "QUORATE_PRIMARY",
                primary.map(|n| n.to_string()).unwrap_or_default(),
            )
            .env(
                "QUORATE_PRIMARY_SERVICE",
                primary
                    .and_then(|n| settings.services.get(&n))
                    .map(String::as_str)
                    .unwrap_or_default(),
            );
        for (name, value) in ctx.event {
            cmd.env(name, value);
        }
        if kind == HookKind::Fence {
            cmd.env(
                "QUORATE_FENCE_TARGET",
                ctx.target.map(|n| n.to_string()).unwrap_or_default(),
            );
        } else {
            // Never leak a fence target inherited from the daemon's own environment.
            cmd.env_remove("QUORATE_FENCE_TARGET");
        }
        cmd
    }

    async fn spawn_and_wait<F>(
        &self,
        kind: HookKind,
        path: &Path,
        ctx: HookContext<'_>,
        started: Instant,
        cancel: F,
    ) -> HookOutcome
    where
        F: Future<Output = ()>,
    {
        let mut cmd = self.command(kind, path, ctx);
        // One pipe for stdout and stderr (like `2>&1`): the output reads in the order
        // the hook wrote it, which two pipes read concurrently cannot promise.
        let reader = match output_pipe() {
            Ok((reader, writer_out, writer_err)) => {
                cmd.stdout(writer_out).stderr(writer_err);
                reader
            }
            Err(e) => {
                let message = format!(
                    "could not create a pipe for the {kind} hook's output: {e}: the daemon may \
                     be out of file descriptors; raise its limit (LimitNOFILE in the systemd unit)"
                );
                return HookOutcome::not_run(kind, false, started, message);
            }
        };
        let mut attempt = 0;
        let mut child = loop {
            // Stamped per attempt so the value is as close to the real spawn as we can get.
            cmd.env("QUORATE_MONOTONIC_NS", monotonic_ns().to_string());
            match cmd.spawn() {
                Ok(child) => break child,
                Err(e)
                    if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < SPAWN_BUSY_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(SPAWN_BUSY_BACKOFF).await;
                }
                Err(e) => {
                    return HookOutcome::not_run(kind, false, started, spawn_error(kind, path, &e))
                }
            }
        };
        // The command holds our copies of the pipe's write end: drop them now, or the
        // reader would never see end-of-file.
        drop(cmd);
        // The group id equals the main process id (process_group(0)). Refuse anything
        // that is not a plain positive pid: killpg(0 or 1) would hit us or everyone.
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .filter(|&pid| pid > 1);
        let mut group = GroupKill { pgid, armed: true };
        let settings = self.settings();
        let mut capture = Capture::new(settings.max_output_bytes);

        let deadline = tokio::time::Instant::from_std(started) + settings.timeout;
        let supervised = supervise(
            &mut child,
            reader,
            &mut group,
            deadline,
            cancel,
            &mut capture,
        )
        .await;

        let exit_code = supervised.status.and_then(|s| s.code());
        let signal = supervised.status.and_then(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.signal()
        });
        let ok = !supervised.timed_out && !supervised.cancelled && exit_code == Some(0);
        let mut output = capture.finish();
        if supervised.output_abandoned {
            output.push_str(
                "\n[quorate: stopped reading output: the hook exited but left processes \
                 that still hold its stdout/stderr; redirect a daemon's output when the \
                 hook starts one]\n",
            );
        }
        if let Some(note) = supervised.note {
            output.push_str(&note);
        }
        HookOutcome {
            kind,
            ok,
            exit_code,
            signal,
            timed_out: supervised.timed_out,
            cancelled: supervised.cancelled,
            duration: started.elapsed(),
            output,
        }
    }

    fn log(&self, ctx: HookContext<'_>, outcome: &HookOutcome) {
        macro_rules! hook_event {
            ($level:ident, $msg:expr) => {
                tracing::$level!(
                    target: "quorate::hook",
                    hook = outcome.kind.as_str(),
                    node = self.settings().node,
                    epoch = ctx.epoch.get(),
                    exit = %exit_label(outcome),
                    duration_ms = u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
                    reason = ctx.reason.as_str(),
                    role = ctx.role,
                    output = %outcome.output,
                    "{}",
                    $msg
                )
            };
        }
        let message = outcome.describe();
        if !outcome.ok {
            hook_event!(warn, message);
        } else if outcome.kind == HookKind::Monitor {
            // The monitor runs every few hundred ms: only failures are news.
            hook_event!(debug, message);
        } else {
            hook_event!(info, message);
        }
    }
}

fn exit_label(outcome: &HookOutcome) -> String {
    if outcome.timed_out {
        "timeout".to_string()
    } else if outcome.cancelled {
        "cancelled".to_string()
    } else if let Some(code) = outcome.exit_code {
        code.to_string()
    } else if let Some(signal) = outcome.signal {
        format!("signal {signal}")
    } else {
        "not run".to_string()
    }
}

/// Why `path` cannot be run as the `kind` hook, with the fix; `None` when it can.
fn problem_with(
    kind: HookKind,
    path: &Path,
    meta: io::Result<std::fs::Metadata>,
) -> Option<String> {
    let shown = path.display();
    match meta {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(format!(
            "{kind} hook {shown} does not exist: create it (and run `chmod +x {shown}`), \
             or fix the {kind} hook path in the [resource] config"
        )),
        Err(e) => Some(format!(
            "cannot read {kind} hook {shown}: {e}: check the path and the permissions of \
             its directories"
        )),
        Ok(m) if !m.is_file() => Some(format!(
            "{kind} hook {shown} is not a regular file: point the {kind} hook in the \
             [resource] config at an executable script"
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some(format!(
            "{kind} hook {shown} is not executable: run `chmod +x {shown}`"
        )),
        Ok(_) => None,
    }
}

fn spawn_error(kind: HookKind, path: &Path, e: &io::Error) -> String {
    let shown = path.display();
    let fix = match e.raw_os_error() {
        Some(libc::EACCES) => format!(
            "run `chmod +x {shown}` and make sure the daemon's user may read it and its directories"
        ),
        Some(libc::ENOEXEC) => {
            "give the script an interpreter line as its first line, such as #!/bin/sh".to_string()
        }
        Some(libc::ENOENT) => {
            "the file or its #! interpreter does not exist: check both paths".to_string()
        }
        Some(libc::ETXTBSY) => {
            "the file is still open for writing (being edited or copied): retry when it is closed"
                .to_string()
        }
        _ => "check the file and the daemon's limits (processes, open files)".to_string(),
    };
    format!("could not start {kind} hook {shown}: {e}: {fix}")
}

/// Kills the hook's process group when dropped while armed: the path taken when the
/// run future is cancelled (caller dropped it, monitor stopped) before the hook ended.
struct GroupKill {
    pgid: Option<i32>,
    armed: bool,
}

impl GroupKill {
    fn kill_now(&self) {
        let Some(pgid) = self.pgid else { return };
        // SAFETY: killpg only sends a signal; `pgid` is > 1 (checked at construction)
        // and names the group created for this hook, whose leader we have not reaped
        // yet (callers disarm right after reaping), so the id cannot have been reused.
        let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(target: "quorate::hook", pgid, "could not kill hook process group: {err}");
            }
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if self.armed {
            self.kill_now();
        }
    }
}

struct Supervised {
    status: Option<ExitStatus>,
    timed_out: bool,
    cancelled: bool,
    output_abandoned: bool,
    /// Something went wrong around the process itself (wait failed, could not reap).
    note: Option<String>,
}

enum Waited {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// Waits for the hook's main process while reading its output, enforcing `deadline`
/// and honouring `cancel`; on either it kills the group and reaps the main process.
async fn supervise<F>(
    child: &mut Child,
    reader: pipe::Receiver,
    group: &mut GroupKill,
    deadline: tokio::time::Instant,
    cancel: F,
    capture: &mut Capture,
) -> Supervised
where
    F: Future<Output = ()>,
{
    let reading = read_output(reader, capture);
    tokio::pin!(reading);
    tokio::pin!(cancel);
    let mut reading_done = false;

    let waited = {
        let wait = child.wait();
        tokio::pin!(wait);
        loop {
            tokio::select! {
                res = &mut wait => break Waited::Exited(res),
                () = &mut reading, if !reading_done => reading_done = true,
                () = tokio::time::sleep_until(deadline) => break Waited::TimedOut,
                () = &mut cancel => break Waited::Cancelled,
            }
        }
    };

    let mut note = None;
    let (status, timed_out, cancelled) = match waited {
        Waited::Exited(Ok(status)) => (Some(status), false, false),
        Waited::Exited(Err(e)) => {
            kill_hook(child, group);
            note = Some(format!(
                "\n[quorate: waiting for the hook failed ({e}); its process group was killed]\n"
            ));
            (reap(child, &mut note).await, false, false)
        }
        Waited::TimedOut => {
            kill_hook(child, group);
            (reap(child, &mut note).await, true, false)
        }
        Waited::Cancelled => {
            kill_hook(child, group);
            note = Some(
                "\n[quorate: the run was cancelled (daemon stopping or run no longer wanted); \
                 the hook's process group was killed]\n"
                    .to_string(),
            );
            (reap(child, &mut note).await, false, true)
        }
    };
    // The main process is reaped (or given up on): its pid may be reused from now on,
    // so the group must never be signalled again. Processes it left behind on a
    // successful exit are the hook's business (it may have started a daemon).
    group.armed = false;

    let mut output_abandoned = false;
    if !reading_done
        && tokio::time::timeout(OUTPUT_DRAIN_GRACE, &mut reading)
            .await
            .is_err()
    {
        output_abandoned = true;
    }
    Supervised {
        status,
        timed_out,
        cancelled,
        output_abandoned,
        note,
    }
}

/// SIGKILLs the hook's process group, and the main process directly as well in case
/// the group id was unusable (belt and braces: both are no-ops on the dead).
fn kill_hook(child: &mut Child, group: &GroupKill) {
    group.kill_now();
    // An error here means the process is already gone, which is what we want.
    let _ = child.start_kill();
}

async fn reap(child: &mut Child, note: &mut Option<String>) -> Option<ExitStatus> {
    match tokio::time::timeout(REAP_AFTER_KILL_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            *note = Some(format!(
                "\n[quorate: could not reap the killed hook: {e}]\n"
            ));
            None
        }
        Err(_) => {
            *note = Some(format!(
                "\n[quorate: the killed hook did not exit within {} s (stuck in the kernel?); \
                 it is reaped in the background]\n",
                REAP_AFTER_KILL_TIMEOUT.as_secs()
            ));
            None
        }
    }
}

/// Creates the output pipe: a non-blocking tokio reader for us, and two blocking
/// write ends (stdout, stderr) for the hook. All ends are close-on-exec except as the
/// hook's fds 1 and 2; the write ends must stay blocking, as the hook expects.
fn output_pipe() -> io::Result<(pipe::Receiver, Stdio, Stdio)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two c_ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let write_err = write_end.try_clone()?;
    let reader = pipe::Receiver::from_owned_fd(read_end)?;
    Ok((reader, Stdio::from(write_end), Stdio::from(write_err)))
}

/// Reads the hook's output into `capture` until end-of-file (every holder of the write
/// end has closed it) or a read error. Keeps reading past the cap (discarding) so the
/// hook never blocks on a full pipe.
async fn read_output(mut reader: pipe::Receiver, capture: &mut Capture) {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => capture.push(&buf[..n]),
        }
    }
}

/// Bounded output: keeps the first half and the last half of `cap` bytes, because the
/// start says what the hook was doing and the end usually says why it failed.
struct Capture {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    omitted: u64,
}

impl Capture {
    fn new(cap: usize) -> Self {
        let tail_cap = cap / 2;
        let head_cap = cap - tail_cap;
        Capture {
            head_cap,
            tail_cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            omitted: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.head_cap - self.head.len();
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(to_head);
        self.tail.extend(rest);
        let excess = self.tail.len().saturating_sub(self.tail_cap);
        if excess > 0 {
            self.tail.drain(..excess);
            self.omitted = self
                .omitted
                .saturating_add(u64::try_from(excess).unwrap_or(u64::MAX));
        }
    }

    fn finish(self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.omitted > 0 {
            out.push_str(&format!(
                "\n[quorate: {} bytes of hook output omitted here; the limit is {} bytes (max_output_bytes)]\n",
                self.omitted,
                self.head_cap + self.tail_cap
            ));
        }
        let tail: Vec<u8> = self.tail.into_iter().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests;
