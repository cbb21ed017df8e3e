//! Rollouts (`rollout start|status|pause|resume|abort|undo|history`): the rollout, its hosts,
//! its events and its settings.

use noco_proto::v1 as pb;
use serde::Serialize;

use super::text;
use crate::output::{Listed, or_dash, rfc3339_ms, short_revision, truncate};

/// How long the DETAIL and REASON cells may be.
pub const DETAIL_WIDTH: usize = 80;
/// How long the EVENT cell may be.
pub const EVENT_WIDTH: usize = 120;

/// A rollout. As a row ([`Listed`]) it is a line of the stack's rollout history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutView {
    pub id: String,
    pub stack: String,
    pub from_revision: String,
    pub to_revision: String,
    #[serde(serialize_with = "text")]
    pub phase: pb::RolloutPhase,
    /// Why it failed, rolled back or stopped.
    pub reason: String,
    /// The step in flight (1-based) and how many there are.
    pub step: u32,
    pub steps: u32,
    pub hosts: Vec<RolloutHostView>,
    pub events: Vec<RolloutEventView>,
    pub started_unix_ms: i64,
    /// RFC 3339.
    pub started: String,
    pub config: Option<RolloutConfigView>,
    /// Said at start (offline hosts, hosts held elsewhere).
    pub warnings: Vec<String>,
}

/// A host of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutHostView {
    pub host: String,
    #[serde(serialize_with = "text")]
    pub phase: pb::RolloutHostPhase,
    /// The revision the host is pinned to now.
    pub target_revision: String,
    pub detail: String,
    /// The 1-based step the host belongs to.
    pub step: u32,
    /// With backup_first: the backups this host made before its step.
    pub backup_ids: Vec<String>,
    /// Its step is the canary step; not in the JSON, which has the step and the config it is
    /// read from.
    #[serde(skip)]
    pub canary: bool,
}

/// Something that happened in a rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutEventView {
    pub at_unix_ms: i64,
    /// RFC 3339.
    pub at: String,
    /// Empty for the rollout as a whole.
    pub host: String,
    pub what: String,
}

/// How a rollout proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RolloutConfigView {
    pub canary: u32,
    /// Exactly one of `batch_count` and `batch_percent` is non-zero.
    pub batch_count: u32,
    pub batch_percent: u32,
    pub min_healthy_ms: u64,
    pub deadline_ms: u64,
    pub max_failures: u32,
    pub auto_rollback: bool,
    pub pause_after_canary: bool,
    pub backup_first: bool,
}

impl From<&pb::RolloutInfo> for RolloutView {
    fn from(r: &pb::RolloutInfo) -> Self {
        let pb::RolloutInfo {
            id,
            stack,
            from_revision,
            to_revision,
            phase: _,
            reason,
            step,
            steps,
            hosts,
            events,
            started_unix_ms,
            config,
            warnings,
        } = r;
        let config = config.as_ref().map(RolloutConfigView::from);
        RolloutView {
            id: id.clone(),
            stack: stack.clone(),
            from_revision: from_revision.clone(),
            to_revision: to_revision.clone(),
            phase: r.phase(),
            reason: reason.clone(),
            step: *step,
            steps: *steps,
            hosts: hosts
                .iter()
                .map(|h| RolloutHostView::new(h, is_canary_step(config, h.step)))
                .collect(),
            events: events.iter().map(RolloutEventView::from).collect(),
            started_unix_ms: *started_unix_ms,
            started: rfc3339_ms(*started_unix_ms),
            config,
            warnings: warnings.clone(),
        }
    }
}

impl RolloutHostView {
    fn new(h: &pb::RolloutHost, canary: bool) -> Self {
        let pb::RolloutHost {
            host,
            phase: _,
            target_revision,
            detail,
            step,
            backup_ids,
        } = h;
        RolloutHostView {
            host: host.clone(),
            phase: h.phase(),
            target_revision: target_revision.clone(),
            detail: detail.clone(),
            step: *step,
            backup_ids: backup_ids.clone(),
            canary,
        }
    }
}

impl From<&pb::RolloutEvent> for RolloutEventView {
    fn from(e: &pb::RolloutEvent) -> Self {
        let pb::RolloutEvent {
            at_unix_ms,
            host,
            what,
        } = e;
        RolloutEventView {
            at_unix_ms: *at_unix_ms,
            at: rfc3339_ms(*at_unix_ms),
            host: host.clone(),
            what: what.clone(),
        }
    }
}

impl From<&pb::RolloutConfig> for RolloutConfigView {
    fn from(c: &pb::RolloutConfig) -> Self {
        let pb::RolloutConfig {
            canary,
            batch_count,
            batch_percent,
            min_healthy_ms,
            deadline_ms,
            max_failures,
            auto_rollback,
            pause_after_canary,
            backup_first,
        } = *c;
        RolloutConfigView {
            canary,
            batch_count,
            batch_percent,
            min_healthy_ms,
            deadline_ms,
            max_failures,
            auto_rollback,
            pause_after_canary,
            backup_first,
        }
    }
}

impl RolloutView {
    /// Step 1, when the rollout has a canary.
    pub fn is_canary_step(&self, step: u32) -> bool {
        is_canary_step(self.config, step)
    }
}

fn is_canary_step(config: Option<RolloutConfigView>, step: u32) -> bool {
    step == 1 && config.is_some_and(|c| c.canary > 0)
}

