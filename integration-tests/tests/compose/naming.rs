//! The project name as docker compose decides it, through the real `noco-agent compose`: a file
//! without `name:` is named by its directory (the fixture `My.Stack` → `mystack`), with no flag
//! needed for validate, plan, up, ps and down; `COMPOSE_PROJECT_NAME` in the `.env` beside the
//! file names it; a name that cannot be made valid is refused suggesting `-p`; and the host's
//! compose tool sees the directory-named stack.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use noco_integration_tests::docker::{require_docker, testapp_image};
use noco_integration_tests::stack::Stack;
use noco_integration_tests::{bin, path_str};

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/My.Stack/compose.yaml"
    ))
}

/// `noco-agent compose <args…>`, run to its end.
fn agent(args: &[&str]) -> Output {
    Command::new(bin("noco-agent"))
        .arg("compose")
        .args(args)
        .output()
        .expect("running noco-agent compose")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let out = agent(args);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "noco-agent compose {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn a_file_without_a_name_is_named_by_its_directory_with_no_flag() {
    let file = fixture();
    let out = ok(&["validate", path_str(&file)]);
    assert!(out.contains("valid — project mystack, 1 services"), "{out}");
}

#[test]
fn compose_project_name_in_the_env_file_beside_the_compose_file_names_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, "name: from-file\nservices:\n  a:\n    image: a\n").unwrap();
    std::fs::write(dir.path().join(".env"), "COMPOSE_PROJECT_NAME=from-env\n").unwrap();
    let out = ok(&["validate", path_str(&file)]);
    assert!(out.contains("project from-env,"), "{out}");
    // -p wins over it, as in compose.
    let out = ok(&["validate", path_str(&file), "-p", "from-flag"]);
    assert!(out.contains("project from-flag,"), "{out}");

    std::fs::write(dir.path().join(".env"), "COMPOSE_PROJECT_NAME=From.Env\n").unwrap();
    let out = agent(&["validate", path_str(&file)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("invalid project name \"From.Env\" from COMPOSE_PROJECT_NAME")
            && stderr.contains("did you mean \"fromenv\"? (-p overrides it)"),
        "{stderr}"
    );
}

#[test]
fn a_directory_name_with_no_usable_character_is_refused_suggesting_the_flag() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ÄÖ");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("compose.yaml");
    std::fs::write(&file, "services:\n  a:\n    image: a\n").unwrap();
    let out = agent(&["validate", path_str(&file)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the directory name \"ÄÖ\" has no usable characters")
            && stderr.contains("pass one with -p"),
        "{stderr}"
    );
    ok(&["validate", path_str(&file), "-p", "named"]);
    // ps and down without a file still need -p.
    let out = agent(&["ps"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .1
            .contains("pass its name with -p, or its compose file")
    );
}

/// `<stack dir>/My.Stack<suffix>/compose.yaml`, a copy of the fixture in a directory whose
/// normalized name is the stack's (unique) project name.
fn directory_named(stack: &Stack) -> PathBuf {
    let suffix = &stack.project["mystack".len()..];
    let dir = stack.path().join(format!("My.Stack{suffix}"));
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("compose.yaml");
    std::fs::copy(fixture(), &file).unwrap();
    file
}

fn ps_names(file: &Path) -> Vec<String> {
    let out = ok(&["ps", path_str(file), "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_directory_named_stack_runs_and_is_seen_by_ps_down_and_the_hosts_compose_tool() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("mystack", "services: {}\n");
    let file = directory_named(&stack);
    let image = format!("IMAGE={}", testapp_image());
    let p = &stack.project;

    let plan = ok(&["plan", path_str(&file), "--var", &image]);
    assert!(plan.contains(&format!("{p}-web-1")), "{plan}");
    ok(&[
        "up",
        path_str(&file),
        "--var",
        &image,
        "--wait-timeout",
        "60s",
    ]);
    assert_eq!(ps_names(&file), [format!("{p}-web-1")]);
    assert_eq!(
        stack.ps().len(),
        1,
        "-p {p} names the same project as the directory"
    );

    // The host's compose tool finds it by the same name (v1 `docker-compose` reads the project
    // from its directory too).
    let compose = Command::new("docker-compose")
        .args(["-p", p, "ps"])
        .current_dir(file.parent().unwrap())
        .output();
    if let Ok(out) = compose {
        let (stdout, stderr) = text(&out);
        assert!(
            stdout.contains(&format!("{p}-web-1")),
            "docker-compose ps:\n{stdout}\n{stderr}"
        );
    }

    let down = ok(&["down", path_str(&file)]);
    assert!(
        down.contains(&format!("container {p}-web-1: removed")),
        "{down}"
    );
    assert!(ps_names(&file).is_empty());
}
