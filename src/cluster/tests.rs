use super::*;
use crate::types::{Epoch, NodeId, Term};

fn promote(node: NodeId, epoch: Epoch, reason: PromoteReason, previous: Option<NodeId>) -> Command {
    Command::Promote(Promote {
        node,
        epoch,
        reason,
        previous,
        home: None,
        term: Term(1),
        at_unix_ms: 1000 * epoch.get(),
    })
}

fn demote(node: NodeId, epoch: Epoch, reason: DemoteReason) -> Command {
    Command::Demote(Demote {
        node,
        epoch,
        reason,
        term: Term(1),
        at_unix_ms: 1000 * epoch.get() + 500,
    })
}

/// Applies and asserts success; keeps tests short.
fn ok(s: &mut ClusterState, c: Command) -> Applied {
    match s.apply(&c) {
        Ok(a) => {
            assert_eq!(s.check_invariants(), Ok(()), "after {c:?}");
            a
        }
        Err(e) => panic!("{c:?} refused: {e}"),
    }
}

/// Applies, asserts refusal and that the state did not change.
fn refused(s: &mut ClusterState, c: Command) -> Rejected {
    let before = s.clone();
    match s.apply(&c) {
        Ok(a) => panic!("{c:?} accepted: {a:?}"),
        Err(e) => {
            assert_eq!(*s, before, "a refused command changed the state");
            e
        }
    }
}

fn with_primary(node: NodeId) -> ClusterState {
    let mut s = ClusterState::default();
    ok(
        &mut s,
        promote(node, Epoch(1), PromoteReason::Startup, None),
    );
    s
}

#[test]
fn first_promote_needs_epoch_one() {
    let mut s = ClusterState::default();
    assert!(matches!(
        refused(&mut s, promote(1, Epoch(2), PromoteReason::Startup, None)),
        Rejected::EpochMismatch {
            proposed: Epoch(2),
            expected: Epoch(1)
        }
    ));
    ok(&mut s, promote(1, Epoch(1), PromoteReason::Startup, None));
    assert!(s.is_primary(1, Epoch(1)));
    assert_eq!(s.epoch, 1);
}

#[test]
fn promote_with_stale_epoch_is_refused_so_two_leaders_cannot_both_promote() {
    // Two leaders built their proposal from the same state (epoch 1, holder 1).
    let mut s = with_primary(1);
    ok(
        &mut s,
        promote(2, Epoch(2), PromoteReason::Failover, Some(1)),
    );
    let e = refused(
        &mut s,
        promote(3, Epoch(2), PromoteReason::Failover, Some(1)),
    );
    assert!(matches!(
        e,
        Rejected::EpochMismatch {
            proposed: Epoch(2),
            expected: Epoch(3)
        }
    ));
    assert!(s.is_primary(2, Epoch(2)));
}

#[test]
fn duplicated_promote_is_refused() {
    let mut s = with_primary(1);
    let c = promote(2, Epoch(2), PromoteReason::Failover, Some(1));
    ok(&mut s, c.clone());
    refused(&mut s, c);
    assert_eq!(s.epoch, 2);
}

#[test]
fn promote_naming_wrong_previous_holder_is_refused() {
    let mut s = with_primary(1);
    let e = refused(
        &mut s,
        promote(2, Epoch(2), PromoteReason::Failover, Some(3)),
    );
    assert!(matches!(
        e,
        Rejected::PreviousMismatch {
            claimed: Some(3),
            actual: Some(1)
        }
    ));
}

#[test]
fn promote_of_drained_node_is_refused_unless_forced() {
    let mut s = with_primary(1);
    ok(
        &mut s,
        Command::SetDrained {
            node: 2,
            drained: true,
            at_unix_ms: 5,
        },
    );
    assert_eq!(
        refused(
            &mut s,
            promote(2, Epoch(2), PromoteReason::Failover, Some(1))
        ),
        Rejected::NodeDrained(2)
    );
    ok(&mut s, promote(2, Epoch(2), PromoteReason::Forced, Some(1)));
    assert!(s.is_primary(2, Epoch(2)));
}

#[test]
fn promote_during_maintenance_is_refused_unless_forced() {
    let mut s = with_primary(1);
    ok(
        &mut s,
        Command::SetMaintenance {
            on: true,
            reason: "patching".into(),
            at_unix_ms: 5,
        },
    );
    assert_eq!(
        refused(
            &mut s,
            promote(2, Epoch(2), PromoteReason::Failover, Some(1))
        ),
        Rejected::MaintenanceOn
    );
    ok(&mut s, promote(2, Epoch(2), PromoteReason::Forced, Some(1)));
}

