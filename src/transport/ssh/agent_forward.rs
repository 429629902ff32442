//! Agent forwarding for a command's session: the server's
//! `auth-agent@openssh.com` channel opens are taken from libssh2 and each is
//! relayed, without blocking, to a fresh connection to the local agent's
//! socket ([`AgentForward`]).
//!
//! How libssh2 1.11 does its part (vendored by libssh2-sys, `src/packet.c`,
//! `packet_authagent_open`): when a `CHANNEL_OPEN auth-agent@openssh.com`
//! arrives while the session's `LIBSSH2_CALLBACK_AUTHAGENT` callback is set
//! (`libssh2_session_callback_set2`), it allocates the channel, confirms the
//! open, links it into the session and hands the raw `LIBSSH2_CHANNEL*` to the
//! callback, from inside whatever libssh2 call read that packet; without the
//! callback the open is refused. It never touches the local agent: relaying
//! is ours. The callback only records the channel ([`agent_channel_opened`]);
//! the event loop then pumps it with libssh2's non-blocking channel calls and
//! a non-blocking Unix socket polled under the connection's auxiliary token.
//!
//! Invariants: the callback is set on a session exactly while an
//! [`AgentForward`] holding that session is armed, and never does more than
//! push to [`OPENED`] (it runs inside libssh2, under ssh2's session lock);
//! every libssh2 call here is made under that lock, on the connection's I/O
//! thread; a channel write that would block is repeated, with the same bytes
//! first, before anything else is sent on that channel. The bytes relayed
//! (agent requests and signatures) are never logged. A channel still open
//! when the forward is dropped (a cancelled command) is left to libssh2,
//! which frees it with the session: nothing is sent from `Drop`, so no half
//! sent packet can be left behind for the connection to trip on.
//!
//! May use: `transport::libssh2` (its rules), `event_loop` (`AUX`), `host`.

use std::ffi::{c_char, c_int, c_void};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::Mutex;

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use ssh2::Session;

use super::event_loop::AUX;
use crate::host::Host;

/// `LIBSSH2_CALLBACK_AUTHAGENT` (include/libssh2.h).
const LIBSSH2_CALLBACK_AUTHAGENT: c_int = 7;
/// libssh2's EAGAIN: repeat the same call later.
const EAGAIN: isize = -37;
/// At most this much is buffered per direction of one agent channel (agent
/// messages are far smaller; a peer that sends more waits for us to write).
const BUFFER_CAP: usize = 256 * 1024;

/// A callback of libssh2's generic type (`libssh2_cb_generic`).
type GenericCallback = unsafe extern "C" fn();

extern "C" {
    // In the libssh2 that libssh2-sys builds and links (1.11): the callback
    // setter is not bound by the crates, the channel calls are redeclared
    // here so that raw channels (which ssh2 cannot wrap) can be driven.
    fn libssh2_session_callback_set2(
        session: *mut c_void,
        cbtype: c_int,
        callback: Option<GenericCallback>,
    ) -> Option<GenericCallback>;
    fn libssh2_channel_read_ex(channel: *mut c_void, stream_id: c_int, buf: *mut c_char, buflen: usize) -> isize;
    fn libssh2_channel_write_ex(channel: *mut c_void, stream_id: c_int, buf: *const c_char, buflen: usize) -> isize;
    fn libssh2_channel_eof(channel: *mut c_void) -> c_int;
    fn libssh2_channel_close(channel: *mut c_void) -> c_int;
    fn libssh2_channel_free(channel: *mut c_void) -> c_int;
}

/// Agent channels libssh2 has opened and no [`AgentForward`] has taken yet:
/// `(session, channel)` raw pointers as addresses. Entries of a session are
/// only added while its forward is armed, and purged when it disarms.
static OPENED: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

fn opened() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
    // A poisoned list is still a list of addresses.
    OPENED.lock().unwrap_or_else(|e| e.into_inner())
}

/// libssh2's `LIBSSH2_AUTHAGENT_FUNC`: records the channel for the session's
/// forward. It must not call into libssh2 or ssh2 (their lock is held) and
/// must not unwind into C.
unsafe extern "C" fn agent_channel_opened(session: *mut c_void, channel: *mut c_void, _abstract: *mut *mut c_void) {
    opened().push((session as usize, channel as usize));
}

/// The raw session pointer behind `sess`, with its lock held as long as the
/// guard lives.
fn raw_session(sess: &Session) -> (impl Sized + '_, *mut c_void) {
    let mut guard = sess.raw();
    let ptr = &mut *guard as *mut _ as *mut c_void;
    (guard, ptr)
}

