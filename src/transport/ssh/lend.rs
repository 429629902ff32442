//! A session lent to a parsub: the closure runs on its own thread with the
//! label's session in blocking mode, and gives it back when it returns; a
//! parsub abandoned after its timeout gets its socket shut down so that its
//! blocking calls fail, and the connection is left `Broken`.
//!
//! Invariant: while `Lent`, the loop makes no libssh2 call on the session
//! and holds no channel of it (the spare is dropped first); an abandoned
//! parsub's socket stays open (shut down) until the parsub lets go of the
//! session, so its descriptor is never reused under it.
//!
//! May use: `conn`, `event_loop` (`Cx`, `Returned`), `session` (`Lent`),
//! `transport::parsub`.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use super::conn::{Conn, Phase, Spare};
use super::event_loop::{Cx, Returned};
use super::stream::Stream;
use super::{fail, finish};
use crate::session::{Lent, SessionKind};
use crate::task::Action;
use crate::transport::protocol::{Event, Job, Outcome, TransportError};

impl Conn {
    /// Lends the session to a parsub on its own thread, in blocking mode; the
    /// loop leaves it alone until [`Conn::returned`].
    pub(super) fn lend(&mut self, cx: &Cx<'_>, job: Job, started: SystemTime) {
        let (Some(sess), Some(stream)) = (&self.sess, &self.stream) else {
            finish(
                cx.events,
                job.label,
                job.token,
                Outcome::new(
                    Err(TransportError::ConnectionLost("no session to lend".into())),
                    started,
                ),
            );
            return;
        };
        // Nothing of the loop's stays on a lent session (dropping a channel
        // later would need the session the parsub holds).
        self.spare = Spare::None;
        sess.set_blocking(true);
        let lent = Lent {
            sess: sess.clone(),
            fd: stream.as_raw_fd(),
            target: self.target(),
        };
        let slot: Arc<Mutex<Option<Stream>>> = Arc::default();
        let (key, token, label) = (self.key, job.token, job.label);
        let (tx, waker, keep) = (cx.returned.clone(), cx.waker.clone(), slot.clone());
        let spawned = std::thread::Builder::new()
            .name("ssh-parallel-parsub".into())
            .spawn(move || {
                let outcome = match &*job.action {
                    Action::Parsub(p) => {
                        crate::transport::parsub::run_parsub_with(&job, p, SessionKind::Ssh(lent), started)
                    }
                    _ => Outcome::new(Err(TransportError::local("not a parsub (transport bug)")), started),
                };
                // The session is gone by now; only then may an abandoned socket close.
                drop(keep);
                let _ = tx.send(Returned { key, token, outcome });
                let _ = waker.wake();
            });
        match spawned {
            Ok(_) => self.phase = Phase::Lent { token, slot },
            Err(e) => {
                sess.set_blocking(false);
                finish(
                    cx.events,
                    label,
                    token,
                    Outcome::new(
                        Err(TransportError::local(format!("cannot start a parsub thread: {e}"))),
                        started,
                    ),
                );
            }
        }
    }

    /// A parsub gave the session back.
    pub(super) fn returned(&mut self, cx: &Cx<'_>, outcome: Outcome) {
        if let Some(sess) = &self.sess {
            sess.set_blocking(false);
        }
        let _ = cx.events.send(Event::Finished {
            label: self.label,
            token: match self.phase {
                Phase::Lent { token, .. } => token,
                _ => return,
            },
            outcome,
        });
        self.become_idle(cx);
    }

    /// Gives up on a lent session: the socket is shut down so the parsub's
    /// blocking calls fail, the task is answered with `error`, and the
    /// connection is left `Broken`.
    pub(super) fn abandon_lent(&mut self, cx: &Cx<'_>, error: TransportError) {
        let Phase::Lent { token, slot } = std::mem::replace(&mut self.phase, Phase::Broken) else {
            return;
        };
        fail(cx.events, self.label, token, error);
        if let Some(mut s) = self.stream.take() {
            s.shutdown();
            let _ = cx.registry.deregister(&mut s);
            *slot.lock() = Some(s);
        }
        self.sess = None;
        self.deadline = None;
    }
}
