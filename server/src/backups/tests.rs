//! Backups on the server, component-level: a sled store in a temporary directory, a
//! `ManualClock`, the stack catalog, and a backup store (in memory, a directory, or a real
//! S3-compatible server: moto, started by the test).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use noco_certs::signing::{StateSigner, TrustRoot};
use noco_proto::v1 as pb;
use pb::backup_upload::Msg;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::objects::{self, Objects};
use super::*;
use crate::audit::Audit;
use crate::desired::tests::{FixedKey, Fixture};
use crate::stacks::Stacks;
use crate::store::{AuditFilter, HostRecord};

const COMPOSE: &str = r#"
services:
  db:
    image: example/db:1
volumes:
  data: {}
x-noco:
  backups:
    db:
      service: db
      dump: [pg_dump, app]
      retention: {keep_last: 2}
    files:
      volumes: [data]
"#;

struct Fx {
    f: Fixture,
    _incoming: tempfile::TempDir,
    stacks: Arc<Stacks>,
    signer: Arc<StateSigner>,
    backups: Arc<Backups>,
    host: HostRecord,
    who: Who,
}

fn settings(objects: Arc<Objects>, incoming: &std::path::Path) -> BackupSettings {
    BackupSettings {
        objects,
        incoming: incoming.to_path_buf(),
        max_size: 1 << 40,
    }
}

impl Fx {
    /// A second `Backups` over the same store, objects and receiving directory: the server
    /// after a restart (nothing in memory).
    fn restarted(&self) -> Backups {
        Backups::new(
            self.f.store.clone(),
            Arc::new(FixedKey(self.signer.clone())),
            self.f.registry.clone(),
            Arc::new(Audit::new(self.f.store.clone(), self.f.clock.clone())),
            self.f.clock.clone(),
            settings(self.backups.objects.clone(), &self.backups.incoming),
        )
    }

    async fn audit(&self, action: &str) -> Vec<crate::store::AuditRecord> {
        self.f
            .store
            .audit(
                &AuditFilter {
                    action: action.into(),
                    ..Default::default()
                },
                1000,
            )
            .await
            .unwrap()
    }
}

