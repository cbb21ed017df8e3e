//! Autonomy: an agent keeps running its last accepted state while the server is away — across
//! its own restart — correcting drift; and generations keep increasing across server restarts.

use noco_integration_tests::docker::{require_docker, with_docker};
use noco_integration_tests::{Fleet, ServerOptions, eventually};

use crate::support::{Prefix, app_stack, apply_converged, host_status, reported, running};

#[test]
fn an_agent_restarted_while_the_server_is_down_keeps_its_stacks_and_corrects_drift() {
    if !require_docker() {
        return;
    }
    let mut fleet = Fleet::start(ServerOptions::default());
    let p = Prefix::new("fauto", &["shop"]);
    fleet.enroll("web-1", "role=web");
    let mut agent = fleet.run_agent_with(
        "web-1",
        &["--project-prefix", &p.0, "--reconcile-interval", "2s"],
    );
    fleet.wait_status("web-1", "online");
    let rev = apply_converged(&fleet, &app_stack("v1"), &["web-1"]);
    let generation = host_status(&fleet, "web-1")["applied_generation"]
        .as_u64()
        .unwrap();

    fleet.stop_server();
    agent.terminate();
    let name = running(&p.project("shop")).remove(0);
    let n = name.clone();
    with_docker(|docker| async move {
        docker
            .remove_container(
                &n,
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
    assert!(running(&p.project("shop")).is_empty());

    // No server: the agent applies what it persisted.
    let _agent = fleet.run_agent_with(
        "web-1",
        &["--project-prefix", &p.0, "--reconcile-interval", "2s"],
    );
    eventually("the agent to restore shop without a server", || {
        (running(&p.project("shop")) == [name.clone()]).then_some(())
    });

    fleet.start_server();
    fleet.wait_status("web-1", "online");
    eventually("the report to come back", || {
        let h = host_status(&fleet, "web-1");
        (h["applied_generation"].as_u64() == Some(generation)
            && reported(&fleet, "web-1", "shop") == Some((rev.clone(), "converged".into())))
        .then_some(())
    });
}

#[test]
fn generations_continue_across_a_server_restart() {
    if !require_docker() {
        return;
    }
    let mut fleet = Fleet::start(ServerOptions::default());
    let p = Prefix::new("fgen", &["shop"]);
    fleet.enroll("web-1", "role=web");
    let _agent = fleet.run_agent_with("web-1", &["--project-prefix", &p.0]);
    fleet.wait_status("web-1", "online");
    apply_converged(&fleet, &app_stack("v1"), &["web-1"]);
    let g1 = host_status(&fleet, "web-1")["desired_generation"]
        .as_u64()
        .unwrap();

    fleet.stop_server();
    fleet.start_server();
    fleet.wait_status("web-1", "online");
    apply_converged(&fleet, &app_stack("v2"), &["web-1"]);
    let h = host_status(&fleet, "web-1");
    let g2 = h["desired_generation"].as_u64().unwrap();
    assert!(
        g2 > g1,
        "generation {g2} after the restart is not above {g1}"
    );
    assert_eq!(h["applied_generation"].as_u64(), Some(g2));
    assert_eq!(h["refused"], "", "{h}");
}
