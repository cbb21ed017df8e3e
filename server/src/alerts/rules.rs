//! The built-in alert rules: one table ([`RULES`]) of each rule's name, labels, defaults, the
//! options its `[alerts.rules.<name>]` table takes, and its check. Checks are pure: they read an
//! [`Observation`] (what the server knows now, gathered by `sources.rs`) and say which alerts
//! hold ([`Evaluation::alerts`]) and about what nothing can be said now
//! ([`Evaluation::frozen`]: an offline host's stacks, a host not heard from since the server
//! started), whose alerts keep the state they had.

use std::collections::BTreeMap;
use std::time::Duration;

use noco_proto::health;
use noco_proto::v1 as pb;

use super::config::RuleSettings;
use crate::clock::rfc3339_ms;
use crate::machines::rollout::Phase;

/// A rule's option beyond `enabled`, `for` and `severity`, with its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Opt {
    /// `threshold`: a percentage, 0–100.
    Threshold(f64),
    /// `within`: how long before expiry a certificate alerts.
    Within(Duration),
    /// `resolve_after`: how long after it ended a failed rollout stops alerting.
    ResolveAfter(Duration),
}

impl Opt {
    pub fn key(&self) -> &'static str {
        match self {
            Opt::Threshold(_) => "threshold",
            Opt::Within(_) => "within",
            Opt::ResolveAfter(_) => "resolve_after",
        }
    }
}

/// A built-in rule.
#[derive(Debug)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    pub severity: &'static str,
    /// How long the condition must hold before the alert fires.
    pub for_: Duration,
    /// The labels its alerts carry besides `alertname` and `severity` (silences match on
    /// `host` and `stack`).
    pub labels: &'static [&'static str],
    pub options: &'static [Opt],
    check: fn(&RuleSettings, &Observation, &mut Evaluation),
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Every rule, in the order `alert ls` shows them.
pub const RULES: &[Rule] = &[
    Rule {
        name: "host-offline",
        description: "a host has no live agent session",
        severity: "critical",
        for_: secs(0),
        labels: &["host"],
        options: &[],
        check: host_offline,
    },
    Rule {
        name: "stack-failed",
        description: "a stack's apply failed on a host, or the host's policy refused it",
        severity: "critical",
        for_: secs(0),
        labels: &["host", "stack"],
        options: &[],
        check: stack_failed,
    },
    Rule {
        name: "stack-unhealthy",
        description: "a stack on a host is not converged with every service ready (and did not fail)",
        severity: "warning",
        for_: secs(60),
        labels: &["host", "stack"],
        options: &[],
        check: stack_unhealthy,
    },
    Rule {
        name: "rollout-failed",
        description: "a stack's latest finished rollout failed or was rolled back (until a later one succeeds, or resolve_after)",
        severity: "warning",
        for_: secs(0),
        labels: &["stack", "rollout"],
        options: &[Opt::ResolveAfter(secs(24 * 3600))],
        check: rollout_failed,
    },
    Rule {
        name: "state-refused",
        description: "an agent refused the desired state it was sent",
        severity: "warning",
        for_: secs(0),
        labels: &["host"],
        options: &[],
        check: state_refused,
    },
    Rule {
        name: "host-disk",
        description: "the fullest disk of a host is used above threshold percent",
        severity: "warning",
        for_: secs(300),
        labels: &["host", "mount"],
        options: &[Opt::Threshold(90.0)],
        check: host_disk,
    },
    Rule {
        name: "host-memory",
        description: "a host's memory is used above threshold percent",
        severity: "warning",
        for_: secs(300),
        labels: &["host"],
        options: &[Opt::Threshold(90.0)],
        check: host_memory,
    },
    Rule {
        name: "cert-expiry",
        description: "the CA, the server's or an agent's certificate expires within `within` (an agent's: within a quarter of its lifetime, when renewal is overdue)",
        severity: "warning",
        for_: secs(0),
        labels: &["cert", "host"],
        options: &[Opt::Within(secs(14 * 24 * 3600))],
        check: cert_expiry,
    },
    Rule {
        name: "backup-failed",
        description: "a stack's backup on a host failed, and none completed since",
        severity: "warning",
        for_: secs(0),
        labels: &["host", "stack", "backup"],
        options: &[],
        check: backup_failed,
    },
    Rule {
        name: "backup-missed",
        description: "a stack's scheduled backup on a host was missed, and none completed since",
        severity: "warning",
        for_: secs(0),
        labels: &["host", "stack", "backup"],
        options: &[],
        check: backup_missed,
    },
];

