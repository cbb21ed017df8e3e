//! A credential file: who I am to the server, and how to reach and trust it. `noco-server init`
//! writes the first admin's, `nococtl login` writes an operator's, `noco-agent enroll` writes the
//! host's. Always 0600: it holds a private key.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{CertError, PeerCert, keyfile};

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    /// `https://host:port` of the server.
    pub server: String,
    /// Host name or operator name.
    pub name: String,
    /// Host id or operator id.
    pub id: String,
    /// Operators only: admin, deployer or viewer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path} is not a valid credential file: {err}")]
    Parse { path: String, err: String },
    #[error("writing {path}: {err}")]
    Write { path: String, err: std::io::Error },
    #[error("{path}: {err}")]
    Cert { path: String, err: CertError },
}

impl Credential {
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| CredentialError::Read {
            path: p.clone(),
            err,
        })?;
        toml::from_str(&text).map_err(|err| CredentialError::Parse {
            path: p,
            err: err.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), CredentialError> {
        let text = toml::to_string(self).map_err(|err| CredentialError::Parse {
            path: path.display().to_string(),
            err: err.to_string(),
        })?;
        keyfile::write_secret(path, text.as_bytes()).map_err(|err| CredentialError::Write {
            path: path.display().to_string(),
            err,
        })
    }

    /// The identity and validity of the certificate in this credential.
    pub fn peer(&self) -> Result<PeerCert, CertError> {
        PeerCert::from_pem(&self.cert_pem)
    }

    /// A rustls client configuration presenting this credential.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, CertError> {
        crate::tls::client_config(&self.ca_pem, &self.cert_pem, &self.key_pem)
    }

    /// Whether the certificate is past the point where it should be renewed.
    pub fn renewal_due(&self, now: SystemTime) -> Result<bool, CertError> {
        let peer = self.peer()?;
        Ok(crate::rotation::due(peer.not_before, peer.not_after, now))
    }
}
