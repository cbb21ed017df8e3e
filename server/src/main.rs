//! noco-server: the command line. `init` makes a data directory; `run` serves it.

// Output goes through `outln!`, never `println!`, which panics when the reader of stdout has
// gone away (`noco-server init … | head -1`).
#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};
use noco_server::core::Limits;
use noco_server::init::{InitOptions, init};
use noco_server::server::{RunOptions, run};

/// `println!` for command output: a reader of stdout that has gone away ends noco-server
/// quietly with exit 0 (as nococtl and noco-agent do); another write error exits 1.
macro_rules! outln {
    () => {
        write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

fn write_stdout(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(io::stderr(), "noco-server: writing to stdout: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "noco-server",
    version,
    about = "noco's server: holds what every host should run and talks to agents and operators over mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: CA, server certificate, state-signing key, database, and a first
    /// admin operator whose nococtl credential is written to <data-dir>/admin.nococtl.toml.
    Init(InitArgs),
    /// Serve agents and operators.
    Run(RunArgs),
    /// Check the data directory's database without serving it: its format, what it holds, and
    /// that every record reads. Exit 1 with the reason when it is damaged (the server itself
    /// refuses to start on a damaged database).
    Check(CheckArgs),
    /// The server's own TLS certificate.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Add DNS names or IP addresses agents and operators may reach the server by. The
    /// certificate is re-issued at once; a running server serves it within a minute.
    AddSan {
        #[arg(long, env = "NOCO_DATA_DIR", default_value = "/var/lib/noco-server")]
        data_dir: PathBuf,
        /// A DNS name or IP address; repeat for more.
        #[arg(required = true)]
        san: Vec<String>,
    },
    /// List the names and addresses in the server's certificate.
    Sans {
        #[arg(long, env = "NOCO_DATA_DIR", default_value = "/var/lib/noco-server")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    #[arg(long, env = "NOCO_DATA_DIR", default_value = "/var/lib/noco-server")]
    data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Where the server keeps its keys and database (created 0700).
    #[arg(long, env = "NOCO_DATA_DIR", default_value = "/var/lib/noco-server")]
    data_dir: PathBuf,
    /// A DNS name or IP address agents and operators use to reach the server; repeat for more.
    /// Default: localhost, 127.0.0.1 and this machine's hostname.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// The URL written into the admin credential. Default: https://<first --san>:7443.
    #[arg(long)]
    server_url: Option<String>,
    /// Lifetime of the CA.
    #[arg(long, default_value = "10y", value_parser = noco_proto::duration::parse)]
    ca_ttl: Duration,
    /// Lifetime of the server's TLS certificate; the server renews it at two thirds.
    #[arg(long, default_value = "365d", value_parser = noco_proto::duration::parse)]
    server_cert_ttl: Duration,
    /// Name of the first admin operator.
    #[arg(long, default_value = "admin")]
    admin_name: String,
    /// Lifetime of the first admin's certificate (nococtl renews it when used after two thirds).
    #[arg(long, default_value = "30d", value_parser = noco_proto::duration::parse)]
    admin_cert_ttl: Duration,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, env = "NOCO_DATA_DIR", default_value = "/var/lib/noco-server")]
    data_dir: PathBuf,
    /// The configuration file (TOML: `[alerts]` rules and receivers), checked at start. Default:
    /// <data-dir>/server.toml, where `init` writes its settings (none there: the defaults).
    #[arg(long, env = "NOCO_SERVER_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Add a DNS name or IP address to the server's certificate before serving (repeat for
    /// more; names it has already are kept; see also `noco-server cert add-san`).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long, env = "NOCO_LISTEN", default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// Lifetime of agent certificates; agents renew at one half to two thirds of it.
    #[arg(long, env = "NOCO_AGENT_CERT_TTL", default_value = "24h", value_parser = noco_proto::duration::parse)]
    agent_cert_ttl: Duration,
    /// Lifetime of operator certificates issued by login and renewal.
    #[arg(long, env = "NOCO_OPERATOR_CERT_TTL", default_value = "30d", value_parser = noco_proto::duration::parse)]
    operator_cert_ttl: Duration,
    /// How often the server and agents send heartbeats; a session silent for three intervals is
    /// closed.
    #[arg(long, env = "NOCO_HEARTBEAT", default_value = "10s", value_parser = noco_proto::duration::parse)]
    heartbeat: Duration,
    /// How long a signed desired state is valid; the server re-signs it at a third remaining,
    /// and an agent whose state expired keeps running it and reports itself stale.
    #[arg(long, env = "NOCO_STATE_TTL", default_value = "24h", value_parser = noco_proto::duration::parse)]
    state_ttl: Duration,
    /// Log lines the server keeps in memory per container (lost-lines markers count as lines);
    /// past it the container's oldest line goes. Lines of removed containers stay until the
    /// byte caps evict them.
    #[arg(long, env = "NOCO_LOG_LINES_PER_CONTAINER", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    log_lines_per_container: u32,
    /// Bytes of logs the server keeps per host (a line counts its bytes, its container's names
    /// and 128 bytes); past it the oldest line of the host's largest container goes, so a noisy
    /// container cannot push out the others' recent lines. Also how much an agent resends to a
    /// restarted server. At least 256KiB; in bytes or with a unit (512KiB, 8MiB, 1GiB).
    #[arg(long, env = "NOCO_LOG_BYTES_PER_HOST", default_value = "8MiB", value_parser = noco_proto::size::parse)]
    log_bytes_per_host: u64,
    /// Bytes of logs the server keeps for all hosts together; past it the host holding the most
    /// gives up its oldest line (of its largest container). At least --log-bytes-per-host.
    #[arg(long, env = "NOCO_LOG_BYTES_TOTAL", default_value = "512MiB", value_parser = noco_proto::size::parse)]
    log_bytes_total: u64,
    /// How far back each host's metrics history reaches (`GetHost` with history): a point per
    /// sample, at most one a second. 0 keeps none (the latest sample is always kept).
    #[arg(long, env = "NOCO_METRICS_HISTORY", default_value = "1h", value_parser = noco_proto::duration::parse)]
    metrics_history: Duration,
    /// Where backup archives are kept: file:///absolute/path (default <data-dir>/backups), or
    /// any S3-compatible store, s3://bucket/prefix?region=R&endpoint=https://…&allow_http=true
    /// with credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN).
    /// Checked at start: the server writes and deletes a probe object, and refuses to start
    /// when it cannot.
    #[arg(long, env = "NOCO_BACKUP_STORE")]
    backup_store: Option<String>,
    /// The largest backup archive the server takes from an agent (an upload past it fails the
    /// backup); in bytes or with a unit (500GiB).
    #[arg(long, env = "NOCO_BACKUP_MAX_SIZE", default_value = "100GiB", value_parser = noco_proto::size::parse)]
    backup_max_size: u64,
    #[command(flatten)]
    otel: OtelArgs,
}

/// OpenTelemetry and Prometheus: each off unless its flag is given.
#[derive(Debug, clap::Args)]
struct OtelArgs {
    /// Export traces (rollouts, applies), metrics (fleet, hosts, containers, the server) and logs
    /// (containers' log lines and the server's own events) over OTLP to this collector, e.g.
    /// http://collector:4317 (https:// checks the collector's certificate against the web's
    /// public roots). A collector that cannot be reached is counted
    /// (noco.otlp.export.failures) and logged once; it never stops the server.
    #[arg(long, env = "NOCO_OTLP_ENDPOINT", value_parser = noco_proto::otel::check_endpoint)]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    otlp_transport: noco_proto::otel::TransportArgs,
    /// How often metrics are pushed over OTLP (every push carries every series).
    #[arg(long, default_value = noco_proto::otel::DEFAULT_METRICS_INTERVAL_ARG, value_parser = noco_proto::duration::parse, requires = "otlp_endpoint")]
    otlp_metrics_interval: Duration,
    /// Serve the same metrics to Prometheus: GET http://ADDR/metrics (port 0: any free port;
    /// the chosen one is printed). Plain HTTP: listen on a private address.
    #[arg(long, env = "NOCO_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

/// The smallest per-host log budget: a few of the longest lines.
const MIN_LOG_BYTES_PER_HOST: u64 = 256 << 10;

fn default_sans() -> Vec<String> {
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_lowercase();
        if !h.is_empty() && h != "localhost" {
            sans.push(h);
        }
    }
    sans
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    noco_certs::install_crypto_provider();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        noco_proto::otel::init_plain();
    }
    let result = match cli.command {
        Command::Init(args) => cmd_init(args).await,
        Command::Run(args) => cmd_run(args).await,
        Command::Cert(CertCommand::AddSan { data_dir, san }) => cmd_add_san(&data_dir, &san),
        Command::Cert(CertCommand::Sans { data_dir }) => {
            noco_server::pki::Pki::load(&noco_server::pki::DataDir::new(&data_dir))
                .and_then(|pki| pki.sans())
                .map(|sans| {
                    for san in sans {
                        outln!("{san}");
                    }
                })
        }
        Command::Check(args) => noco_server::server::check(&args.data_dir)
            .await
            .map(|census| outln!("{}: ok ({census})", args.data_dir.display())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A closed stderr must not turn the failure into a panic (exit 101).
            let _ = writeln!(io::stderr(), "noco-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn cmd_init(args: InitArgs) -> anyhow::Result<()> {
    let sans = if args.sans.is_empty() {
        default_sans()
    } else {
        args.sans
    };
    let opts = InitOptions {
        data_dir: args.data_dir,
        sans,
        server_url: args.server_url,
        ca_ttl: args.ca_ttl,
        server_cert_ttl: args.server_cert_ttl,
        admin_name: args.admin_name,
        admin_cert_ttl: args.admin_cert_ttl,
    };
    let report = init(&opts, SystemTime::now()).await.context("init")?;
    outln!("initialized {}", report.dir.root.display());
    outln!("  CA certificate      {}", report.dir.ca_cert().display());
    outln!("  CA fingerprint      sha256:{}", report.ca_fingerprint);
    outln!(
        "  server certificate  {}",
        report.dir.server_cert().display()
    );
    outln!(
        "  state-signing key   {}",
        report.dir.signing_key().display()
    );
    outln!("  database            {}", report.dir.db().display());
    outln!(
        "  admin credential    {} (0600)",
        report.admin_credential.display()
    );
    outln!("  server URL          {}", report.server_url);
    outln!();
    outln!("next:");
    outln!("  noco-server run --data-dir {}", report.dir.root.display());
    outln!(
        "  nococtl --config {} host ls",
        report.admin_credential.display()
    );
    Ok(())
}

fn cmd_add_san(data_dir: &std::path::Path, sans: &[String]) -> anyhow::Result<()> {
    let pki = noco_server::pki::Pki::load(&noco_server::pki::DataDir::new(data_dir))?;
    let added = pki.add_sans(sans, SystemTime::now())?;
    if added.is_empty() {
        outln!("the server certificate has every one of them already");
    } else {
        outln!(
            "added {} to the server certificate; a running server serves it within a minute",
            added.join(", ")
        );
    }
    Ok(())
}

async fn cmd_run(args: RunArgs) -> anyhow::Result<()> {
    if args.heartbeat.is_zero() || args.agent_cert_ttl.is_zero() || args.operator_cert_ttl.is_zero()
    {
        anyhow::bail!(
            "--heartbeat, --agent-cert-ttl and --operator-cert-ttl must be greater than zero"
        );
    }
    if args.log_bytes_per_host < MIN_LOG_BYTES_PER_HOST {
        anyhow::bail!(
            "--log-bytes-per-host must be at least 256KiB (a few of the longest log lines)"
        );
    }
    if args.backup_max_size == 0 {
        anyhow::bail!("--backup-max-size must be greater than zero");
    }
    if args.log_bytes_total < args.log_bytes_per_host {
        anyhow::bail!("--log-bytes-total must be at least --log-bytes-per-host");
    }
    let config = noco_server::config::load(args.config.as_deref(), &args.data_dir)?;
    let registry = args
        .otel
        .metrics_listen
        .map(|_| noco_server::otel::prom::registry());
    let otlp = args
        .otel
        .otlp_endpoint
        .map(|endpoint| noco_proto::otel::Otlp {
            endpoint,
            protocol: args.otel.otlp_transport.otlp_protocol,
            headers: args.otel.otlp_transport.otlp_headers,
            metrics_interval: args.otel.otlp_metrics_interval,
            metrics: true,
        });
    let telemetry = noco_proto::otel::init(noco_proto::otel::Setup {
        service: "noco-server",
        resource: Vec::new(),
        otlp: otlp.clone(),
        prometheus: registry.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    let limits = Limits {
        log_lines_per_container: args.log_lines_per_container as usize,
        log_bytes_per_host: args.log_bytes_per_host,
        log_bytes_total: args.log_bytes_total,
        metrics_history: args.metrics_history,
        agent_cert_ttl: args.agent_cert_ttl,
        operator_cert_ttl: args.operator_cert_ttl,
        heartbeat_interval: args.heartbeat,
        session_idle_timeout: args.heartbeat * 3,
        state_ttl: args.state_ttl,
        ..Limits::default()
    };
    let result = run(
        RunOptions {
            data_dir: args.data_dir,
            listen: args.listen,
            limits,
            sans: args.sans,
            backup_store: args.backup_store,
            backup_max_size: args.backup_max_size,
            config,
            metrics: args.otel.metrics_listen.zip(registry),
            otlp,
        },
        shutdown_signal(),
    )
    .await;
    telemetry.shutdown(Duration::from_secs(5)).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_flags_default_as_documented() {
        let cli = Cli::try_parse_from(["noco-server", "run"]).unwrap_or_else(|e| panic!("{e}"));
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert_eq!(args.log_lines_per_container, 5000);
        assert_eq!(args.log_bytes_per_host, 8 << 20);
        assert_eq!(args.log_bytes_total, 512 << 20);
        assert_eq!(args.metrics_history, Duration::from_secs(3600));
        assert_eq!(args.backup_store, None);
        assert_eq!(args.backup_max_size, noco_server::backups::DEFAULT_MAX_SIZE);
        let defaults = Limits::default();
        assert_eq!(defaults.log_lines_per_container, 5000);
        assert_eq!(defaults.log_bytes_per_host, args.log_bytes_per_host);
        assert_eq!(defaults.log_bytes_total, args.log_bytes_total);
        assert_eq!(defaults.metrics_history, args.metrics_history);
    }
}
