//! Assignment: a stack runs exactly on the hosts its selector matches; a change is a new
//! revision applied everywhere; relabeling moves it; removing it removes it everywhere.

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::{Fleet, ServerOptions, eventually};

use crate::support::{Prefix, app_stack, apply, reported, running};

#[test]
fn a_stack_follows_its_selector_through_changes_relabels_and_removal() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let a = Prefix::new("fa", &["shop"]);
    let b = Prefix::new("fb", &["shop"]);
    fleet.enroll("web-1", "role=web");
    fleet.enroll("db-1", "role=db");
    let _web = fleet.run_agent_with("web-1", &["--project-prefix", &a.0]);
    let _db = fleet.run_agent_with("db-1", &["--project-prefix", &b.0]);
    fleet.wait_status("web-1", "online");
    fleet.wait_status("db-1", "online");

    let first = apply(&fleet, "shop", "role=web", &app_stack("v1"));
    let rev1 = first["revision"].as_str().unwrap().to_string();
    assert_eq!(first["hosts"], serde_json::json!(["web-1"]));
    eventually("web-1 to run shop", || {
        (reported(&fleet, "web-1", "shop") == Some((rev1.clone(), "converged".into())))
            .then_some(())
    });
    assert_eq!(running(&a.project("shop")).len(), 1);
    assert!(
        running(&b.project("shop")).is_empty(),
        "db-1 does not match role=web"
    );
    let before = running(&a.project("shop"));

    // The same content again is the same revision, and nothing happens.
    let again = apply(&fleet, "shop", "role=web", &app_stack("v1"));
    assert_eq!(again["revision"], rev1.as_str());
    assert_eq!(again["unchanged"], true);

    let second = apply(&fleet, "shop", "role=web", &app_stack("v2"));
    let rev2 = second["revision"].as_str().unwrap().to_string();
    assert_ne!(rev1, rev2);
    eventually("web-1 to run the new revision", || {
        (reported(&fleet, "web-1", "shop") == Some((rev2.clone(), "converged".into())))
            .then_some(())
    });
    assert_eq!(
        running(&a.project("shop")),
        before,
        "same container name, new container"
    );

    fleet.ctl_ok(&["host", "label", "db-1", "role=web"]);
    eventually("db-1 to run shop after relabeling", || {
        (running(&b.project("shop")).len() == 1).then_some(())
    });
    fleet.ctl_ok(&["host", "label", "db-1", "role=db"]);
    eventually("shop to leave db-1", || {
        running(&b.project("shop")).is_empty().then_some(())
    });

    fleet.ctl_ok(&["stack", "rm", "shop"]);
    eventually("shop to be removed from web-1", || {
        running(&a.project("shop")).is_empty().then_some(())
    });
    let audit = fleet.audit();
    for action in ["stack.apply", "stack.remove"] {
        assert!(
            audit
                .iter()
                .any(|r| r["action"] == action && r["result"] == "ok"),
            "{action} not audited"
        );
    }
}
