//! `profiles`, as compose reads them: a service without `profiles:` runs; one with profiles
//! runs only when one of them is enabled — by `--profile` (`*`: all), else `COMPOSE_PROFILES`
//! from the env files — and, for a fleet stack, always by the file's `x-noco.profiles`. A
//! disabled service leaves the project (with the networks and volumes only it used); an enabled
//! service that needs it is an error naming both, unless its `depends_on` says `required: false`.

mod common;

use std::collections::BTreeSet;

use common::{show, vars};
use noco_compose::{Diagnostic, LoadOptions, Loaded, NoFiles, config_hash, load};

const FILE: &str = "\
services:
  web:
    image: web
  debug:
    image: debug
    profiles: [debug]
    volumes: [debugdata:/d]
  tools:
    image: tools
    profiles: [tools, ops]
volumes:
  debugdata: {}
";

fn load_profiles(
    yaml: &str,
    given: &[&str],
    variables: &[(&str, &str)],
) -> Result<Loaded, Vec<Diagnostic>> {
    let given: Vec<String> = given.iter().map(|p| p.to_string()).collect();
    let variables = vars(variables);
    load(
        yaml,
        &LoadOptions {
            project_name: Some("test"),
            variables: &variables,
            files: &NoFiles,
            profiles: &given,
            directory: None,
        },
    )
}

fn services(yaml: &str, given: &[&str], variables: &[(&str, &str)]) -> Vec<String> {
    match load_profiles(yaml, given, variables) {
        Ok(l) => l.project.services.into_keys().collect(),
        Err(e) => panic!("{given:?} {variables:?}:\n{}", show(&e)),
    }
}

fn errors(yaml: &str, given: &[&str]) -> Vec<String> {
    match load_profiles(yaml, given, &[]) {
        Ok(l) => panic!("expected errors, got {:?}", l.project.services.keys()),
        Err(e) => e.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn services_without_profiles_run_and_others_only_when_one_of_theirs_is_enabled() {
    /// `--profile` flags, variables, the services that run.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[], &[], &["web"]),
        (&["debug"], &[], &["debug", "web"]),
        (&["ops"], &[], &["tools", "web"]),
        (&["debug", "tools"], &[], &["debug", "tools", "web"]),
        (&["*"], &[], &["debug", "tools", "web"]),
        (&["unknown"], &[], &["web"]),
        // COMPOSE_PROFILES from the env files, comma-separated…
        (
            &[],
            &[("COMPOSE_PROFILES", "debug, ops")],
            &["debug", "tools", "web"],
        ),
        // …unless --profile is given, as in compose.
        (
            &["debug"],
            &[("COMPOSE_PROFILES", "ops")],
            &["debug", "web"],
        ),
    ];
    for (given, variables, want) in cases {
        assert_eq!(
            services(FILE, given, variables),
            *want,
            "{given:?} {variables:?}"
        );
    }
}

#[test]
fn x_noco_profiles_in_the_file_enable_theirs_on_every_side() {
    let file = format!("x-noco:\n  profiles: [ops]\n  rollout: {{canary: 1}}\n{FILE}");
    assert_eq!(services(&file, &[], &[]), ["tools", "web"]);
    assert_eq!(services(&file, &["debug"], &[]), ["debug", "tools", "web"]);
    let errs = errors(
        "x-noco:\n  profiles: ops\nservices:\n  a:\n    image: a\n",
        &[],
    );
    assert_eq!(
        errs,
        ["x-noco.profiles (line 2): expected a list, got a string"]
    );
}

#[test]
fn depending_on_a_disabled_service_is_an_error_naming_both() {
    let file = |how: &str| {
        FILE.replace(
            "volumes:\n  debugdata",
            &format!("  front:\n    image: front\n{how}volumes:\n  debugdata"),
        )
    };
    assert_eq!(
        errors(&file("    depends_on: [debug]\n"), &[]),
        [
            "services.front.depends_on[0] (line 13): service \"debug\" is required by \"front\" but is disabled; it can be enabled by profiles [debug] (--profile, COMPOSE_PROFILES or x-noco.profiles)"
        ]
    );
    assert_eq!(
        errors(&file("    links: [tools]\n"), &[]),
        [
            "services.front.links[0] (line 13): service \"tools\" is required by \"front\" but is disabled; it can be enabled by profiles [tools, ops] (--profile, COMPOSE_PROFILES or x-noco.profiles)"
        ]
    );
    assert_eq!(
        errors(&file("    network_mode: service:debug\n"), &[]).len(),
        1
    );
    // Enabled, it is an ordinary dependency.
    let enabled = load_profiles(&file("    depends_on: [debug]\n"), &["debug"], &[]);
    assert!(
        matches!(&enabled, Ok(l) if l.project.services["front"].depends_on.contains_key("debug"))
    );
    // `required: false` on a disabled service: the dependency is dropped, as in compose.
    let optional =
        file("    depends_on:\n      debug: {condition: service_started, required: false}\n");
    match load_profiles(&optional, &[], &[]) {
        Ok(l) => assert!(l.project.services["front"].depends_on.is_empty()),
        Err(e) => panic!("{}", show(&e)),
    }
}

#[test]
fn a_disabled_service_takes_its_own_volumes_and_networks_and_its_references_are_not_checked() {
    let without = load_profiles(FILE, &[], &[]).map(|l| l.project);
    assert!(
        matches!(&without, Ok(p) if p.volumes.is_empty()),
        "{without:?}"
    );
    let with = load_profiles(FILE, &["debug"], &[]).map(|l| l.project);
    assert!(matches!(&with, Ok(p) if p.volumes.contains_key("debugdata")));

    // A network only a disabled service refers to need not exist (compose checks enabled
    // services only); its own syntax is still checked.
    let dangling = "services:\n  a:\n    image: a\n  b:\n    image: b\n    profiles: [x]\n    networks: [nowhere]\n";
    assert_eq!(services(dangling, &[], &[]), ["a"]);
    assert_eq!(errors(dangling, &["x"]).len(), 1);
    let bad = "services:\n  a:\n    image: a\n  b:\n    image: b\n    profiles: [x]\n    restart: sometimes\n";
    assert_eq!(errors(bad, &[]).len(), 1);
}

#[test]
fn profiles_are_no_part_of_a_service_config_and_all_disabled_is_a_warning() {
    // Adding `profiles:` to a running service does not recreate it.
    let plain = load_profiles("services:\n  a:\n    image: a\n", &[], &[]);
    let profiled = load_profiles(
        "services:\n  a:\n    image: a\n    profiles: [p]\n",
        &["p"],
        &[],
    );
    let hash = |l: &Result<Loaded, Vec<Diagnostic>>| {
        l.as_ref()
            .ok()
            .map(|l| config_hash(&l.project.services["a"]))
    };
    assert!(hash(&plain).is_some());
    assert_eq!(hash(&plain), hash(&profiled));

    let none = load_profiles(
        "services:\n  a:\n    image: a\n    profiles: [p]\n",
        &[],
        &[],
    );
    match none {
        Ok(l) => {
            assert!(l.project.services.is_empty());
            let warnings: BTreeSet<String> = l.warnings.iter().map(|w| w.to_string()).collect();
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains("every service is disabled")),
                "{warnings:?}"
            );
        }
        Err(e) => panic!("{}", show(&e)),
    }
    let errs = errors("services:\n  a:\n    image: a\n    profiles: p\n", &[]);
    assert_eq!(
        errs,
        ["services.a.profiles (line 4): expected a list, got a string"]
    );
}
