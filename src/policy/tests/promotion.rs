//! Promotion: the leader proposes, the hook runs only after commit and a fresh quorum ack.

use super::*;

#[test]
fn leader_without_primary_proposes_promote_of_itself_at_next_epoch() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let p = promote_of(&acts).cloned();
    assert_eq!(
        p.as_ref().map(|p| (p.node, p.epoch, p.reason, p.previous)),
        Some((1, Epoch(1), PromoteReason::Startup, None))
    );
    assert!(
        hook_of(&acts, HookKind::Promote).is_none(),
        "no promote hook in the same step as the proposal"
    );
}

#[test]
fn promote_hook_runs_only_after_the_promote_is_committed() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    assert!(promote_of(&prop).is_some());
    // Not committed yet: stepping again runs nothing.
    h.advance(5);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Promote).is_none());
    assert!(
        proposals(&acts).is_empty(),
        "no duplicate proposal while one is in flight"
    );
    h.commit(&prop);
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Promote).map(|h| (h.epoch, h.reason)),
        Some((Epoch(1), HookReason::Startup))
    );
    assert_eq!(h.p.local_role(), LocalRole::Promoting { epoch: Epoch(1) });
    assert_eq!(
        h.p.acting_primary(&h.inputs(), h.now),
        None,
        "not acting before the hook succeeded"
    );
    h.finish_hooks(&acts, true);
    h.step();
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), Some(Epoch(1)));
}

#[test]
fn leader_does_not_promote_without_quorum_ack_within_lease() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    h.quorum = false;
    h.advance(100); // exactly lease: expired
    let acts = h.step();
    assert!(promote_of(&acts).is_none());
    assert!(reports(&acts).contains(&&StatusNote::WaitingForQuorum));
}

#[test]
fn promote_hook_waits_for_a_fresh_quorum_ack_after_the_commit() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    h.commit(&prop);
    h.quorum = false;
    h.advance(100);
    let acts = h.step();
    assert!(
        hook_of(&acts, HookKind::Promote).is_none(),
        "lease lapsed: no promote hook"
    );
    assert!(reports(&acts).contains(&&StatusNote::WaitingForQuorum));
    h.quorum = true;
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Promote).map(|p| p.epoch),
        Some(Epoch(1))
    );
}

#[test]
fn committed_promotion_is_not_acted_on_after_losing_leadership() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    h.commit(&prop);
    h.set_leader(Some(2));
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Promote).is_none());
    // Regaining leadership later does not revive it: a new epoch is needed.
    h.set_leader(Some(1));
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Promote).is_none());
    assert_eq!(promote_of(&acts).map(|p| p.epoch), Some(Epoch(2)));
}

#[test]
fn follower_takes_no_leader_actions() {
    let mut h = H::new(2, cfg());
    h.set_leader(Some(1));
    let all = h.settle();
    assert!(proposals(&all).is_empty());
    assert!(transfer(&all).is_none());
}
