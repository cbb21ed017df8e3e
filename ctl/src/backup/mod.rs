//! `nococtl backup …`: ls, run, show, verify, restore (asking first), download (checked, then
//! decrypted and decompressed) and rm (asking first). Backups are declared in the stack's
//! compose file (`x-noco.backups`, read by `noco_compose`); the server keeps the catalog and
//! orders the hosts, and `-w` follows the jobs it hands out ([`watch`]).

mod confirm;
mod download;
mod watch;

use std::path::Path;

use noco_proto::v1 as pb;
use noco_proto::v1::control_client::ControlClient;
use tonic::transport::Channel;

use crate::cli::{BackupCmd, BackupTarget, BackupWatch};
use crate::client;
use crate::error::{CtlError, refused};
use crate::output::{self, Format, ago_ms, errln, human_bytes, or_dash, outln, short_revision};
use crate::view::backup::{BackupJobView, BackupView, manifest_lines};

pub async fn run(
    cmd: BackupCmd,
    file: Option<String>,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    match cmd {
        BackupCmd::Ls { stack, host, name } => {
            let request = pb::ListBackupsRequest {
                stack: stack.unwrap_or_default(),
                host: host.unwrap_or_default(),
                name: name.unwrap_or_default(),
            };
            ls(request, path, server, out).await
        }
        BackupCmd::Run {
            target,
            hosts,
            watch,
        } => run_now(&target, hosts, &watch, path, server, out).await,
        BackupCmd::Show { id } => show(&id, path, server, out).await,
        BackupCmd::Job { id, watch } => {
            let (_, mut ctl) = client::open(path, server).await?;
            let job = ctl
                .get_backup_job(pb::GetBackupJobRequest { id: id.clone() })
                .await
                .map_err(|s| refused(&format!("backup job {id}"), s))?
                .into_inner();
            one_job(&mut ctl, BackupJobView::from(&job), &watch, out).await
        }
        BackupCmd::Verify { id, host, watch } => {
            verify(&id, host.unwrap_or_default(), &watch, path, server, out).await
        }
        BackupCmd::Restore {
            id,
            to_host,
            yes,
            watch,
        } => {
            // Refused before connecting when nobody can be asked.
            let ask = confirm::ask_first(yes, output::stdin_is_terminal(), "restore", "restore")?;
            restore(
                &id,
                to_host.unwrap_or_default(),
                ask,
                &watch,
                path,
                server,
                out,
            )
            .await
        }
        BackupCmd::Rm { id, yes } => {
            let ask = confirm::ask_first(yes, output::stdin_is_terminal(), "rm", "remove")?;
            rm(&id, ask, path, server, out).await
        }
        BackupCmd::Download { id, identity } => {
            download::run(&id, file.as_deref(), identity.as_deref(), path, server).await
        }
    }
}

async fn ls(
    request: pb::ListBackupsRequest,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let backups = ctl
        .list_backups(request.clone())
        .await
        .map_err(|s| refused("list backups", s))?
        .into_inner()
        .backups;
    let backups: Vec<BackupView> = backups.iter().map(BackupView::from).collect();
    match out {
        Format::Table if backups.is_empty() => outln!("{}", no_backups(&request)),
        _ => output::list(out, &backups),
    }
    Ok(())
}

/// `no backups of stack shop named db on host web-1`.
fn no_backups(r: &pb::ListBackupsRequest) -> String {
    let mut text = "no backups".to_string();
    if !r.stack.is_empty() {
        text.push_str(&format!(" of stack {}", r.stack));
    }
    if !r.name.is_empty() {
        text.push_str(&format!(" named {}", r.name));
    }
    if !r.host.is_empty() {
        text.push_str(&format!(" on host {}", r.host));
    }
    text
}

async fn run_now(
    target: &BackupTarget,
    hosts: Vec<String>,
    watch: &BackupWatch,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let what = match &target.name {
        Some(name) => format!("back up {}/{name}", target.stack),
        None => format!("back up stack {}", target.stack),
    };
    let (_, mut ctl) = client::open(path, server).await?;
    let jobs = ctl
        .run_backup(pb::RunBackupRequest {
            stack: target.stack.clone(),
            name: target.name.clone().unwrap_or_default(),
            hosts,
        })
        .await
        .map_err(|s| refused(&what, s))?
        .into_inner()
        .jobs;
    let jobs: Vec<BackupJobView> = jobs.iter().map(BackupJobView::from).collect();
    if watch.watch {
        let followed = watch::follow(&mut ctl, jobs, watch.timeout, out).await;
        if out == Format::Json {
            output::json(&followed.jobs);
        }
        return followed.result;
    }
    match out {
        Format::Json => output::json(&jobs),
        Format::Table if jobs.is_empty() => outln!("no backup was started"),
        Format::Table => {
            output::listed_table(&jobs);
            errln!(
                "the hosts make them now (a pending job waits for its host to come online); see them with: nococtl backup ls --stack {}",
                target.stack
            );
        }
    }
    Ok(())
}

