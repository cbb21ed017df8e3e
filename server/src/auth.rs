//! Who may call what: the one place. A tower layer in front of every gRPC service reads the
//! verified client certificate of the connection, checks it is unexpired and not revoked, that
//! its kind (agent or operator) fits the service, and that an operator's role is enough for the
//! method ([`POLICY`]). Refusals of mutating calls are written to the audit log here. Handlers
//! find the caller as a [`Caller`] in the request extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use noco_certs::tls::BanList;
use noco_certs::{Identity, PeerCert, Role};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::clock::rfc3339;
use crate::core::Core;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No client certificate needed (enrollment and login only).
    Public,
    /// Any valid noco identity (certificate renewal).
    AnyIdentity,
    Agent,
    Operator(Role),
}

/// Every method the server serves: path, who may call it, and the audit action of the mutating
/// ones. A path not listed here is refused.
pub const POLICY: &[(&str, Access, Option<&str>)] = &[
    ("/noco.v1.Enrollment/Enroll", Access::Public, None),
    ("/noco.v1.Enrollment/Login", Access::Public, None),
    ("/noco.v1.Certs/Renew", Access::AnyIdentity, None),
    ("/noco.v1.Agent/Session", Access::Agent, None),
    ("/noco.v1.Telemetry/Stream", Access::Agent, None),
    ("/noco.v1.Backups/Upload", Access::Agent, None),
    ("/noco.v1.Backups/UploadOffset", Access::Agent, None),
    ("/noco.v1.Backups/Report", Access::Agent, None),
    ("/noco.v1.Backups/Download", Access::Agent, None),
    // Backups: viewers list them, deployers run, restore, verify and download them (an
    // archive holds the stack's data), admins remove them.
    (
        "/noco.v1.Control/ListBackups",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/GetBackup",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/GetBackupJob",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/RunBackup",
        Access::Operator(Role::Deployer),
        Some("backup.run"),
    ),
    (
        "/noco.v1.Control/RestoreBackup",
        Access::Operator(Role::Deployer),
        Some("backup.restore"),
    ),
    (
        "/noco.v1.Control/VerifyBackup",
        Access::Operator(Role::Deployer),
        Some("backup.verify"),
    ),
    (
        "/noco.v1.Control/DownloadBackup",
        Access::Operator(Role::Deployer),
        Some("backup.download"),
    ),
    (
        "/noco.v1.Control/RemoveBackup",
        Access::Operator(Role::Admin),
        Some("backup.remove"),
    ),
    // Alerts: viewers list them, deployers silence and unsilence, admins send test
    // notifications (they reach outside).
    (
        "/noco.v1.Control/ListAlerts",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/ListSilences",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/SilenceAlert",
        Access::Operator(Role::Deployer),
        Some("alert.silence"),
    ),
    (
        "/noco.v1.Control/RemoveSilence",
        Access::Operator(Role::Deployer),
        Some("alert.unsilence"),
    ),
    (
        "/noco.v1.Control/TestAlert",
        Access::Operator(Role::Admin),
        Some("alert.test"),
    ),
    // Logs can hold secrets (environment dumps, tokens): deployers and up.
    (
        "/noco.v1.Control/Logs",
        Access::Operator(Role::Deployer),
        None,
    ),
    ("/noco.v1.Control/Top", Access::Operator(Role::Viewer), None),
    (
        "/noco.v1.Control/GetHost",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/WhoAmI",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/ListHosts",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/ListOperators",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/ListAudit",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/GetRollout",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/ListRollouts",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/StartRollout",
        Access::Operator(Role::Deployer),
        Some("rollout.start"),
    ),
    (
        "/noco.v1.Control/ControlRollout",
        Access::Operator(Role::Deployer),
        Some("rollout.control"),
    ),
    (
        "/noco.v1.Control/UndoRollout",
        Access::Operator(Role::Deployer),
        Some("rollout.undo"),
    ),
    (
        "/noco.v1.Control/RotateSigningKey",
        Access::Operator(Role::Admin),
        Some("signing-key.rotate"),
    ),
    (
        "/noco.v1.Control/ListStacks",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/GetStack",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/Status",
        Access::Operator(Role::Viewer),
        None,
    ),
    (
        "/noco.v1.Control/ApplyStack",
        Access::Operator(Role::Deployer),
        Some("stack.apply"),
    ),
    (
        "/noco.v1.Control/RemoveStack",
        Access::Operator(Role::Deployer),
        Some("stack.remove"),
    ),
    (
        "/noco.v1.Control/LabelHost",
        Access::Operator(Role::Deployer),
        Some("host.label"),
    ),
    (
        "/noco.v1.Control/CreateToken",
        Access::Operator(Role::Admin),
        Some("token.create"),
    ),
    (
        "/noco.v1.Control/RevokeHost",
        Access::Operator(Role::Admin),
        Some("host.revoke"),
    ),
    (
        "/noco.v1.Control/AddOperator",
        Access::Operator(Role::Admin),
        Some("operator.add"),
    ),
    (
        "/noco.v1.Control/RevokeOperator",
        Access::Operator(Role::Admin),
        Some("operator.revoke"),
    ),
];

