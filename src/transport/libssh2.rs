//! Glue to libssh2 (through the `ssh2` crate): the rules of its non-blocking
//! API, written once for the event loop, the rsync bridge and the blocking
//! [`Session`](crate::Session) a parsub receives.
//!
//! - which errors mean "repeat the call" ([`would_block`]), which mean the
//!   connection is gone ([`is_socket_error`]), and the numeric codes;
//! - after a write said would-block, whether reading may go on meanwhile
//!   ([`write_blocked_on_input`]);
//! - reading a channel's stdout and stderr until a pass reads nothing
//!   ([`read_pass`], [`drain`]);
//! - sending EOF ([`send_eof`]);
//! - a closed channel's exit status or signal ([`exit_of`]);
//! - libssh2's packet read timeout, which the crate does not bind
//!   ([`set_read_timeout`]);
//! - the RFC 4254 `signal` request, which the crate does not bind either
//!   ([`RawChannel`]).
//!
//! Invariant: nothing here blocks unless the session itself is in blocking
//! mode, and nothing keeps state between calls (callers own every flag).
//!
//! May use: `transport` (`Exit`, `signal_number`) and nothing else of the crate.

use std::io::{self, Read};
use std::time::Duration;

use ssh2::{BlockDirections, Channel, ErrorCode, Session};

use crate::transport::exit::{signal_number, Exit};

const LIBSSH2_ERROR_EAGAIN: i32 = -37;
/// Key exchange failures (reported by the handshake).
pub(crate) const LIBSSH2_ERROR_KEX_FAILURE: i32 = -5;
pub(crate) const LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE: i32 = -8;
const LIBSSH2_ERROR_SOCKET_SEND: i32 = -7;
const LIBSSH2_ERROR_SOCKET_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_SOCKET_DISCONNECT: i32 = -13;
/// The server refused to open a channel.
pub(crate) const LIBSSH2_ERROR_CHANNEL_FAILURE: i32 = -21;
/// The server refused a channel request (env, pty, exec).
pub(crate) const LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED: i32 = -22;
const LIBSSH2_ERROR_SOCKET_RECV: i32 = -43;

/// The numeric libssh2 error code.
pub(crate) fn code(e: &ssh2::Error) -> i32 {
    match e.code() {
        ErrorCode::Session(c) => c,
        ErrorCode::SFTP(c) => c,
    }
}

/// libssh2's EAGAIN: repeat the same call when the socket is ready.
pub(crate) fn would_block(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::Session(LIBSSH2_ERROR_EAGAIN))
}

/// Errors that mean the connection itself is gone.
pub(crate) fn is_socket_error(e: &ssh2::Error) -> bool {
    matches!(
        code(e),
        LIBSSH2_ERROR_SOCKET_SEND
            | LIBSSH2_ERROR_SOCKET_RECV
            | LIBSSH2_ERROR_SOCKET_DISCONNECT
            | LIBSSH2_ERROR_SOCKET_TIMEOUT
    )
}

/// After a channel write or close said would-block: true when libssh2 waits
/// for input (the peer's window is shut, or only its answer is missing), so
/// the caller may read meanwhile; false when a packet is half sent, and then
/// nothing but that same call may be made until it goes through.
pub(crate) fn write_blocked_on_input(sess: &Session) -> bool {
    matches!(sess.block_directions(), BlockDirections::Inbound)
}

/// How a closed channel's command ended: its signal if one killed it, else
/// its exit status (`None` if the server sent neither).
pub(crate) fn exit_of(ch: &Channel) -> Exit {
    let signal = ch
        .exit_signal()
        .ok()
        .and_then(|s| s.exit_signal)
        .map(|name| signal_number(&name));
    let code = if signal.is_some() { None } else { ch.exit_status().ok() };
    Exit { code, signal }
}

