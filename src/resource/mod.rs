//! The IO edge that runs the operator's scripts: the hook runner (promote, demote,
//! monitor, fence, rejoin) and the monitor loop that turns monitor results into the
//! node's [`ResourceHealth`](crate::types::ResourceHealth).
//!
//! Everything that decides *when* to run a hook lives elsewhere (policy, executor);
//! this module only runs them safely: bounded in time and output, in their own
//! process group so a timeout kills the whole tree, never blocking the runtime.
//! The one piece of logic here, counting consecutive monitor failures, is pure
//! ([`MonitorTracker`]) so it can be tested without processes.

pub mod agent;
pub mod hooks;
pub mod monitor;
pub mod postgres;
pub mod report;

pub use agent::{Agent, AgentFuture};
pub use hooks::{
    monotonic_ns, HookContext, HookCounts, HookKind, HookOutcome, HookReason, HookRunner,
    HookSettings, HookSettingsError, HookStats, LastAction, DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES_LIMIT, RECENT_ACTIONS_LIMIT,
};
pub use monitor::{
    spawn_monitor, MonitorError, MonitorHandle, MonitorResult, MonitorRole, MonitorTracker,
    MonitorTuner, MonitorTuning, MAX_FAILURE_THRESHOLD, MIN_MONITOR_INTERVAL,
    MONITOR_RESULTS_CAPACITY,
};
