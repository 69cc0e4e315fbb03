//! Issue 13: the executor (the loop that enforces the primary lease) is fail-stop, and the
//! test-only fault switches say loudly when they are armed.
//!
//! Both use switches that exist only with the `fault-injection` feature, which a test build of
//! this package gets through the chaos dev-dependency (see src/fault.rs); a build without it
//! fails these tests (nothing is armed, nothing panics), it does not skip them.

mod common;

use std::time::{Duration, Instant};

use common::{cli, marker_failover_options, Cluster, Options, TEST_TOKEN_FILE, WAIT};

/// Waits (bounded) for node `id`'s daemon to exit on its own; its exit status.
fn wait_for_exit(c: &mut Cluster, id: u64, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    let n = c.nodes.iter_mut().find(|n| n.member.id == id)?;
    loop {
        let child = n.child.as_mut()?;
        if let Ok(Some(st)) = child.try_wait() {
            n.child = None;
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The executor of the acting primary panics (test fault): the daemon must exit non-zero
/// at once, saying why, instead of living on with nobody enforcing its lease, and another
/// node must take over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_executor_ends_the_daemon_and_another_node_takes_over() {
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        marker_failover_options("hook_timeout = \"5s\""),
    );
    let trigger = |id: u64| c.path().join(format!("panic-executor-{id}"));
    let triggers: Vec<_> = c.ids().into_iter().map(|id| (id, trigger(id))).collect();
    for (id, file) in &triggers {
        c.set_env(
            *id,
            "QUORATE_TEST_PANIC_EXECUTOR_IF_FILE",
            &file.display().to_string(),
        );
    }
    c.start_all();
    c.wait_steady(WAIT).await;
    let ids = c.ids();
    let (p, epoch) = c.wait_acting_primary(&ids, WAIT).await;
    let health = c.health(p).await;
    assert_eq!(health, Some(200), "the primary is healthy before the fault");

    let file = &triggers.iter().find(|(id, _)| *id == p).expect("trigger").1;
    std::fs::write(file, b"now").expect("write the trigger file");
    let Some(status) = wait_for_exit(&mut c, p, Duration::from_secs(20)) else {
        panic!(
            "node {p}'s executor panicked but the daemon lives on (health {:?}):\n{}",
            c.health(p).await,
            c.logs_tail()
        );
    };
    assert_eq!(
        status.code(),
        Some(i32::from(quorate::daemon::failstop::EXIT_EXECUTOR_DIED)),
        "exit status of the daemon whose executor panicked: {status:?}\n{}",
        c.logs_tail()
    );
    let log = std::fs::read_to_string(&c.node(p).log).unwrap_or_default();
    assert!(
        log.contains("ERROR")
            && log.contains("the executor (the loop that enforces the primary lease) panicked")
            && log.contains("test fault: executor loop panicked on purpose"),
        "the log names the cause:\n{}",
        c.logs_tail()
    );

    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != p).collect();
    let (q, new_epoch) = c.wait_acting_primary(&others, WAIT).await;
    assert_ne!(q, p);
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
}

/// An armed switch is logged as an error at start and listed in /v1/status and in
/// `quorate status`; a node without one lists nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_armed_fault_switch_is_logged_and_shown_in_status() {
    let mut c = Cluster::new(&["voter"], Options::default());
    let never = c.path().join("never-created");
    c.set_env(
        1,
        "QUORATE_TEST_PANIC_EXECUTOR_IF_FILE",
        &never.display().to_string(),
    );
    c.start_all();
    c.wait_steady(WAIT).await;
    let s = c.status(1).await.expect("status");
    assert_eq!(
        s.fault_injection_armed,
        vec![format!(
            "QUORATE_TEST_PANIC_EXECUTOR_IF_FILE={}",
            never.display()
        )]
    );
    let log = std::fs::read_to_string(&c.node(1).log).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("fault injection armed: QUORATE_TEST_PANIC_EXECUTOR_IF_FILE=")
            && l.contains("must not run in production")),
        "{log}"
    );
    let token = c.path().join(TEST_TOKEN_FILE).display().to_string();
    let api = c.api(1).to_string();
    let out = cli(&["--api", &api, "--token-file", &token, "status"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("FAULT INJECTION ARMED")
            && out.stdout.contains("QUORATE_TEST_PANIC_EXECUTOR_IF_FILE="),
        "{}",
        out.stdout
    );

    // The same binary without the variable: nothing armed, nothing said.
    c.stop(1);
    let mut plain = Cluster::new(&["voter"], Options::default());
    plain.start_all();
    plain.wait_steady(WAIT).await;
    let s = plain.status(1).await.expect("status");
    assert!(s.fault_injection_armed.is_empty(), "{s:?}");
    let log = std::fs::read_to_string(&plain.node(1).log).unwrap_or_default();
    assert!(!log.contains("fault injection armed"), "{log}");
}