/// Where a forwarded agent lives: the host's `ForwardAgent` socket, else the
/// agent it authenticates with (`IdentityAgent`, [`Host::agent_socket`]),
/// else `$SSH_AUTH_SOCK`. `None`: there is no agent to forward.
pub(super) fn agent_socket_for(host: &Host) -> Option<PathBuf> {
    if !host.forward_agent.unwrap_or(false) {
        return None;
    }
    host.forward_agent_socket
        .clone()
        .or_else(|| host.agent_socket.clone())
        .or_else(|| {
            std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
}

/// Agent forwarding for one command: arms the session's callback on its first
/// step, relays every agent channel the server opens, disarms when dropped.
pub(super) struct AgentForward {
    /// The local agent's socket; each agent channel gets its own connection.
    socket: PathBuf,
    /// The label's name, for logs.
    name: std::sync::Arc<str>,
    /// Where the agent connections are polled (a clone of the loop's).
    registry: Registry,
    /// Their poll token: the connection's key with [`AUX`].
    token: Token,
    /// The session while armed (a clone: it cannot be freed before the
    /// callback is unset and our channels are let go).
    armed: Option<Session>,
    /// The agent channels being relayed.
    relays: Vec<Relay>,
}

/// How an agent channel's relay ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Copying both ways.
    Relay,
    /// Closing the channel (libssh2 sends EOF and CLOSE, then waits for the
    /// server's CLOSE).
    Close,
    /// Freeing the channel.
    Free,
    /// Gone from libssh2; to be removed.
    Done,
}

/// One agent channel and its connection to the local agent.
struct Relay {
    /// libssh2's channel, alive until it is freed at [`Stage::Done`] (or, if
    /// this is dropped before, with the session).
    channel: *mut c_void,
    /// The connection to the local agent (`None`: it could not be made, the
    /// channel is closed at once).
    agent: Option<UnixStream>,
    /// From the channel, not yet written to the agent.
    to_agent: Vec<u8>,
    /// From the agent, not yet written to the channel; a write that would
    /// block is repeated with these same bytes first.
    to_remote: Vec<u8>,
    /// The server sent EOF (or closed) and everything it sent has been read.
    remote_eof: bool,
    /// Our agent connection's write side is shut (after `remote_eof` and
    /// `to_agent` delivered): the agent then closes its side.
    agent_shut: bool,
    /// The agent closed its side (or failed).
    agent_eof: bool,
    stage: Stage,
}

// SAFETY: the raw channel is only used on the connection's I/O thread, under
// the session's lock (the forward moves with its connection, never shared).
unsafe impl Send for Relay {}

impl AgentForward {
    /// Forwarding to the agent at `socket` for the connection `key` (whose
    /// poll is `registry`).
    pub(super) fn new(
        socket: PathBuf,
        name: std::sync::Arc<str>,
        registry: &Registry,
        key: usize,
    ) -> io::Result<AgentForward> {
        Ok(AgentForward {
            socket,
            name,
            registry: registry.try_clone()?,
            token: Token(key | AUX),
            armed: None,
            relays: Vec::new(),
        })
    }

    /// Sets the session's agent callback (once): from now on the server's
    /// agent channel opens are accepted and handed to this forward.
    fn arm(&mut self, sess: &Session) {
        if self.armed.is_some() {
            return;
        }
        let (_lock, raw) = raw_session(sess);
        let callback: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut *mut c_void) = agent_channel_opened;
        // SAFETY: a valid session, locked; the callback has libssh2's
        // LIBSSH2_AUTHAGENT_FUNC signature, passed as the generic type the
        // setter takes (it casts it back before calling).
        unsafe {
            let generic = std::mem::transmute::<
                unsafe extern "C" fn(*mut c_void, *mut c_void, *mut *mut c_void),
                GenericCallback,
            >(callback);
            libssh2_session_callback_set2(raw, LIBSSH2_CALLBACK_AUTHAGENT, Some(generic));
        }
        // Entries of a freed session that had the same address are stale.
        opened().retain(|(s, _)| *s != raw as usize);
        self.armed = Some(sess.clone());
    }

    /// Moves every agent channel on until nothing more can be done without
    /// waiting: takes the channels opened since the last call, copies both
    /// ways, closes and frees the finished ones. Never blocks.
    pub(super) fn pump(&mut self, sess: &Session) {
        self.arm(sess);
        let (_lock, raw) = raw_session(sess);
        let mut new = Vec::new();
        opened().retain(|&(s, ch)| {
            if s == raw as usize {
                new.push(ch);
                false
            } else {
                true
            }
        });
        for ch in new {
            self.relays.push(self.connect(ch as *mut c_void));
        }
        for relay in &mut self.relays {
            relay.step();
        }
        let before = self.relays.len();
        self.relays.retain(|r| r.stage != Stage::Done);
        if self.relays.len() < before {
            log::debug!(target: "ssh_parallel", "[{}] forwarded agent connection closed", self.name);
        }
    }

    /// A relay for a channel just opened: a new connection to the agent.
    fn connect(&self, channel: *mut c_void) -> Relay {
        let agent = match UnixStream::connect(&self.socket) {
            Ok(mut stream) => {
                match self
                    .registry
                    .register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)
                {
                    Ok(()) => Some(stream),
                    Err(e) => {
                        log::warn!(target: "ssh_parallel", "[{}] cannot poll the agent connection: {e}", self.name);
                        None
                    }
                }
            }
            Err(e) => {
                log::warn!(
                    target: "ssh_parallel",
                    "[{}] agent forwarding: cannot connect to the agent at {}: {e}",
                    self.name,
                    self.socket.display()
                );
                None
            }
        };
        log::debug!(target: "ssh_parallel", "[{}] forwarded agent connection opened", self.name);
        Relay {
            channel,
            stage: if agent.is_some() { Stage::Relay } else { Stage::Close },
            agent,
            to_agent: Vec::new(),
            to_remote: Vec::new(),
            remote_eof: false,
            agent_shut: false,
            agent_eof: false,
        }
    }
}

