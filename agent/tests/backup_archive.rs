//! The backup archive library end to end: a volume tree is archived, wiped and restored
//! byte- and metadata-identical (modes, owners, mtimes, links, hardlinks, a sparse 1 GiB
//! file, xattrs, 10,000 small files), encrypted or not; hostile archives are refused without
//! writing outside the target; corrupted or truncated archives fail instead of restoring
//! short; dumps round-trip with their digest. Where the `age`, `zstd` and GNU `tar` tools are
//! installed, the archive is also read back with them (as an operator would).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use noco_agent::backup::archive::{self, ArchiveOptions, Written};
use noco_agent::backup::crypt::{self, Identities};
use noco_agent::backup::extract::{self, ExtractError, ExtractLimits};
use noco_agent::backup::manifest::{self, BackupKind, FORMAT, Manifest, MemberKind};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A deterministic pseudo-random byte source (xorshift64*).
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

fn set_mtime(path: &Path, secs: i64) {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Sets a user xattr; false if the file system does not support them.
fn set_user_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    match rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()) {
        Ok(()) => true,
        Err(rustix::io::Errno::NOTSUP) => false,
        Err(e) => panic!("setxattr {}: {e}", path.display()),
    }
}

/// What the round trip must keep, per path (relative to the volume root).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snap {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    sha256: Option<String>,
    link: Option<PathBuf>,
    /// The first path (in walk order) of the inode, for files with several links.
    same_as: Option<PathBuf>,
    /// A sparse file (fewer blocks than its length): its content is compared region by
    /// region instead of hashed whole.
    sparse: bool,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn user_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Vec::new(),
        Err(e) => panic!("listxattr {}: {e}", path.display()),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        if !name.starts_with("user.") {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let k = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap();
        value.truncate(k);
        out.push((name, value));
    }
    out.sort();
    out
}

fn sha_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Snap> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
            "fifo"
        } else {
            "other"
        };
        let same_as = if ft.is_file() && md.nlink() > 1 {
            Some(
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            rel.clone(),
            Snap {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                size: if ft.is_file() { md.len() } else { 0 },
                sha256: (ft.is_file() && !is_sparse(&md)).then(|| sha_file(&full)),
                sparse: ft.is_file() && is_sparse(&md),
                link: ft.is_symlink().then(|| fs::read_link(&full).unwrap()),
                same_as,
                xattrs: if ft.is_symlink() {
                    Vec::new()
                } else {
                    user_xattrs(&full)
                },
            },
        );
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        }
    }
    out
}

fn is_sparse(md: &fs::Metadata) -> bool {
    md.blocks() * 512 < md.len()
}

/// The data regions of a file (`SEEK_DATA`/`SEEK_HOLE`): outside them it reads as zeros.
fn data_regions(f: &File, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let data = match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(at)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        let hole = rustix::fs::seek(f, rustix::fs::SeekFrom::Hole(data)).unwrap();
        out.push((data, hole));
        at = hole;
    }
    out
}

/// Compares two sparse files byte for byte without reading their holes: every data region of
/// either is read from both (a hole reads as zeros).
fn assert_same_sparse_content(a: &Path, b: &Path) {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let len = fa.metadata().unwrap().len();
    assert_eq!(len, fb.metadata().unwrap().len());
    let mut regions = data_regions(&fa, len);
    regions.extend(data_regions(&fb, len));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut read = 0u64;
    for (start, end) in regions {
        let mut at = start;
        while at < end {
            let n = (end - at).min(1 << 20) as usize;
            fa.read_exact_at(&mut ba[..n], at).unwrap();
            fb.read_exact_at(&mut bb[..n], at).unwrap();
            assert!(
                ba[..n] == bb[..n],
                "{} differs near offset {at}",
                b.display()
            );
            at += n as u64;
            read += n as u64;
        }
    }
    assert!(read < len / 4, "the sparse file was mostly data");
}

fn assert_same_tree(original: &Path, restored: &Path) {
    let a = snapshot(original);
    let b = snapshot(restored);
    let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (path, sa) in &a {
        assert_eq!(
            sa,
            &b[path],
            "{} differs after the round trip",
            path.display()
        );
        if sa.sparse {
            assert_same_sparse_content(&original.join(path), &restored.join(path));
        }
    }
}

