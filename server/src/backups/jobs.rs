//! Jobs: what a host is told to do now — run a backup, restore one, verify one — as an order
//! signed with the server's state-signing key (`noco_certs::order`), and how it went.
//!
//! An order is stored with its job before it is handed to the host's live session; a host that
//! is offline gets its pending orders when its session starts (after its desired state), and
//! again at every reconnect until it reports the job started (agents do each order id once).
//! An order that expires before its job started fails the job: "host offline until the order
//! expired" when it was never delivered. A job's outcome is its host's to report; a verify's
//! outcome is recorded on the backup.

use std::collections::HashMap;
use std::time::Duration;

use noco_compose::backups::BackupSpec;
use noco_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use super::{Backups, JOB_HISTORY_MS, MAX_TEXT, check_id, clip, new_id, objects, state_text};
use crate::audit::Who;
use crate::error::{Doing, Error, Result};
use crate::store::{HostRecord, PendingOrder};

/// How long an order is valid.
pub const ORDER_TTL: Duration = Duration::from_secs(3600);

/// Who asked for a job.
#[derive(Debug, Clone)]
pub struct Requester {
    /// How the job records the caller (`operator alice (deployer)`).
    pub caller: String,
    /// `manual`, `rollout`.
    pub trigger: String,
    /// The operator's name, or the rollout's id.
    pub triggered_by: String,
}

fn finished(s: pb::BackupJobState) -> bool {
    matches!(
        s,
        pb::BackupJobState::Succeeded | pb::BackupJobState::Failed
    )
}

fn kind_text(k: pb::BackupJobKind) -> &'static str {
    noco_proto::Enumeration::text(k)
}

fn job_text(j: &pb::BackupJob) -> String {
    let host = if j.host.is_empty() {
        &j.host_id
    } else {
        &j.host
    };
    format!(
        "{} {} on {host} (job {})",
        kind_text(j.kind()),
        j.backup_id,
        j.id
    )
}

impl Backups {
    /// A job's record as people read it (the host's name filled).
    pub async fn job(&self, id: &str) -> Result<pb::BackupJob> {
        check_id(id)?;
        let mut job = self
            .store
            .backup_job(id)
            .await
            .doing("reading jobs")?
            .ok_or_else(|| Error::NotFound(format!("no backup job {id:?}")))?;
        if let Some(n) = self.host_names().await?.get(&job.host_id) {
            job.host = n.clone();
        }
        Ok(job)
    }

    /// Backups a restore or verify is pending or running for, with the job that uses each.
    pub(super) async fn busy_backups(&self) -> Result<HashMap<String, pb::BackupJob>> {
        Ok(self
            .store
            .backup_jobs()
            .await
            .doing("reading jobs")?
            .into_iter()
            .filter(|j| {
                matches!(
                    j.kind(),
                    pb::BackupJobKind::Restore | pb::BackupJobKind::Verify
                ) && !finished(j.state())
            })
            .map(|j| (j.backup_id.clone(), j))
            .collect())
    }

    /// `RunBackup`: one job per (host, backup) — every backup the stack's current revision
    /// declares, or the one named; on every host the stack is assigned to, or those named.
    pub async fn run(&self, who: &Requester, req: pb::RunBackupRequest) -> Result<pb::BackupJobs> {
        let stack = self.store.stack(&req.stack).await.doing("reading stacks")?;
        let Some(stack) = stack else {
            let stacks = self.store.stacks().await.doing("reading stacks")?;
            return Err(crate::error::not_found(
                "stack",
                &req.stack,
                stacks.iter().map(|s| s.name.as_str()),
            ));
        };
        let project = self.project_of(&stack).await?;
        let specs = pick(&stack.name, &project.backups, &req.name)?;
        let running = self.hosts_running(&stack.name).await?;
        if running.is_empty() {
            return Err(Error::Precondition(format!(
                "no host runs stack {} (its selector matches none)",
                stack.name
            )));
        }
        let hosts = if req.hosts.is_empty() {
            running
        } else {
            let mut out: Vec<HostRecord> = Vec::new();
            for name in &req.hosts {
                let host = self.find_host(name).await?;
                if !running.iter().any(|h| h.id == host.id) {
                    let mut on: Vec<&str> = running.iter().map(|h| h.name.as_str()).collect();
                    on.sort();
                    return Err(Error::Precondition(format!(
                        "host {} does not run stack {} (it runs on {})",
                        host.name,
                        stack.name,
                        on.join(", ")
                    )));
                }
                if !out.iter().any(|h| h.id == host.id) {
                    out.push(host);
                }
            }
            out
        };
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let jobs = self.order_runs(&stack.name, &names, &hosts, who).await?;
        Ok(pb::BackupJobs { jobs })
    }

