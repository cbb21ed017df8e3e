//! The schedules: every backup with a `schedule` in a stack this host runs fires at its cron times
//! in the host's time zone — whether or not the server is there (the archive waits in the spool).
//! The last schedule time handled is kept on disk per stack and backup; when the agent was not
//! running at one (the host was down), that run is reported as MISSED, with when it was due, and
//! not made up for later: the next one runs at its time. A backup first seen starts from now.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local, TimeZone};
use noco_proto::v1::{BackupInfo, BackupState};
use serde::{Deserialize, Serialize};

use super::ctx::{Ctx, now_ms};
use super::make::{self, Request};
use super::spool::write_atomic;

/// How late a schedule time may be handled and still run (a busy or just-started agent).
pub const GRACE: Duration = Duration::from_secs(120);
/// The longest sleep (time zone and clock changes are caught up within it).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// At most this many schedule times are counted when saying how many runs were missed.
const MAX_COUNTED: usize = 10_000;

/// Schedule times that passed while the agent was not running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    pub first: DateTime<Local>,
    pub last: DateTime<Local>,
    pub count: usize,
}

/// What to do about one schedule now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing due; the next time.
    Wait(DateTime<Local>),
    /// Run now, for schedule time `at` (after reporting the runs missed before it, if any).
    Run {
        at: DateTime<Local>,
        missed: Option<Missed>,
    },
    /// Every time since the last one handled passed while the agent was not running.
    Missed(Missed),
}

/// Decide for a schedule whose last handled time is `last`.
pub fn decide<Tz: TimeZone>(
    cron: &croner::Cron,
    last: &DateTime<Tz>,
    now: &DateTime<Local>,
) -> Option<Decision> {
    let last = last.with_timezone(&Local);
    let first = cron.find_next_occurrence(&last, false).ok()?;
    if first > *now {
        return Some(Decision::Wait(first));
    }
    let mut previous = None;
    let mut newest = first;
    let mut count = 1;
    for t in cron.iter_after(first) {
        if t > *now || count >= MAX_COUNTED {
            break;
        }
        previous = Some(newest);
        newest = t;
        count += 1;
    }
    let late = (*now - newest).to_std().unwrap_or_default();
    if late <= GRACE {
        Some(Decision::Run {
            at: newest,
            missed: previous.map(|last| Missed {
                first,
                last,
                count: count - 1,
            }),
        })
    } else {
        Some(Decision::Missed(Missed {
            first,
            last: newest,
            count,
        }))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// `stack/backup` → the last schedule time handled (unix ms).
    last: BTreeMap<String, i64>,
}

fn load(ctx: &Ctx) -> State {
    std::fs::read(ctx.layout.schedule_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(ctx: &Ctx, state: &State) {
    let result = serde_json::to_vec_pretty(state)
        .map_err(|e| e.to_string())
        .and_then(|b| write_atomic(&ctx.layout.schedule_file(), &b));
    if let Err(e) = result {
        tracing::error!("backups: saving the schedule state: {e}");
    }
}

fn local(ms: i64) -> DateTime<Local> {
    Local
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Local::now)
}

/// The scheduled backups of the stacks the host runs now: (stack, backup, cron); and the
/// stacks that could not be read this time (their schedules are neither run nor forgotten).
async fn scheduled(ctx: &Ctx) -> (Vec<(String, String, croner::Cron)>, BTreeSet<String>) {
    let mut out = Vec::new();
    let mut unreadable = BTreeSet::new();
    for stack in ctx.stacks() {
        let loaded = match ctx.stack(&stack.name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("backups: stack {}: {e}", stack.name);
                unreadable.insert(stack.name.clone());
                continue;
            }
        };
        for spec in &loaded.project.backups {
            let Some(text) = &spec.schedule else { continue };
            match noco_compose::backups::parse_schedule(text) {
                Ok(cron) => out.push((stack.name.clone(), spec.name.clone(), cron)),
                Err(e) => tracing::error!("backups: {}/{}: {e}", stack.name, spec.name),
            }
        }
    }
    (out, unreadable)
}

/// Forget the last times of backups no longer declared — but not of those whose stack could
/// not be read this pass (a stack that is briefly unreadable keeps its schedule's history, so its
/// missed times are still reported and it does not start over). Returns whether any went.
fn prune(
    last: &mut BTreeMap<String, i64>,
    declared: &[(String, String)],
    unreadable: &BTreeSet<String>,
) -> bool {
    let before = last.len();
    last.retain(|k, _| {
        declared.iter().any(|(s, n)| *k == format!("{s}/{n}"))
            || k.split_once('/')
                .is_some_and(|(stack, _)| unreadable.contains(stack))
    });
    last.len() != before
}

/// Run the schedules until the task is dropped.
pub async fn run(ctx: Arc<Ctx>) {
    let mut state = load(&ctx);
    let mut desired = ctx.desired.clone();
    loop {
        let now = Local::now();
        let mut next_wake = now + chrono::Duration::from_std(MAX_SLEEP).unwrap_or_default();
        let mut changed = false;
        let (specs, unreadable) = scheduled(&ctx).await;
        for (stack, name, cron) in &specs {
            let key = format!("{stack}/{name}");
            let last_ms = match state.last.get(&key) {
                Some(&ms) => ms,
                None => {
                    // First seen: its schedule starts from now.
                    state.last.insert(key.clone(), now.timestamp_millis());
                    changed = true;
                    now.timestamp_millis()
                }
            };
            match decide(cron, &local(last_ms), &now) {
                None => {}
                Some(Decision::Wait(at)) => next_wake = next_wake.min(at),
                Some(Decision::Run { at, missed }) => {
                    if let Some(m) = missed {
                        report_missed(&ctx, stack, name, &m);
                    }
                    state.last.insert(key.clone(), at.timestamp_millis());
                    changed = true;
                    let ctx = ctx.clone();
                    let req = Request {
                        stack: stack.clone(),
                        name: name.clone(),
                        id: None,
                        trigger: "schedule".into(),
                        triggered_by: String::new(),
                        scheduled_unix_ms: at.timestamp_millis(),
                    };
                    tokio::spawn(async move {
                        let _ = make::make(&ctx, &req, None).await;
                    });
                }
                Some(Decision::Missed(m)) => {
                    state.last.insert(key.clone(), m.last.timestamp_millis());
                    changed = true;
                    report_missed(&ctx, stack, name, &m);
                }
            }
            // The next time of this schedule, from what was just handled.
            if let Some(&handled) = state.last.get(&key)
                && let Ok(next) = cron.find_next_occurrence(&local(handled), false)
            {
                next_wake = next_wake.min(next);
            }
        }
        // Forget backups no longer declared.
        let declared: Vec<(String, String)> = specs
            .iter()
            .map(|(s, n, _)| (s.clone(), n.clone()))
            .collect();
        changed |= prune(&mut state.last, &declared, &unreadable) && !specs.is_empty();
        if changed {
            save(&ctx, &state);
        }
        let sleep = (next_wake - Local::now())
            .to_std()
            .unwrap_or_default()
            .min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(sleep + Duration::from_millis(5)) => {}
            r = desired.changed() => if r.is_err() { return },
        }
    }
}

