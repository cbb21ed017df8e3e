//! `nococtl status [STACK] [-w]`: hosts × stacks, comparing what the server assigns each host
//! with what its agent reports, and (with `-w`) waiting until every online host runs its
//! stacks converged and healthy.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use noco_proto::Enumeration;
use noco_proto::v1 as pb;

use crate::client;
use crate::error::{CtlError, refused};
use crate::output::{self, Format, Listed, Screen, errln, outln, short_revision, truncate};
use crate::view::status::{HostStatusView, StackReportView};
use noco_proto::duration;

/// How long the ERROR column may be in the table.
const ERROR_WIDTH: usize = 80;
/// How long one Status call may take while watching.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one stack stands on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The report is of the assigned revision, converged, every service running and healthy.
    Healthy,
    /// The agent does not report the assigned revision yet.
    Pending,
    Applying,
    /// Converged, but some service is not running all its replicas or not healthy yet.
    Starting,
    /// Converged, and some service's healthcheck fails.
    Unhealthy,
    Failed,
    /// Refused: by the agent's host policy, or the host's whole desired state was refused.
    Refused,
    /// The agent still reports a stack that is no longer assigned to it.
    Removing,
    Offline,
    Revoked,
    /// An online host with nothing assigned or reported.
    Idle,
    /// A state this nococtl does not know.
    Other(&'static str),
}

impl State {
    fn text(&self) -> &str {
        match self {
            State::Healthy => "healthy",
            State::Pending => "pending",
            State::Applying => "applying",
            State::Starting => "starting",
            State::Unhealthy => "unhealthy",
            State::Failed => "failed",
            State::Refused => "refused",
            State::Removing => "removing",
            State::Offline => "offline",
            State::Revoked => "revoked",
            State::Idle => "-",
            State::Other(s) => s,
        }
    }
}

/// What a row means for `status -w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Waiting,
    Failed,
    /// Not waited for: offline or revoked hosts, hosts with nothing assigned.
    Ignored,
}

/// One line of the table: one stack on one host, read from the host's [`HostStatusView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub host: String,
    pub status: pb::Presence,
    /// `-` for a host with no stacks.
    pub stack: String,
    /// The revision the server assigns (empty: none, the stack is being removed).
    pub assigned: String,
    /// The revision the agent reports (empty: none).
    pub reported: String,
    pub state: State,
    /// The host's accepted desired state has expired.
    pub stale: bool,
    /// The host refused a desired state while this stack stayed as it was.
    pub refused_other: bool,
    /// `ready/total` services, `-` when nothing is reported.
    pub services: String,
    pub error: String,
}

impl Row {
    pub fn outcome(&self) -> Outcome {
        if self.status != pb::Presence::Online {
            return Outcome::Ignored;
        }
        match self.state {
            State::Healthy if !self.stale => Outcome::Done,
            State::Failed | State::Refused => Outcome::Failed,
            State::Idle | State::Offline | State::Revoked => Outcome::Ignored,
            _ => Outcome::Waiting,
        }
    }

    /// `healthy`, `healthy, stale`, `pending, refused` …
    pub fn state_text(&self) -> String {
        let mut text = self.state.text().to_string();
        if self.stale {
            text.push_str(", stale");
        }
        if self.refused_other {
            text.push_str(", refused");
        }
        text
    }

    /// The revision the host runs; `old→new` while it differs from the assigned one.
    pub fn revision_text(&self) -> String {
        if self.reported == self.assigned {
            short_revision(&self.assigned)
        } else {
            format!(
                "{}→{}",
                short_revision(&self.reported),
                short_revision(&self.assigned)
            )
        }
    }
}

impl Listed for Row {
    const HEADER: &'static [&'static str] = &[
        "HOST", "STATUS", "STACK", "REVISION", "STATE", "SERVICES", "ERROR",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.host.clone(),
            self.status.to_string(),
            self.stack.clone(),
            self.revision_text(),
            self.state_text(),
            self.services.clone(),
            if self.error.is_empty() {
                "-".to_string()
            } else {
                truncate(&self.error, ERROR_WIDTH)
            },
        ]
    }
}

