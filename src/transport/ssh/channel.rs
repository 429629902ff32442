//! A task's channel: opening it (or taking the spare opened ahead, with
//! retries when the server refuses a channel), starting a command on it,
//! closing it and reading the exit; and the spare itself.
//!
//! Invariant: libssh2 keeps one channel open in flight per session, so the
//! spare's open is always moved on before anything else is sent, and a task
//! that finds the spare opening adopts that open instead of starting one.
//!
//! May use: `conn`, `transport::libssh2`, `transport` (`TransportError`).

use std::time::{Duration, Instant};

use ssh2::Session;

use super::conn::{Conn, Flow, Phase, Spare, TaskFail};
use crate::transport::libssh2::{
    code, exit_of, is_socket_error, would_block, RawChannel, LIBSSH2_ERROR_CHANNEL_FAILURE,
    LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED,
};
use crate::transport::protocol::TransportError;

/// Refused channel opens tried again (after 10, 40, 160 and 640 ms).
const OPEN_RETRIES: u32 = 4;
const OPEN_RETRY_FIRST: Duration = Duration::from_millis(10);

impl Conn {
    /// Opens the next task's channel while this task's requests are in
    /// flight, when the queue says one comes next.
    pub(super) fn prefetch(&mut self) {
        let Phase::Running(t) = &self.phase else { return };
        if matches!(self.spare, Spare::None) && t.prefetch && t.ch.channel.is_some() {
            self.spare = Spare::Opening;
            // Its errors show again on the task's own next call.
            if self.step_spare().is_err() {
                self.spare = Spare::None;
            }
        }
    }

    /// Moves the spare's open on; an error means the session is lost.
    pub(super) fn step_spare(&mut self) -> Result<(), String> {
        let Some(sess) = &self.sess else {
            self.spare = Spare::None;
            return Ok(());
        };
        match sess.channel_session() {
            Ok(ch) => {
                // Right now, before any other open starts, it is the newest channel.
                let raw = RawChannel::newest(sess, &ch);
                self.spare = Spare::Ready(ch, raw);
            }
            Err(e) if would_block(&e) => {}
            Err(e) if is_socket_error(&e) => {
                self.spare = Spare::None;
                return Err(format!("opening a channel ahead: {e}"));
            }
            Err(e) => {
                log::debug!(target: "ssh_parallel", "[{}] no channels opened ahead: {e}", self.name);
                self.spare = Spare::Off;
            }
        }
        Ok(())
    }
}

/// A channel and its raw handle, if libssh2 gave it away.
type Opened = (ssh2::Channel, Option<RawChannel>);

/// Opens a task's channel: the spare if it is ready; else continues the
/// spare's open if one is in flight (`adopted`), or starts one. `Ok(None)`:
/// it would block.
fn open_channel(sess: &Session, spare: &mut Spare, adopted: &mut bool) -> Result<Option<Opened>, ssh2::Error> {
    match std::mem::replace(spare, Spare::None) {
        Spare::Ready(ch, raw) => return Ok(Some((ch, raw))),
        Spare::Opening => *adopted = true,
        Spare::Off => *spare = Spare::Off,
        Spare::None => {}
    }
    match sess.channel_session() {
        Ok(ch) => {
            // Right now, before any other open starts, it is the newest channel.
            let raw = RawChannel::newest(sess, &ch);
            Ok(Some((ch, raw)))
        }
        Err(e) if would_block(&e) => Ok(None),
        Err(e) if *adopted && code(&e) == LIBSSH2_ERROR_CHANNEL_FAILURE => {
            // The spare was refused (it was a second channel while the last
            // task's was open): no more spares; this one opens anew.
            *spare = Spare::Off;
            *adopted = false;
            open_channel(sess, spare, adopted)
        }
        Err(e) => Err(e),
    }
}

