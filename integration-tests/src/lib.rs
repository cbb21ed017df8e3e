//! The test harness: real `noco-server`, `noco-agent` and `nococtl` processes on loopback, each
//! in its own temporary directory, killed when the test ends. Waiting is done with
//! [`eventually`], whose patience comes from `NOCO_TEST_PATIENCE` (seconds, default 30), never
//! with fixed sleeps.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use serde_json::Value;

pub mod docker;
pub mod otlp;
pub mod pipe;
pub mod postgres;
pub mod proxy;
pub mod stack;
pub mod webhook;

/// How long [`eventually`] waits.
pub fn patience() -> Duration {
    let secs = std::env::var("NOCO_TEST_PATIENCE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Poll `check` until it returns `Some`, or panic after [`patience`] naming `what`.
pub fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    eventually_within(what, patience(), check)
}

/// [`eventually`] for waits that are long by nature (a whole rollout): at least `at_least`,
/// and never less than [`patience`].
pub fn eventually_within<T>(
    what: &str,
    at_least: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let wait = at_least.max(patience());
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {wait:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether tests that need Docker must run (CI sets `NOCO_REQUIRE_DOCKER=1`).
pub fn docker_required() -> bool {
    std::env::var("NOCO_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// The directory holding the workspace's binaries, built once per test process.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = cargo_command();
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "noco-server",
            "-p",
            "noco-agent",
            "-p",
            "nococtl",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for the noco binaries");
        assert!(status.success(), "cargo build of the noco binaries failed");
        dir
    })
}

/// A `cargo` command for building from inside a test. Cargo gives the test process the
/// variables of *its* package (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …); some build scripts track
/// them (ring tracks `CARGO_MANIFEST_DIR`), so passing them on would rebuild half the dependency
/// tree on every test run. They are removed; `CARGO_HOME` and `CARGO_TARGET_DIR` are kept.
pub fn cargo_command() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep = matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
            || key.starts_with("CARGO_TERM_");
        if (key.starts_with("CARGO_") && !keep) || key == "OUT_DIR" {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A free TCP port on 127.0.0.1 (bound and released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Send SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + patience();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not exit within {:?} of SIGTERM",
            self.name,
            patience()
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(name: &str, program: &Path, args: &[&str], dir: &Path, envs: &[(&str, &str)]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(out)
        .stderr(err)
        .stdin(Stdio::null())
        .env("NOCO_LOG", "info,noco=debug");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    Proc {
        name: name.to_string(),
        child: Some(child),
        log,
    }
}

/// Options for the server under test.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub agent_cert_ttl: String,
    pub operator_cert_ttl: String,
    pub heartbeat: String,
    pub state_ttl: String,
    /// More `noco-server run` arguments.
    pub extra: Vec<String>,
    /// More environment variables of the server process.
    pub env: Vec<(String, String)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            agent_cert_ttl: "24h".into(),
            operator_cert_ttl: "30d".into(),
            heartbeat: "1s".into(),
            state_ttl: "24h".into(),
            extra: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A server (and the agents a test adds) in one temporary directory.
#[derive(Debug)]
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
    pub opts: ServerOptions,
    pub server: Option<Proc>,
}

impl Fleet {
    /// `noco-server init`, then `run` on a free loopback port.
    pub fn start(opts: ServerOptions) -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let data = dir.path().join("server");
        let out = Command::new(bin("noco-server"))
            .args([
                "init",
                "--data-dir",
                path_str(&data),
                "--san",
                "127.0.0.1",
                "--san",
                "localhost",
                "--server-url",
                &url,
            ])
            .output()
            .expect("noco-server init");
        assert!(
            out.status.success(),
            "noco-server init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut fleet = Fleet {
            dir,
            port,
            url,
            opts,
            server: None,
        };
        fleet.start_server();
        fleet
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn server_data(&self) -> PathBuf {
        self.path("server")
    }

    pub fn admin_config(&self) -> PathBuf {
        self.server_data().join("admin.nococtl.toml")
    }

    /// Start (or restart) the server and wait until it listens.
    pub fn start_server(&mut self) {
        let data = self.server_data();
        let listen = format!("127.0.0.1:{}", self.port);
        let mut args = vec![
            "run",
            "--data-dir",
            path_str(&data),
            "--listen",
            &listen,
            "--agent-cert-ttl",
            &self.opts.agent_cert_ttl,
            "--operator-cert-ttl",
            &self.opts.operator_cert_ttl,
            "--heartbeat",
            &self.opts.heartbeat,
            "--state-ttl",
            &self.opts.state_ttl,
        ];
        args.extend(self.opts.extra.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = self
            .opts
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let proc = spawn("server", &bin("noco-server"), &args, self.dir.path(), &env);
        let log = proc.log.clone();
        self.server = Some(proc);
        eventually("the server to listen", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("noco-server listening on") {
                return Some(());
            }
            if let Some(status) = self.server.as_mut().and_then(Proc::try_exit) {
                panic!("noco-server exited with {status}:\n{text}");
            }
            None
        });
    }

    pub fn stop_server(&mut self) -> Option<std::process::ExitStatus> {
        self.server.as_mut().and_then(Proc::terminate)
    }

    pub fn server_log(&self) -> String {
        self.server
            .as_ref()
            .map(Proc::log_text)
            .unwrap_or_else(|| std::fs::read_to_string(self.path("server.log")).unwrap_or_default())
    }

    /// Run nococtl with a credential file.
    pub fn ctl_as(&self, config: &Path, args: &[&str]) -> Output {
        Command::new(bin("nococtl"))
            .args(args)
            .env("NOCO_CONFIG", config)
            .env_remove("NOCO_SERVER")
            .output()
            .expect("running nococtl")
    }

    /// Run nococtl as the first admin.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_as(&self.admin_config(), args)
    }

    /// Run nococtl as the admin, require success, return stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "nococtl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run nococtl with `-o json` as the admin and parse what it prints.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let text = self.ctl_ok(&full);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("nococtl {args:?} printed invalid JSON ({e}): {text}"))
    }

    /// A fresh join token.
    pub fn join_token(&self, labels: &str) -> String {
        self.ctl_ok(&["token", "create", "--labels", labels, "--ttl", "10m"])
            .trim()
            .to_string()
    }

    /// Enroll a host named `name` with a new token; returns its data directory.
    pub fn enroll(&self, name: &str, labels: &str) -> PathBuf {
        let token = self.join_token(labels);
        let out = self.enroll_with(name, &token);
        assert!(
            out.status.success(),
            "enrolling {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.path(&format!("agent-{name}"))
    }

    /// `noco-agent enroll` with a given token, into `agent-<name>`.
    pub fn enroll_with(&self, name: &str, token: &str) -> Output {
        let data = self.path(&format!("agent-{name}"));
        Command::new(bin("noco-agent"))
            .args([
                "enroll",
                "--server",
                &self.url,
                "--token",
                token,
                "--data-dir",
                path_str(&data),
                "--name",
                name,
            ])
            .output()
            .expect("running noco-agent enroll")
    }

    /// Start `noco-agent run` for an enrolled host with extra arguments (e.g. `--project-prefix`).
    pub fn run_agent_with(&self, name: &str, extra: &[&str]) -> Proc {
        let data = self.path(&format!("agent-{name}"));
        let mut args = vec!["run", "--data-dir", path_str(&data), "--max-backoff", "1s"];
        args.extend(extra);
        spawn(
            &format!("agent-{name}"),
            &bin("noco-agent"),
            &args,
            self.dir.path(),
            &[],
        )
    }

    /// Start `noco-agent run` for an enrolled host.
    pub fn run_agent(&self, name: &str) -> Proc {
        let data = self.path(&format!("agent-{name}"));
        spawn(
            &format!("agent-{name}"),
            &bin("noco-agent"),
            &["run", "--data-dir", path_str(&data), "--max-backoff", "1s"],
            self.dir.path(),
            &[],
        )
    }

    /// `nococtl host ls -o json`, as an array.
    pub fn hosts(&self) -> Vec<Value> {
        match self.ctl_json(&["host", "ls"]) {
            Value::Array(a) => a,
            other => panic!("host ls printed {other}"),
        }
    }

    /// The newest host with this name (a revoked host keeps its record next to a re-enrolled
    /// one of the same name).
    pub fn host(&self, name: &str) -> Option<Value> {
        self.hosts()
            .into_iter()
            .filter(|h| h["name"] == name)
            .max_by_key(|h| h["enrolled_unix_ms"].as_i64())
    }

    pub fn status_of(&self, name: &str) -> String {
        self.host(name)
            .map(|h| h["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    pub fn wait_status(&self, name: &str, status: &str) {
        eventually(&format!("host {name} to be {status}"), || {
            (self.status_of(name) == status).then_some(())
        });
    }

    /// An operator credential with `role`, logged in through the real flow.
    pub fn operator(&self, name: &str, role: &str) -> PathBuf {
        let token = self
            .ctl_ok(&["operator", "add", name, "--role", role])
            .trim()
            .to_string();
        let config = self.path(&format!("{name}.nococtl.toml"));
        let out = Command::new(bin("nococtl"))
            .args(["login", "--server", &self.url, "--token", &token])
            .env("NOCO_CONFIG", &config)
            .output()
            .expect("running nococtl login");
        assert!(
            out.status.success(),
            "login of {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        config
    }

    /// The newest audit records.
    pub fn audit(&self) -> Vec<Value> {
        match self.ctl_json(&["audit", "--limit", "1000"]) {
            Value::Array(a) => a,
            other => panic!("audit printed {other}"),
        }
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Read lines a process printed until one matches; used by benchmarks that start the server.
pub fn wait_for_line(reader: &mut impl BufRead, needle: &str) -> Option<String> {
    let mut line = String::new();
    while reader.read_line(&mut line).ok()? > 0 {
        if line.contains(needle) {
            return Some(line);
        }
        line.clear();
    }
    None
}

pub fn buf_reader<R: std::io::Read>(r: R) -> BufReader<R> {
    BufReader::new(r)
}

/// The `Content-Length` of an HTTP/1 request head (0 when it has none): what the test's small
/// HTTP servers (`webhook`, `otlp`) read a body by.
pub fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}
