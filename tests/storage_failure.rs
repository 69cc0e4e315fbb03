//! A full disk under the primary: the node cannot persist its Raft log, so it must stop acting
//! as primary, say why (status, /health, log), and another node takes over without two
//! primaries and without losing an acknowledged write. After space is freed and the daemon is
//! restarted, the node rejoins as a replica and catches up.
//!
//! Each node's data dir is its own small tmpfs, so "disk full" is the real ENOSPC from the
//! kernel. Mounting needs root (CI runs as root); without it the test says so and does nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{marker_failover_options, Cluster, WAIT};

/// Size of each node's data-dir filesystem: room for a fresh cluster's log and snapshots.
const DATA_FS_BYTES: u64 = 32 * 1024 * 1024;

/// Unmounts (lazily) and removes the mount points it made, also when the test panics.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in &self.0 {
            let _ = Command::new("umount").arg("-l").arg(m).status();
            let _ = std::fs::remove_dir(m);
        }
    }
}

fn mount_tmpfs(dir: &Path, bytes: u64) -> bool {
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={bytes},mode=0700"))
        .arg("tmpfs")
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Writes a file until the filesystem answers ENOSPC. Returns the file (removing it frees
/// the space again).
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // The last partial page: keep writing single bytes until nothing fits.
    while let Ok(n) = f.write(&[0u8; 512]) {
        if n == 0 {
            break;
        }
    }
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_primary_makes_it_step_down_and_say_why() {
    let mut c = Cluster::new(
        &["voter", "voter", "voter"],
        marker_failover_options("hook_timeout = \"5s\"\nmonitor_interval = \"200ms\""),
    );
    let mut mounts = Mounts(Vec::new());
    for id in c.ids() {
        let dir = c.data_dir(id);
        if !mount_tmpfs(&dir, DATA_FS_BYTES) {
            common::skip_unless_ci(&format!(
                "cannot mount a tmpfs at {} (needs root); CI runs this test as root",
                dir.display()
            ));
            return;
        }
        mounts.0.push(dir);
    }
    c.start_all();
    c.wait_steady(WAIT).await;
    let ids = c.ids();
    let (p, e) = c.wait_acting_primary(&ids, WAIT).await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let key = format!("before/{i}");
        c.put_ok(p, &key, &format!("v{i}")).await;
        acked.push(key);
    }

    let filler = fill(&c.data_dir(p));
    // Writes to the full node: each append must fail; none may be acknowledged by p
    // without being committed by the others.
    let value = "x".repeat(4096);
    let deadline = Instant::now() + WAIT;
    let mut failure = None;
    let mut i = 0;
    while Instant::now() < deadline {
        let key = format!("during/{i}");
        i += 1;
        let r = c.kv_put(p, &key, value.clone().into_bytes(), "").await;
        if r.status == 200 {
            acked.push(key);
        }
        if let Some(st) = c.status(p).await {
            if let Some(why) = st.raft_failure {
                failure = Some(why);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let why = failure.unwrap_or_else(|| {
        panic!(
            "node {p} never reported a storage failure on a full disk\n{}",
            c.logs_tail()
        )
    });
    assert!(
        why.contains("No space left") && why.contains("free space"),
        "the failure names the cause and the next step: {why}"
    );
    assert_eq!(
        c.health(p).await,
        Some(503),
        "/health of a node that cannot persist"
    );

    // Another node takes over; p ran its demote hook and never overlapped with it.
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != p).collect();
    let (q, e2) = c.wait_acting_primary(&others, WAIT).await;
    assert!(e2 > e, "new epoch {e2} after {e}");
    c.wait_status(p, "the full node stops acting as primary", WAIT, |s| {
        !s.acting_primary && s.local_role != "primary"
    })
    .await;
    let events = c.hook_events();
    let anomalies = quorate_chaos::hooklog::check_exclusive(&events);
    assert!(
        anomalies.is_empty(),
        "{anomalies:?}\n{}",
        c.role_events_text()
    );
    assert!(
        c.role_events()
            .iter()
            .any(|ev| ev.node == p && ev.event == "demote" && ev.epoch == e),
        "node {p} ran its demote hook for epoch {e}\n{}",
        c.role_events_text()
    );
    for key in &acked {
        let r = c.get_ok(q, key, "").await;
        assert_eq!(
            r.status, 200,
            "acknowledged {key} readable on the new primary"
        );
    }

    // Free the space and restart: p rejoins as a replica and catches up.
    std::fs::remove_file(&filler).expect("remove filler");
    c.kill9(p);
    c.start(p);
    c.put_ok(q, "after", "1").await;
    let committed = c
        .status(q)
        .await
        .expect("status of the primary")
        .applied_index;
    c.wait_status(p, "the restarted node runs and catches up", WAIT, |s| {
        s.raft_failure.is_none() && s.applied_index >= committed
    })
    .await;
    assert_eq!(c.health(p).await, Some(200));

    for id in c.ids() {
        c.kill9(id);
    }
    drop(mounts);
}
