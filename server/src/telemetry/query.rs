//! A `Logs` reader: which records a request wants ([`LogQuery`]), the history merged by time,
//! then (with follow) new records as the hub stores them ([`start`]).
//!
//! Each reader is one task writing into a bounded channel of a few response messages: a client
//! that reads slowly blocks only its own task, while the hub's broadcast ring moves on without
//! it. When the task gets to the ring again and batches it missed are gone, it says how many
//! records it skipped (exactly: from the hub-wide indexes of the batches; counted before the
//! reader's own filters, so it is the number of lines the server stored meanwhile, of every
//! host) in a [`pb::LogEntry`] with `skipped` set, and continues with the oldest batch left.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use noco_proto::v1 as pb;
use regex::bytes::{Regex, RegexBuilder};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::logs::{Batch, LogHub, Selection, SnapshotContainer, Stored};
use crate::error::Error;

/// A response message holds at most this many entries…
pub const CHUNK_ENTRIES: usize = 500;
/// …or about this many bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Response messages waiting for a slow client, per reader.
const READER_BUFFER: usize = 4;
/// The longest `grep` pattern, and the most memory its compiled form may take.
const MAX_GREP: usize = 1024;
const GREP_SIZE_LIMIT: usize = 1 << 20;
/// What an entry costs in a response besides its line and strings (an estimate of the framing).
const ENTRY_OVERHEAD: usize = 48;

pub type LogsStream = ReceiverStream<Result<pb::LogsResponse, Status>>;

/// What a `Logs` request asks for.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub selection: Selection,
    pub grep: Option<Regex>,
    /// At most this many of the newest records per container in the history (0: all).
    pub tail: usize,
    pub follow: bool,
}

impl LogQuery {
    /// The query of `req`, its hosts already resolved to ids (`None`: every host).
    pub fn new(
        req: &pb::LogsRequest,
        hosts: Option<std::collections::HashSet<String>>,
    ) -> Result<LogQuery, Error> {
        let grep = match req.grep.as_str() {
            "" => None,
            pattern if pattern.len() > MAX_GREP => {
                return Err(Error::Invalid(format!(
                    "the grep pattern is {} bytes long; at most {MAX_GREP}",
                    pattern.len()
                )));
            }
            pattern => Some(
                RegexBuilder::new(pattern)
                    .size_limit(GREP_SIZE_LIMIT)
                    .dfa_size_limit(GREP_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        Error::Invalid(format!("grep {pattern:?} is not a usable regex: {e}"))
                    })?,
            ),
        };
        Ok(LogQuery {
            selection: Selection {
                hosts,
                stack: req.stack.clone(),
                services: req.services.iter().cloned().collect(),
                since_unix_nanos: req.since_unix_ms.max(0).saturating_mul(1_000_000),
            },
            grep,
            tail: req.tail as usize,
            follow: req.follow,
        })
    }

    /// Whether the content of `s` is wanted (markers always are).
    fn content(&self, s: &Stored) -> bool {
        s.is_marker()
            || self
                .grep
                .as_ref()
                .is_none_or(|re| re.is_match(&s.record.line))
    }
}

/// Start a reader of `hub`; its responses come out of the returned stream, which ends after the
/// history (without follow) or when the client goes away.
pub fn start(hub: &LogHub, query: LogQuery) -> LogsStream {
    // Without grep, the newest `tail` of each container can be cut under the lock already.
    let limit = (query.tail > 0 && query.grep.is_none()).then_some(query.tail);
    let snapshot = hub.snapshot(&query.selection, limit, query.follow);
    let (tx, rx) = mpsc::channel(READER_BUFFER);
    tokio::spawn(async move {
        let query = Arc::new(query);
        let q = query.clone();
        let containers = snapshot.containers;
        // Grep on the blocking pool: a large history must not hold up a runtime worker.
        let history = tokio::task::spawn_blocking(move || pick(&q, containers)).await;
        let history = match history {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("reading log history: {e}");
                let _ = tx
                    .send(Err(Status::internal(
                        "internal error reading the log history",
                    )))
                    .await;
                return;
            }
        };
        let mut out = Chunk::default();
        for (name, s) in Merge::new(history) {
            if out.push(entry(&name, &s)) && !out.flush(&tx).await {
                return;
            }
        }
        if !out.flush(&tx).await {
            return;
        }
        if let Some(follow) = snapshot.follow {
            follow_hub(&query, follow, snapshot.next_index, out, &tx).await;
        }
    });
    ReceiverStream::new(rx)
}

