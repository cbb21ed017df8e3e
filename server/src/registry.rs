//! Live agent sessions: at most one per host. Registering a second session for a host cuts the
//! first; revoking a host cuts its session; shutting down cuts them all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use noco_proto::v1::SignedState;
use tokio::sync::{oneshot, watch};
use tonic::Status;

#[derive(Debug)]
struct Entry {
    session_id: u64,
    connected_ms: i64,
    last_seen_ms: Arc<AtomicI64>,
    cut: oneshot::Sender<Status>,
    state: watch::Sender<Option<SignedState>>,
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
}

/// What a session task holds: its id, the receiver of its cut, and its last-seen clock.
#[derive(Debug)]
pub struct Registration {
    pub session_id: u64,
    pub cut: oneshot::Receiver<Status>,
    pub last_seen_ms: Arc<AtomicI64>,
    /// The newest desired state to send; the session sends it whenever it changes.
    pub state: watch::Receiver<Option<SignedState>>,
}

/// A snapshot of one live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Online {
    pub connected_ms: i64,
    pub last_seen_ms: i64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a new session for `host_id`, cutting the one it replaces.
    pub fn register(&self, host_id: &str, now_ms: i64) -> Registration {
        let session_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let (state_tx, state_rx) = watch::channel(None);
        let last_seen_ms = Arc::new(AtomicI64::new(now_ms));
        let entry = Entry {
            session_id,
            connected_ms: now_ms,
            last_seen_ms: last_seen_ms.clone(),
            cut: tx,
            state: state_tx,
        };
        if let Some(old) = self.lock().insert(host_id.to_string(), entry) {
            let _ = old.cut.send(Status::aborted(
                "replaced by a newer session from the same host",
            ));
        }
        Registration {
            session_id,
            cut: rx,
            last_seen_ms,
            state: state_rx,
        }
    }

    /// Hand a host's live session a new desired state (no-op when the host is offline: it gets
    /// its state when it connects).
    pub fn push(&self, host_id: &str, state: SignedState) -> bool {
        match self.lock().get(host_id) {
            Some(entry) => {
                entry.state.send_replace(Some(state));
                true
            }
            None => false,
        }
    }

    /// Remove a session that ended, unless a newer one has replaced it already.
    pub fn deregister(&self, host_id: &str, session_id: u64) {
        let mut sessions = self.lock();
        if sessions
            .get(host_id)
            .is_some_and(|e| e.session_id == session_id)
        {
            sessions.remove(host_id);
        }
    }

    /// End a host's live session with `status`. Returns whether there was one.
    pub fn cut(&self, host_id: &str, status: Status) -> bool {
        match self.lock().remove(host_id) {
            Some(entry) => {
                let _ = entry.cut.send(status);
                true
            }
            None => false,
        }
    }

    pub fn cut_all(&self, status: Status) {
        for (_, entry) in self.lock().drain() {
            let _ = entry.cut.send(status.clone());
        }
    }

    pub fn online(&self, host_id: &str) -> Option<Online> {
        self.lock().get(host_id).map(|e| Online {
            connected_ms: e.connected_ms,
            last_seen_ms: e.last_seen_ms.load(Ordering::Relaxed),
        })
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_session_cuts_the_first_and_the_first_cannot_deregister_the_second() {
        let reg = Registry::default();
        let mut first = reg.register("h1", 1);
        let second = reg.register("h1", 2);
        let status = first.cut.try_recv().unwrap();
        assert_eq!(status.code(), tonic::Code::Aborted);
        reg.deregister("h1", first.session_id);
        assert_eq!(reg.online("h1").unwrap().connected_ms, 2);
        reg.deregister("h1", second.session_id);
        assert!(reg.online("h1").is_none());
    }

    #[test]
    fn cutting_a_host_delivers_the_reason() {
        let reg = Registry::default();
        let mut r = reg.register("h1", 1);
        assert!(reg.cut("h1", Status::permission_denied("revoked")));
        assert_eq!(r.cut.try_recv().unwrap().message(), "revoked");
        assert!(!reg.cut("h1", Status::permission_denied("revoked")));
    }
}
