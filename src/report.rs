//! The run report: every task's outcome, per label; and [`LabelsView`], the
//! read-only window on a run in progress that subs and error callbacks see.
//!
//! Invariant: a run's `LabelReport`s are in label registration order, one per
//! label, so a label's position in the plan is its position here.
//!
//! Serialization (`json`) and grouping (`gather`) live in submodules.
//!
//! May use: `error` only (a leaf: everything else may use it).

mod gather;
mod jobs;
mod json;

pub use gather::{fold_labels, OutputGroup};
pub use jobs::{JobEntry, JobId};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::Error;

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskStatus {
    /// It ran and succeeded.
    Succeeded,
    /// It failed and its failure stopped the label (policy Done, Abort or AbortAll).
    Failed,
    /// It failed and the failure was ignored (policy Ignore, or a retried goto).
    Ignored,
    /// It failed (a non-zero exit status, a failed transfer) and `or_goto`
    /// jumped past it; its error is attached.
    Jumped,
    /// A goto or stop skipped it; it never ran.
    Skipped,
    /// Its label stopped before it ran (an error, or AbortAll elsewhere).
    Cancelled,
}

impl TaskStatus {
    /// Whether the task ran to success.
    pub fn is_success(self) -> bool {
        self == TaskStatus::Succeeded
    }
}

/// The outcome of one task on one label.
#[derive(Clone)]
pub struct TaskReport {
    pub(crate) seq: usize,
    pub(crate) description: Arc<str>,
    pub(crate) status: TaskStatus,
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) started: Option<SystemTime>,
    pub(crate) duration: Duration,
    pub(crate) output: Option<Box<TaskOutput>>,
    pub(crate) error: Option<Box<Error>>,
    pub(crate) attempts: u32,
    pub(crate) reruns: u32,
    /// The job it ran, for a task taken from a job queue.
    pub(crate) job: Option<JobId>,
}

/// Captured output of a task.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskOutput {
    pub(crate) stdout: Option<Vec<u8>>,
    pub(crate) stderr: Option<Vec<u8>>,
    pub(crate) stdout_truncated: bool,
    pub(crate) stderr_truncated: bool,
}

impl TaskReport {
    pub(crate) fn new(seq: usize, description: Arc<str>, status: TaskStatus) -> TaskReport {
        TaskReport {
            seq,
            description,
            status,
            exit_code: None,
            signal: None,
            started: None,
            duration: Duration::ZERO,
            output: None,
            error: None,
            attempts: 0,
            reruns: 0,
            job: None,
        }
    }

    /// The job it ran, when the task was taken from a
    /// [`JobQueue`](crate::JobQueue) by a [`Drain`](crate::Drain).
    pub fn job(&self) -> Option<JobId> {
        self.job
    }

    /// The task's position in its label's queue (0-based, in push order).
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// What the task was (`command `uptime``, `join web*`, ...).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// How it ended.
    pub fn status(&self) -> TaskStatus {
        self.status
    }

    /// The command's exit status, when it exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// The signal that ended the command, when one did.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// When its last attempt started (`None` if it never ran).
    pub fn started(&self) -> Option<SystemTime> {
        self.started
    }

    /// How long its last attempt took.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Captured stdout (`None` unless captured).
    pub fn stdout(&self) -> Option<&[u8]> {
        self.output.as_ref().and_then(|o| o.stdout.as_deref())
    }

    /// Captured stderr (`None` unless captured).
    pub fn stderr(&self) -> Option<&[u8]> {
        self.output.as_ref().and_then(|o| o.stderr.as_deref())
    }

    /// Captured stdout as text (lossy UTF-8), empty when not captured.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(self.stdout().unwrap_or_default()).into_owned()
    }

    /// Captured stderr as text (lossy UTF-8), empty when not captured.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(self.stderr().unwrap_or_default()).into_owned()
    }

    /// Whether stdout went over its capture limit and was cut.
    pub fn stdout_truncated(&self) -> bool {
        self.output.as_ref().is_some_and(|o| o.stdout_truncated)
    }

    /// Whether stderr went over its capture limit and was cut.
    pub fn stderr_truncated(&self) -> bool {
        self.output.as_ref().is_some_and(|o| o.stderr_truncated)
    }

    /// The error of its last attempt, if it failed.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_deref()
    }

    /// How many times it was tried (1 + retries under a retry policy; 0 if it
    /// never ran). Re-runs after a lost connection are counted apart, in
    /// [`reruns`](Self::reruns).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How many times it was re-run because its connection was lost.
    pub fn reruns(&self) -> u32 {
        self.reruns
    }
}

impl fmt::Debug for TaskReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TaskReport");
        d.field("seq", &self.seq)
            .field("task", &self.description)
            .field("status", &self.status)
            .field("attempts", &self.attempts);
        if self.reruns > 0 {
            d.field("reruns", &self.reruns);
        }
        if let Some(j) = self.job {
            d.field("job", &j.0);
        }
        if let Some(c) = self.exit_code {
            d.field("exit_code", &c);
        }
        if let Some(s) = self.signal {
            d.field("signal", &s);
        }
        if let Some(e) = &self.error {
            d.field("error", &e.to_string());
        }
        d.field("duration", &self.duration).finish()
    }
}

