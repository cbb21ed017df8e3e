//! The manifest of one backup: what it holds, member by member, stored as JSON next to the
//! archive (never inside it). The archive writer returns the members; the restore and verify
//! paths recompute them from the archive and [`compare`] them with the manifest.
//!
//! ```json
//! { "format": 1, "stack": "web", "name": "media", "revision": "…", "host": "h1",
//!   "kind": "volumes", "volumes": ["media"], "created": "2026-01-02T03:04:05Z",
//!   "members": [{ "path": "media", "kind": "dir", "size": 0 },
//!               { "path": "media/a.jpg", "kind": "file", "size": 1234, "sha256": "…" }],
//!   "content_size": 1234, "stored_size": 987, "stored_sha256": "…" }
//! ```

use serde::{Deserialize, Serialize};

/// The manifest format this code writes and reads.
pub const FORMAT: u32 = 1;

/// The path of the one member of a dump backup.
pub const DUMP_MEMBER: &str = "dump";

/// What a backup holds: a dump hook's output or the files of volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Dump,
    Volumes,
}

/// What kind of file system object a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    File,
    Dir,
    Symlink,
    /// Another name of a file archived earlier (`link` names it).
    Hardlink,
    Fifo,
}

impl MemberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::File => "file",
            MemberKind::Dir => "dir",
            MemberKind::Symlink => "symlink",
            MemberKind::Hardlink => "hardlink",
            MemberKind::Fifo => "fifo",
        }
    }
}

/// One member of an archive. `path` is the archive path (`<volume>/<path in the volume>`, or
/// `dump`) as [`path_text`] writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub path: String,
    pub kind: MemberKind,
    /// Bytes of content (files: the whole length, holes of sparse files included; else 0).
    #[serde(default)]
    pub size: u64,
    /// Hex SHA-256 of the content, files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A symlink's target, or the archive path a hardlink names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The manifest of one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub stack: String,
    /// The backup's name in the stack's `x-noco.backups`.
    pub name: String,
    /// The stack revision the host ran.
    pub revision: String,
    pub host: String,
    pub kind: BackupKind,
    /// The service a dump ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The dump's argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The volumes (compose names) of a volumes backup, each a top-level directory.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// RFC 3339.
    pub created: String,
    pub members: Vec<Member>,
    /// Sum of the members' sizes (what a restore writes).
    pub content_size: u64,
    /// Size of the stored archive (compressed, maybe encrypted).
    #[serde(default)]
    pub stored_size: u64,
    /// Hex SHA-256 of the stored archive.
    #[serde(default)]
    pub stored_sha256: String,
    /// The age recipients the archive is encrypted to (empty: not encrypted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and vectors cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("backup manifest: {e}"))?;
        m.check()?;
        Ok(m)
    }

    /// The rules every manifest keeps: known format, members adding up to `content_size`, a
    /// dump holding exactly its `dump` member.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "backup manifest: format {} is not supported (this agent reads format {FORMAT})",
                self.format
            ));
        }
        if humantime::parse_rfc3339_weak(&self.created).is_err() {
            return Err(format!(
                "backup manifest: created {:?} is not an RFC 3339 time",
                self.created
            ));
        }
        let sum = self
            .members
            .iter()
            .try_fold(0u64, |acc, m| acc.checked_add(m.size));
        if sum != Some(self.content_size) {
            return Err(format!(
                "backup manifest: content_size {} is not the sum of the members' sizes",
                self.content_size
            ));
        }
        if self.kind == BackupKind::Dump
            && !(self.members.len() == 1
                && self.members[0].path == DUMP_MEMBER
                && self.members[0].kind == MemberKind::File)
        {
            return Err("backup manifest: a dump holds exactly one file member \"dump\"".into());
        }
        Ok(())
    }
}

