//! Benchmark: logs and metrics (issue 10): what it costs to carry container logs from Docker to
//! an operator's terminal, and what the server holds for a fleet.
//!
//! Everything runs against real `noco-server`, `noco-agent` and `nococtl` binaries (release
//! builds under `cargo bench`) on 127.0.0.1, over real mutual TLS. Four parts (`--part` runs
//! some of them):
//!
//! 1. **end-to-end log throughput**: a fresh server, one real agent, and a stack of
//!    `--flood-containers` test containers (default 2) each writing numbered lines as fast as it
//!    can (`LOG_RATE=0`, padded to `--line-bytes`, default 100). The agent follows their logs
//!    through the Docker API into its spool and sends them on its telemetry stream; one
//!    `nococtl logs STACK -f --no-prefix` reads them from the server, and this process counts
//!    the newlines and bytes of its standard output. After `--warmup` seconds (default 5) a
//!    window of `--window` seconds (default 10) measures lines/s and MB/s at the reader and the
//!    CPU of the agent, the server and the reader (CPU seconds over wall time: 100% is one core).
//!    Goal: at least 100,000 lines/s.
//! 2. **agent CPU at a steady rate**: the same, with containers that write `--paced-rate` lines/s
//!    together (default 10,000 over `--paced-containers` 2); the agent's CPU over the window, and
//!    the rate the reader received (to show it kept up). Goal: under 20% of a core.
//! 3. **idle agent**: `--idle-containers` (default 20) test containers that print nothing after
//!    their startup line, metrics sampled at the default 10 s; after `--idle-settle` seconds
//!    (default 15) the agent's RSS and CPU over `--idle-window` seconds (default 30). Goals: RSS
//!    under 15 MiB, CPU under 0.2% of a core.
//! 4. **server memory under a fleet's logs**: a fresh server with small caps
//!    (`--log-bytes-total`, default 64MiB, and `--log-bytes-per-host`, default 256KiB, the
//!    smallest), `--hosts` simulated hosts (default 1,000) enrolled in-process through the real
//!    Enroll RPC, each opening its own mTLS connection and Telemetry stream (Hello → LogResume)
//!    as `noco-agent` does, then every second a LogBatch of `--host-containers` (10) ×
//!    `--host-lines` (10) records of realistic ~100-byte lines with increasing sequences, and
//!    every `--metrics-every` seconds (10) a MetricsSample with host metrics and every container;
//!    acks are read and counted. Over `--sim-window` seconds (default 60) the server's RSS is
//!    printed every `--report-every` seconds (10) with the lines/s it accepted (acked); at the
//!    end its growth over the RSS before the streams opened is set against the caps plus a stated
//!    margin ([`Margin`]), and the lines the server holds of one host are read back (with what
//!    they count for in the server's accounting). Then a control run (`--control-window`
//!    seconds, default 30; 0: none): the same load on a fresh server with the smallest caps
//!    (256KiB in all, so it holds next to no logs); the difference of the two growths is what
//!    the held logs cost. Needs no Docker.
//!
//! Parts 1 and 2 also print what the whole machine was busy with during the window (every
//! process's CPU, by name, from `/proc`) and how many lines the containers wrote (the number of
//! each one's last line, as Docker holds it); part 1 then stops the agent and measures, for
//! reference, how fast this process can follow the same containers through Docker's log API.
//!
//! Every figure is printed with the machine's load average. Goals are not asserted: it only
//! measures and prints. It exits non-zero with a message when something breaks (a process does
//! not start, a stack does not converge, no line reaches the reader). Parts 1–3 print "skipping"
//! without a Docker engine. Every container and network they create is removed when the part
//! ends, also on failure.
//!
//! ```text
//! cargo bench -p noco-integration-tests --bench logs -- [--part 1,4] [--window 10] [--hosts 1000] [--sim-window 60]
//! ```
//!
//! `--help` lists every argument.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use bollard::query_parameters::LogsOptionsBuilder;
use clap::Parser;
use common::*;
use futures_util::StreamExt;
use noco_certs::dial::ServerAddr;
use noco_integration_tests::docker::{
    cleanup_project, docker_available, testapp_image, with_docker,
};
use noco_integration_tests::stack::unique_project;
use noco_integration_tests::{Fleet, Proc, ServerOptions, bin, path_str};
use noco_proto::v1 as pb;
use tokio::time::MissedTickBehavior;

/// The stack the real agent runs in parts 1–3.
const STACK: &str = "logs";
/// The real agent's name and label.
const AGENT: &str = "bench-1";
const AGENT_LABELS: &str = "role=bench";
/// The agent's configuration: the documented defaults, written out.
const AGENT_CONFIG: &str = "[telemetry]\nspool_size = \"64MiB\"\nmetrics_interval = \"10s\"\n";
/// Heartbeats of the real agent's server: the production default, so an idle agent is measured
/// as it would run.
const HEARTBEAT: &str = "10s";
/// How long the agent may take to come online, and the stack to converge.
const SETUP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the first line may take to reach the reader.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// The containers' Docker log files are bounded to this, so a flood does not fill the disk.
const LOG_FILES: &str = "options: { max-size: \"20m\", max-file: \"2\" }";
/// How long making tokens, enrolling or opening streams of N simulated hosts may take in all.
const PHASE: PhaseLimit = PhaseLimit {
    base: Duration::from_secs(120),
    per_host: Duration::from_millis(20),
};
/// The margin over the caps in part 4 (see [`Margin`]): per telemetry stream (connection, TLS
/// and HTTP/2 state: 42.8 KiB per idle session was measured, see ARCHITECTURE.md, plus the
/// stream's channels and a batch being decoded), per host (the latest metrics sample of 10
/// containers and a few points of history), and for the allocator. A stream carrying 10 KB/s
/// holds more than an idle one: the control run measured about 120 KiB each for 1,000 streams
/// (2026-12-02), with the logs themselves capped to nothing.
const MARGIN_PER_STREAM_KIB: u64 = 128;
const MARGIN_PER_HOST_KIB: u64 = 8;
const MARGIN_ALLOCATOR_MIB: u64 = 32;
/// The smallest `--log-bytes-per-host` (and so `--log-bytes-total`) the server takes.
const MIN_LOG_BYTES: u64 = 256 << 10;

// ------------------------------------------------------------------------------------ main

