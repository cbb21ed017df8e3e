//! What differs between two loaded compose projects: services, networks, volumes, secrets and
//! configs added, removed or changed; for changed ones each value that differs, by its path
//! (`healthcheck.interval`, `environment.MODE`), shown as a person writes it in a compose file
//! (`2s`, `512m`, `0400`, `prod`) rather than as the model holds it (`{"secs":2,"nanos":0}`,
//! bytes); and for services whether their containers would be recreated (the config hash
//! differs) or only scaled. Secret and config contents are never shown, nor their digests.
//! Pure: works on [`noco_compose::model`] values only. [`DiffView`] is how `stack diff` shows
//! it: the derived JSON, and the lines of the table output.

use std::collections::{BTreeMap, BTreeSet};

use noco_compose::model::{Project, Service};
use serde::Serialize;
use serde_json::Value;

use crate::output::{short_revision, truncate};
use noco_proto::duration;

/// How long a value may be in the table output before it is cut.
pub const VALUE_WIDTH: usize = 80;

/// Keys whose numbers are byte sizes (`memory`, `shm_size`, a tmpfs `size`).
const SIZE_KEYS: &[&str] = &["memory", "reservation_memory", "shm_size", "size"];
/// Keys whose numbers are permission bits.
const MODE_KEYS: &[&str] = &["mode"];
/// Keys that hold (a digest of) a secret's or config's content: never shown.
const HIDDEN_KEYS: &[&str] = &["content", "digest"];
/// How a hidden value reads inside a larger one.
const HIDDEN: &str = "…";

/// One value that differs, at its path in the service (or network, volume, secret, config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// `image`, `healthcheck.interval`, `environment.MODE`, `ports[0].published`.
    pub field: String,
    /// As written in a compose file; `null` when absent (or hidden) on that side.
    pub old: Option<String>,
    pub new: Option<String>,
    /// A secret's or config's content changed: neither side is shown.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// Networks, volumes, secrets or configs of two projects compared by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SectionDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
}

/// A network, volume, secret or config in both projects, and its values that differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed {
    pub name: String,
    pub fields: Vec<FieldChange>,
}

impl SectionDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Services of two projects compared by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServicesDiff {
    /// Created on the hosts.
    pub added: Vec<String>,
    /// Their containers are removed from the hosts.
    pub removed: Vec<String>,
    pub changed: Vec<ChangedService>,
}

impl ServicesDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// The services whose containers would be replaced.
    pub fn recreated(&self) -> Vec<&str> {
        self.changed
            .iter()
            .filter(|c| c.recreate)
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// A service in both projects and its values that differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangedService {
    pub name: String,
    /// Its containers would be recreated (its configuration changed); otherwise only its
    /// replica count changed, and the running containers stay.
    pub recreate: bool,
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProjectDiff {
    pub services: ServicesDiff,
    pub networks: SectionDiff,
    pub volumes: SectionDiff,
    pub secrets: SectionDiff,
    pub configs: SectionDiff,
}

impl ProjectDiff {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.networks.is_empty()
            && self.volumes.is_empty()
            && self.secrets.is_empty()
            && self.configs.is_empty()
    }
}

/// Compare two projects; `None` for a stack that does not exist yet (everything is added).
/// A service is changed when its config hash differs (it would be recreated), or when only
/// what the hash leaves out (its replica count) does.
pub fn diff_projects(old: Option<&Project>, new: &Project) -> ProjectDiff {
    let (services, networks, volumes, secrets, configs) = match old {
        Some(p) => (
            diff_services(&p.services, &new.services),
            diff_section(&p.networks, &new.networks),
            diff_section(&p.volumes, &new.volumes),
            diff_section(&p.secrets, &new.secrets),
            diff_section(&p.configs, &new.configs),
        ),
        None => (
            diff_services(&BTreeMap::new(), &new.services),
            diff_section(&BTreeMap::new(), &new.networks),
            diff_section(&BTreeMap::new(), &new.volumes),
            diff_section(&BTreeMap::new(), &new.secrets),
            diff_section(&BTreeMap::new(), &new.configs),
        ),
    };
    ProjectDiff {
        services,
        networks,
        volumes,
        secrets,
        configs,
    }
}

