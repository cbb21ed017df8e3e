//! Figures of processes from `/proc` (resident memory, CPU time, open-files limits) and whether
//! a number of sessions fits this machine's limits.

/// File descriptors (and ports) needed beyond one per session.
pub const FD_MARGIN: u64 = 256;

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

/// CPU time (user + system) a process has used, in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` start at field 3.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15: indexes 11 and 12 after field 2.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

/// The share of one core (in %) a process used over `wall`, from its CPU seconds before and
/// after ([`cpu_seconds`]).
pub fn cpu_share(
    before: Option<f64>,
    after: Option<f64>,
    wall: std::time::Duration,
) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if !wall.is_zero() => Some((a - b) / wall.as_secs_f64() * 100.0),
        _ => None,
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when that fails, the Linux default).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}
