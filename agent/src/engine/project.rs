//! Whole-project operations: `up` (observe, plan, apply), `down`, `ps`, and `watch`, which keeps
//! a project converged — a container removed, killed or changed by hand is put back, on Docker
//! events and on a periodic reconcile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    EventsOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use futures_util::StreamExt;
use noco_compose::model::Project;
use noco_compose::plan::{self, ObservedContainer, Plan};

use super::apply::{ApplyOptions, ApplyReport, apply};
use super::{EngineError, docker as d, labels, observe};

/// Observe and plan, without changing anything.
pub async fn plan(docker: &Docker, project: &Project) -> Result<Plan, EngineError> {
    let observed = observe::observe(docker, project).await?;
    Ok(plan::plan(project, &observed, noco_compose::config_hash))
}

/// Converge the project; returns the plan it followed and what it did.
pub async fn up(
    docker: &Docker,
    project: &Project,
    opts: &ApplyOptions,
) -> Result<(Plan, ApplyReport), EngineError> {
    let plan = plan(docker, project).await?;
    let report = apply(docker, project, &plan, opts).await?;
    // Converged: no container mounts the secret and config files of before any more.
    if let Err(e) = super::files::prune(&opts.files_dir, project) {
        tracing::warn!(project = %project.name, "{e}");
    }
    Ok((plan, report))
}

/// What `down` removed.
#[derive(Debug, Default)]
pub struct DownReport {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// Remove the project's containers and networks; its volumes only with `volumes`. Each
/// container has `timeout` to stop before it is killed (default: its own stop timeout, which
/// is its `stop_grace_period`, as with `docker compose down`).
pub async fn down(
    docker: &Docker,
    project: &str,
    volumes: bool,
    timeout: Option<Duration>,
) -> Result<DownReport, EngineError> {
    let mut report = DownReport::default();
    let containers = observe::containers(docker, project).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for c in containers {
        let docker = docker.clone();
        tasks.spawn(async move {
            d::stop_and_remove_within(&docker, &c.id, timeout)
                .await
                .map(|()| c.name.clone())
                .map_err(|e| (c.name, e))
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(name)) => report.containers.push(name),
            Ok(Err((name, e))) => {
                return Err(EngineError::docker(format!("removing container {name}"), e));
            }
            Err(e) => {
                return Err(EngineError::Precondition(format!(
                    "a removal task failed: {e}"
                )));
            }
        }
    }
    report.containers.sort();
    let filter = HashMap::from([(
        "label".to_string(),
        vec![format!("{}={project}", labels::PROJECT)],
    )]);
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await
        .map_err(|e| EngineError::docker("listing networks", e))?;
    for n in networks {
        if let Some(name) = n.name {
            match docker.remove_network(&name).await {
                Ok(()) => report.networks.push(name),
                Err(e) if super::not_found(&e) => {}
                Err(e) => return Err(EngineError::docker(format!("removing network {name}"), e)),
            }
        }
    }
    if volumes {
        let list = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await
            .map_err(|e| EngineError::docker("listing volumes", e))?;
        for v in list.volumes.unwrap_or_default() {
            match docker
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
            {
                Ok(()) => report.volumes.push(v.name),
                Err(e) if super::not_found(&e) => {}
                Err(e) => {
                    return Err(EngineError::docker(
                        format!("removing volume {}", v.name),
                        e,
                    ));
                }
            }
        }
    }
    Ok(report)
}

/// The project's containers, sorted by service and number.
pub async fn ps(docker: &Docker, project: &str) -> Result<Vec<ObservedContainer>, EngineError> {
    let mut list = observe::containers(docker, project).await?;
    list.sort_by(|a, b| a.service.cmp(&b.service).then(a.number.cmp(&b.number)));
    Ok(list)
}

/// Whether a Docker container event may mean drift worth a reconcile.
pub fn is_drift_event(action: &str) -> bool {
    matches!(
        action,
        "die" | "destroy" | "stop" | "kill" | "oom" | "health_status: unhealthy"
    )
}

/// Keep `project` converged until `stop` completes: re-plan on every Docker event about the
/// project's containers and every `interval`; apply when the plan is not a no-op, and log what
/// was corrected.
pub async fn watch(
    docker: &Docker,
    project: &Project,
    opts: &ApplyOptions,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), EngineError> {
    tokio::pin!(stop);
    let filter = HashMap::from([
        (
            "label".to_string(),
            vec![format!("{}={}", labels::PROJECT, project.name)],
        ),
        ("type".to_string(), vec!["container".to_string()]),
    ]);
    let mut events = docker.events(Some(
        EventsOptionsBuilder::default().filters(&filter).build(),
    ));
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
            ev = events.next() => match ev {
                Some(Ok(e)) => {
                    let action = e.action.unwrap_or_default();
                    if !is_drift_event(&action) {
                        continue;
                    }
                    // Let a burst of events settle (a removal sends several).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(Err(e)) => {
                    tracing::warn!("Docker events: {}; relying on the periodic reconcile", super::docker_message(&e));
                    events = docker.events(Some(EventsOptionsBuilder::default().filters(&filter).build()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => {
                    events = docker.events(Some(EventsOptionsBuilder::default().filters(&filter).build()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
        let started = Instant::now();
        match up(docker, project, opts).await {
            Ok((plan, report)) if !plan.is_noop() => {
                for action in &report.actions {
                    tracing::info!(project = %project.name, "drift corrected: {action}");
                    crate::outln!("drift corrected: {action}");
                }
                tracing::info!(project = %project.name, "reconciled in {:?}", started.elapsed());
            }
            Ok(_) => {}
            Err(e) => tracing::error!(project = %project.name, "reconcile failed: {e}"),
        }
    }
}
