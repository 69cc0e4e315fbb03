//! Optional TLS on the admin API, with real processes: a 3-node cluster configured with a
//! self-signed certificate for 127.0.0.1 serves HTTPS only (a client trusting the cert gets
//! /v1/status; plain HTTP and a client trusting another cert fail, and the failed handshakes
//! are counted), the CLI talks HTTPS with --ca-file, a KV write on a follower is forwarded
//! to the leader over HTTPS, and a connection that never handshakes is closed after
//! `TLS_HANDSHAKE_TIMEOUT`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cli, Cluster, Options, CALM_TIMING, TEST_TOKEN, TEST_TOKEN_FILE, WAIT};
use quorate::api::wire::NodeStatus;

/// Per-request bound of the test's HTTPS clients.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Scheduling slack around `TLS_HANDSHAKE_TIMEOUT` on a loaded machine.
const IDLE_CLOSE_SLACK: Duration = Duration::from_secs(3);
/// Pause between polls while waiting for the cluster.
const POLL: Duration = Duration::from_millis(200);

/// A self-signed certificate for 127.0.0.1: (certificate PEM, private key PEM).
fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("generate a self-signed certificate");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// An HTTPS client that trusts only `ca_pem` and sends the test cluster's admin token.
fn https_client(ca_pem: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {TEST_TOKEN}"))
            .expect("a valid header value"),
    );
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("parse the test CA"),
        )
        .default_headers(headers)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build the HTTPS client")
}

async fn status(http: &reqwest::Client, c: &Cluster, id: u64) -> Option<NodeStatus> {
    let resp = http
        .get(format!("https://{}/v1/status", c.api(id)))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Waits (bounded by `WAIT`) until all nodes answer over HTTPS and agree on one leader.
async fn wait_leader(http: &reqwest::Client, c: &Cluster) -> (u64, Vec<NodeStatus>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut all = Vec::new();
        for id in c.ids() {
            if let Some(s) = status(http, c, id).await {
                all.push(s);
            }
        }
        if all.len() == c.ids().len() {
            if let Some(leader) = all[0].leader_id {
                let leaders = all.iter().filter(|s| s.raft_state == "leader").count();
                if leaders == 1 && all.iter().all(|s| s.leader_id == Some(leader)) {
                    return (leader, all);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader over HTTPS within {WAIT:?}: {all:#?}\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(POLL).await;
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_serves_https_only_and_forwards_over_https() {
    let (cert, key) = self_signed();
    // Relative paths: they resolve against the config file's folder (the cluster dir).
    // The lines land in the harness's [api] table, which `extra` follows.
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            extra: format!(
                "tls_cert_file = \"api-cert.pem\"\ntls_key_file = \"api-key.pem\"\n{CALM_TIMING}"
            ),
            ..Options::default()
        },
    );
    let cert_path = c.path().join("api-cert.pem");
    write(&cert_path, &cert);
    write(&c.path().join("api-key.pem"), &key);
    c.start_all();

    let http = https_client(&cert);
    let (leader, all) = wait_leader(&http, &c).await;
    assert!(all.iter().all(|s| s.cluster == "test"), "{all:#?}");

    // Plain HTTP to a TLS node: no answer (the bytes fail the handshake), and it is counted.
    let follower = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let before = status(&http, &c, follower)
        .await
        .expect("follower status")
        .counters
        .api_tls_handshakes_failed;
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build the HTTP client");
    let r = plain
        .get(format!("http://{}/v1/status", c.api(follower)))
        .send()
        .await;
    assert!(r.is_err(), "plain HTTP must not be served: {r:?}");

    // A client that trusts another certificate refuses the node's.
    let (other_cert, _) = self_signed();
    let r = https_client(&other_cert)
        .get(format!("https://{}/v1/status", c.api(follower)))
        .send()
        .await;
    let e = r.expect_err("a client not trusting the certificate must fail");
    let chain = error_chain(&e);
    assert!(
        chain.to_lowercase().contains("certificate"),
        "fails on the certificate: {chain}"
    );
    // The server counts a failed handshake right after it answers with an alert, so the
    // client may see the failure a moment before the count: poll (bounded).
    let deadline = Instant::now() + WAIT;
    loop {
        let after = status(&http, &c, follower)
            .await
            .expect("follower status")
            .counters
            .api_tls_handshakes_failed;
        if after >= before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failed handshakes not counted: before {before}, after {after}"
        );
        tokio::time::sleep(POLL).await;
    }
    let metrics = http
        .get(format!("https://{}/metrics", c.api(follower)))
        .send()
        .await
        .expect("metrics over https")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("quorate_api_tls_handshakes_failed_total"),
        "{metrics}"
    );

    // The CLI over HTTPS: status of every node (the peers' statuses over HTTPS too).
    let api = format!("https://{}", c.api(follower));
    let out = cli(&[
        "--api",
        &api,
        "--ca-file",
        cert_path.to_str().expect("utf-8 path"),
        "status",
        "--json",
    ]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3), "{v:#}");
    assert_eq!(v["unreachable"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert_eq!(v["queried"], serde_json::json!(api), "{v:#}");
    // https without --ca-file, and plain http to the TLS port: refused with a clear message.
    let out = cli(&["--api", &api, "status"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(out.stderr.contains("--ca-file"), "{out:?}");
    let out = cli(&["--api", &c.api(follower).to_string(), "status"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");

    // A KV write on a follower is forwarded to the leader (which speaks only HTTPS).
    let r = http
        .put(format!("https://{}/v1/kv/tls/forwarded", c.api(follower)))
        .body("via-follower")
        .send()
        .await
        .expect("PUT on the follower");
    let code = r.status();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(code, 200, "forwarded PUT: {body}\n{}", c.logs_tail());
    let r = http
        .get(format!("https://{}/v1/kv/tls/forwarded", c.api(leader)))
        .send()
        .await
        .expect("GET on the leader");
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.expect("KV JSON");
    assert_eq!(got["value"], "via-follower", "{got:#}");

    // The CLI's write path over HTTPS, through a follower, with the token file.
    let token_file = c.path().join(TEST_TOKEN_FILE);
    let out = cli(&[
        "--api",
        &api,
        "--ca-file",
        cert_path.to_str().expect("utf-8 path"),
        "--token-file",
        token_file.to_str().expect("utf-8 path"),
        "kv",
        "put",
        "tls/cli",
        "from-cli",
    ]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    let r = http
        .get(format!("https://{}/v1/kv/tls/cli", c.api(leader)))
        .send()
        .await
        .expect("GET on the leader");
    let got: serde_json::Value = r.json().await.expect("KV JSON");
    assert_eq!(got["value"], "from-cli", "{got:#}");

    // A connection that never starts its handshake is closed after TLS_HANDSHAKE_TIMEOUT.
    use tokio::io::AsyncReadExt;
    let mut idle = tokio::net::TcpStream::connect(c.api(follower))
        .await
        .expect("connect to the API port");
    let started = Instant::now();
    let bound = quorate::api::tls::TLS_HANDSHAKE_TIMEOUT + IDLE_CLOSE_SLACK;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(bound, idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection must be closed within {bound:?}: {read:?}"
    );
    assert!(
        started.elapsed() + IDLE_CLOSE_SLACK >= quorate::api::tls::TLS_HANDSHAKE_TIMEOUT,
        "closed after {:?}, long before the handshake timeout",
        started.elapsed()
    );
}

/// An error with its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
