//! Restoring and verifying a backup, on orders from the server. The order carries the catalog's
//! record of the backup (signed), so what is downloaded is checked against its size and sha256
//! before anything is touched.
//!
//! A volume restore never deletes data before the new data is whole: each volume's tree is
//! extracted next to its data (`<mountpoint>.noco-restore-…`, the same filesystem), checked
//! against the manifest, and only then — with the services that mount the volumes stopped —
//! swapped in by renames. The services start; if they do not become ready the previous data is
//! swapped back. The previous data is deleted last. A dump restore runs the declared restore hook
//! with the archive on its stdin.
//!
//! Verify restores into scratch space (the volumes' trees extracted into the agent's work
//! directory, every member's sha256 compared with the manifest; a dump's sha256 compared and the
//! declared `verify` hook run on it) and touches nothing the stack uses.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use noco_compose::backups::BackupContent;
use noco_compose::model::MountKind;
use noco_proto::v1::{self as pb, BackupInfo, BackupKind};
use pb::backups_client::BackupsClient;
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::crypt::Identities;
use super::ctx::{Ctx, Job, LoadedStack};
use super::extract::{self, ExtractLimits};
use super::make::{hook_container, start_containers, volume_dir, wait_ready};
use super::manifest::{self, Manifest};
use super::pipe::{ChunkWriter, DEPTH};
use crate::engine::docker_message;

/// Downloads cut this many times in a row give up.
const DOWNLOAD_ATTEMPTS: usize = 5;

/// Restore on an order.
pub async fn restore(
    ctx: Arc<Ctx>,
    client: BackupsClient<Channel>,
    order: pb::Order,
    info: BackupInfo,
) {
    let mut job = Job::new(&order.id, pb::BackupJobKind::Restore, &ctx.host_id);
    job.job.backup_id = info.id.clone();
    job.job.stack = info.stack.clone();
    job.job.name = info.name.clone();
    let _one = ctx.one_at_a_time.acquire().await;
    let result = restore_inner(&ctx, client, &info, &mut job).await;
    match &result {
        Ok(what) => tracing::info!("backup {}: restored: {what}", info.id),
        Err(why) => tracing::error!("backup {}: restore failed: {why}", info.id),
    }
    let _ = std::fs::remove_file(download_path(&ctx, &order.id));
    job.finish(&ctx, &result);
}

/// Verify on an order.
pub async fn verify(
    ctx: Arc<Ctx>,
    client: BackupsClient<Channel>,
    order: pb::Order,
    info: BackupInfo,
) {
    let mut job = Job::new(&order.id, pb::BackupJobKind::Verify, &ctx.host_id);
    job.job.backup_id = info.id.clone();
    job.job.stack = info.stack.clone();
    job.job.name = info.name.clone();
    let _one = ctx.one_at_a_time.acquire().await;
    let result = verify_inner(&ctx, client, &info, &mut job).await;
    match &result {
        Ok(what) => tracing::info!("backup {}: verified: {what}", info.id),
        Err(why) => tracing::error!("backup {}: verify failed: {why}", info.id),
    }
    let _ = std::fs::remove_file(download_path(&ctx, &order.id));
    let _ = std::fs::remove_dir_all(ctx.layout.work().join(format!("verify-{}", order.id)));
    job.finish(&ctx, &result);
}

fn download_path(ctx: &Ctx, job: &str) -> PathBuf {
    ctx.layout.work().join(format!("{job}.archive"))
}

fn manifest_of(info: &BackupInfo) -> Result<Manifest, String> {
    serde_json::from_str(&info.manifest_json)
        .map_err(|e| format!("the backup's manifest does not read: {e}"))
}

fn identity(ctx: &Ctx) -> Result<Option<Identities>, String> {
    match &ctx.identity {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("reading the backup identity {}: {e}", path.display()))
            .and_then(|text| {
                Identities::parse(&text)
                    .map_err(|e| format!("the backup identity {}: {e}", path.display()))
            })
            .map(Some),
    }
}

