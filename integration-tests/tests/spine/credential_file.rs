//! A credential file holds the operator's private key: nococtl uses one that others may read
//! with a warning on stderr naming its mode (issue 9: as ssh warns), and says nothing about one
//! only its owner may read.

use std::os::unix::fs::PermissionsExt;

use noco_integration_tests::{Fleet, ServerOptions, stderr};

#[test]
fn a_credential_others_may_read_is_used_with_a_warning() {
    let fleet = Fleet::start(ServerOptions::default());
    let cred = fleet.path("admin.toml");
    std::fs::copy(fleet.admin_config(), &cred).unwrap();

    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o600)).unwrap();
    let quiet = fleet.ctl_as(&cred, &["whoami"]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains("warning"), "{}", stderr(&quiet));

    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = fleet.ctl_as(&cred, &["whoami"]);
    assert!(warned.status.success(), "{}", stderr(&warned));
    assert_eq!(warned.stdout, quiet.stdout, "the command works as before");
    assert!(
        stderr(&warned).contains(&format!(
            "nococtl: warning: {} has mode 0644: every user on this machine may read it, and it holds your private key; run chmod 600 {}",
            cred.display(),
            cred.display()
        )),
        "{}",
        stderr(&warned)
    );
}
