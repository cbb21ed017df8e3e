//! The agent's own configuration file, written by the host's administrator — never by the
//! server: `/etc/noco/agent.toml` unless `--config`/`NOCO_AGENT_CONFIG` names another.
//!
//! ```toml
//! [[registries]]
//! host = "registry.example.com"        # docker.io for Docker Hub, or host:port
//! username = "deploy"
//! password_file = "/etc/noco/registry-password"   # or: password = "…"
//!
//! [policy]                             # what server-sent stacks may do: see `policy.rs`
//! allow_privileged = false
//!
//! [telemetry]
//! spool_size = "64MiB"                 # logs kept on disk while the server is away (oldest go first)
//! metrics_interval = "10s"             # how often host and container metrics are sampled
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/noco/agent.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub registries: Vec<Registry>,
    /// The host policy for stacks sent by the server; every key defaults to refuse.
    #[serde(default)]
    pub policy: crate::policy::Policy,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub backup: BackupConfig,
}

/// Backups: where archives wait for upload, and the key that opens encrypted ones.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// What archives not yet uploaded may take on disk (`<data-dir>/backups/spool`): bytes, or
    /// with a unit (`10GiB`). A backup that would pass it fails ("the spool is full").
    #[serde(deserialize_with = "de_backup_size")]
    pub spool_size: u64,
    /// An age identity file (`AGE-SECRET-KEY-1…` lines), needed to restore or verify backups
    /// encrypted to its recipient. The server never holds it.
    pub identity: Option<std::path::PathBuf>,
}

/// The default bound of the backup spool.
pub const DEFAULT_BACKUP_SPOOL: u64 = 10 << 30;
/// The smallest backup spool accepted.
pub const MIN_BACKUP_SPOOL: u64 = 1 << 20;

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            spool_size: DEFAULT_BACKUP_SPOOL,
            identity: None,
        }
    }
}

fn de_backup_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    size_at_least(d, "backup.spool_size", MIN_BACKUP_SPOOL)
}

/// Logs and metrics: how much the log spool may hold and how often metrics are sampled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The log spool's bound on disk: bytes, or with a unit (`64MiB`, `1GiB`): `noco_proto::size`.
    #[serde(deserialize_with = "de_size")]
    pub spool_size: u64,
    /// Seconds, or with a unit (`10s`, `1m`).
    #[serde(deserialize_with = "de_duration")]
    pub metrics_interval: std::time::Duration,
}

/// The smallest metrics interval accepted.
pub const MIN_METRICS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            spool_size: crate::telemetry::spool::DEFAULT_MAX_BYTES,
            metrics_interval: std::time::Duration::from_secs(10),
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    let v = match Raw::deserialize(d)? {
        Raw::Secs(s) => std::time::Duration::from_secs(s),
        Raw::Text(t) => noco_proto::duration::parse(&t).map_err(serde::de::Error::custom)?,
    };
    if v < MIN_METRICS_INTERVAL {
        return Err(serde::de::Error::custom(format!(
            "metrics_interval {v:?} is below the smallest, {MIN_METRICS_INTERVAL:?}"
        )));
    }
    Ok(v)
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    size_at_least(d, "spool_size", crate::telemetry::spool::MIN_MAX_BYTES)
}

