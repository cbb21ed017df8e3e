//! `x-noco.backups`: the backups a stack declares, read and checked here once for everyone — the
//! agent (runs them), the server (catalog, retention, orders) and nococtl (validates before
//! submitting). docker compose ignores `x-` keys, so the file stays a valid compose file.
//!
//! ```yaml
//! x-noco:
//!   backups:
//!     db:
//!       schedule: "0 3 * * *"       # cron (5 fields, or 6 with seconds first), @daily, @hourly…
//!       service: db
//!       dump: [pg_dump, -U, app, -Fc, app]       # stdout is the archive
//!       restore: [pg_restore, -U, app, -d, app, --clean, --if-exists]   # gets it on stdin
//!       verify: [pg_restore, --list]             # optional: checks it from stdin
//!       retention: {keep_last: 3, keep_daily: 7, keep_weekly: 4}
//!     files:
//!       schedule: "@daily"
//!       volumes: [media, config]
//!       stop: [web]
//! ```

use std::str::FromStr;

use serde::Serialize;

use crate::parse::{Node, Value};
use crate::read::{Reader, join};

/// The keys a backup takes.
const KEYS: &[&str] = &[
    "schedule",
    "service",
    "dump",
    "restore",
    "verify",
    "volumes",
    "stop",
    "retention",
    "recipients",
];

/// The keys of `retention`.
const RETENTION_KEYS: &[&str] = &[
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
];

/// How many backups of one (stack, backup, host) to keep when `retention` is not given.
pub const DEFAULT_KEEP_LAST: u32 = 7;

/// One declared backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSpec {
    pub name: String,
    /// A cron expression in the host's time zone; `None`: only on demand (and before rollouts).
    pub schedule: Option<String>,
    pub content: BackupContent,
    /// Services stopped while the backup is made and started again after.
    pub stop: Vec<String>,
    pub retention: Retention,
    /// age recipients (`age1…`) the archive is encrypted to; empty: not encrypted.
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupContent {
    /// A dump hook run in the service's container; its stdout is the archive.
    Dump {
        service: String,
        dump: Vec<String>,
        /// Gets the archive on stdin.
        restore: Option<Vec<String>>,
        /// Gets the archive on stdin and exits 0 when it is sound (e.g. `pg_restore --list`).
        verify: Option<Vec<String>>,
    },
    /// The named volumes of the project (by their key under top-level `volumes:`).
    Volumes { volumes: Vec<String> },
}

/// restic-style retention: each `keep_*` keeps the newest backup of each of the last n
/// buckets (hours, days, …) that hold one; the rules are OR-ed. Zero means the rule is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
}

impl Retention {
    /// No rule at all (then [`DEFAULT_KEEP_LAST`] applies).
    pub fn is_empty(&self) -> bool {
        *self == Retention::default()
    }

    /// The policy in effect: this one, or keep the last [`DEFAULT_KEEP_LAST`].
    pub fn effective(&self) -> Retention {
        if self.is_empty() {
            Retention {
                keep_last: DEFAULT_KEEP_LAST,
                ..Retention::default()
            }
        } else {
            *self
        }
    }
}

/// Check a cron schedule as the agent will run it: 5 fields (minute first), 6 (seconds first),
/// or `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the schedule is empty".to_owned());
    }
    if trimmed.starts_with('@')
        && !matches!(
            trimmed,
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly"
        )
    {
        return Err(format!(
            "{trimmed:?} is not a schedule: use cron (\"0 3 * * *\") or @yearly, @monthly, @weekly, @daily, @hourly"
        ));
    }
    croner::Cron::from_str(trimmed).map_err(|e| format!("{trimmed:?} is not a cron schedule: {e}"))
}

/// A backup's name: like a service's (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), and without dots, since
/// backup ids are `<stack>.<name>.<time>.<random>`.
pub fn valid_backup_name(name: &str) -> bool {
    crate::service::valid_service_name(name) && !name.contains('.') && name.len() <= 63
}

