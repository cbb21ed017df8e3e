//! Benchmark: OpenTelemetry export (issue 12): what OTLP export costs the server, in CPU and
//! memory, for a fleet sending metrics. Goal: under 10% more CPU with export on than off.
//!
//! Two runs on the same load, side by side: **A**, a fresh `noco-server` without OTLP, and
//! **B**, a fresh server with `--otlp-endpoint` pointing at an OTLP collector in this process
//! (`noco_integration_tests::otlp::Collector`: the real OTLP/gRPC trace, metrics and logs
//! services, keeping everything it receives) and `--otlp-metrics-interval` (default the server's,
//! 60s).
//! `--repeat N` runs the pair N times, alternating (A, B, A, B, …), to show the noise.
//!
//! Each run (release binaries under `cargo bench`, on 127.0.0.1, over real mutual TLS):
//! `--hosts` simulated hosts (default 1,000) are enrolled in-process through the real Enroll
//! RPC; stack `shop` (services web, api, worker, … one per container) is applied to them; each
//! host opens its mTLS `Agent.Session` (Hello → Welcome, heartbeats every 10 s, its desired
//! state verified and reported converged as an agent does) and its own mTLS connection and
//! `Telemetry.Stream` (Hello → LogResume), as `noco-agent` does. Every host then sends every
//! `--metrics-every` seconds (10) a MetricsSample of itself and its `--host-containers` (10)
//! containers of stack `shop` (every field set), and every second `--host-lines` (1) log lines
//! of ~100 bytes from its containers in turn, so that container log records are exported too;
//! it reads the server's acks. The hosts are spread over the second.
//!
//! After `--settle` seconds of that load (20), over `--window` seconds (60): the server
//! process's CPU (user + system time from `/proc/<pid>/stat` over wall time; 100% is one core,
//! with a row every 10 s), its RSS (at the start and end of the window, and the peak of
//! once-a-second samples), this process's CPU (the simulated hosts; in B also the collector),
//! and in B what the collector received during the window: data points (of how many metrics,
//! hosts and containers), log records (next to the lines the server accepted) and spans, and the
//! server's own `noco.otlp.export.failures`, `noco.otlp.logs.skipped` and
//! `noco.otlp.logs.dropped` as it last exported them, and what B's server logged about OTLP
//! export (a failing export is logged once). The summary sets A and B side by side with B's
//! difference in percent, next to the goal.
//!
//! Every figure is printed with the machine's load average. The goal is not asserted: it only
//! measures and prints. It exits non-zero with a message when something breaks (a server does
//! not start, fewer than 99% of the hosts enroll or connect, a session or stream ends during a
//! run, the collector receives no data point, or no log record while lines are sent). Each
//! run's simulated connections, server and collector are stopped at its end, also on failure.
//! Needs no Docker.
//!
//! ```text
//! cargo bench -p noco-integration-tests --bench otel -- [--hosts 1000] [--window 60] [--repeat 2]
//! ```
//!
//! `--help` lists every argument.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use common::*;
use noco_certs::dial::ServerAddr;
use noco_integration_tests::otlp::{Collector, Point};
use noco_integration_tests::{Fleet, Proc, ServerOptions};
use noco_proto::v1 as pb;
use tokio::time::MissedTickBehavior;

/// How long making tokens, enrolling, or opening the sessions or streams of N simulated hosts
/// may take in all.
const PHASE: PhaseLimit = PhaseLimit {
    base: Duration::from_secs(120),
    per_host: Duration::from_millis(20),
};
/// The goal: B's server CPU at most this many percent above A's.
const GOAL_PCT: f64 = 10.0;
/// Seconds between the rows printed during a window.
const ROW_EVERY: usize = 10;
/// The server's metrics of export trouble, read from what it exported.
const EXPORT_FAILURES: &str = "noco.otlp.export.failures";
const LOGS_SKIPPED: &str = "noco.otlp.logs.skipped";
const LOGS_DROPPED: &str = "noco.otlp.logs.dropped";
/// The most lines of the server's log about OTLP export shown.
const OTLP_LOG_LINES: usize = 6;

