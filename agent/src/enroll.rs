//! `noco-agent enroll`: trade a join token for this host's certificate. The private key is made
//! here and never leaves the host; the server is trusted on first contact only if its chain holds
//! the CA whose fingerprint the token pins.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
use noco_certs::token::Token;
use noco_certs::{Identity, PeerCert, csr, sha256_hex, tls};
use noco_proto::v1 as pb;

use crate::datadir::{DataDir, TrustKeyFile, TrustRootFile};

#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub server: String,
    pub token: String,
    pub name: Option<String>,
    pub force: bool,
}

#[derive(Debug)]
pub struct Enrolled {
    pub host_id: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
}

pub async fn enroll(dir: &DataDir, opts: &EnrollOptions) -> anyhow::Result<Enrolled> {
    if dir.credential().exists() && !opts.force {
        let existing = Credential::load(&dir.credential()).ok();
        bail!(
            "{} is already enrolled{}: pass --force to enroll again (the old host stays in `nococtl host ls` until revoked)",
            dir.root.display(),
            existing
                .map(|c| format!(" as {} ({})", c.name, c.id))
                .unwrap_or_default()
        );
    }
    let addr = ServerAddr::parse(&opts.server).map_err(|e| anyhow::anyhow!(e))?;
    let token: Token = opts.token.parse().context("reading --token")?;
    let facts = crate::facts::gather().await;
    let name_hint = opts.name.clone().unwrap_or_else(|| facts.hostname.clone());
    let request = csr::generate(&name_hint)?;
    let config = Arc::new(tls::pinned_client_config(&token.ca_fingerprint)?);
    let channel = dial::connect(&addr, move || config.clone(), Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to {} (is the server up, and is this the server the token was made on?)", addr.url()))?;
    let resp = pb::enrollment_client::EnrollmentClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: opts.token.trim().to_string(),
            csr_pem: request.csr_pem,
            requested_name: opts.name.clone().unwrap_or_default(),
            facts: Some(facts),
        })
        .await
        .map_err(|s| anyhow::anyhow!("the server refused enrollment: {}", s.message()))?
        .into_inner();

    let ca_der = tls::first_cert_der(&resp.ca_pem).context("the server sent an unreadable CA")?;
    if sha256_hex(&ca_der) != token.ca_fingerprint {
        bail!("the server sent a CA that does not match the token's pinned fingerprint");
    }
    let peer =
        PeerCert::from_pem(&resp.cert_pem).context("the server sent an unreadable certificate")?;
    if peer.identity
        != (Identity::Agent {
            host_id: resp.host_id.clone(),
        })
    {
        bail!(
            "the server issued a certificate for {} instead of host {}",
            peer.identity,
            resp.host_id
        );
    }
    let credential = Credential {
        server: addr.url(),
        name: resp.name.clone(),
        id: resp.host_id.clone(),
        role: String::new(),
        ca_pem: resp.ca_pem,
        cert_pem: resp.cert_pem,
        key_pem: request.key_pem,
    };
    let trust = TrustRootFile {
        keys: resp
            .trust_root
            .iter()
            .map(|k| TrustKeyFile {
                key_id: k.key_id.clone(),
                public_key_hex: hex::encode(&k.public_key),
            })
            .collect(),
    };
    noco_certs::signing::TrustRoot::new(
        &resp
            .trust_root
            .iter()
            .map(|k| k.public_key.clone())
            .collect::<Vec<_>>(),
    )
    .context("the server sent an invalid trust root")?;
    dir.save_trust_root(&trust)?;
    dir.save_credential(&credential)?;
    let mut labels: Vec<_> = resp.labels.into_iter().collect();
    labels.sort();
    Ok(Enrolled {
        host_id: resp.host_id,
        name: resp.name,
        labels,
    })
}
