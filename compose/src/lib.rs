//! noco-compose: the compose model, pure (no I/O), shared by agent (apply), server (validate on
//! submit) and ctl (validate locally).
//!
//! [`model`] is the typed, normalized model everything works on. [`load`] turns a compose
//! file into it: YAML 1.2 (anchors, aliases, `<<` merge keys) → interpolation from the
//! caller's variables → validation → normalization, reporting every problem at once as
//! [`Diagnostic`]s. [`config_hash`] fingerprints a service for "recreate or not".
//!
//! Code map: `parse` (bytes → UTF-8 text, YAML → tree with lines), `interpolate` (`${VAR:-d}`
//! …), `read` (typed reads of tree nodes), `load` (top level, volumes, networks), `service` (one
//! service) with `environment`, `relations` (depends_on, links, networks), `ports`, `mounts`,
//! `deploy`; `secrets` (top-level secrets and configs, and their mounts in services);
//! `validate` (project-wide checks), `units` (durations, sizes), `shell` (splitting string
//! commands), `envfile` (`.env` syntax), `hash`, `diag`, `suggest` ("did you mean" for
//! unknown names, also for nococtl and the server).

use std::collections::BTreeMap;

pub mod backups;
mod deploy;
mod diag;
mod envfile;
mod environment;
mod hash;
mod interpolate;
mod load;
pub mod model;
mod mounts;
mod parse;
pub mod plan;
mod ports;
mod profiles;
mod read;
mod relations;
pub mod revision;
mod secrets;
mod service;
mod shell;
pub mod suggest;
mod units;
mod validate;

pub use diag::Diagnostic;
pub use envfile::parse_env_file;
pub use hash::config_hash;
pub use load::load;
pub use parse::text;

/// Where the loader reads files a compose file names (`env_file:`). The loader itself does
/// no I/O; the caller decides what a path means (the stack's directory, a revision's shipped
/// files, …).
pub trait FileSource {
    /// Read a file named in the compose file (env_file), relative to the stack directory.
    fn read(&self, path: &str) -> Result<String, String>;

    /// Read the content of a secret or config (`file:`), any bytes. By default, the text
    /// [`FileSource::read`] gives.
    fn read_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        self.read(path).map(String::into_bytes)
    }
}

/// A [`FileSource`] that refuses every read.
pub struct NoFiles;

impl FileSource for NoFiles {
    fn read(&self, _path: &str) -> Result<String, String> {
        Err("no files are available".to_owned())
    }
}

/// In-memory files by path, as written in the compose file.
impl FileSource for BTreeMap<String, String> {
    fn read(&self, path: &str) -> Result<String, String> {
        let key = path.strip_prefix("./").unwrap_or(path);
        self.get(path)
            .or_else(|| self.get(key))
            .cloned()
            .ok_or_else(|| format!("no file {path:?}"))
    }
}

/// What [`load`] needs besides the file itself.
pub struct LoadOptions<'a> {
    /// `-p`, used as given (refused unless a valid project name). Without it, as docker compose
    /// decides: `COMPOSE_PROJECT_NAME` from `variables` (as given), else the top-level `name:`,
    /// else [`LoadOptions::directory`] (both normalized); else an error.
    pub project_name: Option<&'a str>,
    /// The only source for interpolation and for `environment: [FOO]` without a value. The
    /// process environment is never read.
    pub variables: &'a BTreeMap<String, String>,
    pub files: &'a dyn FileSource,
    /// Enabled profiles (`--profile`; `*` enables every service). When empty,
    /// `COMPOSE_PROFILES` from `variables` (comma-separated). The file's own `x-noco.profiles`
    /// are enabled either way.
    pub profiles: &'a [String],
    /// The name of the compose file's directory: the project name when nothing else gives one
    /// (`None` on the fleet, where the stack names the project).
    pub directory: Option<&'a str>,
}

/// A loaded project and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub project: model::Project,
    pub warnings: Vec<Diagnostic>,
}