/// The rule of this name.
pub fn rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}

/// Every rule's name.
pub fn names() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.name)
}

/// What a host is, as far as the alert rules can tell.
#[derive(Debug, Clone, PartialEq)]
pub enum HostState {
    /// It has a live session: its latest report since it connected (`None`: none yet) and its
    /// latest host metrics (`None`: none yet).
    Online {
        report: Option<pb::StateReport>,
        metrics: Option<pb::HostMetrics>,
    },
    /// No live session since then.
    Offline { since_ms: i64 },
    /// Not known yet: this server has not seen it since it started (its agent may be
    /// reconnecting). Its alerts keep their state.
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostObs {
    pub name: String,
    pub state: HostState,
    pub cert_not_after_ms: i64,
}

/// A rollout of a stack, as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutObs {
    pub id: String,
    pub phase: Phase,
    /// When it ended (its last event), or started while it runs.
    pub ended_ms: i64,
}

/// A backup in the catalog, as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupObs {
    pub stack: String,
    pub name: String,
    pub host: String,
    pub state: pb::BackupState,
    /// When it started (or, missed, when it was scheduled for).
    pub time_ms: i64,
    pub reason: String,
}

/// The server's own certificates: `ca` or `server`, and when each expires.
#[derive(Debug, Clone, PartialEq)]
pub struct CertObs {
    pub cert: &'static str,
    pub not_after_ms: i64,
}

/// What the server knows now, for the rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub now_ms: i64,
    pub hosts: Vec<HostObs>,
    /// Per stack, its rollouts newest first (as many as it takes to decide).
    pub rollouts: BTreeMap<String, Vec<RolloutObs>>,
    pub backups: Vec<BackupObs>,
    pub certs: Vec<CertObs>,
    /// The lifetime of agents' certificates (`--agent-cert-ttl`).
    pub agent_cert_ttl_ms: i64,
    /// Whether rollouts, backups and certificates have been read yet (they are read less
    /// often than hosts): until they have, their rules keep their alerts.
    pub slow_known: bool,
}

