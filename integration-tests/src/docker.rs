//! Helpers for tests that need a Docker engine.
//!
//! The test machines run a Docker engine but reach no image registry, so nothing is pulled:
//! [`testapp_image`] builds the test workload (`noco-testapp`, see `testapp/`) statically linked
//! and puts it alone in a `FROM scratch` image, through the Engine API.
//!
//! Every helper is synchronous (tests are) and runs bollard on a private current-thread tokio
//! runtime with a fresh client; do not call them from inside an async runtime. A test starts
//! with `if !require_docker() { return; }`, uses a unique compose project name and calls
//! [`cleanup_project`] with it at its start and end.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// The repository of the test workload's image.
pub const TESTAPP_REPO: &str = "noco-testapp";

/// The label Docker Compose (and noco) put on a project's containers, networks and volumes.
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";

/// How long the engine has to answer before it counts as absent.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `f` with a fresh client (API version negotiated with the engine) on a private
/// current-thread runtime. Not to be called from inside a tokio runtime.
pub fn with_docker<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(Docker) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    runtime.block_on(async {
        let docker = connect().await?;
        f(docker).await
    })
}

async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_local_defaults().context("connecting to Docker")?;
    tokio::time::timeout(PING_TIMEOUT, docker.negotiate_version())
        .await
        .with_context(|| format!("the Docker engine did not answer within {PING_TIMEOUT:?}"))?
        .context("negotiating the Docker API version")
}

/// Whether the engine answered a version negotiation and a ping within a few seconds (checked
/// once per test process), or why not.
fn docker_status() -> &'static Result<(), String> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS.get_or_init(|| {
        with_docker(|docker| async move {
            tokio::time::timeout(PING_TIMEOUT, docker.ping())
                .await
                .context("no answer to a ping")?
                .context("ping")?;
            Ok(())
        })
        .map_err(|e| format!("{e:#}"))
    })
}

/// Whether a Docker engine answers (a ping within a few seconds).
pub fn docker_available() -> bool {
    docker_status().is_ok()
}

/// `true` if Docker is available. Otherwise: panics if `NOCO_REQUIRE_DOCKER=1` (CI), else
/// prints "skipping: no Docker engine" and returns `false`. Tests start with
/// `if !require_docker() { return; }`.
pub fn require_docker() -> bool {
    match docker_status() {
        Ok(()) => true,
        Err(e) if crate::docker_required() => {
            panic!("NOCO_REQUIRE_DOCKER=1 but no Docker engine answers: {e}")
        }
        Err(e) => {
            eprintln!("skipping: no Docker engine ({e})");
            false
        }
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

// ---------------------------------------------------------------------------------------------
// The test workload's image

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// The statically linked `noco-testapp` binary, built once per test process with
/// `cargo build -p noco-testapp --release` and `RUSTFLAGS=-C target-feature=+crt-static`, in
/// its own target directory (`target/testapp`) so the flags do not invalidate the main build.
pub fn testapp_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target").join("testapp");
        let started = Instant::now();
        let out = crate::cargo_command()
            .args(["build", "--quiet", "--release", "-p", "noco-testapp"])
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            // These would take precedence over RUSTFLAGS.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .expect("running cargo build -p noco-testapp");
        assert!(
            out.status.success(),
            "cargo build -p noco-testapp (static) failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("noco-testapp binary ready in {:.1?}", started.elapsed());
        target_dir.join("release").join("noco-testapp")
    })
}

/// The test workload's image, `noco-testapp:<tag>` (also tagged `noco-testapp:latest`), built
/// once per test process through the Engine API, or reused if an image has the tag already.
/// `<tag>` is the first 16 hex digits of the sha256 of the build context (the binary and the
/// recipe; the binary's own sha256 is the label `noco.testapp.sha256`). The image: `FROM
/// scratch`, `/noco-testapp` as the entrypoint, `EXPOSE 8080`, an empty world-writable
/// (1777) `/data`, no shell; no `HEALTHCHECK` either (tests declare one, e.g.
/// `["CMD", "/noco-testapp", "health"]`). Panics if the image cannot be built.
pub fn testapp_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            build_testapp_image()
                .unwrap_or_else(|e| panic!("building the noco-testapp image: {e:#}"))
        })
        .clone()
}

