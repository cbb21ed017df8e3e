//! The planner, as a specification: given a stack and what Docker has, what happens and why.

use std::collections::BTreeMap;

use noco_compose::plan::{
    Observed, ObservedContainer, RunState, Step, Strategy, dependency_order, plan,
};
use noco_compose::{LoadOptions, NoFiles, config_hash, load, model::Project};

fn project(yaml: &str) -> Project {
    let vars = BTreeMap::new();
    load(
        yaml,
        &LoadOptions {
            project_name: Some("p"),
            variables: &vars,
            files: &NoFiles,
            profiles: &[],
            directory: None,
        },
    )
    .unwrap_or_else(|d| panic!("{d:?}"))
    .project
}

/// The ID the local image `reference` has in these tests.
fn image_id(reference: &str) -> String {
    format!("sha256:{reference}")
}

/// A running container of `service` with the hash the project wants, made from the image its
/// reference names.
fn running(p: &Project, service: &str, number: u32) -> ObservedContainer {
    ObservedContainer {
        id: format!("id-{service}-{number}"),
        name: format!("p-{service}-{number}"),
        service: service.into(),
        number,
        config_hash: Some(config_hash(&p.services[service])),
        image: Some(image_id(&p.services[service].image)),
        state: RunState::Running,
        health: None,
    }
}

fn converged(p: &Project) -> Observed {
    let mut o = Observed::default();
    for (name, svc) in &p.services {
        for n in 1..=svc.deploy.replicas {
            o.containers.push(running(p, name, n));
        }
    }
    o.networks = p.networks.values().map(|n| n.name.clone()).collect();
    o.volumes = p.volumes.values().map(|v| v.name.clone()).collect();
    o.images = p
        .services
        .values()
        .map(|s| (s.image.clone(), image_id(&s.image)))
        .collect();
    o
}

/// The plan as one line per change: `service: verb name (reason)`.
fn changes(p: &Project, o: &Observed) -> Vec<String> {
    let plan = plan(p, o, config_hash);
    let mut out: Vec<String> = plan
        .create_networks
        .iter()
        .map(|n| format!("network {n}: create"))
        .collect();
    out.extend(
        plan.create_volumes
            .iter()
            .map(|v| format!("volume {v}: create")),
    );
    for s in &plan.services {
        for step in &s.steps {
            let line = match step {
                Step::Keep { .. } => continue,
                Step::Start { name, reason, .. } => format!("start {name} ({reason})"),
                Step::Restart { name, reason, .. } => format!("restart {name} ({reason})"),
                Step::Create { number, reason } => format!("create #{number} ({reason})"),
                Step::Recreate { name, reason, .. } => format!(
                    "recreate {name} ({})",
                    reason.split(" (").next().unwrap_or(reason)
                ),
                Step::Remove { name, reason, .. } => format!("remove {name} ({reason})"),
            };
            out.push(format!("{}: {line}", s.service));
        }
    }
    for o in &plan.orphans {
        if let Step::Remove { name, reason, .. } = o {
            out.push(format!("orphan: remove {name} ({reason})"));
        }
    }
    out
}

const TWO: &str = "services:\n  db:\n    image: pg\n  web:\n    image: app\n    depends_on: [db]\nvolumes:\n  data: {}\n";

#[test]
fn a_new_stack_creates_everything() {
    let p = project(TWO);
    assert_eq!(
        changes(&p, &Observed::default()),
        [
            "network default: create",
            "volume data: create",
            "db: create #1 (new service)",
            "web: create #1 (new service)"
        ]
    );
}

#[test]
fn a_converged_stack_is_a_no_op() {
    let p = project(TWO);
    let plan = plan(&p, &converged(&p), config_hash);
    assert!(plan.is_noop(), "{plan}");
    assert!(plan.to_string().contains("up to date"));
}

