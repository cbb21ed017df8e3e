//! The server's persistent state in sled, behind typed methods: hosts, tokens, operators, the
//! ban list and the audit log. Values are JSON; every method that changes something flushes
//! before it returns, so what the caller was told is on disk.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("corrupt record in {tree}: {err}")]
    Corrupt {
        tree: &'static str,
        err: serde_json::Error,
    },
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

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

impl OperatorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorStatus::Pending => "pending",
            OperatorStatus::Active => "active",
            OperatorStatus::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperatorRecord {
    pub id: String,
    pub name: String,
    pub role: noco_certs::Role,
    pub status: OperatorStatus,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub time_ms: i64,
    pub caller: String,
    pub action: String,
    pub target: String,
    pub result: String,
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

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    hosts: sled::Tree,
    host_names: sled::Tree,
    tokens: sled::Tree,
    operators: sled::Tree,
    bans: sled::Tree,
    audit: sled::Tree,
    stacks: sled::Tree,
    /// Revision id → prost-encoded `StackState` (name empty): immutable.
    revisions: sled::Tree,
    /// Host id → the last generation issued (u64 big-endian); never decreases.
    generations: sled::Tree,
    /// Host id → the last prost-encoded `SignedState` issued.
    states: sled::Tree,
    /// `<stack>/<started ms, 16 digits>/<id>` → a rollout (JSON): time-ordered per stack.
    rollouts: sled::Tree,
}

/// A rollout as stored: its id, when it started, and its state machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutRecord {
    pub id: String,
    pub started_ms: i64,
    pub by: String,
    pub rollout: crate::rollout::Rollout,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt { tree, err })
}

