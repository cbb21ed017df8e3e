//! Desired state per host: every stack whose selector matches the host, signed with a fresh
//! generation whenever that set changes or the state has less than a third of its validity
//! left, stored, and pushed to the host's live session. Agents report back what they run; the
//! latest report of each host is kept in memory for `nococtl status`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use noco_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use crate::selector::Selector;
use crate::shared::{Shared, internal};
use crate::store::HostRecord;

/// The latest report of every host, with when it arrived; and since when each host × stack has
/// been continuously healthy on a revision (rollouts gate on it).
#[derive(Debug, Default)]
pub struct Reports(
    Mutex<HashMap<String, (pb::StateReport, i64)>>,
    Mutex<HashMap<(String, String), (String, i64)>>,
);

impl Reports {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (pb::StateReport, i64)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn healthy(&self) -> MutexGuard<'_, HashMap<(String, String), (String, i64)>> {
        self.1.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn get(&self, host_id: &str) -> Option<(pb::StateReport, i64)> {
        self.lock().get(host_id).cloned()
    }
}

pub fn record_report(shared: &Shared, host_id: &str, report: pb::StateReport) {
    if !report.refused.is_empty() {
        tracing::warn!(
            host = host_id,
            generation = report.refused_generation,
            "agent refused its desired state: {}",
            report.refused
        );
    }
    for s in report
        .stacks
        .iter()
        .filter(|s| s.state == "failed" || s.state == "refused")
    {
        tracing::warn!(host = host_id, stack = %s.name, "stack {}: {}", s.state, s.error);
    }
    let now = shared.now_ms();
    {
        let mut healthy = shared.reports.healthy();
        for s in &report.stacks {
            let key = (host_id.to_string(), s.name.clone());
            let ok = s.state == "converged"
                && s.services.iter().all(|svc| {
                    svc.running >= svc.desired && (svc.health == "healthy" || svc.health == "none")
                });
            if !ok {
                healthy.remove(&key);
            } else if healthy.get(&key).is_none_or(|(rev, _)| *rev != s.revision) {
                healthy.insert(key, (s.revision.clone(), now));
            }
        }
        healthy
            .retain(|(h, stack), _| h != host_id || report.stacks.iter().any(|s| &s.name == stack));
    }
    shared
        .reports
        .lock()
        .insert(host_id.to_string(), (report, now));
    shared.rollout_wake.notify_one();
}

/// What a host reports about a stack, as the rollout state machine reads it.
pub fn host_report(
    shared: &Shared,
    host_id: &str,
    stack: &str,
) -> Option<crate::rollout::HostReport> {
    let (report, _) = shared.reports.get(host_id)?;
    let s = report.stacks.iter().find(|s| s.name == stack)?;
    let healthy_since = shared
        .reports
        .healthy()
        .get(&(host_id.to_string(), stack.to_string()))
        .filter(|(rev, _)| *rev == s.revision)
        .map(|(_, since)| *since);
    let failure = (s.state == "failed" || s.state == "refused").then(|| s.error.clone());
    Some(crate::rollout::HostReport {
        revision: Some(s.revision.clone()),
        healthy_since,
        failure,
    })
}

/// Per-host revision pins of stacks under a rollout: the latest rollout of a stack pins its
/// hosts while the stack's revision is still the one the rollout started from (a finished
/// rollout moves the stack itself; a failed or aborted one leaves hosts where they are).
pub fn pins(shared: &Shared, stacks: &[crate::store::StackRecord]) -> Result<Pins, Status> {
    let mut out = HashMap::new();
    for r in shared
        .store
        .latest_rollouts()
        .map_err(|e| internal("reading rollouts", e))?
    {
        let current = stacks
            .iter()
            .find(|s| s.name == r.rollout.stack)
            .map(|s| s.revision.as_str());
        if current == Some(r.rollout.from.as_str())
            && r.rollout.phase != crate::rollout::Phase::Succeeded
        {
            out.insert(r.rollout.stack.clone(), r.rollout.targets());
        }
    }
    Ok(out)
}

/// Stack name → host id → pinned revision.
pub type Pins = HashMap<String, std::collections::BTreeMap<String, String>>;
/// The stacks assigned to a host, as `(name, revision)`, by name.
pub fn assigned(shared: &Shared, host: &HostRecord) -> Result<Vec<(String, String)>, Status> {
    let stacks = shared
        .store
        .stacks()
        .map_err(|e| internal("reading stacks", e))?;
    Ok(assigned_from(&stacks, host))
}

fn assigned_from(stacks: &[crate::store::StackRecord], host: &HostRecord) -> Vec<(String, String)> {
    pinned_from(stacks, host, &Pins::new())
}

