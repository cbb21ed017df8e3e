//! Labels and commands as compose v2 makes them, so that `docker compose` on the host agrees
//! with noco: networks and volumes carry `com.docker.compose.version`, containers the image ID
//! in `com.docker.compose.image` (compared as compose compares it: a reference that now names
//! another image recreates the container), and `down -t` bounds the stop timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use noco_integration_tests::docker::{
    image_id, remove_image, require_docker, tag_image, testapp_image, variant_image, with_docker,
};
use noco_integration_tests::stack::{Stack, inspect, unique_project};

fn network_labels(name: &str) -> HashMap<String, String> {
    with_docker(|docker| async move {
        let n = docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await?;
        Ok(n.labels.unwrap_or_default())
    })
    .unwrap_or_else(|e| panic!("inspecting network {name}: {e:#}"))
}

fn volume_labels(name: &str) -> HashMap<String, String> {
    with_docker(|docker| async move { Ok(docker.inspect_volume(name).await?.labels) })
        .unwrap_or_else(|e| panic!("inspecting volume {name}: {e:#}"))
}

#[test]
fn networks_and_volumes_carry_the_compose_version_and_containers_their_image_id() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new(
        "lbl",
        "services:\n  web:\n    image: ${IMAGE}\n    volumes: [data:/data]\nvolumes:\n  data: {}\n",
    );
    stack.up();
    let p = &stack.project;
    let container = inspect(&stack.container("web", 1));
    let labels = container.config.and_then(|c| c.labels).unwrap_or_default();
    let version = labels
        .get("com.docker.compose.version")
        .cloned()
        .unwrap_or_default();
    assert!(!version.is_empty(), "{labels:?}");
    for (what, got) in [
        ("network", network_labels(&format!("{p}_default"))),
        ("volume", volume_labels(&format!("{p}_data"))),
    ] {
        assert_eq!(
            got.get("com.docker.compose.version"),
            Some(&version),
            "{what}: {got:?}"
        );
        assert_eq!(got.get("com.docker.compose.project"), Some(p), "{what}");
    }
    let id = image_id(&testapp_image()).unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(labels.get("com.docker.compose.image"), Some(&id));
    assert_eq!(container.image.as_ref(), Some(&id));
}

/// Removes a test's image reference at the end.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        remove_image(&self.0);
    }
}

#[test]
fn a_reference_that_now_names_another_image_recreates_its_containers() {
    if !require_docker() {
        return;
    }
    // Declared first, dropped last: the containers go before the image.
    let reference = format!("noco-retag-{}:v1", unique_project("r"));
    let _guard = ImageGuard(reference.clone());
    let stack = Stack::new("retag", "services: {}\n");
    tag_image(&testapp_image(), &reference).unwrap();
    stack.write_compose(&format!(
        "services:\n  web:\n    image: {reference}\n    pull_policy: never\n"
    ));
    stack.up();
    let before = stack.ids();
    assert!(stack.ok("plan", &[]).contains("up to date"));

    // The same reference now names another image (pulled, rebuilt or retagged).
    variant_image(&testapp_image(), &reference, &stack.project).unwrap();
    let new_id = image_id(&reference).unwrap();
    assert_ne!(new_id, image_id(&testapp_image()).unwrap());
    let plan = stack.ok("plan", &[]);
    assert!(
        plan.contains(&format!(
            "recreate  {}: image {reference} changed",
            stack.container("web", 1)
        )),
        "{plan}"
    );
    stack.up();
    let after = stack.ids();
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "the container was recreated");
    let labels = inspect(&stack.container("web", 1))
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert_eq!(labels.get("com.docker.compose.image"), Some(&new_id));
    assert!(stack.ok("plan", &[]).contains("up to date"));
}

#[test]
fn down_gives_each_container_at_most_its_timeout_to_stop() {
    if !require_docker() {
        return;
    }
    // As PID 1 without a handler, the test app ignores SIGUSR2: only the kill stops it.
    let stack = Stack::new(
        "downt",
        "services:\n  web:\n    image: ${IMAGE}\n    stop_signal: SIGUSR2\n    stop_grace_period: 60s\n",
    );
    stack.up();
    let started = Instant::now();
    let out = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args(["compose", "down", "-p", &stack.project, "-t", "1"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(15),
        "down -t 1 took {took:?} (the service's own grace period is 60 s)"
    );
    assert!(stack.ps().is_empty());
}
