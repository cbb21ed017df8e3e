//! The five reference stacks (integration-tests/fixtures/seeds): each validates, or fails naming
//! exactly what noco cannot run; and a stack shaped like seed 001 runs for real with the test
//! image substituted through interpolation.

use std::path::PathBuf;
use std::process::{Command, Output};

use noco_integration_tests::bin;
use noco_integration_tests::docker::require_docker;
use noco_integration_tests::stack::Stack;

fn seed(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seeds")).join(name)
}

fn validate(file: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(bin("noco-agent"))
        .args(["compose", "validate"])
        .arg(file)
        .args(["-p", "seed"])
        .args(extra)
        .output()
        .unwrap()
}

/// The services an invalid seed is refused for because of `build:`.
fn build_services(out: &Output) -> Vec<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let mut names: Vec<String> = err
        .lines()
        .filter(|l| l.contains("build"))
        .filter_map(|l| l.split("services.").nth(1))
        .map(|rest| {
            rest.split(['.', ' ', ':'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn each_seed_stack_validates_or_names_exactly_what_it_cannot_run() {
    for (file, builds) in [
        ("000-nocoflo.yaml", vec!["nocoflo"]),
        (
            "001-ai-scrum-master.yaml",
            vec!["backend", "frontend", "nginx"],
        ),
        (
            "003-shadower-analytics.yaml",
            vec!["backend", "celery-beat", "celery-worker", "frontend"],
        ),
    ] {
        let out = validate(&seed(file), &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            build_services(&out),
            builds,
            "{file}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Seed 002 needs its secret, and says so by name.
    let out = validate(&seed("002-cozywish.yaml"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DB_PASSWORD must be set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = validate(&seed("002-cozywish.yaml"), &["--var", "DB_PASSWORD=s3cret"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Seed 004 reads its env_file from the stack directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        seed("004-dot2archimate.yaml"),
        dir.path().join("compose.yaml"),
    )
    .unwrap();
    let missing = validate(&dir.path().join("compose.yaml"), &[]);
    assert_eq!(
        missing.status.code(),
        Some(1),
        "a missing env_file is refused"
    );
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains(".env.prod"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    std::fs::write(dir.path().join(".env.prod"), "FLASK_ENV=production\n").unwrap();
    let out = validate(&dir.path().join("compose.yaml"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Seed 001's shape — db → backend → frontend → nginx, healthchecks, service_healthy — with
/// images chosen by interpolation and no fixed host ports.
const SCRUM_SHAPED: &str = r#"
services:
  db:
    image: ${DB_IMAGE:-postgres:15.4-alpine}
    environment:
      POSTGRES_DB: ai_scrum_master
      POSTGRES_USER: ${DB_USER:-ai_scrum_user}
    volumes:
      - postgres_data:/var/lib/postgresql/data
    networks: [ai_scrum_network]
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      timeout: 5s
      retries: 10
    restart: unless-stopped
  redis:
    image: ${REDIS_IMAGE:-redis:7.2-alpine}
    networks: [ai_scrum_network]
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      retries: 10
    restart: unless-stopped
  backend:
    image: ${BACKEND_IMAGE}
    environment:
      - DATABASE_URL=postgresql+asyncpg://${DB_USER:-ai_scrum_user}@db:5432/ai_scrum_master
      - REDIS_URL=redis://redis:6379/0
    ports: ["8080"]
    networks: [ai_scrum_network]
    depends_on:
      db: { condition: service_healthy }
      redis: { condition: service_healthy }
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      retries: 10
    restart: unless-stopped
  frontend:
    image: ${FRONTEND_IMAGE}
    networks: [ai_scrum_network]
    depends_on: [backend]
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      retries: 10
    restart: unless-stopped
  nginx:
    image: ${NGINX_IMAGE}
    ports: ["8080"]
    networks: [ai_scrum_network]
    depends_on: [frontend, backend]
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 500ms
      retries: 10
    restart: unless-stopped
volumes:
  postgres_data:
    driver: local
networks:
  ai_scrum_network:
    driver: bridge
"#;

#[test]
fn a_stack_shaped_like_seed_001_runs_with_the_test_image_and_compose_sees_it() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("scrum", SCRUM_SHAPED);
    let image = noco_integration_tests::docker::testapp_image();
    let vars: Vec<String> = [
        "DB_IMAGE",
        "REDIS_IMAGE",
        "BACKEND_IMAGE",
        "FRONTEND_IMAGE",
        "NGINX_IMAGE",
    ]
    .iter()
    .map(|v| format!("{v}={image}"))
    .collect();
    let mut extra: Vec<&str> = vec!["--wait-timeout", "60s"];
    for v in &vars {
        extra.extend(["--var", v.as_str()]);
    }
    stack.ok("up", &extra);
    let ps = stack.ps();
    assert_eq!(ps.len(), 5, "{ps:?}");
    for c in &ps {
        assert_eq!(c["health"], "healthy", "{c}");
    }
    // The host's own compose tool sees the stack through the labels.
    let compose = Command::new("docker-compose")
        .args(["-p", &stack.project, "ps"])
        .current_dir(stack.path())
        .output();
    if let Ok(out) = compose {
        let text = String::from_utf8_lossy(&out.stdout);
        for s in ["db", "redis", "backend", "frontend", "nginx"] {
            assert!(
                text.contains(&stack.container(s, 1)),
                "docker-compose ps lacks {s}:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
