//! Where nococtl finds its credential: `--config`/`NOCO_CONFIG`, else
//! `$XDG_CONFIG_HOME/noco/config.toml`, else `~/.config/noco/config.toml`. `--server`/`NOCO_SERVER`
//! overrides the server address written in it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use noco_certs::credential::Credential;

use crate::error::CtlError;

pub fn default_path() -> Result<PathBuf, CtlError> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("noco/config.toml"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config/noco/config.toml")),
        None => Err(CtlError::Local(
            "neither XDG_CONFIG_HOME nor HOME is set: pass --config PATH".into(),
        )),
    }
}

pub fn resolve(config: Option<&Path>) -> Result<PathBuf, CtlError> {
    match config {
        Some(p) => Ok(p.to_path_buf()),
        None => default_path(),
    }
}

/// Load the credential, refusing an expired one with what to do about it.
pub fn load(path: &Path, server: Option<&str>) -> Result<Credential, CtlError> {
    if !path.exists() {
        return Err(CtlError::Local(format!(
            "no nococtl credential at {}: run `nococtl login --server URL --token TOKEN` (ask an admin for a token), or pass --config",
            path.display()
        )));
    }
    let mut cred = Credential::load(path).map_err(CtlError::local)?;
    if let Some(server) = server {
        cred.server = server.to_string();
    }
    let peer = cred
        .peer()
        .map_err(|e| CtlError::Local(format!("{}: {e}", path.display())))?;
    if peer.expired_at(SystemTime::now()) {
        return Err(CtlError::Local(format!(
            "the certificate of operator {} expired on {}: run `nococtl login --server {} --token TOKEN` again (an admin makes the token with `nococtl operator token {}`)",
            cred.name,
            humantime::format_rfc3339_seconds(peer.not_after),
            cred.server,
            cred.name
        )));
    }
    Ok(cred)
}
