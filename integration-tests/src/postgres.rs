//! A PostgreSQL 15 server image for tests (backups, dumps), built locally: no registry is
//! reachable, so the image is assembled from the host's Debian `postgresql-15` package.
//!
//! [`postgres_image`] installs the package on the host if it is missing (`apt-get`, as root),
//! then builds `noco-test-postgres:15-<key>` (also tagged `noco-test-postgres:15`) `FROM
//! scratch` through the Engine API, once per machine: `<key>` hashes the recipe and the list of
//! host files (path, mode, size, mtime), so an image with that tag is reused as it is.
//!
//! The image holds `/usr/lib/postgresql/15/{bin,lib}` (no JIT), `/usr/share/postgresql/15`,
//! `/usr/share/zoneinfo`, every shared library those need (closed with `ldd`, the loader
//! included), `/bin/sh` (dash) for its entrypoint, and a `postgres` user (uid/gid 999) owning
//! `/var/lib/postgresql/data` (mode 0700, so a fresh named volume mounted there starts owned by
//! that user) and `/var/run/postgresql`. It runs as that user. Its entrypoint initializes an
//! empty data directory (`initdb --auth=trust --username=postgres --locale=C --encoding=UTF8`,
//! then `POSTGRES_USER` / `POSTGRES_PASSWORD` / `POSTGRES_DB` like the official image, except
//! that the superuser stays `postgres`) and runs `postgres -c listen_addresses='*' -k
//! /var/run/postgresql`. Its own `HEALTHCHECK` is `pg_isready` on the socket; the bin directory
//! is on `PATH`.
//!
//! Like the rest of the harness, every helper is synchronous; do not call them from inside an
//! async runtime. Tests start with `let Some(image) = require_postgres_image() else { return };`.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::HealthStatusEnum;
use bollard::query_parameters::{LogsOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::docker::{build_image, require_docker, with_docker};

/// The image repository.
pub const POSTGRES_REPO: &str = "noco-test-postgres";
/// The PostgreSQL major version, from the host's Debian package `postgresql-15`.
pub const PG_MAJOR: &str = "15";
/// The data directory in the image (also `$PGDATA`).
pub const PGDATA: &str = "/var/lib/postgresql/data";
/// The directory of the server's Unix socket in the image.
pub const SOCKET_DIR: &str = "/var/run/postgresql";
/// The uid and gid of the `postgres` user in the image.
pub const POSTGRES_UID: u32 = 999;
/// The service name [`postgres_service_yaml`] defines.
pub const POSTGRES_SERVICE: &str = "db";
/// The image label holding the key its tag is made of.
pub const KEY_LABEL: &str = "noco.test.postgres.key";

/// Bump to rebuild every machine's image when the recipe changes in a way the key misses.
const RECIPE_VERSION: &str = "1";

/// An error saying a prerequisite (the host package, root to install it) is missing, as
/// opposed to a failure of the build itself. [`require_postgres_image`] skips on it unless
/// `NOCO_REQUIRE_DOCKER=1`.
#[derive(Debug)]
pub struct MissingPrerequisite(pub String);

impl fmt::Display for MissingPrerequisite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MissingPrerequisite {}

/// The image reference (`noco-test-postgres:15-<key>`), built or reused once per test process.
/// Installs `postgresql-15` on the host first if needed. A missing prerequisite is an error
/// whose root is a [`MissingPrerequisite`].
pub fn postgres_image() -> anyhow::Result<String> {
    static IMAGE: OnceLock<Result<String, (bool, String)>> = OnceLock::new();
    let result = IMAGE.get_or_init(|| {
        build_postgres_image().map_err(|e| {
            let missing = e.downcast_ref::<MissingPrerequisite>().is_some();
            (missing, format!("{e:#}"))
        })
    });
    match result {
        Ok(image) => Ok(image.clone()),
        Err((true, message)) => Err(MissingPrerequisite(message.clone()).into()),
        Err((false, message)) => Err(anyhow::anyhow!("{message}")),
    }
}

/// The image if Docker and the image's prerequisites are there. Otherwise: panics if
/// `NOCO_REQUIRE_DOCKER=1` (CI) or if the build itself failed, else prints why it skips and
/// returns `None`. Tests start with `let Some(image) = require_postgres_image() else { return };`.
pub fn require_postgres_image() -> Option<String> {
    if !require_docker() {
        return None;
    }
    match postgres_image() {
        Ok(image) => Some(image),
        Err(e) if e.downcast_ref::<MissingPrerequisite>().is_some() => {
            if crate::docker_required() {
                panic!("NOCO_REQUIRE_DOCKER=1 but the PostgreSQL test image cannot be made: {e:#}");
            }
            eprintln!("skipping: no PostgreSQL test image ({e:#})");
            None
        }
        Err(e) => panic!("building the PostgreSQL test image: {e:#}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The host package

/// The host's `/usr/lib/postgresql/15/bin`, installing `postgresql-15` first if it is missing.
pub fn host_postgres_bin() -> anyhow::Result<PathBuf> {
    let bin = PathBuf::from(format!("/usr/lib/postgresql/{PG_MAJOR}/bin"));
    let complete = |bin: &Path| {
        [
            "postgres",
            "initdb",
            "pg_ctl",
            "pg_dump",
            "pg_restore",
            "psql",
            "pg_isready",
        ]
        .iter()
        .all(|b| bin.join(b).is_file())
    };
    if complete(&bin) {
        return Ok(bin);
    }
    let package = format!("postgresql-{PG_MAJOR}");
    let manual = format!(
        "install it as root: apt-get update && apt-get install -y --no-install-recommends {package}"
    );
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Err(MissingPrerequisite(format!(
            "{} is missing and the tests do not run as root to install {package}: {manual}",
            bin.join("postgres").display()
        ))
        .into());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        return Err(MissingPrerequisite(format!(
            "{} is missing and there is no apt-get to install {package} (a Debian host is \
             expected)",
            bin.join("postgres").display()
        ))
        .into());
    }
    eprintln!(
        "{} is missing: installing {package} with apt-get",
        bin.join("postgres").display()
    );
    let started = Instant::now();
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("apt-get")
            .args(["-q", "-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("running apt-get")?;
        if !out.status.success() {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(MissingPrerequisite(format!(
                "apt-get {} failed ({}); {manual}\n{}",
                args.join(" "),
                out.status,
                tail.join("\n")
            ))
            .into());
        }
        Ok(())
    };
    apt(&["update"])?;
    apt(&["install", "-y", "--no-install-recommends", &package])?;
    if !complete(&bin) {
        return Err(MissingPrerequisite(format!(
            "{package} was installed but {} still lacks a program",
            bin.display()
        ))
        .into());
    }
    eprintln!("{package} installed in {:.1?}", started.elapsed());
    Ok(bin)
}

/// The installed version of the host package, for a label.
fn host_package_version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", &format!("postgresql-{PG_MAJOR}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

// ---------------------------------------------------------------------------------------------
// The image

const ENTRYPOINT: &str = r#"#!/bin/sh
# noco-test-postgres: initialize an empty data directory, then run the server in the foreground.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
case "${1:-}" in
  '' | -*) ;;
  *) exec "$@" ;;
esac
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" --auth=trust --username=postgres --locale=C --encoding=UTF8
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then method=scram-sha-256; else method=trust; fi
  printf 'host all all all %s\n' "$method" >> "$PGDATA/pg_hba.conf"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  if [ "$user" != postgres ] || [ "$db" != postgres ] || [ -n "${POSTGRES_PASSWORD:-}" ]; then
    # A private socket directory: the healthcheck must not see this temporary server.
    pg_ctl -D "$PGDATA" -w -s -o "-c listen_addresses='' -k /tmp" start
    sql() {
      psql -X -q -v ON_ERROR_STOP=1 -h /tmp -U postgres -d postgres \
        -v user="$user" -v db="$db" -v password="${POSTGRES_PASSWORD:-}"
    }
    if [ "$user" != postgres ]; then
      echo 'CREATE ROLE :"user" LOGIN;' | sql
    fi
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
      echo "ALTER ROLE :\"user\" PASSWORD :'password';" | sql
    fi
    if [ "$db" != postgres ]; then
      echo 'CREATE DATABASE :"db" OWNER :"user";' | sql
    fi
    pg_ctl -D "$PGDATA" -w -s -m fast stop
  fi
  echo "noco-test-postgres: initialized $PGDATA (user $user, database $db)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql "$@"
"#;

fn dockerfile(key: &str, version: &str) -> String {
    let uid = POSTGRES_UID;
    format!(
        "FROM scratch\n\
         ADD rootfs.tar /\n\
         ENV PATH=/usr/lib/postgresql/{PG_MAJOR}/bin:/usr/local/bin:/usr/bin:/bin \
         PGDATA={PGDATA} TZ=UTC HOME=/var/lib/postgresql\n\
         USER {uid}:{uid}\n\
         WORKDIR /var/lib/postgresql\n\
         EXPOSE 5432\n\
         STOPSIGNAL SIGINT\n\
         HEALTHCHECK --interval=1s --timeout=5s --retries=60 \
         CMD [\"pg_isready\", \"-h\", \"{SOCKET_DIR}\", \"-U\", \"postgres\"]\n\
         LABEL org.opencontainers.image.title={POSTGRES_REPO} \
         org.opencontainers.image.version=\"{version}\" {KEY_LABEL}={key}\n\
         ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]\n"
    )
}

fn build_postgres_image() -> anyhow::Result<String> {
    let bin = host_postgres_bin()?;
    let started = Instant::now();
    let rootfs = assemble_rootfs(&bin)?;
    let version = host_package_version();
    // The key covers the recipe and every host file's path, mode, size and mtime: an upgrade of
    // a package changes it, an unchanged host reuses the image without reading the files.
    let mut hasher = Sha256::new();
    hasher.update(RECIPE_VERSION.as_bytes());
    hasher.update(dockerfile("", &version).as_bytes());
    hasher.update(rootfs.manifest().as_bytes());
    let key = hex(&hasher.finalize())[..16].to_string();
    let image = format!("{POSTGRES_REPO}:{PG_MAJOR}-{key}");
    let (key, version, rootfs) = (&key, &version, &rootfs);
    let (built, size) = with_docker(|docker| {
        let image = image.clone();
        async move {
            let existing = match docker.inspect_image(&image).await {
                Ok(info) => Some(info),
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(e).context(format!("inspecting {image}")),
            };
            let same = existing.as_ref().is_some_and(|info| {
                info.config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(KEY_LABEL))
                    .is_some_and(|k| k == key)
            });
            let built = !same;
            if built {
                let context = build_context(&dockerfile(key, version), rootfs)?;
                build_image(&docker, &image, context).await?;
            }
            let major = TagImageOptionsBuilder::default()
                .repo(POSTGRES_REPO)
                .tag(PG_MAJOR)
                .build();
            docker
                .tag_image(&image, Some(major))
                .await
                .with_context(|| format!("tagging {image} as {POSTGRES_REPO}:{PG_MAJOR}"))?;
            let size = docker.inspect_image(&image).await?.size.unwrap_or(0);
            Ok((built, size))
        }
    })?;
    eprintln!(
        "image {image} (PostgreSQL {version}, {:.1} MB) {} in {:.1?}",
        size as f64 / 1e6,
        if built { "built" } else { "reused" },
        started.elapsed()
    );
    Ok(image)
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What goes into the image's root file system, by path relative to `/`.
#[derive(Default)]
struct Rootfs {
    entries: BTreeMap<String, Entry>,
}

struct Entry {
    kind: Kind,
    mode: u32,
    owner: u32,
}

enum Kind {
    Dir,
    /// A host file, with the size and mtime it had when listed.
    HostFile(PathBuf, u64, i64, i64),
    Data(Vec<u8>),
    Symlink(String),
}

fn rel(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("a non-UTF-8 path: {}", path.display()))?;
    Ok(text.trim_start_matches('/').to_string())
}

impl Rootfs {
    fn put(&mut self, path: &str, kind: Kind, mode: u32, owner: u32) {
        self.entries.insert(
            path.trim_start_matches('/').to_string(),
            Entry { kind, mode, owner },
        );
    }

    /// The directories leading to `dir` (a canonical host path), with their host modes.
    fn add_dirs(&mut self, dir: &Path) -> anyhow::Result<()> {
        for ancestor in dir.ancestors() {
            let key = rel(ancestor)?;
            if key.is_empty() || self.entries.contains_key(&key) {
                continue;
            }
            let meta = std::fs::metadata(ancestor)
                .with_context(|| format!("reading {}", ancestor.display()))?;
            self.put(&key, Kind::Dir, meta.permissions().mode() & 0o7777, 0);
        }
        Ok(())
    }

    /// A host file, directory (alone) or symlink at its canonical directory, following
    /// symlinks (when `follow` says so for the target) so that the image resolves them as the
    /// host does.
    fn add_host(&mut self, path: &Path, follow: &dyn Fn(&Path) -> bool) -> anyhow::Result<()> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        let parent = std::fs::canonicalize(parent)
            .with_context(|| format!("resolving {}", parent.display()))?;
        let real = parent.join(name);
        let key = rel(&real)?;
        if self.entries.contains_key(&key) {
            return Ok(());
        }
        self.add_dirs(&parent)?;
        let meta = std::fs::symlink_metadata(&real)
            .with_context(|| format!("reading {}", real.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&real)?;
            self.put(&key, Kind::Symlink(rel_keep(&target)?), 0o777, 0);
            let resolved = parent.join(&target);
            if resolved.exists() && follow(&resolved) {
                self.add_host(&resolved, follow)?;
            }
        } else if meta.is_dir() {
            self.put(&key, Kind::Dir, mode, 0);
        } else if meta.is_file() {
            self.put(
                &key,
                Kind::HostFile(real.clone(), meta.len(), meta.mtime(), meta.mtime_nsec()),
                mode,
                0,
            );
        } else {
            bail!(
                "{} is neither a file, a directory nor a symlink",
                real.display()
            );
        }
        Ok(())
    }

    /// A host directory tree, without the paths `skip` says; symlinks are followed only to
    /// targets inside the tree.
    fn add_tree(&mut self, root: &Path, skip: &dyn Fn(&Path) -> bool) -> anyhow::Result<()> {
        let root =
            std::fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
        self.add_host(&root, &|_| false)?;
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("listing {}", dir.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            children.sort();
            for child in children {
                if skip(&child) {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&child)?;
                if meta.is_dir() {
                    self.add_host(&child, &|_| false)?;
                    stack.push(child);
                } else {
                    let inside = |p: &Path| {
                        p.starts_with(&root)
                            && std::fs::canonicalize(p).is_ok_and(|p| p.starts_with(&root))
                    };
                    self.add_host(&child, &inside)?;
                }
            }
        }
        Ok(())
    }

    /// One line per entry: what the image key hashes.
    fn manifest(&self) -> String {
        let mut out = String::new();
        for (path, e) in &self.entries {
            let what = match &e.kind {
                Kind::Dir => "dir".to_string(),
                Kind::HostFile(_, size, secs, nanos) => format!("file {size} {secs}.{nanos:09}"),
                Kind::Data(data) => format!("data {}", hex(&Sha256::digest(data))),
                Kind::Symlink(target) => format!("symlink {target}"),
            };
            out.push_str(&format!("{path} {:o} {} {what}\n", e.mode, e.owner));
        }
        out
    }
}