/// Download the archive into the work directory, resuming after cuts, and check it is the one
/// the catalog (the signed order) describes.
async fn download(
    ctx: &Ctx,
    client: &mut BackupsClient<Channel>,
    info: &BackupInfo,
    job: &mut Job,
) -> Result<PathBuf, String> {
    let path = download_path(ctx, &job.job.id);
    // A fresh file per job: hashed as it arrives, never read back.
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut have = 0u64;
    let mut attempts = 0;
    let mut last_percent = -1;
    while have < info.size {
        attempts += 1;
        // A failed write leaves the file's end unknown: never resumed on.
        let mut disk_error = None;
        let result: Result<(), String> = async {
            let mut stream = client
                .download(pb::BackupDownloadRequest {
                    id: info.id.clone(),
                    offset: have,
                })
                .await
                .map_err(|e| noco_certs::dial::describe(&e))?
                .into_inner();
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|e| noco_certs::dial::describe(&e))?
            {
                if let Err(e) = file.write_all(&chunk.data).await {
                    let e = format!("writing {}: {e}", path.display());
                    disk_error = Some(e.clone());
                    return Err(e);
                }
                hasher.update(&chunk.data);
                have += chunk.data.len() as u64;
                if have > info.size {
                    return Err(format!(
                        "the server sent more than the archive's {} bytes",
                        info.size
                    ));
                }
                let percent = (have * 100 / info.size.max(1)) as i32;
                if percent / 5 != last_percent / 5 {
                    last_percent = percent;
                    job.phase(ctx, "downloading", percent);
                }
            }
            Ok(())
        }
        .await;
        if let Some(e) = disk_error {
            return Err(e);
        }
        if let Err(e) = result {
            if attempts >= DOWNLOAD_ATTEMPTS {
                return Err(format!("downloading the archive: {e}"));
            }
            tracing::warn!(
                "backup {}: download cut at {have} bytes: {e}; resuming",
                info.id
            );
            tokio::time::sleep(Duration::from_millis(500 * attempts as u64)).await;
        } else if have < info.size && attempts >= DOWNLOAD_ATTEMPTS {
            return Err(format!(
                "the download ended at {have} of {} bytes",
                info.size
            ));
        }
    }
    file.sync_all()
        .await
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    drop(file);
    let sha = (have, hex::encode(hasher.finalize()));
    if sha != (info.size, info.sha256.clone()) {
        return Err(format!(
            "the downloaded archive is not the one the catalog holds: {} bytes sha256 {}, expected {} bytes sha256 {}",
            sha.0, sha.1, info.size, info.sha256
        ));
    }
    Ok(path)
}

async fn restore_inner(
    ctx: &Ctx,
    mut client: BackupsClient<Channel>,
    info: &BackupInfo,
    job: &mut Job,
) -> Result<String, String> {
    let stack = ctx.stack(&info.stack).await?;
    let spec = stack.spec(&info.name)?.clone();
    let manifest = manifest_of(info)?;
    let identity = identity(ctx)?;
    let docker = ctx.docker().await?;
    match (&spec.content, info.kind()) {
        (BackupContent::Volumes { .. }, BackupKind::Volumes) => {
            let archive = download(ctx, &mut client, info, job).await?;
            restore_volumes(ctx, &docker, &stack, &manifest, &archive, identity, job).await
        }
        (
            BackupContent::Dump {
                service, restore, ..
            },
            BackupKind::Dump,
        ) => {
            let Some(restore) = restore.clone() else {
                return Err(format!(
                    "backup {} of stack {} declares no restore command (x-noco.backups.{}.restore)",
                    info.name, info.stack, info.name
                ));
            };
            let archive = download(ctx, &mut client, info, job).await?;
            let _held = ctx.locks.lock(&info.stack).await;
            let project = ctx.project_name(&info.stack);
            let stopped = stop_for(ctx, &docker, &project, &spec.stop, job).await?;
            job.phase(ctx, &format!("running {}", restore.join(" ")), -1);
            let container = hook_container(&docker, &project, service).await;
            let fed = match container {
                Ok(c) => feed_dump(&docker, &c, &restore, &archive, identity, &manifest).await,
                Err(e) => Err(e),
            };
            let started = start_containers(&docker, &stopped).await;
            let ready = wait_ready(ctx, &docker, &stopped).await;
            fed?;
            started?;
            ready?;
            Ok(format!("{} ran on the dump", restore.join(" ")))
        }
        (_, kind) => Err(format!(
            "backup {} is a {} backup but the stack now declares {} as {}",
            info.id,
            noco_proto::Enumeration::text(kind),
            info.name,
            match spec.content {
                BackupContent::Dump { .. } => "a dump",
                BackupContent::Volumes { .. } => "a volume backup",
            }
        )),
    }
}

