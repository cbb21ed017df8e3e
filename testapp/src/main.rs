//! `noco-testapp`: the workload of noco's Docker tests.
//!
//! The test machines have a Docker engine but no image registry, so the tests build their own
//! image: this program, linked statically (`RUSTFLAGS="-C target-feature=+crt-static"`), alone
//! in a `FROM scratch` image (see `integration-tests/src/docker.rs`). It is std only, has no
//! dependencies and never panics on bad input.
//!
//! # Configuration (environment variables)
//!
//! | variable        | default | meaning                                                       |
//! |-----------------|---------|---------------------------------------------------------------|
//! | `PORT`          | `8080`  | TCP port to serve on, on `0.0.0.0` (`0`: any free port)        |
//! | `VERSION`       | `dev`   | what `GET /version` reports                                   |
//! | `DATA_DIR`      | `/data` | directory of `/file/<name>` and `WRITE_FILE`                  |
//! | `FAIL_HEALTH`   | unset   | `1` (or `true`): `/health` answers 500 from the start         |
//! | `HEALTHY_AFTER` | `0`     | milliseconds after start during which `/health` answers 500   |
//! | `START_DELAY`   | `0`     | milliseconds to sleep before listening                        |
//! | `EXIT_AFTER`    | unset   | exit this many milliseconds after start (`0`: at once, before listening) |
//! | `EXIT_CODE`     | `0`     | the exit code for `EXIT_AFTER`                                |
//! | `WRITE_FILE`    | unset   | `<name>=<content>`: write that file into `DATA_DIR` at start (before `EXIT_AFTER=0` exits) |
//! | `LOG_EVERY_MS`  | unset   | print `line <k>` on stdout every this many milliseconds from start (≥ 1): line k at k × n ms |
//! | `LOG_RATE`      | unset   | instead, a flood: this many numbered lines per second (`0`: as fast as possible), written in batches |
//! | `LOG_COUNT`     | unset   | with `LOG_EVERY_MS` or `LOG_RATE`: stop after this many lines (default: never) |
//! | `LOG_PAD`       | `0`     | with `LOG_EVERY_MS` or `LOG_RATE`: pad each line with spaces to this many bytes (at most 8 MiB) |
//!
//! Numbered lines read `line 00000001`, `line 00000002`, … (k from 1, at least 8 digits; a
//! padded one ends in spaces, so trimming it leaves the number), each whole (a batch never
//! splits one). An invalid value is reported on stderr and the program exits with code 2 (so is
//! `LOG_EVERY_MS` with `LOG_RATE`, and `LOG_COUNT` or `LOG_PAD` with neither).
//!
//! # HTTP/1.1 API
//!
//! A thread per connection (at most 256 at once), keep-alive, request heads of at most 100
//! lines of 8 KiB, bodies of at most 1 MiB (`Content-Length` only; chunked bodies get 501).
//! Bodies are plain text without a trailing newline.
//!
//! - `GET /health`: 200 `ok`, or 500 `unhealthy` (see `FAIL_HEALTH`, `HEALTHY_AFTER`, `/fail`);
//! - `GET /version`: 200 `<VERSION> <hostname>` (hostname from `HOSTNAME`, else `/etc/hostname`);
//! - `GET /env/<NAME>`: 200 with the variable's value, 404 if unset;
//! - `GET /file/<name>`: 200 with the contents of `$DATA_DIR/<name>`, 404 if missing;
//! - `PUT /file/<name>` with a body: writes `$DATA_DIR/<name>` (creating `DATA_DIR`), 200;
//! - `GET /read?path=<absolute path>`: 200 with the contents of any file, 404 if missing (how
//!   tests read a mounted secret or config);
//! - `GET /stat?path=<absolute path>`: 200 `mode=0400 uid=0 gid=0 size=9 writable=false`, 404 if
//!   missing; `writable` says whether the file could be opened for writing (nothing is written:
//!   `false` for root means a read-only mount);
//! - `GET /fail`: `/health` answers 500 from now on;
//! - `GET /exit/<code>`: answers 200, then exits with `<code>` (0..=255);
//! - `GET /emit/<kind>`: writes one line (the kind's bytes and a newline), answers 200
//!   `wrote <n> bytes to stdout` (or stderr): `invalid-utf8` a line with the bytes `ff fe` in the
//!   middle (`invalid utf-8: \xff\xfe end`), `ansi` a line with an escape sequence
//!   (`ansi: \x1b[31mred\x1b[0m end`), `long?bytes=N` N bytes of `x` (N at most 8 MiB),
//!   `line?text=<text>` the percent-decoded text on stdout (any bytes: `%ff` is the byte ff, and
//!   `%0a` starts another line), `stderr?text=<text>` the same on stderr,
//!   `lines?count=N[&tag=T][&pad=P]` N numbered lines at once, as fast as they can be written
//!   (`T 00000001` … `T <N>`, tag `line` by default, padded with spaces to P bytes; N at most
//!   10,000,000 and at most 1 GiB in all), answering once they are written; a bad or missing
//!   parameter is 400, an unknown kind 404;
//! - `GET /alloc/<MiB>`: allocates that many MiB more (at most 4096 at once), writes every page
//!   so the memory is really used, keeps it for the life of the process, and answers 200
//!   `holding <total> MiB`; 400 for a bad number, 500 when the allocation fails;
//! - `GET /`: 200 `noco-testapp <VERSION>`.
//!
//! `<name>` is a single path segment (no `/`, not `.` or `..`). Every request is logged on
//! stdout as one line `<peer> <method> <target> <status> <body bytes>`; the startup line is
//! `noco-testapp listening on 0.0.0.0:<port> version <VERSION>`.
//!
//! # Hook modes
//!
//! For backup tests: `noco-testapp cat <path>` writes a file to stdout (a dump hook),
//! `noco-testapp write <path>` replaces a file with stdin (a restore hook), and
//! `noco-testapp fail <code> <message>` prints the message on stderr and exits with the code.
//!
//! # Health-check mode
//!
//! `noco-testapp health [port]` (port default: `PORT`, else 8080) GETs
//! `http://127.0.0.1:<port>/health`, prints the status line and exits 0 on 200, 1 otherwise,
//! so a scratch image (no shell, no curl) can check itself:
//! `healthcheck: { test: ["CMD", "/noco-testapp", "health"] }`.
//!
//! # Signals
//!
//! As PID 1 in a container, a process without a handler is not killed by SIGTERM. SIGTERM and
//! SIGINT are therefore handled, gracefully: connections already queued are accepted and served,
//! the listener is closed (new connections are refused), requests in flight finish (at most
//! 5 s), then the program exits 0.

