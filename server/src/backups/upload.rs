//! Receiving archives: `Backups.Upload` (resumable) and `Backups.UploadOffset`.
//!
//! Bytes go to `<incoming>/<id>.part`, appended in the order received, hashed as they arrive
//! (sha256), fsynced every [`SYNC_EVERY`] and at the end. A header must resume exactly where
//! the part ends (its size is what `UploadOffset` says); the hash of what the part holds is kept
//! in memory between uploads of the same backup, and recomputed from the file when the server has
//! restarted since or a write failed half-way. On the trailer the size and sha256 of the whole
//! part are checked against the agent's; only then is the archive stored (objects.rs), then its
//! manifest, then the backup recorded complete and the part removed. A mismatch deletes the part
//! and records the backup failed with the reason. One upload of a backup at a time.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::{Stream, StreamExt};
use noco_proto::limits::{MAX_BACKUP_CHUNK, MAX_BACKUP_MANIFEST};
use noco_proto::v1 as pb;
use pb::backup_upload::Msg;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::{Backups, check_id, check_record, content_size, merge_from_agent, objects};
use crate::audit::Who;
use crate::error::{Doing, Error, Result};
use crate::store::HostRecord;

/// How much is received between two fsyncs of a part (and two progress updates of the
/// catalog's `uploaded`).
pub const SYNC_EVERY: u64 = 64 << 20;

/// Uploads in progress and the hashes of the parts they left.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    active: Mutex<HashSet<String>>,
    /// Backup id → (bytes hashed, the hash so far) of a part an upload left unfinished.
    hashes: Mutex<HashMap<String, (u64, Sha256)>>,
}

/// Held while a backup is being uploaded.
pub(crate) struct Active<'a> {
    uploads: &'a Uploads,
    id: String,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut active = self
            .uploads
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        active.remove(&self.id);
    }
}

impl Uploads {
    /// How many uploads are in progress.
    pub(crate) fn active_count(&self) -> usize {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn begin(&self, id: &str) -> Option<Active<'_>> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.insert(id.to_string()).then(|| Active {
            uploads: self,
            id: id.to_string(),
        })
    }

    pub(crate) fn is_active(&self, id: &str) -> bool {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.contains(id)
    }

    fn keep_hash(&self, id: &str, size: u64, hasher: Sha256) {
        let mut hashes = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        hashes.insert(id.to_string(), (size, hasher));
    }

    /// The hash of the first `size` bytes of a part, if it is known.
    fn take_hash(&self, id: &str, size: u64) -> Option<Sha256> {
        let mut hashes = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        match hashes.remove(id) {
            Some((n, h)) if n == size => Some(h),
            _ => None,
        }
    }

    pub(crate) fn forget(&self, id: &str) {
        let mut hashes = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        hashes.remove(id);
    }
}

/// A part file being written.
struct Part {
    path: PathBuf,
    file: Option<std::fs::File>,
    hasher: Sha256,
    size: u64,
    unsynced: u64,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{what} {}: {e}", path.display()))
}

