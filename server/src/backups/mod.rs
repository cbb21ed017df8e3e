//! Backups on the server: the catalog, archives received from agents and kept in the backup
//! store, jobs (run, restore, verify) given to hosts as signed orders, downloads, and retention.
//!
//! ```text
//! agent ──Backups.Report──▶ catalog (sled `backups`): running, pending upload, failed, missed
//! agent ──Backups.Upload──▶ <data-dir>/backups-incoming/<id>.part ──size+sha256 checked──▶
//!        backup store (objects.rs) ──▶ catalog: complete ──▶ retention (retention.rs)
//! operator ──RunBackup/RestoreBackup/VerifyBackup──▶ job (sled `backup_jobs`) + signed order
//!        (sled `backup_orders`) ──▶ the host's session now, or when it next connects
//! agent ──Backups.Report(job)──▶ job progress and outcome (a verify's result on the backup)
//! agent/operator ──Download──▶ the stored archive from an offset
//! ```
//!
//! Rules: a backup is complete only when the server holds the whole archive, has checked its
//! size and sha256 against what the agent says, and has stored it (archive and manifest); a
//! complete backup is never changed back by a report. Every failure is recorded with its reason
//! and audited. Catalog records change only by compare-and-swap ([`Store::change_backup`]); the
//! checks that span records (a restore being ordered vs the backup being removed or expired) are
//! made under [`Backups`]' own lock.

pub mod objects;
pub mod retention;
pub mod service;

pub mod jobs;
mod upload;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use noco_compose::backups::{Retention, valid_backup_name};
use noco_proto::limits::MAX_BACKUP_CHUNK;
use noco_proto::v1 as pb;
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::audit::{Audit, Who};
use crate::clock::Clock;
use crate::desired::{self, SigningKeys};
use crate::error::{Doing, Error, Result};
use crate::registry::Registry;
use crate::store::{HostRecord, StackRecord, Store};
use objects::Objects;

pub use jobs::ORDER_TTL;

/// What the server needs to keep backups (from `noco-server run`'s flags).
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub objects: Arc<Objects>,
    /// Where uploads are received (`<data-dir>/backups-incoming`).
    pub incoming: PathBuf,
    /// The largest archive taken (`--backup-max-size`).
    pub max_size: u64,
}

impl BackupSettings {
    /// An in-memory store and a receiving directory under `dir` (tests).
    pub fn for_tests(dir: &std::path::Path) -> BackupSettings {
        BackupSettings {
            objects: Arc::new(Objects::in_memory()),
            incoming: dir.join("backups-incoming"),
            max_size: 100 << 30,
        }
    }
}

/// The default `--backup-max-size`.
pub const DEFAULT_MAX_SIZE: u64 = 100 << 30;

/// How often orders are checked for expiry.
const DRIVER_TICK: Duration = Duration::from_secs(5);
/// Finished jobs are forgotten this long after they finished.
const JOB_HISTORY_MS: i64 = 30 * 24 * 3600 * 1000;

/// A part no upload has added to for this long is removed (its backup recorded failed).
const PART_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest text kept from an agent's record (reasons, phases).
const MAX_TEXT: usize = 4096;

fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A backup id safe as a file name and an object key segment: 1–200 of `A-Z a-z 0-9 . _ -`,
/// not starting with a dot.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{id:?} is not a backup id (<stack>.<name>.<yyyymmddThhmmssZ>.<8 hex>)"
        )))
    }
}

/// A backup record from an agent names a valid stack and backup, and its id is theirs.
fn check_record(info: &pb::BackupInfo) -> Result<()> {
    check_id(&info.id)?;
    crate::names::check_stack_name(&info.stack)?;
    if !valid_backup_name(&info.name) {
        return Err(Error::Invalid(format!(
            "backup {:?}: {:?} is not a backup name",
            info.id, info.name
        )));
    }
    let prefix = format!("{}.{}.", info.stack, info.name);
    if !info.id.starts_with(&prefix) || info.id.len() == prefix.len() {
        return Err(Error::Invalid(format!(
            "backup id {:?} does not start with {prefix:?} (<stack>.<name>.<time>.<random>)",
            info.id
        )));
    }
    Ok(())
}

