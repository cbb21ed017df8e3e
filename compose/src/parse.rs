//! YAML text → a generic tree of [`Node`]s, each carrying its line.
//!
//! We let `serde-saphyr` do the YAML work (YAML 1.2 core schema, anchors, aliases, `<<` merge
//! keys, duplicate-key errors, alias-bomb budgets) and deserialize into our own small tree
//! rather than `serde_json::Value`, because every node then keeps its source line
//! (`serde_saphyr::Spanned`) for diagnostics, and mapping keys keep their spelling as written.
//! Everything after this module walks the tree with explicit paths.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy, NonFiniteFloatPolicy, Spanned};

use crate::diag::Diagnostic;

/// Largest compose file we accept (one limit for every part: see `noco_proto::limits`).
pub const MAX_INPUT_BYTES: usize = noco_proto::limits::MAX_COMPOSE_FILE;
/// Budget for the tree built from one file, counting aliases as the copies they expand to:
/// nodes, and bytes of scalar text.
const MAX_TREE_NODES: usize = 200_000;
const MAX_TREE_BYTES: usize = 16 * 1024 * 1024;

/// One YAML node and the line it was written on (for an alias: the line of the `*alias`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub line: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order (merge keys already applied), keys as written.
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub name: String,
    pub line: Option<usize>,
}

impl Node {
    /// What kind of node this is, for "expected X, got Y" messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The mapping's entries, if this is a mapping.
    pub fn entries(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// A scalar's text as compose would use it in a string field: strings as they are,
    /// numbers and booleans spelled out; `None` for null, lists and mappings.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(float_text(*f)),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

/// A float as compose prints it into a string field: `1.5`, `2` for `2.0`.
fn float_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

/// A file's bytes as text. Compose and env files are UTF-8; anything else is invalid input
/// (not an unreadable file), named by the line and column of the first byte that is not.
pub fn text(bytes: &[u8]) -> Result<&str, Diagnostic> {
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
        let line = valid.matches('\n').count() + 1;
        let column = valid
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
        Diagnostic::new(
            "",
            Some(line),
            format!("not UTF-8 text: byte 0x{byte:02X} at column {column}; save the file as UTF-8"),
        )
    })
}

/// Parse YAML text into a tree. Never panics; every failure is one diagnostic.
pub(crate) fn parse(yaml: &str) -> Result<Node, Diagnostic> {
    if yaml.len() > MAX_INPUT_BYTES {
        return Err(Diagnostic::new(
            "",
            None,
            format!(
                "compose file is {} bytes, more than the {MAX_INPUT_BYTES} accepted",
                yaml.len()
            ),
        ));
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 10_000,
            max_anchors: 10_000,
            max_nodes: MAX_TREE_NODES,
            max_depth: 64,
            max_documents: 1,
            max_total_scalar_bytes: MAX_TREE_BYTES,
            max_recorded_anchor_events: 200_000,
            max_recorded_anchor_bytes: MAX_TREE_BYTES,
            max_merge_keys: 10_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            // Merge keys and aliases in real compose files replay hundreds of events.
            max_total_replayed_events: 50_000,
            max_replay_stack_depth: 32,
        },
        duplicate_keys: DuplicateKeyPolicy::Error,
        merge_keys: MergeKeyPolicy::Merge,
        // YAML 1.2: only true/false are booleans; `no`, `on`, `yes` stay strings.
        strict_booleans: true,
        // `0755` and `1_000` keep their spelling (modes are read as octal where meant).
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        // `.inf`/`.nan` are text to a compose file (an environment value, say).
        non_finite_float_policy: NonFiniteFloatPolicy::AsString,
        // `!reset`, `!override` and other application tags would change the meaning silently.
        reject_unsupported_tags: true,
        with_snippet: false,
    };
    BUDGET.with(|b| b.set(TreeBudget { nodes: 0, bytes: 0 }));
    let parsed = serde_saphyr::from_str_with_options::<Option<Node>>(yaml, options);
    match parsed {
        Ok(Some(node)) => Ok(node),
        Ok(None) => Ok(Node {
            value: Value::Null,
            line: None,
        }),
        Err(err) => {
            let line = err
                .location()
                .map(|l| l.line())
                .and_then(|l| usize::try_from(l).ok())
                .filter(|l| *l > 0);
            Err(Diagnostic::new(
                "",
                line,
                format!(
                    "invalid YAML: {}",
                    friendly(&err.without_snippet().to_string())
                ),
            ))
        }
    }
}

