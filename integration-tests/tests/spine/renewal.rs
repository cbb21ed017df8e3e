//! Short-lived certificates: agents renew repeatedly while their one session stays up, and
//! nococtl renews an operator's certificate when it is used past two thirds of its life.

use std::time::{Duration, SystemTime};

use noco_certs::rotation;
use noco_integration_tests::{Fleet, ServerOptions, eventually};

use crate::grpc::load_credential;

#[test]
fn agents_with_short_lived_certificates_renew_without_dropping_the_session() {
    let fleet = Fleet::start(ServerOptions {
        agent_cert_ttl: "6s".into(),
        ..ServerOptions::default()
    });
    let dir = fleet.enroll("web-1", "");
    let agent = fleet.run_agent("web-1");
    fleet.wait_status("web-1", "online");
    let first = fleet.host("web-1").unwrap();
    let connected_since = first["connected_since_unix_ms"].as_i64().unwrap();
    let first_expiry = first["cert_not_after_unix_ms"].as_i64().unwrap();

    // Renewals happen at 1/2–2/3 of 6 s; wait for three of them, well past the first
    // certificate's expiry.
    let mut expiries = vec![first_expiry];
    eventually("three certificate renewals", || {
        let h = fleet.host("web-1")?;
        assert_eq!(
            h["status"],
            "online",
            "the session dropped:\n{}",
            agent.log_text()
        );
        assert_eq!(
            h["connected_since_unix_ms"].as_i64(),
            Some(connected_since),
            "the session was re-established:\n{}",
            agent.log_text()
        );
        let expiry = h["cert_not_after_unix_ms"].as_i64()?;
        if expiry > *expiries.last()? {
            expiries.push(expiry);
        }
        (expiries.len() >= 4).then_some(())
    });
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        now_ms > first_expiry,
        "the first certificate has expired while the session lived on"
    );
    // The server records a renewal just before the agent saves and logs it.
    let log = eventually("the agent to log three renewals", || {
        let log = agent.log_text();
        (log.matches("renewed the host certificate").count() >= 3).then_some(log)
    });
    assert_eq!(log.matches("session established").count(), 1, "{log}");
    // The renewed credential is on disk, so a restarted agent uses it.
    eventually("credential.toml to hold a renewed certificate", || {
        let cred = load_credential(&dir.join("credential.toml"));
        let on_disk = cred
            .peer()
            .ok()?
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_millis() as i64;
        (on_disk / 1000 >= first_expiry / 1000 + 2).then_some(())
    });
}

#[test]
fn nococtl_renews_an_operator_certificate_past_two_thirds_of_its_life() {
    let fleet = Fleet::start(ServerOptions {
        operator_cert_ttl: "6s".into(),
        ..ServerOptions::default()
    });
    let config = fleet.operator("olga", "deployer");
    let before = load_credential(&config).peer().unwrap();
    eventually("the certificate to be due for renewal", || {
        rotation::due(before.not_before, before.not_after, SystemTime::now()).then_some(())
    });
    let out = fleet.ctl_as(&config, &["whoami"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = load_credential(&config).peer().unwrap();
    assert!(
        after.not_after > before.not_after,
        "nococtl saved a renewed certificate"
    );
    assert_eq!(after.identity, before.identity);

    // Once expired, nococtl says what to do instead of failing obscurely.
    std::thread::sleep(
        after
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            + Duration::from_millis(200),
    );
    let out = fleet.ctl_as(&config, &["host", "ls"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expired on") && err.contains("nococtl login"),
        "{err}"
    );
}
