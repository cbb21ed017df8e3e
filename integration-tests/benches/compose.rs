//! Benchmark: `noco-agent compose up` next to `docker-compose` (v1) on the same stack.
//!
//! The stack ([`STACK`]) has five services, all running the local test image (`noco-testapp`,
//! built by the harness; nothing is pulled): `db` (with a named volume) and `cache`, `api`
//! depending on both being healthy, `web` depending on `api` being healthy (with an ephemeral
//! host port), and `worker` depending on `db` having started. Every service but `worker` has a
//! healthcheck every 500 ms. Each tool applies it under its own project name, `--runs` times
//! (default 5, after `--warmup` uncounted rounds, default 1), alternating which tool goes first:
//!
//! 1. **fresh apply**, from nothing (the previous round's stack was removed with the tool's own
//!    `down --volumes`, outside the timed section):
//!    - `noco-agent compose up FILE -p P --var IMAGE=…`, which returns once every service is
//!      running, and healthy where it has a healthcheck;
//!    - `docker-compose -p P -f FILE up -d` (with `IMAGE` in its environment). Version 1 waits
//!      for the `service_healthy` dependencies before starting their dependents, but not for the
//!      last services to become healthy, so it is measured twice: until it exits, and until it
//!      exits *and* an in-process poll (`docker inspect` through bollard every 100 ms, one
//!      connection) sees every container ready — what noco's `up` waits for.
//! 2. **unchanged re-apply**: the same command again on the converged stack.
//!
//! Every time is the wall time of a whole process, from spawn to exit (checked every
//! millisecond), so it includes process start-up and connecting to Docker; noco's own figure
//! ("converged in X s", "up to date (N ms)") is printed next to it. Printed: min/median/max per
//! measurement, the ratios of the medians (goals: a fresh apply at most 0.7 of docker-compose's until ready,
//! an unchanged re-apply at least 50 times faster), the tool versions and whether the noco
//! binaries are a release build (they are under `cargo bench`).
//!
//! ```text
//! cargo bench -p noco-integration-tests --bench compose -- [--runs 5] [--warmup 1]
//! ```
//!
//! Timing goals are not asserted: it only measures and prints. It exits non-zero only when a
//! tool fails to bring the stack up (or down), printing that tool's output. Every container,
//! network and volume it created is removed when it ends, also on failure. Without a Docker
//! engine it prints "skipping" and exits 0; without `docker-compose` it measures noco alone.

// Synchronous by design, like the harness it drives (whose Docker helpers run their own
// runtimes): blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::ListContainersOptionsBuilder;
use clap::Parser;
use common::{load_average, parse_args, positive};
use noco_integration_tests::docker::{
    COMPOSE_PROJECT_LABEL, cleanup_project, require_docker, testapp_image, with_docker,
};
use noco_integration_tests::stack::unique_project;
use noco_integration_tests::{bin, bin_dir, path_str};

/// The stack both tools apply. `${IMAGE}` is the test image.
const STACK: &str = r#"
services:
  db:
    image: ${IMAGE}
    pull_policy: never
    environment:
      VERSION: db
    volumes:
      - db-data:/data
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      timeout: 5s
      retries: 20
  cache:
    image: ${IMAGE}
    pull_policy: never
    environment:
      VERSION: cache
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      timeout: 5s
      retries: 20
  api:
    image: ${IMAGE}
    pull_policy: never
    environment:
      VERSION: api
    depends_on:
      db: { condition: service_healthy }
      cache: { condition: service_healthy }
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      timeout: 5s
      retries: 20
  web:
    image: ${IMAGE}
    pull_policy: never
    environment:
      VERSION: web
    ports: ["8080"]
    depends_on:
      api: { condition: service_healthy }
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      timeout: 5s
      retries: 20
  worker:
    image: ${IMAGE}
    pull_policy: never
    environment:
      VERSION: worker
    depends_on:
      db: { condition: service_started }
volumes:
  db-data:
"#;

/// The services of [`STACK`].
const SERVICES: [&str; 5] = ["db", "cache", "api", "web", "worker"];
/// The label naming a container's service (Docker Compose's, which noco uses too).
const SERVICE_LABEL: &str = "com.docker.compose.service";

/// How long one tool invocation may take before it is killed (noco waits at most
/// [`NOCO_WAIT_TIMEOUT`] per service).
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);
const NOCO_WAIT_TIMEOUT: &str = "120s";
/// How long the stack may take to become ready after `docker-compose up -d`.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the stack's containers are inspected while waiting for them to be ready.
const READY_POLL: Duration = Duration::from_millis(100);
/// How often a running tool is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(1);

