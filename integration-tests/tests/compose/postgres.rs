//! A real PostgreSQL 15 (the image built locally from the host's Debian package, see
//! `noco_integration_tests::postgres`) under `noco-agent compose up`: it initializes its named
//! volume, gets healthy, stores rows, and `pg_dump -Fc` / `pg_restore` round-trip them through
//! `docker exec` (stdin included), as backup tests will.

use std::process::Command;

use noco_integration_tests::bin;
use noco_integration_tests::postgres::{
    PGDATA, POSTGRES_SERVICE, pg_dump, pg_restore, pg_restore_list, postgres_compose_yaml, psql,
    require_postgres_image, wait_healthy,
};
use noco_integration_tests::stack::{Stack, inspect};

#[test]
fn postgres_runs_under_compose_and_its_dump_restores() {
    let Some(image) = require_postgres_image() else {
        return;
    };
    let stack = Stack::new("pg", &postgres_compose_yaml(&image));
    stack.up();
    let c = stack.container(POSTGRES_SERVICE, 1);
    wait_healthy(&c);

    // The data lives in the stack's named volume, initialized by the entrypoint.
    let mounts = inspect(&c).mounts.unwrap_or_default();
    let volume = format!("{}_pgdata", stack.project);
    assert!(
        mounts
            .iter()
            .any(|m| m.name.as_deref() == Some(volume.as_str())
                && m.destination.as_deref() == Some(PGDATA)),
        "{volume} is mounted at {PGDATA}: {mounts:?}"
    );
    let sql = |db: &str, sql: &str| {
        psql(&c, db, sql).unwrap_or_else(|e| panic!("psql -d {db} -c {sql:?}: {e:#}"))
    };
    assert_eq!(sql("postgres", "SHOW data_directory"), PGDATA);
    assert_eq!(sql("postgres", "SHOW server_version_num")[..2], *"15");
    assert_eq!(
        sql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"
        ),
        "app",
        "POSTGRES_DB=app is owned by POSTGRES_USER=app"
    );

    sql(
        "app",
        "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)",
    );
    sql(
        "app",
        "INSERT INTO notes VALUES (1, 'one'), (2, 'two'), (3, 'trois ✓')",
    );
    let rows = sql("app", "SELECT id, body FROM notes ORDER BY id");
    assert_eq!(rows, "1|one\n2|two\n3|trois ✓");
    assert!(
        psql(&c, "app", "SELECT * FROM no_such_table").is_err(),
        "a failing statement is an error"
    );

    // pg_dump -Fc > file, then pg_restore reads it back from stdin.
    let dump = pg_dump(&c, "app").unwrap_or_else(|e| panic!("pg_dump: {e:#}"));
    assert!(
        dump.starts_with(b"PGDMP"),
        "a custom-format archive: {:?}",
        String::from_utf8_lossy(&dump[..dump.len().min(64)])
    );
    let file = stack.path().join("app.dump");
    std::fs::write(&file, &dump).unwrap();
    let dump = std::fs::read(&file).unwrap();
    let list = pg_restore_list(&c, &dump).unwrap_or_else(|e| panic!("pg_restore --list: {e:#}"));
    assert!(
        list.contains("TABLE public notes") && list.contains("TABLE DATA public notes"),
        "{list}"
    );
    sql("postgres", "CREATE DATABASE restored");
    pg_restore(&c, "restored", &dump).unwrap_or_else(|e| panic!("pg_restore: {e:#}"));
    assert_eq!(
        sql("restored", "SELECT id, body FROM notes ORDER BY id"),
        rows
    );

    let down = Command::new(bin("noco-agent"))
        .args(["compose", "down", "-p", &stack.project, "--volumes"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&down.stdout);
    assert!(
        down.status.success(),
        "down failed: {stdout}{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        stdout.contains(&format!("volume {volume}: removed")),
        "{stdout}"
    );
    assert!(stack.ps().is_empty(), "down removed the container");
}
