//! `quorate demo`: the newcomer's first command. A 3-node cluster on 127.0.0.1 as child
//! processes in a temp dir: election, a kill -9 of the primary and the failover it causes
//! (measured), the restart of that node, a supervised failback (committed), a summary,
//! then cleanup. `--keep` leaves the cluster running instead.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::api::wire::NodeStatus;
use crate::cli::client::Client;
use crate::cli::localcluster::{ClusterSpec, LocalCluster};

/// Upper bound on every wait in the demo (a stuck demo must end with an error, not hang).
pub const DEMO_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The demo's service: filedb.sh, a tiny replicated service whose data is an append-only
/// file (its monitor reports a position, follow copies the primary's data).
const HOOK: &str = include_str!("../../cluster-config/hooks/filedb.sh");
/// Bytes the demo "writes" to the primary's data.
const DEMO_WRITE_BYTES: usize = 4096;

/// Waits until the leader behind `sc` says a failback is available.
pub(crate) async fn failback_available(sc: &Client) -> Result<(), String> {
    wait_for("failback to be available", || async {
        let st: NodeStatus = sc.get_json("/v1/status").await.ok()?;
        st.notes
            .iter()
            .any(|n| n.contains("failback available"))
            .then_some(())
    })
    .await
}

/// Requests a failback through `sc` (the current primary's API) and waits until it
/// committed with `home` primary again; returns the milliseconds from request to commit.
pub(crate) async fn failback_to(sc: &Client, home: u64) -> Result<u128, String> {
    let fb_at = Instant::now();
    match sc
        .send(
            reqwest::Method::POST,
            "/v1/failback",
            Some(b"{}".to_vec()),
            None,
        )
        .await
    {
        Ok((200, _)) => {}
        Ok((s, b)) => {
            return Err(format!(
                "failback refused: HTTP {s}: {}",
                String::from_utf8_lossy(&b)
            ))
        }
        Err(e) => return Err(e.to_string()),
    }
    wait_for("the failback to commit", || async {
        let st: NodeStatus = sc.get_json("/v1/status").await.ok()?;
        (st.operation.is_none() && st.failed_over.is_none() && st.primary == Some(home))
            .then_some(())
    })
    .await?;
    Ok(fb_at.elapsed().as_millis())
}

pub(crate) fn step(msg: &str) {
    println!("\n== {msg}");
}

async fn statuses(c: &LocalCluster) -> Vec<NodeStatus> {
    let mut out = Vec::new();
    for id in c.ids() {
        if c.pid(id).is_some() {
            if let Some(s) = c.status(id).await {
                out.push(s);
            }
        }
    }
    out
}

/// Prints the status table as the leader sees it (a restarted node's own view may lag).
pub(crate) async fn print_table(c: &LocalCluster) {
    let all = statuses(c).await;
    let view = all
        .iter()
        .find(|s| s.raft_state == "leader")
        .or(all.first());
    if let Some(v) = view {
        print!("{}", crate::cli::table::status_table(v, &all));
    }
}

/// The node acting as primary (its /primary answers 200), if exactly one does.
pub(crate) async fn acting_primary(c: &LocalCluster) -> Option<u64> {
    let mut found = None;
    for id in c.ids() {
        if c.pid(id).is_none() {
            continue;
        }
        let client = c.client(id, Duration::from_millis(300))?;
        if let Ok((200, _)) = client
            .send(reqwest::Method::GET, "/primary", None, None)
            .await
        {
            if found.is_some() {
                return None;
            }
            found = Some(id);
        }
    }
    found
}