/// Logs and metrics: end-to-end throughput, the agent's cost busy and idle, and the server's
/// memory under a fleet's logs.
#[derive(Debug, Parser)]
#[command(
    name = "logs",
    bin_name = "cargo bench -p noco-integration-tests --bench logs --"
)]
struct Args {
    /// Run only these parts (1: throughput, 2: agent CPU at a steady rate, 3: idle agent,
    /// 4: server memory with simulated hosts), comma-separated; default: all.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=4))]
    part: Vec<u8>,
    /// Parts 1–3: the containers' Docker logging driver (`json-file`, Docker's default, or
    /// `local`), its files bounded to 2 × 20 MB.
    #[arg(long, default_value = "json-file", value_parser = ["json-file", "local"])]
    log_driver: String,
    /// Part 1: containers writing as fast as they can.
    #[arg(long, default_value_t = 2, value_parser = positive)]
    flood_containers: usize,
    /// Parts 1 and 2: bytes per line (`LOG_PAD`; the reader sees one more, the newline).
    #[arg(long, default_value_t = 100, value_parser = positive)]
    line_bytes: usize,
    /// Parts 1 and 2: seconds of lines flowing before the window.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Parts 1 and 2: seconds measured.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    window: usize,
    /// Part 2: lines per second of all containers together.
    #[arg(long, default_value_t = 10_000, value_parser = positive)]
    paced_rate: usize,
    /// Part 2: containers sharing that rate.
    #[arg(long, default_value_t = 2, value_parser = positive)]
    paced_containers: usize,
    /// Part 3: containers that print nothing after starting.
    #[arg(long, default_value_t = 20, value_parser = positive)]
    idle_containers: usize,
    /// Part 3: seconds after the stack converged before measuring.
    #[arg(long, default_value_t = 15)]
    idle_settle: u64,
    /// Part 3: seconds measured.
    #[arg(long, default_value_t = 30, value_parser = positive)]
    idle_window: usize,
    /// Part 4: simulated hosts.
    #[arg(long, default_value_t = 1000, value_parser = positive)]
    hosts: usize,
    /// Part 4: containers per simulated host.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    host_containers: usize,
    /// Part 4: lines per second of each container.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    host_lines: usize,
    /// Part 4: seconds between a host's metrics samples.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    metrics_every: usize,
    /// Part 4: seconds the simulated hosts send.
    #[arg(long, default_value_t = 60, value_parser = positive)]
    sim_window: usize,
    /// Part 4: seconds between printed figures.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    report_every: usize,
    /// Part 4: the server's `--log-bytes-total`.
    #[arg(long, default_value = "64MiB", value_parser = noco_proto::size::parse)]
    log_bytes_total: u64,
    /// Part 4: the server's `--log-bytes-per-host` (at least 256KiB).
    #[arg(long, default_value = "256KiB", value_parser = noco_proto::size::parse)]
    log_bytes_per_host: u64,
    /// Part 4: seconds of a control run after it, the same load on a server whose caps are the
    /// smallest (256KiB in all): what the streams cost without the logs (0: no control run).
    #[arg(long, default_value_t = 30)]
    control_window: usize,
}

impl Args {
    fn runs(&self, part: u8) -> bool {
        self.part.is_empty() || self.part.contains(&part)
    }
}

fn main() -> std::process::ExitCode {
    run_async("logs", bench(parse_args()))
}

/// Run the parts asked for, print the summary; whether everything that ran succeeded.
async fn bench(args: Args) -> bool {
    let settings = format!(
        "parts {}; --log-driver {} --flood-containers {} --line-bytes {} --warmup {} --window {} --paced-rate {} --paced-containers {} --idle-containers {} --idle-settle {} --idle-window {} --hosts {} --host-containers {} --host-lines {} --metrics-every {} --sim-window {} --log-bytes-total {} --log-bytes-per-host {} --control-window {}",
        if args.part.is_empty() {
            "all".to_string()
        } else {
            format!("{:?}", args.part)
        },
        args.log_driver,
        args.flood_containers,
        args.line_bytes,
        args.warmup,
        args.window,
        args.paced_rate,
        args.paced_containers,
        args.idle_containers,
        args.idle_settle,
        args.idle_window,
        args.hosts,
        args.host_containers,
        args.host_lines,
        args.metrics_every,
        args.sim_window,
        fmt_bytes(args.log_bytes_total),
        fmt_bytes(args.log_bytes_per_host),
        args.control_window,
    );
    let Some(machine) = begin("logs", "logs and metrics", &settings) else {
        return false;
    };
    let mut summary = Summary::new(
        "logs",
        format!("== noco logs and metrics benchmark ({machine}) =="),
    );

    let docker_parts: Vec<u8> = [1, 2, 3].into_iter().filter(|&p| args.runs(p)).collect();
    let image = if docker_parts.is_empty() {
        Ok(String::new())
    } else if !tokio::task::block_in_place(docker_available) {
        println!("skipping parts {docker_parts:?}: no Docker engine answers");
        Err(Outcome::Skipped("no Docker engine answers".to_string()))
    } else {
        match harness("building the test image", testapp_image) {
            Ok(image) => {
                println!("test image: {image}");
                Ok(image)
            }
            Err(e) => Err(Outcome::Failed(format!("{e:#}"))),
        }
    };
    let titles = [
        (1, "1. end-to-end log throughput"),
        (2, "2. agent CPU at a steady rate"),
        (3, "3. idle agent"),
    ];
    for (part, title) in titles {
        if !args.runs(part) {
            continue;
        }
        println!();
        println!("-- {title}");
        let outcome = match &image {
            Err(Outcome::Skipped(why)) => Outcome::Skipped(why.clone()),
            Err(Outcome::Failed(why)) => Outcome::Failed(why.clone()),
            Err(_) => Outcome::Failed("the test image".to_string()),
            Ok(image) => match part {
                1 => throughput(&args, image).await,
                2 => paced(&args, image).await,
                _ => idle(&args, image).await,
            },
        };
        summary.add(title, outcome);
    }
    if args.runs(4) {
        let title = "4. server memory with simulated hosts";
        println!();
        println!("-- {title}");
        summary.add(title, fleet_memory(&args).await);
    }
    summary.finish()
}

// ------------------------------------------------------------------------------------ a real agent

/// Compose projects whose containers, networks and volumes are removed when this is dropped
/// (also when a part fails early).
struct Projects(String);

impl Projects {
    fn new(prefix: String) -> anyhow::Result<Projects> {
        harness("removing leftover projects", || cleanup_project(&prefix))?;
        Ok(Projects(prefix))
    }
}

