//! The job file of `queue` and `broadcast`: its format, parsing, the
//! expansion of parametrised jobs, and the canonical form a job is written
//! back in (the consumed file, a parametrised entry expanded in place).
//!
//! The format is line-oriented, so that taking the first job is removing
//! the first entry's line, and an operator can edit the file with any
//! editor, `sed`, or `echo >>`:
//!
//! * a blank line, or one whose first non-blank character is `#`, is
//!   ignored;
//! * a line starting with `{` is a *parametrised job*: a TOML inline table
//!   with a `command` string and parameters, each a value or a list of
//!   values (`{ command = "train --lr %LR% --seed %SEED%", LR = ["1e-3",
//!   "1e-4"], SEED = [1, 2] }`); it stands for the cartesian product of its
//!   lists (here 4 jobs), the first parameter varying slowest;
//! * any other line is one shell command, run as it is (surrounding blanks
//!   trimmed).
//!
//! `%NAME%` in a command is a parameter of its line, or one of the host
//! variables the library fills in on each host (`%LABEL%`, `%HOST%`,
//! `%USER%`, `%PORT%`); `%%` is a literal `%`. Any other name is an error:
//! a typo is caught when the file is read, not when the job runs.
//!
//! Why TOML inline tables rather than Pegasus' YAML: one entry is one line,
//! so the consumer removes jobs with a line splice (no re-serialisation of a
//! document, whose comments and layout the operator would lose), a plain
//! line stays a plain shell command (no quoting of `:` or `#` as YAML
//! needs), and the `toml` crate is already the format of plan files.
//!
//! Invariant: parsing never panics, whatever the input; every error names
//! `file:line`; `parse(canonical(c))` gives back exactly the job `c`; a
//! line expands to at most [`MAX_JOBS_PER_LINE`] jobs.
//!
//! May use: `toml`, `thiserror`; nothing of this crate.

mod table;
#[cfg(test)]
mod tests;

use std::fmt;

/// The job file format, for `--help`.
pub const HELP: &str = "\
The queue file: one job a line, taken from the top.
  # a comment (so is a blank line)
  python train.py --seed 1 > out-%HOST%.log      a shell command, as it is
  { command = \"train --lr %LR% --seed %SEED%\", LR = [\"1e-3\", \"1e-4\"], SEED = [1, 2] }
                        a parametrised job (a TOML inline table): one job per
                        combination of its lists (here 4), first list slowest
%NAME% is a parameter of its line or a host variable (%LABEL%, %HOST%, %USER%,
%PORT%, filled in on each host); %% is a literal %; any other name is an error.
A shell command starting with { goes in a table: { command = '{ a; b; }' }.
Errors name FILE:LINE. A job is moved, as the one line that stands for it, to
QUEUEFILE.consumed when a host starts it (a parametrised line is first
expanded in place, one line per job). Edit the file with `queue --edit`: the
runner takes the queue's lock (QUEUEFILE.lock) for every change it makes.

Examples:
  ssh-parallel queue -w 'gpu[1-4]' jobs.txt
  ssh-parallel queue -w 'gpu[1-4]' --daemon jobs.txt     (waits for more; Ctrl-C stops)
  ssh-parallel queue --edit jobs.txt                     (EDITOR=nano, --editor vim)
  ssh-parallel broadcast -w 'web[01-20]' -e setup.txt    (stop at the first failure)

Exit status: 0 every job succeeded; 1 a job failed or did not run; with -S the
largest exit status of a job (255 for one that gave none); 2 usage error
(including a bad queue file at the start); 130 interrupted (Ctrl-C).";

/// The most jobs one parametrised line may stand for: past it the product is
/// far more likely a mistake than a plan, and expanding it would exhaust
/// memory.
pub const MAX_JOBS_PER_LINE: usize = 100_000;

/// The variables each host fills in (`Host` in the library): left in a job
/// for the library to expand on the host that runs it.
pub const HOST_VARIABLES: [&str; 4] = ["LABEL", "HOST", "USER", "PORT"];

/// Why a job file, or a line of it, is refused; with [`JobFileError`]'s
/// `file:line` in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The line starts with `{` but is no TOML inline table.
    #[error(
        "column {column}: not a job table: {message} (a line starting with `{{` is a parametrised job; \
         a shell command starting with `{{` goes in one: {{ command = '...' }})"
    )]
    Table {
        /// 1-based column of the error in the line.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// The table has no `command` key.
    #[error("the job table has no `command`")]
    MissingCommand,
    /// `command` is not a string.
    #[error("`command` must be a string, not {0}")]
    CommandType(&'static str),
    /// The command is empty or blank.
    #[error("the command is empty")]
    EmptyCommand,
    /// A parameter name that `%NAME%` cannot spell.
    #[error("parameter name {0:?} is not made of letters, digits and `_`")]
    ParamName(String),
    /// A parameter named like a host variable.
    #[error("parameter {0} is a host variable, which each host fills in: rename it")]
    ReservedParam(String),
    /// A parameter whose value is a table, or a list holding a list or table.
    #[error("parameter {name}: {found} is not a value (use a string, number, boolean or a list of them)")]
    ParamType {
        /// The parameter.
        name: String,
        /// What was found instead.
        found: &'static str,
    },
    /// A parameter with an empty list: the product would be empty.
    #[error("parameter {0} has no values: the job would expand to nothing")]
    EmptyList(String),
    /// `%NAME%` naming neither a parameter nor a host variable.
    #[error("unknown variable %{name}% (known here: {known}; write %% for a literal %)")]
    UnknownVariable {
        /// The name between the `%`s.
        name: String,
        /// The names that are known on this line.
        known: String,
    },
    /// The product of the parameter lists is too large.
    #[error("the parameters expand to {0} jobs, more than the {MAX_JOBS_PER_LINE} a line may stand for")]
    TooMany(u128),
}

/// A refused job file: which file, which line, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct JobFileError {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub problem: Problem,
}

