//! The applier against the real Docker engine, without a server: signed states go through
//! `Desired` (verify, persist) to the applier, which writes the stack's files, applies it,
//! corrects drift, refuses what the host policy forbids and removes stacks no longer wanted.
//! Skipped (with a note) when Docker is not there, unless `NOCO_REQUIRE_DOCKER=1`. The test
//! workload image is built here when missing (`noco_integration_tests::docker::testapp_image`),
//! so this test passes on a fresh machine, whatever order the suite runs in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use noco_agent::datadir::{DataDir, TrustKeyFile, TrustRootFile};
use noco_agent::desired::{self, Desired};
use noco_agent::engine::{docker, project};
use noco_agent::policy::Policy;
use noco_agent::report::Status;
use noco_agent::stacks::{self, ApplierConfig};
use noco_certs::signing::StateSigner;
use noco_compose::revision::RevisionSource;
use noco_proto::v1::{DesiredState, StackFile, StackState};
use tokio::sync::watch;

fn stack(name: &str, compose: &str, files: Vec<StackFile>) -> StackState {
    let source = RevisionSource {
        compose: compose.as_bytes().to_vec(),
        env: [("VERSION".to_string(), "v1".to_string())].into(),
        files: files
            .iter()
            .map(|f| noco_compose::revision::StackFile {
                path: f.path.clone(),
                content: f.content.clone(),
                mode: f.mode,
            })
            .collect(),
    };
    StackState {
        name: name.into(),
        revision: source.digest(),
        compose: source.compose,
        env: source.env.into_iter().collect(),
        files,
    }
}

fn state(generation: u64, stacks: Vec<StackState>) -> DesiredState {
    let now = noco_agent::report::now_ms();
    DesiredState {
        host_id: "h1".into(),
        generation,
        issued_unix_ms: now,
        expires_unix_ms: now + 600_000,
        stacks,
    }
}

async fn until(
    status: &mut watch::Receiver<Status>,
    what: &str,
    ok: impl Fn(&Status) -> bool,
) -> Status {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        {
            let s = status.borrow_and_update();
            if ok(&s) {
                return s.clone();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, status.changed()).await.is_err() {
            panic!("timed out waiting for {what}: {:#?}", status.borrow());
        }
    }
}

