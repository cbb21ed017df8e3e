//! The telemetry stream: logs from the [`Spool`] and metrics samples to the server, on a
//! connection of its own.
//!
//! Why apart from the session: HTTP/2 streams on one connection share its flow-control window and
//! its TCP send buffer. A container writing as fast as it can would fill both, and a desired
//! state, a heartbeat or a rollout's health report queued behind megabytes of log lines would be
//! late — or the session would be cut as silent. On its own connection the telemetry stream can
//! only slow itself: when the server or the network is slow, the sender waits on flow control
//! while the collector keeps appending to the spool on disk, bounded.
//!
//! The protocol: the agent says `TelemetryHello`, the server answers `LogResume` (the highest
//! sequence it holds for this host, and how many bytes of tail it wants), the agent sends from
//! there — markers of dropped lines first — and the server acknowledges what it stored. So a
//! cut, a server restart (it holds nothing: the agent resends its newest `tail_bytes`) and an
//! agent restart (the spool is on disk) neither lose nor repeat a line.

use std::sync::Arc;
use std::time::Duration;

use noco_certs::dial::{self, ServerAddr, describe};
use noco_proto::limits::{MAX_LOG_BATCH, MAX_TELEMETRY_MESSAGE};
use noco_proto::v1 as pb;
use pb::telemetry_down::Msg as DownMsg;
use pb::telemetry_up::Msg as UpMsg;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::spool::{Spool, SpoolReader};
use crate::backoff::{Backoff, random_unit};
use crate::renewal::LiveCredential;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches in flight towards the connection at once.
const IN_FLIGHT: usize = 8;

/// The latest metrics sample (the sampler replaces it every interval).
pub type Latest = watch::Receiver<Option<Arc<pb::MetricsSample>>>;

/// Keep a telemetry stream up until the task is dropped, reconnecting with backoff.
pub async fn run(addr: ServerAddr, live: LiveCredential, spool: Arc<Spool>, mut metrics: Latest) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let (why, was_up) = stream_once(&addr, &live, &spool, &mut metrics).await;
        if was_up {
            backoff.reset();
        }
        let delay = backoff.next_delay(random_unit());
        tracing::info!("telemetry stream ended: {why}; again in {delay:.1?}");
        tokio::time::sleep(delay).await;
    }
}

/// One stream, until it ends: why, and whether it got as far as sending.
async fn stream_once(
    addr: &ServerAddr,
    live: &LiveCredential,
    spool: &Arc<Spool>,
    metrics: &mut Latest,
) -> (String, bool) {
    let tls = live.tls.clone();
    let channel = match dial::connect(addr, move || tls.load_full(), CONNECT_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return (format!("connecting: {}", describe(&e)), false),
    };
    let mut client = pb::telemetry_client::TelemetryClient::new(channel)
        .max_decoding_message_size(MAX_TELEMETRY_MESSAGE)
        .max_encoding_message_size(MAX_TELEMETRY_MESSAGE);
    let (tx, rx) = mpsc::channel::<pb::TelemetryUp>(IN_FLIGHT);
    let hello = pb::TelemetryHello {
        next_seq: spool.next_seq(),
    };
    let _ = tx
        .send(pb::TelemetryUp {
            msg: Some(UpMsg::Hello(hello)),
        })
        .await;
    let mut inbound = match client.stream(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (format!("{:?}: {}", status.code(), status.message()), false),
    };
    let resume = match tokio::time::timeout(RESUME_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(pb::TelemetryDown {
            msg: Some(DownMsg::Resume(r)),
        }))) => r,
        Ok(Ok(_)) => return ("the server did not answer with LogResume".into(), false),
        Ok(Err(status)) => return (format!("{:?}: {}", status.code(), status.message()), false),
        Err(_) => return ("no LogResume from the server".into(), false),
    };
    tracing::debug!(
        after = resume.after_seq,
        tail = resume.tail_bytes,
        "telemetry stream up"
    );
    spool.acknowledge(resume.after_seq);
    let reader = spool.reader(resume.after_seq, resume.tail_bytes);
    let sender = send_logs(reader, spool.clone(), tx.clone());
    let acks = async {
        loop {
            match inbound.message().await {
                Ok(Some(pb::TelemetryDown {
                    msg: Some(DownMsg::Ack(ack)),
                })) => spool.acknowledge(ack.seq),
                Ok(Some(_)) => {}
                Ok(None) => return "the server closed the stream".to_string(),
                Err(status) => return format!("{:?}: {}", status.code(), status.message()),
            }
        }
    };
    let samples = async {
        metrics.mark_changed();
        loop {
            if metrics.changed().await.is_err() {
                // No sampler: nothing more to send, and nothing wrong with the stream.
                std::future::pending::<()>().await;
            }
            let sample = metrics.borrow_and_update().clone();
            if let Some(sample) = sample {
                let msg = pb::TelemetryUp {
                    msg: Some(UpMsg::Metrics((*sample).clone())),
                };
                if tx.send(msg).await.is_err() {
                    return "the stream's send side closed".to_string();
                }
            }
        }
    };
    tokio::select! {
        why = sender => (why, true),
        why = acks => (why, true),
        why = samples => (why, true),
    }
}

/// Send the spool from the reader's position, following the writer, until the stream closes.
async fn send_logs(
    mut reader: SpoolReader,
    spool: Arc<Spool>,
    tx: mpsc::Sender<pb::TelemetryUp>,
) -> String {
    let mut written = spool.subscribe();
    loop {
        written.mark_unchanged();
        let (back, batch) = match tokio::task::spawn_blocking(move || {
            let batch = reader.next_batch(MAX_LOG_BATCH);
            (reader, batch)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => return format!("the spool reader stopped: {e}"),
        };
        reader = back;
        let records = match batch {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("reading the log spool: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            if written.changed().await.is_err() {
                return "the spool closed".into();
            }
            continue;
        }
        let msg = pb::TelemetryUp {
            msg: Some(UpMsg::Logs(pb::LogBatch { records })),
        };
        if tx.send(msg).await.is_err() {
            return "the stream's send side closed".into();
        }
    }
}
