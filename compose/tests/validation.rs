//! Project-wide behaviour of `load`: interpolation, YAML features in a compose file,
//! cross-service validation, normalization (names, default network), and reporting every
//! problem at once.

mod common;

use common::{errors, load_with, project, show};
use noco_compose::model::{Network, RestartPolicy};

/// Errors of `yaml`, as (path, message fragment) expectations: each expectation must match
/// one error, and there must be no other errors.
fn assert_errors(yaml: &str, want: &[(&str, &str)]) {
    let errs = errors(yaml);
    for (path, fragment) in want {
        assert!(
            errs.iter()
                .any(|e| e.path == *path && e.message.contains(fragment)),
            "want an error at {path} containing {fragment:?}, got:\n{}\n---\n{yaml}",
            show(&errs)
        );
    }
    assert_eq!(
        errs.len(),
        want.len(),
        "unexpected errors:\n{}\n---\n{yaml}",
        show(&errs)
    );
}

#[test]
fn values_are_interpolated_and_keys_are_not() {
    let yaml = "\
services:
  s:
    image: ${REGISTRY:-docker.io}/app:${TAG}
    environment:
      ${KEY}: literal-key
      PRICE: $$5
      NESTED: ${UNSET:-${FALLBACK:-deep}}
      ALT: ${TAG:+tagged}
    ports:
      - \"${PORT}:80\"
    privileged: ${PRIV:-false}
  t:
    image: t
    deploy:
      replicas: ${REPLICAS:-2}
";
    let loaded = match load_with(
        yaml,
        &[("TAG", "1.0"), ("KEY", "not-used"), ("PORT", "8080")],
    ) {
        Ok(l) => l,
        Err(e) => panic!("{}", show(&e)),
    };
    let s = &loaded.project.services["s"];
    assert_eq!(s.image, "docker.io/app:1.0");
    assert_eq!(
        s.environment.get("${KEY}").map(String::as_str),
        Some("literal-key")
    );
    assert_eq!(s.environment["PRICE"], "$5");
    assert_eq!(s.environment["NESTED"], "deep");
    assert_eq!(s.environment["ALT"], "tagged");
    assert_eq!(s.ports[0].published, Some(8080));
    assert!(!s.privileged);
    assert_eq!(loaded.project.services["t"].deploy.replicas, 2);
    assert!(loaded.warnings.is_empty(), "{}", show(&loaded.warnings));
}

#[test]
fn unset_variables_warn_once_each_with_where() {
    let yaml = "services:\n  s:\n    image: app\n    environment:\n      A: ${NOPE}\n      B: x${NOPE}y\n      C: $ALSO_NOPE\n";
    let loaded = match load_with(yaml, &[]) {
        Ok(l) => l,
        Err(e) => panic!("{}", show(&e)),
    };
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "services.s.environment.A (line 5): variable NOPE is not set; using an empty string",
            "services.s.environment.C (line 7): variable ALSO_NOPE is not set; using an empty string",
        ]
    );
    let env = &loaded.project.services["s"].environment;
    assert_eq!(
        (env["A"].as_str(), env["B"].as_str(), env["C"].as_str()),
        ("", "xy", "")
    );
}

#[test]
fn interpolation_errors_name_the_variable_and_place() {
    assert_errors(
        "services:\n  s:\n    image: app\n    environment:\n      PW: ${PW:?set PW first}\n      X: ${UNCLOSED\n",
        &[
            (
                "services.s.environment.PW",
                "required variable PW is missing a value: set PW first",
            ),
            ("services.s.environment.X", "unterminated \"${\""),
        ],
    );
    let errs = errors("services:\n  s:\n    image: ${IMAGE?}\n");
    assert_eq!(
        errs[0].to_string(),
        "services.s.image (line 3): required variable IMAGE is missing a value"
    );
}

#[test]
fn variables_never_come_from_the_process_environment() {
    // PATH and HOME are set in any test process; only LoadOptions::variables count.
    let loaded = load_with(
        "services:\n  s:\n    image: app\n    environment:\n      - P=${PATH}\n      - HOME\n",
        &[],
    );
    match loaded {
        Ok(l) => {
            let env = &l.project.services["s"].environment;
            assert_eq!(env.get("P").map(String::as_str), Some(""));
            assert_eq!(env.get("HOME"), None);
        }
        Err(e) => panic!("{}", show(&e)),
    }
}

