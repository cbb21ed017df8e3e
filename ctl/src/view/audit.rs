//! Audit records (`audit`).

use noco_proto::v1 as pb;
use serde::Serialize;

use super::text;
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
    /// The caller's name and id (operator or host; empty for tokens) and an operator's role.
    pub caller_name: String,
    pub caller_id: String,
    #[serde(serialize_with = "text")]
    pub caller_role: pb::Role,
    #[serde(serialize_with = "text")]
    pub outcome: pb::AuditOutcome,
    /// Why it was denied or failed.
    pub message: String,
    pub dry_run: bool,
}

impl From<&pb::AuditRecord> for AuditView {
    fn from(r: &pb::AuditRecord) -> Self {
        let pb::AuditRecord {
            time_unix_ms,
            caller,
            action,
            target,
            result,
            caller_name,
            caller_id,
            caller_role: _,
            outcome: _,
            message,
            dry_run,
        } = r;
        AuditView {
            time: rfc3339_ms(*time_unix_ms),
            time_unix_ms: *time_unix_ms,
            caller: caller.clone(),
            action: action.clone(),
            target: target.clone(),
            result: if *dry_run {
                format!("{result} (dry run)")
            } else {
                result.clone()
            },
            caller_name: caller_name.clone(),
            caller_id: caller_id.clone(),
            caller_role: r.caller_role(),
            outcome: r.outcome(),
            message: message.clone(),
            dry_run: *dry_run,
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
            caller_name: "admin".into(),
            caller_id: "0a1b".into(),
            caller_role: pb::Role::Admin.into(),
            outcome: pb::AuditOutcome::Ok.into(),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({
                "time": "2023-11-14T22:13:20Z", "time_unix_ms": 1_700_000_000_000_i64,
                "caller": "operator/admin", "action": "rollout.start", "target": "shop",
                "result": "ok", "caller_name": "admin", "caller_id": "0a1b",
                "caller_role": "admin", "outcome": "ok", "message": "", "dry_run": false,
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
