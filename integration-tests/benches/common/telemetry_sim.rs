//! Simulated hosts' telemetry: each host (enrolled as in [`super::sim`]) opens its own mTLS
//! connection and `Telemetry.Stream` (TelemetryHello → LogResume) as `noco-agent` does, then
//! sends every second a LogBatch of realistic ~100-byte access-log lines of its containers
//! (stack [`SIM_STACK`], services [`SIM_SERVICES`]), numbered with increasing sequences, and
//! every few seconds a MetricsSample with the host's metrics and every container's; it reads
//! and counts the server's acks. The hosts' seconds are spread over the second.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use noco_certs::dial::{self, ServerAddr};
use noco_certs::tls;
use noco_proto::limits::MAX_TELEMETRY_MESSAGE;
use noco_proto::v1 as pb;
use pb::telemetry_down::Msg as DownMsg;
use pb::telemetry_up::Msg as UpMsg;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{
    CALL_TIMEOUT, CONNECT_TIMEOUT, Failures, HANDSHAKE_CONCURRENCY, MIN_ESTABLISHED, PhaseLimit,
    SimHost, collect_tasks, fmt_bytes, fmt_s, lock, rate, status_text, unix_ms,
};

/// The stack of the simulated hosts' containers, and its services.
pub const SIM_STACK: &str = "shop";
pub const SIM_SERVICES: [&str; 10] = [
    "web", "api", "worker", "db", "cache", "queue", "cron", "auth", "search", "mail",
];
/// Telemetry messages a simulated host queues towards its connection; when they are all in
/// flight, a second's batch waits for the next second (counted as backed up).
pub const SIM_IN_FLIGHT: usize = 4;

/// Counters over every simulated host's telemetry stream.
#[derive(Debug, Default)]
pub struct SimCounters {
    /// Records queued towards the server.
    pub sent: AtomicU64,
    /// Records the server acknowledged holding.
    pub acked: AtomicU64,
    /// Seconds whose batch waited, because the stream had [`SIM_IN_FLIGHT`] messages queued.
    pub backed_up: AtomicU64,
    /// Metrics samples queued towards the server.
    pub samples: AtomicU64,
    /// Why streams ended on their own.
    pub lost: Mutex<Failures>,
}

/// What a simulated host sends.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Its containers.
    pub containers: usize,
    /// Log lines a second, from its containers in turn (0: none).
    pub lines: usize,
    /// Seconds between its metrics samples.
    pub metrics_every: u64,
}

/// An open telemetry stream of a simulated host.
pub struct Stream {
    // Held so that the connection stays up as long as the stream.
    _client: pb::telemetry_client::TelemetryClient<Channel>,
    tx: mpsc::Sender<pb::TelemetryUp>,
    inbound: tonic::Streaming<pb::TelemetryDown>,
    pub after_seq: u64,
    pub tail_bytes: u64,
}

/// Connect with the host's certificate on a connection of its own, say TelemetryHello, wait for
/// LogResume (as `noco-agent` does).
pub async fn open_stream(addr: &ServerAddr, host: &SimHost) -> Result<Stream, String> {
    let config = Arc::new(
        tls::client_config(&host.ca_pem, &host.cert_pem, &host.key_pem)
            .map_err(|e| format!("TLS configuration: {e}"))?,
    );
    let channel = dial::connect(addr, move || config.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("connecting: {}", dial::describe(&e)))?;
    let mut client = pb::telemetry_client::TelemetryClient::new(channel)
        .max_decoding_message_size(MAX_TELEMETRY_MESSAGE)
        .max_encoding_message_size(MAX_TELEMETRY_MESSAGE);
    let (tx, rx) = mpsc::channel(SIM_IN_FLIGHT);
    tx.send(pb::TelemetryUp {
        msg: Some(UpMsg::Hello(pb::TelemetryHello { next_seq: 1 })),
    })
    .await
    .map_err(|_| "queueing TelemetryHello: the stream is closed".to_string())?;
    let mut inbound =
        match tokio::time::timeout(CALL_TIMEOUT, client.stream(ReceiverStream::new(rx))).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => return Err(format!("Telemetry.Stream: {}", status_text(&status))),
            Err(_) => {
                return Err(format!(
                    "Telemetry.Stream did not answer within {CALL_TIMEOUT:?}"
                ));
            }
        };
    let resume = match tokio::time::timeout(CALL_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(pb::TelemetryDown {
            msg: Some(DownMsg::Resume(r)),
        }))) => r,
        Ok(Ok(Some(other))) => return Err(format!("expected LogResume, got {other:?}")),
        Ok(Ok(None)) => return Err("the server closed the stream before LogResume".to_string()),
        Ok(Err(status)) => return Err(format!("waiting for LogResume: {}", status_text(&status))),
        Err(_) => return Err(format!("no LogResume within {CALL_TIMEOUT:?}")),
    };
    Ok(Stream {
        _client: client,
        tx,
        inbound,
        after_seq: resume.after_seq,
        tail_bytes: resume.tail_bytes,
    })
}

