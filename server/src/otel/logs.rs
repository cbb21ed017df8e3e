//! Container log records as OTLP log records (`--otlp-endpoint`): every record the log hub
//! stores is encoded straight into OTLP requests ([`super::pb`], no SDK records and no copy of
//! the line but the request's) and sent by a task of its own ([`super::send`]), so ingest never
//! waits on the collector.
//!
//! Each container is a **resource** (the OpenTelemetry data model's "entity producing
//! telemetry"): `service.name` (the compose service), `service.namespace` (the stack),
//! `host.name`, `noco.host.id`, `noco.stack`, `noco.service`, `container.name`, `container.id`.
//! A record's body is the line (bytes as UTF-8, invalid sequences replaced), its time Docker's,
//! its observed time when the server encoded it, and its attributes `log.iostream`
//! (stdout/stderr), `noco.seq`, and when not zero `noco.truncated` (bytes cut from a long line)
//! and `noco.dropped` (on a marker of lost lines).
//!
//! A request is sent when it holds [`MAX_RECORDS`] records or [`MAX_BYTES`] bytes (passed by
//! at most one record and its resource), or [`FLUSH_EVERY`] after its first record. At most [`QUEUE`] requests wait to be sent; records
//! that find the queue full, or whose request fails, are dropped and counted in
//! `noco.otlp.logs.dropped` (a failed request is counted and logged as every export is,
//! `noco_proto::otel::note`). When this reader falls behind the hub's broadcast ring it skips
//! whole batches, counted in `noco.otlp.logs.skipped`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use noco_proto::otel::{Otlp, Signal};
use noco_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::pb as w;
use super::send::{Client, unix_ns};
use crate::core::Core;
use crate::telemetry::logs::Batch;

/// Records in one request at most.
pub const MAX_RECORDS: usize = 2_000;
/// Bytes of one request, about: a request is closed once it reaches this, so it passes it by at
/// most one record (a line is at most `noco_proto::limits::MAX_LOG_LINE`) and its resource.
pub const MAX_BYTES: usize = 1 << 20;
/// How long a record waits for its request to fill.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Requests waiting to be sent at most.
pub const QUEUE: usize = 16;
/// The instrumentation scope of the records.
const SCOPE: &str = "noco.containers";

