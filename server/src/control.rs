//! The Control service: what operators do through nococtl. Access is decided by the auth layer
//! ([`crate::auth::POLICY`]); every mutating call here is written to the audit log with its
//! outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use noco_certs::token::Token;
use noco_certs::{Identity, Role, random_hex};
use noco_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::core::Core;
use crate::error::{Doing, Error};
use crate::names;
use crate::store::{OperatorRecord, OperatorStatus, TokenKind, TokenRecord};
use crate::telemetry::query::{LogQuery, LogsStream};
use crate::telemetry::top::resolve_hosts;
use crate::wire;

pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_AUDIT: u32 = 10_000;

#[derive(Debug, Clone)]
pub struct ControlSvc {
    pub core: Arc<Core>,
}

fn ttl(seconds: u64) -> Result<Duration, Error> {
    let ttl = if seconds == 0 {
        DEFAULT_TOKEN_TTL
    } else {
        Duration::from_secs(seconds)
    };
    if ttl > MAX_TOKEN_TTL {
        return Err(Error::Invalid(format!(
            "a token may live at most {}, not {}",
            humantime::format_duration(MAX_TOKEN_TTL),
            humantime::format_duration(ttl)
        )));
    }
    Ok(ttl)
}

impl ControlSvc {
    /// "no operator named …", with the nearest existing name.
    async fn no_operator(&self, name: &str) -> Error {
        match self.core.store.operators().await {
            Ok(ops) => crate::error::not_found(
                "operator",
                name,
                ops.iter()
                    .filter(|o| o.status != OperatorStatus::Revoked)
                    .map(|o| o.name.as_str()),
            ),
            Err(e) => Error::from_store("reading operators", e),
        }
    }

    async fn new_token(
        &self,
        kind: TokenKind,
        ttl: Duration,
        caller: &Caller,
        description: String,
    ) -> Result<(Token, TokenRecord), Error> {
        let token = Token::generate(&self.core.pki.ca.fingerprint());
        let now = self.core.now_ms();
        let record = TokenRecord {
            id: token.id.clone(),
            kind,
            secret_hash: token.secret_hash(),
            created_ms: now,
            expires_ms: now + ttl.as_millis() as i64,
            created_by: caller.describe(),
            description,
            used_ms: None,
        };
        self.core
            .store
            .insert_token(&record)
            .await
            .doing("storing token")?;
        Ok((token, record))
    }