fn diff_services(old: &BTreeMap<String, Service>, new: &BTreeMap<String, Service>) -> ServicesDiff {
    let (added, removed, both) = by_name(old, new);
    let changed = both
        .into_iter()
        .filter_map(|(name, before, after)| {
            let fields = diff_values(before, after);
            (!fields.is_empty()).then(|| ChangedService {
                name,
                recreate: noco_compose::config_hash(before) != noco_compose::config_hash(after),
                fields,
            })
        })
        .collect();
    ServicesDiff {
        added,
        removed,
        changed,
    }
}

fn diff_section<T: Serialize>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> SectionDiff {
    let (added, removed, both) = by_name(old, new);
    let changed = both
        .into_iter()
        .filter_map(|(name, before, after)| {
            let fields = diff_values(before, after);
            (!fields.is_empty()).then_some(Changed { name, fields })
        })
        .collect();
    SectionDiff {
        added,
        removed,
        changed,
    }
}

/// Names only in `new`, names only in `old`, and the pairs in both.
#[allow(clippy::type_complexity)]
fn by_name<'a, T>(
    old: &'a BTreeMap<String, T>,
    new: &'a BTreeMap<String, T>,
) -> (Vec<String>, Vec<String>, Vec<(String, &'a T, &'a T)>) {
    let added = new
        .keys()
        .filter(|n| !old.contains_key(*n))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|n| !new.contains_key(*n))
        .cloned()
        .collect();
    let both = old
        .iter()
        .filter_map(|(n, a)| new.get(n).map(|b| (n.clone(), a, b)))
        .collect();
    (added, removed, both)
}

/// Every value that differs between two serializations, by path.
fn diff_values<T: Serialize>(old: &T, new: &T) -> Vec<FieldChange> {
    let old = to_value(old);
    let new = to_value(new);
    let mut out = Vec::new();
    walk("", "", Some(&old), Some(&new), &mut out);
    out
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value)
        .unwrap_or_else(|e| Value::String(format!("(cannot serialize: {e})")))
}

/// Compare `old` and `new` at `path` (whose last key is `key`), pushing a change per leaf.
fn walk(
    path: &str,
    key: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    // Absent and null say the same: nothing is set.
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    if old == new {
        return;
    }
    if HIDDEN_KEYS.contains(&key) {
        out.push(FieldChange {
            field: path.to_string(),
            old: None,
            new: None,
            hidden: true,
        });
        return;
    }
    let nested = |v: Option<&Value>| v.is_none_or(|v| v.is_object() && !is_duration(v));
    if nested(old) && nested(new) {
        let empty = serde_json::Map::new();
        let a = old.and_then(Value::as_object).unwrap_or(&empty);
        let b = new.and_then(Value::as_object).unwrap_or(&empty);
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            walk(&join(path, k), k, a.get(k), b.get(k), out);
        }
        return;
    }
    if let (Some(Value::Array(a)), Some(Value::Array(b))) = (old, new) {
        if a.len() == b.len() && a.iter().chain(b).any(Value::is_object) {
            // Same length: element by element (`ports[0].published`).
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), key, Some(x), Some(y), out);
            }
        } else if a.iter().chain(b).any(Value::is_object) {
            // Elements removed and added, each on its own line.
            for x in a.iter().filter(|x| !b.contains(x)) {
                out.push(change(path, Some(show(key, x)), None));
            }
            for y in b.iter().filter(|y| !a.contains(y)) {
                out.push(change(path, None, Some(show(key, y))));
            }
        } else {
            out.push(change(
                path,
                Some(show(key, &old_or_null(old))),
                Some(show(key, &old_or_null(new))),
            ));
        }
        return;
    }
    out.push(change(
        path,
        old.map(|v| show(key, v)),
        new.map(|v| show(key, v)),
    ));
}

