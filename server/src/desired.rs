//! Desired state per host: every stack whose selector matches the host (with a rollout's
//! per-host pin in place of the stack's revision), signed with a fresh generation whenever that
//! set changes or the state has less than a third of its validity left, stored, and pushed to
//! the host's live session.
//!
//! [`Desired`] owns the lock that orders generations, and the size rule: no host is ever issued
//! a state over [`limits::MAX_HOST_STATE`]. Callers that change what hosts get check
//! [`Desired::check_fits`] first, under their own lock, so an operator hears the refusal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use noco_certs::signing::StateSigner;
use noco_proto::limits;
use noco_proto::v1 as pb;
use prost::Message;

use crate::clock::Clock;
use crate::error::{Doing, Error, Result};
use crate::registry::Registry;
use crate::store::{HostRecord, IssuedState, RolloutRecord, StackRecord, Store};
use noco_proto::selector::Selector;

/// Where the current state-signing key comes from (the PKI; a fixed key in tests).
pub trait SigningKeys: Send + Sync + std::fmt::Debug {
    fn signer(&self) -> Arc<StateSigner>;
}

/// Stack name → host id → pinned revision.
pub type Pins = HashMap<String, BTreeMap<String, String>>;

/// The stacks assigned to a host, as `(name, revision)` by name, with a rollout's pin in place
/// of the stack's revision.
pub fn assignment(stacks: &[StackRecord], host: &HostRecord, pins: &Pins) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = stacks
        .iter()
        .filter(|s| {
            Selector::stored(&s.selector).is_ok_and(|sel| sel.matches(&host.name, &host.labels))
        })
        .map(|s| {
            let pinned = pins.get(&s.name).and_then(|p| p.get(&host.id)).cloned();
            (s.name.clone(), pinned.unwrap_or_else(|| s.revision.clone()))
        })
        .collect();
    out.sort();
    out
}

/// Per-host revision pins of stacks under a rollout: the latest rollout of a stack pins its
/// hosts (its [`crate::machines::rollout::Rollout::targets`]) unless it succeeded (then the
/// stack itself moved, and only the hosts whose backup-first failed stay pinned: `kept_back`),
/// or was released by a later `stack apply`, or the stack's revision is
/// neither the rollout's `from` nor its `to` (applied before releases were recorded).
pub async fn pins(store: &dyn Store, stacks: &[StackRecord]) -> Result<Pins> {
    let mut out = HashMap::new();
    for stack in stacks {
        let latest = store
            .latest_rollout(&stack.name)
            .await
            .doing("reading rollouts")?;
        if let Some(pinned) = latest.and_then(|r| pins_of(&r, stacks)) {
            out.insert(stack.name.clone(), pinned);
        }
    }
    Ok(out)
}

/// The pins one rollout holds, if any (see [`pins`]).
pub fn pins_of(r: &RolloutRecord, stacks: &[StackRecord]) -> Option<BTreeMap<String, String>> {
    let current = stacks
        .iter()
        .find(|s| s.name == r.rollout.stack)
        .map(|s| s.revision.as_str())?;
    if r.released || (current != r.rollout.from && current != r.rollout.to) {
        return None;
    }
    if r.rollout.phase == crate::machines::rollout::Phase::Succeeded {
        // The stack moved; hosts whose backup-first failed stay where they were.
        let kept = r.rollout.kept_back();
        return (!kept.is_empty()).then_some(kept);
    }
    Some(r.rollout.targets())
}

fn decode(bytes: &[u8]) -> Option<(pb::SignedState, pb::DesiredState)> {
    let env = pb::SignedState::decode(bytes).ok()?;
    let state = pb::DesiredState::decode(env.payload.as_slice()).ok()?;
    Some((env, state))
}

/// Revision contents, read once per update however many hosts share them.
#[derive(Default)]
struct Revisions(HashMap<String, pb::StackState>);