impl Listed for RolloutView {
    const HEADER: &'static [&'static str] = &["ID", "STARTED", "FROM", "TO", "PHASE", "REASON"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.started.clone(),
            short_revision(&self.from_revision),
            short_revision(&self.to_revision),
            self.phase.to_string(),
            or_dash(&truncate(&self.reason, DETAIL_WIDTH)),
        ]
    }
}

impl Listed for RolloutHostView {
    const HEADER: &'static [&'static str] = &["HOST", "STEP", "PHASE", "TARGET", "DETAIL"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.host.clone(),
            if self.canary {
                format!("{} (canary)", self.step)
            } else {
                self.step.to_string()
            },
            self.phase.to_string(),
            short_revision(&self.target_revision),
            or_dash(&truncate(&self.detail, DETAIL_WIDTH)),
        ]
    }
}

impl Listed for RolloutEventView {
    const HEADER: &'static [&'static str] = &["TIME", "HOST", "EVENT"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.at.clone(),
            or_dash(&self.host),
            truncate(&self.what, EVENT_WIDTH),
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const R1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const R2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn info() -> pb::RolloutInfo {
        pb::RolloutInfo {
            warnings: Vec::new(),
            id: "r7".into(),
            stack: "shop".into(),
            from_revision: R1.into(),
            to_revision: R2.into(),
            phase: pb::RolloutPhase::RollingBack.into(),
            reason: "web-1: service api unhealthy".into(),
            step: 1,
            steps: 2,
            hosts: vec![
                pb::RolloutHost {
                    host: "web-1".into(),
                    phase: pb::RolloutHostPhase::Failed.into(),
                    target_revision: R1.into(),
                    detail: "service api unhealthy".into(),
                    step: 1,
                    backup_ids: vec!["shop.db.20231114T221300Z.1a2b3c4d".into()],
                },
                pb::RolloutHost {
                    host: "web-2".into(),
                    phase: pb::RolloutHostPhase::Waiting.into(),
                    target_revision: R1.into(),
                    detail: String::new(),
                    step: 2,
                    backup_ids: Vec::new(),
                },
            ],
            events: vec![pb::RolloutEvent {
                at_unix_ms: 1_700_000_000_000,
                host: "web-1".into(),
                what: "failed: service api unhealthy".into(),
            }],
            started_unix_ms: 1_699_999_990_000,
            config: Some(pb::RolloutConfig {
                canary: 1,
                batch_count: 0,
                batch_percent: 50,
                min_healthy_ms: 10_000,
                deadline_ms: 300_000,
                max_failures: 0,
                auto_rollback: true,
                pause_after_canary: false,
                backup_first: true,
            }),
        }
    }

    #[test]
    fn a_rollout_shows_its_phases_as_text_under_the_proto_field_names() {
        assert_eq!(
            serde_json::to_value(RolloutView::from(&info())).unwrap(),
            json!({
                "id": "r7", "stack": "shop", "from_revision": R1, "to_revision": R2, "warnings": [],
                "phase": "rolling_back", "reason": "web-1: service api unhealthy",
                "step": 1, "steps": 2,
                "hosts": [
                    {"host": "web-1", "phase": "failed", "target_revision": R1,
                     "detail": "service api unhealthy", "step": 1,
                     "backup_ids": ["shop.db.20231114T221300Z.1a2b3c4d"]},
                    {"host": "web-2", "phase": "waiting", "target_revision": R1,
                     "detail": "", "step": 2, "backup_ids": []},
                ],
                "events": [{
                    "at_unix_ms": 1_700_000_000_000_i64, "at": "2023-11-14T22:13:20Z",
                    "host": "web-1", "what": "failed: service api unhealthy",
                }],
                "started_unix_ms": 1_699_999_990_000_i64, "started": "2023-11-14T22:13:10Z",
                "config": {
                    "canary": 1, "batch_count": 0, "batch_percent": 50, "min_healthy_ms": 10_000,
                    "deadline_ms": 300_000, "max_failures": 0, "auto_rollback": true,
                    "pause_after_canary": false, "backup_first": true,
                },
            })
        );
    }

    #[test]
    fn a_rollout_without_config_shows_null_and_no_canary() {
        let mut i = info();
        i.config = None;
        let v = RolloutView::from(&i);
        assert_eq!(serde_json::to_value(&v).unwrap()["config"], json!(null));
        assert!(!v.is_canary_step(1));
        assert_eq!(v.hosts[0].cells()[1], "1");
    }

    #[test]
    fn rows_show_the_canary_step_phases_and_events() {
        let v = RolloutView::from(&info());
        assert_eq!(
            v.cells(),
            [
                "r7",
                "2023-11-14T22:13:10Z",
                "111111111111",
                "222222222222",
                "rolling_back",
                "web-1: service api unhealthy"
            ]
        );
        assert_eq!(
            v.hosts[0].cells(),
            [
                "web-1",
                "1 (canary)",
                "failed",
                "111111111111",
                "service api unhealthy"
            ]
        );
        assert_eq!(
            v.hosts[1].cells(),
            ["web-2", "2", "waiting", "111111111111", "-"]
        );
        assert_eq!(
            v.events[0].cells(),
            [
                "2023-11-14T22:13:20Z",
                "web-1",
                "failed: service api unhealthy"
            ]
        );
    }
}
