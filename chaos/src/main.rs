//! `quorate-chaos`: run a chaos test against a real cluster, or re-check a recorded run.
//! Exit status: 0 PASS, 1 anomalies found (FAIL), 2 the run could not be made or read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use quorate_chaos::checks::{check_dir, print_verdict, Workload};
use quorate_chaos::nemesis::FaultKind;
use quorate_chaos::run::{run, Backend, RunOptions};

#[derive(Parser)]
#[command(
    name = "quorate-chaos",
    about = "Chaos tests for quorate: real processes, real faults, checkers that can fail"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// Processes on 127.0.0.1: kill -9, SIGSTOP/SIGCONT, restart. No root needed.
    Local,
    /// One network namespace per node on a bridge; adds nftables partitions, packet loss
    /// and link down (root, iproute2, nftables).
    Netns,
}

#[derive(Clone, Copy, ValueEnum)]
enum WorkloadArg {
    /// Reads, writes and compare-and-set on a few keys; checked for linearizability.
    Register,
    /// Unique elements appended to per-key lists; checked for loss, duplicates and order.
    Append,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster, run the workload under faults, heal, check; writes DIR.
    Run {
        #[arg(long, value_enum, default_value = "local")]
        backend: BackendArg,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How long the workload and the faults run (e.g. 60s, 2m).
        #[arg(long, default_value = "60s", value_parser = duration)]
        duration: Duration,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Output directory (created; files of an earlier run in it are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated faults: kill, pause, restart, switchover, failback, stall (a
        /// replica stops replicating, then the primary dies: the failover must not pick the
        /// replica that is behind), and with the netns backend partition, loss, link; `all`
        /// is every fault the backend has, `none` no fault.
        #[arg(long, default_value = "all")]
        nemesis: String,
        #[arg(long, value_enum, default_value = "register")]
        workload: WorkloadArg,
        /// Concurrent clients (each a sequential process).
        #[arg(long, default_value_t = 5)]
        clients: usize,
        /// Keys (register) or lists per rotation window (append).
        #[arg(long, default_value_t = 3)]
        keys: usize,
        /// Mean quiet time between faults.
        #[arg(long, default_value = "4s", value_parser = duration)]
        interval: Duration,
        /// Mean length of a kill or pause.
        #[arg(long, default_value = "3s", value_parser = duration)]
        fault_duration: Duration,
        /// Timing profile of the nodes (lan, fast).
        #[arg(long, default_value = "lan")]
        profile: String,
        /// How long the healed cluster may take to agree and catch up.
        #[arg(long, default_value = "30s", value_parser = duration)]
        converge_bound: Duration,
        /// KEY=VALUE set in every node's environment (repeatable), e.g. a test-only fault
        /// switch.
        #[arg(long = "node-env", value_parser = key_value)]
        node_env: Vec<(String, String)>,
        /// The nodes' QUORATE_LOG filter.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// A real PostgreSQL 15 cluster (the postgres agent) under faults with a bank-transfer
    /// workload routed by /primary; checks the total balance, every account against the
    /// transfers, no acknowledged transfer lost (synchronous quorum or strict), one server
    /// per epoch and the epoch order, and convergence after healing. Writes DIR/report.json
    /// and the node logs. Needs the postgresql-15 package.
    Postgres {
        #[arg(long, value_enum, default_value = "local")]
        backend: BackendArg,
        /// How long the workload and the faults run (e.g. 60s, 2m).
        #[arg(long, default_value = "60s", value_parser = duration)]
        duration: Duration,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Output directory (created; files of an earlier run in it are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated faults: kill (quorate and postmaster), pause (the daemon alone:
        /// its PostgreSQL keeps running), restart, switchover, and with the netns backend
        /// partition, loss, link; `all` is every one the backend has, `none` no fault.
        #[arg(long, default_value = "all")]
        nemesis: String,
        /// Concurrent transfer clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Mean quiet time between faults.
        #[arg(long, default_value = "6s", value_parser = duration)]
        interval: Duration,
        /// Mean length of a kill, pause or network fault.
        #[arg(long, default_value = "3s", value_parser = duration)]
        fault_duration: Duration,
        /// Timing of the nodes: calm (600 ms dead timeout, 1-2 s election timeout, 800 ms
        /// lease, as quorate demo --service postgres uses), brisk (300 ms dead timeout,
        /// 350-600 ms election timeout, 250 ms lease), or a profile (lan, fast).
        #[arg(long, default_value = "calm")]
        profile: String,
        /// How long the healed cluster may take to agree and catch up (rewinds included).
        #[arg(long, default_value = "120s", value_parser = duration)]
        converge_bound: Duration,
        /// `[postgres] synchronous`: off, quorum or strict (off: losing acknowledged
        /// transfers is reported, not failed).
        #[arg(long, default_value = "quorum")]
        synchronous: String,
    },
    /// Re-check a recorded run directory (rewrites its summary.json and report.html).
    Check { dir: PathBuf },
}

fn duration(s: &str) -> Result<Duration, String> {
    quorate::config::parse_duration(s)
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn check_and_report(dir: &std::path::Path) -> ExitCode {
    match check_dir(dir) {
        Ok(v) => {
            print_verdict(dir, &v);
            if v.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

struct PostgresArgs {
    backend: BackendArg,
    duration: Duration,
    seed: u64,
    out: PathBuf,
    nemesis: String,
    clients: usize,
    interval: Duration,
    fault_duration: Duration,
    profile: String,
    converge_bound: Duration,
    synchronous: String,
}

async fn postgres_run(a: PostgresArgs) -> ExitCode {
    use quorate_chaos::pgchaos::{run_postgres, supported, PgChaosOptions};
    let backend = match a.backend {
        BackendArg::Local => Backend::Local,
        BackendArg::Netns => Backend::Netns,
    };
    if backend == Backend::Netns {
        if let Err(e) = quorate_chaos::netns::preflight() {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if !["off", "quorum", "strict"].contains(&a.synchronous.as_str()) {
        eprintln!(
            "error: --synchronous {:?}: give off, quorum or strict",
            a.synchronous
        );
        return ExitCode::from(2);
    }
    if a.clients == 0 || a.clients > 64 {
        eprintln!("error: --clients must be 1..=64");
        return ExitCode::from(2);
    }
    let known = supported(backend);
    let kinds: Result<Vec<FaultKind>, String> = match a.nemesis.trim() {
        "all" => Ok(known.clone()),
        "none" => Ok(Vec::new()),
        list => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(FaultKind::parse)
            .collect(),
    };
    let kinds = match kinds {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: --nemesis: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(k) = kinds.iter().find(|k| !known.contains(k)) {
        eprintln!(
            "error: --nemesis {}: the PostgreSQL workload with --backend {} knows {}",
            k.name(),
            backend.name(),
            known
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    }
    let opts = PgChaosOptions {
        backend,
        duration: a.duration,
        seed: a.seed,
        out: a.out,
        nemesis: kinds,
        clients: a.clients,
        interval: a.interval,
        fault_duration: a.fault_duration,
        profile: a.profile,
        converge_bound: a.converge_bound,
        synchronous: a.synchronous,
    };
    let t0 = std::time::Instant::now();
    match run_postgres(&opts).await {
        Ok(r) => {
            println!(
                "{}: {} transfers acknowledged ({} failed or unknown), {} lost; total balance {} (expected {}); {} accounts disagree; {} epochs, {} on several servers, {} out of epoch order; converged: {} {:?}",
                if r.pass { "PASS" } else { "FAIL" },
                r.transfers_acknowledged,
                r.transfers_failed,
                r.lost.len(),
                r.total_balance,
                r.expected_total,
                r.accounts_disagreeing.len(),
                r.epochs_seen,
                r.epochs_on_several_servers.len(),
                r.out_of_epoch_order,
                r.converged,
                r.convergence_problems
            );
            for p in &r.problems {
                println!("problem: {p}");
            }
            eprintln!(
                "[chaos] postgres run took {:.1} s; report in {}/report.json",
                t0.elapsed().as_secs_f64(),
                opts.out.display()
            );
            if r.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { dir } => check_and_report(&dir),
        Cmd::Postgres {
            backend,
            duration,
            seed,
            out,
            nemesis,
            clients,
            interval,
            fault_duration,
            profile,
            converge_bound,
            synchronous,
        } => {
            postgres_run(PostgresArgs {
                backend,
                duration,
                seed,
                out,
                nemesis,
                clients,
                interval,
                fault_duration,
                profile,
                converge_bound,
                synchronous,
            })
            .await
        }
        Cmd::Run {
            backend,
            nodes,
            duration,
            seed,
            out,
            nemesis,
            workload,
            clients,
            keys,
            interval,
            fault_duration,
            profile,
            converge_bound,
            node_env,
            log_level,
        } => {
            let backend = match backend {
                BackendArg::Local => Backend::Local,
                BackendArg::Netns => Backend::Netns,
            };
            if backend == Backend::Netns {
                if let Err(e) = quorate_chaos::netns::preflight() {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            let nemesis = match (nemesis.trim(), backend) {
                ("all", Backend::Local) => {
                    "kill,pause,restart,switchover,failback,stall".to_string()
                }
                ("all", Backend::Netns) => {
                    "kill,pause,restart,switchover,failback,stall,partition,loss,link".to_string()
                }
                (other, _) => other.to_string(),
            };
            if !(1..=quorate_chaos::netns::MAX_NODES as usize).contains(&nodes)
                || clients == 0
                || clients > 64
            {
                eprintln!("error: --nodes must be 1..=9 and --clients 1..=64");
                return ExitCode::from(2);
            }
            let kinds: Result<Vec<FaultKind>, String> = nemesis
                .split(',')
                .filter(|s| !s.trim().is_empty() && s.trim() != "none")
                .map(FaultKind::parse)
                .collect();
            let kinds = match kinds {
                Ok(k) if backend == Backend::Local && k.iter().any(|k| k.needs_network()) => {
                    eprintln!("error: --nemesis partition, loss and link need --backend netns");
                    return ExitCode::from(2);
                }
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: --nemesis: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = RunOptions {
                backend,
                nodes,
                duration,
                seed,
                out,
                nemesis: kinds,
                workload: match workload {
                    WorkloadArg::Register => Workload::Register,
                    WorkloadArg::Append => Workload::Append,
                },
                clients,
                keys,
                interval,
                fault_duration,
                profile,
                node_env,
                converge_bound,
                log_level,
            };
            let t0 = std::time::Instant::now();
            match run(&opts).await {
                Ok(dir) => {
                    let code = check_and_report(&dir);
                    eprintln!(
                        "[chaos] run + check took {:.1} s",
                        t0.elapsed().as_secs_f64()
                    );
                    code
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
