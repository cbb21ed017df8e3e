//! Exit codes a script can trust (issue 9): `nococtl status` exits 1 when a stack failed on a
//! host (0 otherwise), and `status -w` exits 1 at once when there is nothing to wait for — the
//! stack's selector matches no host, or every host that has it is offline — saying which.

use std::time::{Duration, Instant};

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::{Fleet, ServerOptions, eventually, path_str, stderr};

use crate::support::{Prefix, app_stack, apply, reported};

/// A stack that loads without Docker or the test image (nothing here runs it).
fn apply_plain(fleet: &Fleet, name: &str, selector: &str) {
    let file = fleet.path(&format!("{name}.yaml"));
    std::fs::write(&file, "services:\n  web:\n    image: nginx:1.27\n").unwrap();
    fleet.ctl_ok(&[
        "stack",
        "apply",
        name,
        "-f",
        path_str(&file),
        "--selector",
        selector,
    ]);
}

/// `nococtl status -w …`, and how long it took.
fn watch(fleet: &Fleet, args: &[&str]) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let mut all = vec!["status", "-w", "--timeout", "120"];
    all.extend(args);
    let out = fleet.ctl(&all);
    (out, started.elapsed())
}

#[test]
fn status_watch_exits_one_at_once_when_the_selector_matches_no_host() {
    let fleet = Fleet::start(ServerOptions::default());
    fleet.enroll("web-1", "role=web");
    apply_plain(&fleet, "shop", "role=nothing");

    let (out, took) = watch(&fleet, &["shop"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < Duration::from_secs(30), "it waited {took:?}");
    assert!(
        stderr(&out).contains(
            "nothing to wait for: stack shop is assigned to no host: its selector role=nothing matches no host"
        ),
        "{}",
        stderr(&out)
    );
    // Without -w nothing failed: exit 0.
    let out = fleet.ctl(&["status", "shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn status_watch_exits_one_at_once_naming_the_hosts_when_every_matching_host_is_offline() {
    let fleet = Fleet::start(ServerOptions::default());
    // Enrolled, never started: offline.
    fleet.enroll("web-1", "role=web");
    fleet.enroll("web-2", "role=web");
    apply_plain(&fleet, "shop", "role=web");

    let (out, took) = watch(&fleet, &["shop"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < Duration::from_secs(30), "it waited {took:?}");
    assert!(
        stderr(&out).contains(
            "nothing to wait for: every host stack shop is assigned to is offline: web-1, web-2"
        ),
        "{}",
        stderr(&out)
    );
    let (out, _) = watch(&fleet, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("every host with a stack assigned is offline: web-1, web-2"),
        "{}",
        stderr(&out)
    );
    // JSON output still prints the status the verdict was made on.
    let (out, _) = watch(&fleet, &["shop", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hosts.as_array().map(Vec::len), Some(2), "{hosts}");
}

#[test]
fn status_exits_one_while_a_stack_has_failed_and_zero_when_none_has() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let p = Prefix::new("fstat", &["shop", "broken"]);
    fleet.enroll("web-1", "role=web");
    let _agent = fleet.run_agent_with("web-1", &["--project-prefix", &p.0]);
    fleet.wait_status("web-1", "online");

    let shop = apply(&fleet, "shop", "role=web", &app_stack("v1"));
    let rev = shop["revision"].as_str().unwrap().to_string();
    eventually("web-1 to run shop", || {
        (reported(&fleet, "web-1", "shop") == Some((rev.clone(), "converged".into()))).then_some(())
    });
    let (out, _) = watch(&fleet, &["shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fleet.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A service that exits during its apply fails the stack.
    apply(
        &fleet,
        "broken",
        "role=web",
        "services:\n  app:\n    image: ${IMAGE}\n    environment: { EXIT_AFTER: \"0\", EXIT_CODE: \"3\" }\n",
    );
    let failed = eventually("status to exit 1 on the failed stack", || {
        let out = fleet.ctl(&["status"]);
        (out.status.code() == Some(1)).then_some(out)
    });
    let err = stderr(&failed);
    assert!(err.contains("broken on web-1: failed: "), "{err}");
    assert!(err.contains("1 stack failed or was refused"), "{err}");
    assert!(
        String::from_utf8_lossy(&failed.stdout).contains("broken"),
        "the table is printed too"
    );
    // Only the healthy stack: 0; -w on the failed one: 1.
    let out = fleet.ctl(&["status", "shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (out, _) = watch(&fleet, &["broken"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Removed, nothing is failed any more.
    fleet.ctl_ok(&["stack", "rm", "broken"]);
    eventually("status to exit 0 again", || {
        (fleet.ctl(&["status"]).status.code() == Some(0)).then_some(())
    });
}
