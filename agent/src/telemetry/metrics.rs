//! Metrics: a sample of the host and of this agent's containers every interval, published in a
//! `watch` (the latest wins; the transport sends it).
//!
//! The host is read from `/proc` (CPU since the previous sample, memory without what the kernel
//! can reclaim, load, network counters of every interface but loopback, uptime) and the disks
//! of its real filesystems (`statvfs`, one per device). Containers — the managed ones of this
//! agent's projects, at most [`MAX_SAMPLE_CONTAINERS`] — are read from their cgroup files, not
//! Docker's stats API (which costs a second per container and call): one `list_containers`
//! call per sample gives every container's state, an `inspect` only when a container is new,
//! its state changed or its main process did (its pid, restart count, network mode), and the
//! rest comes from the cgroup (v2, or the v1 controllers on older hosts) and the network
//! namespace of its process. A file that cannot be read (a container gone, a controller not
//! there) leaves its fields at zero; nothing fails a sample. The host's container counts come
//! from the same list (every container of the engine, not only this agent's).
//!
//! The file reading runs on the blocking pool, into one reused buffer.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, ContainerSummaryHealthStatusEnum,
    ContainerSummaryStateEnum,
};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use noco_compose::plan::Health;
use noco_proto::limits::MAX_SAMPLE_CONTAINERS;
use noco_proto::v1 as pb;
use tokio::sync::watch;

use super::collect::stack_of;
use crate::engine::{docker_message, labels, observe};

/// Inspects in flight at once (many only when the agent starts on a busy host).
const INSPECTS_AT_ONCE: usize = 8;

/// Sample every `interval` into `tx`, until dropped. The first sample is taken one interval
/// after the start (CPU figures need a previous sample).
pub async fn run(
    interval: Duration,
    tx: watch::Sender<Option<Arc<pb::MetricsSample>>>,
    project_prefix: String,
    docker: Docker,
) {
    let mut sampler = Sampler::new(docker, project_prefix);
    sampler.sample().await;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let sample = sampler.sample().await;
        tx.send_replace(Some(Arc::new(sample)));
    }
}

/// Takes samples, keeping what the next one needs: the previous CPU counters and what was
/// learned of each container by inspecting it.
pub struct Sampler {
    docker: Docker,
    prefix: String,
    /// `None` only while a sample reads files (or after one was dropped mid-way).
    files: Option<Files>,
    last_warning: Option<Instant>,
}

/// A managed container of ours, as the list shows it.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    stack: String,
    service: String,
    number: u32,
    container: String,
    state: String,
    health: pb::Health,
}

impl Sampler {
    pub fn new(docker: Docker, project_prefix: String) -> Sampler {
        Sampler {
            docker,
            prefix: project_prefix,
            files: None,
            last_warning: None,
        }
    }