pub fn policy(path: &str) -> Option<(Access, Option<&'static str>)> {
    POLICY
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, a, action)| (*a, *action))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub peer: PeerCert,
}

impl Caller {
    /// How the audit log and messages name the caller: `operator alice (admin)`,
    /// `agent web-1 (3f2a…)`.
    pub fn describe(&self) -> String {
        match &self.peer.identity {
            Identity::Operator { role, .. } => {
                format!("operator {} ({role})", self.peer.common_name)
            }
            Identity::Agent { host_id } => format!("agent {} ({host_id})", self.peer.common_name),
            Identity::Server => "server".to_string(),
        }
    }

    /// The caller as the audit log records it.
    pub fn who(&self) -> crate::audit::Who {
        let (id, role) = match &self.peer.identity {
            Identity::Operator { operator_id, role } => (operator_id.clone(), Some(*role)),
            Identity::Agent { host_id } => (host_id.clone(), None),
            Identity::Server => (String::new(), None),
        };
        crate::audit::Who {
            text: self.describe(),
            name: self.peer.common_name.clone(),
            id,
            role,
        }
    }

    /// The caller of a request that passed the auth layer.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
        req.extensions().get::<Caller>().cloned().ok_or_else(|| {
            Status::unauthenticated("this call needs a client certificate issued by noco's CA")
        })
    }
}

/// Decide on one request. `Ok(None)`: public, no caller. `Err`: refused, and the message says why.
pub fn authorize(
    core: &Core,
    path: &str,
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<Option<Caller>, Status> {
    let (access, _) =
        policy(path).ok_or_else(|| Status::unimplemented(format!("unknown method {path}")))?;
    if access == Access::Public {
        return Ok(None);
    }
    let leaf = certs.and_then(|c| c.first()).ok_or_else(|| {
        Status::unauthenticated("this call needs a client certificate issued by noco's CA")
    })?;
    let peer = PeerCert::from_der(leaf)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    if peer.expired_at(core.clock.now()) {
        return Err(Status::unauthenticated(format!(
            "certificate of {} expired at {}: run `nococtl login` again (operators) or re-enroll the host (agents)",
            peer.identity,
            rfc3339(peer.not_after)
        )));
    }
    if core.bans.is_banned(&peer.identity) {
        return Err(Status::permission_denied(format!(
            "{} has been revoked",
            peer.identity
        )));
    }
    let method = path.rsplit('/').next().unwrap_or(path);
    match (access, &peer.identity) {
        (Access::AnyIdentity, Identity::Agent { .. } | Identity::Operator { .. }) => {}
        (Access::Agent, Identity::Agent { .. }) => {}
        (Access::Agent, _) => {
            return Err(Status::permission_denied(format!(
                "{method} is for agents; {} is not an agent certificate",
                peer.identity
            )));
        }
        (Access::Operator(needed), Identity::Operator { role, .. }) => {
            if *role < needed {
                return Err(Status::permission_denied(format!(
                    "role {role} may not call {method} (needs {needed})"
                )));
            }
        }
        (Access::Operator(_), _) => {
            return Err(Status::permission_denied(format!(
                "{method} is for operators; {} is not an operator certificate",
                peer.identity
            )));
        }
        _ => {
            return Err(Status::permission_denied(format!(
                "{} may not call {method}",
                peer.identity
            )));
        }
    }
    Ok(Some(Caller { peer }))
}

/// The tower layer that applies [`authorize`] to every request.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    core: Arc<Core>,
}

