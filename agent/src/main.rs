//! noco-agent: the command line. `enroll` joins this host to a server; `run` keeps it there.

// Output goes through `noco_agent::{outln, errln}`, never `println!`, which panics when the
// reader of stdout has gone away (`noco-agent compose validate … | head -1`); a `println!` still
// in the library ends quietly through `out::exit_quietly_on_closed_stdout_panics`.
#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use noco_agent::datadir::DataDir;
use noco_agent::enroll::{EnrollOptions, enroll};
use noco_agent::session::{Exit, RunOptions, run};
use noco_agent::{errln, outln};

#[derive(Debug, Parser)]
#[command(
    name = "noco-agent",
    version,
    about = "noco's agent: runs on every host, keeps a mutual-TLS session with the server"
)]
struct Cli {
    /// The agent's own configuration (registry credentials, host policy), written by the host's
    /// administrator. Default: /etc/noco/agent.toml, if it exists.
    #[arg(long, global = true, env = "NOCO_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join this host to a noco server with a join token (from `nococtl token create`).
    Enroll(EnrollArgs),
    /// Keep the session with the server (run under systemd). Exits 3 if the host is revoked.
    Run(RunArgs),
    /// Apply compose stacks on this host without a server: validate, plan, up, ps, down.
    #[command(subcommand)]
    Compose(noco_agent::local::ComposeCmd),
}

#[derive(Debug, clap::Args)]
struct EnrollArgs {
    /// The server, as https://host:port.
    #[arg(long, env = "NOCO_SERVER")]
    server: String,
    /// The join token.
    #[arg(long, env = "NOCO_JOIN_TOKEN")]
    token: String,
    /// Where the agent keeps its key and certificate (created 0700).
    #[arg(
        long,
        env = "NOCO_AGENT_DATA_DIR",
        default_value = "/var/lib/noco-agent"
    )]
    data_dir: PathBuf,
    /// The host's name in noco (default: this machine's hostname).
    #[arg(long)]
    name: Option<String>,
    /// Enroll again even though the data directory holds an enrollment.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(
        long,
        env = "NOCO_AGENT_DATA_DIR",
        default_value = "/var/lib/noco-agent"
    )]
    data_dir: PathBuf,
    /// Longest wait between reconnection attempts (the wait doubles from 0.5s, with jitter).
    #[arg(long, env = "NOCO_MAX_BACKOFF", default_value = "30s", value_parser = noco_proto::duration::parse)]
    max_backoff: Duration,
    /// Prefix of the compose project names of the stacks this agent runs (`<prefix><stack>`);
    /// it touches no other project. Lets several agents share one Docker engine.
    #[arg(long, env = "NOCO_PROJECT_PREFIX", default_value = "")]
    project_prefix: String,
    /// How often the desired state is re-applied (drift correction) even without Docker events.
    #[arg(long, env = "NOCO_RECONCILE_INTERVAL", default_value = "30s", value_parser = noco_proto::duration::parse)]
    reconcile_interval: Duration,
    /// How long one service may take to become ready when applying a stack.
    #[arg(long, default_value = "120s", value_parser = noco_proto::duration::parse)]
    wait_timeout: Duration,
    /// Export this agent's traces (each stack apply, a child span of the server's rollout or
    /// apply that caused it) and its own log events over OTLP to this collector, e.g.
    /// http://collector:4317. Off by default; an unreachable collector is logged once and never
    /// stops the agent. (Its logs and metrics reach the server over the session and are
    /// exported there.)
    #[arg(long, env = "NOCO_OTLP_ENDPOINT", value_parser = noco_proto::otel::check_endpoint)]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    otlp_transport: noco_proto::otel::TransportArgs,
}

fn main() -> ExitCode {
    noco_agent::out::exit_quietly_on_closed_stdout_panics();
    noco_certs::install_crypto_provider();
    let cli = Cli::parse();
    // The agent's service runs on every core; a one-shot command (compose up, enroll, …) on
    // this thread alone, which starts in a fraction of the time (no worker threads to spawn:
    // it counts in an unchanged `compose up`, ~10 ms in all).
    let runtime = if matches!(cli.command, Command::Run(_)) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        noco_proto::otel::init_plain();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(rt) => rt.block_on(command(cli)),
        Err(e) => {
            errln!("noco-agent: starting the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn command(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Compose(cmd) => noco_agent::local::run(cmd, cli.config.as_deref()).await,
        Command::Enroll(args) => {
            let dir = DataDir::new(&args.data_dir);
            let opts = EnrollOptions {
                server: args.server,
                token: args.token,
                name: args.name,
                force: args.force,
            };
            match enroll(&dir, &opts).await {
                Ok(e) => {
                    let labels: Vec<String> =
                        e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    outln!(
                        "enrolled as {} (id {}), labels [{}]",
                        e.name,
                        e.host_id,
                        labels.join(",")
                    );
                    outln!(
                        "start the agent: noco-agent run --data-dir {}",
                        dir.root.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    errln!("noco-agent enroll: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            let telemetry = match noco_proto::otel::init(noco_proto::otel::Setup {
                service: "noco-agent",
                resource: vec![("host.name", hostname)],
                otlp: args.otlp_endpoint.map(|endpoint| noco_proto::otel::Otlp {
                    endpoint,
                    protocol: args.otlp_transport.otlp_protocol,
                    headers: args.otlp_transport.otlp_headers,
                    metrics_interval: noco_proto::otel::DEFAULT_METRICS_INTERVAL,
                    metrics: false,
                }),
                prometheus: None,
            }) {
                Ok(t) => t,
                Err(e) => {
                    errln!("noco-agent: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let dir = DataDir::new(&args.data_dir);
            let (config, registry_credentials) =
                match noco_agent::config::AgentConfig::load(cli.config.as_deref()) {
                    Ok(c) => c,
                    Err(e) => {
                        errln!("noco-agent: {e:#}");
                        return ExitCode::FAILURE;
                    }
                };
            let opts = RunOptions {
                max_backoff: args.max_backoff,
                project_prefix: args.project_prefix,
                reconcile_interval: args.reconcile_interval.max(Duration::from_secs(1)),
                wait_timeout: args.wait_timeout,
                policy: config.policy,
                registry_credentials,
                telemetry: config.telemetry,
                backup: config.backup,
                ..RunOptions::default()
            };
            let result = run(dir, opts, noco_agent::shutdown_signal()).await;
            telemetry.shutdown(Duration::from_secs(5)).await;
            match result {
                Ok(Exit::Shutdown) => {
                    tracing::info!("stopped");
                    ExitCode::SUCCESS
                }
                Ok(Exit::Revoked(why)) => {
                    errln!("noco-agent: {why}");
                    ExitCode::from(noco_agent::EXIT_REVOKED)
                }
                Err(e) => {
                    errln!("noco-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
