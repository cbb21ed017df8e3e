//! `noco-agent compose …`: the compose engine on this host without a server — validate, plan,
//! up, ps, down — for operators and for tests. Exit status: 0 valid or converged; 1 invalid input
//! or a failed apply; 2 usage or environment problem (no Docker, unreadable file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use noco_compose::model::Project;
use noco_compose::{FileSource, LoadOptions};

use crate::engine::apply::ApplyOptions;
use crate::engine::{EngineError, docker, files, project};

#[derive(Debug, clap::Subcommand)]
pub enum ComposeCmd {
    /// Check a compose file: exit 0, or print every problem with its place and exit 1.
    Validate(FileArgs),
    /// Show what `up` would create, recreate or remove, and why.
    Plan(FileArgs),
    /// Converge the stack: create what is missing, recreate what changed, remove orphans, wait
    /// until every service is running (healthy, where it has a healthcheck).
    Up {
        #[command(flatten)]
        file: FileArgs,
        /// How long one service may take to become ready.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
        /// Stay running and keep the stack converged (Docker events and a periodic reconcile).
        #[arg(long)]
        watch: bool,
        /// With --watch: how often to reconcile even without events.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Where secret and config files are written, under `compose/<project>/` (0700).
        /// Default: $XDG_STATE_HOME/noco-agent, else ~/.local/state/noco-agent.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// The stack's containers: service, state, health.
    Ps {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove the stack's containers and networks (volumes only with --volumes).
    Down {
        #[command(flatten)]
        target: TargetArgs,
        /// Also delete the stack's named volumes (their data is lost).
        #[arg(long)]
        volumes: bool,
        /// Seconds each container has to stop after its stop signal before it is killed
        /// (default: its own stop_grace_period, else Docker's 10).
        #[arg(short = 't', long, value_name = "SECONDS")]
        timeout: Option<u32>,
        /// The state directory `up` wrote the stack's secret and config files under (removed).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// The compose file.
    pub file: PathBuf,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The project of `ps` and `down`: `-p`, or the one a compose file names.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// The compose file whose project this is (else -p names it).
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// How a compose file is loaded: its project name, variables and profiles.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Project name (default, as docker compose: COMPOSE_PROJECT_NAME from the env files, else
    /// the file's top-level `name:`, else the name of the file's directory).
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
    /// Variables for interpolation, KEY=VALUE lines; repeatable, later files win. Default: `.env`
    /// next to the compose file, if there is one. The agent's own environment is never used.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// A variable for interpolation (wins over env files); repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Enable the services of a profile (repeatable; `*`: every service). Default:
    /// COMPOSE_PROFILES from the env files. The file's `x-noco.profiles` are always enabled.
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
}

/// Files named by the compose file (env_file, secrets' and configs' `file:`), read relative
/// to the stack directory.
struct DirFiles(PathBuf);

impl FileSource for DirFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        let p = self.0.join(path);
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    }

    fn read_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let p = self.0.join(path);
        std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
    }
}

enum Failure {
    /// Bad input or a failed apply: exit 1.
    Invalid(String),
    /// Usage or environment: exit 2.
    Environment(String),
}

/// Once connected, anything that goes wrong is a failed apply (exit 1); only reaching Docker at
/// all is an environment problem (see `connect`).
impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Failure::Invalid(e.to_string())
    }
}

fn stack_dir(file: &Path) -> PathBuf {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// A file's text: unreadable is an environment problem (exit 2), not UTF-8 is invalid input
/// (exit 1).
fn read_text(path: &Path, what: &str) -> Result<String, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Environment(format!("reading {what}{}: {e}", path.display())))?;
    noco_compose::text(&bytes)
        .map(str::to_owned)
        .map_err(|d| Failure::Invalid(format!("{}: {d}", path.display())))
}

/// The name of the directory holding `file`, as docker compose takes it for the project name:
/// the absolute path, cleaned lexically (symbolic links are not followed); `None` at `/`.
fn directory_name(file: &Path) -> Option<String> {
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty());
    let abs = std::path::absolute(dir.unwrap_or(Path::new("."))).ok()?;
    let mut parts = Vec::new();
    for c in abs.components() {
        match c {
            std::path::Component::Normal(part) => parts.push(part),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.last().map(|p| p.to_string_lossy().into_owned())
}

/// The project `ps` or `down` acts on: the one the file names (loading it), else `-p`.
fn target_project(target: &TargetArgs) -> Result<String, Failure> {
    match (&target.file, &target.load.project) {
        (Some(file), _) => load(file, &target.load).map(|(project, _)| project.name),
        (None, Some(name)) => Ok(name.clone()),
        (None, None) => Err(Failure::Environment(
            "no project: pass its name with -p, or its compose file".to_owned(),
        )),
    }
}

/// Read the file and its variables, and load the model; warnings go to stderr.
fn load(file: &Path, args: &LoadArgs) -> Result<(Project, PathBuf), Failure> {
    let yaml = read_text(file, "")?;
    let dir = stack_dir(file);
    let mut variables = BTreeMap::new();
    let mut env_files = args.env_file.clone();
    if env_files.is_empty() && dir.join(".env").is_file() {
        env_files.push(dir.join(".env"));
    }
    for path in &env_files {
        let text = read_text(path, "env file ")?;
        let vars = noco_compose::parse_env_file(&text)
            .map_err(|d| Failure::Invalid(format!("{}: {d}", path.display())))?;
        variables.extend(vars);
    }
    for kv in &args.vars {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Failure::Environment(format!("--var {kv:?} is not KEY=VALUE")))?;
        variables.insert(k.to_string(), v.to_string());
    }
    let files = DirFiles(dir.clone());
    let directory = directory_name(file);
    let opts = LoadOptions {
        project_name: args.project.as_deref(),
        variables: &variables,
        files: &files,
        profiles: &args.profiles,
        directory: directory.as_deref(),
    };
    match noco_compose::load(&yaml, &opts) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                crate::errln!("warning: {}: {w}", file.display());
            }
            Ok((loaded.project, dir))
        }
        Err(diags) => {
            let lines: Vec<String> = diags
                .iter()
                .map(|d| format!("{}: {d}", file.display()))
                .collect();
            Err(Failure::Invalid(lines.join("\n")))
        }
    }
}

