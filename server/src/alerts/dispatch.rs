//! Grouping and de-duplication, as Alertmanager does them (pure; time passed in).
//!
//! Per receiver, alerts are grouped by the `group_by` labels (default `alertname`). A group's
//! notification log ([`NotifyLogRecord`]) holds what the receiver was last told fires. When a
//! group is flushed (`group_wait` after it appeared, then every `group_interval`), a
//! notification is queued only when the receiver would learn something: an alert fires that it
//! was not told of, an alert it was told fires has resolved (with `send_resolved`), or the group
//! still fires and `repeat_interval` has passed since the last one. Silenced alerts are left out
//! of everything, their resolution too. The new log entry is written with the queued
//! notification in one transaction, so a notification is never queued twice, and a restarted
//! server (whose groups start over) sends nothing the log says was sent.
//!
//! A resolved alert stays in a group (and in the store) until every receiver that was told it
//! fires has flushed its group since: [`retired`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::config::Receiver;
use crate::store::{AlertRecord, NotifiedAlert, NotifyLogRecord, OutboxRecord};

/// The labels of `alert` its group is keyed by.
pub fn group_labels(alert: &AlertRecord, group_by: &[String]) -> BTreeMap<String, String> {
    group_by
        .iter()
        .filter_map(|k| alert.labels.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

/// A group's key as Alertmanager writes it: `{}:{alertname="host-offline"}`.
pub fn group_key(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}:{{{}}}", inner.join(","))
}

/// One value for what a notification says fires and resolved.
pub fn hash(firing: &[String], resolved: &[String]) -> String {
    let mut h = Sha256::new();
    for fp in firing {
        h.update(b"f");
        h.update(fp.as_bytes());
    }
    for fp in resolved {
        h.update(b"r");
        h.update(fp.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The alerts of one receiver's group.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub receiver: &'a Receiver,
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub alerts: Vec<&'a AlertRecord>,
}

/// The groups of every receiver: each receiver's firing alerts, and the resolved ones it was
/// told fire, grouped. `log` is keyed by (receiver, group key).
pub fn groups<'a>(
    receivers: &'a [Receiver],
    alerts: impl IntoIterator<Item = &'a AlertRecord> + Clone,
    group_by: &[String],
    log: &BTreeMap<(String, String), NotifyLogRecord>,
) -> Vec<Group<'a>> {
    let mut out: BTreeMap<(String, String), Group<'a>> = BTreeMap::new();
    for r in receivers {
        for a in alerts.clone() {
            if !r.wants(&a.rule) {
                continue;
            }
            let labels = group_labels(a, group_by);
            let key = group_key(&labels);
            let told = |fp: &str| {
                log.get(&(r.name.clone(), key.clone()))
                    .is_some_and(|l| l.firing.iter().any(|f| f == fp))
            };
            if a.ends_ms.is_some() && !told(&a.fingerprint) {
                continue;
            }
            out.entry((r.name.clone(), key.clone()))
                .or_insert_with(|| Group {
                    receiver: r,
                    key,
                    labels,
                    alerts: Vec::new(),
                })
                .alerts
                .push(a);
        }
    }
    out.into_values().collect()
}

/// What flushing a group decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flush {
    /// The notification to queue, if the receiver learns something.
    pub notification: Option<OutboxRecord>,
    /// The group's new log entry (`None`: remove it: the receiver is told nothing fires).
    pub log: Option<NotifyLogRecord>,
}

