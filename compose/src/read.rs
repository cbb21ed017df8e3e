//! Typed reads from the YAML tree: each takes a node and its path, interpolates string
//! values (values only, never keys), converts them into the wanted type the way compose
//! does, and records a diagnostic instead of failing, so that loading goes on and reports
//! every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::diag::Diags;
use crate::interpolate::interpolate;
use crate::parse::{Key, Node, Value};
use crate::units::{parse_bytes, parse_duration};

pub(crate) struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    pub diags: Diags,
    /// Unset variables already warned about (one warning per variable).
    warned_unset: BTreeSet<String>,
}

/// `path.key`
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[index]`
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// An entry of a list-or-mapping field (`environment`, `labels`, …): key, value (`None` when
/// none was given), and where it was written.
pub(crate) struct Pair {
    pub key: String,
    pub value: Option<String>,
    pub path: String,
    pub line: Option<usize>,
}

impl<'a> Reader<'a> {
    pub fn new(vars: &'a BTreeMap<String, String>) -> Self {
        Reader {
            vars,
            diags: Diags::default(),
            warned_unset: BTreeSet::new(),
        }
    }

    pub fn vars(&self) -> &'a BTreeMap<String, String> {
        self.vars
    }

    pub fn error(&mut self, path: &str, line: Option<usize>, message: impl Into<String>) {
        self.diags.error(path, line, message);
    }

    pub fn warn(&mut self, path: &str, line: Option<usize>, message: impl Into<String>) {
        self.diags.warn(path, line, message);
    }

    fn expected(&mut self, node: &Node, path: &str, what: &str) {
        self.error(
            path,
            node.line,
            format!("expected {what}, got {}", node.kind()),
        );
    }

    /// Interpolate a string value.
    pub fn interpolated(&mut self, raw: &str, path: &str, line: Option<usize>) -> Option<String> {
        let mut unset = Vec::new();
        let result = interpolate(raw, self.vars, &mut unset);
        for name in unset {
            if self.warned_unset.insert(name.clone()) {
                self.warn(
                    path,
                    line,
                    format!("variable {name} is not set; using an empty string"),
                );
            }
        }
        match result {
            Ok(text) => Some(text),
            Err(e) => {
                self.error(path, line, e.to_string());
                None
            }
        }
    }

    /// A scalar as text (numbers and booleans spelled out, strings interpolated).
    pub fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => self.interpolated(s, path, node.line),
            Value::Null | Value::Seq(_) | Value::Map(_) => {
                self.expected(node, path, "a string");
                None
            }
            _ => node.scalar_text(),
        }
    }

    /// Like [`Reader::text`], but null is `None` without an error.
    pub fn opt_text(&mut self, node: &Node, path: &str) -> Option<String> {
        if node.is_null() {
            None
        } else {
            self.text(node, path)
        }
    }

    /// A boolean: `true`/`false`, or a string that is one after interpolation. Like docker
    /// compose, the strings `yes`/`no`/`on`/`off`/`y`/`n` are accepted too.
    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(_) => {
                let text = self.text(node, path)?;
                match text.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "y" | "on" => Some(true),
                    "false" | "no" | "n" | "off" => Some(false),
                    _ => {
                        self.error(
                            path,
                            node.line,
                            format!("expected true or false, got {text:?}"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.expected(node, path, "true or false");
                None
            }
        }
    }

    /// An integer of type `T`: a YAML integer, or a string holding one.
    pub fn int<T: TryFrom<i128> + std::fmt::Display>(
        &mut self,
        node: &Node,
        path: &str,
    ) -> Option<T> {
        let value: i128 = match &node.value {
            Value::Int(i) => *i,
            Value::Str(_) => {
                let text = self.text(node, path)?;
                match text.trim().parse::<i128>() {
                    Ok(i) => i,
                    Err(_) => {
                        self.error(
                            path,
                            node.line,
                            format!("expected an integer, got {text:?}"),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.expected(node, path, "an integer");
                return None;
            }
        };
        match T::try_from(value) {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(path, node.line, format!("integer {value} is out of range"));
                None
            }
        }
    }

    /// A number (integer or fraction), or a string holding one.
    pub fn float(&mut self, node: &Node, path: &str) -> Option<f64> {
        match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) if f.is_finite() => Some(*f),
            Value::Str(_) => {
                let text = self.text(node, path)?;
                match text.trim().parse::<f64>() {
                    Ok(f) if f.is_finite() => Some(f),
                    _ => {
                        self.error(path, node.line, format!("expected a number, got {text:?}"));
                        None
                    }
                }
            }
            _ => {
                self.expected(node, path, "a number");
                None
            }
        }
    }

    /// A duration written as compose writes it (`1m30s`).
    pub fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let text = match &node.value {
            Value::Str(_) => self.text(node, path)?,
            Value::Int(0) => return Some(Duration::ZERO),
            Value::Int(i) => {
                self.error(
                    path,
                    node.line,
                    format!("duration {i} has no unit; write it like {i}s"),
                );
                return None;
            }
            _ => {
                self.expected(node, path, "a duration like 10s or 1m30s");
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, node.line, e);
                None
            }
        }
    }

    /// A byte size (`512m`, `4G`, or a plain number of bytes).
    pub fn bytes(&mut self, node: &Node, path: &str) -> Option<u64> {
        let text = match &node.value {
            Value::Int(i) => match u64::try_from(*i) {
                Ok(b) => return Some(b),
                Err(_) => {
                    self.error(path, node.line, format!("size {i} is out of range"));
                    return None;
                }
            },
            Value::Str(_) => self.text(node, path)?,
            _ => {
                self.expected(node, path, "a size like 512m or 4G");
                return None;
            }
        };
        match parse_bytes(&text) {
            Ok(b) => Some(b),
            Err(e) => {
                self.error(path, node.line, e);
                None
            }
        }
    }

    /// A byte size that may also be `-1` (unlimited).
    pub fn bytes_or_unlimited(&mut self, node: &Node, path: &str) -> Option<i64> {
        if let Value::Int(-1) = node.value {
            return Some(-1);
        }
        if let Value::Str(s) = &node.value
            && s.trim() == "-1"
        {
            return Some(-1);
        }
        let bytes = self.bytes(node, path)?;
        match i64::try_from(bytes) {
            Ok(b) => Some(b),
            Err(_) => {
                self.error(path, node.line, "size is out of range");
                None
            }
        }
    }

    /// A list's items, or an error.
    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.expected(node, path, "a list");
                None
            }
        }
    }

    /// A mapping's entries, or an error.
    pub fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                self.expected(node, path, "a mapping");
                None
            }
        }
    }

    /// A list of scalars as strings.
    pub fn strings(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Some(items) = self.list(node, path) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.text(item, &index(path, i)))
            .collect()
    }

    /// A string (one item) or a list of strings.
    pub fn string_or_list(&mut self, node: &Node, path: &str) -> Vec<String> {
        match &node.value {
            Value::Seq(_) => self.strings(node, path),
            Value::Null => Vec::new(),
            _ => self.text(node, path).into_iter().collect(),
        }
    }

    /// A mapping of scalar values, as strings (null values become empty strings).
    pub fn string_map(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if node.is_null() {
            return out;
        }
        let Some(entries) = self.mapping(node, path) else {
            return out;
        };
        for (key, value) in entries {
            let p = join(path, &key.name);
            let text = if value.is_null() {
                Some(String::new())
            } else {
                self.text(value, &p)
            };
            if let Some(text) = text {
                out.insert(key.name.clone(), text);
            }
        }
        out
    }

    /// A field written either as a mapping (`KEY: value`) or as a list of `KEY<sep>value`
    /// strings (`environment`, `labels`, `sysctls`, `extra_hosts`). Entries keep file order;
    /// a list item without a separator, or a mapping entry with a null value, has no value.
    pub fn pairs(&mut self, node: &Node, path: &str, separators: &[char]) -> Vec<Pair> {
        let mut out = Vec::new();
        match &node.value {
            Value::Null => {}
            Value::Map(entries) => {
                for (key, value) in entries {
                    let p = join(path, &key.name);
                    match &value.value {
                        Value::Null => out.push(Pair {
                            key: key.name.clone(),
                            value: None,
                            path: p,
                            line: key.line,
                        }),
                        Value::Seq(_) | Value::Map(_) => {
                            self.expected(value, &p, "a string, number or boolean")
                        }
                        _ => {
                            if let Some(text) = self.text(value, &p) {
                                out.push(Pair {
                                    key: key.name.clone(),
                                    value: Some(text),
                                    path: p,
                                    line: value.line,
                                });
                            }
                        }
                    }
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = index(path, i);
                    let Some(text) = self.text(item, &p) else {
                        continue;
                    };
                    let (key, value) = match text.find(separators) {
                        Some(at) => {
                            let sep_len = text[at..].chars().next().map_or(1, char::len_utf8);
                            (text[..at].to_owned(), Some(text[at + sep_len..].to_owned()))
                        }
                        None => (text.clone(), None),
                    };
                    if key.is_empty() {
                        self.error(&p, item.line, format!("{text:?} has an empty name"));
                        continue;
                    }
                    out.push(Pair {
                        key,
                        value,
                        path: p,
                        line: item.line,
                    });
                }
            }
            _ => self.expected(node, path, "a mapping or a list"),
        }
        out
    }

    /// Check a mapping's keys: `x-*` keys are ignored, others must be in `known`. Returns the
    /// entries that are known.
    pub fn known_entries<'n>(
        &mut self,
        entries: &'n [(Key, Node)],
        path: &str,
        what: &str,
        known: &[&str],
    ) -> Vec<(&'n Key, &'n Node)> {
        let mut out = Vec::new();
        for (key, value) in entries {
            if key.name.starts_with("x-") {
                continue;
            }
            if known.contains(&key.name.as_str()) {
                out.push((key, value));
            } else {
                let hint = crate::suggest::did_you_mean(&key.name, known.iter().copied())
                    .unwrap_or_else(|| format!("known: {}", known.join(", ")));
                self.error(
                    &join(path, &key.name),
                    key.line,
                    format!("{what}: unknown key {:?} ({hint})", key.name),
                );
            }
        }
        out
    }
}
