//! Zero-downtime updates: with `deploy.update_config.order: start-first`, a client inside the
//! stack's network calling the service by name sees no failed request while every replica is
//! replaced; with a fixed host port the plan says it falls back to stop-first.

use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;
use noco_integration_tests::docker::{
    remove_container, require_docker, testapp_image, with_docker,
};
use noco_integration_tests::stack::Stack;

fn web(version: &str) -> String {
    format!(
        r#"
services:
  web:
    image: ${{IMAGE}}
    environment: {{ VERSION: {version} }}
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 200ms
      timeout: 2s
      retries: 20
    deploy:
      replicas: 2
      update_config:
        order: start-first
"#
    )
}

/// Start a probe container on the stack's network: it calls `http://web:8080/version` every
/// 20 ms for `ms` milliseconds, resolving the name for every request.
fn start_probe(stack: &Stack, ms: u64) -> String {
    let name = format!("{}-probe", stack.project);
    let network = format!("{}_default", stack.project);
    let image = testapp_image();
    let n = name.clone();
    with_docker(|docker| async move {
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(vec![
                "probe".into(),
                "http://web:8080/version".into(),
                ms.to_string(),
                "20".into(),
            ]),
            host_config: Some(HostConfig {
                network_mode: Some(network),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&n).build()),
                body,
            )
            .await?;
        docker.start_container(&n, None).await?;
        Ok(())
    })
    .unwrap();
    name
}

/// Wait for the probe to finish; its summary line `probe ok=N failed=M versions=a,b`.
fn probe_result(name: &str) -> String {
    let n = name.to_string();
    with_docker(|docker| async move {
        let mut wait = docker.wait_container(&n, None);
        while let Some(r) = wait.next().await {
            r?;
        }
        let mut logs = docker.logs(
            &n,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let mut text = String::new();
        while let Some(chunk) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
        }
        Ok(text)
    })
    .unwrap()
}

fn field<'a>(summary: &'a str, key: &str) -> &'a str {
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"))
}

#[test]
fn start_first_replaces_every_replica_with_zero_failed_requests() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("swap", &web("v1"));
    stack.up();
    let before = stack.ids();
    let probe = start_probe(&stack, 15_000);
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            remove_container(&self.0);
        }
    }
    let _guard = Guard(probe.clone());
    std::thread::sleep(Duration::from_secs(2));
    stack.write_compose(&web("v2"));
    let out = stack.up();
    assert!(out.contains("recreated start-first"), "{out}");
    let logs = probe_result(&probe);
    let summary = logs
        .lines()
        .rev()
        .find(|l| l.starts_with("probe "))
        .unwrap_or_else(|| panic!("no summary in probe output:\n{logs}"));
    let ok: u64 = field(summary, "ok").parse().unwrap();
    let failed: u64 = field(summary, "failed").parse().unwrap();
    let versions = field(summary, "versions");
    assert_eq!(failed, 0, "requests failed during the swap:\n{logs}");
    assert!(
        ok > 200,
        "the probe made too few requests to prove anything: {summary}"
    );
    assert!(
        versions.contains("v1") && versions.contains("v2"),
        "the probe saw both versions: {summary}"
    );
    let after = stack.ids();
    assert_eq!(after.len(), 2, "no parked old containers left: {after:?}");
    for (name, id) in &after {
        assert_ne!(before.get(name), Some(id), "{name} was replaced");
    }
}

#[test]
fn a_fixed_host_port_makes_the_plan_fall_back_to_stop_first_and_say_so() {
    if !require_docker() {
        return;
    }
    let yaml = "services:\n  web:\n    image: ${IMAGE}\n    ports: [\"127.0.0.1:18765:8080\"]\n    deploy:\n      update_config: { order: start-first }\n";
    let stack = Stack::new("fixed", yaml);
    let plan = stack.ok("plan", &[]);
    assert!(
        plan.contains("stop-first") && plan.contains("fixed host port 18765"),
        "{plan}"
    );
}
