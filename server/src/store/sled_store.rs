//! The embedded default store: sled, one tree per kind of record, values JSON (revisions,
//! states, backups and backup jobs protobuf). A `meta` tree records the format version and how
//! many hosts, operators, stacks, revisions, backups, alerts, notification-log entries, outbox
//! entries and silences the database holds, updated in the same transaction as the records; at
//! open every count is checked and every record decoded, so a damaged database refuses to open
//! instead of serving as an empty one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{IVec, Transactional};

use super::*;

/// The on-disk format this server reads and writes.
pub const FORMAT: u64 = 1;
const FORMAT_KEY: &[u8] = b"format";
/// The trees whose record counts are kept in `meta`.
/// (A database from before backups or alerts were kept has no count for them, and none of them:
/// 0 = 0.)
const COUNTED: [&str; 9] = [
    "hosts",
    "operators",
    "stacks",
    "revisions",
    "backups",
    "alerts",
    "alert_log",
    "alert_outbox",
    "silences",
];

#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
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
    /// Backup id → prost-encoded `BackupInfo`: the backup catalog.
    backups: sled::Tree,
    /// Job id → prost-encoded `BackupJob`.
    backup_jobs: sled::Tree,
    /// Job id → a [`PendingOrder`] (JSON): orders waiting for their hosts.
    backup_orders: sled::Tree,
    /// Fingerprint → an [`AlertRecord`] (JSON).
    alerts: sled::Tree,
    /// `<receiver>\0<group key>` → a [`NotifyLogRecord`] (JSON).
    alert_log: sled::Tree,
    /// [`OutboxRecord::id`] → an [`OutboxRecord`] (JSON): per receiver in queued order.
    alert_outbox: sled::Tree,
    /// Silence id → a [`SilenceRecord`] (JSON).
    silences: sled::Tree,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

/// What the integrity check found: the format and the count of each counted tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    pub format: u64,
    pub counts: BTreeMap<&'static str, u64>,
}

impl std::fmt::Display for Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "format {}", self.format)?;
        for (tree, n) in &self.counts {
            write!(f, ", {n} {tree}")?;
        }
        Ok(())
    }
}

fn db_err(e: sled::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        err: err.to_string(),
    })
}

fn decode_pb<T: prost::Message + Default>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T> {
    T::decode(bytes).map_err(|err| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        err: err.to_string(),
    })
}

fn count_key(tree: &str) -> Vec<u8> {
    format!("count/{tree}").into_bytes()
}

fn read_u64(v: Option<IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

/// Add `delta` to a tree's count inside a transaction.
fn bump(meta: &TransactionalTree, tree: &str, delta: i64) -> TxResult<()> {
    let key = count_key(tree);
    let n = read_u64(meta.get(&key)?) as i64 + delta;
    meta.insert(key, &(n.max(0) as u64).to_be_bytes())?;
    Ok(())
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => db_err(e),
    }
}