/// The rows of one host: one per assigned stack, one per reported stack no longer assigned,
/// or a single `-` row for a host with neither (left out when `only` names a stack).
pub fn host_rows(h: &HostStatusView, only: Option<&str>) -> Vec<Row> {
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    let reported: BTreeMap<&str, &StackReportView> = h
        .reported
        .iter()
        .filter(|r| wanted(&r.name))
        .map(|r| (r.name.as_str(), r))
        .collect();
    let mut rows = Vec::new();
    let host_refused = !h.refused.is_empty();
    // The agent refused the newest state the server sent: stacks not yet at their assigned
    // revision will not get there.
    let newest_refused = host_refused && h.desired_generation > h.applied_generation;
    let row = |stack: &str, assigned: &str, report: Option<&&StackReportView>, state: State| {
        let error = match (&state, report) {
            (State::Failed | State::Refused, Some(r)) if !r.error.is_empty() => r.error.clone(),
            _ if host_refused => format!("state refused: {}", h.refused),
            _ => String::new(),
        };
        Row {
            host: h.host.clone(),
            status: h.status,
            stack: stack.to_string(),
            assigned: assigned.to_string(),
            reported: report.map(|r| r.revision.clone()).unwrap_or_default(),
            refused_other: host_refused && state != State::Refused,
            state,
            stale: h.stale,
            services: report.map_or_else(|| "-".to_string(), |r| r.services_text()),
            error,
        }
    };
    let offline = match h.status {
        pb::Presence::Online => None,
        pb::Presence::Revoked => Some(State::Revoked),
        pb::Presence::Offline | pb::Presence::Unspecified => Some(State::Offline),
    };
    for a in h.assigned.iter().filter(|a| wanted(&a.name)) {
        let report = reported.get(a.name.as_str());
        let state = match (&offline, report) {
            (Some(s), _) => s.clone(),
            (None, Some(r)) if r.revision == a.revision => reported_state(r),
            (None, _) if newest_refused => State::Refused,
            (None, _) => State::Pending,
        };
        rows.push(row(&a.name, &a.revision, report, state));
    }
    for (name, report) in &reported {
        if h.assigned.iter().any(|a| a.name == *name) {
            continue;
        }
        let state = offline.clone().unwrap_or(State::Removing);
        rows.push(row(name, "", Some(report), state));
    }
    if rows.is_empty() && only.is_none() {
        rows.push(row("-", "", None, offline.unwrap_or(State::Idle)));
    }
    rows
}

/// A reported stack at the assigned revision: its state, and for converged ones its health.
fn reported_state(r: &StackReportView) -> State {
    match r.state {
        pb::ApplyState::Converged => {
            if r.healthy {
                State::Healthy
            } else if r.services.iter().any(|s| s.health == pb::Health::Unhealthy) {
                State::Unhealthy
            } else {
                State::Starting
            }
        }
        pb::ApplyState::Applying => State::Applying,
        pb::ApplyState::Failed => State::Failed,
        pb::ApplyState::Refused => State::Refused,
        pb::ApplyState::Unspecified => State::Other(r.state.text()),
    }
}

fn views(r: pb::StatusResponse) -> Vec<HostStatusView> {
    r.hosts.iter().map(HostStatusView::from).collect()
}

fn all_rows(hosts: &[HostStatusView], only: Option<&str>) -> Vec<Row> {
    hosts.iter().flat_map(|h| host_rows(h, only)).collect()
}

fn print_table(rows: &[Row], only: Option<&str>) {
    for line in table_lines(rows, only) {
        outln!("{line}");
    }
}

fn table_lines(rows: &[Row], only: Option<&str>) -> Vec<String> {
    if rows.is_empty() {
        vec![nothing_text(only)]
    } else {
        output::listed_lines(rows)
    }
}

