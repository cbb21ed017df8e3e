//! Benchmark: time from `stack apply` to every matching agent having applied it.
//!
//! Everything runs against a real `noco-server` binary (a release build under `cargo bench`)
//! on 127.0.0.1, over real mutual TLS:
//!
//! 1. **simulated agents**: for each N in `--sessions`, a fresh server. N hosts (`role=sim`)
//!    are enrolled in-process through the Enroll RPC; each keeps the trust root from its
//!    EnrollResponse and opens its own mTLS connection and `Agent.Session` (Hello → Welcome).
//!    For every desired state it receives, a session verifies it (`noco_certs::state::verify`
//!    against its trust root and host id), records when it arrived, and acks with a StateReport
//!    (the state's generation, every stack `converged`); it runs no containers. Once every
//!    session holds its initial state, a stack is applied to `role=sim` through the Control
//!    service as the admin, and measured: per session, the delay until it received (and
//!    verified) the new state; and the delay until the server's Status RPC (polled every
//!    100 ms) shows every host applying it. Printed: p50/p90/p99/max delivery, the time until
//!    Status shows all applied, verification failures, the server's CPU time over the phase and
//!    its RSS. Then a second change (a new revision) gives a warm figure.
//! 2. **real agents**: `--agents` real `noco-agent run` processes (`role=real`, each with its
//!    own compose project prefix) and a stack running the local test image; measured: the time
//!    from the apply until Status shows every host reporting the new revision converged, for a
//!    fresh stack and for an update. Skipped when no Docker engine answers; the agents'
//!    projects are removed afterwards.
//!
//! Timing goals are not asserted: it only measures and prints. It exits non-zero with a message
//! when something breaks (the server does not start, sessions or enrollments fail, a state is
//! not delivered within the phase deadline).
//!
//! ```text
//! cargo bench -p noco-integration-tests --bench delivery -- [--sessions 1000,10000] [--agents 3]
//! ```
//!
//! Each session costs a file descriptor on both sides and a loopback source port. The soft
//! open-files limit is raised to the hard one (with `prlimit`) when it is lower; an N that still
//! does not fit is skipped, with the reason printed.

mod common;

use common::*;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
use noco_certs::signing::TrustRoot;
use noco_certs::state::{self as signed, Accepted, Verdict};
use noco_certs::token::Token;
use noco_certs::{csr, tls};
use noco_integration_tests::{Fleet, Proc, ServerOptions, bin_dir};
use noco_proto::v1 as pb;
use pb::agent_message::Msg as AgentMsg;
use pb::server_message::Msg as ServerMsg;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Deadline of one TCP + TLS connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one unary call, and of the session call and its Welcome.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often Status is polled while waiting for every host to apply a state.
const STATUS_POLL: Duration = Duration::from_millis(100);
/// Enrollments in flight (key, CSR, connection, call).
const ENROLL_CONCURRENCY: usize = 64;
/// Calls in flight that make the server write and flush its database (CreateToken, Enroll).
const WRITE_CONCURRENCY: usize = 64;
/// Concurrent session handshakes (connect, TLS, Hello, Welcome).
const HANDSHAKE_CONCURRENCY: usize = 128;
/// Server heartbeat for the simulated part.
const SIM_HEARTBEAT: &str = "10s";
/// File descriptors (and ports) needed beyond one per session.
const FD_MARGIN: u64 = 256;
/// Status and ListHosts of many hosts are larger than tonic's default 4 MiB limit.
const MAX_LIST_MESSAGE: usize = 256 * 1024 * 1024;
/// Fewer established sessions than this share of N is a failure.
const MIN_ESTABLISHED: f64 = 0.99;
/// Simulated host names: `sim-00042`.
const SIM_PREFIX: &str = "sim-";
/// The stack applied to the simulated hosts, and its compose file per change.
const SIM_STACK: &str = "bench";
/// The stack the real agents run.
const REAL_STACK: &str = "app";
/// How long real agents may take to come online, and to converge a stack.
const REAL_TIMEOUT: Duration = Duration::from_secs(180);

type Control = pb::control_client::ControlClient<Channel>;

fn sim_compose(change: usize) -> String {
    if change == 0 {
        "services:\n  app:\n    image: noco-testapp:latest\n".to_string()
    } else {
        format!(
            "services:\n  app:\n    image: noco-testapp:latest\n    environment:\n      VERSION: \"{change}\"\n"
        )
    }
}

/// The real agents' stack: the test image through `${IMAGE}`, with a health check.
fn real_compose(version: &str) -> String {
    format!(
        "services:\n  app:\n    image: ${{IMAGE}}\n    environment: {{ VERSION: \"{version}\" }}\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\n"
    )
}

