use super::*;
use crate::heartbeat::wire::RaftRoleWire;
use crate::types::{Epoch, LogIndex, NodeRole, ResourceHealth, Term};

const MS: Duration = Duration::from_millis(1);
const LOCAL: NodeId = 1;
const LOCAL_INC: u64 = 1111;

fn cfg() -> DetectorConfig {
    DetectorConfig {
        heartbeat_interval: 100 * MS,
        suspect_after: 300 * MS,
        dead_after: 1000 * MS,
    }
}

fn detector(t0: Instant, peers: &[(NodeId, usize)]) -> Detector {
    let local = LocalIdentity {
        id: LOCAL,
        incarnation: LOCAL_INC,
        clock_origin: t0,
    };
    Detector::new(cfg(), local, peers).unwrap()
}

fn hb(from: NodeId, incarnation: u64, seq: u64) -> Heartbeat {
    Heartbeat {
        cluster_id: 9,
        from,
        to: LOCAL,
        incarnation,
        seq,
        term: Term(1),
        member_role: NodeRole::Voter,
        raft_state: RaftRoleWire::Follower,
        leader_id: None,
        primary_epoch: None,
        applied_index: LogIndex(seq),
        health: ResourceHealth::Healthy,
        service: Default::default(),
        report_after_loss: None,
        sent_mono_ns: seq * 1_000_000,
        echo: None,
    }
}

fn accepted(obs: Observation) -> bool {
    matches!(obs, Observation::Accepted { .. })
}

#[test]
fn transitions_at_exact_boundaries() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 1)]);
    let heard = t0 + 5 * MS;
    assert!(accepted(d.observe(heard, 2, 0, &hb(2, 7, 1))));
    let ns = Duration::from_nanos(1);
    let c = cfg();
    assert_eq!(d.liveness(2, heard), Some(Liveness::Alive));
    assert_eq!(
        d.liveness(2, heard + c.suspect_after - ns),
        Some(Liveness::Alive)
    );
    assert_eq!(
        d.liveness(2, heard + c.suspect_after),
        Some(Liveness::Suspect)
    );
    assert_eq!(
        d.liveness(2, heard + c.dead_after - ns),
        Some(Liveness::Suspect)
    );
    assert_eq!(d.dead_since(2, heard + c.dead_after - ns), None);
    assert_eq!(d.liveness(2, heard + c.dead_after), Some(Liveness::Dead));
    assert_eq!(
        d.dead_since(2, heard + c.dead_after + 50 * MS),
        Some(heard + c.dead_after)
    );
    let st = d.status(2, heard + c.dead_after + 50 * MS).unwrap();
    assert_eq!(st.state, Liveness::Dead);
    assert_eq!(st.links, vec![Liveness::Dead]);
    assert_eq!(st.last_seen_age, Some(c.dead_after + 50 * MS));
    assert_eq!(st.dead_since, Some(heard + c.dead_after));
}

#[test]
fn never_heard_is_unknown_and_counts_as_dead() {
    let t0 = Instant::now();
    let d = detector(t0, &[(2, 2), (3, 1)]);
    let v = d.view(t0 + 10 * cfg().dead_after);
    assert_eq!(v.peers.len(), 2);
    let st = v.peer(2).unwrap();
    assert_eq!(st.state, Liveness::Unknown);
    assert!(st.state.counts_as_dead());
    assert_eq!(st.links, vec![Liveness::Unknown, Liveness::Unknown]);
    assert_eq!(st.last_seen_age, None);
    assert_eq!(st.dead_since, None);
    assert_eq!(st.last, None);
    assert_eq!(d.next_transition(t0), None);
    assert!(!Liveness::Suspect.counts_as_dead());
}

#[test]
fn one_live_link_keeps_node_alive() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 2)]);
    assert!(accepted(d.observe(t0, 2, 0, &hb(2, 7, 1))));
    assert!(accepted(d.observe(t0, 2, 1, &hb(2, 7, 1))));
    // Only link 0 keeps delivering, every 100 ms, for 2 s.
    let mut last = t0;
    for seq in 2..=21u64 {
        last = t0 + 100 * MS * (seq as u32 - 1);
        assert!(accepted(d.observe(last, 2, 0, &hb(2, 7, seq))));
    }
    let now = last + 10 * MS;
    let st = d.status(2, now).unwrap();
    assert_eq!(st.links, vec![Liveness::Alive, Liveness::Dead]);
    assert_eq!(st.state, Liveness::Alive);
    assert_eq!(d.dead_since(2, now), None);
    // Link 0 goes silent too: dead once both are, from link 0's last heartbeat.
    let c = cfg();
    assert_eq!(
        d.liveness(2, last + c.suspect_after),
        Some(Liveness::Suspect)
    );
    assert_eq!(d.liveness(2, last + c.dead_after), Some(Liveness::Dead));
    assert_eq!(
        d.dead_since(2, last + c.dead_after),
        Some(last + c.dead_after)
    );
}