/// An alert a rule says holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub rule: &'static str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Alerts about which nothing can be said now keep their state: every alert of a rule, or
/// those of a rule about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frozen {
    Rule(&'static str),
    Host(&'static str, String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    pub alerts: Vec<Candidate>,
    pub frozen: Vec<Frozen>,
}

impl Evaluation {
    /// Whether the alert of `rule` with these labels keeps its state.
    pub fn is_frozen(&self, rule: &str, labels: &BTreeMap<String, String>) -> bool {
        self.frozen.iter().any(|f| match f {
            Frozen::Rule(r) => *r == rule,
            Frozen::Host(r, h) => *r == rule && labels.get("host") == Some(h),
        })
    }
}

/// Run every enabled rule.
pub fn evaluate(settings: &BTreeMap<&'static str, RuleSettings>, obs: &Observation) -> Evaluation {
    let mut out = Evaluation::default();
    for rule in RULES {
        let Some(s) = settings.get(rule.name) else {
            continue;
        };
        if s.enabled {
            let before = out.alerts.len();
            (rule.check)(s, obs, &mut out);
            for c in &mut out.alerts[before..] {
                c.labels.insert("alertname".into(), rule.name.into());
                c.labels.insert("severity".into(), s.severity.clone());
                c.rule = rule.name;
            }
        }
    }
    out
}

/// An alert with its labels (`alertname` and `severity` are added by [`evaluate`]) and its
/// summary and description.
fn candidate(labels: &[(&str, &str)], summary: String, description: String) -> Candidate {
    Candidate {
        rule: "",
        labels: labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: [
            ("summary".to_string(), summary),
            ("description".to_string(), description),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect(),
    }
}

fn host_offline(_: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    for h in &obs.hosts {
        match &h.state {
            HostState::Offline { since_ms } => out.alerts.push(candidate(
                &[("host", &h.name)],
                format!("host {} is offline", h.name),
                format!("no live agent session since {}", rfc3339_ms(*since_ms)),
            )),
            HostState::Unknown => out
                .frozen
                .push(Frozen::Host("host-offline", h.name.clone())),
            HostState::Online { .. } => {}
        }
    }
}

/// The latest report of every host that has one since it connected; the others' alerts of
/// `rule` keep their state.
fn reports<'a>(
    rule: &'static str,
    obs: &'a Observation,
    out: &mut Evaluation,
) -> Vec<(&'a str, &'a pb::StateReport)> {
    let mut known = Vec::new();
    for h in &obs.hosts {
        match &h.state {
            HostState::Online {
                report: Some(r), ..
            } => known.push((h.name.as_str(), r)),
            _ => out.frozen.push(Frozen::Host(rule, h.name.clone())),
        }
    }
    known
}

fn stack_failed(_: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    for (host, report) in reports("stack-failed", obs, out) {
        for s in report.stacks.iter().filter(|s| health::stack_failed(s)) {
            out.alerts.push(candidate(
                &[("host", host), ("stack", &s.name)],
                format!("stack {} {} on {host}", s.name, s.state()),
                s.error.clone(),
            ));
        }
    }
}

fn stack_unhealthy(_: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    for (host, report) in reports("stack-unhealthy", obs, out) {
        for s in report
            .stacks
            .iter()
            .filter(|s| !health::stack_healthy(s) && !health::stack_failed(s))
        {
            let waiting: Vec<String> = s
                .services
                .iter()
                .filter(|svc| !health::service_ready(svc))
                .map(|svc| {
                    format!(
                        "{} ({}/{} running, {})",
                        svc.name,
                        svc.running,
                        svc.desired,
                        svc.health()
                    )
                })
                .collect();
            let description = if waiting.is_empty() {
                format!("the stack is {}", s.state())
            } else {
                format!(
                    "the stack is {}; not ready: {}",
                    s.state(),
                    waiting.join(", ")
                )
            };
            out.alerts.push(candidate(
                &[("host", host), ("stack", &s.name)],
                format!("stack {} is not healthy on {host}", s.name),
                description,
            ));
        }
    }
}

fn state_refused(_: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    for (host, report) in reports("state-refused", obs, out) {
        if !report.refused.is_empty() {
            out.alerts.push(candidate(
                &[("host", host)],
                format!(
                    "agent {host} refused desired state generation {}",
                    report.refused_generation
                ),
                report.refused.clone(),
            ));
        }
    }
}

/// Every host's latest metrics; the others' alerts of `rule` keep their state.
fn metrics<'a>(
    rule: &'static str,
    obs: &'a Observation,
    out: &mut Evaluation,
) -> Vec<(&'a str, &'a pb::HostMetrics)> {
    let mut known = Vec::new();
    for h in &obs.hosts {
        match &h.state {
            HostState::Online {
                metrics: Some(m), ..
            } => known.push((h.name.as_str(), m)),
            _ => out.frozen.push(Frozen::Host(rule, h.name.clone())),
        }
    }
    known
}

fn threshold(s: &RuleSettings) -> f64 {
    s.threshold.unwrap_or(90.0)
}

fn host_disk(s: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    let limit = threshold(s);
    for (host, m) in metrics("host-disk", obs, out) {
        let fullest = m
            .disks
            .iter()
            .filter(|d| d.total_bytes > 0)
            .map(|d| (d.used_bytes as f64 * 100.0 / d.total_bytes as f64, d))
            .max_by(|(a, _), (b, _)| a.total_cmp(b));
        if let Some((percent, d)) = fullest
            && percent > limit
        {
            out.alerts.push(candidate(
                &[("host", host), ("mount", &d.mount)],
                format!("disk {} of {host} is {percent:.0}% used", d.mount),
                format!(
                    "{} of {} used (threshold {limit}%)",
                    noco_proto::size::human(d.used_bytes),
                    noco_proto::size::human(d.total_bytes)
                ),
            ));
        }
    }
}

fn host_memory(s: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    let limit = threshold(s);
    for (host, m) in metrics("host-memory", obs, out) {
        if m.memory_total_bytes == 0 {
            continue;
        }
        let percent = m.memory_used_bytes as f64 * 100.0 / m.memory_total_bytes as f64;
        if percent > limit {
            out.alerts.push(candidate(
                &[("host", host)],
                format!("memory of {host} is {percent:.0}% used"),
                format!(
                    "{} of {} used (threshold {limit}%)",
                    noco_proto::size::human(m.memory_used_bytes),
                    noco_proto::size::human(m.memory_total_bytes)
                ),
            ));
        }
    }
}