/// Flush a group: see the module's documentation.
pub fn flush(
    group: &Group<'_>,
    silenced: &dyn Fn(&AlertRecord) -> bool,
    log: Option<&NotifyLogRecord>,
    repeat_interval: Duration,
    now_ms: i64,
) -> Flush {
    let told: BTreeSet<&str> = log
        .map(|l| l.firing.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut firing: Vec<&AlertRecord> = group
        .alerts
        .iter()
        .copied()
        .filter(|a| a.ends_ms.is_none() && !silenced(a))
        .collect();
    // People read them in the order of their labels (`web-1` before `web-2`).
    firing.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut resolved: Vec<&AlertRecord> = if group.receiver.send_resolved {
        group
            .alerts
            .iter()
            .copied()
            .filter(|a| {
                a.ends_ms.is_some() && told.contains(a.fingerprint.as_str()) && !silenced(a)
            })
            .collect()
    } else {
        Vec::new()
    };
    resolved.sort_by(|a, b| a.labels.cmp(&b.labels));
    let fps = |alerts: &[&AlertRecord]| {
        let mut fps: Vec<String> = alerts.iter().map(|a| a.fingerprint.clone()).collect();
        fps.sort();
        fps
    };
    let firing_fps = fps(&firing);
    let resolved_fps = fps(&resolved);
    let send = match log {
        None => !firing.is_empty(),
        Some(l) => {
            let news = firing_fps.iter().any(|fp| !told.contains(fp.as_str()));
            let repeat =
                !firing.is_empty() && now_ms - l.sent_ms >= repeat_interval.as_millis() as i64;
            news || !resolved.is_empty() || repeat
        }
    };
    let hash = hash(&firing_fps, &resolved_fps);
    let notification = send.then(|| {
        let notified = |a: &AlertRecord, status: &str| NotifiedAlert {
            fingerprint: a.fingerprint.clone(),
            status: status.to_string(),
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_ms: a.starts_ms,
            ends_ms: a.ends_ms,
        };
        let alerts: Vec<NotifiedAlert> = firing
            .iter()
            .map(|a| notified(a, "firing"))
            .chain(resolved.iter().map(|a| notified(a, "resolved")))
            .collect();
        let mut key = Sha256::new();
        for part in [&group.receiver.name, &group.key, &hash] {
            key.update(part.as_bytes());
            key.update([0]);
        }
        key.update(now_ms.to_be_bytes());
        OutboxRecord {
            key: hex::encode(&key.finalize()[..16]),
            receiver: group.receiver.name.clone(),
            group_key: group.key.clone(),
            group_labels: group.labels.clone(),
            status: if firing.is_empty() {
                "resolved".to_string()
            } else {
                "firing".to_string()
            },
            alerts,
            created_ms: now_ms,
        }
    });
    let log = if firing.is_empty() {
        None
    } else {
        Some(NotifyLogRecord {
            receiver: group.receiver.name.clone(),
            group_key: group.key.clone(),
            firing: firing_fps,
            resolved: resolved_fps,
            hash,
            sent_ms: if send {
                now_ms
            } else {
                log.map_or(now_ms, |l| l.sent_ms)
            },
        })
    };
    Flush { notification, log }
}

/// Whether a resolved alert can be forgotten: no receiver that gets its rule is still told it
/// fires.
pub fn retired(
    alert: &AlertRecord,
    receivers: &[Receiver],
    group_by: &[String],
    log: &BTreeMap<(String, String), NotifyLogRecord>,
) -> bool {
    if alert.ends_ms.is_none() {
        return false;
    }
    let key = group_key(&group_labels(alert, group_by));
    receivers.iter().filter(|r| r.wants(&alert.rule)).all(|r| {
        log.get(&(r.name.clone(), key.clone()))
            .is_none_or(|l| !l.firing.contains(&alert.fingerprint))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::Format;

    fn receiver(name: &str, rules: &[&str], send_resolved: bool) -> Receiver {
        Receiver {
            name: name.into(),
            url: url::Url::parse("http://127.0.0.1:9/hook").unwrap_or_else(|e| panic!("{e}")),
            format: Format::Json,
            rules: rules.iter().map(|r| r.to_string()).collect(),
            headers: BTreeMap::new(),
            send_resolved,
            timeout: Duration::from_secs(1),
        }
    }

    fn alert(rule: &str, host: &str, starts_ms: i64, ends_ms: Option<i64>) -> AlertRecord {
        let labels: BTreeMap<String, String> = [("alertname", rule), ("host", host)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AlertRecord {
            fingerprint: crate::alerts::state::fingerprint(&labels),
            rule: rule.into(),
            labels,
            annotations: BTreeMap::new(),
            starts_ms,
            ends_ms,
        }
    }

    const REPEAT: Duration = Duration::from_secs(3600);
    fn by_name() -> Vec<String> {
        vec!["alertname".to_string()]
    }

    /// Flush every group of `alerts` at `now`, applying the log changes; the notifications.
    fn flush_all(
        receivers: &[Receiver],
        alerts: &[AlertRecord],
        log: &mut BTreeMap<(String, String), NotifyLogRecord>,
        silenced: &dyn Fn(&AlertRecord) -> bool,
        now: i64,
    ) -> Vec<OutboxRecord> {
        let gs = groups(receivers, alerts, &by_name(), log);
        let mut out = Vec::new();
        let mut changes = Vec::new();
        for g in &gs {
            let key = (g.receiver.name.clone(), g.key.clone());
            let f = flush(g, silenced, log.get(&key), REPEAT, now);
            out.extend(f.notification);
            changes.push((key, f.log));
        }
        for (key, l) in changes {
            match l {
                Some(l) => log.insert(key, l),
                None => log.remove(&key),
            };
        }
        out
    }

    fn summary(n: &OutboxRecord) -> (String, Vec<(String, String)>) {
        (
            n.status.clone(),
            n.alerts
                .iter()
                .map(|a| (a.labels["host"].clone(), a.status.clone()))
                .collect(),
        )
    }

    #[test]
    fn alerts_group_by_receiver_and_alertname() {
        let receivers = [
            receiver("ops", &[], true),
            receiver("pager", &["host-offline"], true),
        ];
        let alerts = [
            alert("host-offline", "web-1", 1, None),
            alert("host-offline", "web-2", 1, None),
            alert("host-disk", "web-1", 1, None),
        ];
        let gs = groups(&receivers, &alerts, &by_name(), &BTreeMap::new());
        let keys: Vec<(String, String, usize)> = gs
            .iter()
            .map(|g| (g.receiver.name.clone(), g.key.clone(), g.alerts.len()))
            .collect();
        assert_eq!(
            keys,
            [
                ("ops".into(), "{}:{alertname=\"host-disk\"}".into(), 1),
                ("ops".into(), "{}:{alertname=\"host-offline\"}".into(), 2),
                ("pager".into(), "{}:{alertname=\"host-offline\"}".into(), 2),
            ]
        );
    }

    #[test]
    fn a_group_is_notified_once_per_change_and_then_only_on_repeat() {
        let receivers = [receiver("ops", &[], true)];
        let mut log = BTreeMap::new();
        let none = |_: &AlertRecord| false;
        let mut alerts = vec![alert("host-offline", "web-1", 10, None)];
        let sent = flush_all(&receivers, &alerts, &mut log, &none, 100);
        assert_eq!(
            sent.iter().map(summary).collect::<Vec<_>>(),
            [("firing".into(), vec![("web-1".into(), "firing".into())])]
        );
        assert!(
            flush_all(&receivers, &alerts, &mut log, &none, 200).is_empty(),
            "nothing new: nothing sent"
        );
        alerts.push(alert("host-offline", "web-2", 150, None));
        let sent = flush_all(&receivers, &alerts, &mut log, &none, 300);
        assert_eq!(
            sent.iter().map(summary).collect::<Vec<_>>(),
            [(
                "firing".into(),
                vec![
                    ("web-1".into(), "firing".into()),
                    ("web-2".into(), "firing".into())
                ]
            )]
        );
        let repeat = 300 + REPEAT.as_millis() as i64;
        assert!(flush_all(&receivers, &alerts, &mut log, &none, repeat - 1).is_empty());
        assert_eq!(
            flush_all(&receivers, &alerts, &mut log, &none, repeat).len(),
            1,
            "repeat_interval passed: sent again"
        );
    }

    #[test]
    fn a_resolution_is_sent_once_to_whoever_was_told_it_fired_and_then_the_alert_retires() {
        let receivers = [receiver("ops", &[], true), receiver("quiet", &[], false)];
        let mut log = BTreeMap::new();
        let none = |_: &AlertRecord| false;
        let firing = alert("host-offline", "web-1", 10, None);
        flush_all(
            &receivers,
            std::slice::from_ref(&firing),
            &mut log,
            &none,
            100,
        );
        let resolved = AlertRecord {
            ends_ms: Some(150),
            ..firing.clone()
        };
        assert!(!retired(&resolved, &receivers, &by_name(), &log));
        let sent = flush_all(
            &receivers,
            std::slice::from_ref(&resolved),
            &mut log,
            &none,
            200,
        );
        assert_eq!(
            sent.iter()
                .map(|n| (n.receiver.clone(), summary(n)))
                .collect::<Vec<_>>(),
            [(
                "ops".into(),
                ("resolved".into(), vec![("web-1".into(), "resolved".into())])
            )]
        );
        assert!(retired(&resolved, &receivers, &by_name(), &log));
        assert!(log.is_empty(), "nothing fires: the log entries go");
        assert!(
            flush_all(
                &receivers,
                std::slice::from_ref(&resolved),
                &mut log,
                &none,
                300
            )
            .is_empty()
        );
    }

    #[test]
    fn an_alert_that_resolves_before_its_group_is_flushed_sends_nothing() {
        let receivers = [receiver("ops", &[], true)];
        let resolved = alert("host-offline", "web-1", 10, Some(20));
        assert!(retired(&resolved, &receivers, &by_name(), &BTreeMap::new()));
        let mut log = BTreeMap::new();
        assert!(flush_all(&receivers, &[resolved], &mut log, &|_| false, 100).is_empty());
    }

    #[test]
    fn a_silenced_alert_sends_nothing_and_fires_again_when_the_silence_ends() {
        let receivers = [receiver("ops", &[], true)];
        let mut log = BTreeMap::new();
        let alerts = [alert("host-offline", "web-1", 10, None)];
        let all = |_: &AlertRecord| true;
        assert!(flush_all(&receivers, &alerts, &mut log, &all, 100).is_empty());
        let sent = flush_all(&receivers, &alerts, &mut log, &|_| false, 200);
        assert_eq!(
            sent.len(),
            1,
            "the silence ended: the receiver learns it fires"
        );
        // Silenced while told it fires: its resolution is not sent either.
        let resolved = [AlertRecord {
            ends_ms: Some(250),
            ..alerts[0].clone()
        }];
        assert!(flush_all(&receivers, &resolved, &mut log, &all, 300).is_empty());
        assert!(retired(&resolved[0], &receivers, &by_name(), &log));
    }

    #[test]
    fn the_outbox_key_differs_per_notification_and_the_group_key_is_alertmanager_s() {
        let receivers = [receiver("ops", &[], true)];
        let mut log = BTreeMap::new();
        let alerts = [alert("host-offline", "web-1", 10, None)];
        let a = flush_all(&receivers, &alerts, &mut log, &|_| false, 100);
        let b = flush_all(
            &receivers,
            &alerts,
            &mut log,
            &|_| false,
            100 + REPEAT.as_millis() as i64,
        );
        assert_eq!(a[0].group_key, "{}:{alertname=\"host-offline\"}");
        assert_ne!(a[0].key, b[0].key);
        assert_eq!(a[0].key.len(), 32);
    }
}
