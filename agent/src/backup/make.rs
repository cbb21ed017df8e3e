//! Making one backup: stop what the declaration says (and always start it again), stream a dump
//! hook's stdout or the volumes' trees through the archive writer into the spool, and record the
//! archive as waiting for upload. Every failure is reported as a failure with its reason —
//! nothing half-made is ever reported as a backup.

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::Docker;
use noco_compose::backups::{BackupContent, BackupSpec};
use noco_compose::plan::RunState;
use noco_proto::v1::{self as pb, BackupInfo, BackupKind, BackupState};
use tokio::sync::mpsc;

use super::archive::{self, ArchiveOptions};
use super::ctx::{Ctx, Job, LoadedStack, now_ms};
use super::manifest::{self, Manifest};
use super::pipe::{ChunkReader, DEPTH};
use super::spool::{Bounded, spool_full};
use crate::engine::{docker_message, project};

/// Why a backup runs.
#[derive(Debug, Clone)]
pub struct Request {
    pub stack: String,
    pub name: String,
    /// The id to give it (an order's), else a new one.
    pub id: Option<String>,
    /// "schedule", "manual", "rollout".
    pub trigger: String,
    pub triggered_by: String,
    /// The schedule time it runs for.
    pub scheduled_unix_ms: i64,
}

/// A new backup id: `<stack>.<name>.<yyyymmddThhmmssZ>.<8 hex>`.
pub fn new_id(stack: &str, name: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{stack}.{name}.{:04}{:02}{:02}T{:02}{:02}{:02}Z.{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        noco_certs::random_hex::<4>()
    )
}

/// Make a backup; `job` (an order's) is told each phase. Returns the backup waiting for upload,
/// or the reason it failed (already reported as FAILED).
pub async fn make(
    ctx: &Ctx,
    req: &Request,
    mut job: Option<&mut Job>,
) -> Result<BackupInfo, String> {
    let _one = ctx.one_at_a_time.acquire().await;
    let id = req
        .id
        .clone()
        .unwrap_or_else(|| new_id(&req.stack, &req.name));
    let mut info = BackupInfo {
        id: id.clone(),
        stack: req.stack.clone(),
        name: req.name.clone(),
        host_id: ctx.host_id.clone(),
        state: BackupState::Running.into(),
        started_unix_ms: now_ms(),
        trigger: req.trigger.clone(),
        triggered_by: req.triggered_by.clone(),
        scheduled_unix_ms: req.scheduled_unix_ms,
        ..Default::default()
    };
    let job_id = job.as_ref().map(|j| j.job.id.clone());
    if let Some(j) = job.as_deref_mut() {
        j.job.backup_id = id.clone();
        j.job.stack = req.stack.clone();
        j.job.name = req.name.clone();
    }
    ctx.report_backup(&info);
    let result = make_inner(ctx, req, &mut info, job).await;
    let part = ctx.layout.part(&id);
    match result {
        Ok(()) => {
            info.state = BackupState::PendingUpload.into();
            info.finished_unix_ms = now_ms();
            ctx.layout.add_pending(&info, job_id.as_deref())?;
            tracing::info!(
                "backup {id}: made, {} ({} of content); waiting for upload",
                noco_proto::size::human(info.size),
                noco_proto::size::human(info.content_size)
            );
            ctx.report_backup(&info);
            Ok(info)
        }
        Err(reason) => {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(ctx.layout.archive(&id));
            tracing::error!("backup {id}: failed: {reason}");
            info.state = BackupState::Failed.into();
            info.reason = reason.clone();
            info.finished_unix_ms = now_ms();
            ctx.report_backup(&info);
            Err(reason)
        }
    }
}

