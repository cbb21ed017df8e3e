//! Variable interpolation in compose values, as the compose specification defines it.
//!
//! | form | value |
//! |---|---|
//! | `$VAR`, `${VAR}` | the variable; unset → empty string and a warning |
//! | `${VAR:-d}` / `${VAR-d}` | `d` when unset or empty / when unset |
//! | `${VAR:?e}` / `${VAR?e}` | error carrying `e` when unset or empty / when unset |
//! | `${VAR:+x}` / `${VAR+x}` | `x` when set and non-empty / when set, else empty |
//! | `$$` | a literal `$` |
//!
//! `d`, `e` and `x` are themselves interpolated (`${A:-${B:-c}}`), only when they are used.
//! Variables come only from the caller's map, never from the process environment. Keys are
//! never interpolated; the loader calls this on values only.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpolationError {
    /// `${VAR:?message}` or `${VAR?message}` with `VAR` missing.
    Required { name: String, message: String },
    /// Not valid interpolation syntax.
    Invalid(String),
}

impl std::fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpolationError::Required { name, message } if message.is_empty() => {
                write!(f, "required variable {name} is missing a value")
            }
            InterpolationError::Required { name, message } => {
                write!(f, "required variable {name} is missing a value: {message}")
            }
            InterpolationError::Invalid(why) => write!(f, "invalid interpolation: {why}"),
        }
    }
}

/// Interpolate one value. Names of variables that were used but unset (and had no default)
/// are appended to `unset`.
pub(crate) fn interpolate(
    text: &str,
    vars: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, InterpolationError> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    Expander {
        vars,
        unset,
        depth: 0,
    }
    .expand(text)
}

/// How deeply `${…}` may nest inside defaults and messages.
const MAX_DEPTH: usize = 16;

struct Expander<'a, 'u> {
    vars: &'a BTreeMap<String, String>,
    unset: &'u mut Vec<String>,
    depth: usize,
}

/// The text for an error message, cut short if long.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{:?}…", &text[..at]),
        None => format!("{text:?}"),
    }
}

