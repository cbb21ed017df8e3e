//! What the instruments need from the store, read into a snapshot by a task: hosts (names,
//! facts, revoked or not), stacks with the hosts their selectors choose and their latest
//! rollout, the backup catalog counted per stack and state, backup jobs and orders waiting, and
//! the store's size on disk. Callbacks run synchronously on the collecting thread (the OTLP
//! reader's own, or the `/metrics` request's): they read the snapshot and never the store.
//!
//! The snapshot is refreshed every [`TTL`] while something collects (each collection marks a
//! demand), not at all while nothing does (no OTLP, no scraper: no store reads), and at once
//! when a collection finds it older than twice the TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use noco_proto::selector::Selector;
use noco_proto::v1 as pb;
use opentelemetry::KeyValue;

use super::Sources;
use crate::core::Core;
use crate::machines::rollout::phase_to_wire;

/// How old the store snapshot may grow while something collects.
pub const TTL: Duration = Duration::from_secs(5);
/// After this long without a collection, the snapshot is no longer refreshed.
const IDLE: Duration = Duration::from_secs(60);

/// The backup states counted, in the order of [`BackupStats::counts`].
pub(super) const BACKUP_STATES: [pb::BackupState; 5] = [
    pb::BackupState::Running,
    pb::BackupState::PendingUpload,
    pb::BackupState::Complete,
    pb::BackupState::Failed,
    pb::BackupState::Missed,
];

/// A host that is not revoked, with its label sets built once per snapshot.
#[derive(Debug)]
pub(super) struct HostEntry {
    pub id: Arc<str>,
    pub name: Arc<str>,
    /// `host`, `host_id`.
    pub labels: Arc<[KeyValue]>,
    /// `host`, `host_id`, `agent_version`, `docker_version`, `os`, `arch`.
    pub info: Vec<KeyValue>,
}

#[derive(Debug)]
pub(super) struct StackEntry {
    /// `stack`.
    pub label: KeyValue,
    /// The hosts its selector chooses (indices into [`Fleet::hosts`]).
    pub assigned: Vec<u32>,
    pub rollout: Option<RolloutEntry>,
}

/// A stack's latest rollout.
#[derive(Debug, Clone, Copy)]
pub(super) struct RolloutEntry {
    pub phase: pb::RolloutPhase,
    /// 1-based, as `rollout status` shows it.
    pub step: u32,
    pub steps: u32,
    pub started_ms: i64,
}

/// One stack's backups in the catalog.
#[derive(Debug)]
pub(super) struct BackupStats {
    /// `stack`.
    pub label: KeyValue,
    /// By [`BACKUP_STATES`].
    pub counts: [u64; BACKUP_STATES.len()],
    /// When the newest complete backup finished.
    pub last_complete_ms: Option<i64>,
}

/// The store, as of [`Fleet::taken`].
#[derive(Debug, Default)]
pub(super) struct Fleet {
    pub taken: Option<Instant>,
    /// Hosts that are not revoked, by name.
    pub hosts: Vec<HostEntry>,
    /// Host id → index into `hosts`.
    pub host_index: HashMap<Arc<str>, u32>,
    pub revoked: u64,
    /// By name.
    pub stacks: Vec<StackEntry>,
    /// Stack name → index into `stacks`.
    pub stack_index: HashMap<Arc<str>, u32>,
    /// Per stack with a backup or in the catalog, by name.
    pub backups: Vec<BackupStats>,
    pub jobs_pending: u64,
    pub jobs_running: u64,
    /// Signed orders waiting for their (offline) hosts.
    pub orders: u64,
    pub store_bytes: Option<u64>,
}

/// The current snapshot and the demand for it.
#[derive(Debug)]
pub(super) struct Cache {
    current: Mutex<Arc<Fleet>>,
    base: Instant,
    /// Milliseconds since `base` of the last collection.
    demanded_ms: AtomicU64,
    /// A refresh failed and was logged; logged again once one works.
    failing: AtomicBool,
    nudge: tokio::sync::Notify,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            current: Mutex::default(),
            base: Instant::now(),
            demanded_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            nudge: tokio::sync::Notify::new(),
        }
    }
}

impl Cache {
    /// The snapshot a collection reads; notes the demand, and asks for a refresh at once when
    /// it is too old.
    pub fn current(&self) -> Arc<Fleet> {
        let now = self.base.elapsed();
        self.demanded_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
        let fleet = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if fleet.taken.is_none_or(|t| t.elapsed() > 2 * TTL) {
            self.nudge.notify_one();
        }
        fleet
    }

    /// Whether the snapshot is worth reading the store for: never taken, or collected lately.
    fn wanted(&self) -> bool {
        let never = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .taken
            .is_none();
        let since = self.base.elapsed().saturating_sub(Duration::from_millis(
            self.demanded_ms.load(Ordering::Relaxed),
        ));
        never || since < IDLE
    }

