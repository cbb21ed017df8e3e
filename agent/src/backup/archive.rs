//! Writing stored archives: `[age ( ] zstd ( payload ) [ ) ]`, streamed with bounded buffers.
//!
//! A volumes payload is a tar with one top-level directory per volume, named by the volume's
//! compose name (`media/…`), written from our own walk of each volume directory:
//!
//! - links are never followed: directories are opened with `O_NOFOLLOW` below the volume
//!   directory (openat-style), files too, so a link swapped in while we read is not archived
//!   through; symlinks are stored as symlinks with their target bytes as they are;
//! - modes, numeric uid/gid and mtimes (whole seconds, as GNU tar) are kept;
//! - a file with more than one link is stored once, its other names as tar hardlinks;
//! - sparse files (fewer blocks than their length) are found with `SEEK_DATA`/`SEEK_HOLE` and
//!   written as GNU sparse entries: only their data regions are read and stored;
//! - extended attributes go in a PAX header as `SCHILY.xattr.<name>` (as GNU tar and bsdtar
//!   write them), except `security.selinux` (a label of this host); symlinks' are not kept;
//! - fifos are stored as fifos; sockets and device nodes are skipped with a warning.
//!
//! A dump payload is the dump's bytes as they are. The manifest's members are computed while
//! writing (a file's SHA-256 is of the bytes stored, holes counted as zeros); so is the size
//! and SHA-256 of the stored bytes.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, Stat};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::crypt::{self, Recipients};
use super::manifest::{DUMP_MEMBER, Member, MemberKind, path_text};

/// The PAX record prefix of an extended attribute (GNU tar, bsdtar): the raw value.
pub const PAX_XATTR: &str = "SCHILY.xattr.";
/// The libarchive form: a percent-encoded name, a base64 value. Used for values holding a
/// newline, which the `tar` crate's PAX reader cannot take raw (it splits records at `\n`).
pub const PAX_XATTR_B64: &str = "LIBARCHIVE.xattr.";
/// Extended attributes that are not archived: they describe this host, not the data.
pub const SKIPPED_XATTRS: &[&str] = &["security.selinux"];

const BUF: usize = 256 * 1024;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// How to write an archive.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// age X25519 recipients (`age1…`); empty: not encrypted.
    pub recipients: Vec<String>,
    pub zstd_level: i32,
    /// zstd worker threads; 0 compresses in the calling thread.
    pub zstd_workers: u32,
    /// Bytes of input per zstd worker job (0: zstd's choice, 4× the window: 8 MiB at level
    /// 3). Memory grows with it (about 100 MiB with 2 workers and zstd's choice, 25 MiB with
    /// 1 MiB jobs); the ratio and speed barely change (see `benches/backup_archive.rs`).
    pub zstd_job_size: u32,
    /// Refuse to write an archive of more members than this.
    pub max_members: u64,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            recipients: Vec::new(),
            zstd_level: 3,
            zstd_workers: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            zstd_job_size: 1 << 20,
            max_members: 10_000_000,
        }
    }
}

/// What was written: the manifest's members and the stored archive's size and digest.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest_members: Vec<Member>,
    /// Sum of the members' sizes.
    pub content_size: u64,
    pub stored_size: u64,
    pub stored_sha256: String,
    /// What was skipped or changed while it was read (sockets, devices, files that changed).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Recipients(String),
    #[error("volume name {0:?} cannot be an archive directory (a name, no `/`, not `.`/`..`)")]
    VolumeName(String),
    #[error("volume {0:?} is listed twice")]
    DuplicateVolume(String),
    #[error("reading {path}: {source}")]
    Source { path: String, source: io::Error },
    #[error("reading the dump: {0}")]
    Input(io::Error),
    #[error("writing the archive: {0}")]
    Output(io::Error),
    #[error("more than {0} members: refusing to write a larger archive")]
    TooManyMembers(u64),
}

/// Checks a volume name is usable as the top-level directory of a volumes archive.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
    {
        return Err(format!(
            "volume name {name:?} cannot be an archive directory (a name, no `/`, not `.`/`..`)"
        ));
    }
    Ok(())
}

/// Counts and hashes the bytes that pass through, read or written.
pub struct Hashed<T> {
    inner: T,
    hasher: Sha256,
    count: u64,
}