/// Everything one label did in a run.
#[derive(Debug, Clone)]
pub struct LabelReport {
    pub(crate) label: Arc<str>,
    pub(crate) tasks: Vec<TaskReport>,
    pub(crate) error: Option<Error>,
}

impl LabelReport {
    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its tasks, in queue order (join markers are internal and not listed).
    pub fn tasks(&self) -> &[TaskReport] {
        &self.tasks
    }

    /// The error that stopped the label, if one did (ignored failures are in
    /// [`tasks`](Self::tasks) only).
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Whether the label ended without a recorded error.
    pub fn success(&self) -> bool {
        self.error.is_none()
    }

    /// The tasks whose status is `status`.
    pub fn with_status(&self, status: TaskStatus) -> impl Iterator<Item = &TaskReport> {
        self.tasks.iter().filter(move |t| t.status == status)
    }
}

/// What a sub or an error callback may look at while a run goes on: every
/// label and its results so far. The one place label look-ups by name happen
/// for them, so `SubContext` and `ErrorContext` answer alike.
#[derive(Clone, Copy)]
pub(crate) struct LabelsView<'a> {
    /// Label name to its position (in the plan and in `reports`).
    index: &'a HashMap<Arc<str>, usize>,
    /// One entry per registered label, in registration order.
    reports: &'a [LabelReport],
}

impl<'a> LabelsView<'a> {
    pub(crate) fn new(index: &'a HashMap<Arc<str>, usize>, reports: &'a [LabelReport]) -> LabelsView<'a> {
        LabelsView { index, reports }
    }

    fn report(&self, label: &str) -> Option<&'a LabelReport> {
        self.index.get(label).and_then(|&i| self.reports.get(i))
    }

    /// The outcomes so far of `label`'s tasks.
    pub(crate) fn results(&self, label: &str) -> Option<&'a [TaskReport]> {
        self.report(label).map(LabelReport::tasks)
    }

    /// The error that stopped `label`, if any.
    pub(crate) fn label_error(&self, label: &str) -> Option<&'a Error> {
        self.report(label).and_then(LabelReport::error)
    }

    /// Every registered label, in registration order.
    pub(crate) fn labels(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.reports.iter().map(LabelReport::label)
    }
}

/// The result of [`Parallel::run`](crate::Parallel::run).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub(crate) labels: Vec<LabelReport>,
    pub(crate) duration: Duration,
    /// Jobs given up on: left in a queue no label drained any more.
    pub(crate) jobs_not_run: Vec<TaskReport>,
}

impl Report {
    /// Whether no label recorded an error and no job was left unrun.
    pub fn success(&self) -> bool {
        self.labels.iter().all(LabelReport::success) && self.jobs_not_run.is_empty()
    }

    /// Every label's report, in the order the labels were added.
    pub fn labels(&self) -> &[LabelReport] {
        &self.labels
    }

    /// One label's report.
    pub fn label(&self, label: &str) -> Option<&LabelReport> {
        self.labels.iter().find(|l| &*l.label == label)
    }

    /// The labels' recorded errors as (label, error), sorted by label.
    pub fn errors(&self) -> Vec<(&str, &Error)> {
        let mut v: Vec<_> = self
            .labels
            .iter()
            .filter_map(|l| l.error.as_ref().map(|e| (&*l.label, e)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// How long the run took.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// How many tasks ended with each outcome, over all labels.
    pub fn count(&self, status: TaskStatus) -> usize {
        self.labels.iter().map(|l| l.with_status(status).count()).sum()
    }
}

impl fmt::Display for Report {
    /// A readable per-label summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.labels.iter().map(|l| l.label.len()).max().unwrap_or(5).max(5);
        for l in &self.labels {
            let ok = l.with_status(TaskStatus::Succeeded).count();
            let mut notes = Vec::new();
            for (status, name) in [
                (TaskStatus::Ignored, "ignored"),
                (TaskStatus::Jumped, "jumped"),
                (TaskStatus::Skipped, "skipped"),
                (TaskStatus::Cancelled, "cancelled"),
            ] {
                let n = l.with_status(status).count();
                if n > 0 {
                    notes.push(format!("{n} {name}"));
                }
            }
            let state = match &l.error {
                None => "ok    ".to_owned(),
                Some(e) => format!("FAILED ({})", e.kind()),
            };
            write!(f, "{:width$}  {state}  {ok}/{} tasks succeeded", l.label, l.tasks.len())?;
            if !notes.is_empty() {
                write!(f, ", {}", notes.join(", "))?;
            }
            writeln!(f)?;
            if let Some(e) = &l.error {
                writeln!(f, "{:width$}    {e}", "")?;
            }
        }
        if !self.jobs_not_run.is_empty() {
            writeln!(f, "{} jobs not run", self.jobs_not_run.len())?;
            if let Some(e) = self.jobs_not_run[0].error() {
                writeln!(f, "    {e}")?;
            }
        }
        let failed = self.labels.iter().filter(|l| !l.success()).count();
        write!(
            f,
            "{} labels, {} failed, {:.2?}",
            self.labels.len(),
            failed,
            self.duration
        )
    }
}
