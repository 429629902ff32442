//! SFTP transfers: an `ScpPut` or `ScpGet` run over the host's `sftp`
//! subsystem with libssh2's SFTP (through the `ssh2` crate), for hosts
//! without an `scp` binary or that allow only SFTP. [`put`] sends, [`get`]
//! receives; this module runs the subsystem's life (start, the transfer,
//! then [`close`]: the handles, the subsystem and its channel) and holds
//! what both sides share.
//!
//! Everything is non-blocking on the event loop: every libssh2 call may say
//! would-block and is then repeated, unchanged, at the next step before any
//! other call is made (libssh2 keeps each SFTP operation's state between
//! calls). Bulk data moves in large buffers, which libssh2 splits into many
//! requests in flight (writes are pipelined, reads read ahead).
//!
//! Invariant: a handle, the SFTP session and the subsystem's channel are let
//! go of by non-blocking closes stepped from the loop, whatever ends the
//! transfer: done, failed, or abandoned by a cancel (the task is answered at
//! once and its [`SftpClose`] goes on in the connection's `Cancelling`
//! phase, so the session is free only once the server has the channel
//! closed; a finished transfer's channel, its close sent, waits for the
//! confirmation beside the next task). Only when the session itself is
//! abandoned (lost, broken, disconnected) are they dropped unclosed, and
//! then the `ssh2` crate's destructors (which switch the session to
//! blocking mode) are bounded by [`Held`]. The destination rule is the one of `task::transfer`, as for SCP
//! and local copies.
//!
//! May use: `conn` (`Flow`, `Spare`, `TaskFail`), `channel` (`TaskChannel`),
//! `transport::libssh2`, `task` (`Transfer` and the destination rule).

use std::io;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ssh2::{ErrorCode, FileStat, Session};

pub(super) use self::close::SftpClose;
use self::get::GetJob;
use self::put::PutJob;
use super::channel::TaskChannel;
use super::conn::{Flow, Spare, TaskFail};
use crate::task::Transfer;
use crate::transport::exit::Exit;
use crate::transport::libssh2::{is_socket_error, next_channel_id, would_block, RawChannel};
use crate::transport::protocol::{Outcome, TransportError};

mod close;
mod get;
mod put;

/// How much file data one write call offers libssh2 (it sends it as many
/// pipelined requests and reports what the server acknowledged).
const WRITE_BUFFER: usize = 1024 * 1024;
/// How much one read call asks for (libssh2 reads ahead a multiple of it).
const READ_BUFFER: usize = 512 * 1024;

/// SFTP status codes this module tells apart.
const FX_NO_SUCH_FILE: i32 = 2;
const FX_NO_SUCH_PATH: i32 = 10;

/// Where the transfer is in the subsystem's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Starting the subsystem (`libssh2_sftp_init`: a channel open, the
    /// subsystem request, the version exchange).
    Init,
    /// The transfer itself.
    Work,
    /// Closing what the transfer still holds ([`SftpClose`]) until only the
    /// server's confirmation of the channel's close is missing.
    Close,
}

/// An SFTP transfer running on a session.
pub(super) struct SftpRun {
    stage: Stage,
    /// Set when `libssh2_sftp_init` is first called (its channel open may
    /// then be in flight): libssh2's channel counter just before.
    init_counter: Option<u32>,
    /// From the subsystem's start until `close` takes it over.
    open: Option<Subsystem>,
    /// `None` once a cancel took it (with `open`) into an [`SftpClose`].
    job: Option<Job>,
    /// The transfer's own failure (the session is fine), reported once the
    /// subsystem is shut down.
    failed: Option<String>,
    /// In [`Stage::Close`]: what is left to close; `None` once all is.
    close: Option<SftpClose>,
}

/// The started subsystem.
struct Subsystem {
    sftp: Held<ssh2::Sftp>,
    /// Its channel, to finish closing what `Sftp::shutdown` started (`None`
    /// if libssh2 did not give it away).
    channel: Option<close::SubsystemChannel>,
}

/// What the transfer does.
enum Job {
    Put(Box<PutJob>),
    Get(Box<GetJob>),
}

