//! Every supported service key, in each form compose accepts, lands in the expected model
//! field; every unsupported key is refused naming the service and the key.
//!
//! Each case is a fragment of service `s`; the expected model is the model of a bare
//! `image: img` service changed by the case's closure.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{errors, load_with, show};
use noco_compose::model::*;

/// A file with service `s` (`image: img` unless the fragment sets one, then the fragment),
/// a second service `other` (with a healthcheck, so that `s` may wait for it to be healthy), and
/// top-level networks `front`/`back` and volume `data` for the fragment to refer to.
fn file(fragment: &str) -> String {
    let body: String = fragment.lines().map(|l| format!("    {l}\n")).collect();
    let image = if fragment.lines().any(|l| l.starts_with("image:")) {
        ""
    } else {
        "    image: img\n"
    };
    format!(
        "services:\n  s:\n{image}{body}  other:\n    image: other\n    healthcheck: {{}}\n\
         networks:\n  front: {{}}\n  back: {{}}\nvolumes:\n  data: {{}}\n"
    )
}

fn service_s(fragment: &str) -> Service {
    let yaml = file(fragment);
    match load_with(&yaml, &[("TAG", "1.2"), ("FROM_VARS", "v")]) {
        Ok(loaded) => match loaded.project.services.get("s") {
            Some(s) => s.clone(),
            None => panic!("no service s"),
        },
        Err(errors) => panic!(
            "fragment should load:\n{fragment}\nerrors:\n{}",
            show(&errors)
        ),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bind(source: &str, target: &str) -> Mount {
    Mount {
        kind: MountKind::Bind {
            source: source.into(),
            selinux: None,
            propagation: None,
            create_host_path: true,
        },
        target: target.into(),
        read_only: false,
    }
}

fn port(published: Option<u16>, target: u16) -> Port {
    Port {
        target,
        published,
        host_ip: None,
        protocol: Protocol::Tcp,
    }
}

fn dep(condition: DependencyCondition) -> Dependency {
    Dependency {
        condition,
        required: true,
        restart: false,
    }
}

fn only_network(name: &str, net: ServiceNetwork) -> BTreeMap<String, ServiceNetwork> {
    BTreeMap::from([(name.to_owned(), net)])
}

type Edit = fn(&mut Service);

#[test]
fn each_supported_key_parses_into_its_model_field() {
    let cases: Vec<(&str, Edit)> = vec![
        ("image: app:${TAG}", |s| s.image = "app:1.2".into()),
        ("container_name: web-1", |s| {
            s.container_name = Some("web-1".into())
        }),
        ("restart: no", |s| s.restart = RestartPolicy::No),
        ("restart: always", |s| s.restart = RestartPolicy::Always),
        ("restart: on-failure", |s| {
            s.restart = RestartPolicy::OnFailure(None)
        }),
        ("restart: on-failure:3", |s| {
            s.restart = RestartPolicy::OnFailure(Some(3))
        }),
        ("restart: unless-stopped", |s| {
            s.restart = RestartPolicy::UnlessStopped
        }),
        ("environment:\n  - A=1\n  - B=x=y\n  - C=", |s| {
            s.environment = map(&[("A", "1"), ("B", "x=y"), ("C", "")])
        }),
        (
            "environment:\n  A: 1\n  B: true\n  C: 1.5\n  D: no\n  E: ''",
            |s| {
                s.environment = map(&[
                    ("A", "1"),
                    ("B", "true"),
                    ("C", "1.5"),
                    ("D", "no"),
                    ("E", ""),
                ])
            },
        ),
        ("environment:\n  - FROM_VARS\n  - MISSING", |s| {
            s.environment = map(&[("FROM_VARS", "v")])
        }),
        ("environment:\n  FROM_VARS:\n  MISSING:", |s| {
            s.environment = map(&[("FROM_VARS", "v")])
        }),
        ("command: redis-server --appendonly yes", |s| {
            s.command = Some(strings(&["redis-server", "--appendonly", "yes"]))
        }),
        ("command: [\"sh\", \"-c\", \"echo $$HOME\"]", |s| {
            s.command = Some(strings(&["sh", "-c", "echo $HOME"]))
        }),
        ("command: []", |s| s.command = Some(vec![])),
        ("entrypoint: /bin/sh -c", |s| {
            s.entrypoint = Some(strings(&["/bin/sh", "-c"]))
        }),
        ("entrypoint:\n  - tini\n  - --", |s| {
            s.entrypoint = Some(strings(&["tini", "--"]))
        }),
        ("user: 1000", |s| s.user = Some("1000".into())),
        ("user: \"1000:1000\"", |s| s.user = Some("1000:1000".into())),
        ("working_dir: /app", |s| s.working_dir = Some("/app".into())),
        ("hostname: web", |s| s.hostname = Some("web".into())),
        ("labels:\n  - a=1\n  - b", |s| {
            s.labels = map(&[("a", "1"), ("b", "")])
        }),
        ("labels:\n  com.example.x: y\n  n: 2", |s| {
            s.labels = map(&[("com.example.x", "y"), ("n", "2")])
        }),
        (
            "expose:\n  - 3000\n  - \"4000/udp\"\n  - 5000-5001/tcp",
            |s| s.expose = strings(&["3000", "4000/udp", "5000", "5001"]),
        ),
        ("network_mode: host", |s| {
            s.network_mode = Some(NetworkMode::Host);
            s.networks.clear()
        }),
        ("network_mode: none", |s| {
            s.network_mode = Some(NetworkMode::None);
            s.networks.clear()
        }),
        ("network_mode: bridge", |s| {
            s.network_mode = Some(NetworkMode::Bridge);
            s.networks.clear()
        }),
        ("network_mode: service:other", |s| {
            s.network_mode = Some(NetworkMode::Service("other".into()));
            s.networks.clear()
        }),
        ("network_mode: container:abc", |s| {
            s.network_mode = Some(NetworkMode::Container("abc".into()));
            s.networks.clear()
        }),
        ("stop_grace_period: 1m30s", |s| {
            s.stop_grace_period = Some(Duration::from_secs(90))
        }),
        ("stop_signal: SIGINT", |s| {
            s.stop_signal = Some("SIGINT".into())
        }),
        ("privileged: true", |s| s.privileged = true),
        ("cap_add: [NET_ADMIN]", |s| {
            s.cap_add = strings(&["NET_ADMIN"])
        }),
        ("cap_drop: [ALL]", |s| s.cap_drop = strings(&["ALL"])),
        ("security_opt:\n  - no-new-privileges:true", |s| {
            s.security_opt = strings(&["no-new-privileges:true"])
        }),
        ("init: true", |s| s.init = Some(true)),
        ("init: false", |s| s.init = Some(false)),
        ("devices:\n  - /dev/fuse\n  - /dev/sda:/dev/xvda:rwm", |s| {
            s.devices = strings(&["/dev/fuse:/dev/fuse", "/dev/sda:/dev/xvda:rwm"])
        }),
        ("extra_hosts:\n  - db:10.0.0.5\n  - v6=::1", |s| {
            s.extra_hosts = strings(&["db:10.0.0.5", "v6:::1"])
        }),
        ("extra_hosts:\n  db: 10.0.0.5", |s| {
            s.extra_hosts = strings(&["db:10.0.0.5"])
        }),
        ("shm_size: 512m", |s| s.shm_size = Some(512 * 1024 * 1024)),
        ("shm_size: 1024", |s| s.shm_size = Some(1024)),
        ("tmpfs: /run", |s| s.tmpfs = strings(&["/run"])),
        ("tmpfs:\n  - /run\n  - /tmp:size=64m", |s| {
            s.tmpfs = strings(&["/run", "/tmp:size=64m"])
        }),
        (
            "ulimits:\n  nproc: 65535\n  nofile:\n    soft: 1024\n    hard: 4096",
            |s| {
                s.ulimits = BTreeMap::from([
                    (
                        "nofile".to_owned(),
                        Ulimit {
                            soft: 1024,
                            hard: 4096,
                        },
                    ),
                    (
                        "nproc".to_owned(),
                        Ulimit {
                            soft: 65535,
                            hard: 65535,
                        },
                    ),
                ])
            },
        ),
        ("sysctls:\n  - net.core.somaxconn=1024", |s| {
            s.sysctls = map(&[("net.core.somaxconn", "1024")])
        }),
        ("sysctls:\n  net.core.somaxconn: 1024", |s| {
            s.sysctls = map(&[("net.core.somaxconn", "1024")])
        }),
        (
            "logging:\n  driver: json-file\n  options:\n    max-size: 10m\n    max-file: 3",
            |s| {
                s.logging = Some(Logging {
                    driver: Some("json-file".into()),
                    options: map(&[("max-file", "3"), ("max-size", "10m")]),
                })
            },
        ),
        ("tty: true", |s| s.tty = true),
        ("stdin_open: true", |s| s.stdin_open = true),
        ("read_only: true", |s| s.read_only = true),
        ("dns: 8.8.8.8", |s| s.dns = strings(&["8.8.8.8"])),
        ("dns: [1.1.1.1, 8.8.8.8]", |s| {
            s.dns = strings(&["1.1.1.1", "8.8.8.8"])
        }),
        ("pid: host", |s| s.pid = Some("host".into())),
        ("ipc: shareable", |s| s.ipc = Some("shareable".into())),
        ("platform: linux/amd64", |s| {
            s.platform = Some("linux/amd64".into())
        }),
        ("pull_policy: always", |s| {
            s.pull_policy = PullPolicy::Always
        }),
        ("pull_policy: never", |s| s.pull_policy = PullPolicy::Never),
        ("pull_policy: if_not_present", |s| {
            s.pull_policy = PullPolicy::Missing
        }),
        ("ports:\n  - 80\n  - \"8080:8080\"\n  - 9000", |s| {
            s.ports = vec![port(None, 80), port(Some(8080), 8080), port(None, 9000)]
        }),
        ("ports:\n  - \"127.0.0.1:5353:53/udp\"", |s| {
            s.ports = vec![Port {
                target: 53,
                published: Some(5353),
                host_ip: Some("127.0.0.1".into()),
                protocol: Protocol::Udp,
            }]
        }),
        ("ports:\n  - \"8000-8001:9000-9001\"", |s| {
            s.ports = vec![port(Some(8000), 9000), port(Some(8001), 9001)]
        }),
        (
            "ports:\n  - target: 80\n    published: \"8080\"\n    host_ip: 10.0.0.1\n    protocol: udp\n    mode: host",
            |s| {
                s.ports = vec![Port {
                    target: 80,
                    published: Some(8080),
                    host_ip: Some("10.0.0.1".into()),
                    protocol: Protocol::Udp,
                }]
            },
        ),
        (
            "volumes:\n  - data:/data:ro\n  - ./conf:/etc/conf:z\n  - /srv:/srv\n  - /anon",
            |s| {
                // Ordered by container path.
                s.volumes = vec![
                    Mount {
                        kind: MountKind::Volume {
                            source: None,
                            nocopy: false,
                        },
                        target: "/anon".into(),
                        read_only: false,
                    },
                    Mount {
                        kind: MountKind::Volume {
                            source: Some("data".into()),
                            nocopy: false,
                        },
                        target: "/data".into(),
                        read_only: true,
                    },
                    Mount {
                        kind: MountKind::Bind {
                            source: "./conf".into(),
                            selinux: Some(SeLinux::Shared),
                            propagation: None,
                            create_host_path: true,
                        },
                        target: "/etc/conf".into(),
                        read_only: false,
                    },
                    bind("/srv", "/srv"),
                ]
            },
        ),
        (
            "volumes:\n  - type: bind\n    source: ../x\n    target: /x\n    read_only: true\n    bind:\n      propagation: rshared\n      create_host_path: false\n      selinux: Z\n  - type: volume\n    source: data\n    target: /d\n    volume:\n      nocopy: true\n  - type: tmpfs\n    target: /t\n    tmpfs:\n      size: 64m\n      mode: \"1777\"",
            |s| {
                s.volumes = vec![
                    Mount {
                        kind: MountKind::Volume {
                            source: Some("data".into()),
                            nocopy: true,
                        },
                        target: "/d".into(),
                        read_only: false,
                    },
                    Mount {
                        kind: MountKind::Tmpfs {
                            size: Some(64 * 1024 * 1024),
                            mode: Some(0o1777),
                        },
                        target: "/t".into(),
                        read_only: false,
                    },
                    Mount {
                        kind: MountKind::Bind {
                            source: "../x".into(),
                            selinux: Some(SeLinux::Private),
                            propagation: Some("rshared".into()),
                            create_host_path: false,
                        },
                        target: "/x".into(),
                        read_only: true,
                    },
                ]
            },
        ),
        ("depends_on: [other]", |s| {
            s.depends_on =
                BTreeMap::from([("other".to_owned(), dep(DependencyCondition::ServiceStarted))])
        }),
        (
            "depends_on:\n  other:\n    condition: service_healthy\n    required: false\n    restart: true",
            |s| {
                s.depends_on = BTreeMap::from([(
                    "other".to_owned(),
                    Dependency {
                        condition: DependencyCondition::ServiceHealthy,
                        required: false,
                        restart: true,
                    },
                )])
            },
        ),
        (
            "depends_on:\n  other:\n    condition: service_completed_successfully",
            |s| {
                s.depends_on = BTreeMap::from([(
                    "other".to_owned(),
                    dep(DependencyCondition::ServiceCompletedSuccessfully),
                )])
            },
        ),
        (
            "healthcheck:\n  test: [\"CMD\", \"curl\", \"-f\", \"http://localhost\"]\n  interval: 10s\n  timeout: 5s\n  retries: 3\n  start_period: 1m\n  start_interval: 500ms",
            |s| {
                s.healthcheck = Some(Healthcheck {
                    test: strings(&["CMD", "curl", "-f", "http://localhost"]),
                    interval: Some(Duration::from_secs(10)),
                    timeout: Some(Duration::from_secs(5)),
                    retries: Some(3),
                    start_period: Some(Duration::from_secs(60)),
                    start_interval: Some(Duration::from_millis(500)),
                })
            },
        ),
        ("healthcheck:\n  test: pg_isready -U postgres", |s| {
            s.healthcheck = Some(Healthcheck {
                test: strings(&["CMD-SHELL", "pg_isready -U postgres"]),
                interval: None,
                timeout: None,
                retries: None,
                start_period: None,
                start_interval: None,
            })
        }),
        ("healthcheck:\n  disable: true", |s| {
            s.healthcheck = Some(Healthcheck {
                test: strings(&["NONE"]),
                interval: None,
                timeout: None,
                retries: None,
                start_period: None,
                start_interval: None,
            })
        }),
        ("healthcheck:\n  test: [\"NONE\"]", |s| {
            s.healthcheck = Some(Healthcheck {
                test: strings(&["NONE"]),
                interval: None,
                timeout: None,
                retries: None,
                start_period: None,
                start_interval: None,
            })
        }),
        ("networks: [front]", |s| {
            s.networks = only_network("front", ServiceNetwork::default())
        }),
        (
            "networks:\n  back:\n    aliases: [api]\n    ipv4_address: 172.20.0.5\n    ipv6_address: 2001:db8::5",
            |s| {
                s.networks = only_network(
                    "back",
                    ServiceNetwork {
                        aliases: strings(&["api"]),
                        ipv4_address: Some("172.20.0.5".into()),
                        ipv6_address: Some("2001:db8::5".into()),
                    },
                )
            },
        ),
        ("networks:\n  front:\n  default:", |s| {
            s.networks = BTreeMap::from([
                ("default".to_owned(), ServiceNetwork::default()),
                ("front".to_owned(), ServiceNetwork::default()),
            ])
        }),
        ("deploy:\n  replicas: 3", |s| s.deploy.replicas = 3),
        (
            "deploy:\n  update_config:\n    parallelism: 2\n    delay: 10s\n    order: start-first",
            |s| {
                s.deploy.update_parallelism = 2;
                s.deploy.update_delay = Some(Duration::from_secs(10));
                s.deploy.update_order = UpdateOrder::StartFirst;
            },
        ),
        (
            "deploy:\n  restart_policy:\n    condition: on-failure\n    max_attempts: 5",
            |s| s.restart = RestartPolicy::OnFailure(Some(5)),
        ),
        ("deploy:\n  restart_policy:\n    condition: any", |s| {
            s.restart = RestartPolicy::Always
        }),
        ("deploy:\n  restart_policy:\n    condition: none", |s| {
            s.restart = RestartPolicy::No
        }),
        (
            "deploy:\n  resources:\n    limits:\n      cpus: '0.50'\n      memory: 1gb\n      pids: 100\n    reservations:\n      cpus: 0.25\n      memory: 100k\n      devices:\n        - driver: nvidia\n          count: 1\n          capabilities: [gpu]\n        - capabilities: [gpu, utility]\n          device_ids: ['0', '3']\n          options:\n            a: b\n        - capabilities: [gpu]\n          count: all",
            |s| {
                s.deploy.resources = Resources {
                    cpus: Some(0.5),
                    memory: Some(1024 * 1024 * 1024),
                    memswap: None,
                    pids: Some(100),
                    reservation_cpus: Some(0.25),
                    reservation_memory: Some(100 * 1024),
                    devices: vec![
                        DeviceRequest {
                            driver: Some("nvidia".into()),
                            count: Some(1),
                            device_ids: vec![],
                            capabilities: strings(&["gpu"]),
                            options: BTreeMap::new(),
                        },
                        DeviceRequest {
                            driver: None,
                            count: None,
                            device_ids: strings(&["0", "3"]),
                            capabilities: strings(&["gpu", "utility"]),
                            options: map(&[("a", "b")]),
                        },
                        DeviceRequest {
                            driver: None,
                            count: None,
                            device_ids: vec![],
                            capabilities: strings(&["gpu"]),
                            options: BTreeMap::new(),
                        },
                    ],
                }
            },
        ),
        ("deploy:\n  mode: replicated", |_| {}),
        ("links: [\"other:db\"]", |s| {
            s.links = strings(&["other:db"])
        }),
        ("cpu_shares: 512", |s| s.cpu_shares = Some(512)),
        ("cpus: 1.5", |s| s.deploy.resources.cpus = Some(1.5)),
        ("mem_limit: 2g", |s| {
            s.deploy.resources.memory = Some(2 * 1024 * 1024 * 1024)
        }),
        ("memswap_limit: -1", |s| {
            s.deploy.resources.memswap = Some(-1)
        }),
        ("memswap_limit: 1g", |s| {
            s.deploy.resources.memswap = Some(1024 * 1024 * 1024)
        }),
        ("pids_limit: 200", |s| s.deploy.resources.pids = Some(200)),
        (
            "mem_limit: 1g\ndeploy:\n  resources:\n    limits:\n      memory: 4G",
            |s| s.deploy.resources.memory = Some(4 * 1024 * 1024 * 1024),
        ),
        ("group_add: [audio, 1001]", |s| {
            s.group_add = strings(&["audio", "1001"])
        }),
        ("build: .", |_| {}),
        ("x-notes: anything\nx-more: {a: 1}", |_| {}),
    ];
    let base = service_s("");
    for (fragment, edit) in cases {
        let mut want = base.clone();
        edit(&mut want);
        assert_eq!(service_s(fragment), want, "fragment:\n{fragment}");
    }
}

#[test]
fn defaults_of_a_bare_service() {
    let s = service_s("");
    assert_eq!(s.name, "s");
    assert_eq!(s.image, "img");
    assert_eq!(s.pull_policy, PullPolicy::Missing);
    assert_eq!(s.restart, RestartPolicy::No);
    assert_eq!(s.deploy.replicas, 1);
    assert_eq!(s.deploy.update_order, UpdateOrder::StopFirst);
    assert_eq!(s.deploy.update_parallelism, 1);
    assert_eq!(s.deploy.resources, Resources::default());
    assert_eq!(
        s.networks,
        only_network("default", ServiceNetwork::default())
    );
    assert!(s.command.is_none() && s.entrypoint.is_none() && s.healthcheck.is_none());
}

#[test]
fn env_file_entries_then_environment_later_wins() {
    let yaml = "services:\n  s:\n    image: img\n    env_file:\n      - a.env\n      - path: ./b.env\n        required: true\n      - path: missing.env\n        required: false\n    environment:\n      B: from-environment\n      C:\n";
    let files = BTreeMap::from([
        ("a.env".to_owned(), "A=a\nB=from-a\nC=from-a\n".to_owned()),
        ("b.env".to_owned(), "B=from-b\n".to_owned()),
    ]);
    let variables = BTreeMap::new();
    let opts = noco_compose::LoadOptions {
        project_name: Some("p"),
        variables: &variables,
        files: &files,
        profiles: &[],
        directory: None,
    };
    let loaded = match noco_compose::load(yaml, &opts) {
        Ok(l) => l,
        Err(e) => panic!("{}", show(&e)),
    };
    let env = &loaded.project.services["s"].environment;
    // C has no value and no variable: the env_file value stays.
    assert_eq!(
        env,
        &map(&[("A", "a"), ("B", "from-environment"), ("C", "from-a")])
    );

    let single = "services:\n  s:\n    image: img\n    env_file: b.env\n";
    let opts = noco_compose::LoadOptions {
        project_name: Some("p"),
        variables: &variables,
        files: &files,
        profiles: &[],
        directory: None,
    };
    match noco_compose::load(single, &opts) {
        Ok(l) => assert_eq!(l.project.services["s"].environment, map(&[("B", "from-b")])),
        Err(e) => panic!("{}", show(&e)),
    }
    let bad = BTreeMap::from([("a.env".to_owned(), "A=1\nA B\n".to_owned())]);
    let opts = noco_compose::LoadOptions {
        project_name: Some("p"),
        variables: &variables,
        files: &bad,
        profiles: &[],
        directory: None,
    };
    match noco_compose::load(
        "services:\n  s:\n    image: img\n    env_file: a.env\n",
        &opts,
    ) {
        Ok(_) => panic!("bad env file should fail"),
        Err(e) => {
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].path, "services.s.env_file");
            assert!(e[0].message.contains("\"a.env\", line 2"), "{}", e[0]);
        }
    }
}

