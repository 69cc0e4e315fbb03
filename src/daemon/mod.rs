//! The daemon (`quorate run`): assembles a node, runs it until a signal or a dead control
//! loop, reloads on SIGHUP, hands over on SIGTERM. Nothing imports this module but `main`.
//!
//! - `assembly`: builds and starts every part of a node (Raft, heartbeats, hooks, API) and
//!   stops it gracefully;
//! - `executor`: the only place that turns the policy's decisions into IO;
//! - `loops`: the small background loops (bootstrap, KV limits, early elections);
//! - `reseed`: `quorate recover` and the catch-up watcher of a re-seeded node;
//! - `reload`: SIGHUP;
//! - `systemd`, `failstop`: readiness, watchdog and fail-stop exits.

pub mod assembly;
pub mod executor;
pub mod failstop;
pub mod loops;
pub mod reload;
pub mod reseed;
pub mod systemd;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::logging::LogFormat;

/// Logs go to journald under systemd (`$JOURNAL_STREAM` names the journal on stderr), with
/// the node's fields as journal fields; otherwise to stderr, human or JSON.
/// Changes the daemon's log filter at runtime (SIGHUP).
pub(crate) type LogReload =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The filter the daemon logs with: `QUORATE_LOG` when set in its environment, else the
/// config's `[log] level`.
pub(crate) fn log_filter(config_level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
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
            crate::config::defaults::LOG_LEVEL
        );
        tracing_subscriber::EnvFilter::new(crate::config::defaults::LOG_LEVEL)
    });
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() && matches!(format, LogFormat::Human) {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry
                .with(crate::logging::RateLimited::new(
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
        // openraft's per-heartbeat WARN floods are rate-limited (see crate::logging).
        LogFormat::Json => registry
            .with(crate::logging::RateLimited::new(fmt.json()))
            .try_init(),
        LogFormat::Human => registry
            .with(crate::logging::RateLimited::new(fmt))
            .try_init(),
    };
    done.ok().map(|_| handle)
}

pub async fn run(path: PathBuf, data_dir: Option<PathBuf>, format: LogFormat) -> ExitCode {
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
    failstop::log_panics();
    let span = tracing::info_span!("node", id = config.node.id);
    let _enter = span.enter();
    let mut running = match assembly::RunningNode::start(config.clone()).await {
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
                    // Fail-stop (see daemon::failstop): exit now, without the graceful
                    // hand-over that needs the very loop that is gone.
                    tracing::error!("{died}");
                    std::process::exit(i32::from(failstop::EXIT_EXECUTOR_DIED));
                }
            },
        };
        match signal {
            Signal::Stop => break,
            Signal::Reload => {
                let outcome = reload::reload(&path, &mut config, &running, log_reload.as_ref());
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