    /// One sample of the host and the containers. CPU figures are since the previous sample
    /// (0 in the first, and for a container seen for the first time).
    pub async fn sample(&mut self) -> pb::MetricsSample {
        let started = Instant::now();
        let time_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let opts = ListContainersOptionsBuilder::default().all(true).build();
        let list = match self.docker.list_containers(Some(opts)).await {
            Ok(list) => list,
            Err(e) => {
                if self
                    .last_warning
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(300))
                {
                    tracing::warn!("metrics: listing containers: {}", docker_message(&e));
                    self.last_warning = Some(Instant::now());
                }
                Vec::new()
            }
        };
        let containers_total = u32::try_from(list.len()).unwrap_or(u32::MAX);
        let containers_running = u32::try_from(
            list.iter()
                .filter(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
                .count(),
        )
        .unwrap_or(u32::MAX);
        let mut ours: Vec<Listed> = list
            .into_iter()
            .filter_map(|c| listed(c, &self.prefix))
            .collect();
        ours.sort_by(|a, b| {
            (&a.stack, &a.service, a.number, &a.container).cmp(&(
                &b.stack,
                &b.service,
                b.number,
                &b.container,
            ))
        });
        ours.truncate(MAX_SAMPLE_CONTAINERS);

        let mut files = self.files.take().unwrap_or_default();
        let wanted: Vec<String> = ours
            .iter()
            .filter(|c| files.needs_inspect(&c.id, &c.state))
            .map(|c| c.id.clone())
            .collect();
        let docker = &self.docker;
        let inspected: Vec<(String, Option<ContainerInspectResponse>)> =
            futures_util::stream::iter(wanted)
                .map(|id| async move {
                    let info = docker
                        .inspect_container(&id, None::<InspectContainerOptions>)
                        .await
                        .ok();
                    (id, info)
                })
                .buffer_unordered(INSPECTS_AT_ONCE)
                .collect()
                .await;
        for (id, info) in inspected {
            if let Some(c) = ours.iter().find(|c| c.id == id) {
                files.inspected(&id, &c.state, info.as_ref());
            }
        }

        let read = tokio::task::spawn_blocking(move || {
            let (host, containers) = files.read(&ours);
            (files, host, containers)
        })
        .await;
        let (host, containers) = match read {
            Ok((files, host, containers)) => {
                self.files = Some(files);
                (host, containers)
            }
            Err(e) => {
                tracing::warn!("metrics: reading /proc and cgroups: {e}");
                (pb::HostMetrics::default(), Vec::new())
            }
        };
        pb::MetricsSample {
            time_unix_ms,
            host: Some(pb::HostMetrics {
                containers_running,
                containers_total,
                ..host
            }),
            containers,
            collect_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        }
    }
}

fn listed(c: ContainerSummary, prefix: &str) -> Option<Listed> {
    let labels = c.labels?;
    let stack = stack_of(&labels, prefix)?.to_string();
    let status = c.status.unwrap_or_default();
    let health = match c.health.and_then(|h| h.status) {
        Some(ContainerSummaryHealthStatusEnum::HEALTHY) => pb::Health::Healthy,
        Some(ContainerSummaryHealthStatusEnum::UNHEALTHY) => pb::Health::Unhealthy,
        Some(ContainerSummaryHealthStatusEnum::STARTING) => pb::Health::Starting,
        // Older engines say it only in the status text ("Up 3 minutes (healthy)").
        _ => match observe::health(&status) {
            Some(Health::Healthy) => pb::Health::Healthy,
            Some(Health::Unhealthy) => pb::Health::Unhealthy,
            Some(Health::Starting) => pb::Health::Starting,
            None => pb::Health::None,
        },
    };
    Some(Listed {
        id: c.id?,
        service: labels.get(labels::SERVICE).cloned().unwrap_or_default(),
        number: labels
            .get(labels::NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        container: c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        stack,
        health,
    })
}

/// What a sample reads from files, and what it keeps between samples.
#[derive(Default)]
struct Files {
    reader: Reader,
    layout: Option<Layout>,
    host_cpu: Option<CpuTimes>,
    known: HashMap<String, Known>,
}

/// What was learned of a container by inspecting it, and its previous CPU counter.
#[derive(Debug, Default)]
struct Known {
    /// Its state in the list when inspected: a change means inspect again.
    state: String,
    pid: u32,
    restarts: u32,
    host_network: bool,
    /// Its main process is no longer the one inspected (it restarted): inspect again.
    stale: bool,
    cgroup: Option<Cgroup>,
    cpu: Option<(u64, Instant)>,
}

impl Files {
    fn needs_inspect(&self, id: &str, state: &str) -> bool {
        self.known
            .get(id)
            .is_none_or(|k| k.stale || k.state != state)
    }

    fn inspected(&mut self, id: &str, state: &str, info: Option<&ContainerInspectResponse>) {
        let known = self.known.entry(id.to_string()).or_default();
        known.state = state.to_string();
        known.stale = false;
        let Some(info) = info else {
            // Inspect again next time.
            known.state.clear();
            return;
        };
        let pid = info
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        if pid != known.pid {
            known.pid = pid;
            known.cgroup = None;
        }
        known.restarts = info
            .restart_count
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        known.host_network = info
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host");
    }

    /// Read the host and every listed container (blocking).
    fn read(&mut self, listed: &[Listed]) -> (pb::HostMetrics, Vec<pb::ContainerMetrics>) {
        let r = &mut self.reader;
        let layout = self.layout.get_or_insert_with(|| {
            r.read(Path::new("/proc/self/mounts"))
                .map(Layout::from_mounts)
                .unwrap_or_default()
        });
        let host = read_host(r, &mut self.host_cpu);
        self.known
            .retain(|id, _| listed.iter().any(|c| &c.id == id));
        let containers = listed
            .iter()
            .map(|c| {
                let mut m = pb::ContainerMetrics {
                    stack: c.stack.clone(),
                    service: c.service.clone(),
                    number: c.number,
                    container: c.container.clone(),
                    container_id: c.id.clone(),
                    state: c.state.clone(),
                    health: c.health as i32,
                    ..Default::default()
                };
                if let Some(known) = self.known.get_mut(&c.id) {
                    m.restarts = known.restarts;
                    if c.state == "running" {
                        read_container(r, layout, &c.id, known, &mut m);
                    } else {
                        known.cpu = None;
                    }
                }
                m
            })
            .collect();
        (host, containers)
    }
}

/// Reads files into one reused buffer.
#[derive(Default)]
struct Reader {
    buf: String,
    path: PathBuf,
}

impl Reader {
    fn read(&mut self, path: &Path) -> Option<&str> {
        self.buf.clear();
        let mut file = std::fs::File::open(path).ok()?;
        file.read_to_string(&mut self.buf).ok()?;
        Some(&self.buf)
    }

    fn read_in(&mut self, dir: &Path, name: &str) -> Option<&str> {
        let mut path = std::mem::take(&mut self.path);
        path.as_mut_os_string().clear();
        path.push(dir);
        path.push(name);
        self.buf.clear();
        let ok = std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut self.buf))
            .is_ok();
        self.path = path;
        ok.then_some(self.buf.as_str())
    }
}

