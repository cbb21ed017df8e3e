//! Rollouts on the server: starting, controlling and driving the rollout state machine
//! ([`crate::rollout`]). Every transition is persisted in sled before its effect (the per-host
//! revision pins in desired state) is pushed, so a restarted server resumes each rollout where it
//! was; every event goes to the audit log and to the log with the rollout's id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use noco_proto::v1 as pb;
use tonic::Status;

use crate::auth::Caller;
use crate::rollout::{BatchSize, Config, HostPhase, Phase, Rollout};
use crate::selector::Selector;
use crate::shared::{Shared, internal};
use crate::store::{AuditRecord, HistoryEntry, RolloutRecord};

/// Tracing spans of the rollouts this server is driving: one per rollout, and a child per host
/// step, opened and closed by the rollout's own events — so a tracing/OpenTelemetry layer sees
/// one trace per rollout. (After a server restart, the spans of a resumed rollout start anew.)
#[derive(Debug, Default)]
pub struct Spans(std::sync::Mutex<std::collections::HashMap<String, RolloutSpans>>);

/// A rollout's span and the spans of its host steps in flight, by host.
type RolloutSpans = (
    tracing::Span,
    std::collections::HashMap<String, tracing::Span>,
);

impl Spans {
    /// Record a rollout's new events as span transitions.
    fn follow(&self, rec: &RolloutRecord, new_events: &[crate::rollout::Event]) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (rollout_span, hosts) = all.entry(rec.id.clone()).or_insert_with(|| {
            (tracing::info_span!("rollout", rollout.id = %rec.id, stack = %rec.rollout.stack, to = %rec.rollout.to), Default::default())
        });
        for e in new_events {
            let Some(host) = &e.host else {
                rollout_span.in_scope(|| tracing::info!("{}", e.what));
                continue;
            };
            if e.what.starts_with("updating to") || e.what.starts_with("rolling back to") {
                let span = tracing::info_span!(parent: &*rollout_span, "host_step", host = %host, what = %e.what);
                hosts.insert(host.clone(), span);
            }
            match hosts.get(host) {
                Some(span) => span.in_scope(|| tracing::info!("{}", e.what)),
                None => rollout_span.in_scope(|| tracing::info!(host = %host, "{}", e.what)),
            }
            if e.what.starts_with("healthy on")
                || e.what.starts_with("failed")
                || e.what.starts_with("back on")
                || e.what.starts_with("rollback failed")
            {
                hosts.remove(host);
            }
        }
        if !rec.rollout.phase.is_active() {
            all.remove(&rec.id);
        }
    }
}

/// How often active rollouts are advanced.
pub const TICK: Duration = Duration::from_millis(200);

pub fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Running => "running",
        Phase::Paused => "paused",
        Phase::Succeeded => "succeeded",
        Phase::Failed(_) => "failed",
        Phase::RollingBack(_) => "rolling_back",
        Phase::RolledBack(_) => "rolled_back",
        Phase::RollbackFailed(_) => "rollback_failed",
        Phase::Aborted => "aborted",
    }
}

fn reason(p: &Phase) -> String {
    match p {
        Phase::Failed(w)
        | Phase::RollingBack(w)
        | Phase::RolledBack(w)
        | Phase::RollbackFailed(w) => w.clone(),
        _ => String::new(),
    }
}

/// The stack's rollout in progress (running, paused or rolling back), if any.
pub fn active(shared: &Shared, stack: &str) -> Result<Option<RolloutRecord>, Status> {
    Ok(latest(shared, stack)?.filter(|r| r.rollout.phase.is_active()))
}

fn latest(shared: &Shared, stack: &str) -> Result<Option<RolloutRecord>, Status> {
    Ok(shared
        .store
        .rollouts_of(stack)
        .map_err(|e| internal("reading rollouts", e))?
        .into_iter()
        .next())
}

