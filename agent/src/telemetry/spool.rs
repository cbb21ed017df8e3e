//! The log spool: an append-only, size-bounded on-disk log of [`pb::LogRecord`]s that numbers
//! every record with the host's log sequence. The collector appends to it; the transport reads it
//! from wherever the server says it stopped. It is the agent's durable copy of its containers'
//! recent logs: a session cut, a server restart or an agent restart resumes from it.
//!
//! On disk, in its own directory: segment files `<first seq, 20 digits>.seg`, each a run of
//! frames `[u32 LE length][u32 LE crc32 of the payload][payload: protobuf LogRecord]`, and
//! `markers.pb`, the pending "lines dropped" markers. Segments are `max_bytes / 8` (at least
//! 64 KiB). When the spool holds more than `max_bytes`, whole oldest segments go (never the one
//! being written); for the lines of each container in a dropped segment that the server had not
//! acknowledged, a marker record is kept — numbered with the sequence of that container's last
//! dropped line, so it sorts where the lines were — and sent before what remains. Loss is never
//! silent. A marker may overcount lines that were in flight (sent, not yet acknowledged) at the
//! moment of the drop; it never undercounts.
//!
//! Appends are flushed to the operating system at the end of every call (a crash of the agent
//! loses nothing appended; a crash of the machine may lose the last moments — fsync per batch
//! would cost more than the logs are worth). Opening reads every retained segment once (up to
//! `max_bytes`; not timed) to learn where numbering continues and each
//! container's cursor; it cuts a damaged tail (a torn last frame) and
//! skips a segment it cannot read at all, saying so in the agent's log.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use noco_proto::v1 as pb;
use prost::Message;
use tokio::sync::watch;

/// Where a container's logs were read up to: the time of its last record and how many of its
/// records carry exactly that time (Docker's `since` keeps lines equal to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub time_unix_nanos: i64,
    pub at_time: u32,
}

impl Cursor {
    /// Move the cursor past a record read at `time`.
    pub fn advance(&mut self, time_unix_nanos: i64) {
        if time_unix_nanos == self.time_unix_nanos {
            self.at_time = self.at_time.saturating_add(1);
        } else if time_unix_nanos > self.time_unix_nanos {
            self.time_unix_nanos = time_unix_nanos;
            self.at_time = 1;
        }
    }
}

/// The default bound of the spool on disk.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest bound accepted: a few segments of the smallest size.
pub const MIN_MAX_BYTES: u64 = 4 * MIN_SEGMENT;
const MIN_SEGMENT: u64 = 64 * 1024;
/// Pending markers kept at most; past it the oldest are merged away into one.
const MAX_MARKERS: usize = 10_000;
const FRAME_HEADER: u64 = 8;
/// A frame longer than this is damage, not a record.
const MAX_FRAME: u32 = (noco_proto::limits::MAX_LOG_LINE + 64 * 1024) as u32;
const MARKERS_FILE: &str = "markers.pb";
/// The cursors of every container, written whenever segments are dropped, so a container whose
/// records all left the spool is not read again from its start after a restart.
const CURSORS_FILE: &str = "cursors.json";
/// Cursors older than this are forgotten (their containers are long gone).
const CURSOR_KEEP_NANOS: i64 = 14 * 24 * 3600 * 1_000_000_000;
const SEGMENT_SUFFIX: &str = ".seg";

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// The most bytes the spool keeps on disk; past it the oldest segment goes.
    pub max_bytes: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    /// 0 while empty.
    last_seq: u64,
    bytes: u64,
    path: PathBuf,
}

