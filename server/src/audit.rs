//! Writing the audit log: who did what to what, when, and how it ended. Every mutating call
//! goes through [`record`], including refusals made by the auth layer.

use tonic::Status;

use crate::shared::Shared;
use crate::store::AuditRecord;

/// Record the outcome of a call. Failing to write the audit log is logged, never hidden.
pub fn record<T>(
    shared: &Shared,
    caller: &str,
    action: &str,
    target: &str,
    outcome: &Result<T, Status>,
) {
    let result = match outcome {
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
    };
    let rec = AuditRecord {
        time_ms: shared.now_ms(),
        caller: caller.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        result,
    };
    tracing::info!(caller, action, target, result = %rec.result, "audit");
    if let Err(e) = shared.store.append_audit(&rec) {
        tracing::error!("writing audit record {rec:?}: {e}");
    }
}
