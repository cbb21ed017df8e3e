//! Label selectors that assign stacks to hosts: `role=web,env!=dev`, `host=web-1`, `*`.
//! Terms are ANDed; `host` is the host's name (an implicit label); `key` alone requires the
//! label to exist, `!key` requires it to be absent; `*` matches every host.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    Absent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    text: String,
    terms: Vec<Term>,
    all: bool,
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty selector matches nothing: use labels (role=web), host=NAME, or * for every host".into());
        }
        if text == "*" {
            return Ok(Selector {
                text: text.into(),
                terms: vec![],
                all: true,
            });
        }
        let mut terms = Vec::new();
        for raw in text.split(',') {
            let t = raw.trim();
            let term = if let Some((k, v)) = t.split_once("!=") {
                Term::NotEq(key(k)?, value(v)?)
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Term::Eq(key(k)?, value(v)?)
            } else if let Some(k) = t.strip_prefix('!') {
                Term::Absent(key(k)?)
            } else {
                Term::Exists(key(t)?)
            };
            terms.push(term);
        }
        Ok(Selector {
            text: text.to_string(),
            terms,
            all: false,
        })
    }

    /// Whether a host with this name and these labels is selected.
    pub fn matches(&self, host: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.all {
            return true;
        }
        let get = |k: &str| {
            if k == "host" {
                Some(host)
            } else {
                labels.get(k).map(String::as_str)
            }
        };
        self.terms.iter().all(|t| match t {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::NotEq(k, v) => get(k) != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
            Term::Absent(k) => get(k).is_none(),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    crate::names::check_label_key(k).map_err(|e| format!("selector: {e}"))?;
    Ok(k.to_string())
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.len() > 63
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "selector: value {v:?} is not a label value (up to 63 letters, digits, '-', '_', '.')"
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_as_operators_write_them() {
        let web_prod = labels(&[("role", "web"), ("env", "prod")]);
        let web_dev = labels(&[("role", "web"), ("env", "dev")]);
        let db = labels(&[("role", "db")]);
        let table = [
            ("role=web", "h1", &web_prod, true),
            ("role=web,env!=dev", "h1", &web_prod, true),
            ("role=web,env!=dev", "h2", &web_dev, false),
            ("role = web , env != dev", "h1", &web_prod, true),
            ("env!=dev", "h3", &db, true),
            ("env", "h3", &db, false),
            ("!env", "h3", &db, true),
            ("host=h3", "h3", &db, true),
            ("host=h3", "h1", &web_prod, false),
            ("*", "h3", &db, true),
        ];
        for (text, host, l, want) in table {
            assert_eq!(
                Selector::parse(text).unwrap().matches(host, l),
                want,
                "{text} on {host} {l:?}"
            );
        }
    }

    #[test]
    fn malformed_selectors_say_what_is_wrong() {
        for bad in ["", "role=a b", "=web", "role=web,,env=x", "bad key=1"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
