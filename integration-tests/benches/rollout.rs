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
//!
//! `--help` lists the arguments.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use common::*;
use noco_certs::dial::ServerAddr;
use noco_integration_tests::{Fleet, ServerOptions};
use noco_proto::v1 as pb;

/// How often GetRollout (and Status, while waiting for the first revision) is polled.
const POLL: Duration = Duration::from_millis(20);
/// The stack rolled out.
const STACK: &str = "bench";
/// The rollout's per-step deadline (a host not healthy by then fails the rollout).
const STEP_DEADLINE_MS: u64 = 60_000;
/// How many events of a rollout that did not succeed are printed.
const LAST_EVENTS: usize = 15;
/// How long making tokens, enrolling, opening sessions or converging N hosts may take in all.
const PHASE: PhaseLimit = PhaseLimit {
    base: Duration::from_secs(60),
    per_host: Duration::from_millis(20),
};

// ------------------------------------------------------------------------------------ main

/// noco's own overhead per batch of a rollout over simulated hosts that apply instantly.
#[derive(Debug, Parser)]
#[command(
    name = "rollout",
    bin_name = "cargo bench -p noco-integration-tests --bench rollout --"
)]
struct Args {
    /// How many simulated hosts the stack runs on.
    #[arg(long, default_value_t = 100, value_parser = positive)]
    hosts: usize,
    /// Hosts per batch after the canary.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    batch: usize,
    /// How many rollouts are timed, one after the other.
    #[arg(long, default_value_t = 3, value_parser = positive)]
    runs: usize,
    /// Hosts in the canary step (0: none).
    #[arg(long, default_value_t = 0)]
    canary: usize,
}

fn main() -> std::process::ExitCode {
    run_async("rollout", bench(parse_args()))
}

/// Start the server, measure, print; whether every rollout succeeded.
async fn bench(args: Args) -> bool {
    let settings = format!(
        "--hosts {} --batch {} --runs {} --canary {} (min-healthy 0)",
        args.hosts, args.batch, args.runs, args.canary
    );
    let Some(machine) = begin("rollout", "rollout", &settings) else {
        return false;
    };
    if let Err(why) = fits(args.hosts, "this process", "self") {
        eprintln!("rollout benchmark: {why}");
        return false;
    }
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
    println!("== noco rollout benchmark ({machine}) ==");
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

    let enrolled = enroll_sims(fleet, &control, n, "rollout benchmark", PHASE)
        .await
        .map_err(fail)?;
    if enrolled.hosts.len() < n {
        return Err(fail(anyhow!(
            "only {} of {n} hosts enrolled",
            enrolled.hosts.len()
        )));
    }

    let start = Instant::now();
    let counters = Arc::new(Counters::default());
    let agents = Agents::connect(&addr, enrolled.hosts, counters.clone()).await;
    if agents.logs.len() < n {
        return Err(fail(anyhow!(
            "only {} of {n} sessions established",
            agents.logs.len()
        )));
    }
    println!("established {n} sessions in {}", fmt_s(start.elapsed()));

    let result = rollouts(&mut control, args, &agents, &counters).await;
    lock(&counters.lost).report("sessions (ended on their own)");
    drop_sessions(agents.tasks).await;
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
        compose: sim_compose(0).into_bytes(),
        ..Default::default()
    };
    let resp = apply_stack(control, request).await?;
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
    let deadline = PHASE.deadline(n);
    let mut seen = 0;
    while tokio::time::Instant::now() < deadline {
        let hosts = stack_status(control, STACK).await?;
        seen = hosts
            .iter()
            .filter(|h| {
                h.assigned.iter().any(|s| s.revision == revision)
                    && h.reported.iter().any(|s| {
                        s.name == STACK
                            && s.revision == revision
                            && s.state() == noco_proto::v1::ApplyState::Converged
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
        compose: sim_compose(version).into_bytes(),
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
        match info.phase().to_string().as_str() {
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

/// When one host received each revision of [`STACK`] (first receipt, Unix ms).
#[derive(Debug, Default)]
struct HostLog {
    received: Mutex<HashMap<String, i64>>,
}

impl HostLog {
    /// Record the revision of [`STACK`] in `state`, if any, as received at `at` (Unix ms).
    fn received(&self, state: &pb::DesiredState, at: i64) {
        if let Some(s) = state.stacks.iter().find(|s| s.name == STACK) {
            lock(&self.received).entry(s.revision.clone()).or_insert(at);
        }
    }
}

/// The sessions of the simulated hosts, by host name.
struct Agents {
    logs: HashMap<String, Arc<HostLog>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agents {
    /// Open a session per host; each verifies every desired state as an agent would and at once
    /// acks it "applied": every stack in it converged, its one service `app` running and
    /// without a healthcheck.
    async fn connect(addr: &ServerAddr, hosts: Vec<SimHost>, counters: Arc<Counters>) -> Agents {
        let (tasks, logs) = open_sessions(addr, hosts, PHASE, move |host, live| {
            let counters = counters.clone();
            let log = Arc::new(HostLog::default());
            let kept = (host.name.clone(), log.clone());
            (kept, async move {
                let mut acker = Acker::new(host);
                serve(live, &counters.lost, |env, at| {
                    let received = unix_ms();
                    Some(acker.receive(env, at, &counters, |state, now| {
                        log.received(state, received);
                        state
                            .stacks
                            .iter()
                            .map(|s| pb::StackReport {
                                services: vec![pb::ServiceReport {
                                    name: "app".to_string(),
                                    running: 1,
                                    desired: 1,
                                    health: noco_proto::v1::Health::None.into(),
                                }],
                                ..converged(&s.name, &s.revision, now)
                            })
                            .collect()
                    }))
                })
                .await
            })
        })
        .await;
        Agents {
            logs: logs.into_iter().collect(),
            tasks,
        }
    }

    fn received(&self, host: &str, revision: &str) -> Option<i64> {
        lock(&self.logs.get(host)?.received).get(revision).copied()
    }
}

// ------------------------------------------------------------------------------------ formatting

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