impl Job {
    /// Repeats the SFTP call that said would-block until it says something
    /// else (see [`SftpClose`]): true once none is pending.
    fn settle(&mut self, sess: &Session, sftp: &ssh2::Sftp) -> Result<bool, Fail> {
        match self {
            Job::Put(p) => p.settle(sess, sftp),
            Job::Get(g) => g.settle(sess, sftp),
        }
    }

    /// The handles still open.
    fn take_handles(&mut self) -> Vec<Held<ssh2::File>> {
        match self {
            Job::Put(p) => p.take_handles(),
            Job::Get(g) => g.take_handles(),
        }
    }
}

/// How an SFTP step failed.
pub(super) enum Fail {
    /// The session is unusable.
    Lost(String),
    /// The transfer failed (a path, a permission): a message naming the path.
    Own(String),
}

impl SftpRun {
    /// `ScpPut` over SFTP: checks the local sources now.
    pub(super) fn put(t: &Transfer) -> Result<SftpRun, TransportError> {
        Ok(SftpRun::new(Job::Put(Box::new(
            PutJob::new(t).map_err(TransportError::Transfer)?,
        ))))
    }

    /// `ScpGet` over SFTP: checks (and with `create_dirs` makes) the local target now.
    pub(super) fn get(t: &Transfer) -> Result<SftpRun, TransportError> {
        Ok(SftpRun::new(Job::Get(Box::new(
            GetJob::new(t).map_err(TransportError::Transfer)?,
        ))))
    }

    fn new(job: Job) -> SftpRun {
        SftpRun {
            stage: Stage::Init,
            init_counter: None,
            open: None,
            job: Some(job),
            failed: None,
            close: None,
        }
    }

    /// Whether a channel open may be in flight (the subsystem's own).
    pub(super) fn opening(&self) -> bool {
        self.stage == Stage::Init && self.init_counter.is_some()
    }

    /// Moves the transfer on until it would block.
    pub(super) fn step(&mut self, sess: &Session, spare: &mut Spare, _tc: &mut TaskChannel) -> Result<Flow, TaskFail> {
        loop {
            match self.stage {
                Stage::Init => {
                    if !finish_spare(sess, spare)? {
                        return Ok(Flow::Wait);
                    }
                    let before = *self.init_counter.get_or_insert_with(|| next_channel_id(sess));
                    match start(sess, before) {
                        Ok(Some(open)) => {
                            self.open = Some(open);
                            self.stage = Stage::Work;
                        }
                        Ok(None) => return Ok(Flow::Wait),
                        Err(Fail::Lost(m)) => return Err(TaskFail::Lost(m)),
                        Err(Fail::Own(m)) => {
                            // libssh2 is done with its open: nothing is in flight.
                            self.init_counter = None;
                            return Err(TaskFail::Task(TransportError::Transfer(m)));
                        }
                    }
                }
                Stage::Work => {
                    let open = self.open.as_ref().expect("the subsystem while working");
                    let job = self.job.as_mut().expect("the job while working");
                    let r = match job {
                        Job::Put(p) => p.step(sess, &open.sftp),
                        Job::Get(g) => g.step(sess, &open.sftp),
                    };
                    let handles = match r {
                        Ok(true) => Vec::new(),
                        Ok(false) => return Ok(Flow::Wait),
                        Err(Fail::Lost(m)) => return Err(TaskFail::Lost(m)),
                        Err(Fail::Own(m)) => {
                            self.failed = Some(m);
                            job.take_handles()
                        }
                    };
                    let open = self.open.take().expect("the subsystem while working");
                    self.close = Some(SftpClose::finished(open, handles));
                    self.stage = Stage::Close;
                }
                Stage::Close => {
                    if let Some(c) = &mut self.close {
                        if !c.step_to_confirmation(sess).map_err(TaskFail::Lost)? {
                            return Ok(Flow::Wait);
                        }
                    }
                    return Ok(Flow::TaskDone(Exit::OK));
                }
            }
        }
    }

