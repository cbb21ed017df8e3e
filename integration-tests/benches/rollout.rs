//! Benchmark: noco's own overhead per batch of a rollout (issue 5, "Figures to print").
//!
//! Everything runs against a real `noco-server` binary (a release build under `cargo bench`)
//! on 127.0.0.1, over real mutual TLS. `--hosts` simulated hosts (`role=sim`) are enrolled
//! in-process and each opens its own mTLS `Agent.Session` (the helpers of `common`). The
//! simulated agents apply instantly: every desired state is verified
//! (`noco_certs::state::verify` against the host's trust root and id) and at once acked with a
//! StateReport giving every stack in it `converged` with one service `app` running 1/1, health
//! `none`. Their own apply time is therefore ~0 (measured and printed), and what is measured is
//! noco's overhead: pushing the pins of a step, taking the reports, judging the hosts and
//! starting the next step.
//!
//! A first revision of the stack is applied with `ApplyStack` and awaited on every host (Status
//! shows it reported converged). Then, `--runs` times, a rollout to a new revision (env
//! `VERSION`) is started with `--canary` (default 0), `--batch` hosts per step and min-healthy 0,
//! and timed from the StartRollout call until GetRollout (polled every 20 ms) says `succeeded`.
//! Per step, from the rollout's events (`step k of n` to the next step, or to `Succeeded`) and the
//! agents' receipt times: push (step start → the last host of the step received the new state),
//! judge (→ the server's last `healthy on` event of the step) and advance (→ the next step).
//!
//! Timing goals are not asserted. It exits non-zero only when the measurement cannot be made:
//! the server does not start, hosts do not enroll or connect, or a rollout does not succeed (its
//! phase, reason and last events are printed).
//!
//! ```text
//! cargo bench -p noco-integration-tests --bench rollout -- [--hosts 100] [--batch 10] [--runs 3] [--canary 0]
//! ```

mod common;

use common::*;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
use noco_certs::signing::TrustRoot;
use noco_certs::state::{self as signed, Accepted, Verdict};
use noco_certs::token::Token;
use noco_certs::{csr, tls};
use noco_integration_tests::{Fleet, ServerOptions, bin_dir};
use noco_proto::v1 as pb;
use pb::agent_message::Msg as AgentMsg;
use pb::server_message::Msg as ServerMsg;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Deadline of one TCP + TLS connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one unary call, and of the session call and its Welcome.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often GetRollout (and Status, while waiting for the first revision) is polled.
const POLL: Duration = Duration::from_millis(20);
/// Enrollments in flight (key, CSR, connection, call).
const ENROLL_CONCURRENCY: usize = 64;
/// Calls in flight that make the server write and flush its database (CreateToken, Enroll).
const WRITE_CONCURRENCY: usize = 64;
/// Concurrent session handshakes.
const HANDSHAKE_CONCURRENCY: usize = 128;
/// Server heartbeat: slow, so heartbeats do not add to what is measured.
const SIM_HEARTBEAT: &str = "10s";
/// File descriptors (and ports) needed beyond one per session.
const FD_MARGIN: u64 = 256;
/// Status and ListHosts of many hosts are larger than tonic's default 4 MiB limit.
const MAX_LIST_MESSAGE: usize = 256 * 1024 * 1024;
/// Simulated host names: `sim-00042`.
const SIM_PREFIX: &str = "sim-";
/// The stack rolled out.
const STACK: &str = "bench";
/// The rollout's per-step deadline (a host not healthy by then fails the rollout).
const STEP_DEADLINE_MS: u64 = 60_000;
/// How many events of a rollout that did not succeed are printed.
const LAST_EVENTS: usize = 15;

type Control = pb::control_client::ControlClient<Channel>;

/// The stack's compose file at `version` (1: the first revision, applied with ApplyStack).
fn compose(version: usize) -> String {
    if version <= 1 {
        "services:\n  app:\n    image: noco-testapp:latest\n".to_string()
    } else {
        format!(
            "services:\n  app:\n    image: noco-testapp:latest\n    environment:\n      VERSION: \"{version}\"\n"
        )
    }
}