async fn get(ctl: &mut ControlClient<Channel>, id: &str) -> Result<BackupView, CtlError> {
    let info = ctl
        .get_backup(pb::GetBackupRequest { id: id.to_string() })
        .await
        .map_err(|s| refused(&format!("read backup {id}"), s))?
        .into_inner();
    Ok(BackupView::from(&info))
}

async fn show(id: &str, path: &Path, server: Option<&str>, out: Format) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let backup = get(&mut ctl, id).await?;
    match out {
        Format::Json => output::json(&backup),
        Format::Table => {
            for line in show_lines(&backup) {
                outln!("{line}");
            }
        }
    }
    Ok(())
}

/// What `backup show` prints.
fn show_lines(b: &BackupView) -> Vec<String> {
    let at = |time: &str, ms: i64| {
        if ms > 0 {
            format!("{time} ({})", ago_ms(ms))
        } else {
            "-".to_string()
        }
    };
    let mut lines = vec![
        format!("backup:     {}", b.id),
        format!(
            "stack:      {} (revision {})",
            b.stack,
            short_revision(&b.revision)
        ),
        format!("name:       {} ({})", b.name, b.kind),
        format!("host:       {} ({})", or_dash(&b.host), or_dash(&b.host_id)),
        format!("state:      {}", b.state),
    ];
    if !b.reason.is_empty() {
        lines.push(format!("reason:     {}", b.reason));
    }
    lines.push(format!("trigger:    {}", b.trigger_text()));
    lines.push(format!("started:    {}", at(&b.started, b.started_unix_ms)));
    lines.push(format!(
        "finished:   {}",
        at(&b.finished, b.finished_unix_ms)
    ));
    lines.push(format!("size:       {}", size_line(b)));
    lines.push(format!("sha256:     {}", or_dash(&b.sha256)));
    lines.push(format!(
        "encrypted:  {}",
        if b.recipients.is_empty() {
            "no".to_string()
        } else {
            format!("to {}", b.recipients.join(", "))
        }
    ));
    lines.push(format!("verified:   {}", b.verified_text()));
    lines.push(String::new());
    lines.push("manifest:".to_string());
    lines.extend(manifest_lines(&b.manifest));
    lines
}

/// `12.3 MiB stored (12900000 bytes), 39.1 MiB of content`; an upload in progress says how far.
fn size_line(b: &BackupView) -> String {
    if b.size == 0 && b.uploaded == 0 {
        return "-".to_string();
    }
    let mut text = if b.state == pb::BackupState::PendingUpload || b.size == 0 {
        format!("{} uploaded", human_bytes(b.uploaded))
    } else {
        format!("{} stored ({} bytes)", human_bytes(b.size), b.size)
    };
    if b.state == pb::BackupState::PendingUpload && b.size > 0 {
        text.push_str(&format!(" of {}", human_bytes(b.size)));
    }
    if b.content_size > 0 {
        text.push_str(&format!(", {} of content", human_bytes(b.content_size)));
    }
    text
}

async fn verify(
    id: &str,
    host: String,
    watch: &BackupWatch,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let job = ctl
        .verify_backup(pb::VerifyBackupRequest {
            id: id.to_string(),
            host,
        })
        .await
        .map_err(|s| refused(&format!("verify backup {id}"), s))?
        .into_inner();
    one_job(&mut ctl, BackupJobView::from(&job), watch, out).await
}

async fn restore(
    id: &str,
    to_host: String,
    ask: bool,
    watch: &BackupWatch,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    if ask {
        let backup = get(&mut ctl, id).await?;
        let plan = confirm::restore_plan(&mut ctl, &backup, &to_host).await;
        let question = confirm::restore_question(&backup, &plan);
        if !confirm::prompt(&question).await? {
            return Err(CtlError::Failed(format!(
                "backup {id} was not restored: nothing was changed"
            )));
        }
    }
    let job = ctl
        .restore_backup(pb::RestoreBackupRequest {
            id: id.to_string(),
            to_host,
        })
        .await
        .map_err(|s| refused(&format!("restore backup {id}"), s))?
        .into_inner();
    one_job(&mut ctl, BackupJobView::from(&job), watch, out).await
}

