use super::*;
use crate::resource::hooks::tests::{alive_or_our_zombie, read_pid, wait_gone, write_script};
use crate::resource::hooks::{HookSettings, DEFAULT_MAX_OUTPUT_BYTES};
use proptest::prelude::*;
use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// Upper bound on any wait in these tests (a loaded 2-core machine is slow).
const WAIT_LIMIT: Duration = Duration::from_secs(20);
const FAST_INTERVAL: Duration = Duration::from_millis(30);

fn result(ok: bool) -> MonitorResult {
    MonitorResult {
        ok,
        at: Instant::now(),
        role: MonitorRole::Primary,
        epoch: Epoch(1),
        timed_out: false,
        exit_code: Some(if ok { 0 } else { 1 }),
        health: ResourceHealth::Healthy,
        report: Default::default(),
    }
}

#[test]
fn a_lag_counts_as_a_failed_result() {
    use broadcast::error::RecvError;
    assert_eq!(received_ok(&Ok(result(true))), Some(true));
    assert_eq!(received_ok(&Ok(result(false))), Some(false));
    assert_eq!(received_ok(&Err(RecvError::Lagged(1))), Some(false));
    assert_eq!(received_ok(&Err(RecvError::Lagged(u64::MAX))), Some(false));
    assert_eq!(received_ok(&Err(RecvError::Closed)), None);
}

/// Issue 13, end to end on a real broadcast channel: a failure overwritten while the
/// subscriber was behind still reaches it as a failure (before the fix the subscriber saw
/// only the passes that followed it, and a failback verification could pass).
#[test]
fn a_failure_lost_to_a_lag_is_still_seen_as_a_failure() {
    let (tx, mut rx) = broadcast::channel(MONITOR_RESULTS_CAPACITY);
    tx.send(result(false)).expect("a subscriber");
    for _ in 0..MONITOR_RESULTS_CAPACITY {
        tx.send(result(true)).expect("a subscriber");
    }
    drop(tx);
    let mut seen = Vec::new();
    // Bounded: capacity results, one lag, one close.
    for _ in 0..MONITOR_RESULTS_CAPACITY + 2 {
        let r = match rx.try_recv() {
            Ok(res) => Ok(res),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                Err(broadcast::error::RecvError::Lagged(n))
            }
            Err(_) => break,
        };
        seen.extend(received_ok(&r));
    }
    assert_eq!(seen.len(), MONITOR_RESULTS_CAPACITY + 1, "{seen:?}");
    assert!(!seen[0], "the lag comes first and counts as a failure");
    assert!(seen[1..].iter().all(|ok| *ok), "{seen:?}");
}

// ---- pure tracker ----

#[test]
fn tracker_counts_consecutive_failures() {
    let mut t = MonitorTracker::new(3).expect("valid threshold");
    assert_eq!(t.health(), ResourceHealth::Unknown);
    assert_eq!(t.record(false), ResourceHealth::Unknown);
    assert_eq!(t.record(false), ResourceHealth::Unknown);
    assert_eq!(t.record(false), ResourceHealth::Unhealthy);
    assert_eq!(t.record(false), ResourceHealth::Unhealthy);
    assert_eq!(t.record(true), ResourceHealth::Healthy);
    assert_eq!(t.consecutive_failures(), 0);
    // Blips below the threshold keep a healthy verdict.
    assert_eq!(t.record(false), ResourceHealth::Healthy);
    assert_eq!(t.record(false), ResourceHealth::Healthy);
    assert_eq!(t.record(true), ResourceHealth::Healthy);
    assert_eq!(t.record(false), ResourceHealth::Healthy);
    assert_eq!(t.record(false), ResourceHealth::Healthy);
    assert_eq!(t.record(false), ResourceHealth::Unhealthy);
    t.reset();
    assert_eq!(t.health(), ResourceHealth::Unknown);
    assert_eq!(t.record(false), ResourceHealth::Unknown);
}

