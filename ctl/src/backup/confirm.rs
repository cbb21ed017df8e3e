//! Asking before `backup restore` and `backup rm` change anything: on a terminal the question
//! goes to stderr and the answer comes from stdin (only `y` or `yes` goes on); `--yes` skips it;
//! without `--yes` and with stdin not a terminal, nothing is done (a script must say `--yes`).
//!
//! The restore question says what the restore will do, from the backup's declaration in the
//! stack's compose file as the server holds it now (the services it stops, the volumes it
//! replaces, or the restore command it runs), else from the backup's manifest.

use std::collections::BTreeMap;
use std::io::BufRead;

use noco_compose::backups::{BackupContent, BackupSpec};
use noco_compose::model::{MountKind, Project};
use noco_compose::{FileSource, LoadOptions};
use noco_proto::v1 as pb;
use noco_proto::v1::control_client::ControlClient;
use serde_json::Value;
use tonic::transport::Channel;

use crate::error::CtlError;
use crate::output::{errln, human_bytes, or_dash, write_stderr};
use crate::view::backup::BackupView;

/// Whether `backup <command>` asks before it goes on to `verb` (`restore`, `remove`): not
/// with `--yes`; refused (exit 2, nothing done) when there is no terminal to ask on.
pub fn ask_first(
    yes: bool,
    stdin_is_terminal: bool,
    command: &str,
    verb: &str,
) -> Result<bool, CtlError> {
    match (yes, stdin_is_terminal) {
        (true, _) => Ok(false),
        (false, true) => Ok(true),
        (false, false) => Err(CtlError::Local(format!(
            "backup {command} asks before it changes anything, and stdin is not a terminal to ask on: pass --yes to {verb} without asking (nothing was changed)"
        ))),
    }
}

/// Whether an answer goes on: `y` or `yes`, in any case; anything else (an empty line too) does
/// not.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Ask `question` on stderr (`… [y/N] `) and read the answer from stdin.
pub async fn prompt(question: &str) -> Result<bool, CtlError> {
    write_stderr(format_args!("{question} [y/N] "));
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| CtlError::Local(format!("reading the answer: {e}")))?
    .map_err(|e| CtlError::Local(format!("reading the answer from stdin: {e}")))?;
    // End of input (Ctrl-D) is a no, on a line of its own.
    if answer.is_empty() {
        errln!("");
    }
    Ok(is_yes(&answer))
}

/// `shop/db on web-1, 2023-11-14T22:13:20Z, 12.3 MiB, complete`.
pub fn summary(b: &BackupView) -> String {
    let mut parts = vec![
        format!("{} on {}", b.stack_name(), or_dash(&b.host)),
        b.time().to_string(),
    ];
    if b.size > 0 {
        parts.push(human_bytes(b.size));
    }
    parts.push(b.state.to_string());
    parts.join(", ")
}

/// What `backup rm` asks.
pub fn remove_question(b: &BackupView) -> String {
    format!(
        "remove backup {} ({})? its archive is deleted from the server and it leaves the catalog; continue?",
        b.id,
        summary(b)
    )
}

/// What a restore will do on its host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestorePlan {
    /// The host it runs on (name or id as given, else the backup's host).
    pub host: String,
    /// Services stopped while it runs (and started again after).
    pub stop: Vec<String>,
    /// Volumes replaced (a volume backup).
    pub volumes: Vec<String>,
    /// The restore command and the service it runs in (a dump backup); `None` when unknown.
    pub command: Option<(String, Vec<String>)>,
    /// The plan comes from the backup's declaration (`false`: from its manifest, or nothing).
    pub declared: bool,
}

/// The plan for restoring `backup` on `to_host` (empty: its own host): from the stack's
/// compose file as the server holds it now, else from the backup's manifest.
pub async fn restore_plan(
    ctl: &mut ControlClient<Channel>,
    backup: &BackupView,
    to_host: &str,
) -> RestorePlan {
    let host = if to_host.is_empty() {
        or_dash(&backup.host)
    } else {
        to_host.to_string()
    };
    let stack = ctl
        .get_stack(pb::GetStackRequest {
            name: backup.stack.clone(),
            revision: String::new(),
        })
        .await
        .ok()
        .map(tonic::Response::into_inner);
    let declared = stack.and_then(|s| {
        let project = load_project(&backup.stack, &s)?;
        let spec = project.backups.iter().find(|b| b.name == backup.name)?;
        Some(plan_from_spec(spec, &project))
    });
    let mut plan = declared
        .or_else(|| plan_from_manifest(&backup.manifest))
        .unwrap_or_default();
    plan.host = host;
    plan
}

/// A [`FileSource`] that has every file, empty: the server does not send shipped files, and the
/// plan needs none of their content.
struct EmptyFiles;

impl FileSource for EmptyFiles {
    fn read(&self, _path: &str) -> Result<String, String> {
        Ok(String::new())
    }
}

