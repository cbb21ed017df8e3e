//! `profiles`: which services run, as compose decides it. A service without `profiles:` always
//! runs; one with profiles runs only when one of them is enabled (`*` enables every one). The
//! enabled profiles are the caller's (`--profile`), else `COMPOSE_PROFILES` from the variables,
//! and always the file's own `x-noco.profiles` — a fleet stack's selection, read here so that
//! nococtl, the server and the agent agree. A disabled service is left out of the project with
//! the networks and volumes only it used; an enabled service that needs it is an error naming
//! both (a `depends_on` with `required: false` on it is dropped instead, as in compose).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Network, Volume};
use crate::parse::Node;
use crate::read::{Reader, join};
use crate::service::Draft;

/// The variable compose reads the enabled profiles from, comma-separated.
const COMPOSE_PROFILES: &str = "COMPOSE_PROFILES";

/// The enabled profiles.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    profiles: BTreeSet<String>,
}

impl Selection {
    /// `given` (`--profile`), else `COMPOSE_PROFILES` from `variables`; and `x-noco.profiles`.
    pub fn new(
        r: &mut Reader,
        given: &[String],
        variables: &BTreeMap<String, String>,
        x_noco: Option<&Node>,
    ) -> Selection {
        let mut profiles: BTreeSet<String> = if given.is_empty() {
            variables
                .get(COMPOSE_PROFILES)
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        } else {
            given.iter().cloned().collect()
        };
        if let Some(node) = x_noco {
            profiles.extend(x_noco_profiles(r, node));
        }
        let profiles = profiles
            .into_iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        Selection { profiles }
    }

    /// Whether a service with these `profiles:` runs.
    pub fn runs(&self, profiles: &[String]) -> bool {
        profiles.is_empty()
            || self.profiles.contains("*")
            || profiles.iter().any(|p| self.profiles.contains(p))
    }
}

/// `x-noco.profiles`: a list of profile names. The other keys of `x-noco` are nococtl's.
fn x_noco_profiles(r: &mut Reader, node: &Node) -> Vec<String> {
    if node.is_null() {
        return Vec::new();
    }
    let Some(entries) = r.mapping(node, "x-noco") else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|(key, _)| key.name == "profiles")
        .flat_map(|(_, value)| {
            if value.is_null() {
                Vec::new()
            } else {
                r.strings(value, "x-noco.profiles")
            }
        })
        .collect()
}

/// The services `selection` enables; the others leave the project, with the networks and
/// volumes that only they used. References from an enabled service to a disabled one are
/// errors, but for `depends_on` with `required: false`, which is dropped.
pub(crate) fn select(
    r: &mut Reader,
    drafts: Vec<Draft>,
    selection: &Selection,
    networks: &mut BTreeMap<String, Network>,
    volumes: &mut BTreeMap<String, Volume>,
) -> Vec<Draft> {
    let (mut enabled, disabled): (Vec<Draft>, Vec<Draft>) = drafts
        .into_iter()
        .partition(|d| selection.runs(&d.profiles));
    if disabled.is_empty() {
        return enabled;
    }
    let off: BTreeMap<&str, &Draft> = disabled
        .iter()
        .map(|d| (d.service.name.as_str(), d))
        .collect();
    for d in &mut enabled {
        let depends_on = join(&d.path, "depends_on");
        let mut kept = Vec::new();
        for dep in std::mem::take(&mut d.dependencies) {
            let Some(target) = off.get(dep.name.as_str()) else {
                kept.push(dep);
                continue;
            };
            let optional = dep.path.starts_with(&depends_on)
                && d.service
                    .depends_on
                    .get(&dep.name)
                    .is_some_and(|how| !how.required);
            if optional {
                d.service.depends_on.remove(&dep.name);
                continue;
            }
            r.error(
                &dep.path,
                dep.line,
                format!(
                    "service {:?} is required by {:?} but is disabled; it can be enabled by profiles [{}] (--profile, COMPOSE_PROFILES or x-noco.profiles)",
                    dep.name,
                    d.service.name,
                    target.profiles.join(", ")
                ),
            );
        }
        d.dependencies = kept;
    }
    if enabled.is_empty() {
        r.warn(
            "services",
            None,
            "every service is disabled by its profiles: nothing would run (enable one with --profile)",
        );
    }
    // Networks and volumes only disabled services use are not created (compose leaves out the
    // ones no enabled service uses).
    let used_networks: BTreeSet<&str> = enabled
        .iter()
        .flat_map(|d| d.networks.iter().map(|n| n.name.as_str()))
        .collect();
    let used_volumes: BTreeSet<&str> = enabled
        .iter()
        .flat_map(|d| d.volumes.iter().map(|v| v.name.as_str()))
        .collect();
    for d in &disabled {
        for n in &d.networks {
            if !used_networks.contains(n.name.as_str()) {
                networks.remove(&n.name);
            }
        }
        for v in &d.volumes {
            if !used_volumes.contains(v.name.as_str()) {
                volumes.remove(&v.name);
            }
        }
    }
    enabled
}

/// A service's `profiles:`, a list of names.
pub(crate) fn read_profiles(r: &mut Reader, node: &Node, path: &str) -> Vec<String> {
    if node.is_null() {
        return Vec::new();
    }
    r.strings(node, path)
}
