//! Events from transports: connections that came up, failed, were lost or
//! closed, and finished tasks, judged into a [`Verdict`] and carried out
//! (pop, jump, reconnect and re-run, or hand to the error policy).
//! `or_goto` jumps over a [`Verdict::Own`] failure only: a command's
//! non-zero exit status or a failed transfer (SEMANTICS section 5).
//!
//! Invariant: every request answered decrements `outstanding` exactly once;
//! an event about a connection or a run the label no longer holds (an older
//! `ConnId` or `Token`) changes nothing else.

use std::time::Instant;

use petgraph::graph::NodeIndex;

use super::state::{Conn, State};
use super::Scheduler;
use crate::error::{Error, ErrorKind};
use crate::plan::LabelId;
use crate::report::{TaskOutput, TaskReport, TaskStatus};
use crate::task::Action;
use crate::transport::{Event, Exit, Outcome, TransportError};

/// How a finished remote task came out, before policies.
pub(super) enum Verdict {
    Ok,
    /// Failed for a reason of its own (a command's non-zero exit status, a
    /// transfer that failed while its connection stayed up): `or_goto` may
    /// jump over it. Signals, timeouts and connection errors never are.
    Own(Error),
    Failed(Error),
    /// The connection died under it: re-run while reconnections remain.
    Lost(Error),
    /// The run was cancelled while it ran: no policy, no re-run.
    Cancelled,
}

