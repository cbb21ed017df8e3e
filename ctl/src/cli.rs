//! nococtl's command line as clap parses it, and the one grammar every command shares
//! ([`GRAMMAR`]). Raw arguments ([`StackArgs`], the stack name of `stack apply`) become what the
//! commands use ([`StackSource`], a name) in one place, which also accepts the spellings of the
//! previous release with a warning on stderr: `--name` (now the first argument), `--file` (now
//! `--ship`), `--compose` (now `-f/--compose-file`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use noco_proto::selector::Selector;

use crate::error::CtlError;
use crate::output::errln;
use crate::{commands, logs, rollout};
use noco_proto::duration;

/// The grammar, as `--help` shows it (README.md's "Command grammar" says the same).
pub const GRAMMAR: &str = "\
Command grammar: nococtl <noun> <verb> [NAME] [flags]. The thing acted on is the first \
argument: the stack (nococtl stack apply shop -f compose.yaml; rollout start shop -f …; \
stack diff shop -f …; status shop), the host, the operator. Every flag means one thing in \
every command: -f/--compose-file the compose file (but in `logs`, where -f is --follow as in \
docker logs), --env-file a variables file, --ship PATH a file shipped with the stack \
(repeatable), --selector which hosts, --host a host by name or id (repeatable), -w/--watch \
follow until done, --timeout how long to follow, -o/--output table or json. Durations are seconds (30) or a number \
with a unit (30s, 5m, 1h). Until the next release the previous spellings still work, with a \
warning: --name NAME (give the stack first), --file PATH (--ship), --compose FILE (-f).";

const EXIT_CODES: &str = "Exit codes: 0 success; 1 the server refused or failed the request, or \
something watched or shown failed (status: a failed stack; status -w: also nothing to wait \
for); 2 usage or local problem (no credential, expired certificate, bad arguments); 3 the server \
could not be reached. Output into a pipe whose reader has gone away (`nococtl audit | head -1`) \
ends nococtl quietly with 0.";

const LOGGING: &str = "Logging: NOCO_LOG=debug (or a filter like NOCO_LOG=h2=debug,info) prints \
nococtl's connection and TLS logs on stderr; RUST_LOG is not read.";

fn after_help() -> String {
    format!("{GRAMMAR}\n\n{EXIT_CODES}\n\n{LOGGING}")
}

