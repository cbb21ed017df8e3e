//! `-w` of `backup run|restore|verify`: poll each job (GetBackupJob, every 300 ms) until every
//! one has ended. On a terminal the jobs (host, name, phase, percent) are redrawn in place
//! ([`Screen`]; Ctrl-C ends the watch with 130, the jobs go on); into a pipe, one line per
//! change. Exit 0 when every job succeeded, 1 when one failed (each failure and its reason on
//! stderr) or the timeout passed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use noco_proto::duration;
use noco_proto::v1 as pb;
use noco_proto::v1::control_client::ControlClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::error::{CtlError, refused};
use crate::output::{self, Format, Screen, errln, outln};
use crate::view::backup::BackupJobView;

/// How often the jobs are read.
const POLL: Duration = Duration::from_millis(300);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a watch ended: the jobs as last read, and the exit.
pub struct Followed {
    pub jobs: Vec<BackupJobView>,
    pub result: Result<(), CtlError>,
}

/// Follow `jobs` until every one has ended or `timeout` passes.
pub async fn follow(
    ctl: &mut ControlClient<Channel>,
    mut jobs: Vec<BackupJobView>,
    timeout: Duration,
    out: Format,
) -> Followed {
    let started = tokio::time::Instant::now();
    // Redrawn in place on a terminal; Ctrl-C ends the watch as an interrupted one (130).
    let screen = (output::stdout_is_terminal() && out == Format::Table).then(|| Screen::start(130));
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut said: Option<String> = None;
    loop {
        let elapsed = started.elapsed();
        if let Some(screen) = &screen {
            let mut lines = output::listed_lines(&jobs);
            lines.push(String::new());
            lines.push(format!(
                "{} — {} elapsed of {}",
                summary(&jobs),
                duration::format(Duration::from_secs(elapsed.as_secs())),
                duration::format(timeout)
            ));
            screen.draw(&lines);
        } else if out == Format::Table {
            print_changes(&jobs, &mut shown);
        }
        if let Some(result) = ended(&jobs) {
            return Followed { jobs, result };
        }
        if elapsed >= timeout {
            let result = Err(CtlError::Failed(format!(
                "timed out after {}: {}; the jobs go on on the hosts",
                duration::format(timeout),
                still_going(&jobs)
            )));
            return Followed { jobs, result };
        }
        tokio::time::sleep(POLL).await;
        match poll(ctl, &mut jobs).await {
            Ok(None) => said = None,
            Ok(Some(problem)) => {
                // Said once while it lasts, not every 300 ms.
                if said.as_ref() != Some(&problem) {
                    errln!("nococtl: {problem} (retrying)");
                }
                said = Some(problem);
            }
            Err(e) => {
                return Followed {
                    jobs,
                    result: Err(e),
                };
            }
        }
    }
}

/// Read every job that has not ended, at once. A problem worth retrying (no answer, the server
/// unavailable) is returned to be said; a refusal (the job is gone, no right) ends the watch.
async fn poll(
    ctl: &ControlClient<Channel>,
    jobs: &mut [BackupJobView],
) -> Result<Option<String>, CtlError> {
    let mut calls = JoinSet::new();
    for (i, job) in jobs.iter().enumerate().filter(|(_, j)| !j.is_final()) {
        let mut ctl = ctl.clone();
        let id = job.id.clone();
        calls.spawn(async move {
            let call = ctl.get_backup_job(pb::GetBackupJobRequest { id: id.clone() });
            (i, id, tokio::time::timeout(CALL_TIMEOUT, call).await)
        });
    }
    let mut problem = None;
    while let Some(done) = calls.join_next().await {
        let Ok((i, id, answer)) = done else {
            continue;
        };
        match answer {
            Ok(Ok(job)) => {
                if let Some(slot) = jobs.get_mut(i) {
                    *slot = BackupJobView::from(&job.into_inner());
                }
            }
            Ok(Err(status)) if retryable(&status) => {
                problem = Some(refused(&format!("read job {id}"), status).to_string());
            }
            Ok(Err(status)) => return Err(refused(&format!("read job {id}"), status)),
            Err(_) => {
                problem = Some(format!(
                    "read job {id}: no answer from the server within {}",
                    duration::format(CALL_TIMEOUT)
                ));
            }
        }
    }
    Ok(problem)
}

/// A failure that may pass: the connection, the server going away, a timeout.
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
    )
}

/// How the watch ends once every job has: 0 when all succeeded, else 1 naming each failure on
/// stderr. `None` while one goes on.
pub fn ended(jobs: &[BackupJobView]) -> Option<Result<(), CtlError>> {
    if !jobs.iter().all(BackupJobView::is_final) {
        return None;
    }
    let failed: Vec<&BackupJobView> = jobs
        .iter()
        .filter(|j| j.state == pb::BackupJobState::Failed)
        .collect();
    if failed.is_empty() {
        return Some(Ok(()));
    }
    for j in &failed {
        errln!("{}", failure_line(j));
    }
    Some(Err(CtlError::Failed(format!(
        "{} of {} {} failed (above)",
        failed.len(),
        jobs.len(),
        if jobs.len() == 1 { "job" } else { "jobs" }
    ))))
}

