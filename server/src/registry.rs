//! Live agent sessions and telemetry streams: at most one of each per host. Registering a second
//! session (or telemetry stream) for a host cuts the first; revoking a host cuts both; shutting
//! down cuts them all. A session is handed its host's newest desired state and the orders
//! (backups, restores) given to the host while it is connected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use noco_proto::v1::{SignedOrder, SignedState};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

#[derive(Debug)]
struct Entry {
    session_id: u64,
    connected_ms: i64,
    last_seen_ms: Arc<AtomicI64>,
    cut: oneshot::Sender<Status>,
    state: watch::Sender<Option<SignedState>>,
    orders: mpsc::UnboundedSender<SignedOrder>,
}

#[derive(Debug)]
struct TelemetryEntry {
    stream_id: u64,
    cut: oneshot::Sender<Status>,
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
    /// Telemetry streams, apart from sessions: an agent holds one of each, on two connections.
    telemetry: Mutex<HashMap<String, TelemetryEntry>>,
    next_id: AtomicU64,
}

/// What a telemetry stream task holds: its id and the receiver of its cut.
#[derive(Debug)]
pub struct TelemetryRegistration {
    pub stream_id: u64,
    pub cut: oneshot::Receiver<Status>,
}

/// What a session task holds: its id, the receiver of its cut, and its last-seen clock.
#[derive(Debug)]
pub struct Registration {
    pub session_id: u64,
    pub cut: oneshot::Receiver<Status>,
    pub last_seen_ms: Arc<AtomicI64>,
    /// The newest desired state to send; the session sends it whenever it changes.
    pub state: watch::Receiver<Option<SignedState>>,
    /// Orders to send, in the order given.
    pub orders: mpsc::UnboundedReceiver<SignedOrder>,
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

    fn lock_telemetry(&self) -> MutexGuard<'_, HashMap<String, TelemetryEntry>> {
        self.telemetry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a new telemetry stream for `host_id`, cutting the one it replaces.
    pub fn register_telemetry(&self, host_id: &str) -> TelemetryRegistration {
        let stream_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let entry = TelemetryEntry { stream_id, cut: tx };
        if let Some(old) = self.lock_telemetry().insert(host_id.to_string(), entry) {
            let _ = old.cut.send(Status::aborted(
                "replaced by a newer telemetry stream from the same host",
            ));
        }
        TelemetryRegistration { stream_id, cut: rx }
    }

    /// Remove a telemetry stream that ended, unless a newer one has replaced it already.
    pub fn deregister_telemetry(&self, host_id: &str, stream_id: u64) {
        let mut streams = self.lock_telemetry();
        if streams
            .get(host_id)
            .is_some_and(|e| e.stream_id == stream_id)
        {
            streams.remove(host_id);
        }
    }

    /// Whether the host has a live telemetry stream.
    pub fn telemetry_online(&self, host_id: &str) -> bool {
        self.lock_telemetry().contains_key(host_id)
    }

    /// End every telemetry stream with `status` (shutting down).
    pub fn cut_all_telemetry(&self, status: Status) {
        for (_, entry) in self.lock_telemetry().drain() {
            let _ = entry.cut.send(status.clone());
        }
    }

    /// Register a new session for `host_id`, cutting the one it replaces.
    pub fn register(&self, host_id: &str, now_ms: i64) -> Registration {
        let session_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let (state_tx, state_rx) = watch::channel(None);
        let (orders_tx, orders_rx) = mpsc::unbounded_channel();
        let last_seen_ms = Arc::new(AtomicI64::new(now_ms));
        let entry = Entry {
            session_id,
            connected_ms: now_ms,
            last_seen_ms: last_seen_ms.clone(),
            cut: tx,
            state: state_tx,
            orders: orders_tx,
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
            orders: orders_rx,
        }
    }

    /// Hand a host's live session an order. Returns whether the host has a session to take it
    /// (an offline host gets its pending orders when it connects).
    pub fn send_order(&self, host_id: &str, order: SignedOrder) -> bool {
        match self.lock().get(host_id) {
            Some(entry) => entry.orders.send(order).is_ok(),
            None => false,
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

    /// End a host's live session and its telemetry stream with `status`. Returns whether there
    /// was either.
    pub fn cut(&self, host_id: &str, status: Status) -> bool {
        let telemetry = match self.lock_telemetry().remove(host_id) {
            Some(entry) => {
                let _ = entry.cut.send(status.clone());
                true
            }
            None => false,
        };
        let session = match self.lock().remove(host_id) {
            Some(entry) => {
                let _ = entry.cut.send(status);
                true
            }
            None => false,
        };
        session || telemetry
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

    /// Call `f` with the id of every host that has a live session (under the lock: `f` must be
    /// quick).
    pub fn each_online(&self, mut f: impl FnMut(&str)) {
        for id in self.lock().keys() {
            f(id);
        }
    }

    /// How many telemetry streams are live.
    pub fn telemetry_len(&self) -> usize {
        self.lock_telemetry().len()
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
    fn orders_reach_the_live_session_only() {
        let reg = Registry::default();
        let order = SignedOrder {
            payload: vec![1],
            key_id: "k".into(),
            signature: vec![2],
        };
        assert!(!reg.send_order("h1", order.clone()), "no session: kept");
        let mut r = reg.register("h1", 1);
        assert!(reg.send_order("h1", order.clone()));
        assert_eq!(r.orders.try_recv().unwrap(), order);
    }

    #[test]
    fn cutting_a_host_delivers_the_reason() {
        let reg = Registry::default();
        let mut r = reg.register("h1", 1);
        assert!(reg.cut("h1", Status::permission_denied("revoked")));
        assert_eq!(r.cut.try_recv().unwrap().message(), "revoked");
        assert!(!reg.cut("h1", Status::permission_denied("revoked")));
    }

    #[test]
    fn telemetry_streams_are_one_per_host_and_cut_with_the_session() {
        let reg = Registry::default();
        let mut first = reg.register_telemetry("h1");
        let mut second = reg.register_telemetry("h1");
        assert_eq!(first.cut.try_recv().unwrap().code(), tonic::Code::Aborted);
        reg.deregister_telemetry("h1", first.stream_id);
        assert!(
            reg.telemetry_online("h1"),
            "the old stream cannot remove the new"
        );
        let mut session = reg.register("h1", 1);
        assert!(reg.cut("h1", Status::permission_denied("revoked")));
        assert_eq!(second.cut.try_recv().unwrap().message(), "revoked");
        assert_eq!(session.cut.try_recv().unwrap().message(), "revoked");
        assert!(!reg.telemetry_online("h1"));
        let _third = reg.register_telemetry("h2");
        assert!(
            reg.cut("h2", Status::permission_denied("revoked")),
            "a stream alone counts"
        );
    }
}