/// The stack's project from the server's compose file (variables as the server shows them,
/// masked): `None` when it does not load so.
fn load_project(stack: &str, r: &pb::GetStackResponse) -> Option<Project> {
    let compose = String::from_utf8_lossy(&r.compose);
    let variables: BTreeMap<String, String> =
        r.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let opts = LoadOptions {
        project_name: Some(stack),
        variables: &variables,
        files: &EmptyFiles,
        profiles: &[],
        directory: None,
    };
    noco_compose::load(&compose, &opts)
        .ok()
        .map(|loaded| loaded.project)
}

/// What a declared backup's restore does: a volume backup stops the services that mount its
/// volumes and those it names under `stop`, and replaces the volumes; a dump backup stops
/// those under `stop` and runs its restore command in its service.
pub fn plan_from_spec(spec: &BackupSpec, project: &Project) -> RestorePlan {
    let mut stop = spec.stop.clone();
    let mut plan = RestorePlan {
        declared: true,
        ..RestorePlan::default()
    };
    match &spec.content {
        BackupContent::Volumes { volumes } => {
            for service in project.services.values() {
                let mounts_one = service.volumes.iter().any(|m| {
                    matches!(&m.kind, MountKind::Volume { source: Some(v), .. } if volumes.contains(v))
                });
                if mounts_one {
                    stop.push(service.name.clone());
                }
            }
            plan.volumes = volumes.clone();
        }
        BackupContent::Dump {
            service, restore, ..
        } => {
            plan.command = restore.clone().map(|argv| (service.clone(), argv));
        }
    }
    stop.sort();
    stop.dedup();
    plan.stop = stop;
    plan
}

/// The plan as far as the manifest tells it (`service`, `volumes`, `stop`, and `restore` or
/// `commands.restore`); `None` when it tells nothing.
pub fn plan_from_manifest(manifest: &Value) -> Option<RestorePlan> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    let volumes = strings(manifest.get("volumes"));
    let mut stop = strings(manifest.get("stop"));
    stop.sort();
    stop.dedup();
    let restore = manifest
        .get("restore")
        .or_else(|| manifest.get("commands").and_then(|c| c.get("restore")));
    let restore = strings(restore);
    let service = manifest.get("service").and_then(Value::as_str);
    let command = match service {
        Some(service) if !restore.is_empty() => Some((service.to_string(), restore)),
        _ => None,
    };
    if volumes.is_empty() && stop.is_empty() && command.is_none() {
        return None;
    }
    Some(RestorePlan {
        host: String::new(),
        stop,
        volumes,
        command,
        declared: false,
    })
}

