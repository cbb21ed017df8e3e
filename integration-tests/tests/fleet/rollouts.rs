//! Rollouts across four real agents: a good revision goes canary-then-batches and becomes the
//! stack's revision; a bad one is rolled back everywhere; pause, resume, abort and undo; a server
//! killed mid-rollout finishes it after its restart.

use noco_integration_tests::docker::{
    probe_result, remove_container, require_docker, start_probe_until,
};
use noco_integration_tests::{Fleet, ServerOptions, Value, eventually, path_str};

use crate::support::{
    Prefix, app_stack, apply_converged, reported, rollout, start_rollout as start,
    wait_rollout as wait_phase,
};

/// Four agents labelled role=web, each owning the projects under its own prefix.
fn four(fleet: &Fleet, p: &str) -> (Vec<Prefix>, Vec<noco_integration_tests::Proc>) {
    let mut prefixes = Vec::new();
    let mut agents = Vec::new();
    for i in 1..=4 {
        let name = format!("web-{i}");
        fleet.enroll(&name, "role=web");
        let prefix = Prefix::new(&format!("{p}{i}"), &["shop"]);
        agents.push(fleet.run_agent_with(&name, &["--project-prefix", &prefix.0]));
        prefixes.push(prefix);
    }
    for i in 1..=4 {
        fleet.wait_status(&format!("web-{i}"), "online");
    }
    (prefixes, agents)
}

fn all_on(fleet: &Fleet, revision: &str) -> bool {
    (1..=4).all(|i| {
        reported(fleet, &format!("web-{i}"), "shop")
            == Some((revision.to_string(), "converged".into()))
    })
}

const FAST: &[&str] = &[
    "--canary",
    "1",
    "--batch",
    "2",
    "--min-healthy",
    "1s",
    "--deadline",
    "60s",
];

#[test]
fn a_good_revision_rolls_out_canary_first_then_in_batches() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let (prefixes, _agents) = four(&fleet, "rgood");
    apply_converged(
        &fleet,
        &ha_stack("v1"),
        &["web-1", "web-2", "web-3", "web-4"],
    );
    // On every host, a client in the stack's network calls the service by name throughout.
    let probes: Vec<Probe> = prefixes
        .iter()
        .map(|p| {
            let name = format!("{}shop-probe", p.0);
            start_probe_until(
                &name,
                &format!("{}shop_default", p.0),
                "http://app:8080/version",
                150_000,
                Some("v2"),
            );
            Probe(name)
        })
        .collect();

    let started = start(&fleet, &ha_stack("v2"), FAST);
    let v2 = started["to_revision"].as_str().unwrap().to_string();
    assert_eq!(started["steps"], 3, "{started}");
    let done = wait_phase(&fleet, "succeeded");
    assert!(all_on(&fleet, &v2));
    // Order and concurrency from the event log: one canary host, then batches of two; a step
    // starts only after every host of the previous one was healthy for min-healthy.
    let events = done["events"].as_array().unwrap();
    let at = |host: &str, what: &str| {
        events
            .iter()
            .find(|e| e["host"] == host && e["what"].as_str().unwrap_or_default().contains(what))
            .and_then(|e| e["at_unix_ms"].as_i64())
            .unwrap_or_else(|| panic!("no {what:?} event for {host}: {events:?}"))
    };
    let hosts = done["hosts"].as_array().unwrap();
    let by_step = |s: u64| -> Vec<String> {
        hosts
            .iter()
            .filter(|h| h["step"] == s)
            .map(|h| h["host"].as_str().unwrap().to_string())
            .collect()
    };
    let (canary, b1, b2) = (by_step(1), by_step(2), by_step(3));
    assert_eq!((canary.len(), b1.len(), b2.len()), (1, 2, 1), "{hosts:?}");
    let canary_healthy = at(&canary[0], "healthy on");
    for h in &b1 {
        assert!(
            at(h, "updating to") >= canary_healthy,
            "{h} started before the canary passed"
        );
        assert_eq!(
            at(h, "updating to"),
            at(&b1[0], "updating to"),
            "batch hosts start together"
        );
    }
    let b1_healthy = b1.iter().map(|h| at(h, "healthy on")).max().unwrap();
    assert!(
        at(&b2[0], "updating to") >= b1_healthy,
        "batch 2 started before batch 1 passed"
    );
    let stacks = fleet.ctl_json(&["stack", "ls"]);
    assert_eq!(
        stacks[0]["revision"],
        v2.as_str(),
        "the stack moved to the new revision: {stacks}"
    );
    assert!(
        fleet
            .audit()
            .iter()
            .any(|r| r["action"] == "rollout.start" && r["result"] == "ok")
    );
    for probe in &probes {
        let seen = probe_result(&probe.0);
        assert_eq!(
            seen.failed, 0,
            "{}: requests failed during the rollout:\n{}",
            probe.0, seen.output
        );
        assert!(
            seen.versions.iter().any(|v| v == "v1") && seen.versions.iter().any(|v| v == "v2"),
            "{}: {:?}",
            probe.0,
            seen.versions
        );
    }
}

