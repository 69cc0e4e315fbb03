//! A 100 MB KV: restarts (every node, from snapshot + log) and catches a follower up by
//! snapshot, with every value intact.

mod common;

use std::time::Duration;

use common::{Cluster, Options, CALM_TIMING, WAIT};

/// 105 values of 1 MiB: just over 100 MiB of KV data.
const VALUES: usize = 105;
const VALUE_BYTES: usize = 1024 * 1024;

fn value(i: usize) -> Vec<u8> {
    // Distinct, non-UTF-8-clean content per key, so a mixed-up or truncated value shows.
    let mut v = vec![(i % 251) as u8; VALUE_BYTES];
    v[0] = 0xff;
    v[VALUE_BYTES - 1] = i as u8;
    v
}

async fn put(c: &Cluster, id: u64, i: usize) {
    let deadline = std::time::Instant::now() + WAIT * 2;
    loop {
        let r = c.kv_put(id, &format!("big/{i:04}"), value(i), "").await;
        if r.status == 200 {
            return;
        }
        assert!(
            (r.status == 503 || r.status == 0) && std::time::Instant::now() < deadline,
            "PUT big/{i}: {r:?}\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check_all(c: &Cluster, id: u64) {
    let http = common::http(Duration::from_secs(30));
    for i in (0..VALUES).step_by(13).chain([VALUES - 1]) {
        let url = format!("http://{}/v1/kv/big/{i:04}?stale=true", c.api(id));
        let body: serde_json::Value = http
            .get(&url)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        let got = quorate::kv::decode_value_from_json(
            body["value"].as_str().expect("value"),
            body["encoding"].as_str().expect("encoding"),
        )
        .expect("decodable");
        assert!(got == value(i), "big/{i:04} differs on node {id}");
    }
    // Count the keys page by page (small pages: each value is 1 MiB of JSON).
    let mut count = 0;
    let mut start_after: Option<String> = None;
    for _ in 0..VALUES {
        let mut url = format!(
            "http://{}/v1/kv/big?prefix=true&stale=true&limit=8",
            c.api(id)
        );
        if let Some(s) = &start_after {
            url.push_str(&format!("&start_after={}", common::encode_query(s)));
        }
        let page: serde_json::Value = http
            .get(&url)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("JSON");
        count += page["items"].as_array().map(|a| a.len()).unwrap_or(0);
        match page["next_start_after"].as_str() {
            Some(next) => start_after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(count, VALUES, "every key present on node {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_kv_restarts_and_catches_a_follower_up_by_snapshot() {
    let opts = Options {
        extra: format!("{CALM_TIMING}\n[storage]\nsnapshot_every = 40\nkeep_logs = 5\n"),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter", "voter", "voter"], opts);
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    let follower = c.other_than(leader);
    c.stop(follower);
    let t = std::time::Instant::now();
    for i in 0..VALUES {
        put(&c, leader, i).await;
    }
    eprintln!("wrote {VALUES} MiB in {:?}", t.elapsed());
    let ls = c
        .wait_status(
            leader,
            "a snapshot past the stopped follower",
            WAIT * 2,
            |s| s.snapshot_index.is_some() && s.purged_index.is_some(),
        )
        .await;
    eprintln!(
        "leader {leader}: snapshot {:?}, purged {:?}",
        ls.snapshot_index, ls.purged_index
    );

    // The follower has nothing: it must be caught up by the 100 MB snapshot.
    let t = std::time::Instant::now();
    c.start(follower);
    c.wait_status(follower, "snapshot installed and applied", WAIT * 4, |s| {
        s.snapshot_index.is_some() && s.applied_index >= ls.last_log_index
    })
    .await;
    eprintln!("follower caught up by snapshot in {:?}", t.elapsed());
    check_all(&c, follower).await;

    // Every node restarted: state comes back from snapshot + log.
    for id in c.ids() {
        c.stop(id);
    }
    let t = std::time::Instant::now();
    c.start_all();
    c.wait_steady(WAIT * 2).await;
    eprintln!("all three restarted and steady in {:?}", t.elapsed());
    for id in c.ids() {
        c.wait_applied(id, ls.last_log_index, WAIT * 2).await;
        check_all(&c, id).await;
    }
}
