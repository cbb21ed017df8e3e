//! A service's environment: `env_file:` contents first (in order), then `environment:`;
//! later wins.

use std::collections::BTreeMap;

use crate::FileSource;
use crate::envfile::parse_env_file;
use crate::parse::{Node, Value};
use crate::read::{Pair, Reader, index, join};

pub(crate) struct EnvFile {
    vars: BTreeMap<String, String>,
}

pub(crate) fn read_env_files(
    r: &mut Reader,
    files: &dyn FileSource,
    node: &Node,
    path: &str,
    what: &str,
) -> Vec<EnvFile> {
    let items: Vec<(Node, String)> = match &node.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), index(path, i)))
            .collect(),
        Value::Null => Vec::new(),
        _ => vec![(node.clone(), path.to_owned())],
    };
    let mut out = Vec::new();
    for (item, p) in items {
        let (file, required) = match &item.value {
            Value::Map(entries) => {
                let mut file = None;
                let mut required = true;
                for (key, value) in r.known_entries(entries, &p, what, &["path", "required"]) {
                    let kp = join(&p, &key.name);
                    match key.name.as_str() {
                        "path" => file = r.text(value, &kp),
                        "required" => required = r.bool(value, &kp).unwrap_or(true),
                        _ => {}
                    }
                }
                if file.is_none() {
                    r.error(
                        &p,
                        item.line,
                        format!("{what}: env_file entry needs \"path\""),
                    );
                }
                (file, required)
            }
            _ => (r.text(&item, &p), true),
        };
        let Some(file) = file else { continue };
        match files.read(&file) {
            Ok(text) => match parse_env_file(&text) {
                Ok(vars) => out.push(EnvFile { vars }),
                Err(d) => {
                    let at = d.line.map(|l| format!(", line {l}")).unwrap_or_default();
                    r.error(
                        &p,
                        item.line,
                        format!("{what}: env file {file:?}{at}: {}", d.message),
                    );
                }
            },
            Err(e) if required => r.error(
                &p,
                item.line,
                format!("{what}: env file {file:?} cannot be read: {e}"),
            ),
            Err(_) => {}
        }
    }
    out
}

/// env_file contents first (in order), then `environment`; later wins. `FOO` without a
/// value takes the variable `FOO`, else is left out with a warning.
pub(crate) fn resolve_environment(
    r: &mut Reader,
    env_files: Vec<EnvFile>,
    environment: Vec<Pair>,
    what: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for file in env_files {
        env.extend(file.vars);
    }
    for pair in environment {
        match pair.value {
            Some(v) => {
                env.insert(pair.key, v);
            }
            None => match r.vars().get(&pair.key) {
                Some(v) => {
                    env.insert(pair.key, v.clone());
                }
                None if env.contains_key(&pair.key) => {}
                None => r.warn(
                    &pair.path,
                    pair.line,
                    format!("{what}: environment variable {} has no value and is not among the variables; left out", pair.key),
                ),
            },
        }
    }
    env
}
