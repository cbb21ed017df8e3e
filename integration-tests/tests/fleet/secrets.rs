//! Secrets on the fleet: `stack apply` ships a secret's file with the revision by itself; the
//! host writes it 0400, mounts it read-only at /run/secrets; `stack show` lists its path and
//! never its bytes, and no log line holds them. A new secret is a new revision that recreates
//! the service.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use noco_integration_tests::docker::{host_port, http_get, require_docker, testapp_image};
use noco_integration_tests::{Fleet, ServerOptions, eventually};

use crate::support::{Prefix, apply_args, reported};

const PASSWORD: &str = "correct horse battery staple\n";
const TOKEN: &str = "tok-fleet-4711";

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/secrets")).join(rel)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The fixture stack (and its secret and config files) in the fleet's directory, applied as
/// `shop` to `role=web`; returns the revision.
fn apply_fixture(fleet: &Fleet) -> String {
    let compose = std::fs::read_to_string(fixture("compose.yaml")).unwrap();
    let args = apply_args(fleet, "shop", "role=web", &compose);
    std::fs::write(
        fleet.path("stack.env"),
        format!("IMAGE={}\nAPI_TOKEN={TOKEN}\nSITE=fleet\n", testapp_image()),
    )
    .unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let applied = fleet.ctl_json(&args);
    applied["revision"].as_str().unwrap_or_default().to_string()
}

fn converged(fleet: &Fleet, revision: &str) {
    eventually(&format!("web-1 to converge on {revision}"), || {
        (reported(fleet, "web-1", "shop") == Some((revision.to_string(), "converged".into())))
            .then_some(())
    });
}

#[test]
fn a_secret_ships_with_the_revision_reaches_the_host_0400_and_is_never_shown() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let prefix = Prefix::new("fsecr", &["shop"]);
    let data = fleet.enroll("web-1", "role=web");
    let agent = fleet.run_agent_with("web-1", &["--project-prefix", &prefix.0]);
    fleet.wait_status("web-1", "online");
    for rel in ["secrets/db_password.txt", "config/app.conf"] {
        let to = fleet.path(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture(rel), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // No --ship: the secret's and the config's files go with the revision by themselves.
    let revision = apply_fixture(&fleet);
    converged(&fleet, &revision);

    // The host holds the shipped copy 0400 in the revision, and the mounted file 0400 in a
    // directory only root may enter.
    let hex = revision.strip_prefix("sha256:").unwrap();
    let revision_dir = data.join("stacks/shop").join(&hex[..16]);
    let shipped = revision_dir.join("secrets/db_password.txt");
    assert_eq!(std::fs::read_to_string(&shipped).unwrap(), PASSWORD);
    assert_eq!(mode(&shipped), 0o400, "the shipped secret is 0400");
    assert_eq!(
        std::fs::read_to_string(revision_dir.join("config/app.conf")).unwrap(),
        "workers = 4\nlog = info\n"
    );
    let mounted = data.join("stacks/shop/mounted");
    assert_eq!(mode(&mounted), 0o700);
    let password_file = std::fs::read_dir(&mounted)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("secret-db_password-"))
        .expect("the mounted password file");
    assert_eq!(mode(&password_file), 0o400);

    // The service reads it at /run/secrets, read-only.
    let app = format!("{}-app-1", prefix.project("shop"));
    let port = host_port(&app, "8080/tcp")
        .unwrap()
        .expect("published port");
    let read = |path: &str| eventually(&format!("GET {path}"), || http_get(port, path));
    assert_eq!(read("/read?path=/run/secrets/db_password"), PASSWORD);
    assert!(
        read("/stat?path=/run/secrets/db_password").starts_with("mode=0400 "),
        "mounted with its mode"
    );
    assert!(read("/stat?path=/run/secrets/db_password").ends_with("writable=false"));
    assert_eq!(read("/read?path=/run/secrets/tokens/api"), TOKEN);

    // `stack show` lists the file's path, never its bytes or the token.
    let show = fleet.ctl_json(&["stack", "show", "shop"]).to_string();
    assert!(show.contains("secrets/db_password.txt"), "{show}");
    let table = fleet.ctl_ok(&["stack", "show", "shop"]);
    for shown in [&show, &table] {
        assert!(!shown.contains("correct horse"), "{shown}");
        assert!(!shown.contains(TOKEN), "{shown}");
    }

    // A new password is a new revision: shipped, and the service recreated with it.
    std::fs::write(fleet.path("secrets/db_password.txt"), "rotated-pw-93\n").unwrap();
    let rotated = apply_fixture(&fleet);
    assert_ne!(rotated, revision);
    converged(&fleet, &rotated);
    let port = host_port(&app, "8080/tcp")
        .unwrap()
        .expect("published port");
    assert_eq!(
        eventually("the new password", || http_get(
            port,
            "/read?path=/run/secrets/db_password"
        )
        .filter(|p| p == "rotated-pw-93\n")),
        "rotated-pw-93\n"
    );

    // No log line holds a secret.
    for (who, log) in [("server", fleet.server_log()), ("agent", agent.log_text())] {
        for secret in ["correct horse", "rotated-pw-93", TOKEN] {
            assert!(
                !log.contains(secret),
                "the {who} log shows {secret:?}:\n{log}"
            );
        }
    }
}