fn read_host(r: &mut Reader, previous: &mut Option<CpuTimes>) -> pb::HostMetrics {
    let mut host = pb::HostMetrics::default();
    if let Some((times, cpus)) = r.read(Path::new("/proc/stat")).and_then(parse_proc_stat) {
        host.cpus = cpus;
        if let Some(prev) = previous.replace(times) {
            host.cpu_percent = times.busy_percent_since(&prev);
        }
    }
    if let Some((total, available)) = r.read(Path::new("/proc/meminfo")).map(parse_meminfo) {
        host.memory_total_bytes = total;
        host.memory_used_bytes = total.saturating_sub(available);
    }
    if let Some((l1, l5, l15)) = r.read(Path::new("/proc/loadavg")).and_then(parse_loadavg) {
        (host.load1, host.load5, host.load15) = (l1, l5, l15);
    }
    if let Some((rx, tx)) = r.read(Path::new("/proc/net/dev")).map(parse_net_dev) {
        (host.net_rx_bytes, host.net_tx_bytes) = (rx, tx);
    }
    if let Some(up) = r.read(Path::new("/proc/uptime")).and_then(parse_uptime) {
        host.uptime_secs = up;
    }
    if let Some(mounts) = r.read(Path::new("/proc/self/mounts")).map(real_mounts) {
        host.disks = mounts
            .into_iter()
            .filter_map(|mount| {
                let (used_bytes, total_bytes) = disk_usage(Path::new(&mount))?;
                Some(pb::DiskUsage {
                    mount,
                    used_bytes,
                    total_bytes,
                })
            })
            .collect();
    }
    host
}