struct Tree {
    _tmp: tempfile::TempDir,
    media: PathBuf,
    config: PathBuf,
    xattrs: bool,
}

/// The volume tree of the round trip. `many`: how many small files.
fn build_tree(many: usize, sparse_size: u64) -> Tree {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("src-media");
    let config = tmp.path().join("src-config");
    fs::create_dir(&media).unwrap();
    fs::create_dir(&config).unwrap();
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);

    fs::write(media.join("private.key"), noise.bytes(3000)).unwrap();
    chmod(&media.join("private.key"), 0o600);
    fs::write(media.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    chmod(&media.join("run.sh"), 0o755);
    fs::write(media.join("shared.txt"), b"group readable\n".repeat(100)).unwrap();
    chmod(&media.join("shared.txt"), 0o640);
    fs::write(media.join("empty-file"), b"").unwrap();

    let team = media.join("team");
    fs::create_dir(&team).unwrap();
    fs::write(team.join("notes.md"), b"# notes\n").unwrap();
    fs::create_dir(media.join("empty-dir")).unwrap();
    fs::create_dir(media.join("locked")).unwrap();
    fs::write(media.join("locked/inside"), b"x").unwrap();

    // Hardlinks: three names of one file, across directories.
    fs::write(media.join("original.bin"), noise.bytes(70_000)).unwrap();
    fs::hard_link(media.join("original.bin"), team.join("link-1.bin")).unwrap();
    fs::hard_link(media.join("original.bin"), media.join("link-2.bin")).unwrap();

    // Symlinks, as links only: relative, absolute-looking, dangling, to a directory.
    symlink("team/notes.md", media.join("rel-link")).unwrap();
    symlink("/etc/passwd", media.join("abs-link")).unwrap();
    symlink("../nowhere/at/all", media.join("dangling")).unwrap();
    symlink("team", media.join("dir-link")).unwrap();

    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        media.join("a-fifo"),
        rustix::fs::Mode::from_raw_mode(0o620),
    )
    .unwrap();

    // A sparse file: a few data regions in a large hole, ending in a hole.
    let sparse = File::create(media.join("disk.img")).unwrap();
    sparse.set_len(sparse_size).unwrap();
    sparse.write_all_at(&noise.bytes(MIB as usize), 0).unwrap();
    sparse
        .write_all_at(&noise.bytes(2 * MIB as usize), sparse_size / 3)
        .unwrap();
    sparse
        .write_all_at(b"tail data", sparse_size / 2 + 12_345)
        .unwrap();
    drop(sparse);
    // Another with many regions (more than the tar header's map holds), ending in data at a
    // length that is not a multiple of 512.
    let many_holes = File::create(media.join("many-holes.img")).unwrap();
    let len = sparse_size / 16 + 777;
    many_holes.set_len(len).unwrap();
    let step = (sparse_size / 16 / 40) / 4096 * 4096;
    for i in 0..40 {
        many_holes
            .write_all_at(&noise.bytes(4096), i * step + 4096)
            .unwrap();
    }
    many_holes.write_all_at(b"end", len - 3).unwrap();
    drop(many_holes);

    // Many small files, in subdirectories of 500.
    let many_dir = media.join("many");
    fs::create_dir(&many_dir).unwrap();
    for i in 0..many {
        let sub = many_dir.join(format!("d{:03}", i / 500));
        if i % 500 == 0 {
            fs::create_dir(&sub).unwrap();
        }
        let mut f = File::create(sub.join(format!("f{i:05}.txt"))).unwrap();
        writeln!(f, "small file {i} {}", "x".repeat(i % 300)).unwrap();
    }

    fs::write(config.join("app.toml"), b"[app]\nport = 8080\n").unwrap();
    fs::create_dir(config.join("conf.d")).unwrap();
    fs::write(
        config.join("conf.d/long-name-".to_owned() + &"n".repeat(150)),
        b"long",
    )
    .unwrap();

    // A setgid directory, owners, xattrs.
    let shared = media.join("shared-dir");
    fs::create_dir(&shared).unwrap();
    fs::write(shared.join("doc"), b"doc").unwrap();
    if is_root() {
        std::os::unix::fs::chown(&shared, Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(media.join("private.key"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(shared.join("doc"), Some(999), Some(5678)).unwrap();
        lchown(media.join("rel-link"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(&config, Some(70), Some(70)).unwrap();
    } else {
        println!("not root: owners are not changed in the tree");
    }
    chmod(&shared, 0o2775);
    let xattrs = set_user_xattr(&media.join("shared.txt"), "user.origin", b"camera-7")
        && set_user_xattr(&shared, "user.project", b"\x00binary\xffvalue")
        && set_user_xattr(&media.join("private.key"), "user.empty", b"");
    if !xattrs {
        println!("the file system does not support user xattrs (ENOTSUP): not checked");
    }

    // Mtimes last, directories after their contents.
    let mut t = 1_600_000_000i64;
    for p in [
        media.join("private.key"),
        media.join("run.sh"),
        media.join("shared.txt"),
        media.join("rel-link"),
        media.join("abs-link"),
        media.join("a-fifo"),
        media.join("disk.img"),
        media.join("many-holes.img"),
        media.join("original.bin"),
        team.join("notes.md"),
        shared.join("doc"),
    ] {
        t += 1000;
        set_mtime(&p, t);
    }
    for d in [
        &team,
        &shared,
        &many_dir,
        &media.join("empty-dir"),
        &config,
        &media,
    ] {
        t += 1000;
        set_mtime(d, t);
    }
    chmod(&media.join("locked"), 0o500);
    chmod(&config, 0o750);
    Tree {
        _tmp: tmp,
        media,
        config,
        xattrs,
    }
}

fn volumes(t: &Tree) -> Vec<(String, PathBuf)> {
    vec![
        ("media".to_owned(), t.media.clone()),
        ("config".to_owned(), t.config.clone()),
    ]
}

fn fresh_targets(dir: &Path, names: &[&str]) -> BTreeMap<String, PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = dir.join(format!("restore-{n}"));
            fs::create_dir_all(&p).unwrap();
            (n.to_string(), p)
        })
        .collect()
}

fn write_to_file(t: &Tree, path: &Path, opts: &ArchiveOptions) -> Written {
    let out = File::create(path).unwrap();
    archive::write_volumes(&volumes(t), std::io::BufWriter::new(out), opts).unwrap()
}

fn manifest_for(written: &Written, volumes: &[&str], recipients: Vec<String>) -> Manifest {
    Manifest {
        format: FORMAT,
        stack: "web".into(),
        name: "files".into(),
        revision: "rev1".into(),
        host: "h1".into(),
        kind: BackupKind::Volumes,
        service: None,
        command: None,
        volumes: volumes.iter().map(|s| s.to_string()).collect(),
        created: "2026-01-02T03:04:05Z".into(),
        members: written.manifest_members.clone(),
        content_size: written.content_size,
        stored_size: written.stored_size,
        stored_sha256: written.stored_sha256.clone(),
        recipients,
    }
}

fn restore(
    stored: &Path,
    identity: Option<&Identities>,
    targets: &BTreeMap<String, PathBuf>,
) -> Result<extract::Extracted, ExtractError> {
    let plain = extract::open_stored(
        std::io::BufReader::new(File::open(stored).unwrap()),
        identity,
    )?;
    extract::extract_volumes(plain, targets, &ExtractLimits::default())
}

fn round_trip(encrypted: bool) {
    let tree = build_tree(10_000, GIB);
    let work = tempfile::tempdir().unwrap();
    let stored = work.path().join("backup.archive");
    let (secret, recipient) = crypt::generate_key_pair();
    let opts = ArchiveOptions {
        recipients: if encrypted {
            vec![recipient.clone()]
        } else {
            vec![]
        },
        ..ArchiveOptions::default()
    };
    let written = write_to_file(&tree, &stored, &opts);
    assert!(
        written.warnings.is_empty(),
        "warnings: {:?}",
        written.warnings
    );
    assert_eq!(written.stored_size, fs::metadata(&stored).unwrap().len());
    assert_eq!(written.stored_sha256, sha_file(&stored));
    // The sparse gigabyte is stored as its few MiB of data.
    assert!(
        written.stored_size < 40 * MIB,
        "stored {} bytes",
        written.stored_size
    );
    let head = fs::read(&stored).unwrap();
    assert_eq!(head.starts_with(crypt::AGE_MAGIC), encrypted);

    let kinds = |k: MemberKind| {
        written
            .manifest_members
            .iter()
            .filter(|m| m.kind == k)
            .count()
    };
    assert_eq!(kinds(MemberKind::Hardlink), 2);
    assert_eq!(kinds(MemberKind::Symlink), 4);
    assert_eq!(kinds(MemberKind::Fifo), 1);
    assert!(kinds(MemberKind::File) > 10_000);
    let disk = written
        .manifest_members
        .iter()
        .find(|m| m.path == "media/disk.img")
        .unwrap();
    assert_eq!(disk.size, GIB);
    assert_eq!(
        disk.sha256.as_deref(),
        Some(sha_file(&tree.media.join("disk.img")).as_str())
    );
    let m = manifest_for(&written, &["media", "config"], opts.recipients.clone());
    m.check().unwrap();

    let ids = Identities::parse(&secret).unwrap();
    let identity = encrypted.then_some(&ids);
    if !encrypted {
        // (Verifying encrypted archives is covered with small ones: this one costs a pass
        // of hashing the gigabyte.)
        extract::verify_volumes(File::open(&stored).unwrap(), identity, &m).unwrap();
    }

    // Wipe: the restore goes to fresh directories, compared with the original.
    let targets = fresh_targets(work.path(), &["media", "config"]);
    let got = restore(&stored, identity, &targets).unwrap();
    manifest::compare(&m.members, &got.members).unwrap();
    assert_eq!(got.content_size, written.content_size);
    if is_root() {
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    }
    let sparse_restored = fs::metadata(targets["media"].join("disk.img")).unwrap();
    assert_eq!(sparse_restored.len(), GIB);
    assert!(
        sparse_restored.blocks() * 512 < 16 * MIB,
        "the restored sparse file uses {} bytes",
        sparse_restored.blocks() * 512
    );
    if !tree.xattrs {
        println!("xattrs not compared: the file system refused them");
    }
    assert_same_tree(&tree.media, &targets["media"]);
    assert_same_tree(&tree.config, &targets["config"]);
    if tree.xattrs {
        assert_eq!(
            user_xattrs(&targets["media"].join("shared-dir")),
            vec![("user.project".to_owned(), b"\x00binary\xffvalue".to_vec())]
        );
    }
    let team = fs::metadata(targets["media"].join("team/link-1.bin")).unwrap();
    let orig = fs::metadata(targets["media"].join("original.bin")).unwrap();
    assert_eq!((team.ino(), team.nlink()), (orig.ino(), 3));

    if encrypted {
        // Without the identity, or with another one: a clear error, nothing restored.
        let t2 = fresh_targets(&work.path().join("again"), &["media", "config"]);
        let e = restore(&stored, None, &t2).err().unwrap();
        assert!(matches!(e, ExtractError::NeedIdentity), "{e}");
        assert!(e.to_string().contains("identity"), "{e}");
        let (other, _) = crypt::generate_key_pair();
        let other = Identities::parse(&other).unwrap();
        let e = restore(&stored, Some(&other), &t2).err().unwrap();
        assert!(
            e.to_string()
                .contains("none of the identities given can decrypt"),
            "{e}"
        );
        assert_eq!(fs::read_dir(&t2["media"]).unwrap().count(), 0);
        let e =
            extract::verify_volumes(File::open(&stored).unwrap(), Some(&other), &m).unwrap_err();
        assert!(e.contains("none of the identities"), "{e}");
    }
}

#[test]
fn volumes_round_trip_byte_and_metadata_identical() {
    round_trip(false);
}

#[test]
fn volumes_round_trip_encrypted_with_age() {
    round_trip(true);
}

/// Binary values (a newline in them: ACLs, file capabilities can hold one) and odd names
/// round-trip; the PAX reader of the `tar` crate splits records at newlines, so those go in
/// libarchive's base64 form.
#[test]
fn xattr_values_with_newlines_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let f = vol.join("file");
    fs::write(&f, b"x").unwrap();
    let values: Vec<(&str, &[u8])> = vec![
        ("user.text", b"plain"),
        ("user.binary", b"line1\nline2\x00\xff\n"),
        ("user.with=equals%", b"v"),
        ("user.empty", b""),
    ];
    for (name, value) in &values {
        if !set_user_xattr(&f, name, value) {
            println!("the file system does not support user xattrs (ENOTSUP): skipped");
            return;
        }
    }
    let mut stored = Vec::new();
    let w = archive::write_volumes(
        &[("v".into(), vol.clone())],
        &mut stored,
        &ArchiveOptions::default(),
    )
    .unwrap();
    assert!(w.warnings.is_empty(), "{:?}", w.warnings);
    let targets = fresh_targets(tmp.path(), &["v"]);
    let plain = extract::open_stored(&stored[..], None).unwrap();
    let got = extract::extract_volumes(plain, &targets, &ExtractLimits::default()).unwrap();
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    let mut want: Vec<(String, Vec<u8>)> = values
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    want.sort();
    assert_eq!(user_xattrs(&targets["v"].join("file")), want);
}

