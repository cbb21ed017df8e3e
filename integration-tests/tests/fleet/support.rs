//! What the fleet tests share: a stack file in the fleet's directory, nococtl stack commands,
//! the status table as JSON, and the containers of a project.

use std::path::PathBuf;
use std::process::Command;

use noco_integration_tests::docker::{cleanup_project, testapp_image};
use noco_integration_tests::stack::unique_project;
use noco_integration_tests::{Fleet, Value, bin, path_str};

/// A stack's compose file using the test image through `${IMAGE}` (set in `stack.env`).
pub fn app_stack(version: &str) -> String {
    format!(
        "services:\n  app:\n    image: ${{IMAGE}}\n    environment: {{ VERSION: \"{version}\" }}\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\n"
    )
}

/// Write `compose.yaml` and `stack.env` into the fleet's directory; returns the compose path.
pub fn write_stack(fleet: &Fleet, yaml: &str) -> PathBuf {
    let file = fleet.path("compose.yaml");
    std::fs::write(&file, yaml).unwrap();
    std::fs::write(
        fleet.path("stack.env"),
        format!("IMAGE={}\n", testapp_image()),
    )
    .unwrap();
    file
}

/// `nococtl stack apply <name> -f compose.yaml --selector <selector> --env-file stack.env`.
pub fn apply(fleet: &Fleet, name: &str, selector: &str, yaml: &str) -> Value {
    let mut args = apply_args(fleet, name, selector, yaml);
    args.extend(["-o".into(), "json".into()]);
    let out = fleet.ctl_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stack apply printed ({e}): {out}"))
}

/// The arguments of [`apply`], to which a test may add more.
pub fn apply_args(fleet: &Fleet, name: &str, selector: &str, yaml: &str) -> Vec<String> {
    let file = write_stack(fleet, yaml);
    let env = fleet.path("stack.env");
    [
        "stack",
        "apply",
        name,
        "-f",
        path_str(&file),
        "--selector",
        selector,
        "--env-file",
        path_str(&env),
    ]
    .map(String::from)
    .to_vec()
}

/// The `nococtl status -o json` rows (printed with exit 0, or 1 while a stack has failed).
pub fn status(fleet: &Fleet) -> Vec<Value> {
    let out = fleet.ctl(&["status", "-o", "json"]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "nococtl status failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(a)) => a,
        other => panic!("status printed {other:?}"),
    }
}

/// The status row of a host.
pub fn host_status(fleet: &Fleet, host: &str) -> Value {
    status(fleet)
        .into_iter()
        .find(|h| h["host"] == host)
        .unwrap_or(Value::Null)
}

/// What a host reports for a stack: `(revision, state)`.
pub fn reported(fleet: &Fleet, host: &str, stack: &str) -> Option<(String, String)> {
    let h = host_status(fleet, host);
    let stacks = h["reported"].as_array()?.clone();
    let s = stacks.into_iter().find(|s| s["name"] == stack)?;
    Some((
        s["revision"].as_str()?.to_string(),
        s["state"].as_str()?.to_string(),
    ))
}

/// The running containers of a compose project, by name.
pub fn running(project: &str) -> Vec<String> {
    let out = Command::new(bin("noco-agent"))
        .args(["compose", "ps", "-p", project, "-o", "json"])
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    rows.as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["running"] == true)
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A project prefix unique to this run (`<p>-`), with its projects cleaned up at drop.
pub struct Prefix(pub String, Vec<String>);

impl Prefix {
    pub fn new(p: &str, stacks: &[&str]) -> Prefix {
        let prefix = format!("{}-", unique_project(p));
        let projects: Vec<String> = stacks.iter().map(|s| format!("{prefix}{s}")).collect();
        for project in &projects {
            cleanup_project(project);
        }
        Prefix(prefix, projects)
    }

    pub fn project(&self, stack: &str) -> String {
        format!("{}{stack}", self.0)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        for project in &self.1 {
            cleanup_project(project);
        }
    }
}

/// Apply `yaml` as stack `shop` to `role=web` and wait until every host in `hosts` reports it
/// converged; returns its revision.
pub fn apply_converged(fleet: &Fleet, yaml: &str, hosts: &[&str]) -> String {
    let revision = apply(fleet, "shop", "role=web", yaml)["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    noco_integration_tests::eventually(&format!("{revision} converged on {hosts:?}"), || {
        hosts
            .iter()
            .all(|h| reported(fleet, h, "shop") == Some((revision.clone(), "converged".into())))
            .then_some(())
    });
    revision
}

/// `nococtl rollout start shop -f <stack> --env-file stack.env <flags> -o json`.
pub fn start_rollout(fleet: &Fleet, yaml: &str, flags: &[&str]) -> Value {
    let file = write_stack(fleet, yaml);
    let env = fleet.path("stack.env");
    let mut args = vec![
        "rollout",
        "start",
        "shop",
        "-f",
        path_str(&file),
        "--env-file",
        path_str(&env),
    ];
    args.extend(flags);
    fleet.ctl_json(&args)
}

pub fn rollout(fleet: &Fleet) -> Value {
    fleet.ctl_json(&["rollout", "status", "shop"])
}

/// A whole rollout takes a few health-gated steps: wait up to three minutes.
pub fn wait_rollout(fleet: &Fleet, phase: &str) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        noco_integration_tests::eventually_within(
            &format!("the rollout to be {phase}"),
            std::time::Duration::from_secs(180),
            || {
                let r = rollout(fleet);
                *last.borrow_mut() = r.clone();
                (r["phase"] == phase).then_some(r)
            },
        )
    }));
    match waited {
        Ok(r) => r,
        Err(panic) => {
            // Say where it stood: the rollout's hosts and events, and the hosts' reports.
            eprintln!("the rollout as last read: {:#}", last.borrow());
            eprintln!("status: {:#}", serde_json::Value::Array(status(fleet)));
            std::panic::resume_unwind(panic)
        }
    }
}

/// Rollout flags for two or three hosts: a canary, then one host at a time, healthy for 1 s.
pub const ONE_BY_ONE: &[&str] = &[
    "--canary",
    "1",
    "--batch",
    "1",
    "--min-healthy",
    "1s",
    "--deadline",
    "60s",
];
