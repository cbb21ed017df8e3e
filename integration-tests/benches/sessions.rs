//! Benchmark: how fast an agent comes online, and how many agent sessions one server holds.
//!
//! Everything runs against real `noco-server` and `noco-agent` binaries (release builds under
//! `cargo bench`) on 127.0.0.1, over real mutual TLS:
//!
//! 1. **agent start → online**: one host is enrolled with `noco-agent enroll`; then, `--runs`
//!    times, `noco-agent run` is spawned and the wall time until `ListHosts` shows the host
//!    `online` is measured (polled in-process as the admin every 5 ms, so no `nococtl` process
//!    spawn is counted). The agent is stopped with SIGTERM and seen `offline` between runs.
//! 2. **sessions one server holds**: for each N in `--sessions`, a fresh server. N simulated
//!    hosts are enrolled in-process (a join token, key, CSR and TLS connection each), then every
//!    host opens its own mTLS connection and an `Agent.Session` (Hello → Welcome, heartbeats
//!    after). Printed: the enrollment rate, the time to establish all N sessions, how many hosts
//!    `ListHosts` reports `online`, and the server's resident memory before and after (per
//!    session), with this process's own for context.
//!
//! Timing goals are not asserted: it only measures and prints. It exits non-zero with a message
//! when something breaks: the server does not start, the agent never comes online, or fewer than
//! 99% of the sessions of an N are established.
//!
//! ```text
//! cargo bench -p noco-integration-tests --bench sessions -- [--sessions 1000,10000] [--runs 5]
//! ```
//!
//! Each session costs a file descriptor on both sides and a loopback source port. The soft
//! open-files limit is raised to the hard one (with `prlimit`) when it is lower; an N that still
//! does not fit (this process's or the server's `ulimit -n`, or the local port range) is skipped,
//! with the reason printed.

mod common;

use common::*;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
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
/// How often the host status is polled while timing `noco-agent run`.
const STATUS_POLL: Duration = Duration::from_millis(5);
/// How long to wait for a host to reach a status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);
/// Enrollments in flight (key, CSR, connection, call).
const ENROLL_CONCURRENCY: usize = 64;
/// Calls in flight that make the server write and flush its database (CreateToken, Enroll).
/// (Concurrent flushes deadlocked sled 0.34's `flush_async`; the server now flushes on the
/// blocking pool, which is safe.)
const WRITE_CONCURRENCY: usize = 64;
/// Concurrent session handshakes (connect, TLS, Hello, Welcome).
const HANDSHAKE_CONCURRENCY: usize = 128;
/// How long the established sessions are held before the second memory reading.
const HOLD: Duration = Duration::from_secs(5);
/// Server heartbeat for the sessions part.
const SESSION_HEARTBEAT: &str = "10s";
/// File descriptors (and ports) needed beyond one per session.
const FD_MARGIN: u64 = 256;
/// ListHosts of many hosts is larger than tonic's default 4 MiB limit.
const MAX_LIST_MESSAGE: usize = 256 * 1024 * 1024;
/// Fewer established sessions than this share of N is a failure.
const MIN_ESTABLISHED: f64 = 0.99;
/// Simulated host names: `sim-00042`.
const SIM_PREFIX: &str = "sim-";

type Control = pb::control_client::ControlClient<Channel>;

// ------------------------------------------------------------------------------------ main

#[derive(Debug)]
struct Args {
    sessions: Vec<usize>,
    runs: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        sessions: vec![1000, 10000],
        runs: 5,
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
            "--runs" => {
                let v = value("--runs")?;
                args.runs = v
                    .parse()
                    .with_context(|| format!("--runs {v:?} is not a number"))?;
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
            eprintln!("sessions benchmark: {e:#}");
            eprintln!(
                "usage: cargo bench -p noco-integration-tests --bench sessions -- [--sessions 1000,10000] [--runs 5]"
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
            eprintln!("sessions benchmark: starting the tokio runtime: {e}");
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
        "noco sessions benchmark: --sessions {:?} --runs {}",
        args.sessions, args.runs
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
            eprintln!("sessions benchmark failed: {e:#}");
            return false;
        }
    };

