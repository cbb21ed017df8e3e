//! Reading a stack from this machine — the compose file, `--env-file`s and shipped `--file`s —
//! and validating it locally with the same loader the server and agents use, so that problems
//! show with their file and line before anything is sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use noco_compose::revision::{self, RevisionSource, StackFile};
use noco_compose::{Diagnostic, LoadOptions, Loaded};

use crate::StackSource;
use crate::error::CtlError;

/// A stack as read from disk, not yet validated.
#[derive(Debug, Clone)]
pub struct LocalStack {
    pub compose_path: PathBuf,
    pub compose: String,
    /// Every `--env-file` merged, later files winning.
    pub env: BTreeMap<String, String>,
    pub files: Vec<StackFile>,
}

/// Read the compose file, the env files and the shipped files; check the shipped files' paths,
/// count and size.
pub fn read(source: &StackSource) -> Result<LocalStack, CtlError> {
    let compose_path = source.compose.clone();
    let bytes = std::fs::read(&compose_path).map_err(|e| {
        CtlError::Local(format!(
            "cannot read the compose file {}: {e}",
            compose_path.display()
        ))
    })?;
    // An invalid file, like one that does not load (exit 2 for nococtl: a local problem).
    let compose = noco_compose::text(&bytes)
        .map(str::to_owned)
        .map_err(|d| CtlError::Local(located(&compose_path, &d)))?;

    let mut env = BTreeMap::new();
    for path in &source.env_files {
        let bytes = std::fs::read(path).map_err(|e| {
            CtlError::Local(format!("cannot read the env file {}: {e}", path.display()))
        })?;
        let text = noco_compose::text(&bytes).map_err(|d| CtlError::Local(located(path, &d)))?;
        let vars =
            noco_compose::parse_env_file(text).map_err(|d| CtlError::Local(located(path, &d)))?;
        env.extend(vars);
    }

    let dir = base_dir(&compose_path);
    let mut files = Vec::new();
    for given in &source.files {
        files.push(read_shipped(&dir, given)?);
    }
    let revision = RevisionSource {
        compose: compose.clone().into_bytes(),
        env: env.clone(),
        files: files.clone(),
    };
    if let Err(problems) = revision.check() {
        return Err(CtlError::Local(format!(
            "the files shipped with the stack: {}",
            problems.join("; ")
        )));
    }
    Ok(LocalStack {
        compose_path,
        compose,
        env,
        files,
    })
}

impl LocalStack {
    /// Load this stack's compose file as the hosts will: the project name is the stack's name,
    /// interpolation uses the env files, `env_file:` reads the shipped files.
    pub fn load(&self, stack: &str) -> Result<Loaded, Vec<String>> {
        load_compose(
            &self.compose_path,
            &self.compose,
            stack,
            &self.env,
            &self.files,
        )
    }
}

/// Load a compose text; on failure every diagnostic, located as `file:line: path: message`.
pub fn load_compose(
    label: &Path,
    compose: &str,
    stack: &str,
    env: &BTreeMap<String, String>,
    files: &[StackFile],
) -> Result<Loaded, Vec<String>> {
    // Binary files cannot be env files; leaving them out makes `env_file:` naming one fail
    // with "no file", as it would on the host.
    let texts: BTreeMap<String, String> = files
        .iter()
        .filter_map(|f| {
            String::from_utf8(f.content.clone())
                .ok()
                .map(|t| (f.path.clone(), t))
        })
        .collect();
    let opts = LoadOptions {
        project_name: Some(stack),
        variables: env,
        files: &texts,
    };
    noco_compose::load(compose, &opts)
        .map_err(|diags| diags.iter().map(|d| located(label, d)).collect())
}

/// `compose.yaml:12: services.web.ports[0]: bad port` (the parts that are known).
pub fn located(file: &Path, d: &Diagnostic) -> String {
    let mut out = file.display().to_string();
    if let Some(line) = d.line {
        out.push_str(&format!(":{line}"));
    }
    if !d.path.is_empty() {
        out.push_str(&format!(": {}", d.path));
    }
    out.push_str(&format!(": {}", d.message));
    out
}

/// The directory shipped-file paths are relative to: the compose file's.
fn base_dir(compose: &Path) -> PathBuf {
    match compose.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The path a `--file` is shipped under: as given, without leading `./`, and checked.
pub fn shipped_path(given: &str) -> Result<String, CtlError> {
    let mut path = given;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.trim_start_matches('/');
    }
    if path.starts_with('/') {
        return Err(CtlError::Local(format!(
            "--file {given:?}: give the path relative to the compose file's directory; it is shipped, and bind-mounted on the hosts, under that relative path"
        )));
    }
    revision::check_file_path(path)
        .map_err(|e| CtlError::Local(format!("--file {given:?}: {e}")))?;
    Ok(path.to_owned())
}