pub async fn run(
    stack: Option<String>,
    watch: bool,
    timeout: Duration,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let request = pb::StatusRequest {
        stack: stack.clone().unwrap_or_default(),
    };
    let only = stack.as_deref();
    if !watch {
        let hosts = views(
            ctl.status(request)
                .await
                .map_err(|s| refused("status", s))?
                .into_inner(),
        );
        let rows = all_rows(&hosts, only);
        match out {
            Format::Json => output::json(&hosts),
            Format::Table => print_table(&rows, only),
        }
        return failed(&verdict(&rows).failed);
    }

    let started = tokio::time::Instant::now();
    let tty = output::stdout_is_terminal();
    // Redrawn in place on a terminal; Ctrl-C ends the watch as an interrupted one (130).
    let screen = (tty && out == Format::Table).then(|| Screen::start(130));
    let mut shown: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut last: Option<Vec<HostStatusView>> = None;
    loop {
        let call = tokio::time::timeout(CALL_TIMEOUT, ctl.status(request.clone())).await;
        let problem = match call {
            Ok(Ok(r)) => {
                last = Some(views(r.into_inner()));
                None
            }
            Ok(Err(s)) if last.is_none() => return Err(refused("status", s)),
            Ok(Err(s)) => Some(refused("status", s).to_string()),
            Err(_) => Some(format!(
                "status: no answer from the server within {}",
                duration::format(CALL_TIMEOUT)
            )),
        };
        let hosts = last.clone().unwrap_or_default();
        let rows = all_rows(&hosts, only);
        let elapsed = started.elapsed();
        let verdict = verdict(&rows);
        if let Some(screen) = &screen {
            let mut lines = table_lines(&rows, only);
            lines.push(String::new());
            lines.push(format!(
                "{} — {} elapsed of {}",
                verdict.summary(),
                duration::format(Duration::from_secs(elapsed.as_secs())),
                duration::format(timeout)
            ));
            screen.draw(&lines);
        } else if out == Format::Table {
            print_changes(&rows, &mut shown);
        }
        if let Some(p) = &problem {
            errln!("nococtl: {p} (retrying)");
        }
        let finish = |result: Result<(), CtlError>| {
            if out == Format::Json {
                output::json(&hosts);
            }
            result
        };
        if !verdict.failed.is_empty() {
            return finish(failed(&verdict.failed));
        }
        let nothing = problem
            .is_none()
            .then(|| nothing_to_wait_for(&rows, only))
            .flatten();
        if let Some(reason) = nothing {
            let reason = match only {
                Some(name) if offline_hosts(&rows).is_empty() => {
                    match selector_of(&mut ctl, name).await {
                        Some(selector) => {
                            format!("{reason}: its selector {selector} matches no host")
                        }
                        None => reason,
                    }
                }
                _ => reason,
            };
            return finish(Err(CtlError::Failed(format!(
                "nothing to wait for: {reason}"
            ))));
        }
        if problem.is_none() && verdict.waiting.is_empty() {
            if out == Format::Table && !tty {
                outln!("{}", verdict.summary());
            }
            let offline = offline_hosts(&rows);
            if !offline.is_empty() {
                errln!("nococtl: not waited for (offline): {}", offline.join(", "));
            }
            return finish(Ok(()));
        }
        if elapsed >= timeout {
            let pending: Vec<String> = verdict
                .waiting
                .iter()
                .map(|r| format!("{} on {} ({})", r.stack, r.host, r.state_text()))
                .collect();
            let what = if pending.is_empty() {
                problem.unwrap_or_else(|| "the server's status".to_string())
            } else {
                format!("still waiting for {}", pending.join(", "))
            };
            return finish(Err(CtlError::Failed(format!(
                "timed out after {}: {what}",
                duration::format(timeout)
            ))));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Exit 1 naming each failed or refused stack (on stderr), or 0 when there is none.
fn failed(rows: &[&Row]) -> Result<(), CtlError> {
    if rows.is_empty() {
        return Ok(());
    }
    for r in rows {
        errln!(
            "{} on {}: {}: {}",
            r.stack,
            r.host,
            r.state.text(),
            if r.error.is_empty() {
                "(no error reported)"
            } else {
                &r.error
            }
        );
    }
    Err(CtlError::Failed(format!(
        "{} failed or {} refused (above)",
        if rows.len() == 1 {
            "1 stack".to_string()
        } else {
            format!("{} stacks", rows.len())
        },
        if rows.len() == 1 { "was" } else { "were" }
    )))
}

/// Why `-w` has nothing to wait for, if it has not: no online host has a (matching) stack
/// assigned, and nothing failed.
pub fn nothing_to_wait_for(rows: &[Row], only: Option<&str>) -> Option<String> {
    let v = verdict(rows);
    if v.done > 0 || !v.waiting.is_empty() || !v.failed.is_empty() {
        return None;
    }
    let offline = offline_hosts(rows);
    Some(match (only, offline.is_empty()) {
        (Some(name), true) => format!("stack {name} is assigned to no host"),
        (Some(name), false) => format!(
            "every host stack {name} is assigned to is offline: {}",
            offline.join(", ")
        ),
        (None, false) => format!(
            "every host with a stack assigned is offline: {}",
            offline.join(", ")
        ),
        (None, true) if rows.is_empty() => "no host is enrolled".to_string(),
        (None, true) => "no stack is assigned to any host".to_string(),
    })
}

/// The hosts that have a stack assigned but are offline, by name, once each.
fn offline_hosts(rows: &[Row]) -> Vec<String> {
    let mut hosts: Vec<String> = rows
        .iter()
        .filter(|r| r.status != pb::Presence::Online && !r.assigned.is_empty())
        .map(|r| r.host.clone())
        .collect();
    hosts.dedup();
    hosts
}

/// The stack's selector, to say why it runs nowhere (`None` when it cannot be read).
async fn selector_of(
    ctl: &mut noco_proto::v1::control_client::ControlClient<tonic::transport::Channel>,
    stack: &str,
) -> Option<String> {
    let r = ctl
        .get_stack(pb::GetStackRequest {
            name: stack.to_string(),
            revision: String::new(),
        })
        .await
        .ok()?
        .into_inner();
    r.summary.map(|s| s.selector).filter(|s| !s.is_empty())
}

/// The rows `-w` still waits for and those that failed.
struct Verdict<'a> {
    done: usize,
    waiting: Vec<&'a Row>,
    failed: Vec<&'a Row>,
}

impl Verdict<'_> {
    fn summary(&self) -> String {
        if self.waiting.is_empty() && self.failed.is_empty() {
            if self.done == 0 {
                "nothing to wait for: no online host has a matching stack assigned".to_string()
            } else {
                format!("all {} converged and healthy", self.done)
            }
        } else {
            format!(
                "{} healthy, {} waiting, {} failed",
                self.done,
                self.waiting.len(),
                self.failed.len()
            )
        }
    }
}

fn verdict(rows: &[Row]) -> Verdict<'_> {
    let mut v = Verdict {
        done: 0,
        waiting: Vec::new(),
        failed: Vec::new(),
    };
    for r in rows {
        match r.outcome() {
            Outcome::Done => v.done += 1,
            Outcome::Waiting => v.waiting.push(r),
            Outcome::Failed => v.failed.push(r),
            Outcome::Ignored => {}
        }
    }
    v
}

