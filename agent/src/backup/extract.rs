//! Reading stored archives back: [`open_stored`] undoes age and zstd, [`extract_volumes`]
//! writes a volumes payload into fresh staging directories, [`stream_dump`] passes a dump on,
//! and [`verify_volumes`]/[`verify_dump`] read a whole archive without writing anything.
//!
//! Extraction trusts nothing in the archive. It is our own code over
//! [`tar::Archive::entries`] (never `unpack`):
//!
//! - a member's path is relative, has no `..`, and starts with the name of a volume being
//!   restored; its length, the member count, the total bytes and the bytes of extension
//!   headers before one member are capped ([`ExtractLimits`]);
//! - everything is created relative to the target's directory descriptor, one component at a
//!   time with `O_NOFOLLOW`: a symlink in the archive is created as a symlink and never
//!   followed, so "a link, then a file through it" is refused and nothing is written outside
//!   the target; nothing existing is overwritten (`O_EXCL`);
//! - a hardlink must name a file extracted before it in the same volume;
//! - device nodes are refused; fifos are created as fifos;
//! - modes, uid/gid (when running as root), mtimes and extended attributes are restored, and
//!   the holes of sparse members are left as holes.
//!
//! Each extracted file's SHA-256 is computed on the way; the caller compares the members with
//! the manifest ([`super::manifest::compare`]). A refused or unreadable archive leaves a
//! partial staging directory behind for the caller to remove.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::archive::{Hashed, PAX_XATTR, PAX_XATTR_B64, check_volume_name};
use super::crypt::{self, AGE_MAGIC, Identities};
use super::manifest::{self, BackupKind, DUMP_MEMBER, Manifest, Member, MemberKind, path_text};

const BUF: usize = 256 * 1024;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Sparse members are written in blocks of this size; an all-zero block becomes a hole.
const HOLE_BLOCK: u64 = 4096;

/// Caps on what an archive may make us write.
#[derive(Debug, Clone)]
pub struct ExtractLimits {
    /// Sum of the file members' sizes (holes included).
    pub max_total_bytes: u64,
    pub max_members: u64,
    /// Bytes of a member's path or link target.
    pub max_path_len: usize,
    /// Bytes of the extension headers (PAX, GNU long names, sparse maps) before one member:
    /// the tar reader holds them in memory.
    pub max_header_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_total_bytes: 1 << 40,
            max_members: 10_000_000,
            max_path_len: 4096,
            max_header_bytes: 16 << 20,
        }
    }
}

impl ExtractLimits {
    /// The limits a manifest sets: no more bytes or members than it lists.
    pub fn for_manifest(m: &Manifest) -> Self {
        ExtractLimits {
            max_total_bytes: m.content_size,
            max_members: m.members.len() as u64,
            ..ExtractLimits::default()
        }
    }
}

/// What an extraction (or a verification) found in the archive.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    pub members: Vec<Member>,
    pub content_size: u64,
    /// What could not be restored exactly (ownership when not root, an extended attribute
    /// the file system refused).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("the archive is encrypted (age): an identity is needed to decrypt it")]
    NeedIdentity,
    #[error("decrypting the archive: {0}")]
    Decrypt(#[from] crypt::DecryptError),
    #[error("not a backup archive: it starts neither as an age file nor as zstd")]
    NotAnArchive,
    /// Reading, decrypting or decompressing failed: a corrupted or truncated archive.
    #[error("reading the archive{context}: {source}")]
    Archive { context: String, source: io::Error },
    #[error("member {member:?} refused: {reason}")]
    Refused { member: String, reason: String },
    #[error("restore target for volume {volume:?}: {reason}")]
    Target { volume: String, reason: String },
    #[error("writing member {member:?}: {source}")]
    Write { member: String, source: io::Error },
    #[error("writing the dump: {0}")]
    Output(io::Error),
}

fn archive_err(after: Option<&str>, source: io::Error) -> ExtractError {
    ExtractError::Archive {
        context: after
            .map(|a| format!(" after member {a:?}"))
            .unwrap_or_default(),
        source,
    }
}

fn refused(member: &str, reason: impl Into<String>) -> ExtractError {
    ExtractError::Refused {
        member: member.to_owned(),
        reason: reason.into(),
    }
}

/// A stored archive being read: decrypted (if it is an age file) and decompressed.
pub struct StoredReader<'a> {
    inner: zstd::stream::read::Decoder<'static, BufReader<Box<dyn Read + Send + 'a>>>,
}

