//! Diagnostics: one problem (or warning) found while loading a compose file, located by a
//! dotted path into the file (`services.web.ports[0]`) and, when known, its line.

use std::fmt;

/// One problem found in a compose file. Errors and warnings share this shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the file: `services.web.ports[0]`; empty for the file as a whole.
    pub path: String,
    /// 1-based line of the offending node, when the parser knows it.
    pub line: Option<usize>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(path: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, None) => write!(f, "{}", self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
        }
    }
}

impl std::error::Error for Diagnostic {}

/// Collects errors and warnings while loading; loading goes on after an error so that every
/// problem is reported at once.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Diags {
    pub fn error(&mut self, path: &str, line: Option<usize>, message: impl Into<String>) {
        self.errors.push(Diagnostic::new(path, line, message));
    }

    pub fn warn(&mut self, path: &str, line: Option<usize>, message: impl Into<String>) {
        self.warnings.push(Diagnostic::new(path, line, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_path_line_and_message() {
        let cases = [
            (
                Diagnostic::new("services.web.ports[0]", Some(12), "bad port"),
                "services.web.ports[0] (line 12): bad port",
            ),
            (
                Diagnostic::new("services.web", None, "oops"),
                "services.web: oops",
            ),
            (Diagnostic::new("", Some(3), "syntax"), "line 3: syntax"),
            (Diagnostic::new("", None, "empty"), "empty"),
        ];
        for (diag, want) in cases {
            assert_eq!(diag.to_string(), want);
        }
    }
}
