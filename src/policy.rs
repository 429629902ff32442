//! Error policies: what happens to a label's queue when one of its tasks
//! fails. [`OnError`] is what users write; [`OnError::decide`] resolves it
//! (bounds, callbacks) into the [`Decision`] the scheduler carries out.
//!
//! Invariant: `decide` always ends (callbacks that return callbacks are
//! followed a few levels, then the label aborts) and never panics (a
//! panicking callback aborts the label).
//!
//! May use: `error` and `report` only (the run's results, through
//! `LabelsView`); never the plan or the scheduler.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::report::{LabelsView, TaskReport};

/// The closure behind [`OnError::callback`].
pub type PolicyFn = Arc<dyn Fn(&ErrorContext<'_>) -> OnError + Send + Sync>;

/// What to do when a task fails. Looked up on the task, else its host, else the
/// scheduler; the default is [`OnError::Abort`].
#[derive(Clone)]
#[non_exhaustive]
pub enum OnError {
    /// Record the failure in the report and go on with the next task; the label
    /// still counts as successful.
    Ignore,
    /// Stop this label: drop the rest of its queue and record the error. Its
    /// join markers release their joins as success.
    Done,
    /// Stop this label like `Done`, but its join markers fail their joins, so
    /// labels waiting on them fail too (the default).
    Abort,
    /// `Abort` here, and every other label stops at its next task boundary with
    /// [`ErrorKind::Aborted`](crate::ErrorKind::Aborted).
    AbortAll,
    /// Run the failed task again, without limit.
    Retry,
    /// Run the failed task again, up to a number of attempts in all: built
    /// by [`OnError::retry`].
    RetryUpTo(RetryPolicy),
    /// Ask a closure, which returns one of the other policies.
    Callback(PolicyFn),
}

/// A bounded retry, built by [`OnError::retry`] or [`OnError::retry_forever`];
/// it converts into [`OnError`] wherever a policy is taken. Only a retry has
/// a delay and a policy for when its attempts are spent, so only this type
/// has the methods that set them.
///
/// ```
/// use ssh_parallel::{Command, OnError};
/// use std::time::Duration;
/// let c = Command::new("flaky").on_error(OnError::retry(3).delay(Duration::from_secs(2)).then(OnError::Ignore));
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// The most times the task runs in all (the first run included).
    pub max_attempts: u32,
    /// The pause before each new attempt.
    pub delay: Duration,
    /// What to do once the attempts are spent (default `Abort`).
    pub exhausted: Box<OnError>,
}

impl RetryPolicy {
    /// The pause before each new attempt (default none).
    pub fn delay(self, delay: Duration) -> RetryPolicy {
        RetryPolicy { delay, ..self }
    }

    /// The policy applied once the attempts are spent (default `Abort`).
    pub fn then(self, exhausted: impl Into<OnError>) -> RetryPolicy {
        RetryPolicy {
            exhausted: Box::new(exhausted.into()),
            ..self
        }
    }
}

impl From<RetryPolicy> for OnError {
    fn from(r: RetryPolicy) -> OnError {
        OnError::RetryUpTo(r)
    }
}

impl OnError {
    /// Retry up to `max_attempts` runs in all (at least one), then `Abort`
    /// unless [`RetryPolicy::then`] says otherwise.
    pub fn retry(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            delay: Duration::ZERO,
            exhausted: Box::new(OnError::Abort),
        }
    }

    /// Retry without a practical limit (`u32::MAX` runs): [`OnError::Retry`]
    /// with a [`delay`](RetryPolicy::delay) to set.
    pub fn retry_forever() -> RetryPolicy {
        RetryPolicy {
            max_attempts: u32::MAX,
            ..OnError::retry(1)
        }
    }

    /// Decide with a closure that receives the [`ErrorContext`].
    pub fn callback(f: impl Fn(&ErrorContext<'_>) -> OnError + Send + Sync + 'static) -> OnError {
        OnError::Callback(Arc::new(f))
    }
}

impl fmt::Debug for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnError::Ignore => f.write_str("Ignore"),
            OnError::Done => f.write_str("Done"),
            OnError::Abort => f.write_str("Abort"),
            OnError::AbortAll => f.write_str("AbortAll"),
            OnError::Retry => f.write_str("Retry"),
            OnError::RetryUpTo(r) => f.debug_tuple("RetryUpTo").field(r).finish(),
            OnError::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// What an [`OnError::callback`] closure is told about the failure.
pub struct ErrorContext<'a> {
    pub(crate) label: &'a str,
    pub(crate) error: &'a Error,
    pub(crate) task: &'a str,
    pub(crate) attempt: u32,
    /// False when another run cannot change the outcome (a failed join):
    /// bounded retries go straight to their `exhausted` policy.
    pub(crate) retryable: bool,
    /// Every label and its results so far.
    pub(crate) labels: LabelsView<'a>,
}

impl fmt::Debug for ErrorContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorContext")
            .field("label", &self.label)
            .field("error", &self.error)
            .field("task", &self.task)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl ErrorContext<'_> {
    /// The label whose task failed.
    pub fn label(&self) -> &str {
        self.label
    }

    /// The error.
    pub fn error(&self) -> &Error {
        self.error
    }

    /// A description of the failed task.
    pub fn task(&self) -> &str {
        self.task
    }

    /// Which run of the task failed: 1 for the first, 2 for the first retry...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The scheduler's view: the outcomes so far of `label`'s tasks in this run.
    pub fn results(&self, label: &str) -> Option<&[TaskReport]> {
        self.labels.results(label)
    }

    /// The error that stopped `label` in this run, if any.
    pub fn label_error(&self, label: &str) -> Option<&Error> {
        self.labels.label_error(label)
    }

    /// Every registered label.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.labels.labels()
    }
}

/// A policy with callbacks and bounds resolved: what the scheduler does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Ignore,
    Done,
    Abort,
    AbortAll,
    Retry(Duration),
}

impl OnError {
    /// Resolves this policy for one failure. Callbacks may return callbacks;
    /// after a few levels we stop asking and abort, rather than loop.
    pub(crate) fn decide(&self, ctx: &ErrorContext<'_>) -> Decision {
        let mut policy = self.clone();
        for _ in 0..8 {
            match policy {
                OnError::Ignore => return Decision::Ignore,
                OnError::Done => return Decision::Done,
                OnError::Abort => return Decision::Abort,
                OnError::AbortAll => return Decision::AbortAll,
                OnError::Retry => return Decision::Retry(Duration::ZERO),
                OnError::RetryUpTo(r) => {
                    if ctx.retryable && ctx.attempt < r.max_attempts {
                        return Decision::Retry(r.delay);
                    }
                    policy = *r.exhausted;
                }
                OnError::Callback(f) => {
                    let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ctx)));
                    policy = match next {
                        Ok(p) => p,
                        Err(_) => {
                            log::error!(target: "ssh_parallel", "[{}] on_error callback panicked; aborting the label", ctx.label);
                            OnError::Abort
                        }
                    };
                }
            }
        }
        Decision::Abort
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_policy_converts_with_its_delay_and_fallback() {
        let p: OnError = OnError::retry(0)
            .delay(Duration::from_secs(2))
            .then(OnError::Ignore)
            .into();
        let OnError::RetryUpTo(r) = p else { panic!("{p:?}") };
        assert_eq!((r.max_attempts, r.delay), (1, Duration::from_secs(2)));
        assert!(matches!(*r.exhausted, OnError::Ignore));
        assert_eq!(OnError::retry_forever().max_attempts, u32::MAX);
    }
}
