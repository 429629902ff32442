//! Jump hosts (`ProxyJump`), natively: a *jump session* is a `Conn` to the
//! jump host that serves no label; each connection behind it gets a
//! *tunnel*: a `direct-tcpip` channel of the jump session to the target's
//! host and port, pumped by the loop to and from one end of a socketpair
//! whose other end is the target session's [`Stream::Tunnel`]. No thread
//! per tunnel, no local listener. A chain `a,b` is a jump session to `a`, a
//! jump session to `b` over a tunnel of `a`, and the target over a tunnel of
//! `b`.
//!
//! One jump session per distinct jump host ([`Host::session_key`]: host
//! name, port, user, key files, agent, and the hops before it) is shared by
//! every connection behind it on this I/O thread, and labels behind the same
//! jump host are all given to the same I/O thread (see [`super::Handle`]),
//! so a thousand labels behind one bastion cost one login there (a few
//! more, at most 8, only when its channel opens are slow: see
//! `jump_pool`). A jump
//! session has the same connect and auth deadlines, keepalives and host-key
//! check (under the hop's own name, `HostKeyAlias` and known_hosts files)
//! as any session. When it fails or is lost, every connection through it
//! fails or is lost with a message naming the hop (`... via bastion: jump
//! host bastion: ...`), each label's reconnection rules apply, and the first
//! reconnection opens one new jump session that the others join. A jump
//! session left without tunnels stays up for [`LINGER`] (a label closing
//! and reopening its connection does not log in again), then disconnects.
//!
//! Jump sessions do **not** count against `ParallelBuilder::connections`:
//! that limit is on the labels' connections (each tunnel counts as its
//! label's connection); a jump session is shared infrastructure that exists
//! only while some of them need it.
//!
//! libssh2 rules kept here: one channel open at a time per session (opens
//! are queued, one in flight, with the jump host's connect timeout; a jump
//! host that does not answer one in time is presumed dead); after a send
//! left a packet half written, only that same call is repeated until it goes
//! through ([`Stuck`]), and no keepalive is sent meanwhile; every step reads
//! the socket until it would block before anything waits (one unconditional
//! channel read per step, then the channels libssh2 holds data or EOF for).
//!
//! Invariant: a tunnel lives exactly as long as both its ends: it closes its
//! channel when the target's end of the socketpair is closed, and shuts its
//! own end's write side when the channel reaches EOF; a tunnel's socket is
//! registered under `id | TUN` with an id of its own, so a reconnecting
//! label never meets its old tunnel.
//!
//! May use: `event_loop` (`Cx`), `transport::libssh2`; the connection side
//! is `jump_conn`, the sessions per jump host `jump_pool`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Registry};
use ssh2::{Channel, Session};

use super::event_loop::Cx;
use crate::transport::libssh2::{is_socket_error, send_eof, would_block, write_blocked_on_input};

/// Set in the poll token of a tunnel's socket; the rest is the tunnel's id.
pub(super) const TUN: usize = 1 << (usize::BITS - 3);
/// How long a jump session without tunnels stays up.
pub(super) const LINGER: Duration = Duration::from_secs(5);
const CHUNK: usize = 32 * 1024;

/// What a jump session (or a connection asking for one) tells the loop.
pub(super) enum News {
    /// Connection `key`, in `Phase::Tunnel`, needs a tunnel through its last jump host.
    NeedTunnel(usize),
    /// Tunnel `id` of connection `conn` is open.
    TunnelOpen { conn: usize, id: usize },
    /// Tunnel `id` of connection `conn` failed, or its jump session is gone.
    /// `held` is the tunnel's end of the socketpair, kept open until the
    /// connection has learnt `why`: closed earlier, the target's session
    /// could read the EOF first and fail with a message that hides the cause
    /// ("Failed getting banner" for a jump host that went down).
    TunnelGone {
        conn: usize,
        id: usize,
        why: String,
        held: Option<UnixStream>,
    },
    /// Tunnel `id` is closed and removed.
    TunnelClosed(usize),
}