/// A probe container, removed when the test ends.
struct Probe(String);

impl Drop for Probe {
    fn drop(&mut self) {
        remove_container(&self.0);
    }
}

/// [`app_stack`] with two replicas replaced start-first: zero downtime on each host.
fn ha_stack(version: &str) -> String {
    format!(
        "{}    deploy:\n      replicas: 2\n      update_config:\n        order: start-first\n",
        app_stack(version)
    )
}

#[test]
fn a_bad_revision_is_rolled_back_on_every_host_it_reached() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let (_p, _agents) = four(&fleet, "rbad");
    let v1 = apply_converged(
        &fleet,
        &app_stack("v1"),
        &["web-1", "web-2", "web-3", "web-4"],
    );

    let bad = "services:\n  app:\n    image: ${IMAGE}\n    environment: { VERSION: bad, FAIL_HEALTH: \"1\" }\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 2\n";
    let mut flags = FAST.to_vec();
    flags.push("--auto-rollback");
    start(&fleet, bad, &flags);
    let end = wait_phase(&fleet, "rolled_back");
    assert!(
        !end["reason"].as_str().unwrap_or_default().is_empty(),
        "the reason is given: {end}"
    );
    eventually("every host back on v1 and healthy", || {
        all_on(&fleet, &v1).then_some(())
    });
    let stacks = fleet.ctl_json(&["stack", "ls"]);
    assert_eq!(stacks[0]["revision"], v1.as_str(), "the stack stays on v1");
}

#[test]
fn pause_after_the_canary_resume_abort_and_undo() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let (_p, _agents) = four(&fleet, "rctl");
    apply_converged(
        &fleet,
        &app_stack("v1"),
        &["web-1", "web-2", "web-3", "web-4"],
    );

    let mut flags = FAST.to_vec();
    flags.push("--pause-after-canary");
    let v2 = start(&fleet, &app_stack("v2"), &flags)["to_revision"]
        .as_str()
        .unwrap()
        .to_string();
    let paused = wait_phase(&fleet, "paused");
    let on_v2 = |r: &Value| {
        r["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["target_revision"] == v2.as_str())
            .count()
    };
    assert_eq!(on_v2(&paused), 1, "only the canary while paused");
    fleet.ctl_ok(&["rollout", "resume", "shop"]);
    eventually("batch 1 to start", || {
        (on_v2(&rollout(&fleet)) == 3).then_some(())
    });
    fleet.ctl_ok(&["rollout", "abort", "shop"]);
    let aborted = rollout(&fleet);
    assert_eq!(aborted["phase"], "aborted");
    assert_eq!(on_v2(&aborted), 3, "abort leaves hosts as they are");

    // A plain apply during an active rollout is refused; after it, undo goes back as a rollout.
    let v3 = start(&fleet, &app_stack("v3"), FAST);
    let refused = fleet.ctl(&[
        "stack",
        "apply",
        "shop",
        "-f",
        path_str(&fleet.path("compose.yaml")),
        "--env-file",
        path_str(&fleet.path("stack.env")),
    ]);
    assert!(
        !refused.status.success(),
        "stack apply during a rollout is refused"
    );
    wait_phase(&fleet, "succeeded");
    let v3 = v3["to_revision"].as_str().unwrap().to_string();
    eventually("v3 everywhere", || all_on(&fleet, &v3).then_some(()));
    let undo = fleet.ctl_json(&[
        "rollout",
        "undo",
        "shop",
        "--canary",
        "1",
        "--batch",
        "2",
        "--min-healthy",
        "1s",
        "--deadline",
        "60s",
    ]);
    assert_eq!(undo["from_revision"], v3.as_str());
    wait_phase(&fleet, "succeeded");
    let back = undo["to_revision"].as_str().unwrap().to_string();
    eventually("every host back on the previous revision", || {
        all_on(&fleet, &back).then_some(())
    });
    let history = fleet.ctl_json(&["rollout", "history", "shop"]);
    assert!(history.as_array().unwrap().len() >= 3, "{history}");
}