/// A symlink target as text (absolute targets stay absolute).
fn rel_keep(target: &Path) -> anyhow::Result<String> {
    target
        .to_str()
        .map(str::to_string)
        .with_context(|| format!("a non-UTF-8 symlink target: {}", target.display()))
}

/// The shared libraries `files` load, with the dynamic loader, as `ldd` resolves them on the
/// host (the closure: `ldd` lists indirect dependencies too).
fn shared_libraries(files: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .args(files)
        .output()
        .context("running ldd (from libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) && line.ends_with(':') {
            current = line.trim_end_matches(':').to_string();
            continue;
        }
        let line = line.trim();
        if line.contains("not found") {
            bail!("{current} needs a library the host lacks: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    if libs.is_empty() {
        bail!(
            "ldd found no libraries for {} files ({}): {}",
            files.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).is_ok_and(|mut f| f.read_exact(&mut magic).is_ok())
        && magic == *b"\x7fELF"
}

fn assemble_rootfs(bin: &Path) -> anyhow::Result<Rootfs> {
    let mut fs = Rootfs::default();
    let lib = bin.with_file_name("lib");
    let share = PathBuf::from(format!("/usr/share/postgresql/{PG_MAJOR}"));
    let zoneinfo = Path::new("/usr/share/zoneinfo");
    if !zoneinfo.join("UTC").exists() {
        return Err(MissingPrerequisite(
            "/usr/share/zoneinfo/UTC is missing: install the tzdata package".to_string(),
        )
        .into());
    }
    // Usr-merged hosts: /bin, /lib, … are symlinks into /usr, and ldd names paths through them.
    for top in ["bin", "sbin", "lib", "lib64"] {
        let path = Path::new("/").join(top);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            let target = std::fs::read_link(&path)?;
            fs.put(top, Kind::Symlink(rel_keep(&target)?), 0o777, 0);
        }
    }
    fs.add_tree(bin, &|_| false)?;
    // No JIT: llvmjit.so would bring libLLVM (about 100 MB); the server runs without it.
    fs.add_tree(&lib, &|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "bitcode" || n.starts_with("llvmjit"))
    })?;
    fs.add_tree(&share, &|p| p.file_name().is_some_and(|n| n == "man"))?;
    fs.add_tree(zoneinfo, &|p| p.file_name().is_some_and(|n| n == "right"))?;
    fs.add_host(Path::new("/bin/sh"), &|_| true)?;

    let mut elves: Vec<PathBuf> = Vec::new();
    for (path, e) in &fs.entries {
        if let Kind::HostFile(host, ..) = &e.kind
            && (path.contains("/postgresql/") || path.ends_with("/dash"))
            && is_elf(host)
        {
            elves.push(host.clone());
        }
    }
    for library in shared_libraries(&elves)? {
        fs.add_host(&library, &|_| true)?;
    }

    let pg = POSTGRES_UID;
    fs.put(
        "etc/passwd",
        Kind::Data(
            format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 postgres:x:{pg}:{pg}:PostgreSQL administrator:/var/lib/postgresql:/bin/sh\n"
            )
            .into_bytes(),
        ),
        0o644,
        0,
    );
    fs.put(
        "etc/group",
        Kind::Data(format!("root:x:0:\npostgres:x:{pg}:\n").into_bytes()),
        0o644,
        0,
    );
    fs.put(
        "etc/nsswitch.conf",
        Kind::Data(b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec()),
        0o644,
        0,
    );
    fs.put(
        "usr/local/bin/docker-entrypoint.sh",
        Kind::Data(ENTRYPOINT.as_bytes().to_vec()),
        0o755,
        0,
    );
    for (dir, mode, owner) in [
        ("etc", 0o755, 0),
        ("usr/local", 0o755, 0),
        ("usr/local/bin", 0o755, 0),
        ("root", 0o700, 0),
        ("tmp", 0o1777, 0),
        ("var", 0o755, 0),
        ("var/lib", 0o755, 0),
        ("var/lib/postgresql", 0o755, pg),
        ("var/lib/postgresql/data", 0o700, pg),
        ("var/run", 0o755, 0),
        ("var/run/postgresql", 0o2775, pg),
    ] {
        fs.put(dir, Kind::Dir, mode, owner);
    }
    Ok(fs)
}