/// The history of each container: grep, then tail.
fn pick(query: &LogQuery, containers: Vec<SnapshotContainer>) -> Vec<SnapshotContainer> {
    let mut picked = Vec::with_capacity(containers.len());
    for c in containers {
        let mut records: Vec<Arc<Stored>> = if query.grep.is_some() {
            let limit = if query.tail == 0 {
                usize::MAX
            } else {
                query.tail
            };
            let mut r: Vec<Arc<Stored>> = c
                .records
                .into_iter()
                .rev()
                .filter(|s| query.content(s))
                .take(limit)
                .collect();
            r.reverse();
            r
        } else {
            c.records
        };
        if query.tail > 0 && records.len() > query.tail {
            records.drain(..records.len() - query.tail);
        }
        if !records.is_empty() {
            picked.push(SnapshotContainer {
                host_name: c.host_name,
                records,
            });
        }
    }
    picked
}

/// The containers' histories merged by time, each container's own order kept (its sequence):
/// a k-way merge, lazily, so each record is let go of once sent.
struct Merge {
    containers: Vec<(Arc<str>, std::vec::IntoIter<Arc<Stored>>)>,
    heads: Vec<Option<Arc<Stored>>>,
    /// Each container's next record by (time, container).
    heap: BinaryHeap<Reverse<(i64, usize)>>,
}

impl Merge {
    fn new(picked: Vec<SnapshotContainer>) -> Merge {
        let mut m = Merge {
            containers: Vec::with_capacity(picked.len()),
            heads: Vec::with_capacity(picked.len()),
            heap: BinaryHeap::with_capacity(picked.len()),
        };
        for c in picked {
            let mut records = c.records.into_iter();
            let head = records.next();
            if let Some(h) = &head {
                m.heap
                    .push(Reverse((h.record.time_unix_nanos, m.containers.len())));
            }
            m.containers.push((c.host_name, records));
            m.heads.push(head);
        }
        m
    }
}

impl Iterator for Merge {
    type Item = (Arc<str>, Arc<Stored>);

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((_, i)) = self.heap.pop()?;
        let (name, records) = &mut self.containers[i];
        let next = records.next();
        if let Some(n) = &next {
            self.heap.push(Reverse((n.record.time_unix_nanos, i)));
        }
        let head = std::mem::replace(&mut self.heads[i], next)?;
        Some((name.clone(), head))
    }
}

/// Follow the hub from `next_index` on, until the client goes away or the hub does.
async fn follow_hub(
    query: &LogQuery,
    mut follow: broadcast::Receiver<Arc<Batch>>,
    next_index: u64,
    mut out: Chunk,
    tx: &mpsc::Sender<Result<pb::LogsResponse, Status>>,
) {
    let mut expected = next_index;
    loop {
        let received = tokio::select! {
            biased;
            _ = tx.closed() => return,
            r = follow.recv() => r,
        };
        let batch = match received {
            Ok(b) => b,
            // The next batch says how far behind this reader fell.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        if !take(query, &batch, &mut expected, &mut out, tx).await {
            return;
        }
        // Whatever else is there already goes out in the same messages.
        loop {
            match follow.try_recv() {
                Ok(batch) => {
                    if !take(query, &batch, &mut expected, &mut out, tx).await {
                        return;
                    }
                }
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    let _ = out.flush(tx).await;
                    return;
                }
            }
        }
        if !out.flush(tx).await {
            return;
        }
    }
}

/// Add what the reader wants of `batch` to `out` (sending full messages); false when the client
/// went away.
async fn take(
    query: &LogQuery,
    batch: &Batch,
    expected: &mut u64,
    out: &mut Chunk,
    tx: &mpsc::Sender<Result<pb::LogsResponse, Status>>,
) -> bool {
    if batch.end() <= *expected {
        // In the history already (cannot happen: the snapshot and the subscription are taken
        // under one lock; kept as the guarantee against duplicates).
        return true;
    }
    if batch.first > *expected {
        let skipped = pb::LogEntry {
            skipped: batch.first - *expected,
            ..Default::default()
        };
        if out.push(skipped) && !out.flush(tx).await {
            return false;
        }
    }
    let from = expected.saturating_sub(batch.first) as usize;
    *expected = batch.end();
    if !query.selection.host(&batch.host_id) {
        return true;
    }
    for s in &batch.records[from..] {
        if query.selection.record(&s.record)
            && query.content(s)
            && out.push(entry(&batch.host_name, s))
            && !out.flush(tx).await
        {
            return false;
        }
    }
    true
}

fn entry(host_name: &str, s: &Stored) -> pb::LogEntry {
    pb::LogEntry {
        host_id: s.host_id.to_string(),
        host: host_name.to_string(),
        record: Some(s.record.clone()),
        skipped: 0,
    }
}

/// Entries gathered for the next response message.
#[derive(Debug, Default)]
struct Chunk {
    entries: Vec<pb::LogEntry>,
    bytes: usize,
}

