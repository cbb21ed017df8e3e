//! Secret and config files on the host. Each mount of a secret or config is a file written
//! with the mount's owner and mode into the project's files directory (made 0700, so no other
//! user of the host can list or read it), and bind-mounted read-only at its target (see
//! `spec.rs`).
//!
//! A file's name says what it holds: `secret-<name>-<16 hex of the content digest>-<mode>` (and
//! `-u<uid>`, `-g<gid>` when given). A new value is a new file, so a container keeps the file
//! it was created with until it is replaced; [`prune`] removes the files no service mounts any
//! more once an apply has converged.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use noco_compose::model::{FileMount, FileObject, Project, Service};

const DIR_MODE: u32 = 0o700;

/// One file a container mounts: where it goes in the container and what it holds.
pub struct MountedFile<'a> {
    /// `secret` or `config`.
    pub kind: &'static str,
    pub mount: &'a FileMount,
    pub object: &'a FileObject,
}

/// Every secret and config `service` mounts, with its definition.
pub fn of_service<'a>(project: &'a Project, service: &'a Service) -> Vec<MountedFile<'a>> {
    let secrets = service
        .secrets
        .iter()
        .map(|m| ("secret", m, &project.secrets));
    let configs = service
        .configs
        .iter()
        .map(|m| ("config", m, &project.configs));
    secrets
        .chain(configs)
        .filter_map(|(kind, mount, objects)| {
            objects.get(&mount.source).map(|object| MountedFile {
                kind,
                mount,
                object,
            })
        })
        .collect()
}

/// Whether any service of the project mounts a secret or config.
pub fn any(project: &Project) -> bool {
    project
        .services
        .values()
        .any(|s| !s.secrets.is_empty() || !s.configs.is_empty())
}

/// The file's name in the files directory (see the module docs).
pub fn file_name(kind: &str, mount: &FileMount) -> String {
    let hex = mount
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&mount.digest);
    let mut name = format!(
        "{kind}-{}-{}-{:04o}",
        mount.source,
        hex.get(..16).unwrap_or(hex),
        mount.mode
    );
    if let Some(uid) = mount.uid {
        name.push_str(&format!("-u{uid}"));
    }
    if let Some(gid) = mount.gid {
        name.push_str(&format!("-g{gid}"));
    }
    name
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Write every file the project's services mount into `dir`; a file already there with the
/// same bytes, owner and mode is left alone. Errors name the secret or config and the service,
/// never the content.
pub fn write(dir: &Path, project: &Project) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| io_err(dir, "creating directory", e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| io_err(dir, "setting the mode of", e))?;
    let mut written = false;
    for service in project.services.values() {
        for f in of_service(project, service) {
            let path = dir.join(file_name(f.kind, f.mount));
            if is_current(&path, &f) {
                continue;
            }
            write_one(dir, &path, &f).map_err(|e| {
                format!(
                    "service {:?}: {} {:?}: {e}",
                    service.name, f.kind, f.mount.source
                )
            })?;
            written = true;
        }
    }
    if written {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, "syncing directory", e))?;
    }
    Ok(())
}

/// Whether `path` is a regular file with the mount's bytes, mode and owner.
fn is_current(path: &Path, f: &MountedFile<'_>) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.mode() & 0o7777 == f.mount.mode
        && f.mount.uid.is_none_or(|uid| meta.uid() == uid)
        && f.mount.gid.is_none_or(|gid| meta.gid() == gid)
        && fs::read(path).is_ok_and(|bytes| bytes == f.object.content.bytes())
}

/// Write a temporary file with the mode and owner from the first byte, then rename it into place.
fn write_one(dir: &Path, path: &Path, f: &MountedFile<'_>) -> Result<(), String> {
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        file_name(f.kind, f.mount),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mount.mode)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, "creating", e))?;
        // The umask may have taken bits away: set exactly the mode asked for.
        file.set_permissions(fs::Permissions::from_mode(f.mount.mode))
            .map_err(|e| io_err(&tmp, "setting the mode of", e))?;
        if f.mount.uid.is_some() || f.mount.gid.is_some() {
            std::os::unix::fs::fchown(&file, f.mount.uid, f.mount.gid).map_err(|e| {
                format!(
                    "{} (giving a file an owner needs the agent to run as root)",
                    io_err(&tmp, "setting the owner of", e)
                )
            })?;
        }
        file.write_all(f.object.content.bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err(&tmp, "writing", e))?;
        fs::rename(&tmp, path).map_err(|e| io_err(path, "moving into place", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Remove the files in `dir` that no service of the project mounts (and leftovers).
pub fn prune(dir: &Path, project: &Project) -> Result<(), String> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir, "listing", e)),
    };
    let wanted: BTreeSet<String> = project
        .services
        .values()
        .flat_map(|s| of_service(project, s))
        .map(|f| file_name(f.kind, f.mount))
        .collect();
    for entry in entries.flatten() {
        let keep = entry
            .file_name()
            .to_str()
            .is_some_and(|n| wanted.contains(n));
        if !keep {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| io_err(&path, "removing", e))?;
        }
    }
    Ok(())
}

