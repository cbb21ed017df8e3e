//! Every supported compose key reaches the Engine API: one stack sets them all, and the created
//! container, network and volume are inspected.

use std::collections::HashMap;

use noco_integration_tests::docker::{require_docker, with_docker};
use noco_integration_tests::stack::{Stack, inspect};

const STACK: &str = r#"
services:
  app:
    image: ${IMAGE}
    pull_policy: never
    entrypoint: ["/noco-testapp"]
    environment:
      PORT: "8080"
      VERSION: keys-1
      EMPTY: ""
    env_file: app.env
    user: "0:0"
    working_dir: /work
    hostname: apphost
    labels:
      com.example.team: web
    expose: ["9000"]
    ports:
      - "8080"
      - target: 8081
        protocol: udp
        host_ip: 127.0.0.1
    volumes:
      - data:/data
      - ./conf:/conf:ro
      - type: tmpfs
        target: /scratch
        tmpfs:
          size: 1048576
    networks:
      front:
        aliases: [app-alias]
      back:
        ipv4_address: 172.29.57.10
    healthcheck:
      test: ["CMD", "/noco-testapp", "health"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 1s
    restart: unless-stopped
    stop_grace_period: 5s
    stop_signal: SIGINT
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    security_opt: ["no-new-privileges:true"]
    init: true
    devices: ["/dev/null:/dev/mynull:rw"]
    extra_hosts: ["db.local:10.1.2.3"]
    shm_size: 64m
    tmpfs: ["/run:size=1m"]
    ulimits:
      nproc: 512
      nofile:
        soft: 1024
        hard: 2048
    sysctls:
      net.core.somaxconn: "1024"
    logging:
      driver: json-file
      options:
        max-size: 1m
    tty: true
    stdin_open: true
    read_only: true
    dns: [127.0.0.53]
    ipc: shareable
    platform: linux/amd64
    cpu_shares: 512
    cpus: 0.5
    mem_limit: 256m
    memswap_limit: 512m
    pids_limit: 100
    group_add: ["100"]
    deploy:
      resources:
        reservations:
          memory: 64m
networks:
  front: {}
  back:
    labels:
      com.example.net: back
    ipam:
      config:
        - subnet: 172.29.57.0/24
volumes:
  data:
    labels:
      com.example.vol: data
"#;

#[test]
fn every_supported_key_is_set_on_the_created_container() {
    if !require_docker() {
        return;
    }
    let stack = Stack::new("keys", STACK);
    stack.write(
        "app.env",
        "FROM_FILE=yes\nVERSION=overridden-by-environment\n",
    );
    stack.write("conf/app.conf", "x=1\n");
    stack.up();
    let c = inspect(&stack.container("app", 1));
    let config = c.config.clone().unwrap();
    let host = c.host_config.clone().unwrap();
    let p = &stack.project;

    let env = config.env.clone().unwrap();
    for want in ["PORT=8080", "VERSION=keys-1", "EMPTY=", "FROM_FILE=yes"] {
        assert!(env.iter().any(|e| e == want), "env lacks {want}: {env:?}");
    }
    assert_eq!(config.entrypoint, Some(vec!["/noco-testapp".to_string()]));
    assert_eq!(config.user.as_deref(), Some("0:0"));
    assert_eq!(config.working_dir.as_deref(), Some("/work"));
    assert_eq!(config.hostname.as_deref(), Some("apphost"));
    assert_eq!(config.tty, Some(true));
    assert_eq!(config.open_stdin, Some(true));
    assert_eq!(config.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(config.stop_timeout, Some(5));
    let labels = config.labels.clone().unwrap();
    assert_eq!(
        labels.get("com.example.team").map(String::as_str),
        Some("web")
    );
    assert_eq!(labels.get("com.docker.compose.project"), Some(p));
    assert_eq!(
        labels.get("com.docker.compose.service").map(String::as_str),
        Some("app")
    );
    assert_eq!(
        labels
            .get("com.docker.compose.container-number")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        labels.get("com.docker.compose.oneoff").map(String::as_str),
        Some("False")
    );
    assert!(
        labels
            .get("io.noco.config-hash")
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    let exposed = config.exposed_ports.clone().unwrap();
    for port in ["9000/tcp", "8080/tcp", "8081/udp"] {
        assert!(
            exposed.iter().any(|e| e == port),
            "exposed lacks {port}: {exposed:?}"
        );
    }
    let health = config.healthcheck.clone().unwrap();
    assert_eq!(
        health.test,
        Some(vec!["CMD".into(), "/noco-testapp".into(), "health".into()])
    );
    assert_eq!(health.interval, Some(1_000_000_000));
    assert_eq!(health.timeout, Some(2_000_000_000));
    assert_eq!(health.retries, Some(3));
    assert_eq!(health.start_period, Some(1_000_000_000));

    let bindings = host.port_bindings.clone().unwrap();
    assert!(bindings.contains_key("8080/tcp"), "{bindings:?}");
    let udp = bindings.get("8081/udp").cloned().flatten().unwrap();
    assert_eq!(udp[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        host.restart_policy
            .clone()
            .unwrap()
            .name
            .map(|n| n.to_string())
            .as_deref(),
        Some("unless-stopped")
    );
    assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_string()]));
    assert_eq!(host.cap_drop, Some(vec!["MKNOD".to_string()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges:true".to_string()])
    );
    assert_eq!(host.init, Some(true));
    let devices = host.devices.clone().unwrap();
    assert_eq!(devices[0].path_in_container.as_deref(), Some("/dev/mynull"));
    assert_eq!(devices[0].cgroup_permissions.as_deref(), Some("rw"));
    assert_eq!(
        host.extra_hosts,
        Some(vec!["db.local:10.1.2.3".to_string()])
    );
    assert_eq!(host.shm_size, Some(64 * 1024 * 1024));
    assert_eq!(
        host.tmpfs.clone().unwrap().get("/run").map(String::as_str),
        Some("size=1m")
    );
    let ulimits: HashMap<String, (i64, i64)> = host
        .ulimits
        .clone()
        .unwrap()
        .into_iter()
        .map(|u| (u.name.unwrap(), (u.soft.unwrap(), u.hard.unwrap())))
        .collect();
    assert_eq!(ulimits.get("nproc"), Some(&(512, 512)));
    assert_eq!(ulimits.get("nofile"), Some(&(1024, 2048)));
    assert_eq!(
        host.sysctls
            .clone()
            .unwrap()
            .get("net.core.somaxconn")
            .map(String::as_str),
        Some("1024")
    );
    let log = host.log_config.clone().unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    assert_eq!(
        log.config.unwrap().get("max-size").map(String::as_str),
        Some("1m")
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.dns, Some(vec!["127.0.0.53".to_string()]));
    assert_eq!(host.ipc_mode.as_deref(), Some("shareable"));
    assert_eq!(host.cpu_shares, Some(512));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(256 * 1024 * 1024));
    assert_eq!(host.memory_swap, Some(512 * 1024 * 1024));
    assert_eq!(host.pids_limit, Some(100));
    assert_eq!(host.memory_reservation, Some(64 * 1024 * 1024));
    assert_eq!(host.group_add, Some(vec!["100".to_string()]));

    let mounts = c.mounts.clone().unwrap();
    let find = |dest: &str| {
        mounts
            .iter()
            .find(|m| m.destination.as_deref() == Some(dest))
            .cloned()
            .unwrap_or_else(|| panic!("no mount at {dest}: {mounts:?}"))
    };
    let data = find("/data");
    assert_eq!(data.name.as_deref(), Some(format!("{p}_data").as_str()));
    let conf = find("/conf");
    assert_eq!(
        conf.source.as_deref(),
        Some(
            std::fs::canonicalize(stack.path())
                .unwrap()
                .join("conf")
                .to_str()
                .unwrap()
        )
    );
    assert_eq!(conf.rw, Some(false));
    let scratch = host
        .mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.target.as_deref() == Some("/scratch"))
        .expect("tmpfs mount");
    assert_eq!(
        scratch.tmpfs_options.and_then(|t| t.size_bytes),
        Some(1_048_576)
    );

    let nets = c.network_settings.clone().unwrap().networks.unwrap();
    let front = nets
        .get(&format!("{p}_front"))
        .expect("on the front network");
    assert!(
        front
            .aliases
            .clone()
            .unwrap_or_default()
            .iter()
            .any(|a| a == "app-alias"),
        "{front:?}"
    );
    assert!(
        front
            .aliases
            .clone()
            .unwrap_or_default()
            .iter()
            .any(|a| a == "app"),
        "{front:?}"
    );
    let back = nets.get(&format!("{p}_back")).expect("on the back network");
    assert_eq!(back.ip_address.as_deref(), Some("172.29.57.10"));

    with_docker(|docker| {
        let p = p.clone();
        async move {
            let net = docker.inspect_network(&format!("{p}_back"), None).await?;
            let labels = net.labels.unwrap_or_default();
            assert_eq!(
                labels.get("com.example.net").map(String::as_str),
                Some("back")
            );
            assert_eq!(labels.get("com.docker.compose.project"), Some(&p));
            let subnet = net
                .ipam
                .and_then(|i| i.config)
                .and_then(|c| c.first().and_then(|c| c.subnet.clone()));
            assert_eq!(subnet.as_deref(), Some("172.29.57.0/24"));
            let vol = docker.inspect_volume(&format!("{p}_data")).await?;
            assert_eq!(
                vol.labels.get("com.example.vol").map(String::as_str),
                Some("data")
            );
            Ok(())
        }
    })
    .unwrap();
    let ps = stack.ps();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0]["health"], "healthy");
}

