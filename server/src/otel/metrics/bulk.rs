//! The per-host and per-container series: about a hundred per host (a host's own figures, and
//! ten per container), so 1,000 hosts make over 100,000. Through the OpenTelemetry SDK a
//! collection of that many took 0.7–1.3 s and its OTLP push was one request of ~20 MB (past the
//! 4 MiB a collector takes by default). So these series bypass the SDK: one table ([`DEFS`])
//! says each series' OpenTelemetry name, Prometheus name, unit, kind and how it reads the
//! collection's [`View`]; from it `/metrics` gets text written straight out ([`prometheus`])
//! and OTLP gets requests of at most [`MAX_POINTS`] data points each ([`otlp`]), sent by
//! [`super::push`]. Names and labels are exactly those the SDK path gave them.

use std::fmt::Write as _;

use noco_proto::Enumeration;
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::metrics::v1 as m;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::view::View;

/// Data points in one OTLP request (~1.5 MiB encoded with our labels).
pub const MAX_POINTS: usize = 10_000;

/// How a series adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Gauge,
    /// A sum that only grows (a Prometheus counter).
    Counter,
    /// A sum that goes up and down (a Prometheus gauge).
    UpDown,
}

/// A value as observed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Num {
    I(i64),
    F(f64),
}

/// What a series reports for one point: its labels, extra fixed labels, the value.
pub(super) type Emit<'a> = dyn FnMut(&[KeyValue], &[(&'static str, &'static str)], Num) + 'a;

pub(super) struct Def {
    pub otel: &'static str,
    pub prom: &'static str,
    pub unit: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub points: fn(&View, &mut Emit<'_>),
}

fn i(v: u64) -> Num {
    Num::I(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Each online host's labels (`host`, `host_id`) and the host part of its latest sample.
fn host_samples(
    v: &View,
) -> impl Iterator<Item = (&[KeyValue], &noco_proto::v1::HostMetrics)> + '_ {
    v.samples.iter().filter_map(|hs| {
        let m = hs.sample.host.as_ref()?;
        Some((&v.fleet.hosts[hs.host as usize].labels[..], m))
    })
}

/// Every disk of every online host, with its labels (`host`, `host_id`,
/// `system.filesystem.mountpoint`).
fn disks(v: &View) -> impl Iterator<Item = (&[KeyValue], &noco_proto::v1::DiskUsage)> + '_ {
    v.samples.iter().flat_map(|hs| {
        hs.disks
            .iter()
            .map(|l| &l[..])
            .zip(hs.sample.host.iter().flat_map(|m| &m.disks))
    })
}

/// Every container of every online host, with its labels (`host`, `stack`, `service`,
/// `container`).
fn containers(
    v: &View,
) -> impl Iterator<Item = (&[KeyValue], &noco_proto::v1::ContainerMetrics)> + '_ {
    v.samples.iter().flat_map(|hs| {
        hs.containers
            .iter()
            .map(|l| &l[..])
            .zip(&hs.sample.containers)
    })
}

/// Docker's container states (anything else reads `other`, so the label stays bounded).
fn container_state(state: &str) -> &'static str {
    const STATES: [&str; 7] = [
        "created",
        "running",
        "paused",
        "restarting",
        "removing",
        "exited",
        "dead",
    ];
    STATES
        .iter()
        .find(|s| **s == state)
        .copied()
        .unwrap_or("other")
}

const RX: &[(&str, &str)] = &[("network.io.direction", "receive")];
const TX: &[(&str, &str)] = &[("network.io.direction", "transmit")];
const USED: &[(&str, &str)] = &[("system.memory.state", "used")];

