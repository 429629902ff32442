//! What an SFTP transfer leaves on its session, closed step by step from
//! the event loop ([`SftpClose`]): at its end (done or failed) and when a
//! cancel abandons it midway. The running task steps it until only the
//! server's confirmation of the channel's close is missing, then answers,
//! and the connection frees the channel once that comes (`Conn::unconfirmed`,
//! without holding the next task up). After a cancel, all of it is stepped
//! by the connection's `Cancelling` phase: the session takes its next task
//! only once the subsystem's channel is gone on both sides (so a server
//! with `MaxSessions` has the slot back).
//!
//! libssh2 finishes a half-sent packet only when the same call is repeated,
//! and takes any other packet meanwhile for a repeat of it (or refuses it);
//! so the abandoned transfer's pending call is repeated first until it
//! answers ([`Job::settle`](super::Job)), then each open handle is closed,
//! then the subsystem is shut down. `Sftp::shutdown` cannot be called
//! again after it would block (the crate has let go of its pointer by
//! then); the subsystem's channel, found when the subsystem started, is then
//! freed directly with `libssh2_channel_free`, repeated until it is done.
//!
//! Invariant: every call is repeated unchanged until it stops saying
//! would-block before the next one starts; a handle is closed at most once;
//! the raw channel is used only while the session lives (it holds a clone)
//! and only after `Sftp::shutdown` has handed the close over to it.
//!
//! May use: its parent `sftp`, `transport::libssh2`.

use std::ptr::NonNull;

use ssh2::Session;

use super::{close_handle, start, Fail, Held, Job, Subsystem};
use crate::transport::libssh2::{
    is_socket_error, locate_channel, next_channel_id, would_block, write_blocked_on_input,
};

/// libssh2's would-block, as its C functions return it.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;

extern "C" {
    // In the libssh2 that libssh2-sys builds and links; the `ssh2` crate
    // binds it only for its own `Channel`.
    fn libssh2_channel_free(channel: *mut std::ffi::c_void) -> std::ffi::c_int;
}

/// Where the close is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// The subsystem's start was in flight (libssh2's channel counter before
    /// it): it is finished first.
    Starting(u32),
    /// The abandoned transfer's pending call is repeated until it answers.
    Settle,
    /// Closing the open handles.
    Handles,
    /// `Sftp::shutdown`: the channel's EOF and close are sent.
    Shutdown,
    /// Waiting for the server's close, then freeing the channel.
    FreeChannel,
    /// Nothing is left.
    Done,
}

/// What an SFTP transfer left on the session.
pub(in crate::transport::ssh) struct SftpClose {
    stage: Stage,
    /// From the subsystem's start until its shutdown.
    open: Option<Subsystem>,
    /// In `Settle`: the abandoned transfer.
    job: Option<Job>,
    /// Handles still to close, the last one first.
    handles: Vec<Held<ssh2::File>>,
    /// In `FreeChannel`: the subsystem's channel.
    channel: Option<SubsystemChannel>,
    /// In `FreeChannel`: its EOF and close are sent (libssh2 waits for input,
    /// nothing of it is half sent), so freeing it only reads.
    close_sent: bool,
}

impl SftpClose {
    /// After the transfer's end: `handles` are still open (after its own failure).
    pub(super) fn finished(open: Subsystem, handles: Vec<Held<ssh2::File>>) -> SftpClose {
        SftpClose {
            stage: Stage::Handles,
            open: Some(open),
            job: None,
            handles,
            channel: None,
            close_sent: false,
        }
    }

    /// A transfer abandoned midway: its pending call first.
    pub(super) fn abandoned(open: Subsystem, job: Job) -> SftpClose {
        SftpClose {
            stage: Stage::Settle,
            open: Some(open),
            job: Some(job),
            handles: Vec::new(),
            channel: None,
            close_sent: false,
        }
    }

    /// A transfer abandoned while its subsystem was starting (`before`: see
    /// [`SubsystemChannel::opened`]).
    pub(super) fn starting(before: u32) -> SftpClose {
        SftpClose {
            stage: Stage::Starting(before),
            open: None,
            job: None,
            handles: Vec::new(),
            channel: None,
            close_sent: false,
        }
    }

    /// Whether nothing is left.
    pub(super) fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Whether only the server's confirmation of the channel's close is
    /// missing, nothing half sent: the rest only reads, so other calls may
    /// run on the session meanwhile.
    pub(in crate::transport::ssh) fn awaits_confirmation(&self) -> bool {
        self.stage == Stage::FreeChannel && self.close_sent
    }

    /// Moves the close on until it would block: true once everything is closed and freed.
    /// An error means the session is lost.
    pub(in crate::transport::ssh) fn step(&mut self, sess: &Session) -> Result<bool, String> {
        self.advance(sess, false)
    }

