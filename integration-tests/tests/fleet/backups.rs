//! Backups through a real server, real agents and real Docker: made on demand and on schedule,
//! uploaded (also after the server was away, and across a cut), restored and verified; each
//! failure recorded with its reason; retention; downloads that are the plain archive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use noco_integration_tests::docker::{host_port, http, http_get, require_docker};
use noco_integration_tests::proxy::Proxy;
use noco_integration_tests::{
    Fleet, Proc, ServerOptions, Value, eventually, eventually_within, path_str,
};

use crate::support::{Prefix, apply, reported};

/// A testapp service `app` with a volume `data` at /data, and these backups under x-noco.
fn stack_yaml(backups: &str, extra_volumes: &str) -> String {
    format!(
        "services:\n  app:\n    image: ${{IMAGE}}\n    ports: [\"8080\"]\n    volumes: [\"data:/data\"]\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\nvolumes:\n  data: {{}}\n{extra_volumes}x-noco:\n  backups:\n{backups}"
    )
}

const FILES: &str = "    files:\n      volumes: [data]\n      stop: [app]\n";
const DUMP: &str = "    db:\n      service: app\n      dump: [/noco-testapp, cat, /data/db.txt]\n      restore: [/noco-testapp, write, /data/db.txt]\n";

fn start_agent(fleet: &Fleet, name: &str, prefix: &Prefix, config: Option<&str>) -> Proc {
    let mut args = vec!["--project-prefix", prefix.0.as_str()];
    if let Some(c) = config {
        args.extend(["--config", c]);
    }
    fleet.run_agent_with(name, &args)
}

/// A fleet with one host `web-1` (role=web) running its agent.
fn one_host(tag: &str, agent_toml: Option<&str>) -> (Fleet, Prefix, Proc) {
    let fleet = Fleet::start(ServerOptions::default());
    let prefix = Prefix::new(tag, &["shop"]);
    fleet.enroll("web-1", "role=web");
    let config = agent_toml.map(|t| {
        let path = fleet.path("web-1.agent.toml");
        std::fs::write(&path, t).unwrap();
        path_str(&path).to_string()
    });
    let agent = start_agent(&fleet, "web-1", &prefix, config.as_deref());
    fleet.wait_status("web-1", "online");
    (fleet, prefix, agent)
}

/// Apply `yaml` as `shop` and wait for web-1 to run it converged.
fn deploy(fleet: &Fleet, yaml: &str) -> String {
    let revision = apply(fleet, "shop", "role=web", yaml)["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eventually(&format!("shop {revision} converged on web-1"), || {
        (reported(fleet, "web-1", "shop") == Some((revision.clone(), "converged".into())))
            .then_some(())
    });
    revision
}

fn port(prefix: &Prefix) -> u16 {
    let c = format!("{}-app-1", prefix.project("shop"));
    eventually(&format!("the published port of {c}"), || {
        host_port(&c, "8080/tcp").ok().flatten()
    })
}

fn put_file(port: u16, name: &str, content: &str) {
    let (status, body) = http(port, "PUT", &format!("/file/{name}"), content.as_bytes()).unwrap();
    assert_eq!(status, 200, "PUT /file/{name}: {body}");
}

fn get_file(port: u16, name: &str) -> Option<String> {
    http_get(port, &format!("/file/{name}"))
}

/// `nococtl backup ls --stack shop -o json`.
fn backups(fleet: &Fleet) -> Vec<Value> {
    match fleet.ctl_json(&["backup", "ls", "--stack", "shop"]) {
        Value::Array(a) => a,
        other => panic!("backup ls printed {other}"),
    }
}

fn backup(fleet: &Fleet, id: &str) -> Value {
    backups(fleet)
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no backup {id} in {:?}", backups(fleet)))
}

/// `nococtl backup run <what> -w -o json`: the jobs, after they ended (exit status checked by
/// the caller through `ok`).
fn run_backup(fleet: &Fleet, what: &str, ok: bool) -> Vec<Value> {
    let out = fleet.ctl(&["backup", "run", what, "-w", "-o", "json"]);
    assert_eq!(
        out.status.success(),
        ok,
        "nococtl backup run {what} -w ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(a)) => a,
        other => panic!("backup run printed {other:?}"),
    }
}

