//! The host policy: which dangerous compose settings this host accepts in stacks sent by the
//! server. It comes from the agent's own configuration file (`[policy]` in agent.toml, written
//! by the host's administrator), never from the server, and every key defaults to "refuse": a
//! compromised server must not be able to turn the host into a root shell by sending a compose
//! file.
//!
//! ```toml
//! [policy]
//! allow_privileged = false          # privileged: true
//! allow_host_network = false        # network_mode: host
//! allow_host_pid = false            # pid: host, ipc: host
//! allow_docker_socket = false       # binds of /var/run/docker.sock, /run/docker.sock, or of
//!                                   # `/` or any directory holding the socket
//! allow_capabilities = ["NET_ADMIN"] # cap_add beyond Docker's default set ("ALL" only if listed)
//! allow_devices = false             # devices:, deploy.resources.reservations.devices
//! allow_unconfined = false          # security_opt seccomp/apparmor/systempaths=unconfined, label=disable
//! allow_bind_paths = ["/srv/data"]  # absolute bind sources under these host directories
//! ```
//!
//! Relative bind sources (`./conf`) must stay inside the stack's own directory. Absolute bind
//! sources are refused unless under an `allow_bind_paths` entry, because a bind of `/etc` or
//! `/root` is as good as a root shell; a local volume with `o: bind` counts as a bind of its
//! `device`.
//!
//! The policy applies to stacks sent by the server only. The local `noco-agent compose …`
//! commands are run by the host's administrator on their own files and are not restricted.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use noco_compose::model::{MountKind, NetworkMode, Project, Service};
use serde::Deserialize;

/// What this host allows beyond the safe defaults. Every key defaults to false / empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub allow_privileged: bool,
    pub allow_host_network: bool,
    /// `pid: host` and `ipc: host`.
    pub allow_host_pid: bool,
    /// Binds of the Docker socket, or of `/` or a directory that holds the socket.
    pub allow_docker_socket: bool,
    /// Capabilities allowed in `cap_add` beyond [`SAFE_CAPABILITIES`] (`NET_ADMIN`, or `ALL`).
    pub allow_capabilities: Vec<String>,
    /// `devices:` and device requests (`deploy.resources.reservations.devices`).
    pub allow_devices: bool,
    /// `security_opt` entries that switch confinement off.
    pub allow_unconfined: bool,
    /// Host directories under which absolute bind sources are allowed.
    pub allow_bind_paths: Vec<String>,
}

/// Docker's default capabilities: adding them back (after a `cap_drop`) is always allowed.
pub const SAFE_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

const DOCKER_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// `cap_net_admin`, `CAP_NET_ADMIN` and `NET_ADMIN` are the same capability.
fn normalize_capability(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_string)
        .unwrap_or(upper)
}