/// How long opening waits for the database's lock: a process that just closed it (a server
/// restarting, a test reopening) releases it from its flusher thread a moment later — more than
/// 3 s once on a loaded machine (a test reopening failed "could not acquire lock").
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl SledStore {
    async fn open_db(path: &Path) -> Result<Self> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500));
        let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports a held lock as `Other` with this text (the `WouldBlock` it got
                // from the OS only inside the message).
                Err(sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(db_err(e)),
            }
        };
        let t = |name: &str| db.open_tree(name).map_err(db_err);
        Ok(SledStore {
            meta: t("meta")?,
            hosts: t("hosts")?,
            host_names: t("host_names")?,
            tokens: t("tokens")?,
            operators: t("operators")?,
            bans: t("bans")?,
            audit: t("audit")?,
            stacks: t("stacks")?,
            revisions: t("revisions")?,
            generations: t("generations")?,
            states: t("states")?,
            rollouts: t("rollouts")?,
            backups: t("backups")?,
            backup_jobs: t("backup_jobs")?,
            backup_orders: t("backup_orders")?,
            alerts: t("alerts")?,
            alert_log: t("alert_log")?,
            alert_outbox: t("alert_outbox")?,
            silences: t("silences")?,
            db,
        })
    }

    /// Create a new, empty database under `path` (`noco-server init`), recording its format.
    pub async fn create(path: &Path) -> Result<Self> {
        let store = Self::open_db(path).await?;
        if store.meta.get(FORMAT_KEY).map_err(db_err)?.is_some() || !store.hosts.is_empty() {
            return Err(StoreError::Conflict(format!(
                "{} already holds a noco database",
                path.display()
            )));
        }
        store.record_census(&Census {
            format: FORMAT,
            counts: COUNTED.iter().map(|t| (*t, 0)).collect(),
        })?;
        store.flush().await?;
        Ok(store)
    }

    /// Open the database of an initialized data directory, checking that it holds what it
    /// recorded holding. sled allows one process at a time: a second server fails here.
    pub async fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(StoreError::Damaged(format!(
                "the database {} is missing",
                path.display()
            )));
        }
        let store = Self::open_db(path).await?;
        let census = store.check()?;
        tracing::info!(path = %path.display(), "database checked: {census}");
        Ok(store)
    }

    fn tree(&self, name: &str) -> &sled::Tree {
        match name {
            "hosts" => &self.hosts,
            "operators" => &self.operators,
            "stacks" => &self.stacks,
            "backups" => &self.backups,
            "alerts" => &self.alerts,
            "alert_log" => &self.alert_log,
            "alert_outbox" => &self.alert_outbox,
            "silences" => &self.silences,
            _ => &self.revisions,
        }
    }

    fn record_census(&self, census: &Census) -> Result<()> {
        for (tree, n) in &census.counts {
            self.meta
                .insert(count_key(tree), &n.to_be_bytes())
                .map_err(db_err)?;
        }
        self.meta
            .insert(FORMAT_KEY, &census.format.to_be_bytes())
            .map_err(db_err)?;
        Ok(())
    }

    /// Check the database: its format, every recorded count against the records there, and
    /// that every record decodes. A database written before counts were recorded (it has
    /// records but no format) is adopted: its counts are recorded now.
    pub fn check(&self) -> Result<Census> {
        let actual: BTreeMap<&'static str, u64> = COUNTED
            .iter()
            .map(|t| (*t, self.tree(t).len() as u64))
            .collect();
        let format = match self.meta.get(FORMAT_KEY).map_err(db_err)? {
            Some(v) => read_u64(Some(v)),
            None if actual.values().all(|n| *n == 0) => {
                return Err(StoreError::Damaged(
                    "the database holds no noco data at all, although `noco-server init` records its format in it: it was damaged or deleted (an empty database never serves: it would accept every old credential with no hosts, operators or stacks)".into(),
                ));
            }
            None => {
                let census = Census {
                    format: FORMAT,
                    counts: actual,
                };
                self.record_census(&census)?;
                tracing::info!("recorded the database's format and counts: {census}");
                return Ok(census);
            }
        };
        if format != FORMAT {
            return Err(StoreError::Damaged(format!(
                "the database has format {format}; this noco-server reads format {FORMAT}"
            )));
        }
        let mut problems = Vec::new();
        for (tree, n) in &actual {
            let recorded = read_u64(self.meta.get(count_key(tree)).map_err(db_err)?);
            if recorded != *n {
                problems.push(format!("{tree}: {n} records, {recorded} recorded"));
            }
        }
        if !problems.is_empty() {
            return Err(StoreError::Damaged(format!(
                "the database does not hold what it recorded ({}): records were lost or the files were damaged",
                problems.join("; ")
            )));
        }
        self.decode_all::<HostRecord>("hosts", &self.hosts)?;
        self.decode_all::<OperatorRecord>("operators", &self.operators)?;
        self.decode_all::<StackRecord>("stacks", &self.stacks)?;
        self.decode_all::<TokenRecord>("tokens", &self.tokens)?;
        self.decode_all::<RolloutRecord>("rollouts", &self.rollouts)?;
        self.decode_all::<PendingOrder>("backup_orders", &self.backup_orders)?;
        self.decode_all::<AlertRecord>("alerts", &self.alerts)?;
        self.decode_all::<NotifyLogRecord>("alert_log", &self.alert_log)?;
        self.decode_all::<OutboxRecord>("alert_outbox", &self.alert_outbox)?;
        self.decode_all::<SilenceRecord>("silences", &self.silences)?;
        for kv in self.backups.iter() {
            let (k, v) = kv.map_err(db_err)?;
            decode_pb::<noco_proto::v1::BackupInfo>("backups", &k, &v)?;
        }
        for kv in self.backup_jobs.iter() {
            let (k, v) = kv.map_err(db_err)?;
            decode_pb::<noco_proto::v1::BackupJob>("backup_jobs", &k, &v)?;
        }
        Ok(Census {
            format,
            counts: actual,
        })
    }

    fn decode_all<T: DeserializeOwned>(&self, name: &'static str, tree: &sled::Tree) -> Result<()> {
        for kv in tree.iter() {
            let (k, v) = kv.map_err(db_err)?;
            decode::<T>(name, &k, &v)?;
        }
        Ok(())
    }

    fn values<T: DeserializeOwned>(&self, name: &'static str, tree: &sled::Tree) -> Result<Vec<T>> {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv.map_err(db_err)?;
                decode(name, &k, &v)
            })
            .collect()
    }

    fn get<T: DeserializeOwned>(
        &self,
        name: &'static str,
        tree: &sled::Tree,
        key: &str,
    ) -> Result<Option<T>> {
        tree.get(key)
            .map_err(db_err)?
            .map(|v| decode(name, key.as_bytes(), &v))
            .transpose()
    }

    /// Change a host record with compare-and-swap, retrying on a lost race (no flush).
    fn cas_host(&self, id: &str, change: HostChange<'_>) -> Result<Option<HostRecord>> {
        loop {
            let Some(old) = self.hosts.get(id).map_err(db_err)? else {
                return Ok(None);
            };
            let mut host: HostRecord = decode("hosts", id.as_bytes(), &old)?;
            change(&mut host).map_err(StoreError::Refused)?;
            let swapped = self
                .hosts
                .compare_and_swap(id, Some(&old), Some(encode(&host)))
                .map_err(db_err)?;
            if swapped.is_ok() {
                return Ok(Some(host));
            }
        }
    }

    fn ban(&self, key: &str, now_ms: i64, by: &str) -> Result<()> {
        let record = BanRecord {
            key: key.to_string(),
            time_ms: now_ms,
            by: by.to_string(),
        };
        self.bans
            .insert(key.as_bytes(), encode(&record))
            .map_err(db_err)?;
        Ok(())
    }

    fn log_key(receiver: &str, group_key: &str) -> Vec<u8> {
        format!("{receiver}\0{group_key}").into_bytes()
    }

    fn rollout_key(r: &RolloutRecord) -> String {
        format!("{}/{:016}/{}", r.rollout.stack, r.started_ms.max(0), r.id)
    }
}

