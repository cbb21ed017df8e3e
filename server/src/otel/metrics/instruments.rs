//! Every observable instrument of the server, each with its callback over the store snapshot
//! ([`super::fleet`]) and the collection's view ([`super::view`]). One table per group, in the
//! order ARCHITECTURE.md "Telemetry export" lists them; Prometheus names in the comments.

use std::sync::Arc;

use noco_proto::Enumeration;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter};

use super::Sources;
use super::fleet::BACKUP_STATES;
use super::view::{STACK_HOST_STATES, View};

pub(super) fn register(meter: &Meter, s: &Arc<Sources>) {
    fleet(meter, s);
    hosts(meter, s);
    containers(meter, s);
    internals(meter, s);
}

/// A callback over the collection's view.
fn on<T>(
    s: &Arc<Sources>,
    f: impl Fn(&View, &dyn AsyncInstrument<T>) + Send + Sync + 'static,
) -> impl Fn(&dyn AsyncInstrument<T>) + Send + Sync + 'static {
    let s = s.clone();
    move |o| f(&s.view(), o)
}

/// Observe `value` with `base` and `extra` labels, through a buffer reused for a whole callback
/// (cloning a label set clones reference counts, not strings).
fn observe<T>(
    o: &dyn AsyncInstrument<T>,
    buf: &mut Vec<KeyValue>,
    base: &[KeyValue],
    extra: &[KeyValue],
    value: T,
) {
    buf.clear();
    buf.extend_from_slice(base);
    buf.extend_from_slice(extra);
    o.observe(value, buf);
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn kv(key: &'static str, value: &'static str) -> KeyValue {
    KeyValue::new(key, value)
}

/// Hosts, stacks, rollouts, refused states, backups.
fn fleet(meter: &Meter, s: &Arc<Sources>) {
    // noco_hosts{state}
    meter
        .i64_observable_up_down_counter("noco.hosts")
        .with_unit("{host}")
        .with_description("Hosts by state: online (a live session), offline, revoked")
        .with_callback(on(s, |v, o| {
            let total = v.fleet.hosts.len() as u64;
            o.observe(i(v.hosts_online), &[kv("state", "online")]);
            o.observe(i(total - v.hosts_online), &[kv("state", "offline")]);
            o.observe(i(v.fleet.revoked), &[kv("state", "revoked")]);
        }))
        .build();
    // noco_host_online{host,host_id}
    meter
        .u64_observable_gauge("noco.host.online")
        .with_description("1 while the host has a live session, else 0 (hosts not revoked)")
        .with_callback(on(s, |v, o| {
            for (h, online) in v.fleet.hosts.iter().zip(&v.online) {
                o.observe(u64::from(*online), &h.labels);
            }
        }))
        .build();
    // noco_host_info{host,host_id,agent_version,docker_version,os,arch}
    meter
        .u64_observable_gauge("noco.host.info")
        .with_description("1 per host that is not revoked, with its facts as labels")
        .with_callback(on(s, |v, o| {
            for h in &v.fleet.hosts {
                o.observe(1, &h.info);
            }
        }))
        .build();
    // noco_host_state_refused{host,host_id}
    meter
        .u64_observable_gauge("noco.host.state.refused")
        .with_description(
            "1 while the host's agent reports refusing its desired state (bad signature, expired, older generation), else 0",
        )
        .with_callback(on(s, |v, o| {
            for (h, refused) in v.fleet.hosts.iter().zip(&v.refused) {
                o.observe(u64::from(*refused), &h.labels);
            }
        }))
        .build();
    // noco_hosts_refusing
    meter
        .i64_observable_up_down_counter("noco.hosts.refusing")
        .with_unit("{host}")
        .with_description("Online hosts whose agent reports refusing its desired state")
        .with_callback(on(s, |v, o| {
            o.observe(v.refused.iter().filter(|r| **r).count() as i64, &[]);
        }))
        .build();
    // noco_stacks
    meter
        .i64_observable_up_down_counter("noco.stacks")
        .with_unit("{stack}")
        .with_description("Stacks in the catalog")
        .with_callback(on(s, |v, o| {
            o.observe(v.fleet.stacks.len() as i64, &[]);
        }))
        .build();
    // noco_stack_hosts{stack,state}
    meter
        .i64_observable_up_down_counter("noco.stack.hosts")
        .with_unit("{host}")
        .with_description(
            "Hosts a stack's selector chooses, by how the stack is there: healthy (converged, every service ready), unhealthy, failed (apply failed or refused by the host's policy), pending (not reported yet), offline",
        )
        .with_callback(on(s, |v, o| {
            for (stack, counts) in v.fleet.stacks.iter().zip(&v.stack_hosts) {
                for (state, n) in STACK_HOST_STATES.iter().zip(counts) {
                    o.observe(i(*n), &[stack.label.clone(), kv("state", state)]);
                }
            }
        }))
        .build();
    // noco_rollouts{stack,phase}
    meter
        .i64_observable_up_down_counter("noco.rollouts")
        .with_unit("{rollout}")
        .with_description("Each stack's latest rollout, by phase (sum by phase: how many stacks' latest rollout is in it)")
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(1, &[stack.label.clone(), kv("phase", r.phase.text())]);
                }
            }
        }))
        .build();
    // noco_rollout_phase{stack}
    meter
        .i64_observable_gauge("noco.rollout.phase")
        .with_description(
            "The phase of each stack's latest rollout as its protocol number: 1 running, 2 paused, 3 succeeded, 4 failed, 5 rolling_back, 6 rolled_back, 7 rollback_failed, 8 aborted",
        )
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(r.phase as i64, std::slice::from_ref(&stack.label));
                }
            }
        }))
        .build();
    // noco_rollout_step{stack}, noco_rollout_steps{stack}
    meter
        .u64_observable_gauge("noco.rollout.step")
        .with_description(
            "The step of each stack's latest rollout in flight (or its last), 1-based",
        )
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(u64::from(r.step), std::slice::from_ref(&stack.label));
                }
            }
        }))
        .build();
    meter
        .u64_observable_gauge("noco.rollout.steps")
        .with_description("How many steps each stack's latest rollout has")
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(u64::from(r.steps), std::slice::from_ref(&stack.label));
                }
            }
        }))
        .build();
    // noco_rollout_start_time_seconds{stack}
    meter
        .f64_observable_gauge("noco.rollout.start_time")
        .with_unit("s")
        .with_description("When each stack's latest rollout started (Unix time)")
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(
                        r.started_ms as f64 / 1000.0,
                        std::slice::from_ref(&stack.label),
                    );
                }
            }
        }))
        .build();
    // noco_backups{stack,state}
    meter
        .i64_observable_up_down_counter("noco.backups")
        .with_unit("{backup}")
        .with_description("Backups in the catalog by stack and state (running, pending_upload, complete, failed, missed)")
        .with_callback(on(s, |v, o| {
            for b in &v.fleet.backups {
                for (state, n) in BACKUP_STATES.iter().zip(&b.counts) {
                    o.observe(i(*n), &[b.label.clone(), kv("state", state.text())]);
                }
            }
        }))
        .build();
    // noco_backup_last_complete_time_seconds{stack}
    meter
        .f64_observable_gauge("noco.backup.last_complete.time")
        .with_unit("s")
        .with_description(
            "When the stack's newest complete backup finished (Unix time); absent before its first",
        )
        .with_callback(on(s, |v, o| {
            for b in &v.fleet.backups {
                if let Some(ms) = b.last_complete_ms {
                    o.observe(ms as f64 / 1000.0, std::slice::from_ref(&b.label));
                }
            }
        }))
        .build();
    // noco_backup_jobs{state}
    meter
        .i64_observable_up_down_counter("noco.backup.jobs")
        .with_unit("{job}")
        .with_description("Backup, restore and verify jobs not finished: pending (ordered, not started) or running")
        .with_callback(on(s, |v, o| {
            o.observe(i(v.fleet.jobs_pending), &[kv("state", "pending")]);
            o.observe(i(v.fleet.jobs_running), &[kv("state", "running")]);
        }))
        .build();
    // noco_backup_orders_pending
    meter
        .i64_observable_up_down_counter("noco.backup.orders.pending")
        .with_unit("{order}")
        .with_description("Signed orders kept for hosts that have not started them (offline hosts get them when they connect)")
        .with_callback(on(s, |v, o| o.observe(i(v.fleet.orders), &[])))
        .build();
}