impl Part {
    /// Open a part holding `size` bytes for appending; `hasher` is the hash of those bytes,
    /// or `None` to compute it from the file.
    async fn open(path: PathBuf, size: u64, hasher: Option<Sha256>) -> Result<Part> {
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_err("opening", &path, e))?;
            let hasher = match hasher {
                Some(h) => h,
                None => {
                    let mut h = Sha256::new();
                    let mut buf = vec![0u8; 1 << 20];
                    let mut left = size;
                    while left > 0 {
                        let want = buf.len().min(left as usize);
                        let n = file
                            .read(&mut buf[..want])
                            .map_err(|e| io_err("reading", &path, e))?;
                        if n == 0 {
                            return Err(Error::Internal(format!(
                                "{} is shorter than {size} bytes",
                                path.display()
                            )));
                        }
                        h.update(&buf[..n]);
                        left -= n as u64;
                    }
                    h
                }
            };
            Ok(Part {
                path,
                file: Some(file),
                hasher,
                size,
                unsynced: 0,
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("the part task failed: {e}")))?
    }

    /// Append `data`, hashing it (off the async threads).
    async fn write(&mut self, data: Vec<u8>) -> Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::Internal(format!("{} is closed", self.path.display())))?;
        let mut hasher = std::mem::take(&mut self.hasher);
        let path = self.path.clone();
        let (file, hasher, written) = tokio::task::spawn_blocking(move || {
            let written = file
                .write_all(&data)
                .map(|()| {
                    hasher.update(&data);
                    data.len() as u64
                })
                .map_err(|e| io_err("writing", &path, e));
            (file, hasher, written)
        })
        .await
        .map_err(|e| Error::Internal(format!("the part task failed: {e}")))?;
        self.file = Some(file);
        self.hasher = hasher;
        let n = written?;
        self.size += n;
        self.unsynced += n;
        Ok(())
    }

    async fn sync(&mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let path = self.path.clone();
        let (file, result) = tokio::task::spawn_blocking(move || {
            let r = file.sync_data();
            (file, r)
        })
        .await
        .map_err(|e| Error::Internal(format!("the part task failed: {e}")))?;
        self.file = Some(file);
        result.map_err(|e| io_err("syncing", &path, e))?;
        self.unsynced = 0;
        Ok(())
    }
}

/// How big a part is now (0: none).
fn part_size(path: &Path) -> Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err("reading", path, e)),
    }
}

fn remove_part(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", path.display());
    }
}

impl Backups {
    pub(super) fn part_path(&self, id: &str) -> PathBuf {
        self.incoming.join(format!("{id}.part"))
    }

