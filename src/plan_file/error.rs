//! [`PlanFileError`]: why a plan file could not be read or built, as a list
//! of [`Problem`]s, each naming `file:line:column` and the culprit.
//!
//! Invariant: a problem's position is computed from the file's own text (1-based
//! lines and columns, columns in characters), so it always points inside the
//! file; a problem found outside any span (the library's final validation)
//! has no position and says so.
//!
//! May use: `error` (`ErrorKind`, for problems the library reported).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::ErrorKind;

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The file is not valid TOML (or not UTF-8).
    Syntax,
    /// A key or value the schema does not allow: an unknown key, a wrong
    /// type, an unknown policy, a malformed duration, two action keys in one
    /// step, an option that does not apply to the step's action.
    Schema,
    /// A host could not be registered: an invalid label or host
    /// specification, or an OpenSSH configuration problem for it.
    Host,
    /// A selector is malformed.
    InvalidSelector,
    /// A selector names a label no host entry defines.
    UnknownLabel,
    /// A selector pattern matches no label.
    NoMatch,
    /// A goto or or_goto has no later `here` of its tag on some label.
    MissingTag,
    /// A `%VARIABLE%` is defined neither by the library nor by the host.
    UnknownVariable,
    /// Something plan files do not support. No check produces it today;
    /// kept so that code matching on it keeps compiling.
    Unsupported,
    /// A `drain` step names a queue no `[queue.NAME]` table defines.
    UnknownQueue,
    /// A `[queue.NAME]` table no `drain` step names: its jobs would never run.
    UndrainedQueue,
    /// The library refused a setting or a step; the kind is the library's.
    Library(ErrorKind),
}

/// One problem of a plan file: where, what kind, and a message naming the culprit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    path: PathBuf,
    /// 1-based line and column (in characters); `None` for a problem of the
    /// plan as a whole.
    position: Option<(usize, usize)>,
    kind: ProblemKind,
    message: String,
}

impl Problem {
    /// A problem at byte range `span` of `text` (the file's contents).
    pub(crate) fn at(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        kind: ProblemKind,
        message: String,
    ) -> Problem {
        Problem {
            path: path.to_owned(),
            position: span.map(|s| position(text, s.start)),
            kind,
            message,
        }
    }

    /// The plan file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line, when the problem has a place in the file.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|(l, _)| l)
    }

    /// The 1-based column (in characters), when the problem has a place in the file.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|(_, c)| c)
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// What is wrong, naming the culprit (without the position).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `FILE:LINE:COLUMN: MESSAGE`, as compilers write it.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Why a plan file could not be loaded or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanFileError {
    /// The file could not be read.
    #[error("cannot read plan file {}: {source}", path.display())]
    Read {
        /// The plan file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read, and these problems were found in it, in file order
    /// (one line each when displayed).
    #[error("{}", list(problems))]
    Invalid {
        /// Every problem found, at least one.
        problems: Vec<Problem>,
    },
}

impl PlanFileError {
    /// The problems found in the file (none for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            PlanFileError::Invalid { problems } => problems,
            PlanFileError::Read { .. } => &[],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn positions_count_lines_and_characters() {
        let t = "a = 1\nü = \"x\"\n";
        assert_eq!(position(t, 0), (1, 1));
        assert_eq!(position(t, 6), (2, 1));
        assert_eq!(position(t, 8), (2, 2));
        assert_eq!(position(t, 7), (2, 1)); // inside ü: its start
        assert_eq!(position(t, 999), (3, 1));
    }
}
