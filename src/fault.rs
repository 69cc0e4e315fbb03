//! Test-only fault switches: planted bugs and stalls that prove the tests and the chaos
//! checkers can fail. Each switch is a `QUORATE_TEST_*` environment variable, read once.
//!
//! They exist only in builds with the `fault-injection` cargo feature, which only the chaos
//! member enables (so `cargo test --workspace` has them and `cargo build --release -p quorate`
//! does not: without the feature every switch below is a constant "off" and no variable name
//! is even in the binary; `.ci/run` checks that). A build that has them and runs with one
//! armed logs an error at start and lists it in `/v1/status` (`fault_injection_armed`).

use std::time::Duration;

/// PUT/DELETE answer 200 before the write is committed (`=1`).
#[cfg(feature = "fault-injection")]
const ACK_BEFORE_COMMIT: &str = "QUORATE_TEST_ACK_BEFORE_COMMIT";
/// The executor loop stalls (stops making progress) this many ms after start.
#[cfg(feature = "fault-injection")]
const STALL_EXECUTOR_AFTER_MS: &str = "QUORATE_TEST_STALL_EXECUTOR_AFTER_MS";
/// The executor loop panics once the file this names exists.
#[cfg(feature = "fault-injection")]
const PANIC_EXECUTOR_IF_FILE: &str = "QUORATE_TEST_PANIC_EXECUTOR_IF_FILE";

#[cfg(feature = "fault-injection")]
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// PUT/DELETE acknowledge before commit.
pub fn ack_before_commit() -> bool {
    #[cfg(feature = "fault-injection")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| var(ACK_BEFORE_COMMIT).as_deref() == Some("1"))
    }
    #[cfg(not(feature = "fault-injection"))]
    false
}

/// How long after start the executor loop stalls on purpose.
pub fn stall_executor_after() -> Option<Duration> {
    #[cfg(feature = "fault-injection")]
    {
        var(STALL_EXECUTOR_AFTER_MS)?
            .trim()
            .parse()
            .ok()
            .map(Duration::from_millis)
    }
    #[cfg(not(feature = "fault-injection"))]
    None
}

/// The file whose appearance makes the executor loop panic.
pub fn panic_executor_if_file() -> Option<std::path::PathBuf> {
    #[cfg(feature = "fault-injection")]
    {
        var(PANIC_EXECUTOR_IF_FILE).map(std::path::PathBuf::from)
    }
    #[cfg(not(feature = "fault-injection"))]
    None
}

/// The armed switches (`NAME=value`), empty when none is (always, without the feature).
pub fn armed() -> Vec<String> {
    #[cfg(feature = "fault-injection")]
    {
        [
            ACK_BEFORE_COMMIT,
            STALL_EXECUTOR_AFTER_MS,
            PANIC_EXECUTOR_IF_FILE,
        ]
        .iter()
        .filter_map(|name| var(name).map(|v| format!("{name}={v}")))
        .collect()
    }
    #[cfg(not(feature = "fault-injection"))]
    Vec::new()
}

/// Logs an error naming every armed switch (once, at start).
pub fn log_if_armed() {
    let armed = armed();
    if !armed.is_empty() {
        tracing::error!(
            "fault injection armed: {}; this binary must not run in production \
             (it was built with the test-only `fault-injection` feature)",
            armed.join(", ")
        );
    }
}