/// Every per-host and per-container series, in the order ARCHITECTURE.md lists them.
pub(super) static DEFS: &[Def] = &[
    Def {
        otel: "system.cpu.utilization",
        prom: "system_cpu_utilization_ratio",
        unit: "1",
        help: "CPU busy, of all the host's CPUs together, 0–1, since the agent's previous sample",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], Num::F(m.cpu_percent / 100.0));
            }
        },
    },
    // (The conventions' `system.cpu.logical.count` would read `system_cpu_logical_count`,
    // which Prometheus's linter refuses: `_count` is a histogram's.)
    Def {
        otel: "noco.host.cpus",
        prom: "noco_host_cpus",
        unit: "{cpu}",
        help: "Logical CPUs of the host",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], Num::I(i64::from(m.cpus)));
            }
        },
    },
    Def {
        otel: "system.cpu.load_average.1m",
        prom: "system_cpu_load_average_1m",
        unit: "{thread}",
        help: "The host's load average",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], Num::F(m.load1));
            }
        },
    },
    Def {
        otel: "system.cpu.load_average.5m",
        prom: "system_cpu_load_average_5m",
        unit: "{thread}",
        help: "The host's load average",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], Num::F(m.load5));
            }
        },
    },
    Def {
        otel: "system.cpu.load_average.15m",
        prom: "system_cpu_load_average_15m",
        unit: "{thread}",
        help: "The host's load average",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], Num::F(m.load15));
            }
        },
    },
    Def {
        otel: "system.memory.usage",
        prom: "system_memory_usage_bytes",
        unit: "By",
        help: "Memory in use on the host (total − available)",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, USED, i(m.memory_used_bytes));
            }
        },
    },
    Def {
        otel: "system.memory.limit",
        prom: "system_memory_limit_bytes",
        unit: "By",
        help: "The host's total memory",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], i(m.memory_total_bytes));
            }
        },
    },
    Def {
        otel: "system.memory.utilization",
        prom: "system_memory_utilization_ratio",
        unit: "1",
        help: "Memory in use on the host, of its total, 0–1",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                if m.memory_total_bytes > 0 {
                    let ratio = m.memory_used_bytes as f64 / m.memory_total_bytes as f64;
                    e(l, USED, Num::F(ratio));
                }
            }
        },
    },
    Def {
        otel: "system.filesystem.usage",
        prom: "system_filesystem_usage_bytes",
        unit: "By",
        help: "Used and free bytes of each of the host's filesystems",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, d) in disks(v) {
                e(l, &[("system.filesystem.state", "used")], i(d.used_bytes));
                let free = d.total_bytes.saturating_sub(d.used_bytes);
                e(l, &[("system.filesystem.state", "free")], i(free));
            }
        },
    },
    Def {
        otel: "system.filesystem.limit",
        prom: "system_filesystem_limit_bytes",
        unit: "By",
        help: "The size of each of the host's filesystems",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, d) in disks(v) {
                e(l, &[], i(d.total_bytes));
            }
        },
    },
    Def {
        otel: "system.filesystem.utilization",
        prom: "system_filesystem_utilization_ratio",
        unit: "1",
        help: "Used, of each of the host's filesystems, 0–1",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, d) in disks(v) {
                if d.total_bytes > 0 {
                    e(l, &[], Num::F(d.used_bytes as f64 / d.total_bytes as f64));
                }
            }
        },
    },
    Def {
        otel: "system.network.io",
        prom: "system_network_io_bytes_total",
        unit: "By",
        help: "Bytes received and transmitted by the host, every interface but loopback, since boot",
        kind: Kind::Counter,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, RX, i(m.net_rx_bytes));
                e(l, TX, i(m.net_tx_bytes));
            }
        },
    },
    Def {
        otel: "system.uptime",
        prom: "system_uptime_seconds",
        unit: "s",
        help: "How long the host has been up",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], Num::F(m.uptime_secs as f64));
            }
        },
    },
    Def {
        otel: "noco.host.containers",
        prom: "noco_host_containers",
        unit: "{container}",
        help: "Containers on the host (every container Docker has, noco's or not)",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], Num::I(i64::from(m.containers_total)));
            }
        },
    },
    Def {
        otel: "noco.host.containers.running",
        prom: "noco_host_containers_running",
        unit: "{container}",
        help: "Containers running on the host",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, m) in host_samples(v) {
                e(l, &[], Num::I(i64::from(m.containers_running)));
            }
        },
    },
    Def {
        otel: "noco.host.sample.age",
        prom: "noco_host_sample_age_seconds",
        unit: "s",
        help: "How old the host's latest metrics sample is (by the server's clock against the agent's)",
        kind: Kind::Gauge,
        points: |v, e| {
            for hs in &v.samples {
                let labels = &v.fleet.hosts[hs.host as usize].labels;
                let age = (v.now_ms - hs.sample.time_unix_ms).max(0) as f64 / 1000.0;
                e(labels, &[], Num::F(age));
            }
        },
    },
    Def {
        otel: "container.cpu.usage",
        prom: "container_cpu_usage",
        unit: "{cpu}",
        help: "The container's CPU use in CPUs (1 = one core busy), since the agent's previous sample",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, c) in containers(v) {
                e(l, &[], Num::F(c.cpu_percent / 100.0));
            }
        },
    },
    Def {
        otel: "container.memory.usage",
        prom: "container_memory_usage_bytes",
        unit: "By",
        help: "The container's memory without the page cache (as `docker stats` shows it)",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, c) in containers(v) {
                e(l, &[], i(c.memory_bytes));
            }
        },
    },
    Def {
        otel: "noco.container.memory.limit",
        prom: "noco_container_memory_limit_bytes",
        unit: "By",
        help: "The container's memory limit (absent: none)",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, c) in containers(v) {
                if c.memory_limit_bytes > 0 {
                    e(l, &[], i(c.memory_limit_bytes));
                }
            }
        },
    },
    Def {
        otel: "container.network.io",
        prom: "container_network_io_bytes_total",
        unit: "By",
        help: "Bytes the container received and transmitted",
        kind: Kind::Counter,
        points: |v, e| {
            for (l, c) in containers(v) {
                e(l, RX, i(c.net_rx_bytes));
                e(l, TX, i(c.net_tx_bytes));
            }
        },
    },
    Def {
        otel: "container.disk.io",
        prom: "container_disk_io_bytes_total",
        unit: "By",
        help: "Bytes the container read from and wrote to block devices",
        kind: Kind::Counter,
        points: |v, e| {
            for (l, c) in containers(v) {
                e(l, &[("disk.io.direction", "read")], i(c.block_read_bytes));
                e(l, &[("disk.io.direction", "write")], i(c.block_write_bytes));
            }
        },
    },
    Def {
        otel: "noco.container.restarts",
        prom: "noco_container_restarts_total",
        unit: "{restart}",
        help: "How often Docker restarted the container",
        kind: Kind::Counter,
        points: |v, e| {
            for (l, c) in containers(v) {
                e(l, &[], Num::I(i64::from(c.restarts)));
            }
        },
    },
    Def {
        otel: "noco.container.health",
        prom: "noco_container_health",
        unit: "",
        help: "1 per container, labelled with its health (healthy, unhealthy, starting, none: no healthcheck) and Docker state (running, exited, …)",
        kind: Kind::Gauge,
        points: |v, e| {
            for (l, c) in containers(v) {
                let extra = [
                    ("health", c.health().text()),
                    ("state", container_state(&c.state)),
                ];
                e(l, &extra, Num::I(1));
            }
        },
    },
    Def {
        otel: "noco.container.pids",
        prom: "noco_container_pids",
        unit: "{process}",
        help: "Processes and threads in the container",
        kind: Kind::UpDown,
        points: |v, e| {
            for (l, c) in containers(v) {
                e(l, &[], Num::I(i64::from(c.pids)));
            }
        },
    },
];

