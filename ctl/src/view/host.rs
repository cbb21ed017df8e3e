//! Hosts (`host ls`, `host show`, `host label`, `host revoke`) and the join tokens that enroll
//! them.

use std::collections::{BTreeMap, HashMap};

use noco_proto::v1 as pb;
use serde::Serialize;

use super::status::StackReportView;
use super::text;
use super::top::HostTopView;
use crate::output::{Listed, ago_ms, human_bytes, percent, rfc3339_ms, short_revision, truncate};

/// An enrolled host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostView {
    pub name: String,
    pub id: String,
    pub labels: BTreeMap<String, String>,
    #[serde(serialize_with = "text")]
    pub status: pb::Presence,
    /// RFC 3339, `-` for never.
    pub last_seen: String,
    pub last_seen_unix_ms: i64,
    /// RFC 3339, `-` when not connected.
    pub connected_since: String,
    pub connected_since_unix_ms: i64,
    /// RFC 3339.
    pub enrolled: String,
    pub enrolled_unix_ms: i64,
    /// RFC 3339.
    pub cert_not_after: String,
    pub cert_not_after_unix_ms: i64,
    pub facts: FactsView,
}

/// What the host's agent reported about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FactsView {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub docker_version: String,
    pub agent_version: String,
}

impl From<&pb::Host> for HostView {
    fn from(h: &pb::Host) -> Self {
        let pb::Host {
            id,
            name,
            labels,
            facts,
            status: _,
            last_seen_unix_ms,
            enrolled_unix_ms,
            cert_not_after_unix_ms,
            connected_since_unix_ms,
        } = h;
        HostView {
            name: name.clone(),
            id: id.clone(),
            labels: sorted(labels),
            status: h.status(),
            last_seen: rfc3339_ms(*last_seen_unix_ms),
            last_seen_unix_ms: *last_seen_unix_ms,
            connected_since: rfc3339_ms(*connected_since_unix_ms),
            connected_since_unix_ms: *connected_since_unix_ms,
            enrolled: rfc3339_ms(*enrolled_unix_ms),
            enrolled_unix_ms: *enrolled_unix_ms,
            cert_not_after: rfc3339_ms(*cert_not_after_unix_ms),
            cert_not_after_unix_ms: *cert_not_after_unix_ms,
            facts: facts.as_ref().map(FactsView::from).unwrap_or_default(),
        }
    }
}

impl From<&pb::HostFacts> for FactsView {
    fn from(f: &pb::HostFacts) -> Self {
        let pb::HostFacts {
            hostname,
            os,
            kernel,
            arch,
            docker_version,
            agent_version,
        } = f;
        FactsView {
            hostname: hostname.clone(),
            os: os.clone(),
            kernel: kernel.clone(),
            arch: arch.clone(),
            docker_version: docker_version.clone(),
            agent_version: agent_version.clone(),
        }
    }
}

impl HostView {
    /// `env=prod,role=web`, `-` for none.
    pub fn labels_text(&self) -> String {
        labels_text(&self.labels)
    }
}

impl Listed for HostView {
    const HEADER: &'static [&'static str] = &[
        "NAME",
        "ID",
        "LABELS",
        "STATUS",
        "LAST-SEEN",
        "AGENT",
        "DOCKER",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.id.clone(),
            self.labels_text(),
            self.status.to_string(),
            if self.status == pb::Presence::Online {
                "now".into()
            } else {
                ago_ms(self.last_seen_unix_ms)
            },
            self.facts.agent_version.clone(),
            self.facts.docker_version.clone(),
        ]
    }
}

/// One host in full (`host show`): the host, its stacks as it reports them, its latest
/// metrics and (with `--history`) their history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostDetailView {
    pub host: HostView,
    pub stacks: Vec<StackReportView>,
    /// None when the server sent no metrics for the host.
    pub latest: Option<HostTopView>,
    /// Oldest first; empty without `--history`.
    pub history: Vec<MetricsPointView>,
    /// Each container's history over the same span (with `--history`).
    pub container_history: Vec<ContainerHistoryView>,
}