async fn connect() -> Result<bollard::Docker, Failure> {
    docker::connect().await.map_err(|e| {
        Failure::Environment(format!(
            "{e} (is the Docker engine running, and may this user use it?)"
        ))
    })
}

pub async fn run(cmd: ComposeCmd, config: Option<&Path>) -> ExitCode {
    match run_inner(cmd, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(msg)) => {
            crate::errln!("{msg}");
            ExitCode::from(1)
        }
        Err(Failure::Environment(msg)) => {
            crate::errln!("noco-agent compose: {msg}");
            ExitCode::from(2)
        }
    }
}

async fn run_inner(cmd: ComposeCmd, config: Option<&Path>) -> Result<(), Failure> {
    match cmd {
        ComposeCmd::Validate(args) => {
            let (project, _) = load(&args.file, &args.load)?;
            crate::outln!(
                "{}: valid — project {}, {} services, {} networks, {} volumes",
                args.file.display(),
                project.name,
                project.services.len(),
                project.networks.len(),
                project.volumes.len()
            );
        }
        ComposeCmd::Plan(args) => {
            let (project, _) = load(&args.file, &args.load)?;
            let docker = connect().await?;
            let plan = project::plan(&docker, &project).await?;
            crate::out!("{plan}");
        }
        ComposeCmd::Up {
            file,
            wait_timeout,
            watch,
            interval,
            state_dir,
        } => {
            let (project, dir) = load(&file.file, &file.load)?;
            let (_, registry_credentials) = crate::config::AgentConfig::load(config)
                .map_err(|e| Failure::Environment(format!("{e:#}")))?;
            let docker = connect().await?;
            let files_dir = match files::local_dir(state_dir.as_deref(), &project.name) {
                Ok(d) => d,
                Err(e) if files::any(&project) => return Err(Failure::Environment(e)),
                Err(_) => PathBuf::new(),
            };
            let opts = ApplyOptions {
                stack_dir: dir,
                files_dir,
                config_file: file.file.display().to_string(),
                wait_timeout,
                registry_credentials,
            };
            let started = std::time::Instant::now();
            let (plan, report) = project::up(&docker, &project, &opts).await?;
            if plan.is_noop() {
                crate::outln!(
                    "{}: up to date ({} ms)",
                    project.name,
                    started.elapsed().as_millis()
                );
            } else {
                for a in &report.actions {
                    crate::outln!("{a}");
                }
                crate::outln!(
                    "{}: converged in {:.1} s",
                    project.name,
                    started.elapsed().as_secs_f64()
                );
            }
            if watch {
                crate::outln!(
                    "watching {} (reconcile every {})",
                    project.name,
                    humantime::format_duration(interval)
                );
                project::watch(&docker, &project, &opts, interval, crate::shutdown_signal())
                    .await?;
            }
        }
        ComposeCmd::Ps { target, output } => {
            let name = target_project(&target)?;
            let docker = connect().await?;
            let list = project::ps(&docker, &name).await?;
            match output {
                Output::Json => {
                    let rows: Vec<serde_json::Value> = list
                        .iter()
                        .map(|c| {
                            serde_json::json!({
                                "service": c.service, "name": c.name, "number": c.number, "id": c.id,
                                "state": c.state.to_string(), "running": c.state.is_running(),
                                "health": c.health.map(|h| h.to_string()), "config_hash": c.config_hash,
                            })
                        })
                        .collect();
                    crate::outln!(
                        "{}",
                        serde_json::to_string_pretty(&rows).unwrap_or_default()
                    );
                }
                Output::Table => {
                    crate::outln!("{:<20} {:<32} {:<14} HEALTH", "SERVICE", "NAME", "STATE");
                    for c in &list {
                        let health = c
                            .health
                            .map(|h| h.to_string())
                            .unwrap_or_else(|| "-".into());
                        crate::outln!(
                            "{:<20} {:<32} {:<14} {health}",
                            c.service,
                            c.name,
                            c.state.to_string()
                        );
                    }
                }
            }
        }
        ComposeCmd::Down {
            target,
            volumes,
            timeout,
            state_dir,
        } => {
            let name = target_project(&target)?;
            let docker = connect().await?;
            let timeout = timeout.map(|s| Duration::from_secs(u64::from(s)));
            let report = project::down(&docker, &name, volumes, timeout).await?;
            if let Ok(dir) = files::local_dir(state_dir.as_deref(), &name)
                && dir.is_dir()
            {
                std::fs::remove_dir_all(&dir).map_err(|e| {
                    Failure::Environment(format!("removing {}: {e}", dir.display()))
                })?;
                crate::outln!("secret and config files {}: removed", dir.display());
            }
            for c in &report.containers {
                crate::outln!("container {c}: removed");
            }
            for n in &report.networks {
                crate::outln!("network {n}: removed");
            }
            for v in &report.volumes {
                crate::outln!("volume {v}: removed");
            }
            if report.containers.is_empty()
                && report.networks.is_empty()
                && report.volumes.is_empty()
            {
                crate::outln!("{name}: nothing to remove");
            }
        }
    }
    Ok(())
}
