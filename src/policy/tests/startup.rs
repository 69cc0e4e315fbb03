//! Startup: the demote-first start, incarnations, and rejoin of a former primary.

use super::*;

#[test]
fn startup_runs_the_demote_hook_before_anything_else() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    let hk = hook_of(&acts, HookKind::Demote).map(|h| h.reason);
    assert_eq!(hk, Some(HookReason::Startup));
    assert!(
        proposals(&acts).is_empty(),
        "no proposal before the startup demote finished"
    );
    assert_eq!(
        h.p.claims_primary(),
        Some(Epoch(0)),
        "claims an unknown epoch until demoted"
    );
}

#[test]
fn startup_demote_failure_is_retried_after_backoff() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, false);
    assert!(
        hook_of(&h.step(), HookKind::Demote).is_none(),
        "no retry before the backoff"
    );
    h.advance(200);
    assert!(hook_of(&h.step(), HookKind::Demote).is_some());
}

#[test]
fn restarted_node_named_primary_in_loaded_state_needs_a_new_epoch_to_promote() {
    let mut h = H::new(1, cfg());
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
    let all = h.settle();
    let promote_hooks: Vec<_> = hooks(&all)
        .into_iter()
        .filter(|h| h.hook == HookKind::Promote)
        .map(|h| h.epoch)
        .collect();
    assert_eq!(
        promote_hooks,
        vec![2],
        "the promote hook runs only for the newly committed epoch 2"
    );
    assert!(h.state.is_primary(1, Epoch(2)));
}

#[test]
fn promote_proposed_by_a_previous_incarnation_that_commits_late_is_not_acted_on() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    let Some(old) = promote_of(&prop).cloned() else {
        panic!("no proposal")
    };
    // The daemon crashes before the entry commits and restarts as a new process.
    h.p = Policy::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    // The next leader inherited the entry and commits it now.
    commit_direct(&mut h, Command::Promote(old));
    let all = h.settle();
    let promote_hooks: Vec<_> = hooks(&all)
        .into_iter()
        .filter(|r| r.hook == HookKind::Promote)
        .map(|r| r.epoch)
        .collect();
    assert_eq!(
        promote_hooks,
        vec![2],
        "only an epoch this process proposed"
    );
    assert!(h.state.is_primary(1, Epoch(2)));
}

#[test]
fn former_primary_runs_rejoin_after_startup_once_another_node_is_primary() {
    let mut h = H::new(1, cfg());
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
    h.set_leader(Some(2));
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Demote).is_some());
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let rejoin = hook_of(&acts, HookKind::Rejoin).map(|r| r.target);
    assert_eq!(rejoin, Some(Some(2)));
    assert_eq!(h.p.local_role(), LocalRole::Rejoining);
    h.finish_hooks(&acts, true);
    assert!(
        hook_of(&h.step(), HookKind::Rejoin).is_none(),
        "rejoin runs once"
    );
}

#[test]
fn never_primary_node_does_not_rejoin() {
    let mut h = H::new(3, cfg());
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
    h.set_leader(Some(1));
    let all = h.settle();
    assert!(hook_of(&all, HookKind::Rejoin).is_none());
}