/// Read `x-noco.backups` (the `x-noco` node) against the project's services and volumes.
pub(crate) fn read(
    r: &mut Reader,
    x_noco: Option<&Node>,
    services: &[&str],
    volumes: &[&str],
) -> Vec<BackupSpec> {
    let Some(x_noco) = x_noco.filter(|n| !n.is_null()) else {
        return Vec::new();
    };
    let Some(entries) = r.mapping(x_noco, "x-noco") else {
        return Vec::new();
    };
    let Some((_, node)) = entries.iter().find(|(k, _)| k.name == "backups") else {
        return Vec::new();
    };
    if node.is_null() {
        return Vec::new();
    }
    let path = "x-noco.backups";
    let Some(backups) = r.mapping(node, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in backups {
        let here = join(path, &key.name);
        if !valid_backup_name(&key.name) {
            r.error(
                &here,
                key.line,
                format!(
                    "backup name {:?} is not valid: letters, digits, '_' and '-', starting with a letter or digit, at most 63",
                    key.name
                ),
            );
            continue;
        }
        if let Some(spec) = read_one(r, &key.name, value, &here, key.line, services, volumes) {
            out.push(spec);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn read_one(
    r: &mut Reader,
    name: &str,
    node: &Node,
    path: &str,
    line: Option<usize>,
    services: &[&str],
    volumes: &[&str],
) -> Option<BackupSpec> {
    let entries = r.mapping(node, path)?;
    let errors_before = r.diags.errors.len();
    let mut schedule = None;
    let mut service = None;
    let mut dump = None;
    let mut restore = None;
    let mut verify = None;
    let mut vols = None;
    let mut stop = Vec::new();
    let mut retention = Retention::default();
    let mut recipients = Vec::new();
    for (key, value) in r.known_entries(entries, path, "backup", KEYS) {
        let here = join(path, &key.name);
        match key.name.as_str() {
            "schedule" => {
                if let Some(text) = r.text(value, &here) {
                    match parse_schedule(&text) {
                        Ok(_) => schedule = Some(text.trim().to_owned()),
                        Err(e) => r.error(&here, value.line, e),
                    }
                }
            }
            "service" => service = r.text(value, &here).map(|s| (s, value.line)),
            "dump" => dump = Some(command(r, value, &here)),
            "restore" => restore = Some(command(r, value, &here)),
            "verify" => verify = Some(command(r, value, &here)),
            "volumes" => vols = Some((r.strings(value, &here), value.line)),
            "stop" => stop = r.string_or_list(value, &here),
            "retention" => retention = read_retention(r, value, &here),
            "recipients" => recipients = r.string_or_list(value, &here),
            _ => {}
        }
    }
    for recipient in &recipients {
        if !recipient.starts_with("age1") || recipient.len() < 10 {
            r.error(
                &join(path, "recipients"),
                line,
                format!("recipient {recipient:?} is not an age X25519 recipient (age1…)"),
            );
        }
    }
    let known_service = |r: &mut Reader, s: &str, at: &str, line: Option<usize>| {
        if !services.contains(&s) {
            let hint = crate::suggest::did_you_mean(s, services.iter().copied())
                .map(|h| format!(": {h}"))
                .unwrap_or_default();
            r.error(at, line, format!("no service {s:?} in this file{hint}"));
        }
    };
    for s in &stop {
        known_service(r, s, &join(path, "stop"), line);
    }
    let content = match (dump, vols) {
        (Some(_), Some(_)) => {
            r.error(
                path,
                line,
                format!("backup {name:?} has both dump and volumes: declare two backups"),
            );
            None
        }
        (None, None) => {
            r.error(
                path,
                line,
                format!("backup {name:?} needs dump (with service) or volumes"),
            );
            None
        }
        (Some(dump), None) => match service {
            None => {
                r.error(
                    path,
                    line,
                    format!("backup {name:?} has a dump but no service to run it in"),
                );
                None
            }
            Some((service, sline)) => {
                known_service(r, &service, &join(path, "service"), sline);
                if dump.is_empty() {
                    r.error(&join(path, "dump"), line, "the dump command is empty");
                }
                for (key, cmd) in [("restore", &restore), ("verify", &verify)] {
                    if cmd.as_ref().is_some_and(Vec::is_empty) {
                        r.error(
                            &join(path, key),
                            line,
                            format!("the {key} command is empty"),
                        );
                    }
                }
                Some(BackupContent::Dump {
                    service,
                    dump,
                    restore,
                    verify,
                })
            }
        },
        (None, Some((list, vline))) => {
            if restore.is_some() || verify.is_some() {
                r.error(
                    path,
                    line,
                    format!(
                        "backup {name:?}: restore and verify commands go with a dump; a volume backup is restored by noco"
                    ),
                );
            }
            if service.is_some() {
                r.warn(
                    &join(path, "service"),
                    line,
                    "service is used by dump backups only; ignored",
                );
            }
            if list.is_empty() {
                r.error(&join(path, "volumes"), vline, "no volumes listed");
            }
            for v in &list {
                if !volumes.contains(&v.as_str()) {
                    let hint = crate::suggest::did_you_mean(v, volumes.iter().copied())
                        .map(|h| format!(": {h}"))
                        .unwrap_or_default();
                    r.error(
                        &join(path, "volumes"),
                        vline,
                        format!(
                            "no volume {v:?} under the top-level volumes of this file{hint} (only named volumes can be backed up)"
                        ),
                    );
                }
            }
            let mut list = list;
            let len = list.len();
            list.sort();
            list.dedup();
            if list.len() != len {
                r.error(&join(path, "volumes"), vline, "a volume is listed twice");
            }
            Some(BackupContent::Volumes { volumes: list })
        }
    };
    if r.diags.errors.len() != errors_before {
        return None;
    }
    Some(BackupSpec {
        name: name.to_owned(),
        schedule,
        content: content?,
        stop,
        retention,
        recipients,
    })
}

/// An argv: a list of strings (no shell; a string is refused, it would need one).
fn command(r: &mut Reader, node: &Node, path: &str) -> Vec<String> {
    if matches!(node.value, Value::Str(_)) {
        r.error(
            path,
            node.line,
            "give the command as a list ([pg_dump, -U, app]): noco runs no shell",
        );
        return Vec::new();
    }
    r.strings(node, path)
}

fn read_retention(r: &mut Reader, node: &Node, path: &str) -> Retention {
    let mut out = Retention::default();
    let Some(entries) = r.mapping(node, path) else {
        return out;
    };
    for (key, value) in r.known_entries(entries, path, "retention", RETENTION_KEYS) {
        let here = join(path, &key.name);
        let Some(n) = r.int::<u32>(value, &here) else {
            continue;
        };
        match key.name.as_str() {
            "keep_last" => out.keep_last = n,
            "keep_hourly" => out.keep_hourly = n,
            "keep_daily" => out.keep_daily = n,
            "keep_weekly" => out.keep_weekly = n,
            "keep_monthly" => out.keep_monthly = n,
            "keep_yearly" => out.keep_yearly = n,
            _ => {}
        }
    }
    out
}