#[test]
fn threshold_of_one_condemns_at_once() {
    let mut t = MonitorTracker::new(1).expect("valid threshold");
    assert_eq!(t.record(false), ResourceHealth::Unhealthy);
    assert_eq!(t.record(true), ResourceHealth::Healthy);
    assert_eq!(t.record(false), ResourceHealth::Unhealthy);
}

#[test]
fn tracker_rejects_bad_thresholds() {
    assert_eq!(
        MonitorTracker::new(0),
        Err(MonitorError::ThresholdOutOfRange {
            threshold: 0,
            max: MAX_FAILURE_THRESHOLD
        })
    );
    assert!(MonitorTracker::new(MAX_FAILURE_THRESHOLD + 1).is_err());
    assert!(MonitorTracker::new(MAX_FAILURE_THRESHOLD).is_ok());
}

/// Reference model: the verdict follows from the whole history, not just the state.
fn expected(threshold: u32, history: &[bool]) -> ResourceHealth {
    let trailing_failures = history.iter().rev().take_while(|ok| !**ok).count();
    if trailing_failures >= threshold as usize {
        ResourceHealth::Unhealthy
    } else if history.iter().any(|ok| *ok) {
        ResourceHealth::Healthy
    } else {
        ResourceHealth::Unknown
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn tracker_matches_model(threshold in 1u32..6, history in proptest::collection::vec(any::<bool>(), 0..60)) {
        let mut t = MonitorTracker::new(threshold).expect("valid threshold");
        for i in 0..history.len() {
            let got = t.record(history[i]);
            prop_assert_eq!(got, expected(threshold, &history[..=i]));
            prop_assert_eq!(got, t.health());
        }
        if history.is_empty() {
            prop_assert_eq!(t.health(), ResourceHealth::Unknown);
        }
    }

    #[test]
    fn unhealthy_needs_threshold_failures_in_a_row(threshold in 1u32..6, history in proptest::collection::vec(any::<bool>(), 0..60)) {
        let mut t = MonitorTracker::new(threshold).expect("valid threshold");
        let mut previous = ResourceHealth::Unknown;
        let mut streak = 0u32;
        for ok in history {
            streak = if ok { 0 } else { streak + 1 };
            let now = t.record(ok);
            if now == ResourceHealth::Unhealthy && previous != ResourceHealth::Unhealthy {
                prop_assert_eq!(streak, threshold, "turned unhealthy after {} failures", streak);
            }
            if ok {
                prop_assert_eq!(now, ResourceHealth::Healthy);
            }
            previous = now;
        }
    }
}

// ---- the loop, with real processes ----

fn runner(monitor: Option<&Path>) -> Arc<dyn crate::resource::Agent> {
    let mut paths = HashMap::new();
    if let Some(p) = monitor {
        paths.insert(HookKind::Monitor, p.to_path_buf());
    }
    Arc::new(
        crate::resource::HookRunner::new(HookSettings {
            cluster: "test".to_string(),
            node: 2,
            paths,
            timeout: Duration::from_secs(10),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            services: HashMap::new(),
        })
        .expect("valid settings"),
    )
}

async fn next_result(rx: &mut broadcast::Receiver<MonitorResult>) -> MonitorResult {
    match tokio::time::timeout(WAIT_LIMIT, rx.recv()).await {
        Ok(Ok(r)) => r,
        other => panic!("no monitor result: {other:?}"),
    }
}

async fn wait_health(handle: &mut MonitorHandle, want: ResourceHealth) {
    let waited = tokio::time::timeout(WAIT_LIMIT, handle.health.wait_for(|h| *h == want)).await;
    assert!(matches!(waited, Ok(Ok(_))), "health never became {want:?}");
}

#[tokio::test]
async fn health_flips_after_threshold_failures_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("fail");
    let hook = write_script(
        dir.path(),
        "monitor.sh",
        &format!("[ -e '{}' ] && exit 1\nexit 0", flag.display()),
    );
    let (_role_tx, role_rx) = watch::channel(MonitorRole::Primary);
    let (_epoch_tx, epoch_rx) = watch::channel(Epoch(5));
    let mut handle =
        spawn_monitor(runner(Some(&hook)), FAST_INTERVAL, 3, role_rx, epoch_rx).expect("spawn");
    assert_eq!(handle.current_health(), ResourceHealth::Unknown);
    wait_health(&mut handle, ResourceHealth::Healthy).await;

    let mut results = handle.results();
    fs::write(&flag, "").expect("create flag");
    // At most one run can have started before the flag existed.
    let mut r = next_result(&mut results).await;
    for _ in 0..2 {
        if !r.ok {
            break;
        }
        r = next_result(&mut results).await;
    }
    assert!(!r.ok, "the monitor kept passing with the flag present");
    assert_eq!(
        r.health,
        ResourceHealth::Healthy,
        "first failure must not condemn"
    );
    let r = next_result(&mut results).await;
    assert!(!r.ok);
    assert_eq!(
        r.health,
        ResourceHealth::Healthy,
        "second failure must not condemn"
    );
    let r = next_result(&mut results).await;
    assert!(!r.ok);
    assert_eq!(
        r.health,
        ResourceHealth::Unhealthy,
        "third failure reaches the threshold"
    );
    assert_eq!(r.role, MonitorRole::Primary);
    assert_eq!(r.epoch, 5);
    wait_health(&mut handle, ResourceHealth::Unhealthy).await;

    fs::remove_file(&flag).expect("remove flag");
    wait_health(&mut handle, ResourceHealth::Healthy).await;
    handle.join().await;
}