impl Drop for Projects {
    fn drop(&mut self) {
        let prefix = &self.0;
        match harness("removing the benchmark's containers and networks", || {
            cleanup_project(prefix)
        }) {
            Ok(()) => println!("removed the containers and networks of {prefix}*"),
            Err(e) => println!("warning: {e:#}"),
        }
    }
}

/// A fresh server and one real agent on the local Docker engine. Dropped in field order: the
/// agent is killed first (so that it does not start containers again), then its projects are
/// removed, then the server is stopped.
struct Rig {
    agent: Proc,
    projects: Projects,
    fleet: Fleet,
    control: Control,
    image: String,
}

impl Rig {
    async fn start(image: &str) -> anyhow::Result<Rig> {
        let fleet = harness("starting the server", || {
            Fleet::start(ServerOptions {
                heartbeat: HEARTBEAT.into(),
                ..ServerOptions::default()
            })
        })?;
        harness("enrolling the agent", || fleet.enroll(AGENT, AGENT_LABELS))?;
        let projects = Projects::new(format!("{}-", unique_project("nocobench-logs")))?;
        let config = fleet.path("agent.toml");
        std::fs::write(&config, AGENT_CONFIG).context("writing the agent's configuration")?;
        let prefix = projects.0.clone();
        let mut agent = harness("starting the agent", || {
            fleet.run_agent_with(
                AGENT,
                &["--project-prefix", &prefix, "--config", path_str(&config)],
            )
        })?;
        let mut control = admin_client(&fleet).await?;
        let start = Instant::now();
        loop {
            let hosts = list_hosts(&mut control).await?;
            if hosts
                .iter()
                .any(|h| h.name == AGENT && h.status() == pb::Presence::Online)
            {
                println!(
                    "agent online after {} (server heartbeat {HEARTBEAT})",
                    fmt_s(start.elapsed())
                );
                break;
            }
            if let Some(exit) = agent.try_exit() {
                bail!(
                    "noco-agent exited with {exit}; its log:\n{}",
                    tail(&agent.log_text(), 20)
                );
            }
            if start.elapsed() > SETUP_TIMEOUT {
                bail!("the agent was not online within {SETUP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Rig {
            agent,
            projects,
            fleet,
            control,
            image: image.to_string(),
        })
    }

    fn agent_pid(&self) -> String {
        self.agent.pid().to_string()
    }

    fn server_pid(&self) -> String {
        self.fleet
            .server
            .as_ref()
            .map(Proc::pid)
            .unwrap_or(0)
            .to_string()
    }

    /// An error if the agent has exited.
    fn check_agent(&mut self) -> anyhow::Result<()> {
        match self.agent.try_exit() {
            Some(exit) => bail!(
                "noco-agent exited with {exit}; its log:\n{}",
                tail(&self.agent.log_text(), 20)
            ),
            None => Ok(()),
        }
    }

    /// The agent's log, last lines.
    fn agent_log(&self) -> String {
        tail(&self.agent.log_text(), 15)
    }

    /// Apply `compose` as [`STACK`] to the agent; wait until it reports it converged.
    async fn deploy(&mut self, compose: String) -> anyhow::Result<()> {
        let request = pb::ApplyStackRequest {
            name: STACK.to_string(),
            selector: AGENT_LABELS.to_string(),
            compose: compose.into_bytes(),
            env: HashMap::from([("IMAGE".to_string(), self.image.clone())]),
            ..Default::default()
        };
        let start = Instant::now();
        let resp = apply_stack(&mut self.control, request).await?;
        let revision = resp.revision;
        let mut last = String::new();
        while start.elapsed() < SETUP_TIMEOUT {
            self.check_agent()?;
            let hosts = stack_status(&mut self.control, STACK).await?;
            let mine = hosts
                .iter()
                .flat_map(|h| &h.reported)
                .find(|s| s.name == STACK && s.revision == revision);
            if let Some(s) = mine {
                if s.state() == pb::ApplyState::Converged {
                    println!(
                        "stack {STACK} {} converged after {}",
                        short(&revision),
                        fmt_s(start.elapsed())
                    );
                    return Ok(());
                }
                last = format!("{} {}", s.state, s.error);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "stack {STACK} did not converge within {SETUP_TIMEOUT:?} (last report: {last}); agent log:\n{}",
            self.agent_log()
        )
    }
}

/// A stack of the test image: one service per `(name, environment)`.
fn compose(services: &[(String, Vec<(&str, String)>)], driver: &str) -> String {
    let mut yaml = String::from("services:\n");
    for (name, env) in services {
        yaml.push_str(&format!(
            "  {name}:\n    image: ${{IMAGE}}\n    pull_policy: never\n"
        ));
        if !env.is_empty() {
            let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
            yaml.push_str(&format!("    environment: {{ {} }}\n", vars.join(", ")));
        }
        yaml.push_str(&format!(
            "    logging: {{ driver: {driver}, {LOG_FILES} }}\n"
        ));
    }
    yaml
}

/// How many numbered lines the containers have written in all: the number of each one's last
/// line, as Docker holds it.
fn written(containers: &[String]) -> anyhow::Result<u64> {
    harness("reading the containers' last lines", || {
        with_docker(|docker| async move {
            let mut total = 0;
            for name in containers {
                let opts = LogsOptionsBuilder::default().stdout(true).tail("1").build();
                let mut stream = docker.logs(name, Some(opts));
                let mut text = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.with_context(|| format!("the logs of {name}"))?;
                    text.extend_from_slice(&chunk.into_bytes());
                }
                let text = String::from_utf8_lossy(&text);
                let number = text
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("line ")?.parse::<u64>().ok())
                    .unwrap_or(0);
                total += number;
            }
            Ok(total)
        })
    })?
}

/// Busy CPU seconds of the whole machine (all cores, from `/proc/stat`: every state but idle
/// and iowait).
fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = text
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user already).
    let busy: u64 = fields.iter().take(8).sum::<u64>()
        - fields.get(3).copied().unwrap_or(0)
        - fields.get(4).copied().unwrap_or(0);
    Some(busy as f64 / 100.0)
}

/// Every process's name and CPU seconds so far, by pid.
fn cpu_by_process() -> HashMap<String, (String, f64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| {
            let pid = e.ok()?.file_name().to_str()?.to_string();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let cpu = cpu_seconds(&pid)?;
            Some((pid, (comm.trim().to_string(), cpu)))
        })
        .collect()
}

