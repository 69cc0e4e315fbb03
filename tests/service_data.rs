//! Issue 15 acceptance: the protected service's data is first-class. Three real quorate
//! processes protect the file-backed example service (`cluster-config/hooks/filedb.sh`, every
//! hook): its monitor reports a position (the data file's size) and a timeline, heartbeats
//! carry the reports, the failover candidate is chosen by the data, a replica beyond
//! `max_service_lag_bytes` is never promoted, every replica runs `follow` with the new
//! primary's address after every primary change, and `/replica?lag=` tells the truth.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Cluster, Options, FAILOVER_TIMING, TEST_TOKEN_FILE};

const WAIT: Duration = Duration::from_secs(60);
const MAX_SERVICE_LAG_BYTES: u64 = 1_000;

fn filedb_hook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-config/hooks/filedb.sh")
}

fn service_of(id: u64) -> String {
    format!("127.0.0.1:{}", 5_400 + id)
}

/// Sets each member's priority (in `[node]` and every `[[peer]]`) and gives every `[[peer]]`
/// a `service` address, in the configs the launcher wrote.
fn rewrite_config(path: &Path, priorities: &[(u64, u32)]) {
    let text = std::fs::read_to_string(path).expect("read config");
    let mut out = String::new();
    let mut id: Option<u64> = None;
    let mut in_peer = false;
    for line in text.lines() {
        if line == "[[peer]]" {
            in_peer = true;
        } else if line.starts_with('[') {
            in_peer = false;
        }
        if let Some(v) = line.strip_prefix("id = ") {
            id = v.trim().parse().ok();
        }
        if line.starts_with("priority = ") {
            if let Some((_, p)) = priorities.iter().find(|(k, _)| Some(*k) == id) {
                out.push_str(&format!("priority = {p}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        if in_peer && line.starts_with("api = ") {
            let k = id.expect("a peer id before its api");
            out.push_str(&format!("service = \"{}\"\n", service_of(k)));
        }
    }
    std::fs::write(path, out).expect("write config");
}

/// Three voters running filedb.sh for every hook; node 1 has the highest priority (the first
/// primary), nodes 2 and 3 the given ones.
fn filedb_cluster(root: &Path, priority_2: u32, priority_3: u32) -> Cluster {
    filedb_cluster_with(root, priority_2, priority_3, "")
}

/// [`filedb_cluster`] with more config text after the `[resource]` keys (more of them, or
/// further tables).
fn filedb_cluster_with(root: &Path, priority_2: u32, priority_3: u32, more: &str) -> Cluster {
    let hook = filedb_hook();
    let hook = hook.display();
    let extra = format!(
        "{FAILOVER_TIMING}[resource]\npromote = \"{hook}\"\ndemote = \"{hook}\"\nmonitor = \"{hook}\"\n\
         follow = \"{hook}\"\nnotify = \"{hook}\"\nstart = \"{hook}\"\nstop = \"{hook}\"\nrejoin = \"{hook}\"\nfence = \"{hook}\"\nmonitor_interval = \"200ms\"\n\
         failure_threshold = 3\nfencing = \"best-effort\"\nmax_service_lag_bytes = {MAX_SERVICE_LAG_BYTES}\n{more}"
    );
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            extra,
            ..Options::default()
        },
    );
    let priorities = [(1, 300), (2, priority_2), (3, priority_3)];
    for id in 1..=3 {
        rewrite_config(&c.node(id).config.clone(), &priorities);
        c.set_env(id, "FILEDB_ROOT", &root.display().to_string());
    }
    c.start_all();
    c
}

fn calls(root: &Path) -> String {
    std::fs::read_to_string(root.join("calls.log")).unwrap_or_default()
}

/// True once `node` ran follow for `primary`, told the primary's service address.
fn followed(root: &Path, node: u64, primary: u64) -> bool {
    let want = format!(
        "follow node={node} primary={primary} service={} ",
        service_of(primary)
    );
    calls(root).lines().any(|l| l.starts_with(&want))
}

/// Stops `node`'s streaming and waits until its monitor acknowledged it (a monitor run that
/// began before the pause could still copy).
async fn pause(c: &Cluster, root: &Path, node: u64) {
    let seen = root.join(format!("node{node}/paused.seen"));
    let _ = std::fs::remove_file(&seen);
    std::fs::write(root.join(format!("node{node}/paused")), b"").expect("pause");
    c.wait_until(
        &format!("node {node}'s monitor saw the pause"),
        WAIT,
        || {
            let seen = seen.clone();
            async move { seen.exists() }
        },
    )
    .await;
}

fn append(root: &Path, node: u64, bytes: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join(format!("node{node}/data")))
        .expect("open the primary's data");
    f.write_all(&vec![b'x'; bytes]).expect("append");
}