    /// What is left to close on the session when the task is answered now
    /// (a cancel, or done with the channel's close unconfirmed); `None` if
    /// nothing is.
    pub(super) fn take_close(&mut self) -> Option<SftpClose> {
        match self.stage {
            Stage::Init => self.init_counter.map(SftpClose::starting),
            Stage::Work => Some(SftpClose::abandoned(self.open.take()?, self.job.take()?)),
            Stage::Close => self.close.take().filter(|c| !c.is_done()),
        }
    }

    /// What the scheduler learns: success unless the transfer failed.
    pub(super) fn outcome(self, result: Result<Exit, TransportError>, started: SystemTime) -> Outcome {
        let result = match (result, &self.failed) {
            (Ok(_), Some(m)) => Err(TransportError::Transfer(m.clone())),
            (r, _) => r,
        };
        Outcome::new(result, started)
    }
}

/// Starts the subsystem (`libssh2_sftp_init`): `Ok(None)` if it would block.
/// A refusal is `Own`. `before`: libssh2's channel counter before the first
/// call (see [`close::SubsystemChannel::opened`]).
fn start(sess: &Session, before: u32) -> Result<Option<Subsystem>, Fail> {
    match sess.sftp() {
        Ok(sftp) => Ok(Some(Subsystem {
            sftp: Held::new(sess, sftp),
            channel: close::SubsystemChannel::opened(sess, before),
        })),
        Err(e) if would_block(&e) => Ok(None),
        Err(e) if is_socket_error(&e) => Err(Fail::Lost(format!("starting the sftp subsystem: {e}"))),
        Err(e) => Err(Fail::Own(format!(
            "the server did not start its sftp subsystem: {}",
            e.message()
        ))),
    }
}

/// libssh2 runs one channel open at a time per session: a spare's open in
/// flight is finished before the subsystem opens its own. True when none is.
fn finish_spare(sess: &Session, spare: &mut Spare) -> Result<bool, TaskFail> {
    if !matches!(spare, Spare::Opening) {
        return Ok(true);
    }
    match sess.channel_session() {
        Ok(ch) => {
            // Right now, before any other open starts, it is the newest channel.
            let raw = RawChannel::newest(sess, &ch);
            *spare = Spare::Ready(ch, raw);
            Ok(true)
        }
        Err(e) if would_block(&e) => Ok(false),
        Err(e) if is_socket_error(&e) => Err(TaskFail::Lost(format!("opening a channel ahead: {e}"))),
        Err(_) => {
            *spare = Spare::Off;
            Ok(true)
        }
    }
}

/// How long a blocking libssh2 call made by one of the `ssh2` crate's
/// destructors may wait (milliseconds; see [`Held`]).
const ABANDON_TIMEOUT_MS: u32 = 1;

/// An `ssh2` SFTP object (the SFTP session or a file handle). Its own
/// destructor switches the session to blocking mode and closes it there,
/// which could stall the loop on an unresponsive host; it runs only when the
/// object is already closed (then it does nothing) or its session is being
/// abandoned (socket shut down), and even then under a libssh2 timeout of
/// [`ABANDON_TIMEOUT_MS`], so that no drop can block.
pub(super) struct Held<T> {
    v: ManuallyDrop<T>,
    sess: Session,
}

impl<T> Held<T> {
    pub(super) fn new(sess: &Session, v: T) -> Held<T> {
        Held {
            v: ManuallyDrop::new(v),
            sess: sess.clone(),
        }
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        let before = self.sess.timeout();
        self.sess.set_timeout(ABANDON_TIMEOUT_MS);
        // SAFETY: dropped once, here; `v` is not used again.
        unsafe { ManuallyDrop::drop(&mut self.v) };
        self.sess.set_timeout(before);
    }
}

impl<T> std::ops::Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.v
    }
}

impl<T> std::ops::DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.v
    }
}

/// Closes a handle: true once closed (the crate then has nothing left to
/// close on drop), false if it would block, `Err` if the session is lost. A
/// close the server refuses is not the transfer's failure.
pub(super) fn close_handle(sess: &Session, h: &mut Held<ssh2::File>, what: &str) -> Result<bool, String> {
    match h.close() {
        Ok(()) => Ok(true),
        Err(e) if would_block(&e) => Ok(false),
        Err(e) if is_socket_error(&e) || session_lost(sess) => Err(format!("closing {what} over sftp: {e}")),
        Err(_) => Ok(true),
    }
}

