//! Project-wide checks, run once every service is loaded: references name things that exist,
//! no dependency cycles, no clashing container names or published ports, and `service_healthy`
//! only on a service that has a healthcheck.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{DependencyCondition, Network, Volume};
use crate::read::{Reader, join};
use crate::service::Draft;

pub(crate) fn validate(
    r: &mut Reader,
    drafts: &[Draft],
    volumes: &BTreeMap<String, Volume>,
    networks: &BTreeMap<String, Network>,
) {
    let names: BTreeSet<&str> = drafts.iter().map(|d| d.service.name.as_str()).collect();
    for d in drafts {
        let what = format!("service {:?}", d.service.name);
        for dep in &d.dependencies {
            if !names.contains(dep.name.as_str()) {
                r.error(
                    &dep.path,
                    dep.line,
                    format!("{what} refers to unknown service {:?}", dep.name),
                );
            }
        }
        for net in &d.networks {
            if !networks.contains_key(&net.name) {
                r.error(
                    &net.path,
                    net.line,
                    format!("{what} uses network {:?}, which is not declared under the top-level networks", net.name),
                );
            }
        }
        for vol in &d.volumes {
            if !volumes.contains_key(&vol.name) {
                r.error(
                    &vol.path,
                    vol.line,
                    format!(
                        "{what} mounts volume {:?}, which is not declared under the top-level volumes (host paths start with /, ./, ../ or ~)",
                        vol.name
                    ),
                );
            }
        }
        if let Some(container_name) = &d.service.container_name
            && d.service.deploy.replicas > 1
        {
            r.error(
                &d.path,
                d.line,
                format!(
                    "{what} sets container_name {container_name:?} and deploy.replicas {}: a fixed container name allows one container",
                    d.service.deploy.replicas
                ),
            );
        }
    }
    check_container_names(r, drafts);
    check_health_dependencies(r, drafts);
    check_cycles(r, drafts, &names);
    check_ports(r, drafts);
}

fn check_container_names(r: &mut Reader, drafts: &[Draft]) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for d in drafts {
        let Some(container_name) = d.service.container_name.as_deref() else {
            continue;
        };
        if let Some(first) = seen.insert(container_name, &d.service.name) {
            r.error(
                &d.path,
                d.line,
                format!(
                    "services {first:?} and {:?} both set container_name {container_name:?}",
                    d.service.name
                ),
            );
        }
    }
}

/// `service_healthy` needs a dependency that has a healthcheck ([`Service::has_healthcheck`]):
/// without one it never becomes healthy, and every host would fail the stack. Compose also
/// accepts a dependency whose image has a HEALTHCHECK, but the image cannot be known here; a
/// `healthcheck:` without `test` (even `healthcheck: {}`) says to use the image's own.
///
/// [`Service::has_healthcheck`]: crate::model::Service::has_healthcheck
fn check_health_dependencies(r: &mut Reader, drafts: &[Draft]) {
    let by_name: BTreeMap<&str, &Draft> = drafts
        .iter()
        .map(|d| (d.service.name.as_str(), d))
        .collect();
    for d in drafts {
        for (dep, how) in &d.service.depends_on {
            if how.condition != DependencyCondition::ServiceHealthy {
                continue;
            }
            let Some(target) = by_name.get(dep.as_str()).map(|t| &t.service) else {
                continue; // an unknown service, reported as such
            };
            if target.has_healthcheck() {
                continue;
            }
            let why = if target.healthcheck.is_some() {
                format!("{dep:?} disables its healthcheck (disable: true, or test: [\"NONE\"])")
            } else {
                format!(
                    "{dep:?} has no healthcheck: add one under services.{dep}.healthcheck (`healthcheck: {{}}` uses its image's own)"
                )
            };
            let path = join(&join(&d.path, "depends_on"), dep);
            let line = d
                .dependencies
                .iter()
                .find(|r| r.path == path)
                .and_then(|r| r.line);
            r.error(
                &path,
                line,
                format!(
                    "service {:?} depends on {dep:?} being healthy (service_healthy), but {why}",
                    d.service.name
                ),
            );
        }
    }
}

