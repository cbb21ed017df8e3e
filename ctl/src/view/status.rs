//! Hosts × stacks (`status`): per host, what the server assigns it and what its agent
//! reports. The table's rows ([`crate::status::Row`]) are read from these views.

use noco_proto::health;
use noco_proto::v1 as pb;
use serde::Serialize;

use super::text;
use crate::output::rfc3339_ms;

/// One host: its presence, generations, and its stacks assigned and reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStatusView {
    pub host: String,
    pub host_id: String,
    #[serde(serialize_with = "text")]
    pub status: pb::Presence,
    /// The generation the server last sent, and the one the agent reports applying.
    pub desired_generation: u64,
    pub applied_generation: u64,
    /// The host's accepted desired state has expired.
    pub stale: bool,
    /// Why the host refused a desired state (empty: it did not).
    pub refused: String,
    pub assigned: Vec<AssignedView>,
    pub reported: Vec<StackReportView>,
    pub reported_unix_ms: i64,
    /// RFC 3339.
    pub reported_at: String,
}

/// A stack revision the server assigns to the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssignedView {
    pub name: String,
    pub revision: String,
}

/// A stack as the host's agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackReportView {
    pub name: String,
    pub revision: String,
    #[serde(serialize_with = "text")]
    pub state: pb::ApplyState,
    pub error: String,
    pub applied_unix_ms: i64,
    /// RFC 3339.
    pub applied: String,
    pub services: Vec<ServiceView>,
    /// Converged with every service ready ([`health::stack_healthy`]); not in the JSON,
    /// which has what it is read from.
    #[serde(skip)]
    pub healthy: bool,
}

/// A service of a reported stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub running: u32,
    pub desired: u32,
    #[serde(serialize_with = "text")]
    pub health: pb::Health,
    /// Every container running and healthy, or without a healthcheck
    /// ([`health::service_ready`]); not in the JSON, which has what it is read from.
    #[serde(skip)]
    pub ready: bool,
}

impl From<&pb::HostStatus> for HostStatusView {
    fn from(h: &pb::HostStatus) -> Self {
        let pb::HostStatus {
            host,
            host_id,
            status: _,
            desired_generation,
            applied_generation,
            stale,
            refused,
            assigned,
            reported,
            reported_unix_ms,
        } = h;
        HostStatusView {
            host: host.clone(),
            host_id: host_id.clone(),
            status: h.status(),
            desired_generation: *desired_generation,
            applied_generation: *applied_generation,
            stale: *stale,
            refused: refused.clone(),
            assigned: assigned.iter().map(AssignedView::from).collect(),
            reported: reported.iter().map(StackReportView::from).collect(),
            reported_unix_ms: *reported_unix_ms,
            reported_at: rfc3339_ms(*reported_unix_ms),
        }
    }
}

impl From<&pb::AssignedStack> for AssignedView {
    fn from(a: &pb::AssignedStack) -> Self {
        let pb::AssignedStack { name, revision } = a;
        AssignedView {
            name: name.clone(),
            revision: revision.clone(),
        }
    }
}

impl From<&pb::StackReport> for StackReportView {
    fn from(r: &pb::StackReport) -> Self {
        let pb::StackReport {
            name,
            revision,
            state: _,
            error,
            services,
            applied_unix_ms,
        } = r;
        StackReportView {
            name: name.clone(),
            revision: revision.clone(),
            state: r.state(),
            error: error.clone(),
            applied_unix_ms: *applied_unix_ms,
            applied: rfc3339_ms(*applied_unix_ms),
            services: services.iter().map(ServiceView::from).collect(),
            healthy: health::stack_healthy(r),
        }
    }
}

impl From<&pb::ServiceReport> for ServiceView {
    fn from(s: &pb::ServiceReport) -> Self {
        let pb::ServiceReport {
            name,
            running,
            desired,
            health: _,
        } = s;
        ServiceView {
            name: name.clone(),
            running: *running,
            desired: *desired,
            health: s.health(),
            ready: health::service_ready(s),
        }
    }
}

impl StackReportView {
    /// `ready/total` services.
    pub fn services_text(&self) -> String {
        let ready = self.services.iter().filter(|s| s.ready).count();
        format!("{ready}/{}", self.services.len())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const R1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn response() -> pb::StatusResponse {
        pb::StatusResponse {
            hosts: vec![pb::HostStatus {
                host: "web-1".into(),
                host_id: "h1".into(),
                status: pb::Presence::Online.into(),
                desired_generation: 4,
                applied_generation: 4,
                stale: false,
                refused: String::new(),
                assigned: vec![pb::AssignedStack {
                    name: "shop".into(),
                    revision: R1.into(),
                }],
                reported: vec![pb::StackReport {
                    name: "shop".into(),
                    revision: R1.into(),
                    state: pb::ApplyState::Converged.into(),
                    error: String::new(),
                    services: vec![
                        pb::ServiceReport {
                            name: "web".into(),
                            running: 2,
                            desired: 2,
                            health: pb::Health::Healthy.into(),
                        },
                        pb::ServiceReport {
                            name: "worker".into(),
                            running: 1,
                            desired: 1,
                            health: pb::Health::None.into(),
                        },
                    ],
                    applied_unix_ms: 1_700_000_000_000,
                }],
                reported_unix_ms: 1_700_000_001_000,
            }],
        }
    }

    #[test]
    fn a_converged_stack_shows_its_state_and_health_as_text() {
        let hosts: Vec<HostStatusView> = response().hosts.iter().map(Into::into).collect();
        assert_eq!(
            serde_json::to_value(&hosts).unwrap(),
            json!([{
                "host": "web-1", "host_id": "h1", "status": "online",
                "desired_generation": 4, "applied_generation": 4, "stale": false, "refused": "",
                "assigned": [{"name": "shop", "revision": R1}],
                "reported": [{
                    "name": "shop", "revision": R1, "state": "converged", "error": "",
                    "applied_unix_ms": 1_700_000_000_000_i64, "applied": "2023-11-14T22:13:20Z",
                    "services": [
                        {"name": "web", "running": 2, "desired": 2, "health": "healthy"},
                        {"name": "worker", "running": 1, "desired": 1, "health": "none"},
                    ],
                }],
                "reported_unix_ms": 1_700_000_001_000_i64, "reported_at": "2023-11-14T22:13:21Z",
            }])
        );
        assert!(hosts[0].reported[0].healthy);
        assert_eq!(hosts[0].reported[0].services_text(), "2/2");
    }

    #[test]
    fn readiness_comes_from_the_shared_predicates() {
        let mut r = response().hosts[0].reported[0].clone();
        r.services[0].running = 1;
        r.services[1].health = pb::Health::Unspecified.into();
        let v = StackReportView::from(&r);
        assert!(!v.healthy);
        assert_eq!(v.services_text(), "0/2");
        assert_eq!(
            serde_json::to_value(&v).unwrap()["services"][1]["health"],
            "unspecified"
        );
        r.state = pb::ApplyState::Failed.into();
        assert_eq!(
            serde_json::to_value(StackReportView::from(&r)).unwrap()["state"],
            "failed"
        );
    }
}
