//! Damaged Raft data: a truncated snapshot and a corrupted log are detected at start with a
//! message naming the file and the recovery steps; `quorate recover` finds the damage and
//! re-seeds the node from its peers; a re-seeding node refuses to vote until it has caught up.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{cli, Cluster, Options, WAIT};

/// Snapshots every 20 entries, so the follower has one to damage.
const STORAGE: &str = "
[storage]
snapshot_every = 20
keep_logs = 10
";

/// Keys written before the damage; every one must be readable on the re-seeded node.
const KEYS: usize = 60;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Flips bytes throughout every file of the raft log (past any header), so whichever records
/// the log replays at start fail their checksums.
fn corrupt_log(log_dir: &Path) {
    let files = files_under(log_dir);
    assert!(
        !files.is_empty(),
        "no raft log files in {}",
        log_dir.display()
    );
    for f in files {
        let mut bytes = std::fs::read(&f).expect("read log file");
        if bytes.len() < 64 {
            continue;
        }
        let mut i = 32;
        while i < bytes.len() {
            bytes[i] ^= 0x5a;
            i += 97;
        }
        std::fs::write(&f, bytes).expect("write log file");
    }
}

fn config_arg(c: &Cluster, id: u64) -> String {
    c.node(id).config.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_data_is_detected_and_recover_reseeds_a_node_that_votes_only_once_caught_up() {
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            extra: format!("{}{STORAGE}", common::FAILOVER_TIMING),
            ..Options::default()
        },
    );
    c.start_all();
    let (leader, _) = c.wait_agreed_leader(WAIT).await;
    for i in 0..KEYS {
        c.put_ok(leader, &format!("k/{i}"), &format!("v{i}")).await;
    }
    // The damaged node: a follower (the cluster keeps its leader while we work on it).
    let f = c.other_than(leader);
    let applied = c.status(leader).await.expect("leader status").applied_index;
    c.wait_applied(f, applied, WAIT).await;
    c.wait_status(f, "a snapshot on the follower", WAIT, |s| {
        s.snapshot_index.is_some()
    })
    .await;
    c.stop(f);
    let data = c.data_dir(f);

    // 1. A truncated snapshot: the start fails, naming the file and `quorate recover`.
    let snap = data.join("snapshot").join("snapshot.bin");
    let snap = if snap.exists() {
        snap
    } else {
        files_under(&data.join("snapshot"))
            .into_iter()
            .next()
            .expect("a snapshot file")
    };
    let good_snapshot = std::fs::read(&snap).expect("read snapshot");
    std::fs::write(&snap, &good_snapshot[..good_snapshot.len() / 2]).expect("truncate");
    let run = c.run_second_daemon(f, WAIT);
    assert!(
        run.status.is_some_and(|s| !s.success()),
        "a node with a truncated snapshot must not start: {run:?}"
    );
    assert!(
        run.stderr.contains(&snap.display().to_string()) && run.stderr.contains("quorate recover"),
        "the message names the snapshot file and the recovery step:\n{}",
        run.stderr
    );
    let check = cli(&["recover", "--config", &config_arg(&c, f)]);
    assert_eq!(check.status.and_then(|s| s.code()), Some(1), "{check:?}");
    assert!(
        check.stdout.contains("snapshot  DAMAGED"),
        "recover names the damaged part:\n{}",
        check.stdout
    );
    std::fs::write(&snap, &good_snapshot).expect("restore snapshot");
    let check = cli(&["recover", "--config", &config_arg(&c, f), "--json"]);
    assert_eq!(check.status.and_then(|s| s.code()), Some(0), "{check:?}");
    let v: serde_json::Value = serde_json::from_str(&check.stdout).expect("recover --json");
    assert_eq!(v["healthy"], true, "{v}");

    // 2. A corrupted log: same, for the log.
    corrupt_log(&data.join("raft-log"));
    let run = c.run_second_daemon(f, WAIT);
    assert!(
        run.status.is_some_and(|s| !s.success()),
        "a node with a corrupted log must not start: {run:?}"
    );
    assert!(
        run.stderr.contains("raft-log") && run.stderr.contains("quorate recover"),
        "the message names the log and the recovery step:\n{}",
        run.stderr
    );
    let check = cli(&["recover", "--config", &config_arg(&c, f)]);
    assert_eq!(check.status.and_then(|s| s.code()), Some(1), "{check:?}");
    assert!(
        check.stdout.contains("log       DAMAGED"),
        "{}",
        check.stdout
    );
    let no = cli(&["recover", "--config", &config_arg(&c, f), "--reseed"]);
    assert_eq!(
        no.status.and_then(|s| s.code()),
        Some(2),
        "--reseed needs --yes"
    );
    assert!(no.stderr.contains("--yes"), "{}", no.stderr);

    // 3. Re-seed. The old data is moved aside, not deleted.
    let re = cli(&[
        "recover",
        "--config",
        &config_arg(&c, f),
        "--reseed",
        "--yes",
    ]);
    assert_eq!(re.status.and_then(|s| s.code()), Some(0), "{re:?}");
    assert!(data.join("RESEEDING").exists(), "the re-seed marker");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .expect("read data dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("recovered-"))
        .collect();
    assert_eq!(aside.len(), 1, "one recovered-* dir");
    assert!(aside[0].path().join("raft-log").exists());

    // 4. The re-seeding node must not help elect a leader. Stop the leader: the remaining
    // follower g needs f's vote (2 of 3), and f refuses while it has not caught up. (kill -9:
    // a graceful stop would hand leadership to g first.)
    let g = c
        .ids()
        .into_iter()
        .find(|i| *i != leader && *i != f)
        .expect("the other follower");
    c.kill9(leader);
    c.start(f);
    c.wait_status(f, "the re-seeding node is up", WAIT, |s| s.reseeding)
        .await;
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        if let Some(s) = c.status(g).await {
            assert!(
                s.raft_state != "leader",
                "node {g} became leader with the vote of a node that has no log\n{}",
                c.logs_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 5. The old leader returns: a leader is elected without f, f catches up, votes again.
    c.start(leader);
    let (l2, _) = c.wait_agreed_leader(WAIT).await;
    assert_ne!(l2, f, "the re-seeding node cannot lead");
    let target = c.status(l2).await.expect("leader status").applied_index;
    c.wait_status(
        f,
        "the re-seeded node catches up and leaves re-seeding",
        WAIT,
        |s| !s.reseeding && s.applied_index >= target,
    )
    .await;
    assert!(!data.join("RESEEDING").exists(), "marker removed");
    for i in 0..KEYS {
        let r = c.get_ok(f, &format!("k/{i}"), "?stale=true").await;
        assert_eq!(
            r.value(),
            Some(format!("v{i}").as_str()),
            "k/{i} on node {f}"
        );
    }
}
