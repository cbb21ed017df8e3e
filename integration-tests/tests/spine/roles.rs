//! Operators and roles: admin, deployer and viewer, enforced for every control call, with
//! every mutating call — allowed or refused — in the audit log.

use noco_integration_tests::{Fleet, ServerOptions, stderr};

#[test]
fn a_viewer_cannot_create_tokens_or_revoke_hosts_and_the_refusals_are_audited() {
    let fleet = Fleet::start(ServerOptions::default());
    fleet.enroll("web-1", "role=web");
    let viewer = fleet.operator("vera", "viewer");

    let out = fleet.ctl_as(&viewer, &["token", "create"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("role viewer may not call CreateToken"),
        "{}",
        stderr(&out)
    );
    let out = fleet.ctl_as(&viewer, &["host", "revoke", "web-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("needs admin"), "{}", stderr(&out));
    let out = fleet.ctl_as(&viewer, &["host", "label", "web-1", "x=y"]);
    assert_eq!(out.status.code(), Some(1), "labelling needs deployer");
    let out = fleet.ctl_as(&viewer, &["host", "ls", "-o", "json"]);
    assert!(out.status.success(), "a viewer may look: {}", stderr(&out));
    assert_eq!(
        fleet.status_of("web-1"),
        "offline",
        "the host was not revoked"
    );

    let audit = fleet.audit();
    let denied = |action: &str| {
        audit.iter().any(|r| {
            r["action"] == action
                && r["caller"] == "operator vera (viewer)"
                && r["result"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("denied:")
        })
    };
    assert!(denied("token.create"), "{audit:#?}");
    assert!(denied("host.revoke"), "{audit:#?}");
    assert!(denied("host.label"), "{audit:#?}");
    let whoami = fleet.ctl_as(&viewer, &["whoami", "-o", "json"]);
    let me: serde_json::Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(me["role"], "viewer");
}

#[test]
fn a_deployer_labels_hosts_but_does_not_manage_operators() {
    let fleet = Fleet::start(ServerOptions::default());
    fleet.enroll("web-1", "role=web");
    let deployer = fleet.operator("dora", "deployer");
    let out = fleet.ctl_as(&deployer, &["host", "label", "web-1", "tier=edge", "role-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let host = fleet.host("web-1").unwrap();
    assert_eq!(host["labels"]["tier"], "edge");
    assert!(host["labels"].get("role").is_none());
    let out = fleet.ctl_as(&deployer, &["operator", "add", "eve", "--role", "admin"]);
    assert_eq!(out.status.code(), Some(1), "a deployer cannot make admins");
    assert!(fleet.audit().iter().any(|r| r["action"] == "host.label"
        && r["caller"] == "operator dora (deployer)"
        && r["result"] == "ok"));
}

#[test]
fn operators_are_added_logged_in_listed_and_revoked() {
    let fleet = Fleet::start(ServerOptions::default());
    let token = fleet
        .ctl_ok(&["operator", "add", "alice", "--role", "deployer"])
        .trim()
        .to_string();
    let ops = fleet.ctl_json(&["operator", "ls"]);
    let alice = ops
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(alice["status"], "pending");

    let config = fleet.path("alice.toml");
    let login = |token: &str| {
        std::process::Command::new(noco_integration_tests::bin("nococtl"))
            .args(["login", "--server", &fleet.url, "--token", token, "--force"])
            .env("NOCO_CONFIG", &config)
            .output()
            .unwrap()
    };
    assert!(login(&token).status.success());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the credential is private");
    let again = login(&token);
    assert_eq!(again.status.code(), Some(1), "a login token is single-use");
    assert!(
        stderr(&again).contains("already used"),
        "{}",
        stderr(&again)
    );
    let ops = fleet.ctl_json(&["operator", "ls"]);
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "alice" && o["status"] == "active")
    );

    let dup = fleet.ctl(&["operator", "add", "alice", "--role", "viewer"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(
        stderr(&dup).contains("nococtl operator token alice"),
        "{}",
        stderr(&dup)
    );
    let fresh = fleet
        .ctl_ok(&["operator", "token", "alice"])
        .trim()
        .to_string();
    assert!(
        login(&fresh).status.success(),
        "a reissued login token works"
    );

    fleet.ctl_ok(&["operator", "revoke", "alice"]);
    let out = fleet.ctl_as(&config, &["host", "ls"]);
    assert!(!out.status.success(), "a revoked operator is refused");
    let last_admin = fleet.ctl(&["operator", "revoke", "admin"]);
    assert_eq!(last_admin.status.code(), Some(1));
    assert!(
        stderr(&last_admin).contains("last active admin"),
        "{}",
        stderr(&last_admin)
    );
    let actions: Vec<String> = fleet
        .audit()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    for a in ["operator.add", "operator.login", "operator.revoke"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
}