/// Open a telemetry stream for each host, at most [`HANDSHAKE_CONCURRENCY`] handshakes at a
/// time, printing the rate; each with the host's index. Fails when fewer than
/// [`MIN_ESTABLISHED`] of them opened.
pub async fn open_streams(
    addr: &ServerAddr,
    hosts: Vec<SimHost>,
    phase: PhaseLimit,
) -> anyhow::Result<Vec<(usize, Stream)>> {
    let n = hosts.len();
    let start = Instant::now();
    let limit = Arc::new(Semaphore::new(HANDSHAKE_CONCURRENCY));
    let tasks: Vec<_> = hosts
        .into_iter()
        .enumerate()
        .map(|(i, host)| {
            let addr = addr.clone();
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
                open_stream(&addr, &host).await.map(|s| (i, s))
            })
        })
        .collect();
    let (streams, failures) =
        collect_tasks("telemetry streams open", tasks, phase.deadline(n)).await;
    failures.report("telemetry streams");
    let opened = streams.len();
    let tail_bytes = streams.first().map_or(0, |(_, s)| s.tail_bytes);
    println!(
        "opened {opened}/{n} telemetry streams in {} ({}/s); LogResume asks for {} of tail",
        fmt_s(start.elapsed()),
        rate(opened, start.elapsed()),
        fmt_bytes(tail_bytes)
    );
    if (opened as f64) < n as f64 * MIN_ESTABLISHED {
        anyhow::bail!("only {opened} of {n} telemetry streams opened");
    }
    Ok(streams)
}

/// Start sending `load` on every stream (from [`open_streams`]), the hosts spread over the
/// second; abort the tasks (e.g. with [`super::drop_sessions`]) to stop.
pub fn start_feeding(
    streams: Vec<(usize, Stream)>,
    load: Load,
    counters: &Arc<SimCounters>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let n = streams.len().max(1) as u64;
    streams
        .into_iter()
        .map(|(i, stream)| {
            let offset = Duration::from_micros((i as u64 * 1_000_000) / n);
            tokio::spawn(feed(stream, i, load, offset, counters.clone()))
        })
        .collect()
}

/// One simulated host's containers: their names, ids and lines.
pub struct SimContainers {
    /// `(service, container name, container id)`.
    names: Vec<(String, String, String)>,
}

impl SimContainers {
    /// The `n` containers of host number `host`.
    pub fn new(host: usize, n: usize) -> SimContainers {
        let names = (0..n)
            .map(|c| {
                let base = SIM_SERVICES[c % SIM_SERVICES.len()];
                let service = if c < SIM_SERVICES.len() {
                    base.to_string()
                } else {
                    format!("{base}{}", c / SIM_SERVICES.len() + 1)
                };
                let container = format!("{SIM_STACK}-{service}-1");
                // 64 hex digits, as Docker's ids.
                let id = format!("{:032x}{:032x}", host as u128 + 1, c as u128 + 1);
                (service, container, id)
            })
            .collect();
        SimContainers { names }
    }

