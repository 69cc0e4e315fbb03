use super::*;
use std::fs;

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write test script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod test script");
    path
}

fn runner(kind: HookKind, path: &Path, timeout: Duration, max_output: usize) -> HookRunner {
    let mut paths = HashMap::new();
    paths.insert(kind, path.to_path_buf());
    HookRunner::new(HookSettings {
        cluster: "test-cluster".to_string(),
        node: 7,
        paths,
        timeout,
        max_output_bytes: max_output,
        services: HashMap::new(),
    })
    .expect("valid settings")
}

fn ctx() -> HookContext<'static> {
    HookContext {
        role: "primary",
        epoch: Epoch(42),
        reason: HookReason::Failover,
        previous_primary: Some(3),
        target: Some(3),
        primary: Some(3),
        event: &[],
    }
}

/// Whether `pid` is still a live (non-zombie) process. A zombie whose parent is
/// not this test process is dead and waiting for init; one of ours is a leak.
pub(crate) fn alive_or_our_zombie(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the ")" that closes the command name: state, ppid, ...
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let mut fields = after.split_whitespace();
    let state = fields.next().unwrap_or("");
    let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    state != "Z" || ppid == std::process::id()
}

pub(crate) async fn read_pid(path: &Path) -> i32 {
    for _ in 0..200 {
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pid written to {}", path.display());
}

#[tokio::test]
async fn success_and_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = write_script(dir.path(), "ok.sh", "echo fine; exit 0");
    let r = runner(
        HookKind::Promote,
        &ok,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let out = r.run(HookKind::Promote, ctx()).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.exit_code, Some(0));
    assert!(!out.timed_out);
    assert_eq!(out.output, "fine\n");
    assert_eq!(
        r.stats().get(HookKind::Promote),
        HookCounts {
            runs: 1,
            failures: 0,
            timeouts: 0
        }
    );

    let bad = write_script(dir.path(), "bad.sh", "echo broken >&2; exit 3");
    let r = runner(
        HookKind::Demote,
        &bad,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let out = r.run(HookKind::Demote, ctx()).await;
    assert!(!out.ok);
    assert_eq!(out.exit_code, Some(3));
    assert!(!out.timed_out);
    assert_eq!(out.output, "broken\n");
    assert!(out.describe().contains("exit code 3"), "{}", out.describe());
    assert_eq!(
        r.stats().get(HookKind::Demote),
        HookCounts {
            runs: 1,
            failures: 1,
            timeouts: 0
        }
    );
}

#[tokio::test]
async fn killed_by_signal_is_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = write_script(dir.path(), "sig.sh", "kill -TERM $$; sleep 5");
    let r = runner(
        HookKind::Demote,
        &hook,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let out = r.run(HookKind::Demote, ctx()).await;
    assert!(!out.ok);
    assert_eq!(out.exit_code, None);
    assert_eq!(out.signal, Some(libc::SIGTERM));
    assert!(!out.timed_out);
}

#[tokio::test]
async fn environment_is_exported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env.txt");
    let hook = write_script(
        dir.path(),
        "fence.sh",
        &format!("env > '{}'", env_file.display()),
    );
    let r = runner(
        HookKind::Fence,
        &hook,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let before = monotonic_ns();
    let out = r.run(HookKind::Fence, ctx()).await;
    let after = monotonic_ns();
    assert!(out.ok, "{out:?}");
    let text = fs::read_to_string(&env_file).expect("env file written by hook");
    let env: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(env.get("QUORATE_CLUSTER"), Some(&"test-cluster"));
    assert_eq!(env.get("QUORATE_NODE"), Some(&"7"));
    assert_eq!(env.get("QUORATE_ROLE"), Some(&"primary"));
    assert_eq!(env.get("QUORATE_EPOCH"), Some(&"42"));
    assert_eq!(env.get("QUORATE_REASON"), Some(&"failover"));
    assert_eq!(env.get("QUORATE_PREVIOUS_PRIMARY"), Some(&"3"));
    assert_eq!(env.get("QUORATE_HOOK"), Some(&"fence"));
    assert_eq!(env.get("QUORATE_FENCE_TARGET"), Some(&"3"));
    let stamp: u64 = env
        .get("QUORATE_MONOTONIC_NS")
        .and_then(|v| v.parse().ok())
        .expect("QUORATE_MONOTONIC_NS is a number");
    assert!(
        before <= stamp && stamp <= after,
        "{before} <= {stamp} <= {after}"
    );
}

#[tokio::test]
async fn every_hook_is_told_the_primary_and_its_service_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env.txt");
    let hook = write_script(
        dir.path(),
        "follow.sh",
        &format!("env > '{}'", env_file.display()),
    );
    let mut paths = HashMap::new();
    paths.insert(HookKind::Follow, hook.clone());
    paths.insert(HookKind::Monitor, hook);
    let r = HookRunner::new(HookSettings {
        cluster: "test-cluster".to_string(),
        node: 7,
        paths,
        timeout: TEST_TIMEOUT,
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        services: HashMap::from([(3, "db3.example:5432".to_string())]),
    })
    .expect("valid settings");
    let env_of = || {
        let text = fs::read_to_string(&env_file).expect("env file written by hook");
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
        };
        (get("QUORATE_PRIMARY"), get("QUORATE_PRIMARY_SERVICE"))
    };
    // Named by the context (follow: the primary to follow).
    assert!(r.run(HookKind::Follow, ctx()).await.ok);
    assert_eq!(
        env_of(),
        (Some("3".into()), Some("db3.example:5432".into()))
    );
    // Not named (the monitor loop's runs): the primary the executor last recorded.
    let unnamed = HookContext {
        primary: None,
        ..ctx()
    };
    r.set_primary(Some(3));
    assert!(r.run(HookKind::Monitor, unnamed).await.ok);
    assert_eq!(
        env_of(),
        (Some("3".into()), Some("db3.example:5432".into()))
    );
    // A primary without a configured service address, and no primary at all: empty.
    r.set_primary(Some(9));
    assert!(r.run(HookKind::Monitor, unnamed).await.ok);
    assert_eq!(env_of(), (Some("9".into()), Some(String::new())));
    r.set_primary(None);
    assert!(r.run(HookKind::Monitor, unnamed).await.ok);
    assert_eq!(env_of(), (Some(String::new()), Some(String::new())));
}

