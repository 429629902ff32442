//! SFTP transfers: an `ScpPut` or `ScpGet` run over the host's `sftp`
//! subsystem with libssh2's SFTP (through the `ssh2` crate), for hosts
//! without an `scp` binary or that allow only SFTP. [`put`] sends, [`get`]
//! receives; this module runs the subsystem's life (start, the transfer,
//! closing the handles, shutdown) and holds what both sides share.
//!
//! Everything is non-blocking on the event loop: every libssh2 call may say
//! would-block and is then repeated, unchanged, at the next step before any
//! other call is made (libssh2 keeps each SFTP operation's state between
//! calls). Bulk data moves in large buffers, which libssh2 splits into many
//! requests in flight (writes are pipelined, reads read ahead).
//!
//! Invariant: a handle or the SFTP session is only ever let go of by a
//! non-blocking close; one left open when the task is abandoned (a cancel, a
//! lost connection) is leaked, never dropped, because the `ssh2` crate's
//! destructors switch the session to blocking mode and would stall the loop
//! on an unresponsive host. The destination rule is the one of
//! `task::transfer`, as for SCP and local copies.
//!
//! May use: `conn` (`Flow`, `Spare`, `TaskFail`), `channel` (`TaskChannel`),
//! `transport::libssh2`, `task` (`Transfer` and the destination rule).

use std::io;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ssh2::{ErrorCode, FileStat, Session, Sftp};

use self::get::GetJob;
use self::put::PutJob;
use super::channel::TaskChannel;
use super::conn::{Flow, Spare, TaskFail};
use crate::task::Transfer;
use crate::transport::exit::Exit;
use crate::transport::libssh2::{is_socket_error, would_block, RawChannel};
use crate::transport::protocol::{Outcome, TransportError};

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
    /// Closing the handles the transfer still holds (after its own error).
    CloseHandles,
    /// Closing the subsystem's channel.
    Shutdown,
}

/// An SFTP transfer running on a session.
pub(super) struct SftpRun {
    stage: Stage,
    /// Set once the subsystem started; taken by the shutdown.
    sftp: Option<Leaked<Sftp>>,
    job: Job,
    /// The transfer's own failure (the session is fine), reported once the
    /// subsystem is shut down.
    failed: Option<String>,
    /// Handles still to close after a failure.
    closing: Vec<Leaked<ssh2::File>>,
}

/// What the transfer does.
enum Job {
    Put(Box<PutJob>),
    Get(Box<GetJob>),
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
            sftp: None,
            job,
            failed: None,
            closing: Vec::new(),
        }
    }

    /// Whether a channel open may be in flight (the subsystem's own).
    pub(super) fn opening(&self) -> bool {
        self.stage == Stage::Init
    }

    /// Moves the transfer on until it would block.
    pub(super) fn step(&mut self, sess: &Session, spare: &mut Spare, _tc: &mut TaskChannel) -> Result<Flow, TaskFail> {
        loop {
            match self.stage {
                Stage::Init => {
                    if !finish_spare(sess, spare)? {
                        return Ok(Flow::Wait);
                    }
                    match sess.sftp() {
                        Ok(sftp) => {
                            self.sftp = Some(Leaked::new(sftp));
                            self.stage = Stage::Work;
                        }
                        Err(e) if would_block(&e) => return Ok(Flow::Wait),
                        Err(e) if is_socket_error(&e) => {
                            return Err(TaskFail::Lost(format!("starting the sftp subsystem: {e}")))
                        }
                        Err(e) => {
                            // libssh2 is done with its open: nothing is in flight.
                            self.stage = Stage::Shutdown;
                            return Err(TaskFail::Task(TransportError::Transfer(format!(
                                "the server did not start its sftp subsystem: {}",
                                e.message()
                            ))));
                        }
                    }
                }
                Stage::Work => {
                    let sftp = self.sftp.as_ref().expect("sftp while working");
                    let r = match &mut self.job {
                        Job::Put(p) => p.step(sess, sftp),
                        Job::Get(g) => g.step(sess, sftp),
                    };
                    match r {
                        Ok(true) => self.stage = Stage::Shutdown,
                        Ok(false) => return Ok(Flow::Wait),
                        Err(Fail::Lost(m)) => return Err(TaskFail::Lost(m)),
                        Err(Fail::Own(m)) => {
                            self.failed = Some(m);
                            self.closing = match &mut self.job {
                                Job::Put(p) => p.take_handles(),
                                Job::Get(g) => g.take_handles(),
                            };
                            self.stage = Stage::CloseHandles;
                        }
                    }
                }
                Stage::CloseHandles => {
                    while let Some(h) = self.closing.last_mut() {
                        if !close_handle(sess, h, "a file").map_err(TaskFail::Lost)? {
                            return Ok(Flow::Wait);
                        }
                        self.closing.pop();
                    }
                    self.stage = Stage::Shutdown;
                }
                Stage::Shutdown => {
                    if let Some(mut sftp) = self.sftp.take() {
                        // Sends the channel's close; a would-block means only
                        // the server's confirmation is missing (the crate
                        // cannot be called again: libssh2 keeps the channel
                        // until the session ends, as a cancel's close does).
                        match sftp.shutdown() {
                            Err(e) if is_socket_error(&e) => {
                                return Err(TaskFail::Lost(format!("closing the sftp subsystem: {e}")))
                            }
                            Ok(()) | Err(_) => {}
                        }
                        sftp.release();
                    }
                    return Ok(Flow::TaskDone(Exit::OK));
                }
            }
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

/// An `ssh2` object whose destructor must not run unless it is known not to
/// block (see the module doc): dropped, it is leaked; [`release`](Self::release)
/// drops it for real.
pub(super) struct Leaked<T>(ManuallyDrop<T>);

impl<T> Leaked<T> {
    pub(super) fn new(v: T) -> Leaked<T> {
        Leaked(ManuallyDrop::new(v))
    }

    /// Drops it: only once its libssh2 side is closed (nothing left to send).
    pub(super) fn release(self) {
        drop(ManuallyDrop::into_inner(self.0));
    }
}

impl<T> std::ops::Deref for Leaked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Leaked<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Closes a handle: true once closed (the crate then has nothing left to
/// close on drop), false if it would block, `Err` if the session is lost. A
/// close the server refuses is not the transfer's failure.
pub(super) fn close_handle(sess: &Session, h: &mut Leaked<ssh2::File>, what: &str) -> Result<bool, String> {
    match h.close() {
        Ok(()) => Ok(true),
        Err(e) if would_block(&e) => Ok(false),
        Err(e) if is_socket_error(&e) || session_lost(sess) => Err(format!("closing {what} over sftp: {e}")),
        Err(_) => Ok(true),
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
