//! Issue 13: the KV has a committed total-bytes limit (`storage.max_kv_bytes`, at most
//! MAX_KV_TOTAL_BYTES), so a snapshot can never grow past the decode cap. A write past it is
//! refused with 507 and a message naming the limit, the current total and what to do.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Options, CALM_TIMING, WAIT};

const LIMIT: u64 = 4 * 1024 * 1024;
const MIB: usize = 1024 * 1024;

async fn metric(c: &Cluster, id: u64, name: &str) -> Option<u64> {
    let url = format!("http://{}/metrics", c.api(id));
    let text = common::http(Duration::from_secs(10))
        .get(url)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("quorate_{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// PUT that must succeed (retried while the node answers 503 or nothing).
async fn put_ok(c: &Cluster, id: u64, key: &str, len: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = c.kv_put(id, key, vec![7u8; len], "").await;
        if r.status == 200 {
            return;
        }
        assert!(
            (r.status == 503 || r.status == 0) && Instant::now() < deadline,
            "PUT {key}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_total_bytes_limit_get_507_and_deleting_makes_room() {
    let opts = Options {
        extra: format!("{CALM_TIMING}\n[storage]\nmax_kv_bytes = {LIMIT}\n"),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter", "voter", "voter"], opts);
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    let follower = c.other_than(leader);
    // The leader commits the configured limit; every node applies it.
    for id in c.ids() {
        let deadline = Instant::now() + WAIT;
        while metric(&c, id, "kv_max_bytes").await != Some(LIMIT) {
            assert!(
                Instant::now() < deadline,
                "node {id} never applied the limit"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    for i in 0..3 {
        put_ok(&c, leader, &format!("big/{i}"), MIB).await;
    }
    let applied = c.status(leader).await.expect("status").applied_index;
    c.wait_applied(follower, applied, WAIT).await;
    let total = metric(&c, leader, "kv_bytes").await.expect("kv_bytes");
    assert!(total > 3 * MIB as u64 && total <= LIMIT, "{total}");

    // A fourth MiB would pass the limit: refused, on the leader and through a follower.
    for id in [leader, follower] {
        let r = c.kv_put(id, "big/3", vec![7u8; MIB], "").await;
        assert_eq!(r.status, 507, "PUT past the limit on node {id}: {r:?}");
        let msg = r.body["error"].as_str().unwrap_or_default().to_string();
        for part in [
            "max_total_bytes",
            &LIMIT.to_string(),
            &total.to_string(),
            "delete keys",
        ] {
            assert!(msg.contains(part), "error must mention {part:?}: {msg}");
        }
    }
    let r = c.kv_get(leader, "big/3", "").await;
    assert_eq!(r.status, 404, "the refused key must not exist: {r:?}");
    // Small writes that fit still go through.
    put_ok(&c, leader, "small", 100).await;

    // Deleting a key makes room.
    let r = c.kv_delete(leader, "big/0", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    put_ok(&c, leader, "big/3", MIB).await;
    for id in c.ids() {
        let b = metric(&c, id, "kv_bytes").await.expect("kv_bytes");
        assert!(b <= LIMIT, "node {id} holds {b} bytes, above {LIMIT}");
    }
}
