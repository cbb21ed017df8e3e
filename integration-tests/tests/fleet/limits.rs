//! Size limits, end to end (issue 8, defect 1): a stack with a 5 MiB file — beyond the old
//! 4 MiB session message — reaches its host; what a host could never receive alongside its other
//! stacks is refused at `stack apply` and at `host label`, naming the host, and the host keeps
//! running what it had, online.

use noco_integration_tests::docker::require_docker;
use std::time::Duration;

use noco_integration_tests::{Fleet, ServerOptions, eventually_within};

use crate::support::{Prefix, app_stack, apply_args, reported};

const MIB: usize = 1024 * 1024;

/// `nococtl stack apply` of the app stack with one shipped file of `size` bytes.
fn apply_with_blob(fleet: &Fleet, name: &str, selector: &str, size: usize) -> std::process::Output {
    let mut args = apply_args(fleet, name, selector, &app_stack(name));
    let blob = format!("{name}.bin");
    // Different bytes per stack: every revision is its own content.
    let fill = name.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    std::fs::write(fleet.path(&blob), vec![fill; size]).unwrap();
    args.extend(["--ship".into(), blob]);
    fleet.ctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn converged(fleet: &Fleet, host: &str, stack: &str) -> bool {
    reported(fleet, host, stack).is_some_and(|(_, state)| state == "converged")
}

#[test]
fn a_host_receives_large_stacks_and_is_never_assigned_more_than_it_can_receive() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let stacks = ["big1", "big2", "big3", "big4", "dbbig"];
    let web = Prefix::new("lw", &stacks);
    let db = Prefix::new("ld", &stacks);
    fleet.enroll("web-1", "role=web");
    fleet.enroll("db-1", "role=db");
    let _w = fleet.run_agent_with("web-1", &["--project-prefix", &web.0]);
    let _d = fleet.run_agent_with("db-1", &["--project-prefix", &db.0]);
    fleet.wait_status("web-1", "online");
    fleet.wait_status("db-1", "online");

    // 5 MiB, then two of 8 MiB: 21 MiB on one host, delivered in one signed state.
    for (name, size) in [("big1", 5 * MIB), ("big2", 8 * MIB), ("big3", 8 * MIB)] {
        let out = apply_with_blob(&fleet, name, "role=web", size);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Large revisions take a while to ship, check and write on a loaded machine.
    eventually_within(
        "web-1 to run its three large stacks",
        Duration::from_secs(90),
        || {
            ["big1", "big2", "big3"]
                .iter()
                .all(|s| converged(&fleet, "web-1", s))
                .then_some(())
        },
    );

    // A fourth would make web-1's state larger than a session message: refused, named.
    let out = apply_with_blob(&fleet, "big4", "role=web", 8 * MIB);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("host web-1's desired state would be") && err.contains("big4"),
        "{err}"
    );
    let listed = fleet.ctl_json(&["stack", "ls"]);
    assert!(
        !listed.to_string().contains("big4"),
        "a refused stack is not stored: {listed}"
    );

    // Relabelling db-1 (which holds its own 8 MiB stack) into role=web is refused too.
    let out = apply_with_blob(&fleet, "dbbig", "host=db-1", 8 * MIB);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually_within("db-1 to run dbbig", Duration::from_secs(90), || {
        converged(&fleet, "db-1", "dbbig").then_some(())
    });
    let out = fleet.ctl(&["host", "label", "db-1", "role=web"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("host db-1's desired state would be"), "{err}");
    let hosts = fleet.ctl_json(&["host", "ls"]);
    let db1 = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "db-1")
        .unwrap()
        .clone();
    assert_eq!(db1["labels"]["role"], "db", "labels unchanged: {db1}");

    // Both hosts stay online and keep running everything they had.
    fleet.wait_status("web-1", "online");
    fleet.wait_status("db-1", "online");
    for s in ["big1", "big2", "big3"] {
        assert!(converged(&fleet, "web-1", s), "{s} on web-1");
    }
    assert!(converged(&fleet, "db-1", "dbbig"));
}
