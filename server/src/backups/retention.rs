//! Which backups retention removes: pure, no I/O.
//!
//! restic's `forget` semantics, per group (one backup of one stack on one host), over complete
//! backups only: `keep_last` keeps the newest n; each of `keep_hourly`, `keep_daily`,
//! `keep_weekly` (ISO weeks), `keep_monthly` and `keep_yearly` keeps the newest backup of each of
//! the last n such periods that hold a backup (a period without one does not count); the rules
//! are OR-ed. Periods are read in **UTC** (the server's own time zone would make the same
//! catalog keep different backups on differently configured servers). An empty policy keeps the
//! last [`noco_compose::backups::DEFAULT_KEEP_LAST`]. The newest complete backup is always kept
//! (so never the only one). Unlike newer restic, the oldest backup is not kept in addition when
//! a rule has periods left over.
//!
//! Failed and missed records hold no archive: the newest [`KEEP_FAILED`] of a group are kept,
//! older ones go. Running and pending-upload ones are never touched.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Timelike, Utc};
use noco_compose::backups::Retention;
use noco_proto::v1 as pb;

/// Failed and missed records kept per group.
pub const KEEP_FAILED: usize = 50;

/// When a backup was made, for retention and ordering: its start, else its end, else the time
/// it was scheduled for.
pub fn time_of(b: &pb::BackupInfo) -> i64 {
    [b.started_unix_ms, b.finished_unix_ms, b.scheduled_unix_ms]
        .into_iter()
        .find(|t| *t != 0)
        .unwrap_or(0)
}

/// Newest first (by time, then id).
pub fn newest_first(a: &pb::BackupInfo, b: &pb::BackupInfo) -> std::cmp::Ordering {
    time_of(b).cmp(&time_of(a)).then_with(|| b.id.cmp(&a.id))
}

type Bucket = fn(DateTime<Utc>, usize) -> i64;

/// The ids `policy` (the policy in effect: see [`Retention::effective`]) keeps of complete
/// backups given as `(id, time ms)`.
pub fn keep(policy: &Retention, backups: &[(String, i64)]) -> BTreeSet<String> {
    let mut sorted: Vec<&(String, i64)> = backups.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut rules: Vec<(u32, Bucket, Option<i64>)> = vec![
        (policy.keep_last, |_, nr| nr as i64, None),
        (
            policy.keep_hourly,
            |t, _| {
                i64::from(t.year()) * 1_000_000
                    + i64::from(t.month()) * 10_000
                    + i64::from(t.day()) * 100
                    + i64::from(t.hour())
            },
            None,
        ),
        (
            policy.keep_daily,
            |t, _| i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day()),
            None,
        ),
        (
            policy.keep_weekly,
            |t, _| {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            },
            None,
        ),
        (
            policy.keep_monthly,
            |t, _| i64::from(t.year()) * 100 + i64::from(t.month()),
            None,
        ),
        (policy.keep_yearly, |t, _| i64::from(t.year()), None),
    ];
    let mut kept = BTreeSet::new();
    for (nr, (id, ms)) in sorted.iter().enumerate() {
        let time = DateTime::<Utc>::from_timestamp_millis(*ms).unwrap_or_default();
        for (left, bucket, last) in rules.iter_mut() {
            if *left == 0 {
                continue;
            }
            let b = bucket(time, nr);
            if *last != Some(b) {
                *last = Some(b);
                *left -= 1;
                kept.insert(id.clone());
            }
        }
    }
    if let Some((newest, _)) = sorted.first() {
        kept.insert(newest.clone());
    }
    kept
}