fn build_testapp_image() -> anyhow::Result<String> {
    let path = testapp_binary();
    let binary = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let context = testapp_context(&binary);
    // The tag covers the whole (deterministic) build context: the binary and the recipe.
    let image = format!("{TESTAPP_REPO}:{}", &sha256_hex(&context)[..16]);
    let started = Instant::now();
    let built = with_docker(|docker| {
        let image = image.clone();
        async move {
            let built = match docker.inspect_image(&image).await {
                Ok(_) => false,
                Err(e) if is_not_found(&e) => {
                    build_image(&docker, &image, context).await?;
                    true
                }
                Err(e) => return Err(e).context(format!("inspecting {image}")),
            };
            let latest = TagImageOptionsBuilder::default()
                .repo(TESTAPP_REPO)
                .tag("latest")
                .build();
            docker
                .tag_image(&image, Some(latest))
                .await
                .with_context(|| format!("tagging {image} as {TESTAPP_REPO}:latest"))?;
            Ok(built)
        }
    })?;
    eprintln!(
        "image {image} {} in {:.1?}",
        if built { "built" } else { "reused" },
        started.elapsed()
    );
    Ok(image)
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The build context, an uncompressed tar: the Dockerfile and `rootfs/`, copied to `/` so
/// that `/data` keeps its mode (world-writable, for containers running as another user).
fn testapp_context(binary: &[u8]) -> Vec<u8> {
    let dockerfile = format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         EXPOSE 8080\n\
         LABEL org.opencontainers.image.title=noco-testapp noco.testapp.sha256={}\n\
         ENTRYPOINT [\"/noco-testapp\"]\n",
        sha256_hex(binary)
    );
    let mut context = Vec::with_capacity(binary.len() + 8192);
    tar_entry(
        &mut context,
        "Dockerfile",
        TarKind::File,
        0o644,
        dockerfile.as_bytes(),
    );
    tar_entry(&mut context, "rootfs/", TarKind::Dir, 0o755, &[]);
    tar_entry(&mut context, "rootfs/data/", TarKind::Dir, 0o1777, &[]);
    tar_entry(
        &mut context,
        "rootfs/noco-testapp",
        TarKind::File,
        0o755,
        binary,
    );
    context.extend_from_slice(&[0; 1024]);
    context
}

/// Build `image` from a tar build context (with a `Dockerfile`) through the Engine API.
pub(crate) async fn build_image(
    docker: &Docker,
    image: &str,
    context: Vec<u8>,
) -> anyhow::Result<()> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(image)
        .rm(true)
        .forcerm(true)
        .build();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut log = String::new();
    while let Some(item) = progress.next().await {
        let info = item.with_context(|| format!("docker build of {image}:\n{log}"))?;
        if let Some(line) = info.stream {
            log.push_str(&line);
        }
        if let Some(error) = info.error_detail {
            bail!(
                "docker build of {image} failed: {}\n{log}",
                error.message.unwrap_or_default()
            );
        }
    }
    docker
        .inspect_image(image)
        .await
        .with_context(|| format!("{image} is missing after its build:\n{log}"))?;
    Ok(())
}

#[derive(Clone, Copy)]
enum TarKind {
    File,
    Dir,
}

