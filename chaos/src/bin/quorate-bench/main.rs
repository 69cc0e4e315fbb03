//! `quorate-bench`: one command for every performance claim. Each subcommand prints a table
//! and writes JSON (`--out FILE`). Real processes on 127.0.0.1; nothing here is a test.
//!
//! `QUORATE_BENCH_SECRET=1` gives every bench cluster a cluster secret (sealed heartbeats,
//! Noise-encrypted Raft), to measure the cost of encryption against the plaintext default.
//!
//! Every process a subcommand starts (quorate nodes, CPU hogs) is owned by a guard that kills
//! it by PID when the subcommand returns, on success and on error alike.

mod common;
mod election;
mod failback;
mod failover;
mod false_positives;
mod idle;
mod kv;
mod postgres;
mod postgres_failback;
mod scale;
mod switchover;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::*;
use crate::election::*;
use crate::failback::*;
use crate::failover::*;
use crate::false_positives::*;
use crate::idle::*;
use crate::kv::*;
use crate::postgres::*;
use crate::postgres_failback::*;
use crate::scale::*;
use crate::switchover::*;

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
    /// kill -9 the primary; time each phase until the first acknowledged write on the new one.
    Failover {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "lan")]
        profile: String,
        #[arg(long, default_value_t = 20)]
        trials: usize,
    },
    /// Acknowledged KV writes/s and latency at several client counts; read rates.
    Kv {
        /// Comma-separated client counts.
        #[arg(long, default_value = "1,16,64")]
        clients: String,
        /// Seconds per client count.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 128)]
        value_size: usize,
    },
    /// Planned switchovers with a concurrent writer: the write-unavailability window.
    Switchover {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Writer rate (writes/s) during the measurement.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
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
    /// Failover time and idle cost per node at several cluster sizes.
    Scale {
        /// Comma-separated voter counts (each at least 3).
        #[arg(long, default_value = "3,5,7")]
        nodes: String,
        /// Learners (non-voting members) added to every size.
        #[arg(long, default_value_t = 0)]
        learners: usize,
        /// Failover trials per size.
        #[arg(long, default_value_t = 10)]
        trials: usize,
        /// Idle measurement window per size, in seconds.
        #[arg(long, default_value_t = 20)]
        idle_duration: u64,
        #[arg(long, default_value = "lan")]
        profile: String,
    },
    /// Watch a healthy cluster (optionally under CPU load) for elections and failovers that
    /// should not happen.
    FalsePositives {
        /// Watch window in seconds.
        #[arg(long, default_value_t = 300)]
        duration: u64,
        /// Run one busy-loop process per core during the watch.
        #[arg(long)]
        cpu_load: bool,
        /// Busy-loop processes for --cpu-load (default: one per core; 1 loads one core).
        #[arg(long)]
        hogs: Option<usize>,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "lan")]
        profile: String,
        /// Also run switchovers and supervised failbacks (after a kill -9 of the primary)
        /// back to back during the watch; role changes they do not explain are counted as
        /// unexplained (goal 0).
        #[arg(long)]
        operations: bool,
    },
    /// Failback after N writes made while home was down: time to sync, to commit, end to end.
    Failback {
        /// Comma-separated entry counts written while home is down.
        #[arg(long, default_value = "10000,100000")]
        entries: String,
        /// Trials per entry count (a fresh cluster each).
        #[arg(long, default_value_t = 1)]
        trials: usize,
        #[arg(long, default_value_t = 128)]
        value_size: usize,
    },
    /// A real PostgreSQL 15 cluster (the postgres agent, from empty data dirs): kill -9 of
    /// the primary node -> first committed INSERT on the new primary, then planned
    /// switchovers and their write pause; every acknowledged row is checked at the end.
    /// Needs the postgresql-15 package.
    Postgres {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        #[arg(long, default_value_t = 10)]
        switchovers: usize,
        /// `[postgres] synchronous`: off, quorum or strict.
        #[arg(long, default_value = "quorum")]
        synchronous: String,
        /// Timing: calm (600 ms dead timeout, 1-2 s election timeout, 800 ms lease, as the
        /// PostgreSQL demo), brisk (300 ms dead timeout, 350-600 ms election timeout, 250 ms
        /// lease: sub-second failover, for a release build with cores to spare), or a
        /// profile (lan, fast).
        #[arg(long, default_value = "calm")]
        profile: String,
    },
    /// Failback of a real PostgreSQL 15 cluster as a data operation, once per count of rows
    /// written while home is away: kill -9 of home, the rows on the new primary, home back
    /// (pg_rewind, catch-up), `failback` committed after verify, a writer running all the
    /// time. Prints what the rewind copied against the data dir, the catch-up time, each
    /// phase, the write pause, the final sync's RPO and verify's time. Needs postgresql-15.
    PostgresFailback {
        /// Rows written on the new primary while home is away, one failback per entry.
        #[arg(long, default_value = "10000,100000")]
        rows: String,
        /// Rows in the big table before the first failover.
        #[arg(long, default_value_t = 1_000_000)]
        base_rows: i64,
        /// Timing (see `postgres --profile`).
        #[arg(long, default_value = "calm")]
        profile: String,
    },
    /// Internal: spin on one core until killed (the load of `false-positives --cpu-load`).
    #[command(name = HOG_SUBCOMMAND, hide = true)]
    CpuHog,
}