fn read_container(
    r: &mut Reader,
    layout: &Layout,
    id: &str,
    known: &mut Known,
    m: &mut pb::ContainerMetrics,
) {
    if known.pid == 0 {
        return;
    }
    if known.cgroup.is_none() {
        let path = PathBuf::from(format!("/proc/{}/cgroup", known.pid));
        known.cgroup = r
            .read(&path)
            .map(|text| layout.cgroup_of(text).of_container(id));
    }
    let Some(cg) = &known.cgroup else { return };
    // The process to read the network of: the one inspected if it is still in the container.
    let mut net_pid = known.pid;
    if let Some(procs) = cg
        .procs_dir()
        .and_then(|dir| r.read_in(dir, "cgroup.procs"))
    {
        let mut pids = procs.lines().filter_map(|l| l.trim().parse::<u32>().ok());
        let first = pids.next();
        if first != Some(known.pid) && !pids.any(|p| p == known.pid) {
            known.stale = true;
            if let Some(first) = first {
                net_pid = first;
            }
        }
    }

    // CPU
    let usage_ns = cg
        .v2
        .as_deref()
        .and_then(|d| r.read_in(d, "cpu.stat"))
        .and_then(|t| stat_value(t, "usage_usec"))
        .map(|us| us.saturating_mul(1000))
        .or_else(|| {
            cg.cpuacct
                .as_deref()
                .and_then(|d| r.read_in(d, "cpuacct.usage"))
                .and_then(parse_u64)
        });
    let now = Instant::now();
    match usage_ns {
        Some(usage) => {
            if let Some((prev, at)) = known.cpu {
                let wall = now.duration_since(at).as_nanos() as f64;
                if wall > 0.0 {
                    m.cpu_percent = usage.saturating_sub(prev) as f64 / wall * 100.0;
                }
            }
            known.cpu = Some((usage, now));
        }
        None => known.cpu = None,
    }

    // Memory, as `docker stats` shows it: without the inactive page cache.
    let v2_memory = cg.v2.as_deref().and_then(|d| {
        let current = r.read_in(d, "memory.current").and_then(parse_u64)?;
        let inactive = r
            .read_in(d, "memory.stat")
            .and_then(|t| stat_value(t, "inactive_file"))
            .unwrap_or(0);
        let limit = r
            .read_in(d, "memory.max")
            .and_then(parse_limit)
            .unwrap_or(0);
        Some((current.saturating_sub(inactive), limit))
    });
    let memory = v2_memory.or_else(|| {
        let d = cg.memory.as_deref()?;
        let usage = r.read_in(d, "memory.usage_in_bytes").and_then(parse_u64)?;
        let inactive = r
            .read_in(d, "memory.stat")
            .and_then(|t| stat_value(t, "total_inactive_file"))
            .unwrap_or(0);
        let limit = r
            .read_in(d, "memory.limit_in_bytes")
            .and_then(parse_limit)
            .unwrap_or(0);
        Some((usage.saturating_sub(inactive), limit))
    });
    if let Some((used, limit)) = memory {
        m.memory_bytes = used;
        m.memory_limit_bytes = limit;
    }

    // Block I/O
    let io = cg
        .v2
        .as_deref()
        .and_then(|d| r.read_in(d, "io.stat"))
        .map(parse_io_stat)
        .or_else(|| {
            let d = cg.blkio.as_deref()?;
            [
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
                "blkio.io_service_bytes_recursive",
            ]
            .into_iter()
            .find_map(|name| r.read_in(d, name).map(parse_blkio))
        });
    if let Some((read, write)) = io {
        m.block_read_bytes = read;
        m.block_write_bytes = write;
    }

    // Processes
    let pids = cg
        .v2
        .as_deref()
        .and_then(|d| r.read_in(d, "pids.current"))
        .and_then(parse_u64)
        .or_else(|| {
            cg.pids
                .as_deref()
                .and_then(|d| r.read_in(d, "pids.current"))
                .and_then(parse_u64)
        });
    m.pids = pids.map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX));

    // Network (a container on the host's network has none of its own)
    if !known.host_network {
        let path = PathBuf::from(format!("/proc/{net_pid}/net/dev"));
        if let Some((rx, tx)) = r.read(&path).map(parse_net_dev) {
            m.net_rx_bytes = rx;
            m.net_tx_bytes = tx;
        }
    }
}

