//! The applier: one task that converges this host to its accepted desired state, so applies
//! never overlap. It applies each new state as it comes (only the latest counts), re-applies the
//! current one every reconcile interval and on Docker events about its own projects (drift: a
//! container removed or killed by hand comes back), and removes the stacks it applied earlier
//! that are no longer wanted. It owns only projects named `<prefix><stack>`: those it has a stack
//! directory for, or is told to run; it touches nothing else on the engine.
//!
//! Per stack: check the content (name, revision digest, file paths), write its revision
//! directory, load the compose file, check the host policy, `up`. A revision that is refused
//! (policy) or does not load leaves the stack's previous revision running and drift-corrected.
//! What happened goes into the shared [`Status`], from which the session sends reports.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::{FutureExt, Stream, StreamExt};
use noco_compose::LoadOptions;
use noco_compose::model::Project;
use noco_proto::v1::{DesiredState, StackReport, StackState};
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::Credentials;
use crate::datadir::DataDir;
use crate::engine::apply::ApplyOptions;
use crate::engine::{EngineError, docker as d, labels, project};
use crate::policy::{self, Policy};
use crate::report::{self, APPLYING, CONVERGED, FAILED, REFUSED, Status};
use crate::stackdir::{self, COMPOSE_FILE, RevisionFiles};

/// How the applier works, from the command line and the agent's configuration file.
#[derive(Debug, Clone)]
pub struct ApplierConfig {
    pub data_dir: DataDir,
    /// Compose project names are `<prefix><stack>`.
    pub project_prefix: String,
    pub policy: Policy,
    pub registry_credentials: Vec<Credentials>,
    /// How long one service may take to become ready.
    pub wait_timeout: Duration,
    pub reconcile_interval: Duration,
    /// Stacks a backup or a restore holds are left alone.
    pub locks: crate::locks::StackLocks,
    /// This host's name in noco (spans carry it).
    pub host_name: String,
    /// The server's trace context for each stack's new revision.
    pub links: crate::desired::TraceLinks,
}

/// A project prefix must keep `<prefix><stack>` a valid compose project name.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    stackdir::check_stack_name(prefix).map_err(|_| {
        format!("project prefix {prefix:?}: must be [a-z0-9_-], starting with a letter or digit")
    })
}

/// A stack revision loaded and allowed by the policy: ready to apply.
#[derive(Clone)]
struct Prepared {
    revision: String,
    project: Project,
    opts: ApplyOptions,
}

/// Why a revision cannot be applied.
#[derive(Debug, Clone)]
struct Unusable {
    state: noco_proto::v1::ApplyState,
    error: String,
    /// The same revision would fail the same way again (no point retrying until it changes).
    lasting: bool,
}

impl Unusable {
    fn failed(error: String, lasting: bool) -> Self {
        Unusable {
            state: FAILED,
            error,
            lasting,
        }
    }
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// A newly accepted state (or the persisted one at start).
    New,
    /// The periodic reconcile or a Docker event.
    Reconcile,
}

type Events = Pin<Box<dyn Stream<Item = Result<EventMessage, bollard::errors::Error>> + Send>>;

struct Applier {
    cfg: ApplierConfig,
    status: watch::Sender<Status>,
    docker: Option<Docker>,
    current: Option<Arc<DesiredState>>,
    /// Per stack: the newest revision that loaded and passed the policy.
    good: BTreeMap<String, Prepared>,
    /// Per stack: a revision known to be unusable (by revision), so it is not re-tried.
    bad: BTreeMap<String, (String, Unusable)>,
}

/// Start the applier. It converges to whatever `desired` holds (at once, if it already holds a
/// state) and stops when `desired`'s sender is dropped.
pub fn spawn(
    cfg: ApplierConfig,
    status: watch::Sender<Status>,
    desired: watch::Receiver<Option<Arc<DesiredState>>>,
) -> tokio::task::JoinHandle<()> {
    let applier = Applier {
        cfg,
        status,
        docker: None,
        current: None,
        good: BTreeMap::new(),
        bad: BTreeMap::new(),
    };
    tokio::spawn(applier.run(desired))
}

