//! Conversions between store records and wire messages.

use noco_proto::v1 as pb;

use crate::registry::Online;
use crate::store::{AuditRecord, Facts, HostRecord, OperatorRecord, OperatorStatus};

/// Longest fact string kept; agents are not trusted to send short ones.
const MAX_FACT_LEN: usize = 256;

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_FACT_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub fn facts_from_wire(f: Option<&pb::HostFacts>) -> Facts {
    let Some(f) = f else { return Facts::default() };
    Facts {
        hostname: clip(&f.hostname),
        os: clip(&f.os),
        kernel: clip(&f.kernel),
        arch: clip(&f.arch),
        docker_version: clip(&f.docker_version),
        agent_version: clip(&f.agent_version),
    }
}

pub fn facts_to_wire(f: &Facts) -> pb::HostFacts {
    pb::HostFacts {
        hostname: f.hostname.clone(),
        os: f.os.clone(),
        kernel: f.kernel.clone(),
        arch: f.arch.clone(),
        docker_version: f.docker_version.clone(),
        agent_version: f.agent_version.clone(),
    }
}

/// Revoked, else online while it has a live session, else offline.
pub fn presence(h: &HostRecord, online: Option<Online>) -> pb::Presence {
    match (h.revoked_ms, online) {
        (Some(_), _) => pb::Presence::Revoked,
        (None, Some(_)) => pb::Presence::Online,
        (None, None) => pb::Presence::Offline,
    }
}

pub fn host_to_wire(h: &HostRecord, online: Option<Online>) -> pb::Host {
    let status = presence(h, online);
    pb::Host {
        id: h.id.clone(),
        name: h.name.clone(),
        labels: h.labels.clone().into_iter().collect(),
        facts: Some(facts_to_wire(&h.facts)),
        status: status.into(),
        last_seen_unix_ms: online.map(|o| o.last_seen_ms).unwrap_or(h.last_seen_ms),
        enrolled_unix_ms: h.enrolled_ms,
        cert_not_after_unix_ms: h.cert_not_after_ms,
        connected_since_unix_ms: online.map(|o| o.connected_ms).unwrap_or(0),
    }
}

pub fn operator_status(s: OperatorStatus) -> pb::OperatorStatus {
    match s {
        OperatorStatus::Pending => pb::OperatorStatus::Pending,
        OperatorStatus::Active => pb::OperatorStatus::Active,
        OperatorStatus::Revoked => pb::OperatorStatus::Revoked,
    }
}

pub fn operator_to_wire(o: &OperatorRecord) -> pb::Operator {
    pb::Operator {
        id: o.id.clone(),
        name: o.name.clone(),
        role: pb::Role::from(o.role).into(),
        status: operator_status(o.status).into(),
        created_unix_ms: o.created_ms,
    }
}

pub fn audit_to_wire(a: AuditRecord) -> pb::AuditRecord {
    let (outcome, message) = match a.result.split_once(": ") {
        _ if a.result == "ok" => (pb::AuditOutcome::Ok, String::new()),
        Some(("denied", m)) => (pb::AuditOutcome::Denied, m.to_string()),
        Some(("error", m)) => (pb::AuditOutcome::Error, m.to_string()),
        // Rollout outcomes: "failed: …", "succeeded".
        _ => (pb::AuditOutcome::Ok, String::new()),
    };
    pb::AuditRecord {
        time_unix_ms: a.time_ms,
        caller: a.caller,
        action: a.action,
        target: a.target,
        result: a.result,
        caller_name: a.caller_name,
        caller_id: a.caller_id,
        caller_role: a
            .caller_role
            .map_or(pb::Role::Unspecified, pb::Role::from)
            .into(),
        outcome: outcome.into(),
        message,
        dry_run: a.dry_run,
    }
}

/// Host names by id, for what people read.
pub fn host_names(hosts: &[HostRecord]) -> std::collections::BTreeMap<String, String> {
    hosts
        .iter()
        .map(|h| (h.id.clone(), h.name.clone()))
        .collect()
}

/// `text` with every host id in it replaced by the host's name: people read names (the ids are
/// 16 random hex digits, so a plain replacement cannot hit anything else).
pub fn named(text: &str, names: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (id, name) in names {
        if out.contains(id.as_str()) {
            out = out.replace(id.as_str(), name);
        }
    }
    out
}
