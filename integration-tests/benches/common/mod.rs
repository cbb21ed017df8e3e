//! What the benchmarks share: their command line (clap) and runtime, the summary they print,
//! waiting on many operations at once and counting failures, and formatting. Simulated hosts
//! (enrolled and connected over real mTLS) are in [`sim`], their telemetry streams (logs and
//! metrics) in [`telemetry_sim`]; process figures (RSS, CPU time, open-files limits) in
//! [`system`].

// Each benchmark uses a part of it.
#![allow(dead_code)]

pub mod sim;
pub mod system;
pub mod telemetry_sim;

use std::any::Any;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use noco_integration_tests::bin_dir;

// Each benchmark uses a part of them.
#[allow(unused_imports)]
pub use sim::*;
#[allow(unused_imports)]
pub use system::*;
#[allow(unused_imports)]
pub use telemetry_sim::*;

// ------------------------------------------------------------------------------------ running

/// The benchmark's arguments. `cargo bench` adds `--bench` to every benchmark's; it is dropped.
pub fn parse_args<A: clap::Parser>() -> A {
    A::parse_from(std::env::args_os().filter(|a| a != "--bench"))
}

/// A number above zero, for clap.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// Run `bench` on a multi-threaded runtime (with the TLS crypto provider installed); exit 0 when
/// it says everything that ran succeeded.
pub fn run_async(name: &str, bench: impl Future<Output = bool>) -> ExitCode {
    noco_certs::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name} benchmark: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = runtime.block_on(bench);
    // Session tasks of a failed part may still be parked; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(5));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What every benchmark does first: print its title and settings, raise the open-files limit
/// (saying so) and build the noco binaries through the harness (release builds under `cargo
/// bench`). The machine and build for the summary (`2 cores, release build`); `None`, said on
/// stderr, when the binaries could not be built.
pub fn begin(name: &str, title: &str, settings: &str) -> Option<String> {
    println!("noco {title} benchmark: {settings}");
    println!("{}", raise_open_files_limit());
    let dir = match harness("building the noco binaries", || bin_dir().to_path_buf()) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("{name} benchmark failed: {e:#}");
            return None;
        }
    };
    println!("binaries: {}", dir.display());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let profile = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(format!(
        "{cores} cores, {profile} build, load average {} at start",
        load_average()
    ))
}

/// The machine's 1, 5 and 15 minute load averages, printed next to every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Run a blocking harness call, turning its panic (the harness asserts) into an error.
pub fn harness<T>(what: &str, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
        .map_err(|panic| anyhow!("{what}: {}", panic_text(panic.as_ref())))
}

pub fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".to_string())
}

// ------------------------------------------------------------------------------------ summary

/// How one part of a benchmark went.
pub enum Outcome {
    /// Its summary lines.
    Measured(Vec<String>),
    /// Summary lines of what was measured, and what then failed.
    Partial(Vec<String>, String),
    Skipped(String),
    Failed(String),
}

/// The lines a benchmark prints at its end, and whether every part that ran succeeded.
pub struct Summary {
    name: &'static str,
    lines: Vec<String>,
    ok: bool,
}

impl Summary {
    pub fn new(name: &'static str, header: String) -> Self {
        Summary {
            name,
            lines: vec![header],
            ok: true,
        }
    }

    /// Record part `what`; say at once what went wrong, if anything.
    pub fn add(&mut self, what: &str, outcome: Outcome) {
        match outcome {
            Outcome::Measured(lines) => self.lines.extend(lines),
            Outcome::Partial(lines, why) => {
                println!("FAILED: {why}");
                self.lines.extend(lines);
                self.fail(format!("{what}: FAILED: {why}"));
            }
            Outcome::Skipped(why) => {
                println!("skipped: {why}");
                self.lines.push(format!("{what}: skipped: {why}"));
            }
            Outcome::Failed(why) => {
                println!("FAILED: {why}");
                self.fail(format!("{what}: FAILED: {why}"));
            }
        }
    }

    fn fail(&mut self, line: String) {
        self.ok = false;
        self.lines.push(line);
    }

    /// Print the summary; whether everything that ran succeeded.
    pub fn finish(self) -> bool {
        println!();
        for line in &self.lines {
            println!("{line}");
        }
        if !self.ok {
            eprintln!("{} benchmark: FAILED (see above)", self.name);
        }
        self.ok
    }
}

// ------------------------------------------------------------------------------------ phases

/// How long a phase over `n` hosts may take in all: `base` plus `per_host` for each. A safety
/// net, far above expected times.
#[derive(Debug, Clone, Copy)]
pub struct PhaseLimit {
    pub base: Duration,
    pub per_host: Duration,
}

impl PhaseLimit {
    pub fn deadline(self, n: usize) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.base + self.per_host * n as u32
    }
}

/// Failed operations: how many, and the first distinct messages with their counts.
#[derive(Debug, Default)]
pub struct Failures {
    pub total: usize,
    distinct: Vec<(String, usize)>,
}

impl Failures {
    pub fn add(&mut self, message: String) {
        self.total += 1;
        if let Some(entry) = self.distinct.iter_mut().find(|(m, _)| *m == message) {
            entry.1 += 1;
        } else if self.distinct.len() < 20 {
            self.distinct.push((message, 1));
        }
    }

    pub fn report(&self, what: &str) {
        if self.total == 0 {
            return;
        }
        println!("{} {what} failed; first distinct errors:", self.total);
        for (message, count) in self.distinct.iter().take(5) {
            println!("  {count} × {message}");
        }
    }
}

/// Await `results` in order until `deadline`: the successes, and the failures (late ones count
/// as failed). Prints progress every few seconds.
pub async fn collect<T>(
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
pub async fn collect_tasks<T: Send + 'static>(
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

/// Prints `<what> k/n` every few seconds while a long phase runs.
pub struct Progress {
    what: &'static str,
    total: usize,
    last: Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Self {
        Progress {
            what,
            total,
            last: Instant::now(),
        }
    }

    pub fn tick(&mut self, done: usize) {
        if self.last.elapsed() >= Duration::from_secs(5) {
            println!("  … {} {done}/{}", self.what, self.total);
            self.last = Instant::now();
        }
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------ formatting

pub fn fmt_s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn rate(count: usize, d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs > 0.0 {
        format!("{:.0}", count as f64 / secs)
    } else {
        "∞".to_string()
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `sha256:0123456789ab` of a revision.
pub fn short(revision: &str) -> &str {
    revision.get(..19).unwrap_or(revision)
}

/// A share of one core (`cpu_share`), `?` when unknown.
pub fn fmt_pct(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 1.0 => format!("{p:.2}%"),
        Some(p) => format!("{p:.0}%"),
        None => "?".to_string(),
    }
}

/// Bytes in KiB or MiB: `256 KiB`, `64 MiB`, `1.5 MiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// A count with thousands separators: `123,456`.
pub fn fmt_count(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
