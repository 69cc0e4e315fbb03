//! Issue 8 acceptance with real processes: the cluster secret keeps a node with another secret
//! out (heartbeats dropped, Raft handshake refused, leader and term unchanged), rotation lets
//! old and new secrets work side by side, an open secret file is refused, and the CLI makes
//! and checks secrets; the admin token guards every mutating endpoint (401, nothing changed),
//! reads when asked to, and the API bounds body sizes (413) and concurrent requests (503).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{cli, Cluster, Options, CALM_TIMING, TEST_TOKEN, TEST_TOKEN_FILE, WAIT};
use quorate::api::wire::NodeStatus;

/// Writes a fresh secret (mode 0600) at `dir/name` with the CLI itself.
fn new_secret(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = cli(&["secret", "generate", "--out", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    path
}

/// Puts `secret_file` (and `previous_secret_file`) at the top of node `id`'s config,
/// replacing what an earlier call put there.
fn set_secret(c: &Cluster, id: u64, current: &Path, previous: Option<&Path>) {
    let path = &c.node(id).config;
    let text = std::fs::read_to_string(path).expect("read config");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("secret_file") && !l.starts_with("previous_secret_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut head = format!("secret_file = \"{}\"\n", current.display());
    if let Some(p) = previous {
        head.push_str(&format!("previous_secret_file = \"{}\"\n", p.display()));
    }
    std::fs::write(path, head + &body).expect("write config");
}

/// Leader and term as nodes `ids` all report them, once they agree on one leader among them.
async fn agreed(c: &Cluster, ids: &[u64]) -> (u64, u64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut seen = Vec::new();
        for &id in ids {
            if let Some(s) = c.status(id).await {
                seen.push((s.leader_id, s.term, s.raft_state == "leader"));
            }
        }
        if seen.len() == ids.len() {
            if let (Some(l), t, _) = seen[0] {
                let leaders = seen.iter().filter(|s| s.2).count();
                if ids.contains(&l)
                    && leaders == 1
                    && seen.iter().all(|s| (s.0, s.1) == (Some(l), t))
                {
                    return (l, t);
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nodes {ids:?} never agreed on a leader: {seen:?}\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn peer_heartbeat(s: &NodeStatus, peer: u64) -> String {
    s.peers
        .iter()
        .find(|p| p.id == peer)
        .map(|p| p.heartbeat.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_secret_cannot_join_vote_or_disturb() {
    let opts = Options {
        extra: CALM_TIMING.to_string(),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter", "voter", "voter"], opts);
    let good = new_secret(c.path(), "secret-good");
    let wrong = new_secret(c.path(), "secret-wrong");
    for id in c.ids() {
        set_secret(&c, id, &good, None);
    }
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    c.put_ok(leader, "before", "1").await;

    // Node 3 comes back with another secret. It still has the membership in its data dir, so
    // it tries to take part: heartbeats, and pre-votes once it hears no leader.
    c.stop(3);
    let (leader, term) = agreed(&c, &[1, 2]).await;
    set_secret(&c, 3, &wrong, None);
    let before: Vec<NodeStatus> = {
        let mut v = Vec::new();
        for id in [1, 2] {
            v.push(c.status(id).await.expect("status"));
        }
        v
    };
    c.start(3);
    for (i, id) in [1u64, 2].into_iter().enumerate() {
        let b = before[i].counters.clone();
        c.wait_status(
            id,
            "node 3's heartbeats dropped and its raft handshakes refused",
            WAIT,
            |s| {
                s.counters.heartbeats_dropped_unauthenticated
                    >= b.heartbeats_dropped_unauthenticated + 5
                    && s.counters.raft_handshakes_rejected > b.raft_handshakes_rejected
            },
        )
        .await;
    }
    // Node 3 refuses the leader's connections too.
    c.wait_status(3, "the leader's handshakes refused", WAIT, |s| {
        s.counters.raft_handshakes_rejected > 0 && s.counters.heartbeats_dropped_unauthenticated > 0
    })
    .await;
    // A write the cluster commits never reaches node 3.
    let rev = c.put_ok(leader, "during", "2").await;
    assert!(rev > 0);
    let leader_status = c.status(leader).await.expect("leader status");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s3 = c.status(3).await.expect("node 3 answers its own API");
    assert!(
        s3.applied_index < leader_status.applied_index,
        "node 3 applied {} with a wrong secret (leader at {})",
        s3.applied_index,
        leader_status.applied_index
    );
    assert_ne!(s3.raft_state, "leader");
    // Leader and term unchanged; node 3 never seen alive.
    assert_eq!(
        agreed(&c, &[1, 2]).await,
        (leader, term),
        "{}",
        c.logs_tail()
    );
    for id in [1, 2] {
        let s = c.status(id).await.expect("status");
        assert_ne!(peer_heartbeat(&s, 3), "alive", "node {id}: {s:#?}");
    }
    let log = std::fs::read_to_string(&c.node(leader).log).unwrap_or_default();
    assert!(
        log.contains("does not hold this cluster's secret")
            || log.contains("holds another cluster secret"),
        "the leader's log says why node 3 is refused"
    );

    // With the right secret again, node 3 rejoins and catches up: the refusal was the secret.
    c.stop(3);
    set_secret(&c, 3, &good, None);
    c.start(3);
    c.wait_applied(3, leader_status.applied_index, WAIT).await;
    c.wait_status(leader, "node 3 alive again", WAIT, |s| {
        peer_heartbeat(s, 3) == "alive"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_and_new_secret_nodes_together() {
    let mut c = Cluster::new(&["voter", "voter", "voter"], Options::default());
    let old = new_secret(c.path(), "secret-old");
    let new = new_secret(c.path(), "secret-new");
    // Mid-rotation: nodes 1 and 2 already have the new secret (keeping the old one as
    // previous), node 3 has not been touched yet.
    set_secret(&c, 1, &new, Some(&old));
    set_secret(&c, 2, &new, Some(&old));
    set_secret(&c, 3, &old, None);
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    let rev = c.put_ok(3, "rotating", "yes").await;
    c.wait_applied(3, rev, WAIT).await;
    for id in c.ids() {
        let s = c
            .wait_status(id, "every peer alive on heartbeats", WAIT, |s| {
                s.peers.iter().all(|p| p.heartbeat == "alive")
            })
            .await;
        let k = &s.counters;
        if id == 3 {
            // Nodes 1 and 2 try the new secret first and learn that node 3 needs the old one:
            // a few refusals, not one per connection or RPC.
            assert!(k.raft_handshakes_rejected <= 8, "node 3: {s:#?}");
        } else {
            assert_eq!(k.raft_handshakes_rejected, 0, "node {id}: {s:#?}");
        }
        assert_eq!(k.heartbeats_dropped_replayed, 0, "node {id}: {s:#?}");
    }
    // Second step for node 3 is the same as for the others: new + previous; then all agree.
    c.stop(3);
    set_secret(&c, 3, &new, Some(&old));
    c.start(3);
    c.wait_steady(WAIT).await;
    let r = c.get_ok(3, "rotating", "").await;
    assert_eq!(r.value(), Some("yes"), "{r:?}");
    let _ = leader;
}

#[test]
fn a_secret_readable_by_others_is_refused_at_start() {
    let c = Cluster::new(&["voter"], Options::default());
    let secret = new_secret(c.path(), "secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    set_secret(&c, 1, &secret, None);
    let out = c.run_second_daemon(1, WAIT);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "the daemon must refuse to start: {out:?}"
    );
    let expected = format!("chmod 600 {}", secret.display());
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    // `config check` reports it too, as does a missing secret.
    let config = c.node(1).config.to_str().expect("utf-8").to_string();
    let out = cli(&["config", "check", &config]);
    assert!(out.stdout.contains(&expected), "{out:?}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = cli(&["config", "check", &config]);
    assert!(!out.stdout.contains("warning: "), "{out:?}");
}

#[test]
fn config_check_warns_when_traffic_is_not_authenticated() {
    let c = Cluster::new(&["voter", "voter", "voter"], Options::default());
    let config = c.node(1).config.to_str().expect("utf-8").to_string();
    let out = cli(&["config", "check", &config]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("warning:") && out.stdout.contains("secret_file"),
        "{out:?}"
    );
    let out = cli(&["config", "check", "--json", &config]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert!(
        v["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|p| p["key"] == "secret_file")),
        "{v}"
    );
}

#[test]
fn secret_generate_prints_fresh_hex_and_out_writes_a_private_file() {
    let a = cli(&["secret", "generate"]);
    let b = cli(&["secret", "generate"]);
    for out in [&a, &b] {
        assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
        let t = out.stdout.trim_end();
        assert_eq!(t.len(), 64, "{out:?}");
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit()), "{out:?}");
        assert!(
            out.stderr.contains("chmod 600"),
            "piped output gets the reminder"
        );
    }
    assert_ne!(a.stdout, b.stdout);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = new_secret(dir.path(), "s");
    let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = cli(&["secret", "generate", "--out", p.to_str().expect("utf-8")]);
    assert_eq!(
        again.status.and_then(|s| s.code()),
        Some(1),
        "never overwrites"
    );
}

/// A client that sends no token (the harness's `http` sends the test token).
fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

async fn code(req: reqwest::RequestBuilder) -> (u16, serde_json::Value, Option<String>) {
    let r = req.send().await.expect("the node answers");
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body, www)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_gets_401_and_changes_nothing() {
    let opts = Options {
        extra: CALM_TIMING.to_string(),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter", "voter", "voter"], opts);
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    let follower = c.other_than(leader);
    let before = c
        .status(leader)
        .await
        .expect("status")
        .counters
        .api_unauthorized;
    let http = anonymous();
    let mut refused = 0u64;
    for id in [leader, follower] {
        let api = c.api(id);
        let kv = format!("http://{api}/v1/kv/guarded");
        let attempts = [
            http.put(&kv).body("x"),
            http.put(&kv).body("x").bearer_auth("not-the-token-at-all"),
            http.put(&kv)
                .body("x")
                .bearer_auth(&TEST_TOKEN[..TEST_TOKEN.len() - 1]),
            http.put(&kv).body("x").header("authorization", TEST_TOKEN),
            http.delete(&kv),
            http.post(format!("http://{api}/v1/maintenance"))
                .body(r#"{"on":true,"reason":"attacker"}"#),
            http.post(format!("http://{api}/v1/nodes/{follower}/drain")),
            http.post(format!("http://{api}/v1/switchover"))
                .body(format!(r#"{{"to":{follower}}}"#)),
            http.delete(format!("http://{api}/v1/switchover")),
            http.post(format!("http://{api}/v1/failback")),
            http.post(format!("http://{api}/v1/failback/commit")),
            http.post(format!("http://{api}/v1/failback/undo")),
        ];
        for req in attempts {
            let (status, body, www) = code(req).await;
            assert_eq!(status, 401, "node {id}: {body}");
            let msg = body["error"].as_str().unwrap_or_default();
            assert!(
                msg.contains("Authorization: Bearer") && msg.contains("--token-file"),
                "the 401 says how to pass the token: {body}"
            );
            assert!(www.is_some_and(|w| w.starts_with("Bearer")));
            refused += 1;
        }
        // Reads stay open by default.
        let (status, _, _) = code(http.get(format!("http://{api}/v1/status"))).await;
        assert_eq!(status, 200);
    }
    // Nothing changed: no key, no maintenance, nobody drained, same leader.
    let r = c.get_ok(leader, "guarded", "").await;
    assert_eq!(r.status, 404, "{r:?}");
    let s = c.status(leader).await.expect("status");
    assert_eq!(s.maintenance, None);
    assert!(s.drained.is_empty(), "{s:#?}");
    assert_eq!(s.leader_id, Some(leader));
    let counted = c
        .wait_status(leader, "401s counted", WAIT, |s| {
            s.counters.api_unauthorized >= before + refused / 2
        })
        .await;
    let metrics = c
        .client(leader)
        .send(reqwest::Method::GET, "/metrics", None, None)
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.1).to_string();
    assert!(
        text.contains("quorate_api_requests_rejected_total{reason=\"unauthorized\"}"),
        "{text}"
    );
    assert!(counted.counters.api_unauthorized > before);

    // The right token works, on the leader and through a follower (forwarded with it).
    for id in [leader, follower] {
        let (status, body, _) = code(
            http.put(format!("http://{}/v1/kv/guarded", c.api(id)))
                .body(format!("by-{id}"))
                .bearer_auth(TEST_TOKEN),
        )
        .await;
        assert_eq!(status, 200, "node {id}: {body}");
    }

    // The CLI reads no token unless told to; with --token-file or QUORATE_TOKEN_FILE it works.
    let api = c.api(follower).to_string();
    let token_file = c.path().join(TEST_TOKEN_FILE);
    let tf = token_file.to_str().expect("utf-8");
    let out = cli(&["--api", &api, "kv", "put", "cli/key", "v1"]);
    assert_ne!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert!(
        out.stderr.contains("401") || out.stderr.contains("token"),
        "{out:?}"
    );
    let out = cli(&[
        "--api",
        &api,
        "--token-file",
        tf,
        "kv",
        "put",
        "cli/key",
        "v2",
    ]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    let child = std::process::Command::new(common::BIN)
        .args(["--api", &api, "maintenance", "on", "--reason", "by env"])
        .env("QUORATE_TOKEN_FILE", tf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cli");
    let out = common::wait_exit(child, WAIT);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    c.wait_status(leader, "maintenance on", WAIT, |s| s.maintenance.is_some())
        .await;
    let out = cli(&[
        "--api",
        &api,
        "--token-file",
        "/nonexistent/token",
        "kv",
        "put",
        "a",
        "b",
    ]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/token"), "{out:?}");
}

/// One node with `protect_reads` and a small `max_value_bytes`: reads need the token (but the
/// load-balancer probes do not), bodies over the limit get 413 before they are read, and
/// requests over the concurrency limit get 503 while the probes still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_reads_body_limit_and_request_limit() {
    let opts = Options {
        extra: "[storage]\nmax_value_bytes = 1024\n".to_string(),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter"], opts);
    let config = c.node(1).config.clone();
    let text = std::fs::read_to_string(&config).expect("read config");
    let token_line = format!("token_file = \"{TEST_TOKEN_FILE}\"");
    assert_eq!(text.matches(&token_line).count(), 1, "{text}");
    std::fs::write(
        &config,
        text.replace(&token_line, &format!("{token_line}\nprotect_reads = true")),
    )
    .expect("write config");
    c.start_all();
    c.wait_steady(WAIT).await;
    let api = c.api(1);
    let http = anonymous();
    // Reads: 401 without the token, except the probes.
    for path in ["/v1/status", "/v1/history", "/metrics", "/v1/kv/x"] {
        let (status, body, _) = code(http.get(format!("http://{api}{path}"))).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    for path in ["/health", "/primary", "/replica"] {
        let r = http
            .get(format!("http://{api}{path}"))
            .send()
            .await
            .expect("probe");
        assert_ne!(
            r.status().as_u16(),
            401,
            "{path} must stay open for load balancers"
        );
    }
    let out = cli(&["--api", &api.to_string(), "status"]);
    assert_ne!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    let tf = c.path().join(TEST_TOKEN_FILE);
    let out = cli(&[
        "--api",
        &api.to_string(),
        "--token-file",
        tf.to_str().expect("utf-8"),
        "status",
    ]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");

    // Bodies: a value over max_value_bytes is refused by the KV layer, a body over the API
    // limit (max_value_bytes + slack) before it is read; neither is stored.
    let authed = common::http(Duration::from_secs(20));
    let kv = format!("http://{api}/v1/kv/big");
    let (status, body, _) = code(authed.put(&kv).body(vec![b'v'; 2048])).await;
    assert_eq!(status, 413, "{body}");
    let (status, body, _) = code(authed.put(&kv).body(vec![b'v'; 512 * 1024])).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("limit")),
        "{body}"
    );
    // (The harness's client sends the token, so its status reads still work.)
    let s = c.status(1).await.expect("status with the token");
    assert!(s.counters.api_body_too_large >= 1, "{:#?}", s.counters);
    assert_eq!(c.get_ok(1, "big", "").await.status, 404);
    let (status, _, _) = code(authed.put(&kv).body(vec![b'v'; 1024])).await;
    assert_eq!(status, 200, "a value at the limit is fine");

    // Concurrency: fill every slot with long watches, then one more request is refused with
    // 503 while /health still answers.
    let limit = quorate::api::auth::MAX_CONCURRENT_API_REQUESTS;
    let watch_url = format!("http://{api}/v1/kv/w?wait=1000000&timeout=10s");
    let mut watches = Vec::new();
    for _ in 0..limit {
        let req = authed.get(&watch_url);
        watches.push(tokio::spawn(async move {
            req.send().await.map(|r| r.status().as_u16())
        }));
    }
    // The watches need a moment to connect on a loaded machine; they last 10 s. A poll may
    // take a slot while the watches still connect: then the last watch is the request that is
    // refused, which proves the limit just as well.
    let deadline = std::time::Instant::now() + Duration::from_secs(9);
    let mut refused = false;
    while std::time::Instant::now() < deadline {
        let (status, body, _) = code(authed.get(format!("http://{api}/v1/kv/big"))).await;
        if status == 503 {
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains("retry")),
                "{body}"
            );
            refused = true;
            break;
        }
        if watches.iter().any(|w| w.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.health(1).await, Some(200), "the probe is never limited");
    let mut codes = Vec::new();
    for w in watches {
        codes.push(w.await.ok().and_then(|r| r.ok()));
    }
    let watches_refused = codes.iter().filter(|c| **c == Some(503)).count();
    assert!(
        refused || watches_refused >= 1,
        "no request was refused with {limit} watches in flight: {codes:?}"
    );
    let s = c.status(1).await.expect("status once the watches are done");
    assert!(s.counters.api_overloaded >= 1, "{:#?}", s.counters);
}
