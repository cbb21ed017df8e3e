//! `nococtl rollout …`: start (validated locally first, as `stack apply`), status (with `-w`,
//! live until the rollout ends), pause, resume, abort, undo and history.

pub mod settings;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use noco_proto::v1 as pb;
use noco_proto::v1::control_client::ControlClient;
use pb::{RolloutAction, RolloutHostPhase, RolloutPhase};
use tonic::transport::Channel;

use crate::cli::{RolloutCmd, RolloutFlags, RolloutWatch, StackSource};
use crate::client;
use crate::error::{CtlError, refused};
use crate::output::{self, Format, Screen, ago_ms, errln, outln, short_revision, truncate};
use crate::stack::{read_valid, wire_files};
use crate::view::rollout::{DETAIL_WIDTH, RolloutEventView, RolloutHostView, RolloutView};
use noco_proto::duration;

use self::settings::{Ending, Settings};

/// How many events `status` shows.
const EVENTS_SHOWN: usize = 10;
/// How long one call may take while watching.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    cmd: RolloutCmd,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    match cmd {
        RolloutCmd::Start {
            stack,
            source,
            settings,
            watch,
        } => {
            let source = source.source()?;
            start(&stack, &source, &settings, &watch, path, server, out).await
        }
        RolloutCmd::Status { stack, watch } => status(&stack, &watch, path, server, out).await,
        RolloutCmd::Pause { stack } => {
            control(&stack, RolloutAction::Pause, path, server, out).await
        }
        RolloutCmd::Resume { stack } => {
            control(&stack, RolloutAction::Resume, path, server, out).await
        }
        RolloutCmd::Abort { stack } => {
            control(&stack, RolloutAction::Abort, path, server, out).await
        }
        RolloutCmd::Undo {
            stack,
            settings,
            watch,
        } => undo(&stack, &settings, &watch, path, server, out).await,
        RolloutCmd::History { stack } => history(&stack, path, server, out).await,
    }
}

/// What the flags say; `None` where a flag was left out.
pub fn flag_settings(f: &RolloutFlags) -> Settings {
    let either = |yes: bool, no: bool| match (yes, no) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    Settings {
        canary: f.canary,
        batch: f.batch,
        min_healthy: f.min_healthy,
        deadline: f.deadline,
        max_failures: f.max_failures,
        auto_rollback: either(f.auto_rollback, f.no_auto_rollback),
        pause_after_canary: either(f.pause_after_canary, f.no_pause_after_canary),
        backup_first: either(f.backup_first, f.no_backup_first),
    }
}

fn checked_config(s: &Settings) -> Result<pb::RolloutConfig, CtlError> {
    s.config()
        .map_err(|e| CtlError::Local(format!("rollout settings: {e}")))
}

async fn start(
    stack: &str,
    source: &StackSource,
    flags: &RolloutFlags,
    watch: &RolloutWatch,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (local, _) = read_valid(source, stack)?;
    let file = settings::compose_defaults(&local.compose).map_err(|e| {
        CtlError::Local(format!(
            "{}: {e}; nothing was sent to the server",
            local.compose_path.display()
        ))
    })?;
    let config = checked_config(&flag_settings(flags).or(file))?;
    let (_, mut ctl) = client::open(path, server).await?;
    let info = ctl
        .start_rollout(pb::StartRolloutRequest {
            stack: stack.to_string(),
            compose: local.compose.clone().into_bytes(),
            env: local.env.clone().into_iter().collect(),
            files: wire_files(&local),
            config: Some(config),
        })
        .await
        .map_err(|s| refused(&format!("start a rollout of stack {stack}"), s))?
        .into_inner();
    started(&mut ctl, stack, &RolloutView::from(&info), watch, out).await
}

async fn undo(
    stack: &str,
    flags: &RolloutFlags,
    watch: &RolloutWatch,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let config = checked_config(&flag_settings(flags))?;
    let (_, mut ctl) = client::open(path, server).await?;
    let info = ctl
        .undo_rollout(pb::UndoRolloutRequest {
            stack: stack.to_string(),
            config: Some(config),
        })
        .await
        .map_err(|s| refused(&format!("undo the last rollout of stack {stack}"), s))?
        .into_inner();
    started(&mut ctl, stack, &RolloutView::from(&info), watch, out).await
}

