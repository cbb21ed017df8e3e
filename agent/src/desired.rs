//! Receiving desired state from the server: judge each signed state with the [`StateStore`]
//! (which persists an accepted one, fsynced, before saying so), hand a new one to the applier,
//! and keep the refusal, if any, for the next report. A refused state changes nothing: the
//! host keeps running what it has.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use noco_certs::state::Verdict;
use noco_proto::v1::{DesiredState, SignedState, StateReport};
use tokio::sync::watch;

use crate::datadir::DataDir;
use crate::report::{self, Status};
use crate::state::{StateError, StateStore, trust_root};

/// The applier's input: the state to converge to (`None` before any was accepted).
pub type DesiredTx = watch::Sender<Option<Arc<DesiredState>>>;

/// By stack name: the revision the server last sent and the W3C traceparent of the server span
/// that gave the stack that revision (`SignedState.traceparents`), so the applier's span for
/// that revision joins the server's trace. Unsigned, and only ever used to link traces.
#[derive(Debug, Clone, Default)]
pub struct TraceLinks(Arc<std::sync::Mutex<std::collections::HashMap<String, (String, String)>>>);

impl TraceLinks {
    fn set(&self, state: &DesiredState, links: &std::collections::HashMap<String, String>) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for stack in &state.stacks {
            match links.get(&stack.name) {
                Some(tp) => {
                    all.insert(stack.name.clone(), (stack.revision.clone(), tp.clone()));
                }
                None => {
                    all.remove(&stack.name);
                }
            }
        }
        all.retain(|name, _| state.stacks.iter().any(|s| &s.name == name));
    }

    /// The traceparent for applying `revision` of `stack`, taken (an apply is linked once).
    pub fn take(&self, stack: &str, revision: &str) -> Option<String> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(stack) {
            Some((r, _)) if r == revision => all.remove(stack).map(|(_, tp)| tp),
            _ => None,
        }
    }
}

/// This host's accepted state, and where news of it goes.
pub struct Desired {
    store: StateStore,
    status: watch::Sender<Status>,
    apply: DesiredTx,
    links: TraceLinks,
}

