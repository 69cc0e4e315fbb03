//! The operator's side: client commands that talk to a node's API (`status`, `switchover`,
//! `failback`, `kv`, ...), the offline helpers (`config check`, `secret generate`), the local
//! demo and the local-cluster launcher it shares with the tests, chaos and benchmarks.

pub mod args;
pub mod client;
pub mod demo;
pub mod demo_postgres;
pub mod kv;
pub mod localcluster;
pub mod ops;
pub mod pgcluster;
pub mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::api::wire::NodeStatus;
use crate::config::Config;
use args::{Command, ConfigCommand, FailbackCommand, KvCommand, NodeCommand, OnOff, SecretCommand};
use client::{ApiTarget, Client};
use ops::{run as ops, Op};

/// How long `quorate status` waits for each peer's own status: a dead node must not stall
/// the table.
const PEER_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a client or offline command (everything but `run` and `recover`, which `main` hands
/// to the daemon).
pub async fn run(
    api_addr: &str,
    ca_file: Option<&Path>,
    token_file: Option<&Path>,
    command: Command,
) -> ExitCode {
    // Client commands only: the daemon and the offline tools never read the CLI's token.
    let talks_to_a_node = !matches!(
        command,
        Command::Run { .. }
            | Command::Demo { .. }
            | Command::Config { .. }
            | Command::Recover { .. }
            | Command::Secret { .. }
    );
    let token = match (&token_file, talks_to_a_node) {
        (Some(path), true) => match crate::cli::client::read_token_file(path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
        _ => None,
    };
    let api = if talks_to_a_node {
        match ApiTarget::parse(api_addr, ca_file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        ApiTarget::plain(api_addr)
    };
    match command {
        Command::Run { .. } | Command::Recover { .. } => {
            eprintln!(
                "error: `quorate run` and `quorate recover` are daemon commands, started by main"
            );
            ExitCode::from(2)
        }
        Command::Status { json } => status(&api, token.clone(), json).await,
        Command::Demo { keep, service } => crate::cli::demo::run(keep, service).await,
        Command::Actions { json, limit } => {
            ops(&api, token.clone(), Op::Actions { json, limit }).await
        }
        Command::History { json, limit } => {
            ops(&api, token.clone(), Op::History { json, limit }).await
        }
        Command::Maintenance {
            state,
            reason,
            json,
        } => {
            ops(
                &api,
                token.clone(),
                Op::Maintenance {
                    on: matches!(state, OnOff::On),
                    reason,
                    json,
                },
            )
            .await
        }
        Command::Node { command } => {
            let (node, drained, json) = match command {
                NodeCommand::Drain { id, json } => (id, true, json),
                NodeCommand::Undrain { id, json } => (id, false, json),
            };
            ops(
                &api,
                token.clone(),
                Op::Drain {
                    node,
                    drained,
                    json,
                },
            )
            .await
        }
        Command::Switchover {
            to,
            at,
            cancel,
            yes: _,
            wait,
            json,
        } => {
            ops(
                &api,
                token.clone(),
                Op::Switchover {
                    to,
                    at,
                    cancel,
                    wait,
                    json,
                },
            )
            .await
        }
        Command::Failback {
            command,
            no_commit,
            to,
            yes: _,
            no_wait,
            wait: _,
            json,
        } => {
            let op = match command {
                None => Op::Failback {
                    no_commit,
                    to,
                    wait: !no_wait,
                    json,
                },
                Some(FailbackCommand::Commit { json }) => Op::FailbackCommit { json },
                Some(FailbackCommand::Undo { json }) => Op::FailbackUndo { json },
                Some(FailbackCommand::Status { json }) => Op::FailbackStatus { json },
            };
            ops(&api, token.clone(), op).await
        }
        Command::Kv { command } => crate::cli::kv::run(&api, token.clone(), command.into()).await,
        Command::Config {
            command: ConfigCommand::Check { file, json },
        } => config_check(&file, json),
        Command::Secret {
            command: SecretCommand::Generate { out },
        } => secret_generate(out),
    }
}

fn secret_generate(out: Option<PathBuf>) -> ExitCode {
    use crate::config::secret;
    use std::io::IsTerminal;
    match out {
        Some(path) => match secret::write_new(&path) {
            Ok(()) => {
                eprintln!(
                    "wrote a new cluster secret to {} (mode 0600); copy it to every node and set secret_file",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: cannot create {}: {e}; it must not exist yet (a secret is never overwritten)",
                    path.display()
                );
                ExitCode::from(1)
            }
        },
        None => {
            print!("{}", secret::ClusterSecret::generate().to_text());
            if !std::io::stdout().is_terminal() {
                eprintln!(
                    "note: restrict the file you saved this in with `chmod 600 FILE`: the daemon refuses a secret readable by group or others"
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// The data dir's fsync latency against the lease budget: (a JSON summary, a warning when
/// the disk is too slow for the timings).
fn check_disk(c: &Config) -> (serde_json::Value, Option<crate::config::Problem>) {
    use crate::consensus::disk_probe;
    let budget = c.timing.lease_budget();
    let Some(dir) = disk_probe::probe_dir(&c.data_dir) else {
        return (serde_json::json!({"probed": false}), None);
    };
    match disk_probe::probe(&dir, disk_probe::PROBE_FSYNCS) {
        Ok(r) => {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            let text = format!(
                "disk: fsync p99 {:.2} ms, max {:.2} ms over {} fsyncs in {} (lease budget {} ms)",
                ms(r.p99),
                ms(r.max),
                r.samples,
                dir.display(),
                budget.as_millis()
            );
            let problem = (r.p99 > budget).then(|| crate::config::Problem {
                key: "data_dir".into(),
                message: format!(
                    "fsync p99 {:.1} ms in {} exceeds the lease budget {} ms (lease + lapse grace - raft_heartbeat): followers on this disk will lapse the primary's lease",
                    ms(r.p99),
                    dir.display(),
                    budget.as_millis()
                ),
                fix: "put data_dir on a faster disk (SSD, no shared spinning disk), or raise timing.lease and timing.election_timeout_min".into(),
            });
            (
                serde_json::json!({"probed": true, "dir": dir.display().to_string(), "fsync_p99_ms": ms(r.p99), "fsync_max_ms": ms(r.max), "samples": r.samples, "lease_budget_ms": budget.as_millis() as u64, "text": text}),
                problem,
            )
        }
        Err(e) => (
            serde_json::json!({"probed": false, "dir": dir.display().to_string(), "error": e.to_string()}),
            None,
        ),
    }
}

fn config_check(file: &std::path::Path, json: bool) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            let mut hook_problems = c.check_secrets();
            hook_problems.extend(c.check_hooks());
            let (disk, disk_problem) = check_disk(&c);
            hook_problems.extend(disk_problem);
            if json {
                let v = serde_json::json!({
                    "file": file.display().to_string(),
                    "valid": true,
                    "disk": disk,
                    "warnings": hook_problems.iter().map(|p| serde_json::json!({"key": p.key, "message": p.message, "fix": p.fix})).collect::<Vec<_>>(),
                });
                println!("{v}");
            } else {
                println!("{}: ok ({})", file.display(), c.summary());
                if let Some(d) = disk.get("text").and_then(|t| t.as_str()) {
                    println!("{}: {d}", file.display());
                }
                for p in hook_problems {
                    println!(
                        "warning: {}: {}: {}; fix: {}",
                        file.display(),
                        p.key,
                        p.message,
                        p.fix
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                let v = serde_json::json!({
                    "file": file.display().to_string(),
                    "valid": false,
                    "problems": e.problems.iter().map(|p| serde_json::json!({"key": p.key, "message": p.message, "fix": p.fix})).collect::<Vec<_>>(),
                });
                println!("{v}");
            } else {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}

async fn status(api: &ApiTarget, token: Option<String>, json: bool) -> ExitCode {
    let client = Client::to(api, crate::cli::client::REQUEST_TIMEOUT).with_token(token);
    let local: NodeStatus = match client.get_json("/v1/status").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // Ask every peer too, concurrently, with a short timeout: a dead node must not stall the table.
    let mut fetches = Vec::new();
    for p in &local.peers {
        let c = client.at(&p.api).with_timeout(PEER_STATUS_TIMEOUT);
        fetches.push(tokio::spawn(async move {
            c.get_json::<NodeStatus>("/v1/status").await.ok()
        }));
    }
    let mut all = vec![local.clone()];
    for f in fetches {
        if let Ok(Some(s)) = f.await {
            all.push(s);
        }
    }
    if json {
        let v = serde_json::json!({ "queried": api.to_string(), "nodes": all, "unreachable": local.peers.iter().filter(|p| !all.iter().any(|s| s.node_id == p.id)).map(|p| p.id).collect::<Vec<_>>() });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    print!("{}", crate::cli::table::status_table(&local, &all));
    ExitCode::SUCCESS
}

impl From<KvCommand> for kv::KvOp {
    fn from(c: KvCommand) -> Self {
        use kv::KvOp;
        match c {
            KvCommand::Get { key, stale, json } => KvOp::Get { key, stale, json },
            KvCommand::Put {
                key,
                value,
                if_revision,
                if_epoch,
                json,
            } => KvOp::Put {
                key,
                value,
                if_revision,
                if_epoch,
                json,
            },
            KvCommand::Del {
                key,
                if_revision,
                if_epoch,
                json,
            } => KvOp::Del {
                key,
                if_revision,
                if_epoch,
                json,
            },
            KvCommand::List {
                prefix,
                limit,
                start_after,
                stale,
                json,
            } => KvOp::List {
                prefix,
                limit,
                start_after,
                stale,
                json,
            },
            KvCommand::Watch {
                key,
                revision,
                timeout,
                count,
            } => KvOp::Watch {
                key,
                revision,
                timeout,
                count,
            },
        }
    }
}
