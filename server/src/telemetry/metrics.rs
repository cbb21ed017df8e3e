//! Hosts' metrics, in memory: per host the latest sample (with its containers) and the one
//! before it (for network rates), and a bounded history of compact points. Agents sample again
//! when they reconnect, so nothing here is persisted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use noco_proto::limits::MAX_SAMPLE_CONTAINERS;
use noco_proto::v1 as pb;

/// History points fall in different seconds: a sample in the same second as the last point
/// replaces it, so the history's length cap covers its whole duration and holds the newest.
const POINT_SPACING_MS: i64 = 1000;
/// Disks kept per sample.
const MAX_DISKS: usize = 64;
/// Longest string kept in a sample.
const MAX_TEXT: usize = 256;

#[derive(Debug)]
struct Series {
    latest: Arc<pb::MetricsSample>,
    previous: Option<Arc<pb::MetricsSample>>,
    points: VecDeque<pb::HostMetricsPoint>,
    /// By container id.
    containers: HashMap<String, ContainerSeries>,
}

/// One container's history: who it is (as of its last sample) and compact points.
#[derive(Debug)]
struct ContainerSeries {
    who: pb::ContainerHistory,
    points: VecDeque<ContainerPoint>,
}

/// 24 bytes a point: an hour at 10 s is 8.6 KiB per container.
#[derive(Debug, Clone, Copy)]
struct ContainerPoint {
    time_unix_ms: i64,
    cpu_percent: f32,
    memory_bytes: u64,
}

/// A host's latest sample and the network rates since the one before.
#[derive(Debug, Clone)]
pub struct Latest {
    pub sample: Arc<pb::MetricsSample>,
    /// Bytes per second over the last two samples (0 with one sample, or when a counter went
    /// back: a reboot).
    pub net_rx_rate: f64,
    pub net_tx_rate: f64,
}

#[derive(Debug)]
pub struct MetricsStore {
    hosts: Mutex<HashMap<String, Series>>,
    history: Duration,
    max_points: usize,
}