/// Drop advice meant for Rust programmers from the parser's messages.
fn friendly(message: &str) -> String {
    let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    let message = message.replace(
        "cannot deserialize null into string; use Option<String>",
        "a mapping key must not be null",
    );
    if message.contains("budget breached: Documents") {
        return "the file holds more than one YAML document (---)".to_owned();
    }
    message.replace(
        "budget breached",
        "the document is too large or too deeply nested",
    )
}

#[derive(Clone, Copy)]
struct TreeBudget {
    nodes: usize,
    bytes: usize,
}

thread_local! {
    /// Counts what the tree holds while one `parse` runs (aliases expand into copies, so the
    /// tree can be far larger than the text; this stops alias bombs the parser's own budget
    /// lets through, such as one large anchored scalar referenced many times).
    static BUDGET: Cell<TreeBudget> = const { Cell::new(TreeBudget { nodes: 0, bytes: 0 }) };
}

fn charge<E: de::Error>(bytes: usize) -> Result<(), E> {
    BUDGET.with(|b| {
        let mut budget = b.get();
        budget.nodes += 1;
        budget.bytes = budget.bytes.saturating_add(bytes);
        b.set(budget);
        if budget.nodes > MAX_TREE_NODES {
            Err(E::custom(format!(
                "document expands to more than {MAX_TREE_NODES} nodes"
            )))
        } else if budget.bytes > MAX_TREE_BYTES {
            Err(E::custom(format!(
                "document expands to more than {MAX_TREE_BYTES} bytes of text"
            )))
        } else {
            Ok(())
        }
    })
}