    let mut ok = true;
    let mut summary = vec![format!(
        "== noco sessions benchmark ({cores} cores, {build}) =="
    )];

    if args.runs > 0 {
        println!();
        println!("-- agent start → online ({} runs)", args.runs);
        match agent_start_to_online(args.runs).await {
            Ok(times) => summary.push(format!(
                "agent start → online: min {}, median {}, max {} ({} runs)",
                fmt_ms(times[0]),
                fmt_ms(median(&times)),
                fmt_ms(times[times.len() - 1]),
                times.len()
            )),
            Err(e) => {
                ok = false;
                println!("FAILED: {e:#}");
                summary.push(format!("agent start → online: FAILED: {e:#}"));
            }
        }
    }

    for &n in &args.sessions {
        println!();
        println!("-- {n} sessions");
        match sessions(n).await {
            Outcome::Measured(f) => {
                let line = f.summary();
                if f.established_share() < MIN_ESTABLISHED {
                    ok = false;
                    println!(
                        "FAILED: only {} of {n} sessions established (fewer than {:.0}%)",
                        f.established,
                        MIN_ESTABLISHED * 100.0
                    );
                    summary.push(format!(
                        "{line} — FAILED: fewer than {:.0}% established",
                        MIN_ESTABLISHED * 100.0
                    ));
                } else {
                    summary.push(line);
                }
                summary.push(f.enroll_summary());
            }
            Outcome::Skipped(why) => {
                println!("skipped: {why}");
                summary.push(format!("{n} sessions: skipped: {why}"));
            }
            Outcome::Failed(why) => {
                ok = false;
                println!("FAILED: {why}");
                summary.push(format!("{n} sessions: FAILED: {why}"));
            }
        }
    }

    println!();
    for line in summary {
        println!("{line}");
    }
    if !ok {
        eprintln!("sessions benchmark: FAILED (see above)");
    }
    ok
}

// ------------------------------------------------------------------------------------ part 1

/// Time `noco-agent run` → `online`, `runs` times; sorted ascending.
async fn agent_start_to_online(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let mut fleet = harness("starting the server", || {
        Fleet::start(ServerOptions::default())
    })?;
    let mut control = admin_client(&fleet).await?;
    harness("enrolling bench-1", || {
        fleet.enroll("bench-1", "role=bench")
    })?;
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs {
        let start = Instant::now();
        let mut agent = fleet.run_agent("bench-1");
        let online = wait_status(&mut control, "bench-1", "online", Some(&mut agent)).await;
        let online = match online {
            Ok(at) => at.duration_since(start),
            Err(e) => {
                agent.kill();
                return Err(e.context(format!(
                    "run {run}; agent log:\n{}",
                    tail(&agent.log_text(), 20)
                )));
            }
        };
        harness("stopping the agent", || agent.terminate())?;
        wait_status(&mut control, "bench-1", "offline", None)
            .await
            .with_context(|| format!("run {run}"))?;
        println!("run {run}/{runs}: online after {}", fmt_ms(online));
        times.push(online);
    }
    harness("stopping the server", || fleet.stop_server())?;
    times.sort();
    Ok(times)
}

