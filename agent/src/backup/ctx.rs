//! What every backup task shares: the spool layout, the host, the stacks the host runs now, the
//! Docker connection, the stack locks, and the way reports go to the server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use noco_compose::backups::BackupSpec;
use noco_compose::model::Project;
use noco_proto::v1::{self as pb, BackupReport, DesiredState, StackState};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use super::spool::Layout;
use crate::datadir::DataDir;
use crate::locks::StackLocks;

pub struct Ctx {
    pub layout: Layout,
    pub host_id: String,
    pub data_dir: DataDir,
    pub project_prefix: String,
    pub locks: StackLocks,
    pub desired: watch::Receiver<Option<Arc<DesiredState>>>,
    /// The age identity file for encrypted archives (`[backup] identity`).
    pub identity: Option<PathBuf>,
    /// How long a service may take to be ready again after a backup or restore.
    pub wait_timeout: Duration,
    /// Wakes the uploader (a new archive or report).
    pub wake: Notify,
    /// Live progress of jobs, sent when connected (dropped otherwise: the outcome is durable).
    pub progress: mpsc::Sender<BackupReport>,
    /// One backup or restore at a time on a host: they compete for the same disks.
    pub one_at_a_time: Semaphore,
    docker: tokio::sync::OnceCell<Docker>,
}

/// A stack as the host runs it now, loaded.
pub struct LoadedStack {
    pub state: StackState,
    pub project: Project,
}

impl LoadedStack {
    pub fn spec(&self, name: &str) -> Result<&BackupSpec, String> {
        self.project
            .backups
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .project
                    .backups
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect();
                let hint = noco_compose::suggest::did_you_mean(name, names.iter().copied())
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                format!(
                    "stack {} (revision {}) declares no backup {name:?}{hint}",
                    self.state.name,
                    short(&self.state.revision)
                )
            })
    }
}

pub use crate::report::now_ms;
use noco_compose::revision::short;

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        layout: Layout,
        host_id: String,
        data_dir: DataDir,
        project_prefix: String,
        locks: StackLocks,
        desired: watch::Receiver<Option<Arc<DesiredState>>>,
        identity: Option<PathBuf>,
        wait_timeout: Duration,
        progress: mpsc::Sender<BackupReport>,
    ) -> Self {
        Ctx {
            layout,
            host_id,
            data_dir,
            project_prefix,
            locks,
            desired,
            identity,
            wait_timeout,
            wake: Notify::new(),
            progress,
            one_at_a_time: Semaphore::new(1),
            docker: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn docker(&self) -> Result<Docker, String> {
        self.docker
            .get_or_try_init(|| async {
                crate::engine::docker::connect()
                    .await
                    .map_err(|e| format!("Docker is not available: {e}"))
            })
            .await
            .cloned()
    }

    pub fn project_name(&self, stack: &str) -> String {
        format!("{}{stack}", self.project_prefix)
    }

    /// The stacks the host runs now (its accepted desired state).
    pub fn stacks(&self) -> Vec<StackState> {
        self.desired
            .borrow()
            .as_ref()
            .map(|s| s.stacks.clone())
            .unwrap_or_default()
    }

    /// Load a stack the host runs now, from its revision's files.
    pub async fn stack(&self, name: &str) -> Result<LoadedStack, String> {
        let Some(state) = self.stacks().into_iter().find(|s| s.name == name) else {
            return Err(format!("this host does not run stack {name:?}"));
        };
        let stacks = self.data_dir.stacks();
        let project_name = self.project_name(name);
        let owned = state.clone();
        tokio::task::spawn_blocking(move || {
            let dir_name = crate::stackdir::check_stack(&owned)?;
            let dir = crate::stackdir::write_revision(&stacks, &owned, &dir_name)?;
            crate::stacks::load_project(&owned, &dir, &project_name)
        })
        .await
        .map_err(|e| format!("loading stack {name}: {e}"))?
        .map(|loaded| LoadedStack {
            state,
            project: loaded.project,
        })
    }

    /// Send a report the server must get: queued on disk, delivered in order when it is there.
    pub fn report_durably(&self, report: BackupReport) {
        if let Err(e) = self.layout.queue_report(&report) {
            tracing::error!("backups: queueing a report: {e}");
        }
        self.wake.notify_one();
    }

    /// Send a job's progress now if the server is there (progress only; outcomes are durable).
    pub fn report_progress(&self, job: &pb::BackupJob) {
        let _ = self.progress.try_send(BackupReport {
            msg: Some(pb::backup_report::Msg::Job(job.clone())),
        });
    }

    pub fn report_backup(&self, info: &pb::BackupInfo) {
        self.report_durably(BackupReport {
            msg: Some(pb::backup_report::Msg::Backup(info.clone())),
        });
    }
}

/// A job an order started, and how it reports.
pub struct Job {
    pub job: pb::BackupJob,
}

impl Job {
    pub fn new(id: &str, kind: pb::BackupJobKind, host_id: &str) -> Self {
        Job {
            job: pb::BackupJob {
                id: id.to_owned(),
                kind: kind.into(),
                state: pb::BackupJobState::Running.into(),
                host_id: host_id.to_owned(),
                percent: -1,
                ..Default::default()
            },
        }
    }

    pub fn phase(&mut self, ctx: &Ctx, phase: &str, percent: i32) {
        self.job.phase = phase.to_owned();
        self.job.percent = percent;
        ctx.report_progress(&self.job);
    }

    pub fn finish(mut self, ctx: &Ctx, result: &Result<String, String>) {
        match result {
            Ok(phase) => {
                self.job.state = pb::BackupJobState::Succeeded.into();
                self.job.phase = phase.clone();
                self.job.percent = 100;
            }
            Err(reason) => {
                self.job.state = pb::BackupJobState::Failed.into();
                self.job.reason = reason.clone();
            }
        }
        self.job.finished_unix_ms = now_ms();
        ctx.report_durably(BackupReport {
            msg: Some(pb::backup_report::Msg::Job(self.job)),
        });
    }
}
