//! Backups (`backup ls`, `backup show`, `backup rm`) and the jobs that make, restore and verify
//! them (`backup run`, `backup restore`, `backup verify`, and their `-w`).

use noco_proto::v1 as pb;
use serde::Serialize;
use serde_json::Value;

use super::text;
use crate::output::{Listed, human_bytes, or_dash, rfc3339_ms, truncate};

/// How long the REASON cell may be.
pub const REASON_WIDTH: usize = 80;
/// How many hex digits of a checksum the CHECKSUM cell shows.
pub const SHORT_CHECKSUM: usize = 12;

/// One backup in the catalog. As a row ([`Listed`]) it is a line of `backup ls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupView {
    /// `<stack>.<name>.<yyyymmddThhmmssZ>.<8 hex>`.
    pub id: String,
    pub stack: String,
    /// The backup's name in the stack's `x-noco.backups`.
    pub name: String,
    pub host: String,
    pub host_id: String,
    /// The stack's revision when it was made.
    pub revision: String,
    /// `dump` or `volumes`.
    #[serde(serialize_with = "text")]
    pub kind: pb::BackupKind,
    /// `running`, `pending_upload`, `complete`, `failed` or `missed`.
    #[serde(serialize_with = "text")]
    pub state: pb::BackupState,
    /// Why it failed or was missed.
    pub reason: String,
    /// RFC 3339, `-` for none.
    pub started: String,
    pub started_unix_ms: i64,
    pub finished: String,
    pub finished_unix_ms: i64,
    /// The schedule time it ran for (scheduled and missed backups).
    pub scheduled: String,
    pub scheduled_unix_ms: i64,
    /// The stored archive: bytes and sha256 (lowercase hex).
    pub size: u64,
    pub sha256: String,
    /// Bytes the server holds so far.
    pub uploaded: u64,
    /// Bytes of plain content (the manifest's members).
    pub content_size: u64,
    /// Encrypted to these age recipients (none: not encrypted).
    pub encrypted: bool,
    pub recipients: Vec<String>,
    /// `schedule`, `manual` or `rollout`, and who: an operator, or the rollout's id.
    pub trigger: String,
    pub triggered_by: String,
    /// The latest verify: `ok`, `failed`, or empty (never verified); when, and why it failed.
    pub verified: String,
    pub verified_at: String,
    pub verified_unix_ms: i64,
    pub verify_reason: String,
    /// The manifest the agent wrote (members with their sizes and sha256 …), as JSON; `null`
    /// when there is none yet.
    pub manifest: Value,
}

impl From<&pb::BackupInfo> for BackupView {
    fn from(b: &pb::BackupInfo) -> Self {
        let pb::BackupInfo {
            id,
            stack,
            name,
            host_id,
            host,
            revision,
            kind: _,
            state: _,
            started_unix_ms,
            finished_unix_ms,
            size,
            sha256,
            reason,
            recipients,
            trigger,
            triggered_by,
            manifest_json,
            uploaded,
            scheduled_unix_ms,
            verified,
            verified_unix_ms,
            verify_reason,
            content_size,
        } = b;
        BackupView {
            id: id.clone(),
            stack: stack.clone(),
            name: name.clone(),
            host: host.clone(),
            host_id: host_id.clone(),
            revision: revision.clone(),
            kind: b.kind(),
            state: b.state(),
            reason: reason.clone(),
            started: rfc3339_ms(*started_unix_ms),
            started_unix_ms: *started_unix_ms,
            finished: rfc3339_ms(*finished_unix_ms),
            finished_unix_ms: *finished_unix_ms,
            scheduled: rfc3339_ms(*scheduled_unix_ms),
            scheduled_unix_ms: *scheduled_unix_ms,
            size: *size,
            sha256: sha256.clone(),
            uploaded: *uploaded,
            content_size: *content_size,
            encrypted: !recipients.is_empty(),
            recipients: recipients.clone(),
            trigger: trigger.clone(),
            triggered_by: triggered_by.clone(),
            verified: verified.clone(),
            verified_at: rfc3339_ms(*verified_unix_ms),
            verified_unix_ms: *verified_unix_ms,
            verify_reason: verify_reason.clone(),
            manifest: manifest(manifest_json),
        }
    }
}