/// The processes (by name) that used the most CPU between two snapshots, in % of one core.
fn busiest(
    before: &HashMap<String, (String, f64)>,
    after: &HashMap<String, (String, f64)>,
    wall: Duration,
) -> String {
    let mut by_name: HashMap<&str, (f64, usize)> = HashMap::new();
    for (pid, (comm, cpu)) in after {
        let was = before.get(pid).map_or(0.0, |(_, c)| *c);
        let entry = by_name.entry(comm).or_default();
        entry.0 += cpu - was;
        entry.1 += 1;
    }
    let mut top: Vec<(&str, f64, usize)> = by_name
        .into_iter()
        .map(|(name, (cpu, n))| (name, cpu / wall.as_secs_f64().max(1e-9) * 100.0, n))
        .filter(|(_, pct, _)| *pct >= 1.0)
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.iter()
        .take(8)
        .map(|(name, pct, n)| {
            if *n > 1 {
                format!("{name} ×{n} {pct:.0}%")
            } else {
                format!("{name} {pct:.0}%")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------------------------------ the reader

/// `nococtl logs STACK -f --no-prefix` running, its standard output counted by a thread.
struct Reader {
    child: Child,
    pid: String,
    lines: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    stderr: PathBuf,
}

impl Reader {
    fn start(fleet: &Fleet, stack: &str) -> anyhow::Result<Reader> {
        let stderr = fleet.path("reader.stderr");
        let err = std::fs::File::create(&stderr).context("the reader's stderr file")?;
        let mut child = Command::new(bin("nococtl"))
            .args(["logs", stack, "-f", "--no-prefix"])
            .env("NOCO_CONFIG", fleet.admin_config())
            .env_remove("NOCO_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .context("starting nococtl logs -f")?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("nococtl logs has no stdout pipe"))?;
        let lines = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (l, b) = (lines.clone(), bytes.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let newlines = buf[..n].iter().filter(|&&c| c == b'\n').count();
                        l.fetch_add(newlines as u64, Ordering::Relaxed);
                        b.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Reader {
            pid: child.id().to_string(),
            child,
            lines,
            bytes,
            stderr,
        })
    }

    /// Lines and bytes read so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.lines.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// An error if the reader has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => bail!(
                "nococtl logs -f exited with {status}: {}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            ),
            Ok(None) => Ok(()),
            Err(e) => bail!("waiting for nococtl logs -f: {e}"),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a window of lines flowing measured.
struct Flow {
    wall: Duration,
    lines: u64,
    /// Lines the containers wrote (by their numbers, as Docker holds them).
    written: u64,
    bytes: u64,
    agent_cpu: Option<f64>,
    server_cpu: Option<f64>,
    reader_cpu: Option<f64>,
    /// The whole machine's busy CPU, in % of one core, and the processes that used most.
    machine: Option<f64>,
    busiest: String,
    load: String,
}

impl Flow {
    fn lines_per_s(&self) -> f64 {
        self.lines as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn written_per_s(&self) -> f64 {
        self.written as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Start the reader on a deployed stack, wait for its first lines and the warmup, then measure
/// a window.
async fn read_window(
    rig: &mut Rig,
    containers: &[String],
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Flow> {
    let mut reader = Reader::start(&rig.fleet, STACK)?;
    let start = Instant::now();
    loop {
        rig.check_agent()?;
        reader.check()?;
        if reader.counts().0 > 0 {
            println!(
                "the reader got its first lines after {}",
                fmt_s(start.elapsed())
            );
            break;
        }
        if start.elapsed() > FIRST_LINE_TIMEOUT {
            bail!(
                "no line reached `nococtl logs -f` within {FIRST_LINE_TIMEOUT:?} (does the agent collect logs?); agent log:\n{}",
                rig.agent_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(warmup).await;
    let (agent, server) = (rig.agent_pid(), rig.server_pid());
    let cpu = |pid: &str| cpu_seconds(pid);
    let (lines0, bytes0) = reader.counts();
    let (a0, s0, r0) = (cpu(&agent), cpu(&server), cpu(&reader.pid));
    let (machine0, procs0) = (machine_busy_seconds(), cpu_by_process());
    let written0 = written(containers)?;
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut prev = (lines0, Instant::now());
    let mut per_second = Vec::new();
    while t0.elapsed() < window {
        let left = window.saturating_sub(t0.elapsed());
        tokio::select! {
            _ = tick.tick() => {
                let (lines, _) = reader.counts();
                let rate = (lines - prev.0) as f64 / prev.1.elapsed().as_secs_f64().max(1e-9);
                per_second.push(format!("{:.0}", rate));
                prev = (lines, Instant::now());
            }
            _ = tokio::time::sleep(left) => {}
        }
        rig.check_agent()?;
        reader.check()?;
    }
    let wall = t0.elapsed();
    let (lines1, bytes1) = reader.counts();
    let (a1, s1, r1) = (cpu(&agent), cpu(&server), cpu(&reader.pid));
    let (machine1, procs1) = (machine_busy_seconds(), cpu_by_process());
    let written1 = written(containers)?;
    println!(
        "  lines/s at the reader, second by second: {}",
        per_second.join(" ")
    );
    // What the reader was told on stderr: lines the server skipped for it (it fell behind the
    // followers' ring), and reconnects.
    let said = std::fs::read_to_string(&reader.stderr).unwrap_or_default();
    let skipped: u64 = said
        .lines()
        .filter_map(|l| {
            l.strip_prefix("-- noco: ")?
                .split(" lines skipped")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let reconnects = said.lines().filter(|l| l.contains("reconnecting")).count();
    println!("  the reader was told it skipped {skipped} lines; it reconnected {reconnects} times");
    Ok(Flow {
        wall,
        lines: lines1 - lines0,
        written: written1.saturating_sub(written0),
        bytes: bytes1 - bytes0,
        agent_cpu: cpu_share(a0, a1, wall),
        server_cpu: cpu_share(s0, s1, wall),
        reader_cpu: cpu_share(r0, r1, wall),
        machine: cpu_share(machine0, machine1, wall),
        busiest: busiest(&procs0, &procs1, wall),
        load: load_average(),
    })
}

// ------------------------------------------------------------------------------------ part 1

async fn throughput(args: &Args, image: &str) -> Outcome {
    let services: Vec<(String, Vec<(&str, String)>)> = (1..=args.flood_containers)
        .map(|i| {
            (
                format!("flood{i}"),
                vec![
                    ("LOG_RATE", "0".to_string()),
                    ("LOG_PAD", args.line_bytes.to_string()),
                ],
            )
        })
        .collect();
    let (flow, reference) = match flow_part(image, &services, args, true).await {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    let mut lines = Vec::new();
    let line = format!(
        "end-to-end throughput, {} flood containers (LOG_RATE=0, {}-byte lines, Docker log driver {}) → agent → server → 1 `nococtl logs -f --no-prefix`, {} window: {} lines/s, {:.1} MB/s at the reader (goal: ≥ 100,000 lines/s; the containers wrote {} lines/s); CPU of one core: agent {}, server {}, reader {}; machine busy {} of {} cores ({}) [load {}]",
        args.flood_containers,
        args.line_bytes,
        args.log_driver,
        fmt_s(flow.wall),
        fmt_count(flow.lines_per_s()),
        flow.mb_per_s(),
        fmt_count(flow.written_per_s()),
        fmt_pct(flow.agent_cpu),
        fmt_pct(flow.server_cpu),
        fmt_pct(flow.reader_cpu),
        fmt_pct(flow.machine),
        cores(),
        flow.busiest,
        flow.load,
    );
    println!("{line}");
    lines.push(line);
    match reference {
        Some(Ok(r)) => {
            let line = format!(
                "  for reference, Docker's own log API on the same containers (the agent stopped; this process follows them with bollard, with timestamps as the agent asks), {} window: {} lines/s, {:.1} MB/s; machine busy {} of {} cores ({}) [load {}]",
                fmt_s(r.wall),
                fmt_count(r.lines_per_s()),
                r.mb_per_s(),
                fmt_pct(r.machine),
                cores(),
                r.busiest,
                r.load
            );
            println!("{line}");
            lines.push(line);
        }
        Some(Err(e)) => println!("warning: the Docker reference: {e:#}"),
        None => {}
    }
    Outcome::Measured(lines)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A fresh server and agent, the stack deployed, a reader's window measured.
async fn flow_part(
    image: &str,
    services: &[(String, Vec<(&str, String)>)],
    args: &Args,
    reference: bool,
) -> anyhow::Result<(Flow, Option<anyhow::Result<Flow>>)> {
    let mut rig = Rig::start(image).await?;
    rig.deploy(compose(services, &args.log_driver)).await?;
    let containers: Vec<String> = services
        .iter()
        .map(|(service, _)| format!("{}{STACK}-{service}-1", rig.projects.0))
        .collect();
    let window = Duration::from_secs(args.window as u64);
    let flow = read_window(
        &mut rig,
        &containers,
        Duration::from_secs(args.warmup),
        window,
    )
    .await?;
    if !reference {
        return Ok((flow, None));
    }
    // The agent stops following; the containers keep writing.
    rig.agent.kill();
    Ok((flow, Some(docker_follow(&containers, window))))
}

/// Follow `containers`' new lines through Docker's log API from this process for `window`:
/// what any reader of Docker's logs gets on this machine.
fn docker_follow(containers: &[String], window: Duration) -> anyhow::Result<Flow> {
    let l = Arc::new(AtomicU64::new(0));
    let b = Arc::new(AtomicU64::new(0));
    harness("following the containers through Docker", || {
        with_docker(|docker| async move {
            let mut tasks = Vec::new();
            for name in containers {
                let (docker, name, l, b) = (docker.clone(), name.clone(), l.clone(), b.clone());
                tasks.push(tokio::spawn(async move {
                    let opts = LogsOptionsBuilder::default()
                        .stdout(true)
                        .stderr(true)
                        .follow(true)
                        .timestamps(true)
                        .tail("0")
                        .build();
                    let mut stream = docker.logs(&name, Some(opts));
                    while let Some(Ok(chunk)) = stream.next().await {
                        let chunk = chunk.into_bytes();
                        let newlines = chunk.iter().filter(|&&c| c == b'\n').count();
                        l.fetch_add(newlines as u64, Ordering::Relaxed);
                        b.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                }));
            }
            // The follows are up once lines arrive.
            let start = Instant::now();
            while l.load(Ordering::Relaxed) == 0 && start.elapsed() < FIRST_LINE_TIMEOUT {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (l0, b0) = (l.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
            let (machine0, procs0) = (machine_busy_seconds(), cpu_by_process());
            let t0 = Instant::now();
            tokio::time::sleep(window).await;
            let wall = t0.elapsed();
            let (l1, b1) = (l.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
            let (machine1, procs1) = (machine_busy_seconds(), cpu_by_process());
            for t in &tasks {
                t.abort();
            }
            Ok(Flow {
                wall,
                lines: l1 - l0,
                written: 0,
                bytes: b1 - b0,
                agent_cpu: None,
                server_cpu: None,
                reader_cpu: None,
                machine: cpu_share(machine0, machine1, wall),
                busiest: busiest(&procs0, &procs1, wall),
                load: load_average(),
            })
        })
    })?
}

// ------------------------------------------------------------------------------------ part 2

async fn paced(args: &Args, image: &str) -> Outcome {
    let n = args.paced_containers;
    let services: Vec<(String, Vec<(&str, String)>)> = (0..n)
        .map(|i| {
            // The rate shared out, the remainder to the first ones.
            let rate = args.paced_rate / n + usize::from(i < args.paced_rate % n);
            (
                format!("paced{}", i + 1),
                vec![
                    ("LOG_RATE", rate.to_string()),
                    ("LOG_PAD", args.line_bytes.to_string()),
                ],
            )
        })
        .collect();
    let flow = match flow_part(image, &services, args, false).await {
        Ok((f, _)) => f,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    let line = format!(
        "agent at {} lines/s ({n} containers, {}-byte lines), {} window: agent CPU {} of one core (goal: < 20%); the containers wrote {} lines/s, the reader received {} lines/s ({:.1} MB/s); server CPU {}, reader {}; machine busy {} of {} cores ({}) [load {}]",
        fmt_count(args.paced_rate as f64),
        args.line_bytes,
        fmt_s(flow.wall),
        fmt_pct(flow.agent_cpu),
        fmt_count(flow.written_per_s()),
        fmt_count(flow.lines_per_s()),
        flow.mb_per_s(),
        fmt_pct(flow.server_cpu),
        fmt_pct(flow.reader_cpu),
        fmt_pct(flow.machine),
        cores(),
        flow.busiest,
        flow.load,
    );
    println!("{line}");
    Outcome::Measured(vec![line])
}

// ------------------------------------------------------------------------------------ part 3

async fn idle(args: &Args, image: &str) -> Outcome {
    match measure_idle(args, image).await {
        Ok(line) => {
            println!("{line}");
            Outcome::Measured(vec![line])
        }
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

async fn measure_idle(args: &Args, image: &str) -> anyhow::Result<String> {
    let n = args.idle_containers;
    let services: Vec<(String, Vec<(&str, String)>)> = (1..=n)
        .map(|i| (format!("idle{i}"), vec![("VERSION", i.to_string())]))
        .collect();
    let mut rig = Rig::start(image).await?;
    rig.deploy(compose(&services, &args.log_driver)).await?;
    println!(
        "settling for {} s (the agent samples metrics every 10 s)",
        args.idle_settle
    );
    tokio::time::sleep(Duration::from_secs(args.idle_settle)).await;
    rig.check_agent()?;
    let pid = rig.agent_pid();
    let window = Duration::from_secs(args.idle_window as u64);
    let rss_start = rss_kib(&pid);
    let cpu0 = cpu_seconds(&pid);
    let t0 = Instant::now();
    let mut peak = rss_start.unwrap_or(0);
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1).min(window.saturating_sub(t0.elapsed()))).await;
        rig.check_agent()?;
        peak = peak.max(rss_kib(&pid).unwrap_or(0));
    }
    let wall = t0.elapsed();
    let cpu = cpu_share(cpu0, cpu_seconds(&pid), wall);
    let rss_end = rss_kib(&pid);
    // The server has the agent's metrics of every container.
    let top = rig
        .control
        .top(pb::TopRequest {
            hosts: vec![AGENT.to_string()],
            stack: STACK.to_string(),
            containers: true,
        })
        .await
        .map_err(|s| anyhow!("Top: {}", status_text(&s)))?
        .into_inner();
    let sampled = top
        .hosts
        .iter()
        .find(|h| h.host == AGENT)
        .map(|h| (h.metrics.is_some(), h.containers.len()));
    let metrics = match sampled {
        Some((true, c)) => format!("the server holds its metrics of {c} containers"),
        Some((false, _)) => "the server holds no metrics of it yet".to_string(),
        None => "the host is not in Top".to_string(),
    };
    // Resident memory the agent allocated, and pages of its program file (code, shared).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(fmt_mib)
            .unwrap_or_else(|| "?".into())
    };
    let split = format!(
        "{} anonymous, {} file-backed",
        field("RssAnon:"),
        field("RssFile:")
    );
    Ok(format!(
        "idle agent, {n} containers printing nothing, metrics every 10 s, {} window after {} s: RSS {} ({split}; at start {}, peak {}; goal: < 15 MiB), CPU {} of one core (goal: < 0.2%); {metrics} [load {}]",
        fmt_s(wall),
        args.idle_settle,
        rss_end.map(fmt_mib).unwrap_or_else(|| "?".into()),
        rss_start.map(fmt_mib).unwrap_or_else(|| "?".into()),
        fmt_mib(peak),
        fmt_pct(cpu),
        load_average(),
    ))
}

// ------------------------------------------------------------------------------------ part 4

/// What part 4 allows the server to grow by beyond the caps.
struct Margin {
    streams: u64,
    hosts: u64,
    follow: u64,
    allocator: u64,
}

impl Margin {
    fn new(n: usize, total_cap: u64) -> Margin {
        // The followers' ring (none here, but it is what the hub may hold): the server's rule.
        let batch = noco_proto::limits::MAX_LOG_BATCH as u64;
        let follow_batches =
            noco_server::telemetry::logs::follow_buffer(&noco_server::telemetry::logs::LogCaps {
                lines_per_container: 1,
                bytes_per_host: total_cap,
                bytes_total: total_cap,
            }) as u64;
        Margin {
            streams: n as u64 * MARGIN_PER_STREAM_KIB * 1024,
            hosts: n as u64 * MARGIN_PER_HOST_KIB * 1024,
            follow: follow_batches * batch,
            allocator: MARGIN_ALLOCATOR_MIB << 20,
        }
    }

    fn total(&self) -> u64 {
        self.streams + self.hosts + self.follow + self.allocator
    }

    fn describe(&self, n: usize) -> String {
        format!(
            "{} = streams {n} × {MARGIN_PER_STREAM_KIB} KiB + metrics {n} × {MARGIN_PER_HOST_KIB} KiB + followers' ring {} + allocator {}",
            fmt_bytes(self.total()),
            fmt_bytes(self.follow),
            fmt_bytes(self.allocator)
        )
    }
}

/// The log caps of one run of part 4.
#[derive(Debug, Clone, Copy)]
struct Caps {
    total: u64,
    per_host: u64,
}

/// The server's memory over one run of part 4.
struct FleetFigures {
    lines: Vec<String>,
    rss_before: u64,
    rss_end: u64,
    /// Why the run failed, after measuring.
    why: Option<String>,
}

async fn fleet_memory(args: &Args) -> Outcome {
    if let Err(why) = fits(args.hosts, "this process", "self") {
        return Outcome::Skipped(why);
    }
    let caps = Caps {
        total: args.log_bytes_total,
        per_host: args.log_bytes_per_host,
    };
    let main = match fleet_run(args, caps, args.sim_window, true).await {
        Ok(f) => f,
        Err(outcome) => return outcome,
    };
    let mut lines = main.lines;
    if let Some(why) = main.why {
        return Outcome::Partial(lines, why);
    }
    if args.control_window == 0 {
        return Outcome::Measured(lines);
    }
    // The same load on a server that holds next to nothing: what the streams, their buffers and
    // the allocator cost without the rings.
    let smallest = Caps {
        total: MIN_LOG_BYTES,
        per_host: MIN_LOG_BYTES,
    };
    println!();
    println!(
        "control run: the same load on a fresh server with --log-bytes-total {} (it holds next to no logs), {} s",
        fmt_bytes(MIN_LOG_BYTES),
        args.control_window
    );
    let control = match fleet_run(args, smallest, args.control_window, false).await {
        Ok(f) => f,
        Err(Outcome::Skipped(why) | Outcome::Failed(why)) => {
            return Outcome::Partial(lines, format!("the control run: {why}"));
        }
        Err(_) => return Outcome::Partial(lines, "the control run failed".to_string()),
    };
    let grown = main.rss_end.saturating_sub(main.rss_before);
    let grown_control = control.rss_end.saturating_sub(control.rss_before);
    let line = format!(
        "control run, same load with --log-bytes-total {} for {} s: server RSS +{} at the end ({} before the streams, {} at the end); so what the held logs cost: +{} − +{} = {} for the {} cap ({}) [load {}]",
        fmt_bytes(MIN_LOG_BYTES),
        args.control_window,
        fmt_mib(grown_control),
        fmt_mib(control.rss_before),
        fmt_mib(control.rss_end),
        fmt_mib(grown),
        fmt_mib(grown_control),
        fmt_mib(grown.saturating_sub(grown_control)),
        fmt_bytes(caps.total),
        {
            // The cap, the followers' ring it may keep alive (an eighth) and 16 MiB of allocator
            // slack.
            let allowed_kib = (caps.total + caps.total / 8 + (16 << 20)) / 1024;
            if grown.saturating_sub(grown_control) <= allowed_kib {
                format!(
                    "within the cap, its followers' ring and 16 MiB of slack: {}",
                    fmt_mib(allowed_kib)
                )
            } else {
                format!(
                    "OVER the cap, its followers' ring and 16 MiB of slack: {}",
                    fmt_mib(allowed_kib)
                )
            }
        },
        load_average()
    );
    println!("{line}");
    lines.push(line);
    match control.why {
        Some(why) => Outcome::Partial(lines, format!("the control run: {why}")),
        None => Outcome::Measured(lines),
    }
}

/// A fresh server with `caps`, `--hosts` simulated hosts sending for `window` seconds; its
/// figures (the summary's lines only when `verdict`: set against the caps), or the outcome when
/// it could not be measured.
async fn fleet_run(
    args: &Args,
    caps: Caps,
    window: usize,
    verdict: bool,
) -> Result<FleetFigures, Outcome> {
    let n = args.hosts;
    let extra = vec![
        "--log-bytes-total".to_string(),
        caps.total.to_string(),
        "--log-bytes-per-host".to_string(),
        caps.per_host.to_string(),
    ];
    println!(
        "server: --log-bytes-total {} --log-bytes-per-host {} (--log-lines-per-container 5000, --metrics-history 1h: defaults)",
        fmt_bytes(caps.total),
        fmt_bytes(caps.per_host)
    );
    let mut fleet = match harness("starting the server", || {
        Fleet::start(ServerOptions {
            heartbeat: SIM_HEARTBEAT.into(),
            extra,
            ..ServerOptions::default()
        })
    }) {
        Ok(f) => f,
        Err(e) => return Err(Outcome::Failed(format!("{e:#}"))),
    };
    let server_pid = fleet
        .server
        .as_ref()
        .map(Proc::pid)
        .unwrap_or(0)
        .to_string();
    let result = match fits(n, "the server", &server_pid) {
        Err(why) => Err(Outcome::Skipped(why)),
        Ok(()) => measure_fleet(args, &fleet, &server_pid, caps, window, verdict)
            .await
            .map_err(|e| Outcome::Failed(format!("{e:#}"))),
    };
    if let Err(e) = harness("stopping the server", || fleet.stop_server()) {
        println!("warning: {e:#}");
    }
    result
}

async fn measure_fleet(
    args: &Args,
    fleet: &Fleet,
    server_pid: &str,
    caps: Caps,
    window: usize,
    verdict: bool,
) -> anyhow::Result<FleetFigures> {
    let n = args.hosts;
    let addr = ServerAddr::parse(&fleet.url).map_err(anyhow::Error::msg)?;
    let mut control = admin_client(fleet).await?;
    let enrolled = enroll_sims(fleet, &control, n, "logs benchmark", PHASE).await?;

    let rss_before = rss_kib(server_pid).unwrap_or(0);
    println!(
        "server RSS before the telemetry streams open: {} [load {}]",
        fmt_mib(rss_before),
        load_average()
    );
    let streams = open_streams(&addr, enrolled.hosts, PHASE).await?;
    let opened = streams.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = rss_kib(server_pid).unwrap_or(0);
    let open_line = format!(
        "server RSS with {opened} idle telemetry streams: {} (+{} over before the streams, {:.1} KiB/stream) [load {}]",
        fmt_mib(rss_open),
        fmt_mib(rss_open.saturating_sub(rss_before)),
        rss_open.saturating_sub(rss_before) as f64 / opened.max(1) as f64,
        load_average()
    );
    println!("{open_line}");

    // Load on.
    let load = Load {
        containers: args.host_containers,
        lines: args.host_containers * args.host_lines,
        metrics_every: args.metrics_every as u64,
    };
    let offered = (opened * load.lines) as f64;
    println!(
        "each host sends {} × {} lines every second ({} lines/s from all, about {:.1} MB/s of lines) and metrics of {} containers every {} s, for {window} s",
        load.containers,
        args.host_lines,
        fmt_count(offered),
        offered * 100.0 / 1e6,
        load.containers,
        load.metrics_every,
    );
    let counters = Arc::new(SimCounters::default());
    let feeders = start_feeding(streams, load, &counters);

    let mut figures = watch_fleet(
        args, server_pid, rss_before, opened, caps, window, &counters,
    )
    .await;
    let held = held_lines(&mut control, caps, load, opened).await;
    let top = top_counts(&mut control).await;
    drop_sessions(feeders).await;
    let lost = lock(&counters.lost);
    lost.report("telemetry streams (ended on their own)");
    match held {
        Ok(line) => {
            println!("{line}");
            figures.lines.push(line);
        }
        Err(e) => println!("warning: reading the logs back: {e:#}"),
    }
    match top {
        Ok(line) => {
            println!("{line}");
            figures.lines.push(line);
        }
        Err(e) => println!("warning: Top: {e:#}"),
    }
    if verdict {
        figures.lines.insert(1, open_line);
    } else {
        figures.lines.clear();
    }
    if lost.total > 0 && figures.why.is_none() {
        figures.why = Some(format!(
            "{} telemetry streams ended during the run",
            lost.total
        ));
    }
    Ok(figures)
}

/// Sample the server every second for `window` seconds, print a row every `--report-every`
/// seconds, then its figures.
async fn watch_fleet(
    args: &Args,
    server_pid: &str,
    rss_before: u64,
    n: usize,
    caps: Caps,
    window: usize,
    counters: &SimCounters,
) -> FleetFigures {
    let window = Duration::from_secs(window as u64);
    let every = args.report_every.max(1);
    let margin = Margin::new(n, caps.total);
    let budget_kib = (caps.total + margin.total()) / 1024;
    let start = Instant::now();
    let cpu0 = cpu_seconds(server_pid);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    tick.tick().await;
    let mut peak = 0u64;
    let mut rows = Vec::new();
    let mut last = (0u64, 0u64, cpu0, Instant::now());
    let mut seconds = 0usize;
    while start.elapsed() < window {
        tick.tick().await;
        seconds += 1;
        let rss = rss_kib(server_pid).unwrap_or(0);
        peak = peak.max(rss);
        if seconds.is_multiple_of(every) || start.elapsed() >= window {
            let acked = counters.acked.load(Ordering::Relaxed);
            let sent = counters.sent.load(Ordering::Relaxed);
            let cpu = cpu_seconds(server_pid);
            let wall = last.3.elapsed();
            let accepted = (acked - last.0) as f64 / wall.as_secs_f64().max(1e-9);
            let queued = (sent - last.1) as f64 / wall.as_secs_f64().max(1e-9);
            let row = format!(
                "  t={:>3} s: server RSS {} (+{} over before the streams; peak so far {}), accepted {} lines/s (sent {}/s), server CPU {} of one core [load {}]",
                seconds,
                fmt_mib(rss),
                fmt_mib(rss.saturating_sub(rss_before)),
                fmt_mib(peak),
                fmt_count(accepted),
                fmt_count(queued),
                fmt_pct(cpu_share(last.2, cpu, wall)),
                load_average()
            );
            println!("{row}");
            rows.push(row);
            last = (acked, sent, cpu, Instant::now());
        }
    }
    let wall = start.elapsed();
    let rss_end = rss_kib(server_pid).unwrap_or(0);
    peak = peak.max(rss_end);
    let acked = counters.acked.load(Ordering::Relaxed);
    let sent = counters.sent.load(Ordering::Relaxed);
    let backed_up = counters.backed_up.load(Ordering::Relaxed);
    let samples = counters.samples.load(Ordering::Relaxed);
    let cpu = cpu_share(cpu0, cpu_seconds(server_pid), wall);
    let grown_end = rss_end.saturating_sub(rss_before);
    let grown_peak = peak.saturating_sub(rss_before);
    let within = if grown_peak <= budget_kib {
        "stays within caps"
    } else {
        "does NOT stay within caps"
    };
    let offered = n * args.host_containers * args.host_lines;
    let mut lines = vec![format!(
        "{n} simulated hosts × {} containers × {} lines/s ({} lines/s offered), metrics every {} s, {} window: accepted {} lines/s ({} lines in all; {} sent; {backed_up} host-seconds backed up), {samples} metrics samples; server CPU {} of one core [load {}]",
        args.host_containers,
        args.host_lines,
        fmt_count(offered as f64),
        args.metrics_every,
        fmt_s(wall),
        fmt_count(acked as f64 / wall.as_secs_f64().max(1e-9)),
        fmt_count(acked as f64),
        fmt_count(sent as f64),
        fmt_pct(cpu),
        load_average()
    )];
    lines.push(format!(
        "server RSS: {} before the streams, {} at the end (+{}), peak {} (+{}); caps --log-bytes-total {} (--log-bytes-per-host {}) + margin {} → {within} (limit +{}) [load {}]",
        fmt_mib(rss_before),
        fmt_mib(rss_end),
        fmt_mib(grown_end),
        fmt_mib(peak),
        fmt_mib(grown_peak),
        fmt_bytes(caps.total),
        fmt_bytes(caps.per_host),
        margin.describe(n),
        fmt_mib(budget_kib),
        load_average()
    ));
    lines.push("server RSS over time:".to_string());
    lines.extend(rows);
    for line in &lines[..2] {
        println!("{line}");
    }
    FleetFigures {
        lines,
        rss_before,
        rss_end,
        why: (acked == 0).then(|| "the server acknowledged no log line".to_string()),
    }
}

/// How many lines the server holds of the first simulated host (a Logs read, no follow), and
/// what all hosts' lines would count against the caps if each held as many.
async fn held_lines(
    control: &mut Control,
    caps: Caps,
    load: Load,
    hosts: usize,
) -> anyhow::Result<String> {
    let host = format!("{SIM_PREFIX}00000");
    let request = pb::LogsRequest {
        stack: SIM_STACK.to_string(),
        hosts: vec![host.clone()],
        ..Default::default()
    };
    let start = Instant::now();
    let count = tokio::time::timeout(CALL_TIMEOUT, async {
        let mut stream = control
            .logs(request)
            .await
            .map_err(|s| anyhow!("Logs: {}", status_text(&s)))?
            .into_inner();
        let mut count = 0usize;
        while let Some(batch) = stream
            .message()
            .await
            .map_err(|s| anyhow!("Logs: {}", status_text(&s)))?
        {
            count += batch.entries.iter().filter(|e| e.record.is_some()).count();
        }
        anyhow::Ok(count)
    })
    .await
    .map_err(|_| anyhow!("Logs did not finish within {CALL_TIMEOUT:?}"))??;
    // What a record counts for in the server's accounting (its rule, imported).
    let sample = SimContainers::new(0, load.containers).batch(1, load.lines, SystemTime::now());
    let cost = sample
        .iter()
        .map(noco_server::telemetry::logs::record_cost)
        .sum::<u64>() as f64
        / sample.len().max(1) as f64;
    let accounted = count as f64 * cost * hosts as f64;
    Ok(format!(
        "`nococtl logs {SIM_STACK} --host {host}` reads {count} lines held of that host (in {}); at {cost:.0} accounted bytes a line, {hosts} hosts holding as many make {:.1} MiB (caps: {} in all, {} a host)",
        fmt_s(start.elapsed()),
        accounted / (1 << 20) as f64,
        fmt_bytes(caps.total),
        fmt_bytes(caps.per_host)
    ))
}

/// Hosts with metrics, and the containers with metrics, by Top.
async fn top_counts(control: &mut Control) -> anyhow::Result<String> {
    let start = Instant::now();
    let top = tokio::time::timeout(
        CALL_TIMEOUT,
        control.top(pb::TopRequest {
            hosts: Vec::new(),
            stack: String::new(),
            containers: true,
        }),
    )
    .await
    .map_err(|_| anyhow!("Top did not answer within {CALL_TIMEOUT:?}"))?
    .map_err(|s| anyhow!("Top: {}", status_text(&s)))?
    .into_inner();
    let with_metrics = top.hosts.iter().filter(|h| h.metrics.is_some()).count();
    let containers: usize = top.hosts.iter().map(|h| h.containers.len()).sum();
    Ok(format!(
        "Top: {with_metrics}/{} hosts with metrics, {containers} containers (in {})",
        top.hosts.len(),
        fmt_s(start.elapsed())
    ))
}
