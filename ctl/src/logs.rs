//! `nococtl logs [STACK] [--host H]…`: container logs from the hosts, printed as `docker
//! compose logs` prints them — `HOST SERVICE-N | line`, the prefix padded to the longest seen
//! so far and coloured per container on a terminal (compose's palette) — or as JSON Lines.
//!
//! Lines are bytes. Into a pipe or a file they are written unchanged (`nococtl logs shop >
//! file` keeps every byte); on a terminal, control characters (escape sequences included, tab
//! excepted) and invalid UTF-8 are shown escaped (`\x1b`, `\xff`), so a container cannot drive
//! the operator's terminal.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use noco_proto::v1 as pb;

use crate::cli::LogsArgs;
use crate::client;
use crate::error::{CtlError, refused};
use crate::output::{self, Format, errln};
use crate::view::logs::LogLineView;

/// `--since`: how long ago, or an RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(SystemTime),
}

impl Since {
    /// The instant in milliseconds since the Unix epoch (at least 1: 0 would mean "all").
    pub fn unix_ms(self, now: SystemTime) -> i64 {
        let at = match self {
            Since::Ago(d) => now.checked_sub(d).unwrap_or(UNIX_EPOCH),
            Since::At(t) => t,
        };
        let ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        i64::try_from(ms).unwrap_or(i64::MAX).max(1)
    }
}

/// `--since`: a duration (`90`, `10m`, `2h`: that long ago) or an RFC 3339 time
/// (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.5+02:00`).
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(d) = noco_proto::duration::parse(text) {
        return Ok(Since::Ago(d));
    }
    parse_rfc3339(text.trim()).map(Since::At).ok_or_else(|| {
        format!(
            "{text:?} is neither a duration (90, 10m, 2h) nor an RFC 3339 time \
             (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00)"
        )
    })
}

/// An RFC 3339 time with `Z` or a `±HH:MM` offset.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    if let Some(base) = text.strip_suffix(['Z', 'z']) {
        return humantime::parse_rfc3339(&format!("{base}Z")).ok();
    }
    let split = text.len().checked_sub(6)?;
    let (base, offset) = (text.get(..split)?, text.get(split..)?.as_bytes());
    let sign: i64 = match offset.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |at: std::ops::Range<usize>| -> Option<i64> {
        let d = offset.get(at)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(d).ok()?.parse().ok()
    };
    if offset.get(3) != Some(&b':') {
        return None;
    }
    let (hours, minutes) = (digits(1..3)?, digits(4..6)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    // The time written is `offset` ahead of UTC.
    let offset = Duration::from_secs((hours * 3600 + minutes * 60).unsigned_abs());
    if sign > 0 {
        local.checked_sub(offset)
    } else {
        local.checked_add(offset)
    }
}

/// The request `logs` sends: refused without a stack or a host (every log of the fleet is
/// never what was meant).
pub fn request(args: &LogsArgs, now: SystemTime) -> Result<pb::LogsRequest, CtlError> {
    let stack = args.stack.clone().unwrap_or_default();
    if stack.is_empty() && args.hosts.is_empty() {
        return Err(CtlError::Local(
            "whose logs? give a stack (nococtl logs STACK) or a host (nococtl logs --host HOST), \
             or both"
                .into(),
        ));
    }
    Ok(pb::LogsRequest {
        stack,
        hosts: args.hosts.clone(),
        services: args.services.clone(),
        since_unix_ms: args.since.map_or(0, |s| s.unix_ms(now)),
        tail: args.tail.unwrap_or(0),
        follow: args.follow,
        grep: args.grep.clone().unwrap_or_default(),
    })
}