// ------------------------------------------------------------------------------- parsers

/// Host CPU time (jiffies): all of it, and the idle part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    total: u64,
    idle: u64,
}

impl CpuTimes {
    fn busy_percent_since(&self, prev: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(prev.total);
        let idle = self.idle.saturating_sub(prev.idle);
        if total == 0 {
            return 0.0;
        }
        total.saturating_sub(idle) as f64 / total as f64 * 100.0
    }
}

/// `/proc/stat`: the all-CPU line and the number of CPUs.
fn parse_proc_stat(text: &str) -> Option<(CpuTimes, u32)> {
    let mut times = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        if rest.starts_with(' ') {
            // user nice system idle iowait irq softirq steal (guest time is within user).
            let v: Vec<u64> = rest
                .split_ascii_whitespace()
                .take(8)
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            if v.len() < 4 {
                return None;
            }
            let idle = v[3] + v.get(4).copied().unwrap_or(0);
            times = Some(CpuTimes {
                total: v.iter().sum(),
                idle,
            });
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            cpus += 1;
        }
    }
    Some((times?, cpus))
}

/// `/proc/meminfo`: MemTotal and MemAvailable, in bytes.
fn parse_meminfo(text: &str) -> (u64, u64) {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_ascii_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(1024)
    };
    (kib("MemTotal"), kib("MemAvailable"))
}

fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut it = text.split_ascii_whitespace().map(|v| v.parse::<f64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

/// `/proc/net/dev`: received and sent bytes, over every interface but loopback.
fn parse_net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let mut fields = counters.split_ascii_whitespace();
        let received = fields.next().and_then(|v| v.parse::<u64>().ok());
        let sent = fields.nth(7).and_then(|v| v.parse::<u64>().ok());
        rx = rx.saturating_add(received.unwrap_or(0));
        tx = tx.saturating_add(sent.unwrap_or(0));
    }
    (rx, tx)
}

/// Filesystems that hold data (not pseudo, network, overlay or memory ones).
const REAL_FILESYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "bcachefs", "f2fs", "jfs", "reiserfs", "nilfs2",
    "vfat", "exfat", "ntfs", "ntfs3", "hfsplus",
];

/// The mount points of real filesystems in `/proc/self/mounts`, the first of each device.
fn real_mounts(text: &str) -> Vec<String> {
    let mut devices: Vec<&str> = Vec::new();
    let mut mounts = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(device), Some(mount), Some(fstype)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !REAL_FILESYSTEMS.contains(&fstype) || devices.contains(&device) {
            continue;
        }
        devices.push(device);
        mounts.push(unescape_mount(mount));
    }
    mounts
}

/// Mount points escape space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |n, b| n * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Used and total bytes of the filesystem at `path`, as `df` counts them.
// The statvfs fields are u64 here, narrower on other targets.
#[allow(clippy::useless_conversion)]
fn disk_usage(path: &Path) -> Option<(u64, u64)> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string and `st` points to writable memory of the
    // right type, which statvfs fills in when it returns 0.
    let st = unsafe {
        if libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    let block = u64::from(st.f_frsize);
    let total = u64::from(st.f_blocks).saturating_mul(block);
    let free = u64::from(st.f_bfree).saturating_mul(block);
    Some((total.saturating_sub(free), total))
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Layout {
    /// The cgroup v2 (unified) hierarchy.
    v2: Option<PathBuf>,
    /// cgroup v1 controllers by name.
    v1: Vec<(String, PathBuf)>,
}

impl Layout {
    fn from_mounts(text: &str) -> Layout {
        let mut layout = Layout::default();
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(_), Some(mount), Some(fstype), Some(options)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            match fstype {
                "cgroup2" if layout.v2.is_none() => {
                    layout.v2 = Some(PathBuf::from(unescape_mount(mount)));
                }
                "cgroup" => {
                    for option in options.split(',') {
                        if CONTROLLERS.contains(&option)
                            && !layout.v1.iter().any(|(c, _)| c == option)
                        {
                            layout
                                .v1
                                .push((option.to_string(), PathBuf::from(unescape_mount(mount))));
                        }
                    }
                }
                _ => {}
            }
        }
        layout
    }

    /// A process's cgroup directories, from its `/proc/<pid>/cgroup`.
    fn cgroup_of(&self, proc_cgroup: &str) -> Cgroup {
        let mut cg = Cgroup::default();
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let relative = path.trim_start_matches('/');
            if controllers.is_empty() {
                cg.v2 = self.v2.as_ref().map(|root| root.join(relative));
                continue;
            }
            for controller in controllers.split(',') {
                let Some((_, root)) = self.v1.iter().find(|(c, _)| c == controller) else {
                    continue;
                };
                let dir = Some(root.join(relative));
                match controller {
                    "cpuacct" => cg.cpuacct = dir,
                    "memory" => cg.memory = dir,
                    "blkio" => cg.blkio = dir,
                    "pids" => cg.pids = dir,
                    _ => {}
                }
            }
        }
        cg
    }
}

