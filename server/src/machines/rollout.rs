//! The rollout state machine (issue 5), pure: no I/O, time passed in, serializable so the server
//! can persist it in sled after every transition and resume it after a restart without skipping
//! or repeating a step. The server feeds it what agents report and applies the per-host revision
//! pins it returns ([`Rollout::targets`]).
//!
//! A rollout moves `hosts` of a stack from `from` to `to`: a canary step, then batches (a count
//! or a percentage of the hosts). A host step succeeds when the host reports `to` converged with
//! every service healthy continuously for `min_healthy`; it fails on an apply error, an unhealthy
//! or exited service, or when the step outlives `deadline`. Past `max_failures` the rollout stops
//! — and with `auto_rollback` every host it changed is moved back to `from`, health-gated the
//! same way. Pause finishes the hosts in flight and starts no new step; abort stops at once and
//! leaves hosts as they are.
//!
//! With `backup_first`, a host's step starts by backing up: the host stays on `from` while the
//! server runs every backup `from` declares on it ([`Rollout::backups_to_order`],
//! [`Rollout::backups_ordered`]); when they all succeed the host is updated as above, when one
//! fails (or they outlive `deadline`) the host's step fails with the reason — it never gets `to`
//! — and counts towards `max_failures` like any failed host. The backups each host made are
//! recorded ([`Rollout::backups`]) so an operator can restore exactly that one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub type Ms = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchSize {
    Count(usize),
    /// Percent of all hosts of the rollout, at least one host.
    Percent(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub canary: usize,
    pub batch: BatchSize,
    pub min_healthy_ms: Ms,
    pub deadline_ms: Ms,
    pub max_failures: usize,
    pub auto_rollback: bool,
    pub pause_after_canary: bool,
    /// Back each host up before its step.
    #[serde(default)]
    pub backup_first: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Running,
    Paused,
    Succeeded,
    /// Stopped past `max_failures`, hosts left as they were (no auto-rollback).
    Failed(String),
    /// Moving every changed host back to `from`.
    RollingBack(String),
    RolledBack(String),
    /// Rolling back failed too: an operator must look.
    RollbackFailed(String),
    Aborted,
}

impl Phase {
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Running | Phase::Paused | Phase::RollingBack(_))
    }
}

/// A phase on the wire; in messages, its [`noco_proto::Enumeration::text`].
pub fn phase_to_wire(p: &Phase) -> noco_proto::v1::RolloutPhase {
    use noco_proto::v1::RolloutPhase as W;
    match p {
        Phase::Running => W::Running,
        Phase::Paused => W::Paused,
        Phase::Succeeded => W::Succeeded,
        Phase::Failed(_) => W::Failed,
        Phase::RollingBack(_) => W::RollingBack,
        Phase::RolledBack(_) => W::RolledBack,
        Phase::RollbackFailed(_) => W::RollbackFailed,
        Phase::Aborted => W::Aborted,
    }
}

/// How a phase reads in messages (`rolling_back`).
pub fn phase_name(p: &Phase) -> &'static str {
    noco_proto::Enumeration::text(phase_to_wire(p))
}

