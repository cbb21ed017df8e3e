//! The loading pipeline: YAML → tree → (interpolated as read) → validated, normalized
//! [`Project`]. Top-level keys, project name, volumes and networks live here; services in
//! `service.rs`, secrets and configs in `secrets.rs`, project-wide checks in `validate.rs`.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::model::{Ipam, IpamPool, Network, Project, Volume};
use crate::parse::{Node, parse};
use crate::profiles::{Selection, select};
use crate::read::{Reader, index, join};
use crate::secrets::{self, Kind};
use crate::service::{Draft, read_service};
use crate::validate::validate;
use crate::{LoadOptions, Loaded};

/// The top-level keys of the compose specification, for "did you mean".
const TOP_LEVEL: &[&str] = &[
    "services", "networks", "volumes", "secrets", "configs", "name", "version", "include", "models",
];

/// Load a compose file into a normalized [`Project`]. Returns every error found (not just
/// the first), or the project and the warnings. Never panics, whatever the input.
pub fn load(yaml: &str, opts: &LoadOptions) -> Result<Loaded, Vec<Diagnostic>> {
    let root = parse(yaml).map_err(|d| vec![d])?;
    let mut r = Reader::new(opts.variables);
    let Some(entries) = root.entries() else {
        let message = if root.is_null() {
            "the compose file is empty".to_owned()
        } else {
            format!("the top level must be a mapping, got {}", root.kind())
        };
        return Err(vec![Diagnostic::new("", root.line, message)]);
    };

    let mut services_node = None;
    let mut volumes_node = None;
    let mut networks_node = None;
    let mut name_node = None;
    let mut secrets_node = None;
    let mut configs_node = None;
    let mut x_noco_node = None;
    for (key, value) in entries {
        let k = key.name.as_str();
        match k {
            "services" => services_node = Some(value),
            "volumes" => volumes_node = Some(value),
            "networks" => networks_node = Some(value),
            "name" => name_node = Some(value),
            "version" => r.warn(k, key.line, "\"version\" is obsolete and ignored"),
            "x-noco" => x_noco_node = Some(value),
            _ if k.starts_with("x-") => {}
            "secrets" => secrets_node = Some(value),
            "configs" => configs_node = Some(value),
            "include" => r.error(k, key.line, "top-level key \"include\" is not supported: submit one self-contained compose file"),
            "models" => r.error(k, key.line, "top-level key \"models\" is not supported"),
            _ => {
                let hint = crate::suggest::did_you_mean(k, TOP_LEVEL.iter().copied())
                    .map(|h| format!(": {h}"))
                    .unwrap_or_default();
                r.error(k, key.line, format!("unknown top-level key {k:?}{hint}"))
            }
        }
    }

    let project_name = project_name(&mut r, opts, name_node);
    let mut volumes = volumes_node
        .map(|n| read_volumes(&mut r, n, &project_name))
        .unwrap_or_default();
    let mut networks = networks_node
        .map(|n| read_networks(&mut r, n, &project_name))
        .unwrap_or_default();

    let mut drafts: Vec<Draft> = Vec::new();
    match services_node {
        None => r.error("", None, "no \"services\" defined"),
        Some(node) if node.is_null() => r.error("services", node.line, "no services defined"),
        Some(node) => {
            if let Some(services) = r.mapping(node, "services") {
                if services.is_empty() {
                    r.error("services", node.line, "no services defined");
                }
                for (key, value) in services {
                    drafts.push(read_service(
                        &mut r,
                        opts.files,
                        &key.name,
                        value,
                        &join("services", &key.name),
                    ));
                }
            }
        }
    }

    let selection = Selection::new(&mut r, opts.profiles, opts.variables, x_noco_node);
    let mut drafts = select(&mut r, drafts, &selection, &mut networks, &mut volumes);

    if !networks.contains_key("default")
        && drafts
            .iter()
            .any(|d| d.service.networks.contains_key("default"))
    {
        networks.insert(
            "default".to_owned(),
            Network {
                name: format!("{project_name}_default"),
                ..Network::default()
            },
        );
    }
    let secrets = secrets_node
        .map(|n| secrets::read_definitions(&mut r, n, Kind::Secret))
        .unwrap_or_default();
    let configs = configs_node
        .map(|n| secrets::read_definitions(&mut r, n, Kind::Config))
        .unwrap_or_default();
    let (secrets, configs) = secrets::attach(&mut r, opts.files, &mut drafts, &secrets, &configs);
    validate(&mut r, &drafts, &volumes, &networks);
    let service_names: Vec<&str> = drafts.iter().map(|d| d.service.name.as_str()).collect();
    let volume_names: Vec<&str> = volumes.keys().map(String::as_str).collect();
    let backups = crate::backups::read(&mut r, x_noco_node, &service_names, &volume_names);

    if !r.diags.errors.is_empty() {
        return Err(r.diags.errors);
    }
    let services = drafts
        .into_iter()
        .map(|d| (d.service.name.clone(), d.service))
        .collect();
    Ok(Loaded {
        project: Project {
            name: project_name,
            services,
            networks,
            volumes,
            secrets,
            configs,
            backups,
        },
        warnings: r.diags.warnings,
    })
}

