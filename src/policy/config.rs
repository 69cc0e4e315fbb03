//! The policy's own view of the configuration. The config module converts the TOML file
//! into this (names match the config keys where one exists).

use std::time::Duration;

use thiserror::Error;

use crate::types::NodeId;

/// Most local restarts `local_restarts` may allow within `restart_window` (the restart
/// timestamps are kept in memory; this bounds that list).
pub const MAX_LOCAL_RESTARTS: u32 = 100;

/// Most monitor passes `verify_checks` may demand.
pub const MAX_VERIFY_CHECKS: u32 = 10_000;

/// What to do when the previous primary cannot be confirmed stopped (safety rule 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FencingMode {
    /// Do not promote until the fence hook succeeded (retry with backoff).
    Required,
    /// Run the fence hook, then promote whatever it returned.
    BestEffort,
    /// Never fence.
    Off,
}

/// Whether quorate starts a failback on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailbackMode {
    /// Only `quorate failback` starts one (default).
    Manual,
    /// The leader starts one when home has stayed eligible and in sync for `delay`
    /// (no failback to a flapping node).
    Auto { delay: Duration },
}

/// How a verified failback ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailbackCommit {
    /// Commit as soon as verification passed.
    Auto,
    /// Wait in AwaitingCommit for `quorate failback commit` (or undo).
    Manual,
}

/// Default of [`PolicyConfig::cutover_max_lag`]: about one replication batch.
pub const CUTOVER_MAX_LAG: u64 = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// How long the primary may act without a quorum acknowledgement (safety rules 1, 3).
    /// Config validation keeps it below `election_timeout_min`.
    pub lease: Duration,
    /// A candidate further behind the leader's log than this (in entries) is not eligible.
    pub max_lag_on_failover: u64,
    /// A candidate whose service position is further behind the most advanced one known
    /// (bytes) is not eligible ([`crate::rules::candidate::ServiceStanding`]).
    pub max_service_lag_bytes: u64,
    /// A failback leaves Syncing (and pauses writes) only once home is within this many
    /// entries: the cut-over then replicates only these with writes paused, so the pause
    /// does not grow with the backlog home had to catch up.
    pub cutover_max_lag: u64,
    pub fencing: FencingMode,
    /// Local restarts (demote + promote on the same node) allowed within `restart_window`
    /// before the primary hands over to another node.
    pub local_restarts: u32,
    pub restart_window: Duration,
    /// Consecutive monitor failures on the primary that count as a resource failure.
    pub failure_threshold: u32,
    /// Deadline for a leadership transfer (including the target's final catch-up) and for
    /// the destination of a switchover to catch up while writes are paused.
    pub transfer_timeout: Duration,
    /// First delay between fence attempts (doubles per attempt, capped at 8×).
    pub fence_retry_backoff: Duration,
    /// Delay before retrying a failed demote or rejoin hook.
    pub hook_retry_backoff: Duration,
    /// A proposal with no answer after this long is forgotten (its command, if it commits
    /// later, is still checked by apply).
    pub proposal_timeout: Duration,
    /// The node the operator wants as primary (`home`).
    pub preferred_primary: Option<NodeId>,
    /// Monitor passes needed to verify a failback...
    pub verify_checks: u32,
    /// Whether a monitor hook is configured. Without one there is nothing to count during
    /// failback verification: it passes once home acts as primary (its promote hook
    /// succeeded), instead of timing out and undoing every failback.
    pub monitor_configured: bool,
    /// Whether a snapshot action is configured: a failback takes a protective snapshot on
    /// the current primary before its cut-over (a failed one aborts the failback).
    pub snapshot_configured: bool,
    /// Whether a verify action is configured: after the monitor checks, home's data is
    /// verified before the failback may commit (a failed verify undoes it).
    pub verify_configured: bool,
    /// ...within this time, else the failback is undone.
    pub verify_timeout: Duration,
    pub failback: FailbackMode,
    pub failback_commit: FailbackCommit,
    /// How long a primary whose lease lapsed (no quorum acknowledgement within `lease`)
    /// waits, not acting, for quorum acknowledgements to come back in the same term before
    /// it runs its demote hook. A follower's slow fsync holds back its heartbeat answers
    /// and lapses a healthy primary for a few ms; within this grace that costs a write
    /// pause (`/primary` 503) instead of a demote/promote cycle of the service. Counted from
    /// the moment the lease ran out, so `lease + lapse_grace + clock-drift margin` stays
    /// below `election_timeout_min`: the demote hook still starts before any other node
    /// can be elected (rule 3). Zero: demote at once.
    pub lapse_grace: Duration,
    /// How long a stopping primary may spend handing over before it just demotes.
    pub shutdown_timeout: Duration,
    /// Zero-loss failover (synchronous replication: `[postgres] synchronous = "quorum"` or
    /// `"strict"`): an automatic failover promotes only a candidate whose report was taken
    /// after the primary was lost, and among those only the most advanced
    /// ([`crate::rules::restrict_to_final_most_advanced`]).
    pub zero_loss_failover: bool,
    /// How long a zero-loss failover waits for the candidates' final reports; after it, a
    /// candidate still silent stays excluded and the failover goes ahead without it.
    pub final_report_wait: Duration,
}

