//! Secrets and configs as the compose specification defines them: top-level definitions from
//! `file:`, `environment:` (a given variable) and, for configs, inline `content:`; mounted by
//! services in short (`- name`) and long syntax (`source`, `target`, `uid`, `gid`, `mode`);
//! their content in the model but never in any view of it; refusals with their reasons.

mod common;

use std::collections::BTreeMap;

use common::{show, vars};
use noco_compose::model::{FileMount, ObjectSource, Project};
use noco_compose::{Diagnostic, FileSource, LoadOptions, Loaded, config_hash, load};

/// Files by path, any bytes (a secret need not be text).
struct Files(BTreeMap<&'static str, Vec<u8>>);

impl FileSource for Files {
    fn read(&self, path: &str) -> Result<String, String> {
        let bytes = self.read_bytes(path)?;
        String::from_utf8(bytes).map_err(|_| format!("{path} is not text"))
    }

    fn read_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let key = path.strip_prefix("./").unwrap_or(path);
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("no file {path:?}"))
    }
}

fn files() -> Files {
    Files(BTreeMap::from([
        ("secrets/db_password.txt", b"s3cret-pw\n".to_vec()),
        ("app.conf", b"listen 8080\n".to_vec()),
        ("key.bin", vec![0, 159, 146, 150, 255]),
    ]))
}

fn try_load(yaml: &str, variables: &[(&str, &str)]) -> Result<Loaded, Vec<Diagnostic>> {
    let variables = vars(variables);
    load(
        yaml,
        &LoadOptions {
            project_name: Some("test"),
            variables: &variables,
            files: &files(),
            profiles: &[],
            directory: None,
        },
    )
}

fn project(yaml: &str, variables: &[(&str, &str)]) -> Project {
    match try_load(yaml, variables) {
        Ok(loaded) => loaded.project,
        Err(errors) => panic!("should load:\n{yaml}\nerrors:\n{}", show(&errors)),
    }
}

fn errors(yaml: &str, variables: &[(&str, &str)]) -> Vec<Diagnostic> {
    match try_load(yaml, variables) {
        Ok(_) => panic!("should be refused:\n{yaml}"),
        Err(errors) => errors,
    }
}

fn mount(source: &str, target: &str, mode: u32, project: &Project, secret: bool) -> FileMount {
    let objects = if secret {
        &project.secrets
    } else {
        &project.configs
    };
    FileMount {
        source: source.into(),
        target: target.into(),
        uid: None,
        gid: None,
        mode,
        digest: objects[source].content.digest(),
    }
}

const DB: &str = "\
services:
  db:
    image: postgres
    secrets:
      - db_password
secrets:
  db_password:
    file: ./secrets/db_password.txt
";

#[test]
fn the_short_syntax_mounts_a_secret_at_run_secrets_name_with_mode_0400() {
    let p = project(DB, &[]);
    let secret = &p.secrets["db_password"];
    assert_eq!(
        secret.source,
        ObjectSource::File("./secrets/db_password.txt".into())
    );
    assert_eq!(secret.content.bytes(), b"s3cret-pw\n");
    assert_eq!(
        p.services["db"].secrets,
        [mount(
            "db_password",
            "/run/secrets/db_password",
            0o400,
            &p,
            true
        )]
    );
    assert!(p.services["db"].configs.is_empty());
}

#[test]
fn the_long_syntax_sets_target_owner_and_mode() {
    let p = project(
        "\
services:
  db:
    image: postgres
    secrets:
      - source: db_password
        target: password
        uid: '999'
        gid: 999
        mode: 0440
      - source: db_password
        target: /etc/db/password
        mode: 0o400
      - source: key
        target: tls.key
        mode: 288
secrets:
  db_password:
    file: secrets/db_password.txt
  key:
    file: key.bin
",
        &[],
    );
    let got = &p.services["db"].secrets;
    let want = [
        FileMount {
            uid: None,
            gid: None,
            ..mount("db_password", "/etc/db/password", 0o400, &p, true)
        },
        FileMount {
            uid: Some(999),
            gid: Some(999),
            ..mount("db_password", "/run/secrets/password", 0o440, &p, true)
        },
        mount("key", "/run/secrets/tls.key", 0o440, &p, true),
    ];
    assert_eq!(
        got, &want,
        "ordered by target, modes read as compose reads them"
    );
    assert_eq!(p.secrets["key"].content.bytes(), [0, 159, 146, 150, 255]);
}

