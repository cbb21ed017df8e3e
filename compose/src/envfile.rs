//! `.env`-style files, as docker compose reads them for `env_file:`.
//!
//! One `KEY=VALUE` per line; blank lines and `#` comments are skipped; `export KEY=VALUE` is
//! accepted; spaces around `=` are dropped. Values: unquoted (trimmed, a ` #` starts a
//! comment), `'single'` (literal, may span lines), or `"double"` (may span lines; `\n`, `\r`,
//! `\t`, `\\`, `\"` and `\$` are escapes). Later keys win. `$` is kept literally: values are
//! not interpolated.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;

/// Parse the text of an env file. The error carries the 1-based line it was found on.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, Diagnostic> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut vars = BTreeMap::new();
    let mut cur = Cursor {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
    };
    loop {
        cur.skip_blanks();
        match cur.peek() {
            None => break,
            Some('\n') => {
                cur.bump();
                continue;
            }
            Some('#') => {
                cur.skip_to_eol();
                continue;
            }
            Some(_) => {}
        }
        let line = cur.line;
        let err = |message: String| Diagnostic::new("", Some(line), message);
        let mut key =
            cur.take_while(|c| !(c == '=' || c == '\n' || c == ' ' || c == '\t' || c == '\r'));
        if key == "export" && matches!(cur.peek(), Some(' ' | '\t')) {
            cur.skip_blanks();
            key =
                cur.take_while(|c| !(c == '=' || c == '\n' || c == ' ' || c == '\t' || c == '\r'));
        }
        if key.is_empty() {
            return Err(err("expected KEY=VALUE, found \"=\" with no key".to_owned()));
        }
        if let Some(bad) = key
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(err(format!(
                "invalid character {bad:?} in variable name {key:?}"
            )));
        }
        cur.skip_blanks();
        if cur.peek() != Some('=') {
            return Err(err(format!("expected \"=\" after {key:?} (KEY=VALUE)")));
        }
        cur.bump();
        let had_blank = cur.skip_blanks();
        let value = match cur.peek() {
            Some('\'') => {
                cur.bump();
                let mut value = String::new();
                loop {
                    match cur.bump() {
                        Some('\'') => break,
                        Some(c) => value.push(c),
                        None => {
                            return Err(err(format!(
                                "unterminated single-quoted value for {key:?}"
                            )));
                        }
                    }
                }
                cur.expect_line_end(&key, line)?;
                value
            }
            Some('"') => {
                cur.bump();
                let mut value = String::new();
                loop {
                    match cur.bump() {
                        Some('"') => break,
                        Some('\\') => match cur.bump() {
                            Some('n') => value.push('\n'),
                            Some('r') => value.push('\r'),
                            Some('t') => value.push('\t'),
                            Some(c @ ('\\' | '"' | '$')) => value.push(c),
                            Some(c) => {
                                value.push('\\');
                                value.push(c);
                            }
                            None => {
                                return Err(err(format!(
                                    "unterminated double-quoted value for {key:?}"
                                )));
                            }
                        },
                        Some(c) => value.push(c),
                        None => {
                            return Err(err(format!(
                                "unterminated double-quoted value for {key:?}"
                            )));
                        }
                    }
                }
                cur.expect_line_end(&key, line)?;
                value
            }
            Some('#') if had_blank => {
                cur.skip_to_eol();
                String::new()
            }
            _ => {
                let raw = cur.take_while(|c| c != '\n');
                let mut end = raw.len();
                let mut prev_blank = false;
                for (i, c) in raw.char_indices() {
                    if c == '#' && prev_blank {
                        end = i;
                        break;
                    }
                    prev_blank = c == ' ' || c == '\t';
                }
                raw[..end].trim_end().to_owned()
            }
        };
        vars.insert(key, value);
    }
    Ok(vars)
}

struct Cursor {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skip spaces, tabs and carriage returns; true if any were skipped.
    fn skip_blanks(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if !keep(c) {
                break;
            }
            out.push(c);
            self.bump();
        }
        out
    }

    fn skip_to_eol(&mut self) {
        self.take_while(|c| c != '\n');
    }

    /// After a quoted value only blanks or a comment may follow on the line.
    fn expect_line_end(&mut self, key: &str, line: usize) -> Result<(), Diagnostic> {
        self.skip_blanks();
        match self.peek() {
            None | Some('\n') => Ok(()),
            Some('#') => {
                self.skip_to_eol();
                Ok(())
            }
            Some(c) => Err(Diagnostic::new(
                "",
                Some(line),
                format!("unexpected {c:?} after the quoted value of {key:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, String)> {
        match parse_env_file(text) {
            Ok(vars) => vars.into_iter().collect(),
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn env_file_syntax() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("A=1\nB=two\n", &[("A", "1"), ("B", "two")]),
            ("# comment\n\n  \nA=1", &[("A", "1")]),
            ("export A=1\nexport\tB=2", &[("A", "1"), ("B", "2")]),
            ("A = spaced value  \n", &[("A", "spaced value")]),
            (
                "A=value # comment\nB=val#ue\nC= # only comment",
                &[("A", "value"), ("B", "val#ue"), ("C", "")],
            ),
            ("A=\nB=", &[("A", ""), ("B", "")]),
            ("A='lit $X \\n # kept'", &[("A", "lit $X \\n # kept")]),
            (
                "A=\"a\\nb \\\"q\\\" \\$x \\\\ \\w\"",
                &[("A", "a\nb \"q\" $x \\ \\w")],
            ),
            (
                "A=\"multi\nline\"\nB=2",
                &[("A", "multi\nline"), ("B", "2")],
            ),
            (
                "A='multi\nline' # c\nB=2",
                &[("A", "multi\nline"), ("B", "2")],
            ),
            ("A=1\r\nB=2\r\n", &[("A", "1"), ("B", "2")]),
            ("A=1\nA=2", &[("A", "2")]),
            ("A=x=y", &[("A", "x=y")]),
            ("A=${NOT_EXPANDED}", &[("A", "${NOT_EXPANDED}")]),
            ("a.b-c_d=1", &[("a.b-c_d", "1")]),
            ("export=1", &[("export", "1")]),
            ("\u{feff}A=1", &[("A", "1")]),
        ];
        for (text, want) in cases {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(parsed(text), want, "{text:?}");
        }
    }

    #[test]
    fn env_file_errors_carry_the_line() {
        let cases = [
            ("A=1\nNOVALUE\n", 2),
            ("A=1\n=2", 2),
            ("A=1\n\nB='open\nC=3", 3),
            ("A=\"open", 1),
            ("A='x' y", 1),
            ("BAD KEY=1", 1),
            ("K$Y=1", 1),
        ];
        for (text, line) in cases {
            match parse_env_file(text) {
                Err(d) => assert_eq!(d.line, Some(line), "{text:?}: {d}"),
                Ok(v) => panic!("{text:?} should fail, got {v:?}"),
            }
        }
    }
}
