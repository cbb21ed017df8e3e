//! Where nococtl finds its credential: `--config`/`NOCO_CONFIG`, else
//! `$XDG_CONFIG_HOME/noco/config.toml`, else `~/.config/noco/config.toml`. `--server`/`NOCO_SERVER`
//! overrides the server address written in it. A credential holds a private key: one that
//! others than its owner may read is used with a warning (as ssh warns about its keys).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use noco_certs::credential::Credential;

use crate::error::CtlError;
use crate::output::errln;

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
    if let Some(warning) = std::fs::metadata(path)
        .ok()
        .and_then(|m| exposure_warning(path, mode_of(&m)))
    {
        errln!("nococtl: warning: {warning}");
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

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode_of(_: &std::fs::Metadata) -> u32 {
    0o600
}

/// What to say about a credential file with these permission bits: nothing when only its
/// owner may read or write it.
pub fn exposure_warning(path: &Path, mode: u32) -> Option<String> {
    if mode & 0o077 == 0 {
        return None;
    }
    let who = if mode & 0o004 != 0 {
        "every user on this machine may read it"
    } else if mode & 0o040 != 0 {
        "its group may read it"
    } else {
        "others than its owner may change it"
    };
    Some(format!(
        "{} has mode {mode:04o}: {who}, and it holds your private key; run chmod 600 {}",
        path.display(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_only_its_owner_may_read_is_used_silently() {
        for mode in [0o600, 0o400, 0o700] {
            assert_eq!(
                exposure_warning(Path::new("c.toml"), mode),
                None,
                "{mode:o}"
            );
        }
    }

    #[test]
    fn a_credential_others_may_read_or_change_is_used_with_a_warning() {
        let w = exposure_warning(Path::new("/home/a/c.toml"), 0o644).unwrap();
        assert_eq!(
            w,
            "/home/a/c.toml has mode 0644: every user on this machine may read it, and it holds your private key; run chmod 600 /home/a/c.toml"
        );
        let w = exposure_warning(Path::new("c.toml"), 0o640).unwrap();
        assert!(w.contains("0640: its group may read it"), "{w}");
        let w = exposure_warning(Path::new("c.toml"), 0o620).unwrap();
        assert!(
            w.contains("0620: others than its owner may change it"),
            "{w}"
        );
    }
}
