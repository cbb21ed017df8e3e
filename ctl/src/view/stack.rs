//! Stacks: the list (`stack ls`), one stack with its history (`stack show`), and what
//! `stack apply` and `stack rm` did.

use std::collections::BTreeMap;

use noco_proto::v1 as pb;
use serde::Serialize;

use crate::output::{Listed, or_dash, rfc3339_ms, short_revision};

/// A stack in the list.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StackSummaryView {
    pub name: String,
    pub selector: String,
    /// The current revision.
    pub revision: String,
    /// Hosts the selector matches.
    pub hosts: u32,
    /// Of those, hosts that run the revision converged and healthy.
    pub healthy: u32,
    /// RFC 3339.
    pub updated: String,
    pub updated_unix_ms: i64,
    /// Hosts the stack's last rollout holds on another revision (failed, aborted or running).
    pub pinned: Vec<PinnedView>,
}

/// A host held on a revision other than its stack's, and by what.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PinnedView {
    pub host: String,
    pub revision: String,
    pub by: String,
}

impl From<&pb::StackSummary> for StackSummaryView {
    fn from(s: &pb::StackSummary) -> Self {
        let pb::StackSummary {
            name,
            selector,
            revision,
            hosts,
            healthy,
            updated_unix_ms,
            pinned,
        } = s;
        StackSummaryView {
            name: name.clone(),
            selector: selector.clone(),
            revision: revision.clone(),
            hosts: *hosts,
            healthy: *healthy,
            updated: rfc3339_ms(*updated_unix_ms),
            updated_unix_ms: *updated_unix_ms,
            pinned: pinned
                .iter()
                .map(|p| PinnedView {
                    host: p.host.clone(),
                    revision: p.revision.clone(),
                    by: p.by.clone(),
                })
                .collect(),
        }
    }
}

impl StackSummaryView {
    /// What the REVISION cell says: the revision, and how many hosts a rollout holds elsewhere.
    fn revision_cell(&self) -> String {
        match self.pinned.len() {
            0 => short_revision(&self.revision),
            n => format!("{} ({n} held elsewhere)", short_revision(&self.revision)),
        }
    }

    /// One line per held host, for the lines under a table or `stack show`.
    pub fn pinned_lines(&self) -> Vec<String> {
        self.pinned
            .iter()
            .map(|p| {
                format!(
                    "{} runs {} (held by {}); `nococtl stack apply` or `nococtl rollout start` with the stack's revision brings it back",
                    p.host,
                    short_revision(&p.revision),
                    p.by
                )
            })
            .collect()
    }
}

impl Listed for StackSummaryView {
    const HEADER: &'static [&'static str] = &["NAME", "REVISION", "SELECTOR", "HOSTS", "HEALTHY"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.revision_cell(),
            or_dash(&self.selector),
            self.hosts.to_string(),
            format!("{}/{}", self.healthy, self.hosts),
        ]
    }
}

/// One revision of a stack (`stack show`): the stack, the revision's compose file, variable
/// names (values masked by the server), file names, and the stack's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackView {
    pub name: String,
    /// The revision shown.
    pub revision: String,
    /// The stack's current revision.
    pub current_revision: String,
    pub selector: String,
    pub hosts: u32,
    pub healthy: u32,
    /// RFC 3339.
    pub updated: String,
    pub updated_unix_ms: i64,
    /// Hosts the stack's last rollout holds on another revision.
    pub pinned: Vec<PinnedView>,
    pub compose: String,
    pub env: BTreeMap<String, String>,
    pub files: Vec<String>,
    pub history: Vec<RevisionView>,
}

impl From<&pb::GetStackResponse> for StackView {
    fn from(r: &pb::GetStackResponse) -> Self {
        let pb::GetStackResponse {
            summary,
            revision,
            compose,
            env,
            files,
            history,
        } = r;
        let summary = summary
            .as_ref()
            .map(StackSummaryView::from)
            .unwrap_or_default();
        StackView {
            name: summary.name,
            revision: revision.clone(),
            current_revision: summary.revision,
            selector: summary.selector,
            hosts: summary.hosts,
            healthy: summary.healthy,
            updated: summary.updated,
            updated_unix_ms: summary.updated_unix_ms,
            pinned: summary.pinned,
            compose: String::from_utf8_lossy(compose).into_owned(),
            env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            files: files.clone(),
            history: history.iter().map(RevisionView::from).collect(),
        }
    }
}

/// An entry of a stack's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevisionView {
    pub revision: String,
    pub selector: String,
    /// RFC 3339.
    pub applied: String,
    pub applied_unix_ms: i64,
    pub applied_by: String,
}

impl From<&pb::RevisionEntry> for RevisionView {
    fn from(e: &pb::RevisionEntry) -> Self {
        let pb::RevisionEntry {
            revision,
            selector,
            applied_unix_ms,
            applied_by,
        } = e;
        RevisionView {
            revision: revision.clone(),
            selector: selector.clone(),
            applied: rfc3339_ms(*applied_unix_ms),
            applied_unix_ms: *applied_unix_ms,
            applied_by: applied_by.clone(),
        }
    }
}

impl Listed for RevisionView {
    const HEADER: &'static [&'static str] = &["REVISION", "SELECTOR", "APPLIED", "BY"];

    fn cells(&self) -> Vec<String> {
        vec![
            short_revision(&self.revision),
            or_dash(&self.selector),
            self.applied.clone(),
            or_dash(&self.applied_by),
        ]
    }
}