static SKIPPED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Export every log record the hub stores from now on to `otlp`'s collector, until the hub
/// goes. A client that cannot be made is reported once, and nothing is exported.
pub fn spawn_export(core: Arc<Core>, otlp: &Otlp) {
    let mut client = match Client::new(otlp, Signal::Logs) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("OTLP logs: {e}; container log records not exported");
            return;
        }
    };
    let meter = opentelemetry::global::meter("noco-server");
    counter(
        &meter,
        "noco.otlp.logs.skipped",
        "Batches of container log records not exported over OTLP: the exporter fell behind",
        "{batch}",
        &SKIPPED,
    );
    counter(
        &meter,
        "noco.otlp.logs.dropped",
        "Container log records not exported over OTLP: the send queue was full or the collector refused or missed their request",
        "{record}",
        &DROPPED,
    );

    let (tx, mut queue) = mpsc::channel::<(Vec<u8>, u64)>(QUEUE);
    tokio::spawn(async move {
        while let Some((req, records)) = queue.recv().await {
            let result = client.send(req).await;
            if result.is_err() {
                DROPPED.fetch_add(records, Ordering::Relaxed);
            }
            noco_proto::otel::note(Signal::Logs, &result);
        }
    });

    let mut rx = core.logs.subscribe();
    tokio::spawn(async move {
        let mut enc = Encoder::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let batch = match deadline {
                Some(at) => tokio::select! {
                    b = rx.recv() => b,
                    () = tokio::time::sleep_until(at) => {
                        deadline = None;
                        if !enqueue(&tx, enc.finish()) {
                            return;
                        }
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match batch {
                Ok(batch) => {
                    for full in enc.add(&batch, unix_ns(SystemTime::now())) {
                        if !enqueue(&tx, Some(full)) {
                            return;
                        }
                    }
                    if enc.records == 0 {
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + FLUSH_EVERY);
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    SKIPPED.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => {
                    enqueue(&tx, enc.finish());
                    return;
                }
            }
        }
    });
}

/// An observable counter reading `value`.
fn counter(
    meter: &opentelemetry::metrics::Meter,
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    value: &'static AtomicU64,
) {
    let _ = meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_unit(unit)
        .with_callback(move |o| o.observe(value.load(Ordering::Relaxed), &[]))
        .build();
}

/// Queue a request for the sender (its records are dropped when the queue is full); false
/// when the sender is gone.
fn enqueue(tx: &mpsc::Sender<(Vec<u8>, u64)>, req: Option<(Vec<u8>, u64)>) -> bool {
    let Some(req) = req else { return true };
    match tx.try_send(req) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full((_, records))) => {
            DROPPED.fetch_add(records, Ordering::Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// An `ExportLogsServiceRequest` being filled.
#[derive(Default)]
struct Encoder {
    /// The request's `resource_logs` (field 1), framed.
    request: Vec<u8>,
    /// Records in `request`.
    records: u64,
    /// One container's records being gathered (`ScopeLogs.log_records`, framed).
    group: Vec<u8>,
    group_records: u64,
    /// One record.
    record: Vec<u8>,
    scope: Vec<u8>,
}

impl Encoder {
    /// Add a hub batch (one host's records); returns the requests that filled up.
    fn add(&mut self, batch: &Batch, observed_ns: u64) -> Vec<(Vec<u8>, u64)> {
        let mut full = Vec::new();
        if self.scope.is_empty() {
            self.scope = w::scope(SCOPE);
        }
        // Records by container, each container's in their order.
        let mut order: Vec<usize> = (0..batch.records.len()).collect();
        order.sort_by(|&a, &b| {
            batch.records[a]
                .record
                .container_id
                .cmp(&batch.records[b].record.container_id)
        });
        let mut i = 0;
        while i < order.len() {
            let first = &batch.records[order[i]].record;
            let mut j = i;
            while j < order.len()
                && batch.records[order[j]].record.container_id == first.container_id
            {
                self.put_record(&batch.records[order[j]].record, observed_ns);
                j += 1;
                if self.request.len() + self.group.len() >= MAX_BYTES
                    || (self.records + self.group_records) as usize >= MAX_RECORDS
                {
                    self.close_group(batch, first);
                    full.extend(self.finish());
                }
            }
            self.close_group(batch, first);
            i = j;
        }
        full
    }

    /// The request so far, if it has records: (encoded request, records).
    fn finish(&mut self) -> Option<(Vec<u8>, u64)> {
        if self.records == 0 {
            return None;
        }
        let records = std::mem::take(&mut self.records);
        Some((std::mem::take(&mut self.request), records))
    }

    /// `LogRecord { time_unix_nano = 1, body = 5, attributes = 6, observed_time_unix_nano = 11 }`
    /// into the group (`ScopeLogs.log_records = 2`).
    fn put_record(&mut self, r: &pb::LogRecord, observed_ns: u64) {
        let rec = &mut self.record;
        rec.clear();
        if let Ok(ns) = u64::try_from(r.time_unix_nanos)
            && ns > 0
        {
            w::fixed64(rec, 1, ns);
        }
        // AnyValue { string_value = 1 }
        let line = String::from_utf8_lossy(&r.line);
        let any = 1 + w::varint_len(line.len() as u64) + line.len();
        w::bytes_head(rec, 5, any);
        w::bytes(rec, 1, line.as_bytes());
        let stream = match pb::LogStream::try_from(r.stream) {
            Ok(pb::LogStream::Stderr) => "stderr",
            Ok(pb::LogStream::Noco) => "noco",
            _ => "stdout",
        };
        w::key_value(rec, 6, "log.iostream", stream);
        w::key_int(rec, 6, "noco.seq", i64::try_from(r.seq).unwrap_or(i64::MAX));
        if r.truncated > 0 {
            w::key_int(
                rec,
                6,
                "noco.truncated",
                i64::try_from(r.truncated).unwrap_or(i64::MAX),
            );
        }
        if r.dropped > 0 {
            w::key_int(
                rec,
                6,
                "noco.dropped",
                i64::try_from(r.dropped).unwrap_or(i64::MAX),
            );
        }
        w::fixed64(rec, 11, observed_ns);
        w::bytes(&mut self.group, 2, &self.record);
        self.group_records += 1;
    }

    /// Close the group as one `ResourceLogs { resource = 1, scope_logs = 2 }` of the container
    /// of `r`, framed into the request.
    fn close_group(&mut self, batch: &Batch, r: &pb::LogRecord) {
        if self.group_records == 0 {
            return;
        }
        let resource = w::resource(&[
            ("service.name", &r.service),
            ("service.namespace", &r.stack),
            ("host.name", &batch.host_name),
            ("noco.host.id", &batch.host_id),
            ("noco.stack", &r.stack),
            ("noco.service", &r.service),
            ("container.name", &r.container),
            ("container.id", &r.container_id),
        ]);
        // ScopeLogs { scope = 1, log_records = 2 (framed in `group`) }
        let scope_logs = 1 + w::varint_len(self.scope.len() as u64) + self.scope.len();
        let scope_logs = scope_logs + self.group.len();
        let resource_logs = 1
            + w::varint_len(resource.len() as u64)
            + resource.len()
            + 1
            + w::varint_len(scope_logs as u64)
            + scope_logs;
        let out = &mut self.request;
        w::bytes_head(out, 1, resource_logs);
        w::bytes(out, 1, &resource);
        w::bytes_head(out, 2, scope_logs);
        w::bytes(out, 1, &self.scope);
        out.extend_from_slice(&self.group);
        self.records += self.group_records;
        self.group.clear();
        self.group_records = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
    use prost::Message as _;

    use super::*;
    use crate::telemetry::logs::Stored;

    fn record(seq: u64, container: &str, line: &[u8], stream: pb::LogStream) -> pb::LogRecord {
        pb::LogRecord {
            seq,
            time_unix_nanos: 1_700_000_000_000_000_000 + seq as i64,
            stack: "shop".into(),
            service: format!("svc-{container}"),
            number: 1,
            container: format!("shop-{container}-1"),
            container_id: format!("id-{container}"),
            stream: stream as i32,
            line: line.to_vec(),
            truncated: 0,
            dropped: 0,
        }
    }

    fn batch(records: Vec<pb::LogRecord>) -> Batch {
        let host: Arc<str> = "h-1".into();
        Batch {
            host_id: host.clone(),
            host_name: "web-1".into(),
            first: 0,
            records: records
                .into_iter()
                .map(|r| Arc::new(Stored::new(host.clone(), r)))
                .collect(),
        }
    }

    fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(n)) => n.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    /// (resource attributes, record attributes, body, time, observed time) of every record.
    type Flat = Vec<(
        BTreeMap<String, String>,
        BTreeMap<String, String>,
        String,
        u64,
        u64,
    )>;

    fn decode(req: &[u8]) -> Flat {
        let req = ExportLogsServiceRequest::decode(req).unwrap();
        let mut out = Vec::new();
        for rl in req.resource_logs {
            let resource = attrs(&rl.resource.unwrap().attributes);
            for sl in rl.scope_logs {
                assert_eq!(sl.scope.as_ref().unwrap().name, SCOPE);
                for r in sl.log_records {
                    let body = match r.body.and_then(|b| b.value) {
                        Some(Value::StringValue(s)) => s,
                        other => panic!("body {other:?}"),
                    };
                    out.push((
                        resource.clone(),
                        attrs(&r.attributes),
                        body,
                        r.time_unix_nano,
                        r.observed_time_unix_nano,
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn each_container_is_a_resource_and_its_records_keep_their_order_and_attributes() {
        let mut marker = record(5, "b", b"3 lines lost", pb::LogStream::Noco);
        marker.dropped = 3;
        let mut long = record(
            4,
            "a",
            &vec![b'x'; noco_proto::limits::MAX_LOG_LINE + 10],
            pb::LogStream::Stdout,
        );
        long.time_unix_nanos = 0;
        let b = batch(vec![
            record(1, "a", b"first", pb::LogStream::Stdout),
            record(2, "b", b"oops \xff", pb::LogStream::Stderr),
            record(3, "a", b"second", pb::LogStream::Stdout),
            long,
            marker,
        ]);
        let mut enc = Encoder::default();
        assert!(enc.add(&b, 42).is_empty(), "nothing full yet");
        let (req, n) = enc.finish().unwrap();
        assert_eq!(n, 5);
        assert!(enc.finish().is_none(), "finish empties the request");

        let flat = decode(&req);
        assert_eq!(flat.len(), 5);
        let seqs: Vec<&str> = flat.iter().map(|r| r.1["noco.seq"].as_str()).collect();
        assert_eq!(
            seqs,
            ["1", "3", "4", "2", "5"],
            "by container, each in order"
        );
        let (res, rec, body, time, observed) = &flat[0];
        let want: BTreeMap<String, String> = [
            ("service.name", "svc-a"),
            ("service.namespace", "shop"),
            ("host.name", "web-1"),
            ("noco.host.id", "h-1"),
            ("noco.stack", "shop"),
            ("noco.service", "svc-a"),
            ("container.name", "shop-a-1"),
            ("container.id", "id-a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(res, &want);
        assert_eq!(rec["log.iostream"], "stdout");
        assert_eq!(rec.len(), 2, "{rec:?}");
        assert_eq!(
            (body.as_str(), *time, *observed),
            ("first", 1_700_000_000_000_000_001, 42)
        );
        // A cut line says how much was cut; a record without a time has none.
        assert_eq!(flat[2].1["noco.truncated"], "10");
        assert_eq!(flat[2].2.len(), noco_proto::limits::MAX_LOG_LINE);
        assert_eq!(flat[2].3, 0);
        // Invalid UTF-8 is replaced; stderr and the marker say what they are.
        assert_eq!(flat[3].0["container.id"], "id-b");
        assert_eq!(
            (flat[3].1["log.iostream"].as_str(), flat[3].2.as_str()),
            ("stderr", "oops \u{fffd}")
        );
        assert_eq!(
            (
                flat[4].1["log.iostream"].as_str(),
                flat[4].1["noco.dropped"].as_str()
            ),
            ("noco", "3")
        );
    }

    #[test]
    fn requests_are_bounded_and_carry_every_record_once() {
        // By count: 5,000 small records make two full requests and a rest.
        let b = batch(
            (0..5_000)
                .map(|i| record(i, &format!("c{}", i % 7), b"line", pb::LogStream::Stdout))
                .collect(),
        );
        let mut enc = Encoder::default();
        let mut reqs = enc.add(&b, 1);
        assert_eq!(reqs.iter().map(|r| r.1).collect::<Vec<_>>(), [2_000, 2_000]);
        reqs.extend(enc.finish());
        let mut seen = Vec::new();
        for (req, n) in &reqs {
            assert!(*n as usize <= MAX_RECORDS, "{n}");
            let flat = decode(req);
            assert_eq!(flat.len() as u64, *n);
            seen.extend(flat.iter().map(|r| r.1["noco.seq"].parse::<u64>().unwrap()));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..5_000).collect::<Vec<_>>());

        // By size: one container's long lines are split into requests of about MAX_BYTES.
        let line = vec![b'y'; noco_proto::limits::MAX_LOG_LINE];
        let n = 3 * MAX_BYTES / line.len();
        let b = batch(
            (0..n as u64)
                .map(|i| record(i, "big", &line, pb::LogStream::Stdout))
                .collect(),
        );
        let mut reqs = enc.add(&b, 1);
        reqs.extend(enc.finish());
        assert!(reqs.len() >= 3, "{}", reqs.len());
        let mut total = 0;
        for (req, k) in &reqs {
            assert!(req.len() <= MAX_BYTES + line.len() + 1024, "{}", req.len());
            total += decode(req).len();
            assert!(*k > 0);
        }
        assert_eq!(total, n);
    }
}