/// Prometheus's text format: a label value with `\`, `"` and newlines escaped.
fn escape(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn prom_key(out: &mut String, key: &str) {
    for ch in key.chars() {
        out.push(if ch.is_ascii_alphanumeric() || ch == '_' {
            ch
        } else {
            '_'
        });
    }
}

/// Compare label keys as their Prometheus names (`.` read as `_`).
fn prom_order(a: &str, b: &str) -> std::cmp::Ordering {
    let p = |c: char| if c.is_ascii_alphanumeric() { c } else { '_' };
    a.chars().map(p).cmp(b.chars().map(p))
}

/// Every series of [`DEFS`] in Prometheus's text format (as the SDK's exporter names them).
pub(super) fn prometheus(v: &View, out: &mut String) {
    for def in DEFS {
        let kind = match def.kind {
            Kind::Counter => "counter",
            Kind::Gauge | Kind::UpDown => "gauge",
        };
        let start = out.len();
        let _ = writeln!(out, "# HELP {} {}", def.prom, def.help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {} {kind}", def.prom);
        let header = out.len();
        (def.points)(v, &mut |labels, extra, value| {
            out.push_str(def.prom);
            out.push('{');
            let mut first = true;
            let mut pairs: Vec<(&str, std::borrow::Cow<'_, str>)> = Vec::with_capacity(8);
            pairs.extend(
                labels
                    .iter()
                    .map(|kv| (kv.key.as_str(), kv.value.as_str()))
                    .chain(
                        extra
                            .iter()
                            .map(|(k, v)| (*k, std::borrow::Cow::Borrowed(*v))),
                    ),
            );
            // In the order of their Prometheus names, as the SDK's exporter writes them.
            pairs.sort_by(|(a, _), (b, _)| prom_order(a, b));
            for (k, val) in pairs {
                if !first {
                    out.push(',');
                }
                first = false;
                prom_key(out, k);
                out.push_str("=\"");
                escape(out, &val);
                out.push('"');
            }
            out.push_str("} ");
            match value {
                Num::I(n) => {
                    let _ = write!(out, "{n}");
                }
                Num::F(f) if f.is_finite() => {
                    let _ = write!(out, "{f}");
                }
                Num::F(f) if f.is_nan() => out.push_str("NaN"),
                Num::F(f) => out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" }),
            }
            out.push('\n');
        });
        if out.len() == header {
            // No series: no family (as the SDK's exporter leaves it out).
            out.truncate(start);
        }
    }
}

fn attr(key: &str, value: String) -> common::KeyValue {
    common::KeyValue {
        key: key.to_string(),
        value: Some(common::AnyValue {
            value: Some(common::any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// The OTLP requests for every series of [`DEFS`]: each at most `max_points` data points
/// ([`MAX_POINTS`]), under `resource`. Counters and up-down sums are cumulative from
/// `start_ns`.
pub(super) fn otlp(
    v: &View,
    resource: &[(&'static str, String)],
    start_ns: u64,
    now_ns: u64,
    max_points: usize,
) -> Vec<ExportMetricsServiceRequest> {
    let max_points = max_points.max(1);
    let resource = Resource {
        attributes: resource.iter().map(|(k, v)| attr(k, v.clone())).collect(),
        ..Default::default()
    };
    let mut requests = Vec::new();
    let mut metrics: Vec<m::Metric> = Vec::new();
    let mut points_in_request = 0usize;
    let flush = |metrics: &mut Vec<m::Metric>, requests: &mut Vec<ExportMetricsServiceRequest>| {
        if metrics.is_empty() {
            return;
        }
        requests.push(ExportMetricsServiceRequest {
            resource_metrics: vec![m::ResourceMetrics {
                resource: Some(resource.clone()),
                scope_metrics: vec![m::ScopeMetrics {
                    scope: Some(common::InstrumentationScope {
                        name: super::METER.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    metrics: std::mem::take(metrics),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        });
    };
    for def in DEFS {
        let mut points: Vec<m::NumberDataPoint> = Vec::new();
        (def.points)(v, &mut |labels, extra, value| {
            let attributes = labels
                .iter()
                .map(|kv| attr(kv.key.as_str(), kv.value.as_str().into_owned()))
                .chain(extra.iter().map(|(k, v)| attr(k, v.to_string())))
                .collect();
            points.push(m::NumberDataPoint {
                attributes,
                start_time_unix_nano: if def.kind == Kind::Gauge { 0 } else { start_ns },
                time_unix_nano: now_ns,
                value: Some(match value {
                    Num::I(n) => m::number_data_point::Value::AsInt(n),
                    Num::F(f) => m::number_data_point::Value::AsDouble(f),
                }),
                ..Default::default()
            });
        });
        let mut points = points.into_iter().peekable();
        while points.peek().is_some() {
            let room = max_points - points_in_request;
            let chunk: Vec<m::NumberDataPoint> = points.by_ref().take(room).collect();
            points_in_request += chunk.len();
            let data = match def.kind {
                Kind::Gauge => m::metric::Data::Gauge(m::Gauge { data_points: chunk }),
                Kind::Counter | Kind::UpDown => m::metric::Data::Sum(m::Sum {
                    data_points: chunk,
                    aggregation_temporality: m::AggregationTemporality::Cumulative as i32,
                    is_monotonic: def.kind == Kind::Counter,
                }),
            };
            metrics.push(m::Metric {
                name: def.otel.to_string(),
                description: def.help.to_string(),
                unit: def.unit.to_string(),
                data: Some(data),
                ..Default::default()
            });
            if points_in_request >= max_points {
                flush(&mut metrics, &mut requests);
                points_in_request = 0;
            }
        }
    }
    flush(&mut metrics, &mut requests);
    requests
}
