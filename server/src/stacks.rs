//! Stacks: an immutable, content-addressed revision (compose file, variables, shipped files),
//! validated on submit exactly as the agent will load it, and a selector that assigns it to
//! hosts. Applying or removing a stack re-issues the desired state of every host it concerns.

use std::collections::BTreeMap;

use noco_compose::revision::{RevisionSource, StackFile};
use noco_compose::{FileSource, LoadOptions};
use noco_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use crate::auth::Caller;
use crate::selector::Selector;
use crate::shared::{Shared, internal};
use crate::store::{HistoryEntry, StackRecord};

/// Files shipped with the revision, as the compose file's `env_file` sees them.
struct Shipped<'a>(&'a [pb::StackFile]);

impl FileSource for Shipped<'_> {
    fn read(&self, path: &str) -> Result<String, String> {
        let path = path.strip_prefix("./").unwrap_or(path);
        let f = self.0.iter().find(|f| f.path == path).ok_or_else(|| format!("{path} is not among the files shipped with the stack (nococtl stack apply --file {path})"))?;
        String::from_utf8(f.content.clone()).map_err(|_| format!("{path} is not UTF-8 text"))
    }
}

fn hosts_matching(shared: &Shared, selector: &Selector) -> Result<Vec<String>, Status> {
    let mut names: Vec<String> = shared
        .store
        .hosts()
        .map_err(|e| internal("reading hosts", e))?
        .into_iter()
        .filter(|h| h.revoked_ms.is_none() && selector.matches(&h.name, &h.labels))
        .map(|h| h.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Validate a revision exactly as agents will load it; returns its id and the warnings.
pub fn check_revision(
    name: &str,
    compose: &[u8],
    env: &std::collections::HashMap<String, String>,
    files: &[pb::StackFile],
) -> Result<(String, Vec<String>), Status> {
    let yaml = std::str::from_utf8(compose)
        .map_err(|_| Status::invalid_argument("the compose file is not UTF-8 text"))?;
    let variables: BTreeMap<String, String> = env.clone().into_iter().collect();
    let source = RevisionSource {
        compose: compose.to_vec(),
        env: variables.clone(),
        files: files
            .iter()
            .map(|f| StackFile {
                path: f.path.clone(),
                content: f.content.clone(),
                mode: f.mode,
            })
            .collect(),
    };
    source.check().map_err(|problems| {
        Status::invalid_argument(format!("stack {name}: {}", problems.join("; ")))
    })?;
    let shipped = Shipped(files);
    let loaded = noco_compose::load(
        yaml,
        &LoadOptions {
            project_name: Some(name),
            variables: &variables,
            files: &shipped,
        },
    )
    .map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        Status::invalid_argument(format!("stack {name} is not valid:\n{}", lines.join("\n")))
    })?;
    Ok((
        source.digest(),
        loaded.warnings.iter().map(|w| w.to_string()).collect(),
    ))
}

/// Store a revision's content (immutable; a no-op when it is there already).
pub fn store_revision(
    shared: &Shared,
    revision: &str,
    compose: Vec<u8>,
    env: std::collections::HashMap<String, String>,
    files: Vec<pb::StackFile>,
) -> Result<(), Status> {
    let content = pb::StackState {
        name: String::new(),
        revision: revision.to_string(),
        compose,
        env,
        files,
    };
    shared
        .store
        .put_revision(revision, &content.encode_to_vec())
        .map_err(|e| internal("storing the revision", e))
}

pub async fn apply(
    shared: &Shared,
    caller: &Caller,
    req: pb::ApplyStackRequest,
) -> Result<pb::ApplyStackResponse, Status> {
    crate::names::check_stack_name(&req.name)?;
    let existing = shared
        .store
        .stack(&req.name)
        .map_err(|e| internal("reading stacks", e))?;
    let selector_text = match (req.selector.trim(), &existing) {
        ("", Some(s)) => s.selector.clone(),
        ("", None) => {
            return Err(Status::invalid_argument(format!(
                "stack {:?} is new: give it a --selector",
                req.name
            )));
        }
        (text, _) => text.to_string(),
    };
    let selector = Selector::parse(&selector_text).map_err(Status::invalid_argument)?;
    let (revision, warnings) = check_revision(&req.name, &req.compose, &req.env, &req.files)?;
    if let Some(active) = crate::rollouts::active(shared, &req.name)? {
        return Err(Status::failed_precondition(format!(
            "stack {} has an active rollout ({}, {}): follow it with `nococtl rollout status {}`, or abort it first",
            req.name,
            active.id,
            crate::rollouts::phase_name(&active.rollout.phase),
            req.name
        )));
    }
    let hosts = hosts_matching(shared, &selector)?;
    let unchanged = existing
        .as_ref()
        .is_some_and(|s| s.revision == revision && s.selector == selector_text);
    if req.dry_run || unchanged {
        return Ok(pb::ApplyStackResponse {
            revision,
            unchanged,
            hosts,
            warnings,
        });
    }

    store_revision(shared, &revision, req.compose, req.env, req.files)?;
    let now = shared.now_ms();
    let entry = HistoryEntry {
        revision: revision.clone(),
        selector: selector_text.clone(),
        time_ms: now,
        by: caller.describe(),
    };
    let record = match existing.clone() {
        Some(mut s) => {
            s.selector = selector_text.clone();
            s.revision = revision.clone();
            s.history.push(entry);
            s.updated_ms = now;
            s
        }
        None => StackRecord {
            name: req.name.clone(),
            selector: selector_text,
            revision: revision.clone(),
            history: vec![entry],
            created_ms: now,
            updated_ms: now,
        },
    };
    shared
        .store
        .put_stack(&record)
        .await
        .map_err(|e| internal("storing the stack", e))?;
    // Hosts the old selector matched lose the stack; hosts the new one matches get it.
    let old = existing.and_then(|s| Selector::parse(&s.selector).ok());
    crate::desired::update_hosts(shared, |h| {
        selector.matches(&h.name, &h.labels)
            || old.as_ref().is_some_and(|o| o.matches(&h.name, &h.labels))
    })
    .await?;
    Ok(pb::ApplyStackResponse {
        revision,
        unchanged: false,
        hosts,
        warnings,
    })
}

