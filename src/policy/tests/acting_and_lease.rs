//! Safety rules 1 and 3: the acting-primary check and demotion when the lease lapses.

use super::*;

#[test]
fn acting_primary_needs_state_leadership_and_lease() {
    let mut h = H::primary(1, cfg());
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), Some(Epoch(1)));
    let later = h.now + Duration::from_millis(100);
    assert_eq!(h.p.acting_primary(&h.inputs(), later), None, "lease lapsed");
    h.raft.is_leader = false;
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), None, "not leader");
    h.raft.is_leader = true;
    let mut other = h.state.clone();
    other.primary = None;
    let inp = Inputs {
        state: &other,
        ..h.inputs()
    };
    assert_eq!(
        h.p.acting_primary(&inp, h.now),
        None,
        "state does not name it"
    );
}

#[test]
fn primary_demotes_at_once_when_the_lease_lapses_and_proposes_demote_after_the_hook() {
    let mut h = H::primary(1, cfg());
    h.quorum = false;
    h.advance(100);
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    let pos_now = acts
        .iter()
        .position(|a| matches!(a, Action::DemoteNow { .. }));
    let pos_hook = acts
        .iter()
        .position(|a| matches!(a, Action::RunHook(r) if r.hook == HookKind::Demote));
    assert!(
        pos_now < pos_hook && pos_hook.is_some(),
        "DemoteNow first, then the hook"
    );
    assert!(
        proposals(&acts).is_empty(),
        "Demote is proposed only after the hook succeeded"
    );
    assert_eq!(
        h.p.claims_primary(),
        Some(Epoch(1)),
        "still claims while the hook runs"
    );
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let demote = proposals(&acts).into_iter().find_map(|c| match c {
        Command::Demote(d) => Some((d.node, d.epoch, d.reason)),
        _ => None,
    });
    assert_eq!(demote, Some((1, Epoch(1), DemoteReason::LeaseLost)));
}

#[test]
fn primary_demotes_when_no_longer_leader_and_proposes_nothing() {
    let mut h = H::primary(1, cfg());
    h.set_leader(Some(2));
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeadershipLost));
    h.finish_hooks(&acts, true);
    let acts = h.step();
    assert!(proposals(&acts).is_empty());
    assert_eq!(h.p.local_role(), LocalRole::Replica);
    assert_eq!(h.p.claims_primary(), None);
}

#[test]
fn primary_demotes_when_the_state_names_a_newer_primary() {
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::Promote(Promote {
            node: 2,
            epoch: Epoch(2),
            reason: PromoteReason::Failover,
            previous: Some(1),
            home: None,
            term: Term(9),
            at_unix_ms: 5,
        }),
    );
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::Superseded));
}

#[test]
fn lease_lapse_demotes_even_in_maintenance() {
    let mut h = H::primary(1, cfg());
    commit_direct(
        &mut h,
        Command::SetMaintenance {
            on: true,
            reason: "m".into(),
            at_unix_ms: 1,
        },
    );
    h.step();
    h.quorum = false;
    h.advance(150);
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    assert!(hook_of(&acts, HookKind::Demote).is_some());
}

#[test]
fn lease_lapse_while_promote_hook_runs_demotes_when_it_returns() {
    let mut h = H::new(1, cfg());
    let acts = h.step();
    h.finish_hooks(&acts, true);
    let prop = h.step();
    h.commit(&prop);
    let acts = h.step();
    let promote = hook_of(&acts, HookKind::Promote).cloned();
    assert!(promote.is_some());
    h.quorum = false;
    h.advance(100);
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    assert!(hooks(&acts).is_empty(), "one hook at a time");
    if let Some(p) = promote {
        h.p.observe(Event::HookFinished { id: p.id, ok: true }, h.now);
    }
    assert_eq!(h.p.local_role(), LocalRole::Demoting { epoch: Epoch(1) });
    assert!(hook_of(&h.step(), HookKind::Demote).is_some());
}

#[test]
fn failed_demote_keeps_claiming_and_is_retried_after_backoff() {
    let mut h = H::primary(1, cfg());
    h.set_leader(Some(2));
    let acts = h.step();
    h.finish_hooks(&acts, false);
    assert_eq!(h.p.claims_primary(), Some(Epoch(1)));
    assert!(hooks(&h.step()).is_empty());
    h.advance(200);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Demote).is_some());
}

/// Primary 1 leads; its service must move (lease kept), but the demote hook keeps failing.
fn stuck_demote(fencing: FencingMode) -> H {
    let mut h = H::primary(1, PolicyConfig { fencing, ..cfg() });
    commit_direct(
        &mut h,
        Command::SetDrained {
            node: 1,
            drained: true,
            at_unix_ms: 1,
        },
    );
    for _ in 0..DEMOTE_ATTEMPTS_BEFORE_FENCING_HANDOVER {
        let acts = h.step();
        assert!(hook_of(&acts, HookKind::Demote).is_some());
        assert!(
            transfer(&acts).is_none(),
            "no hand-over while the demote may still succeed"
        );
        h.finish_hooks(&acts, false);
        h.advance(200);
    }
    h
}

#[test]
fn leader_whose_demote_keeps_failing_hands_leadership_over_when_fencing_is_on() {
    let mut h = stuck_demote(FencingMode::Required);
    let acts = h.step();
    assert_eq!(
        transfer(&acts),
        Some(2),
        "the next leader will fence this node"
    );
    assert_eq!(
        h.p.claims_primary(),
        Some(Epoch(1)),
        "and it keeps claiming, so it is fenced"
    );
}

#[test]
fn leader_whose_demote_keeps_failing_keeps_leadership_when_fencing_is_off() {
    let mut h = stuck_demote(FencingMode::Off);
    let acts = h.step();
    assert_eq!(transfer(&acts), None, "nobody could stop the old service");
    assert!(
        hook_of(&acts, HookKind::Demote).is_some(),
        "it keeps retrying"
    );
}