/// A half-sent packet: only the call that sent it may be made until it is out.
#[derive(Clone, Copy)]
enum Stuck {
    /// The queued tunnel's channel open.
    Open,
    /// A tunnel's write, EOF or close.
    Tunnel(usize),
}

/// What a jump session holds beyond an ordinary connection.
pub(super) struct JumpState {
    /// The key it is shared under ([`Host::session_key`](crate::host::Host)).
    pub(super) key: String,
    /// Tunnels by id.
    tunnels: BTreeMap<usize, Tunnel>,
    /// Tunnels whose channel is still to be opened, in order; the first is
    /// being opened once the session is up.
    queue: VecDeque<usize>,
    /// When the open in flight (the queue's first) gives up, if one is in flight.
    open_deadline: Option<Instant>,
    /// The loop's idle time (`Cx::idle`) when the open in flight was asked for.
    open_idle: Duration,
    /// How many channel opens went through, and the least time the loop sat
    /// idle while one was in flight: what an open costs on the network and
    /// at the jump host, without this thread's other work (and without the
    /// first open's one-off wait: sshd sets up its session then).
    opens: (u32, Duration),
    /// The call to repeat before any other send, if one is half sent.
    stuck: Option<Stuck>,
    /// Since when no tunnel is left (for [`LINGER`]).
    idle_since: Option<Instant>,
    /// Why the session failed or was lost, once it has: a connection that
    /// asks it for a tunnel afterwards (it can fail while being opened, before
    /// the first tunnel is attached) fails with this.
    down: Option<String>,
}

/// Why a jump session did not take a tunnel.
pub(super) enum TunnelRefused {
    /// The session failed or was lost, for this reason.
    Down(String),
    /// The tunnel's socket could not be polled.
    Poll(String),
}

/// Tunnels whose channel was never asked for, moving from one session of a
/// jump host to another.
pub(super) struct Waiting(Vec<(usize, Tunnel)>);

/// One target connection carried by the jump session.
struct Tunnel {
    /// The connection it carries (for news).
    conn: usize,
    /// Our end of the socketpair, registered under `id | TUN`.
    ours: UnixStream,
    /// Where the jump host is asked to connect.
    dest: (String, u16),
    /// The `direct-tcpip` channel, once open.
    ch: Option<Channel>,
    /// The socket said readable / writable since it last would block.
    readable: bool,
    writable: bool,
    /// From the target's session, not yet written to the channel (`up[up_off..]`).
    up: Vec<u8>,
    up_off: usize,
    /// The target's end is closed: the tunnel is to be closed.
    up_eof: bool,
    /// From the channel, not yet written to our end.
    down: Vec<u8>,
    down_off: usize,
    /// The channel reached EOF.
    down_eof: bool,
    /// Our end's write side is shut down (after `down_eof` and `down` delivered).
    shut: bool,
    /// EOF was sent on the channel (the close follows).
    eof_sent: bool,
}

impl JumpState {
    /// A jump session's state, shared under `key`.
    pub(super) fn new(key: String) -> JumpState {
        JumpState {
            key,
            tunnels: BTreeMap::new(),
            queue: VecDeque::new(),
            open_deadline: None,
            open_idle: Duration::ZERO,
            opens: (0, Duration::MAX),
            stuck: None,
            idle_since: Some(Instant::now()),
            down: None,
        }
    }

    /// Whether something is in flight or buffered (the connection gets frequent safety steps).
    pub(super) fn busy(&self) -> bool {
        self.open_deadline.is_some()
            || self.stuck.is_some()
            || self
                .tunnels
                .values()
                .any(|t| t.up_off < t.up.len() || t.down_off < t.down.len())
    }

    /// Whether a keepalive may be sent now (nothing half sent).
    pub(super) fn can_send(&self) -> bool {
        self.stuck.is_none()
    }

    /// When the session must be stepped without an event: the open's
    /// deadline, or the end of its linger.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        [self.open_deadline, self.idle_since.map(|t| t + LINGER)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Tunnels waiting for their channel, not counting the one being opened.
    pub(super) fn waiting(&self) -> usize {
        self.queue.len() - usize::from(self.open_deadline.is_some() && !self.queue.is_empty())
    }

