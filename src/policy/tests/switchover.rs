//! Operator requests: switchover (immediate and scheduled) and its refusals.

use super::*;
use crate::types::LogIndex;

#[test]
fn switchover_is_refused_to_witness_drained_lagging_dead_or_unknown_nodes() {
    let mut h = H::primary(1, cfg());
    h.members[1].role = NodeRole::Witness;
    h.members.push(Member {
        id: 4,
        role: NodeRole::Voter,
        priority: 1,
    });
    h.peers.insert(
        4,
        PeerObs {
            alive: true,
            ..PeerObs::default()
        },
    );
    h.raft.matched.insert(4, LogIndex(0));
    h.members.push(Member {
        id: 5,
        role: NodeRole::Voter,
        priority: 1,
    });
    h.peers.insert(5, dead());
    h.raft.matched.insert(5, LogIndex(LOG));
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 3,
            drained: true,
            at_unix_ms: 1,
        },
    );
    let cfg_lag = PolicyConfig {
        max_lag_on_failover: 5,
        ..cfg()
    };
    let p = Policy {
        cfg: cfg_lag,
        ..h.p.clone()
    };
    let req = |to| OperatorRequest::Switchover {
        to: Some(to),
        at_unix_ms: None,
    };
    let refusal = |to| p.plan_request(&req(to), &h.inputs(), h.now).err();
    assert!(matches!(
        refusal(2),
        Some(Refusal::TargetIneligible {
            why: Ineligible::NotVoter(2, NodeRole::Witness),
            ..
        })
    ));
    assert!(matches!(
        refusal(3),
        Some(Refusal::TargetIneligible {
            why: Ineligible::Drained(3),
            ..
        })
    ));
    assert!(matches!(
        refusal(4),
        Some(Refusal::TargetIneligible {
            why: Ineligible::Lagging { .. },
            ..
        })
    ));
    assert!(matches!(
        refusal(5),
        Some(Refusal::TargetIneligible {
            why: Ineligible::NotAlive(5),
            ..
        })
    ));
    assert!(matches!(refusal(9), Some(Refusal::NotMember(9))));
    assert!(matches!(refusal(1), Some(Refusal::AlreadyPrimary(1))));
    let msg = refusal(2).map(|r| r.to_string()).unwrap_or_default();
    assert!(msg.contains("witness"), "{msg}");
}

#[test]
fn switchover_is_refused_in_maintenance_during_an_operation_and_on_followers() {
    let mut h = H::primary(1, cfg());
    let req = OperatorRequest::Switchover {
        to: Some(2),
        at_unix_ms: None,
    };
    assert!(h.p.plan_request(&req, &h.inputs(), h.now).is_ok());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    assert!(matches!(
        h.p.plan_request(&req, &h.inputs(), h.now),
        Err(Refusal::Maintenance { .. })
    ));
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: false,
            reason: String::new(),
            at_unix_ms: 1,
        },
    );
    let later = h.now_ms + 99_999;
    commit_direct(
        &mut h,
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: Some(later),
            auto_commit: true,
            at_unix_ms: 1,
        },
    );
    assert!(matches!(
        h.p.plan_request(&req, &h.inputs(), h.now),
        Err(Refusal::OperationInProgress { .. })
    ));
    h.raft.is_leader = false;
    assert!(matches!(
        h.p.plan_request(&req, &h.inputs(), h.now),
        Err(Refusal::NotLeader { .. })
    ));
}

#[test]
fn switchover_without_target_picks_the_best_other_candidate() {
    let mut h = H::primary(1, cfg());
    h.members[2].priority = 7;
    let cmd = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: None,
            at_unix_ms: None,
        },
        &h.inputs(),
        h.now,
    );
    assert!(
        matches!(cmd, Ok(Command::BeginOperation { to: 3, from: 1, .. })),
        "{cmd:?}"
    );
}

/// Runs the source side of a switchover from 1 to 2 until the transfer; returns the
/// actions of the transfer step.
#[test]
fn switchover_source_pauses_demotes_then_transfers() {
    let mut h = H::primary(1, cfg());
    let begin = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: Some(2),
            at_unix_ms: None,
        },
        &h.inputs(),
        h.now,
    );
    let Ok(begin) = begin else {
        panic!("{begin:?}")
    };
    commit_direct(&mut h, begin);
    assert!(h
        .state
        .operation
        .as_ref()
        .is_some_and(|o| o.writes_paused()));
    // Target behind: wait, writes paused.
    h.raft.matched.insert(2, LogIndex(LOG - 1));
    let acts = h.step();
    assert!(hooks(&acts).is_empty());
    h.raft.matched.insert(2, LogIndex(LOG));
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Switchover)
    );
    assert!(
        transfer(&acts).is_none(),
        "no transfer while the service may still run"
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(
        h.state.operation.as_ref().map(|o| o.phase),
        Some(Phase::CuttingOver(Step::Transferring))
    );
    let acts = h.step();
    assert_eq!(transfer(&acts), Some(2));
    assert!(
        promote_of(&acts).is_none(),
        "the automatic rule must not promote the leader mid-transfer"
    );
}