impl<T> Hashed<T> {
    pub fn new(inner: T) -> Self {
        Hashed {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner reader or writer, the byte count and the hex SHA-256.
    pub fn finish(self) -> (T, u64, String) {
        (self.inner, self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The encryption stage: nothing, or age.
enum Sealer<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealer::Plain(w) => w.write(buf),
            Sealer::Age(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sealer::Plain(w) => w.write_all(buf),
            Sealer::Age(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealer::Plain(w) => w.flush(),
            Sealer::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> Sealer<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Sealer::Plain(w) => Ok(w),
            Sealer::Age(w) => w.finish(),
        }
    }
}

type Compressor<W> = zstd::stream::write::Encoder<'static, Sealer<Hashed<W>>>;

/// The stages under the payload: zstd, maybe age, counting and hashing, `out`.
fn open_stages<W: Write>(out: W, opts: &ArchiveOptions) -> Result<Compressor<W>, ArchiveError> {
    let recipients: Recipients =
        crypt::parse_recipients(&opts.recipients).map_err(ArchiveError::Recipients)?;
    let hashed = Hashed::new(out);
    let sealer = if recipients.is_empty() {
        Sealer::Plain(hashed)
    } else {
        Sealer::Age(crypt::encrypting_writer(&recipients, hashed).map_err(ArchiveError::Output)?)
    };
    let mut z =
        zstd::stream::write::Encoder::new(sealer, opts.zstd_level).map_err(ArchiveError::Output)?;
    // A content checksum: a corrupted unencrypted archive fails to decode.
    z.include_checksum(true).map_err(ArchiveError::Output)?;
    if opts.zstd_workers > 0 {
        z.multithread(opts.zstd_workers)
            .map_err(ArchiveError::Output)?;
        if opts.zstd_job_size > 0 {
            z.set_parameter(zstd::zstd_safe::CParameter::JobSize(opts.zstd_job_size))
                .map_err(ArchiveError::Output)?;
        }
    }
    Ok(z)
}

/// Ends the zstd frame and the age stream; returns the stored size and SHA-256.
fn finish_stages<W: Write>(z: Compressor<W>) -> Result<(u64, String), ArchiveError> {
    let sealer = z.finish().map_err(ArchiveError::Output)?;
    let hashed = sealer.finish().map_err(ArchiveError::Output)?;
    let (mut out, size, sha) = hashed.finish();
    out.flush().map_err(ArchiveError::Output)?;
    Ok((size, sha))
}

/// Stores a stream (a dump hook's stdout) as the one member `dump`.
pub fn write_stream(
    mut input: impl Read,
    out: impl Write,
    opts: &ArchiveOptions,
) -> Result<Written, ArchiveError> {
    let mut z = open_stages(out, opts)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArchiveError::Input(e)),
        };
        hasher.update(&buf[..n]);
        z.write_all(&buf[..n]).map_err(ArchiveError::Output)?;
        size += n as u64;
    }
    let (stored_size, stored_sha256) = finish_stages(z)?;
    Ok(Written {
        manifest_members: vec![Member {
            path: DUMP_MEMBER.to_owned(),
            kind: MemberKind::File,
            size,
            sha256: Some(hex::encode(hasher.finalize())),
            link: None,
        }],
        content_size: size,
        stored_size,
        stored_sha256,
        warnings: Vec::new(),
    })
}

/// Stores the files of volumes: `(compose name, directory)`, each under a top-level directory
/// of its name.
pub fn write_volumes(
    volumes: &[(String, PathBuf)],
    out: impl Write,
    opts: &ArchiveOptions,
) -> Result<Written, ArchiveError> {
    let mut names = HashSet::new();
    for (name, _) in volumes {
        check_volume_name(name).map_err(|_| ArchiveError::VolumeName(name.clone()))?;
        if !names.insert(name.as_str()) {
            return Err(ArchiveError::DuplicateVolume(name.clone()));
        }
    }
    let z = open_stages(out, opts)?;
    let mut w = TarWriter {
        tar: tar::Builder::new(BufWriter::with_capacity(BUF, z)),
        members: Vec::new(),
        content_size: 0,
        warnings: Vec::new(),
        links: HashMap::new(),
        buf: vec![0u8; BUF],
        max_members: opts.max_members,
    };
    for (name, dir) in volumes {
        w.links.clear();
        w.volume(name, dir)?;
    }
    let TarWriter {
        tar,
        members,
        content_size,
        warnings,
        ..
    } = w;
    let z = tar
        .into_inner()
        .map_err(ArchiveError::Output)?
        .into_inner()
        .map_err(|e| ArchiveError::Output(e.into_error()))?;
    let (stored_size, stored_sha256) = finish_stages(z)?;
    Ok(Written {
        manifest_members: members,
        content_size,
        stored_size,
        stored_sha256,
        warnings,
    })
}

/// Where a directory walk is: the open directory, its archive path, its entries left.
struct Frame {
    dir: OwnedFd,
    path: Vec<u8>,
    names: std::vec::IntoIter<Vec<u8>>,
}

struct TarWriter<W: Write> {
    tar: tar::Builder<BufWriter<Compressor<W>>>,
    members: Vec<Member>,
    content_size: u64,
    warnings: Vec<String>,
    /// (dev, ino) of files with more than one link → the archive path stored first.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    max_members: u64,
}

fn src_err(path: &[u8]) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |e| ArchiveError::Source {
        path: path_text(path),
        source: e,
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl<W: Write> TarWriter<W> {
    fn volume(&mut self, name: &str, dir: &Path) -> Result<(), ArchiveError> {
        let root_path = name.as_bytes().to_vec();
        let root = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::Source {
            path: format!("volume {name:?} at {}", dir.display()),
            source: e.into(),
        })?;
        let st = rustix::fs::fstat(&root).map_err(|e| src_err(&root_path)(e.into()))?;
        let xattrs = self.xattrs(&root, &root_path);
        self.entry_dir(&root_path, &st, &xattrs)?;

        let names = self.list(&root, &root_path)?;
        let mut stack = vec![Frame {
            dir: root,
            path: root_path,
            names: names.into_iter(),
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            let path = join(&frame.path, &name);
            if let Some(child) = self.child(&frame.dir, &name, path)? {
                stack.push(child);
            }
        }
        Ok(())
    }

    /// The names in a directory, sorted (a stable archive order), without `.` and `..`.
    fn list(&mut self, dir: &OwnedFd, path: &[u8]) -> Result<Vec<Vec<u8>>, ArchiveError> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir).map_err(|e| src_err(path)(e.into()))? {
            let entry = entry.map_err(|e| src_err(path)(e.into()))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    /// Archives one directory entry; returns a frame if it is a directory to descend into.
    fn child(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        path: Vec<u8>,
    ) -> Result<Option<Frame>, ArchiveError> {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => {
                self.warn(&path, "vanished while the volume was read: skipped");
                return Ok(None);
            }
            Err(e) => return Err(src_err(&path)(e.into())),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let fd = match rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(
                        rustix::io::Errno::NOENT
                        | rustix::io::Errno::LOOP
                        | rustix::io::Errno::NOTDIR,
                    ) => {
                        self.warn(&path, "changed while the volume was read: skipped");
                        return Ok(None);
                    }
                    Err(e) => return Err(src_err(&path)(e.into())),
                };
                let st = rustix::fs::fstat(&fd).map_err(|e| src_err(&path)(e.into()))?;
                let xattrs = self.xattrs(&fd, &path);
                self.entry_dir(&path, &st, &xattrs)?;
                let names = self.list(&fd, &path)?;
                Ok(Some(Frame {
                    dir: fd,
                    path,
                    names: names.into_iter(),
                }))
            }
            FileType::RegularFile => {
                self.file(dir, name, &path)?;
                Ok(None)
            }
            FileType::Symlink => {
                let target = match rustix::fs::readlinkat(dir, name, Vec::new()) {
                    Ok(t) => t,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => {
                        self.warn(&path, "changed while the volume was read: skipped");
                        return Ok(None);
                    }
                    Err(e) => return Err(src_err(&path)(e.into())),
                };
                self.entry_symlink(&path, &st, target.as_bytes())?;
                Ok(None)
            }
            FileType::Fifo => {
                self.count()?;
                let mut h = header(EntryType::Fifo, &st, 0);
                self.write_names(&mut h, &path, None)?;
                self.emit(&h)?;
                self.members.push(Member {
                    path: path_text(&path),
                    kind: MemberKind::Fifo,
                    size: 0,
                    sha256: None,
                    link: None,
                });
                Ok(None)
            }
            FileType::Socket => {
                self.warn(&path, "is a socket: skipped");
                Ok(None)
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                self.warn(&path, "is a device node: skipped (never archived)");
                Ok(None)
            }
            FileType::Unknown => {
                self.warn(&path, "is of an unknown file type: skipped");
                Ok(None)
            }
        }
    }

    fn warn(&mut self, path: &[u8], what: &str) {
        self.warnings.push(format!("{} {what}", path_text(path)));
    }

    fn count(&mut self) -> Result<(), ArchiveError> {
        if self.members.len() as u64 >= self.max_members {
            return Err(ArchiveError::TooManyMembers(self.max_members));
        }
        Ok(())
    }

    fn emit(&mut self, h: &Header) -> Result<(), ArchiveError> {
        self.tar
            .get_mut()
            .write_all(h.as_bytes())
            .map_err(ArchiveError::Output)
    }

    /// Writes the PAX and GNU long-name entries a member needs, and its names into `h`.
    fn write_names(
        &mut self,
        h: &mut Header,
        path: &[u8],
        link: Option<&[u8]>,
    ) -> Result<(), ArchiveError> {
        if let Some(link) = link {
            let field = &mut h.as_old_mut().linkname;
            if link.len() <= field.len() {
                field[..link.len()].copy_from_slice(link);
            } else {
                self.long_name(b'K', link)?;
                field.copy_from_slice(&link[..100]);
            }
        }
        let field = &mut h.as_old_mut().name;
        if path.len() <= field.len() {
            field[..path.len()].copy_from_slice(path);
        } else {
            self.long_name(b'L', path)?;
            field.copy_from_slice(&path[..100]);
        }
        h.set_cksum();
        Ok(())
    }

    /// A GNU `././@LongLink` entry (`L` a path, `K` a link target), as GNU tar writes it.
    fn long_name(&mut self, kind: u8, name: &[u8]) -> Result<(), ArchiveError> {
        let mut h = Header::new_gnu();
        let label = b"././@LongLink";
        h.as_old_mut().name[..label.len()].copy_from_slice(label);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(name.len() as u64 + 1);
        h.set_entry_type(EntryType::new(kind));
        h.set_cksum();
        self.emit(&h)?;
        let out = self.tar.get_mut();
        out.write_all(name).map_err(ArchiveError::Output)?;
        out.write_all(&[0]).map_err(ArchiveError::Output)?;
        pad(out, name.len() as u64 + 1).map_err(ArchiveError::Output)
    }

    fn pax(&mut self, xattrs: &[(String, Vec<u8>)]) -> Result<(), ArchiveError> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, Vec<u8>)> = xattrs.iter().map(|(k, v)| pax_xattr(k, v)).collect();
        self.tar
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(ArchiveError::Output)
    }

    fn entry_dir(
        &mut self,
        path: &[u8],
        st: &Stat,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ArchiveError> {
        self.count()?;
        self.pax(xattrs)?;
        let mut h = header(EntryType::Directory, st, 0);
        self.write_names(&mut h, path, None)?;
        self.emit(&h)?;
        self.members.push(Member {
            path: path_text(path),
            kind: MemberKind::Dir,
            size: 0,
            sha256: None,
            link: None,
        });
        Ok(())
    }

    fn entry_symlink(&mut self, path: &[u8], st: &Stat, target: &[u8]) -> Result<(), ArchiveError> {
        self.count()?;
        let mut h = header(EntryType::Symlink, st, 0);
        self.write_names(&mut h, path, Some(target))?;
        self.emit(&h)?;
        self.members.push(Member {
            path: path_text(path),
            kind: MemberKind::Symlink,
            size: 0,
            sha256: None,
            link: Some(path_text(target)),
        });
        Ok(())
    }

    fn file(&mut self, dir: &OwnedFd, name: &[u8], path: &[u8]) -> Result<(), ArchiveError> {
        // O_NONBLOCK: should a fifo have been swapped in, opening it does not hang.
        let fd = match rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => {
                self.warn(path, "changed while the volume was read: skipped");
                return Ok(());
            }
            Err(e) => return Err(src_err(path)(e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| src_err(path)(e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            self.warn(path, "changed while the volume was read: skipped");
            return Ok(());
        }
        self.count()?;
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = header(EntryType::Link, &st, 0);
                self.write_names(&mut h, path, Some(&first))?;
                self.emit(&h)?;
                self.members.push(Member {
                    path: path_text(path),
                    kind: MemberKind::Hardlink,
                    size: 0,
                    sha256: None,
                    link: Some(path_text(&first)),
                });
                return Ok(());
            }
            self.links.insert(key, path.to_vec());
        }
        let xattrs = self.xattrs(&fd, path);
        self.pax(&xattrs)?;

        let size = st.st_size.max(0) as u64;
        let regions = sparse_regions(&fd, &st).map_err(|e| src_err(path)(e))?;
        let file = File::from(fd);
        let mut hasher = Sha256::new();
        let mut short = false;
        match regions {
            None => {
                let mut h = header(EntryType::Regular, &st, size);
                self.write_names(&mut h, path, None)?;
                self.emit(&h)?;
                short |= self.copy_region(&file, path, 0, size, &mut hasher)?;
                pad(self.tar.get_mut(), size).map_err(ArchiveError::Output)?;
            }
            Some(regions) => {
                let stored: u64 = regions.iter().map(|r| r.1).sum();
                let mut h = header(EntryType::GNUSparse, &st, stored);
                self.sparse_map(&mut h, size, &regions)?;
                self.write_names(&mut h, path, None)?;
                self.emit(&h)?;
                self.sparse_ext_headers(size, &regions)?;
                let mut at = 0u64;
                for &(offset, len) in &regions {
                    hash_zeros(&mut hasher, offset - at);
                    short |= self.copy_region(&file, path, offset, len, &mut hasher)?;
                    at = offset + len;
                }
                hash_zeros(&mut hasher, size - at);
                pad(self.tar.get_mut(), stored).map_err(ArchiveError::Output)?;
            }
        }
        let after = rustix::fs::fstat(&file).map_err(|e| src_err(path)(e.into()))?;
        if short || after.st_size != st.st_size || after.st_mtime != st.st_mtime {
            self.warn(
                path,
                "changed while it was read: archived as read (stop writers during backups)",
            );
        }
        self.content_size += size;
        self.members.push(Member {
            path: path_text(path),
            kind: MemberKind::File,
            size,
            sha256: Some(hex::encode(hasher.finalize())),
            link: None,
        });
        Ok(())
    }

    /// Copies `len` bytes of `file` from `offset` into the archive, hashing them. A file that
    /// became shorter is padded with zeros (the entry's length is fixed): returns true then.
    fn copy_region(
        &mut self,
        file: &File,
        path: &[u8],
        mut offset: u64,
        len: u64,
        hasher: &mut Sha256,
    ) -> Result<bool, ArchiveError> {
        let mut left = len;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match file.read_at(&mut self.buf[..want], offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(src_err(path)(e)),
            };
            hasher.update(&self.buf[..n]);
            self.tar
                .get_mut()
                .write_all(&self.buf[..n])
                .map_err(ArchiveError::Output)?;
            offset += n as u64;
            left -= n as u64;
        }
        if left > 0 {
            hash_zeros(hasher, left);
            let out = self.tar.get_mut();
            while left > 0 {
                let n = left.min(ZEROS.len() as u64) as usize;
                out.write_all(&ZEROS[..n]).map_err(ArchiveError::Output)?;
                left -= n as u64;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// The first regions go in the header (old GNU sparse format); the last entry is
    /// `(size, 0)` so the map ends at the file's length, as GNU tar writes it.
    fn sparse_map(
        &mut self,
        h: &mut Header,
        size: u64,
        regions: &[(u64, u64)],
    ) -> Result<(), ArchiveError> {
        let map = sparse_map_entries(size, regions);
        let Some(gnu) = h.as_gnu_mut() else {
            return Err(ArchiveError::Output(io::Error::other("not a GNU header")));
        };
        gnu.set_real_size(size);
        for (slot, &(off, len)) in gnu.sparse.iter_mut().zip(&map) {
            slot.set_offset(off);
            slot.set_length(len);
        }
        gnu.set_is_extended(map.len() > gnu.sparse.len());
        Ok(())
    }

    fn sparse_ext_headers(
        &mut self,
        size: u64,
        regions: &[(u64, u64)],
    ) -> Result<(), ArchiveError> {
        let map = sparse_map_entries(size, regions);
        // The header held the first 4 (GNU_SPARSE_HEADERS_COUNT); each extension holds 21.
        let rest: Vec<(u64, u64)> = map.into_iter().skip(4).collect();
        let mut chunks = rest.chunks(21).peekable();
        while let Some(chunk) = chunks.next() {
            let mut ext = tar::GnuExtSparseHeader::new();
            for (slot, &(off, len)) in ext.sparse.iter_mut().zip(chunk) {
                slot.set_offset(off);
                slot.set_length(len);
            }
            ext.set_is_extended(chunks.peek().is_some());
            let bytes = ext.as_bytes().to_vec();
            self.tar
                .get_mut()
                .write_all(&bytes)
                .map_err(ArchiveError::Output)?;
        }
        Ok(())
    }

    /// The extended attributes of an open file or directory (none if the file system has
    /// none); one that cannot be read is a warning.
    fn xattrs(&mut self, fd: &OwnedFd, path: &[u8]) -> Xattrs {
        match read_xattrs(fd) {
            Ok((list, skipped)) => {
                for name in skipped {
                    self.warn(
                        path,
                        &format!("has an extended attribute {name:?} that is not UTF-8: not kept"),
                    );
                }
                list
            }
            Err(e) => {
                self.warn(path, &format!("extended attributes not readable: {e}"));
                Vec::new()
            }
        }
    }
}

/// The PAX record of one extended attribute: `SCHILY.xattr.<name>` with the raw value, or
/// the libarchive form when the value holds a newline or the name an `=` or `%`.
fn pax_xattr(name: &str, value: &[u8]) -> (String, Vec<u8>) {
    use base64::Engine as _;
    if !value.contains(&b'\n') && !name.contains(['=', '%']) {
        return (format!("{PAX_XATTR}{name}"), value.to_vec());
    }
    let mut key = String::from(PAX_XATTR_B64);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            key.push(b as char);
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
    let value = base64::engine::general_purpose::STANDARD.encode(value);
    (key, value.into_bytes())
}

/// The map as stored: regions, then `(size, 0)` if the last region ends before `size`.
fn sparse_map_entries(size: u64, regions: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut map = regions.to_vec();
    let end = regions.last().map_or(0, |r| r.0 + r.1);
    if end < size {
        map.push((size, 0));
    }
    map
}

fn header(kind: EntryType, st: &Stat, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(size);
    h
}

fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let rem = (512 - len % 512) % 512;
    out.write_all(&ZEROS[..rem as usize])
}

fn hash_zeros(hasher: &mut Sha256, mut n: u64) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The data regions `(offset, length)` of a sparse file, or `None` for a file to store whole
/// (not sparse, or a file system without `SEEK_DATA`). Regions are widened to 512-byte
/// boundaries, as the tar format wants them.
fn sparse_regions(fd: &OwnedFd, st: &Stat) -> io::Result<Option<Vec<(u64, u64)>>> {
    let size = st.st_size.max(0) as u64;
    if size == 0 || (st.st_blocks as u64).saturating_mul(512) >= size {
        return Ok(None);
    }
    let mut raw = Vec::new();
    let mut at = 0u64;
    while at < size {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(at)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOTSUP) if at == 0 => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(fd, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(e) => return Err(e.into()),
        };
        if hole <= data {
            return Err(io::Error::other("SEEK_HOLE did not advance"));
        }
        raw.push((data, hole - data));
        at = hole;
    }
    let mut regions: Vec<(u64, u64)> = Vec::with_capacity(raw.len());
    for (off, len) in raw {
        let start = off / 512 * 512;
        let end = (off + len).div_ceil(512).saturating_mul(512).min(size);
        match regions.last_mut() {
            Some(last) if last.0 + last.1 >= start => {
                last.1 = end.max(last.0 + last.1) - last.0;
            }
            _ => regions.push((start, end - start)),
        }
    }
    if regions.len() == 1 && regions[0] == (0, size) {
        return Ok(None);
    }
    Ok(Some(regions))
}

