//! What agents report, in memory: the latest report of every host with when it arrived, and
//! since when each host × stack has been continuously healthy on its revision (rollouts gate on
//! it). Agents report again when they reconnect, so nothing here is persisted. Whoever waits for
//! reports (the rollout driver) is woken by [`Reports::changed`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use noco_proto::health;
use noco_proto::v1 as pb;

use crate::clock::Clock;
use crate::machines::rollout::HostReport;

#[derive(Debug, Default)]
struct Inner {
    latest: HashMap<String, (pb::StateReport, i64)>,
    /// host → stack → (revision, healthy since). By host first: a report touches only its
    /// own host's entries (scanning every host's on every report made 10,000 reports cost
    /// 10⁸ comparisons).
    healthy_since: HashMap<String, HashMap<String, (String, i64)>>,
}

#[derive(Debug)]
pub struct Reports {
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
    clock: Arc<dyn Clock>,
}

impl Reports {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Reports {
            inner: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a host's new report.
    pub fn record(&self, host_id: &str, report: pb::StateReport) {
        if !report.refused.is_empty() {
            tracing::warn!(
                host = host_id,
                generation = report.refused_generation,
                "agent refused its desired state: {}",
                report.refused
            );
        }
        for s in report.stacks.iter().filter(|s| health::stack_failed(s)) {
            tracing::warn!(host = host_id, stack = %s.name, "stack {}: {}", s.state, s.error);
        }
        let now = self.clock.now_ms();
        {
            let mut inner = self.lock();
            let since = inner.healthy_since.entry(host_id.to_string()).or_default();
            for s in &report.stacks {
                if !health::stack_healthy(s) {
                    since.remove(&s.name);
                } else if since.get(&s.name).is_none_or(|(rev, _)| *rev != s.revision) {
                    since.insert(s.name.clone(), (s.revision.clone(), now));
                }
            }
            since.retain(|stack, _| report.stacks.iter().any(|s| &s.name == stack));
            inner.latest.insert(host_id.to_string(), (report, now));
        }
        self.wake.notify_one();
    }

    /// A host's latest report and when it arrived.
    pub fn latest(&self, host_id: &str) -> Option<(pb::StateReport, i64)> {
        self.lock().latest.get(host_id).cloned()
    }

    /// Call `f` with every host's latest report (under the lock: `f` must be quick).
    pub fn each_latest(&self, mut f: impl FnMut(&str, &pb::StateReport)) {
        for (host_id, (report, _)) in &self.lock().latest {
            f(host_id, report);
        }
    }

    /// What a host reports about a stack, as the rollout state machine reads it.
    pub fn host_report(&self, host_id: &str, stack: &str) -> Option<HostReport> {
        let inner = self.lock();
        let (report, _) = inner.latest.get(host_id)?;
        let s = report.stacks.iter().find(|s| s.name == stack)?;
        let healthy_since = inner
            .healthy_since
            .get(host_id)
            .and_then(|stacks| stacks.get(stack))
            .filter(|(rev, _)| *rev == s.revision)
            .map(|(_, since)| *since);
        Some(HostReport {
            revision: Some(s.revision.clone()),
            healthy_since,
            failure: health::stack_failed(s).then(|| s.error.clone()),
            offline: false,
            backup: None,
        })
    }

    /// Whether a host reports `stack` at `revision` healthy ([`health::stack_healthy`]).
    pub fn healthy(&self, host_id: &str, stack: &str, revision: &str) -> bool {
        self.lock().latest.get(host_id).is_some_and(|(r, _)| {
            r.stacks
                .iter()
                .any(|s| s.name == stack && s.revision == revision && health::stack_healthy(s))
        })
    }

    /// Resolves at the next report (or at once if one came since the last wait).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use pb::ApplyState::{Converged, Failed};
    use pb::Health::{Healthy, Starting, Unspecified};

    fn report(state: pb::ApplyState, health: pb::Health, running: u32) -> pb::StateReport {
        pb::StateReport {
            generation: 1,
            stacks: vec![pb::StackReport {
                name: "shop".into(),
                revision: "r1".into(),
                state: state.into(),
                services: vec![pb::ServiceReport {
                    name: "web".into(),
                    running,
                    desired: 1,
                    health: health.into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn healthy_since_starts_at_the_first_healthy_report_and_ends_at_the_first_unhealthy_one() {
        let clock = Arc::new(ManualClock::at_ms(1_000));
        let reports = Reports::new(clock.clone());
        reports.record("h1", report(Converged, Healthy, 1));
        clock.advance_ms(500);
        reports.record("h1", report(Converged, Healthy, 1));
        let r = reports.host_report("h1", "shop").unwrap();
        assert_eq!(r.healthy_since, Some(1_000));
        assert!(reports.healthy("h1", "shop", "r1"));
        reports.record("h1", report(Converged, Starting, 1));
        assert_eq!(
            reports.host_report("h1", "shop").unwrap().healthy_since,
            None
        );
        assert!(!reports.healthy("h1", "shop", "r1"));
    }

    #[test]
    fn a_service_without_a_report_of_health_is_not_healthy() {
        let reports = Reports::new(Arc::new(ManualClock::at_ms(0)));
        reports.record("h1", report(Converged, Unspecified, 1));
        assert!(!reports.healthy("h1", "shop", "r1"));
        reports.record("h1", report(Converged, pb::Health::None, 0));
        assert!(!reports.healthy("h1", "shop", "r1"), "0 of 1 running");
        reports.record("h1", report(Failed, pb::Health::None, 1));
        assert!(reports.host_report("h1", "shop").unwrap().failure.is_some());
    }
}
