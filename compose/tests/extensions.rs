//! Extension keys (`x-…`) are ignored wherever compose keys are expected, as the compose
//! specification says (in the maps of names — services, volumes, networks — an `x-` key is a
//! name, as in compose); and an unknown key is named with the nearest known key when that one
//! is close (`enviroment` → did you mean "environment"?).

mod common;

use common::{errors, load_with, project, show};

#[test]
fn x_keys_are_ignored_at_every_level() {
    let yaml = r#"
x-top: {anything: [1, 2]}
x-noco: {rollout: {canary: 1}, other: [x]}
services:
  web:
    x-service: ${UNSET:?never interpolated}
    image: nginx
    ports:
      - target: 80
        x-port: 1
    volumes:
      - type: volume
        source: data
        target: /data
        x-mount: 1
        volume:
          nocopy: true
          x-volume-opt: 1
      - type: tmpfs
        target: /t
        tmpfs: {size: 1000, x-tmpfs: 1}
    networks:
      front:
        aliases: [w]
        x-endpoint: 1
      x-networks-note: {}
    depends_on:
      db:
        condition: service_started
        x-dep: 1
    healthcheck:
      test: ["CMD", "true"]
      x-hc: 1
    logging:
      driver: json-file
      x-logging: 1
    ulimits:
      nofile: {soft: 1, hard: 2, x-ulimit: 1}
      x-ulimits-note: 1
    env_file:
      - path: ./a.env
        required: false
        x-env-file: 1
    deploy:
      x-deploy: 1
      replicas: 1
      update_config: {order: start-first, x-update: 1}
      restart_policy: {condition: any, x-restart: 1}
      resources:
        x-resources: 1
        limits: {memory: 10m, x-limits: 1}
  db:
    image: postgres
networks:
  front:
    x-network: {a: 1}
    driver: bridge
    ipam:
      x-ipam: 1
      config:
        - subnet: 10.9.0.0/24
          x-pool: 1
  ext:
    external: true
    x-external-note: 1
volumes:
  data:
    x-volume: 1
    labels: {a: b}
"#;
    let p = project(yaml);
    let web = &p.services["web"];
    assert_eq!(
        web.networks.keys().collect::<Vec<_>>(),
        ["front"],
        "x-networks-note is no network"
    );
    assert_eq!(
        web.ulimits.keys().collect::<Vec<_>>(),
        ["nofile"],
        "x-ulimits-note is no limit"
    );
    assert_eq!(web.ports.len(), 1);
    assert_eq!(web.volumes.len(), 2);
    assert_eq!(
        p.networks["front"].ipam.as_ref().map(|i| i.config.len()),
        Some(1)
    );
    assert_eq!(p.volumes["data"].labels.len(), 1);
}

#[test]
fn in_maps_of_names_an_x_key_is_a_name_as_in_compose() {
    let p = project("services:\n  x-web:\n    image: i\nvolumes:\n  x-data: {}\n");
    assert!(p.services.contains_key("x-web"));
    assert!(p.volumes.contains_key("x-data"));
}

#[test]
fn an_unknown_key_gets_the_nearest_known_key_when_it_is_close() {
    let svc = |fragment: &str| format!("services:\n  s:\n    image: i\n{fragment}");
    let cases: &[(String, &str)] = &[
        (
            svc("    enviroment: {A: 1}\n"),
            "services.s.enviroment (line 4): service \"s\": unknown key \"enviroment\": did you mean \"environment\"?",
        ),
        (
            svc("    helthcheck: {}\n"),
            "services.s.helthcheck (line 4): service \"s\": unknown key \"helthcheck\": did you mean \"healthcheck\"?",
        ),
        (
            svc("    Ports: ['80']\n"),
            "services.s.Ports (line 4): service \"s\": unknown key \"Ports\": did you mean \"ports\"?",
        ),
        (
            svc("    healthcheck:\n      test: [CMD, 'true']\n      intervall: 1s\n"),
            "services.s.healthcheck.intervall (line 6): service \"s\": unknown key \"intervall\" (did you mean \"interval\"?)",
        ),
        (
            svc("    deploy:\n      replica: 2\n"),
            "services.s.deploy.replica (line 5): service \"s\": deploy: unknown key \"replica\" (did you mean \"replicas\"?)",
        ),
        (
            svc("networks:\n  n:\n    drivr: bridge\n"),
            "networks.n.drivr (line 6): network \"n\": unknown key \"drivr\" (did you mean \"driver\"?)",
        ),
        (
            svc("volume:\n  data: {}\n"),
            "volume (line 4): unknown top-level key \"volume\": did you mean \"volumes\"?",
        ),
        // Nothing close: no guess (a list of the known keys where it is short).
        (
            svc("    bogus: 1\n"),
            "services.s.bogus (line 4): service \"s\": unknown key \"bogus\"",
        ),
        (
            svc("    logging:\n      drv: x\n"),
            "services.s.logging.drv (line 5): service \"s\": unknown key \"drv\" (known: driver, options)",
        ),
    ];
    for (yaml, want) in cases {
        let errs = errors(yaml);
        assert!(
            errs.iter().any(|e| e.to_string() == *want),
            "want {want:?} in:\n{}",
            show(&errs)
        );
    }
    // Only one error per typo.
    assert_eq!(errors(&svc("    enviroment: {A: 1}\n")).len(), 1);
    assert!(load_with(&svc("    environment: {A: 1}\n"), &[]).is_ok());
}
