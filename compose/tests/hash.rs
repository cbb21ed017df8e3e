//! `config_hash`: equal models hash equal whatever the syntax or key order; any config
//! change changes the hash; scaling and renaming do not.

mod common;

use common::project;
use noco_compose::config_hash;

/// The hash of service `s` in `yaml`.
fn hash_of(yaml: &str) -> String {
    match project(yaml).services.get("s") {
        Some(s) => config_hash(s),
        None => panic!("no service s in\n{yaml}"),
    }
}

const BASE: &str = "\
services:
  s:
    image: app:1
    environment:
      A: '1'
      B: two
    ports:
      - \"8080:80\"
      - \"127.0.0.1:5353:53/udp\"
    volumes:
      - data:/data:ro
      - ./conf:/etc/app:z
    deploy:
      replicas: 1
volumes:
  data: {}
";

#[test]
fn equal_models_hash_equal_whatever_the_syntax() {
    let base = hash_of(BASE);
    let same = [
        // long port syntax, reordered
        "services:\n  s:\n    image: app:1\n    environment: {A: '1', B: two}\n    ports:\n      - target: 53\n        published: 5353\n        host_ip: 127.0.0.1\n        protocol: udp\n      - target: 80\n        published: \"8080\"\n    volumes:\n      - data:/data:ro\n      - ./conf:/etc/app:z\nvolumes:\n  data: {}\n",
        // long volume syntax
        "services:\n  s:\n    image: app:1\n    environment: {A: '1', B: two}\n    ports: ['8080:80', '127.0.0.1:5353:53/udp']\n    volumes:\n      - type: volume\n        source: data\n        target: /data\n        read_only: true\n      - type: bind\n        source: ./conf\n        target: /etc/app\n        bind:\n          selinux: z\n          create_host_path: true\nvolumes:\n  data: {}\n",
        // list environment, reordered entries, numbers written as numbers
        "services:\n  s:\n    image: app:1\n    environment:\n      - B=two\n      - A=1\n    ports: ['8080:80', '127.0.0.1:5353:53/udp']\n    volumes: ['data:/data:ro', './conf:/etc/app:z']\nvolumes:\n  data: {}\n",
        // keys reordered, explicit defaults, an extension key
        "volumes:\n  data: {}\nservices:\n  s:\n    x-note: ignored\n    volumes: ['data:/data:ro', './conf:/etc/app:z']\n    restart: 'no'\n    pull_policy: missing\n    ports: ['127.0.0.1:5353:53/udp', '8080:80']\n    environment: {B: two, A: 1}\n    image: app:1\n    deploy:\n      update_config:\n        order: stop-first\n        parallelism: 1\n",
        // mounts in another order
        "services:\n  s:\n    image: app:1\n    environment: {A: '1', B: two}\n    ports: ['8080:80', '127.0.0.1:5353:53/udp']\n    volumes: ['./conf:/etc/app:z', 'data:/data:ro']\nvolumes:\n  data: {}\n",
        // scaling does not recreate
        "services:\n  s:\n    image: app:1\n    environment: {A: '1', B: two}\n    ports: ['8080:80', '127.0.0.1:5353:53/udp']\n    volumes: ['data:/data:ro', './conf:/etc/app:z']\n    deploy:\n      replicas: 1\nvolumes:\n  data: {}\n",
    ];
    for yaml in same {
        assert_eq!(hash_of(yaml), base, "should hash like BASE:\n{yaml}");
    }
}

#[test]
fn any_config_change_changes_the_hash() {
    let base = hash_of(BASE);
    let changes = [
        ("B: two", "B: three"),
        ("A: '1'", "A: '2'"),
        ("image: app:1", "image: app:2"),
        ("\"8080:80\"", "\"8081:80\""),
        ("data:/data:ro", "data:/data"),
        ("./conf:/etc/app:z", "./conf:/etc/app:Z"),
        ("    deploy:\n", "    privileged: true\n    deploy:\n"),
        ("    deploy:\n", "    command: run\n    deploy:\n"),
    ];
    for (from, to) in changes {
        let changed = BASE.replacen(from, to, 1);
        assert_ne!(changed, BASE, "{from} not found");
        assert_ne!(
            hash_of(&changed),
            base,
            "changing {from:?} to {to:?} should change the hash"
        );
    }
}

#[test]
fn replicas_and_service_name_are_not_hashed() {
    let base = hash_of(BASE);
    let scaled = |n: u32| {
        hash_of(&format!(
            "services:\n  s:\n    image: app\n    deploy:\n      replicas: {n}\n"
        ))
    };
    assert_eq!(scaled(1), scaled(5));
    let renamed = BASE.replace("  s:\n", "  other:\n");
    let p = project(&renamed);
    assert_eq!(p.services.get("other").map(config_hash), Some(base));
}

#[test]
fn hash_format_and_stability() {
    let h = hash_of("services:\n  s:\n    image: app:1\n");
    let hex = h.strip_prefix("sha256:").unwrap_or_default();
    assert_eq!(hex.len(), 64, "{h}");
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{h}"
    );
    // Pinned: if this changes, every deployed container is recreated on upgrade. Change the
    // model or the encoding only on purpose, and then bump the version tag in hash.rs.
    assert_eq!(h, GOLDEN, "the config hash of a bare service changed");
}

const GOLDEN: &str = "sha256:b940e98ed86e3169b99a1b61a29d459e1215ce6fb1cdb47ea44268774e437fe2";
