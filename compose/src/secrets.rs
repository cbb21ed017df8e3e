//! Secrets and configs: the top-level definitions (`file:`, `environment:`, and for configs
//! `content:`) and their mounts in services (short `- name` and long syntax with `target`,
//! `uid`, `gid`, `mode`). The content is read here, once, through the caller's [`FileSource`]:
//! the model carries it (for the agent to write) and each mount carries its digest (for the
//! config hash), never the bytes.
//!
//! Each syntax is one table of key → reader ([`DEFINITION_KEYS`], [`MOUNT_KEYS`]): a key is
//! supported exactly when it has a reader there.

use std::collections::BTreeMap;

use crate::FileSource;
use crate::model::{Content, FileMount, FileObject, ObjectSource};
use crate::mounts::read_mode;
use crate::parse::{Node, Value};
use crate::read::{Reader, index, join};
use crate::service::{Draft, valid_service_name};

/// Secrets and configs share their syntax; these are their differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }

    fn section(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Config => "configs",
        }
    }

    /// The mode a mounted file gets when the service does not give one.
    fn default_mode(self) -> u32 {
        match self {
            Kind::Secret => 0o400,
            Kind::Config => 0o444,
        }
    }

    /// Where a mount lands: secrets under `/run/secrets` (an absolute target as given),
    /// configs at their target or `/<name>`, a relative one under `/`.
    fn target(self, source: &str, given: Option<&str>) -> String {
        let given = given.filter(|t| !t.is_empty());
        match (self, given) {
            (_, Some(t)) if t.starts_with('/') => t.to_owned(),
            (Kind::Secret, Some(t)) => format!("/run/secrets/{t}"),
            (Kind::Secret, None) => format!("/run/secrets/{source}"),
            (Kind::Config, Some(t)) => format!("/{t}"),
            (Kind::Config, None) => format!("/{source}"),
        }
    }
}

/// Where a definition's content comes from, as written.
#[derive(Debug, Clone)]
enum Origin {
    File(String),
    Environment(String),
    Inline(String),
}

/// A top-level definition as read; `origin` is `None` when it is invalid (already reported),
/// so that services mounting it are not told it does not exist.
pub(crate) struct Definition {
    origin: Option<Origin>,
    /// The path and line of its source key (`secrets.pw.file`).
    path: String,
    line: Option<usize>,
}

