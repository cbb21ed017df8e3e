//! What differs between two loaded compose projects: services, networks and volumes added,
//! removed or changed, and for changed ones the top-level fields that differ (old → new).
//! Pure: works on [`noco_compose::model`] values only. [`DiffView`] is how `stack diff` shows
//! it: the derived JSON, and the lines of the table output.

use std::collections::{BTreeMap, BTreeSet};

use noco_compose::model::{Project, Service};
use serde::Serialize;
use serde_json::Value;

use crate::output::{short_revision, truncate};

/// How long a value may be in the table output before it is cut.
pub const VALUE_WIDTH: usize = 80;

/// One top-level field of a service (or network, volume) that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    /// `null` when the field is absent on that side.
    pub old: Value,
    pub new: Value,
}

/// Services, networks or volumes of two projects compared by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SectionDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
}

/// A service (or network, volume) in both projects, and its fields that differ.
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

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProjectDiff {
    pub services: SectionDiff,
    pub networks: SectionDiff,
    pub volumes: SectionDiff,
}

impl ProjectDiff {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.networks.is_empty() && self.volumes.is_empty()
    }
}

/// Compare two projects. A service is changed when its config hash differs, or when anything
/// the hash leaves out (its replica count) does.
pub fn diff_projects(old: &Project, new: &Project) -> ProjectDiff {
    ProjectDiff {
        services: diff_section(&old.services, &new.services, diff_services),
        networks: diff_section(&old.networks, &new.networks, diff_values),
        volumes: diff_section(&old.volumes, &new.volumes, diff_values),
    }
}

/// The top-level fields of a service that differ; empty when they are the same.
pub fn diff_services(old: &Service, new: &Service) -> Vec<FieldChange> {
    if noco_compose::config_hash(old) == noco_compose::config_hash(new) && old == new {
        return Vec::new();
    }
    diff_values(old, new)
}

/// Field by field over the serde_json serialization of two values.
fn diff_values<T: Serialize>(old: &T, new: &T) -> Vec<FieldChange> {
    let old = to_object(old);
    let new = to_object(new);
    let fields: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    fields
        .into_iter()
        .filter_map(|field| {
            let before = old.get(field).cloned().unwrap_or(Value::Null);
            let after = new.get(field).cloned().unwrap_or(Value::Null);
            (before != after).then(|| FieldChange {
                field: field.clone(),
                old: before,
                new: after,
            })
        })
        .collect()
}

fn to_object<T: Serialize>(value: &T) -> serde_json::Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        Ok(other) => serde_json::Map::from_iter([("value".to_owned(), other)]),
        Err(e) => serde_json::Map::from_iter([(
            "value".to_owned(),
            Value::String(format!("(cannot serialize: {e})")),
        )]),
    }
}

fn diff_section<T>(
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    fields: impl Fn(&T, &T) -> Vec<FieldChange>,
) -> SectionDiff {
    let mut diff = SectionDiff::default();
    for (name, before) in old {
        match new.get(name) {
            None => diff.removed.push(name.clone()),
            Some(after) => {
                let changes = fields(before, after);
                if !changes.is_empty() {
                    diff.changed.push(Changed {
                        name: name.clone(),
                        fields: changes,
                    });
                }
            }
        }
    }
    diff.added = new
        .keys()
        .filter(|name| !old.contains_key(*name))
        .cloned()
        .collect();
    diff
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

/// A value as compact JSON, cut to `max` characters (with `…`); absent values read `(none)`.
pub fn show_value(value: &Value, max: usize) -> String {
    let text = match value {
        Value::Null => "(none)".to_owned(),
        other => other.to_string(),
    };
    truncate(&text, max)
}

/// For display: two objects cut down to the keys whose values differ (recursively), so that
/// `deploy` shows `{"replicas":1} → {"replicas":2}` rather than two long, equal-looking
/// prefixes. Other values are returned as they are.
pub fn narrowed(old: &Value, new: &Value) -> (Value, Value) {
    let (Value::Object(a), Value::Object(b)) = (old, new) else {
        return (old.clone(), new.clone());
    };
    let mut left = serde_json::Map::new();
    let mut right = serde_json::Map::new();
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let (x, y) = narrowed(x, y);
                left.insert(key.clone(), x);
                right.insert(key.clone(), y);
            }
            (Some(x), None) => {
                left.insert(key.clone(), x.clone());
            }
            (None, Some(y)) => {
                right.insert(key.clone(), y.clone());
            }
            (None, None) => {}
        }
    }
    (Value::Object(left), Value::Object(right))
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
    /// `services`, `networks` and `volumes`.
    #[serde(flatten)]
    pub changes: ProjectDiff,
    /// Variable names (values are masked by the server, so not compared).
    pub env: NamesDiff,
    /// Shipped file names (contents are not sent by the server, so not compared).
    pub files: NamesDiff,
}

