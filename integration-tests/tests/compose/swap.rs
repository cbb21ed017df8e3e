//! Zero-downtime updates: with `deploy.update_config.order: start-first`, a client inside the
//! stack's network calling the service by name sees no failed request while every replica is
//! replaced; with a fixed host port the plan says it falls back to stop-first.

use std::time::Duration;

use noco_integration_tests::docker::{probe_result, remove_container, require_docker, start_probe};
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

#[test]
fn start_first_replaces_every_replica_with_zero_failed_requests() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("swap", &web("v1"));
    stack.up();
    let before = stack.ids();
    let probe = format!("{}-probe", stack.project);
    start_probe(
        &probe,
        &format!("{}_default", stack.project),
        "http://web:8080/version",
        15_000,
    );
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
    let seen = probe_result(&probe);
    assert_eq!(
        seen.failed, 0,
        "requests failed during the swap:\n{}",
        seen.output
    );
    assert!(
        seen.ok > 200,
        "the probe made too few requests to prove anything: {}",
        seen.ok
    );
    assert!(
        seen.versions.iter().any(|v| v == "v1") && seen.versions.iter().any(|v| v == "v2"),
        "the probe saw both versions: {:?}",
        seen.versions
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