/// The manifest as JSON: `null` when empty, the text itself when it is not JSON.
fn manifest(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl BackupView {
    /// When it was made: its start, else (a missed backup) the time it was scheduled for.
    pub fn time(&self) -> &str {
        if self.started_unix_ms > 0 {
            &self.started
        } else {
            &self.scheduled
        }
    }

    /// `shop/db`.
    pub fn stack_name(&self) -> String {
        format!("{}/{}", self.stack, self.name)
    }

    /// The SIZE cell: the archive's size; while it uploads, how much of it the server holds.
    pub fn size_text(&self) -> String {
        match self.state {
            pb::BackupState::PendingUpload if self.size > 0 => format!(
                "{} of {}",
                human_bytes(self.uploaded),
                human_bytes(self.size)
            ),
            pb::BackupState::PendingUpload | pb::BackupState::Running if self.uploaded > 0 => {
                format!("{} so far", human_bytes(self.uploaded))
            }
            _ if self.size > 0 => human_bytes(self.size),
            _ => "-".to_string(),
        }
    }

    /// The REASON cell: why it failed or was missed, else why its latest verify failed.
    pub fn reason_text(&self) -> String {
        if !self.reason.is_empty() {
            self.reason.clone()
        } else if self.verified == VERIFY_FAILED {
            format!("verify failed: {}", or_dash(&self.verify_reason))
        } else {
            String::new()
        }
    }

    /// `ok at 2026-…`, `failed at 2026-…: why`, or `never`.
    pub fn verified_text(&self) -> String {
        match self.verified.as_str() {
            "" => "never".to_string(),
            state => {
                let mut text = format!("{state} at {}", self.verified_at);
                if !self.verify_reason.is_empty() {
                    text.push_str(&format!(": {}", self.verify_reason));
                }
                text
            }
        }
    }

    /// `schedule (for 2026-…)`, `manual by alice`, `rollout r7`.
    pub fn trigger_text(&self) -> String {
        let mut text = or_dash(&self.trigger);
        match self.trigger.as_str() {
            "schedule" if self.scheduled_unix_ms > 0 => {
                text.push_str(&format!(" (for {})", self.scheduled))
            }
            "rollout" if !self.triggered_by.is_empty() => {
                text.push_str(&format!(" {}", self.triggered_by))
            }
            _ if !self.triggered_by.is_empty() => {
                text.push_str(&format!(" by {}", self.triggered_by))
            }
            _ => {}
        }
        text
    }
}

/// A verify that failed, as `BackupInfo.verified` says it.
pub const VERIFY_FAILED: &str = "failed";

/// The first hex digits of a checksum; `-` when there is none.
pub fn short_checksum(sha256: &str) -> String {
    if sha256.is_empty() {
        return "-".to_string();
    }
    sha256.chars().take(SHORT_CHECKSUM).collect()
}

impl Listed for BackupView {
    const HEADER: &'static [&'static str] = &[
        "ID", "STACK", "NAME", "HOST", "TIME", "SIZE", "STATE", "CHECKSUM", "VERIFIED", "REASON",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.stack.clone(),
            self.name.clone(),
            or_dash(&self.host),
            self.time().to_string(),
            self.size_text(),
            self.state.to_string(),
            short_checksum(&self.sha256),
            or_dash(&self.verified),
            or_dash(&truncate(&self.reason_text(), REASON_WIDTH)),
        ]
    }
}

