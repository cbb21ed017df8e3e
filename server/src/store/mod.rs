//! The server's persistent state behind one narrow interface, [`Store`]: hosts, tokens,
//! operators, bans, stacks and their revisions, issued desired states, rollouts, the backup
//! catalog (backups, jobs, pending orders), alerts (active alerts, the notification log, the
//! outbox, silences) and the audit log. The domain modules know only this trait; sled ([`sled_store::SledStore`]) is the embedded
//! default, and another backend (PostgreSQL, etcd) implements the same trait.
//!
//! Contract of every backend:
//! - a write method returns once what it wrote is durable, except [`Store::touch_host`] and
//!   [`Store::append_audit`], which may lag a moment (last-seen times, audit lines);
//! - [`Store::insert_host`], [`Store::update_host`], [`Store::consume_token`],
//!   [`Store::change_backup`] and [`Store::change_backup_job`] are atomic (compare-and-swap): of
//!   two concurrent callers neither loses the other's write;
//! - the store knows what it holds (a format version and record counts) and refuses to open
//!   damaged: it never reads as empty what held data.

pub mod records;
pub mod sled_store;

pub use records::*;

/// Why the store failed. Its text is for the server's log, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("corrupt record in {tree} ({key}): {err}")]
    Corrupt {
        tree: &'static str,
        key: String,
        err: String,
    },
    /// A compare-and-swap lost, or a uniqueness rule refused the write: the message is for
    /// clients (it names only what the caller gave).
    #[error("{0}")]
    Conflict(String),
    /// The change function refused the record: the message is for clients.
    #[error("{0}")]
    Refused(String),
    /// The database does not hold what it recorded holding.
    #[error("{0}")]
    Damaged(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A change to a host record, applied atomically; may refuse with a message for the caller.
pub type HostChange<'a> =
    &'a (dyn Fn(&mut HostRecord) -> std::result::Result<(), String> + Send + Sync);

/// A change to a backup record (or a job), applied atomically: given the record as stored
/// (`None`: there is none), the record to store (`None`: none, deleting it). May run more than
/// once on a lost race, and may refuse with a message for the caller.
pub type BackupChange<'a> = &'a (
        dyn Fn(
    Option<&noco_proto::v1::BackupInfo>,
) -> std::result::Result<Option<noco_proto::v1::BackupInfo>, String>
            + Send
            + Sync
    );
pub type JobChange<'a> = &'a (
        dyn Fn(
    Option<&noco_proto::v1::BackupJob>,
) -> std::result::Result<Option<noco_proto::v1::BackupJob>, String>
            + Send
            + Sync
    );

#[tonic::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // ---------------------------------------------------------------- hosts
    async fn host(&self, id: &str) -> Result<Option<HostRecord>>;
    /// A host by id, or by the name of a host that is not revoked.
    async fn find_host(&self, name_or_id: &str) -> Result<Option<HostRecord>>;
    async fn hosts(&self) -> Result<Vec<HostRecord>>;
    /// Add a newly enrolled host; its name must not belong to another host that is not revoked
    /// ([`StoreError::Conflict`] otherwise).
    async fn insert_host(&self, host: &HostRecord) -> Result<()>;
    /// Change a host record atomically: `change` may run more than once (on a lost race) and
    /// may refuse. Returns the new record, or `None` when there is no such host.
    async fn update_host(&self, id: &str, change: HostChange<'_>) -> Result<Option<HostRecord>>;
    /// Record when a host was last heard from (and its facts); durable within a moment.
    async fn touch_host(&self, id: &str, last_seen_ms: i64, facts: Option<Facts>) -> Result<()>;
    /// Mark a host revoked, ban its identity and free its name. Returns the revoked record.
    async fn revoke_host(&self, id: &str, now_ms: i64, by: &str) -> Result<Option<HostRecord>>;

    // ---------------------------------------------------------------- tokens
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>>;
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    /// Mark a token used, atomically: of two concurrent uses exactly one succeeds.
    async fn consume_token(&self, token: &TokenRecord, now_ms: i64) -> Result<()>;
    /// Delete tokens that expired more than `grace_ms` ago; returns how many.
    async fn prune_tokens(&self, now_ms: i64, grace_ms: i64) -> Result<usize>;

    // ---------------------------------------------------------------- operators and bans
    async fn operators(&self) -> Result<Vec<OperatorRecord>>;
    async fn operator(&self, id: &str) -> Result<Option<OperatorRecord>>;
    /// The operator with this name that is not revoked.
    async fn operator_by_name(&self, name: &str) -> Result<Option<OperatorRecord>>;
    async fn put_operator(&self, op: &OperatorRecord) -> Result<()>;
    /// Mark an operator revoked and ban its identity.
    async fn revoke_operator(&self, op: &OperatorRecord, now_ms: i64, by: &str) -> Result<()>;
    async fn bans(&self) -> Result<Vec<BanRecord>>;

    // ---------------------------------------------------------------- stacks
    async fn stack(&self, name: &str) -> Result<Option<StackRecord>>;
    async fn stacks(&self) -> Result<Vec<StackRecord>>;
    async fn put_stack(&self, stack: &StackRecord) -> Result<()>;
    async fn remove_stack(&self, name: &str) -> Result<Option<StackRecord>>;
    /// Store a revision's content (prost-encoded `StackState`) unless it is there already.
    async fn put_revision(&self, id: &str, encoded: &[u8]) -> Result<()>;
    async fn revision(&self, id: &str) -> Result<Option<Vec<u8>>>;

    // ---------------------------------------------------------------- desired state
    /// The last generation issued to a host (0: none); never decreases.
    async fn generation(&self, host_id: &str) -> Result<u64>;
    /// Record the new states of many hosts at once (one disk sync for all).
    async fn put_states(&self, states: &[IssuedState]) -> Result<()>;
    /// The last encoded `SignedState` issued to a host.
    async fn state(&self, host_id: &str) -> Result<Option<Vec<u8>>>;

    // ---------------------------------------------------------------- rollouts
    async fn put_rollout(&self, r: &RolloutRecord) -> Result<()>;
    /// A stack's rollouts, newest first.
    async fn rollouts_of(&self, stack: &str) -> Result<Vec<RolloutRecord>>;
    /// A stack's latest rollout (reads that one record, however long the history).
    async fn latest_rollout(&self, stack: &str) -> Result<Option<RolloutRecord>>;

    // ---------------------------------------------------------------- backups
    async fn backup(&self, id: &str) -> Result<Option<noco_proto::v1::BackupInfo>>;
    /// Every backup in the catalog (in id order).
    async fn backups(&self) -> Result<Vec<noco_proto::v1::BackupInfo>>;
    /// Create, change or delete a backup record atomically; returns what is stored after.
    async fn change_backup(
        &self,
        id: &str,
        change: BackupChange<'_>,
    ) -> Result<Option<noco_proto::v1::BackupInfo>>;
    async fn backup_job(&self, id: &str) -> Result<Option<noco_proto::v1::BackupJob>>;
    async fn backup_jobs(&self) -> Result<Vec<noco_proto::v1::BackupJob>>;
    /// Create, change or delete a job atomically; returns what is stored after.
    async fn change_backup_job(
        &self,
        id: &str,
        change: JobChange<'_>,
    ) -> Result<Option<noco_proto::v1::BackupJob>>;
    /// Store (or replace) an order waiting for its host.
    async fn put_order(&self, order: &PendingOrder) -> Result<()>;
    async fn orders(&self) -> Result<Vec<PendingOrder>>;
    async fn remove_order(&self, job_id: &str) -> Result<()>;

    // ---------------------------------------------------------------- alerts
    /// Every alert held (firing, or resolved and not yet told to every receiver).
    async fn alerts(&self) -> Result<Vec<AlertRecord>>;
    /// The notification log: per (receiver, group), what the receiver was last told.
    async fn notify_log(&self) -> Result<Vec<NotifyLogRecord>>;
    /// Notifications waiting for delivery, per receiver in the order they were queued.
    async fn outbox(&self) -> Result<Vec<OutboxRecord>>;
    async fn silences(&self) -> Result<Vec<SilenceRecord>>;
    /// Write alerts, log entries, outbox entries and silences in one transaction.
    async fn change_alerts(&self, changes: &AlertChanges) -> Result<()>;

    // ---------------------------------------------------------------- audit
    async fn append_audit(&self, record: &AuditRecord) -> Result<()>;
    /// The newest `limit` audit records that match `filter`, oldest first.
    async fn audit(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Make everything written so far durable.
    async fn flush(&self) -> Result<()>;

    /// Bytes the store takes on disk, if the backend knows (blocking: it may read a directory;
    /// call it off the runtime's workers).
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
}