/// One container's metrics history (`host show --history`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerHistoryView {
    pub container: String,
    pub container_id: String,
    pub stack: String,
    pub service: String,
    pub number: u32,
    /// Oldest first.
    pub points: Vec<ContainerPointView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerPointView {
    /// RFC 3339.
    pub time: String,
    pub time_unix_ms: i64,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

impl From<&pb::ContainerHistory> for ContainerHistoryView {
    fn from(h: &pb::ContainerHistory) -> Self {
        ContainerHistoryView {
            container: h.container.clone(),
            container_id: h.container_id.clone(),
            stack: h.stack.clone(),
            service: h.service.clone(),
            number: h.number,
            points: h
                .points
                .iter()
                .map(|p| ContainerPointView {
                    time: rfc3339_ms(p.time_unix_ms),
                    time_unix_ms: p.time_unix_ms,
                    cpu_percent: p.cpu_percent,
                    memory_bytes: p.memory_bytes,
                })
                .collect(),
        }
    }
}

impl Listed for ContainerHistoryView {
    const HEADER: &'static [&'static str] = &[
        "CONTAINER",
        "POINTS",
        "SINCE",
        "CPU% LAST",
        "CPU% PEAK",
        "MEM LAST",
        "MEM PEAK",
    ];

    fn cells(&self) -> Vec<String> {
        let last = self.points.last();
        let peak_cpu = self
            .points
            .iter()
            .map(|p| p.cpu_percent)
            .fold(0.0, f64::max);
        let peak_mem = self
            .points
            .iter()
            .map(|p| p.memory_bytes)
            .max()
            .unwrap_or(0);
        vec![
            self.container.clone(),
            self.points.len().to_string(),
            self.points.first().map_or("-".into(), |p| p.time.clone()),
            last.map_or("-".into(), |p| percent(p.cpu_percent)),
            percent(peak_cpu),
            last.map_or("-".into(), |p| human_bytes(p.memory_bytes)),
            human_bytes(peak_mem),
        ]
    }
}

impl From<&pb::GetHostResponse> for HostDetailView {
    fn from(r: &pb::GetHostResponse) -> Self {
        let pb::GetHostResponse {
            host,
            stacks,
            latest,
            history,
            container_history,
        } = r;
        HostDetailView {
            host: HostView::from(&host.clone().unwrap_or_default()),
            stacks: stacks.iter().map(StackReportView::from).collect(),
            latest: latest.as_ref().map(HostTopView::from),
            history: history.iter().map(MetricsPointView::from).collect(),
            container_history: container_history
                .iter()
                .map(ContainerHistoryView::from)
                .collect(),
        }
    }
}

/// A point of a host's metrics history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsPointView {
    /// RFC 3339.
    pub time: String,
    pub time_unix_ms: i64,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub load1: f64,
}

impl From<&pb::HostMetricsPoint> for MetricsPointView {
    fn from(p: &pb::HostMetricsPoint) -> Self {
        let pb::HostMetricsPoint {
            time_unix_ms,
            cpu_percent,
            memory_used_bytes,
            load1,
        } = p;
        MetricsPointView {
            time: rfc3339_ms(*time_unix_ms),
            time_unix_ms: *time_unix_ms,
            cpu_percent: *cpu_percent,
            memory_used_bytes: *memory_used_bytes,
            load1: *load1,
        }
    }
}

impl Listed for MetricsPointView {
    const HEADER: &'static [&'static str] = &["TIME", "CPU%", "MEM", "LOAD1"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.time.clone(),
            percent(self.cpu_percent),
            human_bytes(self.memory_used_bytes),
            format!("{:.2}", self.load1),
        ]
    }
}

/// A stack on a host (`host show`): as the host reports it.
impl Listed for StackReportView {
    const HEADER: &'static [&'static str] = &["STACK", "REVISION", "STATE", "SERVICES", "ERROR"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            short_revision(&self.revision),
            self.state.to_string(),
            self.services_text(),
            if self.error.is_empty() {
                "-".to_string()
            } else {
                truncate(&self.error, 80)
            },
        ]
    }
}

/// A single-use join token (`token create`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JoinTokenView {
    pub token: String,
    pub id: String,
    /// RFC 3339.
    pub expires: String,
    pub expires_unix_ms: i64,
}

impl From<&pb::CreateTokenResponse> for JoinTokenView {
    fn from(r: &pb::CreateTokenResponse) -> Self {
        let pb::CreateTokenResponse {
            token,
            token_id,
            expires_unix_ms,
        } = r;
        JoinTokenView {
            token: token.clone(),
            id: token_id.clone(),
            expires: rfc3339_ms(*expires_unix_ms),
            expires_unix_ms: *expires_unix_ms,
        }
    }
}

