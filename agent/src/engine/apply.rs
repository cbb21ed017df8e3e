//! Applying a plan: images first (nothing changes if one is missing), then networks and volumes,
//! orphans, and the services — concurrently, each waiting for its dependencies' conditions
//! (started, healthy, completed successfully). Replacements are stop-first, or start-first with
//! zero downtime: the new container starts under the canonical name, joins the same networks and
//! aliases, becomes healthy, and only then the old one is stopped gracefully (SIGTERM, its grace
//! period) while still attached. If the new one never becomes ready, it is removed and the old
//! one keeps serving.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{CreateContainerOptionsBuilder, EventsOptionsBuilder};
use futures_util::StreamExt;
use noco_compose::model::{DependencyCondition, Project, Service};
use noco_compose::plan::{Plan, ServicePlan, Step, Strategy};
use tokio::sync::watch;

use super::docker as d;
use super::spec::{self, ContainerIdentity};
use super::{EngineError, docker_message};

/// The readiness wait re-inspects on every Docker event for the project's containers (start,
/// die, health_status); this poll is only the fallback, so a missed event cannot hang an apply.
const FALLBACK_POLL: Duration = Duration::from_millis(500);
const LOG_LINES: usize = 20;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Relative bind sources resolve against this directory.
    pub stack_dir: PathBuf,
    /// Where the secret and config files services mount are written (0700; see
    /// [`super::files`]): `<data-dir>/stacks/<stack>/mounted` on the fleet,
    /// `<state>/compose/<project>` for `noco-agent compose`.
    pub files_dir: PathBuf,
    /// The compose file, for the compose label.
    pub config_file: String,
    /// How long one service may take to become ready (started, healthy, or completed).
    pub wait_timeout: Duration,
    /// Credentials for pulling from private registries (from the agent's configuration).
    pub registry_credentials: Vec<crate::config::Credentials>,
}

/// What an apply did, one line per action, in the order they finished.
#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    pub actions: Vec<String>,
}

/// How far a service has come.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ready {
    Pending,
    Started,
    Healthy,
    Completed,
    Failed(String),
}

struct Ctx {
    docker: Docker,
    project: Project,
    opts: ApplyOptions,
    ready: BTreeMap<String, watch::Receiver<Ready>>,
    /// Image IDs by reference, as `ensure_images` found them.
    images: BTreeMap<String, String>,
    /// Bumped on every start, die and health_status event of the project's containers.
    events: watch::Receiver<u64>,
}

