//! The test workload's image works: built through the Engine API from scratch, it serves its
//! version on an ephemeral host port, health-checks itself with `/noco-testapp health`, writes
//! its data directory, and exits 0 promptly on SIGTERM. And `cleanup_project` removes exactly
//! the compose projects it is asked to.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, StopContainerOptionsBuilder,
};
use noco_integration_tests::docker::{
    COMPOSE_PROJECT_LABEL, cleanup_project, exec, host_port, http, http_get, remove_container,
    require_docker, testapp_image, with_docker,
};
use noco_integration_tests::eventually;

/// `<prefix>-<pid>-<nanos>`: unique per run.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Removes the container when the test ends, passed or failed.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        remove_container(&self.0);
    }
}

#[test]
fn testapp_image_serves_checks_health_and_stops_on_sigterm() {
    if !require_docker() {
        return;
    }
    let cold = Instant::now();
    let image = testapp_image();
    eprintln!("testapp_image() -> {image} in {:.1?}", cold.elapsed());

    let name = unique("noco-testapp-it");
    let container = Container(name.clone());

    with_docker(|docker| {
        let (image, name) = (image.clone(), name.clone());
        async move {
            let config = ContainerCreateBody {
                image: Some(image),
                env: Some(vec!["VERSION=1.2.3".to_string()]),
                host_config: Some(HostConfig {
                    // An ephemeral host port on loopback: no fixed port to collide on.
                    port_bindings: Some(HashMap::from([(
                        "8080/tcp".to_string(),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".to_string()),
                            host_port: Some(String::new()),
                        }]),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            docker.create_container(Some(options), config).await?;
            docker.start_container(&name, None).await?;
            Ok(())
        }
    })
    .expect("creating and starting the container");

    let port = host_port(&container.0, "8080/tcp")
        .expect("inspecting the container")
        .expect("a published host port for 8080/tcp");

    let version = eventually("GET /version to answer", || http_get(port, "/version"));
    assert_eq!(
        version.split(' ').next(),
        Some("1.2.3"),
        "/version answered {version:?}"
    );
    assert_eq!(http_get(port, "/env/VERSION").as_deref(), Some("1.2.3"));

    // The image's /data is writable.
    let (status, _) = http(port, "PUT", "/file/probe", b"written in a test").expect("PUT /file");
    assert_eq!(status, 200);
    assert_eq!(
        http_get(port, "/file/probe").as_deref(),
        Some("written in a test")
    );

    let (code, output) = exec(&name, &["/noco-testapp", "health"]).expect("exec health");
    assert_eq!(code, 0, "health check of a healthy app: {output}");

    assert_eq!(
        http_get(port, "/fail").as_deref(),
        Some("/health fails from now on")
    );
    let (code, output) = exec(&name, &["/noco-testapp", "health"]).expect("exec health");
    assert_eq!(code, 1, "health check after /fail: {output}");

    // `docker stop` sends SIGTERM, and SIGKILL only after 10 s: an exit code of 0 well within
    // those 10 s shows the app handles SIGTERM as PID 1.
    let stopping = Instant::now();
    let exit_code = with_docker(|docker| {
        let name = name.clone();
        async move {
            let options = StopContainerOptionsBuilder::default().t(10).build();
            docker.stop_container(&name, Some(options)).await?;
            let info = docker.inspect_container(&name, None).await?;
            Ok(info.state.and_then(|s| s.exit_code))
        }
    })
    .expect("stopping the container");
    let stop_time = stopping.elapsed();
    eprintln!("stopped in {stop_time:.1?} with exit code {exit_code:?}");
    assert_eq!(exit_code, Some(0), "exit code after SIGTERM");
    assert!(
        stop_time < Duration::from_secs(5),
        "stopping took {stop_time:?}: SIGTERM was not handled"
    );

    drop(container);
}

/// Cleans up compose projects by prefix when the test ends, passed or failed.
struct Projects(Vec<String>);

impl Drop for Projects {
    fn drop(&mut self) {
        for prefix in &self.0 {
            cleanup_project(prefix);
        }
    }
}

/// Names of the containers, networks and volumes labelled with a project of `project`.
fn resources_of(project: &str) -> Vec<String> {
    with_docker(|docker| async move {
        let label = format!("{COMPOSE_PROJECT_LABEL}={project}");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let mut names = Vec::new();
        let containers = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for c in docker.list_containers(Some(containers)).await? {
            names.extend(c.names.unwrap_or_default());
        }
        let networks = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        for n in docker.list_networks(Some(networks)).await? {
            names.extend(n.name);
        }
        let volumes = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let volumes = docker.list_volumes(Some(volumes)).await?;
        names.extend(
            volumes
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name),
        );
        Ok(names)
    })
    .expect("listing a project's resources")
}

#[test]
fn cleanup_project_removes_the_projects_with_the_prefix_only() {
    if !require_docker() {
        return;
    }
    let image = testapp_image();
    let prefix = unique("nocotest-cleanup");
    let gone = format!("{prefix}-app");
    let kept = unique("nocotest-kept");
    let _guard = Projects(vec![prefix.clone(), kept.clone()]);
    cleanup_project(&prefix);

    for project in [&gone, &kept] {
        with_docker(|docker| {
            let (image, project) = (image.clone(), project.clone());
            async move {
                let labels = HashMap::from([(COMPOSE_PROJECT_LABEL.to_string(), project.clone())]);
                docker
                    .create_network(NetworkCreateRequest {
                        name: format!("{project}_default"),
                        labels: Some(labels.clone()),
                        ..Default::default()
                    })
                    .await?;
                docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(format!("{project}_data")),
                        labels: Some(labels.clone()),
                        ..Default::default()
                    })
                    .await?;
                let name = format!("{project}-web-1");
                let config = ContainerCreateBody {
                    image: Some(image),
                    labels: Some(labels),
                    host_config: Some(HostConfig {
                        network_mode: Some(format!("{project}_default")),
                        binds: Some(vec![format!("{project}_data:/data")]),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let options = CreateContainerOptionsBuilder::default().name(&name).build();
                docker.create_container(Some(options), config).await?;
                docker.start_container(&name, None).await?;
                Ok(())
            }
        })
        .expect("creating a labelled project");
        assert_eq!(
            resources_of(project).len(),
            3,
            "{project}: {:?}",
            resources_of(project)
        );
    }

    cleanup_project(&prefix);
    assert_eq!(resources_of(&gone), Vec::<String>::new(), "left behind");
    assert_eq!(resources_of(&kept).len(), 3, "{kept} must survive");

    cleanup_project(&kept);
    assert_eq!(resources_of(&kept), Vec::<String>::new(), "left behind");
}