impl Read for StoredReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// Opens a stored archive: an age file is decrypted with `identity` (an error says one is
/// needed if none is given), then the zstd stream is decoded. Reading fails on corrupted or
/// truncated input (age authenticates each chunk and marks the last; zstd checks its frame).
pub fn open_stored<'a, R: Read + Send + 'a>(
    mut input: R,
    identity: Option<&Identities>,
) -> Result<StoredReader<'a>, ExtractError> {
    let mut head = [0u8; AGE_MAGIC.len()];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(archive_err(None, e)),
        }
    }
    let whole = io::Cursor::new(head[..n].to_vec()).chain(input);
    let body: Box<dyn Read + Send + 'a> = if head[..n] == *AGE_MAGIC {
        let ids = identity.ok_or(ExtractError::NeedIdentity)?;
        Box::new(crypt::decrypting_reader(whole, ids)?)
    } else if n >= ZSTD_MAGIC.len() && head[..ZSTD_MAGIC.len()] == ZSTD_MAGIC {
        Box::new(whole)
    } else {
        return Err(ExtractError::NotAnArchive);
    };
    let inner = zstd::stream::read::Decoder::new(body).map_err(|e| archive_err(None, e))?;
    Ok(StoredReader { inner })
}

/// Passes a dump's bytes to `out` (the restore hook's stdin), computing its member.
pub fn stream_dump(mut plain: impl Read, mut out: impl Write) -> Result<Member, ExtractError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(archive_err(None, e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(ExtractError::Output)?;
        size += n as u64;
    }
    out.flush().map_err(ExtractError::Output)?;
    Ok(Member {
        path: DUMP_MEMBER.to_owned(),
        kind: MemberKind::File,
        size,
        sha256: Some(hex::encode(hasher.finalize())),
        link: None,
    })
}

/// Extracts a volumes payload (a plain tar, from [`open_stored`]) into `targets`: volume name
/// → a fresh, empty staging directory. Every member must belong to one of these volumes.
pub fn extract_volumes(
    plain_tar: impl Read + Send,
    targets: &BTreeMap<String, PathBuf>,
    limits: &ExtractLimits,
) -> Result<Extracted, ExtractError> {
    let mut disk = Disk::open(targets)?;
    let names: BTreeSet<String> = targets.keys().cloned().collect();
    let mut got = read_ahead(plain_tar, |plain| {
        read_members(plain, &names, limits, Some(&mut disk))
    })?;
    if !disk.root_user {
        got.warnings
            .push("not running as root: owners (uid/gid) were not restored".into());
    }
    disk.finish(&mut got.warnings)?;
    Ok(got)
}

/// Reads a whole stored volumes archive (decrypting, decompressing, hashing every member)
/// and checks it against its manifest, writing nothing.
pub fn verify_volumes(
    stored: impl Read + Send,
    identity: Option<&Identities>,
    manifest: &Manifest,
) -> Result<(), String> {
    if manifest.kind != BackupKind::Volumes {
        return Err("verify: the manifest is not of a volumes backup".into());
    }
    verify(stored, identity, manifest, |plain| {
        let names: BTreeSet<String> = manifest.volumes.iter().cloned().collect();
        let limits = ExtractLimits::for_manifest(manifest);
        let got = read_ahead(plain, |plain| read_members(plain, &names, &limits, None))
            .map_err(|e| e.to_string())?;
        manifest::compare(&manifest.members, &got.members)
    })
}

/// Reads a whole stored dump archive and checks it against its manifest.
pub fn verify_dump(
    stored: impl Read + Send,
    identity: Option<&Identities>,
    manifest: &Manifest,
) -> Result<(), String> {
    if manifest.kind != BackupKind::Dump {
        return Err("verify: the manifest is not of a dump backup".into());
    }
    verify(stored, identity, manifest, |plain| {
        let member = stream_dump(plain, io::sink()).map_err(|e| e.to_string())?;
        manifest::compare(&manifest.members, &[member])
    })
}

