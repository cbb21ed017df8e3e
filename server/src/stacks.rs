//! Stacks: an immutable, content-addressed revision (compose file, variables, shipped files),
//! validated on submit exactly as the agent will load it, and a selector that assigns it to
//! hosts. Applying or removing a stack re-issues the desired state of every host it concerns.
//!
//! [`Stacks`] owns the catalog lock: every change to a stack record or to a rollout (which pins
//! and moves stacks) is a check-then-write made under it, so no concurrent apply, rollout start
//! or rollout step acts on what another has just changed. Lock order: catalog, then desired.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use noco_compose::revision::{RevisionSource, StackFile};
use noco_compose::{FileSource, LoadOptions};
use noco_proto::v1 as pb;
use prost::Message;

use crate::clock::Clock;
use crate::desired::{self, Desired};
use crate::error::{Doing, Error, Result};
use crate::machines::rollout::{phase_name, short};
use crate::reports::Reports;
use crate::store::{HistoryEntry, HostRecord, RolloutRecord, StackRecord, Store};
use noco_proto::selector::Selector;

/// Files shipped with the revision, as the compose file's `env_file` and the `file:` of its
/// secrets and configs see them.
struct Shipped<'a>(&'a [pb::StackFile]);

impl FileSource for Shipped<'_> {
    fn read(&self, path: &str) -> std::result::Result<String, String> {
        let path = path.strip_prefix("./").unwrap_or(path);
        let content = self.read_bytes(path)?;
        String::from_utf8(content).map_err(|_| format!("{path} is not UTF-8 text"))
    }

    fn read_bytes(&self, path: &str) -> std::result::Result<Vec<u8>, String> {
        let path = path.strip_prefix("./").unwrap_or(path);
        let f = self.0.iter().find(|f| f.path == path).ok_or_else(|| {
            format!(
                "{path} is not among the files shipped with the stack (nococtl stack apply --file {path})"
            )
        })?;
        Ok(f.content.clone())
    }
}

/// A revision as submitted: validated, with its id and the loader's warnings.
#[derive(Debug, Clone)]
pub struct CheckedRevision {
    pub id: String,
    pub warnings: Vec<String>,
    pub content: pb::StackState,
}

/// Validate a revision exactly as agents will load it.
pub fn check_revision(
    name: &str,
    compose: Vec<u8>,
    env: HashMap<String, String>,
    files: Vec<pb::StackFile>,
) -> Result<CheckedRevision> {
    crate::names::check_stack_name(name)?;
    let yaml = std::str::from_utf8(&compose)
        .map_err(|_| Error::Invalid(format!("stack {name}: the compose file is not UTF-8 text")))?;
    let variables: BTreeMap<String, String> = env.clone().into_iter().collect();
    let source = RevisionSource {
        compose: compose.clone(),
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
    source
        .check()
        .map_err(|problems| Error::Invalid(format!("stack {name}: {}", problems.join("; "))))?;
    let loaded = load_yaml(name, yaml, &variables, &files)?;
    let id = source.digest();
    Ok(CheckedRevision {
        warnings: loaded.warnings.iter().map(|w| w.to_string()).collect(),
        content: pb::StackState {
            name: String::new(),
            revision: id.clone(),
            compose,
            env,
            files,
        },
        id,
    })
}

/// Load a compose file with a revision's variables and shipped files, as agents load it.
fn load_yaml(
    name: &str,
    yaml: &str,
    variables: &BTreeMap<String, String>,
    files: &[pb::StackFile],
) -> Result<noco_compose::Loaded> {
    noco_compose::load(
        yaml,
        &LoadOptions {
            project_name: Some(name),
            variables,
            files: &Shipped(files),
            profiles: &[],
            directory: None,
        },
    )
    .map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        Error::Invalid(format!("stack {name} is not valid:\n{}", lines.join("\n")))
    })
}