async fn run(cmd: Cmd) -> Result<serde_json::Value, String> {
    match cmd {
        Cmd::Failover {
            nodes,
            profile,
            trials,
        } => failover(nodes, &profile, trials).await,
        Cmd::Kv {
            clients,
            duration,
            value_size,
        } => kv(&clients, duration, value_size).await,
        Cmd::Switchover { trials, rate } => switchover(trials, rate).await,
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
        Cmd::Scale {
            nodes,
            learners,
            trials,
            idle_duration,
            profile,
        } => scale(&nodes, learners, trials, idle_duration, &profile).await,
        Cmd::FalsePositives {
            duration,
            cpu_load,
            hogs,
            nodes,
            profile,
            operations,
        } => false_positives(duration, cpu_load, hogs, nodes, &profile, operations).await,
        Cmd::Failback {
            entries,
            trials,
            value_size,
        } => failback(&entries, trials, value_size).await,
        Cmd::Postgres {
            trials,
            switchovers,
            synchronous,
            profile,
        } => postgres(trials, switchovers, &synchronous, &profile).await,
        Cmd::PostgresFailback {
            rows,
            base_rows,
            profile,
        } => postgres_failback(&parse_list(&rows, "--rows")?, base_rows, &profile).await,
        Cmd::CpuHog => Err("cpu-hog runs outside the async runtime".into()),
    }
}

/// Runs `work` unless SIGINT or SIGTERM comes first; then `work` is dropped (its processes
/// killed by their guards) and the run ends with an error.
async fn until_interrupted(
    work: impl std::future::Future<Output = Result<serde_json::Value, String>>,
) -> Result<serde_json::Value, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch for SIGINT: {e}"))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
    tokio::select! {
        r = work => r,
        _ = int.recv() => Err("interrupted (SIGINT); every process this run started was killed".into()),
        _ = term.recv() => Err("terminated (SIGTERM); every process this run started was killed".into()),
    }
}

fn main() -> ExitCode {
    let Cli { out, cmd } = Cli::parse();
    if matches!(cmd, Cmd::CpuHog) {
        return cpu_hog();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Every subcommand owns its processes (nodes, hogs) through guards that kill them when
    // dropped: on success, on error, and on SIGINT/SIGTERM, which drop the subcommand here.
    match rt.block_on(until_interrupted(run(cmd))) {
        Ok(v) => {
            if let Some(path) = out {
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
