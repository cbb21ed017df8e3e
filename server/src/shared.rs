//! What every service of the server shares.

use std::sync::Arc;
use std::time::Duration;

use crate::bans::BanSet;
use crate::clock::Clock;
use crate::pki::Pki;
use crate::registry::Registry;
use crate::store::Store;

/// Tunables of a running server (flags of `noco-server run`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub agent_cert_ttl: Duration,
    pub operator_cert_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// A session that sends nothing for this long is closed.
    pub session_idle_timeout: Duration,
    pub hello_timeout: Duration,
    /// How long a signed desired state is valid; the server re-signs at a third remaining.
    pub state_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            agent_cert_ttl: Duration::from_secs(24 * 3600),
            operator_cert_ttl: Duration::from_secs(30 * 24 * 3600),
            heartbeat_interval: Duration::from_secs(10),
            session_idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            state_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    pub pki: Pki,
    pub bans: Arc<BanSet>,
    pub registry: Registry,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    /// The latest report of every agent (in memory: agents report again when they reconnect).
    pub reports: crate::desired::Reports,
    /// Serializes desired-state updates so generations are issued in order.
    pub desired_lock: tokio::sync::Mutex<()>,
    /// Serializes rollout transitions (the driver and operators' pause/resume/abort).
    pub rollout_lock: tokio::sync::Mutex<()>,
    /// Wakes the rollout driver when an agent reports, so a host step is judged at once.
    pub rollout_wake: tokio::sync::Notify,
    /// Tracing spans of the rollouts in progress.
    pub rollout_spans: crate::rollouts::Spans,
}

impl Shared {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Store errors become gRPC `internal` with the store's message.
pub fn internal(context: &str, err: impl std::fmt::Display) -> tonic::Status {
    tracing::error!("{context}: {err}");
    tonic::Status::internal(format!("{context}: {err}"))
}