#[test]
fn restore_into_a_directory_that_is_not_empty_is_refused() {
    let tree = build_tree(3, 8 * MIB);
    let work = tempfile::tempdir().unwrap();
    let stored = work.path().join("a");
    write_to_file(&tree, &stored, &ArchiveOptions::default());
    let targets = fresh_targets(work.path(), &["media", "config"]);
    fs::write(targets["config"].join("old"), b"x").unwrap();
    let e = restore(&stored, None, &targets).err().unwrap();
    assert!(
        e.to_string().contains("\"config\"") && e.to_string().contains("not empty"),
        "{e}"
    );
}

// ---- Hostile archives ------------------------------------------------------------------

/// A tar written entry by entry with raw headers (names as given, no checks).
struct Hostile(Vec<u8>);

impl Hostile {
    fn new() -> Self {
        Hostile(Vec::new())
    }

    fn entry(mut self, kind: EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Self {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if kind == EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0
            .resize(self.0.len() + (512 - data.len() % 512) % 512, 0);
        self
    }

    fn dir(self, name: &str) -> Self {
        self.entry(EntryType::Directory, name.as_bytes(), b"", b"")
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(EntryType::Regular, name.as_bytes(), b"", data)
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(EntryType::Symlink, name.as_bytes(), target.as_bytes(), b"")
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(EntryType::Link, name.as_bytes(), target.as_bytes(), b"")
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

struct Arena {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    sentinel: PathBuf,
    targets: BTreeMap<String, PathBuf>,
}

/// A target for volume `media` in `root/restore/media`, and an empty sentinel directory
/// beside it that nothing may write into.
fn arena() -> Arena {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let sentinel = root.join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    let media = root.join("restore/media");
    fs::create_dir_all(&media).unwrap();
    Arena {
        _tmp: tmp,
        root,
        sentinel,
        targets: [("media".to_owned(), media)].into(),
    }
}

fn refuse(a: &Arena, tar: &[u8], limits: &ExtractLimits, member: &str, reason: &str) {
    let e = extract::extract_volumes(tar, &a.targets, limits).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("{member:?}")) && text.contains(reason),
        "expected member {member:?} refused for {reason:?}, got: {text}"
    );
    assert_eq!(
        fs::read_dir(&a.sentinel).unwrap().count(),
        0,
        "something was written into the sentinel directory"
    );
    // Nothing lands beside the target either.
    let beside: Vec<_> = fs::read_dir(a.root.join("restore"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec!["media"]);
}

#[test]
fn a_path_escaping_with_dotdot_is_refused() {
    let a = arena();
    let tar = Hostile::new().file("media/../escape", b"evil").finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/../escape",
        "`..`",
    );
    assert!(!a.root.join("restore/escape").exists());
    let tar = Hostile::new().file("../escape", b"evil").finish();
    refuse(&a, &tar, &ExtractLimits::default(), "../escape", "`..`");
}

#[test]
fn an_absolute_path_is_refused() {
    let a = arena();
    let target = a.sentinel.join("abs");
    let tar = Hostile::new()
        .file(target.to_str().unwrap(), b"evil")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        target.to_str().unwrap(),
        "absolute path",
    );
}