// ------------------------------------------------------------------------------------ main

/// OpenTelemetry export: the server's CPU and RSS with OTLP export off (A) and on (B), on the
/// same load of simulated hosts sending metrics and logs.
#[derive(Debug, Parser)]
#[command(
    name = "otel",
    bin_name = "cargo bench -p noco-integration-tests --bench otel --"
)]
struct Args {
    /// Simulated hosts (each with a session and a telemetry stream).
    #[arg(long, default_value_t = 1000, value_parser = positive)]
    hosts: usize,
    /// Containers of each simulated host (stack `shop`, one service each).
    #[arg(long, default_value_t = 10, value_parser = positive)]
    host_containers: usize,
    /// Log lines per second of each simulated host, from its containers in turn (0: none).
    #[arg(long, default_value_t = 1)]
    host_lines: usize,
    /// Seconds between a host's metrics samples.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    metrics_every: usize,
    /// Run B's server `--otlp-metrics-interval` (how often it pushes metrics; default the
    /// server's).
    #[arg(long, default_value = noco_proto::otel::DEFAULT_METRICS_INTERVAL_ARG, value_parser = noco_proto::duration::parse)]
    otlp_metrics_interval: Duration,
    /// Seconds of load before the window.
    #[arg(long, default_value_t = 20)]
    settle: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 60, value_parser = positive)]
    window: usize,
    /// Pairs of runs, alternating A, B, A, B, … (to show the noise).
    #[arg(long, default_value_t = 1, value_parser = positive)]
    repeat: usize,
}

fn main() -> std::process::ExitCode {
    run_async("otel", bench(parse_args()))
}

/// Run the pairs, print the summary; whether everything succeeded.
async fn bench(args: Args) -> bool {
    let settings = format!(
        "--hosts {} --host-containers {} --host-lines {} --metrics-every {} --otlp-metrics-interval {} --settle {} --window {} --repeat {}",
        args.hosts,
        args.host_containers,
        args.host_lines,
        args.metrics_every,
        noco_proto::duration::format(args.otlp_metrics_interval),
        args.settle,
        args.window,
        args.repeat,
    );
    let Some(machine) = begin("otel", "OpenTelemetry export", &settings) else {
        return false;
    };
    let mut summary = Summary::new(
        "otel",
        format!("== noco OpenTelemetry export benchmark ({machine}) =="),
    );
    summary.add(
        "load",
        Outcome::Measured(vec![format!(
            "load: {} simulated hosts × {} containers; from each host a metrics sample every {} s and log lines at {}/s ({} lines/s in all); settle {} s, window {} s",
            args.hosts,
            args.host_containers,
            args.metrics_every,
            args.host_lines,
            fmt_count((args.hosts * args.host_lines) as f64),
            args.settle,
            args.window,
        )]),
    );
    if let Err(why) = fits(2 * args.hosts, "this process", "self") {
        summary.add("the runs", Outcome::Skipped(why));
        return summary.finish();
    }
    let mut pairs = Vec::new();
    for round in 1..=args.repeat {
        let mut pair = Vec::new();
        for otlp in [false, true] {
            let title = format!("round {round}/{}, {}", args.repeat, name(otlp));
            println!();
            println!("-- {title}");
            match run(&args, otlp).await {
                Ok(run) => pair.push(run),
                Err(outcome) => {
                    summary.add(&title, outcome);
                    break;
                }
            }
        }
        let done = pair.len() == 2;
        if let [a, b] = &pair[..] {
            summary.add(&format!("round {round}"), side_by_side(&args, round, a, b));
        }
        pairs.extend(pair);
        if !done {
            break;
        }
    }
    if args.repeat > 1 && pairs.len() >= 4 {
        summary.add("all rounds", Outcome::Measured(vec![over_rounds(&pairs)]));
    }
    summary.finish()
}

fn name(otlp: bool) -> &'static str {
    if otlp {
        "B: OTLP export on"
    } else {
        "A: OTLP export off"
    }
}

// ------------------------------------------------------------------------------------ one run