/// Poll ListHosts every [`STATUS_POLL`] until `name` has `status`; when it has, the instant it
/// was seen. Fails early if `agent` exits.
async fn wait_status(
    control: &mut Control,
    name: &str,
    status: &str,
    mut agent: Option<&mut Proc>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + STATUS_TIMEOUT;
    loop {
        let hosts = list_hosts(control).await?;
        if hosts.iter().any(|h| h.name == name && h.status == status) {
            return Ok(Instant::now());
        }
        if let Some(exit) = agent.as_deref_mut().and_then(Proc::try_exit) {
            bail!("noco-agent exited with {exit} before {name} was {status}");
        }
        if Instant::now() > deadline {
            bail!("{name} was not {status} within {STATUS_TIMEOUT:?}");
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}

// ------------------------------------------------------------------------------------ part 2

enum Outcome {
    Measured(Box<Figures>),
    Skipped(String),
    Failed(String),
}

#[derive(Debug, Default)]
struct Figures {
    n: usize,
    token_time: Duration,
    enrolled: usize,
    enroll_time: Duration,
    established: usize,
    establish_time: Duration,
    /// `online` hosts right after establishing, and after [`HOLD`].
    online: usize,
    online_after_hold: usize,
    /// Sessions that ended on their own while held.
    lost: usize,
    server_rss_before: Option<u64>,
    server_rss_after: Option<u64>,
    bench_rss_after: Option<u64>,
}

impl Figures {
    fn established_share(&self) -> f64 {
        self.established as f64 / self.n as f64
    }

    fn summary(&self) -> String {
        let online = if self.online_after_hold == self.n && self.lost == 0 {
            "all online".to_string()
        } else {
            format!(
                "{}/{} online after {HOLD:?}, {} lost",
                self.online_after_hold, self.n, self.lost
            )
        };
        let established = if self.established == self.n {
            String::new()
        } else {
            format!("{}/{} ", self.established, self.n)
        };
        let memory = match (self.server_rss_before, self.server_rss_after) {
            (Some(before), Some(after)) => format!(
                "server RSS {} (+{}, {:.1} KiB/session)",
                fmt_mib(after),
                fmt_mib(after.saturating_sub(before)),
                after.saturating_sub(before) as f64 / self.established.max(1) as f64
            ),
            _ => "server RSS unknown".to_string(),
        };
        let bench = self
            .bench_rss_after
            .map(|b| format!("; bench process RSS {}", fmt_mib(b)))
            .unwrap_or_default();
        format!(
            "{} sessions: {established}established in {} ({}/s), {online}; {memory}{bench}",
            self.n,
            fmt_s(self.establish_time),
            rate(self.established, self.establish_time),
        )
    }

    fn enroll_summary(&self) -> String {
        format!(
            "  ({} of {} hosts enrolled in {}, {}/s; join tokens made at {}/s)",
            self.enrolled,
            self.n,
            fmt_s(self.enroll_time),
            rate(self.enrolled, self.enroll_time),
            rate(self.n, self.token_time)
        )
    }
}

/// A simulated host's credential.
struct SimHost {
    name: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
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

async fn sessions(n: usize) -> Outcome {
    if let Err(why) = fits(n, "this process", "self") {
        return Outcome::Skipped(why);
    }
    let mut fleet = match harness("starting the server", || {
        Fleet::start(ServerOptions {
            heartbeat: SESSION_HEARTBEAT.into(),
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
        Ok(()) => match measure_sessions(&fleet, &server_pid, n).await {
            Ok(figures) => Outcome::Measured(Box::new(figures)),
            Err(e) => Outcome::Failed(format!("{e:#}")),
        },
    };
    if let Err(e) = harness("stopping the server", || fleet.stop_server()) {
        println!("warning: {e:#}");
    }
    outcome
}

/// Enroll `n` simulated hosts, open a session for each, measure, drop them.
async fn measure_sessions(fleet: &Fleet, server_pid: &str, n: usize) -> anyhow::Result<Figures> {
    let addr = ServerAddr::parse(&fleet.url).map_err(anyhow::Error::msg)?;
    let mut control = admin_client(fleet).await?;
    let mut figures = Figures {
        n,
        ..Figures::default()
    };

    // Join tokens, through the Control service as the admin.
    let start = Instant::now();
    let gate = WriteGate::new();
    let tokens = create_tokens(&control, &gate, n).await;
    figures.token_time = start.elapsed();
    println!(
        "created {} join tokens in {} ({}/s, {WRITE_CONCURRENCY} calls in flight)",
        tokens.len(),
        fmt_s(figures.token_time),
        rate(tokens.len(), figures.token_time)
    );

    // Enrollment: key, CSR, pinned TLS connection and Enroll call per host.
    let start = Instant::now();
    let hosts = enroll_all(&addr, &gate, tokens).await;
    figures.enroll_time = start.elapsed();
    figures.enrolled = hosts.len();
    println!(
        "enrolled {} hosts in {} ({}/s; {ENROLL_CONCURRENCY} hosts preparing, {WRITE_CONCURRENCY} Enroll calls in flight)",
        hosts.len(),
        fmt_s(figures.enroll_time),
        rate(hosts.len(), figures.enroll_time)
    );
    if (hosts.len() as f64) < n as f64 * MIN_ESTABLISHED {
        bail!(
            "only {} of {n} hosts enrolled; sessions not attempted",
            hosts.len()
        );
    }

    // Sessions, each over its own mTLS connection.
    figures.server_rss_before = rss_kib(server_pid);
    let bench_rss_before = rss_kib("self");
    println!(
        "before sessions: server RSS {}, bench process RSS {}",
        figures
            .server_rss_before
            .map(fmt_mib)
            .unwrap_or_else(|| "?".into()),
        bench_rss_before.map(fmt_mib).unwrap_or_else(|| "?".into())
    );
    let lost = Arc::new(Mutex::new(Failures::default()));
    let start = Instant::now();
    let (tasks, established) = open_sessions(&addr, hosts, lost.clone()).await;
    figures.establish_time = start.elapsed();
    figures.established = established;
    println!(
        "established {established}/{n} sessions in {} ({}/s)",
        fmt_s(figures.establish_time),
        rate(established, figures.establish_time)
    );

    let result = hold_and_count(&mut control, server_pid, &lost, &mut figures).await;

    // Drop every session and time how long the server takes to notice.
    let start = Instant::now();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    match wait_online_count(&mut control, |c| c == 0).await {
        Ok(0) => println!(
            "dropped the sessions; the server saw all hosts offline after {}",
            fmt_s(start.elapsed())
        ),
        Ok(c) => println!(
            "dropped the sessions; the server still shows {c} online after {}",
            fmt_s(start.elapsed())
        ),
        Err(e) => println!("dropped the sessions; counting online hosts failed: {e:#}"),
    }
    result?;
    Ok(figures)
}

/// Count online hosts, hold the sessions for [`HOLD`], read memory, count again.
async fn hold_and_count(
    control: &mut Control,
    server_pid: &str,
    lost: &Mutex<Failures>,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let established = figures.established;
    figures.online = wait_online_count(control, |c| c >= established).await?;
    println!(
        "ListHosts: {} of {} simulated hosts online",
        figures.online, figures.n
    );
    tokio::time::sleep(HOLD).await;
    figures.server_rss_after = rss_kib(server_pid);
    figures.bench_rss_after = rss_kib("self");
    figures.online_after_hold = count_online(control).await?;
    figures.lost = lock(lost).total;
    println!(
        "after {HOLD:?}: {} online, {} sessions lost; server RSS {}, bench process RSS {}",
        figures.online_after_hold,
        figures.lost,
        figures
            .server_rss_after
            .map(fmt_mib)
            .unwrap_or_else(|| "?".into()),
        figures
            .bench_rss_after
            .map(fmt_mib)
            .unwrap_or_else(|| "?".into())
    );
    lock(lost).report("held sessions");
    Ok(())
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

/// `n` join tokens, made through `gate`; failures are reported and left out.
async fn create_tokens(control: &Control, gate: &Arc<WriteGate>, n: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut control = control.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let request = pb::CreateTokenRequest {
                    labels: HashMap::from([("role".to_string(), "sim".to_string())]),
                    ttl_seconds: 3600,
                    description: "sessions benchmark".to_string(),
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
    Ok(SimHost {
        name: resp.name,
        ca_pem: resp.ca_pem,
        cert_pem: resp.cert_pem,
        key_pem,
    })
}

/// Open a session per host with bounded concurrency. Returns the tasks holding the sessions (abort
/// them to drop the sessions) and how many were established; failures are reported.
async fn open_sessions(
    addr: &ServerAddr,
    hosts: Vec<SimHost>,
    lost: Arc<Mutex<Failures>>,
) -> (Vec<tokio::task::JoinHandle<()>>, usize) {
    let limit = Arc::new(Semaphore::new(HANDSHAKE_CONCURRENCY));
    let total = hosts.len();
    let mut tasks = Vec::with_capacity(total);
    let mut results = Vec::with_capacity(total);
    for host in hosts {
        let (done_tx, done_rx) = oneshot::channel::<Result<(), String>>();
        let done_rx = async move {
            done_rx
                .await
                .unwrap_or_else(|_| Err("the session task ended without a result".to_string()))
        };
        let addr = addr.clone();
        let limit = limit.clone();
        let lost = lost.clone();
        tasks.push(tokio::spawn(async move {
            let opened = match limit.acquire_owned().await {
                Ok(_permit) => open_session(&addr, &host).await,
                Err(e) => Err(e.to_string()),
            };
            match opened {
                Ok(live) => {
                    let _ = done_tx.send(Ok(()));
                    keep_alive(live, &lost).await;
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
    (tasks, established.len())
}

/// An established session.
struct Live {
    // Held so that the connection stays up as long as the session.
    _client: pb::agent_client::AgentClient<Channel>,
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ServerMessage>,
    heartbeat: Duration,
}

/// Read what the server sends and heartbeat every interval until the session ends (recorded in
/// `lost`) or the task is aborted.
async fn keep_alive(mut live: Live, lost: &Mutex<Failures>) {
    let mut tick = tokio::time::interval(live.heartbeat);
    tick.tick().await;
    let mut seq = 0u64;
    let why = loop {
        tokio::select! {
            msg = live.inbound.message() => match msg {
                Ok(Some(_)) => {}
                Ok(None) => break "the server closed the session".to_string(),
                Err(status) => break format!("session ended: {}", status_text(&status)),
            },
            _ = tick.tick() => {
                seq += 1;
                let hb = pb::Heartbeat { seq, sent_unix_ms: unix_ms() };
                if live.tx.send(pb::AgentMessage { msg: Some(AgentMsg::Heartbeat(hb)) }).await.is_err() {
                    break "the session's send side closed".to_string();
                }
            }
        }
    };
    lock(lost).add(why);
}

/// Poll the number of online simulated hosts (every 100 ms, at most [`STATUS_TIMEOUT`]) until
/// `done` accepts it; returns the last count.
async fn wait_online_count(
    control: &mut Control,
    done: impl Fn(usize) -> bool,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + STATUS_TIMEOUT;
    loop {
        let count = count_online(control).await?;
        if done(count) || Instant::now() > deadline {
            return Ok(count);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count_online(control: &mut Control) -> anyhow::Result<usize> {
    let hosts = list_hosts(control).await?;
    Ok(hosts
        .iter()
        .filter(|h| h.name.starts_with(SIM_PREFIX) && h.status == "online")
        .count())
}

// ------------------------------------------------------------------------------------ helpers

/// How long a phase over `n` hosts may take in all; a safety net, far above expected times.
fn phase_deadline(n: usize) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(120) + Duration::from_millis(50) * n as u32
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
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------ limits

// ------------------------------------------------------------------------------------ formatting

/// The median of sorted durations.
fn median(sorted: &[Duration]) -> Duration {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2
    }
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