/// A new backup id: `<stack>.<name>.<yyyymmddThhmmssZ>.<8 hex>`.
pub fn new_id(stack: &str, name: &str, now_ms: i64) -> String {
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms).unwrap_or_default();
    format!(
        "{stack}.{name}.{}.{}",
        time.format("%Y%m%dT%H%M%SZ"),
        noco_certs::random_hex::<4>()
    )
}

fn state_text(s: pb::BackupState) -> &'static str {
    noco_proto::Enumeration::text(s)
}

/// How a backup's record changes on what its agent says about it (a report, or an upload's
/// header): `None` keeps it as it is — a complete backup is never changed back. The agent's
/// fields are taken (texts clipped); what the server owns (host, uploaded bytes, size and
/// checksum, the latest verify) is kept.
pub fn merge_from_agent(
    existing: Option<&pb::BackupInfo>,
    incoming: &pb::BackupInfo,
    host: &HostRecord,
    state: pb::BackupState,
) -> Option<pb::BackupInfo> {
    if existing.is_some_and(|e| e.state() == pb::BackupState::Complete) {
        return None;
    }
    let kept = existing.cloned().unwrap_or_default();
    let failed = matches!(state, pb::BackupState::Failed | pb::BackupState::Missed);
    Some(pb::BackupInfo {
        id: incoming.id.clone(),
        stack: incoming.stack.clone(),
        name: incoming.name.clone(),
        host_id: host.id.clone(),
        host: host.name.clone(),
        revision: clip(&incoming.revision, 256),
        kind: incoming.kind,
        state: state.into(),
        started_unix_ms: incoming.started_unix_ms,
        finished_unix_ms: if failed { incoming.finished_unix_ms } else { 0 },
        size: 0,
        sha256: String::new(),
        reason: if failed {
            clip(&incoming.reason, MAX_TEXT)
        } else {
            String::new()
        },
        recipients: incoming
            .recipients
            .iter()
            .take(16)
            .map(|r| clip(r, 256))
            .collect(),
        trigger: clip(&incoming.trigger, 64),
        triggered_by: clip(&incoming.triggered_by, 256),
        manifest_json: String::new(),
        uploaded: kept.uploaded,
        scheduled_unix_ms: incoming.scheduled_unix_ms,
        verified: kept.verified,
        verified_unix_ms: kept.verified_unix_ms,
        verify_reason: kept.verify_reason,
        content_size: incoming.content_size,
    })
}