/// Where `noco-agent compose` keeps a project's files without a data directory:
/// `<state>/compose/<project>`, the state directory being `--state-dir`, else
/// `$XDG_STATE_HOME/noco-agent`, else `$HOME/.local/state/noco-agent`.
pub fn local_dir(state_dir: Option<&Path>, project: &str) -> Result<PathBuf, String> {
    let state = match state_dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
            match (var("XDG_STATE_HOME"), var("HOME")) {
                (Some(state), _) => PathBuf::from(state).join("noco-agent"),
                (None, Some(home)) => PathBuf::from(home).join(".local/state/noco-agent"),
                (None, None) => {
                    return Err(
                        "no state directory for secret and config files: pass --state-dir (neither XDG_STATE_HOME nor HOME is set)"
                            .to_string(),
                    );
                }
            }
        }
    };
    Ok(state.join("compose").join(project))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use noco_compose::{LoadOptions, load};

    use super::*;

    fn project(yaml: &str, vars: &[(&str, &str)]) -> Project {
        let variables: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(
            yaml,
            &LoadOptions {
                project_name: Some("p"),
                variables: &variables,
                files: &noco_compose::NoFiles,
                profiles: &[],
                directory: None,
            },
        )
        .unwrap()
        .project
    }

    const YAML: &str = "services:\n  db:\n    image: x\n    secrets: [pw]\n    configs:\n      - source: conf\n        mode: 0440\nsecrets:\n  pw:\n    environment: PW\nconfigs:\n  conf:\n    content: listen 80\n";

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn files_are_written_in_a_private_directory_with_their_modes_and_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mounted");
        let one = project(YAML, &[("PW", "one")]);
        write(&dir, &one).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        let db = &one.services["db"];
        let secret = dir.join(file_name("secret", &db.secrets[0]));
        let config = dir.join(file_name("config", &db.configs[0]));
        assert_eq!(fs::read(&secret).unwrap(), b"one");
        assert_eq!(mode_of(&secret), 0o400);
        assert_eq!(fs::read(&config).unwrap(), b"listen 80");
        assert_eq!(mode_of(&config), 0o440);
        assert!(
            secret
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("secret-pw-")
        );

        // Changed by hand: written again.
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        write(&dir, &one).unwrap();
        assert_eq!(mode_of(&secret), 0o400);

        // A new value is a new file; the old one stays until pruned.
        let two = project(YAML, &[("PW", "two")]);
        write(&dir, &two).unwrap();
        let secret_two = dir.join(file_name("secret", &two.services["db"].secrets[0]));
        assert_ne!(secret_two, secret);
        assert_eq!(fs::read(&secret_two).unwrap(), b"two");
        assert!(secret.exists());
        fs::write(dir.join(".tmp-leftover"), "x").unwrap();
        prune(&dir, &two).unwrap();
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        left.sort();
        let mut want = vec![config, secret_two];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn an_owner_is_set_when_given() {
        let tmp = tempfile::tempdir().unwrap();
        let yaml = "services:\n  db:\n    image: x\n    secrets:\n      - source: pw\n        uid: '1234'\n        gid: '5678'\nsecrets:\n  pw:\n    environment: PW\n";
        let p = project(yaml, &[("PW", "x")]);
        let result = write(tmp.path(), &p);
        let path = tmp
            .path()
            .join(file_name("secret", &p.services["db"].secrets[0]));
        match result {
            Ok(()) => {
                let meta = fs::metadata(&path).unwrap();
                assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
            }
            // Not root: the reason says so, and nothing is left half-written.
            Err(e) => {
                assert!(e.contains("secret \"pw\"") && e.contains("root"), "{e}");
                assert!(!path.exists());
            }
        }
    }

    #[test]
    fn the_local_directory_is_per_project_under_the_state_directory() {
        assert_eq!(
            local_dir(Some(Path::new("/s")), "web").unwrap(),
            Path::new("/s/compose/web")
        );
    }
}
