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
use opentelemetry_proto::tonic::metrics::v1 as m;

use super::view::View;
use crate::otel::pb;

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

/// One encoded `ExportMetricsServiceRequest` being filled.
struct Request<'a> {
    resource: &'a [u8],
    scope: &'a [u8],
    /// Encoded `Metric` messages.
    metrics: Vec<u8>,
    points: usize,
}

impl Request<'_> {
    fn finish(&mut self) -> Option<Vec<u8>> {
        if self.metrics.is_empty() {
            return None;
        }
        // ScopeMetrics { scope = 1, metrics = 2 (already framed) }
        let mut scope_metrics = Vec::with_capacity(self.metrics.len() + 64);
        pb::bytes(&mut scope_metrics, 1, self.scope);
        scope_metrics.extend_from_slice(&self.metrics);
        // ResourceMetrics { resource = 1, scope_metrics = 2 }
        let mut resource_metrics = Vec::with_capacity(scope_metrics.len() + 64);
        pb::bytes(&mut resource_metrics, 1, self.resource);
        pb::bytes(&mut resource_metrics, 2, &scope_metrics);
        // ExportMetricsServiceRequest { resource_metrics = 1 }
        let mut request = Vec::with_capacity(resource_metrics.len() + 8);
        pb::bytes(&mut request, 1, &resource_metrics);
        self.metrics.clear();
        self.points = 0;
        Some(request)
    }
}

/// Frame a metric's points as a `Metric` message into `out` (field 2 of ScopeMetrics).
fn put_metric(out: &mut Vec<u8>, def: &Def, points: &[u8]) {
    let mut data = Vec::with_capacity(points.len() + 8);
    data.extend_from_slice(points);
    let (field, data) = match def.kind {
        // Gauge { data_points = 1 }
        Kind::Gauge => (5, data),
        // Sum { data_points = 1, aggregation_temporality = 2, is_monotonic = 3 }
        Kind::Counter | Kind::UpDown => {
            pb::uint(&mut data, 2, m::AggregationTemporality::Cumulative as u64);
            pb::uint(&mut data, 3, u64::from(def.kind == Kind::Counter));
            (7, data)
        }
    };
    let mut metric = Vec::with_capacity(data.len() + 128);
    pb::bytes(&mut metric, 1, def.otel.as_bytes());
    pb::bytes(&mut metric, 2, def.help.as_bytes());
    pb::bytes(&mut metric, 3, def.unit.as_bytes());
    pb::bytes(&mut metric, field, &data);
    pb::bytes(out, 2, &metric);
}

/// The OTLP requests (encoded `ExportMetricsServiceRequest`s) for every series of [`DEFS`]: each
/// at most `max_points` data points ([`MAX_POINTS`]), under `resource`. Counters and up-down sums
/// are cumulative from `start_ns`.
pub(super) fn otlp(
    v: &View,
    resource: &[(&'static str, String)],
    start_ns: u64,
    now_ns: u64,
    max_points: usize,
) -> Vec<Vec<u8>> {
    let max_points = max_points.max(1);
    let resource_msg: Vec<(&str, &str)> = resource.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resource_msg = pb::resource(&resource_msg);
    let scope = pb::scope(super::METER);
    let mut req = Request {
        resource: &resource_msg,
        scope: &scope,
        metrics: Vec::with_capacity(1 << 20),
        points: 0,
    };
    let mut requests = Vec::new();
    let mut points: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut point: Vec<u8> = Vec::with_capacity(512);
    for def in DEFS {
        let start = if def.kind == Kind::Gauge { 0 } else { start_ns };
        (def.points)(v, &mut |labels, extra, value| {
            // NumberDataPoint { attributes = 7, start_time_unix_nano = 2, time_unix_nano = 3,
            // as_double = 4 | as_int = 6 }
            point.clear();
            for kv in labels {
                pb::key_value(&mut point, 7, kv.key.as_str(), &kv.value.as_str());
            }
            for (k, val) in extra {
                pb::key_value(&mut point, 7, k, val);
            }
            if start > 0 {
                pb::fixed64(&mut point, 2, start);
            }
            pb::fixed64(&mut point, 3, now_ns);
            match value {
                Num::F(f) => pb::fixed64(&mut point, 4, f.to_bits()),
                Num::I(n) => pb::fixed64(&mut point, 6, n as u64),
            }
            // Sum/Gauge { data_points = 1 }
            pb::bytes(&mut points, 1, &point);
            req.points += 1;
            if req.points >= max_points {
                put_metric(&mut req.metrics, def, &points);
                points.clear();
                requests.extend(req.finish());
            }
        });
        if !points.is_empty() {
            put_metric(&mut req.metrics, def, &points);
            points.clear();
        }
    }
    requests.extend(req.finish());
    requests
}
