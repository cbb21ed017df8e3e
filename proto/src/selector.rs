//! Label selectors that assign stacks to hosts: `role=web,env!=dev`, `host=web-1`, `*`.
//! Terms are ANDed; `host` is the host's name (an implicit label); `key` alone requires the
//! label to exist, `!key` requires it to be absent; `*` matches every host.
//!
//! One parser for nococtl (which refuses a bad selector before sending anything) and the server
//! (which refuses it from any client). [`Selector::parse`] takes what an operator writes and
//! refuses what cannot mean what was meant (`role==web`, `=web`, `role=`), saying why;
//! [`Selector::stored`] also reads the selectors earlier versions accepted and stored, with the
//! meaning they had then, so that a stack keeps the hosts it had.

use std::collections::BTreeMap;
use std::fmt;

use crate::labels;

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

/// How strictly a selector is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Written by an operator now.
    New,
    /// Stored by an earlier version, which read `k==v` as `k=v` and allowed `k=`.
    Stored,
}

impl Selector {
    /// A selector as an operator writes it; an error says what is wrong and what to write.
    pub fn parse(text: &str) -> Result<Selector, String> {
        parse(text, Strictness::New)
    }

    /// A selector read back from storage: as [`Selector::parse`], and also the forms earlier
    /// versions accepted (`role==web` meaning `role=web`, `role=` an empty value).
    pub fn stored(text: &str) -> Result<Selector, String> {
        parse(text, Strictness::Stored)
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

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(text: &str) -> Result<Selector, String> {
        Selector::parse(text)
    }
}

fn parse(text: &str, strictness: Strictness) -> Result<Selector, String> {
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
    let raw_terms: Vec<&str> = text.split(',').map(str::trim).collect();
    let terms = raw_terms
        .iter()
        .map(|t| {
            term(t, strictness).map_err(|e| {
                if raw_terms.len() == 1 || t.is_empty() {
                    format!("selector {text:?}: {e}")
                } else {
                    format!("selector {text:?}, term {t:?}: {e}")
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Selector {
        text: text.to_string(),
        terms,
        all: false,
    })
}

/// One term: `k=v`, `k!=v`, `k` or `!k`.
fn term(t: &str, strictness: Strictness) -> Result<Term, String> {
    if t.is_empty() {
        return Err("an empty term (two commas, or a comma at an end)".into());
    }
    if t == "*" {
        return Err("* stands alone: it selects every host".into());
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Term::NotEq(key(k)?, value(k, v, "!=", strictness)?));
    }
    if let Some((k, v)) = t.split_once("==") {
        if strictness == Strictness::New {
            let (k, v) = (k.trim(), v.trim());
            return Err(format!(
                "== is not an operator here: write {k}={v} (equals) or {k}!={v} (differs)"
            ));
        }
        return Ok(Term::Eq(key(k)?, value(k, v, "=", strictness)?));
    }
    if let Some((k, v)) = t.split_once('=') {
        return Ok(Term::Eq(key(k)?, value(k, v, "=", strictness)?));
    }
    if let Some(k) = t.strip_prefix('!') {
        return Ok(Term::Absent(key(k)?));
    }
    Ok(Term::Exists(key(t)?))
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() {
        return Err("no label key before the operator: write key=value, like role=web".into());
    }
    labels::check_key(k)?;
    Ok(k.to_string())
}

fn value(k: &str, v: &str, op: &str, strictness: Strictness) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() && strictness == Strictness::New {
        let k = k.trim();
        return Err(format!(
            "no value after {op}: write {k}{op}VALUE, or {k} for hosts that have the label, !{k} for hosts that do not"
        ));
    }
    labels::check_value(v)?;
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
    fn selectors_that_cannot_mean_what_was_meant_are_refused_with_the_reason() {
        let table = [
            (
                "role==web",
                "selector \"role==web\": == is not an operator here: write role=web (equals) or role!=web (differs)",
            ),
            (
                "=web",
                "selector \"=web\": no label key before the operator: write key=value, like role=web",
            ),
            (
                "role=",
                "selector \"role=\": no value after =: write role=VALUE, or role for hosts that have the label, !role for hosts that do not",
            ),
            (
                "role=web,env!=",
                "selector \"role=web,env!=\", term \"env!=\": no value after !=: write env!=VALUE",
            ),
            ("", "an empty selector matches nothing"),
            (
                "role=web,,env=x",
                "selector \"role=web,,env=x\": an empty term",
            ),
            ("role=web,", "an empty term"),
            ("role=a b", "label value \"a b\" is not valid"),
            ("role=a=b", "label value \"a=b\" is not valid"),
            ("bad key=1", "label key \"bad key\" is not valid"),
            ("!", "no label key"),
            ("role=web,*", "* stands alone"),
        ];
        for (text, want) in table {
            let e = Selector::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn stored_selectors_keep_the_meaning_earlier_versions_gave_them() {
        let web = labels(&[("role", "web")]);
        let empty = labels(&[("role", "")]);
        assert!(Selector::stored("role==web").unwrap().matches("h", &web));
        assert!(Selector::stored("role=").unwrap().matches("h", &empty));
        assert!(!Selector::stored("role=").unwrap().matches("h", &web));
        assert!(Selector::stored("=web").is_err());
        assert_eq!(
            Selector::stored("role=web ").unwrap().to_string(),
            "role=web"
        );
    }
}