// Synchronous by design (a thread per connection; timers are sleeping threads): blocking
// sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

mod probe;

use std::fmt::Display;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_BODY: usize = 1 << 20;
const MAX_LINE: usize = 8 << 10;
const MAX_HEAD_LINES: usize = 100;
const MAX_CONNECTIONS: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest line `/emit/long` writes.
const MAX_EMIT: usize = 8 << 20;
/// The most `/alloc` takes at once, in MiB.
const MAX_ALLOC_MIB: usize = 4096;
/// The most numbered lines written at once.
const MAX_LOG_BATCH: u64 = 4096;
/// The most lines one `/emit/lines` writes, and the most bytes.
const MAX_EMIT_LINES: u64 = 10_000_000;
const MAX_EMIT_LINES_BYTES: u64 = 1 << 30;

const USAGE: &str =
    "usage: noco-testapp            serve HTTP (configured by environment variables)
       noco-testapp health [port]  GET 127.0.0.1:<port>/health; exit 0 on 200, else 1
       noco-testapp probe <url> <duration-ms> <interval-ms> [<until-version>]   call <url> repeatedly, print a summary
       noco-testapp cat <path>     copy a file to stdout (a dump hook)
       noco-testapp write <path>   copy stdin into a file, replacing it whole (a restore hook)
       noco-testapp fail <code> <message>   print the message on stderr and exit with the code";

fn main() {
    signals::install();
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("?")).collect();
    match args.as_slice() {
        [] => serve(),
        ["health"] => exit(health(None)),
        ["health", port] => exit(health(Some(port))),
        ["probe", url, duration, interval] => exit(probe::run(url, duration, interval, None)),
        ["probe", url, duration, interval, until] => {
            exit(probe::run(url, duration, interval, Some(until)))
        }
        ["cat", path] => exit(hook_result(copy_file_out(path), "cat")),
        ["write", path] => exit(hook_result(copy_stdin_into(path), "write")),
        ["fail", code, message] => {
            eprintln!("{message}");
            exit(code.parse().unwrap_or(1))
        }
        _ => {
            eprintln!("{USAGE}");
            exit(2)
        }
    }
}

/// Hooks' exit: 0, or 1 with the error on stderr.
fn hook_result(r: io::Result<u64>, what: &str) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{what}: {e}");
            1
        }
    }
}

fn copy_file_out(path: &str) -> io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut out = io::stdout().lock();
    let n = io::copy(&mut f, &mut out)?;
    out.flush()?;
    Ok(n)
}

fn copy_stdin_into(path: &str) -> io::Result<u64> {
    let tmp = format!("{path}.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    let n = io::copy(&mut io::stdin().lock(), &mut f)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(n)
}

/// One line on stdout; a closed stdout is not worth dying for.
fn log(line: impl Display) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

fn fatal(code: i32, what: impl Display) -> ! {
    eprintln!("noco-testapp: {what}");
    exit(code)
}

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
    port: u16,
    version: String,
    data_dir: PathBuf,
    fail_health: bool,
    healthy_after: Duration,
    start_delay: Duration,
    exit_after: Option<Duration>,
    exit_code: i32,
    write_file: Option<(String, String)>,
    /// Numbered lines on stdout, and how many (None: forever).
    log_pace: Option<Pace>,
    log_count: Option<u64>,
    /// Numbered lines are padded with spaces to this many bytes.
    log_pad: usize,
}

