//! The server's instruments, read by OTLP export and by `/metrics` alike (one meter provider,
//! two readers; see `noco_proto::otel`). Almost all are observable: a collection runs their
//! callbacks, which read what the server holds in memory —
//!
//! - [`fleet`]: what lives in the store (hosts, stacks and their selectors, each stack's latest
//!   rollout, the backup catalog, jobs and orders, the store's size on disk), read by a task into
//!   a snapshot at most every [`fleet::TTL`] and only while something collects; callbacks never
//!   touch the store;
//! - [`view`]: per collection, one pass over the live state (sessions, agents' reports, the
//!   latest metrics samples) into a view every callback of that collection shares, with label
//!   sets cached across collections (a container's labels are built when it first appears and
//!   dropped when its host stops reporting it);
//! - [`instruments`]: the SDK's instruments (fleet, internals) and their callbacks over the
//!   snapshot and the view;
//! - [`bulk`]: the per-host and per-container series (most of them: ~100 per host), from one
//!   table written straight into `/metrics` and into OTLP requests of bounded size, which
//!   [`push`] sends — the SDK took a second to collect 100,000 series and pushed them in one
//!   request too large for a collector;
//! - [`rpc`]: the one synchronous instrument, `rpc.server.duration`, recorded by a tower layer
//!   in front of every gRPC service.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists (`system.*`,
//! `container.*`, `rpc.*`), `noco.*` otherwise; ARCHITECTURE.md "Telemetry export" lists every
//! one with its labels, its Prometheus name and the cardinality bound.
//!
//! Cost of a collection: O(hosts + containers + stacks), no store read, no lock held across an
//! await (none is awaited), and allocations only for what appeared since the last one.

mod bulk;
mod fleet;
mod instruments;
mod push;
mod rpc;
#[cfg(test)]
mod tests;
mod view;

use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry::metrics::Meter;

use crate::core::Core;

pub use fleet::TTL;
pub use rpc::{RpcMetrics, RpcMetricsLayer};

/// The instrumentation scope of every instrument of the server.
pub const METER: &str = "noco";

/// Register every instrument on the global meter provider (a no-op provider when neither
/// OTLP nor Prometheus is on: then no callback ever runs) and start the task that keeps the
/// store snapshot fresh while something collects.
pub fn register(core: &Arc<Core>) -> Arc<Sources> {
    let sources = register_on(&opentelemetry::global::meter(METER), core);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(fleet::keep_fresh(sources.clone()));
    }
    sources
}

/// Push the per-host and per-container series over OTLP (`--otlp-endpoint`).
pub fn push(sources: Arc<Sources>, otlp: noco_proto::otel::Otlp) {
    push::spawn(sources, otlp);
}

/// The per-host and per-container series in Prometheus's text format (what `/metrics` adds
/// after the SDK's registry).
pub fn prometheus_text(sources: &Sources) -> String {
    let mut out = String::with_capacity(1 << 16);
    bulk::prometheus(&sources.view(), &mut out);
    out
}

/// Register the instruments on `meter` (tests give their own provider's); returns what their
/// callbacks read, whose store snapshot the caller refreshes ([`Sources::refresh`]).
pub fn register_on(meter: &Meter, core: &Arc<Core>) -> Arc<Sources> {
    let sources = Arc::new(Sources {
        core: core.clone(),
        fleet: fleet::Cache::default(),
        live: Mutex::default(),
    });
    instruments::register(meter, &sources);
    sources
}

/// What the callbacks read: the core, the store snapshot, and the per-collection view.
#[derive(Debug)]
pub struct Sources {
    core: Arc<Core>,
    fleet: fleet::Cache,
    live: Mutex<view::Live>,
}

impl Sources {
    /// Read the store into a new snapshot now.
    pub async fn refresh(&self) {
        self.fleet.refresh(&self.core).await;
    }

    /// The current view (built at most once per [`view::REUSE`]).
    fn view(&self) -> Arc<view::View> {
        let fleet = self.fleet.current();
        self.live_lock().view(&self.core, &fleet)
    }

    fn live_lock(&self) -> MutexGuard<'_, view::Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}