/// The cgroup v1 controllers read.
const CONTROLLERS: &[&str] = &["cpuacct", "memory", "blkio", "pids"];

/// A container's cgroup directories: v2, and the v1 controllers where the host has them (a
/// "hybrid" host has both: CPU in v2, memory in v1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Cgroup {
    v2: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
    blkio: Option<PathBuf>,
    pids: Option<PathBuf>,
}

impl Cgroup {
    /// Only the directories that are the container's: Docker names them after its id (a
    /// path seen from another cgroup namespace, or the root, would be someone else's).
    fn of_container(self, id: &str) -> Cgroup {
        let ours = |dir: Option<PathBuf>| {
            dir.filter(|d| {
                let text = d.to_string_lossy();
                text.contains(id) && !d.components().any(|c| c == std::path::Component::ParentDir)
            })
        };
        Cgroup {
            v2: ours(self.v2),
            cpuacct: ours(self.cpuacct),
            memory: ours(self.memory),
            blkio: ours(self.blkio),
            pids: ours(self.pids),
        }
    }

    /// A directory whose `cgroup.procs` lists the container's processes.
    fn procs_dir(&self) -> Option<&Path> {
        self.pids
            .as_deref()
            .or(self.memory.as_deref())
            .or(self.v2.as_deref())
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A limit: `max` (v2) or a value near the largest (v1's "unlimited") is none, 0.
fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return Some(0);
    }
    let v: u64 = text.parse().ok()?;
    Some(if v >= 1 << 62 { 0 } else { v })
}

/// The value of `key` in a flat keyed file (`cpu.stat`, `memory.stat`: `key value` lines).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// cgroup v2 `io.stat`: read and written bytes over every device.
fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for field in text.split_ascii_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            read = read.saturating_add(v.parse().unwrap_or(0));
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            written = written.saturating_add(v.parse().unwrap_or(0));
        }
    }
    (read, written)
}