// ------------------------------------------------------------------------------------ main

#[derive(Debug)]
struct Args {
    sessions: Vec<usize>,
    agents: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        sessions: vec![1000, 10000],
        agents: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--sessions" => {
                let v = value("--sessions")?;
                args.sessions = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| match s.parse::<usize>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(anyhow!("--sessions {v:?}: {s:?} is not a positive number")),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--agents" => {
                let v = value("--agents")?;
                args.agents = v
                    .parse()
                    .with_context(|| format!("--agents {v:?} is not a number"))?;
            }
            // cargo bench passes `--bench`; anything else is not ours either.
            _ => {}
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    noco_certs::install_crypto_provider();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("delivery benchmark: {e:#}");
            eprintln!(
                "usage: cargo bench -p noco-integration-tests --bench delivery -- [--sessions 1000,10000] [--agents 3]"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("delivery benchmark: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = runtime.block_on(bench(args));
    // Session tasks of a failed N may still be parked; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(5));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Run both parts, print the summary; whether everything that ran succeeded.
async fn bench(args: Args) -> bool {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "noco state delivery benchmark: --sessions {:?} --agents {}",
        args.sessions, args.agents
    );
    println!("{}", raise_open_files_limit());
    let build = match harness("building the noco binaries", || bin_dir().to_path_buf()) {
        Ok(dir) => {
            let profile = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            println!("binaries: {}", dir.display());
            format!("{profile} build")
        }
        Err(e) => {
            eprintln!("delivery benchmark failed: {e:#}");
            return false;
        }
    };

    let mut ok = true;
    let mut summary = vec![format!(
        "== noco state delivery benchmark ({cores} cores, {build}) =="
    )];

    for &n in &args.sessions {
        println!();
        println!("-- {n} simulated agents");
        match simulated(n).await {
            Outcome::Measured(lines) => summary.extend(lines),
            Outcome::Partial(lines, why) => {
                ok = false;
                println!("FAILED: {why}");
                summary.extend(lines);
                summary.push(format!("  {n} simulated agents: FAILED: {why}"));
            }
            Outcome::Skipped(why) => {
                println!("skipped: {why}");
                summary.push(format!("{n} simulated agents: skipped: {why}"));
            }
            Outcome::Failed(why) => {
                ok = false;
                println!("FAILED: {why}");
                summary.push(format!("{n} simulated agents: FAILED: {why}"));
            }
        }
    }

    if args.agents > 0 {
        let n = args.agents;
        println!();
        println!("-- {n} real agents");
        match real_agents(n).await {
            Outcome::Measured(lines) => summary.extend(lines),
            Outcome::Partial(lines, why) => {
                ok = false;
                println!("FAILED: {why}");
                summary.extend(lines);
                summary.push(format!("{n} real agents: FAILED: {why}"));
            }
            Outcome::Skipped(why) => {
                println!("skipped: {why}");
                summary.push(format!("{n} real agents: skipped: {why}"));
            }
            Outcome::Failed(why) => {
                ok = false;
                println!("FAILED: {why}");
                summary.push(format!("{n} real agents: FAILED: {why}"));
            }
        }
    }

    println!();
    for line in summary {
        println!("{line}");
    }
    if !ok {
        eprintln!("delivery benchmark: FAILED (see above)");
    }
    ok
}

enum Outcome {
    /// Summary lines.
    Measured(Vec<String>),
    /// Summary lines of what was measured, and what then failed.
    Partial(Vec<String>, String),
    Skipped(String),
    Failed(String),
}

// ------------------------------------------------------------------------------------ part 1

/// A simulated host's credential and trust root.
struct SimHost {
    name: String,
    host_id: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    trust: Arc<TrustRoot>,
}

/// A desired state a session received.
#[derive(Debug, Clone)]
struct Arrival {
    at: Instant,
    generation: u64,
    /// The revision of [`SIM_STACK`] in it, if assigned.
    revision: Option<String>,
}

/// What one session received; shared between its task and the measurement.
#[derive(Debug, Default)]
struct SessionLog {
    arrivals: Mutex<Vec<Arrival>>,
}

impl SessionLog {
    fn first_with(&self, revision: &str) -> Option<Arrival> {
        lock(&self.arrivals)
            .iter()
            .find(|a| a.revision.as_deref() == Some(revision))
            .cloned()
    }

    fn received_any(&self) -> bool {
        !lock(&self.arrivals).is_empty()
    }
}

/// Counters over all sessions.
#[derive(Debug, Default)]
struct Counters {
    verify_failures: AtomicUsize,
    first_failure: Mutex<Option<String>>,
    /// Why sessions ended on their own.
    lost: Mutex<Failures>,
}

/// Failed operations: how many, and the first distinct messages with their counts.
#[derive(Debug, Default)]
struct Failures {
    total: usize,
    distinct: Vec<(String, usize)>,
}

impl Failures {
    fn add(&mut self, message: String) {
        self.total += 1;
        if let Some(entry) = self.distinct.iter_mut().find(|(m, _)| *m == message) {
            entry.1 += 1;
        } else if self.distinct.len() < 20 {
            self.distinct.push((message, 1));
        }
    }

    fn report(&self, what: &str) {
        if self.total == 0 {
            return;
        }
        println!("{} {what} failed; first distinct errors:", self.total);
        for (message, count) in self.distinct.iter().take(5) {
            println!("  {count} × {message}");
        }
    }
}

async fn simulated(n: usize) -> Outcome {
    if let Err(why) = fits(n, "this process", "self") {
        return Outcome::Skipped(why);
    }
    let mut fleet = match harness("starting the server", || {
        Fleet::start(ServerOptions {
            heartbeat: SIM_HEARTBEAT.into(),
            ..ServerOptions::default()
        })
    }) {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    let server_pid = fleet
        .server
        .as_ref()
        .map(Proc::pid)
        .unwrap_or(0)
        .to_string();
    let outcome = match fits(n, "the server", &server_pid) {
        Err(why) => Outcome::Skipped(why),
        Ok(()) => measure_simulated(&fleet, &server_pid, n).await,
    };
    if let Err(e) = harness("stopping the server", || fleet.stop_server()) {
        println!("warning: {e:#}");
    }
    outcome
}

/// Enroll `n` simulated hosts, open their sessions, time two changes, drop the sessions.
async fn measure_simulated(fleet: &Fleet, server_pid: &str, n: usize) -> Outcome {
    let addr = match ServerAddr::parse(&fleet.url) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e),
    };
    let control = match admin_client(fleet).await {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };

    let start = Instant::now();
    let gate = WriteGate::new();
    let tokens = create_tokens(&control, &gate, n).await;
    println!(
        "created {} join tokens in {}",
        tokens.len(),
        fmt_s(start.elapsed())
    );
    let start = Instant::now();
    let hosts = enroll_all(&addr, &gate, tokens).await;
    let enroll_time = start.elapsed();
    println!(
        "enrolled {} hosts in {} ({}/s)",
        hosts.len(),
        fmt_s(enroll_time),
        rate(hosts.len(), enroll_time)
    );
    if (hosts.len() as f64) < n as f64 * MIN_ESTABLISHED {
        return Outcome::Failed(format!(
            "only {} of {n} hosts enrolled; sessions not attempted",
            hosts.len()
        ));
    }

    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let (tasks, logs) = open_sessions(&addr, hosts, counters.clone()).await;
    let established = logs.len();
    println!(
        "established {established}/{n} sessions in {} ({}/s)",
        fmt_s(start.elapsed()),
        rate(established, start.elapsed())
    );
    let result = if (established as f64) < n as f64 * MIN_ESTABLISHED {
        Outcome::Failed(format!("only {established} of {n} sessions established"))
    } else {
        deliveries(control, server_pid, n, &logs, &counters).await
    };
    lock(&counters.lost).report("sessions (ended on their own)");
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    result
}

