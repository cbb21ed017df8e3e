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
use crate::engine::{EngineError, docker, project};

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
    },
    /// The stack's containers: service, state, health.
    Ps {
        #[arg(short = 'p', long = "project-name")]
        project: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove the stack's containers and networks (volumes only with --volumes).
    Down {
        #[arg(short = 'p', long = "project-name")]
        project: String,
        /// Also delete the stack's named volumes (their data is lost).
        #[arg(long)]
        volumes: bool,
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
    /// Project name (default: the file's top-level `name:`).
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
    /// Variables for interpolation, KEY=VALUE lines; repeatable, later files win. Default: `.env`
    /// next to the compose file, if there is one. The agent's own environment is never used.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// A variable for interpolation (wins over env files); repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
}

/// Files named by the compose file (env_file), read relative to the stack directory.
struct DirFiles(PathBuf);

impl FileSource for DirFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        let p = self.0.join(path);
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
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

/// Read the file and its variables, and load the model; warnings go to stderr.
fn load(args: &FileArgs) -> Result<(Project, PathBuf), Failure> {
    let yaml = read_text(&args.file, "")?;
    let dir = stack_dir(&args.file);
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
    let opts = LoadOptions {
        project_name: args.project.as_deref(),
        variables: &variables,
        files: &files,
    };
    match noco_compose::load(&yaml, &opts) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                crate::errln!("warning: {}: {w}", args.file.display());
            }
            Ok((loaded.project, dir))
        }
        Err(diags) => {
            let lines: Vec<String> = diags
                .iter()
                .map(|d| format!("{}: {d}", args.file.display()))
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
            let (project, _) = load(&args)?;
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
            let (project, _) = load(&args)?;
            let docker = connect().await?;
            let plan = project::plan(&docker, &project).await?;
            crate::out!("{plan}");
        }
        ComposeCmd::Up {
            file,
            wait_timeout,
            watch,
            interval,
        } => {
            let (project, dir) = load(&file)?;
            let (_, registry_credentials) = crate::config::AgentConfig::load(config)
                .map_err(|e| Failure::Environment(format!("{e:#}")))?;
            let docker = connect().await?;
            let opts = ApplyOptions {
                stack_dir: dir,
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
        ComposeCmd::Ps {
            project: name,
            output,
        } => {
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
            project: name,
            volumes,
        } => {
            let docker = connect().await?;
            let report = project::down(&docker, &name, volumes).await?;
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
