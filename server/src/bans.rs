//! The ban list in memory: consulted at every TLS handshake and on every call. The store holds
//! the durable copy; [`BanSet::load`] reads it at start.

use std::collections::HashSet;
use std::sync::RwLock;

use noco_certs::Identity;
use noco_certs::tls::BanList;

use crate::store::{Store, StoreError};

#[derive(Debug, Default)]
pub struct BanSet {
    keys: RwLock<HashSet<String>>,
}

impl BanSet {
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let keys = store.bans().await?.into_iter().map(|b| b.key).collect();
        Ok(BanSet {
            keys: RwLock::new(keys),
        })
    }

    pub fn add(&self, identity: &Identity) {
        match self.keys.write() {
            Ok(mut keys) => keys.insert(identity.ban_key()),
            Err(poisoned) => poisoned.into_inner().insert(identity.ban_key()),
        };
    }
}

impl BanList for BanSet {
    fn is_banned(&self, identity: &Identity) -> bool {
        match self.keys.read() {
            Ok(keys) => keys.contains(&identity.ban_key()),
            Err(poisoned) => poisoned.into_inner().contains(&identity.ban_key()),
        }
    }
}