#[test]
fn process_and_network_namespace_keys_are_set() {
    // `privileged: true` maps to HostConfig.Privileged in spec.rs, but this sandboxed engine
    // refuses to start privileged containers ("unable to apply caps"), so it is not run here.
    if !require_docker() {
        return;
    }
    let stack = Stack::new(
        "keyns",
        r#"
services:
  main:
    image: ${IMAGE}
    container_name: ${NAME}
    pid: host
    environment: { VERSION: "${V:-1}" }
  side:
    image: ${IMAGE}
    network_mode: service:main
    command: ["probe", "http://127.0.0.1:8080/version", "600000", "500"]
  linked:
    image: ${IMAGE}
    links: ["main:mainalias"]
"#,
    );
    let name = format!("{}-fixed", stack.project);
    let var = format!("NAME={name}");
    stack.ok("up", &["--var", &var]);
    let main = inspect(&name);
    let host = main.host_config.clone().unwrap();
    assert_eq!(host.pid_mode.as_deref(), Some("host"));
    let side = inspect(&stack.container("side", 1));
    assert_eq!(
        side.host_config.clone().unwrap().network_mode,
        Some(format!("container:{}", main.id.clone().unwrap()))
    );
    assert_eq!(
        side.config.clone().unwrap().cmd,
        Some(vec![
            "probe".to_string(),
            "http://127.0.0.1:8080/version".to_string(),
            "600000".to_string(),
            "500".to_string()
        ])
    );
    // Sharing main's network namespace, the sidecar reaches main on 127.0.0.1.
    let (code, out) = noco_integration_tests::docker::exec(
        &stack.container("side", 1),
        &["/noco-testapp", "health", "8080"],
    )
    .unwrap();
    assert_eq!(code, 0, "{out}");
    let linked = inspect(&stack.container("linked", 1));
    let networks = linked
        .network_settings
        .unwrap()
        .networks
        .unwrap_or_default();
    let links: Vec<String> = networks
        .values()
        .flat_map(|n| n.links.clone().unwrap_or_default())
        .collect();
    assert!(
        links.iter().any(|l| l == &format!("{name}:mainalias")),
        "{links:?}"
    );
    // The fixed container_name is kept across an unchanged re-apply.
    assert!(stack.ok("up", &["--var", &var]).contains("up to date"));
    // Replacing main replaces the sidecar too: its network namespace died with the old main.
    let out = stack.ok("up", &["--var", &var, "--var", "V=2"]);
    assert!(
        out.contains("shares the network namespace of main"),
        "{out}"
    );
    let main = inspect(&name);
    let side = inspect(&stack.container("side", 1));
    assert_eq!(
        side.host_config.unwrap().network_mode,
        Some(format!("container:{}", main.id.unwrap()))
    );
    assert_eq!(side.state.unwrap().running, Some(true));
}
