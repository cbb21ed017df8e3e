//! The server's configuration file: `noco-server run --config PATH`, by default
//! `<data-dir>/server.toml` — the file `noco-server init` writes its settings into (the server
//! URL and the certificate's names, read by [`crate::pki`]). Each section is read by its own
//! reader from [`SECTIONS`] (today `[alerts]`, [`crate::alerts::config`]); a key no section and no
//! init setting knows is refused, with the nearest known key when it is a typo, and every value
//! is checked at start, naming its key and why it is wrong.
//!
//! Readers walk the parsed TOML through [`Table`], which names every key by its path
//! (`alerts.rules.host-disk.threshold`) and refuses the keys it was not told of.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::alerts::config::AlertsConfig;

/// What the configuration file says, every section read and checked.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// The file it was read from (`None`: there was none).
    pub path: Option<PathBuf>,
    pub alerts: AlertsConfig,
}

/// A value or key of the file that is wrong: its key path and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// `alerts.rules.host-disk.threshold`; empty for the whole file.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A section's reader: the section's table, into the config.
type SectionReader = fn(&Table<'_>, &mut ServerConfig) -> Result<(), ConfigError>;

/// Every section of the file and its reader: one table, so a section cannot be known without
/// being read.
const SECTIONS: &[(&str, SectionReader)] = &[("alerts", |t, c| {
    c.alerts = crate::alerts::config::read(t)?;
    Ok(())
})];

/// The settings `noco-server init` writes at the top of `server.toml` (read by
/// [`crate::pki::Pki`]): known keys here, left to it.
fn init_settings() -> Vec<String> {
    let sample = crate::pki::Settings {
        server_url: String::new(),
        dns_names: Vec::new(),
        ip_addrs: Vec::new(),
        server_cert_ttl_secs: 0,
    };
    toml::Table::try_from(&sample)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// Read the configuration: `explicit` (`--config`, which must exist) or
/// `<data_dir>/server.toml` (a missing one is no configuration: every default).
pub fn load(explicit: Option<&Path>, data_dir: &Path) -> anyhow::Result<ServerConfig> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (data_dir.join("server.toml"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(ServerConfig::default());
        }
        Err(e) => anyhow::bail!("reading the configuration file {}: {e}", path.display()),
    };
    let mut config = parse(&text)
        .map_err(|e| anyhow::anyhow!("the configuration file {}: {e}", path.display()))?;
    config.path = Some(path);
    Ok(config)
}

/// Parse and check the text of a configuration file.
pub fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
    let root: toml::Table = toml::from_str(text).map_err(|e| {
        let message = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        match line {
            Some(line) => ConfigError::new(format!("line {line}"), message),
            None => ConfigError::new("", message),
        }
    })?;
    let settings = init_settings();
    let mut known: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
    known.extend(settings.iter().map(String::as_str));
    let root = Table::root(&root);
    root.known(&known)?;
    let mut config = ServerConfig::default();
    for (name, read) in SECTIONS {
        match root.table(name)? {
            Some(section) => read(&section, &mut config)?,
            None => read(&Table::empty(name), &mut config)?,
        }
    }
    Ok(config)
}

/// A table of the file with its key path: typed reads that name the key when the value is
/// wrong.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    path: String,
    table: Option<&'a toml::Table>,
}

impl<'a> Table<'a> {
    fn root(table: &'a toml::Table) -> Table<'a> {
        Table {
            path: String::new(),
            table: Some(table),
        }
    }

    /// A table that is not in the file: every read finds nothing.
    pub fn empty(path: &str) -> Table<'a> {
        Table {
            path: path.to_string(),
            table: None,
        }
    }

