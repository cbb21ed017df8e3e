//! Alerts (`alert ls`), silences (`alert silences`, `alert silence`, `alert unsilence`) and
//! test notifications (`alert test`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use noco_proto::v1 as pb;
use serde::Serialize;

use super::text;
use crate::output::{Listed, ago_ms, or_dash, rfc3339_ms, truncate};

/// One row of `alert ls`: a rule with nothing to say (state ok), or one of its alerts (firing,
/// silenced, pending) with the host and stack it is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub rule: String,
    #[serde(serialize_with = "text")]
    pub state: pb::AlertState,
    /// Whether the rule is on (`[alerts.rules.<rule>] enabled = false` turns it off).
    pub enabled: bool,
    /// RFC 3339; `-` when ok.
    pub since: String,
    pub since_unix_ms: i64,
    pub severity: String,
    /// The host's name; empty when the alert is not about one host.
    pub host: String,
    pub stack: String,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub fingerprint: String,
    /// The silence holding it back (silenced).
    pub silence_id: String,
}

impl AlertView {
    /// The rows of `alert ls`: each rule in order, as its alerts, or as one `ok` row.
    pub fn rows(r: &pb::ListAlertsResponse) -> Vec<AlertView> {
        let pb::ListAlertsResponse {
            rules,
            alerts,
            silences: _,
            receivers: _,
        } = r;
        let mut out = Vec::new();
        for rule in rules {
            let pb::AlertRule {
                name,
                description,
                enabled,
                severity,
                state: _,
                since_unix_ms: _,
            } = rule;
            let mine: Vec<&pb::Alert> = alerts.iter().filter(|a| &a.rule == name).collect();
            if mine.is_empty() {
                out.push(AlertView {
                    rule: name.clone(),
                    state: pb::AlertState::Ok,
                    enabled: *enabled,
                    since: "-".to_string(),
                    since_unix_ms: 0,
                    severity: severity.clone(),
                    host: String::new(),
                    stack: String::new(),
                    summary: description.clone(),
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                    fingerprint: String::new(),
                    silence_id: String::new(),
                });
            }
            for a in mine {
                out.push(AlertView::from_alert(a, *enabled));
            }
        }
        out
    }

    fn from_alert(a: &pb::Alert, enabled: bool) -> AlertView {
        let pb::Alert {
            rule,
            state: _,
            since_unix_ms,
            labels,
            annotations,
            fingerprint,
            silence_id,
        } = a;
        let labels: BTreeMap<String, String> = labels.clone().into_iter().collect();
        let annotations: BTreeMap<String, String> = annotations.clone().into_iter().collect();
        AlertView {
            rule: rule.clone(),
            state: a.state(),
            enabled,
            since: rfc3339_ms(*since_unix_ms),
            since_unix_ms: *since_unix_ms,
            severity: labels.get("severity").cloned().unwrap_or_default(),
            host: labels.get("host").cloned().unwrap_or_default(),
            stack: labels.get("stack").cloned().unwrap_or_default(),
            summary: annotations.get("summary").cloned().unwrap_or_default(),
            labels,
            annotations,
            fingerprint: fingerprint.clone(),
            silence_id: silence_id.clone(),
        }
    }

    fn state_text(&self) -> String {
        if !self.enabled {
            return "off".to_string();
        }
        match self.state {
            pb::AlertState::Silenced => format!("silenced ({})", self.silence_id),
            s => noco_proto::Enumeration::text(s).to_string(),
        }
    }
}

impl Listed for AlertView {
    const HEADER: &'static [&'static str] = &[
        "RULE", "STATE", "SINCE", "SEVERITY", "HOST", "STACK", "SUMMARY",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.rule.clone(),
            self.state_text(),
            if self.since_unix_ms > 0 {
                ago_ms(self.since_unix_ms)
            } else {
                "-".to_string()
            },
            self.severity.clone(),
            or_dash(&self.host),
            or_dash(&self.stack),
            truncate(&self.summary, 80),
        ]
    }
}

/// A silence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceView {
    pub id: String,
    pub rule: String,
    /// Empty: every host.
    pub host: String,
    /// Empty: every stack.
    pub stack: String,
    /// RFC 3339.
    pub starts: String,
    pub starts_unix_ms: i64,
    pub ends: String,
    pub ends_unix_ms: i64,
    pub comment: String,
    pub created_by: String,
    /// Not yet ended.
    pub active: bool,
}

impl From<&pb::Silence> for SilenceView {
    fn from(s: &pb::Silence) -> Self {
        let pb::Silence {
            id,
            rule,
            host,
            stack,
            starts_unix_ms,
            ends_unix_ms,
            comment,
            created_by,
            active,
        } = s;
        SilenceView {
            id: id.clone(),
            rule: rule.clone(),
            host: host.clone(),
            stack: stack.clone(),
            starts: rfc3339_ms(*starts_unix_ms),
            starts_unix_ms: *starts_unix_ms,
            ends: rfc3339_ms(*ends_unix_ms),
            ends_unix_ms: *ends_unix_ms,
            comment: comment.clone(),
            created_by: created_by.clone(),
            active: *active,
        }
    }
}

