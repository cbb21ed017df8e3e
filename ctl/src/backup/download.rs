//! `nococtl backup download ID -o FILE [--identity KEY]`: the plain archive of a backup, for use
//! without noco.
//!
//! The stored archive (zstd, then age-encrypted when the backup has recipients) is streamed
//! into a temporary file next to the target ([`Received`]), resuming after a cut connection,
//! and checked against the catalog: its size and sha256, and the size and sha256 the server
//! announces in the stream's first message. Only then is it read again ([`deliver`]): decrypted
//! when it starts with the age header (with the identities of `--identity`), zstd-decompressed
//! into a second temporary file next to the target, synced, and renamed to the target. A
//! failure at any point (a mismatch, a wrong key, Ctrl-C) leaves no file under the target's
//! name. `-o -` writes the plain archive to stdout once the download is checked.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use noco_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::client;
use crate::error::{CtlError, refused};
use crate::output::{self, errln, human_bytes, outln};
use crate::view::backup::BackupView;

/// How an age file begins (its version line).
pub const AGE_HEADER: &[u8] = b"age-encryption.org/v1";
/// How many times a cut download is resumed in a row before giving up.
const RESUMES: u32 = 5;
/// The wait before resuming, doubled each time.
const RESUME_DELAY: Duration = Duration::from_millis(500);
/// The size of one read while decrypting and decompressing.
const BUFFER: usize = 64 * 1024;

/// Where the plain archive goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Stdout,
}

impl Target {
    /// `-o FILE`, or `-o -` for stdout; refused when missing.
    pub fn parse(file: Option<&str>) -> Result<Target, CtlError> {
        match file {
            None | Some("") => Err(CtlError::Local(
                "where to? give the file with -o FILE (or -o - for stdout): nococtl backup download ID -o db.dump".into(),
            )),
            Some("-") => Ok(Target::Stdout),
            Some(path) => Ok(Target::File(PathBuf::from(path))),
        }
    }

    /// Where the temporary files go: next to the target (so the final rename stays on one
    /// filesystem), or the system's temporary directory for stdout.
    fn dir(&self) -> PathBuf {
        match self {
            Target::File(path) => match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            },
            Target::Stdout => std::env::temp_dir(),
        }
    }

    /// `.db.dump.` for the temporary files of `db.dump`.
    fn temp_prefix(&self) -> String {
        match self {
            Target::File(path) => format!(
                ".{}.",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "backup".to_string())
            ),
            Target::Stdout => "nococtl-backup.".to_string(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::File(path) => path.display().to_string(),
            Target::Stdout => "stdout".to_string(),
        }
    }
}

/// An age identity file's keys.
pub type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// The identities in an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments).
pub fn read_identities(path: &Path) -> Result<Identities, CtlError> {
    let local =
        |e: &dyn std::fmt::Display| CtlError::Local(format!("--identity {}: {e}", path.display()));
    let file = File::open(path).map_err(|e| local(&e))?;
    let ids = age::IdentityFile::from_buffer(BufReader::new(file))
        .map_err(|e| local(&e))?
        .into_identities()
        .map_err(|e| local(&e))?;
    if ids.is_empty() {
        return Err(local(&"no age identity in it (AGE-SECRET-KEY-1… lines)"));
    }
    Ok(ids)
}

