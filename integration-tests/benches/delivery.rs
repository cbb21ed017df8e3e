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
//! does not fit is skipped, with the reason printed. `--help` lists the arguments.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use common::*;
use noco_certs::dial::ServerAddr;
use noco_integration_tests::{Fleet, Proc, ServerOptions};
use noco_proto::v1 as pb;

/// How often Status is polled while waiting for every host to apply a state.
const STATUS_POLL: Duration = Duration::from_millis(100);
/// The stack applied to the simulated hosts, and its compose file per change.
const SIM_STACK: &str = "bench";
/// The stack the real agents run.
const REAL_STACK: &str = "app";
/// How long real agents may take to come online, and to converge a stack.
const REAL_TIMEOUT: Duration = Duration::from_secs(180);
/// How long making tokens, enrolling, opening sessions or delivering a state to N simulated
/// hosts may take in all.
const PHASE: PhaseLimit = PhaseLimit {
    base: Duration::from_secs(120),
    per_host: Duration::from_millis(20),
};

/// The real agents' stack: the test image through `${IMAGE}`, with a health check.
fn real_compose(version: &str) -> String {
    format!(
        "services:\n  app:\n    image: ${{IMAGE}}\n    environment: {{ VERSION: \"{version}\" }}\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\n"
    )
}

// ------------------------------------------------------------------------------------ main

/// The time from `stack apply` to every matching agent having the new state, with simulated
/// agents and with real ones.
#[derive(Debug, Parser)]
#[command(
    name = "delivery",
    bin_name = "cargo bench -p noco-integration-tests --bench delivery --"
)]
struct Args {
    /// How many simulated agents, each count on a fresh server (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000", value_parser = positive)]
    sessions: Vec<usize>,
    /// How many real `noco-agent` processes, on the local Docker engine (0: none).
    #[arg(long, default_value_t = 3)]
    agents: usize,
}

fn main() -> std::process::ExitCode {
    run_async("delivery", bench(parse_args()))
}

/// Run both parts, print the summary; whether everything that ran succeeded.
async fn bench(args: Args) -> bool {
    let settings = format!("--sessions {:?} --agents {}", args.sessions, args.agents);
    let Some(machine) = begin("delivery", "state delivery", &settings) else {
        return false;
    };
    let mut summary = Summary::new(
        "delivery",
        format!("== noco state delivery benchmark ({machine}) =="),
    );
    for &n in &args.sessions {
        println!();
        println!("-- {n} simulated agents");
        summary.add(&format!("{n} simulated agents"), simulated(n).await);
    }
    if args.agents > 0 {
        let n = args.agents;
        println!();
        println!("-- {n} real agents");
        summary.add(&format!("{n} real agents"), real_agents(n).await);
    }
    summary.finish()
}

// ------------------------------------------------------------------------------------ part 1

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

    /// Record `state`, which arrived at `at`.
    fn arrived(&self, at: Instant, state: &pb::DesiredState) {
        lock(&self.arrivals).push(Arrival {
            at,
            generation: state.generation,
            revision: state
                .stacks
                .iter()
                .find(|s| s.name == SIM_STACK)
                .map(|s| s.revision.clone()),
        });
    }
}

/// On a fresh server: enroll `n` simulated hosts, open their sessions, time two changes, drop
/// the sessions.
async fn simulated(n: usize) -> Outcome {
    on_fresh_server(n, async |fleet, server_pid| {
        measure_simulated(fleet, server_pid, n).await
    })
    .await
}

async fn measure_simulated(fleet: &Fleet, server_pid: &str, n: usize) -> Outcome {
    let addr = match ServerAddr::parse(&fleet.url) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e),
    };
    let control = match admin_client(fleet).await {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    let enrolled = match enroll_sims(fleet, &control, n, "delivery benchmark", PHASE).await {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };

    // Each session verifies, records and acks every desired state at once.
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let shared = counters.clone();
    let (tasks, logs) = open_sessions(&addr, enrolled.hosts, PHASE, move |host, live| {
        let counters = shared.clone();
        let log = Arc::new(SessionLog::default());
        (log.clone(), async move {
            let mut acker = Acker::new(host);
            serve(live, &counters.lost, |env, at| {
                Some(acker.receive(env, at, &counters, |state, now| {
                    log.arrived(at, state);
                    all_converged(state, now)
                }))
            })
            .await
        })
    })
    .await;
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
    drop_sessions(tasks).await;
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
    let deadline = PHASE.deadline(logs.len());
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
            "   (goal: p99 < 1 s)"
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
    let deadline = PHASE.deadline(logs.len());
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
    let hosts = stack_status(control, SIM_STACK).await?;
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
                    .filter(|h| {
                        names.contains(&h.name) && h.status() == noco_proto::v1::Presence::Online
                    })
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
    let resp = apply_stack(control, request).await?;
    if resp.hosts.len() != n {
        bail!(
            "the stack was assigned to {} hosts, not {n}",
            resp.hosts.len()
        );
    }
    let revision = resp.revision;
    let mut last_states = Vec::new();
    while start.elapsed() < REAL_TIMEOUT {
        let hosts = stack_status(control, REAL_STACK).await?;
        let converged = hosts
            .iter()
            .filter(|h| {
                h.reported.iter().any(|s| {
                    s.name == REAL_STACK
                        && s.revision == revision
                        && s.state() == noco_proto::v1::ApplyState::Converged
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
