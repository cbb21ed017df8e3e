//! Reading a stack from this machine — the compose file, `--env-file`s and `--ship` files —
//! and validating it locally with the same loader the server and agents use, so that problems
//! show with their file and line before anything is sent. The `file:` of every secret and
//! config a service mounts ships with the stack by itself ([`LocalStack::ship_objects`]):
//! secrets 0400, and only from inside the compose file's directory tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use noco_compose::model::{ObjectSource, Project};
use noco_compose::revision::{self, RevisionSource, StackFile};
use noco_compose::{Diagnostic, FileSource, LoadOptions, Loaded};

use crate::cli::StackSource;
use crate::error::CtlError;

/// A stack as read from disk, not yet validated.
#[derive(Debug, Clone)]
pub struct LocalStack {
    pub compose_path: PathBuf,
    pub compose: String,
    /// Every `--env-file` merged, later files winning.
    pub env: BTreeMap<String, String>,
    pub files: Vec<StackFile>,
    /// The compose file's directory: shipped paths are relative to it.
    pub dir: PathBuf,
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
        dir,
    })
}

impl LocalStack {
    /// Load this stack's compose file as the hosts will: the project name is the stack's name,
    /// interpolation uses the env files, `env_file:` reads the shipped files.
    pub fn load(&self, stack: &str) -> Result<Loaded, Vec<String>> {
        let files = LocalFiles::new(&self.files, Some(&self.dir));
        load_with(&self.compose_path, &self.compose, stack, &self.env, &files)
    }

    /// Add the `file:` of every secret and config of the loaded project to the shipped files
    /// (a secret's copy on the hosts is 0400, also when it was given with `--ship`), and check
    /// the files again.
    pub fn ship_objects(&mut self, project: &Project) -> Result<(), CtlError> {
        let secrets = project.secrets.values().map(|o| (true, o));
        let configs = project.configs.values().map(|o| (false, o));
        for (secret, object) in secrets.chain(configs) {
            let ObjectSource::File(given) = &object.source else {
                continue;
            };
            let path = object_path(given).map_err(CtlError::Local)?;
            let mode = if secret {
                0o400
            } else {
                std::fs::metadata(self.dir.join(&path))
                    .map(|m| file_mode(&m))
                    .unwrap_or(0)
            };
            match self.files.iter_mut().find(|f| f.path == path) {
                Some(f) if secret => f.mode = 0o400,
                Some(_) => {}
                None => self.files.push(StackFile {
                    path,
                    content: object.content.bytes().to_vec(),
                    mode,
                }),
            }
        }
        let revision = RevisionSource {
            compose: self.compose.clone().into_bytes(),
            env: self.env.clone(),
            files: self.files.clone(),
        };
        revision.check().map_err(|problems| {
            CtlError::Local(format!(
                "the files shipped with the stack: {}",
                problems.join("; ")
            ))
        })
    }
}

/// The path a secret's or config's `file:` ships under: relative to the compose file's
/// directory, without leading `./`, and inside that directory's tree.
pub fn object_path(given: &str) -> Result<String, String> {
    let mut path = given;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.trim_start_matches('/');
    }
    revision::check_file_path(path).map(|()| path.to_owned()).map_err(|e| {
        format!("{given:?} cannot ship with the stack: only files inside the compose file's directory tree do, under their relative path ({e})")
    })
}

/// What the loader reads for a local stack: `env_file:` among the shipped files only, as the
/// hosts will; a secret's or config's `file:` among them, else from inside the compose file's
/// directory (it ships by itself).
struct LocalFiles<'a> {
    texts: BTreeMap<String, String>,
    files: &'a [StackFile],
    dir: Option<&'a Path>,
}

impl<'a> LocalFiles<'a> {
    fn new(files: &'a [StackFile], dir: Option<&'a Path>) -> Self {
        // Binary files cannot be env files; leaving them out makes `env_file:` naming one fail
        // with "no file", as it would on the host.
        let texts = files
            .iter()
            .filter_map(|f| {
                String::from_utf8(f.content.clone())
                    .ok()
                    .map(|t| (f.path.clone(), t))
            })
            .collect();
        LocalFiles { texts, files, dir }
    }
}

