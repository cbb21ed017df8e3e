//! Service `volumes:` in short (`src:/dst:ro`) and long (`type: bind …`) syntax, as [`Mount`]s.

use crate::model::{Mount, MountKind, SeLinux};
use crate::parse::{Key, Node, Value};
use crate::read::{Reader, index, join};

/// A named-volume mount and where it was written, to check it names a declared volume.
pub(crate) struct VolumeRef {
    pub name: String,
    pub path: String,
    pub line: Option<usize>,
}

const PROPAGATIONS: [&str; 6] = [
    "shared", "slave", "private", "rshared", "rslave", "rprivate",
];

/// Compose treats a source starting with `.`, `/` or `~` as a host path, anything else as
/// a volume name.
pub(crate) fn is_host_path(source: &str) -> bool {
    source.starts_with(['.', '/', '~'])
}

fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(crate) fn read_mounts(
    r: &mut Reader,
    node: &Node,
    path: &str,
    service: &str,
) -> (Vec<Mount>, Vec<VolumeRef>) {
    let mut mounts = Vec::new();
    let mut refs = Vec::new();
    let Some(items) = r.list(node, path) else {
        return (mounts, refs);
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let mount = match &item.value {
            Value::Map(entries) => long_mount(r, entries, &p, service, item.line),
            _ => r
                .text(item, &p)
                .and_then(|spec| match parse_short_mount(&spec) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        r.error(
                            &p,
                            item.line,
                            format!("service {service:?}: volume {spec:?}: {e}"),
                        );
                        None
                    }
                }),
        };
        if let Some(mount) = mount {
            if let MountKind::Volume {
                source: Some(name), ..
            } = &mount.kind
            {
                refs.push(VolumeRef {
                    name: name.clone(),
                    path: p.clone(),
                    line: item.line,
                });
            }
            mounts.push(mount);
        }
    }
    (mounts, refs)
}

/// `SOURCE:TARGET[:OPTIONS]` or `TARGET` (an anonymous volume). Options, comma-separated:
/// `ro`/`rw`, `z`/`Z` (binds), `nocopy` (volumes), a bind propagation, and the ignored
/// macOS hints `consistent`/`cached`/`delegated`.
pub(crate) fn parse_short_mount(spec: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, options] => (Some(*source), *target, Some(*options)),
        _ => return Err("expected [source:]target[:options]".to_owned()),
    };
    if !target.starts_with('/') {
        return Err(format!("container path {target:?} is not absolute"));
    }
    let mut read_only = false;
    let mut selinux = None;
    let mut nocopy = false;
    let mut propagation = None;
    for option in options.into_iter().flat_map(|o| o.split(',')) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" => selinux = Some(SeLinux::Shared),
            "Z" => selinux = Some(SeLinux::Private),
            "nocopy" => nocopy = true,
            "consistent" | "cached" | "delegated" => {}
            p if PROPAGATIONS.contains(&p) => propagation = Some(p.to_owned()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let kind = match source {
        None => {
            if selinux.is_some() || propagation.is_some() {
                return Err("z, Z and propagation apply to bind mounts only".to_owned());
            }
            MountKind::Volume {
                source: None,
                nocopy,
            }
        }
        Some("") => return Err("empty source".to_owned()),
        Some(source) if is_host_path(source) => {
            if nocopy {
                return Err("nocopy applies to volumes only".to_owned());
            }
            MountKind::Bind {
                source: source.to_owned(),
                selinux,
                propagation,
                create_host_path: true,
            }
        }
        Some(name) => {
            if !valid_volume_name(name) {
                return Err(format!(
                    "{name:?} is neither a volume name nor a path (paths start with /, ./, ../ or ~)"
                ));
            }
            if selinux.is_some() || propagation.is_some() {
                return Err("z, Z and propagation apply to bind mounts only".to_owned());
            }
            MountKind::Volume {
                source: Some(name.to_owned()),
                nocopy,
            }
        }
    };
    Ok(Mount {
        kind,
        target: target.to_owned(),
        read_only,
    })
}

