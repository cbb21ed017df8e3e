//! Stack revisions: immutable and content-addressed. A revision is the compose file, its
//! variables and the files shipped with it; its id is a SHA-256 over a canonical encoding of
//! those, so the same content is always the same revision, whatever order it was given in.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The largest total size of a revision's files.
pub const MAX_FILES_BYTES: usize = 8 * 1024 * 1024;
pub const MAX_FILES: usize = 256;

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
    /// Every problem with the shipped files: paths, duplicates, count and size.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.files.len() > MAX_FILES {
            problems.push(format!(
                "{} files, over the limit of {MAX_FILES}",
                self.files.len()
            ));
        }
        let total: usize = self.files.iter().map(|f| f.content.len()).sum();
        if total > MAX_FILES_BYTES {
            problems.push(format!(
                "{total} bytes of files, over the limit of {MAX_FILES_BYTES}"
            ));
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
