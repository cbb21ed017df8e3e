//! Alerts, end to end (issue 12): a real server with a configuration file, real agents killed
//! and started again, a webhook receiver in the test (`noco_integration_tests::webhook`) that
//! records every POST and can answer 503 or be stopped. An operator's session: an agent dies,
//! `host-offline` is notified once; the server restarts while it fires and sends nothing again;
//! the agent returns while the receiver is down and the resolution arrives once it is back;
//! silences hold notifications back; every notification is in the audit log.

use std::process::Command;
use std::time::{Duration, Instant};

use noco_integration_tests::webhook::Webhook;
use noco_integration_tests::{Fleet, ServerOptions, Value, bin, eventually, path_str, stderr};

const HEARTBEAT: Duration = Duration::from_secs(1);
const GROUP_WAIT: Duration = Duration::from_secs(1);
const GROUP_INTERVAL: Duration = Duration::from_secs(2);

/// A fleet whose server sends host-offline alerts to `hook` as Alertmanager JSON.
fn fleet_with_alerts(hook: &Webhook, dir: &tempfile::TempDir) -> Fleet {
    let config = dir.path().join("server-config.toml");
    std::fs::write(
        &config,
        format!(
            r#"[alerts]
group_wait = "1s"
group_interval = "2s"
repeat_interval = "1h"

[[alerts.receivers]]
name = "hook"
url = "{}"
format = "json"
rules = ["host-offline"]
timeout = "2s"
"#,
            hook.url("/alerts")
        ),
    )
    .unwrap();
    Fleet::start(ServerOptions {
        heartbeat: "1s".into(),
        extra: vec!["--config".into(), path_str(&config).to_string()],
        ..ServerOptions::default()
    })
}

