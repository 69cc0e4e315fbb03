//! Supervised failback: verify, commit, undo.

use super::*;
use crate::types::LogIndex;

/// Node 1 (home) is leader and primary after the cut-over of a failback from node 2;
/// the operation is in Verifying.
fn home_verifying(auto_commit: bool) -> H {
    let h = home_verifying_with(cfg(), auto_commit);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::Verifying)
    );
    h
}

fn home_verifying_with(config: PolicyConfig, auto_commit: bool) -> H {
    let mut h = H::new(1, config);
    h.set_leader(Some(2));
    h.settle();
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 1,
            epoch: Epoch(1),
            reason: PromoteReason::Startup,
            previous: None,
            home: None,
            term: Term(1),
            at_unix_ms: 1,
        }),
    );
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 2,
            epoch: Epoch(2),
            reason: PromoteReason::Failover,
            previous: Some(1),
            home: None,
            term: Term(2),
            at_unix_ms: 2,
        }),
    );
    commit_direct(
        &mut h,
        Command::BeginOperation {
            kind: OperationKind::Failback,
            from: 2,
            to: 1,
            scheduled_at_unix_ms: None,
            auto_commit,
            at_unix_ms: 3,
        },
    );
    let id = h.state.operation.as_ref().map(|o| o.id).unwrap_or(0);
    commit_direct(
        &mut h,
        Command::AdvanceOperation {
            id,
            from_phase: Phase::Syncing,
            to_phase: Phase::CuttingOver(Step::Pausing),
            reason: None,
            at_unix_ms: 4,
        },
    );
    commit_direct(
        &mut h,
        Command::Demote(Demote {
            node: 2,
            epoch: Epoch(2),
            reason: DemoteReason::Failback,
            term: Term(2),
            at_unix_ms: 5,
        }),
    );
    h.settle(); // rejoin etc.
    h.set_leader(Some(1));
    h.settle();
    assert!(
        h.state.is_primary(1, Epoch(3)),
        "setup: {:?}",
        h.state.primary
    );
    h
}

#[test]
fn failback_commits_after_verify_checks_monitor_passes() {
    let mut h = home_verifying(true);
    h.monitor(true, 1);
    assert!(proposals(&h.step()).is_empty());
    h.monitor(true, 1);
    let acts = h.step();
    assert!(proposals(&acts).into_iter().any(|c| matches!(
        c,
        Command::EndOperation {
            outcome: Outcome::Committed,
            ..
        }
    )));
    h.commit(&acts);
    assert_eq!(h.state.failed_over, None);
}

#[test]
fn failback_without_a_monitor_hook_commits_once_home_acts_as_primary() {
    let mut h = home_verifying_with(
        PolicyConfig {
            monitor_configured: false,
            ..cfg()
        },
        true,
    );
    // Nothing to count: the failback committed as soon as home acted as primary.
    h.settle();
    assert_eq!(h.state.operation, None);
    assert_eq!(h.state.failed_over, None);
    assert!(h.state.is_primary(1, Epoch(3)));
}

#[test]
fn failback_without_auto_commit_waits_for_the_operator() {
    let mut h = home_verifying(false);
    h.monitor(true, 2);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::AwaitingCommit)
    );
    assert!(reports(&h.step())
        .iter()
        .any(|n| matches!(n, StatusNote::AwaitingCommit { .. })));
    let c =
        h.p.plan_request(&OperatorRequest::FailbackCommit, &h.inputs(), h.now);
    assert!(matches!(
        c,
        Ok(Command::EndOperation {
            outcome: Outcome::Committed,
            ..
        })
    ));
    let u =
        h.p.plan_request(&OperatorRequest::FailbackUndo, &h.inputs(), h.now);
    assert!(matches!(
        u,
        Ok(Command::AdvanceOperation {
            to_phase: Phase::Undoing(Step::Pausing),
            ..
        })
    ));
}

/// Issue 13: results the executor lost to a lagging monitor broadcast count as a failure,
/// so a verification that may have missed a failure undoes instead of committing.
#[test]
fn a_monitor_lag_during_verification_undoes_the_failback() {
    let mut h = home_verifying(true);
    h.monitor(true, 1);
    let lag = Err(tokio::sync::broadcast::error::RecvError::Lagged(5));
    if let Some(ok) = crate::resource::monitor::received_ok(&lag) {
        h.p.observe(Event::MonitorResult { ok }, h.now);
    }
    h.monitor(true, 1);
    let acts = h.step();
    let cmds = proposals(&acts);
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::AdvanceOperation {
                to_phase: Phase::Undoing(Step::Pausing),
                reason: Some(r),
                ..
            } if r.contains("monitor failed")
        )),
        "{cmds:?}"
    );
    assert!(
        !cmds.iter().any(|c| matches!(
            c,
            Command::EndOperation {
                outcome: Outcome::Committed,
                ..
            }
        )),
        "{cmds:?}"
    );
}

