//! Running a `Sub` on the scheduler thread: the closure gets a
//! `SubContext`, and every label it pushed to is woken (a finished one
//! becomes active again).
//!
//! Invariant: a sub's panic or error becomes the task's `Local` error; the
//! labels it pushed to are woken even when it failed.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use petgraph::graph::NodeIndex;

use super::state::State;
use super::Scheduler;
use crate::error::{BoxError, Error, ErrorKind};
use crate::plan::LabelId;
use crate::report::TaskStatus;
use crate::task::{Action, SubContext};

impl Scheduler<'_> {
    /// Runs a sub on this thread. Returns whether the label goes on advancing.
    pub(super) fn run_sub(&mut self, l: LabelId, node: NodeIndex, action: &Arc<Action>) -> bool {
        let Action::Sub(sub) = &**action else { return true };
        self.mark_started(l);
        self.rt[l].attempt += 1;
        let attempt = self.rt[l].attempt;
        let started = (SystemTime::now(), Instant::now());
        self.rt[l].started = Some(started);
        let mut touched = std::mem::take(&mut self.touched);
        let result = {
            let mut ctx = SubContext::new(l, attempt, self.plan, &self.reports, &mut touched);
            let f = sub.f.clone();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (f.lock())(&mut ctx)))
        };
        for &t in &touched {
            if self.rt[t].state == State::Finished {
                self.active += 1;
                self.rollout_revived(t);
                self.make_ready(t);
            }
        }
        touched.clear();
        self.touched = touched;
        let elapsed = started.1.elapsed();
        let timeout = sub.opts.timeout;
        let error = match result {
            Ok(Ok(())) if timeout.is_some_and(|t| elapsed > t) => Some(self.task_error(
                l,
                node,
                ErrorKind::Timeout,
                format!(
                    "took {elapsed:.2?}, over its timeout of {:.2?}",
                    timeout.unwrap_or_default()
                ),
            )),
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(self.sub_error(l, node, e)),
            Err(panic) => Some(self.task_error(
                l,
                node,
                ErrorKind::Local,
                format!("sub panicked: {}", crate::panic::message(&*panic)),
            )),
        };
        match error {
            None => {
                let mut r = self.new_report(node, TaskStatus::Succeeded);
                r.attempts = attempt;
                r.started = Some(started.0);
                r.duration = elapsed;
                self.record(l, node, r);
                self.plan.pop(l);
                self.rt[l].reset_task();
                true
            }
            Some(e) => self.fail(l, node, e),
        }
    }

    pub(super) fn sub_error(&self, l: LabelId, node: NodeIndex, e: BoxError) -> Error {
        let msg = format!("sub failed: {e}");
        self.task_error(l, node, ErrorKind::Local, msg).with_boxed_source(e)
    }
}