/// What `stack apply` stored (or, with `--dry-run`, would store).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedView {
    pub name: String,
    pub revision: String,
    pub unchanged: bool,
    pub dry_run: bool,
    /// The hosts the stack is assigned to.
    pub hosts: Vec<String>,
    /// nococtl's own warnings, then the server's that do not repeat one of them.
    pub warnings: Vec<String>,
}

impl AppliedView {
    pub fn new(
        name: &str,
        dry_run: bool,
        r: &pb::ApplyStackResponse,
        warnings: Vec<String>,
    ) -> Self {
        // The server's warnings are in `warnings`, merged with the local ones.
        let pb::ApplyStackResponse {
            revision,
            unchanged,
            hosts,
            warnings: _,
        } = r;
        AppliedView {
            name: name.to_string(),
            revision: revision.clone(),
            unchanged: *unchanged,
            dry_run,
            hosts: hosts.clone(),
            warnings,
        }
    }
}

/// What `stack rm` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemovedView {
    pub name: String,
    /// The hosts it was removed from.
    pub hosts: Vec<String>,
    /// Always true: removing a stack keeps its volumes on the hosts.
    pub volumes_kept: bool,
}

impl RemovedView {
    pub fn new(name: &str, r: &pb::RemoveStackResponse) -> Self {
        let pb::RemoveStackResponse { hosts } = r;
        RemovedView {
            name: name.to_string(),
            hosts: hosts.clone(),
            volumes_kept: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const R1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const R2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn summary() -> pb::StackSummary {
        pb::StackSummary {
            name: "shop".into(),
            selector: "role=web".into(),
            revision: R2.into(),
            hosts: 3,
            healthy: 2,
            updated_unix_ms: 1_700_000_000_000,
            pinned: Vec::new(),
        }
    }

    #[test]
    fn hosts_a_rollout_holds_elsewhere_show_in_the_row_and_below_it() {
        let mut s = summary();
        s.pinned = vec![pb::PinnedHost {
            host: "web-2".into(),
            revision: R1.into(),
            by: "rollout 1f2e failed: web-2: service web: exited".into(),
        }];
        let v = StackSummaryView::from(&s);
        assert!(
            v.cells()[1].ends_with("(1 held elsewhere)"),
            "{:?}",
            v.cells()
        );
        let lines = v.pinned_lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("web-2 runs ") && lines[0].contains("rollout 1f2e failed"),
            "{lines:?}"
        );
        assert_eq!(
            serde_json::to_value(&v).unwrap()["pinned"][0]["host"],
            "web-2"
        );
    }

    #[test]
    fn a_stack_summary_shows_as_json_and_as_a_row() {
        let s = StackSummaryView::from(&summary());
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "name": "shop", "selector": "role=web", "revision": R2, "hosts": 3, "healthy": 2,
                "updated": "2023-11-14T22:13:20Z", "updated_unix_ms": 1_700_000_000_000_i64, "pinned": [],
            })
        );
        assert_eq!(s.cells(), ["shop", "222222222222", "role=web", "3", "2/3"]);
    }

    #[test]
    fn a_stack_shows_its_revision_the_current_one_and_its_history() {
        let r = pb::GetStackResponse {
            summary: Some(summary()),
            revision: R1.into(),
            compose: b"services: {}\n".to_vec(),
            env: [("TOKEN".to_string(), "****".to_string())].into(),
            files: vec!["nginx.conf".into()],
            history: vec![pb::RevisionEntry {
                revision: R1.into(),
                selector: "role=web".into(),
                applied_unix_ms: 1_600_000_000_000,
                applied_by: String::new(),
            }],
        };
        let v = StackView::from(&r);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({
                "name": "shop", "revision": R1, "current_revision": R2, "selector": "role=web",
                "hosts": 3, "healthy": 2, "updated": "2023-11-14T22:13:20Z",
                "updated_unix_ms": 1_700_000_000_000_i64, "compose": "services: {}\n", "pinned": [],
                "env": {"TOKEN": "****"}, "files": ["nginx.conf"],
                "history": [{
                    "revision": R1, "selector": "role=web", "applied": "2020-09-13T12:26:40Z",
                    "applied_unix_ms": 1_600_000_000_000_i64, "applied_by": "",
                }],
            })
        );
        assert_eq!(
            v.history[0].cells(),
            ["111111111111", "role=web", "2020-09-13T12:26:40Z", "-"]
        );
    }

    #[test]
    fn apply_and_remove_show_the_hosts_they_concern() {
        let applied = AppliedView::new(
            "shop",
            false,
            &pb::ApplyStackResponse {
                revision: R1.into(),
                unchanged: true,
                hosts: vec!["web-1".into()],
                warnings: vec!["server".into()],
            },
            vec!["local".into(), "server".into()],
        );
        assert_eq!(
            serde_json::to_value(&applied).unwrap(),
            json!({
                "name": "shop", "revision": R1, "unchanged": true, "dry_run": false,
                "hosts": ["web-1"], "warnings": ["local", "server"],
            })
        );
        let removed = RemovedView::new(
            "shop",
            &pb::RemoveStackResponse {
                hosts: vec!["web-1".into(), "web-2".into()],
            },
        );
        assert_eq!(
            serde_json::to_value(&removed).unwrap(),
            json!({"name": "shop", "hosts": ["web-1", "web-2"], "volumes_kept": true})
        );
    }
}
