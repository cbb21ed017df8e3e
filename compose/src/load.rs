//! The loading pipeline: YAML → tree → (interpolated as read) → validated, normalized
//! [`Project`]. Top-level keys, project name, volumes and networks live here; services in
//! `service.rs`, project-wide checks in `validate.rs`.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::model::{Ipam, IpamPool, Network, Project, Volume};
use crate::parse::{Node, parse};
use crate::read::{Reader, index, join};
use crate::service::{Draft, read_service};
use crate::validate::validate;
use crate::{LoadOptions, Loaded};

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
    for (key, value) in entries {
        let k = key.name.as_str();
        match k {
            "services" => services_node = Some(value),
            "volumes" => volumes_node = Some(value),
            "networks" => networks_node = Some(value),
            "name" => name_node = Some(value),
            "version" => r.warn(k, key.line, "\"version\" is obsolete and ignored"),
            _ if k.starts_with("x-") => {}
            "secrets" | "configs" => r.error(
                k,
                key.line,
                format!("top-level key {k:?} is not supported yet: pass secrets through environment or env_file, ship files with the stack and bind-mount them"),
            ),
            "include" => r.error(k, key.line, "top-level key \"include\" is not supported: submit one self-contained compose file"),
            "models" => r.error(k, key.line, "top-level key \"models\" is not supported"),
            _ => r.error(k, key.line, format!("unknown top-level key {k:?}")),
        }
    }

    let project_name = project_name(&mut r, opts.project_name, name_node);
    let volumes = volumes_node
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
    validate(&mut r, &drafts, &volumes, &networks);

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
        },
        warnings: r.diags.warnings,
    })
}

/// `-p` if given, else top-level `name:`; normalized like compose (lowercase, only
/// `[a-z0-9_-]`, starting with a letter or digit).
fn project_name(r: &mut Reader, given: Option<&str>, node: Option<&Node>) -> String {
    let (raw, path, line) = match (given, node) {
        (Some(name), _) => (Some(name.to_owned()), "", None),
        (None, Some(node)) => (r.text(node, "name"), "name", node.line),
        (None, None) => {
            r.error(
                "",
                None,
                "no project name: pass one (-p) or set a top-level \"name:\"",
            );
            return String::new();
        }
    };
    let Some(raw) = raw else { return String::new() };
    let normalized = normalize_project_name(&raw);
    if normalized.is_empty() {
        r.error(path, line, format!("project name {raw:?} has no usable characters (lowercase letters, digits, '_', '-')"));
    } else if normalized != raw {
        r.warn(
            path,
            line,
            format!("project name {raw:?} normalized to {normalized:?}"),
        );
    }
    normalized
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