/// After StartRollout or UndoRollout: the plan, then (with `-w`) the watch.
async fn started(
    ctl: &mut ControlClient<Channel>,
    stack: &str,
    info: &RolloutView,
    watch: &RolloutWatch,
    out: Format,
) -> Result<(), CtlError> {
    for w in &info.warnings {
        errln!("warning: {w}");
    }
    match out {
        Format::Json if !watch.watch => output::json(info),
        Format::Json => {}
        Format::Table => {
            for line in plan_lines(info) {
                outln!("{line}");
            }
            if !watch.watch {
                errln!("follow it with: nococtl rollout status {stack} -w");
            }
        }
    }
    if watch.watch {
        return follow(ctl, stack, Some(&info.id), watch.timeout, out).await;
    }
    Ok(())
}

async fn status(
    stack: &str,
    watch: &RolloutWatch,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    if watch.watch {
        return follow(&mut ctl, stack, None, watch.timeout, out).await;
    }
    let info = fetch(&mut ctl, stack, None).await?;
    match out {
        Format::Json => output::json(&info),
        Format::Table => print_info(&info),
    }
    Ok(())
}

async fn control(
    stack: &str,
    action: RolloutAction,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let info = ctl
        .control_rollout(pb::ControlRolloutRequest {
            stack: stack.to_string(),
            action: action.into(),
        })
        .await
        .map_err(|s| refused(&format!("{action} the rollout of stack {stack}"), s))?
        .into_inner();
    let info = RolloutView::from(&info);
    match out {
        Format::Json => output::json(&info),
        Format::Table => {
            outln!(
                "rollout {} of {}: {}",
                info.id,
                info.stack,
                phase_line(&info)
            );
            match action {
                RolloutAction::Pause if info.phase == RolloutPhase::Paused => outln!(
                    "hosts in flight finish, no new step starts; resume with: nococtl rollout resume {stack}"
                ),
                RolloutAction::Abort => outln!("{}", abort_note(&info)),
                _ => {}
            }
        }
    }
    Ok(())
}

async fn history(
    stack: &str,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let rollouts = ctl
        .list_rollouts(pb::ListRolloutsRequest {
            stack: stack.to_string(),
        })
        .await
        .map_err(|s| refused(&format!("list the rollouts of stack {stack}"), s))?
        .into_inner()
        .rollouts;
    let rollouts: Vec<RolloutView> = rollouts.iter().map(RolloutView::from).collect();
    match out {
        Format::Table if rollouts.is_empty() => outln!("stack {stack} has had no rollout"),
        _ => output::list(out, &rollouts),
    }
    Ok(())
}

/// The stack's rollout: with `id`, that one (from the history once a newer one has started),
/// else the active or latest one.
async fn fetch(
    ctl: &mut ControlClient<Channel>,
    stack: &str,
    id: Option<&str>,
) -> Result<RolloutView, CtlError> {
    let info = ctl
        .get_rollout(pb::GetRolloutRequest {
            stack: stack.to_string(),
        })
        .await
        .map_err(|s| refused(&format!("read the rollout of stack {stack}"), s))?
        .into_inner();
    let Some(id) = id.filter(|id| *id != info.id) else {
        return Ok(RolloutView::from(&info));
    };
    ctl.list_rollouts(pb::ListRolloutsRequest {
        stack: stack.to_string(),
    })
    .await
    .map_err(|s| refused(&format!("list the rollouts of stack {stack}"), s))?
    .into_inner()
    .rollouts
    .into_iter()
    .find(|r| r.id == id)
    .map(|r| RolloutView::from(&r))
    .ok_or_else(|| {
        CtlError::Refused(format!(
            "rollout {id} of stack {stack} is not in the stack's rollout history any more"
        ))
    })
}

