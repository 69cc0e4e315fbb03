//! Issue 4 acceptance: the replicated key-value store over HTTP, on real `quorate` processes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http, Cluster, Options, Reply, CALM_TIMING, WAIT};

/// Bound on how long a minority may take to refuse a write (acceptance: "bounded time").
const MINORITY_ANSWER: Duration = Duration::from_secs(15);
/// Configured `storage.max_value_bytes` for the limits test.
const SMALL_MAX_VALUE: usize = 4096;

async fn three_nodes(extra: &str) -> (Cluster, u64) {
    let opts = Options {
        extra: extra.to_string(),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter", "voter", "voter"], opts);
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    (c, leader)
}

fn followers(c: &Cluster, leader: u64) -> Vec<u64> {
    c.ids().into_iter().filter(|i| *i != leader).collect()
}

fn rev(r: &Reply, field: &str) -> u64 {
    r.body[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {r:?}"))
}

fn assert_error(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert!(
        r.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: error body must say why: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_any_node_are_readable_from_every_node() {
    let (c, _) = three_nodes(CALM_TIMING).await;
    let mut written = BTreeMap::new();
    for via in c.ids() {
        let key = format!("any/from-{via}");
        let value = format!("written through node {via}");
        assert!(c.put_ok(via, &key, &value).await > 0);
        written.insert(key, value);
    }
    // Right after the acknowledgement: linearizable reads on every node see every write.
    for reader in c.ids() {
        for (k, v) in &written {
            let r = c.get_ok(reader, k, "").await;
            assert_eq!(r.status, 200, "GET {k} on node {reader}: {r:?}");
            assert_eq!(r.value(), Some(v.as_str()), "GET {k} on node {reader}");
            assert_eq!(r.body["key"].as_str(), Some(k.as_str()));
            assert_eq!(r.body["encoding"].as_str(), Some("utf-8"), "{r:?}");
        }
    }
    // A linearizable read on another node immediately after each write sees that write.
    let ids = c.ids();
    for i in 0..30usize {
        let writer = ids[i % 3];
        let reader = ids[(i + 1) % 3];
        let value = format!("round {i}");
        let revision = c.put_ok(writer, "any/hot", &value).await;
        let g = c.get_ok(reader, "any/hot", "").await;
        assert_eq!(
            g.value(),
            Some(value.as_str()),
            "read on node {reader} right after a write on {writer}: {g:?}"
        );
        assert_eq!(rev(&g, "mod_revision"), revision, "{g:?}");
    }
    // Deletes too: gone everywhere once acknowledged.
    let r = c.kv_delete(2, "any/from-1", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    for reader in c.ids() {
        let r = c.get_ok(reader, "any/from-1", "").await;
        assert_error(&r, 404, "deleted key");
    }
    // Non-UTF-8 values come back base64-encoded.
    let r = c.kv_put(3, "any/binary", vec![0xff, 0x00, 0xfe], "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let g = c.get_ok(1, "any/binary", "").await;
    assert_eq!(g.body["encoding"].as_str(), Some("base64"), "{g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_and_epoch_guard() {
    let (c, leader) = three_nodes(CALM_TIMING).await;
    let f = followers(&c, leader)[0];

    // if_revision=0: create only if absent.
    let r1 = c.kv_put(f, "cas/k", "one", "if_revision=0").await;
    assert_eq!(r1.status, 200, "{r1:?}");
    let rev1 = rev(&r1, "revision");
    let again = c.kv_put(leader, "cas/k", "clobber", "if_revision=0").await;
    assert_error(&again, 409, "create of an existing key");

    // CAS on the mod revision: the current one wins, a stale one conflicts (through either node).
    let r2 = c
        .kv_put(leader, "cas/k", "two", &format!("if_revision={rev1}"))
        .await;
    assert_eq!(r2.status, 200, "{r2:?}");
    let rev2 = rev(&r2, "revision");
    assert!(rev2 > rev1);
    let stale = c
        .kv_put(f, "cas/k", "lost update", &format!("if_revision={rev1}"))
        .await;
    assert_error(&stale, 409, "CAS with a stale revision");

    let g = c.kv_get(f, "cas/k", "").await;
    assert_eq!(
        g.value(),
        Some("two"),
        "a failed CAS changes nothing: {g:?}"
    );
    assert_eq!(rev(&g, "create_revision"), rev1, "{g:?}");
    assert_eq!(rev(&g, "mod_revision"), rev2, "{g:?}");
    assert_eq!(rev(&g, "version"), 2, "{g:?}");

    // if_epoch: a writer fenced at another epoch is refused, and nothing changes.
    let fenced = c
        .kv_put(f, "cas/k", "from an old primary", "if_epoch=999")
        .await;
    assert_error(&fenced, 409, "write with a mismatching epoch");
    let fenced = c.kv_delete(leader, "cas/k", "if_epoch=999").await;
    assert_error(&fenced, 409, "delete with a mismatching epoch");
    let g = c.kv_get(leader, "cas/k", "").await;
    assert_eq!(g.value(), Some("two"), "{g:?}");
    assert_eq!(rev(&g, "mod_revision"), rev2, "{g:?}");

    // Conditional delete: stale revision conflicts, current one deletes.
    let d = c
        .kv_delete(f, "cas/k", &format!("if_revision={rev1}"))
        .await;
    assert_error(&d, 409, "delete with a stale revision");
    let d = c
        .kv_delete(f, "cas/k", &format!("if_revision={rev2}"))
        .await;
    assert_eq!(d.status, 200, "{d:?}");
    assert_error(&c.kv_get(leader, "cas/k", "").await, 404, "after delete");
    // CAS on a missing key: only "must not exist" passes; it creates the key afresh.
    let miss = c
        .kv_put(leader, "cas/k", "x", &format!("if_revision={rev2}"))
        .await;
    assert_error(&miss, 409, "CAS on a deleted key");
    let r3 = c.kv_put(leader, "cas/k", "three", "if_revision=0").await;
    assert_eq!(r3.status, 200, "{r3:?}");
    let g = c.kv_get(f, "cas/k", "").await;
    assert_eq!(
        rev(&g, "create_revision"),
        rev(&r3, "revision"),
        "recreated key: {g:?}"
    );
    assert_eq!(rev(&g, "version"), 1, "{g:?}");

    // Exactly one of several racing creators wins.
    let mut tasks = Vec::new();
    for (i, id) in c.ids().into_iter().enumerate() {
        let url = format!("http://{}/v1/kv/cas/race?if_revision=0", c.api(id));
        tasks.push(tokio::spawn(async move {
            let resp = http(Duration::from_secs(20))
                .put(url)
                .body(format!("writer {i}"))
                .send()
                .await;
            resp.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("racer"));
    }
    codes.sort_unstable();
    assert_eq!(codes, vec![200, 409, 409], "racing creators");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_and_a_minority_that_acknowledges_nothing() {
    let (mut c, leader) = three_nodes(CALM_TIMING).await;
    let fs = followers(&c, leader);
    let revision = c.put_ok(leader, "min/k", "before").await;

    // stale=true on a follower answers from its own applied state.
    let ls = c.status(leader).await.expect("leader status");
    c.wait_applied(fs[0], ls.committed_index, WAIT).await;
    let r = c.kv_get(fs[0], "min/k", "stale=true").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.value(), Some("before"));
    assert_eq!(rev(&r, "mod_revision"), revision);

    // Two of three down: the survivor (the old leader) must not acknowledge anything.
    c.kill9(fs[0]);
    c.kill9(fs[1]);
    for attempt in 0..2 {
        let t = Instant::now();
        let r = c
            .kv_put(leader, "min/k", format!("minority write {attempt}"), "")
            .await;
        let took = t.elapsed();
        assert_error(&r, 503, "write on a minority");
        assert!(r.retry_after.is_some(), "a 503 says when to retry: {r:?}");
        eprintln!("minority write {attempt} refused after {took:?}");
        assert!(
            took < MINORITY_ANSWER,
            "the minority took {took:?} to refuse a write"
        );

        let t = Instant::now();
        let r = c.kv_get(leader, "min/k", "").await;
        let took = t.elapsed();
        assert_error(&r, 503, "linearizable read on a minority");
        assert!(
            took < MINORITY_ANSWER,
            "the minority took {took:?} to refuse a read"
        );
    }
    // The node does not hang: it still answers status, health and stale reads.
    assert_eq!(c.health(leader).await, Some(200));
    assert!(c.status(leader).await.is_some());
    let r = c.kv_get(leader, "min/k", "stale=true").await;
    assert_eq!(r.status, 200, "a stale read works without a quorum: {r:?}");
    assert_eq!(
        r.value(),
        Some("before"),
        "no minority write was applied: {r:?}"
    );

    // With a majority back, writes are acknowledged again.
    c.start(fs[0]);
    c.wait_agreed_leader(WAIT).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let r = c.kv_put(fs[0], "min/k", "after", "").await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write accepted after the majority returned: {r:?}\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.kv_get(leader, "min/k", "").await;
    assert_eq!(r.value(), Some("after"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fires_on_change_and_on_timeout() {
    let (c, leader) = three_nodes(CALM_TIMING).await;
    let f = followers(&c, leader)[0];
    let rev1 = c.put_ok(leader, "w/k", "one").await;

    // On change: a watch from rev1 (through a follower) wakes when the key changes.
    let url = format!("http://{}/v1/kv/w/k?wait={rev1}&timeout=20s", c.api(f));
    let started = Instant::now();
    let watch = tokio::spawn(async move {
        let r = http(Duration::from_secs(40))
            .get(url)
            .send()
            .await
            .expect("watch request");
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.expect("watch body");
        (status, body, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    if watch.is_finished() {
        let early = watch.await.expect("watch task");
        panic!(
            "the watch returned before anything changed: {early:?}\n{:#?}\n{}",
            c.statuses().await,
            c.logs_tail()
        );
    }
    let changed_at = Instant::now();
    let rev2 = c.put_ok(leader, "w/k", "two").await;
    let (status, body, returned) = tokio::time::timeout(WAIT, watch)
        .await
        .expect("watch ends")
        .expect("watch task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_str(), Some("two"), "{body}");
    assert_eq!(body["mod_revision"].as_u64(), Some(rev2), "{body}");
    assert!(
        returned >= changed_at,
        "the watch returned before the change"
    );
    assert!(
        returned.duration_since(started) < Duration::from_secs(15),
        "the watch waited for its timeout instead of firing on the change"
    );

    // Other keys do not wake it; its own timeout does (on the leader and through a follower).
    for (node, timeout) in [
        (leader, Duration::from_secs(1)),
        (f, Duration::from_secs(7)),
    ] {
        let url = format!(
            "http://{}/v1/kv/w/k?wait={rev2}&timeout={}s",
            c.api(node),
            timeout.as_secs()
        );
        let t = Instant::now();
        let watch = tokio::spawn(async move {
            let r = http(Duration::from_secs(40))
                .get(url)
                .send()
                .await
                .expect("watch request");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        });
        c.put_ok(leader, "w/other", "noise").await;
        let (status, text) = tokio::time::timeout(WAIT, watch)
            .await
            .expect("watch ends")
            .expect("watch task");
        let took = t.elapsed();
        assert_eq!(status, 200, "timed-out watch on node {node}: {text}");
        let body: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(body["value"].as_str(), Some("two"), "{body}");
        assert_eq!(body["mod_revision"].as_u64(), Some(rev2), "{body}");
        assert!(
            took >= timeout.mul_f64(0.9),
            "watch on node {node} returned after {took:?}, before its {timeout:?} timeout"
        );
        assert!(
            took < timeout + Duration::from_secs(10),
            "watch on node {node} overslept: {took:?}"
        );
    }

    // A watch on a key that does not exist yet fires when it is created.
    let url = format!("http://{}/v1/kv/w/new?wait=0&timeout=20s", c.api(leader));
    let watch = tokio::spawn(async move {
        let r = http(Duration::from_secs(40))
            .get(url)
            .send()
            .await
            .expect("watch request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !watch.is_finished(),
        "a watch on a missing key returned at once"
    );
    c.put_ok(f, "w/new", "born").await;
    let (status, text) = tokio::time::timeout(WAIT, watch)
        .await
        .expect("watch ends")
        .expect("watch task");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("born"), "{text}");

    let bad = c.kv_get(leader, "w/k", "wait=1&timeout=soon").await;
    assert_error(&bad, 400, "unparsable watch timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_keys_and_values_are_rejected() {
    let (c, leader) = three_nodes(&format!(
        "{CALM_TIMING}\n[storage]\nmax_value_bytes = {SMALL_MAX_VALUE}\n"
    ))
    .await;
    let f = followers(&c, leader)[0];
    let long_key = "k".repeat(2048);
    for node in [leader, f] {
        assert_error(
            &c.kv_put(node, &long_key, "v", "").await,
            400,
            "2 KiB key (PUT)",
        );
        assert_error(&c.kv_get(node, &long_key, "").await, 400, "2 KiB key (GET)");
        assert_error(
            &c.kv_put(node, "bad//key", "v", "").await,
            400,
            "empty key segment",
        );
        let big = vec![b'x'; SMALL_MAX_VALUE + 1];
        assert_error(
            &c.kv_put(node, "big/value", big, "").await,
            413,
            "value over max_value_bytes",
        );
        // Far above any limit (past the default 1 MiB too).
        let huge = vec![b'x'; 3 * 1024 * 1024];
        let r = c.kv_put(node, "big/value", huge, "").await;
        assert_eq!(r.status, 413, "3 MiB value: {r:?}");
    }
    assert_error(
        &c.kv_get(leader, "big/value", "").await,
        404,
        "rejected writes store nothing",
    );
    // At the limit is fine, and so is a 1 KiB key.
    let at_limit = vec![b'y'; SMALL_MAX_VALUE];
    let r = c.kv_put(f, "big/value", at_limit, "").await;
    assert_eq!(r.status, 200, "value of exactly max_value_bytes: {r:?}");
    let key_1k = format!("k/{}", "a".repeat(1022));
    assert_eq!(key_1k.len(), 1024);
    let r = c.kv_put(leader, &key_1k, "ok", "").await;
    assert_eq!(r.status, 200, "1 KiB key: {r:?}");
}

/// One client of the load test: writes its keys in order through any node, retrying the SAME
/// key and value on errors and 503s, and records what was acknowledged (200).
async fn load_client(
    client: usize,
    apis: Vec<String>,
    writes: usize,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    acked_count: Arc<AtomicUsize>,
    deadline: Instant,
) -> Result<(), String> {
    let http = http(Duration::from_secs(20));
    let mut target = client % apis.len();
    for i in 0..writes {
        let key = format!("load/{client}/{i:04}");
        let value = format!("client {client} write {i}");
        // Bounded by the deadline; each attempt by the HTTP timeout.
        loop {
            if Instant::now() > deadline {
                return Err(format!(
                    "client {client}: write {i} not acknowledged before the deadline"
                ));
            }
            let url = format!("http://{}/v1/kv/{key}", apis[target]);
            match http.put(url).body(value.clone()).send().await {
                Ok(r) if r.status().as_u16() == 200 => {
                    acked
                        .lock()
                        .expect("acked lock")
                        .insert(key.clone(), value.clone());
                    acked_count.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(r) if r.status().as_u16() == 503 => {}
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    return Err(format!("client {client}: write {i} got {status}: {body}"));
                }
                Err(_) => {}
            }
            // Try another node next time (the one we asked may be dead), after a short pause.
            target = (target + 1) % apis.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_leader_kill_under_load() {
    const CLIENTS: usize = 4;
    const WRITES_PER_CLIENT: usize = 500;
    const TOTAL: usize = CLIENTS * WRITES_PER_CLIENT;
    let (mut c, leader) = three_nodes("").await;
    let apis: Vec<String> = c
        .ids()
        .into_iter()
        .map(|id| c.api(id).to_string())
        .collect();
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(150);
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        clients.push(tokio::spawn(load_client(
            client,
            apis.clone(),
            WRITES_PER_CLIENT,
            acked.clone(),
            acked_count.clone(),
            deadline,
        )));
    }

    // In the middle of the load: kill -9 the leader.
    c.wait_until(
        "half the writes acknowledged",
        Duration::from_secs(120),
        || async { acked_count.load(Ordering::Relaxed) >= TOTAL / 2 },
    )
    .await;
    let at_kill = acked_count.load(Ordering::Relaxed);
    c.kill9(leader);
    let killed_at = Instant::now();
    let (new_leader, _) = c.wait_agreed_leader(WAIT).await;
    assert_ne!(new_leader, leader);
    let failover = killed_at.elapsed();
    // Bring the killed node back while the load goes on.
    c.start(leader);

    for t in clients {
        t.await
            .expect("client task")
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs_tail()));
    }
    let load_time = started.elapsed();
    let acked = acked.lock().expect("acked lock").clone();
    assert_eq!(
        acked.len(),
        TOTAL,
        "every write is eventually acknowledged with retries"
    );
    assert!(
        at_kill < TOTAL,
        "the kill happened in the middle of the load"
    );
    eprintln!("{TOTAL} writes in {load_time:?}; leader {leader} killed after {at_kill} acks; node {new_leader} led after {failover:?}");

    // Every acknowledged write is on the leader and on the restarted node.
    let (now_leader, _) = c.wait_agreed_leader(WAIT).await;
    let ls = c.status(now_leader).await.expect("leader status");
    let mut check = vec![now_leader, leader];
    if new_leader != now_leader {
        check.push(new_leader);
    }
    for id in check {
        c.wait_applied(id, ls.committed_index, WAIT).await;
        let have = c.list_all(id, "load/", true).await;
        let missing: Vec<_> = acked
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        assert!(
            missing.is_empty(),
            "node {id} lacks {} acknowledged writes, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert_eq!(
            have.len(),
            TOTAL,
            "node {id}: no writes that were never made"
        );
    }
    // Spot-check single-key reads on the restarted node too.
    for (k, v) in acked.iter().step_by(97) {
        let r = c.kv_get(leader, k, "stale=true").await;
        assert_eq!(
            r.value(),
            Some(v.as_str()),
            "{k} on restarted node {leader}: {r:?}"
        );
    }
}
