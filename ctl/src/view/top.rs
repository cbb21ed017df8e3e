//! Metrics (`top`, `host show`): each host's latest sample with its network rates, and the
//! containers of a stack. Sizes are bytes in the JSON; the tables show them in binary units.

use noco_proto::v1 as pb;
use serde::Serialize;

use super::text;
use crate::output::{Listed, human_bytes, human_rate, percent, rfc3339_ms};

/// A host's latest metrics (a row of `top`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostTopView {
    pub host: String,
    pub host_id: String,
    #[serde(serialize_with = "text")]
    pub status: pb::Presence,
    /// When the sample was taken: RFC 3339, `-` when the host never sent one.
    pub sampled: String,
    pub sampled_unix_ms: i64,
    /// What the agent measured, its keys at the host's level in the JSON (`cpus`,
    /// `memory_total_bytes` …); absent, and None here, when the host never sent metrics.
    #[serde(flatten)]
    pub metrics: Option<HostMetricsView>,
    /// Bytes per second over the last two samples.
    pub net_rx_rate: f64,
    pub net_tx_rate: f64,
    pub containers: Vec<ContainerTopView>,
}

/// What a host's agent measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostMetricsView {
    pub cpus: u32,
    /// Of all CPUs together, 0–100.
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub disks: Vec<DiskView>,
    /// Counters since boot, every interface but loopback.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub containers_running: u32,
    pub containers_total: u32,
    pub uptime_secs: u64,
}

/// A mounted filesystem.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiskView {
    pub mount: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// A container's latest metrics (a row of `top --stack`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerTopView {
    /// The host it runs on.
    pub host: String,
    pub stack: String,
    pub service: String,
    pub number: u32,
    pub container: String,
    pub container_id: String,
    /// `running`, `exited`, `restarting`, …
    pub state: String,
    #[serde(serialize_with = "text")]
    pub health: pb::Health,
    pub restarts: u32,
    /// Of one CPU: 100 = one core busy.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    /// 0: no limit.
    pub memory_limit_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub pids: u32,
}

impl From<&pb::HostTop> for HostTopView {
    fn from(h: &pb::HostTop) -> Self {
        let pb::HostTop {
            host_id,
            host,
            status: _,
            metrics,
            sampled_unix_ms,
            containers,
            net_rx_rate,
            net_tx_rate,
        } = h;
        HostTopView {
            host: host.clone(),
            host_id: host_id.clone(),
            status: h.status(),
            sampled: rfc3339_ms(*sampled_unix_ms),
            sampled_unix_ms: *sampled_unix_ms,
            metrics: metrics.as_ref().map(HostMetricsView::from),
            net_rx_rate: *net_rx_rate,
            net_tx_rate: *net_tx_rate,
            containers: containers
                .iter()
                .map(|c| ContainerTopView::new(host, c))
                .collect(),
        }
    }
}

impl From<&pb::HostMetrics> for HostMetricsView {
    fn from(m: &pb::HostMetrics) -> Self {
        let pb::HostMetrics {
            cpus,
            cpu_percent,
            memory_used_bytes,
            memory_total_bytes,
            load1,
            load5,
            load15,
            disks,
            net_rx_bytes,
            net_tx_bytes,
            containers_running,
            containers_total,
            uptime_secs,
        } = m;
        HostMetricsView {
            cpus: *cpus,
            cpu_percent: *cpu_percent,
            memory_used_bytes: *memory_used_bytes,
            memory_total_bytes: *memory_total_bytes,
            load1: *load1,
            load5: *load5,
            load15: *load15,
            disks: disks
                .iter()
                .map(|d| {
                    let pb::DiskUsage {
                        mount,
                        used_bytes,
                        total_bytes,
                    } = d;
                    DiskView {
                        mount: mount.clone(),
                        used_bytes: *used_bytes,
                        total_bytes: *total_bytes,
                    }
                })
                .collect(),
            net_rx_bytes: *net_rx_bytes,
            net_tx_bytes: *net_tx_bytes,
            containers_running: *containers_running,
            containers_total: *containers_total,
            uptime_secs: *uptime_secs,
        }
    }
}

