//! The instruments read through a Prometheus reader over a real core (sled store, registry,
//! reports, metrics), as `/metrics` serves them: names, labels and values.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use noco_proto::v1 as pb;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

use super::{Sources, register_on};
use crate::bans::BanSet;
use crate::clock::ManualClock;
use crate::core::{Core, Limits};
use crate::machines::rollout::{BatchSize, Config, Rollout};
use crate::store::{HostRecord, PendingOrder, RolloutRecord, StackRecord};

const NOW: i64 = 1_700_000_000_000;

/// A core over a fresh store, and a meter provider whose Prometheus reader fills `registry`.
struct Fixture {
    _dir: tempfile::TempDir,
    core: Arc<Core>,
    clock: Arc<ManualClock>,
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    sources: Arc<Sources>,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (_, pki, store) =
            crate::testing::pki_and_store(dir.path(), Duration::from_secs(86400)).await;
        let clock = Arc::new(ManualClock::at_ms(NOW));
        let core = Core::assemble(
            store,
            Arc::new(pki),
            Arc::new(BanSet::default()),
            clock.clone(),
            Limits::default(),
            crate::backups::BackupSettings::for_tests(dir.path()),
        );
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_view(cardinality)
            .build();
        let sources = register_on(&provider.meter(super::METER), &core);
        Fixture {
            _dir: dir,
            core,
            clock,
            registry,
            provider,
            sources,
        }
    }

    async fn host(&self, id: &str, name: &str, labels: &[(&str, &str)], revoked: bool) {
        self.core
            .store
            .insert_host(&HostRecord {
                id: id.into(),
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                facts: crate::store::Facts {
                    agent_version: "0.1.0".into(),
                    ..Default::default()
                },
                enrolled_ms: 1,
                last_seen_ms: 1,
                cert_not_after_ms: i64::MAX,
                revoked_ms: revoked.then_some(2),
            })
            .await
            .unwrap();
    }

    async fn stack(&self, name: &str, selector: &str) {
        self.core
            .store
            .put_stack(&StackRecord {
                name: name.into(),
                selector: selector.into(),
                revision: "r1".into(),
                history: Vec::new(),
                created_ms: 1,
                updated_ms: 1,
            })
            .await
            .unwrap();
    }

    async fn backup(&self, id: &str, stack: &str, state: pb::BackupState, finished_ms: i64) {
        let info = pb::BackupInfo {
            id: id.into(),
            stack: stack.into(),
            name: "db".into(),
            state: state.into(),
            finished_unix_ms: finished_ms,
            ..Default::default()
        };
        self.core
            .store
            .change_backup(id, &|_| Ok(Some(info.clone())))
            .await
            .unwrap();
    }

    /// `n` online hosts `h<i>` named `web-<i>` (role=web), each with a sample of `containers`
    /// containers `c<i>-<j>` of service `svc<j>` and the stack shop reported healthy; returns
    /// their sessions (dropping them takes the hosts offline).
    async fn online_hosts(
        &self,
        n: usize,
        containers: usize,
    ) -> Vec<crate::registry::Registration> {
        let mut sessions = Vec::new();
        for h in 0..n {
            let id = format!("h{h}");
            self.host(&id, &format!("web-{h}"), &[("role", "web")], false)
                .await;
            sessions.push(self.core.registry.register(&id, NOW));
            let list = (0..containers)
                .map(|c| container(&format!("c{h}-{c}"), &format!("svc{c}"), 1 << 20))
                .collect();
            self.core.metrics.record(&id, sample(NOW, list));
            let healthy = stack_report("shop", pb::ApplyState::Converged, pb::Health::Healthy);
            self.core.reports.record(&id, report(vec![healthy], ""));
        }
        sessions
    }

    /// Collect as a scrape does (a fresh store snapshot first, which also makes a new view).
    async fn scrape(&self) -> Scrape {
        self.sources.refresh().await;
        let (text, _) = crate::otel::prom::encode(&self.registry, Some(&self.sources)).unwrap();
        Scrape::parse(&String::from_utf8(text).unwrap())
    }
}

