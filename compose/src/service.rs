//! One service definition → [`Service`], plus the references that project-wide validation
//! checks (dependencies, networks, volumes, published ports).

use std::collections::BTreeMap;

use crate::FileSource;
use crate::deploy::{LegacyResources, default_deploy, merge_legacy, read_cpus, read_deploy};
use crate::environment::{read_env_files, resolve_environment};
use crate::model::{
    Healthcheck, Logging, PullPolicy, RestartPolicy, Service, ServiceNetwork, Ulimit,
};
use crate::mounts::{VolumeRef, read_mounts};
use crate::parse::{Node, Value};
use crate::ports::{PortRef, read_expose, read_ports};
use crate::read::{Reader, index, join};
use crate::relations::{
    NameRef, read_depends_on, read_links, read_network_mode, read_service_networks,
};
use crate::secrets::{self, MountRef};
use crate::shell::split_words;

/// A loaded service and what the project-wide checks need to know about it.
pub(crate) struct Draft {
    pub service: Service,
    pub path: String,
    pub line: Option<usize>,
    /// Services this one depends on: `depends_on`, `links`, `network_mode: service:x`.
    pub dependencies: Vec<NameRef>,
    pub networks: Vec<NameRef>,
    pub volumes: Vec<VolumeRef>,
    pub ports: Vec<PortRef>,
    /// `profiles:` (empty: the service always runs); `profiles::select` decides.
    pub profiles: Vec<String>,
    /// `secrets:` and `configs:` as written; `secrets::attach` resolves them into the service.
    pub secrets: Vec<MountRef>,
    pub configs: Vec<MountRef>,
}

/// Service keys noco supports.
const SUPPORTED: &[&str] = &[
    "image",
    "build",
    "container_name",
    "restart",
    "environment",
    "env_file",
    "command",
    "entrypoint",
    "user",
    "working_dir",
    "hostname",
    "labels",
    "expose",
    "network_mode",
    "stop_grace_period",
    "stop_signal",
    "privileged",
    "cap_add",
    "cap_drop",
    "security_opt",
    "init",
    "devices",
    "extra_hosts",
    "shm_size",
    "tmpfs",
    "ulimits",
    "sysctls",
    "logging",
    "tty",
    "stdin_open",
    "read_only",
    "dns",
    "pid",
    "ipc",
    "platform",
    "pull_policy",
    "ports",
    "volumes",
    "depends_on",
    "healthcheck",
    "networks",
    "deploy",
    "links",
    "cpu_shares",
    "cpus",
    "mem_limit",
    "memswap_limit",
    "pids_limit",
    "group_add",
    "profiles",
    "secrets",
    "configs",
];

/// Why a compose service key that noco does not support is refused.
fn refusal(key: &str) -> Option<&'static str> {
    Some(match key {
        "extends" => {
            "extends is not supported: inline the settings (YAML anchors and `<<` merge keys work)"
        }
        "develop" => "develop (compose watch) is a development feature",
        "scale" => "use deploy.replicas instead",
        "volumes_from" => "volumes_from is not supported; mount the volumes by name",
        "external_links" => "external_links is not supported; use a shared external network",
        "annotations"
        | "attach"
        | "blkio_config"
        | "cgroup"
        | "cgroup_parent"
        | "cpu_count"
        | "cpu_percent"
        | "cpu_period"
        | "cpu_quota"
        | "cpu_rt_period"
        | "cpu_rt_runtime"
        | "cpuset"
        | "credential_spec"
        | "device_cgroup_rules"
        | "dns_opt"
        | "dns_search"
        | "domainname"
        | "gpus"
        | "isolation"
        | "label_file"
        | "mac_address"
        | "mem_reservation"
        | "mem_swappiness"
        | "models"
        | "oom_kill_disable"
        | "oom_score_adj"
        | "post_start"
        | "pre_stop"
        | "provider"
        | "runtime"
        | "storage_opt"
        | "userns_mode"
        | "uts"
        | "use_api_socket"
        | "volume_driver" => "noco does not support this compose key yet",
        _ => return None,
    })
}

