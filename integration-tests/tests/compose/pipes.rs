//! `noco-agent compose …` into a pipe whose reader goes away (`… | head -1`, `… | true`): it
//! stops writing and exits 0, with no panic on stderr (issue 8: exit 101, "failed printing to
//! stdout: Broken pipe").

use std::process::Command;

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::pipe::read_then_close;
use noco_integration_tests::stack::Stack;
use noco_integration_tests::{bin, path_str};

/// A stack of `n` services on the test image (`${IMAGE}`).
fn many_services(n: usize) -> String {
    let mut yaml = String::from("services:\n");
    for i in 0..n {
        yaml.push_str(&format!("  svc{i:04}:\n    image: ${{IMAGE}}\n"));
    }
    yaml
}

#[test]
fn compose_validate_exits_quietly_when_its_output_pipe_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, many_services(200)).unwrap();
    let mut validate = Command::new(bin("noco-agent"));
    validate.args([
        "compose",
        "validate",
        path_str(&file),
        "-p",
        "pipes",
        "--var",
        "IMAGE=noco-testapp:latest",
    ]);
    read_then_close(&mut validate, 0).assert_quiet("noco-agent compose validate | true");
}

#[test]
fn compose_plan_of_a_large_stack_exits_quietly_when_its_reader_stops_after_one_line() {
    if !require_docker() {
        return;
    }
    // Two lines per service, about 150 KiB: far more than a pipe holds.
    let stack = Stack::new("pipes", &many_services(2000));
    let run = read_then_close(&mut stack.command("plan", &[]), 1);
    assert_eq!(run.read.len(), 1, "plan printed nothing: {}", run.stderr);
    run.assert_quiet("noco-agent compose plan | head -1");
}
