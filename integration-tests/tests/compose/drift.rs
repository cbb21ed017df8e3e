//! Drift: `compose up --watch` keeps the stack converged. A container removed or stopped by hand
//! comes back, and the agent says what it corrected.

use std::process::{Command, Stdio};

use noco_integration_tests::docker::{require_docker, testapp_image, with_docker};
use noco_integration_tests::stack::Stack;
use noco_integration_tests::{bin, eventually, path_str};

const STACK: &str = "services:\n  web:\n    image: ${IMAGE}\n    restart: unless-stopped\n  api:\n    image: ${IMAGE}\n    restart: unless-stopped\n";

#[test]
fn a_container_removed_or_stopped_by_hand_is_put_back_and_reported() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("drift", STACK);
    stack.up();
    let log = stack.path().join("watch.log");
    let out = std::fs::File::create(&log).unwrap();
    let image = format!("IMAGE={}", testapp_image());
    let file = stack.file();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut w = Kill(
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
