//! OpenTelemetry export against a real OTLP collector (the OTLP/gRPC services of
//! `opentelemetry-proto`, in the test): a rollout over two real agents is one trace with spans
//! from the server and from each agent; container metrics and log records arrive with where they
//! came from; and a collector nobody listens on changes nothing but a counter and one log line.

use std::io::{Read, Write};
use std::time::Duration;

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::otlp::{Collector, Span};
use noco_integration_tests::{Fleet, ServerOptions, eventually, free_port};

use crate::support::{ONE_BY_ONE, Prefix, apply_converged, start_rollout, wait_rollout};

/// The test app printing a numbered line every 200 ms.
fn chatty(version: &str) -> String {
    format!(
        "services:\n  app:\n    image: ${{IMAGE}}\n    environment: {{ VERSION: \"{version}\", LOG_EVERY_MS: \"200\" }}\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\n"
    )
}

fn explained<T>(collector: &Collector, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(panic) => {
            let spans = collector.spans();
            eprintln!("the collector holds {} spans:", spans.len());
            for s in &spans {
                eprintln!(
                    "  {} {} trace {} span {} parent {} {:?}",
                    s.resource.get("service.name").map_or("?", String::as_str),
                    s.name,
                    s.trace_id,
                    s.span_id,
                    s.parent_span_id,
                    s.attrs
                );
            }
            let logs = collector.logs();
            eprintln!("{} log records; the programs' own:", logs.len());
            for l in logs
                .iter()
                .filter(|l| !l.resource.contains_key("noco.stack"))
            {
                eprintln!("  {:?}: {}", l.resource.get("service.name"), l.body);
            }
            eprintln!("metrics: {:?}", collector.metric_names());
            std::panic::resume_unwind(panic)
        }
    }
}

fn agents(
    fleet: &Fleet,
    p: &str,
    extra: &[&str],
) -> (Vec<Prefix>, Vec<noco_integration_tests::Proc>) {
    let mut prefixes = Vec::new();
    let mut procs = Vec::new();
    for i in 1..=2 {
        let name = format!("web-{i}");
        fleet.enroll(&name, "role=web");
        let prefix = Prefix::new(&format!("{p}{i}"), &["shop"]);
        let mut args = vec!["--project-prefix", prefix.0.as_str()];
        args.extend(extra);
        procs.push(fleet.run_agent_with(&name, &args));
        prefixes.push(prefix);
    }
    for i in 1..=2 {
        fleet.wait_status(&format!("web-{i}"), "online");
    }
    (prefixes, procs)
}