pub(crate) fn read_service(
    r: &mut Reader,
    files: &dyn FileSource,
    name: &str,
    node: &Node,
    path: &str,
) -> Draft {
    let mut s = empty_service(name);
    let mut draft = Draft {
        service: s.clone(),
        path: path.to_owned(),
        line: node.line,
        dependencies: Vec::new(),
        networks: Vec::new(),
        volumes: Vec::new(),
        ports: Vec::new(),
        profiles: Vec::new(),
        secrets: Vec::new(),
        configs: Vec::new(),
    };
    let what = format!("service {name:?}");
    if !valid_service_name(name) {
        r.error(
            path,
            node.line,
            format!("{what}: invalid service name (use letters, digits, '.', '_' and '-')"),
        );
    }
    let Some(entries) = r.mapping(node, path) else {
        return draft;
    };

    let mut image = None;
    let mut build_line = None;
    let mut env_files = Vec::new();
    let mut environment = Vec::new();
    let mut networks_key: Option<(&Node, String, Option<usize>)> = None;
    let mut restart = None;
    let mut deploy_restart = None;
    let mut legacy = LegacyResources::default();

    for (key, value) in entries {
        let k = key.name.as_str();
        let p = join(path, k);
        if k.starts_with("x-") {
            continue;
        }
        if !SUPPORTED.contains(&k) {
            match refusal(k) {
                Some(why) => r.error(
                    &p,
                    key.line,
                    format!("{what}: key {k:?} is not supported: {why}"),
                ),
                None => {
                    let hint = crate::suggest::did_you_mean(k, SUPPORTED.iter().copied())
                        .map(|h| format!(": {h}"))
                        .unwrap_or_default();
                    r.error(&p, key.line, format!("{what}: unknown key {k:?}{hint}"))
                }
            }
            continue;
        }
        match k {
            "image" => image = r.text(value, &p).map(|i| (i, value.line, p)),
            "build" => build_line = Some(key.line),
            "container_name" => s.container_name = r.opt_text(value, &p),
            "restart" => {
                restart = r
                    .text(value, &p)
                    .and_then(|t| parse_restart(r, &t, &p, value.line, &what))
            }
            "environment" => environment = r.pairs(value, &p, &['=']),
            "env_file" => env_files = read_env_files(r, files, value, &p, &what),
            "command" => s.command = read_command(r, value, &p),
            "entrypoint" => s.entrypoint = read_command(r, value, &p),
            "user" => s.user = r.opt_text(value, &p),
            "working_dir" => s.working_dir = r.opt_text(value, &p),
            "hostname" => s.hostname = r.opt_text(value, &p),
            "labels" => s.labels = pairs_map(r, value, &p, &['='], ""),
            "expose" => s.expose = read_expose(r, value, &p, name),
            "network_mode" => {
                s.network_mode = read_network_mode(r, value, &p, &what, &mut draft.dependencies)
            }
            "stop_grace_period" => s.stop_grace_period = r.duration(value, &p),
            "stop_signal" => s.stop_signal = r.opt_text(value, &p),
            "privileged" => s.privileged = r.bool(value, &p).unwrap_or(false),
            "cap_add" => s.cap_add = r.strings(value, &p),
            "cap_drop" => s.cap_drop = r.strings(value, &p),
            "security_opt" => s.security_opt = r.strings(value, &p),
            "init" => {
                s.init = if value.is_null() {
                    None
                } else {
                    r.bool(value, &p)
                }
            }
            "devices" => s.devices = read_devices(r, value, &p, &what),
            "extra_hosts" => s.extra_hosts = read_extra_hosts(r, value, &p, &what),
            "shm_size" => s.shm_size = r.bytes(value, &p),
            "tmpfs" => s.tmpfs = r.string_or_list(value, &p),
            "ulimits" => s.ulimits = read_ulimits(r, value, &p, &what),
            "sysctls" => s.sysctls = pairs_map(r, value, &p, &['='], "sysctl"),
            "logging" => s.logging = read_logging(r, value, &p, &what),
            "tty" => s.tty = r.bool(value, &p).unwrap_or(false),
            "stdin_open" => s.stdin_open = r.bool(value, &p).unwrap_or(false),
            "read_only" => s.read_only = r.bool(value, &p).unwrap_or(false),
            "dns" => s.dns = r.string_or_list(value, &p),
            "pid" => s.pid = r.opt_text(value, &p),
            "ipc" => s.ipc = r.opt_text(value, &p),
            "platform" => s.platform = r.opt_text(value, &p),
            "pull_policy" => s.pull_policy = read_pull_policy(r, value, &p, &what),
            "ports" => draft.ports = read_ports(r, value, &p, name),
            "volumes" => {
                let (mounts, refs) = read_mounts(r, value, &p, name);
                s.volumes = mounts;
                draft.volumes = refs;
                // One mount per container path; ordered by it, as the order means nothing.
                s.volumes.sort_by(|a, b| a.target.cmp(&b.target));
                for pair in s.volumes.windows(2) {
                    if pair[0].target == pair[1].target {
                        r.error(
                            &p,
                            value.line,
                            format!(
                                "{what}: container path {:?} is mounted twice",
                                pair[0].target
                            ),
                        );
                    }
                }
            }
            "depends_on" => {
                s.depends_on = read_depends_on(r, value, &p, &what, &mut draft.dependencies)
            }
            "healthcheck" => s.healthcheck = read_healthcheck(r, value, &p, &what),
            "networks" => networks_key = Some((value, p, key.line)),
            "deploy" => {
                let section = read_deploy(r, value, &p, name);
                s.deploy = section.deploy;
                deploy_restart = section.restart.map(|policy| (policy, p, key.line));
            }
            "links" => s.links = read_links(r, value, &p, &what, &mut draft.dependencies),
            "cpu_shares" => s.cpu_shares = r.int(value, &p),
            "cpus" => legacy.cpus = read_cpus(r, value, &p),
            "mem_limit" => legacy.mem_limit = r.bytes(value, &p),
            "memswap_limit" => legacy.memswap_limit = r.bytes_or_unlimited(value, &p),
            "pids_limit" => legacy.pids_limit = r.int(value, &p),
            "group_add" => s.group_add = r.strings(value, &p),
            "profiles" => draft.profiles = crate::profiles::read_profiles(r, value, &p),
            "secrets" => {
                draft.secrets = secrets::read_mounts(r, value, &p, secrets::Kind::Secret, &what)
            }
            "configs" => {
                draft.configs = secrets::read_mounts(r, value, &p, secrets::Kind::Config, &what)
            }
            _ => {}
        }
    }

    match (image, build_line) {
        (Some((image, _, _)), Some(line)) => {
            r.warn(
                &join(path, "build"),
                line,
                format!("{what}: \"build\" is ignored: noco deploys the image {image:?} and never builds"),
            );
            s.image = image;
        }
        (Some((image, line, p)), None) => {
            if image.trim().is_empty() {
                r.error(&p, line, format!("{what}: \"image\" is empty"));
            }
            s.image = image;
        }
        (None, Some(line)) => r.error(
            &join(path, "build"),
            line,
            format!(
                "{what}: key \"build\" is not supported without \"image\": noco deploys images and never builds them; build and push the image, then set image:"
            ),
        ),
        (None, None) => r.error(path, node.line, format!("{what}: \"image\" is required")),
    }

    s.environment = resolve_environment(r, env_files, environment, &what);
    s.restart = match (restart, deploy_restart) {
        (Some(policy), None) => policy,
        (Some(policy), Some((_, p, line))) => {
            r.warn(
                &p,
                line,
                format!("{what}: deploy.restart_policy is ignored because \"restart\" is set"),
            );
            policy
        }
        (None, Some((policy, _, _))) => policy,
        (None, None) => RestartPolicy::No,
    };
    merge_legacy(r, &mut s.deploy.resources, legacy, path, node.line);

    match (networks_key, &s.network_mode) {
        (Some((_, p, line)), Some(_)) => {
            r.error(
                &p,
                line,
                format!("{what}: \"networks\" and \"network_mode\" cannot both be set"),
            );
        }
        (Some((value, p, _)), None) => {
            s.networks = read_service_networks(r, value, &p, &what, &mut draft.networks)
        }
        (None, Some(_)) => {}
        (None, None) => {
            s.networks
                .insert("default".to_owned(), ServiceNetwork::default());
            draft.networks.push(NameRef {
                name: "default".to_owned(),
                path: path.to_owned(),
                line: node.line,
            });
        }
    }

    draft.service = s;
    draft.service.ports = draft.ports.iter().map(|p| p.port.clone()).collect();
    draft.service.ports.sort();
    draft
}