struct Inner {
    segments: VecDeque<Segment>,
    writer: Option<BufWriter<File>>,
    next_seq: u64,
    total_bytes: u64,
    /// The highest sequence the server acknowledged (0: not known yet).
    acked: u64,
    markers: Vec<pb::LogRecord>,
    dropped_total: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    cursors: Mutex<HashMap<String, Cursor>>,
    /// The last sequence appended and flushed (0: none).
    written: watch::Sender<u64>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

fn encode_frame(record: &pb::LogRecord, out: &mut Vec<u8>) {
    let len = record.encoded_len();
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    // Encoding into a Vec cannot fail for lack of room.
    let _ = record.encode(out);
    let payload = &out[start + 8..];
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads frames from a segment. `Ok(None)` at a clean end; a torn or damaged frame ends the
/// segment too (reported by `damaged`).
struct FrameReader<R> {
    inner: R,
    offset: u64,
    buf: Vec<u8>,
    damaged: Option<String>,
}

impl<R: Read> FrameReader<R> {
    fn new(inner: R, offset: u64) -> Self {
        FrameReader {
            inner,
            offset,
            buf: Vec::new(),
            damaged: None,
        }
    }

    fn next(&mut self) -> io::Result<Option<pb::LogRecord>> {
        let mut header = [0u8; 8];
        match read_full(&mut self.inner, &mut header)? {
            0 => return Ok(None),
            8 => {}
            n => {
                self.damaged = Some(format!("a torn frame header ({n} bytes)"));
                return Ok(None);
            }
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_FRAME {
            self.damaged = Some(format!("a frame of {len} bytes"));
            return Ok(None);
        }
        self.buf.resize(len as usize, 0);
        let got = read_full(&mut self.inner, &mut self.buf)?;
        if got < len as usize {
            self.damaged = Some(format!("a torn frame ({got} of {len} bytes)"));
            return Ok(None);
        }
        if crc32fast::hash(&self.buf) != crc {
            self.damaged = Some("a frame whose checksum does not match".into());
            return Ok(None);
        }
        match pb::LogRecord::decode(self.buf.as_slice()) {
            Ok(r) => {
                self.offset += FRAME_HEADER + u64::from(len);
                Ok(Some(r))
            }
            Err(e) => {
                self.damaged = Some(format!("a frame that does not decode: {e}"));
                Ok(None)
            }
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn marker_line(count: u64) -> Vec<u8> {
    format!(
        "{count} line{} dropped: the agent's log spool was full while the server was away",
        if count == 1 { "" } else { "s" }
    )
    .into_bytes()
}

impl Spool {
    /// Open (or create) the spool in `cfg.dir`. A damaged tail (a crash mid-write) is cut off.
    pub fn open(cfg: SpoolConfig) -> anyhow::Result<Arc<Spool>> {
        if cfg.max_bytes < MIN_MAX_BYTES {
            anyhow::bail!(
                "the log spool's size {} bytes is below the smallest, {MIN_MAX_BYTES} bytes",
                cfg.max_bytes
            );
        }
        fs::create_dir_all(&cfg.dir)
            .map_err(|e| anyhow::anyhow!("creating the log spool {}: {e}", cfg.dir.display()))?;
        let segment_bytes = (cfg.max_bytes / 8).max(MIN_SEGMENT);
        let mut firsts = Vec::new();
        for entry in fs::read_dir(&cfg.dir)
            .map_err(|e| anyhow::anyhow!("reading the log spool {}: {e}", cfg.dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX)
                && let Ok(first) = stem.parse::<u64>()
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut cursors: HashMap<String, Cursor> = HashMap::new();
        let mut segments = VecDeque::new();
        let mut total_bytes = 0;
        let mut last_seq = 0u64;
        for first in firsts {
            let path = segment_path(&cfg.dir, first);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("skipping log spool segment {}: {e}", path.display());
                    continue;
                }
            };
            let mut reader = FrameReader::new(BufReader::new(file), 0);
            let mut seg = Segment {
                first_seq: first,
                last_seq: 0,
                bytes: 0,
                path: path.clone(),
            };
            loop {
                match reader.next() {
                    Ok(Some(r)) => {
                        if r.seq <= last_seq {
                            reader.damaged = Some(format!("sequence {} after {last_seq}", r.seq));
                            break;
                        }
                        last_seq = r.seq;
                        seg.last_seq = r.seq;
                        cursors
                            .entry(r.container_id.clone())
                            .or_default()
                            .advance(r.time_unix_nanos);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        reader.damaged = Some(e.to_string());
                        break;
                    }
                }
            }
            seg.bytes = reader.offset;
            if let Some(why) = reader.damaged {
                tracing::warn!(
                    "log spool segment {}: {why}; cut at byte {}",
                    path.display(),
                    reader.offset
                );
                if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                    let _ = f.set_len(reader.offset);
                }
            }
            if seg.last_seq == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            total_bytes += seg.bytes;
            segments.push_back(seg);
        }
        for (id, c) in read_cursors(&cfg.dir) {
            let e = cursors.entry(id).or_default();
            if (c.time_unix_nanos, c.at_time) > (e.time_unix_nanos, e.at_time) {
                *e = c;
            }
        }
        let markers = read_markers(&cfg.dir);
        for m in &markers {
            cursors
                .entry(m.container_id.clone())
                .or_default()
                .advance(m.time_unix_nanos);
            last_seq = last_seq.max(m.seq);
        }
        let (written, _) = watch::channel(last_seq);
        let spool = Spool {
            dir: cfg.dir,
            max_bytes: cfg.max_bytes,
            segment_bytes,
            inner: Mutex::new(Inner {
                segments,
                writer: None,
                next_seq: last_seq + 1,
                total_bytes,
                acked: 0,
                markers,
                dropped_total: 0,
            }),
            cursors: Mutex::new(cursors),
            written,
        };
        Ok(Arc::new(spool))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number the records (`seq` is overwritten) and append them; returns the last sequence.
    /// Blocking file I/O: call it from a blocking task.
    pub fn append(&self, mut records: Vec<pb::LogRecord>) -> io::Result<u64> {
        if records.is_empty() {
            return Ok(self.lock().next_seq - 1);
        }
        let mut inner = self.lock();
        let mut buf = Vec::with_capacity(records.len() * 128);
        let mut idx = 0;
        while idx < records.len() {
            // Fill the current segment (or start one) with as many records as fit.
            if inner.writer.is_none()
                || inner
                    .segments
                    .back()
                    .is_none_or(|s| s.bytes >= self.segment_bytes)
            {
                self.start_segment(&mut inner)?;
            }
            buf.clear();
            let room = self
                .segment_bytes
                .saturating_sub(inner.segments.back().map_or(0, |s| s.bytes));
            let start_seq = inner.next_seq;
            let mut seq = start_seq;
            let mut last_seq = 0;
            while idx < records.len() {
                let r = &mut records[idx];
                r.seq = seq;
                let before = buf.len();
                encode_frame(r, &mut buf);
                if buf.len() as u64 > room && before > 0 {
                    buf.truncate(before);
                    break;
                }
                last_seq = seq;
                seq += 1;
                idx += 1;
            }
            let n = buf.len() as u64;
            let Some(writer) = inner.writer.as_mut() else {
                return Err(io::Error::other("the log spool has no open segment"));
            };
            writer.write_all(&buf)?;
            inner.next_seq = seq;
            inner.total_bytes += n;
            if let Some(seg) = inner.segments.back_mut() {
                seg.bytes += n;
                seg.last_seq = last_seq;
            }
        }
        if let Some(w) = inner.writer.as_mut() {
            w.flush()?;
        }
        let last = inner.next_seq - 1;
        {
            let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
            for r in &records {
                match cursors.get_mut(&r.container_id) {
                    Some(c) => c.advance(r.time_unix_nanos),
                    None => {
                        let mut c = Cursor::default();
                        c.advance(r.time_unix_nanos);
                        cursors.insert(r.container_id.clone(), c);
                    }
                }
            }
        }
        self.enforce_bound(&mut inner)?;
        drop(inner);
        self.written.send_replace(last);
        Ok(last)
    }

    fn start_segment(&self, inner: &mut Inner) -> io::Result<()> {
        if let Some(mut w) = inner.writer.take() {
            w.flush()?;
        }
        // An empty current segment is reused.
        if let Some(seg) = inner.segments.back()
            && seg.bytes == 0
        {
            let file = OpenOptions::new().append(true).open(&seg.path)?;
            inner.writer = Some(BufWriter::with_capacity(64 * 1024, file));
            return Ok(());
        }
        let first = inner.next_seq;
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        inner.segments.push_back(Segment {
            first_seq: first,
            last_seq: 0,
            bytes: 0,
            path,
        });
        inner.writer = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(())
    }

    /// Drop whole oldest segments while over the bound, keeping markers for what the server had
    /// not acknowledged.
    fn enforce_bound(&self, inner: &mut Inner) -> io::Result<()> {
        let mut changed = false;
        let mut dropped_any = false;
        while inner.total_bytes > self.max_bytes && inner.segments.len() > 1 {
            let Some(seg) = inner.segments.pop_front() else {
                break;
            };
            inner.total_bytes = inner.total_bytes.saturating_sub(seg.bytes);
            if seg.last_seq > inner.acked {
                let lost = summarize(&seg.path, inner.acked);
                for (count, last) in lost {
                    inner.dropped_total += count;
                    inner.markers.push(pb::LogRecord {
                        seq: last.seq,
                        time_unix_nanos: last.time_unix_nanos,
                        stack: last.stack,
                        service: last.service,
                        number: last.number,
                        container: last.container,
                        container_id: last.container_id,
                        stream: pb::LogStream::Noco as i32,
                        line: marker_line(count),
                        truncated: 0,
                        dropped: count,
                    });
                    changed = true;
                }
            }
            if let Err(e) = fs::remove_file(&seg.path) {
                tracing::warn!("removing log spool segment {}: {e}", seg.path.display());
            }
            dropped_any = true;
        }
        if dropped_any {
            let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
            let newest = cursors
                .values()
                .map(|c| c.time_unix_nanos)
                .max()
                .unwrap_or(0);
            cursors.retain(|_, c| c.time_unix_nanos > newest.saturating_sub(CURSOR_KEEP_NANOS));
            if let Err(e) = write_cursors(&self.dir, &cursors) {
                tracing::warn!("writing the log spool's cursors: {e}");
            }
        }
        if changed {
            inner.markers.sort_by_key(|m| m.seq);
            if inner.markers.len() > MAX_MARKERS {
                let excess = inner.markers.len() - MAX_MARKERS;
                tracing::warn!(
                    "{excess} log spool markers over the limit of {MAX_MARKERS}: the oldest are forgotten"
                );
                inner.markers.drain(..excess);
            }
            write_markers(&self.dir, &inner.markers)?;
        }
        Ok(())
    }

    /// The server holds every record up to `seq`: markers it covers are forgotten, and later
    /// drops only count what it does not hold.
    pub fn acknowledge(&self, seq: u64) {
        let mut inner = self.lock();
        if seq > inner.acked {
            inner.acked = seq;
        }
        let before = inner.markers.len();
        let acked = inner.acked;
        inner.markers.retain(|m| m.seq > acked);
        if inner.markers.len() != before
            && let Err(e) = write_markers(&self.dir, &inner.markers)
        {
            tracing::warn!("writing the log spool's markers: {e}");
        }
    }

    /// Where each container's logs were read up to (by container id), as the spool holds them.
    pub fn cursors(&self) -> HashMap<String, Cursor> {
        self.cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The sequence of the next record.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// The last sequence appended; changes after every append.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Bytes on disk now (segments only).
    pub fn bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Lines lost to the bound since the agent started.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// A reader of the records above `after_seq`: first the pending markers, then the records,
    /// starting no earlier than needed to hold the newest `tail_bytes` of the spool (0: no
    /// limit).
    pub fn reader(self: &Arc<Self>, after_seq: u64, tail_bytes: u64) -> SpoolReader {
        let inner = self.lock();
        let markers: VecDeque<pb::LogRecord> = inner
            .markers
            .iter()
            .filter(|m| m.seq > after_seq)
            .cloned()
            .collect();
        let mut start = after_seq + 1;
        if tail_bytes > 0 {
            let mut sum = 0u64;
            let mut tail_start = None;
            for seg in inner.segments.iter().rev() {
                sum += seg.bytes;
                tail_start = Some(seg.first_seq);
                if sum >= tail_bytes {
                    break;
                }
            }
            if let Some(t) = tail_start {
                start = start.max(t);
            }
        }
        SpoolReader {
            spool: self.clone(),
            markers,
            next: start,
            open: None,
        }
    }
}

/// Per container in a dropped segment: how many of its records were above `acked`, and the last
/// of them.
fn summarize(path: &Path, acked: u64) -> Vec<(u64, pb::LogRecord)> {
    let mut by: HashMap<String, (u64, pb::LogRecord)> = HashMap::new();
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut reader = FrameReader::new(BufReader::new(file), 0);
    while let Ok(Some(mut r)) = reader.next() {
        if r.seq <= acked {
            continue;
        }
        if r.stream == pb::LogStream::Noco as i32 && r.dropped > 0 {
            // A marker that was itself spooled: carry its count.
            let n = r.dropped;
            r.line.clear();
            let e = by.entry(r.container_id.clone()).or_insert((0, r.clone()));
            e.0 += n;
            e.1 = r;
            continue;
        }
        r.line.clear();
        let e = by.entry(r.container_id.clone()).or_insert((0, r.clone()));
        e.0 += 1;
        e.1 = r;
    }
    let mut out: Vec<_> = by.into_values().collect();
    out.sort_by_key(|(_, r)| r.seq);
    out
}

fn read_cursors(dir: &Path) -> HashMap<String, Cursor> {
    let path = dir.join(CURSORS_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return HashMap::new();
    };
    match serde_json::from_str::<HashMap<String, (i64, u32)>>(&text) {
        Ok(m) => m
            .into_iter()
            .map(|(id, (time_unix_nanos, at_time))| {
                (
                    id,
                    Cursor {
                        time_unix_nanos,
                        at_time,
                    },
                )
            })
            .collect(),
        Err(e) => {
            tracing::warn!("log spool cursors {}: {e}; ignored", path.display());
            HashMap::new()
        }
    }
}

fn write_cursors(dir: &Path, cursors: &HashMap<String, Cursor>) -> io::Result<()> {
    let plain: HashMap<&str, (i64, u32)> = cursors
        .iter()
        .map(|(id, c)| (id.as_str(), (c.time_unix_nanos, c.at_time)))
        .collect();
    let text = serde_json::to_vec(&plain).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{CURSORS_FILE}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, dir.join(CURSORS_FILE))
}

fn read_markers(dir: &Path) -> Vec<pb::LogRecord> {
    let path = dir.join(MARKERS_FILE);
    let Ok(file) = File::open(&path) else {
        return Vec::new();
    };
    let mut reader = FrameReader::new(BufReader::new(file), 0);
    let mut out = Vec::new();
    while let Ok(Some(r)) = reader.next() {
        out.push(r);
    }
    if let Some(why) = reader.damaged {
        tracing::warn!(
            "log spool markers {}: {why}; the rest is ignored",
            path.display()
        );
    }
    out.sort_by_key(|m| m.seq);
    out
}

fn write_markers(dir: &Path, markers: &[pb::LogRecord]) -> io::Result<()> {
    let path = dir.join(MARKERS_FILE);
    if markers.is_empty() {
        return match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let mut buf = Vec::new();
    for m in markers {
        encode_frame(m, &mut buf);
    }
    let tmp = dir.join(format!("{MARKERS_FILE}.tmp"));
    fs::write(&tmp, &buf)?;
    fs::rename(&tmp, &path)
}

/// Reads the spool in sequence order from a starting point, following the writer.
pub struct SpoolReader {
    spool: Arc<Spool>,
    markers: VecDeque<pb::LogRecord>,
    /// The next sequence wanted.
    next: u64,
    /// The segment being read: its first sequence and the reader.
    open: Option<(u64, FrameReader<BufReader<File>>)>,
}

impl SpoolReader {
    /// The next sequence this reader will return.
    pub fn position(&self) -> u64 {
        self.markers.front().map_or(self.next, |m| m.seq)
    }

    /// Up to `max_bytes` of records (at least one when any is there), in sequence order; empty
    /// when the reader has caught up with the writer. Blocking file I/O.
    pub fn next_batch(&mut self, max_bytes: usize) -> io::Result<Vec<pb::LogRecord>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        {
            // Markers made since this reader started (drops while it was behind), for lines it
            // has not passed yet.
            let inner = self.spool.lock();
            let floor = self
                .markers
                .back()
                .map_or(self.next, |m| m.seq + 1)
                .max(self.next);
            self.markers
                .extend(inner.markers.iter().filter(|m| m.seq >= floor).cloned());
        }
        while let Some(m) = self.markers.pop_front() {
            bytes += m.encoded_len();
            self.next = self.next.max(m.seq + 1);
            out.push(m);
            if bytes >= max_bytes {
                return Ok(out);
            }
        }
        loop {
            if self.open.is_none() && !self.open_next()? {
                return Ok(out);
            }
            let Some((_, reader)) = self.open.as_mut() else {
                return Ok(out);
            };
            let offset = reader.offset;
            match reader.next()? {
                Some(r) => {
                    if r.seq < self.next {
                        continue;
                    }
                    self.next = r.seq + 1;
                    bytes += r.encoded_len();
                    out.push(r);
                    if bytes >= max_bytes {
                        return Ok(out);
                    }
                }
                None => {
                    // The end of what is written so far. Move on if a later segment exists;
                    // else stay here (re-reading from the same offset next time).
                    let damaged = reader.damaged.take();
                    let first = self.open.as_ref().map_or(0, |(f, _)| *f);
                    let later = {
                        let inner = self.spool.lock();
                        inner.segments.iter().any(|s| s.first_seq > first)
                    };
                    if later {
                        self.open = None;
                        continue;
                    }
                    // A partly written frame at the very end: re-read it next time.
                    if damaged.is_some() {
                        self.reopen_at(first, offset)?;
                    }
                    return Ok(out);
                }
            }
        }
    }

    fn reopen_at(&mut self, first: u64, offset: u64) -> io::Result<()> {
        let path = segment_path(&self.spool.dir, first);
        let mut file = File::open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        self.open = Some((first, FrameReader::new(BufReader::new(file), offset)));
        Ok(())
    }

    /// Open the segment holding `next` (or the first after it). False when there is none yet.
    fn open_next(&mut self) -> io::Result<bool> {
        let target = {
            let inner = self.spool.lock();
            let mut target = None;
            for seg in &inner.segments {
                if seg.last_seq >= self.next || seg.bytes == 0 {
                    target = Some(seg.first_seq);
                    break;
                }
            }
            target
        };
        let Some(first) = target else {
            return Ok(false);
        };
        match File::open(segment_path(&self.spool.dir, first)) {
            Ok(file) => {
                self.open = Some((first, FrameReader::new(BufReader::new(file), 0)));
                Ok(true)
            }
            // Dropped between the lookup and the open: look again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(container: &str, t: i64, line: &str) -> pb::LogRecord {
        pb::LogRecord {
            time_unix_nanos: t,
            container_id: container.into(),
            container: format!("{container}-name"),
            stack: "shop".into(),
            service: "web".into(),
            number: 1,
            stream: pb::LogStream::Stdout as i32,
            line: line.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn open(dir: &Path, max: u64) -> Arc<Spool> {
        match Spool::open(SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: max,
        }) {
            Ok(s) => s,
            Err(e) => panic!("open: {e}"),
        }
    }

    fn read_all(r: &mut SpoolReader) -> Vec<pb::LogRecord> {
        let mut all = Vec::new();
        loop {
            let b = r.next_batch(4096).unwrap_or_else(|e| panic!("{e}"));
            if b.is_empty() {
                return all;
            }
            all.extend(b);
        }
    }

    #[test]
    fn numbers_records_and_survives_reopen_with_cursors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path(), DEFAULT_MAX_BYTES);
        let last = spool
            .append(vec![
                rec("a", 10, "one"),
                rec("a", 10, "two"),
                rec("b", 5, "x"),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(last, 3);
        drop(spool);
        let spool = open(dir.path(), DEFAULT_MAX_BYTES);
        assert_eq!(spool.next_seq(), 4);
        let c = spool.cursors();
        assert_eq!(
            c["a"],
            Cursor {
                time_unix_nanos: 10,
                at_time: 2
            }
        );
        assert_eq!(
            c["b"],
            Cursor {
                time_unix_nanos: 5,
                at_time: 1
            }
        );
        let mut r = spool.reader(1, 0);
        let got: Vec<u64> = read_all(&mut r).iter().map(|r| r.seq).collect();
        assert_eq!(got, vec![2, 3]);
    }

    #[test]
    fn a_reader_follows_the_writer_across_segments() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path(), MIN_MAX_BYTES * 4);
        let mut r = spool.reader(0, 0);
        let mut seen = Vec::new();
        let line = "x".repeat(1000);
        for i in 0..300 {
            spool
                .append(vec![rec("a", i, &line)])
                .unwrap_or_else(|e| panic!("{e}"));
            if i % 7 == 0 {
                seen.extend(read_all(&mut r).into_iter().map(|r| r.seq));
            }
        }
        seen.extend(read_all(&mut r).into_iter().map(|r| r.seq));
        assert_eq!(seen, (1..=300).collect::<Vec<u64>>());
        assert!(
            spool.lock().segments.len() > 1,
            "several segments were written"
        );
    }

    #[test]
    fn past_the_bound_the_oldest_go_and_a_marker_counts_them() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let max = MIN_MAX_BYTES;
        let spool = open(dir.path(), max);
        spool.acknowledge(0);
        let line = "y".repeat(500);
        let n = 2000u64;
        for i in 0..n {
            let c = if i % 2 == 0 { "a" } else { "b" };
            spool
                .append(vec![rec(c, i as i64, &line)])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(spool.bytes() <= max, "{} > {max}", spool.bytes());
        let mut r = spool.reader(0, 0);
        let all = read_all(&mut r);
        let dropped: u64 = all.iter().map(|r| r.dropped).sum();
        let lines = all.iter().filter(|r| r.dropped == 0).count() as u64;
        assert_eq!(dropped + lines, n, "every line is either there or counted");
        let markers: Vec<_> = all.iter().filter(|r| r.dropped > 0).collect();
        assert_eq!(markers.len(), {
            let mut ids: Vec<_> = markers.iter().map(|m| m.container_id.clone()).collect();
            ids.sort();
            ids.len()
        });
        assert!(
            markers
                .iter()
                .all(|m| m.stream == pb::LogStream::Noco as i32)
        );
        let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            seqs, sorted,
            "markers sort before what remains, no duplicates"
        );
        // Markers survive a restart, and go once acknowledged.
        drop(r);
        drop(spool);
        let spool = open(dir.path(), max);
        let again = read_all(&mut spool.reader(0, 0));
        assert_eq!(again.iter().map(|r| r.dropped).sum::<u64>(), dropped);
        let last_marker = markers.last().map_or(0, |m| m.seq);
        spool.acknowledge(last_marker);
        let after = read_all(&mut spool.reader(0, 0));
        assert_eq!(after.iter().map(|r| r.dropped).sum::<u64>(), 0);
    }

    #[test]
    fn a_container_whose_records_all_left_keeps_its_cursor_across_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path(), MIN_MAX_BYTES);
        spool
            .append(vec![rec("old", 77, "bye")])
            .unwrap_or_else(|e| panic!("{e}"));
        let line = "q".repeat(500);
        for i in 0..2000 {
            let last = spool
                .append(vec![rec("new", 100 + i, &line)])
                .unwrap_or_else(|e| panic!("{e}"));
            spool.acknowledge(last);
        }
        drop(spool);
        let spool = open(dir.path(), MIN_MAX_BYTES);
        assert_eq!(
            spool.cursors().get("old"),
            Some(&Cursor {
                time_unix_nanos: 77,
                at_time: 1
            })
        );
    }

    #[test]
    fn acknowledged_records_are_dropped_without_a_marker() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path(), MIN_MAX_BYTES);
        let line = "z".repeat(500);
        for i in 0..2000 {
            let last = spool
                .append(vec![rec("a", i, &line)])
                .unwrap_or_else(|e| panic!("{e}"));
            spool.acknowledge(last);
        }
        let all = read_all(&mut spool.reader(0, 0));
        assert!(all.iter().all(|r| r.dropped == 0));
    }