/// Not a terminal: one line per row that appeared or changed, one per row that went away.
fn print_changes(rows: &[Row], shown: &mut BTreeMap<(String, String), String>) {
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    let mut seen = BTreeMap::new();
    for r in rows {
        let key = (r.host.clone(), r.stack.clone());
        let line = format!(
            "{} {} {} {} {} services {}{}",
            r.host,
            r.status,
            r.stack,
            r.revision_text(),
            r.state_text(),
            r.services,
            if r.error.is_empty() {
                String::new()
            } else {
                format!(" error: {}", truncate(&r.error, ERROR_WIDTH))
            }
        );
        if shown.get(&key) != Some(&line) {
            outln!("{now} {line}");
        }
        seen.insert(key, line);
    }
    for (host, stack) in shown.keys() {
        if !seen.contains_key(&(host.clone(), stack.clone())) {
            outln!("{now} {host} {stack} gone");
        }
    }
    *shown = seen;
}

fn nothing_text(only: Option<&str>) -> String {
    match only {
        Some(s) => format!("stack {s} is assigned to no host, and no host reports it"),
        None => "no hosts".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::{ApplyState, Health, Presence};

    const R1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const R2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn host(
        status: Presence,
        assigned: &[(&str, &str)],
        reported: Vec<pb::StackReport>,
    ) -> pb::HostStatus {
        pb::HostStatus {
            host: "web-1".into(),
            host_id: "h1".into(),
            status: status.into(),
            desired_generation: 4,
            applied_generation: 4,
            assigned: assigned
                .iter()
                .map(|(n, r)| pb::AssignedStack {
                    name: n.to_string(),
                    revision: r.to_string(),
                })
                .collect(),
            reported,
            ..Default::default()
        }
    }

    fn report(
        name: &str,
        revision: &str,
        state: ApplyState,
        services: &[(u32, u32, Health)],
    ) -> pb::StackReport {
        pb::StackReport {
            name: name.into(),
            revision: revision.into(),
            state: state.into(),
            services: services
                .iter()
                .enumerate()
                .map(|(i, (running, desired, health))| pb::ServiceReport {
                    name: format!("s{i}"),
                    running: *running,
                    desired: *desired,
                    health: (*health).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn rows_of(h: &pb::HostStatus, only: Option<&str>) -> Vec<Row> {
        host_rows(&HostStatusView::from(h), only)
    }

    fn only_row(h: &pb::HostStatus) -> Row {
        let rows = rows_of(h, None);
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows[0].clone()
    }

    #[test]
    fn converged_with_every_service_running_and_healthy_is_healthy_and_done() {
        let h = host(
            Presence::Online,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(2, 2, Health::Healthy), (1, 1, Health::None)],
            )],
        );
        let r = only_row(&h);
        assert_eq!(r.state, State::Healthy);
        assert_eq!(r.services, "2/2");
        assert_eq!(r.revision_text(), "111111111111");
        assert_eq!(r.outcome(), Outcome::Done);
    }

    #[test]
    fn a_host_reporting_an_older_revision_is_pending() {
        let h = host(
            Presence::Online,
            &[("shop", R2)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 1, Health::Healthy)],
            )],
        );
        let r = only_row(&h);
        assert_eq!(r.state, State::Pending);
        assert_eq!(r.revision_text(), "111111111111→222222222222");
        assert_eq!(r.outcome(), Outcome::Waiting);
        let not_reported = only_row(&host(Presence::Online, &[("shop", R2)], vec![]));
        assert_eq!(not_reported.state, State::Pending);
        assert_eq!(not_reported.services, "-");
    }

    /// Regression (issue 8): nococtl counted a service with no reported health as healthy,
    /// where the server (stack summaries, rollout gates) did not; one predicate now.
    #[test]
    fn a_service_with_no_reported_health_is_not_healthy() {
        let h = host(
            Presence::Online,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 1, Health::Unspecified)],
            )],
        );
        assert_eq!(only_row(&h).state, State::Starting);
        assert_eq!(only_row(&h).services, "0/1");
    }

    #[test]
    fn converged_but_not_all_ready_is_starting_or_unhealthy() {
        let starting = host(
            Presence::Online,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 2, Health::Healthy), (1, 1, Health::Starting)],
            )],
        );
        assert_eq!(only_row(&starting).state, State::Starting);
        assert_eq!(only_row(&starting).services, "0/2");
        let unhealthy = host(
            Presence::Online,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 1, Health::Unhealthy)],
            )],
        );
        assert_eq!(only_row(&unhealthy).state, State::Unhealthy);
        assert_eq!(only_row(&unhealthy).outcome(), Outcome::Waiting);
    }

    #[test]
    fn failed_and_policy_refused_stacks_show_their_error_and_fail_the_watch() {
        let mut failed = report("shop", R1, ApplyState::Failed, &[(0, 1, Health::None)]);
        failed.error = "service web: pull nginx:nope: not found".into();
        let r = only_row(&host(Presence::Online, &[("shop", R1)], vec![failed]));
        assert_eq!(r.state, State::Failed);
        assert_eq!(r.error, "service web: pull nginx:nope: not found");
        assert_eq!(r.outcome(), Outcome::Failed);

        let mut refused = report("shop", R1, ApplyState::Refused, &[]);
        refused.error = "service web: privileged containers are not allowed on this host".into();
        let r = only_row(&host(Presence::Online, &[("shop", R1)], vec![refused]));
        assert_eq!(r.state, State::Refused);
        assert_eq!(r.state_text(), "refused");
        assert_eq!(r.outcome(), Outcome::Failed);
    }

    #[test]
    fn a_refused_newest_state_makes_pending_stacks_refused_with_the_reason() {
        let mut h = host(
            Presence::Online,
            &[("shop", R2)],
            vec![report("shop", R1, ApplyState::Converged, &[])],
        );
        h.desired_generation = 5;
        h.refused = "signature does not verify".into();
        let r = only_row(&h);
        assert_eq!(r.state, State::Refused);
        assert_eq!(r.error, "state refused: signature does not verify");
        assert_eq!(r.outcome(), Outcome::Failed);
    }

    #[test]
    fn a_refused_replay_leaves_a_healthy_stack_healthy_but_flagged() {
        let mut h = host(
            Presence::Online,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 1, Health::Healthy)],
            )],
        );
        h.refused = "generation 2 is older than the accepted 4".into();
        let r = only_row(&h);
        assert_eq!(r.state, State::Healthy);
        assert_eq!(r.state_text(), "healthy, refused");
        assert!(r.error.contains("older than"), "{}", r.error);
        assert_eq!(r.outcome(), Outcome::Done);
    }

    #[test]
    fn a_stale_host_shows_stale_and_is_still_waited_for() {
        let mut h = host(
            Presence::Online,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 1, Health::Healthy)],
            )],
        );
        h.stale = true;
        let r = only_row(&h);
        assert_eq!(r.state_text(), "healthy, stale");
        assert_eq!(r.outcome(), Outcome::Waiting);
    }

    #[test]
    fn offline_hosts_show_offline_and_are_not_waited_for() {
        let h = host(
            Presence::Offline,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 1, Health::Healthy)],
            )],
        );
        let r = only_row(&h);
        assert_eq!(r.state, State::Offline);
        assert_eq!(r.outcome(), Outcome::Ignored);
        let idle = only_row(&host(Presence::Offline, &[], vec![]));
        assert_eq!((idle.stack.as_str(), idle.state), ("-", State::Offline));
    }

    #[test]
    fn a_reported_stack_no_longer_assigned_is_being_removed() {
        let h = host(
            Presence::Online,
            &[],
            vec![report("old", R1, ApplyState::Converged, &[])],
        );
        let r = only_row(&h);
        assert_eq!(r.state, State::Removing);
        assert_eq!(r.revision_text(), "111111111111→-");
        assert_eq!(r.outcome(), Outcome::Waiting);
    }

    #[test]
    fn a_stack_filter_keeps_only_that_stack_and_drops_hosts_without_it() {
        let h = host(
            Presence::Online,
            &[("shop", R1), ("blog", R2)],
            vec![
                report("shop", R1, ApplyState::Converged, &[]),
                report("blog", R2, ApplyState::Applying, &[]),
            ],
        );
        let rows = rows_of(&h, Some("blog"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, State::Applying);
        assert!(rows_of(&host(Presence::Online, &[], vec![]), Some("blog")).is_empty());
        assert_eq!(
            only_row(&host(Presence::Online, &[], vec![])).state,
            State::Idle
        );
    }

    #[test]
    fn the_watch_verdict_counts_done_waiting_and_failed() {
        let healthy = only_row(&host(
            Presence::Online,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 1, Health::Healthy)],
            )],
        ));
        let pending = only_row(&host(Presence::Online, &[("shop", R2)], vec![]));
        let offline = only_row(&host(Presence::Offline, &[("shop", R2)], vec![]));
        let rows = vec![healthy.clone(), pending, offline];
        let v = verdict(&rows);
        assert_eq!((v.done, v.waiting.len(), v.failed.len()), (1, 1, 0));
        let rows = vec![healthy];
        let v = verdict(&rows);
        assert_eq!(v.summary(), "all 1 converged and healthy");
    }

    #[test]
    fn nothing_to_wait_for_names_why_when_no_online_host_has_the_stack() {
        let named = |name: &str, h: pb::HostStatus| pb::HostStatus {
            host: name.into(),
            ..h
        };
        // The selector matches no host: no rows at all.
        assert_eq!(
            nothing_to_wait_for(&[], Some("shop")).as_deref(),
            Some("stack shop is assigned to no host")
        );
        assert_eq!(
            nothing_to_wait_for(&[], None).as_deref(),
            Some("no host is enrolled")
        );
        // Every matching host is offline: they are named.
        let offline: Vec<Row> = ["web-1", "web-2"]
            .iter()
            .flat_map(|n| {
                rows_of(
                    &named(n, host(Presence::Offline, &[("shop", R1)], vec![])),
                    Some("shop"),
                )
            })
            .collect();
        assert_eq!(
            nothing_to_wait_for(&offline, Some("shop")).as_deref(),
            Some("every host stack shop is assigned to is offline: web-1, web-2")
        );
        assert_eq!(
            nothing_to_wait_for(&offline, None).as_deref(),
            Some("every host with a stack assigned is offline: web-1, web-2")
        );
        // Online hosts with nothing assigned.
        let idle = rows_of(&host(Presence::Online, &[], vec![]), None);
        assert_eq!(
            nothing_to_wait_for(&idle, None).as_deref(),
            Some("no stack is assigned to any host")
        );
        // One online host waiting (or done, or failed): something to wait for.
        let mut rows = offline.clone();
        rows.extend(rows_of(
            &host(Presence::Online, &[("shop", R1)], vec![]),
            None,
        ));
        assert_eq!(nothing_to_wait_for(&rows, Some("shop")), None);
        let mut failed = report("shop", R1, ApplyState::Failed, &[]);
        failed.error = "boom".into();
        let rows = rows_of(&host(Presence::Online, &[("shop", R1)], vec![failed]), None);
        assert_eq!(nothing_to_wait_for(&rows, None), None);
    }

    #[test]
    fn status_fails_naming_each_failed_stack_and_succeeds_without_one() {
        let healthy = only_row(&host(
            Presence::Online,
            &[("shop", R1)],
            vec![report(
                "shop",
                R1,
                ApplyState::Converged,
                &[(1, 1, Health::Healthy)],
            )],
        ));
        let rows = vec![healthy];
        assert!(failed(&verdict(&rows).failed).is_ok());
        let mut broken = report("shop", R1, ApplyState::Failed, &[]);
        broken.error = "service app exited with code 3".into();
        let rows = vec![only_row(&host(
            Presence::Online,
            &[("shop", R1)],
            vec![broken],
        ))];
        let e = failed(&verdict(&rows).failed).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "1 stack failed or was refused (above)");
        // A failure reported by a host that is offline now is not counted.
        let mut old = report("shop", R1, ApplyState::Failed, &[]);
        old.error = "boom".into();
        let rows = vec![only_row(&host(
            Presence::Offline,
            &[("shop", R1)],
            vec![old],
        ))];
        assert!(failed(&verdict(&rows).failed).is_ok());
    }
}
