//! The backups of a running agent: its scheduler, its order taker, its uploader and the progress
//! forwarder, started with the agent and stopped with it.

use std::sync::Arc;
use std::time::Duration;

use noco_certs::dial::ServerAddr;
use noco_proto::v1::{self as pb, DesiredState};
use tokio::sync::{mpsc, watch};

use super::ctx::Ctx;
use super::spool::Layout;
use crate::config::BackupConfig;
use crate::datadir::DataDir;
use crate::locks::StackLocks;
use crate::renewal::LiveCredential;

/// The running backup tasks; dropping it stops them.
pub struct Backups {
    /// Verified orders from the session.
    pub orders: mpsc::Sender<pb::Order>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Backups {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the backups need from the agent.
pub struct Setup<'a> {
    pub dir: &'a DataDir,
    pub config: &'a BackupConfig,
    pub host_id: String,
    pub project_prefix: String,
    pub locks: StackLocks,
    pub desired: watch::Receiver<Option<Arc<DesiredState>>>,
    pub wait_timeout: Duration,
    pub addr: ServerAddr,
    pub live: LiveCredential,
}

pub fn spawn(setup: Setup<'_>) -> anyhow::Result<Backups> {
    let layout = Layout::new(&setup.dir.root, setup.config.spool_size)
        .map_err(|e| anyhow::anyhow!("backups: {e}"))?;
    if let Some(identity) = &setup.config.identity
        && !identity.is_file()
    {
        anyhow::bail!(
            "[backup] identity {}: no such file (it is needed to restore encrypted backups)",
            identity.display()
        );
    }
    let (progress_tx, progress_rx) = mpsc::channel(64);
    let ctx = Arc::new(Ctx::new(
        layout,
        setup.host_id,
        setup.dir.clone(),
        setup.project_prefix,
        setup.locks,
        setup.desired,
        setup.config.identity.clone(),
        setup.wait_timeout,
        progress_tx,
    ));
    let client = super::upload::client(&setup.addr, &setup.live);
    let (orders_tx, orders_rx) = mpsc::channel(64);
    let tasks = vec![
        tokio::spawn(super::schedule::run(ctx.clone())),
        tokio::spawn(super::orders::run(ctx.clone(), client.clone(), orders_rx)),
        tokio::spawn(super::upload::run(ctx.clone(), client.clone())),
        tokio::spawn(super::upload::forward_progress(client, progress_rx)),
    ];
    Ok(Backups {
        orders: orders_tx,
        tasks,
    })
}