/// One run's figures.
struct Run {
    otlp: bool,
    /// The server's CPU over the window, % of one core.
    cpu: Option<f64>,
    /// Its RSS at the window's start and end, and the peak, in KiB.
    rss_start: u64,
    rss_end: u64,
    rss_peak: u64,
    /// This process's CPU over the window, % of one core.
    bench_cpu: Option<f64>,
    /// Log lines the server accepted during the window, and metrics samples sent.
    lines: u64,
    samples: u64,
    /// The load average at the window's end.
    load: String,
    /// What the collector received during the window (B).
    received: Option<Received>,
    /// What the server logged about OTLP export (B): its first lines.
    otlp_log: Vec<String>,
    /// Why the run failed after measuring.
    why: Option<String>,
}

/// A fresh server (B: exporting to a fresh collector) and the simulated fleet; its figures, or
/// the outcome when it could not be measured. Everything is stopped at the end.
async fn run(args: &Args, otlp: bool) -> Result<Run, Outcome> {
    let n = args.hosts;
    let collector = if otlp {
        match harness("starting the OTLP collector", Collector::start) {
            Ok(c) => Some(c),
            Err(e) => return Err(Outcome::Failed(format!("{e:#}"))),
        }
    } else {
        None
    };
    let mut extra = Vec::new();
    if let Some(c) = &collector {
        let interval = noco_proto::duration::format(args.otlp_metrics_interval);
        println!(
            "server: --otlp-endpoint {} (the collector in this process) --otlp-metrics-interval {interval}",
            c.endpoint
        );
        extra = vec![
            "--otlp-endpoint".to_string(),
            c.endpoint.clone(),
            "--otlp-metrics-interval".to_string(),
            interval,
        ];
    } else {
        println!("server: without OTLP");
    }
    let started = harness("starting the server", || {
        Fleet::start(ServerOptions {
            heartbeat: SIM_HEARTBEAT.into(),
            extra,
            ..ServerOptions::default()
        })
    });
    let result = match started {
        Err(e) => Err(Outcome::Failed(format!("{e:#}"))),
        Ok(mut fleet) => {
            let pid = fleet
                .server
                .as_ref()
                .map(Proc::pid)
                .unwrap_or(0)
                .to_string();
            let result = match fits(2 * n, "the server", &pid) {
                Err(why) => Err(Outcome::Skipped(why)),
                Ok(()) => {
                    let mut tasks = Vec::new();
                    let mut measured =
                        measure(args, &fleet, &pid, collector.as_ref(), otlp, &mut tasks).await;
                    drop_sessions(tasks).await;
                    if let Ok(run) = &mut measured
                        && otlp
                    {
                        run.otlp_log = otlp_log(&fleet.server_log());
                        for line in &run.otlp_log {
                            println!("server log: {line}");
                        }
                    }
                    measured.map_err(|e| {
                        println!(
                            "server log (last lines):\n{}",
                            tail(&fleet.server_log(), 20)
                        );
                        Outcome::Failed(format!("{e:#}"))
                    })
                }
            };
            if let Err(e) = harness("stopping the server", || fleet.stop_server()) {
                println!("warning: {e:#}");
            }
            result
        }
    };
    if let Some(c) = collector {
        // Its runtime may not be dropped on a worker of this one.
        tokio::task::block_in_place(move || drop(c));
    }
    result
}