    /// Order backups `names` of `stack` on `hosts` (checked by the caller): one RUN job each.
    pub async fn order_runs(
        &self,
        stack: &str,
        names: &[String],
        hosts: &[HostRecord],
        who: &Requester,
    ) -> Result<Vec<pb::BackupJob>> {
        let mut jobs = Vec::new();
        for host in hosts {
            for name in names {
                let now = self.clock.now_ms();
                let backup_id = new_id(stack, name, now);
                let job = pb::BackupJob {
                    id: noco_certs::random_hex::<8>(),
                    kind: pb::BackupJobKind::Run.into(),
                    state: pb::BackupJobState::Pending.into(),
                    host_id: host.id.clone(),
                    host: host.name.clone(),
                    stack: stack.to_string(),
                    name: name.clone(),
                    backup_id: backup_id.clone(),
                    percent: -1,
                    created_unix_ms: now,
                    caller: who.caller.clone(),
                    ..Default::default()
                };
                let what = pb::order::What::RunBackup(pb::RunBackupOrder {
                    stack: stack.to_string(),
                    name: name.clone(),
                    backup_id,
                    trigger: who.trigger.clone(),
                    triggered_by: who.triggered_by.clone(),
                });
                jobs.push(self.issue(job, what).await?);
            }
        }
        Ok(jobs)
    }

    /// A host by name (not revoked) or id.
    async fn find_host(&self, name_or_id: &str) -> Result<HostRecord> {
        if let Some(h) = self
            .store
            .find_host(name_or_id)
            .await
            .doing("reading hosts")?
            && !h.is_revoked()
        {
            return Ok(h);
        }
        let hosts = self.store.hosts().await.doing("reading hosts")?;
        Err(crate::error::not_found(
            "host",
            name_or_id,
            hosts
                .iter()
                .filter(|h| !h.is_revoked())
                .map(|h| h.name.as_str()),
        ))
    }