/// cgroup v1 `blkio.*io_service_bytes*`: `maj:min Read n` / `maj:min Write n` lines.
fn parse_blkio(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_), Some(op), Some(v)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let v: u64 = v.parse().unwrap_or(0);
        match op {
            "Read" => read = read.saturating_add(v),
            "Write" => written = written.saturating_add(v),
            _ => {}
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_gives_cpu_times_and_count() {
        let text = "cpu  100 5 50 800 20 1 2 3 7 0\n\
                    cpu0 50 2 25 400 10 1 1 1 3 0\n\
                    cpu1 50 3 25 400 10 0 1 2 4 0\n\
                    intr 123 4 5\nctxt 999\nbtime 1700000000\n";
        let (times, cpus) = parse_proc_stat(text).unwrap();
        assert_eq!(cpus, 2);
        assert_eq!(
            times,
            CpuTimes {
                total: 100 + 5 + 50 + 800 + 20 + 1 + 2 + 3,
                idle: 820
            }
        );
        let later = CpuTimes {
            total: times.total + 200,
            idle: times.idle + 150,
        };
        assert_eq!(later.busy_percent_since(&times), 25.0);
        assert_eq!(times.busy_percent_since(&times), 0.0);
        assert_eq!(parse_proc_stat("intr 1\n"), None);
    }

    #[test]
    fn meminfo_loadavg_and_uptime() {
        let meminfo = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\n\
                       MemAvailable:    6000000 kB\nBuffers:          100 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            (16_000_000 * 1024, 6_000_000 * 1024)
        );
        assert_eq!(parse_meminfo(""), (0, 0));
        assert_eq!(
            parse_loadavg("0.52 1.04 2.50 3/456 7890\n"),
            Some((0.52, 1.04, 2.5))
        );
        assert_eq!(parse_loadavg("0.5\n"), None);
        assert_eq!(parse_uptime("12345.67 20000.00\n"), Some(12345));
    }

    #[test]
    fn net_dev_sums_every_interface_but_loopback() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 5000      50    0    0    0     0          0         0     5000      50    0    0    0     0       0          0
  eth0:    200       2    0    0    0     0          0         0      300       3    0    0    0     0       0          0