#[derive(Debug, Parser)]
#[command(name = "nococtl", version, about = "Operate a noco fleet: stacks, rollouts, status, logs, metrics (top), hosts, tokens, operators, audit", after_help = after_help())]
pub struct Cli {
    /// Credential file (default: $XDG_CONFIG_HOME/noco/config.toml or ~/.config/noco/config.toml).
    #[arg(long, global = true, env = "NOCO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server address, overriding the one in the credential (https://host:port).
    #[arg(long, global = true, env = "NOCO_SERVER")]
    pub server: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: crate::output::Format,
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
        /// Only records of the last DURATION (`90` seconds, `10m`, `24h`).
        #[arg(long, value_parser = duration::parse)]
        since: Option<std::time::Duration>,
        /// Only this action (`stack.apply`), or every action under a prefix ending in '.'
        /// (`stack.`, `rollout.`).
        #[arg(long)]
        action: Option<String>,
        /// Only calls by this caller (an operator's or host's name or id).
        #[arg(long)]
        caller: Option<String>,
    },
    /// Stacks: compose files assigned to the hosts a label selector matches.
    #[command(subcommand)]
    Stack(StackCmd),
    /// Hosts × stacks: the revision each host runs, its state, health and errors.
    ///
    /// Exits 1 when a stack failed or was refused on an online host (0 otherwise).
    Status {
        /// Only this stack.
        #[arg(value_name = "STACK")]
        stack: Option<String>,
        /// Redraw every second until every assigned stack on every online host is converged and
        /// healthy (exit 0), or one fails or is refused (exit 1), or --timeout passes (exit 1).
        /// Exits 1 at once when there is nothing to wait for: no host has the stack (its
        /// selector matches none), or every host that has it is offline.
        #[arg(short, long)]
        watch: bool,
        /// How long --watch waits.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration::parse)]
        timeout: Duration,
    },
    /// Rollouts: move a stack to a new revision host by host (canary, then batches), each
    /// host gated on the health of every service, with automatic rollback on failure.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Container logs of a stack or of hosts, as `docker compose logs` prints them:
    /// `HOST SERVICE-N | line`.
    ///
    /// Lines are bytes, as the containers wrote them. Into a pipe or a file (not a terminal)
    /// they are written unchanged, so `nococtl logs shop > file` keeps every byte. On a
    /// terminal, control characters (escape sequences included; tab is kept) are shown
    /// escaped (`\x1b[31m`) and bytes that are not UTF-8 as `\xNN`, and the prefix is coloured
    /// per container (not with NO_COLOR set). A line the agent cut ends with
    /// `… [noco: N bytes cut]`; noco's own markers (lines an agent lost) read
    /// `-- noco: … --`; when this reader falls behind and the server skips lines, stderr says
    /// how many. Ctrl-C ends --follow quietly (exit 0); so does a pipe closed early (`| head`).
    ///
    /// -o json: one JSON object per line (JSON Lines), every key always present: time (RFC
    /// 3339, nanoseconds), time_unix_ns, host, host_id, seq, stack, service, number, container,
    /// container_id, stream (stdout, stderr, noco), line (UTF-8, invalid bytes replaced by
    /// U+FFFD), invalid_utf8 (true or false), truncated, dropped, skipped.
    #[command(override_usage = "nococtl logs [STACK] [--host HOST]... [OPTIONS]")]
    Logs(LogsArgs),
    /// Hosts' latest metrics (CPU, memory, load, fullest disk, network, containers), or with
    /// --stack the stack's containers (CPU, memory, network, block I/O, restarts, pids).
    ///
    /// On a terminal the table is redrawn in place every 2 seconds until Ctrl-C; with -o json,
    /// or into a pipe or a file, it is printed once.
    Top {
        /// The containers of this stack (else the hosts).
        #[arg(long, value_name = "STACK")]
        stack: Option<String>,
        /// Only this host, by name or id (repeatable).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
}

/// `logs`: which lines, and how they are shown.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogsArgs {
    /// The stack whose containers' logs are shown (else give --host).
    #[arg(value_name = "STACK")]
    pub stack: Option<String>,
    /// Only this host, by name or id (repeatable); without a stack, every container of it.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only this compose service (repeatable).
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Only lines since then: a duration ago (`90` seconds, `10m`, `2h`) or an RFC 3339 time
    /// (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`).
    #[arg(long, value_name = "DURATION|RFC3339", value_parser = logs::parse_since)]
    pub since: Option<logs::Since>,
    /// At most the last N lines of each container (default: every line the server holds).
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Keep printing new lines as they come, until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines matching this regular expression (matched on the server, against the
    /// line's bytes).
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
    /// Print lines without the `HOST SERVICE-N | ` prefix.
    #[arg(long)]
    pub no_prefix: bool,
    /// Print each line's time (RFC 3339 with nanoseconds, when Docker received it) before it.
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

/// The compose file and what goes with it, as given on the command line (see [`StackSource`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StackArgs {
    /// The compose file.
    #[arg(
        short = 'f',
        long = "compose-file",
        value_name = "COMPOSE_FILE",
        required_unless_present = "legacy_compose"
    )]
    pub compose_file: Option<PathBuf>,
    /// Deprecated spelling of -f/--compose-file.
    #[arg(
        long = "compose",
        value_name = "COMPOSE_FILE",
        hide = true,
        conflicts_with = "compose_file"
    )]
    pub legacy_compose: Option<PathBuf>,
    /// Variables for interpolation, `.env` syntax; repeatable, later files win. Sent with the
    /// stack (the server masks their values when showing them).
    #[arg(long = "env-file", value_name = "PATH")]
    pub env_files: Vec<PathBuf>,
    /// A file shipped with the stack (repeatable), relative to the compose file's directory
    /// and sent with that path; on the hosts relative bind mounts resolve to it. The mode is
    /// the local file's permission bits.
    #[arg(long = "ship", value_name = "PATH")]
    pub ship: Vec<String>,
    /// Deprecated spelling of --ship.
    #[arg(long = "file", value_name = "PATH", hide = true)]
    pub legacy_files: Vec<String>,
}

