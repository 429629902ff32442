//! Watching a run and stopping it: the [`RunEvent`]s a started run sends
//! (`Parallel::start`), and the [`Canceller`] that stops it.
//!
//! Events go through one unbounded crossbeam channel: the scheduler never
//! blocks on a slow consumer (or one that never reads), at the price of
//! holding unread events in memory. Output lines are the only events whose
//! number is not bounded by the plan; they are sent only for commands, and
//! only in a started run (`Parallel::run` creates no channel, taps no output
//! and pays nothing).
//!
//! Invariants: per label, a task's `Started` (one per attempt) comes before
//! its `Line`s and its `Line`s before its `Finished`; every task of the
//! report has exactly one `Finished`, carrying the same `TaskReport`; a
//! label's `LabelDone` is its last event (a job retried on another label
//! also has the `Started` of its earlier tries on the labels that gave it back).
//!
//! May use: `error` and `report` only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::error::Error;
use crate::report::{JobId, TaskReport};

/// Which stream of a command an output line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Something that happened in a started run (see [`RunHandle`](crate::RunHandle)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RunEvent {
    /// A remote task (command, transfer, parsub, connect) was handed to its
    /// transport; sent again for every retry and re-run (`attempt` counts
    /// runs, re-runs after a lost connection included). Local steps (sub,
    /// join, here, goto, stop) are not started, only finished. A job of a
    /// [`JobQueue`](crate::JobQueue) that a label gives back under a retry
    /// policy may start again on another label: it has a `Started` on each
    /// label that tried it and one `Finished`, on the label that ran it last.
    Started {
        /// The label.
        label: Arc<str>,
        /// The task's position in the label's queue, as in [`TaskReport::seq`].
        seq: usize,
        /// What the task is, as in [`TaskReport::description`].
        description: Arc<str>,
        /// 1 for the first run.
        attempt: u32,
        /// The job, for a task taken from a [`JobQueue`](crate::JobQueue),
        /// as in [`TaskReport::job`].
        job: Option<JobId>,
    },
    /// One line a command printed, without its newline, as lossy UTF-8 text
    /// (like [`Output::lines`](crate::Output::lines) callbacks); a last line
    /// without a newline is sent when the command ends. Sent in addition to
    /// whatever the command's own [`Output`](crate::Output) does with it.
    Line {
        /// The label.
        label: Arc<str>,
        /// The task's position in the label's queue.
        seq: usize,
        /// Stdout or stderr.
        stream: OutputStream,
        /// The line.
        line: String,
    },
    /// A task reached its final outcome: the very report the run's
    /// [`Report`](crate::Report) holds for it.
    Finished {
        /// The label.
        label: Arc<str>,
        /// How it ended.
        report: TaskReport,
    },
    /// The label's queue is done; nothing more happens on it in this run.
    LabelDone {
        /// The label.
        label: Arc<str>,
        /// The error that stopped it, as in [`LabelReport::error`](crate::LabelReport::error).
        error: Option<Error>,
    },
}

impl RunEvent {
    /// The label the event is about.
    pub fn label(&self) -> &str {
        match self {
            RunEvent::Started { label, .. }
            | RunEvent::Line { label, .. }
            | RunEvent::Finished { label, .. }
            | RunEvent::LabelDone { label, .. } => label,
        }
    }
}

/// Stops a started run: no task starts any more, running ones are cancelled
/// the way a task timeout cancels them, and every task not finished is
/// reported [`Cancelled`](crate::TaskStatus::Cancelled) with an error of
/// kind [`Cancelled`](crate::ErrorKind::Cancelled). Cloneable and `Send`, so
/// a signal handler or another thread may hold one; cancelling twice, or
/// after the run ended, does nothing.
#[derive(Clone, Debug)]
pub struct Canceller {
    tx: Sender<()>,
    flag: Arc<AtomicBool>,
}

impl Canceller {
    /// Asks the run to stop; returns at once.
    pub fn cancel(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            // The scheduler may have ended and dropped its end: nothing to stop.
            let _ = self.tx.try_send(());
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// The scheduler's end of a watched run.
pub(crate) struct Watch {
    pub(crate) events: Sender<RunEvent>,
    /// `None` once the cancel was taken (or every `Canceller` is gone).
    pub(crate) cancel: Option<Receiver<()>>,
}

impl Watch {
    /// A new watch, the receiver of its events and its canceller.
    pub(crate) fn new() -> (Watch, Receiver<RunEvent>, Canceller) {
        let (events, rx) = crossbeam_channel::unbounded();
        let (tx, cancel) = crossbeam_channel::bounded(1);
        let canceller = Canceller {
            tx,
            flag: Arc::default(),
        };
        let watch = Watch {
            events,
            cancel: Some(cancel),
        };
        (watch, rx, canceller)
    }

    pub(crate) fn send(&self, ev: RunEvent) {
        // Nobody listening any more is not the run's problem.
        let _ = self.events.send(ev);
    }
}