/// The view `noco_proto::otel::init` installs: every instrument keeps up to
/// `METRIC_CARDINALITY_LIMIT` attribute sets.
fn cardinality(
    _: &opentelemetry_sdk::metrics::Instrument,
) -> Option<opentelemetry_sdk::metrics::Stream> {
    opentelemetry_sdk::metrics::Stream::builder()
        .with_cardinality_limit(noco_proto::otel::METRIC_CARDINALITY_LIMIT)
        .build()
        .ok()
}

/// The exposition text as series → value.
struct Scrape {
    text: String,
    series: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (head, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => {
                    let mut labels = BTreeMap::new();
                    for pair in rest.trim_end_matches('}').split("\",") {
                        let (k, v) = pair.split_once("=\"").unwrap();
                        labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                    (name, labels)
                }
                None => (head, BTreeMap::new()),
            };
            series.insert((name.to_string(), labels), value.parse().unwrap());
        }
        Scrape {
            text: text.to_string(),
            series,
        }
    }

    /// The value of the series `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.series.get(&(name.to_string(), labels)).copied()
    }

    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{}", self.text))
    }

    /// The series of `name` whose labels include `labels`.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.series
            .keys()
            .filter(|(n, l)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .count()
    }
}

fn report(stacks: Vec<pb::StackReport>, refused: &str) -> pb::StateReport {
    pb::StateReport {
        generation: 1,
        refused: refused.into(),
        stacks,
        ..Default::default()
    }
}