/// The compose file and what goes with it, read from this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSource {
    /// The compose file.
    pub compose: PathBuf,
    /// `--env-file`s, in order.
    pub env_files: Vec<PathBuf>,
    /// `--ship` paths, as given.
    pub files: Vec<String>,
}

impl StackArgs {
    /// The source the commands use, with a warning on stderr for each deprecated spelling.
    pub fn source(self) -> Result<StackSource, CtlError> {
        let (source, warnings) = self.resolve()?;
        warn(&warnings);
        Ok(source)
    }

    /// The source, and a warning for each deprecated spelling used.
    pub fn resolve(self) -> Result<(StackSource, Vec<String>), CtlError> {
        let mut warnings = Vec::new();
        let compose = match (self.compose_file, self.legacy_compose) {
            (Some(file), _) => file,
            (None, Some(file)) => {
                warnings.push(deprecated(
                    "--compose",
                    &format!("-f/--compose-file {}", file.display()),
                ));
                file
            }
            (None, None) => {
                return Err(CtlError::Local(
                    "no compose file: give it with -f/--compose-file PATH".into(),
                ));
            }
        };
        let mut files = self.ship;
        if !self.legacy_files.is_empty() {
            let as_ship: Vec<String> = self
                .legacy_files
                .iter()
                .map(|f| format!("--ship {f}"))
                .collect();
            warnings.push(deprecated("--file", &as_ship.join(" ")));
            files.extend(self.legacy_files);
        }
        Ok((
            StackSource {
                compose,
                env_files: self.env_files,
                files,
            },
            warnings,
        ))
    }
}

/// `nococtl: warning: …` on stderr, for each warning.
pub fn warn(warnings: &[String]) {
    for w in warnings {
        errln!("nococtl: warning: {w}");
    }
}

/// `--file is deprecated and goes away in the next release: use --ship nginx.conf`.
fn deprecated(old: &str, instead: &str) -> String {
    format!("{old} is deprecated and goes away in the next release: use {instead}")
}

/// The stack a command acts on: the first argument, or (deprecated) `--name`.
pub fn stack_name(
    stack: Option<String>,
    legacy_name: Option<String>,
    command: &str,
) -> Result<(String, Vec<String>), CtlError> {
    match (stack, legacy_name) {
        (Some(stack), None) => Ok((stack, Vec::new())),
        (Some(stack), Some(name)) if stack == name => Ok((stack, Vec::new())),
        (Some(stack), Some(name)) => Err(CtlError::Local(format!(
            "two stack names, {stack} and --name {name}: give the stack once, as the first argument"
        ))),
        (None, Some(name)) => {
            let warning = deprecated(
                "--name",
                &format!("the stack as the first argument: nococtl {command} {name} -f …"),
            );
            Ok((name, vec![warning]))
        }
        (None, None) => Err(CtlError::Local(format!(
            "which stack? give it as the first argument: nococtl {command} STACK -f …"
        ))),
    }
}