// ------------------------------------------------------------------------------------ main

/// `noco-agent compose up` next to `docker-compose` (v1) on the same 5-service stack.
#[derive(Debug, Parser)]
#[command(
    name = "compose",
    bin_name = "cargo bench -p noco-integration-tests --bench compose --"
)]
struct Args {
    /// Rounds measured per tool.
    #[arg(long, default_value_t = 5, value_parser = positive)]
    runs: usize,
    /// Rounds run first and not counted.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
}

fn main() -> ExitCode {
    let args: Args = parse_args();
    if !require_docker() {
        return ExitCode::SUCCESS;
    }
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ncompose benchmark FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Set up, run the rounds, print the figures (also those gathered before a failure).
fn bench(args: &Args) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "noco compose benchmark: {} services, --runs {} --warmup {}, {cores} cores, load {}",
        SERVICES.len(),
        args.runs,
        args.warmup,
        load_average()
    );

    let image = testapp_image();
    let agent = bin("noco-agent");
    let profile = bin_dir()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let build = if profile == "release" {
        "release build".to_string()
    } else {
        format!("NOT a release build ({profile})")
    };
    let noco_version =
        tool_version(Command::new(&agent).arg("--version")).context("noco-agent --version")?;
    println!(
        "noco:           {noco_version}, {build}: {}",
        agent.display()
    );
    let compose_version = tool_version(Command::new("docker-compose").arg("--version"));
    match &compose_version {
        Ok(v) => println!(
            "docker-compose: {v}: {}",
            find_in_path("docker-compose").map_or_else(|| "?".into(), |p| p.display().to_string())
        ),
        Err(e) => println!("docker-compose: not usable ({e:#}): measuring noco alone"),
    }
    println!("Docker engine:  {}", engine_version()?);
    println!("image:          {image}");

    let dir = tempfile::tempdir().context("a temporary directory")?;
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, STACK).context("writing compose.yaml")?;
    // Distinct prefixes: cleanup_project removes every project whose name starts with its
    // argument, so neither name may be a prefix of the other.
    let noco = Tool::Noco {
        agent,
        file: file.clone(),
        project: Guard::new(unique_project("nocobench-noco-")),
        image: image.clone(),
    };
    let compose = compose_version.is_ok().then(|| Tool::Compose {
        file: file.clone(),
        project: Guard::new(unique_project("nocobench-dc-")),
        image: image.clone(),
    });
    let tools: Vec<&Tool> = std::iter::once(&noco).chain(compose.as_ref()).collect();

    let mut samples = Samples::default();
    let mut failure = None;
    'rounds: for round in 0..args.warmup + args.runs {
        let label = if round < args.warmup {
            format!("warm-up {}/{}", round + 1, args.warmup)
        } else {
            format!("run {}/{}", round - args.warmup + 1, args.runs)
        };
        // Alternate which tool goes first, so neither always follows the other's teardown.
        let mut order = tools.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for tool in order {
            match tool.round() {
                Ok(r) => {
                    println!("{label:<12} {}", r.describe());
                    if round >= args.warmup {
                        samples.add(r);
                    }
                }
                Err(e) => {
                    failure = Some(e.context(format!("{label}, {}", tool.name())));
                    break 'rounds;
                }
            }
        }
    }

    println!();
    println!(
        "== noco compose benchmark: {} services, {} of {} runs, {cores} cores, noco {build}, load {} ==",
        SERVICES.len(),
        samples.noco_fresh.len(),
        args.runs,
        load_average()
    );
    samples.print();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ------------------------------------------------------------------------------------ tools

/// A project name whose containers, networks and volumes are removed when it is dropped, also
/// on failure and on panic.
struct Guard(String);

impl Guard {
    fn new(project: String) -> Guard {
        cleanup_project(&project);
        Guard(project)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        cleanup_project(&self.0);
    }
}

enum Tool {
    Noco {
        agent: PathBuf,
        file: PathBuf,
        project: Guard,
        image: String,
    },
    Compose {
        file: PathBuf,
        project: Guard,
        image: String,
    },
}

/// What one round of one tool measured.
enum Round {
    Noco {
        fresh: Duration,
        fresh_reported: Option<Duration>,
        reapply: Duration,
        reapply_reported: Option<Duration>,
        /// Things that should not happen (printed, not fatal).
        notes: Vec<String>,
    },
    Compose {
        up: Duration,
        ready: Duration,
        reapply: Duration,
        notes: Vec<String>,
    },
}