fn rollout_failed(s: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    if !obs.slow_known {
        out.frozen.push(Frozen::Rule("rollout-failed"));
        return;
    }
    let keep = s.resolve_after.unwrap_or(secs(24 * 3600)).as_millis() as i64;
    for (stack, rollouts) in &obs.rollouts {
        // Newest first: a success ends it; a running, paused or aborted rollout does not.
        for r in rollouts {
            let why = match &r.phase {
                Phase::Succeeded => break,
                Phase::Failed(why) => format!("failed: {why}"),
                Phase::RolledBack(why) => format!("rolled back: {why}"),
                Phase::RollbackFailed(why) => format!("rollback failed: {why}"),
                Phase::Running | Phase::Paused | Phase::RollingBack(_) | Phase::Aborted => {
                    continue;
                }
            };
            if obs.now_ms - r.ended_ms < keep {
                out.alerts.push(candidate(
                    &[("stack", stack), ("rollout", &r.id)],
                    format!("rollout {} of stack {stack} {}", r.id, why_word(&r.phase)),
                    why,
                ));
            }
            break;
        }
    }
}

fn why_word(p: &Phase) -> &'static str {
    match p {
        Phase::RolledBack(_) => "was rolled back",
        Phase::RollbackFailed(_) => "failed to roll back",
        _ => "failed",
    }
}

fn cert_expiry(s: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    if !obs.slow_known {
        out.frozen.push(Frozen::Rule("cert-expiry"));
        return;
    }
    let within = s.within.unwrap_or(secs(14 * 24 * 3600)).as_millis() as i64;
    let left = |not_after: i64| not_after - obs.now_ms;
    let describe = |not_after: i64| {
        if left(not_after) <= 0 {
            format!("expired at {}", rfc3339_ms(not_after))
        } else {
            format!("expires at {}", rfc3339_ms(not_after))
        }
    };
    for c in &obs.certs {
        if left(c.not_after_ms) < within {
            let what = match c.cert {
                "ca" => {
                    "the CA certificate (renewing it means re-enrolling every host and operator)"
                }
                _ => {
                    "the server's certificate (it renews itself at two thirds of its lifetime: renewal is failing)"
                }
            };
            out.alerts.push(candidate(
                &[("cert", c.cert)],
                format!("{what} {}", describe(c.not_after_ms)),
                String::new(),
            ));
        }
    }
    // Agents renew at half to two thirds of their certificate's lifetime: a quarter left means
    // renewal is overdue.
    let agent_within = within.min(obs.agent_cert_ttl_ms / 4);
    for h in &obs.hosts {
        if h.cert_not_after_ms > 0 && left(h.cert_not_after_ms) < agent_within {
            out.alerts.push(candidate(
                &[("cert", "agent"), ("host", &h.name)],
                format!(
                    "the certificate of host {} {}",
                    h.name,
                    describe(h.cert_not_after_ms)
                ),
                "the agent renews it by itself while connected: a host offline for long needs `noco-agent enroll` again once expired".to_string(),
            ));
        }
    }
}

fn backup_failed(_: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    backups("backup-failed", pb::BackupState::Failed, obs, out);
}

fn backup_missed(_: &RuleSettings, obs: &Observation, out: &mut Evaluation) {
    backups("backup-missed", pb::BackupState::Missed, obs, out);
}