#[test]
fn a_server_killed_mid_rollout_finishes_it_after_its_restart() {
    if !require_docker() {
        return;
    }
    let mut fleet = Fleet::start(ServerOptions::default());
    let (_p, _agents) = four(&fleet, "rkill");
    apply_converged(
        &fleet,
        &app_stack("v1"),
        &["web-1", "web-2", "web-3", "web-4"],
    );
    let flags = [
        "--canary",
        "1",
        "--batch",
        "1",
        "--min-healthy",
        "2s",
        "--deadline",
        "60s",
    ];
    let v2 = start(&fleet, &app_stack("v2"), &flags)["to_revision"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the rollout to reach step 2", || {
        (rollout(&fleet)["step"].as_u64()? >= 2).then_some(())
    });
    if let Some(server) = fleet.server.as_mut() {
        server.kill();
    }
    fleet.start_server();
    let done = wait_phase(&fleet, "succeeded");
    assert!(all_on(&fleet, &v2), "{done}");
    let events = done["events"].as_array().unwrap();
    for i in 1..=4 {
        let host = format!("web-{i}");
        let starts = events
            .iter()
            .filter(|e| {
                e["host"] == host.as_str()
                    && e["what"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("updating to")
            })
            .count();
        assert_eq!(starts, 1, "{host}'s step ran exactly once: {events:?}");
    }
}

