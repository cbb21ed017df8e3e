//! `Top` and `GetHost`: hosts with their presence and latest metrics, and one host in full.
//! Queries over the components, like [`crate::status`].

use std::collections::HashSet;

use noco_proto::v1 as pb;

use super::metrics::MetricsStore;
use crate::core::Core;
use crate::desired;
use crate::error::{Doing, Error, Result};
use crate::hosts::Hosts;
use crate::registry::Online;
use crate::store::HostRecord;
use crate::wire;

/// The hosts named (names or ids, in the order given, each once); an unknown one is NotFound
/// with the nearest name. `None` when none are named.
pub async fn resolve_hosts(hosts: &Hosts, names: &[String]) -> Result<Option<Vec<HostRecord>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in names {
        let host = hosts.find(name).await?;
        if seen.insert(host.id.clone()) {
            out.push(host);
        }
    }
    Ok(Some(out))
}

/// Which containers a [`pb::HostTop`] lists.
#[derive(Debug, Clone, Copy)]
pub enum Containers<'a> {
    None,
    All,
    OfStack(&'a str),
}

/// A host's presence and latest metrics.
pub fn host_top(
    host: &HostRecord,
    online: Option<Online>,
    metrics: &MetricsStore,
    containers: Containers<'_>,
) -> pb::HostTop {
    let mut top = pb::HostTop {
        host_id: host.id.clone(),
        host: host.name.clone(),
        status: wire::presence(host, online).into(),
        ..Default::default()
    };
    if let Some(latest) = metrics.latest(&host.id) {
        top.metrics = latest.sample.host.clone();
        top.sampled_unix_ms = latest.sample.time_unix_ms;
        top.net_rx_rate = latest.net_rx_rate;
        top.net_tx_rate = latest.net_tx_rate;
        top.containers = match containers {
            Containers::None => Vec::new(),
            Containers::All => latest.sample.containers.clone(),
            Containers::OfStack(stack) => latest
                .sample
                .containers
                .iter()
                .filter(|c| c.stack == stack)
                .cloned()
                .collect(),
        };
    }
    top
}

/// `Top`: the hosts named (else every host not revoked, by name), with their containers when
/// asked (`containers`, or those of `stack`).
pub async fn top(core: &Core, req: &pb::TopRequest) -> Result<pb::TopResponse> {
    if !req.stack.is_empty() {
        let stacks = core.store.stacks().await.doing("reading stacks")?;
        if !stacks.iter().any(|s| s.name == req.stack) {
            return Err(crate::error::not_found(
                "stack",
                &req.stack,
                stacks.iter().map(|s| s.name.as_str()),
            ));
        }
    }
    let records = match resolve_hosts(&core.hosts, &req.hosts).await? {
        Some(named) => named,
        None => core
            .hosts
            .list()
            .await?
            .into_iter()
            .filter(|h| !h.is_revoked())
            .collect(),
    };
    let containers = if !req.stack.is_empty() {
        Containers::OfStack(&req.stack)
    } else if req.containers {
        Containers::All
    } else {
        Containers::None
    };
    let hosts = records
        .iter()
        .map(|h| host_top(h, core.registry.online(&h.id), &core.metrics, containers))
        .collect();
    Ok(pb::TopResponse { hosts })
}

/// `GetHost`: the host as `ListHosts` shows it, its stacks (assigned, with what it reports of
/// each; then those it reports but is no longer assigned), its latest metrics with every
/// container, and the history when asked.
pub async fn get_host(core: &Core, req: &pb::GetHostRequest) -> Result<pb::GetHostResponse> {
    if req.host.is_empty() {
        return Err(Error::Invalid("name a host (its name or id)".into()));
    }
    let host = core.hosts.find(&req.host).await?;
    let online = core.registry.online(&host.id);
    let assigned = if host.is_revoked() {
        Vec::new()
    } else {
        let stacks = core.store.stacks().await.doing("reading stacks")?;
        let pins = desired::pins(&*core.store, &stacks).await?;
        desired::assignment(&stacks, &host, &pins)
    };
    let mut reported = core
        .reports
        .latest(&host.id)
        .map(|(r, _)| r.stacks)
        .unwrap_or_default();
    let mut stacks = Vec::with_capacity(assigned.len());
    for (name, revision) in assigned {
        match reported.iter().position(|s| s.name == name) {
            Some(i) => stacks.push(reported.remove(i)),
            None => stacks.push(pb::StackReport {
                name,
                revision,
                ..Default::default()
            }),
        }
    }
    stacks.extend(reported);
    Ok(pb::GetHostResponse {
        host: Some(wire::host_to_wire(&host, online)),
        stacks,
        latest: Some(host_top(&host, online, &core.metrics, Containers::All)),
        history: if req.history {
            core.metrics.history(&host.id)
        } else {
            Vec::new()
        },
        container_history: if req.history {
            core.metrics.container_history(&host.id)
        } else {
            Vec::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn host_top_lists_containers_as_asked() {
        let metrics = MetricsStore::new(Duration::from_secs(60));
        let host = HostRecord {
            id: "h1".into(),
            name: "one".into(),
            labels: Default::default(),
            facts: Default::default(),
            enrolled_ms: 0,
            last_seen_ms: 0,
            cert_not_after_ms: 0,
            revoked_ms: None,
        };
        let top = host_top(&host, None, &metrics, Containers::All);
        assert!(top.metrics.is_none(), "never sampled");
        assert_eq!(top.status, pb::Presence::Offline as i32);
        let container = |stack: &str| pb::ContainerMetrics {
            stack: stack.into(),
            ..Default::default()
        };
        metrics.record(
            "h1",
            pb::MetricsSample {
                time_unix_ms: 5,
                host: Some(pb::HostMetrics::default()),
                containers: vec![container("shop"), container("blog")],
                collect_ms: 0,
            },
        );
        let online = Some(Online {
            connected_ms: 1,
            last_seen_ms: 2,
        });
        let top = host_top(&host, online, &metrics, Containers::OfStack("shop"));
        assert_eq!(top.status, pb::Presence::Online as i32);
        assert_eq!(top.sampled_unix_ms, 5);
        assert_eq!(top.containers.len(), 1);
        assert!(
            host_top(&host, online, &metrics, Containers::None)
                .containers
                .is_empty()
        );
        assert_eq!(
            host_top(&host, online, &metrics, Containers::All)
                .containers
                .len(),
            2
        );
    }
}
