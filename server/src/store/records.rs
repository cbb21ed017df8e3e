//! What the server stores: one plain record type per kind of thing, the same whatever backend
//! holds them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Facts {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub docker_version: String,
    pub agent_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRecord {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub facts: Facts,
    pub enrolled_ms: i64,
    pub last_seen_ms: i64,
    pub cert_not_after_ms: i64,
    pub revoked_ms: Option<i64>,
}

impl HostRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_ms.is_some()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenKind {
    Join { labels: BTreeMap<String, String> },
    Login { operator_id: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    /// Hex SHA-256 of the secret; the secret itself is never stored.
    pub secret_hash: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub created_by: String,
    pub description: String,
    pub used_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OperatorStatus {
    Pending,
    Active,
    Revoked,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperatorRecord {
    pub id: String,
    pub name: String,
    pub role: noco_certs::Role,
    pub status: OperatorStatus,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub time_ms: i64,
    /// How people read the caller (`operator alice (admin)`).
    pub caller: String,
    pub action: String,
    pub target: String,
    /// `ok`, `denied: …` or `error: …`.
    pub result: String,
    #[serde(default)]
    pub caller_name: String,
    #[serde(default)]
    pub caller_id: String,
    #[serde(default)]
    pub caller_role: Option<noco_certs::Role>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Which audit records to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub since_ms: i64,
    /// An action, or a prefix ending in '.'.
    pub action: String,
    /// A caller's name or id.
    pub caller: String,
}

impl AuditFilter {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        r.time_ms >= self.since_ms
            && (self.action.is_empty()
                || r.action == self.action
                || (self.action.ends_with('.') && r.action.starts_with(&self.action)))
            && (self.caller.is_empty()
                || r.caller_name == self.caller
                || r.caller_id == self.caller)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BanRecord {
    pub key: String,
    pub time_ms: i64,
    pub by: String,
}

/// A stack: its name, which hosts it goes to, and its current revision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackRecord {
    pub name: String,
    pub selector: String,
    pub revision: String,
    pub history: Vec<HistoryEntry>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    pub revision: String,
    pub selector: String,
    pub time_ms: i64,
    pub by: String,
}

/// A rollout as stored: its id, when it started, and its state machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutRecord {
    pub id: String,
    pub started_ms: i64,
    pub by: String,
    pub rollout: crate::machines::rollout::Rollout,
    /// Its per-host pins no longer apply: the stack was applied (or re-applied) since.
    #[serde(default)]
    pub released: bool,
}

/// A host's newly issued desired state: its generation and the encoded `SignedState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedState {
    pub host_id: String,
    pub generation: u64,
    pub encoded: Vec<u8>,
}

/// A signed order waiting for its host, kept until the host starts its job or it expires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingOrder {
    /// The job's id (the order's id).
    pub job_id: String,
    pub host_id: String,
    pub expires_ms: i64,
    /// When it was last handed to a live session of the host (`None`: never).
    pub delivered_ms: Option<i64>,
    /// The prost-encoded `SignedOrder`, in hex.
    pub signed_hex: String,
}

/// An alert the server holds: firing, or resolved and not yet told to every receiver that was
/// told it fired (see `crate::alerts`). Keyed by its fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertRecord {
    /// Hex of the SHA-256 of its labels (the first 16 digits): the alert's identity.
    pub fingerprint: String,
    /// The rule that raised it (also its `alertname` label).
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (kept across restarts).
    pub starts_ms: i64,
    /// When it resolved (`None`: firing).
    pub ends_ms: Option<i64>,
}

/// The notification log of one (receiver, group): what the receiver was last told fires, so
/// nothing is sent twice. Keyed by receiver and group key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotifyLogRecord {
    pub receiver: String,
    pub group_key: String,
    /// Fingerprints the receiver was last told fire, sorted.
    pub firing: Vec<String>,
    /// Fingerprints it was last told resolved, sorted.
    pub resolved: Vec<String>,
    /// Hex SHA-256 over both sets: what was notified, in one value.
    pub hash: String,
    /// When the last notification of the group was queued for the receiver.
    pub sent_ms: i64,
}

/// One alert as a notification carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotifiedAlert {
    pub fingerprint: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_ms: i64,
    pub ends_ms: Option<i64>,
}

/// A notification waiting to be delivered (the outbox): written with the notification log's
/// new entry in one transaction, removed once delivered or given up. Keyed by receiver, time
/// and its idempotency key, so each receiver's are read in the order they were queued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Sent as the `Idempotency-Key` header: a receiver may drop a notification it has seen.
    pub key: String,
    pub receiver: String,
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    /// `firing` (some alert fires) or `resolved` (every one resolved).
    pub status: String,
    pub alerts: Vec<NotifiedAlert>,
    pub created_ms: i64,
}

impl OutboxRecord {
    /// Where it is stored: `<receiver>/<created ms, 16 digits>/<key>`, so that a receiver's
    /// notifications read in the order they were queued.
    pub fn id(&self) -> String {
        format!(
            "{}/{:016}/{}",
            self.receiver,
            self.created_ms.max(0),
            self.key
        )
    }
}

/// A silence: alerts of `rule` (and of `host`, `stack` when set) send nothing from `starts_ms`
/// until `ends_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SilenceRecord {
    pub id: String,
    pub rule: String,
    /// A host's name; empty: any host.
    pub host: String,
    /// A stack's name; empty: any stack.
    pub stack: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub comment: String,
    pub created_by: String,
}

/// Changes to the alerting state, written in one transaction (and durable when the write
/// returns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertChanges {
    pub put_alerts: Vec<AlertRecord>,
    /// Fingerprints.
    pub remove_alerts: Vec<String>,
    pub put_log: Vec<NotifyLogRecord>,
    /// (receiver, group key).
    pub remove_log: Vec<(String, String)>,
    pub put_outbox: Vec<OutboxRecord>,
    /// [`OutboxRecord::id`]s.
    pub remove_outbox: Vec<String>,
    pub put_silences: Vec<SilenceRecord>,
    /// Silence ids.
    pub remove_silences: Vec<String>,
}

impl AlertChanges {
    pub fn is_empty(&self) -> bool {
        *self == AlertChanges::default()
    }
}
