//! One pass over the server's live state per collection: which hosts are online, how each
//! stack is on each host it is assigned to (agents' reports, read with the one health predicate
//! of `noco_proto::health`), and the latest sample of every online host with the label sets of
//! its containers and disks. Every callback of a collection reads the same [`View`] (built at
//! most once per [`REUSE`]).
//!
//! Label sets are built when a container (or disk) first appears and kept across collections:
//! a collection clones reference counts, not strings. A container its host no longer reports,
//! and every container of a host that went offline, is forgotten at the next build — and, since
//! observable instruments report only what their callbacks observed, its series end there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use noco_proto::health;
use noco_proto::v1 as pb;
use opentelemetry::KeyValue;

use super::fleet::Fleet;
use crate::core::Core;

/// A view this young is reused (the callbacks of one collection run within milliseconds).
pub(super) const REUSE: Duration = Duration::from_secs(1);

/// How a stack is on the hosts its selector chooses, in the order of [`View::stack_hosts`].
pub(super) const STACK_HOST_STATES: [&str; 5] =
    ["healthy", "unhealthy", "failed", "pending", "offline"];
const HEALTHY: usize = 0;
const UNHEALTHY: usize = 1;
const FAILED: usize = 2;
const PENDING: usize = 3;
const OFFLINE: usize = 4;

/// The live state as of one collection.
#[derive(Debug)]
pub(super) struct View {
    built: Instant,
    pub fleet: Arc<Fleet>,
    /// By host index of [`Fleet::hosts`].
    pub online: Vec<bool>,
    pub hosts_online: u64,
    /// Per stack of [`Fleet::stacks`]: its hosts by [`STACK_HOST_STATES`].
    pub stack_hosts: Vec<[u64; STACK_HOST_STATES.len()]>,
    /// By host index: an online host whose latest report says it refused its desired state.
    pub refused: Vec<bool>,
    /// The latest sample of every online host that sent one.
    pub samples: Vec<HostSample>,
    pub sessions: u64,
    pub telemetry_streams: u64,
    /// What the log hub holds.
    pub logs: crate::telemetry::logs::Accounted,
    pub now_ms: i64,
}

/// An online host's latest sample, with the label sets of its containers and disks (aligned
/// with the sample's).
#[derive(Debug)]
pub(super) struct HostSample {
    pub host: u32,
    pub sample: Arc<pb::MetricsSample>,
    /// `host`, `stack`, `service`, `container`.
    pub containers: Vec<Arc<[KeyValue]>>,
    /// `host`, `host_id`, `system.filesystem.mountpoint`.
    pub disks: Vec<Arc<[KeyValue]>>,
}

/// What is kept from one collection to the next.
#[derive(Debug, Default)]
pub(super) struct Live {
    view: Option<Arc<View>>,
    generation: u64,
    /// By host id.
    hosts: HashMap<Arc<str>, HostLabels>,
}

#[derive(Debug, Default)]
struct HostLabels {
    seen: u64,
    /// The host's name the label sets below carry.
    name: Arc<str>,
    /// By container id.
    containers: HashMap<String, ContainerLabels>,
    /// By mount point.
    disks: HashMap<String, Arc<[KeyValue]>>,
}

#[derive(Debug)]
struct ContainerLabels {
    seen: u64,
    stack: String,
    service: String,
    container: String,
    labels: Arc<[KeyValue]>,
}

impl Live {
    /// The view of this collection: the last one if it is recent, else a new one.
    pub fn view(&mut self, core: &Core, fleet: &Arc<Fleet>) -> Arc<View> {
        if let Some(v) = &self.view
            && v.built.elapsed() < REUSE
            && Arc::ptr_eq(&v.fleet, fleet)
        {
            return v.clone();
        }
        let view = Arc::new(self.build(core, fleet));
        self.view = Some(view.clone());
        view
    }

