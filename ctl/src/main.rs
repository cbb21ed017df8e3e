//! nococtl: the operator's command line for noco.

// Output goes through `output::{outln, out, errln}`, never `println!`, which panics when the
// reader of stdout has gone away (`nococtl audit | head -1`).
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod client;
mod commands;
mod config;
mod error;
mod output;
mod rollout;
mod stack;
mod status;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::output::{Format, errln};

const EXIT_CODES: &str = "Exit codes: 0 success; 1 the server refused or failed the request; \
2 usage or local problem (no credential, expired certificate, bad arguments); \
3 the server could not be reached. Output into a pipe whose reader has gone away \
(`nococtl audit | head -1`) ends nococtl quietly with 0.";

#[derive(Debug, Parser)]
#[command(name = "nococtl", version, about = "Operate a noco fleet: stacks, rollouts, status, hosts, tokens, operators, audit", after_help = EXIT_CODES)]
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
    /// The key the server signs desired state with.
    #[command(subcommand)]
    SigningKey(SigningKeyCmd),
    /// Who did what, when: the newest audit records.
    Audit {
        /// How many records (newest last).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Stacks: compose files assigned to the hosts a label selector matches.
    #[command(subcommand)]
    Stack(StackCmd),
    /// Hosts × stacks: the revision each host runs, its state, health and errors.
    Status {
        /// Only this stack.
        stack: Option<String>,
        /// Redraw every second until every assigned stack on every online host is converged and
        /// healthy (exit 0), or one fails or is refused (exit 1), or --timeout passes (exit 1).
        #[arg(short, long)]
        watch: bool,
        /// How long --watch waits.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Rollouts: move a stack to a new revision host by host (canary, then batches), each
    /// host gated on the health of every service, with automatic rollback on failure.
    #[command(subcommand)]
    Rollout(RolloutCmd),
}

/// The compose file and what goes with it, read from this machine.
#[derive(Debug, Clone, clap::Args)]
pub struct StackSource {
    /// The compose file.
    #[arg(short = 'f', long = "compose", value_name = "COMPOSE_FILE")]
    pub compose: PathBuf,
    /// Variables for interpolation, `.env` syntax; repeatable, later files win. Sent with the
    /// stack (the server masks their values when showing them).
    #[arg(long = "env-file", value_name = "PATH")]
    pub env_files: Vec<PathBuf>,
    /// A file shipped with the stack (repeatable), relative to the compose file's directory
    /// and sent with that path; on the hosts relative bind mounts resolve to it. The mode is
    /// the local file's permission bits.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum StackCmd {
    /// Create or update a stack: validated here first, then stored as a new revision and
    /// pushed to every host the selector matches.
    Apply {
        #[command(flatten)]
        source: StackSource,
        /// The stack's name (also the compose project name on the hosts).
        #[arg(long)]
        name: String,
        /// Label selector, `role=web,env!=dev` or `host=web-1`. Required for a new stack;
        /// omitted, an existing stack keeps its selector.
        #[arg(long)]
        selector: Option<String>,
        /// Validate on the server and show the revision and hosts without storing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// List stacks with their current revision and how many hosts run it healthy.
    Ls,
    /// A stack's compose file, variables (values masked), files and revision history.
    Show {
        name: String,
        /// A revision from the history, in full or its first hex digits (default: the current one).
        #[arg(long)]
        revision: Option<String>,
    },
    /// What applying a compose file would change in a stack's current revision, per service.
    ///
    /// Both compose files are loaded here with the local --env-file variables and --file
    /// files: the server masks variable values and does not send file contents, so the
    /// current revision is interpolated with the local values too, and masked values never
    /// show up as changes. Variable and file names that were added or removed are listed.
    Diff {
        #[command(flatten)]
        source: StackSource,
        /// The stack to compare with.
        name: String,
    },
    /// Remove a stack from every host it runs on. Its volumes are kept on the hosts.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Start a rollout of a new revision: the stack is read and validated here as by
    /// `stack apply`, then the server updates its hosts step by step.
    ///
    /// Settings not given as flags come from the compose file's top-level
    /// `x-noco: {rollout: {canary, batch, min_healthy, deadline, max_failures, auto_rollback,
    /// pause_after_canary}}`, else from the built-in defaults.
    Start {
        /// The stack (it must exist: create it with `nococtl stack apply`).
        stack: String,
        #[command(flatten)]
        source: StackSource,
        #[command(flatten)]
        settings: RolloutFlags,
        #[command(flatten)]
        watch: RolloutWatch,
    },
    /// The stack's active rollout, else its latest one: steps, hosts and the last events.
    Status {
        stack: String,
        #[command(flatten)]
        watch: RolloutWatch,
    },
    /// Pause the active rollout: hosts in flight finish, no new step starts.
    Pause { stack: String },
    /// Resume a paused rollout.
    Resume { stack: String },
    /// Abort the active rollout: it stops at once and leaves every host as it is.
    Abort { stack: String },
    /// Roll the stack back to its previous revision, as a rollout (compose defaults do not
    /// apply: the flags, else the built-in defaults).
    Undo {
        stack: String,
        #[command(flatten)]
        settings: RolloutFlags,
        #[command(flatten)]
        watch: RolloutWatch,
    },
    /// The stack's rollouts, newest first.
    History { stack: String },
}

/// How a rollout proceeds. Each setting left out comes from the compose file's
/// `x-noco.rollout` (start only), else from the built-in default shown.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RolloutFlags {
    /// Hosts in the canary step, updated first and alone; 0 for none. [default: 1]
    #[arg(long, value_name = "N")]
    pub canary: Option<u32>,
    /// Hosts per batch after the canary: a count (`2`) or a percentage of all the rollout's
    /// hosts (`25%`). [default: 25%]
    #[arg(long, value_name = "N|N%", value_parser = rollout::settings::parse_batch)]
    pub batch: Option<rollout::settings::Batch>,
    /// How long every service must stay healthy (or running, without a healthcheck) on a
    /// host for its update to succeed. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub min_healthy: Option<Duration>,
    /// How long a step may take; its hosts not healthy by then count as failed. [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// How many hosts may fail before the rollout stops. [default: 0]
    #[arg(long, value_name = "N")]
    pub max_failures: Option<u32>,
    /// When the rollout stops on failures, move every host it changed back to the previous
    /// revision. [default: off]
    #[arg(long, overrides_with = "no_auto_rollback")]
    pub auto_rollback: bool,
    /// Do not roll back automatically (overrides the compose file's `auto_rollback: true`).
    #[arg(long, overrides_with = "auto_rollback")]
    pub no_auto_rollback: bool,
    /// Pause after the canary step until `nococtl rollout resume`. [default: off]
    #[arg(long, overrides_with = "no_pause_after_canary")]
    pub pause_after_canary: bool,
    /// Do not pause after the canary (overrides the compose file's `pause_after_canary: true`).
    #[arg(long, overrides_with = "pause_after_canary")]
    pub no_pause_after_canary: bool,
}

/// Following a rollout until it ends.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutWatch {
    /// Redraw every second until the rollout ends: exit 0 when it succeeded, 1 when it failed,
    /// was rolled back or aborted, or --timeout passed.
    #[arg(short, long)]
    pub watch: bool,
    /// How long --watch waits.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
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
pub enum SigningKeyCmd {
    /// Make a new signing key and introduce it to every agent, signed by the current key; agents
    /// reconnect once and from then on accept states signed by the new key. Agents that were
    /// away catch up through the chain of earlier rotations when they return.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Add an operator; prints the one-time token they use with `nococtl login`.
    Add {
        name: String,
        /// admin, deployer or viewer.
        #[arg(long, value_parser = commands::parse_role)]
        role: noco_proto::v1::Role,
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
            errln!("nococtl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
