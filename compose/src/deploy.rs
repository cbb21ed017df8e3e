//! `deploy:` (replicas, update_config, restart_policy, resources) and the legacy resource keys
//! it is merged with (`cpus`, `mem_limit`, `memswap_limit`, `pids_limit`).

use crate::model::{Deploy, DeviceRequest, Resources, RestartPolicy, UpdateOrder};
use crate::parse::Node;
use crate::read::{Reader, index, join};

/// What `deploy:` says, before merging with the service's legacy keys.
pub(crate) struct DeploySection {
    pub deploy: Deploy,
    /// `deploy.restart_policy`, used when the service has no `restart:`.
    pub restart: Option<RestartPolicy>,
}

pub(crate) fn default_deploy() -> Deploy {
    Deploy {
        replicas: 1,
        update_order: UpdateOrder::StopFirst,
        update_parallelism: 1,
        update_delay: None,
        resources: Resources::default(),
    }
}

pub(crate) fn read_deploy(r: &mut Reader, node: &Node, path: &str, service: &str) -> DeploySection {
    let mut section = DeploySection {
        deploy: default_deploy(),
        restart: None,
    };
    let Some(entries) = r.mapping(node, path) else {
        return section;
    };
    let what = format!("service {service:?}: deploy");
    let known = [
        "replicas",
        "update_config",
        "restart_policy",
        "resources",
        "mode",
        "placement",
        "labels",
        "endpoint_mode",
        "rollback_config",
    ];
    for (key, value) in r.known_entries(entries, path, &what, &known) {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "replicas" => {
                if let Some(n) = r.int::<u32>(value, &p) {
                    section.deploy.replicas = n;
                }
            }
            "update_config" => read_update_config(r, value, &p, &what, &mut section.deploy),
            "restart_policy" => section.restart = read_restart_policy(r, value, &p, &what),
            "resources" => section.deploy.resources = read_resources(r, value, &p, &what),
            "mode" => match r.text(value, &p).as_deref() {
                Some("replicated") | None => {}
                Some(other) => r.error(
                    &p,
                    value.line,
                    format!("{what}: mode {other:?} is not supported: noco runs replicated services on one host"),
                ),
            },
            other => r.error(
                &p,
                key.line,
                format!("{what}: key {other:?} is not supported: it only has a meaning in Docker Swarm"),
            ),
        }
    }
    section
}

fn read_update_config(r: &mut Reader, node: &Node, path: &str, what: &str, deploy: &mut Deploy) {
    let Some(entries) = r.mapping(node, path) else {
        return;
    };
    let known = [
        "parallelism",
        "delay",
        "order",
        "failure_action",
        "monitor",
        "max_failure_ratio",
    ];
    for (key, value) in r.known_entries(entries, path, what, &known) {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "parallelism" => match r.int::<u32>(value, &p) {
                Some(0) => r.error(
                    &p,
                    value.line,
                    format!("{what}: update_config.parallelism must be at least 1"),
                ),
                Some(n) => deploy.update_parallelism = n,
                None => {}
            },
            "delay" => deploy.update_delay = r.duration(value, &p),
            "order" => match r.text(value, &p).as_deref() {
                Some("stop-first") => deploy.update_order = UpdateOrder::StopFirst,
                Some("start-first") => deploy.update_order = UpdateOrder::StartFirst,
                Some(other) => r.error(
                    &p,
                    value.line,
                    format!(
                        "{what}: update_config.order {other:?} is not stop-first or start-first"
                    ),
                ),
                None => {}
            },
            other => {
                // Read it so that a bad value is still reported, then say it has no effect.
                let _ = r.text(value, &p);
                r.warn(
                    &p,
                    key.line,
                    format!(
                        "{what}: update_config.{other} is ignored: noco rolls back through `nococtl rollout`, not per service"
                    ),
                );
            }
        }
    }
}

fn read_restart_policy(
    r: &mut Reader,
    node: &Node,
    path: &str,
    what: &str,
) -> Option<RestartPolicy> {
    let entries = r.mapping(node, path)?;
    let mut condition = None;
    let mut max_attempts = None;
    for (key, value) in r.known_entries(
        entries,
        path,
        what,
        &["condition", "max_attempts", "delay", "window"],
    ) {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "condition" => condition = r.text(value, &p).map(|c| (c, value.line, p)),
            "max_attempts" => max_attempts = r.int::<u32>(value, &p),
            other => {
                let _ = r.duration(value, &p);
                r.warn(&p, key.line, format!("{what}: restart_policy.{other} is ignored (Docker Engine does not support it)"));
            }
        }
    }
    match condition {
        None => Some(RestartPolicy::Always),
        Some((c, line, p)) => {
            match c.as_str() {
                "any" => Some(RestartPolicy::Always),
                "on-failure" => Some(RestartPolicy::OnFailure(max_attempts)),
                "none" => Some(RestartPolicy::No),
                other => {
                    r.error(&p, line, format!("{what}: restart_policy.condition {other:?} is not none, on-failure or any"));
                    None
                }
            }
        }
    }
}

