//! A promote that fails on every node (a broken service installation) must leave the
//! cluster quiet: each node, once its promote failed past the restart budget, judges itself
//! unusable and says so in its heartbeats, so no leader hands leadership to it. Before, a
//! node advertised only its monitor's verdict (healthy), every leader saw another node as
//! the better candidate, and leadership moved back and forth dozens of times a second.

mod common;

use std::time::Duration;

use common::{Cluster, Options, FAILOVER_TIMING, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_failing_everywhere_does_not_bounce_leadership() {
    let dir = tempfile::tempdir().expect("tempdir");
    let failing = dir.path().join("promote-fails.sh");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho \"the service cannot start (test)\" >&2\nexit 1\n",
    )
    .expect("write hook");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            extra: format!(
                "{FAILOVER_TIMING}[resource]\npromote = \"{}\"\nlocal_restarts = 1\nrestart_window = \"10m\"\n",
                failing.display()
            ),
            ..Options::default()
        },
    );
    c.start_all();
    // Every node tries (and fails) its promotes within a few seconds; then no node is a
    // candidate and the terms must stop climbing.
    tokio::time::sleep(WAIT / 2).await;
    let before = max_term(&c).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = max_term(&c).await;
    assert!(
        after <= before + 5,
        "leadership kept moving while no node could be primary: term {before} -> {after} in 10 s\n{}",
        c.logs_tail()
    );
}

async fn max_term(c: &Cluster) -> u64 {
    c.statuses().await.iter().map(|s| s.term).max().unwrap_or(0)
}