fn summary(shared: &Shared, s: &StackRecord) -> Result<pb::StackSummary, Status> {
    let selector = Selector::parse(&s.selector).map_err(Status::internal)?;
    let hosts: Vec<_> = shared
        .store
        .hosts()
        .map_err(|e| internal("reading hosts", e))?
        .into_iter()
        .filter(|h| h.revoked_ms.is_none() && selector.matches(&h.name, &h.labels))
        .collect();
    let healthy = hosts
        .iter()
        .filter(|h| crate::desired::healthy(shared, &h.id, &s.name, &s.revision))
        .count();
    Ok(pb::StackSummary {
        name: s.name.clone(),
        selector: s.selector.clone(),
        revision: s.revision.clone(),
        hosts: hosts.len() as u32,
        healthy: healthy as u32,
        updated_unix_ms: s.updated_ms,
    })
}

pub fn list(shared: &Shared) -> Result<pb::ListStacksResponse, Status> {
    let mut stacks = shared
        .store
        .stacks()
        .map_err(|e| internal("reading stacks", e))?;
    stacks.sort_by(|a, b| a.name.cmp(&b.name));
    let stacks = stacks
        .iter()
        .map(|s| summary(shared, s))
        .collect::<Result<_, _>>()?;
    Ok(pb::ListStacksResponse { stacks })
}

pub fn get(shared: &Shared, req: pb::GetStackRequest) -> Result<pb::GetStackResponse, Status> {
    let stack = shared
        .store
        .stack(&req.name)
        .map_err(|e| internal("reading stacks", e))?
        .ok_or_else(|| Status::not_found(format!("no stack named {:?}", req.name)))?;
    let revision = if req.revision.is_empty() {
        stack.revision.clone()
    } else {
        req.revision.clone()
    };
    if !stack.history.iter().any(|h| {
        h.revision == revision
            || h.revision
                .trim_start_matches("sha256:")
                .starts_with(revision.trim_start_matches("sha256:"))
    }) {
        return Err(Status::not_found(format!(
            "stack {} has no revision {revision}",
            stack.name
        )));
    }
    let full = stack
        .history
        .iter()
        .find(|h| {
            h.revision
                .trim_start_matches("sha256:")
                .starts_with(revision.trim_start_matches("sha256:"))
        })
        .map(|h| h.revision.clone())
        .unwrap_or(revision);
    let bytes = shared
        .store
        .revision(&full)
        .map_err(|e| internal("reading the revision", e))?
        .ok_or_else(|| Status::internal(format!("revision {full} is missing from the store")))?;
    let content = pb::StackState::decode(bytes.as_slice())
        .map_err(|e| internal("decoding the revision", e))?;
    Ok(pb::GetStackResponse {
        summary: Some(summary(shared, &stack)?),
        revision: full,
        compose: content.compose,
        // Variables often hold secrets: names are shown, values never leave the server.
        env: content
            .env
            .into_keys()
            .map(|k| (k, "****".to_string()))
            .collect(),
        files: content.files.into_iter().map(|f| f.path).collect(),
        history: stack
            .history
            .iter()
            .map(|h| pb::RevisionEntry {
                revision: h.revision.clone(),
                selector: h.selector.clone(),
                applied_unix_ms: h.time_ms,
                applied_by: h.by.clone(),
            })
            .collect(),
    })
}

pub async fn remove(
    shared: &Shared,
    _caller: &Caller,
    req: pb::RemoveStackRequest,
) -> Result<pb::RemoveStackResponse, Status> {
    let removed = shared
        .store
        .remove_stack(&req.name)
        .await
        .map_err(|e| internal("removing the stack", e))?
        .ok_or_else(|| Status::not_found(format!("no stack named {:?}", req.name)))?;
    let selector = Selector::parse(&removed.selector).map_err(Status::internal)?;
    let hosts = hosts_matching(shared, &selector)?;
    crate::desired::update_hosts(shared, |h| selector.matches(&h.name, &h.labels)).await?;
    Ok(pb::RemoveStackResponse { hosts })
}