impl ContainerTopView {
    pub fn new(host: &str, c: &pb::ContainerMetrics) -> Self {
        let pb::ContainerMetrics {
            stack,
            service,
            number,
            container,
            container_id,
            state,
            health: _,
            restarts,
            cpu_percent,
            memory_bytes,
            memory_limit_bytes,
            net_rx_bytes,
            net_tx_bytes,
            block_read_bytes,
            block_write_bytes,
            pids,
        } = c;
        ContainerTopView {
            host: host.to_string(),
            stack: stack.clone(),
            service: service.clone(),
            number: *number,
            container: container.clone(),
            container_id: container_id.clone(),
            state: state.clone(),
            health: c.health(),
            restarts: *restarts,
            cpu_percent: *cpu_percent,
            memory_bytes: *memory_bytes,
            memory_limit_bytes: *memory_limit_bytes,
            net_rx_bytes: *net_rx_bytes,
            net_tx_bytes: *net_tx_bytes,
            block_read_bytes: *block_read_bytes,
            block_write_bytes: *block_write_bytes,
            pids: *pids,
        }
    }

    /// `web-1` (the service and its number), else the container's name.
    pub fn name(&self) -> String {
        match (self.service.as_str(), self.number) {
            ("", _) => self.container.clone(),
            (service, 0) => service.to_string(),
            (service, n) => format!("{service}-{n}"),
        }
    }
}

impl HostMetricsView {
    /// The fullest mount: `73% /var`.
    pub fn fullest_disk(&self) -> Option<String> {
        self.disks
            .iter()
            .filter(|d| d.total_bytes > 0)
            .map(|d| (d.used_bytes as f64 * 100.0 / d.total_bytes as f64, d))
            .max_by(|(a, _), (b, _)| a.total_cmp(b))
            .map(|(p, d)| format!("{p:.0}% {}", d.mount))
    }

    /// `1.2 GiB / 7.7 GiB`.
    pub fn memory_text(&self) -> String {
        format!(
            "{} / {}",
            human_bytes(self.memory_used_bytes),
            human_bytes(self.memory_total_bytes)
        )
    }

    /// `0.52 0.48 0.40`.
    pub fn load_text(&self) -> String {
        format!("{:.2} {:.2} {:.2}", self.load1, self.load5, self.load15)
    }
}

impl Listed for HostTopView {
    const HEADER: &'static [&'static str] = &[
        "HOST",
        "STATUS",
        "CPU%",
        "MEM",
        "LOAD",
        "DISK",
        "NET-RX",
        "NET-TX",
        "CONTAINERS",
    ];

    fn cells(&self) -> Vec<String> {
        let Some(m) = &self.metrics else {
            let mut cells = vec![self.host.clone(), self.status.to_string()];
            cells.extend(std::iter::repeat_n("-".to_string(), Self::HEADER.len() - 2));
            return cells;
        };
        vec![
            self.host.clone(),
            self.status.to_string(),
            percent(m.cpu_percent),
            m.memory_text(),
            m.load_text(),
            m.fullest_disk().unwrap_or_else(|| "-".to_string()),
            human_rate(self.net_rx_rate),
            human_rate(self.net_tx_rate),
            format!("{}/{}", m.containers_running, m.containers_total),
        ]
    }
}

impl Listed for DiskView {
    const HEADER: &'static [&'static str] = &["MOUNT", "USED", "SIZE", "USE%"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.mount.clone(),
            human_bytes(self.used_bytes),
            human_bytes(self.total_bytes),
            if self.total_bytes == 0 {
                "-".to_string()
            } else {
                format!(
                    "{:.0}%",
                    self.used_bytes as f64 * 100.0 / self.total_bytes as f64
                )
            },
        ]
    }
}

impl Listed for ContainerTopView {
    const HEADER: &'static [&'static str] = &[
        "HOST",
        "CONTAINER",
        "STATE",
        "HEALTH",
        "CPU%",
        "MEM / LIMIT",
        "NET RX / TX",
        "BLOCK R / W",
        "RESTARTS",
        "PIDS",
    ];

    fn cells(&self) -> Vec<String> {
        let memory = if self.memory_limit_bytes == 0 {
            format!("{} / -", human_bytes(self.memory_bytes))
        } else {
            format!(
                "{} / {}",
                human_bytes(self.memory_bytes),
                human_bytes(self.memory_limit_bytes)
            )
        };
        vec![
            self.host.clone(),
            self.name(),
            self.state.clone(),
            self.health.to_string(),
            percent(self.cpu_percent),
            memory,
            format!(
                "{} / {}",
                human_bytes(self.net_rx_bytes),
                human_bytes(self.net_tx_bytes)
            ),
            format!(
                "{} / {}",
                human_bytes(self.block_read_bytes),
                human_bytes(self.block_write_bytes)
            ),
            self.restarts.to_string(),
            self.pids.to_string(),
        ]
    }
}

#[cfg(test)]
pub mod tests {
    use serde_json::json;

    use super::*;