/// Enroll, apply the stack, open the sessions and streams (their tasks go to `tasks`), load on,
/// settle, measure.
async fn measure(
    args: &Args,
    fleet: &Fleet,
    pid: &str,
    collector: Option<&Collector>,
    otlp: bool,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Run> {
    let n = args.hosts;
    let addr = ServerAddr::parse(&fleet.url).map_err(anyhow::Error::msg)?;
    let mut control = admin_client(fleet).await?;
    let enrolled = enroll_sims(fleet, &control, n, "otel benchmark", PHASE).await?;

    let applied = apply_stack(
        &mut control,
        pb::ApplyStackRequest {
            name: SIM_STACK.to_string(),
            selector: "role=sim".to_string(),
            compose: compose(args.host_containers).into_bytes(),
            ..Default::default()
        },
    )
    .await?;
    println!(
        "applied stack {SIM_STACK} ({} services) to {} hosts: {}",
        args.host_containers,
        applied.hosts.len(),
        short(&applied.revision)
    );

    let start = Instant::now();
    let counters = Arc::new(Counters::default());
    let shared = counters.clone();
    let (sessions, established) =
        open_sessions(&addr, enrolled.hosts.clone(), PHASE, move |host, live| {
            let counters = shared.clone();
            ((), async move {
                let mut acker = Acker::new(host);
                serve(live, &counters.lost, |env, at| {
                    Some(acker.receive(env, at, &counters, all_converged))
                })
                .await
            })
        })
        .await;
    tasks.extend(sessions);
    println!(
        "established {}/{n} sessions in {} ({}/s)",
        established.len(),
        fmt_s(start.elapsed()),
        rate(established.len(), start.elapsed())
    );
    if (established.len() as f64) < n as f64 * MIN_ESTABLISHED {
        bail!("only {} of {n} sessions established", established.len());
    }

    let streams = open_streams(&addr, enrolled.hosts, PHASE).await?;
    let opened = streams.len();
    let load = Load {
        containers: args.host_containers,
        lines: args.host_lines,
        metrics_every: args.metrics_every as u64,
    };
    let telemetry = Arc::new(SimCounters::default());
    tasks.extend(start_feeding(streams, load, &telemetry));
    println!(
        "{opened} hosts send a metrics sample of {} containers every {} s and log lines at {}/s each; settling for {} s [load {}]",
        load.containers,
        load.metrics_every,
        load.lines,
        args.settle,
        load_average()
    );
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let failures = counters.verify_failures.load(Ordering::Relaxed);
    if failures > 0 {
        bail!(
            "{failures} desired states failed verification; first: {}",
            lock(&counters.first_failure).clone().unwrap_or_default()
        );
    }

    let mut run = watch(args, pid, collector, otlp, &telemetry).await;
    let lost_sessions = lock(&counters.lost);
    lost_sessions.report("sessions (ended on their own)");
    let lost_streams = lock(&telemetry.lost);
    lost_streams.report("telemetry streams (ended on their own)");
    if run.why.is_none() && lost_sessions.total + lost_streams.total > 0 {
        run.why = Some(format!(
            "{} sessions and {} telemetry streams ended during the run",
            lost_sessions.total, lost_streams.total
        ));
    }
    Ok(run)
}

/// The compose file of stack `shop` on the simulated hosts (which run nothing): a service per
/// container, named as their containers are.
fn compose(containers: usize) -> String {
    let sim = SimContainers::new(0, containers);
    let mut yaml = "services:\n".to_string();
    for service in sim.services() {
        yaml.push_str(&format!("  {service}:\n    image: noco-testapp:latest\n"));
    }
    yaml
}

/// Measure over the window: the server's CPU and RSS, this process's CPU, and what the
/// collector received.
async fn watch(
    args: &Args,
    pid: &str,
    collector: Option<&Collector>,
    otlp: bool,
    telemetry: &SimCounters,
) -> Run {
    // Counting what the collector holds copies it: done before the window's clocks start.
    let before = collector.map(|c| tokio::task::block_in_place(|| Snapshot::of(c)));
    println!("measuring for {} s [load {}]", args.window, load_average());
    let window = Duration::from_secs(args.window as u64);
    let lines0 = telemetry.acked.load(Ordering::Relaxed);
    let samples0 = telemetry.samples.load(Ordering::Relaxed);
    let rss_start = rss_kib(pid).unwrap_or(0);
    let start = Instant::now();
    let cpu0 = cpu_seconds(pid);
    let self0 = cpu_seconds("self");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    tick.tick().await;
    let mut peak = rss_start;
    let mut gone = false;
    let mut last = (cpu0, self0, Instant::now());
    let mut seconds = 0usize;
    while start.elapsed() < window {
        tick.tick().await;
        seconds += 1;
        match rss_kib(pid) {
            Some(rss) => peak = peak.max(rss),
            None => {
                gone = true;
                break;
            }
        }
        if seconds.is_multiple_of(ROW_EVERY) || start.elapsed() >= window {
            let (cpu, me) = (cpu_seconds(pid), cpu_seconds("self"));
            let wall = last.2.elapsed();
            println!(
                "  t={seconds:>3} s: server CPU {} of one core, RSS {} (peak {}); this process {} [load {}]",
                fmt_pct1(cpu_share(last.0, cpu, wall)),
                fmt_mib(rss_kib(pid).unwrap_or(0)),
                fmt_mib(peak),
                fmt_pct1(cpu_share(last.1, me, wall)),
                load_average()
            );
            last = (cpu, me, Instant::now());
        }
    }
    let wall = start.elapsed();
    let cpu = cpu_share(cpu0, cpu_seconds(pid), wall);
    let bench_cpu = cpu_share(self0, cpu_seconds("self"), wall);
    let rss_end = rss_kib(pid).unwrap_or(0);
    peak = peak.max(rss_end);
    let load = load_average();
    let lines = telemetry.acked.load(Ordering::Relaxed) - lines0;
    let samples = telemetry.samples.load(Ordering::Relaxed) - samples0;
    let mut why = gone.then(|| "the server exited during the window".to_string());
    if why.is_none() && samples == 0 {
        why = Some("no metrics sample was sent during the window".to_string());
    }
    if why.is_none() && args.host_lines > 0 && lines == 0 {
        why = Some("the server accepted no log line during the window".to_string());
    }
    let received = match (collector, before) {
        (Some(c), Some(before)) => {
            let after = tokio::task::block_in_place(|| Snapshot::of(c));
            let received = after.since(&before);
            if why.is_none() && received.points == 0 {
                why = Some("the collector received no data point during the window".to_string());
            }
            if why.is_none() && args.host_lines > 0 && received.logs == 0 {
                why = Some("the collector received no log record during the window".to_string());
            }
            Some(received)
        }
        _ => None,
    };
    let run = Run {
        otlp,
        cpu,
        rss_start,
        rss_end,
        rss_peak: peak,
        bench_cpu,
        lines,
        samples,
        load,
        received,
        otlp_log: Vec::new(),
        why,
    };
    println!(
        "{}: server CPU {} of one core over {}; RSS {} at the start, {} at the end, peak {}; this process {}; {} lines accepted, {} metrics samples sent [load {}]",
        name(otlp),
        fmt_pct1(run.cpu),
        fmt_s(wall),
        fmt_mib(run.rss_start),
        fmt_mib(run.rss_end),
        fmt_mib(run.rss_peak),
        fmt_pct1(run.bench_cpu),
        fmt_count(run.lines as f64),
        fmt_count(run.samples as f64),
        run.load
    );
    if let Some(r) = &run.received {
        println!("{}", r.describe(run.lines));
    }
    run
}

// ------------------------------------------------------------------------------------ collector

/// The server's log lines about OTLP export (a failure is logged once, and its recovery), at
/// most [`OTLP_LOG_LINES`], each cut to 300 characters.
fn otlp_log(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("OTLP"))
        .take(OTLP_LOG_LINES)
        .map(|l| match l.char_indices().nth(300) {
            Some((at, _)) => format!("{}…", &l[..at]),
            None => l.to_string(),
        })
        .collect()
}

