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

/// The latest report of every host, with when it arrived.
#[derive(Debug, Default)]
pub struct Reports(Mutex<HashMap<String, (pb::StateReport, i64)>>);

impl Reports {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (pb::StateReport, i64)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
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
    shared
        .reports
        .lock()
        .insert(host_id.to_string(), (report, shared.now_ms()));
}

/// The stacks assigned to a host, as `(name, revision)`, by name.
pub fn assigned(shared: &Shared, host: &HostRecord) -> Result<Vec<(String, String)>, Status> {
    let mut out: Vec<(String, String)> = shared
        .store
        .stacks()
        .map_err(|e| internal("reading stacks", e))?
        .into_iter()
        .filter(|s| {
            Selector::parse(&s.selector).is_ok_and(|sel| sel.matches(&host.name, &host.labels))
        })
        .map(|s| (s.name, s.revision))
        .collect();
    out.sort();
    Ok(out)
}

fn decode(bytes: &[u8]) -> Option<(pb::SignedState, pb::DesiredState)> {
    let env = pb::SignedState::decode(bytes).ok()?;
    let state = pb::DesiredState::decode(env.payload.as_slice()).ok()?;
    Some((env, state))
}

/// The host's current signed state. A new generation is issued (and stored before it is
/// returned) when the assigned stacks changed, when less than a third of the validity is left,
/// or when the agent claims a generation at least as high as ours (a server restored from an
/// older copy must still move forward). Returns the state and whether it is new.
pub async fn current(
    shared: &Shared,
    host: &HostRecord,
    agent_generation: u64,
) -> Result<(pb::SignedState, bool), Status> {
    let _serial = shared.desired_lock.lock().await;
    let want = assigned(shared, host)?;
    let now = shared.now_ms();
    let ttl_ms = shared.limits.state_ttl.as_millis() as i64;
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
            && env.key_id == shared.pki.signer().key_id()
            && state.expires_unix_ms - now > ttl_ms / 3
            && state.generation >= agent_generation
        {
            return Ok((env.clone(), false));
        }
    }
    let generation = shared
        .store
        .next_generation(&host.id, agent_generation)
        .await
        .map_err(|e| internal("reserving a generation", e))?;
    let mut stacks = Vec::with_capacity(want.len());
    for (name, revision) in &want {
        let bytes = shared
            .store
            .revision(revision)
            .map_err(|e| internal("reading a revision", e))?
            .ok_or_else(|| {
                Status::internal(format!(
                    "stack {name}: revision {revision} is missing from the store"
                ))
            })?;
        let mut stack = pb::StackState::decode(bytes.as_slice())
            .map_err(|e| internal("decoding a revision", e))?;
        stack.name = name.clone();
        stacks.push(stack);
    }
    let state = pb::DesiredState {
        host_id: host.id.clone(),
        generation,
        issued_unix_ms: now,
        expires_unix_ms: now + ttl_ms,
        stacks,
    };
    let env = noco_certs::state::sign(&shared.pki.signer(), &state);
    shared
        .store
        .put_signed_state(&host.id, &env.encode_to_vec())
        .await
        .map_err(|e| internal("storing desired state", e))?;
    tracing::info!(host = %host.name, generation, stacks = want.len(), "issued desired state");
    Ok((env, true))
}

/// Re-issue the states of the hosts `affected` selects, and push the new ones to their
/// sessions. Returns the names of the hosts whose state changed.
pub async fn update_hosts(
    shared: &Shared,
    affected: impl Fn(&HostRecord) -> bool,
) -> Result<Vec<String>, Status> {
    let hosts = shared
        .store
        .hosts()
        .map_err(|e| internal("reading hosts", e))?;
    let mut changed = Vec::new();
    for host in hosts
        .iter()
        .filter(|h| h.revoked_ms.is_none() && affected(h))
    {
        let (env, new) = current(shared, host, 0).await?;
        if new {
            shared.registry.push(&host.id, env);
            changed.push(host.name.clone());
        }
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
    let mut records = shared
        .store
        .hosts()
        .map_err(|e| internal("reading hosts", e))?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    for host in records.iter().filter(|h| h.revoked_ms.is_none()) {
        let assigned = assigned(shared, host)?;
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
