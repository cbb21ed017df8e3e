//! Writing the audit log: who did what to what, when, and how it ended. Every mutating call
//! goes through [`Audit::record`], including refusals made by the auth layer.

use std::sync::Arc;

use tonic::Status;

use crate::clock::Clock;
use crate::store::{AuditFilter, AuditRecord, Store};

/// Who made a call, for the audit log: how people read it, and the structured parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    /// `operator alice (admin)`, `agent web-1 (3f2a…)`, `join token 1a2b…`, `anonymous`.
    pub text: String,
    pub name: String,
    pub id: String,
    pub role: Option<noco_certs::Role>,
}

impl Who {
    /// A caller without an identity of its own (a token, the server, nobody).
    pub fn named(text: impl Into<String>) -> Who {
        Who {
            text: text.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug)]
pub struct Audit {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

/// How an outcome reads in the audit log.
pub fn result_text<T>(outcome: &Result<T, Status>) -> String {
    match outcome {
        Ok(_) => "ok".to_string(),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            ) =>
        {
            format!("denied: {}", s.message())
        }
        Err(s) => format!("error: {}", s.message()),
    }
}

impl Audit {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Audit { store, clock }
    }

    /// Record the outcome of a call. Failing to write the audit log is logged, never hidden.
    pub async fn record<T>(
        &self,
        who: &Who,
        action: &str,
        target: &str,
        outcome: &Result<T, Status>,
    ) {
        self.record_call(who, action, target, false, outcome).await
    }

    /// [`Audit::record`] for a call that may be a dry run (`--dry-run`: checked, not done).
    pub async fn record_call<T>(
        &self,
        who: &Who,
        action: &str,
        target: &str,
        dry_run: bool,
        outcome: &Result<T, Status>,
    ) {
        let caller = &who.text;
        let rec = AuditRecord {
            time_ms: self.clock.now_ms(),
            caller: who.text.clone(),
            action: action.to_string(),
            target: target.to_string(),
            result: result_text(outcome),
            caller_name: who.name.clone(),
            caller_id: who.id.clone(),
            caller_role: who.role,
            dry_run,
        };
        tracing::info!(caller, action, target, result = %rec.result, "audit");
        if let Err(e) = self.store.append_audit(&rec).await {
            tracing::error!("writing audit record {rec:?}: {e}");
        }
    }

    /// The newest `limit` records that match `filter`, oldest first.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> crate::error::Result<Vec<AuditRecord>> {
        use crate::error::Doing;
        self.store
            .audit(filter, limit)
            .await
            .doing("reading the audit log")
    }
}
