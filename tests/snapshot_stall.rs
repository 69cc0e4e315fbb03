//! Issue 13: a large snapshot must not stall the safety loop. A primary cut off from both
//! peers while it builds a snapshot of a 100 MB KV still demotes within lease + one tick (plus
//! a scheduling allowance far below the snapshot's build time).
//!
//! The peers are cut off by SIGSTOP (works without root or namespaces). The snapshot is
//! started through `POST /v1/snapshot` just before the lease runs out, so a loop that waits on
//! the snapshot (a lock held for a deep copy of the KV, a runtime thread busy encoding it)
//! would miss the moment it must demote.

mod common;

use std::time::{Duration, Instant};

use common::{marker_failover_options, monotonic_ns, Cluster, WAIT};

/// FAILOVER_TIMING's lease and the executor's tick at that lease (lease / 4, at most 25 ms).
const LEASE: Duration = Duration::from_millis(800);
const TICK: Duration = Duration::from_millis(25);
/// Scheduling allowance on a loaded 2-core machine (a hook process to fork and exec, the
/// hook log to be written). It must stay well below the snapshot build time measured below,
/// or the test could not tell a stalled loop from a slow one.
const ALLOWANCE: Duration = Duration::from_millis(400);
/// 100 values of 1 MiB: a 100 MB KV.
const VALUES: usize = 100;
const VALUE_BYTES: usize = 1024 * 1024;

fn value(i: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; VALUE_BYTES];
    v[0] = 0xff;
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn put(c: &Cluster, id: u64, key: &str, v: Vec<u8>) {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let r = c.kv_put(id, key, v.clone(), "").await;
        if r.status == 200 {
            return;
        }
        assert!(
            (r.status == 503 || r.status == 0) && Instant::now() < deadline,
            "PUT {key}: {r:?}\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// POSTs `/v1/snapshot` on `id`; returns the applied index the snapshot will cover.
async fn trigger_snapshot(c: &Cluster, id: u64) -> u64 {
    let r = c.post_json(id, "/v1/snapshot", serde_json::json!({})).await;
    assert_eq!(r.status, 202, "POST /v1/snapshot on node {id}: {r:?}");
    r.body["applied_index"]
        .as_u64()
        .expect("applied_index in the answer")
}

/// Waits until node `id` reports a snapshot at `index` or later; returns when it saw it.
async fn wait_snapshot(c: &Cluster, id: u64, index: u64) -> Instant {
    c.wait_status(id, "the snapshot is built", WAIT * 2, |s| {
        s.snapshot_index.is_some_and(|i| i >= index)
    })
    .await;
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_building_a_100_mb_snapshot_while_cut_off_still_demotes_within_lease() {
    // No automatic snapshot during the test: only the ones it asks for.
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        common::Options {
            extra: format!(
                "{}\n[storage]\nsnapshot_every = 100000\n",
                marker_failover_options("").extra
            ),
            ..common::Options::default()
        },
    );
    c.start_all();
    c.wait_steady(WAIT).await;
    let (p, epoch) = c.wait_acting_primary(&c.ids(), WAIT).await;
    let t = Instant::now();
    for i in 0..VALUES {
        put(&c, p, &format!("big/{i:04}"), value(i)).await;
    }
    eprintln!(
        "wrote {VALUES} values of {VALUE_BYTES} bytes in {:?}",
        t.elapsed()
    );

    // How long a snapshot of this KV takes here, with the cluster healthy.
    let started = Instant::now();
    let index = trigger_snapshot(&c, p).await;
    let build = wait_snapshot(&c, p, index).await - started;
    eprintln!(
        "snapshot of the 100 MB KV at index {index}: {:.0} ms",
        ms(build)
    );

    // One more entry, so the next snapshot has something new to cover, applied everywhere
    // (nothing left in flight when the peers stop).
    put(&c, p, "big/last", b"x".to_vec()).await;
    let last = c.status(p).await.expect("status").applied_index;
    for id in c.ids() {
        c.wait_applied(id, last, WAIT).await;
    }

    let peers: Vec<u64> = c.ids().into_iter().filter(|id| *id != p).collect();
    let cut_at = monotonic_ns();
    let cut = Instant::now();
    for id in &peers {
        c.signal(*id, libc::SIGSTOP);
    }
    // Start the snapshot shortly before the lease runs out, so its build spans the moment
    // the loop must demote.
    tokio::time::sleep(LEASE * 3 / 4).await;
    let snap_started = Instant::now();
    let index = trigger_snapshot(&c, p).await;
    let demote = c
        .wait_hook("the cut-off primary demotes", WAIT, |ev| {
            ev.node == p && ev.event == "demote" && ev.at_ns >= cut_at
        })
        .await;
    let demote_after = Duration::from_nanos(demote.at_ns - cut_at);
    let snap_done = wait_snapshot(&c, p, index).await;
    let build_cut_off = snap_done - snap_started;
    eprintln!(
        "cut-off primary {p} (epoch {epoch}): demote hook {:.0} ms after the cut (lease {LEASE:?}); snapshot started {:.0} ms after the cut, built in {:.0} ms",
        ms(demote_after),
        ms(snap_started - cut),
        ms(build_cut_off)
    );
    assert_eq!(demote.epoch, epoch, "demote of the epoch it held");
    let bound = LEASE + TICK + ALLOWANCE;
    assert!(
        demote_after < bound,
        "the cut-off primary demoted {:.0} ms after the cut, later than lease + tick + allowance ({:.0} ms): the safety loop waited on the snapshot\n{}",
        ms(demote_after),
        ms(bound),
        c.role_events_text()
    );
    let r = c.primary(p).await;
    assert_eq!(
        r.status, 503,
        "cut-off node must answer 503 on /primary: {r:?}"
    );

    for id in &peers {
        c.signal(*id, libc::SIGCONT);
    }
    let (_, e2) = c.wait_acting_primary(&c.ids(), WAIT).await;
    assert!(e2 > epoch, "a new promotion after the cut: {e2} > {epoch}");
    c.assert_hooks_exclusive();
}