/// How much the collector held at one moment.
struct Snapshot {
    /// Data points by metric.
    points: BTreeMap<String, Vec<Point>>,
    logs: usize,
    spans: usize,
}

/// What the collector received over a window.
struct Received {
    points: usize,
    /// Data points by metric, most first.
    by_metric: Vec<(String, usize)>,
    /// Distinct `host` and (`host`, `container`) attributes of those points.
    hosts: usize,
    containers: usize,
    logs: usize,
    spans: usize,
    /// Spans since the server started (the stack apply is before the window).
    spans_total: usize,
    /// The latest `noco.otlp.export.failures` by signal, `noco.otlp.logs.skipped` and
    /// `noco.otlp.logs.dropped`.
    failures: Vec<(String, f64)>,
    skipped: Option<f64>,
    dropped: Option<f64>,
}

impl Snapshot {
    fn of(c: &Collector) -> Snapshot {
        let points = c
            .metric_names()
            .into_iter()
            .map(|name| {
                let points = c.points(&name);
                (name, points)
            })
            .collect();
        Snapshot {
            points,
            logs: c.logs().len(),
            spans: c.spans().len(),
        }
    }

    /// What arrived after `before`.
    fn since(&self, before: &Snapshot) -> Received {
        let attr = |p: &Point, keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| p.attrs.get(*k).or_else(|| p.resource.get(*k)))
                .cloned()
        };
        let mut by_metric = Vec::new();
        let mut hosts = BTreeSet::new();
        let mut containers = BTreeSet::new();
        for (name, points) in &self.points {
            let old = before.points.get(name).map_or(0, Vec::len);
            let new = &points[old.min(points.len())..];
            if new.is_empty() {
                continue;
            }
            by_metric.push((name.clone(), new.len()));
            for p in new {
                let Some(host) = attr(p, ["host", "host.name"]) else {
                    continue;
                };
                if let Some(container) = attr(p, ["container", "container.name"]) {
                    containers.insert((host.clone(), container));
                }
                hosts.insert(host);
            }
        }
        by_metric.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let latest = |metric: &str| -> BTreeMap<String, f64> {
            let mut by = BTreeMap::new();
            for p in self.points.get(metric).into_iter().flatten() {
                let key = p.attrs.get("signal").cloned().unwrap_or_default();
                by.insert(key, p.value);
            }
            by
        };
        Received {
            points: by_metric.iter().map(|(_, n)| n).sum(),
            by_metric,
            hosts: hosts.len(),
            containers: containers.len(),
            logs: self.logs.saturating_sub(before.logs),
            spans: self.spans.saturating_sub(before.spans),
            spans_total: self.spans,
            failures: latest(EXPORT_FAILURES).into_iter().collect(),
            skipped: latest(LOGS_SKIPPED).into_values().next_back(),
            dropped: latest(LOGS_DROPPED).into_values().next_back(),
        }
    }
}