    async fn create_token(
        &self,
        caller: &Caller,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, Error> {
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        names::check_labels(&labels)?;
        if req.description.len() > 256 {
            return Err(Error::Invalid(
                "a token description is at most 256 bytes".into(),
            ));
        }
        let (token, record) = self
            .new_token(
                TokenKind::Join { labels },
                ttl(req.ttl_seconds)?,
                caller,
                req.description,
            )
            .await?;
        Ok(pb::CreateTokenResponse {
            token: token.to_string(),
            token_id: token.id,
            expires_unix_ms: record.expires_ms,
        })
    }

    async fn label_host(&self, req: pb::LabelHostRequest) -> Result<pb::Host, Error> {
        let set: BTreeMap<String, String> = req.set.into_iter().collect();
        let host = self.core.hosts.label(&req.host, set, &req.remove).await?;
        Ok(wire::host_to_wire(
            &host,
            self.core.registry.online(&host.id),
        ))
    }

    async fn revoke_host(
        &self,
        caller: &Caller,
        req: pb::RevokeHostRequest,
    ) -> Result<pb::Host, Error> {
        let host = self
            .core
            .hosts
            .revoke(&req.host, &caller.describe())
            .await?;
        Ok(wire::host_to_wire(&host, None))
    }

    async fn add_operator(
        &self,
        caller: &Caller,
        req: pb::AddOperatorRequest,
    ) -> Result<pb::AddOperatorResponse, Error> {
        names::check_name("operator", &req.name)?;
        let existing = self
            .core
            .store
            .operator_by_name(&req.name)
            .await
            .doing("reading operators")?;
        let op = match (existing, req.reissue) {
            (Some(op), true) => op,
            (None, true) => {
                return Err(self.no_operator(&req.name).await);
            }
            (Some(op), false) => {
                return Err(Error::AlreadyExists(format!(
                    "operator {:?} exists ({}, {}): use `nococtl operator token {}` for a new login token",
                    op.name,
                    op.role,
                    noco_proto::Enumeration::text(wire::operator_status(op.status)),
                    op.name
                )));
            }
            (None, false) => {
                let role = Role::try_from(req.role())
                    .map_err(|e: noco_certs::CertError| Error::Invalid(e.to_string()))?;
                let op = OperatorRecord {
                    id: random_hex::<8>(),
                    name: req.name.clone(),
                    role,
                    status: OperatorStatus::Pending,
                    created_ms: self.core.now_ms(),
                };
                self.core
                    .store
                    .put_operator(&op)
                    .await
                    .doing("storing operator")?;
                op
            }
        };
        let (token, record) = self
            .new_token(
                TokenKind::Login {
                    operator_id: op.id.clone(),
                },
                ttl(req.ttl_seconds)?,
                caller,
                format!("login for {}", op.name),
            )
            .await?;
        Ok(pb::AddOperatorResponse {
            operator: Some(wire::operator_to_wire(&op)),
            login_token: token.to_string(),
            expires_unix_ms: record.expires_ms,
        })
    }

    async fn revoke_operator(
        &self,
        caller: &Caller,
        req: pb::RevokeOperatorRequest,
    ) -> Result<pb::Operator, Error> {
        let store = &self.core.store;
        let op = store
            .operator_by_name(&req.name)
            .await
            .doing("reading operators")?;
        let Some(op) = op else {
            return Err(self.no_operator(&req.name).await);
        };
        if op.role == Role::Admin && op.status == OperatorStatus::Active {
            let admins = store
                .operators()
                .await
                .doing("reading operators")?
                .into_iter()
                .filter(|o| o.role == Role::Admin && o.status == OperatorStatus::Active)
                .count();
            if admins <= 1 {
                return Err(Error::Precondition(format!(
                    "{} is the last active admin: add another admin before revoking it",
                    op.name
                )));
            }
        }
        self.core.bans.add(&Identity::Operator {
            operator_id: op.id.clone(),
            role: op.role,
        });
        store
            .revoke_operator(&op, self.core.now_ms(), &caller.describe())
            .await
            .doing("storing revocation")?;
        let mut op = op;
        op.status = OperatorStatus::Revoked;
        Ok(wire::operator_to_wire(&op))
    }

    async fn rotate_key(&self) -> Result<pb::RotateSigningKeyResponse, Error> {
        {
            // No state may be signed while the key changes.
            let _serial = self.core.desired.exclusive().await;
            self.core
                .pki
                .rotate_signing_key(self.core.now_ms())
                .map_err(|e| Error::Internal(format!("rotating the signing key: {e:#}")))?;
        }
        let trusted_key_ids = self
            .core
            .pki
            .trusted_keys()
            .into_iter()
            .map(|k| k.key_id)
            .collect();
        // Every agent reconnects, takes the new trust root, then states signed with the new key.
        self.core.registry.cut_all(Status::unavailable(
            "the state-signing key was rotated: reconnect",
        ));
        Ok(pb::RotateSigningKeyResponse {
            key_id: self.core.pki.signer().key_id(),
            trusted_key_ids,
        })
    }

    /// Start a `Logs` reader: hosts resolved (an unknown one is NotFound with the nearest name),
    /// the stack known (to the catalog, or by the logs the server holds of it), the grep valid.
    async fn open_logs(&self, req: &pb::LogsRequest) -> Result<LogsStream, Error> {
        let hosts = resolve_hosts(&self.core.hosts, &req.hosts)
            .await?
            .map(|hosts| hosts.into_iter().map(|h| h.id).collect());
        if !req.stack.is_empty() {
            let held = self.core.logs.stacks();
            if !held.contains(&req.stack) {
                let stacks = self.core.store.stacks().await.doing("reading stacks")?;
                if !stacks.iter().any(|s| s.name == req.stack) {
                    let known = stacks
                        .iter()
                        .map(|s| s.name.as_str())
                        .chain(held.iter().map(String::as_str));
                    return Err(crate::error::not_found("stack", &req.stack, known));
                }
            }
        }
        let query = LogQuery::new(req, hosts)?;
        Ok(crate::telemetry::query::start(&self.core.logs, query))
    }

    /// Run a mutating call and write its outcome to the audit log.
    async fn audited<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        outcome: Result<T, Error>,
    ) -> Result<Response<T>, Status> {
        self.audited_call(caller, action, target, false, outcome)
            .await
    }

