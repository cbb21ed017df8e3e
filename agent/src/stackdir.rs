//! The directories of server-sent stacks on this host:
//!
//! ```text
//! <data-dir>/stacks/<stack>/<revision-hex-first-16>/compose.yaml   the compose file
//!                                                   /<shipped files>  0640 unless given a mode
//!                           /mounted/   (0700) secret and config files as containers mount
//!                                       them, with their own modes (`engine::files`)
//! ```
//!
//! A revision directory is written whole into a temporary directory next to it (every file
//! fsynced), then renamed into place, so it is complete or absent. Revisions are content
//! addressed: the digest is recomputed from what was received before a directory is reused.
//! A stack's directory existing is what marks the stack as this agent's to remove later.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use noco_compose::revision::{self, RevisionSource};
use noco_proto::v1::StackState;

use crate::datadir::DataDir;

/// The compose file's name inside a revision directory.
pub use noco_compose::revision::COMPOSE_FILE;
const DEFAULT_MODE: u32 = 0o640;
/// The directory of a stack's secret and config files, beside its revision directories (whose
/// names are 16 hex digits, so never this).
const MOUNTED_DIR: &str = "mounted";
const DIR_MODE: u32 = 0o750;

impl DataDir {
    /// Where server-sent stacks keep their files.
    pub fn stacks(&self) -> PathBuf {
        self.root.join("stacks")
    }
}

/// Where the secret and config files of a stack's containers are written.
pub fn mounted_dir(stacks: &Path, stack: &str) -> PathBuf {
    stacks.join(stack).join(MOUNTED_DIR)
}

/// A stack name is a directory name and part of a compose project name: `[a-z0-9][a-z0-9_-]*`,
/// at most 63 bytes.
pub fn check_stack_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "stack name {name:?}: must be 1 to 63 of [a-z0-9_-], starting with a letter or digit"
        ))
    }
}

/// The directory name of a revision: the first 16 hex digits of `sha256:<hex>`.
pub fn revision_dir_name(revision: &str) -> Result<String, String> {
    let hex = revision
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| format!("revision {revision:?}: not sha256:<64 hex digits>"))?;
    Ok(hex[..16].to_ascii_lowercase())
}

/// The mode a shipped file is written with.
pub fn file_mode(mode: u32) -> u32 {
    if mode == 0 {
        DEFAULT_MODE
    } else {
        mode & 0o777
    }
}

/// Check everything about a stack's content before anything is written: the name, the
/// revision id against the content, each file's path (relative, no `..`), counts and sizes.
pub fn check_stack(stack: &StackState) -> Result<String, String> {
    check_stack_name(&stack.name)?;
    let dir = revision_dir_name(&stack.revision)?;
    let source = RevisionSource {
        compose: stack.compose.clone(),
        env: stack.env.clone().into_iter().collect(),
        files: stack
            .files
            .iter()
            .map(|f| revision::StackFile {
                path: f.path.clone(),
                content: f.content.clone(),
                mode: f.mode,
            })
            .collect(),
    };
    source
        .check()
        .map_err(|problems| format!("shipped files: {}", problems.join("; ")))?;
    let digest = source.digest();
    if digest != stack.revision {
        return Err(format!(
            "revision {} does not match its content (computed {digest})",
            stack.revision
        ));
    }
    Ok(dir)
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn make_dir(path: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| io_err(path, "creating directory", e))
}

fn fsync_dir(path: &Path) -> Result<(), String> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, "syncing directory", e))
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_err(path, "creating", e))?;
    // The umask may have taken bits away: set exactly the mode asked for.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(path, "setting the mode of", e))?;
    f.write_all(content)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(path, "writing", e))
}

/// `root` joined with a checked relative path, refusing anything but plain components.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, String> {
    revision::check_file_path(rel)?;
    let mut out = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => out.push(p),
            _ => return Err(format!("file path {rel:?} leaves the stack's directory")),
        }
    }
    Ok(out)
}

