//! Lapse grace (issue 13): a brief quorum-ack gap after a leader change does not demote.

use super::*;

fn grace_cfg() -> PolicyConfig {
    PolicyConfig {
        lapse_grace: Duration::from_millis(30),
        ..cfg()
    }
}

fn demote_hooks(acts: &[Action]) -> usize {
    acts.iter()
        .filter(|a| matches!(a, Action::RunHook(r) if r.hook == HookKind::Demote))
        .count()
}

#[test]
fn a_lapse_that_heals_in_the_same_term_is_a_pause_not_a_demote() {
    let mut h = H::primary(1, grace_cfg());
    let e = h.state.epoch;
    let term = h.raft.term;
    h.quorum = false;
    h.advance(101);
    let acts = h.step();
    // Stops acting at once (rule 1), but leaves the service alone.
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    assert_eq!(demote_hooks(&acts), 0, "{acts:?}");
    assert_eq!(h.p.local_role(), LocalRole::Suspended { epoch: e });
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), None);
    assert_eq!(h.p.claims_primary(), Some(e), "its service still runs");
    h.advance(10);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 0, "within the grace: {acts:?}");
    // The followers' answers come back (same term): acting again, same epoch.
    h.quorum = true;
    h.advance(5);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 0, "{acts:?}");
    assert!(
        proposals(&acts).is_empty(),
        "no Demote, no new Promote: {acts:?}"
    );
    assert_eq!(h.raft.term, term);
    assert_eq!(h.p.local_role(), LocalRole::Primary { epoch: e });
    assert_eq!(h.p.acting_primary(&h.inputs(), h.now), Some(e));
    assert_eq!(h.p.lapse_counts(), (1, 1));
}

#[test]
fn a_lapse_that_outlasts_the_grace_demotes_before_anyone_can_be_elected() {
    let mut h = H::primary(1, grace_cfg());
    let e = h.state.epoch;
    let acked = h.now;
    h.quorum = false;
    h.advance(101);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 0);
    // The grace counts from the lapse (acked + lease), not from when it was noticed.
    h.advance(28);
    assert_eq!(demote_hooks(&h.step()), 0);
    h.advance(2);
    assert_eq!(h.now - acked, Duration::from_millis(131));
    let acts = h.step();
    assert_eq!(
        demote_hooks(&acts),
        1,
        "grace over: demote hook now: {acts:?}"
    );
    assert_eq!(h.p.local_role(), LocalRole::Demoting { epoch: e });
    assert_eq!(h.p.lapse_counts(), (1, 0));
}

#[test]
fn a_lapse_noticed_after_the_grace_demotes_at_once() {
    // A node frozen (SIGSTOP) past lease + grace must not suspend: demote in that step.
    let mut h = H::primary(1, grace_cfg());
    h.quorum = false;
    h.advance(400);
    let acts = h.step();
    assert_eq!(demote_now(&acts), Some(DemoteReason::LeaseLost));
    assert_eq!(demote_hooks(&acts), 1, "{acts:?}");
}

#[test]
fn a_suspended_primary_demotes_when_the_term_changes_or_leadership_is_lost() {
    for lose_leadership in [false, true] {
        let mut h = H::primary(1, grace_cfg());
        h.quorum = false;
        h.advance(101);
        h.step();
        assert!(matches!(h.p.local_role(), LocalRole::Suspended { .. }));
        if lose_leadership {
            h.set_leader(Some(2));
        } else {
            // Re-elected in a later term: other leaders may have existed in between.
            h.set_leader(Some(1));
            h.quorum = true;
        }
        h.advance(5);
        let acts = h.step();
        assert_eq!(
            demote_hooks(&acts),
            1,
            "lose_leadership={lose_leadership}: {acts:?}"
        );
    }
}

#[test]
fn a_suspended_primary_that_is_stopping_demotes() {
    let mut h = H::primary(1, grace_cfg());
    h.quorum = false;
    h.advance(101);
    h.step();
    h.p.observe(Event::ShutdownRequested, h.now);
    h.quorum = true;
    h.advance(5);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 1, "{acts:?}");
}

#[test]
fn without_a_grace_a_lapse_demotes_at_once() {
    let mut h = H::primary(1, cfg());
    h.quorum = false;
    h.advance(101);
    let acts = h.step();
    assert_eq!(demote_hooks(&acts), 1, "{acts:?}");
}