#[tokio::test]
async fn non_fence_hook_has_empty_previous_primary_and_no_fence_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env.txt");
    let hook = write_script(
        dir.path(),
        "promote.sh",
        &format!("env > '{}'", env_file.display()),
    );
    let r = runner(
        HookKind::Promote,
        &hook,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let c = HookContext {
        previous_primary: None,
        reason: HookReason::Startup,
        ..ctx()
    };
    assert!(r.run(HookKind::Promote, c).await.ok);
    let text = fs::read_to_string(&env_file).expect("env file written by hook");
    assert!(
        text.lines().any(|l| l == "QUORATE_PREVIOUS_PRIMARY="),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "QUORATE_REASON=startup"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "QUORATE_HOOK=promote"), "{text}");
    assert!(!text.contains("QUORATE_FENCE_TARGET"), "{text}");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let hook = write_script(
        dir.path(),
        "hang.sh",
        &format!(
            "sleep 1000 &\necho $! > '{p}.child'\necho $$ > '{p}.main'\nwait",
            p = pids.display()
        ),
    );
    let r = runner(
        HookKind::Promote,
        &hook,
        Duration::from_millis(500),
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let started = Instant::now();
    let out = r.run(HookKind::Promote, ctx()).await;
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert!(!out.ok);
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        r.stats().get(HookKind::Promote),
        HookCounts {
            runs: 1,
            failures: 1,
            timeouts: 1
        }
    );

    let child = read_pid(&pids.with_extension("child")).await;
    let main = read_pid(&pids.with_extension("main")).await;
    // The main process is ours and must already be reaped.
    assert!(
        !alive_or_our_zombie(main),
        "hook main process {main} left behind"
    );
    // The grandchild was SIGKILLed with the group; init reaps it shortly.
    let mut gone = false;
    for _ in 0..200 {
        if !alive_or_our_zombie(child) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "grandchild {child} survived the timeout");
}

