//! When a stack counts as healthy on a host: the one definition, used by the server (status,
//! stack summaries, rollout gates) and by nococtl.

use crate::v1::{ApplyState, Health, ServiceReport, StackReport};

/// A service is ready when all its desired containers run and each is healthy, or has no
/// healthcheck.
pub fn service_ready(svc: &ServiceReport) -> bool {
    svc.running >= svc.desired && matches!(svc.health(), Health::Healthy | Health::None)
}

/// A stack is healthy when it converged and every service is ready.
pub fn stack_healthy(stack: &StackReport) -> bool {
    stack.state() == ApplyState::Converged && stack.services.iter().all(service_ready)
}

/// A stack failed when its apply failed or the host's policy refused it.
pub fn stack_failed(stack: &StackReport) -> bool {
    matches!(stack.state(), ApplyState::Failed | ApplyState::Refused)
}