fn config_from_wire(c: Option<&pb::RolloutConfig>) -> Result<Config, Status> {
    let c = c.cloned().unwrap_or_default();
    let batch = match (c.batch_count, c.batch_percent) {
        (0, 0) => BatchSize::Percent(25),
        (n, 0) => BatchSize::Count(n as usize),
        (0, p) if p <= 100 => BatchSize::Percent(p as u8),
        (0, p) => {
            return Err(Status::invalid_argument(format!(
                "--batch {p}% is over 100%"
            )));
        }
        _ => {
            return Err(Status::invalid_argument(
                "give the batch as a count or a percentage, not both",
            ));
        }
    };
    let deadline_ms = if c.deadline_ms == 0 {
        5 * 60_000
    } else {
        c.deadline_ms as i64
    };
    if (c.min_healthy_ms as i64) >= deadline_ms {
        return Err(Status::invalid_argument(format!(
            "--min-healthy ({} ms) must be shorter than --deadline ({deadline_ms} ms): a host could never pass",
            c.min_healthy_ms
        )));
    }
    Ok(Config {
        canary: c.canary as usize,
        batch,
        min_healthy_ms: c.min_healthy_ms as i64,
        deadline_ms,
        max_failures: c.max_failures as usize,
        auto_rollback: c.auto_rollback,
        pause_after_canary: c.pause_after_canary,
    })
}

fn config_to_wire(c: &Config) -> pb::RolloutConfig {
    let (batch_count, batch_percent) = match c.batch {
        BatchSize::Count(n) => (n as u32, 0),
        BatchSize::Percent(p) => (0, u32::from(p)),
    };
    pb::RolloutConfig {
        canary: c.canary as u32,
        batch_count,
        batch_percent,
        min_healthy_ms: c.min_healthy_ms.max(0) as u64,
        deadline_ms: c.deadline_ms.max(0) as u64,
        max_failures: c.max_failures as u32,
        auto_rollback: c.auto_rollback,
        pause_after_canary: c.pause_after_canary,
    }
}

pub fn to_wire(shared: &Shared, rec: &RolloutRecord) -> Result<pb::RolloutInfo, Status> {
    let names: BTreeMap<String, String> = shared
        .store
        .hosts()
        .map_err(|e| internal("reading hosts", e))?
        .into_iter()
        .map(|h| (h.id, h.name))
        .collect();
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let r = &rec.rollout;
    let targets = r.targets();
    let step_of = |id: &str| {
        r.steps
            .iter()
            .position(|s| s.iter().any(|h| h == id))
            .map(|i| i as u32 + 1)
            .unwrap_or(0)
    };
    let mut hosts: Vec<pb::RolloutHost> = r
        .hosts
        .iter()
        .map(|(id, p)| {
            let (phase, detail) = match p {
                HostPhase::Waiting => ("waiting", String::new()),
                HostPhase::Updating { .. } => ("updating", String::new()),
                HostPhase::Done => ("done", String::new()),
                HostPhase::Failed(w) => ("failed", w.clone()),
            };
            pb::RolloutHost {
                host: name(id),
                phase: phase.to_string(),
                target_revision: targets.get(id).cloned().unwrap_or_default(),
                detail,
                step: step_of(id),
            }
        })
        .collect();
    hosts.sort_by(|a, b| a.step.cmp(&b.step).then(a.host.cmp(&b.host)));
    Ok(pb::RolloutInfo {
        id: rec.id.clone(),
        stack: r.stack.clone(),
        from_revision: r.from.clone(),
        to_revision: r.to.clone(),
        phase: phase_name(&r.phase).to_string(),
        reason: match r.phase {
            // "hosts left as they are: …", from the abort's own event.
            Phase::Aborted => r
                .events
                .last()
                .map(|e| e.what.trim_start_matches("Aborted: ").to_string())
                .unwrap_or_default(),
            _ => reason(&r.phase),
        },
        step: r.step as u32 + 1,
        steps: r.steps.len() as u32,
        hosts,
        events: r
            .events
            .iter()
            .map(|e| pb::RolloutEvent {
                at_unix_ms: e.at,
                host: e.host.as_deref().map(name).unwrap_or_default(),
                what: e.what.clone(),
            })
            .collect(),
        started_unix_ms: rec.started_ms,
        config: Some(config_to_wire(&r.config)),
    })
}

