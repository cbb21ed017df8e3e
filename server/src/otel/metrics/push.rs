//! Pushing the per-host and per-container series ([`super::bulk`]) over OTLP every
//! `--otlp-metrics-interval`, beside the SDK's own push of the other instruments: the requests
//! are built on the blocking pool, then sent one after another (gRPC `MetricsService/Export`, or
//! a POST to `<endpoint>/v1/metrics` with `--otlp-protocol http`). A failed push is counted and
//! logged as the SDK's exports are (`noco_proto::otel::note`); the next push carries the values
//! of its own time (metrics are cumulative: a missed push loses no count).

use std::sync::Arc;
use std::time::SystemTime;

use noco_proto::otel::{Otlp, Signal};

use super::Sources;
use crate::otel::send::{Client, unix_ns};

/// Push the per-host and per-container series every `otlp.metrics_interval` until the runtime
/// stops. A client that cannot be made is reported once, and nothing is pushed.
pub fn spawn(sources: Arc<Sources>, otlp: Otlp) {
    let mut client = match Client::new(&otlp, Signal::Metrics) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("OTLP metrics: {e}; per-host and per-container metrics not pushed");
            return;
        }
    };
    let start_ns = unix_ns(SystemTime::now());
    let resource = vec![
        ("service.name", "noco-server".to_string()),
        ("service.version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(otlp.metrics_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (sources, resource) = (sources.clone(), resource.clone());
            let built = tokio::task::spawn_blocking(move || {
                let view = sources.view();
                super::bulk::otlp(
                    &view,
                    &resource,
                    start_ns,
                    unix_ns(SystemTime::now()),
                    super::bulk::MAX_POINTS,
                )
            })
            .await;
            // Nothing to send says nothing about the collector: not a success to report.
            let Ok(requests) = built else { continue };
            if requests.is_empty() {
                continue;
            }
            let mut result = Ok(());
            for req in requests {
                if let Err(e) = client.send(req).await {
                    result = Err(e);
                    break;
                }
            }
            noco_proto::otel::note(Signal::Metrics, &result);
        }
    });
}
