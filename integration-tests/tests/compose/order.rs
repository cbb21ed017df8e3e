//! Dependency order: a service starts only once its dependencies meet their conditions
//! (healthy, completed successfully, started), proven by the containers' own timestamps.

use std::time::SystemTime;

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::stack::{Stack, inspect};

const STACK: &str = r#"
services:
  db:
    image: ${IMAGE}
    environment: { HEALTHY_AFTER: "1500" }
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 300ms
      timeout: 2s
      retries: 20
  migrate:
    image: ${IMAGE}
    environment: { START_DELAY: "700", EXIT_AFTER: "300", EXIT_CODE: "0" }
    depends_on:
      db: { condition: service_healthy }
  api:
    image: ${IMAGE}
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 300ms
      retries: 20
    depends_on:
      db: { condition: service_healthy }
      migrate: { condition: service_completed_successfully }
  web:
    image: ${IMAGE}
    depends_on: [api]
  cache:
    image: ${IMAGE}
"#;

fn time(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("timestamp {s:?}: {e}"))
}

fn started(name: &str) -> SystemTime {
    time(inspect(name).state.unwrap().started_at.as_deref().unwrap())
}

/// The earliest moment db can have been healthy: its workload answers its healthcheck only
/// `HEALTHY_AFTER` (1.5 s) after it started. (Docker keeps only the last five healthcheck
/// results, so the health log cannot tell when the first one passed.)
fn earliest_healthy(name: &str) -> SystemTime {
    started(name) + std::time::Duration::from_millis(1500)
}

#[test]
fn services_start_in_dependency_order_and_wait_for_their_conditions() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("order", STACK);
    stack.up();
    let c = |s: &str| stack.container(s, 1);
    let db_healthy = earliest_healthy(&c("db"));
    let migrate = inspect(&c("migrate")).state.unwrap();
    assert_eq!(migrate.exit_code, Some(0));
    let migrate_done = time(migrate.finished_at.as_deref().unwrap());
    assert!(
        started(&c("migrate")) >= db_healthy,
        "migrate started before db was healthy"
    );
    assert!(
        started(&c("api")) >= db_healthy,
        "api started before db was healthy"
    );
    assert!(
        started(&c("api")) >= migrate_done,
        "api started before migrate completed"
    );
    assert!(
        started(&c("web")) >= started(&c("api")),
        "web started before api"
    );
    // An independent service does not wait for the chain.
    assert!(
        started(&c("cache")) < db_healthy,
        "cache waited for db without depending on it"
    );
    let ps = stack.ps();
    let api = ps.iter().find(|x| x["service"] == "api").unwrap();
    assert_eq!(
        api["health"], "healthy",
        "up returned only once api was healthy: {ps:?}"
    );
    // The completed one-shot is left alone by a re-apply.
    let again = stack.up();
    assert!(again.contains("up to date"), "{again}");
}
