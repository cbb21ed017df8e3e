//! The Enrollment service: the only calls served without a client certificate. A host trades a
//! join token for its certificate; an operator trades a login token for theirs. Tokens are
//! single-use, expire, and are checked against a stored hash.

use std::sync::Arc;

use noco_certs::token::Token;
use noco_certs::{Identity, PeerCert};
use noco_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::clock::{rfc3339_ms, to_ms};
use crate::core::Core;
use crate::error::{Doing, Error};
use crate::names;
use crate::store::{HostRecord, OperatorStatus, TokenKind, TokenRecord};

#[derive(Debug, Clone)]
pub struct EnrollmentSvc {
    pub core: Arc<Core>,
}

impl EnrollmentSvc {
    /// Parse and check a token against its record: known, right CA, right secret, unused,
    /// unexpired.
    async fn check_token(&self, text: &str, what: &str) -> Result<TokenRecord, Status> {
        let token: Token = text
            .parse()
            .map_err(|e: noco_certs::CertError| Status::invalid_argument(e.to_string()))?;
        if token.ca_fingerprint != self.core.pki.ca.fingerprint() {
            return Err(Status::unauthenticated(format!(
                "{what} token {} was made for another noco server (CA fingerprint differs)",
                token.id
            )));
        }
        let record = self
            .core
            .store
            .token(&token.id)
            .await
            .doing("reading token")?
            .filter(|r| r.secret_hash == token.secret_hash())
            .ok_or_else(|| Status::unauthenticated(format!("unknown {what} token {}", token.id)))?;
        if let Some(used) = record.used_ms {
            return Err(Status::unauthenticated(format!(
                "{what} token {} was already used at {}; tokens are single-use: create a new one",
                token.id,
                rfc3339_ms(used)
            )));
        }
        if record.expires_ms <= self.core.now_ms() {
            return Err(Status::unauthenticated(format!(
                "{what} token {} expired at {}: create a new one",
                token.id,
                rfc3339_ms(record.expires_ms)
            )));
        }
        Ok(record)
    }

    async fn consume(&self, record: &TokenRecord, what: &str) -> Result<(), Status> {
        self.core
            .store
            .consume_token(record, self.core.now_ms())
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(_) => Status::unauthenticated(format!(
                    "{what} token {} was already used; tokens are single-use: create a new one",
                    record.id
                )),
                other => Error::from_store("consuming token", other).into(),
            })
    }

    async fn enroll_inner(&self, req: pb::EnrollRequest) -> Result<pb::EnrollResponse, Status> {
        let record = self.check_token(&req.token, "join").await?;
        let TokenKind::Join { labels } = &record.kind else {
            return Err(Status::invalid_argument(format!(
                "token {} is an operator login token: use it with `nococtl login`",
                record.id
            )));
        };
        let facts = crate::wire::facts_from_wire(req.facts.as_ref());
        let name = if req.requested_name.is_empty() {
            facts.hostname.to_lowercase()
        } else {
            req.requested_name.clone()
        };
        names::check_name("host", &name)?;
        let host_id = noco_certs::random_hex::<8>();
        let identity = Identity::Agent {
            host_id: host_id.clone(),
        };
        let now = self.core.clock.now();
        let cert_pem = self
            .core
            .pki
            .issue(
                &req.csr_pem,
                &identity,
                &name,
                self.core.limits.agent_cert_ttl,
                now,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cert = PeerCert::from_pem(&cert_pem)
            .map_err(|e| Error::Internal(format!("reading the issued certificate: {e}")))?;
        if let Some(existing) = self
            .core
            .store
            .find_host(&name)
            .await
            .doing("reading hosts")?
            && existing.revoked_ms.is_none()
            && existing.name == name
        {
            return Err(Status::already_exists(format!(
                "host name {name:?} is taken by host {}: revoke that host first or enroll with another --name",
                existing.id
            )));
        }
        self.consume(&record, "join").await?;
        let host = HostRecord {
            id: host_id.clone(),
            name: name.clone(),
            labels: labels.clone(),
            facts,
            enrolled_ms: to_ms(now),
            last_seen_ms: to_ms(now),
            cert_not_after_ms: to_ms(cert.not_after),
            revoked_ms: None,
        };
        self.core
            .store
            .insert_host(&host)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(msg) => Status::already_exists(msg),
                other => Error::from_store("storing host", other).into(),
            })?;
        Ok(pb::EnrollResponse {
            host_id,
            name,
            cert_pem,
            ca_pem: self.core.pki.ca.cert_pem().to_string(),
            trust_root: self.core.pki.trusted_keys(),
            labels: labels.clone().into_iter().collect(),
        })
    }

    async fn login_inner(&self, req: pb::LoginRequest) -> Result<pb::LoginResponse, Status> {
        let record = self.check_token(&req.token, "login").await?;
        let TokenKind::Login { operator_id } = &record.kind else {
            return Err(Status::invalid_argument(format!(
                "token {} is a host join token: use it with `noco-agent enroll`",
                record.id
            )));
        };
        let mut op = self
            .core
            .store
            .operator(operator_id)
            .await
            .doing("reading operator")?
            .ok_or_else(|| {
                Status::unauthenticated(format!("login token {} names no operator", record.id))
            })?;
        if op.status == OperatorStatus::Revoked {
            return Err(Status::permission_denied(format!(
                "operator {} has been revoked",
                op.name
            )));
        }
        let identity = Identity::Operator {
            operator_id: op.id.clone(),
            role: op.role,
        };
        let cert_pem = self
            .core
            .pki
            .issue(
                &req.csr_pem,
                &identity,
                &op.name,
                self.core.limits.operator_cert_ttl,
                self.core.clock.now(),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.consume(&record, "login").await?;
        op.status = OperatorStatus::Active;
        self.core
            .store
            .put_operator(&op)
            .await
            .doing("storing operator")?;
        Ok(pb::LoginResponse {
            operator_id: op.id,
            name: op.name,
            role: pb::Role::from(op.role).into(),
            cert_pem,
            ca_pem: self.core.pki.ca.cert_pem().to_string(),
        })
    }
}

fn token_id(text: &str) -> String {
    text.parse::<Token>()
        .map(|t| t.id)
        .unwrap_or_else(|_| "malformed".to_string())
}

#[tonic::async_trait]
impl pb::enrollment_server::Enrollment for EnrollmentSvc {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let req = req.into_inner();
        let caller = format!("join token {}", token_id(&req.token));
        let target = if req.requested_name.is_empty() {
            req.facts
                .as_ref()
                .map(|f| f.hostname.clone())
                .unwrap_or_default()
        } else {
            req.requested_name.clone()
        };
        let outcome = self.enroll_inner(req).await;
        let target = match &outcome {
            Ok(r) => format!("{} ({})", r.name, r.host_id),
            Err(_) => target,
        };
        self.core
            .audit
            .record(
                &crate::audit::Who::named(caller),
                "host.enroll",
                &target,
                &outcome,
            )
            .await;
        outcome.map(Response::new)
    }

    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let req = req.into_inner();
        let caller = format!("login token {}", token_id(&req.token));
        let outcome = self.login_inner(req).await;
        let target = outcome.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        self.core
            .audit
            .record(
                &crate::audit::Who::named(caller),
                "operator.login",
                &target,
                &outcome,
            )
            .await;
        outcome.map(Response::new)
    }
}