/// Wait for every initial state, then time two changes.
async fn deliveries(
    mut control: Control,
    server_pid: &str,
    n: usize,
    logs: &[Arc<SessionLog>],
    counters: &Counters,
) -> Outcome {
    let start = Instant::now();
    let deadline = phase_deadline(logs.len());
    loop {
        let got = logs.iter().filter(|l| l.received_any()).count();
        if got == logs.len() {
            println!(
                "all {got} sessions hold their initial state ({} after the last session opened)",
                fmt_s(start.elapsed())
            );
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Outcome::Failed(format!(
                "only {got} of {} sessions received their initial state",
                logs.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut lines = Vec::new();
    for (change, label) in [(0, "first change"), (1, "second change (warm)")] {
        println!("{label}:");
        match one_change(&mut control, server_pid, n, logs, counters, change).await {
            Ok(figures) => {
                let line = figures.summary(label);
                println!("{line}");
                lines.push(line);
                if figures.missing > 0 || figures.all_applied.is_none() {
                    let why = format!(
                        "{label}: {} of {} sessions did not receive the state; Status {}",
                        figures.missing,
                        figures.sessions,
                        if figures.all_applied.is_some() {
                            "shows all applied"
                        } else {
                            "never showed all applied"
                        }
                    );
                    return Outcome::Partial(lines, why);
                }
            }
            Err(e) => return Outcome::Partial(lines, format!("{label}: {e:#}")),
        }
    }
    Outcome::Measured(lines)
}

/// Figures of one change.
#[derive(Debug, Default)]
struct ChangeFigures {
    n: usize,
    sessions: usize,
    /// Per-session delivery delays, sorted.
    delays: Vec<Duration>,
    missing: usize,
    apply_rpc: Duration,
    all_applied: Option<Duration>,
    applied_seen: usize,
    verify_failures: usize,
    cpu: Option<f64>,
    wall: Duration,
    rss: Option<u64>,
}

impl ChangeFigures {
    fn summary(&self, label: &str) -> String {
        let d = &self.delays;
        let latency = if d.is_empty() {
            "no deliveries".to_string()
        } else {
            format!(
                "p50 {}, p90 {}, p99 {}, max {}",
                fmt_latency(percentile(d, 50.0)),
                fmt_latency(percentile(d, 90.0)),
                fmt_latency(percentile(d, 99.0)),
                fmt_latency(d[d.len() - 1])
            )
        };
        let missing = if self.missing > 0 {
            format!(" ({} of {} never received)", self.missing, self.sessions)
        } else {
            String::new()
        };
        let applied = match self.all_applied {
            Some(t) => format!("all applied per Status after {}", fmt_s(t)),
            None => format!(
                "Status showed only {}/{} applied",
                self.applied_seen, self.n
            ),
        };
        let cpu = match self.cpu {
            Some(c) => format!(
                "server CPU {c:.2} s ({:.0}% of one core over {})",
                c / self.wall.as_secs_f64().max(1e-9) * 100.0,
                fmt_s(self.wall)
            ),
            None => "server CPU unknown".to_string(),
        };
        let goal = if self.n >= 10000 {
            "   (goal: p99 < 2 s)"
        } else {
            ""
        };
        format!(
            "{} simulated agents, {label}: {latency}{missing}; ApplyStack returned after {}; {applied}; {} verify failures; {cpu}; RSS {}{goal}",
            self.n,
            fmt_s(self.apply_rpc),
            self.verify_failures,
            self.rss.map(fmt_mib).unwrap_or_else(|| "?".into()),
        )
    }
}

/// Apply change `change` of [`SIM_STACK`] to `role=sim` and time its delivery.
async fn one_change(
    control: &mut Control,
    server_pid: &str,
    n: usize,
    logs: &[Arc<SessionLog>],
    counters: &Counters,
    change: usize,
) -> anyhow::Result<ChangeFigures> {
    let failures_before = counters.verify_failures.load(Ordering::Relaxed);
    let cpu_before = cpu_seconds(server_pid);
    let deadline = phase_deadline(logs.len());
    let request = pb::ApplyStackRequest {
        name: SIM_STACK.to_string(),
        selector: "role=sim".to_string(),
        compose: sim_compose(change).into_bytes(),
        ..Default::default()
    };
    let start = Instant::now();
    let mut apply_client = control.clone();
    let apply = tokio::spawn(async move {
        let resp = tokio::time::timeout_at(deadline, apply_client.apply_stack(request)).await;
        (resp, start.elapsed())
    });
    let (resp, apply_rpc) = match apply.await {
        Ok(r) => r,
        Err(e) => bail!("the ApplyStack task: {e}"),
    };
    let resp = match resp {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => bail!("ApplyStack: {}", status_text(&status)),
        Err(_) => bail!("ApplyStack did not answer before the phase deadline"),
    };
    println!(
        "  ApplyStack returned revision {} for {} hosts after {}",
        short(&resp.revision),
        resp.hosts.len(),
        fmt_s(apply_rpc)
    );
    let revision = resp.revision;

    // Deliveries and Status, until both are complete or the deadline passes.
    let mut all_applied = None;
    let mut applied_seen = 0;
    let mut progress = Instant::now();
    let mut delivered;
    loop {
        delivered = logs
            .iter()
            .filter(|l| l.first_with(&revision).is_some())
            .count();
        if all_applied.is_none() {
            applied_seen = count_applied(control, &revision).await?;
            if applied_seen >= n {
                all_applied = Some(start.elapsed());
                println!(
                    "  Status shows all {n} hosts applied after {}",
                    fmt_s(start.elapsed())
                );
            }
        }
        if (all_applied.is_some() && delivered == logs.len())
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
        if progress.elapsed() >= Duration::from_secs(5) {
            println!(
                "  … {delivered}/{} received, Status shows {applied_seen}/{n} applied",
                logs.len()
            );
            progress = Instant::now();
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
    let wall = start.elapsed();
    let cpu = match (cpu_before, cpu_seconds(server_pid)) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let arrivals: Vec<Arrival> = logs
        .iter()
        .filter_map(|l| l.first_with(&revision))
        .collect();
    if let (Some(low), Some(high)) = (
        arrivals.iter().map(|a| a.generation).min(),
        arrivals.iter().map(|a| a.generation).max(),
    ) {
        println!("  the new state has generation {low}..={high} across hosts");
    }
    let mut delays: Vec<Duration> = arrivals
        .iter()
        .map(|a| a.at.saturating_duration_since(start))
        .collect();
    delays.sort();
    let verify_failures = counters.verify_failures.load(Ordering::Relaxed) - failures_before;
    if verify_failures > 0
        && let Some(first) = lock(&counters.first_failure).as_ref()
    {
        println!("  first verification failure: {first}");
    }
    Ok(ChangeFigures {
        n,
        sessions: logs.len(),
        missing: logs.len() - delays.len(),
        delays,
        apply_rpc,
        all_applied,
        applied_seen,
        verify_failures,
        cpu,
        wall,
        rss: rss_kib(server_pid),
    })
}

/// Hosts whose Status shows `revision` of [`SIM_STACK`] assigned and applied: the reported
/// generation is the desired one and the stack is reported at that revision.
async fn count_applied(control: &mut Control, revision: &str) -> anyhow::Result<usize> {
    let request = pb::StatusRequest {
        stack: SIM_STACK.to_string(),
    };
    let hosts = match tokio::time::timeout(CALL_TIMEOUT, control.status(request)).await {
        Ok(Ok(resp)) => resp.into_inner().hosts,
        Ok(Err(status)) => bail!("Status: {}", status_text(&status)),
        Err(_) => bail!("Status did not answer within {CALL_TIMEOUT:?}"),
    };
    Ok(hosts
        .iter()
        .filter(|h| {
            h.applied_generation > 0
                && h.applied_generation == h.desired_generation
                && h.assigned.iter().any(|s| s.revision == revision)
                && h.reported.iter().any(|s| s.revision == revision)
        })
        .count())
}

/// Admits [`WRITE_CONCURRENCY`] write calls at a time. Once one times out (the server's writes
/// are stuck) the rest fail at once instead of each waiting out its timeout.
struct WriteGate {
    permits: Semaphore,
    stuck: AtomicBool,
}

impl WriteGate {
    fn new() -> Arc<Self> {
        Arc::new(WriteGate {
            permits: Semaphore::new(WRITE_CONCURRENCY),
            stuck: AtomicBool::new(false),
        })
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        if self.stuck.load(Ordering::Relaxed) {
            return Err(format!("{what} not sent: an earlier write call timed out"));
        }
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(format!("{what}: {}", status_text(&status))),
            Err(_) => {
                self.stuck.store(true, Ordering::Relaxed);
                Err(format!(
                    "{what} did not answer within {CALL_TIMEOUT:?}: the server's writes seem stuck"
                ))
            }
        }
    }
}

/// `n` join tokens for `role=sim`, made through `gate`; failures are reported and left out.
async fn create_tokens(control: &Control, gate: &Arc<WriteGate>, n: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut control = control.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let request = pb::CreateTokenRequest {
                    labels: HashMap::from([("role".to_string(), "sim".to_string())]),
                    ttl_seconds: 3600,
                    description: "delivery benchmark".to_string(),
                };
                let resp = gate
                    .call("CreateToken", control.create_token(request))
                    .await?;
                Ok(resp.token)
            })
        })
        .collect();
    let (tokens, failures) = collect_tasks("join tokens made", tasks, phase_deadline(n)).await;
    failures.report("token creations");
    tokens
}

async fn enroll_one(
    addr: &ServerAddr,
    gate: &WriteGate,
    token: String,
    name: String,
) -> Result<SimHost, String> {
    let parsed: Token = token
        .parse()
        .map_err(|e| format!("reading the join token: {e}"))?;
    let csr::KeyAndCsr { key_pem, csr_pem } =
        csr::generate(&name).map_err(|e| format!("making a key and CSR: {e}"))?;
    let config = Arc::new(
        tls::pinned_client_config(&parsed.ca_fingerprint)
            .map_err(|e| format!("pinned TLS configuration: {e}"))?,
    );
    let channel = dial::connect(addr, move || config.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("connecting to enroll: {}", noco_certs::dial::describe(&e)))?;
    let request = pb::EnrollRequest {
        token,
        csr_pem,
        requested_name: name.clone(),
        facts: Some(facts(&name)),
    };
    let mut client = pb::enrollment_client::EnrollmentClient::new(channel);
    let resp = gate.call("Enroll", client.enroll(request)).await?;
    let keys: Vec<Vec<u8>> = resp
        .trust_root
        .iter()
        .map(|k| k.public_key.clone())
        .collect();
    let trust = TrustRoot::new(&keys).map_err(|e| format!("the enrolled trust root: {e}"))?;
    Ok(SimHost {
        name: resp.name,
        host_id: resp.host_id,
        ca_pem: resp.ca_pem,
        cert_pem: resp.cert_pem,
        key_pem,
        trust: Arc::new(trust),
    })
}

/// Open a session per host with bounded concurrency. Returns the tasks holding the sessions
/// (abort them to drop the sessions) and the logs of the established ones.
async fn open_sessions(
    addr: &ServerAddr,
    hosts: Vec<SimHost>,
    counters: Arc<Counters>,
) -> (Vec<tokio::task::JoinHandle<()>>, Vec<Arc<SessionLog>>) {
    let limit = Arc::new(Semaphore::new(HANDSHAKE_CONCURRENCY));
    let total = hosts.len();
    let mut tasks = Vec::with_capacity(total);
    let mut results = Vec::with_capacity(total);
    for host in hosts {
        let (done_tx, done_rx) = oneshot::channel::<Result<Arc<SessionLog>, String>>();
        let done_rx = async move {
            done_rx
                .await
                .unwrap_or_else(|_| Err("the session task ended without a result".to_string()))
        };
        let addr = addr.clone();
        let limit = limit.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            let opened = match limit.acquire_owned().await {
                Ok(_permit) => open_session(&addr, &host).await,
                Err(e) => Err(e.to_string()),
            };
            match opened {
                Ok(live) => {
                    let log = Arc::new(SessionLog::default());
                    let _ = done_tx.send(Ok(log.clone()));
                    serve(live, &host, &log, &counters).await;
                }
                Err(e) => {
                    let _ = done_tx.send(Err(e));
                }
            }
        }));
        results.push(done_rx);
    }
    let (established, failures) = collect("established", results, phase_deadline(total)).await;
    failures.report("sessions");
    (tasks, established)
}

