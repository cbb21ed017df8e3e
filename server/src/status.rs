//! Hosts × stacks, for `nococtl status`: what the server wants each host to run and what each
//! agent reports.

use noco_proto::v1 as pb;

use crate::desired::{self, Desired};
use crate::error::{Doing, Result};
use crate::registry::Registry;
use crate::reports::Reports;
use crate::store::Store;

pub async fn status(
    store: &dyn Store,
    desired: &Desired,
    reports: &Reports,
    registry: &Registry,
    stack: &str,
) -> Result<pb::StatusResponse> {
    let stacks = store.stacks().await.doing("reading stacks")?;
    if !stack.is_empty() && !stacks.iter().any(|s| s.name == stack) {
        return Err(crate::error::not_found(
            "stack",
            stack,
            stacks.iter().map(|s| s.name.as_str()),
        ));
    }
    let pins = desired::pins(store, &stacks).await?;
    let mut records = store.hosts().await.doing("reading hosts")?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hosts = Vec::new();
    for host in records.iter().filter(|h| !h.is_revoked()) {
        let assigned = desired::assignment(&stacks, host, &pins);
        if !stack.is_empty() && !assigned.iter().any(|(n, _)| n == stack) {
            continue;
        }
        let (report, at) = reports.latest(&host.id).unwrap_or_default();
        let online = registry.online(&host.id).is_some();
        hosts.push(pb::HostStatus {
            host: host.name.clone(),
            host_id: host.id.clone(),
            status: if online {
                pb::Presence::Online
            } else {
                pb::Presence::Offline
            }
            .into(),
            desired_generation: desired.generation(&host.id).await?,
            applied_generation: report.generation,
            stale: report.stale,
            refused: report.refused.clone(),
            assigned: assigned
                .into_iter()
                .filter(|(n, _)| stack.is_empty() || n == stack)
                .map(|(name, revision)| pb::AssignedStack { name, revision })
                .collect(),
            reported: report
                .stacks
                .into_iter()
                .filter(|s| stack.is_empty() || s.name == stack)
                .collect(),
            reported_unix_ms: at,
        });
    }
    Ok(pb::StatusResponse { hosts })
}
