//! From a service of the model to the Engine API's container-create body: every supported
//! compose key lands here, in one place, so that inspecting a created container proves it.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, EndpointIpamConfig, EndpointSettings,
    HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType, MountVolumeOptions,
    NetworkingConfig, PortBinding, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use noco_compose::model::{
    MountKind, NetworkMode, Project, RestartPolicy as Restart, SeLinux, Service,
};

use super::{files, labels};

/// Where a container of a service comes from.
#[derive(Debug, Clone)]
pub struct ContainerIdentity<'a> {
    pub project: &'a Project,
    pub service: &'a Service,
    pub number: u32,
    pub config_hash: &'a str,
    /// The stack directory: relative bind sources resolve against it.
    pub stack_dir: &'a Path,
    /// Where the secret and config files it mounts are (see [`super::files`]).
    pub files_dir: &'a Path,
    /// The compose file, for the compose label.
    pub config_file: &'a str,
    /// The ID of the service's image (`sha256:…`), recorded as compose v2 records it.
    pub image_id: Option<&'a str>,
}

/// The canonical name of replica `number` of a service.
pub fn container_name(project: &Project, service: &Service, number: u32) -> String {
    match &service.container_name {
        Some(name) => name.clone(),
        None => format!("{}-{}-{number}", project.name, service.name),
    }
}

fn nanos(d: &Option<std::time::Duration>) -> Option<i64> {
    d.map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// Resolve a bind source: absolute as is; `./x`, `../x` and bare relative paths against the
/// stack directory; `~` against the agent's home is refused by validation upstream.
pub fn bind_source(stack_dir: &Path, source: &str) -> String {
    if source.starts_with('/') {
        return source.to_string();
    }
    let rel = source.strip_prefix("./").unwrap_or(source);
    let joined = stack_dir.join(rel);
    // Normalize `..` lexically (the directory may not exist yet).
    let mut parts: Vec<std::path::Component<'_>> = Vec::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                if matches!(parts.last(), Some(std::path::Component::Normal(_))) {
                    parts.pop();
                }
            }
            std::path::Component::CurDir => {}
            other => parts.push(other),
        }
    }
    parts
        .iter()
        .collect::<std::path::PathBuf>()
        .display()
        .to_string()
}

/// The network a container is created on (API 1.41 takes one at create); the others are
/// connected before it starts.
pub fn first_network(id: &ContainerIdentity<'_>) -> Option<String> {
    id.service.networks.keys().next().cloned()
}

/// `links` as Docker wants them: `<container>:<alias>`.
fn links(id: &ContainerIdentity<'_>) -> Vec<String> {
    id.service
        .links
        .iter()
        .map(|l| {
            let (service, alias) = l.split_once(':').unwrap_or((l.as_str(), l.as_str()));
            let target = id
                .project
                .services
                .get(service)
                .map(|t| container_name(id.project, t, 1))
                .unwrap_or_else(|| service.to_string());
            format!("{target}:{alias}")
        })
        .collect()
}

/// The container's settings on one of its networks: the service name and its aliases, a fixed
/// address if asked, and its links (on user-defined networks Docker takes links only here).
pub fn endpoint(id: &ContainerIdentity<'_>, key: &str) -> EndpointSettings {
    let mut aliases = vec![id.service.name.clone()];
    if let Some(net) = id.service.networks.get(key) {
        aliases.extend(net.aliases.iter().cloned());
    }
    let ipam = id.service.networks.get(key).and_then(|n| {
        (n.ipv4_address.is_some() || n.ipv6_address.is_some()).then(|| EndpointIpamConfig {
            ipv4_address: n.ipv4_address.clone(),
            ipv6_address: n.ipv6_address.clone(),
            ..Default::default()
        })
    });
    let links = links(id);
    EndpointSettings {
        aliases: Some(aliases),
        ipam_config: ipam,
        links: (!links.is_empty()).then_some(links),
        ..Default::default()
    }
}

pub fn network_name(project: &Project, key: &str) -> String {
    project
        .networks
        .get(key)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| format!("{}_{key}", project.name))
}

