//! A compose stack under test: a compose file (and the files it ships) in a temporary directory,
//! driven through the real `noco-agent compose …` commands, under a project name unique to the
//! test, removed from Docker when the test ends.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bollard::models::ContainerInspectResponse;

use crate::docker::{cleanup_project, with_docker};
use crate::{bin, path_str};

#[derive(Debug)]
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub project: String,
}

/// A project name unique to this run: `<prefix>` plus a few random hex digits.
pub fn unique_project(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{:05x}{}",
        nanos & 0xfffff,
        std::process::id() % 1000
    )
}

impl Stack {
    /// A stack whose compose file is `yaml`, with `${IMAGE}` available as a variable holding the
    /// test workload image.
    pub fn new(prefix: &str, yaml: &str) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let project = unique_project(prefix);
        cleanup_project(&project);
        let stack = Stack { dir, project };
        stack.write_compose(yaml);
        stack
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("compose.yaml")
    }

    pub fn write_compose(&self, yaml: &str) {
        std::fs::write(self.file(), yaml).expect("writing compose.yaml");
    }

    /// Write a file the stack ships (relative to the stack directory).
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("stack subdirectory");
        }
        std::fs::write(p, content).expect("writing a stack file");
    }

    /// `noco-agent compose <sub> <compose.yaml> -p <project> --var IMAGE=<testapp> <extra…>`,
    /// to be run.
    pub fn command(&self, sub: &str, extra: &[&str]) -> Command {
        let image = crate::docker::testapp_image();
        let file = self.file();
        let mut cmd = Command::new(bin("noco-agent"));
        cmd.args(["compose", sub, path_str(&file), "-p", &self.project])
            .args(["--var", &format!("IMAGE={image}")])
            .args(extra);
        cmd
    }

    /// [`Stack::command`], run to its end.
    pub fn run(&self, sub: &str, extra: &[&str]) -> Output {
        self.command(sub, extra)
            .output()
            .expect("running noco-agent compose")
    }

    /// Like [`Stack::run`] but requires success; returns stdout.
    pub fn ok(&self, sub: &str, extra: &[&str]) -> String {
        let out = self.run(sub, extra);
        assert!(
            out.status.success(),
            "noco-agent compose {sub} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `noco-agent compose up`, required to succeed.
    pub fn up(&self) -> String {
        self.ok("up", &["--wait-timeout", "60s"])
    }

    /// `noco-agent compose ps -o json`.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        let out = Command::new(bin("noco-agent"))
            .args(["compose", "ps", "-p", &self.project, "-o", "json"])
            .output()
            .expect("running noco-agent compose ps");
        assert!(
            out.status.success(),
            "ps failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_slice(&out.stdout).expect("ps JSON") {
            serde_json::Value::Array(a) => a,
            other => panic!("ps printed {other}"),
        }
    }

    /// Container id by container name (`<project>-<service>-<n>`).
    pub fn ids(&self) -> std::collections::BTreeMap<String, String> {
        self.ps()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["id"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn container(&self, service: &str, n: u32) -> String {
        format!("{}-{service}-{n}", self.project)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        cleanup_project(&self.project);
    }
}

/// `docker inspect` of a container.
pub fn inspect(name: &str) -> ContainerInspectResponse {
    with_docker(|docker| async move { Ok(docker.inspect_container(name, None).await?) })
        .unwrap_or_else(|e| panic!("inspecting {name}: {e:#}"))
}