fn stack_report(name: &str, state: pb::ApplyState, health: pb::Health) -> pb::StackReport {
    pb::StackReport {
        name: name.into(),
        revision: "r1".into(),
        state: state.into(),
        services: vec![pb::ServiceReport {
            name: "web".into(),
            running: 1,
            desired: 1,
            health: health.into(),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn hosts_stacks_rollouts_and_backups_read_by_state_with_their_labels() {
    let f = Fixture::new().await;
    f.host("h1", "web-1", &[("role", "web")], false).await;
    f.host("h2", "web-2", &[("role", "web")], false).await;
    f.host("h3", "db-1", &[("role", "db")], false).await;
    f.host("h4", "gone", &[("role", "web")], true).await;
    f.stack("shop", "role=web").await;
    f.stack("db", "role=db").await;
    let _s1 = f.core.registry.register("h1", NOW);
    let _s3 = f.core.registry.register("h3", NOW);
    let _t1 = f.core.registry.register_telemetry("h1");
    use pb::ApplyState::{Converged, Failed};
    use pb::Health::Healthy;
    f.core.reports.record(
        "h1",
        report(vec![stack_report("shop", Converged, Healthy)], ""),
    );
    f.core.reports.record(
        "h3",
        report(
            vec![stack_report("db", Failed, Healthy)],
            "signature does not verify",
        ),
    );
    // web-2 reported shop healthy before it went offline: offline is what counts.
    f.core.reports.record(
        "h2",
        report(vec![stack_report("shop", Converged, Healthy)], ""),
    );
    let config = Config {
        canary: 1,
        batch: BatchSize::Count(1),
        min_healthy_ms: 0,
        deadline_ms: 60_000,
        max_failures: 0,
        auto_rollback: true,
        pause_after_canary: false,
        backup_first: false,
    };
    let rollout = Rollout::start(
        "shop",
        "r1",
        "r2",
        &["h1".to_string(), "h2".to_string()],
        config,
        NOW - 5_000,
    );
    f.core
        .store
        .put_rollout(&RolloutRecord {
            id: "ro1".into(),
            started_ms: NOW - 5_000,
            by: "alice".into(),
            rollout,
            released: false,
        })
        .await
        .unwrap();
    use pb::BackupState::{Complete, Failed as BackupFailed, Missed};
    f.backup("shop.db.1", "shop", Complete, NOW - 7_000).await;
    f.backup("shop.db.2", "shop", Complete, NOW - 3_000).await;
    f.backup("shop.db.3", "shop", BackupFailed, NOW - 1_000)
        .await;
    f.backup("db.db.1", "db", Missed, NOW - 1_000).await;
    let job = pb::BackupJob {
        id: "j1".into(),
        state: pb::BackupJobState::Pending.into(),
        ..Default::default()
    };
    f.core
        .store
        .change_backup_job("j1", &|_| Ok(Some(job.clone())))
        .await
        .unwrap();
    f.core
        .store
        .put_order(&PendingOrder {
            job_id: "j1".into(),
            host_id: "h2".into(),
            expires_ms: NOW + 60_000,
            delivered_ms: None,
            signed_hex: String::new(),
        })
        .await
        .unwrap();

    let m = f.scrape().await;
    assert_eq!(m.value("noco_hosts", &[("state", "online")]), 2.0);
    assert_eq!(m.value("noco_hosts", &[("state", "offline")]), 1.0);
    assert_eq!(m.value("noco_hosts", &[("state", "revoked")]), 1.0);
    let web2 = [("host", "web-2"), ("host_id", "h2")];
    assert_eq!(m.value("noco_host_online", &web2), 0.0);
    assert_eq!(
        m.value("noco_host_online", &[("host", "web-1"), ("host_id", "h1")]),
        1.0
    );
    assert_eq!(
        m.count("noco_host_online", &[("host", "gone")]),
        0,
        "revoked"
    );
    assert_eq!(
        m.value(
            "noco_host_info",
            &[
                ("host", "web-1"),
                ("host_id", "h1"),
                ("agent_version", "0.1.0"),
                ("docker_version", ""),
                ("os", ""),
                ("arch", "")
            ]
        ),
        1.0
    );
    assert_eq!(m.value("noco_stacks", &[]), 2.0);
    let stack_hosts = |stack: &str, state: &str| {
        m.value("noco_stack_hosts", &[("stack", stack), ("state", state)])
    };
    assert_eq!(stack_hosts("shop", "healthy"), 1.0);
    assert_eq!(stack_hosts("shop", "offline"), 1.0);
    assert_eq!(stack_hosts("shop", "failed"), 0.0);
    assert_eq!(stack_hosts("shop", "unhealthy"), 0.0);
    assert_eq!(stack_hosts("shop", "pending"), 0.0);
    assert_eq!(stack_hosts("db", "failed"), 1.0);
    assert_eq!(stack_hosts("db", "healthy"), 0.0);
    assert_eq!(
        m.value(
            "noco_host_state_refused",
            &[("host", "db-1"), ("host_id", "h3")]
        ),
        1.0
    );
    assert_eq!(m.value("noco_host_state_refused", &web2), 0.0);
    assert_eq!(m.value("noco_hosts_refusing", &[]), 1.0);
    assert_eq!(
        m.value("noco_rollouts", &[("stack", "shop"), ("phase", "running")]),
        1.0
    );
    assert_eq!(m.count("noco_rollouts", &[("stack", "db")]), 0, "none yet");
    assert_eq!(
        m.value("noco_rollout_phase", &[("stack", "shop")]),
        pb::RolloutPhase::Running as i32 as f64
    );
    assert_eq!(m.value("noco_rollout_step", &[("stack", "shop")]), 1.0);
    assert_eq!(m.value("noco_rollout_steps", &[("stack", "shop")]), 2.0);
    assert_eq!(
        m.value("noco_rollout_start_time_seconds", &[("stack", "shop")]),
        (NOW - 5_000) as f64 / 1000.0
    );
    let backups =
        |stack: &str, state: &str| m.value("noco_backups", &[("stack", stack), ("state", state)]);
    assert_eq!(backups("shop", "complete"), 2.0);
    assert_eq!(backups("shop", "failed"), 1.0);
    assert_eq!(backups("shop", "missed"), 0.0);
    assert_eq!(backups("db", "missed"), 1.0);
    assert_eq!(
        m.value(
            "noco_backup_last_complete_time_seconds",
            &[("stack", "shop")]
        ),
        (NOW - 3_000) as f64 / 1000.0,
        "the newest complete one"
    );
    assert_eq!(
        m.count("noco_backup_last_complete_time_seconds", &[("stack", "db")]),
        0
    );
    assert_eq!(m.value("noco_backup_jobs", &[("state", "pending")]), 1.0);
    assert_eq!(m.value("noco_backup_jobs", &[("state", "running")]), 0.0);
    assert_eq!(m.value("noco_backup_orders_pending", &[]), 1.0);
    assert_eq!(m.value("noco_sessions", &[("kind", "agent")]), 2.0);
    assert_eq!(m.value("noco_sessions", &[("kind", "telemetry")]), 1.0);
    assert!(m.value("noco_store_size_bytes", &[]) > 0.0);
    assert_eq!(
        m.value("noco_logs_limit_bytes", &[]),
        Limits::default().log_bytes_total as f64
    );

    // web-2 comes back and reports the stack not ready yet; db-1 goes away.
    let _s2 = f.core.registry.register("h2", NOW);
    f.core.reports.record(
        "h2",
        report(
            vec![stack_report("shop", Converged, pb::Health::Starting)],
            "",
        ),
    );
    f.core.registry.deregister("h3", _s3.session_id);
    let m = f.scrape().await;
    assert_eq!(stack_hosts_of(&m, "shop", "unhealthy"), 1.0);
    assert_eq!(stack_hosts_of(&m, "shop", "offline"), 0.0);
    assert_eq!(stack_hosts_of(&m, "db", "offline"), 1.0);
    assert_eq!(stack_hosts_of(&m, "db", "failed"), 0.0);
    assert_eq!(
        m.value("noco_hosts_refusing", &[]),
        0.0,
        "only online hosts"
    );
    f.provider.shutdown().unwrap();
}

fn stack_hosts_of(m: &Scrape, stack: &str, state: &str) -> f64 {
    m.value("noco_stack_hosts", &[("stack", stack), ("state", state)])
}

fn container(id: &str, service: &str, memory: u64) -> pb::ContainerMetrics {
    pb::ContainerMetrics {
        stack: "shop".into(),
        service: service.into(),
        number: 1,
        container: format!("shop-{service}-1"),
        container_id: id.into(),
        state: "running".into(),
        health: pb::Health::Healthy.into(),
        restarts: 2,
        cpu_percent: 25.0,
        memory_bytes: memory,
        memory_limit_bytes: 2 * memory,
        net_rx_bytes: 1_000,
        net_tx_bytes: 2_000,
        block_read_bytes: 3_000,
        block_write_bytes: 4_000,
        pids: 7,
    }
}

fn sample(ms: i64, containers: Vec<pb::ContainerMetrics>) -> pb::MetricsSample {
    pb::MetricsSample {
        time_unix_ms: ms,
        host: Some(pb::HostMetrics {
            cpus: 4,
            cpu_percent: 50.0,
            memory_used_bytes: 1 << 30,
            memory_total_bytes: 4 << 30,
            load1: 1.5,
            load5: 1.0,
            load15: 0.5,
            disks: vec![pb::DiskUsage {
                mount: "/".into(),
                used_bytes: 10,
                total_bytes: 100,
            }],
            net_rx_bytes: 5_000,
            net_tx_bytes: 6_000,
            containers_running: 2,
            containers_total: 3,
            uptime_secs: 3_600,
        }),
        containers,
        collect_ms: 3,
    }
}

#[tokio::test]
async fn online_hosts_and_their_containers_read_from_the_latest_samples_and_go_when_they_do() {
    let f = Fixture::new().await;
    f.host("h1", "web-1", &[], false).await;
    f.host("h2", "web-2", &[], false).await;
    let s1 = f.core.registry.register("h1", NOW);
    f.core.metrics.record(
        "h1",
        sample(
            NOW - 2_000,
            vec![
                container("c1", "web", 100 << 20),
                container("c2", "worker", 50 << 20),
            ],
        ),
    );
    // web-2 sent a sample and went offline: nothing of it is shown.
    f.core
        .metrics
        .record("h2", sample(NOW - 60_000, vec![container("c9", "web", 1)]));

    let m = f.scrape().await;
    let h1 = [("host", "web-1"), ("host_id", "h1")];
    assert_eq!(m.value("system_cpu_utilization_ratio", &h1), 0.5);
    assert_eq!(m.value("noco_host_cpus", &h1), 4.0);
    assert_eq!(m.value("system_cpu_load_average_1m", &h1), 1.5);
    assert_eq!(m.value("system_cpu_load_average_15m", &h1), 0.5);
    let used = [h1[0], h1[1], ("system_memory_state", "used")];
    assert_eq!(
        m.value("system_memory_usage_bytes", &used),
        (1u64 << 30) as f64
    );
    assert_eq!(m.value("system_memory_utilization_ratio", &used), 0.25);
    assert_eq!(
        m.value("system_memory_limit_bytes", &h1),
        (4u64 << 30) as f64
    );
    let root = [h1[0], h1[1], ("system_filesystem_mountpoint", "/")];
    assert_eq!(m.value("system_filesystem_utilization_ratio", &root), 0.1);
    assert_eq!(m.value("system_filesystem_limit_bytes", &root), 100.0);
    let free = [
        root[0],
        root[1],
        root[2],
        ("system_filesystem_state", "free"),
    ];
    assert_eq!(m.value("system_filesystem_usage_bytes", &free), 90.0);
    let rx = [h1[0], h1[1], ("network_io_direction", "receive")];
    assert_eq!(m.value("system_network_io_bytes_total", &rx), 5_000.0);
    assert_eq!(m.value("system_uptime_seconds", &h1), 3_600.0);
    assert_eq!(m.value("noco_host_containers", &h1), 3.0);
    assert_eq!(m.value("noco_host_containers_running", &h1), 2.0);
    assert_eq!(m.value("noco_host_sample_age_seconds", &h1), 2.0);
    assert_eq!(
        m.count("system_cpu_utilization_ratio", &[("host", "web-2")]),
        0
    );

    let web = [
        ("host", "web-1"),
        ("stack", "shop"),
        ("service", "web"),
        ("container", "shop-web-1"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = web.to_vec();
        l.push(extra);
        l
    };
    assert_eq!(m.value("container_cpu_usage", &web), 0.25);
    assert_eq!(
        m.value("container_memory_usage_bytes", &web),
        (100u64 << 20) as f64
    );
    assert_eq!(
        m.value("noco_container_memory_limit_bytes", &web),
        (200u64 << 20) as f64
    );
    assert_eq!(
        m.value(
            "container_network_io_bytes_total",
            &with(("network_io_direction", "transmit"))
        ),
        2_000.0
    );
    assert_eq!(
        m.value(
            "container_disk_io_bytes_total",
            &with(("disk_io_direction", "write"))
        ),
        4_000.0
    );
    assert_eq!(m.value("noco_container_restarts_total", &web), 2.0);
    let mut health = with(("health", "healthy"));
    health.push(("state", "running"));
    assert_eq!(m.value("noco_container_health", &health), 1.0);
    assert_eq!(m.value("noco_container_pids", &web), 7.0);
    assert_eq!(m.count("container_cpu_usage", &[("service", "worker")]), 1);
    assert_eq!(m.count("container_cpu_usage", &[("host", "web-2")]), 0);

    // The worker is gone from the next sample: its series go; the web container's stay.
    f.clock.advance_ms(1_000);
    f.core.metrics.record(
        "h1",
        sample(NOW - 1_000, vec![container("c1", "web", 120 << 20)]),
    );
    let m = f.scrape().await;
    for name in [
        "container_cpu_usage",
        "container_memory_usage_bytes",
        "container_network_io_bytes_total",
        "noco_container_health",
        "noco_container_restarts_total",
    ] {
        assert_eq!(m.count(name, &[("service", "worker")]), 0, "{name}");
        assert!(m.count(name, &[("service", "web")]) >= 1, "{name}");
    }
    assert_eq!(
        m.value("container_memory_usage_bytes", &web),
        (120u64 << 20) as f64
    );

    // web-1 goes offline: every series of its samples goes, and it reads offline.
    f.core.registry.deregister("h1", s1.session_id);
    let m = f.scrape().await;
    assert_eq!(m.count("container_cpu_usage", &[]), 0);
    assert_eq!(m.count("system_cpu_utilization_ratio", &[]), 0);
    assert_eq!(m.value("noco_host_online", &h1), 0.0);
    f.provider.shutdown().unwrap();
}

#[tokio::test]
async fn a_host_renamed_or_enrolled_reads_by_its_new_name_from_the_next_snapshot() {
    let f = Fixture::new().await;
    f.host("h1", "web-1", &[], false).await;
    let _s = f.core.registry.register("h1", NOW);
    f.core
        .metrics
        .record("h1", sample(NOW, vec![container("c1", "web", 1)]));
    let m = f.scrape().await;
    assert_eq!(m.count("container_cpu_usage", &[("host", "web-1")]), 1);

    f.core
        .store
        .update_host("h1", &|h| {
            h.name = "web-9".into();
            Ok(())
        })
        .await
        .unwrap();
    f.host("h2", "web-2", &[], false).await;
    let _s2 = f.core.registry.register("h2", NOW);
    f.core.metrics.record("h2", sample(NOW, Vec::new()));
    let m = f.scrape().await;
    assert_eq!(m.count("container_cpu_usage", &[("host", "web-1")]), 0);
    assert_eq!(m.count("container_cpu_usage", &[("host", "web-9")]), 1);
    assert_eq!(
        m.count(
            "system_filesystem_limit_bytes",
            &[("host", "web-9"), ("host_id", "h1")]
        ),
        1
    );
    assert_eq!(
        m.count("system_cpu_utilization_ratio", &[("host", "web-2")]),
        1,
        "enrolled"
    );
    f.provider.shutdown().unwrap();
}

mod rpc {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    use tonic::body::Body;
    use tower::{Layer, Service, ServiceExt};

    use crate::otel::metrics::RpcMetricsLayer;

    /// What the inner service answers for each path.
    fn answer(path: &str) -> http::Response<Body> {
        match path {
            // A unary call: a message, then trailers with OK.
            "/noco.v1.Control/Status" => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                let frames = futures_util::stream::iter(vec![
                    Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(b"msg"))),
                    Ok(Frame::trailers(trailers)),
                ]);
                http::Response::new(Body::new(StreamBody::new(frames)))
            }
            // A stream the client leaves: a message, then nothing more.
            "/noco.v1.Control/Logs" => {
                let frames = futures_util::stream::iter(vec![Ok::<_, tonic::Status>(Frame::data(
                    Bytes::from_static(b"line"),
                ))])
                .chain(futures_util::stream::pending());
                http::Response::new(Body::new(StreamBody::new(frames)))
            }
            // Refused before any message: a trailers-only response.
            _ => tonic::Status::permission_denied("no").into_http(),
        }
    }

    async fn call<S>(svc: &mut S, path: &str) -> http::Response<Body>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>,
        S::Error: std::fmt::Debug,
    {
        let req = http::Request::builder()
            .uri(format!("http://server{path}"))
            .body(Body::empty())
            .unwrap();
        svc.ready().await.unwrap().call(req).await.unwrap()
    }

    #[tokio::test]
    async fn calls_are_timed_by_service_method_and_status_and_unknown_paths_are_folded() {
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let layer = RpcMetricsLayer::on(&provider.meter(super::super::METER));
        let mut svc = layer.layer(tower::service_fn(|req: http::Request<Body>| async move {
            Ok::<_, std::convert::Infallible>(answer(req.uri().path()))
        }));

        let res = call(&mut svc, "/noco.v1.Control/Status").await;
        let body = res.into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes(), Bytes::from_static(b"msg"));
        drop(call(&mut svc, "/noco.v1.Control/RevokeHost").await);
        for i in 0..3 {
            drop(call(&mut svc, &format!("/made.up/Method{i}")).await);
        }
        let mut res = call(&mut svc, "/noco.v1.Control/Logs").await;
        let first = res.body_mut().frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(res);

        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let m = Scrape::parse(&String::from_utf8(text).unwrap());
        let count = |service: &str, method: &str, code: &str| {
            m.get(
                "rpc_server_duration_seconds_count",
                &[
                    ("rpc_system", "grpc"),
                    ("rpc_service", service),
                    ("rpc_method", method),
                    ("rpc_grpc_status_code", code),
                ],
            )
        };
        assert_eq!(count("noco.v1.Control", "Status", "0"), Some(1.0), "OK");
        assert_eq!(
            count("noco.v1.Control", "RevokeHost", "7"),
            Some(1.0),
            "PERMISSION_DENIED"
        );
        assert_eq!(count("_OTHER", "_OTHER", "7"), Some(3.0), "one series");
        assert_eq!(
            count("noco.v1.Control", "Logs", "1"),
            Some(1.0),
            "CANCELLED: left by the client"
        );
        assert_eq!(m.count("rpc_server_duration_seconds_count", &[]), 4);
        assert!(
            m.count(
                "rpc_server_duration_seconds_bucket",
                &[("rpc_method", "Status"), ("le", "0.005")]
            ) == 1
        );
        provider.shutdown().unwrap();
    }
}

/// The per-host and per-container series go over OTLP in requests of bounded size, every
/// series once, with the same labels as on `/metrics`.
#[tokio::test]
async fn otlp_requests_hold_every_series_once_and_none_holds_more_than_its_share() {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let f = Fixture::new().await;
    f.stack("shop", "role=web").await;
    let sessions = f.online_hosts(30, 10).await;
    let scrape = f.scrape().await;
    let requests = super::bulk::otlp(
        &f.sources.view(),
        &[("service.name", "noco-server".into())],
        1,
        2,
        1000,
    );
    let mut points = Vec::new();
    for encoded in &requests {
        // What a collector reads: the generated OTLP types decode our hand-encoded bytes.
        let req = <opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest as prost::Message>::decode(encoded.as_slice())
            .unwrap_or_else(|e| panic!("an OTLP request that does not decode: {e}"));
        let mut in_request = 0;
        for rm in &req.resource_metrics {
            let resource = rm
                .resource
                .as_ref()
                .unwrap_or_else(|| panic!("no resource"));
            assert_eq!(resource.attributes[0].key, "service.name");
            for sm in &rm.scope_metrics {
                assert_eq!(
                    sm.scope.as_ref().map(|s| s.name.as_str()),
                    Some(super::METER)
                );
                for m in &sm.metrics {
                    assert!(!m.description.is_empty() && !m.name.is_empty(), "{m:?}");
                    if let Some(Data::Sum(sum)) = &m.data {
                        assert_eq!(sum.aggregation_temporality, 2, "cumulative: {}", m.name);
                        assert_eq!(
                            sum.is_monotonic,
                            m.name.ends_with(".io") || m.name.ends_with("restarts"),
                            "{}",
                            m.name
                        );
                        assert!(sum.data_points.iter().all(|p| p.start_time_unix_nano == 1));
                    }
                    if m.name == "container.memory.usage"
                        && let Some(Data::Sum(sum)) = &m.data
                    {
                        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
                        assert!(
                            sum.data_points
                                .iter()
                                .all(|p| p.value == Some(Value::AsInt(1 << 20))
                                    && p.time_unix_nano == 2),
                            "{:?}",
                            sum.data_points.first()
                        );
                    }
                    let dps = match &m.data {
                        Some(Data::Gauge(g)) => &g.data_points,
                        Some(Data::Sum(s)) => &s.data_points,
                        other => panic!("{}: {other:?}", m.name),
                    };
                    in_request += dps.len();
                    for p in dps {
                        let attrs: BTreeMap<String, String> = p
                            .attributes
                            .iter()
                            .map(|kv| {
                                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => s.clone(),
                                    other => panic!("{other:?}"),
                                };
                                (kv.key.clone(), v)
                            })
                            .collect();
                        points.push((m.name.clone(), attrs));
                    }
                }
            }
        }
        assert!(in_request <= 1000, "{in_request} points in one request");
    }
    assert!(requests.len() >= 3, "{} requests", requests.len());
    let containers = points
        .iter()
        .filter(|(name, _)| name == "container.memory.usage")
        .count();
    assert_eq!(containers, 300, "every container once");
    let unique: std::collections::BTreeSet<_> = points.iter().collect();
    assert_eq!(unique.len(), points.len(), "no series twice");
    let memory = points
        .iter()
        .find(|(name, a)| {
            name == "container.memory.usage"
                && a.get("host").map(String::as_str) == Some("web-7")
                && a.get("service").map(String::as_str) == Some("svc3")
        })
        .unwrap_or_else(|| panic!("web-7's svc3 memory: {points:?}"));
    assert_eq!(
        memory.1.get("container").map(String::as_str),
        Some("shop-svc3-1")
    );
    assert_eq!(memory.1.get("stack").map(String::as_str), Some("shop"));
    // The same series as `/metrics` shows.
    assert_eq!(
        scrape.count("container_memory_usage_bytes", &[]),
        containers,
        "as many series on /metrics"
    );
    drop(sessions);
}

