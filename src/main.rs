//! The `quorate` command line: the daemon (`run`) and the operator's client commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use quorate::api::status::NodeStatus;
use quorate::cli_ops::{run as ops, Op};
use quorate::client::{ApiTarget, Client};
use quorate::config::Config;

const DEFAULT_API: &str = "127.0.0.1:7401";
/// How long `quorate status` waits for each peer's own status: a dead node must not stall
/// the table.
const PEER_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Parser)]
#[command(
    name = "quorate",
    version,
    about = "High-availability cluster manager: Raft-agreed primary, fencing, supervised failback",
    long_about = "quorate runs one daemon per node. The nodes exchange UDP heartbeats, agree through Raft on \
which node is the primary, run your hooks to promote and demote the protected service, fail over on their \
own, and bring the primary home only under your supervision.\n\n\
Start a node with `quorate run --config FILE`; inspect it with `quorate status`."
)]
struct Cli {
    /// API address of the node to talk to (client commands): HOST:PORT, http://HOST:PORT
    /// or https://HOST:PORT (nodes with `[api] tls_cert_file`). A bare HOST:PORT means
    /// https when --ca-file is given.
    #[arg(long, global = true, env = "QUORATE_API", default_value = DEFAULT_API, value_name = "ADDR")]
    api: String,