fn verify<R: Read + Send>(
    stored: R,
    identity: Option<&Identities>,
    manifest: &Manifest,
    check: impl FnOnce(&mut StoredReader<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut hashed = Hashed::new(stored);
    {
        let mut plain = open_stored(&mut hashed, identity).map_err(|e| e.to_string())?;
        check(&mut plain)?;
        // The payload is checked; the decoders must also end cleanly (age's last chunk, the
        // zstd frame's checksum).
        let rest =
            io::copy(&mut plain, &mut io::sink()).map_err(|e| archive_err(None, e).to_string())?;
        if rest > 0 {
            return Err(format!("verify: {rest} bytes after the payload"));
        }
    }
    let rest = io::copy(&mut hashed, &mut io::sink()).map_err(|e| e.to_string())?;
    let (_, size, sha) = hashed.finish();
    if rest > 0 {
        return Err(format!("verify: {rest} bytes after the end of the archive"));
    }
    if !manifest.stored_sha256.is_empty()
        && (manifest.stored_size != size || manifest.stored_sha256 != sha)
    {
        return Err(format!(
            "verify: the stored archive is {size} bytes with sha256 {sha}, the manifest says \
             {} bytes with sha256 {}",
            manifest.stored_size, manifest.stored_sha256
        ));
    }
    Ok(())
}

const AHEAD_CHUNK: usize = 1 << 20;
const AHEAD_DEPTH: usize = 4;

/// Runs `f` on `input` read by another thread, up to a few MiB ahead: decrypting and
/// decompressing overlap with hashing and writing files. The thread ends once `f` returns and
/// its current read of `input` does.
fn read_ahead<R: Read + Send, T>(mut input: R, f: impl FnOnce(&mut AheadReader) -> T) -> T {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(AHEAD_DEPTH);
        let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            loop {
                let mut chunk = recycle_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(AHEAD_CHUNK));
                chunk.resize(AHEAD_CHUNK, 0);
                let mut filled = 0;
                let result = loop {
                    match input.read(&mut chunk[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == chunk.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                chunk.truncate(filled);
                let last = filled == 0 || result.is_err();
                if filled > 0 && tx.send(Ok(chunk)).is_err() {
                    return;
                }
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                }
                if last {
                    return;
                }
            }
        });
        let mut reader = AheadReader {
            rx,
            recycle: recycle_tx,
            chunk: Vec::new(),
            pos: 0,
            done: false,
            failed: None,
        };
        f(&mut reader)
        // `reader` drops here: the thread's next send fails and it ends.
    })
}

/// The reading end of [`read_ahead`].
struct AheadReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    recycle: mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
    /// A read error, returned again on every later read (never a clean end after it).
    failed: Option<(io::ErrorKind, String)>,
}

impl Read for AheadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.chunk, next);
                    let _ = self.recycle.send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Counts the bytes the tar reader takes between members (extension headers it keeps in
/// memory) and fails past the limit.
struct Meter {
    headers: Cell<bool>,
    used: Cell<u64>,
    limit: u64,
}

struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.meter.headers.get() {
            let used = self.meter.used.get() + n as u64;
            self.meter.used.set(used);
            if used > self.meter.limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more than {} bytes of headers before one member",
                        self.meter.limit
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// The components of a member's path (`.` and empty ones dropped), or why it is refused.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains `..`".into()),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err("empty path".into());
    }
    Ok(out)
}