fn old_or_null(v: Option<&Value>) -> Value {
    v.cloned().unwrap_or(Value::Null)
}

fn change(path: &str, old: Option<String>, new: Option<String>) -> FieldChange {
    FieldChange {
        field: path.to_string(),
        old,
        new,
        hidden: false,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `{"secs": 2, "nanos": 0}`: how serde writes a `Duration`.
fn is_duration(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.len() == 2
            && o.get("secs").is_some_and(Value::is_u64)
            && o.get("nanos").is_some_and(Value::is_u64)
    })
}

/// A value as a compose file writes it: durations `2s`, sizes `512m`, modes `0400`, strings
/// unquoted where YAML allows, lists and mappings in flow style; secret contents hidden.
pub fn show(key: &str, value: &Value) -> String {
    if HIDDEN_KEYS.contains(&key) {
        return HIDDEN.to_string();
    }
    match value {
        Value::Null => "(none)".to_string(),
        v if is_duration(v) => {
            let secs = v.get("secs").and_then(Value::as_u64).unwrap_or(0);
            let nanos = v.get("nanos").and_then(Value::as_u64).unwrap_or(0);
            let nanos = u32::try_from(nanos).unwrap_or(0);
            duration::format(std::time::Duration::new(secs, nanos))
        }
        Value::Number(n) if SIZE_KEYS.contains(&key) => {
            n.as_u64().map_or_else(|| n.to_string(), bytes)
        }
        Value::Number(n) if MODE_KEYS.contains(&key) => n
            .as_u64()
            .map_or_else(|| n.to_string(), |m| format!("{m:04o}")),
        Value::String(s) => plain(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| show(key, v)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}: {}", show(k, v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

/// A byte size as compose takes it: `1g`, `512m`, `64k`, else the number of bytes.
fn bytes(n: u64) -> String {
    for (unit, size) in [
        ("t", 1u64 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

/// A string as YAML shows it plainly, quoted only where it would read as something else.
fn plain(s: &str) -> String {
    let needs_quotes = s.is_empty()
        || s.trim() != s
        || s == "(none)"
        || s.contains(['\n', ',', '[', ']', '{', '}', '"'])
        || s.contains(": ");
    if needs_quotes {
        Value::String(s.to_string()).to_string()
    } else {
        s.to_string()
    }
}

/// Names present only in `new` (added) and only in `old` (removed), sorted.
pub fn names_diff<'a>(
    old: impl IntoIterator<Item = &'a str>,
    new: impl IntoIterator<Item = &'a str>,
) -> NamesDiff {
    let old: BTreeSet<&str> = old.into_iter().collect();
    let new: BTreeSet<&str> = new.into_iter().collect();
    NamesDiff {
        added: new.difference(&old).map(|s| s.to_string()).collect(),
        removed: old.difference(&new).map(|s| s.to_string()).collect(),
    }
}

/// Variable or file names added and removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NamesDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl NamesDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// What `stack diff` shows: a stack's current revision against the local files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffView {
    pub name: String,
    /// The stack exists on the server.
    pub exists: bool,
    /// Its current revision; empty when it does not exist.
    pub current_revision: String,
    /// The revision the local files make.
    pub revision: String,
    /// The local files make the current revision.
    pub unchanged: bool,
    /// `services`, `networks`, `volumes`, `secrets` and `configs`.
    #[serde(flatten)]
    pub changes: ProjectDiff,
    /// Variable names (values are masked by the server, so not compared).
    pub env: NamesDiff,
    /// Shipped file names (contents are not sent by the server, so not compared).
    pub files: NamesDiff,
}

impl DiffView {
    /// Nothing differs that nococtl can see: services, networks, volumes, secrets, configs,
    /// variable and file names are the same.
    pub fn nothing_shown(&self) -> bool {
        self.changes.is_empty() && self.env.is_empty() && self.files.is_empty()
    }

    /// The heading line: which revisions are compared.
    pub fn heading(&self) -> String {
        if self.exists {
            format!(
                "stack {}: current revision {}, these files make {}",
                self.name,
                short_revision(&self.current_revision),
                short_revision(&self.revision)
            )
        } else {
            format!(
                "stack {} does not exist yet: applying creates it",
                self.name
            )
        }
    }

    /// `+ service cache (created)`, `- service db (removed)`, `~ service web (recreated)`
    /// with a line per value that differs, then networks, volumes, secrets, configs,
    /// `+ env NAME`, `- file PATH`, and which services would be recreated.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let services = &self.changes.services;
        lines.extend(
            services
                .added
                .iter()
                .map(|n| format!("+ service {n} (created)")),
        );
        lines.extend(
            services
                .removed
                .iter()
                .map(|n| format!("- service {n} (removed)")),
        );
        for c in &services.changed {
            let how = if c.recreate {
                "recreated"
            } else {
                "scaled, not recreated"
            };
            lines.push(format!("~ service {} ({how})", c.name));
            lines.extend(c.fields.iter().map(field_line));
        }
        for (kind, section) in [
            ("network", &self.changes.networks),
            ("volume", &self.changes.volumes),
            ("secret", &self.changes.secrets),
            ("config", &self.changes.configs),
        ] {
            lines.extend(section.added.iter().map(|n| format!("+ {kind} {n}")));
            lines.extend(section.removed.iter().map(|n| format!("- {kind} {n}")));
            for c in &section.changed {
                lines.push(format!("~ {kind} {}", c.name));
                lines.extend(c.fields.iter().map(field_line));
            }
        }
        lines.extend(self.env.added.iter().map(|k| format!("+ env {k}")));
        lines.extend(self.env.removed.iter().map(|k| format!("- env {k}")));
        lines.extend(self.files.added.iter().map(|f| format!("+ file {f}")));
        lines.extend(self.files.removed.iter().map(|f| format!("- file {f}")));
        if self.exists && !self.unchanged {
            let recreated = services.recreated();
            lines.push(if recreated.is_empty() {
                "no service would be recreated".to_string()
            } else {
                format!(
                    "would recreate {} (their containers are replaced): {}",
                    count(recreated.len(), "service"),
                    recreated.join(", ")
                )
            });
        }
        lines
    }
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `    image: nginx:1.25 → nginx:1.27`, `    + environment.NEW: x`, `    - ports: {…}`.
fn field_line(c: &FieldChange) -> String {
    let cut = |v: &str| truncate(v, VALUE_WIDTH);
    match (&c.old, &c.new) {
        _ if c.hidden => format!("    {}: changed (not shown)", c.field),
        (Some(old), Some(new)) => format!("    {}: {} → {}", c.field, cut(old), cut(new)),
        (None, Some(new)) => format!("    + {}: {}", c.field, cut(new)),
        (Some(old), None) => format!("    - {}: {}", c.field, cut(old)),
        (None, None) => format!("    {}: changed", c.field),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use noco_compose::LoadOptions;
    use serde_json::json;

    use super::*;

    fn project(yaml: &str) -> Project {
        project_with(yaml, &BTreeMap::new())
    }

    fn project_with(yaml: &str, files: &BTreeMap<String, String>) -> Project {
        let vars = BTreeMap::new();
        let opts = LoadOptions {
            project_name: Some("shop"),
            variables: &vars,
            files,
            profiles: &[],
            directory: None,
        };
        match noco_compose::load(yaml, &opts) {
            Ok(l) => l.project,
            Err(d) => panic!("{d:?}"),
        }
    }

    fn diff(old: &str, new: &str) -> ProjectDiff {
        diff_projects(Some(&project(old)), &project(new))
    }

    /// The lines of the one changed service.
    fn service_lines(old: &str, new: &str) -> Vec<String> {
        let d = diff(old, new);
        let [c] = d.services.changed.as_slice() else {
            panic!("{:?}", d.services)
        };
        c.fields.iter().map(field_line).collect()
    }

    const BASE: &str = "services:\n  web:\n    image: nginx:1.25\n    environment:\n      MODE: prod\n  db:\n    image: postgres:16\n";

    #[test]
    fn the_same_file_has_no_differences() {
        assert!(diff(BASE, BASE).is_empty());
    }

    #[test]
    fn added_and_removed_services_are_listed_by_name() {
        let d = diff(
            BASE,
            "services:\n  web:\n    image: nginx:1.25\n    environment:\n      MODE: prod\n  cache:\n    image: redis:7\n",
        );
        assert_eq!(d.services.added, ["cache"]);
        assert_eq!(d.services.removed, ["db"]);
        assert!(d.services.changed.is_empty(), "{:?}", d.services.changed);
    }

    #[test]
    fn a_stack_that_does_not_exist_yet_adds_everything() {
        let d = diff_projects(None, &project(BASE));
        assert_eq!(d.services.added, ["db", "web"]);
        assert!(d.services.changed.is_empty());
    }

    #[test]
    fn a_changed_service_lists_each_value_that_differs_as_written() {
        let d = diff(
            BASE,
            "services:\n  web:\n    image: nginx:1.27\n    environment:\n      MODE: prod\n    privileged: true\n  db:\n    image: postgres:16\n",
        );
        let [c] = d.services.changed.as_slice() else {
            panic!("{:?}", d.services.changed)
        };
        assert_eq!(c.name, "web");
        assert!(c.recreate);
        assert_eq!(
            c.fields,
            [
                change(
                    "image",
                    Some("nginx:1.25".into()),
                    Some("nginx:1.27".into())
                ),
                change("privileged", Some("false".into()), Some("true".into())),
            ]
        );
    }

    #[test]
    fn durations_show_with_their_units() {
        let old = "services:\n  web:\n    image: nginx\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 2s\n      timeout: 1m30s\n";
        let new = "services:\n  web:\n    image: nginx\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 3s\n      timeout: 500ms\n    stop_grace_period: 1m\n";
        assert_eq!(
            service_lines(old, new),
            [
                "    healthcheck.interval: 2s → 3s",
                "    healthcheck.timeout: 1m30s → 500ms",
                "    + stop_grace_period: 1m",
            ]
        );
    }

    #[test]
    fn sizes_show_in_compose_units() {
        let old = "services:\n  web:\n    image: nginx\n    mem_limit: 512m\n    shm_size: 64m\n";
        let new = "services:\n  web:\n    image: nginx\n    mem_limit: 1g\n    shm_size: 1000\n";
        assert_eq!(
            service_lines(old, new),
            [
                "    deploy.resources.memory: 512m → 1g",
                "    shm_size: 64m → 1000",
            ]
        );
    }

    #[test]
    fn environment_changes_show_per_variable() {
        let old = "services:\n  web:\n    image: nginx\n    environment:\n      MODE: prod\n      OLD: x\n      SAME: s\n";
        let new = "services:\n  web:\n    image: nginx\n    environment:\n      MODE: dev\n      NEW: \"\"\n      SAME: s\n";
        assert_eq!(
            service_lines(old, new),
            [
                "    environment.MODE: prod → dev",
                "    + environment.NEW: \"\"",
                "    - environment.OLD: x",
            ]
        );
    }

    #[test]
    fn lists_show_in_flow_style_and_list_elements_by_index() {
        let old = "services:\n  web:\n    image: nginx\n    command: [sleep, \"1\"]\n    ports: [\"8080:80\"]\n";
        let new = "services:\n  web:\n    image: nginx\n    command: [sleep, \"2\"]\n    ports: [\"8081:80\"]\n";
        let lines = service_lines(old, new);
        assert_eq!(lines[0], "    command: [sleep, 1] → [sleep, 2]");
        assert!(
            lines[1].starts_with("    ports[0].published: ") && lines[1].ends_with("8080 → 8081"),
            "{lines:?}"
        );
        let more = "services:\n  web:\n    image: nginx\n    command: [sleep, \"1\"]\n    ports: [\"8080:80\", \"9090:90\"]\n";
        let lines = service_lines(old, more);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("    + ports: {"), "{lines:?}");
        assert!(lines[0].contains("target: 90"), "{lines:?}");
    }

    #[test]
    fn a_replica_change_is_a_change_that_recreates_nothing() {
        let old = project("services:\n  web:\n    image: nginx\n");
        let new = project("services:\n  web:\n    image: nginx\n    deploy:\n      replicas: 3\n");
        let d = diff_projects(Some(&old), &new);
        let [c] = d.services.changed.as_slice() else {
            panic!("{:?}", d.services.changed)
        };
        assert!(!c.recreate);
        assert_eq!(
            c.fields,
            [change(
                "deploy.replicas",
                Some("1".into()),
                Some("3".into())
            )]
        );
        assert!(d.services.recreated().is_empty());
    }

    #[test]
    fn key_order_and_short_syntax_do_not_count_as_changes() {
        let a = project("services:\n  web:\n    image: nginx\n    environment: [A=1, B=2]\n");
        let b = project(
            "services:\n  web:\n    environment:\n      B: \"2\"\n      A: \"1\"\n    image: nginx\n",
        );
        assert!(diff_projects(Some(&a), &b).is_empty());
    }

    #[test]
    fn networks_and_volumes_are_compared_too() {
        let d = diff(
            "services:\n  web:\n    image: nginx\nvolumes:\n  data: {}\n",
            "services:\n  web:\n    image: nginx\nvolumes:\n  logs: {}\n",
        );
        assert_eq!(d.volumes.added, ["logs"]);
        assert_eq!(d.volumes.removed, ["data"]);
        assert!(d.services.is_empty());
    }

    #[test]
    fn secret_contents_and_their_digests_are_never_shown() {
        let yaml = "services:\n  web:\n    image: nginx\n    secrets: [db_password]\nsecrets:\n  db_password:\n    file: ./db_password.txt\n";
        let files =
            |content: &str| BTreeMap::from([("db_password.txt".to_string(), content.to_string())]);
        let old = project_with(yaml, &files("hunter2"));
        let new = project_with(yaml, &files("correct horse"));
        let d = diff_projects(Some(&old), &new);
        let view = view_of(d.clone());
        let text = format!(
            "{}\n{}",
            view.lines().join("\n"),
            serde_json::to_string(&view.changes).unwrap()
        );
        assert!(
            !text.contains("hunter2") && !text.contains("correct horse"),
            "{text}"
        );
        assert!(!text.contains("sha256:"), "no digest either: {text}");
        assert_eq!(d.services.recreated(), ["web"], "{text}");
        assert!(
            view.lines()
                .iter()
                .any(|l| l.ends_with(": changed (not shown)")),
            "{text}"
        );
    }

    #[test]
    fn names_diff_reports_added_and_removed() {
        let names = names_diff(["A", "B"], ["B", "C"]);
        assert_eq!(names.added, ["C"]);
        assert_eq!(names.removed, ["A"]);
    }

    #[test]
    fn values_show_as_a_compose_file_writes_them() {
        assert_eq!(show("interval", &json!({"secs": 2, "nanos": 0})), "2s");
        assert_eq!(show("memory", &json!(536_870_912)), "512m");
        assert_eq!(show("memory", &json!(1_073_741_824)), "1g");
        assert_eq!(show("memory", &json!(1000)), "1000");
        assert_eq!(show("mode", &json!(0o440)), "0440");
        assert_eq!(show("replicas", &json!(2)), "2");
        assert_eq!(show("image", &json!("nginx:1.27")), "nginx:1.27");
        assert_eq!(show("x", &json!("")), "\"\"");
        assert_eq!(show("x", &json!(" padded")), "\" padded\"");
        assert_eq!(show("x", &json!("a, b")), "\"a, b\"");
        assert_eq!(show("x", &Value::Null), "(none)");
        assert_eq!(
            show(
                "healthcheck",
                &json!({"interval": {"secs": 90, "nanos": 0}, "retries": 3, "timeout": null})
            ),
            "{interval: 1m30s, retries: 3}"
        );
        assert_eq!(show("digest", &json!("sha256:abc")), "…");
    }

    #[test]
    fn long_values_are_cut_to_the_width_with_an_ellipsis() {
        let long = "x".repeat(200);
        let line = field_line(&change("image", Some(long.clone()), Some("y".into())));
        assert!(
            line.contains(&format!("{}…", "x".repeat(VALUE_WIDTH - 1))),
            "{line}"
        );
    }

    fn change(field: &str, old: Option<String>, new: Option<String>) -> FieldChange {
        FieldChange {
            field: field.into(),
            old,
            new,
            hidden: false,
        }
    }

    fn view_of(changes: ProjectDiff) -> DiffView {
        DiffView {
            name: "shop".into(),
            exists: true,
            current_revision: format!("sha256:{}", "1".repeat(64)),
            revision: format!("sha256:{}", "2".repeat(64)),
            unchanged: false,
            changes,
            env: NamesDiff::default(),
            files: NamesDiff::default(),
        }
    }

    fn view() -> DiffView {
        let mut v = view_of(ProjectDiff {
            services: ServicesDiff {
                added: vec!["cache".into()],
                removed: vec!["db".into()],
                changed: vec![
                    ChangedService {
                        name: "web".into(),
                        recreate: true,
                        fields: vec![change(
                            "healthcheck.interval",
                            Some("2s".into()),
                            Some("3s".into()),
                        )],
                    },
                    ChangedService {
                        name: "worker".into(),
                        recreate: false,
                        fields: vec![change(
                            "deploy.replicas",
                            Some("1".into()),
                            Some("2".into()),
                        )],
                    },
                ],
            },
            ..Default::default()
        });
        v.env.added = vec!["NEW".into()];
        v.files.removed = vec!["old.conf".into()];
        v
    }

    #[test]
    fn diff_lines_mark_added_removed_changed_and_recreated() {
        let v = view();
        assert_eq!(
            v.heading(),
            "stack shop: current revision 111111111111, these files make 222222222222"
        );
        assert_eq!(
            v.lines(),
            [
                "+ service cache (created)",
                "- service db (removed)",
                "~ service web (recreated)",
                "    healthcheck.interval: 2s → 3s",
                "~ service worker (scaled, not recreated)",
                "    deploy.replicas: 1 → 2",
                "+ env NEW",
                "- file old.conf",
                "would recreate 1 service (their containers are replaced): web",
            ]
        );
        assert!(!v.nothing_shown());
    }

    #[test]
    fn a_diff_shows_as_json_with_each_section_and_the_names() {
        let v = view();
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({
                "name": "shop", "exists": true, "current_revision": v.current_revision,
                "revision": v.revision, "unchanged": false,
                "services": {
                    "added": ["cache"], "removed": ["db"],
                    "changed": [
                        {
                            "name": "web", "recreate": true,
                            "fields": [{"field": "healthcheck.interval", "old": "2s", "new": "3s"}],
                        },
                        {
                            "name": "worker", "recreate": false,
                            "fields": [{"field": "deploy.replicas", "old": "1", "new": "2"}],
                        },
                    ],
                },
                "networks": {"added": [], "removed": [], "changed": []},
                "volumes": {"added": [], "removed": [], "changed": []},
                "secrets": {"added": [], "removed": [], "changed": []},
                "configs": {"added": [], "removed": [], "changed": []},
                "env": {"added": ["NEW"], "removed": []},
                "files": {"added": [], "removed": ["old.conf"]},
            })
        );
    }
}