#[test]
fn warnings_say_what_was_ignored_or_defaulted() {
    let cases: &[(&str, &str, &str)] = &[
        ("build: .", "services.s.build", "never builds"),
        (
            "environment:\n  - MISSING",
            "services.s.environment[0]",
            "MISSING",
        ),
        (
            "environment:\n  X: ${UNSET_VAR}",
            "services.s.environment.X",
            "UNSET_VAR is not set",
        ),
        (
            "deploy:\n  update_config:\n    failure_action: rollback",
            "services.s.deploy.update_config.failure_action",
            "ignored",
        ),
        (
            "restart: always\ndeploy:\n  restart_policy:\n    condition: any",
            "services.s.deploy",
            "restart_policy is ignored",
        ),
        (
            "cpus: 1\ndeploy:\n  resources:\n    limits:\n      cpus: 2",
            "services.s",
            "using deploy.resources",
        ),
    ];
    for (fragment, path, needle) in cases {
        let loaded = match load_with(&file(fragment), &[]) {
            Ok(l) => l,
            Err(e) => panic!("{fragment}: {}", show(&e)),
        };
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.path == *path && w.message.contains(needle)),
            "{fragment}: want a warning at {path} containing {needle:?}, got:\n{}",
            show(&loaded.warnings)
        );
    }
    let loaded =
        load_with("version: '3.8'\nservices:\n  s:\n    image: i\n", &[]).map(|l| l.warnings);
    assert!(
        matches!(loaded.as_deref(), Ok([w]) if w.path == "version" && w.line == Some(1)),
        "{loaded:?}"
    );
}