/// The stacks assigned to a host, with a rollout's pin in place of the stack's revision.
fn pinned_from(
    stacks: &[crate::store::StackRecord],
    host: &HostRecord,
    pins: &Pins,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = stacks
        .iter()
        .filter(|s| {
            Selector::parse(&s.selector).is_ok_and(|sel| sel.matches(&host.name, &host.labels))
        })
        .map(|s| {
            let pinned = pins.get(&s.name).and_then(|p| p.get(&host.id)).cloned();
            (s.name.clone(), pinned.unwrap_or_else(|| s.revision.clone()))
        })
        .collect();
    out.sort();
    out
}

fn decode(bytes: &[u8]) -> Option<(pb::SignedState, pb::DesiredState)> {
    let env = pb::SignedState::decode(bytes).ok()?;
    let state = pb::DesiredState::decode(env.payload.as_slice()).ok()?;
    Some((env, state))
}

/// Revision contents, read once per update however many hosts share them.
#[derive(Default)]
struct RevisionCache(HashMap<String, pb::StackState>);

impl RevisionCache {
    fn get(
        &mut self,
        shared: &Shared,
        name: &str,
        revision: &str,
    ) -> Result<pb::StackState, Status> {
        if !self.0.contains_key(revision) {
            let bytes = shared
                .store
                .revision(revision)
                .map_err(|e| internal("reading a revision", e))?
                .ok_or_else(|| {
                    Status::internal(format!(
                        "stack {name}: revision {revision} is missing from the store"
                    ))
                })?;
            let stack = pb::StackState::decode(bytes.as_slice())
                .map_err(|e| internal("decoding a revision", e))?;
            self.0.insert(revision.to_string(), stack);
        }
        let mut stack = self.0.get(revision).cloned().unwrap_or_default();
        stack.name = name.to_string();
        Ok(stack)
    }
}

/// Decide a host's state: `Ok(None)` keeps the stored one (same stacks, signed by the current
/// key, a third of its validity left, not behind the agent); otherwise a new state with the next
/// generation, signed (not yet stored).
fn next_state(
    shared: &Shared,
    host: &HostRecord,
    stacks: &[crate::store::StackRecord],
    pins: &Pins,
    agent_generation: u64,
    revisions: &mut RevisionCache,
) -> Result<Option<(u64, pb::SignedState)>, Status> {
    let want = pinned_from(stacks, host, pins);
    let now = shared.now_ms();
    let ttl_ms = shared.limits.state_ttl.as_millis() as i64;
    let signer = shared.pki.signer();
    let stored = shared
        .store
        .signed_state(&host.id)
        .map_err(|e| internal("reading desired state", e))?
        .and_then(|b| decode(&b));
    if let Some((env, state)) = &stored {
        let have: Vec<(String, String)> = state
            .stacks
            .iter()
            .map(|s| (s.name.clone(), s.revision.clone()))
            .collect();
        // A state signed by a key that has since been rotated out of signing is re-issued.
        if have == want
            && env.key_id == signer.key_id()
            && state.expires_unix_ms - now > ttl_ms / 3
            && state.generation >= agent_generation
        {
            return Ok(None);
        }
    }
    let generation = shared
        .store
        .generation(&host.id)
        .map_err(|e| internal("reading generation", e))?
        .max(agent_generation)
        + 1;
    let mut out = Vec::with_capacity(want.len());
    for (name, revision) in &want {
        out.push(revisions.get(shared, name, revision)?);
    }
    let state = pb::DesiredState {
        host_id: host.id.clone(),
        generation,
        issued_unix_ms: now,
        expires_unix_ms: now + ttl_ms,
        stacks: out,
    };
    Ok(Some((generation, noco_certs::state::sign(&signer, &state))))
}

/// The host's current signed state; a new one (new generation, stored before it is returned)
/// when it must change. A server restored from an older copy still moves beyond the generation
/// the agent reports. Returns the state and whether it is new.
pub async fn current(
    shared: &Shared,
    host: &HostRecord,
    agent_generation: u64,
) -> Result<(pb::SignedState, bool), Status> {
    let _serial = shared.desired_lock.lock().await;
    let stacks = shared
        .store
        .stacks()
        .map_err(|e| internal("reading stacks", e))?;
    match next_state(
        shared,
        host,
        &stacks,
        &pins(shared, &stacks)?,
        agent_generation,
        &mut RevisionCache::default(),
    )? {
        None => {
            let bytes = shared
                .store
                .signed_state(&host.id)
                .map_err(|e| internal("reading desired state", e))?;
            let env = bytes
                .and_then(|b| pb::SignedState::decode(b.as_slice()).ok())
                .ok_or_else(|| {
                    Status::internal(format!(
                        "host {}: the stored desired state vanished",
                        host.name
                    ))
                })?;
            Ok((env, false))
        }
        Some((generation, env)) => {
            shared
                .store
                .put_signed_states(&[(host.id.clone(), generation, env.encode_to_vec())])
                .await
                .map_err(|e| internal("storing desired state", e))?;
            tracing::info!(host = %host.name, generation, "issued desired state");
            Ok((env, true))
        }
    }
}