    /// Their services, in order.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(service, _, _)| service.as_str())
    }

    /// A second's records: `count` lines from sequence `seq`, from the containers in turn
    /// (starting with the one after the previous batch's last, when a batch is not a multiple
    /// of the containers), spread over the past second.
    pub fn batch(&self, seq: u64, count: usize, now: SystemTime) -> Vec<pb::LogRecord> {
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let stamp = humantime::format_rfc3339_millis(now).to_string();
        let containers = self.names.len().max(1);
        let first = (seq.saturating_sub(1) % containers as u64) as usize;
        // Lines of each container this second: each container's k-th line at k/per of it.
        let per = count.div_ceil(containers).max(1) as i64;
        let mut records = Vec::with_capacity(count);
        for k in 0..count {
            let (service, container, id) = &self.names[(first + k) % containers];
            let s = seq + k as u64;
            let j = (k / containers) as i64;
            records.push(pb::LogRecord {
                seq: s,
                time_unix_nanos: nanos - 1_000_000_000 + (j * 1_000_000_000 / per),
                stack: SIM_STACK.to_string(),
                service: service.clone(),
                number: 1,
                container: container.clone(),
                container_id: id.clone(),
                stream: pb::LogStream::Stdout.into(),
                line: line(&stamp, service, s).into_bytes(),
                truncated: 0,
                dropped: 0,
            });
        }
        records
    }

    /// A metrics sample of the host and its containers, every field set as an agent sets it.
    pub fn sample(&self, tick: u64, now_ms: i64) -> pb::MetricsSample {
        let wobble = (tick % 7) as f64;
        pb::MetricsSample {
            time_unix_ms: now_ms,
            host: Some(pb::HostMetrics {
                cpus: 4,
                cpu_percent: 12.5 + wobble,
                memory_used_bytes: (3 << 30) + tick * 4096,
                memory_total_bytes: 8 << 30,
                load1: 0.4 + wobble / 10.0,
                load5: 0.5,
                load15: 0.6,
                disks: vec![pb::DiskUsage {
                    mount: "/".to_string(),
                    used_bytes: 21 << 30,
                    total_bytes: 80 << 30,
                }],
                net_rx_bytes: 1_000_000_000 + tick * 250_000,
                net_tx_bytes: 800_000_000 + tick * 200_000,
                containers_running: self.names.len() as u32,
                containers_total: self.names.len() as u32,
                uptime_secs: 86_400 + tick,
            }),
            containers: self
                .names
                .iter()
                .map(|(service, container, id)| pb::ContainerMetrics {
                    stack: SIM_STACK.to_string(),
                    service: service.clone(),
                    number: 1,
                    container: container.clone(),
                    container_id: id.clone(),
                    state: "running".to_string(),
                    health: pb::Health::Healthy.into(),
                    restarts: 0,
                    cpu_percent: 1.5 + wobble,
                    memory_bytes: (64 << 20) + tick * 1024,
                    memory_limit_bytes: 0,
                    net_rx_bytes: 10_000_000 + tick * 10_000,
                    net_tx_bytes: 8_000_000 + tick * 8_000,
                    block_read_bytes: 1 << 20,
                    block_write_bytes: 2 << 20,
                    pids: 12,
                })
                .collect(),
            collect_ms: 3,
        }
    }
}

/// A realistic line of about 100 bytes (an access log).
fn line(stamp: &str, service: &str, seq: u64) -> String {
    let path = ["items", "orders", "users", "carts", "search"][(seq % 5) as usize];
    let status = if seq.is_multiple_of(50) { 404 } else { 200 };
    format!(
        "{stamp} INFO {service}: GET /api/v1/{path}/{} {status} {}ms req={:012x} ip=10.1.{}.{}",
        seq % 10_000,
        seq % 97 + 1,
        seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16,
        seq % 200 + 10,
        seq % 250 + 2
    )
}

/// Send a second's batch every second (starting at `offset` into the second, so the hosts are
/// spread over it) and a metrics sample every [`Load::metrics_every`] seconds; count acks. Until
/// the stream ends (why is recorded) or the task is aborted.
pub async fn feed(
    mut stream: Stream,
    host: usize,
    load: Load,
    offset: Duration,
    counters: Arc<SimCounters>,
) {
    let containers = SimContainers::new(host, load.containers);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + offset, Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut next_seq = stream.after_seq + 1;
    let mut acked = stream.after_seq;
    let mut ticks = 0u64;
    let why = loop {
        tokio::select! {
            msg = stream.inbound.message() => match msg {
                Ok(Some(pb::TelemetryDown { msg: Some(DownMsg::Ack(ack)) })) => {
                    if ack.seq > acked {
                        counters.acked.fetch_add(ack.seq - acked, Ordering::Relaxed);
                        acked = ack.seq;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break "the server closed the stream".to_string(),
                Err(status) => break format!("stream ended: {}", status_text(&status)),
            },
            _ = tick.tick() => {
                let now = SystemTime::now();
                if ticks.is_multiple_of(load.metrics_every.max(1)) {
                    let sample = pb::TelemetryUp {
                        msg: Some(UpMsg::Metrics(containers.sample(ticks, unix_ms()))),
                    };
                    match stream.tx.try_send(sample) {
                        Ok(()) => {
                            counters.samples.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            break "the stream's send side closed".to_string();
                        }
                    }
                }
                ticks += 1;
                if load.lines == 0 {
                    continue;
                }
                let records = containers.batch(next_seq, load.lines, now);
                let n = records.len() as u64;
                let batch = pb::TelemetryUp { msg: Some(UpMsg::Logs(pb::LogBatch { records })) };
                match stream.tx.try_send(batch) {
                    Ok(()) => {
                        next_seq += n;
                        counters.sent.fetch_add(n, Ordering::Relaxed);
                    }
                    // Its numbers are used by the next second's batch.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        counters.backed_up.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        break "the stream's send side closed".to_string();
                    }
                }
            }
        }
    };
    lock(&counters.lost).add(why);
}
