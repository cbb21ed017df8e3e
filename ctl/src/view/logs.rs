//! Container logs (`logs`): one view per line a host's agent read, or per marker (lines the
//! agent dropped, lines this reader skipped). `-o json` prints each as one line of JSON (JSON
//! Lines), with every key always present; the terminal and pipe forms are in `crate::logs`.

use noco_proto::v1 as pb;
use serde::Serialize;

use super::text;

use crate::output::rfc3339_nanos;

/// One log line, or a marker about a container's stream or about this reader.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLineView {
    /// RFC 3339 with nanoseconds (`-` for a marker without a time).
    pub time: String,
    pub time_unix_ns: i64,
    pub host: String,
    pub host_id: String,
    /// The host's sequence number of the record (0 for a marker of the server).
    pub seq: u64,
    pub stack: String,
    pub service: String,
    /// The compose container number (web-1 → 1).
    pub number: u32,
    pub container: String,
    pub container_id: String,
    /// `stdout`, `stderr` or `noco` (a marker).
    #[serde(serialize_with = "text")]
    pub stream: pb::LogStream,
    /// The line as UTF-8: bytes that are not are replaced with U+FFFD (see `invalid_utf8`).
    pub line: String,
    /// The line's bytes were not valid UTF-8 (always present, true or false). The bytes
    /// themselves are what `logs` writes into a pipe or a file.
    pub invalid_utf8: bool,
    /// Bytes cut from the end of an overlong line.
    pub truncated: u64,
    /// Lines of this container the agent lost (a marker).
    pub dropped: u64,
    /// Lines the server skipped because this reader fell behind (a marker).
    pub skipped: u64,
    /// The line's bytes as the container wrote them; not in the JSON, which has `line`.
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// The entry carried a record (a line or an agent's marker), not only `skipped`.
    #[serde(skip)]
    pub has_record: bool,
}

impl LogLineView {
    /// A marker: not a line a container wrote.
    pub fn is_marker(&self) -> bool {
        self.stream == pb::LogStream::Noco
    }
}

impl From<&pb::LogEntry> for LogLineView {
    fn from(e: &pb::LogEntry) -> Self {
        let pb::LogEntry {
            host_id,
            host,
            record,
            skipped,
        } = e;
        let mut view = match record {
            Some(r) => LogLineView::from(r),
            None => LogLineView::from(&pb::LogRecord {
                stream: pb::LogStream::Noco.into(),
                line: format!("{skipped} lines skipped: this reader fell behind").into(),
                ..Default::default()
            }),
        };
        view.host = host.clone();
        view.host_id = host_id.clone();
        view.skipped = *skipped;
        view.has_record = record.is_some();
        view
    }
}

impl From<&pb::LogRecord> for LogLineView {
    fn from(r: &pb::LogRecord) -> Self {
        let pb::LogRecord {
            seq,
            time_unix_nanos,
            stack,
            service,
            number,
            container,
            container_id,
            stream: _,
            line,
            truncated,
            dropped,
        } = r;
        let bytes = line.to_vec();
        let (text, invalid_utf8) = match String::from_utf8_lossy(&bytes) {
            std::borrow::Cow::Borrowed(text) => (text.to_string(), false),
            std::borrow::Cow::Owned(text) => (text, true),
        };
        LogLineView {
            time: rfc3339_nanos(*time_unix_nanos),
            time_unix_ns: *time_unix_nanos,
            host: String::new(),
            host_id: String::new(),
            seq: *seq,
            stack: stack.clone(),
            service: service.clone(),
            number: *number,
            container: container.clone(),
            container_id: container_id.clone(),
            stream: r.stream(),
            line: text,
            invalid_utf8,
            truncated: *truncated,
            dropped: *dropped,
            skipped: 0,
            bytes,
            has_record: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(line: &[u8]) -> pb::LogEntry {
        pb::LogEntry {
            host_id: "h1".into(),
            host: "web-1".into(),
            record: Some(pb::LogRecord {
                seq: 7,
                time_unix_nanos: 1_700_000_000_000_000_001,
                stack: "shop".into(),
                service: "api".into(),
                number: 2,
                container: "shop-api-2".into(),
                container_id: "c0ffee".into(),
                stream: pb::LogStream::Stderr.into(),
                line: line.to_vec(),
                truncated: 0,
                dropped: 0,
            }),
            skipped: 0,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_key() {
        let v = LogLineView::from(&entry(b"hello"));
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({
                "time": "2023-11-14T22:13:20.000000001Z",
                "time_unix_ns": 1_700_000_000_000_000_001_i64,
                "host": "web-1", "host_id": "h1", "seq": 7, "stack": "shop", "service": "api",
                "number": 2, "container": "shop-api-2", "container_id": "c0ffee",
                "stream": "stderr", "line": "hello", "invalid_utf8": false, "truncated": 0,
                "dropped": 0, "skipped": 0,
            })
        );
        assert_eq!(v.bytes, b"hello");
        assert!(!v.is_marker());
        // JSON Lines: one line per record.
        assert!(!crate::output::json_line(&v).contains('\n'));
    }

    #[test]
    fn invalid_utf8_is_replaced_in_json_and_flagged() {
        let v = LogLineView::from(&entry(b"a\xff\xfeb\x1b[31m"));
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["line"], "a\u{fffd}\u{fffd}b\u{1b}[31m");
        assert_eq!(j["invalid_utf8"], true);
        assert_eq!(v.bytes, b"a\xff\xfeb\x1b[31m");
        let line = crate::output::json_line(&v);
        assert!(line.contains(r#""line":"a��b\u001b[31m""#), "{line}");
    }

    #[test]
    fn markers_read_as_the_noco_stream() {
        let mut e = entry(b"312 lines lost: the spool was full");
        if let Some(r) = e.record.as_mut() {
            r.stream = pb::LogStream::Noco.into();
            r.dropped = 312;
        }
        let v = LogLineView::from(&e);
        assert!(v.is_marker());
        assert_eq!(serde_json::to_value(&v).unwrap()["dropped"], 312);

        let skipped = LogLineView::from(&pb::LogEntry {
            host_id: "h1".into(),
            host: "web-1".into(),
            record: None,
            skipped: 40,
        });
        let j = serde_json::to_value(&skipped).unwrap();
        assert_eq!(
            (&j["stream"], &j["skipped"], &j["host"], &j["time"]),
            (&json!("noco"), &json!(40), &json!("web-1"), &json!("-"))
        );
        assert_eq!(j["line"], "40 lines skipped: this reader fell behind");
        assert!(!skipped.has_record);
    }
}