    /// Whether the session failed or was lost (it refuses new tunnels).
    pub(super) fn is_down(&self) -> bool {
        self.down.is_some()
    }

    /// What a channel open costs away from this thread (see `opens`), once
    /// two have gone through.
    pub(super) fn open_cost(&self) -> Option<Duration> {
        (self.opens.0 >= 2).then_some(self.opens.1)
    }

    /// Takes up to `n` waiting tunnels from the back of the queue (never
    /// the one being opened), for another session of the same jump host.
    pub(super) fn take_waiting(&mut self, n: usize) -> Waiting {
        let n = n.min(self.waiting());
        let ids = self.queue.split_off(self.queue.len() - n);
        let moved = ids
            .into_iter()
            .filter_map(|id| self.tunnels.remove(&id).map(|t| (id, t)))
            .collect();
        if self.tunnels.is_empty() {
            self.idle_since = Some(Instant::now());
        }
        Waiting(moved)
    }

    /// Adds tunnels another session of the same jump host had waiting;
    /// returns their ids.
    pub(super) fn add_waiting(&mut self, w: Waiting) -> Vec<usize> {
        let mut ids = Vec::with_capacity(w.0.len());
        for (id, t) in w.0 {
            self.tunnels.insert(id, t);
            self.queue.push_back(id);
            ids.push(id);
        }
        if !ids.is_empty() {
            self.idle_since = None;
        }
        ids
    }

    /// Adds tunnel `id` for connection `conn`, whose target session is on
    /// the other end of `ours`, registered here; `dest` is where the jump
    /// host connects to. `Err`: the session is down (why), or polling failed.
    pub(super) fn add_tunnel(
        &mut self,
        registry: &Registry,
        id: usize,
        conn: usize,
        mut ours: UnixStream,
        dest: (String, u16),
    ) -> Result<(), TunnelRefused> {
        if let Some(why) = &self.down {
            return Err(TunnelRefused::Down(why.clone()));
        }
        registry
            .register(&mut ours, mio::Token(id | TUN), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| TunnelRefused::Poll(format!("cannot poll a tunnel's socket: {e}")))?;
        let t = Tunnel {
            conn,
            ours,
            dest,
            ch: None,
            readable: true,
            writable: true,
            up: Vec::new(),
            up_off: 0,
            up_eof: false,
            down: Vec::new(),
            down_off: 0,
            down_eof: false,
            shut: false,
            eof_sent: false,
        };
        self.tunnels.insert(id, t);
        self.queue.push_back(id);
        self.idle_since = None;
        Ok(())
    }

    /// Since when the session has carried no tunnel, if it carries none.
    pub(super) fn unused_since(&mut self) -> Option<Instant> {
        (self.tunnels.is_empty() && self.queue.is_empty()).then(|| *self.idle_since.get_or_insert_with(Instant::now))
    }

    /// The session failed or was lost (the first cause is kept): drops
    /// every tunnel, as [`JumpState::clear`].
    pub(super) fn go_down(&mut self, why: &str, registry: &Registry) -> Vec<(usize, usize, UnixStream)> {
        self.down.get_or_insert_with(|| why.to_owned());
        self.clear(registry)
    }

    /// Drops every tunnel (the session is being torn down), deregistering
    /// their sockets; returns the connections they carried, with the tunnel
    /// ids and their still open sockets (see [`News::TunnelGone`]).
    pub(super) fn clear(&mut self, registry: &Registry) -> Vec<(usize, usize, UnixStream)> {
        self.queue.clear();
        self.open_deadline = None;
        self.stuck = None;
        std::mem::take(&mut self.tunnels)
            .into_iter()
            .map(|(id, mut t)| {
                let _ = registry.deregister(&mut t.ours);
                (t.conn, id, t.ours)
            })
            .collect()
    }

    /// An event on tunnel `id`'s socket.
    pub(super) fn tunnel_event(&mut self, id: usize, readable: bool, writable: bool) -> bool {
        match self.tunnels.get_mut(&id) {
            Some(t) => {
                t.readable |= readable;
                t.writable |= writable;
                true
            }
            None => false,
        }
    }

