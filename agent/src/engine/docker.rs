//! Connecting to the local Docker engine, and the small Docker operations the applier composes:
//! images, networks, volumes, container lifecycle, logs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerInspectResponse, NetworkConnectRequest, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use noco_compose::model::{Network, Project, PullPolicy, Service, Volume};

use super::{EngineError, labels, not_found};

/// Connect to the engine named by DOCKER_HOST or the default socket, at an API version both
/// sides speak (asking the engine its version is the liveness check).
pub async fn connect() -> Result<Docker, EngineError> {
    if let Some(docker) = connect_by_ping().await {
        return Ok(docker);
    }
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| EngineError::docker("connecting to Docker", e))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| EngineError::docker("connecting to Docker", e))
}

/// Connect at the version `/_ping` names in its `API-Version` header, as negotiating would
/// choose it: that answer takes well under a millisecond, while `/version` (what bollard's
/// negotiation asks) gathers every component's version, ~8 ms here — most of an unchanged
/// re-apply. `None` (then negotiate) on anything unexpected.
async fn connect_by_ping() -> Option<Docker> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // As bollard's local defaults: DOCKER_HOST if it names a unix socket, else the default one.
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
    let path = host.trim_start_matches("unix://").to_string();
    let limit = Duration::from_secs(5);
    let mut stream = tokio::time::timeout(limit, tokio::net::UnixStream::connect(&path))
        .await
        .ok()?
        .ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(limit, async {
        stream
            .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await?;
        stream.read_to_end(&mut answer).await
    })
    .await
    .ok()?
    .ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (head, _) = text.split_once("\r\n\r\n")?;
    if head.split(' ').nth(1) != Some("200") {
        return None;
    }
    let version = head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case("api-version")
            .then(|| value.trim().to_string())
    })?;
    let (major, minor) = version.split_once('.')?;
    let server = (major.parse::<usize>().ok()?, minor.parse::<usize>().ok()?);
    let ours = bollard::API_DEFAULT_VERSION;
    let (major_version, minor_version) = server.min((ours.major_version, ours.minor_version));
    Docker::connect_with_unix(
        &host,
        120,
        &bollard::ClientVersion {
            major_version,
            minor_version,
        },
    )
    .ok()
}

/// Make sure every service's image is present, pulling as its pull policy says. Runs before
/// anything is changed, so a missing image leaves the stack as it was. Returns the image IDs
/// by reference, for the `com.docker.compose.image` label.
pub async fn ensure_images(
    docker: &Docker,
    services: &[&Service],
    registry_credentials: &[crate::config::Credentials],
) -> Result<BTreeMap<String, String>, EngineError> {
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let unique: Vec<&Service> = services
        .iter()
        .copied()
        .filter(|svc| seen.insert((svc.image.clone(), format!("{:?}", svc.pull_policy))))
        .collect();
    // Inspect every reference at once, then pull what is needed at once.
    let inspected =
        futures_util::future::join_all(unique.iter().map(|svc| docker.inspect_image(&svc.image)))
            .await;
    let mut ids = BTreeMap::new();
    let mut pulls = Vec::new();
    for (svc, result) in unique.into_iter().zip(inspected) {
        let present = match result {
            Ok(image) => {
                if let Some(id) = image.id {
                    ids.insert(svc.image.clone(), id);
                }
                true
            }
            Err(e) if not_found(&e) => false,
            Err(e) => {
                return Err(EngineError::docker(
                    format!("inspecting image {}", svc.image),
                    e,
                ));
            }
        };
        let pull = match svc.pull_policy {
            PullPolicy::Always => true,
            PullPolicy::Missing => !present,
            PullPolicy::Never => {
                if !present {
                    errors.push(EngineError::service(
                        &svc.name,
                        format!(
                            "image {} is not present and pull_policy is never",
                            svc.image
                        ),
                    ));
                }
                false
            }
        };
        if pull {
            pulls.push((svc, present));
        }
    }
    // The same reference is pulled once, even when two pull policies ask for it.
    let mut pulling = std::collections::BTreeSet::new();
    pulls.retain(|(svc, _)| pulling.insert(svc.image.clone()));
    let pulled = futures_util::future::join_all(pulls.iter().map(|(svc, _)| async move {
        pull_image(
            docker,
            &svc.image,
            crate::config::credentials_for(registry_credentials, &svc.image),
        )
        .await?;
        docker.inspect_image(&svc.image).await.map_err(|e| {
            format!(
                "inspecting it after pulling it: {}",
                super::docker_message(&e)
            )
        })
    }))
    .await;
    for ((svc, present), result) in pulls.into_iter().zip(pulled) {
        match result {
            Ok(image) => {
                if let Some(id) = image.id {
                    ids.insert(svc.image.clone(), id);
                }
            }
            Err(e) => errors.push(EngineError::service(
                &svc.name,
                format!(
                    "image {} is {}and cannot be pulled: {e}",
                    svc.image,
                    if present { "" } else { "not present " }
                ),
            )),
        }
    }
    match errors.len() {
        0 => Ok(ids),
        1 => Err(errors.remove(0)),
        _ => Err(EngineError::Many(errors)),
    }
}

async fn pull_image(
    docker: &Docker,
    image: &str,
    credentials: Option<&crate::config::Credentials>,
) -> Result<(), String> {
    let (name, tag) = split_image(image);
    let opts = CreateImageOptionsBuilder::default()
        .from_image(name)
        .tag(tag)
        .build();
    let auth = credentials.map(|c| bollard::auth::DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.clone()),
        serveraddress: Some(c.host.clone()),
        ..Default::default()
    });
    let mut stream = docker.create_image(Some(opts), None, auth);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    return Err(err);
                }
            }
            Err(e) => return Err(super::docker_message(&e)),
        }
    }
    Ok(())
}