#[test]
fn demote_only_of_current_primary_at_its_epoch() {
    let mut s = with_primary(1);
    assert!(matches!(
        refused(&mut s, demote(2, Epoch(1), DemoteReason::LeaseLost)),
        Rejected::NotPrimary {
            node: 2,
            epoch: Epoch(1),
            actual: Some((1, Epoch(1)))
        }
    ));
    assert!(matches!(
        refused(&mut s, demote(1, Epoch(7), DemoteReason::LeaseLost)),
        Rejected::NotPrimary { .. }
    ));
    ok(&mut s, demote(1, Epoch(1), DemoteReason::LeaseLost));
    assert_eq!(s.primary, None);
    assert_eq!(s.last_release, Some(DemoteReason::LeaseLost));
    // The epoch is not given back: the next promotion is epoch 2.
    assert_eq!(s.epoch, 1);
    refused(&mut s, demote(1, Epoch(1), DemoteReason::LeaseLost));
}

#[test]
fn promote_after_demote_names_the_released_holder_as_previous() {
    let mut s = with_primary(1);
    ok(&mut s, demote(1, Epoch(1), DemoteReason::ResourceFailure));
    refused(&mut s, promote(2, Epoch(2), PromoteReason::Failover, None));
    ok(
        &mut s,
        promote(2, Epoch(2), PromoteReason::Failover, Some(1)),
    );
    let lf = s.last_failover.clone();
    assert_eq!(
        lf.map(|f| (f.from, f.to, f.epoch, f.cause)),
        Some((Some(1), 2, Epoch(2), Some(DemoteReason::ResourceFailure)))
    );
}

#[test]
fn unplanned_failover_sets_failed_over_with_previous_primary_as_home() {
    let mut s = with_primary(1);
    ok(
        &mut s,
        promote(2, Epoch(2), PromoteReason::Failover, Some(1)),
    );
    let fo = s.failed_over.clone().map(|f| (f.home, f.current, f.epoch));
    assert_eq!(fo, Some((1, 2, Epoch(2))));
    // A second failover keeps the original home.
    ok(
        &mut s,
        promote(3, Epoch(3), PromoteReason::Failover, Some(2)),
    );
    let fo = s.failed_over.clone().map(|f| (f.home, f.current, f.epoch));
    assert_eq!(fo, Some((1, 3, Epoch(3))));
    // Failing over onto home clears it.
    ok(
        &mut s,
        promote(1, Epoch(4), PromoteReason::Failover, Some(3)),
    );
    assert_eq!(s.failed_over, None);
}

#[test]
fn preferred_primary_in_promote_is_home() {
    let mut s = ClusterState::default();
    ok(
        &mut s,
        Command::Promote(Promote {
            node: 2,
            epoch: Epoch(1),
            reason: PromoteReason::Startup,
            previous: None,
            home: Some(1),
            term: Term(1),
            at_unix_ms: 1,
        }),
    );
    assert_eq!(s.failed_over.as_ref().map(|f| f.home), Some(1));
}

#[test]
fn repromotion_of_the_same_node_after_lease_loss_is_not_a_failover_away_from_home() {
    let mut s = with_primary(1);
    ok(&mut s, demote(1, Epoch(1), DemoteReason::LeaseLost));
    ok(
        &mut s,
        promote(1, Epoch(2), PromoteReason::Failover, Some(1)),
    );
    assert_eq!(s.failed_over, None);
}

#[test]
fn history_records_every_role_change_with_term_reason_and_time() {
    let mut s = with_primary(1);
    ok(&mut s, demote(1, Epoch(1), DemoteReason::Drained));
    ok(
        &mut s,
        promote(2, Epoch(2), PromoteReason::Handover, Some(1)),
    );
    let events: Vec<_> = s
        .history
        .iter()
        .map(|e| (e.at_unix_ms, e.term, e.event.clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            (
                1000,
                Some(Term(1)),
                HistoryEvent::Promoted {
                    node: 1,
                    epoch: Epoch(1),
                    previous: None,
                    reason: PromoteReason::Startup
                }
            ),
            (
                1500,
                Some(Term(1)),
                HistoryEvent::Demoted {
                    node: 1,
                    epoch: Epoch(1),
                    reason: DemoteReason::Drained
                }
            ),
            (
                2000,
                Some(Term(1)),
                HistoryEvent::Promoted {
                    node: 2,
                    epoch: Epoch(2),
                    previous: Some(1),
                    reason: PromoteReason::Handover
                }
            ),
        ]
    );
}

#[test]
fn history_is_bounded_by_history_limit() {
    let mut s = ClusterState::default();
    for i in 0..(HISTORY_LIMIT as u64 + 10) {
        ok(
            &mut s,
            Command::SetDrained {
                node: 9,
                drained: i % 2 == 0,
                at_unix_ms: i,
            },
        );
    }
    assert_eq!(s.history.len(), HISTORY_LIMIT);
}