/// Compares the members a manifest lists with those read back from an archive, in order.
/// The error names the first member that differs and how.
pub fn compare(expected: &[Member], got: &[Member]) -> Result<(), String> {
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        if e.path != g.path {
            return Err(format!(
                "member {} is {:?} in the manifest but {:?} in the archive",
                i + 1,
                e.path,
                g.path
            ));
        }
        let what = if e.kind != g.kind {
            Some(format!(
                "is a {} in the manifest but a {} in the archive",
                e.kind.as_str(),
                g.kind.as_str()
            ))
        } else if e.size != g.size {
            Some(format!(
                "has {} bytes in the manifest but {} in the archive",
                e.size, g.size
            ))
        } else if e.sha256 != g.sha256 {
            Some(format!(
                "has sha256 {} in the manifest but {} in the archive",
                e.sha256.as_deref().unwrap_or("(none)"),
                g.sha256.as_deref().unwrap_or("(none)")
            ))
        } else if e.link != g.link {
            Some(format!(
                "links to {:?} in the manifest but to {:?} in the archive",
                e.link.as_deref().unwrap_or(""),
                g.link.as_deref().unwrap_or("")
            ))
        } else {
            None
        };
        if let Some(what) = what {
            return Err(format!("member {:?} {what}", e.path));
        }
    }
    if let Some(missing) = expected.get(got.len()) {
        return Err(format!(
            "member {:?} is in the manifest but not in the archive ({} of {} members found)",
            missing.path,
            got.len(),
            expected.len()
        ));
    }
    if let Some(extra) = got.get(expected.len()) {
        return Err(format!(
            "member {:?} is in the archive but not in the manifest",
            extra.path
        ));
    }
    Ok(())
}

/// An archive path as text: UTF-8 as is, a backslash doubled, any byte that is not UTF-8 as
/// `\xNN`. Names on Linux are bytes; this keeps distinct names distinct in the manifest.
pub fn path_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, sha: &str) -> Member {
        Member {
            path: path.into(),
            kind: MemberKind::File,
            size,
            sha256: Some(sha.into()),
            link: None,
        }
    }

    #[test]
    fn compare_names_the_first_member_that_differs() {
        let a = vec![file("m/a", 1, "aa"), file("m/b", 2, "bb")];
        assert_eq!(compare(&a, &a), Ok(()));

        let mut b = a.clone();
        b[1].sha256 = Some("cc".into());
        let e = compare(&a, &b).unwrap_err();
        assert!(e.contains("\"m/b\"") && e.contains("sha256 bb"), "{e}");

        let e = compare(&a, &a[..1]).unwrap_err();
        assert!(
            e.contains("\"m/b\" is in the manifest but not in the archive"),
            "{e}"
        );

        let e = compare(&a[..1], &a).unwrap_err();
        assert!(
            e.contains("\"m/b\" is in the archive but not in the manifest"),
            "{e}"
        );

        let mut c = a.clone();
        c[0].kind = MemberKind::Fifo;
        c[0].sha256 = None;
        let e = compare(&a, &c).unwrap_err();
        assert!(e.contains("is a file in the manifest but a fifo"), "{e}");
    }

    #[test]
    fn path_text_keeps_distinct_names_distinct() {
        assert_eq!(path_text(b"media/a b.txt"), "media/a b.txt");
        assert_eq!(path_text("m/é".as_bytes()), "m/é");
        assert_eq!(path_text(b"m/\xff"), "m/\\xff");
        assert_eq!(path_text(b"m/\\xff"), "m/\\\\xff");
    }

    #[test]
    fn manifest_round_trips_and_is_checked() {
        let m = Manifest {
            format: FORMAT,
            stack: "web".into(),
            name: "db".into(),
            revision: "abc".into(),
            host: "h1".into(),
            kind: BackupKind::Dump,
            service: Some("db".into()),
            command: Some(vec!["pg_dump".into(), "-Fc".into()]),
            volumes: vec![],
            created: "2026-01-02T03:04:05Z".into(),
            members: vec![file(DUMP_MEMBER, 5, "ab")],
            content_size: 5,
            stored_size: 9,
            stored_sha256: "cd".into(),
            recipients: vec![],
        };
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"kind\":\"dump\""), "{text}");
        assert_eq!(Manifest::from_json(&json).unwrap(), m);

        let mut bad = m.clone();
        bad.content_size = 6;
        assert!(bad.check().unwrap_err().contains("content_size"));
        let mut bad = m.clone();
        bad.format = 2;
        assert!(bad.check().unwrap_err().contains("format 2"));
        let mut bad = m;
        bad.members[0].path = "x".into();
        assert!(bad.check().unwrap_err().contains("exactly one"));
    }
}