#[derive(Debug, Subcommand)]
pub enum StackCmd {
    /// Create or update a stack: validated here first, then stored as a new revision and
    /// pushed to every host the selector matches.
    #[command(
        override_usage = "nococtl stack apply <STACK> -f <COMPOSE_FILE> [--selector <SELECTOR>] [OPTIONS]"
    )]
    Apply {
        /// The stack's name (also the compose project name on the hosts).
        #[arg(value_name = "STACK", required_unless_present = "legacy_name")]
        stack: Option<String>,
        /// Deprecated: the stack's name (give it as the first argument).
        #[arg(long = "name", value_name = "STACK", hide = true)]
        legacy_name: Option<String>,
        #[command(flatten)]
        source: StackArgs,
        /// Label selector, `role=web,env!=dev`, `host=web-1`, `key`, `!key` or `*`. Required for
        /// a new stack; omitted, an existing stack keeps its selector.
        #[arg(long, value_parser = Selector::parse)]
        selector: Option<Selector>,
        /// Validate on the server and show the revision and hosts without storing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// List stacks with their current revision and how many hosts run it healthy.
    Ls,
    /// A stack's compose file, variables (values masked), files and revision history.
    Show {
        #[arg(value_name = "STACK")]
        stack: String,
        /// A revision from the history, in full or its first hex digits (default: the current one).
        #[arg(long)]
        revision: Option<String>,
    },
    /// What applying a compose file would change in a stack's current revision, per service,
    /// and which services would be recreated.
    ///
    /// Both compose files are loaded here with the local --env-file variables and --ship
    /// files: the server masks variable values and does not send file contents, so the
    /// current revision is interpolated with the local values too, and masked values never
    /// show up as changes. Variable and file names that were added or removed are listed.
    #[command(override_usage = "nococtl stack diff <STACK> -f <COMPOSE_FILE> [OPTIONS]")]
    Diff {
        /// The stack to compare with.
        #[arg(value_name = "STACK")]
        stack: String,
        #[command(flatten)]
        source: StackArgs,
    },
    /// Remove a stack from every host it runs on. Its volumes are kept on the hosts.
    Rm {
        #[arg(value_name = "STACK")]
        stack: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Start a rollout of a new revision: the stack is read and validated here as by
    /// `stack apply`, then the server updates its hosts step by step.
    ///
    /// Settings not given as flags come from the compose file's top-level
    /// `x-noco: {rollout: {canary, batch, min_healthy, deadline, max_failures, auto_rollback,
    /// pause_after_canary}}`, else from the built-in defaults.
    #[command(override_usage = "nococtl rollout start <STACK> -f <COMPOSE_FILE> [OPTIONS]")]
    Start {
        /// The stack (it must exist: create it with `nococtl stack apply`).
        #[arg(value_name = "STACK")]
        stack: String,
        #[command(flatten)]
        source: StackArgs,
        #[command(flatten)]
        settings: RolloutFlags,
        #[command(flatten)]
        watch: RolloutWatch,
    },
    /// The stack's active rollout, else its latest one: steps, hosts and the last events.
    Status {
        #[arg(value_name = "STACK")]
        stack: String,
        #[command(flatten)]
        watch: RolloutWatch,
    },
    /// Pause the active rollout: hosts in flight finish, no new step starts.
    Pause {
        #[arg(value_name = "STACK")]
        stack: String,
    },
    /// Resume a paused rollout.
    Resume {
        #[arg(value_name = "STACK")]
        stack: String,
    },
    /// Abort the active rollout: it stops at once and leaves every host as it is.
    Abort {
        #[arg(value_name = "STACK")]
        stack: String,
    },
    /// Roll the stack back to its previous revision, as a rollout (compose defaults do not
    /// apply: the flags, else the built-in defaults).
    Undo {
        #[arg(value_name = "STACK")]
        stack: String,
        #[command(flatten)]
        settings: RolloutFlags,
        #[command(flatten)]
        watch: RolloutWatch,
    },
    /// The stack's rollouts, newest first.
    History {
        #[arg(value_name = "STACK")]
        stack: String,
    },
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
    /// host for its update to succeed: seconds (30) or with a unit (30s, 5m). [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub min_healthy: Option<Duration>,
    /// How long a step may take; its hosts not healthy by then count as failed: seconds (300)
    /// or with a unit (5m). [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
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
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = duration::parse)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a single-use join token; a host enrolled with it gets these labels.
    Create {
        /// Labels for the host, as k=v,k=v.
        #[arg(long, default_value = "")]
        labels: String,
        /// How long the token is valid (at most 30d): seconds (3600) or with a unit (1h).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration::parse)]
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
    /// One host: facts, labels, its stacks as it reports them, its latest metrics.
    Show {
        /// Host name or id.
        host: String,
        /// Also the metrics history the server keeps (CPU, memory, load over time).
        #[arg(long)]
        history: bool,
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
        /// How long the login token is valid: seconds (86400) or with a unit (24h).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = duration::parse)]
        ttl: Duration,
    },
    /// A new login token for an existing operator (lost or expired credential).
    Token {
        name: String,
        /// How long the login token is valid: seconds (86400) or with a unit (24h).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = duration::parse)]
        ttl: Duration,
    },
    /// List operators.
    Ls,
    /// Revoke an operator: every certificate they hold is refused from now on.
    Revoke { name: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nococtl").chain(args.iter().copied()))
    }

    /// `stack apply …` resolved as the command does: the stack, its source, the warnings.
    fn apply(args: &[&str]) -> Result<(String, StackSource, Vec<String>, String), String> {
        let mut all = vec!["stack", "apply"];
        all.extend(args);
        let cli = parse(&all).map_err(|e| e.to_string())?;
        let Command::Stack(StackCmd::Apply {
            stack,
            legacy_name,
            source,
            selector,
            ..
        }) = cli.command
        else {
            return Err("not stack apply".into());
        };
        let (name, mut warnings) =
            stack_name(stack, legacy_name, "stack apply").map_err(|e| e.to_string())?;
        let (source, more) = source.resolve().map_err(|e| e.to_string())?;
        warnings.extend(more);
        let selector = selector.map(|s| s.to_string()).unwrap_or_default();
        Ok((name, source, warnings, selector))
    }

    fn source(compose: &str, files: &[&str]) -> StackSource {
        StackSource {
            compose: PathBuf::from(compose),
            env_files: vec![],
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn the_stack_comes_first_and_f_is_the_compose_file() {
        let (name, src, warnings, selector) = apply(&[
            "shop",
            "-f",
            "compose.yaml",
            "--ship",
            "nginx.conf",
            "--ship",
            "app.env",
            "--selector",
            "role=web",
        ])
        .unwrap();
        assert_eq!(name, "shop");
        assert_eq!(src, source("compose.yaml", &["nginx.conf", "app.env"]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(selector, "role=web");
        // Flags may come first, and -f has its long name.
        let (name, src, _, _) = apply(&["--compose-file", "c.yaml", "shop"]).unwrap();
        assert_eq!((name.as_str(), src), ("shop", source("c.yaml", &[])));
    }

    #[test]
    fn every_stack_command_takes_the_stack_first_and_f_for_the_compose_file() {
        for args in [
            &["stack", "diff", "shop", "-f", "c.yaml", "--ship", "x.conf"][..],
            &[
                "rollout", "start", "shop", "-f", "c.yaml", "--ship", "x.conf",
            ],
        ] {
            let cli = parse(args).unwrap();
            let (stack, raw) = match cli.command {
                Command::Stack(StackCmd::Diff { stack, source }) => (stack, source),
                Command::Rollout(RolloutCmd::Start { stack, source, .. }) => (stack, source),
                other => panic!("{other:?}"),
            };
            assert_eq!(stack, "shop");
            let (src, warnings) = raw.resolve().unwrap();
            assert_eq!(src, source("c.yaml", &["x.conf"]), "{args:?}");
            assert!(warnings.is_empty());
        }
    }

    #[test]
    fn the_previous_spellings_work_with_a_warning_each() {
        let (name, src, warnings, _) = apply(&[
            "-f",
            "compose.yaml",
            "--name",
            "shop",
            "--file",
            "nginx.conf",
            "--ship",
            "app.env",
        ])
        .unwrap();
        assert_eq!(name, "shop");
        assert_eq!(src, source("compose.yaml", &["app.env", "nginx.conf"]));
        assert_eq!(
            warnings,
            [
                "--name is deprecated and goes away in the next release: use the stack as the first argument: nococtl stack apply shop -f …",
                "--file is deprecated and goes away in the next release: use --ship nginx.conf",
            ]
        );
        let (_, src, warnings, _) = apply(&["shop", "--compose", "old.yaml"]).unwrap();
        assert_eq!(src, source("old.yaml", &[]));
        assert_eq!(
            warnings,
            [
                "--compose is deprecated and goes away in the next release: use -f/--compose-file old.yaml"
            ]
        );
        // The same name twice is one name, without a warning about it.
        let (name, _, warnings, _) = apply(&["shop", "--name", "shop", "-f", "c.yaml"]).unwrap();
        assert_eq!(name, "shop");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_missing_or_doubled_stack_or_compose_file_is_a_usage_error() {
        let e = apply(&["-f", "c.yaml"]).unwrap_err();
        assert!(e.contains("<STACK>"), "{e}");
        let e = apply(&["shop"]).unwrap_err();
        assert!(e.contains("--compose-file"), "{e}");
        let e = apply(&["shop", "--name", "other", "-f", "c.yaml"]).unwrap_err();
        assert!(e.contains("two stack names, shop and --name other"), "{e}");
        let e = apply(&["shop", "-f", "a.yaml", "--compose", "b.yaml"]).unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
        // --name belongs to stack apply only; --file and --name are not spellings of anything
        // in rollout start.
        assert!(parse(&["rollout", "start", "shop", "-f", "c.yaml", "--name", "x"]).is_err());
    }

    #[test]
    fn a_selector_that_cannot_match_is_refused_at_parse_with_the_reason() {
        for (selector, reason) in [
            ("role==web", "== is not an operator here: write role=web"),
            ("=web", "no label key before the operator"),
            ("role=", "no value after =: write role=VALUE"),
        ] {
            let e = apply(&["shop", "-f", "c.yaml", "--selector", selector]).unwrap_err();
            assert!(e.contains(reason), "{selector}: {e}");
        }
        let (_, _, _, selector) =
            apply(&["shop", "-f", "c.yaml", "--selector", " role=web, env!=dev "]).unwrap();
        assert_eq!(selector, "role=web, env!=dev");
    }

    #[test]
    fn every_duration_flag_takes_seconds_or_a_unit() {
        let cli = parse(&[
            "rollout",
            "start",
            "shop",
            "-f",
            "c.yaml",
            "--min-healthy",
            "30",
            "--deadline",
            "5m",
            "--timeout",
            "3600",
        ])
        .unwrap();
        let Command::Rollout(RolloutCmd::Start {
            settings, watch, ..
        }) = cli.command
        else {
            panic!("not rollout start")
        };
        assert_eq!(settings.min_healthy, Some(Duration::from_secs(30)));
        assert_eq!(settings.deadline, Some(Duration::from_secs(300)));
        assert_eq!(watch.timeout, Duration::from_secs(3600));
        for args in [
            &["token", "create", "--ttl", "5x"][..],
            &["operator", "add", "a", "--role", "viewer", "--ttl", "5x"],
            &["operator", "token", "a", "--ttl", "5x"],
            &["status", "--timeout", "5x"],
            &["rollout", "undo", "shop", "--deadline", "5x"],
            &["rollout", "status", "shop", "--timeout", "5x"],
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(
                e.contains("\"5x\" is not a duration: use seconds (30) or a unit (30s, 5m, 1h)"),
                "{args:?}: {e}"
            );
        }
    }

    fn logs(args: &[&str]) -> Result<LogsArgs, String> {
        let mut all = vec!["logs"];
        all.extend(args);
        match parse(&all).map_err(|e| e.to_string())?.command {
            Command::Logs(args) => Ok(args),
            other => Err(format!("not logs: {other:?}")),
        }
    }

    #[test]
    fn logs_takes_a_stack_hosts_services_and_how_to_show_them() {
        let a = logs(&[
            "shop",
            "--host",
            "web-1",
            "--host",
            "web-2",
            "--service",
            "api",
            "--since",
            "10m",
            "--tail",
            "50",
            "-f",
            "--grep",
            "err(or)?",
            "--no-prefix",
            "-t",
        ])
        .unwrap();
        assert_eq!(a.stack.as_deref(), Some("shop"));
        assert_eq!(a.hosts, ["web-1", "web-2"]);
        assert_eq!(a.services, ["api"]);
        assert_eq!(a.since, Some(logs::Since::Ago(Duration::from_secs(600))));
        assert_eq!(a.tail, Some(50));
        assert!(a.follow && a.no_prefix && a.timestamps);
        assert_eq!(a.grep.as_deref(), Some("err(or)?"));
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = logs::request(&a, now).unwrap();
        assert_eq!(r.since_unix_ms, 1_700_000_000_000 - 600_000);
        assert_eq!((r.tail, r.follow, r.grep.as_str()), (50, true, "err(or)?"));

        let a = logs(&[
            "--follow",
            "--timestamps",
            "--since",
            "2023-11-14T22:13:20Z",
            "shop",
        ])
        .unwrap();
        assert!(a.follow && a.timestamps);
        let r = logs::request(&a, now).unwrap();
        assert_eq!(r.since_unix_ms, 1_700_000_000_000);
        assert_eq!((r.tail, r.grep.as_str(), r.hosts.len()), (0, "", 0));

        // A host alone is enough.
        let r = logs::request(&logs(&["--host", "web-1"]).unwrap(), now).unwrap();
        assert_eq!(
            (r.stack.as_str(), r.hosts.as_slice()),
            ("", &["web-1".to_string()][..])
        );
    }

    #[test]
    fn logs_without_a_stack_or_a_host_is_refused_asking_for_one() {
        let a = logs(&["--service", "api"]).unwrap();
        let e = logs::request(&a, std::time::SystemTime::now()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("give a stack (nococtl logs STACK) or a host"),
            "{e}"
        );
        let e = logs(&["shop", "--since", "yesterday"]).unwrap_err();
        assert!(e.contains("\"yesterday\" is neither a duration"), "{e}");
        let e = logs(&["shop", "--tail", "many"]).unwrap_err();
        assert!(e.contains("--tail"), "{e}");
        // -f is --follow here, never a compose file.
        assert!(logs(&["shop", "-f", "compose.yaml"]).is_err());
    }

    #[test]
    fn top_and_host_show_parse() {
        let cli = parse(&["top", "--stack", "shop", "--host", "web-1", "-o", "json"]).unwrap();
        assert_eq!(cli.output, crate::output::Format::Json);
        let Command::Top { stack, hosts } = cli.command else {
            panic!("not top")
        };
        assert_eq!(
            (stack.as_deref(), hosts.as_slice()),
            (Some("shop"), &["web-1".to_string()][..])
        );
        let Command::Top { stack, hosts } = parse(&["top"]).unwrap().command else {
            panic!("not top")
        };
        assert!(stack.is_none() && hosts.is_empty());
        let Command::Host(HostCmd::Show { host, history }) =
            parse(&["host", "show", "web-1", "--history"])
                .unwrap()
                .command
        else {
            panic!("not host show")
        };
        assert_eq!((host.as_str(), history), ("web-1", true));
        assert!(parse(&["host", "show"]).is_err());
    }

    #[test]
    fn logs_help_says_lines_are_bytes_written_unchanged_into_a_pipe() {
        use clap::CommandFactory;
        let help = Cli::command()
            .find_subcommand_mut("logs")
            .map(|c| c.render_long_help().to_string())
            .unwrap();
        for text in [
            "written unchanged",
            "escaped",
            "JSON Lines",
            "invalid_utf8 (true or false)",
            "--follow",
            "--since <DURATION|RFC3339>",
        ] {
            assert!(help.contains(text), "{text}: {help}");
        }
        let top = Cli::command().render_long_help().to_string();
        assert!(top.contains("logs") && top.contains("top"), "{top}");
    }

    #[test]
    fn help_documents_the_grammar_and_hides_the_old_spellings() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Command grammar"), "{help}");
        let apply = Cli::command()
            .find_subcommand_mut("stack")
            .and_then(|s| s.find_subcommand_mut("apply"))
            .map(|c| c.render_long_help().to_string())
            .unwrap();
        assert!(apply.contains("--compose-file <COMPOSE_FILE>"), "{apply}");
        assert!(apply.contains("--ship <PATH>"), "{apply}");
        assert!(
            !apply.contains("--name") && !apply.contains("--file "),
            "{apply}"
        );
    }
}
