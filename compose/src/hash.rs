//! The config hash of a service: what decides whether its containers must be recreated.
//!
//! Definition (version 1):
//!
//! 1. Serialize the normalized [`Service`] with serde into a JSON value (field names as in
//!    `model.rs`, enums as their serde tags, durations as `{"secs":…,"nanos":…}`).
//! 2. Remove `name` and `deploy.replicas`: renaming is not a config change a container sees,
//!    and scaling must not recreate the running containers. Fields added to the model since
//!    (`secrets`, `configs`) are left out when empty, so a service that does not use them keeps
//!    its hash; they hold each mounted file's digest, never its bytes, so a new secret value
//!    changes the hash without being in it.
//! 3. Encode it canonically: objects with keys sorted by their UTF-8 bytes, no whitespace,
//!    strings escaped as serde_json escapes them, numbers as serde_json prints them.
//! 4. Hash the bytes `"noco-config-v1\n"` followed by that encoding with SHA-256, and write
//!    it as `sha256:` and 64 lowercase hex digits.
//!
//! Because the model is normalized (short syntaxes expanded, maps sorted, units converted),
//! files that mean the same thing hash the same whatever their syntax or key order. Any change
//! to this definition must change the version tag.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::Service;

const VERSION_TAG: &str = "noco-config-v1\n";

/// `sha256:<hex>` over the canonical encoding of `service` (see the module docs).
pub fn config_hash(service: &Service) -> String {
    let mut hasher = Sha256::new();
    hasher.update(VERSION_TAG.as_bytes());
    hasher.update(canonical_json(service).as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The canonical JSON the hash covers (exposed to tests and for debugging a hash).
pub(crate) fn canonical_json(service: &Service) -> String {
    let mut value = match serde_json::to_value(service) {
        Ok(v) => v,
        // Cannot happen for this model (every map has string keys); hash the debug form
        // rather than panic.
        Err(_) => Value::String(format!("{service:?}")),
    };
    if let Value::Object(map) = &mut value {
        map.remove("name");
        if let Some(Value::Object(deploy)) = map.get_mut("deploy") {
            deploy.remove("replicas");
        }
    }
    let mut out = String::new();
    write_canonical(&value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoadOptions, NoFiles, load};

    #[test]
    fn canonical_json_sorts_keys_and_leaves_out_name_and_replicas() {
        let vars = Default::default();
        let opts = LoadOptions {
            project_name: Some("p"),
            variables: &vars,
            files: &NoFiles,
            profiles: &[],
            directory: None,
        };
        let yaml = "services:\n  web:\n    image: app\n    environment: {Z: '1', A: '2'}\n    deploy:\n      replicas: 3\n";
        let service = match load(yaml, &opts) {
            Ok(l) => l.project.services["web"].clone(),
            Err(e) => panic!("{e:?}"),
        };
        let json = canonical_json(&service);
        println!("{json}");
        assert!(
            !json.contains("\"name\"") && !json.contains("replicas") && !json.contains("web"),
            "{json}"
        );
        assert!(
            json.starts_with("{\"cap_add\":[],\"cap_drop\":[],\"command\":null,"),
            "{json}"
        );
        assert!(
            json.contains("\"environment\":{\"A\":\"2\",\"Z\":\"1\"}"),
            "{json}"
        );
        assert!(json.contains("\"deploy\":{\"resources\":{"), "{json}");
        assert!(!json.contains(' '), "{json}");
    }
}