/// An established session.
struct Live {
    // Held so that the connection stays up as long as the session.
    _client: pb::agent_client::AgentClient<Channel>,
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ServerMessage>,
    heartbeat: Duration,
}

/// Verify, record and ack every desired state; heartbeat every interval; until the session
/// ends (recorded in `counters.lost`) or the task is aborted.
async fn serve(mut live: Live, host: &SimHost, log: &SessionLog, counters: &Counters) {
    let mut tick = tokio::time::interval(live.heartbeat);
    tick.tick().await;
    let mut seq = 0u64;
    let mut last: Option<(Accepted, pb::StateReport)> = None;
    let why = loop {
        let reply = tokio::select! {
            msg = live.inbound.message() => match msg {
                Ok(Some(pb::ServerMessage { msg: Some(ServerMsg::DesiredState(env)) })) => {
                    let at = Instant::now();
                    Some(judge(&env, host, &mut last, at, log, counters))
                }
                Ok(Some(_)) => None,
                Ok(None) => break "the server closed the session".to_string(),
                Err(status) => break format!("session ended: {}", status_text(&status)),
            },
            _ = tick.tick() => {
                seq += 1;
                Some(AgentMsg::Heartbeat(pb::Heartbeat { seq, sent_unix_ms: unix_ms() }))
            }
        };
        if let Some(msg) = reply
            && live
                .tx
                .send(pb::AgentMessage { msg: Some(msg) })
                .await
                .is_err()
        {
            break "the session's send side closed".to_string();
        }
    };
    lock(&counters.lost).add(why);
}

