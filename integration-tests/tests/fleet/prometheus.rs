//! Prometheus end to end: a real server with `--metrics-listen`, two real agents running a real
//! stack that was backed up and rolled out, Debian's `promtool` checking `/metrics`, and a real
//! Prometheus scraping it — through which every query of the Grafana dashboard in
//! `deploy/observability/` must return data, its template variables set to this fleet's host,
//! stack and service.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::{
    Fleet, Proc, ServerOptions, Value, docker_required, eventually, eventually_within, free_port,
    path_str, patience,
};

use crate::support::{Prefix, apply, reported};

/// The dashboard, as the repository holds it.
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/observability/grafana/noco.json"
);

/// The test workload with a dump backup (the hook prints a file every container has).
fn stack_yaml(version: &str) -> String {
    format!(
        "services:\n  app:\n    image: ${{IMAGE}}\n    environment: {{ VERSION: \"{version}\" }}\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\nx-noco:\n  backups:\n    db:\n      service: app\n      dump: [/noco-testapp, cat, /etc/hostname]\n"
    )
}

/// Whether Debian's `prometheus` package is installed (`promtool` and `prometheus`); without it
/// the test skips, saying so, unless `NOCO_REQUIRE_DOCKER=1` (CI), where it fails.
fn require_prometheus() -> bool {
    let found = ["promtool", "prometheus"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            !docker_required(),
            "NOCO_REQUIRE_DOCKER=1 but promtool/prometheus are missing: apt-get install prometheus"
        );
        eprintln!(
            "SKIPPING the Prometheus test: promtool and prometheus are not installed (Debian: apt-get install prometheus)"
        );
    }
    found
}

/// `GET` over HTTP/1.0 (a plain body, never chunked): status and body.
fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: bad response {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path}: bad status line {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Percent-encode a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Prometheus of the test's own, killed when dropped.
struct Prometheus {
    addr: String,
    _proc: Proc,
}

impl Prometheus {
    /// Start Prometheus in `dir`, scraping `target` (host:port of `/metrics`) every second.
    fn start(dir: &Path, target: &str) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: noco\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", path_str(&config)))
            .arg(format!(
                "--storage.tsdb.path={}",
                path_str(&dir.join("data"))
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        let proc = Proc {
            name: "prometheus".into(),
            child: Some(child),
            log,
        };
        let prometheus = Prometheus { addr, _proc: proc };
        eventually("Prometheus to be ready", || {
            matches!(http_get(&prometheus.addr, "/-/ready"), Ok((200, _))).then_some(())
        });
        prometheus
    }

    /// An instant query: the `data.result` array, or why there is none.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) =
            http_get(&self.addr, &format!("/api/v1/query?query={}", encode(expr)))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        json["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no result array: {body}"))
    }
}

/// Every PromQL expression of the dashboard's panels (rows' nested panels too), by panel title.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((title.to_string(), expr.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The dashboard's template variables: name and `label_values(<expr>, <label>)` split.
fn variables(dashboard: &Value) -> Vec<(String, String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("the dashboard has no template variables"))
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_default();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable {name}: not label_values(…): {query}"));
            let (expr, label) = inner
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("variable {name}: {query}"));
            (name, expr.trim().to_string(), label.trim().to_string())
        })
        .collect()
}

/// Set the dashboard's variables (and Grafana's own) as Grafana would for this fleet.
fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let mut out = expr.replace("$__rate_interval", "1m");
    // Longest names first, so `$stack` never eats into `$stacks`.
    let mut values = values.to_vec();
    values.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in values {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "a variable left unset in: {out}");
    out
}

