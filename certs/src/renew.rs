//! Client side of certificate renewal, shared by agents and nococtl: a fresh key, a CSR, the
//! Certs.Renew call over a new connection made with the current (still valid) certificate, and
//! the renewed credential. The caller saves it and starts using it.

use std::sync::Arc;
use std::time::Duration;

use noco_proto::v1 as pb;

use crate::credential::Credential;
use crate::dial::{self, ServerAddr};
use crate::{PeerCert, csr};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("{0}")]
    Local(String),
    #[error("connecting to {server}: {source}")]
    Connect {
        server: String,
        source: tonic::transport::Error,
    },
    #[error("the server refused the renewal: {0}")]
    Refused(tonic::Status),
}

/// Renew `cred`'s certificate. The identity must come back unchanged.
pub async fn renew(cred: &Credential, connect_timeout: Duration) -> Result<Credential, RenewError> {
    let local = |e: crate::CertError| RenewError::Local(e.to_string());
    let current = cred.peer().map_err(local)?;
    let addr = ServerAddr::parse(&cred.server).map_err(RenewError::Local)?;
    let tls = Arc::new(cred.client_config().map_err(local)?);
    let channel = dial::connect(&addr, move || tls.clone(), connect_timeout)
        .await
        .map_err(|source| RenewError::Connect {
            server: cred.server.clone(),
            source,
        })?;
    let fresh = csr::generate(&cred.name).map_err(local)?;
    let resp = pb::certs_client::CertsClient::new(channel)
        .renew(pb::RenewRequest {
            csr_pem: fresh.csr_pem,
        })
        .await
        .map_err(RenewError::Refused)?
        .into_inner();
    let renewed = PeerCert::from_pem(&resp.cert_pem).map_err(local)?;
    let same = match (&renewed.identity, &current.identity) {
        (
            crate::Identity::Operator { operator_id: a, .. },
            crate::Identity::Operator { operator_id: b, .. },
        ) => a == b,
        (a, b) => a == b,
    };
    if !same {
        return Err(RenewError::Local(format!(
            "the server renewed {} as {}: refusing a certificate for another identity",
            current.identity, renewed.identity
        )));
    }
    let mut next = cred.clone();
    if let crate::Identity::Operator { role, .. } = &renewed.identity {
        next.role = role.to_string();
    }
    next.cert_pem = resp.cert_pem;
    next.key_pem = fresh.key_pem;
    next.ca_pem = resp.ca_pem;
    Ok(next)
}
