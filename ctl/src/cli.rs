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
use crate::output::{Format, errln};
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
follow until done, --timeout how long to follow, --yes do it without asking, -o/--output table \
or json (but in `backup download`, where -o is the file written, as in curl -o). Durations are seconds (30) or a number \
with a unit (30s, 5m, 1h). Until the next release the previous spellings still work, with a \
warning: --name NAME (give the stack first), --file PATH (--ship), --compose FILE (-f).";

const EXIT_CODES: &str = "Exit codes: 0 success; 1 the server refused or failed the request, or \
something watched or shown failed (status: a failed stack; status -w: also nothing to wait \
for); 2 usage or local problem (no credential, expired certificate, bad arguments); 3 the server \
could not be reached; 130 a watch (-w) or a download interrupted with Ctrl-C. Output into a pipe whose reader has gone away (`nococtl audit | head -1`) \
ends nococtl quietly with 0.";

const LOGGING: &str = "Logging: NOCO_LOG=debug (or a filter like NOCO_LOG=h2=debug,info) prints \
nococtl's connection and TLS logs on stderr; RUST_LOG is not read.";

fn after_help() -> String {
    format!("{GRAMMAR}\n\n{EXIT_CODES}\n\n{LOGGING}")
}

#[derive(Debug, Parser)]
#[command(name = "nococtl", version, about = "Operate a noco fleet: stacks, rollouts, status, logs, metrics (top), backups, alerts, hosts, tokens, operators, audit", after_help = after_help())]
pub struct Cli {
    /// Credential file (default: $XDG_CONFIG_HOME/noco/config.toml or ~/.config/noco/config.toml).
    #[arg(long, global = true, env = "NOCO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server address, overriding the one in the credential (https://host:port).
    #[arg(long, global = true, env = "NOCO_SERVER")]
    pub server: Option<String>,
    /// Output format: table (the default) or json. In `backup download`, the file written
    /// instead (`-` for stdout).
    #[arg(short = 'o', long, global = true, value_name = "FORMAT")]
    pub output: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The output format -o gives (table when left out).
    pub fn format(&self) -> Result<Format, CtlError> {
        parse_format(self.output.as_deref())
    }
}