#[test]
fn yaml_1_2_scalars_stay_strings_in_compose_values() {
    let yaml = "services:\n  s:\n    image: app\n    environment:\n      A: no\n      B: on\n      C: 08:00\n      D: 0o17\n      E: 0755\n      F: yes\n    labels:\n      off: y\n";
    let s = &project(yaml).services["s"];
    let env: Vec<(&str, &str)> = s
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("A", "no"),
            ("B", "on"),
            ("C", "08:00"),
            ("D", "15"),
            ("E", "0755"),
            ("F", "yes")
        ]
    );
    assert_eq!(s.labels.get("off").map(String::as_str), Some("y"));
}

#[test]
fn anchors_aliases_and_merge_keys_in_a_compose_file() {
    let yaml = "\
x-common: &common
  restart: always
  environment: &env
    LOG: info
  labels:
    tier: backend
services:
  a:
    <<: *common
    image: a
  b:
    <<: *common
    image: b
    restart: no
    environment:
      <<: *env
      EXTRA: '1'
";
    let p = project(yaml);
    assert_eq!(p.services["a"].restart, RestartPolicy::Always);
    assert_eq!(
        p.services["a"].environment.get("LOG").map(String::as_str),
        Some("info")
    );
    assert_eq!(p.services["b"].restart, RestartPolicy::No);
    let b_env: Vec<&str> = p.services["b"]
        .environment
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(b_env, ["EXTRA", "LOG"]);
    assert_eq!(
        p.services["b"].labels.get("tier").map(String::as_str),
        Some("backend")
    );
}

#[test]
fn references_must_name_existing_things() {
    assert_errors(
        "\
services:
  web:
    image: web
    depends_on: [db]
    links: [cache]
    networks: [front]
    volumes:
      - data:/data
      - ./local:/local
  side:
    image: side
    network_mode: service:ghost
",
        &[
            ("services.web.depends_on[0]", "unknown service \"db\""),
            ("services.web.links[0]", "unknown service \"cache\""),
            ("services.web.networks[0]", "network \"front\""),
            ("services.web.volumes[0]", "volume \"data\""),
            ("services.side.network_mode", "unknown service \"ghost\""),
        ],
    );
}

#[test]
fn service_healthy_needs_a_healthcheck_the_file_declares() {
    // Refused by every loader (nococtl, the server, the agent) rather than by every agent at
    // apply time: the dependency has no healthcheck, or disables it either way.
    let dependent =
        "  web:\n    image: web\n    depends_on:\n      db: { condition: service_healthy }\n";
    for (db, why) in [
        ("  db:\n    image: pg\n", "\"db\" has no healthcheck"),
        (
            "  db:\n    image: pg\n    healthcheck:\n      disable: true\n",
            "\"db\" disables its healthcheck",
        ),
        (
            "  db:\n    image: pg\n    healthcheck:\n      test: [\"NONE\"]\n",
            "\"db\" disables its healthcheck",
        ),
    ] {
        let yaml = format!("services:\n{dependent}{db}");
        assert_errors(
            &yaml,
            &[(
                "services.web.depends_on.db",
                &format!(
                    "service \"web\" depends on \"db\" being healthy (service_healthy), but {why}"
                ),
            )],
        );
        let line = errors(&yaml)[0].line;
        assert_eq!(line, Some(5), "the depends_on entry's line");
    }
    // A healthcheck of its own, or `healthcheck: {}` (or only timings), which keeps the
    // image's own HEALTHCHECK test: the file says the service has one.
    for db in [
        "  db:\n    image: pg\n    healthcheck:\n      test: [\"CMD\", \"pg_isready\"]\n",
        "  db:\n    image: pg\n    healthcheck: {}\n",
        "  db:\n    image: pg\n    healthcheck:\n      interval: 5s\n",
    ] {
        project(&format!("services:\n{dependent}{db}"));
    }
    // Other conditions need no healthcheck.
    project(
        "services:\n  web:\n    image: web\n    depends_on:\n      db: { condition: service_started }\n      job: { condition: service_completed_successfully }\n  db:\n    image: pg\n  job:\n    image: j\n",
    );
}

