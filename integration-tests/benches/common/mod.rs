//! What the sessions and delivery benchmarks share: enrolling and connecting simulated hosts,
//! the admin client, process figures (RSS, open-files limits) and formatting.

#![allow(dead_code)]

use super::*;

/// Enroll one simulated host per token, with bounded concurrency; failures are reported.
pub async fn enroll_all(
    addr: &ServerAddr,
    gate: &Arc<WriteGate>,
    tokens: Vec<String>,
) -> Vec<SimHost> {
    let n = tokens.len();
    let limit = Arc::new(Semaphore::new(ENROLL_CONCURRENCY));
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let addr = addr.clone();
            let gate = gate.clone();
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
                enroll_one(&addr, &gate, token, format!("{SIM_PREFIX}{i:05}")).await
            })
        })
        .collect();
    let (hosts, failures) = collect_tasks("enrolled", tasks, phase_deadline(n)).await;
    failures.report("enrollments");
    hosts
}

/// What a simulated host says about itself.
pub fn facts(name: &str) -> pb::HostFacts {
    pb::HostFacts {
        hostname: name.to_string(),
        os: "simulated".to_string(),
        kernel: String::new(),
        arch: std::env::consts::ARCH.to_string(),
        docker_version: "unavailable: simulated host".to_string(),
        agent_version: format!("{}-bench", env!("CARGO_PKG_VERSION")),
    }
}

/// Connect with the host's certificate, say Hello, wait for Welcome (as `noco-agent` does).
pub async fn open_session(addr: &ServerAddr, host: &SimHost) -> Result<Live, String> {
    let config = Arc::new(
        tls::client_config(&host.ca_pem, &host.cert_pem, &host.key_pem)
            .map_err(|e| format!("TLS configuration: {e}"))?,
    );
    let channel = dial::connect(addr, move || config.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("connecting: {}", noco_certs::dial::describe(&e)))?;
    let (tx, rx) = mpsc::channel(16);
    let hello = pb::Hello {
        facts: Some(facts(&host.name)),
        last_generation: 0,
    };
    tx.send(pb::AgentMessage {
        msg: Some(AgentMsg::Hello(hello)),
    })
    .await
    .map_err(|_| "queueing Hello: the stream is closed".to_string())?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    let mut inbound =
        match tokio::time::timeout(CALL_TIMEOUT, client.session(ReceiverStream::new(rx))).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => return Err(format!("Session: {}", status_text(&status))),
            Err(_) => return Err(format!("Session did not answer within {CALL_TIMEOUT:?}")),
        };
    let welcome = match tokio::time::timeout(CALL_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(pb::ServerMessage {
            msg: Some(ServerMsg::Welcome(w)),
        }))) => w,
        Ok(Ok(Some(other))) => return Err(format!("expected Welcome, got {other:?}")),
        Ok(Ok(None)) => return Err("the server closed the session before Welcome".to_string()),
        Ok(Err(status)) => return Err(format!("waiting for Welcome: {}", status_text(&status))),
        Err(_) => return Err(format!("no Welcome within {CALL_TIMEOUT:?}")),
    };
    let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    Ok(Live {
        _client: client,
        tx,
        inbound,
        heartbeat,
    })
}

/// Run a blocking harness call, turning its panic (the harness asserts) into an error.
pub fn harness<T>(what: &str, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
        .map_err(|panic| anyhow!("{what}: {}", panic_text(panic.as_ref())))
}

pub fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".to_string())
}

/// A Control client as the first admin.
pub async fn admin_client(fleet: &Fleet) -> anyhow::Result<Control> {
    let cred = Credential::load(&fleet.admin_config()).context("loading the admin credential")?;
    let config = Arc::new(
        cred.client_config()
            .context("the admin credential's TLS configuration")?,
    );
    let addr = ServerAddr::parse(&fleet.url).map_err(anyhow::Error::msg)?;
    let channel = dial::connect(&addr, move || config.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| {
            anyhow!(
                "connecting to {} as the admin: {}",
                fleet.url,
                noco_certs::dial::describe(&e)
            )
        })?;
    Ok(pb::control_client::ControlClient::new(channel).max_decoding_message_size(MAX_LIST_MESSAGE))
}

