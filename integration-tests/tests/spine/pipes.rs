//! Output into a pipe whose reader goes away (`nococtl audit | head -1`, `… | true`): every
//! command line stops writing and exits 0, with no panic on stderr (issue 8: exit 101, "failed
//! printing to stdout: Broken pipe").

use std::process::Command;

use noco_integration_tests::pipe::read_then_close;
use noco_integration_tests::{Fleet, ServerOptions, bin, path_str};

/// A compose file of about 200 KiB (its comment lines), so that `stack show` prints far more
/// than a pipe holds.
fn large_compose() -> String {
    let mut yaml = String::from("services:\n  app:\n    image: noco-testapp:latest\n");
    for i in 0..3000 {
        yaml.push_str(&format!(
            "# line {i:04}: a comment long enough to make the stack's compose file large\n"
        ));
    }
    yaml
}

#[test]
fn nococtl_exits_quietly_when_the_reader_of_its_output_goes_away() {
    let fleet = Fleet::start(ServerOptions::default());
    let file = fleet.path("big.yaml");
    std::fs::write(&file, large_compose()).unwrap();
    fleet.ctl_ok(&[
        "stack",
        "apply",
        "big",
        "-f",
        path_str(&file),
        "--selector",
        "role=none",
    ]);
    fleet.ctl_ok(&["token", "create", "--labels", "role=web"]);
    fleet.operator("vera", "viewer");
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new(bin("nococtl"));
        cmd.args(args)
            .env("NOCO_CONFIG", fleet.admin_config())
            .env_remove("NOCO_SERVER");
        cmd
    };

    // `| head -1` on output larger than the pipe: the reader goes away mid-output.
    for args in [
        &["stack", "show", "big"][..],
        &["stack", "show", "big", "-o", "json"],
    ] {
        let run = read_then_close(&mut ctl(args), 1);
        assert_eq!(run.read.len(), 1, "nococtl {args:?} printed nothing");
        run.assert_quiet(&format!("nococtl {args:?} | head -1"));
    }

    // `| true`: the reader is gone before the first line.
    for args in [
        &["audit", "--limit", "1000"][..],
        &["audit", "--limit", "1000", "-o", "json"],
        &["whoami"],
        &["host", "ls"],
        &["operator", "ls", "-o", "json"],
        &["stack", "ls"],
        &["stack", "show", "big"],
        &["status"],
        &["rollout", "history", "big"],
        &["token", "create"],
    ] {
        read_then_close(&mut ctl(args), 0).assert_quiet(&format!("nococtl {args:?} | true"));
    }
}

#[test]
fn noco_server_init_exits_quietly_when_its_output_pipe_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut init = Command::new(bin("noco-server"));
    init.args(["init", "--data-dir", path_str(&data), "--san", "127.0.0.1"]);
    read_then_close(&mut init, 0).assert_quiet("noco-server init | true");
    assert!(
        data.join("admin.nococtl.toml").is_file(),
        "init did its work before printing"
    );
}