/// Converge the project to the plan made for it.
pub async fn apply(
    docker: &Docker,
    project: &Project,
    plan: &Plan,
    opts: &ApplyOptions,
) -> Result<ApplyReport, EngineError> {
    if let Some(key) = plan.missing_external_networks.first() {
        return Err(EngineError::Precondition(format!(
            "external network {key:?} does not exist: create it first"
        )));
    }
    if let Some(key) = plan.missing_external_volumes.first() {
        return Err(EngineError::Precondition(format!(
            "external volume {key:?} does not exist: create it first"
        )));
    }
    let needs_image: Vec<&Service> = plan
        .services
        .iter()
        .filter(|s| {
            s.steps
                .iter()
                .any(|st| matches!(st, Step::Create { .. } | Step::Recreate { .. }))
        })
        .filter_map(|s| project.services.get(&s.service))
        .collect();
    let images = d::ensure_images(docker, &needs_image, &opts.registry_credentials).await?;
    if super::files::any(project) {
        let (dir, owned) = (opts.files_dir.clone(), project.clone());
        tokio::task::spawn_blocking(move || super::files::write(&dir, &owned))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|e| {
                EngineError::Precondition(format!("writing secret and config files: {e}"))
            })?;
    }

    let mut report = ApplyReport::default();
    // Networks and volumes do not depend on one another: create them all at once.
    let networks = plan.create_networks.iter().filter_map(|key| {
        let net = project.networks.get(key)?;
        Some(async move {
            d::create_network(docker, project, key, net).await?;
            Ok::<String, EngineError>(format!("network {}: created", net.name))
        })
    });
    let volumes = plan.create_volumes.iter().filter_map(|key| {
        let vol = project.volumes.get(key)?;
        Some(async move {
            d::create_volume(docker, project, key, vol).await?;
            Ok::<String, EngineError>(format!("volume {}: created", vol.name))
        })
    });
    let (networks, volumes) = futures_util::future::join(
        futures_util::future::join_all(networks),
        futures_util::future::join_all(volumes),
    )
    .await;
    for created in networks.into_iter().chain(volumes) {
        report.actions.push(created?);
    }
    for orphan in &plan.orphans {
        if let Step::Remove {
            id, name, reason, ..
        } = orphan
        {
            d::stop_and_remove(docker, id, Duration::from_secs(10))
                .await
                .map_err(|e| EngineError::docker(format!("removing orphan {name}"), e))?;
            report
                .actions
                .push(format!("container {name}: removed ({reason})"));
        }
    }

    let mut senders = BTreeMap::new();
    let mut receivers = BTreeMap::new();
    for s in &plan.services {
        let (tx, rx) = watch::channel(Ready::Pending);
        senders.insert(s.service.clone(), tx);
        receivers.insert(s.service.clone(), rx);
    }
    // Nothing to wait for in a no-op: its readiness check is one inspect per container.
    let (events_tx, events) = watch::channel(0u64);
    let follower = (!plan.is_noop()).then(|| {
        tokio::spawn(follow_events(
            docker.clone(),
            project.name.clone(),
            events_tx.clone(),
        ))
    });
    let ctx = Arc::new(Ctx {
        docker: docker.clone(),
        project: project.clone(),
        opts: opts.clone(),
        ready: receivers,
        images,
        events,
    });

    let mut tasks = tokio::task::JoinSet::new();
    for s in plan.services.clone() {
        let ctx = ctx.clone();
        let Some(tx) = senders.remove(&s.service) else {
            continue;
        };
        tasks.spawn(async move {
            let mut actions = Vec::new();
            let result = run_service(&ctx, &s, &tx, &mut actions).await;
            if let Err(e) = &result {
                let _ = tx.send(Ready::Failed(e.to_string()));
            }
            (actions, result)
        });
    }
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((actions, result)) => {
                report.actions.extend(actions);
                if let Err(e) = result {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(EngineError::Precondition(format!(
                "a service task failed: {e}"
            ))),
        }
    }
    if let Some(follower) = follower {
        follower.abort();
    }
    // Failures caused by a failed dependency are noise next to the root cause (but if there is
    // no other failure, they are the failure).
    let mut errors = if errors.iter().all(is_dependency_failure) {
        errors
    } else {
        errors
            .into_iter()
            .filter(|e| !is_dependency_failure(e))
            .collect()
    };
    match errors.len() {
        0 => Ok(report),
        1 => Err(errors.remove(0)),
        _ => Err(EngineError::Many(errors)),
    }
}

