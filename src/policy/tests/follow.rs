//! Every replica follows the primary: the follow hook after every primary change.

use super::*;

fn promote(h: &mut H, node: NodeId, epoch: u64, reason: PromoteReason, previous: Option<NodeId>) {
    commit_direct(
        h,
        Command::Promote(Promote {
            node,
            epoch: Epoch(epoch),
            reason,
            previous,
            home: None,
            term: Term(1),
            at_unix_ms: 1,
        }),
    );
}

/// Node 3, a replica that does not lead (node 1 does and is the primary at epoch 1), past
/// its startup demote.
fn replica_of_1() -> H {
    let mut h = H::new(3, cfg());
    h.set_leader(Some(1));
    promote(&mut h, 1, 1, PromoteReason::Startup, None);
    let acts = h.step();
    assert!(
        hook_of(&acts, HookKind::Demote).is_some(),
        "startup demote first"
    );
    h.finish_hooks(&acts, true);
    h
}

fn follow_of(acts: &[Action]) -> Option<(Option<NodeId>, Epoch, HookReason, Option<NodeId>)> {
    hook_of(acts, HookKind::Follow).map(|f| (f.target, f.epoch, f.reason, f.previous_primary))
}

#[test]
fn a_replica_follows_the_primary_once_per_primary_change() {
    let mut h = replica_of_1();
    let acts = h.step();
    assert_eq!(
        follow_of(&acts),
        Some((Some(1), Epoch(1), HookReason::Startup, None))
    );
    h.finish_hooks(&acts, true);
    assert_eq!(follow_of(&h.step()), None, "followed once for epoch 1");
    h.advance(10_000);
    assert_eq!(follow_of(&h.step()), None, "and not again later");

    // A failover to node 2: node 3 follows the new primary, told who it was before.
    h.set_leader(Some(2));
    promote(&mut h, 2, 2, PromoteReason::Failover, Some(1));
    let acts = h.step();
    assert_eq!(
        follow_of(&acts),
        Some((Some(2), Epoch(2), HookReason::Failover, Some(1)))
    );
}

#[test]
fn a_failed_follow_is_retried_after_the_backoff_and_status_says_so() {
    let mut h = replica_of_1();
    let acts = h.step();
    assert!(follow_of(&acts).is_some());
    h.finish_hooks(&acts, false);
    let acts = h.step();
    assert_eq!(follow_of(&acts), None, "no retry before the backoff");
    assert!(
        reports(&acts).iter().any(|n| matches!(
            n,
            StatusNote::HookFailed {
                hook: HookKind::Follow,
                attempts: 1
            }
        )),
        "{acts:?}"
    );
    h.advance(250);
    assert!(follow_of(&h.step()).is_some(), "retried after 200 ms");
}

#[test]
fn no_follow_of_a_silent_primary_nor_in_maintenance_nor_on_a_witness() {
    let mut h = replica_of_1();
    h.peers.get_mut(&1).unwrap().alive = false;
    assert_eq!(follow_of(&h.step()), None, "the primary is silent");
    h.peers.get_mut(&1).unwrap().alive = true;

    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "test".into(),
            at_unix_ms: 1,
        },
    );
    assert_eq!(follow_of(&h.step()), None, "maintenance freezes it");

    let mut w = H::new(3, cfg());
    w.members[2].role = NodeRole::Witness;
    w.set_leader(Some(1));
    promote(&mut w, 1, 1, PromoteReason::Startup, None);
    for _ in 0..5 {
        let acts = w.step();
        assert_eq!(
            follow_of(&acts),
            None,
            "a witness holds no copy of the service"
        );
        w.finish_hooks(&acts, true);
    }
}

#[test]
fn a_leader_that_is_not_the_primary_does_not_follow() {
    // Node 2 leads while node 1 is the primary: a failover or hand-over is under way, and
    // the leader's own steps (fence, promote) come first.
    let mut h = H::new(2, cfg());
    promote(&mut h, 1, 1, PromoteReason::Startup, None);
    for _ in 0..5 {
        let acts = h.step();
        assert_eq!(follow_of(&acts), None);
        h.finish_hooks(&acts, true);
        h.advance(50);
    }
}

#[test]
fn a_former_primary_rejoins_before_it_follows() {
    let mut h = H::new(3, cfg());
    h.set_leader(Some(1));
    promote(&mut h, 3, 1, PromoteReason::Startup, None);
    promote(&mut h, 1, 2, PromoteReason::Failover, Some(3));
    let acts = h.step();
    h.finish_hooks(&acts, true); // startup demote
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Rejoin).is_some(), "{acts:?}");
    assert_eq!(follow_of(&acts), None, "one hook at a time, rejoin first");
    h.finish_hooks(&acts, true);
    assert_eq!(
        follow_of(&h.step()),
        Some((Some(1), Epoch(2), HookReason::Failover, Some(3)))
    );
}

#[test]
fn a_replica_waits_until_the_primarys_service_says_it_is_primary() {
    let mut h = replica_of_1();
    // The Promote is committed, but the promote hook still runs: the service says replica.
    h.peers.get_mut(&1).unwrap().service.role = Some(crate::types::ServiceRole::Replica);
    assert_eq!(follow_of(&h.step()), None);
    h.peers.get_mut(&1).unwrap().service.role = Some(crate::types::ServiceRole::Primary);
    assert!(follow_of(&h.step()).is_some());
}