impl Applier {
    async fn run(mut self, mut desired: watch::Receiver<Option<Arc<DesiredState>>>) {
        let mut tick = tokio::time::interval(self.cfg.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut events: Option<Events> = None;
        let mut cause = desired.borrow_and_update().is_some().then_some(Cause::New);
        loop {
            if let Some(c) = cause.take() {
                if c == Cause::New {
                    self.current = desired.borrow_and_update().clone();
                }
                self.pass(c).await;
                events = self.events(events);
                drain(&mut events);
            }
            tokio::select! {
                changed = desired.changed() => match changed {
                    Ok(()) => cause = Some(Cause::New),
                    Err(_) => return,
                },
                _ = tick.tick() => cause = Some(Cause::Reconcile),
                _ = self.cfg.locks.released() => cause = Some(Cause::Reconcile),
                ev = next_event(&mut events) => match ev {
                    Some(Ok(e)) => {
                        if self.is_drift(&e) {
                            // Let a burst settle (a removal sends several events).
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            drain(&mut events);
                            cause = Some(Cause::Reconcile);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("Docker events: {}; relying on the periodic reconcile", crate::engine::docker_message(&e));
                        events = None;
                    }
                    None => events = None,
                },
            }
        }
    }

    /// The project name of a stack.
    fn project_name(&self, stack: &str) -> String {
        format!("{}{stack}", self.cfg.project_prefix)
    }

    /// Whether an event is about a container of one of the current stacks and may mean drift
    /// (or a health change worth reporting).
    fn is_drift(&self, e: &EventMessage) -> bool {
        let action = e.action.as_deref().unwrap_or_default();
        let project = e
            .actor
            .as_ref()
            .and_then(|a| a.attributes.as_ref())
            .and_then(|a| a.get(labels::PROJECT));
        // Health changes too: the report says how each service is.
        let interesting = project::is_drift_event(action) || action.starts_with("health_status");
        interesting
            && project.is_some_and(|p| {
                self.current
                    .iter()
                    .flat_map(|s| &s.stacks)
                    .any(|s| self.project_name(&s.name) == *p)
            })
    }

    /// The event stream, (re)subscribed while there are stacks to watch and Docker is there.
    fn events(&self, events: Option<Events>) -> Option<Events> {
        let wanted = self.current.as_ref().is_some_and(|s| !s.stacks.is_empty());
        match (&self.docker, wanted) {
            (Some(docker), true) => events.or_else(|| {
                let filter = std::collections::HashMap::from([
                    ("type".to_string(), vec!["container".to_string()]),
                    (
                        "label".to_string(),
                        vec![format!("{}=true", labels::MANAGED)],
                    ),
                ]);
                let opts = EventsOptionsBuilder::default().filters(&filter).build();
                Some(Box::pin(docker.events(Some(opts))) as Events)
            }),
            _ => None,
        }
    }

    async fn docker(&mut self) -> Result<Docker, EngineError> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let docker = d::connect().await?;
        self.docker = Some(docker.clone());
        Ok(docker)
    }

    /// One pass over the current state: every stack, then the removals.
    async fn pass(&mut self, cause: Cause) {
        let Some(state) = self.current.clone() else {
            return;
        };
        let wanted: BTreeSet<&str> = state.stacks.iter().map(|s| s.name.as_str()).collect();
        let leftovers: Vec<String> = match stackdir::existing_stacks(&self.cfg.data_dir.stacks()) {
            Ok(names) => names
                .into_iter()
                .filter(|n| !wanted.contains(n.as_str()))
                .collect(),
            Err(e) => {
                tracing::error!("finding stacks to remove: {e}");
                Vec::new()
            }
        };
        if !state.stacks.is_empty() || !leftovers.is_empty() {
            match self.docker().await {
                Ok(docker) => {
                    for stack in &state.stacks {
                        self.stack_pass(&docker, stack, state.generation, cause)
                            .await;
                    }
                    for name in &leftovers {
                        self.remove(&docker, name).await;
                    }
                }
                Err(e) => {
                    let error = format!("Docker is not available: {e}");
                    tracing::error!("applying state generation {}: {error}", state.generation);
                    for stack in &state.stacks {
                        self.publish(failed_report(stack, &error), false);
                    }
                }
            }
        }
        self.good.retain(|k, _| wanted.contains(k.as_str()));
        self.bad.retain(|k, _| wanted.contains(k.as_str()));
        let generation = state.generation;
        self.status.send_if_modified(|s| {
            let before = (s.generation, s.stacks.len());
            s.stacks.retain(|k, _| wanted.contains(k.as_str()));
            s.generation = generation;
            before != (s.generation, s.stacks.len())
        });
        if cause == Cause::New {
            tracing::info!(
                "applied state generation {generation}: {} stacks",
                state.stacks.len()
            );
        }
    }

    /// Record a stack's report; the session sends it if it says something new (or `force`).
    fn publish(&self, new: StackReport, force: bool) {
        self.status.send_if_modified(|s| {
            let changed = s
                .stacks
                .get(&new.name)
                .is_none_or(|old| !report::same(old, &new));
            if changed || force {
                s.stacks.insert(new.name.clone(), new);
            }
            changed || force
        });
    }

    fn previous(&self, name: &str) -> Option<StackReport> {
        self.status.borrow().stacks.get(name).cloned()
    }

    /// Converge one stack. Applying a revision for the first time is a span (`apply`: stack,
    /// revision, host, result), a child of the server span that sent the revision when the
    /// state carried its traceparent; passes that keep a revision converged are not traced.
    async fn stack_pass(
        &mut self,
        docker: &Docker,
        stack: &StackState,
        generation: u64,
        cause: Cause,
    ) {
        let fresh = self
            .good
            .get(&stack.name)
            .is_none_or(|g| g.revision != stack.revision)
            && self
                .bad
                .get(&stack.name)
                .is_none_or(|(r, _)| *r != stack.revision);
        if !fresh {
            self.converge(docker, stack, generation, cause).await;
            return;
        }
        let span = tracing::info_span!(
            "apply",
            stack = %stack.name,
            revision = %noco_compose::revision::short(&stack.revision),
            host = %self.cfg.host_name,
            generation,
            result = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        if let Some(tp) = self.cfg.links.take(&stack.name, &stack.revision) {
            noco_proto::otel::set_parent(&span, &tp);
        }
        let (state, error) = self
            .converge(docker, stack, generation, cause)
            .instrument(span.clone())
            .await;
        span.record("result", noco_proto::Enumeration::text(state));
        if !error.is_empty() {
            span.record("error", error.as_str());
        }
    }

    /// [`Self::stack_pass`]'s work: returns the state and error reported.
    async fn converge(
        &mut self,
        docker: &Docker,
        stack: &StackState,
        generation: u64,
        cause: Cause,
    ) -> (noco_proto::v1::ApplyState, String) {
        let name = stack.name.clone();
        let Some(_held) = self.cfg.locks.try_lock(&name) else {
            tracing::debug!("stack {name}: a backup or restore holds it; left alone this pass");
            return (APPLYING, String::new());
        };
        let current_ready = self
            .good
            .get(&name)
            .is_some_and(|g| g.revision == stack.revision);
        let unusable = if current_ready {
            None
        } else if let Some((_, known)) = self.bad.get(&name).filter(|(r, _)| *r == stack.revision) {
            Some(known.clone())
        } else {
            self.publish(
                StackReport {
                    name: name.clone(),
                    revision: stack.revision.clone(),
                    state: APPLYING.into(),
                    ..Default::default()
                },
                false,
            );
            match self.prepare(stack).await {
                Ok(p) => {
                    self.good.insert(name.clone(), p);
                    self.bad.remove(&name);
                    None
                }
                Err(u) => {
                    if u.lasting {
                        self.bad
                            .insert(name.clone(), (stack.revision.clone(), u.clone()));
                    }
                    Some(u)
                }
            }
        };
        // Converge the current revision, or keep the previous good one converged.
        let target = self.good.get(&name).cloned();
        let mut corrected = Vec::new();
        let up = match &target {
            Some(t) => {
                let started = Instant::now();
                let result = project::up(docker, &t.project, &t.opts).await;
                if let Ok((plan, rep)) = &result
                    && !plan.is_noop()
                {
                    corrected = rep.actions.clone();
                    tracing::debug!("stack {name}: up in {:?}", started.elapsed());
                }
                Some(result.map(|_| ()))
            }
            None => None,
        };
        let (state, error) = match (&unusable, &up) {
            (Some(u), _) => (u.state, u.error.clone()),
            (None, Some(Ok(()))) => (CONVERGED, String::new()),
            (None, Some(Err(e))) => (FAILED, e.to_string()),
            (None, None) => (FAILED, "the stack was not prepared".to_string()),
        };
        if let (Some(_), Some(Err(e)), Some(t)) = (&unusable, &up, &target) {
            tracing::error!(
                "stack {name}: keeping revision {} converged: {e}",
                t.revision
            );
        }
        if unusable.is_none()
            && matches!(up, Some(Ok(())))
            && let Ok(dir) = stackdir::revision_dir_name(&stack.revision)
            && let Err(e) = stackdir::prune_revisions(&self.cfg.data_dir.stacks().join(&name), &dir)
        {
            tracing::warn!("stack {name}: {e}");
        }
        let services = match project::ps(docker, &self.project_name(&name)).await {
            Ok(list) => report::services(target.as_ref().map(|t| &t.project), &list),
            Err(e) => {
                tracing::warn!("stack {name}: listing its containers: {e}");
                Vec::new()
            }
        };
        let previous = self.previous(&name);
        let applied_unix_ms = match &previous {
            Some(p) if p.revision == stack.revision && p.state() == state && state == CONVERGED => {
                p.applied_unix_ms
            }
            _ if state == CONVERGED => report::now_ms(),
            Some(p) => p.applied_unix_ms,
            None => 0,
        };
        let changed_state = previous
            .as_ref()
            .is_none_or(|p| p.state() != state || p.revision != stack.revision || p.error != error);
        let new = StackReport {
            name: name.clone(),
            revision: stack.revision.clone(),
            state: state.into(),
            error: error.clone(),
            services,
            applied_unix_ms,
        };
        self.publish(new, !corrected.is_empty());
        for action in &corrected {
            let what = if cause == Cause::Reconcile {
                "drift corrected"
            } else {
                "applied"
            };
            tracing::info!("stack {name}: {what}: {action}");
        }
        if cause == Cause::New || changed_state || !corrected.is_empty() {
            if error.is_empty() {
                tracing::info!("applied state generation {generation}: stack {name} {state}");
            } else {
                tracing::warn!(
                    "applied state generation {generation}: stack {name} {state}: {error}"
                );
            }
        }
        (state, error)
    }

    /// Check, write, load and police a stack revision.
    async fn prepare(&self, stack: &StackState) -> Result<Prepared, Unusable> {
        let dir_name = stackdir::check_stack(stack).map_err(|e| Unusable::failed(e, true))?;
        let stacks = self.cfg.data_dir.stacks();
        let owned = stack.clone();
        let dir = tokio::task::spawn_blocking(move || {
            stackdir::write_revision(&stacks, &owned, &dir_name)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| Unusable::failed(format!("writing the stack's files: {e}"), false))?;
        let project_name = self.project_name(&stack.name);
        let loaded =
            load_project(stack, &dir, &project_name).map_err(|e| Unusable::failed(e, true))?;
        for w in &loaded.warnings {
            tracing::warn!("stack {}: compose file: {w}", stack.name);
        }
        if loaded.project.name != project_name {
            return Err(Unusable::failed(
                format!(
                    "project name {:?} is not {project_name:?}",
                    loaded.project.name
                ),
                true,
            ));
        }
        policy::check(&loaded.project, &self.cfg.policy).map_err(|problems| Unusable {
            state: REFUSED,
            error: format!("refused by this host's policy: {}", problems.join("; ")),
            lasting: true,
        })?;
        Ok(Prepared {
            revision: stack.revision.clone(),
            project: loaded.project,
            opts: ApplyOptions {
                config_file: dir.join(COMPOSE_FILE).display().to_string(),
                stack_dir: dir,
                files_dir: stackdir::mounted_dir(&self.cfg.data_dir.stacks(), &stack.name),
                wait_timeout: self.cfg.wait_timeout,
                registry_credentials: self.cfg.registry_credentials.clone(),
            },
        })
    }

    /// Remove a stack this agent applied and no longer wants: its containers and networks
    /// (volumes are kept), then its directory.
    async fn remove(&mut self, docker: &Docker, name: &str) {
        let Some(_held) = self.cfg.locks.try_lock(name) else {
            return;
        };
        let project = self.project_name(name);
        match project::down(docker, &project, false, None).await {
            Ok(r) => {
                let root = self.cfg.data_dir.stacks().join(name);
                if let Err(e) = std::fs::remove_dir_all(&root) {
                    tracing::warn!("removing {}: {e}", root.display());
                }
                tracing::info!(
                    "removed stack {name} (project {project}): {} containers, {} networks; volumes kept",
                    r.containers.len(),
                    r.networks.len()
                );
            }
            Err(e) => tracing::error!("removing stack {name} (project {project}): {e}; will retry"),
        }
    }
}

/// Load a stack revision written under `dir` as compose project `project_name`: the one way the
/// agent reads a stack (the applier, and the backups that need its services and volumes).
pub fn load_project(
    stack: &StackState,
    dir: &std::path::Path,
    project_name: &str,
) -> Result<noco_compose::Loaded, String> {
    let compose = noco_compose::text(&stack.compose).map_err(|d| format!("compose file: {d}"))?;
    let variables: BTreeMap<String, String> = stack.env.clone().into_iter().collect();
    let files = RevisionFiles(dir.to_path_buf());
    let opts = LoadOptions {
        project_name: Some(project_name),
        variables: &variables,
        files: &files,
        profiles: &[],
        directory: None,
    };
    noco_compose::load(compose, &opts).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        format!("compose file: {}", lines.join("; "))
    })
}

fn failed_report(stack: &StackState, error: &str) -> StackReport {
    StackReport {
        name: stack.name.clone(),
        revision: stack.revision.clone(),
        state: FAILED.into(),
        error: error.to_string(),
        ..Default::default()
    }
}

async fn next_event(
    events: &mut Option<Events>,
) -> Option<Result<EventMessage, bollard::errors::Error>> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Drop the events already received (our own applies cause many).
fn drain(events: &mut Option<Events>) {
    if let Some(s) = events {
        while let Some(Some(_)) = s.next().now_or_never() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_keep_project_names_valid() {
        check_prefix("").unwrap();
        check_prefix("a-").unwrap();
        assert!(check_prefix("A-").is_err());
        assert!(check_prefix("-a").is_err());
    }
}