/// After RestoreBackup or VerifyBackup: the job, or (with `-w`) the watch.
async fn one_job(
    ctl: &mut ControlClient<Channel>,
    job: BackupJobView,
    watch: &BackupWatch,
    out: Format,
) -> Result<(), CtlError> {
    if watch.watch {
        let followed = watch::follow(ctl, vec![job], watch.timeout, out).await;
        if let (Format::Json, Some(job)) = (out, followed.jobs.first()) {
            output::json(job);
        }
        return followed.result;
    }
    match out {
        Format::Json => output::json(&job),
        Format::Table => {
            output::listed_table(std::slice::from_ref(&job));
            errln!("{}", going_on(&job));
        }
    }
    Ok(())
}

/// What the host does now, and how to follow it.
fn going_on(job: &BackupJobView) -> String {
    let mut text = format!(
        "the {} of backup {} goes on on {} (a pending job waits for its host to come online); follow it: nococtl backup job {} -w",
        job.kind,
        job.backup_id,
        job.host_text(),
        job.id
    );
    if job.kind == pb::BackupJobKind::Verify {
        text.push_str(&format!(
            "; its result shows as VERIFIED in: nococtl backup show {}",
            job.backup_id
        ));
    }
    text
}

async fn rm(
    id: &str,
    ask: bool,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    if ask {
        let backup = get(&mut ctl, id).await?;
        if !confirm::prompt(&confirm::remove_question(&backup)).await? {
            return Err(CtlError::Failed(format!(
                "backup {id} was not removed: nothing was changed"
            )));
        }
    }
    let removed = ctl
        .remove_backup(pb::RemoveBackupRequest { id: id.to_string() })
        .await
        .map_err(|s| refused(&format!("remove backup {id}"), s))?
        .into_inner();
    let removed = BackupView::from(&removed);
    match out {
        Format::Json => output::json(&removed),
        Format::Table => outln!(
            "removed backup {} ({})",
            removed.id,
            confirm::summary(&removed)
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::backup::tests::info;

    #[test]
    fn show_prints_everything_with_the_manifest_last() {
        let text = show_lines(&BackupView::from(&info())).join("\n");
        for part in [
            "backup:     shop.db.20231114T221320Z.1a2b3c4d",
            "stack:      shop (revision 1111)",
            "name:       db (dump)",
            "host:       web-1 (h1)",
            "state:      complete",
            "trigger:    manual by alice",
            "started:    2023-11-14T22:13:20Z (",
            "size:       12.3 MiB stored (12900000 bytes), 39.1 MiB of content",
            "sha256:     0123456789abcdef",
            "encrypted:  to age1qqqqqqqqqqqqqqqq",
            "verified:   ok at 2023-11-14T22:15:20Z",
            "manifest:\n  dump:    [pg_dump, -U, app]",
            "    db.dump  39.1 MiB  ab12",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!text.contains("reason:"), "{text}");
        let mut failed = info();
        failed.state = pb::BackupState::Failed.into();
        failed.reason = "pg_dump exited 1".into();
        let text = show_lines(&BackupView::from(&failed)).join("\n");
        assert!(
            text.contains("state:      failed\nreason:     pg_dump exited 1"),
            "{text}"
        );
    }

    #[test]
    fn a_job_not_followed_says_where_its_outcome_shows() {
        use crate::view::backup::tests::job;
        let mut j = job(pb::BackupJobState::Pending, "", -1);
        j.kind = pb::BackupJobKind::Verify.into();
        assert_eq!(
            going_on(&BackupJobView::from(&j)),
            format!(
                "the verify of backup shop.db.20231114T221320Z.1a2b3c4d goes on on web-1 (a pending job waits for its host to come online); follow it: nococtl backup job {} -w; its result shows as VERIFIED in: nococtl backup show shop.db.20231114T221320Z.1a2b3c4d",
                j.id
            )
        );
        j.kind = pb::BackupJobKind::Restore.into();
        assert!(!going_on(&BackupJobView::from(&j)).contains("VERIFIED"));
    }

    #[test]
    fn an_empty_list_says_what_was_asked_for() {
        assert_eq!(no_backups(&pb::ListBackupsRequest::default()), "no backups");
        assert_eq!(
            no_backups(&pb::ListBackupsRequest {
                stack: "shop".into(),
                host: "web-1".into(),
                name: "db".into(),
            }),
            "no backups of stack shop named db on host web-1"
        );
    }

    #[test]
    fn an_upload_in_progress_says_how_far_it_is() {
        let mut b = info();
        b.state = pb::BackupState::PendingUpload.into();
        b.uploaded = 1024;
        b.size = 4096;
        b.content_size = 0;
        assert_eq!(
            size_line(&BackupView::from(&b)),
            "1.0 KiB uploaded of 4.0 KiB"
        );
        b.size = 0;
        b.uploaded = 0;
        assert_eq!(size_line(&BackupView::from(&b)), "-");
    }
}