fn read_resources(r: &mut Reader, node: &Node, path: &str, what: &str) -> Resources {
    let mut res = Resources::default();
    let Some(entries) = r.mapping(node, path) else {
        return res;
    };
    for (key, value) in r.known_entries(entries, path, what, &["limits", "reservations"]) {
        let p = join(path, &key.name);
        let Some(inner) = r.mapping(value, &p) else {
            continue;
        };
        let limits = key.name == "limits";
        let known: &[&str] = if limits {
            &["cpus", "memory", "pids"]
        } else {
            &["cpus", "memory", "devices", "generic_resources"]
        };
        for (k, v) in r.known_entries(inner, &p, what, known) {
            let kp = join(&p, &k.name);
            match (limits, k.name.as_str()) {
                (true, "cpus") => res.cpus = read_cpus(r, v, &kp),
                (true, "memory") => res.memory = r.bytes(v, &kp),
                (true, "pids") => res.pids = r.int(v, &kp),
                (false, "cpus") => res.reservation_cpus = read_cpus(r, v, &kp),
                (false, "memory") => res.reservation_memory = r.bytes(v, &kp),
                (false, "devices") => res.devices = read_devices(r, v, &kp, what),
                (_, other) => r.error(
                    &kp,
                    k.line,
                    format!("{what}: resources.reservations.{other} is not supported"),
                ),
            }
        }
    }
    res
}

pub(crate) fn read_cpus(r: &mut Reader, node: &Node, path: &str) -> Option<f64> {
    let cpus = r.float(node, path)?;
    if cpus < 0.0 {
        r.error(
            path,
            node.line,
            format!("cpus must not be negative, got {cpus}"),
        );
        return None;
    }
    Some(cpus)
}

fn read_devices(r: &mut Reader, node: &Node, path: &str, what: &str) -> Vec<DeviceRequest> {
    let mut out = Vec::new();
    let Some(items) = r.list(node, path) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(entries) = r.mapping(item, &p) else {
            continue;
        };
        let mut device = DeviceRequest::default();
        let mut has_count = false;
        let known = ["capabilities", "count", "device_ids", "driver", "options"];
        for (key, value) in r.known_entries(entries, &p, what, &known) {
            let kp = join(&p, &key.name);
            match key.name.as_str() {
                "capabilities" => device.capabilities = r.strings(value, &kp),
                "count" => {
                    has_count = true;
                    if r.text(value, &kp).as_deref() == Some("all") {
                        device.count = None;
                    } else {
                        device.count = r.int(value, &kp);
                    }
                }
                "device_ids" => device.device_ids = r.strings(value, &kp),
                "driver" => device.driver = r.opt_text(value, &kp),
                "options" => device.options = r.string_map(value, &kp),
                _ => {}
            }
        }
        if has_count && !device.device_ids.is_empty() {
            r.error(
                &p,
                item.line,
                format!("{what}: a device request sets both count and device_ids"),
            );
        }
        if device.capabilities.is_empty() {
            r.error(
                &p,
                item.line,
                format!("{what}: a device request needs \"capabilities\""),
            );
        }
        out.push(device);
    }
    out
}

/// The legacy service-level resource keys.
#[derive(Default)]
pub(crate) struct LegacyResources {
    pub cpus: Option<f64>,
    pub mem_limit: Option<u64>,
    pub memswap_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Merge legacy keys into `deploy.resources`; `deploy.resources` wins, with a warning when
/// the two disagree.
pub(crate) fn merge_legacy(
    r: &mut Reader,
    res: &mut Resources,
    legacy: LegacyResources,
    path: &str,
    line: Option<usize>,
) {
    fn merge<T: PartialEq + std::fmt::Debug>(
        r: &mut Reader,
        deploy: &mut Option<T>,
        legacy: Option<T>,
        names: (&str, &str),
        path: &str,
        line: Option<usize>,
    ) {
        match (deploy.as_ref(), legacy) {
            (None, legacy) => *deploy = legacy,
            (Some(d), Some(l)) if *d != l => r.warn(
                path,
                line,
                format!(
                    "{} ({l:?}) and deploy.resources.{} ({d:?}) differ; using deploy.resources",
                    names.0, names.1
                ),
            ),
            _ => {}
        }
    }
    merge(
        r,
        &mut res.cpus,
        legacy.cpus,
        ("cpus", "limits.cpus"),
        path,
        line,
    );
    merge(
        r,
        &mut res.memory,
        legacy.mem_limit,
        ("mem_limit", "limits.memory"),
        path,
        line,
    );
    merge(
        r,
        &mut res.memswap,
        legacy.memswap_limit,
        ("memswap_limit", "memswap"),
        path,
        line,
    );
    merge(
        r,
        &mut res.pids,
        legacy.pids_limit,
        ("pids_limit", "limits.pids"),
        path,
        line,
    );
}