async fn make_inner(
    ctx: &Ctx,
    req: &Request,
    info: &mut BackupInfo,
    mut job: Option<&mut Job>,
) -> Result<(), String> {
    let stack = ctx.stack(&req.stack).await?;
    let spec = stack.spec(&req.name)?.clone();
    info.revision = stack.state.revision.clone();
    info.recipients = spec.recipients.clone();
    info.kind = match spec.content {
        BackupContent::Dump { .. } => BackupKind::Dump,
        BackupContent::Volumes { .. } => BackupKind::Volumes,
    }
    .into();
    let used = ctx.layout.used();
    if used >= ctx.layout.limit {
        return Err(spool_full(ctx.layout.limit));
    }
    let room = ctx.layout.limit - used;
    let docker = ctx.docker().await?;
    let project_name = ctx.project_name(&req.stack);

    let _held = if spec.stop.is_empty() {
        None
    } else {
        Some(ctx.locks.lock(&req.stack).await)
    };
    let stopped = if spec.stop.is_empty() {
        Vec::new()
    } else {
        if let Some(j) = job.as_deref_mut() {
            j.phase(ctx, &format!("stopping {}", spec.stop.join(", ")), -1);
        }
        stop_services(&docker, &project_name, &spec.stop).await?
    };
    if let Some(j) = job {
        let what = match &spec.content {
            BackupContent::Dump { .. } => "dumping",
            BackupContent::Volumes { .. } => "archiving volumes",
        };
        j.phase(ctx, what, -1);
    }
    let made = write_archive(ctx, &docker, &stack, &spec, info, room).await;
    // Always start again what was stopped, whatever happened.
    let restarted = start_containers(&docker, &stopped).await;
    if restarted.is_ok()
        && let Err(e) = wait_ready(ctx, &docker, &stopped).await
    {
        // The archive is good; the service's trouble is its own (and the stack reports it).
        tracing::error!("backup {}: after the copy, {e}", info.id);
    }
    let written = made?;
    restarted?;
    let manifest = manifest_of(&stack, &spec, info, &ctx.host_id, &written);
    info.manifest_json =
        serde_json::to_string(&manifest).map_err(|e| format!("writing the manifest: {e}"))?;
    info.size = written.stored_size;
    info.sha256 = written.stored_sha256.clone();
    info.content_size = written.content_size;
    let part = ctx.layout.part(&info.id);
    let archive = ctx.layout.archive(&info.id);
    std::fs::rename(&part, &archive)
        .map_err(|e| format!("moving {} into place: {e}", archive.display()))?;
    Ok(())
}

/// The manifest of a made archive.
fn manifest_of(
    stack: &LoadedStack,
    spec: &BackupSpec,
    info: &BackupInfo,
    host: &str,
    written: &archive::Written,
) -> Manifest {
    let (kind, service, command, volumes) = match &spec.content {
        BackupContent::Dump { service, dump, .. } => (
            manifest::BackupKind::Dump,
            Some(service.clone()),
            Some(dump.clone()),
            Vec::new(),
        ),
        BackupContent::Volumes { volumes } => {
            (manifest::BackupKind::Volumes, None, None, volumes.clone())
        }
    };
    Manifest {
        format: manifest::FORMAT,
        stack: stack.state.name.clone(),
        name: spec.name.clone(),
        revision: stack.state.revision.clone(),
        host: host.to_owned(),
        kind,
        service,
        command,
        volumes,
        created: humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(info.started_unix_ms.max(0) as u64),
        )
        .to_string(),
        members: written.manifest_members.clone(),
        content_size: written.content_size,
        stored_size: written.stored_size,
        stored_sha256: written.stored_sha256.clone(),
        recipients: spec.recipients.clone(),
    }
}

/// The running containers of `services`, stopped; returns their ids, to start them again.
pub async fn stop_services(
    docker: &Docker,
    project_name: &str,
    services: &[String],
) -> Result<Vec<String>, String> {
    let containers = project::ps(docker, project_name)
        .await
        .map_err(|e| format!("listing the stack's containers: {e}"))?;
    let mut stopped = Vec::new();
    for c in containers
        .iter()
        .filter(|c| services.contains(&c.service) && c.state == RunState::Running)
    {
        tracing::info!("backup: stopping {} for the copy", c.name);
        if let Err(e) = docker
            .stop_container(
                &c.id,
                None::<bollard::query_parameters::StopContainerOptions>,
            )
            .await
        {
            let why = format!("stopping {}: {}", c.name, docker_message(&e));
            // Start again what was already stopped before giving up.
            let _ = start_containers(docker, &stopped).await;
            return Err(why);
        }
        stopped.push(c.id.clone());
    }
    Ok(stopped)
}

