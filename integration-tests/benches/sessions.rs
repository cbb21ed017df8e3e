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
//! with the reason printed. `--help` lists the arguments.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use common::*;
use noco_certs::dial::ServerAddr;
use noco_integration_tests::{Fleet, Proc, ServerOptions};

/// How often the host status is polled while timing `noco-agent run`.
const STATUS_POLL: Duration = Duration::from_millis(5);
/// How long to wait for a host to reach a status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the established sessions are held before the second memory reading.
const HOLD: Duration = Duration::from_secs(5);
/// How long making tokens, enrolling or opening sessions for N hosts may take in all.
const PHASE: PhaseLimit = PhaseLimit {
    base: Duration::from_secs(120),
    per_host: Duration::from_millis(50),
};

// ------------------------------------------------------------------------------------ main

/// How fast an agent comes online, and how many agent sessions one server holds.
#[derive(Debug, Parser)]
#[command(
    name = "sessions",
    bin_name = "cargo bench -p noco-integration-tests --bench sessions --"
)]
struct Args {
    /// How many simulated hosts hold sessions, each count on a fresh server (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000", value_parser = positive)]
    sessions: Vec<usize>,
    /// How many times `noco-agent run` → online is measured (0: not at all).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn main() -> std::process::ExitCode {
    run_async("sessions", bench(parse_args()))
}

/// Run both parts, print the summary; whether everything that ran succeeded.
async fn bench(args: Args) -> bool {
    let settings = format!("--sessions {:?} --runs {}", args.sessions, args.runs);
    let Some(machine) = begin("sessions", "sessions", &settings) else {
        return false;
    };
    let mut summary = Summary::new(
        "sessions",
        format!("== noco sessions benchmark ({machine}) =="),
    );

    if args.runs > 0 {
        println!();
        println!("-- agent start → online ({} runs)", args.runs);
        let outcome = match agent_start_to_online(args.runs).await {
            Ok(times) => Outcome::Measured(vec![format!(
                "agent start → online: min {}, median {}, max {} ({} runs)",
                fmt_ms(times[0]),
                fmt_ms(median(&times)),
                fmt_ms(times[times.len() - 1]),
                times.len()
            )]),
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        summary.add("agent start → online", outcome);
    }

    for &n in &args.sessions {
        println!();
        println!("-- {n} sessions");
        summary.add(&format!("{n} sessions"), sessions(n).await);
    }
    summary.finish()
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
        if hosts
            .iter()
            .any(|h| h.name == name && h.status().to_string() == status)
        {
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

/// On a fresh server: enroll `n` simulated hosts, open a session for each, measure, drop them.
async fn sessions(n: usize) -> Outcome {
    on_fresh_server(n, async |fleet, server_pid| {
        match measure_sessions(fleet, server_pid, n).await {
            Ok(f) => {
                let lines = vec![f.summary(), f.enroll_summary()];
                if f.established_share() < MIN_ESTABLISHED {
                    Outcome::Partial(
                        lines,
                        format!(
                            "only {} of {n} sessions established (fewer than {:.0}%)",
                            f.established,
                            MIN_ESTABLISHED * 100.0
                        ),
                    )
                } else {
                    Outcome::Measured(lines)
                }
            }
            Err(e) => Outcome::Failed(format!("{e:#}")),
        }
    })
    .await
}

/// Enroll `n` simulated hosts, open a session for each, measure, drop them.
async fn measure_sessions(fleet: &Fleet, server_pid: &str, n: usize) -> anyhow::Result<Figures> {
    let addr = ServerAddr::parse(&fleet.url).map_err(anyhow::Error::msg)?;
    let mut control = admin_client(fleet).await?;
    let enrolled = enroll_sims(fleet, &control, n, "sessions benchmark", PHASE).await?;
    let mut figures = Figures {
        n,
        token_time: enrolled.token_time,
        enrolled: enrolled.hosts.len(),
        enroll_time: enrolled.enroll_time,
        ..Figures::default()
    };

    // Sessions, each over its own mTLS connection; they only heartbeat.
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
    let held = lost.clone();
    let (tasks, established) = open_sessions(&addr, enrolled.hosts, PHASE, move |_, live| {
        let lost = held.clone();
        ((), async move { serve(live, &lost, |_, _| None).await })
    })
    .await;
    figures.establish_time = start.elapsed();
    figures.established = established.len();
    println!(
        "established {}/{n} sessions in {} ({}/s)",
        figures.established,
        fmt_s(figures.establish_time),
        rate(figures.established, figures.establish_time)
    );

    let result = hold_and_count(&mut control, server_pid, &lost, &mut figures).await;

    // Drop every session and time how long the server takes to notice.
    let start = Instant::now();
    drop_sessions(tasks).await;
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
        .filter(|h| {
            h.name.starts_with(SIM_PREFIX) && h.status() == noco_proto::v1::Presence::Online
        })
        .count())
}

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