    /// `RestoreBackup` (`kind` restore) and `VerifyBackup` (`kind` verify): a complete backup,
    /// on its own host or another (`to_host`) that runs its stack.
    pub async fn restore(
        &self,
        who: &Requester,
        kind: pb::BackupJobKind,
        id: &str,
        to_host: &str,
    ) -> Result<pb::BackupJob> {
        let _lock = self.lock.lock().await;
        let b = self.get(id).await?;
        let verb = if kind == pb::BackupJobKind::Verify {
            "verified"
        } else {
            "restored"
        };
        if b.state() != pb::BackupState::Complete {
            return Err(Error::Precondition(format!(
                "backup {id} is {}: only a complete backup can be {verb}",
                state_text(b.state())
            )));
        }
        let target = if to_host.is_empty() {
            match self.store.host(&b.host_id).await.doing("reading hosts")? {
                Some(h) if !h.is_revoked() => h,
                _ => {
                    return Err(Error::Precondition(format!(
                        "the host backup {id} was made on is gone (revoked): name a host running stack {} to restore it to",
                        b.stack
                    )));
                }
            }
        } else {
            self.find_host(to_host).await?
        };
        let running = self.hosts_running(&b.stack).await?;
        if !running.iter().any(|h| h.id == target.id) {
            return Err(Error::Precondition(format!(
                "host {} does not run stack {}: a backup is {verb} on a host running its stack",
                target.name, b.stack
            )));
        }
        let jobs = self.store.backup_jobs().await.doing("reading jobs")?;
        if let Some(j) = jobs.iter().find(|j| {
            kind == pb::BackupJobKind::Restore
                && j.kind() == pb::BackupJobKind::Restore
                && j.host_id == target.id
                && j.stack == b.stack
                && !finished(j.state())
        }) {
            return Err(Error::Precondition(format!(
                "host {} is restoring stack {} already ({}): wait for it to finish",
                target.name,
                b.stack,
                job_text(j)
            )));
        }
        let now = self.clock.now_ms();
        // The order carries the manifest, signed: the host checks every member it restores
        // against it.
        let mut backup = b.clone();
        let key = objects::manifest_key(&b.stack, &b.name, &b.host_id, &b.id);
        backup.manifest_json = match self.objects.get_bytes(&key).await {
            Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|_| {
                Error::Precondition(format!("backup {id}: its manifest {key} is not UTF-8"))
            })?,
            Ok(None) => {
                return Err(Error::Precondition(format!(
                    "backup {id}: its manifest {key} is missing from the backup store; it cannot be {verb} without it"
                )));
            }
            Err(e) => {
                return Err(Error::Internal(format!(
                    "backup {id}: reading its manifest {key}: {e}"
                )));
            }
        };
        if let Some(h) = self.store.host(&b.host_id).await.doing("reading hosts")? {
            backup.host = h.name;
        }
        let job = pb::BackupJob {
            id: noco_certs::random_hex::<8>(),
            kind: kind.into(),
            state: pb::BackupJobState::Pending.into(),
            host_id: target.id.clone(),
            host: target.name.clone(),
            stack: b.stack.clone(),
            name: b.name.clone(),
            backup_id: b.id.clone(),
            percent: -1,
            created_unix_ms: now,
            caller: who.caller.clone(),
            ..Default::default()
        };
        let order = pb::RestoreBackupOrder {
            backup: Some(backup),
        };
        let what = if kind == pb::BackupJobKind::Verify {
            pb::order::What::Verify(order)
        } else {
            pb::order::What::Restore(order)
        };
        self.issue(job, what).await
    }

    /// `RemoveBackup`: its objects, then its catalog entry. Refused while it is being restored
    /// or verified, or uploaded.
    pub async fn remove(&self, id: &str) -> Result<pb::BackupInfo> {
        let _lock = self.lock.lock().await;
        let b = self.get(id).await?;
        if let Some(j) = self.busy_backups().await?.get(id) {
            return Err(Error::Precondition(format!(
                "backup {id} is in use ({}, {}): wait for it to finish",
                job_text(j),
                noco_proto::Enumeration::text(j.state())
            )));
        }
        if self.uploads.is_active(id) {
            return Err(Error::Busy(format!(
                "backup {id} is being uploaded: try again when the upload ends"
            )));
        }
        self.delete_objects(&b).await?;
        let part = self.part_path(id);
        if let Err(e) = std::fs::remove_file(&part)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("removing {}: {e}", part.display());
        }
        self.uploads.forget(id);
        self.store
            .change_backup(id, &|_| Ok(None))
            .await
            .doing("storing the backup catalog")?;
        Ok(Self::named(b, &self.host_names().await?))
    }

    /// Store a new job with its signed order, and hand the order to the host's session.
    async fn issue(&self, job: pb::BackupJob, what: pb::order::What) -> Result<pb::BackupJob> {
        let now = self.clock.now_ms();
        let order = pb::Order {
            host_id: job.host_id.clone(),
            id: job.id.clone(),
            issued_unix_ms: now,
            expires_unix_ms: now + self.order_ttl.as_millis() as i64,
            what: Some(what),
        };
        let signed = noco_certs::order::sign(&self.keys.signer(), &order);
        if signed.payload.len() > noco_certs::order::MAX_ORDER {
            return Err(Error::Internal(format!(
                "an order of {} bytes, over what agents take",
                signed.payload.len()
            )));
        }
        self.store
            .change_backup_job(&job.id, &|old| match old {
                Some(_) => Err(format!("job id {} is taken", job.id)),
                None => Ok(Some(job.clone())),
            })
            .await
            .doing("storing the job")?;
        let mut pending = PendingOrder {
            job_id: job.id.clone(),
            host_id: job.host_id.clone(),
            expires_ms: order.expires_unix_ms,
            delivered_ms: None,
            signed_hex: hex::encode(signed.encode_to_vec()),
        };
        self.store
            .put_order(&pending)
            .await
            .doing("storing the order")?;
        if self.registry.send_order(&job.host_id, signed) {
            pending.delivered_ms = Some(now);
            self.store
                .put_order(&pending)
                .await
                .doing("storing the order")?;
        }
        tracing::info!(job = %job.id, host = %job.host, "ordered {}", job_text(&job));
        Ok(job)
    }

    /// The orders waiting for a host whose session is starting, oldest first (marked
    /// delivered). Failures are logged: the session goes on without them.
    pub async fn pending_orders(&self, host_id: &str) -> Vec<pb::SignedOrder> {
        match self.take_pending(host_id).await {
            Ok(orders) => orders,
            Err(e) => {
                tracing::error!("reading the orders of host {host_id}: {e}");
                Vec::new()
            }
        }
    }

    async fn take_pending(&self, host_id: &str) -> Result<Vec<pb::SignedOrder>> {
        let now = self.clock.now_ms();
        let mut orders: Vec<PendingOrder> = self
            .store
            .orders()
            .await
            .doing("reading orders")?
            .into_iter()
            .filter(|o| o.host_id == host_id && o.expires_ms > now)
            .collect();
        orders.sort_by_key(|o| o.expires_ms);
        let mut out = Vec::new();
        for mut o in orders {
            let job = self
                .store
                .backup_job(&o.job_id)
                .await
                .doing("reading jobs")?;
            if job.is_none_or(|j| j.state() != pb::BackupJobState::Pending) {
                continue;
            }
            let signed = hex::decode(&o.signed_hex)
                .ok()
                .and_then(|b| pb::SignedOrder::decode(b.as_slice()).ok())
                .ok_or_else(|| Error::Internal(format!("order {} does not decode", o.job_id)))?;
            o.delivered_ms = Some(now);
            self.store.put_order(&o).await.doing("storing the order")?;
            out.push(signed);
        }
        Ok(out)
    }

    /// Fail the jobs whose orders expired before they started; forget orders whose jobs
    /// started. Returns how many jobs failed.
    pub async fn expire_orders(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let mut failed = 0;
        for o in self.store.orders().await.doing("reading orders")? {
            let job = self
                .store
                .backup_job(&o.job_id)
                .await
                .doing("reading jobs")?;
            match job {
                Some(j) if j.state() == pb::BackupJobState::Pending => {
                    if o.expires_ms > now {
                        continue;
                    }
                    let why = if o.delivered_ms.is_none() {
                        "host offline until the order expired".to_string()
                    } else {
                        "the host did not start the order before it expired".to_string()
                    };
                    if self
                        .finish_job(&o.job_id, pb::BackupJobState::Failed, &why)
                        .await?
                        .is_some()
                    {
                        failed += 1;
                    }
                }
                _ => {}
            }
            self.store
                .remove_order(&o.job_id)
                .await
                .doing("removing an order")?;
        }
        Ok(failed)
    }

    /// Forget jobs that finished over [`JOB_HISTORY_MS`] ago.
    pub(super) async fn prune_jobs(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let mut n = 0;
        for j in self.store.backup_jobs().await.doing("reading jobs")? {
            if finished(j.state()) && j.finished_unix_ms + JOB_HISTORY_MS < now {
                self.store
                    .change_backup_job(&j.id, &|_| Ok(None))
                    .await
                    .doing("removing a job")?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Finish a job that is not finished yet (the server's own judgment: an order expired, the
    /// backup a RUN job makes completed or failed). Returns the job when this finished it.
    async fn finish_job(
        &self,
        id: &str,
        state: pb::BackupJobState,
        why: &str,
    ) -> Result<Option<pb::BackupJob>> {
        let now = self.clock.now_ms();
        let before = self.store.backup_job(id).await.doing("reading jobs")?;
        if before.as_ref().is_none_or(|j| finished(j.state())) {
            return Ok(None);
        }
        let after = self
            .store
            .change_backup_job(id, &|old| {
                Ok(old.map(|o| {
                    let mut j = o.clone();
                    if !finished(j.state()) {
                        j.state = state.into();
                        j.reason = why.to_string();
                        j.finished_unix_ms = now;
                        if state == pb::BackupJobState::Succeeded {
                            j.percent = 100;
                        }
                    }
                    j
                }))
            })
            .await
            .doing("storing the job")?;
        self.store
            .remove_order(id)
            .await
            .doing("removing an order")?;
        if let Some(j) = &after {
            self.job_outcome(&Who::named("server"), j).await;
        }
        Ok(after)
    }

    /// Finish the RUN jobs that make backup `backup_id` (its upload completed or it failed).
    pub(super) async fn finish_run_jobs(
        &self,
        backup_id: &str,
        state: pb::BackupJobState,
        why: &str,
    ) {
        let jobs = match self.store.backup_jobs().await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!("reading jobs: {e}");
                return;
            }
        };
        for j in jobs.iter().filter(|j| {
            j.backup_id == backup_id && j.kind() == pb::BackupJobKind::Run && !finished(j.state())
        }) {
            if let Err(e) = self.finish_job(&j.id, state, why).await {
                tracing::error!("finishing job {}: {e}", j.id);
            }
        }
    }

    /// The audit record of a job's outcome; a verify's outcome goes on its backup too.
    async fn job_outcome(&self, who: &Who, j: &pb::BackupJob) {
        let outcome: std::result::Result<(), Status> = if j.state() == pb::BackupJobState::Succeeded
        {
            Ok(())
        } else {
            Err(Status::unknown(j.reason.clone()))
        };
        self.audit
            .record(who, "backup.job", &job_text(j), &outcome)
            .await;
        if j.kind() == pb::BackupJobKind::Verify {
            let ok = j.state() == pb::BackupJobState::Succeeded;
            let result = self
                .store
                .change_backup(&j.backup_id, &|old| {
                    Ok(old.map(|o| {
                        let mut b = o.clone();
                        b.verified = if ok { "ok" } else { "failed" }.to_string();
                        b.verified_unix_ms = j.finished_unix_ms;
                        b.verify_reason = j.reason.clone();
                        b
                    }))
                })
                .await;
            if let Err(e) = result {
                tracing::error!("recording the verify of {}: {e}", j.backup_id);
            }
        }
    }

    /// What an agent reports about a job given to its host: progress (phase, percent) and the
    /// outcome. A finished job stays as it finished.
    pub async fn report_job(&self, who: &Who, host: &HostRecord, job: pb::BackupJob) -> Result<()> {
        check_id(&job.id)?;
        let stored = self
            .store
            .backup_job(&job.id)
            .await
            .doing("reading jobs")?
            .ok_or_else(|| Error::NotFound(format!("no backup job {:?}", job.id)))?;
        if stored.host_id != host.id {
            return Err(Error::Denied(format!(
                "job {} was given to another host",
                job.id
            )));
        }
        let state = job.state();
        if !matches!(
            state,
            pb::BackupJobState::Running
                | pb::BackupJobState::Succeeded
                | pb::BackupJobState::Failed
        ) {
            return Err(Error::Invalid(format!(
                "job {}: a report says running, succeeded or failed, not {}",
                job.id,
                noco_proto::Enumeration::text(state)
            )));
        }
        if finished(stored.state()) {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let after = self
            .store
            .change_backup_job(&job.id, &|old| {
                let Some(old) = old else {
                    return Err(format!("job {} vanished", job.id));
                };
                let mut j = old.clone();
                if finished(j.state()) {
                    return Ok(Some(j));
                }
                j.state = state.into();
                j.phase = clip(&job.phase, 256);
                j.percent = job.percent.clamp(-1, 100);
                if finished(state) {
                    j.reason = clip(&job.reason, MAX_TEXT);
                    j.finished_unix_ms = if job.finished_unix_ms != 0 {
                        job.finished_unix_ms
                    } else {
                        now
                    };
                }
                Ok(Some(j))
            })
            .await
            .doing("storing the job")?;
        // Started (or done): no need to send the order again.
        self.store
            .remove_order(&job.id)
            .await
            .doing("removing an order")?;
        if let Some(j) = after
            && finished(j.state())
        {
            let mut j = j;
            j.host = host.name.clone();
            self.job_outcome(who, &j).await;
        }
        Ok(())
    }
}

/// The backups a RUN names: every one declared (`name` empty), or the one named.
fn pick<'a>(stack: &str, declared: &'a [BackupSpec], name: &str) -> Result<Vec<&'a BackupSpec>> {
    if declared.is_empty() {
        return Err(Error::Precondition(format!(
            "stack {stack} declares no backups (x-noco.backups in its compose file)"
        )));
    }
    if name.is_empty() {
        return Ok(declared.iter().collect());
    }
    match declared.iter().find(|s| s.name == name) {
        Some(s) => Ok(vec![s]),
        None => Err(crate::error::not_found(
            &format!("backup in stack {stack}"),
            name,
            declared.iter().map(|s| s.name.as_str()),
        )),
    }
}
