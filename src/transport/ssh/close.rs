//! Ending things: a `Cancel` (the task is answered at once, its channel
//! closed in `Cancelling`), abandoning a session (`Broken`), a `Disconnect`
//! (`Disconnecting`, then `Done`).
//!
//! Invariant: every end is bounded by `CLOSE_TIMEOUT`: a channel that cannot
//! be closed in time breaks the session instead, and a disconnect that
//! cannot be sent in time just closes the socket.
//!
//! May use: `conn`, `task`, `lend`, `event_loop` (`Cx`), `transport::libssh2`.

use std::time::Instant;

use super::conn::{Conn, Flow, Phase};
use super::event_loop::Cx;
use super::{fail, CLOSE_TIMEOUT};
use crate::transport::libssh2::{is_socket_error, would_block, write_blocked_on_input};
use crate::transport::protocol::{Event, Token, TransportError};

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

    /// Closes a cancelled task's channel. Once the close request is sent the
    /// session is free again: a server that waits for the remote process to
    /// end before confirming (OpenSSH without a pty) must not hold it up.
    pub(super) fn step_cancel(&mut self) -> Result<Flow, String> {
        let sess = self.sess.as_ref().expect("session while cancelling");
        let Phase::Cancelling(slot) = &mut self.phase else {
            return Ok(Flow::Again);
        };
        let Some(ch) = slot else {
            return match sess.channel_session() {
                Ok(ch) => {
                    *slot = Some(ch);
                    Ok(Flow::Again)
                }
                Err(e) if would_block(&e) => Ok(Flow::Wait),
                Err(e) if is_socket_error(&e) => Err(format!("opening a channel: {e}")),
                Err(_) => Ok(Flow::Free),
            };
        };
        match ch.close() {
            Ok(()) => Ok(Flow::Free),
            Err(e) if would_block(&e) => {
                if write_blocked_on_input(sess) {
                    // Sent; only the server's confirmation is missing. The channel
                    // stays in libssh2's list until the session is freed.
                    Ok(Flow::Free)
                } else {
                    Ok(Flow::Wait)
                }
            }
            Err(e) => Err(format!("closing a cancelled channel: {e}")),
        }
    }

    /// Abandons the session; the next `Run` reconnects.
    pub(super) fn broken(&mut self, cx: &Cx<'_>, why: String) {
        log::debug!(target: "ssh_parallel", "[{}] abandoning the session: {why}", self.name);
        self.teardown(cx.registry, Phase::Broken);
        self.deadline = None;
        if !self.pending.is_empty() {
            self.start_connect(cx);
        }
    }

    /// A `Disconnect` (or the transport is shutting down).
    pub(super) fn disconnect(&mut self, cx: &Cx<'_>) {
        match &self.phase {
            Phase::Done | Phase::Disconnecting => {}
            Phase::Idle => {
                self.phase = Phase::Disconnecting;
                self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            Phase::Lent { .. } => {
                self.abandon_lent(cx, TransportError::ConnectionLost("the connection was closed".into()));
                self.closed(cx);
            }
            _ => {
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
        let _ = cx.events.send(Event::Closed {
            label: self.label,
            conn: self.id,
        });
    }
}