#[test]
fn a_file_through_a_symlink_to_outside_is_refused() {
    let a = arena();
    let tar = Hostile::new()
        .dir("media")
        .symlink("media/link", a.sentinel.to_str().unwrap())
        .file("media/link/evil", b"evil")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/link/evil",
        "symlink",
    );
    // The link itself was made, as a link.
    assert!(
        fs::symlink_metadata(a.targets["media"].join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A directory through it, and a file replacing the link: refused too.
    let a = arena();
    let tar = Hostile::new()
        .symlink("media/link", a.sentinel.to_str().unwrap())
        .dir("media/link/sub")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/link/sub",
        "symlink",
    );
    let a = arena();
    let tar = Hostile::new()
        .symlink("media/link", a.sentinel.join("f").to_str().unwrap())
        .file("media/link", b"evil")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/link",
        "exists already",
    );
}

#[test]
fn a_file_through_a_symlink_to_dotdot_is_refused() {
    let a = arena();
    let tar = Hostile::new()
        .symlink("media/up", "..")
        .file("media/up/escape", b"evil")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/up/escape",
        "symlink",
    );
    assert!(!a.root.join("restore/escape").exists());

    let a = arena();
    let tar = Hostile::new()
        .symlink("media/s", "../../sentinel")
        .file("media/s/x", b"evil")
        .finish();
    refuse(&a, &tar, &ExtractLimits::default(), "media/s/x", "symlink");
}

