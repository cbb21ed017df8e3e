//! Signing-key rotation: the server introduces a new key signed by the old one; agents take the
//! new trust root, accept states signed by the new key, and keep it across their restart.

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::{Fleet, ServerOptions, eventually};

use crate::support::{Prefix, app_stack, apply_converged};

#[test]
fn a_rotated_signing_key_reaches_agents_and_signs_from_then_on_even_after_they_were_away() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let p = Prefix::new("frot", &["shop"]);
    let agent_dir = fleet.enroll("web-1", "role=web");
    let args = ["--project-prefix", p.0.as_str()];
    let mut agent = fleet.run_agent_with("web-1", &args);
    fleet.wait_status("web-1", "online");
    apply_converged(&fleet, &app_stack("v1"), &["web-1"]);
    let trust = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("trust-root.json")).unwrap()).unwrap()
    };
    let old_key = trust(&agent_dir)["keys"][0]["key_id"]
        .as_str()
        .unwrap()
        .to_string();

    let rotated = fleet.ctl_json(&["signing-key", "rotate"]);
    let new_key = rotated["key_id"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    assert_eq!(
        rotated["trusted_key_ids"],
        serde_json::json!([old_key, new_key])
    );
    eventually("the agent to trust the new key", || {
        let keys: Vec<String> = trust(&agent_dir)["keys"]
            .as_array()?
            .iter()
            .filter_map(|k| k["key_id"].as_str().map(str::to_string))
            .collect();
        (keys == [old_key.clone(), new_key.clone()]).then_some(())
    });

    // A new revision is signed with the new key, and applied.
    apply_converged(&fleet, &app_stack("v2"), &["web-1"]);
    let accepted = std::fs::read(agent_dir.join("state/desired.pb")).unwrap();
    let envelope =
        <noco_proto::v1::SignedState as prost::Message>::decode(accepted.as_slice()).unwrap();
    assert_eq!(
        envelope.key_id, new_key,
        "the accepted state is signed by the new key"
    );

    // Offline through two more rotations: on return the agent walks the chain of trust roots,
    // each signed by a key of the one before, and accepts states signed by the newest key.
    agent.terminate();
    fleet.ctl_json(&["signing-key", "rotate"]);
    let newest = fleet.ctl_json(&["signing-key", "rotate"]);
    let newest_key = newest["key_id"].as_str().unwrap().to_string();
    let _agent = fleet.run_agent_with("web-1", &args);
    fleet.wait_status("web-1", "online");
    apply_converged(&fleet, &app_stack("v3"), &["web-1"]);
    let accepted = std::fs::read(agent_dir.join("state/desired.pb")).unwrap();
    let envelope =
        <noco_proto::v1::SignedState as prost::Message>::decode(accepted.as_slice()).unwrap();
    assert_eq!(envelope.key_id, newest_key);
    let keys: Vec<String> = trust(&agent_dir)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(keys.last(), Some(&newest_key), "{keys:?}");
    assert!(
        fleet
            .audit()
            .iter()
            .any(|r| r["action"] == "signing-key.rotate" && r["result"] == "ok")
    );
}