#[tokio::test]
async fn dropping_the_run_kills_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("child.pid");
    let hook = write_script(
        dir.path(),
        "hang.sh",
        &format!("sleep 1000 &\necho $! > '{}'\nwait", pid_file.display()),
    );
    let r = runner(
        HookKind::Monitor,
        &hook,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let cancelled =
        tokio::time::timeout(Duration::from_millis(500), r.run(HookKind::Monitor, ctx())).await;
    assert!(
        cancelled.is_err(),
        "the hook should still have been running"
    );
    let child = read_pid(&pid_file).await;
    let mut gone = false;
    for _ in 0..200 {
        if !alive_or_our_zombie(child) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "grandchild {child} survived the cancelled run");
}

/// Polls until `pid` is neither running nor our unreaped zombie (bounded).
pub(crate) async fn wait_gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !alive_or_our_zombie(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn cancel_kills_and_reaps_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let hook = write_script(
        dir.path(),
        "hang.sh",
        &format!(
            "sleep 1000 &\necho $! > '{p}.child'\necho $$ > '{p}.main'\nwait",
            p = pids.display()
        ),
    );
    let r = runner(
        HookKind::Fence,
        &hook,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let main_file = pids.with_extension("main");
    let cancel = async {
        // Cancel once the hook has started its child.
        read_pid(&main_file).await;
    };
    let out = r.run_cancellable(HookKind::Fence, ctx(), cancel).await;
    assert!(out.cancelled, "{out:?}");
    assert!(!out.ok && !out.timed_out);
    assert_eq!(out.signal, Some(libc::SIGKILL));
    assert!(out.describe().contains("cancelled"), "{}", out.describe());
    let main = read_pid(&main_file).await;
    // Reaped before run_cancellable returned: no polling allowed here.
    assert!(!alive_or_our_zombie(main), "main process {main} not reaped");
    let child = read_pid(&pids.with_extension("child")).await;
    assert!(
        wait_gone(child).await,
        "grandchild {child} survived the cancel"
    );
}

#[tokio::test]
async fn runtime_keeps_running_while_a_hook_runs() {
    // Current-thread runtime: if the runner blocked, the ticker could not advance.
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = write_script(dir.path(), "slow.sh", "sleep 0.5");
    let r = runner(
        HookKind::Rejoin,
        &hook,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let ticks = std::cell::Cell::new(0u32);
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ticks.set(ticks.get() + 1);
        }
    };
    let out = tokio::select! {
        out = r.run(HookKind::Rejoin, ctx()) => out,
        () = ticker => unreachable!("the ticker never ends"),
    };
    assert!(out.ok, "{out:?}");
    assert!(
        ticks.get() >= 5,
        "only {} ticks while the hook slept",
        ticks.get()
    );
}

#[tokio::test]
async fn output_is_truncated_without_deadlock() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 1 MiB on stdout and 1 MiB on stderr: far past a pipe buffer (64 KiB).
    let hook = write_script(
            dir.path(),
            "chatty.sh",
            "echo START\nhead -c 1048576 /dev/zero | tr '\\000' a\nhead -c 1048576 /dev/zero | tr '\\000' b >&2\necho END",
        );
    let cap = 1000;
    let r = runner(HookKind::Monitor, &hook, TEST_TIMEOUT, cap);
    let out = r.run(HookKind::Monitor, ctx()).await;
    assert!(out.ok, "{:?}", out.describe());
    assert!(out.output.starts_with("START\n"), "{}", &out.output[..40]);
    assert!(
        out.output.ends_with("END\n"),
        "{:?}",
        &out.output[out.output.len().saturating_sub(300)..]
    );
    assert!(out.output.contains("bytes of hook output omitted"));
    let omitted = 6 + 2 * 1_048_576 + 4 - cap;
    assert!(
        out.output.contains(&format!("{omitted} bytes")),
        "{}",
        out.output
    );
    assert!(
        out.output.len() <= cap + 200,
        "{} bytes kept",
        out.output.len()
    );
}