/// `nococtl backup restore <id> --yes -w`, which must succeed.
fn restore(fleet: &Fleet, id: &str) {
    let out = fleet.ctl(&["backup", "restore", id, "--yes", "-w"]);
    assert!(
        out.status.success(),
        "restore: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn backup_id(job: &Value) -> String {
    job["backup_id"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_volume_backup_restores_the_data_as_it_was_and_the_services_come_back() {
    if !require_docker() {
        return;
    }
    let (fleet, prefix, _agent) = one_host("fbkv", None);
    deploy(&fleet, &stack_yaml(FILES, ""));
    let p = port(&prefix);
    put_file(p, "a.txt", "version one");
    let jobs = run_backup(&fleet, "shop/files", true);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = backup_id(&jobs[0]);
    let b = backup(&fleet, &id);
    assert_eq!(b["state"], "complete", "{b}");
    assert_eq!(b["host"], "web-1");
    assert!(b["size"].as_u64().unwrap_or(0) > 0, "{b}");
    assert_eq!(b["sha256"].as_str().map(str::len), Some(64), "{b}");
    // The app was stopped for the copy and is running again.
    let p = port(&prefix);
    assert_eq!(get_file(p, "a.txt").as_deref(), Some("version one"));

    put_file(p, "a.txt", "version two");
    put_file(p, "b.txt", "made after the backup");
    restore(&fleet, &id);
    let p = port(&prefix);
    eventually("the app serves the restored data", || {
        (get_file(p, "a.txt").as_deref() == Some("version one")).then_some(())
    });
    assert_eq!(
        get_file(p, "b.txt"),
        None,
        "a file made after the backup is gone"
    );
    // The volume's previous data was removed only after the restore; nothing left beside it.
    let mountpoint = volume_mountpoint(&format!("{}_data", prefix.project("shop")));
    let parent = mountpoint.parent().unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "_data")
        .collect();
    assert!(
        leftovers.is_empty(),
        "left beside the volume's data: {leftovers:?}"
    );
    let actions: Vec<String> = fleet
        .audit()
        .iter()
        .filter_map(|a| a["action"].as_str().map(str::to_string))
        .collect();
    assert!(
        actions.iter().any(|a| a.starts_with("backup.run")),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a.starts_with("backup.restore")),
        "{actions:?}"
    );
}

fn volume_mountpoint(volume: &str) -> PathBuf {
    let out = std::process::Command::new("docker")
        .args(["volume", "inspect", "--format", "{{.Mountpoint}}", volume])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker volume inspect {volume}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn a_dump_hook_backup_downloads_as_the_plain_dump_and_restores_through_its_hook() {
    if !require_docker() {
        return;
    }
    let (fleet, prefix, _agent) = one_host("fbkd", None);
    deploy(&fleet, &stack_yaml(DUMP, ""));
    let p = port(&prefix);
    let content = "rows: 1, 2, 3\n".repeat(1000);
    put_file(p, "db.txt", &content);
    let jobs = run_backup(&fleet, "shop/db", true);
    let id = backup_id(&jobs[0]);
    assert_eq!(backup(&fleet, &id)["kind"], "dump");

    let target = fleet.path("db.dump");
    let out = fleet.ctl(&["backup", "download", &id, "-o", path_str(&target)]);
    assert!(
        out.status.success(),
        "download: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        content,
        "the plain dump"
    );

    put_file(p, "db.txt", "dropped everything");
    restore(&fleet, &id);
    assert_eq!(get_file(p, "db.txt").as_deref(), Some(content.as_str()));

    let out = fleet.ctl(&["backup", "verify", &id, "-w"]);
    assert!(
        out.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the verify result is recorded", || {
        (backup(&fleet, &id)["verified"] == "ok").then_some(())
    });
}

#[test]
fn failures_are_recorded_with_their_reason_never_as_success() {
    if !require_docker() {
        return;
    }
    let (fleet, prefix, _agent) = one_host("fbkf", Some("[backup]\nspool_size = \"2MiB\"\n"));
    let backups_yaml = "    broken:\n      service: app\n      dump: [/noco-testapp, fail, \"3\", \"pg_dump: connection to server failed\"]\n    gone:\n      volumes: [spare]\n    big:\n      volumes: [data]\n";
    deploy(&fleet, &stack_yaml(backups_yaml, "  spare: {}\n"));
    // A volume that vanished after the stack was applied.
    let spare = format!("{}_spare", prefix.project("shop"));
    let out = std::process::Command::new("docker")
        .args(["volume", "rm", &spare])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker volume rm {spare}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 3 MiB that do not compress, straight into the volume.
    let mountpoint = volume_mountpoint(&format!("{}_data", prefix.project("shop")));
    write_noise(&mountpoint.join("noise.bin"), 3 << 20);

    for (name, want) in [
        ("broken", "exited 3: pg_dump: connection to server failed"),
        ("gone", "does not exist"),
        ("big", "spool is full"),
    ] {
        let jobs = run_backup(&fleet, &format!("shop/{name}"), false);
        let id = backup_id(&jobs[0]);
        assert!(
            jobs[0]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(want),
            "{name}: {jobs:?}"
        );
        let b = eventually(&format!("backup {id} recorded as failed"), || {
            let b = backup(&fleet, &id);
            (b["state"] == "failed").then_some(b)
        });
        assert!(
            b["reason"].as_str().unwrap_or_default().contains(want),
            "{name}: {b}"
        );
    }
    assert!(
        backups(&fleet).iter().all(|b| b["state"] != "complete"),
        "{:?}",
        backups(&fleet)
    );
    let _ = prefix;
}

#[test]
fn a_scheduled_backup_made_while_the_server_is_away_is_uploaded_when_it_is_back() {
    if !require_docker() {
        return;
    }
    let (mut fleet, prefix, mut agent) = one_host("fbks", None);
    let every_2s = "    files:\n      schedule: \"*/2 * * * * *\"\n      volumes: [data]\n      retention: {keep_last: 1000}\n";
    deploy(&fleet, &stack_yaml(every_2s, ""));
    put_file(port(&prefix), "a.txt", "scheduled");
    eventually("a scheduled backup complete", || {
        backups(&fleet)
            .iter()
            .any(|b| b["state"] == "complete" && b["trigger"] == "schedule")
            .then_some(())
    });
    fleet.stop_server();
    let stopped_at = chrono_now_ms();
    std::thread::sleep(Duration::from_secs(5));
    let before_restart = chrono_now_ms();
    fleet.start_server();
    fleet.wait_status("web-1", "online");
    eventually("a backup made while the server was away, uploaded", || {
        backups(&fleet)
            .iter()
            .any(|b| {
                let started = b["started_unix_ms"].as_i64().unwrap_or(0);
                b["state"] == "complete" && started > stopped_at && started < before_restart
            })
            .then_some(())
    });
    // The agent itself away: the schedule times it was down for are recorded as missed.
    agent.terminate();
    std::thread::sleep(Duration::from_secs(6));
    agent = start_agent(&fleet, "web-1", &prefix, None);
    let missed = eventually(
        "the runs the agent was down for, recorded as missed",
        || backups(&fleet).into_iter().find(|b| b["state"] == "missed"),
    );
    let reason = missed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("missed") && reason.contains("not running"),
        "{missed}"
    );
    drop(agent);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn an_upload_cut_midway_resumes_where_it_stopped() {
    if !require_docker() {
        return;
    }
    let mut fleet = Fleet::start(ServerOptions::default());
    let prefix = Prefix::new("fbku", &["shop"]);
    let data = fleet.enroll("web-1", "role=web");
    let proxy = Proxy::start(fleet.port);
    let cred_path = data.join("credential.toml");
    let cred = std::fs::read_to_string(&cred_path).unwrap();
    std::fs::write(
        &cred_path,
        cred.replace(
            &format!("127.0.0.1:{}", fleet.port),
            &format!("127.0.0.1:{}", proxy.port),
        ),
    )
    .unwrap();
    let agent = start_agent(&fleet, "web-1", &prefix, None);
    fleet.wait_status("web-1", "online");
    deploy(
        &fleet,
        &stack_yaml("    files:\n      volumes: [data]\n", ""),
    );
    let mountpoint = volume_mountpoint(&format!("{}_data", prefix.project("shop")));
    write_noise(&mountpoint.join("noise.bin"), 256 << 20);
    let out = fleet.ctl(&["backup", "run", "shop/files", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job_id = jobs[0]["id"].as_str().unwrap().to_string();
    let id = backup_id(&jobs[0]);
    // Cut once the upload is under way.
    eventually_within("the upload under way", Duration::from_secs(300), || {
        let j = fleet.ctl_json(&["backup", "job", &job_id]);
        (j["phase"] == "uploading" && j["percent"].as_i64().unwrap_or(0) >= 20).then_some(())
    });
    proxy.cut();
    eventually_within("the backup complete", Duration::from_secs(300), || {
        (backup(&fleet, &id)["state"] == "complete").then_some(())
    });
    let log = agent.log_text();
    let resumed = log
        .lines()
        .find(|l| l.contains(&id) && l.contains("resuming the upload at"))
        .unwrap_or_else(|| panic!("no resumed upload in the agent's log:\n{log}"));
    assert!(!resumed.contains("resuming the upload at 0 B"), "{resumed}");
    // The agent stops before its projects are cleaned up (it would make them again).
    drop(agent);
    drop(prefix);
    let _ = &mut fleet;
}

fn write_noise(path: &Path, bytes: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..bytes / buf.len() {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf).unwrap();
    }
}

/// PostgreSQL from Debian's package (an image built locally), with a dump backup through its
/// own tools and a volume backup of its data directory with the server stopped.
fn postgres_stack(image: &str) -> String {
    format!(
        "{}x-noco:\n  backups:\n    db:\n      service: db\n      dump: [pg_dump, -U, postgres, -Fc, app]\n      restore: [pg_restore, -U, postgres, -d, app, --clean, --if-exists, --exit-on-error]\n      verify: [pg_restore, --list]\n    data:\n      volumes: [pgdata]\n      stop: [db]\n",
        noco_integration_tests::postgres::postgres_compose_yaml(image)
    )
}

fn rows(container: &str) -> String {
    noco_integration_tests::postgres::psql(
        container,
        "app",
        "SELECT id, name FROM items ORDER BY id",
    )
    .unwrap_or_else(|e| format!("error: {e}"))
}

#[test]
fn postgresql_rows_come_back_from_a_dump_and_from_a_volume_backup() {
    if !require_docker() {
        return;
    }
    let Some(image) = noco_integration_tests::postgres::require_postgres_image() else {
        return;
    };
    let (fleet, prefix, _agent) = one_host("fbkpg", None);
    deploy(&fleet, &postgres_stack(&image));
    let db = format!("{}-db-1", prefix.project("shop"));
    let psql = |sql: &str| {
        noco_integration_tests::postgres::psql(&db, "app", sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    };
    psql("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)");
    psql("INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'trois ü')");
    let want = rows(&db);
    assert_eq!(want.lines().count(), 3, "{want}");

    // A dump: the table dropped, then restored by pg_restore from the archive on its stdin.
    let jobs = run_backup(&fleet, "shop/db", true);
    let dump_id = backup_id(&jobs[0]);
    let target = fleet.path("app.dump");
    let out = fleet.ctl(&["backup", "download", &dump_id, "-o", path_str(&target)]);
    assert!(
        out.status.success(),
        "download: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&target).unwrap().starts_with(b"PGDMP"),
        "a pg_dump custom archive"
    );
    psql("DROP TABLE items");
    assert!(rows(&db).starts_with("error"), "the table is gone");
    restore(&fleet, &dump_id);
    assert_eq!(rows(&db), want, "the rows are back from the dump");
    let out = fleet.ctl(&["backup", "verify", &dump_id, "-w"]);
    assert!(
        out.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The data directory, copied with the server stopped; then a change, and the restore.
    let jobs = run_backup(&fleet, "shop/data", true);
    let data_id = backup_id(&jobs[0]);
    noco_integration_tests::postgres::wait_healthy(&db);
    psql("INSERT INTO items VALUES (4, 'after the backup')");
    psql("DELETE FROM items WHERE id = 1");
    restore(&fleet, &data_id);
    noco_integration_tests::postgres::wait_healthy(&db);
    assert_eq!(rows(&db), want, "the data directory is back as it was");
}

#[test]
fn with_backup_first_a_host_whose_backup_fails_fails_its_step_and_keeps_its_revision() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let mut prefixes = Vec::new();
    let mut agents = Vec::new();
    for name in ["web-1", "web-2"] {
        fleet.enroll(name, "role=web");
        let prefix = Prefix::new(&format!("fbkr{}", &name[4..]), &["shop"]);
        agents.push(start_agent(&fleet, name, &prefix, None));
        prefixes.push(prefix);
    }
    fleet.wait_status("web-1", "online");
    fleet.wait_status("web-2", "online");
    let v1 = stack_yaml(DUMP, "");
    let revision = apply(&fleet, "shop", "role=web", &v1)["revision"]
        .as_str()
        .unwrap()
        .to_string();
    for h in ["web-1", "web-2"] {
        eventually(&format!("v1 on {h}"), || {
            (reported(&fleet, h, "shop") == Some((revision.clone(), "converged".into())))
                .then_some(())
        });
    }
    // Only web-1 has the file its dump hook copies: web-2's backup fails.
    put_file(port(&prefixes[0]), "db.txt", "web-1's data");
    let v2 = v1.replace(
        "ports: [\"8080\"]",
        "ports: [\"8080\"]\n    environment: {VERSION: \"2\"}",
    );
    let started = crate::support::start_rollout(
        &fleet,
        &v2,
        &[
            "--backup-first",
            "--canary",
            "1",
            "--batch",
            "1",
            "--max-failures",
            "1",
            "--min-healthy",
            "1s",
            "--deadline",
            "60s",
        ],
    );
    assert!(
        started["config"].to_string().contains("backup"),
        "{started}"
    );
    let r = eventually_within("the rollout to end", Duration::from_secs(180), || {
        let r = fleet.ctl_json(&["rollout", "status", "shop"]);
        (!matches!(
            r["phase"].as_str(),
            Some("running" | "paused" | "rolling_back")
        ))
        .then_some(r)
    });
    let host = |name: &str| -> Value {
        r["hosts"]
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["host"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} in {r}"))
    };
    let (ok, failed) = (host("web-1"), host("web-2"));
    assert_eq!(ok["phase"], "done", "{r}");
    let ok_backups: Vec<String> = ok["backup_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        ok_backups.len(),
        1,
        "web-1 made its backup before its step: {r}"
    );
    assert_eq!(backup(&fleet, &ok_backups[0])["state"], "complete");
    assert_eq!(failed["phase"], "failed", "{r}");
    assert!(
        failed["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("backup"),
        "the failed step says its backup failed: {r}"
    );
    let (on_web2, _) = reported(&fleet, "web-2", "shop").unwrap();
    assert_eq!(on_web2, revision, "web-2 stays on the revision it ran");
    // The stack says which host it holds back, and why.
    let listed = fleet.ctl_ok(&["stack", "ls"]);
    assert!(
        listed.contains("web-2") && listed.contains("backup before the update failed"),
        "{listed}"
    );
    let _ = agents;
}

/// A moto S3 server (`pip install 'moto[server]'`) on a free loopback port, killed at drop.
struct Moto(std::process::Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> Option<Moto> {
    let port = noco_integration_tests::free_port();
    let child = match std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let why = format!("moto_server cannot be started ({e}): pip install 'moto[server]'");
            assert!(!noco_integration_tests::docker_required(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        }
    };
    let moto = Moto(child, port);
    eventually("moto_server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    // The bucket.
    let (status, body) = http(port, "PUT", "/noco-fleet", b"").unwrap();
    assert_eq!(status, 200, "creating the bucket: {body}");
    Some(moto)
}

#[test]
fn backups_go_to_an_s3_store_and_restore_from_it() {
    if !require_docker() {
        return;
    }
    let Some(moto) = start_moto() else {
        return;
    };
    let opts = ServerOptions {
        extra: vec![
            "--backup-store".into(),
            format!(
                "s3://noco-fleet/backups?region=us-east-1&endpoint=http://127.0.0.1:{}&allow_http=true",
                moto.1
            ),
        ],
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ],
        ..ServerOptions::default()
    };
    let fleet = Fleet::start(opts);
    let prefix = Prefix::new("fbk3", &["shop"]);
    fleet.enroll("web-1", "role=web");
    let _agent = start_agent(&fleet, "web-1", &prefix, None);
    fleet.wait_status("web-1", "online");
    deploy(&fleet, &stack_yaml(FILES, ""));
    let p = port(&prefix);
    put_file(p, "a.txt", "kept in S3");
    let id = backup_id(&run_backup(&fleet, "shop/files", true)[0]);
    // The archive is in the bucket, under the stack, the backup and the host.
    let (status, listing) = http(
        moto.1,
        "GET",
        "/noco-fleet?list-type=2&prefix=backups/shop/files/",
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{listing}");
    assert!(listing.contains(&format!("{id}.archive")), "{listing}");
    assert!(
        listing.contains(&format!("{id}.manifest.json")),
        "{listing}"
    );
    // The app was stopped for the copy: it has a new published port.
    let p = port(&prefix);
    eventually("the app back after the copy", || get_file(p, "a.txt"));
    put_file(p, "a.txt", "changed");
    restore(&fleet, &id);
    let p = port(&prefix);
    eventually("the restored data", || {
        (get_file(p, "a.txt").as_deref() == Some("kept in S3")).then_some(())
    });
    let out = fleet.ctl(&["backup", "rm", &id, "--yes"]);
    assert!(
        out.status.success(),
        "rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, listing) = http(
        moto.1,
        "GET",
        "/noco-fleet?list-type=2&prefix=backups/shop/files/",
        b"",
    )
    .unwrap();
    assert!(!listing.contains(&id), "removed from the bucket: {listing}");
}