/// Load a stored revision of stack `name` exactly as agents load it (the backups it declares,
/// for instance).
pub fn load_state(name: &str, state: &pb::StackState) -> Result<noco_compose::Loaded> {
    let yaml = std::str::from_utf8(&state.compose)
        .map_err(|_| Error::Invalid(format!("stack {name}: the compose file is not UTF-8 text")))?;
    let variables: BTreeMap<String, String> = state.env.clone().into_iter().collect();
    load_yaml(name, yaml, &variables, &state.files)
}

/// The rollout of a stack that is in progress (running, paused or rolling back), if any.
pub async fn active_rollout(store: &dyn Store, stack: &str) -> Result<Option<RolloutRecord>> {
    Ok(store
        .latest_rollout(stack)
        .await
        .doing("reading rollouts")?
        .filter(|r| r.rollout.phase.is_active()))
}

/// The non-revoked hosts a selector matches.
pub fn matching<'a>(hosts: &'a [HostRecord], selector: &Selector) -> Vec<&'a HostRecord> {
    hosts
        .iter()
        .filter(|h| !h.is_revoked() && selector.matches(&h.name, &h.labels))
        .collect()
}

fn names(hosts: &[&HostRecord]) -> Vec<String> {
    let mut names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    names.sort();
    names
}

/// `stacks` with `record` in place of the stack of the same name.
pub fn replaced(mut stacks: Vec<StackRecord>, record: &StackRecord) -> Vec<StackRecord> {
    stacks.retain(|s| s.name != record.name);
    stacks.push(record.clone());
    stacks
}

/// A host a rollout holds on a revision other than its stack's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub host_id: String,
    pub host: String,
    pub revision: String,
}

/// "rollout 1f2e3d4c failed: …" — which rollout holds hosts, and how it ended (hosts by name).
pub fn rollout_text(r: &RolloutRecord, hosts: &[HostRecord]) -> String {
    let phase = &r.rollout.phase;
    let names = crate::wire::host_names(hosts);
    let mut reason = crate::wire::named(&crate::machines::rollout::phase_reason(phase), &names);
    if reason.is_empty() && !r.rollout.kept_back().is_empty() {
        reason = "without these hosts: their backup before the update failed (restore their service or run `nococtl backup run`, then re-apply)".to_owned();
    }
    if reason.is_empty() {
        format!("rollout {} {}", r.id, phase_name(phase))
    } else {
        format!("rollout {} {}: {reason}", r.id, phase_name(phase))
    }
}

/// What re-applying a stack's revision does to the hosts a rollout held elsewhere.
fn held_text(
    r: &RolloutRecord,
    held: &[Held],
    hosts: &[HostRecord],
    to: &str,
    verb: &str,
) -> String {
    let names: Vec<&str> = held.iter().map(|h| h.host.as_str()).collect();
    format!(
        "{} held on {} by {}: they {verb} back to {} now",
        names.join(", "),
        short(&held[0].revision),
        rollout_text(r, hosts),
        short(to)
    )
}

#[derive(Debug)]
pub struct Stacks {
    store: Arc<dyn Store>,
    desired: Arc<Desired>,
    reports: Arc<Reports>,
    clock: Arc<dyn Clock>,
    catalog: tokio::sync::Mutex<()>,
}

/// Held while the catalog (stacks, rollouts) is checked and changed.
pub type CatalogGuard<'a> = tokio::sync::MutexGuard<'a, ()>;

impl Stacks {
    pub fn new(
        store: Arc<dyn Store>,
        desired: Arc<Desired>,
        reports: Arc<Reports>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Stacks {
            store,
            desired,
            reports,
            clock,
            catalog: tokio::sync::Mutex::new(()),
        }
    }