#[test]
fn dependency_cycles_are_named() {
    assert_errors(
        "services:\n  a:\n    image: a\n    depends_on: [b]\n  b:\n    image: b\n    depends_on:\n      c:\n        condition: service_healthy\n  c:\n    image: c\n    healthcheck: {}\n    links: [a]\n  d:\n    image: d\n    depends_on: [d]\n",
        &[
            ("services.a", "dependency cycle: a -> b -> c -> a"),
            ("services.d", "dependency cycle: d -> d"),
        ],
    );
    // A diamond is not a cycle.
    project(
        "services:\n  a:\n    image: a\n    depends_on: [b, c]\n  b:\n    image: b\n    depends_on: [d]\n  c:\n    image: c\n    depends_on: [d]\n  d:\n    image: d\n",
    );
}

#[test]
fn container_names_and_replicas() {
    assert_errors(
        "services:\n  a:\n    image: a\n    container_name: one\n    deploy:\n      replicas: 2\n  b:\n    image: b\n    container_name: same\n  c:\n    image: c\n    container_name: same\n",
        &[
            ("services.a", "container_name \"one\" and deploy.replicas 2"),
            ("services.c", "both set container_name \"same\""),
        ],
    );
}

#[test]
fn published_port_clashes_are_errors() {
    assert_errors(
        "\
services:
  a:
    image: a
    ports:
      - \"80:80\"
      - \"127.0.0.1:9000:9000\"
      - \"5353:53/udp\"
  b:
    image: b
    ports:
      - \"8080:80\"
      - \"127.0.0.1:80:81\"
      - \"127.0.0.2:9000:9000\"
      - target: 53
        published: 5353
        protocol: tcp
  c:
    image: c
    ports:
      - \"7000-7001:7000-7001\"
      - \"7001:7999\"
  d:
    image: d
    deploy:
      replicas: 3
    ports:
      - \"6000:6000\"
      - \"6001\"
",
        &[
            (
                "services.b.ports[1]",
                "host port 80/tcp is already published by service \"a\"",
            ),
            (
                "services.c.ports[1]",
                "host port 7001/tcp is already published by itself",
            ),
            (
                "services.d.ports[0]",
                "fixed host port 6000 but has 3 replicas",
            ),
        ],
    );
}

#[test]
fn network_mode_and_networks_conflict() {
    assert_errors(
        "services:\n  a:\n    image: a\n    network_mode: host\n    networks: [front]\nnetworks:\n  front: {}\n",
        &[(
            "services.a.networks",
            "\"networks\" and \"network_mode\" cannot both be set",
        )],
    );
}