/// The parameters of a job line, in the order written: each name with its
/// values.
type Params = Vec<(String, Vec<String>)>;

/// One job entry: a plain command line, or a parametrised job standing for
/// the product of its parameter lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 0-based index of the entry's line in the file.
    pub index: usize,
    /// The command with `%NAME%` placeholders; validated: every name is a
    /// parameter of `params`, a host variable, or `%%`.
    template: String,
    /// Parameters in the order written, each with at least one value; empty
    /// for a plain line. The product of their lengths is at most
    /// [`MAX_JOBS_PER_LINE`].
    params: Params,
}

impl Entry {
    /// How many jobs the entry stands for.
    pub fn count(&self) -> usize {
        self.params.iter().map(|(_, v)| v.len()).product()
    }

    /// The jobs, in product order (the first parameter varies slowest): each
    /// is the command with its parameters substituted and host variables
    /// (and `%%`) left for the library.
    pub fn jobs(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.count());
        let mut pick = vec![0usize; self.params.len()];
        loop {
            out.push(substitute(&self.template, &|name| {
                let i = self.params.iter().position(|(n, _)| n == name)?;
                Some(self.params[i].1[pick[i]].as_str())
            }));
            // An odometer over the lists, the last one turning fastest.
            let mut k = self.params.len();
            loop {
                if k == 0 {
                    return out;
                }
                k -= 1;
                pick[k] += 1;
                if pick[k] < self.params[k].1.len() {
                    break;
                }
                pick[k] = 0;
            }
        }
    }
}

/// The entries of a job file's `text`, in order; `file` names it in errors.
/// The whole text is checked: one bad line refuses the file, so that a
/// half-done edit never runs.
pub fn parse(file: &str, text: &str) -> Result<Vec<Entry>, JobFileError> {
    let mut entries = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let fail = |problem| JobFileError {
            file: file.to_owned(),
            line: index + 1,
            problem,
        };
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (template, params) = if line.starts_with('{') {
            table::parse(line).map_err(fail)?
        } else {
            (line.to_owned(), Vec::new())
        };
        check_variables(&template, &params).map_err(fail)?;
        entries.push(Entry {
            index,
            template,
            params,
        });
    }
    Ok(entries)
}

/// The one line that stands for exactly the job `command` (no parameters):
/// the command itself when a plain line holds it unchanged, else a job table
/// with a TOML basic string, which never spans lines. Its `%`s are written
/// as they are: they are the library's business from here on.
pub fn canonical(command: &str) -> String {
    let plain = !command.is_empty()
        && command.trim() == command
        && !command.starts_with('#')
        && !command.starts_with('{')
        && !command.contains(['\n', '\r']);
    if plain {
        command.to_owned()
    } else {
        format!("{{ command = {} }}", table::basic_string(command))
    }
}

/// Every `%NAME%` of `template` is a parameter, a host variable or `%%`.
fn check_variables(template: &str, params: &Params) -> Result<(), Problem> {
    let mut unknown = None;
    let known = |name: &str| params.iter().any(|(n, _)| n == name);
    for_each_variable(template, &mut |name| {
        if !name.is_empty() && !HOST_VARIABLES.contains(&name) && !known(name) && unknown.is_none() {
            unknown = Some(name.to_owned());
        }
    });
    match unknown {
        None => Ok(()),
        Some(name) => {
            let mut names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
            names.extend(HOST_VARIABLES);
            let known = names.iter().map(|n| format!("%{n}%")).collect::<Vec<_>>().join(", ");
            Err(Problem::UnknownVariable { name, known })
        }
    }
}

/// A piece of a command: text, or a `%NAME%` (`""` for `%%`).
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Calls `f` with the pieces of `text` in order, finding `%NAME%`s as the
/// library does: leftmost first, never overlapping, a name being letters,
/// digits and `_`.
fn scan<'a>(text: &'a str, f: &mut dyn FnMut(Piece<'a>)) {
    let mut rest = text;
    let mut from = 0;
    while let Some(start) = rest[from..].find('%').map(|i| i + from) {
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if after[name_len..].starts_with('%') {
            f(Piece::Text(&rest[..start]));
            f(Piece::Var(&after[..name_len]));
            rest = &after[name_len + 1..];
            from = 0;
        } else {
            // A lone `%` is text; the next one may open a variable.
            from = start + 1;
        }
    }
    f(Piece::Text(rest));
}

/// Calls `f` with the name of every `%NAME%` in `text` (`""` for `%%`).
fn for_each_variable(text: &str, f: &mut dyn FnMut(&str)) {
    scan(text, &mut |p| {
        if let Piece::Var(name) = p {
            f(name);
        }
    });
}

/// `template` with each `%NAME%` that `value` knows replaced by its value,
/// `%`s of the value doubled so that the library reads them as literal;
/// other variables and `%%` stay as they are.
fn substitute<'v>(template: &str, value: &dyn Fn(&str) -> Option<&'v str>) -> String {
    let mut out = String::with_capacity(template.len());
    scan(template, &mut |p| match p {
        Piece::Text(t) => out.push_str(t),
        Piece::Var(name) => match value(name).filter(|_| !name.is_empty()) {
            Some(v) => out.push_str(&v.replace('%', "%%")),
            None => {
                out.push('%');
                out.push_str(name);
                out.push('%');
            }
        },
    });
    out
}

impl fmt::Display for Entry {
    /// The entry's command template, as the user wrote it (parameters not
    /// shown): for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
    }
}
