//! What the agent tells the server about its stacks: [`Status`] is the live picture (shared
//! between the applier, which updates it, and the session, which sends it), and the functions
//! here turn observed containers into per-service reports.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use noco_compose::model::Project;
use noco_compose::plan::{Health, ObservedContainer, RunState};
use noco_proto::v1 as pb;
use prost::Message;

pub const APPLYING: pb::ApplyState = pb::ApplyState::Applying;
pub const CONVERGED: pb::ApplyState = pb::ApplyState::Converged;
pub const FAILED: pb::ApplyState = pb::ApplyState::Failed;
pub const REFUSED: pb::ApplyState = pb::ApplyState::Refused;

/// The agent's picture of what it runs, from which every [`pb::StateReport`] is made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// The generation whose apply pass last completed (every stack attempted).
    pub generation: u64,
    /// The last refused state, until a state is accepted: why, and its generation (0 if the
    /// payload did not decode).
    pub refused: Option<(String, u64)>,
    /// By stack name.
    pub stacks: BTreeMap<String, pb::StackReport>,
}

impl Status {
    /// The report to send now; `stale` comes from the state store.
    pub fn report(&self, stale: bool, now_ms: i64) -> pb::StateReport {
        let (refused, refused_generation) = self.refused.clone().unwrap_or_default();
        pb::StateReport {
            generation: self.generation,
            refused,
            refused_generation,
            stale,
            stacks: self.stacks.values().cloned().collect(),
            sent_unix_ms: now_ms,
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The generation a refused payload claims, for the report only (0 if it does not decode).
pub fn claimed_generation(payload: &[u8]) -> u64 {
    pb::DesiredState::decode(payload)
        .map(|s| s.generation)
        .unwrap_or(0)
}

/// Whether two stack reports say the same thing (the apply time aside).
pub fn same(a: &pb::StackReport, b: &pb::StackReport) -> bool {
    a.name == b.name
        && a.revision == b.revision
        && a.state == b.state
        && a.error == b.error
        && a.services == b.services
}

/// The health of a service from its containers: any unhealthy → unhealthy, any starting →
/// starting, every one healthy → healthy, otherwise (no healthcheck, or none running) none.
pub fn health<'a>(containers: impl IntoIterator<Item = &'a ObservedContainer>) -> pb::Health {
    let mut any = false;
    let mut all_healthy = true;
    let mut starting = false;
    for c in containers {
        if !c.state.is_running() {
            continue;
        }
        any = true;
        match c.health {
            Some(Health::Unhealthy) => return pb::Health::Unhealthy,
            Some(Health::Starting) => starting = true,
            Some(Health::Healthy) => {}
            None => all_healthy = false,
        }
    }
    if starting {
        pb::Health::Starting
    } else if any && all_healthy {
        pb::Health::Healthy
    } else {
        pb::Health::None
    }
}

/// Per-service reports: every service of the project (desired = its replicas) and any other
/// service that still has containers (desired 0). They say what the planner and the applier
/// say: `running` counts the containers in the state their service wants — running, or for a
/// one-shot ([`Project::is_one_shot`]) exited 0 — so a stopped container (being started again)
/// is not counted, and a completed one-shot is. `health` is "none" only for a service without
/// a healthcheck: one with a healthcheck and fewer such containers than desired is at best
/// "starting".
pub fn services(
    project: Option<&Project>,
    observed: &[ObservedContainer],
) -> Vec<pb::ServiceReport> {
    let mut desired: BTreeMap<&str, u32> = BTreeMap::new();
    if let Some(p) = project {
        for (name, svc) in &p.services {
            desired.insert(name, svc.deploy.replicas);
        }
    }
    for c in observed {
        desired.entry(c.service.as_str()).or_insert(0);
    }
    desired
        .into_iter()
        .map(|(name, want)| {
            let mine: Vec<&ObservedContainer> =
                observed.iter().filter(|c| c.service == name).collect();
            let one_shot = project.is_some_and(|p| p.is_one_shot(name));
            let running = mine
                .iter()
                .filter(|c| c.state.is_running() || (one_shot && c.state == RunState::Exited(0)))
                .count() as u32;
            let checked = project
                .and_then(|p| p.services.get(name))
                .is_some_and(|s| s.has_healthcheck());
            let health = match health(mine.iter().copied()) {
                pb::Health::Healthy | pb::Health::None
                    if checked && !one_shot && running < want =>
                {
                    pb::Health::Starting
                }
                h => h,
            };
            pb::ServiceReport {
                name: name.to_string(),
                running,
                desired: want,
                health: health.into(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use noco_proto::Enumeration;

    fn c(service: &str, state: RunState, health: Option<Health>) -> ObservedContainer {
        ObservedContainer {
            id: format!("{service}-id"),
            name: format!("p-{service}-1"),
            service: service.into(),
            number: 1,
            config_hash: None,
            image: None,
            state,
            health,
        }
    }

    #[test]
    fn health_is_the_worst_of_the_running_containers() {
        use Health::*;
        use RunState::*;
        assert_eq!(
            health(&[c("a", Running, Some(Healthy))]).to_string(),
            "healthy"
        );
        assert_eq!(
            health(&[
                c("a", Running, Some(Healthy)),
                c("a", Running, Some(Unhealthy))
            ]),
            pb::Health::Unhealthy
        );
        assert_eq!(
            health(&[
                c("a", Running, Some(Healthy)),
                c("a", Running, Some(Starting))
            ]),
            pb::Health::Starting
        );
        assert_eq!(health(&[c("a", Running, None)]).to_string(), "none");
        assert_eq!(
            health(&[c("a", Exited(0), Some(Healthy))]).to_string(),
            "none"
        );
        assert_eq!(health(&[]).to_string(), "none");
    }

    fn project(yaml: &str) -> Project {
        let vars = BTreeMap::new();
        let opts = noco_compose::LoadOptions {
            project_name: Some("p"),
            variables: &vars,
            files: &noco_compose::NoFiles,
            profiles: &[],
            directory: None,
        };
        noco_compose::load(yaml, &opts).unwrap().project
    }

    #[test]
    fn services_report_running_against_desired() {
        let project = project(
            "services:\n  web:\n    image: x\n    deploy: {replicas: 2}\n  db:\n    image: y\n",
        );
        let observed = vec![
            c("web", RunState::Running, Some(Health::Healthy)),
            c("old", RunState::Exited(1), None),
        ];
        let got = services(Some(&project), &observed);
        let view: Vec<(&str, u32, u32, &str)> = got
            .iter()
            .map(|s| (s.name.as_str(), s.running, s.desired, s.health().text()))
            .collect();
        assert_eq!(
            view,
            vec![
                ("db", 0, 1, "none"),
                ("old", 0, 0, "none"),
                ("web", 1, 2, "healthy")
            ]
        );
    }

    #[test]
    fn a_stopped_service_is_not_running_and_a_completed_one_shot_is_done() {
        let project = project(
            "services:\n  migrate:\n    image: x\n  api:\n    image: x\n    healthcheck: { test: [\"CMD\", \"true\"] }\n    depends_on:\n      migrate: { condition: service_completed_successfully }\n  worker:\n    image: x\n",
        );
        let view = |observed: &[ObservedContainer]| -> Vec<(String, u32, u32, String)> {
            services(Some(&project), observed)
                .into_iter()
                .map(|s| (s.name.clone(), s.running, s.desired, s.health().to_string()))
                .collect()
        };
        let row = |n: &str, r, d, h: &str| (n.to_string(), r, d, h.to_string());
        // `docker stop` on every container: each exited 0.
        let stopped = [
            c("api", RunState::Exited(0), None),
            c("migrate", RunState::Exited(0), None),
            c("worker", RunState::Exited(0), None),
        ];
        assert_eq!(
            view(&stopped),
            [
                row("api", 0, 1, "starting"),
                row("migrate", 1, 1, "none"),
                row("worker", 0, 1, "none")
            ]
        );
        // Started again.
        let back = [
            c("api", RunState::Running, Some(Health::Healthy)),
            c("migrate", RunState::Exited(0), None),
            c("worker", RunState::Running, None),
        ];
        assert_eq!(
            view(&back),
            [
                row("api", 1, 1, "healthy"),
                row("migrate", 1, 1, "none"),
                row("worker", 1, 1, "none")
            ]
        );
        // A one-shot that failed is not done.
        let failed = [c("migrate", RunState::Exited(1), None)];
        assert_eq!(view(&failed)[1], row("migrate", 0, 1, "none"));
    }

    #[test]
    fn a_report_carries_the_refusal_and_staleness() {
        let payload = pb::DesiredState {
            generation: 9,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(claimed_generation(&payload), 9);
        assert_eq!(claimed_generation(&[0xff, 0xff]), 0);
        let mut status = Status {
            generation: 4,
            refused: Some(("bad signature: x".into(), 9)),
            ..Default::default()
        };
        status.stacks.insert(
            "web".into(),
            pb::StackReport {
                name: "web".into(),
                state: CONVERGED.into(),
                ..Default::default()
            },
        );
        let r = status.report(true, 123);
        assert_eq!(
            (
                r.generation,
                r.refused.as_str(),
                r.refused_generation,
                r.stale,
                r.sent_unix_ms
            ),
            (4, "bad signature: x", 9, true, 123)
        );
        assert_eq!(r.stacks.len(), 1);
        let mut later = r.stacks[0].clone();
        later.applied_unix_ms = 5;
        assert!(same(&r.stacks[0], &later));
        later.state = FAILED.into();
        assert!(!same(&r.stacks[0], &later));
    }
}
