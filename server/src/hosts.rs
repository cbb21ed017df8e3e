//! Hosts as operators change them: labels (which re-assign stacks) and revocation (which cuts
//! the host off at once). A relabel is checked against the size rule under the catalog lock,
//! like a stack apply, so no host is labelled into a state it could never receive.

use std::collections::BTreeMap;
use std::sync::Arc;

use noco_certs::Identity;

use crate::bans::BanSet;
use crate::clock::Clock;
use crate::error::{Doing, Error, Result};
use crate::names;
use crate::registry::Registry;
use crate::stacks::Stacks;
use crate::store::{HostRecord, Store};

#[derive(Debug)]
pub struct Hosts {
    store: Arc<dyn Store>,
    stacks: Arc<Stacks>,
    registry: Arc<Registry>,
    bans: Arc<BanSet>,
    clock: Arc<dyn Clock>,
}

impl Hosts {
    pub fn new(
        store: Arc<dyn Store>,
        stacks: Arc<Stacks>,
        registry: Arc<Registry>,
        bans: Arc<BanSet>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Hosts {
            store,
            stacks,
            registry,
            bans,
            clock,
        }
    }

    /// A host by name (not revoked) or id.
    pub async fn find(&self, name_or_id: &str) -> Result<HostRecord> {
        if let Some(h) = self
            .store
            .find_host(name_or_id)
            .await
            .doing("reading hosts")?
        {
            return Ok(h);
        }
        let hosts = self.store.hosts().await.doing("reading hosts")?;
        Err(crate::error::not_found(
            "host",
            name_or_id,
            hosts
                .iter()
                .filter(|h| !h.is_revoked())
                .map(|h| h.name.as_str()),
        ))
    }

    pub async fn list(&self) -> Result<Vec<HostRecord>> {
        let mut hosts = self.store.hosts().await.doing("reading hosts")?;
        hosts.sort_by(|a, b| a.name.cmp(&b.name).then(a.enrolled_ms.cmp(&b.enrolled_ms)));
        Ok(hosts)
    }

    /// Set and remove labels; the host's desired state follows at once.
    pub async fn label(
        &self,
        name_or_id: &str,
        set: BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<HostRecord> {
        for key in remove {
            names::check_label_key(key)?;
        }
        names::check_labels(&set)?;
        let catalog = self.stacks.lock().await;
        let host = self.find(name_or_id).await?;
        if host.is_revoked() {
            return Err(Error::Precondition(format!(
                "host {} has been revoked",
                host.name
            )));
        }
        let relabel = |h: &mut HostRecord| -> std::result::Result<(), String> {
            for key in remove {
                h.labels.remove(key);
            }
            h.labels.extend(set.clone());
            names::check_labels(&h.labels).map_err(|e| e.to_string())
        };
        let mut preview = host.clone();
        relabel(&mut preview).map_err(Error::Invalid)?;
        let stacks = self.store.stacks().await.doing("reading stacks")?;
        self.stacks.check_fits(&stacks, &[preview]).await?;
        let host = self
            .store
            .update_host(&host.id, &relabel)
            .await
            .doing("storing host")?
            .ok_or_else(|| Error::NotFound(format!("host {} vanished", host.name)))?;
        // New labels may give or take stacks: re-issue this host's state now.
        let id = host.id.clone();
        self.stacks.desired().update(|h| h.id == id).await?;
        drop(catalog);
        Ok(host)
    }

    /// Revoke a host: refused at once (in memory first), its live session cut, then recorded.
    pub async fn revoke(&self, name_or_id: &str, by: &str) -> Result<HostRecord> {
        let host = self.find(name_or_id).await?;
        if host.is_revoked() {
            return Err(Error::Precondition(format!(
                "host {} is already revoked",
                host.name
            )));
        }
        let identity = Identity::Agent {
            host_id: host.id.clone(),
        };
        // Ban in memory first: from here on, no new handshake or call of this host succeeds.
        self.bans.add(&identity);
        self.registry
            .cut(&host.id, crate::session::revoked(&host.name));
        self.store
            .revoke_host(&host.id, self.clock.now_ms(), by)
            .await
            .doing("storing revocation")?
            .ok_or_else(|| Error::NotFound(format!("host {} vanished", host.name)))
    }
}
