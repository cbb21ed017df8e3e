//! Orders from the server (already verified by the session against the trust root): each is done
//! once — its id is kept on disk until it expires, so an order sent again after a reconnect or a
//! server restart is not done twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use noco_proto::v1::{self as pb, order::What};
use pb::backups_client::BackupsClient;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::ctx::{Ctx, now_ms};
use super::spool::write_atomic;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Done {
    /// Order id → when it expires (unix ms).
    orders: BTreeMap<String, i64>,
}

fn load(ctx: &Ctx) -> Done {
    std::fs::read(ctx.layout.orders_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(ctx: &Ctx, done: &Done) -> Result<(), String> {
    let bytes = serde_json::to_vec(done).map_err(|e| e.to_string())?;
    write_atomic(&ctx.layout.orders_file(), &bytes)
}

/// Take orders until the channel closes.
pub async fn run(
    ctx: Arc<Ctx>,
    client: BackupsClient<Channel>,
    mut orders: mpsc::Receiver<pb::Order>,
) {
    let mut done = load(&ctx);
    while let Some(order) = orders.recv().await {
        let now = now_ms();
        done.orders.retain(|_, expires| *expires > now);
        if done.orders.contains_key(&order.id) {
            tracing::info!("order {} was done already; ignored", order.id);
            continue;
        }
        done.orders.insert(order.id.clone(), order.expires_unix_ms);
        if let Err(e) = save(&ctx, &done) {
            tracing::error!("backups: recording order {}: {e}", order.id);
        }
        let ctx = ctx.clone();
        let client = client.clone();
        tokio::spawn(async move {
            match order.what.clone() {
                Some(What::RunBackup(run)) => {
                    tracing::info!("order {}: back up {}/{}", order.id, run.stack, run.name);
                    super::make::for_order(&ctx, &order, &run).await;
                }
                Some(What::Restore(r)) => match r.backup {
                    Some(info) => {
                        tracing::info!("order {}: restore {}", order.id, info.id);
                        super::restore::restore(ctx, client, order, info).await;
                    }
                    None => refuse(&ctx, &order, pb::BackupJobKind::Restore),
                },
                Some(What::Verify(r)) => match r.backup {
                    Some(info) => {
                        tracing::info!("order {}: verify {}", order.id, info.id);
                        super::restore::verify(ctx, client, order, info).await;
                    }
                    None => refuse(&ctx, &order, pb::BackupJobKind::Verify),
                },
                None => refuse(&ctx, &order, pb::BackupJobKind::Unspecified),
            }
        });
    }
}

fn refuse(ctx: &Ctx, order: &pb::Order, kind: pb::BackupJobKind) {
    tracing::error!("order {}: nothing this agent knows how to do", order.id);
    let job = super::ctx::Job::new(&order.id, kind, &ctx.host_id);
    job.finish(
        ctx,
        &Err("the order names nothing this agent knows how to do (an older agent?)".to_owned()),
    );
}