/// A definition while its keys are read.
#[derive(Default)]
struct DefinitionDraft {
    /// Each source key given: the key, what it says, and its line.
    origins: Vec<(&'static str, Origin, Option<usize>)>,
}

type DefinitionReader = fn(&mut Reader, &Node, &str, Kind, &str, &mut DefinitionDraft);

/// The keys of a top-level secret or config, each with its reader.
const DEFINITION_KEYS: &[(&str, DefinitionReader)] = &[
    ("file", |r, v, p, _, _, d| {
        if let Some(path) = r.text(v, p) {
            d.origins.push(("file", Origin::File(path), v.line));
        }
    }),
    ("environment", |r, v, p, _, _, d| {
        if let Some(name) = r.text(v, p) {
            d.origins
                .push(("environment", Origin::Environment(name), v.line));
        }
    }),
    ("content", |r, v, p, kind, what, d| {
        if kind == Kind::Secret {
            r.error(
                p,
                v.line,
                format!("{what}: a secret has no \"content\": its value comes from file: or environment:, so that it is not written in the compose file"),
            );
        } else if let Some(text) = r.text(v, p) {
            d.origins.push(("content", Origin::Inline(text), v.line));
        }
    }),
    ("external", |r, v, p, kind, what, _| {
        if r.bool(v, p) == Some(true) {
            r.error(
                p,
                v.line,
                format!(
                    "{what}: external {}s live in a Docker swarm, and noco runs services without one: give it file: or environment:",
                    kind.noun()
                ),
            );
        }
    }),
    ("name", |r, v, p, _, what, _| {
        r.warn(
            p,
            v.line,
            format!(
                "{what}: \"name\" names an object in a Docker swarm; without one it is ignored"
            ),
        );
    }),
    ("labels", |r, v, p, _, what, _| {
        r.warn(
            p,
            v.line,
            format!(
                "{what}: \"labels\" label an object in a Docker swarm; without one they are ignored"
            ),
        );
    }),
    ("driver", swarm_only),
    ("driver_opts", swarm_only),
    ("template_driver", swarm_only),
];

fn swarm_only(r: &mut Reader, v: &Node, p: &str, _: Kind, what: &str, _: &mut DefinitionDraft) {
    r.error(
        p,
        v.line,
        format!("{what}: drivers of a Docker swarm are not supported: the content comes from file:, environment: or content: as it is"),
    );
}

/// Read the top-level `secrets:` or `configs:`.
pub(crate) fn read_definitions(
    r: &mut Reader,
    node: &Node,
    kind: Kind,
) -> BTreeMap<String, Definition> {
    let mut out = BTreeMap::new();
    if node.is_null() {
        return out;
    }
    let Some(entries) = r.mapping(node, kind.section()) else {
        return out;
    };
    for (key, value) in entries {
        let path = join(kind.section(), &key.name);
        let what = format!("{} {:?}", kind.noun(), key.name);
        let origin = read_definition(r, kind, value, &path, key.line, &what);
        let origin = if valid_service_name(&key.name) {
            origin
        } else {
            r.error(
                &path,
                key.line,
                format!("{what}: invalid name (use letters, digits, '.', '_' and '-')"),
            );
            None
        };
        let (origin, path, line) = match origin {
            Some((key, origin, line)) => (Some(origin), join(&path, key), line),
            None => (None, path, key.line),
        };
        out.insert(key.name.clone(), Definition { origin, path, line });
    }
    out
}

fn read_definition(
    r: &mut Reader,
    kind: Kind,
    node: &Node,
    path: &str,
    line: Option<usize>,
    what: &str,
) -> Option<(&'static str, Origin, Option<usize>)> {
    let sources = match kind {
        Kind::Secret => "file: or environment:",
        Kind::Config => "file:, environment: or content:",
    };
    let entries = match &node.value {
        Value::Map(entries) => entries.as_slice(),
        Value::Null => &[],
        _ => {
            r.mapping(node, path);
            return None;
        }
    };
    let errors_before = r.diags.errors.len();
    let mut draft = DefinitionDraft::default();
    for (key, value) in entries {
        if key.name.starts_with("x-") {
            continue;
        }
        let p = join(path, &key.name);
        match DEFINITION_KEYS.iter().find(|(k, _)| *k == key.name) {
            Some((_, reader)) => reader(r, value, &p, kind, what, &mut draft),
            None => {
                let known: Vec<&str> = DEFINITION_KEYS.iter().map(|(k, _)| *k).collect();
                r.error(
                    &p,
                    key.line,
                    format!(
                        "{what}: unknown key {:?} (known: {})",
                        key.name,
                        known.join(", ")
                    ),
                );
            }
        }
    }
    if r.diags.errors.len() > errors_before {
        return None;
    }
    match draft.origins.as_slice() {
        [] => {
            r.error(path, line, format!("{what} needs one of {sources}"));
            None
        }
        [only] => Some(only.clone()),
        [(a, ..), (b, ..), ..] => {
            r.error(
                path,
                line,
                format!("{what} sets both {a} and {b}: give exactly one of {sources}"),
            );
            None
        }
    }
}

/// A service's mount of a secret or config, with where it was written; its digest is filled in
/// by [`attach`].
pub(crate) struct MountRef {
    pub mount: FileMount,
    pub path: String,
    pub line: Option<usize>,
}

/// A long-syntax mount while its keys are read.
#[derive(Default)]
struct MountDraft {
    source: Option<String>,
    target: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
}

type MountReader = fn(&mut Reader, &Node, &str, &str, &mut MountDraft);

/// The keys of a service's long-syntax secret or config, each with its reader.
const MOUNT_KEYS: &[(&str, MountReader)] = &[
    ("source", |r, v, p, _, m| m.source = r.text(v, p)),
    ("target", |r, v, p, _, m| m.target = r.text(v, p)),
    ("uid", |r, v, p, what, m| {
        m.uid = read_id(r, v, p, what, "uid")
    }),
    ("gid", |r, v, p, what, m| {
        m.gid = read_id(r, v, p, what, "gid")
    }),
    ("mode", |r, v, p, what, m| {
        m.mode = read_mode(r, v, p).and_then(|mode| {
            if mode > 0o777 {
                r.error(
                    p,
                    v.line,
                    format!("{what}: mode {mode:#o} sets bits beyond 0777"),
                );
                None
            } else {
                Some(mode)
            }
        })
    }),
];

/// A numeric user or group id. Names are refused: the host cannot know the image's users.
fn read_id(r: &mut Reader, node: &Node, path: &str, what: &str, key: &str) -> Option<u32> {
    let text = r.text(node, path)?;
    match text.trim().parse::<u32>() {
        Ok(id) => Some(id),
        Err(_) => {
            r.error(
                path,
                node.line,
                format!("{what}: {key} {text:?} is not a number: the file's owner is set on the host, which does not know the image's user and group names"),
            );
            None
        }
    }
}

/// A service's `secrets:` or `configs:`: a list of names or long-syntax mappings.
pub(crate) fn read_mounts(
    r: &mut Reader,
    node: &Node,
    path: &str,
    kind: Kind,
    what: &str,
) -> Vec<MountRef> {
    let mut out = Vec::new();
    if node.is_null() {
        return out;
    }
    let Some(items) = r.list(node, path) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let errors_before = r.diags.errors.len();
        let mut draft = MountDraft::default();
        match &item.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    if key.name.starts_with("x-") {
                        continue;
                    }
                    let kp = join(&p, &key.name);
                    match MOUNT_KEYS.iter().find(|(k, _)| *k == key.name) {
                        Some((_, reader)) => reader(r, value, &kp, what, &mut draft),
                        None => {
                            let known: Vec<&str> = MOUNT_KEYS.iter().map(|(k, _)| *k).collect();
                            r.error(
                                &kp,
                                key.line,
                                format!(
                                    "{what}: unknown key {:?} in a {} (known: {})",
                                    key.name,
                                    kind.noun(),
                                    known.join(", ")
                                ),
                            );
                        }
                    }
                }
                if draft.source.is_none() && r.diags.errors.len() == errors_before {
                    r.error(
                        &p,
                        item.line,
                        format!("{what}: a {} needs \"source\"", kind.noun()),
                    );
                }
            }
            _ => draft.source = r.text(item, &p),
        }
        if r.diags.errors.len() > errors_before {
            continue;
        }
        let Some(source) = draft.source.filter(|s| !s.is_empty()) else {
            r.error(
                &p,
                item.line,
                format!("{what}: a {} needs a name", kind.noun()),
            );
            continue;
        };
        let target = kind.target(&source, draft.target.as_deref());
        if target.ends_with('/') || target.split('/').any(|c| c == "..") {
            r.error(
                &p,
                item.line,
                format!(
                    "{what}: {} {source:?}: target {target:?} is not a file path (no trailing '/', no '..')",
                    kind.noun()
                ),
            );
            continue;
        }
        out.push(MountRef {
            mount: FileMount {
                source,
                target,
                uid: draft.uid,
                gid: draft.gid,
                mode: draft.mode.unwrap_or(kind.default_mode()),
                digest: String::new(),
            },
            path: p,
            line: item.line,
        });
    }
    out
}

