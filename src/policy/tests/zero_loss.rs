//! Zero-loss failover (synchronous replication): every node refreshes its report when the
//! primary is lost; the leader waits, bounded, for every candidate's final report and
//! promotes only the most advanced.

use super::*;
use crate::types::ServiceReport;

fn at(position: u64) -> ServiceReport {
    ServiceReport {
        position: Some(position),
        timeline: Some(1),
        ..ServiceReport::default()
    }
}

/// Node 2 leads; node 1, the primary at epoch 1, is dead. Node 3 is alive. Reports are
/// not final yet: node 2 at 100, node 3 at 100, node 1's last at 150.
fn lost_primary() -> H {
    let mut h = H::new(
        2,
        PolicyConfig {
            zero_loss_failover: true,
            final_report_wait: Duration::from_secs(3),
            ..cfg()
        },
    );
    record_node1_primary(&mut h);
    h.peers.insert(
        1,
        PeerObs {
            service: at(150),
            ..dead()
        },
    );
    h.local_service = at(100);
    if let Some(p3) = h.peers.get_mut(&3) {
        p3.service = at(100);
    }
    h
}

/// Node 1 heard, healthy, reporting 150.
fn heard() -> PeerObs {
    PeerObs {
        alive: true,
        health: ResourceHealth::Healthy,
        service: at(150),
        ..PeerObs::default()
    }
}

fn refreshed(acts: &[Action]) -> Option<Epoch> {
    acts.iter().find_map(|a| match a {
        Action::RefreshServiceReport { lost } => Some(*lost),
        _ => None,
    })
}

#[test]
fn every_node_asks_its_monitor_for_a_final_report_once_per_lost_primary() {
    let mut h = lost_primary();
    let acts = h.step();
    assert_eq!(refreshed(&acts), Some(Epoch(1)));
    h.advance(10);
    assert_eq!(refreshed(&h.step()), None, "once per lost epoch");
    // A replica (not the leader) asks too.
    let mut r = lost_primary();
    r.set_leader(Some(3));
    assert_eq!(refreshed(&r.step()), Some(Epoch(1)));
    // Without zero-loss mode nothing is asked.
    let mut plain = lost_primary();
    plain.p = Policy::new(2, cfg());
    assert_eq!(refreshed(&plain.step()), None);
}

#[test]
fn the_leader_waits_for_every_final_report_then_hands_over_to_the_most_advanced() {
    let mut h = lost_primary();
    let acts = h.settle();
    assert!(promote_of(&acts).is_none() && transfer(&acts).is_none());
    assert!(
        h.p.status_notes()
            .contains(&StatusNote::WaitingForFinalReports { nodes: vec![2, 3] }),
        "{:?}",
        h.p.status_notes()
    );
    // Node 2's own final report: still waiting for node 3, whose stale report would
    // make both look equal (and node 2, the lower id, win).
    h.local_report_after_loss = Some(Epoch(1));
    h.advance(10);
    let acts = h.settle();
    assert!(promote_of(&acts).is_none() && transfer(&acts).is_none());
    // Node 3's final report shows it received more before the primary died.
    if let Some(p3) = h.peers.get_mut(&3) {
        p3.service = at(140);
        p3.report_after_loss = Some(Epoch(1));
    }
    h.advance(10);
    let acts = h.settle();
    assert_eq!(transfer(&acts), Some(3), "{acts:?}");
    assert!(promote_of(&acts).is_none());
}

#[test]
fn the_most_advanced_leader_promotes_itself_even_against_a_higher_priority() {
    let mut h = lost_primary();
    h.members[2].priority = 9;
    h.local_service = at(145);
    h.local_report_after_loss = Some(Epoch(1));
    if let Some(p3) = h.peers.get_mut(&3) {
        p3.service = at(120);
        p3.report_after_loss = Some(Epoch(1));
    }
    let acts = h.settle();
    assert_eq!(promote_of(&acts).map(|p| p.node), Some(2), "{acts:?}");
    assert_eq!(transfer(&acts), None);
}

