//! Maintenance mode and drained nodes.

use super::*;

#[test]
fn maintenance_freezes_failover_transfer_fence_and_restarts() {
    // Leader without primary: no promotion.
    let mut h = H::new(
        1,
        PolicyConfig {
            fencing: FencingMode::Required,
            ..cfg()
        },
    );
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "upgrade".into(),
            at_unix_ms: 1,
        },
    );
    let all = h.settle();
    assert!(proposals(&all).is_empty());
    assert!(reports(&all).contains(&&StatusNote::Maintenance {
        reason: "upgrade".into()
    }));
    // Acting primary with a failing service: no restart, no hand-over.
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    h.monitor(false, 5);
    let all = h.settle();
    assert!(hooks(&all).is_empty() && proposals(&all).is_empty() && transfer(&all).is_none());
    // Recorded primary dead, this leader would fence and promote: frozen.
    let mut h = after_primary_loss(FencingMode::Required, dead());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    let all = h.settle();
    assert!(hooks(&all).is_empty() && proposals(&all).is_empty());
}

#[test]
fn maintenance_off_resumes_failover() {
    let mut h = H::new(1, cfg());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    h.settle();
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: false,
            reason: String::new(),
            at_unix_ms: 2,
        },
    );
    h.settle();
    assert!(h.state.is_primary(1, Epoch(1)));
}

#[test]
fn drained_primary_moves_away() {
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 1,
            drained: true,
            at_unix_ms: 1,
        },
    );
    let acts = h.step();
    assert_eq!(
        hook_of(&acts, HookKind::Demote).map(|d| d.reason),
        Some(HookReason::Maintenance)
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    h.commit(&acts);
    assert_eq!(h.state.primary, None);
    assert_eq!(transfer(&h.step()), Some(2));
}

#[test]
fn drained_primary_with_no_other_candidate_stays() {
    let mut h = H::primary(1, cfg());
    for o in h.peers.values_mut() {
        o.alive = false;
    }
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 1,
            drained: true,
            at_unix_ms: 1,
        },
    );
    let acts = h.step();
    assert!(hooks(&acts).is_empty());
    assert!(
        reports(&acts).contains(&&StatusNote::NoCandidateForHandover {
            reason: DemoteReason::Drained
        })
    );
}