/// Bump `tx` on every event that can change a project container's readiness. Ends when the
/// stream does (the readiness wait then falls back to polling) or when the apply aborts it.
async fn follow_events(docker: Docker, project: String, tx: watch::Sender<u64>) {
    let filters = std::collections::HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "label".to_string(),
            vec![format!("{}={project}", super::labels::PROJECT)],
        ),
        (
            "event".to_string(),
            vec!["start".into(), "die".into(), "health_status".into()],
        ),
    ]);
    let mut stream = docker.events(Some(
        EventsOptionsBuilder::default().filters(&filters).build(),
    ));
    while let Some(Ok(_)) = stream.next().await {
        tx.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn is_dependency_failure(e: &EngineError) -> bool {
    matches!(e, EngineError::Service { reason, .. } if reason.starts_with("dependency "))
}

async fn run_service(
    ctx: &Ctx,
    plan: &ServicePlan,
    tx: &watch::Sender<Ready>,
    actions: &mut Vec<String>,
) -> Result<(), EngineError> {
    let name = plan.service.as_str();
    let Some(svc) = ctx.project.services.get(name) else {
        return Ok(());
    };
    let deadline = Instant::now() + ctx.opts.wait_timeout;
    // New containers need nothing of their dependencies to be created (unless they name
    // another container): create them now, start them once the dependencies are ready.
    let mut precreated: BTreeMap<u32, String> = BTreeMap::new();
    if can_create_early(svc) {
        for step in &plan.steps {
            if let Step::Create { number, .. } = step {
                match create(ctx, svc, &plan.hash, *number, None).await {
                    Ok(id) => {
                        precreated.insert(*number, id);
                    }
                    Err(e) => {
                        remove_all(ctx, precreated.values()).await;
                        return Err(e);
                    }
                }
            }
        }
    }
    if let Err(e) = wait_for_dependencies(ctx, svc, deadline).await {
        // As if they had never been created: nothing runs that waited for a failed dependency.
        remove_all(ctx, precreated.values()).await;
        return Err(e);
    }

    let mut containers: Vec<String> = Vec::new();
    let steps = async {
        for step in &plan.steps {
            match step {
                Step::Keep { id, .. } => containers.push(id.clone()),
                Step::Start {
                    id,
                    name: cname,
                    reason,
                    number,
                } => match d::start(&ctx.docker, id).await {
                    Ok(()) => {
                        actions.push(format!("container {cname}: started ({reason})"));
                        containers.push(id.clone());
                    }
                    // Removed between observing and acting (by hand, or by Docker): make it anew.
                    Err(e) if super::not_found(&e) => {
                        let id = create_and_start(ctx, svc, &plan.hash, *number, None).await?;
                        actions.push(format!("container {cname}: created (it was removed)"));
                        containers.push(id);
                    }
                    Err(e) => {
                        return Err(fail(
                            name,
                            format!("starting {cname}: {}", docker_message(&e)),
                        ));
                    }
                },
                Step::Restart {
                    id,
                    name: cname,
                    reason,
                    ..
                } => {
                    ctx.docker.restart_container(id, None).await.map_err(|e| {
                        fail(name, format!("restarting {cname}: {}", docker_message(&e)))
                    })?;
                    actions.push(format!("container {cname}: restarted ({reason})"));
                    containers.push(id.clone());
                }
                Step::Create { number, reason } => {
                    let id = match precreated.remove(number) {
                        Some(id) => start_created(ctx, svc, id, *number).await?,
                        None => create_and_start(ctx, svc, &plan.hash, *number, None).await?,
                    };
                    actions.push(format!(
                        "container {}: created ({reason})",
                        spec::container_name(&ctx.project, svc, *number)
                    ));
                    containers.push(id);
                }
                Step::Recreate {
                    id,
                    name: old_name,
                    number,
                    reason,
                } => {
                    let new_id = match plan.strategy {
                        Strategy::StopFirst => {
                            d::stop_and_remove(&ctx.docker, id, grace(svc))
                                .await
                                .map_err(|e| {
                                    fail(
                                        name,
                                        format!("removing {old_name}: {}", docker_message(&e)),
                                    )
                                })?;
                            create_and_start(ctx, svc, &plan.hash, *number, None).await?
                        }
                        Strategy::StartFirst => {
                            start_first(ctx, svc, &plan.hash, *number, id, old_name, deadline)
                                .await?
                        }
                    };
                    let how = if plan.strategy == Strategy::StartFirst {
                        "start-first"
                    } else {
                        "stop-first"
                    };
                    actions.push(format!(
                        "container {}: recreated {how} ({reason})",
                        spec::container_name(&ctx.project, svc, *number)
                    ));
                    containers.push(new_id);
                }
                Step::Remove {
                    id,
                    name: cname,
                    reason,
                    ..
                } => {
                    d::stop_and_remove(&ctx.docker, id, grace(svc))
                        .await
                        .map_err(|e| {
                            fail(name, format!("removing {cname}: {}", docker_message(&e)))
                        })?;
                    actions.push(format!("container {cname}: removed ({reason})"));
                }
            }
        }
        Ok::<(), EngineError>(())
    };
    if let Err(e) = steps.await {
        // The new containers a failed step left unstarted go too.
        remove_all(ctx, precreated.values()).await;
        return Err(e);
    }
    let _ = tx.send(Ready::Started);
    let state = wait_ready(
        ctx,
        svc,
        &containers,
        deadline,
        ctx.project.is_one_shot(name),
    )
    .await?;
    let _ = tx.send(state);
    Ok(())
}

fn fail(service: &str, reason: String) -> EngineError {
    EngineError::service(service, reason)
}

fn grace(svc: &Service) -> Duration {
    svc.stop_grace_period.unwrap_or(Duration::from_secs(10))
}

/// Wait for every dependency's condition: the `depends_on` entries, and the implicit ones
/// (`links`, `network_mode: service:`), which must have started.
async fn wait_for_dependencies(
    ctx: &Ctx,
    svc: &Service,
    deadline: Instant,
) -> Result<(), EngineError> {
    let implicit = noco_compose::plan::dependencies(svc)
        .into_iter()
        .filter(|dep| !svc.depends_on.contains_key(*dep))
        .map(|dep| (dep.to_string(), DependencyCondition::ServiceStarted, true));
    let explicit = svc
        .depends_on
        .iter()
        .map(|(dep, d)| (dep.clone(), d.condition, d.required));
    for (dep, condition, required) in explicit.chain(implicit).collect::<Vec<_>>() {
        let Some(rx) = ctx.ready.get(&dep) else {
            continue;
        };
        let mut rx = rx.clone();
        let satisfied = |r: &Ready| match condition {
            DependencyCondition::ServiceStarted => {
                matches!(r, Ready::Started | Ready::Healthy | Ready::Completed)
            }
            DependencyCondition::ServiceHealthy => matches!(r, Ready::Healthy),
            DependencyCondition::ServiceCompletedSuccessfully => matches!(r, Ready::Completed),
        };
        let waited = tokio::time::timeout_at(
            deadline.into(),
            rx.wait_for(|r| satisfied(r) || matches!(r, Ready::Failed(_))),
        )
        .await;
        let outcome = match waited {
            Ok(Ok(r)) => r.clone(),
            Ok(Err(_)) => Ready::Failed("its apply task ended".into()),
            Err(_) => Ready::Failed(format!(
                "it was not {condition:?} within {:?}",
                ctx.opts.wait_timeout
            )),
        };
        if let Ready::Failed(why) = outcome {
            if required {
                return Err(fail(
                    &svc.name,
                    format!(
                        "dependency {dep:?} failed: {}",
                        why.lines().next().unwrap_or_default()
                    ),
                ));
            }
            tracing::warn!(service = %svc.name, dependency = %dep, "optional dependency failed: {why}");
        }
    }
    Ok(())
}

/// Whether the service's new containers may be created before its dependencies are ready:
/// not if creating one names another container (links, a shared network, PID or IPC
/// namespace), which must exist first.
fn can_create_early(svc: &Service) -> bool {
    use noco_compose::model::NetworkMode;
    let shares = |ns: &Option<String>| {
        ns.as_deref()
            .is_some_and(|m| m.starts_with("service:") || m.starts_with("container:"))
    };
    svc.links.is_empty()
        && !matches!(
            svc.network_mode,
            Some(NetworkMode::Service(_) | NetworkMode::Container(_))
        )
        && !shares(&svc.pid)
        && !shares(&svc.ipc)
}

async fn remove_all(ctx: &Ctx, ids: impl Iterator<Item = &String>) {
    for id in ids {
        // The failure that brought us here is what the caller reports; a container that could
        // not be removed is said here, not left unexplained (the next apply removes it).
        if let Err(e) = d::remove(&ctx.docker, id).await {
            tracing::warn!(container = %id, "removing a container created for a failed apply: {e}");
        }
    }
}

async fn create_and_start(
    ctx: &Ctx,
    svc: &Service,
    hash: &str,
    number: u32,
    name_override: Option<&str>,
) -> Result<String, EngineError> {
    let id = create(ctx, svc, hash, number, name_override).await?;
    let cname = name_override
        .map(str::to_string)
        .unwrap_or_else(|| spec::container_name(&ctx.project, svc, number));
    start_or_remove(ctx, svc, id, &cname).await
}

/// Start a container made by [`create`] with the canonical name.
async fn start_created(
    ctx: &Ctx,
    svc: &Service,
    id: String,
    number: u32,
) -> Result<String, EngineError> {
    let cname = spec::container_name(&ctx.project, svc, number);
    start_or_remove(ctx, svc, id, &cname).await
}

async fn start_or_remove(
    ctx: &Ctx,
    svc: &Service,
    id: String,
    cname: &str,
) -> Result<String, EngineError> {
    if let Err(e) = d::start(&ctx.docker, &id).await {
        // Leave nothing half-made: the next apply would otherwise keep a container that never ran.
        if let Err(removing) = d::remove(&ctx.docker, &id).await {
            tracing::warn!(container = %id, "removing a container that did not start: {removing}");
        }
        return Err(fail(
            &svc.name,
            format!("starting container {cname}: {}", docker_message(&e)),
        ));
    }
    Ok(id)
}

/// Create a container of the service and connect it to its other networks, without starting it.
async fn create(
    ctx: &Ctx,
    svc: &Service,
    hash: &str,
    number: u32,
    name_override: Option<&str>,
) -> Result<String, EngineError> {
    let identity = ContainerIdentity {
        project: &ctx.project,
        service: svc,
        number,
        config_hash: hash,
        stack_dir: &ctx.opts.stack_dir,
        files_dir: &ctx.opts.files_dir,
        config_file: &ctx.opts.config_file,
        image_id: ctx.images.get(&svc.image).map(String::as_str),
    };
    let cname = name_override
        .map(str::to_string)
        .unwrap_or_else(|| spec::container_name(&ctx.project, svc, number));
    let body = spec::create_body(&identity);
    let mut opts = CreateContainerOptionsBuilder::default().name(&cname);
    if let Some(p) = &svc.platform {
        opts = opts.platform(p);
    }
    let opts = opts.build();
    let mut attempt = ctx
        .docker
        .create_container(Some(opts.clone()), body.clone())
        .await;
    // The name may still be held by a container Docker is removing: wait for it, briefly.
    for _ in 0..20 {
        match &attempt {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                attempt = ctx
                    .docker
                    .create_container(Some(opts.clone()), body.clone())
                    .await;
            }
            _ => break,
        }
    }
    let created = attempt.map_err(|e| {
        fail(
            &svc.name,
            format!("creating container {cname}: {}", docker_message(&e)),
        )
    })?;
    let id = created.id;
    if svc.network_mode.is_none() {
        for key in svc.networks.keys().skip(1) {
            let net = spec::network_name(&ctx.project, key);
            d::connect_network(&ctx.docker, &net, &id, spec::endpoint(&identity, key))
                .await
                .map_err(|e| {
                    fail(
                        &svc.name,
                        format!(
                            "connecting {cname} to network {net}: {}",
                            docker_message(&e)
                        ),
                    )
                })?;
        }
    }
    Ok(id)
}

