//! The closures: [`Sub`] runs on the scheduler thread and sees a
//! [`SubContext`] (the results so far, and `push`, so a running plan can
//! grow); [`Parsub`] runs on a worker thread with a `Session` for its label.
//!
//! Invariant: a `SubContext` lives only for one call of a sub and is the
//! only way a running plan changes; every label it pushed to is recorded in
//! `touched`, so the scheduler can wake labels that had finished.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Action, TaskOptions};
use crate::error::{BoxError, Error, Result};
use crate::plan::{IntoSelector, LabelId, Plan, Selection};
use crate::report::{LabelReport, LabelsView, TaskReport};
use crate::session::Session;

pub(crate) type SubFn = Arc<Mutex<Box<dyn FnMut(&mut SubContext<'_>) -> Result<(), BoxError> + Send>>>;
pub(crate) type ParsubFn = Arc<dyn Fn(&str, &mut Session) -> Result<(), BoxError> + Send + Sync>;

/// A closure run on the scheduler thread: it sees earlier results and can push
/// new tasks, so a running plan can grow.
#[derive(Clone)]
pub struct Sub {
    pub(crate) f: SubFn,
    pub(crate) opts: TaskOptions,
}

impl Sub {
    /// Wraps `f`; an `Err` or a panic becomes the task's `Local` error.
    pub fn new(f: impl FnMut(&mut SubContext<'_>) -> Result<(), BoxError> + Send + 'static) -> Sub {
        Sub {
            f: Arc::new(Mutex::new(Box::new(f))),
            opts: TaskOptions::default(),
        }
    }
}

impl fmt::Debug for Sub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sub").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// A closure run on a worker thread with a session for its label.
#[derive(Clone)]
pub struct Parsub {
    pub(crate) f: ParsubFn,
    pub(crate) no_ssh: bool,
    pub(crate) opts: TaskOptions,
}

impl Parsub {
    /// Wraps `f(label, session)`; an `Err` or a panic becomes the task's `Local` error.
    pub fn new(f: impl Fn(&str, &mut Session) -> Result<(), BoxError> + Send + Sync + 'static) -> Parsub {
        Parsub {
            f: Arc::new(f),
            no_ssh: false,
            opts: TaskOptions::default(),
        }
    }

    /// Runs without a connection: the session handle cannot execute anything,
    /// and the task takes no connection slot.
    pub fn no_ssh(mut self) -> Self {
        self.no_ssh = true;
        self
    }
}

impl fmt::Debug for Parsub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parsub")
            .field("no_ssh", &self.no_ssh)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// What a [`Sub`] closure can see and do.
pub struct SubContext<'a> {
    /// The label the sub runs for.
    label: LabelId,
    /// Which run of the sub this is (1 for the first).
    attempt: u32,
    /// The running plan; `push` is the only thing a sub may do to it.
    plan: &'a mut Plan,
    /// The run's results so far, one entry per label, in registration order.
    reports: &'a [LabelReport],
    /// Every label this sub pushed to (duplicates allowed), for the
    /// scheduler to wake.
    touched: &'a mut Vec<LabelId>,
}

impl<'a> SubContext<'a> {
    pub(crate) fn new(
        label: LabelId,
        attempt: u32,
        plan: &'a mut Plan,
        reports: &'a [LabelReport],
        touched: &'a mut Vec<LabelId>,
    ) -> SubContext<'a> {
        SubContext {
            label,
            attempt,
            plan,
            reports,
            touched,
        }
    }

    fn view(&self) -> LabelsView<'_> {
        self.plan.view(self.reports)
    }

    /// The label this sub runs for.
    pub fn label(&self) -> &str {
        self.reports[self.label].label()
    }

    /// Which run of this sub it is: 1, then 2... on retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The outcomes so far of `label`'s tasks in this run.
    pub fn results(&self, label: &str) -> Option<&[TaskReport]> {
        self.view().results(label)
    }

    /// The outcome of this label's task just before this sub.
    pub fn last_result(&self) -> Option<&TaskReport> {
        self.reports[self.label].tasks().last()
    }

    /// The error that stopped `label` in this run, if any.
    pub fn label_error(&self, label: &str) -> Option<&Error> {
        self.view().label_error(label)
    }

    /// Pushes a new task while the plan runs, exactly as `Parallel::push`.
    pub fn push(&mut self, selector: impl IntoSelector, action: impl Into<Action>) -> Result<Selection> {
        let (sel, touched) = self.plan.push(selector.into_selector()?, action.into())?;
        self.touched.extend(touched);
        Ok(sel)
    }

    /// Every registered label.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.view().labels()
    }
}

impl fmt::Debug for SubContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubContext")
            .field("label", &self.label())
            .finish_non_exhaustive()
    }
}