#[tokio::test]
async fn stdout_and_stderr_interleave_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = write_script(
        dir.path(),
        "both.sh",
        "echo one\necho two >&2\necho three\necho four >&2\nexit 1",
    );
    let r = runner(
        HookKind::Promote,
        &hook,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let out = r.run(HookKind::Promote, ctx()).await;
    // Interleaved in the order written, as a terminal would show it.
    assert_eq!(out.output, "one\ntwo\nthree\nfour\n");
}

#[tokio::test]
async fn a_daemon_left_behind_does_not_hold_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("daemon.pid");
    // The background sleep inherits stdout/stderr and keeps the pipes open.
    let hook = write_script(
        dir.path(),
        "start.sh",
        &format!(
            "sleep 1000 &\necho $! > '{}'\necho started\nexit 0",
            pid_file.display()
        ),
    );
    let r = runner(
        HookKind::Promote,
        &hook,
        Duration::from_secs(10),
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let started = Instant::now();
    let out = r.run(HookKind::Promote, ctx()).await;
    let took = started.elapsed();
    let daemon = read_pid(&pid_file).await;
    let still_running = alive_or_our_zombie(daemon);
    // SAFETY: test cleanup of a pid this test's hook created and recorded.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    assert!(out.ok, "{out:?}");
    assert!(
        still_running,
        "a successful hook's daemon must be left alone"
    );
    assert!(out.output.starts_with("started\n"), "{}", out.output);
    assert!(
        out.output.contains("stopped reading output"),
        "{}",
        out.output
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// The shipped marker hook (cluster-config/local/hooks/marker.sh) reads exactly the
/// variables this runner exports: its line must carry our node, hook, epoch and a
/// CLOCK_MONOTONIC stamp taken at spawn.
#[tokio::test]
async fn shipped_marker_hook_records_the_run() {
    let marker = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-config/local/hooks/marker.sh");
    assert!(marker.is_file(), "{} is missing", marker.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("markers.log");
    // The daemon passes its own environment through; QUORATE_MARKER_LOG comes from there.
    let wrapper = write_script(
        dir.path(),
        "promote.sh",
        &format!(
            "export QUORATE_MARKER_LOG='{}'\nexec '{}'",
            log.display(),
            marker.display()
        ),
    );
    let r = runner(
        HookKind::Promote,
        &wrapper,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let before = monotonic_ns();
    let out = r.run(HookKind::Promote, ctx()).await;
    let after = monotonic_ns();
    assert!(out.ok, "{out:?}");
    let text = fs::read_to_string(&log).expect("marker line written");
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{text}");
    assert_eq!(&fields[1..], ["7", "promote", "42"], "{text}");
    let stamp: u64 = fields[0].parse().expect("monotonic ns");
    assert!(
        before <= stamp && stamp <= after,
        "{before} <= {stamp} <= {after}"
    );
}

#[tokio::test]
async fn missing_hook_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.sh");
    let r = runner(
        HookKind::Promote,
        &path,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let out = r.run(HookKind::Promote, ctx()).await;
    assert!(!out.ok);
    assert_eq!(out.exit_code, None);
    assert!(
        out.output.contains(&path.display().to_string()),
        "{}",
        out.output
    );
    assert!(out.output.contains("does not exist"), "{}", out.output);
    let problems = r.check();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("does not exist"));
    assert_eq!(r.stats().get(HookKind::Promote).failures, 1);
}

#[tokio::test]
async fn non_executable_hook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_script(dir.path(), "plain.sh", "exit 0");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = runner(
        HookKind::Demote,
        &path,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let out = r.run(HookKind::Demote, ctx()).await;
    assert!(!out.ok);
    let fix = format!("chmod +x {}", path.display());
    assert!(out.output.contains(&fix), "{}", out.output);
    assert!(
        out.describe().contains("could not run"),
        "{}",
        out.describe()
    );
    let problems = r.check();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(&fix));
}

#[tokio::test]
async fn script_without_interpreter_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("noshebang");
    fs::write(&path, [0x7fu8, b'X', b'Y', b'Z', 0, 0, 0]).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    let r = runner(
        HookKind::Rejoin,
        &path,
        TEST_TIMEOUT,
        DEFAULT_MAX_OUTPUT_BYTES,
    );
    let out = r.run(HookKind::Rejoin, ctx()).await;
    assert!(!out.ok);
    assert!(
        out.output.contains("could not start rejoin hook"),
        "{}",
        out.output
    );
    assert!(out.output.contains("#!/bin/sh"), "{}", out.output);
}

#[tokio::test]
async fn unconfigured_hooks() {
    let r = HookRunner::new(HookSettings {
        cluster: "c".to_string(),
        node: 1,
        paths: HashMap::new(),
        timeout: TEST_TIMEOUT,
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        services: HashMap::new(),
    })
    .expect("valid settings");
    assert!(r.check().is_empty());
    for kind in [
        HookKind::Promote,
        HookKind::Demote,
        HookKind::Monitor,
        HookKind::Rejoin,
    ] {
        assert!(!r.is_configured(kind));
        let out = r.run(kind, ctx()).await;
        assert!(out.ok, "unconfigured {kind} must be a no-op success");
        assert_eq!(r.stats().get(kind).runs, 0);
    }
    let fence = r.run(HookKind::Fence, ctx()).await;
    assert!(!fence.ok, "an unconfigured fence must never report success");
    assert!(
        fence.output.contains("fencing = \"off\""),
        "{}",
        fence.output
    );
}

#[test]
fn settings_are_validated() {
    let base = HookSettings {
        cluster: "c".to_string(),
        node: 1,
        paths: HashMap::new(),
        timeout: Duration::from_secs(1),
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        services: HashMap::new(),
    };
    let zero_timeout = HookSettings {
        timeout: Duration::ZERO,
        ..base.clone()
    };
    assert_eq!(
        HookRunner::new(zero_timeout).err(),
        Some(HookSettingsError::ZeroTimeout)
    );
    for bytes in [0, MAX_OUTPUT_BYTES_LIMIT + 1] {
        let s = HookSettings {
            max_output_bytes: bytes,
            services: HashMap::new(),
            ..base.clone()
        };
        assert!(matches!(
            HookRunner::new(s),
            Err(HookSettingsError::OutputLimit { bytes: b, .. }) if b == bytes
        ));
    }
    assert!(HookRunner::new(base).is_ok());
}

#[test]
fn capture_keeps_head_and_tail() {
    let mut c = Capture::new(10);
    c.push(b"0123");
    c.push(b"456789abcdef");
    c.push(b"XYZ");
    let s = c.finish();
    assert!(s.starts_with("01234\n"), "{s}");
    assert!(s.ends_with("]\nefXYZ"), "{s}");
    assert!(
        s.contains("[quorate: 9 bytes of hook output omitted"),
        "{s}"
    );

    let mut small = Capture::new(10);
    small.push(b"short");
    assert_eq!(small.finish(), "short");
}

#[test]
fn monotonic_clock_advances() {
    let a = monotonic_ns();
    let b = monotonic_ns();
    assert!(a > 0 && b >= a);
}