/// Persist a rollout after a transition: its new events go to the audit log; when its pins
/// changed, the hosts' desired states are re-issued; when it succeeded, the stack moves to the
/// new revision.
async fn commit(
    shared: &Shared,
    rec: &RolloutRecord,
    before: Option<&Rollout>,
) -> Result<(), Status> {
    shared
        .store
        .put_rollout(rec)
        .await
        .map_err(|e| internal("storing the rollout", e))?;
    let r = &rec.rollout;
    let seen = before.map(|b| b.events.len()).unwrap_or(0);
    shared
        .rollout_spans
        .follow(rec, &r.events[seen.min(r.events.len())..]);
    for e in r.events.iter().skip(seen) {
        let record = AuditRecord {
            time_ms: e.at,
            caller: format!("rollout {}", rec.id),
            action: "rollout.event".into(),
            target: match &e.host {
                Some(h) => format!("{} on {h}", r.stack),
                None => r.stack.clone(),
            },
            result: e.what.clone(),
        };
        if let Err(err) = shared.store.append_audit(&record) {
            tracing::error!("writing audit record: {err}");
        }
    }
    if r.phase == Phase::Succeeded && before.is_none_or(|b| b.phase != Phase::Succeeded) {
        let mut stack = shared
            .store
            .stack(&r.stack)
            .map_err(|e| internal("reading stacks", e))?
            .ok_or_else(|| {
                Status::not_found(format!("stack {} was removed during its rollout", r.stack))
            })?;
        if stack.revision == r.from {
            stack.revision = r.to.clone();
            stack.updated_ms = shared.now_ms();
            stack.history.push(HistoryEntry {
                revision: r.to.clone(),
                selector: stack.selector.clone(),
                time_ms: stack.updated_ms,
                by: format!("rollout {}", rec.id),
            });
            shared
                .store
                .put_stack(&stack)
                .await
                .map_err(|e| internal("storing the stack", e))?;
        }
    }
    let changed = before.is_none_or(|b| b.targets() != r.targets() || b.phase != r.phase);
    if changed {
        let hosts: Vec<String> = r.hosts.keys().cloned().collect();
        crate::desired::update_hosts(shared, |h| hosts.contains(&h.id)).await?;
    }
    Ok(())
}

async fn begin(
    shared: &Shared,
    caller: &Caller,
    stack_name: &str,
    to: String,
    config: Config,
) -> Result<pb::RolloutInfo, Status> {
    if let Some(a) = active(shared, stack_name)? {
        return Err(Status::failed_precondition(format!(
            "stack {stack_name} already has an active rollout ({}, {}): one at a time",
            a.id,
            phase_name(&a.rollout.phase)
        )));
    }
    let stack = shared
        .store
        .stack(stack_name)
        .map_err(|e| internal("reading stacks", e))?
        .ok_or_else(|| {
            Status::not_found(format!(
                "no stack named {stack_name:?}: `nococtl stack apply` creates it"
            ))
        })?;
    if stack.revision == to {
        return Err(Status::failed_precondition(format!(
            "stack {stack_name} is already at revision {to}"
        )));
    }
    let selector = Selector::parse(&stack.selector).map_err(Status::internal)?;
    let hosts: Vec<String> = shared
        .store
        .hosts()
        .map_err(|e| internal("reading hosts", e))?
        .into_iter()
        .filter(|h| h.revoked_ms.is_none() && selector.matches(&h.name, &h.labels))
        .map(|h| h.id)
        .collect();
    if hosts.is_empty() {
        return Err(Status::failed_precondition(format!(
            "no host matches stack {stack_name}'s selector {}",
            stack.selector
        )));
    }
    let now = shared.now_ms();
    let rec = RolloutRecord {
        id: noco_certs::random_hex::<4>(),
        started_ms: now,
        by: caller.describe(),
        rollout: Rollout::start(stack_name, &stack.revision, &to, &hosts, config, now),
    };
    commit(shared, &rec, None).await?;
    to_wire(shared, &rec)
}