#[test]
fn failed_verification_undoes_automatically_and_says_why() {
    let mut h = home_verifying(true);
    h.monitor(true, 1);
    h.monitor(false, 1);
    let acts = h.step();
    let reason = proposals(&acts).into_iter().find_map(|c| match c {
        Command::AdvanceOperation {
            to_phase: Phase::Undoing(Step::Pausing),
            reason,
            ..
        } => reason.clone(),
        _ => None,
    });
    assert!(reason.is_some_and(|r| r.contains("monitor failed")));
    h.commit(&acts);
    // Undo: home demotes, then leadership goes back to node 2.
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Failback)
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(transfer(&h.step()), Some(2));
}

#[test]
fn verification_times_out_into_undo() {
    let mut h = home_verifying(true);
    h.monitor(true, 1);
    h.advance(5_000);
    let acts = h.step();
    let undo = proposals(&acts).into_iter().any(|c| matches!(c, Command::AdvanceOperation { to_phase: Phase::Undoing(_), reason: Some(r), .. } if r.contains("timed out")));
    assert!(undo, "{acts:?}");
}

#[test]
fn failback_request_needs_failed_over_and_an_eligible_home() {
    let mut h = H::primary(1, cfg());
    assert!(matches!(
        h.p.plan_request(
            &OperatorRequest::Failback {
                no_commit: false,
                to: None
            },
            &h.inputs(),
            h.now
        ),
        Err(Refusal::NotFailedOver)
    ));
    // Fail over from 2 (home) to 1: now failed over.
    let mut h2 = H::new(1, cfg());
    h2.settle_with_primary_history();
    if let Some(o) = h2.peers.get_mut(&2) {
        o.alive = false;
    }
    assert!(matches!(
        h2.p.plan_request(
            &OperatorRequest::Failback {
                no_commit: false,
                to: None
            },
            &h2.inputs(),
            h2.now
        ),
        Err(Refusal::HomeIneligible { home: 2, .. })
    ));
    if let Some(o) = h2.peers.get_mut(&2) {
        o.alive = true;
    }
    h2.raft.matched.insert(2, LogIndex(0)); // far behind is fine: Syncing waits
    let r = h2.p.plan_request(
        &OperatorRequest::Failback {
            no_commit: true,
            to: None,
        },
        &h2.inputs(),
        h2.now,
    );
    assert!(
        matches!(
            r,
            Ok(Command::BeginOperation {
                kind: OperationKind::Failback,
                from: 1,
                to: 2,
                auto_commit: false,
                ..
            })
        ),
        "{r:?}"
    );
    h.quorum = true;
}

impl H {
    /// Node 2 was primary, then this node (1) took over by failover and is acting.
    fn settle_with_primary_history(&mut self) {
        commit_direct(
            self,
            Command::Promote(Promote {
                node: 2,
                epoch: Epoch(1),
                reason: PromoteReason::Startup,
                previous: None,
                home: None,
                term: Term(1),
                at_unix_ms: 1,
            }),
        );
        self.peers.insert(
            2,
            PeerObs {
                alive: true,
                ..PeerObs::default()
            },
        );
        // Node 2 drops out; node 1 leads.
        if let Some(o) = self.peers.get_mut(&2) {
            o.alive = false;
        }
        self.settle();
        // Home is back, and its monitor passed.
        if let Some(o) = self.peers.get_mut(&2) {
            o.alive = true;
            o.health = ResourceHealth::Healthy;
        }
        assert!(
            self.state.is_primary(1, Epoch(2)),
            "setup: {:?}",
            self.state.primary
        );
        assert_eq!(self.state.failed_over.as_ref().map(|f| f.home), Some(2));
    }
}

#[test]
fn failback_syncing_waits_for_home_to_catch_up_then_cuts_over() {
    let mut h = H::new(1, cfg());
    h.settle_with_primary_history();
    h.raft.matched.insert(2, LogIndex(0));
    let begin = h.p.plan_request(
        &OperatorRequest::Failback {
            no_commit: false,
            to: None,
        },
        &h.inputs(),
        h.now,
    );
    let Ok(begin) = begin else {
        panic!("{begin:?}")
    };
    commit_direct(&mut h, begin);
    h.p.cfg.max_lag_on_failover = 2;
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    h.raft.matched.insert(2, LogIndex(LOG - 2));
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::CuttingOver(Step::Pausing))
    );
}