/// Re-issue the states of the hosts `affected` selects — all stored with one flush — and push
/// the new ones to their sessions. Returns the names of the hosts whose state changed.
pub async fn update_hosts(
    shared: &Shared,
    affected: impl Fn(&HostRecord) -> bool,
) -> Result<Vec<String>, Status> {
    let _serial = shared.desired_lock.lock().await;
    let hosts = shared
        .store
        .hosts()
        .map_err(|e| internal("reading hosts", e))?;
    let stacks = shared
        .store
        .stacks()
        .map_err(|e| internal("reading stacks", e))?;
    let mut revisions = RevisionCache::default();
    let pins = pins(shared, &stacks)?;
    let mut issued = Vec::new();
    for host in hosts
        .iter()
        .filter(|h| h.revoked_ms.is_none() && affected(h))
    {
        if let Some((generation, env)) =
            next_state(shared, host, &stacks, &pins, 0, &mut revisions)?
        {
            issued.push((host, generation, env));
        }
    }
    if issued.is_empty() {
        return Ok(Vec::new());
    }
    let records: Vec<(String, u64, Vec<u8>)> = issued
        .iter()
        .map(|(h, g, env)| (h.id.clone(), *g, env.encode_to_vec()))
        .collect();
    shared
        .store
        .put_signed_states(&records)
        .await
        .map_err(|e| internal("storing desired states", e))?;
    tracing::info!(hosts = issued.len(), "issued desired states");
    let mut changed = Vec::with_capacity(issued.len());
    for (host, _, env) in issued {
        shared.registry.push(&host.id, env);
        changed.push(host.name.clone());
    }
    Ok(changed)
}

/// Hosts × stacks, for `nococtl status`: what the server wants and what each agent reports.
pub fn status(shared: &Shared, stack: &str) -> Result<pb::StatusResponse, Status> {
    if !stack.is_empty()
        && shared
            .store
            .stack(stack)
            .map_err(|e| internal("reading stacks", e))?
            .is_none()
    {
        return Err(Status::not_found(format!("no stack named {stack:?}")));
    }
    let mut hosts = Vec::new();
    let stacks = shared
        .store
        .stacks()
        .map_err(|e| internal("reading stacks", e))?;
    let pins = pins(shared, &stacks)?;
    let mut records = shared
        .store
        .hosts()
        .map_err(|e| internal("reading hosts", e))?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    for host in records.iter().filter(|h| h.revoked_ms.is_none()) {
        let assigned = pinned_from(&stacks, host, &pins);
        if !stack.is_empty() && !assigned.iter().any(|(n, _)| n == stack) {
            continue;
        }
        let (report, at) = shared.reports.get(&host.id).unwrap_or_default();
        let online = shared.registry.online(&host.id).is_some();
        hosts.push(pb::HostStatus {
            host: host.name.clone(),
            host_id: host.id.clone(),
            status: if online { "online" } else { "offline" }.to_string(),
            desired_generation: shared
                .store
                .generation(&host.id)
                .map_err(|e| internal("reading generation", e))?,
            applied_generation: report.generation,
            stale: report.stale,
            refused: report.refused.clone(),
            assigned: assigned
                .into_iter()
                .filter(|(n, _)| stack.is_empty() || n == stack)
                .map(|(name, revision)| pb::AssignedStack { name, revision })
                .collect(),
            reported: report
                .stacks
                .into_iter()
                .filter(|s| stack.is_empty() || s.name == stack)
                .collect(),
            reported_unix_ms: at,
        });
    }
    Ok(pb::StatusResponse { hosts })
}

/// Whether a host reports `stack` at `revision`, converged, with every service healthy or running.
pub fn healthy(shared: &Shared, host_id: &str, stack: &str, revision: &str) -> bool {
    shared.reports.get(host_id).is_some_and(|(r, _)| {
        r.stacks.iter().any(|s| {
            s.name == stack
                && s.revision == revision
                && s.state == "converged"
                && s.services.iter().all(|svc| {
                    svc.running >= svc.desired && (svc.health == "healthy" || svc.health == "none")
                })
        })
    })
}