/// Whether a repeated call (see [`SftpClose`]) is answered: false if it
/// would block, `Lost` if the session is gone, true whatever else it says.
pub(super) fn answered<T>(r: Result<T, ssh2::Error>, path: &str) -> Result<bool, Fail> {
    match r {
        Err(e) if would_block(&e) => Ok(false),
        Err(e) if is_socket_error(&e) => Err(Fail::Lost(format!("{path}: {e}"))),
        _ => Ok(true),
    }
}

/// Whether the session's last error says the connection is gone.
fn session_lost(sess: &Session) -> bool {
    ssh2::Error::last_session_error(sess).is_some_and(|e| is_socket_error(&e))
}

/// What became of a libssh2 SFTP call: `Ok(Some)` done, `Ok(None)` would
/// block (repeat it), or the failure, with `path` named in the message.
pub(super) fn sftp_call<T>(r: Result<T, ssh2::Error>, path: &str) -> Result<Option<T>, Fail> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if would_block(&e) => Ok(None),
        Err(e) if is_socket_error(&e) => Err(Fail::Lost(format!("{path}: {e}"))),
        Err(e) => Err(Fail::Own(format!("{path}: {}", e.message()))),
    }
}

/// The same for a file handle's `Read`/`Write` (the crate turns its errors into `io::Error`).
pub(super) fn io_call<T>(sess: &Session, r: io::Result<T>, path: &str) -> Result<Option<T>, Fail> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if session_lost(sess) => Err(Fail::Lost(format!("{path}: {e}"))),
        Err(e) => Err(Fail::Own(format!("{path}: {e}"))),
    }
}

/// Whether an SFTP error says the path does not exist.
pub(super) fn not_found(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH))
}

/// A remote path as the sftp subsystem takes it: relative paths start in the
/// home directory, so `~/x` is `x` and `~` is `.` (`~user` is not expanded).
pub(super) fn remote_path(p: &str) -> String {
    match p {
        "~" | "~/" => ".".to_owned(),
        _ => match p.strip_prefix("~/") {
            Some(rest) => rest.to_owned(),
            None => p.to_owned(),
        },
    }
}

/// `dir/name` on the remote side.
pub(super) fn remote_join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Attributes that set a mode and times (and nothing else).
pub(super) fn mode_and_times(mode: u32, mtime: u64, atime: u64) -> FileStat {
    FileStat {
        size: None,
        uid: None,
        gid: None,
        perm: Some(mode & 0o7777),
        atime: Some(atime),
        mtime: Some(mtime),
    }
}

/// A local file's (mode, mtime, atime), times in seconds since the epoch.
pub(super) fn local_mode_and_times(meta: &std::fs::Metadata) -> (u32, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (
        meta.mode() & 0o7777,
        meta.mtime().max(0) as u64,
        meta.atime().max(0) as u64,
    )
}

/// Gives a local file or directory the mode and times of a remote one.
pub(super) fn set_local_attrs(path: &Path, stat: &FileStat) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    if let (Some(m), Some(a)) = (stat.mtime, stat.atime) {
        let times = std::fs::FileTimes::new().set_modified(at(m)).set_accessed(at(a));
        std::fs::File::open(path)
            .and_then(|f| f.set_times(times))
            .map_err(|e| format!("{}: cannot keep the modification time: {e}", path.display()))?;
    }
    if let Some(perm) = stat.perm {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(perm & 0o7777))
            .map_err(|e| format!("{}: cannot set its mode: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{remote_join, remote_path};

    #[test]
    fn remote_paths_start_in_the_home_directory() {
        assert_eq!(remote_path("~"), ".");
        assert_eq!(remote_path("~/"), ".");
        assert_eq!(remote_path("~/a/b"), "a/b");
        assert_eq!(remote_path("/srv/x"), "/srv/x");
        assert_eq!(remote_path("~user/x"), "~user/x");
        assert_eq!(remote_join("/", "x"), "/x");
        assert_eq!(remote_join("a", "x"), "a/x");
    }
}