#[test]
fn a_rollout_over_two_agents_is_one_trace_and_containers_send_metrics_and_logs() {
    if !require_docker() {
        return;
    }
    let collector = Collector::start();
    let fleet = Fleet::start(ServerOptions {
        extra: vec![
            "--otlp-endpoint".into(),
            collector.endpoint.clone(),
            "--otlp-metrics-interval".into(),
            "1s".into(),
        ],
        ..ServerOptions::default()
    });
    let (_prefixes, _agents) = agents(&fleet, "otel", &["--otlp-endpoint", &collector.endpoint]);
    apply_converged(&fleet, &chatty("v1"), &["web-1", "web-2"]);
    let started = start_rollout(&fleet, &chatty("v2"), ONE_BY_ONE);
    let rollout_id = started["id"].as_str().unwrap_or_default().to_string();
    assert!(!rollout_id.is_empty(), "{started}");
    wait_rollout(&fleet, "succeeded");

    // One trace: the rollout's root span on the server, a step span per step, a host step per
    // host, and under each host step the agent's apply of the new revision on that host.
    let by = |spans: &[Span], name: &str, service: &str| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| {
                s.name == name
                    && s.resource.get("service.name").map(String::as_str) == Some(service)
            })
            .cloned()
            .collect()
    };
    let (root, spans) = explained(&collector, || {
        eventually(
            "the rollout's spans from the server and both agents",
            || {
                let spans = collector.spans();
                let root = by(&spans, "rollout", "noco-server")
                    .into_iter()
                    .find(|s| s.attrs.get("rollout.id") == Some(&rollout_id))?;
                let trace: Vec<Span> = spans
                    .into_iter()
                    .filter(|s| s.trace_id == root.trace_id)
                    .collect();
                let applies = by(&trace, "apply", "noco-agent");
                let hosts: std::collections::BTreeSet<&str> = applies
                    .iter()
                    .filter_map(|s| s.attrs.get("host").map(String::as_str))
                    .collect();
                (hosts.len() == 2).then_some((root, trace))
            },
        )
    });
    assert_eq!(
        root.parent_span_id, "",
        "the rollout span is the trace's root"
    );
    let steps = by(&spans, "step", "noco-server");
    assert_eq!(steps.len(), 2, "a canary step and one batch: {steps:#?}");
    for step in &steps {
        assert_eq!(step.parent_span_id, root.span_id, "{step:?}");
    }
    for host in ["web-1", "web-2"] {
        let host_step = by(&spans, "host_step", "noco-server")
            .into_iter()
            .find(|s| s.attrs.get("host").map(String::as_str) == Some(host))
            .unwrap_or_else(|| panic!("no host step span for {host}: {spans:#?}"));
        assert!(
            steps.iter().any(|s| s.span_id == host_step.parent_span_id),
            "{host}'s host step is under a step: {host_step:?}"
        );
        assert_eq!(
            host_step.attrs.get("stack").map(String::as_str),
            Some("shop")
        );
        assert_eq!(
            host_step.attrs.get("result").map(String::as_str),
            Some("ok")
        );
        let apply = by(&spans, "apply", "noco-agent")
            .into_iter()
            .find(|s| s.attrs.get("host").map(String::as_str) == Some(host))
            .unwrap_or_else(|| panic!("no apply span from {host}"));
        assert_eq!(
            apply.parent_span_id, host_step.span_id,
            "{host}'s apply is a child of its host step: {apply:?}"
        );
        assert_eq!(
            apply.attrs.get("result").map(String::as_str),
            Some("converged")
        );
        assert_eq!(apply.attrs.get("stack").map(String::as_str), Some("shop"));
        assert_eq!(
            apply.attrs.get("revision"),
            host_step.attrs.get("revision"),
            "the same revision"
        );
    }

    // A `stack apply` is a trace too: both hosts' first applies of v1 are its children.
    let applied = by(&collector.spans(), "stack.apply", "noco-server")
        .into_iter()
        .find(|s| s.attrs.get("stack").map(String::as_str) == Some("shop"))
        .unwrap_or_else(|| panic!("no stack.apply span"));
    let children: std::collections::BTreeSet<String> =
        by(&collector.spans(), "apply", "noco-agent")
            .into_iter()
            .filter(|s| s.parent_span_id == applied.span_id && s.trace_id == applied.trace_id)
            .filter_map(|s| s.attrs.get("host").cloned())
            .collect();
    assert_eq!(
        children,
        ["web-1".to_string(), "web-2".to_string()].into(),
        "{applied:?}"
    );

    // The programs' own events are log records too.
    explained(&collector, || {
        eventually(
            "the agents' and the server's own events as log records",
            || {
                let logs = collector.logs();
                let from = |service: &str, text: &str| {
                    logs.iter().any(|l| {
                        l.resource.get("service.name").map(String::as_str) == Some(service)
                            && l.body.contains(text)
                    })
                };
                (from("noco-agent", "accepted desired state")
                    && from("noco-server", "issued desired state"))
                .then_some(())
            },
        )
    });

    // Container metrics, labelled with host, stack and service.
    explained(&collector, || {
        eventually("container metrics of web-1's and web-2's app", || {
            let names = collector.metric_names();
            let labelled = |host: &str| {
                names
                    .iter()
                    .filter(|n| n.starts_with("container."))
                    .any(|n| {
                        collector.points(n).iter().any(|p| {
                            p.attrs.get("host").map(String::as_str) == Some(host)
                                && p.attrs.get("stack").map(String::as_str) == Some("shop")
                                && p.attrs.get("service").map(String::as_str) == Some("app")
                        })
                    })
            };
            (labelled("web-1") && labelled("web-2")).then_some(())
        })
    });

    // Container log records: the app's numbered lines, saying where they came from.
    explained(&collector, || {
        eventually("log records of the app's lines", || {
            collector
                .logs()
                .into_iter()
                .find(|l| {
                    // Each container is a resource; the record says its stream and number.
                    let r = |k: &str| l.resource.get(k).map(String::as_str);
                    l.body.starts_with("line ")
                        && r("host.name") == Some("web-2")
                        && r("noco.stack") == Some("shop")
                        && r("noco.service") == Some("app")
                        && r("service.name") == Some("app")
                        && r("service.namespace") == Some("shop")
                        && r("container.name").is_some_and(|c| !c.is_empty())
                        && r("container.id").is_some_and(|c| !c.is_empty())
                        && l.attrs.get("log.iostream").map(String::as_str) == Some("stdout")
                        && l.attrs
                            .get("noco.seq")
                            .is_some_and(|s| s.parse::<u64>().is_ok())
                })
                .map(|_| ())
        })
    });
}

