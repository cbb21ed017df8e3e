//! Hosts over time: revocation cuts a host off at once and for good; a server restart brings
//! every agent back by itself with its data intact; SIGTERM stops both cleanly.

use std::time::{Duration, Instant};

use noco_integration_tests::{Fleet, ServerOptions, bin, eventually, path_str, stderr};
use tonic::Code;

use crate::grpc::{self, client_config, list_hosts, load_credential, open_session};

#[test]
fn revoking_a_host_cuts_its_session_within_a_second_and_keeps_it_out() {
    let fleet = Fleet::start(ServerOptions::default());
    let web1_dir = fleet.enroll("web-1", "role=web");
    fleet.enroll("web-2", "role=web");
    let mut web1 = fleet.run_agent("web-1");
    let _web2 = fleet.run_agent("web-2");
    fleet.wait_status("web-1", "online");
    fleet.wait_status("web-2", "online");

    fleet.ctl_ok(&["host", "revoke", "web-1"]);
    let revoked_at = Instant::now();
    let status = eventually("the revoked agent to stop", || web1.try_exit());
    let cut_after = revoked_at.elapsed();
    assert!(
        cut_after < Duration::from_secs(1),
        "the session ended {cut_after:?} after the revocation"
    );
    assert_eq!(
        status.code(),
        Some(3),
        "a revoked agent exits 3:\n{}",
        web1.log_text()
    );
    assert!(web1.log_text().contains("revoked"), "{}", web1.log_text());
    assert_eq!(fleet.status_of("web-1"), "revoked");
    assert_eq!(
        fleet.status_of("web-2"),
        "online",
        "other hosts are unaffected"
    );

    // Started again, it is refused and stops at once rather than retrying forever.
    let mut again = fleet.run_agent("web-1");
    let status = eventually("the restarted revoked agent to stop", || again.try_exit());
    assert_eq!(status.code(), Some(3), "{}", again.log_text());
    // Its certificate is refused for any call, at the handshake.
    let cred = load_credential(&web1_dir.join("credential.toml"));
    grpc::rt().block_on(async {
        let err = open_session(&fleet, client_config(&fleet, &cred.cert_pem, &cred.key_pem))
            .await
            .expect_err("revoked cert");
        assert_ne!(err.code(), Code::Ok);
    });
    // Revoking twice says so; the name is free for a new enrollment.
    let twice = fleet.ctl(&["host", "revoke", "web-1"]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        stderr(&twice).contains("no host named") || stderr(&twice).contains("already revoked"),
        "{}",
        stderr(&twice)
    );
    let token = fleet.join_token("");
    let out = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args([
            "enroll",
            "--force",
            "--server",
            &fleet.url,
            "--token",
            &token,
            "--name",
            "web-1",
            "--data-dir",
        ])
        .arg(&web1_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let _web1_new = fleet.run_agent("web-1");
    fleet.wait_status("web-1", "online");
    assert!(
        fleet
            .audit()
            .iter()
            .any(|r| r["action"] == "host.revoke" && r["target"] == "web-1" && r["result"] == "ok")
    );
}

#[test]
fn every_agent_comes_back_after_a_server_restart_and_the_data_survives() {
    let mut fleet = Fleet::start(ServerOptions::default());
    let names = ["a-1", "a-2", "a-3"];
    for n in names {
        fleet.enroll(n, "role=app");
    }
    let _agents: Vec<_> = names.iter().map(|n| fleet.run_agent(n)).collect();
    for n in names {
        fleet.wait_status(n, "online");
    }
    fleet.ctl_ok(&["host", "label", "a-2", "tier=edge", "role-"]);
    let used_token = fleet.join_token("");
    assert!(fleet.enroll_with("a-4", &used_token).status.success());
    let before = fleet.hosts();
    let audit_before = fleet.audit().len();

    let status = fleet.stop_server().expect("server exit status");
    assert!(status.success(), "noco-server exits 0 on SIGTERM: {status}");
    let down = fleet.ctl(&["host", "ls"]);
    assert_eq!(
        down.status.code(),
        Some(3),
        "nococtl exits 3 when the server is unreachable"
    );

    fleet.start_server();
    for n in names {
        fleet.wait_status(n, "online");
    }
    let after = fleet.hosts();
    assert_eq!(after.len(), before.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b["id"], a["id"]);
        assert_eq!(b["labels"], a["labels"]);
        assert_eq!(b["enrolled_unix_ms"], a["enrolled_unix_ms"]);
    }
    let a2 = fleet.host("a-2").unwrap();
    assert_eq!(a2["labels"]["tier"], "edge");
    assert!(a2["labels"].get("role").is_none());
    let audit = fleet.audit();
    assert_eq!(
        audit.len(),
        audit_before,
        "the audit log survived the restart"
    );
    assert!(audit.iter().any(|r| r["action"] == "host.label"
        && r["target"].as_str().unwrap_or_default().starts_with("a-2")));
    let reuse = fleet.enroll_with("a-5", &used_token);
    assert!(
        stderr(&reuse).contains("already used"),
        "a used token stays used: {}",
        stderr(&reuse)
    );
    assert_eq!(
        fleet.audit().len(),
        audit_before + 1,
        "and the refusal is audited after the restart"
    );
}

