//! Writing the audit log: who did what to what, when, and how it ended. Every mutating call
//! goes through [`Audit::record`], including refusals made by the auth layer.

use std::sync::Arc;

use tonic::Status;

use crate::clock::Clock;
use crate::store::{AuditRecord, Store};

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
        caller: &str,
        action: &str,
        target: &str,
        outcome: &Result<T, Status>,
    ) {
        let rec = AuditRecord {
            time_ms: self.clock.now_ms(),
            caller: caller.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            result: result_text(outcome),
        };
        tracing::info!(caller, action, target, result = %rec.result, "audit");
        if let Err(e) = self.store.append_audit(&rec).await {
            tracing::error!("writing audit record {rec:?}: {e}");
        }
    }

    /// The newest `limit` records, oldest first.
    pub async fn list(&self, limit: usize) -> crate::error::Result<Vec<AuditRecord>> {
        use crate::error::Doing;
        self.store.audit(limit).await.doing("reading the audit log")
    }
}
