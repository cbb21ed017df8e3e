//! The five seed stacks (integration-tests/fixtures/seeds): each loads, given what it needs, or
//! is refused naming exactly the services noco cannot run (those that only `build:`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{seed, show, vars};
use noco_compose::model::{DependencyCondition, RestartPolicy, UpdateOrder};
use noco_compose::{Diagnostic, FileSource, LoadOptions, Loaded, NoFiles, load};

fn load_text(
    yaml: &str,
    variables: &[(&str, &str)],
    files: &dyn FileSource,
) -> Result<Loaded, Vec<Diagnostic>> {
    let variables = vars(variables);
    load(
        yaml,
        &LoadOptions {
            project_name: Some("seed"),
            variables: &variables,
            files,
            profiles: &[],
            directory: None,
        },
    )
}

fn load_seed(
    file: &str,
    variables: &[(&str, &str)],
    files: &dyn FileSource,
) -> Result<Loaded, Vec<Diagnostic>> {
    load_text(&seed(file), variables, files)
}

/// The services that the errors name, from paths like `services.<name>.build`.
fn services_named(errors: &[Diagnostic]) -> BTreeSet<String> {
    errors
        .iter()
        .map(|d| match d.path.strip_prefix("services.") {
            Some(rest) => rest.split('.').next().unwrap_or_default().to_owned(),
            None => panic!("error outside a service: {d}"),
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Give every `build:` an `image:` too, as an operator would after pushing the images.
fn with_images(yaml: &str) -> String {
    yaml.lines()
        .map(|line| {
            if line == "    build:" || line.starts_with("    build: ") {
                format!("    image: registry.example/built:1\n{line}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The seed is refused for its build-only services and nothing else: every error is a
/// `build` error of one of `want`, and with images added the same file loads.
fn assert_refused_for_build_only(file: &str, want: &[&str]) {
    let Err(errors) = load_seed(file, &[], &NoFiles) else {
        panic!("{file} should be refused")
    };
    assert_eq!(
        services_named(&errors),
        set(want),
        "{file}:\n{}",
        show(&errors)
    );
    for e in &errors {
        assert!(e.path.ends_with(".build"), "{file}: unexpected error {e}");
        assert!(
            e.message.contains("\"build\"") && e.message.contains("never builds"),
            "{e}"
        );
        assert!(e.line.is_some(), "{e}");
    }
    assert_eq!(
        errors.len(),
        want.len(),
        "{file}: one error per build-only service:\n{}",
        show(&errors)
    );
    match load_text(&with_images(&seed(file)), &[], &NoFiles) {
        Ok(loaded) => {
            let build_warnings = loaded
                .warnings
                .iter()
                .filter(|w| w.path.ends_with(".build"))
                .count();
            assert_eq!(build_warnings, want.len(), "{}", show(&loaded.warnings));
        }
        Err(errors) => panic!("{file} with images should load:\n{}", show(&errors)),
    }
}

#[test]
fn seed_000_nocoflo_is_refused_for_its_build_only_service() {
    assert_refused_for_build_only("000-nocoflo.yaml", &["nocoflo"]);
}

#[test]
fn seed_001_ai_scrum_master_is_refused_for_its_build_only_services() {
    assert_refused_for_build_only(
        "001-ai-scrum-master.yaml",
        &["backend", "frontend", "nginx"],
    );
}

#[test]
fn seed_003_shadower_is_refused_for_its_build_only_services() {
    assert_refused_for_build_only(
        "003-shadower-analytics.yaml",
        &["backend", "frontend", "celery-worker", "celery-beat"],
    );
}

#[test]
fn seed_002_cozywish_needs_db_password() {
    let Err(errors) = load_seed("002-cozywish.yaml", &[], &NoFiles) else {
        panic!("should need DB_PASSWORD")
    };
    assert_eq!(
        services_named(&errors),
        set(&["web", "db"]),
        "{}",
        show(&errors)
    );
    for e in &errors {
        assert!(e.message.contains("DB_PASSWORD must be set"), "{e}");
        assert!(e.message.contains("required variable DB_PASSWORD"), "{e}");
    }
}

#[test]
fn seed_002_cozywish_loads_into_the_expected_model() {
    let loaded = match load_seed("002-cozywish.yaml", &[("DB_PASSWORD", "s3cret")], &NoFiles) {
        Ok(l) => l,
        Err(errors) => panic!("{}", show(&errors)),
    };
    let p = &loaded.project;
    assert_eq!(p.name, "seed");
    assert_eq!(
        p.services.keys().map(String::as_str).collect::<Vec<_>>(),
        ["db", "nginx", "redis", "web"]
    );
    let web = &p.services["web"];
    assert_eq!(web.image, "cozywish/web:latest");
    assert_eq!(web.deploy.replicas, 2);
    assert_eq!(web.deploy.update_order, UpdateOrder::StartFirst);
    assert_eq!(web.deploy.update_parallelism, 1);
    assert_eq!(web.restart, RestartPolicy::UnlessStopped);
    assert_eq!(
        web.command.as_deref(),
        Some(
            &[
                "gunicorn",
                "--workers",
                "3",
                "--bind",
                "0.0.0.0:8000",
                "project_root.wsgi:application"
            ]
            .map(String::from)[..]
        )
    );
    assert_eq!(
        web.environment["DATABASE_URL"],
        "postgres://cozywish_user:s3cret@db:5432/cozywish"
    );
    assert_eq!(web.environment["DEBUG"], "false");
    let hc = web
        .healthcheck
        .as_ref()
        .map(|h| (h.test.clone(), h.interval, h.timeout, h.retries));
    assert_eq!(
        hc,
        Some((
            ["CMD", "curl", "-fsS", "http://localhost:8000/health"]
                .map(String::from)
                .to_vec(),
            Some(Duration::from_secs(15)),
            Some(Duration::from_secs(5)),
            Some(3)
        ))
    );
    let conditions: Vec<(&str, DependencyCondition)> = web
        .depends_on
        .iter()
        .map(|(k, d)| (k.as_str(), d.condition))
        .collect();
    assert_eq!(
        conditions,
        [
            ("db", DependencyCondition::ServiceHealthy),
            ("redis", DependencyCondition::ServiceStarted)
        ]
    );
    assert_eq!(p.services["db"].environment["POSTGRES_PASSWORD"], "s3cret");
    // Volumes get compose names; every service sits on the implicit default network.
    assert_eq!(
        p.volumes
            .values()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["seed_media", "seed_pgdata", "seed_static"]
    );
    assert_eq!(p.networks.keys().collect::<Vec<_>>(), ["default"]);
    assert_eq!(p.networks["default"].name, "seed_default");
    assert!(
        p.services
            .values()
            .all(|s| s.networks.contains_key("default"))
    );
    let nginx = &p.services["nginx"];
    assert!(nginx.volumes.iter().all(|m| m.read_only));
    assert_eq!(
        nginx
            .ports
            .iter()
            .map(|p| (p.published, p.target))
            .collect::<Vec<_>>(),
        [(Some(80), 80), (Some(443), 443)]
    );
    // The swarm-only failure_action is accepted but said to be ignored.
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.path == "services.web.deploy.update_config.failure_action"),
        "{}",
        show(&loaded.warnings)
    );
}

#[test]
fn seed_004_dot2archimate_needs_its_env_file() {
    let Err(errors) = load_seed("004-dot2archimate.yaml", &[], &NoFiles) else {
        panic!("should need .env.prod")
    };
    assert_eq!(errors.len(), 1, "{}", show(&errors));
    assert_eq!(errors[0].path, "services.dot2archimate.env_file[0]");
    assert!(errors[0].message.contains(".env.prod"), "{}", errors[0]);
}

#[test]
fn seed_004_dot2archimate_loads_with_its_env_file() {
    let files = BTreeMap::from([(
        ".env.prod".to_owned(),
        "# production\nFLASK_ENV=production\nSECRET_KEY='x y'\n".to_owned(),
    )]);
    let loaded = match load_seed("004-dot2archimate.yaml", &[], &files) {
        Ok(l) => l,
        Err(errors) => panic!("{}", show(&errors)),
    };
    assert!(loaded.warnings.is_empty(), "{}", show(&loaded.warnings));
    let s = &loaded.project.services["dot2archimate"];
    assert_eq!(s.deploy.resources.cpus, Some(4.0));
    assert_eq!(s.deploy.resources.memory, Some(4 * 1024 * 1024 * 1024));
    assert_eq!(s.security_opt, ["no-new-privileges:true"]);
    assert_eq!(
        s.environment.get("FLASK_ENV").map(String::as_str),
        Some("production")
    );
    assert_eq!(
        s.environment.get("SECRET_KEY").map(String::as_str),
        Some("x y")
    );
    assert_eq!(
        s.healthcheck.as_ref().and_then(|h| h.start_period),
        Some(Duration::from_secs(40))
    );
    assert_eq!(s.restart, RestartPolicy::UnlessStopped);
}
