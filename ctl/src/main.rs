//! nococtl: the operator's command line for noco.

mod client;
mod commands;
mod config;
mod error;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::output::Format;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 the server refused or failed the request; \
2 usage or local problem (no credential, expired certificate, bad arguments); \
3 the server could not be reached.";

#[derive(Debug, Parser)]
#[command(name = "nococtl", version, about = "Operate a noco fleet: hosts, tokens, operators, audit", after_help = EXIT_CODES)]
pub struct Cli {
    /// Credential file (default: $XDG_CONFIG_HOME/noco/config.toml or ~/.config/noco/config.toml).
    #[arg(long, global = true, env = "NOCO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server address, overriding the one in the credential (https://host:port).
    #[arg(long, global = true, env = "NOCO_SERVER")]
    pub server: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trade a one-time login token (from `nococtl operator add`) for a credential.
    Login {
        /// The login token.
        #[arg(long, env = "NOCO_LOGIN_TOKEN")]
        token: String,
        /// Overwrite an existing credential file.
        #[arg(long)]
        force: bool,
    },
    /// Show who this credential is.
    Whoami,
    /// Join tokens for new hosts.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Enrolled hosts.
    #[command(subcommand)]
    Host(HostCmd),
    /// Operators and their roles (admin, deployer, viewer).
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// Who did what, when: the newest audit records.
    Audit {
        /// How many records (newest last).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a single-use join token; a host enrolled with it gets these labels.
    Create {
        /// Labels for the host, as k=v,k=v.
        #[arg(long, default_value = "")]
        labels: String,
        /// How long the token is valid (at most 30d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A note kept with the token.
        #[arg(long, default_value = "")]
        description: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// List hosts with their status.
    Ls,
    /// Set labels (k=v) and remove labels (k-) on a host.
    Label {
        /// Host name or id.
        host: String,
        /// k=v to set, k- to remove.
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Revoke a host: refused at once, its live session cut. Cannot be undone.
    Revoke {
        /// Host name or id.
        host: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Add an operator; prints the one-time token they use with `nococtl login`.
    Add {
        name: String,
        /// admin, deployer or viewer.
        #[arg(long)]
        role: String,
        /// How long the login token is valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// A new login token for an existing operator (lost or expired credential).
    Token {
        name: String,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// List operators.
    Ls,
    /// Revoke an operator: every certificate they hold is refused from now on.
    Revoke { name: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    noco_certs::install_crypto_provider();
    let cli = Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nococtl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