fn long_mount(
    r: &mut Reader,
    entries: &[(Key, Node)],
    path: &str,
    service: &str,
    line: Option<usize>,
) -> Option<Mount> {
    let what = format!("service {service:?}: volume");
    let known = [
        "type",
        "source",
        "target",
        "read_only",
        "consistency",
        "bind",
        "volume",
        "tmpfs",
    ];
    let mut kind_name = None;
    let mut source = None;
    let mut target = None;
    let mut read_only = false;
    let mut bind: Option<(&Node, String)> = None;
    let mut volume: Option<(&Node, String)> = None;
    let mut tmpfs: Option<(&Node, String)> = None;
    let errors_before = r.diags.errors.len();
    for (key, value) in r.known_entries(entries, path, &what, &known) {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "type" => kind_name = r.text(value, &p),
            "source" => source = r.opt_text(value, &p).filter(|s| !s.is_empty()),
            "target" => target = r.text(value, &p),
            "read_only" => read_only = r.bool(value, &p).unwrap_or(false),
            "consistency" => {}
            "bind" => bind = Some((value, p)),
            "volume" => volume = Some((value, p)),
            "tmpfs" => tmpfs = Some((value, p)),
            _ => {}
        }
    }
    let Some(target) = target else {
        r.error(path, line, format!("{what}: \"target\" is required"));
        return None;
    };
    if !target.starts_with('/') {
        r.error(
            path,
            line,
            format!("{what}: container path {target:?} is not absolute"),
        );
    }
    let kind_name = kind_name.unwrap_or_default();
    let misplaced = |r: &mut Reader, section: Option<(&Node, String)>, name: &str| {
        if let Some((node, p)) = section {
            r.error(
                &p,
                node.line,
                format!("{what}: {name:?} options do not apply to type {kind_name:?}"),
            );
        }
    };
    let kind = match kind_name.as_str() {
        "bind" => {
            misplaced(r, volume, "volume");
            misplaced(r, tmpfs, "tmpfs");
            let Some(source) = source else {
                r.error(path, line, format!("{what}: a bind mount needs \"source\""));
                return None;
            };
            if !is_host_path(&source) {
                r.error(path, line, format!("{what}: bind source {source:?} must be a path starting with /, ./, ../ or ~"));
            }
            let mut selinux = None;
            let mut propagation = None;
            let mut create_host_path = true;
            if let Some((node, p)) = bind
                && let Some(entries) = r.mapping(node, &p)
            {
                let known = ["propagation", "create_host_path", "selinux"];
                for (key, value) in r.known_entries(entries, &p, &what, &known) {
                    let kp = join(&p, &key.name);
                    match key.name.as_str() {
                        "propagation" => match r.text(value, &kp) {
                            Some(v) if PROPAGATIONS.contains(&v.as_str()) => propagation = Some(v),
                            Some(v) => r.error(
                                &kp,
                                value.line,
                                format!("{what}: unknown propagation {v:?}"),
                            ),
                            None => {}
                        },
                        "create_host_path" => create_host_path = r.bool(value, &kp).unwrap_or(true),
                        "selinux" => match r.text(value, &kp).as_deref() {
                            Some("z") => selinux = Some(SeLinux::Shared),
                            Some("Z") => selinux = Some(SeLinux::Private),
                            Some(v) => r.error(
                                &kp,
                                value.line,
                                format!("{what}: selinux must be z or Z, got {v:?}"),
                            ),
                            None => {}
                        },
                        _ => {}
                    }
                }
            }
            MountKind::Bind {
                source,
                selinux,
                propagation,
                create_host_path,
            }
        }
        "volume" => {
            misplaced(r, bind, "bind");
            misplaced(r, tmpfs, "tmpfs");
            if let Some(name) = &source
                && !valid_volume_name(name)
            {
                r.error(path, line, format!("{what}: {name:?} is not a volume name"));
            }
            let mut nocopy = false;
            if let Some((node, p)) = volume
                && let Some(entries) = r.mapping(node, &p)
            {
                for (key, value) in r.known_entries(entries, &p, &what, &["nocopy"]) {
                    nocopy = r.bool(value, &join(&p, &key.name)).unwrap_or(false);
                }
            }
            MountKind::Volume { source, nocopy }
        }
        "tmpfs" => {
            misplaced(r, bind, "bind");
            misplaced(r, volume, "volume");
            if source.is_some() {
                r.error(
                    path,
                    line,
                    format!("{what}: a tmpfs mount has no \"source\""),
                );
            }
            let mut size = None;
            let mut mode = None;
            if let Some((node, p)) = tmpfs
                && let Some(entries) = r.mapping(node, &p)
            {
                for (key, value) in r.known_entries(entries, &p, &what, &["size", "mode"]) {
                    let kp = join(&p, &key.name);
                    match key.name.as_str() {
                        "size" => size = r.bytes(value, &kp),
                        "mode" => mode = read_mode(r, value, &kp),
                        _ => {}
                    }
                }
            }
            MountKind::Tmpfs { size, mode }
        }
        "" => {
            r.error(
                path,
                line,
                format!("{what}: \"type\" is required (bind, volume or tmpfs)"),
            );
            return None;
        }
        other => {
            r.error(
                path,
                line,
                format!("{what}: type {other:?} is not supported (bind, volume or tmpfs)"),
            );
            return None;
        }
    };
    if r.diags.errors.len() > errors_before {
        return None;
    }
    Some(Mount {
        kind,
        target,
        read_only,
    })
}