/// What `backup show` prints of the manifest: each of its values as a compose file writes
/// them (`dump: [pg_dump, -U, app]`), then its members as a table (path, size, sha256). The
/// manifest is the agent's: keys this nococtl does not know are shown as they are.
pub fn manifest_lines(manifest: &Value) -> Vec<String> {
    let Value::Object(fields) = manifest else {
        return match manifest {
            Value::Null => vec!["  - (none yet: it comes with the finished upload)".to_string()],
            other => vec![format!("  {}", flow(other))],
        };
    };
    let mut lines = Vec::new();
    let width = fields
        .keys()
        .filter(|k| *k != "members")
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0);
    for (key, value) in fields.iter().filter(|(k, _)| *k != "members") {
        let pad = " ".repeat(width - key.chars().count());
        lines.push(format!("  {key}:{pad} {}", flow(value)));
    }
    match fields.get("members") {
        None => {}
        Some(members) => {
            let rows = member_rows(members);
            lines.push(format!("  members: {}", rows.len()));
            if !rows.is_empty() {
                let header = ["PATH", "TYPE", "SIZE", "SHA256"];
                let typed = rows.iter().any(|r| !r[1].is_empty());
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|mut r| {
                        if !typed {
                            r.remove(1);
                        }
                        r
                    })
                    .collect();
                let header: Vec<&str> = header
                    .iter()
                    .copied()
                    .filter(|h| typed || *h != "TYPE")
                    .collect();
                lines.extend(
                    crate::output::table_lines(&header, &rows)
                        .into_iter()
                        .map(|l| format!("    {l}")),
                );
            }
        }
    }
    lines
}

/// The members' rows: path, type, size, sha256 — from a list of objects (`path` or `name`,
/// `type` or `kind`, `size`, `sha256`), or from an object keyed by path.
fn member_rows(members: &Value) -> Vec<Vec<String>> {
    let row = |path: String, m: &Value| -> Vec<String> {
        let field = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| m.get(*k))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        };
        let size = keys_u64(m, &["size", "bytes"])
            .map(human_bytes)
            .unwrap_or_else(|| "-".to_string());
        vec![
            path,
            field(&["type", "kind"]),
            size,
            or_dash(&field(&["sha256"])),
        ]
    };
    match members {
        Value::Array(list) => list
            .iter()
            .map(|m| {
                let path = ["path", "name"]
                    .iter()
                    .find_map(|k| m.get(*k).and_then(Value::as_str))
                    .map(str::to_string)
                    .unwrap_or_else(|| match m {
                        Value::String(s) => s.clone(),
                        _ => "-".to_string(),
                    });
                row(path, m)
            })
            .collect(),
        Value::Object(map) => map.iter().map(|(path, m)| row(path.clone(), m)).collect(),
        _ => Vec::new(),
    }
}

fn keys_u64(m: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| m.get(*k).and_then(Value::as_u64))
}

/// A JSON value as a compose file writes it: strings bare, lists `[a, b]`, maps `{k: v}`.
fn flow(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}: {}", flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Something a host was told to do with a backup — make it, restore it, verify it — and how
/// far it got. As a row ([`Listed`]) it is a line of what `backup run|restore|verify` print
/// and of their `-w` screen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupJobView {
    pub id: String,
    /// `run`, `restore` or `verify`.
    #[serde(serialize_with = "text")]
    pub kind: pb::BackupJobKind,
    /// `pending` (the host has not started it: it may be offline), `running`, `succeeded` or
    /// `failed`.
    #[serde(serialize_with = "text")]
    pub state: pb::BackupJobState,
    pub host: String,
    pub host_id: String,
    pub stack: String,
    pub name: String,
    /// The backup made (run) or used (restore, verify).
    pub backup_id: String,
    /// What it is doing now (`dumping`, `uploading`, `stopping web` …), and how far: 0–100, or
    /// -1 when it cannot tell.
    pub phase: String,
    pub percent: i32,
    /// Why it failed.
    pub reason: String,
    /// RFC 3339, `-` for none.
    pub created: String,
    pub created_unix_ms: i64,
    pub finished: String,
    pub finished_unix_ms: i64,
    /// Who asked.
    pub caller: String,
}