    pub async fn refresh(&self, core: &Core) {
        match read(core).await {
            Ok(fleet) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(fleet);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("reading the store for metrics works again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "reading the store for metrics: {e} (metrics keep the previous snapshot; logged again only once it works)"
                    );
                }
            }
        }
    }
}

/// Refresh the snapshot every [`TTL`] while something collects, and when a collection finds it
/// stale. Runs for the life of the server.
pub async fn keep_fresh(sources: Arc<Sources>) {
    loop {
        if sources.fleet.wanted() {
            sources.refresh().await;
        }
        tokio::select! {
            _ = sources.fleet.nudge.notified() => {}
            _ = tokio::time::sleep(TTL) => {}
        }
    }
}

/// `host`, `host_id` and more, as label sets share them.
fn kv(key: &'static str, value: &Arc<str>) -> KeyValue {
    KeyValue::new(key, value.clone())
}

async fn read(core: &Core) -> Result<Fleet, crate::store::StoreError> {
    let store = &core.store;
    let mut records = store.hosts().await?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let mut fleet = Fleet {
        taken: Some(Instant::now()),
        ..Fleet::default()
    };
    let mut selectable = Vec::new();
    for h in records {
        if h.is_revoked() {
            fleet.revoked += 1;
            continue;
        }
        let id: Arc<str> = h.id.as_str().into();
        let name: Arc<str> = h.name.as_str().into();
        let labels: Arc<[KeyValue]> = Arc::new([kv("host", &name), kv("host_id", &id)]);
        let mut info = labels.to_vec();
        for (key, value) in [
            ("agent_version", h.facts.agent_version),
            ("docker_version", h.facts.docker_version),
            ("os", h.facts.os),
            ("arch", h.facts.arch),
        ] {
            info.push(KeyValue::new(key, value));
        }
        fleet
            .host_index
            .insert(id.clone(), fleet.hosts.len() as u32);
        fleet.hosts.push(HostEntry {
            id,
            name,
            labels,
            info,
        });
        selectable.push((h.name, h.labels));
    }

    let mut stacks = store.stacks().await?;
    stacks.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &stacks {
        let name: Arc<str> = s.name.as_str().into();
        // Which hosts a stack goes to is its selector's (as `desired::assignment` reads it).
        let assigned = match Selector::stored(&s.selector) {
            Ok(sel) => selectable
                .iter()
                .enumerate()
                .filter(|(_, (host, labels))| sel.matches(host, labels))
                .map(|(i, _)| i as u32)
                .collect(),
            Err(_) => Vec::new(),
        };
        let rollout = store.latest_rollout(&s.name).await?.map(|r| RolloutEntry {
            phase: phase_to_wire(&r.rollout.phase),
            step: r.rollout.step as u32 + 1,
            steps: r.rollout.steps.len() as u32,
            started_ms: r.started_ms,
        });
        fleet
            .stack_index
            .insert(name.clone(), fleet.stacks.len() as u32);
        fleet.stacks.push(StackEntry {
            label: kv("stack", &name),
            assigned,
            rollout,
        });
    }

    let mut by_stack: std::collections::BTreeMap<String, BackupStats> = stacks
        .iter()
        .map(|s| (s.name.clone(), BackupStats::new(&s.name)))
        .collect();
    for b in store.backups().await? {
        let stats = by_stack
            .entry(b.stack.clone())
            .or_insert_with(|| BackupStats::new(&b.stack));
        if let Some(i) = BACKUP_STATES.iter().position(|s| *s == b.state()) {
            stats.counts[i] += 1;
        }
        if b.state() == pb::BackupState::Complete {
            stats.last_complete_ms = stats.last_complete_ms.max(Some(b.finished_unix_ms));
        }
    }
    fleet.backups = by_stack.into_values().collect();
    for j in store.backup_jobs().await? {
        match j.state() {
            pb::BackupJobState::Pending => fleet.jobs_pending += 1,
            pb::BackupJobState::Running => fleet.jobs_running += 1,
            _ => {}
        }
    }
    fleet.orders = store.orders().await?.len() as u64;
    // sled walks its files: on the blocking pool.
    let store = store.clone();
    fleet.store_bytes = tokio::task::spawn_blocking(move || store.size_on_disk())
        .await
        .ok()
        .flatten();
    Ok(fleet)
}

impl BackupStats {
    fn new(stack: &str) -> BackupStats {
        BackupStats {
            label: KeyValue::new("stack", stack.to_string()),
            counts: [0; BACKUP_STATES.len()],
            last_complete_ms: None,
        }
    }
}