docker0:1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
";
        assert_eq!(parse_net_dev(text), (1200, 2300));
    }

    #[test]
    fn disks_are_real_filesystems_once_per_device() {
        let text = "\
proc /proc proc rw,relatime 0 0
/dev/vda / ext4 rw,relatime 0 0
tmpfs /run tmpfs rw 0 0
overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0
/dev/vda /var/lib/docker ext4 rw,relatime 0 0
/dev/vdb /mnt/my\\040data xfs rw 0 0
/dev/sda1 /boot/efi vfat rw 0 0
server:/export /nfs nfs4 rw 0 0
";
        assert_eq!(real_mounts(text), ["/", "/mnt/my data", "/boot/efi"]);
        assert_eq!(unescape_mount("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mount("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn statvfs_reads_the_root_filesystem() {
        let (used, total) = disk_usage(Path::new("/")).unwrap();
        assert!(total > 0 && used <= total);
        assert_eq!(disk_usage(Path::new("/no/such/path")), None);
    }

    const HYBRID_MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn cgroup_directories_of_a_process_on_v2() {
        let layout = Layout::from_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n");
        assert_eq!(layout.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        let cg = layout.cgroup_of("0::/system.slice/docker-abc.scope\n");
        assert_eq!(
            cg.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/system.slice/docker-abc.scope"))
        );
        assert_eq!(cg.memory, None);
        assert_eq!(cg.procs_dir(), cg.v2.as_deref());
    }

    #[test]
    fn cgroup_directories_of_a_process_on_a_hybrid_host() {
        let layout = Layout::from_mounts(HYBRID_MOUNTS);
        let cg = layout.cgroup_of(
            "12:pids:/docker/abc\n8:memory:/docker/abc\n5:blkio:/docker/abc\n\
             3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n",
        );
        assert_eq!(
            cg,
            Cgroup {
                v2: Some("/sys/fs/cgroup/unified/docker/abc".into()),
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct/docker/abc".into()),
                memory: Some("/sys/fs/cgroup/memory/docker/abc".into()),
                blkio: Some("/sys/fs/cgroup/blkio/docker/abc".into()),
                pids: Some("/sys/fs/cgroup/pids/docker/abc".into()),
            }
        );
    }

    #[test]
    fn only_the_containers_own_cgroup_directories_are_read() {
        let layout = Layout::from_mounts(HYBRID_MOUNTS);
        let cg = layout
            .cgroup_of("8:memory:/docker/abc\n0::/\n")
            .of_container("abc");
        assert_eq!(
            cg.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/docker/abc"))
        );
        assert_eq!(cg.v2, None);
        let cg = layout
            .cgroup_of("0::/../../docker/abc\n")
            .of_container("abc");
        assert_eq!(cg.v2, None);
    }

    #[test]
    fn cgroup_files() {
        let cpu_stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(stat_value(cpu_stat, "usage_usec"), Some(123_456));
        assert_eq!(stat_value(cpu_stat, "usage"), None);
        let memory_stat = "anon 1000\nfile 5000\nactive_file 1000\ninactive_file 4000\n";
        assert_eq!(stat_value(memory_stat, "inactive_file"), Some(4000));
        assert_eq!(stat_value(memory_stat, "file"), Some(5000));
        assert_eq!(parse_limit("max\n"), Some(0));
        assert_eq!(parse_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_limit("9223372036854771712\n"), Some(0));
        assert_eq!(parse_u64("42\n"), Some(42));
        assert_eq!(parse_u64(""), None);
        let io_stat = "8:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n\
                       8:16 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(io_stat), (1010, 2020));
        let blkio = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n\
                     8:0 Total 12288\n8:16 Read 1\nTotal 12289\n";
        assert_eq!(parse_blkio(blkio), (4097, 8192));
    }

    /// Measures one sample through cgroup files against Docker's stats API (stream=false,
    /// one-shot) over the same containers: the managed ones of the project prefix in
    /// `NOCO_MEASURE_PREFIX` (start them first). `cargo test -p noco-agent --release
    /// measure_sample_cost -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement: needs Docker and running managed containers"]
    #[allow(clippy::print_stderr)]
    async fn measure_sample_cost() {
        use bollard::query_parameters::StatsOptionsBuilder;
        let prefix = std::env::var("NOCO_MEASURE_PREFIX").unwrap_or_default();
        let docker = crate::engine::docker::connect().await.unwrap();
        let mut sampler = Sampler::new(docker.clone(), prefix);
        let first = Instant::now();
        let sample = sampler.sample().await;
        let first = first.elapsed();
        let ids: Vec<String> = sample
            .containers
            .iter()
            .filter(|c| c.state == "running")
            .map(|c| c.container_id.clone())
            .collect();
        assert!(!ids.is_empty(), "no running managed containers");
        let rounds = 5u32;
        let started = Instant::now();
        let mut last = sample;
        for _ in 0..rounds {
            last = sampler.sample().await;
        }
        let cgroups = started.elapsed() / rounds;
        eprintln!("host: {:?}", last.host);
        eprintln!("first container: {:?}", last.containers.first());
        eprintln!("collect_ms of the last sample: {}", last.collect_ms);
        let stats_of = |id: String| {
            let docker = docker.clone();
            async move {
                let opts = StatsOptionsBuilder::default()
                    .stream(false)
                    .one_shot(true)
                    .build();
                docker.stats(&id, Some(opts)).next().await
            }
        };
        let started = Instant::now();
        for id in &ids {
            assert!(matches!(stats_of(id.clone()).await, Some(Ok(_))));
        }
        let sequential = started.elapsed();
        let started = Instant::now();
        let all = futures_util::future::join_all(ids.iter().cloned().map(stats_of)).await;
        let concurrent = started.elapsed();
        assert!(all.iter().all(|s| matches!(s, Some(Ok(_)))));
        let opts = StatsOptionsBuilder::default().stream(false).build();
        let started = Instant::now();
        let _ = docker.stats(&ids[0], Some(opts)).next().await;
        let two_reads = started.elapsed();
        // Figures over a real interval, next to what `docker stats` says.
        sampler.sample().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sample = sampler.sample().await;
        for c in &sample.containers {
            eprintln!(
                "{}: cpu {:.1}% mem {} pids {} net {}/{} block {}/{}",
                c.container,
                c.cpu_percent,
                c.memory_bytes,
                c.pids,
                c.net_rx_bytes,
                c.net_tx_bytes,
                c.block_read_bytes,
                c.block_write_bytes
            );
        }
        eprintln!(
            "{} containers: cgroup sample {:.1?} (first, with inspects: {first:.1?}); \
             stats one-shot: sequential {sequential:.1?}, concurrent {concurrent:.1?}; \
             one stats call without one-shot: {two_reads:.1?}",
            ids.len(),
            cgroups,
        );
    }
}