impl FileSource for LocalFiles<'_> {
    fn read(&self, path: &str) -> Result<String, String> {
        self.texts.read(path)
    }

    fn read_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let rel = object_path(path)?;
        if let Some(f) = self.files.iter().find(|f| f.path == rel) {
            return Ok(f.content.clone());
        }
        let Some(dir) = self.dir else {
            return Err(format!("no file {path:?}"));
        };
        let local = dir.join(&rel);
        std::fs::read(&local).map_err(|e| format!("{}: {e}", local.display()))
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
    load_with(label, compose, stack, env, &LocalFiles::new(files, None))
}

fn load_with(
    label: &Path,
    compose: &str,
    stack: &str,
    env: &BTreeMap<String, String>,
    files: &dyn FileSource,
) -> Result<Loaded, Vec<String>> {
    let opts = LoadOptions {
        project_name: Some(stack),
        variables: env,
        files,
        profiles: &[],
        directory: None,
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

/// The path a `--ship` file is shipped under: as given, without leading `./`, and checked.
pub fn shipped_path(given: &str) -> Result<String, CtlError> {
    let mut path = given;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.trim_start_matches('/');
    }
    if path.starts_with('/') {
        return Err(CtlError::Local(format!(
            "--ship {given:?}: give the path relative to the compose file's directory; it is shipped, and bind-mounted on the hosts, under that relative path"
        )));
    }
    revision::check_file_path(path)
        .map_err(|e| CtlError::Local(format!("--ship {given:?}: {e}")))?;
    Ok(path.to_owned())
}

fn read_shipped(dir: &Path, given: &str) -> Result<StackFile, CtlError> {
    let path = shipped_path(given)?;
    let local = dir.join(&path);
    let meta = std::fs::metadata(&local).map_err(|e| {
        CtlError::Local(format!(
            "--ship {path}: cannot read {}: {e}",
            local.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(CtlError::Local(format!(
            "--ship {path}: {} is not a regular file (ship each file on its own)",
            local.display()
        )));
    }
    let content = std::fs::read(&local).map_err(|e| {
        CtlError::Local(format!(
            "--ship {path}: cannot read {}: {e}",
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
        assert!(err.contains("--ship conf/missing.conf"), "{err}");
    }

    #[test]
    fn secret_and_config_files_ship_by_themselves_secrets_0400() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("compose.yaml"),
            "services:\n  db:\n    image: pg\n    secrets: [pw]\n    configs: [conf]\nsecrets:\n  pw:\n    file: ./secrets/pw.txt\n  unused:\n    file: nowhere.txt\nconfigs:\n  conf:\n    file: conf/app.conf\n",
        )
        .unwrap();
        std::fs::create_dir(d.join("secrets")).unwrap();
        std::fs::create_dir(d.join("conf")).unwrap();
        std::fs::write(d.join("secrets/pw.txt"), "hunter2").unwrap();
        std::fs::write(d.join("conf/app.conf"), "listen 80").unwrap();
        let mut stack = read(&source(d, &[], &[])).unwrap();
        assert!(stack.files.is_empty());
        let loaded = stack.load("shop").unwrap();
        stack.ship_objects(&loaded.project).unwrap();
        let shipped: Vec<(&str, &[u8], u32)> = stack
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.content.as_slice(), f.mode))
            .collect();
        assert_eq!(shipped.len(), 2, "only what a service mounts ships");
        assert_eq!(shipped[0], ("secrets/pw.txt", &b"hunter2"[..], 0o400));
        assert_eq!(shipped[1].0, "conf/app.conf");
        // Given with --ship as well: shipped once, and still 0400.
        let mut stack = read(&source(d, &[], &["secrets/pw.txt"])).unwrap();
        let loaded = stack.load("shop").unwrap();
        stack.ship_objects(&loaded.project).unwrap();
        assert_eq!(stack.files.len(), 2);
        assert_eq!(stack.files[0].mode, 0o400);
    }

    #[test]
    fn a_secret_file_outside_the_compose_directory_is_refused_naming_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("stack");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(dir.path().join("pw.txt"), "hunter2").unwrap();
        for given in ["../pw.txt", "/etc/hostname"] {
            std::fs::write(
                d.join("compose.yaml"),
                format!("services:\n  db:\n    image: pg\n    secrets: [db_password]\nsecrets:\n  db_password:\n    file: {given}\n"),
            )
            .unwrap();
            let stack = read(&source(&d, &[], &[])).unwrap();
            let problems = stack.load("shop").unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            let p = &problems[0];
            assert!(
                p.contains(":7: secrets.db_password.file: secret \"db_password\"")
                    && p.contains("only files inside the compose file's directory tree"),
                "{p}"
            );
        }
    }
}
