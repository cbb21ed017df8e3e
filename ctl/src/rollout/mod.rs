//! `nococtl rollout …`: start (validated locally first, as `stack apply`), status (with `-w`,
//! live until the rollout ends), pause, resume, abort, undo and history.

pub mod settings;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, SystemTime};

use noco_proto::v1 as pb;
use noco_proto::v1::control_client::ControlClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::error::{CtlError, refused};
use crate::output::{self, Format, ago_ms, errln, out, outln, rfc3339_ms, short_revision};
use crate::stack::{or_dash, read_valid, wire_files};
use crate::status::truncate;
use crate::{RolloutCmd, RolloutFlags, RolloutWatch, StackSource, client};

use self::settings::{Ending, Settings};

/// How many events `status` shows.
const EVENTS_SHOWN: usize = 10;
/// How long the DETAIL and REASON columns may be.
const DETAIL_WIDTH: usize = 80;
/// How long the EVENT column may be.
const EVENT_WIDTH: usize = 120;
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
        } => start(&stack, &source, &settings, &watch, path, server, out).await,
        RolloutCmd::Status { stack, watch } => status(&stack, &watch, path, server, out).await,
        RolloutCmd::Pause { stack } => control(&stack, "pause", path, server, out).await,
        RolloutCmd::Resume { stack } => control(&stack, "resume", path, server, out).await,
        RolloutCmd::Abort { stack } => control(&stack, "abort", path, server, out).await,
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
    started(&mut ctl, stack, &info, watch, out).await
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
    started(&mut ctl, stack, &info, watch, out).await
}

/// After StartRollout or UndoRollout: the plan, then (with `-w`) the watch.
async fn started(
    ctl: &mut ControlClient<Channel>,
    stack: &str,
    info: &pb::RolloutInfo,
    watch: &RolloutWatch,
    out: Format,
) -> Result<(), CtlError> {
    match out {
        Format::Json if !watch.watch => output::json(&info_json(info)),
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
        Format::Json => output::json(&info_json(&info)),
        Format::Table => print_info(&info),
    }
    Ok(())
}

async fn control(
    stack: &str,
    action: &str,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let info = ctl
        .control_rollout(pb::ControlRolloutRequest {
            stack: stack.to_string(),
            action: action.to_string(),
        })
        .await
        .map_err(|s| refused(&format!("{action} the rollout of stack {stack}"), s))?
        .into_inner();
    match out {
        Format::Json => output::json(&info_json(&info)),
        Format::Table => {
            outln!(
                "rollout {} of {}: {}",
                info.id,
                info.stack,
                phase_line(&info)
            );
            match action {
                "pause" if info.phase == "paused" => outln!(
                    "hosts in flight finish, no new step starts; resume with: nococtl rollout resume {stack}"
                ),
                "abort" => outln!("{}", abort_note(&info)),
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
    match out {
        Format::Json => output::json(&json!(rollouts.iter().map(info_json).collect::<Vec<_>>())),
        Format::Table => {
            if rollouts.is_empty() {
                outln!("stack {stack} has had no rollout");
            } else {
                output::table(
                    &["ID", "STARTED", "FROM", "TO", "PHASE", "REASON"],
                    &history_rows(&rollouts),
                );
            }
        }
    }
    Ok(())
}

fn history_rows(rollouts: &[pb::RolloutInfo]) -> Vec<Vec<String>> {
    rollouts
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                rfc3339_ms(r.started_unix_ms),
                short_revision(&r.from_revision),
                short_revision(&r.to_revision),
                r.phase.clone(),
                or_dash(&truncate(&r.reason, DETAIL_WIDTH)),
            ]
        })
        .collect()
}

