//! Resource failure: local restarts within the budget, then hand-over.

use super::*;

#[test]
fn resource_failure_restarts_locally_at_the_same_epoch_then_hands_over() {
    let mut h = H::primary(1, cfg());
    h.monitor(false, 2);
    let acts = h.step();
    let d = hook_of(&acts, HookKind::Demote).map(|d| d.reason);
    assert_eq!(d, Some(HookReason::Restart));
    let note = proposals(&acts)
        .into_iter()
        .any(|c| matches!(c, Command::NoteRestart { attempt: 1, .. }));
    assert!(note, "restart recorded in history");
    h.commit(&acts);
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Promote).map(|p| (p.epoch, p.reason)),
        Some((Epoch(1), HookReason::Restart))
    );
    h.finish_hooks(&acts, true);
    h.step();
    assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: Epoch(1) });
    // Monitor failures while restarting did not count; new ones do.
    h.monitor(false, 2);
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Failover)
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let demote = proposals(&acts).into_iter().find_map(|c| match c {
        Command::Demote(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(demote, Some(DemoteReason::ResourceFailure));
    h.commit(&acts);
    let acts = h.step();
    assert_eq!(
        transfer(&acts),
        Some(2),
        "then leadership moves to the best other node"
    );
}

#[test]
fn resource_failure_with_no_other_candidate_stays_primary() {
    let mut h = H::primary(
        1,
        PolicyConfig {
            local_restarts: 0,
            ..cfg()
        },
    );
    for o in h.peers.values_mut() {
        o.alive = false;
    }
    h.monitor(false, 2);
    let acts = h.step();
    assert!(hooks(&acts).is_empty());
    assert!(
        reports(&acts).contains(&&StatusNote::NoCandidateForHandover {
            reason: DemoteReason::ResourceFailure
        })
    );
    assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: Epoch(1) });
}

#[test]
fn restart_budget_refills_after_the_restart_window() {
    let mut h = H::primary(
        1,
        PolicyConfig {
            local_restarts: 1,
            ..cfg()
        },
    );
    for o in h.peers.values_mut() {
        o.alive = false; // no hand-over possible
    }
    h.monitor(false, 2);
    let all = h.settle();
    assert_eq!(
        hooks(&all)
            .iter()
            .filter(|r| r.reason == HookReason::Restart)
            .count(),
        2,
        "one restart: demote + promote"
    );
    h.monitor(false, 2);
    assert!(hooks(&h.step()).is_empty(), "budget used up");
    h.advance(60_000);
    h.monitor(false, 1);
    assert_eq!(
        hook_of(&h.step(), HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Restart)
    );
}

#[test]
fn failing_promote_hook_counts_as_a_restart() {
    let mut h = H::new(
        1,
        PolicyConfig {
            local_restarts: 1,
            ..cfg()
        },
    );
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    h.commit(&prop);
    let acts = h.step();
    h.finish_hooks(&acts, false); // promote failed
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Restart)
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Promote).map(|p| p.epoch),
        Some(Epoch(1))
    );
    h.finish_hooks(&acts, false); // fails again: budget exhausted → hand over
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let d = proposals(&acts).into_iter().find_map(|c| match c {
        Command::Demote(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(d, Some(DemoteReason::ResourceFailure));
    // The node judges itself unusable now, and says so to its peers: otherwise they would
    // hand leadership back to it, and it back to them, without end.
    assert_eq!(
        h.p.advertised_health(&h.inputs(), h.now),
        ResourceHealth::Unhealthy,
        "a node whose promote failed past the restart budget advertises itself unhealthy"
    );
    assert_eq!(
        h.local_health,
        ResourceHealth::Healthy,
        "its monitor passes"
    );
}
