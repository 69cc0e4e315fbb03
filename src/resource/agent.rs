//! Resource agents: the set of actions quorate runs on the protected service (promote,
//! demote, follow, rejoin, monitor, fence, notify; snapshot and verify come with data
//! failback).
//!
//! The daemon (executor, monitor loop, API) talks to the service only through [`Agent`]. The
//! `exec` agent is [`HookRunner`]: one operator executable per action, as configured in
//! `[resource]`; an action with no executable is skipped (succeeds), except fence, whose
//! absence the caller judges. Built-in agents (PostgreSQL next) implement the same trait and
//! return the same [`HookOutcome`], whose output's last line may carry the service report
//! ([`crate::resource::report`]).

use std::future::Future;
use std::pin::Pin;

use super::hooks::{HookContext, HookKind, HookOutcome, HookRunner, HookStats};
use crate::types::NodeId;

/// A boxed future an agent returns (the trait is used as `dyn Agent`).
pub type AgentFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The actions on the protected service. Implementations never panic on anything the
/// service does: a failure is an outcome that is not ok, with a message naming the fix.
pub trait Agent: Send + Sync + std::fmt::Debug {
    /// Which agent this is: "exec" for operator executables, else the built-in's name.
    fn name(&self) -> &'static str;

    /// Whether the agent does anything for `action`. An action it does not do is skipped
    /// (reported as ok) except fence, which the policy's caller must judge.
    fn is_configured(&self, action: HookKind) -> bool;

    /// Runs `action` with `ctx` and waits for it (at most the agent's timeout). When
    /// `cancel` resolves first the action is stopped (for the exec agent: its process group
    /// killed) and the outcome says `cancelled`.
    fn perform<'a>(
        &'a self,
        action: HookKind,
        ctx: HookContext<'a>,
        cancel: AgentFuture<'a, ()>,
    ) -> AgentFuture<'a, HookOutcome>;

    /// The committed primary as the executor last saw it, for actions whose context names
    /// none (the monitor loop's).
    fn set_primary(&self, primary: Option<NodeId>);

    /// Run, failure and timeout counters, the last action, dropped notifications.
    fn stats(&self) -> &HookStats;

    /// Problems with the agent's configuration (missing executables, ...), one message
    /// each naming the fix; empty when every action can run.
    fn check(&self) -> Vec<String>;

    /// This node lost its primary (zero-loss failover): stop receiving data from it, so the
    /// next report's position is final and the lost primary (if it still runs, its daemon
    /// hung or dead) gets no more acknowledgements from this replica. `Ok(Some(what))` when
    /// something was done; the default does nothing.
    fn detach_from_primary(&self) -> AgentFuture<'_, Result<Option<String>, String>> {
        Box::pin(async { Ok(None) })
    }

    /// The other members that hold a copy of the service and are alive and healthy as the
    /// executor last saw them (for a primary that lists its synchronous standbys); the
    /// default ignores it.
    fn set_healthy_replicas(&self, _replicas: Vec<NodeId>) {}
}

impl dyn Agent {
    /// [`Agent::perform`] without a way to cancel.
    pub async fn run(&self, action: HookKind, ctx: HookContext<'_>) -> HookOutcome {
        self.perform(action, ctx, Box::pin(std::future::pending()))
            .await
    }
}

/// The `exec` agent: operator executables, one per action.
impl Agent for HookRunner {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn is_configured(&self, action: HookKind) -> bool {
        HookRunner::is_configured(self, action)
    }

    fn perform<'a>(
        &'a self,
        action: HookKind,
        ctx: HookContext<'a>,
        cancel: AgentFuture<'a, ()>,
    ) -> AgentFuture<'a, HookOutcome> {
        Box::pin(self.run_cancellable(action, ctx, cancel))
    }

    fn set_primary(&self, primary: Option<NodeId>) {
        HookRunner::set_primary(self, primary);
    }

    fn stats(&self) -> &HookStats {
        HookRunner::stats(self)
    }

    fn check(&self) -> Vec<String> {
        HookRunner::check(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::resource::hooks::tests::write_script;
    use crate::resource::{HookReason, HookSettings, DEFAULT_MAX_OUTPUT_BYTES};
    use crate::types::Epoch;

    fn exec_agent(kind: HookKind, path: &std::path::Path) -> Arc<dyn Agent> {
        let mut paths = std::collections::HashMap::new();
        paths.insert(kind, path.to_path_buf());
        let settings = HookSettings {
            cluster: "c".into(),
            node: 1,
            paths,
            timeout: Duration::from_secs(20),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            services: Default::default(),
        };
        Arc::new(HookRunner::new(settings).expect("valid settings"))
    }

    fn ctx() -> HookContext<'static> {
        HookContext {
            role: "replica",
            epoch: Epoch(3),
            reason: HookReason::Failover,
            previous_primary: None,
            target: None,
            primary: Some(2),
            event: &[],
        }
    }

    #[tokio::test]
    async fn the_exec_agent_runs_configured_actions_and_skips_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = write_script(dir.path(), "follow.sh", "echo following $QUORATE_PRIMARY");
        let agent = exec_agent(HookKind::Follow, &hook);
        assert_eq!(agent.name(), "exec");
        assert!(agent.is_configured(HookKind::Follow));
        assert!(!agent.is_configured(HookKind::Promote));
        let out = agent.run(HookKind::Follow, ctx()).await;
        assert!(out.ok, "{out:?}");
        assert!(out.output.contains("following 2"), "{out:?}");
        let skipped = agent.run(HookKind::Promote, ctx()).await;
        assert!(skipped.ok, "an unconfigured action is skipped: {skipped:?}");
        assert_eq!(agent.stats().get(HookKind::Follow).runs, 1);
        assert!(agent.check().is_empty(), "{:?}", agent.check());
    }

    #[tokio::test]
    async fn the_agent_remembers_its_last_actions_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = write_script(dir.path(), "follow.sh", "exit 0");
        let agent = exec_agent(HookKind::Follow, &hook);
        for _ in 0..crate::resource::RECENT_ACTIONS_LIMIT + 3 {
            assert!(agent.run(HookKind::Follow, ctx()).await.ok);
        }
        let recent = agent.stats().recent_actions();
        assert_eq!(recent.len(), crate::resource::RECENT_ACTIONS_LIMIT);
        assert!(recent.iter().all(|a| a.kind == HookKind::Follow && a.ok));
        assert_eq!(agent.stats().last_action().as_ref(), recent.last());
    }

    #[tokio::test]
    async fn cancelling_an_action_stops_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = write_script(dir.path(), "promote.sh", "sleep 30");
        let agent = exec_agent(HookKind::Promote, &hook);
        let out = agent
            .perform(
                HookKind::Promote,
                ctx(),
                Box::pin(tokio::time::sleep(Duration::from_millis(100))),
            )
            .await;
        assert!(out.cancelled && !out.ok, "{out:?}");
    }
}
