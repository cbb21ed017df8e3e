//! Logs and metrics from real containers through real agents and a real server to nococtl:
//! latency, exactly-once across faults, the spool's bound, isolation from control traffic, slow
//! readers, hostile bytes, memory in `top`, and who may read.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use noco_integration_tests::docker::{host_port, http_get, require_docker};
use noco_integration_tests::proxy::Proxy;
use noco_integration_tests::{Fleet, Proc, ServerOptions, Value, bin, eventually, path_str};

use crate::support::{Prefix, apply, reported};

/// A testapp service `app` with a published port, a healthcheck and these variables.
fn app_yaml(env: &[(&str, &str)]) -> String {
    let mut vars = String::from("VERSION: \"1\"");
    for (k, v) in env {
        vars.push_str(&format!(", {k}: \"{v}\""));
    }
    format!(
        "services:\n  app:\n    image: ${{IMAGE}}\n    ports: [\"8080\"]\n    environment: {{ {vars} }}\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\n"
    )
}

/// Apply `yaml` as `stack` to `role=web` and wait for `host` to run it converged.
fn deploy(fleet: &Fleet, stack: &str, yaml: &str, host: &str) -> String {
    let revision = apply(fleet, stack, "role=web", yaml)["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eventually(&format!("{stack} {revision} converged on {host}"), || {
        (reported(fleet, host, stack) == Some((revision.clone(), "converged".into()))).then_some(())
    });
    revision
}

fn port_of(container: &str) -> u16 {
    eventually(&format!("the published port of {container}"), || {
        host_port(container, "8080/tcp").ok().flatten()
    })
}

/// Write the agent's configuration file; returns its path.
fn agent_config(fleet: &Fleet, name: &str, toml: &str) -> String {
    let path = fleet.path(&format!("{name}.agent.toml"));
    std::fs::write(&path, toml).unwrap();
    path_str(&path).to_string()
}