/// Read the content of every secret and config a service mounts, fill in the mounts' digests,
/// and check that each mount names a definition and lands on a path nothing else mounts.
/// Returns the project's secrets and configs (only those mounted).
pub(crate) fn attach(
    r: &mut Reader,
    files: &dyn FileSource,
    drafts: &mut [Draft],
    secrets: &BTreeMap<String, Definition>,
    configs: &BTreeMap<String, Definition>,
) -> (BTreeMap<String, FileObject>, BTreeMap<String, FileObject>) {
    let mut objects = (BTreeMap::new(), BTreeMap::new());
    for draft in drafts.iter_mut() {
        let what = format!("service {:?}", draft.service.name);
        for kind in [Kind::Secret, Kind::Config] {
            let (refs, definitions, loaded) = match kind {
                Kind::Secret => (&draft.secrets, secrets, &mut objects.0),
                Kind::Config => (&draft.configs, configs, &mut objects.1),
            };
            let mut mounts = Vec::new();
            for m in refs {
                let name = &m.mount.source;
                let Some(definition) = definitions.get(name) else {
                    r.error(
                        &m.path,
                        m.line,
                        format!(
                            "{what}: {} {name:?} is not defined under the top-level {}",
                            kind.noun(),
                            kind.section()
                        ),
                    );
                    continue;
                };
                let Some(origin) = &definition.origin else {
                    continue;
                };
                if !loaded.contains_key(name) {
                    let Some(object) = read_content(r, files, kind, name, origin, definition)
                    else {
                        continue;
                    };
                    loaded.insert(name.clone(), object);
                }
                if let Some(object) = loaded.get(name) {
                    let mut mount = m.mount.clone();
                    mount.digest = object.content.digest();
                    mounts.push(mount);
                }
            }
            mounts.sort_by(|a, b| a.target.cmp(&b.target));
            match kind {
                Kind::Secret => draft.service.secrets = mounts,
                Kind::Config => draft.service.configs = mounts,
            }
        }
        check_targets(r, draft, &what);
    }
    objects
}

