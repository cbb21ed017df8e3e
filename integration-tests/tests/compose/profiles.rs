//! Compose files as users write them, through the real `noco-agent compose`: services behind
//! `profiles` run only when enabled (`--profile`, `COMPOSE_PROFILES` from an env file, the
//! file's `x-noco.profiles`), a dependency on a disabled service is refused naming both,
//! extension keys anywhere are ignored, and a typo'd key gets a "did you mean".

use std::process::Output;

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::path_str;
use noco_integration_tests::stack::Stack;

const PROFILED: &str = r#"
services:
  web:
    image: ${IMAGE}
  debug:
    image: ${IMAGE}
    profiles: [debug]
  ops:
    image: ${IMAGE}
    profiles: [ops, tools]
"#;

/// The services of the stack's containers, sorted.
fn services(stack: &Stack) -> Vec<String> {
    let mut names: Vec<String> = stack
        .ps()
        .iter()
        .filter_map(|c| c["service"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn services_behind_profiles_run_only_when_one_of_their_profiles_is_enabled() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("prof", PROFILED);
    stack.up();
    assert_eq!(services(&stack), ["web"]);

    stack.ok("up", &["--profile", "debug", "--wait-timeout", "60s"]);
    assert_eq!(services(&stack), ["debug", "web"]);

    // COMPOSE_PROFILES from an env file; a service no longer enabled leaves, like any service
    // gone from the file.
    stack.write("ops.env", "COMPOSE_PROFILES=tools\n");
    let env = stack.path().join("ops.env");
    stack.ok(
        "up",
        &["--env-file", path_str(&env), "--wait-timeout", "60s"],
    );
    assert_eq!(services(&stack), ["ops", "web"]);

    // The file's own x-noco.profiles (a fleet stack's selection) are enabled as well.
    stack.write_compose(&format!("{PROFILED}x-noco:\n  profiles: [debug]\n"));
    let plan = stack.ok("plan", &[]);
    assert!(plan.contains(&stack.container("debug", 1)), "{plan}");
    stack.up();
    assert_eq!(services(&stack), ["debug", "web"]);
}

#[test]
fn depending_on_a_disabled_service_is_refused_naming_both() {
    let stack = Stack::new(
        "profdep",
        &PROFILED
            .replace(
                "    profiles: [ops, tools]\n",
                "    profiles: [ops, tools]\n    depends_on: [debug]\n",
            )
            .replace(
                "  web:\n    image: ${IMAGE}\n",
                "  web:\n    image: ${IMAGE}\n    depends_on: [ops]\n",
            ),
    );
    let out = stack.run("validate", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("services.web.depends_on[0] (line 5): service \"ops\" is required by \"web\" but is disabled; it can be enabled by profiles [ops, tools]"),
        "{err}"
    );
    // With ops enabled, its own dependency on debug is the problem.
    let out = stack.run("validate", &["--profile", "tools"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("service \"debug\" is required by \"ops\" but is disabled"),
        "{err}"
    );
    let out = stack.run("validate", &["--profile", "tools", "--profile", "debug"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn extension_keys_anywhere_are_ignored_and_a_typo_gets_the_nearest_key() {
    let stack = Stack::new(
        "ext",
        r#"
x-anything: {a: 1}
services:
  web:
    image: ${IMAGE}
    x-owner: me
    networks:
      default: {x-note: 1}
      x-not-a-network: {}
    ulimits:
      nofile: 1024
      x-not-a-limit: 1
networks:
  default:
    x-purpose: 1
"#,
    );
    let out = stack.run("validate", &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    stack.write_compose("services:\n  web:\n    image: ${IMAGE}\n    enviroment:\n      A: 1\n");
    let out = stack.run("validate", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("compose.yaml: services.web.enviroment (line 4): service \"web\": unknown key \"enviroment\": did you mean \"environment\"?"),
        "{err}"
    );
}