pub async fn run(
    id: &str,
    file: Option<&str>,
    identity: Option<&Path>,
    path: &Path,
    server: Option<&str>,
) -> Result<(), CtlError> {
    // Everything local is checked before connecting.
    let target = Target::parse(file)?;
    if target == Target::Stdout && output::stdout_is_terminal() {
        return Err(CtlError::Local(
            "-o - writes the archive to stdout, which is a terminal: redirect it (> file, | tar -t) or give -o FILE".into(),
        ));
    }
    let identities = identity.map(read_identities).transpose()?;
    let (_, mut ctl) = client::open(path, server).await?;
    let backup = ctl
        .get_backup(pb::GetBackupRequest { id: id.to_string() })
        .await
        .map_err(|s| refused(&format!("read backup {id}"), s))?
        .into_inner();
    let backup = BackupView::from(&backup);
    if backup.state != pb::BackupState::Complete {
        return Err(CtlError::Failed(format!(
            "backup {id} is {}, not complete: there is no archive to download{}",
            backup.state,
            if backup.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", backup.reason)
            }
        )));
    }
    if backup.encrypted && identities.is_none() {
        return Err(CtlError::Local(format!(
            "backup {id} is encrypted to {}: give an age identity file holding one of their keys with --identity FILE",
            backup.recipients.join(", ")
        )));
    }
    let expected = Expected {
        size: backup.size,
        sha256: backup.sha256.clone(),
    };
    let interrupted = || {
        CtlError::Interrupted(format!(
            "download of backup {id} interrupted: nothing was written to {}",
            target.describe()
        ))
    };
    let mut received = Received::new_in(&target.dir(), &target.temp_prefix(), expected)?;
    tokio::select! {
        done = fetch(&mut ctl, id, &mut received) => done?,
        _ = tokio::signal::ctrl_c() => return Err(interrupted()),
    }
    let stored = received.finish(id)?;
    let stored_size = backup.size;
    let plain = dump_in_manifest(&backup);
    // Decrypting and decompressing is blocking work; Ctrl-C stops it between two reads, and
    // its temporary files go with it.
    let cancel = Arc::new(AtomicBool::new(false));
    let work = {
        let target = target.clone();
        let cancel = cancel.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            deliver(&id, stored, &target, identities, plain.as_ref(), &cancel)
        })
    };
    tokio::pin!(work);
    let delivered = tokio::select! {
        done = &mut work => done,
        _ = tokio::signal::ctrl_c() => {
            cancel.store(true, Ordering::Relaxed);
            let _ = work.await;
            return Err(match target {
                Target::Stdout => CtlError::Interrupted(format!(
                    "download of backup {id} interrupted: what stdout got is incomplete"
                )),
                Target::File(_) => interrupted(),
            });
        }
    }
    .map_err(|e| CtlError::Local(format!("writing backup {id}: {e}")))??;
    let note = format!(
        "backup {id}: {} stored, size and sha256 as in the catalog{}; {} of plain archive{}",
        human_bytes(stored_size),
        if delivered.decrypted {
            ", decrypted"
        } else {
            ""
        },
        human_bytes(delivered.written),
        if delivered.checked {
            ", size and sha256 as in the manifest"
        } else {
            ""
        }
    );
    match &target {
        Target::File(path) => outln!("wrote {}: {note}", path.display()),
        Target::Stdout if delivered.reader_gone => {}
        Target::Stdout => errln!("{note}"),
    }
    Ok(())
}