/// Extended attributes: (name, value), sorted by name.
type Xattrs = Vec<(String, Vec<u8>)>;

/// Reads the extended attributes of an open file: (name, value) pairs, and the names skipped
/// for not being UTF-8. A file system without them has none.
fn read_xattrs(fd: &impl AsFd) -> io::Result<(Xattrs, Vec<String>)> {
    let len = match rustix::fs::flistxattr_query(fd) {
        Ok(0) => return Ok((Vec::new(), Vec::new())),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::NODATA) => {
            return Ok((Vec::new(), Vec::new()));
        }
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; len];
    let n = rustix::fs::flistxattr(fd, &mut names[..])?;
    names.truncate(n);
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for raw in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            skipped.push(path_text(raw));
            continue;
        };
        if SKIPPED_XATTRS.contains(&name) {
            continue;
        }
        let cname = match CStr::from_bytes_with_nul(&[raw, b"\0"].concat()) {
            Ok(c) => c.to_owned(),
            Err(_) => continue,
        };
        let vlen = match rustix::fs::fgetxattr_query(fd, &cname) {
            Ok(v) => v,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; vlen];
        let got = if vlen == 0 {
            0
        } else {
            match rustix::fs::fgetxattr(fd, &cname, &mut value[..]) {
                Ok(v) => v,
                Err(rustix::io::Errno::NODATA) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        value.truncate(got);
        out.push((name.to_owned(), value));
    }
    out.sort();
    Ok((out, skipped))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn volume_names_must_be_one_plain_component() {
        for ok in ["media", "db-data", "a.b_c"] {
            assert!(check_volume_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "/x"] {
            assert!(check_volume_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sparse_map_ends_at_the_file_length() {
        assert_eq!(
            sparse_map_entries(8192, &[(0, 512)]),
            vec![(0, 512), (8192, 0)]
        );
        assert_eq!(sparse_map_entries(1024, &[(512, 512)]), vec![(512, 512)]);
        assert_eq!(sparse_map_entries(4096, &[]), vec![(4096, 0)]);
    }

    #[test]
    fn sparse_regions_of_a_file_with_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_at(b"hello", 1 << 20).unwrap();
        f.write_at(b"end", (64 << 20) - 3).unwrap();
        f.sync_all().unwrap();
        let fd = OwnedFd::from(File::open(&p).unwrap());
        let st = rustix::fs::fstat(&fd).unwrap();
        let regions = sparse_regions(&fd, &st).unwrap().unwrap();
        assert!(regions.len() >= 2, "{regions:?}");
        assert!(regions[0].0 <= 1 << 20 && regions[0].0 + regions[0].1 >= (1 << 20) + 5);
        let last = regions.last().unwrap();
        assert_eq!(last.0 + last.1, 64 << 20);
        assert!(regions.iter().map(|r| r.1).sum::<u64>() < 1 << 20);
    }

    #[test]
    fn a_stream_is_one_dump_member() {
        let data = b"pg_dump output".repeat(1000);
        let mut out = Vec::new();
        let w = write_stream(&data[..], &mut out, &ArchiveOptions::default()).unwrap();
        assert_eq!(w.manifest_members.len(), 1);
        assert_eq!(w.manifest_members[0].path, "dump");
        assert_eq!(w.content_size, data.len() as u64);
        assert_eq!(
            w.manifest_members[0].sha256.as_deref(),
            Some(hex::encode(Sha256::digest(&data)).as_str())
        );
        assert_eq!(w.stored_size, out.len() as u64);
        assert_eq!(w.stored_sha256, hex::encode(Sha256::digest(&out)));
        assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
    }

    #[test]
    fn links_are_archived_as_links_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host file").unwrap();
        let vol = tempfile::tempdir().unwrap();
        symlink(outside.path(), vol.path().join("out")).unwrap();
        symlink(outside.path().join("secret"), vol.path().join("s")).unwrap();
        let mut out = Vec::new();
        let w = write_volumes(
            &[("v".into(), vol.path().to_path_buf())],
            &mut out,
            &ArchiveOptions::default(),
        )
        .unwrap();
        let kinds: Vec<_> = w
            .manifest_members
            .iter()
            .map(|m| (m.path.as_str(), m.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("v", MemberKind::Dir),
                ("v/out", MemberKind::Symlink),
                ("v/s", MemberKind::Symlink)
            ]
        );
        let plain = zstd::decode_all(&out[..]).unwrap();
        assert!(!plain.windows(9).any(|w| w == b"host file"));
    }

    #[test]
    fn too_many_members_is_refused() {
        let vol = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(vol.path().join(format!("f{i}")), b"x").unwrap();
        }
        let opts = ArchiveOptions {
            max_members: 3,
            ..ArchiveOptions::default()
        };
        let e = write_volumes(&[("v".into(), vol.path().into())], io::sink(), &opts).unwrap_err();
        assert!(matches!(e, ArchiveError::TooManyMembers(3)), "{e}");
    }
}