/// Replace `old_id` without downtime: the new container takes the canonical name and the
/// network aliases, and the old one leaves only once the new one is ready.
async fn start_first(
    ctx: &Ctx,
    svc: &Service,
    hash: &str,
    number: u32,
    old_id: &str,
    old_name: &str,
    deadline: Instant,
) -> Result<String, EngineError> {
    let canonical = spec::container_name(&ctx.project, svc, number);
    let parked = format!("{canonical}-old-{}", &old_id[..old_id.len().min(12)]);
    d::rename(&ctx.docker, old_id, &parked).await.map_err(|e| {
        fail(
            &svc.name,
            format!("renaming {old_name} aside: {}", docker_message(&e)),
        )
    })?;
    let new_id = match create_and_start(ctx, svc, hash, number, Some(&canonical)).await {
        Ok(id) => id,
        Err(e) => {
            let _ = d::rename(&ctx.docker, old_id, old_name).await;
            return Err(e);
        }
    };
    let one_shot = ctx.project.is_one_shot(&svc.name);
    if let Err(e) = wait_ready(ctx, svc, std::slice::from_ref(&new_id), deadline, one_shot).await {
        // Roll back: the old container never stopped serving.
        let _ = d::stop_and_remove(&ctx.docker, &new_id, grace(svc)).await;
        let _ = d::rename(&ctx.docker, old_id, old_name).await;
        return Err(e);
    }
    // Stop the old container while it is still attached: a well-behaved service closes its
    // listener on SIGTERM and finishes what is in flight; clients whose connection is refused
    // use the name's other addresses (the new container). Leaving the network first would cut
    // in-flight requests and strand clients that had just resolved the old address.
    d::stop_and_remove(&ctx.docker, old_id, grace(svc))
        .await
        .map_err(|e| {
            fail(
                &svc.name,
                format!(
                    "removing the old container {old_name}: {}",
                    docker_message(&e)
                ),
            )
        })?;
    Ok(new_id)
}

