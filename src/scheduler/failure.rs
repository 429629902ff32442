//! Failures: the error policy (task, else host, else global, else Abort)
//! resolved into a `Decision` and carried out: retry, ignore, stop the label
//! (Done, Abort) or every label (AbortAll).
//!
//! Invariant: a failed task is recorded once, when it is final (a retry
//! records nothing); a stopped label's `stopped` is set before its queue is
//! discarded, so the discard knows whether its joins fail.

use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::state::{Discard, State};
use super::Scheduler;
use crate::error::{Error, ErrorKind};
use crate::plan::LabelId;
use crate::policy::{Decision, ErrorContext, OnError};
use crate::report::{TaskReport, TaskStatus};

impl Scheduler<'_> {
    /// Applies the error policy to the head task's failure. Returns whether
    /// the label can go on advancing now.
    pub(super) fn fail(&mut self, l: LabelId, node: NodeIndex, e: Error) -> bool {
        self.fail_with(l, node, e, None)
    }

    pub(super) fn fail_with(&mut self, l: LabelId, node: NodeIndex, e: Error, report: Option<TaskReport>) -> bool {
        let (policy, desc) = match self.plan.task(node) {
            Some(t) => (
                t.action
                    .opts()
                    .and_then(|o| o.on_error.clone())
                    .or_else(|| self.plan.labels[l].host.on_error.clone())
                    .or_else(|| self.cfg.on_error.clone())
                    .unwrap_or(OnError::Abort),
                t.desc.clone(),
            ),
            None => (OnError::Abort, Arc::from("marker")),
        };
        let name = self.name(l);
        let attempt = self.rt[l].attempt.max(1);
        let decision = if e.kind() == ErrorKind::Aborted {
            Decision::Abort
        } else {
            let ctx = ErrorContext {
                label: &name,
                error: &e,
                task: &desc,
                attempt,
                // A failed join cannot succeed on a retry.
                retryable: e.kind() != ErrorKind::JoinFailed,
                labels: self.plan.view(&self.reports),
            };
            match (policy.decide(&ctx), e.kind()) {
                (Decision::Retry(_), ErrorKind::GotoFailed) => Decision::Ignore,
                (Decision::Retry(_), ErrorKind::JoinFailed) => Decision::Abort,
                (d, _) => d,
            }
        };
        log::info!(target: "ssh_parallel", "{e} -> {decision:?}");
        let mut r = report.unwrap_or_else(|| {
            let mut r = self.new_report(node, TaskStatus::Failed);
            if let Some((wall, mono)) = self.rt[l].started {
                r.started = Some(wall);
                r.duration = mono.elapsed();
            }
            r
        });
        r.attempts = attempt;
        r.reruns = self.rt[l].reruns;
        match decision {
            Decision::Retry(d) => {
                self.rt[l].reconnects = 0;
                self.rt[l].timed_out = false;
                self.give_job_back(l, node);
                self.delay(l, d, true);
                false
            }
            Decision::Ignore => {
                r.status = TaskStatus::Ignored;
                r.error = Some(Box::new(e));
                self.record(l, node, r);
                self.plan.pop(l);
                self.rt[l].reset_task();
                true
            }
            Decision::Done | Decision::Abort | Decision::AbortAll => {
                r.status = TaskStatus::Failed;
                r.error = Some(Box::new(e.clone()));
                // A job that never started here stays for the other drainers.
                if !self.give_back_unstarted(l, node) {
                    self.record(l, node, r);
                    self.plan.pop(l);
                    self.rt[l].reset_task();
                }
                self.reports[l].error = Some(e);
                self.rt[l].stopped = Some(if decision == Decision::Done {
                    Discard::Done
                } else {
                    Discard::Abort
                });
                if decision == Decision::AbortAll && self.abort_all.is_none() {
                    self.abort_all = Some(name);
                    self.wake_all_for_abort();
                }
                true
            }
        }
    }

    /// Under AbortAll every label not in the middle of a task stops now.
    pub(super) fn wake_all_for_abort(&mut self) {
        self.release_held();
        for l in 0..self.rt.len() {
            match self.rt[l].state {
                State::WaitSlot | State::WaitJoin | State::WaitJob | State::Delayed => self.make_ready(l),
                State::WaitConn => {
                    self.release_slot(l);
                    self.make_ready(l);
                }
                _ => {}
            }
        }
    }
}