/// Stream the stored archive into `received`, resuming from what it holds after a cut.
async fn fetch(
    ctl: &mut noco_proto::v1::control_client::ControlClient<tonic::transport::Channel>,
    id: &str,
    received: &mut Received,
) -> Result<(), CtlError> {
    let action = format!("download backup {id}");
    let mut cuts = 0;
    let mut delay = RESUME_DELAY;
    loop {
        let request = pb::BackupDownloadRequest {
            id: id.to_string(),
            offset: received.size,
        };
        let status = match ctl.download_backup(request).await {
            Ok(r) => {
                let mut stream = r.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(chunk)) => {
                            received.chunk(id, &chunk)?;
                            cuts = 0;
                            delay = RESUME_DELAY;
                        }
                        Ok(None) => return Ok(()),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        if !resumable(&status) || cuts >= RESUMES {
            return Err(refused(&action, status));
        }
        cuts += 1;
        errln!(
            "nococtl: the download was cut at {} ({}); resuming",
            human_bytes(received.size),
            status.message()
        );
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

/// Worth resuming: the connection or the server went away.
fn resumable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::DeadlineExceeded
    )
}

/// The stored archive as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// The stored archive as it arrives: a temporary file, how many bytes, their sha256.
pub struct Received {
    file: NamedTempFile,
    expected: Expected,
    hasher: Sha256,
    /// Bytes written so far (where a resumed download starts).
    pub size: u64,
}

impl Received {
    /// An empty temporary file in `dir`, named `<prefix>XXXXXX.download`.
    pub fn new_in(dir: &Path, prefix: &str, expected: Expected) -> Result<Received, CtlError> {
        let file = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(".download")
            .tempfile_in(dir)
            .map_err(|e| {
                CtlError::Local(format!(
                    "cannot create a temporary file in {}: {e}",
                    dir.display()
                ))
            })?;
        Ok(Received {
            file,
            expected,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Take one message: its announced size and sha256 (the first of each stream) must be the
    /// catalog's, and the data may not go past the catalog's size.
    pub fn chunk(&mut self, id: &str, c: &pb::BackupDownloadChunk) -> Result<(), CtlError> {
        let e = &self.expected;
        if (c.size != 0 && c.size != e.size)
            || (!c.sha256.is_empty() && !c.sha256.eq_ignore_ascii_case(&e.sha256))
        {
            return Err(CtlError::Failed(format!(
                "the server sends an archive of {} bytes with sha256 {} for backup {id}, but its catalog says {} bytes with sha256 {}: nothing was written",
                c.size, c.sha256, e.size, e.sha256
            )));
        }
        let size = self.size + c.data.len() as u64;
        if size > e.size {
            return Err(CtlError::Failed(format!(
                "the server sent more than the {} bytes of backup {id}'s archive: nothing was written",
                e.size
            )));
        }
        self.file.write_all(&c.data).map_err(|err| {
            CtlError::Local(format!("writing {}: {err}", self.file.path().display()))
        })?;
        self.hasher.update(&c.data);
        self.size = size;
        Ok(())
    }

    /// The whole stored archive, checked against the catalog, ready to be read from its start.
    pub fn finish(self, id: &str) -> Result<NamedTempFile, CtlError> {
        let sha256 = hex::encode(self.hasher.finalize());
        let e = &self.expected;
        if self.size != e.size || !sha256.eq_ignore_ascii_case(&e.sha256) {
            return Err(CtlError::Failed(format!(
                "the archive of backup {id} is not the one in the catalog: {} bytes with sha256 {sha256} received, {} bytes with sha256 {} expected; nothing was written",
                self.size, e.size, e.sha256
            )));
        }
        let mut file = self.file;
        file.as_file_mut()
            .flush()
            .and_then(|()| file.as_file_mut().rewind())
            .map_err(|err| CtlError::Local(format!("reading {}: {err}", file.path().display())))?;
        Ok(file)
    }
}

/// What [`deliver`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Bytes of plain archive.
    pub written: u64,
    pub decrypted: bool,
    /// The plain archive was checked against the manifest (a dump: its size and sha256).
    pub checked: bool,
    /// Stdout's reader went away (`| head`): the output stopped there, quietly.
    pub reader_gone: bool,
}

/// Decrypt (when it is an age file) and decompress the checked archive into the target: a
/// temporary file next to it, synced and renamed over it only once whole. With `plain` (what
/// the manifest says of a dump), the plain archive must have that size and sha256 too.
pub fn deliver(
    id: &str,
    stored: NamedTempFile,
    target: &Target,
    identities: Option<Identities>,
    plain: Option<&Expected>,
    cancel: &AtomicBool,
) -> Result<Delivered, CtlError> {
    let mut input = BufReader::with_capacity(BUFFER, stored.reopen().map_err(local_io)?);
    let encrypted = starts_with(&mut input, AGE_HEADER).map_err(local_io)?;
    let content: Box<dyn Read> = if encrypted {
        let Some(identities) = identities else {
            return Err(CtlError::Local(format!(
                "backup {id} is age-encrypted: give an age identity file holding a key of one of its recipients with --identity FILE"
            )));
        };
        Box::new(decrypt(id, input, &identities)?)
    } else {
        Box::new(input)
    };
    let decoder = zstd::stream::read::Decoder::new(content).map_err(local_io)?;
    let differs = |written: u64, sha256: &str| {
        let e = plain?;
        (written != e.size || !sha256.eq_ignore_ascii_case(&e.sha256)).then(|| {
            format!(
                "backup {id}: the dump decompresses to {written} bytes with sha256 {sha256}, but its manifest says {} bytes with sha256 {}",
                e.size, e.sha256
            )
        })
    };
    let broken = |e: io::Error| {
        CtlError::Failed(format!(
            "backup {id}: the archive does not {} ({e}); nothing was written",
            if encrypted {
                "decrypt and decompress"
            } else {
                "decompress (zstd)"
            }
        ))
    };
    match target {
        Target::Stdout => {
            let mut stdout = io::stdout().lock();
            let copied = copy(decoder, &mut stdout, cancel);
            let (written, reader_gone) = match copied {
                Ok((n, sha256)) => {
                    if let Some(problem) = differs(n, &sha256) {
                        return Err(CtlError::Failed(format!(
                            "{problem}: what was written to stdout is not that dump"
                        )));
                    }
                    (n, false)
                }
                Err(Copy::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => (0, true),
                Err(Copy::Write(e)) => {
                    return Err(CtlError::Local(format!("writing to stdout: {e}")));
                }
                Err(Copy::Read(e)) => return Err(broken(e)),
                Err(Copy::Cancelled) => return Err(cancelled(id)),
            };
            Ok(Delivered {
                written,
                decrypted: encrypted,
                checked: plain.is_some() && !reader_gone,
                reader_gone,
            })
        }
        Target::File(path) => {
            let dir = target.dir();
            let mut out = tempfile::Builder::new()
                .prefix(&target.temp_prefix())
                .suffix(".part")
                .tempfile_in(&dir)
                .map_err(|e| {
                    CtlError::Local(format!(
                        "cannot create a temporary file in {}: {e}",
                        dir.display()
                    ))
                })?;
            let written = match copy(decoder, out.as_file_mut(), cancel) {
                Ok((n, sha256)) => {
                    if let Some(problem) = differs(n, &sha256) {
                        return Err(CtlError::Failed(format!("{problem}; nothing was written")));
                    }
                    n
                }
                Err(Copy::Read(e)) => return Err(broken(e)),
                Err(Copy::Write(e)) => {
                    return Err(CtlError::Local(format!(
                        "writing {}: {e}",
                        out.path().display()
                    )));
                }
                Err(Copy::Cancelled) => return Err(cancelled(id)),
            };
            out.as_file()
                .sync_all()
                .map_err(|e| CtlError::Local(format!("writing {}: {e}", out.path().display())))?;
            out.persist(path).map_err(|e| {
                CtlError::Local(format!(
                    "renaming the download to {}: {}",
                    path.display(),
                    e.error
                ))
            })?;
            // The rename itself, durable.
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(Delivered {
                written,
                decrypted: encrypted,
                checked: plain.is_some(),
                reader_gone: false,
            })
        }
    }
}

fn local_io(e: io::Error) -> CtlError {
    CtlError::Local(format!("reading the downloaded archive: {e}"))
}

fn cancelled(id: &str) -> CtlError {
    CtlError::Interrupted(format!("download of backup {id} interrupted"))
}

/// Whether what `input` holds begins with `prefix` (nothing is consumed).
fn starts_with<R: Read + Seek>(input: &mut BufReader<R>, prefix: &[u8]) -> io::Result<bool> {
    let mut head = vec![0u8; prefix.len()];
    let mut filled = 0;
    while filled < head.len() {
        match input.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    input.rewind()?;
    Ok(filled == prefix.len() && head == prefix)
}

/// An age file's plaintext, with the first of `identities` that opens it.
fn decrypt<R: io::BufRead>(
    id: &str,
    input: R,
    identities: &Identities,
) -> Result<age::stream::StreamReader<R>, CtlError> {
    let decryptor = age::Decryptor::new_buffered(input).map_err(|e| {
        CtlError::Failed(format!(
            "backup {id}: the archive's age header does not read ({e}); nothing was written"
        ))
    })?;
    if decryptor.is_scrypt() {
        return Err(CtlError::Failed(format!(
            "backup {id} is encrypted with a passphrase, not to recipients: nococtl cannot decrypt it"
        )));
    }
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CtlError::Local(format!(
                "backup {id}: no key of the --identity file is one of the archive's recipients; nothing was written"
            )),
            e => CtlError::Failed(format!(
                "backup {id}: the archive does not decrypt ({e}); nothing was written"
            )),
        })
}

/// Why [`copy`] stopped.
enum Copy {
    Read(io::Error),
    Write(io::Error),
    Cancelled,
}

/// `io::copy`, telling reading from writing failures apart and stopping when `cancel` is set;
/// how many bytes, and their sha256.
fn copy(
    mut from: impl Read,
    to: &mut impl Write,
    cancel: &AtomicBool,
) -> Result<(u64, String), Copy> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    let mut hasher = Sha256::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Copy::Cancelled);
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    to.flush().map_err(Copy::Write)?;
    Ok((total, hex::encode(hasher.finalize())))
}

/// What the manifest of a dump backup says of the dump (its one member's size and sha256), to
/// check the plain archive against; `None` for a volume backup (a tar of many members) or a
/// manifest that does not say.
pub fn dump_in_manifest(backup: &BackupView) -> Option<Expected> {
    if backup.kind != pb::BackupKind::Dump {
        return None;
    }
    let members = backup.manifest.get("members")?.as_array()?;
    let [member] = members.as_slice() else {
        return None;
    };
    Some(Expected {
        size: member.get("size")?.as_u64()?,
        sha256: member.get("sha256")?.as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    const ID: &str = "shop.db.20231114T221320Z.1a2b3c4d";

    fn zstd_of(plain: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(plain, 3).unwrap()
    }

    fn age_of(data: &[u8], recipient: &age::x25519::Recipient) -> Vec<u8> {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(data).unwrap();
        writer.finish().unwrap();
        out
    }

    fn expected(stored: &[u8]) -> Expected {
        Expected {
            size: stored.len() as u64,
            sha256: noco_certs::sha256_hex(stored),
        }
    }

    /// `stored` arriving in chunks of 7 bytes, the first announcing `announce`.
    fn receive(
        dir: &Path,
        stored: &[u8],
        catalog: Expected,
        announce: &Expected,
    ) -> Result<NamedTempFile, CtlError> {
        let mut r = Received::new_in(dir, ".db.dump.", catalog)?;
        for (i, data) in stored.chunks(7).enumerate() {
            let first = i == 0;
            r.chunk(
                ID,
                &pb::BackupDownloadChunk {
                    data: data.to_vec(),
                    size: if first { announce.size } else { 0 },
                    sha256: if first {
                        announce.sha256.clone()
                    } else {
                        String::new()
                    },
                },
            )?;
        }
        r.finish(ID)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn identities(identity: &age::x25519::Identity) -> Identities {
        vec![Box::new(identity.clone())]
    }

    #[test]
    fn a_checked_plain_archive_is_decompressed_into_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let plain = b"PGDMP custom dump bytes \x00\x01\x02".repeat(1000);
        let stored = zstd_of(&plain);
        let file = receive(dir.path(), &stored, expected(&stored), &expected(&stored)).unwrap();
        let target = Target::File(dir.path().join("db.dump"));
        let done = deliver(ID, file, &target, None, None, &AtomicBool::new(false)).unwrap();
        assert_eq!(done.written, plain.len() as u64);
        assert!(!done.decrypted);
        assert_eq!(std::fs::read(dir.path().join("db.dump")).unwrap(), plain);
        // The temporary files are gone; the file is the owner's alone.
        assert_eq!(names(dir.path()), ["db.dump"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("db.dump"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_age_encrypted_archive_is_decrypted_with_the_identity_then_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let plain = b"a tar of volumes".repeat(5000);
        let stored = age_of(&zstd_of(&plain), &key.to_public());
        assert!(stored.starts_with(AGE_HEADER));
        let target = Target::File(dir.path().join("files.tar"));
        let file = receive(dir.path(), &stored, expected(&stored), &expected(&stored)).unwrap();
        let done = deliver(
            ID,
            file,
            &target,
            Some(identities(&key)),
            None,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(done.decrypted);
        assert_eq!(std::fs::read(dir.path().join("files.tar")).unwrap(), plain);
        assert_eq!(names(dir.path()), ["files.tar"]);
    }

    #[test]
    fn a_wrong_or_missing_identity_writes_nothing_under_the_target_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let stored = age_of(&zstd_of(b"secret rows"), &key.to_public());
        let target = Target::File(dir.path().join("db.dump"));
        // An earlier file under the target's name is kept as it was.
        std::fs::write(dir.path().join("db.dump"), b"yesterday's").unwrap();
        let file = receive(dir.path(), &stored, expected(&stored), &expected(&stored)).unwrap();
        let e = deliver(
            ID,
            file,
            &target,
            Some(identities(&other)),
            None,
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("no key of the --identity file"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
        let file = receive(dir.path(), &stored, expected(&stored), &expected(&stored)).unwrap();
        let e = deliver(ID, file, &target, None, None, &AtomicBool::new(false)).unwrap_err();
        assert!(e.to_string().contains("is age-encrypted: give"), "{e}");
        assert_eq!(names(dir.path()), ["db.dump"]);
        assert_eq!(
            std::fs::read(dir.path().join("db.dump")).unwrap(),
            b"yesterday's"
        );
    }

    #[test]
    fn a_size_or_sha256_other_than_the_catalogs_is_refused_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let stored = zstd_of(b"the real archive");
        let good = expected(&stored);
        // The data differ from what the catalog says (same size).
        let mut tampered = stored.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0xff;
        let e = receive(
            dir.path(),
            &tampered,
            good.clone(),
            &Expected {
                size: 0,
                sha256: String::new(),
            },
        )
        .err()
        .unwrap();
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.to_string().contains("is not the one in the catalog"),
            "{e}"
        );
        assert!(e.to_string().contains(&good.sha256), "{e}");
        // Shorter than the catalog says.
        let e = receive(dir.path(), &stored[..5], good.clone(), &good)
            .err()
            .unwrap();
        assert!(e.to_string().contains("5 bytes with sha256"), "{e}");
        // Longer: refused as soon as it goes past.
        let mut longer = stored.clone();
        longer.extend_from_slice(b"more");
        let e = receive(dir.path(), &longer, good.clone(), &good)
            .err()
            .unwrap();
        assert!(e.to_string().contains("more than the"), "{e}");
        // The stream's first message announces another archive.
        let other = Expected {
            size: good.size,
            sha256: "f".repeat(64),
        };
        let e = receive(dir.path(), &stored, good.clone(), &other)
            .err()
            .unwrap();
        assert!(e.to_string().contains("but its catalog says"), "{e}");
        // Not one temporary file is left, and nothing has the target's name.
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }

    #[test]
    fn an_archive_that_does_not_decompress_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let stored = b"not zstd at all".to_vec();
        let file = receive(dir.path(), &stored, expected(&stored), &expected(&stored)).unwrap();
        let target = Target::File(dir.path().join("db.dump"));
        let e = deliver(ID, file, &target, None, None, &AtomicBool::new(false)).unwrap_err();
        assert!(e.to_string().contains("does not decompress"), "{e}");
        assert_eq!(e.exit_code(), 1);
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }

    #[test]
    fn a_dump_is_checked_against_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let dump = b"PGDMP the dump".to_vec();
        let stored = zstd_of(&dump);
        let target = Target::File(dir.path().join("db.dump"));
        let manifest = expected(&dump);
        let file = receive(dir.path(), &stored, expected(&stored), &expected(&stored)).unwrap();
        let done = deliver(
            ID,
            file,
            &target,
            None,
            Some(&manifest),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(done.checked);
        let other = Expected {
            size: manifest.size,
            sha256: "0".repeat(64),
        };
        std::fs::remove_file(dir.path().join("db.dump")).unwrap();
        let file = receive(dir.path(), &stored, expected(&stored), &expected(&stored)).unwrap();
        let e = deliver(
            ID,
            file,
            &target,
            None,
            Some(&other),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("but its manifest says"), "{e}");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));

        // Which backups have such a manifest: a dump with one member.
        let mut b = crate::view::backup::tests::info();
        b.manifest_json =
            r#"{"kind":"dump","members":[{"path":"dump","kind":"file","size":14,"sha256":"ab"}]}"#
                .into();
        assert_eq!(
            dump_in_manifest(&BackupView::from(&b)),
            Some(Expected {
                size: 14,
                sha256: "ab".into()
            })
        );
        b.kind = pb::BackupKind::Volumes.into();
        assert_eq!(dump_in_manifest(&BackupView::from(&b)), None);
        b.kind = pb::BackupKind::Dump.into();
        b.manifest_json = "{}".into();
        assert_eq!(dump_in_manifest(&BackupView::from(&b)), None);
    }

    #[test]
    fn a_cancelled_delivery_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let stored = zstd_of(b"rows");
        let file = receive(dir.path(), &stored, expected(&stored), &expected(&stored)).unwrap();
        let target = Target::File(dir.path().join("db.dump"));
        let e = deliver(ID, file, &target, None, None, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(e.exit_code(), 130);
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }

    #[test]
    fn a_resumed_stream_announces_the_archive_again_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let stored = zstd_of(b"resumed");
        let e = expected(&stored);
        let mut r = Received::new_in(dir.path(), ".x.", e.clone()).unwrap();
        let (a, b) = stored.split_at(4);
        for part in [a, b] {
            r.chunk(
                ID,
                &pb::BackupDownloadChunk {
                    data: part.to_vec(),
                    size: e.size,
                    sha256: e.sha256.clone(),
                },
            )
            .unwrap();
        }
        assert_eq!(r.size, stored.len() as u64);
        r.finish(ID).unwrap();
    }

    #[test]
    fn the_target_is_a_file_or_stdout_and_must_be_given() {
        assert_eq!(Target::parse(Some("-")).unwrap(), Target::Stdout);
        assert_eq!(
            Target::parse(Some("out/db.dump")).unwrap(),
            Target::File(PathBuf::from("out/db.dump"))
        );
        let e = Target::parse(None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("-o FILE"), "{e}");
        assert_eq!(
            Target::File(PathBuf::from("db.dump")).dir(),
            PathBuf::from(".")
        );
        assert_eq!(
            Target::File(PathBuf::from("out/db.dump")).dir(),
            PathBuf::from("out")
        );
        assert_eq!(
            Target::File(PathBuf::from("out/db.dump")).temp_prefix(),
            ".db.dump."
        );
    }

    #[test]
    fn identity_files_are_read_with_comments_and_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let path = dir.path().join("key.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &path,
            format!(
                "# created: today\n# public key: {}\n{}\n",
                key.to_public(),
                key.to_string().expose_secret()
            ),
        )
        .unwrap();
        assert_eq!(read_identities(&path).unwrap().len(), 1);
        std::fs::write(&path, "# nothing here\n").unwrap();
        let e = read_identities(&path).err().unwrap();
        assert!(e.to_string().contains("key.txt: no age identity"), "{e}");
        std::fs::write(&path, "not a key\n").unwrap();
        let e = read_identities(&path).err().unwrap();
        assert!(e.to_string().starts_with("--identity "), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = read_identities(&dir.path().join("missing.txt"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing.txt"), "{e}");
        // A recipient parses as one (the tests encrypt to it).
        assert!(age::x25519::Recipient::from_str(&key.to_public().to_string()).is_ok());
    }
}
