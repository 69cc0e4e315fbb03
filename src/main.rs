//! The `quorate` command line: the daemon (`run`, `recover`) and the operator's client
//! commands (see `quorate --help`).

use std::process::ExitCode;

use clap::Parser;

use quorate::cli::args::{Cli, Command};

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
    let Cli {
        api,
        ca_file,
        token_file,
        command,
    } = cli;
    rt.block_on(async move {
        match command {
            Command::Run {
                config,
                data_dir,
                log_format,
            } => quorate::daemon::run(config, data_dir, log_format).await,
            Command::Recover {
                config,
                data_dir,
                reseed,
                yes,
                json,
            } => {
                quorate::daemon::reseed::recover_command(&config, data_dir, reseed, yes, json).await
            }
            command => {
                quorate::cli::run(&api, ca_file.as_deref(), token_file.as_deref(), command).await
            }
        }
    })
}