impl From<&pb::BackupJob> for BackupJobView {
    fn from(j: &pb::BackupJob) -> Self {
        let pb::BackupJob {
            id,
            kind: _,
            state: _,
            host_id,
            host,
            stack,
            name,
            backup_id,
            phase,
            percent,
            reason,
            created_unix_ms,
            finished_unix_ms,
            caller,
        } = j;
        BackupJobView {
            id: id.clone(),
            kind: j.kind(),
            state: j.state(),
            host: host.clone(),
            host_id: host_id.clone(),
            stack: stack.clone(),
            name: name.clone(),
            backup_id: backup_id.clone(),
            phase: phase.clone(),
            percent: *percent,
            reason: reason.clone(),
            created: rfc3339_ms(*created_unix_ms),
            created_unix_ms: *created_unix_ms,
            finished: rfc3339_ms(*finished_unix_ms),
            finished_unix_ms: *finished_unix_ms,
            caller: caller.clone(),
        }
    }
}

impl BackupJobView {
    /// Succeeded or failed: nothing more happens to it.
    pub fn is_final(&self) -> bool {
        matches!(
            self.state,
            pb::BackupJobState::Succeeded | pb::BackupJobState::Failed
        )
    }

    /// `shop/db`.
    pub fn stack_name(&self) -> String {
        format!("{}/{}", self.stack, self.name)
    }

    /// What it is doing now; nothing once it has ended (its last phase is no longer going on).
    pub fn phase_text(&self) -> &str {
        if self.is_final() { "" } else { &self.phase }
    }

    /// `42%`, or `-` when the host cannot tell.
    pub fn percent_text(&self) -> String {
        if self.percent < 0 {
            "-".to_string()
        } else {
            format!("{}%", self.percent.min(100))
        }
    }

    /// The host, by name (its id when the server knows no name).
    pub fn host_text(&self) -> String {
        if self.host.is_empty() {
            or_dash(&self.host_id)
        } else {
            self.host.clone()
        }
    }
}

