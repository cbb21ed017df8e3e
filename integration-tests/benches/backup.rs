//! Backups end to end through a real server, agent and Docker: a 1 GiB dump (a hook streaming a
//! file on stdout) made, uploaded and restored, with the agent's resident memory sampled every
//! 20 ms throughout — it must stay flat: the archive streams through bounded buffers.
//!
//! `cargo bench -p noco-integration-tests --bench backup -- [--size-mib 1024] [--runs 1]`

// A synchronous harness (threads, blocking sleeps): no async runtime here.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use noco_integration_tests::docker::{cleanup_project, testapp_image};
use noco_integration_tests::stack::unique_project;
use noco_integration_tests::{Fleet, ServerOptions, eventually, path_str};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's RSS until stopped; the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn write_noise(path: &std::path::Path, bytes: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("noise file"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..bytes / buf.len() as u64 {
        // Half random, half text: zstd has something to do.
        if i % 2 == 0 {
            for chunk in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
        } else {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = b"INSERT INTO items VALUES (42, 'some text');\n"[j % 44];
            }
        }
        f.write_all(&buf).expect("writing noise");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let size_mib = arg("--size-mib", 1024);
    let runs = arg("--runs", 1);
    noco_certs::install_crypto_provider();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "backup bench: {size_mib} MiB dump, {runs} run(s); load before: {}",
        load.trim()
    );
    let fleet = Fleet::start(ServerOptions::default());
    let prefix = format!("{}-", unique_project("nocobench-backup"));
    let project = format!("{prefix}shop");
    cleanup_project(&project);
    fleet.enroll("web-1", "role=web");
    let mut agent = fleet.run_agent_with("web-1", &["--project-prefix", &prefix]);
    fleet.wait_status("web-1", "online");
    let yaml = "services:\n  app:\n    image: ${IMAGE}\n    volumes: [\"data:/data\"]\n    healthcheck:\n      test: [\"CMD\", \"/noco-testapp\", \"health\"]\n      interval: 300ms\n      retries: 20\nvolumes:\n  data: {}\nx-noco:\n  backups:\n    db:\n      service: app\n      dump: [/noco-testapp, cat, /data/big.bin]\n      restore: [/noco-testapp, write, /data/restored.bin]\n";
    let file = fleet.path("compose.yaml");
    std::fs::write(&file, yaml).expect("compose file");
    let env = fleet.path("stack.env");
    std::fs::write(&env, format!("IMAGE={}\n", testapp_image())).expect("env file");
    fleet.ctl_ok(&[
        "stack",
        "apply",
        "shop",
        "-f",
        path_str(&file),
        "--env-file",
        path_str(&env),
        "--selector",
        "role=web",
    ]);
    eventually("the stack converged", || {
        let out = fleet.ctl(&["status", "shop", "-o", "json"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("converged")
            .then_some(())
    });
    let mountpoint = {
        let out = std::process::Command::new("docker")
            .args([
                "volume",
                "inspect",
                "--format",
                "{{.Mountpoint}}",
                &format!("{project}_data"),
            ])
            .output()
            .expect("docker volume inspect");
        std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    write_noise(&mountpoint.join("big.bin"), size_mib << 20);
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kib(pid);
    println!("agent RSS idle: {:.1} MiB", idle as f64 / 1024.0);
    for run in 1..=runs {
        let sampler = Sampler::start(pid);
        let started = Instant::now();
        let out = fleet.ctl(&["backup", "run", "shop/db", "-w", "-o", "json"]);
        let took = started.elapsed();
        let peak = sampler.finish();
        assert!(
            out.status.success(),
            "backup run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("jobs JSON");
        let id = jobs[0]["backup_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        println!(
            "run {run}: dump + compress + upload of {size_mib} MiB: {:.2} s ({:.0} MiB/s); agent RSS peak {:.1} MiB (+{:.1} MiB over idle)",
            took.as_secs_f64(),
            size_mib as f64 / took.as_secs_f64(),
            peak as f64 / 1024.0,
            (peak.saturating_sub(idle)) as f64 / 1024.0
        );
        let sampler = Sampler::start(pid);
        let started = Instant::now();
        let out = fleet.ctl(&["backup", "restore", &id, "--yes", "-w"]);
        let took = started.elapsed();
        let peak = sampler.finish();
        assert!(
            out.status.success(),
            "backup restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let restored = std::fs::metadata(mountpoint.join("restored.bin"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert_eq!(
            restored,
            size_mib << 20,
            "the restore hook got the whole dump"
        );
        println!(
            "run {run}: download + decompress + restore hook of {size_mib} MiB: {:.2} s ({:.0} MiB/s); agent RSS peak {:.1} MiB (+{:.1} MiB over idle)",
            took.as_secs_f64(),
            size_mib as f64 / took.as_secs_f64(),
            peak as f64 / 1024.0,
            (peak.saturating_sub(idle)) as f64 / 1024.0
        );
        let _ = std::fs::remove_file(mountpoint.join("restored.bin"));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after: {}", load.trim());
    agent.terminate();
    cleanup_project(&project);
}
