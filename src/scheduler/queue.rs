//! Walking a label's queue: the local steps (here, goto, stop, join,
//! markers) done on the spot, the report entry every task ends as, jumps,
//! discards and join releases.
//!
//! Invariant: a task leaves its queue (`Plan::pop`) only right after its
//! report entry is recorded, so every pushed task appears in the report
//! exactly once; a discarded marker releases its join exactly once.

use std::time::SystemTime;

use petgraph::graph::NodeIndex;

use super::state::{Discard, State};
use super::Scheduler;
use crate::error::{Error, ErrorKind};
use crate::plan::LabelId;
use crate::report::{TaskReport, TaskStatus};
use crate::task::Action;

impl Scheduler<'_> {
    pub(super) fn advance(&mut self, l: LabelId) {
        loop {
            let Some(node) = self.plan.labels[l].head else {
                self.finish_label(l);
                return;
            };
            if let Some(how) = self.rt[l].stopped {
                self.discard_from(l, node, how);
                continue;
            }
            if self.stop_if_cancelled(l, node) || self.stop_if_not_started(l, node) {
                continue;
            }
            if let Some(by) = self.abort_all.clone() {
                let msg = format!("aborted before this task because label {by} failed under AbortAll");
                let e = self.task_error(l, node, ErrorKind::Aborted, msg);
                log::info!(target: "ssh_parallel", "[{}] aborted (AbortAll from {by})", self.name(l));
                self.reports[l].error = Some(e);
                self.rt[l].stopped = Some(Discard::Abort);
                continue;
            }
            if let Some(j) = self.plan.marker(node) {
                self.plan.pop(l);
                self.release_join(j, l, true);
                continue;
            }
            // Join nodes are never in a queue: the head is a marker or a task.
            let Some((step_action, join)) = self.plan.task(node).map(|t| (t.action.clone(), t.join)) else {
                unreachable!("join nodes are never in a queue")
            };
            match &*step_action {
                Action::Here(_) => {
                    self.complete_simple(l, node);
                }
                Action::Goto(g) => {
                    let tag = g.tag.clone();
                    if !self.jump(l, node, &tag, TaskStatus::Succeeded, None) {
                        let e = self.task_error(
                            l,
                            node,
                            ErrorKind::GotoFailed,
                            format!("no `here {tag}` later in the queue"),
                        );
                        self.rt[l].attempt = 1;
                        if !self.fail(l, node, e) {
                            return;
                        }
                    }
                }
                Action::Stop(_) => {
                    self.jump(l, node, "END", TaskStatus::Succeeded, None);
                }
                Action::Join(_) => {
                    let Some(j) = join else {
                        self.complete_simple(l, node);
                        continue;
                    };
                    let Some(js) = self.plan.join(j) else {
                        unreachable!("a join task's node is a join")
                    };
                    if js.remaining > 0 {
                        if let Some(e) = self.join_on_later_wave(l, node, j) {
                            self.rt[l].attempt = 1;
                            if !self.fail(l, node, e) {
                                return;
                            }
                            continue;
                        }
                        self.rt[l].state = State::WaitJoin;
                        return;
                    }
                    if let Some(by) = js.failed_by.clone() {
                        let msg = format!("join {} failed: label {by} was aborted", js.selector);
                        let e = self.task_error(l, node, ErrorKind::JoinFailed, msg);
                        self.rt[l].attempt = 1;
                        if !self.fail(l, node, e) {
                            return;
                        }
                    } else {
                        self.complete_simple(l, node);
                    }
                }
                Action::Sub(_) => {
                    if !self.run_sub(l, node, &step_action) {
                        return;
                    }
                }
                Action::Drain(d) => {
                    if !self.drain_step(l, node, d) {
                        return;
                    }
                }
                _ => {
                    // Remote (or detached) work: needs a slot, maybe a connection.
                    self.start_remote(l, &step_action);
                    return;
                }
            }
        }
    }

    /// Records a local task that needs no work (here, a released join) and pops it.
    pub(super) fn complete_simple(&mut self, l: LabelId, node: NodeIndex) {
        let mut r = self.new_report(node, TaskStatus::Succeeded);
        r.attempts = 1;
        r.started = Some(SystemTime::now());
        self.record(l, node, r);
        self.plan.pop(l);
        self.rt[l].reset_task();
    }

    pub(super) fn new_report(&self, node: NodeIndex, status: TaskStatus) -> TaskReport {
        match self.plan.task(node) {
            Some(t) => TaskReport::new(t.seq, t.desc.clone(), status),
            None => TaskReport::new(0, "marker".into(), status),
        }
    }

    /// Appends a task's final report and calls its `on_done`.
    pub(super) fn record(&mut self, l: LabelId, node: NodeIndex, mut report: TaskReport) {
        self.job_recorded(node, &mut report);
        if let Some(f) = self.plan.task(node).and_then(|t| t.action.opts()?.on_done.clone()) {
            let name = self.name(l);
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&name, &report))).is_err() {
                log::error!(target: "ssh_parallel", "[{name}] on_done callback panicked");
            }
        }
        if self.watch.is_some() {
            let label = self.name(l);
            self.emit(|| crate::run::RunEvent::Finished {
                label,
                report: report.clone(),
            });
        }
        self.reports[l].tasks.push(report);
    }

    pub(super) fn task_error(&self, l: LabelId, node: NodeIndex, kind: ErrorKind, msg: impl Into<String>) -> Error {
        let mut e = Error::new(kind, msg).with_label(self.name(l));
        if let Some(t) = self.plan.task(node) {
            e = e.with_task(format!("task #{} ({})", t.seq, t.desc));
        }
        e
    }

    /// Jumps from `node` (the head) to the first later `here tag`; `END` without
    /// one empties the queue. The head itself is recorded with `status`.
    /// Returns false, leaving the queue untouched, when the tag is missing.
    pub(super) fn jump(
        &mut self,
        l: LabelId,
        node: NodeIndex,
        tag: &str,
        status: TaskStatus,
        report: Option<TaskReport>,
    ) -> bool {
        let target = self.plan.find_here(node, tag);
        if target.is_none() && tag != "END" {
            return false;
        }
        let mut r = report.unwrap_or_else(|| {
            let mut r = self.new_report(node, status);
            r.attempts = 1;
            r.started = Some(SystemTime::now());
            r
        });
        r.status = status;
        self.record(l, node, r);
        self.plan.pop(l);
        self.rt[l].reset_task();
        while let Some(n) = self.plan.labels[l].head {
            if Some(n) == target {
                break;
            }
            self.discard_one(l, n, Discard::Skip);
        }
        true
    }

    /// Drops the head `node` and everything after it.
    pub(super) fn discard_from(&mut self, l: LabelId, node: NodeIndex, how: Discard) {
        let mut cur = Some(node);
        while let Some(n) = cur {
            self.discard_one(l, n, how);
            cur = self.plan.labels[l].head;
        }
    }

    /// Drops the head task `n` without running it.
    pub(super) fn discard_one(&mut self, l: LabelId, n: NodeIndex, how: Discard) {
        debug_assert_eq!(self.plan.labels[l].head, Some(n));
        if self.discard_job(l, n) {
            return;
        }
        match self.plan.marker(n) {
            Some(j) => {
                self.plan.pop(l);
                let failed = matches!(how, Discard::Abort | Discard::Cancel | Discard::NotStarted);
                self.release_join(j, l, !failed);
            }
            None => {
                let status = if how == Discard::Skip {
                    TaskStatus::Skipped
                } else {
                    TaskStatus::Cancelled
                };
                let mut r = self.new_report(n, status);
                match how {
                    Discard::Cancel => r.error = Some(Box::new(self.not_started_error(l, n))),
                    Discard::NotStarted => r.error = Some(Box::new(self.not_started_by_rollout(l, n))),
                    Discard::Skip | Discard::Done | Discard::Abort => {}
                }
                self.record(l, n, r);
                self.plan.pop(l);
            }
        }
    }

    /// One marker of join `j` was reached (`ok`) or discarded by an abort.
    pub(super) fn release_join(&mut self, j: NodeIndex, by: LabelId, ok: bool) {
        let name = self.name(by);
        let Some(js) = self.plan.join_mut(j) else {
            return;
        };
        js.remaining -= 1;
        if !ok && js.failed_by.is_none() {
            js.failed_by = Some(name);
        }
        if js.remaining > 0 {
            return;
        }
        for w in self.plan.waiters(j) {
            if let Some(label) = self.plan.label_of(w) {
                if self.rt[label].state == State::WaitJoin && self.plan.labels[label].head == Some(w) {
                    self.make_ready(label);
                }
            }
        }
    }

    pub(super) fn finish_label(&mut self, l: LabelId) {
        if self.rt[l].state == State::Finished {
            return;
        }
        self.release_slot(l);
        self.rt[l].state = State::Finished;
        self.active -= 1;
        self.emit(|| crate::run::RunEvent::LabelDone {
            label: self.name(l),
            error: self.reports[l].error.clone(),
        });
        // A label keeps its connection between tasks and closes it when done.
        self.close_conn(l);
        self.rollout_finished(l);
    }

    /// Labels stuck with nothing in flight (a bug if it ever happens): fail
    /// them rather than hang.
    pub(super) fn fail_stuck(&mut self) {
        for l in 0..self.rt.len() {
            if self.rt[l].state == State::Finished {
                continue;
            }
            let state = self.rt[l].state;
            log::error!(target: "ssh_parallel", "[{}] stuck in {state:?} with nothing in flight; aborting it", self.name(l));
            let e = Error::new(
                ErrorKind::Aborted,
                format!("internal scheduler error: label stuck in {state:?}"),
            )
            .with_label(self.name(l));
            self.reports[l].error.get_or_insert(e);
            self.rt[l].stopped = Some(Discard::Abort);
            self.release_slot(l);
            self.make_ready(l);
        }
    }
}
