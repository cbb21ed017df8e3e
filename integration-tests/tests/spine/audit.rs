//! The audit log as a script reads it (issue 9): structured callers and outcomes, filters by
//! time, action and caller, and dry runs recorded as dry runs.

use noco_integration_tests::{Fleet, ServerOptions, Value, path_str};

fn audit(fleet: &Fleet, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "--limit", "1000"];
    args.extend(filter);
    match fleet.ctl_json(&args) {
        Value::Array(a) => a,
        other => panic!("audit printed {other}"),
    }
}

#[test]
fn the_audit_log_is_structured_filtered_and_tells_dry_runs_apart() {
    let fleet = Fleet::start(ServerOptions::default());
    fleet.ctl_ok(&["token", "create", "--labels", "role=web", "--ttl", "600"]);
    fleet.ctl_ok(&["operator", "add", "bob", "--role", "viewer"]);
    let refused = fleet.ctl(&["operator", "revoke", "bbo"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(r#"did you mean "bob"?"#), "{err}");

    let compose = fleet.path("compose.yaml");
    std::fs::write(&compose, "services:\n  web:\n    image: example/web:1\n").unwrap();
    fleet.ctl_ok(&[
        "stack",
        "apply",
        "shop",
        "-f",
        path_str(&compose),
        "--selector",
        "role=web",
        "--dry-run",
    ]);

    let all = audit(&fleet, &[]);
    let add = all
        .iter()
        .find(|r| r["action"] == "operator.add")
        .unwrap_or_else(|| panic!("no operator.add in {all:?}"));
    assert_eq!(add["caller_name"], "admin");
    assert_eq!(add["caller_role"], "admin");
    assert_eq!(add["outcome"], "ok");
    assert!(add["caller_id"].as_str().is_some_and(|id| !id.is_empty()));
    let revoke = all
        .iter()
        .find(|r| r["action"] == "operator.revoke")
        .unwrap();
    assert_eq!(revoke["outcome"], "error");
    assert!(
        revoke["message"].as_str().unwrap().contains("bbo"),
        "{revoke}"
    );
    let dry = all.iter().find(|r| r["action"] == "stack.apply").unwrap();
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(
        dry["result"].as_str().unwrap().ends_with("(dry run)"),
        "{dry}"
    );

    let operators = audit(&fleet, &["--action", "operator."]);
    assert!(!operators.is_empty());
    assert!(
        operators
            .iter()
            .all(|r| r["action"].as_str().unwrap().starts_with("operator.")),
        "{operators:?}"
    );
    assert_eq!(audit(&fleet, &["--action", "token.create"]).len(), 1);
    assert!(audit(&fleet, &["--caller", "nobody"]).is_empty());
    assert_eq!(
        audit(&fleet, &["--caller", "admin"]).len(),
        all.iter().filter(|r| r["caller_name"] == "admin").count()
    );
    assert_eq!(audit(&fleet, &["--since", "1h"]).len(), all.len());
    let bad = fleet.ctl(&["audit", "--since", "5x"]);
    assert_eq!(bad.status.code(), Some(2));
}