    pub fn host_top() -> pb::HostTop {
        pb::HostTop {
            host_id: "h1".into(),
            host: "web-1".into(),
            status: pb::Presence::Online.into(),
            metrics: Some(pb::HostMetrics {
                cpus: 4,
                cpu_percent: 12.34,
                memory_used_bytes: 1_288_490_189,
                memory_total_bytes: 8_270_000_000,
                load1: 0.52,
                load5: 0.48,
                load15: 0.4,
                disks: vec![
                    pb::DiskUsage {
                        mount: "/".into(),
                        used_bytes: 40,
                        total_bytes: 100,
                    },
                    pb::DiskUsage {
                        mount: "/var".into(),
                        used_bytes: 73,
                        total_bytes: 100,
                    },
                    pb::DiskUsage {
                        mount: "/empty".into(),
                        used_bytes: 0,
                        total_bytes: 0,
                    },
                ],
                net_rx_bytes: 10_000,
                net_tx_bytes: 20_000,
                containers_running: 5,
                containers_total: 7,
                uptime_secs: 3600,
            }),
            sampled_unix_ms: 1_700_000_000_000,
            containers: vec![pb::ContainerMetrics {
                stack: "shop".into(),
                service: "api".into(),
                number: 2,
                container: "shop-api-2".into(),
                container_id: "c0ffee".into(),
                state: "running".into(),
                health: pb::Health::Healthy.into(),
                restarts: 1,
                cpu_percent: 150.0,
                memory_bytes: 126_353_408,
                memory_limit_bytes: 536_870_912,
                net_rx_bytes: 1536,
                net_tx_bytes: 512,
                block_read_bytes: 0,
                block_write_bytes: 4096,
                pids: 12,
            }],
            net_rx_rate: 1536.0,
            net_tx_rate: 100.0,
        }
    }

    #[test]
    fn a_host_row_shows_sizes_in_binary_units_and_the_fullest_disk() {
        let v = HostTopView::from(&host_top());
        assert_eq!(
            v.cells(),
            [
                "web-1",
                "online",
                "12.3%",
                "1.2 GiB / 7.7 GiB",
                "0.52 0.48 0.40",
                "73% /var",
                "1.5 KiB/s",
                "100 B/s",
                "5/7"
            ]
        );
        let mut never = host_top();
        never.metrics = None;
        never.status = pb::Presence::Offline.into();
        let cells = HostTopView::from(&never).cells();
        assert_eq!(cells.len(), HostTopView::HEADER.len());
        assert_eq!(&cells[..3], ["web-1", "offline", "-"]);
    }

    #[test]
    fn a_container_row_shows_its_service_number_and_usage() {
        let v = HostTopView::from(&host_top());
        assert_eq!(
            v.containers[0].cells(),
            [
                "web-1",
                "api-2",
                "running",
                "healthy",
                "150.0%",
                "120 MiB / 512 MiB",
                "1.5 KiB / 512 B",
                "0 B / 4.0 KiB",
                "1",
                "12"
            ]
        );
        let disks = &HostTopView::from(&host_top()).metrics.unwrap().disks;
        assert_eq!(disks[1].cells(), ["/var", "73 B", "100 B", "73%"]);
        assert_eq!(disks[2].cells(), ["/empty", "0 B", "0 B", "-"]);
        let mut c = host_top().containers[0].clone();
        c.memory_limit_bytes = 0;
        assert_eq!(ContainerTopView::new("web-1", &c).cells()[5], "120 MiB / -");
    }

    #[test]
    fn top_json_has_bytes_and_enumerations_as_text() {
        let j = serde_json::to_value(HostTopView::from(&host_top())).unwrap();
        assert_eq!(j["status"], "online");
        assert_eq!(j["sampled"], "2023-11-14T22:13:20Z");
        assert_eq!(j["sampled_unix_ms"], 1_700_000_000_000_i64);
        assert_eq!(j["memory_used_bytes"], 1_288_490_189_u64);
        assert_eq!(j["cpus"], 4);
        assert_eq!(
            j["disks"][1],
            json!({"mount": "/var", "used_bytes": 73, "total_bytes": 100})
        );
        assert_eq!(j["containers"][0]["health"], "healthy");
        assert_eq!(j["containers"][0]["host"], "web-1");
        assert_eq!(j["net_rx_rate"], 1536.0);
        let mut never = host_top();
        never.metrics = None;
        let j = serde_json::to_value(HostTopView::from(&never)).unwrap();
        assert_eq!((&j["cpus"], &j["host"]), (&json!(null), &json!("web-1")));
        assert!(j.get("memory_total_bytes").is_none(), "{j}");
    }
}