/// `-w`: redraw every second on a terminal (one line per change otherwise) until the rollout
/// is in a final phase or `timeout` passes.
async fn follow(
    ctl: &mut ControlClient<Channel>,
    stack: &str,
    id: Option<&str>,
    timeout: Duration,
    out: Format,
) -> Result<(), CtlError> {
    let started = tokio::time::Instant::now();
    // Redrawn in place on a terminal; Ctrl-C ends the watch as an interrupted one (130).
    let screen = (output::stdout_is_terminal() && out == Format::Table).then(|| Screen::start(130));
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<RolloutView> = None;
    loop {
        let call = tokio::time::timeout(CALL_TIMEOUT, fetch(ctl, stack, id)).await;
        let problem = match call {
            Ok(Ok(info)) => {
                last = Some(info);
                None
            }
            Ok(Err(e)) if last.is_none() => return Err(e),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "rollout status: no answer from the server within {}",
                duration::format(CALL_TIMEOUT)
            )),
        };
        let elapsed = started.elapsed();
        if let (Format::Table, Some(info)) = (out, &last) {
            if let Some(screen) = &screen {
                let mut lines = info_lines(info);
                lines.push(String::new());
                lines.push(format!(
                    "{} — {} elapsed of {}",
                    watch_summary(info),
                    duration::format(Duration::from_secs(elapsed.as_secs())),
                    duration::format(timeout)
                ));
                screen.draw(&lines);
            } else {
                print_changes(info, &mut shown);
            }
        }
        if let Some(p) = &problem {
            errln!("nococtl: {p} (retrying)");
        }
        let ended = last
            .as_ref()
            .filter(|_| problem.is_none())
            .and_then(|info| final_result(info).map(|result| (info, result)));
        if let Some((info, result)) = ended {
            if out == Format::Json {
                output::json(info);
            }
            return result;
        }
        if elapsed >= timeout {
            if let (Format::Json, Some(info)) = (out, &last) {
                output::json(info);
            }
            let what = match &last {
                Some(info) => format!(
                    "the rollout of {stack} is still {} ({}); it goes on on the server",
                    info.phase,
                    step_text(info)
                ),
                None => problem.unwrap_or_else(|| "no answer from the server".to_string()),
            };
            return Err(CtlError::Refused(format!(
                "timed out after {}: {what}",
                duration::format(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How `-w` ends for a rollout in a final phase: success (exit 0), or the phase and reason
/// (exit 1); `None` while the rollout goes on.
fn final_result(info: &RolloutView) -> Option<Result<(), CtlError>> {
    settings::ending(info.phase).map(|ending| match ending {
        Ending::Succeeded => Ok(()),
        Ending::NotSucceeded => Err(CtlError::Refused(ended_text(info))),
    })
}

/// The error a watch ends with when the rollout did not succeed.
fn ended_text(info: &RolloutView) -> String {
    let mut text = format!("rollout {} of {} ended {}", info.id, info.stack, info.phase);
    if !info.reason.is_empty() {
        text.push_str(&format!(": {}", info.reason));
    }
    text
}

/// The last line under the redrawn screen.
fn watch_summary(info: &RolloutView) -> String {
    if info.phase == RolloutPhase::Paused {
        format!(
            "paused ({}): resume with: nococtl rollout resume {}",
            step_text(info),
            info.stack
        )
    } else {
        phase_line(info)
    }
}

/// Not a terminal: one line when the phase or step changes, one per host whose row changes.
fn print_changes(info: &RolloutView, shown: &mut BTreeMap<String, String>) {
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    for (key, line) in change_lines(info) {
        if shown.get(&key) != Some(&line) {
            outln!("{now} {line}");
            shown.insert(key, line);
        }
    }
}

/// Keyed lines for [`print_changes`]: the rollout's phase, then each host.
fn change_lines(info: &RolloutView) -> Vec<(String, String)> {
    let mut lines = vec![(
        String::new(),
        format!(
            "rollout {} of {}: {}",
            info.id,
            info.stack,
            phase_line(info)
        ),
    )];
    for h in &info.hosts {
        let mut line = format!(
            "{} step {} {} target {}",
            h.host,
            h.step,
            h.phase,
            short_revision(&h.target_revision)
        );
        if !h.detail.is_empty() {
            line.push_str(&format!(": {}", truncate(&h.detail, DETAIL_WIDTH)));
        }
        if !h.backup_ids.is_empty() {
            line.push_str(&format!(" (backups: {})", h.backup_ids.join(", ")));
        }
        lines.push((format!("host {}", h.host), line));
    }
    lines
}

/// `step 2/4`, or `no steps`.
fn step_text(info: &RolloutView) -> String {
    if info.steps == 0 {
        "no steps".to_string()
    } else {
        format!("step {}/{}", info.step, info.steps)
    }
}

/// `running, step 2/4`, `rolled_back, step 1/4: <reason>`.
fn phase_line(info: &RolloutView) -> String {
    let mut line = format!("{}, {}", info.phase, step_text(info));
    if !info.reason.is_empty() {
        line.push_str(&format!(": {}", info.reason));
    }
    line
}

/// The hosts of each step, in step order.
fn steps_of(info: &RolloutView) -> BTreeMap<u32, Vec<&RolloutHostView>> {
    let mut steps: BTreeMap<u32, Vec<&RolloutHostView>> = BTreeMap::new();
    for h in &info.hosts {
        steps.entry(h.step).or_default().push(h);
    }
    steps
}

/// What start and undo print: the rollout, its revisions and its steps.
fn plan_lines(info: &RolloutView) -> Vec<String> {
    let mut lines = vec![format!(
        "rollout {} of {}: {} → {}, {} step{}",
        info.id,
        info.stack,
        short_revision(&info.from_revision),
        short_revision(&info.to_revision),
        info.steps,
        if info.steps == 1 { "" } else { "s" }
    )];
    for (step, hosts) in steps_of(info) {
        let names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
        lines.push(format!(
            "  step {step}{}: {}",
            if info.is_canary_step(step) {
                " (canary)"
            } else {
                ""
            },
            names.join(", ")
        ));
    }
    if let Some(c) = &info.config {
        lines.push(format!("settings: {}", settings::describe(c)));
    }
    lines.push(format!("phase: {}", phase_line(info)));
    lines
}

/// One bar per step: `1 [#] 2 [#~..] 3 [....]` — `#` done, `~` updating, `x` failed,
/// `.` waiting, `?` a phase this nococtl does not know.
fn step_bars(info: &RolloutView) -> String {
    steps_of(info)
        .into_iter()
        .map(|(step, hosts)| {
            let bar: String = hosts
                .iter()
                .map(|h| match h.phase {
                    RolloutHostPhase::Done => '#',
                    RolloutHostPhase::Updating => '~',
                    RolloutHostPhase::Failed => 'x',
                    RolloutHostPhase::Waiting => '.',
                    RolloutHostPhase::Unspecified => '?',
                })
                .collect();
            let done = hosts
                .iter()
                .filter(|h| h.phase == RolloutHostPhase::Done)
                .count();
            format!("{step} [{bar}] {done}/{}", hosts.len())
        })
        .collect::<Vec<_>>()
        .join("  ")
}

fn header_lines(info: &RolloutView) -> Vec<String> {
    let mut lines = vec![
        format!("stack:    {}", info.stack),
        format!(
            "rollout:  {}, started {} ({})",
            info.id,
            info.started,
            ago_ms(info.started_unix_ms)
        ),
        format!(
            "revision: {} → {}",
            short_revision(&info.from_revision),
            short_revision(&info.to_revision)
        ),
        format!("phase:    {}, {}", info.phase, step_text(info)),
    ];
    if !info.hosts.is_empty() {
        lines.push(format!("steps:    {}", step_bars(info)));
    }
    if !info.reason.is_empty() {
        lines.push(format!("reason:   {}", info.reason));
    }
    if let Some(c) = &info.config {
        lines.push(format!("settings: {}", settings::describe(c)));
    }
    lines
}

/// The hosts, ordered by step then name.
fn hosts_in_order(info: &RolloutView) -> Vec<&RolloutHostView> {
    let mut hosts: Vec<&RolloutHostView> = info.hosts.iter().collect();
    hosts.sort_by(|a, b| (a.step, &a.host).cmp(&(b.step, &b.host)));
    hosts
}

/// The last [`EVENTS_SHOWN`] events, oldest first.
fn last_events(info: &RolloutView) -> &[RolloutEventView] {
    let skip = info.events.len().saturating_sub(EVENTS_SHOWN);
    &info.events[skip..]
}

fn print_info(info: &RolloutView) {
    for line in info_lines(info) {
        outln!("{line}");
    }
}

/// The rollout as [`print_info`] shows it, line by line.
fn info_lines(info: &RolloutView) -> Vec<String> {
    let mut lines = header_lines(info);
    lines.push(String::new());
    if info.hosts.is_empty() {
        lines.push("no hosts".to_string());
    } else {
        lines.extend(output::listed_lines(&hosts_in_order(info)));
    }
    let backups = backup_lines(info);
    if !backups.is_empty() {
        lines.push(String::new());
        lines.extend(backups);
    }
    lines.push(String::new());
    if info.events.is_empty() {
        lines.push("no events".to_string());
    } else {
        lines.extend(output::listed_lines(last_events(info)));
    }
    lines
}

/// With backup_first: the backups each host made before its step, a row each (none: no lines).
fn backup_lines(info: &RolloutView) -> Vec<String> {
    let rows: Vec<Vec<String>> = hosts_in_order(info)
        .into_iter()
        .flat_map(|h| {
            h.backup_ids
                .iter()
                .map(|id| vec![h.host.clone(), id.clone()])
        })
        .collect();
    if rows.is_empty() {
        return Vec::new();
    }
    let mut lines =
        vec!["backups made before the steps (nococtl backup restore ID restores one):".to_string()];
    lines.extend(output::table_lines(&["HOST", "BACKUP"], &rows));
    lines
}

/// After an abort: where the hosts were left, from the server's reason (or, without one, its
/// newest event saying so), else from the hosts' pinned revisions.
fn abort_note(info: &RolloutView) -> String {
    const LEFT: &str = "hosts left as they are";
    let from_server = std::iter::once(&info.reason)
        .chain(info.events.iter().rev().map(|e| &e.what))
        .find_map(|text| text.find(LEFT).map(|at| text[at..].to_string()));
    if let Some(note) = from_server {
        return note;
    }
    let mut by_revision: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for h in &info.hosts {
        by_revision
            .entry(h.target_revision.as_str())
            .or_default()
            .push(h.host.as_str());
    }
    if by_revision.is_empty() {
        return format!("{LEFT}: the rollout had no hosts");
    }
    let parts: Vec<String> = by_revision
        .iter()
        .map(|(rev, hosts)| format!("{} on {}", hosts.join(", "), short_revision(rev)))
        .collect();
    format!("{LEFT}: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Listed;
    use crate::rollout::settings::Batch;

    const R1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const R2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn host(name: &str, step: u32, phase: RolloutHostPhase, target: &str) -> pb::RolloutHost {
        pb::RolloutHost {
            host: name.into(),
            phase: phase.into(),
            target_revision: target.into(),
            detail: String::new(),
            step,
            backup_ids: Vec::new(),
        }
    }

    fn info(phase: RolloutPhase) -> RolloutView {
        RolloutView::from(&pb::RolloutInfo {
            id: "r7".into(),
            stack: "shop".into(),
            from_revision: R1.into(),
            to_revision: R2.into(),
            phase: phase.into(),
            step: 2,
            steps: 3,
            hosts: vec![
                host("web-1", 1, RolloutHostPhase::Done, R2),
                host("web-3", 2, RolloutHostPhase::Updating, R2),
                host("web-2", 2, RolloutHostPhase::Done, R2),
                host("web-4", 3, RolloutHostPhase::Waiting, R1),
                host("web-5", 3, RolloutHostPhase::Waiting, R1),
            ],
            config: Some(pb::RolloutConfig {
                canary: 1,
                batch_count: 2,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn event(at_unix_ms: i64, host: &str, what: &str) -> RolloutEventView {
        RolloutEventView::from(&pb::RolloutEvent {
            at_unix_ms,
            host: host.into(),
            what: what.into(),
        })
    }

    #[test]
    fn flags_left_out_say_nothing_and_no_flags_override_the_file() {
        assert_eq!(flag_settings(&RolloutFlags::default()), Settings::default());
        let flags = RolloutFlags {
            batch: Some(Batch::Percent(50)),
            no_auto_rollback: true,
            pause_after_canary: true,
            ..Default::default()
        };
        let s = flag_settings(&flags);
        assert_eq!(s.batch, Some(Batch::Percent(50)));
        assert_eq!(s.auto_rollback, Some(false));
        assert_eq!(s.pause_after_canary, Some(true));
        assert_eq!(s.canary, None);
    }

    #[test]
    fn the_plan_lists_each_step_with_the_canary_marked() {
        let lines = plan_lines(&info(RolloutPhase::Running));
        assert_eq!(
            lines[0],
            "rollout r7 of shop: 111111111111 → 222222222222, 3 steps"
        );
        assert_eq!(lines[1], "  step 1 (canary): web-1");
        assert_eq!(lines[2], "  step 2: web-3, web-2");
        assert_eq!(lines[3], "  step 3: web-4, web-5");
        assert!(
            lines[4].starts_with("settings: canary 1, batch 2,"),
            "{}",
            lines[4]
        );
        assert_eq!(lines[5], "phase: running, step 2/3");
    }

    #[test]
    fn step_bars_show_each_hosts_phase_per_step() {
        let mut i = info(RolloutPhase::Running);
        i.hosts[1].phase = RolloutHostPhase::Failed;
        assert_eq!(step_bars(&i), "1 [#] 1/1  2 [x#] 1/2  3 [..] 0/2");
    }

    #[test]
    fn host_rows_are_ordered_by_step_then_host() {
        let i = info(RolloutPhase::Running);
        let rows: Vec<Vec<String>> = hosts_in_order(&i).iter().map(|h| h.cells()).collect();
        let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(names, ["web-1", "web-2", "web-3", "web-4", "web-5"]);
        assert_eq!(rows[0][1], "1 (canary)");
        assert_eq!(rows[1], ["web-2", "2", "done", "222222222222", "-"]);
    }

    #[test]
    fn only_the_last_ten_events_are_shown_oldest_first() {
        let mut i = info(RolloutPhase::Running);
        i.events = (0..15)
            .map(|n| {
                event(
                    0,
                    if n % 2 == 0 { "" } else { "web-1" },
                    &format!("event {n}"),
                )
            })
            .collect();
        let rows: Vec<Vec<String>> = last_events(&i).iter().map(Listed::cells).collect();
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[0][2], "event 5");
        assert_eq!(rows[0][1], "web-1");
        assert_eq!(rows[1][1], "-");
        assert_eq!(rows[9][2], "event 14");
    }

    #[test]
    fn the_abort_note_quotes_the_servers_reason_or_groups_hosts_by_revision() {
        let mut i = info(RolloutPhase::Aborted);
        i.reason = "aborted by alice; hosts left as they are: web-1, web-2 on 222222222222, the rest on 111111111111".into();
        assert_eq!(
            abort_note(&i),
            "hosts left as they are: web-1, web-2 on 222222222222, the rest on 111111111111"
        );
        i.reason.clear();
        i.events = vec![event(
            1,
            "",
            "Aborted: hosts left as they are: web-1 on 222222222222",
        )];
        assert_eq!(
            abort_note(&i),
            "hosts left as they are: web-1 on 222222222222"
        );
        i.events.clear();
        assert_eq!(
            abort_note(&i),
            "hosts left as they are: web-4, web-5 on 111111111111; web-1, web-3, web-2 on 222222222222"
        );
    }

    #[test]
    fn the_watch_exits_zero_on_success_one_on_other_final_phases_and_goes_on_otherwise() {
        assert!(matches!(
            final_result(&info(RolloutPhase::Succeeded)),
            Some(Ok(()))
        ));
        for phase in [
            RolloutPhase::Failed,
            RolloutPhase::RolledBack,
            RolloutPhase::RollbackFailed,
            RolloutPhase::Aborted,
        ] {
            let code = final_result(&info(phase)).map(|r| r.map_err(|e| e.exit_code()));
            assert_eq!(code, Some(Err(1)), "{phase}");
        }
        for phase in [
            RolloutPhase::Running,
            RolloutPhase::Paused,
            RolloutPhase::RollingBack,
        ] {
            assert!(final_result(&info(phase)).is_none(), "{phase}");
        }
    }

    #[test]
    fn a_failed_rollout_ends_with_its_phase_and_reason() {
        let mut i = info(RolloutPhase::RolledBack);
        i.reason = "web-1: service api unhealthy".into();
        assert_eq!(
            ended_text(&i),
            "rollout r7 of shop ended rolled_back: web-1: service api unhealthy"
        );
        assert_eq!(
            phase_line(&i),
            "rolled_back, step 2/3: web-1: service api unhealthy"
        );
    }

    #[test]
    fn change_lines_key_the_rollout_and_each_host() {
        let mut i = info(RolloutPhase::Running);
        i.hosts[1].detail = "waiting for api to be healthy".into();
        let lines = change_lines(&i);
        assert_eq!(lines[0].1, "rollout r7 of shop: running, step 2/3");
        assert_eq!(
            lines[2],
            (
                "host web-3".to_string(),
                "web-3 step 2 updating target 222222222222: waiting for api to be healthy"
                    .to_string()
            )
        );
    }

    #[test]
    fn the_backups_each_host_made_before_its_step_are_listed_and_in_its_change_line() {
        let mut i = info(RolloutPhase::Running);
        assert!(backup_lines(&i).is_empty());
        assert!(!info_lines(&i).iter().any(|l| l.contains("BACKUP")));
        i.hosts[2].backup_ids = vec!["shop.db.20231114T221300Z.1a2b3c4d".into()];
        i.hosts[0].backup_ids = vec![
            "shop.db.20231114T221200Z.00000001".into(),
            "shop.files.20231114T221200Z.00000002".into(),
        ];
        assert_eq!(
            backup_lines(&i),
            [
                "backups made before the steps (nococtl backup restore ID restores one):",
                "HOST   BACKUP",
                "web-1  shop.db.20231114T221200Z.00000001",
                "web-1  shop.files.20231114T221200Z.00000002",
                "web-2  shop.db.20231114T221300Z.1a2b3c4d",
            ]
        );
        let text = info_lines(&i).join("\n");
        assert!(text.contains("\nbackups made before the steps"), "{text}");
        let lines = change_lines(&i);
        assert!(
            lines[3]
                .1
                .ends_with("target 222222222222 (backups: shop.db.20231114T221300Z.1a2b3c4d)"),
            "{}",
            lines[3].1
        );
        let flags = RolloutFlags {
            backup_first: true,
            ..Default::default()
        };
        assert_eq!(flag_settings(&flags).backup_first, Some(true));
        // Sent to the server as RolloutConfig.backup_first, over the file's.
        let file =
            settings::compose_defaults("x-noco:\n  rollout:\n    backup_first: true\n").unwrap();
        assert!(checked_config(&flag_settings(&flags)).unwrap().backup_first);
        assert!(
            checked_config(&flag_settings(&RolloutFlags::default()).or(file.clone()))
                .unwrap()
                .backup_first
        );
        let flags = RolloutFlags {
            no_backup_first: true,
            ..Default::default()
        };
        assert_eq!(flag_settings(&flags).backup_first, Some(false));
        assert!(
            !checked_config(&flag_settings(&flags).or(file))
                .unwrap()
                .backup_first
        );
    }

    #[test]
    fn json_uses_the_proto_field_names() {
        let v = serde_json::to_value(info(RolloutPhase::Running)).unwrap();
        for key in [
            "id",
            "stack",
            "from_revision",
            "to_revision",
            "phase",
            "reason",
            "step",
            "steps",
            "hosts",
            "events",
            "started_unix_ms",
            "config",
        ] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        assert_eq!(v["hosts"][0]["target_revision"], R2);
        assert_eq!(v["config"]["batch_count"], 2);
        assert_eq!(v["config"]["min_healthy_ms"], 0);
        assert_eq!(v["phase"], "running");
        assert_eq!(v["hosts"][1]["phase"], "updating");
    }

    #[test]
    fn history_rows_show_short_revisions_and_a_dash_for_no_reason() {
        assert_eq!(
            info(RolloutPhase::Succeeded).cells(),
            ["r7", "-", "111111111111", "222222222222", "succeeded", "-"]
        );
    }
}