/// The build context: the Dockerfile and `rootfs.tar`, which `ADD` unpacks keeping the
/// owners and modes it records.
fn build_context(dockerfile: &str, rootfs: &Rootfs) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut tar = Tar { out: &mut out };
    tar.entry("Dockerfile", b'0', 0o644, 0, dockerfile.as_bytes(), "")?;
    // rootfs.tar is written in place after a header whose size is filled in afterwards.
    let header_at = tar.out.len();
    tar.entry("rootfs.tar", b'0', 0o644, 0, &[], "")?;
    let data_at = tar.out.len();
    {
        let inner = &mut tar;
        for (path, e) in &rootfs.entries {
            match &e.kind {
                Kind::Dir => inner.entry(&format!("{path}/"), b'5', e.mode, e.owner, &[], "")?,
                Kind::HostFile(host, ..) => {
                    let data = std::fs::read(host)
                        .with_context(|| format!("reading {}", host.display()))?;
                    inner.entry(path, b'0', e.mode, e.owner, &data, "")?;
                }
                Kind::Data(data) => inner.entry(path, b'0', e.mode, e.owner, data, "")?,
                Kind::Symlink(target) => inner.entry(path, b'2', e.mode, e.owner, &[], target)?,
            }
        }
        inner.out.extend_from_slice(&[0; 1024]);
    }
    let size = out.len() - data_at;
    let mut header = [0u8; 512];
    header.copy_from_slice(&out[header_at..header_at + 512]);
    set_size_and_checksum(&mut header, size as u64);
    out[header_at..header_at + 512].copy_from_slice(&header);
    out.resize(out.len().next_multiple_of(512), 0);
    out.extend_from_slice(&[0; 1024]);
    Ok(out)
}