/// What `backup restore` asks: `restore will stop web, db on web-1 and replace volumes media,
/// config with backup … (…); continue?`.
pub fn restore_question(b: &BackupView, plan: &RestorePlan) -> String {
    let from = format!("backup {} ({})", b.id, b.time());
    // The host is named once, in the first thing said.
    let mut host_said = false;
    let mut on_host = || {
        if std::mem::replace(&mut host_said, true) {
            String::new()
        } else {
            format!(" on {}", plan.host)
        }
    };
    let mut does = Vec::new();
    if !plan.stop.is_empty() {
        does.push(format!("stop {}{}", plan.stop.join(", "), on_host()));
    }
    if !plan.volumes.is_empty() {
        does.push(format!(
            "replace volume{} {}{} with {from}",
            if plan.volumes.len() == 1 { "" } else { "s" },
            plan.volumes.join(", "),
            on_host()
        ));
    }
    if let Some((service, argv)) = &plan.command {
        does.push(format!(
            "run `{}` in {service}{} with {from} on its stdin",
            argv.join(" "),
            on_host()
        ));
    }
    let mut text = if does.is_empty() {
        format!(
            "restore will overwrite the data of {}{} with {from}",
            b.stack_name(),
            on_host()
        )
    } else {
        format!("restore will {}", does.join(" and "))
    };
    if !plan.declared {
        text.push_str(&format!(
            " (the stack's compose file on the server does not declare backup {}: said from the backup itself)",
            b.name
        ));
    }
    format!("{text}; continue?")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::view::backup::tests::info;

    #[test]
    fn yes_goes_on_without_asking_a_terminal_is_asked_and_otherwise_nothing_is_done() {
        assert!(!ask_first(true, false, "restore", "restore").unwrap());
        assert!(!ask_first(true, true, "restore", "restore").unwrap());
        assert!(ask_first(false, true, "restore", "restore").unwrap());
        let e = ask_first(false, false, "rm", "remove").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().starts_with("backup rm asks before"), "{e}");
        assert!(e.to_string().contains("pass --yes to remove"), "{e}");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
    }

    #[test]
    fn only_y_or_yes_is_a_yes() {
        for yes in ["y", "Y", "yes", "YES", " yes \n", "y\n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "N", "yess", "ye", "sure", "y es"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    fn project(yaml: &str) -> Project {
        let files = BTreeMap::new();
        let variables = BTreeMap::new();
        let opts = LoadOptions {
            project_name: Some("shop"),
            variables: &variables,
            files: &files,
            profiles: &[],
            directory: None,
        };
        match noco_compose::load(yaml, &opts) {
            Ok(l) => l.project,
            Err(e) => panic!("{e:?}"),
        }
    }

    const COMPOSE: &str = "\
services:
  web:
    image: nginx
    volumes: [media:/srv/media]
  worker:
    image: app
    volumes: [config:/etc/app, scratch:/tmp/x]
  db:
    image: postgres
volumes:
  media: {}
  config: {}
  scratch: {}
x-noco:
  backups:
    files:
      volumes: [media, config]
      stop: [db]
    db:
      service: db
      dump: [pg_dump, -U, app]
      restore: [pg_restore, -U, app, -d, app]
      stop: [web]
";

    #[test]
    fn a_volume_restore_stops_the_services_mounting_its_volumes_and_its_stop_list() {
        let p = project(COMPOSE);
        let spec = p.backups.iter().find(|b| b.name == "files").unwrap();
        let mut plan = plan_from_spec(spec, &p);
        plan.host = "web-2".into();
        assert_eq!(plan.stop, ["db", "web", "worker"]);
        assert_eq!(plan.volumes, ["config", "media"]);
        assert_eq!(plan.command, None);
        let mut b = BackupView::from(&info());
        b.name = "files".into();
        assert_eq!(
            restore_question(&b, &plan),
            "restore will stop db, web, worker on web-2 and replace volumes config, media with backup shop.db.20231114T221320Z.1a2b3c4d (2023-11-14T22:13:20Z); continue?"
        );
    }

    #[test]
    fn a_dump_restore_names_its_command_and_service() {
        let p = project(COMPOSE);
        let spec = p.backups.iter().find(|b| b.name == "db").unwrap();
        let mut plan = plan_from_spec(spec, &p);
        plan.host = "web-1".into();
        assert_eq!(plan.stop, ["web"]);
        let b = BackupView::from(&info());
        assert_eq!(
            restore_question(&b, &plan),
            "restore will stop web on web-1 and run `pg_restore -U app -d app` in db with backup shop.db.20231114T221320Z.1a2b3c4d (2023-11-14T22:13:20Z) on its stdin; continue?"
        );
        plan.stop.clear();
        assert_eq!(
            restore_question(&b, &plan),
            "restore will run `pg_restore -U app -d app` in db on web-1 with backup shop.db.20231114T221320Z.1a2b3c4d (2023-11-14T22:13:20Z) on its stdin; continue?"
        );
    }

    #[test]
    fn without_the_declaration_the_manifest_says_what_it_can() {
        let m = json!({"service": "db", "commands": {"restore": ["pg_restore"]}, "stop": ["web"]});
        let mut plan = plan_from_manifest(&m).unwrap();
        plan.host = "web-1".into();
        assert_eq!(plan.command, Some(("db".into(), vec!["pg_restore".into()])));
        let q = restore_question(&BackupView::from(&info()), &plan);
        assert!(
            q.starts_with("restore will stop web on web-1 and run `pg_restore` in db"),
            "{q}"
        );
        assert!(q.contains("does not declare backup db"), "{q}");
        assert!(plan_from_manifest(&json!({"members": []})).is_none());
        let plan = RestorePlan {
            host: "web-1".into(),
            ..RestorePlan::default()
        };
        assert_eq!(
            restore_question(&BackupView::from(&info()), &plan),
            "restore will overwrite the data of shop/db on web-1 with backup shop.db.20231114T221320Z.1a2b3c4d (2023-11-14T22:13:20Z) (the stack's compose file on the server does not declare backup db: said from the backup itself); continue?"
        );
    }

    #[test]
    fn the_servers_compose_file_loads_with_masked_variables_and_no_shipped_files() {
        let r = pb::GetStackResponse {
            compose: b"services:\n  db:\n    image: postgres:${TAG}\n    env_file: [db.env]\nx-noco:\n  backups:\n    db: {service: db, dump: [pg_dump]}\n".to_vec(),
            env: [("TAG".to_string(), "****".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let p = load_project("shop", &r).unwrap();
        assert_eq!(p.backups.len(), 1);
    }

    #[test]
    fn the_remove_question_describes_the_backup() {
        assert_eq!(
            remove_question(&BackupView::from(&info())),
            "remove backup shop.db.20231114T221320Z.1a2b3c4d (shop/db on web-1, 2023-11-14T22:13:20Z, 12.3 MiB, complete)? its archive is deleted from the server and it leaves the catalog; continue?"
        );
    }
}
