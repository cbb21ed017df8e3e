//! How alerts change with what the rules say (pure; time passed in): a condition that holds
//! becomes pending, then fires once it has held for its rule's `for`; a firing alert whose
//! condition no longer holds resolves; an alert the rules can say nothing about now
//! ([`Evaluation::is_frozen`]) keeps its state. An alert is identified by its fingerprint, the
//! hash of its labels, so the same host's same trouble is the same alert across restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::rules::Evaluation;
use crate::store::AlertRecord;

/// The identity of an alert: the first 16 hex digits of the SHA-256 of its labels.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xfe]);
    }
    hex::encode(&h.finalize()[..8])
}

/// A condition that holds, not yet for its rule's `for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub since_ms: i64,
}

/// Apply an evaluation to the alerts held (`alerts`, by fingerprint) and the pending conditions
/// (`pending`, updated in place): the alert records that change — new firing ones (`starts_ms`
/// now), resolved ones (`ends_ms` now), and resolved ones firing again.
pub fn step(
    alerts: &BTreeMap<String, AlertRecord>,
    pending: &mut BTreeMap<String, Pending>,
    eval: &Evaluation,
    for_of: impl Fn(&str) -> Duration,
    now_ms: i64,
) -> Vec<AlertRecord> {
    let mut changed = Vec::new();
    let mut holding = BTreeSet::new();
    for c in &eval.alerts {
        let fp = fingerprint(&c.labels);
        if !holding.insert(fp.clone()) {
            continue;
        }
        if alerts.get(&fp).is_some_and(|a| a.ends_ms.is_none()) {
            continue;
        }
        let since = pending
            .entry(fp.clone())
            .or_insert_with(|| Pending {
                rule: c.rule.to_string(),
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                since_ms: now_ms,
            })
            .since_ms;
        if now_ms - since >= for_of(c.rule).as_millis() as i64 {
            pending.remove(&fp);
            changed.push(AlertRecord {
                fingerprint: fp,
                rule: c.rule.to_string(),
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                starts_ms: now_ms,
                ends_ms: None,
            });
        }
    }
    for a in alerts.values() {
        if a.ends_ms.is_none()
            && !holding.contains(&a.fingerprint)
            && !eval.is_frozen(&a.rule, &a.labels)
        {
            changed.push(AlertRecord {
                ends_ms: Some(now_ms),
                ..a.clone()
            });
        }
    }
    pending.retain(|fp, p| holding.contains(fp) || eval.is_frozen(&p.rule, &p.labels));
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::{Candidate, Frozen};

    fn offline(host: &str) -> Candidate {
        Candidate {
            rule: "host-offline",
            labels: [
                ("alertname".to_string(), "host-offline".to_string()),
                ("host".to_string(), host.to_string()),
            ]
            .into(),
            annotations: BTreeMap::new(),
        }
    }

    fn eval(hosts: &[&str]) -> Evaluation {
        Evaluation {
            alerts: hosts.iter().map(|h| offline(h)).collect(),
            frozen: Vec::new(),
        }
    }

    /// Step and apply the changes, as the service does.
    fn run(
        alerts: &mut BTreeMap<String, AlertRecord>,
        pending: &mut BTreeMap<String, Pending>,
        e: &Evaluation,
        for_ms: u64,
        now: i64,
    ) -> Vec<AlertRecord> {
        let changed = step(alerts, pending, e, |_| Duration::from_millis(for_ms), now);
        for a in &changed {
            alerts.insert(a.fingerprint.clone(), a.clone());
        }
        changed
    }

    #[test]
    fn a_condition_fires_once_it_held_for_its_for_and_resolves_when_it_stops() {
        let (mut alerts, mut pending) = (BTreeMap::new(), BTreeMap::new());
        assert!(run(&mut alerts, &mut pending, &eval(&["web-1"]), 1000, 0).is_empty());
        assert_eq!(pending.len(), 1, "pending");
        assert!(run(&mut alerts, &mut pending, &eval(&["web-1"]), 1000, 500).is_empty());
        let fired = run(&mut alerts, &mut pending, &eval(&["web-1"]), 1000, 1000);
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].starts_ms, fired[0].ends_ms), (1000, None));
        assert!(pending.is_empty());
        assert!(
            run(&mut alerts, &mut pending, &eval(&["web-1"]), 1000, 2000).is_empty(),
            "firing stays firing: no change"
        );
        let resolved = run(&mut alerts, &mut pending, &eval(&[]), 1000, 3000);
        assert_eq!(resolved.len(), 1);
        assert_eq!(
            (resolved[0].starts_ms, resolved[0].ends_ms),
            (1000, Some(3000))
        );
        assert!(run(&mut alerts, &mut pending, &eval(&[]), 1000, 4000).is_empty());
    }

    #[test]
    fn a_condition_that_stops_before_its_for_never_fires() {
        let (mut alerts, mut pending) = (BTreeMap::new(), BTreeMap::new());
        run(&mut alerts, &mut pending, &eval(&["web-1"]), 1000, 0);
        run(&mut alerts, &mut pending, &eval(&[]), 1000, 500);
        assert!(pending.is_empty());
        assert!(run(&mut alerts, &mut pending, &eval(&["web-1"]), 1000, 1000).is_empty());
        assert_eq!(pending.values().next().map(|p| p.since_ms), Some(1000));
    }

    #[test]
    fn a_frozen_alert_keeps_firing_and_keeps_its_start() {
        let (mut alerts, mut pending) = (BTreeMap::new(), BTreeMap::new());
        run(&mut alerts, &mut pending, &eval(&["web-1"]), 0, 100);
        let frozen = Evaluation {
            alerts: Vec::new(),
            frozen: vec![Frozen::Host("host-offline", "web-1".into())],
        };
        assert!(run(&mut alerts, &mut pending, &frozen, 0, 5000).is_empty());
        let a = alerts.values().next().cloned();
        assert_eq!(a.map(|a| (a.starts_ms, a.ends_ms)), Some((100, None)));
    }

    #[test]
    fn a_resolved_alert_that_holds_again_fires_again_from_now() {
        let (mut alerts, mut pending) = (BTreeMap::new(), BTreeMap::new());
        run(&mut alerts, &mut pending, &eval(&["web-1"]), 0, 100);
        run(&mut alerts, &mut pending, &eval(&[]), 0, 200);
        let again = run(&mut alerts, &mut pending, &eval(&["web-1"]), 0, 300);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].starts_ms, again[0].ends_ms), (300, None));
    }

    #[test]
    fn the_fingerprint_is_the_labels_alone() {
        let a = offline("web-1").labels;
        let b = offline("web-1").labels;
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&offline("web-2").labels));
        assert_eq!(fingerprint(&a).len(), 16);
    }
}