impl Listed for BackupJobView {
    const HEADER: &'static [&'static str] = &[
        "HOST", "NAME", "BACKUP", "STATE", "PHASE", "PERCENT", "REASON",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.host_text(),
            self.stack_name(),
            or_dash(&self.backup_id),
            self.state.to_string(),
            or_dash(self.phase_text()),
            self.percent_text(),
            or_dash(&truncate(&self.reason, REASON_WIDTH)),
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    pub const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    pub fn info() -> pb::BackupInfo {
        pb::BackupInfo {
            id: "shop.db.20231114T221320Z.1a2b3c4d".into(),
            stack: "shop".into(),
            name: "db".into(),
            host_id: "h1".into(),
            host: "web-1".into(),
            revision: "sha256:1111".into(),
            kind: pb::BackupKind::Dump.into(),
            state: pb::BackupState::Complete.into(),
            started_unix_ms: 1_700_000_000_000,
            finished_unix_ms: 1_700_000_060_000,
            size: 12_900_000,
            sha256: SHA.into(),
            reason: String::new(),
            recipients: vec!["age1qqqqqqqqqqqqqqqq".into()],
            trigger: "manual".into(),
            triggered_by: "alice".into(),
            manifest_json: r#"{"stack":"shop","service":"db","dump":["pg_dump","-U","app"],"members":[{"path":"db.dump","size":40960000,"sha256":"ab12"}]}"#.into(),
            uploaded: 12_900_000,
            scheduled_unix_ms: 0,
            verified: "ok".into(),
            verified_unix_ms: 1_700_000_120_000,
            verify_reason: String::new(),
            content_size: 40_960_000,
        }
    }

    pub fn job(state: pb::BackupJobState, phase: &str, percent: i32) -> pb::BackupJob {
        pb::BackupJob {
            id: "j1".into(),
            kind: pb::BackupJobKind::Run.into(),
            state: state.into(),
            host_id: "h1".into(),
            host: "web-1".into(),
            stack: "shop".into(),
            name: "db".into(),
            backup_id: "shop.db.20231114T221320Z.1a2b3c4d".into(),
            phase: phase.into(),
            percent,
            reason: String::new(),
            created_unix_ms: 1_700_000_000_000,
            finished_unix_ms: 0,
            caller: "alice".into(),
        }
    }

    #[test]
    fn a_backup_row_has_every_column_with_a_short_checksum() {
        let v = BackupView::from(&info());
        assert_eq!(
            v.cells(),
            [
                "shop.db.20231114T221320Z.1a2b3c4d",
                "shop",
                "db",
                "web-1",
                "2023-11-14T22:13:20Z",
                "12.3 MiB",
                "complete",
                "0123456789ab",
                "ok",
                "-"
            ]
        );
    }

    #[test]
    fn failed_and_missed_backups_show_their_reason() {
        let mut b = info();
        b.state = pb::BackupState::Failed.into();
        b.reason = "pg_dump exited 1: role \"app\" does not exist".into();
        b.size = 0;
        b.sha256.clear();
        b.verified.clear();
        let cells = BackupView::from(&b).cells();
        assert_eq!(
            cells[5..],
            [
                "-",
                "failed",
                "-",
                "-",
                "pg_dump exited 1: role \"app\" does not exist"
            ]
        );

        let mut m = info();
        m.state = pb::BackupState::Missed.into();
        m.started_unix_ms = 0;
        m.scheduled_unix_ms = 1_700_000_000_000;
        m.reason = "the agent was not running at 03:00".into();
        let cells = BackupView::from(&m).cells();
        assert_eq!(cells[4], "2023-11-14T22:13:20Z");
        assert_eq!(cells[6], "missed");
        assert_eq!(cells[9], "the agent was not running at 03:00");

        let mut v = info();
        v.verified = "failed".into();
        v.verify_reason = "pg_restore --list exited 1".into();
        let view = BackupView::from(&v);
        assert_eq!(
            view.cells()[8..],
            ["failed", "verify failed: pg_restore --list exited 1"]
        );
        assert_eq!(
            view.verified_text(),
            "failed at 2023-11-14T22:15:20Z: pg_restore --list exited 1"
        );
    }

    #[test]
    fn an_upload_in_progress_shows_how_much_the_server_holds() {
        let mut b = info();
        b.state = pb::BackupState::PendingUpload.into();
        b.uploaded = 1024 * 1024;
        b.size = 4 * 1024 * 1024;
        assert_eq!(BackupView::from(&b).size_text(), "1.0 MiB of 4.0 MiB");
        b.size = 0;
        assert_eq!(BackupView::from(&b).size_text(), "1.0 MiB so far");
    }

    #[test]
    fn a_backup_shows_as_json_under_the_proto_names_with_times_twice() {
        let v = serde_json::to_value(BackupView::from(&info())).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "shop.db.20231114T221320Z.1a2b3c4d", "stack": "shop", "name": "db",
                "host": "web-1", "host_id": "h1", "revision": "sha256:1111",
                "kind": "dump", "state": "complete", "reason": "",
                "started": "2023-11-14T22:13:20Z", "started_unix_ms": 1_700_000_000_000_i64,
                "finished": "2023-11-14T22:14:20Z", "finished_unix_ms": 1_700_000_060_000_i64,
                "scheduled": "-", "scheduled_unix_ms": 0,
                "size": 12_900_000, "sha256": SHA, "uploaded": 12_900_000,
                "content_size": 40_960_000,
                "encrypted": true, "recipients": ["age1qqqqqqqqqqqqqqqq"],
                "trigger": "manual", "triggered_by": "alice",
                "verified": "ok", "verified_at": "2023-11-14T22:15:20Z",
                "verified_unix_ms": 1_700_000_120_000_i64, "verify_reason": "",
                "manifest": {
                    "stack": "shop", "service": "db", "dump": ["pg_dump", "-U", "app"],
                    "members": [{"path": "db.dump", "size": 40_960_000, "sha256": "ab12"}],
                },
            })
        );
        let mut b = info();
        b.manifest_json.clear();
        assert_eq!(
            serde_json::to_value(BackupView::from(&b)).unwrap()["manifest"],
            json!(null)
        );
        b.manifest_json = "not json".into();
        assert_eq!(
            serde_json::to_value(BackupView::from(&b)).unwrap()["manifest"],
            json!("not json")
        );
    }

    #[test]
    fn the_manifest_shows_its_values_then_its_members() {
        let v = BackupView::from(&info());
        assert_eq!(
            manifest_lines(&v.manifest),
            [
                "  dump:    [pg_dump, -U, app]",
                "  service: db",
                "  stack:   shop",
                "  members: 1",
                "    PATH     SIZE      SHA256",
                "    db.dump  39.1 MiB  ab12",
            ]
        );
        let typed =
            json!({"members": {"media/a.txt": {"type": "file", "size": 5, "sha256": "cd"}}});
        assert_eq!(
            manifest_lines(&typed),
            [
                "  members: 1",
                "    PATH         TYPE  SIZE  SHA256",
                "    media/a.txt  file  5 B   cd",
            ]
        );
        assert_eq!(
            manifest_lines(&Value::Null),
            ["  - (none yet: it comes with the finished upload)"]
        );
    }

    #[test]
    fn triggers_say_who_or_what_started_the_backup() {
        let mut b = info();
        assert_eq!(BackupView::from(&b).trigger_text(), "manual by alice");
        b.trigger = "rollout".into();
        b.triggered_by = "r7".into();
        assert_eq!(BackupView::from(&b).trigger_text(), "rollout r7");
        b.trigger = "schedule".into();
        b.triggered_by.clear();
        b.scheduled_unix_ms = 1_700_000_000_000;
        assert_eq!(
            BackupView::from(&b).trigger_text(),
            "schedule (for 2023-11-14T22:13:20Z)"
        );
    }

    #[test]
    fn a_job_row_shows_host_name_phase_and_percent() {
        let v = BackupJobView::from(&job(pb::BackupJobState::Running, "dumping", 42));
        assert_eq!(
            v.cells(),
            [
                "web-1",
                "shop/db",
                "shop.db.20231114T221320Z.1a2b3c4d",
                "running",
                "dumping",
                "42%",
                "-"
            ]
        );
        assert!(!v.is_final());
        let done = BackupJobView::from(&job(pb::BackupJobState::Succeeded, "uploading", 100));
        assert_eq!(done.cells()[3..6], ["succeeded", "-", "100%"]);
        let mut failed = job(pb::BackupJobState::Failed, "", -1);
        failed.reason = "volume media vanished".into();
        let v = BackupJobView::from(&failed);
        assert_eq!(
            v.cells()[3..],
            ["failed", "-", "-", "volume media vanished"]
        );
        assert!(v.is_final());
    }

    #[test]
    fn a_job_shows_as_json_with_its_enumerations_as_text() {
        let v = serde_json::to_value(BackupJobView::from(&job(
            pb::BackupJobState::Pending,
            "",
            -1,
        )))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "id": "j1", "kind": "run", "state": "pending", "host": "web-1", "host_id": "h1",
                "stack": "shop", "name": "db", "backup_id": "shop.db.20231114T221320Z.1a2b3c4d",
                "phase": "", "percent": -1, "reason": "",
                "created": "2023-11-14T22:13:20Z", "created_unix_ms": 1_700_000_000_000_i64,
                "finished": "-", "finished_unix_ms": 0, "caller": "alice",
            })
        );
    }
}
