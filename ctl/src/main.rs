//! nococtl: the operator's command line for noco.

// Output goes through `output::{outln, out, errln}`, never `println!`, which panics when the
// reader of stdout has gone away (`nococtl audit | head -1`).
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod alert;
mod backup;
mod cli;
mod client;
mod commands;
mod config;
mod error;
mod host;
mod logs;
mod output;
mod rollout;
mod stack;
mod status;
mod top;
mod view;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::output::errln;

#[tokio::main]
async fn main() -> ExitCode {
    noco_certs::install_crypto_provider();
    init_logging();
    let cli = Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("nococtl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `NOCO_LOG` (a tracing filter, as for noco-server and noco-agent) turns on logs on stderr:
/// connections, TLS, HTTP/2. Off when it is unset.
fn init_logging() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("NOCO_LOG") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
