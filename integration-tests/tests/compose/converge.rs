//! Converging: an unchanged re-apply changes nothing, a change recreates only what changed,
//! services gone from the file are removed, replicas scale, volumes outlive `down`.

use noco_integration_tests::docker::{host_port, http, http_get, require_docker};
use noco_integration_tests::eventually;
use noco_integration_tests::stack::Stack;

fn three(b_version: &str) -> String {
    format!(
        r#"
services:
  a:
    image: ${{IMAGE}}
    environment: {{ VERSION: a1 }}
  b:
    image: ${{IMAGE}}
    environment: {{ VERSION: {b_version} }}
    depends_on: [a]
  c:
    image: ${{IMAGE}}
    environment: {{ VERSION: c1 }}
"#
    )
}

#[test]
fn an_unchanged_reapply_changes_nothing_and_a_change_recreates_only_that_service() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("conv", &three("b1"));
    let first = stack.up();
    assert!(first.contains("created"), "{first}");
    let before = stack.ids();
    assert_eq!(before.len(), 3, "{before:?}");

    let again = stack.up();
    assert!(
        again.contains("up to date"),
        "an unchanged re-apply reports no change: {again}"
    );
    assert_eq!(stack.ids(), before, "same containers");
    let plan = stack.ok("plan", &[]);
    assert!(plan.contains("up to date"), "{plan}");

    stack.write_compose(&three("b2"));
    let plan = stack.ok("plan", &[]);
    assert!(
        plan.contains("recreate") && plan.contains("configuration changed"),
        "{plan}"
    );
    let out = stack.up();
    assert!(
        out.contains(&format!("{}: recreated", stack.container("b", 1))),
        "{out}"
    );
    let after = stack.ids();
    assert_eq!(
        after[&stack.container("a", 1)],
        before[&stack.container("a", 1)]
    );
    assert_eq!(
        after[&stack.container("c", 1)],
        before[&stack.container("c", 1)]
    );
    assert_ne!(
        after[&stack.container("b", 1)],
        before[&stack.container("b", 1)]
    );
}

#[test]
fn services_removed_from_the_file_are_removed_and_replicas_scale() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("orph", &three("b1"));
    stack.up();
    stack.write_compose(
        r#"
services:
  a:
    image: ${IMAGE}
    environment: { VERSION: a1 }
    deploy:
      replicas: 3
"#,
    );
    let out = stack.up();
    assert!(out.contains("no longer in the stack"), "{out}");
    let names: Vec<String> = stack.ids().into_keys().collect();
    assert_eq!(
        names,
        [
            stack.container("a", 1),
            stack.container("a", 2),
            stack.container("a", 3)
        ]
    );

    stack.write_compose("services:\n  a:\n    image: ${IMAGE}\n    environment: { VERSION: a1 }\n    deploy: { replicas: 1 }\n");
    let out = stack.up();
    assert!(out.contains("scaled to 1"), "{out}");
    assert_eq!(
        stack.ids().into_keys().collect::<Vec<_>>(),
        [stack.container("a", 1)]
    );
}

#[test]
fn named_volumes_outlive_down_unless_removed_with_volumes() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new(
        "vol",
        "services:\n  app:\n    image: ${IMAGE}\n    ports: [\"8080\"]\n    volumes: [data:/data]\nvolumes:\n  data: {}\n",
    );
    stack.up();
    let port = |s: &Stack| {
        host_port(&s.container("app", 1), "8080/tcp")
            .unwrap()
            .expect("published port")
    };
    let p = port(&stack);
    eventually("the app to answer", || http_get(p, "/health"));
    let (status, _) = http(p, "PUT", "/file/keep.txt", b"kept").unwrap();
    assert_eq!(status, 200);

    let down = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args(["compose", "down", "-p", &stack.project])
        .output()
        .unwrap();
    assert!(down.status.success());
    assert!(stack.ps().is_empty(), "down removed the containers");
    stack.up();
    let p = port(&stack);
    let kept = eventually("the file in the volume", || http_get(p, "/file/keep.txt"));
    assert_eq!(kept, "kept");

    let down = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args(["compose", "down", "-p", &stack.project, "--volumes"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&down.stdout)
            .contains(&format!("volume {}_data: removed", stack.project))
    );
    stack.up();
    let p = port(&stack);
    eventually("the app to answer", || http_get(p, "/health"));
    assert!(
        http_get(p, "/file/keep.txt").is_none(),
        "--volumes deleted the data"
    );
}