/// Verify a received state as an agent would; record it; the report to send back.
fn judge(
    env: &pb::SignedState,
    host: &SimHost,
    last: &mut Option<(Accepted, pb::StateReport)>,
    at: Instant,
    log: &SessionLog,
    counters: &Counters,
) -> AgentMsg {
    let accepted = last.as_ref().map(|(a, _)| a);
    let state = match signed::verify(&host.trust, env, &host.host_id, accepted, SystemTime::now()) {
        Ok(Verdict::New(state)) => state,
        Ok(Verdict::Same) => {
            // A re-send of what is applied: report it again, record nothing new.
            let report = last.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
            return AgentMsg::Report(pb::StateReport {
                sent_unix_ms: unix_ms(),
                ..report
            });
        }
        Err(refusal) => {
            counters.verify_failures.fetch_add(1, Ordering::Relaxed);
            lock(&counters.first_failure).get_or_insert_with(|| refusal.to_string());
            let report = last.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
            return AgentMsg::Report(pb::StateReport {
                refused: refusal.to_string(),
                refused_generation: decoded_generation(env),
                sent_unix_ms: unix_ms(),
                ..report
            });
        }
    };
    let now = unix_ms();
    lock(&log.arrivals).push(Arrival {
        at,
        generation: state.generation,
        revision: state
            .stacks
            .iter()
            .find(|s| s.name == SIM_STACK)
            .map(|s| s.revision.clone()),
    });
    let report = pb::StateReport {
        generation: state.generation,
        stacks: state
            .stacks
            .iter()
            .map(|s| pb::StackReport {
                name: s.name.clone(),
                revision: s.revision.clone(),
                state: "converged".to_string(),
                applied_unix_ms: now,
                ..Default::default()
            })
            .collect(),
        sent_unix_ms: now,
        ..Default::default()
    };
    *last = Some((signed::accepted(env, state.generation), report.clone()));
    AgentMsg::Report(report)
}

