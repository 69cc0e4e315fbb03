//! sd_notify with a fake NOTIFY_SOCKET: READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1 arrive;
//! with the executor loop stalled by the test-only fault, WATCHDOG=1 stops.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use quorate::cli::localcluster::{ClusterSpec, LocalCluster};

fn collect(sock: &UnixDatagram, for_how_long: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = Instant::now() + for_how_long;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    out
}

fn single_node(env: Vec<(String, String)>) -> LocalCluster {
    std::env::set_var("QUORATE_BIN", env!("CARGO_BIN_EXE_quorate"));
    let mut spec = ClusterSpec::voters(1);
    spec.env = env;
    LocalCluster::create(&spec).expect("cluster")
}

#[test]
fn notify_protocol_ready_status_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut c = single_node(vec![
        ("NOTIFY_SOCKET".into(), path.display().to_string()),
        ("WATCHDOG_USEC".into(), "200000".into()),
    ]);
    c.start(1).unwrap();
    let msgs = collect(&sock, Duration::from_secs(6));
    assert!(msgs.iter().any(|m| m.starts_with("READY=1")), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.starts_with("STATUS=role=")),
        "{msgs:?}"
    );
    let dogs = msgs.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        dogs >= 5,
        "expected a steady watchdog, got {dogs}: {msgs:?}"
    );
    c.signal(1, libc::SIGTERM);
    let after = collect(&sock, Duration::from_secs(5));
    assert!(after.iter().any(|m| m == "STOPPING=1"), "{after:?}");
}

#[test]
fn a_stalled_main_loop_stops_feeding_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut c = single_node(vec![
        ("NOTIFY_SOCKET".into(), path.display().to_string()),
        ("WATCHDOG_USEC".into(), "200000".into()),
        ("QUORATE_TEST_STALL_EXECUTOR_AFTER_MS".into(), "3000".into()),
    ]);
    c.start(1).unwrap();
    let before = collect(&sock, Duration::from_secs(3));
    assert!(
        before.iter().any(|m| m == "WATCHDOG=1"),
        "watchdog fed before the stall: {before:?}"
    );
    // Let the stall begin, then watch for a while: no more watchdog pings.
    let _ = collect(&sock, Duration::from_secs(2));
    let after = collect(&sock, Duration::from_secs(3));
    assert!(
        !after.iter().any(|m| m == "WATCHDOG=1"),
        "watchdog still fed after the stall: {after:?}"
    );
}