impl Tool {
    fn name(&self) -> &'static str {
        match self {
            Tool::Noco { .. } => "noco",
            Tool::Compose { .. } => "docker-compose",
        }
    }

    fn project(&self) -> &str {
        match self {
            Tool::Noco { project, .. } | Tool::Compose { project, .. } => &project.0,
        }
    }

    /// `noco-agent compose up` or `docker-compose up -d` for the stack.
    fn up(&self) -> Command {
        match self {
            Tool::Noco {
                agent,
                file,
                project,
                image,
            } => {
                let mut cmd = Command::new(agent);
                cmd.args(["compose", "up", path_str(file), "-p", &project.0])
                    .args(["--var", &format!("IMAGE={image}")])
                    .args(["--wait-timeout", NOCO_WAIT_TIMEOUT]);
                cmd
            }
            Tool::Compose { .. } => self.compose(&["up", "-d"]),
        }
    }

    /// Remove the stack, volumes included, with the tool itself.
    fn down(&self) -> Command {
        match self {
            Tool::Noco { agent, project, .. } => {
                let mut cmd = Command::new(agent);
                cmd.args(["compose", "down", "-p", &project.0, "--volumes"]);
                cmd
            }
            Tool::Compose { .. } => self.compose(&["down", "--volumes"]),
        }
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        if let Tool::Compose {
            file,
            project,
            image,
        } = self
        {
            cmd.args(["-p", &project.0, "-f", path_str(file)])
                .args(args)
                .env("IMAGE", image);
            if let Some(dir) = file.parent() {
                cmd.current_dir(dir);
            }
        }
        cmd
    }

    /// A fresh apply and an unchanged re-apply, then the stack is removed (not timed).
    fn round(&self) -> anyhow::Result<Round> {
        let name = self.name();
        let project = self.project();
        let fresh = run(&mut self.up())?.require(&format!("{name} up (fresh apply)"))?;
        let mut notes = Vec::new();
        let round = match self {
            Tool::Noco { .. } => {
                // noco returned after waiting for every service: it should all be ready now.
                if let Readiness::NotYet(why) =
                    with_docker(|d| async move { readiness(&d, project).await })?
                {
                    notes.push(format!("noco returned before the stack was ready: {why}"));
                    wait_ready(project, fresh.started)?;
                }
                let again = run(&mut self.up())?.require("noco up (re-apply)")?;
                if !again.stdout.contains(": up to date (") {
                    notes.push(format!(
                        "noco's re-apply was not a no-op:\n{}",
                        again.output()
                    ));
                }
                Round::Noco {
                    fresh: fresh.elapsed(),
                    fresh_reported: reported_by_noco(&fresh.stdout),
                    reapply: again.elapsed(),
                    reapply_reported: reported_by_noco(&again.stdout),
                    notes,
                }
            }
            Tool::Compose { .. } => {
                let ready_at = wait_ready(project, fresh.started)
                    .with_context(|| format!("after docker-compose up:\n{}", fresh.output()))?;
                let again = run(&mut self.up())?.require("docker-compose up -d (re-apply)")?;
                let output = again.output();
                if ["Creating", "Recreating", "Starting"]
                    .iter()
                    .any(|w| output.contains(w))
                {
                    notes.push(format!(
                        "docker-compose's re-apply was not a no-op:\n{output}"
                    ));
                }
                Round::Compose {
                    up: fresh.elapsed(),
                    ready: ready_at.duration_since(fresh.started),
                    reapply: again.elapsed(),
                    notes,
                }
            }
        };
        run(&mut self.down())?.require(&format!("{name} down --volumes"))?;
        // Whatever the tool's own down left behind (there should be nothing).
        cleanup_project(project);
        Ok(round)
    }
}

impl Round {
    fn describe(&self) -> String {
        let mut line = match self {
            Round::Noco {
                fresh,
                fresh_reported,
                reapply,
                reapply_reported,
                ..
            } => format!(
                "noco            fresh {} (itself: {}), re-apply {} (itself: {})",
                fmt_ms(*fresh),
                fmt_opt(*fresh_reported),
                fmt_ms(*reapply),
                fmt_opt(*reapply_reported)
            ),
            Round::Compose {
                up, ready, reapply, ..
            } => format!(
                "docker-compose  fresh {} (ready at {}), re-apply {}",
                fmt_ms(*up),
                fmt_ms(*ready),
                fmt_ms(*reapply)
            ),
        };
        let (Round::Noco { notes, .. } | Round::Compose { notes, .. }) = self;
        for note in notes {
            line.push_str("\n    NOTE: ");
            line.push_str(&note.replace('\n', "\n    "));
        }
        line
    }
}