/// `-o table` or `-o json` (table when left out); anything else is refused naming it, with
/// the nearest format when it is a typo.
pub fn parse_format(text: Option<&str>) -> Result<Format, CtlError> {
    let Some(text) = text else {
        return Ok(Format::Table);
    };
    if let Ok(format) = <Format as clap::ValueEnum>::from_str(text.trim(), true) {
        return Ok(format);
    }
    const FORMATS: [&str; 2] = ["table", "json"];
    let hint = match noco_compose::suggest::did_you_mean(text, FORMATS) {
        Some(hint) => format!(": {hint}"),
        None if text.contains(['.', '/']) || text == "-" => {
            " (only `nococtl backup download ID -o FILE` writes to a file)".to_string()
        }
        None => String::new(),
    };
    Err(CtlError::Local(format!(
        "-o/--output {text:?} is not an output format: give table or json{hint}"
    )))
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
    /// Backups of stacks' databases and volumes: list, make now, show, verify, restore,
    /// download, remove.
    ///
    /// A stack declares its backups in its compose file under `x-noco.backups` (a dump command
    /// run in a service's container, or named volumes; a cron schedule; retention; age
    /// recipients to encrypt to). Each host running the stack makes them on schedule and
    /// uploads them to the server; these commands act on the server's catalog. Roles: a viewer
    /// lists and shows, a deployer runs, verifies, restores and downloads, an admin removes.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Alerts: the server's built-in rules and their state, silences, test notifications.
    ///
    /// Rules and receivers (Slack, ntfy, or Alertmanager-style JSON webhooks) are set in the
    /// server's configuration file under [alerts]. Roles: a viewer lists, a deployer silences
    /// and unsilences, an admin sends test notifications.
    #[command(subcommand)]
    Alert(AlertCmd),
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
    /// pause_after_canary, backup_first}}`, else from the built-in defaults.
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
    /// Each host runs every backup the stack declares (`x-noco.backups`) before its step; a
    /// backup that fails fails the host's step. `rollout status` shows the backups each host
    /// made (restore one with `nococtl backup restore ID`). [default: off]
    #[arg(long, overrides_with = "no_backup_first")]
    pub backup_first: bool,
    /// Do not back up before each step (overrides the compose file's `backup_first: true`).
    #[arg(long, overrides_with = "backup_first")]
    pub no_backup_first: bool,
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

const BACKUP_LS_EXAMPLES: &str = "\
Examples:
  nococtl backup ls --stack shop
  nococtl backup ls --host web-1 --name db -o json";

const BACKUP_RUN_EXAMPLES: &str = "\
Examples:
  nococtl backup run shop/db -w                      # one backup, on every host of the stack
  nococtl backup run shop --host web-1 --host web-2  # every backup of the stack, on two hosts";

const BACKUP_SHOW_EXAMPLES: &str = "\
Examples:
  nococtl backup show shop.db.20240501T030000Z.1a2b3c4d
  nococtl backup show shop.db.20240501T030000Z.1a2b3c4d -o json";

const BACKUP_VERIFY_EXAMPLES: &str = "\
Examples:
  nococtl backup verify shop.db.20240501T030000Z.1a2b3c4d -w
  nococtl backup verify shop.db.20240501T030000Z.1a2b3c4d --host web-2";

const BACKUP_RESTORE_EXAMPLES: &str = "\
Examples:
  nococtl backup restore shop.db.20240501T030000Z.1a2b3c4d -w
  nococtl backup restore shop.db.20240501T030000Z.1a2b3c4d --to-host web-2 --yes -w";

const BACKUP_DOWNLOAD_EXAMPLES: &str = "\
Examples:
  nococtl backup download shop.db.20240501T030000Z.1a2b3c4d -o db.dump --identity key.txt
  nococtl backup download shop.files.20240501T030000Z.5e6f7a8b -o - | tar -tv";

const BACKUP_RM_EXAMPLES: &str = "\
Examples:
  nococtl backup rm shop.db.20240501T030000Z.1a2b3c4d
  nococtl backup rm shop.db.20240501T030000Z.1a2b3c4d --yes";

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// The backup catalog, newest first.
    ///
    /// Columns: ID, STACK, NAME, HOST, TIME (started, or the time a missed backup was
    /// scheduled for), SIZE (the stored archive: compressed, and encrypted when the backup has
    /// recipients; while uploading, how much the server holds), STATE (running,
    /// pending_upload, complete, failed, missed), CHECKSUM (the first 12 hex digits of the
    /// stored archive's sha256), VERIFIED (ok, failed, - for never) and REASON (why it failed
    /// or was missed, or why its latest verify failed).
    #[command(after_long_help = BACKUP_LS_EXAMPLES)]
    Ls {
        /// Only this stack's backups.
        #[arg(long, value_name = "STACK")]
        stack: Option<String>,
        /// Only backups made on this host (name or id).
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// Only backups of this name (its key under x-noco.backups).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Back up now: one backup of a stack (STACK/NAME), or every one it declares (STACK).
    ///
    /// One job per host and backup, on every host the stack is assigned to (or the --host
    /// ones); a job stays pending while its host is offline. Prints the jobs and the backups
    /// they make. With -w, follows them (host, name, phase, percent; redrawn in place on a
    /// terminal, a line per change otherwise) until every one has ended: exit 0 when all
    /// succeeded, 1 when one failed (each failure and its reason on stderr) or --timeout passed
    /// (the jobs go on).
    #[command(
        override_usage = "nococtl backup run <STACK[/NAME]> [--host <HOST>]... [-w] [OPTIONS]",
        after_long_help = BACKUP_RUN_EXAMPLES
    )]
    Run {
        /// The stack, and optionally one of its backups: `shop/db`, or `shop` for all.
        #[arg(value_name = "STACK[/NAME]", value_parser = parse_backup_target)]
        target: BackupTarget,
        /// Only on this host, by name or id (repeatable; default: every host of the stack).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        #[command(flatten)]
        watch: BackupWatch,
    },
    /// One job (a backup run, a restore or a verify): its host, phase, progress and outcome.
    ///
    /// Jobs are what `backup run`, `backup restore` and `backup verify` print; -w follows one
    /// until it ends (exit 0 when it succeeded, 1 when it failed).
    Job {
        /// The job's id (as `backup run`, `restore` or `verify` print it).
        #[arg(value_name = "JOB")]
        id: String,
        #[command(flatten)]
        watch: BackupWatch,
    },
    /// One backup in full, with its manifest.
    ///
    /// Where and when it was made and by what trigger (schedule, manual, rollout), its stored
    /// archive (size, sha256, the age recipients it is encrypted to), its latest verify, and
    /// the manifest the agent wrote: the commands or volumes, and every member with its size
    /// and sha256.
    #[command(after_long_help = BACKUP_SHOW_EXAMPLES)]
    Show {
        /// The backup's full id (as `backup ls` shows it).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Check a backup by restoring it somewhere harmless; the result is recorded.
    ///
    /// A host (the one that made it, or --host) downloads the backup, checks its sha256, and
    /// restores it into scratch volumes, or feeds a dump to the backup's `verify` command,
    /// comparing checksums. Nothing of the stack is touched. The result shows as VERIFIED in
    /// `backup ls` and `backup show`. -w follows the job until it ends: exit 0 when the backup
    /// verified, 1 when it did not.
    #[command(after_long_help = BACKUP_VERIFY_EXAMPLES)]
    Verify {
        /// The backup's full id.
        #[arg(value_name = "ID")]
        id: String,
        /// Verify on this host (name or id; default: the host that made it).
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        #[command(flatten)]
        watch: BackupWatch,
    },
    /// Restore a backup on its host, or on another host running the stack (asks first).
    ///
    /// A volume backup stops the services using its volumes (and those its `stop` names) and
    /// replaces the volumes' content, which is swapped in only once whole: on failure the old
    /// data is kept. A dump backup runs its `restore` command in its service's container with
    /// the dump on stdin. The services are started again after. -w follows the job until it
    /// ends: exit 0 when the restore succeeded, 1 when it failed.
    ///
    /// On a terminal it first asks, saying what it will stop and replace or run
    /// (`restore will stop web on web-1 and replace volume media with backup …; continue?
    /// [y/N]`); --yes does not ask. Without --yes and with stdin not a terminal, it refuses
    /// (exit 2) and changes nothing.
    #[command(after_long_help = BACKUP_RESTORE_EXAMPLES)]
    Restore {
        /// The backup's full id.
        #[arg(value_name = "ID")]
        id: String,
        /// Restore on this host (name or id; default: the host that made it).
        #[arg(long, value_name = "HOST")]
        to_host: Option<String>,
        /// Do not ask before overwriting.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        watch: BackupWatch,
    },
    /// Write a backup's plain archive to a file (-o FILE), for use without noco.
    ///
    /// The plain archive is a tar for a volume backup and the dump itself for a dump backup.
    /// The stored archive is downloaded into a temporary file next to the target and its size
    /// and sha256 checked against the catalog; then, when it is encrypted (it starts with
    /// `age-encryption.org/v1`), it is decrypted with the age identity file --identity, and it
    /// is zstd-decompressed into a second temporary file, which is renamed to the target (mode
    /// 0600) once whole. A failure (a mismatch, a wrong key, Ctrl-C) leaves no file under the
    /// target's name. With -o - the plain archive goes to stdout (not to a terminal), once the
    /// download is checked. A cut connection resumes where it stopped.
    ///
    /// Here -o is the file written, not the output format.
    #[command(
        override_usage = "nococtl backup download <ID> -o <FILE> [--identity <FILE>]",
        after_long_help = BACKUP_DOWNLOAD_EXAMPLES
    )]
    Download {
        /// The backup's full id.
        #[arg(value_name = "ID")]
        id: String,
        /// An age identity file (`AGE-SECRET-KEY-1…` lines, as age-keygen writes them) with
        /// the key of one of the backup's recipients; needed for an encrypted backup.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Remove a backup: its archive and its catalog entry (admin; asks first).
    ///
    /// On a terminal it first asks, naming the backup; --yes does not ask. Without --yes and
    /// with stdin not a terminal, it refuses (exit 2) and removes nothing.
    #[command(after_long_help = BACKUP_RM_EXAMPLES)]
    Rm {
        /// The backup's full id.
        #[arg(value_name = "ID")]
        id: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// What `backup run` backs up: a stack's backup (`shop/db`), or all of them (`shop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTarget {
    pub stack: String,
    /// `None`: every backup the stack declares.
    pub name: Option<String>,
}

/// `STACK/NAME` or `STACK`, refused naming the bad part.
pub fn parse_backup_target(text: &str) -> Result<BackupTarget, String> {
    let (stack, name) = match text.split_once('/') {
        None => (text, None),
        Some((stack, name)) => (stack, Some(name)),
    };
    if stack.is_empty() {
        return Err(format!(
            "{text:?} names no stack: give STACK/NAME (shop/db) or STACK (shop: all its backups)"
        ));
    }
    let Some(name) = name else {
        return Ok(BackupTarget {
            stack: stack.to_string(),
            name: None,
        });
    };
    if name.is_empty() {
        return Err(format!(
            "{text:?}: no backup name after '/': give STACK/NAME (shop/db), or just {stack} for all its backups"
        ));
    }
    if name.contains('/') {
        return Err(format!(
            "{text:?} has more than one '/': give STACK/NAME (shop/db)"
        ));
    }
    if !noco_compose::backups::valid_backup_name(name) {
        return Err(format!(
            "{name:?} (in {text:?}) is not a backup name: letters, digits, '_' and '-', starting with a letter or digit, at most 63"
        ));
    }
    Ok(BackupTarget {
        stack: stack.to_string(),
        name: Some(name.to_string()),
    })
}

/// Following backup jobs until they end.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupWatch {
    /// Follow the jobs (host, name, phase, percent) until they end: exit 0 when all
    /// succeeded, 1 when one failed or --timeout passed. With -o json, the final jobs.
    #[arg(short, long)]
    pub watch: bool,
    /// How long --watch waits (the jobs go on after it).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration::parse)]
    pub timeout: Duration,
}

