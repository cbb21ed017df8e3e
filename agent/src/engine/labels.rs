//! The labels noco puts on what it creates: docker compose's own (so `docker compose -p P ps`
//! and `logs` work on the host) plus noco's, which mark what noco manages.

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const NUMBER: &str = "com.docker.compose.container-number";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
pub const COMPOSE_HASH: &str = "com.docker.compose.config-hash";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const COMPOSE_VERSION: &str = "com.docker.compose.version";
pub const NETWORK: &str = "com.docker.compose.network";
pub const VOLUME: &str = "com.docker.compose.volume";
pub const IMAGE: &str = "com.docker.compose.image";

/// Marks every object noco created.
pub const MANAGED: &str = "io.noco.managed";
/// The canonical config hash of the service (noco-compose's `config_hash`).
pub const CONFIG_HASH: &str = "io.noco.config-hash";

/// The compose version we claim, for tools that read the label.
pub const COMPOSE_VERSION_VALUE: &str = "2.20.0";