/// What retention removes from one group's records: complete backups `policy` does not keep
/// (none when the policy is unknown: `None`), and failed or missed records past the newest
/// [`KEEP_FAILED`]. Newest first.
pub fn expired(group: &[pb::BackupInfo], policy: Option<&Retention>) -> Vec<String> {
    let mut sorted: Vec<&pb::BackupInfo> = group.iter().collect();
    sorted.sort_by(|a, b| newest_first(a, b));
    let complete: Vec<(String, i64)> = sorted
        .iter()
        .filter(|b| b.state() == pb::BackupState::Complete)
        .map(|b| (b.id.clone(), time_of(b)))
        .collect();
    let mut out = Vec::new();
    if let Some(policy) = policy {
        let kept = keep(&policy.effective(), &complete);
        out.extend(
            complete
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| !kept.contains(id)),
        );
    }
    out.extend(
        sorted
            .iter()
            .filter(|b| matches!(b.state(), pb::BackupState::Failed | pb::BackupState::Missed))
            .skip(KEEP_FAILED)
            .map(|b| b.id.clone()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    /// Monday 2024-01-01 00:00 UTC.
    const JAN_1: i64 = 1_704_067_200_000;

    fn id_at(ms: i64) -> String {
        let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
        format!("shop.db.{}.00000000", t.format("%Y%m%dT%H%M%SZ"))
    }

    fn every(step: i64, count: i64) -> Vec<(String, i64)> {
        (0..count)
            .map(|i| (id_at(JAN_1 + i * step), JAN_1 + i * step))
            .collect()
    }

    fn ids(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    /// One backup every 6 hours for the 31 days of January 2024 (124 backups), with
    /// {keep_last: 3, keep_daily: 7, keep_weekly: 4}. By hand: the last 3 are Jan 31 at 18, 12
    /// and 06; the newest of each of the last 7 days is 18:00 of Jan 25 to 31; the ISO weeks are
    /// Jan 1–7, 8–14, 15–21, 22–28 and 29–31, the newest of each of the last 4 being 18:00 of
    /// Jan 31, 28, 21 and 14. Together 11 backups.
    #[test]
    fn a_simulated_month_keeps_exactly_what_the_policy_says() {
        let all = every(6 * HOUR, 31 * 4);
        assert_eq!(all.len(), 124);
        let policy = Retention {
            keep_last: 3,
            keep_daily: 7,
            keep_weekly: 4,
            ..Retention::default()
        };
        let kept = keep(&policy, &all);
        assert_eq!(
            ids(&kept),
            [
                "shop.db.20240114T180000Z.00000000",
                "shop.db.20240121T180000Z.00000000",
                "shop.db.20240125T180000Z.00000000",
                "shop.db.20240126T180000Z.00000000",
                "shop.db.20240127T180000Z.00000000",
                "shop.db.20240128T180000Z.00000000",
                "shop.db.20240129T180000Z.00000000",
                "shop.db.20240130T180000Z.00000000",
                "shop.db.20240131T060000Z.00000000",
                "shop.db.20240131T120000Z.00000000",
                "shop.db.20240131T180000Z.00000000",
            ]
        );
        // Applied after each backup of the month (as the server does), the end is the same.
        let mut held: Vec<(String, i64)> = Vec::new();
        for b in &all {
            held.push(b.clone());
            let k = keep(&policy, &held);
            held.retain(|(id, _)| k.contains(id));
        }
        let mut end: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
        end.sort();
        assert_eq!(end, ids(&kept));
    }

    #[test]
    fn periods_without_a_backup_do_not_count() {
        // Daily backups on Jan 1, 2, 10 and 20 only: keep_daily 3 keeps the last three days
        // that hold one, however far apart.
        let days = [0, 1, 9, 19];
        let all: Vec<(String, i64)> = days
            .iter()
            .map(|d| (id_at(JAN_1 + d * 24 * HOUR), JAN_1 + d * 24 * HOUR))
            .collect();
        let policy = Retention {
            keep_daily: 3,
            ..Retention::default()
        };
        let kept = keep(&policy, &all);
        assert_eq!(
            ids(&kept),
            [
                "shop.db.20240102T000000Z.00000000",
                "shop.db.20240110T000000Z.00000000",
                "shop.db.20240120T000000Z.00000000",
            ]
        );
        // Monthly and yearly over three years of monthly backups.
        let months: Vec<(String, i64)> = (0..36)
            .map(|m| {
                let t = chrono::NaiveDate::from_ymd_opt(2021 + m / 12, (m % 12 + 1) as u32, 15)
                    .unwrap()
                    .and_hms_opt(3, 0, 0)
                    .unwrap()
                    .and_utc()
                    .timestamp_millis();
                (id_at(t), t)
            })
            .collect();
        let policy = Retention {
            keep_monthly: 2,
            keep_yearly: 3,
            ..Retention::default()
        };
        assert_eq!(
            ids(&keep(&policy, &months)),
            [
                "shop.db.20211215T030000Z.00000000",
                "shop.db.20221215T030000Z.00000000",
                "shop.db.20231115T030000Z.00000000",
                "shop.db.20231215T030000Z.00000000",
            ]
        );
        // Hourly: two backups in one hour count once.
        let hours = vec![
            (id_at(JAN_1), JAN_1),
            (id_at(JAN_1 + HOUR + 60_000), JAN_1 + HOUR + 60_000),
            (id_at(JAN_1 + HOUR + 120_000), JAN_1 + HOUR + 120_000),
        ];
        let policy = Retention {
            keep_hourly: 2,
            ..Retention::default()
        };
        assert_eq!(
            ids(&keep(&policy, &hours)),
            [
                "shop.db.20240101T000000Z.00000000",
                "shop.db.20240101T010200Z.00000000",
            ]
        );
    }

    fn info(id: &str, state: pb::BackupState, time: i64) -> pb::BackupInfo {
        pb::BackupInfo {
            id: id.into(),
            state: state.into(),
            started_unix_ms: time,
            ..Default::default()
        }
    }

    #[test]
    fn the_only_backup_is_never_removed() {
        let one = vec![(id_at(JAN_1), JAN_1)];
        for policy in [
            Retention::default().effective(),
            Retention {
                keep_weekly: 1,
                ..Retention::default()
            },
        ] {
            assert_eq!(keep(&policy, &one).len(), 1);
        }
        let group = vec![info("a", pb::BackupState::Complete, JAN_1)];
        assert!(expired(&group, Some(&Retention::default())).is_empty());
    }

    #[test]
    fn an_empty_policy_keeps_the_last_seven() {
        let group: Vec<pb::BackupInfo> = (0..10)
            .map(|i| {
                info(
                    &format!("b{i}"),
                    pb::BackupState::Complete,
                    JAN_1 + i * HOUR,
                )
            })
            .collect();
        let gone = expired(&group, Some(&Retention::default()));
        assert_eq!(gone, ["b2", "b1", "b0"]);
        assert!(
            expired(&group, None).is_empty(),
            "an unknown policy removes nothing"
        );
    }

    #[test]
    fn failed_records_are_not_backups_and_only_the_newest_fifty_stay() {
        // All failed: retention keeps every archive it does not have, and trims the records.
        let mut group: Vec<pb::BackupInfo> = (0..60)
            .map(|i| {
                let state = if i % 2 == 0 {
                    pb::BackupState::Failed
                } else {
                    pb::BackupState::Missed
                };
                info(&format!("f{i:02}"), state, JAN_1 + i * HOUR)
            })
            .collect();
        let gone = expired(&group, Some(&Retention::default()));
        let want: Vec<String> = (0..10).rev().map(|i| format!("f{i:02}")).collect();
        assert_eq!(gone, want);
        // A complete backup older than every failure is the newest complete one: it stays,
        // and the failures do not push it out; running and pending ones are never touched.
        group.push(info("old", pb::BackupState::Complete, JAN_1 - HOUR));
        group.push(info("run", pb::BackupState::Running, JAN_1 - 2 * HOUR));
        group.push(info(
            "pend",
            pb::BackupState::PendingUpload,
            JAN_1 - 3 * HOUR,
        ));
        let policy = Retention {
            keep_last: 1,
            ..Retention::default()
        };
        assert_eq!(expired(&group, Some(&policy)), want);
    }
}