impl Revisions {
    async fn load(&mut self, store: &dyn Store, name: &str, revision: &str) -> Result<()> {
        if !self.0.contains_key(revision) {
            let bytes = store
                .revision(revision)
                .await
                .doing("reading a revision")?
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "stack {name}: revision {revision} is missing from the store"
                    ))
                })?;
            let stack = pb::StackState::decode(bytes.as_slice()).map_err(|e| {
                Error::Internal(format!(
                    "stack {name}: revision {revision} does not decode: {e}"
                ))
            })?;
            self.0.insert(revision.to_string(), stack);
        }
        Ok(())
    }

    fn get(&self, name: &str, revision: &str) -> pb::StackState {
        let mut stack = self.0.get(revision).cloned().unwrap_or_default();
        stack.name = name.to_string();
        stack
    }

    /// What a stack adds to an encoded host state, at most.
    fn encoded_size(&self, name: &str, revision: &str) -> usize {
        let body = self.0.get(revision).map(|s| s.encoded_len()).unwrap_or(0) + name.len() + 11;
        body + 11
    }
}

/// A host's state that would be too large to deliver.
fn too_large(host: &HostRecord, want: &[(String, String)], revisions: &Revisions) -> Option<Error> {
    let sizes: Vec<(usize, &str)> = want
        .iter()
        .map(|(n, r)| (revisions.encoded_size(n, r), n.as_str()))
        .collect();
    let total: usize = sizes.iter().map(|(s, _)| s).sum::<usize>() + 256;
    if total <= limits::MAX_HOST_STATE {
        return None;
    }
    let mut by_size = sizes;
    by_size.sort_by(|a, b| b.cmp(a));
    let stacks: Vec<String> = by_size
        .iter()
        .map(|(s, n)| format!("{n} {}", human(*s)))
        .collect();
    Some(Error::Precondition(format!(
        "host {}'s desired state would be {} ({}), over the {} a host can receive: move a stack to other hosts (selector) or ship fewer or smaller files",
        host.name,
        human(total),
        stacks.join(", "),
        human(limits::MAX_HOST_STATE)
    )))
}

/// Bytes as a person reads them.
pub fn human(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// What the server last issued to a host, kept in memory so that deciding whether a host's
/// state must change reads no state back from the store (filled from it on first use).
#[derive(Debug, Clone)]
struct Issued {
    generation: u64,
    key_id: String,
    expires_ms: i64,
    stacks: Vec<(String, String)>,
}

/// How long each part of issuing took, for the log (and the delivery benchmark).
#[derive(Debug, Default, Clone, Copy)]
pub struct IssueTimings {
    pub hosts: usize,
    pub issued: usize,
    pub decide: Duration,
    pub sign: Duration,
    pub store: Duration,
    pub push: Duration,
}

#[derive(Debug)]
pub struct Desired {
    store: Arc<dyn Store>,
    keys: Arc<dyn SigningKeys>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    state_ttl: Duration,
    /// Serializes issuing, so generations are issued in order and a key rotation never
    /// interleaves with signing. Guards `issued` too (its own mutex only satisfies `Sync`).
    lock: tokio::sync::Mutex<()>,
    issued: std::sync::Mutex<HashMap<String, Issued>>,
    /// Trace context sent with states (never stored with them).
    links: crate::otel::traces::Links,
}

/// A host's new state, decided but not yet signed.
struct Pending<'a> {
    host: &'a HostRecord,
    state: pb::DesiredState,
}

