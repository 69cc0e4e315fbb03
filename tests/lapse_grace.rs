//! Issue 13: a lease lapse that heals in the same term costs a write pause, not a
//! demote/promote cycle of the service.
//!
//! A follower's slow fsync holds back its answers to the leader's heartbeats, so the
//! primary's quorum clock stands still and its lease lapses although nothing failed. The
//! primary stops acting at once (`/primary` 503: rule 1), but leaves its service alone for
//! the lapse grace (what is left of election_timeout_min after lease and the clock-drift
//! margin, so the demote still starts before anyone else can be elected). When the quorum's
//! answers come back in the same term it acts again at the same epoch: no demote hook, no
//! promote hook, no new epoch. Here the followers are frozen (SIGSTOP) for longer than the
//! lease and shorter than lease + grace: the same stall as a slow disk, made reliably.

mod common;

use std::time::Duration;

use common::*;

/// Lease 800 ms, election_timeout_min 3 s: grace = 3 s − 300 ms drift margin − 800 ms = 1.9 s.
const TIMING: &str = "
[timing]
heartbeat_interval = \"100ms\"
suspect_after = \"300ms\"
dead_after = \"600ms\"
raft_heartbeat = \"100ms\"
election_timeout_min = \"3s\"
election_timeout_max = \"4s\"
lease = \"800ms\"
";

/// Longer than the lease (the lapse happens), well inside lease + grace (2.7 s).
const STALL: Duration = Duration::from_millis(1300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapse_that_heals_in_the_same_term_keeps_the_primary_and_its_epoch() {
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        Options {
            extra: format!("{TIMING}{}", marker_resource("hook_timeout = \"10s\"")),
            ..Options::default()
        },
    );
    c.start_all();
    c.wait_steady(WAIT).await;
    let (p, e) = c.wait_acting_primary(&c.ids(), WAIT).await;
    c.wait_steady(WAIT).await;
    let term_before = c.status(p).await.expect("status").term;
    let peers: Vec<u64> = c.ids().into_iter().filter(|id| *id != p).collect();

    let poller = PrimaryPoller::start(c.primary_targets(), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut_at = monotonic_ns();
    let cut = tokio::time::Instant::now();
    for id in &peers {
        c.signal(*id, libc::SIGSTOP);
    }
    // While the followers are frozen the primary must stop acting (rule 1) but stay
    // suspended rather than demote.
    c.wait_status(p, "the primary suspends", WAIT, |s| {
        s.local_role == "suspended" && !s.acting_primary
    })
    .await;
    tokio::time::sleep_until(cut + STALL).await;
    for id in &peers {
        c.signal(*id, libc::SIGCONT);
    }
    let st = c
        .wait_status(p, "the primary acts again", WAIT, |s| {
            s.local_role == "primary" && s.acting_primary
        })
        .await;
    assert_eq!(st.epoch, e, "same epoch: no new promotion");
    assert_eq!(st.term, term_before, "same term: no election");
    assert!(
        st.lease_lapses >= 1 && st.lease_lapses_healed >= 1,
        "lapse counters: {} lapses, {} healed",
        st.lease_lapses,
        st.lease_lapses_healed
    );
    let (still, e2) = c.wait_acting_primary(&c.ids(), WAIT).await;
    assert_eq!((still, e2), (p, e));

    let rounds = poller.finish().await;
    assert!(
        rounds.iter().all(|r| r.ok_nodes().len() <= 1),
        "two nodes answered 200 on /primary in one round"
    );
    assert!(
        rounds.iter().any(|r| r.ok_nodes().is_empty()),
        "the primary never stopped answering 200 during the stall: the lapse did not happen"
    );
    let since: Vec<_> = c
        .role_events()
        .into_iter()
        .filter(|ev| ev.at_ns >= cut_at)
        .collect();
    assert!(
        since.is_empty(),
        "a healed lapse must not stop or start the service: {since:?}\n{}",
        c.role_events_text()
    );
    c.assert_hooks_exclusive();
}