fn read_content(
    r: &mut Reader,
    files: &dyn FileSource,
    kind: Kind,
    name: &str,
    origin: &Origin,
    definition: &Definition,
) -> Option<FileObject> {
    let what = format!("{} {name:?}", kind.noun());
    let (source, bytes) = match origin {
        Origin::File(path) => match files.read_bytes(path) {
            Ok(bytes) => (ObjectSource::File(path.clone()), bytes),
            Err(e) => {
                r.error(
                    &definition.path,
                    definition.line,
                    format!("{what}: file {path:?} cannot be read: {e}"),
                );
                return None;
            }
        },
        Origin::Environment(var) => match r.vars().get(var) {
            Some(value) => (
                ObjectSource::Environment(var.clone()),
                value.clone().into_bytes(),
            ),
            None => {
                r.error(
                    &definition.path,
                    definition.line,
                    format!("{what}: variable {var} is not set (variables come from the env files and --var, never from the environment of a process)"),
                );
                return None;
            }
        },
        Origin::Inline(text) => (ObjectSource::Inline, text.clone().into_bytes()),
    };
    Some(FileObject {
        source,
        content: Content::new(bytes),
    })
}

/// One file per container path: secrets, configs and volumes of a service must not share one.
fn check_targets(r: &mut Reader, draft: &Draft, what: &str) {
    let s = &draft.service;
    let mut seen: BTreeMap<&str, &str> = s
        .volumes
        .iter()
        .map(|v| (v.target.as_str(), "a volume"))
        .collect();
    for (kind, mounts) in [(Kind::Secret, &s.secrets), (Kind::Config, &s.configs)] {
        for m in mounts {
            let noun = match kind {
                Kind::Secret => "a secret",
                Kind::Config => "a config",
            };
            if let Some(other) = seen.insert(&m.target, noun) {
                let at = match kind {
                    Kind::Secret => draft.secrets.iter(),
                    Kind::Config => draft.configs.iter(),
                }
                .find(|x| x.mount.target == m.target);
                r.error(
                    at.map_or(draft.path.as_str(), |a| a.path.as_str()),
                    at.and_then(|a| a.line).or(draft.line),
                    format!(
                        "{what}: {} {:?} is mounted at {:?}, where {other} is mounted too",
                        kind.noun(),
                        m.source,
                        m.target
                    ),
                );
            }
        }
    }
}