/// Sends EOF on the channel: false if it would block (call again). A failure
/// means the command closed its input already, which is not an error.
pub(crate) fn send_eof(ch: &mut Channel) -> bool {
    match ch.send_eof() {
        Err(e) if would_block(&e) => false,
        Ok(()) | Err(_) => true,
    }
}

/// Where a channel's output goes while it is read.
pub(crate) trait OutputSink {
    /// Why the sink failed.
    type Error;
    /// Whether stream `stream` (0 stdout, 1 stderr) may be read now; a sink
    /// that is full says no until the caller has emptied it.
    fn room(&self, _stream: usize) -> bool {
        true
    }
    /// Takes bytes read from stream `stream`.
    fn put(&mut self, stream: usize, data: &[u8]) -> Result<(), Self::Error>;
}

/// Collects stdout into the first buffer, stderr into the second.
impl OutputSink for [Vec<u8>; 2] {
    type Error = std::convert::Infallible;

    fn put(&mut self, stream: usize, data: &[u8]) -> Result<(), Self::Error> {
        self[stream].extend_from_slice(data);
        Ok(())
    }
}

/// Why reading a channel's output failed.
pub(crate) enum ReadError<E> {
    /// Reading stream `stream` of the channel (so, the session) failed.
    Channel { stream: usize, error: io::Error },
    /// The sink refused the data.
    Sink(E),
}