/// The project name as docker compose decides it: `-p`, else `COMPOSE_PROJECT_NAME` from the
/// variables (the env files), each used as given and refused unless valid; else the top-level
/// `name:`, else the compose file's directory name, each normalized (lowercase, only
/// `[a-z0-9_-]`, starting with a letter or digit).
fn project_name(r: &mut Reader, opts: &LoadOptions, node: Option<&Node>) -> String {
    if let Some(given) = opts.project_name.filter(|n| !n.is_empty()) {
        return exact_project_name(r, given, false);
    }
    if let Some(name) = opts
        .variables
        .get("COMPOSE_PROJECT_NAME")
        .filter(|n| !n.is_empty())
    {
        return exact_project_name(r, name, true);
    }
    if let Some(node) = node
        && let Some(raw) = r.opt_text(node, "name").filter(|n| !n.is_empty())
    {
        let normalized = normalize_project_name(&raw);
        if normalized.is_empty() {
            r.error(
                "name",
                node.line,
                format!("project name {raw:?} has no usable characters (lowercase letters, digits, '_', '-'): pass one with -p"),
            );
        } else if normalized != raw {
            r.warn(
                "name",
                node.line,
                format!("project name {raw:?} normalized to {normalized:?}"),
            );
        }
        return normalized;
    }
    let Some(directory) = opts.directory else {
        r.error(
            "",
            None,
            "no project name: pass one (-p) or set a top-level \"name:\"",
        );
        return String::new();
    };
    let normalized = normalize_project_name(directory);
    if normalized.is_empty() {
        r.error(
            "",
            None,
            format!("no project name: the directory name {directory:?} has no usable characters (lowercase letters, digits, '_', '-'): pass one with -p or set a top-level \"name:\""),
        );
    }
    normalized
}

/// A project name given as is (`-p`, a stack's name, `COMPOSE_PROJECT_NAME`): refused unless it
/// is valid, as docker compose refuses it, suggesting the normalized form.
fn exact_project_name(r: &mut Reader, name: &str, from_env: bool) -> String {
    let normalized = normalize_project_name(name);
    if normalized != name {
        let source = if from_env {
            " from COMPOSE_PROJECT_NAME"
        } else {
            ""
        };
        let mut hint = if normalized.is_empty() {
            String::new()
        } else {
            format!("; did you mean {normalized:?}?")
        };
        if from_env {
            hint.push_str(" (-p overrides it)");
        }
        r.error(
            "",
            None,
            format!("invalid project name {name:?}{source}: it must consist only of lowercase letters, digits, '-' and '_', and start with a letter or digit{hint}"),
        );
    }
    name.to_owned()
}

pub(crate) fn normalize_project_name(raw: &str) -> String {
    let lowered: String = raw
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    lowered.trim_start_matches(['_', '-']).to_owned()
}

/// The common part of a top-level volume or network: `name`, `external` (also the legacy
/// `external: {name: …}`), `labels`, `driver`, `driver_opts`. Returns the Docker name.
struct Common {
    name: String,
    external: bool,
    driver: Option<String>,
    driver_opts: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    /// Keys other than `name`/`external` that were set, to refuse them on external objects.
    configured: Vec<(String, Option<usize>)>,
}

/// A key `read_common` left for the caller: name, value, path.
type Extra<'n> = (String, &'n Node, String);

fn read_common<'n>(
    r: &mut Reader,
    key: &str,
    node: &'n Node,
    path: &str,
    what: &str,
    project: &str,
    known: &[&str],
) -> Option<(Common, Vec<Extra<'n>>)> {
    let mut common = Common {
        name: String::new(),
        external: false,
        driver: None,
        driver_opts: BTreeMap::new(),
        labels: BTreeMap::new(),
        configured: Vec::new(),
    };
    let mut explicit_name = None;
    let mut rest = Vec::new();
    if !node.is_null() {
        let entries = r.mapping(node, path)?;
        let mut all_known = vec!["name", "external", "driver", "driver_opts", "labels"];
        all_known.extend_from_slice(known);
        for (k, value) in r.known_entries(entries, path, what, &all_known) {
            let p = join(path, &k.name);
            match k.name.as_str() {
                "name" => explicit_name = r.opt_text(value, &p),
                "external" => match &value.value {
                    crate::parse::Value::Map(inner) => {
                        common.external = true;
                        for (ik, iv) in r.known_entries(inner, &p, what, &["name"]) {
                            explicit_name = r.opt_text(iv, &join(&p, &ik.name));
                        }
                        r.warn(&p, k.line, format!("{what}: \"external: {{name: …}}\" is deprecated; use external: true and name:"));
                    }
                    _ => common.external = r.bool(value, &p).unwrap_or(false),
                },
                other => {
                    common.configured.push((other.to_owned(), k.line));
                    match other {
                        "driver" => common.driver = r.opt_text(value, &p),
                        "driver_opts" => common.driver_opts = r.string_map(value, &p),
                        "labels" => {
                            common.labels = r
                                .pairs(value, &p, &['='])
                                .into_iter()
                                .map(|pair| (pair.key, pair.value.unwrap_or_default()))
                                .collect()
                        }
                        _ => rest.push((other.to_owned(), value, p)),
                    }
                }
            }
        }
    }
    if common.external {
        for (k, line) in &common.configured {
            r.error(
                &join(path, k),
                *line,
                format!(
                    "{what}: an external {} cannot set {k:?}",
                    what.split(' ').next().unwrap_or("object")
                ),
            );
        }
    }
    common.name = match explicit_name {
        Some(name) if !name.is_empty() => name,
        _ if common.external => key.to_owned(),
        _ => format!("{project}_{key}"),
    };
    Some((common, rest))
}