fn report_missed(ctx: &Ctx, stack: &str, name: &str, m: &Missed) {
    let at = m.last;
    let reason = if m.count == 1 {
        format!(
            "missed: the agent was not running at {} (scheduled)",
            at.to_rfc3339()
        )
    } else {
        format!(
            "missed {} scheduled runs: the agent was not running from {} to {}",
            m.count,
            m.first.to_rfc3339(),
            at.to_rfc3339()
        )
    };
    tracing::warn!("backup {stack}/{name}: {reason}");
    let info = BackupInfo {
        id: format!("{}-missed", make::new_id(stack, name)),
        stack: stack.to_owned(),
        name: name.to_owned(),
        host_id: ctx.host_id.clone(),
        state: BackupState::Missed.into(),
        reason,
        trigger: "schedule".into(),
        scheduled_unix_ms: at.timestamp_millis(),
        started_unix_ms: at.timestamp_millis(),
        finished_unix_ms: now_ms(),
        ..Default::default()
    };
    ctx.report_backup(&info);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn t(d: u32, h: u32, m: u32, sec: u32) -> DateTime<Local> {
        Local.with_ymd_and_hms(2026, 12, d, h, m, sec).unwrap()
    }

    #[test]
    fn a_schedule_waits_runs_on_time_and_reports_what_passed_while_down() {
        let cron = croner::Cron::from_str("0 3 * * *").unwrap();
        let last = t(1, 3, 0, 0);
        // Before the next 03:00: wait for it.
        assert_eq!(
            decide(&cron, &last, &t(1, 12, 0, 0)),
            Some(Decision::Wait(t(2, 3, 0, 0)))
        );
        // Just after it: run for it.
        assert_eq!(
            decide(&cron, &last, &t(2, 3, 0, 30)),
            Some(Decision::Run {
                at: t(2, 3, 0, 0),
                missed: None
            })
        );
        // Down from the 1st to the 4th at noon: three runs missed, the newest on the 4th.
        assert_eq!(
            decide(&cron, &last, &t(4, 12, 0, 0)),
            Some(Decision::Missed(Missed {
                first: t(2, 3, 0, 0),
                last: t(4, 3, 0, 0),
                count: 3
            }))
        );
        // Back just in time for the 4th: the two before are missed, the 4th's runs.
        assert_eq!(
            decide(&cron, &last, &t(4, 3, 1, 0)),
            Some(Decision::Run {
                at: t(4, 3, 0, 0),
                missed: Some(Missed {
                    first: t(2, 3, 0, 0),
                    last: t(3, 3, 0, 0),
                    count: 2
                })
            })
        );
    }

    #[test]
    fn a_stack_that_cannot_be_read_for_a_pass_keeps_its_schedules_last_time() {
        let mut last = BTreeMap::from([
            ("shop/db".to_string(), 1_000),
            ("blog/files".to_string(), 2_000),
            ("gone/db".to_string(), 3_000),
        ]);
        // shop reads, blog cannot be read this pass, gone is no longer run here.
        let declared = vec![("shop".to_string(), "db".to_string())];
        let unreadable = BTreeSet::from(["blog".to_string()]);
        assert!(prune(&mut last, &declared, &unreadable));
        assert_eq!(
            last,
            BTreeMap::from([
                ("shop/db".to_string(), 1_000),
                ("blog/files".to_string(), 2_000),
            ])
        );
        // Nothing to forget: nothing changes.
        assert!(!prune(&mut last, &declared, &unreadable));
    }
}