/// Held while a revision directory is written: the applier and the backup scheduler both write
/// one when a new state arrives, at the same moment, and one must never replace (or remove) the
/// directory the other has just put in place.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Write the stack's revision directory if it is not there yet; returns its path. Call
/// [`check_stack`] first (this checks paths again, as the last line of defence). Writers of
/// this process take turns; the first writes, the others find it written.
pub fn write_revision(
    stacks: &Path,
    stack: &StackState,
    dir_name: &str,
) -> Result<PathBuf, String> {
    let _turn = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let stack_root = stacks.join(&stack.name);
    let target = stack_root.join(dir_name);
    if target.join(COMPOSE_FILE).is_file() {
        return Ok(target);
    }
    make_dir(&stack_root)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = stack_root.join(format!(".tmp-{dir_name}-{}-{nanos}", std::process::id()));
    let result = fill(&tmp, stack);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if target.exists() {
        // An incomplete directory from before (no compose file): replace it.
        fs::remove_dir_all(&target).map_err(|e| io_err(&target, "removing", e))?;
    }
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(io_err(&target, "moving into place", e));
    }
    fsync_dir(&stack_root)?;
    Ok(target)
}

fn fill(tmp: &Path, stack: &StackState) -> Result<(), String> {
    make_dir(tmp)?;
    let mut dirs = BTreeSet::from([tmp.to_path_buf()]);
    for f in &stack.files {
        if f.path == COMPOSE_FILE {
            continue;
        }
        let path = inside(tmp, &f.path)?;
        if let Some(parent) = path.parent() {
            make_dir(parent)?;
            let mut p = parent;
            while p.starts_with(tmp) && dirs.insert(p.to_path_buf()) {
                match p.parent() {
                    Some(up) => p = up,
                    None => break,
                }
            }
        }
        write_file(&path, &f.content, file_mode(f.mode))?;
    }
    write_file(&tmp.join(COMPOSE_FILE), &stack.compose, DEFAULT_MODE)?;
    for d in &dirs {
        fsync_dir(d)?;
    }
    Ok(())
}

/// Remove every revision directory of a stack but `keep` (and leftover temporary ones); the
/// secret and config files stay (the engine prunes them).
pub fn prune_revisions(stack_root: &Path, keep: &str) -> Result<(), String> {
    let entries = fs::read_dir(stack_root).map_err(|e| io_err(stack_root, "listing", e))?;
    for entry in entries.flatten() {
        if entry.file_name().to_str() == Some(keep)
            || entry.file_name().to_str() == Some(MOUNTED_DIR)
        {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| io_err(&path, "removing old revision", e))?;
    }
    Ok(())
}