#[test]
fn maintenance_and_drain_repeats_are_unchanged_not_errors() {
    let mut s = ClusterState::default();
    ok(
        &mut s,
        Command::SetMaintenance {
            on: true,
            reason: "x".into(),
            at_unix_ms: 1,
        },
    );
    assert_eq!(
        ok(
            &mut s,
            Command::SetMaintenance {
                on: true,
                reason: "y".into(),
                at_unix_ms: 2
            }
        ),
        Applied::Unchanged
    );
    assert_eq!(
        ok(
            &mut s,
            Command::SetDrained {
                node: 3,
                drained: false,
                at_unix_ms: 3
            }
        ),
        Applied::Unchanged
    );
    assert_eq!(s.history.len(), 1);
}

#[test]
fn reason_longer_than_limit_is_refused() {
    let mut s = ClusterState::default();
    let e = refused(
        &mut s,
        Command::SetMaintenance {
            on: true,
            reason: "x".repeat(MAX_REASON_BYTES + 1),
            at_unix_ms: 1,
        },
    );
    assert!(matches!(e, Rejected::ReasonTooLong { .. }));
}

#[test]
fn drained_set_is_bounded() {
    let mut s = ClusterState::default();
    for n in 0..MAX_DRAINED_NODES as u64 {
        ok(
            &mut s,
            Command::SetDrained {
                node: n,
                drained: true,
                at_unix_ms: 1,
            },
        );
    }
    let e = refused(
        &mut s,
        Command::SetDrained {
            node: 100_000,
            drained: true,
            at_unix_ms: 1,
        },
    );
    assert!(matches!(e, Rejected::TooManyDrained { .. }));
}

#[test]
fn note_restart_only_for_current_primary() {
    let mut s = with_primary(1);
    refused(
        &mut s,
        Command::NoteRestart {
            node: 2,
            epoch: Epoch(1),
            attempt: 1,
            at_unix_ms: 9,
        },
    );
    ok(
        &mut s,
        Command::NoteRestart {
            node: 1,
            epoch: Epoch(1),
            attempt: 1,
            at_unix_ms: 9,
        },
    );
    assert!(matches!(
        s.history.last().map(|e| &e.event),
        Some(HistoryEvent::Restarted { .. })
    ));
}

// ---- operations ----

fn begin_switchover(s: &mut ClusterState, from: NodeId, to: NodeId, at: Option<u64>) -> u64 {
    match ok(
        s,
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from,
            to,
            scheduled_at_unix_ms: at,
            auto_commit: true,
            at_unix_ms: 10_000,
        },
    ) {
        Applied::OperationStarted { id } => id,
        other => panic!("{other:?}"),
    }
}

fn phase(s: &ClusterState) -> Option<Phase> {
    s.operation.as_ref().map(|o| o.phase)
}

