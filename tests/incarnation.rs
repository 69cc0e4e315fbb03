//! Issue 13: the heartbeat incarnation is a counter persisted in the data dir, not the wall
//! clock. With a cluster secret, peers refuse heartbeats of an incarnation lower than the one
//! they know (replay protection), so under the wall-clock design a node whose clock was
//! stepped back since its last start went unheard until its peers restarted.
//!
//! Real daemons on 127.0.0.1 with a real secret. The clock step is simulated the only way a
//! test without root can: before node 3's first start of this test, the test plays its
//! "previous life" by sending heartbeats sealed with the cluster key from node 3's address,
//! with the incarnation a wall-clock binary would have sent an hour ahead (its clock was an
//! hour fast, then corrected: stepped back). The peers take it; node 3 then starts for real
//! and must be heard, with a higher incarnation. The wall-clock design fails this (its
//! incarnation would be "now", an hour below what the peers remember).

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{cli, Cluster, Options, CALM_TIMING, WAIT};
use quorate::config::secret::{ClusterSecret, KeySlot};
use quorate::heartbeat::seal::Sealer;
use quorate::heartbeat::{cluster_id, Heartbeat, RaftRoleWire};
use quorate::types::{LogIndex, NodeRole, ResourceHealth, Term};

const CLUSTER: &str = "incarnation";
const POLL: Duration = Duration::from_millis(100);

/// Writes a fresh secret (mode 0600) at `dir/secret` with the CLI itself and puts it at the
/// top of every node's config.
fn share_secret(c: &Cluster) -> PathBuf {
    let path = c.path().join("secret");
    let out = cli(&["secret", "generate", "--out", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    for id in c.ids() {
        let cfg = &c.node(id).config;
        let text = std::fs::read_to_string(cfg).expect("read config");
        let head = format!("secret_file = \"{}\"\n", path.display());
        std::fs::write(cfg, head + &text).expect("write config");
    }
    path
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .expect("a clock after 1970")
}

fn read_incarnation(data_dir: &Path) -> u64 {
    let path = data_dir.join(quorate::datadir::INCARNATION_FILE);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    quorate::datadir::parse_incarnation(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Node `of` as `observer` sees it: (heartbeat state, incarnation).
async fn seen(c: &Cluster, observer: u64, of: u64) -> Option<(String, Option<u64>)> {
    let s = c.status(observer).await?;
    let p = s.peers.iter().find(|p| p.id == of)?;
    Some((p.heartbeat.clone(), p.incarnation))
}

/// Waits until every node of `observers` sees `of` alive with an incarnation for which
/// `want` holds; panics with what they saw and the logs after `WAIT * 2`.
async fn wait_heard<F: Fn(u64) -> bool>(
    c: &Cluster,
    observers: &[u64],
    of: u64,
    what: &str,
    want: F,
) {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let mut views = Vec::new();
        for &o in observers {
            views.push((o, seen(c, o, of).await));
        }
        let ok = views
            .iter()
            .all(|(_, v)| matches!(v, Some((state, Some(inc))) if state == "alive" && want(*inc)));
        if ok {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}: views of node {of} (observer, (state, incarnation)): \
                 {views:?}\n{}",
                c.logs_tail()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_heard_again_with_a_higher_incarnation() {
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            cluster: CLUSTER.into(),
            extra: format!("{CALM_TIMING}dead_after = \"2s\"\nsuspect_after = \"1s\"\n"),
        },
    );
    let secret = share_secret(&c);
    let key = ClusterSecret::load(&secret)
        .expect("load the secret")
        .derive(CLUSTER)
        .expect("derive keys")
        .heartbeat;
    let sealer = Sealer::new(&key, None);
    c.start(1);
    c.start(2);
    c.wait_agreed_leader(WAIT * 2).await;

    // Node 3's previous life under the wall-clock design, its clock an hour fast.
    let remembered = wall_clock_ns() + 3_600 * 1_000_000_000;
    let from = c.node(3).member.heartbeat;
    let socket = UdpSocket::bind(from).expect("bind node 3's heartbeat address");
    let deadline = Instant::now() + WAIT;
    let mut seq = 1u64;
    loop {
        for to in [1u64, 2] {
            let hb = Heartbeat {
                cluster_id: cluster_id(CLUSTER),
                from: 3,
                to,
                incarnation: remembered,
                seq,
                term: Term(0),
                member_role: NodeRole::Voter,
                raft_state: RaftRoleWire::Follower,
                leader_id: None,
                primary_epoch: None,
                applied_index: LogIndex(0),
                health: ResourceHealth::Unknown,
                service: Default::default(),
                report_after_loss: None,
                sent_mono_ns: seq * 100_000_000,
                echo: None,
            };
            let bytes = sealer
                .seal(&hb, KeySlot::Current, rand::random())
                .expect("seal");
            socket
                .send_to(&bytes, c.node(to).member.heartbeat)
                .expect("send");
        }
        seq += 1;
        let mut all = true;
        for o in [1u64, 2] {
            all &= matches!(seen(&c, o, 3).await, Some((_, Some(i))) if i == remembered);
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the peers never took node 3's earlier-life heartbeats: {:?} {:?}\n{}",
            seen(&c, 1, 3).await,
            seen(&c, 2, 3).await,
            c.logs_tail()
        );
        tokio::time::sleep(POLL).await;
    }
    drop(socket);

    // First start of node 3 with this binary (no incarnation file): heard at once, above
    // what the peers remember.
    assert!(!c
        .data_dir(3)
        .join(quorate::datadir::INCARNATION_FILE)
        .exists());
    c.start(3);
    wait_heard(
        &c,
        &[1, 2],
        3,
        "node 3 heard after its clock stepped back",
        |i| i > remembered,
    )
    .await;
    let first = read_incarnation(&c.data_dir(3));
    assert!(first > remembered, "{first} <= {remembered}");
    wait_heard(&c, &[1, 2], 3, "node 3 at its persisted incarnation", |i| {
        i == first
    })
    .await;

    // Restart: one more, and the peers hear the new process.
    c.stop(3);
    c.start(3);
    wait_heard(&c, &[1, 2], 3, "node 3 heard after a restart", |i| {
        i > first
    })
    .await;
    let second = read_incarnation(&c.data_dir(3));
    assert_eq!(second, first + 1);
    wait_heard(&c, &[1, 2], 3, "node 3 at its new incarnation", |i| {
        i == second
    })
    .await;

    // A damaged file stops the start with the file's name and the fix; it is not rewritten.
    c.stop(3);
    let file = c.data_dir(3).join(quorate::datadir::INCARNATION_FILE);
    std::fs::write(&file, "12 garbage\n").expect("damage the file");
    let out = c.run_second_daemon(3, WAIT);
    let text = format!("{}\n{}", out.stdout, out.stderr);
    let code = out.status.and_then(|s| s.code());
    assert!(
        code.is_some_and(|c| c != 0),
        "a damaged incarnation file must stop the start, exited {code:?}:\n{text}"
    );
    assert!(
        text.contains(&file.display().to_string()) && text.contains("Remove the file"),
        "the error names the file and the fix:\n{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read the file"),
        "12 garbage\n"
    );
}