/// The latest sample of every online host: labels `host`, `host_id`.
fn hosts(meter: &Meter, s: &Arc<Sources>) {
    // system_cpu_utilization_ratio
    meter
        .f64_observable_gauge("system.cpu.utilization")
        .with_unit("1")
        .with_description(
            "CPU busy, of all the host's CPUs together, 0–1, since the agent's previous sample",
        )
        .with_callback(on(s, |v, o| {
            for (labels, m) in host_samples(v) {
                o.observe(m.cpu_percent / 100.0, labels);
            }
        }))
        .build();
    // noco_host_cpus (the conventions' `system.cpu.logical.count` would read
    // `system_cpu_logical_count`, which Prometheus's linter refuses: `_count` is a histogram's)
    meter
        .i64_observable_up_down_counter("noco.host.cpus")
        .with_unit("{cpu}")
        .with_description("Logical CPUs of the host")
        .with_callback(on(s, |v, o| {
            for (labels, m) in host_samples(v) {
                o.observe(i64::from(m.cpus), labels);
            }
        }))
        .build();
    // system_cpu_load_average_1m, _5m, _15m
    type Load = fn(&noco_proto::v1::HostMetrics) -> f64;
    let loads: [(&'static str, Load); 3] = [
        ("system.cpu.load_average.1m", |m| m.load1),
        ("system.cpu.load_average.5m", |m| m.load5),
        ("system.cpu.load_average.15m", |m| m.load15),
    ];
    for (name, load) in loads {
        meter
            .f64_observable_gauge(name)
            .with_unit("{thread}")
            .with_description("The host's load average")
            .with_callback(on(s, move |v, o| {
                for (labels, m) in host_samples(v) {
                    o.observe(load(m), labels);
                }
            }))
            .build();
    }
    // system_memory_usage_bytes{system_memory_state="used"}
    meter
        .i64_observable_up_down_counter("system.memory.usage")
        .with_unit("By")
        .with_description("Memory in use on the host (total − available)")
        .with_callback(on(s, |v, o| {
            let mut buf = Vec::new();
            let used = [kv("system.memory.state", "used")];
            for (labels, m) in host_samples(v) {
                observe(o, &mut buf, labels, &used, i(m.memory_used_bytes));
            }
        }))
        .build();
    // system_memory_limit_bytes
    meter
        .i64_observable_up_down_counter("system.memory.limit")
        .with_unit("By")
        .with_description("The host's total memory")
        .with_callback(on(s, |v, o| {
            for (labels, m) in host_samples(v) {
                o.observe(i(m.memory_total_bytes), labels);
            }
        }))
        .build();
    // system_memory_utilization_ratio{system_memory_state="used"}
    meter
        .f64_observable_gauge("system.memory.utilization")
        .with_unit("1")
        .with_description("Memory in use on the host, of its total, 0–1")
        .with_callback(on(s, |v, o| {
            let mut buf = Vec::new();
            let used = [kv("system.memory.state", "used")];
            for (labels, m) in host_samples(v) {
                if m.memory_total_bytes > 0 {
                    let ratio = m.memory_used_bytes as f64 / m.memory_total_bytes as f64;
                    observe(o, &mut buf, labels, &used, ratio);
                }
            }
        }))
        .build();
    // system_filesystem_usage_bytes{system_filesystem_mountpoint,system_filesystem_state}
    meter
        .i64_observable_up_down_counter("system.filesystem.usage")
        .with_unit("By")
        .with_description("Used and free bytes of each of the host's filesystems")
        .with_callback(on(s, |v, o| {
            let mut buf = Vec::new();
            let (used, free) = (
                [kv("system.filesystem.state", "used")],
                [kv("system.filesystem.state", "free")],
            );
            for (labels, d) in disks(v) {
                observe(o, &mut buf, labels, &used, i(d.used_bytes));
                let left = d.total_bytes.saturating_sub(d.used_bytes);
                observe(o, &mut buf, labels, &free, i(left));
            }
        }))
        .build();
    // system_filesystem_limit_bytes{system_filesystem_mountpoint}
    meter
        .i64_observable_up_down_counter("system.filesystem.limit")
        .with_unit("By")
        .with_description("The size of each of the host's filesystems")
        .with_callback(on(s, |v, o| {
            for (labels, d) in disks(v) {
                o.observe(i(d.total_bytes), labels);
            }
        }))
        .build();
    // system_filesystem_utilization_ratio{system_filesystem_mountpoint}
    meter
        .f64_observable_gauge("system.filesystem.utilization")
        .with_unit("1")
        .with_description("Used, of each of the host's filesystems, 0–1")
        .with_callback(on(s, |v, o| {
            for (labels, d) in disks(v) {
                if d.total_bytes > 0 {
                    o.observe(d.used_bytes as f64 / d.total_bytes as f64, labels);
                }
            }
        }))
        .build();
    // system_network_io_bytes_total{network_io_direction}
    meter
        .u64_observable_counter("system.network.io")
        .with_unit("By")
        .with_description(
            "Bytes received and transmitted by the host, every interface but loopback, since boot",
        )
        .with_callback(on(s, |v, o| {
            let mut buf = Vec::new();
            let (rx, tx) = (
                [kv("network.io.direction", "receive")],
                [kv("network.io.direction", "transmit")],
            );
            for (labels, m) in host_samples(v) {
                observe(o, &mut buf, labels, &rx, m.net_rx_bytes);
                observe(o, &mut buf, labels, &tx, m.net_tx_bytes);
            }
        }))
        .build();
    // system_uptime_seconds
    meter
        .f64_observable_gauge("system.uptime")
        .with_unit("s")
        .with_description("How long the host has been up")
        .with_callback(on(s, |v, o| {
            for (labels, m) in host_samples(v) {
                o.observe(m.uptime_secs as f64, labels);
            }
        }))
        .build();
    // noco_host_containers, noco_host_containers_running
    meter
        .i64_observable_up_down_counter("noco.host.containers")
        .with_unit("{container}")
        .with_description("Containers on the host (every container Docker has, noco's or not)")
        .with_callback(on(s, |v, o| {
            for (labels, m) in host_samples(v) {
                o.observe(i64::from(m.containers_total), labels);
            }
        }))
        .build();
    meter
        .i64_observable_up_down_counter("noco.host.containers.running")
        .with_unit("{container}")
        .with_description("Containers running on the host")
        .with_callback(on(s, |v, o| {
            for (labels, m) in host_samples(v) {
                o.observe(i64::from(m.containers_running), labels);
            }
        }))
        .build();
    // noco_host_sample_age_seconds
    meter
        .f64_observable_gauge("noco.host.sample.age")
        .with_unit("s")
        .with_description("How old the host's latest metrics sample is (by the server's clock against the agent's)")
        .with_callback(on(s, |v, o| {
            for hs in &v.samples {
                let labels = &v.fleet.hosts[hs.host as usize].labels;
                let age = (v.now_ms - hs.sample.time_unix_ms).max(0) as f64 / 1000.0;
                o.observe(age, labels);
            }
        }))
        .build();
}

/// Each online host's labels and the host part of its latest sample.
fn host_samples(
    v: &View,
) -> impl Iterator<Item = (&[KeyValue], &noco_proto::v1::HostMetrics)> + '_ {
    v.samples.iter().filter_map(|hs| {
        let m = hs.sample.host.as_ref()?;
        Some((&v.fleet.hosts[hs.host as usize].labels[..], m))
    })
}

