//! The Certs service: renew the caller's certificate before it expires. The new certificate
//! keeps the identity of the one the caller connected with; only the key comes from the CSR.

use std::sync::Arc;

use noco_certs::{Identity, PeerCert};
use noco_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::clock::to_ms;
use crate::core::Core;
use crate::error::{Doing, Error};
use crate::store::OperatorStatus;

#[derive(Debug, Clone)]
pub struct CertsSvc {
    pub core: Arc<Core>,
}

#[tonic::async_trait]
impl pb::certs_server::Certs for CertsSvc {
    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let caller = Caller::of(&req)?;
        let csr = req.into_inner().csr_pem;
        let core = &self.core;
        let now = core.clock.now();
        let identity = caller.peer.identity.clone();
        let cert_pem = match &identity {
            Identity::Agent { host_id } => {
                let host = core
                    .store
                    .host(host_id)
                    .await
                    .doing("reading host")?
                    .ok_or_else(|| {
                        Status::permission_denied(format!("host {host_id} is not enrolled"))
                    })?;
                if host.revoked_ms.is_some() {
                    return Err(Status::permission_denied(format!(
                        "host {} has been revoked",
                        host.name
                    )));
                }
                let pem = core
                    .pki
                    .issue(&csr, &identity, &host.name, core.limits.agent_cert_ttl, now)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let cert = PeerCert::from_pem(&pem)
                    .map_err(|e| Error::Internal(format!("reading the issued certificate: {e}")))?;
                let not_after = to_ms(cert.not_after);
                core.store
                    .update_host(host_id, &|h| {
                        h.cert_not_after_ms = not_after;
                        Ok(())
                    })
                    .await
                    .doing("storing host")?;
                tracing::debug!(host = %host.name, "renewed agent certificate");
                pem
            }
            Identity::Operator { operator_id, .. } => {
                let op = core
                    .store
                    .operator(operator_id)
                    .await
                    .doing("reading operator")?
                    .filter(|o| o.status == OperatorStatus::Active)
                    .ok_or_else(|| {
                        Status::permission_denied(format!("operator {operator_id} is not active"))
                    })?;
                // The role comes from the operator's record: a role changed on the server takes
                // effect at the next renewal.
                let identity = Identity::Operator {
                    operator_id: op.id.clone(),
                    role: op.role,
                };
                core.pki
                    .issue(
                        &csr,
                        &identity,
                        &op.name,
                        core.limits.operator_cert_ttl,
                        now,
                    )
                    .map_err(|e| Status::invalid_argument(e.to_string()))?
            }
            Identity::Server => {
                return Err(Status::permission_denied(
                    "the server does not renew over the API",
                ));
            }
        };
        Ok(Response::new(pb::RenewResponse {
            cert_pem,
            ca_pem: core.pki.ca.cert_pem().to_string(),
        }))
    }
}
