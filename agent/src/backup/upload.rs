//! Getting backups to the server, on a connection of their own (an archive's megabytes never
//! queue behind the session's heartbeats nor the log stream): queued reports first, in order, then
//! every archive waiting in the spool, each resumed from what the server already holds
//! (`UploadOffset`). Nothing is deleted here until the server answers that it holds the archive
//! whole, its size and sha256 checked. While the server is away everything waits on disk.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use noco_certs::dial::{self, ServerAddr, describe};
use noco_proto::limits::{MAX_BACKUP_CHUNK, MAX_BACKUP_MESSAGE};
use noco_proto::v1::{self as pb, BackupInfo, BackupReport};
use pb::backup_upload::Msg as UpMsg;
use pb::backups_client::BackupsClient;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::ctx::{Ctx, Job};
use crate::backoff::{Backoff, random_unit};
use crate::renewal::LiveCredential;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the spool is looked at even without a wake-up.
const RESCAN: Duration = Duration::from_secs(30);

/// The client of the Backups service, on a lazily (re)connecting channel of its own.
pub fn client(addr: &ServerAddr, live: &LiveCredential) -> BackupsClient<Channel> {
    let tls = live.tls.clone();
    let channel = dial::connect_lazy(addr, move || tls.load_full(), CONNECT_TIMEOUT);
    BackupsClient::new(channel)
        .max_decoding_message_size(MAX_BACKUP_MESSAGE)
        .max_encoding_message_size(MAX_BACKUP_MESSAGE)
}

/// Forward live progress (best effort: the outcome of a job is queued durably anyway).
pub async fn forward_progress(
    mut client: BackupsClient<Channel>,
    mut progress: mpsc::Receiver<BackupReport>,
) {
    while let Some(report) = progress.recv().await {
        if let Err(e) = client.report(report).await {
            tracing::debug!("backups: progress not sent: {}", describe(&e));
        }
    }
}