/// The stacks that have a directory here: every stack this agent applied and has not removed.
pub fn existing_stacks(stacks: &Path) -> Result<Vec<String>, String> {
    let entries = match fs::read_dir(stacks) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(stacks, "listing", e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| check_stack_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Files a compose file names (env_file), read from a revision directory. Paths are checked
/// like shipped files: nothing outside the revision directory can be read.
pub struct RevisionFiles(pub PathBuf);

impl noco_compose::FileSource for RevisionFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        let rel = path.strip_prefix("./").unwrap_or(path);
        let full = inside(&self.0, rel)?;
        fs::read_to_string(&full).map_err(|e| format!("{path}: {e}"))
    }

    fn read_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let rel = path.strip_prefix("./").unwrap_or(path);
        let full = inside(&self.0, rel)?;
        fs::read(&full).map_err(|e| format!("{path}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use noco_compose::FileSource;
    use noco_proto::v1::StackFile;

    use super::*;

    fn stack(files: Vec<StackFile>) -> StackState {
        let mut s = StackState {
            name: "web".into(),
            revision: String::new(),
            compose: b"services:\n  a:\n    image: x\n".to_vec(),
            env: [("A".to_string(), "1".to_string())].into(),
            files,
        };
        s.revision = RevisionSource {
            compose: s.compose.clone(),
            env: s.env.clone().into_iter().collect(),
            files: s
                .files
                .iter()
                .map(|f| revision::StackFile {
                    path: f.path.clone(),
                    content: f.content.clone(),
                    mode: f.mode,
                })
                .collect(),
        }
        .digest();
        s
    }

    fn file(path: &str, content: &str, mode: u32) -> StackFile {
        StackFile {
            path: path.into(),
            content: content.into(),
            mode,
        }
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_revision_is_written_whole_with_its_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let s = stack(vec![
            file("nginx/conf.d/site.conf", "server {}", 0),
            file("run.sh", "#!/bin/sh", 0o755),
            file("secret", "x", 0o4600),
        ]);
        // Mode bits beyond 0777 are refused before anything is written.
        assert!(check_stack(&s).unwrap_err().contains("beyond 0777"));
        let s = stack(vec![
            file("nginx/conf.d/site.conf", "server {}", 0),
            file("run.sh", "#!/bin/sh", 0o755),
        ]);
        let name = check_stack(&s).unwrap();
        assert_eq!(name.len(), 16);
        let dir = write_revision(tmp.path(), &s, &name).unwrap();
        assert_eq!(dir, tmp.path().join("web").join(&name));
        assert_eq!(
            fs::read(dir.join("compose.yaml")).unwrap(),
            s.compose.as_slice()
        );
        assert_eq!(mode_of(&dir.join("nginx/conf.d/site.conf")), 0o640);
        assert_eq!(mode_of(&dir.join("run.sh")), 0o755);
        assert_eq!(mode_of(&dir.join("compose.yaml")), 0o640);
        // Written again: reused as is.
        assert_eq!(write_revision(tmp.path(), &s, &name).unwrap(), dir);
        // No temporary directory is left behind.
        let left: Vec<_> = fs::read_dir(tmp.path().join("web")).unwrap().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(
            existing_stacks(tmp.path()).unwrap(),
            vec!["web".to_string()]
        );
    }

    #[test]
    fn escaping_paths_bad_names_and_wrong_digests_are_refused() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "./a"] {
            let s = stack(vec![file(bad, "x", 0)]);
            assert!(check_stack(&s).is_err(), "{bad:?} accepted");
            assert!(inside(Path::new("/s"), bad).is_err(), "{bad:?} accepted");
        }
        let mut s = stack(vec![file("a", "x", 0)]);
        s.files[0].content = b"y".to_vec();
        assert!(check_stack(&s).unwrap_err().contains("does not match"));
        let mut s = stack(vec![]);
        s.name = "../etc".into();
        assert!(check_stack(&s).unwrap_err().contains("stack name"));
        let s = stack(vec![file("compose.yaml", "other", 0)]);
        assert!(
            check_stack(&s)
                .unwrap_err()
                .contains("differs from the compose file")
        );
        assert!(revision_dir_name("sha256:abc").is_err());
    }

    #[test]
    fn old_revisions_are_pruned_and_env_files_read_only_from_the_revision() {
        let tmp = tempfile::tempdir().unwrap();
        let a = stack(vec![file("a.env", "X=1\n", 0)]);
        let b = stack(vec![file("b.env", "X=2\n", 0)]);
        let (na, nb) = (check_stack(&a).unwrap(), check_stack(&b).unwrap());
        write_revision(tmp.path(), &a, &na).unwrap();
        let dir_b = write_revision(tmp.path(), &b, &nb).unwrap();
        fs::create_dir(tmp.path().join("web/.tmp-junk")).unwrap();
        fs::create_dir(mounted_dir(tmp.path(), "web")).unwrap();
        prune_revisions(&tmp.path().join("web"), &nb).unwrap();
        let mut left: Vec<_> = fs::read_dir(tmp.path().join("web"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                std::ffi::OsString::from(&nb),
                std::ffi::OsString::from(MOUNTED_DIR)
            ]
        );
        let files = RevisionFiles(dir_b);
        assert_eq!(files.read("./b.env").unwrap(), "X=2\n");
        assert!(files.read("../../web").is_err());
        assert!(files.read("/etc/passwd").is_err());
    }

    #[test]
    fn stack_names_are_checked() {
        for good in ["web", "a-b_c", "0x"] {
            check_stack_name(good).unwrap();
        }
        for bad in ["", "Web", "-a", "a/b", ".", "..", &"a".repeat(64)] {
            assert!(check_stack_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(file_mode(0), 0o640);
        assert_eq!(file_mode(0o1755), 0o755);
    }

    /// The applier and the backup scheduler both write a stack's revision when a new state
    /// arrives — at the same moment. Every writer must get the complete directory, and none may
    /// remove another's (found as "moving into place …: Directory not empty" failing a rollout).
    #[test]
    fn writers_of_one_revision_at_once_all_get_the_complete_directory() {
        let s = stack(vec![file("conf/app.conf", "x = 1", 0)]);
        let name = check_stack(&s).unwrap();
        for trial in 0..100 {
            let tmp = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(4);
            let results: Vec<Result<PathBuf, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            write_revision(tmp.path(), &s, &name)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for r in results {
                let dir = r.unwrap_or_else(|e| panic!("trial {trial}: {e}"));
                assert!(dir.join("compose.yaml").is_file(), "trial {trial}");
                assert!(dir.join("conf/app.conf").is_file(), "trial {trial}");
            }
            let left: Vec<_> = fs::read_dir(tmp.path().join("web")).unwrap().collect();
            assert_eq!(left.len(), 1, "trial {trial}: no temporary directory left");
        }
    }
}