/// Wait until every container is ready: exited 0 for a one-shot (`one_shot`: someone waits for
/// its completion), else healthy if the service has a healthcheck, running if not. A service is
/// meant to keep running: a container of one that exits, even with code 0, fails it, as does
/// one that turns unhealthy, or a one-shot that exits otherwise than successfully — with its
/// last log lines.
async fn wait_ready(
    ctx: &Ctx,
    svc: &Service,
    containers: &[String],
    deadline: Instant,
    one_shot: bool,
) -> Result<Ready, EngineError> {
    let has_health = svc.has_healthcheck();
    let result = if one_shot {
        Ready::Completed
    } else if has_health {
        Ready::Healthy
    } else {
        Ready::Started
    };
    let mut events = ctx.events.clone();
    for id in containers {
        loop {
            // An event after this point wakes the wait below, even one that lands during the
            // inspect.
            events.mark_unchanged();
            let info = d::inspect(&ctx.docker, id).await.map_err(|e| {
                fail(
                    &svc.name,
                    format!("inspecting container {id}: {}", docker_message(&e)),
                )
            })?;
            let cname = info
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            // A `healthcheck:` without `test` takes the image's; Docker merged it into the
            // container's configuration, so an image without one shows here.
            let no_test = info
                .config
                .as_ref()
                .and_then(|c| c.healthcheck.as_ref())
                .and_then(|h| h.test.as_ref())
                .is_none_or(|t| t.first().is_none_or(|w| w == "NONE"));
            if has_health && !one_shot && no_test {
                return Err(fail(
                    &svc.name,
                    format!(
                        "container {cname} has no healthcheck to wait for: the service's healthcheck gives no test and its image {} defines none",
                        svc.image
                    ),
                ));
            }
            let state = info.state.unwrap_or_default();
            let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
            let health = state
                .health
                .as_ref()
                .and_then(|h| h.status)
                .unwrap_or(HealthStatusEnum::EMPTY);
            match status {
                ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD => {
                    let code = state.exit_code.unwrap_or(-1);
                    if code == 0 && one_shot {
                        break;
                    }
                    let why = if one_shot {
                        ""
                    } else {
                        " (a service must keep running; only one that another service awaits with service_completed_successfully may finish)"
                    };
                    let logs = d::last_log_lines(&ctx.docker, id, LOG_LINES).await;
                    return Err(EngineError::Service {
                        service: svc.name.clone(),
                        reason: format!("container {cname} exited with code {code}{why}"),
                        logs,
                    });
                }
                // A one-shot is done when it has exited, healthcheck or not.
                _ if one_shot => {}
                ContainerStateStatusEnum::RUNNING if !has_health => break,
                ContainerStateStatusEnum::RUNNING if health == HealthStatusEnum::HEALTHY => break,
                ContainerStateStatusEnum::RUNNING if health == HealthStatusEnum::UNHEALTHY => {
                    let probe = state
                        .health
                        .and_then(|h| h.log)
                        .and_then(|l| l.last().cloned())
                        .and_then(|r| r.output)
                        .unwrap_or_default();
                    let mut logs = d::last_log_lines(&ctx.docker, id, LOG_LINES).await;
                    if !probe.trim().is_empty() {
                        logs.push(format!("(last healthcheck output) {}", probe.trim()));
                    }
                    return Err(EngineError::Service {
                        service: svc.name.clone(),
                        reason: format!("container {cname} is unhealthy"),
                        logs,
                    });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let logs = d::last_log_lines(&ctx.docker, id, LOG_LINES).await;
                let what = if one_shot {
                    "completed"
                } else if has_health {
                    "healthy"
                } else {
                    "running"
                };
                return Err(EngineError::Service {
                    service: svc.name.clone(),
                    reason: format!(
                        "container {cname} was not {what} within {:?} (state {status}, health {health})",
                        ctx.opts.wait_timeout
                    ),
                    logs,
                });
            }
            if let Ok(Err(_)) = tokio::time::timeout(FALLBACK_POLL, events.changed()).await {
                // The event stream ended: poll.
                tokio::time::sleep(FALLBACK_POLL).await;
            }
        }
    }
    Ok(result)
}