    /// Opens the queue's first channel, if any: `Ok(true)` on progress.
    fn step_open(&mut self, sess: &Session, cx: &Cx<'_>, hop: &str, timeout: Duration) -> Result<bool, String> {
        let Some(&id) = self.queue.front() else {
            return Ok(false);
        };
        let Some(t) = self.tunnels.get_mut(&id) else {
            self.queue.pop_front();
            return Ok(true);
        };
        let deadline = match self.open_deadline {
            Some(d) => d,
            None => {
                self.open_idle = cx.idle;
                *self.open_deadline.insert(Instant::now() + timeout)
            }
        };
        match sess.channel_direct_tcpip(&t.dest.0, t.dest.1, None) {
            Ok(ch) => {
                t.ch = Some(ch);
                self.queue.pop_front();
                let waited = cx.idle.saturating_sub(self.open_idle);
                self.opens = (self.opens.0.saturating_add(1), self.opens.1.min(waited));
                self.open_deadline = None;
                self.stuck = None;
                let _ = cx.news.send(News::TunnelOpen { conn: t.conn, id });
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                self.stuck = (!write_blocked_on_input(sess)).then_some(Stuck::Open);
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{hop}: no answer within {timeout:?} to opening a tunnel to {}:{}",
                        t.dest.0, t.dest.1
                    ));
                }
                Ok(false)
            }
            Err(e) if is_socket_error(&e) => Err(format!("{hop}: opening a tunnel: {e}")),
            Err(e) => {
                // Refused (`PermitOpen`, `AllowTcpForwarding no`, nothing listening):
                // only this tunnel fails.
                let why = format!("{hop} refused to forward to {}:{}: {e}", t.dest.0, t.dest.1);
                let conn = t.conn;
                self.queue.pop_front();
                self.open_deadline = None;
                self.stuck = None;
                let held = self.take(cx, id);
                let _ = cx.news.send(News::TunnelGone { conn, id, why, held });
                Ok(true)
            }
        }
    }

    /// Takes tunnel `id` out, its socket deregistered but not closed (for a
    /// [`News::TunnelGone`] to carry).
    fn take(&mut self, cx: &Cx<'_>, id: usize) -> Option<UnixStream> {
        let ours = self.tunnels.remove(&id).map(|mut t| {
            let _ = cx.registry.deregister(&mut t.ours);
            let _ = cx.news.send(News::TunnelClosed(id));
            t.ours
        });
        if self.tunnels.is_empty() {
            self.idle_since = Some(Instant::now());
        }
        ours
    }

    /// Removes tunnel `id` (its channel is closed or abandoned).
    fn remove(&mut self, cx: &Cx<'_>, id: usize) {
        if let Some(ours) = self.take(cx, id) {
            let _ = ours.shutdown(Shutdown::Both);
        }
    }

    /// Moves bytes for every tunnel until nothing moves; `Err` when the
    /// session itself is gone.
    pub(super) fn pump_all(&mut self, sess: &Session, cx: &Cx<'_>, hop: &str, timeout: Duration) -> Result<(), String> {
        if let Some(stuck) = self.stuck {
            match stuck {
                Stuck::Open => {
                    self.step_open(sess, cx, hop, timeout)?;
                }
                Stuck::Tunnel(id) => {
                    self.pump_one(sess, cx, id, true)?;
                }
            }
            if self.stuck.is_some() {
                return Ok(());
            }
        }
        let mut drained = false;
        loop {
            let mut progress = self.step_open(sess, cx, hop, timeout)?;
            if self.stuck.is_some() {
                return Ok(());
            }
            let ids: Vec<usize> = self.tunnels.keys().copied().collect();
            for id in ids {
                // One read per step drains the socket; after it, only channels
                // libssh2 holds data or an EOF for are read.
                let force = !drained && self.tunnels.get(&id).is_some_and(|t| t.ch.is_some());
                drained |= force;
                progress |= self.pump_one(sess, cx, id, force)?;
                if self.stuck.is_some() {
                    return Ok(());
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Moves bytes both ways for tunnel `id` until nothing moves (`force`:
    /// read the channel even if libssh2 seems to hold nothing for it, which
    /// drains the session's socket); `Ok(true)` on progress.
    fn pump_one(&mut self, sess: &Session, cx: &Cx<'_>, id: usize, mut force: bool) -> Result<bool, String> {
        let Some(t) = self.tunnels.get_mut(&id) else {
            if matches!(self.stuck, Some(Stuck::Tunnel(s)) if s == id) {
                self.stuck = None;
            }
            return Ok(false);
        };
        let Some(ch) = t.ch.as_mut() else { return Ok(false) };
        let mut any = false;
        loop {
            let mut progress = false;
            // The target's session -> the channel.
            if t.up_off == t.up.len() && !t.up_eof && t.readable {
                t.up.resize(CHUNK, 0);
                t.up_off = 0;
                match t.ours.read(&mut t.up) {
                    Ok(0) => {
                        t.up.clear();
                        t.up_eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        t.up.truncate(n);
                        progress = true;
                    }
                    Err(e) => {
                        t.up.clear();
                        match e.kind() {
                            io::ErrorKind::WouldBlock => t.readable = false,
                            io::ErrorKind::Interrupted => {}
                            _ => t.up_eof = true,
                        }
                    }
                }
            }
            if t.up_off < t.up.len() {
                match ch.write(&t.up[t.up_off..]) {
                    Ok(n) => {
                        t.up_off += n;
                        self.stuck = None;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !write_blocked_on_input(sess) {
                            self.stuck = Some(Stuck::Tunnel(id));
                            return Ok(any || progress);
                        }
                    }
                    Err(e) => return Err(format!("writing to a tunnel to {}:{}: {e}", t.dest.0, t.dest.1)),
                }
            }
            // The channel -> the target's session.
            if t.down_off == t.down.len() && !t.down_eof && (force || ch.read_window().available > 0 || ch.eof()) {
                force = false;
                t.down.resize(CHUNK, 0);
                t.down_off = 0;
                match ch.read(&mut t.down) {
                    Ok(0) => {
                        t.down.clear();
                        t.down_eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        t.down.truncate(n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => t.down.clear(),
                    // libssh2's channel reads fail only when the session does.
                    Err(e) => return Err(format!("reading a tunnel to {}:{}: {e}", t.dest.0, t.dest.1)),
                }
            }
            if t.down_off < t.down.len() && t.writable {
                match t.ours.write(&t.down[t.down_off..]) {
                    Ok(n) => {
                        t.down_off += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => t.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The target's session is gone: drop what it would have read.
                    Err(_) => {
                        t.down_off = t.down.len();
                        t.up_eof = true;
                    }
                }
            } else if t.down_off == t.down.len() && t.down_eof && !t.shut {
                let _ = t.ours.shutdown(Shutdown::Write);
                t.shut = true;
                progress = true;
            }
            if t.up_eof && t.up_off == t.up.len() {
                // The target's session is gone: end the channel. Sent once
                // libssh2 only waits for the answer; the channel is then freed
                // (libssh2 drops the late answer).
                if !t.eof_sent {
                    if !send_eof(ch) {
                        if !write_blocked_on_input(sess) {
                            self.stuck = Some(Stuck::Tunnel(id));
                            return Ok(true);
                        }
                    } else {
                        t.eof_sent = true;
                    }
                }
                if t.eof_sent {
                    match ch.close() {
                        Err(e) if would_block(&e) && !write_blocked_on_input(sess) => {
                            self.stuck = Some(Stuck::Tunnel(id));
                            return Ok(true);
                        }
                        Err(e) if is_socket_error(&e) => return Err(format!("closing a tunnel: {e}")),
                        _ => {}
                    }
                    self.stuck = None;
                    self.remove(cx, id);
                    return Ok(true);
                }
            }
            any |= progress;
            if !progress {
                return Ok(any);
            }
        }
    }
}
