//! Reading what exists of a project from Docker: its containers (by the compose project label),
//! networks and volumes. One list call each, all at once, so an unchanged re-apply costs
//! milliseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use noco_compose::model::Project;
use noco_compose::plan::{Health, Observed, ObservedContainer, RunState};

use super::EngineError;
use super::labels;

fn project_filter(project: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![format!("{}={project}", labels::PROJECT)],
    )])
}

/// Parse Docker's state and status text ("Up 3 seconds (healthy)", "Exited (1) 2 minutes ago").
pub fn run_state(state: &str, status: &str) -> RunState {
    match state {
        "running" => RunState::Running,
        "restarting" => RunState::Restarting,
        "paused" => RunState::Paused,
        "created" => RunState::Created,
        "dead" => RunState::Dead,
        "exited" | "removing" => {
            let code = status
                .strip_prefix("Exited (")
                .and_then(|s| s.split(')').next())
                .and_then(|c| c.parse().ok())
                .unwrap_or(-1);
            RunState::Exited(code)
        }
        _ => RunState::Created,
    }
}

pub fn health(status: &str) -> Option<Health> {
    if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

pub async fn containers(
    docker: &Docker,
    project: &str,
) -> Result<Vec<ObservedContainer>, EngineError> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&project_filter(project))
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| EngineError::docker("listing containers", e))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            if labels
                .get(labels::ONEOFF)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                return None;
            }
            let status = c.status.unwrap_or_default();
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            // A container Docker is removing is already gone for planning purposes.
            if state == "removing" {
                return None;
            }
            Some(ObservedContainer {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                service: labels.get(labels::SERVICE).cloned().unwrap_or_default(),
                number: labels
                    .get(labels::NUMBER)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                config_hash: labels.get(labels::CONFIG_HASH).cloned(),
                // Before noco recorded the image ID the label held the reference.
                image: labels
                    .get(labels::IMAGE)
                    .filter(|i| i.starts_with("sha256:"))
                    .cloned()
                    .or(c.image_id),
                state: run_state(&state, &status),
                health: health(&status),
            })
        })
        .collect())
}

/// The IDs of the local images the project's services name, by reference; one inspect each,
/// at once. A reference with no local image is left out, and so is one Docker cannot inspect:
/// the apply's image check reports it (nothing to compare is not a reason to fail a plan).
pub async fn images(docker: &Docker, project: &Project) -> BTreeMap<String, String> {
    let references: BTreeSet<&str> = project
        .services
        .values()
        .map(|s| s.image.as_str())
        .collect();
    let inspected = futures_util::future::join_all(
        references
            .iter()
            .map(|r| async move { (*r, docker.inspect_image(r).await) }),
    )
    .await;
    inspected
        .into_iter()
        .filter_map(|(reference, result)| Some((reference.to_owned(), result.ok()?.id?)))
        .collect()
}

pub async fn observe(docker: &Docker, project: &Project) -> Result<Observed, EngineError> {
    // Four independent reads: at once.
    let (images, containers, networks, volumes) = tokio::join!(
        images(docker, project),
        containers(docker, &project.name),
        docker.list_networks(Some(ListNetworksOptionsBuilder::default().build())),
        docker.list_volumes(Some(ListVolumesOptionsBuilder::default().build())),
    );
    let containers = containers?;
    let networks: BTreeSet<String> = networks
        .map_err(|e| EngineError::docker("listing networks", e))?
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    let volumes: BTreeSet<String> = volumes
        .map_err(|e| EngineError::docker("listing volumes", e))?
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    Ok(Observed {
        containers,
        networks,
        volumes,
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_status_text_becomes_state_and_health() {
        assert_eq!(
            run_state("exited", "Exited (137) 2 minutes ago"),
            RunState::Exited(137)
        );
        assert_eq!(
            run_state("running", "Up 3 seconds (healthy)"),
            RunState::Running
        );
        assert_eq!(health("Up 3 seconds (healthy)"), Some(Health::Healthy));
        assert_eq!(
            health("Up 1 second (health: starting)"),
            Some(Health::Starting)
        );
        assert_eq!(health("Up 9 minutes (unhealthy)"), Some(Health::Unhealthy));
        assert_eq!(health("Up 9 minutes"), None);
    }
}