fn line_of(loc: serde_saphyr::Location) -> Option<usize> {
    usize::try_from(loc.line()).ok().filter(|l| *l > 0)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            line: line_of(spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        charge(0)?;
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        charge(0)?;
        Ok(Value::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        charge(0)?;
        Ok(Value::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        charge(0)?;
        match i128::try_from(v) {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => Ok(Value::Str(v.to_string())),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        charge(0)?;
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        charge(v.len())?;
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        charge(v.len())?;
        Ok(Value::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        charge(v.len())?;
        match std::str::from_utf8(v) {
            Ok(s) => Ok(Value::Str(s.to_owned())),
            Err(_) => Err(E::custom("binary values are not supported")),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        charge(0)?;
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        charge(0)?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            charge(key.value.len())?;
            let value = map.next_value::<Node>()?;
            entries.push((
                Key {
                    name: key.value,
                    line: line_of(key.referenced),
                },
                value,
            ));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_named_by_line_and_column() {
        assert_eq!(text(b"a: caf\xc3\xa9\n"), Ok("a: caf\u{e9}\n"));
        let d = text(b"a: 1\nb: caf\xe9\n").unwrap_err();
        assert_eq!(
            d.to_string(),
            "line 2: not UTF-8 text: byte 0xE9 at column 7; save the file as UTF-8"
        );
        let d = text(b"\xc3\xa9\xff").unwrap_err();
        assert_eq!((d.line, d.message.contains("column 2")), (Some(1), true));
    }

    fn scalar(yaml: &str) -> Value {
        match parse(&format!("v: {yaml}\n")) {
            Ok(node) => match node.get("v") {
                Some(v) => v.value.clone(),
                None => panic!("no v in {node:?}"),
            },
            Err(e) => panic!("{yaml}: {e}"),
        }
    }

    /// YAML 1.2 core schema: only `true`/`false` are booleans, no sexagesimal numbers,
    /// `0o` octal; `0755` and `1_000` keep their spelling (modes are read as octal where meant).
    #[test]
    fn yaml_1_2_scalars() {
        let s = |t: &str| Value::Str(t.to_owned());
        let cases = [
            ("no", s("no")),
            ("yes", s("yes")),
            ("on", s("on")),
            ("off", s("off")),
            ("y", s("y")),
            ("08:00", s("08:00")),
            ("8080:80", s("8080:80")),
            ("0o17", Value::Int(15)),
            ("0x1f", Value::Int(31)),
            ("0755", s("0755")),
            ("12", Value::Int(12)),
            ("-3", Value::Int(-3)),
            ("1.5", Value::Float(1.5)),
            ("true", Value::Bool(true)),
            ("False", Value::Bool(false)),
            ("~", Value::Null),
            ("null", Value::Null),
            ("", Value::Null),
            ("'no'", s("no")),
            ("\"08:00\"", s("08:00")),
            ("1_000", s("1_000")),
            (".inf", s(".inf")),
            (".nan", s(".nan")),
        ];
        for (yaml, want) in cases {
            assert_eq!(scalar(yaml), want, "scalar {yaml:?}");
        }
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let yaml = "\
base: &base
  a: 1
  b: two
list: &l [x, y]
copy: *l
merged:
  <<: *base
  b: three
  c: 4
";
        let node = match parse(yaml) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let copy = node.get("copy").map(|n| n.value.clone());
        assert_eq!(
            copy,
            Some(Value::Seq(vec![
                Node {
                    value: Value::Str("x".into()),
                    line: Some(5)
                },
                Node {
                    value: Value::Str("y".into()),
                    line: Some(5)
                },
            ]))
        );
        let merged = node.get("merged");
        let get = |k: &str| merged.and_then(|m| m.get(k)).map(|n| n.value.clone());
        assert_eq!(get("a"), Some(Value::Int(1)));
        assert_eq!(get("b"), Some(Value::Str("three".into())));
        assert_eq!(get("c"), Some(Value::Int(4)));
        assert_eq!(get("<<"), None);
    }

    #[test]
    fn nodes_carry_lines() {
        let node = match parse("a: 1\nb:\n  - x\n  - y\n") {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let b = node.get("b");
        assert_eq!(b.and_then(|b| b.entries()).map(|_| ()), None);
        match b.map(|b| &b.value) {
            Some(Value::Seq(items)) => {
                assert_eq!(
                    items.iter().map(|i| i.line).collect::<Vec<_>>(),
                    vec![Some(3), Some(4)]
                );
            }
            other => panic!("{other:?}"),
        }
        match &node.value {
            Value::Map(entries) => {
                assert_eq!(
                    entries.iter().map(|(k, _)| k.line).collect::<Vec<_>>(),
                    vec![Some(1), Some(2)]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_and_limits_are_diagnostics() {
        let cases = [
            "a: [1, 2\n",
            "a: 1\na: 2\n",
            "a: *nope\n",
            "---\na: 1\n---\nb: 2\n",
            "? [a, b]\n: c\n",
            "~: 1\n",
            "a: !reset null\n",
            "<<: 5\n",
        ];
        for yaml in cases {
            assert!(parse(yaml).is_err(), "{yaml:?} should fail");
        }
        let big = "a: ".to_owned() + &"x".repeat(MAX_INPUT_BYTES);
        assert!(parse(&big).is_err());
    }

    /// A billion-laughs document must fail fast instead of expanding.
    #[test]
    fn alias_bombs_are_refused() {
        let mut yaml = String::from(
            "a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
        );
        for i in 1..12 {
            let p = i - 1;
            yaml.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&yaml).is_err());

        // One big anchored scalar referenced many times.
        let mut yaml = format!("big: &big \"{}\"\nrefs:\n", "x".repeat(400_000));
        for _ in 0..2000 {
            yaml.push_str("  - *big\n");
        }
        assert!(parse(&yaml).is_err());
    }
}
