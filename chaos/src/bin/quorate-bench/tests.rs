//! Unit tests of the benchmark's pure parts (lists, change tracking, lag, explanations).

use crate::common::*;
use crate::failback::*;
use crate::false_positives::*;
use quorate::api::wire::NodeStatus;
use quorate::cluster::{HistoryEntry, HistoryEvent};
#[test]
fn lapse_totals_keep_what_a_restarted_daemon_had_counted() {
    let st = |l, h| NodeStatus {
        lease_lapses: l,
        lease_lapses_healed: h,
        ..NodeStatus::default()
    };
    let mut t = LapseTotals::default();
    t.observe(1, &st(2, 1));
    t.observe(2, &st(1, 1));
    t.observe(1, &st(3, 2));
    // Node 1 restarted: its counters start again from 0.
    t.observe(1, &st(0, 0));
    t.observe(1, &st(1, 1));
    assert_eq!(t.totals(), (3 + 1 + 1, 2 + 1 + 1));
}

#[test]
fn role_changes_outside_fault_windows_and_operations_are_unexplained() {
    use quorate::cluster::{DemoteReason, PromoteReason};
    let e = |seq, at_unix_ms, event| HistoryEntry {
        seq,
        at_unix_ms,
        term: None,
        event,
    };
    let promoted = |reason| HistoryEvent::Promoted {
        node: 2,
        epoch: quorate::types::Epoch(3),
        previous: Some(1),
        reason,
    };
    let demoted = |reason| HistoryEvent::Demoted {
        node: 1,
        epoch: quorate::types::Epoch(2),
        reason,
    };
    let windows = [(10_000, 20_000)];
    let events = vec![
        e(0, 5_000, promoted(PromoteReason::Switchover)),
        e(1, 5_000, demoted(DemoteReason::Switchover)),
        e(2, 12_000, demoted(DemoteReason::LeaseLost)),
        e(3, 12_500, promoted(PromoteReason::Failover)),
        e(4, 40_000, demoted(DemoteReason::LeaseLost)),
        e(5, 40_001, promoted(PromoteReason::Failover)),
    ];
    let u = unexplained_role_changes(&events, &windows);
    assert_eq!(u.len(), 2, "{u:?}");
    assert!(u[0].starts_with("#4") && u[1].starts_with("#5"), "{u:?}");
}

use quorate::api::wire::{Counters, Membership, PeerStatus};

fn status(term: u64, leader: Option<u64>, epoch: u64, primary: Option<u64>) -> NodeStatus {
    NodeStatus {
        cluster: "bench".into(),
        node_id: 1,
        role: "voter".into(),
        raft_state: "follower".into(),
        term,
        leader_id: leader,
        membership: Membership::default(),
        committed_index: 0,
        applied_index: 0,
        last_log_index: 0,
        snapshot_index: None,
        purged_index: None,
        quorum_ack_age_ms: None,
        uptime_ms: 0,
        peers: Vec::new(),
        counters: Counters::default(),
        primary,
        epoch: quorate::types::Epoch(epoch),
        acting_primary: false,
        local_role: "replica".into(),
        health: "unknown".into(),
        maintenance: None,
        drained: Vec::new(),
        last_failover: None,
        failed_over: None,
        operation: None,
        notes: Vec::new(),
        raft_failure: None,
        reseeding: false,
        last_reload: None,
        log_bytes: 0,
        ..NodeStatus::default()
    }
}

fn peer(id: u64, heartbeat: &str, matched: Option<u64>) -> PeerStatus {
    PeerStatus {
        id,
        role: "voter".into(),
        api: String::new(),
        heartbeat: heartbeat.into(),
        last_seen_ms: None,
        rtt_ms: None,
        matched_index: matched,
        applied_index: None,
        health: None,
        incarnation: None,
        service: None,
    }
}

#[test]
fn lists_parse_with_spaces_and_reject_junk() {
    assert_eq!(parse_list::<usize>("3, 5,7", "nodes"), Ok(vec![3, 5, 7]));
    let err = parse_list::<usize>("3,x", "nodes").unwrap_err();
    assert!(err.contains("\"x\"") && err.contains("--nodes"), "{err}");
    assert!(parse_list::<u64>("", "entries").is_err());
}

#[test]
fn a_steady_cluster_shows_no_change_and_a_new_leader_shows_one() {
    let mut w = Watch::default();
    for id in 1..=3 {
        w.observe(0.0, id, &status(4, Some(1), 2, Some(1)));
    }
    // The baseline itself is one "change" from nothing; the bench clears it.
    assert_eq!((w.leader_changes.len(), w.primary_changes.len()), (1, 1));
    w.leader_changes.clear();
    w.primary_changes.clear();
    for id in 1..=3 {
        w.observe(1.0, id, &status(4, Some(1), 2, Some(1)));
    }
    assert!(w.leader_changes.is_empty() && w.primary_changes.is_empty());
    // Node 2 sees a new term with leader 2 and a new epoch; node 3 still reports the old
    // term (behind): only one change each, and the old news is not a change back.
    w.observe(2.0, 2, &status(5, Some(2), 3, Some(2)));
    w.observe(2.0, 3, &status(4, Some(1), 2, Some(1)));
    w.observe(2.2, 3, &status(5, Some(2), 3, Some(2)));
    assert_eq!(w.leader_changes.len(), 1);
    assert_eq!(w.leader_changes[0].from, Some(1));
    assert_eq!(w.leader_changes[0].to, Some(2));
    assert_eq!(w.primary_changes.len(), 1);
    assert_eq!(w.primary_changes[0].at, 3);
    // A candidate's new term without a leader is not a leader change.
    w.observe(3.0, 1, &status(6, None, 3, Some(2)));
    assert_eq!(w.leader_changes.len(), 1);
}

#[test]
fn home_is_in_sync_only_when_heard_and_replicated() {
    let mut st = status(3, Some(2), 2, Some(2));
    st.last_log_index = 5_000;
    st.peers = vec![peer(1, "alive", Some(4_100)), peer(3, "alive", Some(5_000))];
    assert_eq!(home_lag(&st, 1), Some(900));
    assert_eq!(home_lag(&st, 3), Some(0));
    st.peers[0] = peer(1, "suspect", Some(5_000));
    assert_eq!(home_lag(&st, 1), None);
    st.peers[0] = peer(1, "alive", None);
    assert_eq!(home_lag(&st, 1), None);
    assert_eq!(home_lag(&st, 9), None);
}
