//! Issue 13: a promote hook still running when its node loses the lease is killed.
//!
//! The scenario of the review: the promote hook takes seconds (pg_ctl promote, a cloud IP
//! move); the leader is cut off from both peers while it runs; the majority may promote
//! meanwhile. Had the old node's hook been left to finish, it would bring up a second primary
//! seconds later. The executor kills the hook's process group on `DemoteNow` (rule 3), reports
//! it failed, and runs the demote hook: the hook's "done" marker never appears after the cut.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// The slow promote hook sleeps this long before it writes its "done" line.
const SLOW_PROMOTE: Duration = Duration::from_secs(8);

/// A promote hook that records its start in the hook log (through the marker hook), then,
/// while `slow_file` exists, sleeps `SLOW_PROMOTE` and appends "<node> <epoch>" to `done_file`.
fn write_slow_promote(dir: &Path, slow_file: &Path, done_file: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("slow-promote.sh");
    let script = format!(
        "#!/bin/sh\n\"{marker}\" promote\nif [ -e \"{slow}\" ]; then\n    sleep {secs}\nfi\necho \"$QUORATE_NODE $QUORATE_EPOCH\" >>\"{done}\"\nexit 0\n",
        marker = marker_hook().display(),
        slow = slow_file.display(),
        secs = SLOW_PROMOTE.as_secs(),
        done = done_file.display(),
    );
    std::fs::write(&path, script).expect("write the slow promote hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the slow promote hook executable");
    path
}

fn done_lines(done_file: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(done_file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_hook_in_flight_is_killed_when_the_primary_is_cut_off() {
    // As root, the primary's link is cut in network namespaces (the majority then elects and
    // promotes while the old hook would still run); elsewhere both peers are SIGSTOPped.
    let lab = if NetLab::available() {
        match NetLab::new(3) {
            Ok(lab) => Some(lab),
            Err(e) => {
                skip_unless_ci(&format!("network namespaces unavailable ({e})"));
                None
            }
        }
    } else {
        eprintln!("not root or no `ip`: the peers are SIGSTOPped instead of cutting a link");
        None
    };
    run(lab.as_ref()).await;
    drop(lab);
}

async fn run(lab: Option<&NetLab>) {
    let hooks = tempfile::tempdir().expect("tempdir for the hook");
    let slow_file = hooks.path().join("slow");
    let done_file = hooks.path().join("promote-done");
    std::fs::write(&slow_file, b"").expect("arm the slow promote");
    let promote = write_slow_promote(hooks.path(), &slow_file, &done_file);
    let m = marker_hook().display().to_string();
    let resource = format!(
        "\n[resource]\npromote = \"{}\"\ndemote = \"{m}\"\nmonitor = \"{m}\"\nfence = \"{m}\"\nrejoin = \"{m}\"\n\
         hook_timeout = \"60s\"\nmonitor_interval = \"200ms\"\n",
        promote.display()
    );
    // Declared after the lab (owned by the caller), so the daemons die before it goes.
    let mut c = Cluster::new_with_net(
        &["voter", "voter", "voter"],
        Options {
            extra: format!("{FAILOVER_TIMING}{resource}"),
            ..Options::default()
        },
        lab.map(|l| l.nets()),
    );
    c.start_all();
    c.wait_steady(WAIT).await;

    // The first leader commits its promotion and starts the (slow) promote hook.
    let started = c
        .wait_hook("a promote hook starts", WAIT, |ev| ev.event == "promote")
        .await;
    let (p, e) = (started.node, started.epoch);
    let peers: Vec<u64> = c.ids().into_iter().filter(|id| *id != p).collect();
    let cut_at = monotonic_ns();
    match lab {
        Some(l) => l.cut(p),
        None => {
            for id in &peers {
                c.signal(*id, libc::SIGSTOP);
            }
        }
    }

    // Rule 3: the cut-off node stops acting; its promote hook is killed and demote runs.
    let demote = c
        .wait_hook("the cut-off node demotes", WAIT, |ev| {
            ev.node == p && ev.event == "demote" && ev.at_ns >= cut_at
        })
        .await;
    eprintln!(
        "node {p} (epoch {e}): demote hook {:.1} ms after the cut",
        (demote.at_ns - cut_at) as f64 / 1e6
    );
    // Past the time the hook would have needed, plus slack for a loaded machine.
    tokio::time::sleep(SLOW_PROMOTE + Duration::from_secs(3)).await;
    let done = done_lines(&done_file);
    assert!(
        !done.contains(&(p, e)),
        "the promote hook of node {p} at epoch {e} ran to its end after the node was cut off \
         (done lines {done:?})\n{}",
        c.role_events_text()
    );
    let r = c.primary(p).await;
    assert_eq!(
        r.status, 503,
        "the cut-off node must not act as primary: {r:?}"
    );
    let st = c.status(p).await.expect("status of the cut-off node");
    assert_ne!(st.local_role, "primary", "{st:?}");

    // Heal with fast hooks: the cluster settles on exactly one primary, hooks exclusive.
    std::fs::remove_file(&slow_file).expect("disarm the slow promote");
    match lab {
        Some(l) => l.heal(p),
        None => {
            for id in &peers {
                c.signal(*id, libc::SIGCONT);
            }
        }
    }
    let (q, e2) = c.wait_acting_primary(&c.ids(), WAIT).await;
    assert!(
        e2 > e,
        "a new promotion after the cut: epoch {e2} > {e} (node {q})"
    );
    c.assert_hooks_exclusive();
    for id in c.ids() {
        c.kill9(id);
    }
}
