//! Alerts: built-in rules over what the server knows, notified to webhook receivers the way
//! Alertmanager does it (grouping, `group_wait`/`group_interval`/`repeat_interval`, firing and
//! resolved notifications, silences), with everything that must outlive a restart in the
//! database.
//!
//! ```text
//! every second:  sources.rs ──Observation──▶ rules.rs ──Evaluation──▶ state.rs (pending → firing → resolved)
//!                      └─▶ dispatch.rs: per (receiver, group) flush when due; notification log → outbox
//!                      └─▶ one transaction: alerts, log entries, outbox entries (Store::change_alerts)
//! per receiver:  deliver.rs: the outbox in order, POST (payload.rs), backoff while it is down,
//!                removed once delivered or given up, one audit record (`alert.notify`) each
//! ```
//!
//! Rules that hold: a notification is queued only together with the notification-log entry
//! that says it was (one transaction), so nothing is queued twice, and a restarted server
//! (whose groups start over) sends nothing the log says was sent; an alert keeps its start
//! across restarts (it is stored); a resolution seen before a restart is still sent after it (the
//! resolved alert stays stored until every receiver told it fires was told it resolved); what is
//! queued is delivered after a restart (the outbox is stored). Delivery is at least once: a
//! server stopped between a receiver's answer and recording it sends that notification again,
//! with the same `Idempotency-Key`. Every check-then-write of the alerting state is made under
//! [`Alerts`]' one lock.

pub mod config;
pub mod deliver;
pub mod dispatch;
pub mod payload;
pub mod rules;
pub mod silences;
pub mod sources;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use noco_proto::v1 as pb;
use tokio::sync::{Mutex, MutexGuard, Notify};
use tonic::Status;

use crate::audit::{Audit, Who};
use crate::clock::Clock;
use crate::error::{Doing, Error, Result};
use crate::hosts::Hosts;
use crate::store::{
    AlertChanges, AlertRecord, NotifiedAlert, NotifyLogRecord, OutboxRecord, SilenceRecord, Store,
};
use config::{AlertsConfig, Receiver};
use sources::{Memory, Sources};
use state::Pending;

/// How often rules are evaluated and groups flushed.
pub const TICK: Duration = Duration::from_millis(500);

/// The alerting state in memory: what the store holds, and what does not outlive a restart
/// (pending conditions, when each group flushes next).
#[derive(Debug, Default)]
struct State {
    loaded: bool,
    alerts: BTreeMap<String, AlertRecord>,
    log: BTreeMap<(String, String), NotifyLogRecord>,
    silences: BTreeMap<String, SilenceRecord>,
    pending: BTreeMap<String, Pending>,
    /// (receiver, group key) → when the group is flushed next.
    timers: BTreeMap<(String, String), i64>,
    memory: Memory,
}

#[derive(Debug)]
pub struct Alerts {
    config: AlertsConfig,
    external_url: String,
    store: Arc<dyn Store>,
    sources: Sources,
    hosts: Arc<Hosts>,
    audit: Arc<Audit>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Per receiver: woken when a notification is queued for it.
    wake: BTreeMap<String, Arc<Notify>>,
    /// Per receiver: the outbox id of the notification its delivery task is sending (never
    /// superseded: it is delivered or given up, and audited, by that task). Held by a tick from
    /// reading the outbox to writing its changes, and by a delivery task from reading its next
    /// notification to claiming it, so the two never take the same one.
    sending: Mutex<BTreeMap<String, String>>,
}