fn read_shipped(dir: &Path, given: &str) -> Result<StackFile, CtlError> {
    let path = shipped_path(given)?;
    let local = dir.join(&path);
    let meta = std::fs::metadata(&local).map_err(|e| {
        CtlError::Local(format!(
            "--file {path}: cannot read {}: {e}",
            local.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(CtlError::Local(format!(
            "--file {path}: {} is not a regular file (ship each file on its own)",
            local.display()
        )));
    }
    let content = std::fs::read(&local).map_err(|e| {
        CtlError::Local(format!(
            "--file {path}: cannot read {}: {e}",
            local.display()
        ))
    })?;
    Ok(StackFile {
        path,
        content,
        mode: file_mode(&meta),
    })
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    if meta.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path, env_files: &[&str], files: &[&str]) -> StackSource {
        StackSource {
            compose: dir.join("compose.yaml"),
            env_files: env_files.iter().map(|f| dir.join(f)).collect(),
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn shipped_paths_are_relative_to_the_compose_directory_and_checked() {
        assert_eq!(
            shipped_path("nginx/nginx.conf").unwrap(),
            "nginx/nginx.conf"
        );
        assert_eq!(shipped_path("./nginx.conf").unwrap(), "nginx.conf");
        for bad in ["/etc/passwd", "../secret", "a/../../b", "a//b", ""] {
            assert!(shipped_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_stack_is_read_with_later_env_files_winning_and_file_modes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("compose.yaml"),
            "services:\n  web:\n    image: nginx:${TAG}\n    env_file: app.env\n",
        )
        .unwrap();
        std::fs::write(d.join("a.env"), "TAG=1.25\nONLY_A=a\n").unwrap();
        std::fs::write(d.join("b.env"), "TAG=1.27\n").unwrap();
        std::fs::write(d.join("app.env"), "MODE=prod\n").unwrap();
        std::fs::create_dir(d.join("nginx")).unwrap();
        std::fs::write(d.join("nginx/nginx.conf"), "events {}\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                d.join("nginx/nginx.conf"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        let stack = read(&source(
            d,
            &["a.env", "b.env"],
            &["nginx/nginx.conf", "app.env"],
        ))
        .unwrap();
        assert_eq!(stack.env.get("TAG").map(String::as_str), Some("1.27"));
        assert_eq!(stack.env.get("ONLY_A").map(String::as_str), Some("a"));
        assert_eq!(stack.files[0].path, "nginx/nginx.conf");
        #[cfg(unix)]
        assert_eq!(stack.files[0].mode, 0o600);
        let loaded = stack.load("shop").unwrap();
        let web = &loaded.project.services["web"];
        assert_eq!(web.image, "nginx:1.27");
        assert_eq!(
            web.environment.get("MODE").map(String::as_str),
            Some("prod")
        );
        assert_eq!(loaded.project.name, "shop");
    }

    #[test]
    fn invalid_compose_files_report_every_problem_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("compose.yaml"),
            "services:\n  web:\n    image: nginx\n    ports: [\"notaport\"]\n  db:\n    bogus: 1\n",
        )
        .unwrap();
        let stack = read(&source(d, &[], &[])).unwrap();
        let problems = stack.load("shop").unwrap_err();
        assert!(problems.len() >= 2, "{problems:?}");
        let prefix = format!("{}:", d.join("compose.yaml").display());
        for p in &problems {
            assert!(p.starts_with(&prefix), "{p}");
        }
        assert!(
            problems
                .iter()
                .any(|p| p.contains(":4: services.web.ports")),
            "{problems:?}"
        );
    }

    #[test]
    fn env_file_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("compose.yaml"), "services: {}\n").unwrap();
        std::fs::write(d.join("bad.env"), "A=1\nNOVALUE\n").unwrap();
        let err = read(&source(d, &["bad.env"], &[])).unwrap_err().to_string();
        assert!(err.contains("bad.env:2: "), "{err}");
    }

    #[test]
    fn a_compose_or_env_file_that_is_not_utf8_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("compose.yaml"),
            b"services:\n  web:\n    image: caf\xe9\n",
        )
        .unwrap();
        let err = read(&source(d, &[], &[])).unwrap_err().to_string();
        assert!(err.contains("compose.yaml:3: not UTF-8 text"), "{err}");
        std::fs::write(d.join("compose.yaml"), "services: {}\n").unwrap();
        std::fs::write(d.join("bad.env"), b"A=caf\xe9\n").unwrap();
        let err = read(&source(d, &["bad.env"], &[])).unwrap_err().to_string();
        assert!(err.contains("bad.env:1: not UTF-8 text"), "{err}");
    }

    #[test]
    fn a_missing_shipped_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("compose.yaml"), "services: {}\n").unwrap();
        let err = read(&source(d, &[], &["conf/missing.conf"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--file conf/missing.conf"), "{err}");
    }
}