impl Drop for AgentForward {
    /// Unsets the callback (later agent opens are refused by libssh2) and
    /// lets go of the channels (see the module's invariants).
    fn drop(&mut self) {
        if let Some(sess) = self.armed.take() {
            let (_lock, raw) = raw_session(&sess);
            // SAFETY: a valid session, locked; no callback is a valid setting.
            unsafe {
                libssh2_session_callback_set2(raw, LIBSSH2_CALLBACK_AUTHAGENT, None);
            }
            opened().retain(|(s, _)| *s != raw as usize);
            if self.relays.iter().any(|r| r.stage != Stage::Done) {
                log::debug!(
                    target: "ssh_parallel",
                    "[{}] forwarded agent connections left open with the command's end",
                    self.name
                );
            }
        }
    }
}

impl Relay {
    /// Copies both ways until nothing moves, then closes and frees the
    /// channel once both sides are done. Called with the session locked.
    fn step(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        while self.stage == Stage::Relay {
            let mut progress = false;
            // The server's side to the agent.
            if !self.remote_eof && self.to_agent.len() < BUFFER_CAP {
                // SAFETY: a live channel (see `channel`), the session locked.
                let n = unsafe { libssh2_channel_read_ex(self.channel, 0, buf.as_mut_ptr().cast(), buf.len()) };
                // SAFETY: as above.
                let ended = n != EAGAIN && (n < 0 || (n == 0 && unsafe { libssh2_channel_eof(self.channel) } != 0));
                if n > 0 {
                    self.to_agent.extend_from_slice(&buf[..n as usize]);
                    progress = true;
                } else if ended {
                    self.remote_eof = true;
                    progress = true;
                }
            }
            if let Some(agent) = self.agent.as_mut() {
                progress |= write_some(agent, &mut self.to_agent, &mut self.agent_eof);
                if self.remote_eof && self.to_agent.is_empty() && !self.agent_shut {
                    let _ = agent.shutdown(Shutdown::Write);
                    self.agent_shut = true;
                    progress = true;
                }
                // The agent's side to the server.
                if !self.agent_eof && self.to_remote.len() < BUFFER_CAP {
                    match agent.read(&mut buf) {
                        Ok(0) => {
                            self.agent_eof = true;
                            progress = true;
                        }
                        Ok(n) => {
                            self.to_remote.extend_from_slice(&buf[..n]);
                            progress = true;
                        }
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                        Err(_) => {
                            self.agent_eof = true;
                            progress = true;
                        }
                    }
                }
            }
            if !self.to_remote.is_empty() {
                // SAFETY: as above; after a would-block the same bytes come first again.
                let n = unsafe {
                    libssh2_channel_write_ex(self.channel, 0, self.to_remote.as_ptr().cast(), self.to_remote.len())
                };
                if n > 0 {
                    self.to_remote.drain(..n as usize);
                    progress = true;
                } else if n < 0 && n != EAGAIN {
                    // The channel is gone (the server closed it): nothing more goes that way.
                    self.to_remote.clear();
                    self.agent_eof = true;
                    self.remote_eof = true;
                    progress = true;
                }
            }
            let agent_done = self.agent_eof && self.to_remote.is_empty();
            let remote_done = self.remote_eof && self.to_agent.is_empty();
            if agent_done || (remote_done && self.agent.is_none()) {
                self.stage = Stage::Close;
            } else if !progress {
                return;
            }
        }
        // SAFETY (both calls): as above; once freed, the pointer is never used again.
        if self.stage == Stage::Close && unsafe { libssh2_channel_close(self.channel) } as isize != EAGAIN {
            self.stage = Stage::Free;
        }
        if self.stage == Stage::Free && unsafe { libssh2_channel_free(self.channel) } as isize != EAGAIN {
            self.stage = Stage::Done;
            self.agent = None;
        }
    }
}

/// Writes as much of `pending` to the agent as it takes; a failed write
/// drops the rest and marks the agent gone. Returns whether anything moved.
fn write_some(agent: &mut UnixStream, pending: &mut Vec<u8>, agent_eof: &mut bool) -> bool {
    let mut progress = false;
    while !pending.is_empty() {
        match agent.write(pending) {
            Ok(0) => break,
            Ok(n) => {
                pending.drain(..n);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                pending.clear();
                *agent_eof = true;
                return true;
            }
        }
    }
    progress
}