    /// Take the catalog lock.
    pub async fn lock(&self) -> CatalogGuard<'_> {
        self.catalog.lock().await
    }

    pub fn desired(&self) -> &Arc<Desired> {
        &self.desired
    }

    /// "no stack named …", with the nearest existing name.
    pub async fn no_stack(&self, name: &str) -> Error {
        match self.store.stacks().await {
            Ok(stacks) => {
                crate::error::not_found("stack", name, stacks.iter().map(|s| s.name.as_str()))
            }
            Err(e) => Error::from_store("reading stacks", e),
        }
    }

    /// Store a revision's content (immutable; a no-op when it is there already).
    pub async fn store_revision(&self, rev: &CheckedRevision) -> Result<()> {
        self.store
            .put_revision(&rev.id, &rev.content.encode_to_vec())
            .await
            .doing("storing the revision")
    }

    /// Whether every host in `hosts` could still receive its state with `stacks` (the catalog
    /// as it would be; every revision already stored). Call under the catalog lock.
    pub async fn check_fits(&self, stacks: &[StackRecord], hosts: &[HostRecord]) -> Result<()> {
        let pins = desired::pins(&*self.store, stacks).await?;
        self.desired.check_fits(hosts, stacks, &pins).await
    }

    /// Apply a stack: a span (`stack.apply`: stack, revision, result) whose trace the hosts'
    /// applies of the revision join.
    pub async fn apply(
        &self,
        by: &str,
        req: pb::ApplyStackRequest,
    ) -> Result<pb::ApplyStackResponse> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "stack.apply",
            stack = %req.name,
            by = %by,
            dry_run = req.dry_run,
            revision = tracing::field::Empty,
            hosts = tracing::field::Empty,
            result = tracing::field::Empty,
        );
        let result = self.apply_traced(by, req).instrument(span.clone()).await;
        match &result {
            Ok(r) => {
                span.record("revision", noco_compose::revision::short(&r.revision));
                span.record("hosts", r.hosts.len());
                span.record("result", if r.unchanged { "unchanged" } else { "ok" });
            }
            Err(e) => {
                span.record("result", tracing::field::display(e));
            }
        }
        result
    }

    async fn apply_traced(
        &self,
        by: &str,
        req: pb::ApplyStackRequest,
    ) -> Result<pb::ApplyStackResponse> {
        let rev = check_revision(&req.name, req.compose, req.env, req.files)?;
        let _catalog = self.lock().await;
        let existing = self.store.stack(&req.name).await.doing("reading stacks")?;
        // A selector kept from the stored stack is read as stored; a new one as written now.
        let (selector_text, selector) = match (req.selector.trim(), &existing) {
            ("", Some(s)) => (
                s.selector.clone(),
                Selector::stored(&s.selector).map_err(Error::Internal)?,
            ),
            ("", None) => {
                return Err(Error::Invalid(format!(
                    "stack {:?} is new: give it a --selector",
                    req.name
                )));
            }
            (text, _) => (
                text.to_string(),
                Selector::parse(text).map_err(Error::Invalid)?,
            ),
        };
        if let Some(active) = active_rollout(&*self.store, &req.name).await? {
            return Err(Error::Precondition(format!(
                "stack {} has an active rollout ({}, {}): follow it with `nococtl rollout status {}`, or abort it first",
                req.name,
                active.id,
                phase_name(&active.rollout.phase),
                req.name
            )));
        }
        let all_hosts = self.store.hosts().await.doing("reading hosts")?;
        let hosts = matching(&all_hosts, &selector);
        let response = |unchanged| pb::ApplyStackResponse {
            revision: rev.id.clone(),
            unchanged,
            hosts: names(&hosts),
            warnings: rev.warnings.clone(),
        };
        let unchanged = existing
            .as_ref()
            .is_some_and(|s| s.revision == rev.id && s.selector == selector_text);
        // A failed or aborted rollout may hold hosts on another revision: applying the stack's
        // own revision again brings them back (it is not "unchanged" then).
        let held = match &existing {
            Some(s) => self.held(s, &all_hosts).await?,
            None => None,
        };
        if unchanged {
            let Some((rollout, pinned)) = held else {
                return Ok(response(true));
            };
            if req.dry_run {
                let mut r = response(false);
                r.warnings.push(held_text(
                    &rollout,
                    &pinned,
                    &all_hosts,
                    &rev.id,
                    "would move",
                ));
                return Ok(r);
            }
            self.release(&rollout).await?;
            let ids: Vec<String> = pinned.iter().map(|p| p.host_id.clone()).collect();
            self.desired
                .links()
                .record(None, &req.name, &rev.id, &tracing::Span::current());
            self.desired.update(|h| ids.contains(&h.id)).await?;
            let mut r = response(false);
            r.warnings
                .push(held_text(&rollout, &pinned, &all_hosts, &rev.id, "move"));
            return Ok(r);
        }
        let now = self.clock.now_ms();
        let entry = HistoryEntry {
            revision: rev.id.clone(),
            selector: selector_text.clone(),
            time_ms: now,
            by: by.to_string(),
        };
        let record = match existing.clone() {
            Some(mut s) => {
                s.selector = selector_text.clone();
                s.revision = rev.id.clone();
                s.history.push(entry);
                s.updated_ms = now;
                s
            }
            None => StackRecord {
                name: req.name.clone(),
                selector: selector_text,
                revision: rev.id.clone(),
                history: vec![entry],
                created_ms: now,
                updated_ms: now,
            },
        };
        // The revision is stored before the size check reads it; an unreferenced revision is
        // harmless (content-addressed, immutable).
        self.store_revision(&rev).await?;
        let stacks = replaced(self.store.stacks().await.doing("reading stacks")?, &record);
        let targets: Vec<HostRecord> = hosts.iter().map(|h| (*h).clone()).collect();
        self.check_fits(&stacks, &targets).await?;
        if req.dry_run {
            return Ok(response(false));
        }
        if let Some((rollout, _)) = &held {
            // The new revision replaces whatever the last rollout held hosts on.
            self.release(rollout).await?;
        }
        self.store
            .put_stack(&record)
            .await
            .doing("storing the stack")?;
        // Hosts the old selector matched lose the stack; hosts the new one matches get it.
        let old = existing.and_then(|s| Selector::stored(&s.selector).ok());
        self.desired
            .links()
            .record(None, &req.name, &rev.id, &tracing::Span::current());
        self.desired
            .update(|h| {
                selector.matches(&h.name, &h.labels)
                    || old.as_ref().is_some_and(|o| o.matches(&h.name, &h.labels))
            })
            .await?;
        Ok(response(false))
    }

    /// The hosts the stack's last rollout holds on a revision other than the stack's, with
    /// that rollout; `None` when every host runs the stack's revision.
    pub async fn held(
        &self,
        stack: &StackRecord,
        hosts: &[HostRecord],
    ) -> Result<Option<(RolloutRecord, Vec<Held>)>> {
        let Some(latest) = self
            .store
            .latest_rollout(&stack.name)
            .await
            .doing("reading rollouts")?
        else {
            return Ok(None);
        };
        let Some(pins) = desired::pins_of(&latest, std::slice::from_ref(stack)) else {
            return Ok(None);
        };
        let held: Vec<Held> = hosts
            .iter()
            .filter(|h| !h.is_revoked())
            .filter_map(|h| {
                let rev = pins.get(&h.id)?;
                (*rev != stack.revision).then(|| Held {
                    host_id: h.id.clone(),
                    host: h.name.clone(),
                    revision: rev.clone(),
                })
            })
            .collect();
        Ok((!held.is_empty()).then_some((latest, held)))
    }

    /// Stop a rollout's pins from applying (the stack was applied since).
    async fn release(&self, rollout: &RolloutRecord) -> Result<()> {
        let mut released = rollout.clone();
        released.released = true;
        self.store
            .put_rollout(&released)
            .await
            .doing("storing the rollout")
    }

    async fn summary(&self, s: &StackRecord, hosts: &[HostRecord]) -> Result<pb::StackSummary> {
        let selector = Selector::stored(&s.selector).map_err(Error::Internal)?;
        let matched = matching(hosts, &selector);
        let healthy = matched
            .iter()
            .filter(|h| self.reports.healthy(&h.id, &s.name, &s.revision))
            .count();
        let pinned = match self.held(s, hosts).await? {
            Some((rollout, held)) => held
                .into_iter()
                .map(|h| pb::PinnedHost {
                    host: h.host,
                    revision: h.revision,
                    by: rollout_text(&rollout, hosts),
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(pb::StackSummary {
            name: s.name.clone(),
            selector: s.selector.clone(),
            revision: s.revision.clone(),
            hosts: matched.len() as u32,
            healthy: healthy as u32,
            updated_unix_ms: s.updated_ms,
            pinned,
        })
    }

    pub async fn list(&self) -> Result<pb::ListStacksResponse> {
        let mut stacks = self.store.stacks().await.doing("reading stacks")?;
        stacks.sort_by(|a, b| a.name.cmp(&b.name));
        let hosts = self.store.hosts().await.doing("reading hosts")?;
        let mut out = Vec::with_capacity(stacks.len());
        for s in &stacks {
            out.push(self.summary(s, &hosts).await?);
        }
        Ok(pb::ListStacksResponse { stacks: out })
    }

    pub async fn get(&self, req: pb::GetStackRequest) -> Result<pb::GetStackResponse> {
        let stack = self.store.stack(&req.name).await.doing("reading stacks")?;
        let Some(stack) = stack else {
            return Err(self.no_stack(&req.name).await);
        };
        let wanted = if req.revision.is_empty() {
            stack.revision.clone()
        } else {
            req.revision.clone()
        };
        let prefix = wanted.trim_start_matches("sha256:");
        let full = stack
            .history
            .iter()
            .find(|h| {
                h.revision == wanted || h.revision.trim_start_matches("sha256:").starts_with(prefix)
            })
            .map(|h| h.revision.clone())
            .ok_or_else(|| {
                Error::NotFound(format!("stack {} has no revision {wanted}", stack.name))
            })?;
        let bytes = self
            .store
            .revision(&full)
            .await
            .doing("reading the revision")?
            .ok_or_else(|| Error::Internal(format!("revision {full} is missing from the store")))?;
        let content = pb::StackState::decode(bytes.as_slice())
            .map_err(|e| Error::Internal(format!("revision {full} does not decode: {e}")))?;
        let hosts = self.store.hosts().await.doing("reading hosts")?;
        Ok(pb::GetStackResponse {
            summary: Some(self.summary(&stack, &hosts).await?),
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

    pub async fn remove(&self, req: pb::RemoveStackRequest) -> Result<pb::RemoveStackResponse> {
        let _catalog = self.lock().await;
        if let Some(active) = active_rollout(&*self.store, &req.name).await? {
            return Err(Error::Precondition(format!(
                "stack {} has an active rollout ({}): abort it first (`nococtl rollout abort {}`)",
                req.name, active.id, req.name
            )));
        }
        let removed = self
            .store
            .remove_stack(&req.name)
            .await
            .doing("removing the stack")?;
        let Some(removed) = removed else {
            return Err(self.no_stack(&req.name).await);
        };
        let selector = Selector::stored(&removed.selector).map_err(Error::Internal)?;
        let all_hosts = self.store.hosts().await.doing("reading hosts")?;
        let hosts = names(&matching(&all_hosts, &selector));
        self.desired
            .update(|h| selector.matches(&h.name, &h.labels))
            .await?;
        Ok(pb::RemoveStackResponse { hosts })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::desired::tests::{Fixture, fixture, host};

    pub fn compose(tag: &str) -> Vec<u8> {
        format!("services:\n  web:\n    image: example/web:{tag}\n").into_bytes()
    }

    pub fn apply_req(name: &str, tag: &str) -> pb::ApplyStackRequest {
        pb::ApplyStackRequest {
            name: name.into(),
            selector: "role=web".into(),
            compose: compose(tag),
            ..Default::default()
        }
    }

    pub async fn stacks_fixture() -> (Fixture, Arc<Stacks>) {
        let f = fixture().await;
        let reports = Arc::new(Reports::new(f.clock.clone()));
        let stacks = Arc::new(Stacks::new(
            f.store.clone(),
            f.desired.clone(),
            reports,
            f.clock.clone(),
        ));
        f.store
            .insert_host(&host("h1", &[("role", "web")]))
            .await
            .unwrap();
        (f, stacks)
    }

    /// Regression (issue 8, defect 4): of three concurrent applies of different content, one
    /// revision was acknowledged (`stack.apply ok`) yet missing from the stack's history — a
    /// read-modify-write of the stack record without a lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_applies_lose_no_acknowledged_revision() {
        for trial in 0..12 {
            let (f, stacks) = stacks_fixture().await;
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..3 {
                let stacks = stacks.clone();
                tasks.spawn(async move {
                    stacks
                        .apply("test", apply_req("shop", &format!("{trial}.{i}")))
                        .await
                });
            }
            let mut acknowledged = Vec::new();
            while let Some(r) = tasks.join_next().await {
                acknowledged.push(r.unwrap().unwrap().revision);
            }
            let record = f.store.stack("shop").await.unwrap().unwrap();
            for rev in &acknowledged {
                assert!(
                    record.history.iter().any(|h| &h.revision == rev),
                    "trial {trial}: acknowledged revision {rev} is missing from the history {:?}",
                    record.history
                );
            }
            assert_eq!(record.history.len(), 3, "trial {trial}");
            assert_eq!(
                record.revision,
                record.history.last().unwrap().revision,
                "trial {trial}: the current revision is the last one applied"
            );
        }
    }

    #[tokio::test]
    async fn a_stack_name_that_is_not_there_gets_the_nearest_that_is() {
        let (_f, stacks) = stacks_fixture().await;
        stacks.apply("test", apply_req("shop", "1")).await.unwrap();
        let err = stacks
            .get(pb::GetStackRequest {
                name: "shpo".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"no stack named "shpo"; did you mean "shop"?"#
        );
        let err = stacks
            .remove(pb::RemoveStackRequest {
                name: "database".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), r#"no stack named "database""#);
    }

    /// Regression (issue 8, defect 1): a stack too large for a host to receive alongside its
    /// other stacks is refused at apply, naming the host; the host keeps what it had.
    #[tokio::test]
    async fn an_apply_that_a_host_could_never_receive_is_refused_naming_the_host() {
        let (f, stacks) = stacks_fixture().await;
        let big = |name: &str, fill: u8| pb::ApplyStackRequest {
            files: vec![pb::StackFile {
                path: "blob".into(),
                content: vec![fill; noco_proto::limits::MAX_SHIPPED_BYTES],
                mode: 0o640,
            }],
            ..apply_req(name, "1")
        };
        stacks.apply("test", big("a", 1)).await.unwrap();
        stacks.apply("test", big("b", 2)).await.unwrap();
        stacks.apply("test", big("c", 3)).await.unwrap();
        let err = stacks.apply("test", big("d", 4)).await.unwrap_err();
        assert!(matches!(err, Error::Precondition(_)), "{err}");
        assert!(
            err.to_string()
                .contains("host h1-name's desired state would be"),
            "{err}"
        );
        assert!(f.store.stack("d").await.unwrap().is_none());
        // A dry run says the same, and a smaller stack still goes.
        let mut dry = big("d", 4);
        dry.dry_run = true;
        assert!(stacks.apply("test", dry).await.is_err());
        stacks.apply("test", apply_req("e", "1")).await.unwrap();
    }
}
