//! `ports:` (short and long syntax) and `expose:`, expanded to one [`Port`] per container port.

use crate::model::{Port, Protocol};
use crate::parse::{Node, Value};
use crate::read::{Reader, index, join};

/// A published port and where it was written, for clash diagnostics.
pub(crate) struct PortRef {
    pub port: Port,
    pub path: String,
    pub line: Option<usize>,
}

pub(crate) fn read_ports(r: &mut Reader, node: &Node, path: &str, service: &str) -> Vec<PortRef> {
    let mut out = Vec::new();
    let Some(items) = r.list(node, path) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let ports = match &item.value {
            Value::Map(entries) => long_port(r, entries, &p, service, item.line),
            _ => match r.text(item, &p) {
                Some(spec) => match parse_short_port(&spec) {
                    Ok(ports) => Some(ports),
                    Err(e) => {
                        r.error(
                            &p,
                            item.line,
                            format!("service {service:?}: port {spec:?}: {e}"),
                        );
                        None
                    }
                },
                None => None,
            },
        };
        for port in ports.unwrap_or_default() {
            out.push(PortRef {
                port,
                path: p.clone(),
                line: item.line,
            });
        }
    }
    out
}

fn long_port(
    r: &mut Reader,
    entries: &[(crate::parse::Key, Node)],
    path: &str,
    service: &str,
    line: Option<usize>,
) -> Option<Vec<Port>> {
    let what = format!("service {service:?}: port");
    let known = ["target", "published", "host_ip", "protocol", "mode"];
    let mut target = None;
    let mut published = None;
    let mut host_ip = None;
    let mut protocol = Protocol::Tcp;
    let mut ok = true;
    for (key, value) in r.known_entries(entries, path, &what, &known) {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "target" => target = r.text(value, &p),
            "published" => published = r.opt_text(value, &p).filter(|s| !s.is_empty()),
            "host_ip" => host_ip = r.opt_text(value, &p).filter(|s| !s.is_empty()),
            "protocol" => match r.text(value, &p).map(|s| parse_protocol(&s)) {
                Some(Ok(proto)) => protocol = proto,
                Some(Err(e)) => {
                    r.error(&p, value.line, format!("{what}: {e}"));
                    ok = false;
                }
                None => ok = false,
            },
            // `host` and `ingress` mean the same outside swarm.
            "mode" => match r.text(value, &p).as_deref() {
                Some("host" | "ingress") => {}
                Some(other) => {
                    r.error(
                        &p,
                        value.line,
                        format!("{what}: unknown mode {other:?} (expected host or ingress)"),
                    );
                    ok = false;
                }
                None => ok = false,
            },
            _ => {}
        }
    }
    let Some(target) = target else {
        r.error(path, line, format!("{what}: \"target\" is required"));
        return None;
    };
    let result = (|| {
        let targets = parse_range(&target, "container port")?;
        let published = published
            .as_deref()
            .map(|p| parse_range(p, "published port"))
            .transpose()?;
        expand(targets, published, host_ip, protocol)
    })();
    match result {
        Ok(ports) if ok => Some(ports),
        Ok(_) => None,
        Err(e) => {
            r.error(path, line, format!("{what}: {e}"));
            None
        }
    }
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        other => Err(format!(
            "unknown protocol {other:?} (expected tcp, udp or sctp)"
        )),
    }
}

fn parse_port_number(text: &str, what: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid {what} {text:?} (expected 1-65535)")),
        Ok(p) => Ok(p),
    }
}

/// `80` or `8000-8002` as an inclusive range.
fn parse_range(text: &str, what: &str) -> Result<(u16, u16), String> {
    let text = text.trim();
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_port_number(a, what)?, parse_port_number(b, what)?);
            if a > b {
                return Err(format!("invalid {what} range {text:?}: start is after end"));
            }
            Ok((a, b))
        }
        None => {
            let p = parse_port_number(text, what)?;
            Ok((p, p))
        }
    }
}

fn expand(
    targets: (u16, u16),
    published: Option<(u16, u16)>,
    host_ip: Option<String>,
    protocol: Protocol,
) -> Result<Vec<Port>, String> {
    let count = usize::from(targets.1 - targets.0) + 1;
    let port = |target: u16, published: Option<u16>| Port {
        target,
        published,
        host_ip: host_ip.clone(),
        protocol,
    };
    match published {
        None => Ok((targets.0..=targets.1).map(|t| port(t, None)).collect()),
        Some((a, b)) if usize::from(b - a) + 1 == count => Ok((targets.0..=targets.1)
            .zip(a..=b)
            .map(|(t, p)| port(t, Some(p)))
            .collect()),
        Some((a, b)) if count == 1 => Err(format!(
            "host port range {a}-{b} for one container port (Docker picks a free port in it) is not supported; publish one host port"
        )),
        Some((a, b)) => Err(format!(
            "host port range {a}-{b} and container port range {}-{} differ in length",
            targets.0, targets.1
        )),
    }
}