    /// PEM file with the CA certificate that signed the nodes' API certificates (or the
    /// nodes' shared certificate): the only certificates trusted for https:// (no system
    /// roots; pass /etc/ssl/certs/ca-certificates.crt to trust those).
    #[arg(long, global = true, env = "QUORATE_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// File holding the node's API admin token, sent as `Authorization: Bearer` (mutating
    /// commands need it; reads too on nodes with `[api] protect_reads`). The token is the
    /// node's `[api] token_file`, by default `<data_dir>/api.token`. Without this flag (or
    /// QUORATE_TOKEN_FILE) the CLI reads no token at all.
    #[arg(long, global = true, env = "QUORATE_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon for one node (foreground; stops gracefully on SIGTERM/SIGINT).
    Run {
        /// The node's TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Override the config's data_dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Show every node: role, Raft state, term, heartbeat state and lag.
    Status {
        /// Print the raw status documents as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the cluster's role changes and operations (newest last).
    History {
        #[arg(long)]
        json: bool,
        /// Show at most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Freeze (on) or resume (off) automatic promote/demote/fence cluster-wide.
    Maintenance {
        #[arg(value_enum)]
        state: OnOff,
        /// Why (shown in status and history).
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Take a node out of candidacy (moving the primary away first) or put it back.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Planned move of the primary to another node, with no acknowledged write lost.
    Switchover {
        /// Target node (default: the best candidate).
        #[arg(long)]
        to: Option<u64>,
        /// Run at this time (RFC 3339, e.g. 2026-11-22T03:00:00Z) instead of now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Cancel a scheduled switchover.
        #[arg(long, conflicts_with_all = ["to", "at"])]
        cancel: bool,
        /// Do not ask for confirmation (the CLI never prompts; accepted for scripts).
        #[arg(long)]
        yes: bool,
        /// Wait until the switchover has finished.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Supervised return of the primary to its home node after a failover.
    ///
    /// Phases: Syncing (home catches up; a progress line shows how far behind it is in
    /// entries and bytes, the catch-up rate and the time left) → CuttingOver (writes paused,
    /// final sync, demote, leadership transfer, promote on home) → Verifying (home's monitor
    /// must pass verify_checks times within verify_timeout) → committed, or AwaitingCommit
    /// with --no-commit or `[failback] commit = "manual"`. A failed verification undoes the
    /// failback on its own and says why. The command follows the phases until the failback
    /// ends or awaits commit; --no-wait returns once the cluster accepted it.
    Failback {
        #[command(subcommand)]
        command: Option<FailbackCommand>,
        /// Stop in AwaitingCommit after verification (then `failback commit` or `undo`).
        #[arg(long)]
        no_commit: bool,
        #[arg(long)]
        yes: bool,
        /// Return once the cluster accepted the failback, without following its phases.
        #[arg(long)]
        no_wait: bool,
        /// Follow the phases (the default; kept for scripts written against older versions).
        #[arg(long, hide = true, conflicts_with = "no_wait")]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Start a local 3-node cluster, fail it over, fail it back, print the timings.
    Demo {
        /// Leave the cluster running at the end and print how to talk to it.
        #[arg(long)]
        keep: bool,
    },
    /// Read and write the replicated key-value store.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check a stopped node's Raft data (log and snapshot) and, with --reseed, re-seed the
    /// node from its peers.
    ///
    /// Run it with the daemon stopped (it takes the data dir's lock). Without --reseed it only
    /// reads: it decodes every log entry and verifies the snapshot's checksum, and exits 0 when
    /// both are sound, 1 when something is damaged (naming the file and the problem).
    ///
    /// --reseed --yes moves the log and the snapshot into <data_dir>/recovered-<time>/ (nothing
    /// is deleted), keeps the node's last vote when it is readable, and marks the node as
    /// re-seeding: on its next start it takes the whole log from the leader, and until it has
    /// caught up it neither votes nor campaigns (an empty log could otherwise help elect a
    /// leader that lacks committed entries). Re-seed one node at a time, and only while the
    /// other members of a quorum are healthy: they hold the data this node gets back.
    Recover {
        /// The node's TOML config file (its data_dir is checked).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Override the config's data_dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Move the Raft data aside and re-seed this node from its peers at its next start.
        #[arg(long)]
        reseed: bool,
        /// Confirm --reseed (required: re-seeding discards this node's copy of the log).
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cluster secret tools (the secret authenticates and encrypts all cluster traffic).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Print a new random cluster secret (32 bytes as hex) on stdout.
    ///
    /// Every node of a cluster needs the same secret, in a file only the daemon's user may
    /// read: `quorate secret generate > /etc/quorate/secret && chmod 600 /etc/quorate/secret`
    /// (the daemon refuses a secret readable by group or others), or use --out, which creates
    /// the file with mode 0600. Set `secret_file` in every node's config. To rotate, set
    /// `secret_file` to the new file and `previous_secret_file` to the old one on every node
    /// (rolling restart), then remove `previous_secret_file` (rolling restart).
    Generate {
        /// Create FILE (mode 0600, never overwriting) instead of printing.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a node's config file; exits 0 when valid, 1 with every problem otherwise.
    Check {
        /// The TOML file to check.
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Take node ID out of candidacy (the primary moves away first if it is there).
    Drain {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Make node ID a candidate again.
    Undrain {
        id: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FailbackCommand {
    /// End a failback waiting in AwaitingCommit: home stays primary.
    Commit {
        #[arg(long)]
        json: bool,
    },
    /// Switch back to the previous primary and return to FailedOver.
    Undo {
        #[arg(long)]
        json: bool,
    },
    /// Show the failback state: failed over?, phase, what it waits for.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KvCommand {
    /// Print a key's value (linearizable unless --stale).
    Get {
        key: String,
        /// Read this node's local state (may be behind the leader).
        #[arg(long)]
        stale: bool,
        /// Print the whole record as JSON (value, encoding, revisions).
        #[arg(long)]
        json: bool,
    },
    /// Write a key. The value comes from the argument, or from stdin when omitted.
    Put {
        key: String,
        value: Option<String>,
        /// Compare-and-set: only if the key's mod revision is N (0 = the key must not exist).
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
        /// Fencing guard: only if the committed epoch is E.
        #[arg(long, value_name = "E")]
        if_epoch: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a key.
    Del {
        key: String,
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
        #[arg(long, value_name = "E")]
        if_epoch: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List keys under a prefix (one page; use --start-after to continue).
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        start_after: Option<String>,
        #[arg(long)]
        stale: bool,
        #[arg(long)]
        json: bool,
    },
    /// Wait for a key to change after a revision and print it; repeats --count times.
    Watch {
        key: String,
        /// Start after this mod revision (default: the key's current one).
        #[arg(long)]
        revision: Option<u64>,
        /// Longest wait per round, e.g. 30s.
        #[arg(long, default_value = "30s")]
        timeout: String,
        /// Stop after this many changes (0 = forever).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Logs go to journald under systemd (`$JOURNAL_STREAM` names the journal on stderr), with
/// the node's fields as journal fields; otherwise to stderr, human or JSON.
/// Changes the daemon's log filter at runtime (SIGHUP).
type LogReload =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The filter the daemon logs with: `QUORATE_LOG` when set in its environment, else the
/// config's `[log] level`.
fn log_filter(config_level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    match std::env::var("QUORATE_LOG") {
        Ok(v) if !v.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(&v)
            .map_err(|e| format!("QUORATE_LOG={v:?} is not a log filter: {e}")),
        _ => tracing_subscriber::EnvFilter::try_new(config_level)
            .map_err(|e| format!("[log] level {config_level:?} is not a log filter: {e}")),
    }
}

/// Logs go to journald under systemd (JOURNAL_STREAM set) with structured fields, else to
/// stderr as text or JSON. The filter sits behind a reload handle for SIGHUP.
fn init_logging(format: LogFormat, config_level: &str) -> Option<LogReload> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(config_level).unwrap_or_else(|e| {
        eprintln!(
            "warning: {e}; logging at {}",
            quorate::config::defaults::LOG_LEVEL
        );
        tracing_subscriber::EnvFilter::new(quorate::config::defaults::LOG_LEVEL)
    });
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() && matches!(format, LogFormat::Human) {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry
                .with(quorate::logging::RateLimited::new(
                    journald.with_syslog_identifier("quorate".into()),
                ))
                .try_init();
            return Some(handle);
        }
    }
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let done = match format {
        // openraft's per-heartbeat WARN floods are rate-limited (see quorate::logging).
        LogFormat::Json => registry
            .with(quorate::logging::RateLimited::new(fmt.json()))
            .try_init(),
        LogFormat::Human => registry
            .with(quorate::logging::RateLimited::new(fmt))
            .try_init(),
    };
    done.ok().map(|_| handle)
}

fn main() -> ExitCode {
    // Behave like a Unix tool when piped into `head`: die quietly on a closed stdout.
    // SAFETY: resetting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> ExitCode {
    // Client commands only: the daemon and the offline tools never read the CLI's token.
    let talks_to_a_node = !matches!(
        cli.command,
        Command::Run { .. }
            | Command::Demo { .. }
            | Command::Config { .. }
            | Command::Recover { .. }
            | Command::Secret { .. }
    );
    let token = match (&cli.token_file, talks_to_a_node) {
        (Some(path), true) => match quorate::client::read_token_file(path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
        _ => None,
    };
    let api = if talks_to_a_node {
        match ApiTarget::parse(&cli.api, cli.ca_file.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        ApiTarget::plain(&cli.api)
    };
    match cli.command {
        Command::Run {
            config,
            data_dir,
            log_format,
        } => run_daemon(config, data_dir, log_format).await,
        Command::Status { json } => status(&api, token.clone(), json).await,
        Command::Demo { keep } => quorate::demo::run(keep).await,
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
            yes: _,
            no_wait,
            wait: _,
            json,
        } => {
            let op = match command {
                None => Op::Failback {
                    no_commit,
                    wait: !no_wait,
                    json,
                },
                Some(FailbackCommand::Commit { json }) => Op::FailbackCommit { json },
                Some(FailbackCommand::Undo { json }) => Op::FailbackUndo { json },
                Some(FailbackCommand::Status { json }) => Op::FailbackStatus { json },
            };
            ops(&api, token.clone(), op).await
        }
        Command::Kv { command } => quorate::cli_kv::run(&api, token.clone(), command.into()).await,
        Command::Config {
            command: ConfigCommand::Check { file, json },
        } => config_check(&file, json),
        Command::Recover {
            config,
            data_dir,
            reseed,
            yes,
            json,
        } => recover(&config, data_dir, reseed, yes, json).await,
        Command::Secret {
            command: SecretCommand::Generate { out },
        } => secret_generate(out),
    }
}

fn secret_generate(out: Option<PathBuf>) -> ExitCode {
    use quorate::config::secret;
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

async fn run_daemon(path: PathBuf, data_dir: Option<PathBuf>, format: LogFormat) -> ExitCode {
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid config\n{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(d) = data_dir {
        config.data_dir = d;
    }
    let log_reload = init_logging(format, &config.log.level);
    quorate::failstop::log_panics();
    let span = tracing::info_span!("node", id = config.node.id);
    let _enter = span.enter();
    let mut running = match quorate::node::RunningNode::start(config.clone()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(mut signals) = Signals::install() else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        std::future::pending::<()>().await;
        return ExitCode::from(1);
    };
    loop {
        let signal = tokio::select! {
            s = signals.next() => s,
            ended = running.executor_ended() => match ended {
                Ok(()) => Signal::Stop,
                Err(died) => {
                    // Fail-stop (see quorate::failstop): exit now, without the graceful
                    // hand-over that needs the very loop that is gone.
                    tracing::error!("{died}");
                    std::process::exit(i32::from(quorate::failstop::EXIT_EXECUTOR_DIED));
                }
            },
        };
        match signal {
            Signal::Stop => break,
            Signal::Reload => {
                let outcome = reload(&path, &mut config, &running, log_reload.as_ref());
                running
                    .node
                    .record_reload(format!("{} at unix ms {}", outcome, unix_ms()));
            }
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    ExitCode::SUCCESS
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// SIGHUP: re-reads the config file and applies what may change at runtime (the log filter
/// and the hook settings), or refuses the whole reload, saying why. The daemon goes on with
/// its running settings either way. Returns the outcome in one line (also logged).
fn reload(
    path: &std::path::Path,
    running_config: &mut Config,
    running: &quorate::node::RunningNode,
    log_reload: Option<&LogReload>,
) -> String {
    let mut new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "reload refused, nothing applied: the config file is invalid; fix it and send SIGHUP again (`systemctl reload quorate`): {e}"
            );
            tracing::error!("{msg}");
            return msg;
        }
    };
    // A --data-dir override stays in force.
    new.data_dir = running_config.data_dir.clone();
    let plan = match quorate::config::reload::plan(running_config, &new) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.to_string();
            tracing::error!("{msg}");
            return msg;
        }
    };
    if plan.changed.is_empty() {
        let msg = "reload: nothing changed".to_string();
        tracing::info!("{msg}");
        return msg;
    }
    let new_filter = if plan.changed.contains(&"log.level") {
        match log_filter(&new.log.level) {
            Ok(f) => Some(f),
            Err(e) => {
                let msg = format!("reload refused, nothing applied: {e}");
                tracing::error!("{msg}");
                return msg;
            }
        }
    } else {
        None
    };
    if let Err(msg) = running.node.reload_hooks(&new) {
        tracing::error!("{msg}");
        return msg;
    }
    if let (Some(filter), Some(handle)) = (new_filter, log_reload) {
        if let Err(e) = handle.reload(filter) {
            tracing::error!("reload: the log filter could not be changed: {e}");
        }
    }
    *running_config = new;
    let msg = format!("reloaded: {}", plan.changed.join(", "));
    tracing::info!("{msg}");
    msg
}

enum Signal {
    Stop,
    Reload,
}

/// SIGTERM/SIGINT stop the daemon gracefully; SIGHUP reloads.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Some(Signals {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

async fn recover(
    file: &std::path::Path,
    data_dir: Option<PathBuf>,
    reseed: bool,
    yes: bool,
    json: bool,
) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid config\n{e}");
            return ExitCode::from(1);
        }
    };
    let dir_path = data_dir.unwrap_or(config.data_dir.clone());
    if reseed && !yes {
        eprintln!(
            "error: --reseed discards this node's copy of the Raft log (it is moved aside, not \
             deleted) and makes the node take everything from its peers; add --yes to confirm"
        );
        return ExitCode::from(2);
    }
    let dir = match quorate::datadir::DataDir::open_locked(&dir_path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let report = quorate::recover::check(&dir).await;
    let moved = if reseed {
        match quorate::recover::reseed(&dir).await {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    if json {
        let v = serde_json::json!({
            "check": report,
            "healthy": report.healthy(),
            "reseeded": moved.as_ref().map(|p| p.display().to_string()),
        });
        println!("{v}");
    } else {
        for (name, part) in [("log", &report.log), ("snapshot", &report.snapshot)] {
            println!(
                "{name:<9} {} {}: {}",
                if part.ok { "ok     " } else { "DAMAGED" },
                part.path,
                part.detail
            );
        }
        if let Some(v) = &report.vote {
            println!("vote      {v}");
        }
        if report.reseeding {
            println!("note: a re-seed was already under way (the RESEEDING marker exists)");
        }
        match &moved {
            Some(p) => println!(
                "re-seeded: the old data is in {}; start the daemon (`systemctl start quorate`): \
                 it takes the log from the leader and votes again once it has caught up",
                p.display()
            ),
            None if !report.healthy() => println!(
                "next: with the other nodes healthy, run `quorate recover --config {} --reseed --yes`, \
                 then start the daemon",
                file.display()
            ),
            None => println!("the Raft data is sound; nothing to do"),
        }
    }
    if moved.is_some() || report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The data dir's fsync latency against the lease budget: (a JSON summary, a warning when
/// the disk is too slow for the timings).
fn check_disk(c: &Config) -> (serde_json::Value, Option<quorate::config::Problem>) {
    use quorate::disk_probe;
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
            let problem = (r.p99 > budget).then(|| quorate::config::Problem {
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
    let client = Client::to(api, quorate::client::REQUEST_TIMEOUT).with_token(token);
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
    print!("{}", quorate::cli_table::status_table(&local, &all));
    ExitCode::SUCCESS
}

impl From<KvCommand> for quorate::cli_kv::KvOp {
    fn from(c: KvCommand) -> Self {
        use quorate::cli_kv::KvOp;
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