#[test]
fn a_changed_service_is_recreated_and_only_it() {
    let p = project(TWO);
    let mut o = converged(&p);
    o.containers[1].config_hash = Some("sha256:0000".into());
    assert_eq!(
        changes(&p, &o),
        ["web: recreate p-web-1 (configuration changed)"]
    );
    o.containers[1].config_hash = None;
    assert_eq!(
        changes(&p, &o),
        ["web: recreate p-web-1 (the container was not made by noco)"]
    );
}

#[test]
fn a_container_whose_image_reference_now_names_another_image_is_recreated() {
    // As compose compares com.docker.compose.image: `app` was pulled or retagged since.
    let p = project(TWO);
    let mut o = converged(&p);
    o.images
        .insert("app".into(), "sha256:0123456789abcdef".into());
    assert_eq!(
        plan(&p, &o, config_hash).services[1].steps,
        [Step::Recreate {
            id: "id-web-1".into(),
            name: "p-web-1".into(),
            number: 1,
            reason: "image app changed (app → 0123456789ab)".into(),
        }]
    );
    // Nothing to compare with: the local image is gone, or the container's image unknown.
    o.images.remove("app");
    assert!(plan(&p, &o, config_hash).is_noop());
    let mut o = converged(&p);
    o.containers[1].image = None;
    assert!(plan(&p, &o, config_hash).is_noop());
}

#[test]
fn replicas_are_filled_and_trimmed() {
    let p = project("services:\n  web:\n    image: app\n    deploy: { replicas: 3 }\n");
    let mut o = converged(&p);
    o.containers.retain(|c| c.number != 2);
    assert_eq!(changes(&p, &o), ["web: create #2 (replica 2 is missing)"]);
    let p1 = project("services:\n  web:\n    image: app\n    deploy: { replicas: 1 }\n");
    let o = converged(&p);
    assert_eq!(
        changes(&p1, &o),
        [
            "web: remove p-web-2 (scaled to 1 replicas)",
            "web: remove p-web-3 (scaled to 1 replicas)"
        ]
    );
}

#[test]
fn containers_of_services_gone_from_the_file_are_orphans() {
    let p = project(TWO);
    let mut o = converged(&p);
    let mut old = running(&p, "db", 1);
    old.service = "cache".into();
    old.name = "p-cache-1".into();
    o.containers.push(old);
    assert_eq!(
        changes(&p, &o),
        ["orphan: remove p-cache-1 (service \"cache\" is no longer in the stack)"]
    );
}

/// Why a stopped service container is started again, as the plan says it.
const MUST_RUN: &str =
    "only a one-shot (awaited with service_completed_successfully) may stay stopped";

#[test]
fn a_stopped_service_container_is_started_again_with_or_without_a_healthcheck() {
    // `docker stop` exits 0 (SIGTERM handled); neither restart policy nor healthcheck makes a
    // service a finished job.
    let p = project(
        "services:\n  api:\n    image: app\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n  worker:\n    image: app\n  web:\n    image: app\n    restart: on-failure\n",
    );
    let mut o = converged(&p);
    for c in &mut o.containers {
        c.state = RunState::Exited(0);
    }
    assert_eq!(
        changes(&p, &o),
        [
            format!("api: start p-api-1 (the container is exited (0); {MUST_RUN})"),
            format!("web: start p-web-1 (the container is exited (0); {MUST_RUN})"),
            format!("worker: start p-worker-1 (the container is exited (0); {MUST_RUN})"),
        ]
    );
    let printed = plan(&p, &o, config_hash).to_string();
    assert!(
        printed.contains(&format!(
            "  start     p-api-1: the container is exited (0); {MUST_RUN}"
        )),
        "{printed}"
    );
    assert!(!printed.contains("up to date"), "{printed}");
    o.containers[0].state = RunState::Exited(137);
    o.containers[1].state = RunState::Created;
    assert_eq!(
        changes(&p, &o)[..2],
        [
            format!("api: start p-api-1 (the container is exited (137); {MUST_RUN})"),
            format!("web: start p-web-1 (the container is created; {MUST_RUN})"),
        ]
    );
    o.containers[0].state = RunState::Dead;
    assert_eq!(
        changes(&p, &o)[0],
        "api: recreate p-api-1 (the container is dead)"
    );
}

