//! One command grammar (issue 9), through the real binaries: the stack is the first argument,
//! `-f` the compose file and `--ship` a shipped file in every command; durations are seconds or
//! a number with a unit; a selector that cannot match is refused before anything is sent; the
//! previous release's spellings (`--name`, `--file`, `--compose`) still work, with a warning.

use std::time::SystemTime;

use noco_integration_tests::{Fleet, ServerOptions, Value, path_str, stderr};

/// `compose.yaml` (with `nginx.conf` beside it) in the fleet's directory; returns its path.
fn write_stack(fleet: &Fleet) -> String {
    let file = fleet.path("compose.yaml");
    std::fs::write(
        &file,
        "services:\n  web:\n    image: nginx:1.27\n    volumes: [\"./nginx.conf:/etc/nginx/nginx.conf:ro\"]\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 2s\n",
    )
    .unwrap();
    std::fs::write(fleet.path("nginx.conf"), "events {}\n").unwrap();
    path_str(&file).to_string()
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn the_previous_spellings_still_work_with_a_deprecation_warning() {
    let fleet = Fleet::start(ServerOptions::default());
    let file = write_stack(&fleet);

    let old = fleet.ctl(&[
        "stack",
        "apply",
        "-f",
        &file,
        "--name",
        "shop",
        "--file",
        "nginx.conf",
        "--selector",
        "role=web",
        "-o",
        "json",
    ]);
    assert!(old.status.success(), "{}", stderr(&old));
    let err = stderr(&old);
    assert!(
        err.contains("nococtl: warning: --name is deprecated and goes away in the next release: use the stack as the first argument: nococtl stack apply shop -f …"),
        "{err}"
    );
    assert!(
        err.contains("nococtl: warning: --file is deprecated and goes away in the next release: use --ship nginx.conf"),
        "{err}"
    );
    let revision = json(&old)["revision"].as_str().unwrap().to_string();

    // The new spelling says the same thing: the same revision, and no warning.
    let new = fleet.ctl(&[
        "stack",
        "apply",
        "shop",
        "-f",
        &file,
        "--ship",
        "nginx.conf",
        "-o",
        "json",
    ]);
    assert!(new.status.success(), "{}", stderr(&new));
    assert!(!stderr(&new).contains("deprecated"), "{}", stderr(&new));
    assert_eq!(json(&new)["revision"], revision.as_str());
    assert_eq!(json(&new)["unchanged"], true);

    // `--compose`, the old long name of -f.
    let diff = fleet.ctl(&[
        "stack",
        "diff",
        "shop",
        "--compose",
        &file,
        "--ship",
        "nginx.conf",
    ]);
    assert!(diff.status.success(), "{}", stderr(&diff));
    assert!(
        stderr(&diff).contains(
            "--compose is deprecated and goes away in the next release: use -f/--compose-file"
        ),
        "{}",
        stderr(&diff)
    );
    assert!(String::from_utf8_lossy(&diff.stdout).contains("no changes"));
}

#[test]
fn the_stack_comes_first_and_f_is_the_compose_file_in_every_stack_command() {
    let fleet = Fleet::start(ServerOptions::default());
    let file = write_stack(&fleet);
    fleet.ctl_ok(&[
        "stack",
        "apply",
        "shop",
        "-f",
        &file,
        "--ship",
        "nginx.conf",
        "--selector",
        "role=web",
    ]);

    // stack diff shows durations as written and what would be recreated.
    let changed = std::fs::read_to_string(&file).unwrap().replace("2s", "3s");
    std::fs::write(&file, changed).unwrap();
    let diff = fleet.ctl_ok(&[
        "stack",
        "diff",
        "shop",
        "--compose-file",
        &file,
        "--ship",
        "nginx.conf",
    ]);
    assert!(diff.contains("~ service web (recreated)"), "{diff}");
    assert!(diff.contains("    healthcheck.interval: 2s → 3s"), "{diff}");
    assert!(
        diff.contains("would recreate 1 service (their containers are replaced): web"),
        "{diff}"
    );
    assert!(!diff.contains("secs"), "{diff}");

    // Two different stack names are refused; the same one twice is one.
    let both = fleet.ctl(&["stack", "apply", "shop", "--name", "other", "-f", &file]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    // Neither: the usage says what is missing.
    let none = fleet.ctl(&["stack", "apply", "-f", &file]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(stderr(&none).contains("STACK"), "{}", stderr(&none));

    // rollout start takes the stack first too: read and checked here, refused by the server
    // (no host matches).
    let rollout = fleet.ctl(&[
        "rollout",
        "start",
        "shop",
        "-f",
        &file,
        "--ship",
        "nginx.conf",
    ]);
    assert_eq!(rollout.status.code(), Some(1), "{}", stderr(&rollout));
    assert!(
        stderr(&rollout).contains("no host matches stack shop"),
        "{}",
        stderr(&rollout)
    );

    // --help documents the grammar.
    let help = fleet.ctl_ok(&["--help"]);
    assert!(
        help.contains("Command grammar: nococtl <noun> <verb> [NAME] [flags]"),
        "{help}"
    );
    assert!(
        help.contains("-f/--compose-file the compose file"),
        "{help}"
    );
}

#[test]
fn durations_are_seconds_or_a_number_with_a_unit_and_errors_name_the_units() {
    let fleet = Fleet::start(ServerOptions::default());
    for ttl in ["3600", "1h", "60m"] {
        let token = fleet.ctl_json(&["token", "create", "--ttl", ttl]);
        let expires = humantime::parse_rfc3339(token["expires"].as_str().unwrap()).unwrap();
        let secs = expires
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        assert!(
            (3500..=3600).contains(&secs),
            "--ttl {ttl}: expires in {secs}s: {token}"
        );
    }

    // A rollout's --min-healthy 30 and --deadline 300 are seconds.
    let file = write_stack(&fleet);
    fleet.enroll("web-1", "role=web");
    fleet.ctl_ok(&[
        "stack",
        "apply",
        "shop",
        "-f",
        &file,
        "--ship",
        "nginx.conf",
        "--selector",
        "role=web",
    ]);
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap().replace("2s", "3s"),
    )
    .unwrap();
    let rollout = fleet.ctl_json(&[
        "rollout",
        "start",
        "shop",
        "-f",
        &file,
        "--ship",
        "nginx.conf",
        "--min-healthy",
        "30",
        "--deadline",
        "300",
    ]);
    assert_eq!(rollout["config"]["min_healthy_ms"], 30_000, "{rollout}");
    assert_eq!(rollout["config"]["deadline_ms"], 300_000, "{rollout}");
    fleet.ctl_ok(&["rollout", "abort", "shop"]);

    for args in [
        &["token", "create", "--ttl", "5x"][..],
        &["status", "-w", "--timeout", "5x"],
        &[
            "rollout",
            "start",
            "shop",
            "-f",
            "compose.yaml",
            "--deadline",
            "5x",
        ],
        &[
            "operator", "add", "alice", "--role", "viewer", "--ttl", "5x",
        ],
    ] {
        let out = fleet.ctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out)
                .contains("\"5x\" is not a duration: use seconds (30) or a unit (30s, 5m, 1h)"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_selector_that_cannot_match_is_refused_before_anything_is_sent() {
    let fleet = Fleet::start(ServerOptions::default());
    let file = write_stack(&fleet);
    for (selector, reason) in [
        (
            "role==web",
            "selector \"role==web\": == is not an operator here: write role=web (equals) or role!=web (differs)",
        ),
        (
            "=web",
            "selector \"=web\": no label key before the operator: write key=value, like role=web",
        ),
        (
            "role=",
            "selector \"role=\": no value after =: write role=VALUE, or role for hosts that have the label, !role for hosts that do not",
        ),
    ] {
        let out = fleet.ctl(&[
            "stack",
            "apply",
            "shop",
            "-f",
            &file,
            "--ship",
            "nginx.conf",
            "--selector",
            selector,
        ]);
        assert_eq!(out.status.code(), Some(2), "{selector}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(reason),
            "{selector}: {}",
            stderr(&out)
        );
    }
    assert_eq!(fleet.ctl_json(&["stack", "ls"]), serde_json::json!([]));
    assert!(
        !fleet.audit().iter().any(|r| r["action"] == "stack.apply"),
        "nothing reached the server"
    );
}

/// Every program reads durations the same way: the server's and the agent's flags take plain
/// seconds too, and refuse the same way.
#[test]
fn the_server_and_agent_read_durations_as_nococtl_does() {
    for (program, args) in [
        (
            "noco-server",
            vec!["run", "--data-dir", "/nonexistent", "--heartbeat"],
        ),
        (
            "noco-agent",
            vec!["run", "--data-dir", "/nonexistent", "--max-backoff"],
        ),
    ] {
        let mut bad = args.clone();
        bad.push("5x");
        let out = std::process::Command::new(noco_integration_tests::bin(program))
            .args(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program}: {err}");
        assert!(
            err.contains(r#""5x" is not a duration: use seconds (30) or a unit (30s, 5m, 1h)"#),
            "{program}: {err}"
        );
        let mut good = args;
        good.push("30");
        let out = std::process::Command::new(noco_integration_tests::bin(program))
            .args(&good)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("is not a duration") && out.status.code() != Some(2),
            "{program} takes plain seconds: {err}"
        );
    }
}
