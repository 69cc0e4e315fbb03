//! Helpers every subcommand shares: cluster set-up, hook logs, CPU hogs, number lists.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use quorate::cluster::HistoryEntry;
use quorate_chaos::http::status_code;
use quorate_chaos::launcher::{ClusterSpec, LocalCluster};
use quorate_chaos::stats::Summary;

/// How long a fresh cluster may take to elect a leader / a primary.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failover trial waits for every phase after the kill.
pub(crate) const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between failover trials (the restarted node rejoins and catches up).
pub(crate) const BETWEEN_TRIALS: Duration = Duration::from_secs(2);
/// Request timeout of the failover probes: short, so a dead node costs little.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Pause between two probes of one node while a failover is timed.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(2);
/// Wait after the first leader before measuring idle cost (startup work settles).
pub(crate) const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// Request timeout of KV writes and control requests.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the restarted home may take to be heard and in sync.
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// Hidden subcommand the CPU hogs run (`quorate-bench cpu-hog`).
pub(crate) const HOG_SUBCOMMAND: &str = "cpu-hog";
/// Environment variable naming the hog's parent PID: a hog whose parent is gone exits.
pub(crate) const HOG_PARENT_ENV: &str = "QUORATE_BENCH_HOG_PARENT";

pub(crate) fn print_summary(name: &str, unit: &str, s: &Summary) {
    println!(
        "{name:<28} n={:<3} min={:>8.1}{unit} median={:>8.1}{unit} p99={:>8.1}{unit} max={:>8.1}{unit}",
        s.count, s.min, s.median, s.p99, s.max
    );
}

/// A comma-separated list of numbers (`3,5,7`).
pub(crate) fn parse_list<T: std::str::FromStr>(text: &str, what: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .map(|x| {
            x.trim().parse().map_err(|_| {
                format!("bad {what} {x:?}: give comma-separated numbers, e.g. --{what} 3,5,7")
            })
        })
        .collect()
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A cluster of `voters` voters then `learners` learners (ids in that order).
pub(crate) fn cluster_spec(voters: usize, learners: usize, profile: &str) -> ClusterSpec {
    let mut spec = ClusterSpec::voters(voters);
    spec.roles
        .extend(std::iter::repeat_n("learner".to_string(), learners));
    spec.profile = profile.to_string();
    spec
}

pub(crate) fn api_of(c: &LocalCluster, id: u64) -> Result<SocketAddr, String> {
    c.node(id)
        .map(|n| n.member.api)
        .ok_or_else(|| format!("node {id} is not a member of the bench cluster"))
}

/// One history event as compact JSON, for listings.
pub(crate) fn event_text(e: &HistoryEntry) -> String {
    serde_json::to_string(&e.event).unwrap_or_else(|_| format!("{:?}", e.event))
}

pub(crate) fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// With `QUORATE_BENCH_SECRET=1` in the environment, give the cluster a secret.
pub(crate) fn with_secret_if_asked(c: &LocalCluster) -> Result<(), String> {
    if std::env::var("QUORATE_BENCH_SECRET").is_ok_and(|v| v == "1") {
        c.enable_secret().map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub(crate) use quorate_chaos::run::MARKER;

pub(crate) fn mono_ns() -> u64 {
    quorate::resource::monotonic_ns()
}

/// A cluster whose hooks are the marker script, logging to `<dir>/hooks.log`.
pub(crate) fn marker_cluster(spec: &ClusterSpec) -> Result<(LocalCluster, PathBuf), String> {
    let mut c = LocalCluster::create(spec).map_err(|e| e.to_string())?;
    with_secret_if_asked(&c)?;
    let hook = c.path().join("marker.sh");
    std::fs::write(&hook, MARKER).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    let mut extra = String::from("[resource]\n");
    for h in ["promote", "demote", "fence", "rejoin"] {
        extra.push_str(&format!("{h} = \"{}\"\n", hook.display()));
    }
    extra.push_str("fencing = \"best-effort\"\n");
    c.append_config(&extra).map_err(|e| e.to_string())?;
    let log = c.path().join("hooks.log");
    c.env
        .push(("QUORATE_MARKER_LOG".into(), log.display().to_string()));
    c.env.push(("QUORATE_LOG".into(), "warn".into()));
    Ok((c, log))
}

/// The marker hooks' log so far (empty before the first hook ran).
pub(crate) fn read_hook_log(log: &Path) -> Result<Vec<quorate_chaos::hooklog::HookEvent>, String> {
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read the hook log {}: {e}", log.display())),
    };
    quorate_chaos::hooklog::parse(&text).map_err(|e| e.to_string())
}

/// Hook-log anomalies (two primaries at once, an epoch reused) over the whole run.
pub(crate) fn hook_anomalies(log: &Path) -> Result<usize, String> {
    Ok(quorate_chaos::hooklog::check_exclusive(&read_hook_log(log)?).len())
}

pub(crate) async fn wait_primary(
    c: &LocalCluster,
    http: &reqwest::Client,
    exclude: Option<u64>,
    timeout: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for id in c.ids() {
            if Some(id) == exclude || c.pid(id).is_none() {
                continue;
            }
            let api = c.node(id)?.member.api;
            if status_code(http, &format!("http://{api}/primary")).await == Some(200) {
                return Some(id);
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    None
}

/// Busy-loop child processes (`quorate-bench cpu-hog`), killed by PID when dropped.
pub(crate) struct CpuHogs {
    pub(crate) children: Vec<Child>,
}

impl CpuHogs {
    pub(crate) fn start(count: usize) -> Result<CpuHogs, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot locate quorate-bench to start the CPU hogs: {e}"))?;
        let mut hogs = CpuHogs {
            children: Vec::new(),
        };
        for _ in 0..count {
            // On error, `hogs` drops here and kills the ones already started.
            let child = Command::new(&exe)
                .arg(HOG_SUBCOMMAND)
                .env(HOG_PARENT_ENV, std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start a CPU hog ({}): {e}", exe.display()))?;
            hogs.children.push(child);
        }
        Ok(hogs)
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Child::kill sends SIGKILL to this child's PID; wait reaps it.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The hog itself: spin on one core until killed. It also dies with its parent (parent-death
/// signal), so an interrupted bench leaves no hog behind.
pub(crate) fn cpu_hog() -> ExitCode {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a property of this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    // The parent may have died before the signal was armed: then stop at once.
    let parent: Option<i32> = std::env::var(HOG_PARENT_ENV)
        .ok()
        .and_then(|p| p.parse().ok());
    // SAFETY: getppid has no preconditions.
    if parent.is_some_and(|p| p != unsafe { libc::getppid() }) {
        return ExitCode::SUCCESS;
    }
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