/// Every disk of every online host, with its labels.
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
fn containers_of(
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

/// Every container of every online host's latest sample.
fn containers(meter: &Meter, s: &Arc<Sources>) {
    // container_cpu_usage
    meter
        .f64_observable_gauge("container.cpu.usage")
        .with_unit("{cpu}")
        .with_description("The container's CPU use in CPUs (1 = one core busy), since the agent's previous sample")
        .with_callback(on(s, |v, o| {
            for (labels, c) in containers_of(v) {
                o.observe(c.cpu_percent / 100.0, labels);
            }
        }))
        .build();
    // container_memory_usage_bytes
    meter
        .i64_observable_up_down_counter("container.memory.usage")
        .with_unit("By")
        .with_description(
            "The container's memory without the page cache (as `docker stats` shows it)",
        )
        .with_callback(on(s, |v, o| {
            for (labels, c) in containers_of(v) {
                o.observe(i(c.memory_bytes), labels);
            }
        }))
        .build();
    // noco_container_memory_limit_bytes
    meter
        .i64_observable_up_down_counter("noco.container.memory.limit")
        .with_unit("By")
        .with_description("The container's memory limit (absent: none)")
        .with_callback(on(s, |v, o| {
            for (labels, c) in containers_of(v) {
                if c.memory_limit_bytes > 0 {
                    o.observe(i(c.memory_limit_bytes), labels);
                }
            }
        }))
        .build();
    // container_network_io_bytes_total{network_io_direction}
    meter
        .u64_observable_counter("container.network.io")
        .with_unit("By")
        .with_description("Bytes the container received and transmitted")
        .with_callback(on(s, |v, o| {
            let mut buf = Vec::new();
            let (rx, tx) = (
                [kv("network.io.direction", "receive")],
                [kv("network.io.direction", "transmit")],
            );
            for (labels, c) in containers_of(v) {
                observe(o, &mut buf, labels, &rx, c.net_rx_bytes);
                observe(o, &mut buf, labels, &tx, c.net_tx_bytes);
            }
        }))
        .build();
    // container_disk_io_bytes_total{disk_io_direction}
    meter
        .u64_observable_counter("container.disk.io")
        .with_unit("By")
        .with_description("Bytes the container read from and wrote to block devices")
        .with_callback(on(s, |v, o| {
            let mut buf = Vec::new();
            let (read, write) = (
                [kv("disk.io.direction", "read")],
                [kv("disk.io.direction", "write")],
            );
            for (labels, c) in containers_of(v) {
                observe(o, &mut buf, labels, &read, c.block_read_bytes);
                observe(o, &mut buf, labels, &write, c.block_write_bytes);
            }
        }))
        .build();
    // noco_container_restarts_total
    meter
        .u64_observable_counter("noco.container.restarts")
        .with_unit("{restart}")
        .with_description("How often Docker restarted the container")
        .with_callback(on(s, |v, o| {
            for (labels, c) in containers_of(v) {
                o.observe(u64::from(c.restarts), labels);
            }
        }))
        .build();
    // noco_container_health{health,state}
    meter
        .u64_observable_gauge("noco.container.health")
        .with_description(
            "1 per container, labelled with its health (healthy, unhealthy, starting, none: no healthcheck) and Docker state (running, exited, …)",
        )
        .with_callback(on(s, |v, o| {
            let mut buf = Vec::new();
            for (labels, c) in containers_of(v) {
                let extra = [
                    kv("health", c.health().text()),
                    kv("state", container_state(&c.state)),
                ];
                observe(o, &mut buf, labels, &extra, 1);
            }
        }))
        .build();
    // noco_container_pids
    meter
        .i64_observable_up_down_counter("noco.container.pids")
        .with_unit("{process}")
        .with_description("Processes and threads in the container")
        .with_callback(on(s, |v, o| {
            for (labels, c) in containers_of(v) {
                o.observe(i64::from(c.pids), labels);
            }
        }))
        .build();
}

/// Sessions, the store's size, what the log hub and the backup machinery hold.
fn internals(meter: &Meter, s: &Arc<Sources>) {
    // noco_sessions{kind}
    meter
        .i64_observable_up_down_counter("noco.sessions")
        .with_unit("{session}")
        .with_description("Live agent sessions and telemetry streams (one of each per online host)")
        .with_callback(on(s, |v, o| {
            o.observe(i(v.sessions), &[kv("kind", "agent")]);
            o.observe(i(v.telemetry_streams), &[kv("kind", "telemetry")]);
        }))
        .build();
    // noco_store_size_bytes
    meter
        .i64_observable_up_down_counter("noco.store.size")
        .with_unit("By")
        .with_description("The database's size on disk (sled: its files)")
        .with_callback(on(s, |v, o| {
            if let Some(bytes) = v.fleet.store_bytes {
                o.observe(i(bytes), &[]);
            }
        }))
        .build();
    // noco_logs_held_bytes, noco_logs_limit_bytes, noco_logs_records, noco_logs_followers
    meter
        .i64_observable_up_down_counter("noco.logs.held")
        .with_unit("By")
        .with_description("Log records the server holds in memory, as its caps account them")
        .with_callback(on(s, |v, o| o.observe(i(v.logs.bytes), &[])))
        .build();
    meter
        .i64_observable_up_down_counter("noco.logs.records")
        .with_unit("{record}")
        .with_description("Log records (lines and markers) the server holds in memory")
        .with_callback(on(s, |v, o| o.observe(v.logs.records as i64, &[])))
        .build();
    let core = s.core.clone();
    meter
        .i64_observable_up_down_counter("noco.logs.limit")
        .with_unit("By")
        .with_description("The cap on log records held in memory (--log-bytes-total)")
        .with_callback(move |o| o.observe(i(core.logs.caps().bytes_total), &[]))
        .build();
    let core = s.core.clone();
    meter
        .i64_observable_up_down_counter("noco.logs.followers")
        .with_unit("{reader}")
        .with_description("Readers following the logs (`nococtl logs -f`)")
        .with_callback(move |o| o.observe(core.logs.followers() as i64, &[]))
        .build();
    // noco_backup_uploads_active
    let core = s.core.clone();
    meter
        .i64_observable_up_down_counter("noco.backup.uploads.active")
        .with_unit("{upload}")
        .with_description("Backup archives being uploaded to the server now")
        .with_callback(move |o| o.observe(core.backups.uploads_active() as i64, &[]))
        .build();
}
