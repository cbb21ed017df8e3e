//! Planning: what must change for the observed Docker objects of a project to match its model.
//! Pure: the applier observes, this module decides, the applier acts. Each step carries the
//! reason it is needed, so `compose plan` can say why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::{Project, Service, UpdateOrder};

/// A container of the project as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    pub service: String,
    pub number: u32,
    /// noco's config-hash label; `None` for containers noco did not create.
    pub config_hash: Option<String>,
    /// The ID of the image it was created from (`sha256:…`): its `com.docker.compose.image`
    /// label, as compose v2 records it, else the container's own image ID.
    pub image: Option<String>,
    pub state: RunState,
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited(i64),
    Dead,
}

impl RunState {
    pub fn is_running(self) -> bool {
        matches!(
            self,
            RunState::Running | RunState::Restarting | RunState::Paused
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunState::Created => f.write_str("created"),
            RunState::Running => f.write_str("running"),
            RunState::Restarting => f.write_str("restarting"),
            RunState::Paused => f.write_str("paused"),
            RunState::Exited(code) => write!(f, "exited ({code})"),
            RunState::Dead => f.write_str("dead"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// What exists of the project now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    /// Docker names of the networks that exist.
    pub networks: BTreeSet<String>,
    /// Docker names of the volumes that exist.
    pub volumes: BTreeSet<String>,
    /// The IDs of the local images the services name, by reference as written (`nginx:1.25`
    /// → `sha256:…`); a reference with no local image is absent.
    pub images: BTreeMap<String, String>,
}

/// How a service's containers are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Stop the old container, then start the new one.
    StopFirst,
    /// Start the new container, wait until it is healthy, then stop the old one.
    StartFirst,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Up to date: nothing to do.
    Keep {
        id: String,
        name: String,
        number: u32,
    },
    /// Up to date but not running: start it.
    Start {
        id: String,
        name: String,
        number: u32,
        reason: String,
    },
    /// Up to date, but must restart (a dependency with `restart: true` changes).
    Restart {
        id: String,
        name: String,
        number: u32,
        reason: String,
    },
    Create {
        number: u32,
        reason: String,
    },
    Recreate {
        id: String,
        name: String,
        number: u32,
        reason: String,
    },
    Remove {
        id: String,
        name: String,
        number: u32,
        reason: String,
    },
}

impl Step {
    pub fn changes(&self) -> bool {
        !matches!(self, Step::Keep { .. })
    }

    pub fn number(&self) -> u32 {
        match self {
            Step::Keep { number, .. }
            | Step::Start { number, .. }
            | Step::Restart { number, .. }
            | Step::Create { number, .. }
            | Step::Recreate { number, .. }
            | Step::Remove { number, .. } => *number,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub service: String,
    /// The config hash the service's containers must carry.
    pub hash: String,
    pub strategy: Strategy,
    /// Why the strategy differs from what the file asked for, if it does.
    pub strategy_note: Option<String>,
    pub steps: Vec<Step>,
}

impl ServicePlan {
    pub fn changes(&self) -> bool {
        self.steps.iter().any(Step::changes)
    }

    /// Whether any container of this service is created or recreated.
    pub fn replaces(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Create { .. } | Step::Recreate { .. }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub project: String,
    /// Keys of project networks to create.
    pub create_networks: Vec<String>,
    /// Keys of external networks that do not exist (the apply fails on them).
    pub missing_external_networks: Vec<String>,
    pub create_volumes: Vec<String>,
    pub missing_external_volumes: Vec<String>,
    /// Services in dependency order (dependencies first).
    pub services: Vec<ServicePlan>,
    /// Containers of services no longer in the stack.
    pub orphans: Vec<Step>,
}

impl Plan {
    /// Nothing to create, change or remove.
    pub fn is_noop(&self) -> bool {
        self.create_networks.is_empty()
            && self.create_volumes.is_empty()
            && self.orphans.is_empty()
            && self.services.iter().all(|s| !s.changes())
    }
}

/// Services in an order where each comes after everything it depends on (`depends_on`,
/// `links`, `network_mode: service:`). Ties keep name order, so the order is deterministic.
pub fn dependency_order(project: &Project) -> Vec<String> {
    let deps: BTreeMap<&str, BTreeSet<&str>> = project
        .services
        .iter()
        .map(|(name, svc)| (name.as_str(), dependencies(svc)))
        .collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < deps.len() {
        let ready: Vec<&str> = deps
            .iter()
            .filter(|(name, d)| {
                !done.contains(*name) && d.iter().all(|x| done.contains(x) || !deps.contains_key(x))
            })
            .map(|(name, _)| *name)
            .collect();
        if ready.is_empty() {
            // A cycle (validation refuses these); keep the rest in name order.
            order.extend(
                deps.keys()
                    .filter(|n| !done.contains(*n))
                    .map(|n| n.to_string()),
            );
            break;
        }
        for name in ready {
            done.insert(name);
            order.push(name.to_string());
        }
    }
    order
}

/// Every service `svc` must start after.
pub fn dependencies(svc: &Service) -> BTreeSet<&str> {
    let mut deps: BTreeSet<&str> = svc.depends_on.keys().map(String::as_str).collect();
    for link in &svc.links {
        deps.insert(link.split(':').next().unwrap_or(link));
    }
    if let Some(crate::model::NetworkMode::Service(s)) = &svc.network_mode {
        deps.insert(s.as_str());
    }
    deps
}

/// Why start-first cannot be used for a service, if it cannot.
fn start_first_blocker(svc: &Service) -> Option<String> {
    if let Some(p) = svc.ports.iter().find(|p| p.published.is_some()) {
        return Some(format!(
            "publishes fixed host port {}/{}: two containers cannot hold it, so stop-first is used",
            p.published.unwrap_or_default(),
            p.protocol.as_str()
        ));
    }
    if let Some(name) = &svc.container_name {
        return Some(format!(
            "has a fixed container_name {name:?}, so stop-first is used"
        ));
    }
    None
}

/// Plan `project` against `observed`. `hash` gives each service's config hash.
pub fn plan(project: &Project, observed: &Observed, hash: impl Fn(&Service) -> String) -> Plan {
    let mut create_networks = Vec::new();
    let mut missing_external_networks = Vec::new();
    for (key, net) in &project.networks {
        if !observed.networks.contains(&net.name) {
            if net.external {
                missing_external_networks.push(key.clone());
            } else {
                create_networks.push(key.clone());
            }
        }
    }
    let mut create_volumes = Vec::new();
    let mut missing_external_volumes = Vec::new();
    for (key, vol) in &project.volumes {
        if !observed.volumes.contains(&vol.name) {
            if vol.external {
                missing_external_volumes.push(key.clone());
            } else {
                create_volumes.push(key.clone());
            }
        }
    }

    let mut by_service: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for c in &observed.containers {
        by_service.entry(c.service.as_str()).or_default().push(c);
    }

    let mut services: Vec<ServicePlan> = Vec::new();
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    for name in dependency_order(project) {
        let Some(svc) = project.services.get(&name) else {
            continue;
        };
        let desired = hash(svc);
        let (strategy, strategy_note) = match (svc.deploy.update_order, start_first_blocker(svc)) {
            (UpdateOrder::StartFirst, None) => (Strategy::StartFirst, None),
            (UpdateOrder::StartFirst, Some(why)) => (Strategy::StopFirst, Some(why)),
            (UpdateOrder::StopFirst, _) => (Strategy::StopFirst, None),
        };
        // Dependencies that are replaced in this plan and ask for a restart of this service.
        let restart_for: Vec<&str> = svc
            .depends_on
            .iter()
            .filter(|(dep, d)| d.restart && replaced.contains(*dep))
            .map(|(dep, _)| dep.as_str())
            .collect();
        // A service in another's network namespace loses it when that one is replaced.
        let namespace_gone = match &svc.network_mode {
            Some(crate::model::NetworkMode::Service(owner)) if replaced.contains(owner) => {
                Some(owner.clone())
            }
            _ => None,
        };
        let one_shot = project.is_one_shot(&name);
        let local_image = observed.images.get(&svc.image);
        let mut containers = by_service.remove(name.as_str()).unwrap_or_default();
        containers.sort_by(|a, b| a.number.cmp(&b.number).then(a.name.cmp(&b.name)));
        let mut steps = Vec::new();
        let mut seen_numbers = BTreeSet::new();
        for c in &containers {
            let (id, cname, number) = (c.id.clone(), c.name.clone(), c.number);
            if number == 0 || number > svc.deploy.replicas {
                steps.push(Step::Remove {
                    id,
                    name: cname,
                    number,
                    reason: format!("scaled to {} replicas", svc.deploy.replicas),
                });
                continue;
            }
            if !seen_numbers.insert(number) {
                steps.push(Step::Remove {
                    id,
                    name: cname,
                    number,
                    reason: format!("a second container numbered {number}"),
                });
                continue;
            }
            // As compose compares `com.docker.compose.image`: the reference now names another
            // image than the one the container was created from (pulled, rebuilt, retagged).
            let image_changed = match (&c.image, local_image) {
                (Some(have), Some(want)) if have != want => Some(format!(
                    "image {} changed ({} → {})",
                    svc.image,
                    short(have),
                    short(want)
                )),
                _ => None,
            };
            let step = match &c.config_hash {
                Some(h) if *h == desired => {
                    if let Some(reason) = image_changed {
                        Step::Recreate {
                            id,
                            name: cname,
                            number,
                            reason,
                        }
                    } else if let Some(owner) = &namespace_gone {
                        Step::Recreate {
                            id,
                            name: cname,
                            number,
                            reason: format!(
                                "it shares the network namespace of {owner}, which is replaced"
                            ),
                        }
                    } else if c.state == RunState::Dead {
                        Step::Recreate {
                            id,
                            name: cname,
                            number,
                            reason: "the container is dead".into(),
                        }
                    } else if !restart_for.is_empty() {
                        Step::Restart {
                            id,
                            name: cname,
                            number,
                            reason: format!(
                                "dependency {} is replaced (restart: true)",
                                restart_for.join(", ")
                            ),
                        }
                    } else if c.state.is_running() || (one_shot && c.state == RunState::Exited(0)) {
                        Step::Keep {
                            id,
                            name: cname,
                            number,
                        }
                    } else {
                        Step::Start {
                            id,
                            name: cname,
                            number,
                            reason: stopped_reason(c.state, one_shot),
                        }
                    }
                }
                Some(h) => Step::Recreate {
                    id,
                    name: cname,
                    number,
                    reason: format!("configuration changed ({} → {})", short(h), short(&desired)),
                },
                None => Step::Recreate {
                    id,
                    name: cname,
                    number,
                    reason: "the container was not made by noco".into(),
                },
            };
            steps.push(step);
        }
        for number in 1..=svc.deploy.replicas {
            if !seen_numbers.contains(&number) {
                let reason = if containers.is_empty() {
                    "new service".to_string()
                } else {
                    format!("replica {number} is missing")
                };
                steps.push(Step::Create { number, reason });
            }
        }
        steps.sort_by_key(|s| (s.number(), !matches!(s, Step::Remove { .. })));
        let plan = ServicePlan {
            service: name.clone(),
            hash: desired,
            strategy,
            strategy_note,
            steps,
        };
        if plan.replaces() {
            replaced.insert(name.clone());
        }
        services.push(plan);
    }
    let mut orphans: Vec<Step> = by_service
        .into_values()
        .flatten()
        .map(|c| Step::Remove {
            id: c.id.clone(),
            name: c.name.clone(),
            number: c.number,
            reason: format!("service {:?} is no longer in the stack", c.service),
        })
        .collect();
    orphans.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    Plan {
        project: project.name.clone(),
        create_networks,
        missing_external_networks,
        create_volumes,
        missing_external_volumes,
        services,
        orphans,
    }
}

/// Why an up-to-date container that is not running is started. A service is meant to be
/// running, as in docker compose and Swarm: a container that stopped (`docker stop` exits 0
/// too) or never started is started again, whatever its restart policy or healthcheck. Only a
/// one-shot ([`Project::is_one_shot`]) that exited 0 is finished, and kept as it is.
fn stopped_reason(state: RunState, one_shot: bool) -> String {
    if one_shot {
        format!("the one-shot container is {state}: it runs until it completes successfully")
    } else {
        format!(
            "the container is {state}; only a one-shot (awaited with service_completed_successfully) may stay stopped"
        )
    }
}

fn short(hash: &str) -> &str {
    let h = hash.strip_prefix("sha256:").unwrap_or(hash);
    &h[..h.len().min(12)]
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_noop() {
            return writeln!(f, "{}: up to date", self.project);
        }
        for n in &self.create_networks {
            writeln!(f, "network {n}: create")?;
        }
        for n in &self.missing_external_networks {
            writeln!(f, "network {n}: external network does not exist")?;
        }
        for v in &self.create_volumes {
            writeln!(f, "volume {v}: create")?;
        }
        for v in &self.missing_external_volumes {
            writeln!(f, "volume {v}: external volume does not exist")?;
        }
        for s in &self.services {
            let strategy = match s.strategy {
                Strategy::StartFirst => "start-first",
                Strategy::StopFirst => "stop-first",
            };
            writeln!(f, "service {} ({strategy}):", s.service)?;
            if let Some(note) = &s.strategy_note {
                writeln!(f, "  note: start-first requested, but the service {note}")?;
            }
            for step in &s.steps {
                match step {
                    Step::Keep { name, .. } => writeln!(f, "  keep      {name}")?,
                    Step::Start { name, reason, .. } => {
                        writeln!(f, "  start     {name}: {reason}")?
                    }
                    Step::Restart { name, reason, .. } => {
                        writeln!(f, "  restart   {name}: {reason}")?
                    }
                    Step::Create { number, reason } => writeln!(
                        f,
                        "  create    {}-{}-{number}: {reason}",
                        self.project, s.service
                    )?,
                    Step::Recreate { name, reason, .. } => {
                        writeln!(f, "  recreate  {name}: {reason}")?
                    }
                    Step::Remove { name, reason, .. } => {
                        writeln!(f, "  remove    {name}: {reason}")?
                    }
                }
            }
        }
        for o in &self.orphans {
            if let Step::Remove { name, reason, .. } = o {
                writeln!(f, "orphan {name}: remove ({reason})")?;
            }
        }
        Ok(())
    }
}
