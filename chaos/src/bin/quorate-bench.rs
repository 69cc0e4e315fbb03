//! `quorate-bench`: one command for every performance claim. Each subcommand prints a table
//! and writes JSON (`--out FILE`). Real processes on 127.0.0.1; nothing here is a test.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;

use quorate_chaos::launcher::{proc_usage, ClusterSpec, LocalCluster};
use quorate_chaos::stats::{summarize, Summary};

#[derive(Parser)]
#[command(
    name = "quorate-bench",
    about = "Benchmarks for quorate (real processes on 127.0.0.1)"
)]
struct Cli {
    /// Write the results as JSON to this file too.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start N fresh nodes and time the first leader election (trials times).
    Election {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 10)]
        trials: usize,
        #[arg(long, default_value = "lan")]
        profile: String,
    },
    /// Idle cost per node: RSS, CPU % and heartbeat traffic over a window.
    Idle {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Measurement window in seconds.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        #[arg(long, default_value = "lan")]
        profile: String,
    },
}

fn print_summary(name: &str, unit: &str, s: &Summary) {
    println!(
        "{name:<28} n={:<3} min={:>8.1}{unit} median={:>8.1}{unit} p99={:>8.1}{unit} max={:>8.1}{unit}",
        s.count, s.min, s.median, s.p99, s.max
    );
}

async fn election(nodes: usize, trials: usize, profile: &str) -> Result<serde_json::Value, String> {
    let mut samples = Vec::new();
    for trial in 0..trials {
        let mut spec = ClusterSpec::voters(nodes);
        spec.profile = profile.to_string();
        let mut c = LocalCluster::create(&spec).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        c.start_all().map_err(|e| e.to_string())?;
        match c.wait_agreed_leader(Duration::from_secs(30)).await {
            Some(_) => samples.push(t0.elapsed().as_secs_f64() * 1000.0),
            None => eprintln!("trial {trial}: no leader within 30 s"),
        }
    }
    let s = summarize(&samples);
    print_summary("start → agreed leader", "ms", &s);
    Ok(
        json!({ "bench": "election", "nodes": nodes, "profile": profile, "ms": s, "samples_ms": samples }),
    )
}

async fn idle(nodes: usize, duration: u64, profile: &str) -> Result<serde_json::Value, String> {
    let mut spec = ClusterSpec::voters(nodes);
    spec.profile = profile.to_string();
    let mut c = LocalCluster::create(&spec).map_err(|e| e.to_string())?;
    c.start_all().map_err(|e| e.to_string())?;
    c.wait_agreed_leader(Duration::from_secs(30))
        .await
        .ok_or("no leader within 30 s")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = c.ids();
    let mut before = Vec::new();
    for id in &ids {
        let pid = c.pid(*id).ok_or("node not running")?;
        let usage = proc_usage(pid).ok_or("cannot read /proc")?;
        let st = c.status(*id).await.ok_or("no status")?;
        before.push((pid, usage, st.counters));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(duration)).await;
    let secs = t0.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    println!(
        "{:<6} {:>10} {:>8} {:>12} {:>12}",
        "node", "RSS MiB", "CPU %", "hb sent/s", "hb recv/s"
    );
    for (i, id) in ids.iter().enumerate() {
        let (pid, (_, cpu0), c0) = &before[i];
        let (rss, cpu1) = proc_usage(*pid).ok_or("cannot read /proc")?;
        let st = c.status(*id).await.ok_or("no status")?;
        let cpu_pct = (cpu1.saturating_sub(*cpu0)).as_secs_f64() / secs * 100.0;
        let sent = (st.counters.heartbeats_sent - c0.heartbeats_sent) as f64 / secs;
        let recv = (st.counters.heartbeats_received - c0.heartbeats_received) as f64 / secs;
        let rss_mib = rss as f64 / (1024.0 * 1024.0);
        println!("{id:<6} {rss_mib:>10.1} {cpu_pct:>8.2} {sent:>12.1} {recv:>12.1}");
        rows.push(json!({ "node": id, "rss_mib": rss_mib, "cpu_percent": cpu_pct, "heartbeats_sent_per_s": sent, "heartbeats_received_per_s": recv }));
    }
    Ok(
        json!({ "bench": "idle", "nodes": nodes, "profile": profile, "seconds": secs, "per_node": rows }),
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Election {
            nodes,
            trials,
            profile,
        } => election(nodes, trials, &profile).await,
        Cmd::Idle {
            nodes,
            duration,
            profile,
        } => idle(nodes, duration, &profile).await,
    };
    match res {
        Ok(v) => {
            if let Some(path) = cli.out {
                if let Err(e) =
                    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default())
                {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