pub async fn run(
    args: LogsArgs,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let request = request(&args, SystemTime::now())?;
    let terminal = output::stdout_is_terminal();
    let style = Style {
        prefix: !args.no_prefix,
        timestamps: args.timestamps,
        escape: terminal,
        colour: terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    let print = async move {
        let mut printer = Printer::new(style);
        let mut resume = Resume::default();
        let mut request = request;
        let mut delay = RECONNECT_MIN;
        loop {
            let (_, mut ctl) = match client::open(path, server).await {
                Ok(c) => c,
                Err(e) if request.follow && !resume.seen.is_empty() => {
                    errln!("-- noco: cannot reach the server ({e}); retrying --");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_MAX);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ended = match ctl.logs(request.clone()).await {
                Ok(r) => {
                    let mut stream = r.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(batch)) => {
                                delay = RECONNECT_MIN;
                                let lines: Vec<LogLineView> = batch
                                    .entries
                                    .iter()
                                    .filter(|e| resume.is_new(e))
                                    .map(LogLineView::from)
                                    .collect();
                                match out {
                                    Format::Json => print_json(&lines),
                                    Format::Table => print_lines(&mut printer, &lines),
                                }
                            }
                            Ok(None) => break Ok(()),
                            Err(status) => break Err(status),
                        }
                    }
                }
                Err(status) => Err(status),
            };
            let why = match ended {
                Ok(()) if !request.follow => return Ok(()),
                // A follow ends only when the server stops: like a lost connection.
                Ok(()) => "the server ended the stream".to_string(),
                // Following, a lost connection (the server restarting, the network) is not the
                // end: reconnect and go on from the last line shown, skipping what was shown.
                Err(status) if request.follow && reconnectable(&status) => format!(
                    "the connection to the server was lost ({})",
                    status.message()
                ),
                Err(status) => return Err(refused("logs", status)),
            };
            errln!("-- noco: {why}; reconnecting --");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX);
            if !resume.seen.is_empty() {
                request.since_unix_ms = resume.since_ms().max(request.since_unix_ms);
                request.tail = 0;
            }
        }
    };
    // Ctrl-C ends the logs quietly (exit 0), as `docker compose logs -f` does.
    tokio::select! {
        result = print => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Whether `logs -f` should reconnect after this error: the transport failed or the server went
/// away, not a refusal or a bad request.
fn reconnectable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    )
}

/// What a following reader has shown, per host: the highest sequence (an agent numbers every
/// record of its host, in order) and the newest time.
#[derive(Debug, Default)]
struct Resume {
    seen: HashMap<String, (u64, i64)>,
}

impl Resume {
    /// Whether the entry is new to this reader; remembers it.
    fn is_new(&mut self, e: &pb::LogEntry) -> bool {
        let Some(r) = &e.record else {
            return true;
        };
        let (seq, newest) = self.seen.entry(e.host_id.clone()).or_insert((0, 0));
        if r.seq != 0 && r.seq <= *seq {
            return false;
        }
        *seq = (*seq).max(r.seq);
        *newest = (*newest).max(r.time_unix_nanos);
        true
    }

    /// Where a reconnect starts: the millisecond of the oldest of the hosts' newest lines shown
    /// (what was shown since then is skipped by its sequence).
    fn since_ms(&self) -> i64 {
        self.seen
            .values()
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(0)
            .div_euclid(1_000_000)
    }
}

/// One JSON object per line (JSON Lines), in one write per batch.
fn print_json(lines: &[LogLineView]) {
    let mut text = String::new();
    for v in lines.iter().filter(|v| v.has_record || v.skipped > 0) {
        text.push_str(&output::json_line(v));
        text.push('\n');
    }
    output::write_stdout_bytes(text.as_bytes());
}

/// Lines for people, in one write per batch (split where a note goes to stderr).
fn print_lines(printer: &mut Printer, lines: &[LogLineView]) {
    let mut buf = Vec::new();
    for v in lines {
        if let Some(note) = printer.render(v, &mut buf) {
            output::write_stdout_bytes(&buf);
            buf.clear();
            errln!("{note}");
        }
    }
    if !buf.is_empty() {
        output::write_stdout_bytes(&buf);
    }
}