impl Desired {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<dyn SigningKeys>,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        state_ttl: Duration,
    ) -> Self {
        Desired {
            store,
            keys,
            registry,
            clock,
            state_ttl,
            lock: tokio::sync::Mutex::new(()),
            issued: std::sync::Mutex::default(),
            links: Default::default(),
        }
    }

    /// The trace context states carry to agents: record a span here before issuing.
    pub fn links(&self) -> &crate::otel::traces::Links {
        &self.links
    }

    /// A state as sent: with the trace context of its stacks (unsigned, not stored).
    fn traced(&self, host_id: &str, mut env: pb::SignedState) -> pb::SignedState {
        if self.links.is_empty() {
            return env;
        }
        if let Ok(state) = pb::DesiredState::decode(env.payload.as_slice()) {
            env.traceparents = self.links.for_host(
                host_id,
                state
                    .stacks
                    .iter()
                    .map(|s| (s.name.as_str(), s.revision.as_str())),
            );
        }
        env
    }

    /// Hold off all issuing (while the signing key changes).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Whether every host in `hosts` could receive its state if the stacks were `stacks` (and
    /// pins `pins`): the first host that could not is named with its size and stacks.
    pub async fn check_fits(
        &self,
        hosts: &[HostRecord],
        stacks: &[StackRecord],
        pins: &Pins,
    ) -> Result<()> {
        let mut revisions = Revisions::default();
        for host in hosts.iter().filter(|h| !h.is_revoked()) {
            let want = assignment(stacks, host, pins);
            for (name, revision) in &want {
                revisions.load(&*self.store, name, revision).await?;
            }
            if let Some(e) = too_large(host, &want, &revisions) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// What was last issued to a host: from memory, else from the store (once). Call under
    /// the lock: only issuing may fill the memory.
    async fn last_issued(&self, host_id: &str) -> Result<Option<Issued>> {
        if let Some(i) = self.cached(host_id) {
            return Ok(Some(i));
        }
        let issued = self.load_issued(host_id).await?;
        if let Some(i) = &issued {
            self.remember(host_id, i.clone());
        }
        Ok(issued)
    }

    /// What the store says was last issued to a host.
    async fn load_issued(&self, host_id: &str) -> Result<Option<Issued>> {
        // A crash between reserving a generation and storing its state leaves the generation
        // ahead of the state: take the larger.
        let generation = self
            .store
            .generation(host_id)
            .await
            .doing("reading generation")?;
        let stored = self
            .store
            .state(host_id)
            .await
            .doing("reading desired state")?
            .and_then(|b| decode(&b));
        let issued = match stored {
            Some((env, state)) => Issued {
                generation: generation.max(state.generation),
                key_id: env.key_id,
                expires_ms: state.expires_unix_ms,
                stacks: state
                    .stacks
                    .iter()
                    .map(|s| (s.name.clone(), s.revision.clone()))
                    .collect(),
            },
            None if generation == 0 => return Ok(None),
            None => Issued {
                generation,
                key_id: String::new(),
                expires_ms: 0,
                stacks: Vec::new(),
            },
        };
        Ok(Some(issued))
    }

    fn cached(&self, host_id: &str) -> Option<Issued> {
        let map = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        map.get(host_id).cloned()
    }

    fn remember(&self, host_id: &str, issued: Issued) {
        let mut map = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(host_id.to_string(), issued);
    }

    /// Decide a host's state: `Ok(None)` keeps the one issued (same stacks, signed by the
    /// current key, a third of its validity left, not behind the agent); otherwise the next
    /// state, not yet signed.
    async fn next_state(
        &self,
        host: &HostRecord,
        want: Vec<(String, String)>,
        agent_generation: u64,
        key_id: &str,
        revisions: &mut Revisions,
    ) -> Result<Option<pb::DesiredState>> {
        let now = self.clock.now_ms();
        let ttl_ms = self.state_ttl.as_millis() as i64;
        let last = self.last_issued(&host.id).await?;
        if let Some(last) = &last {
            // A state signed by a key that has since been rotated out of signing is re-issued.
            if last.stacks == want
                && last.key_id == key_id
                && last.expires_ms - now > ttl_ms / 3
                && last.generation >= agent_generation
            {
                return Ok(None);
            }
        }
        for (name, revision) in &want {
            revisions.load(&*self.store, name, revision).await?;
        }
        if let Some(e) = too_large(host, &want, revisions) {
            // Never issued: the host keeps the state it has (and its other stacks with it).
            tracing::error!(host = %host.name, "not issuing desired state: {e}");
            return Ok(None);
        }
        let generation = last
            .map(|l| l.generation)
            .unwrap_or(0)
            .max(agent_generation)
            + 1;
        Ok(Some(pb::DesiredState {
            host_id: host.id.clone(),
            generation,
            issued_unix_ms: now,
            expires_unix_ms: now + ttl_ms,
            stacks: want.iter().map(|(n, r)| revisions.get(n, r)).collect(),
        }))
    }

    /// Sign states on every core (ed25519 is most of the cost of a large update).
    async fn sign_all(
        states: Vec<pb::DesiredState>,
        signer: Arc<StateSigner>,
    ) -> Result<Vec<pb::SignedState>> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = states.len().div_ceil(workers).max(64);
        let mut rest = states;
        let mut tasks = Vec::new();
        while !rest.is_empty() {
            let tail = rest.split_off(chunk.min(rest.len()));
            let part = std::mem::replace(&mut rest, tail);
            let signer = signer.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                part.iter()
                    .map(|s| noco_certs::state::sign(&signer, s))
                    .collect::<Vec<_>>()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.extend(
                t.await
                    .map_err(|e| Error::Internal(format!("a signing task failed: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Sign (the states move into the signing tasks: no copy), store (one flush for all) and
    /// remember new states; returns each host with its signed state, in order.
    async fn issue<'a>(
        &self,
        pending: Vec<Pending<'a>>,
        timings: &mut IssueTimings,
    ) -> Result<Vec<(&'a HostRecord, pb::SignedState)>> {
        let signer = self.keys.signer();
        let key_id = signer.key_id();
        let (hosts, states): (Vec<&HostRecord>, Vec<pb::DesiredState>) =
            pending.into_iter().map(|p| (p.host, p.state)).unzip();
        let summaries: Vec<Issued> = states
            .iter()
            .map(|state| Issued {
                generation: state.generation,
                key_id: key_id.clone(),
                expires_ms: state.expires_unix_ms,
                stacks: state
                    .stacks
                    .iter()
                    .map(|s| (s.name.clone(), s.revision.clone()))
                    .collect(),
            })
            .collect();
        let started = std::time::Instant::now();
        let signed = Self::sign_all(states, signer).await?;
        timings.sign = started.elapsed();
        let started = std::time::Instant::now();
        let records: Vec<IssuedState> = hosts
            .iter()
            .zip(&summaries)
            .zip(&signed)
            .map(|((host, issued), env)| IssuedState {
                host_id: host.id.clone(),
                generation: issued.generation,
                encoded: env.encode_to_vec(),
            })
            .collect();
        self.store
            .put_states(&records)
            .await
            .doing("storing desired states")?;
        for (host, issued) in hosts.iter().zip(summaries) {
            self.remember(&host.id, issued);
        }
        timings.store = started.elapsed();
        Ok(hosts.into_iter().zip(signed).collect())
    }

    /// The host's current signed state for its new session; a new one (next generation,
    /// stored first) when it must change. A server restored from an older copy still moves
    /// beyond the generation the agent reports. `None`: the host has never been issued one that
    /// could be delivered.
    pub async fn current(
        &self,
        host: &HostRecord,
        agent_generation: u64,
    ) -> Result<Option<pb::SignedState>> {
        let _serial = self.lock.lock().await;
        let stacks = self.store.stacks().await.doing("reading stacks")?;
        let pins = pins(&*self.store, &stacks).await?;
        let want = assignment(&stacks, host, &pins);
        let key_id = self.keys.signer().key_id();
        let next = self
            .next_state(
                host,
                want,
                agent_generation,
                &key_id,
                &mut Revisions::default(),
            )
            .await?;
        match next {
            None => Ok(self
                .store
                .state(&host.id)
                .await
                .doing("reading desired state")?
                .and_then(|b| pb::SignedState::decode(b.as_slice()).ok())
                .map(|env| self.traced(&host.id, env))),
            Some(state) => {
                let generation = state.generation;
                let pending = vec![Pending { host, state }];
                let mut signed = self.issue(pending, &mut IssueTimings::default()).await?;
                tracing::info!(host = %host.name, generation, "issued desired state");
                Ok(signed.pop().map(|(_, env)| self.traced(&host.id, env)))
            }
        }
    }

    /// Re-issue the states of the hosts `affected` selects — all stored with one flush — and
    /// push the new ones to their sessions. Returns the names of the hosts whose state changed.
    pub async fn update(&self, affected: impl Fn(&HostRecord) -> bool) -> Result<Vec<String>> {
        let _serial = self.lock.lock().await;
        let started = std::time::Instant::now();
        let hosts = self.store.hosts().await.doing("reading hosts")?;
        let stacks = self.store.stacks().await.doing("reading stacks")?;
        let pins = pins(&*self.store, &stacks).await?;
        let key_id = self.keys.signer().key_id();
        let mut revisions = Revisions::default();
        let mut pending = Vec::new();
        let mut timings = IssueTimings::default();
        for host in hosts.iter().filter(|h| !h.is_revoked() && affected(h)) {
            timings.hosts += 1;
            let want = assignment(&stacks, host, &pins);
            if let Some(state) = self
                .next_state(host, want, 0, &key_id, &mut revisions)
                .await?
            {
                pending.push(Pending { host, state });
            }
        }
        timings.decide = started.elapsed();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        timings.issued = pending.len();
        let signed = self.issue(pending, &mut timings).await?;
        let started = std::time::Instant::now();
        let mut changed = Vec::with_capacity(signed.len());
        for (host, env) in signed {
            self.registry.push(&host.id, self.traced(&host.id, env));
            changed.push(host.name.clone());
        }
        timings.push = started.elapsed();
        tracing::info!(
            hosts = timings.hosts,
            issued = timings.issued,
            decide_ms = timings.decide.as_millis() as u64,
            sign_ms = timings.sign.as_millis() as u64,
            store_ms = timings.store.as_millis() as u64,
            push_ms = timings.push.as_millis() as u64,
            "issued desired states"
        );
        Ok(changed)
    }

    /// The generation last issued to a host (without waiting for issuing in progress).
    pub async fn generation(&self, host_id: &str) -> Result<u64> {
        let issued = match self.cached(host_id) {
            Some(i) => Some(i),
            None => self.load_issued(host_id).await?,
        };
        Ok(issued.map_or(0, |i| i.generation))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::sled_store::SledStore;
    use crate::store::{Facts, HistoryEntry};

    #[derive(Debug)]
    pub struct FixedKey(pub Arc<StateSigner>);

    impl SigningKeys for FixedKey {
        fn signer(&self) -> Arc<StateSigner> {
            self.0.clone()
        }
    }

    pub fn host(id: &str, labels: &[(&str, &str)]) -> HostRecord {
        HostRecord {
            id: id.into(),
            name: format!("{id}-name"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            facts: Facts::default(),
            enrolled_ms: 0,
            last_seen_ms: 0,
            cert_not_after_ms: i64::MAX,
            revoked_ms: None,
        }
    }

    pub fn stack(name: &str, selector: &str, revision: &str) -> StackRecord {
        StackRecord {
            name: name.into(),
            selector: selector.into(),
            revision: revision.into(),
            history: vec![HistoryEntry {
                revision: revision.into(),
                selector: selector.into(),
                time_ms: 0,
                by: "test".into(),
            }],
            created_ms: 0,
            updated_ms: 0,
        }
    }

    pub async fn put_revision(store: &dyn Store, id: &str, file_bytes: usize) {
        let content = pb::StackState {
            name: String::new(),
            revision: id.into(),
            compose: b"services: {}\n".to_vec(),
            env: Default::default(),
            files: vec![pb::StackFile {
                path: "big".into(),
                content: vec![7; file_bytes],
                mode: 0o640,
            }],
        };
        store
            .put_revision(id, &content.encode_to_vec())
            .await
            .unwrap();
    }

    pub struct Fixture {
        pub _dir: tempfile::TempDir,
        pub store: Arc<dyn Store>,
        pub clock: Arc<ManualClock>,
        pub registry: Arc<Registry>,
        pub desired: Arc<Desired>,
    }

    pub async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::create(&dir.path().join("db")).await.unwrap());
        let clock = Arc::new(ManualClock::at_ms(1_700_000_000_000));
        let registry = Arc::new(Registry::default());
        let desired = Arc::new(Desired::new(
            store.clone(),
            Arc::new(FixedKey(Arc::new(StateSigner::generate()))),
            registry.clone(),
            clock.clone(),
            Duration::from_secs(3600),
        ));
        Fixture {
            _dir: dir,
            store,
            clock,
            registry,
            desired,
        }
    }

    fn stacks_of(env: &pb::SignedState) -> Vec<(String, u64)> {
        let state = pb::DesiredState::decode(env.payload.as_slice()).unwrap();
        state
            .stacks
            .iter()
            .map(|s| (s.name.clone(), state.generation))
            .collect()
    }

    #[tokio::test]
    async fn a_host_gets_the_stacks_its_labels_select_and_a_new_generation_on_each_change() {
        let f = fixture().await;
        f.store
            .insert_host(&host("h1", &[("role", "web")]))
            .await
            .unwrap();
        put_revision(&*f.store, "r1", 10).await;
        f.store
            .put_stack(&stack("shop", "role=web", "r1"))
            .await
            .unwrap();
        f.store
            .put_stack(&stack("db", "role=db", "r1"))
            .await
            .unwrap();
        let mut session = f.registry.register("h1", 0);
        assert_eq!(f.desired.update(|_| true).await.unwrap(), ["h1-name"]);
        let pushed = session.state.borrow_and_update().clone().unwrap();
        assert_eq!(stacks_of(&pushed), [("shop".to_string(), 1)]);
        // Nothing changed: nothing issued.
        assert!(f.desired.update(|_| true).await.unwrap().is_empty());
        // Near expiry: re-signed with the next generation.
        f.clock.advance_ms(3_000_000);
        assert_eq!(f.desired.update(|_| true).await.unwrap().len(), 1);
        assert_eq!(f.desired.generation("h1").await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_new_session_gets_a_generation_beyond_what_its_agent_reports() {
        let f = fixture().await;
        let h = host("h1", &[]);
        f.store.insert_host(&h).await.unwrap();
        let env = f.desired.current(&h, 41).await.unwrap().unwrap();
        let state = pb::DesiredState::decode(env.payload.as_slice()).unwrap();
        assert_eq!(state.generation, 42);
    }

    /// Regression (issue 8, defect 1): a host whose stacks together exceed what one session
    /// message carries was issued that state anyway, and then got nothing at all.
    #[tokio::test]
    async fn a_state_too_large_to_deliver_is_never_issued_and_the_host_keeps_its_last_one() {
        let f = fixture().await;
        let h = host("h1", &[("role", "web")]);
        f.store.insert_host(&h).await.unwrap();
        put_revision(&*f.store, "small", 10).await;
        put_revision(&*f.store, "big", limits::MAX_HOST_STATE / 2 + 1).await;
        f.store
            .put_stack(&stack("a", "role=web", "small"))
            .await
            .unwrap();
        f.desired.update(|_| true).await.unwrap();
        let stacks = vec![
            stack("a", "role=web", "small"),
            stack("b", "role=web", "big"),
            stack("c", "role=web", "big"),
        ];
        let err = f
            .desired
            .check_fits(std::slice::from_ref(&h), &stacks, &Pins::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("h1-name's desired state would be"), "{err}");
        for s in &stacks {
            f.store.put_stack(s).await.unwrap();
        }
        assert!(f.desired.update(|_| true).await.unwrap().is_empty());
        let kept = f.desired.current(&h, 0).await.unwrap().unwrap();
        assert_eq!(stacks_of(&kept), [("a".to_string(), 1)]);
    }
}
