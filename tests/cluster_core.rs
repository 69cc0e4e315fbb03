//! Issue 2 acceptance: real `quorate` processes on 127.0.0.1 form a Raft cluster, survive
//! crashes and restarts, catch up by log or snapshot, guard their data dir, validate config on
//! the command line, and shrug off garbage on their ports.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{cli, Cluster, Options, CALM_TIMING, WAIT};
use quorate::api::wire::NodeStatus;
use quorate::types::{LogIndex, Term};

/// Acceptance: three fresh nodes elect a leader within this.
const FIRST_ELECTION: Duration = Duration::from_secs(10);

fn other_ids(c: &Cluster, not: u64) -> Vec<u64> {
    c.ids().into_iter().filter(|i| *i != not).collect()
}

/// Writes `n` keys `prefix/i` = `v-i` through node `via`; returns what was written.
async fn write_keys(
    c: &Cluster,
    via: u64,
    prefix: &str,
    range: std::ops::Range<u32>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in range {
        let key = format!("{prefix}/{i:05}");
        let value = format!("v-{i}");
        c.put_ok(via, &key, &value).await;
        out.insert(key, value);
    }
    out
}

/// The leader's view of `peer`'s replication progress.
fn matched(leader: &NodeStatus, peer: u64) -> Option<u64> {
    leader
        .peers
        .iter()
        .find(|p| p.id == peer)
        .and_then(|p| p.matched_index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_exactly_one_leader_and_agree() {
    let mut c = Cluster::new(&["voter", "voter", "voter"], Options::default());
    c.start_all();
    let (leader, term) = c.wait_agreed_leader(FIRST_ELECTION).await;
    assert!(c.ids().contains(&leader));
    assert!(term >= 1, "a leader is elected in term >= 1, got {term}");

    // wait_agreed_leader saw one leader and every node agreeing on it and the term. Every node
    // soon holds the full voter membership (a follower may learn the leader from its vote a
    // moment before the membership entry reaches it).
    for id in c.ids() {
        let s = c
            .wait_status(id, "membership of voters 1, 2, 3", WAIT, |s| {
                let mut voters = s.membership.voters.clone();
                voters.sort_unstable();
                voters == [1, 2, 3]
            })
            .await;
        assert!(s.membership.learners.is_empty());
        assert_eq!(s.role, "voter");
        assert_eq!(s.cluster, "test");
        assert!(s.term >= term, "node {}: term went back", s.node_id);
    }
    // The leader reports replication progress of both followers; heartbeats see everyone.
    let steady = c.wait_steady(WAIT).await;
    let ls = c.status(steady).await.expect("leader status");
    assert_eq!(ls.peers.len(), 2);
    for id in c.ids() {
        assert_eq!(c.health(id).await, Some(200), "node {id} /health");
    }

    // `quorate status --json` (the CLI) shows the same picture from any node.
    let api = c.api(1).to_string();
    let out = cli(&["status", "--json", "--api", &api]);
    assert_eq!(out.status.map(|s| s.success()), Some(true), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json is JSON");
    let nodes = v["nodes"].as_array().expect("nodes array");
    assert_eq!(nodes.len(), 3, "{v}");
    let mut ids: Vec<u64> = nodes.iter().filter_map(|n| n["node_id"].as_u64()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3], "{v}");
    assert!(
        nodes.iter().all(|n| n["leader_id"].as_u64().is_some()),
        "{v}"
    );
    let out = cli(&["status", "--api", &api]);
    assert_eq!(out.status.map(|s| s.success()), Some(true), "{out:?}");
    assert!(
        out.stdout.contains("leader"),
        "status table names the leader: {}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_and_rejoins_as_follower_caught_up() {
    let mut c = Cluster::new(&["voter", "voter", "voter"], Options::default());
    c.start_all();
    let first = c.wait_steady(WAIT).await;
    let before = write_keys(&c, first, "pre", 0..20).await;

    // Whoever leads right now (normally still `first`) is the one to kill.
    let (old, term) = c.wait_agreed_leader(WAIT).await;
    c.kill9(old);
    let (new, new_term) = c.wait_agreed_leader(WAIT).await;
    assert_ne!(new, old, "a killed node cannot still be leader");
    assert!(
        new_term > term,
        "a new leader needs a new term: {term} -> {new_term}"
    );
    eprintln!("leader {old} (term {term}) killed; node {new} leads in term {new_term}");

    // Entries the dead node has never seen, so it has something to catch up on.
    let during = write_keys(&c, new, "during", 0..20).await;

    c.start(old);
    let (leader, _) = c.wait_agreed_leader(WAIT).await;
    let rejoined = c
        .wait_status(old, "rejoined as follower", WAIT, |s| {
            s.raft_state == "follower" && s.leader_id == Some(leader)
        })
        .await;
    assert_eq!(rejoined.raft_state, "follower");
    // Idle cluster: the leader's last index is fixed; the rejoined node's matched index (as the
    // leader sees it) must reach it.
    let ls = c
        .wait_status(
            leader,
            "the rejoined node's matched index == the leader's last log index",
            WAIT,
            |s| matched(s, old) == Some(s.last_log_index),
        )
        .await;
    let caught = c.wait_applied(old, ls.last_log_index, WAIT).await;
    assert_eq!(caught.last_log_index, ls.last_log_index, "{caught:#?}");
    // And the data is there, read locally on the rejoined node.
    for (k, v) in before.iter().chain(during.iter()) {
        let r = c.kv_get(old, k, "stale=true").await;
        assert_eq!(
            r.value(),
            Some(v.as_str()),
            "{k} on rejoined node {old}: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_stopped_and_restarted_in_reverse_order_keep_cluster_term_and_log() {
    let mut c = Cluster::new(&["voter", "voter", "voter"], Options::default());
    c.start_all();
    let (leader, _) = c.wait_agreed_leader(WAIT).await;
    let data = write_keys(&c, leader, "keep", 0..30).await;
    let ls = c.status(leader).await.expect("leader status");
    for id in c.ids() {
        c.wait_applied(id, ls.committed_index, WAIT).await;
    }
    let before: Vec<NodeStatus> = c.statuses().await;
    assert_eq!(before.len(), 3);
    let term_before = before.iter().map(|s| s.term).max().unwrap_or(0);

    for id in c.ids() {
        let st = c.stop(id).expect("node was running");
        assert!(
            st.success(),
            "node {id} must exit 0 on SIGTERM, got {st:?}\n{}",
            c.logs_tail()
        );
    }
    for id in c.ids().into_iter().rev() {
        c.start(id);
    }
    let (_, term_after) = c.wait_agreed_leader(WAIT).await;
    assert!(
        term_after >= term_before,
        "term went back: {term_before} -> {term_after}"
    );
    for s in c.statuses().await {
        let old = before
            .iter()
            .find(|b| b.node_id == s.node_id)
            .expect("node existed");
        assert_eq!(s.cluster, old.cluster);
        assert_eq!(
            s.membership, old.membership,
            "node {} membership",
            s.node_id
        );
        assert!(
            s.last_log_index >= old.last_log_index,
            "node {} lost log entries: {} -> {}",
            s.node_id,
            old.last_log_index,
            s.last_log_index
        );
    }
    // Log intact: everything written before is readable, linearizably and on every node locally.
    for (k, v) in &data {
        let r = c.get_ok(1, k, "").await;
        assert_eq!(r.value(), Some(v.as_str()), "{k}: {r:?}");
    }
    let (leader, _) = c.wait_agreed_leader(WAIT).await;
    let ls = c.status(leader).await.expect("leader status");
    for id in c.ids() {
        c.wait_applied(id, ls.committed_index, WAIT).await;
        assert_eq!(
            c.list_all(id, "keep", true).await,
            data,
            "node {id} after restart"
        );
    }
    // And the cluster still takes writes.
    c.put_ok(3, "after/restart", "yes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_kept_down_past_compaction_catches_up_by_snapshot() {
    let opts = Options {
        extra: format!("{CALM_TIMING}\n[storage]\nsnapshot_every = 40\nkeep_logs = 5\n"),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter", "voter", "voter"], opts);
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    let follower = other_ids(&c, leader)[0];
    let mut data = write_keys(&c, leader, "snap", 0..5).await;
    let ls = c.status(leader).await.expect("leader status");
    let fs = c.wait_applied(follower, ls.committed_index, WAIT).await;
    assert_eq!(
        fs.snapshot_index, None,
        "precondition: the follower has no snapshot yet: {fs:#?}"
    );
    let follower_last = fs.last_log_index;

    c.stop(follower);
    // Write until the leader has purged its log past everything the follower has.
    // Bounded: at most MAX_BATCHES batches of 20 writes.
    const MAX_BATCHES: u32 = 25;
    let mut purged_past = false;
    for b in 0..MAX_BATCHES {
        data.extend(write_keys(&c, leader, "snap", 5 + b * 20..5 + (b + 1) * 20).await);
        let s = c.status(leader).await.expect("leader status");
        if s.purged_index.is_some_and(|p| p > follower_last) {
            purged_past = true;
            break;
        }
    }
    let ls = c.status(leader).await.expect("leader status");
    assert!(
        purged_past,
        "the leader never purged past the follower's last index {follower_last}: {ls:#?}\n{}",
        c.logs_tail()
    );

    c.start(follower);
    let fs = c
        .wait_status(
            follower,
            "snapshot installed and applied up to the leader",
            WAIT,
            |s| {
                s.snapshot_index.is_some_and(|i| i > follower_last)
                    && s.applied_index >= ls.last_log_index
            },
        )
        .await;
    assert!(
        fs.snapshot_index.is_some_and(|i| i > follower_last),
        "{fs:#?}"
    );
    eprintln!(
        "follower {follower}: last index {follower_last} before stop; leader purged {:?}; follower snapshot {:?}",
        ls.purged_index, fs.snapshot_index
    );
    let log = std::fs::read_to_string(&c.node(follower).log).unwrap_or_default();
    assert!(
        log.contains("snapshot installed"),
        "the follower's log should say it installed a snapshot"
    );
    // Its data is complete, read locally.
    for (k, v) in data.iter().step_by(17) {
        let r = c.kv_get(follower, k, "stale=true").await;
        assert_eq!(
            r.value(),
            Some(v.as_str()),
            "{k} on follower {follower}: {r:?}"
        );
    }
    assert_eq!(c.list_all(follower, "snap", true).await, data);
    // And it keeps following by log afterwards.
    c.put_ok(leader, "snap/after", "x").await;
    let ls = c.status(leader).await.expect("leader status");
    c.wait_applied(follower, ls.committed_index, WAIT).await;
    let r = c.kv_get(follower, "snap/after", "stale=true").await;
    assert_eq!(r.value(), Some("x"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_a_locked_data_dir_exits_nonzero_naming_it() {
    let mut c = Cluster::new(&["voter", "voter", "voter"], Options::default());
    c.start(1);
    c.wait_until("node 1 answers /health", WAIT, || async {
        c.health(1).await == Some(200)
    })
    .await;
    let out = c.run_second_daemon(1, WAIT);
    let status = out
        .status
        .unwrap_or_else(|| panic!("the second daemon did not exit: {out:?}"));
    assert!(!status.success(), "the second daemon must fail: {out:?}");
    let dir = c.data_dir(1);
    assert!(
        out.stderr.contains(&dir.display().to_string()),
        "stderr must name the data dir {}: {}",
        dir.display(),
        out.stderr
    );
    assert!(
        out.stderr.contains("locked"),
        "stderr should say why: {}",
        out.stderr
    );
    // The first daemon is unaffected.
    assert_eq!(c.health(1).await, Some(200));
    assert!(c.status(1).await.is_some());
}

/// One bad config: how to break the good text, and the key the CLI must name.
struct BadConfig {
    name: &'static str,
    text: String,
    key: &'static str,
}

#[test]
fn config_check_cli_rejects_bad_configs_naming_the_key() {
    let c = Cluster::new(&["voter", "voter", "voter"], Options::default());
    let good_path = c.node(1).config.clone();
    let good = std::fs::read_to_string(&good_path).expect("read config");
    let good_str = good_path.to_str().expect("utf-8 path");

    let out = cli(&["config", "check", good_str]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert!(out.stdout.contains("ok"), "{out:?}");
    let out = cli(&["config", "check", good_str, "--json"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("--json output is JSON");
    assert_eq!(v["valid"], serde_json::Value::Bool(true), "{v}");

    let replace = |from: &str, to: &str| {
        assert_eq!(
            good.matches(from).count(),
            1,
            "edit target {from:?} must occur once"
        );
        good.replacen(from, to, 1)
    };
    let peer2_raft = format!("raft = \"{}\"", c.node(2).member.raft);
    let bad = [
        BadConfig {
            name: "unknown-key",
            text: format!("colour = \"blue\"\n{good}"),
            key: "colour",
        },
        BadConfig {
            name: "duplicate-id",
            text: replace("[[peer]]\nid = 3\n", "[[peer]]\nid = 2\n"),
            key: "peer[2].id",
        },
        BadConfig {
            name: "bad-address",
            text: replace(&peer2_raft, "raft = \"127.0.0.1\""),
            key: "peer[1].raft",
        },
        BadConfig {
            name: "two-voters",
            text: replace(
                "[[peer]]\nid = 3\nrole = \"voter\"",
                "[[peer]]\nid = 3\nrole = \"learner\"",
            ),
            key: "peer",
        },
        BadConfig {
            name: "unsafe-lease",
            text: format!("{good}\n[timing]\nlease = \"140ms\"\n"),
            key: "timing.lease",
        },
    ];
    for b in &bad {
        let path = c.path().join(format!("{}.toml", b.name));
        std::fs::write(&path, &b.text).expect("write bad config");
        let p = path.to_str().expect("utf-8 path");

        let out = cli(&["config", "check", p]);
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(1),
            "{}: {out:?}",
            b.name
        );
        let named = format!("{}: ", b.key);
        assert!(
            out.stderr.contains(p),
            "{}: the message names the file: {}",
            b.name,
            out.stderr
        );
        assert!(
            out.stderr.contains(&named),
            "{}: the message names {}: {}",
            b.name,
            b.key,
            out.stderr
        );
        assert!(
            out.stderr.contains("fix"),
            "{}: the message says how to fix it: {}",
            b.name,
            out.stderr
        );

        let out = cli(&["config", "check", "--json", p]);
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(1),
            "{}: {out:?}",
            b.name
        );
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).expect("--json output is JSON");
        assert_eq!(
            v["valid"],
            serde_json::Value::Bool(false),
            "{}: {v}",
            b.name
        );
        assert_eq!(v["file"].as_str(), Some(p), "{}: {v}", b.name);
        let problems = v["problems"].as_array().expect("problems array");
        assert!(
            problems.iter().any(|pr| pr["key"].as_str() == Some(b.key)
                && pr["fix"].as_str().is_some_and(|f| !f.is_empty())),
            "{}: expected a problem at {} with a fix: {v}",
            b.name,
            b.key
        );
    }

    // A file that does not exist is an error too, naming it.
    let missing = c.path().join("missing.toml");
    let m = missing.to_str().expect("utf-8 path");
    let out = cli(&["config", "check", m]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(out.stderr.contains(m), "{out:?}");
}

/// Sends `bytes` on a fresh TCP connection to `addr`, then reads until the node closes the
/// connection (or `WAIT` passes). Returns whether the node closed it.
fn raft_garbage(addr: std::net::SocketAddr, bytes: &[u8]) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(WAIT));
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    // Bounded: the read timeout ends a silent connection; 1000 reads of a chatty one.
    for _ in 0..1000 {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

fn frame(version: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(version);
    f.extend_from_slice(body);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_heartbeat_and_raft_ports_is_counted_and_harmless() {
    let opts = Options {
        extra: CALM_TIMING.into(),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter", "voter", "voter"], opts);
    c.start_all();
    c.wait_steady(WAIT).await;
    let (leader, term) = c.wait_agreed_leader(WAIT).await;
    let target = c.node(leader).member.clone();
    let before = c.status(leader).await.expect("leader status").counters;

    // --- UDP heartbeat port ---
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    const MALFORMED: u64 = 30;
    const OVERSIZED: u64 = 10;
    const FOREIGN: u64 = 5;
    let mut noise = 0x9e3779b97f4a7c15u64;
    for i in 0..MALFORMED {
        let len = 1 + (i as usize * 37) % 900;
        let mut d: Vec<u8> = (0..len)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                noise as u8
            })
            .collect();
        if i % 3 == 0 && d.len() > 8 {
            // Right magic and version, garbage payload: gets past the header check.
            d[..4].copy_from_slice(&quorate::heartbeat::wire::MAGIC);
            d[4] = quorate::heartbeat::wire::WIRE_VERSION;
        }
        udp.send_to(&d, target.heartbeat).expect("send datagram");
    }
    for _ in 0..OVERSIZED {
        let mut d = vec![0xAB; quorate::heartbeat::wire::MAX_DATAGRAM_BYTES + 500];
        d[..4].copy_from_slice(&quorate::heartbeat::wire::MAGIC);
        udp.send_to(&d, target.heartbeat).expect("send datagram");
    }
    // Well-formed heartbeats of another cluster, claiming to be the other members.
    for i in 0..FOREIGN {
        let hb = quorate::heartbeat::Heartbeat {
            cluster_id: quorate::heartbeat::cluster_id("some-other-cluster"),
            from: other_ids(&c, leader)[0],
            to: leader,
            incarnation: 7,
            seq: i + 1,
            term: Term(term + 100),
            member_role: quorate::types::NodeRole::Voter,
            raft_state: quorate::heartbeat::RaftRoleWire::Leader,
            leader_id: Some(other_ids(&c, leader)[0]),
            primary_epoch: None,
            applied_index: LogIndex(1_000_000),
            health: Default::default(),
            service: Default::default(),
            report_after_loss: None,
            sent_mono_ns: 1,
            echo: None,
        };
        let d = quorate::heartbeat::encode(&hb).expect("encode heartbeat");
        udp.send_to(&d, target.heartbeat).expect("send datagram");
    }

    // --- TCP Raft port ---
    let hello_other_cluster = {
        let req = quorate::consensus::network::RpcRequest::Hello {
            cluster_id: quorate::consensus::network::cluster_id("some-other-cluster"),
            from: other_ids(&c, leader)[0],
            to: leader,
        };
        frame(
            quorate::consensus::codec::WIRE_VERSION,
            &quorate::consensus::codec::to_bytes(&req).expect("encode hello"),
        )
    };
    let oversized = {
        let mut f = ((quorate::consensus::codec::MAX_FRAME_BYTES + 1) as u32)
            .to_be_bytes()
            .to_vec();
        f.push(quorate::consensus::codec::WIRE_VERSION);
        f.extend_from_slice(&[0u8; 1024]);
        f
    };
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("oversized length", oversized),
        ("wrong version", frame(99, b"\x00\x01\x02")),
        (
            "garbage body",
            frame(quorate::consensus::codec::WIRE_VERSION, &[0xff; 64]),
        ),
        ("empty frame", 0u32.to_be_bytes().to_vec()),
        ("foreign hello", hello_other_cluster),
    ];
    const ROUNDS: u64 = 4;
    let addr = target.raft;
    let garbage_sent = garbage.len() as u64 * ROUNDS;
    let closed = tokio::task::spawn_blocking(move || {
        let mut closed = Vec::new();
        for _ in 0..ROUNDS {
            for (name, bytes) in &garbage {
                closed.push((*name, raft_garbage(addr, bytes)));
            }
        }
        closed
    })
    .await
    .expect("raft garbage task");
    for (name, was_closed) in &closed {
        assert!(
            was_closed,
            "the node must drop a connection that sent {name}"
        );
    }

    // --- Counted ---
    let after = c
        .wait_status(leader, "drop counters to rise", WAIT, |s| {
            let k = &s.counters;
            k.heartbeats_dropped_malformed >= before.heartbeats_dropped_malformed + MALFORMED
                && k.heartbeats_dropped_oversized >= before.heartbeats_dropped_oversized + OVERSIZED
                && k.heartbeats_dropped_foreign >= before.heartbeats_dropped_foreign + FOREIGN
                && k.raft_frames_rejected >= before.raft_frames_rejected + garbage_sent
                && k.raft_handshakes_rejected >= before.raft_handshakes_rejected + ROUNDS
        })
        .await;
    // Nothing else counted as a valid heartbeat from a stranger.
    assert_eq!(
        after.counters.heartbeats_dropped_unknown_peer,
        before.heartbeats_dropped_unknown_peer
    );

    // --- Logged, but rate-limited: far fewer lines than bad inputs ---
    let log = std::fs::read_to_string(&c.node(leader).log).unwrap_or_default();
    let raft_lines = log
        .lines()
        .filter(|l| l.contains("raft connection from"))
        .count();
    let hb_lines = log
        .lines()
        .filter(|l| l.contains("heartbeat datagram dropped"))
        .count();
    assert!(raft_lines >= 1, "rejected raft connections are logged");
    assert!(hb_lines >= 1, "dropped datagrams are logged");
    assert!(
        (raft_lines as u64) < garbage_sent / 2,
        "{raft_lines} log lines for {garbage_sent} bad connections: not rate-limited"
    );
    assert!(
        (hb_lines as u64) < (MALFORMED + OVERSIZED + FOREIGN) / 2,
        "{hb_lines} log lines for {} bad datagrams: not rate-limited",
        MALFORMED + OVERSIZED + FOREIGN
    );

    // --- Harmless: same leader, same term, healthy, still replicating ---
    let (l, t) = c.wait_agreed_leader(WAIT).await;
    assert_eq!(
        (l, t),
        (leader, term),
        "garbage must not move the leader or the term"
    );
    for id in c.ids() {
        assert_eq!(c.health(id).await, Some(200), "node {id} /health");
    }
    let st = c.status(leader).await.expect("leader status");
    assert!(st.peers.iter().all(|p| p.heartbeat == "alive"), "{st:#?}");
    c.put_ok(leader, "still/works", "yes").await;
    let st = c.status(leader).await.expect("leader status");
    assert_eq!((st.leader_id, st.term), (Some(leader), term));
}