fn name_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Index of the `}` closing a `${` whose body starts at `start`; nested `${…}` and `$$` are
/// skipped.
fn closing_brace(s: &str, start: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 1usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 2,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

impl Expander<'_, '_> {
    fn expand(&mut self, text: &str) -> Result<String, InterpolationError> {
        if self.depth > MAX_DEPTH {
            return Err(InterpolationError::Invalid(format!(
                "\"${{\" nested more than {MAX_DEPTH} deep"
            )));
        }
        self.depth += 1;
        let result = self.expand_inner(text);
        self.depth -= 1;
        result
    }

    fn expand_inner(&mut self, text: &str) -> Result<String, InterpolationError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body_and_tail) = after.strip_prefix('{') {
                let Some(close) = closing_brace(body_and_tail, 0) else {
                    return Err(InterpolationError::Invalid(format!(
                        "unterminated \"${{\" in {} (write \"$$\" for a literal \"$\")",
                        excerpt(text)
                    )));
                };
                out.push_str(&self.braced(&body_and_tail[..close])?);
                rest = &body_and_tail[close + 1..];
            } else {
                let len = name_len(after);
                if len == 0 {
                    return Err(InterpolationError::Invalid(format!(
                        "\"$\" not followed by a variable name, \"{{\" or \"$\" in {} (write \"$$\" for a literal \"$\")",
                        excerpt(text)
                    )));
                }
                out.push_str(&self.lookup_or_warn(&after[..len]));
                rest = &after[len..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup_or_warn(&mut self, name: &str) -> String {
        match self.vars.get(name) {
            Some(value) => value.clone(),
            None => {
                self.unset.push(name.to_owned());
                String::new()
            }
        }
    }

    /// The inside of `${…}`.
    fn braced(&mut self, body: &str) -> Result<String, InterpolationError> {
        let len = name_len(body);
        if len == 0 {
            return Err(InterpolationError::Invalid(format!(
                "\"${{\" without a variable name in {}",
                excerpt(body)
            )));
        }
        let (name, op) = body.split_at(len);
        let value = self.vars.get(name);
        let non_empty = value.filter(|v| !v.is_empty());
        if op.is_empty() {
            return Ok(self.lookup_or_warn(name));
        }
        // The operator is one of six ASCII spellings; anything else is refused below.
        let operator = [":-", ":?", ":+", "-", "?", "+"]
            .into_iter()
            .find(|o| op.starts_with(o))
            .unwrap_or("");
        let arg = &op[operator.len()..];
        match operator {
            ":-" => match non_empty {
                Some(v) => Ok(v.clone()),
                None => self.expand(arg),
            },
            "-" => match value {
                Some(v) => Ok(v.clone()),
                None => self.expand(arg),
            },
            ":?" | "?" => {
                let present = if operator == ":?" { non_empty } else { value };
                match present {
                    Some(v) => Ok(v.clone()),
                    None => Err(InterpolationError::Required {
                        name: name.to_owned(),
                        message: self.expand(arg).unwrap_or_else(|_| arg.to_owned()),
                    }),
                }
            }
            ":+" => match non_empty {
                Some(_) => self.expand(arg),
                None => Ok(String::new()),
            },
            "+" => match value {
                Some(_) => self.expand(arg),
                None => Ok(String::new()),
            },
            _ => Err(InterpolationError::Invalid(format!(
                "unknown operator after ${{{name} in {} (expected :-, -, :?, ?, :+ or +)",
                excerpt(body)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [
            ("SET", "value"),
            ("EMPTY", ""),
            ("B", "bee"),
            ("PORT", "8080"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// (input, expected output, expected unset-variable warnings)
    #[test]
    fn interpolation_table() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("plain text", "plain text", &[]),
            ("$SET", "value", &[]),
            ("${SET}", "value", &[]),
            ("a-$SET-b", "a-value-b", &[]),
            ("$SET.txt", "value.txt", &[]),
            ("${SET}x", "valuex", &[]),
            ("$UNSET", "", &["UNSET"]),
            ("${UNSET}", "", &["UNSET"]),
            ("pre${UNSET}post", "prepost", &["UNSET"]),
            ("${EMPTY}", "", &[]),
            // :- default when unset or empty; - default only when unset
            ("${UNSET:-d}", "d", &[]),
            ("${EMPTY:-d}", "d", &[]),
            ("${SET:-d}", "value", &[]),
            ("${UNSET-d}", "d", &[]),
            ("${EMPTY-d}", "", &[]),
            ("${SET-d}", "value", &[]),
            ("${UNSET:-}", "", &[]),
            ("${UNSET:-a b:c/d}", "a b:c/d", &[]),
            // :+ replacement when set and non-empty; + when set
            ("${SET:+x}", "x", &[]),
            ("${EMPTY:+x}", "", &[]),
            ("${UNSET:+x}", "", &[]),
            ("${SET+x}", "x", &[]),
            ("${EMPTY+x}", "x", &[]),
            ("${UNSET+x}", "", &[]),
            // required, satisfied
            ("${SET:?must}", "value", &[]),
            ("${SET?must}", "value", &[]),
            ("${EMPTY?must}", "", &[]),
            // nested defaults, evaluated only when used
            ("${UNSET:-${B:-c}}", "bee", &[]),
            ("${UNSET:-${ALSO_UNSET:-c}}", "c", &[]),
            ("${UNSET:-${ALSO_UNSET}}", "", &["ALSO_UNSET"]),
            ("${SET:-${NEVER_LOOKED_AT}}", "value", &[]),
            ("${SET:-${NEVER:?not evaluated}}", "value", &[]),
            ("${UNSET:-$B}", "bee", &[]),
            ("${SET:+[$B]}", "[bee]", &[]),
            // $$ escapes
            ("$$", "$", &[]),
            ("$$SET", "$SET", &[]),
            ("$${SET}", "${SET}", &[]),
            ("cost: $$5", "cost: $5", &[]),
            ("${UNSET:-$$}", "$", &[]),
            ("x$$$SET", "x$value", &[]),
            // a closing brace after the expression is literal
            ("${SET}}", "value}", &[]),
            (
                "postgres://u:${SET}@db:${PORT}/x",
                "postgres://u:value@db:8080/x",
                &[],
            ),
        ];
        for (input, want, want_unset) in cases {
            let mut unset = Vec::new();
            let got = interpolate(input, &vars(), &mut unset);
            assert_eq!(got.as_deref(), Ok(*want), "interpolating {input:?}");
            assert_eq!(unset, *want_unset, "unset variables of {input:?}");
        }
    }

    #[test]
    fn interpolation_errors() {
        let required = |name: &str, message: &str| {
            Err(InterpolationError::Required {
                name: name.to_owned(),
                message: message.to_owned(),
            })
        };
        let cases: &[(&str, Result<(), InterpolationError>)] = &[
            ("${UNSET:?must be set}", required("UNSET", "must be set")),
            ("${EMPTY:?must be set}", required("EMPTY", "must be set")),
            ("${UNSET?gone}", required("UNSET", "gone")),
            ("${UNSET:?}", required("UNSET", "")),
            ("${UNSET:?need ${B}}", required("UNSET", "need bee")),
            (
                "${UNSET:-${INNER:?inner missing}}",
                required("INNER", "inner missing"),
            ),
        ];
        for (input, want) in cases {
            let got = interpolate(input, &vars(), &mut Vec::new()).map(|_| ());
            assert_eq!(&got, want, "interpolating {input:?}");
        }
        let deep = format!("{}x{}", "${UNSET:-".repeat(100), "}".repeat(100));
        assert!(matches!(
            interpolate(&deep, &vars(), &mut Vec::new()),
            Err(InterpolationError::Invalid(_))
        ));
        let ok = format!("{}x{}", "${UNSET:-".repeat(10), "}".repeat(10));
        assert_eq!(
            interpolate(&ok, &vars(), &mut Vec::new()),
            Ok("x".to_owned())
        );
        let invalid = [
            "${",
            "${SET",
            "a ${SET:-x",
            "${}",
            "${1A}",
            "${SET:x}",
            "${SET!}",
            "$",
            "a $ b",
            "$1",
            "${ SET}",
        ];
        for input in invalid {
            match interpolate(input, &vars(), &mut Vec::new()) {
                Err(InterpolationError::Invalid(_)) => {}
                other => panic!("{input:?} should be invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn error_messages_name_the_variable() {
        let err = InterpolationError::Required {
            name: "DB_PASSWORD".into(),
            message: "DB_PASSWORD must be set".into(),
        };
        assert_eq!(
            err.to_string(),
            "required variable DB_PASSWORD is missing a value: DB_PASSWORD must be set"
        );
    }
}