/// Stop the running containers of `services` (holding the stack's lock is the caller's job).
async fn stop_for(
    ctx: &Ctx,
    docker: &Docker,
    project: &str,
    services: &[String],
    job: &mut Job,
) -> Result<Vec<String>, String> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    job.phase(ctx, &format!("stopping {}", services.join(", ")), -1);
    super::make::stop_services(docker, project, services).await
}

/// Stream a stored dump archive, opened (decrypted, decompressed) and hashed, into a hook's stdin.
async fn feed_dump(
    docker: &Docker,
    container: &str,
    argv: &[String],
    archive: &Path,
    identity: Option<Identities>,
    manifest: &Manifest,
) -> Result<String, String> {
    let (tx, rx) = mpsc::channel(DEPTH);
    let (plain_tx, plain_rx) = mpsc::channel(DEPTH);
    let archive = archive.to_path_buf();
    let expected = manifest.clone();
    // The archive must open (decrypt, decompress its start) before the hook runs: a hook given
    // no input at all could empty a database.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let opened = std::fs::File::open(&archive)
            .map_err(|e| format!("{}: {e}", archive.display()))
            .and_then(|file| {
                extract::open_stored(BufReader::new(file), identity.as_ref())
                    .map_err(|e| e.to_string())
            })
            .map(|plain| BufReader::with_capacity(super::pipe::CHUNK, plain));
        let mut plain = match opened {
            Ok(p) => p,
            Err(e) => {
                let _ = ready_tx.send(Err(e.clone()));
                return Err(e);
            }
        };
        if let Err(e) = std::io::BufRead::fill_buf(&mut plain) {
            let e = format!("reading the archive: {e}");
            let _ = ready_tx.send(Err(e.clone()));
            return Err(e);
        }
        let _ = ready_tx.send(Ok(()));
        let member =
            extract::stream_dump(plain, ChunkWriter::new(tx)).map_err(|e| e.to_string())?;
        manifest::compare(&expected.members, std::slice::from_ref(&member))
    });
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(match reader.await {
                Ok(Err(e)) => e,
                _ => "the archive reader failed".to_owned(),
            });
        }
    }
    // Forward chunks; the hook's stdin closes when the reader is done (the sender dropped here).
    let forward = async move {
        let mut rx = rx;
        while let Some(chunk) = rx.recv().await {
            if plain_tx.send(Ok(chunk)).await.is_err() {
                break;
            }
        }
    };
    let hook = super::exec::feed(docker, container, argv, plain_rx);
    let ((), hooked) = tokio::join!(forward, hook);
    let read = reader
        .await
        .map_err(|e| format!("the archive reader failed: {e}"))?;
    read?;
    hooked
}