#[test]
fn duplicate_and_reordered_seq_ignored_per_link() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 2)]);
    assert!(accepted(d.observe(t0, 2, 0, &hb(2, 7, 5))));
    assert_eq!(d.observe(t0 + MS, 2, 0, &hb(2, 7, 5)), Observation::Stale);
    assert_eq!(d.observe(t0 + MS, 2, 0, &hb(2, 7, 4)), Observation::Stale);
    // Seq 4 is new on link 1 (it arrived late there): the link is heard, but the payload
    // stays the newer seq 5.
    assert!(accepted(d.observe(t0 + 2 * MS, 2, 1, &hb(2, 7, 4))));
    let st = d.status(2, t0 + 2 * MS).unwrap();
    assert_eq!(st.links, vec![Liveness::Alive, Liveness::Alive]);
    assert_eq!(st.last.as_ref().map(|h| h.seq), Some(5));
    assert!(accepted(d.observe(t0 + 3 * MS, 2, 0, &hb(2, 7, 6))));
    assert_eq!(
        d.status(2, t0 + 3 * MS).unwrap().last.map(|h| h.seq),
        Some(6)
    );
    // A stale datagram does not refresh the link: link 1 was last heard at t0+2ms.
    assert_eq!(
        d.observe(t0 + 500 * MS, 2, 1, &hb(2, 7, 3)),
        Observation::Stale
    );
    let st = d.status(2, t0 + 2 * MS + cfg().suspect_after).unwrap();
    assert_eq!(st.links[1], Liveness::Suspect);
}

#[test]
fn new_incarnation_is_a_restart_and_old_one_is_retired() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 1)]);
    assert_eq!(
        d.observe(t0, 2, 0, &hb(2, 7, 100)),
        Observation::Accepted {
            restarted: false,
            changed: true
        }
    );
    // The new process starts its sequence low again: accepted because tracking resets.
    assert_eq!(
        d.observe(t0 + MS, 2, 0, &hb(2, 8, 1)),
        Observation::Accepted {
            restarted: true,
            changed: true
        }
    );
    let st = d.status(2, t0 + MS).unwrap();
    assert_eq!(st.incarnation, Some(8));
    assert_eq!(st.restarts, 1);
    assert_eq!(st.last.map(|h| h.seq), Some(1));
    // A late datagram of the old process is stale, and does not count as another restart.
    assert_eq!(
        d.observe(t0 + 2 * MS, 2, 0, &hb(2, 7, 101)),
        Observation::Stale
    );
    assert!(accepted(d.observe(t0 + 3 * MS, 2, 0, &hb(2, 8, 2))));
    let st = d.status(2, t0 + 3 * MS).unwrap();
    assert_eq!((st.incarnation, st.restarts), (Some(8), 1));
}

#[test]
fn retired_incarnations_are_bounded() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 1)]);
    let total = RETIRED_INCARNATIONS_KEPT as u64 + 2;
    for inc in 0..total {
        assert!(accepted(d.observe(t0, 2, 0, &hb(2, inc, 1))));
    }
    assert_eq!(d.status(2, t0).unwrap().restarts, total - 1);
    // The oldest incarnation fell out of the window and reads as a restart again;
    // the newest retired one is still rejected.
    assert_eq!(
        d.observe(t0, 2, 0, &hb(2, total - 2, 9)),
        Observation::Stale
    );
    assert!(accepted(d.observe(t0, 2, 0, &hb(2, 0, 9))));
}

