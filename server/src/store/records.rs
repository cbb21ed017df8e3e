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
