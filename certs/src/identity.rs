//! The identities noco certificates carry, as a URI SAN, and reading them back from a peer's
//! certificate. This is the one place that decides who a peer is.
//!
//! - agents:    `noco://agent/<host-id>`
//! - operators: `noco://operator/<role>/<operator-id>`
//! - the server: `noco://server`

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::CertError;

const SCHEME: &str = "noco://";

/// What an operator may do. Ordered: each role may do everything the ones before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Deployer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            other => Err(CertError::NoIdentity(format!(
                "unknown role {other:?} (expected admin, deployer or viewer)"
            ))),
        }
    }
}

impl From<Role> for noco_proto::v1::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Viewer => noco_proto::v1::Role::Viewer,
            Role::Deployer => noco_proto::v1::Role::Deployer,
            Role::Admin => noco_proto::v1::Role::Admin,
        }
    }
}

impl TryFrom<noco_proto::v1::Role> for Role {
    type Error = CertError;
    fn try_from(r: noco_proto::v1::Role) -> Result<Self, CertError> {
        match r {
            noco_proto::v1::Role::Viewer => Ok(Role::Viewer),
            noco_proto::v1::Role::Deployer => Ok(Role::Deployer),
            noco_proto::v1::Role::Admin => Ok(Role::Admin),
            noco_proto::v1::Role::Unspecified => Err(CertError::NoIdentity(
                "no role given (expected admin, deployer or viewer)".into(),
            )),
        }
    }
}

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Agent { host_id: String },
    Operator { operator_id: String, role: Role },
    Server,
}

impl Identity {
    pub fn uri(&self) -> String {
        match self {
            Identity::Agent { host_id } => format!("{SCHEME}agent/{host_id}"),
            Identity::Operator { operator_id, role } => {
                format!("{SCHEME}operator/{role}/{operator_id}")
            }
            Identity::Server => format!("{SCHEME}server"),
        }
    }

    pub fn parse_uri(uri: &str) -> Result<Self, CertError> {
        let bad = || CertError::NoIdentity(format!("unrecognised identity URI {uri:?}"));
        let rest = uri.strip_prefix(SCHEME).ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["agent", id] if valid_id(id) => Ok(Identity::Agent {
                host_id: id.to_string(),
            }),
            ["operator", role, id] if valid_id(id) => Ok(Identity::Operator {
                operator_id: id.to_string(),
                role: role.parse()?,
            }),
            ["server"] => Ok(Identity::Server),
            _ => Err(bad()),
        }
    }

    /// The key this identity is banned under: revoking a host or an operator bans every
    /// certificate it ever held, whatever its role.
    pub fn ban_key(&self) -> String {
        match self {
            Identity::Agent { host_id } => format!("agent/{host_id}"),
            Identity::Operator { operator_id, .. } => format!("operator/{operator_id}"),
            Identity::Server => "server".to_string(),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the server knows about a verified peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub identity: Identity,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial: String,
    pub common_name: String,
}

impl PeerCert {
    /// Read the identity and validity of a DER certificate. Does not check the signature: call it
    /// only on certificates the TLS layer has already verified against the CA (or on our own).
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
        let mut identity = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && uri.starts_with(SCHEME)
                {
                    if identity.is_some() {
                        return Err(CertError::NoIdentity("more than one noco URI SAN".into()));
                    }
                    identity = Some(Identity::parse_uri(uri)?);
                }
            }
        }
        let identity =
            identity.ok_or_else(|| CertError::NoIdentity("no noco:// URI SAN".to_string()))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(PeerCert {
            identity,
            not_before: to_system_time(cert.validity().not_before.timestamp()),
            not_after: to_system_time(cert.validity().not_after.timestamp()),
            serial: cert.raw_serial_as_string(),
            common_name,
        })
    }

    /// Read the first certificate of a PEM bundle.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let der = crate::tls::first_cert_der(pem)?;
        Self::from_der(&der)
    }

    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

pub(crate) fn to_system_time(unix_secs: i64) -> SystemTime {
    if unix_secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix_secs as u64)
    } else {
        UNIX_EPOCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_round_trip() {
        for id in [
            Identity::Agent {
                host_id: "h-1a2b".into(),
            },
            Identity::Operator {
                operator_id: "op_9".into(),
                role: Role::Deployer,
            },
            Identity::Server,
        ] {
            assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), id);
        }
    }

    #[test]
    fn malformed_identity_uris_are_refused() {
        for uri in [
            "noco://agent/",
            "noco://agent/a/b",
            "noco://operator/root/x",
            "noco://agent/../x",
            "spiffe://agent/x",
        ] {
            assert!(Identity::parse_uri(uri).is_err(), "{uri} accepted");
        }
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Admin > Role::Deployer && Role::Deployer > Role::Viewer);
    }
}
