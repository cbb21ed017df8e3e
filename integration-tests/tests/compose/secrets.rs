//! Secrets and configs through `noco-agent compose`: the stack of `fixtures/secrets` runs with
//! its password at /run/secrets/db_password and its configs at their targets, each read-only
//! with its mode and owner, written on the host into a private directory of the state
//! directory; a new password recreates the service, and `down` removes the files.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use noco_integration_tests::docker::{host_port, http_get, require_docker};
use noco_integration_tests::eventually;
use noco_integration_tests::stack::{Stack, inspect};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/secrets")).join(rel)
}

fn read_fixture(rel: &str) -> String {
    std::fs::read_to_string(fixture(rel)).unwrap()
}

/// The stack of `fixtures/secrets`, copied into a directory of its own.
fn secrets_stack() -> Stack {
    let stack = Stack::new("secr", &read_fixture("compose.yaml"));
    for rel in ["secrets/db_password.txt", "config/app.conf"] {
        stack.write(rel, &read_fixture(rel));
    }
    stack
}

/// `GET <path>` of the app until it answers 200.
fn get(port: u16, path: &str) -> String {
    eventually(&format!("GET {path}"), || http_get(port, path))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_service_reads_its_secret_and_configs_read_only_and_a_new_secret_recreates_it() {
    if !require_docker() {
        return;
    }
    let stack = secrets_stack();
    let state = tempfile::tempdir().unwrap();
    let vars = ["--var", "API_TOKEN=tok-123", "--var", "SITE=the shop"];
    let state_dir = ["--state-dir", state.path().to_str().unwrap()];
    let args = [&vars[..], &state_dir, &["--wait-timeout", "60s"]].concat();
    let out = stack.ok("up", &args);
    assert!(out.contains("created"), "{out}");
    let app = stack.container("app", 1);
    let port = host_port(&app, "8080/tcp")
        .unwrap()
        .expect("published port");
    let stat = |path: &str| get(port, &format!("/stat?path={path}"));

    // The service finds its password where compose puts it, and cannot change it.
    assert_eq!(
        get(port, "/env/DB_PASSWORD_FILE"),
        "/run/secrets/db_password"
    );
    assert_eq!(
        get(port, "/read?path=/run/secrets/db_password"),
        "correct horse battery staple\n"
    );
    assert_eq!(
        stat("/run/secrets/db_password"),
        "mode=0400 uid=0 gid=0 size=29 writable=false"
    );
    // Long syntax: a relative target under /run/secrets, its owner and mode; an environment source.
    assert_eq!(get(port, "/read?path=/run/secrets/tokens/api"), "tok-123");
    assert_eq!(
        stat("/run/secrets/tokens/api"),
        "mode=0440 uid=1000 gid=1000 size=7 writable=false"
    );
    // Configs: at their target, or /<name>; 0444; from a file and inline (interpolated).
    assert_eq!(
        get(port, "/read?path=/etc/app/app.conf"),
        "workers = 4\nlog = info\n"
    );
    assert!(
        stat("/etc/app/app.conf").starts_with("mode=0444 uid=0 gid=0 ")
            && stat("/etc/app/app.conf").ends_with(" writable=false"),
        "{}",
        stat("/etc/app/app.conf")
    );
    assert_eq!(get(port, "/read?path=/banner"), "welcome to the shop\n");

    // Docker mounts each one read-only.
    let mounts = inspect(&app).mounts.unwrap_or_default();
    for target in [
        "/run/secrets/db_password",
        "/run/secrets/tokens/api",
        "/etc/app/app.conf",
        "/banner",
    ] {
        let m = mounts
            .iter()
            .find(|m| m.destination.as_deref() == Some(target))
            .unwrap_or_else(|| panic!("{target} is not mounted: {mounts:?}"));
        assert_eq!(m.rw, Some(false), "{target} is read-only");
    }

    // On the host: a directory of the project no other user can enter, files with their modes.
    let dir = state.path().join("compose").join(&stack.project);
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    let secret_file = |files: &[PathBuf]| {
        files
            .iter()
            .find(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("secret-db_password-"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no db_password file in {files:?}"))
    };
    let password = secret_file(&files);
    assert_eq!(mode(&password), 0o400);
    let token = files
        .iter()
        .find(|f| f.to_string_lossy().contains("secret-api_token-"))
        .unwrap();
    let meta = std::fs::metadata(token).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o440, 1000, 1000)
    );

    // Unchanged: nothing to do.
    let again = stack.ok("up", &args);
    assert!(again.contains("up to date"), "{again}");

    // A new password: the plan says the service is recreated, and it is, with the new value.
    let before = stack.ids()[&app].clone();
    stack.write("secrets/db_password.txt", "a new password\n");
    let plan = stack.ok("plan", &vars);
    assert!(
        plan.contains("recreate") && plan.contains("configuration changed"),
        "{plan}"
    );
    assert!(!plan.contains("a new password"), "{plan}");
    let out = stack.ok("up", &args);
    assert!(out.contains(&format!("{app}: recreated")), "{out}");
    assert_ne!(stack.ids()[&app], before);
    let port = host_port(&app, "8080/tcp")
        .unwrap()
        .expect("published port");
    assert_eq!(
        get(port, "/read?path=/run/secrets/db_password"),
        "a new password\n"
    );
    // The old value's file is gone once the new container runs.
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    assert_ne!(secret_file(&files), password);
    assert!(!password.exists());

    // down removes the containers and the files.
    let down = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args(["compose", "down", "-p", &stack.project, "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!dir.exists(), "down removed {}", dir.display());
}

#[test]
fn a_secret_that_cannot_be_read_is_refused_before_anything_runs() {
    if !require_docker() {
        return;
    }
    let stack = secrets_stack();
    std::fs::remove_file(stack.path().join("secrets/db_password.txt")).unwrap();
    let out = stack.run("up", &["--var", "SITE=x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secrets.db_password.file")
            && err.contains("cannot be read")
            && err.contains("secrets.api_token.environment")
            && err.contains("API_TOKEN is not set"),
        "{err}"
    );
    assert!(stack.ps().is_empty(), "nothing was created");
}
