//! What the agent keeps on disk, under its data directory (0700):
//!
//! ```text
//! <data-dir>/credential.toml   the host's key, certificate, the CA, the server URL (0600)
//!            trust-root.json   the ed25519 keys desired state must be signed with (0600)
//!            logs/             the log spool (`telemetry::spool`): containers' recent lines
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use noco_certs::credential::Credential;
use noco_certs::keyfile;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustKeyFile {
    pub key_id: String,
    pub public_key_hex: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustRootFile {
    pub keys: Vec<TrustKeyFile>,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        DataDir {
            root: root.to_path_buf(),
        }
    }

    pub fn credential(&self) -> PathBuf {
        self.root.join("credential.toml")
    }

    pub fn trust_root(&self) -> PathBuf {
        self.root.join("trust-root.json")
    }

    /// The log spool's directory.
    pub fn log_spool(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn load_credential(&self) -> anyhow::Result<Credential> {
        if !self.credential().exists() {
            anyhow::bail!(
                "{} holds no enrollment (no credential.toml): run `noco-agent enroll --server URL --token TOKEN --data-dir {}` first",
                self.root.display(),
                self.root.display()
            );
        }
        Ok(Credential::load(&self.credential())?)
    }

    pub fn save_credential(&self, cred: &Credential) -> anyhow::Result<()> {
        keyfile::create_private_dir(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        cred.save(&self.credential())?;
        Ok(())
    }

    pub fn save_trust_root(&self, root: &TrustRootFile) -> anyhow::Result<()> {
        keyfile::create_private_dir(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let json = serde_json::to_vec_pretty(root).context("encoding the trust root")?;
        keyfile::write_secret(&self.trust_root(), &json).context("writing trust-root.json")
    }

    pub fn load_trust_root(&self) -> anyhow::Result<TrustRootFile> {
        let path = self.trust_root();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }
}