pub async fn start(
    shared: &Shared,
    caller: &Caller,
    req: pb::StartRolloutRequest,
) -> Result<pb::RolloutInfo, Status> {
    crate::names::check_stack_name(&req.stack)?;
    let config = config_from_wire(req.config.as_ref())?;
    let (revision, _warnings) =
        crate::stacks::check_revision(&req.stack, &req.compose, &req.env, &req.files)?;
    crate::stacks::store_revision(shared, &revision, req.compose, req.env, req.files)?;
    begin(shared, caller, &req.stack, revision, config).await
}

pub async fn undo(
    shared: &Shared,
    caller: &Caller,
    req: pb::UndoRolloutRequest,
) -> Result<pb::RolloutInfo, Status> {
    let config = config_from_wire(req.config.as_ref())?;
    let stack = shared
        .store
        .stack(&req.stack)
        .map_err(|e| internal("reading stacks", e))?
        .ok_or_else(|| Status::not_found(format!("no stack named {:?}", req.stack)))?;
    let previous = stack
        .history
        .iter()
        .rev()
        .map(|h| h.revision.clone())
        .find(|r| *r != stack.revision)
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "stack {} has no earlier revision to go back to",
                req.stack
            ))
        })?;
    begin(shared, caller, &req.stack, previous, config).await
}

pub fn get(shared: &Shared, stack: &str) -> Result<pb::RolloutInfo, Status> {
    let rec = latest(shared, stack)?
        .ok_or_else(|| Status::not_found(format!("stack {stack:?} has had no rollout")))?;
    to_wire(shared, &rec)
}

pub fn list(shared: &Shared, stack: &str) -> Result<pb::ListRolloutsResponse, Status> {
    let rollouts = shared
        .store
        .rollouts_of(stack)
        .map_err(|e| internal("reading rollouts", e))?
        .iter()
        .map(|r| to_wire(shared, r))
        .collect::<Result<_, _>>()?;
    Ok(pb::ListRolloutsResponse { rollouts })
}

pub async fn control(
    shared: &Shared,
    req: pb::ControlRolloutRequest,
) -> Result<pb::RolloutInfo, Status> {
    let _serial = shared.rollout_lock.lock().await;
    let mut rec = active(shared, &req.stack)?.ok_or_else(|| {
        Status::failed_precondition(format!("stack {:?} has no active rollout", req.stack))
    })?;
    let before = rec.rollout.clone();
    let now = shared.now_ms();
    match req.action.as_str() {
        "pause" => rec.rollout.pause(now),
        "resume" => rec.rollout.resume(now),
        "abort" => rec.rollout.abort(now),
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown rollout action {other:?} (pause, resume or abort)"
            )));
        }
    }
    .map_err(Status::failed_precondition)?;
    commit(shared, &rec, Some(&before)).await?;
    to_wire(shared, &rec)
}

/// Advance every active rollout on the hosts' latest reports.
pub async fn tick_all(shared: &Shared) -> Result<(), Status> {
    let _serial = shared.rollout_lock.lock().await;
    for mut rec in shared
        .store
        .latest_rollouts()
        .map_err(|e| internal("reading rollouts", e))?
    {
        if !rec.rollout.phase.is_active() {
            continue;
        }
        let before = rec.rollout.clone();
        let reports = rec
            .rollout
            .hosts
            .keys()
            .filter_map(|id| {
                crate::desired::host_report(shared, id, &rec.rollout.stack).map(|r| (id.clone(), r))
            })
            .collect();
        rec.rollout.tick(shared.now_ms(), &reports);
        if rec.rollout != before {
            commit(shared, &rec, Some(&before)).await?;
        }
    }
    Ok(())
}

/// The task that drives rollouts; it also resumes those a previous server left active.
pub fn spawn_driver(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            // Every report may complete a host step; the tick catches deadlines.
            tokio::select! {
                _ = tick.tick() => {}
                _ = shared.rollout_wake.notified() => {}
            }
            if let Err(e) = tick_all(&shared).await {
                tracing::error!("advancing rollouts: {}", e.message());
            }
            // Reports arrive in bursts: judge at most every 20 ms.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