impl Chunk {
    /// Add an entry; true when the message is full.
    fn push(&mut self, e: pb::LogEntry) -> bool {
        self.bytes += ENTRY_OVERHEAD
            + e.host_id.len()
            + e.host.len()
            + e.record.as_ref().map_or(0, |r| {
                r.line.len()
                    + r.stack.len()
                    + r.service.len()
                    + r.container.len()
                    + r.container_id.len()
            });
        self.entries.push(e);
        self.entries.len() >= CHUNK_ENTRIES || self.bytes >= CHUNK_BYTES
    }

    /// Send what is gathered (nothing when empty); false when the client went away.
    async fn flush(&mut self, tx: &mpsc::Sender<Result<pb::LogsResponse, Status>>) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        self.bytes = 0;
        let entries = std::mem::take(&mut self.entries);
        tx.send(Ok(pb::LogsResponse { entries })).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;
    use crate::telemetry::logs::LogCaps;
    use crate::telemetry::logs::tests::rec;

    fn hub(follow_buffer: usize) -> LogHub {
        LogHub::with_follow_buffer(
            LogCaps {
                lines_per_container: 100_000,
                bytes_per_host: 1 << 30,
                bytes_total: 1 << 30,
            },
            follow_buffer,
        )
    }

    fn query(req: pb::LogsRequest) -> LogQuery {
        let hosts = (!req.hosts.is_empty()).then(|| req.hosts.iter().cloned().collect());
        LogQuery::new(&req, hosts).unwrap()
    }

    /// Everything a finished (not following) reader sends.
    async fn read_all(stream: LogsStream) -> Vec<pb::LogEntry> {
        let responses: Vec<_> = stream.collect().await;
        responses
            .into_iter()
            .flat_map(|r| r.unwrap().entries)
            .collect()
    }

    /// The next `n` entries of a following reader.
    async fn read_n(stream: &mut LogsStream, n: usize) -> Vec<pb::LogEntry> {
        let mut out = Vec::new();
        while out.len() < n {
            let r = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("entries in time")
                .expect("the stream goes on")
                .unwrap();
            assert!(r.entries.len() <= CHUNK_ENTRIES);
            out.extend(r.entries);
        }
        out
    }

    fn line(e: &pb::LogEntry) -> String {
        String::from_utf8_lossy(&e.record.as_ref().unwrap().line).into_owned()
    }

    #[tokio::test]
    async fn history_is_merged_by_time_and_filtered() {
        let hub = hub(16);
        hub.open("h1", "one", 1);
        hub.open("h2", "two", 1);
        let mut a = rec(1, "web-1", "web at 10");
        a.time_unix_nanos = 10;
        let mut b = rec(2, "web-1", "web at 30");
        b.time_unix_nanos = 30;
        let mut c = rec(1, "db-1", "db at 20");
        c.time_unix_nanos = 20;
        let mut d = rec(2, "post-1", "a container of another stack");
        d.stack = "blog".into();
        hub.ingest("h1", vec![a, b]);
        hub.ingest("h2", vec![c, d]);
        let got = read_all(start(
            &hub,
            query(pb::LogsRequest {
                stack: "shop".into(),
                ..Default::default()
            }),
        ))
        .await;
        let lines: Vec<String> = got.iter().map(line).collect();
        assert_eq!(lines, ["web at 10", "db at 20", "web at 30"]);
        assert_eq!(got[1].host, "two");
        assert_eq!(got[1].host_id, "h2");
        let got = read_all(start(
            &hub,
            query(pb::LogsRequest {
                hosts: vec!["h1".into()],
                services: vec!["web".into()],
                since_unix_ms: 0,
                ..Default::default()
            }),
        ))
        .await;
        assert_eq!(
            got.iter().map(line).collect::<Vec<_>>(),
            ["web at 10", "web at 30"]
        );
    }