pub async fn list_hosts(control: &mut Control) -> anyhow::Result<Vec<pb::Host>> {
    match tokio::time::timeout(CALL_TIMEOUT, control.list_hosts(pb::ListHostsRequest {})).await {
        Ok(Ok(resp)) => Ok(resp.into_inner().hosts),
        Ok(Err(status)) => Err(anyhow!("ListHosts: {}", status_text(&status))),
        Err(_) => Err(anyhow!("ListHosts did not answer within {CALL_TIMEOUT:?}")),
    }
}

pub fn status_text(status: &tonic::Status) -> String {
    format!(
        "{:?}: {}",
        status.code(),
        noco_certs::dial::describe(status)
    )
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Soft and hard "Max open files" of a process (`self` or a pid), from `/proc/<pid>/limits`.
pub fn open_files_limit(pid: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let mut fields = rest.split_whitespace();
    let parse = |s: &str| {
        if s == "unlimited" {
            Some(u64::MAX)
        } else {
            s.parse().ok()
        }
    };
    Some((parse(fields.next()?)?, parse(fields.next()?)?))
}

/// Raise this process's soft open-files limit to the hard one (the server, started later,
/// inherits it). Without a libc binding this uses util-linux `prlimit`; says what happened.
pub fn raise_open_files_limit() -> String {
    let Some((soft, hard)) = open_files_limit("self") else {
        return "warning: cannot read /proc/self/limits; open-files limits are not checked"
            .to_string();
    };
    if soft >= hard || hard == u64::MAX {
        return format!("open files limit (ulimit -n): {soft}");
    }
    let pid = std::process::id().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    match open_files_limit("self") {
        Some((now, _)) if raised && now == hard => {
            format!("open files limit (ulimit -n): raised from {soft} to {now}")
        }
        _ => format!(
            "warning: open files limit (ulimit -n) is {soft} (hard {hard}) and could not be raised with prlimit"
        ),
    }
}

/// Whether `n` sessions fit the open-files limit of `who` (pid or `self`) and the local port
/// range; the reason when not.
pub fn fits(n: usize, who: &str, pid: &str) -> Result<(), String> {
    let need = n as u64 + FD_MARGIN;
    match open_files_limit(pid) {
        Some((soft, _)) if soft < need => {
            return Err(format!(
                "{who} may open {soft} files (ulimit -n) but {n} sessions need about {need}: raise `ulimit -n`"
            ));
        }
        Some(_) => {}
        None => println!(
            "warning: cannot read /proc/{pid}/limits; assuming {who} can open {need} files"
        ),
    }
    if let Some(ports) = local_port_count()
        && ports < need
    {
        return Err(format!(
            "the local port range (net.ipv4.ip_local_port_range) has {ports} ports but {n} connections to one server address need about {need}"
        ));
    }
    Ok(())
}

pub fn local_port_count() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    let (low, high) = (it.next()??, it.next()??);
    Some(high.saturating_sub(low) + 1)
}

/// VmRSS of a process (`self` or a pid), in KiB.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rest = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    rest.split_whitespace().next()?.parse().ok()
}

pub fn fmt_s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn rate(count: usize, d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs > 0.0 {
        format!("{:.0}", count as f64 / secs)
    } else {
        "∞".to_string()
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Prints `<what> k/n` every few seconds while a long phase runs.
pub struct Progress {
    what: &'static str,
    total: usize,
    last: Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Self {
        Progress {
            what,
            total,
            last: Instant::now(),
        }
    }

    pub fn tick(&mut self, done: usize) {
        if self.last.elapsed() >= Duration::from_secs(5) {
            println!("  … {} {done}/{}", self.what, self.total);
            self.last = Instant::now();
        }
    }
}
