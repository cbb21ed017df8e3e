//! The log hub: every container's recent log records, in memory, in bounded rings, and the
//! followers of new ones.
//!
//! Records arrive per host ([`LogHub::ingest`], from the host's telemetry stream) with a sequence
//! number that is strictly increasing over all the host's containers; a record at or below the
//! host's highest sequence so far is a resend and is dropped, so nothing is stored twice. Each
//! record is kept once, behind an [`Arc`], in the ring of its container (keyed by host and
//! container id); rings of containers that are gone stay until the caps evict them.
//!
//! Memory is accounted, not guessed: a record costs the heap blocks of its line and strings and
//! [`RECORD_OVERHEAD`]. Three caps ([`LogCaps`]), enforced at the end of every ingest:
//! - lines per container: its oldest record goes;
//! - bytes per host: the oldest record of the host's *largest* container goes, so one noisy
//!   container cannot push out the recent lines of the others;
//! - bytes in total: the host holding the most bytes gives up a record the same way, so one
//!   noisy host cannot push out the others.
//!
//! The largest container of a host and the largest host are found through ordered indexes
//! (`(bytes, key)` sets), so eviction costs O(log n) per record whatever the number of hosts.
//!
//! Followers subscribe to a [`broadcast`] of ingested batches. Every stored record is given a
//! hub-wide index in ingest order; a batch carries the index of its first record, so a follower
//! that fell behind (and lost batches to the bounded ring) knows exactly how many records it
//! missed. Broadcasting happens under the hub's lock, so batches leave in the order they were
//! stored, and [`LogHub::snapshot`] subscribes and copies under that same lock: a reader gets
//! every record exactly once, either in its snapshot or from the broadcast.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use noco_proto::limits::MAX_LOG_LINE;
use noco_proto::v1 as pb;
use tokio::sync::broadcast;

/// What a record costs besides the heap blocks of its line and strings: the `Stored` itself in
/// its `Arc` block (with the allocator's header) and its ring slot. Measured against RSS with
/// 1,000 hosts at the 64 MiB cap (`benches/logs.rs` part 4), a flat 128 B undercounted by half.
pub const RECORD_OVERHEAD: u64 = (std::mem::size_of::<Stored>() + 16 + 16 + 8) as u64;

/// What a stored record counts for in the hub's accounting (after it is clipped).
pub fn record_cost(r: &pb::LogRecord) -> u64 {
    heap_block(r.line.len())
        + heap_block(r.stack.len())
        + heap_block(r.service.len())
        + heap_block(r.container.len())
        + heap_block(r.container_id.len())
        + RECORD_OVERHEAD
}

/// What glibc's malloc takes for a block of `len` bytes: the size plus an 8-byte header, in
/// 16-byte steps, at least 32 (nothing for an empty string).
fn heap_block(len: usize) -> u64 {
    if len == 0 {
        0
    } else {
        ((len + 8).div_ceil(16) * 16).max(32) as u64
    }
}

/// Batches kept for followers: enough for an eighth of the total cap in full batches, at least
/// [`MIN_FOLLOW_BUFFER`], at most [`FOLLOW_BUFFER`]. A follower further behind is told how many
/// records it skipped. The ring holds `Arc`s of stored records, so under a flood it keeps records
/// the caps have evicted alive until they leave it: the hub's memory is at most the total cap
/// plus `batches × MAX_LOG_BATCH` (an eighth of the cap; 16 MiB at the smallest).
pub const FOLLOW_BUFFER: usize = 1024;
pub const MIN_FOLLOW_BUFFER: usize = 64;

/// The follow ring's length for `caps` (see [`FOLLOW_BUFFER`]).
pub fn follow_buffer(caps: &LogCaps) -> usize {
    let per_batch = noco_proto::limits::MAX_LOG_BATCH as u64;
    ((caps.bytes_total / 8 / per_batch) as usize).clamp(MIN_FOLLOW_BUFFER, FOLLOW_BUFFER)
}