/// Whether a query result holds a number (a histogram quantile over no calls is NaN).
fn has_number(result: &[Value]) -> bool {
    result.iter().any(|r| {
        r["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| !v.is_nan())
    })
}

#[test]
fn prometheus_scrapes_noco_and_every_dashboard_query_returns_data() {
    if !require_docker() || !require_prometheus() {
        return;
    }
    let fleet = Fleet::start(ServerOptions {
        extra: vec!["--metrics-listen".into(), "127.0.0.1:0".into()],
        ..ServerOptions::default()
    });
    let metrics = eventually("the server to say where its metrics are", || {
        let log = fleet.server_log();
        let line = log
            .lines()
            .find(|l| l.starts_with("noco-server metrics on http://"))?;
        let addr = line
            .strip_prefix("noco-server metrics on http://")?
            .strip_suffix("/metrics")?;
        Some(addr.to_string())
    });
    let agent_toml = fleet.path("agent.toml");
    std::fs::write(&agent_toml, "[telemetry]\nmetrics_interval = \"1s\"\n").unwrap();
    let mut prefixes = Vec::new();
    let mut agents = Vec::new();
    for host in ["web-1", "web-2"] {
        fleet.enroll(host, "role=web");
        let prefix = Prefix::new(&format!("fprom{}", &host[4..]), &["shop"]);
        agents.push(fleet.run_agent_with(
            host,
            &[
                "--project-prefix",
                &prefix.0,
                "--config",
                path_str(&agent_toml),
            ],
        ));
        prefixes.push(prefix);
    }
    for host in ["web-1", "web-2"] {
        fleet.wait_status(host, "online");
    }

    // A stack on both hosts, backed up, then rolled out to a new revision.
    let v1 = apply(&fleet, "shop", "role=web", &stack_yaml("v1"))["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let converged = |revision: &str| {
        ["web-1", "web-2"].iter().all(|h| {
            reported(&fleet, h, "shop") == Some((revision.to_string(), "converged".into()))
        })
    };
    eventually("shop v1 converged on both hosts", || {
        converged(&v1).then_some(())
    });
    let out = fleet.ctl(&["backup", "run", "shop/db", "-w", "-o", "json"]);
    assert!(
        out.status.success(),
        "backup run: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    crate::support::start_rollout(&fleet, &stack_yaml("v2"), crate::support::ONE_BY_ONE);
    eventually_within("the rollout to succeed", Duration::from_secs(180), || {
        (fleet.ctl_json(&["rollout", "status", "shop"])["phase"] == "succeeded").then_some(())
    });

    // What /metrics says, once it shows all of it — and promtool accepts it.
    let body = eventually(
        "/metrics to show hosts, containers, the rollout and the backup",
        || {
            let (status, body) = http_get(&metrics, "/metrics").ok()?;
            assert_eq!(status, 200, "{body}");
            [
                "noco_hosts{state=\"online\"} 2",
                "noco_rollouts{phase=\"succeeded\",stack=\"shop\"} 1",
                "noco_stack_hosts{stack=\"shop\",state=\"healthy\"} 2",
                "noco_backups{stack=\"shop\",state=\"complete\"}",
                "noco_backup_last_complete_time_seconds{stack=\"shop\"}",
                "system_cpu_utilization_ratio{host=\"web-1\"",
                "system_memory_usage_bytes{host=\"web-2\"",
                "container_memory_usage_bytes{container=\"",
                "noco_container_health{container=\"",
                "rpc_server_duration_seconds_bucket{",
                "noco_sessions{kind=\"telemetry\"} 2",
            ]
            .iter()
            .all(|needle| body.contains(needle))
            .then_some(body)
        },
    );
    for (host, prefix) in ["web-1", "web-2"].iter().zip(&prefixes) {
        let labels = format!(
            "{{container=\"{}-app-1\",host=\"{host}\",service=\"app\",stack=\"shop\"}}",
            prefix.project("shop")
        );
        assert!(
            body.contains(&format!("container_cpu_usage{labels}")),
            "container_cpu_usage{labels} in:\n{body}"
        );
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics refused /metrics ({}): {}{}",
        checked.status,
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scrapes it; every query of the dashboard returns data.
    let prometheus = Prometheus::start(&fleet.path("prometheus"), &metrics);
    eventually("Prometheus to scrape noco", || {
        let up = prometheus.query("up{job=\"noco\"}").ok()?;
        (up.first()?["value"][1] == "1").then_some(())
    });
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("reading {DASHBOARD}: {e}")),
    )
    .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let values = [
        ("job", "noco"),
        ("host", "web-1"),
        ("stack", "shop"),
        ("service", "app"),
    ];

    // The variables' own queries offer this fleet's values.
    let vars = variables(&dashboard);
    let names: Vec<&str> = vars.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["job", "host", "stack", "service"], "{vars:?}");
    for (name, expr, label) in &vars {
        let expr = substitute(expr, &values);
        let want = values.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        eventually(
            &format!("variable ${name} ({expr}) to offer {want:?}"),
            || {
                let result = prometheus.query(&expr).ok()?;
                result
                    .iter()
                    .any(|r| r["metric"][label.as_str()].as_str() == want)
                    .then_some(())
            },
        );
    }

    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 30, "{} queries", queries.len());
    let wait = patience().max(Duration::from_secs(90));
    let deadline = Instant::now() + wait;
    let mut pending: Vec<(String, String, String)> = queries
        .iter()
        .map(|(title, expr)| (title.clone(), substitute(expr, &values), String::new()))
        .collect();
    while !pending.is_empty() && Instant::now() < deadline {
        // Control traffic, so rates over calls have calls to rate.
        fleet.ctl_ok(&["host", "ls"]);
        for (_, expr, last) in &mut pending {
            *last = match prometheus.query(expr) {
                Ok(result) if has_number(&result) => String::from("ok"),
                Ok(result) => format!("no number in {result:?}"),
                Err(e) => e,
            };
        }
        pending.retain(|(_, _, last)| last != "ok");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        pending.is_empty(),
        "dashboard queries without data after {wait:?}:\n{}",
        pending
            .iter()
            .map(|(title, expr, last)| format!("  {title}: {expr}\n    → {last}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(prometheus);
    drop(agents);
}
