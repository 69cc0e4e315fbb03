//! Fencing the previous primary before a promotion.

use super::*;

#[test]
fn fencing_required_blocks_promotion_until_the_fence_succeeds() {
    let mut h = after_primary_loss(FencingMode::Required, dead());
    let acts = h.step();
    assert!(promote_of(&acts).is_none());
    let fence = hook_of(&acts, HookKind::Fence).map(|f| (f.target, f.epoch));
    assert_eq!(fence, Some((Some(1), Epoch(2))));
    h.finish_hooks(&acts, false);
    let acts = h.step();
    assert!(
        promote_of(&acts).is_none() && hooks(&acts).is_empty(),
        "no promote, no retry before backoff"
    );
    let waiting = reports(&acts).into_iter().any(|n| {
        matches!(
            n,
            StatusNote::WaitingForFence {
                target: 1,
                required: true,
                ..
            }
        )
    });
    assert!(waiting, "status says why: {acts:?}");
    h.advance(200);
    let acts = h.step();
    assert!(
        hook_of(&acts, HookKind::Fence).is_some(),
        "retried after backoff"
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert_eq!(
        promote_of(&acts).map(|p| (p.node, p.epoch, p.previous)),
        Some((2, Epoch(2), Some(1)))
    );
}

#[test]
fn fence_retry_backoff_doubles() {
    let mut h = after_primary_loss(FencingMode::Required, dead());
    let acts = h.step();
    h.finish_hooks(&acts, false);
    h.advance(200);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_some());
    h.finish_hooks(&acts, false);
    h.advance(200);
    assert!(
        hook_of(&h.step(), HookKind::Fence).is_none(),
        "second retry waits 400 ms"
    );
    h.advance(200);
    assert!(hook_of(&h.step(), HookKind::Fence).is_some());
}

#[test]
fn fencing_best_effort_promotes_after_the_fence_fails() {
    let mut h = after_primary_loss(FencingMode::BestEffort, dead());
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_some());
    assert!(promote_of(&acts).is_none(), "fence first");
    h.finish_hooks(&acts, false);
    assert!(promote_of(&h.step()).is_some());
}

#[test]
fn fencing_off_promotes_without_fencing() {
    let mut h = after_primary_loss(FencingMode::Off, dead());
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_none());
    assert!(promote_of(&acts).is_some());
}

#[test]
fn no_fence_when_the_previous_primary_is_alive_and_not_claiming() {
    let alive = PeerObs {
        alive: true,
        ..PeerObs::default()
    };
    let mut h = after_primary_loss(FencingMode::Required, alive);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_none());
    assert!(promote_of(&acts).is_some());
}

#[test]
fn fence_when_the_previous_primary_is_alive_but_still_claiming() {
    let claiming = PeerObs {
        alive: true,
        claims_primary_epoch: Some(Epoch(1)),
        ..PeerObs::default()
    };
    let mut h = after_primary_loss(FencingMode::Required, claiming);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_some());
    assert!(promote_of(&acts).is_none());
}

#[test]
fn no_fence_after_a_committed_demote() {
    let mut h = H::new(
        2,
        PolicyConfig {
            fencing: FencingMode::Required,
            ..cfg()
        },
    );
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
        Command::Demote(Demote {
            node: 1,
            epoch: Epoch(1),
            reason: DemoteReason::Drained,
            term: Term(1),
            at_unix_ms: 2,
        }),
    );
    h.peers.insert(1, dead());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Fence).is_none());
    assert_eq!(
        promote_of(&acts).map(|p| p.reason),
        Some(PromoteReason::Handover)
    );
}