/// noco's own timing: "<project>: converged in X s" or "<project>: up to date (N ms)".
fn reported_by_noco(stdout: &str) -> Option<Duration> {
    stdout.lines().rev().find_map(|line| {
        if let Some((_, rest)) = line.split_once(": up to date (") {
            let ms = rest.strip_suffix(" ms)")?.parse::<u64>().ok()?;
            return Some(Duration::from_millis(ms));
        }
        let (_, rest) = line.split_once(": converged in ")?;
        let secs = rest.strip_suffix(" s")?.parse::<f64>().ok()?;
        Some(Duration::from_secs_f64(secs))
    })
}

// ------------------------------------------------------------------------------------ processes

/// A finished tool invocation.
struct Ran {
    what: String,
    started: Instant,
    finished: Instant,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn elapsed(&self) -> Duration {
        self.finished.duration_since(self.started)
    }

    fn output(&self) -> String {
        format!(
            "$ {}\n--- stdout:\n{}--- stderr:\n{}",
            self.what, self.stdout, self.stderr
        )
    }

    /// `self` if the tool succeeded, else an error with its output.
    fn require(self, what: &str) -> anyhow::Result<Ran> {
        if self.status.success() {
            Ok(self)
        } else {
            bail!(
                "{what} failed ({}) after {}:\n{}",
                self.status,
                fmt_ms(self.elapsed()),
                self.output()
            )
        }
    }
}

/// Run `cmd` to its end, timing it from spawn to exit; kill it after [`TOOL_TIMEOUT`].
/// Its output goes to temporary files, read once it has exited.
fn run(cmd: &mut Command) -> anyhow::Result<Ran> {
    let what = describe(cmd);
    let mut stdout = tempfile::tempfile().context("a temporary file")?;
    let mut stderr = tempfile::tempfile().context("a temporary file")?;
    cmd.stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?);
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break status;
        }
        if started.elapsed() > TOOL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not finish within {TOOL_TIMEOUT:?} and was killed; its output:\n{}{}",
                read_all(&mut stdout),
                read_all(&mut stderr)
            );
        }
        std::thread::sleep(EXIT_POLL);
    };
    let finished = Instant::now();
    Ok(Ran {
        what,
        started,
        finished,
        status,
        stdout: read_all(&mut stdout),
        stderr: read_all(&mut stderr),
    })
}