    /// [`Self::audited`] for a call that may be a dry run.
    async fn audited_call<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        dry_run: bool,
        outcome: Result<T, Error>,
    ) -> Result<Response<T>, Status> {
        let outcome = outcome.map_err(Status::from);
        self.core
            .audit
            .record_call(&caller.who(), action, target, dry_run, &outcome)
            .await;
        outcome.map(Response::new)
    }
}

/// Who asks for a backup job: the operator.
fn requester(caller: &Caller) -> crate::backups::jobs::Requester {
    crate::backups::jobs::Requester {
        caller: caller.describe(),
        trigger: "manual".to_string(),
        triggered_by: caller.peer.common_name.clone(),
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlSvc {
    type LogsStream = LogsStream;
    type DownloadBackupStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::BackupDownloadChunk, Status>>;

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        Ok(Response::new(
            self.core.backups.list(&req.into_inner()).await?,
        ))
    }

    async fn get_backup(
        &self,
        req: Request<pb::GetBackupRequest>,
    ) -> Result<Response<pb::BackupInfo>, Status> {
        Ok(Response::new(
            self.core.backups.show(&req.into_inner().id).await?,
        ))
    }

    async fn get_backup_job(
        &self,
        req: Request<pb::GetBackupJobRequest>,
    ) -> Result<Response<pb::BackupJob>, Status> {
        Ok(Response::new(
            self.core.backups.job(&req.into_inner().id).await?,
        ))
    }

    async fn run_backup(
        &self,
        req: Request<pb::RunBackupRequest>,
    ) -> Result<Response<pb::BackupJobs>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let mut target = if req.name.is_empty() {
            req.stack.clone()
        } else {
            format!("{}/{}", req.stack, req.name)
        };
        if !req.hosts.is_empty() {
            target = format!("{target} on {}", req.hosts.join(", "));
        }
        let outcome = self.core.backups.run(&requester(&caller), req).await;
        let target = match &outcome {
            Ok(jobs) => {
                let ids: Vec<String> = jobs
                    .jobs
                    .iter()
                    .map(|j| format!("{} (job {})", j.backup_id, j.id))
                    .collect();
                format!("{target}: {}", ids.join(", "))
            }
            Err(_) => target,
        };
        self.audited(&caller, "backup.run", &target, outcome).await
    }

    async fn restore_backup(
        &self,
        req: Request<pb::RestoreBackupRequest>,
    ) -> Result<Response<pb::BackupJob>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let outcome = self
            .core
            .backups
            .restore(
                &requester(&caller),
                pb::BackupJobKind::Restore,
                &req.id,
                &req.to_host,
            )
            .await;
        let target = match &outcome {
            Ok(j) => format!("{} to {} (job {})", req.id, j.host, j.id),
            Err(_) if req.to_host.is_empty() => req.id.clone(),
            Err(_) => format!("{} to {}", req.id, req.to_host),
        };
        self.audited(&caller, "backup.restore", &target, outcome)
            .await
    }

    async fn verify_backup(
        &self,
        req: Request<pb::VerifyBackupRequest>,
    ) -> Result<Response<pb::BackupJob>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let outcome = self
            .core
            .backups
            .restore(
                &requester(&caller),
                pb::BackupJobKind::Verify,
                &req.id,
                &req.host,
            )
            .await;
        let target = match &outcome {
            Ok(j) => format!("{} on {} (job {})", req.id, j.host, j.id),
            Err(_) => req.id.clone(),
        };
        self.audited(&caller, "backup.verify", &target, outcome)
            .await
    }

    async fn remove_backup(
        &self,
        req: Request<pb::RemoveBackupRequest>,
    ) -> Result<Response<pb::BackupInfo>, Status> {
        let caller = Caller::of(&req)?;
        let id = req.into_inner().id;
        let outcome = self.core.backups.remove(&id).await;
        self.audited(&caller, "backup.remove", &id, outcome).await
    }

    async fn download_backup(
        &self,
        req: Request<pb::BackupDownloadRequest>,
    ) -> Result<Response<Self::DownloadBackupStream>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let outcome = self.core.backups.download(&req.id, req.offset, None).await;
        let target = format!("{} from {}", req.id, req.offset);
        self.audited(&caller, "backup.download", &target, outcome)
            .await
    }

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Ok(Response::new(self.open_logs(&req.into_inner()).await?))
    }

    async fn top(&self, req: Request<pb::TopRequest>) -> Result<Response<pb::TopResponse>, Status> {
        Ok(Response::new(
            crate::telemetry::top::top(&self.core, &req.into_inner()).await?,
        ))
    }

    async fn get_host(
        &self,
        req: Request<pb::GetHostRequest>,
    ) -> Result<Response<pb::GetHostResponse>, Status> {
        Ok(Response::new(
            crate::telemetry::top::get_host(&self.core, &req.into_inner()).await?,
        ))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = Caller::of(&req)?;
        let Identity::Operator { operator_id, role } = &caller.peer.identity else {
            return Err(Status::permission_denied("not an operator"));
        };
        Ok(Response::new(pb::WhoAmIResponse {
            operator_id: operator_id.clone(),
            name: caller.peer.common_name.clone(),
            role: pb::Role::from(*role).into(),
            cert_not_after_unix_ms: crate::clock::to_ms(caller.peer.not_after),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = format!("labels {:?}", req.labels.iter().collect::<BTreeMap<_, _>>());
        let outcome = self.create_token(&caller, req).await;
        let target = match &outcome {
            Ok(r) => format!("join token {} {target}", r.token_id),
            Err(_) => target,
        };
        self.audited(&caller, "token.create", &target, outcome)
            .await
    }

    async fn list_hosts(
        &self,
        _req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let hosts = self
            .core
            .hosts
            .list()
            .await?
            .iter()
            .map(|h| wire::host_to_wire(h, self.core.registry.online(&h.id)))
            .collect();
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }

    async fn label_host(
        &self,
        req: Request<pb::LabelHostRequest>,
    ) -> Result<Response<pb::Host>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = format!(
            "{} set {:?} remove {:?}",
            req.host,
            req.set.iter().collect::<BTreeMap<_, _>>(),
            req.remove
        );
        let outcome = self.label_host(req).await;
        self.audited(&caller, "host.label", &target, outcome).await
    }

    async fn revoke_host(
        &self,
        req: Request<pb::RevokeHostRequest>,
    ) -> Result<Response<pb::Host>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = req.host.clone();
        let outcome = self.revoke_host(&caller, req).await;
        self.audited(&caller, "host.revoke", &target, outcome).await
    }

    async fn add_operator(
        &self,
        req: Request<pb::AddOperatorRequest>,
    ) -> Result<Response<pb::AddOperatorResponse>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = if req.reissue {
            format!("{} (new login token)", req.name)
        } else {
            format!(
                "{} as {}",
                req.name,
                noco_proto::Enumeration::text(req.role())
            )
        };
        let outcome = self.add_operator(&caller, req).await;
        self.audited(&caller, "operator.add", &target, outcome)
            .await
    }

    async fn list_operators(
        &self,
        _req: Request<pb::ListOperatorsRequest>,
    ) -> Result<Response<pb::ListOperatorsResponse>, Status> {
        let mut operators: Vec<pb::Operator> = self
            .core
            .store
            .operators()
            .await
            .doing("reading operators")?
            .iter()
            .map(wire::operator_to_wire)
            .collect();
        operators.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.created_unix_ms.cmp(&b.created_unix_ms))
        });
        Ok(Response::new(pb::ListOperatorsResponse { operators }))
    }

    async fn revoke_operator(
        &self,
        req: Request<pb::RevokeOperatorRequest>,
    ) -> Result<Response<pb::Operator>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = req.name.clone();
        let outcome = self.revoke_operator(&caller, req).await;
        self.audited(&caller, "operator.revoke", &target, outcome)
            .await
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let req = req.into_inner();
        let limit = match req.limit {
            0 => 100,
            n => n.min(MAX_AUDIT),
        };
        let filter = crate::store::AuditFilter {
            since_ms: req.since_unix_ms,
            action: req.action,
            caller: req.caller,
        };
        let records = self
            .core
            .audit
            .list(&filter, limit as usize)
            .await?
            .into_iter()
            .map(wire::audit_to_wire)
            .collect();
        Ok(Response::new(pb::ListAuditResponse { records }))
    }

    async fn apply_stack(
        &self,
        req: Request<pb::ApplyStackRequest>,
    ) -> Result<Response<pb::ApplyStackResponse>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = format!("{} selector {:?}", req.name, req.selector);
        let dry_run = req.dry_run;
        let outcome = self.core.stacks.apply(&caller.describe(), req).await;
        let target = match &outcome {
            Ok(r) => format!("{target} revision {}", r.revision),
            Err(_) => target,
        };
        self.audited_call(&caller, "stack.apply", &target, dry_run, outcome)
            .await
    }

    async fn list_stacks(
        &self,
        _req: Request<pb::ListStacksRequest>,
    ) -> Result<Response<pb::ListStacksResponse>, Status> {
        Ok(Response::new(self.core.stacks.list().await?))
    }

    async fn get_stack(
        &self,
        req: Request<pb::GetStackRequest>,
    ) -> Result<Response<pb::GetStackResponse>, Status> {
        Ok(Response::new(self.core.stacks.get(req.into_inner()).await?))
    }

    async fn remove_stack(
        &self,
        req: Request<pb::RemoveStackRequest>,
    ) -> Result<Response<pb::RemoveStackResponse>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = req.name.clone();
        let outcome = self.core.stacks.remove(req).await;
        self.audited(&caller, "stack.remove", &target, outcome)
            .await
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let c = &self.core;
        let status = crate::status::status(
            &*c.store,
            &c.desired,
            &c.reports,
            &c.registry,
            &req.into_inner().stack,
        )
        .await?;
        Ok(Response::new(status))
    }

    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let caller = Caller::of(&req)?;
        let outcome = self.rotate_key().await;
        let target = outcome
            .as_ref()
            .map(|r| format!("new key {}", r.key_id))
            .unwrap_or_default();
        self.audited(&caller, "signing-key.rotate", &target, outcome)
            .await
    }

    async fn start_rollout(
        &self,
        req: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::RolloutInfo>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = req.stack.clone();
        let outcome = self.core.rollouts.start(&caller.describe(), req).await;
        let target = match &outcome {
            Ok(r) => format!("{target} rollout {} to {}", r.id, r.to_revision),
            Err(_) => target,
        };
        self.audited(&caller, "rollout.start", &target, outcome)
            .await
    }

    async fn get_rollout(
        &self,
        req: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::RolloutInfo>, Status> {
        Ok(Response::new(
            self.core.rollouts.get(&req.into_inner().stack).await?,
        ))
    }

    async fn control_rollout(
        &self,
        req: Request<pb::ControlRolloutRequest>,
    ) -> Result<Response<pb::RolloutInfo>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = format!("{} {}", req.stack, req.action);
        let outcome = self.core.rollouts.control(req).await;
        self.audited(&caller, "rollout.control", &target, outcome)
            .await
    }

    async fn undo_rollout(
        &self,
        req: Request<pb::UndoRolloutRequest>,
    ) -> Result<Response<pb::RolloutInfo>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let target = req.stack.clone();
        let outcome = self.core.rollouts.undo(&caller.describe(), req).await;
        self.audited(&caller, "rollout.undo", &target, outcome)
            .await
    }

    async fn list_rollouts(
        &self,
        req: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        Ok(Response::new(
            self.core.rollouts.list(&req.into_inner().stack).await?,
        ))
    }

    async fn list_alerts(
        &self,
        _req: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        Ok(Response::new(self.core.alerts.list().await?))
    }

    async fn test_alert(
        &self,
        req: Request<pb::TestAlertRequest>,
    ) -> Result<Response<pb::TestAlertResponse>, Status> {
        let caller = Caller::of(&req)?;
        let receiver = req.into_inner().receiver;
        let outcome = self.core.alerts.test(&receiver, &caller.describe()).await;
        self.audited(&caller, "alert.test", &receiver, outcome)
            .await
    }

    async fn silence_alert(
        &self,
        req: Request<pb::SilenceAlertRequest>,
    ) -> Result<Response<pb::Silence>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let mut target = req.rule.clone();
        for (what, value) in [("host", &req.host), ("stack", &req.stack)] {
            if !value.is_empty() {
                target.push_str(&format!(" {what} {value}"));
            }
        }
        target.push_str(&format!(
            " for {}",
            noco_proto::duration::format(Duration::from_secs(req.duration_seconds))
        ));
        let outcome = self.core.alerts.silence(&caller.describe(), req).await;
        if let Ok(s) = &outcome {
            target.push_str(&format!(" (silence {})", s.id));
        }
        self.audited(&caller, "alert.silence", &target, outcome)
            .await
    }

    async fn list_silences(
        &self,
        _req: Request<pb::ListSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        Ok(Response::new(self.core.alerts.silences().await?))
    }

    async fn remove_silence(
        &self,
        req: Request<pb::RemoveSilenceRequest>,
    ) -> Result<Response<pb::Silence>, Status> {
        let caller = Caller::of(&req)?;
        let id = req.into_inner().id;
        let outcome = self.core.alerts.unsilence(&id).await;
        self.audited(&caller, "alert.unsilence", &id, outcome).await
    }
}