    /// The same, but true already once only the server's confirmation of the
    /// channel's close is missing (what a finished task waits for).
    pub(super) fn step_to_confirmation(&mut self, sess: &Session) -> Result<bool, String> {
        self.advance(sess, true)
    }

    fn advance(&mut self, sess: &Session, to_confirmation: bool) -> Result<bool, String> {
        loop {
            match self.stage {
                Stage::Starting(before) => match start(sess, before) {
                    Ok(Some(open)) => {
                        self.open = Some(open);
                        self.stage = Stage::Shutdown;
                    }
                    Ok(None) => return Ok(false),
                    Err(Fail::Lost(m)) => return Err(m),
                    // libssh2 freed its channel itself.
                    Err(Fail::Own(_)) => self.stage = Stage::Done,
                },
                Stage::Settle => {
                    let (Some(job), Some(open)) = (&mut self.job, &self.open) else {
                        self.stage = Stage::Handles;
                        continue;
                    };
                    match job.settle(sess, &open.sftp) {
                        Ok(false) => return Ok(false),
                        // The task was answered already: its own failure is nobody's now.
                        Ok(true) | Err(Fail::Own(_)) => {}
                        Err(Fail::Lost(m)) => return Err(m),
                    }
                    self.handles = job.take_handles();
                    self.job = None;
                    self.stage = Stage::Handles;
                }
                Stage::Handles => {
                    while let Some(h) = self.handles.last_mut() {
                        if !close_handle(sess, h, "a file")? {
                            return Ok(false);
                        }
                        self.handles.pop();
                    }
                    self.stage = Stage::Shutdown;
                }
                Stage::Shutdown => {
                    let Some(Subsystem { mut sftp, channel }) = self.open.take() else {
                        self.stage = Stage::Done;
                        continue;
                    };
                    self.stage = Stage::Done;
                    // Flushes libssh2's SFTP state, sends the channel's EOF and
                    // close; a would-block leaves the rest to the channel.
                    match sftp.shutdown() {
                        Ok(()) => {}
                        Err(e) if would_block(&e) => match channel {
                            Some(ch) => {
                                self.channel = Some(ch);
                                self.close_sent = write_blocked_on_input(sess);
                                self.stage = Stage::FreeChannel;
                            }
                            None => log::debug!(
                                target: "ssh_parallel",
                                "the sftp channel's close is left to libssh2 (no handle on it): {e}"
                            ),
                        },
                        Err(e) if is_socket_error(&e) => return Err(format!("closing the sftp subsystem: {e}")),
                        Err(e) => log::debug!(target: "ssh_parallel", "closing the sftp subsystem: {e}"),
                    }
                }
                Stage::FreeChannel => {
                    if to_confirmation {
                        return Ok(true);
                    }
                    let Some(ch) = &mut self.channel else {
                        self.stage = Stage::Done;
                        continue;
                    };
                    if !ch.free() {
                        self.close_sent = write_blocked_on_input(sess);
                        return Ok(false);
                    }
                    self.channel = None;
                    self.stage = Stage::Done;
                }
                Stage::Done => return Ok(true),
            }
        }
    }
}

/// The raw libssh2 handle of a subsystem's channel, which the `ssh2` crate
/// keeps to itself.
pub(super) struct SubsystemChannel {
    ptr: NonNull<std::ffi::c_void>,
    /// Keeps the session (and so the channel, until freed) alive.
    sess: Session,
}

// SAFETY: the pointer is only used under the session's lock (see `free`),
// like every libssh2 call the crate's own `Send` types make.
unsafe impl Send for SubsystemChannel {}

impl SubsystemChannel {
    /// The subsystem's channel, once `sess.sftp()` has returned, given
    /// libssh2's channel counter read right before the first call
    /// (`before`): the open allocated the next number, and if the counter
    /// moved by more, some other channel came in meanwhile and which one is
    /// the subsystem's cannot be told (`None`).
    pub(super) fn opened(sess: &Session, before: u32) -> Option<SubsystemChannel> {
        let id = before.checked_add(1)?;
        if next_channel_id(sess) != id.checked_add(1)? {
            return None;
        }
        Some(SubsystemChannel {
            ptr: locate_channel(sess, id)?,
            sess: sess.clone(),
        })
    }

    /// Goes on closing the channel and frees it once the server has closed
    /// its side: true once freed (libssh2 frees it on any answer but
    /// would-block, the connection's loss included), false if it would block.
    fn free(&mut self) -> bool {
        let rc = {
            let _lock = self.sess.raw();
            // SAFETY: the session lives (`sess`), and libssh2 frees this
            // channel only here: `Sftp::shutdown` handed its close over
            // when it would block, and nothing else frees a channel the
            // session still lists.
            unsafe { libssh2_channel_free(self.ptr.as_ptr()) }
        };
        rc != LIBSSH2_ERROR_EAGAIN
    }
}