/// One pass over stdout then stderr: each stream not at its end is read
/// until it would block, ends (`eof[i]` set) or its sink has no room.
/// Returns whether anything was read or an end newly seen.
pub(crate) fn read_pass<S: OutputSink>(
    ch: &mut Channel,
    eof: &mut [bool; 2],
    sink: &mut S,
) -> Result<bool, ReadError<S::Error>> {
    let mut buf = [0u8; 32 * 1024];
    let mut progress = false;
    for (i, ended) in eof.iter_mut().enumerate() {
        let mut s = ch.stream(i as i32);
        while !*ended && sink.room(i) {
            match s.read(&mut buf) {
                Ok(0) => {
                    // The end may have come with data for the other stream.
                    *ended = true;
                    progress = true;
                }
                Ok(n) => {
                    progress = true;
                    sink.put(i, &buf[..n]).map_err(ReadError::Sink)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(ReadError::Channel { stream: i, error }),
            }
        }
    }
    Ok(progress)
}

/// Reads stdout and stderr until a pass reads nothing; true once both ended.
///
/// Reading one stream makes libssh2 pull every packet the socket holds, the
/// other stream's too, so the passes go on until one finds nothing: only
/// then is nothing left in libssh2's buffers that no new edge would announce.
pub(crate) fn drain<S: OutputSink>(
    ch: &mut Channel,
    eof: &mut [bool; 2],
    sink: &mut S,
) -> Result<bool, ReadError<S::Error>> {
    loop {
        let progress = read_pass(ch, eof, sink)?;
        if *eof == [true, true] {
            return Ok(true);
        }
        if !progress {
            return Ok(false);
        }
    }
}

extern "C" {
    // In the libssh2 that libssh2-sys builds and links, but not bound by it.
    fn libssh2_session_set_read_timeout(session: *mut std::ffi::c_void, timeout_s: std::ffi::c_long);
    fn libssh2_channel_signal_ex(
        channel: *mut std::ffi::c_void,
        signame: *const std::ffi::c_char,
        signame_len: usize,
    ) -> std::ffi::c_int;
    // Internal to libssh2 but global symbols of its static library: the only
    // way from a session to the raw channel that ssh2's `Channel` hides.
    fn ssh2_channel_nextid(session: *mut std::ffi::c_void) -> u32;
    fn ssh2_channel_locate(session: *mut std::ffi::c_void, channel_id: u32) -> *mut std::ffi::c_void;
    #[cfg(test)]
    fn libssh2_session_get_read_timeout(session: *mut std::ffi::c_void) -> std::ffi::c_long;
}

/// libssh2 gives up waiting for an awaited packet after its own read timeout
/// (60 s by default), even in non-blocking mode, and reports it as the step
/// failing (an auth failure while waiting for the USERAUTH answer, say). Our
/// deadlines must fire first, so this is set beyond them; the libssh2 limit
/// stays as a last resort for lent (blocking) sessions.
pub(crate) fn set_read_timeout(sess: &Session, timeout: Duration) {
    let secs = std::ffi::c_long::try_from(timeout.as_secs().max(1)).unwrap_or(std::ffi::c_long::MAX);
    let mut raw = sess.raw();
    // SAFETY: a valid session pointer, held under the session's lock for the call.
    unsafe { libssh2_session_set_read_timeout(&mut *raw as *mut _ as *mut std::ffi::c_void, secs) }
}

/// libssh2's channel counter: the number the next channel opened on `sess`
/// gets (reading it bumps it; a skipped number is harmless).
pub(crate) fn next_channel_id(sess: &Session) -> u32 {
    let mut raw = sess.raw();
    // SAFETY: a valid session pointer, held under the session's lock.
    unsafe { ssh2_channel_nextid(&mut *raw as *mut _ as *mut std::ffi::c_void) }
}

/// The raw handle of channel number `id` of `sess`, if it lists one; for a
/// channel the `ssh2` crate hands out no `Channel` for (the sftp
/// subsystem's). Nothing keeps it alive.
pub(crate) fn locate_channel(sess: &Session, id: u32) -> Option<std::ptr::NonNull<std::ffi::c_void>> {
    let mut raw = sess.raw();
    // SAFETY: a valid session pointer, held under the session's lock.
    std::ptr::NonNull::new(unsafe { ssh2_channel_locate(&mut *raw as *mut _ as *mut std::ffi::c_void, id) })
}

/// A channel's raw libssh2 handle, for the requests the `ssh2` crate does not
/// offer (`signal`). It keeps a clone of the channel, so the handle stays
/// valid as long as this lives.
pub(crate) struct RawChannel {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    _keep: Channel,
}

// SAFETY: the pointer is only used under the session's lock (see `signal`),
// like every libssh2 call ssh2's own `Send` channel makes.
unsafe impl Send for RawChannel {}

impl RawChannel {
    /// The raw handle of `ch`, which must be the channel whose open finished
    /// last on `sess`: call it right after `channel_session` returned it,
    /// before anything else can open one.
    ///
    /// libssh2 numbers channels from a per-session counter and runs one open
    /// at a time, so the newest channel has the number just below the
    /// counter. Reading the counter bumps it; a skipped number is harmless.
    /// `None` if no channel has that number (a later open came in between).
    pub(crate) fn newest(sess: &Session, ch: &Channel) -> Option<RawChannel> {
        Some(RawChannel {
            ptr: locate_channel(sess, next_channel_id(sess).checked_sub(1)?)?,
            _keep: ch.clone(),
        })
    }

    /// Sends the RFC 4254 `signal` request (`name` without `SIG`; no reply
    /// is asked for). A would-block must be followed by the same call.
    pub(crate) fn signal(&self, sess: &Session, name: &str) -> Result<(), ssh2::Error> {
        let rc = {
            let _lock = sess.raw();
            // SAFETY: the channel is alive (`_keep`) and the session locked.
            unsafe { libssh2_channel_signal_ex(self.ptr.as_ptr(), name.as_ptr().cast(), name.len()) }
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(ssh2::Error::from_session_error(sess, rc))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libssh2_read_timeout_goes_beyond_our_deadlines() {
        let sess = Session::new().unwrap();
        set_read_timeout(&sess, Duration::from_secs(200));
        let mut raw = sess.raw();
        // SAFETY: as in set_read_timeout.
        let got = unsafe { libssh2_session_get_read_timeout(&mut *raw as *mut _ as *mut std::ffi::c_void) };
        assert_eq!(got, 200);
    }
}
