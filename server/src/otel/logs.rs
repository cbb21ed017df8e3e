//! Container log records as OTLP log records (`--otlp-endpoint`): every record the log hub
//! stores is handed to the SDK's batch log processor, which exports it from its own thread —
//! ingest never waits on the collector. The record's body is the line (bytes as UTF-8, invalid
//! sequences replaced), its time Docker's, and its attributes say where it came from:
//! `host.name`, `noco.host.id`, `noco.stack`, `noco.service`, `container.name`, `container.id`,
//! `log.iostream` (stdout/stderr), `noco.seq`; a marker of lost lines carries `noco.dropped`.
//! (They are record attributes, not resource attributes: the SDK gives one resource per
//! process, and the resource is the server's.)
//!
//! When the SDK's queue is full its processor drops records (OpenTelemetry counts them); when
//! this reader falls behind the hub's broadcast ring it skips whole batches, counted in
//! `noco.otlp.logs.skipped`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use noco_proto::v1 as pb;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use tokio::sync::broadcast::error::RecvError;

use crate::core::Core;
use crate::telemetry::logs::Batch;

static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Export every log record the hub stores from now on through `provider`, until the hub goes.
pub fn spawn_export(core: Arc<Core>, provider: opentelemetry_sdk::logs::SdkLoggerProvider) {
    let mut rx = core.logs.subscribe();
    let _ = opentelemetry::global::meter("noco-server")
        .u64_observable_counter("noco.otlp.logs.skipped")
        .with_description(
            "Batches of container log records not exported over OTLP: the exporter fell behind",
        )
        .with_unit("{batch}")
        .with_callback(|o| o.observe(SKIPPED.load(Ordering::Relaxed), &[]))
        .build();
    tokio::spawn(async move {
        let logger = provider.logger("noco.containers");
        loop {
            match rx.recv().await {
                Ok(batch) => emit(&logger, &batch),
                Err(RecvError::Lagged(n)) => {
                    SKIPPED.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

fn emit(logger: &opentelemetry_sdk::logs::SdkLogger, batch: &Batch) {
    let now = SystemTime::now();
    for stored in &batch.records {
        let r = &stored.record;
        let mut rec = logger.create_log_record();
        if let Ok(ns) = u64::try_from(r.time_unix_nanos) {
            rec.set_timestamp(UNIX_EPOCH + Duration::from_nanos(ns));
        }
        rec.set_observed_timestamp(now);
        rec.set_body(AnyValue::from(
            String::from_utf8_lossy(&r.line).into_owned(),
        ));
        let stream = match pb::LogStream::try_from(r.stream) {
            Ok(pb::LogStream::Stderr) => "stderr",
            Ok(pb::LogStream::Noco) => "noco",
            _ => "stdout",
        };
        rec.add_attributes([
            ("host.name", AnyValue::from(batch.host_name.to_string())),
            ("noco.host.id", AnyValue::from(batch.host_id.to_string())),
            ("noco.stack", AnyValue::from(r.stack.clone())),
            ("noco.service", AnyValue::from(r.service.clone())),
            ("container.name", AnyValue::from(r.container.clone())),
            ("container.id", AnyValue::from(r.container_id.clone())),
            ("log.iostream", AnyValue::from(stream)),
            ("noco.seq", AnyValue::from(r.seq as i64)),
        ]);
        if r.dropped > 0 {
            rec.add_attribute("noco.dropped", r.dropped as i64);
        }
        logger.emit(rec);
    }
}