/// Labels in key order.
pub fn sorted(labels: &HashMap<String, String>) -> BTreeMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `env=prod,role=web`, `-` for none.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    text.join(",")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn host() -> pb::Host {
        pb::Host {
            id: "h1".into(),
            name: "web-1".into(),
            labels: [("role", "web"), ("env", "prod")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            facts: Some(pb::HostFacts {
                hostname: "web-1.local".into(),
                os: "linux".into(),
                kernel: "6.1".into(),
                arch: "x86_64".into(),
                docker_version: "24.0.7".into(),
                agent_version: "0.1.0".into(),
            }),
            status: pb::Presence::Online.into(),
            last_seen_unix_ms: 1_700_000_000_000,
            enrolled_unix_ms: 1_600_000_000_000,
            cert_not_after_unix_ms: 1_700_086_400_000,
            connected_since_unix_ms: 1_699_999_000_000,
        }
    }

    #[test]
    fn a_host_shows_as_json_with_its_presence_as_text_and_sorted_labels() {
        assert_eq!(
            serde_json::to_value(HostView::from(&host())).unwrap(),
            json!({
                "name": "web-1", "id": "h1", "labels": {"env": "prod", "role": "web"},
                "status": "online",
                "last_seen": "2023-11-14T22:13:20Z", "last_seen_unix_ms": 1_700_000_000_000_i64,
                "connected_since": "2023-11-14T21:56:40Z",
                "connected_since_unix_ms": 1_699_999_000_000_i64,
                "enrolled": "2020-09-13T12:26:40Z",
                "enrolled_unix_ms": 1_600_000_000_000_i64,
                "cert_not_after": "2023-11-15T22:13:20Z",
                "cert_not_after_unix_ms": 1_700_086_400_000_i64,
                "facts": {
                    "hostname": "web-1.local", "os": "linux", "kernel": "6.1", "arch": "x86_64",
                    "docker_version": "24.0.7", "agent_version": "0.1.0",
                },
            })
        );
    }

    #[test]
    fn a_host_row_shows_its_labels_presence_and_versions() {
        let online = HostView::from(&host());
        assert_eq!(
            online.cells(),
            [
                "web-1",
                "h1",
                "env=prod,role=web",
                "online",
                "now",
                "0.1.0",
                "24.0.7"
            ]
        );
        let mut h = host();
        h.status = pb::Presence::Revoked.into();
        h.labels.clear();
        h.facts = None;
        let revoked = HostView::from(&h);
        assert_eq!(serde_json::to_value(&revoked).unwrap()["status"], "revoked");
        let cells = revoked.cells();
        assert_eq!((cells[2].as_str(), cells[3].as_str()), ("-", "revoked"));
        assert!(cells[4].ends_with(" ago"), "{cells:?}");
        assert_eq!((cells[5].as_str(), cells[6].as_str()), ("", ""));
    }

    #[test]
    fn host_show_has_the_host_its_stacks_latest_metrics_and_history() {
        let r = pb::GetHostResponse {
            host: Some(host()),
            stacks: vec![pb::StackReport {
                name: "shop".into(),
                revision: format!("sha256:{}", "1".repeat(64)),
                state: pb::ApplyState::Converged.into(),
                error: String::new(),
                services: vec![pb::ServiceReport {
                    name: "api".into(),
                    running: 2,
                    desired: 2,
                    health: pb::Health::Healthy.into(),
                }],
                applied_unix_ms: 1_700_000_000_000,
            }],
            latest: Some(crate::view::top::tests::host_top()),
            history: vec![pb::HostMetricsPoint {
                time_unix_ms: 1_700_000_000_000,
                cpu_percent: 3.26,
                memory_used_bytes: 1536 * 1024 * 1024,
                load1: 0.5,
            }],
            container_history: vec![pb::ContainerHistory {
                container: "shop-web-1".into(),
                points: vec![pb::ContainerMetricsPoint {
                    time_unix_ms: 1_700_000_000_000,
                    cpu_percent: 12.5,
                    memory_bytes: 64 * 1024 * 1024,
                }],
                ..Default::default()
            }],
        };
        let v = HostDetailView::from(&r);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["host"]["name"], "web-1");
        assert_eq!(j["stacks"][0]["state"], "converged");
        assert_eq!(j["latest"]["cpus"], 4);
        assert_eq!(
            j["history"],
            json!([{
                "time": "2023-11-14T22:13:20Z", "time_unix_ms": 1_700_000_000_000_i64,
                "cpu_percent": 3.26, "memory_used_bytes": 1_610_612_736_u64, "load1": 0.5,
            }])
        );
        assert_eq!(
            v.stacks[0].cells(),
            ["shop", "111111111111", "converged", "1/1", "-"]
        );
        assert_eq!(
            v.history[0].cells(),
            ["2023-11-14T22:13:20Z", "3.3%", "1.5 GiB", "0.50"]
        );
        assert_eq!(j["container_history"][0]["container"], "shop-web-1");
        assert_eq!(
            j["container_history"][0]["points"][0]["memory_bytes"],
            64 * 1024 * 1024
        );
        assert_eq!(v.container_history[0].cells()[0], "shop-web-1");
        // A host the server sends without metrics.
        let bare = HostDetailView::from(&pb::GetHostResponse {
            host: Some(host()),
            ..Default::default()
        });
        assert_eq!(serde_json::to_value(&bare).unwrap()["latest"], json!(null));
    }

    #[test]
    fn a_join_token_shows_its_id_and_expiry() {
        let t = JoinTokenView::from(&pb::CreateTokenResponse {
            token: "noco1:ab:t1.secret".into(),
            token_id: "t1".into(),
            expires_unix_ms: 1_700_000_000_000,
        });
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            json!({"token": "noco1:ab:t1.secret", "id": "t1", "expires": "2023-11-14T22:13:20Z", "expires_unix_ms": 1_700_000_000_000_i64})
        );
    }
}