/// What a collection costs at 1,000 online hosts × 10 containers (a figure, not a check):
/// `cargo test --release -p noco-server --lib collection_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn collection_cost_at_1000_hosts_with_10_containers_each() {
    let f = Fixture::new().await;
    f.stack("shop", "role=web").await;
    let _sessions = f.online_hosts(1000, 10).await;
    let started = std::time::Instant::now();
    f.sources.refresh().await;
    eprintln!("store snapshot: {:?}", started.elapsed());
    for _ in 0..3 {
        f.sources.refresh().await;
        let started = std::time::Instant::now();
        drop(f.sources.view());
        let view = started.elapsed();
        f.sources.refresh().await;
        let started = std::time::Instant::now();
        let (text, _) = crate::otel::prom::encode(&f.registry, Some(&f.sources)).unwrap();
        let scraped = started.elapsed();
        let started = std::time::Instant::now();
        let requests = super::bulk::otlp(&f.sources.view(), &[], 0, 1, super::bulk::MAX_POINTS);
        let built = started.elapsed();
        let bytes: usize = requests.iter().map(Vec::len).sum();
        eprintln!(
            "view {view:?}; /metrics {scraped:?}: {} lines, {} bytes; OTLP requests built in {built:?}: {} requests, {bytes} bytes",
            text.iter().filter(|b| **b == b'\n').count(),
            text.len(),
            requests.len(),
        );
    }
    f.provider.shutdown().unwrap();
}