#[test]
fn networks_and_volumes_get_docker_names() {
    let yaml = "\
services:
  a:
    image: a
    networks: [front, ext, named]
    volumes: [data:/d, old:/o, ext:/e]
  b:
    image: b
networks:
  front:
    driver: bridge
    internal: true
    attachable: true
    enable_ipv6: true
    labels: [team=web]
    driver_opts:
      com.docker.network.bridge.name: br-front
    ipam:
      driver: default
      config:
        - subnet: 172.28.0.0/16
          ip_range: 172.28.5.0/24
          gateway: 172.28.0.1
          aux_addresses:
            host1: 172.28.1.5
  ext:
    external: true
  named:
    name: shared-net
volumes:
  data:
    driver: local
    driver_opts: {type: none, o: bind, device: /srv/data}
    labels: {backup: daily}
  old:
    external:
      name: legacy-volume
  ext:
    external: true
    name: real-name
";
    let loaded = match load_with(yaml, &[]) {
        Ok(l) => l,
        Err(e) => panic!("{}", show(&e)),
    };
    let p = loaded.project;
    let net_names: Vec<(&str, &str, bool)> = p
        .networks
        .iter()
        .map(|(k, n)| (k.as_str(), n.name.as_str(), n.external))
        .collect();
    assert_eq!(
        net_names,
        [
            ("default", "test_default", false),
            ("ext", "ext", true),
            ("front", "test_front", false),
            ("named", "shared-net", false)
        ]
    );
    let front = &p.networks["front"];
    assert!(front.internal && front.attachable && front.enable_ipv6);
    assert_eq!(front.driver.as_deref(), Some("bridge"));
    assert_eq!(front.labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(front.driver_opts.len(), 1);
    let ipam = front.ipam.as_ref().map(|i| {
        (
            i.driver.clone(),
            i.config[0].subnet.clone(),
            i.config[0].aux_addresses.len(),
        )
    });
    assert_eq!(
        ipam,
        Some((Some("default".into()), Some("172.28.0.0/16".into()), 1))
    );
    let vol_names: Vec<(&str, &str, bool)> = p
        .volumes
        .iter()
        .map(|(k, v)| (k.as_str(), v.name.as_str(), v.external))
        .collect();
    assert_eq!(
        vol_names,
        [
            ("data", "test_data", false),
            ("ext", "real-name", true),
            ("old", "legacy-volume", true)
        ]
    );
    assert_eq!(
        p.volumes["data"]
            .driver_opts
            .get("device")
            .map(String::as_str),
        Some("/srv/data")
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.path == "volumes.old.external"),
        "{}",
        show(&loaded.warnings)
    );
}

#[test]
fn the_default_network_is_added_only_when_used() {
    let p = project("services:\n  a:\n    image: a\n    network_mode: host\n");
    assert!(p.networks.is_empty());
    assert!(p.services["a"].networks.is_empty());

    let p = project(
        "services:\n  a:\n    image: a\nnetworks:\n  default:\n    name: my-default\n    driver: bridge\n",
    );
    assert_eq!(p.networks.len(), 1);
    assert_eq!(p.networks["default"].name, "my-default");
    assert_eq!(p.networks["default"].driver.as_deref(), Some("bridge"));

    let p = project("services:\n  a:\n    image: a\n    networks: [default]\n");
    assert_eq!(
        p.networks["default"],
        Network {
            name: "test_default".into(),
            ..Network::default()
        }
    );
}

#[test]
fn external_objects_cannot_be_configured() {
    assert_errors(
        "services:\n  a:\n    image: a\n    networks: [n]\nnetworks:\n  n:\n    external: true\n    driver: overlay\n",
        &[(
            "networks.n.driver",
            "an external network cannot set \"driver\"",
        )],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "\
version: '3'
services:
  a:
    image: a
    restart: sometimes
    ports: ['99999:1']
    secrets: [x, y]
  b:
    build: .
    depends_on: [nope]
  c: {}
secrets:
  x:
    external: true
";
    let errs = errors(yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "secrets.x.external",
        "services.a.restart",
        "services.a.ports[0]",
        "services.a.secrets[1]",
        "services.b.build",
        "services.c",
        "services.b.depends_on[0]",
    ] {
        assert!(paths.contains(&want), "missing {want}:\n{}", show(&errs));
    }
    assert_eq!(errs.len(), 7, "{}", show(&errs));
    assert!(errs.iter().all(|e| e.line.is_some()), "{}", show(&errs));
}

#[test]
fn documents_that_are_not_compose_files() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("just text", "top level must be a mapping"),
        ("services:\n", "no services"),
        ("services: {}\n", "no services"),
        ("name: x\n", "no \"services\""),
        ("services: [a]\n", "expected a mapping"),
        ("services:\n  a: 5\n", "expected a mapping"),
        ("services:\n  a:\n    image: [x]\n", "expected a string"),
        (
            "services:\n  'bad name!':\n    image: a\n",
            "invalid service name",
        ),
        (
            "services:\n  a:\n    image: a\n  a:\n    image: b\n",
            "duplicate mapping key",
        ),
    ];
    for (yaml, fragment) in cases {
        let errs = errors(yaml);
        assert!(
            errs.iter().any(|e| e.message.contains(fragment)),
            "{yaml:?}: want {fragment:?} in:\n{}",
            show(&errs)
        );
    }
}