#[test]
fn switchover_destination_promotes_then_completes() {
    let mut h = H::new(2, cfg());
    h.set_leader(Some(1));
    h.settle(); // startup demote
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
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: None,
            auto_commit: true,
            at_unix_ms: 2,
        },
    );
    commit_direct(
        &mut h,
        Command::Demote(Demote {
            node: 1,
            epoch: Epoch(1),
            reason: DemoteReason::Switchover,
            term: Term(1),
            at_unix_ms: 3,
        }),
    );
    h.step();
    h.set_leader(Some(2)); // the transfer landed here
    let acts = h.step();
    assert_eq!(
        promote_of(&acts).map(|p| (p.node, p.epoch, p.reason)),
        Some((2, Epoch(2), PromoteReason::Switchover))
    );
    h.commit(&acts);
    h.settle();
    assert!(h.state.is_primary(2, Epoch(2)));
    assert_eq!(h.state.operation, None);
    assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: Epoch(2) });
}

#[test]
fn switchover_aborts_when_the_target_does_not_catch_up_in_time() {
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: None,
            auto_commit: true,
            at_unix_ms: 2,
        },
    );
    h.raft.matched.insert(2, LogIndex(LOG - 1));
    h.step();
    h.advance(300);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(h.state.operation, None);
    assert_eq!(
        h.p.local_role(),
        LocalRole::Primary { epoch: Epoch(1) },
        "the primary stays"
    );
}

#[test]
fn new_leader_aborts_a_switchover_whose_source_lost_leadership() {
    let mut h = H::new(3, cfg());
    h.set_leader(Some(1));
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
        Command::BeginOperation {
            kind: OperationKind::Switchover,
            from: 1,
            to: 2,
            scheduled_at_unix_ms: None,
            auto_commit: true,
            at_unix_ms: 2,
        },
    );
    h.step();
    h.set_leader(Some(3));
    let acts = h.step();
    let end = proposals(&acts).into_iter().any(|c| {
        matches!(
            c,
            Command::EndOperation {
                outcome: Outcome::Aborted { .. },
                ..
            }
        )
    });
    assert!(end, "{acts:?}");
}

#[test]
fn scheduled_switchover_fires_at_its_time_and_can_be_cancelled() {
    let mut h = H::primary(1, cfg());
    let at = h.now_ms + 5_000;
    let begin = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: Some(2),
            at_unix_ms: Some(at),
        },
        &h.inputs(),
        h.now,
    );
    let Ok(begin) = begin else {
        panic!("{begin:?}")
    };
    commit_direct(&mut h, begin);
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    assert!(reports(&acts).contains(&&StatusNote::SwitchoverScheduled {
        to: 2,
        at_unix_ms: at
    }));
    let cancel =
        h.p.plan_request(&OperatorRequest::CancelSwitchover, &h.inputs(), h.now);
    assert!(matches!(
        cancel,
        Ok(Command::EndOperation {
            outcome: Outcome::Cancelled,
            ..
        })
    ));
    h.advance(5_000);
    let acts = h.step();
    let fired = proposals(&acts).into_iter().any(|c| {
        matches!(
            c,
            Command::AdvanceOperation {
                to_phase: Phase::CuttingOver(Step::Pausing),
                ..
            }
        )
    });
    assert!(fired, "{acts:?}");
    h.commit(&acts);
    assert!(matches!(
        h.p.plan_request(&OperatorRequest::CancelSwitchover, &h.inputs(), h.now),
        Err(Refusal::WrongPhase { .. })
    ));
}

#[test]
fn switchover_scheduled_too_far_ahead_is_refused() {
    let h = H::primary(1, cfg());
    let r = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: Some(2),
            at_unix_ms: Some(h.now_ms + MAX_SCHEDULE_AHEAD_MS + 1),
        },
        &h.inputs(),
        h.now,
    );
    assert!(matches!(r, Err(Refusal::ScheduleTooFar { .. })));
}

/// Issue 13: a time in the past (or exactly now) used to plan an immediate switchover; it
/// is refused on the server with a reason that says what to give instead. A time just
/// ahead is still a scheduled switchover.
#[test]
fn switchover_scheduled_in_the_past_is_refused_with_the_reason() {
    let h = H::primary(1, cfg());
    for at in [0, 1, h.now_ms / 2, h.now_ms - 1, h.now_ms] {
        let r = h.p.plan_request(
            &OperatorRequest::Switchover {
                to: Some(2),
                at_unix_ms: Some(at),
            },
            &h.inputs(),
            h.now,
        );
        match r {
            Err(e @ Refusal::ScheduleInPast { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("not in the future") && text.contains("give a future time"),
                    "{text}"
                );
            }
            other => panic!("at {at} (now {}): {other:?}", h.now_ms),
        }
    }
    let r = h.p.plan_request(
        &OperatorRequest::Switchover {
            to: Some(2),
            at_unix_ms: Some(h.now_ms + 1),
        },
        &h.inputs(),
        h.now,
    );
    assert!(
        matches!(
            r,
            Ok(Command::BeginOperation {
                scheduled_at_unix_ms: Some(t),
                ..
            }) if t == h.now_ms + 1
        ),
        "{r:?}"
    );
    assert_eq!(
        request::check_schedule(10, 10),
        Err(Refusal::ScheduleInPast {
            at_unix_ms: 10,
            now_unix_ms: 10
        })
    );
    assert_eq!(request::check_schedule(11, 10), Ok(11));
    assert_eq!(
        request::check_schedule(10 + MAX_SCHEDULE_AHEAD_MS + 1, 10),
        Err(Refusal::ScheduleTooFar {
            at_unix_ms: 10 + MAX_SCHEDULE_AHEAD_MS + 1
        })
    );
}
