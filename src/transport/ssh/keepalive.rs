//! Dead-peer detection: libssh2 never notices a silent peer by itself, so
//! while a session is idle, or runs a command that only drains output, a
//! keepalive asking for a reply goes out after every interval without
//! traffic, and after `keepalive_count_max` unanswered ones the connection is
//! lost. Also: an event on an idle session (only a closed socket matters).
//!
//! Invariant: no keepalive is sent in any other stage, since those may hold a
//! half-sent packet that libssh2 forbids interleaving another send with.
//!
//! May use: `conn`, `event_loop` (`Cx`), `transport::libssh2`.

use std::time::Instant;

use super::conn::{Conn, Phase};
use super::event_loop::Cx;
use crate::transport::libssh2::is_socket_error;

/// A connection's keepalive state.
#[derive(Default)]
pub(super) struct Keepalive {
    /// When the next keepalive is due; `None` while the connection is not
    /// watched (then `unanswered` is 0).
    pub(super) next: Option<Instant>,
    /// Keepalives sent since the server was last heard from; the connection
    /// is lost when a due keepalive finds it at `keepalive_count_max`.
    pub(super) unanswered: u32,
}

impl Conn {
    /// The server sent something: it is alive.
    pub(super) fn heard_from(&mut self, now: Instant) {
        self.keepalive.unanswered = 0;
        if self.keepalive.next.is_some() {
            self.keepalive.next = Some(now + self.host.keepalive);
        }
    }

    /// Dead-peer detection by deadline (libssh2 never notices by itself):
    /// while the session is idle or a command only produces output, send a
    /// keepalive that asks for a reply after every interval without traffic,
    /// and give the connection up after `keepalive_count_max` unanswered ones.
    /// Other stages are left alone: they may have a half-sent packet, which
    /// a keepalive must not interleave with, and their own data shows life.
    pub(super) fn send_keepalive(&mut self, cx: &Cx<'_>, now: Instant) {
        let interval = self.host.keepalive;
        let watched = !interval.is_zero()
            && match &self.phase {
                Phase::Idle => self.jump.as_ref().is_none_or(|j| j.can_send()),
                Phase::Running(t) => t.only_draining(),
                _ => false,
            };
        if !watched {
            self.keepalive.next = None;
            self.keepalive.unanswered = 0;
            return;
        }
        let due = *self.keepalive.next.get_or_insert(now + interval);
        if now < due {
            return;
        }
        if self.keepalive.unanswered >= self.host.keepalive_count_max {
            let msg = format!(
                "{}: no answer to {} keepalives sent {interval:?} apart; the peer is presumed dead",
                self.target(),
                self.keepalive.unanswered
            );
            self.keepalive.next = None;
            self.lose(cx, msg);
            return;
        }
        if let Some(sess) = &self.sess {
            match sess.keepalive_send() {
                Err(e) if is_socket_error(&e) => {
                    let msg = format!("{}: sending a keepalive: {e}", self.target());
                    self.keepalive.next = None;
                    self.lose(cx, msg);
                    return;
                }
                // Sent, or queued (a would-block send completes with the next call).
                _ => {}
            }
        }
        self.keepalive.unanswered += 1;
        self.keepalive.next = Some(now + interval);
    }

    /// An event on an idle session: only a closed or failed socket matters.
    pub(super) fn check_idle(&mut self, cx: &Cx<'_>, closed: bool) {
        let Some(s) = &self.stream else { return };
        let gone = closed || s.peer_gone();
        if gone {
            self.lose(cx, format!("{} closed the connection", self.target()));
        }
    }
}
