//! Audit records (`audit`).

use noco_proto::v1 as pb;
use serde::Serialize;

use crate::output::{Listed, rfc3339_ms};

/// Who did what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditView {
    /// RFC 3339.
    pub time: String,
    pub time_unix_ms: i64,
    pub caller: String,
    pub action: String,
    pub target: String,
    /// `ok`, `denied: …` or `error: …`.
    pub result: String,
}

impl From<&pb::AuditRecord> for AuditView {
    fn from(r: &pb::AuditRecord) -> Self {
        let pb::AuditRecord {
            time_unix_ms,
            caller,
            action,
            target,
            result,
        } = r;
        AuditView {
            time: rfc3339_ms(*time_unix_ms),
            time_unix_ms: *time_unix_ms,
            caller: caller.clone(),
            action: action.clone(),
            target: target.clone(),
            result: result.clone(),
        }
    }
}

impl Listed for AuditView {
    const HEADER: &'static [&'static str] = &["TIME", "CALLER", "ACTION", "TARGET", "RESULT"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.time.clone(),
            self.caller.clone(),
            self.action.clone(),
            self.target.clone(),
            self.result.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_audit_record_shows_its_time_twice_and_the_rest_as_sent() {
        let r = AuditView::from(&pb::AuditRecord {
            time_unix_ms: 1_700_000_000_000,
            caller: "operator/admin".into(),
            action: "rollout.start".into(),
            target: "shop".into(),
            result: "ok".into(),
        });
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({
                "time": "2023-11-14T22:13:20Z", "time_unix_ms": 1_700_000_000_000_i64,
                "caller": "operator/admin", "action": "rollout.start", "target": "shop",
                "result": "ok",
            })
        );
        assert_eq!(
            r.cells(),
            [
                "2023-11-14T22:13:20Z",
                "operator/admin",
                "rollout.start",
                "shop",
                "ok"
            ]
        );
    }
}
