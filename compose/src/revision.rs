//! Stack revisions: immutable and content-addressed. A revision is the compose file, its
//! variables and the files shipped with it; its id is a SHA-256 over a canonical encoding of
//! those, so the same content is always the same revision, whatever order it was given in.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use noco_proto::limits::{MAX_ENV_BYTES, MAX_SHIPPED_BYTES, MAX_SHIPPED_FILES};

/// The compose file's name inside a revision's directory on a host: no shipped file may take it
/// (unless it holds the same bytes).
pub const COMPOSE_FILE: &str = "compose.yaml";

/// A file shipped with a stack, relative to the stack directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// What a revision is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionSource {
    pub compose: Vec<u8>,
    pub env: BTreeMap<String, String>,
    pub files: Vec<StackFile>,
}

/// Check a shipped file's path: relative, normalized, no `..`, no hidden escape. Returns why not.
/// A revision as people read it: its first 12 hex digits (`sha256:` left out).
pub fn short(revision: &str) -> &str {
    let hex = revision.strip_prefix("sha256:").unwrap_or(revision);
    let end = hex.char_indices().nth(12).map_or(hex.len(), |(i, _)| i);
    &hex[..end]
}

pub fn check_file_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 255 {
        return Err(format!("file path {path:?}: must be 1 to 255 bytes"));
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(format!(
            "file path {path:?}: must be relative, with '/' separators"
        ));
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "file path {path:?}: empty, '.' and '..' components are not allowed"
            ));
        }
    }
    Ok(())
}

impl RevisionSource {
    /// Every problem that would keep a host from writing this revision: the shipped files'
    /// paths, duplicates, a file that would replace the compose file, a path that is both a
    /// file and a directory, count and size; and the size of the variables.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.files.len() > MAX_SHIPPED_FILES {
            problems.push(format!(
                "{} files, over the limit of {MAX_SHIPPED_FILES}",
                self.files.len()
            ));
        }
        let total: usize = self.files.iter().map(|f| f.content.len()).sum();
        if total > MAX_SHIPPED_BYTES {
            problems.push(format!(
                "{total} bytes of files, over the limit of {MAX_SHIPPED_BYTES}"
            ));
        }
        let env: usize = self.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if env > MAX_ENV_BYTES {
            problems.push(format!(
                "{env} bytes of variables, over the limit of {MAX_ENV_BYTES}"
            ));
        }
        for f in &self.files {
            if f.path == COMPOSE_FILE && f.content != self.compose {
                problems.push(format!(
                    "shipped file {COMPOSE_FILE:?} differs from the compose file it would replace on the host: rename it or ship the compose file itself"
                ));
            }
        }
        let paths: std::collections::BTreeSet<&str> =
            self.files.iter().map(|f| f.path.as_str()).collect();
        for f in &self.files {
            let mut dir = f.path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if paths.contains(parent) {
                    problems.push(format!(
                        "shipped file {parent:?} is also a directory of shipped file {:?}: a path cannot be both",
                        f.path
                    ));
                }
                dir = parent;
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            if let Err(e) = check_file_path(&f.path) {
                problems.push(e);
            } else if !seen.insert(f.path.as_str()) {
                problems.push(format!("file path {:?} is given twice", f.path));
            }
            if f.mode & !0o777 != 0 {
                problems.push(format!(
                    "file {:?}: mode {:o} has bits beyond 0777",
                    f.path, f.mode
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The revision id, `sha256:<hex>`: over a length-prefixed encoding of the compose bytes,
    /// the variables in key order and the files in path order (path, mode, content).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(b"noco-revision-v1");
        field(&self.compose);
        for (k, v) in &self.env {
            field(k.as_bytes());
            field(v.as_bytes());
        }
        let mut files: Vec<&StackFile> = self.files.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for f in files {
            field(f.path.as_bytes());
            field(&f.mode.to_be_bytes());
            field(&f.content);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> StackFile {
        StackFile {
            path: path.into(),
            content: content.into(),
            mode: 0o640,
        }
    }

    /// Regression (issue 8, defect 5): these revisions were stored, signed and sent, and every
    /// agent then failed them.
    #[test]
    fn a_revision_no_host_could_write_is_refused_with_the_reason() {
        let mut r = RevisionSource {
            compose: b"services: {}".to_vec(),
            env: BTreeMap::new(),
            files: vec![file("compose.yaml", "services: {x: {}}")],
        };
        let problems = r.check().unwrap_err().join("; ");
        assert!(
            problems.contains("differs from the compose file"),
            "{problems}"
        );
        r.files = vec![file("compose.yaml", "services: {}")];
        r.check().unwrap();
        r.files = vec![file("cfg", "1"), file("cfg/a.txt", "2"), file("x/y/z", "3")];
        let problems = r.check().unwrap_err().join("; ");
        assert!(
            problems.contains("\"cfg\" is also a directory"),
            "{problems}"
        );
        assert!(!problems.contains("x/y"), "{problems}");
        r.files = vec![file("a/b", "1"), file("a/b/c/d", "2")];
        assert!(
            r.check()
                .unwrap_err()
                .join("; ")
                .contains("\"a/b\" is also a directory")
        );
        r.files.clear();
        r.env.insert("BIG".into(), "x".repeat(MAX_ENV_BYTES));
        assert!(
            r.check()
                .unwrap_err()
                .join("; ")
                .contains("bytes of variables")
        );
    }

    #[test]
    fn the_same_content_is_the_same_revision_whatever_the_order() {
        let a = RevisionSource {
            compose: b"services: {}".to_vec(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            files: vec![file("x", "1"), file("y/z", "2")],
        };
        let mut b = a.clone();
        b.files.reverse();
        assert_eq!(a.digest(), b.digest());
        let mut c = a.clone();
        c.env.insert("A".into(), "2".into());
        assert_ne!(a.digest(), c.digest());
        let mut d = a.clone();
        d.files[0].mode = 0o600;
        assert_ne!(a.digest(), d.digest());
        // Length prefixes: moving bytes between fields changes the digest.
        let e = RevisionSource {
            compose: b"ab".to_vec(),
            env: BTreeMap::from([("c".into(), String::new())]),
            files: vec![],
        };
        let f = RevisionSource {
            compose: b"a".to_vec(),
            env: BTreeMap::from([("bc".into(), String::new())]),
            files: vec![],
        };
        assert_ne!(e.digest(), f.digest());
        assert!(a.digest().starts_with("sha256:") && a.digest().len() == 71);
    }

    #[test]
    fn paths_that_could_leave_the_stack_directory_are_refused() {
        for good in ["nginx.conf", "nginx/conf.d/site.conf", ".env.prod"] {
            check_file_path(good).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a\0b",
        ] {
            assert!(check_file_path(bad).is_err(), "{bad:?} accepted");
        }
        let src = RevisionSource {
            files: vec![file("a", "1"), file("a", "2"), file("../b", "")],
            ..Default::default()
        };
        let problems = src.check().unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