/// Append one ustar entry (header, data, padding) for a short relative `path`.
fn tar_entry(out: &mut Vec<u8>, path: &str, kind: TarKind, mode: u32, data: &[u8]) {
    fn put(header: &mut [u8; 512], at: usize, field: &[u8]) {
        header[at..at + field.len()].copy_from_slice(field);
    }
    assert!(path.len() < 100, "tar path too long: {path}");
    let mut header = [0u8; 512];
    put(&mut header, 0, path.as_bytes());
    put(&mut header, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut header, 108, b"0000000\0"); // uid
    put(&mut header, 116, b"0000000\0"); // gid
    put(
        &mut header,
        124,
        format!("{:011o}\0", data.len()).as_bytes(),
    );
    // A fixed mtime (2024-01-01) keeps the context deterministic.
    put(
        &mut header,
        136,
        format!("{:011o}\0", 1_704_067_200u64).as_bytes(),
    );
    put(&mut header, 148, b"        "); // checksum: spaces while summing
    header[156] = match kind {
        TarKind::File => b'0',
        TarKind::Dir => b'5',
    };
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    put(&mut header, 265, b"root");
    put(&mut header, 297, b"root");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

// ---------------------------------------------------------------------------------------------
// Cleaning up

/// Remove the containers (forcibly, with their anonymous volumes), networks and volumes whose
/// `com.docker.compose.project` label starts with `prefix`. Panics on failure, except while
/// the thread is already panicking (a `Drop` guard), where it only reports the failure.
pub fn cleanup_project(prefix: &str) {
    assert!(
        !prefix.is_empty(),
        "cleanup_project needs a non-empty prefix: it would remove every compose project"
    );
    if let Err(e) = with_docker(|docker| async move { remove_project(&docker, prefix).await }) {
        if std::thread::panicking() {
            eprintln!("cleaning up compose projects {prefix}*: {e:#}");
        } else {
            panic!("cleaning up compose projects {prefix}*: {e:#}");
        }
    }
}

async fn remove_project(docker: &Docker, prefix: &str) -> anyhow::Result<()> {
    let filters = HashMap::from([("label", vec![COMPOSE_PROJECT_LABEL])]);
    let ours = |labels: Option<&HashMap<String, String>>| {
        labels
            .and_then(|l| l.get(COMPOSE_PROJECT_LABEL))
            .is_some_and(|project| project.starts_with(prefix))
    };
    let mut failures = Vec::new();

    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing containers")?;
    let force = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    for c in containers.iter().filter(|c| ours(c.labels.as_ref())) {
        let Some(id) = c.id.as_deref() else { continue };
        match docker.remove_container(id, Some(force.clone())).await {
            Err(e) if !is_not_found(&e) => failures.push(format!("container {id}: {e}")),
            _ => {}
        }
    }

    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing networks")?;
    for n in networks.iter().filter(|n| ours(n.labels.as_ref())) {
        let Some(id) = n.id.as_deref().or(n.name.as_deref()) else {
            continue;
        };
        match docker.remove_network(id).await {
            Err(e) if !is_not_found(&e) => failures.push(format!("network {id}: {e}")),
            _ => {}
        }
    }

    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing volumes")?;
    for v in volumes.volumes.iter().flatten() {
        if !ours(Some(&v.labels)) {
            continue;
        }
        let force = RemoveVolumeOptionsBuilder::default().force(true).build();
        match docker.remove_volume(&v.name, Some(force)).await {
            Err(e) if !is_not_found(&e) => failures.push(format!("volume {}: {e}", v.name)),
            _ => {}
        }
    }

    if !failures.is_empty() {
        bail!("could not remove: {}", failures.join("; "));
    }
    Ok(())
}

/// Remove a container (forcibly, with its anonymous volumes) if it exists; failures are
/// reported on stderr, never panicked on (for `Drop` guards).
pub fn remove_container(name: &str) {
    let result = with_docker(|docker| async move {
        let force = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(name, Some(force)).await {
            Err(e) if !is_not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    });
    if let Err(e) = result {
        eprintln!("removing container {name}: {e:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// Images a test makes

/// Tag `image` as `reference` (`repo:tag`).
pub fn tag_image(image: &str, reference: &str) -> anyhow::Result<()> {
    let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    with_docker(|docker| async move {
        let opts = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        docker
            .tag_image(image, Some(opts))
            .await
            .with_context(|| format!("tagging {image} as {reference}"))
    })
}

/// Build `reference` (`repo:tag`) as `FROM base` plus a label saying `variant`: an image with
/// the same contents as `base` but another ID. Offline: `base` is local.
pub fn variant_image(base: &str, reference: &str, variant: &str) -> anyhow::Result<()> {
    let dockerfile = format!("FROM {base}\nLABEL noco.test.variant={variant}\n");
    let mut context = Vec::new();
    tar_entry(
        &mut context,
        "Dockerfile",
        TarKind::File,
        0o644,
        dockerfile.as_bytes(),
    );
    context.extend_from_slice(&[0; 1024]);
    with_docker(|docker| async move { build_image(&docker, reference, context).await })
}

/// The ID (`sha256:…`) of a local image.
pub fn image_id(image: &str) -> anyhow::Result<String> {
    with_docker(|docker| async move {
        let inspected = docker
            .inspect_image(image)
            .await
            .with_context(|| format!("inspecting {image}"))?;
        inspected.id.context("an image without an ID")
    })
}

/// Remove an image reference (the image too, if nothing else names it); failures are reported
/// on stderr, never panicked on (for `Drop` guards).
pub fn remove_image(reference: &str) {
    let result = with_docker(|docker| async move {
        let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(true)
            .build();
        match docker.remove_image(reference, Some(opts), None).await {
            Err(e) if !is_not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    });
    if let Err(e) = result {
        eprintln!("removing image {reference}: {e:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to containers

/// Run `cmd` in a running container (like `docker exec`); its exit code and combined output.
pub fn exec(container: &str, cmd: &[&str]) -> anyhow::Result<(i64, String)> {
    with_docker(|docker| async move {
        let created = docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating exec {cmd:?} in {container}"))?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut out, ..
        } = docker.start_exec(&created.id, None).await?
        {
            while let Some(chunk) = out.next().await {
                output.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
            }
        }
        // The output ends when the process does; its exit code is recorded just after.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = docker.inspect_exec(&created.id).await?;
            if let (Some(false), Some(code)) = (info.running, info.exit_code) {
                return Ok((code, output));
            }
            if Instant::now() > deadline {
                bail!("exec {cmd:?} in {container} did not finish: {info:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// The host port published for a container's `port` (e.g. `"8080/tcp"`), if any.
pub fn host_port(container: &str, port: &str) -> anyhow::Result<Option<u16>> {
    with_docker(|docker| async move {
        let info = docker
            .inspect_container(container, None)
            .await
            .with_context(|| format!("inspecting {container}"))?;
        let bindings = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(port))
            .flatten()
            .unwrap_or_default();
        Ok(bindings
            .iter()
            .find_map(|b| b.host_port.as_deref()?.parse().ok()))
    })
}

/// A one-shot HTTP/1.1 request to `127.0.0.1:<port>` (5 s timeouts): the status and the body.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad response: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// `GET` over [`http`], `Some(body)` only on a 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    match http(port, "GET", path, &[]) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// A client inside a stack's network

/// What a probe saw: requests answered, requests failed, the versions that answered, and its
/// whole output (for failure messages).
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub ok: u64,
    pub failed: u64,
    pub versions: Vec<String>,
    pub output: String,
}

/// Start a probe container named `name` on `network`: it calls `url` every 20 ms for `ms`
/// milliseconds, resolving the name for every request (see testapp's `probe` mode). The caller
/// removes it (e.g. with [`remove_container`]).
pub fn start_probe(name: &str, network: &str, url: &str, ms: u64) {
    start_probe_until(name, network, url, ms, None);
}

/// [`start_probe`] that stops two seconds after it first sees `until` answer (`ms` is then an
/// upper bound).
pub fn start_probe_until(name: &str, network: &str, url: &str, ms: u64, until: Option<&str>) {
    let image = testapp_image();
    let (n, net, url) = (name.to_string(), network.to_string(), url.to_string());
    let until = until.map(str::to_string);
    with_docker(|docker| async move {
        let body = bollard::models::ContainerCreateBody {
            image: Some(image),
            cmd: Some(
                ["probe".to_string(), url, ms.to_string(), "20".to_string()]
                    .into_iter()
                    .chain(until)
                    .collect(),
            ),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some(net),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(
                    bollard::query_parameters::CreateContainerOptionsBuilder::default()
                        .name(&n)
                        .build(),
                ),
                body,
            )
            .await?;
        docker.start_container(&n, None).await?;
        Ok(())
    })
    .unwrap_or_else(|e| panic!("starting probe {name}: {e:#}"));
}

/// Wait for a probe to finish and read its summary line `probe ok=N failed=M versions=a,b`.
pub fn probe_result(name: &str) -> ProbeResult {
    let n = name.to_string();
    let output = with_docker(|docker| async move {
        let mut wait = docker.wait_container(&n, None);
        while let Some(r) = wait.next().await {
            r?;
        }
        let opts = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(&n, Some(opts));
        let mut text = String::new();
        while let Some(chunk) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
        }
        Ok(text)
    })
    .unwrap_or_else(|e| panic!("reading probe {name}: {e:#}"));
    let summary = output
        .lines()
        .rev()
        .find(|l| l.starts_with("probe "))
        .unwrap_or_else(|| panic!("no summary in probe {name}'s output:\n{output}"));
    let field = |key: &str| {
        summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_string()
    };
    ProbeResult {
        ok: field("ok").parse().unwrap_or(0),
        failed: field("failed").parse().unwrap_or(u64::MAX),
        versions: field("versions")
            .split(',')
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect(),
        output,
    }
}