#[test]
fn hardlinks_outside_or_to_unknown_files_are_refused() {
    let a = arena();
    let tar = Hostile::new().hardlink("media/h", "/etc/passwd").finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/h",
        "absolute path",
    );
    let tar = Hostile::new().hardlink("media/h", "../../x").finish();
    refuse(&a, &tar, &ExtractLimits::default(), "media/h", "`..`");
    let tar = Hostile::new()
        .file("media/real", b"data")
        .hardlink("media/h", "media/missing")
        .finish();
    let a = arena();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/h",
        "not a file extracted before it",
    );
    // Through a symlink to a file outside.
    let a = arena();
    fs::write(a.sentinel.join("../outside-file"), b"secret").unwrap();
    let tar = Hostile::new()
        .symlink("media/l", a.root.join("outside-file").to_str().unwrap())
        .hardlink("media/h", "media/l")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/h",
        "not a file extracted before it",
    );
    assert_eq!(
        fs::metadata(a.root.join("outside-file")).unwrap().nlink(),
        1
    );
}

#[test]
fn device_nodes_are_refused() {
    let a = arena();
    let tar = Hostile::new()
        .entry(EntryType::Char, b"media/null", b"", b"")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/null",
        "device nodes are never restored",
    );
    let tar = Hostile::new()
        .entry(EntryType::Block, b"media/sda", b"", b"")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/sda",
        "device nodes",
    );
}