#[test]
fn a_silent_candidate_is_left_out_once_the_wait_is_over() {
    let mut h = lost_primary();
    h.members[2].priority = 9;
    h.local_report_after_loss = Some(Epoch(1));
    let acts = h.settle();
    assert!(promote_of(&acts).is_none() && transfer(&acts).is_none());
    h.advance(2_900);
    let acts = h.settle();
    assert!(promote_of(&acts).is_none(), "still inside the wait");
    h.advance(200);
    let acts = h.settle();
    assert_eq!(promote_of(&acts).map(|p| p.node), Some(2), "{acts:?}");
}

#[test]
fn a_report_final_for_an_older_primary_does_not_count() {
    let mut h = lost_primary();
    h.local_report_after_loss = Some(Epoch(1));
    if let Some(p3) = h.peers.get_mut(&3) {
        p3.service = at(500);
        p3.report_after_loss = Some(Epoch(0));
    }
    let acts = h.settle();
    assert!(promote_of(&acts).is_none() && transfer(&acts).is_none());
}

#[test]
fn a_replica_that_detached_from_a_lost_primary_follows_it_again_when_it_is_heard_again() {
    let mut h = lost_primary();
    h.set_leader(Some(3));
    let alive = heard();
    h.peers.insert(1, alive.clone());
    let acts = h.settle();
    assert!(hook_of(&acts, HookKind::Follow).is_some(), "{acts:?}");
    h.advance(10);
    assert!(hook_of(&h.settle(), HookKind::Follow).is_none(), "once");
    // Lost: the agent detaches (with the refresh).
    h.peers.insert(
        1,
        PeerObs {
            service: at(150),
            ..dead()
        },
    );
    assert_eq!(refreshed(&h.step()), Some(Epoch(1)));
    h.advance(10);
    assert!(
        hook_of(&h.settle(), HookKind::Follow).is_none(),
        "not a silent primary"
    );
    // A blip: heard again, still the primary: follow it again.
    h.peers.insert(1, alive);
    h.advance(10);
    let acts = h.settle();
    assert!(hook_of(&acts, HookKind::Follow).is_some(), "{acts:?}");
}

#[test]
fn the_final_report_waits_for_the_nodes_own_follow_to_end() {
    let mut h = lost_primary();
    h.set_leader(Some(3));
    h.peers.insert(1, heard());
    let acts = h.step();
    h.finish_hooks(&acts, true); // the startup demote
    h.advance(10);
    let acts = h.step();
    let follow = hook_of(&acts, HookKind::Follow).map(|r| r.id);
    assert!(follow.is_some(), "{acts:?}");
    // The primary is lost while the follow still runs: no detach, no report yet.
    h.peers.insert(
        1,
        PeerObs {
            service: at(150),
            ..dead()
        },
    );
    h.advance(10);
    assert_eq!(refreshed(&h.step()), None);
    // The follow ends (it could not reach the primary): now the final report.
    if let Some(id) = follow {
        h.p.observe(Event::HookFinished { id, ok: false }, h.now);
    }
    h.advance(10);
    assert_eq!(refreshed(&h.step()), Some(Epoch(1)));
}

#[test]
fn a_primary_lost_heard_again_and_lost_again_asks_for_a_new_final_report() {
    let mut h = lost_primary();
    h.set_leader(Some(3));
    let alive = heard();
    let lost = PeerObs {
        service: at(150),
        ..dead()
    };
    let acts = h.step();
    assert_eq!(refreshed(&acts), Some(Epoch(1)));
    h.finish_hooks(&acts, true); // the startup demote
                                 // Heard again: reports are no longer final (the replica may stream from it again).
    h.peers.insert(1, alive);
    h.advance(10);
    let acts = h.step();
    assert!(acts.contains(&Action::ServiceReportNotFinal), "{acts:?}");
    h.finish_hooks(&acts, true);
    h.advance(10);
    let acts = h.step();
    assert!(!acts.contains(&Action::ServiceReportNotFinal), "once");
    h.finish_hooks(&acts, false);
    // Lost again, same epoch: a new final report.
    h.peers.insert(1, lost);
    h.advance(10);
    assert_eq!(refreshed(&h.step()), Some(Epoch(1)));
}