/// Start containers by id (those a backup or restore stopped).
pub async fn start_containers(docker: &Docker, ids: &[String]) -> Result<(), String> {
    let mut errors = Vec::new();
    for id in ids {
        if let Err(e) = crate::engine::docker::start(docker, id).await {
            let why = format!("starting {} again: {}", short_id(id), docker_message(&e));
            tracing::error!("backup: {why}");
            errors.push(why);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Wait until the containers run, and are healthy where they have a healthcheck.
pub async fn wait_ready(ctx: &Ctx, docker: &Docker, ids: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + ctx.wait_timeout;
    for id in ids {
        loop {
            let c = docker
                .inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .map_err(|e| docker_message(&e))?;
            let name = c.name.clone().unwrap_or_default();
            let state = c.state.unwrap_or_default();
            let running = state.running == Some(true);
            let health = state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .unwrap_or_default();
            if running && (health.is_empty() || health == "none" || health == "healthy") {
                break;
            }
            if health == "unhealthy" {
                return Err(format!("{} is unhealthy", name.trim_start_matches('/')));
            }
            if !running && state.restarting != Some(true) && Instant::now() > deadline {
                return Err(format!("{} is not running", name.trim_start_matches('/')));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} was not ready within {:?}",
                    name.trim_start_matches('/'),
                    ctx.wait_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A volume's directory on this host: its mountpoint (local driver).
pub async fn volume_dir(docker: &Docker, key: &str, docker_name: &str) -> Result<PathBuf, String> {
    let v = docker.inspect_volume(docker_name).await.map_err(|e| {
        if crate::engine::not_found(&e) {
            format!("volume {key} (Docker volume {docker_name}) does not exist")
        } else {
            format!("inspecting volume {docker_name}: {}", docker_message(&e))
        }
    })?;
    if v.driver != "local" {
        return Err(format!(
            "volume {key} uses the {:?} driver: only local volumes can be backed up from their mountpoint",
            v.driver
        ));
    }
    let dir = PathBuf::from(&v.mountpoint);
    if !dir.is_dir() {
        return Err(format!(
            "volume {key}: its mountpoint {} is not a directory this agent can read (does the agent run on the Docker host?)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The running container of a service a hook runs in (the first by number).
pub async fn hook_container(
    docker: &Docker,
    project_name: &str,
    service: &str,
) -> Result<String, String> {
    let containers = project::ps(docker, project_name)
        .await
        .map_err(|e| format!("listing the stack's containers: {e}"))?;
    containers
        .iter()
        .filter(|c| c.service == service && c.state == RunState::Running)
        .min_by_key(|c| c.number)
        .map(|c| c.id.clone())
        .ok_or_else(|| format!("service {service} has no running container to run the hook in"))
}

async fn write_archive(
    ctx: &Ctx,
    docker: &Docker,
    stack: &LoadedStack,
    spec: &BackupSpec,
    info: &BackupInfo,
    room: u64,
) -> Result<archive::Written, String> {
    let part = ctx.layout.part(&info.id);
    let file =
        std::fs::File::create(&part).map_err(|e| format!("creating {}: {e}", part.display()))?;
    let out = Bounded::new(
        BufWriter::with_capacity(1 << 20, file),
        room,
        ctx.layout.limit,
    );
    let opts = ArchiveOptions {
        recipients: spec.recipients.clone(),
        ..ArchiveOptions::default()
    };
    let project_name = ctx.project_name(&stack.state.name);
    match &spec.content {
        BackupContent::Volumes { volumes } => {
            let mut dirs = Vec::new();
            for key in volumes {
                let Some(v) = stack.project.volumes.get(key) else {
                    return Err(format!("the stack declares no volume {key}"));
                };
                dirs.push((key.clone(), volume_dir(docker, key, &v.name).await?));
            }
            tokio::task::spawn_blocking(move || {
                let written =
                    archive::write_volumes(&dirs, out, &opts).map_err(|e| e.to_string())?;
                Ok::<_, String>(written)
            })
            .await
            .map_err(|e| format!("the archive writer failed: {e}"))?
        }
        BackupContent::Dump { service, dump, .. } => {
            let container = hook_container(docker, &project_name, service).await?;
            let (tx, rx) = mpsc::channel(DEPTH);
            let writer = tokio::task::spawn_blocking(move || {
                archive::write_stream(ChunkReader::new(rx), out, &opts).map_err(|e| e.to_string())
            });
            let dumped = super::exec::dump(docker, &container, dump, tx).await;
            let written = writer
                .await
                .map_err(|e| format!("the archive writer failed: {e}"))?;
            let bytes = dumped?;
            let written = written?;
            if bytes == 0 {
                return Err(format!(
                    "{} exited 0 but wrote nothing: an empty dump is not a backup",
                    dump.first().map(String::as_str).unwrap_or("the dump")
                ));
            }
            Ok(written)
        }
    }
}

/// Run a backup for a RUN order: make it, then the uploader sends it; the job finishes when the
/// server holds it (see `upload`).
pub async fn for_order(ctx: &Ctx, order: &pb::Order, run: &pb::RunBackupOrder) {
    let mut job = Job::new(&order.id, pb::BackupJobKind::Run, &ctx.host_id);
    let req = Request {
        stack: run.stack.clone(),
        name: run.name.clone(),
        id: Some(run.backup_id.clone()),
        trigger: if run.trigger.is_empty() {
            "manual".into()
        } else {
            run.trigger.clone()
        },
        triggered_by: run.triggered_by.clone(),
        scheduled_unix_ms: 0,
    };
    job.phase(ctx, "starting", -1);
    match make(ctx, &req, Some(&mut job)).await {
        Ok(_) => {
            // The uploader finishes the job once the server holds the archive.
            job.phase(ctx, "uploading", 0);
            ctx.wake.notify_one();
        }
        Err(reason) => job.finish(ctx, &Err(reason)),
    }
}
