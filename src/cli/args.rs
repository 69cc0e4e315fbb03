//! The command line's shape (clap): global options, commands and their flags. `main` parses
//! it, runs `run` and `recover` in the daemon and everything else in [`crate::cli::run`].

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::logging::LogFormat;

/// The API address client commands talk to unless `--api` / `QUORATE_API` says otherwise.
pub const DEFAULT_API: &str = "127.0.0.1:7401";

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
pub struct Cli {
    /// API address of the node to talk to (client commands): HOST:PORT, http://HOST:PORT
    /// or https://HOST:PORT (nodes with `[api] tls_cert_file`). A bare HOST:PORT means
    /// https when --ca-file is given.
    #[arg(long, global = true, env = "QUORATE_API", default_value = DEFAULT_API, value_name = "ADDR")]
    pub api: String,

    /// PEM file with the CA certificate that signed the nodes' API certificates (or the
    /// nodes' shared certificate): the only certificates trusted for https:// (no system
    /// roots; pass /etc/ssl/certs/ca-certificates.crt to trust those).
    #[arg(long, global = true, env = "QUORATE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// File holding the node's API admin token, sent as `Authorization: Bearer` (mutating
    /// commands need it; reads too on nodes with `[api] protect_reads`). The token is the
    /// node's `[api] token_file`, by default `<data_dir>/api.token`. Without this flag (or
    /// QUORATE_TOKEN_FILE) the CLI reads no token at all.
    #[arg(long, global = true, env = "QUORATE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// List the agent actions the queried node ran on its service (newest last): start,
    /// promote, demote, follow, rejoin, fence, stop, with their outcomes. Monitor and notify
    /// runs are not kept (their counters are in /metrics). Ask another node with --api.
    Actions {
        #[arg(long)]
        json: bool,
        /// Show at most this many actions (the node keeps the last 64).
        #[arg(long, default_value_t = 20)]
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
    /// entries and bytes, the catch-up rate and the time left; then the `[resource]
    /// snapshot` action, when configured, takes a protective snapshot on the current primary:
    /// a failed snapshot aborts with nothing moved) → CuttingOver (writes paused, final sync,
    /// demote, leadership transfer, promote on home) → Verifying (home's monitor must pass
    /// verify_checks times within verify_timeout, then the `[resource] verify` action, when
    /// configured, checks home's data) → committed, or AwaitingCommit with --no-commit or
    /// `[failback] commit = "manual"`. A failed verification undoes the failback on its own
    /// and says why. The command follows the phases until the failback ends or awaits commit
    /// (exit 0), or was undone, aborted or cancelled (exit 1, with the reason); --no-wait
    /// returns once the cluster accepted it.
    Failback {
        #[command(subcommand)]
        command: Option<FailbackCommand>,
        /// Stop in AwaitingCommit after verification (then `failback commit` or `undo`).
        #[arg(long)]
        no_commit: bool,
        /// Return the primary to node N instead of the recorded home (any eligible voter:
        /// a rebuilt machine with a new id). On commit N is where the primary stays; the
        /// cluster no longer counts as failed over.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
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
        /// The protected service: filedb (a file-backed toy, nothing to install) or
        /// postgres (three PostgreSQL 15 instances from empty data dirs: bootstrap, a
        /// writer, kill -9 failover with the lost-commit count, rewind, failback).
        #[arg(long, value_enum, default_value_t = crate::cli::demo::DemoService::Filedb)]
        service: crate::cli::demo::DemoService,
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
pub enum SecretCommand {
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
pub enum ConfigCommand {
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
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
pub enum NodeCommand {
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
pub enum FailbackCommand {
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
pub enum KvCommand {
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