pub fn phase_reason(p: &Phase) -> String {
    match p {
        Phase::Failed(w)
        | Phase::RollingBack(w)
        | Phase::RolledBack(w)
        | Phase::RollbackFailed(w) => w.clone(),
        _ => String::new(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostPhase {
    /// Not reached yet: stays on `from`.
    Waiting,
    /// Its step started with backups (`backup_first`), since `since`: stays on `from`.
    BackingUp {
        since: Ms,
    },
    /// A backup before its step failed: it stays on `from`.
    BackupFailed(String),
    /// Pinned to the target revision since `since`.
    Updating {
        since: Ms,
    },
    Done,
    Failed(String),
}

/// What a host reports about the rollout's stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    /// The revision the host runs (converged), if any.
    pub revision: Option<String>,
    /// Since when every service has been healthy (or running, without a healthcheck) on it.
    pub healthy_since: Option<Ms>,
    /// Why the stack failed on the host (apply error, unhealthy or exited service).
    pub failure: Option<String>,
    /// The host has no session with the server (it reports nothing while so).
    pub offline: bool,
    /// How the backups ordered before its step went (`backup_first`), once ordered.
    pub backup: Option<BackupOutcome>,
}

/// How the backups a host makes before its step stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupOutcome {
    Running,
    /// Every one succeeded.
    Done,
    /// One failed, with why.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: Ms,
    pub host: Option<String>,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub stack: String,
    pub from: String,
    pub to: String,
    pub config: Config,
    pub steps: Vec<Vec<String>>,
    /// The step in flight (or the last one); during a rollback, the step the rollback is about.
    pub step: usize,
    pub step_started: Ms,
    pub hosts: BTreeMap<String, HostPhase>,
    pub failures: usize,
    pub phase: Phase,
    pub events: Vec<Event>,
    /// With `backup_first`: per host, the jobs ordered before its step, as (job id, backup id).
    #[serde(default)]
    pub backups: BTreeMap<String, Vec<(String, String)>>,
}

/// Split hosts (in a stable order) into a canary step and batches.
pub fn plan_steps(hosts: &[String], config: &Config) -> Vec<Vec<String>> {
    let mut rest: Vec<String> = hosts.to_vec();
    rest.sort();
    let mut steps = Vec::new();
    let canary = config.canary.min(rest.len());
    if canary > 0 {
        steps.push(rest.drain(..canary).collect());
    }
    let size = match config.batch {
        BatchSize::Count(n) => n.max(1),
        BatchSize::Percent(p) => ((hosts.len() * usize::from(p.min(100))).div_ceil(100)).max(1),
    };
    while !rest.is_empty() {
        let n = size.min(rest.len());
        steps.push(rest.drain(..n).collect());
    }
    steps
}

impl Rollout {
    pub fn start(
        stack: &str,
        from: &str,
        to: &str,
        hosts: &[String],
        config: Config,
        now: Ms,
    ) -> Rollout {
        let steps = plan_steps(hosts, &config);
        let mut r = Rollout {
            stack: stack.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            hosts: hosts
                .iter()
                .map(|h| (h.clone(), HostPhase::Waiting))
                .collect(),
            steps,
            step: 0,
            step_started: now,
            failures: 0,
            phase: Phase::Running,
            config,
            events: Vec::new(),
            backups: BTreeMap::new(),
        };
        r.event(
            now,
            None,
            format!(
                "rollout of {} from {} to {} over {} hosts in {} steps",
                r.stack,
                short(from),
                short(to),
                r.hosts.len(),
                r.steps.len()
            ),
        );
        if r.steps.is_empty() {
            r.finish(now, Phase::Succeeded, "no host to update".into());
        } else {
            r.begin_step(now);
        }
        r
    }

    fn event(&mut self, at: Ms, host: Option<&str>, what: String) {
        self.events.push(Event {
            at,
            host: host.map(str::to_string),
            what,
        });
    }

    fn finish(&mut self, now: Ms, phase: Phase, why: String) {
        self.event(now, None, format!("{phase:?}: {why}"));
        self.phase = phase;
    }

    fn begin_step(&mut self, now: Ms) {
        self.step_started = now;
        let hosts = self.steps[self.step].clone();
        self.event(
            now,
            None,
            format!(
                "step {} of {}: {}",
                self.step + 1,
                self.steps.len(),
                hosts.join(", ")
            ),
        );
        for h in hosts {
            if self.config.backup_first {
                self.hosts
                    .insert(h.clone(), HostPhase::BackingUp { since: now });
                self.event(
                    now,
                    Some(&h),
                    format!("backing up on {} before the update", short(&self.from)),
                );
            } else {
                self.update(now, &h);
            }
        }
    }

    fn update(&mut self, now: Ms, host: &str) {
        self.hosts
            .insert(host.to_string(), HostPhase::Updating { since: now });
        self.event(now, Some(host), format!("updating to {}", short(&self.to)));
    }

    /// Hosts backing up whose backups the server has not ordered yet.
    pub fn backups_to_order(&self) -> Vec<String> {
        if !self.phase.is_active() || matches!(self.phase, Phase::RollingBack(_)) {
            return Vec::new();
        }
        self.hosts
            .iter()
            .filter(|(h, p)| {
                matches!(p, HostPhase::BackingUp { .. }) && !self.backups.contains_key(*h)
            })
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// The server ordered `host`'s backups: `Ok` with (job id, backup id) each — none when
    /// `from` declares no backups, and the host is updated at once — or `Err` with why they
    /// could not be ordered, which fails the host's step.
    pub fn backups_ordered(
        &mut self,
        now: Ms,
        host: &str,
        ordered: Result<Vec<(String, String)>, String>,
    ) {
        if !matches!(self.hosts.get(host), Some(HostPhase::BackingUp { .. })) {
            return;
        }
        match ordered {
            Ok(jobs) if jobs.is_empty() => {
                self.backups.insert(host.to_string(), jobs);
                self.event(
                    now,
                    Some(host),
                    format!(
                        "{} declares no backups: nothing to back up",
                        short(&self.from)
                    ),
                );
                self.update(now, host);
            }
            Ok(jobs) => {
                let ids: Vec<&str> = jobs.iter().map(|(_, b)| b.as_str()).collect();
                self.event(
                    now,
                    Some(host),
                    format!("backups ordered: {}", ids.join(", ")),
                );
                self.backups.insert(host.to_string(), jobs);
            }
            Err(why) => {
                self.backups.insert(host.to_string(), Vec::new());
                self.backup_failed(now, host, format!("backing up before the update: {why}"));
            }
        }
    }

    fn backup_failed(&mut self, now: Ms, host: &str, why: String) {
        self.hosts
            .insert(host.to_string(), HostPhase::BackupFailed(why.clone()));
        self.failures += 1;
        self.event(now, Some(host), format!("failed: {why}"));
    }

    /// The revision each host must run now: the pins the server puts into desired state.
    /// Hosts whose backups before their step failed: they stay on `from` even after the
    /// rollout succeeded (within `max_failures`) — updating them without the backup the
    /// operator asked for is what `backup_first` is there to prevent.
    pub fn kept_back(&self) -> BTreeMap<String, String> {
        self.hosts
            .iter()
            .filter(|(_, p)| matches!(p, HostPhase::BackupFailed(_)))
            .map(|(h, _)| (h.clone(), self.from.clone()))
            .collect()
    }

    pub fn targets(&self) -> BTreeMap<String, String> {
        let rolling_back = matches!(
            self.phase,
            Phase::RollingBack(_) | Phase::RolledBack(_) | Phase::RollbackFailed(_)
        );
        self.hosts
            .iter()
            .map(|(h, p)| {
                let on_new = match p {
                    HostPhase::Waiting
                    | HostPhase::BackingUp { .. }
                    | HostPhase::BackupFailed(_) => false,
                    HostPhase::Updating { .. } | HostPhase::Done | HostPhase::Failed(_) => {
                        !rolling_back
                    }
                };
                (
                    h.clone(),
                    if on_new {
                        self.to.clone()
                    } else {
                        self.from.clone()
                    },
                )
            })
            .collect()
    }

    /// Hosts whose step is in flight, and the revision they must reach.
    fn in_flight(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, p)| matches!(p, HostPhase::Updating { .. }))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Hosts whose step is backing up.
    fn backing_up(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, p)| matches!(p, HostPhase::BackingUp { .. }))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Move hosts backing up on to their update when their backups succeeded; fail them when
    /// one failed or at the deadline.
    fn tick_backups(&mut self, now: Ms, reports: &BTreeMap<String, HostReport>) {
        for host in self.backing_up() {
            let HostPhase::BackingUp { since } = self.hosts[&host] else {
                continue;
            };
            if !self.backups.contains_key(&host) {
                // Not ordered yet; the deadline still runs.
                if now - since > self.config.deadline_ms {
                    self.backup_failed(
                        now,
                        &host,
                        "backups before the update were never ordered within the deadline".into(),
                    );
                }
                continue;
            }
            match reports.get(&host).and_then(|r| r.backup.clone()) {
                Some(BackupOutcome::Done) => {
                    let ids: Vec<String> =
                        self.backups[&host].iter().map(|(_, b)| b.clone()).collect();
                    self.event(now, Some(&host), format!("backed up: {}", ids.join(", ")));
                    self.update(now, &host);
                }
                Some(BackupOutcome::Failed(why)) => {
                    self.backup_failed(
                        now,
                        &host,
                        format!("backup before the update failed: {why}"),
                    );
                }
                _ if now - since > self.config.deadline_ms => {
                    self.backup_failed(
                        now,
                        &host,
                        format!("host {host}'s backups did not finish within the deadline"),
                    );
                }
                _ => {}
            }
        }
    }

    /// Advance on what the hosts report, at time `now`.
    pub fn tick(&mut self, now: Ms, reports: &BTreeMap<String, HostReport>) {
        match self.phase.clone() {
            Phase::Running | Phase::Paused => self.tick_forward(now, reports),
            Phase::RollingBack(why) => self.tick_back(now, reports, &why),
            _ => {}
        }
    }

    fn judge(
        &self,
        host: &str,
        since: Ms,
        want: &str,
        now: Ms,
        report: Option<&HostReport>,
    ) -> Option<Result<(), String>> {
        if let Some(r) = report {
            if let Some(f) = &r.failure
                && r.revision.as_deref() != Some(self.other(want))
            {
                return Some(Err(f.clone()));
            }
            if r.revision.as_deref() == Some(want)
                && let Some(healthy) = r.healthy_since
                && now - healthy.max(since) >= self.config.min_healthy_ms
            {
                return Some(Ok(()));
            }
        }
        if now - since > self.config.deadline_ms {
            if report.is_some_and(|r| r.offline) {
                return Some(Err(format!(
                    "host {host} was offline (no session with the server) at the deadline for {}",
                    short(want)
                )));
            }
            return Some(Err(format!(
                "host {host} was not healthy on {} within the deadline",
                short(want)
            )));
        }
        None
    }

    fn other(&self, rev: &str) -> &str {
        if rev == self.to { &self.from } else { &self.to }
    }

    fn tick_forward(&mut self, now: Ms, reports: &BTreeMap<String, HostReport>) {
        self.tick_backups(now, reports);
        for host in self.in_flight() {
            let HostPhase::Updating { since } = self.hosts[&host] else {
                continue;
            };
            match self.judge(&host, since, &self.to.clone(), now, reports.get(&host)) {
                Some(Ok(())) => {
                    self.hosts.insert(host.clone(), HostPhase::Done);
                    self.event(
                        now,
                        Some(&host),
                        format!(
                            "healthy on {} for {} ms",
                            short(&self.to),
                            self.config.min_healthy_ms
                        ),
                    );
                }
                Some(Err(why)) => {
                    self.hosts
                        .insert(host.clone(), HostPhase::Failed(why.clone()));
                    self.failures += 1;
                    self.event(now, Some(&host), format!("failed: {why}"));
                }
                None => {}
            }
        }
        if self.failures > self.config.max_failures {
            let why = self
                .hosts
                .iter()
                .find_map(|(h, p)| match p {
                    HostPhase::Failed(w) | HostPhase::BackupFailed(w) => Some(format!("{h}: {w}")),
                    _ => None,
                })
                .unwrap_or_default();
            if self.config.auto_rollback {
                self.event(
                    now,
                    None,
                    format!(
                        "{} failures (max {}): rolling back",
                        self.failures, self.config.max_failures
                    ),
                );
                self.phase = Phase::RollingBack(why);
                self.step_started = now;
                // Every host the rollout touched goes back, gated like the way forward; a host
                // still backing up (or whose backup failed) never left `from`.
                let untouched: Vec<String> = self
                    .hosts
                    .iter()
                    .filter(|(_, p)| matches!(p, HostPhase::BackingUp { .. }))
                    .map(|(h, _)| h.clone())
                    .collect();
                for h in untouched {
                    self.hosts.insert(h, HostPhase::Waiting);
                }
                let touched: Vec<String> = self
                    .hosts
                    .iter()
                    .filter(|(_, p)| !matches!(p, HostPhase::Waiting | HostPhase::BackupFailed(_)))
                    .map(|(h, _)| h.clone())
                    .collect();
                for h in touched {
                    self.hosts
                        .insert(h.clone(), HostPhase::Updating { since: now });
                    self.event(
                        now,
                        Some(&h),
                        format!("rolling back to {}", short(&self.from)),
                    );
                }
            } else {
                self.finish(now, Phase::Failed(why.clone()), why);
            }
            return;
        }
        if !self.in_flight().is_empty() || !self.backing_up().is_empty() {
            return;
        }
        if self.step + 1 >= self.steps.len() {
            self.finish(
                now,
                Phase::Succeeded,
                format!("{} hosts on {}", self.hosts.len(), short(&self.to)),
            );
            return;
        }
        if self.phase == Phase::Paused {
            return;
        }
        if self.step == 0 && self.config.canary > 0 && self.config.pause_after_canary {
            self.phase = Phase::Paused;
            self.event(
                now,
                None,
                "paused after the canary: resume to continue".into(),
            );
            return;
        }
        self.step += 1;
        self.begin_step(now);
    }

    fn tick_back(&mut self, now: Ms, reports: &BTreeMap<String, HostReport>, why: &str) {
        let mut back_failed = None;
        for host in self.in_flight() {
            let HostPhase::Updating { since } = self.hosts[&host] else {
                continue;
            };
            match self.judge(&host, since, &self.from.clone(), now, reports.get(&host)) {
                Some(Ok(())) => {
                    self.hosts.insert(host.clone(), HostPhase::Waiting);
                    self.event(now, Some(&host), format!("back on {}", short(&self.from)));
                }
                Some(Err(w)) => {
                    self.hosts
                        .insert(host.clone(), HostPhase::Failed(w.clone()));
                    self.event(now, Some(&host), format!("rollback failed: {w}"));
                    back_failed = Some(format!("{host}: {w}"));
                }
                None => {}
            }
        }
        if let Some(w) = back_failed {
            self.finish(now, Phase::RollbackFailed(format!("{why}; then {w}")), w);
        } else if self.in_flight().is_empty() {
            self.finish(now, Phase::RolledBack(why.to_string()), why.to_string());
        }
    }

    /// Finish the hosts in flight, start no new step.
    pub fn pause(&mut self, now: Ms) -> Result<(), String> {
        if self.phase != Phase::Running {
            return Err(format!(
                "a rollout that is {:?} cannot be paused",
                self.phase
            ));
        }
        self.phase = Phase::Paused;
        self.event(now, None, "paused".into());
        Ok(())
    }

    pub fn resume(&mut self, now: Ms) -> Result<(), String> {
        if self.phase != Phase::Paused {
            return Err(format!(
                "a rollout that is {:?} cannot be resumed",
                self.phase
            ));
        }
        self.phase = Phase::Running;
        self.event(now, None, "resumed".into());
        if self.in_flight().is_empty()
            && self.backing_up().is_empty()
            && self.step + 1 < self.steps.len()
        {
            self.step += 1;
            self.begin_step(now);
        }
        Ok(())
    }

    /// Stop at once; hosts stay on the revision they were pinned to.
    pub fn abort(&mut self, now: Ms) -> Result<(), String> {
        if !self.phase.is_active() {
            return Err(format!(
                "a rollout that is {:?} cannot be aborted",
                self.phase
            ));
        }
        let pinned: Vec<String> = self
            .targets()
            .into_iter()
            .filter(|(_, r)| *r == self.to)
            .map(|(h, _)| h)
            .collect();
        self.finish(
            now,
            Phase::Aborted,
            format!(
                "hosts left as they are: {} on {}, the rest on {}",
                pinned.len(),
                short(&self.to),
                short(&self.from)
            ),
        );
        Ok(())
    }
}