impl Scheduler<'_> {
    pub(super) fn handle(&mut self, ev: Event) {
        match ev {
            Event::Connected { label, conn } => {
                self.outstanding -= 1;
                if self.rt[label].conn != Conn::Connecting(conn) {
                    return;
                }
                log::debug!(target: "ssh_parallel", "[{}] connected", self.name(label));
                self.rt[label].conn = Conn::Up(conn);
                if self.rt[label].state == State::Connecting {
                    self.make_ready(label);
                } else {
                    self.mark_idle(label);
                }
            }
            Event::ConnectFailed { label, conn, error } => {
                self.outstanding -= 1;
                if self.rt[label].conn != Conn::Connecting(conn) {
                    return;
                }
                self.conn_gone(label);
                let e = Error::new(ErrorKind::Connect, error.to_string()).with_source(error);
                self.connection_failed(label, e, false);
            }
            Event::Lost { label, conn, error } => {
                if self.rt[label].conn == Conn::Up(conn) {
                    log::info!(target: "ssh_parallel", "[{}] idle connection lost: {error}", self.name(label));
                    self.conn_gone(label);
                }
            }
            Event::Closed { label, conn } => {
                self.outstanding -= 1;
                if self.rt[label].conn == Conn::Closing(conn) {
                    self.conn_gone(label);
                }
            }
            Event::Finished { label, token, outcome } => {
                if self.rt[label].token != token || self.rt[label].state != State::Running {
                    // A task abandoned after its timeout, answering late.
                    return;
                }
                self.outstanding -= 1;
                self.task_finished(label, outcome);
            }
            Event::Jobs => self.jobs_changed(),
        }
    }

    /// The head task's connection attempt failed (`lost`: it died under a
    /// running task). Reconnect while the task has attempts left.
    pub(super) fn connection_failed(&mut self, l: LabelId, e: Error, lost: bool) {
        let Some(node) = self.plan.labels[l].head else { return };
        if self.cancelled {
            // No reconnecting in a cancelled run: `advance` stops the label.
            self.release_slot(l);
            self.make_ready(l);
            return;
        }
        let budget = self.reconnections(l, node);
        if self.rt[l].reconnects < budget {
            self.rt[l].reconnects += 1;
            if lost {
                self.rt[l].reruns += 1;
            }
            log::info!(
                target: "ssh_parallel",
                "[{}] {e}; reconnecting ({}/{budget})",
                self.name(l),
                self.rt[l].reconnects
            );
            if lost {
                // The task runs again from scratch: it is not a new attempt.
                self.rt[l].attempt -= 1;
            }
            self.delay(l, self.cfg.reconnect_delay, false);
            return;
        }
        self.release_slot(l);
        let e = self.annotate(l, node, e);
        let mut r = self.new_report(node, TaskStatus::Failed);
        if let Some((wall, mono)) = self.rt[l].started {
            r.started = Some(wall);
            r.duration = mono.elapsed();
        }
        if !lost {
            // The task never reached the host, but this was one more try.
            self.rt[l].attempt += 1;
        }
        if self.fail_with(l, node, e, Some(r)) {
            self.make_ready(l);
        }
    }

    /// Adds the label and task to a transport's error.
    pub(super) fn annotate(&self, l: LabelId, node: NodeIndex, e: Error) -> Error {
        let t = self.task_error(l, node, e.kind(), e.detail().to_owned());
        t.with_exit(e.exit_code(), e.signal())
    }

    pub(super) fn reconnections(&self, l: LabelId, node: NodeIndex) -> u32 {
        let task = self.plan.task(node).and_then(|t| t.action.opts()?.reconnections);
        task.or(self.plan.labels[l].host.reconnections)
            .unwrap_or(self.cfg.reconnections)
    }

    pub(super) fn task_finished(&mut self, l: LabelId, outcome: Outcome) {
        let Some(node) = self.plan.labels[l].head else { return };
        let (wall, mono) = self.rt[l].started.unwrap_or((outcome.started, Instant::now()));
        let mut r = self.new_report(node, TaskStatus::Succeeded);
        r.started = Some(wall);
        r.duration = mono.elapsed();
        r.attempts = self.rt[l].attempt;
        r.reruns = self.rt[l].reruns;
        if outcome.stdout.bytes.is_some() || outcome.stderr.bytes.is_some() {
            r.output = Some(Box::new(TaskOutput {
                stdout: outcome.stdout.bytes,
                stderr: outcome.stderr.bytes,
                stdout_truncated: outcome.stdout.truncated,
                stderr_truncated: outcome.stderr.truncated,
            }));
        }
        let Some(action) = self.plan.task(node).map(|t| t.action.clone()) else {
            return;
        };
        let verdict = self.judge(l, node, &action, outcome.result, &mut r);
        match verdict {
            Verdict::Lost(e) => {
                if matches!(self.rt[l].conn, Conn::Up(_)) {
                    self.conn_gone(l);
                }
                self.connection_failed(l, e, true);
                return;
            }
            Verdict::Cancelled => {
                self.release_slot(l);
                self.mark_idle(l);
                self.finish_cancelled(l, node, r);
            }
            Verdict::Ok => {
                self.release_slot(l);
                self.mark_idle(l);
                self.record(l, node, r);
                self.plan.pop(l);
                self.rt[l].reset_task();
            }
            Verdict::Own(e) => {
                self.release_slot(l);
                self.mark_idle(l);
                let or_goto = action.opts().and_then(|o| o.or_goto.clone());
                if let Some(tag) = or_goto {
                    r.error = Some(Box::new(e));
                    if self.jump(l, node, &tag, TaskStatus::Jumped, Some(r)) {
                        self.make_ready(l);
                        return;
                    }
                    let e = self.task_error(
                        l,
                        node,
                        ErrorKind::GotoFailed,
                        format!("or_goto: no `here {tag}` later in the queue"),
                    );
                    if self.fail(l, node, e) {
                        self.make_ready(l);
                    }
                    return;
                }
                if !self.fail_with(l, node, e, Some(r)) {
                    return;
                }
            }
            Verdict::Failed(e) => {
                self.release_slot(l);
                self.mark_idle(l);
                if !self.fail_with(l, node, e, Some(r)) {
                    return;
                }
            }
        }
        self.make_ready(l);
    }

    /// Classifies a transport's result for the task `action`.
    pub(super) fn judge(
        &mut self,
        l: LabelId,
        node: NodeIndex,
        action: &Action,
        result: std::result::Result<Exit, TransportError>,
        r: &mut TaskReport,
    ) -> Verdict {
        if self.rt[l].cancelled {
            if let Ok(exit) = &result {
                r.exit_code = exit.code;
                r.signal = exit.signal;
            }
            return Verdict::Cancelled;
        }
        if self.rt[l].timed_out {
            if let Ok(exit) = &result {
                r.exit_code = exit.code;
                r.signal = exit.signal;
            }
            let t = action.opts().and_then(|o| o.timeout).unwrap_or_default();
            return Verdict::Failed(self.task_error(l, node, ErrorKind::Timeout, format!("timed out after {t:.2?}")));
        }
        let transfer = matches!(
            action,
            Action::ScpGet(_) | Action::ScpPut(_) | Action::RsyncGet(_) | Action::RsyncPut(_)
        );
        match result {
            Ok(exit) => {
                r.exit_code = exit.code;
                r.signal = exit.signal;
                let Action::Command(c) = action else { return Verdict::Ok };
                match (exit.code, exit.signal) {
                    (Some(code), _) if c.ok_exit_codes.contains(&code) => Verdict::Ok,
                    (Some(code), _) => Verdict::Own(
                        self.task_error(l, node, ErrorKind::Command, format!("exited with status {code}"))
                            .with_exit(Some(code), None),
                    ),
                    (None, Some(sig)) => Verdict::Failed(
                        self.task_error(l, node, ErrorKind::Command, format!("killed by signal {sig}"))
                            .with_exit(None, Some(sig)),
                    ),
                    (None, None) => {
                        Verdict::Failed(self.task_error(l, node, ErrorKind::Command, "ended without an exit status"))
                    }
                }
            }
            Err(TransportError::ConnectionLost(m)) => {
                Verdict::Lost(Error::new(ErrorKind::Connect, format!("connection lost: {m}")))
            }
            Err(TransportError::Connect(m)) => Verdict::Lost(Error::new(ErrorKind::Connect, m)),
            // Transports report a transfer that failed on a live connection
            // as `Transfer` (the remote side's error) or `Local` (this side's
            // file); a dead connection is `ConnectionLost`, handled above.
            Err(TransportError::Transfer(m)) => Verdict::Own(self.task_error(l, node, ErrorKind::Transfer, m)),
            // An idle timeout: never a jump (like the whole-task timeout).
            Err(TransportError::Timeout(m)) => Verdict::Failed(self.task_error(l, node, ErrorKind::Timeout, m)),
            Err(TransportError::Local { message, source }) => {
                let kind = if transfer {
                    ErrorKind::Transfer
                } else {
                    ErrorKind::Local
                };
                let mut e = self.task_error(l, node, kind, message);
                if let Some(s) = source {
                    e = e.with_boxed_source(s);
                }
                if transfer {
                    Verdict::Own(e)
                } else {
                    Verdict::Failed(e)
                }
            }
        }
    }
}