impl AuthLayer {
    pub fn new(core: Arc<Core>) -> Self {
        AuthLayer { core }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            core: self.core.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    core: Arc<Core>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Auth<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path().to_string();
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs());
        match authorize(&self.core, &path, certs.as_deref().map(|v| v.as_slice())) {
            Ok(Some(caller)) => {
                req.extensions_mut().insert(caller);
                Box::pin(inner.call(req))
            }
            Ok(None) => Box::pin(inner.call(req)),
            Err(status) => {
                if let Some((_, Some(action))) = policy(&path) {
                    let who = certs
                        .as_deref()
                        .and_then(|c| c.first())
                        .and_then(|der| PeerCert::from_der(der).ok())
                        .map(|peer| Caller { peer }.who())
                        .unwrap_or_else(|| crate::audit::Who::named("anonymous"));
                    let audit = self.core.audit.clone();
                    return Box::pin(async move {
                        audit
                            .record::<()>(&who, action, "", &Err(status.clone()))
                            .await;
                        Ok(status.into_http())
                    });
                }
                tracing::debug!(path, "refused: {}", status.message());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_method_in_the_proto_has_a_policy() {
        let proto = include_str!("../../proto/proto/noco.proto");
        let mut service = "";
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap_or_default();
            }
            if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest.split('(').next().unwrap_or_default();
                let path = format!("/noco.v1.{service}/{method}");
                assert!(policy(&path).is_some(), "{path} has no access policy");
            }
        }
    }

    #[test]
    fn backups_are_listed_by_viewers_run_by_deployers_removed_by_admins() {
        let role = |m: &str| match policy(&format!("/noco.v1.Control/{m}")) {
            Some((Access::Operator(r), _)) => r,
            other => panic!("{m}: {other:?}"),
        };
        for m in ["ListBackups", "GetBackup", "GetBackupJob"] {
            assert_eq!(role(m), Role::Viewer, "{m}");
        }
        for m in [
            "RunBackup",
            "RestoreBackup",
            "VerifyBackup",
            "DownloadBackup",
        ] {
            assert_eq!(role(m), Role::Deployer, "{m}");
        }
        assert_eq!(role("RemoveBackup"), Role::Admin);
        for m in ["Upload", "UploadOffset", "Report", "Download"] {
            assert_eq!(
                policy(&format!("/noco.v1.Backups/{m}")).map(|p| p.0),
                Some(Access::Agent)
            );
        }
    }

    #[test]
    fn alerts_are_listed_by_viewers_silenced_by_deployers_tested_by_admins() {
        let role = |m: &str| match policy(&format!("/noco.v1.Control/{m}")) {
            Some((Access::Operator(r), _)) => r,
            other => panic!("{m}: {other:?}"),
        };
        assert_eq!(role("ListAlerts"), Role::Viewer);
        assert_eq!(role("ListSilences"), Role::Viewer);
        assert_eq!(role("SilenceAlert"), Role::Deployer);
        assert_eq!(role("RemoveSilence"), Role::Deployer);
        assert_eq!(role("TestAlert"), Role::Admin);
    }

    #[test]
    fn only_enrollment_is_public() {
        for (path, access, _) in POLICY {
            assert_eq!(
                *access == Access::Public,
                path.starts_with("/noco.v1.Enrollment/"),
                "{path}"
            );
        }
    }
}