/// Longest stack, service, container name or id kept (agents are not trusted to send short
/// ones).
const MAX_NAME: usize = 256;

/// The caps of the hub (flags of `noco-server run`, in [`crate::core::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCaps {
    pub lines_per_container: usize,
    pub bytes_per_host: u64,
    pub bytes_total: u64,
}

/// One stored record of one host.
#[derive(Debug)]
pub struct Stored {
    pub host_id: Arc<str>,
    pub record: pb::LogRecord,
    cost: u64,
}

impl Stored {
    pub(crate) fn new(host_id: Arc<str>, mut record: pb::LogRecord) -> Stored {
        if record.line.len() > MAX_LOG_LINE {
            record.truncated += (record.line.len() - MAX_LOG_LINE) as u64;
            record.line.truncate(MAX_LOG_LINE);
        }
        for s in [
            &mut record.stack,
            &mut record.service,
            &mut record.container,
            &mut record.container_id,
        ] {
            clip(s);
        }
        let cost = record_cost(&record);
        Stored {
            host_id,
            record,
            cost,
        }
    }

    /// The bytes this record counts for.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// A record noco wrote about a stream (lines lost, a driver that cannot be read), not a line
    /// of the container: it passes every filter on content.
    pub fn is_marker(&self) -> bool {
        self.record.dropped > 0 || self.record.stream == pb::LogStream::Noco as i32
    }

    /// The key of the record's container within its host: its id, else its name.
    pub fn container_key(&self) -> &str {
        container_key(&self.record)
    }
}

fn container_key(r: &pb::LogRecord) -> &str {
    if r.container_id.is_empty() {
        &r.container
    } else {
        &r.container_id
    }
}