#[test]
fn a_member_of_an_unknown_volume_is_refused() {
    let a = arena();
    let tar = Hostile::new().file("db/pg_hba.conf", b"trust").finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "db/pg_hba.conf",
        "\"db\" is not a volume of this restore",
    );
}

#[test]
fn members_past_the_limits_are_refused() {
    let a = arena();
    let tar = Hostile::new().file("media/big", &[7u8; 1000]).finish();
    let limits = ExtractLimits {
        max_total_bytes: 999,
        ..ExtractLimits::default()
    };
    refuse(&a, &tar, &limits, "media/big", "limit of 999 bytes");

    let a = arena();
    let tar = Hostile::new()
        .file("media/1", b"1")
        .file("media/2", b"2")
        .file("media/3", b"3")
        .finish();
    let limits = ExtractLimits {
        max_members: 2,
        ..ExtractLimits::default()
    };
    refuse(&a, &tar, &limits, "media/3", "more than 2 members");

    let a = arena();
    let limits = ExtractLimits {
        max_path_len: 20,
        ..ExtractLimits::default()
    };
    let tar = Hostile::new()
        .file("media/a-rather-long-name", b"1")
        .finish();
    refuse(
        &a,
        &tar,
        &limits,
        "media/a-rather-long-name",
        "longer than 20 bytes",
    );

    // A PAX header far larger than any member needs: the reader would hold it in memory.
    let a = arena();
    let mut b = tar::Builder::new(Vec::new());
    let big = vec![b'a'; 200_000];
    b.append_pax_extensions([("comment", &big[..])]).unwrap();
    let mut h = Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, "media/x", &b"1"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let limits = ExtractLimits {
        max_header_bytes: 100_000,
        ..ExtractLimits::default()
    };
    let e = extract::extract_volumes(&tar[..], &a.targets, &limits).unwrap_err();
    assert!(e.to_string().contains("bytes of headers"), "{e}");
}