/// The stack's rollout: with `id`, that one (from the history once a newer one has started),
/// else the active or latest one.
async fn fetch(
    ctl: &mut ControlClient<Channel>,
    stack: &str,
    id: Option<&str>,
) -> Result<pb::RolloutInfo, CtlError> {
    let info = ctl
        .get_rollout(pb::GetRolloutRequest {
            stack: stack.to_string(),
        })
        .await
        .map_err(|s| refused(&format!("read the rollout of stack {stack}"), s))?
        .into_inner();
    let Some(id) = id.filter(|id| *id != info.id) else {
        return Ok(info);
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
    let tty = std::io::stdout().is_terminal();
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<pb::RolloutInfo> = None;
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
                humantime::format_duration(CALL_TIMEOUT)
            )),
        };
        let elapsed = started.elapsed();
        if let (Format::Table, Some(info)) = (out, &last) {
            if tty {
                out!("\x1b[H\x1b[2J");
                print_info(info);
                outln!(
                    "\n{} — {} elapsed of {}",
                    watch_summary(info),
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                    humantime::format_duration(timeout)
                );
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
                output::json(&info_json(info));
            }
            return result;
        }
        if elapsed >= timeout {
            if let (Format::Json, Some(info)) = (out, &last) {
                output::json(&info_json(info));
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
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How `-w` ends for a rollout in a final phase: success (exit 0), or the phase and reason
/// (exit 1); `None` while the rollout goes on.
fn final_result(info: &pb::RolloutInfo) -> Option<Result<(), CtlError>> {
    settings::ending(&info.phase).map(|ending| match ending {
        Ending::Succeeded => Ok(()),
        Ending::NotSucceeded => Err(CtlError::Refused(ended_text(info))),
    })
}

/// The error a watch ends with when the rollout did not succeed.
fn ended_text(info: &pb::RolloutInfo) -> String {
    let mut text = format!("rollout {} of {} ended {}", info.id, info.stack, info.phase);
    if !info.reason.is_empty() {
        text.push_str(&format!(": {}", info.reason));
    }
    text
}

/// The last line under the redrawn screen.
fn watch_summary(info: &pb::RolloutInfo) -> String {
    match info.phase.as_str() {
        "paused" => format!(
            "paused ({}): resume with: nococtl rollout resume {}",
            step_text(info),
            info.stack
        ),
        _ => phase_line(info),
    }
}

/// Not a terminal: one line when the phase or step changes, one per host whose row changes.
fn print_changes(info: &pb::RolloutInfo, shown: &mut BTreeMap<String, String>) {
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    for (key, line) in change_lines(info) {
        if shown.get(&key) != Some(&line) {
            outln!("{now} {line}");
            shown.insert(key, line);
        }
    }
}

/// Keyed lines for [`print_changes`]: the rollout's phase, then each host.
fn change_lines(info: &pb::RolloutInfo) -> Vec<(String, String)> {
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
        lines.push((format!("host {}", h.host), line));
    }
    lines
}

/// `step 2/4`, or `no steps`.
fn step_text(info: &pb::RolloutInfo) -> String {
    if info.steps == 0 {
        "no steps".to_string()
    } else {
        format!("step {}/{}", info.step, info.steps)
    }
}

/// `running, step 2/4`, `rolled_back, step 1/4: <reason>`.
fn phase_line(info: &pb::RolloutInfo) -> String {
    let mut line = format!("{}, {}", info.phase, step_text(info));
    if !info.reason.is_empty() {
        line.push_str(&format!(": {}", info.reason));
    }
    line
}

/// The hosts of each step, in step order.
fn steps_of(info: &pb::RolloutInfo) -> BTreeMap<u32, Vec<&pb::RolloutHost>> {
    let mut steps: BTreeMap<u32, Vec<&pb::RolloutHost>> = BTreeMap::new();
    for h in &info.hosts {
        steps.entry(h.step).or_default().push(h);
    }
    steps
}

fn is_canary_step(info: &pb::RolloutInfo, step: u32) -> bool {
    step == 1 && info.config.as_ref().is_some_and(|c| c.canary > 0)
}

/// What start and undo print: the rollout, its revisions and its steps.
fn plan_lines(info: &pb::RolloutInfo) -> Vec<String> {
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
            if is_canary_step(info, step) {
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
fn step_bars(info: &pb::RolloutInfo) -> String {
    steps_of(info)
        .into_iter()
        .map(|(step, hosts)| {
            let bar: String = hosts
                .iter()
                .map(|h| match h.phase.as_str() {
                    "done" => '#',
                    "updating" => '~',
                    "failed" => 'x',
                    "waiting" => '.',
                    _ => '?',
                })
                .collect();
            let done = hosts.iter().filter(|h| h.phase == "done").count();
            format!("{step} [{bar}] {done}/{}", hosts.len())
        })
        .collect::<Vec<_>>()
        .join("  ")
}

fn header_lines(info: &pb::RolloutInfo) -> Vec<String> {
    let mut lines = vec![
        format!("stack:    {}", info.stack),
        format!(
            "rollout:  {}, started {} ({})",
            info.id,
            rfc3339_ms(info.started_unix_ms),
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

fn host_rows(info: &pb::RolloutInfo) -> Vec<Vec<String>> {
    let mut hosts: Vec<&pb::RolloutHost> = info.hosts.iter().collect();
    hosts.sort_by(|a, b| (a.step, &a.host).cmp(&(b.step, &b.host)));
    hosts
        .iter()
        .map(|h| {
            vec![
                h.host.clone(),
                if is_canary_step(info, h.step) {
                    format!("{} (canary)", h.step)
                } else {
                    h.step.to_string()
                },
                h.phase.clone(),
                short_revision(&h.target_revision),
                or_dash(&truncate(&h.detail, DETAIL_WIDTH)),
            ]
        })
        .collect()
}

/// The last [`EVENTS_SHOWN`] events, oldest first.
fn event_rows(info: &pb::RolloutInfo) -> Vec<Vec<String>> {
    let skip = info.events.len().saturating_sub(EVENTS_SHOWN);
    info.events
        .iter()
        .skip(skip)
        .map(|e| {
            vec![
                rfc3339_ms(e.at_unix_ms),
                or_dash(&e.host),
                truncate(&e.what, EVENT_WIDTH),
            ]
        })
        .collect()
}

fn print_info(info: &pb::RolloutInfo) {
    for line in header_lines(info) {
        outln!("{line}");
    }
    outln!();
    if info.hosts.is_empty() {
        outln!("no hosts");
    } else {
        output::table(
            &["HOST", "STEP", "PHASE", "TARGET", "DETAIL"],
            &host_rows(info),
        );
    }
    outln!();
    if info.events.is_empty() {
        outln!("no events");
    } else {
        output::table(&["TIME", "HOST", "EVENT"], &event_rows(info));
    }
}

/// After an abort: where the hosts were left, from the server's reason (or, without one, its
/// newest event saying so), else from the hosts' pinned revisions.
fn abort_note(info: &pb::RolloutInfo) -> String {
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

fn config_json(c: &pb::RolloutConfig) -> Value {
    json!({
        "canary": c.canary, "batch_count": c.batch_count, "batch_percent": c.batch_percent,
        "min_healthy_ms": c.min_healthy_ms, "deadline_ms": c.deadline_ms,
        "max_failures": c.max_failures, "auto_rollback": c.auto_rollback,
        "pause_after_canary": c.pause_after_canary,
    })
}

/// RolloutInfo as JSON, every field under its proto name (plus `started` and each event's
/// `at` as RFC 3339).
fn info_json(r: &pb::RolloutInfo) -> Value {
    json!({
        "id": r.id, "stack": r.stack, "from_revision": r.from_revision,
        "to_revision": r.to_revision, "phase": r.phase, "reason": r.reason,
        "step": r.step, "steps": r.steps,
        "hosts": r.hosts.iter().map(|h| json!({
            "host": h.host, "phase": h.phase, "target_revision": h.target_revision,
            "detail": h.detail, "step": h.step,
        })).collect::<Vec<_>>(),
        "events": r.events.iter().map(|e| json!({
            "at_unix_ms": e.at_unix_ms, "at": rfc3339_ms(e.at_unix_ms), "host": e.host, "what": e.what,
        })).collect::<Vec<_>>(),
        "started_unix_ms": r.started_unix_ms, "started": rfc3339_ms(r.started_unix_ms),
        "config": r.config.as_ref().map(config_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::settings::Batch;

    const R1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const R2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn host(name: &str, step: u32, phase: &str, target: &str) -> pb::RolloutHost {
        pb::RolloutHost {
            host: name.into(),
            phase: phase.into(),
            target_revision: target.into(),
            detail: String::new(),
            step,
        }
    }

    fn info(phase: &str) -> pb::RolloutInfo {
        pb::RolloutInfo {
            id: "r7".into(),
            stack: "shop".into(),
            from_revision: R1.into(),
            to_revision: R2.into(),
            phase: phase.into(),
            step: 2,
            steps: 3,
            hosts: vec![
                host("web-1", 1, "done", R2),
                host("web-3", 2, "updating", R2),
                host("web-2", 2, "done", R2),
                host("web-4", 3, "waiting", R1),
                host("web-5", 3, "waiting", R1),
            ],
            config: Some(pb::RolloutConfig {
                canary: 1,
                batch_count: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
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
        let lines = plan_lines(&info("running"));
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
        let mut i = info("running");
        i.hosts[1].phase = "failed".into();
        assert_eq!(step_bars(&i), "1 [#] 1/1  2 [x#] 1/2  3 [..] 0/2");
    }

    #[test]
    fn host_rows_are_ordered_by_step_then_host() {
        let rows = host_rows(&info("running"));
        let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(names, ["web-1", "web-2", "web-3", "web-4", "web-5"]);
        assert_eq!(rows[0][1], "1 (canary)");
        assert_eq!(rows[1], ["web-2", "2", "done", "222222222222", "-"]);
    }

    #[test]
    fn only_the_last_ten_events_are_shown_oldest_first() {
        let mut i = info("running");
        i.events = (0..15)
            .map(|n| pb::RolloutEvent {
                at_unix_ms: 0,
                host: if n % 2 == 0 {
                    String::new()
                } else {
                    "web-1".into()
                },
                what: format!("event {n}"),
            })
            .collect();
        let rows = event_rows(&i);
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[0][2], "event 5");
        assert_eq!(rows[0][1], "web-1");
        assert_eq!(rows[1][1], "-");
        assert_eq!(rows[9][2], "event 14");
    }

    #[test]
    fn the_abort_note_quotes_the_servers_reason_or_groups_hosts_by_revision() {
        let mut i = info("aborted");
        i.reason = "aborted by alice; hosts left as they are: web-1, web-2 on 222222222222, the rest on 111111111111".into();
        assert_eq!(
            abort_note(&i),
            "hosts left as they are: web-1, web-2 on 222222222222, the rest on 111111111111"
        );
        i.reason.clear();
        i.events = vec![pb::RolloutEvent {
            at_unix_ms: 1,
            host: String::new(),
            what: "Aborted: hosts left as they are: web-1 on 222222222222".into(),
        }];
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
        assert!(matches!(final_result(&info("succeeded")), Some(Ok(()))));
        for phase in ["failed", "rolled_back", "rollback_failed", "aborted"] {
            let code = final_result(&info(phase)).map(|r| r.map_err(|e| e.exit_code()));
            assert_eq!(code, Some(Err(1)), "{phase}");
        }
        for phase in ["running", "paused", "rolling_back"] {
            assert!(final_result(&info(phase)).is_none(), "{phase}");
        }
    }

    #[test]
    fn a_failed_rollout_ends_with_its_phase_and_reason() {
        let mut i = info("rolled_back");
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
        let mut i = info("running");
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
    fn json_uses_the_proto_field_names() {
        let v = info_json(&info("running"));
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
    }

    #[test]
    fn history_rows_show_short_revisions_and_a_dash_for_no_reason() {
        let rows = history_rows(&[info("succeeded")]);
        assert_eq!(
            rows[0],
            ["r7", "-", "111111111111", "222222222222", "succeeded", "-"]
        );
    }
}