fn clip(s: &mut String) {
    if s.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Records of one host stored by one ingest, in order; `first` is the hub-wide index of the
/// first of them (the next batch starts at `first + records.len()`).
#[derive(Debug)]
pub struct Batch {
    pub host_id: Arc<str>,
    pub host_name: Arc<str>,
    pub first: u64,
    pub records: Vec<Arc<Stored>>,
}

impl Batch {
    /// The index after this batch's last record.
    pub fn end(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

/// What the hub holds, as accounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounted {
    /// Bytes of every record held (what [`LogCaps::bytes_total`] caps).
    pub bytes: u64,
    pub records: usize,
    pub containers: usize,
    /// The bytes of the host holding the most (what [`LogCaps::bytes_per_host`] caps).
    pub largest_host_bytes: u64,
}

/// Which records a reader wants, of those cheap to decide under the hub's lock.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Host ids; `None`: every host.
    pub hosts: Option<HashSet<String>>,
    /// Empty: every stack.
    pub stack: String,
    /// Empty: every service.
    pub services: HashSet<String>,
    /// Only records at or after this time (0: all).
    pub since_unix_nanos: i64,
}

impl Selection {
    pub fn host(&self, host_id: &str) -> bool {
        self.hosts.as_ref().is_none_or(|h| h.contains(host_id))
    }

    /// Whether the container of `r` is wanted (its stack and service).
    pub fn container(&self, r: &pb::LogRecord) -> bool {
        (self.stack.is_empty() || r.stack == self.stack)
            && (self.services.is_empty() || self.services.contains(&r.service))
    }

    /// Whether `r` is wanted, its host aside.
    pub fn record(&self, r: &pb::LogRecord) -> bool {
        self.container(r) && r.time_unix_nanos >= self.since_unix_nanos
    }
}

/// The records a reader starts from, and (when following) its subscription to what comes next.
#[derive(Debug)]
pub struct Snapshot {
    /// Per matching container, its selected records, oldest first.
    pub containers: Vec<SnapshotContainer>,
    /// The hub-wide index of the next record to be stored: every record below it is in this
    /// snapshot (or not selected, or evicted), every record at or above it comes through
    /// `follow`.
    pub next_index: u64,
    pub follow: Option<broadcast::Receiver<Arc<Batch>>>,
}

#[derive(Debug)]
pub struct SnapshotContainer {
    pub host_name: Arc<str>,
    pub records: Vec<Arc<Stored>>,
}

#[derive(Debug)]
struct Ring {
    key: Arc<str>,
    records: VecDeque<Arc<Stored>>,
    bytes: u64,
    /// Taken out of its host's size index during an ingest (put back at its end).
    unindexed: bool,
}

#[derive(Debug)]
struct HostLogs {
    name: Arc<str>,
    /// The highest sequence stored (or skipped over) for this host: records at or below it are
    /// resends.
    high_seq: u64,
    bytes: u64,
    containers: HashMap<Arc<str>, Ring>,
    /// `(bytes, container)` of every ring: the last is the largest.
    by_size: BTreeSet<(u64, Arc<str>)>,
}

impl HostLogs {
    fn new(name: Arc<str>) -> Self {
        HostLogs {
            name,
            high_seq: 0,
            bytes: 0,
            containers: HashMap::new(),
            by_size: BTreeSet::new(),
        }
    }

    /// Evict the oldest record of the largest container; the bytes freed (0: nothing left).
    fn evict_from_largest(&mut self) -> u64 {
        let Some((_, key)) = self.by_size.pop_last() else {
            return 0;
        };
        let Some(ring) = self.containers.get_mut(&key) else {
            return 0;
        };
        let freed = ring.records.pop_front().map_or(0, |r| r.cost);
        ring.bytes -= freed;
        self.bytes -= freed;
        if ring.records.is_empty() {
            self.containers.remove(&key);
        } else {
            self.by_size.insert((ring.bytes, key));
        }
        freed
    }
}

#[derive(Debug, Default)]
struct Inner {
    hosts: HashMap<Arc<str>, HostLogs>,
    /// `(bytes, host)` of every host: the last holds the most.
    by_size: BTreeSet<(u64, Arc<str>)>,
    bytes: u64,
    next_index: u64,
}

#[derive(Debug)]
pub struct LogHub {
    inner: Mutex<Inner>,
    caps: LogCaps,
    follow: broadcast::Sender<Arc<Batch>>,
}

impl LogHub {
    pub fn new(caps: LogCaps) -> Self {
        Self::with_follow_buffer(caps, follow_buffer(&caps))
    }

    /// A hub whose followers' ring holds `batches` batches (tests make it small).
    pub fn with_follow_buffer(caps: LogCaps, batches: usize) -> Self {
        let caps = LogCaps {
            lines_per_container: caps.lines_per_container.max(1),
            ..caps
        };
        let (follow, _) = broadcast::channel(batches.max(1));
        LogHub {
            inner: Mutex::default(),
            caps,
            follow,
        }
    }

    pub fn caps(&self) -> LogCaps {
        self.caps
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A host's telemetry stream opened: remember its name and return the highest sequence held
    /// (where the agent resumes). `agent_next_seq` is the sequence the agent will give its next
    /// record; when it is not above what the server holds the agent has started numbering anew
    /// (its spool was lost), and the server follows it rather than dropping its records as
    /// resends until they pass the old numbers.
    pub fn open(&self, host_id: &str, host_name: &str, agent_next_seq: u64) -> u64 {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if !inner.hosts.contains_key(host_id) {
            let key: Arc<str> = Arc::from(host_id);
            inner.by_size.insert((0, key.clone()));
            inner.hosts.insert(key, HostLogs::new(Arc::from(host_name)));
        }
        let Some(host) = inner.hosts.get_mut(host_id) else {
            return 0;
        };
        if *host.name != *host_name {
            host.name = Arc::from(host_name);
        }
        if agent_next_seq > 0 && agent_next_seq <= host.high_seq {
            tracing::warn!(
                host = host_name,
                held = host.high_seq,
                next = agent_next_seq,
                "the agent numbers its log records anew (its spool was lost?): following it"
            );
            host.high_seq = agent_next_seq - 1;
        }
        host.high_seq
    }

    /// The highest sequence held for a host (0: none).
    pub fn high_seq(&self, host_id: &str) -> u64 {
        self.lock().hosts.get(host_id).map_or(0, |h| h.high_seq)
    }

    /// Store a host's records (those above its highest sequence; the rest are resends), enforce
    /// the caps and hand the stored ones to followers. Returns the host's highest sequence: every
    /// record up to it is held (what the agent is acked).
    pub fn ingest(&self, host_id: &str, records: Vec<pb::LogRecord>) -> u64 {
        let caps = self.caps;
        // Built before taking the lock: the lock is for the rings only.
        let host_key: Arc<str> = Arc::from(host_id);
        let records: Vec<Arc<Stored>> = records
            .into_iter()
            .map(|r| Arc::new(Stored::new(host_key.clone(), r)))
            .collect();
        let mut guard = self.lock();
        let Inner {
            hosts,
            by_size,
            bytes,
            next_index,
        } = &mut *guard;
        if !hosts.contains_key(host_id) {
            by_size.insert((0, host_key.clone()));
            hosts.insert(host_key.clone(), HostLogs::new(host_key.clone()));
        }
        let Some(host) = hosts.get_mut(host_id) else {
            return 0;
        };
        let before = host.bytes;
        let mut stored = Vec::with_capacity(records.len());
        let mut touched: Vec<Arc<str>> = Vec::new();
        for s in records {
            if s.record.seq <= host.high_seq {
                continue;
            }
            host.high_seq = s.record.seq;
            let key = s.container_key();
            if !host.containers.contains_key(key) {
                // A new ring: into the size index after the batch, as the rings it touched.
                let key: Arc<str> = Arc::from(key);
                touched.push(key.clone());
                let ring = Ring {
                    key: key.clone(),
                    records: VecDeque::new(),
                    bytes: 0,
                    unindexed: true,
                };
                host.containers.insert(key, ring);
            }
            let Some(ring) = host.containers.get_mut(s.container_key()) else {
                continue;
            };
            // Out of the size index while it changes; back in, once, after the batch.
            if !ring.unindexed {
                host.by_size.remove(&(ring.bytes, ring.key.clone()));
                ring.unindexed = true;
                touched.push(ring.key.clone());
            }
            ring.bytes += s.cost;
            host.bytes += s.cost;
            ring.records.push_back(s.clone());
            while ring.records.len() > caps.lines_per_container {
                if let Some(old) = ring.records.pop_front() {
                    ring.bytes -= old.cost;
                    host.bytes -= old.cost;
                }
            }
            stored.push(s);
        }
        for key in touched {
            if let Some(ring) = host.containers.get_mut(&key) {
                ring.unindexed = false;
                host.by_size.insert((ring.bytes, key));
            }
        }
        while host.bytes > caps.bytes_per_host {
            if host.evict_from_largest() == 0 {
                break;
            }
        }
        *bytes = *bytes - before + host.bytes;
        by_size.remove(&(before, host_key.clone()));
        by_size.insert((host.bytes, host_key.clone()));
        let high_seq = host.high_seq;
        let host_name = host.name.clone();
        while *bytes > caps.bytes_total {
            let Some((_, key)) = by_size.pop_last() else {
                break;
            };
            let Some(largest) = hosts.get_mut(&key) else {
                continue;
            };
            let freed = largest.evict_from_largest();
            *bytes -= freed;
            by_size.insert((largest.bytes, key));
            if freed == 0 {
                break;
            }
        }
        if !stored.is_empty() {
            let first = *next_index;
            *next_index += stored.len() as u64;
            // No follower is not an error.
            let _ = self.follow.send(Arc::new(Batch {
                host_id: host_key,
                host_name,
                first,
                records: stored,
            }));
        }
        high_seq
    }

    /// The records `selection` picks, per container (at most the newest `limit` of each), and,
    /// when `follow`, a subscription to every record stored after them. Both under one lock: no
    /// record is in both, none in neither.
    pub fn snapshot(&self, selection: &Selection, limit: Option<usize>, follow: bool) -> Snapshot {
        let inner = self.lock();
        let follow = follow.then(|| self.follow.subscribe());
        let mut containers = Vec::new();
        for (host_id, host) in &inner.hosts {
            if !selection.host(host_id) {
                continue;
            }
            for ring in host.containers.values() {
                // Every record of a ring is of one container: decide on its stack and service
                // by the newest.
                if ring
                    .records
                    .back()
                    .is_none_or(|r| !selection.container(&r.record))
                {
                    continue;
                }
                let limit = limit.unwrap_or(usize::MAX);
                let mut records: Vec<Arc<Stored>> = ring
                    .records
                    .iter()
                    .rev()
                    .filter(|r| selection.record(&r.record))
                    .take(limit)
                    .cloned()
                    .collect();
                if records.is_empty() {
                    continue;
                }
                records.reverse();
                containers.push(SnapshotContainer {
                    host_name: host.name.clone(),
                    records,
                });
            }
        }
        Snapshot {
            containers,
            next_index: inner.next_index,
            follow,
        }
    }

    /// Every batch stored from now on (what OTLP export reads; a lagging receiver learns how
    /// many batches it missed).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.follow.subscribe()
    }

    /// How many readers follow the hub.
    pub fn followers(&self) -> usize {
        self.follow.receiver_count()
    }

    /// The stacks the hub holds records of.
    pub fn stacks(&self) -> BTreeSet<String> {
        let inner = self.lock();
        inner
            .hosts
            .values()
            .flat_map(|h| h.containers.values())
            .filter_map(|r| r.records.back().map(|s| s.record.stack.clone()))
            .collect()
    }

    /// What the hub holds, as accounted.
    pub fn accounted(&self) -> Accounted {
        let inner = self.lock();
        Accounted {
            bytes: inner.bytes,
            records: inner
                .hosts
                .values()
                .flat_map(|h| h.containers.values())
                .map(|r| r.records.len())
                .sum(),
            containers: inner.hosts.values().map(|h| h.containers.len()).sum(),
            largest_host_bytes: inner.by_size.last().map_or(0, |(b, _)| *b),
        }
    }

    /// The bytes held of one host.
    pub fn host_bytes(&self, host_id: &str) -> u64 {
        self.lock().hosts.get(host_id).map_or(0, |h| h.bytes)
    }

    /// The records held of one container of one host, oldest first.
    pub fn container(&self, host_id: &str, container_key: &str) -> Vec<Arc<Stored>> {
        self.lock()
            .hosts
            .get(host_id)
            .and_then(|h| h.containers.get(container_key))
            .map(|r| r.records.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rec(seq: u64, container: &str, line: &str) -> pb::LogRecord {
        pb::LogRecord {
            seq,
            time_unix_nanos: seq as i64 * 1_000,
            stack: "shop".into(),
            service: container.split('-').next().unwrap_or_default().into(),
            number: 1,
            container: container.into(),
            container_id: format!("id-{container}"),
            stream: pb::LogStream::Stdout as i32,
            line: line.as_bytes().to_vec(),
            truncated: 0,
            dropped: 0,
        }
    }

    fn caps(lines: usize, host: u64, total: u64) -> LogCaps {
        LogCaps {
            lines_per_container: lines,
            bytes_per_host: host,
            bytes_total: total,
        }
    }

    fn lines(hub: &LogHub, host: &str, container: &str) -> Vec<String> {
        hub.container(host, &format!("id-{container}"))
            .iter()
            .map(|s| String::from_utf8_lossy(&s.record.line).into_owned())
            .collect()
    }

    fn check_caps(hub: &LogHub, hosts: &[&str]) {
        let a = hub.accounted();
        let caps = hub.caps();
        assert!(a.bytes <= caps.bytes_total, "{a:?} over {caps:?}");
        assert!(
            a.largest_host_bytes <= caps.bytes_per_host,
            "{a:?} over {caps:?}"
        );
        let sum: u64 = hosts.iter().map(|h| hub.host_bytes(h)).sum();
        assert_eq!(sum, a.bytes, "per-host bytes add up to the total");
    }

    #[test]
    fn resends_are_dropped_and_the_ack_is_the_highest_sequence() {
        let hub = LogHub::new(caps(100, 1 << 20, 1 << 20));
        assert_eq!(hub.open("h1", "web-1", 1), 0);
        assert_eq!(
            hub.ingest("h1", vec![rec(1, "web-1", "a"), rec(2, "web-1", "b")]),
            2
        );
        // A resend of 2 with a new 3, and a stale 1 inside the batch.
        assert_eq!(
            hub.ingest(
                "h1",
                vec![
                    rec(2, "web-1", "b"),
                    rec(1, "web-1", "a"),
                    rec(3, "web-1", "c")
                ]
            ),
            3
        );
        assert_eq!(hub.ingest("h1", vec![rec(3, "web-1", "c")]), 3);
        assert_eq!(lines(&hub, "h1", "web-1"), ["a", "b", "c"]);
        assert_eq!(hub.accounted().records, 3);
    }

    #[test]
    fn a_reconnecting_agent_resumes_after_the_highest_sequence_held() {
        let hub = LogHub::new(caps(100, 1 << 20, 1 << 20));
        hub.open("h1", "one", 1);
        hub.ingest("h1", vec![rec(1, "web-1", "a"), rec(7, "db-1", "b")]);
        // The agent numbered up to 9 but the server got 7: it resumes after 7.
        assert_eq!(hub.open("h1", "one", 10), 7);
        assert_eq!(
            hub.high_seq("h2"),
            0,
            "a host never heard of resumes from 0"
        );
        // An agent that lost its spool starts at 1 again: followed, not dropped.
        assert_eq!(hub.open("h1", "one", 1), 0);
        assert_eq!(hub.ingest("h1", vec![rec(1, "web-1", "again")]), 1);
        assert_eq!(lines(&hub, "h1", "web-1"), ["a", "again"]);
        // An agent that says nothing of its numbering (0) changes nothing.
        assert_eq!(hub.open("h1", "one", 0), 1);
    }

    #[test]
    fn gaps_are_fine_and_markers_are_stored_like_lines() {
        let hub = LogHub::new(caps(100, 1 << 20, 1 << 20));
        let mut marker = rec(50, "web-1", "120 lines of web-1 were lost");
        marker.dropped = 120;
        marker.stream = pb::LogStream::Noco as i32;
        assert_eq!(hub.ingest("h1", vec![rec(3, "web-1", "a"), marker]), 50);
        let held = hub.container("h1", "id-web-1");
        assert!(held[1].is_marker() && !held[0].is_marker());
    }

    #[test]
    fn lines_per_container_cap_drops_the_oldest_of_that_container_only() {
        let hub = LogHub::new(caps(3, 1 << 20, 1 << 20));
        let mut seq = 0;
        let mut next = || {
            seq += 1;
            seq
        };
        hub.ingest("h1", vec![rec(next(), "db-1", "quiet")]);
        for i in 0..10 {
            hub.ingest("h1", vec![rec(next(), "web-1", &format!("w{i}"))]);
        }
        assert_eq!(lines(&hub, "h1", "web-1"), ["w7", "w8", "w9"]);
        assert_eq!(lines(&hub, "h1", "db-1"), ["quiet"]);
        check_caps(&hub, &["h1"]);
    }

    #[test]
    fn a_flooding_container_does_not_evict_another_containers_last_lines() {
        let line = "x".repeat(100);
        let cost = Stored::new(Arc::from("h1"), rec(1, "web-1", &line)).cost();
        // Room for 20 records per host.
        let hub = LogHub::new(caps(10_000, cost * 20, 1 << 30));
        let mut seq = 0;
        for i in 0..5 {
            seq += 1;
            hub.ingest("h1", vec![rec(seq, "db-1", &format!("{i:0>100}"))]);
        }
        for _ in 0..100 {
            let batch = (0..7)
                .map(|_| {
                    seq += 1;
                    rec(seq, "web-1", &line)
                })
                .collect();
            hub.ingest("h1", batch);
            check_caps(&hub, &["h1"]);
        }
        assert_eq!(
            lines(&hub, "h1", "db-1").len(),
            5,
            "the quiet container keeps its lines"
        );
        assert_eq!(lines(&hub, "h1", "web-1").len(), 15);
        assert!(hub.host_bytes("h1") <= cost * 20);
    }

    #[test]
    fn a_flooding_host_does_not_evict_another_hosts_lines_and_the_total_holds() {
        let line = "y".repeat(200);
        let cost = Stored::new(Arc::from("h1"), rec(1, "web-1", &line)).cost();
        // Per host 50 records, in total 80: two hosts cannot both be full.
        let hub = LogHub::new(caps(10_000, cost * 50, cost * 80));
        let mut seq_b = 0;
        for _ in 0..20 {
            seq_b += 1;
            hub.ingest("hB", vec![rec(seq_b, "api-1", &line)]);
        }
        let mut seq_a = 0;
        for _ in 0..200 {
            let batch = (0..3)
                .map(|_| {
                    seq_a += 1;
                    rec(seq_a, "web-1", &line)
                })
                .collect();
            hub.ingest("hA", batch);
            check_caps(&hub, &["hA", "hB"]);
        }
        assert_eq!(
            lines(&hub, "hB", "api-1").len(),
            20,
            "host B keeps every line"
        );
        assert_eq!(hub.host_bytes("hA"), cost * 50);
        // Now B floods too: the total cap takes from whichever holds more, so they even out.
        for _ in 0..200 {
            seq_b += 1;
            hub.ingest("hB", vec![rec(seq_b, "api-1", &line)]);
            check_caps(&hub, &["hA", "hB"]);
        }
        assert_eq!(hub.host_bytes("hA"), cost * 40);
        assert_eq!(hub.host_bytes("hB"), cost * 40);
        // The newest lines are what stays.
        let kept = hub.container("hB", "id-api-1");
        assert_eq!(kept.last().map(|s| s.record.seq), Some(seq_b));
    }

    #[test]
    fn the_caps_hold_with_many_hosts_and_containers() {
        let hub = LogHub::new(caps(50, 40_000, 300_000));
        let mut seqs = [0u64; 30];
        let mut names = Vec::new();
        for h in 0..30 {
            names.push(format!("h{h}"));
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for round in 0..200usize {
            let h = (round * 7) % 30;
            let batch = (0..(round % 13 + 1))
                .map(|i| {
                    seqs[h] += 1;
                    let container = format!("c{}-1", (round + i) % 5);
                    rec(
                        seqs[h],
                        &container,
                        &"z".repeat((round * 31 + i * 17) % 900),
                    )
                })
                .collect();
            hub.ingest(names[h], batch);
            check_caps(&hub, &names);
        }
    }

    #[test]
    fn a_replaced_containers_lines_stay_until_evicted() {
        let hub = LogHub::new(caps(10, 1 << 20, 1 << 20));
        hub.ingest("h1", vec![rec(1, "web-1", "old container")]);
        let mut new = rec(2, "web-1", "new container");
        new.container_id = "id-web-1-new".into();
        hub.ingest("h1", vec![new]);
        assert_eq!(lines(&hub, "h1", "web-1"), ["old container"]);
        assert_eq!(hub.accounted().containers, 2);
    }

    #[test]
    fn an_overlong_line_is_cut_and_says_how_much() {
        let hub = LogHub::new(caps(10, 1 << 20, 1 << 20));
        hub.ingest("h1", vec![rec(1, "web-1", &"l".repeat(MAX_LOG_LINE + 10))]);
        let held = hub.container("h1", "id-web-1");
        assert_eq!(held[0].record.line.len(), MAX_LOG_LINE);
        assert_eq!(held[0].record.truncated, 10);
    }
}
