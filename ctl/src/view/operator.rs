//! Operators (`operator ls`, `operator revoke`), their login tokens (`operator add`,
//! `operator token`), and who a credential is (`whoami`, `login`).

use std::path::Path;

use noco_proto::v1 as pb;
use serde::Serialize;

use super::text;
use crate::output::{Listed, rfc3339_ms};

/// An operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperatorView {
    pub name: String,
    pub id: String,
    #[serde(serialize_with = "text")]
    pub role: pb::Role,
    #[serde(serialize_with = "text")]
    pub status: pb::OperatorStatus,
    /// RFC 3339.
    pub created: String,
}

impl From<&pb::Operator> for OperatorView {
    fn from(o: &pb::Operator) -> Self {
        let pb::Operator {
            id,
            name,
            role: _,
            status: _,
            created_unix_ms,
        } = o;
        OperatorView {
            name: name.clone(),
            id: id.clone(),
            role: o.role(),
            status: o.status(),
            created: rfc3339_ms(*created_unix_ms),
        }
    }
}

impl Listed for OperatorView {
    const HEADER: &'static [&'static str] = &["NAME", "ID", "ROLE", "STATUS", "CREATED"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.id.clone(),
            self.role.to_string(),
            self.status.to_string(),
            self.created.clone(),
        ]
    }
}

/// A one-time login token for an operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoginTokenView {
    pub operator: OperatorView,
    pub login_token: String,
    /// RFC 3339.
    pub expires: String,
}

impl From<&pb::AddOperatorResponse> for LoginTokenView {
    fn from(r: &pb::AddOperatorResponse) -> Self {
        let pb::AddOperatorResponse {
            operator,
            login_token,
            expires_unix_ms,
        } = r;
        LoginTokenView {
            operator: OperatorView::from(&operator.clone().unwrap_or_default()),
            login_token: login_token.clone(),
            expires: rfc3339_ms(*expires_unix_ms),
        }
    }
}

/// Who this credential is, on which server (`whoami`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhoAmIView {
    pub name: String,
    pub id: String,
    #[serde(serialize_with = "text")]
    pub role: pb::Role,
    /// The server's address, from the credential.
    pub server: String,
    /// RFC 3339.
    pub cert_not_after: String,
    pub server_version: String,
}

impl WhoAmIView {
    pub fn new(r: &pb::WhoAmIResponse, server: &str) -> Self {
        let pb::WhoAmIResponse {
            operator_id,
            name,
            role: _,
            cert_not_after_unix_ms,
            server_version,
        } = r;
        WhoAmIView {
            name: name.clone(),
            id: operator_id.clone(),
            role: r.role(),
            server: server.to_string(),
            cert_not_after: rfc3339_ms(*cert_not_after_unix_ms),
            server_version: server_version.clone(),
        }
    }

    /// `alice (deployer) on https://… — certificate valid until …, server 0.1.0`
    pub fn line(&self) -> String {
        format!(
            "{} ({}) on {} — certificate valid until {}, server {}",
            self.name, self.role, self.server, self.cert_not_after, self.server_version
        )
    }
}

/// The credential `login` wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoginView {
    pub name: String,
    pub id: String,
    #[serde(serialize_with = "text")]
    pub role: pb::Role,
    /// The credential file.
    pub config: String,
}

impl LoginView {
    pub fn new(r: &pb::LoginResponse, config: &Path) -> Self {
        // The certificates go into the credential file, not on screen.
        let pb::LoginResponse {
            operator_id,
            name,
            role: _,
            cert_pem: _,
            ca_pem: _,
        } = r;
        LoginView {
            name: name.clone(),
            id: operator_id.clone(),
            role: r.role(),
            config: config.display().to_string(),
        }
    }

    /// `logged in as alice (deployer); credential written to …`
    pub fn line(&self) -> String {
        format!(
            "logged in as {} ({}); credential written to {}",
            self.name, self.role, self.config
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn alice() -> pb::Operator {
        pb::Operator {
            id: "o1".into(),
            name: "alice".into(),
            role: pb::Role::Deployer.into(),
            status: pb::OperatorStatus::Pending.into(),
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn an_operator_shows_its_role_and_status_as_text() {
        let o = OperatorView::from(&alice());
        let expected = json!({
            "name": "alice", "id": "o1", "role": "deployer", "status": "pending",
            "created": "2023-11-14T22:13:20Z",
        });
        assert_eq!(serde_json::to_value(&o).unwrap(), expected);
        assert_eq!(
            o.cells(),
            ["alice", "o1", "deployer", "pending", "2023-11-14T22:13:20Z"]
        );
    }

    #[test]
    fn a_login_token_shows_its_operator() {
        let t = LoginTokenView::from(&pb::AddOperatorResponse {
            operator: Some(alice()),
            login_token: "noco1:ab:l1.secret".into(),
            expires_unix_ms: 1_700_000_000_000,
        });
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["operator"]["role"], "deployer");
        assert_eq!(v["operator"]["name"], "alice");
        assert_eq!(v["login_token"], "noco1:ab:l1.secret");
        assert_eq!(v["expires"], "2023-11-14T22:13:20Z");
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn whoami_shows_the_role_as_text_and_the_server_of_the_credential() {
        let me = WhoAmIView::new(
            &pb::WhoAmIResponse {
                operator_id: "o0".into(),
                name: "admin".into(),
                role: pb::Role::Admin.into(),
                cert_not_after_unix_ms: 1_700_000_000_000,
                server_version: "0.1.0".into(),
            },
            "https://127.0.0.1:7443",
        );
        assert_eq!(
            serde_json::to_value(&me).unwrap(),
            json!({
                "name": "admin", "id": "o0", "role": "admin", "server": "https://127.0.0.1:7443",
                "cert_not_after": "2023-11-14T22:13:20Z", "server_version": "0.1.0",
            })
        );
        assert_eq!(
            me.line(),
            "admin (admin) on https://127.0.0.1:7443 — certificate valid until 2023-11-14T22:13:20Z, server 0.1.0"
        );
    }

    #[test]
    fn login_shows_the_role_as_text_and_where_the_credential_went() {
        let login = LoginView::new(
            &pb::LoginResponse {
                operator_id: "o1".into(),
                name: "alice".into(),
                role: pb::Role::Viewer.into(),
                cert_pem: "CERT".into(),
                ca_pem: "CA".into(),
            },
            Path::new("/home/alice/.config/noco/config.toml"),
        );
        assert_eq!(
            serde_json::to_value(&login).unwrap(),
            json!({
                "name": "alice", "id": "o1", "role": "viewer",
                "config": "/home/alice/.config/noco/config.toml",
            })
        );
        assert_eq!(
            login.line(),
            "logged in as alice (viewer); credential written to /home/alice/.config/noco/config.toml"
        );
    }
}