#[test]
fn switchover_moves_through_pause_transfer_promote_and_completes() {
    let mut s = with_primary(1);
    let id = begin_switchover(&mut s, 1, 2, None);
    assert_eq!(phase(&s), Some(Phase::CuttingOver(Step::Pausing)));
    assert!(s.operation.as_ref().is_some_and(|o| o.writes_paused()));
    ok(
        &mut s,
        Command::Demote(Demote {
            node: 1,
            epoch: Epoch(1),
            reason: DemoteReason::Switchover,
            term: Term(1),
            at_unix_ms: 10_020,
        }),
    );
    assert_eq!(phase(&s), Some(Phase::CuttingOver(Step::Transferring)));
    ok(
        &mut s,
        Command::Promote(Promote {
            node: 2,
            epoch: Epoch(2),
            reason: PromoteReason::Switchover,
            previous: Some(1),
            home: None,
            term: Term(2),
            at_unix_ms: 10_040,
        }),
    );
    assert_eq!(phase(&s), Some(Phase::CuttingOver(Step::Promoting)));
    ok(
        &mut s,
        Command::EndOperation {
            id,
            outcome: Outcome::Completed,
            at_unix_ms: 10_060,
        },
    );
    assert_eq!(s.operation, None);
    assert_eq!(
        s.failed_over, None,
        "a planned switchover is not a failover"
    );
    match s.history.last().map(|e| &e.event) {
        Some(HistoryEvent::OperationEnded {
            outcome: Outcome::Completed,
            duration_ms: 60,
            write_pause_ms: Some(60),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn switchover_promote_of_wrong_node_or_at_wrong_step_is_refused() {
    let mut s = with_primary(1);
    begin_switchover(&mut s, 1, 2, None);
    // Still pausing: the source has not demoted.
    let e = refused(
        &mut s,
        Command::Promote(Promote {
            node: 2,
            epoch: Epoch(2),
            reason: PromoteReason::Switchover,
            previous: Some(1),
            home: None,
            term: Term(1),
            at_unix_ms: 1,
        }),
    );
    assert!(matches!(e, Rejected::NotExpectedByOperation { .. }));
    ok(&mut s, demote(1, Epoch(1), DemoteReason::Switchover));
    let e = refused(
        &mut s,
        Command::Promote(Promote {
            node: 3,
            epoch: Epoch(2),
            reason: PromoteReason::Switchover,
            previous: Some(1),
            home: None,
            term: Term(1),
            at_unix_ms: 1,
        }),
    );
    assert!(matches!(e, Rejected::NotExpectedByOperation { .. }));
}

#[test]
fn operation_promote_without_operation_is_refused() {
    let mut s = with_primary(1);
    ok(&mut s, demote(1, Epoch(1), DemoteReason::LeaseLost));
    for reason in [
        PromoteReason::Switchover,
        PromoteReason::Failback,
        PromoteReason::FailbackUndo,
    ] {
        refused(&mut s, promote(2, Epoch(2), reason, Some(1)));
    }
}

#[test]
fn unplanned_role_change_aborts_the_operation() {
    let mut s = with_primary(1);
    begin_switchover(&mut s, 1, 2, None);
    ok(&mut s, demote(1, Epoch(1), DemoteReason::LeaseLost));
    assert_eq!(s.operation, None);
    assert!(matches!(
        s.history.last().map(|e| &e.event),
        Some(HistoryEvent::OperationEnded {
            outcome: Outcome::Aborted { .. },
            ..
        })
    ));
}

#[test]
fn scheduled_switchover_survives_failover_and_starts_from_the_primary_when_it_fires() {
    let mut s = with_primary(1);
    let id = begin_switchover(&mut s, 1, 2, Some(99_999));
    assert_eq!(phase(&s), Some(Phase::Scheduled));
    assert!(!s.operation.as_ref().is_some_and(|o| o.writes_paused()));
    ok(
        &mut s,
        promote(3, Epoch(2), PromoteReason::Failover, Some(1)),
    );
    assert_eq!(phase(&s), Some(Phase::Scheduled));
    ok(
        &mut s,
        Command::AdvanceOperation {
            id,
            from_phase: Phase::Scheduled,
            to_phase: Phase::CuttingOver(Step::Pausing),
            reason: None,
            at_unix_ms: 99_999,
        },
    );
    assert_eq!(s.operation.as_ref().map(|o| (o.from, o.to)), Some((3, 2)));
}

#[test]
fn cancel_only_before_the_primary_moves() {
    let mut s = with_primary(1);
    let id = begin_switchover(&mut s, 1, 2, Some(50_000));
    ok(
        &mut s,
        Command::EndOperation {
            id,
            outcome: Outcome::Cancelled,
            at_unix_ms: 11,
        },
    );
    assert_eq!(s.operation, None);
    let id = begin_switchover(&mut s, 1, 2, None);
    ok(&mut s, demote(1, Epoch(1), DemoteReason::Switchover));
    let e = refused(
        &mut s,
        Command::EndOperation {
            id,
            outcome: Outcome::Cancelled,
            at_unix_ms: 11,
        },
    );
    assert!(matches!(e, Rejected::InvalidOutcome { .. }));
}

#[test]
fn begin_refused_during_maintenance_with_another_operation_or_to_drained_node() {
    let mut s = with_primary(1);
    ok(
        &mut s,
        Command::SetDrained {
            node: 3,
            drained: true,
            at_unix_ms: 1,
        },
    );
    let c = |to| Command::BeginOperation {
        kind: OperationKind::Switchover,
        from: 1,
        to,
        scheduled_at_unix_ms: None,
        auto_commit: true,
        at_unix_ms: 2,
    };
    assert_eq!(refused(&mut s, c(3)), Rejected::NodeDrained(3));
    assert!(matches!(
        refused(&mut s, c(1)),
        Rejected::OperationPrecondition(_)
    ));
    begin_switchover(&mut s, 1, 2, None);
    assert!(matches!(
        refused(&mut s, c(2)),
        Rejected::OperationInProgress { .. }
    ));
    ok(
        &mut s,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 3,
        },
    );
    assert_eq!(s.operation, None, "maintenance on aborts the operation");
    assert_eq!(refused(&mut s, c(2)), Rejected::MaintenanceOn);
}

#[test]
fn advance_is_compare_and_set_on_the_phase() {
    let mut s = with_primary(1);
    let id = begin_switchover(&mut s, 1, 2, Some(5));
    let c = Command::AdvanceOperation {
        id,
        from_phase: Phase::Scheduled,
        to_phase: Phase::CuttingOver(Step::Pausing),
        reason: None,
        at_unix_ms: 6,
    };
    ok(&mut s, c.clone());
    assert!(matches!(refused(&mut s, c), Rejected::PhaseMismatch { .. }));
    let e = refused(
        &mut s,
        Command::AdvanceOperation {
            id: id + 1,
            from_phase: Phase::CuttingOver(Step::Pausing),
            to_phase: Phase::Verifying,
            reason: None,
            at_unix_ms: 7,
        },
    );
    assert!(matches!(e, Rejected::NoSuchOperation { .. }));
    let e = refused(
        &mut s,
        Command::AdvanceOperation {
            id,
            from_phase: Phase::CuttingOver(Step::Pausing),
            to_phase: Phase::CuttingOver(Step::Transferring),
            reason: None,
            at_unix_ms: 7,
        },
    );
    assert!(
        matches!(e, Rejected::InvalidTransition { .. }),
        "steps inside a move happen only through Demote/Promote"
    );
}

/// A → failover → B; returns state with failed_over {home 1, current 2}.
fn failed_over_state() -> ClusterState {
    let mut s = with_primary(1);
    ok(
        &mut s,
        promote(2, Epoch(2), PromoteReason::Failover, Some(1)),
    );
    s
}

fn begin_failback(s: &mut ClusterState, auto_commit: bool) -> u64 {
    match ok(
        s,
        Command::BeginOperation {
            kind: OperationKind::Failback,
            from: 2,
            to: 1,
            scheduled_at_unix_ms: None,
            auto_commit,
            at_unix_ms: 20_000,
        },
    ) {
        Applied::OperationStarted { id } => id,
        other => panic!("{other:?}"),
    }
}

fn failback_to_verifying(s: &mut ClusterState) -> u64 {
    let id = begin_failback(s, false);
    assert_eq!(phase(s), Some(Phase::Syncing));
    ok(
        s,
        Command::AdvanceOperation {
            id,
            from_phase: Phase::Syncing,
            to_phase: Phase::CuttingOver(Step::Pausing),
            reason: None,
            at_unix_ms: 20_100,
        },
    );
    ok(
        s,
        Command::Demote(Demote {
            node: 2,
            epoch: Epoch(2),
            reason: DemoteReason::Failback,
            term: Term(3),
            at_unix_ms: 20_110,
        }),
    );
    ok(
        s,
        Command::Promote(Promote {
            node: 1,
            epoch: Epoch(3),
            reason: PromoteReason::Failback,
            previous: Some(2),
            home: None,
            term: Term(4),
            at_unix_ms: 20_120,
        }),
    );
    assert!(
        s.failed_over.is_some(),
        "still failed over until the failback commits"
    );
    ok(
        s,
        Command::AdvanceOperation {
            id,
            from_phase: Phase::CuttingOver(Step::Promoting),
            to_phase: Phase::Verifying,
            reason: None,
            at_unix_ms: 20_150,
        },
    );
    id
}

#[test]
fn failback_only_when_failed_over_and_from_the_current_primary_to_home_or_another_node() {
    let mut s = with_primary(1);
    let e = refused(
        &mut s,
        Command::BeginOperation {
            kind: OperationKind::Failback,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: None,
            auto_commit: true,
            at_unix_ms: 1,
        },
    );
    assert!(matches!(e, Rejected::OperationPrecondition(_)));
    let mut s = failed_over_state();
    let e = refused(
        &mut s,
        Command::BeginOperation {
            kind: OperationKind::Failback,
            from: 3,
            to: 1,
            scheduled_at_unix_ms: None,
            auto_commit: true,
            at_unix_ms: 1,
        },
    );
    assert!(matches!(e, Rejected::OperationPrecondition(_)), "{e}");
    // To another node than home (failback to a new location).
    let r = s.apply(&Command::BeginOperation {
        kind: OperationKind::Failback,
        from: 2,
        to: 3,
        scheduled_at_unix_ms: None,
        auto_commit: true,
        at_unix_ms: 1,
    });
    assert!(matches!(r, Ok(Applied::OperationStarted { .. })), "{r:?}");
    s.check_invariants().expect("invariants");
}

#[test]
fn a_data_action_is_recorded_only_for_the_operation_in_progress_and_bounded() {
    let mut s = failed_over_state();
    let record = |id, detail: &str| Command::RecordOperationData {
        id,
        node: 2,
        action: crate::types::HookKind::Snapshot,
        ok: true,
        duration_ms: 7,
        detail: detail.to_string(),
        at_unix_ms: 5,
    };
    assert!(matches!(
        refused(&mut s, record(1, "x")),
        Rejected::NoSuchOperation { .. }
    ));
    let Ok(Applied::OperationStarted { id }) = s.apply(&Command::BeginOperation {
        kind: OperationKind::Failback,
        from: 2,
        to: 1,
        scheduled_at_unix_ms: None,
        auto_commit: true,
        at_unix_ms: 1,
    }) else {
        panic!("failback start refused");
    };
    assert!(matches!(
        refused(&mut s, record(id, &"y".repeat(MAX_REASON_BYTES + 1))),
        Rejected::ReasonTooLong { .. }
    ));
    assert_eq!(
        s.apply(&record(
            id,
            "restore point quorate_failback_e2_9 at 0/3000148"
        )),
        Ok(Applied::OperationDataRecorded { id })
    );
    let last = s.history.iter().last().map(|e| e.event.clone());
    assert!(
        matches!(&last, Some(HistoryEvent::OperationData { detail, node: 2, ok: true, duration_ms: 7, .. }) if detail.contains("quorate_failback_e2_9")),
        "{last:?}"
    );
    s.check_invariants().expect("invariants");
}

#[test]
fn failback_commit_clears_failed_over_and_records_write_pause() {
    let mut s = failed_over_state();
    let id = failback_to_verifying(&mut s);
    let pause = s.history.iter().rev().find_map(|e| match &e.event {
        HistoryEvent::OperationStep {
            to_phase: Phase::Verifying,
            write_pause_ms,
            ..
        } => Some(*write_pause_ms),
        _ => None,
    });
    assert_eq!(pause, Some(Some(50)));
    ok(
        &mut s,
        Command::AdvanceOperation {
            id,
            from_phase: Phase::Verifying,
            to_phase: Phase::AwaitingCommit,
            reason: None,
            at_unix_ms: 20_200,
        },
    );
    ok(
        &mut s,
        Command::EndOperation {
            id,
            outcome: Outcome::Committed,
            at_unix_ms: 20_300,
        },
    );
    assert_eq!(s.failed_over, None);
    assert!(s.is_primary(1, Epoch(3)));
}

#[test]
fn failback_undo_returns_to_failed_over_on_previous_primary() {
    let mut s = failed_over_state();
    let id = failback_to_verifying(&mut s);
    ok(
        &mut s,
        Command::AdvanceOperation {
            id,
            from_phase: Phase::Verifying,
            to_phase: Phase::Undoing(Step::Pausing),
            reason: Some("monitor failed".into()),
            at_unix_ms: 20_200,
        },
    );
    ok(
        &mut s,
        Command::Demote(Demote {
            node: 1,
            epoch: Epoch(3),
            reason: DemoteReason::FailbackUndo,
            term: Term(4),
            at_unix_ms: 20_210,
        }),
    );
    assert_eq!(phase(&s), Some(Phase::Undoing(Step::Transferring)));
    ok(
        &mut s,
        Command::Promote(Promote {
            node: 2,
            epoch: Epoch(4),
            reason: PromoteReason::FailbackUndo,
            previous: Some(1),
            home: None,
            term: Term(5),
            at_unix_ms: 20_220,
        }),
    );
    ok(
        &mut s,
        Command::EndOperation {
            id,
            outcome: Outcome::Undone,
            at_unix_ms: 20_230,
        },
    );
    let fo = s.failed_over.clone().map(|f| (f.home, f.current, f.epoch));
    assert_eq!(fo, Some((1, 2, Epoch(4))));
    assert!(s.is_primary(2, Epoch(4)));
}

#[test]
fn failback_commit_refused_before_home_is_primary() {
    let mut s = failed_over_state();
    let id = begin_failback(&mut s, true);
    let e = refused(
        &mut s,
        Command::EndOperation {
            id,
            outcome: Outcome::Committed,
            at_unix_ms: 1,
        },
    );
    assert!(matches!(e, Rejected::InvalidOutcome { .. }));
}

#[test]
fn aborted_failback_with_home_primary_clears_failed_over() {
    let mut s = failed_over_state();
    let id = failback_to_verifying(&mut s);
    ok(
        &mut s,
        Command::EndOperation {
            id,
            outcome: Outcome::Aborted { reason: "x".into() },
            at_unix_ms: 20_400,
        },
    );
    assert_eq!(s.failed_over, None);
}

#[test]
fn serde_roundtrip_json_and_bincode() {
    let mut s = failed_over_state();
    failback_to_verifying(&mut s);
    ok(
        &mut s,
        Command::SetDrained {
            node: 3,
            drained: true,
            at_unix_ms: 1,
        },
    );
    let json = serde_json::to_string(&s).unwrap_or_default();
    let back: ClusterState = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back, s);
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&s, cfg).unwrap_or_default();
    let decoded: Result<(ClusterState, usize), _> = bincode::serde::decode_from_slice(&bytes, cfg);
    assert_eq!(decoded.ok().map(|d| d.0), Some(s));
}

// ---- property tests ----
mod prop {
    use super::*;
    use crate::types::Term;
    use proptest::prelude::*;

    /// Commands drawn so that many are valid (nodes 1..=4, epochs near the current
    /// ones) and many are stale or mismatched.
    fn arb_command() -> impl Strategy<Value = Command> {
        let node = 1u64..=4;
        let reason_p = prop_oneof![
            Just(PromoteReason::Startup),
            Just(PromoteReason::Failover),
            Just(PromoteReason::Handover),
            Just(PromoteReason::Switchover),
            Just(PromoteReason::Failback),
            Just(PromoteReason::FailbackUndo),
            Just(PromoteReason::Forced),
        ];
        let reason_d = prop_oneof![
            Just(DemoteReason::LeaseLost),
            Just(DemoteReason::ResourceFailure),
            Just(DemoteReason::Switchover),
            Just(DemoteReason::Failback),
            Just(DemoteReason::FailbackUndo),
        ];
        let step = prop_oneof![
            Just(Step::Pausing),
            Just(Step::Transferring),
            Just(Step::Promoting)
        ];
        let phase = prop_oneof![
            Just(Phase::Scheduled),
            Just(Phase::Syncing),
            step.clone().prop_map(Phase::CuttingOver),
            Just(Phase::Verifying),
            Just(Phase::AwaitingCommit),
            step.prop_map(Phase::Undoing),
        ];
        let outcome = prop_oneof![
            Just(Outcome::Completed),
            Just(Outcome::Committed),
            Just(Outcome::Undone),
            Just(Outcome::Cancelled),
            Just(Outcome::Aborted { reason: "t".into() }),
        ];
        prop_oneof![
            4 => (node.clone(), 0u64..12, reason_p, proptest::option::of(node.clone()), proptest::option::of(node.clone()), 0u64..1_000_000)
                .prop_map(|(node, epoch, reason, previous, home, at)| Command::Promote(Promote { node, epoch: Epoch(epoch), reason, previous, home, term: Term(1), at_unix_ms: at })),
            3 => (node.clone(), 0u64..12, reason_d, 0u64..1_000_000)
                .prop_map(|(node, epoch, reason, at)| Command::Demote(Demote { node, epoch: Epoch(epoch), reason, term: Term(1), at_unix_ms: at })),
            1 => (any::<bool>(), 0u64..1_000_000).prop_map(|(on, at)| Command::SetMaintenance { on, reason: "m".into(), at_unix_ms: at }),
            1 => (node.clone(), any::<bool>()).prop_map(|(node, drained)| Command::SetDrained { node, drained, at_unix_ms: 1 }),
            2 => (any::<bool>(), node.clone(), node.clone(), proptest::option::of(0u64..10), any::<bool>())
                .prop_map(|(fb, from, to, sched, auto_commit)| Command::BeginOperation {
                    kind: if fb { OperationKind::Failback } else { OperationKind::Switchover },
                    from, to, scheduled_at_unix_ms: sched, auto_commit, at_unix_ms: 7 }),
            2 => (0u64..4, phase.clone(), phase, proptest::option::of(Just("r".to_string())))
                .prop_map(|(id, from_phase, to_phase, reason)| Command::AdvanceOperation { id, from_phase, to_phase, reason, at_unix_ms: 8 }),
            1 => (0u64..4, outcome).prop_map(|(id, outcome)| Command::EndOperation { id, outcome, at_unix_ms: 9 }),
        ]
    }

    /// Makes a random command valid more often by fixing epoch/previous/ids from the
    /// current state when `fix` is set (otherwise leaves it as drawn).
    fn aim(s: &ClusterState, c: Command, guide: u8) -> Command {
        match guide {
            0 => return c,
            1 => {}
            _ => {
                if let Some(next) = follow(s, guide) {
                    return next;
                }
            }
        }
        match c {
            Command::Promote(mut p) => {
                p.epoch = s.epoch.saturating_next();
                p.previous = s.last_holder.as_ref().map(|h| h.node);
                Command::Promote(p)
            }
            Command::Demote(mut d) => {
                if let Some(p) = &s.primary {
                    d.node = p.node;
                    d.epoch = p.epoch;
                }
                Command::Demote(d)
            }
            Command::AdvanceOperation {
                from_phase,
                to_phase,
                reason,
                at_unix_ms,
                ..
            } => {
                let (id, from_phase) = s
                    .operation
                    .as_ref()
                    .map(|o| (o.id, o.phase))
                    .unwrap_or((0, from_phase));
                Command::AdvanceOperation {
                    id,
                    from_phase,
                    to_phase,
                    reason,
                    at_unix_ms,
                }
            }
            Command::EndOperation {
                outcome,
                at_unix_ms,
                ..
            } => {
                let id = s.operation.as_ref().map(|o| o.id).unwrap_or(0);
                Command::EndOperation {
                    id,
                    outcome,
                    at_unix_ms,
                }
            }
            Command::BeginOperation {
                kind,
                to,
                scheduled_at_unix_ms,
                auto_commit,
                at_unix_ms,
                ..
            } => {
                let from = s.primary_node().unwrap_or(0);
                Command::BeginOperation {
                    kind,
                    from,
                    to,
                    scheduled_at_unix_ms,
                    auto_commit,
                    at_unix_ms,
                }
            }
            other => other,
        }
    }

    /// The command that moves the current operation along its happy path (or starts a
    /// failback when failed over), so deep phases are reached often.
    fn follow(s: &ClusterState, coin: u8) -> Option<Command> {
        let at_unix_ms = 50;
        let Some(op) = &s.operation else {
            return s.failed_over.as_ref().map(|fo| Command::BeginOperation {
                kind: OperationKind::Failback,
                from: fo.current,
                to: fo.home,
                scheduled_at_unix_ms: None,
                auto_commit: coin.is_multiple_of(2),
                at_unix_ms,
            });
        };
        let adv = |to_phase| Command::AdvanceOperation {
            id: op.id,
            from_phase: op.phase,
            to_phase,
            reason: None,
            at_unix_ms,
        };
        let end = |outcome| Command::EndOperation {
            id: op.id,
            outcome,
            at_unix_ms,
        };
        if let Some(mv) = op.current_move() {
            let p = s.primary.as_ref();
            return Some(match mv.step {
                Step::Pausing => Command::Demote(Demote {
                    node: mv.src,
                    epoch: p.map(|p| p.epoch).unwrap_or(Epoch(0)),
                    reason: op.demote_reason(mv.direction),
                    term: Term(1),
                    at_unix_ms,
                }),
                Step::Transferring => Command::Promote(Promote {
                    node: mv.dst,
                    epoch: s.epoch.saturating_next(),
                    reason: op.promote_reason(mv.direction),
                    previous: s.last_holder.as_ref().map(|h| h.node),
                    home: None,
                    term: Term(1),
                    at_unix_ms,
                }),
                Step::Promoting => match (op.kind, mv.direction) {
                    (OperationKind::Switchover, _) => end(Outcome::Completed),
                    (OperationKind::Failback, Direction::Forward) => adv(Phase::Verifying),
                    (OperationKind::Failback, Direction::Back) => end(Outcome::Undone),
                },
            });
        }
        Some(match op.phase {
            Phase::Scheduled | Phase::Syncing => adv(Phase::CuttingOver(Step::Pausing)),
            Phase::Verifying if coin.is_multiple_of(3) => adv(Phase::AwaitingCommit),
            Phase::Verifying | Phase::AwaitingCommit if coin % 3 == 1 => {
                adv(Phase::Undoing(Step::Pausing))
            }
            _ => end(Outcome::Committed),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2000, ..ProptestConfig::default() })]

        #[test]
        fn random_command_sequences_keep_every_invariant(
            cmds in proptest::collection::vec((arb_command(), 0u8..6), 0..120)
        ) {
            let mut s = ClusterState::default();
            let mut replay = Vec::new();
            let mut last_promoted_epoch = Epoch::NONE;
            for (c, guide) in cmds {
                let c = aim(&s, c, guide);
                replay.push(c.clone());
                let before = s.clone();
                match s.apply(&c) {
                    Ok(Applied::Promoted { epoch, .. }) => {
                        // Epochs strictly increase across applied promotions.
                        prop_assert!(epoch > last_promoted_epoch);
                        prop_assert_eq!(epoch, before.epoch.saturating_next());
                        last_promoted_epoch = epoch;
                    }
                    Ok(_) => {}
                    Err(_) => prop_assert_eq!(&s, &before, "refused command changed state"),
                }
                // One primary record at most, consistent with the epoch (never two
                // primaries: the state has room for only one and it must be the
                // holder of the newest epoch).
                prop_assert_eq!(s.check_invariants(), Ok(()));
                prop_assert!(s.history.len() <= HISTORY_LIMIT);
            }
            // Deterministic: the same sequence gives an equal state.
            let mut again = ClusterState::default();
            for c in &replay {
                let _ = again.apply(c);
            }
            prop_assert_eq!(&again, &s);
            // Serde roundtrip (JSON for the API, bincode for snapshots).
            let json = serde_json::to_string(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: ClusterState = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &s);
            let cfg = bincode::config::standard();
            let bytes = bincode::serde::encode_to_vec(&s, cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (back, _): (ClusterState, usize) = bincode::serde::decode_from_slice(&bytes, cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &s);
        }
    }
}
