//! Backup archive throughput against the shell tools, side by side in one run:
//!
//! - backup: `write_volumes` to a file vs `tar -cf - -C dir . | zstd -3 -q -o file`;
//! - restore: `open_stored` + `extract_volumes` vs `zstd -dc file | tar -xf - -C dir`.
//!
//! The tree (default 1 GiB) is one large file of realistic, partly compressible data (random
//! blocks mixed with log-like text) and 10,000 small files. Page caches cannot be dropped, so
//! the pairs run alternately (ours first on odd runs, theirs first on even ones), after a
//! `sync`. Prints MiB/s of content for each, the ratio ours/theirs, the machine's load
//! (/proc/loadavg) and our peak RSS (VmHWM).
//!
//! `cargo bench -p noco-agent --bench backup_archive -- [--runs N] [--size-mib N]
//! [--small-files N] [--dir DIR]` (needs `tar` and `zstd`: `apt-get install -y zstd`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use noco_agent::backup::archive::{self, ArchiveOptions};
use noco_agent::backup::extract::{self, ExtractLimits};

const MIB: u64 = 1 << 20;

struct Args {
    runs: usize,
    size_mib: u64,
    small_files: usize,
    dir: Option<PathBuf>,
    workers: Option<u32>,
    job_mib: Option<u32>,
    /// An existing tree to use instead of making one (profiling).
    src: Option<PathBuf>,
    /// Time only ours (profiling).
    only_ours: bool,
    /// Time only backups (profiling).
    only_backup: bool,
}

fn args() -> Args {
    let mut a = Args {
        runs: 3,
        size_mib: 1024,
        small_files: 10_000,
        dir: None,
        workers: None,
        job_mib: None,
        src: None,
        only_ours: false,
        only_backup: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match arg.as_str() {
            "--runs" => a.runs = value().parse().expect("--runs N"),
            "--size-mib" => a.size_mib = value().parse().expect("--size-mib N"),
            "--small-files" => a.small_files = value().parse().expect("--small-files N"),
            "--dir" => a.dir = Some(PathBuf::from(value())),
            "--zstd-workers" => a.workers = Some(value().parse().expect("--zstd-workers N")),
            "--zstd-job-mib" => a.job_mib = Some(value().parse().expect("--zstd-job-mib N")),
            "--src" => a.src = Some(PathBuf::from(value())),
            "--only-ours" => a.only_ours = true,
            "--only-backup" => a.only_backup = true,
            "--make-tree" => {
                let dir = PathBuf::from(value());
                let n = make_tree(&dir, a.size_mib, a.small_files);
                println!("made {n} bytes in {}", dir.display());
                std::process::exit(0);
            }
            // What `cargo bench` passes along.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// xorshift64*: fast, deterministic bytes.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "GET",
    "POST",
    "/api/v1/items",
    "/static/app.js",
    "200",
    "304",
    "404",
    "user",
    "session",
    "cache",
    "hit",
    "miss",
    "upstream",
    "latency_ms",
    "level=info",
    "level=warn",
    "request_id",
    "db",
    "query",
    "rows",
    "ok",
    "timeout",
    "retry",
    "worker",
    "job",
    "done",
];

/// One MiB block: random bytes (a JPEG, a compressed blob) or log-like text.
fn block(noise: &mut Noise, buf: &mut Vec<u8>) {
    buf.clear();
    if noise.next() % 100 < 45 {
        buf.resize(MIB as usize, 0);
        noise.fill(buf);
        return;
    }
    while buf.len() < MIB as usize {
        let t = 1_700_000_000 + (noise.next() % 10_000_000);
        write!(buf, "{t} ").unwrap();
        for _ in 0..(6 + noise.next() % 8) {
            buf.extend_from_slice(WORDS[(noise.next() % WORDS.len() as u64) as usize].as_bytes());
            buf.push(b' ');
        }
        writeln!(buf, "id={:x}", noise.next()).unwrap();
    }
    buf.truncate(MIB as usize);
}

/// The tree: one large file and `small` small files (in directories of 500), `size_mib` in all.
fn make_tree(root: &Path, size_mib: u64, small: usize) -> u64 {
    fs::create_dir_all(root).unwrap();
    let mut noise = Noise(0x1234_5678_9abc_def1);
    let small_total = (size_mib * MIB / 10).min(small as u64 * 20_000);
    let large = size_mib * MIB - small_total;
    let mut buf = Vec::with_capacity(MIB as usize);
    let mut f = BufWriter::new(File::create(root.join("large.bin")).unwrap());
    let mut left = large;
    while left > 0 {
        block(&mut noise, &mut buf);
        let n = left.min(MIB) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.into_inner().unwrap().sync_all().unwrap();
    let mut written = large;
    let per = if small == 0 {
        0
    } else {
        small_total / small as u64
    };
    for i in 0..small {
        let dir = root.join(format!("small/d{:03}", i / 500));
        if i % 500 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        let size = (per / 2 + noise.next() % (per + 1)) as usize;
        block(&mut noise, &mut buf);
        let start = (noise.next() % (MIB - size as u64).max(1)) as usize;
        fs::write(dir.join(format!("f{i:05}")), &buf[start..start + size]).unwrap();
        written += size as u64;
    }
    written
}

fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            total += tree_size(&e.path());
        } else if md.is_file() {
            total += md.len();
        }
    }
    total
}

