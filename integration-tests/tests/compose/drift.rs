//! Drift: `compose up --watch` keeps the stack converged. A container removed or stopped by hand
//! comes back, and the agent says what it corrected.

use std::process::{Command, Stdio};

use noco_integration_tests::docker::{require_docker, testapp_image, with_docker};
use noco_integration_tests::stack::Stack;
use noco_integration_tests::{bin, eventually, path_str};

/// `noco-agent compose up --watch` on the stack, its output in `watch.log`; killed at drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn watch(stack: &Stack) -> (Kill, std::path::PathBuf) {
    let log = stack.path().join("watch.log");
    let out = std::fs::File::create(&log).unwrap();
    let image = format!("IMAGE={}", testapp_image());
    let file = stack.file();
    let w = Kill(
        Command::new(bin("noco-agent"))
            .args([
                "compose",
                "up",
                path_str(&file),
                "-p",
                &stack.project,
                "--var",
                &image,
                "--watch",
                "--interval",
                "2s",
            ])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("the watcher to start watching", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("watching"))
    });
    (w, log)
}

const STACK: &str = "services:\n  web:\n    image: ${IMAGE}\n    restart: unless-stopped\n  api:\n    image: ${IMAGE}\n    restart: unless-stopped\n";

#[test]
fn a_container_removed_or_stopped_by_hand_is_put_back_and_reported() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("drift", STACK);
    stack.up();
    let (mut w, log) = watch(&stack);
    let before = stack.ids();
    let web = stack.container("web", 1);
    let api = stack.container("api", 1);

    let name = web.clone();
    with_docker(|docker| async move {
        docker
            .remove_container(
                &name,
                Some(
                    bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .build(),
                ),
            )
            .await?;
        Ok(())
    })
    .unwrap();
    let restored = eventually("web to be recreated", || {
        stack
            .ps()
            .into_iter()
            .find(|c| c["name"] == web.as_str() && c["running"] == true)
            .map(|c| c["id"].as_str().unwrap_or_default().to_string())
    });
    assert_ne!(restored, before[&web], "a new container");

    let name = api.clone();
    with_docker(|docker| async move {
        docker.stop_container(&name, None).await?;
        Ok(())
    })
    .unwrap();
    eventually("api to run again", || {
        stack
            .ps()
            .into_iter()
            .find(|c| c["name"] == api.as_str() && c["running"] == true)
    });
    assert_eq!(
        stack.ids()[&api],
        before[&api],
        "a stopped container is started, not replaced"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("drift corrected: container {web}: created")),
        "{text}"
    );
    assert!(
        text.contains(&format!("drift corrected: container {api}: started")),
        "{text}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &w.0.id().to_string()])
        .status();
    let status = eventually("the watcher to stop on SIGTERM", || {
        w.0.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
}

/// A service with a healthcheck and no restart policy, one without either, and a one-shot that
/// `api` waits for.
const STOPPABLE: &str = r#"
services:
  migrate:
    image: ${IMAGE}
    environment: { EXIT_AFTER: "0", EXIT_CODE: "0" }
  api:
    image: ${IMAGE}
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 300ms
      retries: 20
    depends_on:
      migrate: { condition: service_completed_successfully }
  worker:
    image: ${IMAGE}
"#;

fn docker_stop(name: &str) {
    let name = name.to_string();
    with_docker(|docker| async move {
        docker.stop_container(&name, None).await?;
        Ok(())
    })
    .unwrap();
}

fn started_at(name: &str) -> String {
    noco_integration_tests::stack::inspect(name)
        .state
        .and_then(|s| s.started_at)
        .unwrap_or_default()
}

#[test]
fn a_stopped_service_with_a_healthcheck_is_started_again_but_a_finished_one_shot_is_not() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("stopped", STOPPABLE);
    stack.up();
    let (migrate, api, worker) = (
        stack.container("migrate", 1),
        stack.container("api", 1),
        stack.container("worker", 1),
    );
    let migrate_ran = started_at(&migrate);

    // `docker stop`: the workload exits 0 on SIGTERM, as a well-behaved service does.
    docker_stop(&api);
    let state = noco_integration_tests::stack::inspect(&api).state.unwrap();
    assert_eq!(state.exit_code, Some(0), "{state:?}");
    let plan = stack.ok("plan", &[]);
    assert!(
        plan.contains(&format!("start     {api}: the container is exited (0)")),
        "plan must start the stopped service:\n{plan}"
    );
    assert!(!plan.contains("up to date"), "{plan}");
    assert!(
        plan.contains(&format!("keep      {migrate}"))
            && plan.contains(&format!("keep      {worker}")),
        "the finished one-shot and the running worker are left alone:\n{plan}"
    );

    // Under `compose up --watch`, a service stopped by hand comes back, healthy.
    let (mut w, log) = watch(&stack);
    let running_and = |name: &str, health: serde_json::Value| {
        stack
            .ps()
            .into_iter()
            .find(|c| c["name"] == name && c["running"] == true && c["health"] == health)
    };
    eventually("api to be started by the watcher's first apply", || {
        running_and(&api, "healthy".into())
    });
    let before = stack.ids();

    // One at a time: a container stopping while a reconcile waits for it fails that reconcile
    // (it is put back by the next one).
    let corrected = |name: &str| {
        let line = format!("drift corrected: container {name}: started");
        eventually(&format!("the watcher to say: {line}"), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains(&line))
        })
    };
    docker_stop(&api);
    eventually("api to run again, healthy", || {
        running_and(&api, "healthy".into())
    });
    corrected(&api);
    docker_stop(&worker);
    eventually("worker to run again", || {
        running_and(&worker, serde_json::Value::Null)
    });
    corrected(&worker);
    let after = stack.ids();
    assert_eq!(after[&api], before[&api], "started, not replaced");
    assert_eq!(after[&worker], before[&worker], "started, not replaced");
    assert_eq!(
        started_at(&migrate),
        migrate_ran,
        "the one-shot that completed was not run again"
    );
    let again = stack.ok("plan", &[]);
    assert!(again.contains("up to date"), "{again}");
    let _ = Command::new("kill")
        .args(["-TERM", &w.0.id().to_string()])
        .status();
    let status = eventually("the watcher to stop on SIGTERM", || {
        w.0.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
}