#[test]
fn configs_mount_at_their_target_or_slash_name_with_mode_0444_from_each_source() {
    let p = project(
        "\
services:
  web:
    image: nginx
    configs:
      - app_conf
      - source: banner
        target: etc/banner.txt
      - source: from_var
        target: /etc/app/from_var
        mode: '0400'
configs:
  app_conf:
    file: ./app.conf
  banner:
    content: |
      hello ${WHO}
  from_var:
    environment: APP_SETTING
",
        &[("WHO", "world"), ("APP_SETTING", "fast=true")],
    );
    let web = &p.services["web"];
    assert_eq!(
        web.configs,
        [
            mount("app_conf", "/app_conf", 0o444, &p, false),
            mount("from_var", "/etc/app/from_var", 0o400, &p, false),
            mount("banner", "/etc/banner.txt", 0o444, &p, false),
        ]
    );
    assert_eq!(p.configs["app_conf"].content.bytes(), b"listen 8080\n");
    assert_eq!(p.configs["banner"].source, ObjectSource::Inline);
    assert_eq!(p.configs["banner"].content.bytes(), b"hello world\n");
    assert_eq!(
        p.configs["from_var"].source,
        ObjectSource::Environment("APP_SETTING".into())
    );
    assert_eq!(p.configs["from_var"].content.bytes(), b"fast=true");
    assert!(web.secrets.is_empty());
}

#[test]
fn a_secret_from_environment_takes_the_given_variable_only() {
    let yaml = "\
services:
  app:
    image: app
    secrets: [token]
secrets:
  token:
    environment: API_TOKEN
";
    let p = project(yaml, &[("API_TOKEN", "t0ken")]);
    assert_eq!(p.secrets["token"].content.bytes(), b"t0ken");
    // The process environment is never read: a variable only it has is not set.
    let errs = errors(yaml, &[]);
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    assert_eq!(errs[0].path, "secrets.token.environment");
    assert_eq!(errs[0].line, Some(7));
    assert!(
        errs[0].message.contains("variable API_TOKEN is not set"),
        "{}",
        errs[0]
    );
}

#[test]
fn only_mounted_definitions_are_read_and_kept() {
    let p = project(
        "\
services:
  app:
    image: app
    secrets: [used]
secrets:
  used:
    file: app.conf
  unused:
    file: not/there.txt
",
        &[],
    );
    assert_eq!(p.secrets.keys().collect::<Vec<_>>(), ["used"]);
}

#[test]
fn no_view_of_the_model_shows_a_secret() {
    let p = project(DB, &[]);
    let json = serde_json::to_string(&p).unwrap_or_default();
    let debug = format!("{p:?}");
    for shown in [&json, &debug] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(&p.secrets["db_password"].content.digest()));
    }
}

#[test]
fn the_config_hash_follows_the_content_mode_and_target_but_not_the_source_kind() {
    let hash = |yaml: &str, vars: &[(&str, &str)]| config_hash(&project(yaml, vars).services["s"]);
    let with = |source: &str, mount: &str| {
        format!(
            "services:\n  s:\n    image: app\n    secrets:\n      - {mount}\nsecrets:\n  pw:\n    {source}\n"
        )
    };
    let base = hash(&with("environment: PW", "pw"), &[("PW", "one")]);
    assert_ne!(
        hash(&with("environment: PW", "pw"), &[("PW", "two")]),
        base,
        "a new secret value recreates the service"
    );
    assert_ne!(
        hash(
            &with("environment: PW", "{source: pw, mode: 0444}"),
            &[("PW", "one")]
        ),
        base
    );
    assert_ne!(
        hash(
            &with("environment: PW", "{source: pw, target: other}"),
            &[("PW", "one")]
        ),
        base
    );
    assert_eq!(
        hash(
            &with(
                "environment: PW",
                "{source: pw, target: /run/secrets/pw, mode: '400'}"
            ),
            &[("PW", "one")]
        ),
        base,
        "the long syntax with the defaults written out is the short one"
    );
    assert_eq!(
        hash(&with("environment: OTHER", "pw"), &[("OTHER", "one")]),
        base,
        "the same bytes from elsewhere are the same configuration"
    );
    assert!(
        !noco_compose_json(&with("environment: PW", "pw"), &[("PW", "one")]).contains("one"),
        "the hash covers a digest of the value, not the value"
    );
}

/// The service's serialization (what the hash covers, as JSON).
fn noco_compose_json(yaml: &str, vars: &[(&str, &str)]) -> String {
    serde_json::to_string(&project(yaml, vars).services["s"]).unwrap_or_default()
}