/// A size in bytes (a number, or text with a unit: `noco_proto::size`), at least `min`.
fn size_at_least<'de, D: serde::Deserializer<'de>>(
    d: D,
    key: &str,
    min: u64,
) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    let v = match Raw::deserialize(d)? {
        Raw::Bytes(b) => b,
        Raw::Text(t) => noco_proto::size::parse(&t).map_err(serde::de::Error::custom)?,
    };
    if v < min {
        return Err(serde::de::Error::custom(format!(
            "{key} {v} bytes is below the smallest, {min} bytes"
        )));
    }
    Ok(v)
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub host: String,
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Registry credentials, resolved (a password file read).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub host: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("host", &self.host)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// Load `path`; a missing file at the default path is an empty configuration, a missing
    /// file named explicitly is an error.
    pub fn load(path: Option<&Path>) -> anyhow::Result<(AgentConfig, Vec<Credentials>)> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok((AgentConfig::default(), Vec::new()));
            }
            Err(e) => anyhow::bail!("reading the agent configuration {}: {e}", path.display()),
        };
        let config: AgentConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let creds = config
            .credentials()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok((config, creds))
    }

    fn credentials(&self) -> Result<Vec<Credentials>, String> {
        self.registries
            .iter()
            .map(|r| {
                let password = match (&r.password, &r.password_file) {
                    (Some(p), None) => p.clone(),
                    (None, Some(f)) => std::fs::read_to_string(f)
                        .map_err(|e| {
                            format!("registry {}: password_file {}: {e}", r.host, f.display())
                        })?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                    _ => {
                        return Err(format!(
                            "registry {}: give exactly one of password and password_file",
                            r.host
                        ));
                    }
                };
                Ok(Credentials {
                    host: r.host.clone(),
                    username: r.username.clone(),
                    password,
                })
            })
            .collect()
    }
}

/// The registry an image reference pulls from: its first path component when that looks like a
/// host (has a `.` or a `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// The credentials for `image`, if the configuration has some for its registry.
pub fn credentials_for<'a>(creds: &'a [Credentials], image: &str) -> Option<&'a Credentials> {
    let registry = registry_of(image);
    creds
        .iter()
        .find(|c| c.host == registry || (registry == "docker.io" && c.host == "index.docker.io"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_settings_parse_with_units_and_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "[telemetry]\nspool_size = \"2MiB\"\nmetrics_interval = 5\n",
        )
        .unwrap();
        let (c, _) = AgentConfig::load(Some(&file)).unwrap();
        assert_eq!(c.telemetry.spool_size, 2 << 20);
        assert_eq!(
            c.telemetry.metrics_interval,
            std::time::Duration::from_secs(5)
        );
        std::fs::write(&file, "[telemetry]\nspool_size = \"2 parsecs\"\n").unwrap();
        let e = AgentConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(e.contains("is not a size"), "{e}");
        std::fs::write(&file, "[telemetry]\nspool_size = 100\n").unwrap();
        let e = AgentConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(e.contains("below the smallest"), "{e}");
        std::fs::write(&file, "[telemetry]\nmetrics_interval = \"10ms\"\n").unwrap();
        let e = AgentConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(e.contains("metrics_interval"), "{e}");
        assert_eq!(AgentConfig::default().telemetry, TelemetryConfig::default());
    }

    #[test]
    fn images_name_their_registry() {
        assert_eq!(registry_of("nginx"), "docker.io");
        assert_eq!(registry_of("library/nginx:1"), "docker.io");
        assert_eq!(
            registry_of("registry.example.com/app:2"),
            "registry.example.com"
        );
        assert_eq!(registry_of("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }

    #[test]
    fn configuration_is_checked_and_passwords_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            format!(
                "[[registries]]\nhost = \"r.example\"\nusername = \"u\"\npassword_file = \"{}\"\n",
                pw.display()
            ),
        )
        .unwrap();
        let (_, creds) = AgentConfig::load(Some(&file)).unwrap();
        assert_eq!(creds[0].password, "s3cret");
        assert_eq!(
            credentials_for(&creds, "r.example/app:1").map(|c| c.username.as_str()),
            Some("u")
        );
        assert!(credentials_for(&creds, "nginx").is_none());
        assert!(
            !format!("{creds:?}").contains("s3cret"),
            "passwords stay out of logs"
        );

        std::fs::write(&file, "[[registries]]\nhost = \"r\"\nusername = \"u\"\n").unwrap();
        assert!(
            AgentConfig::load(Some(&file))
                .unwrap_err()
                .to_string()
                .contains("exactly one of password")
        );
        std::fs::write(&file, "[[registrys]]\n").unwrap();
        assert!(
            AgentConfig::load(Some(&file)).is_err(),
            "unknown keys are refused"
        );
        assert!(
            AgentConfig::load(Some(&dir.path().join("none.toml"))).is_err(),
            "a named file must exist"
        );
    }
}