/// How lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// `HOST SERVICE-N | ` before each line (not with `--no-prefix`).
    pub prefix: bool,
    /// The time before each line (`--timestamps`).
    pub timestamps: bool,
    /// Control characters and invalid UTF-8 shown escaped (a terminal); else bytes unchanged.
    pub escape: bool,
    /// The prefix coloured per container (a terminal, unless `NO_COLOR` is set).
    pub colour: bool,
}

/// docker compose's colours for containers, in the order it hands them out: cyan, yellow,
/// green, magenta, blue, then the same bold; never red (which reads as an error).
const PALETTE: [&str; 10] = [
    "36", "33", "32", "35", "34", "36;1", "33;1", "32;1", "35;1", "34;1",
];

/// Prints lines as `docker compose logs` does, remembering the widest prefix and each
/// container's colour.
pub struct Printer {
    style: Style,
    width: usize,
    colours: HashMap<(String, String), &'static str>,
}

impl Printer {
    pub fn new(style: Style) -> Printer {
        Printer {
            style,
            width: 0,
            colours: HashMap::new(),
        }
    }

    /// Append the line for `v` to `out`; the note for stderr, if the entry carries one (this
    /// reader fell behind and the server skipped lines).
    pub fn render(&mut self, v: &LogLineView, out: &mut Vec<u8>) -> Option<String> {
        let note = (v.skipped > 0).then(|| {
            format!(
                "-- noco: {} lines skipped: this reader fell behind --",
                v.skipped
            )
        });
        if !v.has_record {
            return note;
        }
        if self.style.prefix {
            let prefix = self.prefix(v);
            out.extend_from_slice(prefix.as_bytes());
        }
        if self.style.timestamps {
            out.extend_from_slice(v.time.as_bytes());
            out.push(b' ');
        }
        if v.is_marker() {
            out.extend_from_slice(b"-- noco: ");
            self.bytes(&v.bytes, out);
            out.extend_from_slice(b" --");
        } else {
            self.bytes(&v.bytes, out);
            if v.truncated > 0 {
                let _ = write!(Tail(out), " … [noco: {} bytes cut]", v.truncated);
            }
        }
        out.push(b'\n');
        note
    }

    fn bytes(&self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.style.escape {
            out.extend_from_slice(escape(bytes).as_bytes());
        } else {
            out.extend_from_slice(bytes);
        }
    }

    /// `HOST SERVICE-N` padded to the widest prefix so far, then ` | `, coloured.
    fn prefix(&mut self, v: &LogLineView) -> String {
        let name = prefix_name(v);
        self.width = self.width.max(name.chars().count());
        let padded = format!("{name:<width$} | ", width = self.width);
        if !self.style.colour {
            return padded;
        }
        let next = self.colours.len() % PALETTE.len();
        let colour = self
            .colours
            .entry((v.host_id.clone(), container_key(v)))
            .or_insert(PALETTE[next]);
        format!("\x1b[{colour}m{padded}\x1b[0m")
    }
}

/// What tells a container apart on its host.
fn container_key(v: &LogLineView) -> String {
    if v.container_id.is_empty() {
        format!("{}/{}/{}", v.stack, v.service, v.number)
    } else {
        v.container_id.clone()
    }
}

/// `web-1 api-2`: the host, then the container as compose names it in its own prefix.
pub fn prefix_name(v: &LogLineView) -> String {
    let container = match (v.service.as_str(), v.number) {
        ("", _) if !v.container.is_empty() => v.container.clone(),
        ("", _) => "-".to_string(),
        (service, 0) => service.to_string(),
        (service, n) => format!("{service}-{n}"),
    };
    format!("{} {container}", v.host)
}

/// A line as a terminal may show it: control characters (C0 but tab, DEL, C1) and the
/// bidirectional overrides as escapes (`\x1b`, `\u{9b}`, `\u{202e}`), bytes that are not UTF-8
/// as `\xNN`; everything else as it is.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' => out.push('\t'),
                '\0'..='\x1f' | '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// `write!` into a byte buffer.