fn sh(script: &str) -> Duration {
    let t = Instant::now();
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
    t.elapsed()
}

fn sync() {
    rustix::fs::sync();
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn vm_hwm() -> String {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn mibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let a = args();
    for tool in ["tar", "zstd"] {
        if Command::new(tool).arg("--version").output().is_err() {
            println!("{tool} is not installed (apt-get install -y zstd): nothing to compare with");
            return;
        }
    }
    let tmp = match &a.dir {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    println!("load before: {}", loadavg());
    let t = Instant::now();
    let (src, content) = match &a.src {
        Some(src) => (src.clone(), tree_size(src)),
        None => {
            let src = tmp.path().join("src");
            let content = make_tree(&src, a.size_mib, a.small_files);
            (src, content)
        }
    };
    sync();
    println!(
        "tree: {:.0} MiB ({} small files) made in {:.1}s; rss after making it: {}",
        content as f64 / MIB as f64,
        a.small_files,
        t.elapsed().as_secs_f64(),
        vm_hwm()
    );
    let mut opts = ArchiveOptions::default();
    if let Some(w) = a.workers {
        opts.zstd_workers = w;
    }
    if let Some(j) = a.job_mib {
        opts.zstd_job_size = j << 20;
    }
    println!(
        "ours: zstd level {}, {} workers, jobs of {} bytes (0: zstd's choice); theirs: tar | zstd -3 (zstd {})",
        opts.zstd_level,
        opts.zstd_workers,
        opts.zstd_job_size,
        String::from_utf8_lossy(
            &Command::new("zstd")
                .arg("--version")
                .output()
                .unwrap()
                .stdout
        )
        .trim()
    );

    let ours_file = tmp.path().join("ours.tar.zst");
    let theirs_file = tmp.path().join("theirs.tar.zst");
    let (mut b_ours, mut b_theirs, mut r_ours, mut r_theirs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=a.runs {
        let ours_first = run % 2 == 1;
        let backup_ours = || {
            sync();
            let t = Instant::now();
            let out = BufWriter::new(File::create(&ours_file).unwrap());
            let w = archive::write_volumes(&[("data".into(), src.clone())], out, &opts).unwrap();
            let d = t.elapsed();
            assert!(w.warnings.is_empty(), "{:?}", w.warnings);
            (d, w.stored_size)
        };
        let backup_theirs = || {
            if a.only_ours {
                return (Duration::from_secs(1), 0);
            }
            sync();
            let _ = fs::remove_file(&theirs_file);
            let d = sh(&format!(
                "tar -cf - -C '{}' . | zstd -3 -q -o '{}'",
                src.display(),
                theirs_file.display()
            ));
            (d, fs::metadata(&theirs_file).unwrap().len())
        };
        let ((bo, so), (bt, st)) = if ours_first {
            let o = backup_ours();
            (o, backup_theirs())
        } else {
            let t = backup_theirs();
            (backup_ours(), t)
        };

        let restore_ours = || {
            if a.only_backup {
                return Duration::from_secs(1);
            }
            let dir = tmp.path().join("restore-ours");
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            sync();
            let t = Instant::now();
            let plain = extract::open_stored(File::open(&ours_file).unwrap(), None).unwrap();
            let targets = BTreeMap::from([("data".to_owned(), dir.clone())]);
            let got = extract::extract_volumes(plain, &targets, &ExtractLimits::default()).unwrap();
            let d = t.elapsed();
            assert_eq!(got.content_size, content);
            d
        };
        let restore_theirs = || {
            if a.only_ours || a.only_backup {
                return Duration::from_secs(1);
            }
            let dir = tmp.path().join("restore-theirs");
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            sync();
            sh(&format!(
                "zstd -dc '{}' | tar -xf - -C '{}'",
                theirs_file.display(),
                dir.display()
            ))
        };
        let (ro, rt) = if ours_first {
            let o = restore_ours();
            (o, restore_theirs())
        } else {
            let t = restore_theirs();
            (restore_ours(), t)
        };
        let (bo, bt, ro, rt) = (
            mibps(content, bo),
            mibps(content, bt),
            mibps(content, ro),
            mibps(content, rt),
        );
        println!(
            "run {run} ({} first): backup ours {bo:.0} MiB/s ({so} bytes) theirs {bt:.0} MiB/s \
             ({st} bytes) ratio {:.2} | restore ours {ro:.0} MiB/s theirs {rt:.0} MiB/s ratio \
             {:.2} | load {}",
            if ours_first { "ours" } else { "theirs" },
            bo / bt,
            ro / rt,
            loadavg()
        );
        b_ours.push(bo);
        b_theirs.push(bt);
        r_ours.push(ro);
        r_theirs.push(rt);
    }
    let (bo, bt, ro, rt) = (
        median(b_ours),
        median(b_theirs),
        median(r_ours),
        median(r_theirs),
    );
    println!(
        "median of {}: backup ours {bo:.0} MiB/s theirs {bt:.0} MiB/s ratio {:.2}; restore ours \
         {ro:.0} MiB/s theirs {rt:.0} MiB/s ratio {:.2}",
        a.runs,
        bo / bt,
        ro / rt
    );
    println!(
        "our peak RSS (VmHWM): {}; load after: {}",
        vm_hwm(),
        loadavg()
    );
}