#[test]
fn each_unsupported_key_is_refused_naming_service_and_key() {
    let cases: &[(&str, &str)] = &[
        ("extends:\n  service: other", "extends"),
        ("develop: {}", "develop"),
        ("scale: 2", "scale"),
        ("volumes_from: [other]", "volumes_from"),
        ("mem_reservation: 1g", "mem_reservation"),
        ("runtime: runc", "runtime"),
        ("imagee: typo", "imagee"),
        ("bogus: 1", "bogus"),
    ];
    for (fragment, key) in cases {
        let errs = errors(&file(fragment));
        assert_eq!(errs.len(), 1, "{fragment}:\n{}", show(&errs));
        let e = &errs[0];
        assert_eq!(e.path, format!("services.s.{key}"), "{e}");
        assert!(e.message.contains("service \"s\""), "{e}");
        assert!(e.message.contains(&format!("{key:?}")), "{e}");
        assert!(e.line.is_some(), "{e}");
    }
    // build without image: refused, naming the reason.
    let errs = errors("services:\n  web:\n    build: .\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "services.web.build (line 3): service \"web\": key \"build\" is not supported without \"image\": noco deploys images and never builds them; build and push the image, then set image:"
    );
}

#[test]
fn unsupported_nested_keys_and_values_are_refused() {
    let cases: &[(&str, &str)] = &[
        (
            "deploy:\n  placement:\n    constraints: []",
            "services.s.deploy.placement",
        ),
        ("deploy:\n  mode: global", "services.s.deploy.mode"),
        (
            "deploy:\n  resources:\n    reservations:\n      generic_resources: []",
            "services.s.deploy.resources.reservations.generic_resources",
        ),
        (
            "healthcheck:\n  test: [\"CMD\"]\n  bogus: 1",
            "services.s.healthcheck.bogus",
        ),
        (
            "ports:\n  - target: 80\n    app_protocol: http",
            "services.s.ports[0].app_protocol",
        ),
        (
            "volumes:\n  - type: npipe\n    source: x\n    target: /x",
            "services.s.volumes[0]",
        ),
        (
            "volumes:\n  - type: volume\n    source: data\n    target: /d\n    volume:\n      subpath: x",
            "services.s.volumes[0].volume.subpath",
        ),
        (
            "networks:\n  front:\n    priority: 10",
            "services.s.networks.front.priority",
        ),
        ("pull_policy: build", "services.s.pull_policy"),
        ("pull_policy: daily", "services.s.pull_policy"),
        ("network_mode: mynet", "services.s.network_mode"),
        (
            "logging:\n  driver: local\n  format: x",
            "services.s.logging.format",
        ),
    ];
    for (fragment, path) in cases {
        let errs = errors(&file(fragment));
        assert!(
            errs.iter()
                .any(|e| e.path == *path && e.message.contains("service \"s\"")),
            "{fragment}: want an error at {path}, got:\n{}",
            show(&errs)
        );
    }
}

