//! What the agent tells the server about its host: hostname, OS, kernel, architecture, Docker
//! engine version and its own version.

use std::time::Duration;

use noco_proto::v1::HostFacts;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".to_string())
}

fn os_pretty_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

/// The Docker engine's version, or `unavailable: <why>`.
pub async fn docker_version() -> String {
    let probe = async {
        let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| e.to_string())?;
        let v = docker.version().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(v.version.unwrap_or_else(|| "unknown".to_string()))
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => format!("unavailable: {e}"),
        Err(_) => "unavailable: the Docker engine did not answer within 5s".to_string(),
    }
}

pub async fn gather() -> HostFacts {
    HostFacts {
        hostname: hostname(),
        os: os_pretty_name(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        docker_version: docker_version().await,
        agent_version: AGENT_VERSION.to_string(),
    }
}