/// `name[:tag][@digest]` → (name, tag or digest).
pub fn split_image(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

pub async fn create_network(
    docker: &Docker,
    project: &Project,
    key: &str,
    net: &Network,
) -> Result<(), EngineError> {
    let mut net_labels: HashMap<String, String> = net.labels.clone().into_iter().collect();
    net_labels.insert(labels::PROJECT.into(), project.name.clone());
    net_labels.insert(labels::NETWORK.into(), key.to_string());
    net_labels.insert(
        labels::COMPOSE_VERSION.into(),
        labels::COMPOSE_VERSION_VALUE.into(),
    );
    net_labels.insert(labels::MANAGED.into(), "true".into());
    let ipam = net.ipam.as_ref().map(|i| bollard::models::Ipam {
        driver: i.driver.clone(),
        config: Some(
            i.config
                .iter()
                .map(|c| bollard::models::IpamConfig {
                    subnet: c.subnet.clone(),
                    ip_range: c.ip_range.clone(),
                    gateway: c.gateway.clone(),
                    auxiliary_addresses: (!c.aux_addresses.is_empty())
                        .then(|| c.aux_addresses.clone().into_iter().collect()),
                })
                .collect(),
        ),
        options: (!i.options.is_empty()).then(|| i.options.clone().into_iter().collect()),
    });
    let req = NetworkCreateRequest {
        name: net.name.clone(),
        driver: net.driver.clone(),
        internal: Some(net.internal),
        attachable: Some(net.attachable),
        enable_ipv6: net.enable_ipv6.then_some(true),
        ipam,
        options: (!net.driver_opts.is_empty())
            .then(|| net.driver_opts.clone().into_iter().collect()),
        labels: Some(net_labels),
        ..Default::default()
    };
    docker
        .create_network(req)
        .await
        .map_err(|e| EngineError::docker(format!("creating network {}", net.name), e))?;
    Ok(())
}

pub async fn create_volume(
    docker: &Docker,
    project: &Project,
    key: &str,
    vol: &Volume,
) -> Result<(), EngineError> {
    let mut vol_labels: HashMap<String, String> = vol.labels.clone().into_iter().collect();
    vol_labels.insert(labels::PROJECT.into(), project.name.clone());
    vol_labels.insert(labels::VOLUME.into(), key.to_string());
    vol_labels.insert(
        labels::COMPOSE_VERSION.into(),
        labels::COMPOSE_VERSION_VALUE.into(),
    );
    vol_labels.insert(labels::MANAGED.into(), "true".into());
    let req = VolumeCreateRequest {
        name: Some(vol.name.clone()),
        driver: vol.driver.clone(),
        driver_opts: (!vol.driver_opts.is_empty())
            .then(|| vol.driver_opts.clone().into_iter().collect()),
        labels: Some(vol_labels),
        ..Default::default()
    };
    docker
        .create_volume(req)
        .await
        .map_err(|e| EngineError::docker(format!("creating volume {}", vol.name), e))?;
    Ok(())
}

pub async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<ContainerInspectResponse, bollard::errors::Error> {
    docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
}

pub async fn start(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    docker.start_container(id, None).await
}

/// Stop (SIGTERM, then SIGKILL after `grace`) and remove, ignoring "already gone".
pub async fn stop_and_remove(
    docker: &Docker,
    id: &str,
    grace: Duration,
) -> Result<(), bollard::errors::Error> {
    stop_and_remove_within(docker, id, Some(grace)).await
}

/// Stop (the container's stop signal, then SIGKILL after `timeout`, or after the container's
/// own stop timeout when `None`, as `docker stop` without `-t`) and remove, ignoring "already
/// gone".
pub async fn stop_and_remove_within(
    docker: &Docker,
    id: &str,
    timeout: Option<Duration>,
) -> Result<(), bollard::errors::Error> {
    let mut stop = StopContainerOptionsBuilder::default();
    if let Some(timeout) = timeout {
        stop = stop.t(timeout.as_secs().min(i32::MAX as u64) as i32);
    }
    let stop = stop.build();
    match docker.stop_container(id, Some(stop)).await {
        Ok(()) => {}
        Err(e) if not_found(&e) => return Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => {}
        Err(e) => return Err(e),
    }
    remove(docker, id).await
}

pub async fn remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(false)
        .build();
    match docker.remove_container(id, Some(opts)).await {
        Err(e) if !not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

pub async fn rename(docker: &Docker, id: &str, name: &str) -> Result<(), bollard::errors::Error> {
    docker
        .rename_container(
            id,
            RenameContainerOptionsBuilder::default().name(name).build(),
        )
        .await
}

pub async fn connect_network(
    docker: &Docker,
    network: &str,
    container: &str,
    endpoint: bollard::models::EndpointSettings,
) -> Result<(), bollard::errors::Error> {
    docker
        .connect_network(
            network,
            NetworkConnectRequest {
                container: container.to_string(),
                endpoint_config: Some(endpoint),
            },
        )
        .await
}

/// The last `n` lines the container wrote, for error messages.
pub async fn last_log_lines(docker: &Docker, id: &str, n: usize) -> Vec<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let mut stream = docker.logs(id, Some(opts));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        if text.len() > 64 * 1024 {
            break;
        }
    }
    let lines: Vec<String> = text.lines().map(|l| l.to_string()).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_name_and_tag() {
        assert_eq!(split_image("nginx"), ("nginx", "latest"));
        assert_eq!(split_image("nginx:1.25"), ("nginx", "1.25"));
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/app:v2"),
            ("localhost:5000/app", "v2")
        );
        assert_eq!(split_image("app@sha256:abc"), ("app", "sha256:abc"));
    }
}