#[tokio::test]
async fn role_and_epoch_follow_the_watches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("seen");
    let hook = write_script(
        dir.path(),
        "monitor.sh",
        &format!(
            "echo \"$QUORATE_ROLE $QUORATE_EPOCH $QUORATE_REASON $QUORATE_HOOK\" > '{}'",
            seen.display()
        ),
    );
    let (role_tx, role_rx) = watch::channel(MonitorRole::Replica);
    let (epoch_tx, epoch_rx) = watch::channel(Epoch(1));
    let handle =
        spawn_monitor(runner(Some(&hook)), FAST_INTERVAL, 2, role_rx, epoch_rx).expect("spawn");
    let mut results = handle.results();
    let r = next_result(&mut results).await;
    assert!(r.ok);
    assert_eq!(
        fs::read_to_string(&seen).expect("seen").trim(),
        "replica 1 monitor monitor"
    );

    role_tx.send_replace(MonitorRole::Primary);
    epoch_tx.send_replace(Epoch(2));
    // The run in flight may predate the change; the one after it cannot.
    let mut r = next_result(&mut results).await;
    if r.role != MonitorRole::Primary {
        r = next_result(&mut results).await;
    }
    assert_eq!((r.role, r.epoch), (MonitorRole::Primary, Epoch(2)));
    assert_eq!(
        fs::read_to_string(&seen).expect("seen").trim(),
        "primary 2 monitor monitor"
    );
    handle.join().await;
}

#[tokio::test]
async fn runs_never_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = dir.path().join("lock");
    let overlap = dir.path().join("overlap");
    // Each run takes ~100 ms, longer than the 30 ms interval.
    let hook = write_script(
        dir.path(),
        "monitor.sh",
        &format!(
            "mkdir '{l}' 2>/dev/null || {{ touch '{o}'; exit 1; }}\nsleep 0.1\nrmdir '{l}'",
            l = lock.display(),
            o = overlap.display()
        ),
    );
    let (_role_tx, role_rx) = watch::channel(MonitorRole::Replica);
    let (_epoch_tx, epoch_rx) = watch::channel(Epoch(1));
    let handle =
        spawn_monitor(runner(Some(&hook)), FAST_INTERVAL, 1, role_rx, epoch_rx).expect("spawn");
    let mut results = handle.results();
    for _ in 0..4 {
        let r = next_result(&mut results).await;
        assert!(r.ok, "a run failed: overlapping runs? {r:?}");
    }
    handle.join().await;
    assert!(!overlap.exists(), "two monitor runs overlapped");
}