/// Member metadata from its header.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn read_members(
    plain: impl Read,
    volumes: &BTreeSet<String>,
    limits: &ExtractLimits,
    mut disk: Option<&mut Disk>,
) -> Result<Extracted, ExtractError> {
    let meter = Rc::new(Meter {
        headers: Cell::new(true),
        used: Cell::new(0),
        limit: limits.max_header_bytes,
    });
    let mut archive = tar::Archive::new(Metered {
        inner: plain,
        meter: meter.clone(),
    });
    let mut out = Extracted::default();
    // Regular files extracted so far (archive paths): what a hardlink may name.
    let mut files: HashSet<String> = HashSet::new();
    let mut buf = vec![0u8; BUF];
    let mut last: Option<String> = None;
    {
        let mut entries = archive.entries().map_err(|e| archive_err(None, e))?;
        loop {
            meter.headers.set(true);
            meter.used.set(0);
            let mut entry = match entries.next() {
                None => break,
                Some(Ok(e)) => e,
                Some(Err(e)) => return Err(archive_err(last.as_deref(), e)),
            };
            meter.headers.set(false);

            let raw_path = entry.path_bytes().into_owned();
            let shown = path_text(&raw_path);
            let et = entry.header().entry_type();
            if et == EntryType::XGlobalHeader {
                out.warnings
                    .push(format!("a global PAX header ({shown:?}) was ignored"));
                continue;
            }
            if raw_path.len() > limits.max_path_len {
                return Err(refused(
                    &shown,
                    format!("path longer than {} bytes", limits.max_path_len),
                ));
            }
            let comps = components(&raw_path).map_err(|r| refused(&shown, r))?;
            let volume = String::from_utf8_lossy(comps[0]).into_owned();
            if !volumes.contains(&volume) || check_volume_name(&volume).is_err() {
                return Err(refused(
                    &shown,
                    format!(
                        "{volume:?} is not a volume of this restore (volumes: {})",
                        volumes.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let rel: Vec<&[u8]> = comps[1..].to_vec();
            let path = path_text(&comps.join(&b'/'));
            if out.members.len() as u64 >= limits.max_members {
                return Err(refused(
                    &shown,
                    format!("more than {} members", limits.max_members),
                ));
            }
            if rel.is_empty() && et != EntryType::Directory {
                return Err(refused(
                    &shown,
                    "the volume's own directory can only be a directory entry",
                ));
            }
            let meta = meta(&mut entry).map_err(|r| refused(&shown, r))?;

            let member = match et {
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    let size = entry.size();
                    let total = out.content_size.checked_add(size);
                    if total.is_none_or(|t| t > limits.max_total_bytes) {
                        return Err(refused(
                            &shown,
                            format!(
                                "its {size} bytes pass the restore's limit of {} bytes",
                                limits.max_total_bytes
                            ),
                        ));
                    }
                    let sparse = et == EntryType::GNUSparse;
                    let sha = match disk.as_deref_mut() {
                        Some(d) => d.file(
                            &volume,
                            &rel,
                            &path,
                            &mut entry,
                            size,
                            sparse,
                            &meta,
                            &mut buf,
                            &mut out.warnings,
                        )?,
                        None => hash_entry(&mut entry, size, &path, &mut buf)?,
                    };
                    out.content_size += size;
                    files.insert(path.clone());
                    Member {
                        path,
                        kind: MemberKind::File,
                        size,
                        sha256: Some(sha),
                        link: None,
                    }
                }
                EntryType::Directory => {
                    if let Some(d) = disk.as_deref_mut() {
                        d.dir(&volume, &rel, &path, meta)?;
                    }
                    Member {
                        path,
                        kind: MemberKind::Dir,
                        size: 0,
                        sha256: None,
                        link: None,
                    }
                }
                EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    if target.is_empty() {
                        return Err(refused(&shown, "symlink without a target"));
                    }
                    if target.len() > limits.max_path_len {
                        return Err(refused(
                            &shown,
                            format!("link target longer than {} bytes", limits.max_path_len),
                        ));
                    }
                    if let Some(d) = disk.as_deref_mut() {
                        d.symlink(&volume, &rel, &path, &target, &meta)?;
                    }
                    Member {
                        path,
                        kind: MemberKind::Symlink,
                        size: 0,
                        sha256: None,
                        link: Some(path_text(&target)),
                    }
                }
                EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let shown_target = path_text(&target);
                    let tcomps = components(&target).map_err(|r| {
                        refused(&shown, format!("hardlink target {shown_target:?}: {r}"))
                    })?;
                    let tpath = path_text(&tcomps.join(&b'/'));
                    if tcomps[0] != comps[0] || !files.contains(&tpath) {
                        return Err(refused(
                            &shown,
                            format!(
                                "hardlink target {shown_target:?} is not a file extracted before \
                                 it in volume {volume:?}"
                            ),
                        ));
                    }
                    if let Some(d) = disk.as_deref_mut() {
                        d.hardlink(&volume, &rel, &path, &tcomps[1..])?;
                    }
                    Member {
                        path,
                        kind: MemberKind::Hardlink,
                        size: 0,
                        sha256: None,
                        link: Some(tpath),
                    }
                }
                EntryType::Fifo => {
                    if let Some(d) = disk.as_deref_mut() {
                        d.fifo(&volume, &rel, &path, &meta)?;
                    }
                    Member {
                        path,
                        kind: MemberKind::Fifo,
                        size: 0,
                        sha256: None,
                        link: None,
                    }
                }
                EntryType::Char | EntryType::Block => {
                    return Err(refused(&shown, "device nodes are never restored"));
                }
                other => {
                    return Err(refused(
                        &shown,
                        format!("unsupported tar entry type {:?}", other.as_byte() as char),
                    ));
                }
            };
            last = Some(member.path.clone());
            out.members.push(member);
        }
    }
    // After the end-of-archive block only zeros may follow, and the decoders below must end
    // cleanly: read to the end.
    meter.headers.set(false);
    let mut rest = archive.into_inner();
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(archive_err(last.as_deref(), e)),
        };
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(archive_err(
                last.as_deref(),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after the end of the tar archive",
                ),
            ));
        }
    }
    Ok(out)
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
    let h = entry.header();
    let mode = h.mode().map_err(|e| format!("bad mode field: {e}"))? & 0o7777;
    let uid = h.uid().map_err(|e| format!("bad uid field: {e}"))?;
    let gid = h.gid().map_err(|e| format!("bad gid field: {e}"))?;
    let mtime = h.mtime().map_err(|e| format!("bad mtime field: {e}"))?;
    let uid = u32::try_from(uid).map_err(|_| format!("uid {uid} out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| format!("gid {gid} out of range"))?;
    let mtime = i64::try_from(mtime).map_err(|_| format!("mtime {mtime} out of range"))?;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    {
        for ext in pax {
            let ext = ext.map_err(|e| format!("bad PAX header: {e}"))?;
            let key = ext.key_bytes();
            let (name, value) = if let Some(name) = key.strip_prefix(PAX_XATTR.as_bytes()) {
                (name.to_vec(), ext.value_bytes().to_vec())
            } else if let Some(name) = key.strip_prefix(PAX_XATTR_B64.as_bytes()) {
                libarchive_xattr(name, ext.value_bytes())?
            } else {
                continue;
            };
            if name.is_empty() || name.contains(&0) {
                return Err("bad extended attribute name".into());
            }
            // bsdtar writes both forms of each: keep one.
            xattrs.retain(|(n, _)| *n != name);
            xattrs.push((name, value));
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

/// An extended attribute in libarchive's form: percent-encoded name, base64 value.
fn libarchive_xattr(name: &[u8], value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    use base64::Engine as _;
    let bad = || "bad LIBARCHIVE.xattr record".to_owned();
    let mut decoded = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'%' {
            let hex = name.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            decoded.push(name[i]);
            i += 1;
        }
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let value = engine.decode(value).map_err(|_| bad())?;
    Ok((decoded, value))
}

/// Reads a member's content, exactly `size` bytes, hashing it.
fn hash_entry(
    entry: &mut impl Read,
    size: u64,
    path: &str,
    buf: &mut [u8],
) -> Result<String, ExtractError> {
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    loop {
        let n = read_some(entry, buf, path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        got += n as u64;
    }
    short_check(got, size, path)?;
    Ok(hex::encode(hasher.finalize()))
}

fn read_some(r: &mut impl Read, buf: &mut [u8], path: &str) -> Result<usize, ExtractError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ExtractError::Archive {
                    context: format!(" in member {path:?}"),
                    source: e,
                });
            }
        }
    }
}