    #[test]
    fn tail_bytes_starts_late_and_after_seq_is_respected() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path(), MIN_MAX_BYTES * 8);
        let line = "w".repeat(1000);
        for i in 0..400 {
            spool
                .append(vec![rec("a", i, &line)])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let tail = read_all(&mut spool.reader(0, MIN_SEGMENT));
        assert!(!tail.is_empty() && tail.len() < 400, "{}", tail.len());
        assert_eq!(tail.last().map(|r| r.seq), Some(400));
        let after = read_all(&mut spool.reader(390, 0));
        assert_eq!(after.first().map(|r| r.seq), Some(391));
    }

    #[test]
    fn a_torn_tail_is_cut_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path(), DEFAULT_MAX_BYTES);
        spool
            .append(vec![rec("a", 1, "one"), rec("a", 2, "two")])
            .unwrap_or_else(|e| panic!("{e}"));
        let path = spool.lock().segments[0].path.clone();
        drop(spool);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(&[200, 0, 0, 0, 1, 2])
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let spool = open(dir.path(), DEFAULT_MAX_BYTES);
        assert_eq!(spool.next_seq(), 3);
        spool
            .append(vec![rec("a", 3, "three")])
            .unwrap_or_else(|e| panic!("{e}"));
        let all = read_all(&mut spool.reader(0, 0));
        let lines: Vec<_> = all.iter().map(|r| r.line.clone()).collect();
        assert_eq!(
            lines,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }

    #[test]
    fn garbage_files_do_not_break_opening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::write(
            dir.path().join("00000000000000000001.seg"),
            b"\xff\xff\xff\xffgarbage",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join(MARKERS_FILE), b"nonsense").unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path(), DEFAULT_MAX_BYTES);
        assert_eq!(spool.next_seq(), 1);
        spool
            .append(vec![rec("a", 1, "ok")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_all(&mut spool.reader(0, 0)).len(), 1);
    }

    #[test]
    fn a_too_small_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = Spool::open(SpoolConfig {
            dir: dir.path().into(),
            max_bytes: 1000,
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("below the smallest"), "{err}");
    }
}