#[tokio::test]
async fn no_monitor_hook_means_unknown_and_no_runs() {
    let (_role_tx, role_rx) = watch::channel(MonitorRole::Primary);
    let (_epoch_tx, epoch_rx) = watch::channel(Epoch(1));
    let handle = spawn_monitor(runner(None), FAST_INTERVAL, 1, role_rx, epoch_rx).expect("spawn");
    let mut results = handle.results();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handle.current_health(), ResourceHealth::Unknown);
    assert!(matches!(
        results.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    tokio::time::timeout(WAIT_LIMIT, handle.join())
        .await
        .expect("idle monitor stops");
}

#[tokio::test]
async fn stop_kills_a_running_monitor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let hook = write_script(
        dir.path(),
        "monitor.sh",
        &format!(
            "echo $$ > '{p}.main'\nsleep 1000 &\necho $! > '{p}'\nwait",
            p = pid_file.display()
        ),
    );
    let (_role_tx, role_rx) = watch::channel(MonitorRole::Replica);
    let (_epoch_tx, epoch_rx) = watch::channel(Epoch(1));
    let handle =
        spawn_monitor(runner(Some(&hook)), FAST_INTERVAL, 1, role_rx, epoch_rx).expect("spawn");
    let mut pid = None;
    for _ in 0..500 {
        if let Some(p) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            pid = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = pid.expect("monitor hook started");
    tokio::time::timeout(WAIT_LIMIT, handle.join())
        .await
        .expect("stop is prompt");
    // The hook's main process is ours: reaped by the time join returns.
    let main = read_pid(&pid_file.with_extension("main")).await;
    assert!(
        !alive_or_our_zombie(main),
        "monitor hook {main} left unreaped"
    );
    // Its child was killed with the group (init reaps it).
    assert!(
        wait_gone(pid).await,
        "monitor hook child {pid} survived stop"
    );
}

#[tokio::test]
async fn reset_returns_to_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = write_script(dir.path(), "monitor.sh", "exit 1");
    let (_role_tx, role_rx) = watch::channel(MonitorRole::Primary);
    let (_epoch_tx, epoch_rx) = watch::channel(Epoch(1));
    let mut handle =
        spawn_monitor(runner(Some(&hook)), FAST_INTERVAL, 2, role_rx, epoch_rx).expect("spawn");
    wait_health(&mut handle, ResourceHealth::Unhealthy).await;
    let mut results = handle.results();
    handle.reset();
    wait_health(&mut handle, ResourceHealth::Unknown).await;
    // After the reset it takes the full threshold again: the first failure that
    // counts leaves it Unknown (a run that straddled the reset is discarded).
    // Results published before the reset took effect are still Unhealthy; at most
    // a couple of them can be in the channel.
    let mut r = next_result(&mut results).await;
    for _ in 0..3 {
        if r.health != ResourceHealth::Unhealthy {
            break;
        }
        r = next_result(&mut results).await;
    }
    assert_eq!(r.health, ResourceHealth::Unknown, "{r:?}");
    let r = next_result(&mut results).await;
    assert_eq!(r.health, ResourceHealth::Unhealthy, "{r:?}");
    handle.join().await;
}

#[test]
fn spawn_rejects_bad_settings() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (_r, role_rx) = watch::channel(MonitorRole::Replica);
        let (_e, epoch_rx) = watch::channel(Epoch(1));
        let err = spawn_monitor(
            runner(None),
            Duration::from_millis(1),
            3,
            role_rx.clone(),
            epoch_rx.clone(),
        )
        .err();
        assert!(matches!(err, Some(MonitorError::IntervalTooShort { .. })));
        let err = spawn_monitor(runner(None), FAST_INTERVAL, 0, role_rx, epoch_rx).err();
        assert!(matches!(
            err,
            Some(MonitorError::ThresholdOutOfRange { threshold: 0, .. })
        ));
    });
}