/// `nococtl logs <args> -o json` (as `config`), one object per line.
fn logs_json_as(fleet: &Fleet, config: &Path, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["logs"];
    full.extend(args);
    full.extend(["-o", "json"]);
    let out = fleet.ctl_as(config, &full);
    assert!(
        out.status.success(),
        "nococtl {full:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn logs_json(fleet: &Fleet, args: &[&str]) -> Vec<Value> {
    logs_json_as(fleet, &fleet.admin_config(), args)
}

/// The numbers of the `line 00000042` lines among `records`, in order.
fn numbers(records: &[Value], tag: &str) -> Vec<u64> {
    records
        .iter()
        .filter_map(|r| r["line"].as_str()?.strip_prefix(tag)?.trim().parse().ok())
        .collect()
}

/// `nococtl logs <args> -f -o json` running, its lines arriving on a channel with the instant
/// each was read.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Follower {
    fn start(fleet: &Fleet, args: &[&str]) -> Follower {
        let mut child = Command::new(bin("nococtl"))
            .arg("logs")
            .args(args)
            .args(["-f", "-o", "json"])
            .env("NOCO_CONFIG", fleet.admin_config())
            .env_remove("NOCO_SERVER")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Wait for a line containing `needle`; the instant it was read.
    fn wait_for(&self, needle: &str, within: Duration) -> Option<Instant> {
        self.wait_at(within, |line| line.contains(needle))
    }

    /// Wait for a line that `pred` accepts.
    fn wait_until(&self, within: Duration, pred: impl FnMut(&str) -> bool) -> bool {
        self.wait_at(within, pred).is_some()
    }

    fn wait_at(&self, within: Duration, mut pred: impl FnMut(&str) -> bool) -> Option<Instant> {
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if pred(&line) => return Some(at),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(fleet: &Fleet, name: &str, prefix: &Prefix, config: Option<&str>) -> Proc {
    let mut args = vec!["--project-prefix", prefix.0.as_str()];
    if let Some(c) = config {
        args.extend(["--config", c]);
    }
    fleet.run_agent_with(name, &args)
}

/// A server and host `web-1` (`role=web`) running an agent under a fresh project prefix for
/// `stacks`, with `agent_toml` as its configuration file when given; online.
fn one_host(
    tag: &str,
    stacks: &[&str],
    opts: ServerOptions,
    agent_toml: Option<&str>,
) -> (Fleet, Prefix, Proc) {
    let fleet = Fleet::start(opts);
    let prefix = Prefix::new(tag, stacks);
    fleet.enroll("web-1", "role=web");
    let config = agent_toml.map(|t| agent_config(&fleet, "web-1", t));
    let agent = start_agent(&fleet, "web-1", &prefix, config.as_deref());
    fleet.wait_status("web-1", "online");
    (fleet, prefix, agent)
}

#[test]
fn a_line_written_by_a_container_shows_in_logs_follow_within_a_second() {
    if !require_docker() {
        return;
    }
    let (fleet, prefix, _agent) = one_host("flogl", &["shop"], ServerOptions::default(), None);
    deploy(&fleet, "shop", &app_yaml(&[]), "web-1");
    let port = port_of(&format!("{}-app-1", prefix.project("shop")));
    let follower = Follower::start(&fleet, &["shop"]);
    // The follower is up once it shows the startup line from its history.
    assert!(
        follower
            .wait_for("noco-testapp listening", Duration::from_secs(20))
            .is_some(),
        "the history holds the startup line"
    );
    for i in 0..5 {
        let needle = format!("hello-{i}-{}", std::process::id());
        let sent = Instant::now();
        assert!(http_get(port, &format!("/emit/line?text={needle}")).is_some());
        let seen = follower
            .wait_for(&needle, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{needle} never reached `logs -f`"));
        let took = seen.duration_since(sent);
        assert!(
            took < Duration::from_secs(1),
            "{needle} took {took:?} from the container to `logs -f`"
        );
    }
}

#[test]
fn numbered_lines_cross_a_cut_a_server_restart_and_an_agent_restart_exactly_once() {
    if !require_docker() {
        return;
    }
    let mut fleet = Fleet::start(ServerOptions::default());
    let prefix = Prefix::new("flogs", &["shop"]);
    let data = fleet.enroll("web-1", "role=web");
    // The agent reaches the server through a proxy the test can cut.
    let proxy = Proxy::start(fleet.port);
    let cred_path = data.join("credential.toml");
    let cred = std::fs::read_to_string(&cred_path).unwrap();
    std::fs::write(
        &cred_path,
        cred.replace(
            &format!("127.0.0.1:{}", fleet.port),
            &format!("127.0.0.1:{}", proxy.port),
        ),
    )
    .unwrap();
    let mut agent = start_agent(&fleet, "web-1", &prefix, None);
    fleet.wait_status("web-1", "online");
    const COUNT: u64 = 900;
    deploy(
        &fleet,
        "shop",
        &app_yaml(&[("LOG_EVERY_MS", "20"), ("LOG_COUNT", &COUNT.to_string())]),
        "web-1",
    );
    let seen_at_least = |fleet: &Fleet, n: u64| {
        eventually(&format!("line {n} in the logs"), || {
            let recs = logs_json(fleet, &["shop"]);
            numbers(&recs, "line")
                .last()
                .is_some_and(|&l| l >= n)
                .then_some(())
        })
    };
    // A reader following throughout, across the faults (it reconnects when the server goes).
    let follower = Follower::start(&fleet, &["shop"]);
    // Each fault while it prints.
    seen_at_least(&fleet, 50);
    proxy.cut();
    seen_at_least(&fleet, 200);
    fleet.stop_server();
    std::thread::sleep(Duration::from_secs(2));
    fleet.start_server();
    fleet.wait_status("web-1", "online");
    seen_at_least(&fleet, 400);
    agent.terminate();
    std::thread::sleep(Duration::from_secs(1));
    agent = start_agent(&fleet, "web-1", &prefix, None);
    seen_at_least(&fleet, COUNT);
    let recs = logs_json(&fleet, &["shop"]);
    let got = numbers(&recs, "line");
    let want: Vec<u64> = (1..=COUNT).collect();
    if got != want {
        let mut dup = got.clone();
        dup.sort_unstable();
        let dups: Vec<_> = dup
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        let missing: Vec<_> = want.iter().filter(|n| !got.contains(n)).collect();
        panic!(
            "{} numbered lines; duplicates {dups:?}; missing {missing:?}\nagent:\n{}",
            got.len(),
            agent.log_text()
        );
    }
    assert!(
        recs.iter().all(|r| r["dropped"].as_u64().unwrap_or(0) == 0),
        "nothing was dropped"
    );
    // The follower saw each line once too.
    let mut followed = Vec::new();
    while let Ok((_, line)) = follower.lines.recv_timeout(Duration::from_secs(3)) {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        followed.extend(numbers(std::slice::from_ref(&v), "line"));
        if followed.last() == Some(&COUNT) {
            break;
        }
    }
    if followed != want {
        let missing: Vec<_> = want.iter().filter(|n| !followed.contains(n)).collect();
        let mut sorted = followed.clone();
        sorted.sort_unstable();
        let dups: Vec<_> = sorted
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        let out_of_order = followed.windows(2).filter(|w| w[0] >= w[1]).count();
        panic!(
            "`logs -f` across the faults printed {} lines: missing {missing:?}, duplicated {dups:?}, {out_of_order} out of order",
            followed.len()
        );
    }
}

#[test]
fn a_server_away_longer_than_the_spool_holds_gets_the_dropped_count() {
    if !require_docker() {
        return;
    }
    let (mut fleet, prefix, _agent) = one_host(
        "flogd",
        &["shop"],
        ServerOptions::default(),
        Some("[telemetry]\nspool_size = \"256KiB\"\n"),
    );
    deploy(&fleet, "shop", &app_yaml(&[]), "web-1");
    let port = port_of(&format!("{}-app-1", prefix.project("shop")));
    fleet.stop_server();
    // About 3 MB of numbered lines while the server is away: far more than 256 KiB.
    const N: u64 = 30_000;
    assert!(http_get(port, &format!("/emit/lines?count={N}&tag=flood&pad=80")).is_some());
    std::thread::sleep(Duration::from_secs(3));
    fleet.start_server();
    fleet.wait_status("web-1", "online");
    let recs = eventually("the dropped marker", || {
        let recs = logs_json(&fleet, &["shop"]);
        recs.iter()
            .any(|r| r["dropped"].as_u64().unwrap_or(0) > 0)
            .then_some(recs)
    });
    let dropped: u64 = recs.iter().filter_map(|r| r["dropped"].as_u64()).sum();
    let kept = numbers(&recs, "flood").len() as u64;
    assert!(kept < N, "the spool cannot have held all {N} lines");
    assert!(
        kept + dropped >= N,
        "every line is either shown or counted: {kept} shown + {dropped} dropped < {N}"
    );
    let marker = recs
        .iter()
        .find(|r| r["dropped"].as_u64().unwrap_or(0) > 0)
        .unwrap();
    assert_eq!(marker["stream"], "noco");
    assert!(
        marker["line"].as_str().unwrap_or("").contains("dropped"),
        "{marker}"
    );
    // The plain view says it too.
    let text = fleet.ctl_ok(&["logs", "shop"]);
    assert!(
        text.lines().any(|l| l.contains("lines dropped")),
        "the plain output shows the marker"
    );
}

#[test]
fn a_flooding_container_does_not_slow_a_stack_change_on_its_host() {
    if !require_docker() {
        return;
    }
    let (fleet, _prefix, _agent) =
        one_host("flogf", &["noisy", "shop"], ServerOptions::default(), None);
    let timed_change = |version: &str| {
        let start = Instant::now();
        deploy(&fleet, "shop", &app_yaml(&[("V", version)]), "web-1");
        start.elapsed()
    };
    deploy(&fleet, "shop", &app_yaml(&[("V", "0")]), "web-1");
    // Without a flood, twice (the first warms the image cache).
    let quiet = timed_change("1").min(timed_change("2"));
    deploy(&fleet, "noisy", &app_yaml(&[("LOG_RATE", "0")]), "web-1");
    // The flood is on: lines are arriving.
    eventually("the flood to reach the server", || {
        let recs = logs_json(&fleet, &["noisy", "--tail", "5"]);
        (numbers(&recs, "line").last().copied().unwrap_or(0) > 1000).then_some(())
    });
    let flooded = timed_change("3").max(timed_change("4"));
    // The bound: twice the quiet time plus two seconds (the flood competes for the same two
    // cores as Docker; what must not happen is the change waiting behind the log stream).
    let bound = quiet * 2 + Duration::from_secs(2);
    assert!(
        flooded <= bound,
        "a stack change took {flooded:?} during a flood, {quiet:?} without (bound {bound:?})"
    );
    // And heartbeats kept the host online throughout.
    assert_eq!(fleet.status_of("web-1"), "online");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stalled_reader_keeps_server_memory_bounded_and_others_reading() {
    if !require_docker() {
        return;
    }
    let opts = ServerOptions {
        extra: ["--log-bytes-total", "16MiB", "--log-bytes-per-host", "8MiB"]
            .map(String::from)
            .to_vec(),
        ..ServerOptions::default()
    };
    let (fleet, _prefix, _agent) = one_host("flogr", &["noisy"], opts, None);
    let server_pid = fleet.server.as_ref().map(Proc::pid).unwrap();
    let before = rss_kib(server_pid);
    // A reader that never reads: its pipe fills, then its gRPC stream.
    let mut stalled = Command::new(bin("nococtl"))
        .args(["logs", "noisy", "-f", "-o", "json"])
        .env("NOCO_CONFIG", fleet.admin_config())
        .env_remove("NOCO_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    deploy(
        &fleet,
        "noisy",
        // 20,000 lines of 200 bytes a second: 4 MB/s, a 16 MiB cap's worth every 4 s.
        &app_yaml(&[("LOG_RATE", "20000"), ("LOG_PAD", "200")]),
        "web-1",
    );
    let live = Follower::start(&fleet, &["noisy", "--tail", "1"]);
    // Far more than every cap goes through while the stalled reader holds still.
    let mut peak = 0;
    let mut last = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(rss_kib(server_pid));
        let recs = logs_json(&fleet, &["noisy", "--tail", "1"]);
        last = numbers(&recs, "line").last().copied().unwrap_or(0);
    }
    assert!(last > 100_000, "only {last} lines went through");
    let grown_mib = peak.saturating_sub(before) / 1024;
    // 16 MiB of lines, the follower rings, the HTTP/2 windows, allocator slack.
    assert!(
        grown_mib < 96,
        "the server grew {grown_mib} MiB with a 16 MiB log cap and a stalled reader"
    );
    println!("server RSS grew {grown_mib} MiB; {last} lines went through");
    // The live reader still gets fresh lines: numbers past the last one seen above (what it
    // read meanwhile is dropped unread).
    while live.lines.try_recv().is_ok() {}
    assert!(
        live.wait_until(Duration::from_secs(30), |line| {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            numbers(std::slice::from_ref(&v), "line")
                .first()
                .is_some_and(|&n| n > last)
        }),
        "the live reader keeps getting lines past {last}"
    );
    let _ = stalled.kill();
    let _ = stalled.wait();
}

#[test]
fn hostile_bytes_are_shown_as_specified() {
    if !require_docker() {
        return;
    }
    let (fleet, prefix, _agent) = one_host("flogb", &["shop"], ServerOptions::default(), None);
    // Docker's default `json-file` driver stores lines as JSON strings and replaces invalid
    // UTF-8 itself; the `local` driver keeps the bytes, which is what this test needs.
    let yaml = app_yaml(&[]).replace("    ports:", "    logging: { driver: local }\n    ports:");
    deploy(&fleet, "shop", &yaml, "web-1");
    let port = port_of(&format!("{}-app-1", prefix.project("shop")));
    for path in [
        "/emit/invalid-utf8",
        "/emit/ansi",
        "/emit/long?bytes=1048576",
    ] {
        assert!(http_get(port, path).is_some(), "GET {path}");
    }
    let recs = eventually("the three lines", || {
        let recs = logs_json(&fleet, &["shop"]);
        recs.iter()
            .any(|r| r["truncated"].as_u64().unwrap_or(0) > 0)
            .then_some(recs)
    });
    let invalid = recs
        .iter()
        .find(|r| r["invalid_utf8"] == true)
        .unwrap_or_else(|| {
            let short: Vec<String> = recs
                .iter()
                .map(|r| r.to_string().chars().take(300).collect())
                .collect();
            panic!(
                "the invalid UTF-8 line, flagged, among:\n{}",
                short.join("\n")
            )
        });
    assert!(invalid["line"].as_str().unwrap().contains('\u{fffd}'));
    let long = recs
        .iter()
        .find(|r| r["truncated"].as_u64().unwrap_or(0) > 0)
        .unwrap();
    let kept = long["line"].as_str().unwrap().len() as u64;
    assert_eq!(kept, noco_proto::limits::MAX_LOG_LINE as u64);
    assert_eq!(kept + long["truncated"].as_u64().unwrap(), 1_048_576);
    // Piped: the bytes as written (the ESC of the ANSI line, the invalid bytes).
    let raw = fleet.ctl(&["logs", "shop", "--no-prefix"]).stdout;
    assert!(
        raw.windows(5).any(|w| w == b"\x1b[31m"),
        "raw ANSI when piped"
    );
    assert!(
        raw.windows(2).any(|w| w == [0xff, 0xfe]),
        "raw bytes when piped"
    );
    let cut = b"[noco: 983040 bytes cut]";
    assert!(raw.windows(cut.len()).any(|w| w == cut), "the cut is said");
    // On a terminal: escaped, so the terminal is not driven by a container's output.
    // (`script`, of util-linux, gives nococtl a terminal.)
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{} logs shop --no-prefix", bin("nococtl").display()),
            "/dev/null",
        ])
        .env("NOCO_CONFIG", fleet.admin_config())
        .env_remove("NOCO_SERVER")
        .output()
        .expect("running nococtl on a terminal with `script` (util-linux)");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("\\x1b[31m"),
        "escaped ANSI on a terminal:\n{shown}"
    );
    assert!(shown.contains("\\xff"), "escaped bytes on a terminal");
    assert!(!out.stdout.windows(5).any(|w| w == b"\x1b[31m"));
}

#[test]
fn top_shows_a_container_memory_growing_after_it_allocates() {
    if !require_docker() {
        return;
    }
    let (fleet, prefix, _agent) = one_host(
        "ftop",
        &["shop"],
        ServerOptions::default(),
        Some("[telemetry]\nmetrics_interval = \"1s\"\n"),
    );
    deploy(&fleet, "shop", &app_yaml(&[]), "web-1");
    let container = format!("{}-app-1", prefix.project("shop"));
    let memory = || -> Option<u64> {
        let top = fleet.ctl_json(&["top", "--stack", "shop"]);
        find_container(&top, &container)?["memory_bytes"].as_u64()
    };
    let before = eventually("container metrics", || memory().filter(|&m| m > 0));
    let port = port_of(&container);
    assert!(http_get(port, "/alloc/64").is_some());
    let after = eventually("memory to grow by 60 MiB", || {
        memory().filter(|&m| m >= before + 60 * 1024 * 1024)
    });
    assert!(after > before);
    // Host metrics too, and `host show` has them.
    let top = fleet.ctl_json(&["top"]);
    let host = top
        .as_array()
        .and_then(|a| a.iter().find(|h| h["host"] == "web-1"))
        .cloned()
        .unwrap_or_else(|| panic!("web-1 in top: {top}"));
    assert!(
        host["memory_total_bytes"].as_u64().unwrap_or(0) > 0,
        "{host}"
    );
    assert!(host["cpus"].as_u64().unwrap_or(0) > 0, "{host}");
    let show = fleet.ctl_json(&["host", "show", "web-1", "--history"]);
    assert!(show.to_string().contains("memory_total_bytes"), "{show}");
    assert!(!show["history"].as_array().unwrap().is_empty(), "{show}");
    // The container's history shows the growth too.
    let history = show["container_history"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["container"] == container.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{container} in the history: {show}"));
    let peak = history["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["memory_bytes"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(peak >= before + 60 * 1024 * 1024, "{history}");
}

/// The container named `name` anywhere in `nococtl top -o json`.
fn find_container<'a>(top: &'a Value, name: &str) -> Option<&'a Value> {
    fn walk<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
        match v {
            Value::Object(m) => {
                if m.get("container").and_then(Value::as_str) == Some(name) {
                    return Some(v);
                }
                m.values().find_map(|c| walk(c, name))
            }
            Value::Array(a) => a.iter().find_map(|c| walk(c, name)),
            _ => None,
        }
    }
    walk(top, name)
}

#[test]
fn viewers_see_metrics_but_only_deployers_and_admins_read_logs() {
    if !require_docker() {
        return;
    }
    let (fleet, _prefix, _agent) = one_host("floga", &["shop"], ServerOptions::default(), None);
    deploy(&fleet, "shop", &app_yaml(&[]), "web-1");
    let viewer = fleet.operator("vera", "viewer");
    let deployer = fleet.operator("dan", "deployer");
    let out = fleet.ctl_as(&viewer, &["logs", "shop"]);
    assert!(!out.status.success(), "a viewer may not read logs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployer"),
        "the refusal names the role: {err}"
    );
    for who in [&deployer, &fleet.admin_config()] {
        eventually("the startup line", || {
            logs_json_as(&fleet, who, &["shop"])
                .iter()
                .any(|r| r["line"].as_str().unwrap_or("").contains("listening"))
                .then_some(())
        });
    }
    let out = fleet.ctl_as(&viewer, &["top", "-o", "json"]);
    assert!(out.status.success(), "a viewer may see metrics");
    let out = fleet.ctl_as(&viewer, &["host", "show", "web-1", "-o", "json"]);
    assert!(out.status.success(), "a viewer may see a host");
}