#[tonic::async_trait]
impl Store for SledStore {
    async fn host(&self, id: &str) -> Result<Option<HostRecord>> {
        self.get("hosts", &self.hosts, id)
    }

    async fn find_host(&self, name_or_id: &str) -> Result<Option<HostRecord>> {
        if let Some(id) = self.host_names.get(name_or_id).map_err(db_err)? {
            return self.host(&String::from_utf8_lossy(&id)).await;
        }
        self.host(name_or_id).await
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>> {
        self.values("hosts", &self.hosts)
    }

    async fn insert_host(&self, host: &HostRecord) -> Result<()> {
        (&self.hosts, &self.host_names, &self.meta)
            .transaction(|(hosts, names, meta)| {
                if let Some(owner) = names.get(host.name.as_bytes())? {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                        format!(
                            "host name {:?} is taken by host {}: revoke that host first or pick another name with --name",
                            host.name,
                            String::from_utf8_lossy(&owner)
                        ),
                    )));
                }
                names.insert(host.name.as_bytes(), host.id.as_bytes())?;
                if hosts.insert(host.id.as_bytes(), encode(host))?.is_none() {
                    bump(meta, "hosts", 1)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush().await
    }

    async fn update_host(&self, id: &str, change: HostChange<'_>) -> Result<Option<HostRecord>> {
        let host = self.cas_host(id, change)?;
        if host.is_some() {
            self.flush().await?;
        }
        Ok(host)
    }

    async fn touch_host(&self, id: &str, last_seen_ms: i64, facts: Option<Facts>) -> Result<()> {
        self.cas_host(id, &|h| {
            h.last_seen_ms = h.last_seen_ms.max(last_seen_ms);
            if let Some(f) = &facts {
                h.facts = f.clone();
            }
            Ok(())
        })?;
        Ok(())
    }

    async fn revoke_host(&self, id: &str, now_ms: i64, by: &str) -> Result<Option<HostRecord>> {
        let Some(host) = self.cas_host(id, &|h| {
            if h.revoked_ms.is_some() {
                return Err(format!("host {} is already revoked", h.name));
            }
            h.revoked_ms = Some(now_ms);
            Ok(())
        })?
        else {
            return Ok(None);
        };
        let _ = self
            .host_names
            .compare_and_swap(
                host.name.as_bytes(),
                Some(host.id.as_bytes()),
                None::<&[u8]>,
            )
            .map_err(db_err)?;
        self.ban(&format!("agent/{}", host.id), now_ms, by)?;
        self.flush().await?;
        Ok(Some(host))
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.get("tokens", &self.tokens, id)
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        self.tokens
            .insert(token.id.as_bytes(), encode(token))
            .map_err(db_err)?;
        self.flush().await
    }

    async fn consume_token(&self, token: &TokenRecord, now_ms: i64) -> Result<()> {
        let mut used = token.clone();
        used.used_ms = Some(now_ms);
        let swapped = self
            .tokens
            .compare_and_swap(
                token.id.as_bytes(),
                Some(encode(token)),
                Some(encode(&used)),
            )
            .map_err(db_err)?;
        if swapped.is_err() {
            return Err(StoreError::Conflict("token already used".to_string()));
        }
        self.flush().await
    }

    async fn prune_tokens(&self, now_ms: i64, grace_ms: i64) -> Result<usize> {
        let mut pruned = 0;
        for entry in self.tokens.iter() {
            let (key, value) = entry.map_err(db_err)?;
            let token: TokenRecord = decode("tokens", &key, &value)?;
            if token.expires_ms + grace_ms < now_ms {
                self.tokens.remove(key).map_err(db_err)?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    async fn operators(&self) -> Result<Vec<OperatorRecord>> {
        self.values("operators", &self.operators)
    }

    async fn operator(&self, id: &str) -> Result<Option<OperatorRecord>> {
        self.get("operators", &self.operators, id)
    }

    async fn operator_by_name(&self, name: &str) -> Result<Option<OperatorRecord>> {
        Ok(self
            .operators()
            .await?
            .into_iter()
            .find(|o| o.name == name && o.status != OperatorStatus::Revoked))
    }

    async fn put_operator(&self, op: &OperatorRecord) -> Result<()> {
        (&self.operators, &self.meta)
            .transaction(|(ops, meta)| {
                if ops.insert(op.id.as_bytes(), encode(op))?.is_none() {
                    bump(meta, "operators", 1)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush().await
    }

    async fn revoke_operator(&self, op: &OperatorRecord, now_ms: i64, by: &str) -> Result<()> {
        let mut revoked = op.clone();
        revoked.status = OperatorStatus::Revoked;
        self.operators
            .insert(op.id.as_bytes(), encode(&revoked))
            .map_err(db_err)?;
        self.ban(&format!("operator/{}", op.id), now_ms, by)?;
        self.flush().await
    }

    async fn bans(&self) -> Result<Vec<BanRecord>> {
        self.values("bans", &self.bans)
    }

    async fn stack(&self, name: &str) -> Result<Option<StackRecord>> {
        self.get("stacks", &self.stacks, name)
    }

    async fn stacks(&self) -> Result<Vec<StackRecord>> {
        self.values("stacks", &self.stacks)
    }

    async fn put_stack(&self, stack: &StackRecord) -> Result<()> {
        (&self.stacks, &self.meta)
            .transaction(|(stacks, meta)| {
                if stacks
                    .insert(stack.name.as_bytes(), encode(stack))?
                    .is_none()
                {
                    bump(meta, "stacks", 1)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush().await
    }

    async fn remove_stack(&self, name: &str) -> Result<Option<StackRecord>> {
        let old = (&self.stacks, &self.meta)
            .transaction(|(stacks, meta)| {
                let old = stacks.remove(name.as_bytes())?;
                if old.is_some() {
                    bump(meta, "stacks", -1)?;
                }
                Ok(old)
            })
            .map_err(tx_err)?;
        self.flush().await?;
        old.map(|v| decode("stacks", name.as_bytes(), &v))
            .transpose()
    }

    async fn put_revision(&self, id: &str, encoded: &[u8]) -> Result<()> {
        (&self.revisions, &self.meta)
            .transaction(|(revisions, meta)| {
                if revisions.get(id.as_bytes())?.is_none() {
                    revisions.insert(id.as_bytes(), encoded)?;
                    bump(meta, "revisions", 1)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush().await
    }

    async fn revision(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.revisions.get(id).map_err(db_err)?.map(|v| v.to_vec()))
    }

    async fn generation(&self, host_id: &str) -> Result<u64> {
        Ok(read_u64(self.generations.get(host_id).map_err(db_err)?))
    }

    async fn put_states(&self, states: &[IssuedState]) -> Result<()> {
        let mut generations = sled::Batch::default();
        let mut encoded = sled::Batch::default();
        for s in states {
            generations.insert(s.host_id.as_bytes(), &s.generation.to_be_bytes());
            encoded.insert(s.host_id.as_bytes(), s.encoded.as_slice());
        }
        // Generations first: a crash between the two leaves a generation reserved, never reused.
        self.generations.apply_batch(generations).map_err(db_err)?;
        self.states.apply_batch(encoded).map_err(db_err)?;
        self.flush().await
    }

    async fn state(&self, host_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .states
            .get(host_id)
            .map_err(db_err)?
            .map(|v| v.to_vec()))
    }

    async fn put_rollout(&self, r: &RolloutRecord) -> Result<()> {
        self.rollouts
            .insert(Self::rollout_key(r).as_bytes(), encode(r))
            .map_err(db_err)?;
        self.flush().await
    }

    async fn rollouts_of(&self, stack: &str) -> Result<Vec<RolloutRecord>> {
        let mut out = self
            .rollouts
            .scan_prefix(format!("{stack}/").as_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(db_err)?;
                decode("rollouts", &k, &v)
            })
            .collect::<Result<Vec<RolloutRecord>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn latest_rollout(&self, stack: &str) -> Result<Option<RolloutRecord>> {
        // Keys are `<stack>/<start ms>/<id>`: the last under the prefix is the latest.
        self.rollouts
            .scan_prefix(format!("{stack}/").as_bytes())
            .next_back()
            .transpose()
            .map_err(db_err)?
            .map(|(k, v)| decode("rollouts", &k, &v))
            .transpose()
    }

    async fn backup(&self, id: &str) -> Result<Option<noco_proto::v1::BackupInfo>> {
        self.backups
            .get(id)
            .map_err(db_err)?
            .map(|v| decode_pb("backups", id.as_bytes(), &v))
            .transpose()
    }

    async fn backups(&self) -> Result<Vec<noco_proto::v1::BackupInfo>> {
        self.backups
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(db_err)?;
                decode_pb("backups", &k, &v)
            })
            .collect()
    }

    async fn change_backup(
        &self,
        id: &str,
        change: BackupChange<'_>,
    ) -> Result<Option<noco_proto::v1::BackupInfo>> {
        use prost::Message;
        let after = (&self.backups, &self.meta)
            .transaction(|(backups, meta)| {
                let old = backups.get(id.as_bytes())?;
                let before = old
                    .as_ref()
                    .map(|v| decode_pb("backups", id.as_bytes(), v))
                    .transpose()
                    .map_err(ConflictableTransactionError::Abort)?;
                let after = change(before.as_ref())
                    .map_err(|m| ConflictableTransactionError::Abort(StoreError::Refused(m)))?;
                match &after {
                    Some(b) => {
                        if backups.insert(id.as_bytes(), b.encode_to_vec())?.is_none() {
                            bump(meta, "backups", 1)?;
                        }
                    }
                    None => {
                        if backups.remove(id.as_bytes())?.is_some() {
                            bump(meta, "backups", -1)?;
                        }
                    }
                }
                Ok(after)
            })
            .map_err(tx_err)?;
        self.flush().await?;
        Ok(after)
    }

    async fn backup_job(&self, id: &str) -> Result<Option<noco_proto::v1::BackupJob>> {
        self.backup_jobs
            .get(id)
            .map_err(db_err)?
            .map(|v| decode_pb("backup_jobs", id.as_bytes(), &v))
            .transpose()
    }

    async fn backup_jobs(&self) -> Result<Vec<noco_proto::v1::BackupJob>> {
        self.backup_jobs
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(db_err)?;
                decode_pb("backup_jobs", &k, &v)
            })
            .collect()
    }

    async fn change_backup_job(
        &self,
        id: &str,
        change: JobChange<'_>,
    ) -> Result<Option<noco_proto::v1::BackupJob>> {
        use prost::Message;
        let after = self
            .backup_jobs
            .transaction(|jobs| {
                let before = jobs
                    .get(id.as_bytes())?
                    .map(|v| decode_pb("backup_jobs", id.as_bytes(), &v))
                    .transpose()
                    .map_err(ConflictableTransactionError::Abort)?;
                let after = change(before.as_ref())
                    .map_err(|m| ConflictableTransactionError::Abort(StoreError::Refused(m)))?;
                match &after {
                    Some(j) => {
                        jobs.insert(id.as_bytes(), j.encode_to_vec())?;
                    }
                    None => {
                        jobs.remove(id.as_bytes())?;
                    }
                }
                Ok(after)
            })
            .map_err(tx_err)?;
        self.flush().await?;
        Ok(after)
    }

    async fn put_order(&self, order: &PendingOrder) -> Result<()> {
        self.backup_orders
            .insert(order.job_id.as_bytes(), encode(order))
            .map_err(db_err)?;
        self.flush().await
    }

    async fn orders(&self) -> Result<Vec<PendingOrder>> {
        self.values("backup_orders", &self.backup_orders)
    }

    async fn remove_order(&self, job_id: &str) -> Result<()> {
        if self
            .backup_orders
            .remove(job_id.as_bytes())
            .map_err(db_err)?
            .is_some()
        {
            self.flush().await?;
        }
        Ok(())
    }

    async fn alerts(&self) -> Result<Vec<AlertRecord>> {
        self.values("alerts", &self.alerts)
    }

    async fn notify_log(&self) -> Result<Vec<NotifyLogRecord>> {
        self.values("alert_log", &self.alert_log)
    }

    async fn outbox(&self) -> Result<Vec<OutboxRecord>> {
        self.values("alert_outbox", &self.alert_outbox)
    }

    async fn silences(&self) -> Result<Vec<SilenceRecord>> {
        self.values("silences", &self.silences)
    }

    async fn change_alerts(&self, c: &AlertChanges) -> Result<()> {
        if c.is_empty() {
            return Ok(());
        }
        (
            &self.alerts,
            &self.alert_log,
            &self.alert_outbox,
            &self.silences,
            &self.meta,
        )
            .transaction(|(alerts, log, outbox, silences, meta)| {
                /// Insert or remove in a counted tree, keeping its count.
                fn put(
                    tree: &TransactionalTree,
                    meta: &TransactionalTree,
                    name: &str,
                    key: &[u8],
                    value: Option<Vec<u8>>,
                ) -> TxResult<()> {
                    match value {
                        Some(v) => {
                            if tree.insert(key, v)?.is_none() {
                                bump(meta, name, 1)?;
                            }
                        }
                        None => {
                            if tree.remove(key)?.is_some() {
                                bump(meta, name, -1)?;
                            }
                        }
                    }
                    Ok(())
                }
                for a in &c.put_alerts {
                    put(
                        alerts,
                        meta,
                        "alerts",
                        a.fingerprint.as_bytes(),
                        Some(encode(a)),
                    )?;
                }
                for fp in &c.remove_alerts {
                    put(alerts, meta, "alerts", fp.as_bytes(), None)?;
                }
                for l in &c.put_log {
                    let key = Self::log_key(&l.receiver, &l.group_key);
                    put(log, meta, "alert_log", &key, Some(encode(l)))?;
                }
                for (receiver, group) in &c.remove_log {
                    put(
                        log,
                        meta,
                        "alert_log",
                        &Self::log_key(receiver, group),
                        None,
                    )?;
                }
                for o in &c.put_outbox {
                    put(
                        outbox,
                        meta,
                        "alert_outbox",
                        o.id().as_bytes(),
                        Some(encode(o)),
                    )?;
                }
                for id in &c.remove_outbox {
                    put(outbox, meta, "alert_outbox", id.as_bytes(), None)?;
                }
                for s in &c.put_silences {
                    put(silences, meta, "silences", s.id.as_bytes(), Some(encode(s)))?;
                }
                for id in &c.remove_silences {
                    put(silences, meta, "silences", id.as_bytes(), None)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush().await
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let seq = self.db.generate_id().map_err(db_err)?;
        let mut key = Vec::with_capacity(16);
        key.extend_from_slice(&(record.time_ms.max(0) as u64).to_be_bytes());
        key.extend_from_slice(&seq.to_be_bytes());
        self.audit.insert(key, encode(record)).map_err(db_err)?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<AuditRecord>> {
        // Keys are time-ordered: newest first, stop at the first record older than `since`.
        let mut records = Vec::new();
        for kv in self.audit.iter().rev() {
            if records.len() >= limit {
                break;
            }
            let (k, v) = kv.map_err(db_err)?;
            let record: AuditRecord = decode("audit", &k, &v)?;
            if record.time_ms < filter.since_ms {
                break;
            }
            if filter.matches(&record) {
                records.push(record);
            }
        }
        records.reverse();
        Ok(records)
    }

    /// sled 0.34's `flush_async` deadlocks when two calls overlap (sled issues #1241, #1308), so
    /// this runs the blocking `flush` on the blocking thread pool instead; concurrent callers
    /// are safe.
    async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(result) => {
                result.map_err(db_err)?;
                Ok(())
            }
            Err(e) => Err(StoreError::Db(format!("the flush task failed: {e}"))),
        }
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
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

    fn token(id: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            kind: TokenKind::Join {
                labels: BTreeMap::new(),
            },
            secret_hash: "x".into(),
            created_ms: 0,
            expires_ms: 10,
            created_by: "test".into(),
            description: String::new(),
            used_ms: None,
        }
    }

    fn operator(id: &str) -> OperatorRecord {
        OperatorRecord {
            id: id.into(),
            name: format!("op-{id}"),
            role: noco_certs::Role::Admin,
            status: OperatorStatus::Active,
            created_ms: 1,
        }
    }

    async fn fresh() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::create(&dir.path().join("db")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_host_name_is_unique_until_its_host_is_revoked() {
        let (_dir, store) = fresh().await;
        store.insert_host(&host("h1", "web-1")).await.unwrap();
        let err = store.insert_host(&host("h2", "web-1")).await.unwrap_err();
        assert!(err.to_string().contains("taken by host h1"), "{err}");
        store.revoke_host("h1", 5, "test").await.unwrap().unwrap();
        store.insert_host(&host("h2", "web-1")).await.unwrap();
        assert_eq!(store.find_host("web-1").await.unwrap().unwrap().id, "h2");
        assert_eq!(store.bans().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_token_is_consumed_once() {
        let (_dir, store) = fresh().await;
        let t = token("t1");
        store.insert_token(&t).await.unwrap();
        store.consume_token(&t, 3).await.unwrap();
        assert!(store.consume_token(&t, 4).await.is_err());
        assert_eq!(store.token("t1").await.unwrap().unwrap().used_ms, Some(3));
        assert_eq!(store.prune_tokens(100, 10).await.unwrap(), 1);
    }

    /// Regression: a session's last-seen write (read, change, write back) could overwrite a
    /// label change made in between. Both now go through compare-and-swap.
    #[tokio::test]
    async fn concurrent_host_changes_lose_nothing() {
        let (_dir, store) = fresh().await;
        store.insert_host(&host("h1", "web-1")).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32 {
            let store = store.clone();
            tasks.spawn(async move {
                let key = format!("k{i}");
                store
                    .update_host("h1", &move |h| {
                        h.labels.insert(key.clone(), "v".into());
                        Ok(())
                    })
                    .await
                    .unwrap();
                store.touch_host("h1", 100 + i, None).await.unwrap();
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let h = store.host("h1").await.unwrap().unwrap();
        assert_eq!(h.labels.len(), 32, "{:?}", h.labels);
        assert_eq!(h.last_seen_ms, 131);
    }

    /// Regression: concurrent flushes deadlocked the server with sled's `flush_async`. The
    /// writes run on their own thread and runtime, because a deadlock there blocks the runtime's
    /// threads: the test waits from outside and fails instead of hanging.
    #[test]
    fn concurrent_writes_that_flush_do_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let result = rt.block_on(async move {
                let store = SledStore::create(&path).await.map_err(|e| e.to_string())?;
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..64 {
                    let store = store.clone();
                    tasks.spawn(async move {
                        for round in 0..20 {
                            store.insert_token(&token(&format!("t{i}-{round}"))).await?;
                        }
                        Ok::<(), StoreError>(())
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                }
                store
                    .prune_tokens(1_000, 0)
                    .await
                    .map_err(|e| e.to_string())
            });
            let _ = done.send(result);
        });
        let outcome = finished.recv_timeout(std::time::Duration::from_secs(30));
        assert!(
            matches!(outcome, Ok(Ok(1280))),
            "64 × 20 concurrent flushing writes did not finish within 30 s: {outcome:?}"
        );
    }

    #[tokio::test]
    async fn audit_returns_the_newest_records_in_order() {
        let (_dir, store) = fresh().await;
        for i in 0..5 {
            store
                .append_audit(&AuditRecord {
                    time_ms: i,
                    caller: "c".into(),
                    caller_name: format!("c{}", i % 2),
                    action: format!("a{i}"),
                    result: "ok".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let actions: Vec<_> = store
            .audit(&AuditFilter::default(), 3)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(actions, ["a2", "a3", "a4"]);
        let filter = AuditFilter {
            since_ms: 1,
            caller: "c1".into(),
            ..Default::default()
        };
        let actions: Vec<_> = store
            .audit(&filter, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(actions, ["a1", "a3"]);
    }

    #[tokio::test]
    async fn a_healthy_database_reopens_with_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SledStore::create(&path).await.unwrap();
            store.insert_host(&host("h1", "web-1")).await.unwrap();
            store.put_operator(&operator("o1")).await.unwrap();
            store.put_operator(&operator("o1")).await.unwrap();
        }
        let store = SledStore::open(&path).await.unwrap();
        let census = store.check().unwrap();
        assert_eq!(census.counts["hosts"], 1);
        assert_eq!(census.counts["operators"], 1);
        assert!(SledStore::create(&path).await.is_err(), "create over data");
    }

    /// Regression (issue 8): with sled's snapshot files removed the server served an empty
    /// database — no hosts, no operators, no stacks — without a word.
    #[tokio::test]
    async fn a_database_whose_files_were_damaged_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SledStore::create(&path).await.unwrap();
            store.insert_host(&host("h1", "web-1")).await.unwrap();
            store.put_operator(&operator("o1")).await.unwrap();
            store.flush().await.unwrap();
        }
        let mut removed = 0;
        for entry in std::fs::read_dir(&path).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("snap.") || name == "db" {
                std::fs::remove_file(&p).unwrap();
                removed += 1;
            }
        }
        assert!(
            removed > 0,
            "sled wrote no snapshot or db file under {path:?}"
        );
        let err = SledStore::open(&path).await.unwrap_err();
        assert!(matches!(err, StoreError::Damaged(_)), "{err}");
    }

    /// A store closed a moment ago may still hold the database's lock (sled's flusher lets go
    /// of it after): opening waits for it rather than failing "could not acquire lock".
    #[tokio::test(flavor = "multi_thread")]
    async fn opening_waits_for_a_lock_let_go_a_moment_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = SledStore::create(&path).await.unwrap();
        let holder = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            drop(first);
        });
        let second = SledStore::open(&path).await;
        holder.await.unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }

    #[tokio::test]
    async fn a_database_that_lost_records_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SledStore::create(&path).await.unwrap();
            store.insert_host(&host("h1", "web-1")).await.unwrap();
            store.insert_host(&host("h2", "web-2")).await.unwrap();
            // Lost behind the store's back: the recorded count says 2.
            store.hosts.remove("h2").unwrap();
            store.flush().await.unwrap();
        }
        let err = SledStore::open(&path).await.unwrap_err().to_string();
        assert!(err.contains("hosts: 1 records, 2 recorded"), "{err}");
    }

    #[tokio::test]
    async fn a_corrupt_record_refuses_to_open_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SledStore::create(&path).await.unwrap();
            store.insert_host(&host("h1", "web-1")).await.unwrap();
            store.hosts.insert("h1", b"{not json".as_slice()).unwrap();
            store.flush().await.unwrap();
        }
        let err = SledStore::open(&path).await.unwrap_err().to_string();
        assert!(err.contains("corrupt record in hosts (h1)"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_database_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let err = SledStore::open(&dir.path().join("db")).await.unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
    }
}