fn short_check(got: u64, size: u64, path: &str) -> Result<(), ExtractError> {
    if got != size {
        return Err(ExtractError::Archive {
            context: format!(" in member {path:?}"),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends after {got} of its {size} bytes"),
            ),
        });
    }
    Ok(())
}

/// Deferred metadata of a directory: applied at the end, deepest first, once nothing more
/// is created in it.
struct DirFix {
    volume: String,
    rel: Vec<Vec<u8>>,
    path: String,
    meta: Meta,
}

/// The staging directories being written.
struct Disk {
    roots: BTreeMap<String, OwnedFd>,
    /// The last parent directory opened: members come directory by directory.
    cache: Option<(String, Vec<Vec<u8>>, OwnedFd)>,
    dirs: Vec<DirFix>,
    root_user: bool,
}

fn no_time() -> Timespec {
    Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_OMIT,
    }
}

fn times(mtime: i64) -> Timestamps {
    Timestamps {
        last_access: no_time(),
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    }
}

fn write_err(path: &str) -> impl Fn(rustix::io::Errno) -> ExtractError + '_ {
    move |e| ExtractError::Write {
        member: path.to_owned(),
        source: e.into(),
    }
}

impl Disk {
    fn open(targets: &BTreeMap<String, PathBuf>) -> Result<Disk, ExtractError> {
        let mut roots = BTreeMap::new();
        for (volume, dir) in targets {
            let target = |reason: String| ExtractError::Target {
                volume: volume.clone(),
                reason,
            };
            check_volume_name(volume).map_err(target)?;
            let fd = rustix::fs::open(
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| target(format!("{}: {e}", dir.display())))?;
            let mut listing = rustix::fs::Dir::read_from(&fd)
                .map_err(|e| target(format!("{}: {e}", dir.display())))?;
            let non_empty = listing.any(|e| {
                e.map(|e| {
                    let n = e.file_name().to_bytes();
                    n != b"." && n != b".."
                })
                .unwrap_or(true)
            });
            if non_empty {
                return Err(target(format!(
                    "{} is not empty (a restore goes into a fresh directory)",
                    dir.display()
                )));
            }
            roots.insert(volume.clone(), fd);
        }
        Ok(Disk {
            roots,
            cache: None,
            dirs: Vec::new(),
            root_user: rustix::process::geteuid().is_root(),
        })
    }