pub(crate) async fn wait_for<F, Fut, T>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEMO_STEP_TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {DEMO_STEP_TIMEOUT:?} waiting for {what}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The service the demo protects (`quorate demo --service`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoService {
    /// filedb.sh, a tiny replicated service whose data is a file (nothing to install).
    #[default]
    Filedb,
    /// Three PostgreSQL 15 instances run by the built-in postgres agent (needs the
    /// postgresql-15 package).
    Postgres,
}

pub async fn run(keep: bool, service: DemoService) -> ExitCode {
    let result = match service {
        DemoService::Filedb => demo(keep).await,
        DemoService::Postgres => crate::cli::demo_postgres::demo(keep).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}

async fn demo(keep: bool) -> Result<(), String> {
    let bin = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    std::env::set_var("QUORATE_BIN", &bin);
    let mut spec = ClusterSpec::voters(3);
    spec.name = "demo".into();
    let mut c = LocalCluster::create(&spec).map_err(|e| e.to_string())?;
    let hook = c.path().join("hook.sh");
    std::fs::write(&hook, HOOK).map_err(|e| format!("cannot write {}: {e}", hook.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    let data = c.path().join("filedb");
    std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    let log = data.join("calls.log");
    let mut extra = String::from("[resource]\n");
    for h in [
        "start", "stop", "promote", "demote", "monitor", "follow", "fence", "rejoin", "notify",
        "snapshot", "verify",
    ] {
        let _ = writeln!(extra, "{h} = \"{}\"", hook.display());
    }
    extra.push_str("fencing = \"best-effort\"\nmonitor_interval = \"200ms\"\n");
    c.append_config(&extra).map_err(|e| e.to_string())?;
    c.env
        .push(("FILEDB_ROOT".into(), data.display().to_string()));
    c.env.push(("QUORATE_LOG".into(), "warn".into()));

    println!(
        "quorate demo: a 3-node cluster on 127.0.0.1 in {}",
        c.path().display()
    );
    step("starting three nodes");
    let t0 = Instant::now();
    c.start_all().map_err(|e| e.to_string())?;
    let first = wait_for("a primary", || acting_primary(&c)).await?;
    let elect_ms = t0.elapsed().as_millis();
    println!("node {first} is primary {elect_ms} ms after start");
    print_table(&c).await;

    step("writing to the replicated KV store through a follower");
    let follower = c.ids().into_iter().find(|i| *i != first).unwrap_or(first);
    let client: Client = c
        .client(follower, Duration::from_secs(5))
        .ok_or("no client")?;
    // A follower that has not heard the new leader yet answers 503 ("retry shortly"): the
    // write is idempotent, so retry it until the follower forwards it.
    let written = wait_for("a follower to forward a KV write", || async {
        match client
            .send(
                reqwest::Method::PUT,
                "/v1/kv/demo/greeting",
                Some(b"hello from quorate".to_vec()),
                None,
            )
            .await
        {
            Ok((200, b)) => Some(Ok(b)),
            Ok((503, _)) | Err(_) => None,
            Ok((s, b)) => Some(Err(format!(
                "KV write failed: HTTP {s}: {}",
                String::from_utf8_lossy(&b)
            ))),
        }
    })
    .await??;
    println!(
        "PUT demo/greeting on node {follower} (forwarded to the leader): {}",
        String::from_utf8_lossy(&written)
    );

    step(&format!(
        "writing {DEMO_WRITE_BYTES} bytes to the service on node {first}; the replicas stream them"
    ));
    {
        use std::io::Write;
        let path = data.join(format!("node{first}/data"));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&[b'x'; DEMO_WRITE_BYTES]))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    print_table(&c).await;

    step(&format!("kill -9 of the primary (node {first})"));
    let kill_at = Instant::now();
    c.kill9(first);
    let second = wait_for("a new primary", || async {
        acting_primary(&c).await.filter(|p| *p != first)
    })
    .await?;
    let failover_ms = kill_at.elapsed().as_millis();
    println!(
        "node {second} took over: /primary answered 200 there {failover_ms} ms after the kill"
    );
    print_table(&c).await;

    step(&format!("restarting node {first}: it rejoins as a replica"));
    c.start(first).map_err(|e| e.to_string())?;
    let sc = c
        .client(second, Duration::from_secs(5))
        .ok_or("no client")?;
    failback_available(&sc).await?;
    print_table(&c).await;

    step(&format!(
        "supervised failback to home node {first} (verify, then commit)"
    ));
    let failback_ms = failback_to(&sc, first).await?;
    println!("failback committed in {failback_ms} ms; node {first} is primary again");
    print_table(&c).await;

    step("agent actions, in order (filedb's calls.log)");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let notifies = calls.lines().filter(|l| l.starts_with("notify ")).count();
    for l in calls.lines().filter(|l| !l.starts_with("notify ")) {
        println!("{l}");
    }
    println!("(and {notifies} notify calls: every node hears of every role change)");

    step("summary");
    println!("first election and promotion: {elect_ms} ms");
    println!("unplanned failover (kill -9 -> /primary 200 on the new node): {failover_ms} ms");
    println!("supervised failback (request -> committed): {failback_ms} ms");
    if keep {
        let api = c
            .node(first)
            .map(|n| n.member.api.to_string())
            .unwrap_or_default();
        println!("\nthe cluster keeps running (--keep). Talk to it with:");
        println!("  quorate status --api {api}");
        println!("  curl http://{api}/v1/kv/demo/greeting");
        println!(
            "  quorate --api {api} --token-file {} kv put demo/x y   (writes need the admin token)",
            c.token_file().display()
        );
        println!(
            "stop it with: kill {}",
            c.ids()
                .iter()
                .filter_map(|i| c.pid(*i))
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        c.detach();
        return Ok(());
    }
    println!("\ncleaning up (use --keep to leave the cluster running)");
    Ok(())
}