/// Per stack, backup and host: the newest record in `state` when it is newer than the newest
/// complete one.
fn backups(rule: &'static str, state: pb::BackupState, obs: &Observation, out: &mut Evaluation) {
    if !obs.slow_known {
        out.frozen.push(Frozen::Rule(rule));
        return;
    }
    let mut newest: BTreeMap<(&str, &str, &str), (Option<&BackupObs>, i64)> = BTreeMap::new();
    for b in &obs.backups {
        let entry = newest
            .entry((b.stack.as_str(), b.name.as_str(), b.host.as_str()))
            .or_insert((None, i64::MIN));
        if b.state == pb::BackupState::Complete {
            entry.1 = entry.1.max(b.time_ms);
        } else if b.state == state && entry.0.is_none_or(|n| n.time_ms < b.time_ms) {
            entry.0 = Some(b);
        }
    }
    for ((stack, name, host), (bad, complete)) in newest {
        let Some(b) = bad.filter(|b| b.time_ms > complete) else {
            continue;
        };
        let word = if state == pb::BackupState::Failed {
            "failed"
        } else {
            "was missed"
        };
        out.alerts.push(candidate(
            &[("host", host), ("stack", stack), ("backup", name)],
            format!(
                "backup {stack}/{name} on {host} {word} at {}",
                rfc3339_ms(b.time_ms)
            ),
            b.reason.clone(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::AlertsConfig;

    fn online(name: &str, report: Option<pb::StateReport>) -> HostObs {
        HostObs {
            name: name.into(),
            state: HostState::Online {
                report,
                metrics: None,
            },
            cert_not_after_ms: i64::MAX,
        }
    }

    fn eval(obs: &Observation) -> Evaluation {
        evaluate(&AlertsConfig::default().rules, obs)
    }

    fn names(e: &Evaluation) -> Vec<(String, Option<String>, Option<String>)> {
        e.alerts
            .iter()
            .map(|c| {
                (
                    c.rule.to_string(),
                    c.labels.get("host").cloned(),
                    c.labels.get("stack").cloned(),
                )
            })
            .collect()
    }

    fn stack(name: &str, state: pb::ApplyState, ready: bool) -> pb::StackReport {
        pb::StackReport {
            name: name.into(),
            revision: "r1".into(),
            state: state.into(),
            error: if state == pb::ApplyState::Failed {
                "port in use".into()
            } else {
                String::new()
            },
            services: vec![pb::ServiceReport {
                name: "web".into(),
                running: u32::from(ready),
                desired: 1,
                health: pb::Health::None.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_offline_host_alerts_and_an_unknown_one_keeps_its_state() {
        let obs = Observation {
            now_ms: 10_000,
            hosts: vec![
                HostObs {
                    name: "web-1".into(),
                    state: HostState::Offline { since_ms: 5_000 },
                    cert_not_after_ms: i64::MAX,
                },
                HostObs {
                    name: "web-2".into(),
                    state: HostState::Unknown,
                    cert_not_after_ms: i64::MAX,
                },
                online("web-3", None),
            ],
            ..Default::default()
        };
        let e = eval(&obs);
        assert_eq!(
            names(&e),
            [("host-offline".into(), Some("web-1".into()), None)]
        );
        let labels = &e.alerts[0].labels;
        assert_eq!(labels["alertname"], "host-offline");
        assert_eq!(labels["severity"], "critical");
        let web2: BTreeMap<String, String> = [("host".to_string(), "web-2".to_string())].into();
        assert!(e.is_frozen("host-offline", &web2));
        assert!(e.is_frozen("stack-failed", &web2), "no report: unknown");
        assert!(!e.is_frozen("host-offline", &labels.clone()));
    }

    #[test]
    fn a_failed_stack_is_failed_not_also_unhealthy_and_the_health_rule_is_noco_proto_s() {
        let report = pb::StateReport {
            stacks: vec![
                stack("shop", pb::ApplyState::Failed, false),
                stack("blog", pb::ApplyState::Converged, false),
                stack("wiki", pb::ApplyState::Converged, true),
            ],
            refused: "signature does not verify".into(),
            refused_generation: 7,
            ..Default::default()
        };
        let e = eval(&Observation {
            hosts: vec![online("web-1", Some(report))],
            ..Default::default()
        });
        assert_eq!(
            names(&e),
            [
                (
                    "stack-failed".into(),
                    Some("web-1".into()),
                    Some("shop".into())
                ),
                (
                    "stack-unhealthy".into(),
                    Some("web-1".into()),
                    Some("blog".into())
                ),
                ("state-refused".into(), Some("web-1".into()), None),
            ]
        );
        assert_eq!(e.alerts[0].annotations["description"], "port in use");
    }

    #[test]
    fn disk_and_memory_alert_above_their_threshold() {
        let metrics = pb::HostMetrics {
            memory_used_bytes: 95,
            memory_total_bytes: 100,
            disks: vec![
                pb::DiskUsage {
                    mount: "/".into(),
                    used_bytes: 50,
                    total_bytes: 100,
                },
                pb::DiskUsage {
                    mount: "/var".into(),
                    used_bytes: 91,
                    total_bytes: 100,
                },
            ],
            ..Default::default()
        };
        let obs = Observation {
            hosts: vec![HostObs {
                name: "web-1".into(),
                state: HostState::Online {
                    report: None,
                    metrics: Some(metrics),
                },
                cert_not_after_ms: i64::MAX,
            }],
            ..Default::default()
        };
        let e = eval(&obs);
        let rules: Vec<&str> = e.alerts.iter().map(|c| c.rule).collect();
        assert_eq!(rules, ["host-disk", "host-memory"]);
        assert_eq!(e.alerts[0].labels["mount"], "/var");
        let mut config = AlertsConfig::default();
        for r in ["host-disk", "host-memory"] {
            if let Some(s) = config.rules.get_mut(r) {
                s.threshold = Some(96.0);
            }
        }
        assert!(evaluate(&config.rules, &obs).alerts.is_empty());
    }

    #[test]
    fn a_failed_rollout_alerts_until_a_later_one_succeeds_or_resolve_after() {
        let r = |id: &str, phase: Phase, ended_ms| RolloutObs {
            id: id.into(),
            phase,
            ended_ms,
        };
        let mut obs = Observation {
            now_ms: 1_000,
            slow_known: true,
            ..Default::default()
        };
        obs.rollouts.insert(
            "shop".into(),
            vec![
                r("r3", Phase::Running, 900),
                r("r2", Phase::RolledBack("web-1 unhealthy".into()), 800),
                r("r1", Phase::Succeeded, 100),
            ],
        );
        let e = eval(&obs);
        assert_eq!(e.alerts.len(), 1);
        assert_eq!(e.alerts[0].labels["rollout"], "r2");
        assert_eq!(
            e.alerts[0].annotations["description"],
            "rolled back: web-1 unhealthy"
        );
        obs.rollouts
            .insert("shop".into(), vec![r("r4", Phase::Succeeded, 950)]);
        assert!(eval(&obs).alerts.is_empty(), "a later success resolves");
        obs.rollouts
            .insert("shop".into(), vec![r("r2", Phase::Failed("x".into()), 800)]);
        obs.now_ms = 800 + 24 * 3600 * 1000;
        assert!(eval(&obs).alerts.is_empty(), "a day later it resolves");
        obs.slow_known = false;
        let e = eval(&obs);
        assert!(e.is_frozen("rollout-failed", &BTreeMap::new()));
    }

    #[test]
    fn a_backup_alerts_while_its_newest_failure_is_newer_than_its_newest_success() {
        let b = |state, time_ms| BackupObs {
            stack: "shop".into(),
            name: "db".into(),
            host: "web-1".into(),
            state,
            time_ms,
            reason: "pg_dump exited 1".into(),
        };
        use pb::BackupState::{Complete, Failed, Missed};
        let mut obs = Observation {
            slow_known: true,
            backups: vec![b(Complete, 100), b(Failed, 200), b(Missed, 50)],
            ..Default::default()
        };
        let e = eval(&obs);
        let rules: Vec<&str> = e.alerts.iter().map(|c| c.rule).collect();
        assert_eq!(rules, ["backup-failed"]);
        assert_eq!(e.alerts[0].labels["backup"], "db");
        obs.backups.push(b(Complete, 300));
        assert!(eval(&obs).alerts.is_empty());
    }

    #[test]
    fn certificates_alert_within_their_window_and_agents_only_when_renewal_is_overdue() {
        let day = 24 * 3600 * 1000;
        let mut host = online("web-1", None);
        host.cert_not_after_ms = 10 * day + 8 * 3600 * 1000;
        let obs = Observation {
            now_ms: 10 * day,
            slow_known: true,
            agent_cert_ttl_ms: day,
            certs: vec![
                CertObs {
                    cert: "ca",
                    not_after_ms: 20 * day,
                },
                CertObs {
                    cert: "server",
                    not_after_ms: 30 * day,
                },
            ],
            hosts: vec![host.clone()],
            ..Default::default()
        };
        let e = eval(&obs);
        let certs: Vec<&str> = e.alerts.iter().map(|c| c.labels["cert"].as_str()).collect();
        assert_eq!(
            certs,
            ["ca"],
            "8 h left of a 24 h agent cert is not overdue"
        );
        let mut obs = obs;
        obs.hosts[0].cert_not_after_ms = 10 * day + 5 * 3600 * 1000;
        let e = eval(&obs);
        let certs: Vec<&str> = e.alerts.iter().map(|c| c.labels["cert"].as_str()).collect();
        assert_eq!(certs, ["ca", "agent"]);
    }

    #[test]
    fn a_disabled_rule_says_nothing() {
        let mut config = AlertsConfig::default();
        if let Some(s) = config.rules.get_mut("host-offline") {
            s.enabled = false;
        }
        let obs = Observation {
            hosts: vec![HostObs {
                name: "web-1".into(),
                state: HostState::Offline { since_ms: 0 },
                cert_not_after_ms: i64::MAX,
            }],
            ..Default::default()
        };
        assert!(evaluate(&config.rules, &obs).alerts.is_empty());
    }
}
