//! `noco-server init`: a new data directory with its CA, server certificate, state-signing key,
//! database, and a first admin operator whose ready-to-use nococtl credential is written 0600.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use noco_certs::ca::Subject;
use noco_certs::credential::Credential;
use noco_certs::{Identity, Role, random_hex};

use crate::clock::to_ms;
use crate::pki::{DataDir, Pki, Settings};
use crate::store::sled_store::SledStore;
use crate::store::{OperatorRecord, OperatorStatus, Store};

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub data_dir: PathBuf,
    /// DNS names and IP addresses for the server certificate.
    pub sans: Vec<String>,
    pub server_url: Option<String>,
    pub ca_ttl: Duration,
    pub server_cert_ttl: Duration,
    pub admin_name: String,
    pub admin_cert_ttl: Duration,
}

#[derive(Debug)]
pub struct InitReport {
    pub dir: DataDir,
    pub server_url: String,
    pub ca_fingerprint: String,
    pub admin_credential: PathBuf,
}

pub async fn init(opts: &InitOptions, now: SystemTime) -> anyhow::Result<InitReport> {
    crate::names::check_name("operator", &opts.admin_name)?;
    let mut dns_names = Vec::new();
    let mut ip_addrs = Vec::new();
    for san in &opts.sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => ip_addrs.push(ip),
            Err(_) => dns_names.push(san.clone()),
        }
    }
    let first = opts
        .sans
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".to_string());
    let server_url = match &opts.server_url {
        Some(url) => url.clone(),
        None if first.contains(':') => format!("https://[{first}]:7443"),
        None => format!("https://{first}:7443"),
    };
    noco_certs::dial::ServerAddr::parse(&server_url).map_err(|e| anyhow::anyhow!(e))?;
    let settings = Settings {
        server_url: server_url.clone(),
        dns_names,
        ip_addrs,
        server_cert_ttl_secs: opts.server_cert_ttl.as_secs().max(1),
    };
    let dir = DataDir::new(&opts.data_dir);
    let pki = Pki::create(&dir, settings, opts.ca_ttl, now)?;
    let store = SledStore::create(&dir.db())
        .await
        .context("creating the database")?;

    let operator = OperatorRecord {
        id: random_hex::<8>(),
        name: opts.admin_name.clone(),
        role: Role::Admin,
        status: OperatorStatus::Active,
        created_ms: to_ms(now),
    };
    let identity = Identity::Operator {
        operator_id: operator.id.clone(),
        role: Role::Admin,
    };
    let subject = Subject {
        identity: &identity,
        common_name: &operator.name,
        dns_names: &[],
        ip_addrs: &[],
        lifetime: opts.admin_cert_ttl,
    };
    let (cert_pem, key_pem) = pki.ca.issue_with_new_key(&subject, now)?;
    store
        .put_operator(&operator)
        .await
        .context("storing the admin operator")?;
    let credential = Credential {
        server: server_url.clone(),
        name: operator.name.clone(),
        id: operator.id.clone(),
        role: Role::Admin.to_string(),
        ca_pem: pki.ca.cert_pem().to_string(),
        cert_pem,
        key_pem,
    };
    credential.save(&dir.admin_credential())?;
    store.flush().await?;
    Ok(InitReport {
        server_url,
        ca_fingerprint: pki.ca.fingerprint(),
        admin_credential: dir.admin_credential(),
        dir,
    })
}
