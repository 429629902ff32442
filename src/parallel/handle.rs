//! [`RunHandle`]: a run started by `Parallel::start`, on a thread of its own.
//!
//! Invariant: the plan is on the scheduler thread from `spawn` until the
//! thread hands it back with the report; `wait`, `wait_timeout` (when it
//! returns the report) and `Drop` put it back into the `Parallel`, so the
//! borrow the handle holds ends with the plan home again.
//!
//! May use: what `parallel` may use.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::Parallel;
use crate::plan::Plan;
use crate::report::Report;
use crate::run::{Canceller, RunEvent, Watch};
use crate::scheduler::Scheduler;

/// A started run ([`Parallel::start`]): its events, its cancel and its report.
///
/// - [`events`](Self::events): a receiver of [`RunEvent`]s, in order per
///   label. The channel is unbounded so the run never waits for a slow
///   reader; events nobody reads stay in memory until the receiver (every
///   clone of it) is dropped. It stays readable after the run ended, and
///   is closed after the last event, so `events().iter()` ends with the run.
/// - [`cancel`](Self::cancel) (or a [`Canceller`] from
///   [`canceller`](Self::canceller), for another thread): no task starts any
///   more; running ones are cancelled the way a timeout cancels them; every
///   task not finished is reported `Cancelled`, with an error of kind
///   `Cancelled`. A label still connecting stops when its connection
///   answers (at most its `connect_timeout`).
/// - [`wait`](Self::wait) or [`wait_timeout`](Self::wait_timeout): the
///   report, with the plan back in the `Parallel`.
///
/// Dropping the handle without waiting cancels the run and waits for it.
#[must_use = "dropping a RunHandle cancels the run"]
pub struct RunHandle<'a> {
    pssh: &'a mut Parallel,
    events: Receiver<RunEvent>,
    canceller: Canceller,
    done: Receiver<(Plan, Report)>,
    thread: Option<JoinHandle<()>>,
}

impl<'a> RunHandle<'a> {
    pub(super) fn spawn(pssh: &'a mut Parallel, plan: Plan) -> RunHandle<'a> {
        let (watch, events, canceller) = Watch::new();
        let cfg = pssh.cfg.clone();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        // The plan goes through a channel so that it survives a thread that
        // cannot be started (the closure, and what it owns, is then dropped).
        let (plan_tx, plan_rx) = crossbeam_channel::bounded(1);
        let _ = plan_tx.send((plan, watch));
        let rx = plan_rx.clone();
        let tx = done_tx.clone();
        let started = std::thread::Builder::new()
            .name("ssh-parallel-run".into())
            .spawn(move || {
                if let Ok((mut plan, watch)) = rx.recv() {
                    let report = Scheduler::new(&mut plan, &cfg).watched(watch).run();
                    let _ = tx.send((plan, report));
                }
            });
        let thread = match started {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!(target: "ssh_parallel", "cannot start a run thread ({e}); running on this one");
                if let Ok((mut plan, watch)) = plan_rx.try_recv() {
                    let report = Scheduler::new(&mut plan, &pssh.cfg).watched(watch).run();
                    let _ = done_tx.send((plan, report));
                }
                None
            }
        };
        RunHandle {
            pssh,
            events,
            canceller,
            done,
            thread,
        }
    }

    /// The run's events (clone the receiver to keep it past the handle).
    pub fn events(&self) -> &Receiver<RunEvent> {
        &self.events
    }

    /// Stops the run (see [`Canceller::cancel`]); returns at once.
    pub fn cancel(&self) {
        self.canceller.cancel();
    }

    /// A handle on the cancel for another thread.
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// Whether the run has ended (its report is ready).
    pub fn is_finished(&self) -> bool {
        !self.done.is_empty()
    }

    /// Waits for the run to end and returns its report. A panic of the
    /// scheduler thread (a bug) is resumed here.
    pub fn wait(mut self) -> Report {
        let got = self.done.recv().ok();
        self.finish(got, true).unwrap_or_default()
    }

    /// Waits at most `timeout`: the report if the run ended by then, else
    /// the handle back, to wait again or cancel.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Report, RunHandle<'a>> {
        match self.done.recv_timeout(timeout) {
            Ok(got) => Ok(self.finish(Some(got), true).unwrap_or_default()),
            Err(RecvTimeoutError::Timeout) => Err(self),
            Err(RecvTimeoutError::Disconnected) => Ok(self.finish(None, true).unwrap_or_default()),
        }
    }

    /// Puts the plan back and records the run's errors; `None` (after
    /// resuming its panic when `resume`) if the scheduler thread died.
    fn finish(&mut self, got: Option<(Plan, Report)>, resume: bool) -> Option<Report> {
        let joined = self.thread.take().map(JoinHandle::join);
        match got {
            Some((plan, report)) => {
                self.pssh.plan = plan;
                self.pssh.after_run(&report);
                Some(report)
            }
            None => {
                if let (Some(Err(panic)), true) = (joined, resume) {
                    std::panic::resume_unwind(panic);
                }
                log::error!(target: "ssh_parallel", "the run thread died; its plan is lost");
                None
            }
        }
    }
}

impl Drop for RunHandle<'_> {
    fn drop(&mut self) {
        if self.thread.is_none() && self.done.is_empty() {
            // Already waited for (or run on the caller's thread and taken).
            return;
        }
        self.cancel();
        let got = self.done.recv().ok();
        self.finish(got, false);
    }
}

impl std::fmt::Debug for RunHandle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("finished", &self.is_finished())
            .field("cancelled", &self.canceller.is_cancelled())
            .finish_non_exhaustive()
    }
}
