use super::*;
use crate::heartbeat::detector::Liveness;
use crate::heartbeat::wire::Echo;

/// Generous bound for anything the tests wait for over real sockets: they assert behaviour,
/// not speed, and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(5);
const MS: Duration = Duration::from_millis(1);

fn detector_cfg() -> DetectorConfig {
    DetectorConfig {
        heartbeat_interval: 50 * MS,
        suspect_after: 150 * MS,
        dead_after: 300 * MS,
    }
}

fn status(term: u64) -> LocalStatus {
    LocalStatus {
        term: Term(term),
        raft_state: RaftRoleWire::Follower,
        leader_id: None,
        primary_epoch: None,
        applied_index: LogIndex(0),
        health: ResourceHealth::Healthy,
        service: Default::default(),
        report_after_loss: None,
    }
}

fn bind_local() -> std::net::UdpSocket {
    socket::bind_std("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn params(local: NodeId, peers: Vec<(NodeId, Vec<SocketAddr>)>) -> HeartbeatParams {
    HeartbeatParams {
        cluster_name: "test-cluster".into(),
        local,
        member_role: NodeRole::Voter,
        bind: "127.0.0.1:0".parse().unwrap(),
        peers,
        detector: detector_cfg(),
        auth: None,
        incarnation: NEXT_INCARNATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
}

/// Incarnations for the services these tests start: higher at every start, as the
/// daemon's persisted counter makes them.
static NEXT_INCARNATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn wait_view(
    rx: &mut watch::Receiver<PeerView>,
    what: &str,
    pred: impl FnMut(&PeerView) -> bool,
) -> PeerView {
    let res = tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .map(|r| r.map(|v| v.clone()));
    match res {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => panic!("view channel closed while waiting for {what}"),
        Err(_) => panic!(
            "timed out waiting for {what}; last view: {:?}",
            *rx.borrow()
        ),
    }
}

async fn wait_stats(stats: &HeartbeatStats, what: &str, pred: impl Fn(&StatsSnapshot) -> bool) {
    let start = std::time::Instant::now();
    while !pred(&stats.snapshot()) {
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}: {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(10 * MS).await;
    }
}

#[test]
fn rate_limiter_lets_one_through_per_interval_per_reason() {
    let t0 = Instant::now();
    let mut rl = LogRateLimiter::new(DROP_LOG_INTERVAL);
    assert_eq!(rl.allow(DropReason::Malformed, t0), Some(0));
    assert_eq!(rl.allow(DropReason::Malformed, t0 + MS), None);
    assert_eq!(
        rl.allow(DropReason::Malformed, t0 + DROP_LOG_INTERVAL - MS),
        None
    );
    // Another reason has its own budget.
    assert_eq!(rl.allow(DropReason::Foreign, t0 + MS), Some(0));
    // Exactly one interval later: allowed, reporting the two held back.
    assert_eq!(
        rl.allow(DropReason::Malformed, t0 + DROP_LOG_INTERVAL),
        Some(2)
    );
    assert_eq!(
        rl.allow(DropReason::Malformed, t0 + DROP_LOG_INTERVAL + MS),
        None
    );
    assert_eq!(
        rl.allow(DropReason::Malformed, t0 + 3 * DROP_LOG_INTERVAL),
        Some(1)
    );
}

#[test]
fn drop_reasons_index_their_own_slots() {
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
}

#[test]
fn v4_mapped_sources_compare_as_v4() {
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:7421".parse().unwrap();
    assert_eq!(
        normalize(mapped),
        "10.0.0.1:7421".parse::<SocketAddr>().unwrap()
    );
    let v6: SocketAddr = "[fe80::1]:7421".parse().unwrap();
    assert_eq!(normalize(v6), v6);
}

#[tokio::test]
async fn invalid_params_are_rejected() {
    let (_tx, rx) = watch::channel(status(0));
    let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = HeartbeatService::start_with_socket(
        bind_local(),
        params(1, vec![(2, vec![a]), (3, vec![a])]),
        rx.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            HeartbeatError::DuplicateAddress {
                first: 2,
                second: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let err = HeartbeatService::start_with_socket(
        bind_local(),
        params(1, vec![(1, vec![a])]),
        rx.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            HeartbeatError::Detector(DetectorError::PeerIsLocal { peer: 1 })
        ),
        "{err:?}"
    );
    let mut p = params(1, vec![]);
    p.cluster_name.clear();
    let err = HeartbeatService::start_with_socket(bind_local(), p, rx).unwrap_err();
    assert!(matches!(err, HeartbeatError::EmptyClusterName), "{err:?}");
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let (_tx, rx) = watch::channel(status(0));
    let err = HeartbeatService::start_with_socket(bind_local(), params(1, vec![]), rx).unwrap_err();
    assert!(matches!(err, HeartbeatError::NoRuntime), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_each_other_and_detect_a_stopped_one() {
    let sockets: Vec<std::net::UdpSocket> = (0..3).map(|_| bind_local()).collect();
    let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let ids: [NodeId; 3] = [1, 2, 3];
    let mut status_txs = Vec::new();
    let mut handles = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let peers = (0..3)
            .filter(|&j| j != i)
            .map(|j| (ids[j], vec![addrs[j]]))
            .collect();
        let (tx, rx) = watch::channel(status(10 + i as u64));
        handles
            .push(HeartbeatService::start_with_socket(socket, params(ids[i], peers), rx).unwrap());
        status_txs.push(tx);
    }
    for h in &mut handles {
        let v = wait_view(&mut h.view, "every peer alive with an RTT", |v| {
            v.peers.len() == 2
                && v.peers
                    .iter()
                    .all(|p| p.state == Liveness::Alive && p.rtt.is_some())
        })
        .await;
        // The payload is the sender's LocalStatus.
        for p in &v.peers {
            let idx = ids.iter().position(|&id| id == p.id).unwrap();
            assert_eq!(
                p.last.as_ref().map(|hb| hb.term),
                Some(Term(10 + idx as u64))
            );
            assert!(p.rtt.unwrap() < Duration::from_secs(1));
        }
    }
    // A status change on node 1 reaches node 2.
    status_txs[0].send_modify(|s| {
        s.term = Term(77);
        s.raft_state = RaftRoleWire::Leader;
        s.primary_epoch = Some(Epoch(5));
    });
    wait_view(&mut handles[1].view, "node 1's new term", |v| {
        v.peer(1).and_then(|p| p.last.as_ref()).is_some_and(|hb| {
            hb.term == 77
                && hb.raft_state == RaftRoleWire::Leader
                && hb.primary_epoch == Some(Epoch(5))
        })
    })
    .await;

    // Stop node 3: the others see it dead on its only link, and each other still alive.
    let third = handles.pop().unwrap();
    third.shutdown_and_wait().await;
    for h in &mut handles {
        let v = wait_view(&mut h.view, "node 3 dead", |v| {
            v.peer(3).is_some_and(|p| p.state == Liveness::Dead)
        })
        .await;
        let p3 = v.peer(3).unwrap();
        assert!(p3.dead_since.is_some_and(|t| t <= v.at));
        assert!(v
            .peers
            .iter()
            .filter(|p| p.id != 3)
            .all(|p| p.state == Liveness::Alive));
    }
    for h in &handles {
        let s = h.stats.snapshot();
        assert!(s.sent > 0 && s.received > 0, "{s:?}");
        // Every datagram counted carries its bytes: at least a header, at most the bound.
        for (n, bytes) in [(s.sent, s.sent_bytes), (s.received, s.received_bytes)] {
            assert!(bytes > n * wire::HEADER_BYTES as u64, "{s:?}");
            assert!(bytes <= n * wire::MAX_DATAGRAM_BYTES as u64, "{s:?}");
        }
        assert_eq!(
            s.dropped_malformed + s.dropped_foreign + s.dropped_unknown_peer,
            0,
            "{s:?}"
        );
    }
    for h in handles {
        h.shutdown_and_wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_are_counted_and_change_nothing() {
    // Node 1 is the service under test; node 2 is impersonated by a plain socket of the
    // test, node 3 is configured but silent.
    let service_socket = bind_local();
    let service_addr = service_socket.local_addr().unwrap();
    let node2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    node2.set_read_timeout(Some(WAIT)).unwrap();
    let node3 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peers = vec![
        (2, vec![node2.local_addr().unwrap()]),
        (3, vec![node3.local_addr().unwrap()]),
    ];
    let (_tx, rx) = watch::channel(status(4));
    let mut h = HeartbeatService::start_with_socket(service_socket, params(1, peers), rx).unwrap();
    let before = h
        .view
        .borrow()
        .peers
        .iter()
        .map(|p| (p.id, p.state))
        .collect::<Vec<_>>();
    assert_eq!(before, vec![(2, Liveness::Unknown), (3, Liveness::Unknown)]);

    let valid = |seq: u64| Heartbeat {
        cluster_id: wire::cluster_id("test-cluster"),
        from: 2,
        to: 1,
        incarnation: 5,
        seq,
        term: Term(4),
        member_role: NodeRole::Voter,
        raft_state: RaftRoleWire::Follower,
        leader_id: None,
        primary_epoch: None,
        applied_index: LogIndex(0),
        health: ResourceHealth::Healthy,
        service: Default::default(),
        report_after_loss: None,
        sent_mono_ns: 777,
        echo: None,
    };
    let send = |sock: &std::net::UdpSocket, bytes: &[u8]| {
        sock.send_to(bytes, service_addr).unwrap();
    };
    send(&node2, b"hello, not a heartbeat");
    send(&node2, &vec![0u8; MAX_DATAGRAM_BYTES + 200]);
    let mut other_cluster = valid(1);
    other_cluster.cluster_id = wire::cluster_id("another-cluster");
    send(&node2, &wire::encode(&other_cluster).unwrap());
    send(&stranger, &wire::encode(&valid(1)).unwrap()); // right node id, wrong address
    let mut not_for_us = valid(1);
    not_for_us.to = 99;
    send(&node2, &wire::encode(&not_for_us).unwrap());
    let mut unknown = valid(1);
    unknown.from = 42;
    send(&node2, &wire::encode(&unknown).unwrap());
    let mut from_node3_via_node2 = valid(1);
    from_node3_via_node2.from = 3;
    send(&node2, &wire::encode(&from_node3_via_node2).unwrap());

    wait_stats(&h.stats, "all hostile datagrams counted", |s| {
        s.received >= 7
    })
    .await;
    let s = h.stats.snapshot();
    assert_eq!(s.dropped_malformed, 1, "{s:?}");
    assert_eq!(s.dropped_oversized, 1, "{s:?}");
    assert_eq!(s.dropped_foreign, 4, "{s:?}");
    assert_eq!(s.dropped_unknown_peer, 1, "{s:?}");
    assert_eq!(s.dropped_stale, 0, "{s:?}");
    // Nothing changed: let a couple of periodic publications pass, then compare.
    tokio::time::sleep(detector_cfg().heartbeat_interval * 3).await;
    let after = h
        .view
        .borrow()
        .peers
        .iter()
        .map(|p| (p.id, p.state))
        .collect::<Vec<_>>();
    assert_eq!(after, before);

    // The same channel with a valid heartbeat does make node 2 alive (the test can fail).
    let good = wire::encode(&valid(1)).unwrap();
    send(&node2, &good);
    let v = wait_view(&mut h.view, "node 2 alive", |v| {
        v.peer(2).is_some_and(|p| p.state == Liveness::Alive)
    })
    .await;
    assert_eq!(v.peer(3).map(|p| p.state), Some(Liveness::Unknown));
    // A replay of it is stale.
    send(&node2, &good);
    wait_stats(&h.stats, "the replay counted as stale", |s| {
        s.dropped_stale == 1
    })
    .await;

    // The service heartbeats node 2 and echoes node 2's timestamp back.
    let deadline = std::time::Instant::now() + WAIT;
    let mut buf = [0u8; MAX_DATAGRAM_BYTES + 1];
    let echoed = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no echo from the service"
        );
        let (n, from) = node2.recv_from(&mut buf).unwrap();
        assert_eq!(from, service_addr);
        let hb = wire::decode(&buf[..n]).unwrap();
        assert_eq!((hb.from, hb.to, hb.term), (1, 2, Term(4)));
        assert_eq!(hb.cluster_id, wire::cluster_id("test-cluster"));
        assert_eq!(hb.incarnation, h.incarnation());
        if let Some(echo) = hb.echo {
            break echo;
        }
    };
    assert!(
        matches!(
            echoed,
            Echo {
                peer_sent_mono_ns: 777,
                incarnation: 5,
                ..
            }
        ),
        "{echoed:?}"
    );
    h.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_change_is_published_at_once_not_at_the_next_round() {
    // Rounds every 3 s: a view showing node 2 alive well before the second round can only
    // come from the publication on change.
    let interval = Duration::from_secs(3);
    let service_socket = bind_local();
    let service_addr = service_socket.local_addr().unwrap();
    let node2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut p = params(1, vec![(2, vec![node2.local_addr().unwrap()])]);
    p.detector = DetectorConfig {
        heartbeat_interval: interval,
        suspect_after: 3 * interval,
        dead_after: 6 * interval,
    };
    let (_tx, rx) = watch::channel(status(0));
    let mut h = HeartbeatService::start_with_socket(service_socket, p, rx).unwrap();
    let hb = Heartbeat {
        cluster_id: wire::cluster_id("test-cluster"),
        from: 2,
        to: 1,
        incarnation: 1,
        seq: 1,
        term: Term(3),
        member_role: NodeRole::Witness,
        raft_state: RaftRoleWire::Follower,
        leader_id: Some(3),
        primary_epoch: None,
        applied_index: LogIndex(9),
        health: ResourceHealth::Unknown,
        service: Default::default(),
        report_after_loss: None,
        sent_mono_ns: 1,
        echo: None,
    };
    // Let the first round (sent at start, with its publication) pass first.
    wait_stats(&h.stats, "the first round", |s| s.sent >= 1).await;
    node2
        .send_to(&wire::encode(&hb).unwrap(), service_addr)
        .unwrap();
    let seen = tokio::time::timeout(
        interval / 2,
        h.view
            .wait_for(|v| v.peer(2).is_some_and(|p| p.state == Liveness::Alive)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(seen, "change not published before the next round");
    h.shutdown_and_wait().await;
}

#[tokio::test]
async fn start_binds_and_reports_address_in_use() {
    let (_tx, rx) = watch::channel(LocalStatus::default());
    let h = HeartbeatService::start(params(1, vec![]), rx.clone())
        .await
        .unwrap();
    let addr = h.local_addr();
    assert_ne!(addr.port(), 0);
    let mut p = params(1, vec![]);
    p.bind = addr;
    let err = HeartbeatService::start(p, rx).await.unwrap_err();
    assert!(
        matches!(err, HeartbeatError::Socket(SocketError::AddrInUse { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    h.shutdown_and_wait().await;
}

#[tokio::test]
async fn shutdown_by_reference_stops_the_task() {
    let (_tx, rx) = watch::channel(LocalStatus::default());
    let mut h = HeartbeatService::start_with_socket(bind_local(), params(1, vec![]), rx).unwrap();
    h.shutdown();
    h.shutdown(); // idempotent
                  // The task owns the view sender: the channel closes once the task has ended.
    let closed =
        tokio::time::timeout(WAIT, async { while h.view.changed().await.is_ok() {} }).await;
    assert!(closed.is_ok(), "task still running after shutdown()");
}

#[tokio::test]
async fn shutdown_closes_the_socket() {
    let socket = bind_local();
    let addr = socket.local_addr().unwrap();
    let (_tx, rx) = watch::channel(status(0));
    let h = HeartbeatService::start_with_socket(socket, params(1, vec![]), rx).unwrap();
    assert_eq!(h.local_addr(), addr);
    // Still bound while running.
    assert!(socket::bind_std(addr).is_err());
    h.shutdown_and_wait().await;
    let rebound = socket::bind_std(addr);
    assert!(rebound.is_ok(), "{rebound:?}");
}

fn auth(current: u8, previous: Option<u8>) -> Option<HeartbeatAuth> {
    Some(HeartbeatAuth {
        current: [current; 32],
        previous: previous.map(|p| [p; 32]),
    })
}

fn from_node2(incarnation: u64, seq: u64) -> Heartbeat {
    Heartbeat {
        cluster_id: wire::cluster_id("test-cluster"),
        from: 2,
        to: 1,
        incarnation,
        seq,
        term: Term(4),
        member_role: NodeRole::Voter,
        raft_state: RaftRoleWire::Follower,
        leader_id: None,
        primary_epoch: None,
        applied_index: LogIndex(0),
        health: ResourceHealth::Healthy,
        service: Default::default(),
        report_after_loss: None,
        sent_mono_ns: 777,
        echo: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_never_seen_and_is_counted() {
    let sockets: Vec<std::net::UdpSocket> = (0..3).map(|_| bind_local()).collect();
    let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let ids: [NodeId; 3] = [1, 2, 3];
    let keys = [7u8, 7, 8]; // node 3 has the wrong secret
    let mut handles = Vec::new();
    let mut txs = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let peers = (0..3)
            .filter(|&j| j != i)
            .map(|j| (ids[j], vec![addrs[j]]))
            .collect();
        let mut p = params(ids[i], peers);
        p.auth = auth(keys[i], None);
        let (tx, rx) = watch::channel(status(1));
        handles.push(HeartbeatService::start_with_socket(socket, p, rx).unwrap());
        txs.push(tx);
    }
    for (me, other) in [(0usize, 2u64), (1, 1)] {
        wait_view(
            &mut handles[me].view,
            "the peer with the same secret alive",
            |v| v.peer(other).is_some_and(|p| p.state == Liveness::Alive),
        )
        .await;
    }
    for h in &handles[..2] {
        wait_stats(
            &h.stats,
            "node 3's datagrams dropped as unauthenticated",
            |s| s.dropped_unauthenticated >= 3,
        )
        .await;
    }
    // Node 3 hears nothing it can open either, and nobody ever saw it alive.
    wait_stats(&handles[2].stats, "node 3 drops both peers", |s| {
        s.dropped_unauthenticated >= 6
    })
    .await;
    for h in &handles[..2] {
        assert_eq!(
            h.view.borrow().peer(3).map(|p| p.state),
            Some(Liveness::Unknown)
        );
    }
    assert!(handles[2]
        .view
        .borrow()
        .peers
        .iter()
        .all(|p| p.state == Liveness::Unknown));
    for h in handles {
        h.shutdown_and_wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_replayed_and_plaintext_datagrams_are_dropped() {
    let service_socket = bind_local();
    let service_addr = service_socket.local_addr().unwrap();
    let node2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    node2.set_read_timeout(Some(WAIT)).unwrap();
    let mut p = params(1, vec![(2, vec![node2.local_addr().unwrap()])]);
    p.auth = auth(7, None);
    let (_tx, rx) = watch::channel(status(4));
    let mut h = HeartbeatService::start_with_socket(service_socket, p, rx).unwrap();
    let sealer = Sealer::new(&[7; 32], None);
    let seal = |hb: &Heartbeat| sealer.seal(hb, KeySlot::Current, rand::random()).unwrap();
    let send = |bytes: &[u8]| {
        node2.send_to(bytes, service_addr).unwrap();
    };

    // Tampered: one flipped bit in the ciphertext.
    let mut tampered = seal(&from_node2(5, 1));
    let i = tampered.len() - 20;
    tampered[i] ^= 0x01;
    send(&tampered);
    // Plaintext, otherwise perfect.
    send(&wire::encode(&from_node2(5, 1)).unwrap());
    wait_stats(&h.stats, "tampered and plaintext dropped", |s| {
        s.dropped_unauthenticated == 2
    })
    .await;
    assert_eq!(
        h.view.borrow().peer(2).map(|p| p.state),
        Some(Liveness::Unknown)
    );

    // Genuine: accepted.
    let genuine = seal(&from_node2(5, 10));
    send(&genuine);
    wait_view(&mut h.view, "node 2 alive", |v| {
        v.peer(2).is_some_and(|p| p.state == Liveness::Alive)
    })
    .await;
    // Replayed byte for byte, too far behind, and from an older incarnation.
    send(&genuine);
    send(&seal(&from_node2(
        5,
        10 + crate::heartbeat::seal::REPLAY_WINDOW_SEQS + 5,
    )));
    send(&seal(&from_node2(5, 10)));
    send(&seal(&from_node2(4, 1_000)));
    wait_stats(&h.stats, "replays dropped", |s| s.dropped_replayed == 3).await;
    let s = h.stats.snapshot();
    assert_eq!(s.dropped_unauthenticated, 2, "{s:?}");
    assert_eq!(s.dropped_malformed, 0, "{s:?}");

    // What the service sends is sealed: unreadable as plaintext, readable with the key.
    let mut buf = [0u8; MAX_DATAGRAM_BYTES + 1];
    let (n, _) = node2.recv_from(&mut buf).unwrap();
    assert!(wire::decode(&buf[..n]).is_err());
    let (hb, slot) = sealer.open(&buf[..n]).unwrap();
    assert_eq!((hb.from, hb.to, slot), (1, 2, KeySlot::Current));
    h.shutdown_and_wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_rotation_a_peer_on_the_old_secret_is_heard_and_answered_in_it() {
    let service_socket = bind_local();
    let service_addr = service_socket.local_addr().unwrap();
    let node2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    node2.set_read_timeout(Some(WAIT)).unwrap();
    let mut p = params(1, vec![(2, vec![node2.local_addr().unwrap()])]);
    p.auth = auth(9, Some(7)); // new secret 9, previous 7
    let (_tx, rx) = watch::channel(status(4));
    let mut h = HeartbeatService::start_with_socket(service_socket, p, rx).unwrap();
    let old_only = Sealer::new(&[7; 32], None);
    let bytes = old_only
        .seal(&from_node2(5, 1), KeySlot::Current, rand::random())
        .unwrap();
    node2.send_to(&bytes, service_addr).unwrap();
    wait_view(&mut h.view, "node 2 alive on the previous secret", |v| {
        v.peer(2).is_some_and(|p| p.state == Liveness::Alive)
    })
    .await;
    // Once heard, node 2 gets datagrams it can open with the old secret alone.
    let deadline = std::time::Instant::now() + WAIT;
    let mut buf = [0u8; MAX_DATAGRAM_BYTES + 1];
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "never answered in the old secret"
        );
        let (n, _) = node2.recv_from(&mut buf).unwrap();
        if old_only.open(&buf[..n]).is_ok() {
            break;
        }
    }
    h.shutdown_and_wait().await;
}