#[test]
fn failback_pauses_writes_only_once_home_is_within_the_cutover_lag() {
    let mut h = H::new(1, cfg());
    h.settle_with_primary_history();
    h.raft.matched.insert(2, LogIndex(0));
    let begin = h.p.plan_request(
        &OperatorRequest::Failback {
            no_commit: false,
            to: None,
        },
        &h.inputs(),
        h.now,
    );
    let Ok(begin) = begin else {
        panic!("{begin:?}")
    };
    commit_direct(&mut h, begin);
    h.p.cfg.max_lag_on_failover = 8;
    h.p.cfg.cutover_max_lag = 3;
    // Eligible for a failover (within max_lag) but not close enough to pause writes.
    h.raft.matched.insert(2, LogIndex(LOG - 6));
    assert!(proposals(&h.step()).is_empty());
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::Syncing)
    );
    h.raft.matched.insert(2, LogIndex(LOG - 4));
    assert!(proposals(&h.step()).is_empty());
    h.raft.matched.insert(2, LogIndex(LOG - 3));
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::CuttingOver(Step::Pausing))
    );
}

#[test]
fn auto_failback_waits_for_a_stable_home_for_the_whole_delay() {
    let mut h = H::new(
        1,
        PolicyConfig {
            failback: FailbackMode::Auto {
                delay: Duration::from_secs(10),
            },
            ..cfg()
        },
    );
    h.settle_with_primary_history();
    assert!(proposals(&h.step()).is_empty());
    h.advance(6_000);
    h.step();
    // Home flaps: the timer restarts.
    if let Some(o) = h.peers.get_mut(&2) {
        o.health = ResourceHealth::Unhealthy;
    }
    h.step();
    if let Some(o) = h.peers.get_mut(&2) {
        o.health = ResourceHealth::Healthy;
    }
    h.step();
    h.advance(6_000);
    assert!(
        proposals(&h.step()).is_empty(),
        "only 6 s stable since the flap"
    );
    h.advance(4_000);
    let acts = h.step();
    assert!(proposals(&acts).into_iter().any(|c| matches!(
        c,
        Command::BeginOperation {
            kind: OperationKind::Failback,
            to: 2,
            ..
        }
    )));
}

#[test]
fn manual_failback_mode_never_starts_one_but_reports_availability() {
    let mut h = H::new(1, cfg());
    h.settle_with_primary_history();
    h.advance(3_600_000);
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    assert!(h
        .p
        .status_notes()
        .contains(&StatusNote::FailbackAvailable { home: 2 }));
}

#[test]
fn a_configured_verify_action_runs_after_the_monitor_checks_and_decides_the_commit() {
    for verify_ok in [true, false] {
        let mut h = home_verifying_with(
            PolicyConfig {
                verify_configured: true,
                ..cfg()
            },
            true,
        );
        h.monitor(true, 2);
        let acts = h.step();
        let runs = hooks(&acts);
        assert_eq!(
            runs.iter().map(|r| r.hook).collect::<Vec<_>>(),
            [HookKind::Verify],
            "{acts:?}"
        );
        assert!(proposals(&acts).is_empty(), "nothing commits before verify");
        h.finish_hooks(&acts, verify_ok);
        let acts = h.step();
        let cmds = proposals(&acts);
        if verify_ok {
            assert!(
                cmds.iter().any(|c| matches!(
                    c,
                    Command::EndOperation {
                        outcome: Outcome::Committed,
                        ..
                    }
                )),
                "{cmds:?}"
            );
        } else {
            assert!(
                cmds.iter().any(|c| matches!(
                    c,
                    Command::AdvanceOperation {
                        to_phase: Phase::Undoing(Step::Pausing),
                        reason: Some(r),
                        ..
                    } if r.contains("verify action failed")
                )),
                "{cmds:?}"
            );
        }
    }
}

#[test]
fn a_configured_snapshot_runs_on_the_current_primary_before_the_cut_over() {
    for snapshot_ok in [true, false] {
        let mut h = H::new(
            1,
            PolicyConfig {
                snapshot_configured: true,
                ..cfg()
            },
        );
        h.settle_with_primary_history();
        let begin = h.p.plan_request(
            &OperatorRequest::Failback {
                no_commit: false,
                to: None,
            },
            &h.inputs(),
            h.now,
        );
        let Ok(begin) = begin else {
            panic!("{begin:?}")
        };
        commit_direct(&mut h, begin);
        h.raft.matched.insert(2, LogIndex(LOG));
        let acts = h.step();
        assert_eq!(
            hooks(&acts).iter().map(|r| r.hook).collect::<Vec<_>>(),
            [HookKind::Snapshot],
            "{acts:?}"
        );
        assert!(
            proposals(&acts).is_empty(),
            "no cut-over before the snapshot"
        );
        h.finish_hooks(&acts, snapshot_ok);
        let acts = h.step();
        let cmds = proposals(&acts);
        if snapshot_ok {
            assert!(
                cmds.iter().any(|c| matches!(
                    c,
                    Command::AdvanceOperation {
                        to_phase: Phase::CuttingOver(Step::Pausing),
                        ..
                    }
                )),
                "{cmds:?}"
            );
        } else {
            assert!(
                cmds.iter().any(|c| matches!(
                    c,
                    Command::EndOperation {
                        outcome: Outcome::Aborted { reason },
                        ..
                    } if reason.contains("protective snapshot failed")
                )),
                "{cmds:?}"
            );
        }
    }
}