/// How fast numbered lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Line k at k × the interval after start.
    Every(Duration),
    /// This many lines per second (0: as fast as possible).
    Rate(u64),
}

/// A set, non-empty variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parsed<T: FromStr>(name: &str) -> Result<Option<T>, String> {
    match var(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid {name}={v:?}")),
    }
}

fn millis(name: &str) -> Result<Option<Duration>, String> {
    Ok(parsed::<u64>(name)?.map(Duration::from_millis))
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let fail_health = match var("FAIL_HEALTH").as_deref() {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(v) => return Err(format!("invalid FAIL_HEALTH={v:?} (use 1 or 0)")),
        };
        let write_file = match var("WRITE_FILE") {
            None => None,
            Some(spec) => match spec.split_once('=') {
                Some((name, content)) if valid_name(name) => {
                    Some((name.to_string(), content.to_string()))
                }
                _ => {
                    return Err(format!(
                        "invalid WRITE_FILE={spec:?} (use <name>=<content>)"
                    ));
                }
            },
        };
        let exit_code = parsed::<i32>("EXIT_CODE")?.unwrap_or(0);
        if !(0..=255).contains(&exit_code) {
            return Err(format!("invalid EXIT_CODE={exit_code} (0..=255)"));
        }
        let log_pace = match (millis("LOG_EVERY_MS")?, parsed::<u64>("LOG_RATE")?) {
            (Some(every), None) if every.is_zero() => {
                return Err("invalid LOG_EVERY_MS=0 (at least 1; LOG_RATE=0 floods)".into());
            }
            (Some(every), None) => Some(Pace::Every(every)),
            (None, Some(rate)) => Some(Pace::Rate(rate)),
            (None, None) => None,
            (Some(_), Some(_)) => return Err("set LOG_EVERY_MS or LOG_RATE, not both".into()),
        };
        let log_count = parsed::<u64>("LOG_COUNT")?;
        if log_count.is_some() && log_pace.is_none() {
            return Err("LOG_COUNT needs LOG_EVERY_MS or LOG_RATE".into());
        }
        let log_pad = parsed::<usize>("LOG_PAD")?;
        match log_pad {
            Some(_) if log_pace.is_none() => {
                return Err("LOG_PAD needs LOG_EVERY_MS or LOG_RATE".into());
            }
            Some(pad) if pad > MAX_EMIT => {
                return Err(format!("invalid LOG_PAD={pad} (at most {MAX_EMIT})"));
            }
            _ => {}
        }
        Ok(Config {
            log_pace,
            log_count,
            log_pad: log_pad.unwrap_or(0),
            port: parsed("PORT")?.unwrap_or(8080),
            version: var("VERSION").unwrap_or_else(|| "dev".to_string()),
            data_dir: var("DATA_DIR").map_or_else(|| PathBuf::from("/data"), PathBuf::from),
            fail_health,
            healthy_after: millis("HEALTHY_AFTER")?.unwrap_or_default(),
            start_delay: millis("START_DELAY")?.unwrap_or_default(),
            exit_after: millis("EXIT_AFTER")?,
            exit_code,
            write_file,
        })
    }
}

