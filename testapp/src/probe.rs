//! `noco-testapp probe <url> <duration-ms> <interval-ms> [<until-version>]`: a client that calls `http://<name>:<port><path>`
//! every interval for the duration, resolving the name before every request, and prints one
//! summary line `probe ok=N failed=M versions=a,b` (the distinct first words of the bodies), plus a
//! line per failure. Like ordinary HTTP clients it tries the name's next address when a
//! connection is refused; a request once sent is never retried. Tests run it inside a stack's network to prove that an update drops no request.
//!
//! A static glibc binary in a scratch image cannot use NSS, so names are resolved here: an A query
//! over UDP to the first `nameserver` of /etc/resolv.conf (Docker's embedded DNS), falling back to
//! /etc/hosts and to literal addresses.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(2);

/// `until`: once a response's version is this one, keep going for two more seconds and stop
/// (the duration is then only an upper bound).
pub fn run(url: &str, duration_ms: &str, interval_ms: &str, until: Option<&str>) -> i32 {
    let (Ok(duration), Ok(interval)) = (duration_ms.parse::<u64>(), interval_ms.parse::<u64>())
    else {
        eprintln!("probe: duration and interval are milliseconds");
        return 2;
    };
    let Some((host, port, path)) = split_url(url) else {
        eprintln!("probe: {url:?} is not http://host:port/path");
        return 2;
    };
    let mut end = Instant::now() + Duration::from_millis(duration);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut versions = BTreeSet::new();
    let mut turn = 0usize;
    while Instant::now() < end {
        turn += 1;
        match resolve(&host).and_then(|ips| call(&ips, turn, port, &host, &path)) {
            Ok(body) => {
                ok += 1;
                let version = body
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if until == Some(version.as_str()) && !versions.contains(&version) {
                    end = end.min(Instant::now() + Duration::from_secs(2));
                }
                versions.insert(version);
            }
            Err(e) => {
                failed += 1;
                println!("probe failure {turn}: {e}");
            }
        }
        std::thread::sleep(Duration::from_millis(interval));
    }
    let versions: Vec<String> = versions.into_iter().collect();
    println!(
        "probe ok={ok} failed={failed} versions={}",
        versions.join(",")
    );
    0
}

fn split_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 80),
    };
    Some((host.to_string(), port, path))
}

/// Call the first address that accepts a connection, starting at a different one every turn.
/// Like curl and Go's or Java's HTTP clients, a refused or failed connect moves on to the
/// name's next address; a request that was sent is never retried.
fn call(
    ips: &[Ipv4Addr],
    turn: usize,
    port: u16,
    host: &str,
    path: &str,
) -> Result<String, String> {
    let mut refused = Vec::new();
    for k in 0..ips.len() {
        let addr = SocketAddr::from((ips[(turn + k) % ips.len()], port));
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(stream) => return get(stream, addr, host, path),
            Err(e) => refused.push(format!("connect {addr}: {e}")),
        }
    }
    Err(refused.join("; "))
}

fn get(mut s: TcpStream, addr: SocketAddr, host: &str, path: &str) -> Result<String, String> {
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: malformed response"))?;
    if head.split(' ').nth(1) != Some("200") {
        return Err(format!(
            "{addr}: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

/// IPv4 addresses of `host`.
fn resolve(host: &str) -> Result<Vec<Ipv4Addr>, String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(vec![ip]);
    }
    if let Some(ip) = from_hosts(host) {
        return Ok(vec![ip]);
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    let server = conf
        .lines()
        .find_map(|l| l.strip_prefix("nameserver"))
        .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
        .ok_or("no IPv4 nameserver in /etc/resolv.conf")?;
    let ips = query(server, host)?;
    if ips.is_empty() {
        Err(format!("{host}: no A record"))
    } else {
        Ok(ips)
    }
}

fn from_hosts(host: &str) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/hosts").ok()?;
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let ip = words.next()?.parse::<Ipv4Addr>().ok()?;
        words.any(|w| w == host).then_some(ip)
    })
}

fn query(server: Ipv4Addr, host: &str) -> Result<Vec<Ipv4Addr>, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let id =
        NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) ^ (std::process::id() as u16);
    let mut msg = vec![
        (id >> 8) as u8,
        id as u8,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{host}: bad name"));
        }
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&msg, (server, 53))
        .map_err(|e| format!("DNS {server}: {e}"))?;
    let mut buf = [0u8; 1500];
    let n = sock
        .recv(&mut buf)
        .map_err(|e| format!("DNS {server}: {e}"))?;
    parse_answer(&buf[..n], id).ok_or_else(|| format!("DNS {server}: malformed answer for {host}"))
}

fn parse_answer(b: &[u8], id: u16) -> Option<Vec<Ipv4Addr>> {
    if b.len() < 12 || u16::from_be_bytes([b[0], b[1]]) != id {
        return None;
    }
    if b[3] & 0x0f != 0 {
        return Some(Vec::new()); // NXDOMAIN and friends
    }
    let qd = u16::from_be_bytes([b[4], b[5]]);
    let an = u16::from_be_bytes([b[6], b[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..an {
        i = skip_name(b, i)?;
        let head = b.get(i..i + 10)?;
        let (typ, len) = (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[8], head[9]]) as usize,
        );
        let data = b.get(i + 10..i + 10 + len)?;
        if typ == 1 && len == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + len;
    }
    Some(ips)
}

fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *b.get(i)? as usize;
        if len == 0 {
            return Some(i + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        i += 1 + len;
    }
}
