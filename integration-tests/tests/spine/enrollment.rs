//! Enrolling hosts: three agents join and show online with the right facts; tokens are
//! single-use, expire, must exist, and pin the server's CA.

use noco_integration_tests::{Fleet, ServerOptions, docker_required, stderr};

#[test]
fn three_agents_enroll_and_show_online_with_their_facts() {
    let fleet = Fleet::start(ServerOptions::default());
    fleet.enroll("web-1", "role=web,env=prod");
    fleet.enroll("web-2", "role=web,env=prod");
    fleet.enroll("db-1", "role=db");
    let _agents: Vec<_> = ["web-1", "web-2", "db-1"]
        .iter()
        .map(|n| fleet.run_agent(n))
        .collect();
    for name in ["web-1", "web-2", "db-1"] {
        fleet.wait_status(name, "online");
    }

    let hosts = fleet.hosts();
    assert_eq!(hosts.len(), 3);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    for h in &hosts {
        let facts = &h["facts"];
        assert_eq!(facts["hostname"], hostname.as_str(), "{h}");
        assert_eq!(facts["arch"], std::env::consts::ARCH, "{h}");
        assert_eq!(facts["agent_version"], env!("CARGO_PKG_VERSION"), "{h}");
        assert!(!facts["os"].as_str().unwrap_or_default().is_empty(), "{h}");
        assert!(
            !facts["kernel"].as_str().unwrap_or_default().is_empty(),
            "{h}"
        );
        let docker = facts["docker_version"].as_str().unwrap_or_default();
        if docker_required() {
            assert!(
                !docker.is_empty() && !docker.starts_with("unavailable"),
                "Docker is required but the agent saw {docker:?}"
            );
        }
        assert_eq!(h["id"].as_str().unwrap_or_default().len(), 16, "{h}");
        assert!(
            h["connected_since_unix_ms"].as_i64().unwrap_or(0) > 0,
            "{h}"
        );
    }
    let web1 = fleet.host("web-1").unwrap();
    assert_eq!(web1["labels"]["role"], "web");
    assert_eq!(web1["labels"]["env"], "prod");
    assert_eq!(fleet.host("db-1").unwrap()["labels"]["role"], "db");

    let table = fleet.ctl_ok(&["host", "ls"]);
    let header = table.lines().next().unwrap_or_default();
    for col in [
        "NAME",
        "ID",
        "LABELS",
        "STATUS",
        "LAST-SEEN",
        "AGENT",
        "DOCKER",
    ] {
        assert!(header.contains(col), "host ls header lacks {col}: {header}");
    }
    assert_eq!(
        table.lines().filter(|l| l.contains("online")).count(),
        3,
        "{table}"
    );
}

#[test]
fn join_tokens_are_single_use_expire_must_exist_and_pin_the_ca() {
    let fleet = Fleet::start(ServerOptions::default());
    let token = fleet.join_token("role=web");
    assert!(fleet.enroll_with("first", &token).status.success());

    let reuse = fleet.enroll_with("second", &token);
    assert_eq!(reuse.status.code(), Some(1));
    assert!(
        stderr(&reuse).contains("already used"),
        "{}",
        stderr(&reuse)
    );

    let short = fleet
        .ctl_ok(&["token", "create", "--ttl", "1s"])
        .trim()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let expired = fleet.enroll_with("third", &short);
    assert_eq!(expired.status.code(), Some(1));
    assert!(stderr(&expired).contains("expired"), "{}", stderr(&expired));

    // Right CA, right shape, but no such token.
    let (prefix, _) = token.rsplit_once(':').unwrap();
    let unknown = fleet.enroll_with(
        "fourth",
        &format!("{prefix}:abcdef012345.0123456789abcdef0123456789abcdef"),
    );
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("unknown join token"),
        "{}",
        stderr(&unknown)
    );

    // A token pinning another CA: the agent refuses to trust this server at all.
    let fresh = fleet.join_token("");
    let parts: Vec<&str> = fresh.splitn(3, ':').collect();
    let forged = format!("noco1:{}:{}", "ab".repeat(32), parts[2]);
    let pinned = fleet.enroll_with("fifth", &forged);
    assert!(!pinned.status.success());
    assert!(
        stderr(&pinned).contains("pinned fingerprint"),
        "{}",
        stderr(&pinned)
    );
    // ... and that token is still good for the right server.
    assert!(fleet.enroll_with("fifth", &fresh).status.success());

    let malformed = fleet.enroll_with("sixth", "not-a-token");
    assert!(!malformed.status.success());
    assert!(
        stderr(&malformed).contains("malformed token"),
        "{}",
        stderr(&malformed)
    );

    let names: Vec<String> = fleet
        .hosts()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["fifth", "first"],
        "only the good enrollments created hosts"
    );
    let audit = fleet.audit();
    let refused = audit
        .iter()
        .filter(|r| r["action"] == "host.enroll" && r["result"] != "ok")
        .count();
    assert!(refused >= 3, "refused enrollments are audited: {audit:?}");
}

#[test]
fn a_host_name_cannot_be_taken_twice_and_bad_names_are_refused() {
    let fleet = Fleet::start(ServerOptions::default());
    fleet.enroll("web-1", "");
    let token = fleet.join_token("");
    let dup = fleet.enroll_with("web-1-again", &token);
    assert!(dup.status.success(), "a different name is fine");
    let token = fleet.join_token("");
    let out = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args([
            "enroll",
            "--server",
            &fleet.url,
            "--token",
            &token,
            "--data-dir",
        ])
        .arg(fleet.path("agent-dup"))
        .args(["--name", "web-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("taken by host"), "{}", stderr(&out));
    let bad = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args([
            "enroll",
            "--server",
            &fleet.url,
            "--token",
            &token,
            "--data-dir",
        ])
        .arg(fleet.path("agent-bad"))
        .args(["--name", "Bad Name"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("host name \"Bad Name\" is not valid"),
        "{}",
        stderr(&bad)
    );
    // The refused attempts did not burn the token.
    assert!(fleet.enroll_with("web-3", &token).status.success());
    // Enrolling twice into the same data directory needs --force.
    let again = fleet.enroll_with("web-3", &fleet.join_token(""));
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already enrolled"),
        "{}",
        stderr(&again)
    );
}