/// The generation a refused envelope claims, if its payload decodes (0 if not).
fn decoded_generation(env: &pb::SignedState) -> u64 {
    <pb::DesiredState as prost::Message>::decode(env.payload.as_slice())
        .map(|s| s.generation)
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------ part 2

/// `n` real agents: time a fresh stack and an update until Status shows all converged.
async fn real_agents(n: usize) -> Outcome {
    let available = tokio::task::block_in_place(noco_integration_tests::docker::docker_available);
    if !available {
        return Outcome::Skipped("no Docker engine answers".to_string());
    }
    let image = match harness(
        "building the test image",
        noco_integration_tests::docker::testapp_image,
    ) {
        Ok(i) => i,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    println!("test image: {image}");
    let mut fleet = match harness("starting the server", || {
        Fleet::start(ServerOptions::default())
    }) {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    let run = noco_integration_tests::stack::unique_project("nocobench");
    let names: Vec<String> = (1..=n).map(|i| format!("real-{i}")).collect();
    let prefixes: Vec<String> = names.iter().map(|name| format!("{run}-{name}-")).collect();
    let mut agents = Vec::new();
    let outcome = run_real(&fleet, &image, &names, &prefixes, &mut agents).await;
    for agent in &mut agents {
        if harness("stopping an agent", || agent.terminate()).is_err() {
            agent.kill();
        }
    }
    for prefix in &prefixes {
        if let Err(e) = harness("removing the agents' projects", || {
            noco_integration_tests::docker::cleanup_project(prefix)
        }) {
            println!("warning: {e:#}");
        }
    }
    if let Err(e) = harness("stopping the server", || fleet.stop_server()) {
        println!("warning: {e:#}");
    }
    outcome
}

async fn run_real(
    fleet: &Fleet,
    image: &str,
    names: &[String],
    prefixes: &[String],
    agents: &mut Vec<Proc>,
) -> Outcome {
    let n = names.len();
    let mut control = match admin_client(fleet).await {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    for (name, prefix) in names.iter().zip(prefixes) {
        if let Err(e) = harness("enrolling a real agent", || fleet.enroll(name, "role=real")) {
            return Outcome::Failed(format!("{e:#}"));
        }
        agents.push(fleet.run_agent_with(name, &["--project-prefix", prefix]));
    }
    let start = Instant::now();
    loop {
        match list_hosts(&mut control).await {
            Ok(hosts) => {
                let online = hosts
                    .iter()
                    .filter(|h| names.contains(&h.name) && h.status == "online")
                    .count();
                if online == n {
                    println!("{n} agents online after {}", fmt_s(start.elapsed()));
                    break;
                }
            }
            Err(e) => return Outcome::Failed(format!("{e:#}")),
        }
        if let Some((i, exit)) = agents
            .iter_mut()
            .enumerate()
            .find_map(|(i, a)| a.try_exit().map(|e| (i, e)))
        {
            return Outcome::Failed(format!(
                "noco-agent {} exited with {exit}; log:\n{}",
                names[i],
                tail(&agents[i].log_text(), 20)
            ));
        }
        if start.elapsed() > REAL_TIMEOUT {
            return Outcome::Failed(format!(
                "the agents were not online within {REAL_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut lines = Vec::new();
    let mut times = Vec::new();
    for (version, label) in [("1", "fresh stack"), ("2", "update")] {
        match real_change(&mut control, image, version, n).await {
            Ok(t) => {
                println!("{label}: converged on all {n} hosts after {}", fmt_s(t));
                times.push((label, t));
            }
            Err(e) => {
                let logs: Vec<String> = agents
                    .iter()
                    .zip(names)
                    .map(|(a, name)| format!("{name}:\n{}", tail(&a.log_text(), 10)))
                    .collect();
                if !times.is_empty() {
                    lines.push(real_line(n, &times));
                }
                return Outcome::Partial(
                    lines,
                    format!("{label}: {e:#}; agent logs:\n{}", logs.join("\n")),
                );
            }
        }
    }
    lines.push(real_line(n, &times));
    Outcome::Measured(lines)
}

fn real_line(n: usize, times: &[(&str, Duration)]) -> String {
    let parts: Vec<String> = times
        .iter()
        .map(|(label, t)| format!("{label} converged everywhere in {}", fmt_s(*t)))
        .collect();
    format!("{n} real agents: {}", parts.join("; "))
}

/// Apply [`REAL_STACK`] at `version` to `role=real`; the time until Status shows every host
/// reporting the new revision converged.
async fn real_change(
    control: &mut Control,
    image: &str,
    version: &str,
    n: usize,
) -> anyhow::Result<Duration> {
    let request = pb::ApplyStackRequest {
        name: REAL_STACK.to_string(),
        selector: "role=real".to_string(),
        compose: real_compose(version).into_bytes(),
        env: HashMap::from([("IMAGE".to_string(), image.to_string())]),
        ..Default::default()
    };
    let start = Instant::now();
    let resp = match tokio::time::timeout(CALL_TIMEOUT, control.apply_stack(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => bail!("ApplyStack: {}", status_text(&status)),
        Err(_) => bail!("ApplyStack did not answer within {CALL_TIMEOUT:?}"),
    };
    if resp.hosts.len() != n {
        bail!(
            "the stack was assigned to {} hosts, not {n}",
            resp.hosts.len()
        );
    }
    let revision = resp.revision;
    let mut last_states = Vec::new();
    while start.elapsed() < REAL_TIMEOUT {
        let request = pb::StatusRequest {
            stack: REAL_STACK.to_string(),
        };
        let hosts = match tokio::time::timeout(CALL_TIMEOUT, control.status(request)).await {
            Ok(Ok(resp)) => resp.into_inner().hosts,
            Ok(Err(status)) => bail!("Status: {}", status_text(&status)),
            Err(_) => bail!("Status did not answer within {CALL_TIMEOUT:?}"),
        };
        let converged = hosts
            .iter()
            .filter(|h| {
                h.reported.iter().any(|s| {
                    s.name == REAL_STACK && s.revision == revision && s.state == "converged"
                })
            })
            .count();
        if converged >= n {
            return Ok(start.elapsed());
        }
        last_states = hosts
            .iter()
            .map(|h| {
                let stacks: Vec<String> = h
                    .reported
                    .iter()
                    .map(|s| format!("{}@{} {} {}", s.name, short(&s.revision), s.state, s.error))
                    .collect();
                format!("{}: {}", h.host, stacks.join(", "))
            })
            .collect();
        tokio::time::sleep(STATUS_POLL).await;
    }
    bail!(
        "not converged on all hosts within {REAL_TIMEOUT:?}; last Status:\n{}",
        last_states.join("\n")
    )
}

// ------------------------------------------------------------------------------------ helpers

/// How long a phase over `n` hosts may take in all; a safety net, far above expected times.
fn phase_deadline(n: usize) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(120) + Duration::from_millis(20) * n as u32
}

/// Await `results` in order until `deadline`: the successes, and the failures (late ones count
/// as failed). Prints progress every few seconds.
async fn collect<T>(
    what: &'static str,
    results: Vec<impl Future<Output = Result<T, String>>>,
    deadline: tokio::time::Instant,
) -> (Vec<T>, Failures) {
    let total = results.len();
    let mut done = Vec::with_capacity(total);
    let mut failures = Failures::default();
    let mut progress = Progress::new(what, total);
    for result in results {
        match tokio::time::timeout_at(deadline, result).await {
            Ok(Ok(v)) => done.push(v),
            Ok(Err(e)) => failures.add(e),
            Err(_) => failures.add("not done before the phase deadline".to_string()),
        }
        progress.tick(done.len());
    }
    (done, failures)
}

/// [`collect`] for spawned tasks; those still running at the deadline are aborted.
async fn collect_tasks<T: Send + 'static>(
    what: &'static str,
    tasks: Vec<tokio::task::JoinHandle<Result<T, String>>>,
    deadline: tokio::time::Instant,
) -> (Vec<T>, Failures) {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let results = tasks
        .into_iter()
        .map(|t| async move { t.await.map_err(|e| format!("task: {e}")).and_then(|r| r) })
        .collect();
    let collected = collect(what, results, deadline).await;
    for a in aborts {
        a.abort();
    }
    collected
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------ limits

/// CPU time (user + system) a process has used, in seconds, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` start at field 3.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15: indexes 11 and 12 after field 2.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when that fails, the Linux default).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

// ------------------------------------------------------------------------------------ formatting

/// The `p`th percentile (nearest rank) of sorted durations; not empty.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn fmt_latency(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `sha256:0123456789ab` of a revision.
fn short(revision: &str) -> &str {
    revision.get(..19).unwrap_or(revision)
}