#[test]
fn an_agent_offline_during_its_step_fails_at_the_deadline_and_catches_up_later() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let (prefixes, mut agents) = four(&fleet, "roff");
    apply_converged(
        &fleet,
        &app_stack("v1"),
        &["web-1", "web-2", "web-3", "web-4"],
    );
    agents[2].terminate();
    fleet.wait_status("web-3", "offline");

    let flags = [
        "--canary",
        "1",
        "--batch",
        "2",
        "--min-healthy",
        "1s",
        "--deadline",
        "8s",
        "--max-failures",
        "1",
    ];
    let v2 = start(&fleet, &app_stack("v2"), &flags)["to_revision"]
        .as_str()
        .unwrap()
        .to_string();
    let done = wait_phase(&fleet, "succeeded");
    let web3 = done["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "web-3")
        .cloned()
        .unwrap();
    assert_eq!(web3["phase"], "failed", "{done}");
    assert!(
        web3["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("deadline"),
        "{web3}"
    );
    for i in [1, 2, 4] {
        assert_eq!(
            reported(&fleet, &format!("web-{i}"), "shop"),
            Some((v2.clone(), "converged".into()))
        );
    }
    // Back online, it takes the stack's new revision.
    agents[2] = fleet.run_agent_with("web-3", &["--project-prefix", &prefixes[2].0]);
    eventually("web-3 to catch up", || {
        (reported(&fleet, "web-3", "shop") == Some((v2.clone(), "converged".into()))).then_some(())
    });
}

#[test]
fn a_failure_in_a_later_batch_rolls_back_the_hosts_already_updated() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let (_p, _agents) = four(&fleet, "rlate");
    let v1 = apply_converged(
        &fleet,
        &app_stack("v1"),
        &["web-1", "web-2", "web-3", "web-4"],
    );
    // The four agents share this machine's Docker engine: the canary takes the fixed host port,
    // so the hosts of the next batch cannot — a failure that only shows after the canary.
    let port = noco_integration_tests::free_port();
    let v2 = format!(
        "services:\n  app:\n    image: ${{IMAGE}}\n    environment: {{ VERSION: v2 }}\n    ports: [\"127.0.0.1:{port}:8080\"]\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\n"
    );
    let flags = [
        "--canary",
        "1",
        "--batch",
        "2",
        "--min-healthy",
        "1s",
        "--deadline",
        "20s",
        "--auto-rollback",
    ];
    start(&fleet, &v2, &flags);
    let end = wait_phase(&fleet, "rolled_back");
    let events = end["events"].as_array().unwrap();
    let canary = end["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["step"] == 1)
        .map(|h| h["host"].as_str().unwrap().to_string())
        .unwrap();
    let said = |host: &str, what: &str| {
        events
            .iter()
            .any(|e| e["host"] == host && e["what"].as_str().unwrap_or_default().contains(what))
    };
    assert!(
        said(&canary, "healthy on"),
        "the canary passed first: {events:?}"
    );
    assert!(
        said(&canary, "back on"),
        "and was rolled back with the batch: {events:?}"
    );
    eventually("every host back on v1", || {
        all_on(&fleet, &v1).then_some(())
    });
}

/// Issue 9: a bad revision that is not rolled back leaves its canary on it. `stack ls` says
/// so and names the rollout; re-applying the stack's own revision is not "unchanged" but
/// brings the canary back, after which every view agrees again.
#[test]
fn hosts_a_failed_rollout_left_on_its_revision_are_shown_and_brought_back() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let (_p, _agents) = four(&fleet, "rheld");
    let v1 = apply_converged(
        &fleet,
        &app_stack("v1"),
        &["web-1", "web-2", "web-3", "web-4"],
    );
    let bad = "services:\n  app:\n    image: ${IMAGE}\n    environment: { VERSION: bad, FAIL_HEALTH: \"1\" }\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 2\n";
    start(&fleet, bad, FAST);
    let end = wait_phase(&fleet, "failed");
    let canary = end["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["step"] == 1)
        .unwrap()["host"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        end["reason"].as_str().unwrap().contains(&canary),
        "the reason names the host: {end}"
    );

    let stacks = fleet.ctl_json(&["stack", "ls"]);
    assert_eq!(stacks[0]["revision"], v1.as_str(), "the stack stays on v1");
    let pinned = stacks[0]["pinned"].as_array().unwrap().clone();
    assert_eq!(pinned.len(), 1, "{stacks}");
    assert_eq!(pinned[0]["host"], canary.as_str());
    assert!(
        pinned[0]["by"].as_str().unwrap().contains("failed"),
        "{pinned:?}"
    );
    let table = fleet.ctl_ok(&["stack", "ls"]);
    assert!(table.contains("(1 held elsewhere)"), "{table}");

    let again = crate::support::apply(&fleet, "shop", "role=web", &app_stack("v1"));
    assert_eq!(again["unchanged"], false, "{again}");
    assert!(
        again["warnings"].to_string().contains(&canary),
        "the apply says who moves back: {again}"
    );
    eventually("every host back on v1", || {
        all_on(&fleet, &v1).then_some(())
    });
    let stacks = fleet.ctl_json(&["stack", "ls"]);
    assert_eq!(stacks[0]["pinned"], serde_json::json!([]), "{stacks}");
}
