//! `nococtl stack …`: apply (validated locally first), ls, show, diff and rm.

mod diff;
mod source;

use std::path::Path;

use noco_compose::revision::RevisionSource;
use noco_compose::{Diagnostic, Loaded};
use noco_proto::v1 as pb;

use crate::cli::{self, StackCmd, StackSource};
use crate::client;
use crate::error::{CtlError, refused};
use crate::output::{self, Format, errln, or_dash, outln, short_revision};
use crate::view::stack::{AppliedView, RemovedView, StackSummaryView, StackView};

use self::diff::DiffView;
use self::source::LocalStack;

pub async fn run(
    cmd: StackCmd,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    match cmd {
        StackCmd::Apply {
            stack,
            legacy_name,
            source,
            selector,
            dry_run,
        } => {
            let (name, mut warnings) = cli::stack_name(stack, legacy_name, "stack apply")?;
            let (source, more) = source.resolve()?;
            warnings.extend(more);
            cli::warn(&warnings);
            // As the parser read it (trimmed); empty keeps an existing stack's selector.
            let selector = selector.map(|s| s.to_string()).unwrap_or_default();
            apply(&source, name, selector, dry_run, path, server, out).await
        }
        StackCmd::Ls => ls(path, server, out).await,
        StackCmd::Show { stack, revision } => show(stack, revision, path, server, out).await,
        StackCmd::Diff { stack, source } => {
            let source = source.source()?;
            diff(&source, stack, path, server, out).await
        }
        StackCmd::Rm { stack } => rm(stack, path, server, out).await,
    }
}

/// Read and validate the local stack; warnings and problems go to stderr, and when there are
/// problems nothing is sent.
pub(crate) fn read_valid(
    source: &StackSource,
    name: &str,
) -> Result<(LocalStack, Loaded), CtlError> {
    let mut local = source::read(source)?;
    match local.load(name) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                errln!("warning: {}", source::located(&local.compose_path, w));
            }
            local.ship_objects(&loaded.project)?;
            Ok((local, loaded))
        }
        Err(problems) => {
            for p in &problems {
                errln!("{p}");
            }
            Err(CtlError::Local(format!(
                "{} is not valid ({} problem{} above): fix it and run again; nothing was sent to the server",
                local.compose_path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )))
        }
    }
}

async fn apply(
    source: &StackSource,
    name: String,
    selector: String,
    dry_run: bool,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (local, loaded) = read_valid(source, &name)?;
    let (_, mut ctl) = client::open(path, server).await?;
    let r = ctl
        .apply_stack(pb::ApplyStackRequest {
            name: name.clone(),
            selector,
            compose: local.compose.clone().into_bytes(),
            env: local.env.clone().into_iter().collect(),
            files: wire_files(&local),
            dry_run,
        })
        .await
        .map_err(|s| refused(&format!("apply stack {name}"), s))?
        .into_inner();
    let warnings = merge_warnings(&local.compose_path, &loaded.warnings, &r.warnings);
    let r = AppliedView::new(&name, dry_run, &r, warnings);
    match out {
        Format::Json => output::json(&r),
        Format::Table => {
            if dry_run {
                outln!(
                    "stack {name} (dry run, nothing stored): revision {}{}",
                    r.revision,
                    if r.unchanged { ", unchanged" } else { "" }
                );
            } else if r.unchanged {
                outln!("stack {name}: unchanged (revision {})", r.revision);
            } else {
                outln!("stack {name}: revision {}", r.revision);
            }
            if r.hosts.is_empty() {
                outln!("assigned to no host: no enrolled host's labels match the selector");
            } else {
                outln!(
                    "assigned to {} host{}: {}",
                    r.hosts.len(),
                    if r.hosts.len() == 1 { "" } else { "s" },
                    r.hosts.join(", ")
                );
            }
            // The local warnings were printed when the file was checked.
            for w in r.warnings.iter().skip(loaded.warnings.len()) {
                outln!("warning: {w}");
            }
            if !dry_run && !r.hosts.is_empty() {
                errln!("follow the rollout with: nococtl status {name} -w");
            }
        }
    }
    Ok(())
}

/// The shipped files as sent to the server.
pub(crate) fn wire_files(local: &LocalStack) -> Vec<pb::StackFile> {
    local
        .files
        .iter()
        .map(|f| pb::StackFile {
            path: f.path.clone(),
            content: f.content.clone(),
            mode: f.mode,
        })
        .collect()
}

/// The local warnings (with file and line), then the server's that do not repeat one of them.
fn merge_warnings(file: &Path, local: &[Diagnostic], server: &[String]) -> Vec<String> {
    let mut all: Vec<String> = local.iter().map(|d| source::located(file, d)).collect();
    for w in server {
        let repeated = local
            .iter()
            .any(|d| w.contains(&d.message) && (d.path.is_empty() || w.contains(&d.path)));
        if !repeated {
            all.push(w.clone());
        }
    }
    all
}

async fn ls(path: &Path, server: Option<&str>, out: Format) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let stacks = ctl
        .list_stacks(pb::ListStacksRequest {})
        .await
        .map_err(|s| refused("list stacks", s))?
        .into_inner()
        .stacks;
    let stacks: Vec<StackSummaryView> = stacks.iter().map(StackSummaryView::from).collect();
    output::list(out, &stacks);
    if out == Format::Table {
        for s in &stacks {
            for line in s.pinned_lines() {
                outln!("{}: {line}", s.name);
            }
        }
    }
    Ok(())
}