fn hostname() -> String {
    var("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A file name in `DATA_DIR`: one path segment.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn write_data_file(dir: &Path, name: &str, content: &[u8]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), content)
}

// ---------------------------------------------------------------------------------------------
// The server

struct App {
    config: Config,
    hostname: String,
    started: Instant,
    failed: AtomicBool,
    connections: AtomicUsize,
    /// What `/alloc` holds.
    held: Mutex<Vec<Vec<u8>>>,
}

impl App {
    fn healthy(&self) -> bool {
        !self.failed.load(Ordering::Relaxed) && self.started.elapsed() >= self.config.healthy_after
    }
}

fn serve() {
    let started = Instant::now();
    let config = Config::from_env().unwrap_or_else(|e| fatal(2, e));

    if let Some((name, content)) = &config.write_file {
        if let Err(e) = write_data_file(&config.data_dir, name, content.as_bytes()) {
            fatal(1, format!("WRITE_FILE {name}: {e}"));
        }
        log(format_args!(
            "wrote {}",
            config.data_dir.join(name).display()
        ));
    }

    if let Some(after) = config.exit_after {
        let code = config.exit_code;
        if after.is_zero() {
            log(format_args!("exiting with code {code} (EXIT_AFTER=0)"));
            exit(code);
        }
        let timer = std::thread::Builder::new()
            .name("exit-after".into())
            .spawn(move || {
                std::thread::sleep(after);
                log(format_args!(
                    "exiting with code {code} (EXIT_AFTER={})",
                    after.as_millis()
                ));
                exit(code);
            });
        if let Err(e) = timer {
            fatal(1, format!("starting the EXIT_AFTER timer: {e}"));
        }
    }

    if let Some(pace) = config.log_pace {
        let (count, pad) = (config.log_count, config.log_pad);
        let writer = std::thread::Builder::new()
            .name("log-lines".into())
            .spawn(move || log_lines(started, pace, count, pad));
        if let Err(e) = writer {
            fatal(1, format!("starting the LOG_EVERY_MS/LOG_RATE writer: {e}"));
        }
    }

    if !config.start_delay.is_zero() {
        log(format_args!(
            "delaying start by {} ms (START_DELAY)",
            config.start_delay.as_millis()
        ));
        std::thread::sleep(config.start_delay);
    }

    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], config.port)))
        .unwrap_or_else(|e| fatal(1, format!("listening on 0.0.0.0:{}: {e}", config.port)));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(config.port);
    log(format_args!(
        "noco-testapp listening on 0.0.0.0:{port} version {}",
        config.version
    ));

    let app = Arc::new(App {
        config,
        hostname: hostname(),
        started,
        failed: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
        held: Mutex::new(Vec::new()),
    });
    app.failed.store(app.config.fail_health, Ordering::Relaxed);

    signals::set_listener(&listener);
    // Polling accept, so that on SIGTERM every connection already queued is accepted and served
    // before the listener closes (closing a listener resets what is still in its queue).
    if let Err(e) = listener.set_nonblocking(true) {
        fatal(1, format!("making the listener non-blocking: {e}"));
    }
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if signals::stopping() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                log(format_args!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        if app.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            app.connections.fetch_sub(1, Ordering::SeqCst);
            log("too many connections: closing a new one");
            continue;
        }
        let guard = ConnectionSlot(Arc::clone(&app));
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || handle_connection(&guard.0, stream));
        if let Err(e) = spawned {
            // The closure (and its slot) was dropped with the error.
            log(format_args!("spawning a connection thread: {e}"));
        }
    }
    drop(listener);
    // SIGTERM: the queue was drained and the listener closed, so new connections are refused
    // (clients try the service's other addresses); requests in flight finish, then exit 0.
    let deadline = Instant::now() + Duration::from_secs(5);
    let open = app.connections.load(Ordering::SeqCst);
    log(format_args!(
        "terminating: draining {open} open connections"
    ));
    while app.connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    log("terminated, exit 0");
    exit(0);
}

/// Frees a connection slot when the connection's thread ends, however it ends.
struct ConnectionSlot(Arc<App>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    body: Vec<u8>,
}

enum BadRequest {
    /// The connection failed or timed out, or the peer closed it mid-request: just close.
    Io,
    /// Answer with this status, then close.
    Status(u16, &'static str),
}

struct Response {
    status: u16,
    body: Vec<u8>,
    /// Exit the process with this code once the response is sent.
    exit: Option<i32>,
}

impl Response {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            body: body.into(),
            exit: None,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn handle_connection(app: &App, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let (request, response) = match read_request(&mut reader, &mut writer) {
            Ok(Some(req)) => {
                let resp = route(app, &req);
                (Some(req), resp)
            }
            Ok(None) | Err(BadRequest::Io) => return,
            Err(BadRequest::Status(status, msg)) => (None, Response::new(status, msg)),
        };
        let keep_alive = request.as_ref().is_some_and(|r| r.keep_alive)
            && response.exit.is_none()
            && !signals::stopping();
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: {}\r\n\r\n",
            response.status,
            reason(response.status),
            response.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        let sent = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(&response.body))
            .and_then(|()| writer.flush());
        match &request {
            Some(r) => log(format_args!(
                "{peer} {} {} {} {}",
                r.method,
                r.target,
                response.status,
                response.body.len()
            )),
            None => log(format_args!(
                "{peer} - - {} {}",
                response.status,
                response.body.len()
            )),
        }
        if let Some(code) = response.exit {
            let _ = writer.shutdown(Shutdown::Both);
            log(format_args!("exiting with code {code} (/exit)"));
            exit(code);
        }
        if sent.is_err() {
            return;
        }
        if !keep_alive {
            linger_close(&mut reader, &writer);
            return;
        }
    }
}

/// Close after sending: half-close, then drain what the peer still sends for a moment, so
/// unread request bytes do not turn the close into a reset that loses the response.
fn linger_close(reader: &mut BufReader<TcpStream>, writer: &TcpStream) {
    let _ = writer.shutdown(Shutdown::Write);
    let _ = writer.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = io::copy(&mut reader.take(4 * MAX_BODY as u64), &mut io::sink());
}

/// Read one line of at most [`MAX_LINE`] bytes, without its line ending, into `buf`. `Ok(false)`
/// on a clean end of stream.
fn read_line(reader: &mut BufReader<TcpStream>, buf: &mut Vec<u8>) -> Result<bool, BadRequest> {
    buf.clear();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|_| BadRequest::Io)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > MAX_LINE {
            BadRequest::Status(431, "request line or header too long")
        } else {
            BadRequest::Io
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(true)
}