fn empty_service(name: &str) -> Service {
    Service {
        name: name.to_owned(),
        image: String::new(),
        pull_policy: PullPolicy::Missing,
        container_name: None,
        command: None,
        entrypoint: None,
        environment: BTreeMap::new(),
        user: None,
        working_dir: None,
        hostname: None,
        labels: BTreeMap::new(),
        expose: Vec::new(),
        ports: Vec::new(),
        volumes: Vec::new(),
        network_mode: None,
        networks: BTreeMap::new(),
        depends_on: BTreeMap::new(),
        healthcheck: None,
        restart: RestartPolicy::No,
        deploy: default_deploy(),
        stop_grace_period: None,
        stop_signal: None,
        privileged: false,
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        security_opt: Vec::new(),
        init: None,
        devices: Vec::new(),
        extra_hosts: Vec::new(),
        shm_size: None,
        tmpfs: Vec::new(),
        ulimits: BTreeMap::new(),
        sysctls: BTreeMap::new(),
        logging: None,
        tty: false,
        stdin_open: false,
        read_only: false,
        dns: Vec::new(),
        pid: None,
        ipc: None,
        platform: None,
        links: Vec::new(),
        cpu_shares: None,
        group_add: Vec::new(),
        secrets: Vec::new(),
        configs: Vec::new(),
    }
}

