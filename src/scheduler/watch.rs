//! A started run: its events (task started and finished, output lines,
//! label done) and its cancel.
//!
//! Invariants: with no `watch` (`Parallel::run`) nothing here allocates or
//! sends; a cancel is taken once, after which every label stops at its next
//! boundary (`advance`), every running task gets one `Cancel` (the request a
//! timeout sends), and nothing new starts, so the run ends as soon as the
//! transports have answered.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvError};
use petgraph::graph::NodeIndex;

use super::state::{Discard, State};
use super::Scheduler;
use crate::error::{Error, ErrorKind};
use crate::plan::LabelId;
use crate::report::{TaskReport, TaskStatus};
use crate::run::{OutputStream, RunEvent};
use crate::task::Action;
use crate::transport::Event;

impl Scheduler<'_> {
    /// The next transport event, or `None` at `deadline` or when the run was
    /// cancelled (then handled here).
    pub(super) fn wait_watched(&mut self, cancel: &Receiver<()>, deadline: Option<Instant>) -> Option<Event> {
        let timeout = deadline.map_or_else(crossbeam_channel::never, crossbeam_channel::at);
        crossbeam_channel::select! {
            recv(self.events) -> ev => ev.ok(),
            recv(cancel) -> c => {
                if let Some(w) = &mut self.watch {
                    w.cancel = None;
                }
                // Every canceller dropped unused (`Err`) is no request to stop.
                if c != Err(RecvError) {
                    self.cancel_run();
                }
                None
            }
            recv(timeout) -> _ => None,
        }
    }

    fn cancel_run(&mut self) {
        if self.cancelled {
            return;
        }
        log::info!(target: "ssh_parallel", "run cancelled");
        self.cancelled = true;
        for l in 0..self.rt.len() {
            let rt = &mut self.rt[l];
            if rt.state == State::Running && !rt.timed_out && !rt.cancelled {
                rt.cancelled = true;
                let token = rt.token;
                self.send_cancel(l, token);
            }
        }
        // Waiting labels stop now; connecting ones when their connection answers.
        self.wake_all_for_abort();
    }

    /// In a cancelled run, stops label `l` at its head `node`; returns
    /// whether it did.
    pub(super) fn stop_if_cancelled(&mut self, l: LabelId, node: NodeIndex) -> bool {
        if !self.cancelled {
            return false;
        }
        let e = self.task_error(l, node, ErrorKind::Cancelled, "the run was cancelled before this task");
        self.reports[l].error.get_or_insert(e);
        self.rt[l].stopped = Some(Discard::Cancel);
        true
    }

    /// The head task ran while the run was cancelled: it is reported
    /// cancelled, and its label stops.
    pub(super) fn finish_cancelled(&mut self, l: LabelId, node: NodeIndex, mut r: TaskReport) {
        let e = self.task_error(
            l,
            node,
            ErrorKind::Cancelled,
            "cancelled while running: the run was cancelled",
        );
        r.status = TaskStatus::Cancelled;
        r.error = Some(Box::new(e.clone()));
        self.record(l, node, r);
        self.plan.pop(l);
        self.rt[l].reset_task();
        self.reports[l].error.get_or_insert(e);
        self.rt[l].stopped = Some(Discard::Cancel);
    }

    /// The error a task dropped by a cancelled run is reported with.
    pub(super) fn not_started_error(&self, l: LabelId, node: NodeIndex) -> Error {
        self.task_error(l, node, ErrorKind::Cancelled, "the run was cancelled before this task")
    }

    pub(super) fn emit(&self, ev: impl FnOnce() -> RunEvent) {
        if let Some(w) = &self.watch {
            w.send(ev());
        }
    }

    /// What to send to the transport for the head `node`: in a watched run a
    /// command's output is also tapped, line by line, into `Line` events.
    pub(super) fn watched_action(&self, l: LabelId, node: Option<NodeIndex>, action: &Arc<Action>) -> Arc<Action> {
        let (Some(w), Action::Command(c)) = (&self.watch, &**action) else {
            return action.clone();
        };
        let seq = node.and_then(|n| self.plan.task(n)).map_or(0, |t| t.seq);
        let label = self.name(l);
        let tap = |stream: OutputStream| -> crate::task::output::LineFn {
            let (tx, label) = (w.events.clone(), label.clone());
            Arc::new(move |_: &str, line: &str| {
                let _ = tx.send(RunEvent::Line {
                    label: label.clone(),
                    seq,
                    stream,
                    line: line.to_owned(),
                });
            })
        };
        let mut c = c.clone();
        c.stdout = c.stdout.tapped(tap(OutputStream::Stdout));
        c.stderr = c.stderr.tapped(tap(OutputStream::Stderr));
        Arc::new(Action::Command(c))
    }
}
