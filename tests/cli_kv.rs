//! `quorate kv get|put|del|list|watch` end to end against a real cluster.

mod common;

use std::time::Duration;

use common::{cli, Cluster, Options, CALM_TIMING, TEST_TOKEN_FILE, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_cli_roundtrip() {
    let opts = Options {
        extra: CALM_TIMING.to_string(),
        ..Options::default()
    };
    let mut c = Cluster::new(&["voter", "voter", "voter"], opts);
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    let follower = c.other_than(leader);
    let api = c.api(follower).to_string();
    let token = c.path().join(TEST_TOKEN_FILE).display().to_string();
    let kv = |args: &[&str]| {
        let mut all = vec!["kv", "--api", &api, "--token-file", &token];
        all.extend_from_slice(args);
        cli(&all)
    };
    // Writes through a follower (forwarded), then reads back.
    let put = kv(&["put", "app/mode", "active"]);
    assert!(put.status.is_some_and(|s| s.success()), "{put:?}");
    assert!(put.stdout.contains("revision"), "{put:?}");
    let get = kv(&["get", "app/mode"]);
    assert!(get.status.is_some_and(|s| s.success()), "{get:?}");
    assert_eq!(get.stdout.trim(), "active");
    let json = kv(&["get", "app/mode", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("JSON");
    assert_eq!(v["key"], "app/mode");
    // CAS: create-only on an existing key is refused with the reason, exit 1.
    let cas = kv(&["put", "app/mode", "x", "--if-revision", "0"]);
    assert!(
        !cas.status.is_some_and(|s| s.success()) && cas.stderr.contains("409"),
        "{cas:?}"
    );
    // List and delete.
    assert!(kv(&["put", "app/other", "1"])
        .status
        .is_some_and(|s| s.success()));
    let list = kv(&["list", "app/"]);
    assert!(
        list.stdout.contains("app/mode") && list.stdout.contains("app/other"),
        "{list:?}"
    );
    assert!(kv(&["del", "app/other"])
        .status
        .is_some_and(|s| s.success()));
    let gone = kv(&["get", "app/other"]);
    assert!(
        !gone.status.is_some_and(|s| s.success()) && gone.stderr.contains("404"),
        "{gone:?}"
    );
    // A watch returns once the key changes.
    let api2 = api.clone();
    let token2 = token.clone();
    let watcher = std::thread::spawn(move || {
        cli(&[
            "kv",
            "--api",
            &api2,
            "--token-file",
            &token2,
            "watch",
            "app/mode",
            "--count",
            "1",
            "--timeout",
            "20s",
        ])
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(kv(&["put", "app/mode", "standby"])
        .status
        .is_some_and(|s| s.success()));
    let w = watcher.join().expect("watch thread");
    assert!(
        w.status.is_some_and(|s| s.success()) && w.stdout.contains("standby"),
        "{w:?}"
    );
    // Without the token a write is refused and changes nothing.
    let denied = cli(&["kv", "--api", &api, "put", "app/mode", "hacked"]);
    assert!(
        !denied.status.is_some_and(|s| s.success()) && denied.stderr.contains("401"),
        "{denied:?}"
    );
    assert_eq!(kv(&["get", "app/mode"]).stdout.trim(), "standby");
}
