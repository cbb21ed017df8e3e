//! Splitting a string `command:`/`entrypoint:` into words as a POSIX shell would, without
//! expanding anything: `'…'` is literal, `"…"` honours `\"`, `\\`, `\$` and `` \` ``, a
//! backslash outside quotes escapes the next character, and unquoted whitespace separates
//! words. `$` is kept as written (compose interpolation has already run).

pub(crate) fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once anything was written, even `''`.
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in {text:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(format!("trailing backslash in {text:?}")),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        let cases: &[(&str, &[&str])] = &[
            (
                "redis-server --appendonly yes",
                &["redis-server", "--appendonly", "yes"],
            ),
            ("  a   b\tc\n", &["a", "b", "c"]),
            ("", &[]),
            (
                "sh -c 'echo hello world'",
                &["sh", "-c", "echo hello world"],
            ),
            (
                r#"sh -c "echo \"hi\" \$HOME""#,
                &["sh", "-c", r#"echo "hi" $HOME"#],
            ),
            (r#"a\ b c"#, &["a b", "c"]),
            ("'' x", &["", "x"]),
            (r#"pre'mid dle'"post""#, &["premid dlepost"]),
            (r#""a\nb""#, &[r"a\nb"]),
            ("echo $HOME", &["echo", "$HOME"]),
            (
                "celery -A tasks worker -l info",
                &["celery", "-A", "tasks", "worker", "-l", "info"],
            ),
        ];
        for (text, want) in cases {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(split_words(text), Ok(want), "{text:?}");
        }
        for bad in ["'open", "\"open", "trailing\\"] {
            assert!(split_words(bad).is_err(), "{bad:?}");
        }
    }
}