/// `GET /metrics` of the server, as text.
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap_or_else(|e| panic!("{e}"));
    out
}

#[test]
fn an_unreachable_collector_changes_nothing_but_is_counted_and_logged_once() {
    if !require_docker() {
        return;
    }
    // Nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut fleet = Fleet::start(ServerOptions {
        extra: vec![
            "--otlp-endpoint".into(),
            nowhere.clone(),
            "--otlp-metrics-interval".into(),
            "1s".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ],
        ..ServerOptions::default()
    });
    let (_prefixes, _agents) = agents(&fleet, "otelx", &["--otlp-endpoint", &nowhere]);
    // Applies and a rollout work as without export.
    apply_converged(&fleet, &chatty("v1"), &["web-1", "web-2"]);
    start_rollout(&fleet, &chatty("v2"), ONE_BY_ONE);
    wait_rollout(&fleet, "succeeded");

    let metrics_addr = eventually("the metrics address in the server's output", || {
        fleet
            .server_log()
            .lines()
            .find_map(|l| l.split("noco-server metrics on http://").nth(1))
            .map(|rest| rest.trim_end_matches("/metrics").trim().to_string())
    });
    let failures = |signal: &str| -> f64 {
        scrape(&metrics_addr)
            .lines()
            .filter(|l| {
                l.starts_with("noco_otlp_export_failures")
                    && l.contains(&format!("signal=\"{signal}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    eventually("failed exports of every signal counted", || {
        (failures("traces") > 0.0 && failures("metrics") > 0.0 && failures("logs") > 0.0)
            .then_some(())
    });
    // Logged once per signal, however often it failed.
    let log = fleet.server_log();
    for signal in ["traces", "metrics", "logs"] {
        let n = log
            .matches(&format!("OTLP export of {signal} failed"))
            .count();
        assert_eq!(n, 1, "the {signal} failure logged once:\n{log}");
    }
    assert!(
        failures("metrics") >= 2.0,
        "metrics kept failing every second"
    );
    // The server stops cleanly even so.
    let status = fleet.stop_server();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn otlp_over_http_carries_the_same_trace_metrics_and_logs() {
    if !require_docker() {
        return;
    }
    // Only the collector's OTLP/HTTP port is given out: whatever arrives came over HTTP.
    let collector = Collector::start();
    let http = collector.http_endpoint.clone();
    let fleet = Fleet::start(ServerOptions {
        extra: vec![
            "--otlp-endpoint".into(),
            http.clone(),
            "--otlp-protocol".into(),
            "http".into(),
            "--otlp-metrics-interval".into(),
            "1s".into(),
        ],
        ..ServerOptions::default()
    });
    let (_prefixes, _agents) = agents(
        &fleet,
        "otelh",
        &["--otlp-endpoint", &http, "--otlp-protocol", "http"],
    );
    apply_converged(&fleet, &chatty("v1"), &["web-1", "web-2"]);
    explained(&collector, || {
        eventually(
            "the apply's trace, container metrics and log records over HTTP",
            || {
                let spans = collector.spans();
                let applied = spans.iter().find(|s| {
                    s.name == "stack.apply"
                        && s.attrs.get("stack").map(String::as_str) == Some("shop")
                })?;
                let children = spans
                    .iter()
                    .filter(|s| s.name == "apply" && s.parent_span_id == applied.span_id)
                    .count();
                let metrics = collector
                    .metric_names()
                    .iter()
                    .any(|n| n.starts_with("container."));
                let logs = collector.logs().iter().any(|l| {
                    l.body.starts_with("line ")
                        && l.resource.get("noco.stack").map(String::as_str) == Some("shop")
                });
                (children == 2 && metrics && logs).then_some(())
            },
        )
    });
}