impl DiffView {
    /// Nothing differs that nococtl can see: services, networks, volumes, variable and file
    /// names are the same.
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

    /// `+ service cache`, `- service db`, `~ service web` with a line per field that differs,
    /// then `+ env NAME`, `- file PATH` ….
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (kind, section) in [
            ("service", &self.changes.services),
            ("network", &self.changes.networks),
            ("volume", &self.changes.volumes),
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
        lines
    }
}

/// `    image: "nginx:1.25" → "nginx:1.27"`; objects show only their keys that differ.
fn field_line(c: &FieldChange) -> String {
    let (old, new) = narrowed(&c.old, &c.new);
    format!(
        "    {}: {} → {}",
        c.field,
        show_value(&old, VALUE_WIDTH),
        show_value(&new, VALUE_WIDTH)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use noco_compose::LoadOptions;
    use serde_json::json;

    use super::*;

    fn project(yaml: &str) -> Project {
        let vars = BTreeMap::new();
        let opts = LoadOptions {
            project_name: Some("shop"),
            variables: &vars,
            files: &noco_compose::NoFiles,
        };
        match noco_compose::load(yaml, &opts) {
            Ok(l) => l.project,
            Err(d) => panic!("{d:?}"),
        }
    }

    const BASE: &str = "services:\n  web:\n    image: nginx:1.25\n    environment:\n      MODE: prod\n  db:\n    image: postgres:16\n";

    #[test]
    fn the_same_file_has_no_differences() {
        assert!(diff_projects(&project(BASE), &project(BASE)).is_empty());
    }

    #[test]
    fn added_and_removed_services_are_listed_by_name() {
        let new = project(
            "services:\n  web:\n    image: nginx:1.25\n    environment:\n      MODE: prod\n  cache:\n    image: redis:7\n",
        );
        let d = diff_projects(&project(BASE), &new);
        assert_eq!(d.services.added, ["cache"]);
        assert_eq!(d.services.removed, ["db"]);
        assert!(d.services.changed.is_empty(), "{:?}", d.services.changed);
    }

    #[test]
    fn a_changed_service_lists_only_the_fields_that_differ_with_old_and_new_values() {
        let new = project(
            "services:\n  web:\n    image: nginx:1.27\n    environment:\n      MODE: prod\n    privileged: true\n  db:\n    image: postgres:16\n",
        );
        let d = diff_projects(&project(BASE), &new);
        assert!(d.services.added.is_empty() && d.services.removed.is_empty());
        let [Changed { name, fields }] = d.services.changed.as_slice() else {
            panic!("{:?}", d.services.changed)
        };
        assert_eq!(name, "web");
        assert_eq!(
            fields,
            &[
                FieldChange {
                    field: "image".into(),
                    old: json!("nginx:1.25"),
                    new: json!("nginx:1.27"),
                },
                FieldChange {
                    field: "privileged".into(),
                    old: json!(false),
                    new: json!(true),
                },
            ]
        );
    }

    #[test]
    fn a_replica_change_is_a_change_although_the_config_hash_ignores_it() {
        let old = project("services:\n  web:\n    image: nginx\n");
        let new = project("services:\n  web:\n    image: nginx\n    deploy:\n      replicas: 3\n");
        let (web_old, web_new) = (&old.services["web"], &new.services["web"]);
        assert_eq!(
            noco_compose::config_hash(web_old),
            noco_compose::config_hash(web_new)
        );
        let fields = diff_services(web_old, web_new);
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(fields[0].field, "deploy");
    }

    #[test]
    fn key_order_and_short_syntax_do_not_count_as_changes() {
        let a = project("services:\n  web:\n    image: nginx\n    environment: [A=1, B=2]\n");
        let b = project(
            "services:\n  web:\n    environment:\n      B: \"2\"\n      A: \"1\"\n    image: nginx\n",
        );
        assert!(diff_projects(&a, &b).is_empty());
    }

    #[test]
    fn networks_and_volumes_are_compared_too() {
        let a = project("services:\n  web:\n    image: nginx\nvolumes:\n  data: {}\n");
        let b = project("services:\n  web:\n    image: nginx\nvolumes:\n  logs: {}\n");
        let d = diff_projects(&a, &b);
        assert_eq!(d.volumes.added, ["logs"]);
        assert_eq!(d.volumes.removed, ["data"]);
        assert!(d.services.is_empty());
    }

    #[test]
    fn names_diff_reports_added_and_removed() {
        let names = names_diff(["A", "B"], ["B", "C"]);
        assert_eq!(names.added, ["C"]);
        assert_eq!(names.removed, ["A"]);
    }

    #[test]
    fn changed_objects_are_narrowed_to_the_keys_that_differ() {
        let old = json!({"replicas": 1, "resources": {"cpus": null, "memory": 100}, "gone": true});
        let new = json!({"replicas": 2, "resources": {"cpus": null, "memory": 200}, "added": 1});
        let (a, b) = narrowed(&old, &new);
        assert_eq!(
            a,
            json!({"replicas": 1, "resources": {"memory": 100}, "gone": true})
        );
        assert_eq!(
            b,
            json!({"replicas": 2, "resources": {"memory": 200}, "added": 1})
        );
        assert_eq!(narrowed(&json!("a"), &json!("b")), (json!("a"), json!("b")));
    }

    #[test]
    fn long_values_are_cut_to_the_width_with_an_ellipsis() {
        let long = json!("x".repeat(200));
        let shown = show_value(&long, VALUE_WIDTH);
        assert_eq!(shown.chars().count(), VALUE_WIDTH);
        assert!(shown.ends_with('…'));
        assert_eq!(show_value(&json!("short"), VALUE_WIDTH), "\"short\"");
        assert_eq!(show_value(&Value::Null, VALUE_WIDTH), "(none)");
    }

    fn view() -> DiffView {
        DiffView {
            name: "shop".into(),
            exists: true,
            current_revision: format!("sha256:{}", "1".repeat(64)),
            revision: format!("sha256:{}", "2".repeat(64)),
            unchanged: false,
            changes: ProjectDiff {
                services: SectionDiff {
                    added: vec!["cache".into()],
                    removed: vec!["db".into()],
                    changed: vec![Changed {
                        name: "web".into(),
                        fields: vec![FieldChange {
                            field: "image".into(),
                            old: json!("nginx:1.25"),
                            new: json!("nginx:1.27"),
                        }],
                    }],
                },
                ..Default::default()
            },
            env: NamesDiff {
                added: vec!["NEW".into()],
                removed: vec![],
            },
            files: NamesDiff {
                added: vec![],
                removed: vec!["old.conf".into()],
            },
        }
    }

    #[test]
    fn diff_lines_mark_added_removed_and_changed_fields() {
        let v = view();
        assert_eq!(
            v.heading(),
            "stack shop: current revision 111111111111, these files make 222222222222"
        );
        assert_eq!(
            v.lines(),
            [
                "+ service cache",
                "- service db",
                "~ service web",
                "    image: \"nginx:1.25\" → \"nginx:1.27\"",
                "+ env NEW",
                "- file old.conf",
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
                    "changed": [{
                        "name": "web",
                        "fields": [{"field": "image", "old": "nginx:1.25", "new": "nginx:1.27"}],
                    }],
                },
                "networks": {"added": [], "removed": [], "changed": []},
                "volumes": {"added": [], "removed": [], "changed": []},
                "env": {"added": ["NEW"], "removed": []},
                "files": {"added": [], "removed": ["old.conf"]},
            })
        );
    }
}