/// A revision as people read it: the first 12 hex digits.
pub use noco_compose::revision::short;

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "sha256:aaaaaaaaaaaaaaaa";
    const TO: &str = "sha256:bbbbbbbbbbbbbbbb";

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    fn config() -> Config {
        Config {
            canary: 1,
            batch: BatchSize::Count(2),
            min_healthy_ms: 1_000,
            deadline_ms: 10_000,
            max_failures: 0,
            auto_rollback: true,
            pause_after_canary: false,
            backup_first: false,
        }
    }

    /// Every host reports `rev` converged and healthy since `since`.
    fn all(hosts: &[String], rev: &str, since: Ms) -> BTreeMap<String, HostReport> {
        hosts
            .iter()
            .map(|h| {
                (
                    h.clone(),
                    HostReport {
                        revision: Some(rev.into()),
                        healthy_since: Some(since),
                        failure: None,
                        offline: false,
                        backup: None,
                    },
                )
            })
            .collect()
    }

    fn on(r: &Rollout, rev: &str) -> Vec<String> {
        r.targets()
            .into_iter()
            .filter(|(_, v)| v == rev)
            .map(|(h, _)| h)
            .collect()
    }

    #[test]
    fn steps_are_a_canary_then_batches_of_a_count_or_a_percentage() {
        let mut c = config();
        assert_eq!(
            plan_steps(&hosts(5), &c),
            [vec!["h1"], vec!["h2", "h3"], vec!["h4", "h5"]]
        );
        c.batch = BatchSize::Percent(25);
        c.canary = 0;
        assert_eq!(plan_steps(&hosts(8), &c).len(), 4);
        c.batch = BatchSize::Percent(1);
        assert_eq!(
            plan_steps(&hosts(3), &c).len(),
            3,
            "a batch is at least one host"
        );
    }

    #[test]
    fn a_good_revision_reaches_every_host_step_by_step() {
        let h = hosts(5);
        let mut r = Rollout::start("shop", FROM, TO, &h, config(), 0);
        assert_eq!(on(&r, TO), ["h1"], "only the canary first");
        r.tick(500, &all(&h, TO, 0));
        assert_eq!(on(&r, TO), ["h1"], "not healthy for min-healthy yet");
        r.tick(1_000, &all(&h, TO, 0));
        assert_eq!(
            on(&r, TO),
            ["h1", "h2", "h3"],
            "the canary passed: batch 1 starts"
        );
        // Batch hosts must be healthy for min-healthy counted from their own step start.
        r.tick(1_500, &all(&h, TO, 0));
        assert_eq!(r.step, 1);
        r.tick(2_000, &all(&h, TO, 0));
        assert_eq!(on(&r, TO), ["h1", "h2", "h3", "h4", "h5"]);
        r.tick(3_000, &all(&h, TO, 0));
        assert_eq!(r.phase, Phase::Succeeded);
        assert!(r.events.iter().any(|e| e.what.contains("step 3 of 3")));
    }

    #[test]
    fn a_failing_canary_rolls_back_with_the_reason() {
        let h = hosts(5);
        let mut r = Rollout::start("shop", FROM, TO, &h, config(), 0);
        let mut reports = all(&h, FROM, 0);
        reports.insert(
            "h1".into(),
            HostReport {
                revision: Some(TO.into()),
                healthy_since: None,
                failure: Some("service web: container exited with code 1".into()),
                offline: false,
                backup: None,
            },
        );
        r.tick(100, &reports);
        assert!(
            matches!(&r.phase, Phase::RollingBack(w) if w.contains("exited with code 1")),
            "{:?}",
            r.phase
        );
        assert!(on(&r, TO).is_empty(), "every host is pinned back");
        reports.insert(
            "h1".into(),
            HostReport {
                revision: Some(FROM.into()),
                healthy_since: Some(200),
                failure: None,
                offline: false,
                backup: None,
            },
        );
        r.tick(1_300, &reports);
        assert!(
            matches!(&r.phase, Phase::RolledBack(w) if w.contains("h1")),
            "{:?}",
            r.phase
        );
    }

    #[test]
    fn a_failure_in_a_later_batch_rolls_back_the_earlier_batches_too() {
        let h = hosts(5);
        let mut r = Rollout::start("shop", FROM, TO, &h, config(), 0);
        r.tick(1_000, &all(&h, TO, 0));
        r.tick(2_000, &all(&h, TO, 0));
        assert_eq!(r.step, 2);
        let mut reports = all(&h, TO, 0);
        reports.insert(
            "h5".into(),
            HostReport {
                revision: None,
                healthy_since: None,
                failure: Some("unhealthy".into()),
                offline: false,
                backup: None,
            },
        );
        r.tick(2_100, &reports);
        assert!(matches!(r.phase, Phase::RollingBack(_)));
        assert_eq!(on(&r, FROM), h, "canary and batch 1 go back as well");
        r.tick(3_200, &all(&h, FROM, 2_100));
        assert!(matches!(r.phase, Phase::RolledBack(_)), "{:?}", r.phase);
    }

    #[test]
    fn a_silent_host_fails_at_the_deadline() {
        let h = hosts(3);
        let mut c = config();
        c.auto_rollback = false;
        let mut r = Rollout::start("shop", FROM, TO, &h, c, 0);
        r.tick(5_000, &BTreeMap::new());
        assert_eq!(r.phase, Phase::Running);
        r.tick(10_001, &BTreeMap::new());
        assert!(
            matches!(&r.phase, Phase::Failed(w) if w.contains("deadline")),
            "{:?}",
            r.phase
        );
        assert_eq!(
            on(&r, TO),
            ["h1"],
            "without auto-rollback hosts stay as they are"
        );
    }

    #[test]
    fn max_failures_tolerates_that_many_failed_hosts() {
        let h = hosts(3);
        let mut c = config();
        c.max_failures = 1;
        let mut r = Rollout::start("shop", FROM, TO, &h, c, 0);
        let mut reports = all(&h, TO, 0);
        reports.insert(
            "h1".into(),
            HostReport {
                revision: None,
                healthy_since: None,
                failure: Some("boom".into()),
                offline: false,
                backup: None,
            },
        );
        r.tick(100, &reports);
        assert_eq!(r.phase, Phase::Running, "one failure is allowed");
        assert_eq!(r.step, 1);
        r.tick(1_200, &all(&h, TO, 0));
        assert_eq!(r.phase, Phase::Succeeded);
    }

    #[test]
    fn pause_after_the_canary_then_resume_and_abort_leave_hosts_as_they_are() {
        let h = hosts(5);
        let mut c = config();
        c.pause_after_canary = true;
        let mut r = Rollout::start("shop", FROM, TO, &h, c, 0);
        r.tick(1_000, &all(&h, TO, 0));
        assert_eq!(r.phase, Phase::Paused);
        r.tick(9_000, &all(&h, TO, 0));
        assert_eq!(on(&r, TO), ["h1"], "paused: no new step");
        r.resume(9_000).unwrap();
        assert_eq!(on(&r, TO), ["h1", "h2", "h3"]);
        r.abort(9_100).unwrap();
        assert_eq!(r.phase, Phase::Aborted);
        assert_eq!(
            on(&r, TO),
            ["h1", "h2", "h3"],
            "abort leaves hosts as they are"
        );
        assert!(r.resume(9_200).is_err() && r.pause(9_200).is_err() && r.abort(9_200).is_err());
    }

    #[test]
    fn a_rollout_survives_serialization_mid_step() {
        let h = hosts(5);
        let mut r = Rollout::start("shop", FROM, TO, &h, config(), 0);
        r.tick(1_000, &all(&h, TO, 0));
        let stored = serde_json::to_vec(&r).unwrap();
        let mut back: Rollout = serde_json::from_slice(&stored).unwrap();
        assert_eq!(back, r);
        back.tick(2_000, &all(&h, TO, 0));
        r.tick(2_000, &all(&h, TO, 0));
        assert_eq!(back, r, "a resumed rollout continues exactly where it was");
    }

    fn backup(outcome: BackupOutcome) -> HostReport {
        HostReport {
            revision: Some(FROM.into()),
            healthy_since: Some(0),
            backup: Some(outcome),
            ..HostReport::default()
        }
    }

    #[test]
    fn with_backup_first_a_host_is_updated_only_once_its_backups_succeeded() {
        let h = hosts(3);
        let mut c = config();
        c.backup_first = true;
        c.max_failures = 1;
        let mut r = Rollout::start("shop", FROM, TO, &h, c, 0);
        assert!(
            on(&r, TO).is_empty(),
            "backing up: the canary stays on from"
        );
        assert_eq!(r.backups_to_order(), ["h1"]);
        r.backups_ordered(10, "h1", Ok(vec![("j1".into(), "shop.db.t.1".into())]));
        assert!(r.backups_to_order().is_empty(), "ordered once");
        let mut reports = all(&h, FROM, 0);
        reports.insert("h1".into(), backup(BackupOutcome::Running));
        r.tick(100, &reports);
        assert!(on(&r, TO).is_empty(), "still backing up");
        reports.insert("h1".into(), backup(BackupOutcome::Done));
        r.tick(200, &reports);
        assert_eq!(on(&r, TO), ["h1"], "backed up: updated");
        assert!(r.events.iter().any(|e| e.what == "backed up: shop.db.t.1"));
        r.tick(1_300, &all(&h, TO, 200));
        assert_eq!(r.step, 1);
        assert_eq!(r.backups_to_order(), ["h2", "h3"]);
        r.backups_ordered(1_310, "h2", Ok(vec![("j2".into(), "shop.db.t.2".into())]));
        r.backups_ordered(1_310, "h3", Ok(vec![("j3".into(), "shop.db.t.3".into())]));
        let mut reports = all(&h, TO, 200);
        reports.insert("h2".into(), backup(BackupOutcome::Done));
        reports.insert(
            "h3".into(),
            backup(BackupOutcome::Failed("backup db: pg_dump exited 1".into())),
        );
        r.tick(1_400, &reports);
        assert_eq!(
            on(&r, TO),
            ["h1", "h2"],
            "a failed backup: the host never gets the update"
        );
        assert!(
            matches!(&r.hosts["h3"], HostPhase::BackupFailed(w) if w.contains("pg_dump exited 1")),
            "{:?}",
            r.hosts["h3"]
        );
        assert_eq!(r.failures, 1, "counted like any failed host");
        r.tick(2_500, &all(&h, TO, 1_400));
        assert_eq!(r.phase, Phase::Succeeded, "one failure is allowed here");
        assert_eq!(
            r.backups["h2"],
            [("j2".to_string(), "shop.db.t.2".to_string())]
        );
    }

    #[test]
    fn with_backup_first_a_failed_backup_past_max_failures_stops_the_rollout() {
        let h = hosts(3);
        let mut c = config();
        c.backup_first = true;
        let mut r = Rollout::start("shop", FROM, TO, &h, c, 0);
        r.backups_ordered(10, "h1", Ok(vec![("j1".into(), "shop.db.t.1".into())]));
        let mut reports = all(&h, FROM, 0);
        reports.insert(
            "h1".into(),
            backup(BackupOutcome::Failed("no space left".into())),
        );
        r.tick(100, &reports);
        assert!(
            matches!(&r.phase, Phase::RollingBack(w) if w.contains("h1: backup before the update failed: no space left")),
            "{:?}",
            r.phase
        );
        assert!(on(&r, TO).is_empty(), "nothing was updated");
        r.tick(200, &reports);
        assert!(matches!(r.phase, Phase::RolledBack(_)), "{:?}", r.phase);
        // Backups that never finish fail the step at the deadline; none to make: update at once.
        let mut r = Rollout::start("shop", FROM, TO, &h, c_backup_first(), 0);
        r.backups_ordered(10, "h1", Ok(vec![("j1".into(), "shop.db.t.1".into())]));
        let mut reports = all(&h, FROM, 0);
        reports.insert("h1".into(), backup(BackupOutcome::Running));
        r.tick(10_001, &reports);
        assert!(
            matches!(&r.hosts["h1"], HostPhase::BackupFailed(w) if w.contains("within the deadline")),
            "{:?}",
            r.hosts["h1"]
        );
        let mut r = Rollout::start("shop", FROM, TO, &h, c_backup_first(), 0);
        r.backups_ordered(10, "h1", Ok(Vec::new()));
        assert_eq!(on(&r, TO), ["h1"]);
        let mut r = Rollout::start("shop", FROM, TO, &h, c_backup_first(), 0);
        r.backups_ordered(10, "h1", Err("the stack was removed".into()));
        assert!(matches!(r.hosts["h1"], HostPhase::BackupFailed(_)));
    }

    fn c_backup_first() -> Config {
        let mut c = config();
        c.backup_first = true;
        c.auto_rollback = false;
        c.max_failures = 5;
        c
    }

    #[test]
    fn a_rollout_stored_before_backup_first_still_reads() {
        let r = Rollout::start("shop", FROM, TO, &hosts(2), config(), 0);
        let mut v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("backups");
        v["config"].as_object_mut().unwrap().remove("backup_first");
        let back: Rollout = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