#[test]
fn unsupported_top_level_keys_are_refused() {
    for key in ["include", "bogus"] {
        let yaml = format!("services:\n  s:\n    image: i\n{key}: {{}}\n");
        let errs = errors(&yaml);
        assert_eq!(errs.len(), 1, "{}", show(&errs));
        assert_eq!(errs[0].path, key);
        assert!(errs[0].message.contains(&format!("{key:?}")), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(4));
    }
    // x-* top-level keys are ignored, even when they hold things that would not interpolate.
    let loaded = load_with(
        "x-common: &c\n  image: i\n  note: ${UNSET:?not evaluated}\nservices:\n  s:\n    image: i\n",
        &[],
    );
    assert!(loaded.is_ok(), "{loaded:?}");
}

#[test]
fn wrong_types_and_values_are_reported_with_their_path() {
    let cases: &[(&str, &str)] = &[
        ("privileged: maybe", "services.s.privileged"),
        ("restart: sometimes", "services.s.restart"),
        ("stop_grace_period: 10", "services.s.stop_grace_period"),
        ("shm_size: lots", "services.s.shm_size"),
        ("cpus: many", "services.s.cpus"),
        ("ports: \"80:80\"", "services.s.ports"),
        ("ports:\n  - \"99999:80\"", "services.s.ports[0]"),
        ("volumes:\n  - relative:path", "services.s.volumes[0]"),
        ("command: \"echo 'unterminated\"", "services.s.command"),
        ("environment: 5", "services.s.environment"),
        ("labels:\n  a: [1]", "services.s.labels.a"),
        (
            "healthcheck:\n  test: [\"curl\"]",
            "services.s.healthcheck.test",
        ),
        (
            "healthcheck:\n  test: [\"CMD\", \"x\"]\n  disable: true",
            "services.s.healthcheck.test",
        ),
        ("deploy:\n  replicas: -1", "services.s.deploy.replicas"),
        (
            "deploy:\n  update_config:\n    order: sideways",
            "services.s.deploy.update_config.order",
        ),
        (
            "deploy:\n  update_config:\n    parallelism: 0",
            "services.s.deploy.update_config.parallelism",
        ),
        (
            "depends_on:\n  other:\n    condition: service_ready",
            "services.s.depends_on.other.condition",
        ),
        (
            "ulimits:\n  nofile:\n    soft: 10",
            "services.s.ulimits.nofile",
        ),
        ("image: ''", "services.s.image"),
        ("sysctls:\n  - net.x", "services.s.sysctls[0]"),
        ("volumes:\n  - data:/d\n  - ./x:/d", "services.s.volumes"),
    ];
    for (fragment, path) in cases {
        let errs = errors(&file(fragment));
        assert!(
            errs.iter().any(|e| e.path == *path),
            "{fragment}: want an error at {path}, got:\n{}",
            show(&errs)
        );
    }
}