/// Read one request; `Ok(None)` when the peer closed the connection between requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<Option<Request>, BadRequest> {
    let mut line = Vec::new();
    // Tolerate empty lines before a request (RFC 9112 section 2.2).
    loop {
        if !read_line(reader, &mut line)? {
            return Ok(None);
        }
        if !line.is_empty() {
            break;
        }
    }
    let request_line = std::str::from_utf8(&line)
        .map_err(|_| BadRequest::Status(400, "request line not UTF-8"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Status(400, "malformed request line"));
    };
    if method.is_empty() || !target.starts_with('/') {
        return Err(BadRequest::Status(400, "malformed request line"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(BadRequest::Status(505, "HTTP/1.0 and HTTP/1.1 only")),
    };
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        keep_alive: !http10,
        body: Vec::new(),
    };

    let mut content_length = 0usize;
    let mut expect_continue = false;
    let mut lines = 0;
    loop {
        if !read_line(reader, &mut line)? {
            return Err(BadRequest::Io);
        }
        if line.is_empty() {
            break;
        }
        lines += 1;
        if lines > MAX_HEAD_LINES {
            return Err(BadRequest::Status(431, "too many header lines"));
        }
        let text = String::from_utf8_lossy(&line);
        let Some((name, value)) = text.split_once(':') else {
            return Err(BadRequest::Status(400, "malformed header line"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .parse()
                .map_err(|_| BadRequest::Status(400, "invalid content-length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(BadRequest::Status(
                501,
                "transfer-encoding is not supported",
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                request.keep_alive = false;
            } else if value.contains("keep-alive") {
                request.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    if content_length > MAX_BODY {
        return Err(BadRequest::Status(413, "body larger than 1 MiB"));
    }
    if content_length > 0 {
        if expect_continue && !http10 {
            writer
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|_| BadRequest::Io)?;
        }
        request.body = vec![0; content_length];
        reader
            .read_exact(&mut request.body)
            .map_err(|_| BadRequest::Io)?;
    }
    Ok(Some(request))
}

fn route(app: &App, req: &Request) -> Response {
    let path = req
        .target
        .split_once('?')
        .map_or(req.target.as_str(), |(p, _)| p);
    let get = req.method == "GET";
    let not_allowed = || Response::new(405, "method not allowed");

    if let Some(name) = path.strip_prefix("/env/") {
        if !get {
            return not_allowed();
        }
        return match std::env::var_os(name) {
            Some(v) if !name.is_empty() => Response::new(200, v.to_string_lossy().into_owned()),
            _ => Response::new(404, "not set"),
        };
    }
    if let Some(name) = path.strip_prefix("/file/") {
        if !valid_name(name) {
            return Response::new(400, "invalid file name");
        }
        let dir = &app.config.data_dir;
        return match req.method.as_str() {
            "GET" => match std::fs::read(dir.join(name)) {
                Ok(content) => Response::new(200, content),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Response::new(404, "no such file"),
                Err(e) => Response::new(500, format!("reading {name}: {e}")),
            },
            "PUT" => match write_data_file(dir, name, &req.body) {
                Ok(()) => Response::new(200, format!("wrote {} bytes", req.body.len())),
                Err(e) => Response::new(500, format!("writing {name}: {e}")),
            },
            _ => not_allowed(),
        };
    }
    if path == "/read" || path == "/stat" {
        if !get {
            return not_allowed();
        }
        return match query_param(&req.target, "path") {
            Some(file) if file.starts_with('/') => file_route(path, &file),
            _ => Response::new(400, "give ?path=<absolute path>"),
        };
    }
    if let Some(code) = path.strip_prefix("/exit/") {
        if !get {
            return not_allowed();
        }
        return match code.parse::<i32>() {
            Ok(code) if (0..=255).contains(&code) => Response {
                exit: Some(code),
                ..Response::new(200, format!("exiting with code {code}"))
            },
            _ => Response::new(400, "exit code must be 0..=255"),
        };
    }
    if let Some(kind) = path.strip_prefix("/emit/") {
        if !get {
            return not_allowed();
        }
        return emit(kind, &req.target);
    }
    if let Some(mib) = path.strip_prefix("/alloc/") {
        if !get {
            return not_allowed();
        }
        return alloc(app, mib);
    }
    let response = match path {
        "/" => Response::new(200, format!("noco-testapp {}", app.config.version)),
        "/health" if app.healthy() => Response::new(200, "ok"),
        "/health" => Response::new(500, "unhealthy"),
        "/version" => Response::new(200, format!("{} {}", app.config.version, app.hostname)),
        "/fail" => {
            if get {
                app.failed.store(true, Ordering::Relaxed);
            }
            Response::new(200, "/health fails from now on")
        }
        _ => return Response::new(404, "not found"),
    };
    if get { response } else { not_allowed() }
}

/// `/read` and `/stat` of an absolute path.
fn file_route(route: &str, file: &str) -> Response {
    let missing = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    if route == "/read" {
        return match std::fs::read(file) {
            Ok(content) => Response::new(200, content),
            Err(e) if missing(&e) => Response::new(404, "no such file"),
            Err(e) => Response::new(500, format!("reading {file}: {e}")),
        };
    }
    match std::fs::metadata(file) {
        Ok(meta) => {
            #[cfg(unix)]
            let (mode, uid, gid) = {
                use std::os::unix::fs::MetadataExt;
                (meta.mode() & 0o7777, meta.uid(), meta.gid())
            };
            #[cfg(not(unix))]
            let (mode, uid, gid) = (0, 0, 0);
            let writable = std::fs::OpenOptions::new().write(true).open(file).is_ok();
            Response::new(
                200,
                format!(
                    "mode={mode:04o} uid={uid} gid={gid} size={} writable={writable}",
                    meta.len()
                ),
            )
        }
        Err(e) if missing(&e) => Response::new(404, "no such file"),
        Err(e) => Response::new(500, format!("inspecting {file}: {e}")),
    }
}

/// `/emit/<kind>`: one line on stdout or stderr.
fn emit(kind: &str, target: &str) -> Response {
    let (mut line, stderr) = match kind {
        "invalid-utf8" => (b"invalid utf-8: \xff\xfe end".to_vec(), false),
        "ansi" => (b"ansi: \x1b[31mred\x1b[0m end".to_vec(), false),
        "long" => match query_param(target, "bytes").map(|n| n.parse::<usize>()) {
            Some(Ok(n)) if n <= MAX_EMIT => (vec![b'x'; n], false),
            _ => return Response::new(400, format!("give ?bytes=N, N at most {MAX_EMIT}")),
        },
        "lines" => return emit_lines(target),
        "line" | "stderr" => match query_bytes(target, "text") {
            Some(text) => (text, kind == "stderr"),
            None => return Response::new(400, "give ?text=<percent-encoded text>"),
        },
        _ => {
            return Response::new(
                404,
                "unknown kind: use invalid-utf8, ansi, long?bytes=N, line?text=…, stderr?text=…",
            );
        }
    };
    line.push(b'\n');
    let written = if stderr {
        let mut err = io::stderr().lock();
        err.write_all(&line).and_then(|()| err.flush())
    } else {
        let mut out = io::stdout().lock();
        out.write_all(&line).and_then(|()| out.flush())
    };
    let stream = if stderr { "stderr" } else { "stdout" };
    match written {
        Ok(()) => Response::new(200, format!("wrote {} bytes to {stream}", line.len())),
        Err(e) => Response::new(500, format!("writing to {stream}: {e}")),
    }
}

/// `/alloc/<MiB>`: that many MiB more, every page written, held until the process ends.
fn alloc(app: &App, mib: &str) -> Response {
    let mib = match mib.parse::<usize>() {
        Ok(n) if n <= MAX_ALLOC_MIB => n,
        _ => {
            return Response::new(
                400,
                format!("give MiB as a number, at most {MAX_ALLOC_MIB}"),
            );
        }
    };
    let bytes = mib << 20;
    let mut block: Vec<u8> = Vec::new();
    if let Err(e) = block.try_reserve_exact(bytes) {
        return Response::new(500, format!("allocating {mib} MiB: {e}"));
    }
    // Writing every byte makes the kernel back every page: the memory is used, not promised.
    block.resize(bytes, 0xa5);
    let mut held = app.held.lock().unwrap_or_else(|p| p.into_inner());
    held.push(block);
    let total: usize = held.iter().map(Vec::len).sum();
    Response::new(200, format!("holding {} MiB", total >> 20))
}

/// `/emit/lines?count=N&tag=T&pad=P`: N numbered lines on stdout, as fast as they go.
fn emit_lines(target: &str) -> Response {
    let number = |name: &str| query_param(target, name).map(|v| v.parse::<u64>());
    let count = match number("count") {
        Some(Ok(n)) if n <= MAX_EMIT_LINES => n,
        _ => {
            return Response::new(400, format!("give ?count=N, N at most {MAX_EMIT_LINES}"));
        }
    };
    let pad = match number("pad") {
        None => 0,
        Some(Ok(p)) if p <= MAX_EMIT as u64 => p as usize,
        Some(_) => return Response::new(400, format!("pad is at most {MAX_EMIT} bytes")),
    };
    let tag = query_bytes(target, "tag").unwrap_or_else(|| b"line".to_vec());
    let longest = (tag.len() + 1 + 20).max(pad) as u64 + 1;
    if count.saturating_mul(longest) > MAX_EMIT_LINES_BYTES {
        return Response::new(400, "at most 1 GiB of lines at once");
    }
    let mut buf = Vec::new();
    let mut written = 0u64;
    let mut next = 1;
    while next <= count {
        let last = count.min(next + MAX_LOG_BATCH - 1);
        batch(&tag, next, last, pad, &mut buf);
        let mut out = io::stdout().lock();
        if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
            return Response::new(500, format!("writing to stdout: {e}"));
        }
        written += buf.len() as u64;
        next = last + 1;
    }
    Response::new(
        200,
        format!("wrote {count} lines ({written} bytes) to stdout"),
    )
}

/// `line 00000001`: the k-th numbered line with its tag, padded with spaces to `pad` bytes,
/// and its newline.
fn push_numbered(buf: &mut Vec<u8>, tag: &[u8], k: u64, pad: usize) {
    let start = buf.len();
    buf.extend_from_slice(tag);
    let _ = write!(buf, " {k:08}");
    if buf.len() - start < pad {
        buf.resize(start + pad, b' ');
    }
    buf.push(b'\n');
}

/// When line `k` is due, after start.
fn due_at(pace: Pace, k: u64) -> Duration {
    let nanos = match pace {
        Pace::Every(every) => every.as_nanos().saturating_mul(u128::from(k)),
        Pace::Rate(0) => 0,
        Pace::Rate(rate) => u128::from(k).saturating_mul(1_000_000_000) / u128::from(rate),
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How many lines are due `elapsed` after start.
fn due_by(pace: Pace, elapsed: Duration) -> u64 {
    let lines = match pace {
        Pace::Every(every) => elapsed.as_nanos() / every.as_nanos().max(1),
        Pace::Rate(0) => u128::from(u64::MAX),
        Pace::Rate(rate) => elapsed.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000,
    };
    u64::try_from(lines).unwrap_or(u64::MAX)
}

/// The lines `next..=last` in one buffer.
fn batch(tag: &[u8], next: u64, last: u64, pad: usize, buf: &mut Vec<u8>) {
    buf.clear();
    for k in next..=last {
        push_numbered(buf, tag, k, pad);
    }
}

/// `LOG_EVERY_MS` / `LOG_RATE`: numbered lines on stdout until `count` (or forever, or until
/// stdout is closed). Lines due at once are written together, at most [`MAX_LOG_BATCH`] a write.
fn log_lines(started: Instant, pace: Pace, count: Option<u64>, pad: usize) {
    let limit = count.unwrap_or(u64::MAX);
    let mut next = 1;
    let mut buf = Vec::new();
    while next <= limit {
        let due = due_by(pace, started.elapsed()).min(limit);
        if due < next {
            let wait = due_at(pace, next).saturating_sub(started.elapsed());
            std::thread::sleep(wait.clamp(Duration::from_micros(100), Duration::from_millis(100)));
            continue;
        }
        let last = due.min(next.saturating_add(MAX_LOG_BATCH - 1));
        batch(b"line", next, last, pad, &mut buf);
        let mut out = io::stdout().lock();
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            return;
        }
        drop(out);
        if last == u64::MAX {
            return;
        }
        next = last + 1;
    }
}

/// A query parameter's value, percent-decoded, as UTF-8.
fn query_param(target: &str, name: &str) -> Option<String> {
    String::from_utf8(query_bytes(target, name)?).ok()
}

/// A query parameter's value, percent-decoded: any bytes.
fn query_bytes(target: &str, name: &str) -> Option<Vec<u8>> {
    let query = target.split_once('?')?.1;
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Health-check mode

/// `noco-testapp health [port]`: 0 if `GET /health` answers 200, else 1.
fn health(port: Option<&str>) -> i32 {
    let port = port.map(str::to_string).or_else(|| var("PORT"));
    let port: u16 = match port.as_deref().map(str::parse).unwrap_or(Ok(8080)) {
        Ok(p) => p,
        Err(_) => {
            eprintln!("noco-testapp health: invalid port {port:?}");
            return 1;
        }
    };
    match check_health(port) {
        Ok(status_line) => {
            log(&status_line);
            let code = status_line.split(' ').nth(1);
            if code == Some("200") { 0 } else { 1 }
        }
        Err(e) => {
            log(format_args!("GET http://127.0.0.1:{port}/health: {e}"));
            1
        }
    }
}

fn check_health(port: u16) -> io::Result<String> {
    let timeout = Duration::from_secs(5);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")?;
    let mut line = Vec::new();
    BufReader::new(stream)
        .take(1024)
        .read_until(b'\n', &mut line)?;
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

// ---------------------------------------------------------------------------------------------
// Signals

/// SIGTERM/SIGINT handling without the libc crate: std has no signal API, but libc (linked
/// anyway, statically here) has `signal`, `write` and `_exit`, declared by hand below.
#[cfg(unix)]
mod signals {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

    // The same numbers on every Linux architecture.
    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;
    /// `SIG_ERR`, `(sighandler_t) -1`.
    const SIG_ERR: usize = usize::MAX;

    static STOPPING: AtomicBool = AtomicBool::new(false);
    static LISTENER: AtomicI32 = AtomicI32::new(-1);

    unsafe extern "C" {
        fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        fn write(fd: c_int, buf: *const u8, count: usize) -> isize;
        fn _exit(status: c_int) -> !;
    }

    /// Graceful stop: mark the process stopping; the accept loop drains the listener's queue,
    /// closes it, lets requests in flight finish and exits. Before the server listens there is
    /// nothing to drain, so the process exits at once.
    extern "C" fn on_terminate(_signum: c_int) {
        const MSG: &[u8] = b"noco-testapp: terminating on signal\n";
        STOPPING.store(true, Ordering::SeqCst);
        let serving = LISTENER.load(Ordering::SeqCst) >= 0;
        // SAFETY: only async-signal-safe calls (write(2), _exit(2)) on a static buffer.
        unsafe {
            let _ = write(1, MSG.as_ptr(), MSG.len());
            if !serving {
                _exit(0)
            }
        }
    }

    pub fn stopping() -> bool {
        STOPPING.load(Ordering::SeqCst)
    }

    /// Marks the process as serving (a signal then drains instead of exiting at once).
    pub fn set_listener(listener: &std::net::TcpListener) {
        use std::os::fd::AsRawFd;
        LISTENER.store(listener.as_raw_fd(), Ordering::SeqCst);
    }

    pub fn install() {
        for sig in [SIGTERM, SIGINT] {
            // SAFETY: libc's `signal` with a valid handler that is itself async-signal-safe.
            if unsafe { signal(sig, on_terminate) } == SIG_ERR {
                eprintln!("noco-testapp: cannot handle signal {sig}");
            }
        }
    }
}

#[cfg(not(unix))]
mod signals {
    pub fn install() {}
    pub fn stopping() -> bool {
        false
    }
    pub fn set_listener(_listener: &std::net::TcpListener) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_lines_have_eight_digits_at_least_and_pad_with_spaces() {
        let mut buf = Vec::new();
        push_numbered(&mut buf, b"line", 1, 0);
        push_numbered(&mut buf, b"line", 123_456_789, 0);
        assert_eq!(buf, b"line 00000001\nline 123456789\n");
        batch(b"line", 9, 11, 0, &mut buf);
        assert_eq!(buf, b"line 00000009\nline 00000010\nline 00000011\n");
        batch(b"flood", 7, 7, 20, &mut buf);
        assert_eq!(buf, b"flood 00000007      \n");
        assert_eq!(
            std::str::from_utf8(&buf)
                .unwrap()
                .trim()
                .strip_prefix("flood"),
            Some(" 00000007")
        );
        // A pad shorter than the line changes nothing.
        batch(b"line", 1, 1, 3, &mut buf);
        assert_eq!(buf, b"line 00000001\n");
    }

    #[test]
    fn lines_are_due_every_interval_or_at_the_rate_from_start() {
        let every = Pace::Every(Duration::from_millis(100));
        assert_eq!(due_by(every, Duration::from_millis(99)), 0);
        assert_eq!(due_by(every, Duration::from_millis(250)), 2);
        assert_eq!(due_at(every, 3), Duration::from_millis(300));
        let rate = Pace::Rate(1000);
        assert_eq!(due_by(rate, Duration::from_millis(1500)), 1500);
        assert_eq!(due_at(rate, 1500), Duration::from_millis(1500));
        assert_eq!(due_by(Pace::Rate(0), Duration::ZERO), u64::MAX);
        assert_eq!(due_at(Pace::Rate(0), 7), Duration::ZERO);
        assert_eq!(due_at(every, u64::MAX), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn query_values_are_percent_decoded_bytes() {
        assert_eq!(
            query_bytes("/emit/line?text=a%20b+c%ff%0a", "text").as_deref(),
            Some(&b"a b c\xff\n"[..])
        );
        assert_eq!(query_param("/emit/line?text=%ff", "text"), None);
        assert_eq!(
            query_param("/emit/long?bytes=12", "bytes").as_deref(),
            Some("12")
        );
        assert_eq!(query_bytes("/emit/line", "text"), None);
        // A lone or bad escape is kept as written.
        assert_eq!(query_param("/x?text=100%", "text").as_deref(), Some("100%"));
        assert_eq!(query_param("/x?text=%zz", "text").as_deref(), Some("%zz"));
    }

    #[test]
    fn emit_refuses_bad_parameters_and_unknown_kinds() {
        assert_eq!(emit("long", "/emit/long").status, 400);
        assert_eq!(emit("long", "/emit/long?bytes=-1").status, 400);
        assert_eq!(emit("long", "/emit/long?bytes=8388609").status, 400);
        assert_eq!(emit("line", "/emit/line").status, 400);
        assert_eq!(emit("nope", "/emit/nope").status, 404);
        assert_eq!(emit("lines", "/emit/lines").status, 400);
        assert_eq!(emit("lines", "/emit/lines?count=20000000").status, 400);
        assert_eq!(emit("lines", "/emit/lines?count=10&pad=x").status, 400);
        assert_eq!(
            emit("lines", "/emit/lines?count=2000000&pad=1000").status,
            400,
            "2 GB in all"
        );
        let ok = emit("lines", "/emit/lines?count=3&tag=t&pad=12");
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (200, &b"wrote 3 lines (39 bytes) to stdout"[..])
        );
        let ok = emit("line", "/emit/line?text=hello%20test");
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (200, &b"wrote 11 bytes to stdout"[..])
        );
    }
}