    /// Remove parts no upload has added to for `max_age` (their agent gave up: its spool
    /// dropped the archive, or the host is gone); their backups are recorded failed. Returns
    /// the ids.
    pub async fn prune_parts(&self, max_age: std::time::Duration) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.incoming) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &self.incoming, e)),
        };
        let now = self.clock.now();
        let mut pruned = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".part") else {
                continue;
            };
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > max_age);
            if !stale || check_id(id).is_err() || self.uploads.is_active(id) {
                continue;
            }
            remove_part(&entry.path());
            self.uploads.forget(id);
            let why = format!(
                "upload abandoned: nothing was received for {}",
                humantime::format_duration(max_age)
            );
            let ended = self
                .store
                .change_backup(id, &|old| {
                    Ok(old.map(|o| {
                        let mut b = o.clone();
                        if b.state() != pb::BackupState::Complete {
                            b.state = pb::BackupState::Failed.into();
                            b.reason = why.clone();
                            b.uploaded = 0;
                        }
                        b
                    }))
                })
                .await
                .doing("storing the backup catalog")?;
            if ended.is_some_and(|b| b.state() == pb::BackupState::Failed) {
                self.audit
                    .record::<()>(
                        &Who::named("server"),
                        "backup.failed",
                        id,
                        &Err(Status::unknown(why)),
                    )
                    .await;
            }
            pruned.push(id.to_string());
        }
        Ok(pruned)
    }

    /// `UploadOffset`: how much of the archive the server holds.
    pub async fn upload_offset(
        &self,
        host: &HostRecord,
        id: &str,
    ) -> Result<pb::BackupUploadOffsetResponse> {
        check_id(id)?;
        if let Some(b) = self
            .store
            .backup(id)
            .await
            .doing("reading the backup catalog")?
        {
            if b.host_id != host.id {
                return Err(Error::Denied(format!(
                    "backup {id} belongs to another host"
                )));
            }
            if b.state() == pb::BackupState::Complete {
                return Ok(pb::BackupUploadOffsetResponse {
                    offset: b.size,
                    complete: true,
                });
            }
        }
        Ok(pb::BackupUploadOffsetResponse {
            offset: part_size(&self.part_path(id))?,
            complete: false,
        })
    }

    /// `Upload`: receive (the rest of) an archive, check it, store it, record it complete.
    pub async fn upload<S>(
        &self,
        who: &Who,
        host: &HostRecord,
        mut inbound: S,
    ) -> Result<pb::BackupInfo>
    where
        S: Stream<Item = std::result::Result<pb::BackupUpload, Status>> + Unpin + Send,
    {
        let header = match inbound.next().await {
            Some(Ok(pb::BackupUpload {
                msg: Some(Msg::Header(h)),
            })) => h,
            Some(Ok(_)) => {
                return Err(Error::Invalid(
                    "an upload starts with its header".to_string(),
                ));
            }
            Some(Err(s)) => {
                return Err(Error::Busy(format!(
                    "the upload ended before its header: {}",
                    s.message()
                )));
            }
            None => return Err(Error::Invalid("an empty upload".to_string())),
        };
        let info = header
            .backup
            .ok_or_else(|| Error::Invalid("the upload's header names no backup".to_string()))?;
        check_record(&info)?;
        if !info.host_id.is_empty() && info.host_id != host.id {
            return Err(Error::Denied(format!(
                "host {} may not upload a backup of host {:?}",
                host.name, info.host_id
            )));
        }
        let id = info.id.clone();
        let Some(_active) = self.uploads.begin(&id) else {
            return Err(Error::Busy(format!(
                "another upload of backup {id} is in progress: try again when it ends"
            )));
        };
        if let Some(b) = self
            .store
            .backup(&id)
            .await
            .doing("reading the backup catalog")?
        {
            if b.host_id != host.id {
                return Err(Error::Denied(format!(
                    "backup {id} belongs to another host"
                )));
            }
            if b.state() == pb::BackupState::Complete {
                return Ok(b);
            }
        }
        if info.size > self.max_size {
            let why = self.too_large();
            self.record_failure(who, host, &info, &why).await;
            return Err(Error::TooLarge(why));
        }
        if !self.incoming.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.incoming)
                .map_err(|e| io_err("creating", &self.incoming, e))?;
        }
        let path = self.part_path(&id);
        let held = part_size(&path)?;
        if header.offset != held {
            return Err(Error::Precondition(format!(
                "the server holds {held} bytes of backup {id}, not {}: resume from {held}",
                header.offset
            )));
        }
        self.progress(host, &info, held).await?;
        let hasher = self.uploads.take_hash(&id, held);
        let mut part = Part::open(path.clone(), held, hasher).await?;
        let trailer = loop {
            let msg = match inbound.next().await {
                Some(Ok(m)) => m,
                Some(Err(status)) => {
                    tracing::info!(%id, "upload cut at {} bytes: {}", part.size, status.message());
                    break None;
                }
                None => break None,
            };
            match msg.msg {
                Some(Msg::Data(data)) => {
                    if data.len() > MAX_BACKUP_CHUNK {
                        return Err(Error::Invalid(format!(
                            "a data message of {} bytes, over the {MAX_BACKUP_CHUNK} allowed",
                            data.len()
                        )));
                    }
                    if part.size + data.len() as u64 > self.max_size {
                        drop(part);
                        remove_part(&path);
                        self.uploads.forget(&id);
                        let why = self.too_large();
                        self.record_failure(who, host, &info, &why).await;
                        return Err(Error::TooLarge(why));
                    }
                    // On failure the file may hold more than was hashed: recomputed on resume.
                    part.write(data).await?;
                    if part.unsynced >= SYNC_EVERY {
                        part.sync().await?;
                        self.progress(host, &info, part.size).await?;
                    }
                }
                Some(Msg::Trailer(t)) => break Some(t),
                Some(Msg::Header(_)) => {
                    self.uploads.keep_hash(&id, part.size, part.hasher.clone());
                    return Err(Error::Invalid("an upload has one header".to_string()));
                }
                None => {}
            }
        };
        part.sync().await?;
        let Some(trailer) = trailer else {
            self.uploads.keep_hash(&id, part.size, part.hasher.clone());
            self.progress(host, &info, part.size).await?;
            return Err(Error::Busy(format!(
                "the upload of backup {id} ended before its trailer; the server holds {} bytes: resume from there",
                part.size
            )));
        };
        self.finish(who, host, info, part, trailer).await
    }

    fn too_large(&self) -> String {
        format!(
            "the archive is over the largest the server takes ({} bytes, --backup-max-size)",
            self.max_size
        )
    }

    /// Record how much of a backup's archive the server holds (pending upload).
    async fn progress(
        &self,
        host: &HostRecord,
        info: &pb::BackupInfo,
        uploaded: u64,
    ) -> Result<()> {
        self.store
            .change_backup(&info.id, &|old| {
                let mut b = merge_from_agent(old, info, host, pb::BackupState::PendingUpload)
                    .or_else(|| old.cloned());
                if let Some(b) = &mut b
                    && b.state() != pb::BackupState::Complete
                {
                    b.uploaded = uploaded;
                }
                Ok(b)
            })
            .await
            .doing("storing the backup catalog")?;
        Ok(())
    }

    /// The whole archive is in the part: check it, store it, record it.
    async fn finish(
        &self,
        who: &Who,
        host: &HostRecord,
        info: pb::BackupInfo,
        part: Part,
        trailer: pb::BackupUploadTrailer,
    ) -> Result<pb::BackupInfo> {
        let id = info.id.clone();
        let path = part.path.clone();
        let size = part.size;
        let sha = hex::encode(part.hasher.clone().finalize());
        let mismatch = if trailer.size != size {
            Some(format!(
                "size mismatch: the server received {size} bytes, the agent said {}",
                trailer.size
            ))
        } else if !trailer.sha256.eq_ignore_ascii_case(&sha) {
            Some(format!(
                "checksum mismatch: got {sha}, agent said {}",
                trailer.sha256
            ))
        } else if size == 0 {
            Some("the archive is empty (0 bytes): nothing was backed up".to_string())
        } else if trailer.manifest_json.len() > MAX_BACKUP_MANIFEST {
            Some(format!(
                "the manifest is {} bytes, over the {MAX_BACKUP_MANIFEST} allowed",
                trailer.manifest_json.len()
            ))
        } else {
            None
        };
        if let Some(why) = mismatch {
            drop(part);
            remove_part(&path);
            self.uploads.forget(&id);
            self.record_failure(who, host, &info, &why).await;
            return Err(Error::DataLoss(why));
        }
        // Should storing fail, a retry (the trailer alone) need not hash the part again.
        self.uploads.keep_hash(&id, size, part.hasher.clone());
        drop(part);
        let archive = objects::archive_key(&info.stack, &info.name, &host.id, &id);
        let manifest = objects::manifest_key(&info.stack, &info.name, &host.id, &id);
        self.objects.put_file(&archive, &path).await?;
        self.objects
            .put_bytes(&manifest, trailer.manifest_json.clone().into_bytes())
            .await?;
        let finished = if trailer.finished_unix_ms != 0 {
            trailer.finished_unix_ms
        } else {
            self.clock.now_ms()
        };
        let plain = if info.content_size != 0 {
            info.content_size
        } else {
            content_size(&trailer.manifest_json)
        };
        let stored = self
            .store
            .change_backup(&id, &|old| {
                if let Some(o) = old
                    && o.state() == pb::BackupState::Complete
                {
                    return Ok(Some(o.clone()));
                }
                let mut b = merge_from_agent(old, &info, host, pb::BackupState::Complete)
                    .unwrap_or_default();
                b.size = size;
                b.sha256 = sha.clone();
                b.uploaded = size;
                b.finished_unix_ms = finished;
                b.content_size = plain;
                b.reason.clear();
                Ok(Some(b))
            })
            .await
            .doing("storing the backup catalog")?
            .ok_or_else(|| Error::Internal(format!("backup {id} vanished while recorded")))?;
        remove_part(&path);
        self.uploads.forget(&id);
        tracing::info!(%id, host = %host.name, size, sha256 = %sha, "backup complete");
        self.audit
            .record::<()>(
                who,
                "backup.complete",
                &format!("{id} on {} ({size} bytes, sha256 {sha})", host.name),
                &Ok(()),
            )
            .await;
        self.finish_run_jobs(&id, pb::BackupJobState::Succeeded, "")
            .await;
        self.retain(&stored.stack, &stored.name, &stored.host_id)
            .await;
        Ok(stored)
    }
}