#[test]
fn a_completed_one_shot_is_left_alone_and_a_failed_one_runs_again() {
    let p = project(
        "services:\n  migrate:\n    image: app\n  app:\n    image: app\n    depends_on:\n      migrate: { condition: service_completed_successfully }\n",
    );
    let mut o = converged(&p);
    let migrate = o
        .containers
        .iter()
        .position(|c| c.service == "migrate")
        .unwrap();
    o.containers[migrate].state = RunState::Exited(0);
    let done = plan(&p, &o, config_hash);
    assert!(done.is_noop(), "{done}");
    assert!(done.to_string().contains("up to date"));
    o.containers[migrate].state = RunState::Exited(1);
    assert_eq!(
        changes(&p, &o),
        [
            "migrate: start p-migrate-1 (the one-shot container is exited (1): it runs until it completes successfully)"
        ]
    );
}

#[test]
fn a_replaced_dependency_restarts_dependents_that_ask_for_it() {
    let p = project(
        "services:\n  db:\n    image: pg\n  web:\n    image: app\n    depends_on:\n      db: { condition: service_started, restart: true }\n  other:\n    image: app\n    depends_on: [db]\n",
    );
    let mut o = converged(&p);
    o.containers.retain(|c| c.service != "db");
    assert_eq!(
        changes(&p, &o),
        [
            "db: create #1 (new service)",
            "web: restart p-web-1 (dependency db is replaced (restart: true))"
        ]
    );
}

#[test]
fn start_first_falls_back_to_stop_first_where_a_fixed_port_or_name_forbids_it() {
    let p = project(
        "services:\n  a:\n    image: app\n    deploy: { update_config: { order: start-first } }\n  b:\n    image: app\n    ports: [\"8080:80\"]\n    deploy: { update_config: { order: start-first } }\n  c:\n    image: app\n    container_name: fixed\n    deploy: { update_config: { order: start-first } }\n",
    );
    let plan = plan(&p, &Observed::default(), config_hash);
    let by: BTreeMap<&str, _> = plan
        .services
        .iter()
        .map(|s| (s.service.as_str(), s))
        .collect();
    assert_eq!(by["a"].strategy, Strategy::StartFirst);
    assert_eq!(by["b"].strategy, Strategy::StopFirst);
    assert!(
        by["b"]
            .strategy_note
            .as_deref()
            .unwrap_or_default()
            .contains("fixed host port 8080")
    );
    assert_eq!(by["c"].strategy, Strategy::StopFirst);
    assert!(
        by["c"]
            .strategy_note
            .as_deref()
            .unwrap_or_default()
            .contains("container_name")
    );
}

#[test]
fn services_are_ordered_after_their_dependencies_links_and_network_namespaces() {
    let p = project(
        "services:\n  web:\n    image: a\n    depends_on: [api]\n  api:\n    image: a\n    links: [db]\n  db:\n    image: a\n  sidecar:\n    image: a\n    network_mode: service:web\n  cache:\n    image: a\n",
    );
    assert_eq!(
        dependency_order(&p),
        ["cache", "db", "api", "web", "sidecar"]
    );
}

#[test]
fn a_service_in_another_services_network_namespace_follows_its_replacement() {
    let p = project(
        "services:\n  main:\n    image: app\n  side:\n    image: app\n    network_mode: service:main\n",
    );
    let mut o = converged(&p);
    o.containers[0].config_hash = Some("sha256:old".into());
    assert_eq!(
        changes(&p, &o),
        [
            "main: recreate p-main-1 (configuration changed)",
            "side: recreate p-side-1 (it shares the network namespace of main, which is replaced)"
        ]
    );
}

#[test]
fn links_are_kept_in_the_model() {
    let p = project(
        "services:\n  main:\n    image: a\n  linked:\n    image: a\n    links: [\"main:mainalias\"]\n",
    );
    assert_eq!(p.services["linked"].links, ["main:mainalias"]);
}