#[test]
fn failback_is_available_only_once_home_passed_a_check_and_is_on_the_primarys_timeline() {
    let mut h = H::new(1, cfg());
    h.settle_with_primary_history();
    let report = |timeline, position| crate::types::ServiceReport {
        timeline: Some(timeline),
        position: Some(position),
        ..crate::types::ServiceReport::default()
    };
    h.local_service = report(3, 500);
    let availability = |h: &mut H| {
        h.step();
        h.p.status_notes()
            .iter()
            .find(|n| {
                matches!(
                    n,
                    StatusNote::FailbackAvailable { .. } | StatusNote::FailbackUnavailable { .. }
                )
            })
            .cloned()
    };
    // Home (node 2) came back with its old timeline's data: it has not rejoined yet.
    if let Some(o) = h.peers.get_mut(&2) {
        o.service = report(2, 900);
    }
    assert_eq!(
        availability(&mut h),
        Some(StatusNote::FailbackUnavailable {
            home: 2,
            why: Ineligible::ServiceNotRejoined {
                node: 2,
                timeline: Some(2),
                reference: 3
            }
        })
    );
    // Rejoined, but no monitor result since its restart.
    if let Some(o) = h.peers.get_mut(&2) {
        o.service = report(3, 500);
        o.health = ResourceHealth::Unknown;
    }
    assert_eq!(
        availability(&mut h),
        Some(StatusNote::FailbackUnavailable {
            home: 2,
            why: Ineligible::NotYetHealthy(2)
        })
    );
    if let Some(o) = h.peers.get_mut(&2) {
        o.health = ResourceHealth::Healthy;
    }
    assert_eq!(
        availability(&mut h),
        Some(StatusNote::FailbackAvailable { home: 2 })
    );
}

#[test]
fn a_data_actions_account_goes_into_history_and_a_failed_verify_undoes_naming_it() {
    let mut h = home_verifying_with(
        PolicyConfig {
            verify_configured: true,
            ..cfg()
        },
        true,
    );
    h.monitor(true, 2);
    let acts = h.step();
    let run = hooks(&acts)
        .into_iter()
        .find(|r| r.hook == HookKind::Verify)
        .cloned();
    let Some(run) = run else {
        panic!("no verify: {acts:?}")
    };
    let detail = "1 of 2 tables differ at 0/5000000: table \"public\".\"t\" differs";
    h.p.observe(
        Event::HookOutput {
            id: run.id,
            output: format!("{detail}\n"),
            duration_ms: 42,
        },
        h.now,
    );
    h.p.observe(
        Event::HookFinished {
            id: run.id,
            ok: false,
        },
        h.now,
    );
    // First the record, then (once it committed) the undo, which says what differed.
    let acts = h.step();
    let cmds = proposals(&acts);
    assert!(
        matches!(
            cmds.as_slice(),
            [Command::RecordOperationData { action: HookKind::Verify, ok: false, duration_ms: 42, detail: d, .. }] if d == detail
        ),
        "{cmds:?}"
    );
    h.commit(&acts);
    let acts = h.step();
    let undo = proposals(&acts).into_iter().find_map(|c| match c {
        Command::AdvanceOperation {
            to_phase: Phase::Undoing(Step::Pausing),
            reason: Some(r),
            ..
        } => Some(r.clone()),
        _ => None,
    });
    assert!(
        undo.as_deref()
            .is_some_and(|r| r.contains("\"public\".\"t\" differs")),
        "{undo:?} {acts:?}"
    );
}

#[test]
fn a_data_actions_account_of_another_operation_is_not_recorded() {
    let mut h = home_verifying_with(
        PolicyConfig {
            verify_configured: true,
            ..cfg()
        },
        true,
    );
    h.monitor(true, 2);
    // An output for an action id that is not running is ignored.
    h.p.observe(
        Event::HookOutput {
            id: 9_999,
            output: "stale".into(),
            duration_ms: 1,
        },
        h.now,
    );
    let acts = h.step();
    assert!(
        !proposals(&acts)
            .iter()
            .any(|c| matches!(c, Command::RecordOperationData { .. })),
        "{acts:?}"
    );
}
