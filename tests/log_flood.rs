//! Issue 13: openraft logs a WARN for every failed heartbeat to a dead peer (about 20 lines a
//! second with 50 ms Raft heartbeats); quorate's log setup lets the first one through and then
//! at most one per interval, saying how many it suppressed, so the journal stays readable.

mod common;

use std::time::Duration;

use common::{Cluster, Options, WAIT};

/// Raft heartbeats every 50 ms: without the limiter a dead peer costs the leader ~20 WARN
/// lines a second. Election timeouts stay long so the loaded test machine elects no one else.
const TIMING: &str = "
[timing]
raft_heartbeat = \"50ms\"
election_timeout_min = \"1s\"
election_timeout_max = \"2s\"
lease = \"800ms\"
";

/// How long the peer stays dead while the leader's log is watched.
const WATCH: Duration = Duration::from_secs(6);

/// openraft's per-heartbeat failure lines (and the replication stream's) in `log`.
fn heartbeat_warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("WARN"))
        .filter(|l| {
            l.contains("failed to send a heartbeat")
                || l.contains("heartbeat stream returned no response")
                || l.contains("ReplicationCore recv RPCError")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_costs_the_leader_a_bounded_number_of_warnings() {
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            extra: TIMING.into(),
            ..Options::default()
        },
    );
    c.start_all();
    let leader = c.wait_steady(WAIT).await;
    let victim = c.other_than(leader);
    let before = std::fs::read_to_string(&c.node(leader).log).unwrap_or_default();
    c.kill9(victim);
    tokio::time::sleep(WATCH).await;
    let after = std::fs::read_to_string(&c.node(leader).log).unwrap_or_default();
    let new = after.get(before.len()..).unwrap_or_default();
    let warnings = heartbeat_warnings(new);
    let still_leader = c
        .status(leader)
        .await
        .is_some_and(|s| s.raft_state == "leader");
    assert!(
        still_leader,
        "node {leader} lost the lead: the count below means nothing\n{}",
        c.logs_tail()
    );
    eprintln!(
        "{} heartbeat warnings in {WATCH:?} with node {victim} dead:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    // The leader does see the dead peer (else the bound below would prove nothing) ...
    assert!(
        !warnings.is_empty(),
        "no heartbeat warning at all for the dead peer:\n{new}"
    );
    // ... and reports it once per kind, then once per 5 s interval with a count: in 6 s
    // that is at most 2 lines per kind (3 kinds), far below the ~120 lines unlimited.
    assert!(
        warnings.len() <= 6,
        "{} heartbeat warnings in {WATCH:?}:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    assert!(
        new.contains("suppressed"),
        "the limiter says how many it suppressed:\n{}",
        warnings.join("\n")
    );
}