impl SilenceView {
    /// `in 1h59m`, or `ended 3m ago`.
    pub fn ends_text(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if self.active && self.ends_unix_ms > now {
            let left = std::time::Duration::from_secs(((self.ends_unix_ms - now) / 1000) as u64);
            format!("in {}", noco_proto::duration::format(left))
        } else {
            format!("ended {}", ago_ms(self.ends_unix_ms))
        }
    }

    /// What it holds back: `host-offline on web-1`, `stack-failed of shop on every host`.
    pub fn what(&self) -> String {
        let mut out = self.rule.clone();
        if !self.stack.is_empty() {
            out.push_str(&format!(" of {}", self.stack));
        }
        if self.host.is_empty() {
            out.push_str(" on every host");
        } else {
            out.push_str(&format!(" on {}", self.host));
        }
        out
    }
}

impl Listed for SilenceView {
    const HEADER: &'static [&'static str] =
        &["ID", "RULE", "HOST", "STACK", "ENDS", "BY", "COMMENT"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.rule.clone(),
            or_dash(&self.host),
            or_dash(&self.stack),
            self.ends_text(),
            self.created_by.clone(),
            truncate(&self.comment, 60),
        ]
    }
}

/// How a receiver took a test notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestAlertView {
    pub receiver: String,
    /// `HTTP 200`.
    pub result: String,
}

impl From<&pb::TestAlertResponse> for TestAlertView {
    fn from(r: &pb::TestAlertResponse) -> Self {
        let pb::TestAlertResponse { receiver, result } = r;
        TestAlertView {
            receiver: receiver.clone(),
            result: result.clone(),
        }
    }
}

impl TestAlertView {
    pub fn line(&self) -> String {
        format!(
            "test notification delivered to {} ({})",
            self.receiver, self.result
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(name: &str, state: pb::AlertState) -> pb::AlertRule {
        pb::AlertRule {
            name: name.into(),
            description: format!("{name} watches"),
            enabled: true,
            severity: "critical".into(),
            state: state.into(),
            since_unix_ms: 0,
        }
    }

    #[test]
    fn a_rule_is_one_ok_row_or_a_row_per_alert_with_its_host_and_stack() {
        let r = pb::ListAlertsResponse {
            rules: vec![
                rule("host-offline", pb::AlertState::Firing),
                rule("stack-failed", pb::AlertState::Ok),
            ],
            alerts: vec![pb::Alert {
                rule: "host-offline".into(),
                state: pb::AlertState::Silenced.into(),
                since_unix_ms: 1_700_000_000_000,
                labels: [
                    ("alertname".to_string(), "host-offline".to_string()),
                    ("host".to_string(), "web-1".to_string()),
                    ("severity".to_string(), "critical".to_string()),
                ]
                .into(),
                annotations: [("summary".to_string(), "host web-1 is offline".to_string())].into(),
                fingerprint: "f1".into(),
                silence_id: "s1".into(),
            }],
            ..Default::default()
        };
        let rows = AlertView::rows(&r);
        assert_eq!(rows.len(), 2);
        let v = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(v["state"], json!("silenced"));
        assert_eq!(v["host"], json!("web-1"));
        assert_eq!(v["since"], json!("2023-11-14T22:13:20Z"));
        assert_eq!(v["since_unix_ms"], json!(1_700_000_000_000_i64));
        assert_eq!(v["silence_id"], json!("s1"));
        let cells = rows[0].cells();
        assert_eq!(cells[0], "host-offline");
        assert_eq!(cells[1], "silenced (s1)");
        assert_eq!(cells[4], "web-1");
        assert_eq!(cells[5], "-");
        assert_eq!(cells[6], "host web-1 is offline");
        assert_eq!(rows[1].cells()[1], "ok");
        assert_eq!(rows[1].cells()[2], "-");
        assert_eq!(
            serde_json::to_value(&rows[1]).unwrap()["state"],
            json!("ok")
        );
    }

    #[test]
    fn a_silence_says_what_it_holds_back_and_until_when() {
        let s = SilenceView::from(&pb::Silence {
            id: "s1".into(),
            rule: "stack-failed".into(),
            host: String::new(),
            stack: "shop".into(),
            starts_unix_ms: 1_000,
            ends_unix_ms: 2_000,
            comment: "migrating".into(),
            created_by: "operator alice (deployer)".into(),
            active: false,
        });
        assert_eq!(s.what(), "stack-failed of shop on every host");
        assert!(s.ends_text().starts_with("ended "), "{}", s.ends_text());
        assert_eq!(
            serde_json::to_value(&s).unwrap()["ends"],
            json!("1970-01-01T00:00:02Z")
        );
        let cells = s.cells();
        assert_eq!(cells[2], "-");
        assert_eq!(cells[3], "shop");
    }
}
