//! Failures: named, explained, and leaving a stack the next apply converges from.

use noco_integration_tests::docker::{require_docker, with_docker};
use noco_integration_tests::stack::Stack;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_failing_service_fails_the_apply_with_its_reason_and_last_log_lines() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new(
        "fail",
        r#"
services:
  setup:
    image: ${IMAGE}
    environment: { EXIT_AFTER: "0", EXIT_CODE: "3" }
  app:
    image: ${IMAGE}
    depends_on:
      setup: { condition: service_completed_successfully }
  sick:
    image: ${IMAGE}
    environment: { FAIL_HEALTH: "1" }
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 300ms
      retries: 2
"#,
    );
    let out = stack.run("up", &["--wait-timeout", "30s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("service \"setup\"") && err.contains("exited with code 3"),
        "{err}"
    );
    assert!(
        err.contains("service \"sick\"") && err.contains("unhealthy"),
        "{err}"
    );
    assert!(err.contains("last log lines"), "{err}");
    assert!(
        !err.contains("service \"app\""),
        "a dependent's failure is not reported as a root cause: {err}"
    );
    assert!(
        !stack.ps().iter().any(|c| c["service"] == "app"),
        "app was never created"
    );

    // Fixed, the next apply converges from where the failed one stopped.
    stack.write_compose("services:\n  setup:\n    image: ${IMAGE}\n    environment: { EXIT_AFTER: \"0\", EXIT_CODE: \"0\" }\n  app:\n    image: ${IMAGE}\n    depends_on:\n      setup: { condition: service_completed_successfully }\n");
    let out = stack.up();
    assert!(
        out.contains("no longer in the stack"),
        "the sick service is removed: {out}"
    );
    assert!(
        stack
            .ps()
            .iter()
            .any(|c| c["service"] == "app" && c["running"] == true)
    );
}

#[test]
fn a_missing_image_is_reported_before_anything_is_changed() {
    if !require_docker() {
        return;
    }
    // A registry on a closed loopback port: the pull fails at once, without leaving this machine.
    let stack = Stack::new(
        "noimg",
        "services:\n  ok:\n    image: ${IMAGE}\n  missing:\n    image: 127.0.0.1:1/noco/missing:1\n  never:\n    image: noco-absent:1\n    pull_policy: never\n",
    );
    let out = stack.run("up", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("service \"missing\"") && err.contains("cannot be pulled"),
        "{err}"
    );
    assert!(
        err.contains("service \"never\"") && err.contains("pull_policy is never"),
        "{err}"
    );
    assert!(stack.ps().is_empty(), "nothing was created");
    let project = stack.project.clone();
    let networks = with_docker(|docker| async move {
        Ok(docker
            .list_networks(None)
            .await?
            .into_iter()
            .filter_map(|n| n.name)
            .filter(|n| n.starts_with(&project))
            .count())
    })
    .unwrap();
    assert_eq!(networks, 0, "no network was created either");
}

#[test]
fn unsupported_keys_and_invalid_files_are_refused_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(
        &file,
        "services:\n  web:\n    image: nginx\n    secrets: [x]\n  api:\n    build: .\n",
    )
    .unwrap();
    let out = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args(["compose", "validate"])
        .arg(&file)
        .args(["-p", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("services.web") && err.contains("secrets"),
        "{err}"
    );
    assert!(
        err.contains("services.api") && err.contains("build"),
        "{err}"
    );

    let out = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args([
            "compose",
            "validate",
            "/nonexistent/compose.yaml",
            "-p",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unreadable file is an environment error"
    );
}

#[test]
fn a_compose_or_env_file_that_is_not_utf8_is_invalid_input_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    // Latin-1 "é" (0xE9) in a value on line 4: readable, but not UTF-8 text.
    std::fs::write(
        &file,
        b"services:\n  web:\n    image: nginx\n    environment: { GREETING: caf\xe9 }\n",
    )
    .unwrap();
    let validate = |extra: &[&str]| {
        std::process::Command::new(noco_integration_tests::bin("noco-agent"))
            .args(["compose", "validate"])
            .arg(&file)
            .args(["-p", "x"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = validate(&[]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "invalid input, not usage: {err}"
    );
    assert!(
        err.contains("compose.yaml") && err.contains("line 4") && err.contains("not UTF-8"),
        "{err}"
    );

    std::fs::write(&file, "services:\n  web:\n    image: nginx\n").unwrap();
    let env = dir.path().join("bad.env");
    std::fs::write(&env, b"A=1\nB=caf\xe9\n").unwrap();
    let out = validate(&["--env-file", env.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.env") && err.contains("line 2") && err.contains("not UTF-8"),
        "{err}"
    );
}

#[test]
fn service_healthy_on_an_image_without_a_healthcheck_fails_the_apply_saying_so() {
    if !require_docker() {
        return;
    }
    // `healthcheck: {}` asks for the image's own HEALTHCHECK; the test image has none.
    let stack = Stack::new(
        "nohc",
        "services:\n  db:\n    image: ${IMAGE}\n    healthcheck: {}\n  web:\n    image: ${IMAGE}\n    depends_on:\n      db: { condition: service_healthy }\n",
    );
    let out = stack.run("up", &["--wait-timeout", "30s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("service \"db\"") && err.contains("has no healthcheck to wait for"),
        "{err}"
    );
    assert!(
        !stack.ps().iter().any(|c| c["service"] == "web"),
        "web was never created"
    );
}