async fn fixture_with(objects: Arc<Objects>) -> Fx {
    let (f, stacks) = crate::stacks::tests::stacks_fixture().await;
    stacks
        .apply(
            "test",
            pb::ApplyStackRequest {
                name: "shop".into(),
                selector: "role=web".into(),
                compose: COMPOSE.as_bytes().to_vec(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let incoming = tempfile::tempdir().unwrap();
    let signer = Arc::new(StateSigner::generate());
    let backups = Arc::new(Backups::new(
        f.store.clone(),
        Arc::new(FixedKey(signer.clone())),
        f.registry.clone(),
        Arc::new(Audit::new(f.store.clone(), f.clock.clone())),
        f.clock.clone(),
        settings(objects, incoming.path()),
    ));
    let host = f.store.host("h1").await.unwrap().unwrap();
    Fx {
        f,
        _incoming: incoming,
        stacks,
        signer,
        backups,
        host,
        who: Who::named("agent h1-name (h1)"),
    }
}

async fn fixture() -> Fx {
    fixture_with(Arc::new(Objects::in_memory())).await
}

fn info(id: &str, state: pb::BackupState) -> pb::BackupInfo {
    let name = id.split('.').nth(1).unwrap_or_default().to_string();
    pb::BackupInfo {
        id: id.into(),
        stack: "shop".into(),
        name,
        host_id: "h1".into(),
        kind: pb::BackupKind::Dump.into(),
        state: state.into(),
        started_unix_ms: 1_700_000_000_000,
        trigger: "schedule".into(),
        ..Default::default()
    }
}

fn archive(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

type Up = std::result::Result<pb::BackupUpload, Status>;

fn header(b: &pb::BackupInfo, offset: u64) -> Up {
    Ok(pb::BackupUpload {
        msg: Some(Msg::Header(pb::BackupUploadHeader {
            backup: Some(b.clone()),
            offset,
        })),
    })
}

fn data_msgs(data: &[u8]) -> Vec<Up> {
    data.chunks(noco_proto::limits::MAX_BACKUP_CHUNK)
        .map(|c| {
            Ok(pb::BackupUpload {
                msg: Some(Msg::Data(c.to_vec())),
            })
        })
        .collect()
}

fn trailer(size: u64, sha256: &str) -> Up {
    Ok(pb::BackupUpload {
        msg: Some(Msg::Trailer(pb::BackupUploadTrailer {
            size,
            sha256: sha256.into(),
            manifest_json: r#"{"members":[{"path":"dump","size":12345}]}"#.into(),
            finished_unix_ms: 1_700_000_100_000,
        })),
    })
}

/// Upload `data` whole, from 0.
async fn upload_all(fx: &Fx, b: &pb::BackupInfo, data: &[u8]) -> Result<pb::BackupInfo> {
    let mut msgs = vec![header(b, 0)];
    msgs.extend(data_msgs(data));
    msgs.push(trailer(data.len() as u64, &sha(data)));
    fx.backups
        .upload(&fx.who, &fx.host, futures_util::stream::iter(msgs))
        .await
}

/// Everything a download of `id` from `offset` yields: (size, sha256 of the first chunk, data).
async fn download(
    backups: &Backups,
    id: &str,
    offset: u64,
    host: Option<&HostRecord>,
) -> Result<(u64, String, Vec<u8>)> {
    let mut s = backups.download(id, offset, host).await?;
    let mut data = Vec::new();
    let mut head = None;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|s| Error::Internal(s.message().to_string()))?;
        assert!(chunk.data.len() <= noco_proto::limits::MAX_BACKUP_CHUNK);
        if head.is_none() {
            head = Some((chunk.size, chunk.sha256.clone()));
        } else {
            assert_eq!(chunk.size, 0, "size and sha256 in the first chunk only");
        }
        data.extend_from_slice(&chunk.data);
    }
    let (size, sha256) = head.unwrap_or_default();
    Ok((size, sha256, data))
}

/// The upload of an archive is cut at 90%; `UploadOffset` then says exactly what the server
/// holds, a header at any other offset is refused naming it, and the rest completes the backup
/// (the hash of the held part recomputed when the server restarted in between).
async fn cut_at_ninety_percent_and_resume(fx: &Fx, size: usize, restart: bool) {
    let data = archive(size, 7);
    let b = info(
        "shop.db.20240101T000000Z.0000000a",
        pb::BackupState::PendingUpload,
    );
    let cut = size / 10 * 9;
    let mut first = vec![header(&b, 0)];
    first.extend(data_msgs(&data[..cut]));
    first.push(Err(Status::unavailable("connection reset")));
    let err = fx
        .backups
        .upload(&fx.who, &fx.host, futures_util::stream::iter(first))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err}");
    let held =
        fx.f.store
            .backup(&b.id)
            .await
            .unwrap()
            .expect("recorded while uploading");
    assert_eq!(held.state(), pb::BackupState::PendingUpload);
    assert_eq!(held.uploaded, cut as u64);
    let restarted;
    let backups: &Backups = if restart {
        restarted = fx.restarted();
        &restarted
    } else {
        &fx.backups
    };
    let offset = backups.upload_offset(&fx.host, &b.id).await.unwrap();
    assert_eq!((offset.offset, offset.complete), (cut as u64, false));
    let err = backups
        .upload(
            &fx.who,
            &fx.host,
            futures_util::stream::iter(vec![header(&b, 0)]),
        )
        .await
        .unwrap_err();
    let want = format!("the server holds {cut} bytes");
    assert!(
        matches!(&err, Error::Precondition(m) if m.contains(&want)),
        "{err}"
    );
    let mut rest = vec![header(&b, cut as u64)];
    rest.extend(data_msgs(&data[cut..]));
    rest.push(trailer(size as u64, &sha(&data)));
    let done = backups
        .upload(&fx.who, &fx.host, futures_util::stream::iter(rest))
        .await
        .unwrap();
    assert_eq!(done.state(), pb::BackupState::Complete);
    assert_eq!(done.size, size as u64);
    assert_eq!(done.sha256, sha(&data));
    assert_eq!(done.host, "h1-name");
    assert_eq!(done.content_size, 12345, "from the manifest's members");
    assert!(
        !backups.part_path(&b.id).exists(),
        "the part is removed once stored"
    );
    let (got_size, got_sha, got) = download(backups, &b.id, 0, None).await.unwrap();
    assert_eq!(
        (got_size, got_sha.as_str()),
        (size as u64, sha(&data).as_str())
    );
    assert!(got == data, "the stored archive is what was uploaded");
}

#[tokio::test]
async fn an_upload_cut_at_ninety_percent_resumes_at_ninety_percent() {
    let fx = fixture().await;
    cut_at_ninety_percent_and_resume(&fx, 24 << 20, false).await;
    let fx = fixture().await;
    cut_at_ninety_percent_and_resume(&fx, (3 << 20) + 123, true).await;
}

/// The issue's figure: a 1 GiB archive cut at 90%, into a store on disk. About a minute in a
/// debug build: `cargo test -p noco-server -- --ignored one_gib`.
#[tokio::test]
#[ignore]
async fn one_gib_cut_at_ninety_percent_resumes_at_ninety_percent() {
    let dir = tempfile::tempdir().unwrap();
    let objects =
        Objects::from_url(&format!("file://{}", dir.path().display()), &|_| None).unwrap();
    let fx = fixture_with(Arc::new(objects)).await;
    cut_at_ninety_percent_and_resume(&fx, 1 << 30, false).await;
}

#[tokio::test]
async fn a_checksum_mismatch_deletes_the_part_and_records_the_backup_failed() {
    let fx = fixture().await;
    let data = archive(3 << 20, 1);
    let b = info(
        "shop.db.20240101T000000Z.0000000b",
        pb::BackupState::PendingUpload,
    );
    let mut msgs = vec![header(&b, 0)];
    msgs.extend(data_msgs(&data));
    let lie = "ab".repeat(32);
    msgs.push(trailer(data.len() as u64, &lie));
    let err = fx
        .backups
        .upload(&fx.who, &fx.host, futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    let want = format!("checksum mismatch: got {}, agent said {lie}", sha(&data));
    assert!(matches!(&err, Error::DataLoss(m) if *m == want), "{err}");
    assert_eq!(Status::from(err).code(), tonic::Code::DataLoss);
    let stored = fx.f.store.backup(&b.id).await.unwrap().unwrap();
    assert_eq!(stored.state(), pb::BackupState::Failed);
    assert_eq!(stored.reason, want);
    assert!(!fx.backups.part_path(&b.id).exists());
    assert_eq!(
        fx.backups
            .upload_offset(&fx.host, &b.id)
            .await
            .unwrap()
            .offset,
        0
    );
    let audit = fx.audit("backup.failed").await;
    assert_eq!(audit.len(), 1);
    assert!(audit[0].result.contains("checksum mismatch"), "{audit:?}");
    // A size that is not what arrived is refused too; an empty archive is never a backup.
    let b2 = info(
        "shop.db.20240101T000000Z.0000000c",
        pb::BackupState::PendingUpload,
    );
    let mut msgs = vec![header(&b2, 0)];
    msgs.extend(data_msgs(&data));
    msgs.push(trailer(data.len() as u64 + 1, &sha(&data)));
    let err = fx
        .backups
        .upload(&fx.who, &fx.host, futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("size mismatch"), "{err}");
    let b3 = info(
        "shop.db.20240101T000000Z.0000000d",
        pb::BackupState::PendingUpload,
    );
    let err = upload_all(&fx, &b3, &[]).await.unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    // Nothing reached the store.
    for id in [&b.id, &b2.id, &b3.id] {
        let key = objects::archive_key("shop", "db", "h1", id);
        assert_eq!(fx.backups.objects.size(&key).await.unwrap(), None);
    }
}

#[tokio::test]
async fn an_archive_over_the_size_limit_fails_the_backup() {
    let fx = fixture().await;
    let small = Backups::new(
        fx.f.store.clone(),
        Arc::new(FixedKey(fx.signer.clone())),
        fx.f.registry.clone(),
        Arc::new(Audit::new(fx.f.store.clone(), fx.f.clock.clone())),
        fx.f.clock.clone(),
        BackupSettings {
            max_size: 2 << 20,
            ..settings(fx.backups.objects.clone(), &fx.backups.incoming)
        },
    );
    let data = archive(3 << 20, 2);
    let b = info(
        "shop.db.20240101T000000Z.0000000e",
        pb::BackupState::PendingUpload,
    );
    let mut msgs = vec![header(&b, 0)];
    msgs.extend(data_msgs(&data));
    msgs.push(trailer(data.len() as u64, &sha(&data)));
    let err = small
        .upload(&fx.who, &fx.host, futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(Status::from(err).code(), tonic::Code::ResourceExhausted);
    let stored = fx.f.store.backup(&b.id).await.unwrap().unwrap();
    assert_eq!(stored.state(), pb::BackupState::Failed);
    assert!(
        stored.reason.contains("--backup-max-size"),
        "{}",
        stored.reason
    );
    assert!(!small.part_path(&b.id).exists());
    // A header that says as much is refused before any byte is sent.
    let mut big = info(
        "shop.db.20240101T000000Z.00000011",
        pb::BackupState::PendingUpload,
    );
    big.size = 3 << 20;
    let err = small
        .upload(
            &fx.who,
            &fx.host,
            futures_util::stream::iter(vec![header(&big, 0)]),
        )
        .await
        .unwrap_err();
    assert_eq!(Status::from(err).code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn an_abandoned_upload_is_removed_and_its_backup_recorded_failed() {
    let fx = fixture().await;
    let b = info(
        "shop.db.20240101T000000Z.00000012",
        pb::BackupState::PendingUpload,
    );
    let data = archive(5000, 9);
    let mut msgs = vec![header(&b, 0)];
    msgs.extend(data_msgs(&data[..1000]));
    let _ = fx
        .backups
        .upload(&fx.who, &fx.host, futures_util::stream::iter(msgs))
        .await;
    let part = fx.backups.part_path(&b.id);
    assert!(part.exists());
    let week = Duration::from_secs(7 * 24 * 3600);
    assert!(fx.backups.prune_parts(week).await.unwrap().is_empty());
    let old = std::time::SystemTime::now() - week - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&part)
        .unwrap()
        .set_modified(old)
        .unwrap();
    fx.f.clock.advance_ms(
        std::time::SystemTime::now()
            .duration_since(fx.f.clock.now())
            .map_or(0, |d| d.as_millis() as i64),
    );
    assert_eq!(fx.backups.prune_parts(week).await.unwrap(), [b.id.as_str()]);
    assert!(!part.exists());
    let stored = fx.f.store.backup(&b.id).await.unwrap().unwrap();
    assert_eq!(stored.state(), pb::BackupState::Failed);
    assert!(
        stored.reason.starts_with("upload abandoned"),
        "{}",
        stored.reason
    );
}

#[tokio::test]
async fn a_complete_backup_is_never_changed_back() {
    let fx = fixture().await;
    let data = archive(1000, 3);
    let b = info(
        "shop.db.20240101T000000Z.0000000f",
        pb::BackupState::PendingUpload,
    );
    let done = upload_all(&fx, &b, &data).await.unwrap();
    assert_eq!(done.state(), pb::BackupState::Complete);
    for state in [
        pb::BackupState::Running,
        pb::BackupState::PendingUpload,
        pb::BackupState::Failed,
        pb::BackupState::Missed,
    ] {
        let mut r = info(&b.id, state);
        r.reason = "late report".into();
        fx.backups
            .report_backup(&fx.who, &fx.host, r)
            .await
            .unwrap();
        let stored = fx.f.store.backup(&b.id).await.unwrap().unwrap();
        assert_eq!(stored, done, "after a {state:?} report");
    }
    let err = fx
        .backups
        .report_backup(&fx.who, &fx.host, info(&b.id, pb::BackupState::Complete))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    // Uploading it again answers with the complete backup; the offset says complete.
    let again = upload_all(&fx, &b, b"other bytes").await.unwrap();
    assert_eq!(again, done);
    let offset = fx.backups.upload_offset(&fx.host, &b.id).await.unwrap();
    assert_eq!((offset.offset, offset.complete), (1000, true));
    assert!(fx.audit("backup.failed").await.is_empty());
    assert_eq!(fx.audit("backup.complete").await.len(), 1);
}

#[tokio::test]
async fn reports_are_upserted_and_failures_and_misses_audited_once() {
    let fx = fixture().await;
    let id = "shop.files.20240101T030000Z.00000001";
    fx.backups
        .report_backup(&fx.who, &fx.host, info(id, pb::BackupState::Running))
        .await
        .unwrap();
    let stored = fx.f.store.backup(id).await.unwrap().unwrap();
    assert_eq!(
        (stored.state(), stored.host.as_str()),
        (pb::BackupState::Running, "h1-name")
    );
    let mut failed = info(id, pb::BackupState::Failed);
    failed.reason = "volume data vanished".into();
    for _ in 0..2 {
        fx.backups
            .report_backup(&fx.who, &fx.host, failed.clone())
            .await
            .unwrap();
    }
    let stored = fx.f.store.backup(id).await.unwrap().unwrap();
    assert_eq!(stored.state(), pb::BackupState::Failed);
    assert_eq!(stored.reason, "volume data vanished");
    let audit = fx.audit("backup.failed").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].result, "error: volume data vanished");
    let mut missed = info(
        "shop.files.20240102T030000Z.00000002",
        pb::BackupState::Missed,
    );
    missed.scheduled_unix_ms = 1_704_164_400_000;
    fx.backups
        .report_backup(&fx.who, &fx.host, missed)
        .await
        .unwrap();
    let audit = fx.audit("backup.missed").await;
    assert_eq!(audit.len(), 1);
    assert!(
        audit[0].result.contains("2024-01-02T03:00:00Z"),
        "{audit:?}"
    );
    // Only its own host reports a backup.
    let mut other = fx.host.clone();
    other.id = "h2".into();
    let err = fx
        .backups
        .report_backup(&fx.who, &other, info(id, pb::BackupState::Running))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err}");
    let mut bad = info("shop.db.x", pb::BackupState::Running);
    bad.id = "other.db.x".into();
    assert!(
        fx.backups
            .report_backup(&fx.who, &fx.host, bad)
            .await
            .is_err()
    );
    // Listed newest first, with host names, filtered.
    let list = fx
        .backups
        .list(&pb::ListBackupsRequest {
            host: "h1-name".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.backups.len(), 2);
    let err = fx
        .backups
        .list(&pb::ListBackupsRequest {
            host: "h1-nmae".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("did you mean \"h1-name\""),
        "{err}"
    );
}

fn root(signer: &StateSigner) -> TrustRoot {
    TrustRoot::new(&[signer.public_key().to_vec()]).unwrap()
}

fn requester() -> jobs::Requester {
    jobs::Requester {
        caller: "operator alice (deployer)".into(),
        trigger: "manual".into(),
        triggered_by: "alice".into(),
    }
}

fn run_req(name: &str, hosts: &[&str]) -> pb::RunBackupRequest {
    pb::RunBackupRequest {
        stack: "shop".into(),
        name: name.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
    }
}

#[tokio::test]
async fn run_backup_orders_each_declared_backup_on_each_host_running_the_stack() {
    let fx = fixture().await;
    let all = fx
        .backups
        .run(&requester(), run_req("", &[]))
        .await
        .unwrap();
    let mut names: Vec<&str> = all.jobs.iter().map(|j| j.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["db", "files"]);
    for j in &all.jobs {
        assert_eq!(j.state(), pb::BackupJobState::Pending);
        assert_eq!(j.host, "h1-name");
        assert!(
            j.backup_id.starts_with(&format!("shop.{}.2023", j.name)),
            "{}",
            j.backup_id
        );
        assert_eq!(j.backup_id.rsplit('.').next().unwrap().len(), 8);
    }
    let err = fx
        .backups
        .run(&requester(), run_req("dbb", &[]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"no backup in stack shop named "dbb"; did you mean "db"?"#
    );
    let err = fx
        .backups
        .run(
            &requester(),
            pb::RunBackupRequest {
                stack: "shpo".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did you mean \"shop\""), "{err}");
    // A host that does not run the stack is refused, naming where it runs.
    fx.f.store
        .insert_host(&crate::desired::tests::host("h2", &[("role", "db")]))
        .await
        .unwrap();
    let err = fx
        .backups
        .run(&requester(), run_req("db", &["h2-name"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("host h2-name does not run stack shop (it runs on h1-name)"),
        "{err}"
    );
    let one = fx
        .backups
        .run(&requester(), run_req("db", &["h1-name", "h1"]))
        .await
        .unwrap();
    assert_eq!(one.jobs.len(), 1, "each host once");
    // A stack without backups says so.
    fx.stacks
        .apply("test", crate::stacks::tests::apply_req("plain", "1"))
        .await
        .unwrap();
    let err = fx
        .backups
        .run(
            &requester(),
            pb::RunBackupRequest {
                stack: "plain".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("declares no backups"), "{err}");
}

#[tokio::test]
async fn an_order_is_signed_for_its_host_and_reaches_its_live_session() {
    let fx = fixture().await;
    let mut session = fx.f.registry.register("h1", 0);
    let jobs = fx
        .backups
        .run(&requester(), run_req("db", &[]))
        .await
        .unwrap();
    let job = &jobs.jobs[0];
    let signed = session.orders.try_recv().expect("pushed to the session");
    let now = fx.f.clock.now();
    let order = noco_certs::order::verify(&root(&fx.signer), &signed, "h1", now).unwrap();
    assert_eq!(order.id, job.id);
    assert_eq!(
        order.expires_unix_ms - order.issued_unix_ms,
        ORDER_TTL.as_millis() as i64
    );
    let Some(pb::order::What::RunBackup(run)) = order.what else {
        panic!("a run order: {order:?}")
    };
    assert_eq!(
        (
            run.stack.as_str(),
            run.name.as_str(),
            run.backup_id.as_str()
        ),
        ("shop", "db", job.backup_id.as_str())
    );
    assert_eq!(
        (run.trigger.as_str(), run.triggered_by.as_str()),
        ("manual", "alice")
    );
    assert!(noco_certs::order::verify(&root(&fx.signer), &signed, "h2", now).is_err());
    // Delivered, yet not started: a new session gets it again; once started, never.
    let again = fx.backups.pending_orders("h1").await;
    assert_eq!(again, [signed]);
    let mut running = job.clone();
    running.state = pb::BackupJobState::Running.into();
    running.phase = "dumping".into();
    running.percent = 40;
    fx.backups
        .report_job(&fx.who, &fx.host, running)
        .await
        .unwrap();
    assert!(fx.backups.pending_orders("h1").await.is_empty());
    let shown = fx.backups.job(&job.id).await.unwrap();
    assert_eq!((shown.phase.as_str(), shown.percent), ("dumping", 40));
    // The backup it makes completes: the job succeeds.
    let data = archive(5000, 4);
    let mut b = info(&job.backup_id, pb::BackupState::PendingUpload);
    b.trigger = "manual".into();
    upload_all(&fx, &b, &data).await.unwrap();
    let shown = fx.backups.job(&job.id).await.unwrap();
    assert_eq!(shown.state(), pb::BackupJobState::Succeeded);
}

#[tokio::test]
async fn an_undelivered_order_fails_its_job_when_it_expires() {
    let fx = fixture().await;
    let jobs = fx
        .backups
        .run(&requester(), run_req("db", &[]))
        .await
        .unwrap();
    let job = &jobs.jobs[0];
    assert_eq!(
        fx.f.store.orders().await.unwrap().len(),
        1,
        "kept for later"
    );
    fx.f.clock.advance_ms(ORDER_TTL.as_millis() as i64 - 1000);
    assert_eq!(fx.backups.expire_orders().await.unwrap(), 0);
    assert_eq!(
        fx.backups.job(&job.id).await.unwrap().state(),
        pb::BackupJobState::Pending
    );
    fx.f.clock.advance_ms(2000);
    assert!(
        fx.backups.pending_orders("h1").await.is_empty(),
        "an expired order is not sent"
    );
    assert_eq!(fx.backups.expire_orders().await.unwrap(), 1);
    let failed = fx.backups.job(&job.id).await.unwrap();
    assert_eq!(failed.state(), pb::BackupJobState::Failed);
    assert_eq!(failed.reason, "host offline until the order expired");
    assert!(fx.f.store.orders().await.unwrap().is_empty());
    let audit = fx.audit("backup.job").await;
    assert_eq!(audit.len(), 1);
    assert!(audit[0].result.contains("offline"), "{audit:?}");
    // A report after that changes nothing.
    let mut late = job.clone();
    late.state = pb::BackupJobState::Succeeded.into();
    fx.backups
        .report_job(&fx.who, &fx.host, late)
        .await
        .unwrap();
    assert_eq!(
        fx.backups.job(&job.id).await.unwrap().state(),
        pb::BackupJobState::Failed
    );
}

#[tokio::test]
async fn restore_and_verify_need_a_complete_backup_and_a_host_running_its_stack() {
    let fx = fixture().await;
    let b = info(
        "shop.db.20240101T000000Z.00000010",
        pb::BackupState::PendingUpload,
    );
    let data = archive(3 << 20, 5);
    let mut msgs = vec![header(&b, 0)];
    msgs.extend(data_msgs(&data[..1000]));
    let _ = fx
        .backups
        .upload(&fx.who, &fx.host, futures_util::stream::iter(msgs))
        .await;
    let err = fx
        .backups
        .restore(&requester(), pb::BackupJobKind::Restore, &b.id, "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pending_upload"), "{err}");
    let mut rest = vec![header(&b, 1000)];
    rest.extend(data_msgs(&data[1000..]));
    rest.push(trailer(data.len() as u64, &sha(&data)));
    fx.backups
        .upload(&fx.who, &fx.host, futures_util::stream::iter(rest))
        .await
        .unwrap();
    // An agent downloads only what it restores or verifies.
    let err = download(&fx.backups, &b.id, 0, Some(&fx.host))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err}");
    let mut session = fx.f.registry.register("h1", 0);
    let job = fx
        .backups
        .restore(&requester(), pb::BackupJobKind::Restore, &b.id, "")
        .await
        .unwrap();
    assert_eq!(
        (job.host.as_str(), job.kind()),
        ("h1-name", pb::BackupJobKind::Restore)
    );
    let signed = session.orders.try_recv().unwrap();
    let order =
        noco_certs::order::verify(&root(&fx.signer), &signed, "h1", fx.f.clock.now()).unwrap();
    let Some(pb::order::What::Restore(r)) = order.what else {
        panic!("{order:?}")
    };
    let sent = r.backup.unwrap();
    assert_eq!(
        (sent.size, sent.sha256.as_str()),
        (data.len() as u64, sha(&data).as_str())
    );
    // One restore of a stack on a host at a time.
    let err = fx
        .backups
        .restore(&requester(), pb::BackupJobKind::Restore, &b.id, "h1-name")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is restoring stack shop already"),
        "{err}"
    );
    let (size, sha256, got) = download(&fx.backups, &b.id, 2 << 20, Some(&fx.host))
        .await
        .unwrap();
    assert_eq!((size, sha256), (data.len() as u64, sha(&data)));
    assert!(got == data[2 << 20..]);
    let (_, _, end) = download(&fx.backups, &b.id, data.len() as u64, None)
        .await
        .unwrap();
    assert!(end.is_empty());
    let err = download(&fx.backups, &b.id, data.len() as u64 + 1, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfRange(_)), "{err}");
    // Removing a backup in use is refused.
    let err = fx.backups.remove(&b.id).await.unwrap_err();
    assert!(err.to_string().contains("is in use"), "{err}");
    let mut done = job.clone();
    done.state = pb::BackupJobState::Succeeded.into();
    fx.backups
        .report_job(&fx.who, &fx.host, done)
        .await
        .unwrap();
    // A verify's outcome is recorded on the backup.
    let v = fx
        .backups
        .restore(&requester(), pb::BackupJobKind::Verify, &b.id, "")
        .await
        .unwrap();
    let mut failed = v.clone();
    failed.state = pb::BackupJobState::Failed.into();
    failed.reason = "pg_restore --list: not a dump".into();
    failed.finished_unix_ms = 1_700_000_555_000;
    fx.backups
        .report_job(&fx.who, &fx.host, failed)
        .await
        .unwrap();
    let shown = fx.backups.show(&b.id).await.unwrap();
    assert_eq!(
        (
            shown.verified.as_str(),
            shown.verified_unix_ms,
            shown.verify_reason.as_str()
        ),
        ("failed", 1_700_000_555_000, "pg_restore --list: not a dump")
    );
    assert!(
        shown.manifest_json.contains("members"),
        "GetBackup has the manifest"
    );
    // A host that does not run the stack cannot be the target.
    fx.f.store
        .insert_host(&crate::desired::tests::host("h2", &[("role", "db")]))
        .await
        .unwrap();
    let err = fx
        .backups
        .restore(&requester(), pb::BackupJobKind::Restore, &b.id, "h2-name")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not run stack shop"), "{err}");
    // Now it can go: objects first, then the entry.
    let removed = fx.backups.remove(&b.id).await.unwrap();
    assert_eq!(removed.id, b.id);
    let key = objects::archive_key("shop", "db", "h1", &b.id);
    assert_eq!(fx.backups.objects.size(&key).await.unwrap(), None);
    assert!(fx.f.store.backup(&b.id).await.unwrap().is_none());
}

/// Three complete backups under {keep_last: 2}: the oldest goes, archive first.
async fn retention_after_each_complete(fx: &Fx) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..3i64 {
        let mut b = info(
            &format!("shop.db.2024010{}T000000Z.0000002{i}", i + 1),
            pb::BackupState::PendingUpload,
        );
        b.started_unix_ms = 1_704_067_200_000 + i * 86_400_000;
        upload_all(fx, &b, &archive(2000 + i as usize, i as u8))
            .await
            .unwrap();
        ids.push(b.id);
    }
    let left: Vec<String> = fx
        .backups
        .list(&pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .backups
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(left, [ids[2].clone(), ids[1].clone()], "newest first");
    let key = objects::archive_key("shop", "db", "h1", &ids[0]);
    assert_eq!(fx.backups.objects.size(&key).await.unwrap(), None);
    let audit = fx.audit("backup.expire").await;
    assert!(audit.iter().any(|a| a.target == ids[0]), "{audit:?}");
    ids
}

#[tokio::test]
async fn retention_runs_after_each_complete_backup() {
    let fx = fixture().await;
    retention_after_each_complete(&fx).await;
}

#[tokio::test]
async fn catalog_changes_are_compare_and_swap() {
    let fx = fixture().await;
    let id = "shop.db.20240101T000000Z.00000030";
    fx.f.store
        .change_backup(id, &|_| Ok(Some(info(id, pb::BackupState::PendingUpload))))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let store = fx.f.store.clone();
        tasks.spawn(async move {
            store
                .change_backup(id, &|old| {
                    let mut b = old.cloned().unwrap();
                    b.uploaded += 1;
                    Ok(Some(b))
                })
                .await
                .unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(fx.f.store.backup(id).await.unwrap().unwrap().uploaded, 32);
    let err =
        fx.f.store
            .change_backup(id, &|_| Err("no".into()))
            .await
            .unwrap_err();
    assert!(matches!(err, crate::store::StoreError::Refused(_)));
    fx.f.store.change_backup(id, &|_| Ok(None)).await.unwrap();
    assert!(fx.f.store.backups().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_catalog_is_counted_and_checked_at_open() {
    use crate::store::sled_store::SledStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = SledStore::create(&path).await.unwrap();
        for i in 0..3 {
            let id = format!("shop.db.x.{i}");
            store
                .change_backup(&id, &|_| Ok(Some(info(&id, pb::BackupState::Running))))
                .await
                .unwrap();
        }
        store
            .change_backup("shop.db.x.0", &|_| Ok(None))
            .await
            .unwrap();
    }
    let store = SledStore::open(&path).await.unwrap();
    assert_eq!(store.check().unwrap().counts["backups"], 2);
}

// ---------------------------------------------------------------- the same against a real S3

/// The whole round — put in parts, resume, complete, download from offsets, retention, remove —
/// through `objects.rs` and the component, against `objects`.
async fn suite(objects: Arc<Objects>) {
    objects.probe().await.unwrap();
    let fx = fixture_with(objects).await;
    cut_at_ninety_percent_and_resume(&fx, (12 << 20) + 4321, false).await;
    let first = "shop.db.20240101T000000Z.0000000a";
    let (_, _, part) = download(&fx.backups, first, 5 << 20, None).await.unwrap();
    assert_eq!(part.len(), (7 << 20) + 4321);
    // Three newer backups under keep_last 2: the first goes too.
    let ids = retention_after_each_complete(&fx).await;
    for gone in [first, &ids[0]] {
        let key = objects::archive_key("shop", "db", "h1", gone);
        assert_eq!(fx.backups.objects.size(&key).await.unwrap(), None, "{gone}");
        assert!(fx.f.store.backup(gone).await.unwrap().is_none(), "{gone}");
    }
    fx.backups.remove(&ids[1]).await.unwrap();
    let key = objects::archive_key("shop", "db", "h1", &ids[1]);
    assert_eq!(fx.backups.objects.size(&key).await.unwrap(), None);
    let manifest = objects::manifest_key("shop", "db", "h1", &ids[1]);
    assert_eq!(fx.backups.objects.size(&manifest).await.unwrap(), None);
    assert!(fx.f.store.backup(&ids[1]).await.unwrap().is_none());
}

#[tokio::test]
async fn the_suite_against_a_store_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::from_url(&format!("file://{}", dir.path().display()), &|_| None)
        .unwrap()
        .with_part_size(5 << 20);
    suite(Arc::new(objects)).await;
}

/// A moto S3 server on a free port of 127.0.0.1, killed when dropped.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Option<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let why = format!("moto_server cannot be started ({e}): pip install 'moto[server]'");
            if std::env::var("NOCO_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("{why} (NOCO_REQUIRE_DOCKER=1: real servers are required)");
            }
            eprintln!("SKIPPED the S3 test: {why}");
            return None;
        }
    };
    let moto = Moto { child, port };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not listen on {port} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(moto)
}

#[tokio::test]
async fn the_suite_against_a_real_s3_server() {
    noco_certs::install_crypto_provider();
    let Some(moto) = start_moto().await else {
        return;
    };
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let made = reqwest::Client::new()
        .put(format!("{endpoint}/noco-test"))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "creating the bucket: {made:?}");
    let env = |k: &str| match k {
        "AWS_ACCESS_KEY_ID" => Some("testing".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some("testing".to_string()),
        _ => None,
    };
    let url = format!(
        "s3://noco-test/fleet/backups?region=us-east-1&endpoint={endpoint}&allow_http=true"
    );
    // S3's smallest part: a 12 MiB archive goes up in three.
    let objects = Objects::from_url(&url, &env)
        .unwrap()
        .with_part_size(5 << 20);
    suite(Arc::new(objects)).await;
    // A bucket that is not there fails the start-up probe, naming the store.
    let missing = Objects::from_url(
        &format!("s3://no-such-bucket?region=us-east-1&endpoint={endpoint}&allow_http=true"),
        &env,
    )
    .unwrap();
    let err = missing.probe().await.unwrap_err();
    assert!(err.contains("s3://no-such-bucket"), "{err}");
    assert!(err.contains("is not writable"), "{err}");
}