const ALERT_SILENCE_EXAMPLES: &str = "\
Examples:
  nococtl alert silence host-offline --host web-3 --for 2h --comment \"disk swap\"
  nococtl alert silence stack-unhealthy --stack shop --for 30m";

#[derive(Debug, Subcommand)]
pub enum AlertCmd {
    /// Every rule with its state — ok, pending (holding, not yet for its `for`), firing,
    /// silenced, or off — since when, and the host and stack each alert is about.
    ///
    /// Columns: RULE, STATE, SINCE, SEVERITY, HOST, STACK, SUMMARY. A rule with nothing to
    /// say is one `ok` row; a rule that fires has a row per alert. -o json: the same rows,
    /// with every label and annotation.
    Ls,
    /// Send a test notification to a receiver now and say how it answered (admin).
    Test {
        /// The receiver's name (`[[alerts.receivers]] name = …`).
        #[arg(value_name = "RECEIVER")]
        receiver: String,
    },
    /// Silence a rule's alerts — of one host, of one stack, or all of them — for a while;
    /// prints the silence's id. A silenced alert is shown `silenced` and sends nothing.
    #[command(after_long_help = ALERT_SILENCE_EXAMPLES)]
    Silence {
        /// The rule (`nococtl alert ls` lists them).
        #[arg(value_name = "RULE")]
        rule: String,
        /// Only this host's alerts, by name or id.
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// Only this stack's alerts.
        #[arg(long, value_name = "STACK")]
        stack: Option<String>,
        /// How long: seconds (7200) or with a unit (2h, 7d).
        #[arg(long = "for", value_name = "DURATION", value_parser = duration::parse)]
        duration: Duration,
        /// Why, kept with the silence.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// End a silence now.
    Unsilence {
        /// The silence's id (as `alert silence` printed it).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Silences: those in force, and those that ended within the hour.
    Silences,
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
    fn alert_silence_takes_the_rule_first_and_host_stack_for_as_everywhere() {
        let cli = parse(&[
            "alert",
            "silence",
            "host-offline",
            "--host",
            "web-3",
            "--for",
            "2h",
        ])
        .unwrap();
        let Command::Alert(AlertCmd::Silence {
            rule,
            host,
            stack,
            duration,
            comment,
        }) = cli.command
        else {
            panic!("not alert silence");
        };
        assert_eq!(rule, "host-offline");
        assert_eq!(host.as_deref(), Some("web-3"));
        assert_eq!(stack, None);
        assert_eq!(duration, Duration::from_secs(7200));
        assert_eq!(comment, None);
        assert!(
            parse(&["alert", "silence", "host-offline"]).is_err(),
            "--for is required"
        );
        assert!(parse(&["alert", "silence", "host-offline", "--for", "soon"]).is_err());
        assert!(matches!(
            parse(&["alert", "ls", "-o", "json"]).unwrap().command,
            Command::Alert(AlertCmd::Ls)
        ));
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
        assert_eq!(cli.format().unwrap(), crate::output::Format::Json);
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
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn backup(args: &[&str]) -> Result<(BackupCmd, Option<String>), String> {
        let mut all = vec!["backup"];
        all.extend(args);
        let cli = parse(&all).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Backup(cmd) => Ok((cmd, cli.output)),
            other => Err(format!("not backup: {other:?}")),
        }
    }

    #[test]
    fn backup_run_takes_a_stack_and_maybe_one_of_its_backups() {
        let (cmd, _) =
            backup(&["run", "shop/db", "--host", "web-1", "--host", "web-2", "-w"]).unwrap();
        let BackupCmd::Run {
            target,
            hosts,
            watch,
        } = cmd
        else {
            panic!("not run")
        };
        assert_eq!(
            target,
            BackupTarget {
                stack: "shop".into(),
                name: Some("db".into())
            }
        );
        assert_eq!(hosts, ["web-1", "web-2"]);
        assert!(watch.watch);
        assert_eq!(watch.timeout, Duration::from_secs(3600));
        let (cmd, _) = backup(&["run", "shop", "--timeout", "10m"]).unwrap();
        let BackupCmd::Run { target, watch, .. } = cmd else {
            panic!("not run")
        };
        assert_eq!((target.stack.as_str(), target.name), ("shop", None));
        assert!(!watch.watch);
        assert_eq!(watch.timeout, Duration::from_secs(600));
    }

    #[test]
    fn a_bad_backup_target_is_refused_naming_it() {
        for (arg, reason) in [
            ("shop/", "\"shop/\": no backup name after '/'"),
            ("/db", "\"/db\" names no stack"),
            ("shop/db/x", "\"shop/db/x\" has more than one '/'"),
            ("shop/d b", "\"d b\" (in \"shop/d b\") is not a backup name"),
            (
                "shop/db.1",
                "\"db.1\" (in \"shop/db.1\") is not a backup name",
            ),
        ] {
            let e = backup(&["run", arg]).unwrap_err();
            assert!(e.contains(reason), "{arg}: {e}");
            assert!(e.contains("<STACK[/NAME]>"), "{arg}: {e}");
        }
        assert!(backup(&["run"]).unwrap_err().contains("<STACK[/NAME]>"));
    }

    #[test]
    fn backup_commands_take_the_id_first_and_their_flags() {
        let (cmd, _) =
            backup(&["ls", "--stack", "shop", "--host", "web-1", "--name", "db"]).unwrap();
        let BackupCmd::Ls { stack, host, name } = cmd else {
            panic!("not ls")
        };
        assert_eq!(
            (stack.as_deref(), host.as_deref(), name.as_deref()),
            (Some("shop"), Some("web-1"), Some("db"))
        );
        let (cmd, _) = backup(&["restore", "ID", "--to-host", "web-2", "--yes", "-w"]).unwrap();
        let BackupCmd::Restore {
            id,
            to_host,
            yes,
            watch,
        } = cmd
        else {
            panic!("not restore")
        };
        assert_eq!(
            (id.as_str(), to_host.as_deref(), yes, watch.watch),
            ("ID", Some("web-2"), true, true)
        );
        let (cmd, _) = backup(&["verify", "ID", "--host", "web-3"]).unwrap();
        assert!(matches!(cmd, BackupCmd::Verify { host: Some(h), .. } if h == "web-3"));
        let (cmd, _) = backup(&["rm", "ID"]).unwrap();
        assert!(matches!(cmd, BackupCmd::Rm { yes: false, .. }));
        for args in [
            &["show"][..],
            &["rm"],
            &["restore"],
            &["verify"],
            &["download"],
        ] {
            let e = backup(args).unwrap_err();
            assert!(e.contains("<ID>"), "{args:?}: {e}");
        }
        // --to-host is restore's, --host verify's: one meaning each.
        assert!(backup(&["restore", "ID", "--host", "web-2"]).is_err());
        assert!(backup(&["verify", "ID", "--to-host", "web-2"]).is_err());
    }

    #[test]
    fn o_is_the_format_everywhere_but_the_file_of_backup_download() {
        let (cmd, file) =
            backup(&["download", "ID", "-o", "db.dump", "--identity", "key.txt"]).unwrap();
        let BackupCmd::Download { id, identity } = cmd else {
            panic!("not download")
        };
        assert_eq!(id, "ID");
        assert_eq!(identity, Some(PathBuf::from("key.txt")));
        assert_eq!(file.as_deref(), Some("db.dump"));
        let (_, file) = backup(&["download", "ID", "-o", "-"]).unwrap();
        assert_eq!(file.as_deref(), Some("-"));

        assert_eq!(parse_format(None).unwrap(), Format::Table);
        assert_eq!(parse_format(Some("json")).unwrap(), Format::Json);
        assert_eq!(parse_format(Some("JSON")).unwrap(), Format::Json);
        assert_eq!(parse_format(Some("table")).unwrap(), Format::Table);
        let e = parse_format(Some("jsn")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "-o/--output \"jsn\" is not an output format: give table or json: did you mean \"json\"?"
        );
        let e = parse_format(Some("db.dump")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("(only `nococtl backup download ID -o FILE` writes to a file)"),
            "{e}"
        );
        let e = parse_format(Some("yaml")).unwrap_err();
        assert!(e.to_string().ends_with("give table or json"), "{e}");
        let cli = parse(&["backup", "ls", "-o", "yaml"]).unwrap();
        assert!(cli.format().is_err());
    }

    #[test]
    fn backup_help_says_what_each_command_does_with_examples() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let backup = cli.find_subcommand_mut("backup").unwrap();
        let help = backup.render_long_help().to_string();
        assert!(help.contains("x-noco.backups"), "{help}");
        for (command, texts) in [
            (
                "ls",
                &[
                    "CHECKSUM",
                    "VERIFIED",
                    "REASON",
                    "Examples:\n  nococtl backup ls",
                ][..],
            ),
            (
                "run",
                &[
                    "STACK[/NAME]",
                    "--host <HOST>",
                    "exit 0 when all succeeded",
                    "Examples:",
                ],
            ),
            ("show", &["manifest", "Examples:"]),
            ("verify", &["--host <HOST>", "Examples:"]),
            (
                "restore",
                &["--to-host <HOST>", "--yes", "refuses (exit 2)", "Examples:"],
            ),
            (
                "download",
                &[
                    "-o <FILE>",
                    "--identity <FILE>",
                    "age-encryption.org/v1",
                    "-o -",
                    "Examples:",
                ],
            ),
            ("rm", &["--yes", "admin", "Examples:"]),
        ] {
            let help = backup
                .find_subcommand_mut(command)
                .map(|c| c.render_long_help().to_string())
                .unwrap();
            for text in texts {
                assert!(help.contains(text), "backup {command}: {text}: {help}");
            }
        }
        let start = Cli::command()
            .find_subcommand_mut("rollout")
            .and_then(|r| r.find_subcommand_mut("start"))
            .map(|c| c.render_long_help().to_string())
            .unwrap();
        assert!(
            start.contains("--backup-first") && start.contains("backup_first"),
            "{start}"
        );
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