    /// The key path of this table (`alerts.rules.host-disk`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of one of its keys.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Its keys, in order.
    pub fn keys(&self) -> Vec<&'a str> {
        self.table
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn get(&self, key: &str) -> Option<&'a toml::Value> {
        self.table.and_then(|t| t.get(key))
    }

    fn wrong(&self, key: &str, what: &str, value: &toml::Value) -> ConfigError {
        ConfigError::new(
            self.key(key),
            format!("expected {what}, found {}", describe(value)),
        )
    }

    /// Refuse a key not in `known`, naming the nearest known one.
    pub fn known(&self, known: &[&str]) -> Result<(), ConfigError> {
        for key in self.keys() {
            if known.contains(&key) {
                continue;
            }
            let reason = match noco_compose::suggest::did_you_mean(key, known.iter().copied()) {
                Some(hint) => format!("unknown key; {hint}"),
                None => format!("unknown key (known here: {})", known.join(", ")),
            };
            return Err(ConfigError::new(self.key(key), reason));
        }
        Ok(())
    }

    pub fn table(&self, key: &str) -> Result<Option<Table<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(Table {
                path: self.key(key),
                table: Some(t),
            })),
            Some(v) => Err(self.wrong(key, "a table", v)),
        }
    }

    /// `[[key]]`: an array of tables, each named `key[i]`.
    pub fn tables(&self, key: &str) -> Result<Vec<Table<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    toml::Value::Table(t) => Ok(Table {
                        path: format!("{}[{i}]", self.key(key)),
                        table: Some(t),
                    }),
                    v => Err(ConfigError::new(
                        format!("{}[{i}]", self.key(key)),
                        format!("expected a table, found {}", describe(v)),
                    )),
                })
                .collect(),
            Some(v) => Err(self.wrong(key, "an array of tables ([[…]])", v)),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "true or false", v)),
        }
    }

    /// An integer or a float.
    pub fn number(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => Ok(Some(*n as f64)),
            Some(toml::Value::Float(f)) if f.is_finite() => Ok(Some(*f)),
            Some(v) => Err(self.wrong(key, "a number", v)),
        }
    }

    /// A duration as every noco program reads one ([`noco_proto::duration::parse`]): `"30s"`,
    /// `"5m"`, `"14d"`, or a number of seconds.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => noco_proto::duration::parse(s)
                .map(Some)
                .map_err(|e| ConfigError::new(self.key(key), e)),
            Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Some(Duration::from_secs(*n as u64))),
            Some(v) => Err(self.wrong(key, "a duration (\"30s\", \"5m\", \"4h\")", v)),
        }
    }

    /// A size as every noco program reads one ([`noco_proto::size::parse`]): `"8MiB"`, or a
    /// number of bytes.
    pub fn size(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => noco_proto::size::parse(s)
                .map(Some)
                .map_err(|e| ConfigError::new(self.key(key), e)),
            Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Some(*n as u64)),
            Some(v) => Err(self.wrong(key, "a size (\"512KiB\", \"8MiB\")", v)),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    toml::Value::String(s) => Ok(s.as_str()),
                    v => Err(ConfigError::new(
                        format!("{}[{i}]", self.key(key)),
                        format!("expected a string, found {}", describe(v)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.wrong(key, "an array of strings", v)),
        }
    }

    /// An inline table of strings: `{ Authorization = "Bearer …" }`.
    pub fn string_map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => t
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::String(s) => Ok((k.clone(), s.clone())),
                    v => Err(ConfigError::new(
                        format!("{}.{k}", self.key(key)),
                        format!("expected a string, found {}", describe(v)),
                    )),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(Some),
            Some(v) => Err(self.wrong(key, "a table of strings", v)),
        }
    }
}