pub fn create_body(id: &ContainerIdentity<'_>) -> ContainerCreateBody {
    let svc = id.service;
    let project = id.project;
    let mut container_labels: HashMap<String, String> = svc.labels.clone().into_iter().collect();
    for (k, v) in [
        (labels::PROJECT, project.name.clone()),
        (labels::SERVICE, svc.name.clone()),
        (labels::NUMBER, id.number.to_string()),
        (labels::ONEOFF, "False".to_string()),
        (
            labels::COMPOSE_HASH,
            id.config_hash.trim_start_matches("sha256:").to_string(),
        ),
        (labels::WORKING_DIR, id.stack_dir.display().to_string()),
        (labels::CONFIG_FILES, id.config_file.to_string()),
        (
            labels::COMPOSE_VERSION,
            labels::COMPOSE_VERSION_VALUE.to_string(),
        ),
        (labels::MANAGED, "true".to_string()),
        (labels::CONFIG_HASH, id.config_hash.to_string()),
    ] {
        container_labels.insert(k.to_string(), v);
    }
    if let Some(image_id) = id.image_id {
        container_labels.insert(labels::IMAGE.to_string(), image_id.to_string());
    }

    let mut exposed: Vec<String> = svc
        .expose
        .iter()
        .map(|e| {
            if e.contains('/') {
                e.clone()
            } else {
                format!("{e}/tcp")
            }
        })
        .collect();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &svc.ports {
        let key = format!("{}/{}", p.target, p.protocol.as_str());
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        let binding = PortBinding {
            host_ip: p.host_ip.clone(),
            host_port: Some(p.published.map(|n| n.to_string()).unwrap_or_default()),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }

    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for m in &svc.volumes {
        match &m.kind {
            MountKind::Bind {
                source,
                selinux,
                propagation,
                create_host_path,
            } => {
                let src = bind_source(id.stack_dir, source);
                if *create_host_path && propagation.is_none() {
                    // The Binds form creates a missing host directory, as compose does.
                    let mut opts = Vec::new();
                    opts.push(if m.read_only { "ro" } else { "rw" });
                    match selinux {
                        Some(SeLinux::Shared) => opts.push("z"),
                        Some(SeLinux::Private) => opts.push("Z"),
                        None => {}
                    }
                    binds.push(format!("{src}:{}:{}", m.target, opts.join(",")));
                } else {
                    mounts.push(Mount {
                        typ: Some(MountType::BIND),
                        source: Some(src),
                        target: Some(m.target.clone()),
                        read_only: Some(m.read_only),
                        bind_options: propagation.as_ref().map(|p| MountBindOptions {
                            propagation: p.parse::<MountBindOptionsPropagationEnum>().ok(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
            MountKind::Volume { source, nocopy } => mounts.push(Mount {
                typ: Some(MountType::VOLUME),
                source: source.as_ref().map(|key| {
                    project
                        .volumes
                        .get(key)
                        .map(|v| v.name.clone())
                        .unwrap_or_else(|| key.clone())
                }),
                target: Some(m.target.clone()),
                read_only: Some(m.read_only),
                volume_options: nocopy.then(|| MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            MountKind::Tmpfs { size, mode } => mounts.push(Mount {
                typ: Some(MountType::TMPFS),
                target: Some(m.target.clone()),
                read_only: Some(m.read_only),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: size.map(|s| s as i64),
                    mode: mode.map(i64::from),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    // Secrets and configs: their files on the host, read-only (the source must exist: no
    // directory is made in its place).
    for f in files::of_service(project, svc) {
        mounts.push(Mount {
            typ: Some(MountType::BIND),
            source: Some(
                id.files_dir
                    .join(files::file_name(f.kind, f.mount))
                    .display()
                    .to_string(),
            ),
            target: Some(f.mount.target.clone()),
            read_only: Some(true),
            ..Default::default()
        });
    }

    let network_mode = match &svc.network_mode {
        Some(NetworkMode::Bridge) => Some("bridge".to_string()),
        Some(NetworkMode::Host) => Some("host".to_string()),
        Some(NetworkMode::None) => Some("none".to_string()),
        Some(NetworkMode::Service(s)) => {
            let target = project
                .services
                .get(s)
                .map(|t| container_name(project, t, 1))
                .unwrap_or_else(|| s.clone());
            Some(format!("container:{target}"))
        }
        Some(NetworkMode::Container(c)) => Some(format!("container:{c}")),
        None => first_network(id).map(|key| network_name(project, &key)),
    };

    let restart = match &svc.restart {
        Restart::No => RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        },
        Restart::Always => RestartPolicy {
            name: Some(RestartPolicyNameEnum::ALWAYS),
            maximum_retry_count: None,
        },
        Restart::UnlessStopped => RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        },
        Restart::OnFailure(n) => RestartPolicy {
            name: Some(RestartPolicyNameEnum::ON_FAILURE),
            maximum_retry_count: n.map(i64::from),
        },
    };

    let res = &svc.deploy.resources;
    let device_requests: Vec<DeviceRequest> = res
        .devices
        .iter()
        .map(|d| DeviceRequest {
            driver: d.driver.clone(),
            count: if d.device_ids.is_empty() {
                Some(d.count.unwrap_or(-1))
            } else {
                None
            },
            device_ids: (!d.device_ids.is_empty()).then(|| d.device_ids.clone()),
            capabilities: Some(vec![d.capabilities.clone()]),
            options: (!d.options.is_empty()).then(|| d.options.clone().into_iter().collect()),
        })
        .collect();

    let devices: Vec<DeviceMapping> = svc
        .devices
        .iter()
        .map(|d| {
            let mut parts = d.splitn(3, ':');
            let host = parts.next().unwrap_or_default().to_string();
            let container = parts
                .next()
                .map(str::to_string)
                .unwrap_or_else(|| host.clone());
            let perms = parts.next().unwrap_or("rwm").to_string();
            DeviceMapping {
                path_on_host: Some(host),
                path_in_container: Some(container),
                cgroup_permissions: Some(perms),
            }
        })
        .collect();

    let tmpfs: HashMap<String, String> = svc
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((path, opts)) => (path.to_string(), opts.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();

    // On the default bridge, links are legacy HostConfig links.
    let links = if matches!(svc.network_mode, Some(NetworkMode::Bridge)) {
        links(id)
    } else {
        Vec::new()
    };

    let host_config = HostConfig {
        binds: (!binds.is_empty()).then_some(binds),
        mounts: (!mounts.is_empty()).then_some(mounts),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        network_mode,
        restart_policy: Some(restart),
        privileged: Some(svc.privileged),
        cap_add: (!svc.cap_add.is_empty()).then(|| svc.cap_add.clone()),
        cap_drop: (!svc.cap_drop.is_empty()).then(|| svc.cap_drop.clone()),
        security_opt: (!svc.security_opt.is_empty()).then(|| svc.security_opt.clone()),
        init: svc.init,
        devices: (!devices.is_empty()).then_some(devices),
        device_requests: (!device_requests.is_empty()).then_some(device_requests),
        extra_hosts: (!svc.extra_hosts.is_empty()).then(|| svc.extra_hosts.clone()),
        shm_size: svc.shm_size.map(|s| s as i64),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        ulimits: (!svc.ulimits.is_empty()).then(|| {
            svc.ulimits
                .iter()
                .map(|(name, u)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        sysctls: (!svc.sysctls.is_empty()).then(|| svc.sysctls.clone().into_iter().collect()),
        log_config: svc.logging.as_ref().map(|l| HostConfigLogConfig {
            typ: l.driver.clone(),
            config: (!l.options.is_empty()).then(|| l.options.clone().into_iter().collect()),
        }),
        readonly_rootfs: Some(svc.read_only),
        dns: (!svc.dns.is_empty()).then(|| svc.dns.clone()),
        pid_mode: svc.pid.clone(),
        ipc_mode: svc.ipc.clone(),
        links: (!links.is_empty()).then_some(links),
        cpu_shares: svc.cpu_shares,
        group_add: (!svc.group_add.is_empty()).then(|| svc.group_add.clone()),
        nano_cpus: res.cpus.map(|c| (c * 1e9).round() as i64),
        memory: res.memory.map(|m| m as i64),
        memory_swap: res.memswap,
        pids_limit: res.pids,
        memory_reservation: res.reservation_memory.map(|m| m as i64),
        ..Default::default()
    };

    let networking_config = match (&svc.network_mode, first_network(id)) {
        (None, Some(key)) => Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network_name(project, &key),
                endpoint(id, &key),
            )])),
        }),
        _ => None,
    };

    let healthcheck = svc.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: nanos(&h.interval),
        timeout: nanos(&h.timeout),
        retries: h.retries.map(i64::from),
        start_period: nanos(&h.start_period),
        start_interval: nanos(&h.start_interval),
    });

    let mut env: Vec<String> = svc
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.sort();

    ContainerCreateBody {
        image: Some(svc.image.clone()),
        cmd: svc.command.clone(),
        entrypoint: svc.entrypoint.clone(),
        env: Some(env),
        user: svc.user.clone(),
        working_dir: svc.working_dir.clone(),
        hostname: svc.hostname.clone(),
        labels: Some(container_labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        tty: Some(svc.tty),
        open_stdin: Some(svc.stdin_open),
        stop_signal: svc.stop_signal.clone(),
        stop_timeout: svc.stop_grace_period.map(|d| d.as_secs() as i64),
        healthcheck,
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_sources_resolve_against_the_stack_directory() {
        let dir = Path::new("/srv/stacks/web");
        assert_eq!(bind_source(dir, "./data"), "/srv/stacks/web/data");
        assert_eq!(
            bind_source(dir, "nginx/nginx.conf"),
            "/srv/stacks/web/nginx/nginx.conf"
        );
        assert_eq!(bind_source(dir, "../shared"), "/srv/stacks/shared");
        assert_eq!(bind_source(dir, "/var/log"), "/var/log");
    }
}
