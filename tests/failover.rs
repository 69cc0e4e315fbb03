//! Issue 3 acceptance: automatic failover with real `quorate` processes.
//!
//! Every node runs the marker hook (cluster-config/local/hooks/marker.sh) for all five hooks,
//! and all of them append to one shared hook log. The nodes run on one machine, so the log's
//! CLOCK_MONOTONIC timestamps put every hook start on one timeline; the chaos crate's
//! `check_exclusive` then checks that no two nodes ever held the service at once.
//!
//! Timings are relaxed (`TIMING`: 1-2 s election timeouts, 800 ms lease) so that a loaded
//! 2-core machine does not produce spurious elections; the tests assert behaviour, never
//! speed, and every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::{
    marker_resource, monotonic_ns, Cluster, HookEvent, NetLab, Options, PrimaryPoller,
    PrimaryRound, WAIT,
};

/// Must match `common::FAILOVER_TIMING`.
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_secs(2);
const LEASE: Duration = Duration::from_millis(800);

/// See `common::FAILOVER_TIMING`.
const TIMING: &str = common::FAILOVER_TIMING;

/// Monitor every 200 ms, two failures in a row make the service failed, one local restart
/// per (long) window before failing over.
const RESOURCE: &str = "hook_timeout = \"5s\"
monitor_interval = \"200ms\"
failure_threshold = 2
local_restarts = 1
restart_window = \"10m\"";

/// How often the /primary poller asks every node.
const POLL_EVERY: Duration = Duration::from_millis(20);

fn options(resource_extra: &str) -> Options {
    Options {
        extra: format!(
            "{TIMING}{}",
            marker_resource(&format!("{RESOURCE}\n{resource_extra}"))
        ),
        ..Options::default()
    }
}