impl Alerts {
    pub fn new(
        config: AlertsConfig,
        sources: Sources,
        hosts: Arc<Hosts>,
        audit: Arc<Audit>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let external_url = config
            .external_url
            .clone()
            .unwrap_or_else(|| sources.pki.settings.server_url.clone());
        let wake = config
            .receivers
            .iter()
            .map(|r| (r.name.clone(), Arc::new(Notify::new())))
            .collect();
        Alerts {
            config,
            external_url,
            store: sources.store.clone(),
            sources,
            hosts,
            audit,
            clock,
            state: Mutex::default(),
            wake,
            sending: Mutex::default(),
        }
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// The state, read from the store the first time.
    async fn state(&self) -> Result<MutexGuard<'_, State>> {
        let mut st = self.state.lock().await;
        if !st.loaded {
            let s = &self.store;
            st.alerts = s
                .alerts()
                .await
                .doing("reading alerts")?
                .into_iter()
                .map(|a| (a.fingerprint.clone(), a))
                .collect();
            st.log = s
                .notify_log()
                .await
                .doing("reading the notification log")?
                .into_iter()
                .map(|l| ((l.receiver.clone(), l.group_key.clone()), l))
                .collect();
            st.silences = s
                .silences()
                .await
                .doing("reading silences")?
                .into_iter()
                .map(|x| (x.id.clone(), x))
                .collect();
            st.loaded = true;
        }
        Ok(st)
    }

