//! Fail-stop for the executor, the loop that enforces safety rules 1 and 3 (a primary that
//! lost its quorum demotes itself within its lease). If that loop ends or panics while the
//! process lives on, the node keeps its sockets open, may go on leading Raft and answering
//! /health, and nobody enforces the lease any more. So: the loop holds an [`AliveGuard`]
//! (`loops_alive`, which /health reports, goes false the moment the loop is gone, however it
//! went), and the daemon exits non-zero when the loop ends without a shutdown request (see
//! `RunningNode::executor_ended`), so that systemd restarts it and the other nodes take over.
//! Release builds also abort on any panic (`panic = "abort"` in Cargo.toml).

use tokio::sync::watch;

/// Exit status of a daemon whose executor ended without a shutdown request (EX_SOFTWARE).
pub const EXIT_EXECUTOR_DIED: u8 = 70;

/// Sets `alive` to false when dropped: on a normal return, on a panic (unwinding drops the
/// loop's locals) and when the task is cancelled.
pub struct AliveGuard<'a> {
    alive: &'a watch::Sender<bool>,
}

impl<'a> AliveGuard<'a> {
    pub fn new(alive: &'a watch::Sender<bool>) -> Self {
        alive.send_replace(true);
        AliveGuard { alive }
    }
}

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.alive.send_replace(false);
    }
}

/// Logs every panic as an error through tracing (so it reaches the journal with the node's
/// fields) before the default hook prints it and, in a release build, the process aborts.
pub fn log_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("panic: {info}");
        default_hook(info);
    }));
}

/// Why the executor is gone although nobody asked the daemon to stop.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorDied {
    #[error(
        "the executor (the loop that enforces the primary lease) panicked: {0}; exiting so that \
         the other nodes take over and systemd restarts this one (this is a bug: report it \
         with this log)"
    )]
    Panicked(String),
    #[error(
        "the executor (the loop that enforces the primary lease) ended without a shutdown \
         request{0}; exiting so that the other nodes take over and systemd restarts this one \
         (this is a bug: report it with this log)"
    )]
    Ended(&'static str),
}

impl ExecutorDied {
    /// Classifies how the executor's task ended (`Ok` or a join error).
    pub fn from_join(res: Result<(), tokio::task::JoinError>) -> ExecutorDied {
        match res {
            Ok(()) => ExecutorDied::Ended(""),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_string());
                ExecutorDied::Panicked(msg)
            }
            Err(_) => ExecutorDied::Ended(" (its task was cancelled)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard is what makes /health go red: a loop that panics while holding it leaves
    /// `alive` false, as does one that returns.
    #[tokio::test]
    async fn the_guard_clears_alive_when_the_loop_panics_or_returns() {
        let (alive, rx) = watch::channel(true);
        let alive = std::sync::Arc::new(alive);
        let a = alive.clone();
        let task = tokio::spawn(async move {
            let _g = AliveGuard::new(&a);
            tokio::task::yield_now().await;
            panic!("boom");
        });
        let res = task.await;
        assert!(!*rx.borrow(), "alive still true after the loop panicked");
        match ExecutorDied::from_join(res) {
            ExecutorDied::Panicked(m) => assert_eq!(m, "boom"),
            other => panic!("expected Panicked, got {other:?}"),
        }

        let a = alive.clone();
        let task = tokio::spawn(async move {
            let _g = AliveGuard::new(&a);
            assert!(*a.borrow());
        });
        let res = task.await;
        assert!(!*rx.borrow(), "alive still true after the loop returned");
        assert!(matches!(
            ExecutorDied::from_join(res),
            ExecutorDied::Ended("")
        ));
    }
}