/// The plain size a manifest declares: the sum of its members' sizes (0 when it says none).
fn content_size(manifest_json: &str) -> u64 {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(manifest_json) else {
        return 0;
    };
    v.get("members")
        .and_then(|m| m.as_array())
        .map(|members| {
            members
                .iter()
                .filter_map(|m| m.get("size").and_then(serde_json::Value::as_u64))
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Debug)]
pub struct Backups {
    store: Arc<dyn Store>,
    keys: Arc<dyn SigningKeys>,
    registry: Arc<Registry>,
    audit: Arc<Audit>,
    clock: Arc<dyn Clock>,
    objects: Arc<Objects>,
    incoming: PathBuf,
    max_size: u64,
    order_ttl: Duration,
    /// Held while a check spans records: ordering a restore or verify (the backup is complete
    /// and stays), removing a backup (no job uses it), retention.
    lock: tokio::sync::Mutex<()>,
    uploads: upload::Uploads,
}

impl Backups {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<dyn SigningKeys>,
        registry: Arc<Registry>,
        audit: Arc<Audit>,
        clock: Arc<dyn Clock>,
        settings: BackupSettings,
    ) -> Backups {
        Backups {
            store,
            keys,
            registry,
            audit,
            clock,
            objects: settings.objects,
            incoming: settings.incoming,
            max_size: settings.max_size,
            order_ttl: ORDER_TTL,
            lock: tokio::sync::Mutex::new(()),
            uploads: upload::Uploads::default(),
        }
    }

    pub fn objects(&self) -> &Arc<Objects> {
        &self.objects
    }

    /// How many backups are being uploaded now.
    pub fn uploads_active(&self) -> usize {
        self.uploads.active_count()
    }

    /// Host names by id (revoked hosts included: their backups stay).
    async fn host_names(&self) -> Result<BTreeMap<String, String>> {
        Ok(crate::wire::host_names(
            &self.store.hosts().await.doing("reading hosts")?,
        ))
    }

    /// A backup as people read it: its host's name filled.
    fn named(mut b: pb::BackupInfo, names: &BTreeMap<String, String>) -> pb::BackupInfo {
        if let Some(n) = names.get(&b.host_id) {
            b.host = n.clone();
        }
        b
    }

    async fn get(&self, id: &str) -> Result<pb::BackupInfo> {
        check_id(id)?;
        self.store
            .backup(id)
            .await
            .doing("reading the backup catalog")?
            .ok_or_else(|| Error::NotFound(format!("no backup {id:?} (nococtl backup ls)")))
    }

    /// `ListBackups`: newest first, host names filled, manifests left out (`GetBackup` has
    /// them).
    pub async fn list(&self, req: &pb::ListBackupsRequest) -> Result<pb::ListBackupsResponse> {
        let hosts = self.store.hosts().await.doing("reading hosts")?;
        let names = crate::wire::host_names(&hosts);
        let host_ids: Option<Vec<&str>> = if req.host.is_empty() {
            None
        } else {
            let ids: Vec<&str> = hosts
                .iter()
                .filter(|h| h.id == req.host || h.name == req.host)
                .map(|h| h.id.as_str())
                .collect();
            if ids.is_empty() {
                return Err(crate::error::not_found(
                    "host",
                    &req.host,
                    hosts
                        .iter()
                        .filter(|h| !h.is_revoked())
                        .map(|h| h.name.as_str()),
                ));
            }
            Some(ids)
        };
        let mut backups: Vec<pb::BackupInfo> = self
            .store
            .backups()
            .await
            .doing("reading the backup catalog")?
            .into_iter()
            .filter(|b| req.stack.is_empty() || b.stack == req.stack)
            .filter(|b| req.name.is_empty() || b.name == req.name)
            .filter(|b| {
                host_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&b.host_id.as_str()))
            })
            .map(|mut b| {
                b.manifest_json.clear();
                Self::named(b, &names)
            })
            .collect();
        backups.sort_by(retention::newest_first);
        Ok(pb::ListBackupsResponse { backups })
    }

    /// `GetBackup`: the record with its host's name and, when complete, its manifest.
    pub async fn show(&self, id: &str) -> Result<pb::BackupInfo> {
        let b = self.get(id).await?;
        let mut b = Self::named(b, &self.host_names().await?);
        if b.state() == pb::BackupState::Complete {
            let key = objects::manifest_key(&b.stack, &b.name, &b.host_id, &b.id);
            match self.objects.get_bytes(&key).await {
                Ok(Some(bytes)) => b.manifest_json = String::from_utf8_lossy(&bytes).into_owned(),
                Ok(None) => tracing::warn!("backup {id}: its manifest {key} is missing"),
                Err(e) => tracing::warn!("backup {id}: reading its manifest: {e}"),
            }
        }
        Ok(b)
    }

    /// What an agent reports about a backup of its own: running, pending upload, failed (with
    /// the reason) or missed (with the time it was scheduled for). Upserted; a complete backup
    /// is never changed back; failures and misses are audited once.
    pub async fn report_backup(
        &self,
        who: &Who,
        host: &HostRecord,
        info: pb::BackupInfo,
    ) -> Result<()> {
        check_record(&info)?;
        if !info.host_id.is_empty() && info.host_id != host.id {
            return Err(Error::Denied(format!(
                "host {} may not report backups of host {}",
                host.name, info.host_id
            )));
        }
        let state = info.state();
        match state {
            pb::BackupState::Running
            | pb::BackupState::PendingUpload
            | pb::BackupState::Failed
            | pb::BackupState::Missed => {}
            pb::BackupState::Complete => {
                return Err(Error::Invalid(
                    "a backup becomes complete when the server holds its archive, checked: upload it".into(),
                ));
            }
            pb::BackupState::Unspecified => {
                return Err(Error::Invalid(format!(
                    "backup {}: the report says no state",
                    info.id
                )));
            }
        }
        let before = self
            .store
            .backup(&info.id)
            .await
            .doing("reading the backup catalog")?;
        if let Some(b) = &before
            && b.host_id != host.id
        {
            return Err(Error::Denied(format!(
                "backup {} belongs to another host",
                info.id
            )));
        }
        let after = self
            .store
            .change_backup(&info.id, &|old| {
                if old.is_some_and(|o| o.host_id != host.id) {
                    return Err(format!("backup {} belongs to another host", info.id));
                }
                Ok(merge_from_agent(old, &info, host, state).or_else(|| old.cloned()))
            })
            .await
            .doing("storing the backup catalog")?;
        let Some(after) = after else {
            return Ok(());
        };
        if after.state() == pb::BackupState::Complete {
            tracing::debug!(id = %info.id, "report of {} for a complete backup: kept complete", state_text(state));
            return Ok(());
        }
        let changed = before.as_ref().is_none_or(|b| b.state() != state);
        if changed && matches!(state, pb::BackupState::Failed | pb::BackupState::Missed) {
            let (action, why) = if state == pb::BackupState::Failed {
                ("backup.failed", after.reason.clone())
            } else {
                let at = crate::clock::rfc3339_ms(after.scheduled_unix_ms);
                (
                    "backup.missed",
                    if after.reason.is_empty() {
                        format!("missed its schedule at {at}")
                    } else {
                        format!("missed its schedule at {at}: {}", after.reason)
                    },
                )
            };
            tracing::warn!(id = %info.id, host = %host.name, "backup {}: {why}", state_text(state));
            self.audit
                .record::<()>(
                    who,
                    action,
                    &format!("{} on {}", info.id, host.name),
                    &Err(Status::unknown(why.clone())),
                )
                .await;
            if state == pb::BackupState::Failed {
                self.finish_run_jobs(&info.id, pb::BackupJobState::Failed, &why)
                    .await;
            }
            self.retain(&after.stack, &after.name, &after.host_id).await;
        }
        Ok(())
    }

    /// Record a backup as failed with its reason (the server found it so), audited.
    async fn record_failure(&self, who: &Who, host: &HostRecord, info: &pb::BackupInfo, why: &str) {
        let now = self.clock.now_ms();
        let mut failed = info.clone();
        failed.reason = why.to_string();
        failed.finished_unix_ms = now;
        let stored = self
            .store
            .change_backup(&info.id, &|old| {
                let mut b = merge_from_agent(old, &failed, host, pb::BackupState::Failed)
                    .or_else(|| old.cloned());
                if let Some(b) = &mut b
                    && b.state() == pb::BackupState::Failed
                {
                    b.uploaded = 0;
                }
                Ok(b)
            })
            .await;
        if let Err(e) = stored {
            tracing::error!("recording backup {} as failed ({why}): {e}", info.id);
        }
        tracing::warn!(id = %info.id, host = %host.name, "backup failed: {why}");
        self.audit
            .record::<()>(
                who,
                "backup.failed",
                &format!("{} on {}", info.id, host.name),
                &Err(Status::unknown(why.to_string())),
            )
            .await;
        self.finish_run_jobs(&info.id, pb::BackupJobState::Failed, why)
            .await;
        self.retain(&info.stack, &info.name, &host.id).await;
    }

    /// The policy in force for a backup of a stack: the stack's current revision's, else that
    /// of `revision` (the one the backup was made from); `None` when neither declares it.
    async fn policy(&self, stack: &str, name: &str, revision: &str) -> Option<Retention> {
        let current = match self.store.stack(stack).await {
            Ok(s) => s.map(|s| s.revision),
            Err(e) => {
                tracing::warn!("retention of {stack}/{name}: reading the stack: {e}");
                None
            }
        };
        for rev in current.iter().map(String::as_str).chain([revision]) {
            if rev.is_empty() {
                continue;
            }
            match self.project_at(stack, rev).await {
                Ok(project) => {
                    if let Some(spec) = project.backups.iter().find(|b| b.name == name) {
                        return Some(spec.retention);
                    }
                }
                Err(e) => tracing::debug!("retention of {stack}/{name}: revision {rev}: {e}"),
            }
        }
        None
    }

    /// The compose project of a stack at a revision, loaded as agents load it.
    async fn project_at(
        &self,
        stack: &str,
        revision: &str,
    ) -> Result<noco_compose::model::Project> {
        let bytes = self
            .store
            .revision(revision)
            .await
            .doing("reading a revision")?
            .ok_or_else(|| Error::NotFound(format!("revision {revision} is not stored")))?;
        let state = pb::StackState::decode(bytes.as_slice())
            .map_err(|e| Error::Internal(format!("revision {revision} does not decode: {e}")))?;
        Ok(crate::stacks::load_state(stack, &state)?.project)
    }

    /// The backups a stack's revision declares, by name.
    pub async fn declared(&self, stack: &str, revision: &str) -> Result<Vec<String>> {
        Ok(self
            .project_at(stack, revision)
            .await?
            .backups
            .into_iter()
            .map(|b| b.name)
            .collect())
    }

    /// The stack's current revision's project.
    async fn project_of(&self, stack: &StackRecord) -> Result<noco_compose::model::Project> {
        self.project_at(&stack.name, &stack.revision).await
    }

    /// The hosts a stack is assigned to now (their current desired state holds it).
    pub async fn hosts_running(&self, stack: &str) -> Result<Vec<HostRecord>> {
        let stacks = self.store.stacks().await.doing("reading stacks")?;
        let pins = desired::pins(&*self.store, &stacks).await?;
        Ok(self
            .store
            .hosts()
            .await
            .doing("reading hosts")?
            .into_iter()
            .filter(|h| {
                !h.is_revoked()
                    && desired::assignment(&stacks, h, &pins)
                        .iter()
                        .any(|(n, _)| n == stack)
            })
            .collect())
    }

    /// Apply retention to one group (stack, backup, host): delete what it expires, the objects
    /// first, then the catalog entry; a backup being restored or verified stays. Failures are
    /// logged (an upload that succeeded stays a success).
    async fn retain(&self, stack: &str, name: &str, host_id: &str) {
        match self.apply_retention(stack, name, host_id).await {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => tracing::info!(
                "retention of {stack}/{name} on {host_id}: removed {}",
                gone.join(", ")
            ),
            Err(e) => tracing::error!("retention of {stack}/{name} on {host_id}: {e}"),
        }
    }

    /// [`Self::retain`], returning the ids removed.
    pub async fn apply_retention(
        &self,
        stack: &str,
        name: &str,
        host_id: &str,
    ) -> Result<Vec<String>> {
        let _lock = self.lock.lock().await;
        let group: Vec<pb::BackupInfo> = self
            .store
            .backups()
            .await
            .doing("reading the backup catalog")?
            .into_iter()
            .filter(|b| b.stack == stack && b.name == name && b.host_id == host_id)
            .collect();
        let newest_revision = group
            .iter()
            .filter(|b| b.state() == pb::BackupState::Complete)
            .min_by(|a, b| retention::newest_first(a, b))
            .map(|b| b.revision.clone())
            .unwrap_or_default();
        let policy = self.policy(stack, name, &newest_revision).await;
        if policy.is_none() && group.iter().any(|b| b.state() == pb::BackupState::Complete) {
            tracing::debug!(
                "retention of {stack}/{name}: no revision declares it any more; complete backups are kept"
            );
        }
        let expired = retention::expired(&group, policy.as_ref());
        let busy = self.busy_backups().await?;
        let mut gone = Vec::new();
        for id in expired {
            if busy.contains_key(&id) {
                continue;
            }
            let Some(b) = group.iter().find(|b| b.id == id) else {
                continue;
            };
            self.delete_objects(b).await?;
            self.store
                .change_backup(&id, &|_| Ok(None))
                .await
                .doing("storing the backup catalog")?;
            let what = if b.state() == pb::BackupState::Complete {
                "backup.expire"
            } else {
                "backup.expire-record"
            };
            self.audit
                .record::<()>(&Who::named("retention"), what, &id, &Ok(()))
                .await;
            gone.push(id);
        }
        Ok(gone)
    }

    /// A backup's archive and manifest, deleted from the store.
    async fn delete_objects(&self, b: &pb::BackupInfo) -> Result<()> {
        self.objects
            .delete(&objects::archive_key(&b.stack, &b.name, &b.host_id, &b.id))
            .await?;
        self.objects
            .delete(&objects::manifest_key(&b.stack, &b.name, &b.host_id, &b.id))
            .await
    }

    /// Stream a complete backup's archive from `offset`, in pieces of at most
    /// [`MAX_BACKUP_CHUNK`]; the first carries the size and sha256 the catalog holds. For an
    /// agent (`host`), only a backup it has a restore or verify of pending or running.
    pub async fn download(
        &self,
        id: &str,
        offset: u64,
        host: Option<&HostRecord>,
    ) -> Result<ReceiverStream<std::result::Result<pb::BackupDownloadChunk, Status>>> {
        let b = self.get(id).await?;
        if b.state() != pb::BackupState::Complete {
            return Err(Error::Precondition(format!(
                "backup {id} is {}: only a complete backup can be downloaded",
                state_text(b.state())
            )));
        }
        if let Some(host) = host {
            let jobs = self.store.backup_jobs().await.doing("reading jobs")?;
            let allowed = jobs.iter().any(|j| {
                j.backup_id == id
                    && j.host_id == host.id
                    && matches!(
                        j.kind(),
                        pb::BackupJobKind::Restore | pb::BackupJobKind::Verify
                    )
                    && matches!(
                        j.state(),
                        pb::BackupJobState::Pending | pb::BackupJobState::Running
                    )
            });
            if !allowed {
                return Err(Error::Denied(format!(
                    "host {} has no restore or verify of backup {id} in progress",
                    host.name
                )));
            }
        }
        if offset > b.size {
            return Err(Error::OutOfRange(format!(
                "offset {offset} is past the end of backup {id} ({} bytes)",
                b.size
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let first = pb::BackupDownloadChunk {
            data: Vec::new(),
            size: b.size,
            sha256: b.sha256.clone(),
        };
        if offset == b.size {
            let _ = tx.send(Ok(first)).await;
            return Ok(ReceiverStream::new(rx));
        }
        let key = objects::archive_key(&b.stack, &b.name, &b.host_id, &b.id);
        let mut stream = self.objects.read_from(&key, offset).await?;
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut head = Some(first);
            let mut sent = offset;
            while let Some(piece) = stream.next().await {
                let bytes = match piece {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                for part in bytes.chunks(MAX_BACKUP_CHUNK) {
                    let mut chunk = head.take().unwrap_or_default();
                    chunk.data = part.to_vec();
                    sent += part.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            }
            if sent != b.size {
                let _ = tx
                    .send(Err(Status::data_loss(format!(
                        "the stored archive of backup {} ended at {sent} bytes; the catalog says {}",
                        b.id, b.size
                    ))))
                    .await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// The task that fails the jobs of orders that expired undelivered or unstarted, and
    /// (hourly) forgets jobs finished long ago and removes uploads abandoned for a week.
    pub fn spawn_driver(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DRIVER_TICK);
            let mut rounds = 0u64;
            loop {
                tick.tick().await;
                if let Err(e) = self.expire_orders().await {
                    tracing::error!("expiring backup orders: {e}");
                }
                if rounds.is_multiple_of(720) {
                    if let Err(e) = self.prune_jobs().await {
                        tracing::error!("pruning backup jobs: {e}");
                    }
                    match self.prune_parts(PART_MAX_AGE).await {
                        Ok(ids) if ids.is_empty() => {}
                        Ok(ids) => tracing::warn!(
                            "removed uploads abandoned for {}: {}",
                            humantime::format_duration(PART_MAX_AGE),
                            ids.join(", ")
                        ),
                        Err(e) => tracing::error!("pruning abandoned uploads: {e}"),
                    }
                }
                rounds += 1;
            }
        });
    }
}