    /// Start evaluating and delivering.
    pub fn spawn_driver(self: Arc<Self>) {
        for r in &self.config.receivers {
            let Some(wake) = self.wake.get(&r.name).cloned() else {
                continue;
            };
            tokio::spawn(self.clone().deliver_loop(r.clone(), wake));
        }
        tokio::spawn(async move {
            if let Err(e) = self.drop_orphans().await {
                tracing::error!("alerts: {e}");
            }
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.tick().await {
                    tracing::error!("alerts: {e}");
                }
            }
        });
    }

    /// Notifications queued for a receiver that is no longer configured are given up.
    async fn drop_orphans(&self) -> Result<()> {
        let outbox = self.store.outbox().await.doing("reading the outbox")?;
        for n in outbox
            .into_iter()
            .filter(|n| self.config.receiver(&n.receiver).is_none())
        {
            self.store
                .change_alerts(&AlertChanges {
                    remove_outbox: vec![n.id()],
                    ..Default::default()
                })
                .await
                .doing("writing the outbox")?;
            self.audit_notify(
                &n,
                Err(format!("receiver {:?} is no longer configured", n.receiver)),
            )
            .await;
        }
        Ok(())
    }

    fn for_of(&self, rule: &str) -> Duration {
        self.config
            .rules
            .get(rule)
            .map_or(Duration::ZERO, |s| s.for_)
    }

    /// Evaluate the rules, flush the groups that are due, and write what changed.
    pub async fn tick(&self) -> Result<()> {
        let mut st = self.state().await?;
        let now = self.clock.now_ms();
        let st = &mut *st;
        let obs = self.sources.observe(&mut st.memory, now).await?;
        let eval = rules::evaluate(&self.config.rules, &obs);
        // Everything below is committed to memory only once the store took it.
        let mut pending = st.pending.clone();
        let changed = state::step(&st.alerts, &mut pending, &eval, |r| self.for_of(r), now);
        let mut alerts = st.alerts.clone();
        for a in &changed {
            alerts.insert(a.fingerprint.clone(), a.clone());
        }
        let mut changes = AlertChanges {
            put_alerts: changed,
            ..Default::default()
        };
        let c = &self.config;
        let silenced =
            |a: &AlertRecord| silences::silencing(st.silences.values(), a, now).is_some();
        let mut log = st.log.clone();
        let mut timers = BTreeMap::new();
        for g in dispatch::groups(&c.receivers, alerts.values(), &c.group_by, &st.log) {
            let key = (g.receiver.name.clone(), g.key.clone());
            let due = st
                .timers
                .get(&key)
                .copied()
                .unwrap_or(now + c.group_wait.as_millis() as i64);
            if now < due {
                timers.insert(key, due);
                continue;
            }
            timers.insert(key.clone(), now + c.group_interval.as_millis() as i64);
            let before = st.log.get(&key);
            let f = dispatch::flush(&g, &silenced, before, c.repeat_interval, now);
            changes.put_outbox.extend(f.notification);
            match f.log {
                Some(l) if before != Some(&l) => {
                    changes.put_log.push(l.clone());
                    log.insert(key, l);
                }
                Some(_) => {}
                None if before.is_some() => {
                    changes.remove_log.push(key.clone());
                    log.remove(&key);
                }
                None => {}
            }
        }
        for a in alerts.values() {
            if dispatch::retired(a, &c.receivers, &c.group_by, &log) {
                changes.remove_alerts.push(a.fingerprint.clone());
            }
        }
        // Log entries no group has any more (their receiver was removed from the configuration
        // or no longer gets their rule) and whose alerts are gone.
        let stale: Vec<(String, String)> = log
            .iter()
            .filter(|(key, l)| {
                !timers.contains_key(*key) && l.firing.iter().all(|fp| !alerts.contains_key(fp))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            log.remove(&key);
            changes.remove_log.push(key);
        }
        for s in st.silences.values() {
            if silences::prunable(s, now) {
                changes.remove_silences.push(s.id.clone());
            }
        }
        let claims = self.sending.lock().await;
        let superseded = self.supersede(&mut changes, &claims).await?;
        if !changes.is_empty() {
            self.store
                .change_alerts(&changes)
                .await
                .doing("writing alerts")?;
        }
        drop(claims);
        for n in &superseded {
            self.audit_notify(
                n,
                Err("superseded: a newer notification of its group was queued before it could be delivered".into()),
            )
            .await;
        }
        for fp in &changes.remove_alerts {
            alerts.remove(fp);
        }
        for id in &changes.remove_silences {
            st.silences.remove(id);
        }
        for a in &changes.put_alerts {
            match a.ends_ms {
                None => tracing::info!(alert = %a.rule, labels = ?a.labels, "alert firing"),
                Some(_) => tracing::info!(alert = %a.rule, labels = ?a.labels, "alert resolved"),
            }
        }
        st.alerts = alerts;
        st.pending = pending;
        st.log = log;
        st.timers = timers;
        for n in &changes.put_outbox {
            if let Some(w) = self.wake.get(&n.receiver) {
                w.notify_one();
            }
        }
        Ok(())
    }

    /// A notification carries its group's whole state, so a newer one makes the queued ones of
    /// the same receiver and group obsolete: they are removed in the same transaction (but not
    /// the one being sent). So a receiver that is down holds at most two notifications per
    /// group, however long it stays down. Returns those removed, to be audited.
    async fn supersede(
        &self,
        changes: &mut AlertChanges,
        sending: &BTreeMap<String, String>,
    ) -> Result<Vec<OutboxRecord>> {
        if changes.put_outbox.is_empty() {
            return Ok(Vec::new());
        }
        let newer: std::collections::BTreeSet<(&str, &str)> = changes
            .put_outbox
            .iter()
            .map(|n| (n.receiver.as_str(), n.group_key.as_str()))
            .collect();
        let superseded: Vec<OutboxRecord> = self
            .store
            .outbox()
            .await
            .doing("reading the outbox")?
            .into_iter()
            .filter(|n| newer.contains(&(n.receiver.as_str(), n.group_key.as_str())))
            .filter(|n| sending.get(&n.receiver) != Some(&n.id()))
            .collect();
        changes
            .remove_outbox
            .extend(superseded.iter().map(OutboxRecord::id));
        Ok(superseded)
    }

    /// The oldest notification queued for a receiver.
    async fn next_queued(&self, receiver: &str) -> Result<Option<OutboxRecord>> {
        Ok(self
            .store
            .outbox()
            .await
            .doing("reading the outbox")?
            .into_iter()
            .filter(|n| n.receiver == receiver)
            .min_by_key(OutboxRecord::id))
    }

    /// Deliver a receiver's notifications in the order they were queued, each until it is
    /// delivered or given up.
    async fn deliver_loop(self: Arc<Self>, receiver: Receiver, wake: Arc<Notify>) {
        let client = match deliver::client(&receiver) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("alerts: {e}; nothing will be sent to it");
                return;
            }
        };
        loop {
            let next = {
                let mut claims = self.sending.lock().await;
                claims.remove(&receiver.name);
                let next = self.next_queued(&receiver.name).await;
                if let Ok(Some(n)) = &next {
                    claims.insert(receiver.name.clone(), n.id());
                }
                next
            };
            let next = match next {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("alerts: {e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let Some(n) = next else {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                continue;
            };
            let request = payload::render(&receiver, &self.external_url, &n);
            let mut attempt = 0u32;
            let outcome = loop {
                attempt += 1;
                match deliver::post(&client, &receiver, &request, &n.key).await {
                    deliver::Outcome::Delivered(how) => break Ok(how),
                    deliver::Outcome::GiveUp(why) => break Err(why),
                    deliver::Outcome::Retry { reason, after } => {
                        let wait =
                            after.unwrap_or_else(|| deliver::backoff(attempt, deliver::jitter()));
                        if attempt == 1 || attempt.is_multiple_of(10) {
                            tracing::warn!(
                                receiver = %receiver.name,
                                attempt,
                                "alerts: delivering {} failed: {reason}; trying again in {wait:?}",
                                n.group_key
                            );
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
            };
            let outcome = outcome.map(|how| {
                if attempt > 1 {
                    format!("{how} after {attempt} attempts")
                } else {
                    how
                }
            });
            loop {
                let removed = self
                    .store
                    .change_alerts(&AlertChanges {
                        remove_outbox: vec![n.id()],
                        ..Default::default()
                    })
                    .await;
                match removed {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!("alerts: removing a delivered notification: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            self.audit_notify(&n, outcome).await;
        }
    }

    /// One audit record per notification: delivered (`ok`) or given up (`error: …`).
    async fn audit_notify(&self, n: &OutboxRecord, outcome: std::result::Result<String, String>) {
        let mut what: Vec<String> = n
            .alerts
            .iter()
            .map(|a| {
                let place: Vec<&str> = ["host", "stack", "rollout", "backup", "cert"]
                    .iter()
                    .filter_map(|k| a.labels.get(*k).map(String::as_str))
                    .collect();
                format!("{} {}", a.status, place.join("/"))
            })
            .collect();
        what.dedup();
        let target = format!(
            "{} {} {}: {} (key {})",
            n.receiver,
            n.group_key,
            n.status,
            what.join(", "),
            n.key
        );
        let outcome = outcome.map_err(Status::unavailable);
        if let Ok(how) = &outcome {
            tracing::info!(receiver = %n.receiver, "alerts: delivered {} {} ({how})", n.group_key, n.status);
        }
        self.audit
            .record(&Who::named("server"), "alert.notify", &target, &outcome)
            .await;
    }

    /// `alert ls`: every rule with its state, the alerts held, silences and receivers.
    pub async fn list(&self) -> Result<pb::ListAlertsResponse> {
        let st = self.state().await?;
        let now = self.clock.now_ms();
        let mut alerts: Vec<pb::Alert> = Vec::new();
        for a in st.alerts.values().filter(|a| a.ends_ms.is_none()) {
            let silence = silences::silencing(st.silences.values(), a, now);
            alerts.push(pb::Alert {
                rule: a.rule.clone(),
                state: if silence.is_some() {
                    pb::AlertState::Silenced
                } else {
                    pb::AlertState::Firing
                }
                .into(),
                since_unix_ms: a.starts_ms,
                labels: a.labels.clone().into_iter().collect(),
                annotations: a.annotations.clone().into_iter().collect(),
                fingerprint: a.fingerprint.clone(),
                silence_id: silence.map(|s| s.id.clone()).unwrap_or_default(),
            });
        }
        for (fp, p) in &st.pending {
            alerts.push(pb::Alert {
                rule: p.rule.clone(),
                state: pb::AlertState::Pending.into(),
                since_unix_ms: p.since_ms,
                labels: p.labels.clone().into_iter().collect(),
                annotations: p.annotations.clone().into_iter().collect(),
                fingerprint: fp.clone(),
                silence_id: String::new(),
            });
        }
        alerts.sort_by(|a, b| {
            let order = |x: &pb::Alert| rules::RULES.iter().position(|r| r.name == x.rule);
            order(a)
                .cmp(&order(b))
                .then_with(|| sorted(&a.labels).cmp(&sorted(&b.labels)))
        });
        let rules = rules::RULES
            .iter()
            .map(|r| {
                let settings = self.config.rules.get(r.name);
                let mine: Vec<&pb::Alert> = alerts.iter().filter(|a| a.rule == r.name).collect();
                let state = [
                    pb::AlertState::Firing,
                    pb::AlertState::Silenced,
                    pb::AlertState::Pending,
                ]
                .into_iter()
                .find(|s| mine.iter().any(|a| a.state() == *s))
                .unwrap_or(pb::AlertState::Ok);
                let since = mine
                    .iter()
                    .filter(|a| a.state() == state)
                    .map(|a| a.since_unix_ms)
                    .min()
                    .unwrap_or(0);
                pb::AlertRule {
                    name: r.name.to_string(),
                    description: r.description.to_string(),
                    enabled: settings.is_some_and(|s| s.enabled),
                    severity: settings
                        .map_or(r.severity, |s| s.severity.as_str())
                        .to_string(),
                    state: state.into(),
                    since_unix_ms: since,
                }
            })
            .collect();
        let outbox = self.store.outbox().await.doing("reading the outbox")?;
        let receivers = self
            .config
            .receivers
            .iter()
            .map(|r| pb::AlertReceiver {
                name: r.name.clone(),
                format: r.format.name().to_string(),
                url: r.shown_url(),
                rules: r.rules.clone(),
                queued: outbox.iter().filter(|n| n.receiver == r.name).count() as u32,
            })
            .collect();
        Ok(pb::ListAlertsResponse {
            rules,
            alerts,
            silences: silences_to_wire(st.silences.values(), now),
            receivers,
        })
    }

    /// `alert silences`: every silence held, newest last.
    pub async fn silences(&self) -> Result<pb::ListSilencesResponse> {
        let st = self.state().await?;
        Ok(pb::ListSilencesResponse {
            silences: silences_to_wire(st.silences.values(), self.clock.now_ms()),
        })
    }

    /// `alert silence RULE [--host H] [--stack S] --for D`.
    pub async fn silence(&self, by: &str, req: pb::SilenceAlertRequest) -> Result<pb::Silence> {
        let Some(rule) = rules::rule(&req.rule) else {
            return Err(crate::error::not_found(
                "alert rule",
                &req.rule,
                rules::names(),
            ));
        };
        let host = if req.host.is_empty() {
            String::new()
        } else {
            if !rule.labels.contains(&"host") {
                return Err(Error::Invalid(format!(
                    "alerts of rule {} are not about a host: leave out --host",
                    rule.name
                )));
            }
            self.hosts.find(&req.host).await?.name
        };
        if !req.stack.is_empty() {
            if !rule.labels.contains(&"stack") {
                return Err(Error::Invalid(format!(
                    "alerts of rule {} are not about a stack: leave out --stack",
                    rule.name
                )));
            }
            let stacks = self.store.stacks().await.doing("reading stacks")?;
            if !stacks.iter().any(|s| s.name == req.stack) {
                return Err(crate::error::not_found(
                    "stack",
                    &req.stack,
                    stacks.iter().map(|s| s.name.as_str()),
                ));
            }
        }
        let ms = i64::try_from(req.duration_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        if ms <= 0 || ms > silences::MAX_MS {
            return Err(Error::Invalid(
                "a silence lasts more than 0s and at most 366 days: give --for (2h, 7d)".into(),
            ));
        }
        if req.comment.len() > 1024 {
            return Err(Error::Invalid(
                "a silence's comment is at most 1024 bytes".into(),
            ));
        }
        let now = self.clock.now_ms();
        let silence = SilenceRecord {
            id: noco_certs::random_hex::<8>(),
            rule: rule.name.to_string(),
            host,
            stack: req.stack,
            starts_ms: now,
            ends_ms: now.saturating_add(ms),
            comment: req.comment,
            created_by: by.to_string(),
        };
        let mut st = self.state().await?;
        self.store
            .change_alerts(&AlertChanges {
                put_silences: vec![silence.clone()],
                ..Default::default()
            })
            .await
            .doing("storing the silence")?;
        st.silences.insert(silence.id.clone(), silence.clone());
        Ok(silence_to_wire(&silence, now))
    }

    /// `alert unsilence ID`: end a silence now (it is kept, ended, until pruned).
    pub async fn unsilence(&self, id: &str) -> Result<pb::Silence> {
        let mut st = self.state().await?;
        let now = self.clock.now_ms();
        let Some(existing) = st.silences.get(id) else {
            let ids: Vec<&str> = st.silences.keys().map(String::as_str).collect();
            return Err(crate::error::not_found("silence", id, ids));
        };
        let mut ended = existing.clone();
        if ended.ends_ms > now {
            ended.ends_ms = now;
            self.store
                .change_alerts(&AlertChanges {
                    put_silences: vec![ended.clone()],
                    ..Default::default()
                })
                .await
                .doing("storing the silence")?;
            st.silences.insert(ended.id.clone(), ended.clone());
        }
        Ok(silence_to_wire(&ended, now))
    }

    /// `alert test RECEIVER`: one notification, sent now (no retry), and how it went.
    pub async fn test(&self, receiver: &str, by: &str) -> Result<pb::TestAlertResponse> {
        let Some(r) = self.config.receiver(receiver) else {
            if self.config.receivers.is_empty() {
                return Err(Error::NotFound(format!(
                    "no receiver named {receiver:?}: no receivers are configured (add [[alerts.receivers]] to the server's configuration file)"
                )));
            }
            return Err(crate::error::not_found(
                "receiver",
                receiver,
                self.config.receivers.iter().map(|r| r.name.as_str()),
            ));
        };
        let now = self.clock.now_ms();
        let labels: BTreeMap<String, String> = [
            ("alertname".to_string(), "noco-test".to_string()),
            ("severity".to_string(), "info".to_string()),
        ]
        .into();
        let n = OutboxRecord {
            key: noco_certs::random_hex::<16>(),
            receiver: r.name.clone(),
            group_key: dispatch::group_key(
                &[("alertname".to_string(), "noco-test".to_string())].into(),
            ),
            group_labels: [("alertname".to_string(), "noco-test".to_string())].into(),
            status: "firing".to_string(),
            alerts: vec![NotifiedAlert {
                fingerprint: state::fingerprint(&labels),
                status: "firing".to_string(),
                labels,
                annotations: [
                    (
                        "summary".to_string(),
                        "test notification from noco-server".to_string(),
                    ),
                    (
                        "description".to_string(),
                        format!("sent by {by} with `nococtl alert test`"),
                    ),
                ]
                .into(),
                starts_ms: now,
                ends_ms: None,
            }],
            created_ms: now,
        };
        let client = deliver::client(r).map_err(Error::Internal)?;
        let request = payload::render(r, &self.external_url, &n);
        match deliver::post(&client, r, &request, &n.key).await {
            deliver::Outcome::Delivered(how) => Ok(pb::TestAlertResponse {
                receiver: r.name.clone(),
                result: how,
            }),
            deliver::Outcome::Retry { reason, .. } | deliver::Outcome::GiveUp(reason) => {
                Err(Error::Precondition(format!(
                    "receiver {} ({}) did not take the test notification: {reason}",
                    r.name,
                    r.shown_url()
                )))
            }
        }
    }
}

fn sorted(labels: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = labels.iter().collect();
    v.sort();
    v
}

fn silence_to_wire(s: &SilenceRecord, now_ms: i64) -> pb::Silence {
    pb::Silence {
        id: s.id.clone(),
        rule: s.rule.clone(),
        host: s.host.clone(),
        stack: s.stack.clone(),
        starts_unix_ms: s.starts_ms,
        ends_unix_ms: s.ends_ms,
        comment: s.comment.clone(),
        created_by: s.created_by.clone(),
        active: silences::active(s, now_ms),
    }
}

fn silences_to_wire<'a>(
    silences: impl Iterator<Item = &'a SilenceRecord>,
    now_ms: i64,
) -> Vec<pb::Silence> {
    let mut out: Vec<pb::Silence> = silences.map(|s| silence_to_wire(s, now_ms)).collect();
    out.sort_by(|a, b| {
        a.starts_unix_ms
            .cmp(&b.starts_unix_ms)
            .then(a.id.cmp(&b.id))
    });
    out
}

#[cfg(test)]
mod tests;