    #[tokio::test]
    async fn grep_and_tail_per_container_and_markers_pass_grep() {
        let hub = hub(16);
        let mut seq = 0;
        let mut batch = Vec::new();
        for i in 0..20 {
            seq += 1;
            batch.push(rec(seq, "web-1", &format!("GET /item/{i}")));
            seq += 1;
            batch.push(rec(seq, "web-1", &format!("POST /cart/{i}")));
        }
        seq += 1;
        let mut marker = rec(seq, "web-1", "3 lines of web-1 were lost");
        marker.dropped = 3;
        batch.push(marker);
        for i in 0..5 {
            seq += 1;
            batch.push(rec(seq, "db-1", &format!("GET nothing {i}")));
        }
        hub.ingest("h1", batch);
        let got = read_all(start(
            &hub,
            query(pb::LogsRequest {
                grep: "^POST /cart/1".into(),
                ..Default::default()
            }),
        ))
        .await;
        let mut lines: Vec<String> = got.iter().map(line).collect();
        lines.sort();
        assert_eq!(lines.len(), 12, "{lines:?}"); // /cart/1, /cart/10..19, the marker
        assert!(lines.contains(&"3 lines of web-1 were lost".to_string()));
        // tail: the newest 3 of each container; with grep, the newest 3 that match.
        let got = read_all(start(
            &hub,
            query(pb::LogsRequest {
                tail: 3,
                ..Default::default()
            }),
        ))
        .await;
        let lines: Vec<String> = got.iter().map(line).collect();
        assert_eq!(
            lines,
            [
                "GET /item/19",
                "POST /cart/19",
                "3 lines of web-1 were lost",
                "GET nothing 2",
                "GET nothing 3",
                "GET nothing 4"
            ]
        );
        let got = read_all(start(
            &hub,
            query(pb::LogsRequest {
                tail: 2,
                grep: "GET".into(),
                ..Default::default()
            }),
        ))
        .await;
        let mut lines: Vec<String> = got.iter().map(line).collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "3 lines of web-1 were lost",
                "GET /item/19",
                "GET nothing 3",
                "GET nothing 4"
            ]
        );
    }

    #[test]
    fn a_bad_regex_names_itself_and_the_error() {
        let e = LogQuery::new(
            &pb::LogsRequest {
                grep: "a(b".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        let Error::Invalid(m) = e else {
            panic!("{e:?}")
        };
        assert!(m.contains("\"a(b\"") && m.contains("unclosed"), "{m}");
        let e = LogQuery::new(
            &pb::LogsRequest {
                grep: "x{100000}".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    }

    #[tokio::test]
    async fn history_then_follow_has_no_gap_and_no_duplicate() {
        let hub = Arc::new(hub(4096));
        let writer = {
            let hub = hub.clone();
            tokio::spawn(async move {
                for seq in 1..=3000u64 {
                    hub.ingest("h1", vec![rec(seq, "web-1", &seq.to_string())]);
                    if seq % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        // Readers start at different points of the writing.
        let mut readers = Vec::new();
        for _ in 0..5 {
            readers.push(start(
                &hub,
                query(pb::LogsRequest {
                    follow: true,
                    ..Default::default()
                }),
            ));
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        for mut r in readers {
            let got = read_n(&mut r, 3000).await;
            let seqs: Vec<u64> = got.iter().map(|e| e.record.as_ref().unwrap().seq).collect();
            assert_eq!(seqs, (1..=3000).collect::<Vec<_>>());
            assert!(got.iter().all(|e| e.skipped == 0));
        }
    }

    #[tokio::test]
    async fn a_lagging_follower_gets_a_skipped_marker_and_the_others_do_not() {
        let hub = Arc::new(hub(32));
        let mut stalled = start(
            &hub,
            query(pb::LogsRequest {
                follow: true,
                ..Default::default()
            }),
        );
        let mut keeping_up = start(
            &hub,
            query(pb::LogsRequest {
                follow: true,
                ..Default::default()
            }),
        );
        // 200 batches of 10 lines; one reader takes each as it comes, the other none.
        let mut fast = Vec::new();
        let mut seq = 0;
        for _ in 0..200 {
            let batch = (0..10)
                .map(|_| {
                    seq += 1;
                    rec(seq, "web-1", "line")
                })
                .collect();
            hub.ingest("h1", batch);
            fast.extend(read_n(&mut keeping_up, 10).await);
        }
        assert_eq!(fast.len(), 2000);
        assert!(
            fast.iter().all(|e| e.skipped == 0),
            "the reader that kept up skipped nothing"
        );
        // The stalled one: what was buffered, then the skip marker, then the last batches.
        let mut got = Vec::new();
        while got
            .iter()
            .filter(|e: &&pb::LogEntry| e.record.is_some())
            .count()
            + got
                .iter()
                .map(|e: &pb::LogEntry| e.skipped as usize)
                .sum::<usize>()
            < 2000
        {
            got.extend(read_n(&mut stalled, 1).await);
        }
        let skipped: u64 = got.iter().map(|e| e.skipped).sum();
        assert!(skipped > 0, "the stalled reader was told it skipped lines");
        assert_eq!(skipped % 10, 0, "whole batches, counted in lines");
        let lines = got.iter().filter(|e| e.record.is_some()).count() as u64;
        assert_eq!(lines + skipped, 2000);
        let seqs: Vec<u64> = got
            .iter()
            .filter_map(|e| e.record.as_ref().map(|r| r.seq))
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seqs.last(), Some(&2000));
    }

    #[tokio::test]
    async fn a_reader_whose_client_went_away_ends() {
        let hub = Arc::new(hub(8));
        let reader = start(
            &hub,
            query(pb::LogsRequest {
                follow: true,
                ..Default::default()
            }),
        );
        drop(reader);
        // The task notices and goes: the hub's followers fall to none.
        tokio::time::timeout(Duration::from_secs(5), async {
            while hub.followers() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the reader ended");
    }
}