pub(crate) fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn parse_restart(
    r: &mut Reader,
    text: &str,
    path: &str,
    line: Option<usize>,
    what: &str,
) -> Option<RestartPolicy> {
    match text {
        "no" | "" => Some(RestartPolicy::No),
        "always" => Some(RestartPolicy::Always),
        "unless-stopped" => Some(RestartPolicy::UnlessStopped),
        "on-failure" => Some(RestartPolicy::OnFailure(None)),
        other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
            Some(Ok(n)) => Some(RestartPolicy::OnFailure(Some(n))),
            _ => {
                r.error(
                    path,
                    line,
                    format!("{what}: restart {other:?} is not no, always, on-failure[:N] or unless-stopped"),
                );
                None
            }
        },
    }
}

/// A list-or-mapping field into a map; list items without `=` get an empty value (labels) or
/// are an error (sysctls, when `required` names the kind).
fn pairs_map(
    r: &mut Reader,
    node: &Node,
    path: &str,
    seps: &[char],
    required: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in r.pairs(node, path, seps) {
        match pair.value {
            Some(v) => {
                out.insert(pair.key, v);
            }
            None if required.is_empty() => {
                out.insert(pair.key, String::new());
            }
            None => r.error(
                &pair.path,
                pair.line,
                format!("{required} {:?} has no value", pair.key),
            ),
        }
    }
    out
}

/// `command`/`entrypoint`: a string split like a shell, or a list of words; null is unset.
fn read_command(r: &mut Reader, node: &Node, path: &str) -> Option<Vec<String>> {
    match &node.value {
        Value::Null => None,
        Value::Seq(_) => Some(r.strings(node, path)),
        _ => {
            let text = r.text(node, path)?;
            match split_words(&text) {
                Ok(words) => Some(words),
                Err(e) => {
                    r.error(path, node.line, e);
                    None
                }
            }
        }
    }
}

/// `devices:` entries as `host:container[:perms]`; a lone path maps to itself.
fn read_devices(r: &mut Reader, node: &Node, path: &str, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(items) = r.list(node, path) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(spec) = r.text(item, &p) else {
            continue;
        };
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.as_slice() {
            [one] if !one.is_empty() => out.push(format!("{one}:{one}")),
            [host, container] | [host, container, _]
                if !host.is_empty() && !container.is_empty() =>
            {
                out.push(spec.clone())
            }
            _ => r.error(
                &p,
                item.line,
                format!("{what}: device {spec:?} is not host_path[:container_path[:permissions]]"),
            ),
        }
    }
    out
}

/// `extra_hosts:` as `host:ip` entries, from a mapping or a list of `host:ip` / `host=ip`.
fn read_extra_hosts(r: &mut Reader, node: &Node, path: &str, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    let is_list = matches!(node.value, Value::Seq(_));
    // In a list, `=` separates if present; else the first `:` (an IPv6 address has more).
    let pairs = if is_list {
        let Some(items) = r.list(node, path) else {
            return out;
        };
        let mut pairs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            let Some(text) = r.text(item, &p) else {
                continue;
            };
            let split = text.split_once('=').or_else(|| text.split_once(':'));
            match split {
                Some((host, ip)) if !host.is_empty() && !ip.is_empty() => {
                    pairs.push((host.to_owned(), ip.to_owned()))
                }
                _ => r.error(
                    &p,
                    item.line,
                    format!("{what}: extra host {text:?} is not host:ip"),
                ),
            }
        }
        pairs
    } else {
        let mut pairs = Vec::new();
        for pair in r.pairs(node, path, &[]) {
            match pair.value {
                Some(ip) if !ip.is_empty() => pairs.push((pair.key, ip)),
                _ => r.error(
                    &pair.path,
                    pair.line,
                    format!("{what}: extra host {:?} has no address", pair.key),
                ),
            }
        }
        pairs
    };
    for (host, ip) in pairs {
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        out.push(format!("{host}:{ip}"));
    }
    out
}

