//! What the agent keeps for backups, under `<data-dir>/backups/`:
//!
//! ```text
//! spool/<id>.archive      an archive made and not yet (wholly) uploaded
//! spool/<id>.archive.part one being written (removed at start: a crash left it half)
//! spool/<id>.pb           its BackupInfo (protobuf), state PENDING_UPLOAD, size, sha256, manifest
//! spool/<id>.job          the job (order) that made it, when one did
//! reports/<nanos>-<n>.pb  reports the server must get (a failure, a miss, a job's outcome), in order
//! schedule.json           per stack/backup: the last schedule time handled
//! orders.json             the orders done, until they expire
//! work/                   downloads and scratch space for restores and verifies
//! ```
//!
//! The spool is bounded (`[backup] spool_size`): a backup that would pass the bound fails with
//! that reason, and nothing else is evicted — an archive not uploaded is never deleted to make
//! room.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use noco_proto::v1::{BackupInfo, BackupReport};
use prost::Message;

pub struct Layout {
    pub root: PathBuf,
    /// The spool's bound in bytes.
    pub limit: u64,
}

static REPORT_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path, what: &str, e: io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Write a file whole or not at all (temp, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| io_err(&tmp, "creating", e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&tmp, "writing", e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, "moving into place", e))
}

impl Layout {
    pub fn new(data_dir: &Path, limit: u64) -> Result<Self, String> {
        let root = data_dir.join("backups");
        let layout = Layout { root, limit };
        for dir in [layout.spool(), layout.reports(), layout.work()] {
            fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "creating", e))?;
        }
        // Half-written archives and old scratch space from before a restart.
        for entry in fs::read_dir(layout.spool())
            .map_err(|e| io_err(&layout.spool(), "reading", e))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".part") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let _ = fs::remove_dir_all(layout.work());
        fs::create_dir_all(layout.work()).map_err(|e| io_err(&layout.work(), "creating", e))?;
        Ok(layout)
    }

    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    pub fn reports(&self) -> PathBuf {
        self.root.join("reports")
    }

    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    pub fn schedule_file(&self) -> PathBuf {
        self.root.join("schedule.json")
    }

    pub fn orders_file(&self) -> PathBuf {
        self.root.join("orders.json")
    }

    pub fn archive(&self, id: &str) -> PathBuf {
        self.spool().join(format!("{id}.archive"))
    }

    pub fn part(&self, id: &str) -> PathBuf {
        self.spool().join(format!("{id}.archive.part"))
    }

    fn info_path(&self, id: &str) -> PathBuf {
        self.spool().join(format!("{id}.pb"))
    }

    fn job_path(&self, id: &str) -> PathBuf {
        self.spool().join(format!("{id}.job"))
    }

    /// Bytes the spool holds now.
    pub fn used(&self) -> u64 {
        fs::read_dir(self.spool())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Record a made archive (already renamed into place) as waiting for upload.
    pub fn add_pending(&self, info: &BackupInfo, job: Option<&str>) -> Result<(), String> {
        if let Some(job) = job {
            write_atomic(&self.job_path(&info.id), job.as_bytes())?;
        }
        write_atomic(&self.info_path(&info.id), &info.encode_to_vec())
    }

    /// The archives waiting for upload, oldest first, with their job.
    pub fn pending(&self) -> Vec<(BackupInfo, Option<String>)> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.spool()) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pb") {
                continue;
            }
            let info = fs::read(&path)
                .ok()
                .and_then(|b| BackupInfo::decode(b.as_slice()).ok());
            match info {
                Some(info) if self.archive(&info.id).is_file() => {
                    let job = fs::read_to_string(self.job_path(&info.id)).ok();
                    out.push((info, job));
                }
                _ => {
                    tracing::warn!("backup spool: {} has no archive; removed", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
        out.sort_by_key(|(i, _)| (i.finished_unix_ms, i.id.clone()));
        out
    }

    /// Forget an archive the server holds.
    pub fn remove(&self, id: &str) {
        for p in [self.archive(id), self.info_path(id), self.job_path(id)] {
            if let Err(e) = fs::remove_file(&p)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!("removing {}: {e}", p.display());
            }
        }
    }

    /// Queue a report the server must get, even if it is away now.
    pub fn queue_report(&self, report: &BackupReport) -> Result<(), String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = REPORT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.reports().join(format!("{nanos:024}-{n:06}.pb"));
        write_atomic(&path, &report.encode_to_vec())
    }

    /// The queued reports, in the order they were made.
    pub fn queued_reports(&self) -> Vec<(PathBuf, BackupReport)> {
        let Ok(entries) = fs::read_dir(self.reports()) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pb"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|p| {
                let report = fs::read(&p)
                    .ok()
                    .and_then(|b| BackupReport::decode(b.as_slice()).ok());
                if report.is_none() {
                    let _ = fs::remove_file(&p);
                }
                report.map(|r| (p, r))
            })
            .collect()
    }
}

/// A writer that refuses to grow the spool past its bound.
pub struct Bounded<W> {
    inner: W,
    room: u64,
    written: u64,
    limit: u64,
}

impl<W: Write> Bounded<W> {
    /// `room`: what the spool may still take.
    pub fn new(inner: W, room: u64, limit: u64) -> Self {
        Bounded {
            inner,
            room,
            written: 0,
            limit,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// The message of a write refused by [`Bounded`].
pub fn spool_full(limit: u64) -> String {
    format!(
        "the backup spool is full: archives waiting for upload would pass its bound of {} ([backup] spool_size)",
        noco_proto::size::human(limit)
    )
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.room {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                spool_full(self.limit),
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