#[test]
fn unknown_peer_link_and_misaddressed_are_reported_and_ignored() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 1)]);
    let before = d.view(t0);
    assert_eq!(d.observe(t0, 9, 0, &hb(9, 7, 1)), Observation::UnknownPeer);
    assert_eq!(d.observe(t0, 2, 1, &hb(2, 7, 1)), Observation::UnknownLink);
    assert_eq!(d.observe(t0, 2, 0, &hb(3, 7, 1)), Observation::Misaddressed);
    let mut wrong_to = hb(2, 7, 1);
    wrong_to.to = 5;
    assert_eq!(d.observe(t0, 2, 0, &wrong_to), Observation::Misaddressed);
    assert_eq!(d.view(t0), before);
}

/// A heartbeat from peer 2 echoing our timestamp `our_sent` after it held it `held`.
fn echoing(seq: u64, our_sent: Duration, held: Duration, inc: u64) -> Heartbeat {
    let mut h = hb(2, 7, seq);
    h.echo = Some(Echo {
        peer_sent_mono_ns: duration_ns(our_sent),
        held_ns: duration_ns(held),
        incarnation: inc,
    });
    h
}

#[test]
fn rtt_from_echo_and_ewma_converges() {
    let t0 = Instant::now(); // our clock origin
    let mut d = detector(t0, &[(2, 1)]);
    // We sent at origin+1000ms; the peer held it 30 ms; we got the reply at origin+1130ms:
    // 100 ms on the wire (round trip).
    let sent = 1000 * MS;
    assert!(accepted(d.observe(
        t0 + sent + 130 * MS,
        2,
        0,
        &echoing(1, sent, 30 * MS, LOCAL_INC)
    )));
    assert_eq!(d.status(2, t0 + sent).unwrap().rtt, Some(100 * MS));
    // One 20 ms sample moves the average by exactly 1/8 of the difference.
    let sent = 2000 * MS;
    assert!(accepted(d.observe(
        t0 + sent + 25 * MS,
        2,
        0,
        &echoing(2, sent, 5 * MS, LOCAL_INC)
    )));
    assert_eq!(d.status(2, t0 + sent).unwrap().rtt, Some(90 * MS));
    // Then a steady 10 ms converges to within 0.5 ms.
    for seq in 3..60u64 {
        let sent = 1000 * MS * seq as u32;
        assert!(accepted(d.observe(
            t0 + sent + 12 * MS,
            2,
            0,
            &echoing(seq, sent, 2 * MS, LOCAL_INC)
        )));
    }
    let rtt = d.status(2, t0).unwrap().rtt.unwrap();
    assert!(rtt >= 10 * MS && rtt < 10 * MS + MS / 2, "rtt {rtt:?}");
}

#[test]
fn bogus_echoes_give_no_rtt() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 1)]);
    let now = t0 + 1000 * MS;
    // Echo of a previous incarnation of us.
    assert!(accepted(d.observe(
        now,
        2,
        0,
        &echoing(1, 500 * MS, MS, LOCAL_INC + 1)
    )));
    // Timestamp from our future.
    assert!(accepted(d.observe(
        now,
        2,
        0,
        &echoing(2, 2000 * MS, MS, LOCAL_INC)
    )));
    // Held longer than the whole round trip.
    assert!(accepted(d.observe(
        now,
        2,
        0,
        &echoing(3, 900 * MS, 200 * MS, LOCAL_INC)
    )));
    assert_eq!(d.status(2, now).unwrap().rtt, None);
    // A sane one is then taken.
    assert!(accepted(d.observe(
        now,
        2,
        0,
        &echoing(4, 900 * MS, 40 * MS, LOCAL_INC)
    )));
    assert_eq!(d.status(2, now).unwrap().rtt, Some(60 * MS));
}

#[test]
fn echo_for_returns_peer_timestamp_and_hold_time() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 1)]);
    assert_eq!(d.echo_for(2, t0), None);
    let h = hb(2, 7, 3); // sent_mono_ns = 3 ms on the peer's clock
    assert!(accepted(d.observe(t0 + 40 * MS, 2, 0, &h)));
    assert_eq!(
        d.echo_for(2, t0 + 45 * MS),
        Some(Echo {
            peer_sent_mono_ns: 3_000_000,
            held_ns: 5_000_000,
            incarnation: 7
        })
    );
    assert_eq!(d.echo_for(9, t0), None);
    assert_eq!(d.local().mono_ns(t0 + 45 * MS), 45_000_000);
}

