//! Output for people (aligned tables, relative times) and for scripts (`-o json`), and the one
//! way it is written: [`outln!`] and [`out!`] instead of `println!`/`print!` (which panic when
//! the reader of stdout has gone away, `nococtl audit | head -1`). A closed stdout ends nococtl
//! at once with exit 0, as `head`'s writer expects; another write error is a local problem
//! (exit 2). Lines for stderr go through [`errln!`], which never fails.
//!
//! What is shown comes from the views of [`crate::view`]: `-o json` serializes them, tables
//! take their cells ([`Listed`]).

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `println!` for nococtl's output: see the module's documentation.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for nococtl's output: see the module's documentation.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` that does not panic: when stderr cannot be written there is nobody to tell.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};

/// Write to stdout; when that fails, end nococtl (exit 0 when the reader went away).
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        stdout_failed(&e);
    }
}

/// Write bytes to stdout unchanged (log lines as containers wrote them), ending nococtl as
/// [`write_stdout`] does when that fails.
pub fn write_stdout_bytes(bytes: &[u8]) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        stdout_failed(&e);
    }
}

fn stdout_failed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    write_stderr(format_args!("nococtl: writing to stdout: {e}\n"));
    std::process::exit(2);
}

/// Whether stdout is a terminal: the one test of every command that shows people something
/// other than what it writes into a pipe or a file (redrawn screens, colours, escaped control
/// characters).
pub fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// Whether stdin is a terminal: a person who can answer a question (`backup restore`,
/// `backup rm` ask before they change anything).
pub fn stdin_is_terminal() -> bool {
    io::stdin().is_terminal()
}

/// Write to stderr, ignoring failure.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A thing shown as one row of a table, under [`Listed::HEADER`]. The views of [`crate::view`]
/// are also what `-o json` shows of them ([`list`]).
pub trait Listed {
    /// The column names, one per cell.
    const HEADER: &'static [&'static str];
    fn cells(&self) -> Vec<String>;
}

impl<T: Listed> Listed for &T {
    const HEADER: &'static [&'static str] = T::HEADER;
    fn cells(&self) -> Vec<String> {
        (*self).cells()
    }
}

/// Things as a JSON array, or as a table with their header.
pub fn list<T: Listed + serde::Serialize>(format: Format, items: &[T]) {
    match format {
        Format::Json => json(items),
        Format::Table => listed_table(items),
    }
}

/// Things as a table with their header.
pub fn listed_table<T: Listed>(items: &[T]) {
    table(T::HEADER, &items.iter().map(T::cells).collect::<Vec<_>>());
}

/// Print rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    for line in table_lines(header, rows) {
        outln!("{line}");
    }
}

/// Things as the lines of a table with their header (for a [`Screen`]).
pub fn listed_lines<T: Listed>(items: &[T]) -> Vec<String> {
    table_lines(T::HEADER, &items.iter().map(T::cells).collect::<Vec<_>>())
}

/// The lines of [`table`].
pub fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string()
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    std::iter::once(line(&header))
        .chain(rows.iter().map(|row| line(row)))
        .collect()
}

/// A view as pretty JSON. It goes through `serde_json::Value`, whose objects keep their keys
/// sorted, so every object prints its keys in alphabetical order.
pub fn json<T: serde::Serialize + ?Sized>(view: &T) {
    let text = serde_json::to_value(view).and_then(|v| serde_json::to_string_pretty(&v));
    outln!("{}", text.unwrap_or_else(|_| "null".to_string()));
}

/// A view as one line of JSON (JSON Lines: `logs -o json`), keys in alphabetical order as in
/// [`json`].
pub fn json_line<T: serde::Serialize + ?Sized>(view: &T) -> String {
    serde_json::to_value(view)
        .and_then(|v| serde_json::to_string(&v))
        .unwrap_or_else(|_| "null".to_string())
}

/// RFC 3339 with nanoseconds, as docker prints log times (`2023-11-14T22:13:20.000000001Z`);
/// `-` for none.
pub fn rfc3339_nanos(ns: i64) -> String {
    if ns <= 0 {
        return "-".to_string();
    }
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns as u64)).to_string()
}

/// A size for people, in binary units: `512 B`, `1.5 KiB`, `12.3 MiB`, `512 MiB`, `7.7 GiB`
/// (one decimal below 100 of the unit).
pub fn human_bytes(bytes: u64) -> String {
    noco_proto::size::human(bytes)
}

/// A rate for people: `1.5 KiB/s`.
pub fn human_rate(bytes_per_second: f64) -> String {
    let rate = if bytes_per_second.is_finite() && bytes_per_second > 0.0 {
        bytes_per_second.round() as u64
    } else {
        0
    };
    format!("{}/s", human_bytes(rate))
}

/// A percentage with one decimal: `12.5%`.
pub fn percent(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}%")
    } else {
        "-".to_string()
    }
}

/// A screen redrawn in place on a terminal (`top`, `status -w`, `rollout status -w`): each
/// frame moves the cursor home and overwrites the previous frame line by line, clearing the
/// rest of each line and, after the last, the rest of the screen (`ESC[H`, `ESC[K`, `ESC[J`),
/// in one write: no blank screen between two frames, so no flicker. The cursor is hidden while
/// the screen lives and shown again when it is dropped, or on Ctrl-C, which then ends nococtl
/// with the screen's `interrupted` exit code. Only for a terminal ([`stdout_is_terminal`]).
pub struct Screen {
    on_interrupt: tokio::task::JoinHandle<()>,
}

const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";

impl Screen {
    /// Hide the cursor; on Ctrl-C show it again and exit with `interrupted`.
    pub fn start(interrupted: u8) -> Screen {
        crate::output::out!("{HIDE_CURSOR}");
        let on_interrupt = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = io::stdout().lock().write_all(SHOW_CURSOR.as_bytes());
                let _ = io::stdout().lock().flush();
                std::process::exit(i32::from(interrupted));
            }
        });
        Screen { on_interrupt }
    }

    /// Draw a frame over the previous one.
    pub fn draw(&self, lines: &[String]) {
        crate::output::out!("{}", frame(lines));
    }
}

/// One frame: home, each line followed by clear-to-end-of-line, then clear-to-end-of-screen.
pub fn frame(lines: &[String]) -> String {
    let mut text = String::from("\x1b[H");
    for line in lines {
        text.push_str(line);
        text.push_str("\x1b[K\n");
    }
    text.push_str("\x1b[J");
    text
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.on_interrupt.abort();
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(SHOW_CURSOR.as_bytes());
        let _ = stdout.flush();
    }
}

pub fn rfc3339_ms(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// `12s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn ago_ms(ms: i64) -> String {
    if ms <= 0 {
        return "never".to_string();
    }
    let then = UNIX_EPOCH + Duration::from_millis(ms as u64);
    let secs = SystemTime::now()
        .duration_since(then)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=1 => "just now".to_string(),
        2..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// `-` for an empty cell.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// One line of at most `max` characters, `…` at the end when it was cut.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A revision for tables: `sha256:<hex>` shortened to its first 12 hex digits; `-` when empty.
pub fn short_revision(revision: &str) -> String {
    if revision.is_empty() {
        return "-".to_string();
    }
    noco_compose::revision::short(revision).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12_900_000), "12.3 MiB");
        assert_eq!(human_bytes(512 * 1024 * 1024), "512 MiB");
        assert_eq!(human_bytes(8_270_000_000), "7.7 GiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16384 PiB");
        assert_eq!(human_rate(1536.4), "1.5 KiB/s");
        assert_eq!(human_rate(f64::NAN), "0 B/s");
        assert_eq!(percent(12.345), "12.3%");
    }

    #[test]
    fn log_times_have_nanoseconds() {
        assert_eq!(
            rfc3339_nanos(1_700_000_000_000_000_001),
            "2023-11-14T22:13:20.000000001Z"
        );
        assert_eq!(rfc3339_nanos(0), "-");
    }

    #[test]
    fn a_frame_overwrites_in_place_without_clearing_the_screen_first() {
        let f = frame(&["HOST  CPU%".to_string(), "web-1 3.0%".to_string()]);
        assert_eq!(f, "\x1b[HHOST  CPU%\x1b[K\nweb-1 3.0%\x1b[K\n\x1b[J");
        assert!(!f.contains("\x1b[2J"));
    }

    #[test]
    fn json_lines_are_one_line_with_sorted_keys() {
        let line = json_line(&serde_json::json!({"b": 1, "a": "x\ny"}));
        assert_eq!(line, r#"{"a":"x\ny","b":1}"#);
    }

    #[test]
    fn revisions_are_shortened_to_twelve_hex_digits() {
        let full = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(short_revision(&full), "0123456789ab");
        assert_eq!(short_revision(""), "-");
        assert_eq!(short_revision("abc"), "abc");
    }
}