impl Default for PolicyConfig {
    /// Values for the `lan` profile; the config module normally fills every field.
    fn default() -> Self {
        PolicyConfig {
            lease: Duration::from_millis(120),
            max_lag_on_failover: 1_000,
            max_service_lag_bytes: 1024 * 1024,
            cutover_max_lag: CUTOVER_MAX_LAG,
            fencing: FencingMode::Off,
            local_restarts: 1,
            restart_window: Duration::from_secs(600),
            failure_threshold: 3,
            transfer_timeout: Duration::from_millis(500),
            fence_retry_backoff: Duration::from_secs(1),
            hook_retry_backoff: Duration::from_secs(1),
            proposal_timeout: Duration::from_secs(2),
            preferred_primary: None,
            verify_checks: 3,
            monitor_configured: true,
            snapshot_configured: false,
            verify_configured: false,
            verify_timeout: Duration::from_secs(30),
            failback: FailbackMode::Manual,
            failback_commit: FailbackCommit::Auto,
            lapse_grace: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
            zero_loss_failover: false,
            final_report_wait: Duration::from_secs(5),
        }
    }
}

/// A policy setting that cannot work.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
#[error("policy setting `{key}` {problem}; {fix}")]
pub struct PolicyConfigError {
    pub key: &'static str,
    pub problem: String,
    pub fix: String,
}

impl PolicyConfig {
    /// Checks what the policy itself relies on (the config module checks timings against
    /// Raft's election timeout).
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        let nonzero = |key: &'static str, d: Duration| {
            if d.is_zero() {
                Err(PolicyConfigError {
                    key,
                    problem: "is zero".to_string(),
                    fix: "set a positive duration".to_string(),
                })
            } else {
                Ok(())
            }
        };
        nonzero("lease", self.lease)?;
        nonzero("transfer_timeout", self.transfer_timeout)?;
        nonzero("fence_retry_backoff", self.fence_retry_backoff)?;
        nonzero("hook_retry_backoff", self.hook_retry_backoff)?;
        nonzero("proposal_timeout", self.proposal_timeout)?;
        nonzero("verify_timeout", self.verify_timeout)?;
        nonzero("final_report_wait", self.final_report_wait)?;
        if self.failure_threshold == 0 {
            return Err(PolicyConfigError {
                key: "failure_threshold",
                problem: "is 0".to_string(),
                fix: "set at least 1 (consecutive monitor failures)".to_string(),
            });
        }
        if self.local_restarts > MAX_LOCAL_RESTARTS {
            return Err(PolicyConfigError {
                key: "local_restarts",
                problem: format!(
                    "is {}, above the limit of {MAX_LOCAL_RESTARTS}",
                    self.local_restarts
                ),
                fix: format!("set at most {MAX_LOCAL_RESTARTS}"),
            });
        }
        if self.verify_checks == 0 || self.verify_checks > MAX_VERIFY_CHECKS {
            return Err(PolicyConfigError {
                key: "verify_checks",
                problem: format!("is {}", self.verify_checks),
                fix: format!("set between 1 and {MAX_VERIFY_CHECKS}"),
            });
        }
        Ok(())
    }
}