#[test]
fn sigterm_stops_agent_and_server_cleanly() {
    let mut fleet = Fleet::start(ServerOptions::default());
    fleet.enroll("web-1", "");
    let mut agent = fleet.run_agent("web-1");
    fleet.wait_status("web-1", "online");
    let status = agent.terminate().expect("agent exit status");
    assert!(
        status.success(),
        "agent exits 0 on SIGTERM: {status}\n{}",
        agent.log_text()
    );
    fleet.wait_status("web-1", "offline");
    let status = fleet.stop_server().expect("server exit status");
    assert!(status.success(), "server exits 0 on SIGTERM: {status}");
    let cred = load_credential(&fleet.admin_config());
    grpc::rt().block_on(async {
        assert!(
            list_hosts(&fleet, client_config(&fleet, &cred.cert_pem, &cred.key_pem))
                .await
                .is_err(),
            "nothing listens any more"
        );
    });
}

/// Regression (issue 8, defect 6): with sled's snapshot files removed, the server started on an
/// empty database — no hosts, no operators — and still accepted the old admin certificate. Now
/// it refuses to start, says why and how to recover, and `noco-server check` says the same;
/// the data directory is left as it was.
#[test]
fn a_server_refuses_to_start_on_a_damaged_database_and_says_how_to_recover() {
    let mut fleet = Fleet::start(ServerOptions::default());
    fleet.enroll("d-1", "role=app");
    let check = |fleet: &Fleet| {
        std::process::Command::new(bin("noco-server"))
            .args(["check", "--data-dir", path_str(&fleet.server_data())])
            .output()
            .unwrap()
    };
    let healthy = check_while_running_is_refused_then_ok(&mut fleet, check);
    assert!(healthy.contains("1 hosts"), "{healthy}");

    let db = fleet.server_data().join("db");
    let mut removed = 0;
    for entry in std::fs::read_dir(&db).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("snap.") || name == "db" {
            std::fs::remove_file(&path).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0, "no sled data files under {}", db.display());

    let out = check(&fleet);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to start on the database"), "{err}");
    assert!(err.contains("restore the whole data directory"), "{err}");

    let run = std::process::Command::new(bin("noco-server"))
        .args([
            "run",
            "--data-dir",
            path_str(&fleet.server_data()),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(!out.contains("listening"), "it must not serve: {out}");
    assert!(err.contains("holds no noco data"), "{err}");
}

/// `noco-server check` on the live server's data directory is refused (sled allows one
/// process); after the server stops it reports the database. Returns what check printed.
fn check_while_running_is_refused_then_ok(
    fleet: &mut Fleet,
    check: impl Fn(&Fleet) -> std::process::Output,
) -> String {
    let busy = check(fleet);
    assert_eq!(busy.status.code(), Some(1));
    assert!(fleet.stop_server().is_some_and(|s| s.success()));
    let out = check(fleet);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
