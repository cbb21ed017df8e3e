//! How a service relates to others: `depends_on`, `links`, `network_mode` and `networks`,
//! read into the model plus the names they refer to, for project-wide checks.

use std::collections::BTreeMap;

use crate::model::{Dependency, DependencyCondition, NetworkMode, ServiceNetwork};
use crate::parse::{Node, Value};
use crate::read::{Reader, index, join};

/// A name this service refers to, and where.
pub(crate) struct NameRef {
    pub name: String,
    pub path: String,
    pub line: Option<usize>,
}

pub(crate) fn read_network_mode(
    r: &mut Reader,
    node: &Node,
    path: &str,
    what: &str,
    deps: &mut Vec<NameRef>,
) -> Option<NetworkMode> {
    let text = r.opt_text(node, path)?;
    let mode = match text.as_str() {
        "bridge" => NetworkMode::Bridge,
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        other => {
            if let Some(service) = other.strip_prefix("service:").filter(|s| !s.is_empty()) {
                deps.push(NameRef {
                    name: service.to_owned(),
                    path: path.to_owned(),
                    line: node.line,
                });
                NetworkMode::Service(service.to_owned())
            } else if let Some(container) =
                other.strip_prefix("container:").filter(|s| !s.is_empty())
            {
                NetworkMode::Container(container.to_owned())
            } else {
                r.error(
                    path,
                    node.line,
                    format!("{what}: network_mode {other:?} is not bridge, host, none, service:NAME or container:NAME (use networks: for a named network)"),
                );
                return None;
            }
        }
    };
    Some(mode)
}

pub(crate) fn read_depends_on(
    r: &mut Reader,
    node: &Node,
    path: &str,
    what: &str,
    deps: &mut Vec<NameRef>,
) -> BTreeMap<String, Dependency> {
    let mut out = BTreeMap::new();
    let started = || Dependency {
        condition: DependencyCondition::ServiceStarted,
        required: true,
        restart: false,
    };
    match &node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = index(path, i);
                if let Some(name) = r.text(item, &p) {
                    deps.push(NameRef {
                        name: name.clone(),
                        path: p,
                        line: item.line,
                    });
                    out.insert(name, started());
                }
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                let p = join(path, &key.name);
                let mut dep = started();
                if !value.is_null()
                    && let Some(inner) = r.mapping(value, &p)
                {
                    for (k, v) in
                        r.known_entries(inner, &p, what, &["condition", "required", "restart"])
                    {
                        let kp = join(&p, &k.name);
                        match k.name.as_str() {
                            "condition" => match r.text(v, &kp).as_deref() {
                                Some("service_started") => dep.condition = DependencyCondition::ServiceStarted,
                                Some("service_healthy") => dep.condition = DependencyCondition::ServiceHealthy,
                                Some("service_completed_successfully") => {
                                    dep.condition = DependencyCondition::ServiceCompletedSuccessfully
                                }
                                Some(other) => r.error(
                                    &kp,
                                    v.line,
                                    format!("{what}: depends_on condition {other:?} is not service_started, service_healthy or service_completed_successfully"),
                                ),
                                None => {}
                            },
                            "required" => dep.required = r.bool(v, &kp).unwrap_or(true),
                            "restart" => dep.restart = r.bool(v, &kp).unwrap_or(false),
                            _ => {}
                        }
                    }
                }
                deps.push(NameRef {
                    name: key.name.clone(),
                    path: p,
                    line: key.line,
                });
                out.insert(key.name.clone(), dep);
            }
        }
        _ => r.error(
            path,
            node.line,
            format!(
                "{what}: depends_on must be a list or a mapping, got {}",
                node.kind()
            ),
        ),
    }
    out
}

pub(crate) fn read_links(
    r: &mut Reader,
    node: &Node,
    path: &str,
    what: &str,
    deps: &mut Vec<NameRef>,
) -> Vec<String> {
    let mut links = Vec::new();
    let Some(items) = r.list(node, path) else {
        return links;
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(link) = r.text(item, &p) else {
            continue;
        };
        let service = link.split(':').next().unwrap_or_default();
        if service.is_empty() {
            r.error(
                &p,
                item.line,
                format!("{what}: link {link:?} names no service"),
            );
            continue;
        }
        deps.push(NameRef {
            name: service.to_owned(),
            path: p,
            line: item.line,
        });
        links.push(link);
    }
    links
}

pub(crate) fn read_service_networks(
    r: &mut Reader,
    node: &Node,
    path: &str,
    what: &str,
    refs: &mut Vec<NameRef>,
) -> BTreeMap<String, ServiceNetwork> {
    let mut out = BTreeMap::new();
    match &node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = index(path, i);
                if let Some(name) = r.text(item, &p) {
                    refs.push(NameRef {
                        name: name.clone(),
                        path: p,
                        line: item.line,
                    });
                    out.insert(name, ServiceNetwork::default());
                }
            }
        }
        Value::Map(entries) => {
            // An `x-` key here is an extension, not a network (as in compose).
            for (key, value) in entries.iter().filter(|(k, _)| !k.name.starts_with("x-")) {
                let p = join(path, &key.name);
                let mut net = ServiceNetwork::default();
                if !value.is_null()
                    && let Some(inner) = r.mapping(value, &p)
                {
                    for (k, v) in r.known_entries(
                        inner,
                        &p,
                        what,
                        &["aliases", "ipv4_address", "ipv6_address"],
                    ) {
                        let kp = join(&p, &k.name);
                        match k.name.as_str() {
                            "aliases" => net.aliases = r.strings(v, &kp),
                            "ipv4_address" => net.ipv4_address = r.opt_text(v, &kp),
                            "ipv6_address" => net.ipv6_address = r.opt_text(v, &kp),
                            _ => {}
                        }
                    }
                }
                refs.push(NameRef {
                    name: key.name.clone(),
                    path: p,
                    line: key.line,
                });
                out.insert(key.name.clone(), net);
            }
        }
        _ => r.error(
            path,
            node.line,
            format!(
                "{what}: networks must be a list or a mapping, got {}",
                node.kind()
            ),
        ),
    }
    out
}
