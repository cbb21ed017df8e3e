//! Output for people (aligned tables, relative times) and for scripts (`-o json`), and the one
//! way it is written: [`outln!`] and [`out!`] instead of `println!`/`print!` (which panic when
//! the reader of stdout has gone away, `nococtl audit | head -1`). A closed stdout ends nococtl
//! at once with exit 0, as `head`'s writer expects; another write error is a local problem
//! (exit 2). Lines for stderr go through [`errln!`], which never fails.
//!
//! What is shown comes from the views of [`crate::view`]: `-o json` serializes them, tables
//! take their cells ([`Listed`]).

use std::fmt;
use std::io::{self, Write};
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
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        write_stderr(format_args!("nococtl: writing to stdout: {e}\n"));
        std::process::exit(2);
    }
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
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
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
        outln!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// A view as pretty JSON. It goes through `serde_json::Value`, whose objects keep their keys
/// sorted, so every object prints its keys in alphabetical order.
pub fn json<T: serde::Serialize + ?Sized>(view: &T) {
    let text = serde_json::to_value(view).and_then(|v| serde_json::to_string_pretty(&v));
    outln!("{}", text.unwrap_or_else(|_| "null".to_string()));
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
    let hex = revision.strip_prefix("sha256:").unwrap_or(revision);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_shortened_to_twelve_hex_digits() {
        let full = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(short_revision(&full), "0123456789ab");
        assert_eq!(short_revision(""), "-");
        assert_eq!(short_revision("abc"), "abc");
    }
}
