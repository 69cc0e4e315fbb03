//! `quorate failback` as an operator runs it: the command follows the phases, and while home
//! catches up it prints a progress line (entries and bytes behind, rate, ETA).
//!
//! To hold home in Syncing long enough to see the progress, the test freezes home (SIGSTOP)
//! after it rejoined and writes a backlog; `dead_after` is long here (6 s), so the frozen home
//! still counts as alive when the failback is requested. Thawed, it catches up, and the
//! failback cuts over, verifies and commits.

mod common;

use std::time::Duration;

use common::{cli_spawn, marker_resource, wait_exit, Cluster, Options, TEST_TOKEN_FILE, WAIT};

const TIMING: &str = "
[timing]
heartbeat_interval = \"100ms\"
suspect_after = \"1s\"
dead_after = \"6s\"
raft_heartbeat = \"100ms\"
election_timeout_min = \"1s\"
election_timeout_max = \"2s\"
lease = \"800ms\"
";

/// Entries written while home is frozen: far more than the cut-over lag (64).
const BACKLOG: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_cli_shows_sync_progress_and_follows_the_phases() {
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            extra: format!(
                "{TIMING}{}",
                marker_resource("hook_timeout = \"5s\"\nmonitor_interval = \"200ms\"")
            ),
            ..Options::default()
        },
    );
    c.start_all();
    c.wait_steady(WAIT).await;
    let ids = c.ids();
    let (home, _) = c.wait_acting_primary(&ids, WAIT).await;
    c.kill9(home);
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != home).collect();
    let (current, _) = c.wait_acting_primary(&others, WAIT).await;
    c.start(home);
    c.wait_status(current, "failback available", WAIT, |s| {
        s.notes.iter().any(|n| n.contains("failback available"))
    })
    .await;

    // Freeze home and give it a backlog.
    c.signal(home, libc::SIGSTOP);
    let writes = (0..BACKLOG).map(|i| {
        let c = &c;
        async move { c.put_ok(current, &format!("backlog/{i}"), "x").await }
    });
    futures::future::join_all(writes).await;

    let token = c.path().join(TEST_TOKEN_FILE);
    let api = c.api(current).to_string();
    let token = token.display().to_string();
    let cli = cli_spawn(&["--api", &api, "--token-file", &token, "failback"]);
    // Let it report a few progress lines with home frozen, then thaw home.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.signal(home, libc::SIGCONT);
    let out = tokio::task::spawn_blocking(move || wait_exit(cli, WAIT * 4))
        .await
        .expect("join");
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "quorate failback failed:\n{text}\n{}",
        c.logs_tail()
    );
    assert!(text.contains("phase \"syncing\""), "{text}");
    let progress: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("syncing [") && l.contains("entries (~") && l.contains("ETA"))
        .collect();
    assert!(
        !progress.is_empty(),
        "a progress line while home catches up:\n{text}"
    );
    let behind: u64 = progress[0]
        .split("] ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("entries behind in {:?}", progress[0]));
    assert!(
        behind >= 64,
        "home was at least the cut-over lag behind: {}",
        progress[0]
    );
    assert!(
        text.contains(&format!("done: primary is node {home}")),
        "{text}"
    );
    let st = c.status(current).await.expect("status");
    assert_eq!(st.primary, Some(home));
    assert!(st.failed_over.is_none(), "failback committed: {st:?}");
}