async fn restore_volumes(
    ctx: &Ctx,
    docker: &Docker,
    stack: &LoadedStack,
    manifest: &Manifest,
    archive: &Path,
    identity: Option<Identities>,
    job: &mut Job,
) -> Result<String, String> {
    let project = ctx.project_name(&stack.state.name);
    let suffix: String = job
        .job
        .id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    // Each volume of the archive: its data dir and a staging dir beside it.
    let mut places: BTreeMap<String, (PathBuf, PathBuf)> = BTreeMap::new();
    for key in &manifest.volumes {
        let Some(v) = stack.project.volumes.get(key) else {
            return Err(format!(
                "the backup holds volume {key}, which stack {} no longer declares",
                stack.state.name
            ));
        };
        let data = volume_dir(docker, key, &v.name).await?;
        let staging = sibling(&data, &format!("noco-restore-{suffix}"))?;
        places.insert(key.clone(), (data, staging));
    }
    job.phase(ctx, "extracting", -1);
    let targets: BTreeMap<String, PathBuf> = places
        .iter()
        .map(|(k, (_, staging))| (k.clone(), staging.clone()))
        .collect();
    let extracted = extract_into(archive, identity, &targets, manifest).await;
    if let Err(e) = extracted {
        remove_dirs(targets.values().cloned().collect()).await;
        return Err(e);
    }

    // Swap with the users of the volumes stopped.
    let _held = ctx.locks.lock(&stack.state.name).await;
    let users: Vec<String> = stack
        .project
        .services
        .values()
        .filter(|s| {
            s.volumes.iter().any(|m| {
                matches!(&m.kind, MountKind::Volume { source: Some(src), .. } if places.contains_key(src))
            })
        })
        .map(|s| s.name.clone())
        .collect();
    let stopped = match stop_for(ctx, docker, &project, &users, job).await {
        Ok(s) => s,
        Err(e) => {
            remove_dirs(targets.values().cloned().collect()).await;
            return Err(e);
        }
    };
    job.phase(ctx, "swapping in the restored data", -1);
    let mut swapped: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut swap_error = None;
    for (key, (data, staging)) in &places {
        let old = match sibling(data, &format!("noco-old-{suffix}")) {
            Ok(o) => o,
            Err(e) => {
                swap_error = Some(e);
                break;
            }
        };
        if let Err(e) = std::fs::rename(data, &old) {
            swap_error = Some(format!("volume {key}: moving its data aside: {e}"));
            break;
        }
        if let Err(e) = std::fs::rename(staging, data) {
            let _ = std::fs::rename(&old, data);
            swap_error = Some(format!("volume {key}: moving the restored data in: {e}"));
            break;
        }
        swapped.push((data.clone(), old));
    }
    if let Some(e) = swap_error {
        swap_back(&swapped);
        let _ = start_containers(docker, &stopped).await;
        remove_dirs(targets.values().cloned().collect()).await;
        return Err(format!("{e}; the previous data is in place"));
    }
    job.phase(ctx, "starting services", -1);
    let started = start_containers(docker, &stopped).await;
    let ready = match started {
        Ok(()) => wait_ready(ctx, docker, &stopped).await,
        Err(e) => Err(e),
    };
    if let Err(e) = ready {
        // Put the previous data back and start on it.
        let _ = stop_ids(docker, &stopped).await;
        swap_back(&swapped);
        let _ = start_containers(docker, &stopped).await;
        return Err(format!(
            "the services did not come up on the restored data ({e}); the previous data is back"
        ));
    }
    remove_dirs(swapped.into_iter().map(|(_, old)| old).collect()).await;
    Ok(format!(
        "{} restored ({} members); {} restarted",
        manifest.volumes.join(", "),
        manifest.members.len(),
        if users.is_empty() {
            "nothing".to_owned()
        } else {
            users.join(", ")
        }
    ))
}

/// `<dir>.<tag>` next to `dir` (same filesystem, so a rename swaps it).
fn sibling(dir: &Path, tag: &str) -> Result<PathBuf, String> {
    let name = dir
        .file_name()
        .ok_or_else(|| format!("{} has no name", dir.display()))?;
    let mut sibling = name.to_os_string();
    sibling.push(format!(".{tag}"));
    Ok(dir.with_file_name(sibling))
}

fn swap_back(swapped: &[(PathBuf, PathBuf)]) {
    for (data, old) in swapped.iter().rev() {
        let failed = sibling(data, "noco-failed").ok();
        if let Some(failed) = &failed {
            let _ = std::fs::remove_dir_all(failed);
            let _ = std::fs::rename(data, failed);
        }
        if let Err(e) = std::fs::rename(old, data) {
            tracing::error!(
                "putting {} back as {}: {e}: the previous data is in {}",
                old.display(),
                data.display(),
                old.display()
            );
        }
        if let Some(failed) = failed {
            let _ = std::fs::remove_dir_all(failed);
        }
    }
}

async fn remove_dirs(dirs: Vec<PathBuf>) {
    let _ = tokio::task::spawn_blocking(move || {
        for d in dirs {
            if let Err(e) = std::fs::remove_dir_all(&d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("removing {}: {e}", d.display());
            }
        }
    })
    .await;
}