/// Report dependency cycles (one per back edge of a depth-first walk, so every cyclic
/// group is named), each as `a -> b -> a` starting from its smallest name. Iterative, so a
/// long chain of services cannot overflow the stack.
fn check_cycles(r: &mut Reader, drafts: &[Draft], names: &BTreeSet<&str>) {
    let graph: BTreeMap<&str, BTreeSet<&str>> = drafts
        .iter()
        .map(|d| {
            let deps = d
                .dependencies
                .iter()
                .map(|dep| dep.name.as_str())
                .filter(|n| names.contains(n))
                .collect();
            (d.service.name.as_str(), deps)
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        OnPath,
        Done,
    }
    let mut state: BTreeMap<&str, State> = BTreeMap::new();
    let mut cycles: BTreeSet<Vec<&str>> = BTreeSet::new();
    let empty = BTreeSet::new();
    for (&start, start_deps) in &graph {
        if state.contains_key(start) {
            continue;
        }
        let mut path = vec![start];
        let mut pending = vec![start_deps.iter()];
        state.insert(start, State::OnPath);
        while let Some(next) = pending.last_mut().map(Iterator::next) {
            match next {
                Some(&dep) => match state.get(dep) {
                    Some(State::OnPath) => {
                        let from = path.iter().position(|n| *n == dep).unwrap_or(0);
                        let mut cycle = path[from..].to_vec();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, n)| **n)
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min);
                        cycles.insert(cycle);
                    }
                    Some(State::Done) => {}
                    None => {
                        state.insert(dep, State::OnPath);
                        path.push(dep);
                        pending.push(graph.get(dep).unwrap_or(&empty).iter());
                    }
                },
                None => {
                    pending.pop();
                    if let Some(done) = path.pop() {
                        state.insert(done, State::Done);
                    }
                }
            }
        }
    }
    for cycle in cycles {
        let Some(first) = cycle.first() else { continue };
        let line = drafts
            .iter()
            .find(|d| d.service.name == *first)
            .and_then(|d| d.line);
        let mut shown = cycle.clone();
        shown.push(first);
        r.error(
            &format!("services.{first}"),
            line,
            format!("dependency cycle: {}", shown.join(" -> ")),
        );
    }
}

fn is_wildcard(ip: Option<&str>) -> bool {
    matches!(ip, None | Some("0.0.0.0" | "::" | "[::]"))
}

/// Two published ports clash when they share protocol and host port and their host
/// addresses overlap (equal, or either is a wildcard). A fixed host port on a service with
/// several replicas clashes with itself.
fn check_ports(r: &mut Reader, drafts: &[Draft]) {
    let mut seen: Vec<(&str, &crate::ports::PortRef)> = Vec::new();
    for d in drafts {
        let name = d.service.name.as_str();
        for port in &d.ports {
            let Some(published) = port.port.published else {
                continue;
            };
            if d.service.deploy.replicas > 1 {
                r.error(
                    &port.path,
                    port.line,
                    format!(
                        "service {name:?} publishes fixed host port {published} but has {} replicas; only one container can bind it",
                        d.service.deploy.replicas
                    ),
                );
            }
            let clash = seen.iter().find(|(_, other)| {
                other.port.published == Some(published)
                    && other.port.protocol == port.port.protocol
                    && (is_wildcard(other.port.host_ip.as_deref())
                        || is_wildcard(port.port.host_ip.as_deref())
                        || other.port.host_ip == port.port.host_ip)
            });
            if let Some((other_service, other)) = clash {
                let by = if *other_service == name {
                    "itself".to_owned()
                } else {
                    format!("service {other_service:?}")
                };
                r.error(
                    &port.path,
                    port.line,
                    format!(
                        "service {name:?}: host port {published}/{} is already published by {by} ({})",
                        port.port.protocol.as_str(),
                        other.path
                    ),
                );
            }
            seen.push((name, port));
        }
    }
}