/// Short syntax: `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`; ports may be ranges,
/// `HOST_PORT` may be empty (ephemeral), IPv6 host addresses may be bracketed.
pub(crate) fn parse_short_port(spec: &str) -> Result<Vec<Port>, String> {
    let spec = spec.trim();
    let (main, protocol) = match spec.rsplit_once('/') {
        Some((main, proto)) => (main, parse_protocol(proto)?),
        None => (spec, Protocol::Tcp),
    };
    let (ip, rest) = if let Some(after) = main.strip_prefix('[') {
        let (ip, rest) = after
            .split_once(']')
            .ok_or("unclosed \"[\" in host address")?;
        let rest = rest
            .strip_prefix(':')
            .ok_or("expected \":\" after the bracketed host address")?;
        (Some(ip.to_owned()), rest)
    } else {
        (None, main)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (ip, parts.as_slice()) {
        (None, [container]) => (None, None, *container),
        (None, [host, container]) => (None, Some(*host), *container),
        (Some(ip), [host, container]) => (Some(ip), Some(*host), *container),
        (None, [.., host, container]) => {
            let ip = parts[..parts.len() - 2].join(":");
            (Some(ip), Some(*host), *container)
        }
        _ => return Err("expected [[host_ip:]host_port:]container_port[/protocol]".to_owned()),
    };
    let targets = parse_range(container, "container port")?;
    let published = host
        .filter(|h| !h.is_empty())
        .map(|h| parse_range(h, "published port"))
        .transpose()?;
    expand(targets, published, ip.filter(|ip| !ip.is_empty()), protocol)
}

/// `expose:` entries, normalized to `port` (tcp) or `port/udp`, ranges expanded.
pub(crate) fn read_expose(r: &mut Reader, node: &Node, path: &str, service: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(items) = r.list(node, path) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(spec) = r.text(item, &p) else {
            continue;
        };
        let parsed = (|| {
            let (range, protocol) = match spec.rsplit_once('/') {
                Some((range, proto)) => (range, parse_protocol(proto)?),
                None => (spec.as_str(), Protocol::Tcp),
            };
            let (a, b) = parse_range(range, "port")?;
            Ok::<_, String>((a..=b).map(move |port| match protocol {
                Protocol::Tcp => port.to_string(),
                other => format!("{port}/{}", other.as_str()),
            }))
        })();
        match parsed {
            Ok(ports) => out.extend(ports),
            Err(e) => r.error(
                &p,
                item.line,
                format!("service {service:?}: expose {spec:?}: {e}"),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(
        host_ip: Option<&str>,
        published: Option<u16>,
        target: u16,
        protocol: Protocol,
    ) -> Port {
        Port {
            target,
            published,
            host_ip: host_ip.map(str::to_owned),
            protocol,
        }
    }

    #[test]
    fn short_port_syntax() {
        use Protocol::*;
        let cases: Vec<(&str, Vec<Port>)> = vec![
            ("80", vec![port(None, None, 80, Tcp)]),
            ("8080:80", vec![port(None, Some(8080), 80, Tcp)]),
            (
                "127.0.0.1:8080:80/udp",
                vec![port(Some("127.0.0.1"), Some(8080), 80, Udp)],
            ),
            (
                "127.0.0.1::80",
                vec![port(Some("127.0.0.1"), None, 80, Tcp)],
            ),
            ("53:53/sctp", vec![port(None, Some(53), 53, Sctp)]),
            (
                "[::1]:8080:80",
                vec![port(Some("::1"), Some(8080), 80, Tcp)],
            ),
            ("::1:8080:80", vec![port(Some("::1"), Some(8080), 80, Tcp)]),
            (
                "8000-8002:8000-8002",
                vec![
                    port(None, Some(8000), 8000, Tcp),
                    port(None, Some(8001), 8001, Tcp),
                    port(None, Some(8002), 8002, Tcp),
                ],
            ),
            (
                "9000-9001",
                vec![port(None, None, 9000, Tcp), port(None, None, 9001, Tcp)],
            ),
            (
                "7000-7001:8000-8001/udp",
                vec![
                    port(None, Some(7000), 8000, Udp),
                    port(None, Some(7001), 8001, Udp),
                ],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_short_port(spec), Ok(want), "{spec}");
        }
        let bad = [
            "",
            "x",
            "0",
            "70000",
            "80/xyz",
            "8000-8010:80",
            "8000-8001:80-82",
            "1:2:3:",
            "[::1:80",
            "9-8",
            "a:80",
        ];
        for spec in bad {
            assert!(
                parse_short_port(spec).is_err(),
                "{spec:?} should be refused"
            );
        }
    }
}