/// The alerts of a notification: (host, status).
fn alerts_of(body: &Value) -> Vec<(String, String)> {
    body["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    (
                        a["labels"]["host"].as_str().unwrap_or_default().to_string(),
                        a["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How many delivered notifications said `host` is `status` (firing, resolved).
fn delivered(hook: &Webhook, host: &str, status: &str) -> usize {
    hook.delivered()
        .iter()
        .filter(|b| alerts_of(b).contains(&(host.to_string(), status.to_string())))
        .count()
}

/// The `alert ls` row of host-offline for `host`.
fn offline_row(fleet: &Fleet, host: &str) -> Option<Value> {
    match fleet.ctl_json(&["alert", "ls"]) {
        Value::Array(rows) => rows
            .into_iter()
            .find(|r| r["rule"] == "host-offline" && r["host"] == host),
        other => panic!("alert ls printed {other}"),
    }
}

fn wait_delivered(hook: &Webhook, host: &str, status: &str) {
    eventually(&format!("a {status} notification of host {host}"), || {
        (delivered(hook, host, status) > 0).then_some(())
    });
}

#[test]
fn a_killed_agent_is_notified_once_survives_a_restart_and_a_receiver_outage_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start();
    let mut fleet = fleet_with_alerts(&hook, &dir);
    fleet.enroll("web-1", "role=web");
    fleet.enroll("web-2", "role=web");
    let mut web1 = fleet.run_agent("web-1");
    let mut web2 = fleet.run_agent("web-2");
    fleet.wait_status("web-1", "online");
    fleet.wait_status("web-2", "online");
    let table = fleet.ctl_ok(&["alert", "ls"]);
    assert!(
        table.contains("host-offline") && table.contains("ok"),
        "{table}"
    );

    // An agent dies: host-offline fires within 3 heartbeats (+ group_wait), once.
    web1.kill();
    let killed = Instant::now();
    wait_delivered(&hook, "web-1", "firing");
    let took = killed.elapsed();
    let bound = HEARTBEAT * 3 + GROUP_WAIT + Duration::from_secs(2);
    assert!(
        took <= bound,
        "notified {took:?} after the kill (bound {bound:?}); the server's log:\n{}",
        fleet.server_log()
    );
    let first = hook
        .delivered()
        .into_iter()
        .find(|b| alerts_of(b).contains(&("web-1".into(), "firing".into())))
        .unwrap();
    assert_eq!(first["version"], "4");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["receiver"], "hook");
    assert_eq!(first["groupKey"], "{}:{alertname=\"host-offline\"}");
    assert_eq!(first["groupLabels"]["alertname"], "host-offline");
    assert_eq!(first["alerts"][0]["labels"]["severity"], "critical");
    assert!(
        first["alerts"][0]["fingerprint"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );
    assert_eq!(first["externalURL"], fleet.url.as_str());
    let row = offline_row(&fleet, "web-1").expect("alert ls shows host-offline of web-1");
    assert_eq!(row["state"], "firing");
    let since = row["since_unix_ms"].as_i64().unwrap();
    assert!(since > 0);
    std::thread::sleep(GROUP_INTERVAL * 3);
    assert_eq!(
        delivered(&hook, "web-1", "firing"),
        1,
        "{:?}",
        hook.delivered()
    );

    // The server restarts while it fires: nothing is sent again, and the alert keeps its start.
    fleet.stop_server();
    fleet.start_server();
    fleet.wait_status("web-2", "online");
    // Past the time a host not yet seen is given to reconnect (10 s), and a few intervals.
    std::thread::sleep(Duration::from_secs(10) + GROUP_INTERVAL * 3);
    assert_eq!(
        delivered(&hook, "web-1", "firing"),
        1,
        "{:?}",
        hook.delivered()
    );
    let row = offline_row(&fleet, "web-1").expect("still firing after the restart");
    assert_eq!(row["state"], "firing");
    assert_eq!(row["since_unix_ms"].as_i64(), Some(since), "the same since");

    // The agent returns while the receiver is stopped: the resolution is delivered once it is
    // back, once.
    hook.stop();
    let _web1 = fleet.run_agent("web-1");
    fleet.wait_status("web-1", "online");
    eventually("the server to try delivering the resolution", || {
        fleet
            .server_log()
            .contains("alerts: delivering {}:{alertname=\"host-offline\"} failed")
            .then_some(())
    });
    assert_eq!(delivered(&hook, "web-1", "resolved"), 0);
    hook.restart();
    wait_delivered(&hook, "web-1", "resolved");
    std::thread::sleep(GROUP_INTERVAL * 2);
    assert_eq!(
        delivered(&hook, "web-1", "resolved"),
        1,
        "{:?}",
        hook.delivered()
    );
    assert_eq!(delivered(&hook, "web-1", "firing"), 1);
    assert!(offline_row(&fleet, "web-1").is_none(), "resolved: ok again");

    // A receiver answering 503 while an alert fires gets it once it answers again.
    hook.answer(503);
    web2.kill();
    eventually("a refused attempt to notify web-2", || {
        hook.received()
            .iter()
            .any(|r| r.status == 503 && alerts_of(&r.json()).iter().any(|(h, _)| h == "web-2"))
            .then_some(())
    });
    assert_eq!(delivered(&hook, "web-2", "firing"), 0);
    hook.answer(200);
    wait_delivered(&hook, "web-2", "firing");
    std::thread::sleep(GROUP_INTERVAL * 2);
    assert_eq!(
        delivered(&hook, "web-2", "firing"),
        1,
        "{:?}",
        hook.delivered()
    );

    // Every delivered notification is in the audit log, once (not once per attempt).
    let keys: Vec<String> = hook
        .received()
        .iter()
        .filter(|r| r.delivered())
        .filter_map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys.len(), 3, "firing web-1, resolved web-1, firing web-2");
    let records = eventually("the audit records of the notifications", || {
        let records = match fleet.ctl_json(&["audit", "--action", "alert.notify"]) {
            Value::Array(a) => a,
            other => panic!("audit printed {other}"),
        };
        (records.len() >= keys.len()).then_some(records)
    });
    assert_eq!(records.len(), keys.len(), "{records:?}");
    for key in &keys {
        let r = records
            .iter()
            .find(|r| {
                r["target"]
                    .as_str()
                    .is_some_and(|t| t.contains(key.as_str()))
            })
            .unwrap_or_else(|| panic!("no audit record of notification {key}: {records:?}"));
        assert_eq!(r["result"], "ok", "{r}");
        assert_eq!(r["caller"], "server");
    }
}

#[test]
fn a_silence_holds_back_a_new_firing_and_shows_silenced_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start();
    let fleet = fleet_with_alerts(&hook, &dir);
    fleet.enroll("web-1", "role=web");
    let mut web1 = fleet.run_agent("web-1");
    fleet.wait_status("web-1", "online");

    // A test notification reaches the receiver at once.
    let out = fleet.ctl_ok(&["alert", "test", "hook"]);
    assert!(out.contains("delivered to hook (HTTP 200)"), "{out}");
    assert!(
        hook.delivered()
            .iter()
            .any(|b| b["alerts"][0]["labels"]["alertname"] == "noco-test")
    );
    let before = hook.received().len();
    let e = fleet.ctl(&["alert", "test", "hok"]);
    assert_eq!(e.status.code(), Some(1));
    assert!(
        stderr(&e).contains("no receiver named \"hok\"; did you mean \"hook\"?"),
        "{}",
        stderr(&e)
    );
    let e = fleet.ctl(&["alert", "silence", "host-ofline", "--for", "10m"]);
    assert!(
        stderr(&e).contains("did you mean \"host-offline\"?"),
        "{}",
        stderr(&e)
    );

    let id = fleet
        .ctl_ok(&[
            "alert",
            "silence",
            "host-offline",
            "--host",
            "web-1",
            "--for",
            "10m",
            "--comment",
            "replacing its disk",
        ])
        .trim()
        .to_string();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "silence printed {id:?}"
    );
    let silences = fleet.ctl_json(&["alert", "silences"]);
    assert_eq!(silences[0]["id"], id.as_str());
    assert_eq!(silences[0]["host"], "web-1");
    assert_eq!(silences[0]["active"], true);

    web1.kill();
    eventually("host-offline of web-1 to show silenced", || {
        offline_row(&fleet, "web-1")
            .filter(|r| r["state"] == "silenced" && r["silence_id"] == id.as_str())
            .map(|_| ())
    });
    std::thread::sleep(GROUP_WAIT + GROUP_INTERVAL * 3);
    assert_eq!(
        hook.received().len(),
        before,
        "silenced: nothing sent: {:?}",
        hook.received()
    );

    // Ended, it no longer applies: the alert is sent.
    let out = fleet.ctl_ok(&["alert", "unsilence", &id]);
    assert!(out.contains(&format!("ended silence {id}")), "{out}");
    wait_delivered(&hook, "web-1", "firing");
    assert_eq!(
        offline_row(&fleet, "web-1").map(|r| r["state"].clone()),
        Some(Value::from("firing"))
    );
    let audit = fleet.audit();
    for action in ["alert.test", "alert.silence", "alert.unsilence"] {
        assert!(
            audit
                .iter()
                .any(|r| r["action"] == action && r["result"] == "ok"),
            "no {action} in the audit log"
        );
    }
}

#[test]
fn a_bad_configuration_file_stops_the_server_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[alerts]\ngroup_wait = \"30s\"\n[alerts.rules.host-dsk]\nthreshold = 80\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(bin("noco-server"))
            .arg("run")
            .args([
                "--data-dir",
                path_str(dir.path()),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--config", path_str(&config)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("alerts.rules.host-dsk: unknown key; did you mean \"host-disk\"?"),
        "{}",
        stderr(&out)
    );
    let missing = dir.path().join("nope.toml");
    let out = run(&["--config", path_str(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
}