async fn show(
    name: String,
    revision: Option<String>,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let r = ctl
        .get_stack(pb::GetStackRequest {
            name: name.clone(),
            revision: revision.unwrap_or_default(),
        })
        .await
        .map_err(|s| refused(&format!("show stack {name}"), s))?
        .into_inner();
    let r = StackView::from(&r);
    match out {
        Format::Json => output::json(&r),
        Format::Table => {
            let current = if r.revision == r.current_revision {
                " (current)".to_string()
            } else {
                format!(" (current: {})", r.current_revision)
            };
            outln!("stack:     {}", r.name);
            outln!("revision:  {}{current}", r.revision);
            outln!("selector:  {}", or_dash(&r.selector));
            outln!("hosts:     {} matched, {} healthy", r.hosts, r.healthy);
            for p in &r.pinned {
                outln!(
                    "held:      {} runs {} (held by {})",
                    p.host,
                    p.revision,
                    p.by
                );
            }
            outln!("updated:   {}", r.updated);
            outln!("\ncompose file:");
            for line in r.compose.lines() {
                outln!("  {line}");
            }
            outln!("\nenv (as the server shows it: values masked):");
            if r.env.is_empty() {
                outln!("  -");
            }
            for (k, v) in &r.env {
                outln!("  {k}={v}");
            }
            outln!("\nfiles:");
            if r.files.is_empty() {
                outln!("  -");
            }
            for f in &r.files {
                outln!("  {f}");
            }
            outln!("\nhistory:");
            output::listed_table(&r.history);
        }
    }
    Ok(())
}

async fn diff(
    source: &StackSource,
    name: String,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (local, loaded) = read_valid(source, &name)?;
    let digest = RevisionSource {
        compose: local.compose.clone().into_bytes(),
        env: local.env.clone(),
        files: local.files.clone(),
    }
    .digest();
    let (_, mut ctl) = client::open(path, server).await?;
    let current = match ctl
        .get_stack(pb::GetStackRequest {
            name: name.clone(),
            revision: String::new(),
        })
        .await
    {
        Ok(r) => Some(r.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => return Err(refused(&format!("read stack {name}"), s)),
    };

    let (old_project, current_revision, old_env, old_files) = match &current {
        None => (None, String::new(), Vec::new(), Vec::new()),
        Some(r) => {
            // Loaded with the local variables and files: the server masks variable values and
            // does not send file contents.
            let label = format!("{name}@{}", short_revision(&r.revision));
            let text = String::from_utf8_lossy(&r.compose);
            let old = source::load_compose(
                Path::new(&label),
                &text,
                &name,
                &local.env,
                &local.files,
            )
            .map_err(|problems| {
                for p in &problems {
                    errln!("{p}");
                }
                CtlError::Local(format!(
                    "the current revision of stack {name} ({}) does not load with the local --env-file variables and --ship files (problems above), so it cannot be compared",
                    r.revision
                ))
            })?;
            (
                Some(old.project),
                r.revision.clone(),
                r.env.keys().cloned().collect(),
                r.files.clone(),
            )
        }
    };
    let view = DiffView {
        exists: current.is_some(),
        unchanged: digest == current_revision,
        changes: diff::diff_projects(old_project.as_ref(), &loaded.project),
        env: diff::names_diff(
            old_env.iter().map(String::as_str),
            local.env.keys().map(String::as_str),
        ),
        files: diff::names_diff(
            old_files.iter().map(String::as_str),
            local.files.iter().map(|f| f.path.as_str()),
        ),
        name,
        current_revision,
        revision: digest,
    };
    match out {
        Format::Json => output::json(&view),
        Format::Table => {
            outln!("{}", view.heading());
            if view.unchanged {
                outln!("no changes");
            } else if view.nothing_shown() {
                outln!(
                    "no changes to services, networks, volumes, secrets, configs, variable names or file names; variable values or file contents differ (the server does not send them, so they are not shown)"
                );
            }
            for line in view.lines() {
                outln!("{line}");
            }
        }
    }
    Ok(())
}

async fn rm(name: String, path: &Path, server: Option<&str>, out: Format) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let r = ctl
        .remove_stack(pb::RemoveStackRequest { name: name.clone() })
        .await
        .map_err(|s| refused(&format!("remove stack {name}"), s))?
        .into_inner();
    let r = RemovedView::new(&name, &r);
    match out {
        Format::Json => output::json(&r),
        Format::Table => {
            if r.hosts.is_empty() {
                outln!("removed stack {name}; it was assigned to no host");
            } else {
                outln!(
                    "removed stack {name} from {} host{}: {}",
                    r.hosts.len(),
                    if r.hosts.len() == 1 { "" } else { "s" },
                    r.hosts.join(", ")
                );
                outln!(
                    "its volumes are kept on those hosts (docker volume rm them there if their data is no longer needed)"
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_warnings_that_repeat_a_local_one_are_shown_once() {
        let local = [Diagnostic::new(
            "version",
            Some(1),
            "\"version\" is obsolete and ignored",
        )];
        let server = [
            "version (line 1): \"version\" is obsolete and ignored".to_string(),
            "selector matches no host".to_string(),
        ];
        let all = merge_warnings(Path::new("compose.yaml"), &local, &server);
        assert_eq!(
            all,
            [
                "compose.yaml:1: version: \"version\" is obsolete and ignored",
                "selector matches no host"
            ]
        );
    }
}