/// Lexically normalize an absolute path (`.`, `..`, repeated and trailing slashes).
fn normalize_absolute(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether a relative bind source stays inside the stack directory.
fn stays_inside(relative: &str) -> bool {
    let mut depth = 0usize;
    for c in Path::new(relative).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A host path bound into a container: refused unless the policy allows it.
fn check_host_path(source: &str, what: &str, policy: &Policy, problems: &mut Vec<String>) {
    if !source.starts_with('/') {
        if !stays_inside(source) {
            problems.push(format!(
                "{what}: bind source {source:?} leaves the stack's directory"
            ));
        }
        return;
    }
    let path = normalize_absolute(source);
    // `/`, the socket itself, or a directory on the way to it (`/run`, `/var/run`, `/var`).
    let reaches_socket = DOCKER_SOCKETS
        .iter()
        .any(|sock| Path::new(sock).starts_with(&path));
    if reaches_socket {
        if !policy.allow_docker_socket {
            problems.push(format!(
                "{what}: bind of {source:?} gives the container the Docker socket (root on the host); this host's policy does not allow it (allow_docker_socket)"
            ));
        }
        return;
    }
    let allowed = policy
        .allow_bind_paths
        .iter()
        .any(|p| path.starts_with(normalize_absolute(p)));
    if !allowed {
        problems.push(format!(
            "{what}: bind of host path {source:?} is not under a directory this host's policy allows (allow_bind_paths)"
        ));
    }
}

fn check_service(name: &str, svc: &Service, policy: &Policy, problems: &mut Vec<String>) {
    let at = |key: &str| format!("services.{name}.{key}");
    if svc.privileged && !policy.allow_privileged {
        problems.push(format!(
            "{}: privileged containers are root on the host; this host's policy does not allow them (allow_privileged)",
            at("privileged")
        ));
    }
    if svc.network_mode == Some(NetworkMode::Host) && !policy.allow_host_network {
        problems.push(format!(
            "{}: host networking is not allowed by this host's policy (allow_host_network)",
            at("network_mode")
        ));
    }
    // Joining a container outside the stack could join one that has the host's network (or
    // pid/ipc) namespace: it counts as the host's namespace.
    if let Some(NetworkMode::Container(target)) = &svc.network_mode
        && !policy.allow_host_network
    {
        problems.push(format!(
            "{}: joining the network namespace of container {target:?} outside the stack is not allowed by this host's policy (allow_host_network)",
            at("network_mode")
        ));
    }
    for (key, value) in [("pid", &svc.pid), ("ipc", &svc.ipc)] {
        if let Some(target) = value.as_deref().and_then(|v| v.strip_prefix("container:"))
            && !policy.allow_host_pid
        {
            problems.push(format!(
                "{}: joining the {key} namespace of container {target:?} is not allowed by this host's policy (allow_host_pid)",
                at(key)
            ));
        }
        if value.as_deref() == Some("host") && !policy.allow_host_pid {
            problems.push(format!(
                "{}: the host's {key} namespace is not allowed by this host's policy (allow_host_pid)",
                at(key)
            ));
        }
    }
    let allowed: BTreeSet<String> = policy
        .allow_capabilities
        .iter()
        .map(|c| normalize_capability(c))
        .collect();
    for (i, cap) in svc.cap_add.iter().enumerate() {
        let cap = normalize_capability(cap);
        let safe = cap != "ALL" && SAFE_CAPABILITIES.contains(&cap.as_str());
        if !safe && !allowed.contains(&cap) && !allowed.contains("ALL") {
            problems.push(format!(
                "{}: capability {cap} is beyond Docker's default set and not allowed by this host's policy (allow_capabilities)",
                at(&format!("cap_add[{i}]"))
            ));
        }
    }
    if !policy.allow_devices {
        for (i, dev) in svc.devices.iter().enumerate() {
            problems.push(format!(
                "{}: device {dev:?} is not allowed by this host's policy (allow_devices)",
                at(&format!("devices[{i}]"))
            ));
        }
        if !svc.deploy.resources.devices.is_empty() {
            problems.push(format!(
                "{}: device requests are not allowed by this host's policy (allow_devices)",
                at("deploy.resources.reservations.devices")
            ));
        }
    }
    if !policy.allow_unconfined {
        for (i, opt) in svc.security_opt.iter().enumerate() {
            let o = opt.to_ascii_lowercase().replace(':', "=");
            if o.ends_with("=unconfined") || o == "label=disable" {
                problems.push(format!(
                    "{}: {opt:?} switches confinement off; this host's policy does not allow it (allow_unconfined)",
                    at(&format!("security_opt[{i}]"))
                ));
            }
        }
    }
    for (i, m) in svc.volumes.iter().enumerate() {
        if let MountKind::Bind { source, .. } = &m.kind {
            check_host_path(source, &at(&format!("volumes[{i}]")), policy, problems);
        }
    }
}

/// Check a loaded project against the host policy: `Ok`, or every violation, each naming the
/// service (or volume), the key and the reason.
pub fn check(project: &Project, policy: &Policy) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (name, svc) in &project.services {
        check_service(name, svc, policy, &mut problems);
    }
    for (key, vol) in &project.volumes {
        let opts = &vol.driver_opts;
        let bind = opts
            .get("o")
            .is_some_and(|o| o.split(',').any(|x| matches!(x.trim(), "bind" | "rbind")))
            || opts.get("type").is_some_and(|t| t == "none");
        if let (true, Some(device)) = (bind, opts.get("device")) {
            let what = format!("volumes.{key}.driver_opts.device");
            if device.starts_with('/') {
                check_host_path(device, &what, policy, &mut problems);
            } else {
                problems.push(format!(
                    "{what}: a bind volume needs an absolute device path, got {device:?}"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn project(yaml: &str) -> Project {
        let vars = BTreeMap::new();
        let opts = noco_compose::LoadOptions {
            project_name: Some("p"),
            variables: &vars,
            files: &noco_compose::NoFiles,
            profiles: &[],
            directory: None,
        };
        match noco_compose::load(yaml, &opts) {
            Ok(l) => l.project,
            Err(d) => panic!("{d:?}"),
        }
    }

    fn refused(yaml: &str, policy: &Policy) -> Vec<String> {
        check(&project(yaml), policy).expect_err("should be refused")
    }

    #[test]
    fn a_plain_stack_passes_the_default_policy() {
        let p = project(
            "services:\n  web:\n    image: nginx\n    cap_add: [NET_BIND_SERVICE, cap_chown]\n    cap_drop: [ALL]\n    volumes:\n      - ./conf:/etc/nginx/conf.d:ro\n      - data:/data\n    security_opt: [no-new-privileges:true]\nvolumes:\n  data: {}\n",
        );
        assert_eq!(check(&p, &Policy::default()), Ok(()));
    }

    #[test]
    fn each_dangerous_setting_is_refused_naming_service_and_key() {
        let deny = Policy::default();
        let cases = [
            (
                "services:\n  a:\n    image: x\n    privileged: true\n",
                "services.a.privileged",
            ),
            (
                "services:\n  a:\n    image: x\n    network_mode: host\n",
                "services.a.network_mode",
            ),
            (
                "services:\n  a:\n    image: x\n    pid: host\n",
                "services.a.pid",
            ),
            (
                "services:\n  a:\n    image: x\n    network_mode: container:other\n",
                "services.a.network_mode",
            ),
            (
                "services:\n  a:\n    image: x\n    pid: container:other\n",
                "services.a.pid",
            ),
            (
                "services:\n  a:\n    image: x\n    ipc: host\n",
                "services.a.ipc",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [/var/run/docker.sock:/var/run/docker.sock]\n",
                "allow_docker_socket",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [/run/docker.sock:/s]\n",
                "allow_docker_socket",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [/:/host]\n",
                "allow_docker_socket",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [/var/run:/r]\n",
                "allow_docker_socket",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [/etc:/e]\n",
                "allow_bind_paths",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [../../../../etc:/e]\n",
                "leaves the stack's directory",
            ),
            (
                "services:\n  a:\n    image: x\n    cap_add: [SYS_ADMIN]\n",
                "services.a.cap_add[0]: capability SYS_ADMIN",
            ),
            (
                "services:\n  a:\n    image: x\n    cap_add: [ALL]\n",
                "capability ALL",
            ),
            (
                "services:\n  a:\n    image: x\n    devices: [/dev/sda:/dev/sda]\n",
                "services.a.devices[0]",
            ),
            (
                "services:\n  a:\n    image: x\n    security_opt: [seccomp:unconfined]\n",
                "services.a.security_opt[0]",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [root:/r]\nvolumes:\n  root:\n    driver_opts: {type: none, o: bind, device: /}\n",
                "volumes.root.driver_opts.device",
            ),
        ];
        for (yaml, want) in cases {
            let problems = refused(yaml, &deny);
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{yaml}: {problems:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn the_policy_allows_what_it_names_and_nothing_more() {
        let allow = Policy {
            allow_privileged: true,
            allow_host_network: true,
            allow_host_pid: true,
            allow_docker_socket: true,
            allow_capabilities: vec!["cap_net_admin".into()],
            allow_devices: true,
            allow_unconfined: true,
            allow_bind_paths: vec!["/srv/data/".into()],
        };
        let p = project(
            "services:\n  a:\n    image: x\n    privileged: true\n    network_mode: host\n    pid: host\n    cap_add: [NET_ADMIN]\n    devices: [/dev/fuse]\n    security_opt: [apparmor=unconfined]\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n      - /srv/data/a:/a\n",
        );
        assert_eq!(check(&p, &allow), Ok(()));
        // A listed directory does not allow its neighbours, nor escapes through `..`.
        let problems = refused(
            "services:\n  a:\n    image: x\n    cap_add: [SYS_ADMIN]\n    volumes:\n      - /srv/database:/a\n      - /srv/data/../../etc:/b\n",
            &allow,
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        // Only the socket key allows the socket.
        let socket_only = Policy {
            allow_docker_socket: true,
            ..Policy::default()
        };
        let p = project(
            "services:\n  a:\n    image: x\n    volumes: [/var/run/docker.sock:/var/run/docker.sock]\n",
        );
        assert_eq!(check(&p, &socket_only), Ok(()));
        let all_caps = Policy {
            allow_capabilities: vec!["ALL".into()],
            ..Policy::default()
        };
        let p = project("services:\n  a:\n    image: x\n    cap_add: [ALL, SYS_ADMIN]\n");
        assert_eq!(check(&p, &all_caps), Ok(()));
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let problems = refused(
            "services:\n  a:\n    image: x\n    privileged: true\n  b:\n    image: x\n    network_mode: host\n    pid: host\n",
            &Policy::default(),
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn the_policy_table_parses_and_refuses_unknown_keys() {
        let p: Policy =
            toml::from_str("allow_privileged = true\nallow_capabilities = [\"NET_ADMIN\"]\n")
                .unwrap();
        assert!(p.allow_privileged && !p.allow_host_network);
        assert_eq!(p.allow_capabilities, vec!["NET_ADMIN".to_string()]);
        assert!(toml::from_str::<Policy>("allow_everything = true\n").is_err());
    }
}