/// Each refusal: the file, the path and line it is reported at, and words of its reason.
#[test]
fn what_cannot_work_is_refused_with_its_place_and_reason() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "services:\n  a:\n    image: x\n    secrets: [pw]\nsecrets:\n  pw:\n    external: true\n",
            "secrets.pw.external",
            7,
            "external secrets live in a Docker swarm",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets: [pw]\nsecrets:\n  pw:\n    content: hunter2\n",
            "secrets.pw.content",
            7,
            "a secret has no \"content\"",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets: [pw]\nsecrets:\n  pw: {}\n",
            "secrets.pw",
            6,
            "secret \"pw\" needs one of file: or environment:",
        ),
        (
            "services:\n  a:\n    image: x\n    configs: [c]\nconfigs:\n  c:\n    file: app.conf\n    content: x\n",
            "configs.c",
            6,
            "sets both file and content",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets: [pw]\nsecrets:\n  pw:\n    fiel: a\n",
            "secrets.pw.fiel",
            7,
            "unknown key \"fiel\"",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets: [pw]\nsecrets:\n  pw:\n    file: app.conf\n    template_driver: golang\n",
            "secrets.pw.template_driver",
            8,
            "drivers of a Docker swarm are not supported",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets: [pw]\nsecrets:\n  pw:\n    file: missing.txt\n",
            "secrets.pw.file",
            7,
            "file \"missing.txt\" cannot be read: no file",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets:\n      - nope\n",
            "services.a.secrets[0]",
            5,
            "secret \"nope\" is not defined under the top-level secrets",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets:\n      - source: pw\n        uid: postgres\nsecrets:\n  pw:\n    file: app.conf\n",
            "services.a.secrets[0].uid",
            6,
            "uid \"postgres\" is not a number",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets:\n      - source: pw\n        mode: '4755'\nsecrets:\n  pw:\n    file: app.conf\n",
            "services.a.secrets[0].mode",
            6,
            "beyond 0777",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets:\n      - target: x\nsecrets:\n  pw:\n    file: app.conf\n",
            "services.a.secrets[0]",
            5,
            "needs \"source\"",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets:\n      - source: pw\n        mount: /x\nsecrets:\n  pw:\n    file: app.conf\n",
            "services.a.secrets[0].mount",
            6,
            "unknown key \"mount\"",
        ),
        (
            "services:\n  a:\n    image: x\n    configs:\n      - source: c\n        target: /etc/../passwd\nconfigs:\n  c:\n    file: app.conf\n",
            "services.a.configs[0]",
            5,
            "is not a file path",
        ),
        (
            "services:\n  a:\n    image: x\n    volumes: ['./conf:/etc/app.conf']\n    configs:\n      - source: c\n        target: /etc/app.conf\nconfigs:\n  c:\n    file: app.conf\n",
            "services.a.configs[0]",
            6,
            "where a volume is mounted too",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets:\n      - pw\n      - source: pw\n        target: /run/secrets/pw\nsecrets:\n  pw:\n    file: app.conf\n",
            "services.a.secrets[0]",
            5,
            "where a secret is mounted too",
        ),
        (
            "services:\n  a:\n    image: x\n    secrets: ['my pw']\nsecrets:\n  my pw:\n    file: app.conf\n",
            "secrets.my pw",
            6,
            "invalid name",
        ),
    ];
    for (yaml, path, line, reason) in cases {
        let errs = errors(yaml, &[]);
        assert!(
            errs.iter()
                .any(|e| e.path == *path && e.line == Some(*line) && e.message.contains(reason)),
            "expected {path} (line {line}): …{reason}… for\n{yaml}\ngot:\n{}",
            show(&errs)
        );
    }
}

#[test]
fn swarm_only_names_and_labels_are_ignored_with_a_warning() {
    let loaded = match try_load(
        "services:\n  a:\n    image: x\n    secrets: [pw]\nsecrets:\n  pw:\n    file: app.conf\n    name: prod_pw\n    labels: [a=b]\n",
        &[],
    ) {
        Ok(l) => l,
        Err(e) => panic!("{}", show(&e)),
    };
    let paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["secrets.pw.name", "secrets.pw.labels"]);
}

/// The repository's fixture stack (`integration-tests/fixtures/secrets`), read from disk.
struct FixtureDir;

impl FileSource for FixtureDir {
    fn read(&self, path: &str) -> Result<String, String> {
        String::from_utf8(self.read_bytes(path)?).map_err(|e| e.to_string())
    }

    fn read_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../integration-tests/fixtures/secrets"
        );
        std::fs::read(format!("{dir}/{path}")).map_err(|e| format!("{path}: {e}"))
    }
}

#[test]
fn the_fixture_stack_loads_with_every_source_kind() {
    let yaml = match FixtureDir.read("compose.yaml") {
        Ok(y) => y,
        Err(e) => panic!("{e}"),
    };
    let variables = vars(&[("IMAGE", "app"), ("API_TOKEN", "t"), ("SITE", "s")]);
    let loaded = load(
        &yaml,
        &LoadOptions {
            project_name: Some("fixture"),
            variables: &variables,
            files: &FixtureDir,
            profiles: &[],
            directory: None,
        },
    );
    let p = match loaded {
        Ok(l) => l.project,
        Err(e) => panic!("{}", show(&e)),
    };
    let app = &p.services["app"];
    let targets: Vec<&str> = app.secrets.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/run/secrets/db_password", "/run/secrets/tokens/api"]
    );
    let targets: Vec<&str> = app.configs.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/banner", "/etc/app/app.conf"]);
    assert_eq!(
        p.secrets["db_password"].content.bytes(),
        b"correct horse battery staple\n"
    );
}