/// How a value reads in a message: its type and, for a short scalar, the value.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        toml::Value::String(_) => "a string".to_string(),
        toml::Value::Integer(n) => format!("the integer {n}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

/// `text` (a `server.toml` as `noco-server init` wrote it and an administrator then edited) with
/// its init settings replaced by `settings` (TOML of top-level keys only), everything else kept
/// as written — sections, comments, order. `noco-server cert add-san` rewrites the settings this
/// way, so that it never loses the `[alerts]` an administrator added. Falls back to the parsed
/// file re-encoded (which loses only comments) when the text cannot be edited safely.
pub fn replace_settings(text: &str, settings: &str) -> Result<String, toml::ser::Error> {
    let new_settings: toml::Table = match toml::from_str(settings) {
        Ok(t) => t,
        Err(_) => return Ok(settings.to_string()),
    };
    let Ok(mut whole) = toml::from_str::<toml::Table>(text) else {
        // Not TOML: nothing else can be kept.
        return Ok(settings.to_string());
    };
    for (k, v) in &new_settings {
        whole.insert(k.clone(), v.clone());
    }
    // The top-level keys come before the first table header; replace the settings among them
    // and keep the rest of the text as it is.
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .unwrap_or(lines.len());
    let head: String = lines[..header].concat();
    let tail: String = lines[header..].concat();
    if let Ok(head_table) = toml::from_str::<toml::Table>(&head) {
        let mut kept = String::new();
        let others: Vec<&String> = head_table
            .keys()
            .filter(|k| !new_settings.contains_key(*k))
            .collect();
        // Keep the head's comments and blank lines and any key that is not a setting; a
        // setting's own line(s) are dropped only when they parse alone as that one key.
        for line in &lines[..header] {
            let trimmed = line.trim();
            let is_setting = toml::from_str::<toml::Table>(trimmed)
                .ok()
                .is_some_and(|t| t.len() == 1 && t.keys().all(|k| new_settings.contains_key(k)));
            if !is_setting {
                kept.push_str(line);
            }
        }
        let mut candidate = settings.to_string();
        if !candidate.ends_with('\n') {
            candidate.push('\n');
        }
        candidate.push_str(&kept);
        candidate.push_str(&tail);
        let same = toml::from_str::<toml::Table>(&candidate).ok() == Some(whole.clone());
        if same && others.iter().all(|k| candidate.contains(k.as_str())) {
            return Ok(candidate);
        }
    }
    toml::to_string(&whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_empty_file_and_the_init_settings_are_every_default() {
        let c = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.alerts.receivers.is_empty());
        let init = "server_url = \"https://noco:7443\"\ndns_names = [\"noco\"]\nip_addrs = []\nserver_cert_ttl_secs = 31536000\n";
        parse(init).unwrap_or_else(|e| panic!("{e}"));
        // And `init`'s reader takes the file with an [alerts] section.
        let both = format!("{init}\n[alerts]\ngroup_wait = \"10s\"\n");
        let settings: crate::pki::Settings =
            toml::from_str(&both).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.server_url, "https://noco:7443");
        let c = parse(&both).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.alerts.group_wait, Duration::from_secs(10));
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_nearest_known_one() {
        assert_eq!(
            error("[alert]\n"),
            "alert: unknown key; did you mean \"alerts\"?"
        );
        assert!(error("color = 1\n").starts_with("color: unknown key (known here: alerts, "));
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused_with_its_line() {
        let e = error("[alerts]\ngroup_wait = \n");
        assert!(e.starts_with("line 2: "), "{e}");
    }

    #[test]
    fn a_missing_default_file_is_no_configuration_and_a_missing_explicit_one_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = load(None, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.path.is_none());
        let missing = dir.path().join("alerts.toml");
        let e = load(Some(&missing), dir.path())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        std::fs::write(&missing, "[alerts]\ngroup_wait = \"soon\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = load(Some(&missing), dir.path())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            e.contains("alerts.group_wait: \"soon\" is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn rewriting_the_init_settings_keeps_every_other_line() {
        let text = "# the server\nserver_url = \"https://a:7443\"\ndns_names = [\"a\"]\nip_addrs = []\nserver_cert_ttl_secs = 10\n\n[alerts]\n# ops channel\ngroup_wait = \"10s\"\n";
        let settings = "server_url = \"https://a:7443\"\ndns_names = [\"a\", \"b\"]\nip_addrs = []\nserver_cert_ttl_secs = 10\n";
        let out = replace_settings(text, settings).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("# ops channel\ngroup_wait = \"10s\""), "{out}");
        assert!(out.contains("# the server"), "{out}");
        assert!(out.contains("dns_names = [\"a\", \"b\"]"), "{out}");
        let parsed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed["dns_names"].as_array().map(Vec::len), Some(2));
        assert!(parsed.contains_key("alerts"));
        // A file of settings only is just the new settings.
        assert_eq!(
            replace_settings(settings, settings).unwrap_or_else(|e| panic!("{e}")),
            settings
        );
    }
}