/// Opens the task's channel (see [`open_channel`]). A refused open is tried
/// again a few times, shortly after: sshd frees a closed channel's session
/// slot only after the loop turn that read its close, so with `MaxSessions
/// 1` an open sent right behind the last close is refused. After that the
/// session is given up (a new connection has free slots).
fn open_for_task(sess: &Session, spare: &mut Spare, o: &mut OpenState) -> Result<Option<Opened>, TaskFail> {
    if o.retry_at.is_some_and(|at| Instant::now() < at) {
        return Ok(None);
    }
    o.retry_at = None;
    match open_channel(sess, spare, &mut o.adopted) {
        Ok(ch) => Ok(ch),
        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_FAILURE && o.refusals < OPEN_RETRIES => {
            log::debug!(target: "ssh_parallel", "channel refused ({e}); trying again");
            o.retry_at = Some(Instant::now() + OPEN_RETRY_FIRST * 4u32.pow(o.refusals));
            o.refusals += 1;
            Ok(None)
        }
        Err(e) => Err(TaskFail::Lost(format!("opening a channel: {e}"))),
    }
}

/// Starts `cmd` on the channel: `Ok(false)` if it would block (call again).
/// A refusal is the task's own error (made by `refused`); anything else
/// means the session is lost.
pub(super) fn exec(
    ch: &mut ssh2::Channel,
    cmd: &str,
    what: &str,
    refused: fn(String) -> TransportError,
) -> Result<bool, TaskFail> {
    match ch.exec(cmd) {
        Ok(()) => Ok(true),
        Err(e) if would_block(&e) => Ok(false),
        Err(e) if code(&e) == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED => Err(TaskFail::Task(refused(format!(
            "the server refused to run {what}: {e}"
        )))),
        Err(e) => Err(TaskFail::Lost(format!("starting {what}: {e}"))),
    }
}

/// Closes a finished task's channel and reads its exit status or signal.
pub(super) fn close_channel(ch: &mut ssh2::Channel) -> Result<Flow, TaskFail> {
    match ch.close() {
        Ok(()) => {}
        Err(e) if would_block(&e) => return Ok(Flow::Wait),
        Err(e) => return Err(TaskFail::Lost(format!("closing the channel: {e}"))),
    }
    Ok(Flow::TaskDone(exit_of(ch)))
}

/// How a task's channel open is going.
#[derive(Default)]
pub(super) struct OpenState {
    /// The open in flight was started as the spare: a refusal then means
    /// the server allows one channel at a time, not that this one failed.
    adopted: bool,
    /// Opens the server refused (at most [`OPEN_RETRIES`]).
    refusals: u32,
    /// When to try again after a refusal; nothing is sent before.
    pub(super) retry_at: Option<Instant>,
}

/// A task's channel: how its open is going, then the channel itself.
#[derive(Default)]
pub(super) struct TaskChannel {
    pub(super) open: OpenState,
    /// `Some` from a successful open until the task is done with it (an
    /// rsync drops it once closed, then waits for its local side).
    pub(super) channel: Option<ssh2::Channel>,
    /// Its raw handle, to signal the command on a cancel (`None` if libssh2
    /// did not give it away, and then the close alone has to do).
    pub(super) raw: Option<RawChannel>,
}

impl TaskChannel {
    /// Moves the open on (see [`open_for_task`]); true once the channel is open.
    pub(super) fn open(&mut self, sess: &Session, spare: &mut Spare) -> Result<bool, TaskFail> {
        match open_for_task(sess, spare, &mut self.open)? {
            Some((ch, raw)) => {
                self.raw = raw;
                if self.raw.is_none() {
                    log::debug!(target: "ssh_parallel", "no raw handle for a channel; a cancel will only close it");
                }
                self.channel = Some(ch);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The open channel (only called in stages after the open).
    pub(super) fn get(&mut self) -> &mut ssh2::Channel {
        self.channel.as_mut().expect("a channel after its open")
    }
}