/// Deliver reports and archives until the task is dropped.
pub async fn run(ctx: Arc<Ctx>, mut client: BackupsClient<Channel>) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match round(&ctx, &mut client).await {
            Ok(()) => {
                backoff.reset();
                tokio::select! {
                    _ = ctx.wake.notified() => {}
                    _ = tokio::time::sleep(RESCAN) => {}
                }
            }
            Err(why) => {
                let delay = backoff.next_delay(random_unit());
                tracing::warn!("backups: {why}; trying again in {delay:.1?}");
                tokio::select! {
                    _ = ctx.wake.notified() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// One pass: every queued report, then every waiting archive.
async fn round(ctx: &Ctx, client: &mut BackupsClient<Channel>) -> Result<(), String> {
    for (path, report) in ctx.layout.queued_reports() {
        client
            .report(report)
            .await
            .map_err(|e| format!("sending a backup report: {}", describe(&e)))?;
        let _ = std::fs::remove_file(&path);
    }
    for (info, job) in ctx.layout.pending() {
        let mut job = job.map(|id| {
            let mut j = Job::new(&id, pb::BackupJobKind::Run, &ctx.host_id);
            j.job.backup_id = info.id.clone();
            j.job.stack = info.stack.clone();
            j.job.name = info.name.clone();
            j
        });
        match upload(ctx, client, &info, job.as_mut()).await {
            Ok(stored) => {
                tracing::info!(
                    "backup {}: uploaded ({}, sha256 {})",
                    info.id,
                    noco_proto::size::human(stored.size),
                    &stored.sha256[..stored.sha256.len().min(12)]
                );
                ctx.layout.remove(&info.id);
                if let Some(j) = job {
                    j.finish(ctx, &Ok("complete".to_owned()));
                }
            }
            Err(Failure::Refused(reason)) => {
                // The server checked the archive and refused it (size or checksum): it recorded
                // the failure; keeping the archive would only send it again.
                tracing::error!(
                    "backup {}: the server refused the archive: {reason}",
                    info.id
                );
                ctx.layout.remove(&info.id);
                if let Some(j) = job {
                    j.finish(
                        ctx,
                        &Err(format!("the server refused the archive: {reason}")),
                    );
                }
            }
            Err(Failure::Retry(why)) => return Err(format!("uploading {}: {why}", info.id)),
        }
    }
    Ok(())
}

enum Failure {
    /// Worth trying again later (the server or the network is away).
    Retry(String),
    /// The server will never take this archive.
    Refused(String),
}

async fn upload(
    ctx: &Ctx,
    client: &mut BackupsClient<Channel>,
    info: &BackupInfo,
    mut job: Option<&mut Job>,
) -> Result<BackupInfo, Failure> {
    let status = client
        .upload_offset(pb::BackupUploadOffsetRequest {
            id: info.id.clone(),
        })
        .await
        .map_err(|e| Failure::Retry(describe(&e)))?
        .into_inner();
    if status.complete {
        let mut done = info.clone();
        done.state = pb::BackupState::Complete.into();
        return Ok(done);
    }
    let offset = status.offset;
    if offset > info.size {
        return Err(Failure::Refused(format!(
            "the server holds {offset} bytes of a {}-byte archive",
            info.size
        )));
    }
    if offset > 0 {
        tracing::info!(
            "backup {}: resuming the upload at {} of {}",
            info.id,
            noco_proto::size::human(offset),
            noco_proto::size::human(info.size)
        );
    }
    let path = ctx.layout.archive(&info.id);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Failure::Retry(format!("opening {}: {e}", path.display())))?;
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| Failure::Retry(format!("seeking {}: {e}", path.display())))?;
    let (tx, rx) = mpsc::channel(4);
    let header = pb::BackupUpload {
        msg: Some(UpMsg::Header(pb::BackupUploadHeader {
            backup: Some(info.clone()),
            offset,
        })),
    };
    let trailer = pb::BackupUpload {
        msg: Some(UpMsg::Trailer(pb::BackupUploadTrailer {
            size: info.size,
            sha256: info.sha256.clone(),
            manifest_json: info.manifest_json.clone(),
            finished_unix_ms: info.finished_unix_ms,
        })),
    };
    let size = info.size;
    let (progress_tx, mut progress_rx) = mpsc::channel::<u64>(4);
    let reader = tokio::spawn(async move {
        if tx.send(header).await.is_err() {
            return Ok(());
        }
        let mut sent = offset;
        let mut buf = vec![0u8; MAX_BACKUP_CHUNK];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading the archive: {e}"))?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            let data = pb::BackupUpload {
                msg: Some(UpMsg::Data(buf[..n].to_vec())),
            };
            if tx.send(data).await.is_err() {
                return Ok(());
            }
            let _ = progress_tx.try_send(sent);
        }
        if sent != size {
            return Err(format!(
                "the archive is {sent} bytes on disk, {size} when it was made"
            ));
        }
        let _ = tx.send(trailer).await;
        Ok::<(), String>(())
    });
    let call = client.upload(ReceiverStream::new(rx));
    tokio::pin!(call);
    let mut last_percent = -1;
    let result = loop {
        tokio::select! {
            r = &mut call => break r,
            Some(sent) = progress_rx.recv() => {
                let percent = (sent * 100).checked_div(size).map_or(100, |p| p as i32);
                if let Some(j) = job.as_deref_mut()
                    && percent / 5 != last_percent / 5
                {
                    last_percent = percent;
                    j.phase(ctx, "uploading", percent);
                }
            }
        }
    };
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::Refused(e)),
        Err(e) => return Err(Failure::Retry(format!("the reader task failed: {e}"))),
    }
    match result {
        Ok(resp) => Ok(resp.into_inner()),
        Err(status) => match status.code() {
            tonic::Code::DataLoss
            | tonic::Code::InvalidArgument
            | tonic::Code::ResourceExhausted => Err(Failure::Refused(status.message().to_owned())),
            _ => Err(Failure::Retry(describe(&status))),
        },
    }
}
