//! What the server's tests share: a data directory with a real CA and certificate, a fresh sled
//! store, and host records.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::pki::{DataDir, Pki, Settings};
use crate::store::sled_store::SledStore;
use crate::store::{HostRecord, Store};

/// A new data directory under `root`: its PKI (the CA valid for `ca_ttl`, the server
/// certificate for a year) and an empty store.
pub async fn pki_and_store(root: &Path, ca_ttl: Duration) -> (DataDir, Pki, Arc<dyn Store>) {
    let data = DataDir::new(&root.join("srv"));
    let settings = Settings {
        server_url: "https://localhost:7443".into(),
        dns_names: vec!["localhost".into()],
        ip_addrs: vec![],
        server_cert_ttl_secs: 3600 * 24 * 365,
    };
    let pki = Pki::create(&data, settings, ca_ttl, SystemTime::now())
        .unwrap_or_else(|e| panic!("creating the PKI: {e}"));
    let store: Arc<dyn Store> = Arc::new(
        SledStore::create(&data.db())
            .await
            .unwrap_or_else(|e| panic!("creating the store: {e}")),
    );
    (data, pki, store)
}

/// A host enrolled long ago whose certificate never expires.
pub fn host(id: &str, name: &str) -> HostRecord {
    HostRecord {
        id: id.into(),
        name: name.into(),
        labels: Default::default(),
        facts: Default::default(),
        enrolled_ms: 1,
        last_seen_ms: 1,
        cert_not_after_ms: i64::MAX,
        revoked_ms: None,
    }
}

/// Store `host(id, name)` for each pair.
pub async fn insert_hosts(store: &dyn Store, hosts: &[(&str, &str)]) {
    for (id, name) in hosts {
        store
            .insert_host(&host(id, name))
            .await
            .unwrap_or_else(|e| panic!("inserting host {id}: {e}"));
    }
}