impl Store {
    /// Open (or create) the database under `path`. sled allows one process at a time: a second
    /// server on the same data directory fails here.
    pub fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()?;
        Ok(Store {
            hosts: db.open_tree("hosts")?,
            host_names: db.open_tree("host_names")?,
            tokens: db.open_tree("tokens")?,
            operators: db.open_tree("operators")?,
            bans: db.open_tree("bans")?,
            audit: db.open_tree("audit")?,
            stacks: db.open_tree("stacks")?,
            revisions: db.open_tree("revisions")?,
            generations: db.open_tree("generations")?,
            states: db.open_tree("states")?,
            rollouts: db.open_tree("rollouts")?,
            db,
        })
    }

    /// Make everything written so far durable. sled 0.34's `flush_async` deadlocks when two
    /// calls overlap (sled issues #1241, #1308), so this runs the blocking `flush` on the
    /// blocking thread pool instead; concurrent callers are safe.
    pub async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(result) => {
                result?;
                Ok(())
            }
            Err(e) => Err(StoreError::Conflict(format!("the flush task failed: {e}"))),
        }
    }

    // ------------------------------------------------------------------ hosts

    pub fn host(&self, id: &str) -> Result<Option<HostRecord>> {
        self.hosts.get(id)?.map(|v| decode("hosts", &v)).transpose()
    }

    /// A host by id, or by the name of a host that is not revoked.
    pub fn find_host(&self, name_or_id: &str) -> Result<Option<HostRecord>> {
        if let Some(id) = self.host_names.get(name_or_id)? {
            return self.host(&String::from_utf8_lossy(&id));
        }
        self.host(name_or_id)
    }

    pub fn hosts(&self) -> Result<Vec<HostRecord>> {
        self.hosts
            .iter()
            .values()
            .map(|v| decode("hosts", &v?))
            .collect()
    }

    /// Add a newly enrolled host; its name must not belong to another host that is not revoked.
    pub async fn insert_host(&self, host: &HostRecord) -> Result<()> {
        let claimed = self.host_names.compare_and_swap(
            host.name.as_bytes(),
            None::<&[u8]>,
            Some(host.id.as_bytes()),
        )?;
        if let Err(e) = claimed {
            let owner = e
                .current
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            return Err(StoreError::Conflict(format!(
                "host name {:?} is taken by host {owner}: revoke that host first or pick another name with --name",
                host.name
            )));
        }
        self.hosts.insert(host.id.as_bytes(), encode(host))?;
        self.flush().await
    }

    /// Replace a host's record (labels, facts, last seen). Does not flush: callers that must be
    /// durable at once call [`Store::flush`]; sled flushes within 500 ms anyway.
    pub fn put_host(&self, host: &HostRecord) -> Result<()> {
        self.hosts.insert(host.id.as_bytes(), encode(host))?;
        Ok(())
    }

    /// Mark a host revoked, ban its identity and free its name.
    pub async fn revoke_host(&self, host: &mut HostRecord, now_ms: i64, by: &str) -> Result<()> {
        host.revoked_ms = Some(now_ms);
        self.hosts.insert(host.id.as_bytes(), encode(&*host))?;
        let _ = self.host_names.compare_and_swap(
            host.name.as_bytes(),
            Some(host.id.as_bytes()),
            None::<&[u8]>,
        )?;
        self.ban(&format!("agent/{}", host.id), now_ms, by)?;
        self.flush().await
    }

    // ------------------------------------------------------------------ tokens

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.tokens
            .get(id)?
            .map(|v| decode("tokens", &v))
            .transpose()
    }

    pub async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        self.tokens.insert(token.id.as_bytes(), encode(token))?;
        self.flush().await
    }

    /// Mark a token used, atomically: of two concurrent uses exactly one succeeds.
    pub async fn consume_token(&self, token: &TokenRecord, now_ms: i64) -> Result<()> {
        let mut used = token.clone();
        used.used_ms = Some(now_ms);
        let swapped = self.tokens.compare_and_swap(
            token.id.as_bytes(),
            Some(encode(token)),
            Some(encode(&used)),
        )?;
        if swapped.is_err() {
            return Err(StoreError::Conflict("token already used".to_string()));
        }
        self.flush().await
    }

    /// Delete tokens that expired more than `grace_ms` ago.
    pub fn prune_tokens(&self, now_ms: i64, grace_ms: i64) -> Result<usize> {
        let mut pruned = 0;
        for entry in self.tokens.iter() {
            let (key, value) = entry?;
            let token: TokenRecord = decode("tokens", &value)?;
            if token.expires_ms + grace_ms < now_ms {
                self.tokens.remove(key)?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    // ------------------------------------------------------------------ operators

    pub fn operators(&self) -> Result<Vec<OperatorRecord>> {
        self.operators
            .iter()
            .values()
            .map(|v| decode("operators", &v?))
            .collect()
    }

    pub fn operator(&self, id: &str) -> Result<Option<OperatorRecord>> {
        self.operators
            .get(id)?
            .map(|v| decode("operators", &v))
            .transpose()
    }

    /// The operator with this name that is not revoked.
    pub fn operator_by_name(&self, name: &str) -> Result<Option<OperatorRecord>> {
        Ok(self
            .operators()?
            .into_iter()
            .find(|o| o.name == name && o.status != OperatorStatus::Revoked))
    }

    pub async fn put_operator(&self, op: &OperatorRecord) -> Result<()> {
        self.operators.insert(op.id.as_bytes(), encode(op))?;
        self.flush().await
    }

    // ------------------------------------------------------------------ bans

    fn ban(&self, key: &str, now_ms: i64, by: &str) -> Result<()> {
        let record = BanRecord {
            key: key.to_string(),
            time_ms: now_ms,
            by: by.to_string(),
        };
        self.bans.insert(key.as_bytes(), encode(&record))?;
        Ok(())
    }

    pub async fn ban_operator(&self, op: &mut OperatorRecord, now_ms: i64, by: &str) -> Result<()> {
        op.status = OperatorStatus::Revoked;
        self.operators.insert(op.id.as_bytes(), encode(&*op))?;
        self.ban(&format!("operator/{}", op.id), now_ms, by)?;
        self.flush().await
    }

    pub fn bans(&self) -> Result<Vec<BanRecord>> {
        self.bans
            .iter()
            .values()
            .map(|v| decode("bans", &v?))
            .collect()
    }

    // ------------------------------------------------------------------ stacks

    pub fn stack(&self, name: &str) -> Result<Option<StackRecord>> {
        self.stacks
            .get(name)?
            .map(|v| decode("stacks", &v))
            .transpose()
    }

    pub fn stacks(&self) -> Result<Vec<StackRecord>> {
        self.stacks
            .iter()
            .values()
            .map(|v| decode("stacks", &v?))
            .collect()
    }

    pub async fn put_stack(&self, stack: &StackRecord) -> Result<()> {
        self.stacks.insert(stack.name.as_bytes(), encode(stack))?;
        self.flush().await
    }

    pub async fn remove_stack(&self, name: &str) -> Result<Option<StackRecord>> {
        let old = self
            .stacks
            .remove(name)?
            .map(|v| decode("stacks", &v))
            .transpose()?;
        self.flush().await?;
        Ok(old)
    }

    /// Store a revision's content (prost-encoded `StackState`) unless it is there already.
    pub fn put_revision(&self, id: &str, encoded: &[u8]) -> Result<()> {
        let _ = self
            .revisions
            .compare_and_swap(id.as_bytes(), None::<&[u8]>, Some(encoded))?;
        Ok(())
    }

    pub fn revision(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.revisions.get(id)?.map(|v| v.to_vec()))
    }

    // ------------------------------------------------------------------ desired state

    pub fn generation(&self, host_id: &str) -> Result<u64> {
        Ok(self
            .generations
            .get(host_id)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Record new states of many hosts at once — each with its (already incremented)
    /// generation — with one flush: a change to a stack on 10,000 hosts is one disk sync.
    pub async fn put_signed_states(&self, states: &[(String, u64, Vec<u8>)]) -> Result<()> {
        let mut generations = sled::Batch::default();
        let mut encoded = sled::Batch::default();
        for (host_id, generation, bytes) in states {
            generations.insert(host_id.as_bytes(), &generation.to_be_bytes());
            encoded.insert(host_id.as_bytes(), bytes.as_slice());
        }
        // Generations first: a crash between the two leaves a generation reserved, never reused.
        self.generations.apply_batch(generations)?;
        self.states.apply_batch(encoded)?;
        self.flush().await
    }

    pub fn signed_state(&self, host_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.states.get(host_id)?.map(|v| v.to_vec()))
    }

    pub async fn put_signed_state(&self, host_id: &str, encoded: &[u8]) -> Result<()> {
        self.states.insert(host_id.as_bytes(), encoded)?;
        self.flush().await
    }

    // ------------------------------------------------------------------ rollouts

    fn rollout_key(r: &RolloutRecord) -> String {
        format!("{}/{:016}/{}", r.rollout.stack, r.started_ms.max(0), r.id)
    }

    pub async fn put_rollout(&self, r: &RolloutRecord) -> Result<()> {
        self.rollouts
            .insert(Self::rollout_key(r).as_bytes(), encode(r))?;
        self.flush().await
    }

    /// A stack's rollouts, newest first.
    pub fn rollouts_of(&self, stack: &str) -> Result<Vec<RolloutRecord>> {
        let mut out = self
            .rollouts
            .scan_prefix(format!("{stack}/").as_bytes())
            .values()
            .map(|v| decode("rollouts", &v?))
            .collect::<Result<Vec<RolloutRecord>>>()?;
        out.reverse();
        Ok(out)
    }

    /// The latest rollout of every stack that has one.
    pub fn latest_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        let mut latest: BTreeMap<String, RolloutRecord> = BTreeMap::new();
        for v in self.rollouts.iter().values() {
            let r: RolloutRecord = decode("rollouts", &v?)?;
            latest.insert(r.rollout.stack.clone(), r);
        }
        Ok(latest.into_values().collect())
    }

    // ------------------------------------------------------------------ audit

    /// Append an audit record. Keys are time-ordered (milliseconds, then a unique counter).
    pub fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let seq = self.db.generate_id()?;
        let mut key = Vec::with_capacity(16);
        key.extend_from_slice(&(record.time_ms.max(0) as u64).to_be_bytes());
        key.extend_from_slice(&seq.to_be_bytes());
        self.audit.insert(key, encode(record))?;
        Ok(())
    }

    /// The newest `limit` audit records, oldest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let mut records = self
            .audit
            .iter()
            .rev()
            .take(limit)
            .map(|kv| decode("audit", &kv?.1))
            .collect::<Result<Vec<AuditRecord>>>()?;
        records.reverse();
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, name: &str) -> HostRecord {
        HostRecord {
            id: id.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            facts: Facts::default(),
            enrolled_ms: 1,
            last_seen_ms: 1,
            cert_not_after_ms: 2,
            revoked_ms: None,
        }
    }

    #[tokio::test]
    async fn a_host_name_is_unique_until_its_host_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut h1 = host("h1", "web-1");
        store.insert_host(&h1).await.unwrap();
        let err = store.insert_host(&host("h2", "web-1")).await.unwrap_err();
        assert!(err.to_string().contains("taken by host h1"), "{err}");
        store.revoke_host(&mut h1, 5, "test").await.unwrap();
        store.insert_host(&host("h2", "web-1")).await.unwrap();
        assert_eq!(store.find_host("web-1").unwrap().unwrap().id, "h2");
        assert_eq!(store.bans().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_token_is_consumed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let token = TokenRecord {
            id: "t1".into(),
            kind: TokenKind::Join {
                labels: BTreeMap::new(),
            },
            secret_hash: "x".into(),
            created_ms: 0,
            expires_ms: 10,
            created_by: "test".into(),
            description: String::new(),
            used_ms: None,
        };
        store.insert_token(&token).await.unwrap();
        store.consume_token(&token, 3).await.unwrap();
        assert!(store.consume_token(&token, 4).await.is_err());
        assert_eq!(store.token("t1").unwrap().unwrap().used_ms, Some(3));
        assert_eq!(store.prune_tokens(100, 10).unwrap(), 1);
    }

    /// Regression: concurrent flushes deadlocked the server with sled's `flush_async`. The
    /// writes run on their own thread and runtime, because a deadlock there blocks the runtime's
    /// threads: the test waits from outside and fails instead of hanging.
    #[test]
    fn concurrent_writes_that_flush_do_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let writer = store.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let result = rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..64 {
                    let store = writer.clone();
                    tasks.spawn(async move {
                        for round in 0..20 {
                            let token = TokenRecord {
                                id: format!("t{i}-{round}"),
                                kind: TokenKind::Join {
                                    labels: BTreeMap::new(),
                                },
                                secret_hash: "x".into(),
                                created_ms: 0,
                                expires_ms: 10,
                                created_by: "test".into(),
                                description: String::new(),
                                used_ms: None,
                            };
                            store.insert_token(&token).await?;
                        }
                        Ok::<(), StoreError>(())
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            });
            let _ = done.send(result);
        });
        let outcome = finished.recv_timeout(std::time::Duration::from_secs(30));
        assert!(
            matches!(outcome, Ok(Ok(()))),
            "64 × 20 concurrent flushing writes did not finish within 30 s: {outcome:?}"
        );
        assert_eq!(store.prune_tokens(1_000, 0).unwrap(), 64 * 20);
    }

    #[tokio::test]
    async fn audit_returns_the_newest_records_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            store
                .append_audit(&AuditRecord {
                    time_ms: i,
                    caller: "c".into(),
                    action: format!("a{i}"),
                    target: String::new(),
                    result: "ok".into(),
                })
                .unwrap();
        }
        let actions: Vec<_> = store
            .audit(3)
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(actions, ["a2", "a3", "a4"]);
    }
}