    fn build(&mut self, core: &Core, fleet: &Arc<Fleet>) -> View {
        self.generation += 1;
        let generation = self.generation;
        let n = fleet.hosts.len();
        let mut online = vec![false; n];
        let mut hosts_online = 0;
        core.registry.each_online(|id| {
            if let Some(&i) = fleet.host_index.get(id) {
                online[i as usize] = true;
                hosts_online += 1;
            }
        });

        // (host, stack) → how the host reports the stack; online hosts only.
        let mut reported: HashMap<(u32, u32), usize> = HashMap::new();
        let mut refused = vec![false; n];
        core.reports.each_latest(|id, report| {
            let Some(&h) = fleet.host_index.get(id) else {
                return;
            };
            if !online[h as usize] {
                return;
            }
            refused[h as usize] = !report.refused.is_empty();
            for s in &report.stacks {
                if let Some(&i) = fleet.stack_index.get(s.name.as_str()) {
                    let state = if health::stack_healthy(s) {
                        HEALTHY
                    } else if health::stack_failed(s) {
                        FAILED
                    } else {
                        UNHEALTHY
                    };
                    reported.insert((h, i), state);
                }
            }
        });
        let stack_hosts = fleet
            .stacks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut counts = [0; STACK_HOST_STATES.len()];
                for &h in &s.assigned {
                    let state = if !online[h as usize] {
                        OFFLINE
                    } else {
                        reported.get(&(h, i as u32)).copied().unwrap_or(PENDING)
                    };
                    counts[state] += 1;
                }
                counts
            })
            .collect();

        let mut latest = Vec::new();
        core.metrics.each_latest(|id, sample| {
            if let Some(&h) = fleet.host_index.get(id)
                && online[h as usize]
            {
                latest.push((h, sample.clone()));
            }
        });
        let samples = latest
            .into_iter()
            .map(|(h, sample)| self.labelled(fleet, h, sample, generation))
            .collect();
        // Forget what was not seen: hosts gone offline, containers and disks gone.
        self.hosts.retain(|_, h| h.seen == generation);
        for h in self.hosts.values_mut() {
            h.containers.retain(|_, c| c.seen == generation);
        }

        View {
            built: Instant::now(),
            fleet: fleet.clone(),
            online,
            hosts_online,
            stack_hosts,
            refused,
            samples,
            sessions: core.registry.len() as u64,
            telemetry_streams: core.registry.telemetry_len() as u64,
            logs: core.logs.accounted(),
            now_ms: core.now_ms(),
        }
    }

    /// A host's sample with its label sets, built for what is new.
    fn labelled(
        &mut self,
        fleet: &Fleet,
        h: u32,
        sample: Arc<pb::MetricsSample>,
        generation: u64,
    ) -> HostSample {
        let entry = &fleet.hosts[h as usize];
        let host_labels = &entry.labels;
        let labels = self.hosts.entry(entry.id.clone()).or_default();
        labels.seen = generation;
        if labels.name != entry.name {
            // Renamed (or new): every label set carries the name.
            labels.containers.clear();
            labels.disks.clear();
            labels.name = entry.name.clone();
        }
        let containers = sample
            .containers
            .iter()
            .map(|c| {
                let key = if c.container_id.is_empty() {
                    &c.container
                } else {
                    &c.container_id
                };
                if let Some(l) = labels.containers.get_mut(key.as_str())
                    && l.stack == c.stack
                    && l.service == c.service
                    && l.container == c.container
                {
                    l.seen = generation;
                    return l.labels.clone();
                }
                let made: Arc<[KeyValue]> = Arc::new([
                    host_labels[0].clone(),
                    KeyValue::new("stack", c.stack.clone()),
                    KeyValue::new("service", c.service.clone()),
                    KeyValue::new("container", c.container.clone()),
                ]);
                labels.containers.insert(
                    key.clone(),
                    ContainerLabels {
                        seen: generation,
                        stack: c.stack.clone(),
                        service: c.service.clone(),
                        container: c.container.clone(),
                        labels: made.clone(),
                    },
                );
                made
            })
            .collect();
        let disks: Vec<Arc<[KeyValue]>> = sample
            .host
            .iter()
            .flat_map(|m| &m.disks)
            .map(|d| {
                if let Some(l) = labels.disks.get(d.mount.as_str()) {
                    return l.clone();
                }
                let made: Arc<[KeyValue]> = Arc::new([
                    host_labels[0].clone(),
                    host_labels[1].clone(),
                    KeyValue::new("system.filesystem.mountpoint", d.mount.clone()),
                ]);
                labels.disks.insert(d.mount.clone(), made.clone());
                made
            })
            .collect();
        if let Some(m) = &sample.host {
            labels
                .disks
                .retain(|mount, _| m.disks.iter().any(|d| d.mount == *mount));
        }
        HostSample {
            host: h,
            sample,
            containers,
            disks,
        }
    }
}