impl MetricsStore {
    /// Keep `history` of points per host (at most one a second).
    pub fn new(history: Duration) -> Self {
        MetricsStore {
            hosts: Mutex::default(),
            history,
            max_points: history.as_secs() as usize,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Series>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a host's new sample.
    pub fn record(&self, host_id: &str, mut sample: pb::MetricsSample) {
        sample.containers.truncate(MAX_SAMPLE_CONTAINERS);
        for c in &mut sample.containers {
            for s in [
                &mut c.stack,
                &mut c.service,
                &mut c.container,
                &mut c.container_id,
                &mut c.state,
            ] {
                clip(s);
            }
        }
        if let Some(h) = &mut sample.host {
            h.disks.truncate(MAX_DISKS);
            for d in &mut h.disks {
                clip(&mut d.mount);
            }
        }
        let time = sample.time_unix_ms;
        let point = sample.host.as_ref().map(|h| pb::HostMetricsPoint {
            time_unix_ms: time,
            cpu_percent: h.cpu_percent,
            memory_used_bytes: h.memory_used_bytes,
            load1: h.load1,
        });
        let sample = Arc::new(sample);
        let mut hosts = self.lock();
        let series = match hosts.get_mut(host_id) {
            Some(series) => {
                let previous = std::mem::replace(&mut series.latest, sample);
                series.previous = Some(previous);
                series
            }
            None => hosts.entry(host_id.to_string()).or_insert(Series {
                latest: sample,
                previous: None,
                points: VecDeque::new(),
                containers: HashMap::new(),
            }),
        };
        if self.max_points == 0 {
            return;
        }
        // The agent's clock went back: what came after the new time is no longer history.
        while series.points.back().is_some_and(|p| p.time_unix_ms > time) {
            series.points.pop_back();
        }
        for c in series.containers.values_mut() {
            while c.points.back().is_some_and(|p| p.time_unix_ms > time) {
                c.points.pop_back();
            }
        }
        // At most one point per second (by the second it falls in): a sample in the same second
        // as the last point replaces it, so the newest sample is always in the history.
        let bucket = |ms: i64| ms.div_euclid(POINT_SPACING_MS);
        let same = series
            .points
            .back()
            .is_some_and(|p| bucket(p.time_unix_ms) == bucket(time));
        if let Some(point) = point {
            if same {
                series.points.pop_back();
            }
            series.points.push_back(point);
        }
        let latest = series.latest.clone();
        for c in &latest.containers {
            let entry = series
                .containers
                .entry(c.container_id.clone())
                .or_insert_with(|| ContainerSeries {
                    who: pb::ContainerHistory::default(),
                    points: VecDeque::new(),
                });
            entry.who = pb::ContainerHistory {
                container: c.container.clone(),
                container_id: c.container_id.clone(),
                stack: c.stack.clone(),
                service: c.service.clone(),
                number: c.number,
                points: Vec::new(),
            };
            if entry
                .points
                .back()
                .is_some_and(|p| bucket(p.time_unix_ms) == bucket(time))
            {
                entry.points.pop_back();
            }
            entry.points.push_back(ContainerPoint {
                time_unix_ms: time,
                cpu_percent: c.cpu_percent as f32,
                memory_bytes: c.memory_bytes,
            });
        }
        let oldest = time.saturating_sub(self.history.as_millis() as i64);
        let max = self.max_points;
        trim(&mut series.points, max, oldest, |p| p.time_unix_ms);
        series.containers.retain(|_, c| {
            trim(&mut c.points, max, oldest, |p| p.time_unix_ms);
            !c.points.is_empty()
        });
        // A host cannot grow its containers' histories past its sample's bound.
        if series.containers.len() > MAX_SAMPLE_CONTAINERS {
            let mut by_age: Vec<(i64, String)> = series
                .containers
                .iter()
                .map(|(id, c)| (c.points.back().map_or(0, |p| p.time_unix_ms), id.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = series.containers.len() - MAX_SAMPLE_CONTAINERS;
            for (_, id) in by_age.into_iter().take(excess) {
                series.containers.remove(&id);
            }
        }
    }

    /// A host's containers' histories, oldest point first, by container name.
    pub fn container_history(&self, host_id: &str) -> Vec<pb::ContainerHistory> {
        let hosts = self.lock();
        let Some(series) = hosts.get(host_id) else {
            return Vec::new();
        };
        let mut out: Vec<pb::ContainerHistory> = series
            .containers
            .values()
            .map(|c| pb::ContainerHistory {
                points: c
                    .points
                    .iter()
                    .map(|p| pb::ContainerMetricsPoint {
                        time_unix_ms: p.time_unix_ms,
                        cpu_percent: f64::from(p.cpu_percent),
                        memory_bytes: p.memory_bytes,
                    })
                    .collect(),
                ..c.who.clone()
            })
            .collect();
        out.sort_by(|a, b| a.container.cmp(&b.container));
        out
    }

    /// A host's latest sample (None: it never sent one).
    pub fn latest(&self, host_id: &str) -> Option<Latest> {
        let hosts = self.lock();
        let series = hosts.get(host_id)?;
        let (net_rx_rate, net_tx_rate) = match &series.previous {
            Some(prev) => rates(prev, &series.latest),
            None => (0.0, 0.0),
        };
        Some(Latest {
            sample: series.latest.clone(),
            net_rx_rate,
            net_tx_rate,
        })
    }

    /// Call `f` with every host's latest sample (under the lock: `f` must be quick; clone the
    /// `Arc` to keep one).
    pub fn each_latest(&self, mut f: impl FnMut(&str, &Arc<pb::MetricsSample>)) {
        for (host_id, series) in self.lock().iter() {
            f(host_id, &series.latest);
        }
    }

    /// A host's history, oldest first.
    pub fn history(&self, host_id: &str) -> Vec<pb::HostMetricsPoint> {
        self.lock()
            .get(host_id)
            .map(|s| s.points.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Drop points older than `oldest`, and the oldest past `max`.
fn trim<T>(points: &mut VecDeque<T>, max: usize, oldest: i64, time: impl Fn(&T) -> i64) {
    while points.len() > max || points.front().is_some_and(|p| time(p) < oldest) {
        points.pop_front();
    }
}

fn rates(prev: &pb::MetricsSample, latest: &pb::MetricsSample) -> (f64, f64) {
    let (Some(a), Some(b)) = (&prev.host, &latest.host) else {
        return (0.0, 0.0);
    };
    let secs = (latest.time_unix_ms - prev.time_unix_ms) as f64 / 1000.0;
    if secs <= 0.0 {
        return (0.0, 0.0);
    }
    let rate = |before: u64, after: u64| after.checked_sub(before).map_or(0.0, |d| d as f64 / secs);
    (
        rate(a.net_rx_bytes, b.net_rx_bytes),
        rate(a.net_tx_bytes, b.net_tx_bytes),
    )
}

fn clip(s: &mut String) {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: i64, cpu: f64, rx: u64, tx: u64) -> pb::MetricsSample {
        pb::MetricsSample {
            time_unix_ms: ms,
            host: Some(pb::HostMetrics {
                cpu_percent: cpu,
                net_rx_bytes: rx,
                net_tx_bytes: tx,
                ..Default::default()
            }),
            containers: vec![pb::ContainerMetrics {
                stack: "shop".into(),
                container: "x".repeat(1000),
                ..Default::default()
            }],
            collect_ms: 1,
        }
    }

    #[test]
    fn latest_and_rates_over_the_last_two_samples() {
        let m = MetricsStore::new(Duration::from_secs(3600));
        assert!(m.latest("h1").is_none());
        m.record("h1", sample(10_000, 5.0, 1_000, 500));
        let l = m.latest("h1").unwrap();
        assert_eq!((l.net_rx_rate, l.net_tx_rate), (0.0, 0.0));
        m.record("h1", sample(12_000, 7.0, 5_000, 400));
        let l = m.latest("h1").unwrap();
        assert_eq!(l.sample.time_unix_ms, 12_000);
        assert_eq!(l.net_rx_rate, 2_000.0);
        assert_eq!(l.net_tx_rate, 0.0, "a counter that went back is no rate");
        assert_eq!(l.sample.containers[0].container.len(), MAX_TEXT);
    }

    #[test]
    fn a_container_gone_keeps_its_history_until_it_ages_out() {
        let m = MetricsStore::new(Duration::from_secs(60));
        let with = |ms: i64, ids: &[&str]| pb::MetricsSample {
            time_unix_ms: ms,
            host: Some(pb::HostMetrics::default()),
            containers: ids
                .iter()
                .map(|id| pb::ContainerMetrics {
                    container_id: id.to_string(),
                    container: format!("shop-{id}"),
                    memory_bytes: 7,
                    ..Default::default()
                })
                .collect(),
            collect_ms: 1,
        };
        m.record("h1", with(0, &["a", "b"]));
        m.record("h1", with(10_000, &["a"]));
        let h = m.container_history("h1");
        assert_eq!(h.len(), 2, "b is gone but its point stays");
        assert_eq!(h[0].points.len(), 2);
        assert_eq!(h[1].points.len(), 1);
        m.record("h1", with(70_001, &["a"]));
        let h = m.container_history("h1");
        assert_eq!(h.len(), 1, "b aged out");
        assert_eq!(h[0].container, "shop-a");
        assert!(h[0].points.iter().all(|p| p.memory_bytes == 7));
    }

    #[test]
    fn history_is_bounded_by_duration_and_by_points() {
        let m = MetricsStore::new(Duration::from_secs(60));
        // Ten samples a second for five minutes: one point a second, a minute kept.
        for i in 0..3000 {
            m.record("h1", sample(1_000_000 + i * 100, i as f64, 0, 0));
        }
        let h = m.history("h1");
        assert!(h.len() <= 60, "{}", h.len());
        assert!(h.len() >= 59, "{}", h.len());
        let last = h.last().unwrap().time_unix_ms;
        assert!(h.first().unwrap().time_unix_ms >= last - 60_000);
        assert!(
            h.windows(2)
                .all(|w| w[1].time_unix_ms - w[0].time_unix_ms >= 1000)
        );
        // The clock goes back: points after the new time go.
        m.record("h1", sample(1_000_000 + 2000 * 100, 0.0, 0, 0));
        assert!(m.history("h1").iter().all(|p| p.time_unix_ms <= 1_200_000));
        // A sample just under a second after the last point is not lost: the newest sample is
        // always the history's last point.
        let m2 = MetricsStore::new(Duration::from_secs(60));
        for t in [0, 999, 1998, 2997] {
            m2.record("h1", sample(5_000_000 + t, t as f64, 0, 0));
        }
        assert_eq!(
            m2.history("h1").last().map(|p| p.time_unix_ms),
            Some(5_002_997)
        );
        let c2 = m2.container_history("h1");
        assert_eq!(c2[0].points.last().map(|p| p.time_unix_ms), Some(5_002_997));
        // Containers have the same history, by container.
        let c = m.container_history("h1");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].points.len(), m.history("h1").len());
        assert_eq!(c[0].stack, "shop");
        let none = MetricsStore::new(Duration::ZERO);
        none.record("h1", sample(1, 1.0, 0, 0));
        assert!(none.history("h1").is_empty());
        assert!(none.latest("h1").is_some());
    }
}