async fn stop_ids(docker: &Docker, ids: &[String]) -> Result<(), String> {
    for id in ids {
        docker
            .stop_container(id, None::<bollard::query_parameters::StopContainerOptions>)
            .await
            .map_err(|e| docker_message(&e))?;
    }
    Ok(())
}

/// Extract the archive's volumes into `targets` (fresh dirs) and compare with the manifest.
async fn extract_into(
    archive: &Path,
    identity: Option<Identities>,
    targets: &BTreeMap<String, PathBuf>,
    manifest: &Manifest,
) -> Result<usize, String> {
    let archive = archive.to_path_buf();
    let targets = targets.clone();
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || -> Result<usize, String> {
        for dir in targets.values() {
            std::fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let file =
            std::fs::File::open(&archive).map_err(|e| format!("{}: {e}", archive.display()))?;
        let plain = extract::open_stored(BufReader::new(file), identity.as_ref())
            .map_err(|e| e.to_string())?;
        let got =
            extract::extract_volumes(plain, &targets, &ExtractLimits::for_manifest(&manifest))
                .map_err(|e| e.to_string())?;
        manifest::compare(&manifest.members, &got.members)?;
        Ok(got.members.len())
    })
    .await
    .map_err(|e| format!("the extractor failed: {e}"))?
}

async fn verify_inner(
    ctx: &Ctx,
    mut client: BackupsClient<Channel>,
    info: &BackupInfo,
    job: &mut Job,
) -> Result<String, String> {
    let manifest = manifest_of(info)?;
    let identity = identity(ctx)?;
    let archive = download(ctx, &mut client, info, job).await?;
    match info.kind() {
        BackupKind::Volumes => {
            job.phase(ctx, "restoring into scratch space", -1);
            let scratch = ctx.layout.work().join(format!("verify-{}", job.job.id));
            std::fs::create_dir_all(&scratch)
                .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
            let targets: BTreeMap<String, PathBuf> = manifest
                .volumes
                .iter()
                .map(|v| (v.clone(), scratch.join(v)))
                .collect();
            let n = extract_into(&archive, identity, &targets, &manifest).await?;
            Ok(format!(
                "{n} members restored into scratch space, every sha256 matches"
            ))
        }
        BackupKind::Dump => {
            // The hook, when the stack declares one, checks the dump with its own tool.
            let hook = match ctx.stack(&info.stack).await {
                Ok(stack) => match stack.spec(&info.name).map(|s| s.content.clone()) {
                    Ok(BackupContent::Dump {
                        service,
                        verify: Some(v),
                        ..
                    }) => Some((service, v)),
                    _ => None,
                },
                Err(_) => None,
            };
            match hook {
                Some((service, argv)) => {
                    job.phase(ctx, &format!("running {}", argv.join(" ")), -1);
                    let docker = ctx.docker().await?;
                    let project = ctx.project_name(&info.stack);
                    let container = hook_container(&docker, &project, &service).await?;
                    feed_dump(&docker, &container, &argv, &archive, identity, &manifest).await?;
                    Ok(format!("sha256 matches; {} accepted it", argv.join(" ")))
                }
                None => {
                    job.phase(ctx, "reading the dump", -1);
                    let expected = manifest.clone();
                    tokio::task::spawn_blocking(move || -> Result<(), String> {
                        let file = std::fs::File::open(&archive)
                            .map_err(|e| format!("{}: {e}", archive.display()))?;
                        let plain = extract::open_stored(BufReader::new(file), identity.as_ref())
                            .map_err(|e| e.to_string())?;
                        let member = extract::stream_dump(plain, std::io::sink())
                            .map_err(|e| e.to_string())?;
                        manifest::compare(&expected.members, std::slice::from_ref(&member))
                    })
                    .await
                    .map_err(|e| format!("the reader failed: {e}"))??;
                    Ok(
                        "the dump decodes whole and its sha256 matches (no verify hook declared)"
                            .to_owned(),
                    )
                }
            }
        }
        BackupKind::Unspecified => Err(format!("backup {} has no kind", info.id)),
    }
}