/// Volume and network keys become parts of Docker names.
fn check_key_name(r: &mut Reader, name: &str, path: &str, line: Option<usize>, what: &str) {
    if !crate::service::valid_service_name(name) {
        r.error(
            path,
            line,
            format!("{what}: invalid name (use letters, digits, '.', '_' and '-')"),
        );
    }
}

fn read_volumes(r: &mut Reader, node: &Node, project: &str) -> BTreeMap<String, Volume> {
    let mut out = BTreeMap::new();
    if node.is_null() {
        return out;
    }
    let Some(entries) = r.mapping(node, "volumes") else {
        return out;
    };
    for (key, value) in entries {
        let path = join("volumes", &key.name);
        let what = format!("volume {:?}", key.name);
        check_key_name(r, &key.name, &path, key.line, &what);
        if let Some((c, _)) = read_common(r, &key.name, value, &path, &what, project, &[]) {
            out.insert(
                key.name.clone(),
                Volume {
                    name: c.name,
                    external: c.external,
                    driver: c.driver,
                    driver_opts: c.driver_opts,
                    labels: c.labels,
                },
            );
        }
    }
    out
}

fn read_networks(r: &mut Reader, node: &Node, project: &str) -> BTreeMap<String, Network> {
    let mut out = BTreeMap::new();
    if node.is_null() {
        return out;
    }
    let Some(entries) = r.mapping(node, "networks") else {
        return out;
    };
    for (key, value) in entries {
        let path = join("networks", &key.name);
        let what = format!("network {:?}", key.name);
        check_key_name(r, &key.name, &path, key.line, &what);
        let known = ["internal", "attachable", "enable_ipv6", "ipam"];
        let Some((c, rest)) = read_common(r, &key.name, value, &path, &what, project, &known)
        else {
            continue;
        };
        let mut net = Network {
            name: c.name,
            external: c.external,
            driver: c.driver,
            driver_opts: c.driver_opts,
            labels: c.labels,
            ..Network::default()
        };
        for (k, v, p) in rest {
            match k.as_str() {
                "internal" => net.internal = r.bool(v, &p).unwrap_or(false),
                "attachable" => net.attachable = r.bool(v, &p).unwrap_or(false),
                "enable_ipv6" => net.enable_ipv6 = r.bool(v, &p).unwrap_or(false),
                "ipam" => net.ipam = read_ipam(r, v, &p, &what),
                _ => {}
            }
        }
        out.insert(key.name.clone(), net);
    }
    out
}

fn read_ipam(r: &mut Reader, node: &Node, path: &str, what: &str) -> Option<Ipam> {
    let entries = r.mapping(node, path)?;
    let mut ipam = Ipam::default();
    for (key, value) in r.known_entries(entries, path, what, &["driver", "config", "options"]) {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "driver" => ipam.driver = r.opt_text(value, &p),
            "options" => ipam.options = r.string_map(value, &p),
            "config" => {
                let Some(items) = r.list(value, &p) else {
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let ip = index(&p, i);
                    let Some(pool_entries) = r.mapping(item, &ip) else {
                        continue;
                    };
                    let mut pool = IpamPool::default();
                    let known = ["subnet", "ip_range", "gateway", "aux_addresses"];
                    for (k, v) in r.known_entries(pool_entries, &ip, what, &known) {
                        let kp = join(&ip, &k.name);
                        match k.name.as_str() {
                            "subnet" => pool.subnet = r.opt_text(v, &kp),
                            "ip_range" => pool.ip_range = r.opt_text(v, &kp),
                            "gateway" => pool.gateway = r.opt_text(v, &kp),
                            "aux_addresses" => pool.aux_addresses = r.string_map(v, &kp),
                            _ => {}
                        }
                    }
                    ipam.config.push(pool);
                }
            }
            _ => {}
        }
    }
    Some(ipam)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_normalize_like_compose() {
        let cases = [
            ("web", "web"),
            ("My_App", "my_app"),
            ("my app!", "myapp"),
            ("-_x", "x"),
            ("Stack-2", "stack-2"),
            ("ÄÖ", ""),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_project_name(raw), want, "{raw:?}");
        }
    }
}