/// A ustar writer (long paths split into prefix and name).
struct Tar<'a> {
    out: &'a mut Vec<u8>,
}

fn put_field(header: &mut [u8; 512], at: usize, field: &[u8]) {
    header[at..at + field.len()].copy_from_slice(field);
}

fn set_size_and_checksum(header: &mut [u8; 512], size: u64) {
    put_field(header, 124, format!("{size:011o}\0").as_bytes());
    put_field(header, 148, b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    put_field(header, 148, format!("{sum:06o}\0 ").as_bytes());
}

impl Tar<'_> {
    fn entry(
        &mut self,
        path: &str,
        kind: u8,
        mode: u32,
        owner: u32,
        data: &[u8],
        link: &str,
    ) -> anyhow::Result<()> {
        let mut header = [0u8; 512];
        let (prefix, name) = if path.len() <= 100 {
            ("", path)
        } else {
            // Split at a '/' leaving at most 100 bytes of name and 155 of prefix.
            let body = path.trim_end_matches('/');
            let at = body
                .char_indices()
                .filter(|&(i, c)| c == '/' && i <= 155 && path.len() - i - 1 <= 100)
                .map(|(i, _)| i)
                .next()
                .with_context(|| format!("a path too long for ustar: {path}"))?;
            (&path[..at], &path[at + 1..])
        };
        if link.len() > 100 {
            bail!("a symlink target too long for ustar: {path} -> {link}");
        }
        put_field(&mut header, 0, name.as_bytes());
        put_field(&mut header, 100, format!("{mode:07o}\0").as_bytes());
        put_field(&mut header, 108, format!("{owner:07o}\0").as_bytes());
        put_field(&mut header, 116, format!("{owner:07o}\0").as_bytes());
        // A fixed mtime (2024-01-01): the same files make the same layer.
        put_field(
            &mut header,
            136,
            format!("{:011o}\0", 1_704_067_200u64).as_bytes(),
        );
        header[156] = kind;
        put_field(&mut header, 157, link.as_bytes());
        put_field(&mut header, 257, b"ustar\0");
        put_field(&mut header, 263, b"00");
        put_field(&mut header, 345, prefix.as_bytes());
        set_size_and_checksum(&mut header, data.len() as u64);
        self.out.extend_from_slice(&header);
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().next_multiple_of(512), 0);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Compose

/// The service [`POSTGRES_SERVICE`] (`db`) running `image`, as lines to put under `services:`:
/// `POSTGRES_USER=app`, `POSTGRES_DB=app`, the named volume `pgdata` at the data directory (the
/// file declares it, see [`postgres_compose_yaml`]) and a `pg_isready` healthcheck every second.
pub fn postgres_service_yaml(image: &str) -> String {
    format!(
        "  {POSTGRES_SERVICE}:\n\
         \x20   image: {image}\n\
         \x20   environment:\n\
         \x20     POSTGRES_USER: app\n\
         \x20     POSTGRES_DB: app\n\
         \x20   volumes:\n\
         \x20     - pgdata:{PGDATA}\n\
         \x20   healthcheck:\n\
         \x20     test: [\"CMD\", \"pg_isready\", \"-h\", \"{SOCKET_DIR}\", \"-U\", \"postgres\"]\n\
         \x20     interval: 1s\n\
         \x20     timeout: 5s\n\
         \x20     retries: 60\n"
    )
}

/// A whole compose file: [`postgres_service_yaml`] and the `pgdata` volume.
pub fn postgres_compose_yaml(image: &str) -> String {
    format!(
        "services:\n{}volumes:\n  pgdata: {{}}\n",
        postgres_service_yaml(image)
    )
}

// ---------------------------------------------------------------------------------------------
// Talking to the server

/// What a command run in a container did.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Run `cmd` in a running container as its user (`docker exec [-i]`), feeding it `stdin` (then
/// closing it) if given; stdout and stderr apart, byte for byte.
pub fn exec_io(container: &str, cmd: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<ExecOutput> {
    with_docker(|docker| async move {
        let created = docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating exec {cmd:?} in {container}"))?;
        let started = docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .with_context(|| format!("starting exec {cmd:?} in {container}"))?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        else {
            bail!("exec {cmd:?} in {container} started detached");
        };
        let write = async {
            if let Some(data) = stdin {
                input.write_all(data).await?;
                input.flush().await?;
                // Half-close: the command sees the end of its input.
                input.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let read = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            while let Some(chunk) = output.next().await {
                match chunk? {
                    LogOutput::StdErr { message } => err.extend_from_slice(&message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        out.extend_from_slice(&message)
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
            Ok::<_, DockerError>((out, err))
        };
        let (written, read) = tokio::join!(write, read);
        let (stdout, stderr) = read.with_context(|| format!("reading exec {cmd:?}"))?;
        if let Err(e) = written
            && stdin.is_some()
        {
            bail!(
                "writing the input of {cmd:?} in {container}: {e}\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        // The output ends when the process does; its exit code is recorded just after.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = docker.inspect_exec(&created.id).await?;
            if let (Some(false), Some(code)) = (info.running, info.exit_code) {
                return Ok(ExecOutput {
                    code,
                    stdout,
                    stderr,
                });
            }
            if Instant::now() > deadline {
                bail!("exec {cmd:?} in {container} did not finish: {info:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// [`exec_io`] required to exit 0; its stdout.
pub fn exec_ok(container: &str, cmd: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
    let out = exec_io(container, cmd, stdin)?;
    if out.code != 0 {
        bail!(
            "{cmd:?} in {container} exited with {}: {}",
            out.code,
            out.stderr_text()
        );
    }
    Ok(out.stdout)
}

/// `psql -X -At -v ON_ERROR_STOP=1 -U postgres -d <db> -c <sql>` in `container`: the rows it
/// printed (`|` between columns, one row a line, no trailing newline); an error if psql fails.
pub fn psql(container: &str, db: &str, sql: &str) -> anyhow::Result<String> {
    let out = exec_ok(
        container,
        &[
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ],
        None,
    )?;
    Ok(String::from_utf8_lossy(&out)
        .trim_end_matches('\n')
        .to_string())
}

/// `pg_dump -U postgres -Fc <db>` in `container`: the custom-format archive (starts `PGDMP`).
pub fn pg_dump(container: &str, db: &str) -> anyhow::Result<Vec<u8>> {
    exec_ok(container, &["pg_dump", "-U", "postgres", "-Fc", db], None)
}

/// `pg_restore --list` of an archive given on stdin: its table of contents.
pub fn pg_restore_list(container: &str, archive: &[u8]) -> anyhow::Result<String> {
    let out = exec_ok(container, &["pg_restore", "--list"], Some(archive))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `pg_restore -U postgres -d <db> --no-owner --exit-on-error` of an archive given on stdin.
pub fn pg_restore(container: &str, db: &str, archive: &[u8]) -> anyhow::Result<()> {
    exec_ok(
        container,
        &[
            "pg_restore",
            "-U",
            "postgres",
            "-d",
            db,
            "--no-owner",
            "--exit-on-error",
        ],
        Some(archive),
    )?;
    Ok(())
}

/// A container's logs (stdout and stderr), for failure messages.
pub fn container_logs(container: &str) -> String {
    with_docker(|docker| async move {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(container, Some(opts));
        let mut text = String::new();
        while let Some(chunk) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
        }
        Ok(text)
    })
    .unwrap_or_else(|e| format!("(no logs: {e:#})"))
}

/// Wait (at least a minute, or [`crate::patience`]) until Docker says `container` is healthy;
/// panics with its logs if it stops or never gets there.
pub fn wait_healthy(container: &str) {
    let wait = Duration::from_secs(60).max(crate::patience());
    let deadline = Instant::now() + wait;
    loop {
        let state = crate::stack::inspect(container).state.unwrap_or_default();
        let health = state.health.as_ref().and_then(|h| h.status);
        if health == Some(HealthStatusEnum::HEALTHY) {
            return;
        }
        if state.running == Some(false) {
            panic!(
                "{container} stopped (exit code {:?}) before it was healthy; its logs:\n{}",
                state.exit_code,
                container_logs(container)
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{container} was not healthy after {wait:?} ({health:?}); its logs:\n{}",
                container_logs(container)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
