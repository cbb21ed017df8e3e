//! What names and labels may look like. Checked on every input before anything is stored.

use std::collections::BTreeMap;

use crate::error::Error;

pub const MAX_LABELS: usize = 64;

/// Host and operator names: 1–63 of `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn check_name(kind: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{kind} name {name:?} is not valid: use 1 to 63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// Stack names become compose project names on hosts: 1–63 of `a-z 0-9 - _`, starting with a
/// letter or digit (no `.`).
pub fn check_stack_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "stack name {name:?} is not valid: use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit (it becomes the compose project name)"
        )))
    }
}

/// Label keys: 1–63 of `A-Z a-z 0-9 - _ . /`, starting and ending with a letter or digit.
/// Values: up to 63 of `A-Z a-z 0-9 - _ .`.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), Error> {
    if labels.len() > MAX_LABELS {
        return Err(Error::Invalid(format!(
            "{} labels is more than the limit of {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        check_label_key(k)?;
        if noco_proto::labels::check_value(v).is_err() {
            return Err(Error::Invalid(format!(
                "label {k}={v:?}: a value is up to 63 letters, digits, '-', '_' or '.'"
            )));
        }
    }
    Ok(())
}

/// Label keys, by the one rule in [`noco_proto::labels`].
pub fn check_label_key(k: &str) -> Result<(), Error> {
    noco_proto::labels::check_key(k).map_err(Error::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_like_rules() {
        for good in ["web-1", "a", "db.eu_1"] {
            check_name("host", good).unwrap();
        }
        for bad in ["", "-x", "Web", "a b", &"x".repeat(64), "a/b"] {
            let err = check_name("host", bad).unwrap_err();
            assert!(err.to_string().contains("host name"), "{bad}");
        }
    }

    #[test]
    fn stack_names_are_compose_project_names() {
        check_stack_name("shop_2-eu").unwrap();
        for bad in ["", "shop.eu", "Shop", "-x", &"s".repeat(64)] {
            assert!(check_stack_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_are_checked_key_and_value() {
        let mut l = BTreeMap::new();
        l.insert("role".to_string(), "web".to_string());
        l.insert("example.com/tier".to_string(), "".to_string());
        check_labels(&l).unwrap();
        l.insert("bad key".to_string(), "x".to_string());
        assert!(check_labels(&l).is_err());
        let mut l = BTreeMap::new();
        l.insert("role".to_string(), "a=b".to_string());
        assert!(check_labels(&l).unwrap_err().to_string().contains("role"));
    }
}
