//! The typed, normalized compose model. A compose file becomes a [`Project`] once (parse,
//! interpolate, validate, normalize); everything after — hashing, planning, applying — works on
//! this model only. Every field is in its canonical form: durations as [`Duration`], sizes in
//! bytes, short syntaxes expanded to long ones, maps sorted, so two files that mean the same
//! thing produce equal models (and equal config hashes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// A whole stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    /// The compose project name (`-p`, else top-level `name:`); lowercase `[a-z0-9_-]`.
    pub name: String,
    pub services: BTreeMap<String, Service>,
    /// Declared networks by their key in the file. When no service declares networks and none
    /// is declared, the normalizer adds `default` (compose's `<project>_default`).
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    /// Top-level `secrets:` that some service mounts, by key, with their content.
    pub secrets: BTreeMap<String, FileObject>,
    /// Top-level `configs:` that some service mounts, by key, with their content.
    pub configs: BTreeMap<String, FileObject>,
    /// `x-noco.backups`, by name (see [`crate::backups`]).
    pub backups: Vec<crate::backups::BackupSpec>,
}

impl Project {
    /// Whether `service` is a one-shot: another service waits for it with `depends_on: {service:
    /// {condition: service_completed_successfully}}`. Only a one-shot's containers are meant to
    /// finish (exit 0) and stay exited; every other service's containers are meant to be
    /// running, and one that stopped — whatever its exit code — is started again.
    pub fn is_one_shot(&self, service: &str) -> bool {
        self.services.values().any(|s| {
            s.depends_on
                .get(service)
                .is_some_and(|d| d.condition == DependencyCondition::ServiceCompletedSuccessfully)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub image: String,
    pub pull_policy: PullPolicy,
    pub container_name: Option<String>,
    /// `None`: the image's default. String forms are split into words as a POSIX shell would.
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Resolved environment (env_file first, then `environment`, later wins). A variable listed
    /// without a value and not found in the provided variables is left out (with a warning).
    pub environment: BTreeMap<String, String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Container ports exposed without publishing, as `port[/proto]`.
    pub expose: Vec<String>,
    /// One entry per container port (ranges expanded).
    pub ports: Vec<Port>,
    pub volumes: Vec<Mount>,
    pub network_mode: Option<NetworkMode>,
    /// Networks by their key in the project's `networks`; empty when `network_mode` is set.
    pub networks: BTreeMap<String, ServiceNetwork>,
    pub depends_on: BTreeMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: RestartPolicy,
    pub deploy: Deploy,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub init: Option<bool>,
    /// `host:container[:perms]`.
    pub devices: Vec<String>,
    /// `host:ip` entries.
    pub extra_hosts: Vec<String>,
    pub shm_size: Option<u64>,
    /// `path[:options]` entries from the service-level `tmpfs` key.
    pub tmpfs: Vec<String>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub sysctls: BTreeMap<String, String>,
    pub logging: Option<Logging>,
    pub tty: bool,
    pub stdin_open: bool,
    pub read_only: bool,
    pub dns: Vec<String>,
    pub pid: Option<String>,
    pub ipc: Option<String>,
    pub platform: Option<String>,
    /// `service[:alias]`.
    pub links: Vec<String>,
    pub cpu_shares: Option<i64>,
    pub group_add: Vec<String>,
    /// `secrets:` mounted read-only under `/run/secrets` (or their absolute target), ordered by
    /// target. Left out of the serialization (and so of the config hash) when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileMount>,
    /// `configs:` mounted read-only at their target (default `/<name>`), ordered by target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileMount>,
}

impl Service {
    /// Whether the service has a healthcheck: a `healthcheck:` in the file that does not disable
    /// it (`disable: true`, `test: ["NONE"]`). One without `test` keeps the image's own test.
    /// An image's HEALTHCHECK alone does not count: it cannot be known without the image.
    pub fn has_healthcheck(&self) -> bool {
        self.healthcheck.as_ref().is_some_and(|h| !h.disabled())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull only when the image is not present locally (compose's default, `missing`/`if_not_present`).
    Missing,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One published or unpublished container port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Port {
    pub target: u16,
    /// `None`: an ephemeral host port chosen by Docker.
    pub published: Option<u16>,
    pub host_ip: Option<String>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    /// `source` is as written: absolute, or relative to the stack directory (`./x`, `../x`);
    /// resolving it is the applier's job (the model is pure).
    Bind {
        source: String,
        selinux: Option<SeLinux>,
        propagation: Option<String>,
        create_host_path: bool,
    },
    /// `source`: the key of a project volume, or `None` for an anonymous volume.
    Volume {
        source: Option<String>,
        nocopy: bool,
    },
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SeLinux {
    /// `z`: shared label.
    Shared,
    /// `Z`: private label.
    Private,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", content = "target", rename_all = "snake_case")]
pub enum NetworkMode {
    Bridge,
    Host,
    None,
    /// `service:<name>`: share another service's network namespace.
    Service(String),
    /// `container:<name or id>`.
    Container(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub condition: DependencyCondition,
    /// `false`: a missing or failing dependency only warns.
    pub required: bool,
    /// Restart this service when the dependency is recreated.
    pub restart: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["CMD", …]`, `["CMD-SHELL", "…"]`, or `["NONE"]` (disabled). A string `test` becomes
    /// `["CMD-SHELL", string]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
}

impl Healthcheck {
    pub fn disabled(&self) -> bool {
        self.test.first().is_some_and(|t| t == "NONE")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "policy", content = "max_retries", rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    OnFailure(Option<u32>),
    UnlessStopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deploy {
    /// Containers of this service (`deploy.replicas`, default 1). Not part of the config hash.
    pub replicas: u32,
    pub update_order: UpdateOrder,
    pub update_parallelism: u32,
    pub update_delay: Option<Duration>,
    pub resources: Resources,
}

/// Resource limits, merged from `deploy.resources` and the legacy service keys (`cpus`,
/// `mem_limit`, `memswap_limit`, `pids_limit`); `deploy.resources` wins where both are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub memswap: Option<i64>,
    pub pids: Option<i64>,
    pub reservation_cpus: Option<f64>,
    pub reservation_memory: Option<u64>,
    pub devices: Vec<DeviceRequest>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceRequest {
    pub driver: Option<String>,
    /// `None` with no ids: all devices (`count: all`).
    pub count: Option<i64>,
    pub device_ids: Vec<String>,
    pub capabilities: Vec<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// The Docker network's name: `name:` if given, else `<project>_<key>`; for external
    /// networks, `name:` or the key.
    pub name: String,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub internal: bool,
    pub attachable: bool,
    pub enable_ipv6: bool,
    pub ipam: Option<Ipam>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Vec<IpamPool>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IpamPool {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// The Docker volume's name: `name:` if given, else `<project>_<key>`; for external
    /// volumes, `name:` or the key.
    pub name: String,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config: where its content came from, and the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileObject {
    pub source: ObjectSource,
    pub content: Content,
}

/// Where a secret's or config's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ObjectSource {
    /// `file:`, as written (interpolated): relative to the compose file's directory, or
    /// absolute. On the fleet the file ships with the revision under this path.
    File(String),
    /// `environment:`: the variable's name (from the env files and variables given, never a
    /// process environment).
    Environment(String),
    /// `content:` (configs only), inline and interpolated.
    Inline,
}

/// The bytes of a secret or config. Serialized, and printed with `{:?}`, as their SHA-256 only,
/// so that no view of the model (a plan, a diff, a log line) can show them.
#[derive(Clone, PartialEq, Eq)]
pub struct Content(Vec<u8>);

impl Content {
    pub fn new(bytes: Vec<u8>) -> Self {
        Content(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `sha256:<hex>` of the bytes.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        format!("sha256:{}", hex::encode(Sha256::digest(&self.0)))
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Content({} bytes, {})", self.0.len(), self.digest())
    }
}

impl Serialize for Content {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.digest())
    }
}

/// A secret or config as one service mounts it: a read-only file at `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMount {
    /// The key of the project's secret or config.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Owner of the file; `None`: the agent's own user (root for a system agent).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Permission bits (at most 0777): default 0400 for secrets, 0444 for configs.
    pub mode: u32,
    /// [`Content::digest`] of the content, so that the config hash changes with the content
    /// without holding it.
    pub digest: String,
}