fn data_len(root: &Path, node: u64) -> u64 {
    std::fs::metadata(root.join(format!("node{node}/data")))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Waits until `observer`'s status shows `node`'s reported service position at `position`.
async fn wait_position(c: &Cluster, observer: u64, node: u64, position: u64) {
    c.wait_status(
        observer,
        &format!("node {node}'s position {position} as node {observer} sees it"),
        WAIT,
        |s| {
            let seen = if s.node_id == node {
                s.service.position
            } else {
                s.peers
                    .iter()
                    .find(|p| p.id == node)
                    .and_then(|p| p.service.as_ref())
                    .and_then(|sv| sv.position)
            };
            seen == Some(position)
        },
    )
    .await;
}

async fn get_code(c: &Cluster, id: u64, path: &str) -> (u16, String) {
    let http = common::http(Duration::from_secs(5));
    match http.get(format!("http://{}{path}", c.api(id))).send().await {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Node 1 is the first primary; both replicas follow it with its service address.
async fn started(c: &Cluster, root: &Path) {
    let (p, _) = c.wait_acting_primary(&[1, 2, 3], WAIT).await;
    assert_eq!(p, 1, "node 1 has the highest priority");
    c.wait_until("both replicas followed node 1", WAIT, || async {
        followed(root, 2, 1) && followed(root, 3, 1)
    })
    .await;
    // And caught up with it: same timeline (a follow may have come before the promote hook
    // switched it; the monitor's streaming crosses the switch), nothing behind.
    c.wait_status(1, "both replicas caught up with node 1", WAIT, |s| {
        [2, 3].iter().all(|id| {
            s.peers
                .iter()
                .find(|p| p.id == *id)
                .and_then(|p| p.service.as_ref())
                .is_some_and(|sv| sv.lag_bytes == Some(0))
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_with_the_most_data_wins_and_every_replica_follows_the_new_primary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("filedb");
    std::fs::create_dir_all(&root).expect("filedb root");
    // Equal priorities for 2 and 3: by id alone node 2 would win.
    let mut c = filedb_cluster(&root, 100, 100);
    started(&c, &root).await;

    // Node 2 stops streaming; node 1 takes 600 bytes of writes that node 3 streams.
    pause(&c, &root, 2).await;
    let base = data_len(&root, 1);
    append(&root, 1, 600);
    for node in [1, 3] {
        wait_position(&c, 3, node, base + 600).await;
    }
    wait_position(&c, 1, 2, base).await;
    wait_position(&c, 1, 3, base + 600).await;
    wait_position(&c, 2, 1, base + 600).await;
    let s = c.status(1).await.expect("status of node 1");
    let two = s
        .peers
        .iter()
        .find(|p| p.id == 2)
        .and_then(|p| p.service.clone());
    assert_eq!(two.as_ref().and_then(|v| v.lag_bytes), Some(600), "{two:?}");
    assert_eq!(
        two.and_then(|v| v.ineligible),
        None,
        "600 <= 1000: eligible"
    );

    // /metrics says the same.
    let (code, metrics) = get_code(&c, 1, "/metrics").await;
    assert_eq!(code, 200, "{metrics}");
    for line in [
        "quorate_service_lag_bytes{node=\"2\"} 600",
        "quorate_service_lag_bytes{node=\"3\"} 0",
        "quorate_service_eligible{node=\"2\"} 1",
        "quorate_service_role{node=\"1\",role=\"primary\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.lines().any(|l| l
            == format!(
                "quorate_service_position_bytes{{node=\"1\"}} {}",
                base + 600
            )),
        "{metrics}"
    );

    // /replica tells the truth about data: node 2 is 600 bytes behind.
    assert_eq!(get_code(&c, 3, "/replica").await.0, 200);
    assert_eq!(get_code(&c, 2, "/replica").await.0, 200, "within 1000");
    let (code, why) = get_code(&c, 2, "/replica?lag=100").await;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("600 bytes behind"), "{why}");
    assert_eq!(get_code(&c, 2, "/replica?lag=many").await.0, 400);
    assert_eq!(get_code(&c, 1, "/replica").await.0, 503, "the primary");
    assert_eq!(get_code(&c, 1, "/read-only").await.0, 200, "the primary");
    assert_eq!(get_code(&c, 3, "/read-only").await.0, 200, "a replica");

    // The primary dies: node 3 has the most data and wins although node 2 has the smaller id.
    c.kill9(1);
    let (p, _) = c.wait_acting_primary(&[2, 3], WAIT).await;
    assert_eq!(
        p,
        3,
        "the replica with the highest position wins\n{}",
        calls(&root)
    );
    c.wait_until("node 2 followed node 3", WAIT, || async {
        followed(&root, 2, 3)
    })
    .await;
    // Both survivors were told: the notify action ran on each for node 3's promotion, and on
    // node 3 for its own new local role.
    c.wait_until(
        "both survivors notified of node 3's promotion",
        WAIT,
        || async {
            [2, 3].iter().all(|n| {
                calls(&root).lines().any(|l| {
                    l.starts_with(&format!("notify node={n} "))
                        && l.contains("event=promoted event_node=3 ")
                })
            }) && calls(&root).lines().any(|l| {
                l.starts_with("notify node=3 ")
                    && l.contains("event=local_role event_node=3 ")
                    && l.ends_with("event_role=primary")
            })
        },
    )
    .await;
    // `quorate actions` lists what node 2's agent did, newest last: its follow of node 3.
    let api = c.api(2).to_string();
    let out = common::cli(&["--api", &api, "actions", "--json"]);
    assert!(out.status.is_some_and(|s| s.success()), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("actions JSON");
    let last = v["actions"]
        .as_array()
        .and_then(|a| a.iter().rev().find(|a| a["action"] == "follow"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["ok"], true, "{v}");
    assert_eq!(v["agent"], "exec", "{v}");
    let out = common::cli(&["--api", &api, "actions"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("follow") && l.contains(" ok ")),
        "{out:?}"
    );
    std::fs::remove_file(root.join("node2/paused")).expect("unpause node 2");
    // Following copied the new primary's data (and its new timeline).
    assert_eq!(data_len(&root, 2), data_len(&root, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_beyond_max_service_lag_bytes_is_never_promoted_and_status_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("filedb");
    std::fs::create_dir_all(&root).expect("filedb root");
    // Node 2 would win by priority.
    let mut c = filedb_cluster(&root, 200, 100);
    started(&c, &root).await;

    pause(&c, &root, 2).await;
    let base = data_len(&root, 1);
    append(&root, 1, 5_000);
    for node in [1, 3] {
        wait_position(&c, 3, node, base + 5_000).await;
    }
    wait_position(&c, 1, 2, base).await;
    wait_position(&c, 2, 1, base + 5_000).await;
    let s = c.status(1).await.expect("status of node 1");
    let two = s
        .peers
        .iter()
        .find(|p| p.id == 2)
        .and_then(|p| p.service.clone())
        .expect("node 2's service in status");
    assert_eq!(two.lag_bytes, Some(5_000));
    let why = two.ineligible.expect("node 2 is not eligible");
    assert!(why.contains("max_service_lag_bytes"), "{why}");
    let (code, why) = get_code(&c, 2, "/replica").await;
    assert_eq!(code, 503, "{why}");
    let (_, metrics) = get_code(&c, 1, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "quorate_service_eligible{node=\"2\"} 0"),
        "{metrics}"
    );
    // The last agent action of each node is in its status (node 2: its follow of node 1).
    let two = c.status(2).await.expect("status of node 2");
    let last = two.last_action.expect("node 2 ran actions");
    assert!(last.ok, "{last:?}");

    c.kill9(1);
    let (p, _) = c.wait_acting_primary(&[2, 3], WAIT).await;
    assert_eq!(p, 3, "node 2 is 5000 bytes behind\n{}", calls(&root));
    // Every node started its service as a replica before anything else ran on it.
    for n in 1..=3 {
        let first = calls(&root)
            .lines()
            .find(|l| l.contains(&format!(" node={n} ")))
            .map(str::to_string);
        assert!(
            first.as_deref().is_some_and(|l| l.starts_with("start ")),
            "node {n}'s first action: {first:?}\n{}",
            calls(&root)
        );
    }
    // A graceful stop of the primary hands over, then stops its service.
    let exit = c.stop(3);
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    let lines: Vec<String> = calls(&root)
        .lines()
        .filter(|l| l.contains(" node=3 ") && !l.starts_with("notify "))
        .map(str::to_string)
        .collect();
    assert!(
        lines.last().is_some_and(|l| l.starts_with("stop ")),
        "node 3's last action is its stop: {lines:#?}"
    );
    // Node 2 never ran promote.
    assert!(
        !calls(&root)
            .lines()
            .any(|l| l.starts_with("promote node=2 ")),
        "{}",
        calls(&root)
    );
}

/// Runs `quorate failback` (it waits for the end) against `via`.
async fn failback_cli(c: &Cluster, via: u64) -> common::Exited {
    let api = c.api(via).to_string();
    let token = c.path().join(TEST_TOKEN_FILE).display().to_string();
    let cli = common::cli_spawn(&["--api", &api, "--token-file", &token, "failback"]);
    tokio::task::spawn_blocking(move || common::wait_exit(cli, WAIT * 4))
        .await
        .expect("join")
}

async fn failback_available(c: &Cluster, via: u64, home: u64) {
    c.wait_status(via, "failback available", WAIT * 2, |s| {
        s.notes
            .iter()
            .any(|n| n.contains(&format!("failback available: home node {home}")))
    })
    .await;
}

/// Failback as a data operation: a protective snapshot on the current primary before the
/// cut-over, then home's data is verified once it is primary. A failed verify undoes the
/// failback (and `quorate failback` says so and fails); a passing one commits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_snapshots_the_current_primary_and_verifies_home_before_it_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("filedb");
    std::fs::create_dir_all(&root).expect("filedb root");
    let hook = filedb_hook();
    let more = format!(
        "snapshot = \"{h}\"\nverify = \"{h}\"\n[failback]\nverify_checks = 2\nverify_timeout = \"30s\"\n",
        h = hook.display()
    );
    let mut c = filedb_cluster_with(&root, 100, 100, &more);
    started(&c, &root).await;

    c.kill9(1);
    let (current, _) = c.wait_acting_primary(&[2, 3], WAIT).await;
    // Writes on the failed-over primary that home must get back.
    append(&root, current, 700);
    let written = data_len(&root, current);
    c.start(1);
    failback_available(&c, current, 1).await;

    // A verify that fails undoes the failback: the current primary is primary again.
    std::fs::write(root.join("node1/verify.fail"), b"").expect("verify.fail");
    let out = failback_cli(&c, current).await;
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "an undone failback is a failure:\n{text}\n{}",
        calls(&root)
    );
    assert!(
        text.contains("undone") && text.contains("verify action failed"),
        "{text}\n{}\n{}",
        calls(&root),
        c.logs_tail()
    );
    let calls_now = calls(&root);
    let snapshot = calls_now
        .lines()
        .find(|l| l.starts_with(&format!("snapshot node={current} ")))
        .unwrap_or_else(|| panic!("a snapshot on node {current}:\n{calls_now}"));
    assert!(
        snapshot.ends_with(&format!("position={written}")),
        "the snapshot holds what was written: {snapshot}"
    );
    assert!(
        calls_now
            .lines()
            .any(|l| l.starts_with("verify node=1 ") && l.ends_with("result=failed")),
        "{calls_now}"
    );
    let (p, _) = c.wait_acting_primary(&[1, 2, 3], WAIT).await;
    assert_eq!(p, current, "the undo brought the primary back");
    let st = c.status(current).await.expect("status");
    assert!(st.failed_over.is_some(), "still failed over: {st:?}");

    // With the check passing, the failback commits and home holds every snapshot byte.
    std::fs::remove_file(root.join("node1/verify.fail")).expect("remove verify.fail");
    failback_available(&c, current, 1).await;
    let out = failback_cli(&c, current).await;
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "{text}\n{}\n{}",
        calls(&root),
        c.logs_tail()
    );
    assert!(text.contains("done: primary is node 1"), "{text}");
    let verified = calls(&root)
        .lines()
        .rfind(|l| l.starts_with("verify node=1 "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        verified.contains("primary=1 ")
            && verified.contains("result=ok checked=")
            && !verified.ends_with("checked=0"),
        "home verified against the snapshot: {verified}"
    );
    let st = c.status(1).await.expect("status");
    assert_eq!(st.primary, Some(1));
    assert!(st.failed_over.is_none(), "committed: {st:?}");
    assert!(data_len(&root, 1) >= written);
}