/// `web-1 shop/db: restore of shop.db.… failed: volume media vanished`.
pub fn failure_line(j: &BackupJobView) -> String {
    let what = match j.kind {
        pb::BackupJobKind::Run => "backup".to_string(),
        kind => format!("{kind} of {}", j.backup_id),
    };
    format!(
        "{} {}: {what} failed: {}",
        j.host_text(),
        j.stack_name(),
        if j.reason.is_empty() {
            "(no reason given)"
        } else {
            &j.reason
        }
    )
}

/// `1 of 3 done, 1 failed` for the line under the redrawn screen.
pub fn summary(jobs: &[BackupJobView]) -> String {
    let done = jobs.iter().filter(|j| j.is_final()).count();
    let failed = jobs
        .iter()
        .filter(|j| j.state == pb::BackupJobState::Failed)
        .count();
    let mut text = format!("{done} of {} done", jobs.len());
    if failed > 0 {
        text.push_str(&format!(", {failed} failed"));
    }
    text
}

/// The jobs still going, for the timeout's message: `web-1 shop/db (running, uploading 40%)`.
fn still_going(jobs: &[BackupJobView]) -> String {
    let going: Vec<String> = jobs
        .iter()
        .filter(|j| !j.is_final())
        .map(|j| format!("{} {} ({})", j.host_text(), j.stack_name(), progress(j)))
        .collect();
    format!("still going: {}", going.join(", "))
}

/// `running, uploading 40%`, `pending`, `failed: why`.
fn progress(j: &BackupJobView) -> String {
    let mut text = j.state.to_string();
    if !j.phase_text().is_empty() {
        text.push_str(&format!(", {}", j.phase_text()));
        if j.percent >= 0 {
            text.push_str(&format!(" {}", j.percent_text()));
        }
    }
    if !j.reason.is_empty() {
        text.push_str(&format!(": {}", j.reason));
    }
    text
}

/// Not a terminal: one line per job whose state, phase or percent changed.
fn print_changes(jobs: &[BackupJobView], shown: &mut BTreeMap<String, String>) {
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    for (key, line) in change_lines(jobs) {
        if shown.get(&key) != Some(&line) {
            outln!("{now} {line}");
            shown.insert(key, line);
        }
    }
}

/// Keyed lines for [`print_changes`]: `web-1 shop/db run shop.db.… running, dumping 42%`.
fn change_lines(jobs: &[BackupJobView]) -> Vec<(String, String)> {
    jobs.iter()
        .map(|j| {
            (
                j.id.clone(),
                format!(
                    "{} {} {} {} {}",
                    j.host_text(),
                    j.stack_name(),
                    j.kind,
                    output::or_dash(&j.backup_id),
                    progress(j)
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::backup::tests::job;
    use pb::BackupJobState::{Failed, Pending, Running, Succeeded};

    fn view(state: pb::BackupJobState, phase: &str, percent: i32) -> BackupJobView {
        BackupJobView::from(&job(state, phase, percent))
    }

    #[test]
    fn the_watch_goes_on_until_every_job_has_ended() {
        assert!(ended(&[view(Succeeded, "", 100), view(Running, "dumping", 5)]).is_none());
        assert!(ended(&[view(Pending, "", -1)]).is_none());
        assert!(matches!(
            ended(&[view(Succeeded, "", 100), view(Succeeded, "", 100)]),
            Some(Ok(()))
        ));
    }

    #[test]
    fn one_failed_job_ends_the_watch_with_1_and_its_reason() {
        let mut failed = view(Failed, "", -1);
        failed.reason = "pg_dump exited 1".into();
        failed.host = "web-2".into();
        let e = ended(&[view(Succeeded, "", 100), failed.clone()])
            .unwrap()
            .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "1 of 2 jobs failed (above)");
        assert_eq!(
            failure_line(&failed),
            "web-2 shop/db: backup failed: pg_dump exited 1"
        );
        failed.kind = pb::BackupJobKind::Restore;
        assert_eq!(
            failure_line(&failed),
            "web-2 shop/db: restore of shop.db.20231114T221320Z.1a2b3c4d failed: pg_dump exited 1"
        );
    }

    #[test]
    fn a_change_line_says_host_name_phase_and_percent() {
        let lines = change_lines(&[view(Running, "uploading", 40), view(Pending, "", -1)]);
        assert_eq!(
            lines[0].1,
            "web-1 shop/db run shop.db.20231114T221320Z.1a2b3c4d running, uploading 40%"
        );
        assert_eq!(
            lines[1].1,
            "web-1 shop/db run shop.db.20231114T221320Z.1a2b3c4d pending"
        );
        assert_eq!(
            change_lines(&[view(Succeeded, "uploading", 100)])[0].1,
            "web-1 shop/db run shop.db.20231114T221320Z.1a2b3c4d succeeded"
        );
        let mut failed = view(Failed, "", -1);
        failed.reason = "disk full".into();
        assert!(change_lines(&[failed])[0].1.ends_with("failed: disk full"));
    }

    #[test]
    fn the_summary_counts_done_and_failed_jobs() {
        assert_eq!(
            summary(&[view(Succeeded, "", 100), view(Running, "dumping", 5)]),
            "1 of 2 done"
        );
        assert_eq!(
            summary(&[view(Failed, "", -1), view(Succeeded, "", 100)]),
            "2 of 2 done, 1 failed"
        );
        assert_eq!(
            still_going(&[view(Running, "dumping", 5), view(Succeeded, "", 100)]),
            "still going: web-1 shop/db (running, dumping 5%)"
        );
    }
}