#[test]
fn a_member_twice_is_refused() {
    let a = arena();
    let tar = Hostile::new()
        .file("media/a", b"first")
        .file("media/a", b"second")
        .finish();
    refuse(
        &a,
        &tar,
        &ExtractLimits::default(),
        "media/a",
        "exists already",
    );
    assert_eq!(fs::read(a.targets["media"].join("a")).unwrap(), b"first");
}

// ---- Corruption ----------------------------------------------------------------------

fn small_archive(encrypted: bool) -> (Tree, Vec<u8>, Manifest, Identities) {
    let tree = build_tree(200, 4 * MIB);
    let (secret, recipient) = crypt::generate_key_pair();
    let opts = ArchiveOptions {
        recipients: if encrypted { vec![recipient] } else { vec![] },
        ..ArchiveOptions::default()
    };
    let mut stored = Vec::new();
    let written = archive::write_volumes(&volumes(&tree), &mut stored, &opts).unwrap();
    let m = manifest_for(&written, &["media", "config"], opts.recipients.clone());
    (tree, stored, m, Identities::parse(&secret).unwrap())
}

#[test]
fn truncated_or_corrupted_archives_fail_instead_of_restoring_short() {
    for encrypted in [false, true] {
        let (_tree, stored, m, ids) = small_archive(encrypted);
        let id = encrypted.then_some(&ids);
        extract::verify_volumes(&stored[..], id, &m).unwrap();

        let len = stored.len();
        let mut damaged: Vec<(String, Vec<u8>)> = [len / 2, len - 100, len - 1]
            .iter()
            .map(|&cut| (format!("cut at {cut} of {len}"), stored[..cut].to_vec()))
            .collect();
        for at in [len / 3, len / 2, len - 20] {
            let mut v = stored.clone();
            v[at] ^= 0x40;
            damaged.push((format!("byte {at} flipped"), v));
        }
        let mut longer = stored.clone();
        longer.extend_from_slice(b"trailing garbage");
        damaged.push(("trailing garbage".into(), longer));

        for (what, bytes) in damaged {
            let work = tempfile::tempdir().unwrap();
            let targets = fresh_targets(work.path(), &["media", "config"]);
            let result = extract::open_stored(&bytes[..], id).and_then(|plain| {
                extract::extract_volumes(plain, &targets, &ExtractLimits::default())
            });
            assert!(
                result.is_err(),
                "encrypted={encrypted}, {what}: restored without an error"
            );
            let mut m2 = m.clone();
            m2.stored_sha256 = String::new();
            assert!(
                extract::verify_volumes(&bytes[..], id, &m2).is_err(),
                "encrypted={encrypted}, {what}: verified"
            );
        }
    }
}

