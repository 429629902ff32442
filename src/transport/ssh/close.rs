//! Ending things: a `Cancel` (the task is answered at once; in
//! `Cancelling` its command is signalled, then its channel closed, or what
//! an SFTP transfer left on the session is closed),
//! abandoning a session (`Broken`), a `Disconnect` (`Disconnecting`, then
//! `Done`).
//!
//! How a cancelled command is stopped is [`kill`](super::kill)'s.
//!
//! Invariant: every end is bounded by `CLOSE_TIMEOUT` (plus the time the
//! killing may take, [`Cancel::extra_time`]): a channel that cannot be
//! closed in time breaks the session instead, and a disconnect that cannot
//! be sent in time just closes the socket.
//!
//! May use: `conn`, `task`, `kill`, `sftp` (`SftpClose`), `lend`, `event_loop` (`Cx`),
//! `transport::libssh2`.

use std::time::Instant;

use super::conn::{Conn, Flow, Phase, Spare};
use super::event_loop::Cx;
use super::kill::{step_kill, step_killer, Cancel};
use super::sftp::SftpClose;
use super::{fail, CLOSE_TIMEOUT};
use crate::transport::libssh2::{is_socket_error, would_block, write_blocked_on_input};
use crate::transport::protocol::{Event, Token, TransportError};

/// At most this many finished SFTP channels wait for the server's
/// confirmation of their close while the next tasks run (see `close_sftp`).
const MAX_UNCONFIRMED: usize = 4;

impl Conn {
    /// A `Cancel`: true if `token` runs (or waits) here.
    pub(super) fn cancel(&mut self, cx: &Cx<'_>, token: Token) -> bool {
        if let Some(i) = self.pending.iter().position(|j| j.token == token) {
            let job = self.pending.remove(i).expect("position is valid");
            fail(
                cx.events,
                job.label,
                job.token,
                TransportError::local("cancelled before it started"),
            );
            return true;
        }
        match &self.phase {
            Phase::Running(t) if t.is(token) => {
                self.abort_task(cx, Err(TransportError::local("cancelled after its timeout")));
                true
            }
            Phase::Lent { token: t, .. } if *t == token => {
                self.abandon_lent(
                    cx,
                    TransportError::local("abandoned after its timeout; its connection was shut down to interrupt it"),
                );
                if !self.pending.is_empty() {
                    self.start_connect(cx);
                }
                true
            }
            _ => false,
        }
    }

    /// Signals a cancelled command, closes its channel, runs the killer if
    /// one is due. Once the close request is sent (and the killer is done)
    /// the session is free again: a server that waits for the remote process
    /// to end before confirming (OpenSSH without a pty) must not hold it up.
    pub(super) fn step_cancel(&mut self) -> Result<Flow, String> {
        let sess = self.sess.as_ref().expect("session while cancelling");
        let Phase::Cancelling(c) = &mut self.phase else {
            return Ok(Flow::Again);
        };
        let c = &mut **c;
        if let Some(rest) = &mut c.sftp {
            if !rest.step(sess)? {
                return Ok(Flow::Wait);
            }
            c.sftp = None;
        }
        if !c.closed {
            let Some(ch) = &mut c.ch else {
                return match sess.channel_session() {
                    Ok(ch) => {
                        c.ch = Some(ch);
                        Ok(Flow::Again)
                    }
                    Err(e) if would_block(&e) => Ok(Flow::Wait),
                    Err(e) if is_socket_error(&e) => Err(format!("opening a channel: {e}")),
                    Err(_) => Ok(Flow::Free),
                };
            };
            if let Some(k) = &mut c.kill {
                if !step_kill(sess, ch, k)? {
                    return Ok(Flow::Wait);
                }
                c.kill = None;
            }
            match ch.close() {
                Ok(()) => {}
                // Sent if libssh2 waits for input: only the server's confirmation
                // is missing. The channel stays in libssh2's list until freed.
                Err(e) if would_block(&e) && write_blocked_on_input(sess) => {}
                Err(e) if would_block(&e) => return Ok(Flow::Wait),
                Err(e) => return Err(format!("closing a cancelled channel: {e}")),
            }
            c.closed = true;
        }
        let Some(k) = &mut c.killer else { return Ok(Flow::Free) };
        // Its open would finish the spare's instead of starting its own.
        if matches!(self.spare, Spare::Opening) {
            return Ok(Flow::Wait);
        }
        Ok(if step_killer(sess, k)? { Flow::Free } else { Flow::Wait })
    }