/// A file mode: a YAML integer as written (`0o1777` is octal), or a string read as octal
/// (`"1777"`, `0755`).
pub(crate) fn read_mode(r: &mut Reader, node: &Node, path: &str) -> Option<u32> {
    if let Value::Int(_) = node.value {
        return r.int(node, path);
    }
    let text = r.text(node, path)?;
    let digits = text.trim().trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) => Some(mode),
        Err(_) => {
            r.error(
                path,
                node.line,
                format!("invalid mode {text:?}: expected octal digits like 1777"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str, target: &str, read_only: bool, selinux: Option<SeLinux>) -> Mount {
        Mount {
            kind: MountKind::Bind {
                source: source.into(),
                selinux,
                propagation: None,
                create_host_path: true,
            },
            target: target.into(),
            read_only,
        }
    }

    fn volume(source: Option<&str>, target: &str, read_only: bool) -> Mount {
        Mount {
            kind: MountKind::Volume {
                source: source.map(Into::into),
                nocopy: false,
            },
            target: target.into(),
            read_only,
        }
    }

    #[test]
    fn short_volume_syntax() {
        let cases = [
            (
                "data:/var/lib/data",
                volume(Some("data"), "/var/lib/data", false),
            ),
            ("data:/path:ro", volume(Some("data"), "/path", true)),
            (
                "./rel:/path:z",
                bind("./rel", "/path", false, Some(SeLinux::Shared)),
            ),
            (
                "../up:/path:ro,Z",
                bind("../up", "/path", true, Some(SeLinux::Private)),
            ),
            ("/abs:/path", bind("/abs", "/path", false, None)),
            ("~/home:/path:rw", bind("~/home", "/path", false, None)),
            (".:/app", bind(".", "/app", false, None)),
            ("/anon/path", volume(None, "/anon/path", false)),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_short_mount(spec), Ok(want), "{spec}");
        }
        let nocopy = parse_short_mount("v:/p:nocopy").map(|m| m.kind);
        assert_eq!(
            nocopy,
            Ok(MountKind::Volume {
                source: Some("v".into()),
                nocopy: true
            })
        );
        let bad = [
            "",
            "rel",
            "a:b",
            "v:/p:z",
            "/a:/b:nocopy",
            "v:/p:bogus",
            ":/p",
            "a:/b:ro:x",
            "bad name:/p",
        ];
        for spec in bad {
            assert!(
                parse_short_mount(spec).is_err(),
                "{spec:?} should be refused"
            );
        }
    }
}