#[test]
fn a_manifest_that_does_not_match_is_detected() {
    let (_tree, stored, m, _) = small_archive(false);
    let mut bad = m.clone();
    let i = bad
        .members
        .iter()
        .position(|x| x.path == "media/run.sh")
        .unwrap();
    bad.members[i].sha256 = Some("00".repeat(32));
    let e = extract::verify_volumes(&stored[..], None, &bad).unwrap_err();
    assert!(
        e.contains("\"media/run.sh\"") && e.contains("sha256"),
        "{e}"
    );

    let mut bad = m.clone();
    bad.members.remove(3);
    let e = extract::verify_volumes(&stored[..], None, &bad).unwrap_err();
    assert!(e.contains("member"), "{e}");

    let mut bad = m;
    bad.stored_sha256 = "ab".repeat(32);
    let e = extract::verify_volumes(&stored[..], None, &bad).unwrap_err();
    assert!(e.contains("the manifest says"), "{e}");
}

// ---- Dumps -----------------------------------------------------------------------------

#[test]
fn a_dump_round_trips_with_its_sha256() {
    let mut noise = Noise(42);
    let mut dump = noise.bytes(3 * MIB as usize);
    dump.extend_from_slice(&b"COPY public.users (id, name) FROM stdin;\n".repeat(50_000));
    let expected_sha = hex::encode(Sha256::digest(&dump));
    for encrypted in [false, true] {
        let (secret, recipient) = crypt::generate_key_pair();
        let ids = Identities::parse(&secret).unwrap();
        let opts = ArchiveOptions {
            recipients: if encrypted { vec![recipient] } else { vec![] },
            ..ArchiveOptions::default()
        };
        let mut stored = Vec::new();
        let w = archive::write_stream(&dump[..], &mut stored, &opts).unwrap();
        assert_eq!(
            w.manifest_members[0].sha256.as_deref(),
            Some(expected_sha.as_str())
        );
        assert_eq!(w.content_size, dump.len() as u64);
        assert!(w.stored_size < dump.len() as u64);

        let id = encrypted.then_some(&ids);
        let mut back = Vec::new();
        let plain = extract::open_stored(&stored[..], id).unwrap();
        let member = extract::stream_dump(plain, &mut back).unwrap();
        assert_eq!(back, dump);
        assert_eq!(member, w.manifest_members[0]);

        let m = Manifest {
            kind: BackupKind::Dump,
            service: Some("db".into()),
            command: Some(vec!["pg_dump".into(), "-Fc".into()]),
            volumes: vec![],
            ..manifest_for(&w, &[], vec![])
        };
        m.check().unwrap();
        extract::verify_dump(&stored[..], id, &m).unwrap();
        let cut = &stored[..stored.len() - 10];
        assert!(extract::verify_dump(cut, id, &m).is_err());
        let plain = extract::open_stored(cut, id).unwrap();
        assert!(extract::stream_dump(plain, std::io::sink()).is_err());
    }
}

// ---- The operator's tools --------------------------------------------------------------

fn tool(name: &str) -> bool {
    let ok = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        println!("{name} is not installed: skipped");
    }
    ok
}

/// `age -d -i key | zstd -d | tar -x` restores what we archived, as an operator would.
#[test]
fn the_age_zstd_and_tar_tools_read_our_archives() {
    if !(tool("age") && tool("zstd") && tool("tar")) {
        return;
    }
    let tree = build_tree(50, 64 * MIB);
    let work = tempfile::tempdir().unwrap();
    let (secret, recipient) = crypt::generate_key_pair();
    let key = work.path().join("key.txt");
    fs::write(&key, format!("# test key\n{secret}\n")).unwrap();
    let stored = work.path().join("a.age");
    let opts = ArchiveOptions {
        recipients: vec![recipient],
        ..ArchiveOptions::default()
    };
    write_to_file(&tree, &stored, &opts);

    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    let script = format!(
        "age -d -i '{}' '{}' | zstd -dq | tar --xattrs --xattrs-include='user.*' --numeric-owner -xpf - -C '{}'",
        key.display(),
        stored.display(),
        out.display()
    );
    let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(status.success(), "{script}");
    let restored = fs::metadata(out.join("media/disk.img")).unwrap();
    assert!(
        restored.blocks() * 512 < 16 * MIB,
        "GNU tar made the holes data"
    );
    assert_same_tree(&tree.media, &out.join("media"));
    assert_same_tree(&tree.config, &out.join("config"));
}