    /// Closes what an SFTP transfer left on the session (its task is
    /// answered) within `CLOSE_TIMEOUT`; the session is free afterwards.
    /// Only a channel whose close is sent and merely unconfirmed (a finished
    /// transfer's, as a rule) does not hold the next task up: it waits in
    /// `unconfirmed`, a few at most, since freeing it only reads.
    pub(super) fn close_sftp(&mut self, cx: &Cx<'_>, rest: SftpClose) {
        if rest.awaits_confirmation() && self.unconfirmed.len() < MAX_UNCONFIRMED {
            self.unconfirmed.push(rest);
            self.become_idle(cx);
            return;
        }
        self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
        self.phase = Phase::Cancelling(Box::new(Cancel::sftp(rest)));
    }

    /// Frees the channels of `unconfirmed` whose close the server has
    /// confirmed meanwhile: only while the session is ours and not sending
    /// its disconnect (never while `Lent`: the session is the parsub's).
    pub(super) fn step_unconfirmed(&mut self) {
        let ours = matches!(self.phase, Phase::Idle | Phase::Running(_) | Phase::Cancelling(_));
        if self.unconfirmed.is_empty() || !ours {
            return;
        }
        let Some(sess) = &self.sess else {
            self.unconfirmed.clear();
            return;
        };
        // A lost session shows again on the task's own next call.
        self.unconfirmed.retain_mut(|c| matches!(c.step(sess), Ok(false)));
    }

    /// Abandons the session; the next `Run` reconnects.
    pub(super) fn broken(&mut self, cx: &Cx<'_>, why: String) {
        log::debug!(target: "ssh_parallel", "[{}] abandoning the session: {why}", self.name);
        self.teardown(cx.registry, Phase::Broken);
        self.deadline = None;
        if self.close_when_free {
            self.closed(cx);
            return;
        }
        if !self.pending.is_empty() {
            self.start_connect(cx);
        }
    }

    /// A `Disconnect` (or the transport is shutting down).
    pub(super) fn disconnect(&mut self, cx: &Cx<'_>) {
        match &self.phase {
            Phase::Done | Phase::Disconnecting => {}
            // Within the cancel's own deadline; then `step` or `broken` closes.
            Phase::Cancelling(_) => self.close_when_free = true,
            Phase::Idle => {
                self.phase = Phase::Disconnecting;
                self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            Phase::Lent { .. } => {
                self.abandon_lent(cx, TransportError::ConnectionLost("the connection was closed".into()));
                self.closed(cx);
            }
            _ => {
                // A running task's libssh2 objects are dropped now: with the
                // socket shut down, none of their destructors can wait.
                if let Some(s) = &self.stream {
                    s.shutdown();
                }
                let old = std::mem::replace(&mut self.phase, Phase::Done);
                if let Phase::Running(t) = old {
                    t.finish(
                        cx.events,
                        Err(TransportError::ConnectionLost("the connection was closed".into())),
                    );
                }
                self.closed(cx);
            }
        }
    }

    /// Sends the disconnect message, then closes.
    pub(super) fn step_disconnect(&mut self, cx: &Cx<'_>) -> Flow {
        if let Some(sess) = &self.sess {
            if let Err(e) = sess.disconnect(None, "closed by ssh-parallel", None) {
                if would_block(&e) {
                    return Flow::Wait;
                }
            }
        }
        self.closed(cx);
        Flow::Wait
    }

    /// Frees everything and tells the scheduler the connection is closed.
    pub(super) fn closed(&mut self, cx: &Cx<'_>) {
        self.teardown(cx.registry, Phase::Done);
        self.deadline = None;
        if self.jump.is_some() {
            // A jump session is no label's connection.
            return;
        }
        let _ = cx.events.send(Event::Closed {
            label: self.label,
            conn: self.id,
        });
    }
}
