//! Candidate choice on the leader: ranking, leadership transfer, who is never chosen.

use super::*;
use crate::types::LogIndex;

#[test]
fn leader_transfers_leadership_to_a_better_candidate_instead_of_promoting() {
    let mut h = H::new(2, cfg());
    h.members[0].priority = 5; // node 1 is preferred
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(transfer(&acts), Some(1));
    assert!(promote_of(&acts).is_none());
}

#[test]
fn equal_candidates_lowest_id_is_chosen() {
    let mut h = H::new(3, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert_eq!(transfer(&h.step()), Some(1));
}

#[test]
fn transfer_waits_until_the_target_has_every_entry() {
    let mut h = H::new(2, cfg());
    h.members[0].priority = 5;
    let acts = h.step();
    h.finish_hooks(&acts, true);
    h.raft.matched.insert(1, LogIndex(LOG - 3));
    let acts = h.step();
    assert_eq!(transfer(&acts), None);
    assert!(reports(&acts).contains(&&StatusNote::WaitingForCatchUp {
        to: 1,
        lag: Some(3)
    }));
    h.raft.matched.insert(1, LogIndex(LOG));
    assert_eq!(transfer(&h.step()), Some(1));
}

#[test]
fn transfer_timeout_retargets_next_best_then_falls_back_to_self() {
    let mut h = H::new(3, cfg());
    h.members[0].priority = 9;
    h.members[1].priority = 5;
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert_eq!(transfer(&h.step()), Some(1));
    h.advance(300);
    assert_eq!(transfer(&h.step()), Some(2), "node 1 timed out: next best");
    h.advance(300);
    let acts = h.step();
    assert_eq!(
        promote_of(&acts).map(|p| p.node),
        Some(3),
        "both timed out: promote self"
    );
}

#[test]
fn transfer_is_emitted_once_per_target() {
    let mut h = H::new(3, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert_eq!(transfer(&h.step()), Some(1));
    h.advance(10);
    assert_eq!(transfer(&h.step()), None);
}

#[test]
fn witness_never_receives_leadership_or_the_primary_role() {
    let mut h = H::new(2, cfg());
    h.members[0].role = NodeRole::Witness;
    h.members[0].priority = 100;
    let all = h.settle();
    assert!(transfer(&all).is_none());
    assert!(h.state.is_primary(2, Epoch(1)));
}

#[test]
fn leader_that_is_a_witness_hands_leadership_to_a_voter() {
    let mut h = H::new(3, cfg());
    h.members[2].role = NodeRole::Witness;
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(transfer(&acts), Some(1));
    assert!(promote_of(&acts).is_none());
}

#[test]
fn drained_and_unhealthy_and_lagging_and_dead_nodes_are_not_chosen() {
    let mut h = H::new(3, cfg());
    h.members[2].priority = 0; // self is the fallback
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 1,
            drained: true,
            at_unix_ms: 1,
        },
    );
    if let Some(o) = h.peers.get_mut(&2) {
        o.health = ResourceHealth::Unhealthy;
    }
    let acts = h.step();
    h.finish_hooks(&acts, true);
    assert_eq!(promote_of(&h.step()).map(|p| p.node), Some(3));

    let mut h = H::new(
        3,
        PolicyConfig {
            max_lag_on_failover: 5,
            ..cfg()
        },
    );
    h.members[2].priority = 0;
    h.raft.matched.insert(1, LogIndex(0));
    if let Some(o) = h.peers.get_mut(&2) {
        o.alive = false;
    }
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(transfer(&acts), None);
    assert_eq!(promote_of(&acts).map(|p| p.node), Some(3));
}

#[test]
fn no_eligible_candidate_is_reported_with_reasons() {
    let mut h = H::new(3, cfg());
    h.local_health = ResourceHealth::Unhealthy;
    for o in h.peers.values_mut() {
        o.alive = false;
    }
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    let found = reports(&acts)
        .into_iter()
        .any(|n| matches!(n, StatusNote::NoEligibleCandidate { reasons } if reasons.len() == 3));
    assert!(found, "{acts:?}");
}