impl Received {
    fn describe(&self, lines_accepted: u64) -> String {
        let top = self
            .by_metric
            .iter()
            .take(6)
            .map(|(m, n)| format!("{m} {}", fmt_count(*n as f64)))
            .collect::<Vec<_>>()
            .join(", ");
        let more = if self.by_metric.len() > 6 {
            ", …"
        } else {
            ""
        };
        let failures = if self.failures.is_empty() {
            format!("{EXPORT_FAILURES}: not exported")
        } else {
            let by = self
                .failures
                .iter()
                .map(|(signal, n)| format!("{signal} {n:.0}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{EXPORT_FAILURES}: {by}")
        };
        let skipped = [(LOGS_SKIPPED, self.skipped), (LOGS_DROPPED, self.dropped)]
            .map(|(name, n)| match n {
                Some(n) => format!("{name}: {n:.0}"),
                None => format!("{name}: not exported"),
            })
            .join(", ");
        format!(
            "B's collector received during the window: {} data points of {} metrics ({} hosts, {} containers in their attributes; {top}{more}), {} log records (the server accepted {} lines), {} spans ({} since the server started); as the server last exported them, {failures}; {skipped}",
            fmt_count(self.points as f64),
            self.by_metric.len(),
            fmt_count(self.hosts as f64),
            fmt_count(self.containers as f64),
            fmt_count(self.logs as f64),
            fmt_count(lines_accepted as f64),
            fmt_count(self.spans as f64),
            fmt_count(self.spans_total as f64),
        )
    }
}

// ------------------------------------------------------------------------------------ summary

/// A and B of one round, side by side.
fn side_by_side(args: &Args, round: usize, a: &Run, b: &Run) -> Outcome {
    let cpu_diff = match (a.cpu, b.cpu) {
        (Some(a), Some(b)) => format!(
            "{:+.1} points = {} (goal: under +{GOAL_PCT:.0}%; not asserted)",
            b - a,
            fmt_diff(Some(a), Some(b))
        ),
        _ => "?".to_string(),
    };
    let mib = |kib: u64| Some(kib as f64);
    let row = |what: &str, a: String, b: String, diff: String| {
        format!("  {what:<26} {a:>16} {b:>16}   {diff}")
            .trim_end()
            .to_string()
    };
    let mut lines = vec![
        format!(
            "round {round}: {} hosts × {} containers, metrics every {} s, log lines at {}/s a host; B exports metrics every {}; {} s window after {} s of load",
            args.hosts,
            args.host_containers,
            args.metrics_every,
            args.host_lines,
            noco_proto::duration::format(args.otlp_metrics_interval),
            args.window,
            args.settle
        ),
        row(
            "",
            "A: OTLP off".into(),
            "B: OTLP on".into(),
            "B vs A".into(),
        ),
        row(
            "server CPU (of one core)",
            fmt_pct1(a.cpu),
            fmt_pct1(b.cpu),
            cpu_diff,
        ),
        row(
            "server RSS, window start",
            fmt_mib(a.rss_start),
            fmt_mib(b.rss_start),
            fmt_diff(mib(a.rss_start), mib(b.rss_start)),
        ),
        row(
            "server RSS, window end",
            fmt_mib(a.rss_end),
            fmt_mib(b.rss_end),
            fmt_diff(mib(a.rss_end), mib(b.rss_end)),
        ),
        row(
            "server RSS, peak",
            fmt_mib(a.rss_peak),
            fmt_mib(b.rss_peak),
            fmt_diff(mib(a.rss_peak), mib(b.rss_peak)),
        ),
        row(
            "lines accepted",
            fmt_count(a.lines as f64),
            fmt_count(b.lines as f64),
            String::new(),
        ),
        row(
            "metrics samples sent",
            fmt_count(a.samples as f64),
            fmt_count(b.samples as f64),
            String::new(),
        ),
        row(
            "this process's CPU",
            fmt_pct1(a.bench_cpu),
            fmt_pct1(b.bench_cpu),
            "(the simulated hosts; in B also the collector)".into(),
        ),
        row(
            "load average, window end",
            a.load.clone(),
            b.load.clone(),
            String::new(),
        ),
    ];
    if let Some(r) = &b.received {
        lines.push(format!("  {}", r.describe(b.lines)));
    }
    for line in &b.otlp_log {
        lines.push(format!("  B's server log: {line}"));
    }
    match a.why.as_ref().or(b.why.as_ref()) {
        Some(why) => {
            let which = if a.why.is_some() {
                name(a.otlp)
            } else {
                name(b.otlp)
            };
            Outcome::Partial(lines, format!("{which}: {why}"))
        }
        None => Outcome::Measured(lines),
    }
}

/// The medians over every round (`runs` alternate A, B).
fn over_rounds(runs: &[Run]) -> String {
    let cpus = |otlp: bool| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|r| r.otlp == otlp)
            .filter_map(|r| r.cpu)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (a, b) = (cpus(false), cpus(true));
    let median = |v: &[f64]| -> Option<f64> {
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    };
    let spread = |v: &[f64]| match (v.first(), v.last()) {
        (Some(lo), Some(hi)) => format!("{lo:.1}–{hi:.1}%"),
        _ => "?".to_string(),
    };
    format!(
        "over {} rounds: server CPU A median {} ({}), B median {} ({}); B vs A medians {} (goal: under +{GOAL_PCT:.0}%; not asserted) [load {}]",
        a.len().min(b.len()),
        fmt_pct1(median(&a)),
        spread(&a),
        fmt_pct1(median(&b)),
        spread(&b),
        fmt_diff(median(&a), median(&b)),
        load_average()
    )
}

// ------------------------------------------------------------------------------------ formatting

/// A share of one core with one decimal: `23.4%`.
fn fmt_pct1(p: Option<f64>) -> String {
    p.map_or_else(|| "?".to_string(), |p| format!("{p:.1}%"))
}

/// `b` against `a` in percent: `+7.5%`.
fn fmt_diff(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:+.1}%", (b - a) / a * 100.0),
        _ => "?".to_string(),
    }
}