/// Open the state store of `host_id` under `dir`. A persisted state that no longer verifies
/// (edited or corrupted on disk) is moved aside, loudly, and the host starts with none.
pub fn open_store(dir: &DataDir, host_id: &str) -> anyhow::Result<StateStore> {
    let file = dir
        .load_trust_root()
        .context("the trust root (state-verifying keys) is needed to accept desired state")?;
    let root =
        trust_root(&file).map_err(|e| anyhow::anyhow!("{}: {e}", dir.trust_root().display()))?;
    let path = dir.desired_state();
    match StateStore::open(&path, host_id, root.clone()) {
        Ok(store) => Ok(store),
        Err(StateError::Disk { path: p, err }) if path.exists() => {
            let aside = path.with_extension(format!("pb.rejected-{}", report::now_ms()));
            tracing::error!(
                "{p}: {err}; moving it to {} and starting without a desired state",
                aside.display()
            );
            std::fs::rename(&path, &aside)
                .with_context(|| format!("moving {} aside", path.display()))?;
            StateStore::open(&path, host_id, root).map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

impl Desired {
    /// Wrap an opened store; `status` is what reports are made from, `apply` feeds the applier.
    pub fn new(
        store: StateStore,
        status: watch::Sender<Status>,
        apply: DesiredTx,
        links: TraceLinks,
    ) -> Self {
        Desired {
            store,
            status,
            apply,
            links,
        }
    }

    /// The generation of the accepted state (0: none), for Hello.
    /// A trust-root update (the server rotated its signing key): accepted only if signed by a
    /// key of the current root; then saved (`trust-root.json`, atomically) before it is used.
    pub fn receive_trust_root(
        &mut self,
        envelope: &noco_proto::v1::SignedTrustRoot,
        dir: &DataDir,
    ) -> Result<(), String> {
        // The server sends its whole chain of updates; those whose keys this host already
        // trusts are behind it. (Only compared by key id; nothing is trusted before verifying.)
        let held = self.store.root().key_ids();
        if let Ok(update) =
            <noco_proto::v1::TrustRootUpdate as prost::Message>::decode(envelope.payload.as_slice())
            && !update.keys.is_empty()
            && update.keys.iter().all(|k| held.contains(&k.key_id))
        {
            return Ok(());
        }
        let (root, keys) = noco_certs::state::verify_trust_root(self.store.root(), envelope)
            .map_err(|e| format!("refused trust root: {e}"))?;
        let file = crate::datadir::TrustRootFile {
            keys: keys
                .iter()
                .map(|k| crate::datadir::TrustKeyFile {
                    key_id: k.key_id.clone(),
                    public_key_hex: hex::encode(&k.public_key),
                })
                .collect(),
        };
        dir.save_trust_root(&file)
            .map_err(|e| format!("saving the trust root: {e:#}"))?;
        let ids: Vec<String> = keys.into_iter().map(|k| k.key_id).collect();
        tracing::info!(
            "trust root updated: states may now be signed by {}",
            ids.join(", ")
        );
        self.store.set_root(root);
        Ok(())
    }

    /// Check an order from the server like a state: signed by the trust root, for this host, not
    /// expired.
    pub fn verify_order(
        &self,
        envelope: &noco_proto::v1::SignedOrder,
    ) -> Result<noco_proto::v1::Order, String> {
        noco_certs::order::verify(
            self.store.root(),
            envelope,
            self.store.host_id(),
            SystemTime::now(),
        )
        .map_err(|e| format!("refused order: {e}"))
    }

    pub fn last_generation(&self) -> u64 {
        self.store.generation()
    }

    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The report to send now.
    pub fn report(&self) -> StateReport {
        let now = SystemTime::now();
        self.status
            .borrow()
            .report(self.store.stale(now), report::now_ms())
    }

    /// Judge a state from the server. New: persisted, then handed to the applier. Same: nothing
    /// to do. Refused (or not persisted): remembered for the report, nothing applied.
    pub fn receive(&mut self, envelope: &SignedState) {
        match self.store.accept(envelope, SystemTime::now()) {
            Ok(Verdict::New(state)) => {
                self.links.set(&state, &envelope.traceparents);
                tracing::info!(
                    "accepted desired state generation {} ({} stacks)",
                    state.generation,
                    state.stacks.len()
                );
                self.status.send_modify(|s| s.refused = None);
                self.apply.send_replace(Some(Arc::new(state)));
            }
            Ok(Verdict::Same) => {
                tracing::debug!(
                    "desired state generation {} again: already accepted",
                    self.store.generation()
                );
                self.status.send_if_modified(|s| s.refused.take().is_some());
            }
            Err(e) => {
                let generation = report::claimed_generation(&envelope.payload);
                let reason = match e {
                    StateError::Refused(r) => r.to_string(),
                    StateError::Disk { path, err } => {
                        format!("could not persist the state ({path}: {err})")
                    }
                };
                tracing::warn!(
                    "refused desired state generation {generation}: {reason}; keeping generation {}",
                    self.store.generation()
                );
                self.status
                    .send_modify(|s| s.refused = Some((reason, generation)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use noco_certs::signing::{StateSigner, TrustRoot};

    use super::*;

    fn state(host: &str, generation: u64, expires_in: i64) -> DesiredState {
        let now = report::now_ms();
        DesiredState {
            host_id: host.into(),
            generation,
            issued_unix_ms: now,
            expires_unix_ms: now + expires_in,
            stacks: vec![],
        }
    }

    #[test]
    fn new_states_reach_the_applier_and_refusals_only_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let signer = StateSigner::generate();
        let root = TrustRoot::new(&[signer.public_key().to_vec()]).unwrap();
        let store = StateStore::open(&dir.path().join("desired.pb"), "h1", root).unwrap();
        let (status, _) = watch::channel(Status::default());
        let (apply, mut applier) = watch::channel(None);
        let mut desired = Desired::new(store, status, apply, TraceLinks::default());

        let g2 = noco_certs::state::sign(&signer, &state("h1", 2, 60_000));
        desired.receive(&g2);
        assert_eq!(desired.last_generation(), 2);
        assert!(applier.has_changed().unwrap());
        let got = applier.borrow_and_update().clone().unwrap();
        assert_eq!(got.generation, 2);

        let older = noco_certs::state::sign(&signer, &state("h1", 1, 60_000));
        desired.receive(&older);
        let r = desired.report();
        assert!(r.refused.contains("older than"), "{}", r.refused);
        assert_eq!(r.refused_generation, 1);
        assert!(!applier.has_changed().unwrap(), "nothing applied");

        let other = noco_certs::state::sign(&signer, &state("h2", 3, 60_000));
        desired.receive(&other);
        assert!(desired.report().refused.contains("not this host"));

        // The same state again clears the refusal and applies nothing.
        desired.receive(&g2);
        assert_eq!(desired.report().refused, "");
        assert!(!applier.has_changed().unwrap());
        assert!(!desired.report().stale);
    }

    #[test]
    fn a_trace_link_is_taken_once_and_only_for_the_revision_it_was_sent_with() {
        let links = TraceLinks::default();
        let mut st = state("h1", 1, 60_000);
        st.stacks = vec![noco_proto::v1::StackState {
            name: "shop".into(),
            revision: "sha256:2".into(),
            ..Default::default()
        }];
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string();
        links.set(
            &st,
            &std::collections::HashMap::from([("shop".into(), tp.clone())]),
        );
        assert_eq!(links.take("shop", "sha256:1"), None);
        assert_eq!(links.take("shop", "sha256:2"), Some(tp.clone()));
        assert_eq!(links.take("shop", "sha256:2"), None, "taken once");
        // A later state without a link for the stack forgets an untaken one.
        links.set(&st, &std::collections::HashMap::from([("shop".into(), tp)]));
        links.set(&st, &std::collections::HashMap::new());
        assert_eq!(links.take("shop", "sha256:2"), None);
    }
}
