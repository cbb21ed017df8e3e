//! Host policy, enforced by the agent from its own configuration: a stack mounting the Docker
//! socket is refused by a host that does not allow it and run by one that does.

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::{Fleet, ServerOptions, eventually};

use crate::support::{Prefix, apply, host_status, reported, running};

const SOCKET_STACK: &str = "services:\n  ctl:\n    image: ${IMAGE}\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock:ro\n";

#[test]
fn a_docker_socket_mount_is_refused_unless_the_host_policy_allows_it() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let strict = Prefix::new("fstrict", &["tools"]);
    let lax = Prefix::new("flax", &["tools"]);
    fleet.enroll("strict-1", "role=tools");
    fleet.enroll("lax-1", "role=tools");
    let empty = fleet.path("strict.toml");
    std::fs::write(&empty, "").unwrap();
    let allow = fleet.path("lax.toml");
    std::fs::write(&allow, "[policy]\nallow_docker_socket = true\n").unwrap();
    let _s = fleet.run_agent_with(
        "strict-1",
        &[
            "--project-prefix",
            &strict.0,
            "--config",
            empty.to_str().unwrap(),
        ],
    );
    let _l = fleet.run_agent_with(
        "lax-1",
        &[
            "--project-prefix",
            &lax.0,
            "--config",
            allow.to_str().unwrap(),
        ],
    );
    fleet.wait_status("strict-1", "online");
    fleet.wait_status("lax-1", "online");

    apply(&fleet, "tools", "role=tools", SOCKET_STACK);
    eventually("lax-1 to run the stack", || {
        (reported(&fleet, "lax-1", "tools").map(|r| r.1) == Some("converged".into())).then_some(())
    });
    eventually("strict-1 to refuse it", || {
        (reported(&fleet, "strict-1", "tools").map(|r| r.1) == Some("refused".into())).then_some(())
    });
    let h = host_status(&fleet, "strict-1");
    let error = h["reported"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("docker.sock") && error.contains("ctl"),
        "the refusal names the service and the mount: {h}"
    );
    assert!(
        running(&strict.project("tools")).is_empty(),
        "nothing ran on the strict host"
    );
    assert_eq!(running(&lax.project("tools")).len(), 1);
}
