//! Plan files: a whole plan (hosts, defaults, steps) written in TOML, read
//! into a [`Parallel`] ready to run. `schema` is the file as written (serde
//! types with spans), `build` turns it into hosts, settings and actions,
//! `check` finds what would go wrong before anything connects (unknown
//! labels, selectors matching nothing, jumps without their `here`, unknown
//! `%VARIABLES%`, queues nobody drains), `queue` fills the job queues,
//! `error` is [`PlanFileError`] and its [`Problem`]s.
//!
//! Invariant: building never connects anywhere and never pushes a step
//! unless every check passed, so a plan with problems yields all of them
//! (each naming `file:line:column`) and no `Parallel`. Jobs go into fresh
//! queues while checking (the library's own refusal of a job is a problem
//! at its line); those queues are closed at once and reachable only through
//! the `Parallel` built, so a failed build leaves nothing behind.
//!
//! May use: `parallel` (the public `Parallel` API it builds), `host`,
//! `policy`, `task`, `plan` (selectors), `error`. Nothing uses it but `lib`.
//!
//! Job queues: a `[queue.NAME]` table (`jobs = [...]` and/or
//! `[[queue.NAME.job]]` tables) is a fixed bag of jobs, pushed and closed at
//! build time, so the run ends once the bag is empty; a step `drain = "NAME"`
//! makes the labels it selects take jobs from it. A queue no step drains is
//! an error ([`ProblemKind::UndrainedQueue`]): its jobs could never run. An
//! empty queue is allowed (its drainers finish at once).

mod build;
mod check;
mod error;
mod queue;
mod schema;

use std::fmt;
use std::path::{Path, PathBuf};

pub use error::{PlanFileError, Problem, ProblemKind};

use crate::parallel::Parallel;
use crate::task::Action;
use schema::RawPlan;

/// A plan file, parsed and checked against the schema; [`build`](Self::build)
/// makes the [`Parallel`] it describes.
///
/// ```
/// use ssh_parallel::PlanFile;
/// let plan = PlanFile::parse("deploy.toml", r#"
///     [defaults]
///     on_error = "abort"
///
///     [hosts]
///     web1 = { local = true, vars = { ROLE = "front" } }
///     db1 = { local = true }
///
///     [[step]]
///     on = "web*"
///     run = "echo %ROLE% on %LABEL%"
///
///     [[step]]
///     on = "db1"
///     join = "web*"
///
///     [[step]]
///     on = "db1"
///     run = "echo the web tier is done"
/// "#)?;
/// let mut pssh = plan.build()?;
/// let report = pssh.run();
/// assert!(report.success());
/// assert_eq!(report.label("web1").unwrap().tasks()[0].stdout_str(), "front on web1\n");
/// # Ok::<(), ssh_parallel::PlanFileError>(())
/// ```
pub struct PlanFile {
    /// Where the text came from (named in every problem).
    path: PathBuf,
    /// The file's text: spans index into it.
    text: String,
    /// The text as read against the schema.
    raw: RawPlan,
}

impl PlanFile {
    /// Reads and parses the plan file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<PlanFile, PlanFileError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| PlanFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        PlanFile::parse_bytes(path, &bytes)
    }

    /// Parses `text`, naming `path` in problems (it is not read).
    pub fn parse(path: impl Into<PathBuf>, text: &str) -> Result<PlanFile, PlanFileError> {
        let path = path.into();
        let raw = parse_raw(&path, text)?;
        Ok(PlanFile {
            path,
            text: text.to_owned(),
            raw,
        })
    }

    /// Parses bytes that should be UTF-8 TOML, naming `path` in problems.
    pub fn parse_bytes(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<PlanFile, PlanFileError> {
        let path = path.into();
        match std::str::from_utf8(bytes) {
            Ok(text) => PlanFile::parse(path, text),
            Err(e) => {
                // Positions are counted in the valid part, which is all there is to show.
                let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned();
                let p = Problem::at(
                    &path,
                    &valid,
                    Some(valid.len()..valid.len()),
                    ProblemKind::Syntax,
                    format!("the file is not UTF-8 (byte {} is invalid)", e.valid_up_to()),
                );
                Err(PlanFileError::Invalid { problems: vec![p] })
            }
        }
    }

    /// The file this plan came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the plan and builds the [`Parallel`] it describes, every step
    /// pushed; nothing connects. Every problem found is reported at once,
    /// in file order.
    pub fn build(&self) -> Result<Parallel, PlanFileError> {
        self.build_with(|a| a)
    }

    /// [`build`](Self::build), with each step's action passed through `edit`
    /// just before it is pushed (once per step, not per label): how a
    /// program adds what the file does not say, such as where output goes.
    pub fn build_with(&self, edit: impl FnMut(Action) -> Action) -> Result<Parallel, PlanFileError> {
        build::build(self, edit)
    }

    /// Checks the plan as [`build`](Self::build) does, without keeping the result.
    pub fn check(&self) -> Result<(), PlanFileError> {
        self.build().map(drop)
    }
}

impl fmt::Debug for PlanFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanFile")
            .field("path", &self.path)
            .field("hosts", &self.raw.hosts.as_ref().map_or(0, |h| h.get_ref().0.len()))
            .field("steps", &self.raw.step.len())
            .field("queues", &self.raw.queue.0.len())
            .finish()
    }
}

/// Parses the TOML against the schema. A file that is not TOML at all is a
/// [`ProblemKind::Syntax`] problem; TOML the schema refuses, a
/// [`ProblemKind::Schema`] one.
fn parse_raw(path: &Path, text: &str) -> Result<RawPlan, PlanFileError> {
    toml::from_str::<RawPlan>(text).map_err(|e| {
        let kind = match toml::from_str::<serde::de::IgnoredAny>(text) {
            Err(_) => ProblemKind::Syntax,
            Ok(_) => ProblemKind::Schema,
        };
        let message = e.message().trim_end().replace('\n', "; ");
        PlanFileError::Invalid {
            problems: vec![Problem::at(path, text, e.span(), kind, message)],
        }
    })
}

impl Parallel {
    /// Reads, checks and builds the plan file at `path`:
    /// `PlanFile::load(path)?.build()`. See [`PlanFile`] and the README's
    /// "Plan files" for the schema.
    pub fn from_plan_file(path: impl AsRef<Path>) -> Result<Parallel, PlanFileError> {
        PlanFile::load(path)?.build()
    }
}