fn read_ulimits(r: &mut Reader, node: &Node, path: &str, what: &str) -> BTreeMap<String, Ulimit> {
    let mut out = BTreeMap::new();
    let Some(entries) = r.mapping(node, path) else {
        return out;
    };
    // An `x-` key here is an extension, not a limit (as in compose).
    for (key, value) in entries.iter().filter(|(k, _)| !k.name.starts_with("x-")) {
        let p = join(path, &key.name);
        let limit = match &value.value {
            Value::Map(inner) => {
                let mut soft = None;
                let mut hard = None;
                for (k, v) in r.known_entries(inner, &p, what, &["soft", "hard"]) {
                    let kp = join(&p, &k.name);
                    if k.name == "soft" {
                        soft = r.int(v, &kp);
                    } else {
                        hard = r.int(v, &kp);
                    }
                }
                match (soft, hard) {
                    (Some(soft), Some(hard)) => {
                        if soft > hard {
                            r.error(
                                &p,
                                value.line,
                                format!(
                                    "{what}: ulimit {}: soft {soft} exceeds hard {hard}",
                                    key.name
                                ),
                            );
                        }
                        Some(Ulimit { soft, hard })
                    }
                    _ => {
                        r.error(
                            &p,
                            value.line,
                            format!("{what}: ulimit {} needs both soft and hard", key.name),
                        );
                        None
                    }
                }
            }
            _ => r.int(value, &p).map(|n| Ulimit { soft: n, hard: n }),
        };
        if let Some(limit) = limit {
            out.insert(key.name.clone(), limit);
        }
    }
    out
}

fn read_logging(r: &mut Reader, node: &Node, path: &str, what: &str) -> Option<Logging> {
    let entries = r.mapping(node, path)?;
    let mut logging = Logging {
        driver: None,
        options: BTreeMap::new(),
    };
    for (key, value) in r.known_entries(entries, path, what, &["driver", "options"]) {
        let p = join(path, &key.name);
        if key.name == "driver" {
            logging.driver = r.opt_text(value, &p);
        } else {
            logging.options = r.string_map(value, &p);
        }
    }
    Some(logging)
}

fn read_pull_policy(r: &mut Reader, node: &Node, path: &str, what: &str) -> PullPolicy {
    match r.text(node, path).as_deref() {
        Some("missing" | "if_not_present") | None => PullPolicy::Missing,
        Some("always") => PullPolicy::Always,
        Some("never") => PullPolicy::Never,
        Some("build") => {
            r.error(
                path,
                node.line,
                format!("{what}: pull_policy \"build\" is not supported: noco never builds images"),
            );
            PullPolicy::Missing
        }
        Some(other) => {
            r.error(
                path,
                node.line,
                format!("{what}: pull_policy {other:?} is not supported (use always, never, missing or if_not_present)"),
            );
            PullPolicy::Missing
        }
    }
}

fn read_healthcheck(r: &mut Reader, node: &Node, path: &str, what: &str) -> Option<Healthcheck> {
    let entries = r.mapping(node, path)?;
    let mut hc = Healthcheck {
        test: Vec::new(),
        interval: None,
        timeout: None,
        retries: None,
        start_period: None,
        start_interval: None,
    };
    let mut disable = false;
    let mut test_line = None;
    let known = [
        "test",
        "interval",
        "timeout",
        "retries",
        "start_period",
        "start_interval",
        "disable",
    ];
    for (key, value) in r.known_entries(entries, path, what, &known) {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "test" => {
                test_line = Some(key.line);
                hc.test = match &value.value {
                    Value::Seq(_) => {
                        let words = r.strings(value, &p);
                        match words.first().map(String::as_str) {
                            Some("CMD" | "CMD-SHELL" | "NONE") => words,
                            _ => {
                                r.error(&p, value.line, format!("{what}: healthcheck test list must start with CMD, CMD-SHELL or NONE"));
                                words
                            }
                        }
                    }
                    _ => match r.text(value, &p) {
                        Some(cmd) => vec!["CMD-SHELL".to_owned(), cmd],
                        None => Vec::new(),
                    },
                }
            }
            "interval" => hc.interval = r.duration(value, &p),
            "timeout" => hc.timeout = r.duration(value, &p),
            "retries" => hc.retries = r.int(value, &p),
            "start_period" => hc.start_period = r.duration(value, &p),
            "start_interval" => hc.start_interval = r.duration(value, &p),
            "disable" => disable = r.bool(value, &p).unwrap_or(false),
            _ => {}
        }
    }
    if disable {
        if let Some(line) = test_line
            && hc.test.first().is_none_or(|t| t != "NONE")
        {
            r.error(
                &join(path, "test"),
                line,
                format!("{what}: healthcheck sets both test and disable: true"),
            );
        }
        hc.test = vec!["NONE".to_owned()];
    }
    Some(hc)
}