#[test]
fn changed_flag_only_for_material_changes() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 1)]);
    let flags = |o: Observation| match o {
        Observation::Accepted { restarted, changed } => (restarted, changed),
        other => panic!("not accepted: {other:?}"),
    };
    assert_eq!(flags(d.observe(t0, 2, 0, &hb(2, 7, 1))), (false, true));
    // Same state, new seq/applied index: nothing a watcher must see at once.
    assert_eq!(
        flags(d.observe(t0 + MS, 2, 0, &hb(2, 7, 2))),
        (false, false)
    );
    let mut h = hb(2, 7, 3);
    h.term = Term(2);
    assert_eq!(flags(d.observe(t0 + 2 * MS, 2, 0, &h)), (false, true));
    let mut h = hb(2, 7, 4);
    h.term = Term(2);
    h.primary_epoch = Some(Epoch(4));
    assert_eq!(flags(d.observe(t0 + 3 * MS, 2, 0, &h)), (false, true));
    // Coming back from suspect is a change even with an unchanged payload.
    let later = t0 + 3 * MS + cfg().suspect_after;
    let mut h = hb(2, 7, 5);
    h.term = Term(2);
    h.primary_epoch = Some(Epoch(4));
    assert_eq!(flags(d.observe(later, 2, 0, &h)), (false, true));
}

#[test]
fn next_transition_walks_the_boundaries() {
    let t0 = Instant::now();
    let mut d = detector(t0, &[(2, 1), (3, 1)]);
    let c = cfg();
    assert!(accepted(d.observe(t0, 2, 0, &hb(2, 7, 1))));
    assert!(accepted(d.observe(t0 + 50 * MS, 3, 0, &hb(3, 7, 1))));
    assert_eq!(d.next_transition(t0), Some(t0 + c.suspect_after));
    assert_eq!(
        d.next_transition(t0 + c.suspect_after),
        Some(t0 + 50 * MS + c.suspect_after)
    );
    assert_eq!(
        d.next_transition(t0 + 50 * MS + c.suspect_after),
        Some(t0 + c.dead_after)
    );
    assert_eq!(d.next_transition(t0 + 50 * MS + c.dead_after), None);
}

#[test]
fn config_and_peer_list_are_validated() {
    let t0 = Instant::now();
    let local = LocalIdentity {
        id: LOCAL,
        incarnation: 1,
        clock_origin: t0,
    };
    let mut c = cfg();
    c.dead_after = c.suspect_after;
    assert!(matches!(
        Detector::new(c, local, &[]),
        Err(DetectorError::DeadNotAfterSuspect { .. })
    ));
    let mut c = cfg();
    c.suspect_after = c.heartbeat_interval;
    assert!(matches!(
        Detector::new(c, local, &[]),
        Err(DetectorError::SuspectNotAfterInterval { .. })
    ));
    let mut c = cfg();
    c.heartbeat_interval = Duration::ZERO;
    assert!(matches!(
        Detector::new(c, local, &[]),
        Err(DetectorError::IntervalTooShort { .. })
    ));
    assert_eq!(
        Detector::new(cfg(), local, &[(2, 1), (2, 1)]).err(),
        Some(DetectorError::DuplicatePeer { peer: 2 })
    );
    assert_eq!(
        Detector::new(cfg(), local, &[(LOCAL, 1)]).err(),
        Some(DetectorError::PeerIsLocal { peer: LOCAL })
    );
    assert_eq!(
        Detector::new(cfg(), local, &[(2, 0)]).err(),
        Some(DetectorError::BadLinkCount { peer: 2, links: 0 })
    );
    assert!(Detector::new(cfg(), local, &[(2, MAX_LINKS_PER_PEER + 1)]).is_err());
    let many: Vec<(NodeId, usize)> = (2..(MAX_PEERS as u64 + 3)).map(|id| (id, 1)).collect();
    assert!(matches!(
        Detector::new(cfg(), local, &many),
        Err(DetectorError::TooManyPeers { .. })
    ));
    let msg = DetectorError::DeadNotAfterSuspect {
        dead_after: MS,
        suspect_after: MS,
    }
    .to_string();
    assert!(msg.contains("raise dead_after"), "{msg}");
}

#[test]
fn view_is_sorted_by_peer_id() {
    let t0 = Instant::now();
    let d = detector(t0, &[(5, 1), (2, 1), (3, 1)]);
    let ids: Vec<NodeId> = d.view(t0).peers.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![2, 3, 5]);
}