fn read_all(file: &mut File) -> String {
    let mut bytes = Vec::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first line a `--version` prints.
fn tool_version(cmd: &mut Command) -> anyhow::Result<String> {
    let ran = run(cmd)?.require("asking for the version")?;
    Ok(ran
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn engine_version() -> anyhow::Result<String> {
    with_docker(|docker| async move {
        let v = docker.version().await.context("docker version")?;
        Ok(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    })
}

// ------------------------------------------------------------------------------------ readiness

/// How far a project's containers have come.
enum Readiness {
    /// Every service has a running container, healthy where it has a healthcheck.
    Ready,
    NotYet(String),
    /// A container exited or turned unhealthy: it will not become ready.
    Failed(String),
}

/// Inspect the project's containers once.
async fn readiness(docker: &Docker, project: &str) -> anyhow::Result<Readiness> {
    let filters = HashMap::from([("label", vec![format!("{COMPOSE_PROJECT_LABEL}={project}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .with_context(|| format!("listing the containers of {project}"))?;
    let mut waiting = Vec::new();
    for service in SERVICES {
        let Some(id) = containers
            .iter()
            .find(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_LABEL))
                    .is_some_and(|s| s == service)
            })
            .and_then(|c| c.id.as_deref())
        else {
            waiting.push(format!("{service}: no container"));
            continue;
        };
        let info = docker
            .inspect_container(id, None)
            .await
            .with_context(|| format!("inspecting the {service} container of {project}"))?;
        let state = info.state.unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        let health = state.health.and_then(|h| h.status);
        match (status, health) {
            (ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD, _) => {
                return Ok(Readiness::Failed(format!(
                    "{service}: exited with code {}",
                    state.exit_code.unwrap_or(-1)
                )));
            }
            (_, Some(HealthStatusEnum::UNHEALTHY)) => {
                return Ok(Readiness::Failed(format!("{service}: unhealthy")));
            }
            (
                ContainerStateStatusEnum::RUNNING,
                None | Some(HealthStatusEnum::HEALTHY | HealthStatusEnum::NONE),
            ) => {}
            (status, health) => {
                let health = health.map_or_else(|| "-".into(), |h| h.to_string());
                waiting.push(format!("{service}: {status}, health {health}"));
            }
        }
    }
    Ok(if waiting.is_empty() {
        Readiness::Ready
    } else {
        Readiness::NotYet(waiting.join("; "))
    })
}

/// Poll [`readiness`] every [`READY_POLL`] until the project is ready; the instant it was seen
/// ready. Fails if it cannot become ready or is not within [`READY_TIMEOUT`] of `since`.
fn wait_ready(project: &str, since: Instant) -> anyhow::Result<Instant> {
    with_docker(|docker| async move {
        loop {
            match readiness(&docker, project).await? {
                Readiness::Ready => return Ok(Instant::now()),
                Readiness::Failed(why) => bail!("{project} will not become ready: {why}"),
                Readiness::NotYet(why) if since.elapsed() > READY_TIMEOUT => {
                    bail!("{project} was not ready within {READY_TIMEOUT:?}: {why}")
                }
                Readiness::NotYet(_) => tokio::time::sleep(READY_POLL).await,
            }
        }
    })
}

// ------------------------------------------------------------------------------------ figures

#[derive(Default)]
struct Samples {
    noco_fresh: Vec<Duration>,
    noco_fresh_reported: Vec<Duration>,
    noco_reapply: Vec<Duration>,
    noco_reapply_reported: Vec<Duration>,
    compose_up: Vec<Duration>,
    compose_ready: Vec<Duration>,
    compose_reapply: Vec<Duration>,
}

impl Samples {
    fn add(&mut self, round: Round) {
        match round {
            Round::Noco {
                fresh,
                fresh_reported,
                reapply,
                reapply_reported,
                ..
            } => {
                self.noco_fresh.push(fresh);
                self.noco_fresh_reported.extend(fresh_reported);
                self.noco_reapply.push(reapply);
                self.noco_reapply_reported.extend(reapply_reported);
            }
            Round::Compose {
                up, ready, reapply, ..
            } => {
                self.compose_up.push(up);
                self.compose_ready.push(ready);
                self.compose_reapply.push(reapply);
            }
        }
    }

    fn print(&self) {
        println!(
            "{:<48} {:>9} {:>9} {:>9}  (ms, wall time of the process)",
            "", "min", "median", "max"
        );
        let rows: [(&str, &[Duration]); 7] = [
            ("fresh apply: noco-agent compose up", &self.noco_fresh),
            (
                "  (as noco reports it, 0.1 s resolution)",
                &self.noco_fresh_reported,
            ),
            ("fresh apply: docker-compose up -d", &self.compose_up),
            (
                "fresh apply: docker-compose up -d, until ready",
                &self.compose_ready,
            ),
            ("re-apply:    noco-agent compose up", &self.noco_reapply),
            ("  (as noco reports it)", &self.noco_reapply_reported),
            ("re-apply:    docker-compose up -d", &self.compose_reapply),
        ];
        for (label, samples) in rows {
            match Stats::of(samples) {
                Some(s) => println!(
                    "{label:<48} {:>9.1} {:>9.1} {:>9.1}",
                    ms(s.min),
                    ms(s.median),
                    ms(s.max)
                ),
                None => println!("{label:<48} {:>9} {:>9} {:>9}", "-", "-", "-"),
            }
        }
        let median = |s: &[Duration]| Stats::of(s).map(|s| ms(s.median));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let (noco_fresh, noco_reapply) = (median(&self.noco_fresh), median(&self.noco_reapply));
        println!("ratios of the medians:");
        println!(
            "  fresh apply, noco / docker-compose up -d:              {}",
            ratio(noco_fresh, median(&self.compose_up))
        );
        println!(
            "  fresh apply, noco / docker-compose up -d until ready:  {}  (goal: at most 0.7)",
            ratio(noco_fresh, median(&self.compose_ready))
        );
        println!(
            "  re-apply, docker-compose / noco:                       {}  (goal: at least 50)",
            ratio(median(&self.compose_reapply), noco_reapply)
        );
    }
}

struct Stats {
    min: Duration,
    median: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Option<Stats> {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        };
        Some(Stats {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", ms(d))
}

fn fmt_opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".into(), fmt_ms)
}