/// Starts a cluster with `roles` and waits for its first acting primary: (cluster, primary,
/// epoch). Also checks that exactly one promote hook ran for it.
async fn started(roles: &[&'static str], resource_extra: &str) -> (Cluster, u64, u64) {
    let mut c = Cluster::new(roles, options(resource_extra));
    c.start_all();
    // Every follower replicated: a test that kills the primary at once must not find the
    // other voter still empty (with a witness holding the only copy of the log, that voter
    // could never win an election: Raft's up-to-date check).
    c.wait_steady(WAIT).await;
    let ids = c.ids();
    let (p, e) = c.wait_acting_primary(&ids, WAIT).await;
    c.wait_steady(WAIT).await;
    assert!(e >= 1, "epoch of the first primary is {e}");
    let promotes = promotes(&c);
    assert_eq!(
        promotes.len(),
        1,
        "exactly one promote hook for the first primary\n{}",
        c.role_events_text()
    );
    assert_eq!((promotes[0].node, promotes[0].epoch), (p, e));
    (c, p, e)
}

fn promotes(c: &Cluster) -> Vec<HookEvent> {
    c.role_events()
        .into_iter()
        .filter(|e| e.event == "promote")
        .collect()
}

/// Role events (not monitor) that started at or after `since_ns`.
fn role_events_since(c: &Cluster, since_ns: u64) -> Vec<HookEvent> {
    c.role_events()
        .into_iter()
        .filter(|e| e.at_ns >= since_ns)
        .collect()
}

fn others(c: &Cluster, not: &[u64]) -> Vec<u64> {
    c.ids().into_iter().filter(|i| !not.contains(i)).collect()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Rounds of the poller in which more than one node answered 200.
fn overlapping(rounds: &[PrimaryRound]) -> Vec<&PrimaryRound> {
    rounds.iter().filter(|r| r.ok_nodes().len() > 1).collect()
}

/// One line for the test output: rounds, and per node how many 200 / 503 / no answer.
fn poll_summary(rounds: &[PrimaryRound]) -> String {
    let mut per: std::collections::BTreeMap<u64, [usize; 3]> = Default::default();
    for r in rounds {
        for (id, code) in &r.codes {
            let slot = match code {
                200 => 0,
                0 => 2,
                _ => 1,
            };
            per.entry(*id).or_default()[slot] += 1;
        }
    }
    let nodes: Vec<String> = per
        .iter()
        .map(|(id, [ok, no, none])| format!("node {id}: {ok}x200 {no}x503 {none}x-"))
        .collect();
    format!("{} rounds; {}", rounds.len(), nodes.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_promote_once_and_kill9_moves_primary_to_a_higher_epoch() {
    let (mut c, p, e) = started(&["voter", "voter", "voter"], "").await;

    // Settled: still one promote, and only the primary answers 200.
    tokio::time::sleep(ELECTION_TIMEOUT_MAX).await;
    assert_eq!(promotes(&c).len(), 1, "{}", c.role_events_text());
    let codes = c.primary_codes(&c.ids()).await;
    for (id, code) in &codes {
        let want = if *id == p { 200 } else { 503 };
        assert_eq!(*code, want, "/primary on node {id}: {codes:?}");
    }

    let killed_at = monotonic_ns();
    c.kill9(p);
    let rest = others(&c, &[p]);
    let (q, e2) = c.wait_acting_primary(&rest, WAIT).await;
    assert_ne!(q, p);
    assert!(e2 > e, "new epoch {e2} must exceed the old {e}");
    let after: Vec<_> = role_events_since(&c, killed_at)
        .into_iter()
        .filter(|ev| ev.event == "promote")
        .collect();
    assert_eq!(
        after
            .iter()
            .map(|ev| (ev.node, ev.epoch))
            .collect::<Vec<_>>(),
        vec![(q, e2)],
        "exactly one promote after the kill, on the new primary\n{}",
        c.role_events_text()
    );
    let st = c.status(q).await.expect("status of the new primary");
    assert_eq!((st.primary, st.epoch.get()), (Some(q), e2));
    assert!(
        st.last_failover.is_some(),
        "status must record the failover: {st:#?}"
    );
    c.assert_hooks_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_primary_demotes_on_sigcont_and_primary_never_doubles() {
    let (c, p, e) = started(&["voter", "voter", "voter"], "").await;
    let poller = PrimaryPoller::start(c.primary_targets(), POLL_EVERY);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stopped_at = monotonic_ns();
    let stop_until = Instant::now() + ELECTION_TIMEOUT_MAX * 3;
    c.signal(p, libc::SIGSTOP);
    let rest = others(&c, &[p]);
    let (q, e2) = c.wait_acting_primary(&rest, WAIT).await;
    assert_ne!(q, p);
    assert!(e2 > e, "new epoch {e2} must exceed the old {e}");
    tokio::time::sleep(stop_until.saturating_duration_since(Instant::now())).await;

    let resumed_at = monotonic_ns();
    c.signal(p, libc::SIGCONT);
    let demote = c
        .wait_hook("the resumed old primary runs its demote hook", WAIT, |ev| {
            ev.node == p && ev.event == "demote" && ev.at_ns >= stopped_at
        })
        .await;
    let demote_after_ms = ms(demote.at_ns.saturating_sub(resumed_at));
    eprintln!("old primary {p} demote hook {demote_after_ms:.1} ms after SIGCONT");
    // "As soon as it runs again": well within one election timeout (generous for load).
    assert!(
        demote.at_ns.saturating_sub(resumed_at) < ELECTION_TIMEOUT_MAX.as_nanos() as u64,
        "demote hook started {demote_after_ms:.1} ms after SIGCONT"
    );

    // The new primary keeps its role.
    tokio::time::sleep(ELECTION_TIMEOUT_MAX + Duration::from_secs(1)).await;
    let (still, e3) = c.wait_acting_primary(&c.ids(), WAIT).await;
    assert_eq!((still, e3), (q, e2), "the new primary must keep its role");
    let st = c
        .wait_status(p, "old primary back as replica", WAIT, |s| {
            s.local_role == "replica" && s.primary == Some(q)
        })
        .await;
    assert!(!st.acting_primary);

    let rounds = poller.finish().await;
    eprintln!("/primary poll: {}", poll_summary(&rounds));
    let doubled = overlapping(&rounds);
    assert!(
        doubled.is_empty(),
        "{} polling rounds saw two 200s on /primary, first: {:?}",
        doubled.len(),
        doubled.first()
    );
    assert!(
        rounds
            .iter()
            .any(|r| r.sent_ns > stopped_at && r.ok_nodes() == vec![q]),
        "the poller never saw the new primary {q} answer 200 ({} rounds)",
        rounds.len()
    );
    assert!(
        !rounds
            .iter()
            .any(|r| r.done_ns > resumed_at && r.ok_nodes().contains(&p)),
        "the old primary answered 200 after SIGCONT"
    );
    let promotes_after: Vec<_> = role_events_since(&c, stopped_at)
        .into_iter()
        .filter(|ev| ev.event == "promote")
        .map(|ev| (ev.node, ev.epoch))
        .collect();
    assert_eq!(promotes_after, vec![(q, e2)], "{}", c.role_events_text());
    c.assert_hooks_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_monitor_restarts_locally_then_fails_over() {
    let (c, p, e) = started(&["voter", "voter", "voter"], "").await;

    let failing_from = monotonic_ns();
    c.set_monitor_failing(p, true);

    // Local restart: demote then promote at the same epoch on the same node.
    let demote = c
        .wait_hook("restart demote on the primary", WAIT, |ev| {
            ev.node == p && ev.event == "demote" && ev.epoch == e && ev.at_ns >= failing_from
        })
        .await;
    let repromote = c
        .wait_hook("restart promote on the primary", WAIT, |ev| {
            ev.event == "promote" && ev.at_ns > demote.at_ns
        })
        .await;
    assert_eq!(
        (repromote.node, repromote.epoch),
        (p, e),
        "the first reaction must be a local restart at the same epoch\n{}",
        c.role_events_text()
    );
    c.wait_until("a restart entry in the history", WAIT, || async {
        c.history(p).await.iter().any(|h| {
            let r = &h["event"]["restarted"];
            r["node"].as_u64() == Some(p) && r["epoch"].as_u64() == Some(e)
        })
    })
    .await;

    // Still failing: the restart budget (1) is used up, so the primary moves.
    let rest = others(&c, &[p]);
    let (q, e2) = c.wait_acting_primary(&rest, WAIT).await;
    assert!(e2 > e, "new epoch {e2} must exceed the old {e}");
    let events = role_events_since(&c, repromote.at_ns + 1);
    let second_demote = events
        .iter()
        .find(|ev| ev.node == p && ev.event == "demote")
        .unwrap_or_else(|| panic!("no demote after the restart\n{}", c.role_events_text()));
    let new_promote = events
        .iter()
        .find(|ev| ev.event == "promote")
        .unwrap_or_else(|| panic!("no promote after the restart\n{}", c.role_events_text()));
    assert_eq!((new_promote.node, new_promote.epoch), (q, e2));
    assert!(
        second_demote.at_ns < new_promote.at_ns,
        "the failing primary must demote before the new one promotes\n{}",
        c.role_events_text()
    );
    let st = c.status(q).await.expect("status");
    let old = st
        .peers
        .iter()
        .find(|x| x.id == p)
        .expect("old primary in peers");
    assert_eq!(
        old.health.as_deref(),
        Some("unhealthy"),
        "the new primary sees the old one unhealthy: {st:#?}"
    );
    c.set_monitor_failing(p, false);
    c.assert_hooks_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_voters_and_witness_fail_over_to_the_other_voter() {
    let (mut c, p, e) = started(&["voter", "voter", "witness"], "").await;
    assert_ne!(p, 3, "the witness must never be primary");
    let other_voter = if p == 1 { 2 } else { 1 };
    c.kill9(p);
    let (q, e2) = c.wait_acting_primary(&[other_voter, 3], WAIT).await;
    assert_eq!(q, other_voter, "the other voter takes over");
    assert!(e2 > e, "new epoch {e2} must exceed the old {e}");
    assert!(
        !c.role_events()
            .iter()
            .any(|ev| ev.node == 3 && ev.event == "promote"),
        "the witness ran a promote hook\n{}",
        c.role_events_text()
    );
    c.assert_hooks_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_voters_and_witness_keep_the_primary_when_the_witness_dies() {
    let (mut c, p, e) = started(&["voter", "voter", "witness"], "").await;
    let killed_at = monotonic_ns();
    c.kill9(3);
    // Several election timeouts: plenty of time for a wrong reaction.
    tokio::time::sleep(ELECTION_TIMEOUT_MAX * 3).await;
    let (still, e2) = c.wait_acting_primary(&[1, 2], Duration::from_secs(5)).await;
    assert_eq!((still, e2), (p, e), "primary and epoch must not change");
    let changes = role_events_since(&c, killed_at);
    assert!(
        changes.is_empty(),
        "no hook may run when the witness dies: {changes:?}"
    );
    let st = c.status(p).await.expect("status");
    assert_eq!(
        (st.primary, st.epoch.get(), st.acting_primary),
        (Some(p), e, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_fencing_blocks_promotion_until_the_fence_hook_succeeds() {
    let (mut c, p, e) = started(&["voter", "voter", "voter"], "fencing = \"required\"").await;
    for id in c.ids() {
        c.set_fence_failing(id, true);
    }
    let killed_at = monotonic_ns();
    c.kill9(p);
    let rest = others(&c, &[p]);

    // Somebody tries to fence the dead primary, fails, and says so in its status.
    c.wait_hook("a fence attempt", WAIT, |ev| {
        ev.event == "fence" && ev.at_ns >= killed_at
    })
    .await;
    let deadline = Instant::now() + WAIT;
    let (noted_by, note) = 'found: loop {
        for id in &rest {
            if let Some(s) = c.status(*id).await {
                if let Some(n) = s.notes.iter().find(|n| n.to_lowercase().contains("fence")) {
                    break 'found (*id, n.clone());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no status note about fencing within {WAIT:?}: {:#?}",
            c.statuses()
                .await
                .iter()
                .map(|s| (s.node_id, &s.notes))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("node {noted_by} says: {note}");
    assert!(
        note.contains(&format!("node {p}")),
        "the note should name the node being fenced ({p}): {note}"
    );

    // While the fence fails: no promotion, nobody answers 200 (bounded observation).
    let watch_until = Instant::now() + ELECTION_TIMEOUT_MAX * 2;
    while Instant::now() < watch_until {
        let codes = c.primary_codes(&rest).await;
        assert!(
            codes.iter().all(|(_, code)| *code != 200),
            "a node acts as primary although fencing failed: {codes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let promoted: Vec<_> = role_events_since(&c, killed_at)
        .into_iter()
        .filter(|ev| ev.event == "promote")
        .collect();
    assert!(
        promoted.is_empty(),
        "promoted without a successful fence: {promoted:?}"
    );
    let failed_fences = role_events_since(&c, killed_at)
        .iter()
        .filter(|ev| ev.event == "fence")
        .count();
    assert!(failed_fences >= 1);

    // The fence hook works again: the promotion follows.
    for id in c.ids() {
        c.set_fence_failing(id, false);
    }
    let (q, e2) = c.wait_acting_primary(&rest, WAIT).await;
    assert!(e2 > e, "new epoch {e2} must exceed the old {e}");
    let evs = role_events_since(&c, killed_at);
    let promote = evs
        .iter()
        .find(|ev| ev.event == "promote")
        .expect("promote");
    assert_eq!((promote.node, promote.epoch), (q, e2));
    let last_fence = evs
        .iter()
        .rfind(|ev| ev.event == "fence" && ev.at_ns < promote.at_ns)
        .expect("a fence before the promote");
    assert_eq!(
        last_fence.node,
        q,
        "the new primary must have fenced (successfully) right before promoting\n{}",
        c.role_events_text()
    );
    c.assert_hooks_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_freezes_a_failing_monitor_and_off_lets_it_act() {
    let (c, p, e) = started(&["voter", "voter", "voter"], "").await;
    // Sent to a follower: it must forward to the leader.
    let follower = others(&c, &[p])[0];
    let r = c
        .post_json(
            follower,
            "/v1/maintenance",
            serde_json::json!({"on": true, "reason": "itest"}),
        )
        .await;
    assert_eq!(r.status, 200, "maintenance on: {r:?}");
    c.wait_status(p, "maintenance visible on the primary", WAIT, |s| {
        s.maintenance.as_deref() == Some("itest")
    })
    .await;

    let frozen_at = monotonic_ns();
    c.set_monitor_failing(p, true);
    let st = c
        .wait_status(p, "monitor reports the service unhealthy", WAIT, |s| {
            s.health == "unhealthy"
        })
        .await;
    assert!(
        st.notes.iter().any(|n| n.contains("MAINTENANCE")),
        "status must say MAINTENANCE: {:?}",
        st.notes
    );
    // Well past failure_threshold × monitor_interval: nothing may happen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acted = role_events_since(&c, frozen_at);
    assert!(acted.is_empty(), "hooks ran during maintenance: {acted:?}");
    let (still, e2) = c.wait_acting_primary(&c.ids(), WAIT).await;
    assert_eq!(
        (still, e2),
        (p, e),
        "maintenance must leave the primary alone"
    );

    let off_at = monotonic_ns();
    let r = c
        .post_json(
            follower,
            "/v1/maintenance",
            serde_json::json!({"on": false}),
        )
        .await;
    assert_eq!(r.status, 200, "maintenance off: {r:?}");
    c.wait_hook(
        "the failing primary reacts once maintenance is off",
        WAIT,
        |ev| ev.node == p && ev.event == "demote" && ev.at_ns >= off_at,
    )
    .await;
    // Restart, then (still failing) failover: the service ends up elsewhere.
    let rest = others(&c, &[p]);
    let (q, e3) = c.wait_acting_primary(&rest, WAIT).await;
    assert!(e3 > e, "failover to {q} with epoch {e3} > {e}");
    c.set_monitor_failing(p, false);
    c.assert_hooks_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_the_primary_away_and_undrain_restores_candidacy() {
    let (c, p, e) = started(&["voter", "voter", "voter"], "").await;
    let r = c
        .post_json(p, &format!("/v1/nodes/{p}/drain"), serde_json::json!({}))
        .await;
    assert_eq!(r.status, 200, "drain {p}: {r:?}");
    let rest = others(&c, &[p]);
    let (q, e2) = c.wait_acting_primary(&rest, WAIT).await;
    assert!(e2 > e, "new epoch {e2} must exceed the old {e}");
    let st = c.status(q).await.expect("status");
    assert_eq!(st.drained, vec![p]);
    assert!(
        c.role_events()
            .iter()
            .any(|ev| ev.node == p && ev.event == "demote" && ev.epoch == e),
        "the drained primary must run its demote hook\n{}",
        c.role_events_text()
    );

    let r = c
        .post_json(q, &format!("/v1/nodes/{p}/undrain"), serde_json::json!({}))
        .await;
    assert_eq!(r.status, 200, "undrain {p}: {r:?}");
    for id in c.ids() {
        c.wait_status(id, "nothing drained", WAIT, |s| s.drained.is_empty())
            .await;
    }
    // Undrain gives no automatic move back.
    let (still, _) = c.wait_acting_primary(&c.ids(), WAIT).await;
    assert_eq!(still, q);

    // p is a candidate again: with the third node drained, draining q must pick p.
    let third = others(&c, &[p, q])[0];
    for id in [third, q] {
        let r = c
            .post_json(p, &format!("/v1/nodes/{id}/drain"), serde_json::json!({}))
            .await;
        assert_eq!(r.status, 200, "drain {id}: {r:?}");
    }
    let (back, e3) = c.wait_acting_primary(&[p], WAIT).await;
    assert_eq!(back, p);
    assert!(e3 > e2);
    c.assert_hooks_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_cut_off_from_both_peers_demotes_within_lease_and_majority_promotes() {
    // QUORATE_ITEST_NO_NETNS=1 forces the fallback (to exercise it on a root machine).
    let forced_fallback = std::env::var_os("QUORATE_ITEST_NO_NETNS").is_some_and(|v| v == "1");
    let lab = if forced_fallback {
        eprintln!("QUORATE_ITEST_NO_NETNS=1: using SIGSTOP of the peers instead of namespaces");
        None
    } else if NetLab::available() {
        match NetLab::new(3) {
            Ok(lab) => Some(lab),
            Err(e) => {
                eprintln!("network namespaces unavailable ({e}); using SIGSTOP of the peers");
                None
            }
        }
    } else {
        eprintln!("not root or no `ip`: using SIGSTOP of the peers instead of namespaces");
        None
    };
    match lab {
        Some(lab) => cut_off_with_namespaces(lab).await,
        None => cut_off_by_stopping_peers().await,
    }
}

/// Each node in its own network namespace; the primary's link to the bridge is cut.
async fn cut_off_with_namespaces(lab: NetLab) {
    // Declared after `lab`, so dropped first: daemons die before their namespaces go.
    let mut c = Cluster::new_with_net(&["voter", "voter", "voter"], options(""), Some(lab.nets()));
    c.start_all();
    c.wait_steady(WAIT).await;
    let ids = c.ids();
    let (p, e) = c.wait_acting_primary(&ids, WAIT).await;
    c.wait_steady(WAIT).await;
    let poller = PrimaryPoller::start(c.primary_targets(), POLL_EVERY);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cut_at = monotonic_ns();
    lab.cut(p);
    let demote = c
        .wait_hook("the cut-off primary demotes", WAIT, |ev| {
            ev.node == p && ev.event == "demote" && ev.at_ns >= cut_at
        })
        .await;
    let rest = others(&c, &[p]);
    let (q, e2) = c.wait_acting_primary(&rest, WAIT).await;
    assert!(e2 > e, "new epoch {e2} must exceed the old {e}");
    let promote = role_events_since(&c, cut_at)
        .into_iter()
        .find(|ev| ev.event == "promote")
        .expect("promote on the majority side");
    assert_eq!((promote.node, promote.epoch), (q, e2));
    let demote_after = demote.at_ns - cut_at;
    eprintln!(
        "cut-off primary {p}: demote hook {:.1} ms after the cut (lease {LEASE:?}); node {q} promote {:.1} ms after the cut",
        ms(demote_after),
        ms(promote.at_ns - cut_at)
    );
    // Rule 3: the old primary stops on its own before the majority can elect and promote.
    assert!(
        demote.at_ns < promote.at_ns,
        "old primary demoted after the new one promoted\n{}",
        c.role_events_text()
    );
    // Within the lease (plus scheduling slack on a loaded machine, well under the
    // election_timeout_max after which the majority elects).
    assert!(
        demote_after < (LEASE + Duration::from_millis(1000)).as_nanos() as u64,
        "demote {:.1} ms after the cut, lease is {LEASE:?}",
        ms(demote_after)
    );
    let r = c.primary(p).await;
    assert_eq!(
        r.status, 503,
        "cut-off node must answer 503 on /primary: {r:?}"
    );

    // Heal: the old primary rejoins as a replica; the new primary keeps its role.
    lab.heal(p);
    c.wait_status(p, "old primary back as replica of the new one", WAIT, |s| {
        s.local_role == "replica" && s.primary == Some(q) && s.epoch == e2
    })
    .await;
    let (still, e3) = c.wait_acting_primary(&ids, WAIT).await;
    assert_eq!((still, e3), (q, e2));

    let rounds = poller.finish().await;
    eprintln!("/primary poll: {}", poll_summary(&rounds));
    let doubled = overlapping(&rounds);
    assert!(
        doubled.is_empty(),
        "{} polling rounds saw two 200s on /primary, first: {:?}",
        doubled.len(),
        doubled.first()
    );
    assert!(rounds.iter().any(|r| r.ok_nodes() == vec![q]));
    c.assert_hooks_exclusive();
    c.kill9(1);
    c.kill9(2);
    c.kill9(3);
    drop(c);
    drop(lab);
}

/// Without namespaces: SIGSTOP both peers, so the primary hears nobody. The majority cannot
/// promote while stopped; after SIGCONT the cluster must again have exactly one primary.
async fn cut_off_by_stopping_peers() {
    let (c, p, e) = started(&["voter", "voter", "voter"], "").await;
    let peers = others(&c, &[p]);
    let cut_at = monotonic_ns();
    for id in &peers {
        c.signal(*id, libc::SIGSTOP);
    }
    let demote = c
        .wait_hook("the isolated primary demotes", WAIT, |ev| {
            ev.node == p && ev.event == "demote" && ev.at_ns >= cut_at
        })
        .await;
    let demote_after = demote.at_ns - cut_at;
    eprintln!(
        "isolated primary {p}: demote {:.1} ms after the peers stopped",
        ms(demote_after)
    );
    assert!(demote_after < (LEASE + Duration::from_millis(1000)).as_nanos() as u64);
    let r = c.primary(p).await;
    assert_eq!(
        r.status, 503,
        "isolated node must answer 503 on /primary: {r:?}"
    );
    for id in &peers {
        c.signal(*id, libc::SIGCONT);
    }
    let (_, e2) = c.wait_acting_primary(&c.ids(), WAIT).await;
    assert!(e2 > e, "a new promotion after the isolation: {e2} > {e}");
    c.assert_hooks_exclusive();
}
