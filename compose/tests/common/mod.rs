//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use noco_compose::{Diagnostic, LoadOptions, Loaded, NoFiles, load, model};

pub fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Load with project name "test", the given variables and no files.
pub fn load_with(yaml: &str, variables: &[(&str, &str)]) -> Result<Loaded, Vec<Diagnostic>> {
    let variables = vars(variables);
    load(
        yaml,
        &LoadOptions {
            project_name: Some("test"),
            variables: &variables,
            files: &NoFiles,
            profiles: &[],
            directory: None,
        },
    )
}

/// Load a file that must be valid.
pub fn project(yaml: &str) -> model::Project {
    match load_with(yaml, &[]) {
        Ok(loaded) => loaded.project,
        Err(errors) => panic!(
            "expected a valid file, got:\n{}\n---\n{yaml}",
            show(&errors)
        ),
    }
}

/// Load a file that must be refused; its errors.
pub fn errors(yaml: &str) -> Vec<Diagnostic> {
    match load_with(yaml, &[]) {
        Ok(loaded) => panic!(
            "expected errors, got a project {:?}\n---\n{yaml}",
            loaded.project
        ),
        Err(errors) => errors,
    }
}

/// The one service of a single-service file.
pub fn service(yaml: &str) -> model::Service {
    let project = project(yaml);
    match project.services.into_values().next() {
        Some(s) => s,
        None => panic!("no service in {yaml}"),
    }
}

pub fn show(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Read a seed stack from the repository's one copy, integration-tests/fixtures/seeds.
pub fn seed(file: &str) -> String {
    let path = format!(
        "{}/../integration-tests/fixtures/seeds/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!("read {path}: {e}"),
    }
}