/// How long a phase over `n` hosts may take in all; a safety net, far above expected times.
fn phase_deadline(n: usize) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60) + Duration::from_millis(20) * n as u32
}

// ------------------------------------------------------------------------------------ main

#[derive(Debug)]
struct Args {
    hosts: usize,
    batch: usize,
    runs: usize,
    canary: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        hosts: 100,
        batch: 10,
        runs: 3,
        canary: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let target = match flag.as_str() {
            "--hosts" => &mut args.hosts,
            "--batch" => &mut args.batch,
            "--runs" => &mut args.runs,
            "--canary" => &mut args.canary,
            // cargo bench passes `--bench`; anything else is not ours either.
            _ => continue,
        };
        let v = inline
            .or_else(|| it.next())
            .with_context(|| format!("{flag} needs a value"))?;
        *target = v
            .parse()
            .with_context(|| format!("{flag} {v:?} is not a number"))?;
    }
    if args.hosts == 0 || args.batch == 0 || args.runs == 0 {
        bail!("--hosts, --batch and --runs must be positive");
    }
    Ok(args)
}

fn main() -> ExitCode {
    noco_certs::install_crypto_provider();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rollout benchmark: {e:#}");
            eprintln!(
                "usage: cargo bench -p noco-integration-tests --bench rollout -- [--hosts 100] [--batch 10] [--runs 3] [--canary 0]"
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
            eprintln!("rollout benchmark: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = runtime.block_on(bench(args));
    runtime.shutdown_timeout(Duration::from_secs(5));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Start the server, measure, print; whether every rollout succeeded.
async fn bench(args: Args) -> bool {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "noco rollout benchmark: --hosts {} --batch {} --runs {} --canary {} (min-healthy 0)",
        args.hosts, args.batch, args.runs, args.canary
    );
    println!("{}", raise_open_files_limit());
    if let Err(why) = fits(args.hosts, "this process", "self") {
        eprintln!("rollout benchmark: {why}");
        return false;
    }
    let build = match harness("building the noco binaries", || bin_dir().to_path_buf()) {
        Ok(dir) => {
            println!("binaries: {}", dir.display());
            dir.file_name()
                .map(|n| format!("{} build", n.to_string_lossy()))
                .unwrap_or_default()
        }
        Err(e) => {
            eprintln!("rollout benchmark failed: {e:#}");
            return false;
        }
    };
    let mut fleet = match harness("starting the server", || {
        Fleet::start(ServerOptions {
            heartbeat: SIM_HEARTBEAT.into(),
            ..ServerOptions::default()
        })
    }) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rollout benchmark failed: {e:#}");
            return false;
        }
    };
    let (runs, failure) = match measure(&fleet, &args).await {
        Ok(runs) => (runs, None),
        Err((runs, e)) => (runs, Some(e)),
    };
    if failure.is_some() {
        println!(
            "server log (last lines):\n{}",
            tail(&fleet.server_log(), 30)
        );
    }
    if let Err(e) = harness("stopping the server", || fleet.stop_server()) {
        println!("warning: {e:#}");
    }

    println!();
    println!("== noco rollout benchmark ({cores} cores, {build}) ==");
    println!(
        "{} simulated hosts, canary {}, batch {}, min-healthy 0; agents apply instantly",
        args.hosts, args.canary, args.batch
    );
    for (i, run) in runs.iter().enumerate() {
        println!("  run {}: {}", i + 1, run.line());
    }
    if !runs.is_empty() {
        let all: Vec<i64> = runs
            .iter()
            .flat_map(|r| r.steps.iter().map(|s| s.duration))
            .collect();
        let totals: Vec<Duration> = runs.iter().map(|r| r.total).collect();
        let mean_total = totals.iter().sum::<Duration>() / totals.len() as u32;
        println!(
            "  over {} runs: total mean {}, min {}, max {}; per batch mean {}, max {}   (goal: < 200 ms per batch)",
            runs.len(),
            fmt_ms(mean_total),
            fmt_ms(*totals.iter().min().unwrap_or(&Duration::ZERO)),
            fmt_ms(*totals.iter().max().unwrap_or(&Duration::ZERO)),
            ms(mean(&all)),
            ms(all.iter().copied().max().unwrap_or(0) as f64),
        );
    }
    match failure {
        None => true,
        Some(e) => {
            println!("  FAILED: {e}");
            eprintln!("rollout benchmark: FAILED (see above)");
            false
        }
    }
}

/// Enroll and connect the hosts, apply the first revision, time `--runs` rollouts. On failure,
/// the runs measured so far and why.
async fn measure(fleet: &Fleet, args: &Args) -> Result<Vec<RunFigures>, (Vec<RunFigures>, String)> {
    let fail = |e: anyhow::Error| (Vec::new(), format!("{e:#}"));
    let addr = ServerAddr::parse(&fleet.url).map_err(|e| fail(anyhow!(e)))?;
    let mut control = admin_client(fleet).await.map_err(fail)?;
    let n = args.hosts;

    let start = Instant::now();
    let gate = WriteGate::new();
    let tokens = create_tokens(&control, &gate, n).await;
    let hosts = enroll_all(&addr, &gate, tokens).await;
    if hosts.len() < n {
        return Err(fail(anyhow!("only {} of {n} hosts enrolled", hosts.len())));
    }
    println!("enrolled {n} hosts in {}", fmt_s(start.elapsed()));

    let start = Instant::now();
    let counters = Arc::new(Counters::default());
    let agents = Agents::connect(&addr, hosts, counters.clone()).await;
    if agents.logs.len() < n {
        return Err(fail(anyhow!(
            "only {} of {n} sessions established",
            agents.logs.len()
        )));
    }
    println!("established {n} sessions in {}", fmt_s(start.elapsed()));

    let result = rollouts(&mut control, args, &agents, &counters).await;
    let lost = lock(&counters.lost).clone();
    if lost.total > 0 {
        println!(
            "{} sessions ended on their own; first: {}",
            lost.total,
            lost.first.unwrap_or_default()
        );
    }
    agents.stop().await;
    result
}

async fn rollouts(
    control: &mut Control,
    args: &Args,
    agents: &Agents,
    counters: &Counters,
) -> Result<Vec<RunFigures>, (Vec<RunFigures>, String)> {
    let start = Instant::now();
    let first = first_revision(control, args.hosts)
        .await
        .map_err(|e| (Vec::new(), format!("{e:#}")))?;
    println!(
        "first revision {} reported converged by all {} hosts after {}",
        short(&first),
        args.hosts,
        fmt_s(start.elapsed())
    );
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        println!();
        println!("-- run {run} of {}", args.runs);
        match one_rollout(control, args, agents, counters, run + 1).await {
            Ok(figures) => {
                figures.print();
                runs.push(figures);
            }
            Err(e) => return Err((runs, format!("run {run}: {e:#}"))),
        }
    }
    Ok(runs)
}

/// Apply the first revision to `role=sim`; wait until Status shows every host reporting it
/// converged. Its revision.
async fn first_revision(control: &mut Control, n: usize) -> anyhow::Result<String> {
    let request = pb::ApplyStackRequest {
        name: STACK.to_string(),
        selector: "role=sim".to_string(),
        compose: compose(1).into_bytes(),
        ..Default::default()
    };
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
    wait_converged(control, &resp.revision, n).await?;
    Ok(resp.revision)
}

/// Wait until the stack is at `revision` and Status shows all `n` hosts reporting it converged.
async fn wait_converged(control: &mut Control, revision: &str, n: usize) -> anyhow::Result<()> {
    let deadline = phase_deadline(n);
    let mut seen = 0;
    while tokio::time::Instant::now() < deadline {
        let request = pb::StatusRequest {
            stack: STACK.to_string(),
        };
        let hosts = match tokio::time::timeout(CALL_TIMEOUT, control.status(request)).await {
            Ok(Ok(resp)) => resp.into_inner().hosts,
            Ok(Err(status)) => bail!("Status: {}", status_text(&status)),
            Err(_) => bail!("Status did not answer within {CALL_TIMEOUT:?}"),
        };
        seen = hosts
            .iter()
            .filter(|h| {
                h.assigned.iter().any(|s| s.revision == revision)
                    && h.reported.iter().any(|s| {
                        s.name == STACK && s.revision == revision && s.state == "converged"
                    })
            })
            .count();
        if seen >= n {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    bail!(
        "Status shows only {seen} of {n} hosts assigned and reporting {} converged",
        short(revision)
    )
}

// ------------------------------------------------------------------------------------ one rollout

/// One step of a rollout, from its events and the agents' receipt times (Unix ms).
#[derive(Debug)]
struct StepFigures {
    hosts: usize,
    /// Step start → next step (or Succeeded).
    duration: i64,
    /// Step start → the last host of the step received the new state.
    push: i64,
    /// Last receipt → the last `healthy on` event of the step.
    judge: i64,
    /// Last `healthy on` event → next step (or Succeeded).
    advance: i64,
    /// Distinct times of the step's `healthy on` events: about how many driver passes (each a
    /// persisted transition) it took to judge the step's hosts.
    passes: usize,
}

#[derive(Debug)]
struct RunFigures {
    id: String,
    to: String,
    /// StartRollout call → GetRollout says succeeded.
    total: Duration,
    start_rpc: Duration,
    /// First step's event → Succeeded event.
    by_events: i64,
    /// Succeeded event → seen by the poll.
    seen_after: i64,
    steps: Vec<StepFigures>,
    /// Longest any agent took from receiving a state to queueing its report.
    agent_apply_max: Duration,
}

impl RunFigures {
    fn batch_stats(&self) -> (f64, i64) {
        let d: Vec<i64> = self.steps.iter().map(|s| s.duration).collect();
        (mean(&d), d.iter().copied().max().unwrap_or(0))
    }

    fn line(&self) -> String {
        let (mean, max) = self.batch_stats();
        format!(
            "total {}, {} steps, per batch mean {}, max {}   (goal: < 200 ms per batch)",
            fmt_ms(self.total),
            self.steps.len(),
            ms(mean),
            ms(max as f64)
        )
    }

    fn print(&self) {
        println!(
            "rollout {} to {}: succeeded; StartRollout returned after {}",
            self.id,
            short(&self.to),
            fmt_ms(self.start_rpc)
        );
        for (i, s) in self.steps.iter().enumerate() {
            println!(
                "  step {:>2} ({} hosts): {:>4} ms = push {:>3} ms + judge {:>3} ms (driver passes: {}) + advance {:>3} ms",
                i + 1,
                s.hosts,
                s.duration,
                s.push,
                s.judge,
                s.passes,
                s.advance
            );
        }
        println!(
            "  events: first step → Succeeded {} ms; seen by GetRollout {} ms later; agents' own apply time max {:.2} ms",
            self.by_events,
            self.seen_after,
            self.agent_apply_max.as_secs_f64() * 1000.0
        );
        println!("  {}", self.line());
    }
}

/// Roll the stack out to `version`; time it until it succeeded, then wait until the stack and
/// every host are on the new revision (so the next run starts from it).
async fn one_rollout(
    control: &mut Control,
    args: &Args,
    agents: &Agents,
    counters: &Counters,
    version: usize,
) -> anyhow::Result<RunFigures> {
    counters.apply_max_ns.store(0, Ordering::Relaxed);
    let request = pb::StartRolloutRequest {
        stack: STACK.to_string(),
        compose: compose(version).into_bytes(),
        config: Some(pb::RolloutConfig {
            canary: args.canary as u32,
            batch_count: args.batch as u32,
            min_healthy_ms: 0,
            deadline_ms: STEP_DEADLINE_MS,
            max_failures: 0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let start = Instant::now();
    let info = match tokio::time::timeout(CALL_TIMEOUT, control.start_rollout(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => bail!("StartRollout: {}", status_text(&status)),
        Err(_) => bail!("StartRollout did not answer within {CALL_TIMEOUT:?}"),
    };
    let start_rpc = start.elapsed();
    println!(
        "StartRollout: rollout {} from {} to {}, {} steps",
        info.id,
        short(&info.from_revision),
        short(&info.to_revision),
        info.steps
    );

    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(STEP_DEADLINE_MS) * info.steps.max(1)
        + CALL_TIMEOUT;
    let mut progress = Instant::now();
    let (info, total, seen_ms) = loop {
        let request = pb::GetRolloutRequest {
            stack: STACK.to_string(),
        };
        let info = match tokio::time::timeout(CALL_TIMEOUT, control.get_rollout(request)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => bail!("GetRollout: {}", status_text(&status)),
            Err(_) => bail!("GetRollout did not answer within {CALL_TIMEOUT:?}"),
        };
        match info.phase.as_str() {
            "succeeded" => break (info, start.elapsed(), unix_ms()),
            "running" | "rolling_back" | "paused" => {}
            _ => bail!("{}", not_succeeded(&info)),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not succeeded in time: {}", not_succeeded(&info));
        }
        if progress.elapsed() >= Duration::from_secs(5) {
            println!("  … step {} of {}, {}", info.step, info.steps, info.phase);
            progress = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    };
    let agent_apply_max = Duration::from_nanos(counters.apply_max_ns.load(Ordering::Relaxed));
    let figures = step_figures(&info, agents, total, start_rpc, seen_ms, agent_apply_max)?;
    wait_converged(control, &info.to_revision, args.hosts)
        .await
        .context("after the rollout")?;
    let failures = counters.verify_failures.load(Ordering::Relaxed);
    if failures > 0 {
        bail!(
            "{failures} desired states failed verification; first: {}",
            lock(&counters.first_failure).clone().unwrap_or_default()
        );
    }
    Ok(figures)
}

/// The phase, reason and last events of a rollout that did not succeed.
fn not_succeeded(info: &pb::RolloutInfo) -> String {
    let events: Vec<String> = info
        .events
        .iter()
        .rev()
        .take(LAST_EVENTS)
        .rev()
        .map(|e| {
            let host = if e.host.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.host)
            };
            format!("  {} {host}{}", e.at_unix_ms, e.what)
        })
        .collect();
    format!(
        "rollout {} is {} at step {} of {} (reason: {:?}); last events:\n{}",
        info.id,
        info.phase,
        info.step,
        info.steps,
        info.reason,
        events.join("\n")
    )
}

/// Per-step figures from a succeeded rollout's events and the agents' receipt times.
fn step_figures(
    info: &pb::RolloutInfo,
    agents: &Agents,
    total: Duration,
    start_rpc: Duration,
    seen_ms: i64,
    agent_apply_max: Duration,
) -> anyhow::Result<RunFigures> {
    let n = info.steps as usize;
    let mut starts = vec![None; n];
    let mut succeeded = None;
    for e in info.events.iter().filter(|e| e.host.is_empty()) {
        if let Some(k) = step_number(&e.what)
            && (1..=n).contains(&k)
        {
            starts[k - 1] = Some(e.at_unix_ms);
        } else if e.what.starts_with("Succeeded") {
            succeeded = Some(e.at_unix_ms);
        }
    }
    let succeeded = succeeded.context("the rollout has no Succeeded event")?;
    let starts: Vec<i64> = starts
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.with_context(|| format!("no `step {} of {n}` event", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    let mut steps = Vec::with_capacity(n);
    for (k, &begin) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(succeeded);
        let hosts: Vec<&str> = info
            .hosts
            .iter()
            .filter(|h| h.step as usize == k + 1)
            .map(|h| h.host.as_str())
            .collect();
        let mut received = begin;
        for h in &hosts {
            let at = agents
                .received(h, &info.to_revision)
                .with_context(|| format!("{h} never received {}", short(&info.to_revision)))?;
            received = received.max(at);
        }
        let mut judged: Vec<i64> = info
            .events
            .iter()
            .filter(|e| hosts.contains(&e.host.as_str()) && e.what.starts_with("healthy on"))
            .map(|e| e.at_unix_ms)
            .collect();
        judged.sort();
        judged.dedup();
        let healthy = judged.last().copied().unwrap_or(end).max(received);
        steps.push(StepFigures {
            hosts: hosts.len(),
            duration: end - begin,
            push: received - begin,
            judge: healthy - received,
            advance: end - healthy,
            passes: judged.len(),
        });
    }
    Ok(RunFigures {
        id: info.id.clone(),
        to: info.to_revision.clone(),
        total,
        start_rpc,
        by_events: succeeded - starts.first().copied().unwrap_or(succeeded),
        seen_after: seen_ms - succeeded,
        steps,
        agent_apply_max,
    })
}

/// `k` of a `step k of n: …` event.
fn step_number(what: &str) -> Option<usize> {
    what.strip_prefix("step ")?
        .split_once(" of ")?
        .0
        .parse()
        .ok()
}

// ------------------------------------------------------------------------------------ agents

/// A simulated host's credential and trust root.
struct SimHost {
    name: String,
    host_id: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    trust: Arc<TrustRoot>,
}

/// An established session.
struct Live {
    // Held so that the connection stays up as long as the session.
    _client: pb::agent_client::AgentClient<Channel>,
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ServerMessage>,
    heartbeat: Duration,
}

/// When one host received each revision of [`STACK`] (first receipt, Unix ms).
#[derive(Debug, Default)]
struct HostLog {
    received: Mutex<HashMap<String, i64>>,
}

#[derive(Debug, Default)]
struct Counters {
    verify_failures: AtomicUsize,
    first_failure: Mutex<Option<String>>,
    /// The longest receipt → report queued, in ns, since the last reset.
    apply_max_ns: AtomicU64,
    /// Why sessions ended on their own.
    lost: Mutex<Failures>,
}

/// The sessions of the simulated hosts, by host name.
struct Agents {
    logs: HashMap<String, Arc<HostLog>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agents {
    /// Open a session per host (bounded concurrency) and serve each in its own task.
    async fn connect(addr: &ServerAddr, hosts: Vec<SimHost>, counters: Arc<Counters>) -> Agents {
        let deadline = phase_deadline(hosts.len());
        let opened: Vec<(SimHost, Result<Live, String>)> = futures_util::stream::iter(hosts)
            .map(|host| async move {
                let live = match tokio::time::timeout_at(deadline, open_session(addr, &host)).await
                {
                    Ok(r) => r,
                    Err(_) => Err("not connected before the phase deadline".to_string()),
                };
                (host, live)
            })
            .buffer_unordered(HANDSHAKE_CONCURRENCY)
            .collect()
            .await;
        let mut agents = Agents {
            logs: HashMap::new(),
            tasks: Vec::new(),
        };
        let mut failures = Failures::default();
        for (host, live) in opened {
            match live {
                Ok(live) => {
                    let log = Arc::new(HostLog::default());
                    agents.logs.insert(host.name.clone(), log.clone());
                    let counters = counters.clone();
                    agents.tasks.push(tokio::spawn(async move {
                        serve(live, &host, &log, &counters).await;
                    }));
                }
                Err(e) => failures.add(e),
            }
        }
        failures.report("sessions");
        agents
    }

    fn received(&self, host: &str, revision: &str) -> Option<i64> {
        lock(&self.logs.get(host)?.received).get(revision).copied()
    }

    async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Verify and ack every desired state at once; heartbeat every interval; until the session
/// ends (recorded in `counters.lost`) or the task is aborted.
async fn serve(mut live: Live, host: &SimHost, log: &HostLog, counters: &Counters) {
    let mut tick = tokio::time::interval(live.heartbeat);
    tick.tick().await;
    let mut seq = 0u64;
    let mut last: Option<(Accepted, pb::StateReport)> = None;
    let why = loop {
        let reply = tokio::select! {
            msg = live.inbound.message() => match msg {
                Ok(Some(pb::ServerMessage { msg: Some(ServerMsg::DesiredState(env)) })) => {
                    let at = Instant::now();
                    let reply = apply(&env, host, &mut last, log, counters);
                    counters
                        .apply_max_ns
                        .fetch_max(at.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    Some(reply)
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

/// Verify a received state as an agent would and "apply" it instantly: the report saying every
/// stack in it converged, its one service running and without a healthcheck.
fn apply(
    env: &pb::SignedState,
    host: &SimHost,
    last: &mut Option<(Accepted, pb::StateReport)>,
    log: &HostLog,
    counters: &Counters,
) -> AgentMsg {
    let now = unix_ms();
    let accepted = last.as_ref().map(|(a, _)| a);
    let previous = || last.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
    let state = match signed::verify(&host.trust, env, &host.host_id, accepted, SystemTime::now()) {
        Ok(Verdict::New(state)) => state,
        Ok(Verdict::Same) => {
            return AgentMsg::Report(pb::StateReport {
                sent_unix_ms: now,
                ..previous()
            });
        }
        Err(refusal) => {
            counters.verify_failures.fetch_add(1, Ordering::Relaxed);
            lock(&counters.first_failure).get_or_insert_with(|| refusal.to_string());
            return AgentMsg::Report(pb::StateReport {
                refused: refusal.to_string(),
                sent_unix_ms: now,
                ..previous()
            });
        }
    };
    if let Some(s) = state.stacks.iter().find(|s| s.name == STACK) {
        lock(&log.received).entry(s.revision.clone()).or_insert(now);
    }
    let report = pb::StateReport {
        generation: state.generation,
        stacks: state
            .stacks
            .iter()
            .map(|s| pb::StackReport {
                name: s.name.clone(),
                revision: s.revision.clone(),
                state: "converged".to_string(),
                services: vec![pb::ServiceReport {
                    name: "app".to_string(),
                    running: 1,
                    desired: 1,
                    health: "none".to_string(),
                }],
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

// ------------------------------------------------------------------------------------ enrollment
// What `common::enroll_all` expects of the benchmark using it.

/// Admits [`WRITE_CONCURRENCY`] write calls at a time, each bounded by [`CALL_TIMEOUT`].
struct WriteGate {
    permits: Semaphore,
}

impl WriteGate {
    fn new() -> Arc<Self> {
        Arc::new(WriteGate {
            permits: Semaphore::new(WRITE_CONCURRENCY),
        })
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(format!("{what}: {}", status_text(&status))),
            Err(_) => Err(format!("{what} did not answer within {CALL_TIMEOUT:?}")),
        }
    }
}

/// `n` join tokens for `role=sim`; failures are reported and left out.
async fn create_tokens(control: &Control, gate: &WriteGate, n: usize) -> Vec<String> {
    let calls = (0..n).map(|_| {
        let mut control = control.clone();
        async move {
            let request = pb::CreateTokenRequest {
                labels: HashMap::from([("role".to_string(), "sim".to_string())]),
                ttl_seconds: 3600,
                description: "rollout benchmark".to_string(),
            };
            gate.call("CreateToken", control.create_token(request))
                .await
                .map(|r| r.token)
        }
    });
    let results: Vec<Result<String, String>> = futures_util::future::join_all(calls).await;
    let mut failures = Failures::default();
    let tokens = results
        .into_iter()
        .filter_map(|r| r.map_err(|e| failures.add(e)).ok())
        .collect();
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

/// Await spawned tasks until `deadline`: the successes, and the failures (late ones count as
/// failed and are aborted).
async fn collect_tasks<T: Send + 'static>(
    what: &'static str,
    tasks: Vec<tokio::task::JoinHandle<Result<T, String>>>,
    deadline: tokio::time::Instant,
) -> (Vec<T>, Failures) {
    let mut done = Vec::with_capacity(tasks.len());
    let mut failures = Failures::default();
    let mut progress = Progress::new(what, tasks.len());
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(v))) => done.push(v),
            Ok(Ok(Err(e))) => failures.add(e),
            Ok(Err(e)) => failures.add(format!("task: {e}")),
            Err(_) => {
                abort.abort();
                failures.add("not done before the phase deadline".to_string());
            }
        }
        progress.tick(done.len());
    }
    (done, failures)
}

/// Failed operations: how many, and the first message.
#[derive(Debug, Default, Clone)]
struct Failures {
    total: usize,
    first: Option<String>,
}

impl Failures {
    fn add(&mut self, message: String) {
        self.total += 1;
        self.first.get_or_insert(message);
    }

    fn report(&self, what: &str) {
        if let Some(first) = &self.first {
            println!("{} {what} failed; first: {first}", self.total);
        }
    }
}

// ------------------------------------------------------------------------------------ formatting

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn mean(values: &[i64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<i64>() as f64 / values.len() as f64
    }
}

fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// `sha256:0123456789ab` of a revision.
fn short(revision: &str) -> &str {
    revision.get(..19).unwrap_or(revision)
}