    /// The directory `rel` of a volume, walked from its root one component at a time without
    /// following links; missing directories are created (0700 until their entry sets them).
    fn open_dir(
        &self,
        volume: &str,
        rel: &[&[u8]],
        member: &str,
        create: bool,
    ) -> Result<OwnedFd, ExtractError> {
        let root = self.roots.get(volume).ok_or_else(|| ExtractError::Target {
            volume: volume.to_owned(),
            reason: "no target directory".into(),
        })?;
        let mut cur = rustix::io::dup(root).map_err(write_err(member))?;
        for (i, c) in rel.iter().enumerate() {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&cur, *c, flags, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, *c, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(write_err(member)(e)),
                    }
                    rustix::fs::openat(&cur, *c, flags, Mode::empty())
                }
                other => other,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    let parent = path_text(&rel[..=i].join(&b'/'));
                    return Err(refused(
                        member,
                        format!(
                            "{volume}/{parent} is a symlink or not a directory: never written \
                             through"
                        ),
                    ));
                }
                Err(rustix::io::Errno::NOENT) => {
                    let parent = path_text(&rel[..=i].join(&b'/'));
                    return Err(refused(member, format!("{volume}/{parent} does not exist")));
                }
                Err(e) => return Err(write_err(member)(e)),
            };
        }
        Ok(cur)
    }

    /// The parent directory of `rel` (not empty), through the cache.
    fn parent(
        &mut self,
        volume: &str,
        rel: &[&[u8]],
        member: &str,
    ) -> Result<&OwnedFd, ExtractError> {
        let parent = &rel[..rel.len() - 1];
        let hit = matches!(&self.cache, Some((v, p, _)) if v == volume
            && p.len() == parent.len()
            && p.iter().zip(parent).all(|(a, b)| a.as_slice() == *b));
        if !hit {
            let fd = self.open_dir(volume, parent, member, true)?;
            self.cache = Some((
                volume.to_owned(),
                parent.iter().map(|c| c.to_vec()).collect(),
                fd,
            ));
        }
        match &self.cache {
            Some((_, _, fd)) => Ok(fd),
            None => Err(refused(member, "internal: no parent directory")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        volume: &str,
        rel: &[&[u8]],
        path: &str,
        entry: &mut impl Read,
        size: u64,
        sparse: bool,
        meta: &Meta,
        buf: &mut [u8],
        warnings: &mut Vec<String>,
    ) -> Result<String, ExtractError> {
        let name = rel[rel.len() - 1];
        let parent = self.parent(volume, rel, path)?;
        let fd = match rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => {
                return Err(refused(
                    path,
                    "it exists already (a member twice, or through a link)",
                ));
            }
            Err(e) => return Err(write_err(path)(e)),
        };
        let mut file = File::from(fd);
        let io_err = |e: io::Error| ExtractError::Write {
            member: path.to_owned(),
            source: e,
        };
        let mut hasher = Sha256::new();
        let mut at = 0u64;
        loop {
            let n = read_some(entry, buf, path)?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            hasher.update(chunk);
            if sparse {
                write_sparse(&file, chunk, at).map_err(io_err)?;
            } else {
                file.write_all(chunk).map_err(io_err)?;
            }
            at += n as u64;
        }
        short_check(at, size, path)?;
        if sparse {
            file.set_len(size).map_err(io_err)?;
        }
        self.owner_mode(&file, path, meta)?;
        set_xattrs(&file, path, &meta.xattrs, warnings);
        rustix::fs::futimens(&file, &times(meta.mtime)).map_err(write_err(path))?;
        Ok(hex::encode(hasher.finalize()))
    }

    fn owner_mode(
        &self,
        fd: &impl std::os::fd::AsFd,
        path: &str,
        meta: &Meta,
    ) -> Result<(), ExtractError> {
        if self.root_user {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw_unchecked(meta.uid)),
                Some(rustix::fs::Gid::from_raw_unchecked(meta.gid)),
            )
            .map_err(write_err(path))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(write_err(path))
    }

    fn dir(
        &mut self,
        volume: &str,
        rel: &[&[u8]],
        path: &str,
        meta: Meta,
    ) -> Result<(), ExtractError> {
        if let Some(name) = rel.last() {
            let parent = self.parent(volume, rel, path)?;
            match rustix::fs::mkdirat(parent, *name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => {
                    let st = rustix::fs::statat(parent, *name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(write_err(path))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                        return Err(refused(path, "it exists already and is not a directory"));
                    }
                }
                Err(e) => return Err(write_err(path)(e)),
            }
        }
        self.dirs.push(DirFix {
            volume: volume.to_owned(),
            rel: rel.iter().map(|c| c.to_vec()).collect(),
            path: path.to_owned(),
            meta,
        });
        Ok(())
    }

    fn symlink(
        &mut self,
        volume: &str,
        rel: &[&[u8]],
        path: &str,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), ExtractError> {
        let name = rel[rel.len() - 1];
        let root_user = self.root_user;
        let parent = self.parent(volume, rel, path)?;
        match rustix::fs::symlinkat(target, parent, name) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                return Err(refused(path, "it exists already (a member twice)"));
            }
            Err(e) => return Err(write_err(path)(e)),
        }
        if root_user {
            rustix::fs::chownat(
                parent,
                name,
                Some(rustix::fs::Uid::from_raw_unchecked(meta.uid)),
                Some(rustix::fs::Gid::from_raw_unchecked(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(write_err(path))?;
        }
        rustix::fs::utimensat(parent, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(write_err(path))
    }

    fn hardlink(
        &mut self,
        volume: &str,
        rel: &[&[u8]],
        path: &str,
        target_rel: &[&[u8]],
    ) -> Result<(), ExtractError> {
        let (Some(tname), Some(name)) = (target_rel.last(), rel.last()) else {
            return Err(refused(path, "hardlink to or as the volume's directory"));
        };
        let src_parent = self.open_dir(volume, &target_rel[..target_rel.len() - 1], path, false)?;
        let st = rustix::fs::statat(&src_parent, *tname, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(write_err(path))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(refused(path, "hardlink target is not a regular file"));
        }
        let parent = self.parent(volume, rel, path)?;
        match rustix::fs::linkat(&src_parent, *tname, parent, *name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => {
                Err(refused(path, "it exists already (a member twice)"))
            }
            Err(e) => Err(write_err(path)(e)),
        }
    }

    fn fifo(
        &mut self,
        volume: &str,
        rel: &[&[u8]],
        path: &str,
        meta: &Meta,
    ) -> Result<(), ExtractError> {
        let name = rel[rel.len() - 1];
        let root_user = self.root_user;
        let parent = self.parent(volume, rel, path)?;
        match rustix::fs::mkfifoat(parent, name, Mode::from_raw_mode(0o600)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                return Err(refused(path, "it exists already (a member twice)"));
            }
            Err(e) => return Err(write_err(path)(e)),
        }
        // The fifo was just created by us in a directory only we write: these calls (which
        // would follow a link) act on it.
        if root_user {
            rustix::fs::chownat(
                parent,
                name,
                Some(rustix::fs::Uid::from_raw_unchecked(meta.uid)),
                Some(rustix::fs::Gid::from_raw_unchecked(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(write_err(path))?;
        }
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(meta.mode),
            AtFlags::empty(),
        )
        .map_err(write_err(path))?;
        rustix::fs::utimensat(parent, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(write_err(path))
    }

    /// Directory metadata, deepest first, now that nothing more is created in them.
    fn finish(mut self, warnings: &mut Vec<String>) -> Result<(), ExtractError> {
        self.cache = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.len()));
        for d in dirs {
            let rel: Vec<&[u8]> = d.rel.iter().map(|c| c.as_slice()).collect();
            let fd = self.open_dir(&d.volume, &rel, &d.path, false)?;
            self.owner_mode(&fd, &d.path, &d.meta)?;
            set_xattrs(&fd, &d.path, &d.meta.xattrs, warnings);
            rustix::fs::futimens(&fd, &times(d.meta.mtime)).map_err(write_err(&d.path))?;
        }
        Ok(())
    }
}

fn set_xattrs(
    fd: &impl std::os::fd::AsFd,
    path: &str,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    warnings: &mut Vec<String>,
) {
    for (name, value) in xattrs {
        if let Err(e) =
            rustix::fs::fsetxattr(fd, name.as_slice(), value, rustix::fs::XattrFlags::empty())
        {
            warnings.push(format!(
                "{path}: extended attribute {} not restored: {e}",
                path_text(name)
            ));
        }
    }
}

/// Writes a chunk of a sparse member at `at`, leaving all-zero blocks as holes.
fn write_sparse(file: &File, chunk: &[u8], at: u64) -> io::Result<()> {
    let mut i = 0usize;
    let mut data_start: Option<usize> = None;
    while i < chunk.len() {
        // Blocks are aligned on the file's offsets.
        let off = at + i as u64;
        let end = (((off / HOLE_BLOCK) + 1) * HOLE_BLOCK - at).min(chunk.len() as u64) as usize;
        let block = &chunk[i..end];
        let zero = block.iter().fold(0u8, |a, b| a | b) == 0;
        match (zero, data_start) {
            (true, Some(s)) => {
                file.write_all_at(&chunk[s..i], at + s as u64)?;
                data_start = None;
            }
            (false, None) => data_start = Some(i),
            _ => {}
        }
        i = end;
    }
    if let Some(s) = data_start {
        file.write_all_at(&chunk[s..], at + s as u64)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_are_relative_without_dotdot() {
        assert_eq!(
            components(b"media/a/b").unwrap(),
            vec![&b"media"[..], b"a", b"b"]
        );
        assert_eq!(
            components(b"./media//a/./").unwrap(),
            vec![&b"media"[..], b"a"]
        );
        assert_eq!(components(b"/etc/passwd").unwrap_err(), "absolute path");
        assert_eq!(components(b"media/../x").unwrap_err(), "path contains `..`");
        assert_eq!(components(b"./").unwrap_err(), "empty path");
    }

    #[test]
    fn libarchive_xattr_records_are_decoded() {
        let (name, value) = libarchive_xattr(b"user.a%3Db", b"bGluZQpicmVhaw==").unwrap();
        assert_eq!(
            (name.as_slice(), value.as_slice()),
            (&b"user.a=b"[..], &b"line\nbreak"[..])
        );
        // libarchive leaves the padding out.
        let (_, value) = libarchive_xattr(b"user.x", b"bGluZQpicmVhaw").unwrap();
        assert_eq!(value, b"line\nbreak");
        assert!(libarchive_xattr(b"user.%G1", b"").is_err());
        assert!(libarchive_xattr(b"user.x", b"!!").is_err());
    }

    #[test]
    fn zero_blocks_of_sparse_members_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("s")).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        chunk[5000] = 1;
        write_sparse(&f, &chunk, 0).unwrap();
        write_sparse(&f, &vec![0u8; 8 << 20], 1 << 20).unwrap();
        f.set_len(9 << 20).unwrap();
        f.sync_all().unwrap();
        let st = rustix::fs::fstat(&f).unwrap();
        assert!(st.st_blocks * 512 <= 64 * 1024, "{} blocks", st.st_blocks);
        let mut back = Vec::new();
        File::open(dir.path().join("s"))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), 9 << 20);
        assert_eq!(back[5000], 1);
        assert_eq!(back.iter().filter(|b| **b != 0).count(), 1);
    }

    #[test]
    fn stored_input_that_is_neither_age_nor_zstd_is_refused() {
        let e = open_stored(&b"PK\x03\x04 a zip"[..], None).err().unwrap();
        assert!(matches!(e, ExtractError::NotAnArchive), "{e}");
        let e = open_stored(&b""[..], None).err().unwrap();
        assert!(matches!(e, ExtractError::NotAnArchive), "{e}");
    }
}