struct Tail<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Tail<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(host: &str, service: &str, number: u32, line: &[u8]) -> LogLineView {
        LogLineView::from(&pb::LogEntry {
            host_id: format!("id-{host}"),
            host: host.into(),
            record: Some(pb::LogRecord {
                seq: 1,
                time_unix_nanos: 1_700_000_000_000_000_001,
                stack: "shop".into(),
                service: service.into(),
                number,
                container: format!("shop-{service}-{number}"),
                container_id: format!("{host}-{service}-{number}"),
                stream: pb::LogStream::Stdout.into(),
                line: line.to_vec(),
                truncated: 0,
                dropped: 0,
            }),
            skipped: 0,
        })
    }

    const PIPE: Style = Style {
        prefix: true,
        timestamps: false,
        escape: false,
        colour: false,
    };
    const TERMINAL: Style = Style {
        prefix: true,
        timestamps: false,
        escape: true,
        colour: true,
    };

    fn render(printer: &mut Printer, v: &LogLineView) -> (String, Option<String>) {
        let mut out = Vec::new();
        let note = printer.render(v, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), note)
    }

    #[test]
    fn the_prefix_is_padded_to_the_longest_seen_so_far() {
        let mut p = Printer::new(PIPE);
        let (a, _) = render(&mut p, &record("web-1", "api", 1, b"one"));
        assert_eq!(a, "web-1 api-1 | one\n");
        let (b, _) = render(&mut p, &record("web-1", "worker", 12, b"two"));
        assert_eq!(b, "web-1 worker-12 | two\n");
        // Shorter prefixes are padded to the widest one seen since.
        let (c, _) = render(&mut p, &record("web-1", "api", 1, b"three"));
        assert_eq!(c, "web-1 api-1     | three\n");
        let mut bare = record("web-2", "", 0, b"x");
        bare.container = String::new();
        assert_eq!(prefix_name(&bare), "web-2 -");
        let no_number = record("web-2", "db", 0, b"x");
        assert_eq!(prefix_name(&no_number), "web-2 db");
    }

    #[test]
    fn on_a_terminal_each_container_keeps_its_colour_from_composes_palette() {
        let mut p = Printer::new(TERMINAL);
        let (a, _) = render(&mut p, &record("web-1", "api", 1, b"a"));
        assert_eq!(a, "\x1b[36mweb-1 api-1 | \x1b[0ma\n");
        let (b, _) = render(&mut p, &record("web-1", "api", 2, b"b"));
        assert!(b.starts_with("\x1b[33m"), "{b:?}");
        let (a2, _) = render(&mut p, &record("web-1", "api", 1, b"c"));
        assert!(a2.starts_with("\x1b[36m"), "{a2:?}");
        // The same container on another host is another container.
        let (other, _) = render(&mut p, &record("web-2", "api", 1, b"d"));
        assert!(other.starts_with("\x1b[32m"), "{other:?}");
        assert!(!PALETTE.iter().any(|c| c.starts_with("31")), "never red");
        assert_eq!(PALETTE[5], "36;1");
    }

    #[test]
    fn control_characters_and_invalid_utf8_are_escaped_on_a_terminal_only() {
        assert_eq!(
            escape(b"\x1b[31mred\x1b[0m\tok"),
            "\\x1b[31mred\\x1b[0m\tok"
        );
        assert_eq!(escape(b"a\xff\xfeb"), "a\\xff\\xfeb");
        assert_eq!(escape(b"bell\x07\r\x7f"), "bell\\x07\\x0d\\x7f");
        assert_eq!(
            escape("\u{9b}2J \u{202e}txt".as_bytes()),
            "\\u{9b}2J \\u{202e}txt"
        );
        assert_eq!(escape("héllo → ✓".as_bytes()), "héllo → ✓");
        // A truncated UTF-8 sequence at the end.
        assert_eq!(escape(b"caf\xc3"), "caf\\xc3");

        let line = b"\x1b[31mred\x1b[0m \xff\xfe";
        let mut tty = Printer::new(TERMINAL);
        let (shown, _) = render(&mut tty, &record("web-1", "api", 1, line));
        assert!(
            shown.ends_with("\\x1b[31mred\\x1b[0m \\xff\\xfe\n"),
            "{shown:?}"
        );
        // Into a pipe the bytes are written unchanged.
        let mut pipe = Printer::new(PIPE);
        let mut out = Vec::new();
        pipe.render(&record("web-1", "api", 1, line), &mut out);
        assert_eq!(out, b"web-1 api-1 | \x1b[31mred\x1b[0m \xff\xfe\n");
    }

    #[test]
    fn no_prefix_timestamps_truncation_and_markers() {
        let mut p = Printer::new(Style {
            prefix: false,
            timestamps: true,
            ..PIPE
        });
        let mut long = record("web-1", "api", 1, b"xxxx");
        long.truncated = 1000;
        let (line, _) = render(&mut p, &long);
        assert_eq!(
            line,
            "2023-11-14T22:13:20.000000001Z xxxx … [noco: 1000 bytes cut]\n"
        );

        let mut p = Printer::new(PIPE);
        let mut marker = record("web-1", "api", 1, b"312 lines lost: the spool was full");
        marker.stream = pb::LogStream::Noco;
        marker.dropped = 312;
        let (line, note) = render(&mut p, &marker);
        assert_eq!(
            line,
            "web-1 api-1 | -- noco: 312 lines lost: the spool was full --\n"
        );
        assert_eq!(note, None);

        let skipped = LogLineView::from(&pb::LogEntry {
            host_id: "h1".into(),
            host: "web-1".into(),
            record: None,
            skipped: 40,
        });
        let (line, note) = render(&mut p, &skipped);
        assert_eq!(line, "");
        assert_eq!(
            note.as_deref(),
            Some("-- noco: 40 lines skipped: this reader fell behind --")
        );
    }

    #[test]
    fn a_reconnecting_reader_skips_what_it_showed_and_starts_at_the_oldest_hosts_newest_line() {
        let entry = |host: &str, seq: u64, t: i64| pb::LogEntry {
            host_id: host.into(),
            record: Some(pb::LogRecord {
                seq,
                time_unix_nanos: t,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut r = Resume::default();
        assert!(r.is_new(&entry("a", 1, 5_000_000)));
        assert!(r.is_new(&entry("a", 2, 9_000_000)));
        assert!(r.is_new(&entry("b", 1, 7_500_000)));
        assert!(!r.is_new(&entry("a", 2, 9_000_000)), "shown already");
        assert!(!r.is_new(&entry("b", 1, 7_500_000)));
        assert!(r.is_new(&entry("b", 2, 7_500_000)));
        assert_eq!(r.since_ms(), 7);
        let skipped = pb::LogEntry {
            skipped: 3,
            ..Default::default()
        };
        assert!(r.is_new(&skipped), "a skipped marker always shows");
    }

    #[test]
    fn since_is_a_duration_ago_or_an_rfc3339_time() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_since("10m").map(|s| s.unix_ms(now)),
            Ok(1_700_000_000_000 - 600_000)
        );
        assert_eq!(
            parse_since("90").map(|s| s.unix_ms(now)),
            Ok(1_700_000_000_000 - 90_000)
        );
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z").map(|s| s.unix_ms(now)),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_since("2023-11-14T22:13:20.250Z").map(|s| s.unix_ms(now)),
            Ok(1_700_000_000_250)
        );
        assert_eq!(
            parse_since("2023-11-15T00:13:20+02:00").map(|s| s.unix_ms(now)),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_since("2023-11-14T19:43:20-02:30").map(|s| s.unix_ms(now)),
            Ok(1_700_000_000_000)
        );
        // Longer ago than the epoch: everything (but never 0, which means "all" anyway).
        assert_eq!(parse_since("100000000h").map(|s| s.unix_ms(now)), Ok(1));
        for bad in [
            "yesterday",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "10x",
            "2023-11-14T22:13:20+2:00",
            "é2023-11-14T22:13:20+02:00",
        ] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.contains("is neither a duration"), "{bad}: {e}");
        }
    }
}