fn stack_state(s: &Status, name: &str) -> String {
    s.stacks
        .get(name)
        .map(|r| r.state().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn states_are_applied_kept_converged_policed_and_removed() {
    let required = std::env::var("NOCO_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let Ok(engine) = docker::connect().await else {
        assert!(!required, "Docker is required");
        eprintln!("skipped: no Docker engine");
        return;
    };
    // Built (or found) on a blocking thread: the builder runs its own runtime.
    let image = tokio::task::spawn_blocking(noco_integration_tests::docker::testapp_image)
        .await
        .expect("building the noco-testapp image");
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("noco_agent=info")
        .try_init();
    let prefix = format!("zt{}-", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path());
    let signer = StateSigner::generate();
    dir.save_trust_root(&TrustRootFile {
        keys: vec![TrustKeyFile {
            key_id: signer.key_id(),
            public_key_hex: hex::encode(signer.public_key()),
        }],
    })
    .unwrap();
    let config = ApplierConfig {
        data_dir: dir.clone(),
        project_prefix: prefix.clone(),
        policy: Policy::default(),
        registry_credentials: vec![],
        wait_timeout: Duration::from_secs(60),
        reconcile_interval: Duration::from_secs(30),
        locks: Default::default(),
        host_name: "h1".into(),
        links: Default::default(),
    };
    // What `noco-agent run` does at start: open the store, start the applier on what it holds.
    let start = || {
        let store = desired::open_store(&dir, "h1").unwrap();
        let (status, watch_status) = watch::channel(Status::default());
        let initial = store.current().cloned().map(Arc::new);
        let (apply_tx, apply_rx) = watch::channel(initial);
        let applier = stacks::spawn(config.clone(), status.clone(), apply_rx);
        (
            Desired::new(store, status, apply_tx, config.links.clone()),
            watch_status,
            applier,
        )
    };
    let (mut desired, mut watch_status, applier) = start();

    let web = stack(
        "web",
        &format!(
            "services:\n  web:\n    image: {image}\n    environment:\n      VERSION: ${{VERSION}}\n      DATA_DIR: /conf\n    volumes: [./conf:/conf:ro]\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 1s\n"
        ),
        vec![StackFile {
            path: "conf/greeting".into(),
            content: b"hello".to_vec(),
            mode: 0,
        }],
    );
    desired.receive(&noco_certs::state::sign(
        &signer,
        &state(1, vec![web.clone()]),
    ));
    let s = until(&mut watch_status, "web converged", |s| {
        s.generation == 1 && stack_state(s, "web") == "converged"
    })
    .await;
    let svc = &s.stacks["web"].services[0];
    assert_eq!(
        (
            svc.name.as_str(),
            svc.running,
            svc.desired,
            svc.health().to_string().as_str()
        ),
        ("web", 1, 1, "healthy")
    );
    let rev_dir = tmp.path().join("stacks/web").join(&web.revision[7..23]);
    assert_eq!(
        std::fs::read(rev_dir.join("conf/greeting")).unwrap(),
        b"hello"
    );

    // Drift: a container removed by hand comes back (Docker events, not the 30 s reconcile).
    let project_name = format!("{prefix}web");
    let before = project::ps(&engine, &project_name).await.unwrap();
    watch_status.borrow_and_update();
    engine
        .remove_container(
            &before[0].id,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
    // The correction is reported (the report is sent even though it reads as before); a first
    // attempt may race Docker's own removal, so wait for the outcome, not the first report.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::timeout_at(deadline, watch_status.changed())
            .await
            .expect("no report after the drift was corrected")
            .unwrap();
        let now = project::ps(&engine, &project_name).await.unwrap();
        if now.len() == 1 && now[0].id != before[0].id && now[0].state.is_running() {
            break;
        }
    }
    let now = project::ps(&engine, &project_name).await.unwrap();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0].id, before[0].id);
    assert!(now[0].state.is_running());

    // Restarted without a server, with a container gone meanwhile: the persisted state is
    // applied at once and the stack comes back.
    applier.abort();
    drop(desired);
    let gone = project::ps(&engine, &project_name).await.unwrap();
    engine
        .remove_container(
            &gone[0].id,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
    let (mut desired, mut watch_status, applier) = start();
    assert_eq!(desired.last_generation(), 1);
    let s = until(&mut watch_status, "web converged after a restart", |s| {
        s.generation == 1 && stack_state(s, "web") == "converged"
    })
    .await;
    assert_eq!(s.stacks["web"].services[0].running, 1);

    // A privileged stack is refused by the default policy; web keeps running.
    let bad = stack(
        "bad",
        &format!("services:\n  root:\n    image: {image}\n    privileged: true\n"),
        vec![],
    );
    desired.receive(&noco_certs::state::sign(
        &signer,
        &state(2, vec![web.clone(), bad]),
    ));
    let s = until(&mut watch_status, "bad refused", |s| {
        s.generation == 2 && stack_state(s, "bad") == "refused"
    })
    .await;
    let error = &s.stacks["bad"].error;
    assert!(error.contains("services.root.privileged"), "{error}");
    assert_eq!(stack_state(&s, "web"), "converged");
    assert!(
        project::ps(&engine, &format!("{prefix}bad"))
            .await
            .unwrap()
            .is_empty()
    );

    // A replayed older state is refused and changes nothing.
    desired.receive(&noco_certs::state::sign(&signer, &state(1, vec![])));
    assert!(desired.report().refused.contains("older"));
    assert_eq!(desired.report().generation, 2);

    // Removed from the state: removed from the host (volumes kept), directory gone.
    desired.receive(&noco_certs::state::sign(&signer, &state(3, vec![])));
    until(&mut watch_status, "everything removed", |s| {
        s.generation == 3 && s.stacks.is_empty()
    })
    .await;
    assert!(
        project::ps(&engine, &project_name)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!tmp.path().join("stacks/web").exists());
    applier.abort();
}
